/*
 * cfs_types.h - the caller-owned objects of the filesystem. Their fields are
 * private to fs/: treat them as opaque and only take their size. Included by
 * fs.h; do not include it directly.
 */
#ifndef CELLAR_FS_TYPES_H
#define CELLAR_FS_TYPES_H

#include <stdint.h>

/* CFS_JOURNAL_MAX (journal index: key -> record address for objects
 * committed since the last checkpoint; a checkpoint is written when it is
 * half full), CFS_DIRPAGES_MAX, CFS_BAD_MAX (blocks retired as worn out that
 * the checkpoint can list): options, host and device values. */
#include "cellar_config.h"
/* Records written since the last checkpoint before one is forced; bounds the
 * work (and the flash read) of a mount. */
#define CFS_JOURNAL_RECORDS 512
/* Size of the map page buffers: a bucket page (42 entries of 12 bytes) and
 * a directory page (64 addresses). */
#define CFS_PAGE 504
#define CFS_DIRPAGE 256
/* Entry bytes of a directory chunk (a chunk record is at most 512 bytes:
 * its chain link and these). */
#define CFS_CHUNK_BYTES 508

/* The work area (issue 14): the buffers of the calls that are too big for
 * the stack, in one object the caller gives (cfs_config_t.work) and may
 * share between every cfs_t it uses from one thread: a call uses it only
 * while it runs, and calls of one thread never nest into another cfs_t.
 * Regions: the directory chunk (or record) a namespace operation, a GC
 * copy, a replayed commit or a listing works on; the map pages a
 * checkpoint rewrites. `busy` catches (CFS_ASSERT) a region used twice at
 * once. Fields private to fs/. */
typedef struct cfs_chunk {
    uint32_t len;                   /* entry bytes */
    uint8_t p[CFS_CHUNK_BYTES];
} cfs_chunk_t;
typedef struct cfs_work {
    cfs_chunk_t chunk;              /* region 1: also a 512-byte record */
    uint8_t page[CFS_PAGE];         /* region 2: bucket page ... */
    uint8_t dirpage[CFS_DIRPAGE];   /* ... and its directory page */
    uint32_t busy;                  /* regions in use (debug check) */
} cfs_work_t;

typedef struct cfs_key {
    uint32_t ino;
    uint32_t idx; /* kind << 28 | index */
} cfs_key_t;

typedef struct cfs_jent {
    cfs_key_t key;
    uint32_t addr; /* CFS_ADDR_DELETED for a removed key */
} cfs_jent_t;

typedef struct cfs_file cfs_file_t;

typedef struct fs {
    const struct flash_dev *dev;
    uint32_t first_block;   /* partition start on the device */
    uint32_t nblocks;       /* blocks in the partition */
    uint32_t bsize;         /* bytes per block */
    uint32_t (*clock)(void *);
    void *clock_ctx;
    uint32_t gc_free_blocks;
    uint8_t mounted;
    uint8_t rofs;           /* worn out: refuse writes */
    uint8_t in_gc;          /* re-entrancy guard */
    uint8_t ckpt_wanted;    /* blocks retired since the last checkpoint */

    /* log */
    uint32_t head;          /* next byte to write (partition byte address) */
    uint32_t tail;          /* oldest byte still in use */
    uint32_t laps;          /* times the head wrapped around the partition */
    uint32_t ckpt_addr;     /* address of the last checkpoint record */
    uint32_t ckpt_seq;
    uint32_t journal_records; /* records written since the last checkpoint */
    uint8_t head_erased;    /* the head block was erased in this lap */
    uint8_t in_ckpt;        /* a checkpoint is being written */
    uint8_t in_op;          /* inside a public operation: no GC */
    uint8_t op_frees;       /* the operation under way frees space */
    uint8_t hold;           /* cfs_hold depth: no GC, no automatic sync */
    uint8_t in_commit;      /* a commit is being made (no GC below it) */
    uint8_t ckpt_full;      /* the next checkpoint is a full one (GC passed
                               a current map page; unmount) */
    uint8_t no_move_room;   /* cfs_config_t.no_move_room */
    uint32_t ckpt_blocks;   /* blocks a checkpoint of a full index needs */
    uint32_t gc_trigger;    /* run GC below this many free blocks */
    uint32_t reserve;       /* free blocks kept for GC and checkpoints */
    uint64_t dirty_dirpages; /* dir pages to rewrite at the next checkpoint */

    /* anchors (blocks 0 and 1 of the partition) */
    uint32_t anchor_block;  /* 0 or 1: block holding the newest anchor */
    uint32_t anchor_slot;   /* next free slot in it */

    /* object map: bucket pages under dir pages */
    uint32_t nbuckets;
    uint32_t ndirpages;
    uint32_t dirpage_addr[CFS_DIRPAGES_MAX];

    /* journal index */
    uint32_t njournal;
    cfs_jent_t journal[CFS_JOURNAL_MAX];

    /* counters (persisted in checkpoints, kept current in RAM) */
    uint32_t next_ino;
    uint32_t files;
    uint32_t dirs;
    uint64_t live;

    /* retired blocks */
    uint32_t nbad;
    uint16_t bad[CFS_BAD_MAX];
    uint32_t failing_block; /* block that failed a prog, retired at GC */
    uint8_t prog_failed;    /* a prog failed since the last record began:
                               the rest of the head block is not used */

    cfs_file_t *open_files;  /* list of open handles */

    cfs_work_t *work;        /* the work area (cfs_config_t.work) */
} cfs_t;

struct cfs_file {
    cfs_file_t *next;        /* list of open handles of the fs */
    uint32_t ino;
    uint32_t flags;
    uint32_t pos;
    uint32_t size;          /* current size including pending writes */
    uint32_t ctime;
    uint32_t pending_tail;  /* newest uncommitted record, or CFS_ADDR_NONE */
    uint32_t pending_segs;  /* segments touched since the last commit */
    uint32_t csize;         /* size as last committed */
    uint32_t pend_hi;       /* 1 + highest segment with pending records */
    uint32_t cache_idx;     /* last segment written and its newest version */
    uint32_t cache_addr;
    uint32_t commits;       /* commits made for this handle */
    uint32_t sync_head;     /* log head when the handle last committed:
                               its pending records all lie after it */
    uint8_t dirty;
    uint8_t rebase;         /* GC moved committed data under pending writes */
    uint16_t pending_recs;  /* records in the pending chain */
};

typedef struct cfs_dir {
    uint32_t ino;
    uint32_t chunk;         /* next chunk to read */
    uint32_t off;           /* byte offset in it */
    uint32_t nchunks;
} cfs_dir_t;

#endif /* CELLAR_FS_TYPES_H */
