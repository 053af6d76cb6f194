/* codec.c - frames and nanopb helpers (see codec.h). Device-side code. */
#include "codec.h"
#include "le.h"

#include <string.h>

#include <pb_common.h>
#include <pb_decode.h>
#include <pb_encode.h>

/* The list matches the generated enum: every number (the asserts) and
 * every member (-Wswitch: a switch on the enum without a default warns
 * about a member it does not handle, and warnings are errors). */
#define CODEC_CHECK_CODE(num, name, text)                                   \
    _Static_assert(cellar_Code_##name == num, "CODEC_CODES: " #name);
CODEC_CODES(CODEC_CHECK_CODE)
#undef CODEC_CHECK_CODE

const char *codec_code_name(int code)
{
    if (code < _cellar_Code_MIN || code > _cellar_Code_MAX)
        return NULL;
    switch ((cellar_Code)code) {
#define CODEC_NAME_CASE(num, name, text) case cellar_Code_##name: return #name;
        CODEC_CODES(CODEC_NAME_CASE)
#undef CODEC_NAME_CASE
    }
    return NULL;
}

void codec_put_len(uint8_t *dst, uint32_t len)
{
    le_put32(dst, len);
}

uint32_t codec_get_len(const uint8_t *src)
{
    return le_get32(src);
}

int codec_frame_len(const uint8_t *hdr, uint32_t *len)
{
    uint32_t n = codec_get_len(hdr);
    *len = n;
    if (n == 0)
        return CODEC_ERR_PROTO;
    if (n > CODEC_MAX_FRAME)
        return CODEC_ERR_MSGSIZE;
    return 0;
}

/* ---- parser ---------------------------------------------------------------- */

int codec_parser_init(codec_parser_t *p, uint8_t *buf, uint32_t cap)
{
    memset(p, 0, sizeof(*p));
    if (!buf || cap < CODEC_BUF_MIN) {
        p->err = CODEC_ERR_INVAL;
        return CODEC_ERR_INVAL;
    }
    p->buf = buf;
    p->cap = cap;
    return 0;
}

uint32_t codec_parser_space(codec_parser_t *p, uint8_t **dst)
{
    if (p->err) {
        *dst = NULL;
        return 0;
    }
    *dst = p->buf + p->len;
    return p->cap - p->len;
}

void codec_parser_commit(codec_parser_t *p, uint32_t n)
{
    if (p->err)
        return;
    if (n > p->cap - p->len)
        n = p->cap - p->len; /* caller bug: never run past the buffer */
    p->len += n;
}

size_t codec_parser_feed(codec_parser_t *p, const void *data, size_t len)
{
    uint8_t *dst;
    uint32_t room = codec_parser_space(p, &dst);
    size_t n = len < room ? len : room;
    if (n) {
        memcpy(dst, data, n);
        p->len += (uint32_t)n;
    }
    return n;
}

int codec_parser_next(codec_parser_t *p, const uint8_t **frame, uint32_t *len)
{
    if (p->err)
        return p->err;
    if (p->frame == 0) {
        if (p->len < CODEC_HDR)
            return 0;
        uint32_t n;
        int err = codec_frame_len(p->buf, &n);
        if (err < 0) {
            p->err = err;
            return p->err;
        }
        p->frame = n;
    }
    if (p->len - CODEC_HDR < p->frame)
        return 0;
    *frame = p->buf + CODEC_HDR;
    *len = p->frame;
    return 1;
}

void codec_parser_pop(codec_parser_t *p)
{
    if (p->err || p->frame == 0 || p->len - CODEC_HDR < p->frame)
        return;
    uint32_t used = CODEC_HDR + p->frame;
    memmove(p->buf, p->buf + used, p->len - used);
    p->len -= used;
    p->frame = 0;
}

/* ---- nanopb ------------------------------------------------------------------ */

int codec_encode_frame(const pb_msgdesc_t *desc, const void *msg,
                       uint8_t *out, size_t cap)
{
    if (cap < CODEC_HDR)
        return CODEC_ERR_MSGSIZE;
    size_t room = cap - CODEC_HDR;
    if (room > CODEC_MAX_FRAME)
        room = CODEC_MAX_FRAME;
    pb_ostream_t os = pb_ostream_from_buffer(out + CODEC_HDR, room);
    if (!pb_encode(&os, desc, msg))
        return CODEC_ERR_MSGSIZE;
    if (os.bytes_written == 0) {
        /* An all-default message encodes to nothing, and a frame is never
         * empty. Requests always carry a body and Responses a body or an
         * error, so this is a caller bug. */
        return CODEC_ERR_PROTO;
    }
    codec_put_len(out, (uint32_t)os.bytes_written);
    return (int)(CODEC_HDR + os.bytes_written);
}

int codec_decode(const pb_msgdesc_t *desc, void *msg, const uint8_t *buf,
                 size_t len, const char **why)
{
    pb_istream_t is = pb_istream_from_buffer(buf, len);
    if (!pb_decode(&is, desc, msg)) {
        if (why)
            *why = PB_GET_ERROR(&is);
        return CODEC_ERR_PROTO;
    }
    if (why)
        *why = NULL;
    return 0;
}

/* ---- scan -------------------------------------------------------------------- */

static void scan_note(codec_scan_t *out, int problem, const pb_msgdesc_t *msg,
                      uint32_t tag, const uint8_t *s, uint32_t n, uint32_t cap,
                      int32_t item)
{
    if (out->problem)
        return;
    out->problem = problem;
    out->problem_msg = msg;
    out->problem_tag = tag;
    out->problem_len = n;
    out->problem_cap = cap;
    out->problem_item = item;
    uint32_t k = 0;
    while (s && k < n && k < CODEC_SCAN_PREFIX - 1 && s[k] != 0) {
        out->prefix[k] = (char)s[k];
        k++;
    }
    out->prefix[k] = 0;
}

#define SCAN_COUNTED 32u /* fields per message whose items are counted */

/* Levels of messages scan_msg walks: a Request or Response, its body, an
 * item of the body (an entry, a problem): cellar messages nest three
 * levels. A deeper one is not walked (nanopb's decode still bounds it).
 * Issue 14: each level is a frame of scan_msg on the stack (make ram). */
#define SCAN_LEVELS 4

/* Walk one message. depth bounds the recursion (SCAN_LEVELS). item: the
 * index of this message in a repeated field of its parent, or -1. */
static void scan_msg(const pb_msgdesc_t *desc, pb_istream_t *is,
                     codec_scan_t *out, int depth, int32_t item)
{
    uint16_t count[SCAN_COUNTED];
    bool counting = false; /* this level noted a COUNT problem */
    memset(count, 0, sizeof(count));
    while (is->bytes_left > 0) {
        pb_wire_type_t wt;
        uint32_t tag;
        bool eof;
        if (!pb_decode_tag(is, &wt, &tag, &eof) || eof)
            break;
        pb_field_iter_t it;
        bool known = pb_field_iter_begin_const(&it, desc, NULL) &&
                     pb_field_iter_find(&it, tag);
        if (depth == 0) {
            if (!known && !out->unknown_tag)
                out->unknown_tag = tag;
            if (tag >= 10) {
                out->nbody++;
                if (known)
                    out->body_tag = tag;
            }
            if (tag == 1 && wt == PB_WT_VARINT) {
                uint32_t v;
                if (!pb_decode_varint32(is, &v))
                    break;
                out->has_id = true;
                out->id = v;
                continue;
            }
        }
        int32_t sub_item = -1;
        if (known && PB_HTYPE(it.type) == PB_HTYPE_REPEATED &&
            it.index < SCAN_COUNTED && wt == PB_WT_STRING &&
            PB_LTYPE(it.type) >= PB_LTYPE_BYTES) { /* one item per field */
            sub_item = count[it.index];
            if (count[it.index] < UINT16_MAX)
                count[it.index]++;
            if (PB_ATYPE(it.type) == PB_ATYPE_STATIC &&
                count[it.index] == it.array_size + 1u && !out->problem) {
                scan_note(out, CODEC_SCAN_COUNT, desc, tag, NULL, 0,
                          it.array_size, item);
                counting = true;
            }
        }
        if (!known || wt != PB_WT_STRING) {
            if (!pb_skip_field(is, wt))
                break;
            continue;
        }
        pb_type_t lt = PB_LTYPE(it.type);
        pb_istream_t sub;
        if (!pb_make_string_substream(is, &sub))
            break;
        if (lt == PB_LTYPE_STRING || lt == PB_LTYPE_BYTES ||
            lt == PB_LTYPE_FIXED_LENGTH_BYTES) {
            /* every stream here is a buffer stream: state is the cursor */
            const uint8_t *s = (const uint8_t *)sub.state;
            uint32_t n = (uint32_t)sub.bytes_left;
            /* data_size of a static string includes the NUL; of a bytes
             * field it includes the size header. */
            uint32_t cap = it.data_size;
            if (lt == PB_LTYPE_STRING)
                cap = cap ? cap - 1 : 0;
            else if (lt == PB_LTYPE_BYTES)
                cap = cap >= sizeof(pb_size_t) ? cap - (uint32_t)sizeof(pb_size_t) : 0;
            int32_t at = sub_item >= 0 ? sub_item : item;
            if (PB_ATYPE(it.type) == PB_ATYPE_STATIC && n > cap)
                scan_note(out, CODEC_SCAN_LONG, desc, tag, s, n, cap, at);
            else if (lt == PB_LTYPE_STRING && memchr(s, 0, n))
                scan_note(out, CODEC_SCAN_NUL, desc, tag, s, n, cap, at);
        } else if ((lt == PB_LTYPE_SUBMESSAGE ||
                    lt == PB_LTYPE_SUBMSG_W_CB) && it.submsg_desc &&
                   depth + 1 < SCAN_LEVELS) {
            scan_msg(it.submsg_desc, &sub, out, depth + 1,
                     sub_item >= 0 ? sub_item : item);
        }
        /* Whatever the field held (or the recursion left), closing the
         * substream skips to its end in the parent stream. */
        if (!pb_close_string_substream(is, &sub))
            break;
    }
    if (counting) { /* the whole count, for the message */
        pb_field_iter_t it;
        if (pb_field_iter_begin_const(&it, desc, NULL) &&
            pb_field_iter_find(&it, out->problem_tag) &&
            it.index < SCAN_COUNTED)
            out->problem_len = count[it.index];
    }
}

void codec_scan(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len,
                codec_scan_t *out)
{
    memset(out, 0, sizeof(*out));
    pb_istream_t is = pb_istream_from_buffer(buf, len);
    scan_msg(desc, &is, out, 0, -1);
}
