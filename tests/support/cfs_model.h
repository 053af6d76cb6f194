/*
 * cfs_model.h - an in-memory model of the filesystem namespace and file
 * contents, used as the oracle of the fs tests (test_fs_diff, test_powerloss,
 * test_fs_corrupt, test_fs_wear).
 *
 * The model is deliberately simple: a table of nodes (index = model inode,
 * node 0 is the root directory "/"), each with a parent, a name, a type and,
 * for files, the bytes. It allocates with malloc (tests only) and is bounded
 * by FSM_MAX_NODES nodes over its life (slots are never reused).
 *
 * Namespace operations return the cfs_err_t the real filesystem is expected
 * to return for the same call (POSIX semantics, see fs/cfs.h); on error the
 * model is unchanged. Paths are absolute: "/", "/a", "/a/b" (no trailing
 * slash, no empty, "." or ".." components, at most CFS_PATH_MAX bytes).
 *
 * fsm_compare() walks a mounted cfs_t and checks that its whole tree (every
 * directory listing, every type, size and every file's bytes) equals the
 * model; an optional accept callback lets a test accept other contents for a
 * file (the old-or-new rule of the power-loss sweep).
 */
#ifndef CELLAR_FS_MODEL_H
#define CELLAR_FS_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "cfs.h"

#define FSM_MAX_NODES (1u << 20) /* node slots over the model's life */
#define FSM_NONE UINT32_MAX

typedef struct fsm_node {
    uint8_t used;
    uint8_t type;       /* CFS_TYPE_FILE / CFS_TYPE_DIR */
    uint32_t parent;    /* node index of the parent directory */
    char *name;         /* component name (malloc'd); "" for the root */
    uint8_t *data;      /* file bytes (malloc'd, may be NULL when len 0) */
    uint32_t len;
} fsm_node_t;

/* Node slots are never reused, so a node index names one file or directory
 * for the life of a model and of all its clones. */
typedef struct fsm {
    uint32_t nnodes;    /* slots handed out (used or freed) */
    uint32_t cap;       /* slots allocated */
    uint32_t nlive;     /* nodes in use (root included) */
    fsm_node_t *node;
} fsm_t;

fsm_t *fsm_new(void);                  /* root directory only */
void fsm_free(fsm_t *m);               /* NULL-safe */
fsm_t *fsm_clone(const fsm_t *m);
void fsm_copy(fsm_t *dst, const fsm_t *src); /* dst becomes equal to src */
bool fsm_equal(const fsm_t *a, const fsm_t *b); /* same tree and bytes */

/* Path syntax check only: 0, CFS_ERR_INVAL or CFS_ERR_NAMETOOLONG. */
int fsm_check_path(const char *path);
/* Resolve path: node index (>= 0) or a negative cfs_err_t (NOENT, NOTDIR,
 * INVAL, NAMETOOLONG). */
int32_t fsm_lookup(const fsm_t *m, const char *path);
/* Full path of a node into buf (size >= CFS_PATH_MAX + 1). */
void fsm_path(const fsm_t *m, uint32_t id, char *buf);

/* Namespace operations, mirroring fs.h (return 0 or the expected error). */
int fsm_mkdir(fsm_t *m, const char *path);
int fsm_rmdir(fsm_t *m, const char *path);
int fsm_remove(fsm_t *m, const char *path);
int fsm_rename(fsm_t *m, const char *src, const char *dst);
/* Sequential semantics: pairs applied in order; all or nothing. */
int fsm_rename_many(fsm_t *m, const char *const *src, const char *const *dst,
                    uint32_t n);
/* cfs_file_open's namespace effect: returns the node of the file (creating an
 * empty one with CFS_O_CREAT), or the expected error (NOENT, EXIST with
 * CREAT|EXCL, ISDIR, NOTDIR, INVAL, ...). Does not apply CFS_O_TRUNC. */
int32_t fsm_open(fsm_t *m, const char *path, int flags);

/* File contents (node must be a file). */
const uint8_t *fsm_data(const fsm_t *m, uint32_t id, uint32_t *len);
void fsm_set_data(fsm_t *m, uint32_t id, const uint8_t *buf, uint32_t len);
/* Write at off (a gap beyond the end reads as zeros). */
void fsm_write(fsm_t *m, uint32_t id, uint32_t off, const uint8_t *buf,
               uint32_t len);
void fsm_truncate(fsm_t *m, uint32_t id, uint32_t size);

/* Counting. */
uint32_t fsm_files(const fsm_t *m);
uint32_t fsm_dirs(const fsm_t *m);     /* root included */
uint64_t fsm_bytes(const fsm_t *m);    /* sum of file sizes */
/* Children of a directory node: fills out[] (up to max), returns count. */
uint32_t fsm_children(const fsm_t *m, uint32_t dir, uint32_t *out,
                      uint32_t max);
/* Is `id` (or any ancestor) equal to `anc`? */
bool fsm_is_under(const fsm_t *m, uint32_t id, uint32_t anc);

/* Pick a random existing node (type 0 = any, else CFS_TYPE_FILE/DIR); returns
 * FSM_NONE if there is none. r is any random number. */
uint32_t fsm_pick(const fsm_t *m, int type, uint64_t r);

/* ---- comparison with a mounted filesystem ------------------------------- */
/* Return true to accept `buf` (len bytes) as the content of model file `id`
 * (whose model content differs from it). */
typedef bool (*fsm_accept_fn)(void *ctx, const fsm_t *m, uint32_t id,
                              const uint8_t *buf, uint32_t len);

typedef struct fsm_cmp_opts {
    fsm_accept_fn accept;   /* NULL: contents must equal the model */
    void *accept_ctx;
    bool quiet;             /* do not print mismatches */
    bool check_fs_counts;   /* compare cfs_statvfs files/dirs too */
    const char *tag;        /* prefix of printed lines */
} fsm_cmp_opts_t;

/* Compare the whole tree. Returns the number of mismatches found (0 =
 * equal); every mismatch is printed to stderr unless opts->quiet. Read
 * errors count as mismatches and are reported with their code. */
int fsm_compare(const fsm_t *m, cfs_t *fs, const fsm_cmp_opts_t *opts);

/* Dump the model tree to stderr (debugging). */
void fsm_dump(const fsm_t *m, const char *tag);

/* ---- helpers shared by the fs tests ------------------------------------- */
/* Deterministic PRNG (xorshift64*), never returns the same stream for
 * different seeds. */
typedef struct fsm_rng { uint64_t s; } fsm_rng_t;
void fsm_rng_seed(fsm_rng_t *r, uint64_t seed);
uint64_t fsm_rng_next(fsm_rng_t *r);
uint32_t fsm_rng_below(fsm_rng_t *r, uint32_t n); /* [0, n), n > 0 */
/* Fill buf with bytes that depend on (tag, offset) so that misplaced data is
 * detected: byte i = hash(tag, off + i). */
void fsm_fill(uint8_t *buf, uint32_t len, uint32_t tag, uint32_t off);

/* Read a whole file through the fs into a malloc'd buffer. Returns the size
 * (>= 0, *out set, free it) or a negative fs error. */
int fsm_read_file(cfs_t *fs, const char *path, uint8_t **out);
/* Create/replace a file with the given bytes (open CREAT|TRUNC, write,
 * close). Returns 0 or a negative fs error. */
int fsm_write_file(cfs_t *fs, const char *path, const uint8_t *buf,
                   uint32_t len);

#endif /* CELLAR_FS_MODEL_H */
