/* svc_job.c - long requests (svc_job_t): hashing in steps, deferring the
 * reply, running and cancelling the job (svc_int.h, docs/ARCHITECTURE.md
 * "Service core"). Device-side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- long requests ------------------------------------------------------------- */

int svc_job_hash_begin(svc_t *s, uint32_t part, cfs_file_t *fp, uint32_t off,
                       uint32_t len)
{
    svc_job_t *j = &s->job;
    j->hpart = (uint8_t)part;
    j->hraw = 0;
    j->fp = fp;
    j->off = off;
    j->left = len;
    j->total = len;
    j->hashing = 1;
    csha_init(&j->sha);
    return csha_start(&j->sha) ? CFS_ERR_IO : 0;
}

int svc_job_hash_step(svc_t *s, uint32_t *budget)
{
    svc_job_t *j = &s->job;
    cfs_t *fs = &s->part[j->hpart].fs;
    while (j->left && *budget) {
        uint32_t want = j->left < sizeof(s->scratch) ? j->left
                                                     : (uint32_t)sizeof(s->scratch);
        if (want > *budget)
            want = *budget;
        int n;
        if (CELLAR_WITH_RAW && j->hraw) { /* issue 15: a raw partition, within one block */
            const flash_dev_t *dev = s->cfg.dev;
            uint32_t in = j->off % dev->block_size;
            if (want > dev->block_size - in)
                want = dev->block_size - in;
            n = dev->read(dev, j->hfirst + j->off / dev->block_size, in,
                          s->scratch, want);
            if (n == 0)
                n = (int)want;
        } else {
            n = cfs_file_pread(fs, j->fp, s->scratch, want, j->off);
        }
        if (n < 0)
            return n;
        if (n == 0) /* shorter than its size said: corrupt */
            return CFS_ERR_CORRUPT;
        if (csha_update(&j->sha, s->scratch, (size_t)n))
            return CFS_ERR_IO;
        j->off += (uint32_t)n;
        j->left -= (uint32_t)n;
        *budget -= (uint32_t)n;
    }
    if (j->left)
        return 0;
    return csha_finish(&j->sha, j->digest) ? CFS_ERR_IO : 1;
}

void svc_job_hash_end(svc_t *s)
{
    svc_job_t *j = &s->job;
    if (!j->hashing)
        return;
    if (j->fp == &j->f && !j->hraw)
        (void)cfs_file_close(&s->part[j->hpart].fs, &j->f);
    csha_free(&j->sha);
    j->fp = NULL;
    j->hashing = 0;
    j->hraw = 0;
}

void svc_job_defer(svc_t *s, svc_conn_t *c)
{
    s->job.conn = c;
    s->job.req_id = s->resp.id;
    s->job.op = s->op;
    s->deferred = 1;
}

/* The end of a Hash: the reply in s->resp. */
int svc_hash_done(svc_t *s, int r)
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

int svc_job_gc_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    cfs_t *fs = &s->part[j->part].fs;
    cfs_statvfs_t v;
    int err = cfs_statvfs(fs, &v);
    if (err < 0)
        return err;
    /* done: the blocks asked for were gained; or (gc of all) what is
     * stale is at most a block or an eighth of the log - collecting it
     * would move seven times as much live data, and moving data makes
     * stale metadata of its own; or the log as it was at the start was
     * swept once (every stale record then was reached) */
    if (j->gc_want ? v.free >= j->gc_free0 + (uint64_t)j->gc_want * v.block_size
                   : v.reclaimable <= v.block_size || v.reclaimable <= v.used / 8)
        return 1;
    if (j->gc_swept >= j->gc_limit)
        return 1;
    int r = cfs_gc(fs, SVC_GC_STEP_BLOCKS);
    if (r < 0)
        return r;
    if (r == 0) /* nothing more can be freed (the log is down to its head) */
        return 1;
    j->gc_swept += (uint32_t)r;
    return 0;
}

int svc_gc_done(svc_t *s, int r)
{
    svc_job_t *j = &s->job;
    j->kind = SVC_JOB_NONE;
    const char *name = s->part[j->part].name;
    cfs_statvfs_t v;
    if (r >= 0)
        r = cfs_statvfs(&s->part[j->part].fs, &v);
    if (r < 0) {
        char show[24];
        show[0] = '/';
        svc_copy_str(show + 1, sizeof(show) - 1, name);
        return svc_fail_path(s, r, show, NULL);
    }
    cellar_GcReply *o = &s->resp.body.gc;
    s->resp.which_body = cellar_Response_gc_tag;
    o->blocks_swept = j->gc_swept;
    o->reclaimed = j->gc_stale0 > v.reclaimable ? j->gc_stale0 - v.reclaimable : 0;
    o->free_before = j->gc_free0;
    o->free_after = v.free;
    o->reclaimable_after = v.reclaimable;
    return 0;
}

void svc_job_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    j->steps++;
    if (j->conn) { /* its connection (and a handle it hashes) is busy */
        j->conn->last_ms = s->now_ms;
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (j->fp == &j->conn->h[k].file)
                j->conn->h[k].last_ms = s->now_ms;
    }
    svc_resp_reset(s, j->req_id);
    s->op = j->op;
    int done;
    if (j->kind == SVC_JOB_HASH) {
        uint32_t budget = SVC_JOB_STEP_BYTES;
        int r = svc_job_hash_step(s, &budget);
        done = r != 0;
        if (done)
            (void)svc_hash_done(s, r);
    } else if (j->kind == SVC_JOB_EXT) {
        done = j->ext_step(s) != 0;
    } else if (j->kind == SVC_JOB_GC) {
        int r = svc_job_gc_step(s);
        done = r != 0;
        if (done)
            (void)svc_gc_done(s, r);
    } else {
        done = s->job_kinds->step(s);
    }
    if (!done)
        return;
    svc_conn_t *c = j->conn;
    j->kind = SVC_JOB_NONE;
    j->conn = NULL;
    s->decided_check = 1; /* a commit, copy or repair may have left one */
    if (!c)
        return;
    svc_req_give(c); /* issue 14: its request is done with */
    svc_resp_finish(s, c);
}

void svc_job_cancel(svc_t *s, int err, const char *why)
{
    svc_job_t *j = &s->job;
    if (!j->kind)
        return;
    /* decided: an UpdateCommit writing its raw images is committed; the
     * cancel finishes them at once and its reply is its result */
    bool made = j->kind == SVC_JOB_COMMIT && j->rawing;
    if (j->kind == SVC_JOB_EXT && j->ext_cancel)
        j->ext_cancel(s);
    s->job_kinds->cancel(s); /* a copy's staging is dropped */
    svc_job_hash_end(s);
    svc_conn_t *c = j->conn;
    if (j->kind == SVC_JOB_CHECK)
        svc_log_msg(s, NULL, "check of /usr: stopped before the end");
    j->kind = SVC_JOB_NONE;
    j->conn = NULL;
    s->decided_check = 1; /* the cancel keeps a decided commit (decided) */
    if (c)
        svc_req_give(c); /* issue 14: its request is done with */
    if (!c || !why)
        return;
    /* (the request that cancels, e.g. a Format, answers after this) */
    uint32_t id = s->resp.id;
    const char *op = s->op;
    svc_resp_reset(s, j->req_id);
    s->op = j->op;
    if (made) { /* the counts its commit made (svc_commit_step) */
        cellar_UpdateCommitReply *o = &s->resp.body.update_commit;
        s->resp.which_body = cellar_Response_update_commit_tag;
        o->written = j->cst.written;
        o->removed = j->cst.removed;
        o->unchanged = j->cst.unchanged;
        o->bytes = j->cst.bytes;
        s->tx_owner = NULL;
        svc_log_msg(s, c, "update committed (its raw images were finished "
                          "at once: the request was cancelled)");
        svc_resp_finish(s, c);
    } else {
        (void)svc_fail(s, err, why);
        c->errors++;
        svc_log_failure(s, c);
        svc_resp_send(s, c);
    }
    svc_resp_reset(s, id);
    s->op = op;
}
