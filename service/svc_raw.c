/* svc_raw.c - raw partitions (issue 15, docs/RAW.md): RawRead, RawWrite,
 * RawErase and RawHash of a byte range of a named, block-aligned area of
 * the layout, and the install of a raw image an update bundle committed
 * (staged in /usr as RAW_DIR/NAME, written, checked, then dropped; at
 * start-up again when a power cut stopped it). Sits above svc_job (a large
 * RawHash is the job's hash in steps) and below svc_store (which finishes
 * staged images at attach). Device-side code: no OS calls, no allocation,
 * no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

#if CELLAR_WITH_RAW /* issue 14: else svc_int.h's stubs */
const layout_part_t *svc_raw_part(const svc_t *s, const char *name)
{
    const layout_part_t *p = layout_find(&s->layout, name);
    return p && p->kind == LAYOUT_KIND_RAW ? p : NULL;
}

static uint64_t part_bytes(const svc_t *s, const layout_part_t *p)
{
    return (uint64_t)p->block_count * s->cfg.dev->block_size;
}

/* "<op> "name": no raw partition of that name (the layout has: a, b)" */
static int no_such(svc_t *s, const char *name)
{
    sb_t b = svc_err_begin(s, CFS_ERR_NOENT);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, name);
    svc_sb_str(&b, ": no raw partition of that name (");
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->layout.nparts; i++) {
        if (s->layout.part[i].kind != LAYOUT_KIND_RAW)
            continue;
        svc_sb_str(&b, n++ ? ", " : "the layout has: ");
        svc_sb_str(&b, s->layout.part[i].name);
    }
    svc_sb_str(&b, n ? ")" : "the layout has none)");
    return CFS_ERR_NOENT;
}

/* RAW_DIR/NAME of p into rel. */
static void staged_path(const layout_part_t *p, char *rel)
{
    strcpy(rel, RAW_DIR "/");
    strcat(rel, p->name);
}

/* Is a committed image of p waiting to be written (or being written)? */
static bool staged(svc_t *s, const layout_part_t *p)
{
    char rel[sizeof(RAW_DIR) + LAYOUT_NAME_MAX + 1];
    cfs_stat_t st;
    if (!s->part[USR].mounted)
        return false;
    staged_path(p, rel);
    return cfs_stat(&s->part[USR].fs, rel, &st) == 0;
}

/* The partition of a request and the range [off, off + len) checked
 * against it: 0, or the error set. */
static int raw_range(svc_t *s, const char *name, uint64_t off, uint64_t len,
                     const layout_part_t **out)
{
    const layout_part_t *p = svc_raw_part(s, name);
    if (!p)
        return no_such(s, name);
    if (staged(s, p)) /* its bytes are not the committed image yet */
        return s->job.rawing
                   ? svc_fail_path(s, CFS_ERR_BUSY, name, "a committed update "
                                   "is being written to it; try again")
                   : svc_fail_path(s, CFS_ERR_IO, name, "a committed update "
                                   "could not be written to it yet (it is "
                                   "written at the next start)");
    uint64_t size = part_bytes(s, p);
    if (off > size || len > size - off) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, name);
        svc_sb_str(&b, ": range ");
        svc_sb_u64(&b, off);
        svc_sb_str(&b, "+");
        svc_sb_u64(&b, len);
        svc_sb_str(&b, " is past the end of the partition (");
        svc_sb_u64(&b, size);
        svc_sb_str(&b, " bytes)");
        return CFS_ERR_INVAL;
    }
    *out = p;
    return 0;
}

/* Read len bytes at off of raw partition p (any range inside it). */
int svc_raw_pread(svc_t *s, const layout_part_t *p, uint32_t off,
                     uint8_t *buf, uint32_t len)
{
    const flash_dev_t *dev = s->cfg.dev;
    while (len) {
        uint32_t in = off % dev->block_size;
        uint32_t n = dev->block_size - in < len ? dev->block_size - in : len;
        int err = dev->read(dev, p->first_block + off / dev->block_size, in,
                            buf, n);
        if (err)
            return err;
        off += n;
        buf += n;
        len -= n;
    }
    return 0;
}

/* Program len bytes at off (erased bytes only: the caller checked). */
static int raw_prog(svc_t *s, const layout_part_t *p, uint32_t off,
                      const uint8_t *buf, uint32_t len)
{
    const flash_dev_t *dev = s->cfg.dev;
    while (len) {
        uint32_t in = off % dev->block_size;
        uint32_t n = dev->block_size - in < len ? dev->block_size - in : len;
        int err = dev->prog(dev, p->first_block + off / dev->block_size, in,
                            buf, n);
        if (err)
            return err;
        off += n;
        buf += n;
        len -= n;
    }
    return 0;
}

static int raw_sync(svc_t *s)
{
    const flash_dev_t *dev = s->cfg.dev;
    return dev->sync ? dev->sync(dev) : 0;
}

/* The first byte of [off, off + len) that is not erased (0xff), as an
 * offset, or -1 when all are; a read error as a value below -1. */
static int64_t first_programmed(svc_t *s, const layout_part_t *p,
                                uint32_t off, uint32_t len)
{
    while (len) {
        uint32_t n = len < sizeof(s->scratch) ? len : (uint32_t)sizeof(s->scratch);
        int err = svc_raw_pread(s, p, off, s->scratch, n);
        if (err)
            return err < -1 ? err : -5;
        for (uint32_t i = 0; i < n; i++)
            if (s->scratch[i] != 0xff)
                return (int64_t)off + i;
        off += n;
        len -= n;
    }
    return -1;
}

static int dev_fail(svc_t *s, const char *name, int err)
{
    return svc_fail_path(s, err, name, NULL);
}

int svc_do_raw_read(svc_t *s, const cellar_RawReadRequest *r)
{
    const layout_part_t *p;
    uint32_t len = r->length < SVC_MAX_CHUNK ? r->length : SVC_MAX_CHUNK;
    /* a read that starts inside and runs past the end is cut there */
    const layout_part_t *q = svc_raw_part(s, r->name);
    if (q && r->offset <= part_bytes(s, q) &&
        len > part_bytes(s, q) - r->offset)
        len = (uint32_t)(part_bytes(s, q) - r->offset);
    int err = raw_range(s, r->name, r->offset, len, &p);
    if (err)
        return err;
    cellar_ReadReply *o = &s->resp.body.read;
    err = svc_raw_pread(s, p, (uint32_t)r->offset, o->data.bytes, len);
    if (err)
        return dev_fail(s, r->name, err);
    s->resp.which_body = cellar_Response_read_tag;
    o->offset = r->offset;
    o->data.size = len;
    o->eof = r->offset + len == part_bytes(s, p);
    return 0;
}

int svc_do_raw_write(svc_t *s, const cellar_RawWriteRequest *r)
{
    const layout_part_t *p;
    uint32_t len = r->data.size;
    int err = raw_range(s, r->name, r->offset, len, &p);
    if (err)
        return err;
    int64_t at = first_programmed(s, p, (uint32_t)r->offset, len);
    if (at < -1)
        return dev_fail(s, r->name, (int)at);
    if (at >= 0) {
        sb_t b = svc_err_begin(s, CFS_ERR_EXIST);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, r->name);
        svc_sb_str(&b, ": byte ");
        svc_sb_u64(&b, (uint64_t)at);
        svc_sb_str(&b, " is already programmed (not 0xff); erase its block "
                   "first (nothing was written)");
        return CFS_ERR_EXIST;
    }
    err = raw_prog(s, p, (uint32_t)r->offset, r->data.bytes, len);
    if (!err)
        err = raw_sync(s);
    if (err)
        return dev_fail(s, r->name, err);
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = r->offset;
    s->resp.body.write.written = len;
    return 0;
}

int svc_do_raw_erase(svc_t *s, const cellar_RawEraseRequest *r)
{
    const layout_part_t *p = svc_raw_part(s, r->name);
    const flash_dev_t *dev = s->cfg.dev;
    if (!p)
        return no_such(s, r->name);
    uint64_t len = r->length;
    if (len == 0 && r->offset <= part_bytes(s, p))
        len = part_bytes(s, p) - r->offset;
    if (r->offset % dev->block_size || len % dev->block_size) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, r->name);
        svc_sb_str(&b, ": offset ");
        svc_sb_u64(&b, r->offset);
        svc_sb_str(&b, " and length ");
        svc_sb_u64(&b, len);
        svc_sb_str(&b, " must be multiples of the block size (");
        svc_sb_u64(&b, dev->block_size);
        svc_sb_str(&b, ")");
        return CFS_ERR_INVAL;
    }
    int err = raw_range(s, r->name, r->offset, len, &p);
    if (err)
        return err;
    uint32_t b0 = (uint32_t)(r->offset / dev->block_size);
    for (uint32_t i = 0; i < len / dev->block_size && !err; i++)
        err = dev->erase(dev, p->first_block + b0 + i);
    if (!err)
        err = raw_sync(s);
    if (err)
        return dev_fail(s, r->name, err);
    svc_reply_done(s);
    return 0;
}

int svc_do_raw_hash(svc_t *s, svc_conn_t *c, const cellar_RawHashRequest *r)
{
    const layout_part_t *p = svc_raw_part(s, r->name);
    svc_job_t *j = &s->job;
    if (!p)
        return no_such(s, r->name);
    uint64_t len = r->length;
    if (len == 0 && r->offset <= part_bytes(s, p))
        len = part_bytes(s, p) - r->offset;
    int err = raw_range(s, r->name, r->offset, len, &p);
    if (err)
        return err;
    SVC_JOB_NOT_COPY(s); /* issue 14: the union */
    svc_copy_str(j->show, sizeof(j->show), r->name);
    j->kind = SVC_JOB_HASH;
    err = svc_job_hash_begin(s, USR, NULL, (uint32_t)r->offset,
                             (uint32_t)len);
    j->hraw = 1;
    j->hfirst = p->first_block;
    uint32_t budget = SVC_JOB_STEP_BYTES;
    int rr = err ? err : svc_job_hash_step(s, &budget);
    if (rr != 0)
        return svc_hash_done(s, rr);
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

/* ---- verified raw updates --------------------------------------------------------- */

const layout_part_t *svc_raw_of_rel(const svc_t *s, const char *rel)
{
    const char *name = svc_raw_rel_name(rel);
    return name ? svc_raw_part(s, name) : NULL;
}

const char *svc_raw_rel_name(const char *rel)
{
    size_t n = strlen(RAW_DIR);
    if (strncmp(rel, RAW_DIR "/", n + 1) != 0)
        return NULL;
    return rel + n + 1;
}

int svc_raw_bundle_path(svc_t *s, const char *in, uint64_t size, bool remove,
                        char *rel)
{
    const char *name = in + 4; /* after "raw:" */
    const layout_part_t *p = svc_raw_part(s, name);
    if (!p)
        return no_such(s, name);
    if (remove)
        return svc_fail_path(s, CFS_ERR_INVAL, in, "a raw partition cannot "
                             "be removed by an update (erase it instead)");
    if (size > part_bytes(s, p))
        return svc_fail_path(s, CFS_ERR_FBIG, in, "the image is larger than "
                             "the raw partition");
    strcpy(rel, RAW_DIR "/");
    strcat(rel, p->name);
    return 0;
}

/* ---- the install in steps (after an UpdateCommit) ----------------------------- */
enum { RAW_FIND = 0, RAW_ERASE, RAW_PROG, RAW_CHECK };

/* Drop the image at hand as failed (a problem; its copy stays). */
static void inst_fail(svc_t *s, const layout_part_t *p)
{
    svc_problem(s, USR, "cannot write the committed raw image", p->name,
                "kept; tried again at the next start");
    s->job.rphase = RAW_FIND;
    s->job.ridx++;
}

int svc_raw_install_step(svc_t *s, uint32_t *budget)
{
    svc_job_t *j = &s->job;
    svc_part_t *u = &s->part[USR];
    const flash_dev_t *dev = s->cfg.dev;
    char rel[sizeof(RAW_DIR) + LAYOUT_NAME_MAX + 1];
    cfs_stat_t st;
    int err;
    while (j->ridx < s->layout.nparts) {
        const layout_part_t *p = &s->layout.part[j->ridx];
        if (p->kind != LAYOUT_KIND_RAW) {
            j->ridx++;
            continue;
        }
        staged_path(p, rel);
        if (!*budget)
            return 0;
        switch (j->rphase) {
        case RAW_FIND: {
            uint32_t slot;
            if (!u->mounted || cfs_stat(&u->fs, rel, &st) != 0) {
                j->ridx++; /* nothing staged for it */
                continue;
            }
            man_entry_t *me = svc_me_take(s); /* issue 14 */
            int k = man_find(&u->man, rel, me, &slot);
            bool size_ok = k == 1 && st.size == me->size;
            svc_me_give(s);
            if (k < 0) {
                inst_fail(s, p);
                continue;
            }
            if (k == 0 || st.type != CFS_TYPE_FILE || !size_ok ||
                (uint64_t)st.size > part_bytes(s, p)) {
                /* not a committed image: a leftover of nothing; dropped */
                svc_problem(s, USR, "a staged raw image does not match its "
                            "manifest entry", p->name, "dropped it");
                (void)(st.type == CFS_TYPE_FILE ? cfs_remove(&u->fs, rel)
                                                : txn_clear(&s->txw, &u->fs, rel));
                j->ridx++;
                continue;
            }
            if (SVC_LOGS(s)) {
                sb_t b = svc_log_begin(s, NULL);
                svc_sb_str(&b, "raw ");
                svc_sb_qstr(&b, p->name);
                svc_sb_str(&b, ": writing the committed image (");
                svc_sb_u64(&b, st.size);
                svc_sb_str(&b, " bytes)");
                svc_log_end(s);
            }
            j->rsize = st.size;
            j->roff = 0;
            j->rphase = RAW_ERASE;
            break;
        }
        case RAW_ERASE: /* a block counts as its size */
            err = 0;
            while (j->roff < p->block_count && *budget && !err) {
                err = dev->erase(dev, p->first_block + j->roff);
                j->roff++;
                *budget -= *budget < dev->block_size ? *budget
                                                     : dev->block_size;
            }
            if (err) {
                inst_fail(s, p);
            } else if (j->roff == p->block_count) {
                j->rphase = RAW_PROG;
                j->roff = 0;
            }
            break;
        case RAW_PROG:
            err = cfs_file_open(&u->fs, &j->f, rel, CFS_O_RDONLY);
            if (err) {
                inst_fail(s, p);
                break;
            }
            while (!err && j->roff < j->rsize && *budget) {
                uint32_t n = j->rsize - j->roff;
                if (n > sizeof(s->scratch))
                    n = (uint32_t)sizeof(s->scratch);
                int got = cfs_file_pread(&u->fs, &j->f, s->scratch, n, j->roff);
                if (got != (int)n)
                    err = got < 0 ? got : CFS_ERR_CORRUPT;
                else
                    err = raw_prog(s, p, j->roff, s->scratch, n);
                j->roff += n;
                *budget -= *budget < n ? *budget : n;
            }
            (void)cfs_file_close(&u->fs, &j->f);
            if (!err && j->roff >= j->rsize)
                err = raw_sync(s);
            if (err) {
                inst_fail(s, p);
            } else if (j->roff >= j->rsize) {
                csha_init(&j->sha);
                if (csha_start(&j->sha)) {
                    csha_free(&j->sha);
                    inst_fail(s, p);
                    break;
                }
                j->rphase = RAW_CHECK;
                j->roff = 0;
            }
            break;
        default: { /* RAW_CHECK: read it back */
            uint8_t sha[32];
            uint32_t slot;
            err = 0;
            while (j->roff < j->rsize && *budget && !err) {
                uint32_t n = j->rsize - j->roff;
                if (n > sizeof(s->scratch))
                    n = (uint32_t)sizeof(s->scratch);
                err = svc_raw_pread(s, p, j->roff, s->scratch, n);
                if (!err && csha_update(&j->sha, s->scratch, n))
                    err = CFS_ERR_IO;
                j->roff += n;
                *budget -= *budget < n ? *budget : n;
            }
            if (!err && j->roff < j->rsize)
                break; /* more in the next step */
            if (!err && csha_finish(&j->sha, sha))
                err = CFS_ERR_IO;
            csha_free(&j->sha);
            if (!err) {
                man_entry_t *me = svc_me_take(s); /* issue 14 */
                if (man_find(&u->man, rel, me, &slot) != 1 ||
                    memcmp(sha, me->sha, 32) != 0)
                    err = CFS_ERR_IO; /* the flash did not keep it */
                svc_me_give(s);
            }
            if (!err)
                err = cfs_remove(&u->fs, rel); /* done: nothing to finish */
            if (err) {
                inst_fail(s, p);
                break;
            }
            j->rphase = RAW_FIND;
            j->ridx++;
            break;
        }
        }
    }
    j->rawing = 0;
    return 1;
}

void svc_raw_install_cancel(svc_t *s)
{
    svc_job_t *j = &s->job;
    if (!j->rawing)
        return;
    if (j->rphase == RAW_CHECK)
        csha_free(&j->sha);
    j->rawing = 0;
    j->rphase = RAW_FIND;
    (void)svc_raw_finish(s); /* at once: never left half written */
}

bool svc_raw_pending(svc_t *s)
{
    for (uint32_t i = 0; i < s->layout.nparts; i++)
        if (s->layout.part[i].kind == LAYOUT_KIND_RAW &&
            staged(s, &s->layout.part[i]))
            return true;
    return false;
}

int svc_raw_finish(svc_t *s)
{
    svc_job_t *j = &s->job;
    svc_part_t *u = &s->part[USR];
    if (!u->mounted || !u->has_man)
        return 0;
    j->rphase = RAW_FIND;
    j->ridx = 0;
    uint32_t budget = UINT32_MAX;
    while (!svc_raw_install_step(s, &budget))
        budget = UINT32_MAX;
    return svc_raw_pending(s) ? CFS_ERR_IO : 0;
}

int svc_raw_prepare(svc_t *s, uint32_t i)
{
    bool any = false;
    for (uint32_t k = 0; k < s->layout.nparts; k++)
        any |= s->layout.part[k].kind == LAYOUT_KIND_RAW;
    svc_part_t *p = &s->part[i];
    if (!any || !p->mounted || p->state != SVC_PART_OK)
        return 0;
    int err = cfs_mkdir(&p->fs, RAW_DIR);
    return err == CFS_ERR_EXIST ? 0 : err;
}

int svc_raw_check_begin(svc_t *s, const man_entry_t *e,
                        cellar_ProblemKind *kind)
{
    const layout_part_t *p = svc_raw_part(s, svc_raw_rel_name(e->path));
    cfs_stat_t st;
    if (!p || e->size > part_bytes(s, p)) {
        *kind = cellar_ProblemKind_MISSING;
        return 0;
    }
    if (cfs_stat(&s->part[USR].fs, e->path, &st) == 0) {
        /* staged, not yet written: start-up finishes it */
        *kind = cellar_ProblemKind_MISMATCH;
        return 0;
    }
    svc_job_t *j = &s->job;
    int err = svc_job_hash_begin(s, USR, NULL, 0, e->size);
    j->hraw = 1;
    j->hfirst = p->first_block;
    if (err) {
        svc_job_hash_end(s);
        return err;
    }
    return 1;
}
#else /* issue 14 */
const layout_part_t *svc_raw_part(const svc_t *s, const char *name)
{
    (void)s;
    (void)name;
    return NULL;
}
#endif
