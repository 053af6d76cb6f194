/*
 * libcellar_raw.c - raw partitions (issue 15, docs/RAW.md): RawRead,
 * RawWrite, RawErase and RawHash of a byte range of a named raw partition,
 * and the verified raw update (a one-entry update bundle "raw:NAME": the
 * device writes the image only once all of it arrived and matched its
 * SHA-256). Requests go one at a time through the plumbing of libcellar.c
 * (see docs/ARCHITECTURE.md, "Clients").
 */
#include "libcellar_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const cellar_partition_t *cellar_raw_find(const cellar_t *c, const char *name)
{
    const cellar_info_t *in = cellar_info(c);
    for (uint32_t i = 0; in && name && i < in->npartitions; i++)
        if (in->partitions[i].kind == CELLAR_KIND_RAW &&
            strcmp(in->partitions[i].path, name) == 0)
            return &in->partitions[i];
    return NULL;
}

/* Copy a raw partition name into a request field (8 bytes with the NUL). */
static int set_name(cellar_t *c, char *dst, size_t cap, const char *name)
{
    if (!name || !*name || strlen(name) >= cap)
        return cellar__fail(c, CELLAR_ERR_INVAL, "%s: not a raw partition name "
                            "(1 to %zu bytes)", name ? name : "(null)", cap - 1);
    strcpy(dst, name);
    return 0;
}

static int at_name(cellar_t *c, int err, const char *name)
{
    if (err < 0 && c->tp && !c->broken)
        snprintf(c->errpath, sizeof(c->errpath), ":%s", name);
    return err;
}

int64_t cellar_raw_read(cellar_t *c, const char *name, uint64_t offset, void *buf,
                        uint32_t len)
{
    uint64_t got = 0;
    uint32_t chunk = cellar_info(c)->max_chunk ? cellar_info(c)->max_chunk : 16384;
    while (got < len) {
        cellar_Request *req = cellar__new_req(c, cellar_Request_raw_read_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        int err = set_name(c, req->body.raw_read.name, sizeof(req->body.raw_read.name),
                           name);
        if (err < 0)
            return err;
        uint64_t left = len - got;
        req->body.raw_read.offset = offset + got;
        req->body.raw_read.length = left < chunk ? (uint32_t)left : chunk;
        err = cellar__rpc(c, cellar_Response_read_tag);
        if (err < 0)
            return at_name(c, err, name);
        const cellar_ReadReply *r = &cellar__resp(c)->body.read;
        if (r->data.size > left)
            return cellar__fail(c, CELLAR_ERR_PROTO, "raw read: %u bytes for %llu asked",
                                (unsigned)r->data.size, (unsigned long long)left);
        memcpy((uint8_t *)buf + got, r->data.bytes, r->data.size);
        got += r->data.size;
        if (r->eof || r->data.size == 0)
            break;
    }
    return (int64_t)got;
}

int cellar_raw_write(cellar_t *c, const char *name, uint64_t offset, const void *buf,
                     uint32_t len)
{
    uint32_t done = 0;
    uint32_t chunk = cellar_info(c)->max_chunk ? cellar_info(c)->max_chunk : 16384;
    if (chunk > 16384)
        chunk = 16384;
    do {
        cellar_Request *req = cellar__new_req(c, cellar_Request_raw_write_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        int err = set_name(c, req->body.raw_write.name,
                           sizeof(req->body.raw_write.name), name);
        if (err < 0)
            return err;
        uint32_t n = len - done < chunk ? len - done : chunk;
        req->body.raw_write.offset = offset + done;
        req->body.raw_write.data.size = (pb_size_t)n;
        memcpy(req->body.raw_write.data.bytes, (const uint8_t *)buf + done, n);
        err = cellar__rpc(c, cellar_Response_write_tag);
        if (err < 0)
            return at_name(c, err, name);
        done += n;
    } while (done < len);
    return 0;
}

int cellar_raw_erase(cellar_t *c, const char *name, uint64_t offset, uint64_t length)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_raw_erase_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = set_name(c, req->body.raw_erase.name, sizeof(req->body.raw_erase.name),
                       name);
    if (err < 0)
        return err;
    req->body.raw_erase.offset = offset;
    req->body.raw_erase.length = length;
    return at_name(c, cellar__slow_rpc(c, cellar_Response_done_tag), name);
}

int cellar_raw_sha256(cellar_t *c, const char *name, uint64_t offset, uint64_t length,
                      uint8_t sha256[CELLAR_SHA256_SIZE], uint64_t *hashed)
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_raw_hash_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    int err = set_name(c, req->body.raw_hash.name, sizeof(req->body.raw_hash.name),
                       name);
    if (err < 0)
        return err;
    req->body.raw_hash.offset = offset;
    req->body.raw_hash.length = length;
    err = cellar__slow_rpc(c, cellar_Response_hash_tag);
    if (err < 0)
        return at_name(c, err, name);
    const cellar_HashReply *r = &cellar__resp(c)->body.hash;
    memcpy(sha256, r->sha256, CELLAR_SHA256_SIZE);
    if (hashed)
        *hashed = r->length;
    return 0;
}

/* ---- raw images in a bundle ------------------------------------------------------- */
static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const cellar__item_t *)a)->e.path, ((const cellar__item_t *)b)->e.path);
}

int cellar_bundle_add_raw(cellar_t *c, cellar_bundle_t *b, const char *name,
                          const char *localfile)
{
    char tmp[8], path[16];
    int err = set_name(c, tmp, sizeof(tmp), name);
    if (err < 0)
        return err;
    if (!b || !localfile)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no bundle or no file");
    snprintf(path, sizeof(path), "raw:%s", name);
    for (size_t i = 0; i < b->items.n; i++)
        if (!strcmp(b->items.v[i].e.path, path))
            return cellar__fail(c, CELLAR_ERR_INVAL, "raw:%s: twice in the bundle", name);
    struct stat st;
    if (stat(localfile, &st) < 0)
        return cellar__local_fail(c, -errno, localfile, NULL);
    if (!S_ISREG(st.st_mode))
        return cellar__local_fail(c, -EINVAL, localfile, "not a regular file");
    char *local = strdup(localfile);
    if (!local)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    uint8_t sha[CELLAR_SHA256_SIZE];
    err = cellar_sha256_file(localfile, sha);
    if (err < 0) {
        free(local);
        return cellar__local_fail(c, err, localfile, "read");
    }
    if ((err = cellar__item_add(c, &b->items, path, local)) < 0) {
        free(local);
        return err;
    }
    cellar__item_t *it = &b->items.v[b->items.n - 1];
    it->e.size = (uint64_t)st.st_size;
    memcpy(it->e.sha256, sha, CELLAR_SHA256_SIZE);
    b->bytes += it->e.size;
    qsort(b->items.v, b->items.n, sizeof(*b->items.v), cmp_entry);
    return 0;
}

/* ---- verified raw update ------------------------------------------------------------ */
static void set_id(pb_size_t *size, uint8_t *bytes, const uint8_t id[CELLAR_SHA256_SIZE])
{
    *size = CELLAR_SHA256_SIZE;
    memcpy(bytes, id, CELLAR_SHA256_SIZE);
}

int cellar_raw_update(cellar_t *c, const char *name, const void *image, uint32_t len,
                      bool *unchanged)
{
    cellar__item_t it;
    uint8_t id[CELLAR_SHA256_SIZE];
    char tmp[8];
    if (unchanged)
        *unchanged = false;
    int err = set_name(c, tmp, sizeof(tmp), name);
    if (err < 0)
        return err;
    memset(&it, 0, sizeof(it));
    snprintf(it.e.path, sizeof(it.e.path), "raw:%s", name);
    it.e.size = len;
    csha_t h;
    csha_init(&h);
    if (csha_start(&h) || csha_update(&h, image, len) || csha_finish(&h, it.e.sha256)) {
        csha_free(&h);
        return cellar__fail(c, CELLAR_ERR_IO, "SHA-256 failed");
    }
    csha_free(&h);
    cellar__bundle_id(&it, 1, id);

    cellar_Request *req = cellar__new_req(c, cellar_Request_update_begin_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    set_id(&req->body.update_begin.bundle.size, req->body.update_begin.bundle.bytes, id);
    req->body.update_begin.entries = 1;
    req->body.update_begin.bytes = len;
    if ((err = cellar__slow_rpc(c, cellar_Response_update_begin_tag)) < 0)
        return at_name(c, err, name);

    req = cellar__new_req(c, cellar_Request_update_declare_tag);
    cellar_UpdateDeclareRequest *d = &req->body.update_declare;
    set_id(&d->bundle.size, d->bundle.bytes, id);
    d->first = 0;
    d->entries_count = 1;
    snprintf(d->entries[0].path, sizeof(d->entries[0].path), "%s", it.e.path);
    d->entries[0].size = len;
    d->entries[0].sha256.size = CELLAR_SHA256_SIZE;
    memcpy(d->entries[0].sha256.bytes, it.e.sha256, CELLAR_SHA256_SIZE);
    if ((err = cellar__slow_rpc(c, cellar_Response_update_declare_tag)) < 0)
        goto fail;
    const cellar_UpdateDeclareReply *dr = &cellar__resp(c)->body.update_declare;
    if (dr->status_count != 1) {
        err = cellar__fail(c, CELLAR_ERR_PROTO, "declare reply without a status");
        goto fail;
    }
    cellar_EntryStatus st = dr->status[0];
    uint64_t have = dr->have_count ? dr->have[0] : 0;
    if (st == cellar_EntryStatus_UNCHANGED) {
        if (unchanged)
            *unchanged = true;
        have = len;
    } else if (st != cellar_EntryStatus_SEND_NEW && st != cellar_EntryStatus_SEND_CHANGED) {
        err = cellar__fail(c, CELLAR_ERR_PROTO, "unexpected declare status %d", (int)st);
        goto fail;
    }
    if (have > len)
        have = 0;
    uint32_t chunk = cellar_info(c)->max_chunk ? cellar_info(c)->max_chunk : 16384;
    if (chunk > 16384)
        chunk = 16384;
    for (uint64_t pos = have; pos < len;) {
        uint32_t n = len - pos < chunk ? (uint32_t)(len - pos) : chunk;
        req = cellar__new_req(c, cellar_Request_update_write_tag);
        req->body.update_write.index = 0;
        req->body.update_write.offset = pos;
        req->body.update_write.data.size = (pb_size_t)n;
        memcpy(req->body.update_write.data.bytes, (const uint8_t *)image + pos, n);
        if ((err = cellar__rpc(c, cellar_Response_write_tag)) < 0)
            goto fail;
        pos += n;
    }
    req = cellar__new_req(c, cellar_Request_update_commit_tag);
    set_id(&req->body.update_commit.bundle.size, req->body.update_commit.bundle.bytes, id);
    if ((err = cellar__slow_rpc(c, cellar_Response_update_commit_tag)) < 0)
        goto fail;
    return 0;
fail:
    if (!c->broken) { /* drop what was staged; keep the first error */
        char msg[sizeof(c->errmsg)];
        snprintf(msg, sizeof(msg), "%s", c->errmsg);
        (void)cellar_update_abort(c, id);
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg);
    }
    return at_name(c, err, name);
}
