/* svc_core.c - the cellar service core (see svc_core.h). Device-side code:
 * no OS calls, no allocation, no stdio. */
#include "svc_core.h"

#include <stddef.h>
#include <string.h>

#include "csha.h"
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

static void svc_sb_hex32(sb_t *b, uint32_t v)
{
    static const char hx[] = "0123456789abcdef";
    char t[11] = "0x";
    for (int i = 0; i < 8; i++)
        t[2 + i] = hx[(v >> (28 - 4 * i)) & 15];
    t[10] = 0;
    svc_sb_str(b, t);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_seq(const uint8_t *s, size_t n)
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
static void svc_sb_quoted(sb_t *b, const char *str, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    const uint8_t *s = (const uint8_t *)str;
    svc_sb_unit(b, "\"", 1);
    size_t i = 0;
    while (i < n && !b->full) {
        size_t k = utf8_seq(s + i, n - i);
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
    switch (code) {
    case cellar_Code_OK: return "OK";
    case cellar_Code_EPERM: return "EPERM";
    case cellar_Code_ENOENT: return "ENOENT";
    case cellar_Code_EIO: return "EIO";
    case cellar_Code_EBADF: return "EBADF";
    case cellar_Code_ENOMEM: return "ENOMEM";
    case cellar_Code_EACCES: return "EACCES";
    case cellar_Code_EBUSY: return "EBUSY";
    case cellar_Code_EEXIST: return "EEXIST";
    case cellar_Code_ENOTDIR: return "ENOTDIR";
    case cellar_Code_EISDIR: return "EISDIR";
    case cellar_Code_EINVAL: return "EINVAL";
    case cellar_Code_EFBIG: return "EFBIG";
    case cellar_Code_ENOSPC: return "ENOSPC";
    case cellar_Code_EROFS: return "EROFS";
    case cellar_Code_ENAMETOOLONG: return "ENAMETOOLONG";
    case cellar_Code_ENOTEMPTY: return "ENOTEMPTY";
    case cellar_Code_EPROTO: return "EPROTO";
    case cellar_Code_EBADMSG: return "EBADMSG";
    case cellar_Code_EILSEQ: return "EILSEQ";
    case cellar_Code_EMSGSIZE: return "EMSGSIZE";
    case cellar_Code_ENOTSUP: return "ENOTSUP";
    case cellar_Code_ETIMEDOUT: return "ETIMEDOUT";
    }
    return "E?";
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
    default: return fs_strerror(err);
    }
}

/* ---- logging ------------------------------------------------------------------ */

sb_t svc_log_begin(svc_t *s, const svc_conn_t *c)
{
    sb_t b;
    svc_sb_init(&b, s->logline, sizeof(s->logline));
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
    if (s->cfg.log)
        s->cfg.log(s->cfg.log_ctx, s->logline);
}

void svc_log_msg(svc_t *s, const svc_conn_t *c, const char *msg)
{
    if (!s->cfg.log)
        return;
    sb_t b = svc_log_begin(s, c);
    svc_sb_str(&b, msg);
    svc_log_end(s);
}

/* ---- partitions ---------------------------------------------------------------- */

static const char *const part_names[SVC_MAX_PARTS] = { "usr", "bak" };

const layout_t *svc_layout(const svc_t *svc)
{
    return &svc->layout;
}

fs_t *svc_fs(svc_t *svc, const char *name)
{
    for (uint32_t i = 0; i < svc->nparts; i++)
        if (strcmp(svc->part[i].name, name) == 0 && svc->part[i].mounted)
            return &svc->part[i].fs;
    return NULL;
}

void svc_init(svc_t *svc)
{
    memset(svc, 0, sizeof(*svc));
}

static void log_part(svc_t *s, const char *what, const svc_part_t *p, int err)
{
    if (!s->cfg.log)
        return;
    sb_t b = svc_log_begin(s, NULL);
    svc_sb_str(&b, what);
    svc_sb_str(&b, " /");
    svc_sb_str(&b, p->name);
    svc_sb_str(&b, " (blocks ");
    svc_sb_u64(&b, p->cfg.first_block);
    svc_sb_str(&b, "..");
    svc_sb_u64(&b, (uint64_t)p->cfg.first_block + p->cfg.block_count - 1);
    svc_sb_str(&b, ")");
    if (err < 0) {
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, svc_reason(err));
    }
    svc_log_end(s);
}

void svc_problem(svc_t *s, uint32_t part, const char *what, const char *why,
                 const char *done)
{
    char line[SVC_PROBLEM_LEN];
    sb_t b;
    svc_sb_init(&b, line, sizeof(line));
    svc_sb_str(&b, "/");
    svc_sb_str(&b, s->part[part].name);
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, what);
    if (why) {
        svc_sb_str(&b, " (");
        svc_sb_str(&b, why);
        svc_sb_str(&b, ")");
    }
    if (done) {
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, done);
    }
    for (uint32_t i = 0; i < s->nproblems; i++)
        if (strcmp(s->problems[i], line) == 0)
            return; /* once */
    svc_log_msg(s, NULL, line);
    if (s->nproblems < SVC_MAX_PROBLEMS) {
        s->problem_part[s->nproblems] = (uint8_t)part;
        memcpy(s->problems[s->nproblems++], line, sizeof(line));
    }
}

void svc_problems_forget(svc_t *s, uint32_t part)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->nproblems; i++)
        if (s->problem_part[i] != part) {
            if (k != i) {
                s->problem_part[k] = s->problem_part[i];
                memcpy(s->problems[k], s->problems[i], SVC_PROBLEM_LEN);
            }
            k++;
        }
    s->nproblems = k;
}

uint64_t svc_room_bytes(svc_t *s, uint32_t part)
{
    fs_statvfs_t v;
    if (!s->part[part].mounted || fs_statvfs(&s->part[part].fs, &v))
        return 0;
    /* the service's own: 1/32 of the partition, 6 to 16 blocks */
    uint64_t keep = v.total / 32, bs = v.block_size;
    if (keep < 6 * bs)
        keep = 6 * bs;
    if (keep > SVC_KEEP_BYTES && SVC_KEEP_BYTES >= 6 * bs)
        keep = SVC_KEEP_BYTES;
    /* what open write handles have grown their files by since their last
     * commit counts too: it is not in `claimed` yet */
    uint64_t claimed = v.claimed;
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (!h->id || !h->writable || h->part != part)
                continue;
            int32_t sz = fs_file_size(&s->part[part].fs, &h->file);
            int32_t cs = fs_file_committed_size(&s->part[part].fs, &h->file);
            if (sz > cs && cs >= 0)
                claimed += (uint64_t)(sz - cs);
        }
    return v.total > claimed + v.reserve + keep
               ? v.total - claimed - v.reserve - keep : 0;
}

int svc_room(svc_t *s, uint32_t part, uint64_t grow, const char *show)
{
    uint64_t have = svc_room_bytes(s, part);
    if (grow <= have)
        return 0;
    sb_t b = svc_err_begin(s, FS_ERR_NOSPC);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, show);
    svc_sb_str(&b, ": needs ");
    svc_sb_u64(&b, grow);
    svc_sb_str(&b, " more bytes, /");
    svc_sb_str(&b, s->part[part].name);
    svc_sb_str(&b, " has ");
    svc_sb_u64(&b, have);
    svc_sb_str(&b, " (a file's size counts in full, holes included)");
    return FS_ERR_NOSPC;
}

/* Is the partition erased from end to end (a new device, where
 * provisioning may format it)? Anything else that does not mount is data
 * the service must not write over: it is reported, and Format is the
 * user's call. Stops at the first byte written. */
static bool part_blank(svc_t *s, const svc_part_t *p)
{
    const flash_dev_t *dev = p->cfg.dev;
    uint32_t chunk = (uint32_t)sizeof(s->scratch);
    for (uint32_t b = 0; b < p->cfg.block_count; b++)
        for (uint32_t off = 0; off < dev->block_size; off += chunk) {
            uint32_t n = dev->block_size - off < chunk ? dev->block_size - off
                                                      : chunk;
            if (dev->read(dev, p->cfg.first_block + b, off, s->scratch, n))
                return false;
            for (uint32_t i = 0; i < n; i++)
                if (s->scratch[i] != 0xff)
                    return false;
        }
    return true;
}

int svc_setup(svc_t *s, const svc_config_t *cfg)
{
    int err;
    bool format_all = false;

    if (!cfg || !cfg->dev)
        return FS_ERR_INVAL;
    svc_init(s);
    s->cfg = *cfg;
    if (!s->cfg.device_id)
        s->cfg.device_id = "cellar";
    if (!s->cfg.firmware)
        s->cfg.firmware = "cellard " CELLAR_VERSION;
    s->idle_ms = cfg->idle_timeout_ms ? cfg->idle_timeout_ms
                                      : SVC_IDLE_DEFAULT_MS;

    err = layout_read(cfg->dev, &s->layout);
    if (err == -2 && cfg->provision) {
        err = layout_default(cfg->dev->block_count, cfg->bak_blocks,
                             &s->layout);
        if (err) {
            svc_log_msg(s, NULL, "no partition table, and the device is too "
                             "small for the default layout");
            goto fail;
        }
        svc_log_msg(s, NULL, "no partition table: writing the default layout");
        err = layout_write(cfg->dev, &s->layout);
        if (err) {
            svc_log_msg(s, NULL, "writing the partition table failed");
            goto fail;
        }
        format_all = true;
    } else if (err) {
        svc_log_msg(s, NULL, err == -2 ? "no partition table in block 0"
                             : err == LAYOUT_ERR_FOREIGN
                                 ? "block 0 holds no cellar partition table: "
                                   "not a cellar flash, left alone"
                                 : "the partition table is corrupt");
        goto fail;
    }

    for (uint32_t i = 0; i < SVC_MAX_PARTS; i++) {
        const layout_part_t *lp = layout_find(&s->layout, part_names[i]);
        svc_part_t *p = &s->part[i];
        if (!lp) {
            sb_t b = svc_log_begin(s, NULL);
            svc_sb_str(&b, "the partition table has no \"");
            svc_sb_str(&b, part_names[i]);
            svc_sb_str(&b, "\" partition");
            svc_log_end(s);
            err = FS_ERR_CORRUPT;
            goto fail;
        }
        memcpy(p->name, lp->name, sizeof(p->name));
        p->name[sizeof(p->name) - 1] = 0;
        p->read_only = strcmp(p->name, "bak") == 0;
        p->cfg.dev = cfg->dev;
        p->cfg.first_block = lp->first_block;
        p->cfg.block_count = lp->block_count;
        p->cfg.clock = cfg->clock;
        p->cfg.clock_ctx = cfg->clock_ctx;
        s->nparts = i + 1;
        if (format_all) {
            log_part(s, "formatting", p, 0);
            err = fs_format(&p->fs, &p->cfg);
            if (err) {
                log_part(s, "format failed:", p, err);
                goto fail;
            }
        }
        err = fs_mount(&p->fs, &p->cfg);
        if (err == FS_ERR_NOTMOUNTED && cfg->provision && !format_all &&
            part_blank(s, p)) {
            log_part(s, "no filesystem on", p, 0);
            log_part(s, "formatting", p, 0);
            err = fs_format(&p->fs, &p->cfg);
            if (!err)
                err = fs_mount(&p->fs, &p->cfg);
        }
        if (err) {
            /* reported, not served: Format is the repair */
            log_part(s, "cannot mount", p, err);
            p->state = SVC_PART_UNMOUNTED;
            svc_problem(s, i, "cannot mount", svc_reason(err),
                        "not served; format it");
            err = 0;
            continue;
        }
        p->mounted = 1;
        log_part(s, "mounted", p, 0);
    }
    err = svc_store_setup(s);
    if (err)
        goto fail;
    s->set_up = 1;
    return 0;

fail:
    svc_store_free(s);
    for (uint32_t i = 0; i < s->nparts; i++)
        if (s->part[i].mounted)
            (void)fs_unmount(&s->part[i].fs);
    s->nparts = 0;
    return err;
}

/* ---- connections ------------------------------------------------------------------ */

/* Drop the long request (its connection went, a handle or the partition
 * it reads went away). With why, its connection gets an error reply. */
static void job_cancel(svc_t *s, int err, const char *why);

void svc_handle_release(svc_t *s, svc_handle_t *h)
{
    svc_part_t *p = &s->part[h->part];
    int err = 0;
    if (s->job.kind && s->job.fp == &h->file) /* a Hash reads it */
        job_cancel(s, FS_ERR_BADF, "cancelled: the handle was closed");
    if (p->mounted && h->shadow)
        svc_shadow_discard(s, h); /* never published: nothing changes */
    else if (p->mounted)
        err = fs_file_close(&p->fs, &h->file);
    if (err < 0 && s->cfg.log) {
        sb_t b = svc_log_begin(s, NULL);
        svc_sb_str(&b, "closing ");
        svc_sb_qstr(&b, h->path);
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, svc_reason(err));
        svc_log_end(s);
    }
    memset(h, 0, sizeof(*h));
}

void svc_conn_open(svc_t *s, svc_conn_t *c, const char *peer)
{
    /* the two big buffers need no clearing */
    memset(c, 0, offsetof(svc_conn_t, inbuf));
    c->svc = s;
    (void)codec_parser_init(&c->in, c->inbuf, sizeof(c->inbuf));
    if (peer) {
        size_t n = strlen(peer);
        if (n >= sizeof(c->peer))
            n = sizeof(c->peer) - 1;
        memcpy(c->peer, peer, n);
        c->peer[n] = 0;
    }
    c->num = ++s->conn_seq;
    c->last_ms = s->now_ms;
    c->next = s->conns;
    s->conns = c;
    s->nconns++;
    svc_log_msg(s, c, "open");
}

void svc_conn_close(svc_t *s, svc_conn_t *c, const char *why)
{
    svc_conn_t **pp = &s->conns;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (!*pp)
        return; /* not attached */
    *pp = c->next;
    s->nconns--;
    if (s->job.kind && s->job.conn == c)
        job_cancel(s, 0, NULL); /* nobody to answer */
    for (uint32_t i = 0; i < SVC_MAX_HANDLES; i++)
        if (c->h[i].id)
            svc_handle_release(s, &c->h[i]);
    svc_store_conn_gone(s, c);
    if (s->cfg.log) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "close (");
        svc_sb_str(&b, why ? why : c->close_reason ? c->close_reason : "closed");
        svc_sb_str(&b, "; ");
        svc_sb_u64(&b, c->requests);
        svc_sb_str(&b, " requests, ");
        svc_sb_u64(&b, c->errors);
        svc_sb_str(&b, " failed)");
        svc_log_end(s);
    }
    c->svc = NULL;
    c->next = NULL;
}

int svc_free(svc_t *s)
{
    int first = 0;
    if (!s)
        return 0;
    while (s->conns)
        svc_conn_close(s, s->conns, "service stopping");
    job_cancel(s, 0, NULL); /* the start-up check, if still running */
    svc_store_free(s);
    for (uint32_t i = 0; i < s->nparts; i++) {
        svc_part_t *p = &s->part[i];
        if (!p->mounted)
            continue;
        int err = fs_unmount(&p->fs);
        if (err) {
            log_part(s, "unmount failed:", p, err);
            if (!first)
                first = err;
        } else {
            log_part(s, "unmounted", p, 0);
        }
    }
    if (s->cfg.dev && s->cfg.dev->sync) {
        int err = s->cfg.dev->sync(s->cfg.dev);
        if (err && !first)
            first = err;
    }
    svc_init(s);
    return first;
}

size_t svc_conn_input(svc_conn_t *c, const void *bytes, size_t len)
{
    if (c->closing || c->abort || c->eof)
        return 0;
    return codec_parser_feed(&c->in, bytes, len);
}

uint32_t svc_conn_input_space(svc_conn_t *c, uint8_t **dst)
{
    if (c->closing || c->abort || c->eof) {
        *dst = NULL;
        return 0;
    }
    return codec_parser_space(&c->in, dst);
}

void svc_conn_input_commit(svc_conn_t *c, uint32_t n)
{
    codec_parser_commit(&c->in, n);
}

void svc_conn_input_eof(svc_conn_t *c)
{
    c->eof = 1;
}

static uint32_t out_free(const svc_conn_t *c)
{
    return SVC_OUT_BYTES - (c->out_end - c->out_start);
}

/* Make `need` contiguous bytes free at the end of the output queue. */
static bool out_room(svc_conn_t *c, uint32_t need)
{
    if (SVC_OUT_BYTES - c->out_end >= need)
        return true;
    if (c->out_start) {
        memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
        c->out_end -= c->out_start;
        c->out_start = 0;
    }
    return SVC_OUT_BYTES - c->out_end >= need;
}

bool svc_conn_want_read(const svc_conn_t *c)
{
    if (c->closing || c->abort || c->eof || c->in.err)
        return false;
    if (c->in.len >= c->in.cap)
        return false;
    return out_free(c) >= CODEC_BUF_MIN;
}

size_t svc_conn_output(svc_conn_t *c, const uint8_t **ptr, size_t *len)
{
    *ptr = c->out + c->out_start;
    *len = c->out_end - c->out_start;
    return *len;
}

void svc_conn_consumed(svc_conn_t *c, size_t n)
{
    size_t have = c->out_end - c->out_start;
    if (n > have)
        n = have;
    c->out_start += (uint32_t)n;
    if (c->out_start == c->out_end)
        c->out_start = c->out_end = 0;
}

bool svc_conn_done(svc_conn_t *c)
{
    if (c->abort)
        return true;
    bool drained = c->out_end == c->out_start;
    if (c->closing)
        return drained;
    if (c->eof && drained) {
        if (c->svc && c->svc->job.kind && c->svc->job.conn == c)
            return false; /* its long request is still running */
        const uint8_t *f;
        uint32_t n;
        return codec_parser_next(&c->in, &f, &n) == 0;
    }
    return false;
}

void svc_conn_shutdown(svc_conn_t *c, const char *why)
{
    if (!c->closing) {
        c->closing = 1;
        c->close_reason = why;
    }
}

/* ---- replies ------------------------------------------------------------------ */

static void resp_reset(svc_t *s, uint32_t id)
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

/* "<op> handle N "<path>": <why>" */
int svc_fail_handle(svc_t *s, int err, const svc_handle_t *h,
                       const char *why)
{
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, " handle ");
    svc_sb_u64(&b, h->id);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, h->path);
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, why ? why : svc_reason(err));
    return err;
}

/* Queue the reply in s->resp. The caller made sure there is room. */
static void resp_send(svc_t *s, svc_conn_t *c)
{
    int n = codec_encode_response(&s->resp, c->out + c->out_end,
                                  SVC_OUT_BYTES - c->out_end);
    if (n < 0) {
        /* Cannot happen with the proto's caps; answer something anyway. */
        uint32_t id = s->resp.id;
        resp_reset(s, id);
        (void)svc_fail(s, -(int)cellar_Code_EIO, "reply does not encode");
        n = codec_encode_response(&s->resp, c->out + c->out_end,
                                  SVC_OUT_BYTES - c->out_end);
        if (n < 0) {
            c->abort = 1;
            return;
        }
    }
    c->out_end += (uint32_t)n;
}

int svc_reject_conn(svc_t *s, uint8_t *out, size_t cap)
{
    resp_reset(s, 0);
    s->resp.has_error = true;
    s->resp.error.code = cellar_Code_ENOMEM;
    strcpy(s->resp.error.message,
           "connect: too many connections to this device; try again later");
    return codec_encode_response(&s->resp, out, cap);
}

/* ---- paths -------------------------------------------------------------------- */

static int part_index(const svc_t *s, const char *name, size_t n)
{
    for (uint32_t i = 0; i < s->nparts; i++)
        if (strlen(s->part[i].name) == n &&
            memcmp(s->part[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

/* Validate and normalise a request path (see docs/PROTOCOL.md, "Paths").
 * Returns 0, or a negative error with the error reply set. */
int svc_resolve(svc_t *s, const char *in, svc_path_t *out)
{
    size_t len = strlen(in);
    const uint8_t *u = (const uint8_t *)in;

    memset(out, 0, sizeof(*out));
    if (len > SVC_MAX_PATH) {
        sb_t b = svc_err_begin(s, FS_ERR_NAMETOOLONG);
        svc_sb_str(&b, " ");
        svc_sb_quoted(&b, in, 40);
        svc_sb_str(&b, ": path is ");
        svc_sb_u64(&b, len);
        svc_sb_str(&b, " bytes, the limit is 255");
        return FS_ERR_NAMETOOLONG;
    }
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq(u + i, len - i);
        if (!k)
            return svc_fail_path(s, FS_ERR_INVAL, in, "path is not valid UTF-8");
        i += k;
    }

    /* Walk the components. */
    size_t i = 0;
    bool absolute = len > 0 && in[0] == '/';
    int part = absolute ? -1 : 0; /* relative paths live in /usr */
    size_t fn = 0;
    bool first = true;
    while (i < len) {
        while (i < len && in[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t st = i;
        while (i < len && in[i] != '/')
            i++;
        size_t cl = i - st;
        const char *comp = in + st;
        if ((cl == 1 && comp[0] == '.') ||
            (cl == 2 && comp[0] == '.' && comp[1] == '.'))
            return svc_fail_path(s, FS_ERR_INVAL, in,
                             cl == 1 ? "\".\" components are not allowed"
                                     : "\"..\" components are not allowed");
        if (absolute && first) {
            part = part_index(s, comp, cl);
            if (part < 0) {
                sb_t b = svc_err_begin(s, FS_ERR_NOENT);
                svc_sb_str(&b, " ");
                svc_sb_qstr(&b, in);
                svc_sb_str(&b, ": no such partition ");
                svc_sb_quoted(&b, comp, cl);
                svc_sb_str(&b, " (\"/\" holds only /usr and /bak)");
                return FS_ERR_NOENT;
            }
            first = false;
            continue;
        }
        first = false;
        if (fn + 1 + cl > SVC_MAX_PATH)
            return svc_fail_path(s, FS_ERR_NAMETOOLONG, in,
                             "path is longer than 255 bytes inside its "
                             "partition");
        out->fs[fn++] = '/';
        memcpy(out->fs + fn, comp, cl);
        fn += cl;
    }
    if (fn == 0)
        out->fs[fn++] = '/';
    out->fs[fn] = 0;
    out->part = part;
    if (part >= 0 && strncmp(out->fs, MAN_DIR, sizeof(MAN_DIR) - 1) == 0 &&
        (out->fs[sizeof(MAN_DIR) - 1] == 0 ||
         out->fs[sizeof(MAN_DIR) - 1] == '/'))
        return svc_fail_path(s, -(int)cellar_Code_EACCES, in,
                             "\"" MAN_DIR "\" is reserved for the service "
                             "(manifest, staging)");
    if (part < 0) {
        strcpy(out->show, "/");
    } else {
        size_t pn = strlen(s->part[part].name);
        out->show[0] = '/';
        memcpy(out->show + 1, s->part[part].name, pn);
        if (fn == 1) {
            out->show[1 + pn] = 0;
        } else {
            memcpy(out->show + 1 + pn, out->fs, fn + 1);
        }
    }
    return 0;
}

bool svc_is_part_root(const svc_path_t *p)
{
    return p->part >= 0 && p->fs[0] == '/' && p->fs[1] == 0;
}

/* The mounted fs of a resolved path (part >= 0), or NULL with an error. */
fs_t *svc_path_fs(svc_t *s, const svc_path_t *p)
{
    svc_part_t *pt = &s->part[p->part];
    if (!pt->mounted) {
        (void)svc_fail_path(s, FS_ERR_IO, p->show, "partition is not mounted");
        return NULL;
    }
    return &pt->fs;
}

/* Refuse writes through file RPCs on a read-only partition. */
int svc_check_writable(svc_t *s, const svc_path_t *p)
{
    if (p->part >= 0 && !s->part[p->part].read_only) {
        svc_part_t *pt = &s->part[p->part];
        if (pt->state == SVC_PART_FULL && !svc_store_retry(s, (uint32_t)p->part))
            return svc_fail_path(s, FS_ERR_NOSPC, p->show,
                                 "the partition is too full for the "
                                 "service's bookkeeping: remove files first");
        if (pt->state == SVC_PART_NO_MANIFEST &&
            !svc_store_retry(s, (uint32_t)p->part))
            return svc_fail_path(s, FS_ERR_IO, p->show,
                                 "the partition's manifest cannot be used: "
                                 "remove files or format it");
    }
    if (p->part >= 0 && s->part[p->part].read_only) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EACCES);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, p->show);
        svc_sb_str(&b, ": partition /");
        svc_sb_str(&b, s->part[p->part].name);
        svc_sb_str(&b, " is read-only");
        return -(int)cellar_Code_EACCES;
    }
    return 0;
}

/* ---- handles ---------------------------------------------------------------------- */

/* An fs_file_open failure: the device-wide table of open files (FS_MAX_OPEN
 * per partition, every connection's handles and the file Hash or Truncate
 * opens for the request) is named as such. */
int svc_fail_open(svc_t *s, int err, const char *show)
{
    return svc_fail_path(s, err, show,
                     err == FS_ERR_NOMEM ? "too many files open on the device"
                                         : NULL);
}

static svc_handle_t *handle_get(svc_t *s, svc_conn_t *c, uint32_t id)
{
    uint32_t slot = (id & 15u) - 1u;
    if (id != 0 && slot < SVC_MAX_HANDLES && c->h[slot].id == id) {
        c->h[slot].last_ms = s->now_ms;
        if (!s->part[c->h[slot].part].mounted) {
            (void)svc_fail_handle(s, FS_ERR_IO, &c->h[slot],
                              "partition is not mounted");
            return NULL;
        }
        return &c->h[slot];
    }
    sb_t b = svc_err_begin(s, FS_ERR_BADF);
    svc_sb_str(&b, " handle ");
    svc_sb_u64(&b, id);
    svc_sb_str(&b, ": no such open handle on this connection");
    return NULL;
}

static fs_t *hfs(svc_t *s, const svc_handle_t *h)
{
    return &s->part[h->part].fs;
}

/* ---- requests ---------------------------------------------------------------------- */

/* Copy a NUL-terminated string into a fixed field, cut to fit. */
void svc_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void fill_info(cellar_FileInfo *fi, const char *name,
                      const fs_stat_t *st)
{
    svc_copy_str(fi->name, sizeof(fi->name), name);
    fi->type = st->type == FS_TYPE_DIR ? cellar_FileType_DIR
                                       : cellar_FileType_FILE;
    fi->size = st->type == FS_TYPE_DIR ? 0 : st->size;
    fi->ctime = st->ctime;
    fi->mtime = st->mtime;
}

static int do_hello(svc_t *s, svc_conn_t *c, const cellar_HelloRequest *r)
{
    cellar_HelloReply *o = &s->resp.body.hello;
    const flash_dev_t *dev = s->cfg.dev;
    s->resp.which_body = cellar_Response_hello_tag;
    o->version = CODEC_PROTOCOL_VERSION;
    svc_copy_str(o->device, sizeof(o->device), s->cfg.device_id);
    svc_copy_str(o->firmware, sizeof(o->firmware), s->cfg.firmware);
    o->max_frame = CODEC_MAX_FRAME;
    o->max_inflight = SVC_MAX_INFLIGHT;
    o->max_path = SVC_MAX_PATH;
    o->max_chunk = SVC_MAX_CHUNK;
    o->max_handles = SVC_MAX_HANDLES;
    o->block_size = dev->block_size;
    o->block_count = dev->block_count;
    o->page_size = dev->page_size;
    o->partitions_count = 0;
    for (uint32_t i = 0; i < s->nparts && i < 4; i++) {
        cellar_Partition *p = &o->partitions[o->partitions_count++];
        p->path[0] = '/';
        svc_copy_str(p->path + 1, sizeof(p->path) - 1, s->part[i].name);
        p->first_block = s->part[i].cfg.first_block;
        p->block_count = s->part[i].cfg.block_count;
        p->read_only = s->part[i].read_only;
        p->state = (cellar_PartState)s->part[i].state;
    }
    for (uint32_t i = 0; i < s->nproblems && i < 8; i++)
        svc_copy_str(o->problems[o->problems_count++],
                     sizeof(o->problems[0]), s->problems[i]);
    if (s->cfg.log) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "hello from ");
        svc_sb_qstr(&b, r->client);
        svc_sb_str(&b, " (protocol ");
        svc_sb_u64(&b, r->version);
        svc_sb_str(&b, ")");
        svc_log_end(s);
    }
    return 0;
}

static int do_ping(svc_t *s, const cellar_PingRequest *r)
{
    s->resp.which_body = cellar_Response_ping_tag;
    s->resp.body.ping.payload.size = r->payload.size;
    memcpy(s->resp.body.ping.payload.bytes, r->payload.bytes,
           r->payload.size);
    return 0;
}

static int do_stat(svc_t *s, const cellar_StatRequest *r)
{
    svc_path_t *p = &s->pa;
    fs_stat_t st;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    memset(&st, 0, sizeof(st));
    if (p->part < 0) {
        st.type = FS_TYPE_DIR;
    } else {
        fs_t *fs = svc_path_fs(s, p);
        if (!fs)
            return FS_ERR_IO;
        err = fs_stat(fs, p->fs, &st);
        if (err)
            return svc_fail_path(s, err, p->show, NULL);
    }
    s->resp.which_body = cellar_Response_stat_tag;
    s->resp.body.stat.has_info = true;
    fill_info(&s->resp.body.stat.info, p->show, &st);
    return 0;
}

static int do_list(svc_t *s, const cellar_ListRequest *r)
{
    svc_path_t *p = &s->pa;
    cellar_ListReply *o = &s->resp.body.list;
    uint32_t max = r->max_entries;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (max == 0 || max > SVC_LIST_MAX)
        max = SVC_LIST_MAX;
    s->resp.which_body = cellar_Response_list_tag;

    if (p->part < 0) { /* "/": the partitions */
        for (uint32_t i = r->cursor; i < s->nparts; i++) {
            if (o->entries_count == max) {
                o->next_cursor = i;
                break;
            }
            cellar_FileInfo *fi = &o->entries[o->entries_count++];
            fs_stat_t st = { .type = FS_TYPE_DIR };
            if (s->part[i].mounted)
                (void)fs_stat(&s->part[i].fs, "/", &st);
            fill_info(fi, s->part[i].name, &st);
        }
        return 0;
    }

    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;
    err = fs_dir_open(fs, &s->dir, p->fs);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    /* The cursor counts entries already returned: skip that many. */
    char *name = (char *)s->scratch;
    fs_stat_t st;
    uint32_t idx = 0;
    while (idx < r->cursor) {
        err = fs_dir_read(fs, &s->dir, name, FS_NAME_MAX + 1, &st);
        if (err <= 0)
            break;
        idx++;
    }
    if (err >= 0 && idx == r->cursor) {
        for (;;) {
            err = fs_dir_read(fs, &s->dir, name, FS_NAME_MAX + 1, &st);
            if (err <= 0)
                break;
            if (p->fs[1] == 0 && strcmp(name, &MAN_DIR[1]) == 0) {
                idx++; /* the service's own directory is not listed */
                continue;
            }
            if (o->entries_count == max) {
                o->next_cursor = idx; /* there is at least one more */
                break;
            }
            fill_info(&o->entries[o->entries_count++], name, &st);
            idx++;
        }
    }
    (void)fs_dir_close(fs, &s->dir);
    if (err < 0) {
        s->resp.which_body = 0;
        return svc_fail_path(s, err, p->show, NULL);
    }
    return 0;
}

static int do_open(svc_t *s, svc_conn_t *c, const cellar_OpenRequest *r)
{
    const uint32_t rw = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE;
    const uint32_t known = rw | cellar_OpenFlags_O_CREATE |
                           cellar_OpenFlags_O_EXCL | cellar_OpenFlags_O_TRUNC |
                           cellar_OpenFlags_O_APPEND;
    uint32_t fl = r->flags;
    svc_path_t *p = &s->pa;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (fl & ~known) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, p->show);
        svc_sb_str(&b, ": unknown open flags ");
        svc_sb_hex32(&b, fl & ~known);
        return FS_ERR_INVAL;
    }
    if (!(fl & rw))
        return svc_fail_path(s, FS_ERR_INVAL, p->show,
                         "open flags need O_READ and/or O_WRITE");
    if ((fl & ~rw) && !(fl & cellar_OpenFlags_O_WRITE))
        return svc_fail_path(s, FS_ERR_INVAL, p->show,
                         "O_CREATE, O_EXCL, O_TRUNC and O_APPEND need "
                         "O_WRITE");
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, FS_ERR_ISDIR, p->show, NULL);
    if ((fl & cellar_OpenFlags_O_WRITE) && (err = svc_check_writable(s, p)))
        return err;
    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;

    svc_handle_t *h = NULL;
    uint32_t slot;
    for (slot = 0; slot < SVC_MAX_HANDLES; slot++)
        if (!c->h[slot].id) {
            h = &c->h[slot];
            break;
        }
    if (!h)
        return svc_fail_path(s, FS_ERR_NOMEM, p->show,
                         "too many open handles on this connection "
                         "(max 8)");

    int ff = 0;
    if ((fl & rw) == rw)
        ff = FS_O_RDWR;
    else if (fl & cellar_OpenFlags_O_WRITE)
        ff = FS_O_WRONLY;
    else
        ff = FS_O_RDONLY;
    if (fl & cellar_OpenFlags_O_CREATE)
        ff |= FS_O_CREAT;
    if (fl & cellar_OpenFlags_O_EXCL)
        ff |= FS_O_EXCL;
    if (fl & cellar_OpenFlags_O_TRUNC)
        ff |= FS_O_TRUNC;
    if (fl & cellar_OpenFlags_O_APPEND)
        ff |= FS_O_APPEND;

    uint32_t used = 0;
    for (svc_conn_t *o = s->conns; o; o = o->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            used += o->h[k].id && o->h[k].part == (uint8_t)p->part;
    if (used >= SVC_DEVICE_HANDLES)
        return svc_fail_open(s, FS_ERR_NOMEM, p->show);
    memset(h, 0, sizeof(*h));
    if ((ff & FS_O_WRONLY) && s->part[p->part].has_man) {
        /* writes go to a shadow copy, published with its manifest entry
         * at close: the real name never holds a half-written file */
        err = svc_shadow_open(s, h, p, ff);
        if (err < 0) {
            memset(h, 0, sizeof(*h));
            return err;
        }
    } else if ((err = fs_file_open(fs, &h->file, p->fs, ff)) < 0) {
        memset(h, 0, sizeof(*h));
        return svc_fail_open(s, err, p->show);
    }
    int32_t size = fs_file_size(fs, &h->file);
    if (size < 0) {
        (void)fs_file_close(fs, &h->file);
        memset(h, 0, sizeof(*h));
        return svc_fail_path(s, size, p->show, NULL);
    }
    c->handle_seq = (c->handle_seq + 1) & 0x0fffffffu;
    if (!c->handle_seq)
        c->handle_seq = 1;
    h->id = c->handle_seq << 4 | (slot + 1);
    h->part = (uint8_t)p->part;
    h->readable = (fl & cellar_OpenFlags_O_READ) != 0;
    h->writable = (fl & cellar_OpenFlags_O_WRITE) != 0;
    h->append = (fl & cellar_OpenFlags_O_APPEND) != 0;
    h->last_ms = s->now_ms;
    memcpy(h->path, p->show, sizeof(h->path));
    s->resp.which_body = cellar_Response_open_tag;
    s->resp.body.open.handle = h->id;
    s->resp.body.open.size = (uint64_t)size;
    return 0;
}

static int do_read(svc_t *s, svc_conn_t *c, const cellar_ReadRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return FS_ERR_BADF;
    if (!h->readable)
        return svc_fail_handle(s, FS_ERR_BADF, h, "not open for reading");
    fs_t *fs = hfs(s, h);
    int32_t size = fs_file_size(fs, &h->file);
    if (size < 0)
        return svc_fail_handle(s, size, h, NULL);
    cellar_ReadReply *o = &s->resp.body.read;
    uint32_t want = r->length < SVC_MAX_CHUNK ? r->length : SVC_MAX_CHUNK;
    uint32_t got = 0;
    if (r->offset < (uint64_t)size) {
        uint32_t off = (uint32_t)r->offset;
        if (want > (uint32_t)size - off)
            want = (uint32_t)size - off;
        while (got < want) {
            int n = fs_file_pread(fs, &h->file, o->data.bytes + got,
                                  want - got, off + got);
            if (n < 0)
                return svc_fail_handle(s, n, h, NULL);
            if (n == 0)
                break;
            got += (uint32_t)n;
        }
    }
    s->resp.which_body = cellar_Response_read_tag;
    o->offset = r->offset;
    o->data.size = (pb_size_t)got;
    o->eof = r->offset + got >= (uint64_t)size;
    return 0;
}

static int do_write(svc_t *s, svc_conn_t *c, const cellar_WriteRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return FS_ERR_BADF;
    if (!h->writable)
        return svc_fail_handle(s, FS_ERR_BADF, h, "not open for writing");
    fs_t *fs = hfs(s, h);
    uint32_t len = r->data.size;
    uint64_t off = r->offset;
    int n;
    if (h->append) {
        int32_t size = fs_file_size(fs, &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        off = (uint64_t)size;
        if (len > FS_FILE_MAX - off)
            return svc_fail_handle(s, FS_ERR_FBIG, h, NULL);
        if (len && svc_room(s, h->part, len, h->path))
            return FS_ERR_NOSPC;
        n = fs_file_pwrite(fs, &h->file, r->data.bytes, len, (uint32_t)off);
    } else {
        if (off > FS_FILE_MAX || len > FS_FILE_MAX - off)
            return svc_fail_handle(s, FS_ERR_FBIG, h, NULL);
        /* growth counts in full, a hole included: refused up front when
         * the partition could not store it (docs/PROTOCOL.md, Write) */
        int32_t size = fs_file_size(fs, &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        if (len && off + len > (uint64_t)size &&
            svc_room(s, h->part, off + len - (uint64_t)size, h->path))
            return FS_ERR_NOSPC;
        n = fs_file_pwrite(fs, &h->file, r->data.bytes, len, (uint32_t)off);
    }
    if (n < 0)
        return svc_fail_handle(s, n, h, NULL);
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = off;
    s->resp.body.write.written = (uint32_t)n;
    return 0;
}

static int do_seek(svc_t *s, svc_conn_t *c, const cellar_SeekRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return FS_ERR_BADF;
    if (r->whence > 2)
        return svc_fail_handle(s, FS_ERR_INVAL, h,
                           "whence must be 0 (set), 1 (cur) or 2 (end)");
    if (r->offset > INT32_MAX || r->offset < -(int64_t)INT32_MAX)
        return svc_fail_handle(s, FS_ERR_INVAL, h, "offset out of range");
    fs_t *fs = hfs(s, h);
    int32_t pos = fs_file_seek(fs, &h->file, (int32_t)r->offset,
                               (int)r->whence);
    if (pos < 0)
        return svc_fail_handle(s, pos, h, NULL);
    int32_t size = fs_file_size(fs, &h->file);
    if (size < 0)
        return svc_fail_handle(s, size, h, NULL);
    s->resp.which_body = cellar_Response_seek_tag;
    s->resp.body.seek.position = (uint64_t)pos;
    s->resp.body.seek.size = (uint64_t)size;
    return 0;
}

void svc_reply_done(svc_t *s)
{
    s->resp.which_body = cellar_Response_done_tag;
}

static int do_truncate(svc_t *s, svc_conn_t *c,
                       const cellar_TruncateRequest *r)
{
    int err;
    if (r->handle) {
        svc_handle_t *h = handle_get(s, c, r->handle);
        if (!h)
            return FS_ERR_BADF;
        if (!h->writable)
            return svc_fail_handle(s, FS_ERR_BADF, h, "not open for writing");
        if (r->size > FS_FILE_MAX)
            return svc_fail_handle(s, FS_ERR_FBIG, h, NULL);
        int32_t size = fs_file_size(hfs(s, h), &h->file);
        if (size < 0)
            return svc_fail_handle(s, size, h, NULL);
        if (r->size > (uint64_t)size &&
            svc_room(s, h->part, r->size - (uint64_t)size, h->path))
            return FS_ERR_NOSPC;
        err = fs_file_truncate(hfs(s, h), &h->file, (uint32_t)r->size);
        if (err < 0)
            return svc_fail_handle(s, err, h, NULL);
        svc_reply_done(s);
        return 0;
    }
    svc_path_t *p = &s->pa;
    if ((err = svc_resolve(s, r->path, p)))
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, FS_ERR_ISDIR, p->show, NULL);
    if ((err = svc_check_writable(s, p)))
        return err;
    if (r->size > FS_FILE_MAX)
        return svc_fail_path(s, FS_ERR_FBIG, p->show, NULL);
    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;
    if (s->part[p->part].has_man) {
        if ((err = svc_shadow_truncate(s, p, (uint32_t)r->size)))
            return err;
        svc_reply_done(s);
        return 0;
    }
    err = fs_file_open(fs, &s->tmpfile, p->fs, FS_O_WRONLY);
    if (err < 0)
        return svc_fail_open(s, err, p->show);
    err = fs_file_truncate(fs, &s->tmpfile, (uint32_t)r->size);
    int err2 = fs_file_close(fs, &s->tmpfile);
    if (err >= 0)
        err = err2;
    if (err < 0)
        return svc_fail_path(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_sync(svc_t *s, svc_conn_t *c, const cellar_SyncRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return FS_ERR_BADF;
    /* With a shadow, the data becomes durable there; it is published (made
     * visible under its name, with its manifest entry) at Close. */
    int err = fs_file_sync(hfs(s, h), &h->file);
    if (err < 0)
        return svc_fail_handle(s, err, h, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_close(svc_t *s, svc_conn_t *c, const cellar_CloseRequest *r)
{
    svc_handle_t *h = handle_get(s, c, r->handle);
    if (!h)
        return FS_ERR_BADF;
    if (h->shadow) {
        int err = svc_shadow_publish(s, h);
        memset(h, 0, sizeof(*h));
        if (err < 0)
            return err;
        svc_reply_done(s);
        return 0;
    }
    int err = fs_file_close(hfs(s, h), &h->file);
    if (err < 0) {
        /* The handle is gone either way; report why the data may not be. */
        (void)svc_fail_handle(s, err, h, NULL);
        memset(h, 0, sizeof(*h));
        return err;
    }
    memset(h, 0, sizeof(*h));
    svc_reply_done(s);
    return 0;
}

static int do_remove(svc_t *s, const char *path, bool dir_only)
{
    svc_path_t *p = &s->pa;
    int err = svc_resolve(s, path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, FS_ERR_PERM, p->show,
                         p->part < 0 ? "the root cannot be removed"
                                     : "a partition cannot be removed");
    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;
    svc_part_t *pt = &s->part[p->part];
    if (!pt->read_only && (pt->state == SVC_PART_FULL ||
                           pt->state == SVC_PART_NO_MANIFEST)) {
        /* too full for bookkeeping: a removal frees space first, then the
         * manifest gets its entry dropped once it is writable again */
        err = dir_only ? fs_rmdir(fs, p->fs) : fs_remove(fs, p->fs);
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        if (!dir_only && svc_store_retry(s, (uint32_t)p->part))
            (void)svc_man_remove(s, p);
        svc_reply_done(s);
        return 0;
    }
    if ((err = svc_check_writable(s, p)))
        return err;
    if (dir_only)
        err = fs_rmdir(fs, p->fs);
    else if (s->part[p->part].has_man)
        err = svc_man_remove(s, p); /* the file and its manifest entry */
    else
        err = fs_remove(fs, p->fs);
    if (err < 0)
        return svc_fail_path(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

/* Mkdir's own answer when the partition has no room (0: none, the room is
 * the answer): a path that exists, a file in the way, a missing parent;
 * done for mkdir -p of a directory that is there. */
static int mkdir_own_answer(svc_t *s, fs_t *fs, const svc_path_t *p,
                            bool parents)
{
    fs_stat_t st;
    int e2 = fs_stat(fs, p->fs, &st);
    if (e2 == 0 && parents && st.type == FS_TYPE_DIR) {
        svc_reply_done(s);
        return 1;
    }
    if (e2 == 0)
        return svc_fail_path(s, st.type == FS_TYPE_DIR || !parents
                                    ? FS_ERR_EXIST : FS_ERR_NOTDIR,
                             p->show, NULL);
    if (e2 == FS_ERR_NOENT && !parents) {
        char *up = (char *)s->scratch;
        size_t n = strlen(p->fs);
        while (n > 1 && p->fs[n - 1] != '/')
            n--;
        n = n > 1 ? n - 1 : 1;
        memcpy(up, p->fs, n);
        up[n] = 0;
        e2 = fs_stat(fs, up, &st);
        if (e2 == 0 && st.type != FS_TYPE_DIR)
            e2 = FS_ERR_NOTDIR;
    }
    if (e2 == FS_ERR_NOTDIR || (e2 == FS_ERR_NOENT && !parents))
        return svc_fail_path(s, e2, p->show, NULL);
    return 0;
}

static int do_mkdir(svc_t *s, const cellar_MkdirRequest *r)
{
    svc_path_t *p = &s->pa;
    fs_stat_t st;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p)) {
        if (r->parents) {
            svc_reply_done(s);
            return 0;
        }
        return svc_fail_path(s, FS_ERR_EXIST, p->show, NULL);
    }
    if ((err = svc_check_writable(s, p)))
        return err;
    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;
    /* a directory claims 64 bytes and a record or two: the room kept for
     * the service's bookkeeping is not for new directories */
    if ((err = svc_room(s, (uint32_t)p->part, 4096, p->show))) {
        /* the request's own answer comes first */
        int own = mkdir_own_answer(s, fs, p, r->parents);
        return own == 1 ? 0 : own ? own : err;
    }
    if (!r->parents) {
        err = fs_mkdir(fs, p->fs);
        if (err == FS_ERR_NOSPC) {
            int own = mkdir_own_answer(s, fs, p, false);
            if (own)
                return own;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        svc_reply_done(s);
        return 0;
    }
    /* With parents: check every prefix first, so a path through a file
     * fails before anything is created; then create what is missing. */
    char *pre = (char *)s->scratch;
    size_t n = strlen(p->fs);
    size_t first_missing = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p->fs[i] != '/')
            continue;
        memcpy(pre, p->fs, i);
        pre[i] = 0;
        err = fs_stat(fs, pre, &st);
        if (err == FS_ERR_NOENT) {
            first_missing = i;
            break;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        if (st.type != FS_TYPE_DIR)
            return svc_fail_path(s, FS_ERR_NOTDIR, p->show,
                             "a component is a file, not a directory");
    }
    if (first_missing) {
        for (size_t i = first_missing; i <= n; i++) {
            if (i < n && p->fs[i] != '/')
                continue;
            memcpy(pre, p->fs, i);
            pre[i] = 0;
            err = fs_mkdir(fs, pre);
            if (err < 0 && err != FS_ERR_EXIST)
                return svc_fail_path(s, err, p->show, NULL);
        }
    }
    svc_reply_done(s);
    return 0;
}

/* After a rename: the handles on what moved follow it (they hold the
 * file, not the name), so the checks by path (an update's busy check,
 * Restore and repair closing readers) find them under the new name. A
 * shadow writer publishes to the name it was opened with and stays. */
static void handles_follow(svc_t *s, int part, const char *from,
                           const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (!h->id || h->shadow || h->part != (uint8_t)part ||
                strncmp(h->path, from, fl) != 0 ||
                (h->path[fl] != 0 && h->path[fl] != '/'))
                continue;
            size_t rest = strlen(h->path + fl);
            if (tl + rest >= sizeof(h->path))
                continue;
            memmove(h->path + tl, h->path + fl, rest + 1);
            memcpy(h->path, to, tl);
        }
}

static int do_rename(svc_t *s, const cellar_RenameRequest *r)
{
    svc_path_t *a = &s->pa, *b = &s->pb;
    int err;
    if ((err = svc_resolve(s, r->from, a)) || (err = svc_resolve(s, r->to, b)))
        return err;
    if (a->part < 0 || svc_is_part_root(a))
        return svc_fail_path(s, FS_ERR_PERM, a->show,
                         "a partition cannot be renamed");
    if (b->part < 0 || svc_is_part_root(b))
        return svc_fail_path(s, FS_ERR_PERM, b->show,
                         "a partition cannot be replaced");
    if ((err = svc_check_writable(s, a)) || (err = svc_check_writable(s, b)))
        return err;
    if (a->part != b->part) {
        sb_t m = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&m, " ");
        svc_sb_qstr(&m, a->show);
        svc_sb_str(&m, " to ");
        svc_sb_qstr(&m, b->show);
        svc_sb_str(&m, ": cannot rename across partitions");
        return FS_ERR_INVAL;
    }
    fs_t *fs = svc_path_fs(s, a);
    if (!fs)
        return FS_ERR_IO;
    err = s->part[a->part].has_man ? svc_man_rename(s, a, b)
                                   : fs_rename(fs, a->fs, b->fs);
    if (err < 0) {
        sb_t m = svc_err_begin(s, err);
        svc_sb_str(&m, " ");
        svc_sb_qstr(&m, a->show);
        svc_sb_str(&m, " to ");
        svc_sb_qstr(&m, b->show);
        svc_sb_str(&m, ": ");
        svc_sb_str(&m, svc_reason(err));
        return err;
    }
    handles_follow(s, a->part, a->show, b->show);
    svc_reply_done(s);
    return 0;
}

static void statfs_add(cellar_StatFsReply *o, const fs_statvfs_t *v,
                       bool first)
{
    o->total += v->total;
    o->used += v->used;
    o->free += v->free;
    o->reclaimable += v->reclaimable;
    o->live += v->live;
    o->files += v->files;
    o->dirs += v->dirs;
    o->bad_blocks += v->bad_blocks;
    o->block_size = v->block_size;
    if (first || v->erase_max > o->erase_max)
        o->erase_max = v->erase_max;
    if (first || v->erase_min < o->erase_min)
        o->erase_min = v->erase_min;
    /* mean over blocks of all partitions summed so far */
    uint64_t sum = (uint64_t)o->erase_mean * o->block_count +
                   (uint64_t)v->erase_mean * v->block_count;
    o->block_count += v->block_count;
    o->erase_mean = o->block_count ? (uint32_t)(sum / o->block_count) : 0;
}

static int do_statfs(svc_t *s, const cellar_StatFsRequest *r)
{
    svc_path_t *p = &s->pa;
    fs_statvfs_t v;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    cellar_StatFsReply *o = &s->resp.body.statfs;
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (p->part >= 0 && (uint32_t)p->part != i)
            continue;
        svc_path_t q = *p;
        q.part = (int)i;
        if (p->part < 0 && !s->part[i].mounted)
            continue; /* "/": what is served (Hello says what is not) */
        fs_t *fs = svc_path_fs(s, &q);
        if (!fs)
            return FS_ERR_IO;
        err = fs_statvfs(fs, &v);
        uint32_t of, od;
        if (err == 0 && s->part[i].has_man && man_own_counts(fs, &of, &od) == 0 &&
            of <= v.files && od < v.dirs) {
            v.files -= of; /* the manifest and staging are not the user's */
            v.dirs -= od;
        }
        if (err < 0)
            return svc_fail_path(s, err, p->show, NULL);
        statfs_add(o, &v, o->block_count == 0);
        if (!s->part[i].read_only && s->part[i].state == SVC_PART_OK)
            o->available += svc_room_bytes(s, i);
    }
    s->resp.which_body = cellar_Response_statfs_tag;
    return 0;
}

/* ---- long requests ------------------------------------------------------------- */

int svc_job_hash_begin(svc_t *s, uint32_t part, fs_file_t *fp, uint32_t off,
                       uint32_t len)
{
    svc_job_t *j = &s->job;
    j->part = (uint8_t)part;
    j->fp = fp;
    j->off = off;
    j->left = len;
    j->total = len;
    j->hashing = 1;
    csha_init(&j->sha);
    return csha_start(&j->sha) ? FS_ERR_IO : 0;
}

int svc_job_hash_step(svc_t *s, uint32_t *budget)
{
    svc_job_t *j = &s->job;
    fs_t *fs = &s->part[j->part].fs;
    while (j->left && *budget) {
        uint32_t want = j->left < sizeof(s->scratch) ? j->left
                                                     : (uint32_t)sizeof(s->scratch);
        if (want > *budget)
            want = *budget;
        int n = fs_file_pread(fs, j->fp, s->scratch, want, j->off);
        if (n < 0)
            return n;
        if (n == 0) /* shorter than its size said: corrupt */
            return FS_ERR_CORRUPT;
        if (csha_update(&j->sha, s->scratch, (size_t)n))
            return FS_ERR_IO;
        j->off += (uint32_t)n;
        j->left -= (uint32_t)n;
        *budget -= (uint32_t)n;
    }
    if (j->left)
        return 0;
    return csha_finish(&j->sha, j->digest) ? FS_ERR_IO : 1;
}

void svc_job_hash_end(svc_t *s)
{
    svc_job_t *j = &s->job;
    if (!j->hashing)
        return;
    if (j->fp == &j->f)
        (void)fs_file_close(&s->part[j->part].fs, &j->f);
    csha_free(&j->sha);
    j->fp = NULL;
    j->hashing = 0;
}

void svc_job_defer(svc_t *s, svc_conn_t *c)
{
    s->job.conn = c;
    s->job.req_id = s->resp.id;
    s->job.op = s->op;
    s->deferred = 1;
}

/* The end of a Hash: the reply in s->resp. */
static int hash_done(svc_t *s, int r)
{
    svc_job_t *j = &s->job;
    uint32_t total = j->total;
    svc_job_hash_end(s);
    j->kind = SVC_JOB_NONE;
    if (r < 0)
        return svc_fail_path(s, r, j->show, NULL);
    s->resp.which_body = cellar_Response_hash_tag;
    memcpy(s->resp.body.hash.sha256, j->digest, 32);
    s->resp.body.hash.length = total;
    return 0;
}

static int do_hash(svc_t *s, svc_conn_t *c, const cellar_HashRequest *r)
{
    svc_path_t *p = &s->pa;
    svc_job_t *j = &s->job;
    int err = svc_resolve(s, r->path, p);
    if (err)
        return err;
    if (p->part < 0 || svc_is_part_root(p))
        return svc_fail_path(s, FS_ERR_ISDIR, p->show, NULL);
    fs_t *fs = svc_path_fs(s, p);
    if (!fs)
        return FS_ERR_IO;
    /* A connection sees its own writes: a file it has open for writing is
     * hashed as that handle holds it (not yet published). */
    fs_file_t *f = &j->f;
    for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
        if (c->h[k].id && c->h[k].shadow && c->h[k].part == (uint8_t)p->part &&
            strcmp(c->h[k].path, p->show) == 0)
            f = &c->h[k].file;
    if (f == &j->f) {
        err = fs_file_open(fs, f, p->fs, FS_O_RDONLY);
        if (err < 0)
            return svc_fail_open(s, err, p->show);
    }
    int32_t size = fs_file_size(fs, f);
    if (size < 0 || r->offset > (uint64_t)size) {
        if (f == &j->f)
            (void)fs_file_close(fs, f);
        return size < 0 ? svc_fail_path(s, size, p->show, NULL)
                        : svc_fail_path(s, FS_ERR_INVAL, p->show,
                                        "offset is past the end of the file");
    }
    uint32_t off = (uint32_t)r->offset;
    uint32_t left = (uint32_t)size - off;
    if (r->length && r->length < left)
        left = (uint32_t)r->length;
    svc_copy_str(j->show, sizeof(j->show), p->show);
    j->kind = SVC_JOB_HASH;
    err = svc_job_hash_begin(s, (uint32_t)p->part, f, off, left);
    uint32_t budget = SVC_JOB_STEP_BYTES;
    int rr = err ? err : svc_job_hash_step(s, &budget);
    if (rr != 0)
        return hash_done(s, rr);
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

/* One step of the job; sends its reply when it is done. */
static void log_failure(svc_t *s, svc_conn_t *c);
static void resp_send(svc_t *s, svc_conn_t *c);

static void job_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    j->steps++;
    if (j->conn) { /* its connection (and a handle it hashes) is busy */
        j->conn->last_ms = s->now_ms;
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (j->fp == &j->conn->h[k].file)
                j->conn->h[k].last_ms = s->now_ms;
    }
    resp_reset(s, j->req_id);
    s->op = j->op;
    int done;
    if (j->kind == SVC_JOB_HASH) {
        uint32_t budget = SVC_JOB_STEP_BYTES;
        int r = svc_job_hash_step(s, &budget);
        done = r != 0;
        if (done)
            (void)hash_done(s, r);
    } else {
        done = svc_update_job_step(s);
    }
    if (!done)
        return;
    svc_conn_t *c = j->conn;
    j->kind = SVC_JOB_NONE;
    j->conn = NULL;
    if (!c)
        return;
    if (s->resp.has_error) {
        s->resp.which_body = 0;
        c->errors++;
        log_failure(s, c);
    }
    resp_send(s, c);
}

static void job_cancel(svc_t *s, int err, const char *why)
{
    svc_job_t *j = &s->job;
    if (!j->kind)
        return;
    svc_job_hash_end(s);
    svc_conn_t *c = j->conn;
    if (j->kind == SVC_JOB_CHECK)
        svc_log_msg(s, NULL, "check of /usr: stopped before the end");
    j->kind = SVC_JOB_NONE;
    j->conn = NULL;
    if (!c || !why)
        return;
    resp_reset(s, j->req_id);
    s->op = j->op;
    (void)svc_fail(s, err, why);
    c->errors++;
    log_failure(s, c);
    resp_send(s, c);
}

static int format_part(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    /* a long request reads the partition (or its manifest): it ends */
    job_cancel(s, FS_ERR_IO, "cancelled: a partition was formatted");
    /* Every handle on the partition, of every connection, goes first. */
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (c->h[k].id && c->h[k].part == i)
                svc_handle_release(s, &c->h[k]);
    if (p->mounted) {
        svc_store_detach(s, i);
        (void)fs_unmount(&p->fs);
    }
    p->mounted = 0;
    log_part(s, "formatting", p, 0);
    svc_problems_forget(s, i);
    p->state = SVC_PART_UNMOUNTED;
    int err = fs_format(&p->fs, &p->cfg);
    if (!err)
        err = fs_mount(&p->fs, &p->cfg);
    if (err) {
        log_part(s, "format failed:", p, err);
        return err;
    }
    p->mounted = 1;
    return svc_store_attach(s, i);
}

static int do_format(svc_t *s, const cellar_FormatRequest *r)
{
    const char *w = r->partition;
    int which; /* partition index, or -1 for all */
    if (w[0] == '/')
        w++;
    if (strcmp(w, "*") == 0)
        which = -1;
    else if (w[0] == 0)
        which = 0;
    else if ((which = part_index(s, w, strlen(w))) < 0)
        return svc_fail_path(s, FS_ERR_NOENT, r->partition,
                         "no such partition (use \"/usr\", \"/bak\" or "
                         "\"*\" for all)");
    if (!r->confirm)
        return svc_fail_path(s, FS_ERR_INVAL,
                         which < 0 ? "*" : s->part[which].name,
                         "confirm must be true: format erases every file");
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (which >= 0 && (uint32_t)which != i)
            continue;
        int err = format_part(s, i);
        if (err) {
            char nm[LAYOUT_NAME_MAX + 2] = "/";
            strcpy(nm + 1, s->part[i].name);
            return svc_fail_path(s, err, nm, NULL);
        }
    }
    svc_reply_done(s);
    return 0;
}

/* ---- dispatch -------------------------------------------------------------------------- */

static const char *op_name(uint32_t tag)
{
    switch (tag) {
    case cellar_Request_hello_tag: return "hello";
    case cellar_Request_ping_tag: return "ping";
    case cellar_Request_stat_tag: return "stat";
    case cellar_Request_list_tag: return "list";
    case cellar_Request_open_tag: return "open";
    case cellar_Request_read_tag: return "read";
    case cellar_Request_write_tag: return "write";
    case cellar_Request_seek_tag: return "seek";
    case cellar_Request_truncate_tag: return "truncate";
    case cellar_Request_close_tag: return "close";
    case cellar_Request_remove_tag: return "remove";
    case cellar_Request_mkdir_tag: return "mkdir";
    case cellar_Request_rmdir_tag: return "rmdir";
    case cellar_Request_rename_tag: return "rename";
    case cellar_Request_statfs_tag: return "statfs";
    case cellar_Request_hash_tag: return "hash";
    case cellar_Request_format_tag: return "format";
    case cellar_Request_sync_tag: return "sync";
    case cellar_Request_manifest_tag: return "manifest";
    case cellar_Request_manifest_import_tag: return "manifest import";
    case cellar_Request_verify_tag: return "verify";
    case cellar_Request_update_begin_tag: return "update begin";
    case cellar_Request_update_declare_tag: return "update declare";
    case cellar_Request_update_write_tag: return "update write";
    case cellar_Request_update_commit_tag: return "update commit";
    case cellar_Request_update_abort_tag: return "update abort";
    case cellar_Request_backup_tag: return "backup";
    case cellar_Request_restore_tag: return "restore";
    default: return "request";
    }
}

/* The name, error and wording of a request field the scan found too
 * long or too many: every field names itself and its limit. */
typedef struct field_rule {
    const char *name;   /* "path", "bundle id" */
    int err;            /* the error for an overflow */
    const char *limit;  /* NULL = "the limit is <cap>" */
    bool text;          /* show the start of the value */
} field_rule_t;

static field_rule_t field_rule(const codec_scan_t *sc)
{
    const pb_msgdesc_t *m = sc->problem_msg;
    uint32_t t = sc->problem_tag;
    const int msgsize = -(int)cellar_Code_EMSGSIZE;
    if (sc->problem == CODEC_SCAN_COUNT) {
        bool paths = m == &cellar_BackupRequest_msg ||
                     m == &cellar_RestoreRequest_msg;
        return (field_rule_t){ paths ? "paths" : "entries", FS_ERR_INVAL,
                               NULL, false };
    }
    if (m == &cellar_HelloRequest_msg)
        return (field_rule_t){ "client name", msgsize, NULL, true };
    if (m == &cellar_PingRequest_msg)
        return (field_rule_t){ "payload", msgsize, NULL, false };
    if (m == &cellar_WriteRequest_msg || m == &cellar_UpdateWriteRequest_msg)
        return (field_rule_t){ "data", msgsize, "the limit is max_chunk (16384)",
                               false };
    if ((m == &cellar_UpdateBeginRequest_msg ||
         m == &cellar_UpdateDeclareRequest_msg ||
         m == &cellar_UpdateCommitRequest_msg ||
         m == &cellar_UpdateAbortRequest_msg) && t == 1)
        return (field_rule_t){ "bundle id", FS_ERR_INVAL,
                               "it must be 32 bytes", false };
    if ((m == &cellar_BundleEntry_msg || m == &cellar_ManifestEntry_msg) &&
        t == 3)
        return (field_rule_t){ "sha256", FS_ERR_INVAL, "it must be 32 bytes",
                               false };
    if (m == &cellar_FormatRequest_msg || m == &cellar_ManifestRequest_msg ||
        m == &cellar_VerifyRequest_msg)
        return (field_rule_t){ "partition name", FS_ERR_NAMETOOLONG, NULL,
                               true };
    return (field_rule_t){ "path", FS_ERR_NAMETOOLONG, NULL, true };
}

/* A field the scan found bad: answer before decoding. */
static int scan_problem(svc_t *s)
{
    const codec_scan_t *sc = &s->scan;
    uint32_t body = sc->body_tag;
    sb_t b;
    if (sc->problem == CODEC_SCAN_NUL) {
        b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, sc->prefix);
        svc_sb_str(&b, body == cellar_Request_hello_tag
                       ? ": client name contains a NUL byte"
                       : ": path contains a NUL byte");
        return FS_ERR_INVAL;
    }
    field_rule_t r = field_rule(sc);
    b = svc_err_begin(s, r.err);
    if (r.text) {
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, sc->prefix);
    }
    svc_sb_str(&b, ": ");
    if (sc->problem_item >= 0 && sc->problem != CODEC_SCAN_COUNT) {
        svc_sb_str(&b, sc->problem_msg == &cellar_BundleEntry_msg ||
                       sc->problem_msg == &cellar_ManifestEntry_msg
                           ? "entries[" : "paths[");
        svc_sb_u64(&b, (uint64_t)sc->problem_item);
        svc_sb_str(&b, "].");
    }
    svc_sb_str(&b, r.name);
    svc_sb_str(&b, sc->problem == CODEC_SCAN_COUNT ? ": " : " is ");
    svc_sb_u64(&b, sc->problem_len);
    svc_sb_str(&b, sc->problem == CODEC_SCAN_COUNT ? " in one request, "
                                                   : " bytes, ");
    if (r.limit) {
        svc_sb_str(&b, r.limit);
    } else {
        svc_sb_str(&b, "the limit is ");
        svc_sb_u64(&b, sc->problem_cap);
    }
    return r.err;
}

static int dispatch(svc_t *s, svc_conn_t *c)
{
    cellar_Request *q = &s->req;
    switch (q->which_body) {
    case cellar_Request_hello_tag: return do_hello(s, c, &q->body.hello);
    case cellar_Request_ping_tag: return do_ping(s, &q->body.ping);
    case cellar_Request_stat_tag: return do_stat(s, &q->body.stat);
    case cellar_Request_list_tag: return do_list(s, &q->body.list);
    case cellar_Request_open_tag: return do_open(s, c, &q->body.open);
    case cellar_Request_read_tag: return do_read(s, c, &q->body.read);
    case cellar_Request_write_tag: return do_write(s, c, &q->body.write);
    case cellar_Request_seek_tag: return do_seek(s, c, &q->body.seek);
    case cellar_Request_truncate_tag:
        return do_truncate(s, c, &q->body.truncate);
    case cellar_Request_close_tag: return do_close(s, c, &q->body.close);
    case cellar_Request_remove_tag:
        return do_remove(s, q->body.remove.path, false);
    case cellar_Request_mkdir_tag: return do_mkdir(s, &q->body.mkdir);
    case cellar_Request_rmdir_tag:
        return do_remove(s, q->body.rmdir.path, true);
    case cellar_Request_rename_tag: return do_rename(s, &q->body.rename);
    case cellar_Request_statfs_tag: return do_statfs(s, &q->body.statfs);
    case cellar_Request_hash_tag: return do_hash(s, c, &q->body.hash);
    case cellar_Request_format_tag: return do_format(s, &q->body.format);
    case cellar_Request_sync_tag: return do_sync(s, c, &q->body.sync);
    case cellar_Request_manifest_tag:
        return svc_do_manifest(s, &q->body.manifest);
    case cellar_Request_manifest_import_tag:
        return svc_do_manifest_import(s, &q->body.manifest_import);
    case cellar_Request_verify_tag:
        return svc_do_verify(s, c, &q->body.verify);
    case cellar_Request_update_begin_tag:
        return svc_do_update_begin(s, c, &q->body.update_begin);
    case cellar_Request_update_declare_tag:
        return svc_do_update_declare(s, c, &q->body.update_declare);
    case cellar_Request_update_write_tag:
        return svc_do_update_write(s, c, &q->body.update_write);
    case cellar_Request_update_commit_tag:
        return svc_do_update_commit(s, c, &q->body.update_commit);
    case cellar_Request_update_abort_tag:
        return svc_do_update_abort(s, c, &q->body.update_abort);
    case cellar_Request_backup_tag: return svc_do_backup(s, &q->body.backup);
    case cellar_Request_restore_tag: return svc_do_restore(s, &q->body.restore);
    default: {
        sb_t b;
        s->op = "request";
        b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
        if (s->scan.unknown_tag) {
            svc_sb_str(&b, ": unknown request type (field ");
            svc_sb_u64(&b, s->scan.unknown_tag);
            svc_sb_str(&b, "); this device speaks protocol version 1");
        } else {
            svc_sb_str(&b, ": no request body (set one of the Request.body "
                       "fields)");
        }
        return -(int)cellar_Code_EPROTO;
    }
    }
}

static void log_failure(svc_t *s, svc_conn_t *c)
{
    if (!s->cfg.log)
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

/* Serve one request frame; the reply goes to the output queue. */
static void serve_frame(svc_t *s, svc_conn_t *c, const uint8_t *f,
                        uint32_t n)
{
    const char *why = NULL;
    codec_scan(cellar_Request_fields, f, n, &s->scan);
    resp_reset(s, s->scan.has_id ? s->scan.id : 0);
    s->op = op_name(s->scan.body_tag);
    if (s->scan.problem) {
        (void)scan_problem(s);
    } else if (codec_decode_request(&s->req, f, n, &why) < 0) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EPROTO);
        svc_sb_str(&b, ": malformed request (");
        svc_sb_str(&b, why ? why : "does not decode");
        svc_sb_str(&b, ")");
    } else {
        s->resp.id = s->req.id;
        s->op = op_name(s->req.which_body);
        (void)dispatch(s, c);
        if (s->deferred) { /* a long request: the job replies */
            s->deferred = 0;
            return;
        }
    }
    if (s->resp.has_error) {
        s->resp.which_body = 0;
        c->errors++;
        log_failure(s, c);
    }
    resp_send(s, c);
}

/* A bad length prefix: one error reply with id 0, then close. */
static void frame_error(svc_t *s, svc_conn_t *c, int err)
{
    uint32_t len = codec_get_len(c->in.buf);
    resp_reset(s, 0);
    s->op = "frame";
    sb_t b = svc_err_begin(s, err);
    svc_sb_str(&b, ": length ");
    svc_sb_u64(&b, len);
    if (err == CODEC_ERR_MSGSIZE)
        svc_sb_str(&b, " is above the limit of 16896 bytes; closing");
    else
        svc_sb_str(&b, " is not allowed (1..16896); closing");
    c->errors++;
    log_failure(s, c);
    c->closing = 1;
    c->close_reason = "bad frame";
    if (out_room(c, 512))
        resp_send(s, c);
    else
        c->abort = 1;
}

/* Would this request run as a job (it may: Hash, Verify)? */
static bool long_request(svc_t *s, const uint8_t *f, uint32_t n)
{
    codec_scan(cellar_Request_fields, f, n, &s->scan);
    return s->scan.body_tag == cellar_Request_hash_tag ||
           s->scan.body_tag == cellar_Request_verify_tag;
}

/* Serve the next buffered request of c, if any and if there is room for
 * its reply. Returns 1 if something was done. */
static int serve_one(svc_t *s, svc_conn_t *c)
{
    const uint8_t *f;
    uint32_t n;
    if (c->closing || c->abort)
        return 0;
    if (s->job.kind && s->job.conn == c)
        return 0; /* behind its long request: replies stay in order */
    int r = codec_parser_next(&c->in, &f, &n);
    if (r < 0) {
        frame_error(s, c, r);
        return 1;
    }
    if (r == 0 || !out_room(c, CODEC_BUF_MIN))
        return 0;
    if ((s->job.kind || s->job_turn) && long_request(s, f, n)) {
        c->last_ms = s->now_ms; /* waiting, not idle */
        return 0; /* one long request at a time, one step of one per turn */
    }
    serve_frame(s, c, f, n);
    codec_parser_pop(&c->in);
    c->last_ms = s->now_ms;
    c->requests++;
    return 1;
}

int svc_process(svc_t *s)
{
    int served = 0;
    s->job_turn = 0;
    if (s->job.kind) { /* one bounded step of the long request */
        job_step(s);
        s->job_turn = 1;
        served++;
    }
    svc_conn_t *c = s->conns;
    while (c) {
        svc_conn_t *next = c->next; /* c stays attached: only the
                                       transport closes connections */
        served += serve_one(s, c);
        c = next;
    }
    if (s->job_turn && !s->job.kind && svc_pending(s))
        served++; /* a long request waits for the next turn */
    s->job_turn = 0;
    return served;
}

bool svc_pending(svc_t *s)
{
    if (s->job.kind)
        return true;
    for (svc_conn_t *c = s->conns; c; c = c->next) {
        const uint8_t *f;
        uint32_t n;
        if (c->closing || c->abort)
            continue;
        int r = codec_parser_next(&c->in, &f, &n);
        if (r < 0 || (r == 1 && out_free(c) >= CODEC_BUF_MIN))
            return true;
    }
    return false;
}

void svc_tick(svc_t *s, uint64_t now_ms)
{
    s->now_ms = now_ms;
    svc_store_tick(s);
    if (s->idle_ms == SVC_IDLE_NEVER)
        return;
    for (svc_conn_t *c = s->conns; c; c = c->next) {
        if (c->closing || c->abort)
            continue;
        for (uint32_t i = 0; i < SVC_MAX_HANDLES; i++) {
            svc_handle_t *h = &c->h[i];
            if (!h->id || now_ms - h->last_ms < s->idle_ms)
                continue;
            if (s->cfg.log) {
                sb_t b = svc_log_begin(s, c);
                svc_sb_str(&b, "handle ");
                svc_sb_u64(&b, h->id);
                svc_sb_str(&b, " ");
                svc_sb_qstr(&b, h->path);
                svc_sb_str(&b, " closed: idle for ");
                svc_sb_u64(&b, (now_ms - h->last_ms) / 1000);
                svc_sb_str(&b, " s");
                svc_log_end(s);
            }
            svc_handle_release(s, h);
        }
        if (now_ms - c->last_ms < s->idle_ms)
            continue;
        resp_reset(s, 0);
        s->op = "connection";
        sb_t b = svc_err_begin(s, -(int)cellar_Code_ETIMEDOUT);
        svc_sb_str(&b, ": no complete request for ");
        svc_sb_u64(&b, (now_ms - c->last_ms) / 1000);
        svc_sb_str(&b, " s; closing");
        c->closing = 1;
        c->close_reason = "idle timeout";
        if (out_room(c, 512))
            resp_send(s, c);
        else
            c->abort = 1;
    }
}
