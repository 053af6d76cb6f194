/*
 * manifest.h - the SHA-256 manifest of a partition, and the update
 * transactions that change files and manifest together (docs/UPDATE.md).
 *
 * Every partition the service owns has a reserved directory /.cellar (never
 * visible through file RPCs) holding:
 *   /.cellar/manifest   one fixed-size slot per tracked file: path, size,
 *                       SHA-256, when it was written;
 *   /.cellar/w/N        shadow copies that file-RPC writers write into; a
 *                       close publishes one (rename) with its manifest slot;
 *   /.cellar/tx/        the staged update bundle (plan + data files);
 *   /.cellar/cp/        the staged copy of a backup or restore.
 *
 * The manifest file stays open for the life of the mount (man_t.f). Every
 * change writes its slots through that handle, then cfs_file_commit_with()
 * makes the slots and the renames that go with them visible in one atomic
 * step; on any failure man_revert() drops the slot writes.
 *
 * Portable device-side code: no OS calls, no allocation; memory is the
 * caller's (man_t, txn_t and a scratch buffer).
 */
#ifndef CELLAR_MANIFEST_H
#define CELLAR_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>

#include "common/csha.h"
#include "cfs.h"

#define MAN_DIR "/.cellar"
#define MAN_FILE "/.cellar/manifest"
#define MAN_SHADOW_DIR "/.cellar/w"
#define MAN_SLOT 300u          /* bytes per manifest / plan slot */
#define MAN_PATH_MAX 255u

enum { MAN_FREE = 0, MAN_TRACK = 1, MAN_REMOVE = 2 };
#define MAN_F_SIZE 1u          /* size is known */
#define MAN_F_SEND 2u          /* plan: the data is staged in d<index> */

typedef struct man_entry {
    uint8_t kind;              /* MAN_FREE / MAN_TRACK (manifest, plan) /
                                  MAN_REMOVE (plan) */
    uint8_t flags;
    uint32_t size;
    uint32_t mtime;
    uint8_t sha[32];
    char path[MAN_PATH_MAX + 1]; /* path inside the partition: "/a.py" */
} man_entry_t;

void man_encode(const man_entry_t *e, uint8_t p[MAN_SLOT]);
int man_decode(man_entry_t *e, const uint8_t p[MAN_SLOT]); /* 0 / CORRUPT */

/* The slot buffer a man_* call reads and writes through. Issue 14: on the
 * device profile the service's manifests share one (man_share_slot, after
 * man_open: the txn scratch's slot); a call marks it taken in *busy (bit)
 * and CFS_ASSERTs that nobody else holds it. */
#ifdef CELLAR_PROFILE_DEVICE
#define MAN_SHARED_SLOT 1
#endif
typedef struct man {
    cfs_t *fs;
    cfs_file_t f;               /* MAN_FILE, open read-write */
    uint8_t open;
    uint8_t held;              /* cfs_hold taken for pending slot writes */
    uint8_t ro;                /* opened read-only (man_open_ro) */
#ifdef MAN_SHARED_SLOT
    uint8_t *slot;             /* MAN_SLOT bytes, shared */
    uint32_t *busy, bit;
#else
    uint8_t slot[MAN_SLOT];
#endif
} man_t;
#ifdef MAN_SHARED_SLOT
static inline void man_share_slot(man_t *m, uint8_t *slot, uint32_t *busy,
                                  uint32_t bit)
{
    m->slot = slot;
    m->busy = busy;
    m->bit = bit;
}
#endif

/* Open (creating /.cellar and an empty manifest if missing) and close. */
int man_open(man_t *m, cfs_t *fs);
int man_close(man_t *m);
/* Open an existing manifest for reading only (a partition too full for
 * the bookkeeping a writable manifest needs): lookups work, changes get
 * CFS_ERR_BADF. */
int man_open_ro(man_t *m, cfs_t *fs);
/* Free every slot that does not decode and cut a torn tail, as one
 * commit. *dropped: how many were freed. */
int man_scrub(man_t *m, uint32_t *dropped);
/* Remove path, a file or a whole tree (any depth, one entry at a time).
 * Missing is fine. tmp: 512 bytes. */
int man_clear(cfs_t *fs, const char *path, char *tmp);
/* Slots in the file (used and free). */
uint32_t man_slots(man_t *m);
/* Read slot i: 1 used (entry in *e), 0 free, or a negative error. */
int man_get(man_t *m, uint32_t i, man_entry_t *e);
/* Find path: 1 found (*e, *slot), 0 not found, or an error. */
int man_find(man_t *m, const char *path, man_entry_t *e, uint32_t *slot);
/* The same, and in one pass the path of another entry with this size and
 * SHA-256 into other (MAN_PATH_MAX + 1 bytes; "" when there is none). */
int man_find_content(man_t *m, const char *path, const uint8_t *sha,
                     uint32_t size, man_entry_t *e, uint32_t *slot,
                     char *other);
/* Slot writes stay pending until man_commit or man_revert, and nothing
 * may commit them early: the first change takes an cfs_hold (no GC, which
 * could sync the manifest's pending writes on its own and break the
 * atomicity with the renames), released by man_commit / man_revert.
 * man_hold takes it up front with room for `bytes` (a large change). */
int man_hold(man_t *m, uint32_t bytes);

/* Pending changes (made visible by man_commit, dropped by man_revert):
 * set the entry for e->path; delete path's entry; move path (a file) or
 * every entry under it (a directory) to a new name. */
int man_set(man_t *m, const man_entry_t *e);
int man_del(man_t *m, const char *path);
int man_move(man_t *m, const char *from, const char *to);
/* Commit the pending slot writes with up to CFS_RENAME_MANY_MAX renames. */
int man_commit(man_t *m, const char *const *src, const char *const *dst,
               uint32_t n);
void man_revert(man_t *m);

/* Check the file an entry names: MAN_OK, MAN_MISSING (also an entry under
 * a file), MAN_MISMATCH (size, SHA-256, or a directory there) or
 * MAN_UNREADABLE (a checksum error), or a negative error of the device.
 * tmp is a spare handle, buf scratch for the reads. */
enum { MAN_OK = 0, MAN_MISSING = 1, MAN_MISMATCH = 2, MAN_UNREADABLE = 3 };
int man_check(cfs_t *fs, cfs_file_t *tmp, const man_entry_t *e, uint8_t *buf,
              uint32_t buflen);

/* SHA-256 and size of an open file, read through buf (any size >= 256). */
int man_hash_file(cfs_t *fs, cfs_file_t *f, uint8_t *buf, uint32_t buflen,
                  uint8_t sha[32], uint32_t *size);
/* The same by path (opens it in tmp). */
int man_hash_path(cfs_t *fs, cfs_file_t *tmp, const char *path, uint8_t *buf,
                  uint32_t buflen, uint8_t sha[32], uint32_t *size);
/* Copy file src of cfs_a into dst of cfs_b (created or replaced: the caller
 * stages it under a hidden name), hashing what it copies. */
int man_copy_file(cfs_t *cfs_a, const char *src, cfs_t *cfs_b, const char *dst,
                  cfs_file_t *t1, cfs_file_t *t2, uint8_t *buf,
                  uint32_t buflen, uint8_t sha[32], uint32_t *size);
/* mkdir -p of the directories above path (not path itself). */
int man_mkdir_parents(cfs_t *fs, const char *path, char *tmp /* 256 */);
/* Remove every file and directory under dir, and dir itself. Bounded: depth
 * at most 8 below dir (deeper trees give CFS_ERR_NOTEMPTY). */
int man_wipe(cfs_t *fs, const char *dir, char *tmp /* 512 */);

/* Files and directories of the service's own (/.cellar and what it holds,
 * two levels deep): statistics leave them out. */
int man_own_counts(cfs_t *fs, uint32_t *files, uint32_t *dirs);

/* Is path inside (or equal to) prefix? Both partition paths ("/" = all). */
bool man_under(const char *path, const char *prefix);

#endif /* CELLAR_MANIFEST_H */
