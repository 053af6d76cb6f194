/*
 * libcellar_fs.c - the plain file and namespace RPCs of libcellar (one
 * function per request: Ping, Stat, List, Open, Read, Write, Seek,
 * Truncate, Sync, Close, Remove, Mkdir, Rmdir, Rename, StatFs, Hash,
 * Format) and the walk of a device tree. Reads and writes of a handle go
 * through the pipeline (libcellar_pipe.c); everything else through the
 * plumbing of libcellar.c (see docs/ARCHITECTURE.md, "Clients").
 */
#include "libcellar_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Path-carrying requests record the path of a failure for cellar_errpath. */
static int with_path(cellar_t *c, int err, const char *path)
{
    if (err < 0 && path && c->tp && !c->broken)
        snprintf(c->errpath, sizeof(c->errpath), ":%s", path);
    return err;
}

/* ---- RPCs ----------------------------------------------------------------------- */
int cellar_ping(cellar_t *c, const void *payload, uint32_t len)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_ping_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    if (len > sizeof(req->body.ping.payload.bytes))
        return cellar__fail(c, CELLAR_ERR_MSGSIZE, "ping payload over %zu bytes",
                            sizeof(req->body.ping.payload.bytes));
    if (len)
        memcpy(req->body.ping.payload.bytes, payload, len);
    req->body.ping.payload.size = (pb_size_t)len;
    int err = cellar__rpc(c, cellar_Response_ping_tag);
    if (err < 0)
        return err;
    const cellar_PingReply *r = &cellar__resp(c)->body.ping;
    if (r->payload.size != len || (len && memcmp(r->payload.bytes, payload, len)))
        return cellar__fail(c, CELLAR_ERR_PROTO, "ping echo differs");
    return 0;
}

void cellar__copy_info(cellar_stat_t *st, const cellar_FileInfo *fi)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->name, sizeof(st->name), "%s", fi->name);
    st->type = fi->type == cellar_FileType_DIR    ? CELLAR_TYPE_DIR
               : fi->type == cellar_FileType_FILE ? CELLAR_TYPE_FILE
                                                  : CELLAR_TYPE_NONE;
    st->size = fi->size;
    st->ctime = fi->ctime;
    st->mtime = fi->mtime;
    st->id = fi->id;
}

int cellar_stat(cellar_t *c, const char *path, cellar_stat_t *st)
{
    int err;
    if (!cellar__path_req(c, cellar_Request_stat_tag, path, &err))
        return err;
    err = cellar__rpc(c, cellar_Response_stat_tag);
    if (err < 0)
        return with_path(c, err, path);
    const cellar_StatReply *r = &cellar__resp(c)->body.stat;
    cellar__copy_info(st, &r->info);
    if (!r->info.name[0])
        snprintf(st->name, sizeof(st->name), "%s", path);
    return 0;
}

int cellar_list(cellar_t *c, const char *path, uint32_t *cursor,
                cellar_stat_t *out, uint32_t max_entries)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_list_tag, path, &err);
    if (!req)
        return err;
    req->body.list.cursor = *cursor;
    req->body.list.max_entries =
        max_entries > CELLAR_LIST_PAGE ? CELLAR_LIST_PAGE : max_entries;
    err = cellar__rpc(c, cellar_Response_list_tag);
    if (err < 0)
        return with_path(c, err, path);
    const cellar_ListReply *r = &cellar__resp(c)->body.list;
    uint32_t n = r->entries_count;
    uint32_t cap = max_entries ? max_entries : CELLAR_LIST_PAGE;
    if (cap > CELLAR_LIST_PAGE)
        cap = CELLAR_LIST_PAGE;
    if (n > cap)
        n = cap;
    for (uint32_t i = 0; i < n; i++)
        cellar__copy_info(&out[i], &r->entries[i]);
    if (r->next_cursor && r->next_cursor == *cursor)
        return cellar__fail(c, CELLAR_ERR_PROTO, "list cursor does not advance");
    *cursor = r->next_cursor;
    return (int)n;
}

int cellar_list_all(cellar_t *c, const char *path, cellar_list_fn fn, void *ctx)
{
    cellar_stat_t *page = malloc(sizeof(*page) * CELLAR_LIST_PAGE);
    if (!page)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    uint32_t cursor = 0;
    int ret = 0;
    do {
        int n = cellar_list(c, path, &cursor, page, CELLAR_LIST_PAGE);
        if (n < 0) {
            ret = n;
            break;
        }
        for (int i = 0; i < n && ret == 0; i++)
            ret = fn(ctx, &page[i]);
    } while (ret == 0 && cursor != 0);
    free(page);
    return ret;
}

#define LIST_ALLOC_MAX 1000000

int cellar_list_alloc(cellar_t *c, const char *path, cellar_stat_t **out)
{
    *out = NULL;
    cellar_stat_t *v = NULL;
    size_t n = 0, cap = 0;
    uint32_t cursor = 0;
    do {
        if (cap - n < CELLAR_LIST_PAGE) {
            size_t ncap = cap ? cap * 2 : 64;
            if (ncap > LIST_ALLOC_MAX + CELLAR_LIST_PAGE) {
                free(v);
                return cellar__fail(c, CELLAR_ERR_NOMEM,
                                    "%s: more than %d entries", path,
                                    LIST_ALLOC_MAX);
            }
            cellar_stat_t *nv = realloc(v, ncap * sizeof(*v));
            if (!nv) {
                free(v);
                return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            }
            v = nv;
            cap = ncap;
        }
        int got = cellar_list(c, path, &cursor, v + n, CELLAR_LIST_PAGE);
        if (got < 0) {
            free(v);
            return got;
        }
        n += (size_t)got;
    } while (cursor != 0);
    *out = v;
    return (int)n;
}

int cellar_file_open(cellar_t *c, const char *path, uint32_t flags,
                     cellar_fh_t *fh, uint64_t *size)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_open_tag, path, &err);
    if (!req)
        return err;
    req->body.open.flags = flags;
    err = cellar__rpc(c, cellar_Response_open_tag);
    if (err < 0)
        return with_path(c, err, path);
    const cellar_OpenReply *r = &cellar__resp(c)->body.open;
    if (r->handle == 0)
        return cellar__fail(c, CELLAR_ERR_PROTO, "device returned handle 0");
    *fh = r->handle;
    if (size)
        *size = r->size;
    return 0;
}

static int mem_src(void *ctx, uint64_t pos, void *buf, uint32_t len)
{
    memcpy(buf, (const uint8_t *)ctx + pos, len);
    return (int)len;
}

static int mem_sink(void *ctx, uint64_t pos, const void *buf, uint32_t len)
{
    memcpy((uint8_t *)ctx + pos, buf, len);
    return 0;
}

int32_t cellar_file_read(cellar_t *c, cellar_fh_t handle, uint64_t off, void *buf,
                         uint32_t len)
{
    if (len > INT32_MAX)
        return cellar__fail(c, CELLAR_ERR_INVAL, "read length over INT32_MAX");
    if (len == 0)
        return 0;
    uint64_t got = 0;
    cellar__pipe_t p = {.handle = handle, .off = off, .total = len,
                        .chunk = cellar__chunk(c, NULL),
                        .window = cellar__window(c, NULL)};
    int err = cellar__pipe_read(c, &p, mem_sink, buf, &got);
    return err < 0 ? err : (int32_t)got;
}

int32_t cellar_file_write(cellar_t *c, cellar_fh_t handle, uint64_t off,
                          const void *buf, uint32_t len)
{
    if (len > INT32_MAX)
        return cellar__fail(c, CELLAR_ERR_INVAL, "write length over INT32_MAX");
    if (len == 0)
        return 0;
    cellar__pipe_t p = {.handle = handle, .off = off, .total = len,
                        .chunk = cellar__chunk(c, NULL),
                        .window = cellar__window(c, NULL)};
    int err = cellar__pipe_write(c, &p, mem_src, (void *)buf);
    return err < 0 ? err : (int32_t)len;
}

int64_t cellar_file_seek(cellar_t *c, cellar_fh_t handle, int64_t off, int whence,
                         uint64_t *size)
{
    if (whence < 0 || whence > 2)
        return cellar__fail(c, CELLAR_ERR_INVAL, "bad whence %d", whence);
    cellar_Request *req = cellar__new_req(c, cellar_Request_seek_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    req->body.seek.handle = (uint32_t)handle;
    req->body.seek.offset = off;
    req->body.seek.whence = (uint32_t)whence;
    int err = cellar__rpc(c, cellar_Response_seek_tag);
    if (err < 0)
        return err;
    const cellar_SeekReply *r = &cellar__resp(c)->body.seek;
    if (size)
        *size = r->size;
    if (r->position > INT64_MAX)
        return cellar__fail(c, CELLAR_ERR_PROTO, "bad position");
    return (int64_t)r->position;
}

/* Requests answered by EmptyReply ("done"). */
static int done_rpc(cellar_t *c, const char *path)
{
    return with_path(c, cellar__rpc(c, cellar_Response_done_tag), path);
}

int cellar_file_truncate(cellar_t *c, cellar_fh_t handle, uint64_t size)
{
    int err = cellar__handle_req(c, cellar_Request_truncate_tag, handle);
    if (err < 0)
        return err;
    cellar__req(c)->body.truncate.size = size;
    return done_rpc(c, NULL);
}

int cellar_truncate(cellar_t *c, const char *path, uint64_t size)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_truncate_tag, path, &err);
    if (!req)
        return err;
    req->body.truncate.size = size;
    return done_rpc(c, path);
}

int cellar_file_sync(cellar_t *c, cellar_fh_t handle)
{
    int err = cellar__handle_req(c, cellar_Request_sync_tag, handle);
    return err < 0 ? err : done_rpc(c, NULL);
}

int cellar_file_close(cellar_t *c, cellar_fh_t handle)
{
    int err = cellar__handle_req(c, cellar_Request_close_tag, handle);
    return err < 0 ? err : done_rpc(c, NULL);
}

int cellar_remove(cellar_t *c, const char *path)
{
    int err;
    if (!cellar__path_req(c, cellar_Request_remove_tag, path, &err))
        return err;
    return done_rpc(c, path);
}

int cellar_mkdir(cellar_t *c, const char *path, bool parents)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_mkdir_tag, path, &err);
    if (!req)
        return err;
    req->body.mkdir.parents = parents;
    return done_rpc(c, path);
}

int cellar_rmdir(cellar_t *c, const char *path)
{
    int err;
    if (!cellar__path_req(c, cellar_Request_rmdir_tag, path, &err))
        return err;
    return done_rpc(c, path);
}

int cellar_rename(cellar_t *c, const char *from, const char *to)
{
    int err;
    cellar_Request *req = cellar__path_req(c, cellar_Request_rename_tag, from, &err);
    if (!req)
        return err;
    err = cellar__path(c, req->body.rename.to, sizeof(req->body.rename.to), to);
    if (err < 0)
        return err;
    return done_rpc(c, from);
}

int cellar_statfs(cellar_t *c, const char *path, cellar_statfs_t *out)
{
    int err;
    if (!cellar__path_req(c, cellar_Request_statfs_tag, path ? path : "/usr", &err))
        return err;
    err = cellar__rpc(c, cellar_Response_statfs_tag);
    if (err < 0)
        return with_path(c, err, path ? path : "/usr");
    cellar__copy_statfs(out, &cellar__resp(c)->body.statfs);
    return 0;
}

void cellar__copy_statfs(cellar_statfs_t *out, const cellar_StatFsReply *r)
{
    memset(out, 0, sizeof(*out));
    out->total = r->total;
    out->used = r->used;
    out->live = r->live;
    out->free = r->free;
    out->reclaimable = r->reclaimable;
    out->available = r->available;
    out->files = r->files;
    out->dirs = r->dirs;
    out->erase_max = r->erase_max;
    out->erase_mean = r->erase_mean;
    out->erase_min = r->erase_min;
    out->bad_blocks = r->bad_blocks;
    out->block_size = r->block_size;
    out->block_count = r->block_count;
    out->page_size = r->page_size;
    out->pages_free = r->pages_free;
    out->pages_used = r->pages_used;
    out->pages_erased = r->pages_erased;
    out->pages_bad = r->pages_bad;
    out->gc_threshold = r->gc_threshold;
}

int cellar_hash(cellar_t *c, const char *path, uint64_t offset, uint64_t length,
                uint8_t sha256[CELLAR_SHA256_SIZE], uint64_t *hashed)
{
    int err = cellar__hash_req(c, path, offset, length);
    if (err < 0)
        return err;
    err = cellar__rpc(c, cellar_Response_hash_tag);
    if (err < 0)
        return with_path(c, err, path);
    const cellar_HashReply *r = &cellar__resp(c)->body.hash;
    memcpy(sha256, r->sha256, CELLAR_SHA256_SIZE);
    if (hashed)
        *hashed = r->length;
    return 0;
}

int cellar_format(cellar_t *c, const char *partition)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_format_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    const char *p = partition ? partition : "/usr";
    if (strlen(p) >= sizeof(req->body.format.partition))
        return cellar__fail(c, CELLAR_ERR_INVAL, "%s: no such partition", p);
    strcpy(req->body.format.partition, p);
    req->body.format.confirm = true;
    return done_rpc(c, *p ? p : "/");
}

/* The walk of a device tree (cellar__walk) is in libcellar_batch.c: one
 * round trip per level (issue 11). */
