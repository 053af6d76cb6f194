/*
 * fs.h - cellar's flash filesystem (cfs): public API.
 *
 * A log-structured, power-loss-safe filesystem for NOR flash. The design and
 * the on-flash format are written down in docs/FS.md.
 *
 * Memory: the caller owns every object (fs_t, fs_file_t, fs_dir_t). The
 * filesystem allocates nothing; sizeof(fs_t) + N * sizeof(fs_file_t) is all
 * the RAM it needs for a mounted filesystem with N open files (the stack use
 * of the calls is bounded too and documented in docs/FS.md).
 *
 * Errors: every call returns a negative fs_err_t on failure; calls that
 * produce a size return it as a non-negative int.
 *
 * Threads: one fs_t is not thread-safe; serialise calls on it (the service
 * runs one event loop).
 */
#ifndef CELLAR_FS_H
#define CELLAR_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash.h"

/* ---- errors (negative, mirroring errno) -------------------------------- */
typedef enum {
    FS_OK = 0,
    FS_ERR_PERM = -1,         /* operation not permitted (e.g. rename / ) */
    FS_ERR_NOENT = -2,        /* no such file or directory */
    FS_ERR_IO = -5,           /* flash device error */
    FS_ERR_BADF = -9,         /* bad handle, or handle not open for this */
    FS_ERR_NOMEM = -12,       /* a fixed table is full (open files, ...) */
    FS_ERR_BUSY = -16,        /* file is open / operation in progress */
    FS_ERR_EXIST = -17,       /* already exists */
    FS_ERR_NOTDIR = -20,      /* a path component is not a directory */
    FS_ERR_ISDIR = -21,       /* is a directory */
    FS_ERR_INVAL = -22,       /* invalid argument / path */
    FS_ERR_FBIG = -27,        /* file too large */
    FS_ERR_NOSPC = -28,       /* no space left on the device */
    FS_ERR_ROFS = -30,        /* read-only (worn out past the spare pool) */
    FS_ERR_NAMETOOLONG = -36, /* path or name longer than FS_PATH_MAX */
    FS_ERR_NOTEMPTY = -39,    /* directory not empty */
    FS_ERR_NOTMOUNTED = -77,  /* no valid filesystem (EBADFD) */
    FS_ERR_CORRUPT = -84,     /* checksum mismatch: data or metadata corrupt */
} fs_err_t;

/* Human-readable name of an fs_err_t ("no such file or directory"). */
const char *fs_strerror(int err);

/* ---- limits ------------------------------------------------------------- */
#define FS_PATH_MAX 255      /* bytes in a whole path, without the NUL */
#define FS_NAME_MAX 255      /* bytes in one path component */
#define FS_MAX_OPEN 72       /* open files per fs_t at once */
#define FS_FILE_MAX 0x7fffffffu /* largest file size in bytes */

typedef enum { FS_TYPE_FILE = 1, FS_TYPE_DIR = 2 } fs_type_t;

/* Open flags (combine with |). */
enum {
    FS_O_RDONLY = 0x01,
    FS_O_WRONLY = 0x02,
    FS_O_RDWR = 0x03,
    FS_O_CREAT = 0x0100,  /* create if missing */
    FS_O_EXCL = 0x0200,   /* with CREAT: fail with EXIST if it exists */
    FS_O_TRUNC = 0x0400,  /* truncate to 0 on open */
    FS_O_APPEND = 0x0800, /* every write goes to the end */
};

enum { FS_SEEK_SET = 0, FS_SEEK_CUR = 1, FS_SEEK_END = 2 };

/* ---- configuration ------------------------------------------------------ */
typedef struct fs_config {
    const flash_dev_t *dev; /* the flash device (required) */
    /* The partition: blocks [first_block, first_block + block_count) of the
     * device. block_count 0 means "to the end of the device". At least 16
     * blocks. Two fs_t on disjoint partitions of one device are independent. */
    uint32_t first_block;
    uint32_t block_count;
    /* Wall clock for created/modified times, in seconds since 1970 (NULL:
     * times are 0). */
    uint32_t (*clock)(void *clock_ctx);
    void *clock_ctx;
    /* Automatic garbage collection starts when fewer than this many blocks
     * above the reserve are free (0 = default: 1/16 of the partition, at
     * least 8; otherwise at least 6). */
    uint32_t gc_free_blocks;
} fs_config_t;

/* ---- information -------------------------------------------------------- */
typedef struct fs_stat {
    fs_type_t type;
    uint32_t size;   /* bytes, 0 for directories */
    uint32_t ctime;  /* created, seconds since 1970 */
    uint32_t mtime;  /* last modified (last synced write), seconds */
    uint32_t ino;    /* inode number, unique for the life of the fs */
} fs_stat_t;

typedef struct fs_statvfs {
    uint32_t block_size;     /* erase block bytes */
    uint32_t block_count;    /* blocks in the partition */
    uint64_t total;          /* bytes usable for data and metadata */
    uint64_t used;           /* bytes the log holds (live and stale) */
    uint64_t live;           /* bytes of live records (files + metadata) */
    uint64_t free;           /* bytes erased and ready (total - used) */
    uint64_t reclaimable;    /* stale bytes garbage collection can free */
    uint32_t files;          /* number of files */
    uint32_t dirs;           /* number of directories (root included) */
    uint32_t erase_max;      /* highest erase count of any good block */
    uint32_t erase_mean;     /* mean erase count over good blocks */
    uint32_t erase_min;      /* lowest erase count of any good block */
    uint32_t bad_blocks;     /* blocks retired as worn out */
    uint64_t claimed;        /* bytes the files claim (sizes, holes of
                                sparse files included, + 64 per object):
                                live is this, capped at used */
    uint64_t reserve;        /* bytes the filesystem keeps for itself
                                (checkpoints, GC): ordinary operations
                                fail with FS_ERR_NOSPC below it */
} fs_statvfs_t;

/* ---- opaque-by-convention objects (caller-owned, fields private) -------- */
#include "fs_types.h"

/* ---- lifecycle ---------------------------------------------------------- */

/* Erase the partition and write an empty filesystem (root directory only).
 * Does not need a mounted fs_t; fs may be used afterwards with fs_mount. */
int fs_format(fs_t *fs, const fs_config_t *cfg);

/* Mount: find the latest checkpoint and replay the journal after it. Reads
 * an amount of flash that does not grow with the partition size: the anchors,
 * the checkpoint and the records since it (a checkpoint every 512 records).
 * Returns FS_ERR_NOTMOUNTED when no filesystem is found, FS_ERR_CORRUPT when
 * one is found but damaged beyond recovery. */
int fs_mount(fs_t *fs, const fs_config_t *cfg);

/* Write a checkpoint (so the next mount replays nothing) and detach. Open
 * files are synced and closed first. */
int fs_unmount(fs_t *fs);

/* ---- files ---------------------------------------------------------------
 * Durability: data written to a file becomes durable, and visible to other
 * handles of the same file, when fs_file_sync or fs_file_close returns. After
 * a power cut every file is in its last synced/closed state, never a mix. A
 * file written without sync is synced automatically when its pending writes
 * touch 48 segments (768 KiB of file offsets), or when the device is so full
 * that garbage collection reaches its pending records (docs/FS.md). One
 * handle at a time may have a file open for writing (others get
 * FS_ERR_BUSY); any number may read it. */
int fs_file_open(fs_t *fs, fs_file_t *file, const char *path, int flags);
int fs_file_close(fs_t *fs, fs_file_t *file);
int fs_file_sync(fs_t *fs, fs_file_t *file);
/* Returns bytes read (0 at end of file) or a negative error. */
int fs_file_read(fs_t *fs, fs_file_t *file, void *buf, uint32_t len);
/* Returns bytes written (len) or a negative error. A write that fails
 * changes nothing the handle will commit (unless an automatic sync in the
 * middle of it committed a part already). */
int fs_file_write(fs_t *fs, fs_file_t *file, const void *buf, uint32_t len);
/* Positional variants: do not move the file position. */
int fs_file_pread(fs_t *fs, fs_file_t *file, void *buf, uint32_t len,
                  uint32_t off);
int fs_file_pwrite(fs_t *fs, fs_file_t *file, const void *buf, uint32_t len,
                   uint32_t off);
/* Returns the new position or a negative error. */
int32_t fs_file_seek(fs_t *fs, fs_file_t *file, int32_t off, int whence);
int32_t fs_file_tell(fs_t *fs, fs_file_t *file);
int32_t fs_file_size(fs_t *fs, fs_file_t *file);
/* The size as last committed (what fs_statvfs counts in `claimed` for
 * this file); fs_file_size - this is the growth still pending. */
int32_t fs_file_committed_size(fs_t *fs, fs_file_t *file);
int fs_file_truncate(fs_t *fs, fs_file_t *file, uint32_t size);
/* Drop the writes made through file since its last commit (sync, close,
 * fs_file_commit_with): the handle is back at the committed content. Not
 * possible after an automatic sync committed part of them. */
int fs_file_revert(fs_t *fs, fs_file_t *file);

/* ---- namespace ---------------------------------------------------------- */
int fs_stat(fs_t *fs, const char *path, fs_stat_t *st);
int fs_remove(fs_t *fs, const char *path); /* file, or empty directory */
/* Atomic: after a power cut either the old or the new name exists. Replaces
 * an existing target file (or empty directory when src is a directory). */
int fs_rename(fs_t *fs, const char *src, const char *dst);
int fs_mkdir(fs_t *fs, const char *path);
int fs_rmdir(fs_t *fs, const char *path); /* empty directory only */

/* Multi-file atomic commit: perform up to FS_RENAME_MANY_MAX renames as one
 * atomic step (all or none after a power cut). Each pair is src[i] -> dst[i];
 * dst may be NULL, meaning "remove src[i]". Validated fully before anything
 * is written; on error nothing changes. This is the primitive the update
 * transactions of the service build on. */
#define FS_RENAME_MANY_MAX 16
int fs_rename_many(fs_t *fs, const char *const *src, const char *const *dst,
                   uint32_t n);

/* The same, together with the pending writes of an open file: f's data and
 * size since its last sync and up to FS_RENAME_MANY_MAX renames/removals
 * become durable and visible in one atomic step (f stays open). The renames
 * may not replace or remove f itself (FS_ERR_BUSY). The service keeps its
 * manifest file open in f and moves files into place with it. */
int fs_file_commit_with(fs_t *fs, fs_file_t *f, const char *const *src,
                        const char *const *dst, uint32_t n);

/* Hold off garbage collection until fs_release: GC (which may commit an
 * open file's pending writes early, see fs_file_open) runs first, to make
 * room for `bytes` as an operation of that size would, and then not at all;
 * operations that would need it fail with FS_ERR_NOSPC instead, and a
 * write that would trigger an automatic sync fails with FS_ERR_FBIG. So
 * pending writes made under a hold are committed only by their handle's
 * own sync/close/commit_with, or dropped by fs_file_revert: the service
 * writes its manifest slots and commits them with the renames this way.
 * Holds nest. */
int fs_hold(fs_t *fs, uint32_t bytes);
void fs_release(fs_t *fs);

/* Directory listing. Entries come in no particular order; "." and ".." are
 * not listed. readdir returns 1 with an entry, 0 at the end, or an error. */
int fs_dir_open(fs_t *fs, fs_dir_t *dir, const char *path);
int fs_dir_read(fs_t *fs, fs_dir_t *dir, char *name, uint32_t name_size,
                fs_stat_t *st);
int fs_dir_close(fs_t *fs, fs_dir_t *dir);

/* ---- space, maintenance ------------------------------------------------- */
/* Reads nothing from flash: answered from counters kept in RAM. */
int fs_statvfs(fs_t *fs, fs_statvfs_t *out);
/* Garbage-collect up to `blocks` blocks now (0: until the reclaimable space
 * in the tail is gone or nothing more can be freed). Returns blocks freed. */
int fs_gc(fs_t *fs, uint32_t blocks);

/* Consistency check of a mounted fs: every record checksum, every reference,
 * directory tree and counters. Returns 0 if clean, FS_ERR_CORRUPT otherwise;
 * if report is not NULL it is called with one line per problem found. */
typedef void (*fs_report_fn)(void *ctx, const char *line);
int fs_fsck(fs_t *fs, fs_report_fn report, void *report_ctx);

#endif /* CELLAR_FS_H */
