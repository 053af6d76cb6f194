/*
 * libcellar_int.h - internals shared by the files of libcellar
 * (clients/libcellar*.c). Not installed; not part of the API.
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

#include "csha.h"

/* Internal functions are not exported from libcellar.so. */
#define CELLAR_INTERNAL __attribute__((visibility("hidden")))

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

/* dir + "/" + name, malloc'd (NULL when out of memory). */
char *cellar__join(const char *dir, const char *name);
/* A name put_file uses for its temporary copy (".NAME.cellar-tmp")? */
bool cellar__is_tmp_name(const char *name);

#endif /* CELLAR_LIBCELLAR_INT_H */
