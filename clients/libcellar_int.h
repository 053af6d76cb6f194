/*
 * libcellar_int.h - internals shared by the files of libcellar
 * (clients/libcellar*.c). Not installed; not part of the API. Grouped by
 * the file that defines them, lowest first; a file calls only the groups
 * above its own here (docs/ARCHITECTURE.md, "Clients", has the graph).
 *
 * The per-connection buffer (cellar_t.buf, CELLAR_BUFFER_SIZE bytes) holds,
 * in this order: one decoded Request, one decoded Response, the encoded
 * outgoing frame and the receive buffer. Every request goes through
 * cellar__send (assigns the id) and every reply through cellar__recv.
 */
#ifndef CELLAR_LIBCELLAR_INT_H
#define CELLAR_LIBCELLAR_INT_H

#include <stdarg.h>

#include "cellar.h"
#include "cellar.pb.h"

#include "common/csha.h" /* service/common: shared with the device side */

/* Internal functions are not exported from libcellar.so. */
#define CELLAR_INTERNAL __attribute__((visibility("hidden")))

/* Elements of an array field of a nanopb struct. */
#define CELLAR__FIELD_COUNT(type, field) \
    (sizeof(((type *)0)->field) / sizeof(((type *)0)->field[0]))

/* The smallest max_frame a device may advertise (issue 11): what a request
 * sent before HelloReply is in is sized for (docs/PIPELINING.md). */
#define CELLAR__MIN_FRAME 1024u
/* ...and the fewest list items one request may carry (HelloReply.max_items
 * of a 1 KiB-frame device, issue 14) */
#define CELLAR__MIN_ITEMS 3u

/* Bounds of every loop over a device's answers. */
#define CELLAR__MAX_PAGES (CELLAR_MANIFEST_MAX + 16u) /* pages of one listing */
#define CELLAR__MAX_DEPTH 128u                        /* directory levels walked */

/* ==== libcellar_util.c: local helpers (no connection) ======================== */
/* SHA-256 of an open file from offset 0: size bytes, or to its end with
 * UINT64_MAX; *got (may be NULL) = bytes hashed. Returns 0 or a negative
 * errno (-EIO: the file ended before size; -ENOMEM). */
CELLAR_INTERNAL int cellar__sha_fd(int fd, uint64_t size, uint8_t out[CELLAR_SHA256_SIZE],
                                   uint64_t *got);
/* The temporary name put_file uses for path: dir/.NAME.cellar-tmp, or
 * dir/.ct-XXXXXXXX.cellar-tmp when that would be longer than max bytes.
 * Returns 0, -EINVAL (no last component) or -ENAMETOOLONG. */
CELLAR_INTERNAL int cellar__tmp_name(const char *path, char *out, size_t cap, size_t max);
/* dir + "/" + name, malloc'd (NULL when out of memory). */
CELLAR_INTERNAL char *cellar__join(const char *dir, const char *name);
/* A name put_file uses for its temporary copy (".NAME.cellar-tmp")? */
CELLAR_INTERNAL bool cellar__is_tmp_name(const char *name);
/* A listed name safe to join: not empty, no '/', not "." or "..". */
CELLAR_INTERNAL bool cellar__plain_name(const char *name);
/* /usr/.cellar or a path below it (reserved for the device)? */
CELLAR_INTERNAL bool cellar__reserved(const char *path);

/* A growing list of strings (paths), bounded. */
typedef struct cellar__strvec {
    char **v;
    size_t n, cap;
} cellar__strvec_t;
/* Append a copy of str; CELLAR_ERR_NOMEM when out of memory or at max. */
CELLAR_INTERNAL int cellar__sv_add(cellar__strvec_t *s, const char *str, size_t max);
CELLAR_INTERNAL void cellar__sv_free(cellar__strvec_t *s);
CELLAR_INTERNAL void cellar__sv_sort(cellar__strvec_t *s);
/* Is str in the sorted list? */
CELLAR_INTERNAL bool cellar__sv_has(const cellar__strvec_t *s, const char *str);

/* Monotonic clock, microseconds (issue 11: the link estimate). */
CELLAR_INTERNAL uint64_t cellar__now_us(void);

/* ==== libcellar.c: errors, connection, framing, RPC plumbing ================= */
/* issue 11 (docs/PIPELINING.md): take a pipelined Hello's answer (no-op
 * when none is pending); a request -> answer time seen (the RTT estimate
 * keeps the smallest); the bytes a transfer may keep in flight from the
 * bandwidth-delay product seen and the device's limits. */
CELLAR_INTERNAL int cellar__hello_wait(cellar_t *c);
CELLAR_INTERNAL void cellar__rtt_sample(cellar_t *c, uint64_t us);
CELLAR_INTERNAL void cellar__rate_sample(cellar_t *c, uint64_t bytes, uint64_t us);
CELLAR_INTERNAL uint64_t cellar__window_bytes(cellar_t *c, uint32_t chunk);

/* Scratch structs in the connection buffer. */
CELLAR_INTERNAL cellar_Request *cellar__req(cellar_t *c);
CELLAR_INTERNAL cellar_Response *cellar__resp(cellar_t *c);

/* Clear the request struct, set its body tag, return it. */
CELLAR_INTERNAL cellar_Request *cellar__new_req(cellar_t *c, pb_size_t which);

/* Encode and send the request struct; returns its id (> 0) or an error
 * (the handle is marked broken on a transport error). */
CELLAR_INTERNAL int64_t cellar__send(cellar_t *c);

/* Receive and decode the next response into the response struct. Returns 0
 * or a transport / protocol error (handle marked broken). The device's
 * error, if any, is not interpreted: see cellar__check. */
CELLAR_INTERNAL int cellar__recv(cellar_t *c);

/* 1 when a whole reply is buffered (after at most one non-blocking receive),
 * 0 when none is, or a transport error (handle marked broken). */
CELLAR_INTERNAL int cellar__reply_ready(cellar_t *c);

/* Interpret the response struct: its error as a negative code (with the
 * device's message in errmsg), or CELLAR_ERR_PROTO when the body is not
 * `which` (0 = any). Returns 0 when it is a good reply. */
CELLAR_INTERNAL int cellar__check(cellar_t *c, pb_size_t which);

/* Send the request struct and wait for its reply: cellar__send +
 * cellar__recv + id match + cellar__check. */
CELLAR_INTERNAL int cellar__rpc(cellar_t *c, pb_size_t which);

/* Record a failure: errmsg = formatted text, errpath cleared; returns err. */
CELLAR_INTERNAL int cellar__fail(cellar_t *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the device path a failure is about (errpath = ":path" when
 * err < 0; the message is kept); returns err. */
CELLAR_INTERNAL int cellar__at_path(cellar_t *c, int err, const char *path);
/* A failure about a local path: errmsg = "path: [what: ]strerror(-err)",
 * errpath = path; returns err. */
CELLAR_INTERNAL int cellar__local_fail(cellar_t *c, int err, const char *path,
                                       const char *what);
/* cellar__rpc for a request that may keep the device busy hashing or
 * copying: waits at least CELLAR_SLOW_TIMEOUT_MS. */
CELLAR_INTERNAL int cellar__slow_rpc(cellar_t *c, pb_size_t which);

/* Copy a path into a request field of cap bytes (with the NUL). */
CELLAR_INTERNAL int cellar__path(cellar_t *c, char *dst, size_t cap, const char *path);

/* Start a request (cellar__new_req) that carries path in its path field
 * (Rename: `from`). Returns it, or NULL with *err set (path too long, not
 * connected). */
CELLAR_INTERNAL cellar_Request *cellar__path_req(cellar_t *c, pb_size_t which,
                                                 const char *path, int *err);
/* Build (not send) a Hash request; returns 0 or an error. */
CELLAR_INTERNAL int cellar__hash_req(cellar_t *c, const char *path, uint64_t off,
                                     uint64_t len);
/* Build (not send) a Sync, Close or Truncate request of a handle. */
CELLAR_INTERNAL int cellar__handle_req(cellar_t *c, pb_size_t which, cellar_fh_t handle);

/* Effective chunk and window of a transfer. */
CELLAR_INTERNAL uint32_t cellar__chunk(const cellar_t *c, const cellar_xfer_t *x);
CELLAR_INTERNAL uint32_t cellar__window(const cellar_t *c, const cellar_xfer_t *x);
/* issue 14: list requests sized from Hello. cellar__items: at most `page`,
 * at most the device's max_items. cellar__fit: drop items from the end of
 * the list in the current request (*count, at least 1 kept) until it
 * encodes within the device's max_frame; returns the count kept. */
CELLAR_INTERNAL size_t cellar__items(const cellar_t *c, size_t page);
CELLAR_INTERNAL size_t cellar__fit(cellar_t *c, pb_size_t *count);

/* ==== libcellar_pipe.c: pipelined transfers through a handle ================ */
/* One pipelined transfer through an open handle: up to `window` requests
 * in flight, `chunk` bytes each, covering [off, off + total) of the file.
 * With range > 0, every `range` bytes (and at the end) the data is checked
 * by a device Hash of hash_path over that range, pipelined with the data
 * (an upload sends a Sync first so the Hash sees the written bytes); a
 * mismatch fails the transfer with CELLAR_ERR_BADMSG. sha (may be NULL) is
 * fed the whole stream in order. progress is reported against path. */
typedef struct cellar__pipe {
    cellar_fh_t handle;
    uint64_t off, total;
    uint32_t chunk, window;
    csha_t *sha;
    uint64_t range;
    const char *hash_path;
    cellar_progress_fn progress;
    void *progress_ctx;
    const char *path;
} cellar__pipe_t;

/* Data source of an upload: len bytes at pos (from 0); returns len or a
 * negative error (with the handle's errmsg set). */
typedef int (*cellar__src_fn)(void *ctx, uint64_t pos, void *buf, uint32_t len);
/* Data sink of a download, called in order; returns 0 or a negative error. */
typedef int (*cellar__sink_fn)(void *ctx, uint64_t pos, const void *buf,
                               uint32_t len);

/* Returns 0 or the first error; every reply is drained unless the
 * connection broke. */
CELLAR_INTERNAL int cellar__pipe_write(cellar_t *c, const cellar__pipe_t *p,
                                       cellar__src_fn src, void *src_ctx);
/* *got = bytes delivered (stops early at end of file). */
CELLAR_INTERNAL int cellar__pipe_read(cellar_t *c, const cellar__pipe_t *p,
                                      cellar__sink_fn sink, void *sink_ctx,
                                      uint64_t *got);

/* A batch of independent small requests (issue 11, docs/PIPELINING.md):
 * fill(ctx, i) builds request i in the request struct (cellar__new_req...)
 * and returns 0 or an error (the batch stops sending); done(ctx, i, err)
 * sees its answer in the response struct, err = the device's error for it
 * (cellar__check), and returns 0 or an error that stops the batch (the
 * answers in flight are still read). Requests are sent back to back, at
 * most CELLAR_BATCH_INFLIGHT unanswered, answers read as they come. slow:
 * wait CELLAR_SLOW_TIMEOUT_MS for an answer (Hash). Returns 0, the first
 * error of fill/done, or a connection error. */
typedef int (*cellar__fill_fn)(void *ctx, size_t i);
typedef int (*cellar__done_fn)(void *ctx, size_t i, int err);
CELLAR_INTERNAL int cellar__batch_run(cellar_t *c, size_t n, cellar__fill_fn fill,
                                      cellar__done_fn done, void *ctx, bool slow);

/* ==== libcellar_fs.c: file and namespace RPCs ================================ */
/* Reply structs into the API's (issue 11: shared with the batches). */
CELLAR_INTERNAL void cellar__copy_info(cellar_stat_t *st, const cellar_FileInfo *fi);
CELLAR_INTERNAL void cellar__copy_statfs(cellar_statfs_t *out, const cellar_StatFsReply *r);


/* ==== libcellar_batch.c: requests about many paths (issue 11) ================= */
/* Walk the device tree under dir: every file into files, every directory
 * into dirs (either may be NULL), as full paths; at most
 * CELLAR__MAX_DEPTH levels (depth: unused, kept for the callers). A
 * partition root's reserved ".cellar" is never followed. One round trip
 * per level (cellar_tree_list). Returns 0 or an error (errpath names the
 * directory). */
CELLAR_INTERNAL int cellar__walk(cellar_t *c, const char *dir, unsigned depth,
                                 cellar__strvec_t *files, cellar__strvec_t *dirs);

/* ==== libcellar_manifest.c: manifest and checksum.json ======================= */
/* partition, or "/usr" when NULL or empty. */
CELLAR_INTERNAL const char *cellar__partition_of(const char *partition);
/* Copy a partition name into a request field of cap bytes. */
CELLAR_INTERNAL int cellar__set_partition(cellar_t *c, char *dst, size_t cap,
                                          const char *part);
/* A manifest listing asked ahead (issue 11): pages at start + k * stride
 * (k < CELLAR_LIST_AHEAD) through cellar__ml_fill / cellar__ml_done (a
 * batch, or another stream: push sends them after its UpdateCommit);
 * cellar__ml_finish asks the rest, then sorts and drops the duplicates the
 * overlapping pages brought. Start with {.c, .part, .stride =
 * CELLAR_MANIFEST_PAGE}; v (malloc'd) is the caller's. */
typedef struct cellar__mlist {
    cellar_t *c;
    const char *part;
    cellar_mentry_t *v;
    size_t len, cap;
    uint32_t start, stride;
    uint64_t cov;      /* slots covered from 0; UINT64_MAX = to the end */
} cellar__mlist_t;
CELLAR_INTERNAL int cellar__ml_fill(void *ctx, size_t i);
CELLAR_INTERNAL int cellar__ml_done(void *ctx, size_t i, int err);
CELLAR_INTERNAL int cellar__ml_finish(cellar__mlist_t *m);
/* Index of path in v (n entries sorted by path), or -1. */
CELLAR_INTERNAL int cellar__mentry_find(const cellar_mentry_t *v, size_t n, const char *path);

/* ==== libcellar_bundle.c: building a bundle (no connection) ================== */
/* One bundle entry with its local file (NULL for removals). */
typedef struct cellar__item {
    cellar_push_entry_t e;
    char *local;
} cellar__item_t;

typedef struct cellar__items {
    cellar__item_t *v;
    size_t n, cap;
} cellar__items_t;

/* A built bundle: the files of localdir, hashed, sorted by device path;
 * it owns the local paths. */
struct cellar_bundle {
    char rdir[CELLAR_PATH_MAX + 1]; /* the device directory, normalised */
    cellar__items_t items;
    cellar__strvec_t dirs;          /* device paths of the local directories,
                                     * sorted */
    uint32_t nskipped;              /* local entries not bundled (warned) */
    uint64_t bytes;                 /* sum of the file sizes */
};

/* Append an entry for path with local (stored as given: the caller decides
 * who frees it). Returns 0 or CELLAR_ERR_NOMEM (also past the entry bound). */
CELLAR_INTERNAL int cellar__item_add(cellar_t *c, cellar__items_t *v, const char *path,
                                     char *local);
/* The bundle id of n entries in declaration order (see cellar_push). */
CELLAR_INTERNAL void cellar__bundle_id(const cellar__item_t *v, size_t n,
                                       uint8_t out[CELLAR_SHA256_SIZE]);
/* Check cellar_bundle_build's arguments; rdir = remotedir normalised. */
CELLAR_INTERNAL int cellar__bundle_check(cellar_t *c, const char *localdir,
                                         const char *remotedir,
                                         char rdir[CELLAR_PATH_MAX + 1]);
/* Walk and hash localdir into b (b->rdir set); on failure b holds what was
 * found so far (for a push report). */
CELLAR_INTERNAL int cellar__bundle_walk(cellar_t *c, cellar_bundle_t *b, const char *localdir,
                                        cellar_warn_fn warn, void *warn_ctx);
/* Free what b holds and zero it. */
CELLAR_INTERNAL void cellar__bundle_clear(cellar_bundle_t *b);

/* ==== libcellar_push.c: pushing a bundle ====================================== */
/* cellar_bundle_push without the manifest digest at the end (issue 11: the
 * changed files of a tree copy, libcellar_tree.c). */
CELLAR_INTERNAL int cellar__bundle_send(cellar_t *c, const cellar_bundle_t *b,
                                        const cellar_push_opts_t *o,
                                        cellar_push_report_t *rep);

#endif /* CELLAR_LIBCELLAR_INT_H */
