/*
 * fs.h - cellar's flash filesystem (cfs): public API.
 *
 * A log-structured, power-loss-safe filesystem for NOR flash. The design and
 * the on-flash format are written down in docs/FS.md.
 *
 * Memory: the caller owns every object (cfs_t, cfs_file_t, cfs_dir_t, and
 * the work area cfs_work_t). The filesystem allocates nothing;
 * sizeof(cfs_t) + N * sizeof(cfs_file_t) + one sizeof(cfs_work_t) shared by
 * every cfs_t of a thread is all the RAM it needs for a mounted filesystem
 * with N open files (the stack use of the calls is bounded too and
 * documented in docs/FS.md).
 *
 * Errors: every call returns a negative cfs_err_t on failure; calls that
 * produce a size return it as a non-negative int.
 *
 * Threads: one cfs_t is not thread-safe; serialise calls on it (the service
 * runs one event loop).
 */
#ifndef CELLAR_CFS_H
#define CELLAR_CFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "flash.h"

/* ---- errors (negative, mirroring errno) -------------------------------- */
typedef enum {
    CFS_OK = 0,
    CFS_ERR_PERM = -1,         /* operation not permitted (e.g. rename / ) */
    CFS_ERR_NOENT = -2,        /* no such file or directory */
    CFS_ERR_IO = -5,           /* flash device error */
    CFS_ERR_BADF = -9,         /* bad handle, or handle not open for this */
    CFS_ERR_NOMEM = -12,       /* a fixed table is full (open files, ...) */
    CFS_ERR_BUSY = -16,        /* file is open / operation in progress */
    CFS_ERR_EXIST = -17,       /* already exists */
    CFS_ERR_NOTDIR = -20,      /* a path component is not a directory */
    CFS_ERR_ISDIR = -21,       /* is a directory */
    CFS_ERR_INVAL = -22,       /* invalid argument / path */
    CFS_ERR_FBIG = -27,        /* file too large */
    CFS_ERR_NOSPC = -28,       /* no space left on the device */
    CFS_ERR_ROFS = -30,        /* read-only (worn out past the spare pool) */
    CFS_ERR_NAMETOOLONG = -36, /* path or name longer than CFS_PATH_MAX */
    CFS_ERR_NOTEMPTY = -39,    /* directory not empty */
    CFS_ERR_NOTMOUNTED = -77,  /* no valid filesystem (EBADFD) */
    CFS_ERR_CORRUPT = -84,     /* checksum mismatch: data or metadata corrupt */
} cfs_err_t;

/* Human-readable name of an cfs_err_t ("no such file or directory"). */
const char *cfs_strerror(int err);

/* ---- limits ------------------------------------------------------------- */
#define CFS_PATH_MAX 255      /* bytes in a whole path, without the NUL */
#define CFS_NAME_MAX 255      /* bytes in one path component */
#define CFS_MAX_OPEN 72       /* open files per cfs_t at once */
#define CFS_FILE_MAX 0x7fffffffu /* largest file size in bytes */

typedef enum { CFS_TYPE_FILE = 1, CFS_TYPE_DIR = 2 } cfs_type_t;

/* Open flags (combine with |). */
enum {
    CFS_O_RDONLY = 0x01,
    CFS_O_WRONLY = 0x02,
    CFS_O_RDWR = 0x03,
    CFS_O_CREAT = 0x0100,  /* create if missing */
    CFS_O_EXCL = 0x0200,   /* with CREAT: fail with EXIST if it exists */
    CFS_O_TRUNC = 0x0400,  /* truncate to 0 on open */
    CFS_O_APPEND = 0x0800, /* every write goes to the end */
};

enum { CFS_SEEK_SET = 0, CFS_SEEK_CUR = 1, CFS_SEEK_END = 2 };

/* ---- configuration ------------------------------------------------------ */
typedef struct cfs_config {
    const flash_dev_t *dev; /* the flash device (required) */
    /* The partition: blocks [first_block, first_block + block_count) of the
     * device. block_count 0 means "to the end of the device". At least 16
     * blocks. Two cfs_t on disjoint partitions of one device are independent. */
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
    /* The work area (cfs_work_t, cfs_types.h): big buffers the calls use
     * while they run, instead of the stack. One may serve every cfs_t the
     * caller uses from one thread (the service holds one for both its
     * partitions). NULL: the host profile uses one per thread of its own;
     * the device profile refuses (CFS_ERR_INVAL). */
    struct cfs_work *work;
    /* 1: let files grow until GC can free no more, without the room kept
     * for moving every map key once (statvfs `move_room`). A partition
     * filled that way may be unable to free the space its removes make
     * (docs/FS.md section 6, "Room to move"); for tools and tests that
     * build such images. 0 (default): growth stops at that room. */
    uint8_t no_move_room;
} cfs_config_t;

/* ---- information -------------------------------------------------------- */
typedef struct cfs_stat {
    cfs_type_t type;
    uint32_t size;   /* bytes, 0 for directories */
    uint32_t ctime;  /* created, seconds since 1970 */
    uint32_t mtime;  /* last modified (last synced write), seconds */
    uint32_t ino;    /* inode number, unique for the life of the fs */
} cfs_stat_t;

typedef struct cfs_statvfs {
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
                                fail with CFS_ERR_NOSPC below it */
    uint32_t gc_threshold;   /* automatic GC starts when fewer blocks than
                                this are free above the reserve */
    uint64_t move_room;      /* bytes kept so that GC can move every map
                                key once (on top of `reserve`): a write,
                                create or mkdir fails with CFS_ERR_NOSPC
                                when `claimed` + it would go past `total` -
                                `reserve` - this (docs/FS.md section 6) */
} cfs_statvfs_t;

/* ---- opaque-by-convention objects (caller-owned, fields private) -------- */
#include "cfs_types.h"

/* ---- lifecycle ---------------------------------------------------------- */

/* Erase the partition and write an empty filesystem (root directory only).
 * Does not need a mounted cfs_t; fs may be used afterwards with cfs_mount. */
int cfs_format(cfs_t *fs, const cfs_config_t *cfg);

/* Mount: find the latest checkpoint and replay the journal after it. Reads
 * an amount of flash that does not grow with the partition size: the anchors,
 * the checkpoint and the records since it (a checkpoint every 512 records).
 * Returns CFS_ERR_NOTMOUNTED when no filesystem is found, CFS_ERR_CORRUPT when
 * one is found but damaged beyond recovery. */
int cfs_mount(cfs_t *fs, const cfs_config_t *cfg);

/* Write a checkpoint (so the next mount replays nothing) and detach. Open
 * files are synced and closed first. */
int cfs_unmount(cfs_t *fs);

/* ---- files ---------------------------------------------------------------
 * Durability: data written to a file becomes durable, and visible to other
 * handles of the same file, when cfs_file_sync or cfs_file_close returns. After
 * a power cut every file is in its last synced/closed state, never a mix. A
 * file written without sync is synced automatically when its pending writes
 * touch CFS_AUTOSYNC_SEGS segments (48 on the host: 768 KiB of file
 * offsets; 12 on the device profile) or number 2,048 records (small
 * writes), or when the device is so full
 * that garbage collection reaches its pending records (docs/FS.md). One
 * handle at a time may have a file open for writing (others get
 * CFS_ERR_BUSY); any number may read it. */
int cfs_file_open(cfs_t *fs, cfs_file_t *file, const char *path, int flags);
int cfs_file_close(cfs_t *fs, cfs_file_t *file);
int cfs_file_sync(cfs_t *fs, cfs_file_t *file);
/* Returns bytes read (0 at end of file) or a negative error. */
int cfs_file_read(cfs_t *fs, cfs_file_t *file, void *buf, uint32_t len);
/* Returns bytes written (len) or a negative error. A write that fails
 * changes nothing the handle will commit (unless an automatic sync in the
 * middle of it committed a part already). */
int cfs_file_write(cfs_t *fs, cfs_file_t *file, const void *buf, uint32_t len);
/* Positional variants: do not move the file position. */
int cfs_file_pread(cfs_t *fs, cfs_file_t *file, void *buf, uint32_t len,
                  uint32_t off);
int cfs_file_pwrite(cfs_t *fs, cfs_file_t *file, const void *buf, uint32_t len,
                   uint32_t off);
/* Returns the new position or a negative error. */
int32_t cfs_file_seek(cfs_t *fs, cfs_file_t *file, int32_t off, int whence);
int32_t cfs_file_tell(cfs_t *fs, cfs_file_t *file);
int32_t cfs_file_size(cfs_t *fs, cfs_file_t *file);
/* The size as last committed (what cfs_statvfs counts in `claimed` for
 * this file); cfs_file_size - this is the growth still pending. */
int32_t cfs_file_committed_size(cfs_t *fs, cfs_file_t *file);
int cfs_file_truncate(cfs_t *fs, cfs_file_t *file, uint32_t size);
/* Drop the writes made through file since its last commit (sync, close,
 * cfs_file_commit_with): the handle is back at the committed content. Not
 * possible after an automatic sync committed part of them. */
int cfs_file_revert(cfs_t *fs, cfs_file_t *file);

/* ---- namespace ---------------------------------------------------------- */
int cfs_stat(cfs_t *fs, const char *path, cfs_stat_t *st);
int cfs_remove(cfs_t *fs, const char *path); /* file, or empty directory */
/* Atomic: after a power cut either the old or the new name exists. Replaces
 * an existing target file (or empty directory when src is a directory). */
int cfs_rename(cfs_t *fs, const char *src, const char *dst);
int cfs_mkdir(cfs_t *fs, const char *path);
int cfs_rmdir(cfs_t *fs, const char *path); /* empty directory only */

/* Multi-file atomic commit: perform up to CFS_RENAME_MANY_MAX renames as one
 * atomic step (all or none after a power cut). Each pair is src[i] -> dst[i];
 * dst may be NULL, meaning "remove src[i]". Validated fully before anything
 * is written; on error nothing changes. This is the primitive the update
 * transactions of the service build on. */
#define CFS_RENAME_MANY_MAX 16
int cfs_rename_many(cfs_t *fs, const char *const *src, const char *const *dst,
                   uint32_t n);

/* The same, together with the pending writes of an open file: f's data and
 * size since its last sync and up to CFS_RENAME_MANY_MAX renames/removals
 * become durable and visible in one atomic step (f stays open). The renames
 * may not replace or remove f itself (CFS_ERR_BUSY). The service keeps its
 * manifest file open in f and moves files into place with it. */
int cfs_file_commit_with(cfs_t *fs, cfs_file_t *f, const char *const *src,
                        const char *const *dst, uint32_t n);

/* Hold off garbage collection until cfs_release: GC (which may commit an
 * open file's pending writes early, see cfs_file_open) runs first, to make
 * room for `bytes` as an operation of that size would, and then not at all;
 * operations that would need it fail with CFS_ERR_NOSPC instead, and a
 * write that would trigger an automatic sync fails with CFS_ERR_FBIG. So
 * pending writes made under a hold are committed only by their handle's
 * own sync/close/commit_with, or dropped by cfs_file_revert: the service
 * writes its manifest slots and commits them with the renames this way.
 * Holds nest. */
int cfs_hold(cfs_t *fs, uint32_t bytes);
void cfs_release(cfs_t *fs);

/* Directory listing. Entries come in no particular order; "." and ".." are
 * not listed. readdir returns 1 with an entry, 0 at the end, or an error. */
int cfs_dir_open(cfs_t *fs, cfs_dir_t *dir, const char *path);
int cfs_dir_read(cfs_t *fs, cfs_dir_t *dir, char *name, uint32_t name_size,
                cfs_stat_t *st);
int cfs_dir_close(cfs_t *fs, cfs_dir_t *dir);

/* ---- space, maintenance ------------------------------------------------- */
/* Reads nothing from flash: answered from counters kept in RAM. */
int cfs_statvfs(cfs_t *fs, cfs_statvfs_t *out);
/* Garbage-collect up to `blocks` blocks now (0: until the reclaimable space
 * in the tail is gone or nothing more can be freed). Returns blocks freed. */
int cfs_gc(cfs_t *fs, uint32_t blocks);
/* Set the automatic GC threshold of a mounted fs, in blocks, until the next
 * mount (cfs_config_t.gc_free_blocks sets it at mount): garbage collection
 * starts when fewer blocks than this are free above the reserve
 * (SPIFlashFileSystem's setAutoGc). At least 6 - the latest a pass may
 * start and still have free blocks to move live data into - and at most
 * what the partition leaves above its reserve; else CFS_ERR_INVAL.
 * *previous (may be NULL) gets the old value. */
int cfs_set_gc_threshold(cfs_t *fs, uint32_t blocks, uint32_t *previous);

/* Consistency check of a mounted fs: every record checksum, every reference,
 * directory tree and counters. Returns 0 if clean, CFS_ERR_CORRUPT otherwise;
 * if report is not NULL it is called with one line per problem found. */
typedef void (*cfs_report_fn)(void *ctx, const char *line);
int cfs_fsck(cfs_t *fs, cfs_report_fn report, void *report_ctx);

#endif /* CELLAR_CFS_H */
