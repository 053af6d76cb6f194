/* svc_file.c - the file RPCs: Hello, Ping, Stat, List, Open, Read, Write,
 * Seek, Truncate, Sync, Close, Remove, Mkdir, Rmdir, Rename, StatFs, Hash,
 * Format (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-side code:
 * no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* Refuse writes through file RPCs on a read-only partition. */
int svc_check_writable(svc_t *s, const svc_path_t *p)
{
    if (p->part >= 0 && !s->part[p->part].read_only) {
        svc_part_t *pt = &s->part[p->part];
        if (pt->state == SVC_PART_FULL && !svc_store_retry(s, (uint32_t)p->part))
            return svc_fail_path(s, CFS_ERR_NOSPC, p->show,
                                 "the partition is too full for the "
                                 "service's bookkeeping: remove files first");
        if (pt->state == SVC_PART_NO_MANIFEST &&
            !svc_store_retry(s, (uint32_t)p->part))
            return svc_fail_path(s, CFS_ERR_IO, p->show,
                                 "the partition's manifest cannot be used: "
                                 "remove files or format it");
    }
    if (p->part >= 0 && s->part[p->part].read_only) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EACCES);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, p->show);
        svc_sb_str(&b, ": partition /");
        svc_sb_str(&b, s->part[p->part].name);
        svc_sb_str(&b, " is read-only");
        return -(int)cellar_Code_EACCES;
    }
    return 0;
}

static svc_handle_t *handle_get(svc_t *s, svc_conn_t *c, uint32_t id)
{
    uint32_t slot = (id & 15u) - 1u;
    if (id != 0 && slot < SVC_MAX_HANDLES && c->h[slot].id == id) {
        c->h[slot].last_ms = s->now_ms;
        if (!s->part[c->h[slot].part].mounted) {
            (void)svc_fail_handle(s, CFS_ERR_IO, &c->h[slot],
                              "partition is not mounted");
            return NULL;
        }
        return &c->h[slot];
    }
    (void)svc_fail_hid(s, CFS_ERR_BADF, id, NULL, SVC_NO_HANDLE);
    return NULL;
}

static cfs_t *hfs(svc_t *s, const svc_handle_t *h)
{
    return &s->part[h->part].fs;
}

static void fill_info(cellar_FileInfo *fi, const char *name,
                      const cfs_stat_t *st)
{
    svc_copy_str(fi->name, sizeof(fi->name), name);
    fi->type = st->type == CFS_TYPE_DIR ? cellar_FileType_DIR
                                       : cellar_FileType_FILE;
    fi->size = st->type == CFS_TYPE_DIR ? 0 : st->size;
    fi->ctime = st->ctime;
    fi->mtime = st->mtime;
    fi->id = st->ino;
}

int svc_do_hello(svc_t *s, svc_conn_t *c, const cellar_HelloRequest *r)
{
    cellar_HelloReply *o = &s->resp.body.hello;
    const flash_dev_t *dev = s->cfg.dev;
    s->resp.which_body = cellar_Response_hello_tag;
    o->version = CODEC_PROTOCOL_VERSION;
    svc_copy_str(o->device, sizeof(o->device), s->cfg.device_id);
    svc_copy_str(o->firmware, sizeof(o->firmware), s->cfg.firmware);
    o->max_frame = CODEC_MAX_FRAME;
    o->max_inflight = SVC_MAX_INFLIGHT;
    o->max_path = SVC_MAX_PATH;
    o->max_chunk = SVC_MAX_CHUNK;
    o->max_handles = SVC_MAX_HANDLES;
    o->max_items = SVC_MAX_ITEMS; /* issue 14: the profile's list caps */
    o->block_size = dev->block_size;
    o->block_count = dev->block_count;
    o->page_size = dev->page_size;
    o->partitions_count = 0;
    for (uint32_t i = 0; i < s->nparts && i < pb_arraysize(cellar_HelloReply, partitions); i++) {
        cellar_Partition *p = &o->partitions[o->partitions_count++];
        p->path[0] = '/';
        svc_copy_str(p->path + 1, sizeof(p->path) - 1, s->part[i].name);
        p->first_block = s->part[i].cfg.first_block;
        p->block_count = s->part[i].cfg.block_count;
        p->read_only = s->part[i].read_only;
        p->state = (cellar_PartState)s->part[i].state;
    }
    for (uint32_t i = 0; i < s->layout.nparts && 
         o->partitions_count < pb_arraysize(cellar_HelloReply, partitions);
         i++) { /* issue 15: raw partitions, by name */
        const layout_part_t *lp = &s->layout.part[i];
        if (lp->kind != LAYOUT_KIND_RAW)
            continue;
        cellar_Partition *p = &o->partitions[o->partitions_count++];
        svc_copy_str(p->path, sizeof(p->path), lp->name);
        p->first_block = lp->first_block;
        p->block_count = lp->block_count;
        p->kind = cellar_PartKind_PART_RAW;
    }
    for (uint32_t i = 0; i < s->nproblems && i < pb_arraysize(cellar_HelloReply, problems); i++)
        svc_problem_line(s, i, o->problems[o->problems_count++],
                         sizeof(o->problems[0]));
    svc_acl_hello(s, c, o); /* identity and role (issue 13) */
    if (SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "hello from ");
        svc_sb_qstr(&b, r->client);
        svc_sb_str(&b, " (protocol ");
        svc_sb_u64(&b, r->version);
        svc_sb_str(&b, ")");
        svc_log_end(s);
    }
    return 0;
}

int svc_do_ping(svc_t *s, const cellar_PingRequest *r)
{
    s->resp.which_body = cellar_Response_ping_tag;
    s->resp.body.ping.payload.size = r->payload.size;
    memcpy(s->resp.body.ping.payload.bytes, r->payload.bytes,
           r->payload.size);
    return 0;
}

int svc_do_stat(svc_t *s, const cellar_StatRequest *r)
{
    svc_path_t *p = &s->pa;
    cfs_stat_t st;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    memset(&st, 0, sizeof(st));
    if (p->part < 0) {
        st.type = CFS_TYPE_DIR;
    } else {
        cfs_t *fs = svc_path_fs(s, p);
        if (!fs)
            return CFS_ERR_IO;
        err = cfs_stat(fs, p->fs, &st);
        if (err)
            return svc_fail_path(s, err, p->show, NULL);
    }
    s->resp.which_body = cellar_Response_stat_tag;
    s->resp.body.stat.has_info = true;
    fill_info(&s->resp.body.stat.info, p->show, &st);
    return 0;
}

int svc_do_list(svc_t *s, const cellar_ListRequest *r)
{
    svc_path_t *p = &s->pa;
    cellar_ListReply *o = &s->resp.body.list;
    uint32_t max = r->max_entries;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (max == 0 || max > SVC_LIST_MAX)
        max = SVC_LIST_MAX;
    s->resp.which_body = cellar_Response_list_tag;

    if (p->part < 0) { /* "/": the partitions */
        for (uint32_t i = r->cursor; i < s->nparts; i++) {
            if (o->entries_count == max) {
                o->next_cursor = i;
                break;
            }
            cellar_FileInfo *fi = &o->entries[o->entries_count++];
            cfs_stat_t st = { .type = CFS_TYPE_DIR };
            if (s->part[i].mounted)
                (void)cfs_stat(&s->part[i].fs, "/", &st);
            fill_info(fi, s->part[i].name, &st);
        }
        return 0;
    }

    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;
    err = cfs_dir_open(fs, &s->dir, p->fs);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    /* The cursor counts entries already returned: skip that many. */
    char *name = (char *)s->scratch;
    cfs_stat_t st;
    uint32_t idx = 0;
    while (idx < r->cursor) {
        err = cfs_dir_read(fs, &s->dir, name, CFS_NAME_MAX + 1, &st);
        if (err <= 0)
            break;
        idx++;
    }
    if (err >= 0 && idx == r->cursor) {
        for (;;) {
            err = cfs_dir_read(fs, &s->dir, name, CFS_NAME_MAX + 1, &st);
            if (err <= 0)
                break;
            if (p->fs[1] == 0 && strcmp(name, &MAN_DIR[1]) == 0) {
                idx++; /* the service's own directory is not listed */
                continue;
            }
            if (o->entries_count == max) {
                o->next_cursor = idx; /* there is at least one more */
                break;
            }
            fill_info(&o->entries[o->entries_count++], name, &st);
            idx++;
        }
    }
    (void)cfs_dir_close(fs, &s->dir);
    if (err < 0) {
        s->resp.which_body = 0;
        return svc_fail_path(s, err, p->show, NULL);
    }
    return 0;
}

int svc_do_open(svc_t *s, svc_conn_t *c, const cellar_OpenRequest *r)
{
    const uint32_t rw = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE;
    const uint32_t known = rw | cellar_OpenFlags_O_CREATE |
                           cellar_OpenFlags_O_EXCL | cellar_OpenFlags_O_TRUNC |
                           cellar_OpenFlags_O_APPEND;
    uint32_t fl = r->flags;
    svc_path_t *p = &s->pa;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (fl & ~known) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, p->show);
        svc_sb_str(&b, ": unknown open flags ");
        svc_sb_hex32(&b, fl & ~known);
        return CFS_ERR_INVAL;
    }
    if ((err = svc_open_flags(s, p->show, fl)) != 0)
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    if ((fl & cellar_OpenFlags_O_WRITE) && (err = svc_check_writable(s, p)))
        return err;
    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;

    svc_handle_t *h = NULL;
    uint32_t slot;
    for (slot = 0; slot < SVC_MAX_HANDLES; slot++)
        if (!c->h[slot].id) {
            h = &c->h[slot];
            break;
        }
    if (!h) { /* "(max N)": SVC_MAX_HANDLES of the profile (issue 14) */
        sb_t b = svc_err_begin(s, CFS_ERR_NOMEM);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, p->show);
        svc_sb_str(&b, ": too many open handles on this connection (max ");
        svc_sb_u64(&b, SVC_MAX_HANDLES);
        svc_sb_str(&b, ")");
        return CFS_ERR_NOMEM;
    }

    int ff = 0;
    if ((fl & rw) == rw)
        ff = CFS_O_RDWR;
    else if (fl & cellar_OpenFlags_O_WRITE)
        ff = CFS_O_WRONLY;
    else
        ff = CFS_O_RDONLY;
    if (fl & cellar_OpenFlags_O_CREATE)
        ff |= CFS_O_CREAT;
    if (fl & cellar_OpenFlags_O_EXCL)
        ff |= CFS_O_EXCL;
    if (fl & cellar_OpenFlags_O_TRUNC)
        ff |= CFS_O_TRUNC;
    if (fl & cellar_OpenFlags_O_APPEND)
        ff |= CFS_O_APPEND;

    uint32_t used = 0;
    for (svc_conn_t *o = s->conns; o; o = o->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            used += o->h[k].id && o->h[k].part == (uint8_t)p->part;
    if (used >= SVC_DEVICE_HANDLES)
        return svc_fail_open(s, CFS_ERR_NOMEM, p->show);
    memset(h, 0, sizeof(*h));
    if ((ff & CFS_O_WRONLY) && s->part[p->part].has_man) {
        /* writes go to a shadow copy, published with its manifest entry
         * at close: the real name never holds a half-written file */
        err = svc_shadow_open(s, h, p, ff);
        if (err < 0) {
            memset(h, 0, sizeof(*h));
            return err;
        }
    } else if ((err = cfs_file_open(fs, &h->file, p->fs, ff)) < 0) {
        memset(h, 0, sizeof(*h));
        return svc_fail_open(s, err, p->show);
    }
    int32_t size = cfs_file_size(fs, &h->file);
    if (size < 0) {
        (void)cfs_file_close(fs, &h->file);
        memset(h, 0, sizeof(*h));
        return svc_fail_path(s, size, p->show, NULL);
    }
    c->handle_seq = (c->handle_seq + 1) & 0x0fffffffu;
    if (!c->handle_seq)
        c->handle_seq = 1;
    h->id = c->handle_seq << 4 | (slot + 1);
    h->part = (uint8_t)p->part;
    h->readable = (fl & cellar_OpenFlags_O_READ) != 0;
    h->writable = (fl & cellar_OpenFlags_O_WRITE) != 0;
    h->append = (fl & cellar_OpenFlags_O_APPEND) != 0;
    h->last_ms = s->now_ms;
    memcpy(h->path, p->show, sizeof(h->path));
    s->resp.which_body = cellar_Response_open_tag;
    s->resp.body.open.handle = h->id;
    s->resp.body.open.size = (uint64_t)size;
    return 0;
}

int svc_do_read(svc_t *s, svc_conn_t *c, const cellar_ReadRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (!h->readable)
        return svc_fail_handle(s, CFS_ERR_BADF, h, "not open for reading");
    cfs_t *fs = hfs(s, h);
    int32_t size = cfs_file_size(fs, &h->file);
    if (size < 0)
        return svc_fail_handle(s, size, h, NULL);
    cellar_ReadReply *o = &s->resp.body.read;
    uint32_t want = r->length < SVC_MAX_CHUNK ? r->length : SVC_MAX_CHUNK;
    uint32_t got = 0;
    if (r->offset < (uint64_t)size) {
        uint32_t off = (uint32_t)r->offset;
        if (want > (uint32_t)size - off)
            want = (uint32_t)size - off;
        while (got < want) {
            int n = cfs_file_pread(fs, &h->file, o->data.bytes + got,
                                  want - got, off + got);
            if (n < 0)
                return svc_fail_handle(s, n, h, NULL);
            if (n == 0)
                break;
            got += (uint32_t)n;
        }
    }
    s->resp.which_body = cellar_Response_read_tag;
    o->offset = r->offset;
    o->data.size = (pb_size_t)got;
    o->eof = r->offset + got >= (uint64_t)size;
    return 0;
}

int svc_do_write(svc_t *s, svc_conn_t *c, const cellar_WriteRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (!h->writable)
        return svc_fail_handle(s, CFS_ERR_BADF, h, "not open for writing");
    cfs_t *fs = hfs(s, h);
    uint32_t len = r->data.size;
    uint64_t off = r->offset;
    int n;
    if (h->append) {
        int32_t size = cfs_file_size(fs, &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        off = (uint64_t)size;
        if (len > CFS_FILE_MAX - off)
            return svc_fail_handle(s, CFS_ERR_FBIG, h, NULL);
        if (len && svc_room(s, h->part, len, h->path))
            return CFS_ERR_NOSPC;
        n = cfs_file_pwrite(fs, &h->file, r->data.bytes, len, (uint32_t)off);
    } else {
        if (off > CFS_FILE_MAX || len > CFS_FILE_MAX - off)
            return svc_fail_handle(s, CFS_ERR_FBIG, h, NULL);
        /* growth counts in full, a hole included: refused up front when
         * the partition could not store it (docs/PROTOCOL.md, Write) */
        int32_t size = cfs_file_size(fs, &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        if (len && off + len > (uint64_t)size &&
            svc_room(s, h->part, off + len - (uint64_t)size, h->path))
            return CFS_ERR_NOSPC;
        n = cfs_file_pwrite(fs, &h->file, r->data.bytes, len, (uint32_t)off);
    }
    if (n < 0)
        return svc_fail_handle(s, n, h, NULL);
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = off;
    s->resp.body.write.written = (uint32_t)n;
    return 0;
}

int svc_do_seek(svc_t *s, svc_conn_t *c, const cellar_SeekRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (r->whence > 2)
        return svc_fail_handle(s, CFS_ERR_INVAL, h,
                           "whence must be 0 (set), 1 (cur) or 2 (end)");
    if (r->offset > INT32_MAX || r->offset < -(int64_t)INT32_MAX)
        return svc_fail_handle(s, CFS_ERR_INVAL, h, "offset out of range");
    cfs_t *fs = hfs(s, h);
    int32_t pos = cfs_file_seek(fs, &h->file, (int32_t)r->offset,
                               (int)r->whence);
    if (pos < 0)
        return svc_fail_handle(s, pos, h, NULL);
    int32_t size = cfs_file_size(fs, &h->file);
    if (size < 0)
        return svc_fail_handle(s, size, h, NULL);
    s->resp.which_body = cellar_Response_seek_tag;
    s->resp.body.seek.position = (uint64_t)pos;
    s->resp.body.seek.size = (uint64_t)size;
    return 0;
}

int svc_do_truncate(svc_t *s, svc_conn_t *c,
                    const cellar_TruncateRequest *r)
{
    int err;
    if (r->handle) {
        svc_handle_t *h = handle_get(s, c, r->handle);
        if (!h)
            return CFS_ERR_BADF;
        if (!h->writable)
            return svc_fail_handle(s, CFS_ERR_BADF, h, "not open for writing");
        if (r->size > CFS_FILE_MAX)
            return svc_fail_handle(s, CFS_ERR_FBIG, h, NULL);
        int32_t size = cfs_file_size(hfs(s, h), &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        if (r->size > (uint64_t)size &&
            svc_room(s, h->part, r->size - (uint64_t)size, h->path))
            return CFS_ERR_NOSPC;
        err = cfs_file_truncate(hfs(s, h), &h->file, (uint32_t)r->size);
        if (err < 0)
            return svc_fail_handle(s, err, h, NULL);
        svc_reply_done(s);
        return 0;
    }
    svc_path_t *p = &s->pa;
    if ((err = svc_resolve(s, r->path, p)))
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    if ((err = svc_check_writable(s, p)))
        return err;
    if (r->size > CFS_FILE_MAX)
        return svc_fail_path(s, CFS_ERR_FBIG, p->show, NULL);
    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;
    if (s->part[p->part].has_man) {
        if ((err = svc_shadow_truncate(s, p, (uint32_t)r->size)))
            return err;
        svc_reply_done(s);
        return 0;
    }
    cfs_file_t *f = svc_t2_take(s); /* issue 14: open only here */
    err = cfs_file_open(fs, f, p->fs, CFS_O_WRONLY);
    if (err < 0) {
        svc_t2_give(s);
        return svc_fail_open(s, err, p->show);
    }
    err = cfs_file_truncate(fs, f, (uint32_t)r->size);
    int err2 = cfs_file_close(fs, f);
    svc_t2_give(s);
    if (err >= 0)
        err = err2;
    if (err < 0)
        return svc_fail_path(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

int svc_do_sync(svc_t *s, svc_conn_t *c, const cellar_SyncRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    /* With a shadow, the data becomes durable there; it is published (made
     * visible under its name, with its manifest entry) at Close. */
    int err = cfs_file_sync(hfs(s, h), &h->file);
    if (err < 0)
        return svc_fail_handle(s, err, h, NULL);
    svc_reply_done(s);
    return 0;
}

int svc_do_close(svc_t *s, svc_conn_t *c, const cellar_CloseRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (h->shadow) {
        int err = svc_shadow_publish(s, h);
        memset(h, 0, sizeof(*h));
        if (err < 0)
            return err;
        svc_reply_done(s);
        return 0;
    }
    int err = cfs_file_close(hfs(s, h), &h->file);
    if (err < 0) {
        /* The handle is gone either way; report why the data may not be. */
        (void)svc_fail_handle(s, err, h, NULL);
        memset(h, 0, sizeof(*h));
        return err;
    }
    memset(h, 0, sizeof(*h));
    svc_reply_done(s);
    return 0;
}

int svc_do_remove(svc_t *s, const char *path, bool dir_only)
{
    svc_path_t *p = &s->pa;
    int err = svc_resolve(s, path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, CFS_ERR_PERM, p->show,
                         p->part < 0 ? "the root cannot be removed"
                                     : "a partition cannot be removed");
    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;
    svc_part_t *pt = &s->part[p->part];
    if (!pt->read_only && (pt->state == SVC_PART_FULL ||
                           pt->state == SVC_PART_NO_MANIFEST)) {
        /* too full for bookkeeping: a removal frees space first, then the
         * manifest gets its entry dropped once it is writable again */
        err = dir_only ? cfs_rmdir(fs, p->fs) : cfs_remove(fs, p->fs);
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        if (!dir_only && svc_store_retry(s, (uint32_t)p->part))
            (void)svc_man_remove(s, p);
        svc_reply_done(s);
        return 0;
    }
    if ((err = svc_check_writable(s, p)))
        return err;
    if (dir_only)
        err = cfs_rmdir(fs, p->fs);
    else if (s->part[p->part].has_man)
        err = svc_man_remove(s, p); /* the file and its manifest entry */
    else
        err = cfs_remove(fs, p->fs);
    if (err < 0)
        return svc_fail_path(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

/* Mkdir's own answer when the partition has no room (0: none, the room is
 * the answer): a path that exists, a file in the way, a missing parent;
 * done for mkdir -p of a directory that is there. */
static int mkdir_own_answer(svc_t *s, cfs_t *fs, const svc_path_t *p,
                            bool parents)
{
    cfs_stat_t st;
    int e2 = cfs_stat(fs, p->fs, &st);
    if (e2 == 0 && parents && st.type == CFS_TYPE_DIR) {
        svc_reply_done(s);
        return 1;
    }
    if (e2 == 0)
        return svc_fail_path(s, st.type == CFS_TYPE_DIR || !parents
                                    ? CFS_ERR_EXIST : CFS_ERR_NOTDIR,
                             p->show, NULL);
    if (e2 == CFS_ERR_NOENT && !parents) {
        e2 = svc_parent_dir(fs, p->fs, (char *)s->scratch);
    }
    if (e2 == CFS_ERR_NOTDIR || (e2 == CFS_ERR_NOENT && !parents))
        return svc_fail_path(s, e2, p->show, NULL);
    return 0;
}

int svc_do_mkdir(svc_t *s, const cellar_MkdirRequest *r)
{
    svc_path_t *p = &s->pa;
    cfs_stat_t st;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p)) {
        if (r->parents) {
            svc_reply_done(s);
            return 0;
        }
        return svc_fail_path(s, CFS_ERR_EXIST, p->show, NULL);
    }
    if ((err = svc_check_writable(s, p)))
        return err;
    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;
    /* a directory claims 64 bytes and a record or two: the room kept for
     * the service's bookkeeping is not for new directories */
    if ((err = svc_room(s, (uint32_t)p->part, 4096, p->show))) {
        /* the request's own answer comes first */
        int own = mkdir_own_answer(s, fs, p, r->parents);
        return own == 1 ? 0 : own ? own : err;
    }
    if (!r->parents) {
        err = cfs_mkdir(fs, p->fs);
        if (err == CFS_ERR_NOSPC) {
            int own = mkdir_own_answer(s, fs, p, false);
            if (own)
                return own;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        svc_reply_done(s);
        return 0;
    }
    /* With parents: check every prefix first, so a path through a file
     * fails before anything is created; then create what is missing. */
    char *pre = (char *)s->scratch;
    size_t n = strlen(p->fs);
    size_t first_missing = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p->fs[i] != '/')
            continue;
        memcpy(pre, p->fs, i);
        pre[i] = 0;
        err = cfs_stat(fs, pre, &st);
        if (err == CFS_ERR_NOENT) {
            first_missing = i;
            break;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        if (st.type != CFS_TYPE_DIR)
            return svc_fail_path(s, CFS_ERR_NOTDIR, p->show,
                             "a component is a file, not a directory");
    }
    if (first_missing) {
        for (size_t i = first_missing; i <= n; i++) {
            if (i < n && p->fs[i] != '/')
                continue;
            memcpy(pre, p->fs, i);
            pre[i] = 0;
            err = cfs_mkdir(fs, pre);
            if (err < 0 && err != CFS_ERR_EXIST)
                return svc_fail_path(s, err, p->show, NULL);
        }
    }
    svc_reply_done(s);
    return 0;
}

/* After a rename: the handles on what moved follow it (they hold the
 * file, not the name), so the checks by path (an update's busy check,
 * Restore and repair closing readers) find them under the new name. A
 * shadow writer publishes to the name it was opened with and stays. */
static void handles_follow(svc_t *s, int part, const char *from,
                           const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (!h->id || h->shadow || h->part != (uint8_t)part ||
                strncmp(h->path, from, fl) != 0 ||
                (h->path[fl] != 0 && h->path[fl] != '/'))
                continue;
            size_t rest = strlen(h->path + fl);
            if (tl + rest >= sizeof(h->path))
                continue;
            memmove(h->path + tl, h->path + fl, rest + 1);
            memcpy(h->path, to, tl);
        }
}

int svc_do_rename(svc_t *s, const cellar_RenameRequest *r)
{
    svc_path_t *a = &s->pa, *b = &s->pb;
    int err;
    if ((err = svc_resolve(s, r->from, a)) || (err = svc_resolve(s, r->to, b)))
        return err;
    if (a->part < 0 || svc_is_part_root(a))
        return svc_fail_path(s, CFS_ERR_PERM, a->show,
                         "a partition cannot be renamed");
    if (b->part < 0 || svc_is_part_root(b))
        return svc_fail_path(s, CFS_ERR_PERM, b->show,
                         "a partition cannot be replaced");
    if ((err = svc_check_writable(s, a)) || (err = svc_check_writable(s, b)))
        return err;
    if (a->part != b->part) {
        sb_t m = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&m, " ");
        svc_sb_qstr(&m, a->show);
        svc_sb_str(&m, " to ");
        svc_sb_qstr(&m, b->show);
        svc_sb_str(&m, ": cannot rename across partitions");
        return CFS_ERR_INVAL;
    }
    cfs_t *fs = svc_path_fs(s, a);
    if (!fs)
        return CFS_ERR_IO;
    err = s->part[a->part].has_man ? svc_man_rename(s, a, b)
                                   : cfs_rename(fs, a->fs, b->fs);
    if (err < 0) {
        sb_t m = svc_err_begin(s, err);
        svc_sb_str(&m, " ");
        svc_sb_qstr(&m, a->show);
        svc_sb_str(&m, " to ");
        svc_sb_qstr(&m, b->show);
        svc_sb_str(&m, ": ");
        svc_sb_str(&m, svc_reason(err));
        return err;
    }
    handles_follow(s, a->part, a->show, b->show);
    svc_reply_done(s);
    return 0;
}

static void statfs_add(cellar_StatFsReply *o, const cfs_statvfs_t *v,
                       bool first)
{
    o->total += v->total;
    o->used += v->used;
    o->free += v->free;
    o->reclaimable += v->reclaimable;
    o->live += v->live;
    o->files += v->files;
    o->dirs += v->dirs;
    o->bad_blocks += v->bad_blocks;
    o->block_size = v->block_size;
    if (first || v->erase_max > o->erase_max)
        o->erase_max = v->erase_max;
    if (first || v->erase_min < o->erase_min)
        o->erase_min = v->erase_min;
    /* mean over blocks of all partitions summed so far */
    uint64_t sum = (uint64_t)o->erase_mean * o->block_count +
                   (uint64_t)v->erase_mean * v->block_count;
    o->block_count += v->block_count;
    o->erase_mean = o->block_count ? (uint32_t)(sum / o->block_count) : 0;
}

/* Flash pages by state (SPIFlashFileSystem's page statistics): bad pages
 * from retired blocks, free from erased space, erased (stale) from what GC
 * can reclaim, used the rest of the good pages. */
static void statfs_pages(cellar_StatFsReply *o, const cfs_statvfs_t *v,
                         uint32_t page)
{
    if (!page)
        return;
    uint32_t per_block = v->block_size / page;
    uint32_t good = (uint32_t)(v->total / page);
    uint32_t fre = (uint32_t)(v->free / page);
    uint32_t stale = (uint32_t)(v->reclaimable / page);
    if (stale > good - fre)
        stale = good - fre;
    o->page_size = page;
    o->pages_free += fre;
    o->pages_erased += stale;
    o->pages_used += good - fre - stale;
    o->pages_bad += v->bad_blocks * per_block;
    if (!o->gc_threshold) /* "/": the first partition's, /usr's */
        o->gc_threshold = v->gc_threshold;
}

int svc_do_statfs(svc_t *s, const cellar_StatFsRequest *r)
{
    svc_path_t *p = &s->pa;
    cfs_statvfs_t v;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    cellar_StatFsReply *o = &s->resp.body.statfs;
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (p->part >= 0 && (uint32_t)p->part != i)
            continue;
        if (p->part < 0 && !s->part[i].mounted)
            continue; /* "/": what is served (Hello says what is not) */
        cfs_t *fs = p->part >= 0 ? svc_path_fs(s, p) : &s->part[i].fs;
        if (!fs)
            return CFS_ERR_IO;
        err = cfs_statvfs(fs, &v);
        uint32_t of, od;
        if (err == 0 && s->part[i].has_man && man_own_counts(fs, &of, &od) == 0 &&
            of <= v.files && od < v.dirs) {
            v.files -= of; /* the manifest and staging are not the user's */
            v.dirs -= od;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        statfs_add(o, &v, o->block_count == 0);
        statfs_pages(o, &v, s->cfg.dev->page_size);
        if (!s->part[i].read_only && s->part[i].state == SVC_PART_OK)
            o->available += svc_room_bytes(s, i);
    }
    s->resp.which_body = cellar_Response_statfs_tag;
    return 0;
}

/* ---- garbage collection on request (GcRequest, GcConfigRequest) ------------------ */

/* The mounted, writable partition a Gc or GcConfig request names ("" is
 * /usr), or an error reply. */
static int gc_part(svc_t *s, const char *name, uint32_t *out)
{
    const char *w = name[0] == '/' ? name + 1 : name;
    if (!w[0])
        w = "usr";
    int i = svc_part_index(s, w, strlen(w));
    if (i < 0)
        return svc_fail_path(s, CFS_ERR_NOENT, name,
                             "no such partition (use \"/usr\" or \"/bak\")");
    if (!s->part[i].mounted)
        return svc_fail_path(s, CFS_ERR_NOTMOUNTED, name[0] ? name : "/usr",
                             "partition is not mounted");
    *out = (uint32_t)i;
    return 0;
}

int svc_do_gc(svc_t *s, svc_conn_t *c, const cellar_GcRequest *r)
{
    uint32_t i;
    int err = gc_part(s, r->partition, &i);
    if (err)
        return err;
    cfs_statvfs_t v;
    err = cfs_statvfs(&s->part[i].fs, &v);
    if (err < 0)
        return svc_fail_path(s, err, r->partition, NULL);
    svc_job_t *j = &s->job;
    j->kind = SVC_JOB_GC;
    j->part = (uint8_t)i;
    j->gc_want = r->blocks;
    j->gc_swept = 0;
    j->gc_free0 = v.free;
    j->gc_stale0 = v.reclaimable;
    /* one pass over the log as it is now reaches every stale record there
     * is: never more (each block swept costs an erase) */
    j->gc_limit = (uint32_t)(v.used / v.block_size) + 1;
    int rr = svc_job_gc_step(s);
    if (rr != 0)
        return svc_gc_done(s, rr);
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

int svc_do_gc_config(svc_t *s, const cellar_GcConfigRequest *r)
{
    uint32_t i, prev = 0;
    int err = gc_part(s, r->partition, &i);
    if (err)
        return err;
    err = cfs_set_gc_threshold(&s->part[i].fs, r->threshold, &prev);
    if (err == CFS_ERR_INVAL) {
        /* the highest: the good blocks less the reserve and an operation */
        cfs_statvfs_t v;
        uint64_t most = 0;
        if (cfs_statvfs(&s->part[i].fs, &v) == 0 && v.block_size &&
            v.total / v.block_size > v.reserve / v.block_size + 4)
            most = v.total / v.block_size - v.reserve / v.block_size - 4;
        sb_t m = svc_err_begin(s, err);
        svc_sb_str(&m, ": the threshold is from 6 blocks (the latest a GC "
                       "pass may start) to ");
        svc_sb_u64(&m, most);
        svc_sb_str(&m, " (what the partition leaves above its reserve)");
        return err;
    }
    if (err < 0)
        return svc_fail_path(s, err, r->partition, NULL);
    s->resp.which_body = cellar_Response_gc_config_tag;
    s->resp.body.gc_config.threshold = r->threshold;
    s->resp.body.gc_config.previous = prev;
    return 0;
}

int svc_do_hash(svc_t *s, svc_conn_t *c, const cellar_HashRequest *r)
{
    svc_path_t *p = &s->pa;
    svc_job_t *j = &s->job;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    cfs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return CFS_ERR_IO;
    /* A connection sees its own writes: a file it has open for writing is
     * hashed as that handle holds it (not yet published). */
    cfs_file_t *f = &j->f;
    for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
        if (c->h[k].id && c->h[k].shadow && c->h[k].part == (uint8_t)p->part &&
            strcmp(c->h[k].path, p->show) == 0)
            f = &c->h[k].file;
    if (f == &j->f) {
        err = cfs_file_open(fs, f, p->fs, CFS_O_RDONLY);
        if (err < 0)
            return svc_fail_open(s, err, p->show);
    }
    int32_t size = cfs_file_size(fs, f);
    if (size < 0 || r->offset > (uint64_t)size) {
        if (f == &j->f)
            (void)cfs_file_close(fs, f);
        return size < 0 ? svc_fail_path(s, size, p->show, NULL)
                        : svc_fail_path(s, CFS_ERR_INVAL, p->show,
                                        "offset is past the end of the file");
    }
    uint32_t off = (uint32_t)r->offset;
    uint32_t left = (uint32_t)size - off;
    if (r->length && r->length < left)
        left = (uint32_t)r->length;
    SVC_JOB_NOT_COPY(s); /* issue 14: the union */
    svc_copy_str(j->show, sizeof(j->show), p->show);
    j->kind = SVC_JOB_HASH;
    err = svc_job_hash_begin(s, (uint32_t)p->part, f, off, left);
    uint32_t budget = SVC_JOB_STEP_BYTES;
    int rr = err ? err : svc_job_hash_step(s, &budget);
    if (rr != 0)
        return svc_hash_done(s, rr);
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

static int format_part(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    /* a long request reads the partition (or its manifest): it ends */
    svc_job_cancel(s, CFS_ERR_IO, "cancelled: a partition was formatted");
    /* Every handle on the partition, of every connection, goes first. */
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (c->h[k].id && c->h[k].part == i)
                svc_handle_release(s, &c->h[k]);
    if (p->mounted) {
        svc_store_detach(s, i);
        (void)cfs_unmount(&p->fs);
    }
    p->mounted = 0;
    svc_log_part(s, "formatting", p, 0);
    svc_problems_forget(s, i);
    p->state = SVC_PART_UNMOUNTED;
    int err = cfs_format(&p->fs, &p->cfg);
    if (!err)
        err = cfs_mount(&p->fs, &p->cfg);
    if (err) {
        svc_log_part(s, "format failed:", p, err);
        return err;
    }
    p->mounted = 1;
    svc_part_gc_tune(s, i);
    return svc_store_attach(s, i);
}

int svc_do_format(svc_t *s, const cellar_FormatRequest *r)
{
    const char *w = r->partition;
    int which; /* partition index, or -1 for all */
    if (w[0] == '/')
        w++;
    if (strcmp(w, "*") == 0)
        which = -1;
    else if (w[0] == 0)
        which = 0;
    else if ((which = svc_part_index(s, w, strlen(w))) < 0)
        return svc_fail_path(s, CFS_ERR_NOENT, r->partition,
                         "no such partition (use \"/usr\", \"/bak\" or "
                         "\"*\" for all)");
    if (!r->confirm)
        return svc_fail_path(s, CFS_ERR_INVAL,
                         which < 0 ? "*" : s->part[which].name,
                         "confirm must be true: format erases every file");
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (which >= 0 && (uint32_t)which != i)
            continue;
        int err = format_part(s, i);
        if (err) {
            char nm[LAYOUT_NAME_MAX + 2] = "/";
            strcpy(nm + 1, s->part[i].name);
            return svc_fail_path(s, err, nm, NULL);
        }
    }
    svc_reply_done(s);
    return 0;
}
