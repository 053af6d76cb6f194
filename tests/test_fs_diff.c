/*
 * test_fs_diff.c - randomized differential test of the filesystem against
 * the in-memory model (tests/support/cfs_model.h).
 *
 * Thousands of random operations (create/open with every flag, write, pwrite,
 * append, read, pread, seek, truncate, sync, close, stat, remove, rename,
 * mkdir, rmdir, rename_many, gc, statvfs) run on a small device, so garbage
 * collection and checkpoints run a lot, with several handles open at once.
 * Every result is compared with the model: return codes, bytes read, sizes.
 * Periodically the fs is unmounted and mounted again, then the whole tree
 * (every directory listing, every file's bytes, the file/dir counts) is
 * compared and cfs_fsck must pass.
 *
 * Handle model: at most one writable handle per file (any number of
 * read-only ones). The writer sees its own writes at once; everyone else
 * sees the file's last synced content (cfs.h: data becomes visible to other
 * handles when sync/close returns). Files that are open are never removed or
 * renamed by the random ops (that is covered by test_fs_unit).
 *
 *   test_fs_diff                      3 fixed seeds x 3000 ops, 256 blocks
 *   test_fs_diff --seed N --ops M     one long run
 *          [--blocks B] [--verbose]   (every op printed with -v)
 * On the first divergence the last operations and the seed are printed and
 * the run stops (the model no longer describes the fs).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "flash_sim.h"
#include "cfs.h"
#include "cfs_model.h"

#define MAX_HANDLES 8
#define MAX_FILE (64 * 1024)
#define LOG_KEEP 40
#define PATHBUF 600 /* room for a too-long path */

typedef struct handle {
    bool used;
    bool writable, readable, append;
    uint32_t node;        /* model node */
    uint32_t pos;
    uint8_t *wc;          /* writer's working copy (NULL for readers) */
    uint32_t wlen;
    bool dirty;
    cfs_file_t f;
} handle_t;

typedef struct run {
    uint64_t seed;
    uint32_t nops, blocks;
    bool verbose;
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    uint32_t now;
    fsm_t *m;             /* committed state */
    fsm_rng_t rng;
    handle_t h[MAX_HANDLES];
    uint64_t budget;      /* max bytes of file data (model) */
    uint32_t op;
    bool failed;
    char log[LOG_KEEP][320];
    uint32_t nlog;
    uint32_t tag;         /* data tags */
    /* counters */
    uint32_t nremount, nfsck, ngc, nerr_expected, nrenmany;
    uint64_t bytes_written;
} run_t;

static const char *const dnames[] = { "d0", "d1", "d2", "dir3", "data" };
static const char *const fnames[] = { "f0", "f1", "f2", "f3", "file4",
                                      "log.txt", "a", "b", "\xc3\xa9t\xc3\xa9", "cfg.json" };

static uint32_t fake_clock(void *ctx)
{
    return ++*(uint32_t *)ctx;
}

static uint32_t rnd(run_t *r, uint32_t n)
{
    return fsm_rng_below(&r->rng, n);
}

static void logop(run_t *r, const char *fmt, ...)
{
    char *s = r->log[r->nlog++ % LOG_KEEP];
    int n = snprintf(s, 320, "op %u: ", r->op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s + n, (size_t)(320 - n), fmt, ap);
    va_end(ap);
    if (r->verbose)
        printf("%s\n", s);
}

static void fail(run_t *r, const char *fmt, ...)
{
    if (!r->failed) {
        fprintf(stderr, "test_fs_diff: seed %" PRIu64 " blocks %u: divergence at op %u\n",
                r->seed, r->blocks, r->op);
        uint32_t first = r->nlog > LOG_KEEP ? r->nlog - LOG_KEEP : 0;
        fprintf(stderr, "  last operations:\n");
        for (uint32_t i = first; i < r->nlog; i++)
            fprintf(stderr, "    %s\n", r->log[i % LOG_KEEP]);
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    r->failed = true;
    check_fail_++;
}

#define EXPECT(r, cond, ...) do { \
    if (cond) { check_pass_++; } else { fail((r), __VA_ARGS__); return; } \
} while (0)

/* ---- paths ------------------------------------------------------------------ */

static bool node_open(const run_t *r, uint32_t node)
{
    for (int i = 0; i < MAX_HANDLES; i++)
        if (r->h[i].used && r->h[i].node == node)
            return true;
    return false;
}

static handle_t *writer_of(run_t *r, uint32_t node)
{
    for (int i = 0; i < MAX_HANDLES; i++)
        if (r->h[i].used && r->h[i].node == node && r->h[i].writable)
            return &r->h[i];
    return NULL;
}

/* Does the path (resolved in model m) name an open file? */
static bool path_open(const run_t *r, const fsm_t *m, const char *path)
{
    if (!path)
        return false;
    int32_t id = fsm_lookup(m, path);
    return id > 0 && node_open(r, (uint32_t)id);
}

/* A random path: an existing node, or a new name in an existing directory
 * (sometimes under a file or a missing directory, to exercise errors). */
static void rand_path(run_t *r, char *out, int want_type)
{
    uint32_t k = rnd(r, 10);
    if (k < 5) {
        uint32_t id = fsm_pick(r->m, want_type, fsm_rng_next(&r->rng));
        if (id != FSM_NONE && id != 0) {
            fsm_path(r->m, id, out);
            return;
        }
    }
    uint32_t dir = 0;
    if (k == 9) {
        /* parent that may not be a directory */
        dir = fsm_pick(r->m, 0, fsm_rng_next(&r->rng));
    } else {
        dir = fsm_pick(r->m, CFS_TYPE_DIR, fsm_rng_next(&r->rng));
    }
    char parent[PATHBUF];
    fsm_path(r->m, dir, parent);
    const char *name = want_type == CFS_TYPE_DIR
                           ? dnames[rnd(r, sizeof(dnames) / sizeof(dnames[0]))]
                           : fnames[rnd(r, sizeof(fnames) / sizeof(fnames[0]))];
    if (k == 8 && strlen(parent) + 10 < CFS_PATH_MAX) {
        /* a missing intermediate directory */
        if (snprintf(out, PATHBUF, "%s/nx/%s", dir ? parent : "", name) >= PATHBUF)
            strcpy(out, "/");
        return;
    }
    if (strlen(parent) + 1 + strlen(name) > CFS_PATH_MAX)
        dir = 0;
    if (snprintf(out, PATHBUF, "%s/%s", dir ? parent : "", name) >= PATHBUF)
        strcpy(out, "/");
}

/* ---- handle ops --------------------------------------------------------------- */

static handle_t *pick_handle(run_t *r, bool want_writer)
{
    int idx[MAX_HANDLES], n = 0;
    for (int i = 0; i < MAX_HANDLES; i++)
        if (r->h[i].used && (!want_writer || r->h[i].writable))
            idx[n++] = i;
    return n ? &r->h[idx[rnd(r, (uint32_t)n)]] : NULL;
}

/* What the handle sees: its working copy (writer) or the synced content. */
static const uint8_t *view(run_t *r, handle_t *h, uint32_t *len)
{
    if (h->wc) {
        *len = h->wlen;
        return h->wc;
    }
    return fsm_data(r->m, h->node, len);
}

static void commit(run_t *r, handle_t *h)
{
    if (h->wc && h->dirty)
        fsm_set_data(r->m, h->node, h->wc, h->wlen);
    h->dirty = false;
}

static void drop_handle(handle_t *h)
{
    free(h->wc);
    memset(h, 0, sizeof(*h));
}

static void op_open(run_t *r)
{
    handle_t *h = NULL;
    for (int i = 0; i < MAX_HANDLES; i++)
        if (!r->h[i].used) {
            h = &r->h[i];
            break;
        }
    if (!h)
        return;
    char path[PATHBUF];
    rand_path(r, path, CFS_TYPE_FILE);
    static const int acc[] = { CFS_O_RDONLY, CFS_O_WRONLY, CFS_O_RDWR, CFS_O_RDWR };
    int flags = acc[rnd(r, 4)];
    if (rnd(r, 2))
        flags |= CFS_O_CREAT;
    if ((flags & CFS_O_CREAT) && rnd(r, 4) == 0)
        flags |= CFS_O_EXCL;
    if ((flags & 3) != CFS_O_RDONLY && rnd(r, 5) == 0)
        flags |= CFS_O_TRUNC;
    if ((flags & 3) != CFS_O_RDONLY && rnd(r, 5) == 0)
        flags |= CFS_O_APPEND;
    /* One writer per file. */
    int32_t existing = fsm_lookup(r->m, path);
    if ((flags & 3) != CFS_O_RDONLY && existing > 0 && writer_of(r, (uint32_t)existing))
        flags = CFS_O_RDONLY;
    int32_t want = fsm_open(r->m, path, flags);
    logop(r, "open(\"%s\", 0x%x) -> expect %d", path, flags, want < 0 ? want : 0);
    int rc = cfs_file_open(&r->fs, &h->f, path, flags);
    EXPECT(r, rc == (want < 0 ? want : 0), "open(\"%s\", 0x%x) = %d, model %d",
           path, flags, rc, want < 0 ? want : 0);
    if (rc < 0) {
        r->nerr_expected++;
        return;
    }
    h->used = true;
    h->node = (uint32_t)want;
    h->readable = (flags & CFS_O_RDONLY) != 0;
    h->writable = (flags & CFS_O_WRONLY) != 0;
    h->append = (flags & CFS_O_APPEND) != 0;
    h->pos = 0;
    if (h->writable) {
        uint32_t len;
        const uint8_t *d = fsm_data(r->m, h->node, &len);
        if (flags & CFS_O_TRUNC) {
            len = 0;
            h->dirty = true;
        }
        h->wc = malloc(len ? len : 1);
        if (len)
            memcpy(h->wc, d, len);
        h->wlen = len;
    }
    uint32_t vlen;
    view(r, h, &vlen);
    int32_t sz = cfs_file_size(&r->fs, &h->f);
    EXPECT(r, sz == (int32_t)vlen, "size after open of \"%s\" = %d, model %u",
           path, sz, vlen);
}

static void op_close(run_t *r)
{
    handle_t *h = pick_handle(r, false);
    if (!h)
        return;
    char path[PATHBUF];
    fsm_path(r->m, h->node, path);
    logop(r, "close(%s [h%d])", path, (int)(h - r->h));
    int rc = cfs_file_close(&r->fs, &h->f);
    commit(r, h);
    drop_handle(h);
    EXPECT(r, rc == 0, "close(\"%s\") = %d", path, rc);
}

static void op_sync(run_t *r)
{
    handle_t *h = pick_handle(r, false);
    if (!h)
        return;
    logop(r, "sync(h%d)", (int)(h - r->h));
    int rc = cfs_file_sync(&r->fs, &h->f);
    commit(r, h);
    EXPECT(r, rc == 0, "sync = %d", rc);
}

static uint32_t rand_len(run_t *r)
{
    switch (rnd(r, 8)) {
    case 0: return rnd(r, 8);
    case 1: case 2: case 3: return 1 + rnd(r, 300);
    case 4: case 5: return 1 + rnd(r, 4200);
    case 6: return 4096 * (1 + rnd(r, 3)) + rnd(r, 3) - 1;
    default: return 1 + rnd(r, 20000);
    }
}

static void op_write(run_t *r, int kind /* 0 write, 1 pwrite */)
{
    handle_t *h = pick_handle(r, true);
    if (!h)
        return;
    uint32_t len = rand_len(r);
    uint32_t off;
    if (kind == 1) {
        uint32_t base = h->wlen + 1 + (rnd(r, 4) == 0 ? rnd(r, 9000) : 0);
        off = rnd(r, base);
    } else {
        off = h->append ? h->wlen : h->pos;
    }
    if (off + len > MAX_FILE) {
        if (off >= MAX_FILE)
            return;
        len = MAX_FILE - off;
    }
    uint32_t newlen = off + len > h->wlen ? off + len : h->wlen;
    uint32_t oldlen;
    fsm_data(r->m, h->node, &oldlen);
    if (fsm_bytes(r->m) + newlen > r->budget + oldlen)
        return; /* keep the device well below full */
    uint8_t *buf = malloc(len ? len : 1);
    uint32_t tag = ++r->tag;
    fsm_fill(buf, len, tag, off);
    logop(r, "%s(h%d, off %u, len %u, tag %u)", kind ? "pwrite" : "write",
          (int)(h - r->h), off, len, tag);
    int rc = kind ? cfs_file_pwrite(&r->fs, &h->f, buf, len, off)
                  : cfs_file_write(&r->fs, &h->f, buf, len);
    if (rc == (int)len && len) {
        if (newlen > h->wlen) {
            h->wc = realloc(h->wc, newlen);
            memset(h->wc + h->wlen, 0, newlen - h->wlen);
            h->wlen = newlen;
        }
        memcpy(h->wc + off, buf, len);
        h->dirty = true;
    }
    free(buf);
    r->bytes_written += len;
    EXPECT(r, rc == (int)len, "write returned %d, expected %u", rc, len);
    if (kind == 0)
        h->pos = off + len;
    int32_t pos = cfs_file_tell(&r->fs, &h->f);
    EXPECT(r, pos == (int32_t)h->pos, "tell after write = %d, model %u", pos, h->pos);
    int32_t sz = cfs_file_size(&r->fs, &h->f);
    EXPECT(r, sz == (int32_t)h->wlen, "size after write = %d, model %u", sz, h->wlen);
}

static void op_read(run_t *r, int kind /* 0 read, 1 pread */)
{
    handle_t *h = pick_handle(r, false);
    if (!h)
        return;
    uint32_t vlen;
    const uint8_t *v = view(r, h, &vlen);
    uint32_t len = rand_len(r);
    uint32_t off = kind ? rnd(r, vlen + 100) : h->pos;
    uint8_t *buf = malloc(len ? len : 1);
    logop(r, "%s(h%d, off %u, len %u)", kind ? "pread" : "read", (int)(h - r->h),
          off, len);
    int rc = kind ? cfs_file_pread(&r->fs, &h->f, buf, len, off)
                  : cfs_file_read(&r->fs, &h->f, buf, len);
    if (!h->readable) {
        free(buf);
        EXPECT(r, rc == CFS_ERR_BADF, "read on write-only handle = %d", rc);
        return;
    }
    uint32_t want = off >= vlen ? 0 : (vlen - off < len ? vlen - off : len);
    bool ok = rc == (int)want && (want == 0 || memcmp(buf, v + off, want) == 0);
    if (!ok && rc == (int)want) {
        uint32_t at = 0;
        while (at < want && buf[at] == v[off + at])
            at++;
        free(buf);
        EXPECT(r, false, "read bytes differ at %u (file offset %u)", at, off + at);
    }
    free(buf);
    EXPECT(r, ok, "read returned %d, expected %u", rc, want);
    if (kind == 0)
        h->pos = off + want;
    int32_t pos = cfs_file_tell(&r->fs, &h->f);
    EXPECT(r, pos == (int32_t)h->pos, "tell after read = %d, model %u", pos, h->pos);
}

static void op_seek(run_t *r)
{
    handle_t *h = pick_handle(r, false);
    if (!h)
        return;
    uint32_t vlen;
    view(r, h, &vlen);
    int whence = (int)rnd(r, 3);
    int32_t off = (int32_t)rnd(r, vlen + 2000) - (whence == 0 ? 0 : (int32_t)vlen);
    if (rnd(r, 10) == 0)
        off = -(int32_t)rnd(r, 100000) - 1;
    int64_t base = whence == 0 ? 0 : whence == 1 ? h->pos : vlen;
    int64_t np = base + off;
    logop(r, "seek(h%d, %d, %d)", (int)(h - r->h), off, whence);
    int32_t rc = cfs_file_seek(&r->fs, &h->f, off, whence);
    if (np < 0 || np > (int64_t)CFS_FILE_MAX) {
        EXPECT(r, rc == CFS_ERR_INVAL, "seek to %lld = %d", (long long)np, rc);
        return;
    }
    EXPECT(r, rc == (int32_t)np, "seek = %d, model %lld", rc, (long long)np);
    h->pos = (uint32_t)np;
}

static void op_truncate(run_t *r)
{
    handle_t *h = pick_handle(r, true);
    if (!h)
        return;
    uint32_t size = rnd(r, 3) == 0 ? 0 : rnd(r, h->wlen + 10000);
    if (size > MAX_FILE)
        size = MAX_FILE;
    uint32_t oldlen;
    fsm_data(r->m, h->node, &oldlen);
    if (fsm_bytes(r->m) + size > r->budget + oldlen)
        return;
    logop(r, "truncate(h%d, %u) [was %u]", (int)(h - r->h), size, h->wlen);
    int rc = cfs_file_truncate(&r->fs, &h->f, size);
    EXPECT(r, rc == 0, "truncate = %d", rc);
    if (size > h->wlen) {
        h->wc = realloc(h->wc, size);
        memset(h->wc + h->wlen, 0, size - h->wlen);
    }
    h->wlen = size;
    h->dirty = true;
    int32_t sz = cfs_file_size(&r->fs, &h->f);
    EXPECT(r, sz == (int32_t)size, "size after truncate = %d, model %u", sz, size);
}

/* Rewrite a file through its writer: truncate to 0, then write 8-48 KiB in
 * pieces (keeps the write volume high, so the log wraps and GC runs). */
static void op_burst(run_t *r)
{
    handle_t *h = pick_handle(r, true);
    if (!h)
        return;
    uint32_t total = 8192 + rnd(r, 40 * 1024);
    uint32_t oldlen;
    fsm_data(r->m, h->node, &oldlen);
    if (fsm_bytes(r->m) + total > r->budget + oldlen)
        return;
    logop(r, "burst(h%d, truncate 0 + %u bytes)", (int)(h - r->h), total);
    int rc = cfs_file_truncate(&r->fs, &h->f, 0);
    EXPECT(r, rc == 0, "truncate = %d", rc);
    h->wlen = 0;
    h->dirty = true;
    uint32_t tag = ++r->tag;
    uint8_t *buf = malloc(4096);
    for (uint32_t off = 0; off < total;) {
        uint32_t n = total - off < 4096 ? total - off : 4096;
        fsm_fill(buf, n, tag, off);
        uint32_t at = h->append ? h->wlen : h->pos;
        rc = cfs_file_write(&r->fs, &h->f, buf, n);
        if (rc != (int)n) {
            free(buf);
            EXPECT(r, false, "burst write at %u = %d", at, rc);
        }
        if (at + n > h->wlen) {
            h->wc = realloc(h->wc, at + n);
            memset(h->wc + h->wlen, 0, at + n - h->wlen);
            h->wlen = at + n;
        }
        fsm_fill(h->wc + at, n, tag, off);
        h->pos = at + n;
        off += n;
        r->bytes_written += n;
        if (h->wlen > MAX_FILE + 4096)
            break;
    }
    free(buf);
    int32_t sz = cfs_file_size(&r->fs, &h->f);
    EXPECT(r, sz == (int32_t)h->wlen, "size after burst = %d, model %u", sz, h->wlen);
    if (rnd(r, 2)) {
        rc = cfs_file_sync(&r->fs, &h->f);
        commit(r, h);
        EXPECT(r, rc == 0, "sync after burst = %d", rc);
    }
}

/* ---- namespace ops ---------------------------------------------------------------- */

static void expect_rc(run_t *r, const char *what, int rc, int want)
{
    if (rc == want) {
        check_pass_++;
        if (rc < 0)
            r->nerr_expected++;
        return;
    }
    fail(r, "%s = %d, model %d", what, rc, want);
}

static void op_mkdir(run_t *r)
{
    char path[PATHBUF];
    rand_path(r, path, CFS_TYPE_DIR);
    logop(r, "mkdir(\"%s\")", path);
    int want = fsm_mkdir(r->m, path);
    expect_rc(r, "mkdir", cfs_mkdir(&r->fs, path), want);
}

static void op_rmdir(run_t *r)
{
    char path[PATHBUF];
    rand_path(r, path, rnd(r, 4) ? CFS_TYPE_DIR : 0);
    if (path_open(r, r->m, path))
        return;
    logop(r, "rmdir(\"%s\")", path);
    int want = fsm_rmdir(r->m, path);
    expect_rc(r, "rmdir", cfs_rmdir(&r->fs, path), want);
}

static void op_remove(run_t *r)
{
    char path[PATHBUF];
    rand_path(r, path, rnd(r, 4) ? CFS_TYPE_FILE : 0);
    if (path_open(r, r->m, path))
        return;
    logop(r, "remove(\"%s\")", path);
    int want = fsm_remove(r->m, path);
    expect_rc(r, "remove", cfs_remove(&r->fs, path), want);
}

static void op_rename(run_t *r)
{
    char src[PATHBUF], dst[PATHBUF];
    int t = rnd(r, 3) == 0 ? CFS_TYPE_DIR : CFS_TYPE_FILE;
    rand_path(r, src, t);
    rand_path(r, dst, t);
    if (path_open(r, r->m, src) || path_open(r, r->m, dst))
        return;
    logop(r, "rename(\"%s\", \"%s\")", src, dst);
    int want = fsm_rename(r->m, src, dst);
    expect_rc(r, "rename", cfs_rename(&r->fs, src, dst), want);
}

static void op_rename_many(run_t *r)
{
    enum { MAXN = 6 };
    char sbuf[MAXN][PATHBUF], dbuf[MAXN][PATHBUF];
    const char *src[MAXN], *dst[MAXN];
    uint32_t n = 1 + rnd(r, MAXN);
    fsm_t *tmp = fsm_clone(r->m);
    for (uint32_t i = 0; i < n; i++) {
        int t = rnd(r, 4) == 0 ? CFS_TYPE_DIR : CFS_TYPE_FILE;
        rand_path(r, sbuf[i], t);
        rand_path(r, dbuf[i], t);
        src[i] = sbuf[i];
        dst[i] = rnd(r, 4) == 0 ? NULL : dbuf[i];
        /* Never touch open files, in the state each pair will see. */
        if (path_open(r, tmp, src[i]) || path_open(r, tmp, dst[i])) {
            fsm_free(tmp);
            return;
        }
        if (dst[i])
            fsm_rename(tmp, src[i], dst[i]);
        else
            fsm_remove(tmp, src[i]);
    }
    fsm_free(tmp);
    char desc[8 * (CFS_PATH_MAX + 8)];
    size_t dl = 0;
    desc[0] = '\0';
    for (uint32_t i = 0; i < n && dl < sizeof(desc) - 16; i++)
        dl += (size_t)snprintf(desc + dl, sizeof(desc) - dl, "%s%s->%s", i ? ", " : "",
                               src[i], dst[i] ? dst[i] : "NULL");
    logop(r, "rename_many(%u: %s)", n, desc);
    int want = fsm_rename_many(r->m, src, dst, n);
    r->nrenmany++;
    expect_rc(r, "rename_many", cfs_rename_many(&r->fs, src, dst, n), want);
}

static void op_stat(run_t *r)
{
    char path[PATHBUF];
    rand_path(r, path, 0);
    logop(r, "stat(\"%s\")", path);
    int32_t id = fsm_lookup(r->m, path);
    cfs_stat_t st;
    int rc = cfs_stat(&r->fs, path, &st);
    if (id < 0) {
        expect_rc(r, "stat", rc, id);
        return;
    }
    EXPECT(r, rc == 0, "stat(\"%s\") = %d", path, rc);
    const fsm_node_t *nd = &r->m->node[id];
    EXPECT(r, (int)st.type == nd->type, "stat type %d, model %d", st.type, nd->type);
    if (nd->type == CFS_TYPE_FILE)
        EXPECT(r, st.size == nd->len, "stat(\"%s\").size = %u, model %u", path,
               st.size, nd->len);
}

static void check_statvfs(run_t *r)
{
    cfs_statvfs_t v;
    int rc = cfs_statvfs(&r->fs, &v);
    EXPECT(r, rc == 0, "statvfs = %d", rc);
    EXPECT(r, v.free + v.used == v.total, "statvfs free %" PRIu64 " + used %" PRIu64
           " != total %" PRIu64, v.free, v.used, v.total);
    EXPECT(r, v.live <= v.used, "statvfs live %" PRIu64 " > used %" PRIu64, v.live, v.used);
    EXPECT(r, v.files == fsm_files(r->m), "statvfs files %u, model %u", v.files,
           fsm_files(r->m));
    EXPECT(r, v.dirs == fsm_dirs(r->m), "statvfs dirs %u, model %u", v.dirs,
           fsm_dirs(r->m));
}

static void op_gc(run_t *r)
{
    uint32_t n = rnd(r, 3);
    logop(r, "gc(%u)", n);
    int rc = cfs_gc(&r->fs, n);
    r->ngc++;
    EXPECT(r, rc >= 0, "gc(%u) = %d", n, rc);
    check_statvfs(r);
}

static void full_compare(run_t *r, const char *when)
{
    fsm_cmp_opts_t o = { .tag = when, .check_fs_counts = true };
    int bad = fsm_compare(r->m, &r->fs, &o);
    if (bad) {
        fsm_dump(r->m, when);
        fail(r, "%s: %d mismatches between fs and model", when, bad);
    } else {
        check_pass_++;
    }
}

static void op_remount(run_t *r)
{
    logop(r, "remount");
    /* Half the time close the handles first, else unmount syncs them (the
     * handles stay linked into the fs until cfs_unmount returns). */
    bool close_first = rnd(r, 2);
    for (int i = 0; i < MAX_HANDLES; i++) {
        handle_t *h = &r->h[i];
        if (!h->used)
            continue;
        if (close_first) {
            int rc = cfs_file_close(&r->fs, &h->f);
            if (rc != 0)
                fail(r, "close before remount = %d", rc);
            commit(r, h);
            drop_handle(h);
        }
    }
    int rc = cfs_unmount(&r->fs);
    for (int i = 0; i < MAX_HANDLES; i++) {
        handle_t *h = &r->h[i];
        if (h->used) {
            commit(r, h);
            drop_handle(h);
        }
    }
    EXPECT(r, rc == 0, "unmount = %d", rc);
    memset(&r->fs, 0x5a, sizeof(r->fs));
    rc = cfs_mount(&r->fs, &r->cfg);
    EXPECT(r, rc == 0, "mount = %d", rc);
    r->nremount++;
    full_compare(r, "after remount");
    rc = cfs_fsck(&r->fs, NULL, NULL);
    r->nfsck++;
    EXPECT(r, rc == 0, "fsck after remount = %d", rc);
    check_statvfs(r);
}

static void fsck_report(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "    fsck: %s\n", line);
}

static void run_one(run_t *r)
{
    flash_sim_config_t sc = { .block_size = 4096, .block_count = r->blocks,
                              .seed = r->seed };
    r->sim = flash_sim_new(&sc);
    r->now = 1000;
    r->cfg.dev = flash_sim_dev(r->sim);
    r->cfg.clock = fake_clock;
    r->cfg.clock_ctx = &r->now;
    r->m = fsm_new();
    fsm_rng_seed(&r->rng, r->seed);
    int rc = cfs_format(&r->fs, &r->cfg);
    if (rc == 0)
        rc = cfs_mount(&r->fs, &r->cfg);
    if (rc != 0) {
        fail(r, "format/mount = %d", rc);
        goto out;
    }
    cfs_statvfs_t v;
    cfs_statvfs(&r->fs, &v);
    r->budget = v.total * 35 / 100;

    for (r->op = 0; r->op < r->nops && !r->failed; r->op++) {
        uint32_t k = rnd(r, 1000);
        if (k < 90) op_open(r);
        else if (k < 160) op_close(r);
        else if (k < 330) op_write(r, 0);
        else if (k < 420) op_write(r, 1);
        else if (k < 500) op_read(r, 0);
        else if (k < 570) op_read(r, 1);
        else if (k < 600) op_seek(r);
        else if (k < 640) op_truncate(r);
        else if (k < 690) op_sync(r);
        else if (k < 740) op_mkdir(r);
        else if (k < 770) op_rmdir(r);
        else if (k < 830) op_remove(r);
        else if (k < 880) op_rename(r);
        else if (k < 910) op_rename_many(r);
        else if (k < 960) op_stat(r);
        else if (k < 970) op_gc(r);
        else if (k < 980) check_statvfs(r);
        else if (k < 986) op_remount(r);
        else if (k < 990) full_compare(r, "online compare");
        else op_write(r, rnd(r, 2));
        if (rnd(r, 100) < 6)
            op_burst(r);
    }
    if (!r->failed)
        op_remount(r);
    if (!r->failed) {
        rc = cfs_fsck(&r->fs, fsck_report, NULL);
        if (rc != 0)
            fail(r, "final fsck = %d", rc);
    }
    if (!r->failed) {
        cfs_statvfs(&r->fs, &v);
        printf("test_fs_diff: seed %" PRIu64 ": %u ops, %u remounts, %u gc calls, "
               "%u rename_many, %u expected errors, %" PRIu64 " KiB written, "
               "erase max %u mean %u\n",
               r->seed, r->nops, r->nremount, r->ngc, r->nrenmany, r->nerr_expected,
               r->bytes_written / 1024, v.erase_max, v.erase_mean);
    }
out:
    for (int i = 0; i < MAX_HANDLES; i++)
        if (r->h[i].used)
            drop_handle(&r->h[i]);
    if (r->fs.mounted && !r->failed)
        cfs_unmount(&r->fs);
    flash_sim_stats_t st;
    flash_sim_stats(r->sim, &st);
    CHECK_EQ(st.illegal_progs, 0);
    flash_sim_free(r->sim);
    fsm_free(r->m);
}

int main(int argc, char **argv)
{
    uint64_t seed = 0;
    uint32_t ops = 3000, blocks = 256;
    bool one = false, verbose = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            one = true;
        } else if (!strcmp(argv[i], "--ops") && i + 1 < argc) {
            ops = (uint32_t)strtoul(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--blocks") && i + 1 < argc) {
            blocks = (uint32_t)strtoul(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose")) {
            verbose = true;
        } else {
            fprintf(stderr, "usage: %s [--seed N] [--ops M] [--blocks B] [-v]\n", argv[0]);
            return 2;
        }
    }
    static const uint64_t seeds[] = { 1, 2, 3 };
    uint32_t nseeds = one ? 1 : 3;
    for (uint32_t i = 0; i < nseeds; i++) {
        run_t *r = calloc(1, sizeof(*r));
        r->seed = one ? seed : seeds[i];
        r->nops = ops;
        r->blocks = blocks;
        r->verbose = verbose;
        run_one(r);
        free(r);
    }
    return check_summary("test_fs_diff");
}
