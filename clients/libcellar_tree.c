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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
static int by_name(const void *a, const void *b)
{
    return strcmp(((const cellar_stat_t *)a)->name, ((const cellar_stat_t *)b)->name);
}

int cellar_get_tree(cellar_t *c, const char *rdir, const char *ldir,
                    const cellar_xfer_t *x)
{
    cellar_stat_t *ents = NULL;
    int n = cellar_list_alloc(c, rdir, &ents);
    if (n < 0) {
        cellar__at_path(c, n, rdir);
        report(x, rdir, ldir, true, n);
        return n;
    }
    int err = 0;
    if (mkdir(ldir, 0777) < 0) {
        struct stat st;
        if (errno != EEXIST || stat(ldir, &st) < 0 || !S_ISDIR(st.st_mode))
            err = cellar__local_fail(c, errno == EEXIST ? -ENOTDIR : -errno, ldir, NULL);
    }
    report(x, rdir, ldir, true, err);
    if (err < 0) {
        free(ents);
        return err;
    }
    qsort(ents, (size_t)n, sizeof(*ents), by_name);
    int first = 0;
    for (int i = 0; i < n; i++) {
        if (cellar__is_tmp_name(ents[i].name) || !cellar__plain_name(ents[i].name))
            continue; /* never follow a hostile name out of ldir */
        char *rp = cellar__join(rdir, ents[i].name);
        char *lp = cellar__join(ldir, ents[i].name);
        int r = 0;
        if (!lp || !rp)
            r = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        else if (ents[i].type == CELLAR_TYPE_DIR)
            r = cellar_get_tree(c, rp, lp, x);
        else
            r = cellar_get_file(c, rp, lp, x);
        if (r < 0 && first == 0)
            first = r;
        free(lp);
        free(rp);
        if (!cellar_connected(c))
            break;
    }
    free(ents);
    return first;
}

