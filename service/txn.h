/*
 * txn.h - staged, verified, atomic multi-file transactions on one partition
 * (update bundles, backup and restore). The recovery rules are written down
 * in docs/UPDATE.md.
 *
 * A transaction lives in a directory of the partition's /.cellar:
 *   plan      a 64-byte header (magic, entry count, bytes, bundle id), then
 *             one MAN_SLOT slot per declared entry (manifest.h encoding:
 *             MAN_TRACK = write this file, MAN_REMOVE = remove this path;
 *             MAN_F_SEND = the data comes staged in d<index>);
 *   d<index>  the staged data of entry index.
 * Commit checks every staged size and SHA-256, then, in one fs commit,
 * writes the manifest slots and either
 *   - moves every staged file into place and drops the plan (up to 15
 *     actions, all parents existing), or
 *   - renames plan to "commit": from then on the transaction is decided and
 *     txn_finish rolls it forward (removals, a "commit2" marker, then the
 *     moves), at once and again after any power cut until it is done.
 * The service runs txn_load + txn_finish at mount, before it serves anyone.
 */
#ifndef CELLAR_TXN_H
#define CELLAR_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "cellar_config.h" /* TXN_MAX_ENTRIES, TXN_BLOOM_BITS, TXN_BATCH */
#include "cfs.h"
#include "manifest.h"

#define TXN_ERR_BADMSG (-74) /* a staged size or SHA-256 differs */
#define TXN_HDR 64u
#define TXN_SYNC_BYTES (64u * 1024u) /* staged data is committed this often */

/* Conflicts between two entries of one bundle (docs/PROTOCOL.md). */
enum {
    TXN_CONFLICT_NONE = 0,
    TXN_CONFLICT_TWICE = 1,     /* the same path twice */
    TXN_CONFLICT_UNDER_FILE = 2,/* a file below a file of the bundle */
    TXN_CONFLICT_INTO_RM = 3,   /* a file below a directory the bundle removes */
};

/* An index of a bundle's declared paths, so each new entry is checked
 * against all earlier ones without reading the plan n times: a hash of
 * TXN_INDEX_HASH_BYTES per entry (bit 0 = a removal) and a Bloom filter of the directories
 * above every file entry. Candidates are confirmed against the plan.
 * Fixed size: 4 KiB + 2 KiB (host; cellar_config.h). */
#if TXN_INDEX_HASH_BYTES == 2 /* issue 14 (cellar_config.h) */
typedef uint16_t txn_ix_hash_t;
#else
typedef uint32_t txn_ix_hash_t;
#endif
typedef struct txn_index {
    uint32_t n;                /* entries indexed (0..n-1) */
    uint32_t ca, cb;           /* the first conflict found: entry cb with ca */
    uint8_t cwhy;              /* TXN_CONFLICT_*, or NONE */
    txn_ix_hash_t h[TXN_MAX_ENTRIES];
    uint8_t dirs[TXN_BLOOM_BITS / 8];
} txn_index_t;

typedef struct txn {
    cfs_t *fs;
    man_t *man;
    const char *dir;           /* "/.cellar/tx" */
    uint8_t active;            /* a plan exists (staged, not committed) */
    uint8_t plan_open;
    uint8_t stage_open;
    uint8_t decided;           /* txn_commit made the commit (one fs step, or
                                  the decision): from then on only forward,
                                  even when it returns an error (decided) */
    uint8_t id[32];
    uint32_t nentries;         /* declared in the header (0: up to max) */
    uint64_t bytes;
    uint32_t declared;         /* slots in the plan */
    uint32_t stage_idx;
    uint32_t unsynced;
    uint32_t now;              /* seconds since 1970, for manifest times */
    uint32_t skipped;          /* txn_finish: moves it could not make */
    uint32_t verified;         /* entries 0..verified-1 have staged data the
                                  caller hashed and found as declared
                                  (txn_commit then only checks the size of
                                  a non-empty one; it hashes the rest);
                                  any write or re-declaration below it
                                  lowers it, begin/abort/load zero it */
    txn_index_t *ix;           /* NULL = no conflict checks (copies) */
    struct txn_work *w;        /* the scratch (txn_bind), shared */
    cfs_file_t plan;
    cfs_file_t stage;
    char path[64];             /* scratch for names in dir */
} txn_t;

/* Issue 14: the scratch of the txn functions (entries, a plan slot, a
 * path, a batch of moves: here, not on the stack), one for every txn_t of
 * a service (the update's and the copy's: one txn call runs at a time, a
 * commit inside one step). `busy` marks the parts taken; txn_work_take
 * asserts (CFS_ASSERT) that no part is taken twice at once, nor the batch
 * together with eb/ec/path, which share its bytes. */
enum { TXN_W_TMP = 1u, TXN_W_SLOT = 2u, TXN_W_EA = 4u, TXN_W_EB = 8u,
       TXN_W_EC = 16u, TXN_W_PATH = 32u, TXN_W_BATCH = 64u,
       TXN_W_ME = 128u, TXN_W_ME2 = 256u };
/* The parts that share their bytes with the batch. */
#define TXN_W_UNDER_BATCH (TXN_W_EC | TXN_W_PATH | TXN_W_ME | TXN_W_ME2)
typedef struct txn_work {
    uint32_t busy;             /* TXN_W_* taken */
    char tmp[512];             /* TMP: scratch for man_* helpers */
    uint8_t slot[MAN_SLOT];    /* SLOT: a plan slot read or written */
    man_entry_t ea, eb;        /* EA, EB: entries at hand */
    union {
        struct {
            man_entry_t ec;              /* EC: plan_removes_at */
            char path[MAN_PATH_MAX + 1]; /* PATH: a path being built */
            /* ME, ME2 (issue 14): the service's two scratch entries
             * (svc_me_take), never held across a commit or a roll
             * forward (the batch's users) */
            man_entry_t me, me2;
        };
        struct { /* BATCH: a batch of moves (commit, roll forward) */
            char bsrc[TXN_BATCH][64];
            char bdst[TXN_BATCH][MAN_PATH_MAX + 1];
        };
    };
} txn_work_t;
static inline void txn_work_take(txn_work_t *w, uint32_t parts)
{
    uint32_t clash = parts;
    if (parts & TXN_W_UNDER_BATCH)
        clash |= TXN_W_BATCH;
    if (parts & TXN_W_BATCH)
        clash |= TXN_W_UNDER_BATCH;
    CFS_ASSERT((w->busy & clash) == 0);
    w->busy |= parts;
}
static inline void txn_work_give(txn_work_t *w, uint32_t parts)
{
    CFS_ASSERT((w->busy & parts) == parts);
    w->busy &= ~parts;
}
/* man_clear with w's tmp. */
int txn_clear(txn_work_t *w, cfs_t *fs, const char *path);
_Static_assert(TXN_BATCH >= 2 && TXN_BATCH <= CFS_RENAME_MANY_MAX,
               "TXN_BATCH: 2 .. CFS_RENAME_MANY_MAX renames per fs commit");

typedef struct txn_stats {
    uint32_t written, removed, unchanged;
    uint64_t bytes;
} txn_stats_t;

/* Attach to a partition (no I/O); w: the scratch (txn_work_t). */
void txn_bind(txn_t *t, cfs_t *fs, man_t *man, const char *dir,
              txn_work_t *w);
/* After mount: finish a committed transaction (rolling it forward), pick
 * up a staged one (t->active), or wipe leftovers. 1 = a committed
 * transaction was finished, 0 = nothing to finish, or an error. */
int txn_load(txn_t *t);
/* Start a new transaction (dropping whatever was staged). */
int txn_begin(txn_t *t, const uint8_t id[32], uint32_t nentries,
              uint64_t bytes);
/* Declare entry idx (idx <= declared). Re-declaring idx < declared must
 * give the same kind, path, size and SHA-256 (CFS_ERR_INVAL otherwise); the
 * MAN_F_SEND flag may change. */
int txn_declare(txn_t *t, uint32_t idx, const man_entry_t *e);
int txn_entry(txn_t *t, uint32_t idx, man_entry_t *e);
/* Would declaring e as the next entry (idx == declared) conflict with an
 * earlier entry (needs t->ix)? 0 no, 1 yes (*other = that entry, *why =
 * TXN_CONFLICT_*), or an error. Conflicts among the entries already
 * declared (a plan staged before a restart) are reported first. */
int txn_check_entry(txn_t *t, const man_entry_t *e, uint32_t *other,
                    int *why);
/* Make the declared entries durable. */
int txn_sync_plan(txn_t *t);
/* Bytes of entry idx staged so far (durable or not). */
int64_t txn_staged(txn_t *t, uint32_t idx);
/* Write staged data of entry idx at off (off <= staged). */
int txn_write(txn_t *t, uint32_t idx, uint32_t off, const void *data,
              uint32_t len);
/* Commit what is staged so far and close the staged file (a connection
 * went away: keep it for a resume). */
int txn_park(txn_t *t);
/* The staged file of idx as a partition path (for copies). */
const char *txn_data_path(txn_t *t, uint32_t idx);
/* The checks of txn_commit that read no file data: the staged file is
 * closed, the plan made durable, and (with t->ix) no two entries may
 * conflict (CFS_ERR_INVAL, *bad and t->ix->ca as in txn_commit). A caller
 * that hashes the staged files in steps of its own (setting t->verified)
 * calls this first. */
int txn_commit_prepare(txn_t *t, uint32_t *bad);
/* Check and commit. A check failure changes nothing and sets *bad to the
 * entry: TXN_ERR_BADMSG (its staged size or SHA-256 differs: the staged
 * data is dropped; or an entry declared unchanged changed since),
 * CFS_ERR_ISDIR / CFS_ERR_NOTDIR (the target is in the way), CFS_ERR_BUSY,
 * CFS_ERR_INVAL with t->ix->cwhy set (two entries conflict: *bad and
 * t->ix->ca). busy(ctx, path) says whether a client holds path open (then
 * the commit is refused with CFS_ERR_BUSY). The checks make sure the roll
 * forward can make every move; a failure after them (the device: I/O,
 * space) before the decision leaves everything as it was. A failure once
 * the commit is made (t->decided set: the decision is durable, the roll
 * forward stopped, or only the cleanup of a one-step commit failed) must
 * not be reported as "nothing changed": the caller goes forward only
 * (txn_finish again; txn_abort does the same) (decided). */
int txn_commit(txn_t *t, uint8_t *buf, uint32_t buflen, txn_stats_t *st,
               uint32_t *bad, bool (*busy)(void *ctx, const char *path),
               void *busy_ctx);
/* decided: is a decision (the "commit" or "commit2" marker) on flash? 1
 * yes, 0 no, or an error (then it may be). After it only txn_finish (or
 * txn_load at the next mount) may touch the staging. */
int txn_decided(txn_t *t);
/* Roll a decided transaction forward (idempotent). A move that cannot be
 * made (something in the way that the checks did not foresee) is skipped
 * and counted in t->skipped rather than blocking the partition for good:
 * the manifest then names a file that verify reports, and repair fixes. */
int txn_finish(txn_t *t);
/* Drop everything staged. A decided transaction is never dropped (decided):
 * txn_abort leaves its marker and staging and returns CFS_ERR_BUSY (or the
 * error that kept it from looking), so txn_begin fails too; txn_finish or
 * txn_load finishes it. */
int txn_abort(txn_t *t);

#endif /* CELLAR_TXN_H */
