/*
 * flash_sim.c - NOR flash simulator (host only). See flash_sim.h.
 *
 * The flash contents live in one byte array: malloc'd for a RAM device, or a
 * MAP_SHARED mapping of the image file, so every completed store is in the
 * page cache at once and a killed process leaves the image exactly as a
 * power cut at that instant would.
 *
 * Order of checks for prog/erase (so that the op counter only counts
 * operations that would have succeeded, which is what a power-cut sweep
 * iterates over):
 *   power lost -> FLASH_ERR_POWER
 *   bad range  -> FLASH_ERR_INVAL
 *   bad/worn   -> FLASH_ERR_IO
 *   sets a bit -> FLASH_ERR_CORRUPT (prog only; counted, nothing changed)
 *   then the op is counted; if it is the armed cut point it is torn and
 *   FLASH_ERR_POWER is returned, otherwise it is performed.
 */
#include "flash_sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIM_DEF_BLOCK_SIZE 4096u
#define SIM_DEF_BLOCK_COUNT 1024u
#define SIM_DEF_PAGE_SIZE 256u
#define SIM_DEF_SEED 0x9e3779b97f4a7c15ull

/* Timing model (BRIEF.md, W25Q-class). */
#define SIM_US_PER_PAGE_PROG 700.0
#define SIM_US_PER_ERASE 45000.0
#define SIM_US_PER_READ_BYTE 0.05 /* 20 MB/s */

struct flash_sim {
    flash_dev_t dev;          /* handed out by flash_sim_dev */
    uint8_t *data;            /* size bytes: the flash contents */
    uint64_t size;
    int fd;                   /* image file, -1 for RAM */
    uint32_t *erase_counts;   /* per block, since creation */
    uint8_t *bad;             /* per block: 1 = failing (flash_sim_fail_block) */

    flash_sim_stats_t stats;
    uint64_t ops;             /* progs + erases performed (incl. a torn one) */
    uint64_t cut_at;          /* op number that is torn; 0 = disarmed */
    bool torn_bits;
    bool power_lost;
    uint32_t read_flip_one_in;
    uint64_t reads;           /* read calls since creation */
    uint64_t rfault_lo, rfault_hi; /* read numbers [lo, hi] are faulty; 0 = none */
    bool rfault_fail;         /* faulty reads fail (else: one bit flipped) */
    uint64_t weak_addr;       /* a weak bit: byte address, bit, reads left */
    int weak_bit;
    uint32_t weak_reads;
    uint32_t weak_skip;       /* reads of it that come back right first */
    uint32_t wear_limit;
    uint64_t rng;
};

/* ---- PRNG (splitmix64) ------------------------------------------------- */
static uint64_t sim_rand(flash_sim_t *sim)
{
    uint64_t z = (sim->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) for n > 0 (modulo bias is irrelevant here). */
static uint64_t sim_rand_below(flash_sim_t *sim, uint64_t n)
{
    return sim_rand(sim) % n;
}

/* ---- helpers ------------------------------------------------------------ */
static int sim_check_range(const flash_sim_t *sim, uint32_t block,
                           uint32_t off, uint32_t len)
{
    if (block >= sim->dev.block_count) {
        return FLASH_ERR_INVAL;
    }
    if ((uint64_t)off + len > sim->dev.block_size) {
        return FLASH_ERR_INVAL;
    }
    return FLASH_OK;
}

static bool sim_block_failing(const flash_sim_t *sim, uint32_t block)
{
    if (sim->bad[block]) {
        return true;
    }
    return sim->wear_limit != 0 && sim->erase_counts[block] >= sim->wear_limit;
}

/* Count the 256-byte pages [off, off + len) touches, charge their time. */
static void sim_account_prog(flash_sim_t *sim, uint32_t off, uint32_t len)
{
    uint64_t pages;

    sim->stats.bytes_programmed += len;
    if (len == 0) {
        return;
    }
    pages = (off + len - 1) / sim->dev.page_size - off / sim->dev.page_size + 1;
    sim->stats.pages_programmed += pages;
    sim->stats.time_us += (double)pages * SIM_US_PER_PAGE_PROG;
}

/* Counts an op that is about to be performed; true when it is the cut. */
static bool sim_op_is_cut(flash_sim_t *sim)
{
    sim->ops++;
    if (sim->cut_at != 0 && sim->ops == sim->cut_at) {
        sim->cut_at = 0;
        sim->power_lost = true;
        return true;
    }
    return false;
}

/* ---- device callbacks ---------------------------------------------------- */
static int sim_read(const flash_dev_t *dev, uint32_t block, uint32_t off,
                    void *buf, uint32_t len)
{
    flash_sim_t *sim = dev->context;
    int err;

    if (sim->power_lost) {
        return FLASH_ERR_POWER;
    }
    err = sim_check_range(sim, block, off, len);
    if (err) {
        return err;
    }
    if (len == 0) {
        return FLASH_OK;
    }
    if (buf == NULL) {
        return FLASH_ERR_INVAL;
    }
    memcpy(buf, sim->data + (uint64_t)block * dev->block_size + off, len);
    sim->stats.reads++;
    sim->stats.bytes_read += len;
    sim->stats.time_us += (double)len * SIM_US_PER_READ_BYTE;

    sim->reads++;
    bool flip = sim->read_flip_one_in != 0 &&
                sim_rand_below(sim, sim->read_flip_one_in) == 0;
    if (sim->rfault_lo != 0 && sim->reads >= sim->rfault_lo && sim->reads <= sim->rfault_hi) {
        if (sim->rfault_fail) {
            return FLASH_ERR_IO;
        }
        flip = true;
    }
    if (flip) {
        uint64_t bit = sim_rand_below(sim, (uint64_t)len * 8);
        ((uint8_t *)buf)[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    uint64_t at = (uint64_t)block * dev->block_size + off;
    if (sim->weak_reads != 0 && sim->weak_addr >= at && sim->weak_addr < at + len) {
        if (sim->weak_skip != 0) {
            sim->weak_skip--;
            return FLASH_OK;
        }
        ((uint8_t *)buf)[sim->weak_addr - at] ^= (uint8_t)(1u << sim->weak_bit);
        sim->weak_reads--;
    }
    return FLASH_OK;
}

static int sim_prog(const flash_dev_t *dev, uint32_t block, uint32_t off,
                    const void *buf, uint32_t len)
{
    flash_sim_t *sim = dev->context;
    const uint8_t *src = buf;
    uint8_t *dst;
    uint32_t i;
    int err;

    if (sim->power_lost) {
        return FLASH_ERR_POWER;
    }
    err = sim_check_range(sim, block, off, len);
    if (err) {
        return err;
    }
    if (len == 0) {
        return FLASH_OK;
    }
    if (buf == NULL) {
        return FLASH_ERR_INVAL;
    }
    if (sim_block_failing(sim, block)) {
        return FLASH_ERR_IO;
    }
    dst = sim->data + (uint64_t)block * dev->block_size + off;
    for (i = 0; i < len; i++) {
        if ((uint8_t)(src[i] & ~dst[i]) != 0) {
            sim->stats.illegal_progs++;
            return FLASH_ERR_CORRUPT;
        }
    }

    sim->stats.progs++;
    if (sim_op_is_cut(sim)) {
        /* Torn: a prefix of [0, len) bytes made it, maybe part of one more. */
        uint32_t n = (uint32_t)sim_rand_below(sim, len);
        memcpy(dst, src, n);
        if (sim->torn_bits) {
            /* A random subset of the bits this byte was to clear. */
            uint8_t to_clear = (uint8_t)(dst[n] & ~src[n]);
            dst[n] &= (uint8_t)~(to_clear & (uint8_t)sim_rand(sim));
        }
        sim_account_prog(sim, off, n + (sim->torn_bits ? 1 : 0));
        return FLASH_ERR_POWER;
    }
    memcpy(dst, src, len);
    sim_account_prog(sim, off, len);
    return FLASH_OK;
}

static int sim_erase(const flash_dev_t *dev, uint32_t block)
{
    flash_sim_t *sim = dev->context;
    uint8_t *dst;
    int err;

    if (sim->power_lost) {
        return FLASH_ERR_POWER;
    }
    err = sim_check_range(sim, block, 0, 0);
    if (err) {
        return err;
    }
    if (sim_block_failing(sim, block)) {
        return FLASH_ERR_IO;
    }
    dst = sim->data + (uint64_t)block * dev->block_size;
    sim->erase_counts[block]++;
    sim->stats.erases++;
    sim->stats.time_us += SIM_US_PER_ERASE;

    if (sim_op_is_cut(sim)) {
        /* Torn: a random mix of erased and old bytes. The share of erased
         * bytes is itself random so sweeps see nearly-done and barely-started
         * erases. */
        uint64_t share = sim_rand_below(sim, 257); /* out of 256 */
        uint32_t i;
        for (i = 0; i < dev->block_size; i++) {
            if (sim_rand_below(sim, 256) < share) {
                dst[i] = 0xff;
            }
        }
        return FLASH_ERR_POWER;
    }
    memset(dst, 0xff, dev->block_size);
    return FLASH_OK;
}

static int sim_sync(const flash_dev_t *dev)
{
    flash_sim_t *sim = dev->context;

    /* Every store is already in the shared mapping; a killed process loses
     * nothing. Durability against a host crash is flash_sim_free's job. */
    return sim->power_lost ? FLASH_ERR_POWER : FLASH_OK;
}

/* ---- image file ------------------------------------------------------------ */

/* Create `path` erased, atomically: write a temporary file, then rename it,
 * so a crash never leaves a half-initialised image under the real name. */
static int sim_create_image(const char *path, uint64_t size)
{
    static const size_t chunk = 65536;
    char *tmp = NULL;
    uint8_t *ff = NULL;
    int fd = -1;
    int ret = -1;
    uint64_t done;
    size_t tlen = strlen(path) + 32;

    tmp = malloc(tlen);
    ff = malloc(chunk);
    if (tmp == NULL || ff == NULL) {
        errno = ENOMEM;
        goto cleanup;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    memset(ff, 0xff, chunk);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        goto cleanup;
    }
    for (done = 0; done < size;) {
        size_t n = size - done < chunk ? (size_t)(size - done) : chunk;
        ssize_t w = pwrite(fd, ff, n, (off_t)done);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            goto cleanup;
        }
        done += (uint64_t)w;
    }
    if (fsync(fd) != 0) {
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        goto cleanup;
    }
    ret = 0;

cleanup:
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        if (ret != 0) {
            unlink(tmp);
        }
        errno = saved;
    }
    free(tmp);
    free(ff);
    return ret;
}

static int sim_open_image(flash_sim_t *sim, const char *path)
{
    struct stat st;
    void *map;

    sim->fd = open(path, O_RDWR | O_CLOEXEC);
    if (sim->fd < 0 && errno == ENOENT) {
        if (sim_create_image(path, sim->size) != 0) {
            return -1;
        }
        sim->fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (sim->fd < 0) {
        return -1;
    }
    if (fstat(sim->fd, &st) != 0) {
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != sim->size) {
        errno = EINVAL; /* an image of another geometry */
        return -1;
    }
    map = mmap(NULL, (size_t)sim->size, PROT_READ | PROT_WRITE, MAP_SHARED,
               sim->fd, 0);
    if (map == MAP_FAILED) {
        return -1;
    }
    sim->data = map;
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------- */
flash_sim_t *flash_sim_new(const flash_sim_config_t *cfg)
{
    flash_sim_config_t c = {0};
    flash_sim_t *sim = NULL;

    if (cfg != NULL) {
        c = *cfg;
    }
    if (c.block_size == 0) {
        c.block_size = SIM_DEF_BLOCK_SIZE;
    }
    if (c.block_count == 0) {
        c.block_count = SIM_DEF_BLOCK_COUNT;
    }
    if (c.page_size == 0) {
        c.page_size = SIM_DEF_PAGE_SIZE;
    }
    if (c.page_size > c.block_size ||
        (uint64_t)c.block_size * c.block_count > (uint64_t)SIZE_MAX / 2) {
        errno = EINVAL;
        return NULL;
    }

    sim = calloc(1, sizeof(*sim));
    if (sim == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    sim->fd = -1;
    sim->size = (uint64_t)c.block_size * c.block_count;
    sim->rng = c.seed != 0 ? c.seed : SIM_DEF_SEED;
    sim->dev.context = sim;
    sim->dev.read = sim_read;
    sim->dev.prog = sim_prog;
    sim->dev.erase = sim_erase;
    sim->dev.sync = sim_sync;
    sim->dev.read_size = 1;
    sim->dev.prog_size = 1;
    sim->dev.page_size = c.page_size;
    sim->dev.block_size = c.block_size;
    sim->dev.block_count = c.block_count;

    sim->erase_counts = calloc(c.block_count, sizeof(*sim->erase_counts));
    sim->bad = calloc(c.block_count, 1);
    if (sim->erase_counts == NULL || sim->bad == NULL) {
        errno = ENOMEM;
        goto fail;
    }
    if (c.path != NULL) {
        if (sim_open_image(sim, c.path) != 0) {
            goto fail;
        }
    } else {
        sim->data = malloc((size_t)sim->size);
        if (sim->data == NULL) {
            errno = ENOMEM;
            goto fail;
        }
        memset(sim->data, 0xff, (size_t)sim->size);
    }
    return sim;

fail: {
        int saved = errno;
        flash_sim_free(sim);
        errno = saved;
    }
    return NULL;
}

void flash_sim_free(flash_sim_t *sim)
{
    if (sim == NULL) {
        return;
    }
    if (sim->fd >= 0) {
        if (sim->data != NULL) {
            msync(sim->data, (size_t)sim->size, MS_SYNC);
            munmap(sim->data, (size_t)sim->size);
        }
        close(sim->fd);
    } else {
        free(sim->data);
    }
    free(sim->erase_counts);
    free(sim->bad);
    free(sim);
}

const flash_dev_t *flash_sim_dev(flash_sim_t *sim)
{
    return &sim->dev;
}

uint8_t *flash_sim_data(flash_sim_t *sim)
{
    return sim->data;
}

uint64_t flash_sim_size(const flash_sim_t *sim)
{
    return sim->size;
}

/* ---- counters ----------------------------------------------------------------- */
void flash_sim_stats(const flash_sim_t *sim, flash_sim_stats_t *out)
{
    *out = sim->stats;
}

void flash_sim_reset_stats(flash_sim_t *sim)
{
    memset(&sim->stats, 0, sizeof(sim->stats));
}

uint32_t flash_sim_erase_count(const flash_sim_t *sim, uint32_t block)
{
    if (block >= sim->dev.block_count) {
        return 0;
    }
    return sim->erase_counts[block];
}

void flash_sim_wear(const flash_sim_t *sim, flash_sim_wear_t *out)
{
    uint64_t sum = 0;
    uint32_t i;

    out->min = UINT32_MAX;
    out->max = 0;
    for (i = 0; i < sim->dev.block_count; i++) {
        uint32_t e = sim->erase_counts[i];
        sum += e;
        if (e < out->min) {
            out->min = e;
        }
        if (e > out->max) {
            out->max = e;
        }
    }
    out->total = sum;
    out->mean = (double)sum / sim->dev.block_count;
}

/* ---- fault injection ---------------------------------------------------------- */
void flash_sim_cut_after(flash_sim_t *sim, uint64_t nth_op, bool torn_bits)
{
    sim->cut_at = nth_op == 0 ? 0 : sim->ops + nth_op;
    sim->torn_bits = torn_bits;
}

bool flash_sim_power_lost(const flash_sim_t *sim)
{
    return sim->power_lost;
}

void flash_sim_power_on(flash_sim_t *sim)
{
    sim->power_lost = false;
    sim->cut_at = 0;
}

uint64_t flash_sim_ops(const flash_sim_t *sim)
{
    return sim->ops;
}

void flash_sim_read_flips(flash_sim_t *sim, uint32_t one_in)
{
    sim->read_flip_one_in = one_in;
}

void flash_sim_read_fault(flash_sim_t *sim, uint64_t first, uint64_t last, bool fail)
{
    if (first == 0 || last < first) {
        sim->rfault_lo = sim->rfault_hi = 0;
        return;
    }
    sim->rfault_lo = sim->reads + first;
    sim->rfault_hi = last == UINT64_MAX ? UINT64_MAX : sim->reads + last;
    sim->rfault_fail = fail;
}

void flash_sim_read_weak(flash_sim_t *sim, uint64_t byte_addr, int bit, uint32_t reads)
{
    flash_sim_read_weak_after(sim, byte_addr, bit, 0, reads);
}

void flash_sim_read_weak_after(flash_sim_t *sim, uint64_t byte_addr, int bit, uint32_t skip,
                               uint32_t reads)
{
    sim->weak_skip = skip;
    sim->weak_addr = byte_addr;
    sim->weak_bit = bit & 7;
    sim->weak_reads = byte_addr < sim->size ? reads : 0;
}

uint64_t flash_sim_reads(const flash_sim_t *sim)
{
    return sim->reads;
}

void flash_sim_flip_bit(flash_sim_t *sim, uint64_t byte_addr, int bit)
{
    if (byte_addr >= sim->size || bit < 0 || bit > 7) {
        return;
    }
    sim->data[byte_addr] ^= (uint8_t)(1u << bit);
}

void flash_sim_wear_limit(flash_sim_t *sim, uint32_t erases)
{
    sim->wear_limit = erases;
}

void flash_sim_fail_block(flash_sim_t *sim, uint32_t block)
{
    if (block < sim->dev.block_count) {
        sim->bad[block] = 1;
    }
}
