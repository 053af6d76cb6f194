/*
 * test_fs_gcfail.c - a garbage-collection pass that fails under read noise
 * never loses committed data, and the filesystem keeps working after it.
 *
 * A small device is filled nearly full and then churned (whole-file writes,
 * partial writes, truncations, removes, renames, cfs_gc, and a long-lived
 * write handle with pending writes), so that almost every operation runs GC.
 * Two ways of making GC fail:
 *
 *   1. noise: read bit flips at a random density are switched on during
 *      each operation (flash_sim_read_flips), across many seeds;
 *   2. sweep: one operation that runs GC is repeated from the same image
 *      with a fault at its Nth read, for every N (SQLite-style): one
 *      flipped read, every read flipped from N on, or every read failing
 *      from N on (flash_sim_read_fault). Then operations go on without
 *      faults.
 *
 * After every operation (faults off):
 *   - the mounted fs shows one of the states the operation may leave (the
 *     old one or the new one, or a step of it that an automatic sync
 *     committed), never a mix; later steps continue from the one it shows;
 *   - a power cut right then (the image mounted afresh, as it is) shows the
 *     same state: what RAM holds and what the flash holds never diverge;
 *   - fsck is clean; after an unmount and a mount the tree is the same.
 *
 *   test_fs_gcfail                 sampled (make test): 12 noise runs of
 *                                  150 steps, 3 of 400, one sweep sampled
 *   test_fs_gcfail --full          every read of every swept operation, and
 *                                  many more noise seeds (or GCFAIL_FULL=1)
 *   test_fs_gcfail [--runs N] [--sweeps N] [--steps M]   sized in between
 *   test_fs_gcfail --seed N [--steps M] [--density D] [-v]   one noise run
 *   test_fs_gcfail --point SEED OP K MODE     one sweep point (as printed)
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

#define BSIZE 4096u
#define MAXCAND 16
#define MAXVER 24
#define LIVE_PATH "/live"
#define NAMES 12
/* Live data kept at about this share of the device: with the reserve and
 * the GC headroom the rest is mostly stale, so nearly every operation runs
 * GC. */
#define FILL_PCT 45
/* Sweep of weak bits: one every WEAK_STEP bytes, read flipped DAMAGE_LIKE
 * times in a row (the same way each time), one read fewer than the
 * filesystem needs to call it damage (DAMAGE_READS in cfs_internal.h). */
#define WEAK_STEP 61u
#define DAMAGE_LIKE 3u

typedef struct world {
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    uint32_t now;
    uint32_t blocks;
    fsm_t *m;                   /* the state the fs shows */
    fsm_rng_t rng;
    uint32_t tag;
    bool verbose;
    uint64_t seed;
    uint32_t step;
    bool failed;
    /* the long-lived write handle on LIVE_PATH */
    bool live_open;
    cfs_file_t live;
    uint32_t live_node;
    uint8_t *ver[MAXVER];       /* acceptable contents: committed .. newest */
    uint32_t verlen[MAXVER];
    uint32_t nver;
    /* counters */
    uint32_t ops, op_errors, io_errors, gc_errors, nospc, cand_picked_new, cand_picked_old;
    uint32_t cand_partial, cuts_checked, remounts;
    uint64_t settled_reads;     /* read count when the first settle began */
    const char *last_op;
    uint32_t unmount_nospc;     /* unmounts whose checkpoint found no room */
} world_t;

static uint32_t fake_clock(void *ctx)
{
    return ++*(uint32_t *)ctx;
}

static uint32_t rnd(world_t *w, uint32_t n)
{
    return fsm_rng_below(&w->rng, n);
}

static void fail(world_t *w, const char *fmt, ...)
{
    if (!w->failed)
        fprintf(stderr, "test_fs_gcfail: seed %" PRIu64 " blocks %u: failure at step %u\n",
                w->seed, w->blocks, w->step);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    w->failed = true;
    check_fail_++;
}

/* ---- the long-lived handle's acceptable contents ---------------------------------- */

static void ver_clear(world_t *w)
{
    for (uint32_t i = 0; i < w->nver; i++)
        free(w->ver[i]);
    w->nver = 0;
}

static void ver_push(world_t *w, const uint8_t *d, uint32_t len)
{
    if (w->nver == MAXVER) {
        /* keep the committed version and the newest ones */
        free(w->ver[1]);
        memmove(&w->ver[1], &w->ver[2], (MAXVER - 2) * sizeof(w->ver[0]));
        memmove(&w->verlen[1], &w->verlen[2], (MAXVER - 2) * sizeof(w->verlen[0]));
        w->nver--;
    }
    w->ver[w->nver] = malloc(len ? len : 1);
    if (len)
        memcpy(w->ver[w->nver], d, len);
    w->verlen[w->nver++] = len;
}

/* An automatic sync may have committed any prefix of the pending writes. */
static bool accept_live(void *ctx, const fsm_t *m, uint32_t id, const uint8_t *buf, uint32_t len)
{
    world_t *w = ctx;
    (void)m;
    if (!w->live_open || id != w->live_node)
        return false;
    for (uint32_t i = 0; i < w->nver; i++)
        if (w->verlen[i] == len && (len == 0 || memcmp(w->ver[i], buf, len) == 0))
            return true;
    return false;
}

static int compare(world_t *w, const fsm_t *m, cfs_t *fs, bool quiet, const char *tag)
{
    fsm_cmp_opts_t o = { .accept = accept_live, .accept_ctx = w, .quiet = quiet,
                         .check_fs_counts = true, .tag = tag };
    return fsm_compare(m, fs, &o);
}

/* ---- checks -------------------------------------------------------------------------- */

static void fsck_say(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "    fsck: %s\n", line);
}

/* What a power cut now would leave: the image mounted afresh as it is. */
static void check_cut(world_t *w)
{
    flash_sim_config_t sc = { .block_size = BSIZE, .block_count = w->blocks, .seed = 1 };
    flash_sim_t *copy = flash_sim_new(&sc);
    memcpy(flash_sim_data(copy), flash_sim_data(w->sim), flash_sim_size(w->sim));
    cfs_config_t cfg = w->cfg;
    cfg.dev = flash_sim_dev(copy);
    cfs_t fs;
    int rc = cfs_mount(&fs, &cfg);
    w->cuts_checked++;
    if (rc != 0) {
        fail(w, "power-cut view: mount failed: %s", cfs_strerror(rc));
    } else {
        if (compare(w, w->m, &fs, true, NULL) != 0) {
            fail(w, "power-cut view differs from the state the mounted fs shows");
            compare(w, w->m, &fs, false, "    power-cut view");
        }
        if (cfs_fsck(&fs, NULL, NULL) != 0) {
            fail(w, "power-cut view: fsck");
            cfs_fsck(&fs, fsck_say, NULL);
        }
        cfs_unmount(&fs);
    }
    flash_sim_free(copy);
}

/* After an operation, faults off: the fs shows one of cand[0..n) (cand[0] is
 * the state before the operation, the last one the state after it); the
 * model becomes that one. */
static void settle(world_t *w, fsm_t **cand, uint32_t n, const char *what, int rc)
{
    w->last_op = what;
    /* the operation is over: faults off before anything is checked */
    flash_sim_read_flips(w->sim, 0);
    flash_sim_read_fault(w->sim, 0, 0, false);
    flash_sim_read_weak(w->sim, 0, 0, 0);
    if (!w->settled_reads)
        w->settled_reads = flash_sim_reads(w->sim);
    int pick = -1;
    if (rc == 0) {
        /* success: exactly the new state */
        if (compare(w, cand[n - 1], &w->fs, true, NULL) == 0)
            pick = (int)n - 1;
    } else {
        for (uint32_t i = 0; i < n && pick < 0; i++)
            if (compare(w, cand[i], &w->fs, true, NULL) == 0)
                pick = (int)i;
    }
    if (pick < 0) {
        fail(w, "%s (rc %d %s): the fs shows a state the operation may not leave", what, rc,
             rc ? cfs_strerror(rc) : "");
        compare(w, cand[rc == 0 ? n - 1 : 0], &w->fs, false, rc == 0 ? "    vs new" : "    vs old");
        pick = rc == 0 ? (int)n - 1 : 0;
    } else if (rc != 0) {
        if (pick == 0)
            w->cand_picked_old++;
        else if (pick == (int)n - 1)
            w->cand_picked_new++;
        else
            w->cand_partial++;
    }
    fsm_copy(w->m, cand[pick]);
    for (uint32_t i = 0; i < n; i++)
        fsm_free(cand[i]);
    check_cut(w);
}

/* ---- operations -------------------------------------------------------------------------- */

static void pick_name(world_t *w, char *path)
{
    static const char *const dirs[] = { "", "/d0", "/d1" };
    snprintf(path, 64, "%s/f%u", dirs[rnd(w, 3)], rnd(w, NAMES));
}

/* An existing file other than the live one, or -1. */
static int32_t pick_file(world_t *w, char *path)
{
    for (int t = 0; t < 8; t++) {
        uint32_t id = fsm_pick(w->m, CFS_TYPE_FILE, fsm_rng_next(&w->rng));
        if (id == FSM_NONE)
            return -1;
        if (w->live_open && id == w->live_node)
            continue;
        fsm_path(w->m, id, path);
        return (int32_t)id;
    }
    return -1;
}

static uint32_t rand_size(world_t *w)
{
    uint32_t k = rnd(w, 10);
    if (k < 3)
        return rnd(w, 600);
    if (k < 8)
        return rnd(w, 12000);
    return 16000 + rnd(w, 30000);
}

static void count_err(world_t *w, int rc)
{
    if (rc == 0)
        return;
    w->op_errors++;
    if (rc == CFS_ERR_NOSPC)
        w->nospc++;
    else
        w->io_errors++;
}

/* Create or replace a whole file: open (CREAT|TRUNC), 4 KiB writes, close. A
 * failed write drops the pending writes (revert) before the close. */
static int op_put(world_t *w, const char *path, uint32_t len)
{
    fsm_t *cand[MAXCAND];
    uint32_t n = 0;
    uint8_t *b = malloc(len ? len : 1);
    fsm_fill(b, len, ++w->tag, 0);
    cand[n++] = fsm_clone(w->m);
    fsm_t *c = fsm_clone(w->m);
    int32_t id = fsm_open(c, path, CFS_O_WRONLY | CFS_O_CREAT);
    if (id < 0) {
        fsm_free(c);
        free(b);
        fsm_free(cand[0]);
        return id;
    }
    if (fsm_lookup(w->m, path) < 0) {
        cand[n++] = fsm_clone(c); /* created, empty */
    }
    /* an automatic sync may commit the truncation and any whole chunks */
    for (uint32_t k = 0; k * 4096 < len && n + 1 < MAXCAND; k++) {
        fsm_t *p = fsm_clone(c);
        fsm_set_data(p, (uint32_t)id, b, k * 4096);
        cand[n++] = p;
    }
    fsm_set_data(c, (uint32_t)id, b, len);
    cand[n++] = c;
    cfs_file_t f;
    int rc = cfs_file_open(&w->fs, &f, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (rc == 0) {
        for (uint32_t done = 0; done < len && rc == 0;) {
            uint32_t k = len - done > 4096 ? 4096 : len - done;
            int r = cfs_file_write(&w->fs, &f, b + done, k);
            if (r < 0)
                rc = r;
            else
                done += k;
        }
        if (rc != 0)
            (void)cfs_file_revert(&w->fs, &f);
        int rc2 = cfs_file_close(&w->fs, &f);
        if (rc == 0)
            rc = rc2;
    }
    free(b);
    count_err(w, rc);
    settle(w, cand, n, "put", rc);
    return rc;
}

/* A write inside an existing file, then sync. */
static int op_patch(world_t *w)
{
    char path[64];
    int32_t id = pick_file(w, path);
    if (id < 0)
        return 0;
    uint32_t len;
    fsm_data(w->m, (uint32_t)id, &len);
    uint32_t off = rnd(w, len + 1), n = 1 + rnd(w, 3000);
    uint8_t *b = malloc(n);
    fsm_fill(b, n, ++w->tag, off);
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    fsm_write(cand[1], (uint32_t)id, off, b, n);
    cfs_file_t f;
    int rc = cfs_file_open(&w->fs, &f, path, CFS_O_WRONLY);
    if (rc == 0) {
        int r = cfs_file_pwrite(&w->fs, &f, b, n, off);
        rc = r < 0 ? r : 0;
        if (rc == 0)
            rc = cfs_file_sync(&w->fs, &f);
        else
            (void)cfs_file_revert(&w->fs, &f);
        int rc2 = cfs_file_close(&w->fs, &f);
        if (rc == 0)
            rc = rc2;
    }
    free(b);
    count_err(w, rc);
    settle(w, cand, 2, "patch", rc);
    return rc;
}

static int op_truncate(world_t *w)
{
    char path[64];
    int32_t id = pick_file(w, path);
    if (id < 0)
        return 0;
    uint32_t len;
    fsm_data(w->m, (uint32_t)id, &len);
    uint32_t size = rnd(w, len + 1);
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    fsm_truncate(cand[1], (uint32_t)id, size);
    cfs_file_t f;
    int rc = cfs_file_open(&w->fs, &f, path, CFS_O_WRONLY);
    if (rc == 0) {
        rc = cfs_file_truncate(&w->fs, &f, size);
        if (rc != 0)
            (void)cfs_file_revert(&w->fs, &f);
        int rc2 = cfs_file_close(&w->fs, &f);
        if (rc == 0)
            rc = rc2;
    }
    count_err(w, rc);
    settle(w, cand, 2, "truncate", rc);
    return rc;
}

static int op_remove(world_t *w)
{
    char path[64];
    if (pick_file(w, path) < 0)
        return 0;
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    CHECK_EQ(fsm_remove(cand[1], path), 0);
    int rc = cfs_remove(&w->fs, path);
    count_err(w, rc);
    settle(w, cand, 2, "remove", rc);
    return rc;
}

static int op_rename(world_t *w)
{
    char src[64], dst[64];
    if (pick_file(w, src) < 0)
        return 0;
    pick_name(w, dst);
    if (!strcmp(dst, LIVE_PATH))
        return 0;
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    int want = fsm_rename(cand[1], src, dst);
    int rc = cfs_rename(&w->fs, src, dst);
    if (want != 0) {
        /* refused by the rules (a directory in the way): nothing changes */
        if (rc != want && rc != CFS_ERR_IO && rc != CFS_ERR_CORRUPT)
            fail(w, "rename %s %s: %d, expected %d", src, dst, rc, want);
        fsm_free(cand[1]);
        cand[1] = fsm_clone(cand[0]);
    }
    count_err(w, rc == want ? 0 : rc);
    settle(w, cand, 2, "rename", rc == want ? 0 : rc);
    return rc;
}

static int op_gc(world_t *w)
{
    fsm_t *cand[1] = { fsm_clone(w->m) };
    int rc = cfs_gc(&w->fs, rnd(w, 3) == 0 ? 0 : 1 + rnd(w, 6));
    if (rc < 0) {
        w->gc_errors++;
        count_err(w, rc);
    }
    settle(w, cand, 1, "gc", rc < 0 ? rc : 0);
    return rc < 0 ? rc : 0;
}

/* The long-lived handle: open it (with content), write to it, sync it. */
static void live_open(world_t *w)
{
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    int32_t id = fsm_open(cand[1], LIVE_PATH, CFS_O_WRONLY | CFS_O_CREAT);
    CHECK(id > 0);
    int rc = cfs_file_open(&w->fs, &w->live, LIVE_PATH, CFS_O_RDWR | CFS_O_CREAT);
    count_err(w, rc);
    settle(w, cand, 2, "live open", rc);
    if (rc == 0) {
        w->live_open = true;
        w->live_node = (uint32_t)fsm_lookup(w->m, LIVE_PATH);
        uint32_t len;
        const uint8_t *d = fsm_data(w->m, w->live_node, &len);
        ver_clear(w);
        ver_push(w, d, len);
    }
}

static int op_live_write(world_t *w)
{
    if (!w->live_open)
        return 0;
    const uint8_t *cur = w->ver[w->nver - 1];
    uint32_t len = w->verlen[w->nver - 1];
    uint32_t off = rnd(w, len + 2000 > 60000 ? 60000 : len + 2000), n = 1 + rnd(w, 2500);
    uint32_t nlen = off + n > len ? off + n : len;
    uint8_t *nb = calloc(1, nlen);
    memcpy(nb, cur, len);
    fsm_fill(nb + off, n, ++w->tag, off);
    fsm_t *cand[1] = { fsm_clone(w->m) };
    int r = cfs_file_pwrite(&w->fs, &w->live, nb + off, n, off);
    int rc = r < 0 ? r : 0;
    if (rc == 0)
        ver_push(w, nb, nlen);
    free(nb);
    count_err(w, rc);
    /* the committed content may have moved on (an automatic sync): the
     * model follows what the fs shows */
    settle(w, cand, 1, "live write", 0);
    return rc;
}

static int op_live_sync(world_t *w)
{
    if (!w->live_open)
        return 0;
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    fsm_set_data(cand[1], w->live_node, w->ver[w->nver - 1], w->verlen[w->nver - 1]);
    int rc = cfs_file_sync(&w->fs, &w->live);
    if (getenv("GCFAIL_DEBUG")) {
        fprintf(stderr, "live sync rc %d size %d vers:", rc, (int)cfs_file_size(&w->fs, &w->live));
        for (uint32_t i = 0; i < w->nver; i++)
            fprintf(stderr, " %u", w->verlen[i]);
        fprintf(stderr, "\n");
    }
    count_err(w, rc);
    if (rc == 0) {
        uint8_t *d = malloc(w->verlen[w->nver - 1] + 1);
        uint32_t len = w->verlen[w->nver - 1];
        memcpy(d, w->ver[w->nver - 1], len);
        ver_clear(w);
        ver_push(w, d, len);
        free(d);
    }
    settle(w, cand, 2, "live sync", rc);
    return rc;
}

/* The model's content of the live file is whatever version the fs committed:
 * fold it into the model before anything compares exactly. */
static void live_fold(world_t *w, cfs_t *fs)
{
    if (!w->live_open)
        return;
    uint8_t *got = NULL;
    int n = fsm_read_file(fs, LIVE_PATH, &got);
    if (n >= 0 && accept_live(w, w->m, w->live_node, got, (uint32_t)n))
        fsm_set_data(w->m, w->live_node, got, (uint32_t)n);
    free(got);
}

static int live_close(world_t *w)
{
    if (!w->live_open)
        return 0;
    live_fold(w, &w->fs);
    fsm_t *cand[2] = { fsm_clone(w->m), fsm_clone(w->m) };
    fsm_set_data(cand[1], w->live_node, w->ver[w->nver - 1], w->verlen[w->nver - 1]);
    int rc = cfs_file_close(&w->fs, &w->live);
    w->live_open = false;
    count_err(w, rc);
    settle(w, cand, 2, "live close", rc);
    ver_clear(w);
    return rc;
}

static int random_op(world_t *w)
{
    char path[64];
    w->ops++;
    uint32_t k = rnd(w, 100);
    /* keep the device nearly full: past FILL_PCT live, free some */
    cfs_statvfs_t st;
    if (cfs_statvfs(&w->fs, &st) == 0 && st.live * 100 > st.total * FILL_PCT && k < 50)
        k = k < 35 ? 55 : 45;
    if (k < 30) {
        pick_name(w, path);
        if (!strcmp(path, LIVE_PATH))
            return 0;
        return op_put(w, path, rand_size(w));
    }
    if (k < 45)
        return op_patch(w);
    if (k < 52)
        return op_truncate(w);
    if (k < 64)
        return op_remove(w);
    if (k < 72)
        return op_rename(w);
    if (k < 82)
        return op_gc(w);
    if (k < 92)
        return op_live_write(w);
    if (!w->live_open)
        live_open(w);
    return op_live_sync(w);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static void world_init(world_t *w, uint64_t seed, uint32_t blocks, uint32_t gc_free)
{
    memset(w, 0, sizeof(*w));
    w->seed = seed;
    w->blocks = blocks;
    fsm_rng_seed(&w->rng, seed);
    flash_sim_config_t sc = { .block_size = BSIZE, .block_count = blocks, .seed = seed * 7 + 1 };
    w->sim = flash_sim_new(&sc);
    w->now = 1000;
    w->cfg.dev = flash_sim_dev(w->sim);
    w->cfg.clock = fake_clock;
    w->cfg.clock_ctx = &w->now;
    w->cfg.gc_free_blocks = gc_free;
    CHECK_EQ(cfs_format(&w->fs, &w->cfg), 0);
    CHECK_EQ(cfs_mount(&w->fs, &w->cfg), 0);
    w->m = fsm_new();
    CHECK_EQ(cfs_mkdir(&w->fs, "/d0"), 0);
    CHECK_EQ(cfs_mkdir(&w->fs, "/d1"), 0);
    fsm_mkdir(w->m, "/d0");
    fsm_mkdir(w->m, "/d1");
}

static void world_free(world_t *w)
{
    if (w->live_open)
        cfs_file_close(&w->fs, &w->live);
    ver_clear(w);
    cfs_unmount(&w->fs);
    fsm_free(w->m);
    flash_sim_free(w->sim);
}

/* Fill the device until writes meet NOSPC, with the live handle open. */
static void populate(world_t *w)
{
    uint32_t nospc = 0;
    cfs_statvfs_t st;
    for (uint32_t i = 0; i < 400 && nospc < 6 && !w->failed; i++) {
        if (cfs_statvfs(&w->fs, &st) == 0 && st.live * 100 > st.total * FILL_PCT)
            break;
        char path[64];
        pick_name(w, path);
        if (op_put(w, path, rand_size(w)) == CFS_ERR_NOSPC)
            nospc++;
        if (i == 10)
            live_open(w);
        if (i % 7 == 3)
            op_live_write(w);
    }
}

/* Unmount (noise-free), mount again, compare, fsck. */
static void remount_check(world_t *w)
{
    if (w->live_open)
        live_close(w);
    int rc = cfs_unmount(&w->fs);
    if (rc == CFS_ERR_NOSPC)
        w->unmount_nospc++; /* a device full for good (see the report line) */
    else if (rc != 0)
        fail(w, "unmount: %s", cfs_strerror(rc));
    rc = cfs_mount(&w->fs, &w->cfg);
    if (rc != 0) {
        fail(w, "mount: %s", cfs_strerror(rc));
        return;
    }
    w->remounts++;
    if (compare(w, w->m, &w->fs, true, NULL) != 0) {
        fail(w, "after a remount the tree differs");
        compare(w, w->m, &w->fs, false, "    remount");
    }
    if (cfs_fsck(&w->fs, NULL, NULL) != 0) {
        fail(w, "fsck after remount");
        cfs_fsck(&w->fs, fsck_say, NULL);
    }
}

/* ---- 1. noise during operations ---------------------------------------------------------- */

static const uint32_t densities[] = { 3, 5, 8, 13, 20, 35, 60, 100, 250, 1000 };

typedef struct totals {
    uint32_t runs, steps, io_errors, gc_errors, nospc, partial, old, new_, cuts, remounts, points;
    uint32_t stuck; /* runs that ended with a device where a remove gets NOSPC */
    uint32_t unmount_nospc;
    uint64_t max_left; /* most bytes cfs_gc(0) left reclaimable at a run's end */
} totals_t;

static void add_totals(totals_t *t, const world_t *w)
{
    t->runs++;
    t->steps += w->ops;
    t->io_errors += w->io_errors;
    t->gc_errors += w->gc_errors;
    t->nospc += w->nospc;
    t->partial += w->cand_partial;
    t->old += w->cand_picked_old;
    t->new_ += w->cand_picked_new;
    t->cuts += w->cuts_checked;
    t->remounts += w->remounts;
    t->unmount_nospc += w->unmount_nospc;
}

static bool noise_run(uint64_t seed, uint32_t steps, uint32_t density, bool verbose, totals_t *t)
{
    world_t *w = calloc(1, sizeof(*w));
    world_init(w, seed, 40 + (uint32_t)(seed % 3) * 12, 0);
    w->verbose = verbose;
    populate(w);
    for (w->step = 0; w->step < steps && !w->failed; w->step++) {
        uint32_t d = density ? density : densities[rnd(w, sizeof(densities) / sizeof(densities[0]))];
        flash_sim_read_flips(w->sim, d);
        int rc = random_op(w);
        flash_sim_read_flips(w->sim, 0);
        if (verbose) {
            cfs_statvfs_t st;
            cfs_statvfs(&w->fs, &st);
            fprintf(stderr, "step %u: density %u %s rc %d (free %" PRIu64 " used %" PRIu64 " live %" PRIu64
                   ", %u files, live handle %s)\n", w->step, d, w->last_op, rc, st.free, st.used,
                   st.live, st.files, w->live_open ? "open" : "closed");
        }
        if (w->step % 40 == 39)
            remount_check(w);
    }
    if (!w->failed) {
        remount_check(w);
        /* Without noise the device can always be emptied: a remove works,
         * and GC gives the space back (docs/FS.md, sections 6 and 7: a
         * pass moves a block for about what the block holds). */
        int rc = live_close(w);
        CHECK_EQ(rc, 0);
        cfs_gc(&w->fs, 0);
        rc = op_remove(w);
        if (rc == CFS_ERR_NOSPC)
            t->stuck++;
        if (rc != 0)
            fail(w, "a remove after the noise stopped: %d", rc);
        CHECK_EQ(rc, 0);
        cfs_statvfs_t st;
        int g = cfs_gc(&w->fs, 0);
        CHECK(g >= 0);
        CHECK_EQ(cfs_statvfs(&w->fs, &st), 0);
        /* used - live after a full collection: the head block, the map
         * pages and checkpoint, record headers (seen: up to 3.1 blocks) */
        if (st.reclaimable > 4ull * BSIZE)
            fail(w, "after cfs_gc(0): %" PRIu64 " bytes reclaimable (used %" PRIu64 ", live %" PRIu64
                 ")", st.reclaimable, st.used, st.live);
        if (st.reclaimable > t->max_left)
            t->max_left = st.reclaimable;
    }
    bool ok = !w->failed;
    if (!ok)
        fprintf(stderr, "  (rerun: test_fs_gcfail --seed %" PRIu64 " --steps %u)\n", seed, steps);
    add_totals(t, w);
    world_free(w);
    free(w);
    return ok;
}

/* ---- 2. a fault at every read of one operation ------------------------------------------ */

typedef enum { OP_GC_ALL, OP_GC_SOME, OP_PUT, OP_REMOVE, OP_LIVE_SYNC, OP_KINDS } sweep_op_t;
static const char *const op_names[] = { "cfs_gc(0)", "cfs_gc(4)", "put", "remove", "live sync" };

static int run_sweep_op(world_t *w, sweep_op_t op)
{
    switch (op) {
    case OP_GC_ALL: {
        fsm_t *c[1] = { fsm_clone(w->m) };
        int rc = cfs_gc(&w->fs, 0);
        settle(w, c, 1, "gc", rc < 0 ? rc : 0);
        return rc < 0 ? rc : 0;
    }
    case OP_GC_SOME: {
        fsm_t *c[1] = { fsm_clone(w->m) };
        int rc = cfs_gc(&w->fs, 4);
        settle(w, c, 1, "gc", rc < 0 ? rc : 0);
        return rc < 0 ? rc : 0;
    }
    case OP_PUT: return op_put(w, "/d1/sweep", 9000);
    case OP_REMOVE: {
        /* the biggest file other than the live one */
        char path[CFS_PATH_MAX + 2];
        uint32_t best = 0, best_len = 0;
        for (uint32_t i = 1; i < w->m->nnodes; i++) {
            uint32_t len;
            if (!w->m->node[i].used || w->m->node[i].type != CFS_TYPE_FILE ||
                (w->live_open && i == w->live_node))
                continue;
            fsm_data(w->m, i, &len);
            if (!best || len > best_len) {
                best = i;
                best_len = len;
            }
        }
        if (!best)
            return 0;
        fsm_path(w->m, best, path);
        fsm_t *c[2] = { fsm_clone(w->m), fsm_clone(w->m) };
        CHECK_EQ(fsm_remove(c[1], path), 0);
        int rc = cfs_remove(&w->fs, path);
        settle(w, c, 2, "remove", rc);
        return rc;
    }
    case OP_LIVE_SYNC:
    default: return op_live_sync(w);
    }
}

/* Build the base: a nearly full device with a live handle holding pending
 * writes over committed data. Returns the world (mounted). */
static world_t *sweep_base(uint64_t seed)
{
    world_t *w = calloc(1, sizeof(*w));
    /* GC late while the base is built, so that stale data piles up */
    world_init(w, seed, 48, 6);
    populate(w);
    if (w->live_open)
        live_close(w);
    /* overwrites, patches and a few removes: stale data for GC */
    for (uint32_t i = 0; i < 14 && !w->failed; i++) {
        char path[64];
        pick_name(w, path);
        op_put(w, path, rand_size(w) / 2);
        op_patch(w);
        if (i % 5 == 4)
            op_remove(w);
    }
    return w;
}

/* One sweep point: from the base image, mount, reopen the live handle with
 * pending writes, fault at read k (mode 0: that read flipped, 1: every read
 * from k on flipped, 2: every read from k on failing), run the operation,
 * then go on with operations, and check. Returns the reads the operation
 * made (to size the sweep). */
static uint64_t sweep_point(const world_t *base, const uint8_t *image, uint64_t seed,
                            sweep_op_t op, uint64_t k, int mode, bool *failed, totals_t *t)
{
    world_t *w = calloc(1, sizeof(*w));
    w->seed = seed;
    w->blocks = base->blocks;
    fsm_rng_seed(&w->rng, seed * 31 + k);
    flash_sim_config_t sc = { .block_size = BSIZE, .block_count = base->blocks, .seed = k + 1 };
    w->sim = flash_sim_new(&sc);
    memcpy(flash_sim_data(w->sim), image, flash_sim_size(w->sim));
    w->now = 5000;
    w->cfg.dev = flash_sim_dev(w->sim);
    w->cfg.clock = fake_clock;
    w->cfg.clock_ctx = &w->now;
    w->cfg.gc_free_blocks = 12; /* GC early: every operation runs some */
    w->m = fsm_clone(base->m);
    w->tag = 100000;
    CHECK_EQ(cfs_mount(&w->fs, &w->cfg), 0);
    live_open(w);
    for (int i = 0; i < 4; i++)
        op_live_write(w);
    uint64_t r0 = flash_sim_reads(w->sim);
    if (k && mode == 3)
        flash_sim_read_weak(w->sim, k * WEAK_STEP, (int)(k % 8), DAMAGE_LIKE);
    else if (k)
        flash_sim_read_fault(w->sim, k, mode == 0 ? k : UINT64_MAX, mode == 2);
    w->settled_reads = 0;
    int rc = run_sweep_op(w, op);
    flash_sim_read_fault(w->sim, 0, 0, false);
    uint64_t reads = (w->settled_reads ? w->settled_reads : flash_sim_reads(w->sim)) - r0;
    if (rc == CFS_ERR_IO || rc == CFS_ERR_CORRUPT)
        w->io_errors++;
    if (k) {
        /* operations go on */
        for (int i = 0; i < 12 && !w->failed; i++)
            random_op(w);
        remount_check(w);
    }
    if (w->failed)
        fprintf(stderr, "  (sweep: seed %" PRIu64 ", %s, fault at read %" PRIu64 ", mode %d: "
                "--point %" PRIu64 " %d %" PRIu64 " %d)\n",
                seed, op_names[op], k, mode, seed, (int)op, k, mode);
    *failed = w->failed;
    add_totals(t, w);
    t->points++;
    world_free(w);
    free(w);
    return reads;
}

static void sweep(uint64_t seed, bool full, uint32_t per_mode, totals_t *t)
{
    world_t *base = sweep_base(seed);
    if (base->failed) {
        world_free(base);
        free(base);
        return;
    }
    CHECK_EQ(cfs_unmount(&base->fs), 0);
    uint8_t *image = malloc(flash_sim_size(base->sim));
    memcpy(image, flash_sim_data(base->sim), flash_sim_size(base->sim));
    CHECK_EQ(cfs_mount(&base->fs, &base->cfg), 0);
    if (getenv("GCFAIL_DEBUG")) {
        cfs_statvfs_t st;
        cfs_statvfs(&base->fs, &st);
        fprintf(stderr, "sweep base: free %" PRIu64 " used %" PRIu64 " live %" PRIu64 "\n", st.free,
                st.used, st.live);
    }
    for (int op = 0; op < OP_KINDS; op++) {
        bool failed = false;
        uint64_t reads = sweep_point(base, image, seed, (sweep_op_t)op, 0, 0, &failed, t);
        t->points--;
        /* sampled: about PER_MODE points per operation and mode */
        uint32_t nfail = 0;
        uint64_t npoints = 0;
        for (int mode = 0; mode < 4; mode++) {
            uint64_t last = mode == 3 ? flash_sim_size(base->sim) / WEAK_STEP : reads + 1;
            uint64_t stride = full ? 1 : (last / per_mode ? last / per_mode : 1);
            for (uint64_t k = 1 + (seed + (uint64_t)mode) % stride; k <= last; k += stride) {
                sweep_point(base, image, seed, (sweep_op_t)op, k, mode, &failed, t);
                npoints++;
                if (failed && ++nfail >= 3)
                    goto next;
            }
        }
    next:
        printf("test_fs_gcfail: sweep seed %" PRIu64 " %-9s: %" PRIu64 " reads, %" PRIu64
               " fault points, %u failed\n", seed, op_names[op], reads, npoints, nfail);
    }
    free(image);
    world_free(base);
    free(base);
}

int main(int argc, char **argv)
{
    bool full = false, verbose = false, one = false;
    uint64_t seed = 0;
    uint32_t steps = 150, density = 0;
    int point_op = -1, point_mode = 0;
    uint32_t nruns = 0, nsweeps = 0;
    uint64_t point_k = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--full"))
            full = true;
        else if (!strcmp(argv[i], "-v"))
            verbose = true;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            one = true;
        } else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--point") && i + 4 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            point_op = atoi(argv[++i]);
            point_k = strtoull(argv[++i], NULL, 0);
            point_mode = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            nruns = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--sweeps") && i + 1 < argc)
            nsweeps = (uint32_t)strtoul(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--density") && i + 1 < argc)
            density = (uint32_t)strtoul(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: test_fs_gcfail [--full] [--runs N] [--sweeps N] [--steps M]\n"
                            "       test_fs_gcfail --seed N [--steps M] [--density D] [-v]\n"
                            "       test_fs_gcfail --point SEED OP K MODE\n");
            return 2;
        }
    }
    /* a line at a time, also into a file: the full run takes long, and
     * its sweep lines are its progress */
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *env = getenv("GCFAIL_FULL");
    if (env && *env && strcmp(env, "0"))
        full = true;
    totals_t t = { 0 };
    if (point_op >= 0) {
        world_t *base = sweep_base(seed);
        CHECK_EQ(cfs_unmount(&base->fs), 0);
        uint8_t *image = malloc(flash_sim_size(base->sim));
        memcpy(image, flash_sim_data(base->sim), flash_sim_size(base->sim));
        bool failed;
        sweep_point(base, image, seed, (sweep_op_t)point_op, point_k, point_mode, &failed, &t);
        free(image);
        CHECK_EQ(cfs_mount(&base->fs, &base->cfg), 0);
        world_free(base);
        free(base);
        return check_summary("test_fs_gcfail");
    }
    if (one) {
        noise_run(seed, steps, density, verbose, &t);
        printf("test_fs_gcfail: seed %" PRIu64 ": %u steps, %u NOSPC, %u I/O errors, %s\n", seed,
               t.steps, t.nospc, t.io_errors, t.stuck ? "ended full for good" : "a remove works at the end");
        return check_summary("test_fs_gcfail");
    }
    /* 1. noise */
    uint32_t runs = nruns ? nruns : full ? 400 : 12, bad = 0;
    for (uint32_t s = 1; s <= runs && bad < 5; s++) {
        if (!noise_run(s, full ? 400 : steps, 0, false, &t))
            bad++;
        if (runs >= 100 && s % 100 == 0)
            printf("test_fs_gcfail: noise: %u of %u runs, %u failed so far\n", s, runs, bad);
    }
    /* The runs of the --full set that found data loss under heavy noise
     * (the same flip on both reads of a value read twice: a remove's
     * commit that followed a stale chain, a GC rebuild that made a hole of
     * an extent misread by 32), run in every sampled set too. They
     * stopped failing with those fixes; a change that alters the reads
     * also alters where their noise falls. */
    static const uint32_t hard[] = { 107, 209, 399 };
    for (uint32_t i = 0; !full && !nruns && i < sizeof(hard) / sizeof(hard[0]); i++)
        if (!noise_run(hard[i], 400, 0, false, &t))
            bad++;
    printf("test_fs_gcfail: noise: %u runs, %u steps, %u I/O errors (%u from cfs_gc), %u NOSPC; "
           "failed operations left: %u old, %u new, %u partly synced; %u power-cut views, "
           "%u remounts; %u runs failed; %u ended full for good (a remove gets NOSPC), "
           "%u unmounts found no room for their checkpoint; at the end cfs_gc(0) left at most "
           "%" PRIu64 " bytes reclaimable\n",
           t.runs, t.steps, t.io_errors, t.gc_errors, t.nospc, t.old, t.new_, t.partial, t.cuts,
           t.remounts, bad, t.stuck, t.unmount_nospc, t.max_left);
    CHECK_EQ(t.stuck, 0);
    /* 2. a fault at each read */
    totals_t s = { 0 };
    uint32_t nseeds = nsweeps ? nsweeps : full ? 6 : 1;
    for (uint32_t k = 1; k <= nseeds; k++)
        sweep(100 + k, full, 12, &s);
    printf("test_fs_gcfail: read-fault sweep: %u points, %u steps after them, %u I/O errors; "
           "failed operations left: %u old, %u new, %u partly synced; %u power-cut views\n",
           s.points, s.steps, s.io_errors, s.old, s.new_, s.partial, s.cuts);
    return check_summary("test_fs_gcfail");
}
