/*
 * libcellar_batch.c - requests about many paths at once (issue 11, see
 * docs/PIPELINING.md): a tree listing one round trip per level, device
 * hashes and StatFs of many paths, and removing a tree, each through one
 * batch (cellar__batch_run in libcellar_pipe.c) instead of a round trip per
 * path. Above the file RPCs (libcellar_fs.c) and the pipeline; see
 * docs/ARCHITECTURE.md, "Clients".
 */
#include "libcellar_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tree listing ------------------------------------------------------------------ */
typedef struct wdir {
    char *path;
    unsigned depth;   /* of its entries */
    uint32_t expect;  /* cursor of the next page wanted */
    uint32_t asked;   /* pages asked in this round */
    bool done;
} wdir_t;

typedef struct lreq {
    bool stat;        /* Stat of the root, else a List page */
    size_t dir;
    uint32_t cursor;
} lreq_t;

typedef struct walk {
    cellar_t *c;
    cellar_tree_t *out;
    unsigned max_depth;
    wdir_t *d;
    size_t nd, capd;
    size_t cap;       /* of out->v */
    lreq_t *q;
    size_t nq, capq;
    uint32_t stride;  /* entries a full page advances the cursor by */
    int err;          /* first error about a directory */
    bool root_is_dir;
} walk_t;

static int add_dir(walk_t *w, char *path, unsigned depth)
{
    if (w->nd == w->capd) {
        size_t nc = w->capd ? 2 * w->capd : 16;
        wdir_t *nv = realloc(w->d, nc * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        w->d = nv;
        w->capd = nc;
    }
    w->d[w->nd++] = (wdir_t){.path = path, .depth = depth};
    return 0;
}

static int add_req(walk_t *w, bool stat, size_t dir, uint32_t cursor)
{
    if (w->nq == w->capq) {
        size_t nc = w->capq ? 2 * w->capq : 32;
        lreq_t *nv = realloc(w->q, nc * sizeof(*nv));
        if (!nv)
            return CELLAR_ERR_NOMEM;
        w->q = nv;
        w->capq = nc;
    }
    w->q[w->nq++] = (lreq_t){.stat = stat, .dir = dir, .cursor = cursor};
    return 0;
}

static int walk_fill(void *ctx, size_t i)
{
    walk_t *w = ctx;
    const lreq_t *r = &w->q[i];
    int err;
    const char *path = w->d[r->dir].path;
    cellar_Request *req = cellar__path_req(w->c, r->stat ? cellar_Request_stat_tag
                                                         : cellar_Request_list_tag,
                                           path, &err);
    if (!req)
        return err;
    if (!r->stat) {
        req->body.list.cursor = r->cursor;
        req->body.list.max_entries = CELLAR_LIST_PAGE;
    }
    return 0;
}

static int add_entry(walk_t *w, const wdir_t *dir, const cellar_FileInfo *fi)
{
    if (w->out->n >= CELLAR_MANIFEST_MAX)
        return cellar__fail(w->c, CELLAR_ERR_NOMEM, "%s: over %d entries", w->d[0].path,
                            CELLAR_MANIFEST_MAX);
    if (w->out->n == w->cap) {
        size_t nc = w->cap ? 2 * w->cap : 64;
        cellar_tree_entry_t *nv = realloc(w->out->v, nc * sizeof(*nv));
        if (!nv)
            return cellar__fail(w->c, CELLAR_ERR_NOMEM, "out of memory");
        w->out->v = nv;
        w->cap = nc;
    }
    char *full = cellar__join(dir->path, fi->name);
    if (!full)
        return cellar__fail(w->c, CELLAR_ERR_NOMEM, "out of memory");
    if (strlen(full) > CELLAR_PATH_MAX) {
        free(full); /* cannot be named in a request: left out, as the walk did */
        return 0;
    }
    cellar_tree_entry_t *e = &w->out->v[w->out->n++];
    e->path = full;
    e->depth = dir->depth;
    cellar__copy_info(&e->st, fi);
    if (e->st.type == CELLAR_TYPE_DIR && (w->max_depth == 0 || dir->depth < w->max_depth)) {
        if (dir->depth >= CELLAR__MAX_DEPTH)
            return cellar__at_path(w->c, cellar__fail(w->c, CELLAR_ERR_NAMETOOLONG,
                                                      "%s: more than %u directory levels",
                                                      full, CELLAR__MAX_DEPTH), full);
        char *dup = strdup(full);
        if (!dup || add_dir(w, dup, dir->depth + 1) < 0) {
            free(dup);
            return cellar__fail(w->c, CELLAR_ERR_NOMEM, "out of memory");
        }
    }
    return 0;
}

static int walk_done(void *ctx, size_t i, int err)
{
    walk_t *w = ctx;
    const lreq_t *r = &w->q[i];
    cellar_t *c = w->c;
    if (r->stat) {
        if (err < 0)
            return cellar__at_path(c, err, w->d[0].path);
        cellar__copy_info(&w->out->root, &cellar__resp(c)->body.stat.info);
        snprintf(w->out->root.name, sizeof(w->out->root.name), "%s", w->d[0].path);
        w->root_is_dir = w->out->root.type == CELLAR_TYPE_DIR;
        if (!w->root_is_dir)
            w->d[0].done = true;
        return 0;
    }
    wdir_t *d = &w->d[r->dir];
    if (d->done || r->cursor != d->expect)
        return 0; /* a page asked ahead that the listing did not reach */
    if (err == 0 && cellar__resp(c)->which_body != cellar_Response_list_tag)
        err = cellar__check(c, cellar_Response_list_tag);
    if (err < 0) {
        d->done = true;
        if (w->err == 0)
            w->err = cellar__at_path(c, err, d->path);
        return 0;
    }
    const cellar_ListReply *lr = &cellar__resp(c)->body.list;
    /* the root of a partition: its reserved directory is never followed */
    bool part_root = d->path[0] == '/' && d->path[1] && !strchr(d->path + 1, '/');
    for (pb_size_t k = 0; k < lr->entries_count; k++) {
        const cellar_FileInfo *fi = &lr->entries[k];
        if (!cellar__plain_name(fi->name) || (part_root && !strcmp(fi->name, ".cellar")))
            continue;
        /* add_entry may move w->d: index it again afterwards */
        size_t di = r->dir;
        wdir_t copy = w->d[di];
        int e = add_entry(w, &copy, fi);
        if (e < 0)
            return e;
        d = &w->d[di];
    }
    if (lr->next_cursor && lr->next_cursor <= r->cursor) {
        c->broken = true;
        return cellar__fail(c, CELLAR_ERR_PROTO, "list cursor does not advance");
    }
    if (lr->next_cursor && lr->next_cursor - r->cursor < w->stride)
        w->stride = lr->next_cursor - r->cursor; /* a device with smaller pages */
    d->expect = lr->next_cursor;
    d->done = lr->next_cursor == 0;
    return 0;
}

/* Pre-order: compare paths component by component ('/' sorts first). */
static int pre_order(const void *a, const void *b)
{
    const unsigned char *x = (const unsigned char *)((const cellar_tree_entry_t *)a)->path;
    const unsigned char *y = (const unsigned char *)((const cellar_tree_entry_t *)b)->path;
    for (; *x && *x == *y; x++, y++)
        ;
    unsigned cx = *x == '/' ? 1 : *x, cy = *y == '/' ? 1 : *y;
    return (int)cx - (int)cy;
}

void cellar_tree_free(cellar_tree_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].path);
    free(t->v);
    memset(t, 0, sizeof(*t));
}

int cellar_tree_list(cellar_t *c, const char *path, unsigned max_depth, cellar_tree_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!path)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no path given");
    walk_t w = {.c = c, .out = out, .max_depth = max_depth, .stride = CELLAR_LIST_PAGE};
    char *root = strdup(path);
    int err = root ? add_dir(&w, root, 1) : CELLAR_ERR_NOMEM;
    if (err < 0) {
        free(root);
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    }
    bool first = true;
    for (;;) {
        /* one round: the Stat of the root (first round), then AHEAD pages of
         * every directory not done */
        w.nq = 0;
        if (first && (err = add_req(&w, true, 0, 0)) < 0)
            break;
        for (size_t i = 0; i < w.nd && err == 0; i++) {
            if (w.d[i].done)
                continue;
            for (uint32_t k = 0; k < CELLAR_LIST_AHEAD && err == 0; k++)
                err = add_req(&w, false, i, w.d[i].expect + k * w.stride);
        }
        if (err < 0) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            break;
        }
        if (w.nq == 0)
            break;
        first = false;
        err = cellar__batch_run(c, w.nq, walk_fill, walk_done, &w, false);
        if (err < 0)
            break;
        if (!w.root_is_dir)
            break;
    }
    if (err == 0)
        err = w.err;
    for (size_t i = 0; i < w.nd; i++)
        free(w.d[i].path);
    free(w.d);
    free(w.q);
    if (err < 0) {
        cellar_tree_free(out);
        return err;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof(*out->v), pre_order);
    return 0;
}

/* ---- hashes and StatFs of many paths ------------------------------------------------ */
typedef struct many {
    cellar_t *c;
    const char *const *paths;
    uint8_t (*sha)[CELLAR_SHA256_SIZE];
    uint64_t *sizes;
    cellar_statfs_t *fs;
    int *errs;
    int first;
} many_t;

static int hash_fill(void *ctx, size_t i)
{
    many_t *m = ctx;
    return cellar__hash_req(m->c, m->paths[i], 0, 0);
}

static int statfs_fill(void *ctx, size_t i)
{
    many_t *m = ctx;
    int err;
    return cellar__path_req(m->c, cellar_Request_statfs_tag, m->paths[i], &err) ? 0 : err;
}

static int many_done(void *ctx, size_t i, int err)
{
    many_t *m = ctx;
    cellar_t *c = m->c;
    pb_size_t want = m->fs ? cellar_Response_statfs_tag : cellar_Response_hash_tag;
    if (err == 0)
        err = cellar__check(c, want);
    if (err == 0 && m->fs) {
        cellar__copy_statfs(&m->fs[i], &cellar__resp(c)->body.statfs);
    } else if (err == 0) {
        memcpy(m->sha[i], cellar__resp(c)->body.hash.sha256, CELLAR_SHA256_SIZE);
        if (m->sizes)
            m->sizes[i] = cellar__resp(c)->body.hash.length;
    }
    if (m->errs)
        m->errs[i] = err;
    if (err < 0 && m->first == 0)
        m->first = cellar__at_path(c, err, m->paths[i]);
    return 0;
}

int cellar_hash_many(cellar_t *c, size_t n, const char *const *paths,
                     uint8_t (*sha)[CELLAR_SHA256_SIZE], uint64_t *sizes, int *errs)
{
    many_t m = {.c = c, .paths = paths, .sha = sha, .sizes = sizes, .errs = errs};
    int err = cellar__batch_run(c, n, hash_fill, many_done, &m, true);
    return err < 0 ? err : m.first;
}

int cellar_statfs_many(cellar_t *c, size_t n, const char *const *paths,
                       cellar_statfs_t *out, int *errs)
{
    many_t m = {.c = c, .paths = paths, .fs = out, .errs = errs};
    int err = cellar__batch_run(c, n, statfs_fill, many_done, &m, false);
    return err < 0 ? err : m.first;
}

/* ---- removing a tree ----------------------------------------------------------------- */
typedef struct rm {
    cellar_t *c;
    const char **paths;
    bool *is_dir;
    int first;
} rm_t;

static int rm_fill(void *ctx, size_t i)
{
    rm_t *r = ctx;
    int err;
    pb_size_t which = r->is_dir[i] ? cellar_Request_rmdir_tag : cellar_Request_remove_tag;
    return cellar__path_req(r->c, which, r->paths[i], &err) ? 0 : err;
}

static int rm_done(void *ctx, size_t i, int err)
{
    rm_t *r = ctx;
    if (err == 0)
        err = cellar__check(r->c, cellar_Response_done_tag);
    if (err < 0 && r->first == 0)
        r->first = cellar__at_path(r->c, err, r->paths[i]);
    return 0;
}

static int deeper_first(const void *a, const void *b)
{
    const cellar_tree_entry_t *x = *(const cellar_tree_entry_t *const *)a;
    const cellar_tree_entry_t *y = *(const cellar_tree_entry_t *const *)b;
    if (x->depth != y->depth)
        return x->depth > y->depth ? -1 : 1;
    return strcmp(x->path, y->path);
}

/* One batch: every file, then the directories deepest first, then path
 * (the device answers in order, so a directory is empty when its Rmdir
 * comes). */
int cellar_remove_tree(cellar_t *c, const char *path)
{
    cellar_tree_t t;
    int err = cellar_tree_list(c, path, 0, &t);
    if (err < 0)
        return err;
    if (t.root.type != CELLAR_TYPE_DIR) {
        cellar_tree_free(&t);
        return cellar_remove(c, path);
    }
    size_t n = t.n + 1, k = 0, nd = 0;
    const char **paths = malloc(n * sizeof(*paths));
    bool *is_dir = malloc(n * sizeof(*is_dir));
    const cellar_tree_entry_t **dirs = malloc(n * sizeof(*dirs));
    if (!paths || !is_dir || !dirs) {
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < t.n; i++) {
        if (t.v[i].st.type == CELLAR_TYPE_DIR) {
            dirs[nd++] = &t.v[i];
        } else {
            is_dir[k] = false;
            paths[k++] = t.v[i].path;
        }
    }
    if (nd > 1)
        qsort(dirs, nd, sizeof(*dirs), deeper_first);
    for (size_t i = 0; i < nd; i++) {
        is_dir[k] = true;
        paths[k++] = dirs[i]->path;
    }
    is_dir[k] = true;
    paths[k++] = path;
    rm_t r = {.c = c, .paths = paths, .is_dir = is_dir};
    err = cellar__batch_run(c, k, rm_fill, rm_done, &r, false);
    if (err == 0)
        err = r.first;
out:
    free(paths);
    free(is_dir);
    free(dirs);
    cellar_tree_free(&t);
    return err;
}

/* ---- namespace requests about many paths ---------------------------------------------
 * One request per path in one batch; each answer goes to `each` as it comes
 * (errmsg/errpath are that answer's while it runs). */
typedef struct ns {
    cellar_t *c;
    pb_size_t which;          /* Stat, Mkdir, Rmdir, Remove, Rename, Open or Close */
    bool parents;             /* Mkdir -p */
    const char *const *paths;
    const char *const *to;    /* Rename */
    size_t base;              /* touch: the chunk's first path */
    cellar_fh_t *fh;          /* touch: the chunk's handles (0 = none) */
    const size_t *map;        /* touch's closes: the path of each handle */
    cellar_stat_t *st;        /* Stat: the answers */
    cellar_each_fn each;
    void *ctx;
    int first;
} ns_t;

static int ns_fill(void *ctx, size_t i)
{
    ns_t *m = ctx;
    int err = 0;
    if (m->which == cellar_Request_close_tag)
        return cellar__handle_req(m->c, m->which, m->fh[i]);
    cellar_Request *q = cellar__path_req(m->c, m->which, m->paths[m->base + i], &err);
    if (!q)
        return err;
    if (m->which == cellar_Request_mkdir_tag)
        q->body.mkdir.parents = m->parents;
    else if (m->which == cellar_Request_open_tag)
        q->body.open.flags = CELLAR_O_WRITE | CELLAR_O_CREATE | CELLAR_O_APPEND;
    else if (m->which == cellar_Request_rename_tag)
        err = cellar__path(m->c, q->body.rename.to, sizeof(q->body.rename.to), m->to[i]);
    return err;
}

static void ns_result(ns_t *m, size_t i, int err)
{
    if (err < 0) {
        cellar__at_path(m->c, err, m->paths[i]);
        if (m->first == 0)
            m->first = err;
    }
    if (m->each)
        m->each(m->ctx, i, err);
}

static int ns_done(void *ctx, size_t i, int err)
{
    ns_t *m = ctx;
    if (m->which == cellar_Request_stat_tag) {
        if (err == 0)
            err = cellar__check(m->c, cellar_Response_stat_tag);
        if (err == 0) {
            const cellar_StatReply *r = &cellar__resp(m->c)->body.stat;
            cellar__copy_info(&m->st[i], &r->info);
            if (!r->info.name[0])
                snprintf(m->st[i].name, sizeof(m->st[i].name), "%s", m->paths[i]);
        }
        ns_result(m, i, err);
        return 0;
    }
    if (m->which == cellar_Request_open_tag) {
        /* touch: a directory is left as it is; a file's handle is closed
         * in the next batch, which reports the path */
        if (err == 0)
            err = cellar__check(m->c, cellar_Response_open_tag);
        if (err == 0)
            m->fh[i] = cellar__resp(m->c)->body.open.handle;
        else if (err == CELLAR_ERR_ISDIR)
            err = 0;
        if (err < 0 || m->fh[i] == 0)
            ns_result(m, m->base + i, err);
        return 0;
    }
    if (err == 0)
        err = cellar__check(m->c, cellar_Response_done_tag);
    ns_result(m, m->map ? m->map[i] : m->base + i, err);
    return 0;
}

static int ns_run(ns_t *m, size_t n)
{
    int err = cellar__batch_run(m->c, n, ns_fill, ns_done, m, false);
    return err < 0 ? err : m->first;
}

int cellar_stat_many(cellar_t *c, size_t n, const char *const *paths, cellar_stat_t *st,
                     cellar_each_fn each, void *ctx)
{
    ns_t m = {.c = c, .which = cellar_Request_stat_tag, .paths = paths, .st = st,
              .each = each, .ctx = ctx};
    return ns_run(&m, n);
}

int cellar_mkdir_many(cellar_t *c, size_t n, const char *const *paths, bool parents,
                      cellar_each_fn each, void *ctx)
{
    ns_t m = {.c = c, .which = cellar_Request_mkdir_tag, .parents = parents,
              .paths = paths, .each = each, .ctx = ctx};
    return ns_run(&m, n);
}

int cellar_rmdir_many(cellar_t *c, size_t n, const char *const *paths,
                      cellar_each_fn each, void *ctx)
{
    ns_t m = {.c = c, .which = cellar_Request_rmdir_tag, .paths = paths,
              .each = each, .ctx = ctx};
    return ns_run(&m, n);
}

int cellar_remove_many(cellar_t *c, size_t n, const char *const *paths,
                       cellar_each_fn each, void *ctx)
{
    ns_t m = {.c = c, .which = cellar_Request_remove_tag, .paths = paths,
              .each = each, .ctx = ctx};
    return ns_run(&m, n);
}

int cellar_rename_many(cellar_t *c, size_t n, const char *const *from,
                       const char *const *to, cellar_each_fn each, void *ctx)
{
    ns_t m = {.c = c, .which = cellar_Request_rename_tag, .paths = from, .to = to,
              .each = each, .ctx = ctx};
    return ns_run(&m, n);
}

/* Opens, then the closes, in chunks of the handles the device allows
 * (HelloReply.max_handles, one kept free): two round trips per chunk. */
int cellar_touch_many(cellar_t *c, size_t n, const char *const *paths,
                      cellar_each_fn each, void *ctx)
{
    uint32_t mh = cellar_info(c)->max_handles; /* a pipelined Hello's answer first */
    size_t chunk = mh > 1 ? mh - 1 : 1;
    cellar_fh_t *fh = calloc(chunk, sizeof(*fh)), *open_fh = calloc(chunk, sizeof(*fh));
    size_t *map = calloc(chunk, sizeof(*map));
    int first = 0, err = 0;
    if (!fh || !open_fh || !map)
        err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    for (size_t base = 0; base < n && err >= 0 && cellar_connected(c); base += chunk) {
        size_t k = n - base < chunk ? n - base : chunk, nh = 0;
        ns_t m = {.c = c, .which = cellar_Request_open_tag, .paths = paths, .base = base,
                  .fh = fh, .each = each, .ctx = ctx};
        memset(fh, 0, chunk * sizeof(*fh));
        err = cellar__batch_run(c, k, ns_fill, ns_done, &m, false);
        first = first ? first : m.first;
        /* close what was opened, whatever happened to the others */
        for (size_t i = 0; i < k; i++) {
            if (fh[i] != 0) {
                map[nh] = base + i;
                open_fh[nh++] = fh[i];
            }
        }
        if (nh == 0 || !cellar_connected(c))
            continue;
        ns_t z = {.c = c, .which = cellar_Request_close_tag, .paths = paths,
                  .fh = open_fh, .map = map, .each = each, .ctx = ctx};
        int e = cellar__batch_run(c, nh, ns_fill, ns_done, &z, false);
        err = err < 0 ? err : e;
        first = first ? first : z.first;
    }
    free(fh);
    free(open_fh);
    free(map);
    return err < 0 ? err : first;
}

/* ---- the walk other files use ------------------------------------------------------ */
int cellar__walk(cellar_t *c, const char *dir, unsigned depth, cellar__strvec_t *files,
                 cellar__strvec_t *dirs)
{
    (void)depth;
    cellar_tree_t t;
    int err = cellar_tree_list(c, dir, 0, &t);
    for (size_t i = 0; err == 0 && i < t.n; i++) {
        cellar__strvec_t *into = t.v[i].st.type == CELLAR_TYPE_DIR ? dirs : files;
        if (into && cellar__sv_add(into, t.v[i].path, CELLAR_MANIFEST_MAX) < 0)
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory (or over %d entries)",
                               CELLAR_MANIFEST_MAX);
    }
    if (err == 0 && t.root.type != CELLAR_TYPE_DIR)
        err = cellar__at_path(c, cellar__fail(c, CELLAR_ERR_NOTDIR, "%s: not a directory",
                                              dir), dir);
    cellar_tree_free(&t);
    return err;
}
