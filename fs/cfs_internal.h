/*
 * cfs_internal.h - private to fs/: on-flash record format, keys, and the
 * functions the log layer (cfs_log.c) and the file layer (cfs_file.c) share.
 * The format is described in docs/FS.md.
 */
#ifndef CELLAR_FS_INTERNAL_H
#define CELLAR_FS_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "cellar_config.h" /* CFS_ASSERT */
#include "le.h"
#include "crc32.h"
#include "cfs.h"

/* CORRUPT_HERE: CFS_ERR_CORRUPT, and with -DFS_DEBUG where it was found. */
#ifdef CFS_DEBUG
#include <stdio.h>
#define CORRUPT_HERE (fprintf(stderr, "corrupt: %s:%d\n", __FILE__, __LINE__), CFS_ERR_CORRUPT)
#else
#define CORRUPT_HERE CFS_ERR_CORRUPT
#endif

/* ---- addresses -------------------------------------------------------------
 * A record address is a byte offset inside the partition. Blocks 0 and 1 are
 * the anchor blocks and never hold records, so 0 can mean "deleted". */
#define CFS_ADDR_NONE 0xffffffffu
#define CFS_ADDR_DELETED 0u

/* ---- record header (20 bytes, little-endian) --------------------------------
 *   u8 type, u8 flags, u16 len (payload bytes), u32 ino, u32 idx,
 *   u32 dcrc (CRC-32 of the payload), u32 hcrc (CRC-32 of the 16 bytes before)
 * The payload follows the header; a record may span blocks (it continues at
 * the start of the next good block). The payload is programmed before the
 * header, so a header that checks out means the whole record was written. */
#define REC_HDR 20u
#define REC_MAX_PAYLOAD 4200u

enum {
    R_INODE = 1,   /* key (ino, 0): inode; may carry a commit trailer */
    R_DIRCHUNK = 2,/* key (ino, DIR|i): directory entries */
    R_PATCH = 3,   /* key (ino, SEG|s): data for part of a segment */
    R_EXTMAP = 4,  /* key (ino, SEG|s): full extent map of a segment */
    R_COMMIT = 5,  /* key (0, 0): a commit trailer only */
    R_BUCKET = 6,  /* key (MAP, b): object-map bucket page */
    R_DIRPAGE = 7, /* key (MAP, DIRPAGE|d): bucket directory page */
    R_CKPT = 8,    /* key (MAP, CKPT): checkpoint */
    R_TOMB = 9,    /* key K: K is deleted (a chain element) */
    R_PAD = 10,    /* an abandoned record: skipped */
};
#define F_COMMIT 0x01 /* payload ends with a commit trailer */
#define F_CHAIN 0x02  /* R_INODE: payload is inode + u32 prev (chained) */
#define F_ZERO 0x04   /* R_PATCH: no data, u16 count of zero bytes instead */
#define F_JOURNAL 0x08 /* R_CKPT: the journal index follows the fixed part */
/* R_PATCH: depth of the patch chain under it (1..SEG_CHAIN_MAX+1). */
#define SEG_DEPTH(flags) ((uint32_t)(flags) >> 3)
#define SEG_DEPTH_FLAGS(d) ((uint8_t)((d) << 3))
/* Where a record keeps its "previous record of the same operation" link:
 *   PATCH/EXTMAP: payload offset 4 (after base); DIRCHUNK, TOMB: offset 0;
 *   INODE with F_CHAIN: offset 20. */

typedef struct rec_hdr {
    uint8_t type, flags;
    uint16_t len;
    uint32_t ino, idx;
    uint32_t dcrc, hcrc;
} rec_hdr_t;

/* ---- keys ------------------------------------------------------------------ */
#define KIND_INODE 0u
#define KIND_DIR 1u
#define KIND_SEG 2u
#define KEY_KIND(idx) ((idx) >> 28)
#define KEY_INDEX(idx) ((idx) & 0x0fffffffu)
#define MKIDX(kind, i) (((uint32_t)(kind) << 28) | (uint32_t)(i))
#define MAP_INO 0xffffffffu
#define DIRPAGE_IDX 0x80000000u
#define CKPT_IDX 0xc0000000u
#define ROOT_INO 1u

/* ---- segments ---------------------------------------------------------------
 * File data is split into segments of SEG_SPAN bytes of file offset. A
 * segment's newest version is a PATCH (data for [off, off+n) plus a pointer
 * to the previous version) or an EXTMAP (extents pointing at PATCH records).
 * Chains are at most SEG_CHAIN_MAX long; then an EXTMAP is written. */
#define SEG_SPAN 16384u
#define PATCH_MAX 4096u    /* data bytes in one PATCH */
#define SEG_FIXED 12u      /* u32 base, u32 prev, u16 off, u16 check */
/* The off field: bits 0-13 the segment offset; bit 15 set on an uncommitted
 * patch whose base came from the map (is the committed version). */
#define SEG_OFF_MASK 0x3fffu
#define SEG_BASE_MAPPED 0x8000u
#define SEG_CHAIN_MAX 24u
#define EXT_SIZE 8u        /* u16 off, u16 len, u32 record */
#define EXT_MAX 256u
/* Pending (unsynced) segments a handle may hold before an automatic sync:
 * CFS_AUTOSYNC_SEGS (cellar_config.h). And records: a commit walks the
 * pending chain and takes more than 4,096 links for damage, which 7,700
 * writes of 100 bytes into 47 segments reached (CFS_ERR_CORRUPT from
 * write and close, the data lost). */
#define AUTOSYNC_RECS 2048u

/* ---- inode payload (20 bytes) ---------------------------------------------- */
#define INODE_SIZE 20u
typedef struct inode {
    uint8_t type;      /* CFS_TYPE_FILE / CFS_TYPE_DIR */
    uint8_t pad;
    uint16_t nchunks;  /* directories: chunks in use */
    uint32_t parent;
    uint32_t size;
    uint32_t ctime, mtime;
} inode_t;

/* ---- commit trailer: entries[n] {u32 ino, u32 idx, u32 addr},
 *      then u32 chain_tail, u16 n, u16 COMMIT_MAGIC ---------------------------- */
#define COMMIT_TAIL 8u
#define COMMIT_ENT 12u
#define COMMIT_MAGIC 0xc0c0u
#define COMMIT_MAX_ENT 40u

/* ---- directory chunk entries: u32 ino, u8 type, u8 namelen, name ---------- */
#define DIRCHUNK_MAX 512u
#define DIRENT_FIXED 6u

/* ---- bucket pages: entries {u32 ino, u32 idx, u32 addr} -------------------- */
#define BUCKET_MAX 42u
#define DIRPAGE_FAN 64u

/* ---- little-endian helpers: le_put16/32, le_get16/32 (le.h) ------------ */

/* ---- a commit being built (caller-owned, on the stack) --------------------
 * It holds at most CFS_COMMIT_MAX explicit entries (an option; the format
 * and a replay allow COMMIT_MAX_ENT). */
_Static_assert(CFS_COMMIT_MAX >= 8 && CFS_COMMIT_MAX <= COMMIT_MAX_ENT, "CFS_COMMIT_MAX");
/* a sync's commit: its segment keys, its inode, the removals in it (an
 * autosync's chain and a truncation's tombstones; the rest of the budget,
 * renames, is cellar_config.h's arithmetic) */
_Static_assert(CFS_JOURNAL_MAX >= CFS_COMMIT_MAX + 1 + CFS_AUTOSYNC_SEGS,
               "CFS_JOURNAL_MAX: a sync's commit must fit the journal index");
_Static_assert(CFS_JOURNAL_MAX >= 2 * CFS_COMMIT_MAX + 16,
               "CFS_JOURNAL_MAX: GC checkpoints before its journal use reaches JOURNAL_MAX - COMMIT_MAX - 8");
_Static_assert(CFS_READ_CHUNK >= 16 && CFS_READ_CHUNK <= 256, "CFS_READ_CHUNK");
_Static_assert(CFS_EXT_BATCH >= 1, "CFS_EXT_BATCH");
typedef struct commit {
    uint32_t chain_tail;              /* pending chain to apply, or NONE */
    uint32_t n;
    cfs_jent_t ent[CFS_COMMIT_MAX];
} commit_t;

/* ---- the work area (cfs_work_t, cfs_types.h) ------------------------------
 * A region is taken for the span its bytes are live and given back after;
 * taking one that is taken is a bug (two users at once: a nesting that was
 * thought impossible), caught by CFS_ASSERT in debug builds. */
#define WORK_CHUNK 1u /* work->chunk: a directory chunk or a record */
#define WORK_PAGES 2u /* work->page, work->dirpage: a checkpoint's map pages */
_Static_assert(sizeof(((cfs_work_t *)0)->chunk) >= DIRCHUNK_MAX, "work chunk holds a record");
_Static_assert(CFS_CHUNK_BYTES == DIRCHUNK_MAX - 4, "chunk entry bytes");
_Static_assert(CFS_DIRPAGES_MAX >= 1 && CFS_DIRPAGES_MAX <= 64, "CFS_DIRPAGES_MAX (dirty_dirpages is 64 bits)");
static inline cfs_work_t *cfs_work_take(cfs_t *fs, uint32_t region)
{
    CFS_ASSERT(!(fs->work->busy & region));
    fs->work->busy |= region;
    return fs->work;
}
static inline void cfs_work_give(cfs_t *fs, uint32_t region)
{
    CFS_ASSERT(fs->work->busy & region);
    fs->work->busy &= ~region;
}

/* Keep a helper's frame out of its caller's (the stack of the caller's
 * other calls does not add it): for the big locals of a call's one step. */
#if defined(__GNUC__)
#define CFS_NOINLINE __attribute__((noinline))
#else
#define CFS_NOINLINE
#endif

/* ---- log layer (cfs_log.c) -------------------------------------------------- */
uint32_t cfs_now(cfs_t *fs);
int cfs_flash_read(cfs_t *fs, uint32_t addr, void *buf, uint32_t len);
int cfs_rec_read_hdr(cfs_t *fs, uint32_t addr, rec_hdr_t *h);
/* Read len payload bytes at payload offset off (no checksum check). */
int cfs_rec_read(cfs_t *fs, uint32_t addr, uint32_t off, void *buf, uint32_t len);
/* A checksum mismatch is read again this many times before it is believed:
 * a bit that flips on one read (noise) must not pass for damage. */
#define READ_TRIES 3
/* CRC-32 of the payload of the record at addr, as read now. */
int cfs_rec_crc(cfs_t *fs, uint32_t addr, const rec_hdr_t *h, uint32_t *crc);
/* A payload checksum is judged damaged only when this many reads in a row
 * give the same wrong value: damage reads the same every time, while noise
 * that flips the same bit on two reads in a row does happen (it once made
 * GC drop live data as "lost"). */
#define DAMAGE_READS 4
/* The payload checksum of the record at addr over several reads: 0 when a
 * read matches, CFS_ERR_CORRUPT when DAMAGE_READS reads in a row agree on a
 * wrong one (damage, or a torn write), CFS_ERR_IO when they do not settle. */
int cfs_rec_check_sure(cfs_t *fs, uint32_t addr, const rec_hdr_t *h);
/* Check the payload checksum of the record at addr (reads it all). */
int cfs_rec_verify(cfs_t *fs, uint32_t addr, const rec_hdr_t *h);
/* Read a whole payload (at most max bytes) into buf and check it: the bytes
 * used are the bytes checked. */
int cfs_rec_load(cfs_t *fs, uint32_t addr, const rec_hdr_t *h, void *buf, uint32_t max);
/* The same for the first n payload bytes only: the whole payload is read
 * and checked in CFS_READ_CHUNK pieces, the first n bytes kept from the
 * reads that were checked. */
int cfs_rec_load_head(cfs_t *fs, uint32_t addr, const rec_hdr_t *h, void *buf, uint32_t n);
/* Write a record: payload given as up to two pieces (p2 may be NULL).
 * Returns the record address through *addr. May run garbage collection
 * first (never inside GC/checkpoint). */
int cfs_rec_write(cfs_t *fs, uint8_t type, uint8_t flags, uint32_t ino,
                 uint32_t idx, const void *p1, uint32_t n1, const void *p2,
                 uint32_t n2, uint32_t *addr);
/* Streaming record write: begin reserves room for len payload bytes, append
 * programs payload bytes, end writes the header. */
int cfs_rec_begin(cfs_t *fs, uint32_t len, uint32_t *addr);
int cfs_rec_append(cfs_t *fs, uint32_t addr, uint32_t off, const void *buf,
                  uint32_t len, uint32_t *crc);
int cfs_rec_end(cfs_t *fs, uint32_t addr, uint8_t type, uint8_t flags,
               uint32_t ino, uint32_t idx, uint32_t len, uint32_t crc);
/* Close a record begun with cfs_rec_begin whose content is given up: every
 * begun record gets a header, so scans of the log can step over it. */
void cfs_rec_abandon(cfs_t *fs, uint32_t addr, uint32_t len);

/* Object map. */
int cfs_map_lookup(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t *addr);
/* Make sure a commit adding up to n keys fits in the journal index
 * (checkpointing first if needed). */
int cfs_journal_room(cfs_t *fs, uint32_t n);
/* Write the commit (as an R_COMMIT record, or as the trailer of the inode
 * record given by ino/inode when inode != NULL) and apply it. */
int cfs_commit(cfs_t *fs, commit_t *c, uint32_t ino, const inode_t *inode,
              uint32_t *inode_addr);
int cfs_checkpoint(cfs_t *fs);
/* Bracket every public mutating operation: begin runs garbage collection if
 * free space is short (GC never runs inside an operation, so record
 * addresses an operation holds stay valid) and refuses with NOSPC when the
 * operation's bytes would not fit above the reserve. */
int cfs_op_begin(cfs_t *fs, uint32_t bytes);
void cfs_op_end(cfs_t *fs);
/* flags: GC_FORCED (run even when it will not gain; no NOSPC for that),
 * GC_URGENT (space is short: commit open files' pending writes the tail
 * reaches instead of stopping there). */
#define GC_FORCED 1
#define GC_URGENT 2
int cfs_gc_run(cfs_t *fs, uint32_t blocks, int flags);
uint32_t cfs_free_blocks(const cfs_t *fs);
/* In a GC pass: do records of `bytes` in all fit now, leaving the room of
 * the pass's commit and checkpoint? */
int cfs_gc_fits(const cfs_t *fs, uint32_t bytes);
/* May the files grow by `bytes`, with `files` new files and `dirs` new
 * directories? CFS_ERR_NOSPC when that would eat into the room kept for
 * moving every map key once (cfs_move_room, for files holding `live`
 * bytes); 0 under a hold (the caller accounts), with no_move_room, or on
 * a read-only fs (the operation reports that). */
int cfs_admit(const cfs_t *fs, uint64_t bytes, uint32_t files, uint32_t dirs);
uint64_t cfs_move_room(const cfs_t *fs, uint64_t live, uint64_t files, uint64_t dirs);
/* GC copies a segment whole when it is in more pieces than this (into
 * PATCH_MAX-byte patches), or when its pieces lie in GC_DEFRAG_SPREAD
 * blocks or more (into GC_DEFRAG_REC-byte patches; cfs_file.c,
 * seg_rebuild) */
#define GC_DEFRAG_EXTENTS 64u
#define GC_DEFRAG_SPREAD 16u
#define GC_DEFRAG_REC 1024u

/* ---- file layer (cfs_file.c), used by the log layer ------------------------ */
void inode_encode(const inode_t *in, uint8_t *p);
void inode_decode(inode_t *in, const uint8_t *p);
int cfs_inode_get(cfs_t *fs, uint32_t ino, inode_t *in, uint32_t *addr);
/* The inode record of ino at addr, checked. */
int cfs_inode_at(cfs_t *fs, uint32_t addr, uint32_t ino, inode_t *in);
/* GC: is the segment record at addr (key ino/idx) still needed by the
 * segment's current version (the one GC's pending commit c holds, else the
 * map's)? 1: part of its chain, its extent map, or read through it; 2: an
 * orphan key to drop; 0: stale. */
int cfs_seg_live(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t addr, const commit_t *c);
/* GC: move live record addr of segment (ino, idx), which lies in the block
 * being collected ([lo, hi)), and put the new version in c. A patch read
 * through the extent map gets one patch over the version with the bytes it
 * shows (no new extent map); otherwise one new extent map covers every
 * record of the segment in [lo, hi) at once (docs/FS.md section 6). */
int cfs_seg_relocate(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t addr,
                    uint32_t lo, uint32_t hi, commit_t *c);
/* GC: commit every open handle that has uncommitted records of ino. */
int cfs_sync_ino(cfs_t *fs, uint32_t ino);
/* GC: would moving the committed records of segment (ino, idx) break an
 * open handle's uncommitted version of it (one holding an extent map that
 * points at committed records)? 1 yes, 0 no, or a negative error. */
int cfs_seg_conflict(cfs_t *fs, uint32_t ino, uint32_t idx);
/* GC: is the tail about to pass uncommitted records of an open handle (its
 * pending records start in block b)? Then cfs_sync_block commits them. */
int cfs_pending_in_block(cfs_t *fs, uint32_t b);
int cfs_sync_block(cfs_t *fs, uint32_t b);

/* An extent record value meaning "data lost: read as a corruption error"
 * (GC found the record it had to move damaged). */
#define CFS_ADDR_LOST 1u
/* The chain link of the record at a (CFS_ADDR_NONE at the end). */
int cfs_chain_prev(cfs_t *fs, uint32_t a, const rec_hdr_t *h, uint32_t *prev);
/* The fixed part of the PATCH or EXTMAP at a (SEG_FIXED bytes into p),
 * read until its own check holds (READ_TRIES). */
int cfs_seg_fixed_read(cfs_t *fs, uint32_t a, uint8_t *p);
/* Apply a commit: used by cfs_commit and by replay at mount. */
int cfs_apply_commit(cfs_t *fs, uint32_t rec_addr, const rec_hdr_t *h);

#endif /* CELLAR_FS_INTERNAL_H */
