/*
 * flash_sim.h - NOR flash simulator (host only).
 *
 * Implements flash_dev_t over RAM or over an image file that is written
 * through on every operation (a shared mapping), so a process killed at any
 * moment leaves the image exactly as a power cut would.
 *
 * NOR semantics: erase sets 0xFF; prog may only clear bits - an attempt to
 * set a bit from 0 to 1 fails with FLASH_ERR_CORRUPT and counts in
 * stats.illegal_progs (tests assert it stays 0).
 *
 * Timing model (W25Q-class, BRIEF.md): 0.7 ms per 256-byte page programmed
 * (a partial page costs a whole page program), 45 ms per 4 KiB erase,
 * 20 MB/s reads.
 */
#ifndef CELLAR_FLASH_SIM_H
#define CELLAR_FLASH_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "flash.h"

typedef struct flash_sim_stats {
    uint64_t bytes_read;
    uint64_t bytes_programmed;
    uint64_t pages_programmed;  /* distinct (block, page) program operations */
    uint64_t erases;            /* total block erases */
    uint64_t reads, progs;      /* number of calls */
    uint64_t illegal_progs;     /* progs that tried to set a bit: must be 0 */
    double time_us;             /* simulated flash time, microseconds */
} flash_sim_stats_t;

typedef struct flash_sim flash_sim_t; /* opaque */

typedef struct flash_sim_config {
    uint32_t block_size;   /* default 4096 */
    uint32_t block_count;  /* default 1024 (4 MiB) */
    uint32_t page_size;    /* default 256 */
    const char *path;      /* image file; NULL = RAM only */
    uint64_t seed;         /* PRNG seed for torn writes and bit flips */
} flash_sim_config_t;

/* Create a simulator. With a path, an existing image of the right size is
 * opened as it is; otherwise it is created erased (0xFF). Returns NULL on
 * failure (errno set). */
flash_sim_t *flash_sim_new(const flash_sim_config_t *cfg);
void flash_sim_free(flash_sim_t *sim); /* NULL-safe; syncs the image */

/* The device to hand to the filesystem (valid until flash_sim_free). */
const flash_dev_t *flash_sim_dev(flash_sim_t *sim);

/* Raw access to the flash contents (block_size * block_count bytes), for
 * tests that corrupt images and for the image tool. */
uint8_t *flash_sim_data(flash_sim_t *sim);
uint64_t flash_sim_size(const flash_sim_t *sim);

/* Counters. */
void flash_sim_stats(const flash_sim_t *sim, flash_sim_stats_t *out);
void flash_sim_reset_stats(flash_sim_t *sim);
uint32_t flash_sim_erase_count(const flash_sim_t *sim, uint32_t block);
/* Wear over every block of the device: erase counts since creation (not
 * cleared by flash_sim_reset_stats, not stored in the image). */
typedef struct flash_sim_wear {
    uint32_t min, max; /* lowest and highest per-block erase count */
    double mean;       /* total / block_count */
    uint64_t total;    /* erases of all blocks */
} flash_sim_wear_t;
void flash_sim_wear(const flash_sim_t *sim, flash_sim_wear_t *out);

/* ---- fault injection ---------------------------------------------------- */
/* Cut the power at the Nth program or erase from now (1 = the next one).
 * That operation is torn: a prog programs a random prefix of its bytes (and,
 * if torn_bits, random bits of the next byte); an erase leaves the block
 * with a random mix of erased and old bytes. Every later operation fails
 * with FLASH_ERR_POWER until flash_sim_power_on. 0 disarms. */
void flash_sim_cut_after(flash_sim_t *sim, uint64_t nth_op, bool torn_bits);
bool flash_sim_power_lost(const flash_sim_t *sim);
void flash_sim_power_on(flash_sim_t *sim);
/* Program and erase operations done since creation (to size a sweep).
 * Only operations that the device accepted count: a prog or erase rejected
 * with FLASH_ERR_INVAL / _IO / _CORRUPT is not an op, the torn one is. */
uint64_t flash_sim_ops(const flash_sim_t *sim);

/* Flip one random bit in the data returned by a read with probability
 * 1/one_in (0 disables). The flash itself is not changed. */
void flash_sim_read_flips(flash_sim_t *sim, uint32_t one_in);
/* A fault on chosen reads (SQLite-style: sweep the read number to hit every
 * read of an operation). Read calls are numbered from now, 1 = the next one;
 * reads first..last (last UINT64_MAX: every later read) return their data
 * with one random bit flipped, or, with fail, return FLASH_ERR_IO. The flash
 * itself is not changed. first 0 disarms. */
void flash_sim_read_fault(flash_sim_t *sim, uint64_t first, uint64_t last, bool fail);
/* A weak bit: the next `reads` reads that cover byte byte_addr return its
 * bit `bit` flipped, every time the same way (noise that repeats, which
 * must not pass for damage unless it lasts). 0 reads disarms. */
void flash_sim_read_weak(flash_sim_t *sim, uint64_t byte_addr, int bit, uint32_t reads);
/* The same after `skip` reads of it that come back right (to aim the flips
 * at one step of a call: a sweep over skip). */
void flash_sim_read_weak_after(flash_sim_t *sim, uint64_t byte_addr, int bit, uint32_t skip,
                               uint32_t reads);
/* Read calls made since creation (to size a sweep of read_fault). */
uint64_t flash_sim_reads(const flash_sim_t *sim);
/* Flip a bit in the stored data (bit rot), for corruption tests. */
void flash_sim_flip_bit(flash_sim_t *sim, uint64_t byte_addr, int bit);

/* Blocks wear out after `erases` erases: further erases and progs on them
 * fail with FLASH_ERR_IO (reads still work). 0 = never. */
void flash_sim_wear_limit(flash_sim_t *sim, uint32_t erases);
/* Make one block fail progs/erases from now on (a bad block). */
void flash_sim_fail_block(flash_sim_t *sim, uint32_t block);

#endif /* CELLAR_FLASH_SIM_H */
