/* svc_msg.c - messages: the sb_t builder, error codes and names, logging,
 * error replies (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-
 * side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- message builder (sb_t: svc_int.h) --------------------------------- */
void svc_sb_init(sb_t *b, char *buf, size_t cap)
{
    b->p = buf;
    b->cap = cap;
    b->n = 0;
    b->full = false;
    buf[0] = 0;
}

/* Append n bytes as one unit (a whole character or token). */
static void svc_sb_unit(sb_t *b, const char *s, size_t n)
{
    if (b->full)
        return;
    if (b->n + n + 4 > b->cap) { /* keep room for "..." and the NUL */
        b->full = true;
        if (b->n + 4 <= b->cap) {
            memcpy(b->p + b->n, "...", 3);
            b->n += 3;
        }
        b->p[b->n] = 0;
        return;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void svc_sb_str(sb_t *b, const char *s) /* trusted ASCII */
{
    while (*s)
        svc_sb_unit(b, s++, 1);
}

void svc_sb_u64(sb_t *b, uint64_t v)
{
    char t[24];
    int i = (int)sizeof(t);
    t[--i] = 0;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    svc_sb_str(b, t + i);
}

void svc_sb_hex32(sb_t *b, uint32_t v)
{
    static const char hx[] = "0123456789abcdef";
    char t[11] = "0x";
    for (int i = 0; i < 8; i++)
        t[2 + i] = hx[(v >> (28 - 4 * i)) & 15];
    t[10] = 0;
    svc_sb_str(b, t);
}

bool svc_utf8_valid(const char *in, size_t len)
{
    for (size_t i = 0, k; i < len; i += k)
        if (!(k = svc_utf8_seq((const uint8_t *)in + i, len - i)))
            return false;
    return true;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
size_t svc_utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* A peer's string, quoted; control bytes, quotes, backslashes and invalid
 * UTF-8 are escaped as \xNN / \" / \\. */
void svc_sb_quoted(sb_t *b, const char *str, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    svc_sb_unit(b, "\"", 1);
    size_t i = 0;
    while (i < n && !b->full) {
        size_t k = svc_utf8_seq(s + i, n - i);
        if (k == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
            k = 0;
        } else if (k == 1 && (s[i] == '"' || s[i] == '\\')) {
            char e[2] = { '\\', (char)s[i] };
            svc_sb_unit(b, e, 2);
            i++;
            continue;
        }
        if (k == 0) {
            char e[4] = { '\\', 'x', hx[s[i] >> 4], hx[s[i] & 15] };
            svc_sb_unit(b, e, 4);
            i++;
        } else {
            svc_sb_unit(b, (const char *)s + i, k);
            i += k;
        }
    }
    svc_sb_unit(b, "\"", 1);
}

void svc_sb_qstr(sb_t *b, const char *s)
{
    svc_sb_quoted(b, s, strlen(s));
}

/* ---- codes ------------------------------------------------------------------ */

cellar_Code svc_code(int err)
{
    if (err >= 0)
        return cellar_Code_OK;
    switch (-err) {
    case cellar_Code_EPERM: case cellar_Code_ENOENT: case cellar_Code_EIO:
    case cellar_Code_EBADF: case cellar_Code_ENOMEM: case cellar_Code_EACCES:
    case cellar_Code_EBUSY: case cellar_Code_EEXIST: case cellar_Code_ENOTDIR:
    case cellar_Code_EISDIR: case cellar_Code_EINVAL: case cellar_Code_EFBIG:
    case cellar_Code_ENOSPC: case cellar_Code_EROFS:
    case cellar_Code_ENAMETOOLONG: case cellar_Code_ENOTEMPTY:
    case cellar_Code_EPROTO: case cellar_Code_EBADMSG: case cellar_Code_EILSEQ:
    case cellar_Code_EMSGSIZE: case cellar_Code_ENOTSUP:
    case cellar_Code_ETIMEDOUT:
        return (cellar_Code)(-err);
    default:
        return cellar_Code_EIO;
    }
}

const char *svc_code_name(cellar_Code code)
{
    const char *name = codec_code_name((int)code); /* CODEC_CODES */
    return name ? name : "E?";
}

/* Reason text for an error: the filesystem's words where it has them. */
const char *svc_reason(int err)
{
    switch (err) {
    case -(int)cellar_Code_EPROTO: return "protocol error";
    case -(int)cellar_Code_EMSGSIZE: return "message too large";
    case -(int)cellar_Code_EACCES: return "permission denied";
    case -(int)cellar_Code_ENOTSUP: return "not supported";
    case -125: return "flash device lost power";
    default: return cfs_strerror(err);
    }
}

/* ---- logging ------------------------------------------------------------------ */

/* Issue 14: the line is built in the txn scratch's tmp (no txn or man_*
 * call runs between svc_log_begin and svc_log_end; TXN_W_TMP asserts it). */
#define SVC_LOG_LINE 256u
_Static_assert(SVC_LOG_LINE <= sizeof(((txn_work_t *)0)->tmp),
               "the log line fits the txn scratch's tmp");

sb_t svc_log_begin(svc_t *s, const svc_conn_t *c)
{
    sb_t b;
    txn_work_take(&s->txw, TXN_W_TMP);
    svc_sb_init(&b, s->txw.tmp, SVC_LOG_LINE);
    if (c) {
        svc_sb_str(&b, "conn ");
        svc_sb_u64(&b, c->num);
        if (c->peer[0]) {
            svc_sb_str(&b, " ");
            svc_sb_str(&b, c->peer); /* set by the transport: trusted */
        }
        svc_sb_str(&b, ": ");
    } else {
        svc_sb_str(&b, "svc: ");
    }
    return b;
}

void svc_log_end(svc_t *s)
{
    if (SVC_LOGS(s))
        s->cfg.log(s->cfg.log_ctx, s->txw.tmp);
    txn_work_give(&s->txw, TXN_W_TMP);
}

#if CELLAR_WITH_LOG /* issue 14: else a macro of svc_int.h */
void svc_log_msg(svc_t *s, const svc_conn_t *c, const char *msg)
{
    if (!SVC_LOGS(s))
        return;
    sb_t b = svc_log_begin(s, c);
    svc_sb_str(&b, msg);
    svc_log_end(s);
}
#endif

/* ---- replies ------------------------------------------------------------------ */

void svc_resp_reset(svc_t *s, uint32_t id)
{
    memset(&s->resp, 0, sizeof(s->resp));
    s->resp.id = id;
}

/* Start an error reply; returns a builder on its message. */
sb_t svc_err_begin(svc_t *s, int err)
{
    sb_t b;
    s->resp.which_body = 0;
    s->resp.has_error = true;
    s->resp.error.code = svc_code(err);
    svc_sb_init(&b, s->resp.error.message, sizeof(s->resp.error.message));
    svc_sb_str(&b, s->op);
    return b;
}

/* "<op> "<path>": <why>" */
int svc_fail_path(svc_t *s, int err, const char *path, const char *why)
{
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, path);
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, why ? why : svc_reason(err));
    return err;
}

/* "<op>: <why>" */
int svc_fail(svc_t *s, int err, const char *why)
{
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, why ? why : svc_reason(err));
    return err;
}

/* "<op> handle N "<path>": <why>" ("<op> handle N: <why>" without path;
 * issue 14: one builder for the flash's handles and /sd's) */
int svc_fail_hid(svc_t *s, int err, uint32_t id, const char *path,
                 const char *why)
{
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, " handle ");
    svc_sb_u64(&b, id);
    if (path) {
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, path);
    }
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, why ? why : svc_reason(err));
    return err;
}

int svc_fail_handle(svc_t *s, int err, const svc_handle_t *h,
                       const char *why)
{
    return svc_fail_hid(s, err, h->id, h->path, why);
}

/* An cfs_file_open failure: the device-wide table of open files (CFS_MAX_OPEN
 * per partition, every connection's handles and the file Hash or Truncate
 * opens for the request) is named as such. */
int svc_fail_open(svc_t *s, int err, const char *show)
{
    return svc_fail_path(s, err, show,
                     err == CFS_ERR_NOMEM ? "too many files open on the device"
                                         : NULL);
}

void svc_reply_done(svc_t *s)
{
    s->resp.which_body = cellar_Response_done_tag;
}

void svc_log_failure(svc_t *s, svc_conn_t *c)
{
    if (!SVC_LOGS(s))
        return;
    sb_t b = svc_log_begin(s, c);
    svc_sb_str(&b, "id ");
    svc_sb_u64(&b, s->resp.id);
    svc_sb_str(&b, " ");
    svc_sb_str(&b, svc_code_name(s->resp.error.code));
    svc_sb_str(&b, " ");
    svc_sb_str(&b, s->resp.error.message); /* already escaped */
    svc_log_end(s);
}
