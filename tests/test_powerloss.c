/*
 * test_powerloss.c - power-loss sweep of the filesystem (SQLite-style fault
 * injection: cut the power at the Nth flash operation and sweep N).
 *
 * For each workload:
 *   1. a base state is prepared once (format, files, unmount) and its flash
 *      image kept;
 *   2. the workload runs once without faults to count its program/erase
 *      operations (flash_sim_ops) - it must succeed;
 *   3. for each cut point k (all of them with --full, an even sample
 *      otherwise): a fresh simulator holding the base image, mount, arm
 *      flash_sim_cut_after(k, torn_bits = k odd), run the workload until an
 *      operation fails, power on, and check:
 *        - cfs_mount succeeds and cfs_fsck is clean;
 *        - old-or-new: the whole tree equals the model before the
 *          interrupted operation or after it (every file in its last
 *          synced/closed state or - for the file being synced - the previous
 *          one; renames and rename_many all-or-nothing); an operation that
 *          returned success is never undone;
 *        - no illegal program (a bit set 0 -> 1) was attempted;
 *        - statvfs: free + used == total, files/dirs match the tree;
 *        - no space leaked: after removing everything and cfs_gc(0),
 *          live <= reference + LIVE_TOL and used <= reference + USED_TOL,
 *          where the reference is the same cleanup done on the fault-free
 *          run (and on the empty fs); see the tolerances below;
 *        - the fs keeps working: a new file is written, read back, and
 *          survives a remount.
 *      Every 4th cut point also gets a second cut during the recovery
 *      (mount + one GC step): the state must still be old-or-new.
 *
 *   test_powerloss                       make test: sampled, ~2,000+ cuts
 *   test_powerloss --full                every cut point of every workload
 *   test_powerloss --workload NAME [--cut K] [-v]   one workload / one cut
 * The last line is "powerloss: N cuts, N recovered, N failed".
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

/* Tolerances of the leak check (bytes), after everything is removed and
 * cfs_gc(0) has run, over the larger of the empty-fs figure and the figure
 * the fault-free run reaches with the same cleanup:
 *   live: a few directory/inode records may legitimately differ (a root
 *         directory chunk rewritten, a checkpoint of a different size);
 *         anything as large as the smallest workload file (>= 1 KiB) is a
 *         leak.
 *   used: GC stops at block granularity and the head block is partly
 *         written, so up to two blocks may differ. */
#define LIVE_TOL 768u
#define USED_TOL (2u * 4096u)

#define NSLOTS 8

typedef struct slot {
    bool used, append;
    cfs_file_t f;
    uint32_t node;
    uint8_t *wc;
    uint32_t wlen, pos;
    bool dirty;
} slot_t;

typedef struct pl {
    const struct workload *w;
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    uint32_t now;
    fsm_t *m;          /* durable state if the current op completes */
    fsm_t *alt;        /* durable state before the interrupted op, or NULL */
    slot_t s[NSLOTS];
    bool dead;         /* an op failed: the workload stops */
    bool counting;     /* fault-free run: every op must succeed */
    int err;           /* first unexpected error (counting run) */
    char errwhat[200];
    uint32_t opno;     /* workload ops issued */
    bool verbose;
} pl_t;

typedef struct workload {
    const char *name;
    uint32_t blocks;
    void (*base)(pl_t *p);  /* prepare the base state (no faults) */
    void (*run)(pl_t *p);   /* the workload (faults) */
    uint32_t sample;        /* cut points in make test (0 = all) */
} workload_t;

static uint32_t fake_clock(void *ctx)
{
    return ++*(uint32_t *)ctx;
}

/* ---- workload operations (model kept in step) ----------------------------------- */

static void vlog(pl_t *p, const char *fmt, ...)
{
    if (!p->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("  [%u] ", p->opno);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* Finish an op: rc is its result, pre the model before it (owned). */
static bool finish(pl_t *p, int rc, fsm_t *pre, const char *what)
{
    p->opno++;
    if (flash_sim_power_lost(p->sim)) {
        p->dead = true;
        if (rc < 0) {
            /* Interrupted: old or new. */
            p->alt = pre;
        } else {
            /* It returned success: it must not be undone. */
            fsm_free(pre);
        }
        vlog(p, "%s -> %d (power lost)", what, rc);
        return false;
    }
    fsm_free(pre);
    if (rc < 0) {
        p->dead = true;
        if (!p->err) {
            p->err = rc;
            snprintf(p->errwhat, sizeof(p->errwhat), "%s", what);
        }
        /* The op failed without a cut: its effect must not be there. */
        return false;
    }
    vlog(p, "%s -> %d", what, rc);
    return true;
}

#define W(x) do { if (!(x)) return; } while (0)

static bool w_open(pl_t *p, int i, const char *path, int flags)
{
    if (p->dead)
        return false;
    slot_t *s = &p->s[i];
    fsm_t *pre = fsm_clone(p->m);
    int32_t node = fsm_open(p->m, path, flags);
    /* The handle is opened in place: an open cfs_file_t must not move. */
    int rc = cfs_file_open(&p->fs, &s->f, path, flags);
    if (rc == 0 && node < 0) {
        /* Should not happen: the workloads only make valid calls. */
        cfs_file_close(&p->fs, &s->f);
        rc = -1000;
    }
    if (rc < 0) {
        fsm_copy(p->m, pre); /* nothing was created */
        if (flash_sim_power_lost(p->sim))
            fsm_open(p->m, path, flags); /* interrupted create: old or new */
    } else {
        s->used = true;
        s->node = (uint32_t)node;
        s->append = (flags & CFS_O_APPEND) != 0;
        s->pos = 0;
        s->dirty = false;
        const uint8_t *d = fsm_data(p->m, s->node, &s->wlen);
        if (flags & CFS_O_TRUNC) {
            s->wlen = 0;
            s->dirty = true;
        }
        free(s->wc);
        s->wc = malloc(s->wlen ? s->wlen : 1);
        if (s->wlen)
            memcpy(s->wc, d, s->wlen);
    }
    char what[300];
    snprintf(what, sizeof(what), "open(%s, 0x%x)", path, flags);
    return finish(p, rc, pre, what);
}

static void slot_drop(slot_t *s)
{
    free(s->wc);
    memset(s, 0, sizeof(*s));
}

static bool w_write_at(pl_t *p, int i, uint32_t off, uint32_t len, uint32_t tag,
                       bool positional)
{
    if (p->dead)
        return false;
    slot_t *s = &p->s[i];
    if (!positional)
        off = s->append ? s->wlen : s->pos;
    uint8_t *buf = malloc(len ? len : 1);
    fsm_fill(buf, len, tag, off);
    fsm_t *pre = fsm_clone(p->m);
    int rc = positional ? cfs_file_pwrite(&p->fs, &s->f, buf, len, off)
                        : cfs_file_write(&p->fs, &s->f, buf, len);
    if (rc >= 0 && rc != (int)len)
        rc = -1001;
    if (rc >= 0) {
        if (off + len > s->wlen) {
            s->wc = realloc(s->wc, off + len);
            memset(s->wc + s->wlen, 0, off + len - s->wlen);
            s->wlen = off + len;
        }
        memcpy(s->wc + off, buf, len);
        s->dirty = true;
        if (!positional)
            s->pos = off + len;
    }
    free(buf);
    char what[100];
    snprintf(what, sizeof(what), "%s(slot %d, off %u, len %u)",
             positional ? "pwrite" : "write", i, off, len);
    return finish(p, rc, pre, what);
}

static bool w_write(pl_t *p, int i, uint32_t len, uint32_t tag)
{
    return w_write_at(p, i, 0, len, tag, false);
}

static bool w_pwrite(pl_t *p, int i, uint32_t off, uint32_t len, uint32_t tag)
{
    return w_write_at(p, i, off, len, tag, true);
}

static bool w_truncate(pl_t *p, int i, uint32_t size)
{
    if (p->dead)
        return false;
    slot_t *s = &p->s[i];
    fsm_t *pre = fsm_clone(p->m);
    int rc = cfs_file_truncate(&p->fs, &s->f, size);
    if (rc >= 0) {
        if (size > s->wlen) {
            s->wc = realloc(s->wc, size);
            memset(s->wc + s->wlen, 0, size - s->wlen);
        }
        s->wlen = size;
        s->dirty = true;
    }
    char what[64];
    snprintf(what, sizeof(what), "truncate(slot %d, %u)", i, size);
    return finish(p, rc, pre, what);
}

static bool w_sync_or_close(pl_t *p, int i, bool close)
{
    if (p->dead)
        return false;
    slot_t *s = &p->s[i];
    fsm_t *pre = fsm_clone(p->m);
    if (s->dirty)
        fsm_set_data(p->m, s->node, s->wc, s->wlen);
    int rc = close ? cfs_file_close(&p->fs, &s->f) : cfs_file_sync(&p->fs, &s->f);
    if (rc < 0 && !flash_sim_power_lost(p->sim))
        fsm_copy(p->m, pre);
    s->dirty = false;
    if (close)
        slot_drop(s);
    char what[64];
    snprintf(what, sizeof(what), "%s(slot %d)", close ? "close" : "sync", i);
    return finish(p, rc, pre, what);
}

static bool w_sync(pl_t *p, int i) { return w_sync_or_close(p, i, false); }
static bool w_close(pl_t *p, int i) { return w_sync_or_close(p, i, true); }

/* Verify a file through the fs against the durable model or a slot's view
 * (reads are not counted as flash operations). */
static bool w_verify(pl_t *p, const char *path)
{
    if (p->dead)
        return false;
    int32_t id = fsm_lookup(p->m, path);
    uint8_t *got = NULL;
    int n = fsm_read_file(&p->fs, path, &got);
    uint32_t len = 0;
    const uint8_t *want = id > 0 ? fsm_data(p->m, (uint32_t)id, &len) : NULL;
    bool ok = id > 0 && n == (int)len && (len == 0 || memcmp(got, want, len) == 0);
    free(got);
    char what[300];
    snprintf(what, sizeof(what), "verify(%s) read %d, model %u", path, n, len);
    return finish(p, ok ? 0 : (n < 0 ? n : -1002), fsm_clone(p->m), what);
}

typedef int (*ns_fn)(fsm_t *m, const char *a, const char *b);

static int m_rename(fsm_t *m, const char *a, const char *b) { return fsm_rename(m, a, b); }
static int m_remove(fsm_t *m, const char *a, const char *b) { (void)b; return fsm_remove(m, a); }
static int m_mkdir(fsm_t *m, const char *a, const char *b) { (void)b; return fsm_mkdir(m, a); }
static int m_rmdir(fsm_t *m, const char *a, const char *b) { (void)b; return fsm_rmdir(m, a); }

static bool w_ns(pl_t *p, const char *op, const char *a, const char *b)
{
    if (p->dead)
        return false;
    fsm_t *pre = fsm_clone(p->m);
    int want, rc;
    if (!strcmp(op, "rename")) {
        want = m_rename(p->m, a, b);
        rc = cfs_rename(&p->fs, a, b);
    } else if (!strcmp(op, "remove")) {
        want = m_remove(p->m, a, b);
        rc = cfs_remove(&p->fs, a);
    } else if (!strcmp(op, "mkdir")) {
        want = m_mkdir(p->m, a, b);
        rc = cfs_mkdir(&p->fs, a);
    } else {
        want = m_rmdir(p->m, a, b);
        rc = cfs_rmdir(&p->fs, a);
    }
    if (rc >= 0 && want < 0)
        rc = -1003;
    if (rc < 0 && !flash_sim_power_lost(p->sim))
        fsm_copy(p->m, pre);
    char what[600];
    snprintf(what, sizeof(what), "%s(%s%s%s) model %d", op, a, b ? ", " : "",
             b ? b : "", want);
    return finish(p, rc, pre, what);
}

static bool w_rename(pl_t *p, const char *a, const char *b) { return w_ns(p, "rename", a, b); }
static bool w_remove(pl_t *p, const char *a) { return w_ns(p, "remove", a, NULL); }
static bool w_mkdir(pl_t *p, const char *a) { return w_ns(p, "mkdir", a, NULL); }
static bool w_rmdir(pl_t *p, const char *a) { return w_ns(p, "rmdir", a, NULL); }

static bool w_rename_many(pl_t *p, const char *const *src, const char *const *dst,
                          uint32_t n)
{
    if (p->dead)
        return false;
    fsm_t *pre = fsm_clone(p->m);
    int want = fsm_rename_many(p->m, src, dst, n);
    int rc = cfs_rename_many(&p->fs, src, dst, n);
    if (rc >= 0 && want < 0)
        rc = -1003;
    if (rc < 0 && !flash_sim_power_lost(p->sim))
        fsm_copy(p->m, pre);
    char what[64];
    snprintf(what, sizeof(what), "rename_many(%u) model %d", n, want);
    return finish(p, rc, pre, what);
}

static bool w_gc(pl_t *p, uint32_t blocks)
{
    if (p->dead)
        return false;
    int rc = cfs_gc(&p->fs, blocks);
    char what[32];
    snprintf(what, sizeof(what), "gc(%u)", blocks);
    return finish(p, rc, fsm_clone(p->m), what);
}

static bool w_unmount(pl_t *p)
{
    if (p->dead)
        return false;
    fsm_t *pre = fsm_clone(p->m);
    for (int i = 0; i < NSLOTS; i++)
        if (p->s[i].used && p->s[i].dirty)
            fsm_set_data(p->m, p->s[i].node, p->s[i].wc, p->s[i].wlen);
    int rc = cfs_unmount(&p->fs);
    /* Handles stay linked into the fs until cfs_unmount returns. */
    for (int i = 0; i < NSLOTS; i++)
        slot_drop(&p->s[i]);
    return finish(p, rc, pre, "unmount");
}

/* Whole-file helpers. */
static bool w_put(pl_t *p, const char *path, uint32_t len, uint32_t tag,
                  uint32_t piece)
{
    if (!w_open(p, 0, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC))
        return false;
    for (uint32_t off = 0; off < len; off += piece) {
        uint32_t n = len - off < piece ? len - off : piece;
        if (!w_write(p, 0, n, tag))
            return false;
    }
    return w_close(p, 0);
}

/* ---- workloads ------------------------------------------------------------------- */

static void base_files(pl_t *p)
{
    W(w_mkdir(p, "/dir"));
    W(w_put(p, "/old", 3000, 1, 1000));
    W(w_put(p, "/dir/keep", 9000, 2, 4096));
    W(w_put(p, "/log", 2000, 3, 2000));
    W(w_put(p, "/app", 500, 4, 500));
    W(w_put(p, "/big", 40000, 5, 4096));
    W(w_put(p, "/a", 1500, 6, 1500));
    W(w_put(p, "/c", 2500, 7, 2500));
    W(w_put(p, "/d", 3500, 8, 3500));
    W(w_mkdir(p, "/dd"));
    W(w_put(p, "/dd/x", 1200, 9, 1200));
    W(w_mkdir(p, "/empty"));
}

/* create + write + close: a small file and a multi-block, multi-segment one. */
static void wl_create(pl_t *p)
{
    W(w_open(p, 0, "/new1", CFS_O_WRONLY | CFS_O_CREAT | CFS_O_EXCL));
    W(w_write(p, 0, 1000, 11));
    W(w_write(p, 0, 2000, 11));
    W(w_close(p, 0));
    W(w_verify(p, "/new1"));
    W(w_open(p, 1, "/dir/new2", CFS_O_RDWR | CFS_O_CREAT));
    for (int i = 0; i < 5; i++)
        W(w_write(p, 1, 4096, 12));
    W(w_close(p, 1));
    W(w_open(p, 2, "/empty/zero", CFS_O_WRONLY | CFS_O_CREAT));
    W(w_close(p, 2));
    W(w_verify(p, "/dir/new2"));
    W(w_unmount(p));
}

/* write with periodic sync. */
static void wl_sync(pl_t *p)
{
    W(w_open(p, 0, "/log", CFS_O_RDWR));
    W(w_open(p, 1, "/old", CFS_O_RDONLY));
    for (int i = 0; i < 10; i++) {
        W(w_write(p, 0, 700, 20 + (uint32_t)i));
        if (i % 2 == 1)
            W(w_sync(p, 0));
    }
    W(w_close(p, 0));
    W(w_close(p, 1));
    W(w_unmount(p));
}

/* append with sync after every record. */
static void wl_append(pl_t *p)
{
    W(w_open(p, 0, "/app", CFS_O_WRONLY | CFS_O_APPEND));
    for (int i = 0; i < 12; i++) {
        W(w_write(p, 0, 100 + 37 * (uint32_t)i, 30 + (uint32_t)i));
        W(w_sync(p, 0));
    }
    W(w_close(p, 0));
    W(w_open(p, 0, "/newlog", CFS_O_WRONLY | CFS_O_CREAT | CFS_O_APPEND));
    for (int i = 0; i < 6; i++) {
        W(w_write(p, 0, 250, 50 + (uint32_t)i));
        W(w_sync(p, 0));
    }
    W(w_close(p, 0));
    W(w_unmount(p));
}

/* overwrite in the middle, across segment boundaries, truncate. */
static void wl_overwrite(pl_t *p)
{
    W(w_open(p, 0, "/big", CFS_O_RDWR));
    W(w_pwrite(p, 0, 10000, 1000, 60));
    W(w_sync(p, 0));
    W(w_pwrite(p, 0, 15000, 5000, 61)); /* crosses 16384 */
    W(w_pwrite(p, 0, 100, 10, 62));
    W(w_sync(p, 0));
    W(w_truncate(p, 0, 30000));
    W(w_sync(p, 0));
    W(w_truncate(p, 0, 35000));
    W(w_pwrite(p, 0, 34000, 500, 63));
    W(w_close(p, 0));
    W(w_verify(p, "/big"));
    W(w_open(p, 0, "/dir/keep", CFS_O_RDWR));
    W(w_pwrite(p, 0, 4000, 200, 64)); /* across a 4 KiB boundary */
    W(w_close(p, 0));
    W(w_open(p, 0, "/old", CFS_O_WRONLY | CFS_O_TRUNC));
    W(w_write(p, 0, 1800, 65));
    W(w_close(p, 0));
    W(w_unmount(p));
}

/* rename: new name, replacing a file, directories, across directories. */
static void wl_rename(pl_t *p)
{
    W(w_rename(p, "/a", "/a2"));
    W(w_rename(p, "/c", "/d"));           /* replaces /d */
    W(w_rename(p, "/dd", "/ee"));         /* directory with a file */
    W(w_rename(p, "/ee/x", "/dir/keep")); /* across dirs, replacing */
    W(w_rename(p, "/dir", "/empty"));     /* replaces an empty dir */
    W(w_rename(p, "/a2", "/empty/a3"));
    W(w_put(p, "/tmp", 2222, 70, 2222));
    W(w_rename(p, "/tmp", "/log"));       /* the atomic-replace pattern */
    W(w_unmount(p));
}

/* remove files and directories. */
static void wl_remove(pl_t *p)
{
    W(w_remove(p, "/big"));
    W(w_remove(p, "/a"));
    W(w_remove(p, "/dd/x"));
    W(w_rmdir(p, "/dd"));
    W(w_remove(p, "/empty"));
    W(w_remove(p, "/dir/keep"));
    W(w_put(p, "/after", 5000, 71, 5000));
    W(w_remove(p, "/old"));
    W(w_unmount(p));
}

/* mkdir / rmdir, nested, with files inside. */
static void wl_mkdir(pl_t *p)
{
    W(w_mkdir(p, "/m"));
    W(w_mkdir(p, "/m/n"));
    W(w_mkdir(p, "/m/n/o"));
    W(w_put(p, "/m/n/o/f", 700, 80, 700));
    W(w_mkdir(p, "/m/p"));
    W(w_rmdir(p, "/m/p"));
    W(w_rmdir(p, "/empty"));
    for (int i = 0; i < 12; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/m/d%02d", i);
        W(w_mkdir(p, name));
    }
    W(w_remove(p, "/m/n/o/f"));
    W(w_rmdir(p, "/m/n/o"));
    W(w_unmount(p));
}

/* rename_many: an update commit, then a swap through a temporary name. */
static void base_stage(pl_t *p)
{
    base_files(p);
    W(w_mkdir(p, "/stage"));
    W(w_put(p, "/stage/old", 3100, 90, 3100));
    W(w_put(p, "/stage/log", 1700, 91, 1700));
    W(w_put(p, "/stage/n1", 6000, 92, 4096));
    W(w_put(p, "/stage/n2", 500, 93, 500));
}

static void wl_rename_many(pl_t *p)
{
    const char *s1[] = { "/stage/old", "/stage/log", "/stage/n1", "/stage/n2", "/a",
                         "/dd/x" };
    const char *d1[] = { "/old", "/log", "/dir/n1", "/n2", NULL, "/dd/y" };
    W(w_rename_many(p, s1, d1, 6));
    const char *s2[] = { "/c", "/d", "/tmp" };
    const char *d2[] = { "/tmp", "/c", "/d" };
    W(w_rename_many(p, s2, d2, 3));
    W(w_put(p, "/stage/again", 900, 94, 900));
    const char *s3[] = { "/stage/again", "/stage", "/empty" };
    const char *d3[] = { "/again", "/empty", "/stage" };
    W(w_rename_many(p, s3, d3, 3));
    W(w_unmount(p));
}

/* GC on a nearly full small device: rewrites force relocation. */
static void base_full(pl_t *p)
{
    W(w_mkdir(p, "/s"));
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/s/static%d", i);
        W(w_put(p, name, 7000, 100 + (uint32_t)i, 4096));
    }
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/hot%d", i);
        W(w_put(p, name, 4000, 110 + (uint32_t)i, 4000));
    }
}

static void wl_gc_full(pl_t *p)
{
    for (int r = 0; r < 8; r++) {
        char name[32];
        snprintf(name, sizeof(name), "/hot%d", r % 3);
        W(w_put(p, name, 4000 + 300 * (uint32_t)r, 120 + (uint32_t)r, 1500));
    }
    W(w_open(p, 1, "/hot0", CFS_O_RDWR));
    for (int r = 0; r < 6; r++) {
        W(w_pwrite(p, 1, (uint32_t)r * 700, 900, 130 + (uint32_t)r));
        W(w_sync(p, 1));
    }
    W(w_close(p, 1));
    W(w_gc(p, 0));
    W(w_verify(p, "/s/static0"));
    W(w_unmount(p));
}

/* A long churn: the log wraps several times, static data is relocated. */
static void base_churn(pl_t *p)
{
    W(w_put(p, "/static", 12000, 140, 4096));
    W(w_mkdir(p, "/c"));
    W(w_put(p, "/c/s2", 3000, 141, 3000));
}

static void wl_churn(pl_t *p)
{
    for (int r = 0; r < 60; r++) {
        char name[32], name2[32];
        snprintf(name, sizeof(name), "/c/f%d", r % 4);
        W(w_put(p, name, 1000 + (uint32_t)(r * 397) % 5000, 150 + (uint32_t)r, 2048));
        if (r % 10 == 9) {
            snprintf(name2, sizeof(name2), "/c/r%d", r);
            W(w_rename(p, name, name2));
            W(w_remove(p, name2));
        }
        if (r % 15 == 7) {
            W(w_open(p, 1, "/c/s2", CFS_O_RDWR | CFS_O_APPEND));
            W(w_write(p, 1, 333, 200 + (uint32_t)r));
            W(w_close(p, 1));
        }
    }
    W(w_verify(p, "/static"));
    W(w_unmount(p));
}

/* Files of more than 40 segments: a truncation and a removal delete their
 * segment keys in batches after the commit; a cut between leaves keys that
 * GC must drop without losing or leaking anything. */
static void base_large(pl_t *p)
{
    W(w_put(p, "/keep", 3000, 160, 3000));
    W(w_put(p, "/large", 720u * 1024u, 161, 4096));
    W(w_put(p, "/large2", 700u * 1024u, 162, 4096));
}

static void wl_large(pl_t *p)
{
    W(w_open(p, 1, "/large", CFS_O_RDWR));
    W(w_truncate(p, 1, 100000));
    W(w_close(p, 1));
    W(w_remove(p, "/large2"));
    W(w_put(p, "/after", 60000, 163, 4096));
    W(w_rename(p, "/after", "/large"));
    W(w_gc(p, 0));
    W(w_verify(p, "/keep"));
    W(w_unmount(p));
}

static const workload_t workloads[] = {
    { "create",      48, base_files, wl_create,      250 },
    { "sync",        48, base_files, wl_sync,        250 },
    { "append",      48, base_files, wl_append,      250 },
    { "overwrite",   48, base_files, wl_overwrite,   250 },
    { "rename",      48, base_files, wl_rename,      250 },
    { "remove",      48, base_files, wl_remove,      250 },
    { "mkdir",       48, base_files, wl_mkdir,       250 },
    { "rename_many", 48, base_stage, wl_rename_many, 250 },
    { "gc_full",     64, base_full,  wl_gc_full,     600 },
    { "churn",       40, base_churn, wl_churn,       600 },
    { "large",      512, base_large, wl_large,       250 },
};
#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

/* ---- harness ---------------------------------------------------------------------- */

typedef struct ref {
    uint8_t *image;        /* base image */
    uint64_t size;
    fsm_t *base;           /* model of the base state */
    uint64_t nops;         /* flash ops of the workload */
    uint64_t live_ref, used_ref; /* cleanup figures (max of empty, fault-free) */
} ref_t;

static uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 29);
}

static void pl_init(pl_t *p, const workload_t *w, uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->w = w;
    flash_sim_config_t sc = { .block_size = 4096, .block_count = w->blocks,
                              .seed = seed ? seed : 1 };
    p->sim = flash_sim_new(&sc);
    if (!p->sim) {
        perror("flash_sim_new");
        exit(1);
    }
    p->now = 5000;
    p->cfg.dev = flash_sim_dev(p->sim);
    p->cfg.clock = fake_clock;
    p->cfg.clock_ctx = &p->now;
}

static void pl_fini(pl_t *p)
{
    for (int i = 0; i < NSLOTS; i++)
        slot_drop(&p->s[i]);
    fsm_free(p->m);
    fsm_free(p->alt);
    flash_sim_free(p->sim);
    p->m = p->alt = NULL;
    p->sim = NULL;
}

/* Remove every file and directory (deepest first) of a mounted fs, using the
 * model's tree; then cfs_gc(0). Returns 0 or an error. */
static int remove_all(cfs_t *fs, const fsm_t *m)
{
    int rc = 0;
    uint32_t n = m->nnodes;
    /* Repeat passes: a directory goes once its children are gone. */
    for (int pass = 0; pass < 64; pass++) {
        bool left = false;
        for (uint32_t i = n; i-- > 1;) {
            if (!m->node[i].used)
                continue;
            char path[CFS_PATH_MAX + 2];
            fsm_path(m, i, path);
            cfs_stat_t st;
            if (cfs_stat(fs, path, &st) != 0)
                continue;
            int r = cfs_remove(fs, path);
            if (r == CFS_ERR_NOTEMPTY)
                left = true;
            else if (r < 0 && rc == 0)
                rc = r;
        }
        if (!left)
            break;
    }
    int g = cfs_gc(fs, 0);
    if (g < 0 && rc == 0)
        rc = g;
    return rc;
}

typedef struct outcome {
    bool ok;
    char why[400];
} outcome_t;

static void why(outcome_t *o, const char *fmt, ...)
{
    if (!o->ok)
        return;
    o->ok = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->why, sizeof(o->why), fmt, ap);
    va_end(ap);
}

/* After a cut: mount, fsck, compare with m / alt. Leaves the fs mounted on
 * success. Returns which model matched (0 = m, 1 = alt) or -1. */
static int recover_and_compare(pl_t *p, outcome_t *o, bool loud)
{
    memset(&p->fs, 0x3c, sizeof(p->fs));
    int rc = cfs_mount(&p->fs, &p->cfg);
    if (rc != 0) {
        why(o, "mount after the cut failed: %d (%s)", rc, cfs_strerror(rc));
        return -1;
    }
    int lines = 0;
    rc = cfs_fsck(&p->fs, NULL, &lines);
    if (rc != 0) {
        why(o, "fsck after the cut: %d", rc);
        if (loud) {
            fprintf(stderr, "  fsck report:\n");
            cfs_fsck(&p->fs, NULL, NULL);
        }
        return -1;
    }
    fsm_cmp_opts_t q = { .quiet = true, .check_fs_counts = true };
    if (fsm_compare(p->m, &p->fs, &q) == 0)
        return 0;
    if (p->alt && fsm_compare(p->alt, &p->fs, &q) == 0)
        return 1;
    why(o, "tree is neither the old nor the new state%s",
        p->alt ? "" : " (the interrupted op had returned success)");
    if (loud) {
        fsm_cmp_opts_t v = { .check_fs_counts = true, .tag = "vs new" };
        fsm_compare(p->m, &p->fs, &v);
        if (p->alt) {
            v.tag = "vs old";
            fsm_compare(p->alt, &p->fs, &v);
        }
    }
    return -1;
}

static void fsck_print(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "    fsck: %s\n", line);
}

/* One cut point. Returns true when every check passed. */
static bool run_cut(const workload_t *w, const ref_t *ref, uint64_t k, bool verbose,
                    bool *cut_hit)
{
    pl_t p;
    outcome_t o = { .ok = true };
    pl_init(&p, w, mix(k, (uint64_t)(uintptr_t)w->name[0] * 31 + w->blocks));
    p.verbose = verbose;
    memcpy(flash_sim_data(p.sim), ref->image, ref->size);
    p.m = fsm_clone(ref->base);
    bool torn_bits = k & 1;
    *cut_hit = false;
    int rc = cfs_mount(&p.fs, &p.cfg);
    if (rc != 0) {
        why(&o, "mount of the base image failed: %d", rc);
        goto out;
    }
    flash_sim_cut_after(p.sim, k, torn_bits);
    w->run(&p);
    *cut_hit = flash_sim_power_lost(p.sim);
    if (!*cut_hit) {
        /* The workload ended before the cut: should not happen for k <=
         * nops, unless the fs behaves differently than in the count run. */
        if (p.err)
            why(&o, "workload failed without a cut: %s = %d", p.errwhat, p.err);
        else
            why(&o, "workload finished before cut %" PRIu64 " (count run: %" PRIu64
                " ops)", k, ref->nops);
        goto out;
    }
    /* Drop every handle: the RAM state is gone. */
    for (int i = 0; i < NSLOTS; i++)
        slot_drop(&p.s[i]);
    flash_sim_power_on(p.sim);

    /* Every 4th cut point: a second cut during the recovery. */
    if (k % 4 == 0) {
        uint64_t before = flash_sim_ops(p.sim);
        flash_sim_cut_after(p.sim, 1 + mix(k, 7) % 6, !torn_bits);
        cfs_t tmp;
        if (cfs_mount(&tmp, &p.cfg) == 0) {
            cfs_gc(&tmp, 1);
            if (!flash_sim_power_lost(p.sim))
                cfs_unmount(&tmp);
        }
        flash_sim_cut_after(p.sim, 0, false);
        flash_sim_power_on(p.sim);
        if (verbose)
            printf("  second cut during recovery: %" PRIu64 " ops\n",
                   flash_sim_ops(p.sim) - before);
    }

    int which = recover_and_compare(&p, &o, false);
    if (which < 0)
        goto out;
    const fsm_t *now = which == 0 ? p.m : p.alt;

    cfs_statvfs_t v;
    rc = cfs_statvfs(&p.fs, &v);
    if (rc != 0 || v.free + v.used != v.total) {
        why(&o, "statvfs after recovery: rc %d, free %" PRIu64 " + used %" PRIu64
            " != total %" PRIu64, rc, v.free, v.used, v.total);
        goto out;
    }
    /* The fs keeps working: write, read back, remount. */
    uint8_t buf[6000];
    fsm_fill(buf, sizeof(buf), 999, 0);
    rc = fsm_write_file(&p.fs, "/after-cut", buf, sizeof(buf));
    if (rc != 0) {
        why(&o, "writing a new file after recovery: %d", rc);
        goto out;
    }
    cfs_unmount(&p.fs);
    rc = cfs_mount(&p.fs, &p.cfg);
    if (rc != 0) {
        why(&o, "remount after recovery: %d", rc);
        goto out;
    }
    uint8_t *got = NULL;
    int n = fsm_read_file(&p.fs, "/after-cut", &got);
    bool same = n == (int)sizeof(buf) && memcmp(got, buf, sizeof(buf)) == 0;
    free(got);
    if (!same) {
        why(&o, "new file after recovery reads back wrong (%d bytes)", n);
        goto out;
    }
    fsm_t *withnew = fsm_clone(now);
    int32_t id = fsm_open(withnew, "/after-cut", CFS_O_WRONLY | CFS_O_CREAT);
    if (id > 0)
        fsm_set_data(withnew, (uint32_t)id, buf, sizeof(buf));
    fsm_cmp_opts_t q = { .quiet = true, .check_fs_counts = true };
    if (fsm_compare(withnew, &p.fs, &q) != 0)
        why(&o, "tree changed after writing a new file post-recovery");
    /* No space leaked. */
    rc = remove_all(&p.fs, withnew);
    fsm_free(withnew);
    if (rc < 0) {
        why(&o, "removing everything after recovery: %d", rc);
        goto out;
    }
    rc = cfs_statvfs(&p.fs, &v);
    if (rc == 0 && (v.files != 0 || v.dirs != 1))
        why(&o, "after removing everything: %u files, %u dirs", v.files, v.dirs);
    if (rc == 0 && v.live > ref->live_ref + LIVE_TOL)
        why(&o, "space leaked: live %" PRIu64 " after removing everything, "
            "reference %" PRIu64, v.live, ref->live_ref);
    if (rc == 0 && v.used > ref->used_ref + USED_TOL)
        why(&o, "space leaked: used %" PRIu64 " after removing everything and gc, "
            "reference %" PRIu64, v.used, ref->used_ref);
    if (rc == 0 && v.free + v.used != v.total)
        why(&o, "statvfs after cleanup: free + used != total");
    rc = cfs_fsck(&p.fs, NULL, NULL);
    if (rc != 0)
        why(&o, "fsck after cleanup: %d", rc);
out:;
    flash_sim_stats_t ss;
    flash_sim_stats(p.sim, &ss);
    if (ss.illegal_progs)
        why(&o, "%" PRIu64 " illegal progs (a 0 bit programmed to 1)", ss.illegal_progs);
    if (!o.ok) {
        fprintf(stderr, "powerloss: FAIL workload %s cut %" PRIu64 " (torn_bits %d%s): %s\n",
                w->name, k, torn_bits, k % 4 == 0 ? ", second cut in recovery" : "",
                o.why);
        fprintf(stderr, "  repro: build/san/tests/test_powerloss --workload %s --cut %"
                PRIu64 " -v\n", w->name, k);
        if (verbose && p.sim && !flash_sim_power_lost(p.sim)) {
            fprintf(stderr, "  interrupted op issued as workload op %u\n", p.opno);
            cfs_t t;
            if (cfs_mount(&t, &p.cfg) == 0) {
                cfs_fsck(&t, fsck_print, NULL);
                fsm_cmp_opts_t vv = { .check_fs_counts = true, .tag = "vs new" };
                fsm_compare(p.m, &t, &vv);
                if (p.alt) {
                    vv.tag = "vs old";
                    fsm_compare(p.alt, &t, &vv);
                }
            }
        }
    }
    if (p.fs.mounted == 1 && o.ok)
        cfs_unmount(&p.fs);
    pl_fini(&p);
    return o.ok;
}

/* Prepare the base image and count the workload's ops. Returns false if the
 * workload cannot run without faults. */
static bool prepare(const workload_t *w, ref_t *ref, bool verbose)
{
    pl_t p;
    memset(ref, 0, sizeof(*ref));
    pl_init(&p, w, 1);
    p.counting = true;
    p.m = fsm_new();
    bool ok = false;
    int rc = cfs_format(&p.fs, &p.cfg);
    if (rc == 0)
        rc = cfs_mount(&p.fs, &p.cfg);
    if (rc != 0) {
        fprintf(stderr, "powerloss: %s: format/mount = %d\n", w->name, rc);
        goto out;
    }
    cfs_statvfs_t v;
    cfs_statvfs(&p.fs, &v);
    uint64_t live_empty = v.live, used_empty = v.used;
    w->base(&p);
    if (!p.dead)
        w_unmount(&p);
    if (p.dead) {
        fprintf(stderr, "powerloss: %s: base state failed: %s = %d\n", w->name,
                p.errwhat, p.err);
        goto out;
    }
    ref->size = flash_sim_size(p.sim);
    ref->image = malloc(ref->size);
    memcpy(ref->image, flash_sim_data(p.sim), ref->size);
    ref->base = fsm_clone(p.m);

    /* Fault-free run. */
    rc = cfs_mount(&p.fs, &p.cfg);
    if (rc != 0) {
        fprintf(stderr, "powerloss: %s: mount of the base = %d\n", w->name, rc);
        goto out;
    }
    p.verbose = verbose;
    uint64_t ops0 = flash_sim_ops(p.sim);
    w->run(&p);
    ref->nops = flash_sim_ops(p.sim) - ops0;
    if (p.dead) {
        fprintf(stderr, "powerloss: %s: workload fails without faults: %s = %d (%s)\n",
                w->name, p.errwhat, p.err, cfs_strerror(p.err));
        goto out;
    }
    /* Check the result, then the cleanup figures of the fault-free run. */
    rc = cfs_mount(&p.fs, &p.cfg);
    fsm_cmp_opts_t o = { .check_fs_counts = true, .tag = w->name };
    if (rc != 0 || fsm_compare(p.m, &p.fs, &o) != 0 || cfs_fsck(&p.fs, NULL, NULL) != 0) {
        fprintf(stderr, "powerloss: %s: fault-free result wrong (mount %d)\n", w->name, rc);
        goto out;
    }
    uint8_t buf[6000];
    fsm_fill(buf, sizeof(buf), 999, 0);
    fsm_write_file(&p.fs, "/after-cut", buf, sizeof(buf));
    cfs_unmount(&p.fs);
    cfs_mount(&p.fs, &p.cfg);
    fsm_t *withnew = fsm_clone(p.m);
    fsm_open(withnew, "/after-cut", CFS_O_WRONLY | CFS_O_CREAT);
    rc = remove_all(&p.fs, withnew);
    fsm_free(withnew);
    cfs_statvfs(&p.fs, &v);
    ref->live_ref = v.live > live_empty ? v.live : live_empty;
    ref->used_ref = v.used > used_empty ? v.used : used_empty;
    if (verbose)
        printf("  %s: empty fs live %" PRIu64 " used %" PRIu64 "; after cleanup live %"
               PRIu64 " used %" PRIu64 "\n", w->name, live_empty, used_empty, v.live,
               v.used);
    cfs_unmount(&p.fs);
    flash_sim_stats_t ss;
    flash_sim_stats(p.sim, &ss);
    if (ss.illegal_progs) {
        fprintf(stderr, "powerloss: %s: illegal progs without faults\n", w->name);
        goto out;
    }
    ok = rc == 0;
out:
    pl_fini(&p);
    return ok;
}

int main(int argc, char **argv)
{
    bool full = false, verbose = false;
    const char *only = NULL;
    uint64_t only_cut = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full"))
            full = true;
        else if (!strcmp(argv[i], "--workload") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--cut") && i + 1 < argc)
            only_cut = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
            verbose = true;
        else {
            fprintf(stderr, "usage: %s [--full] [--workload NAME [--cut K]] [-v]\n",
                    argv[0]);
            return 2;
        }
    }
    uint64_t cuts = 0, recovered = 0, failed = 0;
    bool any = false;
    for (size_t wi = 0; wi < NWORKLOADS; wi++) {
        const workload_t *w = &workloads[wi];
        if (only && strcmp(only, w->name) != 0)
            continue;
        any = true;
        ref_t ref;
        if (!prepare(w, &ref, verbose && only_cut == 0)) {
            failed++;
            check_fail_++;
            fsm_free(ref.base);
            free(ref.image);
            continue;
        }
        uint64_t n = ref.nops, want = n;
        if (!full && !only_cut && w->sample && w->sample < n)
            want = w->sample;
        uint64_t wc = 0, wr = 0, wf = 0, misses = 0;
        for (uint64_t i = 0; i < want; i++) {
            uint64_t k = only_cut ? only_cut
                                  : (want == n ? i + 1 : 1 + i * (n - 1) / (want - 1));
            bool hit;
            bool ok = run_cut(w, &ref, k, verbose, &hit);
            wc++;
            if (ok) {
                wr++;
                check_pass_++;
            } else {
                wf++;
                check_fail_++;
            }
            if (!hit)
                misses++;
            if (only_cut)
                break;
        }
        printf("powerloss: workload %-12s %5" PRIu64 " flash ops, %5" PRIu64
               " cut points%s, %5" PRIu64 " recovered, %" PRIu64 " failed\n",
               w->name, n, wc, want < n ? " (sampled)" : "", wr, wf);
        cuts += wc;
        recovered += wr;
        failed += wf;
        fsm_free(ref.base);
        free(ref.image);
        fflush(stdout);
    }
    if (!any) {
        fprintf(stderr, "powerloss: no workload called %s\n", only ? only : "?");
        return 2;
    }
    int rc = check_summary("test_powerloss");
    printf("powerloss: %" PRIu64 " cuts, %" PRIu64 " recovered, %" PRIu64 " failed\n",
           cuts, recovered, failed);
    return rc || failed ? 1 : 0;
}
