/* layout.c - partition table in block 0 (see layout.h). */
#include "layout.h"

#include <stdbool.h>
#include <string.h>

#include "crc32.h"
#include "le.h"

/* On flash: magic, version, nparts, then the entries, then a CRC-32 of
 * everything before it. All integers little-endian.
 *   version 1: 4 entries of {name[8], first u32, count u32} (filesystems)
 *   version 2: 8 entries of {name[8], first u32, count u32, kind u32}
 *              (issue 15: raw partitions)
 * Unused entries are zero. A table that version 1 can hold is written as
 * version 1, so older readers keep reading it. */
#define LAYOUT_MAGIC 0x544c4543u /* "CELT" */
#define LAYOUT_V1 1u
#define LAYOUT_V2 2u
#define LAYOUT_V1_PARTS 4u
#define LAYOUT_V1_BYTES (12 + LAYOUT_V1_PARTS * 16 + 4)
#define LAYOUT_V2_BYTES (12 + LAYOUT_MAX_PARTS * 20 + 4)

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

int layout_raw_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= LAYOUT_NAME_MAX || name[0] < 'a' || name[0] > 'z')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return strcmp(name, "usr") && strcmp(name, "bak") && strcmp(name, "sd");
}

int layout_default_raw(uint32_t block_count, uint32_t bak_blocks,
                       const layout_raw_t *raw, uint32_t nraw,
                       layout_t *out)
{
    uint32_t used = 0;
    if (nraw > LAYOUT_MAX_RAW)
        return -22;
    for (uint32_t i = 0; i < nraw; i++) {
        if (!raw[i].name || !layout_raw_name_ok(raw[i].name) ||
            raw[i].blocks == 0 || raw[i].blocks > block_count)
            return -22;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(raw[i].name, raw[j].name) == 0)
                return -22;
        used += raw[i].blocks;
        if (used > block_count)
            return -22;
    }
    if (bak_blocks == 0) {
        bak_blocks = block_count / 4;
        if (bak_blocks < 16)
            bak_blocks = 16;
    }
    int err = layout_default(block_count - used, bak_blocks, out);
    if (err)
        return err;
    layout_part_t cfs[2] = { out->part[0], out->part[1] };
    memset(out, 0, sizeof(*out));
    uint32_t next = 1;
    for (uint32_t i = 0; i < nraw; i++) {
        layout_part_t *p = &out->part[out->nparts++];
        memcpy(p->name, raw[i].name, strlen(raw[i].name) + 1);
        p->first_block = next;
        p->block_count = raw[i].blocks;
        p->kind = LAYOUT_KIND_RAW;
        next += raw[i].blocks;
    }
    for (uint32_t i = 0; i < 2; i++) { /* usr, then bak: shifted up */
        cfs[i].first_block += used;
        out->part[out->nparts++] = cfs[i];
    }
    return 0;
}

int layout_raw_match(const layout_t *l, const layout_raw_t *raw,
                     uint32_t nraw)
{
    uint32_t have = 0;
    for (uint32_t i = 0; i < l->nparts; i++)
        if (l->part[i].kind == LAYOUT_KIND_RAW)
            have++;
    if (have != nraw)
        return 0;
    for (uint32_t i = 0; i < nraw; i++) {
        const layout_part_t *p = layout_find(l, raw[i].name);
        if (!p || p->kind != LAYOUT_KIND_RAW || p->block_count != raw[i].blocks)
            return 0;
    }
    return 1;
}

int layout_read(const flash_dev_t *dev, layout_t *out)
{
    uint8_t b[LAYOUT_V2_BYTES];
    memset(out, 0, sizeof(*out));
    uint32_t want = dev->block_size < sizeof(b) ? dev->block_size
                                                : (uint32_t)sizeof(b);
    int err = dev->read(dev, 0, 0, b, want);
    if (err)
        return err;
    if (le_get32(b) != LAYOUT_MAGIC) {
        for (size_t i = 0; i < LAYOUT_V1_BYTES; i++)
            if (b[i] != 0xff)
                return LAYOUT_ERR_FOREIGN; /* not ours: never written over */
        return -2;                         /* erased: a blank device */
    }
    uint32_t ver = le_get32(b + 4), n = le_get32(b + 8);
    uint32_t bytes = ver == LAYOUT_V1 ? LAYOUT_V1_BYTES : LAYOUT_V2_BYTES;
    uint32_t esz = ver == LAYOUT_V1 ? 16 : 20;
    uint32_t max = ver == LAYOUT_V1 ? LAYOUT_V1_PARTS : LAYOUT_MAX_PARTS;
    if ((ver != LAYOUT_V1 && ver != LAYOUT_V2) || bytes > want || n == 0 ||
        n > max)
        return -84;
    if (crc32_update(0, b, bytes - 4) != le_get32(b + bytes - 4))
        return -84;
    out->nparts = n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = b + 12 + i * esz;
        layout_part_t *p = &out->part[i];
        memcpy(p->name, e, LAYOUT_NAME_MAX);
        p->name[LAYOUT_NAME_MAX - 1] = 0;
        p->first_block = le_get32(e + 8);
        p->block_count = le_get32(e + 12);
        p->kind = ver == LAYOUT_V1 ? LAYOUT_KIND_CFS : le_get32(e + 16);
        if (p->kind > LAYOUT_KIND_RAW || p->first_block == 0 ||
            p->block_count < (p->kind == LAYOUT_KIND_RAW ? 1u : 16u) ||
            p->first_block + p->block_count > dev->block_count ||
            p->first_block + p->block_count < p->first_block)
            return -84;
        for (uint32_t j = 0; j < i; j++) { /* no overlaps, no twins */
            const layout_part_t *q = &out->part[j];
            if (strcmp(p->name, q->name) == 0 ||
                (p->first_block < q->first_block + q->block_count &&
                 q->first_block < p->first_block + p->block_count))
                return -84;
        }
    }
    return 0;
}

int layout_write(const flash_dev_t *dev, const layout_t *l)
{
    uint8_t b[LAYOUT_V2_BYTES];
    if (l->nparts == 0 || l->nparts > LAYOUT_MAX_PARTS)
        return -22;
    bool v1 = l->nparts <= LAYOUT_V1_PARTS;
    for (uint32_t i = 0; i < l->nparts; i++)
        if (l->part[i].kind != LAYOUT_KIND_CFS)
            v1 = false;
    uint32_t bytes = v1 ? LAYOUT_V1_BYTES : LAYOUT_V2_BYTES;
    uint32_t esz = v1 ? 16 : 20;
    if (bytes > dev->block_size)
        return -22;
    memset(b, 0, sizeof(b));
    le_put32(b, LAYOUT_MAGIC);
    le_put32(b + 4, v1 ? LAYOUT_V1 : LAYOUT_V2);
    le_put32(b + 8, l->nparts);
    for (uint32_t i = 0; i < l->nparts; i++) {
        uint8_t *e = b + 12 + i * esz;
        memcpy(e, l->part[i].name, LAYOUT_NAME_MAX);
        le_put32(e + 8, l->part[i].first_block);
        le_put32(e + 12, l->part[i].block_count);
        if (!v1)
            le_put32(e + 16, l->part[i].kind);
    }
    le_put32(b + bytes - 4, crc32_update(0, b, bytes - 4));
    int err = dev->erase(dev, 0);
    if (!err)
        err = dev->prog(dev, 0, 0, b, bytes);
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
