/* svc_copy.c - copies between partitions in steps: Backup, Restore, a
 * repair's restore (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-
 * side code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- copies between partitions (backup, restore) ------------------------------------ */

static void add_skip(cellar_CopyReply *out, svc_t *s, uint32_t part,
                     const char *path, cellar_ProblemKind k)
{
    if (!out || out->skipped_count >= pb_arraysize(cellar_CopyReply, skipped))
        return;
    cellar_Problem *pr = &out->skipped[out->skipped_count++];
    svc_show_path(s, part, path, pr->path, sizeof(pr->path));
    pr->kind = k;
}

/* Copies in steps (s->job.cp, see svc_copy_t): the verified files of
 * partition `from` named by cp->rel[0..n) (all when n == 0) go into
 * partition `to`, with their manifest entries, as one transaction staged
 * in CP_DIR; mirror: also remove from `to` what `from`'s manifest does not
 * have. Each file is hashed as it is copied, so the commit (one step, as
 * the transaction's rules make it atomic) reads no file data again. A
 * copy cut between steps (cancel, power) leaves `to` as it was: the
 * staging is dropped (txn_abort, or txn_load at the next mount). */
enum { CP_SCAN = 0, CP_CHECK_TO, CP_CHECK_FROM, CP_COPY, CP_MIRROR, CP_COMMIT };

/* decided: roll forward every transaction whose decision is durable but
 * whose roll forward stopped (an error after the decision): a copy into
 * either partition, and (with_tx) the staged update of /usr. 1 = one was
 * finished, 0 = none pending, or the error that stops one (left for the
 * next try, or the next start). Copies and updates call it before they
 * begin, so nothing is staged, restored or committed beside a commit that
 * is not finished. */
int svc_finish_decided(svc_t *s, bool with_tx)
{
    int done = 0, err;
    /* (a copy in progress began with this, and s->cp is its own) */
    for (uint32_t i = 0; !s->job.cp.active && i < s->nparts && i <= BAK; i++) {
        svc_part_t *p = &s->part[i];
        if (!p->mounted || !p->has_man || p->state != SVC_PART_OK)
            continue;
        txn_bind(&s->cp, &p->fs, &p->man, CP_DIR, &s->txw);
        err = txn_decided(&s->cp);
        if (err == 1) {
            err = txn_finish(&s->cp);
            done = 1;
        }
        if (err)
            return err;
    }
    txn_t *t = &s->tx;
    if (with_tx && t->fs && !t->active && (err = txn_decided(t)) != 0) {
        if (err < 0 || (err = txn_finish(t)))
            return err;
        done = 1;
    }
    return done;
}

int svc_copy_begin(svc_t *s, uint32_t from, uint32_t to, bool mirror,
                   bool backup)
{
    svc_copy_t *cp = &s->job.cp;
    static const uint8_t zero[32];
    int fin = svc_finish_decided(s, true);
    if (fin < 0)
        return fin;
    if (fin && s->job.kind && s->job.kind != SVC_JOB_COPY)
        return CFS_ERR_BUSY; /* a repair: what it saw was the commit unfinished */
    txn_bind(&s->cp, &s->part[to].fs, &s->part[to].man, CP_DIR, &s->txw);
    int err = txn_begin(&s->cp, zero, 0, 0);
    if (err)
        return err;
    if (cp->out) /* issue 14: in the job's union, a COPY job's */
        memset(cp->out, 0, sizeof(*cp->out));
    cp->files = 0;
    memset(cp->found, 0, sizeof(cp->found));
    cp->active = 1;
    cp->phase = CP_SCAN;
    cp->from = (uint8_t)from;
    cp->to = (uint8_t)to;
    cp->mirror = mirror;
    cp->backup = backup;
    cp->dst_open = 0;
    cp->slot = 0;
    cp->idx = 0;
    cp->err = 0;
    cp->rsrc = NULL;
    return 0;
}

static bool copy_wanted(svc_copy_t *cp, const char *path)
{
    if (cp->n == 0)
        return true;
    /* every path that matches counts as found: overlapping paths ("/a",
     * "/a/b", or one path twice) all match the files they share */
    bool want = false;
    for (uint32_t j = 0; j < cp->n; j++)
        if (man_under(path, cp->rel[j])) {
            cp->found[j] = true;
            want = true;
        }
    return want;
}

/* Close the file being copied (dropping the partial copy unless keep). */
static int copy_close(svc_t *s, bool keep)
{
    svc_copy_t *cp = &s->job.cp;
    int err = 0;
    if (cp->dst_open) {
        cfs_t *fs = &s->part[cp->to].fs;
        if (!keep)
            (void)cfs_file_revert(fs, &cp->dst);
        err = cfs_file_close(fs, &cp->dst);
        cp->dst_open = 0;
        if (!keep || err)
            (void)cfs_remove(fs, txn_data_path(&s->cp, cp->idx));
    }
    svc_job_hash_end(s);
    return err;
}

void svc_copy_cancel(svc_t *s)
{
    svc_copy_t *cp = &s->job.cp;
    if (!cp->active)
        return;
    (void)copy_close(s, false);
    (void)txn_abort(&s->cp);
    cp->active = 0;
}

/* A file the copy did not take: reported, not an error of the copy. */
static void copy_skip(svc_t *s, cellar_ProblemKind k)
{
    svc_copy_t *cp = &s->job.cp;
    add_skip(cp->out, s, cp->from, cp->e.path, k);
}

/* An error while copying cp->e: a problem of that file (skipped: 0), or
 * an error of the copy (returned). */
static int copy_file_error(svc_t *s, int err)
{
    if (err == CFS_ERR_NOENT || err == CFS_ERR_NOTDIR)
        copy_skip(s, cellar_ProblemKind_MISSING);
    else if (err == CFS_ERR_ISDIR)
        copy_skip(s, cellar_ProblemKind_MISMATCH);
    else if (err == CFS_ERR_CORRUPT)
        copy_skip(s, cellar_ProblemKind_UNREADABLE);
    else
        return err;
    return 0;
}

/* Start copying cp->e into the next staged file: 0 (copying, or skipped)
 * or an error of the copy. */
static int copy_file_begin(svc_t *s)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    cfs_t *fa = &s->part[cp->from].fs, *fb = &s->part[cp->to].fs;
    if (cp->idx == TXN_MAX_ENTRIES)
        return CFS_ERR_NOSPC;
    cp->rsrc = NULL;
    cfs_stat_t rst;
    const layout_part_t *rp = cp->from == USR ? svc_raw_of_rel(s, cp->e.path)
                                              : NULL;
    if (rp && cfs_stat(fa, cp->e.path, &rst) == CFS_ERR_NOENT) {
        /* issue 15: a raw entry: the copy reads the partition's bytes */
        if ((uint64_t)cp->e.size >
            (uint64_t)rp->block_count * s->cfg.dev->block_size)
            return copy_file_error(s, CFS_ERR_NOENT);
        int err = cfs_file_open(fb, &cp->dst, txn_data_path(&s->cp, cp->idx),
                                CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
        if (err)
            return err;
        cp->dst_open = 1;
        cp->off = 0;
        cp->size = cp->e.size;
        err = svc_job_hash_begin(s, USR, NULL, 0, cp->e.size);
        cp->rsrc = rp;
        if (err) {
            (void)copy_close(s, false);
            return err;
        }
        cp->phase = CP_COPY;
        return 0;
    }
    int err = cfs_file_open(fa, &j->f, cp->e.path, CFS_O_RDONLY);
    if (err)
        return copy_file_error(s, err);
    int32_t size = cfs_file_size(fa, &j->f);
    if (size < 0) {
        (void)cfs_file_close(fa, &j->f);
        return copy_file_error(s, size);
    }
    err = cfs_file_open(fb, &cp->dst, txn_data_path(&s->cp, cp->idx),
                       CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (err) {
        (void)cfs_file_close(fa, &j->f);
        return err;
    }
    cp->dst_open = 1;
    cp->off = 0;
    cp->size = (uint32_t)size;
    err = svc_job_hash_begin(s, cp->from, &j->f, 0, (uint32_t)size);
    if (err) {
        (void)copy_close(s, false);
        return err;
    }
    cp->phase = CP_COPY;
    return 0;
}

/* Copy up to *budget bytes (taken off it) from the job's file f (hashed,
 * partition fa) into cp.dst (fb): 1 = all copied (its SHA-256 in sha),
 * 0 = more to do, or an error. */
int svc_copy_chunk(svc_t *s, cfs_t *fa, cfs_t *fb, uint32_t *budget,
                   uint8_t sha[32])
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    while (cp->off < cp->size && *budget) {
        uint32_t want = cp->size - cp->off;
        if (want > sizeof(s->scratch))
            want = (uint32_t)sizeof(s->scratch);
        if (want > *budget)
            want = *budget;
        int n;
        if (cp->rsrc) { /* issue 15: a raw partition's bytes */
            n = svc_raw_pread(s, cp->rsrc, cp->off, s->scratch, want);
            n = n ? n : (int)want;
        } else {
            n = cfs_file_pread(fa, &j->f, s->scratch, want, cp->off);
        }
        if (n <= 0)
            return n < 0 ? n : CFS_ERR_CORRUPT;
        if (csha_update(&j->sha, s->scratch, (size_t)n))
            return CFS_ERR_IO;
        int w = cfs_file_pwrite(fb, &cp->dst, s->scratch, (uint32_t)n, cp->off);
        if (w < 0)
            return w;
        cp->off += (uint32_t)n;
        *budget -= (uint32_t)n;
    }
    if (cp->off < cp->size)
        return 0;
    return csha_finish(&j->sha, sha) ? CFS_ERR_IO : 1;
}

/* Copy up to *budget bytes of cp->e: 1 = this file is done (declared or
 * skipped), 0 = more to do, or an error of the copy. */
static int copy_file_step(svc_t *s, uint32_t *budget)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    cfs_t *fa = &s->part[cp->from].fs, *fb = &s->part[cp->to].fs;
    int err = svc_copy_chunk(s, fa, fb, budget, cp->cur.sha);
    if (err == 0)
        return 0;
    err = err < 0 ? err : 0;
    cp->phase = CP_SCAN;
    if (err) {
        (void)copy_close(s, false);
        return copy_file_error(s, err);
    }
    if ((err = copy_close(s, true)))
        return err;
    cp->cur.size = cp->size;
    if (memcmp(cp->cur.sha, cp->e.sha, 32) != 0 ||
        ((cp->e.flags & MAN_F_SIZE) && cp->size != cp->e.size)) {
        copy_skip(s, cellar_ProblemKind_MISMATCH);
        (void)cfs_remove(fb, txn_data_path(&s->cp, cp->idx));
        return 1;
    }
    cp->e.kind = MAN_TRACK;
    cp->e.flags = MAN_F_SIZE | MAN_F_SEND;
    cp->e.size = cp->size;
    if ((err = txn_declare(&s->cp, cp->idx++, &cp->e)))
        return err;
    s->cp.verified = s->cp.declared; /* hashed as it was copied */
    return 1;
}

/* Is path open by a client handle of /usr (not a shadow)? */
bool svc_path_busy(void *ctx, const char *path)
{
    svc_t *s = ctx;
    char show[SVC_SHOW_MAX];
    svc_show_path(s, USR, path, show, sizeof(show));
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (c->h[k].id && c->h[k].part == USR && !c->h[k].shadow &&
                strcmp(c->h[k].path, show) == 0)
                return true;
    return false;
}

/* Before a copy commits: close the client handles (readers) of the files
 * it may replace or remove on its target partition (a Restore's /usr, a
 * Backup's /bak): the copy wins. A file replaced under an open reader must
 * not stay open across the commit (a Backup over /bak files two clients
 * were reading left one empty after a restart: make fuzz-svc, issue 9). */
static void release_readers(svc_t *s)
{
    svc_copy_t *cp = &s->job.cp;
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (h->id && h->part == cp->to && !h->shadow &&
                &h->file != s->job.fp && copy_wanted(cp, svc_handle_rel(s, h)))
                svc_handle_release(s, h);
        }
}

/* The end of the copy: 0 done, or an error (`to` is unchanged). */
static int copy_commit(svc_t *s)
{
    svc_copy_t *cp = &s->job.cp;
    if (cp->idx == 0)
        return txn_abort(&s->cp);
    {
        bool found[SVC_MAX_ITEMS];
        memcpy(found, cp->found, sizeof(found));
        release_readers(s);
        memcpy(cp->found, found, sizeof(found));
    }
    s->cp.now = svc_now_s(s);
    txn_stats_t st;
    uint32_t bad = 0;
    int err = txn_commit(&s->cp, s->scratch, sizeof(s->scratch), &st, &bad,
                         NULL, NULL);
    if (err && s->cp.decided) {
        /* decided: the commit is made; only forward: once more now, else
         * at the next copy, update or start (svc_finish_decided) */
        int d = txn_decided(&s->cp);
        err = d == 0 ? 0 : d < 0 ? d : txn_finish(&s->cp);
    }
    if (err && !s->cp.decided)
        return err;
    if (cp->to == USR)
        (void)svc_raw_finish(s); /* issue 15: restored raw images */
    cp->files += st.written;
    if (cp->out) {
        cp->out->files += st.written;
        cp->out->removed += st.removed;
        cp->out->bytes += st.bytes;
    }
    return err;
}

/* One step of the copy: 1 = done (cp->err, cp->out), 0 = more to do. */
int svc_copy_step(svc_t *s, uint32_t *budget)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    svc_part_t *pa = &s->part[cp->from], *pb = &s->part[cp->to];
    uint32_t looked = 0, slot;
    cellar_ProblemKind k;
    int err = 0, r;
    for (;;) {
        switch (cp->phase) {
        case CP_SCAN:
            if (cp->slot >= man_slots(&pa->man)) {
                cp->phase = cp->mirror ? CP_MIRROR : CP_COMMIT;
                cp->slot = 0;
                continue;
            }
            if (looked++ == 16 || !*budget)
                return 0; /* slots read in this step */
            r = man_get(&pa->man, cp->slot++, &cp->e);
            if (r < 0) {
                err = r;
                goto fail;
            }
            if (r == 0 || !copy_wanted(cp, cp->e.path))
                continue;
            /* the same content there already? (then the source is only
             * checked, for the report) */
            r = man_find(&pb->man, cp->e.path, &cp->cur, &slot);
            if (r < 0) {
                err = r;
                goto fail;
            }
            if (r == 1 && svc_sha_eq(&cp->e, &cp->cur)) {
                r = svc_check_begin(s, cp->to, &cp->cur, &k);
                if (r == 1) {
                    cp->phase = CP_CHECK_TO;
                    continue;
                }
                if (r == 0 && k == cellar_ProblemKind_P_NONE)
                    goto check_from;
            }
            if ((err = copy_file_begin(s)))
                goto fail;
            continue;
        case CP_CHECK_TO:
            r = svc_job_hash_step(s, budget);
            if (r == 0)
                return 0;
            if (svc_check_done(s, r, &cp->cur, &k) == 0 &&
                k == cellar_ProblemKind_P_NONE)
                goto check_from;
            cp->phase = CP_SCAN;
            if ((err = copy_file_begin(s)))
                goto fail;
            continue;
        check_from:
            cp->phase = CP_SCAN;
            r = svc_check_begin(s, cp->from, &cp->e, &k);
            if (r == 1) {
                cp->phase = CP_CHECK_FROM;
                continue;
            }
            if (r < 0 && r != CFS_ERR_CORRUPT) {
                err = r;
                goto fail;
            }
            if (r < 0)
                k = cellar_ProblemKind_UNREADABLE;
            goto checked;
        case CP_CHECK_FROM:
            r = svc_job_hash_step(s, budget);
            if (r == 0)
                return 0;
            cp->phase = CP_SCAN;
            if ((err = svc_check_done(s, r, &cp->e, &k)))
                goto fail;
        checked:
            if (k != cellar_ProblemKind_P_NONE)
                copy_skip(s, k);
            else
                if (cp->out)
                    cp->out->unchanged++;
            continue;
        case CP_COPY:
            r = copy_file_step(s, budget);
            if (r < 0) {
                err = r;
                goto fail;
            }
            if (r == 0)
                return 0;
            continue;
        case CP_MIRROR: /* what `to` holds that `from` does not track */
            if (cp->slot >= man_slots(&pb->man)) {
                cp->phase = CP_COMMIT;
                continue;
            }
            if (looked++ == 16)
                return 0;
            r = man_get(&pb->man, cp->slot++, &cp->e);
            if (r < 0) {
                err = r;
                goto fail;
            }
            if (r == 0)
                continue;
            r = man_find(&pa->man, cp->e.path, &cp->cur, &slot);
            if (r < 0) {
                err = r;
                goto fail;
            }
            if (r == 1 || cp->idx == TXN_MAX_ENTRIES)
                continue;
            cp->e.kind = MAN_REMOVE;
            cp->e.flags = 0;
            if ((err = txn_declare(&s->cp, cp->idx++, &cp->e)))
                goto fail;
            s->cp.verified = s->cp.declared;
            continue;
        default: /* CP_COMMIT */
            err = copy_commit(s);
            if (err && s->cp.decided) { /* committed, not finished: kept */
                cp->active = 0;
                cp->err = err;
                return 1;
            }
            if (err)
                goto fail;
            cp->active = 0;
            cp->err = 0;
            return 1;
        }
    }
fail:
    svc_copy_cancel(s);
    cp->err = err;
    return 1;
}

/* Request paths (full device paths) into partition paths. */
/* Issue 14: rel may be in itself (each in[i] is resolved into s->pb before
 * rel[i] is written); a path inside a partition is at most SVC_MAX_PATH
 * bytes (svc_resolve), like the request's. */
_Static_assert(sizeof(((cellar_BackupRequest *)0)->paths[0]) ==
                   SVC_MAX_PATH + 1 &&
               sizeof(((cellar_RestoreRequest *)0)->paths[0]) ==
                   SVC_MAX_PATH + 1,
               "a request path holds a partition path");
static int copy_args(svc_t *s, const char (*in)[SVC_MAX_PATH + 1], pb_size_t n,
                     char rel[][SVC_MAX_PATH + 1], bool any_part)
{
    for (pb_size_t i = 0; i < n; i++) {
        int err = svc_resolve(s, in[i], &s->pb);
        if (err)
            return err;
        if (s->pb.part < 0 || (!any_part && s->pb.part != (int)USR))
            return svc_fail_path(s, CFS_ERR_INVAL, s->pb.show,
                                 any_part ? "name a path under /usr or /bak"
                                          : "name a path under /usr");
        CFS_ASSERT(strlen(s->pb.fs) <= SVC_MAX_PATH);
        memmove(rel[i], s->pb.fs, strlen(s->pb.fs) + 1);
    }
    return 0;
}

/* The reply of a Backup or Restore whose copy is done. */
void svc_copy_reply(svc_t *s)
{
    svc_copy_t *cp = &s->job.cp;
    cellar_CopyReply *o = &s->resp.body.copy;
    bool backup = cp->backup;
    if (cp->err && s->cp.decided) {
        /* decided: not "unchanged" - the copy is committed */
        (void)svc_fail_path(s, cp->err, backup ? "/bak" : "/usr",
                            backup ? "backup committed, but not finished: "
                                     "it is finished before the next copy or "
                                     "update, or at the next start"
                                   : "restore committed, but not finished: "
                                     "it is finished before the next copy or "
                                     "update, or at the next start");
        return;
    }
    if (cp->err) {
        (void)svc_fail_path(s, cp->err, backup ? "/bak" : "/usr",
                            backup ? "backup failed, /bak is unchanged"
                                   : "restore failed, /usr is unchanged");
        return;
    }
    CFS_ASSERT(cp->out == &s->job.cout); /* a Backup's or Restore's */
    *o = *cp->out;
    for (uint32_t j = 0; j < cp->n; j++)
        if (!cp->found[j])
            add_skip(o, s, USR, cp->rel[j],
                     backup ? cellar_ProblemKind_MISSING
                            : cellar_ProblemKind_NOT_IN_BACKUP);
    s->resp.which_body = cellar_Response_copy_tag;
    if (SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, NULL);
        svc_sb_str(&b, backup ? "backup: " : "restore: ");
        svc_sb_u64(&b, o->files);
        svc_sb_str(&b, " copied, ");
        svc_sb_u64(&b, o->unchanged);
        svc_sb_str(&b, " unchanged, ");
        svc_sb_u64(&b, o->skipped_count);
        svc_sb_str(&b, " skipped");
        svc_log_end(s);
    }
}

static int copy_rpc(svc_t *s, svc_conn_t *c, bool backup,
                    const char (*paths)[256], pb_size_t n)
{
    svc_job_t *j = &s->job;
    if (s->nparts <= BAK || !s->part[USR].has_man || !s->part[BAK].has_man)
        return svc_fail_path(s, CFS_ERR_IO, "/bak", "partition is not mounted");
    if (n > SVC_MAX_ITEMS)
        n = SVC_MAX_ITEMS;
    memset(j, 0, sizeof(*j));
    /* issue 14: with SVC_REQ_IN_QUEUE the request stays in c's queue until
     * the reply (svc_req_give): its paths become the partition paths */
#if SVC_REQ_IN_QUEUE
    CFS_ASSERT(c->req_held);
    char (*rel)[SVC_MAX_PATH + 1] = backup ? c->qreq.body.backup.paths
                                           : c->qreq.body.restore.paths;
    CFS_ASSERT(rel == paths);
#else
    char (*rel)[SVC_MAX_PATH + 1] = j->crel;
#endif
    int err = copy_args(s, paths, n, rel, !backup);
    if (err)
        return err;
    j->cp.n = n;
    for (uint32_t i = 0; i < n; i++)
        j->cp.rel[i] = rel[i];
    j->cp.out = &j->cout; /* issue 14: the union's COPY member */
    err = backup ? svc_copy_begin(s, USR, BAK, n == 0, true)
                 : svc_copy_begin(s, BAK, USR, false, false);
    if (err) {
        j->cp.err = err;
        j->cp.backup = backup;
        svc_copy_reply(s);
        return err;
    }
    j->kind = SVC_JOB_COPY;
    j->part = backup ? BAK : USR;
    uint32_t budget = SVC_JOB_STEP_BYTES;
    if (svc_copy_step(s, &budget)) { /* done at once */
        j->kind = SVC_JOB_NONE;
        svc_copy_reply(s);
        return s->resp.has_error ? CFS_ERR_IO : 0;
    }
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

int svc_do_backup(svc_t *s, svc_conn_t *c, const cellar_BackupRequest *r)
{
    return copy_rpc(s, c, true, r->paths, r->paths_count);
}

int svc_do_restore(svc_t *s, svc_conn_t *c, const cellar_RestoreRequest *r)
{
    return copy_rpc(s, c, false, r->paths, r->paths_count);
}
