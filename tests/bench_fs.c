/*
 * bench_fs.c - flash cost of the cellar filesystem on the NOR simulator.
 *
 *   build/rel/tests/bench_fs OUT.json      (make bench-fs)
 *
 * Every workload runs on a freshly formatted, RAM-backed 4 MiB NOR
 * (4096-byte blocks, 256-byte pages, prog size 1; BRIEF.md's flash model)
 * through the public API in fs/cfs.h only. Counters are reset after
 * format + mount unless a workload says otherwise. For each workload the
 * table shows bytes read, bytes programmed, erases, programmed/user bytes
 * and simulated flash time, with the target and littlefs's figure beside it.
 *
 *   W1  one 1 MiB file written in 4 KiB writes, closed
 *   W2  4,096 appends of 64 bytes, each followed by cfs_file_sync
 *   W3  1,000 files of 100-2,000 bytes in 10 directories, unmount; then
 *       separately: cfs_mount, cfs_statvfs, cfs_stat of one file, and the first
 *       new 5,000-byte file after the mount; the mount again on 64 MiB
 *   W4  2 MiB of static files, then 10 hot 16 KiB files rewritten
 *       round-robin until 50x the device capacity was written: wear spread
 *       and static-data movement
 *   W4f the W4 workload on a device whose live data is 90% of its usable
 *       bytes, hot files rewritten in 4 KiB writes: the worst simulated
 *       flash time of one fs call (open, write or close) and which it was;
 *       W4f80 and W4f85 the same at 80% and 85% (no target: how the cost
 *       of a call grows with the fill)
 *   W5  a 256 KiB file, 1,000 random 16-byte pwrites each followed by sync
 *   RAM sizeof(cfs_t) + 4 * sizeof(cfs_file_t)
 *
 * Targets are marked PASS/FAIL in the table and the JSON; the exit status is
 * 0 regardless (benchmarks report, they do not fail builds) unless an fs call
 * fails or data reads back wrong (exit 1, with the error on stderr).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flash_sim.h"
#include "cfs.h"

#define KIB 1024u
#define MIB (1024u * 1024u)
#define BLOCK_SIZE 4096u
#define PAGE_SIZE 256u
#define BLOCKS_4M 1024u
#define BLOCKS_64M 16384u

/* ---- results ------------------------------------------------------------ */
#define MAX_TARGETS 2
#define MAX_EXTRAS 16
#define MAX_ROWS 16

typedef struct target {
    const char *metric; /* "prog/user", "bytes read", ... */
    const char *op;     /* "<=" or "<" */
    double limit;
    double value;
    bool pass;
    const char *littlefs; /* littlefs's figure as published, or NULL */
    double littlefs_value;
} target_t;

typedef struct extra {
    const char *key;
    double value;
} extra_t;

typedef struct row {
    const char *id;
    const char *desc;
    bool has_io;       /* flash counters measured */
    uint64_t user;     /* user bytes written (0: no ratio) */
    flash_sim_stats_t st;
    double wall_s;
    int ntargets;
    target_t t[MAX_TARGETS];
    int nextras;
    extra_t x[MAX_EXTRAS];
} row_t;

static row_t rows[MAX_ROWS];
static int nrows;

static void die(const char *fmt, ...);

static row_t *row_new(const char *id, const char *desc)
{
    row_t *r;
    if (nrows >= MAX_ROWS) {
        die("too many rows");
    }
    r = &rows[nrows++];
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->desc = desc;
    return r;
}

static void row_io(row_t *r, flash_sim_t *sim, uint64_t user)
{
    r->has_io = true;
    r->user = user;
    flash_sim_stats(sim, &r->st);
}

static double row_ratio(const row_t *r)
{
    return r->user ? (double)r->st.bytes_programmed / (double)r->user : 0.0;
}

static void row_target(row_t *r, const char *metric, const char *op,
                       double limit, double value, const char *littlefs,
                       double littlefs_value)
{
    target_t *t;
    if (r->ntargets >= MAX_TARGETS) {
        die("%s: too many targets", r->id);
    }
    t = &r->t[r->ntargets++];
    t->metric = metric;
    t->op = op;
    t->limit = limit;
    t->value = value;
    t->pass = strcmp(op, "<") == 0 ? value < limit : value <= limit;
    t->littlefs = littlefs;
    t->littlefs_value = littlefs_value;
}

static void row_extra(row_t *r, const char *key, double value)
{
    if (r->nextras >= MAX_EXTRAS) {
        die("%s: too many details", r->id);
    }
    r->x[r->nextras].key = key;
    r->x[r->nextras].value = value;
    r->nextras++;
}

/* ---- helpers ------------------------------------------------------------ */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bench_fs: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

/* Run an fs call; on a negative result print it and exit 1. */
#define TRY(call) do { \
    int try_r_ = (int)(call); \
    if (try_r_ < 0) { \
        die("%s:%d: %s: %s (%d)", __FILE__, __LINE__, #call, \
            cfs_strerror(try_r_), try_r_); \
    } \
} while (0)

/* splitmix64: deterministic sizes, offsets and contents. */
static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Contents reproducible from (seed, offset) so files can be checked. */
static void fill(uint8_t *buf, uint32_t len, uint64_t seed, uint32_t off)
{
    uint32_t i;
    for (i = 0; i < len; i++) {
        uint64_t x = seed * 0x100000001b3ull + (off + i) / 8;
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ull;
        x ^= x >> 32;
        buf[i] = (uint8_t)(x >> (8 * ((off + i) % 8)));
    }
}

typedef struct bench_fs {
    flash_sim_t *sim;
    cfs_config_t cfg;
    cfs_t fs;
    bool mounted;
} bench_fs_t;

/* A fresh RAM device, formatted and mounted, counters reset. */
static void fresh(bench_fs_t *b, uint32_t blocks)
{
    flash_sim_config_t sc = {
        .block_size = BLOCK_SIZE,
        .block_count = blocks,
        .page_size = PAGE_SIZE,
        .path = NULL,
        .seed = 1,
    };

    memset(b, 0, sizeof(*b));
    b->sim = flash_sim_new(&sc);
    if (b->sim == NULL) {
        die("flash_sim_new(%u blocks) failed", blocks);
    }
    b->cfg.dev = flash_sim_dev(b->sim);
    TRY(cfs_format(&b->fs, &b->cfg));
    TRY(cfs_mount(&b->fs, &b->cfg));
    b->mounted = true;
    flash_sim_reset_stats(b->sim);
}

static void release(bench_fs_t *b)
{
    flash_sim_stats_t st;

    if (b->mounted) {
        TRY(cfs_unmount(&b->fs));
        b->mounted = false;
    }
    flash_sim_stats(b->sim, &st);
    if (st.illegal_progs != 0) {
        die("the filesystem attempted %llu illegal progs",
            (unsigned long long)st.illegal_progs);
    }
    flash_sim_free(b->sim);
    b->sim = NULL;
}

static void check_illegal(flash_sim_t *sim, const char *where)
{
    flash_sim_stats_t st;
    flash_sim_stats(sim, &st);
    if (st.illegal_progs != 0) {
        die("%s: the filesystem attempted %llu illegal progs (0 -> 1)", where,
            (unsigned long long)st.illegal_progs);
    }
}

/* Write a whole file of `len` bytes with contents fill(seed), in `chunk`
 * writes, and close it. */
static void write_file(cfs_t *fs, const char *path, int flags, uint32_t len,
                       uint64_t seed, uint32_t chunk)
{
    static uint8_t buf[64 * 1024];
    cfs_file_t f;
    uint32_t off;

    if (chunk > sizeof(buf)) {
        chunk = sizeof(buf);
    }
    TRY(cfs_file_open(fs, &f, path, flags));
    for (off = 0; off < len; off += chunk) {
        uint32_t n = len - off < chunk ? len - off : chunk;
        int r;
        fill(buf, n, seed, off);
        r = cfs_file_write(fs, &f, buf, n);
        TRY(r);
        if ((uint32_t)r != n) {
            die("%s: short write %d of %u", path, r, n);
        }
    }
    TRY(cfs_file_close(fs, &f));
}

/* Read a file back and compare with fill(seed). */
static void verify_file(cfs_t *fs, const char *path, uint32_t len,
                        uint64_t seed)
{
    static uint8_t got[4096], want[4096];
    cfs_file_t f;
    uint32_t off = 0;

    TRY(cfs_file_open(fs, &f, path, CFS_O_RDONLY));
    for (;;) {
        int r = cfs_file_read(fs, &f, got, sizeof(got));
        TRY(r);
        if (r == 0) {
            break;
        }
        if (off + (uint32_t)r > len) {
            die("%s: longer than %u bytes", path, len);
        }
        fill(want, (uint32_t)r, seed, off);
        if (memcmp(got, want, (size_t)r) != 0) {
            die("%s: data differs in [%u, %u)", path, off, off + (uint32_t)r);
        }
        off += (uint32_t)r;
    }
    if (off != len) {
        die("%s: %u bytes read back, %u written", path, off, len);
    }
    TRY(cfs_file_close(fs, &f));
}

/* ---- W1 ------------------------------------------------------------------ */
static void bench_w1(void)
{
    bench_fs_t b;
    double t0 = now_s();
    row_t *r = row_new("W1", "1 MiB file in 4 KiB writes");

    fresh(&b, BLOCKS_4M);
    write_file(&b.fs, "/big", CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC, MIB, 1,
               4 * KIB);
    row_io(r, b.sim, MIB);
    r->wall_s = now_s() - t0;
    row_target(r, "prog/user", "<=", 1.01, row_ratio(r), "1.002", 1.002);
    check_illegal(b.sim, "W1");
    verify_file(&b.fs, "/big", MIB, 1);
    release(&b);
}

/* ---- W2 ------------------------------------------------------------------ */
static void bench_w2(void)
{
    bench_fs_t b;
    cfs_file_t f;
    uint8_t buf[64];
    uint32_t i;
    double t0 = now_s();
    row_t *r = row_new("W2", "4096 x 64 B append + sync");

    fresh(&b, BLOCKS_4M);
    TRY(cfs_file_open(&b.fs, &f, "/log",
                     CFS_O_WRONLY | CFS_O_CREAT | CFS_O_APPEND));
    for (i = 0; i < 4096; i++) {
        int n;
        fill(buf, sizeof(buf), 2, i * 64);
        n = cfs_file_write(&b.fs, &f, buf, sizeof(buf));
        TRY(n);
        if (n != (int)sizeof(buf)) {
            die("W2: short write %d", n);
        }
        TRY(cfs_file_sync(&b.fs, &f));
    }
    TRY(cfs_file_close(&b.fs, &f));
    row_io(r, b.sim, 4096 * 64);
    r->wall_s = now_s() - t0;
    row_target(r, "prog/user", "<=", 3.0, row_ratio(r), "33", 33);
    row_target(r, "erases", "<", 4183, (double)r->st.erases, "4183", 4183);
    check_illegal(b.sim, "W2");
    verify_file(&b.fs, "/log", 4096 * 64, 2);
    release(&b);
}

/* ---- W3 ------------------------------------------------------------------ */
#define W3_FILES 1000
#define W3_DIRS 10

static uint32_t w3_size[W3_FILES];

static void w3_path(char *p, size_t n, int i)
{
    snprintf(p, n, "/d%d/f%04d", i % W3_DIRS, i);
}

/* Builds the W3 tree on a fresh device and unmounts it. Returns the user
 * bytes written; counters cover the build. */
static uint64_t w3_build(bench_fs_t *b, uint32_t blocks)
{
    char path[32];
    uint64_t user = 0;
    int i;

    fresh(b, blocks);
    rng_state = 3;
    for (i = 0; i < W3_DIRS; i++) {
        snprintf(path, sizeof(path), "/d%d", i);
        TRY(cfs_mkdir(&b->fs, path));
    }
    for (i = 0; i < W3_FILES; i++) {
        w3_size[i] = 100 + (uint32_t)(rnd() % 1901);
        w3_path(path, sizeof(path), i);
        write_file(&b->fs, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_EXCL,
                   w3_size[i], 1000 + (uint64_t)i, 4 * KIB);
        user += w3_size[i];
    }
    TRY(cfs_unmount(&b->fs));
    b->mounted = false;
    return user;
}

static void bench_w3(void)
{
    bench_fs_t b;
    cfs_statvfs_t sv;
    cfs_stat_t st;
    char path[32];
    double t0 = now_s();
    uint64_t user;
    int i;
    row_t *rb = row_new("W3", "1000 files in 10 dirs + unmount");
    row_t *rm, *rv, *rs, *rw, *r64;
    double mount4;

    user = w3_build(&b, BLOCKS_4M);
    row_io(rb, b.sim, user);
    rb->wall_s = now_s() - t0;
    check_illegal(b.sim, "W3 build");

    rm = row_new("W3m", "  cfs_mount after W3");
    flash_sim_reset_stats(b.sim);
    t0 = now_s();
    TRY(cfs_mount(&b.fs, &b.cfg));
    b.mounted = true;
    row_io(rm, b.sim, 0);
    rm->wall_s = now_s() - t0;
    mount4 = (double)rm->st.bytes_read;
    row_target(rm, "bytes read", "<=", 32 * KIB, mount4, "65 KB", 65e3);

    rv = row_new("W3v", "  cfs_statvfs after mount");
    flash_sim_reset_stats(b.sim);
    t0 = now_s();
    TRY(cfs_statvfs(&b.fs, &sv));
    row_io(rv, b.sim, 0);
    rv->wall_s = now_s() - t0;
    row_target(rv, "bytes read", "<=", 16 * KIB, (double)rv->st.bytes_read,
               "461 KB", 461e3);
    row_extra(rv, "files", sv.files);
    row_extra(rv, "dirs", sv.dirs);
    row_extra(rv, "free_bytes", (double)sv.free);
    row_extra(rv, "live_bytes", (double)sv.live);
    if (sv.files != W3_FILES) {
        fprintf(stderr, "bench_fs: W3: statvfs reports %u files, not %d\n",
                sv.files, W3_FILES);
    }

    rs = row_new("W3s", "  cfs_stat of one file");
    w3_path(path, sizeof(path), 503);
    flash_sim_reset_stats(b.sim);
    t0 = now_s();
    TRY(cfs_stat(&b.fs, path, &st));
    row_io(rs, b.sim, 0);
    rs->wall_s = now_s() - t0;
    if (st.type != CFS_TYPE_FILE || st.size != w3_size[503]) {
        die("W3: cfs_stat(%s) gave type %d size %u, want file of %u", path,
            (int)st.type, st.size, w3_size[503]);
    }

    rw = row_new("W3w", "  first 5000 B file after mount");
    flash_sim_reset_stats(b.sim);
    t0 = now_s();
    write_file(&b.fs, "/new", CFS_O_WRONLY | CFS_O_CREAT | CFS_O_EXCL, 5000, 7,
               5000);
    row_io(rw, b.sim, 5000);
    rw->wall_s = now_s() - t0;
    row_target(rw, "bytes read", "<=", 16 * KIB, (double)rw->st.bytes_read,
               "467 KB", 467e3);
    check_illegal(b.sim, "W3");

    /* Everything still reads back. */
    for (i = 0; i < W3_FILES; i++) {
        w3_path(path, sizeof(path), i);
        verify_file(&b.fs, path, w3_size[i], 1000 + (uint64_t)i);
    }
    verify_file(&b.fs, "/new", 5000, 7);
    release(&b);

    /* The same tree on 64 MiB: the mount must not grow with the device.
     * (Not with a CFS_DIRPAGES_MAX too small for 64 MiB, issue 14's device
     * values: such a partition is refused.) */
    if (((BLOCKS_64M - 2) / 2 < 4096 ? (BLOCKS_64M - 2) / 2 : 4096) > CFS_DIRPAGES_MAX * 64) {
        printf("W3m64 skipped: 64 MiB needs more than CFS_DIRPAGES_MAX (%d) map pages\n",
               CFS_DIRPAGES_MAX);
        return;
    }
    r64 = row_new("W3m64", "  cfs_mount, W3 on 64 MiB");
    w3_build(&b, BLOCKS_64M);
    flash_sim_reset_stats(b.sim);
    t0 = now_s();
    TRY(cfs_mount(&b.fs, &b.cfg));
    b.mounted = true;
    row_io(r64, b.sim, 0);
    r64->wall_s = now_s() - t0;
    row_target(r64, "x 4 MiB mount", "<=", 2.0,
               mount4 > 0 ? (double)r64->st.bytes_read / mount4 : 0.0, NULL,
               0);
    row_extra(r64, "mount_read_4mib", mount4);
    row_extra(r64, "mount_read_64mib", (double)r64->st.bytes_read);
    check_illegal(b.sim, "W3 64 MiB");
    release(&b);
}

/* ---- W4 ------------------------------------------------------------------ */
#define W4_STATIC_FILES 32
#define W4_STATIC_SIZE (64 * KIB)
#define W4_HOT_FILES 10
#define W4_HOT_SIZE (16 * KIB)
#define W4_CHUNKS (W4_STATIC_SIZE / PAGE_SIZE)
#define W4_MARK "cellar-static-mark"
#define W4_MARK_LEN 18 /* + file, chunk (2 bytes each) */

/* Static file contents: fill(), with a marker at the start of every 256
 * bytes so the bench can find where the filesystem put the data on flash. */
static void w4_static_fill(uint8_t *buf, uint32_t file)
{
    uint32_t c;
    fill(buf, W4_STATIC_SIZE, 4000 + file, 0);
    for (c = 0; c < W4_CHUNKS; c++) {
        uint8_t *p = buf + c * PAGE_SIZE;
        memcpy(p, W4_MARK, W4_MARK_LEN);
        p[W4_MARK_LEN + 0] = (uint8_t)file;
        p[W4_MARK_LEN + 1] = (uint8_t)(file >> 8);
        p[W4_MARK_LEN + 2] = (uint8_t)c;
        p[W4_MARK_LEN + 3] = (uint8_t)(c >> 8);
    }
}

/* Scan the raw flash for markers: loc[file][chunk] = first address found
 * (UINT32_MAX if none). Returns the number found. */
static uint32_t w4_scan(flash_sim_t *sim, uint32_t *loc)
{
    const uint8_t *d = flash_sim_data(sim);
    uint64_t size = flash_sim_size(sim), a;
    uint32_t found = 0;

    for (a = 0; a < (uint64_t)W4_STATIC_FILES * W4_CHUNKS; a++) {
        loc[a] = UINT32_MAX;
    }
    for (a = 0; a + W4_MARK_LEN + 4 <= size; a++) {
        const uint8_t *p = memchr(d + a, W4_MARK[0], size - a);
        uint32_t file, chunk;
        if (p == NULL) {
            break;
        }
        a = (uint64_t)(p - d);
        if (a + W4_MARK_LEN + 4 > size ||
            memcmp(p, W4_MARK, W4_MARK_LEN) != 0) {
            continue;
        }
        file = p[W4_MARK_LEN] | (uint32_t)p[W4_MARK_LEN + 1] << 8;
        chunk = p[W4_MARK_LEN + 2] | (uint32_t)p[W4_MARK_LEN + 3] << 8;
        if (file < W4_STATIC_FILES && chunk < W4_CHUNKS &&
            loc[file * W4_CHUNKS + chunk] == UINT32_MAX) {
            loc[file * W4_CHUNKS + chunk] = (uint32_t)a;
            found++;
        }
    }
    return found;
}

static void bench_w4(void)
{
    static uint8_t sbuf[W4_STATIC_SIZE], hbuf[W4_HOT_SIZE];
    static uint32_t loc0[W4_STATIC_FILES * W4_CHUNKS];
    static uint32_t erase0[BLOCKS_4M];
    static uint8_t static_block[BLOCKS_4M];
    bench_fs_t b;
    cfs_statvfs_t sv;
    flash_sim_wear_t w;
    char path[32];
    double t0 = now_s();
    const uint64_t cap = (uint64_t)BLOCKS_4M * BLOCK_SIZE;
    uint64_t user = 0, rewrites = 0;
    uint32_t i, found0, moved = 0, tracked = 0, nstatic_blocks = 0;
    uint32_t static_blocks_erased = 0, blocks_untouched = 0;
    row_t *r = row_new("W4", "static 2 MiB + hot rewrites, 50x cap");

    fresh(&b, BLOCKS_4M);
    TRY(cfs_mkdir(&b.fs, "/static"));
    TRY(cfs_mkdir(&b.fs, "/hot"));
    for (i = 0; i < W4_STATIC_FILES; i++) {
        cfs_file_t f;
        int n;
        snprintf(path, sizeof(path), "/static/s%02u", i);
        w4_static_fill(sbuf, i);
        TRY(cfs_file_open(&b.fs, &f, path,
                         CFS_O_WRONLY | CFS_O_CREAT | CFS_O_EXCL));
        n = cfs_file_write(&b.fs, &f, sbuf, W4_STATIC_SIZE);
        TRY(n);
        if ((uint32_t)n != W4_STATIC_SIZE) {
            die("W4: short write %d", n);
        }
        TRY(cfs_file_close(&b.fs, &f));
        user += W4_STATIC_SIZE;
    }
    found0 = w4_scan(b.sim, loc0);
    for (i = 0; i < BLOCKS_4M; i++) {
        erase0[i] = flash_sim_erase_count(b.sim, i);
    }
    for (i = 0; i < W4_STATIC_FILES * W4_CHUNKS; i++) {
        if (loc0[i] != UINT32_MAX) {
            static_block[loc0[i] / BLOCK_SIZE] = 1;
        }
    }

    /* Hot files round-robin until the user wrote 50x the capacity. */
    while (user < 50 * cap) {
        uint32_t h = (uint32_t)(rewrites % W4_HOT_FILES);
        cfs_file_t f;
        int n;
        snprintf(path, sizeof(path), "/hot/h%u", h);
        fill(hbuf, W4_HOT_SIZE, 5000 + rewrites, 0);
        TRY(cfs_file_open(&b.fs, &f, path,
                         CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC));
        n = cfs_file_write(&b.fs, &f, hbuf, W4_HOT_SIZE);
        TRY(n);
        if ((uint32_t)n != W4_HOT_SIZE) {
            die("W4: short write %d", n);
        }
        TRY(cfs_file_close(&b.fs, &f));
        user += W4_HOT_SIZE;
        rewrites++;
    }
    row_io(r, b.sim, user);
    r->wall_s = now_s() - t0;
    check_illegal(b.sim, "W4");

    /* Wear over every block of the device. */
    flash_sim_wear(b.sim, &w);
    row_target(r, "erase max/mean", "<=", 1.25,
               w.mean > 0 ? (double)w.max / w.mean : 0.0, "2.34", 2.34);
    row_target(r, "erase max", "<=", 70, (double)w.max, "148", 148);
    row_extra(r, "erase_max", w.max);
    row_extra(r, "erase_mean", w.mean);
    row_extra(r, "erase_min", w.min);
    row_extra(r, "hot_rewrites", (double)rewrites);

    /* Static-data movement: where are the static chunks now? */
    {
        static uint32_t loc1[W4_STATIC_FILES * W4_CHUNKS];
        const uint8_t *d = flash_sim_data(b.sim);
        w4_scan(b.sim, loc1);
        for (i = 0; i < W4_STATIC_FILES * W4_CHUNKS; i++) {
            if (loc0[i] == UINT32_MAX) {
                continue;
            }
            tracked++;
            /* Moved if its first home no longer holds it. */
            if (memcmp(d + loc0[i], W4_MARK, W4_MARK_LEN) != 0 ||
                d[loc0[i] + W4_MARK_LEN] != (uint8_t)(i / W4_CHUNKS) ||
                d[loc0[i] + W4_MARK_LEN + 2] != (uint8_t)(i % W4_CHUNKS)) {
                moved++;
            }
        }
        for (i = 0; i < BLOCKS_4M; i++) {
            bool erased = flash_sim_erase_count(b.sim, i) > erase0[i];
            if (static_block[i]) {
                nstatic_blocks++;
                static_blocks_erased += erased;
            }
            blocks_untouched += !erased;
        }
    }
    row_extra(r, "static_chunks_tracked", tracked);
    row_extra(r, "static_chunks_moved", moved);
    row_extra(r, "static_moved_pct", tracked ? 100.0 * moved / tracked : 0.0);
    row_extra(r, "static_blocks", nstatic_blocks);
    row_extra(r, "static_blocks_erased", static_blocks_erased);
    row_extra(r, "blocks_never_erased_in_hot_phase", blocks_untouched);
    if (found0 < W4_STATIC_FILES * W4_CHUNKS) {
        fprintf(stderr, "bench_fs: W4: only %u of %u static markers found on "
                "flash (data not stored verbatim?)\n", found0,
                W4_STATIC_FILES * W4_CHUNKS);
    }

    TRY(cfs_statvfs(&b.fs, &sv));
    row_extra(r, "cfs_erase_max", sv.erase_max);
    row_extra(r, "cfs_erase_mean", sv.erase_mean);
    row_extra(r, "cfs_erase_min", sv.erase_min);

    /* The static data is intact. */
    for (i = 0; i < W4_STATIC_FILES; i++) {
        cfs_file_t f;
        uint32_t off;
        snprintf(path, sizeof(path), "/static/s%02u", i);
        w4_static_fill(sbuf, i);
        TRY(cfs_file_open(&b.fs, &f, path, CFS_O_RDONLY));
        for (off = 0; off < W4_STATIC_SIZE; off += W4_HOT_SIZE) {
            int n = cfs_file_read(&b.fs, &f, hbuf, W4_HOT_SIZE);
            TRY(n);
            if ((uint32_t)n != W4_HOT_SIZE ||
                memcmp(hbuf, sbuf + off, W4_HOT_SIZE) != 0) {
                die("W4: %s reads back wrong at %u", path, off);
            }
        }
        TRY(cfs_file_close(&b.fs, &f));
    }
    release(&b);
}

/* ---- W4f: W4 at 90% full, the worst single call ------------------------- */
#define W4F_REWRITES 400
#define W4F_WRITE (4 * KIB)

/* Simulated flash time so far, in milliseconds. */
static double flash_ms(flash_sim_t *sim)
{
    flash_sim_stats_t st;
    flash_sim_stats(sim, &st);
    return st.time_us / 1000.0;
}

/* pct: the live data's share of the usable bytes (W4f: 90, with the
 * 250 ms target; the other fills are informative rows, "W4f80" ...) */
static void bench_w4f(uint32_t pct)
{
    static uint8_t sbuf[W4_STATIC_SIZE], hbuf[W4_HOT_SIZE];
    static char descs[4][80];
    static const char *const call_name[] = {"?", "open", "write", "close"};
    bench_fs_t b;
    cfs_statvfs_t sv;
    char path[32];
    double t0 = now_s(), worst = 0.0, total = 0.0;
    uint64_t user = 0, calls = 0, slow = 0;
    uint32_t i, nstatic, worst_call = 0, worst_rewrite = 0;
    static char ids[4][8];
    static uint32_t nid;
    char *id = ids[nid++ % 4];
    row_t *r;
    char *desc = descs[(nid - 1) % 4];
    if (pct == 90)
        snprintf(id, sizeof(ids[0]), "W4f");
    else
        snprintf(id, sizeof(ids[0]), "W4f%u", pct);
    r = row_new(id, "");

    fresh(&b, BLOCKS_4M);
    TRY(cfs_mkdir(&b.fs, "/static"));
    TRY(cfs_mkdir(&b.fs, "/hot"));
    TRY(cfs_statvfs(&b.fs, &sv));
    /* static files until they and the hot files are 90% of the usable bytes */
    nstatic = (uint32_t)((sv.total * pct / 100 - (uint64_t)W4_HOT_FILES * W4_HOT_SIZE) /
                         W4_STATIC_SIZE);
    for (i = 0; i < nstatic; i++) {
        cfs_file_t f;
        snprintf(path, sizeof(path), "/static/s%02u", i);
        w4_static_fill(sbuf, i);
        TRY(cfs_file_open(&b.fs, &f, path, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_EXCL));
        TRY(cfs_file_write(&b.fs, &f, sbuf, W4_STATIC_SIZE));
        TRY(cfs_file_close(&b.fs, &f));
    }
    flash_sim_reset_stats(b.sim);
    /* Hot files rewritten round-robin: open (O_TRUNC), four 4 KiB writes,
     * close; the flash time of every call measured on its own. */
    for (i = 0; i < W4F_REWRITES; i++) {
        cfs_file_t f;
        uint32_t call, off = 0;
        snprintf(path, sizeof(path), "/hot/h%u", i % W4_HOT_FILES);
        fill(hbuf, W4_HOT_SIZE, 7000 + i, 0);
        for (call = 1; call <= 3;) {
            double t = flash_ms(b.sim);
            if (call == 1) {
                TRY(cfs_file_open(&b.fs, &f, path,
                                  CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC));
            } else if (call == 2) {
                int n = cfs_file_write(&b.fs, &f, hbuf + off, W4F_WRITE);
                TRY(n);
                if (n != (int)W4F_WRITE) {
                    die("W4f: short write %d", n);
                }
                off += W4F_WRITE;
                user += W4F_WRITE;
            } else {
                TRY(cfs_file_close(&b.fs, &f));
            }
            t = flash_ms(b.sim) - t;
            total += t;
            calls++;
            slow += t > 250.0;
            if (t > worst) {
                worst = t;
                worst_call = call;
                worst_rewrite = i;
            }
            if (call != 2 || off == W4_HOT_SIZE) {
                call++;
            }
        }
    }
    row_io(r, b.sim, user);
    r->wall_s = now_s() - t0;
    check_illegal(b.sim, "W4f");
    TRY(cfs_statvfs(&b.fs, &sv));
    snprintf(desc, sizeof(descs[0]), "W4 at %u%% full, worst call (%s)", pct,
             call_name[worst_call]);
    r->desc = desc;
    if (pct == 90)
        row_target(r, "worst call ms", "<=", 250, worst, "seconds", 0);
    row_extra(r, "static_files", nstatic);
    row_extra(r, "live_pct", 100.0 * (double)sv.claimed / (double)sv.total);
    row_extra(r, "worst_call_ms", worst);
    row_extra(r, "worst_call", worst_call); /* 1 open, 2 write, 3 close */
    row_extra(r, "worst_call_rewrite", worst_rewrite);
    row_extra(r, "mean_call_ms", calls ? total / (double)calls : 0.0);
    row_extra(r, "calls", (double)calls);
    row_extra(r, "calls_over_250ms", (double)slow);
    /* the static data is intact */
    for (i = 0; i < nstatic; i++) {
        cfs_file_t f;
        uint32_t off;
        snprintf(path, sizeof(path), "/static/s%02u", i);
        w4_static_fill(sbuf, i);
        TRY(cfs_file_open(&b.fs, &f, path, CFS_O_RDONLY));
        for (off = 0; off < W4_STATIC_SIZE; off += W4_HOT_SIZE) {
            int n = cfs_file_read(&b.fs, &f, hbuf, W4_HOT_SIZE);
            TRY(n);
            if ((uint32_t)n != W4_HOT_SIZE || memcmp(hbuf, sbuf + off, W4_HOT_SIZE) != 0) {
                die("W4f: %s reads back wrong at %u", path, off);
            }
        }
        TRY(cfs_file_close(&b.fs, &f));
    }
    release(&b);
}

/* ---- W5 ------------------------------------------------------------------ */
static void bench_w5(void)
{
    static uint8_t shadow[256 * KIB];
    bench_fs_t b;
    cfs_file_t f;
    uint8_t buf[16];
    uint32_t i;
    double t0;
    row_t *r = row_new("W5", "256 KiB file, 1000 x 16 B pwrite+sync");

    fresh(&b, BLOCKS_4M);
    write_file(&b.fs, "/db", CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC,
               256 * KIB, 6, 4 * KIB);
    fill(shadow, sizeof(shadow), 6, 0);
    TRY(cfs_file_open(&b.fs, &f, "/db", CFS_O_RDWR));
    flash_sim_reset_stats(b.sim);
    rng_state = 5;
    t0 = now_s();
    for (i = 0; i < 1000; i++) {
        uint32_t off = (uint32_t)(rnd() % (256 * KIB - sizeof(buf) + 1));
        int n;
        fill(buf, sizeof(buf), 60000 + i, 0);
        n = cfs_file_pwrite(&b.fs, &f, buf, sizeof(buf), off);
        TRY(n);
        if (n != (int)sizeof(buf)) {
            die("W5: short pwrite %d", n);
        }
        TRY(cfs_file_sync(&b.fs, &f));
        memcpy(shadow + off, buf, sizeof(buf));
    }
    row_io(r, b.sim, 1000 * sizeof(buf));
    r->wall_s = now_s() - t0;
    row_target(r, "prog/user", "<=", 16, row_ratio(r), "8205", 8205);
    check_illegal(b.sim, "W5");

    /* The file equals the shadow copy. */
    for (i = 0; i < sizeof(shadow); i += 4096) {
        static uint8_t got[4096];
        int n = cfs_file_pread(&b.fs, &f, got, sizeof(got), i);
        TRY(n);
        if (n != (int)sizeof(got) || memcmp(got, shadow + i, sizeof(got))) {
            die("W5: /db reads back wrong at %u", i);
        }
    }
    TRY(cfs_file_close(&b.fs, &f));
    release(&b);
}

/* ---- RAM ----------------------------------------------------------------- */
static void bench_ram(void)
{
    row_t *r = row_new("RAM", "sizeof(cfs_t) + 4 * sizeof(cfs_file_t)");
    double total = (double)(sizeof(cfs_t) + 4 * sizeof(cfs_file_t));

    row_target(r, "bytes", "<=", 4096, total, NULL, 0);
    row_extra(r, "sizeof_fs_t", (double)sizeof(cfs_t));
    row_extra(r, "sizeof_fs_file_t", (double)sizeof(cfs_file_t));
    row_extra(r, "sizeof_fs_dir_t", (double)sizeof(cfs_dir_t));
    row_extra(r, "open_files", 4);
    row_extra(r, "total", total);
    /* issue 14: the big buffers of the calls are in a work area, one for
     * every cfs_t of a thread (on the stack before) */
    row_extra(r, "sizeof_work_t", (double)sizeof(cfs_work_t));
    row_extra(r, "total_with_work", total + (double)sizeof(cfs_work_t));
}

/* ---- output -------------------------------------------------------------- */
static void print_num(double v)
{
    if (v == (double)(int64_t)v && v < 1e15) {
        printf("%10lld", (long long)v);
    } else if (v >= 100) {
        printf("%10.1f", v);
    } else {
        printf("%10.3f", v);
    }
}

static void print_table(void)
{
    int i, j;
    int npass = 0, nfail = 0;

    printf("cellar bench-fs: 4 MiB NOR (1024 x 4096-byte blocks, 256-byte "
           "pages, prog size 1), RAM simulator\n");
    printf("flash time model: 0.7 ms/page prog, 45 ms/erase, 20 MB/s read\n\n");
    printf("%-6s %-38s %10s %10s %10s %7s %9s %9s | %-15s %-3s %8s %10s %-4s "
           "%8s\n",
           "id", "workload", "user B", "read B", "prog B", "erases",
           "prog/user", "flash s", "target", "", "limit", "value", "",
           "littlefs");
    for (i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        int lines = r->ntargets > 1 ? r->ntargets : 1;
        for (j = 0; j < lines; j++) {
            if (j == 0) {
                printf("%-6s %-38s ", r->id, r->desc);
                if (r->has_io) {
                    printf("%10llu %10llu %10llu %7llu ",
                           (unsigned long long)r->user,
                           (unsigned long long)r->st.bytes_read,
                           (unsigned long long)r->st.bytes_programmed,
                           (unsigned long long)r->st.erases);
                    if (r->user) {
                        printf("%9.3f ", row_ratio(r));
                    } else {
                        printf("%9s ", "-");
                    }
                    printf("%9.3f", r->st.time_us / 1e6);
                } else {
                    printf("%10s %10s %10s %7s %9s %9s", "-", "-", "-", "-",
                           "-", "-");
                }
            } else {
                printf("%-6s %-38s %10s %10s %10s %7s %9s %9s", "", "", "",
                       "", "", "", "", "");
            }
            if (j < r->ntargets) {
                const target_t *t = &r->t[j];
                printf(" | %-15s %-3s ", t->metric, t->op);
                printf("%8g ", t->limit);
                print_num(t->value);
                printf(" %-4s %8s", t->pass ? "PASS" : "FAIL",
                       t->littlefs ? t->littlefs : "-");
                if (t->pass) {
                    npass++;
                } else {
                    nfail++;
                }
            } else {
                printf(" |");
            }
            printf("\n");
        }
    }
    printf("\ndetails:\n");
    for (i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        if (r->nextras == 0) {
            continue;
        }
        printf("  %-6s", r->id);
        for (j = 0; j < r->nextras; j++) {
            double v = r->x[j].value;
            if (v == (double)(int64_t)v) {
                printf(" %s=%lld", r->x[j].key, (long long)v);
            } else {
                printf(" %s=%.3f", r->x[j].key, v);
            }
        }
        printf("\n");
    }
    printf("\nwall time per workload (host, informative):");
    for (i = 0; i < nrows; i++) {
        if (rows[i].has_io) {
            printf(" %s=%.2fs", rows[i].id, rows[i].wall_s);
        }
    }
    printf("\ntargets: %d PASS, %d FAIL\n", npass, nfail);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            fputc('\\', f);
        }
        fputc(*s, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (v == (double)(int64_t)v && v < 1e15 && v > -1e15) {
        fprintf(f, "%lld", (long long)v);
    } else {
        fprintf(f, "%.6g", v);
    }
}

static int write_json(const char *path, double total_wall)
{
    FILE *f = fopen(path, "w");
    int i, j, nfail = 0;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "{\n  \"bench\": \"bench-fs\",\n");
    fprintf(f, "  \"device\": {\"block_size\": %u, \"block_count\": %u, "
               "\"page_size\": %u, \"prog_size\": 1, \"backing\": \"ram\"},\n",
            BLOCK_SIZE, BLOCKS_4M, PAGE_SIZE);
    fprintf(f, "  \"flash_model\": {\"page_prog_ms\": 0.7, \"erase_ms\": 45, "
               "\"read_mb_s\": 20},\n");
    fprintf(f, "  \"wall_s\": %.3f,\n", total_wall);
    fprintf(f, "  \"workloads\": [\n");
    for (i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        fprintf(f, "    {\"id\": ");
        json_str(f, r->id);
        fprintf(f, ", \"desc\": ");
        json_str(f, r->desc[0] == ' ' ? r->desc + 2 : r->desc);
        if (r->has_io) {
            fprintf(f, ",\n     \"user_bytes\": %llu, \"bytes_read\": %llu, "
                       "\"bytes_programmed\": %llu, \"pages_programmed\": %llu, "
                       "\"erases\": %llu, \"prog_per_user\": ",
                    (unsigned long long)r->user,
                    (unsigned long long)r->st.bytes_read,
                    (unsigned long long)r->st.bytes_programmed,
                    (unsigned long long)r->st.pages_programmed,
                    (unsigned long long)r->st.erases);
            if (r->user) {
                fprintf(f, "%.6g", row_ratio(r));
            } else {
                fprintf(f, "null");
            }
            fprintf(f, ", \"flash_time_s\": %.6g, \"wall_s\": %.3f",
                    r->st.time_us / 1e6, r->wall_s);
        }
        if (r->nextras) {
            fprintf(f, ",\n     \"details\": {");
            for (j = 0; j < r->nextras; j++) {
                fprintf(f, "%s", j ? ", " : "");
                json_str(f, r->x[j].key);
                fprintf(f, ": ");
                json_num(f, r->x[j].value);
            }
            fprintf(f, "}");
        }
        fprintf(f, ",\n     \"targets\": [");
        for (j = 0; j < r->ntargets; j++) {
            const target_t *t = &r->t[j];
            fprintf(f, "%s\n       {\"metric\": ", j ? "," : "");
            json_str(f, t->metric);
            fprintf(f, ", \"op\": ");
            json_str(f, t->op);
            fprintf(f, ", \"limit\": ");
            json_num(f, t->limit);
            fprintf(f, ", \"value\": ");
            json_num(f, t->value);
            fprintf(f, ", \"result\": \"%s\", \"littlefs\": ",
                    t->pass ? "PASS" : "FAIL");
            if (t->littlefs) {
                json_num(f, t->littlefs_value);
                fprintf(f, ", \"littlefs_published\": ");
                json_str(f, t->littlefs);
            } else {
                fprintf(f, "null");
            }
            fprintf(f, "}");
            nfail += !t->pass;
        }
        fprintf(f, "%s]}%s\n", r->ntargets ? "\n     " : "",
                i + 1 < nrows ? "," : "");
    }
    fprintf(f, "  ],\n  \"targets_failed\": %d,\n  \"all_pass\": %s\n}\n",
            nfail, nfail ? "false" : "true");
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* BENCH_FS_ONLY=W4,W4f: run only the workloads named (ids as in the
 * table, comma-separated), for a quick look at one figure; unset: all. */
static bool wanted(const char *id)
{
    const char *only = getenv("BENCH_FS_ONLY");
    size_t n = strlen(id);
    if (!only || !*only)
        return true;
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, id, n) == 0)
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

int main(int argc, char **argv)
{
    double t0 = now_s();
    const char *out = argc > 1 ? argv[1] : "build/bench-fs.json";

    if (argc > 2) {
        fprintf(stderr, "usage: %s [OUT.json]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (wanted("W1"))
        bench_w1();
    if (wanted("W2"))
        bench_w2();
    if (wanted("W3"))
        bench_w3();
    if (wanted("W4"))
        bench_w4();
    if (wanted("W4f80"))
        bench_w4f(80);
    if (wanted("W4f85"))
        bench_w4f(85);
    if (wanted("W4f"))
        bench_w4f(90);
    if (wanted("W5"))
        bench_w5();
    if (wanted("RAM"))
        bench_ram();
    print_table();
    if (write_json(out, now_s() - t0) != 0) {
        return 1;
    }
    printf("wrote %s (%.1f s)\n", out, now_s() - t0);
    return 0;
}
