/*
 * libcellar_tree.c - copies of whole trees (issue 11, docs/PIPELINING.md):
 * the decisions for every file of an upload from one batch (Mkdir and Stat
 * of every directory, device Hash of every file), then the changed files
 * as one update bundle, pipelined across files; downloads file after file.
 * Above the operations (libcellar_push.c, libcellar_xfer.c) and the
 * batches (libcellar_batch.c); see docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(const cellar_xfer_t *x, const char *src, const char *dst,
                   bool is_dir, int result)
{
    if (x && x->on_file)
        x->on_file(x->on_file_ctx, src, dst, is_dir, result);
}

static int not_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") && strcmp(d->d_name, "..") &&
           !cellar__is_tmp_name(d->d_name);
}

/* ---- upload ------------------------------------------------------------------------ */
typedef struct up_dir {
    char *local, *remote;
    int err;
} up_dir_t;

typedef struct up_file {
    char *local, *remote;
    size_t dir;            /* index of its directory */
    uint64_t size;
    uint8_t sha[CELLAR_SHA256_SIZE];
    int lerr;              /* local hash error */
    int herr;              /* device Hash: 0, or its error */
    uint64_t hashed;
    uint8_t rsha[CELLAR_SHA256_SIZE];
} up_file_t;

typedef struct up {
    cellar_t *c;
    const cellar_xfer_t *x;
    up_dir_t *d;
    size_t nd, capd;
    up_file_t *f;
    size_t nf, capf;
    bool hash;             /* skip_unchanged: ask the device's hashes */
    int first;
} up_t;

static int up_add_dir(up_t *u, char *local, char *remote)
{
    if (u->nd == u->capd) {
        size_t nc = u->capd ? 2 * u->capd : 16;
        up_dir_t *nv = realloc(u->d, nc * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        u->d = nv;
        u->capd = nc;
    }
    u->d[u->nd++] = (up_dir_t){.local = local, .remote = remote};
    return 0;
}

static int up_add_file(up_t *u, char *local, char *remote, size_t dir, uint64_t size)
{
    if (u->nf >= CELLAR_PUSH_MAX_FILES)
        return CELLAR_ERR_NOMEM;
    if (u->nf == u->capf) {
        size_t nc = u->capf ? 2 * u->capf : 64;
        up_file_t *nv = realloc(u->f, nc * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        u->f = nv;
        u->capf = nc;
    }
    up_file_t *f = &u->f[u->nf++];
    memset(f, 0, sizeof(*f));
    f->local = local;
    f->remote = remote;
    f->dir = dir;
    f->size = size;
    return 0;
}

static void up_keep(up_t *u, int err)
{
    if (err < 0 && u->first == 0)
        u->first = err;
}

/* The local tree under d[di]: directories and regular files, in name order. */
static int up_collect(up_t *u, size_t di, unsigned depth)
{
    cellar_t *c = u->c;
    if (depth > CELLAR__MAX_DEPTH)
        return cellar__local_fail(c, -ELOOP, u->d[di].local, "too many levels");
    struct dirent **names = NULL;
    int n = scandir(u->d[di].local, &names, not_dots, alphasort);
    if (n < 0)
        return cellar__local_fail(c, -errno, u->d[di].local, NULL);
    int err = 0;
    for (int i = 0; i < n; i++) {
        if (err == 0) {
            char *lp = cellar__join(u->d[di].local, names[i]->d_name);
            char *rp = cellar__join(u->d[di].remote, names[i]->d_name);
            struct stat st;
            if (!lp || !rp) {
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            } else if (stat(lp, &st) < 0) {
                int e = cellar__local_fail(c, -errno, lp, NULL);
                report(u->x, lp, rp, false, e);
                up_keep(u, e);
            } else if (S_ISDIR(st.st_mode)) {
                if (up_add_dir(u, lp, rp) < 0)
                    err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
                else {
                    lp = rp = NULL;
                    err = up_collect(u, u->nd - 1, depth + 1);
                }
            } else if (S_ISREG(st.st_mode)) {
                if (up_add_file(u, lp, rp, di, (uint64_t)st.st_size) < 0)
                    err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory (or over %d files)",
                                       CELLAR_PUSH_MAX_FILES);
                else
                    lp = rp = NULL;
            }
            free(lp);
            free(rp);
        }
        free(names[i]);
    }
    free(names);
    return err;
}

/* Batch 1: Mkdir -p and Stat of every directory, then Hash of every file
 * (only with skip_unchanged). Request i: i < 2 * nd a directory (even:
 * Mkdir, odd: Stat), else file i - 2 * nd. */
static int up_fill(void *ctx, size_t i)
{
    up_t *u = ctx;
    int err;
    if (i < 2 * u->nd) {
        const char *p = u->d[i / 2].remote;
        cellar_Request *req = cellar__path_req(u->c, i % 2 ? cellar_Request_stat_tag
                                                           : cellar_Request_mkdir_tag,
                                               p, &err);
        if (!req)
            return err;
        if (i % 2 == 0)
            req->body.mkdir.parents = true;
        return 0;
    }
    return cellar__hash_req(u->c, u->f[i - 2 * u->nd].remote, 0, 0);
}

static int up_done(void *ctx, size_t i, int err)
{
    up_t *u = ctx;
    cellar_t *c = u->c;
    if (i < 2 * u->nd) {
        up_dir_t *d = &u->d[i / 2];
        if (d->err < 0)
            return 0;
        if (i % 2 == 0) {
            if (err < 0 && err != CELLAR_ERR_EXIST)
                d->err = cellar__at_path(c, err, d->remote);
        } else if (err < 0) {
            d->err = cellar__at_path(c, err, d->remote);
        } else if (cellar__resp(c)->body.stat.info.type != cellar_FileType_DIR) {
            cellar__fail(c, CELLAR_ERR_NOTDIR, "%s: not a directory", d->remote);
            d->err = cellar__at_path(c, CELLAR_ERR_NOTDIR, d->remote);
        }
        return 0;
    }
    up_file_t *f = &u->f[i - 2 * u->nd];
    if (err == 0)
        err = cellar__check(c, cellar_Response_hash_tag);
    f->herr = err;
    if (err == 0) {
        memcpy(f->rsha, cellar__resp(c)->body.hash.sha256, CELLAR_SHA256_SIZE);
        f->hashed = cellar__resp(c)->body.hash.length;
    }
    return 0;
}

static int by_remote(const void *a, const void *b)
{
    return strcmp(((const cellar__item_t *)a)->e.path, ((const cellar__item_t *)b)->e.path);
}

/* Send the files marked in send[] as one bundle; report each. Returns 0,
 * CELLAR_ERR_BUSY (another update runs: nothing was sent) or an error. */
static int up_bundle(up_t *u, const bool *send, size_t nsend)
{
    cellar_t *c = u->c;
    const cellar_xfer_t *x = u->x;
    cellar_bundle_t b;
    memset(&b, 0, sizeof(b));
    snprintf(b.rdir, sizeof(b.rdir), "/usr");
    int err = 0;
    for (size_t i = 0; i < u->nf && err == 0; i++) {
        if (!send[i])
            continue;
        err = cellar__item_add(c, &b.items, u->f[i].remote, u->f[i].local);
        if (err == 0) {
            cellar_push_entry_t *e = &b.items.v[b.items.n - 1].e;
            e->size = u->f[i].size;
            memcpy(e->sha256, u->f[i].sha, CELLAR_SHA256_SIZE);
            b.bytes += e->size;
        }
    }
    if (err == 0 && b.items.n != nsend)
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    if (err == 0) {
        qsort(b.items.v, b.items.n, sizeof(*b.items.v), by_remote);
        cellar_push_opts_t o = {
            .chunk = x ? x->chunk : 0, .inflight = x ? x->inflight : 0,
            .progress = x ? x->progress : NULL, .progress_ctx = x ? x->progress_ctx : NULL,
        };
        cellar_push_report_t rep;
        err = cellar__bundle_send(c, &b, &o, &rep);
        cellar_push_report_free(&rep);
    }
    free(b.items.v); /* the local paths are ours */
    if (err == CELLAR_ERR_BUSY)
        return err;
    for (size_t i = 0; i < u->nf; i++)
        if (send[i])
            report(x, u->f[i].local, u->f[i].remote, false, err);
    return err;
}

int cellar_put_tree(cellar_t *c, const char *ldir, const char *rdir,
                    const cellar_xfer_t *x)
{
    struct stat st;
    int lerr = stat(ldir, &st) < 0 ? -errno : !S_ISDIR(st.st_mode) ? -ENOTDIR : 0;
    if (lerr < 0) {
        lerr = cellar__local_fail(c, lerr, ldir, NULL);
        report(x, ldir, rdir, true, lerr);
        return lerr;
    }
    if (!cellar_connected(c))
        return cellar__fail(c, CELLAR_ERR_NOTCONN, "not connected");
    up_t u = {.c = c, .x = x, .hash = x && x->skip_unchanged};
    char *l0 = strdup(ldir), *r0 = strdup(rdir);
    int err = (!l0 || !r0 || up_add_dir(&u, l0, r0) < 0) ? CELLAR_ERR_NOMEM : 0;
    if (err < 0) {
        free(l0);
        free(r0);
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = up_collect(&u, 0, 0);
    if (err < 0)
        goto out;

    /* 1. one batch: the directories, the device's hashes */
    err = cellar__batch_run(c, 2 * u.nd + (u.hash ? u.nf : 0), up_fill, up_done, &u, true);
    if (err < 0)
        goto out;
    for (size_t i = 0; i < u.nd; i++)
        report(x, u.d[i].local, u.d[i].remote, true, u.d[i].err);
    if (u.d[0].err < 0) {
        err = u.d[0].err;
        goto out;
    }
    for (size_t i = 0; i < u.nd; i++)
        up_keep(&u, u.d[i].err);

    /* 2. what to send: the local hashes decide */
    bool *send = calloc(u.nf ? u.nf : 1, sizeof(*send));
    if (!send) {
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    size_t nsend = 0;
    bool all_usr = true;
    for (size_t i = 0; i < u.nf; i++) {
        up_file_t *f = &u.f[i];
        if (u.d[f->dir].err < 0)
            continue; /* its directory failed (reported) */
        int e = cellar_sha256_file(f->local, f->sha);
        if (e < 0) {
            e = cellar__local_fail(c, e, f->local, "read");
            report(x, f->local, f->remote, false, e);
            up_keep(&u, e);
            continue;
        }
        if (u.hash && f->herr == CELLAR_ERR_ISDIR) {
            cellar__fail(c, CELLAR_ERR_ISDIR, "%s: is a directory", f->remote);
            e = cellar__at_path(c, CELLAR_ERR_ISDIR, f->remote);
            report(x, f->local, f->remote, false, e);
            up_keep(&u, e);
            continue;
        }
        if (u.hash && f->herr == 0 && f->hashed == f->size &&
            !memcmp(f->sha, f->rsha, CELLAR_SHA256_SIZE)) {
            report(x, f->local, f->remote, false, CELLAR_SKIPPED);
            continue;
        }
        send[i] = true;
        nsend++;
        all_usr = all_usr && !strncmp(f->remote, "/usr/", 5);
    }

    /* 3. the changed files: one bundle (pipelined across files); file by
     * file when the device runs another update, or outside /usr */
    int berr = nsend == 0 ? 0 : all_usr ? up_bundle(&u, send, nsend) : CELLAR_ERR_BUSY;
    if (berr == CELLAR_ERR_BUSY) {
        for (size_t i = 0; i < u.nf && cellar_connected(c); i++)
            if (send[i])
                up_keep(&u, cellar_put_file(c, u.f[i].local, u.f[i].remote, x));
    } else {
        up_keep(&u, berr);
    }
    free(send);
    err = u.first;
out:
    for (size_t i = 0; i < u.nd; i++) {
        free(u.d[i].local);
        free(u.d[i].remote);
    }
    for (size_t i = 0; i < u.nf; i++) {
        free(u.f[i].local);
        free(u.f[i].remote);
    }
    free(u.d);
    free(u.f);
    return err;
}

/* ---- download ---------------------------------------------------------------------- */
/* The files of a download, pipelined across files (issue 11): up to
 * DL_OPEN files open on the device at once; the Open of the next files
 * travels while the Reads of the current ones stream; after a file's last
 * Read come its Close and a Hash of the whole file, checked against the
 * bytes received before the local temporary is renamed into place. */
#define DL_OPEN 6u
#define DL_RING 256u

enum { DL_QUEUED, DL_OPENING, DL_ACTIVE, DL_CLOSING, DL_DONE };
enum { RQ_OPEN, RQ_READ, RQ_CLOSE, RQ_HASH };

typedef struct dl_file {
    const char *remote, *local;
    char *tmp;
    uint32_t mtime;
    uint64_t size, sent, got;
    uint32_t handle;
    int fd;
    int err;
    uint8_t state;
    csha_t sha;
} dl_file_t;

typedef struct dl_req {
    uint32_t id, file, len;
    uint8_t kind;
    uint64_t off;
} dl_req_t;

typedef struct dl {
    cellar_t *c;
    const cellar_xfer_t *x;
    dl_file_t *f;
    size_t nf;
    dl_req_t ring[DL_RING];
    uint32_t head, count;
    uint64_t inflight_bytes;
    int first;
} dl_t;

static int64_t dl_send(dl_t *d, uint8_t kind, uint32_t fi, uint64_t off, uint32_t len)
{
    cellar_t *c = d->c;
    dl_file_t *f = &d->f[fi];
    int err = 0;
    cellar_Request *req;
    switch (kind) {
    case RQ_OPEN:
        req = cellar__path_req(c, cellar_Request_open_tag, f->remote, &err);
        if (req)
            req->body.open.flags = CELLAR_O_READ;
        break;
    case RQ_READ:
        req = cellar__new_req(c, cellar_Request_read_tag);
        if (req) {
            req->body.read.handle = f->handle;
            req->body.read.offset = off;
            req->body.read.length = len;
        } else {
            err = CELLAR_ERR_NOTCONN;
        }
        break;
    case RQ_CLOSE:
        err = cellar__handle_req(c, cellar_Request_close_tag, f->handle);
        break;
    default:
        err = cellar__hash_req(c, f->remote, 0, 0);
        break;
    }
    int64_t id = err < 0 ? err : cellar__send(c);
    if (id < 0)
        return id;
    dl_req_t *r = &d->ring[(d->head + d->count++) % DL_RING];
    *r = (dl_req_t){.id = (uint32_t)id, .file = fi, .len = len, .kind = kind, .off = off};
    d->inflight_bytes += len;
    return id;
}

static void dl_fail(dl_t *d, dl_file_t *f, int err)
{
    if (f->err == 0) {
        f->err = cellar__at_path(d->c, err, f->remote);
        if (d->first == 0)
            d->first = f->err;
    }
}

/* The answer of the oldest request. */
static int dl_take(dl_t *d)
{
    cellar_t *c = d->c;
    int err = cellar__recv(c);
    if (err < 0)
        return err;
    dl_req_t r = d->ring[d->head];
    cellar_Response *resp = cellar__resp(c);
    if (resp->id != r.id) {
        c->broken = true;
        err = resp->id == 0 && resp->has_error ? cellar__check(c, 0) : 0;
        return err < 0 ? err : cellar__fail(c, CELLAR_ERR_PROTO, "reply id %u, expected %u",
                                            (unsigned)resp->id, (unsigned)r.id);
    }
    d->head = (d->head + 1) % DL_RING;
    d->count--;
    d->inflight_bytes -= r.len;
    dl_file_t *f = &d->f[r.file];
    switch (r.kind) {
    case RQ_OPEN:
        err = cellar__check(c, cellar_Response_open_tag);
        if (err < 0) {
            dl_fail(d, f, err);
            f->state = DL_DONE; /* nothing open on the device */
            report(d->x, f->remote, f->local, false, f->err);
            return 0;
        }
        f->handle = resp->body.open.handle;
        f->size = resp->body.open.size;
        f->state = DL_ACTIVE;
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (f->fd < 0) {
            int e = cellar__local_fail(c, -errno, f->local, "create");
            if (f->err == 0 && d->first == 0)
                d->first = e;
            f->err = f->err ? f->err : e;
            f->size = 0; /* only its Close and Hash are sent */
        }
        return 0;
    case RQ_READ: {
        err = cellar__check(c, cellar_Response_read_tag);
        const cellar_ReadReply *rr = &resp->body.read;
        if (err == 0 && (rr->offset != r.off || rr->data.size > r.len ||
                         (rr->data.size < r.len && !rr->eof)))
            err = cellar__fail(c, CELLAR_ERR_PROTO, "read reply of %u bytes for %u",
                               (unsigned)rr->data.size, (unsigned)r.len);
        if (err < 0) {
            dl_fail(d, f, err);
            return 0;
        }
        if (f->err || f->fd < 0)
            return 0;
        const uint8_t *p = rr->data.bytes;
        size_t n = rr->data.size, done = 0;
        while (done < n) {
            ssize_t w = pwrite(f->fd, p + done, n - done, (off_t)(r.off + done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                int e = cellar__local_fail(c, -errno, f->local, "write");
                f->err = e;
                if (d->first == 0)
                    d->first = e;
                return 0;
            }
            done += (size_t)w;
        }
        (void)csha_update(&f->sha, p, n);
        f->got += n;
        if (d->x && d->x->progress)
            d->x->progress(d->x->progress_ctx, f->remote, f->got, f->size);
        return 0;
    }
    case RQ_CLOSE:
        err = cellar__check(c, cellar_Response_done_tag);
        if (err < 0)
            dl_fail(d, f, err);
        return 0;
    default:
        break;
    }
    /* RQ_HASH: the end of the file */
    err = cellar__check(c, cellar_Response_hash_tag);
    uint8_t lsha[CELLAR_SHA256_SIZE];
    (void)csha_finish(&f->sha, lsha);
    if (err < 0) {
        dl_fail(d, f, err);
    } else if (f->err == 0 && (resp->body.hash.length != f->got || f->got != f->size ||
                               memcmp(lsha, resp->body.hash.sha256, CELLAR_SHA256_SIZE))) {
        cellar__fail(c, CELLAR_ERR_BADMSG,
                     "%s: SHA-256 mismatch after download (%llu of %llu bytes; the file "
                     "changed?)", f->remote, (unsigned long long)f->got,
                     (unsigned long long)f->size);
        dl_fail(d, f, CELLAR_ERR_BADMSG);
    }
    if (f->fd >= 0) {
        if (f->err == 0 && !(d->x && d->x->no_mtime) && f->mtime) {
            struct timespec ts[2] = {{.tv_sec = f->mtime}, {.tv_sec = f->mtime}};
            (void)futimens(f->fd, ts);
        }
        if (close(f->fd) < 0 && f->err == 0) {
            f->err = cellar__local_fail(c, -errno, f->local, "write");
            if (d->first == 0)
                d->first = f->err;
        }
        f->fd = -1;
    }
    if (f->err == 0 && rename(f->tmp, f->local) < 0) {
        f->err = cellar__local_fail(c, -errno, f->local, "rename");
        if (d->first == 0)
            d->first = f->err;
    }
    if (f->err < 0)
        unlink(f->tmp);
    f->state = DL_DONE;
    report(d->x, f->remote, f->local, false, f->err);
    return 0;
}

static int dl_run(dl_t *d)
{
    cellar_t *c = d->c;
    uint32_t chunk = cellar__chunk(c, d->x);
    uint64_t wbytes = cellar__window_bytes(c, chunk);
    uint32_t nopen_max = c->info.max_handles > 1 ? c->info.max_handles - 1 : 1;
    if (nopen_max > DL_OPEN)
        nopen_max = DL_OPEN;
    size_t next = 0, scan = 0;
    uint32_t nopen = 0;
    int err = 0;
    uint32_t saved = c->cfg.timeout_ms;
    if (c->cfg.timeout_ms < CELLAR_SLOW_TIMEOUT_MS)
        c->cfg.timeout_ms = CELLAR_SLOW_TIMEOUT_MS;
    uint64_t t0 = cellar__now_us(), bytes = 0;
    for (;;) {
        while (err == 0 && d->count + 2 <= DL_RING && d->count < CELLAR_BATCH_INFLIGHT &&
               d->inflight_bytes < wbytes) {
            if (nopen < nopen_max && next < d->nf) {
                if (dl_send(d, RQ_OPEN, (uint32_t)next, 0, 0) < 0) {
                    err = -1;
                    break;
                }
                d->f[next++].state = DL_OPENING;
                nopen++;
                continue;
            }
            while (scan < d->nf && d->f[scan].state != DL_ACTIVE &&
                   d->f[scan].state != DL_OPENING && d->f[scan].state != DL_QUEUED)
                scan++;
            size_t a = scan;
            while (a < next && d->f[a].state != DL_ACTIVE)
                a++;
            if (a >= next)
                break; /* waiting for an Open's answer */
            dl_file_t *f = &d->f[a];
            if (f->sent < f->size && f->err == 0) {
                uint64_t left = f->size - f->sent;
                uint32_t n = left < chunk ? (uint32_t)left : chunk;
                if (dl_send(d, RQ_READ, (uint32_t)a, f->sent, n) < 0) {
                    err = -1;
                    break;
                }
                f->sent += n;
                bytes += n;
                continue;
            }
            if (dl_send(d, RQ_CLOSE, (uint32_t)a, 0, 0) < 0 ||
                dl_send(d, RQ_HASH, (uint32_t)a, 0, 0) < 0) {
                err = -1;
                break;
            }
            f->state = DL_CLOSING;
            nopen--;
        }
        if (d->count == 0 || !cellar_connected(c))
            break;
        int e = dl_take(d);
        if (e < 0) {
            err = e;
            break;
        }
    }
    cellar__rate_sample(c, bytes, cellar__now_us() - t0);
    c->cfg.timeout_ms = saved;
    if (!cellar_connected(c) && d->first == 0)
        d->first = CELLAR_ERR_NOTCONN;
    return d->first;
}

int cellar_get_tree(cellar_t *c, const char *rdir, const char *ldir,
                    const cellar_xfer_t *x)
{
    cellar_tree_t t;
    int err = cellar_tree_list(c, rdir, 0, &t);
    if (err == 0 && t.root.type != CELLAR_TYPE_DIR) {
        cellar_tree_free(&t);
        cellar__fail(c, CELLAR_ERR_NOTDIR, "%s: not a directory", rdir);
        err = cellar__at_path(c, CELLAR_ERR_NOTDIR, rdir);
    }
    if (err < 0) {
        report(x, rdir, ldir, true, err);
        return err;
    }
    size_t n = t.n;
    char **lp = calloc(n + 1, sizeof(*lp));
    bool *skip = calloc(n + 1, sizeof(*skip));
    dl_t d = {.c = c, .x = x};
    d.f = calloc(n + 1, sizeof(*d.f));
    const char **hp = calloc(n + 1, sizeof(*hp));
    size_t *hi = calloc(n + 1, sizeof(*hi));
    uint8_t (*hsha)[CELLAR_SHA256_SIZE] = calloc(n + 1, sizeof(*hsha));
    uint64_t *hsz = calloc(n + 1, sizeof(*hsz));
    int *herr = calloc(n + 1, sizeof(*herr));
    int first = 0;
    if (!lp || !skip || !d.f || !hp || !hi || !hsha || !hsz || !herr) {
        first = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* local paths; directories in pre-order (parents first) */
    size_t rl = strlen(rdir);
    if (mkdir(ldir, 0777) < 0) {
        struct stat st;
        if (errno != EEXIST || stat(ldir, &st) < 0 || !S_ISDIR(st.st_mode))
            first = cellar__local_fail(c, errno == EEXIST ? -ENOTDIR : -errno, ldir, NULL);
    }
    report(x, rdir, ldir, true, first);
    if (first < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *rel = t.v[i].path + rl + (rl && rdir[rl - 1] == '/' ? 0 : 1);
        /* never follow a hostile name out of ldir; no temporaries */
        bool hostile = cellar__is_tmp_name(t.v[i].st.name) || strstr(rel, "..");
        lp[i] = hostile ? NULL : cellar__join(ldir, rel);
        if (!lp[i]) {
            skip[i] = true;
            continue;
        }
        if (t.v[i].st.type == CELLAR_TYPE_DIR) {
            int e = 0;
            if (mkdir(lp[i], 0777) < 0) {
                struct stat st;
                if (errno != EEXIST || stat(lp[i], &st) < 0 || !S_ISDIR(st.st_mode))
                    e = cellar__local_fail(c, errno == EEXIST ? -ENOTDIR : -errno, lp[i], NULL);
            }
            report(x, t.v[i].path, lp[i], true, e);
            if (e < 0 && first == 0)
                first = e;
            skip[i] = true;
        }
    }
    /* skip unchanged: the device's hashes of same-size files, one batch */
    size_t nh = 0;
    if (x && x->skip_unchanged) {
        for (size_t i = 0; i < n; i++) {
            struct stat st;
            if (skip[i] || stat(lp[i], &st) < 0 || !S_ISREG(st.st_mode) ||
                (uint64_t)st.st_size != t.v[i].st.size)
                continue;
            hp[nh] = t.v[i].path;
            hi[nh++] = i;
        }
        err = nh ? cellar_hash_many(c, nh, hp, hsha, hsz, herr) : 0;
        if (err < 0 && !cellar_connected(c)) {
            first = first ? first : err;
            goto out;
        }
        for (size_t k = 0; k < nh; k++) {
            uint8_t lsha[CELLAR_SHA256_SIZE];
            size_t i = hi[k];
            if (herr[k] == 0 && hsz[k] == t.v[i].st.size &&
                cellar_sha256_file(lp[i], lsha) == 0 &&
                !memcmp(lsha, hsha[k], CELLAR_SHA256_SIZE)) {
                skip[i] = true;
                report(x, t.v[i].path, lp[i], false, CELLAR_SKIPPED);
            }
        }
    }
    /* the rest, pipelined across files */
    for (size_t i = 0; i < n; i++) {
        if (skip[i])
            continue;
        dl_file_t *f = &d.f[d.nf];
        size_t tl = strlen(lp[i]) + 32;
        f->tmp = malloc(tl);
        if (!f->tmp || cellar__tmp_name(lp[i], f->tmp, tl, tl - 1) < 0) {
            free(f->tmp);
            f->tmp = NULL;
            int e = cellar__local_fail(c, -EINVAL, lp[i], "bad file name");
            report(x, t.v[i].path, lp[i], false, e);
            first = first ? first : e;
            continue;
        }
        f->remote = t.v[i].path;
        f->local = lp[i];
        f->mtime = t.v[i].st.mtime;
        f->fd = -1;
        csha_init(&f->sha);
        (void)csha_start(&f->sha);
        d.nf++;
    }
    err = d.nf ? dl_run(&d) : 0;
    if (err < 0 && first == 0)
        first = err;
    for (size_t i = 0; i < d.nf; i++) {
        dl_file_t *f = &d.f[i];
        if (f->state != DL_DONE) { /* the connection broke */
            if (f->fd >= 0)
                close(f->fd);
            if (f->tmp)
                unlink(f->tmp);
            report(x, f->remote, f->local, false, first ? first : CELLAR_ERR_NOTCONN);
        }
        csha_free(&f->sha);
        free(f->tmp);
    }
out:
    if (lp)
        for (size_t i = 0; i < n; i++)
            free(lp[i]);
    free(lp);
    free(skip);
    free(d.f);
    free(hp);
    free(hi);
    free(hsha);
    free(hsz);
    free(herr);
    cellar_tree_free(&t);
    return first;
}
