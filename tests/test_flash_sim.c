/*
 * test_flash_sim.c - the NOR flash simulator: NOR semantics, range checks,
 * counters and timing, image files, and every fault it can inject.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "flash_sim.h"

#define BS 4096u

static char tmpdir[64];

static flash_sim_t *new_ram(uint32_t blocks, uint64_t seed)
{
    flash_sim_config_t cfg = {.block_count = blocks, .seed = seed};
    return flash_sim_new(&cfg);
}

static bool all_ff(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (p[i] != 0xff) {
            return false;
        }
    }
    return true;
}

static void fill_pattern(uint8_t *p, size_t n, unsigned seed)
{
    size_t i;
    for (i = 0; i < n; i++) {
        p[i] = (uint8_t)((i * 131u + seed * 7u + (i >> 8)) & 0xff);
    }
}

static void test_defaults_and_basics(void)
{
    flash_sim_t *sim = flash_sim_new(NULL);
    const flash_dev_t *dev;
    uint8_t buf[300], out[300];

    CHECK(sim != NULL);
    if (sim == NULL) {
        return;
    }
    dev = flash_sim_dev(sim);
    CHECK_EQ(dev->block_size, 4096);
    CHECK_EQ(dev->block_count, 1024);
    CHECK_EQ(dev->page_size, 256);
    CHECK_EQ(dev->read_size, 1);
    CHECK_EQ(dev->prog_size, 1);
    CHECK(dev->sync != NULL);
    CHECK_EQ(flash_sim_size(sim), 4u * 1024 * 1024);
    CHECK(all_ff(flash_sim_data(sim), (size_t)flash_sim_size(sim)));

    fill_pattern(buf, sizeof(buf), 1);
    CHECK_EQ(dev->prog(dev, 7, 100, buf, sizeof(buf)), FLASH_OK);
    CHECK_EQ(dev->read(dev, 7, 100, out, sizeof(out)), FLASH_OK);
    CHECK(memcmp(buf, out, sizeof(buf)) == 0);
    CHECK(memcmp(flash_sim_data(sim) + 7 * BS + 100, buf, sizeof(buf)) == 0);
    CHECK(all_ff(flash_sim_data(sim) + 7 * BS, 100));
    CHECK(all_ff(flash_sim_data(sim) + 7 * BS + 400, BS - 400));
    CHECK_EQ(dev->sync(dev), FLASH_OK);

    /* Zero-length operations are no-ops. */
    CHECK_EQ(dev->read(dev, 0, 0, out, 0), FLASH_OK);
    CHECK_EQ(dev->prog(dev, 0, BS, buf, 0), FLASH_OK);

    CHECK_EQ(dev->erase(dev, 7), FLASH_OK);
    CHECK(all_ff(flash_sim_data(sim) + 7 * BS, BS));
    CHECK_EQ(flash_sim_erase_count(sim, 7), 1);
    CHECK_EQ(flash_sim_erase_count(sim, 6), 0);
    CHECK_EQ(flash_sim_erase_count(sim, 5000), 0); /* out of range: 0 */

    flash_sim_free(sim);
    flash_sim_free(NULL); /* NULL-safe */
}

static void test_bad_config(void)
{
    flash_sim_config_t cfg = {.block_size = 128, .page_size = 256};
    errno = 0;
    CHECK(flash_sim_new(&cfg) == NULL);
    CHECK_EQ(errno, EINVAL);
}

static void test_nor_semantics(void)
{
    flash_sim_t *sim = new_ram(16, 1);
    const flash_dev_t *dev = flash_sim_dev(sim);
    flash_sim_stats_t st;
    uint8_t b, v[4];
    uint8_t *data = flash_sim_data(sim);

    /* Clearing more bits in an already-programmed byte is legal. */
    b = 0xf0;
    CHECK_EQ(dev->prog(dev, 1, 10, &b, 1), FLASH_OK);
    b = 0x30;
    CHECK_EQ(dev->prog(dev, 1, 10, &b, 1), FLASH_OK);
    CHECK_EQ(data[BS + 10], 0x30);
    /* Re-programming the same value is legal too. */
    CHECK_EQ(dev->prog(dev, 1, 10, &b, 1), FLASH_OK);

    /* Setting a bit 0 -> 1 is detected, counted and changes nothing, even
     * in the bytes before the offending one. */
    memcpy(v, "\x00\x00\x00\x00", 4);
    CHECK_EQ(dev->prog(dev, 1, 20, v, 4), FLASH_OK);
    flash_sim_stats(sim, &st);
    CHECK_EQ(st.illegal_progs, 0);
    CHECK_EQ(dev->prog(dev, 1, 8, (const uint8_t[]){0x00, 0x00, 0x31}, 3),
             FLASH_ERR_CORRUPT); /* byte 10 is 0x30; 0x31 sets bit 0 */
    CHECK_EQ(data[BS + 8], 0xff);
    CHECK_EQ(data[BS + 9], 0xff);
    CHECK_EQ(data[BS + 10], 0x30);
    memcpy(v, "\x00\x00\xff\x00", 4); /* byte 22 would go 0x00 -> 0xff */
    CHECK_EQ(dev->prog(dev, 1, 19, (const uint8_t[]){0x00}, 1), FLASH_OK);
    CHECK_EQ(dev->prog(dev, 1, 20, v, 4), FLASH_ERR_CORRUPT);
    CHECK_EQ(data[BS + 19], 0x00);
    CHECK_EQ(data[BS + 20], 0x00);
    CHECK_EQ(data[BS + 22], 0x00);
    CHECK_EQ(data[BS + 24], 0xff);
    flash_sim_stats(sim, &st);
    CHECK_EQ(st.illegal_progs, 2);

    /* An erase makes it programmable again. */
    CHECK_EQ(dev->erase(dev, 1), FLASH_OK);
    CHECK_EQ(dev->prog(dev, 1, 20, v, 4), FLASH_OK);
    CHECK_EQ(data[BS + 22], 0xff);
    CHECK_EQ(data[BS + 23], 0x00);

    flash_sim_free(sim);
}

static void test_range_checks(void)
{
    flash_sim_t *sim = new_ram(16, 1);
    const flash_dev_t *dev = flash_sim_dev(sim);
    uint8_t buf[64] = {0};
    flash_sim_stats_t st;

    CHECK_EQ(dev->read(dev, 16, 0, buf, 1), FLASH_ERR_INVAL);
    CHECK_EQ(dev->read(dev, 0, BS, buf, 1), FLASH_ERR_INVAL);
    CHECK_EQ(dev->read(dev, 0, BS - 32, buf, 64), FLASH_ERR_INVAL); /* crosses */
    CHECK_EQ(dev->read(dev, 0, UINT32_MAX, buf, 2), FLASH_ERR_INVAL); /* wraps */
    CHECK_EQ(dev->read(dev, 15, BS - 64, buf, 64), FLASH_OK);
    CHECK_EQ(dev->prog(dev, 16, 0, buf, 1), FLASH_ERR_INVAL);
    CHECK_EQ(dev->prog(dev, 3, BS - 32, buf, 64), FLASH_ERR_INVAL);
    CHECK_EQ(dev->prog(dev, 3, UINT32_MAX, buf, 2), FLASH_ERR_INVAL);
    CHECK_EQ(dev->erase(dev, 16), FLASH_ERR_INVAL);
    CHECK_EQ(dev->erase(dev, UINT32_MAX), FLASH_ERR_INVAL);
    CHECK(all_ff(flash_sim_data(sim), (size_t)flash_sim_size(sim)));
    flash_sim_stats(sim, &st);
    CHECK_EQ(st.progs, 0);
    CHECK_EQ(st.erases, 0);
    CHECK_EQ(st.reads, 1);
    CHECK_EQ(flash_sim_ops(sim), 0);
    flash_sim_free(sim);
}

static void test_counters_and_time(void)
{
    flash_sim_t *sim = new_ram(16, 1);
    const flash_dev_t *dev = flash_sim_dev(sim);
    flash_sim_stats_t st;
    flash_sim_wear_t w;
    uint8_t buf[BS];

    memset(buf, 0, sizeof(buf));
    CHECK_EQ(dev->prog(dev, 0, 0, buf, 1), FLASH_OK);     /* 1 page */
    CHECK_EQ(dev->prog(dev, 0, 255, buf, 2), FLASH_OK);   /* 2 pages */
    CHECK_EQ(dev->prog(dev, 0, 512, buf, 256), FLASH_OK); /* 1 page */
    CHECK_EQ(dev->prog(dev, 1, 0, buf, BS), FLASH_OK);    /* 16 pages */
    CHECK_EQ(dev->erase(dev, 2), FLASH_OK);
    CHECK_EQ(dev->erase(dev, 2), FLASH_OK);
    CHECK_EQ(dev->erase(dev, 3), FLASH_OK);
    CHECK_EQ(dev->read(dev, 1, 0, buf, 1000), FLASH_OK);
    CHECK_EQ(dev->read(dev, 1, 0, buf, 1000), FLASH_OK);

    flash_sim_stats(sim, &st);
    CHECK_EQ(st.bytes_programmed, 1 + 2 + 256 + BS);
    CHECK_EQ(st.pages_programmed, 20);
    CHECK_EQ(st.progs, 4);
    CHECK_EQ(st.erases, 3);
    CHECK_EQ(st.reads, 2);
    CHECK_EQ(st.bytes_read, 2000);
    CHECK_EQ(st.illegal_progs, 0);
    /* 20 pages * 700 us + 3 * 45000 us + 2000 B * 0.05 us */
    CHECK(st.time_us > 20 * 700.0 + 3 * 45000.0 + 100.0 - 0.001);
    CHECK(st.time_us < 20 * 700.0 + 3 * 45000.0 + 100.0 + 0.001);
    CHECK_EQ(flash_sim_ops(sim), 7);

    CHECK_EQ(flash_sim_erase_count(sim, 2), 2);
    CHECK_EQ(flash_sim_erase_count(sim, 3), 1);
    flash_sim_wear(sim, &w);
    CHECK_EQ(w.max, 2);
    CHECK_EQ(w.min, 0);
    CHECK_EQ(w.total, 3);
    CHECK(w.mean > 3.0 / 16 - 1e-9 && w.mean < 3.0 / 16 + 1e-9);

    /* Reset clears the counters but not the wear or the op count. */
    flash_sim_reset_stats(sim);
    flash_sim_stats(sim, &st);
    CHECK_EQ(st.bytes_read, 0);
    CHECK_EQ(st.bytes_programmed, 0);
    CHECK_EQ(st.pages_programmed, 0);
    CHECK_EQ(st.erases, 0);
    CHECK(st.time_us == 0.0);
    CHECK_EQ(flash_sim_erase_count(sim, 2), 2);
    CHECK_EQ(flash_sim_ops(sim), 7);
    flash_sim_free(sim);
}

/* A power cut tears the Nth prog: a prefix programmed, the rest untouched,
 * and the dead device refuses everything until power_on. */
static void test_power_cut_prog(void)
{
    int trial, prefix_seen_partial = 0;

    for (trial = 0; trial < 50; trial++) {
        flash_sim_t *sim = new_ram(16, 1000 + (uint64_t)trial);
        const flash_dev_t *dev = flash_sim_dev(sim);
        uint8_t *data = flash_sim_data(sim);
        uint8_t buf[512], out[4];
        flash_sim_stats_t st;
        uint32_t n;

        memset(buf, 0x00, sizeof(buf)); /* every programmed byte visible */
        flash_sim_cut_after(sim, 3, false);
        CHECK_EQ(dev->prog(dev, 0, 0, buf, 1), FLASH_OK);   /* op 1 */
        CHECK_EQ(dev->erase(dev, 5), FLASH_OK);             /* op 2 */
        CHECK(!flash_sim_power_lost(sim));
        CHECK_EQ(dev->prog(dev, 2, 100, buf, sizeof(buf)), FLASH_ERR_POWER);
        CHECK(flash_sim_power_lost(sim));
        CHECK_EQ(flash_sim_ops(sim), 3);

        /* The bytes programmed form a prefix shorter than the request. */
        for (n = 0; n < sizeof(buf) && data[2 * BS + 100 + n] == buf[n]; n++) {
        }
        CHECK(n < sizeof(buf));
        CHECK(all_ff(data + 2 * BS + 100 + n, sizeof(buf) - n));
        CHECK(all_ff(data + 2 * BS, 100));
        if (n > 0 && n < sizeof(buf)) {
            prefix_seen_partial++;
        }
        flash_sim_stats(sim, &st);
        CHECK_EQ(st.bytes_programmed, 1 + n);

        /* Dead until power on: reads, progs, erases and sync all fail. */
        CHECK_EQ(dev->read(dev, 0, 0, out, 1), FLASH_ERR_POWER);
        CHECK_EQ(dev->prog(dev, 3, 0, buf, 1), FLASH_ERR_POWER);
        CHECK_EQ(dev->erase(dev, 3), FLASH_ERR_POWER);
        CHECK_EQ(dev->sync(dev), FLASH_ERR_POWER);
        CHECK(all_ff(data + 3 * BS, BS));
        CHECK_EQ(flash_sim_ops(sim), 3);

        flash_sim_power_on(sim);
        CHECK(!flash_sim_power_lost(sim));
        CHECK_EQ(dev->read(dev, 0, 0, out, 1), FLASH_OK);
        CHECK_EQ(out[0], 0x00);
        CHECK_EQ(dev->prog(dev, 3, 0, buf, 1), FLASH_OK);
        CHECK_EQ(flash_sim_ops(sim), 4);
        flash_sim_free(sim);
    }
    CHECK(prefix_seen_partial > 0);
}

/* With torn_bits, the byte after the prefix holds a random subset of the
 * bits the prog was to clear: never a bit set, never a bit not asked for. */
static void test_power_cut_torn_bits(void)
{
    int trial, partial_byte = 0;

    for (trial = 0; trial < 200; trial++) {
        flash_sim_t *sim = new_ram(16, 77 + (uint64_t)trial);
        const flash_dev_t *dev = flash_sim_dev(sim);
        uint8_t *data = flash_sim_data(sim);
        uint8_t buf[8] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
        uint8_t old = 0xf0;
        uint32_t i, n;

        CHECK_EQ(dev->prog(dev, 4, 0, (uint8_t[8]){0xf0, 0xf0, 0xf0, 0xf0,
                                                   0xf0, 0xf0, 0xf0, 0xf0},
                           8), FLASH_OK);
        flash_sim_cut_after(sim, 1, true);
        CHECK_EQ(dev->prog(dev, 4, 0, buf, 8), FLASH_ERR_POWER);
        for (n = 0; n < 8 && data[4 * BS + n] == buf[n]; n++) {
        }
        if (n == 8) {
            /* Prefix of 7 and every bit of the 8th byte cleared: looks
             * complete, which a real cut can do too. */
            flash_sim_free(sim);
            continue;
        }
        /* Byte n: only bits from `old` may have cleared. */
        CHECK_EQ(data[4 * BS + n] & (uint8_t)~old, 0);
        if (data[4 * BS + n] != old) {
            partial_byte++;
        }
        for (i = n + 1; i < 8; i++) {
            CHECK_EQ(data[4 * BS + i], old);
        }
        flash_sim_free(sim);
    }
    CHECK(partial_byte > 0);
}

static void test_power_cut_erase(void)
{
    int trial, mixed = 0;

    for (trial = 0; trial < 20; trial++) {
        flash_sim_t *sim = new_ram(16, 500 + (uint64_t)trial);
        const flash_dev_t *dev = flash_sim_dev(sim);
        uint8_t *data = flash_sim_data(sim);
        uint8_t old[BS];
        uint32_t i, ff = 0, kept = 0;

        fill_pattern(old, BS, (unsigned)trial);
        for (i = 0; i < BS; i++) {
            if (old[i] == 0xff) {
                old[i] = 0x5a;
            }
        }
        CHECK_EQ(dev->prog(dev, 6, 0, old, BS), FLASH_OK);
        flash_sim_cut_after(sim, 1, false);
        CHECK_EQ(dev->erase(dev, 6), FLASH_ERR_POWER);
        CHECK(flash_sim_power_lost(sim));
        CHECK_EQ(flash_sim_erase_count(sim, 6), 1); /* the torn erase wore it */
        for (i = 0; i < BS; i++) {
            if (data[6 * BS + i] == 0xff) {
                ff++;
            } else if (data[6 * BS + i] == old[i]) {
                kept++;
            }
        }
        CHECK_EQ(ff + kept, BS); /* every byte erased or old, nothing else */
        if (ff > 0 && kept > 0) {
            mixed++;
        }
        CHECK(all_ff(data + 7 * BS, BS)); /* neighbours untouched */
        flash_sim_free(sim);
    }
    CHECK(mixed > 0);
}

static void test_cut_disarm_and_determinism(void)
{
    flash_sim_t *a = new_ram(16, 42), *b = new_ram(16, 42);
    const flash_dev_t *da = flash_sim_dev(a), *db = flash_sim_dev(b);
    uint8_t buf[1024];
    int i;

    /* cut_after(0) disarms an armed cut. */
    flash_sim_cut_after(a, 2, false);
    flash_sim_cut_after(a, 0, false);
    for (i = 0; i < 5; i++) {
        CHECK_EQ(da->erase(da, (uint32_t)i), FLASH_OK);
    }
    CHECK(!flash_sim_power_lost(a));

    /* power_on disarms too. */
    flash_sim_cut_after(a, 3, false);
    flash_sim_power_on(a);
    for (i = 0; i < 5; i++) {
        CHECK_EQ(da->erase(da, (uint32_t)i), FLASH_OK);
    }
    CHECK(!flash_sim_power_lost(a));
    flash_sim_free(a);

    /* Same seed, same operations: same torn result. */
    a = new_ram(16, 42);
    da = flash_sim_dev(a);
    memset(buf, 0, sizeof(buf));
    flash_sim_cut_after(a, 1, true);
    flash_sim_cut_after(b, 1, true);
    CHECK_EQ(da->prog(da, 0, 0, buf, sizeof(buf)), FLASH_ERR_POWER);
    CHECK_EQ(db->prog(db, 0, 0, buf, sizeof(buf)), FLASH_ERR_POWER);
    CHECK(memcmp(flash_sim_data(a), flash_sim_data(b), BS) == 0);
    flash_sim_free(a);
    flash_sim_free(b);
}

static void test_read_flips(void)
{
    flash_sim_t *sim = new_ram(16, 9);
    const flash_dev_t *dev = flash_sim_dev(sim);
    uint8_t *data = flash_sim_data(sim);
    uint8_t pat[256], out[256];
    int i, flipped = 0;

    fill_pattern(pat, sizeof(pat), 3);
    CHECK_EQ(dev->prog(dev, 2, 0, pat, sizeof(pat)), FLASH_OK);

    /* one_in = 1: every read has exactly one flipped bit; flash unchanged. */
    flash_sim_read_flips(sim, 1);
    for (i = 0; i < 20; i++) {
        uint32_t j, bits = 0;
        CHECK_EQ(dev->read(dev, 2, 0, out, sizeof(out)), FLASH_OK);
        for (j = 0; j < sizeof(out); j++) {
            bits += (uint32_t)__builtin_popcount(out[j] ^ pat[j]);
        }
        CHECK_EQ(bits, 1);
    }
    CHECK(memcmp(data + 2 * BS, pat, sizeof(pat)) == 0);

    /* one_in = 10: some reads flipped, most not. */
    flash_sim_read_flips(sim, 10);
    for (i = 0; i < 1000; i++) {
        CHECK_EQ(dev->read(dev, 2, 0, out, sizeof(out)), FLASH_OK);
        if (memcmp(out, pat, sizeof(out)) != 0) {
            flipped++;
        }
    }
    CHECK(flipped > 20 && flipped < 300);

    /* 0 disables. */
    flash_sim_read_flips(sim, 0);
    for (i = 0; i < 100; i++) {
        CHECK_EQ(dev->read(dev, 2, 0, out, sizeof(out)), FLASH_OK);
        CHECK(memcmp(out, pat, sizeof(out)) == 0);
    }
    CHECK(memcmp(data + 2 * BS, pat, sizeof(pat)) == 0);
    flash_sim_free(sim);
}

static void test_stored_flip(void)
{
    flash_sim_t *sim = new_ram(16, 9);
    const flash_dev_t *dev = flash_sim_dev(sim);
    uint8_t b = 0x00, out;

    CHECK_EQ(dev->prog(dev, 1, 5, &b, 1), FLASH_OK);
    flash_sim_flip_bit(sim, BS + 5, 3);
    CHECK_EQ(dev->read(dev, 1, 5, &out, 1), FLASH_OK);
    CHECK_EQ(out, 0x08);
    flash_sim_flip_bit(sim, BS + 5, 3); /* flips back */
    CHECK_EQ(dev->read(dev, 1, 5, &out, 1), FLASH_OK);
    CHECK_EQ(out, 0x00);
    flash_sim_flip_bit(sim, 2 * BS, 0); /* an erased bit can rot to 0 */
    CHECK_EQ(flash_sim_data(sim)[2 * BS], 0xfe);
    flash_sim_flip_bit(sim, flash_sim_size(sim), 0); /* out of range: ignored */
    flash_sim_flip_bit(sim, 0, 8);
    CHECK_EQ(flash_sim_data(sim)[0], 0xff);
    flash_sim_free(sim);
}

static void test_wear_out(void)
{
    flash_sim_t *sim = new_ram(16, 9);
    const flash_dev_t *dev = flash_sim_dev(sim);
    uint8_t b = 0xa5, out = 0;
    flash_sim_stats_t st;
    int i;

    flash_sim_wear_limit(sim, 5);
    for (i = 0; i < 5; i++) {
        CHECK_EQ(dev->erase(dev, 3), FLASH_OK);
    }
    CHECK_EQ(dev->prog(dev, 4, 0, &b, 1), FLASH_OK); /* other blocks fine */
    CHECK_EQ(dev->erase(dev, 3), FLASH_ERR_IO);
    CHECK_EQ(dev->prog(dev, 3, 0, &b, 1), FLASH_ERR_IO);
    CHECK_EQ(flash_sim_data(sim)[3 * BS], 0xff);
    CHECK_EQ(dev->read(dev, 3, 0, &out, 1), FLASH_OK); /* reads still work */
    CHECK_EQ(out, 0xff);
    CHECK_EQ(flash_sim_erase_count(sim, 3), 5);
    flash_sim_stats(sim, &st);
    CHECK_EQ(st.erases, 5);
    CHECK_EQ(flash_sim_ops(sim), 6);

    /* Lifting the limit revives it (the limit is a simulator knob). */
    flash_sim_wear_limit(sim, 0);
    CHECK_EQ(dev->erase(dev, 3), FLASH_OK);
    flash_sim_free(sim);
}

static void test_fail_block(void)
{
    flash_sim_t *sim = new_ram(16, 9);
    const flash_dev_t *dev = flash_sim_dev(sim);
    uint8_t b = 0x12, out = 0;

    CHECK_EQ(dev->prog(dev, 9, 0, &b, 1), FLASH_OK);
    flash_sim_fail_block(sim, 9);
    flash_sim_fail_block(sim, 999); /* out of range: ignored */
    CHECK_EQ(dev->erase(dev, 9), FLASH_ERR_IO);
    CHECK_EQ(dev->prog(dev, 9, 1, &b, 1), FLASH_ERR_IO);
    CHECK_EQ(dev->read(dev, 9, 0, &out, 1), FLASH_OK);
    CHECK_EQ(out, 0x12);
    CHECK_EQ(dev->erase(dev, 8), FLASH_OK);
    CHECK_EQ(dev->erase(dev, 10), FLASH_OK);
    CHECK_EQ(flash_sim_erase_count(sim, 9), 0);
    flash_sim_free(sim);
}

static void test_image_file(void)
{
    char path[128];
    flash_sim_config_t cfg = {.block_count = 32, .seed = 1};
    flash_sim_t *sim;
    const flash_dev_t *dev;
    uint8_t buf[100], out[100];
    struct stat st;

    snprintf(path, sizeof(path), "%s/a.img", tmpdir);
    cfg.path = path;

    /* Created erased if missing, of exactly the device size. */
    sim = flash_sim_new(&cfg);
    CHECK(sim != NULL);
    if (sim == NULL) {
        return;
    }
    CHECK(stat(path, &st) == 0 && st.st_size == 32 * BS);
    CHECK(all_ff(flash_sim_data(sim), 32 * BS));
    dev = flash_sim_dev(sim);
    fill_pattern(buf, sizeof(buf), 11);
    CHECK_EQ(dev->prog(dev, 31, BS - 100, buf, 100), FLASH_OK);
    CHECK_EQ(dev->erase(dev, 0), FLASH_OK);
    flash_sim_free(sim);

    /* Persists across free/new. */
    sim = flash_sim_new(&cfg);
    CHECK(sim != NULL);
    if (sim == NULL) {
        return;
    }
    dev = flash_sim_dev(sim);
    CHECK_EQ(dev->read(dev, 31, BS - 100, out, 100), FLASH_OK);
    CHECK(memcmp(buf, out, 100) == 0);
    CHECK(all_ff(flash_sim_data(sim), 31 * BS));
    flash_sim_free(sim);

    /* An existing image of another size is an error. */
    cfg.block_count = 64;
    errno = 0;
    CHECK(flash_sim_new(&cfg) == NULL);
    CHECK_EQ(errno, EINVAL);
    CHECK(stat(path, &st) == 0 && st.st_size == 32 * BS); /* left alone */

    /* A directory is not an image. */
    cfg.path = tmpdir;
    CHECK(flash_sim_new(&cfg) == NULL);
    unlink(path);
}

/* A process killed (SIGKILL, no flash_sim_free) leaves every completed
 * operation in the image, and a torn one torn: what a power cut leaves. */
static void test_image_killed_process(void)
{
    char path[128];
    flash_sim_config_t cfg = {.block_count = 16, .seed = 5};
    flash_sim_t *sim;
    pid_t pid;
    int status = 0;
    uint8_t buf[BS];

    snprintf(path, sizeof(path), "%s/k.img", tmpdir);
    cfg.path = path;
    fill_pattern(buf, sizeof(buf), 21);
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] &= 0x7f; /* every byte differs from 0xff */
    }

    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        flash_sim_t *child = flash_sim_new(&cfg);
        const flash_dev_t *dev;
        if (child == NULL) {
            _exit(3);
        }
        dev = flash_sim_dev(child);
        if (dev->prog(dev, 2, 0, buf, 1000) != FLASH_OK) {
            _exit(4);
        }
        flash_sim_cut_after(child, 1, false);
        if (dev->prog(dev, 3, 0, buf, BS) != FLASH_ERR_POWER) {
            _exit(5);
        }
        raise(SIGKILL);
        _exit(6);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    sim = flash_sim_new(&cfg);
    CHECK(sim != NULL);
    if (sim != NULL) {
        uint8_t *data = flash_sim_data(sim);
        uint32_t n;
        CHECK(memcmp(data + 2 * BS, buf, 1000) == 0);
        CHECK(all_ff(data + 2 * BS + 1000, BS - 1000));
        for (n = 0; n < BS && data[3 * BS + n] == buf[n]; n++) {
        }
        CHECK(n < BS);
        CHECK(all_ff(data + 3 * BS + n, BS - n));
        flash_sim_free(sim);
    }
    unlink(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_flash_sim.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_defaults_and_basics();
    test_bad_config();
    test_nor_semantics();
    test_range_checks();
    test_counters_and_time();
    test_power_cut_prog();
    test_power_cut_torn_bits();
    test_power_cut_erase();
    test_cut_disarm_and_determinism();
    test_read_flips();
    test_stored_flip();
    test_wear_out();
    test_fail_block();
    test_image_file();
    test_image_killed_process();
    rmdir(tmpdir);
    return check_summary("test_flash_sim");
}
