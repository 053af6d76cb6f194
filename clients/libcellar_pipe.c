/*
 * libcellar_pipe.c - pipelined transfers through one open handle (see
 * cellar__pipe_t in libcellar_int.h).
 *
 * Requests are sent while fewer than `window` are unanswered; replies are
 * matched by id to a ring of slots (oldest first) and retired in order.
 * Reads that come back out of order (the device answers in order, but the
 * protocol does not promise it) are stashed and delivered in order, so the
 * SHA-256 of the stream is always computed in file order.
 *
 * Range verification: after the requests of each range of `range` bytes
 * (and after the last, shorter one) a Hash of that range is put into the
 * same pipeline (preceded by a Sync for uploads, so the Hash reads the
 * written data). The device hashes range k while the data of range k+1 is
 * still flowing, instead of one long Hash of the whole file at the end; a
 * wrong range fails the transfer at once with CELLAR_ERR_BADMSG. The last
 * range is hashed "to the end of the file", so its length also proves the
 * file's size.
 */
#include "libcellar_int.h"

#include <stdlib.h>
#include <string.h>

typedef enum { SLOT_DATA = 0, SLOT_SYNC, SLOT_HASH } slot_kind_t;

typedef struct slot {
    uint32_t id;
    uint8_t kind;
    bool done;       /* answered */
    bool last;       /* HASH: the last range (hashed to the end) */
    bool delivered;  /* DATA (read): already delivered to the sink */
    uint32_t len;    /* DATA: bytes; HASH: bytes of the range */
    uint32_t got;    /* DATA (read): bytes received */
    uint64_t pos;    /* from the start of the transfer */
    uint64_t hashed; /* HASH: bytes the device hashed */
    uint8_t digest[CELLAR_SHA256_SIZE]; /* HASH: local (write) / device (read) */
} slot_t;

typedef struct ring {
    slot_t s[CELLAR_MAX_INFLIGHT];
    uint32_t head, count;
} ring_t;

static slot_t *ring_at(ring_t *r, uint32_t i)
{
    return &r->s[(r->head + i) % CELLAR_MAX_INFLIGHT];
}

static slot_t *ring_push(ring_t *r, uint32_t id, slot_kind_t kind, uint64_t pos,
                         uint32_t len)
{
    slot_t *s = ring_at(r, r->count++);
    memset(s, 0, sizeof(*s));
    s->id = id;
    s->kind = (uint8_t)kind;
    s->pos = pos;
    s->len = len;
    return s;
}

/* Receive the next reply and find its slot; returns the index or an error. */
static int ring_recv(cellar_t *c, ring_t *r)
{
    int err = cellar__recv(c);
    if (err < 0)
        return err;
    cellar_Response *resp = cellar__resp(c);
    for (uint32_t i = 0; i < r->count; i++)
        if (ring_at(r, i)->id == resp->id && !ring_at(r, i)->done)
            return (int)i;
    c->broken = true;
    if (resp->id == 0 && resp->has_error) { /* the device is closing */
        err = cellar__check(c, 0);
        return err < 0 ? err : CELLAR_ERR_PROTO;
    }
    return cellar__fail(c, CELLAR_ERR_PROTO, "reply id %u matches no request",
                        (unsigned)resp->id);
}

/* The message of the first failure, kept while the replies still in
 * flight are drained (each of them would overwrite errmsg). */
typedef struct first_msg {
    bool set;
    char msg[sizeof(((cellar_t *)0)->errmsg)];
    char path[sizeof(((cellar_t *)0)->errpath)];
} first_msg_t;

static void first_keep(cellar_t *c, int first_err, first_msg_t *m)
{
    if (!first_err || m->set)
        return;
    memcpy(m->msg, c->errmsg, sizeof(m->msg));
    memcpy(m->path, c->errpath, sizeof(m->path));
    m->set = true;
}

static void first_restore(cellar_t *c, const first_msg_t *m)
{
    if (!m->set)
        return;
    memcpy(c->errmsg, m->msg, sizeof(m->msg));
    memcpy(c->errpath, m->path, sizeof(m->path));
}

/* Send Sync of the handle (uploads) - a pipelined request. */
static int64_t send_sync(cellar_t *c, cellar_fh_t h)
{
    int err = cellar__handle_req(c, cellar_Request_sync_tag, h);
    return err < 0 ? err : cellar__send(c);
}

static int64_t send_hash(cellar_t *c, const char *path, uint64_t off, uint64_t len)
{
    int err = cellar__hash_req(c, path, off, len);
    return err < 0 ? err : cellar__send(c);
}

static int range_mismatch(cellar_t *c, const cellar__pipe_t *p, const slot_t *s,
                          const uint8_t local[CELLAR_SHA256_SIZE],
                          const uint8_t device[CELLAR_SHA256_SIZE], uint64_t hashed)
{
    char a[65], b[65];
    return cellar__fail(c, CELLAR_ERR_BADMSG,
                        "%s: SHA-256 mismatch in bytes %llu..%llu (local %.16s..., "
                        "device %.16s..., %llu bytes hashed)",
                        p->path ? p->path : p->hash_path,
                        (unsigned long long)s->pos,
                        (unsigned long long)(s->pos + s->len),
                        cellar_sha256_hex(local, a), cellar_sha256_hex(device, b),
                        (unsigned long long)hashed);
}

/* Upload read-ahead: the requests to send, in order, produced (data read
 * from the source and hashed) ahead of the window while the device is busy,
 * e.g. hashing a range. Bounded: PF_ITEMS items, PF_ITEMS chunks of data. */
#define PF_ITEMS 80

typedef struct pf_item {
    uint8_t kind;
    bool last;
    uint32_t len;
    uint64_t pos;
    uint8_t digest[CELLAR_SHA256_SIZE];
} pf_item_t;

typedef struct producer {
    const cellar__pipe_t *p;
    cellar__src_fn src;
    void *src_ctx;
    csha_t rsha;
    uint64_t pos, range_start;
    bool need_sync, need_hash;
    pf_item_t item[PF_ITEMS];
    uint8_t *pool;             /* cap * chunk */
    uint32_t cap;              /* items in use (<= PF_ITEMS) */
    uint32_t head, count;
} producer_t;

static bool prod_more(const producer_t *q)
{
    return q->pos < q->p->total || q->need_sync || q->need_hash;
}

/* Produce the next item; returns 0 or the source's error. */
static int prod_one(producer_t *q)
{
    const cellar__pipe_t *p = q->p;
    uint32_t at = (q->head + q->count) % q->cap;
    pf_item_t *it = &q->item[at];
    memset(it, 0, sizeof(*it));
    if (q->need_sync) {
        it->kind = SLOT_SYNC;
        it->pos = q->pos;
        q->need_sync = false;
    } else if (q->need_hash) {
        it->kind = SLOT_HASH;
        it->pos = q->range_start;
        it->len = (uint32_t)(q->pos - q->range_start);
        it->last = q->pos == p->total;
        (void)csha_finish(&q->rsha, it->digest);
        (void)csha_start(&q->rsha);
        q->range_start = q->pos;
        q->need_hash = false;
    } else {
        uint64_t left = p->total - q->pos;
        if (p->range && q->range_start + p->range - q->pos < left)
            left = q->range_start + p->range - q->pos;
        uint32_t n = (uint32_t)(left < p->chunk ? left : p->chunk);
        uint8_t *d = q->pool + (size_t)at * p->chunk;
        int e = q->src(q->src_ctx, q->pos, d, n);
        if (e < 0)
            return e;
        if (p->sha)
            (void)csha_update(p->sha, d, n);
        if (p->range)
            (void)csha_update(&q->rsha, d, n);
        it->kind = SLOT_DATA;
        it->pos = q->pos;
        it->len = n;
        q->pos += n;
        if (p->range && (q->pos - q->range_start == p->range || q->pos == p->total))
            q->need_sync = q->need_hash = true;
    }
    q->count++;
    return 0;
}

/* Send the oldest produced item; returns its request id or an error. */
static int64_t send_item(cellar_t *c, producer_t *q, ring_t *r)
{
    const cellar__pipe_t *p = q->p;
    pf_item_t *it = &q->item[q->head];
    int64_t id;
    if (it->kind == SLOT_SYNC) {
        id = send_sync(c, p->handle);
    } else if (it->kind == SLOT_HASH) {
        id = send_hash(c, p->hash_path, p->off + it->pos, it->last ? 0 : it->len);
    } else {
        /* Only the fields encoded: no need to clear the 16 KiB struct. */
        cellar_Request *req = cellar__req(c);
        req->which_body = cellar_Request_write_tag;
        req->body.write.handle = p->handle;
        req->body.write.offset = p->off + it->pos;
        req->body.write.data.size = (pb_size_t)it->len;
        memcpy(req->body.write.data.bytes, q->pool + (size_t)q->head * p->chunk,
               it->len);
        id = cellar__send(c);
    }
    if (id < 0)
        return id;
    slot_t *s = ring_push(r, (uint32_t)id, (slot_kind_t)it->kind, it->pos, it->len);
    s->last = it->last;
    memcpy(s->digest, it->digest, sizeof(s->digest));
    q->head = (q->head + 1) % q->cap;
    q->count--;
    return id;
}

int cellar__pipe_write(cellar_t *c, const cellar__pipe_t *p, cellar__src_fn src,
                       void *src_ctx)
{
    if (p->range && (!p->hash_path || strlen(p->hash_path) > CELLAR_PATH_MAX))
        return cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "path too long");
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    /* Read ahead only what the transfer needs. */
    uint64_t chunks = p->total / p->chunk + 2;
    uint32_t items = chunks < PF_ITEMS ? (uint32_t)chunks : PF_ITEMS;
    producer_t *q = calloc(1, sizeof(*q));
    uint8_t *pool = q ? malloc((size_t)items * p->chunk) : NULL;
    if (!pool) {
        free(q);
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    }
    q->p = p;
    q->src = src;
    q->src_ctx = src_ctx;
    q->pool = pool;
    q->cap = items;
    csha_init(&q->rsha);
    if (p->range)
        (void)csha_start(&q->rsha);
    ring_t r = {.head = 0, .count = 0};
    uint64_t acked = 0;
    int first_err = 0;
    first_msg_t fm = { .set = false };
    if (p->progress)
        p->progress(p->progress_ctx, p->path, 0, p->total);
    uint64_t t0 = cellar__now_us();

    for (;;) {
        /* 1. fill the window from the read-ahead queue */
        while (first_err == 0 && r.count < p->window && (q->count > 0 || prod_more(q))) {
            if (q->count == 0) {
                int e = prod_one(q);
                if (e < 0) {
                    first_err = e;
                    break;
                }
            }
            int64_t id = send_item(c, q, &r);
            if (id < 0) {
                first_err = (int)id;
                if (!cellar_connected(c))
                    goto out; /* nothing can be drained */
                break;
            }
        }
        if (r.count == 0)
            break; /* all sent and answered, or failed */
        /* 2. a reply waiting? take it; otherwise read ahead while the device
         *    works, or block for the next reply */
        int ready_ = cellar__reply_ready(c);
        if (ready_ < 0) {
            first_err = first_err ? first_err : ready_;
            goto out;
        }
        if (!ready_ && first_err == 0 && prod_more(q) && q->count < q->cap) {
            int e = prod_one(q);
            if (e < 0)
                first_err = e;
            continue;
        }
        int i = ring_recv(c, &r);
        if (i < 0) {
            first_err = first_err ? first_err : i;
            goto out;
        }
        slot_t *s = ring_at(&r, (uint32_t)i);
        s->done = true;
        int e = 0;
        if (s->kind == SLOT_DATA) {
            e = cellar__check(c, cellar_Response_write_tag);
            if (e == 0 && cellar__resp(c)->body.write.written != s->len)
                e = cellar__fail(c, CELLAR_ERR_IO, "short write (%u of %u bytes)",
                                 (unsigned)cellar__resp(c)->body.write.written,
                                 (unsigned)s->len);
            if (e == 0 && first_err == 0) {
                acked += s->len;
                if (p->progress)
                    p->progress(p->progress_ctx, p->path, acked, p->total);
            }
        } else if (s->kind == SLOT_SYNC) {
            e = cellar__check(c, cellar_Response_done_tag);
        } else {
            e = cellar__check(c, cellar_Response_hash_tag);
            const cellar_HashReply *h = &cellar__resp(c)->body.hash;
            if (e == 0 && (h->length != s->len || memcmp(h->sha256, s->digest, 32)))
                e = range_mismatch(c, p, s, s->digest, h->sha256, h->length);
        }
        if (e < 0 && first_err == 0)
            first_err = e;
        first_keep(c, first_err, &fm);
        while (r.count > 0 && ring_at(&r, 0)->done) {
            r.head = (r.head + 1) % CELLAR_MAX_INFLIGHT;
            r.count--;
        }
    }
out:
    if (first_err == 0)
        cellar__rate_sample(c, acked, cellar__now_us() - t0);
    first_keep(c, first_err, &fm);
    first_restore(c, &fm);
    csha_free(&q->rsha);
    free(pool);
    free(q);
    return first_err;
}

/* Deliver in-order data to the sink and the digests. */
static int deliver(const cellar__pipe_t *p, cellar__sink_fn sink, void *sink_ctx,
                   csha_t *rsha, uint64_t pos, const uint8_t *d,
                   uint32_t n)
{
    if (p->sha)
        (void)csha_update(p->sha, d, n);
    if (p->range)
        (void)csha_update(rsha, d, n);
    return sink(sink_ctx, pos, d, n);
}

int cellar__pipe_read(cellar_t *c, const cellar__pipe_t *p, cellar__sink_fn sink,
                      void *sink_ctx, uint64_t *got)
{
    if (p->range && (!p->hash_path || strlen(p->hash_path) > CELLAR_PATH_MAX))
        return cellar__fail(c, CELLAR_ERR_NAMETOOLONG, "path too long");
    ring_t r = {.head = 0, .count = 0};
    uint64_t asked = 0, delivered = 0, range_start = 0;
    bool eof = false, need_hash = false;
    int first_err = 0;
    first_msg_t fm = { .set = false };
    uint8_t *stash = NULL; /* window * chunk, only if replies come unordered */
    csha_t rsha;
    csha_init(&rsha);
    if (p->range)
        (void)csha_start(&rsha);
    *got = 0;
    if (p->progress)
        p->progress(p->progress_ctx, p->path, 0, p->total);
    uint64_t t0r = cellar__now_us();

    while ((first_err == 0 && ((asked < p->total && !eof) || need_hash)) ||
           r.count > 0) {
        if (first_err == 0 && r.count < p->window &&
            ((asked < p->total && !eof) || need_hash)) {
            int64_t id;
            if (need_hash) {
                bool last = asked == p->total || eof;
                uint64_t len = asked - range_start;
                id = send_hash(c, p->hash_path, p->off + range_start, last ? 0 : len);
                if (id < 0) {
                    first_err = (int)id;
                    break;
                }
                slot_t *s = ring_push(&r, (uint32_t)id, SLOT_HASH, range_start,
                                      (uint32_t)len);
                s->last = last;
                range_start = asked;
                need_hash = false;
                continue;
            }
            uint64_t left = p->total - asked;
            if (p->range && range_start + p->range - asked < left)
                left = range_start + p->range - asked;
            uint32_t n = (uint32_t)(left < p->chunk ? left : p->chunk);
            cellar_Request *req = cellar__new_req(c, cellar_Request_read_tag);
            if (!req) {
                first_err = CELLAR_ERR_NOTCONN;
                break;
            }
            req->body.read.handle = p->handle;
            req->body.read.offset = p->off + asked;
            req->body.read.length = n;
            id = cellar__send(c);
            if (id < 0) {
                first_err = (int)id;
                break;
            }
            ring_push(&r, (uint32_t)id, SLOT_DATA, asked, n);
            asked += n;
            if (p->range && (asked - range_start == p->range || asked == p->total))
                need_hash = true;
            continue;
        }

        int i = ring_recv(c, &r);
        if (i < 0) {
            first_err = first_err ? first_err : i;
            break;
        }
        slot_t *s = ring_at(&r, (uint32_t)i);
        s->done = true;
        if (s->kind == SLOT_HASH) {
            int e = cellar__check(c, cellar_Response_hash_tag);
            if (e < 0) {
                if (first_err == 0)
                    first_err = e;
            } else {
                memcpy(s->digest, cellar__resp(c)->body.hash.sha256, 32);
                s->hashed = cellar__resp(c)->body.hash.length;
            }
        } else {
            int e = cellar__check(c, cellar_Response_read_tag);
            const cellar_ReadReply *rr = &cellar__resp(c)->body.read;
            if (e == 0 && (rr->data.size > s->len || (rr->data.size < s->len && !rr->eof)))
                e = cellar__fail(c, CELLAR_ERR_PROTO,
                                 "read reply of %u bytes for %u requested",
                                 (unsigned)rr->data.size, (unsigned)s->len);
            if (e < 0) {
                if (first_err == 0)
                    first_err = e;
            } else if (first_err == 0) {
                s->got = rr->data.size;
                if (rr->eof || rr->data.size < s->len) {
                    eof = true;
                    if (p->range && range_start < asked) {
                        /* stop asking; hash what was asked of this range */
                        need_hash = need_hash || asked > range_start;
                    }
                }
                if (i == 0) {
                    /* In order (the normal case): straight from the reply. */
                    if (s->got && delivered == s->pos) {
                        e = deliver(p, sink, sink_ctx, &rsha, s->pos, rr->data.bytes,
                                    s->got);
                        if (e < 0)
                            first_err = e;
                        delivered += s->got;
                    }
                    s->delivered = true;
                } else {
                    if (!stash)
                        stash = malloc((size_t)CELLAR_MAX_INFLIGHT * p->chunk);
                    if (!stash) {
                        first_err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
                    } else {
                        memcpy(stash + (size_t)(s - r.s) * p->chunk, rr->data.bytes,
                               s->got);
                    }
                }
            }
        }
        first_keep(c, first_err, &fm);
        /* Retire answered slots in order. */
        while (r.count > 0 && ring_at(&r, 0)->done) {
            slot_t *h = ring_at(&r, 0);
            if (first_err == 0 && h->kind == SLOT_DATA && !h->delivered && h->got &&
                delivered == h->pos) {
                int se = deliver(p, sink, sink_ctx, &rsha, h->pos,
                                 stash + (size_t)(h - r.s) * p->chunk, h->got);
                if (se < 0)
                    first_err = se;
                delivered += h->got;
            } else if (first_err == 0 && h->kind == SLOT_HASH) {
                /* Every read of this range is delivered: compare. */
                uint8_t local[CELLAR_SHA256_SIZE];
                (void)csha_finish(&rsha, local);
                (void)csha_start(&rsha);
                uint64_t have = delivered - h->pos;
                if (have != h->len || h->hashed != h->len ||
                    memcmp(local, h->digest, sizeof(local)))
                    first_err = range_mismatch(c, p, h, local, h->digest, h->hashed);
            }
            r.head = (r.head + 1) % CELLAR_MAX_INFLIGHT;
            r.count--;
            if (p->progress && first_err == 0 && h->kind == SLOT_DATA)
                p->progress(p->progress_ctx, p->path, delivered, p->total);
        }
        first_keep(c, first_err, &fm);
    }
    if (first_err == 0)
        cellar__rate_sample(c, delivered, cellar__now_us() - t0r);
    first_keep(c, first_err, &fm);
    first_restore(c, &fm);
    free(stash);
    csha_free(&rsha);
    *got = delivered;
    return first_err;
}

/* ---- batches of small requests (issue 11) ------------------------------------------ */
int cellar__batch_run(cellar_t *c, size_t n, cellar__fill_fn fill, cellar__done_fn done,
                      void *ctx, bool slow)
{
    if (n == 0)
        return 0;
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    uint32_t *ids = malloc(n * sizeof(*ids));
    if (!ids)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    uint32_t saved = c->cfg.timeout_ms;
    if (slow && c->cfg.timeout_ms < CELLAR_SLOW_TIMEOUT_MS)
        c->cfg.timeout_ms = CELLAR_SLOW_TIMEOUT_MS;
    size_t sent = 0, got = 0, inflight = 0;
    int first = 0;
    first_msg_t fm = { .set = false };
    uint64_t t0 = cellar__now_us();
    while (got < n) {
        while (first == 0 && sent < n && inflight < CELLAR_BATCH_INFLIGHT) {
            int e = fill(ctx, sent);
            if (e < 0 && e != CELLAR_ERR_NOTCONN && cellar_connected(c)) {
                /* this request cannot be made (a path too long...): its
                 * error is its answer; the others go on */
                ids[sent] = 0;
                int de = done(ctx, sent++, e);
                if (de < 0)
                    first = de;
                continue;
            }
            int64_t id = e < 0 ? e : cellar__send(c);
            if (id < 0) {
                first = (int)id;
                break;
            }
            ids[sent++] = (uint32_t)id;
            inflight++;
            /* take answers that are already here: never block on a full
             * socket while the device waits for us to read */
            int r = cellar__reply_ready(c);
            if (r <= 0)
                continue;
            break;
        }
        first_keep(c, first, &fm);
        while (got < sent && ids[got] == 0)
            got++; /* answered locally */
        if (got == sent && (first != 0 || sent == n))
            break;
        if (got == sent)
            continue;
        if (!cellar_connected(c))
            break;
        int e = cellar__recv(c);
        if (e < 0) {
            first = first ? first : e;
            break;
        }
        cellar_Response *resp = cellar__resp(c);
        if (resp->id != ids[got]) {
            c->broken = true;
            e = resp->id == 0 && resp->has_error ? cellar__check(c, 0) : 0;
            if (e == 0)
                e = cellar__fail(c, CELLAR_ERR_PROTO, "reply id %u, expected %u",
                                 (unsigned)resp->id, (unsigned)ids[got]);
            first = first ? first : e;
            break;
        }
        if (got == 0)
            cellar__rtt_sample(c, cellar__now_us() - t0);
        inflight--;
        e = done(ctx, got++, cellar__check(c, 0));
        if (e < 0 && first == 0)
            first = e;
        first_keep(c, first, &fm);
    }
    first_keep(c, first, &fm);
    first_restore(c, &fm);
    c->cfg.timeout_ms = saved;
    free(ids);
    return first;
}
