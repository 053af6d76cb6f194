/* sd_file.c - an image file as the SD card's sector device (sd_file.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sd_file.h"

static int sd_read(const fat_blk_t *bd, uint32_t lba, void *buf, uint32_t n)
{
    const sd_file_t *sd = bd->context;
    size_t len = (size_t)n * FAT_SECTOR;
    ssize_t r = pread(sd->fd, buf, len, (off_t)lba * FAT_SECTOR);
    return r == (ssize_t)len ? 0 : -EIO;
}

static int sd_write(const fat_blk_t *bd, uint32_t lba, const void *buf,
                    uint32_t n)
{
    const sd_file_t *sd = bd->context;
    size_t len = (size_t)n * FAT_SECTOR;
    ssize_t r = pwrite(sd->fd, buf, len, (off_t)lba * FAT_SECTOR);
    return r == (ssize_t)len ? 0 : -EIO;
}

static int sd_sync(const fat_blk_t *bd)
{
    const sd_file_t *sd = bd->context;
    return fdatasync(sd->fd) ? -EIO : 0;
}

int sd_file_open(sd_file_t *sd, const char *path, char *why, size_t cap)
{
    memset(sd, 0, sizeof(*sd));
    sd->fd = open(path, O_RDWR | O_CLOEXEC);
    if (sd->fd < 0) {
        int e = errno;
        snprintf(why, cap, "%s", strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(sd->fd, &st) || !S_ISREG(st.st_mode) || st.st_size % FAT_SECTOR ||
        st.st_size / FAT_SECTOR > UINT32_MAX) {
        snprintf(why, cap, "not a regular file of whole 512-byte sectors");
        close(sd->fd);
        sd->fd = -1;
        return -EINVAL;
    }
    sd->bd = (fat_blk_t){ sd, sd_read, sd_write, sd_sync,
                          (uint32_t)(st.st_size / FAT_SECTOR) };
    return 0;
}

void sd_file_close(sd_file_t *sd)
{
    if (sd && sd->fd > 0) {
        close(sd->fd);
        sd->fd = -1;
    }
}
