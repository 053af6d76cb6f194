/* sd_file.h - an SD card on the host: a FAT block device (fs/fat/fat.h) of
 * 512-byte sectors over an image file (pread / pwrite / fsync). Issue 15. */
#ifndef CELLAR_SD_FILE_H
#define CELLAR_SD_FILE_H

#include "fat/fat.h"

typedef struct sd_file {
    int fd;
    fat_blk_t bd;
} sd_file_t;

/* Open path read-write: 0, or -errno (the file is missing, not a multiple
 * of 512 bytes, ...) with a reason in why. */
int sd_file_open(sd_file_t *sd, const char *path, char *why, size_t cap);
void sd_file_close(sd_file_t *sd);

#endif /* CELLAR_SD_FILE_H */
