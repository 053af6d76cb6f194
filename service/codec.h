/*
 * codec.h - cellar frames on any byte stream, and the nanopb helpers.
 *
 * A frame is a 4-byte little-endian length N followed by N bytes: one
 * encoded cellar.Request (client -> device) or cellar.Response (device ->
 * client). 1 <= N <= CODEC_MAX_FRAME. A length of 0 is a protocol error
 * (CODEC_ERR_PROTO); a length above CODEC_MAX_FRAME is CODEC_ERR_MSGSIZE.
 * Either error is detected as soon as the 4 length bytes have arrived - the
 * body is never waited for or buffered - and the connection is then closed
 * after one error Response with id 0.
 *
 * Frames are the unit every transport carries: TCP and TLS carry the bytes
 * as they are; the UART link layer (a later issue) wraps them in its own
 * CRC-checked, sequenced link frames and hands the same bytes up.
 *
 * The parser works in place in one caller-owned buffer of at least
 * CODEC_BUF_MIN bytes, so memory does not depend on what a peer claims:
 *
 *   codec_parser_init(&p, buf, sizeof(buf));
 *   n = codec_parser_space(&p, &dst);      // read up to n bytes into dst
 *   codec_parser_commit(&p, got);          //   ... then commit them
 *   (or codec_parser_feed(&p, bytes, len), which copies what fits)
 *   while ((r = codec_parser_next(&p, &frame, &len)) == 1) {
 *       handle(frame, len);                // valid until codec_parser_pop
 *       codec_parser_pop(&p);
 *   }
 *   if (r < 0) ... bad length: answer with an error and close
 *
 * Portable device-side code: no OS calls, no allocation.
 */
#ifndef CELLAR_CODEC_H
#define CELLAR_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pb.h>

#include "cellar.pb.h"
#include "cellar_config.h"

/* ---- limits --------------------------------------------------------------- */
/* The frame and chunk come from cellar_config.h (CELLAR_MAX_FRAME,
 * CELLAR_MAX_CHUNK: host 16896 / 16384, device profile 1024 / 768). */
#define CODEC_HDR 4u                        /* bytes of the length prefix */
#define CODEC_MAX_CHUNK CELLAR_MAX_CHUNK    /* Read length / Write data, bytes */
#define CODEC_MAX_FRAME CELLAR_MAX_FRAME    /* largest N in a frame, bytes */
#define CODEC_BUF_MIN (CODEC_HDR + CODEC_MAX_FRAME) /* parser buffer, bytes */
#define CODEC_PROTOCOL_VERSION 1u

/* A Response carries an error or a body, never both (svc_resp_finish
 * drops the body of a failed reply): its largest is the generated size
 * less the error field (tag, length, Error). */
#if cellar_Request_size > CODEC_MAX_FRAME || \
    cellar_Response_size - (cellar_Error_size + 3) > CODEC_MAX_FRAME
#error "a cellar message can exceed CODEC_MAX_FRAME: check proto/cellar.options (device: proto/cellar-device.options)"
#endif
_Static_assert(sizeof(((cellar_WriteRequest *)0)->data.bytes) == CODEC_MAX_CHUNK &&
               sizeof(((cellar_ReadReply *)0)->data.bytes) == CODEC_MAX_CHUNK &&
               sizeof(((cellar_UpdateWriteRequest *)0)->data.bytes) == CODEC_MAX_CHUNK,
               "the generated data fields hold CELLAR_MAX_CHUNK bytes (cellar.options)");

/* ---- errors (negative errno numbers, as in the proto Code enum) ----------- */
typedef enum {
    CODEC_OK = 0,
    CODEC_ERR_INVAL = -22,   /* bad argument (buffer too small for any frame) */
    CODEC_ERR_PROTO = -71,   /* length 0, or a message that does not decode */
    CODEC_ERR_MSGSIZE = -90, /* length above CODEC_MAX_FRAME, or no room */
} codec_err_t;

/* ---- the protocol's error codes: one list ---------------------------------
 * The members of the proto Code enum with their number, symbolic name and
 * text, as X(number, NAME, "text"). Every table of error names derives from
 * this list (codec_code_name; libcellar's cellar_errname / cellar_strerror,
 * which add the client's own codes after it); the _Static_asserts in
 * codec.c keep it equal to the generated enum. */
#define CODEC_CODES(X)                                                      \
    X(0, OK, "success")                                                     \
    X(1, EPERM, "operation not permitted")                                  \
    X(2, ENOENT, "no such file or directory")                               \
    X(5, EIO, "input/output error")                                         \
    X(9, EBADF, "bad file handle")                                          \
    X(12, ENOMEM, "out of memory or device table full")                     \
    X(13, EACCES, "permission denied")                                      \
    X(16, EBUSY, "device or resource busy")                                 \
    X(17, EEXIST, "file exists")                                            \
    X(20, ENOTDIR, "not a directory")                                       \
    X(21, EISDIR, "is a directory")                                         \
    X(22, EINVAL, "invalid argument")                                       \
    X(27, EFBIG, "file too large")                                          \
    X(28, ENOSPC, "no space left on device")                                \
    X(30, EROFS, "read-only file system")                                   \
    X(36, ENAMETOOLONG, "file name too long")                               \
    X(39, ENOTEMPTY, "directory not empty")                                 \
    X(71, EPROTO, "protocol error")                                         \
    X(74, EBADMSG, "SHA-256 mismatch: data corrupted in transfer")          \
    X(84, EILSEQ, "data on flash is corrupt")                               \
    X(90, EMSGSIZE, "message too long")                                     \
    X(95, ENOTSUP, "not supported")                                         \
    X(110, ETIMEDOUT, "timed out")

/* "ENOENT" for a proto Code number, or NULL when it is not one. */
const char *codec_code_name(int code);

/* ---- incremental frame parser --------------------------------------------- */
typedef struct codec_parser {
    uint8_t *buf;      /* caller's buffer */
    uint32_t cap;      /* its size (>= CODEC_BUF_MIN) */
    uint32_t len;      /* bytes buffered, starting with the current frame */
    uint32_t frame;    /* length N of the current frame, 0 until known */
    int err;           /* sticky: first framing error, or 0 */
} codec_parser_t;

/* Set up a parser on buf (cap >= CODEC_BUF_MIN). Returns 0 or
 * CODEC_ERR_INVAL (then every later call fails with it). */
int codec_parser_init(codec_parser_t *p, uint8_t *buf, uint32_t cap);

/* Free room at the end of the buffer: *dst points at it, returns its size in
 * bytes (0 when the buffer is full or after a framing error: stop reading). */
uint32_t codec_parser_space(codec_parser_t *p, uint8_t **dst);
/* Account for n bytes written at the pointer codec_parser_space gave
 * (n <= that space). */
void codec_parser_commit(codec_parser_t *p, uint32_t n);
/* Copy up to len bytes in; returns how many were taken (the rest must be
 * offered again later: the buffer holds at most one frame and a bit). */
size_t codec_parser_feed(codec_parser_t *p, const void *data, size_t len);

/* Is a whole frame buffered? Returns 1 and sets *frame / *len to its body
 * (valid until codec_parser_pop), 0 when more bytes are needed, or the
 * sticky framing error (CODEC_ERR_PROTO for length 0, CODEC_ERR_MSGSIZE
 * above CODEC_MAX_FRAME). Calling it again without pop returns the same
 * frame. */
int codec_parser_next(codec_parser_t *p, const uint8_t **frame, uint32_t *len);
/* Drop the current frame (after codec_parser_next returned 1). */
void codec_parser_pop(codec_parser_t *p);
/* Bytes buffered (of the current and following frames). */
static inline uint32_t codec_parser_buffered(const codec_parser_t *p)
{
    return p->len;
}

/* Write / read a 4-byte little-endian length prefix. */
void codec_put_len(uint8_t *dst, uint32_t len);
uint32_t codec_get_len(const uint8_t *src);

/* Check a length prefix (4 bytes at hdr): 0 with *len = N, or
 * CODEC_ERR_PROTO (N == 0) / CODEC_ERR_MSGSIZE (N > CODEC_MAX_FRAME) with
 * *len = N. The one framing rule of both ends: the parser above and the
 * client's receive path (libcellar) use it. */
int codec_frame_len(const uint8_t *hdr, uint32_t *len);

/* ---- nanopb helpers --------------------------------------------------------
 * Encoders write the whole frame (prefix + message) into out[0..cap) and
 * return its size in bytes, or CODEC_ERR_MSGSIZE when it does not fit or
 * would exceed CODEC_MAX_FRAME. Decoders read exactly len bytes (the stream's
 * bytes_left is len, nothing past it is touched) and return 0, or
 * CODEC_ERR_PROTO with *why (if not NULL) set to nanopb's reason. */
int codec_encode_frame(const pb_msgdesc_t *desc, const void *msg,
                       uint8_t *out, size_t cap);
int codec_decode(const pb_msgdesc_t *desc, void *msg, const uint8_t *buf,
                 size_t len, const char **why);

static inline int codec_encode_request(const cellar_Request *r, uint8_t *out,
                                       size_t cap)
{
    return codec_encode_frame(cellar_Request_fields, r, out, cap);
}
static inline int codec_encode_response(const cellar_Response *r,
                                        uint8_t *out, size_t cap)
{
    return codec_encode_frame(cellar_Response_fields, r, out, cap);
}
static inline int codec_decode_request(cellar_Request *r, const uint8_t *buf,
                                       size_t len, const char **why)
{
    return codec_decode(cellar_Request_fields, r, buf, len, why);
}
static inline int codec_decode_response(cellar_Response *r,
                                        const uint8_t *buf, size_t len,
                                        const char **why)
{
    return codec_decode(cellar_Response_fields, r, buf, len, why);
}

/* ---- pre-decode scan -------------------------------------------------------
 * nanopb copies a string up to its first NUL without saying so, rejects an
 * over-long string with a bare "string overflow" and skips unknown fields
 * silently. codec_scan walks an encoded message against its descriptor
 * (recursing into sub-messages) before it is decoded, so the service can
 * answer those cases precisely. It never fails: malformed input is left for
 * codec_decode to reject. */
enum {
    CODEC_SCAN_OK = 0,
    CODEC_SCAN_NUL = 1,  /* a string field holds a NUL byte */
    CODEC_SCAN_LONG = 2, /* a string/bytes field is longer than its cap */
    CODEC_SCAN_COUNT = 3,/* a repeated field has more items than its cap */
};
#define CODEC_SCAN_PREFIX 48

typedef struct codec_scan {
    bool has_id;          /* top-level field 1 (varint) seen */
    uint32_t id;          /* its value: the request id, for error replies */
    uint32_t unknown_tag; /* first unknown top-level field number, or 0 */
    uint32_t nbody;       /* top-level fields numbered 10 and above seen */
    uint32_t body_tag;    /* the last known one of them (which nanopb keeps) */
    int problem;          /* CODEC_SCAN_*: the first one found */
    uint32_t problem_tag; /* field number of that field */
    const pb_msgdesc_t *problem_msg; /* the message that has the field */
    uint32_t problem_len; /* its length on the wire, bytes (COUNT: items) */
    uint32_t problem_cap; /* its limit: bytes (LONG) or items (COUNT) */
    int32_t problem_item; /* index of the repeated item holding it, or -1 */
    char prefix[CODEC_SCAN_PREFIX]; /* its bytes up to the first NUL or
                                       CODEC_SCAN_PREFIX - 1 of them,
                                       NUL-terminated (for messages) */
} codec_scan_t;

void codec_scan(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len,
                codec_scan_t *out);

#endif /* CELLAR_CODEC_H */
