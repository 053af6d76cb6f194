/*
 * cfs_types.h - the caller-owned objects of the filesystem. Their fields are
 * private to fs/: treat them as opaque and only take their size. Included by
 * fs.h; do not include it directly.
 */
#ifndef CELLAR_FS_TYPES_H
#define CELLAR_FS_TYPES_H

#include <stdint.h>

/* Journal index: key -> record address for objects committed since the last
 * checkpoint. A checkpoint is written when it is half full. */
#define CFS_JOURNAL_MAX 128
/* Records written since the last checkpoint before one is forced; bounds the
 * work (and the flash read) of a mount. */
#define CFS_JOURNAL_RECORDS 512
/* Blocks retired as worn out that the checkpoint can list. */
#define CFS_BAD_MAX 64
/* Size of the map page buffers: a bucket page (42 entries of 12 bytes) and
 * a directory page (64 addresses). */
#define CFS_PAGE 512
#define CFS_DIRPAGE 256

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
    uint8_t pad2[2];
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
    uint32_t dirpage_addr[64];

    /* journal index */
    uint32_t njournal;
    uint32_t commit_gen;
    cfs_jent_t journal[CFS_JOURNAL_MAX];
    uint8_t jgen[CFS_JOURNAL_MAX];

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

    /* page buffers */
    uint8_t buf[CFS_PAGE];
    uint8_t buf2[CFS_DIRPAGE];
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
    uint8_t pad[2];
};

typedef struct cfs_dir {
    uint32_t ino;
    uint32_t chunk;         /* next chunk to read */
    uint32_t off;           /* byte offset in it */
    uint32_t nchunks;
} cfs_dir_t;

#endif /* CELLAR_FS_TYPES_H */
