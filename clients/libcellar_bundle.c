/*
 * libcellar_bundle.c - building an update bundle from a local directory:
 * walk it, hash every regular file once, sort by device path. No
 * connection is used: a bundle is built once and pushed to any number of
 * devices (libcellar_push.c). Also the bundle id, shared with the push.
 * Above libcellar_util.c only (and cellar__fail for messages); see
 * docs/ARCHITECTURE.md, "Clients".
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

#include "le.h"

/* ---- entries ------------------------------------------------------------------------ */
int cellar__item_add(cellar_t *c, cellar__items_t *v, const char *path, char *local)
{
    if (v->n >= (size_t)CELLAR_PUSH_MAX_FILES + CELLAR_MANIFEST_MAX)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "too many entries");
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 64;
        cellar__item_t *nv = realloc(v->v, ncap * sizeof(*nv));
        if (!nv)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        v->v = nv;
        v->cap = ncap;
    }
    cellar__item_t *it = &v->v[v->n++];
    memset(it, 0, sizeof(*it));
    snprintf(it->e.path, sizeof(it->e.path), "%s", path);
    it->local = local;
    return 0;
}

void cellar__bundle_id(const cellar__item_t *v, size_t n, uint8_t out[CELLAR_SHA256_SIZE])
{
    csha_t s;
    csha_init(&s);
    (void)csha_start(&s);
    static const uint8_t zero[CELLAR_SHA256_SIZE];
    for (size_t i = 0; i < n; i++) {
        const cellar_push_entry_t *e = &v[i].e;
        uint8_t le[8];
        uint64_t size = e->remove ? 0 : e->size;
        le_put32(le, (uint32_t)size);
        le_put32(le + 4, (uint32_t)(size >> 32));
        uint8_t rm = e->remove ? 1 : 0;
        (void)csha_update(&s, e->path, strlen(e->path) + 1); /* with the 0 byte */
        (void)csha_update(&s, le, sizeof(le));
        (void)csha_update(&s, e->remove ? zero : e->sha256, CELLAR_SHA256_SIZE);
        (void)csha_update(&s, &rm, 1);
    }
    (void)csha_finish(&s, out);
    csha_free(&s);
}

/* ---- the arguments ----------------------------------------------------------------- */
int cellar__bundle_check(cellar_t *c, const char *localdir, const char *remotedir,
                         char rdir[CELLAR_PATH_MAX + 1])
{
    if (!remotedir || strlen(remotedir) > CELLAR_PATH_MAX)
        return cellar__fail(c, remotedir ? CELLAR_ERR_NAMETOOLONG : CELLAR_ERR_INVAL,
                            "bad device directory");
    /* Trailing slashes off; it must be /usr or below. */
    size_t rl = strlen(remotedir);
    while (rl > 1 && remotedir[rl - 1] == '/')
        rl--;
    memcpy(rdir, remotedir, rl);
    rdir[rl] = 0;
    if (strncmp(rdir, "/usr", 4) != 0 || (rdir[4] != 0 && rdir[4] != '/') ||
        strstr(rdir, "//") || strstr(rdir, "/./") || strstr(rdir, "/../") ||
        (rl >= 2 && !strcmp(rdir + rl - 2, "/.")) ||
        (rl >= 3 && !strcmp(rdir + rl - 3, "/..")) || cellar__reserved(rdir))
        return cellar__at_path(c, cellar__fail(c, CELLAR_ERR_INVAL,
                                               "%s: not a directory path under /usr",
                                               rdir),
                               rdir);
    struct stat st;
    if (!localdir)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no local directory given");
    if (stat(localdir, &st) < 0)
        return cellar__local_fail(c, -errno, localdir, NULL);
    if (!S_ISDIR(st.st_mode))
        return cellar__local_fail(c, -ENOTDIR, localdir, NULL);
    return 0;
}

/* ---- the walk ------------------------------------------------------------------------ */
typedef struct build {
    cellar_t *c;
    cellar_bundle_t *b;
    cellar_warn_fn warn;
    void *warn_ctx;
} build_t;

static void skip(build_t *w, const char *local, const char *why)
{
    w->b->nskipped++;
    if (w->warn)
        w->warn(w->warn_ctx, local, why);
}

static int not_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") && strcmp(d->d_name, "..") && !cellar__is_tmp_name(d->d_name);
}

/* Walk the local directory ldir whose device path is rdir. */
static int walk_local(build_t *w, const char *ldir, const char *rdir, unsigned depth)
{
    cellar_t *c = w->c;
    cellar_bundle_t *b = w->b;
    if (depth > CELLAR__MAX_DEPTH)
        return cellar__local_fail(c, -ELOOP, ldir, "too many directory levels");
    struct dirent **names = NULL;
    int n = scandir(ldir, &names, not_dots, alphasort);
    if (n < 0)
        return cellar__local_fail(c, -errno, ldir, NULL);
    int err = 0;
    for (int i = 0; i < n && err == 0; i++) {
        char *lp = cellar__join(ldir, names[i]->d_name);
        char *rp = cellar__join(rdir, names[i]->d_name);
        struct stat st;
        if (!lp || !rp) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        } else if (lstat(lp, &st) < 0) {
            err = cellar__local_fail(c, -errno, lp, NULL);
        } else if (S_ISLNK(st.st_mode)) {
            skip(w, lp, "symbolic link, not pushed");
        } else if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
            skip(w, lp, "not a regular file, not pushed");
        } else if (strlen(rp) > CELLAR_PATH_MAX) {
            /* the reason must survive errmsg's 256 bytes: shorten the path */
            size_t ll = strlen(lp);
            err = cellar__fail(c, CELLAR_ERR_NAMETOOLONG,
                               "%s%s: its device path is longer than %d bytes",
                               ll > 160 ? "..." : "", ll > 160 ? lp + ll - 160 : lp,
                               CELLAR_PATH_MAX);
            snprintf(c->errpath, sizeof(c->errpath), "%s", lp);
        } else if (cellar__reserved(rp)) {
            err = cellar__fail(c, CELLAR_ERR_INVAL,
                               "%s: /usr/.cellar is reserved for the device", lp);
            snprintf(c->errpath, sizeof(c->errpath), "%s", lp);
        } else if (S_ISDIR(st.st_mode)) {
            if (cellar__sv_add(&b->dirs, rp, CELLAR_PUSH_MAX_FILES) < 0)
                err = cellar__fail(c, CELLAR_ERR_NOMEM,
                                   "out of memory (or over %d directories)",
                                   CELLAR_PUSH_MAX_FILES);
            else
                err = walk_local(w, lp, rp, depth + 1);
        } else if (b->items.n >= CELLAR_PUSH_MAX_FILES) {
            err = cellar__fail(c, CELLAR_ERR_NOMEM, "%s: more than %d files", ldir,
                               CELLAR_PUSH_MAX_FILES);
        } else {
            char *local = strdup(lp);
            if (!local)
                err = cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
            else if ((err = cellar__item_add(c, &b->items, rp, local)) < 0)
                free(local);
        }
        free(lp);
        free(rp);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return err;
}

/* Size and SHA-256 of every local file, read once. */
static int hash_items(cellar_t *c, cellar_bundle_t *b)
{
    for (size_t i = 0; i < b->items.n; i++) {
        cellar__item_t *it = &b->items.v[i];
        int fd = open(it->local, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return cellar__local_fail(c, -errno, it->local, NULL);
        int err = cellar__sha_fd(fd, UINT64_MAX, it->e.sha256, &it->e.size);
        close(fd);
        if (err == -ENOMEM)
            return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
        if (err < 0)
            return cellar__local_fail(c, err, it->local, "read");
        b->bytes += it->e.size;
    }
    return 0;
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const cellar__item_t *)a)->e.path, ((const cellar__item_t *)b)->e.path);
}

int cellar__bundle_walk(cellar_t *c, cellar_bundle_t *b, const char *localdir,
                        cellar_warn_fn warn, void *warn_ctx)
{
    build_t w = {.c = c, .b = b, .warn = warn, .warn_ctx = warn_ctx};
    int err = walk_local(&w, localdir, b->rdir, 0);
    if (err == 0)
        err = hash_items(c, b);
    if (err < 0)
        return err;
    if (b->items.n > 1)
        qsort(b->items.v, b->items.n, sizeof(*b->items.v), cmp_item);
    cellar__sv_sort(&b->dirs);
    return 0;
}

void cellar__bundle_clear(cellar_bundle_t *b)
{
    for (size_t i = 0; i < b->items.n; i++)
        free(b->items.v[i].local);
    free(b->items.v);
    cellar__sv_free(&b->dirs);
    memset(b, 0, sizeof(*b));
}

/* ---- the public API ---------------------------------------------------------------------- */
int cellar_bundle_build(cellar_t *c, const char *localdir, const char *remotedir,
                        cellar_warn_fn warn, void *warn_ctx, cellar_bundle_t **out)
{
    cellar_t scratch;
    if (!c) {
        cellar_init(&scratch, NULL);
        c = &scratch;
    }
    if (!out)
        return cellar__fail(c, CELLAR_ERR_INVAL, "no place for the bundle");
    *out = NULL;
    cellar_bundle_t *b = calloc(1, sizeof(*b));
    if (!b)
        return cellar__fail(c, CELLAR_ERR_NOMEM, "out of memory");
    int err = cellar__bundle_check(c, localdir, remotedir, b->rdir);
    if (err == 0)
        err = cellar__bundle_walk(c, b, localdir, warn, warn_ctx);
    if (err < 0) {
        cellar_bundle_free(b);
        return err;
    }
    *out = b;
    return 0;
}

void cellar_bundle_free(cellar_bundle_t *b)
{
    if (!b)
        return;
    cellar__bundle_clear(b);
    free(b);
}

size_t cellar_bundle_count(const cellar_bundle_t *b)
{
    return b ? b->items.n : 0;
}

const cellar_push_entry_t *cellar_bundle_entry(const cellar_bundle_t *b, size_t i)
{
    return b && i < b->items.n ? &b->items.v[i].e : NULL;
}

uint64_t cellar_bundle_bytes(const cellar_bundle_t *b)
{
    return b ? b->bytes : 0;
}

void cellar_bundle_id(const cellar_bundle_t *b, uint8_t out[CELLAR_SHA256_SIZE])
{
    cellar__bundle_id(b ? b->items.v : NULL, b ? b->items.n : 0, out);
}
