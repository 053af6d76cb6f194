/*
 * layout.h - the partition table at the start of a cellar flash.
 *
 * Block 0 of the device holds the table; the partitions follow. Each
 * partition is an independent filesystem (fs/cfs.h) on a block range:
 *   "usr" - the working filesystem, served at /usr
 *   "bak" - the backup partition, served read-only at /bak
 * Portable (device-side) code: no OS calls.
 */
#ifndef CELLAR_LAYOUT_H
#define CELLAR_LAYOUT_H

#include <stdint.h>

#include "flash.h"

#define LAYOUT_MAX_PARTS 4
#define LAYOUT_NAME_MAX 8

typedef struct layout_part {
    char name[LAYOUT_NAME_MAX]; /* "usr", "bak": NUL-terminated */
    uint32_t first_block;
    uint32_t block_count;
} layout_part_t;

typedef struct layout {
    uint32_t nparts;
    layout_part_t part[LAYOUT_MAX_PARTS];
} layout_t;

/* The default layout for a device of block_count blocks: block 0 the table,
 * "bak" gets bak_blocks (0 = a quarter of the device, rounded down, at least
 * 16 blocks), "usr" the rest. Returns 0, or -22 when the device is too small
 * (each partition needs at least 16 blocks). */
int layout_default(uint32_t block_count, uint32_t bak_blocks, layout_t *out);

/* Read and validate the table in block 0. Returns 0, -2 (no table: the
 * table bytes of block 0 are erased), LAYOUT_ERR_FOREIGN (block 0 holds
 * something that is not a cellar table: not a cellar flash), or -84 (a
 * cellar table, corrupt or out of range). */
#define LAYOUT_ERR_FOREIGN (-95)
int layout_read(const flash_dev_t *dev, layout_t *out);

/* Erase block 0 and write the table. Returns 0 or a negative flash error. */
int layout_write(const flash_dev_t *dev, const layout_t *l);

/* The partition called name, or NULL. */
const layout_part_t *layout_find(const layout_t *l, const char *name);

#endif /* CELLAR_LAYOUT_H */
