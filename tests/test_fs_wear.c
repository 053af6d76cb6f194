/*
 * test_fs_wear.c - wear-out and bad blocks.
 *
 *   1. flash_sim_wear_limit: every block dies after a few dozen erases. A
 *      long churn (rewrites, appends, renames, removes) runs until the fs
 *      stops accepting writes. Meanwhile the fs must retire dying blocks and
 *      keep serving (statvfs.bad_blocks grows, total shrinks or free
 *      shrinks), every remount shows exactly the committed tree (a file whose
 *      write failed is in its old or its new state), fsck stays clean. When
 *      too many blocks are gone, writes fail cleanly with NOSPC or ROFS
 *      (never CORRUPT), the data already committed still reads back, and
 *      the fs still mounts.
 *   2. flash_sim_fail_block: single blocks go bad at chosen moments (one
 *      holding live data, the head block); the fs carries on, data intact.
 *   3. static wear levelling: with half the data never rewritten, a long
 *      churn without a wear limit keeps the erase counts of the blocks
 *      holding static data moving (the brief promises static levelling).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "flash_sim.h"
#include "cfs.h"
#include "cfs_model.h"

typedef struct wr {
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    uint32_t now;
    uint32_t blocks;
    fsm_t *m;       /* committed */
    fsm_t *alt;     /* committed if the last failed op took effect */
    char alt_path[64]; /* the file a failed put was writing */
    fsm_rng_t rng;
} wr_t;

static uint32_t fake_clock(void *ctx)
{
    return ++*(uint32_t *)ctx;
}

static void wr_init(wr_t *w, uint32_t blocks, uint64_t seed)
{
    memset(w, 0, sizeof(*w));
    flash_sim_config_t sc = { .block_size = 4096, .block_count = blocks, .seed = seed };
    w->sim = flash_sim_new(&sc);
    w->blocks = blocks;
    w->now = 1;
    w->cfg.dev = flash_sim_dev(w->sim);
    w->cfg.clock = fake_clock;
    w->cfg.clock_ctx = &w->now;
    w->m = fsm_new();
    fsm_rng_seed(&w->rng, seed);
    CHECK_EQ(cfs_format(&w->fs, &w->cfg), 0);
    CHECK_EQ(cfs_mount(&w->fs, &w->cfg), 0);
}

static void wr_fini(wr_t *w)
{
    if (w->fs.mounted)
        cfs_unmount(&w->fs);
    flash_sim_stats_t ss;
    flash_sim_stats(w->sim, &ss);
    CHECK_EQ(ss.illegal_progs, 0);
    flash_sim_free(w->sim);
    fsm_free(w->m);
    fsm_free(w->alt);
}

/* Accept for a file the content it has in alt (old-or-new of a failed op). */
static bool accept_alt(void *ctx, const fsm_t *m, uint32_t id, const uint8_t *buf,
                       uint32_t len)
{
    const wr_t *w = ctx;
    (void)m;
    if (!w->alt || id >= w->alt->nnodes || !w->alt->node[id].used)
        return false;
    uint32_t l;
    const uint8_t *d = fsm_data(w->alt, id, &l);
    if (l == len && (len == 0 || memcmp(d, buf, len) == 0))
        return true;
    /* a put that failed half-way: created (or truncated), and the 4 KiB
     * chunks written before the failure committed by its close */
    if (len < l && len % 4096 == 0 && (len == 0 || memcmp(d, buf, len) == 0))
        return true;
    /* the old content, compared against alt */
    if (id < w->m->nnodes && w->m->node[id].used) {
        d = fsm_data(w->m, id, &l);
        return l == len && (len == 0 || memcmp(d, buf, len) == 0);
    }
    return false;
}

/* Remount and compare; returns the mismatches. */
static int wr_check(wr_t *w, const char *when)
{
    int rc = cfs_unmount(&w->fs);
    /* unmount may fail on a worn device; the committed state must hold */
    (void)rc;
    memset(&w->fs, 0x77, sizeof(w->fs));
    rc = cfs_mount(&w->fs, &w->cfg);
    if (rc != 0) {
        fprintf(stderr, "test_fs_wear: %s: mount = %d\n", when, rc);
        CHECK_EQ(rc, 0);
        return 1;
    }
    fsm_cmp_opts_t o = { .accept = accept_alt, .accept_ctx = w, .tag = when };
    int bad;
    if (w->alt) {
        /* the failed put created its file (it may be in alt only) */
        fsm_cmp_opts_t qa = { .accept = accept_alt, .accept_ctx = w, .quiet = true };
        if (fsm_compare(w->m, &w->fs, &qa) != 0 && fsm_compare(w->alt, &w->fs, &qa) == 0) {
            fsm_copy(w->m, w->alt);
            uint8_t *got = NULL;
            int32_t id = fsm_lookup(w->m, w->alt_path);
            int n = fsm_read_file(&w->fs, w->alt_path, &got);
            if (id > 0 && n >= 0)
                fsm_set_data(w->m, (uint32_t)id, got, (uint32_t)n);
            free(got);
        }
    }
    bad = fsm_compare(w->m, &w->fs, &o);
    CHECK_EQ(bad, 0);
    int fr = cfs_fsck(&w->fs, NULL, NULL);
    if (fr != 0)
        fprintf(stderr, "test_fs_wear: %s: fsck = %d\n", when, fr);
    CHECK_EQ(fr, 0);
    /* What we now see is committed: adopt the fs's choice for alt files. */
    if (w->alt) {
        fsm_cmp_opts_t q = { .quiet = true };
        if (fsm_compare(w->m, &w->fs, &q) != 0 && fsm_compare(w->alt, &w->fs, &q) == 0)
            fsm_copy(w->m, w->alt);
        fsm_free(w->alt);
        w->alt = NULL;
    }
    return bad + (fr != 0);
}

/* Rewrite (or create) a file with put semantics; model old-or-new on error. */
static int wr_put(wr_t *w, const char *path, uint32_t len, uint32_t tag)
{
    uint8_t *b = malloc(len ? len : 1);
    fsm_fill(b, len, tag, 0);
    fsm_t *post = fsm_clone(w->m);
    int32_t id = fsm_open(post, path, CFS_O_WRONLY | CFS_O_CREAT);
    if (id > 0)
        fsm_set_data(post, (uint32_t)id, b, len);
    int rc = fsm_write_file(&w->fs, path, b, len);
    free(b);
    if (rc == 0) {
        fsm_free(w->m);
        w->m = post;
    } else {
        /* A failed put leaves the old file or the new one, or (put opens
         * with TRUNC; the open itself is committed) an empty new file. */
        fsm_free(w->alt);
        w->alt = post;
        snprintf(w->alt_path, sizeof(w->alt_path), "%s", path);
    }
    return rc;
}

static bool bad_err(int rc)
{
    return rc == CFS_ERR_NOSPC || rc == CFS_ERR_ROFS || rc == CFS_ERR_IO;
}

static void test_wear_out(void)
{
    wr_t w;
    wr_init(&w, 40, 21);
    flash_sim_wear_limit(w.sim, 30);
    cfs_statvfs_t v0, v;
    CHECK_EQ(cfs_statvfs(&w.fs, &v0), 0);

    /* Static data that must survive until the very end. */
    CHECK_EQ(cfs_mkdir(&w.fs, "/keep"), 0);
    fsm_mkdir(w.m, "/keep");
    CHECK_EQ(wr_put(&w, "/keep/a", 9000, 1), 0);
    CHECK_EQ(wr_put(&w, "/keep/b", 3000, 2), 0);

    uint32_t ops = 0, fails = 0, remounts = 0, max_bad = 0, first_bad_op = 0;
    int last_err = 0;
    uint32_t consecutive = 0;
    for (uint32_t i = 0; i < 20000 && consecutive < 12; i++) {
        char name[32];
        uint32_t k = fsm_rng_below(&w.rng, 10);
        snprintf(name, sizeof(name), "/f%u", fsm_rng_below(&w.rng, 6));
        int rc;
        if (k < 7) {
            rc = wr_put(&w, name, 500 + fsm_rng_below(&w.rng, 6000), 100 + i);
        } else if (k < 8) {
            char to[32];
            snprintf(to, sizeof(to), "/f%u", fsm_rng_below(&w.rng, 6));
            fsm_t *post = fsm_clone(w.m);
            int want = fsm_rename(post, name, to);
            rc = cfs_rename(&w.fs, name, to);
            if (rc == 0 && want == 0) {
                fsm_free(w.m);
                w.m = post;
            } else if (rc == want) {
                fsm_free(post);
                rc = 0;
            } else if (want == 0) {
                fsm_free(w.alt);
                w.alt = post;
            } else {
                fsm_free(post);
                fprintf(stderr, "test_fs_wear: rename %s %s = %d, model %d\n", name, to,
                        rc, want);
                CHECK(false);
                rc = 0;
            }
        } else {
            fsm_t *post = fsm_clone(w.m);
            int want = fsm_remove(post, name);
            rc = cfs_remove(&w.fs, name);
            if (rc == want) {
                fsm_free(w.m);
                w.m = post;
                rc = 0;
            } else {
                if (want == 0) {
                    fsm_free(w.alt);
                    w.alt = post;
                } else {
                    fsm_free(post);
                }
            }
        }
        ops++;
        if (rc < 0) {
            fails++;
            consecutive++;
            last_err = rc;
            if (!bad_err(rc)) {
                fprintf(stderr, "test_fs_wear: op %u failed with %d (%s)\n", i, rc,
                        cfs_strerror(rc));
                CHECK(bad_err(rc));
            }
        } else {
            consecutive = 0;
        }
        CHECK_EQ(cfs_statvfs(&w.fs, &v), 0);
        if (v.bad_blocks > max_bad) {
            if (!max_bad)
                first_bad_op = i;
            max_bad = v.bad_blocks;
        }
        CHECK_EQ(v.free + v.used, v.total);
        if (i % 97 == 0 || rc < 0) {
            char when[48];
            snprintf(when, sizeof(when), "wear op %u", i);
            if (wr_check(&w, when) != 0)
                break;
            remounts++;
        }
    }
    CHECK(max_bad > 0);
    CHECK(first_bad_op > 0);
    CHECK(consecutive >= 12); /* it did wear out in the end */
    CHECK(last_err == CFS_ERR_NOSPC || last_err == CFS_ERR_ROFS);
    /* Worn out: still mounts, committed data intact, reads work. */
    wr_check(&w, "worn out");
    CHECK_EQ(cfs_statvfs(&w.fs, &v), 0);
    CHECK(v.bad_blocks > 0);
    int rc = wr_put(&w, "/more", 3000, 9);
    CHECK(rc == CFS_ERR_NOSPC || rc == CFS_ERR_ROFS || rc == 0);
    wr_check(&w, "worn out, after one more write");
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(&w.fs, "/keep/a", &got), 9000);
    free(got);
    flash_sim_wear_t sw;
    flash_sim_wear(w.sim, &sw);
    printf("test_fs_wear: wear-out: %u ops (%u failed, last %d), %u remounts, "
           "first bad block at op %u, %u blocks retired, erases total %" PRIu64
           " (min %u max %u)\n", ops, fails, last_err, remounts, first_bad_op, v.bad_blocks,
           sw.total, sw.min, sw.max);
    wr_fini(&w);
}

static void test_fail_block(void)
{
    wr_t w;
    wr_init(&w, 48, 22);
    CHECK_EQ(wr_put(&w, "/a", 20000, 1), 0);
    CHECK_EQ(wr_put(&w, "/b", 5000, 2), 0);
    wr_check(&w, "before bad blocks");

    /* A block holding live data of /a goes bad (it is still readable; the fs
     * must move the data away when it next needs to erase or write it). */
    uint8_t pat[32];
    fsm_fill(pat, sizeof(pat), 1, 8000);
    const uint8_t *img = flash_sim_data(w.sim);
    uint64_t size = flash_sim_size(w.sim);
    int64_t at = -1;
    for (uint64_t i = 0; i + sizeof(pat) <= size; i++)
        if (img[i] == pat[0] && memcmp(img + i, pat, sizeof(pat)) == 0) {
            at = (int64_t)i;
            break;
        }
    CHECK(at >= 0);
    if (at >= 0)
        flash_sim_fail_block(w.sim, (uint32_t)(at / 4096));

    /* The head block goes bad at a random moment too, then more. */
    uint32_t failed_blocks = 1;
    for (uint32_t i = 0; i < 600; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/c%u", i % 5);
        int rc = wr_put(&w, name, 700 + i * 37 % 4000, 10 + i);
        if (rc < 0) {
            CHECK(bad_err(rc));
            wr_check(&w, "after a failed write");
        }
        if (i == 150 || i == 300 || i == 450) {
            /* Fail the block of the most recently written data. */
            fsm_fill(pat, sizeof(pat), 10 + i, 0);
            for (uint64_t j = 0; j + sizeof(pat) <= size; j++)
                if (img[j] == pat[0] && memcmp(img + j, pat, sizeof(pat)) == 0) {
                    flash_sim_fail_block(w.sim, (uint32_t)(j / 4096));
                    failed_blocks++;
                    break;
                }
        }
        if (i % 50 == 49)
            wr_check(&w, "with bad blocks");
    }
    wr_check(&w, "end of bad-block run");
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&w.fs, &v), 0);
    CHECK(v.bad_blocks >= 1);
    CHECK(v.bad_blocks <= failed_blocks);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(&w.fs, "/a", &got), 20000);
    free(got);
    printf("test_fs_wear: bad blocks: %u blocks failed, %u retired by the fs\n",
           failed_blocks, v.bad_blocks);
    wr_fini(&w);
}

static void test_static_levelling(void)
{
    wr_t w;
    wr_init(&w, 32, 23);
    /* Static data: about a third of the partition, written once. */
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/static%d", i);
        CHECK_EQ(wr_put(&w, name, 8000, 50 + (uint32_t)i), 0);
    }
    for (uint32_t i = 0; i < 1500; i++) {
        char name[32];
        snprintf(name, sizeof(name), "/hot%u", i % 3);
        CHECK_EQ(wr_put(&w, name, 3000, 60 + i), 0);
    }
    wr_check(&w, "static levelling");
    /* Per-block erase counts from the simulator, over the data blocks
     * (blocks 0 and 1 of the partition are anchors, excluded). */
    uint32_t mn = UINT32_MAX, mx = 0;
    uint64_t sum = 0;
    for (uint32_t b = 2; b < w.blocks; b++) {
        uint32_t e = flash_sim_erase_count(w.sim, b);
        mn = e < mn ? e : mn;
        mx = e > mx ? e : mx;
        sum += e;
    }
    uint32_t mean = (uint32_t)(sum / (w.blocks - 2));
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&w.fs, &v), 0);
    printf("test_fs_wear: static levelling: data-block erases min %u mean %u max %u; "
           "statvfs min %u mean %u max %u\n", mn, mean, mx, v.erase_min, v.erase_mean,
           v.erase_max);
    /* Every block took part: the static blocks were moved. */
    CHECK(mn > 0);
    CHECK(mn * 4 >= mean);
    /* statvfs figures agree with the device (they may lag by one erase). */
    CHECK(v.erase_max <= mx + 1 && v.erase_max + 2 >= mx);
    CHECK(v.erase_min <= v.erase_mean && v.erase_mean <= v.erase_max);
    wr_fini(&w);
}

int main(void)
{
    test_fail_block();
    test_static_levelling();
    test_wear_out();
    return check_summary("test_fs_wear");
}
