/* svc_sd.c - the file requests on /sd, the SD card (issue 15; svc_sd.h,
 * docs/FAT.md). svc_dispatch.c hands a request here when svc_sd_claims it
 * (an /sd path, or a handle opened here); Hello and List of "/" come here
 * to show /sd beside the flash partitions. Device-side code: no OS calls,
 * no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "csha.h"
#include "svc_int.h"

#define SD_ID_TAG 0xFu /* low nibble of an /sd handle id (cfs's are 1..8) */
_Static_assert(SVC_MAX_HANDLES < SD_ID_TAG, "cfs handle ids never end in 0xF");

/* ---- paths ------------------------------------------------------------------------ */
/* Does an absolute path name /sd or something in it? */
static bool sd_path(const char *p)
{
    if (p[0] != '/')
        return false;
    while (*p == '/')
        p++;
    return p[0] == 's' && p[1] == 'd' && (p[2] == 0 || p[2] == '/');
}

/* issue 14: without CELLAR_WITH_SD no handle is the card's */
static bool sd_handle(uint32_t id) { return CELLAR_WITH_SD && (id & 15u) == SD_ID_TAG; }

#if CELLAR_WITH_SD /* issue 14: to svc_sd_claims */

static const char *fat_why(int err)
{
    switch (err) {
    case FAT_ERR_CORRUPT:
        return "the card's FAT or a directory is corrupt (run fsck.fat)";
    case FAT_ERR_NOTFAT:
        return "the card holds no FAT16/FAT32 filesystem";
    case FAT_ERR_BUSY:
        return "the file is open";
    default:
        return NULL;
    }
}

static int sd_fail(svc_t *s, int err, const char *show, const char *why)
{
    return svc_fail_path(s, err, show, why ? why : fat_why(err));
}

/* "/sd/a//b" -> fs "/a/b", show "/sd/a/b" (p->part = -1). */
static int sd_resolve(svc_t *s, const char *in, svc_path_t *p)
{
    size_t len = strlen(in), fn = 0;
    memset(p, 0, sizeof(*p));
    p->fs = p->show; /* "" until resolved */
    p->part = -1;
    if (!svc_utf8_valid(in, len))
        return svc_fail_path(s, CFS_ERR_INVAL, in, "path is not valid UTF-8");
    size_t i = 0, st, cl;
    while (i < len && in[i] == '/')
        i++;
    i += 2; /* "sd" */
    while (svc_path_comp(in, len, &i, &st, &cl)) {
        if (svc_dot_comp(in + st, cl))
            return svc_fail_path(s, CFS_ERR_INVAL, in,
                                 "\".\" and \"..\" components are not allowed");
        if (fn + 1 + cl > FAT_PATH_MAX)
            return svc_fail_path(s, CFS_ERR_NAMETOOLONG, "/sd/...",
                                 "path is longer than 255 bytes inside /sd");
        p->show[3 + fn++] = '/'; /* issue 14: fs is show's tail */
        memcpy(p->show + 3 + fn, in + st, cl);
        fn += cl;
    }
    memcpy(p->show, "/sd", 3);
    p->show[3 + fn] = 0;
    p->fs = fn ? p->show + 3 : "/";
    size_t dl = sizeof(SVC_SD_DIR) - 1;
    if (strncmp(p->fs, SVC_SD_DIR, dl) == 0 && (p->fs[dl] == 0 || p->fs[dl] == '/'))
        return svc_fail_path(s, -(int)cellar_Code_EACCES, p->show,
                             "\"" SVC_SD_DIR "\" is reserved for the service "
                             "(shadows of files being written)");
    return 0;
}

static bool is_root(const svc_path_t *p) { return p->fs[1] == 0; }

/* The card, or NULL with the error set. */
static fat_t *card(svc_t *s, const char *show)
{
    if (!s->sd->mounted) {
        (void)svc_fail_path(s, CFS_ERR_IO, show,
                            s->sd->mount_err == FAT_ERR_NOTFAT
                                ? "not mounted: the card holds no FAT16/FAT32 "
                                  "filesystem"
                                : "not mounted: no usable card");
        return NULL;
    }
    return &s->sd->fat;
}

/* Path `in` resolved into p, and the card: NULL with *err (and the error
 * reply) set when either fails. */
static fat_t *sd_card_at(svc_t *s, const char *in, svc_path_t *p, int *err)
{
    fat_t *fs = NULL;
    if ((*err = sd_resolve(s, in, p)) == 0 && !(fs = card(s, p->show)))
        *err = CFS_ERR_IO;
    return fs;
}

/* ---- handles ---------------------------------------------------------------------- */
static svc_sd_handle_t *hget(svc_t *s, svc_conn_t *c, uint32_t id)
{
    for (uint32_t i = 0; i < SVC_SD_HANDLES; i++)
        if (s->sd->h[i].id == id && s->sd->h[i].conn == c) {
            s->sd->h[i].last_ms = s->now_ms;
            return &s->sd->h[i];
        }
    (void)svc_fail_hid(s, CFS_ERR_BADF, id, NULL, SVC_NO_HANDLE);
    return NULL;
}

static int hfail(svc_t *s, int err, const svc_sd_handle_t *h, const char *why)
{
    return svc_fail_hid(s, err, h->id, h->show, why ? why : fat_why(err));
}

/* Close a handle; a shadow not published is dropped. */
static void hrelease(svc_t *s, svc_sd_handle_t *h)
{
    fat_t *fs = &s->sd->fat;
    if (h->f && s->sd->mounted) {
        (void)fat_close(fs, h->f);
        if (h->shadow)
            (void)fat_remove(fs, h->shadow_path, false);
    }
    memset(h, 0, sizeof(*h));
}

void svc_sd_tick(svc_t *s)
{
    if (!s->sd)
        return;
    for (uint32_t i = 0; i < SVC_SD_HANDLES; i++) {
        svc_sd_handle_t *h = &s->sd->h[i];
        if (!h->id || s->now_ms - h->last_ms < s->idle_ms)
            continue;
        if (SVC_LOGS(s)) {
            sb_t b = svc_log_begin(s, h->conn);
            svc_sb_str(&b, "handle ");
            svc_sb_u64(&b, h->id);
            svc_sb_str(&b, " ");
            svc_sb_qstr(&b, h->show);
            svc_sb_str(&b, " closed: idle for ");
            svc_sb_u64(&b, (s->now_ms - h->last_ms) / 1000);
            svc_sb_str(&b, " s");
            svc_log_end(s);
        }
        hrelease(s, h);
    }
}

void svc_sd_conn_gone(svc_t *s, svc_conn_t *c)
{
    if (!s->sd)
        return;
    for (uint32_t i = 0; i < SVC_SD_HANDLES; i++)
        if (s->sd->h[i].id && s->sd->h[i].conn == c)
            hrelease(s, &s->sd->h[i]);
}

/* ---- the requests ----------------------------------------------------------------- */
static void info(cellar_FileInfo *fi, const char *name, const fat_stat_t *st)
{
    svc_copy_str(fi->name, sizeof(fi->name), name);
    fi->type = st->type == FAT_T_DIR ? cellar_FileType_DIR : cellar_FileType_FILE;
    fi->size = st->type == FAT_T_DIR ? 0 : st->size;
    fi->ctime = st->ctime;
    fi->mtime = st->mtime;
}

static int do_stat(svc_t *s, const cellar_StatRequest *r)
{
    svc_path_t *p = &s->pa;
    int err;
    fat_t *fs = sd_card_at(s, r->path, p, &err);
    if (!fs)
        return err;
    fat_stat_t *st = (fat_stat_t *)s->scratch;
    if ((err = fat_stat(fs, p->fs, st)) != 0)
        return sd_fail(s, err, p->show, NULL);
    s->resp.which_body = cellar_Response_stat_tag;
    s->resp.body.stat.has_info = true;
    info(&s->resp.body.stat.info, p->show, st);
    return 0;
}

/* List of "/": the flash partitions, then "sd". */
static int list_root(svc_t *s, const cellar_ListRequest *r)
{
    int err = svc_do_list(s, r);
    cellar_ListReply *o = &s->resp.body.list;
    uint32_t max = r->max_entries && r->max_entries < SVC_LIST_MAX
                       ? r->max_entries : SVC_LIST_MAX;
    if (err || o->next_cursor || r->cursor > s->nparts)
        return err;
    if (o->entries_count == max) {
        o->next_cursor = s->nparts;
        return 0;
    }
    fat_stat_t st = { .type = FAT_T_DIR };
    info(&o->entries[o->entries_count++], "sd", &st);
    return 0;
}

/* The cursor is the index of the next directory entry on the card. */
static int do_list(svc_t *s, const cellar_ListRequest *r)
{
    svc_path_t *p = &s->pa;
    int err;
    fat_t *fs = sd_card_at(s, r->path, p, &err);
    if (!fs)
        return err;
    uint32_t max = r->max_entries && r->max_entries < SVC_LIST_MAX
                       ? r->max_entries : SVC_LIST_MAX;
    fat_dir_t d;
    if ((err = fat_dir_open(fs, p->fs, &d)) != 0)
        return sd_fail(s, err, p->show, NULL);
    d.next = r->cursor;
    cellar_ListReply *o = &s->resp.body.list;
    fat_stat_t *st = (fat_stat_t *)s->scratch;
    s->resp.which_body = cellar_Response_list_tag;
    for (;;) {
        uint32_t at = d.next;
        int n = fat_dir_read(fs, &d, st);
        if (n < 0) {
            s->resp.which_body = 0;
            return sd_fail(s, n, p->show, NULL);
        }
        if (n == 0)
            break;
        if (is_root(p) && strcmp(st->name, &SVC_SD_DIR[1]) == 0)
            continue; /* the service's own directory is not listed */
        if (o->entries_count == max) {
            o->next_cursor = at ? at : 1;
            break;
        }
        info(&o->entries[o->entries_count++], st->name, st);
    }
    return 0;
}

/* Copy the card file src into the open shadow dst (its content so far). */
static int copy_into(svc_t *s, fat_t *fs, const char *src, fat_file_t *dst)
{
    fat_file_t *f;
    int err = fat_open(fs, src, FAT_O_READ, &f);
    if (err)
        return err;
    uint32_t off = 0;
    for (;;) {
        int32_t n = fat_read(fs, f, off, s->scratch, sizeof(s->scratch));
        if (n <= 0) {
            err = n;
            break;
        }
        int32_t w = fat_write(fs, dst, off, s->scratch, (uint32_t)n);
        if (w != n) {
            err = w < 0 ? w : FAT_ERR_NOSPC;
            break;
        }
        off += (uint32_t)n;
    }
    int e2 = fat_close(fs, f);
    return err ? err : e2;
}

/* Issue 14 (svcram2): a path beside a fat_stat_t does not fit the
 * device's 512-byte scratch (a fat_stat_t is ~290 bytes): the paths go in
 * s->pb's show, which an /sd request that resolves only pa leaves free
 * (and svc_sd_attach runs outside any request). Before, they were written
 * at scratch + 512 / + 1024: past its end on the device profile, over
 * the bundle index and the job. */
_Static_assert(sizeof(((svc_path_t *)0)->show) >= FAT_PATH_MAX + 1,
               "an /sd path fits pb's show");
_Static_assert(SVC_SCRATCH_BYTES >= sizeof(fat_stat_t),
               "a fat_stat_t fits the scratch");

static int do_open(svc_t *s, svc_conn_t *c, const cellar_OpenRequest *r)
{
    const uint32_t rw = cellar_OpenFlags_O_READ | cellar_OpenFlags_O_WRITE;
    const uint32_t known = rw | cellar_OpenFlags_O_CREATE | cellar_OpenFlags_O_EXCL |
                           cellar_OpenFlags_O_TRUNC | cellar_OpenFlags_O_APPEND;
    uint32_t fl = r->flags;
    svc_path_t *p = &s->pa;
    int err = sd_resolve(s, r->path, p);
    if (err)
        return err;
    if (fl & ~known)
        return svc_fail_path(s, CFS_ERR_INVAL, p->show, "unknown open flags");
    if ((err = svc_open_flags(s, p->show, fl)) != 0)
        return err;
    if (is_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    fat_t *fs = card(s, p->show);
    if (!fs)
        return CFS_ERR_IO;
    svc_sd_handle_t *h = NULL;
    for (uint32_t i = 0; i < SVC_SD_HANDLES && !h; i++)
        if (!s->sd->h[i].id)
            h = &s->sd->h[i];
    if (!h)
        return svc_fail_path(s, CFS_ERR_NOMEM, p->show,
                             "too many files open on /sd (all connections)");
    memset(h, 0, sizeof(*h));
    fat_stat_t *st = (fat_stat_t *)(s->scratch + sizeof(s->scratch) - sizeof(fat_stat_t));
    int have = fat_stat(fs, p->fs, st);
    if (have && have != FAT_ERR_NOENT)
        return sd_fail(s, have, p->show, NULL);
    if (!have && st->type == FAT_T_DIR)
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    if (!(fl & cellar_OpenFlags_O_WRITE)) {
        if ((err = fat_open(fs, p->fs, FAT_O_READ, &h->f)) != 0)
            return sd_fail(s, err, p->show, NULL);
    } else {
        if (have == FAT_ERR_NOENT && !(fl & cellar_OpenFlags_O_CREATE))
            return svc_fail_path(s, CFS_ERR_NOENT, p->show, NULL);
        if (!have && (fl & cellar_OpenFlags_O_CREATE) && (fl & cellar_OpenFlags_O_EXCL))
            return svc_fail_path(s, CFS_ERR_EXIST, p->show, NULL);
        if (have == FAT_ERR_NOENT) { /* its directory must be there now */
            char *par = s->pb.show; /* (svcram2: above) */
            size_t n = strlen(p->fs);
            while (n > 1 && p->fs[n - 1] != '/')
                n--;
            memcpy(par, p->fs, n);
            par[n > 1 ? n - 1 : 1] = 0;
            fat_stat_t *ps = (fat_stat_t *)s->scratch; /* (st is read) */
            if ((err = fat_stat(fs, par, ps)) != 0)
                return sd_fail(s, err, p->show, NULL);
            if (ps->type != FAT_T_DIR)
                return svc_fail_path(s, CFS_ERR_NOTDIR, p->show, NULL);
            /* the name is checked before the shadow is written, not at
             * Close (found by tests/e2e_pyclient.sh) */
            if ((err = fat_name_check(fs, p->fs)) != 0)
                return sd_fail(s, err, p->show,
                               err == FAT_ERR_INVAL
                                   ? "not a FAT name (no \" * : < > ? \\ | or "
                                     "control characters, no trailing dot or space)"
                                   : NULL);
        }
        /* the shadow: written here, renamed over the name at Close */
        err = fat_mkdir(fs, SVC_SD_DIR);
        if (err && err != FAT_ERR_EXIST)
            return sd_fail(s, err, p->show, NULL);
        uint32_t no = ++s->sd->shadow_seq;
        char *sp = h->shadow_path;
        memcpy(sp, SVC_SD_DIR "/w", sizeof(SVC_SD_DIR "/w"));
        size_t l = strlen(sp), k = 0;
        char dig[12];
        do {
            dig[k++] = (char)('0' + no % 10);
            no /= 10;
        } while (no);
        while (k)
            sp[l++] = dig[--k];
        sp[l] = 0;
        (void)fat_remove(fs, sp, false); /* a leftover of the same number */
        err = fat_open(fs, sp, FAT_O_WRITE | FAT_O_CREATE | FAT_O_TRUNC, &h->f);
        if (err)
            return sd_fail(s, err, p->show, NULL);
        if (!have && !(fl & cellar_OpenFlags_O_TRUNC) &&
            (err = copy_into(s, fs, p->fs, h->f)) != 0) {
            (void)fat_close(fs, h->f);
            (void)fat_remove(fs, sp, false);
            memset(h, 0, sizeof(*h));
            return sd_fail(s, err, p->show, NULL);
        }
        h->shadow = 1;
    }
    c->handle_seq = (c->handle_seq + 1) & 0x0fffffffu;
    if (!c->handle_seq)
        c->handle_seq = 1;
    h->id = c->handle_seq << 4 | SD_ID_TAG;
    h->conn = c;
    h->last_ms = s->now_ms;
    h->readable = (fl & cellar_OpenFlags_O_READ) != 0;
    h->writable = (fl & cellar_OpenFlags_O_WRITE) != 0;
    h->append = (fl & cellar_OpenFlags_O_APPEND) != 0;
    svc_copy_str(h->fs, sizeof(h->fs), p->fs);
    memcpy(h->show, p->show, sizeof(h->show));
    s->resp.which_body = cellar_Response_open_tag;
    s->resp.body.open.handle = h->id;
    s->resp.body.open.size = fat_file_size(h->f);
    return 0;
}

static int do_read(svc_t *s, svc_conn_t *c, const cellar_ReadRequest *r)
{
    svc_sd_handle_t *h = hget(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (!h->readable)
        return hfail(s, CFS_ERR_BADF, h, "not open for reading");
    fat_t *fs = card(s, h->show);
    if (!fs)
        return CFS_ERR_IO;
    cellar_ReadReply *o = &s->resp.body.read;
    uint32_t size = fat_file_size(h->f);
    uint32_t want = r->length < SVC_MAX_CHUNK ? r->length : SVC_MAX_CHUNK;
    int32_t got = 0;
    if (r->offset < size) {
        got = fat_read(fs, h->f, (uint32_t)r->offset, o->data.bytes, want);
        if (got < 0)
            return hfail(s, got, h, NULL);
    }
    s->resp.which_body = cellar_Response_read_tag;
    o->offset = r->offset;
    o->data.size = (pb_size_t)got;
    o->eof = r->offset + (uint64_t)got >= size;
    return 0;
}

static int do_write(svc_t *s, svc_conn_t *c, const cellar_WriteRequest *r)
{
    svc_sd_handle_t *h = hget(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (!h->writable)
        return hfail(s, CFS_ERR_BADF, h, "not open for writing");
    fat_t *fs = card(s, h->show);
    if (!fs)
        return CFS_ERR_IO;
    uint64_t off = h->append ? fat_file_size(h->f) : r->offset;
    if (off + r->data.size > 0xFFFFFFFFu)
        return hfail(s, CFS_ERR_FBIG, h, "a FAT file ends before 4 GiB");
    int32_t n = fat_write(fs, h->f, (uint32_t)off, r->data.bytes, r->data.size);
    if (n < 0 || (uint32_t)n < r->data.size)
        h->failed = 1; /* a half-written copy never takes the name */
    if (n < 0)
        return hfail(s, n == FAT_ERR_NOSPC ? CFS_ERR_NOSPC : n, h,
                     n == FAT_ERR_NOSPC ? "the card is full" : NULL);
    if ((uint32_t)n < r->data.size)
        return hfail(s, CFS_ERR_NOSPC, h, "the card is full");
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = off;
    s->resp.body.write.written = (uint32_t)n;
    return 0;
}

static int do_seek(svc_t *s, svc_conn_t *c, const cellar_SeekRequest *r)
{
    svc_sd_handle_t *h = hget(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    if (r->whence > 2)
        return hfail(s, CFS_ERR_INVAL, h, "whence must be 0 (set), 1 (cur) or 2 (end)");
    int64_t size = fat_file_size(h->f);
    int64_t base = r->whence == 0 ? 0 : r->whence == 1 ? h->pos : size;
    int64_t pos = base + r->offset;
    if (pos < 0 || pos > 0xFFFFFFFFll)
        return hfail(s, CFS_ERR_INVAL, h, "offset out of range");
    h->pos = (uint32_t)pos;
    s->resp.which_body = cellar_Response_seek_tag;
    s->resp.body.seek.position = (uint64_t)pos;
    s->resp.body.seek.size = (uint64_t)size;
    return 0;
}

static int do_truncate(svc_t *s, svc_conn_t *c, const cellar_TruncateRequest *r)
{
    fat_t *fs;
    int err;
    if (r->size > 0xFFFFFFFFu)
        return svc_fail(s, CFS_ERR_FBIG, "a FAT file ends before 4 GiB");
    if (r->handle) {
        svc_sd_handle_t *h = hget(s, c, r->handle);
        if (!h)
            return CFS_ERR_BADF;
        if (!h->writable)
            return hfail(s, CFS_ERR_BADF, h, "not open for writing");
        if (!(fs = card(s, h->show)))
            return CFS_ERR_IO;
        if ((err = fat_truncate(fs, h->f, (uint32_t)r->size)) != 0) {
            h->failed = 1;
            return hfail(s, err, h, NULL);
        }
        svc_reply_done(s);
        return 0;
    }
    svc_path_t *p = &s->pa;
    if ((err = sd_resolve(s, r->path, p)) != 0)
        return err;
    if (is_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    if (!(fs = card(s, p->show)))
        return CFS_ERR_IO;
    fat_file_t *f;
    if ((err = fat_open(fs, p->fs, FAT_O_WRITE, &f)) != 0)
        return sd_fail(s, err, p->show, NULL);
    err = fat_truncate(fs, f, (uint32_t)r->size);
    int e2 = fat_close(fs, f);
    if (err || e2)
        return sd_fail(s, err ? err : e2, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_sync(svc_t *s, svc_conn_t *c, const cellar_SyncRequest *r)
{
    svc_sd_handle_t *h = hget(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    fat_t *fs = card(s, h->show);
    if (!fs)
        return CFS_ERR_IO;
    int err = h->writable ? fat_file_sync(fs, h->f) : 0;
    if (!err)
        err = fat_sync(fs);
    if (err)
        return hfail(s, err, h, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_close(svc_t *s, svc_conn_t *c, const cellar_CloseRequest *r)
{
    svc_sd_handle_t *h = hget(s, c, r->handle);
    if (!h)
        return CFS_ERR_BADF;
    fat_t *fs = card(s, h->show);
    if (!fs) {
        memset(h, 0, sizeof(*h));
        return CFS_ERR_IO;
    }
    int err = fat_close(fs, h->f);
    h->f = NULL;
    if (!err && h->shadow && h->failed) {
        (void)fat_remove(fs, h->shadow_path, false);
        (void)hfail(s, CFS_ERR_IO, h, "not written: a write to it failed (the "
                                      "file keeps its old content)");
        memset(h, 0, sizeof(*h));
        return CFS_ERR_IO;
    }
    if (!err && h->shadow) /* publish: the shadow takes the name */
        err = fat_publish(fs, h->shadow_path, h->fs);
    if (!err && h->shadow)
        err = fat_sync(fs);
    if (err) {
        (void)hfail(s, err, h, err == FAT_ERR_BUSY
                                   ? "not written: the file is open for "
                                     "reading (close it and write again)"
                                   : NULL);
        if (h->shadow)
            (void)fat_remove(fs, h->shadow_path, false);
        memset(h, 0, sizeof(*h));
        return err;
    }
    memset(h, 0, sizeof(*h));
    svc_reply_done(s);
    return 0;
}

static int do_remove(svc_t *s, const char *path, bool dir)
{
    svc_path_t *p = &s->pa;
    int err = sd_resolve(s, path, p);
    if (err)
        return err;
    if (is_root(p))
        return svc_fail_path(s, CFS_ERR_PERM, p->show, "the card's root cannot be removed");
    fat_t *fs = card(s, p->show);
    if (!fs)
        return CFS_ERR_IO;
    if ((err = fat_remove(fs, p->fs, dir)) != 0 || (err = fat_sync(fs)) != 0)
        return sd_fail(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_mkdir(svc_t *s, const cellar_MkdirRequest *r)
{
    svc_path_t *p = &s->pa;
    int err;
    fat_t *fs = sd_card_at(s, r->path, p, &err);
    if (!fs)
        return err;
    fat_stat_t *st = (fat_stat_t *)s->scratch;
    if (is_root(p) || (err = fat_stat(fs, p->fs, st)) == 0) {
        if (r->parents && (is_root(p) || st->type == FAT_T_DIR)) {
            svc_reply_done(s);
            return 0;
        }
        return svc_fail_path(s, CFS_ERR_EXIST, p->show, NULL);
    }
    if (r->parents) { /* each missing prefix, top down */
        char *q = s->pb.show; /* (svcram2: above do_open) */
        size_t n = strlen(p->fs);
        for (size_t i = 1; i <= n; i++) {
            if (i < n && p->fs[i] != '/')
                continue;
            memcpy(q, p->fs, i);
            q[i] = 0;
            err = fat_mkdir(fs, q);
            if (err == FAT_ERR_EXIST && fat_stat(fs, q, st) == 0 &&
                st->type == FAT_T_DIR)
                err = 0;
            else if (err == FAT_ERR_EXIST)
                err = FAT_ERR_NOTDIR;
            if (err)
                break;
        }
    } else {
        err = fat_mkdir(fs, p->fs);
    }
    if (!err)
        err = fat_sync(fs);
    if (err)
        return sd_fail(s, err, p->show, NULL);
    svc_reply_done(s);
    return 0;
}

static int do_rename(svc_t *s, const cellar_RenameRequest *r)
{
    if (!sd_path(r->from) || !sd_path(r->to))
        return svc_fail_path(s, CFS_ERR_INVAL, sd_path(r->from) ? r->to : r->from,
                             "rename between /sd and another partition: copy "
                             "the file instead (cellar cp)");
    svc_path_t *a = &s->pa, *b = &s->pb;
    int err = sd_resolve(s, r->from, a);
    if (!err)
        err = sd_resolve(s, r->to, b);
    if (err)
        return err;
    if (is_root(a) || is_root(b))
        return svc_fail_path(s, CFS_ERR_PERM, a->show, "the card's root cannot be renamed");
    fat_t *fs = card(s, a->show);
    if (!fs)
        return CFS_ERR_IO;
    if ((err = fat_rename(fs, a->fs, b->fs)) != 0 || (err = fat_sync(fs)) != 0)
        return sd_fail(s, err, a->show, err == FAT_ERR_INVAL
                                            ? "a directory cannot move into itself"
                                            : NULL);
    svc_reply_done(s);
    return 0;
}

static int do_statfs(svc_t *s, const cellar_StatFsRequest *r)
{
    svc_path_t *p = &s->pa;
    int err;
    fat_t *fs = sd_card_at(s, r->path, p, &err);
    if (!fs)
        return err;
    fat_statfs_t sf;
    if ((err = fat_statfs(fs, &sf)) != 0)
        return sd_fail(s, err, p->show, NULL);
    cellar_StatFsReply *o = &s->resp.body.statfs;
    s->resp.which_body = cellar_Response_statfs_tag;
    o->total = sf.total;
    o->free = sf.free;
    o->used = sf.total - sf.free;
    o->live = o->used;
    o->available = sf.free;
    o->block_size = sf.cluster_size;
    o->block_count = sf.clusters;
    return 0;
}

/* Hash as a long request (svc_job.c, SVC_JOB_EXT): at most
 * SVC_JOB_STEP_BYTES of the card read per step, other connections served
 * in between. A file this connection has open for writing is hashed as its
 * shadow holds it. The job's hashing state is s->job's (sha, off, left,
 * total, show); the file is s->sd->hf (closed at the end when hown). */
static void hash_end(svc_t *s)
{
    svc_job_t *j = &s->job;
    csha_free(&j->sha);
    if (s->sd->hf && s->sd->hown)
        (void)fat_close(&s->sd->fat, s->sd->hf);
    s->sd->hf = NULL;
    j->kind = SVC_JOB_NONE;
}

static void hash_cancel(svc_t *s)
{
    hash_end(s);
}

/* One step: 1 done (the reply or the error in s->resp), 0 more to do. */
static int hash_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    uint32_t budget = SVC_JOB_STEP_BYTES;
    int err = 0;
    for (uint32_t i = 0; i < SVC_SD_HANDLES; i++) /* its shadow is in use */
        if (s->sd->h[i].id && s->sd->h[i].f == s->sd->hf)
            s->sd->h[i].last_ms = s->now_ms;
    while (!err && j->left && budget) {
        uint32_t k = j->left < sizeof(s->scratch) ? j->left : (uint32_t)sizeof(s->scratch);
        if (k > budget)
            k = budget;
        int32_t n = fat_read(&s->sd->fat, s->sd->hf, j->off, s->scratch, k);
        if (n <= 0)
            err = n < 0 ? n : FAT_ERR_CORRUPT;
        else if (csha_update(&j->sha, s->scratch, (size_t)n))
            err = CFS_ERR_IO;
        else {
            j->off += (uint32_t)n;
            j->left -= (uint32_t)n;
            budget -= (uint32_t)n;
        }
    }
    if (!err && j->left)
        return 0;
    cellar_HashReply *o = &s->resp.body.hash;
    if (!err && csha_finish(&j->sha, o->sha256))
        err = CFS_ERR_IO;
    uint32_t total = j->total;
    hash_end(s);
    s->sd->hrc = err ? sd_fail(s, err, j->show, NULL) : 0;
    if (!err) {
        s->resp.which_body = cellar_Response_hash_tag;
        o->length = total;
    }
    return 1;
}

static int do_hash(svc_t *s, svc_conn_t *c, const cellar_HashRequest *r)
{
    svc_path_t *p = &s->pa;
    int err = sd_resolve(s, r->path, p);
    if (err)
        return err;
    if (is_root(p))
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    fat_t *fs = card(s, p->show);
    if (!fs)
        return CFS_ERR_IO;
    fat_file_t *f = NULL;
    bool own = false;
    for (uint32_t i = 0; i < SVC_SD_HANDLES && !f; i++)
        if (s->sd->h[i].id && s->sd->h[i].conn == c && s->sd->h[i].shadow &&
            strcmp(s->sd->h[i].fs, p->fs) == 0)
            f = s->sd->h[i].f;
    if (!f) {
        if ((err = fat_open(fs, p->fs, FAT_O_READ, &f)) != 0)
            return sd_fail(s, err, p->show, NULL);
        own = true;
    }
    uint32_t size = fat_file_size(f);
    if (r->offset > size) {
        if (own)
            (void)fat_close(fs, f);
        return svc_fail_path(s, CFS_ERR_INVAL, p->show, "offset is past the end of the file");
    }
    svc_job_t *j = &s->job;
    j->off = (uint32_t)r->offset;
    j->left = size - j->off;
    if (r->length && r->length < j->left)
        j->left = (uint32_t)r->length;
    j->total = j->left;
    SVC_JOB_NOT_COPY(s); /* issue 14: the union */
    svc_copy_str(j->show, sizeof(j->show), p->show);
    s->sd->hf = f;
    s->sd->hown = own;
    j->kind = SVC_JOB_EXT;
    j->ext_step = hash_step;
    j->ext_cancel = hash_cancel;
    csha_init(&j->sha);
    if (csha_start(&j->sha)) {
        hash_end(s);
        return sd_fail(s, CFS_ERR_IO, p->show, NULL);
    }
    if (hash_step(s))
        return s->sd->hrc;
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

/* Hello: the flash partitions, then /sd. */
static int do_hello(svc_t *s, svc_conn_t *c, const cellar_HelloRequest *r)
{
    int err = svc_do_hello(s, c, r);
    cellar_HelloReply *o = &s->resp.body.hello;
    if (err || o->partitions_count >= sizeof(o->partitions) / sizeof(o->partitions[0]))
        return err;
    cellar_Partition *p = &o->partitions[o->partitions_count++];
    memset(p, 0, sizeof(*p));
    svc_copy_str(p->path, sizeof(p->path), "/sd");
    /* the card's size in the flash's blocks (HelloReply.block_size), so a
     * client that multiplies shows its size */
    uint32_t per = s->cfg.dev->block_size / FAT_SECTOR;
    p->block_count = per ? s->sd->sectors / per : s->sd->sectors;
    p->state = s->sd->mounted ? cellar_PartState_PART_OK : cellar_PartState_PART_UNMOUNTED;
    p->kind = cellar_PartKind_PART_FAT;
    return 0;
}

#endif /* CELLAR_WITH_SD */

/* ---- routing (svc_dispatch.c) ------------------------------------------------------------ */
/* issue 14: without CELLAR_WITH_SD, /sd paths are claimed and answered
 * ENOTSUP (Hello and List of "/" stay the flash's) */
bool svc_sd_claims(svc_t *s, const cellar_Request *q)
{
    if (CELLAR_WITH_SD && !s->sd)
        return false;
    switch (q->which_body) {
    case cellar_Request_hello_tag: return CELLAR_WITH_SD;
    case cellar_Request_stat_tag: return sd_path(q->body.stat.path);
    case cellar_Request_list_tag:
        return sd_path(q->body.list.path) ||
               (CELLAR_WITH_SD && q->body.list.path[0] == '/' &&
                q->body.list.path[strspn(q->body.list.path, "/")] == 0);
    case cellar_Request_open_tag: return sd_path(q->body.open.path);
    case cellar_Request_remove_tag: return sd_path(q->body.remove.path);
    case cellar_Request_rmdir_tag: return sd_path(q->body.rmdir.path);
    case cellar_Request_mkdir_tag: return sd_path(q->body.mkdir.path);
    case cellar_Request_rename_tag:
        return sd_path(q->body.rename.from) || sd_path(q->body.rename.to);
    case cellar_Request_statfs_tag: return sd_path(q->body.statfs.path);
    case cellar_Request_hash_tag: return sd_path(q->body.hash.path);
    case cellar_Request_truncate_tag:
        return q->body.truncate.handle ? sd_handle(q->body.truncate.handle)
                                       : sd_path(q->body.truncate.path);
    case cellar_Request_read_tag: return sd_handle(q->body.read.handle);
    case cellar_Request_write_tag: return sd_handle(q->body.write.handle);
    case cellar_Request_seek_tag: return sd_handle(q->body.seek.handle);
    case cellar_Request_sync_tag: return sd_handle(q->body.sync.handle);
    case cellar_Request_close_tag: return sd_handle(q->body.close.handle);
    default: return false;
    }
}

int svc_sd_dispatch(svc_t *s, svc_conn_t *c, const cellar_Request *q)
{
#if !CELLAR_WITH_SD /* issue 14 */
    (void)c;
    (void)q;
    return svc_fail(s, SVC_ENOTSUP, "the SD card (/sd) is not built into this device");
#else
    switch (q->which_body) {
    case cellar_Request_hello_tag: return do_hello(s, c, &q->body.hello);
    case cellar_Request_stat_tag: return do_stat(s, &q->body.stat);
    case cellar_Request_list_tag:
        return sd_path(q->body.list.path) ? do_list(s, &q->body.list)
                                          : list_root(s, &q->body.list);
    case cellar_Request_open_tag: return do_open(s, c, &q->body.open);
    case cellar_Request_read_tag: return do_read(s, c, &q->body.read);
    case cellar_Request_write_tag: return do_write(s, c, &q->body.write);
    case cellar_Request_seek_tag: return do_seek(s, c, &q->body.seek);
    case cellar_Request_truncate_tag: return do_truncate(s, c, &q->body.truncate);
    case cellar_Request_sync_tag: return do_sync(s, c, &q->body.sync);
    case cellar_Request_close_tag: return do_close(s, c, &q->body.close);
    case cellar_Request_remove_tag: return do_remove(s, q->body.remove.path, false);
    case cellar_Request_rmdir_tag: return do_remove(s, q->body.rmdir.path, true);
    case cellar_Request_mkdir_tag: return do_mkdir(s, &q->body.mkdir);
    case cellar_Request_rename_tag: return do_rename(s, &q->body.rename);
    case cellar_Request_statfs_tag: return do_statfs(s, &q->body.statfs);
    case cellar_Request_hash_tag: return do_hash(s, c, &q->body.hash);
    default: return svc_fail(s, -(int)cellar_Code_EPROTO, "not an /sd request");
    }
#endif
}

#if CELLAR_WITH_SD /* issue 14: the rest */

/* ---- attach / detach ------------------------------------------------------------------ */
static void sd_problem(svc_t *s, const char *what)
{
    if (s->nproblems >= SVC_MAX_PROBLEMS)
        return;
    /* issue 14: what is a literal (svc_problem keeps the pointer) */
    s->problems[s->nproblems] = (struct svc_problem_words){ what, NULL, NULL };
    s->problem_part[s->nproblems++] = 0xFF; /* not a flash partition */
    svc_log_msg(s, NULL, what);
}

int svc_sd_attach(svc_t *s, svc_sd_t *sd, const fat_blk_t *bd)
{
    memset(sd, 0, sizeof(*sd));
    s->sd = sd;
    sd->sectors = bd ? bd->sector_count : 0;
    if (!bd) {
        sd->mount_err = FAT_ERR_IO;
        sd_problem(s, "/sd: no card: not mounted (the rest is served)");
        return FAT_ERR_IO;
    }
    int err = fat_mount(&sd->fat, bd, s->cfg.clock, s->cfg.clock_ctx);
    if (err) {
        sd->mount_err = err;
        sd_problem(s, err == FAT_ERR_NOTFAT
                          ? "/sd: the card holds no FAT16/FAT32 filesystem "
                            "(format it with mkfs.fat): not mounted (the rest is served)"
                      : err == FAT_ERR_CORRUPT
                          ? "/sd: the card's FAT boot sector is inconsistent "
                            "(run fsck.fat): not mounted (the rest is served)"
                          : "/sd: the card cannot be read: not mounted (the rest "
                            "is served)");
        return err;
    }
    sd->mounted = 1;
    /* shadows a power cut left behind are dropped */
    fat_dir_t d;
    fat_stat_t *st = (fat_stat_t *)s->scratch;
    char *path = s->pb.show; /* (svcram2: above do_open) */
    if (fat_dir_open(&sd->fat, SVC_SD_DIR, &d) == 0) {
        uint32_t dropped = 0;
        while (fat_dir_read(&sd->fat, &d, st) == 1) {
            if (st->type != FAT_T_FILE)
                continue;
            memcpy(path, SVC_SD_DIR "/", sizeof(SVC_SD_DIR));
            svc_copy_str(path + sizeof(SVC_SD_DIR), FAT_PATH_MAX - sizeof(SVC_SD_DIR),
                         st->name);
            if (fat_remove(&sd->fat, path, false) == 0) {
                dropped++;
                d.next = 0; /* entries moved under us: start over */
            }
        }
        if (dropped)
            (void)fat_sync(&sd->fat);
    }
    if (SVC_LOGS(s)) {
        fat_statfs_t sf;
        (void)fat_statfs(&sd->fat, &sf);
        sb_t b = svc_log_begin(s, NULL);
        svc_sb_str(&b, "mounted /sd (FAT");
        svc_sb_u64(&b, sf.fat_bits);
        svc_sb_str(&b, ", ");
        svc_sb_u64(&b, sf.total / 1024);
        svc_sb_str(&b, " KiB, ");
        svc_sb_u64(&b, sf.free / 1024);
        svc_sb_str(&b, " KiB free)");
        svc_log_end(s);
    }
    return 0;
}

int svc_sd_detach(svc_sd_t *sd)
{
    if (!sd || !sd->mounted)
        return 0;
    for (uint32_t i = 0; i < SVC_SD_HANDLES; i++)
        if (sd->h[i].id) {
            (void)fat_close(&sd->fat, sd->h[i].f);
            if (sd->h[i].shadow)
                (void)fat_remove(&sd->fat, sd->h[i].shadow_path, false);
            memset(&sd->h[i], 0, sizeof(sd->h[i]));
        }
    sd->mounted = 0;
    return fat_unmount(&sd->fat);
}
#else /* issue 14: built without the SD card */
int svc_sd_attach(svc_t *s, svc_sd_t *sd, const fat_blk_t *bd)
{
    (void)bd;
    memset(sd, 0, sizeof(*sd));
    sd->mount_err = SVC_ENOTSUP;
    svc_log_msg(s, NULL, "/sd: the SD card (/sd) is not built into this device");
    return SVC_ENOTSUP;
}
int svc_sd_detach(svc_sd_t *sd) { (void)sd; return 0; }
void svc_sd_tick(svc_t *s) { (void)s; }
void svc_sd_conn_gone(svc_t *s, svc_conn_t *c) { (void)s; (void)c; }
#endif
