/*
 * fat.h - a FAT16/FAT32 filesystem with long file names, for an SD card.
 *
 * Written by hand: Debian ships no C FAT library to link (dosfstools and
 * mtools are programs, not libraries), and it must be portable device code:
 * no OS calls, no allocation, no stdio. Memory is the caller's fat_t: two
 * 512-byte sector buffers (one for the FAT, one for directories and file
 * data) and a table of FAT_MAX_OPEN open files.
 *
 * The card is a block device of 512-byte sectors in the shape of OpenMV's
 * block-device protocol (readblocks / writeblocks / ioctl count and size)
 * and of fs/flash.h (a context pointer, callbacks, then the geometry):
 *
 *   fat_blk_t bd = { ctx, my_read, my_write, my_sync, sector_count };
 *   fat_t fs;
 *   fat_mount(&fs, &bd, NULL);       // FAT16 or FAT32, plain or in an MBR
 *   fat_file_t *f;
 *   fat_open(&fs, "/logs/2026-12-07 night.txt", FAT_O_WRITE|FAT_O_CREATE, &f);
 *   fat_write(&fs, f, 0, "hello", 5);
 *   fat_close(&fs, f);               // the directory entry gets the size
 *   fat_unmount(&fs);                // flush, FSInfo (FAT32), sync
 *
 * Paths are absolute inside the card ("/a/b"), UTF-8, components up to 255
 * UTF-16 units; names compare without regard to ASCII case, as FAT does.
 * Both FAT copies are written on every FAT change; FAT32's FSInfo (free
 * count, next free) is written at fat_sync / fat_unmount.
 *
 * What survives a power cut: docs/FAT.md.
 * Return convention: 0 or a positive count, or a negative errno (FAT_ERR_*).
 */
#ifndef CELLAR_FAT_H
#define CELLAR_FAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAT_SECTOR 512u
#define FAT_MAX_OPEN 8u       /* open files per mounted card */
#define FAT_NAME_MAX 255u     /* bytes of a UTF-8 name we hand out */
#define FAT_PATH_MAX 255u     /* bytes of a path */

typedef enum {
    FAT_OK = 0,
    FAT_ERR_NOENT = -2,
    FAT_ERR_IO = -5,
    FAT_ERR_BADF = -9,
    FAT_ERR_NOMEM = -12,      /* the open-file table is full */
    FAT_ERR_BUSY = -16,       /* the file is open */
    FAT_ERR_EXIST = -17,
    FAT_ERR_NOTDIR = -20,
    FAT_ERR_ISDIR = -21,
    FAT_ERR_INVAL = -22,
    FAT_ERR_FBIG = -27,       /* past 4 GiB - 1 */
    FAT_ERR_NOSPC = -28,
    FAT_ERR_NAMETOOLONG = -36,
    FAT_ERR_NOTEMPTY = -39,
    FAT_ERR_CORRUPT = -84,    /* a chain or entry that cannot be right */
    FAT_ERR_NOTFAT = -95,     /* no FAT16/FAT32 boot sector (ENOTSUP) */
} fat_err_t;

typedef struct fat_blk fat_blk_t;
struct fat_blk {
    void *context;
    /* Read / write count sectors starting at sector lba. 0 or < 0. */
    int (*read)(const fat_blk_t *bd, uint32_t lba, void *buf, uint32_t count);
    int (*write)(const fat_blk_t *bd, uint32_t lba, const void *buf,
                 uint32_t count);
    /* Make the writes so far durable (may be NULL). */
    int (*sync)(const fat_blk_t *bd);
    uint32_t sector_count;    /* sectors of FAT_SECTOR bytes */
};

typedef enum { FAT_T_FILE = 1, FAT_T_DIR = 2 } fat_type_t;

typedef struct fat_stat {
    char name[FAT_NAME_MAX + 1]; /* long name (or the 8.3 one), UTF-8 */
    char short_name[13];         /* "README~1.TXT" */
    uint8_t type;                /* fat_type_t */
    uint8_t attr;                /* FAT attribute byte */
    uint32_t size;
    uint32_t mtime;              /* seconds since 1970 (local = UTC) */
    uint32_t ctime;
    uint32_t cluster;            /* first cluster (0 = empty file) */
} fat_stat_t;

typedef struct fat_statfs {
    uint8_t fat_bits;            /* 16 or 32 */
    uint32_t cluster_size;       /* bytes */
    uint32_t clusters;           /* data clusters */
    uint32_t free_clusters;
    uint64_t total, free;        /* bytes */
    char label[12];
} fat_statfs_t;

typedef struct fat_file {
    uint8_t used;
    uint8_t writable;
    uint8_t dirty;               /* size / first cluster to write back */
    uint32_t dirent_lba;         /* the 8.3 entry: sector and index */
    uint16_t dirent_idx;
    uint32_t first;              /* first cluster, 0 = none */
    uint32_t size;
    uint32_t ci, cc;             /* cache: cluster number ci of the chain is cc */
} fat_file_t;

/* A directory being listed: next = entry index to read next. */
typedef struct fat_dir {
    uint32_t start;              /* first cluster; 0 = FAT16's fixed root */
    uint32_t next;
} fat_dir_t;

/* A directory entry found by a path (private to the module: fat_int.h). */
typedef struct fat_ent {
    uint8_t root;                /* the path is "/" */
    uint32_t dir;                /* first cluster of its directory (0 = FAT16 root) */
    uint32_t idx;                /* index of its 8.3 entry in the directory */
    uint32_t first;              /* index of its first long-name entry */
    uint32_t lba;                /* sector of its 8.3 entry */
    uint8_t raw[32];             /* the 8.3 entry */
    fat_stat_t st;
} fat_ent_t;

typedef struct fat {
    const fat_blk_t *bd;
    uint32_t (*clock)(void *ctx); /* seconds since 1970, or NULL */
    void *clock_ctx;
    uint8_t mounted;
    uint8_t bits;                /* 16 or 32 */
    uint8_t nfats;
    uint8_t spc;                 /* sectors per cluster */
    uint32_t base;               /* first sector of the volume (MBR) */
    uint32_t fat_lba;            /* first FAT (absolute) */
    uint32_t fat_sectors;        /* per copy */
    uint32_t root_lba, root_sectors; /* FAT16 fixed root */
    uint32_t root_cluster;       /* FAT32 */
    uint32_t data_lba;
    uint32_t clusters;           /* data clusters: numbers 2..clusters+1 */
    uint32_t fsinfo_lba;         /* 0 = none */
    uint32_t free_count, next_free;
    uint8_t fsinfo_dirty;
    char label[12];
    uint32_t dc_start, dc_i, dc_c; /* cache: cluster dc_i of dir dc_start */
    /* the two sector buffers */
    uint32_t fbuf_lba;           /* FAT sector in fbuf (relative to fat_lba) */
    uint8_t fbuf_valid, fbuf_dirty;
    uint32_t dbuf_lba;           /* absolute sector in dbuf */
    uint8_t dbuf_valid, dbuf_dirty;
    uint8_t fbuf[FAT_SECTOR];
    uint8_t dbuf[FAT_SECTOR];
    fat_file_t files[FAT_MAX_OPEN];
    uint16_t lfn[FAT_NAME_MAX + 1]; /* scratch: a long name in UTF-16 */
    uint16_t lfn_w[FAT_NAME_MAX + 1]; /* scratch: a name being written */
    fat_ent_t ent;               /* scratch for fat_open */
} fat_t;

/* Mount: 0, FAT_ERR_NOTFAT (no FAT16/32 volume: FAT12, exFAT, garbage),
 * FAT_ERR_IO. clock may be NULL (times are then 1980-01-01). */
int fat_mount(fat_t *fs, const fat_blk_t *bd, uint32_t (*clock)(void *),
              void *clock_ctx);
/* Close every open file, flush, write FSInfo, sync. NULL-safe. */
int fat_unmount(fat_t *fs);
/* Flush buffers and FSInfo, then the device's sync. */
int fat_sync(fat_t *fs);

int fat_stat(fat_t *fs, const char *path, fat_stat_t *st);
int fat_statfs(fat_t *fs, fat_statfs_t *sf);

/* List: fat_dir_open, then fat_dir_read until it returns 0 (1 = *st holds
 * the next entry; "." and ".." and the volume label are skipped). d->next
 * may be saved and restored as a cursor. */
int fat_dir_open(fat_t *fs, const char *path, fat_dir_t *d);
int fat_dir_read(fat_t *fs, fat_dir_t *d, fat_stat_t *st);

int fat_mkdir(fat_t *fs, const char *path);
/* 0 if the last component of path is a name FAT can hold (the check of
 * fat_mkdir and fat_rename, for a name about to be created elsewhere:
 * svc_sd's Open writes a shadow first), else FAT_ERR_INVAL or
 * FAT_ERR_NAMETOOLONG. */
int fat_name_check(fat_t *fs, const char *path);
/* Remove a file, or (dir = true) an empty directory. */
int fat_remove(fat_t *fs, const char *path, bool dir);
/* Rename or move. An existing file at `to` is replaced: the old name goes,
 * then `to`'s directory entry takes the new chain in one sector write, then
 * its old chain is freed (a cut leaves `to` wholly old or wholly new). A
 * directory is never replaced; an open file is not renamed or replaced
 * (FAT_ERR_BUSY). */
int fat_rename(fat_t *fs, const char *from, const char *to);

/* Publish a finished shadow file under `to` (new or replaced): like
 * fat_rename, but the shadow's name always goes before `to` takes its
 * chain, so a power cut leaves `to` old (or absent) or new, and never two
 * names on one chain: a shadow left behind can be removed safely. */
int fat_publish(fat_t *fs, const char *shadow, const char *to);

#define FAT_O_READ 1u
#define FAT_O_WRITE 2u
#define FAT_O_CREATE 4u
#define FAT_O_EXCL 8u
#define FAT_O_TRUNC 16u
/* Open a file: 0 and *out, or an error. */
int fat_open(fat_t *fs, const char *path, uint32_t flags, fat_file_t **out);
/* pread / pwrite: bytes done (>= 0) or an error. A write past the end
 * fills the gap with zeros. */
int32_t fat_read(fat_t *fs, fat_file_t *f, uint32_t off, void *buf,
                 uint32_t len);
int32_t fat_write(fat_t *fs, fat_file_t *f, uint32_t off, const void *buf,
                  uint32_t len);
int fat_truncate(fat_t *fs, fat_file_t *f, uint32_t size);
/* Write the file's directory entry (size, first cluster, time) and flush. */
int fat_file_sync(fat_t *fs, fat_file_t *f);
int fat_close(fat_t *fs, fat_file_t *f);
uint32_t fat_file_size(const fat_file_t *f);

#endif /* CELLAR_FAT_H */
