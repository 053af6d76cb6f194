/*
 * test_fs_unit.c - unit tests of every call of fs/cfs.h and its error paths,
 * on the RAM flash simulator.
 *
 * Each test formats a fresh small partition, exercises one area and checks
 * the results after a remount too (what was synced must be there, what the
 * API promises of the error paths must hold). Times come from a fake clock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "flash_sim.h"
#include "cfs.h"
#include "cfs_internal.h" /* record layout, for the noise tests below */
#include "cfs_model.h"

/* ---- fixture ------------------------------------------------------------------ */
typedef struct fx {
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    uint32_t now; /* fake clock, seconds */
} fx_t;

static uint32_t fake_clock(void *ctx)
{
    return *(const uint32_t *)ctx;
}

static fx_t *fx_new(uint32_t blocks)
{
    fx_t *x = calloc(1, sizeof(*x));
    flash_sim_config_t sc = { .block_size = 4096, .block_count = blocks,
                              .seed = 42 };
    x->sim = flash_sim_new(&sc);
    if (!x->sim) {
        fprintf(stderr, "flash_sim_new failed\n");
        exit(1);
    }
    x->now = 1000;
    x->cfg.dev = flash_sim_dev(x->sim);
    x->cfg.clock = fake_clock;
    x->cfg.clock_ctx = &x->now;
    int rc = cfs_format(&x->fs, &x->cfg);
    CHECK_EQ(rc, 0);
    rc = cfs_mount(&x->fs, &x->cfg);
    CHECK_EQ(rc, 0);
    return x;
}

static void fx_free(fx_t *x)
{
    if (!x)
        return;
    if (x->fs.mounted)
        cfs_unmount(&x->fs);
    flash_sim_stats_t st;
    flash_sim_stats(x->sim, &st);
    CHECK_EQ(st.illegal_progs, 0);
    flash_sim_free(x->sim);
    free(x);
}

/* Unmount and mount again; everything synced must still be there. */
static void fx_remount(fx_t *x)
{
    CHECK_EQ(cfs_unmount(&x->fs), 0);
    memset(&x->fs, 0xa5, sizeof(x->fs)); /* no state survives in RAM */
    CHECK_EQ(cfs_mount(&x->fs, &x->cfg), 0);
}

static void fsck_clean(fx_t *x, int line)
{
    int rc = cfs_fsck(&x->fs, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "test_fs_unit.c:%d: fsck returned %d\n", line, rc);
    CHECK_EQ(rc, 0);
}
#define FSCK(x) fsck_clean((x), __LINE__)

static int put_file(fx_t *x, const char *path, uint32_t len, uint32_t tag)
{
    uint8_t *b = malloc(len ? len : 1);
    fsm_fill(b, len, tag, 0);
    int rc = fsm_write_file(&x->fs, path, b, len);
    free(b);
    return rc;
}

/* Does the file at path hold exactly fill(tag) of len bytes? */
static bool file_is(fx_t *x, const char *path, uint32_t len, uint32_t tag)
{
    uint8_t *got = NULL;
    int n = fsm_read_file(&x->fs, path, &got);
    bool ok = n == (int)len;
    if (ok && len) {
        uint8_t *want = malloc(len);
        fsm_fill(want, len, tag, 0);
        ok = memcmp(got, want, len) == 0;
        free(want);
    }
    if (!ok)
        fprintf(stderr, "  %s: read %d bytes, expected %u (tag %u)\n", path, n,
                len, tag);
    free(got);
    return ok;
}

static bool exists(fx_t *x, const char *path)
{
    cfs_stat_t st;
    return cfs_stat(&x->fs, path, &st) == 0;
}

static void report_line(void *ctx, const char *line)
{
    int *n = ctx;
    (*n)++;
    fprintf(stderr, "  fsck: %s\n", line);
}

/* ---- lifecycle ---------------------------------------------------------------- */
static void test_lifecycle(void)
{
    flash_sim_config_t sc = { .block_size = 4096, .block_count = 64 };
    flash_sim_t *sim = flash_sim_new(&sc);
    cfs_config_t cfg = { .dev = flash_sim_dev(sim) };
    cfs_t fs;

    /* Blank flash: no filesystem. */
    CHECK_EQ(cfs_mount(&fs, &cfg), CFS_ERR_NOTMOUNTED);

    /* Bad configurations. */
    cfs_config_t bad = cfg;
    bad.dev = NULL;
    CHECK_EQ(cfs_format(&fs, &bad), CFS_ERR_INVAL);
    CHECK(cfs_mount(&fs, &bad) < 0);
    bad = cfg;
    bad.block_count = 15; /* fewer than 16 blocks */
    CHECK_EQ(cfs_format(&fs, &bad), CFS_ERR_INVAL);
    bad = cfg;
    bad.first_block = 60;
    bad.block_count = 16; /* runs past the device */
    CHECK_EQ(cfs_format(&fs, &bad), CFS_ERR_INVAL);
    bad = cfg;
    bad.first_block = 64; /* starts past the device */
    CHECK(cfs_format(&fs, &bad) < 0);
    bad = cfg;
    bad.gc_free_blocks = 3; /* below the minimum of 6 */
    CHECK(cfs_format(&fs, &bad) < 0);
    CHECK(cfs_format(NULL, &cfg) < 0);
    CHECK(cfs_format(&fs, NULL) < 0);

    CHECK_EQ(cfs_format(&fs, &cfg), 0);
    CHECK_EQ(cfs_mount(&fs, &cfg), 0);
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&fs, &v), 0);
    CHECK_EQ(v.block_size, 4096);
    CHECK_EQ(v.block_count, 64);
    CHECK(v.total > 0 && v.total <= 64ull * 4096);
    CHECK_EQ(v.free + v.used, v.total);
    CHECK_EQ(v.files, 0);
    CHECK_EQ(v.dirs, 1);
    CHECK_EQ(v.bad_blocks, 0);
    CHECK(v.live <= v.used);
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(&fs, "/", &st), 0);
    CHECK_EQ(st.type, CFS_TYPE_DIR);
    CHECK_EQ(cfs_fsck(&fs, NULL, NULL), 0);
    CHECK_EQ(cfs_unmount(&fs), 0);

    /* Calls on an unmounted fs fail cleanly. */
    CHECK(cfs_stat(&fs, "/", &st) < 0);
    CHECK(cfs_mkdir(&fs, "/x") < 0);
    cfs_file_t f;
    CHECK(cfs_file_open(&fs, &f, "/x", CFS_O_RDWR | CFS_O_CREAT) < 0);
    CHECK(cfs_unmount(&fs) < 0);

    /* Remount many times; nothing leaks, mount is repeatable. */
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(cfs_mount(&fs, &cfg), 0);
        CHECK_EQ(cfs_statvfs(&fs, &v), 0);
        CHECK_EQ(v.files, 0);
        CHECK_EQ(cfs_unmount(&fs), 0);
    }

    /* Reformat wipes the content. */
    CHECK_EQ(cfs_mount(&fs, &cfg), 0);
    CHECK_EQ(cfs_mkdir(&fs, "/keep"), 0);
    CHECK_EQ(cfs_unmount(&fs), 0);
    CHECK_EQ(cfs_format(&fs, &cfg), 0);
    CHECK_EQ(cfs_mount(&fs, &cfg), 0);
    CHECK_EQ(cfs_stat(&fs, "/keep", &st), CFS_ERR_NOENT);
    CHECK_EQ(cfs_unmount(&fs), 0);

    /* Garbage in the partition: no filesystem (or corrupt), never a crash. */
    fsm_rng_t r;
    fsm_rng_seed(&r, 7);
    uint8_t *d = flash_sim_data(sim);
    for (uint64_t i = 0; i < flash_sim_size(sim); i++)
        d[i] = (uint8_t)fsm_rng_next(&r);
    int rc = cfs_mount(&fs, &cfg);
    CHECK(rc == CFS_ERR_NOTMOUNTED || rc == CFS_ERR_CORRUPT);
    if (rc == 0)
        cfs_unmount(&fs);

    /* Two partitions of one device are independent. */
    cfs_config_t pa = cfg, pb = cfg;
    pa.first_block = 0;
    pa.block_count = 32;
    pb.first_block = 32;
    pb.block_count = 0; /* to the end: 32 blocks */
    cfs_t fa, fb;
    CHECK_EQ(cfs_format(&fa, &pa), 0);
    CHECK_EQ(cfs_format(&fb, &pb), 0);
    CHECK_EQ(cfs_mount(&fa, &pa), 0);
    CHECK_EQ(cfs_mount(&fb, &pb), 0);
    CHECK_EQ(cfs_statvfs(&fb, &v), 0);
    CHECK_EQ(v.block_count, 32);
    uint8_t buf[3000];
    fsm_fill(buf, sizeof(buf), 1, 0);
    CHECK_EQ(fsm_write_file(&fa, "/a", buf, sizeof(buf)), 0);
    fsm_fill(buf, sizeof(buf), 2, 0);
    CHECK_EQ(fsm_write_file(&fb, "/b", buf, sizeof(buf)), 0);
    CHECK_EQ(cfs_unmount(&fa), 0);
    CHECK_EQ(cfs_unmount(&fb), 0);
    CHECK_EQ(cfs_mount(&fb, &pb), 0);
    CHECK_EQ(cfs_mount(&fa, &pa), 0);
    CHECK_EQ(cfs_stat(&fa, "/a", &st), 0);
    CHECK_EQ(cfs_stat(&fa, "/b", &st), CFS_ERR_NOENT);
    CHECK_EQ(cfs_stat(&fb, "/b", &st), 0);
    CHECK_EQ(cfs_stat(&fb, "/a", &st), CFS_ERR_NOENT);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(&fb, "/b", &got), (int)sizeof(buf));
    CHECK(got && memcmp(got, buf, sizeof(buf)) == 0);
    free(got);
    CHECK_EQ(cfs_fsck(&fa, NULL, NULL), 0);
    CHECK_EQ(cfs_fsck(&fb, NULL, NULL), 0);
    CHECK_EQ(cfs_unmount(&fa), 0);
    CHECK_EQ(cfs_unmount(&fb), 0);

    flash_sim_stats_t ss;
    flash_sim_stats(sim, &ss);
    CHECK_EQ(ss.illegal_progs, 0);
    flash_sim_free(sim);

    for (int e = 0; e > -100; e--)
        CHECK(cfs_strerror(e) != NULL && cfs_strerror(e)[0] != '\0');
    CHECK(strcmp(cfs_strerror(CFS_ERR_NOENT), cfs_strerror(CFS_ERR_EXIST)) != 0);
}

/* ---- open flags ---------------------------------------------------------------- */
static void test_open_flags(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_file_t f, g;
    uint8_t buf[64];

    CHECK_EQ(cfs_file_open(fs, &f, "/missing", CFS_O_RDONLY), CFS_ERR_NOENT);
    CHECK_EQ(cfs_file_open(fs, &f, "/missing", CFS_O_RDWR), CFS_ERR_NOENT);
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_WRONLY | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "hello", 5), 5);
    /* A write-only handle cannot read. */
    CHECK_EQ(cfs_file_read(fs, &f, buf, 5), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 5, 0), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(fs, "/a", &st), 0);
    CHECK_EQ(st.type, CFS_TYPE_FILE);
    CHECK_EQ(st.size, 5);

    /* CREAT on an existing file opens it as it is. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_RDWR | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 5);
    CHECK_EQ(cfs_file_tell(fs, &f), 0);
    CHECK_EQ(cfs_file_read(fs, &f, buf, sizeof(buf)), 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* CREAT|EXCL on an existing file. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_RDWR | CFS_O_CREAT | CFS_O_EXCL),
             CFS_ERR_EXIST);
    CHECK_EQ(cfs_file_open(fs, &f, "/b", CFS_O_RDWR | CFS_O_CREAT | CFS_O_EXCL), 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* A read-only handle cannot write, truncate or pwrite. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_RDONLY), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "x", 1), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_pwrite(fs, &f, "x", 1, 0), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_truncate(fs, &f, 0), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 2), 2);
    CHECK(memcmp(buf, "he", 2) == 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* TRUNC. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_WRONLY | CFS_O_TRUNC), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "xy", 2), 2);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_stat(fs, "/a", &st), 0);
    CHECK_EQ(st.size, 2);

    /* APPEND: every write goes to the end, even after a seek. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_RDWR | CFS_O_APPEND), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "12", 2), 2);
    CHECK_EQ(cfs_file_seek(fs, &f, 0, CFS_SEEK_SET), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "34", 2), 2);
    CHECK_EQ(cfs_file_size(fs, &f), 6);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 6, 0), 6);
    CHECK(memcmp(buf, "xy1234", 6) == 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* Opening a directory, bad flags, bad paths. */
    CHECK_EQ(cfs_mkdir(fs, "/d"), 0);
    CHECK_EQ(cfs_file_open(fs, &f, "/d", CFS_O_RDONLY), CFS_ERR_ISDIR);
    CHECK_EQ(cfs_file_open(fs, &f, "/d", CFS_O_RDWR | CFS_O_CREAT), CFS_ERR_ISDIR);
    CHECK_EQ(cfs_file_open(fs, &f, "/", CFS_O_RDONLY), CFS_ERR_ISDIR);
    CHECK_EQ(cfs_file_open(fs, &f, "/a", 0), CFS_ERR_INVAL);
    CHECK_EQ(cfs_file_open(fs, &f, "/nodir/x", CFS_O_RDWR | CFS_O_CREAT),
             CFS_ERR_NOENT);
    CHECK_EQ(cfs_file_open(fs, &f, "/a/x", CFS_O_RDWR | CFS_O_CREAT),
             CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_file_open(fs, &f, NULL, CFS_O_RDONLY), CFS_ERR_INVAL);
    CHECK_EQ(cfs_file_open(fs, &f, "", CFS_O_RDONLY), CFS_ERR_INVAL);
    CHECK(cfs_file_open(fs, NULL, "/a", CFS_O_RDONLY) < 0);

    /* Two handles on one file at once. */
    CHECK_EQ(cfs_file_open(fs, &f, "/a", CFS_O_RDONLY), 0);
    CHECK_EQ(cfs_file_open(fs, &g, "/a", CFS_O_RDONLY), 0);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 3), 3);
    CHECK_EQ(cfs_file_read(fs, &g, buf + 3, 6), 6);
    CHECK(memcmp(buf, "xy1xy1234", 9) == 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_file_close(fs, &g), 0);

    /* A closed handle is a bad handle. */
    CHECK_EQ(cfs_file_read(fs, &f, buf, 1), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_close(fs, &f), CFS_ERR_BADF);

    /* The open-file table is bounded: CFS_MAX_OPEN, then NOMEM. */
    cfs_file_t many[CFS_MAX_OPEN + 1];
    char name[32];
    int opened = 0;
    for (int i = 0; i < CFS_MAX_OPEN; i++) {
        snprintf(name, sizeof(name), "/m%d", i);
        int rc = cfs_file_open(fs, &many[i], name, CFS_O_RDWR | CFS_O_CREAT);
        CHECK_EQ(rc, 0);
        opened += rc == 0;
    }
    CHECK_EQ(cfs_file_open(fs, &many[CFS_MAX_OPEN], "/mx", CFS_O_RDWR | CFS_O_CREAT),
             CFS_ERR_NOMEM);
    CHECK(!exists(x, "/mx"));
    for (int i = 0; i < opened; i++)
        CHECK_EQ(cfs_file_close(fs, &many[i]), 0);
    CHECK_EQ(cfs_file_open(fs, &f, "/mx", CFS_O_RDWR | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    FSCK(x);
    fx_remount(x);
    CHECK(file_is(x, "/b", 0, 0));
    CHECK_EQ(cfs_stat(fs, "/a", &st), 0);
    CHECK_EQ(st.size, 6);
    FSCK(x);
    fx_free(x);
}

/* ---- read / write / seek / truncate ------------------------------------------ */
static void test_rw_seek(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_file_t f;
    uint8_t data[10000], buf[10000];
    fsm_fill(data, sizeof(data), 3, 0);

    CHECK_EQ(cfs_file_open(fs, &f, "/f", CFS_O_RDWR | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_write(fs, &f, data, 100), 100);
    CHECK_EQ(cfs_file_tell(fs, &f), 100);
    CHECK_EQ(cfs_file_size(fs, &f), 100);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 10), 0); /* at EOF */
    CHECK_EQ(cfs_file_seek(fs, &f, 0, CFS_SEEK_SET), 0);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 100), 100);
    CHECK(memcmp(buf, data, 100) == 0);
    CHECK_EQ(cfs_file_seek(fs, &f, -10, CFS_SEEK_CUR), 90);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 100), 10);
    CHECK(memcmp(buf, data + 90, 10) == 0);
    CHECK_EQ(cfs_file_seek(fs, &f, -1, CFS_SEEK_END), 99);
    CHECK_EQ(cfs_file_tell(fs, &f), 99);
    CHECK_EQ(cfs_file_seek(fs, &f, -101, CFS_SEEK_END), CFS_ERR_INVAL);
    CHECK_EQ(cfs_file_seek(fs, &f, -1, CFS_SEEK_SET), CFS_ERR_INVAL);
    CHECK_EQ(cfs_file_seek(fs, &f, 0, 7), CFS_ERR_INVAL);
    CHECK_EQ(cfs_file_tell(fs, &f), 99); /* failed seeks do not move */

    /* Overwrite in the middle, then read across the boundary. */
    CHECK_EQ(cfs_file_seek(fs, &f, 40, CFS_SEEK_SET), 40);
    CHECK_EQ(cfs_file_write(fs, &f, "ABCDEFGHIJ", 10), 10);
    CHECK_EQ(cfs_file_tell(fs, &f), 50);
    CHECK_EQ(cfs_file_size(fs, &f), 100);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 30, 30), 30);
    CHECK(memcmp(buf, data + 30, 10) == 0);
    CHECK(memcmp(buf + 10, "ABCDEFGHIJ", 10) == 0);
    CHECK(memcmp(buf + 20, data + 50, 10) == 0);
    CHECK_EQ(cfs_file_tell(fs, &f), 50); /* pread does not move */

    /* Seek past the end and write: the gap reads as zeros. */
    CHECK_EQ(cfs_file_seek(fs, &f, 5000, CFS_SEEK_SET), 5000);
    CHECK_EQ(cfs_file_size(fs, &f), 100); /* a seek alone does not grow */
    CHECK_EQ(cfs_file_read(fs, &f, buf, 10), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "Z", 1), 1);
    CHECK_EQ(cfs_file_size(fs, &f), 5001);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 5001, 0), 5001);
    bool zeros = true;
    for (int i = 100; i < 5000; i++)
        zeros &= buf[i] == 0;
    CHECK(zeros);
    CHECK_EQ(buf[5000], 'Z');

    /* pwrite does not move the position; it can extend the file. */
    int32_t pos = cfs_file_tell(fs, &f);
    CHECK_EQ(cfs_file_pwrite(fs, &f, data, 200, 6000), 200);
    CHECK_EQ(cfs_file_tell(fs, &f), pos);
    CHECK_EQ(cfs_file_size(fs, &f), 6200);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 1000, 5500), 700);
    CHECK_EQ(buf[0], 0);
    CHECK(memcmp(buf + 500, data, 200) == 0);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 10, 6200), 0); /* at the end */
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 10, 90000), 0); /* past the end */
    CHECK_EQ(cfs_file_write(fs, &f, data, 0), 0);        /* empty write */
    CHECK_EQ(cfs_file_size(fs, &f), 6200);
    CHECK_EQ(cfs_file_sync(fs, &f), 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* Everything survives a remount. */
    fx_remount(x);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/f", &got), 6200);
    if (got) {
        CHECK(memcmp(got, data, 40) == 0);
        CHECK(memcmp(got + 40, "ABCDEFGHIJ", 10) == 0);
        CHECK(memcmp(got + 50, data + 50, 50) == 0);
        CHECK_EQ(got[5000], 'Z');
        CHECK_EQ(got[5999], 0);
        CHECK(memcmp(got + 6000, data, 200) == 0);
    }
    free(got);

    /* truncate: shrink, then grow (the grown part reads zeros, the old bytes
     * never come back). */
    CHECK_EQ(cfs_file_open(fs, &f, "/f", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_truncate(fs, &f, 30), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 30);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 100, 0), 30);
    CHECK(memcmp(buf, data, 30) == 0);
    CHECK_EQ(cfs_file_truncate(fs, &f, 8000), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 8000);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 8000, 0), 8000);
    CHECK(memcmp(buf, data, 30) == 0);
    zeros = true;
    for (int i = 30; i < 8000; i++)
        zeros &= buf[i] == 0;
    CHECK(zeros);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    fx_remount(x);
    CHECK_EQ(fsm_read_file(fs, "/f", &got), 8000);
    if (got) {
        CHECK(memcmp(got, data, 30) == 0);
        zeros = true;
        for (int i = 30; i < 8000; i++)
            zeros &= got[i] == 0;
        CHECK(zeros);
    }
    free(got);

    /* Truncate to the same size and to 0; then the position past the end. */
    CHECK_EQ(cfs_file_open(fs, &f, "/f", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_truncate(fs, &f, 8000), 0);
    CHECK_EQ(cfs_file_seek(fs, &f, 0, CFS_SEEK_END), 8000);
    CHECK_EQ(cfs_file_truncate(fs, &f, 0), 0);
    CHECK_EQ(cfs_file_size(fs, &f), 0);
    CHECK_EQ(cfs_file_read(fs, &f, buf, 10), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "q", 1), 1); /* at 8000: gap of zeros */
    CHECK_EQ(cfs_file_size(fs, &f), 8001);
    CHECK_EQ(cfs_file_pread(fs, &f, buf, 2, 7999), 2);
    CHECK_EQ(buf[0], 0);
    CHECK_EQ(buf[1], 'q');
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* Shrink and grow inside one sync interval, across segments. */
    CHECK_EQ(cfs_file_open(fs, &f, "/g", CFS_O_RDWR | CFS_O_CREAT), 0);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(cfs_file_write(fs, &f, data, sizeof(data)), (int)sizeof(data));
    CHECK_EQ(cfs_file_sync(fs, &f), 0);
    CHECK_EQ(cfs_file_truncate(fs, &f, 17000), 0);
    CHECK_EQ(cfs_file_truncate(fs, &f, 45000), 0);
    CHECK_EQ(cfs_file_pwrite(fs, &f, "E", 1, 44999), 1);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    fx_remount(x);
    CHECK_EQ(fsm_read_file(fs, "/g", &got), 45000);
    if (got) {
        bool ok = true;
        for (uint32_t i = 0; i < 17000; i++)
            ok &= got[i] == data[i % sizeof(data)];
        CHECK(ok);
        zeros = true;
        for (int i = 17000; i < 44999; i++)
            zeros &= got[i] == 0;
        CHECK(zeros);
        CHECK_EQ(got[44999], 'E');
    }
    free(got);
    FSCK(x);
    fx_free(x);
}

/* ---- durability and visibility --------------------------------------------------- */
static void test_sync_visibility(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_file_t w, r;
    uint8_t buf[256];

    CHECK_EQ(put_file(x, "/v", 100, 5), 0);
    CHECK_EQ(cfs_file_open(fs, &r, "/v", CFS_O_RDONLY), 0);
    CHECK_EQ(cfs_file_open(fs, &w, "/v", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_pwrite(fs, &w, "NEWDATA", 7, 10), 7);
    CHECK_EQ(cfs_file_write(fs, &w, buf, 0), 0);
    CHECK_EQ(cfs_file_pwrite(fs, &w, "tail", 4, 100), 4);
    /* The writer sees its own writes at once. */
    CHECK_EQ(cfs_file_pread(fs, &w, buf, 7, 10), 7);
    CHECK(memcmp(buf, "NEWDATA", 7) == 0);
    CHECK_EQ(cfs_file_size(fs, &w), 104);
    /* Others see them when sync returns, not before. */
    uint8_t old[100];
    fsm_fill(old, 100, 5, 0);
    CHECK_EQ(cfs_file_pread(fs, &r, buf, 7, 10), 7);
    CHECK(memcmp(buf, old + 10, 7) == 0);
    CHECK_EQ(cfs_file_size(fs, &r), 100);
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(fs, "/v", &st), 0);
    CHECK_EQ(st.size, 100);
    CHECK_EQ(cfs_file_sync(fs, &w), 0);
    CHECK_EQ(cfs_file_pread(fs, &r, buf, 7, 10), 7);
    CHECK(memcmp(buf, "NEWDATA", 7) == 0);
    CHECK_EQ(cfs_file_size(fs, &r), 104);
    CHECK_EQ(cfs_file_pread(fs, &r, buf, 10, 100), 4);
    CHECK(memcmp(buf, "tail", 4) == 0);
    CHECK_EQ(cfs_stat(fs, "/v", &st), 0);
    CHECK_EQ(st.size, 104);
    CHECK_EQ(cfs_file_sync(fs, &w), 0); /* a clean sync is fine */
    CHECK_EQ(cfs_file_sync(fs, &r), 0); /* so is syncing a reader */
    CHECK_EQ(cfs_file_close(fs, &r), 0);

    /* Unsynced data is lost by a power cut, synced data is not. */
    CHECK_EQ(cfs_file_pwrite(fs, &w, "LOST", 4, 0), 4);
    /* Simulate the cut: drop the RAM state without unmounting. */
    memset(&x->fs, 0, sizeof(x->fs));
    CHECK_EQ(cfs_mount(fs, &x->cfg), 0);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/v", &got), 104);
    if (got) {
        CHECK(memcmp(got, old, 10) == 0);
        CHECK(memcmp(got + 10, "NEWDATA", 7) == 0);
        CHECK(memcmp(got + 100, "tail", 4) == 0);
    }
    free(got);
    FSCK(x);

    /* cfs_unmount syncs and closes open files. */
    CHECK_EQ(cfs_file_open(fs, &w, "/u", CFS_O_WRONLY | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_write(fs, &w, "unmount-synced", 14), 14);
    fx_remount(x);
    CHECK_EQ(fsm_read_file(fs, "/u", &got), 14);
    CHECK(got && memcmp(got, "unmount-synced", 14) == 0);
    free(got);
    FSCK(x);
    fx_free(x);
}

/* ---- many open files ------------------------------------------------------------- */
static void test_many_open(void)
{
    enum { N = 10, CHUNK = 700, ROUNDS = 12 };
    fx_t *x = fx_new(128);
    cfs_t *fs = &x->fs;
    cfs_file_t f[N];
    char name[32];
    uint8_t buf[CHUNK], want[CHUNK];

    /* One file written beforehand, read while the others are written. */
    CHECK_EQ(put_file(x, "/src", CHUNK * ROUNDS, 99), 0);
    cfs_file_t rd;
    CHECK_EQ(cfs_file_open(fs, &rd, "/src", CFS_O_RDONLY), 0);

    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "/open%d", i);
        CHECK_EQ(cfs_file_open(fs, &f[i], name, CFS_O_RDWR | CFS_O_CREAT), 0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < N; i++) {
            fsm_fill(buf, CHUNK, 100 + (uint32_t)i, (uint32_t)(r * CHUNK));
            CHECK_EQ(cfs_file_write(fs, &f[i], buf, CHUNK), CHUNK);
            if ((r + i) % 4 == 0)
                CHECK_EQ(cfs_file_sync(fs, &f[i]), 0);
        }
        CHECK_EQ(cfs_file_read(fs, &rd, buf, CHUNK), CHUNK);
        fsm_fill(want, CHUNK, 99, (uint32_t)(r * CHUNK));
        CHECK(memcmp(buf, want, CHUNK) == 0);
        /* Read back what a writer wrote, through its own handle. */
        int i = r % N;
        CHECK_EQ(cfs_file_pread(fs, &f[i], buf, CHUNK, (uint32_t)(r * CHUNK)),
                 CHUNK);
        fsm_fill(want, CHUNK, 100 + (uint32_t)i, (uint32_t)(r * CHUNK));
        CHECK(memcmp(buf, want, CHUNK) == 0);
    }
    CHECK_EQ(cfs_file_close(fs, &rd), 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(cfs_file_close(fs, &f[i]), 0);
    fx_remount(x);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "/open%d", i);
        uint8_t *got = NULL;
        CHECK_EQ(fsm_read_file(fs, name, &got), CHUNK * ROUNDS);
        bool ok = got != NULL;
        for (int r = 0; ok && r < ROUNDS; r++) {
            fsm_fill(want, CHUNK, 100 + (uint32_t)i, (uint32_t)(r * CHUNK));
            ok = memcmp(got + r * CHUNK, want, CHUNK) == 0;
        }
        CHECK(ok);
        free(got);
    }
    CHECK(file_is(x, "/src", CHUNK * ROUNDS, 99));
    FSCK(x);
    fx_free(x);
}

/* ---- remove / rename -------------------------------------------------------------- */
static void test_remove_rename(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_stat_t st;

    CHECK_EQ(put_file(x, "/a", 300, 1), 0);
    CHECK_EQ(put_file(x, "/b", 500, 2), 0);
    CHECK_EQ(cfs_mkdir(fs, "/d"), 0);
    CHECK_EQ(cfs_mkdir(fs, "/e"), 0);
    CHECK_EQ(put_file(x, "/d/in", 10, 3), 0);

    /* remove */
    CHECK_EQ(cfs_remove(fs, "/missing"), CFS_ERR_NOENT);
    CHECK_EQ(cfs_remove(fs, "/d"), CFS_ERR_NOTEMPTY);
    CHECK_EQ(cfs_remove(fs, "/a/x"), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_remove(fs, "/"), CFS_ERR_PERM);
    CHECK_EQ(cfs_remove(fs, "/e"), 0); /* an empty directory */
    CHECK(!exists(x, "/e"));
    CHECK_EQ(cfs_mkdir(fs, "/e"), 0);

    /* rename: plain, replacing a file, same name, errors */
    CHECK_EQ(cfs_stat(fs, "/a", &st), 0);
    uint32_t ino_a = st.ino;
    CHECK_EQ(cfs_rename(fs, "/a", "/a2"), 0);
    CHECK(!exists(x, "/a"));
    CHECK(file_is(x, "/a2", 300, 1));
    CHECK_EQ(cfs_stat(fs, "/a2", &st), 0);
    CHECK_EQ(st.ino, ino_a); /* same file, new name */
    CHECK_EQ(cfs_rename(fs, "/a2", "/a2"), 0);
    CHECK(file_is(x, "/a2", 300, 1));
    CHECK_EQ(cfs_rename(fs, "/a2", "/b"), 0); /* replaces /b */
    CHECK(!exists(x, "/a2"));
    CHECK(file_is(x, "/b", 300, 1));
    CHECK_EQ(cfs_rename(fs, "/missing", "/x"), CFS_ERR_NOENT);
    CHECK_EQ(cfs_rename(fs, "/b", "/nodir/x"), CFS_ERR_NOENT);
    CHECK_EQ(cfs_rename(fs, "/b", "/d"), CFS_ERR_ISDIR);       /* file over dir */
    CHECK_EQ(cfs_rename(fs, "/d", "/b"), CFS_ERR_NOTDIR);      /* dir over file */
    CHECK_EQ(cfs_rename(fs, "/e", "/d"), CFS_ERR_NOTEMPTY);    /* over non-empty */
    CHECK_EQ(cfs_rename(fs, "/d", "/d/sub"), CFS_ERR_INVAL);   /* into itself */
    CHECK_EQ(cfs_rename(fs, "/", "/x"), CFS_ERR_PERM);
    CHECK_EQ(cfs_rename(fs, "/b", "/b/x"), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_rename(fs, NULL, "/x"), CFS_ERR_INVAL);
    CHECK(file_is(x, "/b", 300, 1));
    CHECK(file_is(x, "/d/in", 10, 3));

    /* directories: move with contents, replace an empty directory */
    CHECK_EQ(cfs_mkdir(fs, "/d/sub"), 0);
    CHECK_EQ(put_file(x, "/d/sub/deep", 77, 4), 0);
    CHECK_EQ(cfs_rename(fs, "/d", "/e"), 0); /* /e is empty: replaced */
    CHECK(!exists(x, "/d"));
    CHECK(file_is(x, "/e/in", 10, 3));
    CHECK(file_is(x, "/e/sub/deep", 77, 4));
    CHECK_EQ(cfs_rename(fs, "/e/sub", "/top"), 0); /* up a level */
    CHECK(file_is(x, "/top/deep", 77, 4));
    CHECK_EQ(cfs_rename(fs, "/b", "/top/b"), 0); /* file into a directory */
    CHECK(file_is(x, "/top/b", 300, 1));
    CHECK_EQ(cfs_stat(fs, "/top/b", &st), 0);
    CHECK_EQ(st.ino, ino_a);

    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK_EQ(v.files, 3);
    CHECK_EQ(v.dirs, 3); /* /, /e, /top */
    FSCK(x);
    fx_remount(x);
    CHECK(!exists(x, "/a"));
    CHECK(!exists(x, "/b"));
    CHECK(!exists(x, "/d"));
    CHECK(file_is(x, "/e/in", 10, 3));
    CHECK(file_is(x, "/top/deep", 77, 4));
    CHECK(file_is(x, "/top/b", 300, 1));
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK_EQ(v.files, 3);
    CHECK_EQ(v.dirs, 3);

    /* Removing a file that is open: either refused (BUSY), or the handle
     * stays usable until closed; never a crash, and the fs stays clean. */
    cfs_file_t f;
    CHECK_EQ(cfs_file_open(fs, &f, "/top/b", CFS_O_RDWR), 0);
    int rc = cfs_remove(fs, "/top/b");
    CHECK(rc == 0 || rc == CFS_ERR_BUSY);
    uint8_t buf[8];
    int n = cfs_file_pread(fs, &f, buf, 8, 0);
    CHECK(n == 8 || n < 0);
    cfs_file_close(fs, &f);
    CHECK_EQ(exists(x, "/top/b"), rc != 0);
    /* Renaming a file that is open: the handle follows the file. */
    CHECK_EQ(cfs_file_open(fs, &f, "/top/deep", CFS_O_RDWR), 0);
    rc = cfs_rename(fs, "/top/deep", "/e/moved");
    CHECK(rc == 0 || rc == CFS_ERR_BUSY);
    CHECK_EQ(cfs_file_pwrite(fs, &f, "M", 1, 0), 1);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    const char *now = rc == 0 ? "/e/moved" : "/top/deep";
    CHECK(exists(x, now));
    CHECK_EQ(exists(x, rc == 0 ? "/top/deep" : "/e/moved"), false);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, now, &got), 77);
    CHECK(got && got[0] == 'M');
    free(got);
    fx_remount(x);
    CHECK(exists(x, now));
    CHECK_EQ(exists(x, rc == 0 ? "/top/deep" : "/e/moved"), false);
    CHECK_EQ(fsm_read_file(fs, now, &got), 77);
    CHECK(got && got[0] == 'M');
    free(got);
    FSCK(x);
    fx_free(x);
}

/* ---- directories ------------------------------------------------------------------- */
static void test_dirs(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_stat_t st;
    cfs_dir_t d;
    char name[CFS_NAME_MAX + 1];

    CHECK_EQ(cfs_mkdir(fs, "/a"), 0);
    CHECK_EQ(cfs_mkdir(fs, "/a"), CFS_ERR_EXIST);
    CHECK_EQ(cfs_mkdir(fs, "/"), CFS_ERR_EXIST);
    CHECK_EQ(cfs_mkdir(fs, "/x/y"), CFS_ERR_NOENT);
    CHECK_EQ(put_file(x, "/f", 1, 1), 0);
    CHECK_EQ(cfs_mkdir(fs, "/f"), CFS_ERR_EXIST);
    CHECK_EQ(cfs_mkdir(fs, "/f/y"), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_rmdir(fs, "/f"), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_rmdir(fs, "/nope"), CFS_ERR_NOENT);
    CHECK_EQ(cfs_rmdir(fs, "/"), CFS_ERR_PERM);
    CHECK_EQ(cfs_stat(fs, "/a", &st), 0);
    CHECK_EQ(st.type, CFS_TYPE_DIR);
    CHECK_EQ(st.size, 0);
    CHECK_EQ(cfs_stat(fs, "/f/y", &st), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_stat(fs, "/a/y", &st), CFS_ERR_NOENT);

    /* Nested 12 deep. */
    char path[CFS_PATH_MAX + 1] = "";
    for (int i = 0; i < 12; i++) {
        size_t l = strlen(path);
        snprintf(path + l, sizeof(path) - l, "/n%d", i);
        CHECK_EQ(cfs_mkdir(fs, path), 0);
    }
    char fpath[CFS_PATH_MAX + 8];
    snprintf(fpath, sizeof(fpath), "%s/leaf", path);
    CHECK_EQ(put_file(x, fpath, 1234, 12), 0);
    CHECK_EQ(cfs_rmdir(fs, "/n0"), CFS_ERR_NOTEMPTY);
    CHECK_EQ(cfs_rmdir(fs, path), CFS_ERR_NOTEMPTY);

    /* A big directory: many entries, listed exactly once each. */
    enum { NENT = 150 };
    for (int i = 0; i < NENT; i++) {
        snprintf(name, sizeof(name), "/a/entry-with-a-longish-name-%03d", i);
        if (i % 5 == 0)
            CHECK_EQ(cfs_mkdir(fs, name), 0);
        else
            CHECK_EQ(put_file(x, name, (uint32_t)i, (uint32_t)i), 0);
    }
    for (int pass = 0; pass < 2; pass++) {
        int seen[NENT] = { 0 };
        int other = 0, count = 0;
        CHECK_EQ(cfs_dir_open(fs, &d, "/a"), 0);
        for (;;) {
            int rc = cfs_dir_read(fs, &d, name, sizeof(name), &st);
            CHECK(rc >= 0);
            if (rc <= 0)
                break;
            count++;
            int k;
            if (sscanf(name, "entry-with-a-longish-name-%d", &k) == 1 && k >= 0 &&
                k < NENT) {
                seen[k]++;
                CHECK_EQ(st.type, k % 5 == 0 ? CFS_TYPE_DIR : CFS_TYPE_FILE);
                CHECK_EQ(st.size, k % 5 == 0 ? 0 : k);
            } else {
                other++;
                fprintf(stderr, "  unexpected entry '%s'\n", name);
            }
        }
        CHECK_EQ(cfs_dir_close(fs, &d), 0);
        CHECK_EQ(other, 0);
        CHECK_EQ(count, pass == 0 ? NENT : NENT - NENT / 3);
        bool once = true;
        for (int k = 0; k < NENT; k++)
            once &= seen[k] == (pass == 1 && k % 3 == 0 ? 0 : 1);
        CHECK(once);
        if (pass == 0) {
            /* Remove every third entry, remount, list again. */
            for (int k = 0; k < NENT; k += 3) {
                snprintf(name, sizeof(name), "/a/entry-with-a-longish-name-%03d", k);
                CHECK_EQ(cfs_remove(fs, name), 0);
            }
            fx_remount(x);
        }
    }

    /* Listing the root: no "." or "..". */
    CHECK_EQ(cfs_dir_open(fs, &d, "/"), 0);
    int n = 0;
    bool dots = false;
    while (cfs_dir_read(fs, &d, name, sizeof(name), &st) == 1) {
        n++;
        dots |= strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    }
    CHECK_EQ(cfs_dir_close(fs, &d), 0);
    CHECK_EQ(n, 3); /* a, f, n0 */
    CHECK(!dots);
    CHECK_EQ(cfs_dir_open(fs, &d, "/f"), CFS_ERR_NOTDIR);
    CHECK_EQ(cfs_dir_open(fs, &d, "/zz"), CFS_ERR_NOENT);
    /* An empty directory lists nothing. */
    CHECK_EQ(cfs_mkdir(fs, "/empty"), 0);
    CHECK_EQ(cfs_dir_open(fs, &d, "/empty"), 0);
    CHECK_EQ(cfs_dir_read(fs, &d, name, sizeof(name), &st), 0);
    CHECK_EQ(cfs_dir_close(fs, &d), 0);

    /* Tear the deep tree down from the leaf. */
    CHECK_EQ(cfs_remove(fs, fpath), 0);
    for (int i = 11; i >= 0; i--) {
        CHECK_EQ(cfs_rmdir(fs, path), 0);
        char *s = strrchr(path, '/');
        *s = '\0';
    }
    CHECK(!exists(x, "/n0"));
    FSCK(x);
    fx_remount(x);
    CHECK(!exists(x, "/n0"));
    CHECK(exists(x, "/empty"));
    FSCK(x);
    fx_free(x);
}

/* ---- names and paths ---------------------------------------------------------------- */
static void test_names(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_stat_t st;
    cfs_file_t f;

    /* UTF-8 names. */
    static const char *utf8[] = {
        "/donn\xc3\xa9" "es",                              /* données */
        "/donn\xc3\xa9" "es/\xe6\x97\xa5\xe6\x9c\xac.txt",    /* 日本.txt */
        "/donn\xc3\xa9" "es/\xf0\x9f\x93\xa6-box",          /* 📦-box */
        "/\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", /* привет */
        "/with space & symbols!#$%+,;=@[]^_`{}~",
    };
    CHECK_EQ(cfs_mkdir(fs, utf8[0]), 0);
    for (int i = 1; i < 5; i++)
        CHECK_EQ(put_file(x, utf8[i], (uint32_t)(10 * i), (uint32_t)i), 0);
    fx_remount(x);
    for (int i = 1; i < 5; i++)
        CHECK(file_is(x, utf8[i], (uint32_t)(10 * i), (uint32_t)i));
    cfs_dir_t d;
    char name[CFS_NAME_MAX + 1];
    CHECK_EQ(cfs_dir_open(fs, &d, utf8[0]), 0);
    int found = 0;
    while (cfs_dir_read(fs, &d, name, sizeof(name), &st) == 1)
        found += strcmp(name, "\xe6\x97\xa5\xe6\x9c\xac.txt") == 0 ||
                 strcmp(name, "\xf0\x9f\x93\xa6-box") == 0;
    CHECK_EQ(cfs_dir_close(fs, &d), 0);
    CHECK_EQ(found, 2);
    /* Names differing only in case are different files. */
    CHECK_EQ(put_file(x, "/Case", 1, 1), 0);
    CHECK_EQ(put_file(x, "/case", 2, 2), 0);
    CHECK(file_is(x, "/Case", 1, 1));
    CHECK(file_is(x, "/case", 2, 2));

    /* Path limit: 255 bytes is fine, 256 is NAMETOOLONG. */
    char p[CFS_PATH_MAX + 8];
    memset(p, 'n', sizeof(p));
    p[0] = '/';
    p[CFS_PATH_MAX] = '\0'; /* "/" + 254 bytes: 255 */
    CHECK_EQ(strlen(p), 255);
    CHECK_EQ(cfs_file_open(fs, &f, p, CFS_O_RDWR | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "long", 4), 4);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_stat(fs, p, &st), 0);
    CHECK_EQ(st.size, 4);
    memset(p, 'n', sizeof(p));
    p[0] = '/';
    p[CFS_PATH_MAX + 1] = '\0'; /* 256 bytes */
    CHECK_EQ(cfs_file_open(fs, &f, p, CFS_O_RDWR | CFS_O_CREAT), CFS_ERR_NAMETOOLONG);
    CHECK_EQ(cfs_mkdir(fs, p), CFS_ERR_NAMETOOLONG);
    CHECK_EQ(cfs_stat(fs, p, &st), CFS_ERR_NAMETOOLONG);
    CHECK_EQ(cfs_rename(fs, "/case", p), CFS_ERR_NAMETOOLONG);
    CHECK(exists(x, "/case"));
    /* A nested path of exactly 255 bytes. */
    CHECK_EQ(cfs_mkdir(fs, "/deep"), 0);
    char q[CFS_PATH_MAX + 8];
    memset(q, 'q', sizeof(q));
    memcpy(q, "/deep/", 6);
    q[CFS_PATH_MAX] = '\0';
    CHECK_EQ(put_file(x, q, 3, 3), 0);
    CHECK(file_is(x, q, 3, 3));
    /* The listed name of a 254-byte component fits a 256-byte buffer. */
    CHECK_EQ(cfs_dir_open(fs, &d, "/deep"), 0);
    CHECK_EQ(cfs_dir_read(fs, &d, name, sizeof(name), &st), 1);
    CHECK_EQ(strlen(name), CFS_PATH_MAX - 6);
    CHECK_EQ(cfs_dir_close(fs, &d), 0);

    /* Invalid paths: every call refuses them and creates nothing. */
    static const char *badp[] = { "", "relative", "a/b", "/a//b", "//",
                                  "/.", "/..", "/deep/.", "/deep/../x" };
    for (size_t i = 0; i < sizeof(badp) / sizeof(badp[0]); i++) {
        int rc = cfs_file_open(fs, &f, badp[i], CFS_O_RDWR | CFS_O_CREAT);
        if (rc == 0)
            cfs_file_close(fs, &f);
        if (rc != CFS_ERR_INVAL)
            fprintf(stderr, "  open('%s') = %d\n", badp[i], rc);
        CHECK_EQ(rc, CFS_ERR_INVAL);
        rc = cfs_mkdir(fs, badp[i]);
        if (rc != CFS_ERR_INVAL && rc != CFS_ERR_EXIST)
            fprintf(stderr, "  mkdir('%s') = %d\n", badp[i], rc);
        CHECK(rc == CFS_ERR_INVAL || (rc == CFS_ERR_EXIST && badp[i][0] == '/'));
    }
    CHECK_EQ(cfs_mkdir(fs, NULL), CFS_ERR_INVAL);
    CHECK_EQ(cfs_stat(fs, NULL, &st), CFS_ERR_INVAL);
    CHECK_EQ(cfs_remove(fs, NULL), CFS_ERR_INVAL);
    CHECK_EQ(cfs_rmdir(fs, ""), CFS_ERR_INVAL);
    CHECK_EQ(cfs_rename(fs, "/case", ""), CFS_ERR_INVAL);
    CHECK_EQ(cfs_rename(fs, "/case", "/x/../y"), CFS_ERR_INVAL);
    CHECK(exists(x, "/case"));
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK_EQ(v.files, 8);
    CHECK_EQ(v.dirs, 3);
    FSCK(x);
    fx_free(x);
}

/* ---- times, inode numbers ------------------------------------------------------------ */
static void test_times(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_stat_t st, st2;
    cfs_file_t f;

    x->now = 1700000000u;
    CHECK_EQ(cfs_file_open(fs, &f, "/t", CFS_O_RDWR | CFS_O_CREAT), 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_stat(fs, "/t", &st), 0);
    CHECK_EQ(st.ctime, 1700000000u);
    CHECK_EQ(st.mtime, 1700000000u);

    x->now = 1700000100u;
    CHECK_EQ(cfs_file_open(fs, &f, "/t", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_write(fs, &f, "x", 1), 1);
    x->now = 1700000200u; /* the sync time counts */
    CHECK_EQ(cfs_file_sync(fs, &f), 0);
    CHECK_EQ(cfs_stat(fs, "/t", &st), 0);
    CHECK_EQ(st.ctime, 1700000000u);
    CHECK(st.mtime == 1700000100u || st.mtime == 1700000200u);
    uint32_t mt = st.mtime;
    x->now = 1700000300u;
    uint8_t c;
    CHECK_EQ(cfs_file_pread(fs, &f, &c, 1, 0), 1); /* reading changes nothing */
    CHECK_EQ(cfs_file_close(fs, &f), 0);           /* nor a clean close */
    CHECK_EQ(cfs_stat(fs, "/t", &st), 0);
    CHECK_EQ(st.mtime, mt);
    CHECK_EQ(cfs_rename(fs, "/t", "/t2"), 0);
    CHECK_EQ(cfs_stat(fs, "/t2", &st2), 0);
    CHECK_EQ(st2.ctime, st.ctime);
    CHECK_EQ(st2.ino, st.ino);

    x->now = 1800000000u;
    CHECK_EQ(cfs_mkdir(fs, "/dd"), 0);
    CHECK_EQ(cfs_stat(fs, "/dd", &st2), 0);
    CHECK_EQ(st2.ctime, 1800000000u);
    CHECK(st2.ino != st.ino);
    CHECK(st2.ino != 0);
    fx_remount(x);
    CHECK_EQ(cfs_stat(fs, "/t2", &st2), 0);
    CHECK_EQ(st2.ctime, 1700000000u);
    CHECK_EQ(st2.mtime, mt);
    CHECK_EQ(st2.ino, st.ino);

    /* Inode numbers are never reused. */
    uint32_t inos[20];
    for (int i = 0; i < 20; i++) {
        CHECK_EQ(cfs_file_open(fs, &f, "/tmp", CFS_O_RDWR | CFS_O_CREAT), 0);
        CHECK_EQ(cfs_file_close(fs, &f), 0);
        CHECK_EQ(cfs_stat(fs, "/tmp", &st), 0);
        inos[i] = st.ino;
        CHECK_EQ(cfs_remove(fs, "/tmp"), 0);
        if (i == 10)
            fx_remount(x);
    }
    bool uniq = true;
    for (int i = 0; i < 20; i++)
        for (int j = 0; j < i; j++)
            uniq &= inos[i] != inos[j];
    CHECK(uniq);

    /* No clock: times are 0. */
    cfs_config_t nc = x->cfg;
    nc.clock = NULL;
    CHECK_EQ(cfs_unmount(fs), 0);
    CHECK_EQ(cfs_mount(fs, &nc), 0);
    CHECK_EQ(cfs_mkdir(fs, "/noclock"), 0);
    CHECK_EQ(cfs_stat(fs, "/noclock", &st), 0);
    CHECK_EQ(st.ctime, 0);
    FSCK(x);
    fx_free(x);
}

/* ---- file sizes ---------------------------------------------------------------------- */
static void test_sizes(void)
{
    static const uint32_t sizes[] = { 0, 1, 255, 256, 257, 4095, 4096, 4097,
                                      8192, 3 * 4096 + 17, 16383, 16384, 16385,
                                      40000, 100000, 200001 };
    enum { NS = sizeof(sizes) / sizeof(sizes[0]) };
    fx_t *x = fx_new(256);
    cfs_t *fs = &x->fs;
    char name[32];
    for (int i = 0; i < NS; i++) {
        snprintf(name, sizeof(name), "/s%u", sizes[i]);
        CHECK_EQ(put_file(x, name, sizes[i], 1000 + (uint32_t)i), 0);
        CHECK(file_is(x, name, sizes[i], 1000 + (uint32_t)i));
    }
    /* Written in odd-sized pieces too. */
    uint8_t *big = malloc(100000);
    fsm_fill(big, 100000, 77, 0);
    cfs_file_t f;
    CHECK_EQ(cfs_file_open(fs, &f, "/pieces", CFS_O_WRONLY | CFS_O_CREAT), 0);
    for (uint32_t off = 0, k = 1; off < 100000; k = k * 7 % 4099 + 1) {
        uint32_t n = k < 100000 - off ? k : 100000 - off;
        CHECK_EQ(cfs_file_write(fs, &f, big + off, n), (int)n);
        off += n;
    }
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    fx_remount(x);
    for (int i = 0; i < NS; i++) {
        snprintf(name, sizeof(name), "/s%u", sizes[i]);
        CHECK(file_is(x, name, sizes[i], 1000 + (uint32_t)i));
        cfs_stat_t st;
        CHECK_EQ(cfs_stat(fs, name, &st), 0);
        CHECK_EQ(st.size, sizes[i]);
    }
    CHECK(file_is(x, "/pieces", 100000, 77));
    /* Read back in odd-sized pieces. */
    CHECK_EQ(cfs_file_open(fs, &f, "/pieces", CFS_O_RDONLY), 0);
    uint8_t *got = malloc(100000);
    uint32_t off = 0;
    for (uint32_t k = 3; off < 100000; k = k * 5 % 5003 + 1) {
        int n = cfs_file_read(fs, &f, got + off, k);
        CHECK(n > 0);
        if (n <= 0)
            break;
        off += (uint32_t)n;
    }
    CHECK_EQ(off, 100000);
    CHECK(memcmp(got, big, 100000) == 0);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    free(got);
    free(big);
    FSCK(x);
    fx_free(x);
}

/* ---- statvfs, gc, fsck ------------------------------------------------------------------ */
static void test_space(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_statvfs_t v0, v1, v2, v3;

    CHECK_EQ(cfs_statvfs(fs, &v0), 0);
    CHECK_EQ(v0.free + v0.used, v0.total);
    CHECK(v0.live <= v0.used);
    CHECK(v0.reclaimable <= v0.used);

    CHECK_EQ(put_file(x, "/big", 40000, 1), 0);
    CHECK_EQ(cfs_statvfs(fs, &v1), 0);
    CHECK_EQ(v1.free + v1.used, v1.total);
    CHECK(v1.used >= v0.used + 40000);
    CHECK(v1.live >= v0.live + 40000);
    CHECK(v1.free < v0.free);
    CHECK_EQ(v1.files, 1);

    /* Overwrite it many times: stale bytes pile up, gc frees them. */
    for (int i = 0; i < 4; i++)
        CHECK_EQ(put_file(x, "/big", 40000, 2 + (uint32_t)i), 0);
    CHECK_EQ(cfs_statvfs(fs, &v2), 0);
    CHECK_EQ(v2.free + v2.used, v2.total);
    CHECK(v2.live < v1.live + 8000);  /* the same amount of live data */
    CHECK(v2.live >= 40000);
    int freed = cfs_gc(fs, 0);
    CHECK(freed >= 0);
    CHECK_EQ(cfs_statvfs(fs, &v3), 0);
    CHECK_EQ(v3.free + v3.used, v3.total);
    CHECK(v3.used <= v2.used);
    CHECK(v3.reclaimable <= v2.reclaimable);
    CHECK(v3.live <= v2.live + 4096);
    CHECK(file_is(x, "/big", 40000, 5));
    CHECK(cfs_gc(fs, 1) >= 0);

    /* Removing frees the live bytes. */
    CHECK_EQ(cfs_remove(fs, "/big"), 0);
    CHECK(cfs_gc(fs, 0) >= 0);
    CHECK_EQ(cfs_statvfs(fs, &v3), 0);
    CHECK(v3.live < v0.live + 4096);
    CHECK_EQ(v3.files, 0);
    CHECK_EQ(v3.free + v3.used, v3.total);

    /* Wear figures are sane. */
    CHECK(v3.erase_min <= v3.erase_mean && v3.erase_mean <= v3.erase_max);

    /* fsck with a report callback: clean, nothing reported. */
    int lines = 0;
    CHECK_EQ(cfs_fsck(fs, report_line, &lines), 0);
    CHECK_EQ(lines, 0);
    fx_remount(x);
    cfs_statvfs_t v4;
    CHECK_EQ(cfs_statvfs(fs, &v4), 0);
    CHECK_EQ(v4.free + v4.used, v4.total);
    CHECK_EQ(v4.files, 0);
    CHECK(v4.live < v0.live + 4096);
    fx_free(x);
}

/* ---- NOSPC ------------------------------------------------------------------------------ */
static void test_nospc(void)
{
    /* 48 blocks: cfs keeps two worst-case checkpoints and 6 blocks in
     * reserve (docs/FS.md, section 6), a large share of a tiny partition */
    fx_t *x = fx_new(48);
    cfs_t *fs = &x->fs;
    cfs_file_t f;
    uint8_t buf[1000];

    CHECK_EQ(put_file(x, "/keep", 5000, 9), 0);
    CHECK_EQ(cfs_file_open(fs, &f, "/fill", CFS_O_WRONLY | CFS_O_CREAT), 0);
    uint32_t written = 0;
    int rc = 0;
    for (int i = 0; i < 1000; i++) {
        fsm_fill(buf, sizeof(buf), 10, written);
        rc = cfs_file_write(fs, &f, buf, sizeof(buf));
        if (rc < 0)
            break;
        CHECK_EQ(rc, (int)sizeof(buf));
        written += (uint32_t)rc;
        if (i % 8 == 7) {
            rc = cfs_file_sync(fs, &f);
            if (rc < 0)
                break;
        }
    }
    CHECK_EQ(rc, CFS_ERR_NOSPC);
    CHECK(written > 48 * 4096 / 3); /* a fair part of the device */
    CHECK(written < 48 * 4096);
    int crc = cfs_file_close(fs, &f);
    CHECK(crc == 0 || crc == CFS_ERR_NOSPC);

    /* Still serving: reads work, namespace reads work. */
    CHECK(file_is(x, "/keep", 5000, 9));
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK_EQ(v.free + v.used, v.total);
    FSCK(x);
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(fs, "/fill", &st), 0);
    uint32_t have = st.size;
    CHECK(have <= written);

    /* The synced part of /fill is intact. */
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/fill", &got), (int)have);
    if (got && have) {
        uint8_t *want = malloc(have);
        for (uint32_t off = 0; off < have; off += sizeof(buf)) {
            uint32_t n = have - off < sizeof(buf) ? have - off : sizeof(buf);
            fsm_fill(want + off, n, 10, off);
        }
        CHECK(memcmp(got, want, have) == 0);
        free(want);
    }
    free(got);

    /* After deleting, everything works again. */
    CHECK_EQ(cfs_remove(fs, "/fill"), 0);
    CHECK(cfs_gc(fs, 0) >= 0);
    CHECK_EQ(put_file(x, "/after", 20000, 11), 0);
    CHECK(file_is(x, "/after", 20000, 11));
    fx_remount(x);
    CHECK(file_is(x, "/after", 20000, 11));
    CHECK(file_is(x, "/keep", 5000, 9));
    CHECK(!exists(x, "/fill"));
    FSCK(x);

    /* Full of small files / directories rather than one big file. */
    char name[32];
    int made = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "/small%d", i);
        rc = put_file(x, name, 200, (uint32_t)i);
        if (rc < 0)
            break;
        made++;
    }
    CHECK(rc == CFS_ERR_NOSPC);
    CHECK(made > 50);
    FSCK(x);
    for (int i = 0; i < made; i++) {
        snprintf(name, sizeof(name), "/small%d", i);
        CHECK_EQ(cfs_remove(fs, name), 0);
    }
    snprintf(name, sizeof(name), "/small%d", made);
    cfs_remove(fs, name); /* maybe created empty before NOSPC */
    CHECK(cfs_gc(fs, 0) >= 0);
    CHECK_EQ(put_file(x, "/again", 20000, 12), 0);
    fx_remount(x);
    CHECK(file_is(x, "/again", 20000, 12));
    CHECK(file_is(x, "/keep", 5000, 9));
    FSCK(x);
    fx_free(x);
}

/* ---- GC of a fragmented file on a nearly full device ---------------------------------
 * Many small random pwrites + syncs spread one file's segments over many
 * blocks as small patches listed by big extent maps. Moving such a block
 * must cost about what the block holds: GC rewrites no extent map per
 * patch it moves (docs/FS.md, section 6). Checked with the simulator's
 * program counter around explicit cfs_gc calls: bytes programmed per block
 * the tail passed. */
static uint64_t prog_bytes(fx_t *x)
{
    flash_sim_stats_t st;
    flash_sim_stats(x->sim, &st);
    return st.bytes_programmed;
}

static void test_gc_fragmented(void)
{
    enum { BLOCKS = 96, FRAG = 64 * 1024, ROUNDS = 3000 };
    fx_t *x = fx_new(BLOCKS);
    cfs_t *fs = &x->fs;
    uint8_t *shadow = malloc(FRAG);
    fsm_fill(shadow, FRAG, 21, 0);
    CHECK_EQ(fsm_write_file(fs, "/frag", shadow, FRAG), 0);
    /* static files until the device is nearly full */
    char name[32];
    int statics = 0;
    for (; statics < 200; statics++) {
        snprintf(name, sizeof(name), "/s%d", statics);
        if (put_file(x, name, 12000, 100 + (uint32_t)statics) != 0)
            break;
    }
    CHECK(statics > 4);
    snprintf(name, sizeof(name), "/s%d", statics);
    cfs_remove(fs, name); /* maybe created before NOSPC */
    snprintf(name, sizeof(name), "/s%d", --statics);
    CHECK_EQ(cfs_remove(fs, name), 0); /* a little room for the churn */
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    uint64_t claimed0 = v.claimed;

    cfs_file_t f;
    CHECK_EQ(cfs_file_open(fs, &f, "/frag", CFS_O_RDWR), 0);
    uint32_t rng = 12345, gc_calls = 0, gc_blocks = 0, worst_call = 0;
    uint64_t gc_prog = 0;
    double worst_ratio = 0;
    int fails = 0;
    for (int i = 0; i < ROUNDS; i++) {
        rng = rng * 1103515245u + 12345u;
        uint32_t len = 8 + (rng >> 16) % 40;
        rng = rng * 1103515245u + 12345u;
        uint32_t off = (rng >> 8) % (FRAG - len);
        uint8_t data[64];
        for (uint32_t k = 0; k < len; k++)
            data[k] = (uint8_t)(i * 7 + k);
        memcpy(shadow + off, data, len);
        int rc = cfs_file_pwrite(fs, &f, data, len, off);
        if (rc == (int)len)
            rc = cfs_file_sync(fs, &f);
        if (rc < 0)
            fails++;
        if (i % 50 == 49) {
            /* an explicit small pass: what does moving a block cost? */
            uint64_t before = prog_bytes(x);
            int n = cfs_gc(fs, 2);
            uint64_t cost = prog_bytes(x) - before;
            if (n > 0) {
                gc_calls++;
                gc_blocks += (uint32_t)n;
                gc_prog += cost;
                double r = (double)cost / 4096.0 / n;
                if (r > worst_ratio) {
                    worst_ratio = r;
                    worst_call = (uint32_t)i;
                }
            }
        }
    }
    CHECK_EQ(fails, 0); /* live data stays the same: no write may fail */
    CHECK_EQ(cfs_file_close(fs, &f), 0);

    /* a full pass over what is left */
    uint64_t before = prog_bytes(x);
    int n = cfs_gc(fs, 0);
    uint64_t full_cost = prog_bytes(x) - before;
    CHECK(n >= 0);
    printf("test_fs_unit: fragmented file: %d writes, %u cfs_gc(2) calls moved %u blocks "
           "programming %.2f blocks per block (worst call %.2f at write %u); cfs_gc(0): %d "
           "blocks, %.2f blocks programmed per block\n",
           ROUNDS, gc_calls, gc_blocks, gc_blocks ? (double)gc_prog / 4096.0 / gc_blocks : 0.0,
           worst_ratio, worst_call, n, n > 0 ? (double)full_cost / 4096.0 / n : 0.0);
    CHECK(gc_calls >= 20); /* the small passes made progress */
    /* Moving a block programs at most what it holds plus the pass's commit
     * and checkpoint: over all the small passes, under 1.5 blocks per block;
     * a single pass of 2 blocks under 2.5 per block (no extent map per
     * moved patch). */
    CHECK(gc_prog <= (uint64_t)gc_blocks * 4096 * 3 / 2);
    CHECK(worst_ratio <= 2.5);
    if (n > 0)
        CHECK(full_cost <= (uint64_t)(n + 2) * 4096);

    /* the data is right, before and after a remount */
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/frag", &got), FRAG);
    CHECK(got && memcmp(got, shadow, FRAG) == 0);
    free(got);
    fx_remount(x);
    got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/frag", &got), FRAG);
    CHECK(got && memcmp(got, shadow, FRAG) == 0);
    free(got);
    FSCK(x);

    /* the stale data is gone, and a remove gives its space back */
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK_EQ(v.claimed, claimed0);
    CHECK(v.used <= v.live + 6 * 4096);
    uint64_t free0 = v.free;
    CHECK_EQ(cfs_remove(fs, "/frag"), 0);
    CHECK(cfs_gc(fs, 0) >= 0);
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK(v.free >= free0 + FRAG - 4096);
    FSCK(x);
    free(shadow);
    fx_free(x);
}

/* Forced cfs_gc(0) between fills of a nearly full device: each collects the
 * stale data, up to what its own passes write (the service once saw 251 KB
 * left reclaimable below the reserve). */
static void test_gc_between_fills(void)
{
    fx_t *x = fx_new(128);
    cfs_t *fs = &x->fs;
    char name[32];
    uint64_t worst = 0;
    int made = 0;
    for (int round = 0; round < 12; round++) {
        /* fill: new files and rewrites of old ones until NOSPC */
        for (int i = 0; i < 400; i++) {
            snprintf(name, sizeof(name), "/f%d", (made + i) % 40);
            if (put_file(x, name, 3000 + (uint32_t)((i * 977) % 9000), (uint32_t)(round * 1000 + i)) != 0)
                break;
        }
        made += 7;
        CHECK(cfs_gc(fs, 0) >= 0);
        cfs_statvfs_t v;
        CHECK_EQ(cfs_statvfs(fs, &v), 0);
        if (v.reclaimable > worst)
            worst = v.reclaimable;
        /* what stays: the commits and checkpoints the passes of this
         * cfs_gc(0) wrote themselves (one per 4 blocks moved, written
         * ahead of the tail), about 6 blocks here */
        CHECK(v.reclaimable <= 8 * 4096);
        /* make some room for the next fill */
        for (int k = 0; k < 6; k++) {
            snprintf(name, sizeof(name), "/f%d", (round * 6 + k) % 40);
            int rc = cfs_remove(fs, name);
            CHECK(rc == 0 || rc == CFS_ERR_NOENT);
        }
    }
    printf("test_fs_unit: cfs_gc(0) between 12 fills of a 128-block device left at most %llu bytes "
           "reclaimable\n", (unsigned long long)worst);
    FSCK(x);
    fx_free(x);
}

/* ---- GC of a file rewritten slot by slot ------------------------------------------
 * The service's manifest is a file of 300-byte slots, each rewritten in
 * place as files come and go, so a segment of it is ~54 small records
 * scattered over the log. Moved piece by piece, each GC pass that met one
 * slot wrote a new extent map of the whole segment (~54 extents) and
 * changed its map key: about 1 KB of log per 300-byte slot, and a 16 MiB
 * /usr of small files ended where no pass gained (test_svc_fill --big,
 * device profile). GC copies such a segment whole (docs/FS.md section 6):
 * after a lap, its version is an extent map of at most 16 extents (1 KiB
 * patches), not one per slot. Read through the map and the record header
 * (fs/cfs_internal.h: the header starts u8 type, u8 flags, u16 len). */
int cfs_map_lookup(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t *addr);
int cfs_flash_read(cfs_t *fs, uint32_t a, void *buf, uint32_t len);

/* extents in the extent map that is the current version of segment 0 of
 * path (-1: the version is not an extent map) */
static int seg0_extents(fx_t *x, const char *path)
{
    cfs_stat_t st;
    uint32_t a;
    uint8_t h[4];
    if (cfs_stat(&x->fs, path, &st) != 0 ||
        cfs_map_lookup(&x->fs, st.ino, 2u << 28, &a) != 0 || /* MKIDX(KIND_SEG, 0) */
        cfs_flash_read(&x->fs, a, h, sizeof(h)) != 0 || h[0] != 4 /* R_EXTMAP */)
        return -1;
    return ((h[2] | h[3] << 8) - 12) / 8; /* (SEG_FIXED, EXT_SIZE) */
}

static void test_gc_slots(void)
{
    enum { SLOT = 300, NSLOT = 54, FILL = 3000 };
    fx_t *x = fx_new(128);
    cfs_t *fs = &x->fs;
    uint8_t *man = malloc(SLOT * NSLOT), fill[FILL];
    fsm_fill(man, SLOT * NSLOT, 5, 0);
    CHECK_EQ(fsm_write_file(fs, "/man", man, SLOT * NSLOT), 0);
    cfs_file_t f, g;
    CHECK_EQ(cfs_file_open(fs, &f, "/man", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_open(fs, &g, "/fill", CFS_O_WRONLY | CFS_O_CREAT), 0);
    /* every slot rewritten, with 3,000 bytes of another file between two */
    for (uint32_t i = 0; i < NSLOT; i++) {
        fsm_fill(man + i * SLOT, SLOT, 100 + i, 0);
        CHECK_EQ(cfs_file_pwrite(fs, &f, man + i * SLOT, SLOT, i * SLOT), SLOT);
        CHECK_EQ(cfs_file_sync(fs, &f), 0);
        fsm_fill(fill, FILL, i, 0);
        CHECK_EQ(cfs_file_write(fs, &g, fill, FILL), FILL);
        CHECK_EQ(cfs_file_sync(fs, &g), 0);
    }
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_file_close(fs, &g), 0);
    CHECK_EQ(cfs_remove(fs, "/fill"), 0);
    /* a lap: the log is down to what is live */
    for (int i = 0; i < 4; i++)
        CHECK(cfs_gc(fs, 0) >= 0);
    int ext = seg0_extents(x, "/man");
    printf("test_fs_unit: a file of %d slots of %d bytes, each rewritten once: after GC its "
           "segment is in %d extents\n", NSLOT, SLOT, ext);
    CHECK(ext >= 1 && ext <= (SLOT * NSLOT + 1023) / 1024);
    for (int pass = 0; pass < 2; pass++) { /* the data is right, and after a remount */
        uint8_t *got = NULL;
        CHECK_EQ(fsm_read_file(fs, "/man", &got), SLOT * NSLOT);
        CHECK(got && memcmp(got, man, SLOT * NSLOT) == 0);
        free(got);
        if (pass == 0)
            fx_remount(x);
    }
    FSCK(x);
    free(man);
    fx_free(x);
}

/* ---- journal checkpoints ------------------------------------------------------------ */
/* A checkpoint with few keys in the journal is one record carrying them
 * (docs/FS.md section 5): it costs under 1 KiB, and a mount after a power
 * cut right after it finds every key again. A GC pass ends with one too. */
int cfs_checkpoint(cfs_t *fs); /* fs/cfs_internal.h */

static void test_journal_checkpoint(void)
{
    fx_t *x = fx_new(256);
    cfs_t *fs = &x->fs;
    for (uint32_t i = 0; i < 10; i++) {
        char p[16];
        snprintf(p, sizeof(p), "/j%u", (unsigned)i);
        CHECK_EQ(put_file(x, p, 3000 + i * 100, i), 0);
    }
    uint64_t before = prog_bytes(x);
    CHECK_EQ(cfs_checkpoint(fs), 0);
    CHECK(prog_bytes(x) - before < 1024); /* one record, no map pages */
    /* a power cut now: mount the flash as it is, no unmount */
    memset(fs, 0xa5, sizeof(*fs));
    CHECK_EQ(cfs_mount(fs, &x->cfg), 0);
    for (uint32_t i = 0; i < 10; i++) {
        char p[16];
        snprintf(p, sizeof(p), "/j%u", (unsigned)i);
        CHECK(file_is(x, p, 3000 + i * 100, i));
    }
    FSCK(x);
    /* rewrite half of them, so GC has stale records to pass, then a pass
     * and another cut */
    for (uint32_t i = 0; i < 10; i += 2) {
        char p[16];
        snprintf(p, sizeof(p), "/j%u", (unsigned)i);
        CHECK_EQ(put_file(x, p, 2000, 50 + i), 0);
    }
    CHECK(cfs_gc(fs, 2) >= 0);
    memset(fs, 0xa5, sizeof(*fs));
    CHECK_EQ(cfs_mount(fs, &x->cfg), 0);
    for (uint32_t i = 0; i < 10; i++) {
        char p[16];
        snprintf(p, sizeof(p), "/j%u", (unsigned)i);
        CHECK(i % 2 ? file_is(x, p, 3000 + i * 100, i) : file_is(x, p, 2000, 50 + i));
    }
    FSCK(x);
    fx_remount(x); /* unmount writes a full one */
    FSCK(x);
    fx_free(x);
}

/* ---- a full partition can always be emptied ---------------------------------------- */
/* Remove prefix0 .. prefix(n-1), in that order: how many were refused. */
static int remove_oldest_first(fx_t *x, const char *prefix, uint32_t n)
{
    char p[24];
    int refused = 0;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(p, sizeof(p), "%s%u", prefix, (unsigned)i);
        refused += cfs_remove(&x->fs, p) != 0;
    }
    return refused;
}

/* Filled until NOSPC with one file in 100-byte writes, or with files of
 * 2,305 bytes: every close and remove succeeds and a new file fits, with
 * no explicit cfs_gc. Before GC copied a segment in many pieces whole,
 * moving 100-byte-write data grew it and the partition was left with too
 * little room to remove the file (docs/FS.md section 6). On 24 MiB, one
 * file of 4 KiB writes: its remove, with the device values, committed and
 * then reported NOSPC from the cleanup of its 1,470 segment keys (the
 * name was gone; the service would have kept its manifest entry). On
 * 8 MiB, files of 2,305 bytes removed oldest first: with the device
 * values every remove after the 42nd of 2,828 failed, until files stopped
 * growing at the room to move (docs/FS.md section 6). The bigger
 * partitions are in make sweep-fill. */
static void test_fill_then_empty(uint32_t blocks, uint32_t chunk)
{
    fx_t *x = fx_new(blocks);
    cfs_t *fs = &x->fs;
    static uint8_t buf[4096]; /* the largest chunk; files of 2,305 bytes */
    fsm_fill(buf, sizeof(buf), 7, 0);
    int refused = 0;
    uint32_t files = 0;
    char p[24];
    if (chunk) {
        cfs_file_t f;
        CHECK_EQ(cfs_file_open(fs, &f, "/fill", CFS_O_WRONLY | CFS_O_CREAT), 0);
        int w;
        while ((w = cfs_file_write(fs, &f, buf, chunk)) == (int)chunk)
            ;
        CHECK_EQ(w, CFS_ERR_NOSPC);
        refused += cfs_file_close(fs, &f) != 0;
        refused += cfs_remove(fs, "/fill") != 0;
        cfs_stat_t st;
        CHECK_EQ(cfs_stat(fs, "/fill", &st), CFS_ERR_NOENT);
    } else {
        for (; files < 20000; files++) {
            snprintf(p, sizeof(p), "/m%u", (unsigned)files);
            if (fsm_write_file(fs, p, buf, 2305) != 0)
                break;
        }
        (void)cfs_remove(fs, p); /* the refused one, if it was created */
        refused += remove_oldest_first(x, "/m", files);
    }
    CHECK_EQ(refused, 0);
    CHECK_EQ(put_file(x, "/after", 5000, 3), 0);
    FSCK(x);
    fx_free(x);
}

/* ---- room to move ------------------------------------------------------------------ */
/* Growth stops where GC could no longer move every key once
 * (cfs_statvfs().move_room, docs/FS.md section 6): a create, a growing
 * write and a truncate up past `total - reserve - move_room` fail with
 * NOSPC and change nothing; no_move_room turns it off (the fill then
 * goes further). On 1 MiB the log ends a fill first (325 files, 326
 * without the room): 4 MiB. */
static uint32_t fill_small(fx_t *x, uint32_t *refused_by_room)
{
    static uint8_t buf[2305];
    fsm_fill(buf, sizeof(buf), 5, 0);
    char p[24];
    uint32_t n = 0;
    *refused_by_room = 0;
    for (; n < 20000; n++) {
        snprintf(p, sizeof(p), "/r%u", (unsigned)n);
        cfs_statvfs_t v;
        CHECK_EQ(cfs_statvfs(&x->fs, &v), 0);
        int e = fsm_write_file(&x->fs, p, buf, sizeof(buf));
        if (e != 0) {
            /* the refused file is not there, or empty (its write refused) */
            cfs_stat_t st;
            int se = cfs_stat(&x->fs, p, &st);
            CHECK(se == CFS_ERR_NOENT || (se == 0 && st.size == 0));
            /* (the room after it counts its keys too: within two files) */
            *refused_by_room =
                v.claimed + 2 * (64 + sizeof(buf)) + v.move_room + v.reserve > v.total;
            (void)cfs_remove(&x->fs, p);
            break;
        }
    }
    return n;
}

static void test_move_room(void)
{
    fx_t *x = fx_new(1024);
    cfs_t *fs = &x->fs;
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    uint64_t empty_room = v.move_room;
    uint32_t by_room;
    uint32_t n = fill_small(x, &by_room);
    CHECK(by_room); /* the room refused it, not the log */
    CHECK_EQ(cfs_statvfs(fs, &v), 0);
    CHECK(v.move_room > empty_room + n * 100u); /* grows with the files */
    CHECK(v.claimed + v.move_room + v.reserve <= v.total);
    /* a growing write and a truncate up are refused, changing nothing */
    cfs_file_t f;
    CHECK_EQ(cfs_file_open(fs, &f, "/r0", CFS_O_WRONLY), 0);
    static uint8_t big[65536];
    CHECK_EQ(cfs_file_pwrite(fs, &f, big, sizeof(big), 2305), CFS_ERR_NOSPC);
    CHECK_EQ(cfs_file_truncate(fs, &f, 2305 + 65536), CFS_ERR_NOSPC);
    CHECK_EQ(cfs_file_size(fs, &f), 2305);
    /* an overwrite in place grows nothing: not refused */
    CHECK_EQ(cfs_file_pwrite(fs, &f, big, 100, 0), 100);
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    FSCK(x);
    /* every file removes, oldest first, and a new one fits */
    CHECK_EQ(remove_oldest_first(x, "/r", n), 0);
    CHECK_EQ(put_file(x, "/after", 5000, 3), 0);
    FSCK(x);
    fx_free(x);
    /* without it the same partition takes more */
    fx_t *y = fx_new(1024);
    y->cfg.no_move_room = 1;
    CHECK_EQ(cfs_unmount(&y->fs), 0);
    CHECK_EQ(cfs_mount(&y->fs, &y->cfg), 0);
    CHECK_EQ(cfs_statvfs(&y->fs, &v), 0);
    CHECK_EQ(v.move_room, 0);
    uint32_t m = fill_small(y, &by_room);
    CHECK(!by_room);
    CHECK(m > n);
    fprintf(stderr, "test_fs_unit: room to move: 1,024 blocks take %u files of 2,305 bytes (%u "
                    "without it)\n", (unsigned)n, (unsigned)m);
    FSCK(y);
    fx_free(y);
}

/* ---- many small writes without a sync ---------------------------------------------- */
/* A file written in 100-byte writes and never synced: every write lands,
 * an automatic sync commits it on the way (a commit walks the pending
 * chain, and took more than 4,096 links for damage: 7,700 writes on the
 * host profile's 48-segment limit failed with CFS_ERR_CORRUPT and the
 * file was lost), and close keeps all of it. */
static void test_small_writes_unsynced(void)
{
    enum { CHUNK = 100, TOTAL = 1000000 };
    fx_t *x = fx_new(1024);
    cfs_t *fs = &x->fs;
    cfs_file_t f;
    uint8_t buf[CHUNK];
    CHECK_EQ(cfs_file_open(fs, &f, "/log", CFS_O_WRONLY | CFS_O_CREAT), 0);
    int bad = 0;
    for (uint32_t off = 0; off < TOTAL; off += CHUNK) {
        for (uint32_t k = 0; k < CHUNK; k++)
            buf[k] = (uint8_t)((off + k) * 13 + ((off + k) >> 10));
        bad += cfs_file_write(fs, &f, buf, CHUNK) != CHUNK;
    }
    CHECK_EQ(bad, 0);
    CHECK(cfs_file_committed_size(fs, &f) > 0); /* synced on the way */
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    fx_remount(x);
    FSCK(x);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/log", &got), TOTAL);
    int same = got != NULL;
    for (uint32_t i = 0; same && i < TOTAL; i++)
        same = got[i] == (uint8_t)(i * 13 + (i >> 10));
    CHECK(same);
    free(got);
    fx_free(x);
}

/* ---- rename_many ------------------------------------------------------------------------- */
static void test_rename_many(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;

    CHECK_EQ(cfs_mkdir(fs, "/stage"), 0);
    CHECK_EQ(cfs_mkdir(fs, "/app"), 0);
    CHECK_EQ(put_file(x, "/app/main.py", 100, 1), 0);
    CHECK_EQ(put_file(x, "/app/lib.py", 200, 2), 0);
    CHECK_EQ(put_file(x, "/app/old.py", 300, 3), 0);
    CHECK_EQ(put_file(x, "/stage/main.py", 110, 11), 0);
    CHECK_EQ(put_file(x, "/stage/lib.py", 220, 12), 0);
    CHECK_EQ(put_file(x, "/stage/new.py", 330, 13), 0);

    /* An update: replace two, add one, remove one. */
    const char *src[] = { "/stage/main.py", "/stage/lib.py", "/stage/new.py",
                          "/app/old.py" };
    const char *dst[] = { "/app/main.py", "/app/lib.py", "/app/new.py", NULL };
    CHECK_EQ(cfs_rename_many(fs, src, dst, 4), 0);
    CHECK(file_is(x, "/app/main.py", 110, 11));
    CHECK(file_is(x, "/app/lib.py", 220, 12));
    CHECK(file_is(x, "/app/new.py", 330, 13));
    CHECK(!exists(x, "/app/old.py"));
    CHECK(!exists(x, "/stage/main.py"));
    fx_remount(x);
    CHECK(file_is(x, "/app/main.py", 110, 11));
    CHECK(file_is(x, "/app/new.py", 330, 13));
    CHECK(!exists(x, "/app/old.py"));

    /* All-or-nothing validation: one bad pair and nothing changes. */
    CHECK_EQ(put_file(x, "/stage/a", 10, 21), 0);
    CHECK_EQ(put_file(x, "/stage/b", 20, 22), 0);
    struct {
        const char *s[3], *d[3];
        int err;
    } bad[] = {
        { { "/stage/a", "/stage/missing", NULL }, { "/app/a", "/app/m", NULL },
          CFS_ERR_NOENT },
        { { "/stage/a", "/stage/b", NULL }, { "/app/a", "/nodir/b", NULL },
          CFS_ERR_NOENT },
        { { "/stage/a", "/stage/b", NULL }, { "/app/a", "/app", NULL },
          CFS_ERR_ISDIR },
        { { "/stage/a", "/stage/b", NULL }, { "/app/a", "/app/main.py/x", NULL },
          CFS_ERR_NOTDIR },
        { { "/stage/a", "/app/missing", NULL }, { "/app/a", NULL, NULL },
          CFS_ERR_NOENT },
        { { "/stage/a", "/app", NULL }, { "/app/a", NULL, NULL },
          CFS_ERR_NOTEMPTY },
        { { "/stage/a", "/stage/b", NULL }, { "/app/a", "", NULL },
          CFS_ERR_INVAL },
        { { "/stage/a", "/stage/a", NULL }, { "/app/a", "/app/a2", NULL },
          CFS_ERR_NOENT }, /* the second sees the first applied */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = cfs_rename_many(fs, bad[i].s, bad[i].d, 2);
        if (rc != bad[i].err)
            fprintf(stderr, "  rename_many case %zu: %d, expected %d\n", i, rc,
                    bad[i].err);
        CHECK_EQ(rc, bad[i].err);
        CHECK(file_is(x, "/stage/a", 10, 21));
        CHECK(file_is(x, "/stage/b", 20, 22));
        CHECK(!exists(x, "/app/a"));
        CHECK(file_is(x, "/app/main.py", 110, 11));
    }
    /* Too many pairs, NULL arrays. */
    const char *s65[CFS_RENAME_MANY_MAX + 1], *d65[CFS_RENAME_MANY_MAX + 1];
    for (int i = 0; i <= CFS_RENAME_MANY_MAX; i++) {
        s65[i] = "/stage/a";
        d65[i] = "/stage/a";
    }
    CHECK_EQ(cfs_rename_many(fs, s65, d65, CFS_RENAME_MANY_MAX + 1), CFS_ERR_INVAL);
    CHECK_EQ(cfs_rename_many(fs, NULL, NULL, 1), CFS_ERR_INVAL);
    CHECK_EQ(cfs_rename_many(fs, src, dst, 0), 0);
    CHECK(file_is(x, "/stage/a", 10, 21));

    /* Sequential semantics: a swap through a temporary name. */
    const char *ss[] = { "/stage/a", "/stage/b", "/stage/tmp" };
    const char *sd[] = { "/stage/tmp", "/stage/a", "/stage/b" };
    CHECK_EQ(cfs_rename_many(fs, ss, sd, 3), 0);
    CHECK(file_is(x, "/stage/a", 20, 22));
    CHECK(file_is(x, "/stage/b", 10, 21));
    CHECK(!exists(x, "/stage/tmp"));

    /* The maximum number of pairs in one step. */
    char names[2 * CFS_RENAME_MANY_MAX][24];
    const char *ms[CFS_RENAME_MANY_MAX], *md[CFS_RENAME_MANY_MAX];
    for (int i = 0; i < CFS_RENAME_MANY_MAX; i++) {
        snprintf(names[2 * i], 24, "/stage/f%02d", i);
        snprintf(names[2 * i + 1], 24, "/app/f%02d", i);
        CHECK_EQ(put_file(x, names[2 * i], (uint32_t)i * 3, (uint32_t)i + 300), 0);
        ms[i] = names[2 * i];
        md[i] = names[2 * i + 1];
    }
    CHECK_EQ(cfs_rename_many(fs, ms, md, CFS_RENAME_MANY_MAX), 0);
    fx_remount(x);
    bool all = true;
    for (int i = 0; i < CFS_RENAME_MANY_MAX; i++)
        all &= file_is(x, md[i], (uint32_t)i * 3, (uint32_t)i + 300) &&
               !exists(x, ms[i]);
    CHECK(all);
    /* Directories move too, and their removal works with NULL. */
    CHECK_EQ(cfs_mkdir(fs, "/stage/newdir"), 0);
    CHECK_EQ(cfs_mkdir(fs, "/gone"), 0);
    const char *ds[] = { "/stage/newdir", "/gone" };
    const char *dd[] = { "/app/newdir", NULL };
    CHECK_EQ(cfs_rename_many(fs, ds, dd, 2), 0);
    CHECK(exists(x, "/app/newdir"));
    CHECK(!exists(x, "/gone"));
    FSCK(x);
    fx_remount(x);
    CHECK(exists(x, "/app/newdir"));
    CHECK(!exists(x, "/gone"));
    FSCK(x);
    fx_free(x);
}

/* ---- big files, replacement by rename, a mount without unmount ---------------------------
 * Many commits of many segment keys since the last checkpoint: the replay at
 * the next mount (as after a power cut) must accept all of them, and space
 * must come back when the files are replaced and removed. */
static void test_big_files_replay(void)
{
    fx_t *x = fx_new(2048); /* 8 MiB */
    const uint32_t big = 2u << 20;
    for (uint32_t r = 0; r < 4; r++) {
        CHECK_EQ(put_file(x, "/.big.tmp", big, 700 + r), 0);
        CHECK_EQ(cfs_rename(&x->fs, "/.big.tmp", "/big"), 0);
        CHECK_EQ(put_file(x, "/small", 1000 + r, 800 + r), 0);
        /* the power is cut: no unmount, RAM state gone */
        memset(&x->fs, 0xa5, sizeof(x->fs));
        CHECK_EQ(cfs_mount(&x->fs, &x->cfg), 0);
        CHECK(file_is(x, "/big", big, 700 + r));
        CHECK(file_is(x, "/small", 1000 + r, 800 + r));
        FSCK(x);
    }
    CHECK_EQ(cfs_remove(&x->fs, "/big"), 0);
    CHECK(cfs_gc(&x->fs, 0) >= 0);
    cfs_statvfs_t v;
    CHECK_EQ(cfs_statvfs(&x->fs, &v), 0);
    CHECK(v.free > v.total / 2); /* the big files' space came back */
    fx_remount(x);
    CHECK(file_is(x, "/small", 1003, 803));
    FSCK(x);
    fx_free(x);
}

/* cfs_file_commit_with: an open file's pending writes and renames in one
 * commit (the service's manifest + bundle step). */
static void test_commit_with(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    cfs_file_t m;
    uint8_t b[3000];

    CHECK_EQ(put_file(x, "/man", 3000, 1), 0);
    CHECK_EQ(put_file(x, "/st1", 500, 2), 0);
    CHECK_EQ(put_file(x, "/st2", 700, 3), 0);
    CHECK_EQ(put_file(x, "/old", 100, 4), 0);
    CHECK_EQ(cfs_file_open(fs, &m, "/man", CFS_O_RDWR), 0);
    fsm_fill(b, sizeof(b), 9, 0);
    CHECK_EQ(cfs_file_pwrite(fs, &m, b, 3000, 0), 3000);
    CHECK_EQ(cfs_file_pwrite(fs, &m, b, 1000, 3000), 1000);
    /* nothing is visible before the commit */
    CHECK(file_is(x, "/man", 3000, 1));
    CHECK(exists(x, "/st1"));
    const char *src[] = { "/st1", "/st2", "/old" };
    const char *dst[] = { "/a", "/b", NULL };
    /* a bad pair changes nothing, and the pending writes stay pending */
    const char *bsrc[] = { "/st1", "/missing" };
    const char *bdst[] = { "/a", "/c" };
    CHECK_EQ(cfs_file_commit_with(fs, &m, bsrc, bdst, 2), CFS_ERR_NOENT);
    CHECK(exists(x, "/st1"));
    CHECK(!exists(x, "/a"));
    /* f itself cannot be replaced */
    const char *ssrc[] = { "/st1" };
    const char *sdst[] = { "/man" };
    CHECK_EQ(cfs_file_commit_with(fs, &m, ssrc, sdst, 1), CFS_ERR_BUSY);
    CHECK_EQ(cfs_file_commit_with(fs, &m, src, dst, 3), 0);
    CHECK(file_is(x, "/a", 500, 2));
    CHECK(file_is(x, "/b", 700, 3));
    CHECK(!exists(x, "/old"));
    CHECK(!exists(x, "/st1"));
    cfs_stat_t st;
    CHECK_EQ(cfs_stat(fs, "/man", &st), 0);
    CHECK_EQ(st.size, 4000u);
    /* the handle goes on: truncate, commit with no renames */
    CHECK_EQ(cfs_file_truncate(fs, &m, 10), 0);
    CHECK_EQ(cfs_file_commit_with(fs, &m, NULL, NULL, 0), 0);
    CHECK_EQ(cfs_stat(fs, "/man", &st), 0);
    CHECK_EQ(st.size, 10u);
    CHECK_EQ(cfs_file_close(fs, &m), 0);
    fx_remount(x);
    CHECK(file_is(x, "/a", 500, 2));
    CHECK(file_is(x, "/b", 700, 3));
    CHECK_EQ(cfs_stat(fs, "/man", &st), 0);
    CHECK_EQ(st.size, 10u);
    CHECK_EQ(cfs_fsck(fs, NULL, NULL), 0);
    /* revert drops pending writes */
    CHECK_EQ(cfs_file_open(fs, &m, "/man", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_pwrite(fs, &m, b, 3000, 0), 3000);
    CHECK_EQ(cfs_file_size(fs, &m), 3000);
    CHECK_EQ(cfs_file_revert(fs, &m), 0);
    CHECK_EQ(cfs_file_size(fs, &m), 10);
    CHECK_EQ(cfs_file_commit_with(fs, &m, NULL, NULL, 0), 0);
    CHECK_EQ(cfs_file_close(fs, &m), 0);
    CHECK_EQ(cfs_stat(fs, "/man", &st), 0);
    CHECK_EQ(st.size, 10u);
    fx_remount(x);
    CHECK_EQ(cfs_stat(fs, "/man", &st), 0);
    CHECK_EQ(st.size, 10u);
    CHECK_EQ(cfs_fsck(fs, NULL, NULL), 0);
    /* A writer that syncs after every small write builds a deep chain of
     * committed patches over a mapped base (15 writes between syncs):
     * reading it
     * back through the same handle must not follow those old marks. */
    CHECK_EQ(cfs_file_open(fs, &m, "/deep", CFS_O_RDWR | CFS_O_CREAT), 0);
    for (uint32_t i = 0; i < 40; i++) {
        for (uint32_t k = 0; k < 15; k++)
            CHECK_EQ(cfs_file_pwrite(fs, &m, b + i * 50 + k, 1, i * 50 + k), 1);
        CHECK_EQ(cfs_file_pwrite(fs, &m, b + i * 50, 50, i * 50), 50);
        CHECK_EQ(cfs_file_sync(fs, &m), 0);
        uint8_t back[2000];
        CHECK_EQ(cfs_file_pread(fs, &m, back, (i + 1) * 50, 0), (int)((i + 1) * 50));
        CHECK(memcmp(back, b, (i + 1) * 50) == 0);
    }
    CHECK_EQ(cfs_file_close(fs, &m), 0);
    /* read-only handles are refused */
    CHECK_EQ(cfs_file_open(fs, &m, "/a", CFS_O_RDONLY), 0);
    CHECK_EQ(cfs_file_commit_with(fs, &m, NULL, NULL, 0), CFS_ERR_BADF);
    CHECK_EQ(cfs_file_close(fs, &m), 0);
    fx_free(x);
}

/* Issue 14: one work area (cfs_config_t.work) serves two mounted partitions
 * used in turn, through GC, checkpoints, listings, renames and a remount;
 * no region is left taken after any call (each call takes and gives back
 * its regions: CFS_ASSERT catches a region taken twice at once). */
static void test_shared_work(void)
{
    flash_sim_config_t sc = { .block_size = 4096, .block_count = 96, .seed = 9 };
    flash_sim_t *sim = flash_sim_new(&sc);
    CHECK(sim != NULL);
    cfs_work_t *w = calloc(1, sizeof(*w));
    cfs_config_t pa = { .dev = flash_sim_dev(sim), .first_block = 0, .block_count = 48, .work = w };
    cfs_config_t pb = pa;
    pb.first_block = 48;
    cfs_t *fa = calloc(1, sizeof(*fa)), *fb = calloc(1, sizeof(*fb));
    CHECK_EQ(cfs_format(fa, &pa), 0);
    CHECK_EQ(cfs_format(fb, &pb), 0);
    CHECK_EQ(cfs_mount(fa, &pa), 0);
    CHECK_EQ(cfs_mount(fb, &pb), 0);
    CHECK_EQ(w->busy, 0);
    static uint8_t buf[20000];
    char name[32];
    /* rewrite files on both until GC has run many times on each */
    for (int round = 0; round < 40; round++) {
        cfs_t *fs = round % 2 ? fb : fa;
        snprintf(name, sizeof(name), "/d%d", round % 3);
        int rc = cfs_mkdir(fs, name);
        CHECK(rc == 0 || rc == CFS_ERR_EXIST);
        snprintf(name, sizeof(name), "/d%d/f%d", round % 3, round % 5);
        fsm_fill(buf, sizeof(buf), (uint32_t)round, 0);
        CHECK_EQ(fsm_write_file(fs, name, buf, sizeof(buf)), 0);
        CHECK_EQ(w->busy, 0);
        /* a listing of the other partition in between */
        cfs_dir_t d;
        char nm[64];
        cfs_stat_t st;
        cfs_t *other = fs == fa ? fb : fa;
        CHECK_EQ(cfs_dir_open(other, &d, "/"), 0);
        while (cfs_dir_read(other, &d, nm, sizeof(nm), &st) == 1)
            CHECK_EQ(w->busy, 0);
        CHECK_EQ(cfs_dir_close(other, &d), 0);
        const char *src[1] = {name};
        char dst[32];
        snprintf(dst, sizeof(dst), "/r%d", round % 4);
        const char *dp[1] = {dst};
        CHECK_EQ(cfs_rename_many(fs, src, dp, 1), 0);
        CHECK_EQ(w->busy, 0);
    }
    CHECK(cfs_gc(fa, 0) >= 0);
    CHECK(cfs_gc(fb, 0) >= 0);
    CHECK_EQ(cfs_fsck(fa, NULL, NULL), 0);
    CHECK_EQ(cfs_fsck(fb, NULL, NULL), 0);
    CHECK_EQ(cfs_unmount(fa), 0);
    CHECK_EQ(cfs_unmount(fb), 0);
    CHECK_EQ(cfs_mount(fb, &pb), 0);
    CHECK_EQ(cfs_mount(fa, &pa), 0);
    for (int k = 0; k < 4; k++) {
        cfs_stat_t st;
        snprintf(name, sizeof(name), "/r%d", k);
        CHECK_EQ(cfs_stat(k % 2 ? fb : fa, name, &st), 0); /* odd rounds: fb */
        CHECK_EQ(st.size, sizeof(buf));
        CHECK_EQ(cfs_stat(k % 2 ? fa : fb, name, &st), CFS_ERR_NOENT);
    }
    /* the newest of each name holds the data of its last round */
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fb, "/r3", &got), (int)sizeof(buf));
    fsm_fill(buf, sizeof(buf), 39, 0);
    CHECK(got && memcmp(got, buf, sizeof(buf)) == 0);
    free(got);
    CHECK_EQ(cfs_fsck(fa, NULL, NULL), 0);
    CHECK_EQ(cfs_fsck(fb, NULL, NULL), 0);
    CHECK_EQ(w->busy, 0);
    /* a region taken twice at once is caught (a child process takes the
     * chunk region by hand, then a lookup takes it again: abort) */
    printf("test_fs_unit: a work area region taken twice: the assertion failure "
           "that follows is expected\n");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        cfs_stat_t st;
        w->busy = 1; /* WORK_CHUNK */
        (void)cfs_stat(fa, "/r0", &st);
        _exit(0); /* not caught */
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK_EQ(cfs_unmount(fa), 0);
    CHECK_EQ(cfs_unmount(fb), 0);
    free(fa);
    free(fb);
    free(w);
    flash_sim_free(sim);
}

/* ---- a failed read leaves nothing behind ------------------------------------------ */

/* One step of test_read_fault_retry: each undoes the previous one's
 * effect, so a step retried after a failure has the same job to do. */
static int rf_step(fx_t *x, int k)
{
    cfs_stat_t st;
    cfs_file_t f;
    int rc;
    switch (k) {
    case 0: /* a whole file rewritten */
        return put_file(x, "/d/a", 3000, x->now++);
    case 1: { /* a file read whole */
        uint8_t b[3000];
        rc = cfs_file_open(&x->fs, &f, "/d/f5", CFS_O_RDONLY);
        if (rc)
            return rc;
        rc = cfs_file_read(&x->fs, &f, b, sizeof(b));
        int rc2 = cfs_file_close(&x->fs, &f);
        return rc < 0 ? rc : rc2;
    }
    case 2:
        return cfs_stat(&x->fs, "/d/f7", &st);
    case 3: /* rename there and back */
        if (cfs_stat(&x->fs, "/d/b", &st) == 0)
            return cfs_rename(&x->fs, "/d/b", "/d/c");
        return cfs_rename(&x->fs, "/d/c", "/d/b");
    case 4:
        if (cfs_stat(&x->fs, "/d/x", &st) == 0)
            return cfs_rmdir(&x->fs, "/d/x");
        return cfs_mkdir(&x->fs, "/d/x");
    default: { /* a patch in the middle of a file, synced */
        uint8_t b[100];
        memset(b, 'p', sizeof(b));
        rc = cfs_file_open(&x->fs, &f, "/d/f9", CFS_O_WRONLY);
        if (rc)
            return rc;
        rc = cfs_file_pwrite(&x->fs, &f, b, sizeof(b), 500);
        if (rc >= 0)
            rc = cfs_file_sync(&x->fs, &f);
        int rc2 = cfs_file_close(&x->fs, &f);
        return rc < 0 ? rc : rc2;
    }
    }
}

/* A read that fails (FLASH_ERR_IO) at every read of an operation in turn,
 * once or from there on: the operation fails or not, but the next attempt
 * without faults succeeds, the tree shows the old state or the new one,
 * and fsck is clean (a fault must leave no state in RAM behind: a held
 * work area, an operation left open, a half-applied map change). */
static void test_read_fault_retry(void)
{
    fx_t *x = fx_new(128);
    uint32_t failed = 0, points = 0;
    CHECK_EQ(cfs_mkdir(&x->fs, "/d"), 0);
    for (uint32_t i = 0; i < 40; i++) {
        char p[16];
        snprintf(p, sizeof(p), "/d/f%u", i);
        CHECK_EQ(put_file(x, p, 3000, i), 0);
    }
    CHECK_EQ(put_file(x, "/d/a", 3000, 99), 0);
    CHECK_EQ(put_file(x, "/d/b", 3000, 98), 0);
    for (int k = 0; k < 6; k++) {
        for (int from_on = 0; from_on < 2; from_on++) {
            for (uint64_t n = 1; n < 2000; n++) {
                uint64_t r0 = flash_sim_reads(x->sim);
                flash_sim_read_fault(x->sim, n, from_on ? UINT64_MAX : n, true);
                int rc = rf_step(x, k);
                flash_sim_read_fault(x->sim, 0, 0, false);
                if (rc == 0 && n > flash_sim_reads(x->sim) - r0)
                    break; /* past the step's last read */
                points++;
                failed += rc != 0;
                cfs_stat_t st;
                int hb = cfs_stat(&x->fs, "/d/b", &st) == 0;
                int hc = cfs_stat(&x->fs, "/d/c", &st) == 0;
                CHECK_EQ(hb + hc, 1); /* a rename is old or new */
                if (rc != 0) {
                    rc = rf_step(x, k);
                    if (rc != 0)
                        fprintf(stderr, "read fault: step %d, read %llu%s: the retry "
                                "failed: %s\n", k, (unsigned long long)n,
                                from_on ? " on" : "", cfs_strerror(rc));
                    CHECK_EQ(rc, 0);
                }
            }
        }
        FSCK(x);
    }
    /* the fault was met, and made operations fail */
    CHECK(points > 200);
    CHECK(failed > points / 2);
    printf("test_fs_unit: read faults at %u points of 6 operations, %u of them failed; "
           "every retry after a failure succeeded\n", points, failed);
    fx_remount(x);
    FSCK(x);
    CHECK(file_is(x, "/d/f7", 3000, 7));
    fx_free(x);
}

/* ---- a chain link read under noise that repeats -------------------------------
 * A commit finds the keys of a pending chain by following each record's
 * link to the one before. The link was read twice and the reads compared;
 * under heavy noise the same flip came on both reads, and a remove's commit
 * followed a stale chain of an earlier operation (test_fs_gcfail's noise
 * runs, seed 399). A weak bit that flips on the next two reads of the link
 * (each bit of its first byte in turn): cfs_chain_prev gives the true link
 * or an error, never the flipped one - for a segment record (link in its
 * checked fixed part) and a directory chunk (link under its checksum). */
static void chain_link_weak(fx_t *x, uint32_t rec, uint32_t link_off, int *flipped)
{
    rec_hdr_t h;
    uint32_t want, got;
    CHECK_EQ(cfs_rec_read_hdr(&x->fs, rec, &h), 0);
    CHECK_EQ(cfs_chain_prev(&x->fs, rec, &h, &want), 0);
    for (int bit = 0; bit < 8; bit++) {
        /* (the partition is the whole device, in one piece: a record
         * address is its byte address) */
        flash_sim_read_weak(x->sim, rec + REC_HDR + link_off, bit, 2);
        int rc = cfs_chain_prev(&x->fs, rec, &h, &got);
        flash_sim_read_weak(x->sim, 0, 0, 0);
        CHECK(rc == 0 || rc == CFS_ERR_CORRUPT || rc == CFS_ERR_IO);
        if (rc == 0 && got != want) {
            fprintf(stderr, "  link of record %u: %08x read as %08x\n", rec, want, got);
            (*flipped)++;
        }
    }
}

static void test_chain_link_noise(void)
{
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    CHECK_EQ(put_file(x, "/f", 40000, 3), 0);
    cfs_file_t f;
    uint8_t b[100];
    memset(b, 7, sizeof(b));
    CHECK_EQ(cfs_file_open(fs, &f, "/f", CFS_O_RDWR), 0);
    CHECK_EQ(cfs_file_pwrite(fs, &f, b, sizeof(b), 10), (int)sizeof(b));
    CHECK_EQ(cfs_file_pwrite(fs, &f, b, sizeof(b), 20000), (int)sizeof(b));
    int flipped = 0;
    CHECK(f.pending_tail != CFS_ADDR_NONE);
    chain_link_weak(x, f.pending_tail, 4, &flipped); /* PATCH: base, prev */
    uint32_t chunk;
    CHECK_EQ(cfs_map_lookup(fs, ROOT_INO, MKIDX(KIND_DIR, 0), &chunk), 0);
    chain_link_weak(x, chunk, 0, &flipped); /* DIRCHUNK: prev, entries */
    CHECK_EQ(flipped, 0);
    /* and the commit still finds the chain */
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    uint8_t *got = NULL;
    CHECK_EQ(fsm_read_file(fs, "/f", &got), 40000);
    CHECK(got && memcmp(got + 10, b, sizeof(b)) == 0 && memcmp(got + 20000, b, sizeof(b)) == 0);
    free(got);
    FSCK(x);
    fx_free(x);
}

/* ---- an extent map read under noise that repeats, while GC rebuilds it --------
 * GC that moves a piece of a segment in many pieces writes a new extent
 * map, built from the entries of the old one. Each entry is read twice
 * and compared; under heavy noise the same flip came on both reads, and an
 * extent's offset misread by 32 made a 32-byte hole in committed data
 * (test_fs_gcfail's noise runs, seed 107). Swept from one image: a weak
 * bit in an entry's offset (bit 5: off by 32; bit 3: by 8) that flips on
 * two reads in a row after the first K reads of it come back right,
 * K = 0..47, while cfs_seg_relocate
 * moves the entry's piece (as a GC pass does) and its relocation is
 * committed: the move fails, or the file reads back the same bytes. */
static void test_extmap_noise(uint32_t piece, int bit)
{
    enum { LEN = 200 * 64 };
    fx_t *x = fx_new(64);
    cfs_t *fs = &x->fs;
    uint8_t *want = malloc(LEN);
    fsm_fill(want, LEN, 5, 0);
    /* appended in pieces, each synced: the bottom of the version is an
     * extent map whose every entry is read (64-byte pieces: 200 of them,
     * which GC copies whole; 400-byte pieces: 32, which it maps anew) */
    cfs_file_t f;
    CHECK_EQ(cfs_file_open(fs, &f, "/g", CFS_O_RDWR | CFS_O_CREAT), 0);
    for (uint32_t off = 0; off < LEN; off += piece) {
        CHECK_EQ(cfs_file_write(fs, &f, want + off, piece), (int)piece);
        CHECK_EQ(cfs_file_sync(fs, &f), 0);
    }
    CHECK_EQ(cfs_file_close(fs, &f), 0);
    CHECK_EQ(cfs_unmount(fs), 0);
    uint64_t size = flash_sim_size(x->sim);
    uint8_t *image = malloc(size);
    memcpy(image, flash_sim_data(x->sim), size);
    int bad = 0, moved = 0;
    for (uint32_t skip = 0; skip < 48; skip++) {
        memcpy(flash_sim_data(x->sim), image, size);
        CHECK_EQ(cfs_mount(fs, &x->cfg), 0);
        cfs_stat_t st;
        uint32_t ext, rec;
        uint8_t ent[8];
        CHECK_EQ(cfs_stat(fs, "/g", &st), 0);
        CHECK_EQ(cfs_map_lookup(fs, st.ino, MKIDX(KIND_SEG, 0), &ext), 0);
        /* the extent map under the version's patches (each PATCH's fixed
         * part starts with the version it lies over) */
        rec_hdr_t h;
        for (int d = 0; d < 64 && cfs_rec_read_hdr(fs, ext, &h) == 0 && h.type == R_PATCH; d++)
            CHECK_EQ(cfs_flash_read(fs, ext + REC_HDR, &ext, 4), 0); /* (little-endian host) */
        CHECK(cfs_rec_read_hdr(fs, ext, &h) == 0 && h.type == R_EXTMAP &&
              h.len >= SEG_FIXED + 8 * 8);
        /* the third entry {u16 off, u16 len, u32 record}; the partition
         * is the whole device, in one piece: addresses are byte addresses */
        uint32_t at = ext + REC_HDR + SEG_FIXED + 2 * 8;
        CHECK_EQ(cfs_flash_read(fs, at, ent, sizeof(ent)), 0);
        rec = (uint32_t)ent[4] | (uint32_t)ent[5] << 8 | (uint32_t)ent[6] << 16 |
              (uint32_t)ent[7] << 24;
        /* a handle with a pending write on the file, as in the noise run:
         * GC then rebuilds the map rather than covering the piece */
        cfs_file_t h2;
        CHECK_EQ(cfs_file_open(fs, &h2, "/g", CFS_O_RDWR), 0);
        CHECK_EQ(cfs_file_pwrite(fs, &h2, "x", 1, LEN - 1), 1);
        flash_sim_read_weak_after(x->sim, at, bit, skip, 2);
        commit_t c;
        c.chain_tail = CFS_ADDR_NONE;
        c.n = 0;
        uint32_t lo = rec / 4096 * 4096;
        int rc = cfs_seg_relocate(fs, st.ino, MKIDX(KIND_SEG, 0), rec, lo, lo + 4096, &c);
        if (rc == 0)
            rc = cfs_commit(fs, &c, 0, NULL, NULL);
        flash_sim_read_weak(x->sim, 0, 0, 0);
        CHECK_EQ(cfs_file_revert(fs, &h2), 0);
        CHECK_EQ(cfs_file_close(fs, &h2), 0);
        moved += rc == 0;
        uint8_t *got = NULL;
        if (fsm_read_file(fs, "/g", &got) != LEN || memcmp(got, want, LEN) != 0) {
            fprintf(stderr, "  weak after %u reads: the moved segment reads back wrong (rc %d)\n",
                    skip, rc);
            bad++;
        }
        free(got);
        CHECK_EQ(cfs_unmount(fs), 0);
    }
    printf("test_fs_unit: extent map of %u-byte pieces, bit %d of an offset weak: %d of 48 "
           "moves committed, %d read back wrong\n", piece, bit, moved, bad);
    CHECK_EQ(bad, 0);
    CHECK(moved > 0);
    CHECK_EQ(cfs_mount(fs, &x->cfg), 0);
    FSCK(x);
    free(image);
    free(want);
    fx_free(x);
}

int main(void)
{
    test_lifecycle();
    test_open_flags();
    test_rw_seek();
    test_sync_visibility();
    test_many_open();
    test_remove_rename();
    test_dirs();
    test_names();
    test_times();
    test_sizes();
    test_space();
    test_nospc();
    test_gc_fragmented();
    test_gc_between_fills();
    test_small_writes_unsynced();
    test_journal_checkpoint();
    test_fill_then_empty(256, 100);
    test_fill_then_empty(1024, 100);
    test_fill_then_empty(1024, 0);
    test_fill_then_empty(2048, 0);
    test_fill_then_empty(6144, 4096);
    test_move_room();
    test_gc_slots();
    test_rename_many();
    test_commit_with();
    test_big_files_replay();
    test_shared_work();
    test_read_fault_retry();
    test_chain_link_noise();
    test_extmap_noise(64, 5);
    test_extmap_noise(400, 3);
    return check_summary("test_fs_unit");
}
