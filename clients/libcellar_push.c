/*
 * libcellar_push.c - pushing a built bundle (libcellar_bundle.c) to one
 * device as one atomic update: removals from the device's tree, the bundle
 * id, UpdateBegin, UpdateDeclare, the missing bytes pipelined (up to
 * `inflight` UpdateWrite requests in flight, file after file, each chunk
 * read from the local file straight into the request and re-hashed),
 * UpdateCommit and the manifest digest; cellar_push = build + push; and
 * UpdateAbort. Above the bundle, the manifest (libcellar_manifest.c), the
 * tree walk (libcellar_fs.c) and the plumbing (libcellar.c); see
 * docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(CELLAR_DECLARE_PAGE == CELLAR__FIELD_COUNT(cellar_UpdateDeclareRequest, entries),
               "CELLAR_DECLARE_PAGE differs from UpdateDeclareRequest.entries");
_Static_assert(CELLAR_DECLARE_PAGE == CELLAR__FIELD_COUNT(cellar_UpdateDeclareReply, status) &&
               CELLAR_DECLARE_PAGE == CELLAR__FIELD_COUNT(cellar_UpdateDeclareReply, have),
               "UpdateDeclareReply arrays differ from CELLAR_DECLARE_PAGE");

/* ---- push ------------------------------------------------------------------------------------ */
const char *cellar_push_action_name(int action)
{
    switch (action) {
    case CELLAR_PUSH_NEW: return "new";
    case CELLAR_PUSH_CHANGED: return "changed";
    case CELLAR_PUSH_UNCHANGED: return "unchanged";
    case CELLAR_PUSH_DELETED: return "deleted";
    case CELLAR_PUSH_ABSENT: return "absent";
    default: return "unknown";
    }
}

void cellar_push_report_free(cellar_push_report_t *rep)
{
    if (!rep)
        return;
    free(rep->entries);
    memset(rep, 0, sizeof(*rep));
}

/* One push of a bundle to one device: its own copy of the bundle's
 * entries (the local paths borrowed from the bundle), then its removals. */
typedef struct push {
    cellar_t *c;
    const cellar_push_opts_t *o;
    cellar_push_report_t *rep;
    cellar__items_t v;
    const cellar__strvec_t *ldirs; /* device paths of the local directories */
    bool no_digest;                /* issue 11: a tree copy needs no digest */
    cellar__mlist_t ml;            /* issue 11: the manifest asked after the commit */
    bool ml_sent;
    size_t *page_first;            /* issue 11: Declare pages sized to max_frame; */
    size_t npages;                 /* page k = entries page_first[k].. [k+1] */
} push_t;

static unsigned depth_of(const char *path)
{
    unsigned d = 0;
    for (; *path; path++)
        d += *path == '/';
    return d;
}

static int cmp_dir_deepest(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    unsigned dx = depth_of(x), dy = depth_of(y);
    if (dx != dy)
        return dx > dy ? -1 : 1;
    return strcmp(x, y);
}

static bool item_has(const push_t *p, size_t nfiles, const char *path)
{
    size_t lo = 0, hi = nfiles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(p->v.v[mid].e.path, path);
        if (r == 0)
            return true;
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* The device tree under rdir (missing = empty). */
static int remote_tree(cellar_t *c, const char *rdir, cellar__strvec_t *files, cellar__strvec_t *dirs)
{
    cellar_stat_t st;
    int err = cellar_stat(c, rdir, &st);
    if (err == CELLAR_ERR_NOENT)
        return 0;
    if (err < 0)
        return cellar__at_path(c, err, rdir);
    if (st.type != CELLAR_TYPE_DIR)
        return cellar__at_path(c, cellar__fail(c, CELLAR_ERR_NOTDIR, "%s: not a directory", rdir),
                       rdir);
    err = cellar__walk(c, rdir, 0, files, dirs);
    cellar__sv_sort(files);
    cellar__sv_sort(dirs);
    return err;
}

/* Removal entries for what the device has under rdir and localdir lacks. */
static int add_removals(push_t *p, size_t nfiles, const cellar__strvec_t *rfiles,
                        cellar__strvec_t *rdirs)
{
    for (size_t i = 0; i < rfiles->n; i++) {
        if (item_has(p, nfiles, rfiles->v[i]))
            continue;
        int err = cellar__item_add(p->c, &p->v, rfiles->v[i], NULL);
        if (err < 0)
            return err;
        p->v.v[p->v.n - 1].e.remove = true;
    }
    if (rdirs->n > 1)
        qsort(rdirs->v, rdirs->n, sizeof(*rdirs->v), cmp_dir_deepest);
    for (size_t i = 0; i < rdirs->n; i++) {
        /* a directory that a local file replaces goes with its content:
         * removing its path too would name the path twice (a conflict) */
        if (cellar__sv_has(p->ldirs, rdirs->v[i]) || item_has(p, nfiles, rdirs->v[i]))
            continue;
        int err = cellar__item_add(p->c, &p->v, rdirs->v[i], NULL);
        if (err < 0)
            return err;
        p->v.v[p->v.n - 1].e.remove = true;
        p->v.v[p->v.n - 1].e.is_dir = true;
    }
    cellar__sv_sort(rdirs);
    return 0;
}

static void count_actions(push_t *p)
{
    cellar_push_report_t *r = p->rep;
    r->nnew = r->nchanged = r->nunchanged = r->ndeleted = r->nabsent = 0;
    for (size_t i = 0; i < p->v.n; i++) {
        switch (p->v.v[i].e.action) {
        case CELLAR_PUSH_NEW: r->nnew++; break;
        case CELLAR_PUSH_CHANGED: r->nchanged++; break;
        case CELLAR_PUSH_UNCHANGED: r->nunchanged++; break;
        case CELLAR_PUSH_DELETED: r->ndeleted++; break;
        case CELLAR_PUSH_ABSENT: r->nabsent++; break;
        }
    }
}

static int manifest_digest(cellar_t *c, cellar_push_report_t *r)
{
    cellar_mentry_t *man = NULL;
    size_t n = 0;
    int err = cellar_manifest_list(c, "/usr", &man, &n);
    if (err == 0) {
        err = cellar_manifest_digest(man, n, r->digest);
        if (err < 0)
            cellar__fail(c, err, "out of memory");
        r->have_digest = err == 0;
    }
    free(man);
    return err;
}

/* Dry run: the actions from the device's manifest and tree. */
static int dry_run(push_t *p, const cellar__strvec_t *rfiles)
{
    cellar_mentry_t *man = NULL;
    size_t nman = 0;
    int err = cellar_manifest_list(p->c, "/usr", &man, &nman);
    if (err < 0)
        return err;
    for (size_t i = 0; i < p->v.n; i++) {
        cellar_push_entry_t *e = &p->v.v[i].e;
        if (e->remove) {
            e->action = CELLAR_PUSH_DELETED; /* it is in the tree: we listed it */
            continue;
        }
        if (!cellar__sv_has(rfiles, e->path)) {
            e->action = CELLAR_PUSH_NEW;
        } else {
            int k = cellar__mentry_find(man, nman, e->path);
            /* as the device decides: an entry without a size (imported)
             * never counts as unchanged */
            bool same = k >= 0 && !memcmp(man[k].sha256, e->sha256, CELLAR_SHA256_SIZE) &&
                        man[k].size >= 0 && (uint64_t)man[k].size == e->size;
            e->action = same ? CELLAR_PUSH_UNCHANGED : CELLAR_PUSH_CHANGED;
        }
        if (e->action != CELLAR_PUSH_UNCHANGED)
            p->rep->to_send += e->size;
    }
    err = cellar_manifest_digest(man, nman, p->rep->digest);
    if (err < 0)
        cellar__fail(p->c, err, "out of memory");
    p->rep->have_digest = err == 0;
    free(man);
    return err;
}

static void set_bundle(pb_size_t *size, uint8_t *bytes, const uint8_t id[32])
{
    *size = CELLAR_SHA256_SIZE;
    memcpy(bytes, id, CELLAR_SHA256_SIZE);
}

/* UpdateBegin and every UpdateDeclare page in one batch (issue 11): the
 * declaration does not depend on Begin's answer, and the device answers in
 * order, so Begin's failure is the first error. Request 0 is Begin, request
 * k >= 1 the page of entries from (k - 1) * CELLAR_DECLARE_PAGE. */
static int bd_fill(void *ctx, size_t i)
{
    push_t *p = ctx;
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    if (i == 0) {
        cellar_Request *req = cellar__new_req(c, cellar_Request_update_begin_tag);
        if (!req)
            return CELLAR_ERR_NOTCONN;
        set_bundle(&req->body.update_begin.bundle.size, req->body.update_begin.bundle.bytes,
                   r->bundle);
        req->body.update_begin.entries = (uint32_t)p->v.n;
        req->body.update_begin.bytes = r->bundle_bytes;
        return 0;
    }
    size_t first = p->page_first[i - 1], k = p->page_first[i] - first;
    cellar_Request *req = cellar__new_req(c, cellar_Request_update_declare_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    cellar_UpdateDeclareRequest *d = &req->body.update_declare;
    set_bundle(&d->bundle.size, d->bundle.bytes, r->bundle);
    d->first = (uint32_t)first;
    for (size_t j = 0; j < k; j++) {
        const cellar_push_entry_t *e = &p->v.v[first + j].e;
        cellar_BundleEntry *be = &d->entries[j];
        snprintf(be->path, sizeof(be->path), "%s", e->path);
        be->remove = e->remove;
        if (!e->remove) {
            be->size = e->size;
            be->sha256.size = CELLAR_SHA256_SIZE;
            memcpy(be->sha256.bytes, e->sha256, CELLAR_SHA256_SIZE);
        }
    }
    d->entries_count = (pb_size_t)k;
    return 0;
}

static int bd_done(void *ctx, size_t i, int err)
{
    push_t *p = ctx;
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    if (i == 0) {
        if (err == 0)
            err = cellar__check(c, cellar_Response_update_begin_tag);
        if (err < 0)
            return err;
        const cellar_UpdateBeginReply *b = &cellar__resp(c)->body.update_begin;
        r->resumed = b->resumed;
        r->staged = b->staged;
        return 0;
    }
    size_t first = p->page_first[i - 1], k = p->page_first[i] - first;
    if (err == 0)
        err = cellar__check(c, cellar_Response_update_declare_tag);
    if (err < 0)
        return k == 1 ? cellar__at_path(c, err, p->v.v[first].e.path) : err;
    const cellar_UpdateDeclareReply *dr = &cellar__resp(c)->body.update_declare;
    if (dr->status_count != k || (dr->have_count != k && dr->have_count != 0))
        return cellar__fail(c, CELLAR_ERR_PROTO,
                            "declare reply has %u statuses for %zu entries",
                            (unsigned)dr->status_count, k);
    for (size_t j = 0; j < k; j++) {
        cellar_push_entry_t *e = &p->v.v[first + j].e;
        uint64_t have = dr->have_count ? dr->have[j] : 0;
        cellar_EntryStatus s = dr->status[j];
        bool ok = true;
        switch (s) {
        case cellar_EntryStatus_SEND_NEW:
        case cellar_EntryStatus_SEND_CHANGED:
            ok = !e->remove && have <= e->size;
            e->action = s == cellar_EntryStatus_SEND_NEW ? CELLAR_PUSH_NEW
                                                         : CELLAR_PUSH_CHANGED;
            e->have = have;
            r->to_send += e->size - (have <= e->size ? have : e->size);
            break;
        case cellar_EntryStatus_UNCHANGED:
            ok = !e->remove;
            e->action = CELLAR_PUSH_UNCHANGED;
            break;
        case cellar_EntryStatus_REMOVE:
            ok = e->remove;
            e->action = CELLAR_PUSH_DELETED;
            break;
        case cellar_EntryStatus_ABSENT:
            ok = e->remove;
            e->action = CELLAR_PUSH_ABSENT;
            break;
        default:
            ok = false;
        }
        if (!ok)
            return cellar__at_path(c, cellar__fail(c, CELLAR_ERR_PROTO,
                                           "%s: bad declare status %d (have %llu)",
                                           e->path, (int)s,
                                           (unsigned long long)have),
                           e->path);
    }
    return 0;
}

/* Declare pages: at most CELLAR_DECLARE_PAGE entries, and no more bytes
 * than the device's max_frame takes (a device with small frames gets
 * short pages; each entry is about its path + 45 bytes encoded). */
static int declare_pages(push_t *p)
{
    cellar_t *c = p->c;
    /* HelloReply's max_frame when its answer is here; a pipelined Hello
     * still on its way is not waited for (that would cost the round the
     * batch saves): pages are then sized for the smallest frame
     * (CELLAR__MIN_FRAME) */
    if (c->hello_pending && cellar__reply_ready(c) < 0)
        return CELLAR_ERR_NOTCONN;
    uint32_t frame = c->hello_pending ? CELLAR__MIN_FRAME : c->info.max_frame;
    /* and entries: HelloReply's max_items (issue 14), the smallest
     * device's while its answer is on the way */
    size_t items = c->hello_pending ? CELLAR__MIN_ITEMS : cellar__items(c, CELLAR_DECLARE_PAGE);
    size_t room = frame > 160 ? frame - 96 : 64;
    p->page_first = malloc((p->v.n + 2) * sizeof(*p->page_first));
    if (!p->page_first)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    p->npages = 0;
    size_t i = 0;
    while (i < p->v.n) {
        p->page_first[p->npages++] = i;
        size_t used = 0, k = 0;
        while (i < p->v.n && k < items) {
            size_t e = strlen(p->v.v[i].e.path) + 48;
            if (k > 0 && frame && used + e > room)
                break;
            used += e;
            k++;
            i++;
        }
    }
    p->page_first[p->npages] = p->v.n;
    return 0;
}

static int begin_declare(push_t *p)
{
    int err = declare_pages(p);
    if (err < 0)
        return err;
    err = cellar__batch_run(p->c, 1 + p->npages, bd_fill, bd_done, p, true);
    free(p->page_first);
    p->page_first = NULL;
    return err;
}

/* The next entry at or after i whose data must be sent. */
static size_t next_send(const push_t *p, size_t i)
{
    for (; i < p->v.n; i++) {
        const cellar_push_entry_t *e = &p->v.v[i].e;
        if ((e->action == CELLAR_PUSH_NEW || e->action == CELLAR_PUSH_CHANGED) &&
            e->have < e->size)
            return i;
    }
    return p->v.n;
}

/* The local file of entry cur, opened to send from e->have: the bytes
 * before it (staged already) are hashed first. */
static int open_send(push_t *p, size_t cur, int *fd, csha_t *sha)
{
    cellar_t *c = p->c;
    cellar__item_t *it = &p->v.v[cur];
    *fd = open(it->local, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return cellar__local_fail(c, -errno, it->local, NULL);
    struct stat st;
    if (fstat(*fd, &st) < 0)
        return cellar__local_fail(c, -errno, it->local, NULL);
    if ((uint64_t)st.st_size != it->e.size)
        goto changed;
    if (csha_start(sha) < 0)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    if (it->e.have) {
        uint8_t *buf = malloc(64 * 1024);
        if (!buf)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        uint64_t pos = 0;
        while (pos < it->e.have) {
            size_t want = it->e.have - pos < 64 * 1024 ? (size_t)(it->e.have - pos)
                                                       : 64 * 1024;
            ssize_t r = pread(*fd, buf, want, (off_t)pos);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                free(buf);
                if (r == 0)
                    goto changed;
                return cellar__local_fail(c, -errno, it->local, "read");
            }
            (void)csha_update(sha, buf, (size_t)r);
            pos += (uint64_t)r;
        }
        free(buf);
    }
    if (p->o->progress) {
        p->o->progress(p->o->progress_ctx, it->e.path, 0, it->e.size);
        if (it->e.have)
            p->o->progress(p->o->progress_ctx, it->e.path, it->e.have, it->e.size);
    }
    return 0;
changed:
    cellar__fail(c, CELLAR_ERR_BADMSG, "%s: changed while pushing; push again",
                 it->local);
    snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
    return CELLAR_ERR_BADMSG;
}

typedef struct flight {
    uint32_t id;
    uint32_t idx;
    uint32_t len;
    bool done;
} flight_t;

/* The first error of a pipeline, with its message (later failures, such
 * as the replies drained after it, must not overwrite it). */
typedef struct first {
    int err;
    char msg[sizeof(((cellar_t *)0)->errmsg)];
    char path[sizeof(((cellar_t *)0)->errpath)];
} first_t;

static void first_set(cellar_t *c, first_t *f, int err)
{
    if (f->err == 0 && err < 0) {
        f->err = err;
        memcpy(f->msg, c->errmsg, sizeof(f->msg));
        memcpy(f->path, c->errpath, sizeof(f->path));
    }
}

static int first_restore(cellar_t *c, const first_t *f)
{
    if (f->err < 0) {
        memcpy(c->errmsg, f->msg, sizeof(f->msg));
        memcpy(c->errpath, f->path, sizeof(f->path));
    }
    return f->err;
}

static int commit_req(push_t *p);
static int commit_reply(push_t *p, int err);

/* Read len bytes of the local file of `it` at pos into data. */
static int read_chunk(cellar_t *c, const cellar__item_t *it, int fd, uint64_t pos,
                      uint8_t *data, uint32_t len)
{
    uint32_t done = 0;
    while (done < len) {
        ssize_t rd = pread(fd, data + done, len - done, (off_t)(pos + done));
        if (rd < 0 && errno == EINTR)
            continue;
        if (rd < 0)
            return cellar__local_fail(c, -errno, it->local, "read");
        if (rd == 0) {
            cellar__fail(c, CELLAR_ERR_BADMSG, "%s: changed while pushing; push again",
                         it->local);
            snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
            return CELLAR_ERR_BADMSG;
        }
        done += (uint32_t)rd;
    }
    return 0;
}

/* Send the missing bytes of every file, pipelined: up to `window`
 * UpdateWrite requests in flight, file after file, each file re-hashed
 * locally as it goes. */
static int send_data(push_t *p)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    cellar_xfer_t x = {.chunk = p->o->chunk, .inflight = p->o->inflight};
    uint32_t chunk = cellar__chunk(c, &x), window = cellar__window(c, &x);
    flight_t ring[CELLAR_MAX_INFLIGHT];
    uint32_t head = 0, count = 0;
    size_t cur = next_send(p, 0);
    uint64_t pos = 0;
    int fd = -1;
    first_t first = {.err = 0};
    csha_t sha;
    csha_init(&sha);
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");

    bool commit_sent = false;
    uint32_t saved_timeout = c->cfg.timeout_ms;
    for (;;) {
        /* 1. fill the window */
        while (first.err == 0 && count < window && cur < p->v.n) {
            cellar__item_t *it = &p->v.v[cur];
            if (fd < 0) {
                first_set(c, &first, open_send(p, cur, &fd, &sha));
                pos = it->e.have;
                if (first.err < 0)
                    break;
            }
            if (pos == it->e.size) {
                uint8_t got[CELLAR_SHA256_SIZE];
                (void)csha_finish(&sha, got);
                close(fd);
                fd = -1;
                if (memcmp(got, it->e.sha256, sizeof(got))) {
                    cellar__fail(c, CELLAR_ERR_BADMSG,
                                 "%s: changed while pushing; push again", it->local);
                    snprintf(c->errpath, sizeof(c->errpath), "%s", it->local);
                    first_set(c, &first, CELLAR_ERR_BADMSG);
                    break;
                }
                cur = next_send(p, cur + 1);
                continue;
            }
            uint64_t left = it->e.size - pos;
            uint32_t n = left < chunk ? (uint32_t)left : chunk;
            /* Only the fields encoded: no need to clear the 16 KiB struct. */
            cellar_Request *req = cellar__req(c);
            req->which_body = cellar_Request_update_write_tag;
            req->body.update_write.index = (uint32_t)cur;
            req->body.update_write.offset = pos;
            req->body.update_write.data.size = (pb_size_t)n;
            uint8_t *data = req->body.update_write.data.bytes;
            first_set(c, &first, read_chunk(c, it, fd, pos, data, n));
            if (first.err < 0)
                break;
            (void)csha_update(&sha, data, n);
            int64_t id = cellar__send(c);
            if (id < 0) {
                first_set(c, &first, (int)id);
                break;
            }
            flight_t *f = &ring[(head + count++) % CELLAR_MAX_INFLIGHT];
            f->id = (uint32_t)id;
            f->idx = (uint32_t)cur;
            f->len = n;
            f->done = false;
            pos += n;
        }
        /* issue 11: UpdateCommit right after the last UpdateWrite, in the
         * same stream (a failed write makes the commit fail: nothing is
         * published); its answer is the last one */
        uint32_t extra = p->no_digest ? 0 : CELLAR_LIST_AHEAD;
        if (first.err == 0 && cur >= p->v.n && fd < 0 && !commit_sent && count < window &&
            count + 1 + extra <= CELLAR_MAX_INFLIGHT) {
            int64_t id = commit_req(p) < 0 ? CELLAR_ERR_NOTCONN : cellar__send(c);
            if (id < 0) {
                first_set(c, &first, (int)id);
                break;
            }
            flight_t *f = &ring[(head + count++) % CELLAR_MAX_INFLIGHT];
            f->id = (uint32_t)id;
            f->idx = UINT32_MAX;
            f->len = 0;
            f->done = false;
            commit_sent = true;
            if (c->cfg.timeout_ms < CELLAR_SLOW_TIMEOUT_MS)
                c->cfg.timeout_ms = CELLAR_SLOW_TIMEOUT_MS;
            /* and the first pages of the manifest, for the digest: the
             * device answers them after the commit */
            p->ml = (cellar__mlist_t){.c = c, .part = "/usr", .stride = CELLAR_MANIFEST_PAGE};
            for (uint32_t k = 0; k < extra; k++) {
                id = cellar__ml_fill(&p->ml, k) < 0 ? CELLAR_ERR_NOTCONN : cellar__send(c);
                if (id < 0) {
                    first_set(c, &first, (int)id);
                    break;
                }
                f = &ring[(head + count++) % CELLAR_MAX_INFLIGHT];
                f->id = (uint32_t)id;
                f->idx = UINT32_MAX - 1 - k;
                f->len = 0;
                f->done = false;
            }
            p->ml_sent = first.err == 0 && extra > 0;
        }
        if (count == 0 || !cellar_connected(c))
            break;

        /* 2. one reply (after a failure: drained, not interpreted) */
        int err = cellar__recv(c);
        if (err < 0) {
            first_set(c, &first, err);
            break;
        }
        cellar_Response *resp = cellar__resp(c);
        flight_t *f = NULL;
        for (uint32_t i = 0; i < count && !f; i++) {
            flight_t *g = &ring[(head + i) % CELLAR_MAX_INFLIGHT];
            if (!g->done && g->id == resp->id)
                f = g;
        }
        if (!f) {
            c->broken = true;
            err = resp->id == 0 && resp->has_error ? cellar__check(c, 0) : 0;
            if (err == 0)
                err = cellar__fail(c, CELLAR_ERR_PROTO, "reply id %u matches no request",
                                   (unsigned)resp->id);
            first_set(c, &first, err);
            break;
        }
        f->done = true;
        if (f->idx >= UINT32_MAX - CELLAR_LIST_AHEAD && f->idx < UINT32_MAX) {
            /* a manifest page: only after a good commit */
            if (first.err == 0) {
                int merr = cellar__ml_done(&p->ml, UINT32_MAX - 1 - f->idx,
                                           resp->has_error ? cellar__check(c, 0) : 0);
                first_set(c, &first, merr);
            }
        } else if (f->idx == UINT32_MAX) {
            int cerr = commit_reply(p, resp->has_error ? cellar__check(c, 0) : 0);
            if (first.err == 0)
                first_set(c, &first, cerr);
        } else if (first.err == 0) {
            cellar_push_entry_t *e = &p->v.v[f->idx].e;
            err = cellar__check(c, cellar_Response_write_tag);
            if (err == 0 && resp->body.write.written != f->len)
                err = cellar__fail(c, CELLAR_ERR_IO, "%s: short write (%u of %u bytes)",
                                   e->path, (unsigned)resp->body.write.written,
                                   (unsigned)f->len);
            if (err < 0) {
                first_set(c, &first, cellar__at_path(c, err, e->path));
            } else {
                e->sent += f->len;
                r->bytes_sent += f->len;
                if (p->o->progress)
                    p->o->progress(p->o->progress_ctx, e->path, e->have + e->sent,
                                   e->size);
            }
        } else if (!resp->has_error && resp->which_body == cellar_Response_write_tag &&
                   resp->body.write.written == f->len) {
            p->v.v[f->idx].e.sent += f->len; /* staged all the same */
            r->bytes_sent += f->len;
        }
        while (count > 0 && ring[head].done) {
            head = (head + 1) % CELLAR_MAX_INFLIGHT;
            count--;
        }
    }
    if (fd >= 0)
        close(fd);
    csha_free(&sha);
    c->cfg.timeout_ms = saved_timeout;
    if (first.err == 0 && !commit_sent)
        first_set(c, &first, cellar__fail(c, CELLAR_ERR_PROTO, "commit not sent"));
    return first_restore(c, &first);
}

/* Build the UpdateCommit request. */
static int commit_req(push_t *p)
{
    cellar_Request *req = cellar__new_req(p->c, cellar_Request_update_commit_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    set_bundle(&req->body.update_commit.bundle.size, req->body.update_commit.bundle.bytes,
               p->rep->bundle);
    return 0;
}

/* Its answer, in the response struct (err: cellar__check's result). */
static int commit_reply(push_t *p, int err)
{
    cellar_t *c = p->c;
    cellar_push_report_t *r = p->rep;
    if (err == 0)
        err = cellar__check(c, cellar_Response_update_commit_tag);
    if (err < 0) {
        /* The device names the path in its message: the longest entry path
         * found in it is the one (for errpath). */
        const char *msg = cellar_errmsg(c);
        size_t best = 0;
        for (size_t i = 0; i < p->v.n; i++) {
            size_t len = strlen(p->v.v[i].e.path);
            if (len > best && strstr(msg, p->v.v[i].e.path)) {
                snprintf(c->errpath, sizeof(c->errpath), ":%s", p->v.v[i].e.path);
                best = len;
            }
        }
        return err;
    }
    const cellar_UpdateCommitReply *cr = &cellar__resp(c)->body.update_commit;
    r->committed = true;
    r->commit_written = cr->written;
    r->commit_removed = cr->removed;
    r->commit_unchanged = cr->unchanged;
    r->commit_bytes = cr->bytes;
    return 0;
}

/* Copy the items into the report (the entries survive a failure too). */
static int publish(push_t *p)
{
    cellar_push_report_t *r = p->rep;
    free(r->entries);
    r->entries = NULL;
    r->nentries = 0;
    if (p->v.n == 0)
        return 0;
    r->entries = malloc(p->v.n * sizeof(*r->entries));
    if (!r->entries)
        return cellar__fail(p->c, CELLAR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->v.n; i++)
        r->entries[i] = p->v.v[i].e;
    r->nentries = p->v.n;
    return 0;
}

/* Steps 2-5 of a push (see cellar_push in cellar.h) of the bundle b, whose
 * entries p holds already. */
static int push_run(push_t *p, const cellar_bundle_t *b)
{
    cellar_t *c = p->c;
    cellar_push_report_t *rep = p->rep;
    cellar__strvec_t rfiles = {0}, rdirs = {0};
    size_t nfiles = p->v.n;
    int err = 0;

    /* 2. removals; the device tree also tells a dry run what is new */
    if (p->o->delete_extra || p->o->dry_run) {
        err = remote_tree(c, b->rdir, &rfiles, &rdirs);
        if (err == 0 && p->o->delete_extra)
            err = add_removals(p, nfiles, &rfiles, &rdirs);
        if (err < 0)
            goto out;
    }

    /* 3. the bundle id */
    cellar__bundle_id(p->v.v, p->v.n, rep->bundle);

    if (p->o->dry_run) {
        err = dry_run(p, &rfiles);
        count_actions(p);
        goto out;
    }

    /* 4. the transaction */
    if (p->v.n > 0) {
        err = begin_declare(p);
        if (err == 0)
            err = send_data(p); /* and UpdateCommit, in the same stream */
        count_actions(p);
        if (err < 0)
            goto out;
    }

    /* 5. the manifest digest (its first pages came with the commit) */
    if (p->ml_sent) {
        err = cellar__ml_finish(&p->ml);
        if (err == 0) {
            err = cellar_manifest_digest(p->ml.v, p->ml.len, rep->digest);
            if (err < 0)
                cellar__fail(c, err, "out of memory");
            rep->have_digest = err == 0;
        }
    } else if (!p->no_digest) {
        err = manifest_digest(c, rep);
    }
out:
    free(p->ml.v);
    p->ml.v = NULL;
    cellar__sv_free(&rfiles);
    cellar__sv_free(&rdirs);
    return err;
}

/* Push b and fill rep; after a failed build (err < 0) nothing is sent and
 * the report shows what was built. */
static int push_bundle(cellar_t *c, const cellar_bundle_t *b, const cellar_push_opts_t *o,
                       cellar_push_report_t *rep, int err, bool digest)
{
    push_t p = {.c = c, .o = o, .rep = rep, .ldirs = &b->dirs, .no_digest = !digest};
    rep->nskipped_local = b->nskipped;
    rep->bundle_bytes = b->bytes;
    size_t n = b->items.n;
    if (n > 0) {
        /* the entries are copied (each push writes its actions into them);
         * the local paths are borrowed from the bundle */
        p.v.v = malloc(n * sizeof(*p.v.v));
        if (!p.v.v) {
            if (err == 0)
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        } else {
            memcpy(p.v.v, b->items.v, n * sizeof(*p.v.v));
            p.v.n = p.v.cap = n;
        }
    }
    if (err == 0)
        err = push_run(&p, b);
    int perr = publish(&p);
    if (err == 0)
        err = perr;
    free(p.v.v);
    return err;
}

int cellar_bundle_push(cellar_t *c, const cellar_bundle_t *b, const cellar_push_opts_t *opts,
                       cellar_push_report_t *rep)
{
    static const cellar_push_opts_t defaults;
    memset(rep, 0, sizeof(*rep));
    if (!b)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no bundle given");
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    return push_bundle(c, b, opts ? opts : &defaults, rep, 0, true);
}

int cellar_push(cellar_t *c, const char *localdir, const char *remotedir,
                const cellar_push_opts_t *opts, cellar_push_report_t *rep)
{
    static const cellar_push_opts_t defaults;
    const cellar_push_opts_t *o = opts ? opts : &defaults;
    memset(rep, 0, sizeof(*rep));
    cellar_bundle_t b;
    memset(&b, 0, sizeof(b));
    /* 1. the arguments, the connection, then the bundle: build + push */
    int err = cellar__bundle_check(c, localdir, remotedir, b.rdir);
    if (err < 0)
        return err;
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    err = cellar__bundle_walk(c, &b, localdir, o->warn, o->warn_ctx);
    err = push_bundle(c, &b, o, rep, err, true);
    cellar__bundle_clear(&b);
    return err;
}

/* issue 11: a tree copy's changed files as one bundle, without the
 * manifest digest (cellar_put_tree, libcellar_tree.c). */
int cellar__bundle_send(cellar_t *c, const cellar_bundle_t *b, const cellar_push_opts_t *o,
                        cellar_push_report_t *rep)
{
    memset(rep, 0, sizeof(*rep));
    return push_bundle(c, b, o, rep, 0, false);
}

/* ---- abort ------------------------------------------------------------------------- */
int cellar_update_abort(cellar_t *c, const uint8_t bundle[CELLAR_SHA256_SIZE])
{
    cellar_Request *req = cellar__new_req(c, cellar_Request_update_abort_tag);
    if (!req)
        return CELLAR_ERR_NOTCONN;
    if (bundle) {
        req->body.update_abort.bundle.size = CELLAR_SHA256_SIZE;
        memcpy(req->body.update_abort.bundle.bytes, bundle, CELLAR_SHA256_SIZE);
    }
    return cellar__rpc(c, cellar_Response_done_tag);
}
