/* crc32.c - CRC-32 (see crc32.h).
 *
 * On the host, zlib's crc32() (the same CRC, the same chaining): it is
 * several times faster than a table walk, and checksums are most of the
 * daemon's work on a transfer. On the device (CELLAR_PROFILE_DEVICE, cellar_config.h) a nibble table
 * written by hand: 20 lines, 64 bytes of table, no library. */
#include "cellar_config.h"
#include "crc32.h"

#ifndef CELLAR_PROFILE_DEVICE
#include <zlib.h>

uint32_t crc32_update(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        crc = (uint32_t)crc32(crc, p, n);
        p += n;
        len -= n;
    }
    return crc;
}
#else

static const uint32_t crc32_nibble[16] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4,
    0x4db26158, 0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
    0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c,
};

uint32_t crc32_update(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ crc32_nibble[crc & 15];
        crc = (crc >> 4) ^ crc32_nibble[crc & 15];
    }
    return ~crc;
}
#endif
