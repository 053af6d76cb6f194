/* layout.c - partition table in block 0 (see layout.h). */
#include "layout.h"

#include <string.h>

#include "crc32.h"
#include "le.h"

/* On flash: magic, version, nparts, then nparts entries of
 * {name[8], first u32, count u32}, then a CRC-32 of everything before it.
 * All integers little-endian. */
#define LAYOUT_MAGIC 0x544c4543u /* "CELT" */
#define LAYOUT_VERSION 1u
#define LAYOUT_BYTES (12 + LAYOUT_MAX_PARTS * 16 + 4)

int layout_default(uint32_t block_count, uint32_t bak_blocks, layout_t *out)
{
    memset(out, 0, sizeof(*out));
    if (block_count < 1 + 32)
        return -22;
    if (bak_blocks == 0) {
        bak_blocks = block_count / 4;
        if (bak_blocks < 16)
            bak_blocks = 16;
    }
    if (bak_blocks < 16 || bak_blocks + 16 + 1 > block_count)
        return -22;
    out->nparts = 2;
    strcpy(out->part[0].name, "usr");
    out->part[0].first_block = 1;
    out->part[0].block_count = block_count - 1 - bak_blocks;
    strcpy(out->part[1].name, "bak");
    out->part[1].first_block = block_count - bak_blocks;
    out->part[1].block_count = bak_blocks;
    return 0;
}

int layout_read(const flash_dev_t *dev, layout_t *out)
{
    uint8_t b[LAYOUT_BYTES];
    memset(out, 0, sizeof(*out));
    int err = dev->read(dev, 0, 0, b, sizeof(b));
    if (err)
        return err;
    if (le_get32(b) != LAYOUT_MAGIC) {
        for (size_t i = 0; i < sizeof(b); i++)
            if (b[i] != 0xff)
                return LAYOUT_ERR_FOREIGN; /* not ours: never written over */
        return -2;                         /* erased: a blank device */
    }
    uint32_t n = le_get32(b + 8);
    if (le_get32(b + 4) != LAYOUT_VERSION || n == 0 || n > LAYOUT_MAX_PARTS)
        return -84;
    if (crc32_update(0, b, LAYOUT_BYTES - 4) != le_get32(b + LAYOUT_BYTES - 4))
        return -84;
    out->nparts = n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = b + 12 + i * 16;
        layout_part_t *p = &out->part[i];
        memcpy(p->name, e, LAYOUT_NAME_MAX);
        p->name[LAYOUT_NAME_MAX - 1] = 0;
        p->first_block = le_get32(e + 8);
        p->block_count = le_get32(e + 12);
        if (p->first_block == 0 || p->block_count < 16 ||
            p->first_block + p->block_count > dev->block_count ||
            p->first_block + p->block_count < p->first_block)
            return -84;
    }
    return 0;
}

int layout_write(const flash_dev_t *dev, const layout_t *l)
{
    uint8_t b[LAYOUT_BYTES];
    if (l->nparts == 0 || l->nparts > LAYOUT_MAX_PARTS)
        return -22;
    memset(b, 0, sizeof(b));
    le_put32(b, LAYOUT_MAGIC);
    le_put32(b + 4, LAYOUT_VERSION);
    le_put32(b + 8, l->nparts);
    for (uint32_t i = 0; i < l->nparts; i++) {
        uint8_t *e = b + 12 + i * 16;
        memcpy(e, l->part[i].name, LAYOUT_NAME_MAX);
        le_put32(e + 8, l->part[i].first_block);
        le_put32(e + 12, l->part[i].block_count);
    }
    le_put32(b + LAYOUT_BYTES - 4, crc32_update(0, b, LAYOUT_BYTES - 4));
    int err = dev->erase(dev, 0);
    if (!err)
        err = dev->prog(dev, 0, 0, b, sizeof(b));
    if (!err && dev->sync)
        err = dev->sync(dev);
    return err;
}

const layout_part_t *layout_find(const layout_t *l, const char *name)
{
    for (uint32_t i = 0; i < l->nparts; i++)
        if (strncmp(l->part[i].name, name, LAYOUT_NAME_MAX) == 0)
            return &l->part[i];
    return 0;
}
