/*
 * layout.h - the partition table at the start of a cellar flash.
 *
 * Block 0 of the device holds the table; the partitions follow. Each
 * partition is an independent filesystem (fs/cfs.h) on a block range:
 *   "usr" - the working filesystem, served at /usr
 *   "bak" - the backup partition, served read-only at /bak
 * and any number (up to LAYOUT_MAX_PARTS - 2) of raw partitions (issue 15,
 * docs/RAW.md): named, block-aligned areas outside any filesystem, read,
 * erased and written by byte range (a MaixPy kmodel area, a config sector).
 * Portable (device-side) code: no OS calls.
 */
#ifndef CELLAR_LAYOUT_H
#define CELLAR_LAYOUT_H

#include <stdint.h>

#include "flash.h"

#define LAYOUT_MAX_PARTS 8 /* usr, bak and up to 6 raw partitions */
#define LAYOUT_NAME_MAX 8
#define LAYOUT_MAX_RAW (LAYOUT_MAX_PARTS - 2)

/* What a partition holds (proto PartKind). */
enum { LAYOUT_KIND_CFS = 0, LAYOUT_KIND_RAW = 1 };

typedef struct layout_part {
    char name[LAYOUT_NAME_MAX]; /* "usr", "bak", "model": NUL-terminated */
    uint32_t first_block;
    uint32_t block_count;
    uint32_t kind;              /* LAYOUT_KIND_* */
} layout_part_t;

/* A raw partition asked for at provisioning: name and size in blocks. */
typedef struct layout_raw {
    const char *name;
    uint32_t blocks;
} layout_raw_t;

typedef struct layout {
    uint32_t nparts;
    layout_part_t part[LAYOUT_MAX_PARTS];
} layout_t;

/* The default layout for a device of block_count blocks: block 0 the table,
 * "bak" gets bak_blocks (0 = a quarter of the device, rounded down, at least
 * 16 blocks), "usr" the rest. Returns 0, or -22 when the device is too small
 * (each partition needs at least 16 blocks). */
int layout_default(uint32_t block_count, uint32_t bak_blocks, layout_t *out);

/* The default layout with raw partitions: block 0 the table, then the raw
 * partitions in the order given (from block 1, so their addresses do not
 * depend on the device's size), then "usr", then "bak" at the end (0 = a
 * quarter of the device). Returns 0, or -22 (a name that is not
 * layout_raw_name_ok, twice, a raw partition of 0 blocks, too many, or
 * no room for 16 blocks each of usr and bak). */
int layout_default_raw(uint32_t block_count, uint32_t bak_blocks,
                       const layout_raw_t *raw, uint32_t nraw,
                       layout_t *out);

/* Is name usable for a raw partition: 1..7 bytes of [a-z0-9_-], starting
 * with a letter, not "usr", "bak" or "sd"? */
int layout_raw_name_ok(const char *name);

/* Does l have exactly the raw partitions raw[0..nraw) (names and sizes,
 * in any order)? 1 yes, 0 no. */
int layout_raw_match(const layout_t *l, const layout_raw_t *raw,
                     uint32_t nraw);

/* Read and validate the table in block 0. Returns 0, -2 (no table: the
 * table bytes of block 0 are erased), LAYOUT_ERR_FOREIGN (block 0 holds
 * something that is not a cellar table: not a cellar flash), or -84 (a
 * cellar table, corrupt or out of range). */
#define LAYOUT_ERR_FOREIGN (-95)
int layout_read(const flash_dev_t *dev, layout_t *out);

/* Erase block 0 and write the table (version 1, as before, when every
 * partition is a filesystem and there are at most 4; version 2, which
 * records each partition's kind, otherwise). */
/* Erase block 0 and write the table. Returns 0 or a negative flash error. */
int layout_write(const flash_dev_t *dev, const layout_t *l);

/* The partition called name, or NULL. */
const layout_part_t *layout_find(const layout_t *l, const char *name);

#endif /* CELLAR_LAYOUT_H */
