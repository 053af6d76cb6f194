/*
 * crc32.h - CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), the checksum of
 * every record on flash and of UART frames. Portable, table-free (256 bytes
 * of table would be RAM on some parts; this is the nibble variant, 64 bytes
 * of const table).
 *
 * crc32_update(0, buf, len) gives the standard CRC-32 of buf; feed the
 * result back in to continue over more data.
 */
#ifndef CELLAR_CRC32_H
#define CELLAR_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32_update(uint32_t crc, const void *buf, size_t len);

#endif /* CELLAR_CRC32_H */
