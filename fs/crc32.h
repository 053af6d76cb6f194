/*
 * crc32.h - CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), the checksum of
 * every record on flash and of UART frames. zlib's on the host; a 64-byte
 * nibble table on the device (CELLAR_PROFILE_DEVICE).
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
