/* svc_manifest_rpc.c - the manifest RPCs (Manifest, ManifestImport, Verify),
 * the steps of verify and of the start-up check, and the job kinds above the
 * job layer (svc_int.h, docs/ARCHITECTURE.md "Service core"). Device-side
 * code: no OS calls, no allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

static void repair_done(svc_t *s);

/* ---- manifest RPCs --------------------------------------------------------------- */

static void entry_out(svc_t *s, uint32_t part, const man_entry_t *e,
                      cellar_ManifestEntry *o)
{
    svc_show_path(s, part, e->path, o->path, sizeof(o->path));
    o->size = (e->flags & MAN_F_SIZE) ? (int64_t)e->size : -1;
    o->sha256.size = 32;
    memcpy(o->sha256.bytes, e->sha, 32);
    o->mtime = e->mtime;
}

int svc_do_manifest(svc_t *s, const cellar_ManifestRequest *r)
{
    int part = svc_part_arg(s, r->partition);
    if (part < 0)
        return -1 == part ? CFS_ERR_NOENT : part;
    man_t *m = &s->part[part].man;
    cellar_ManifestReply *o = &s->resp.body.manifest;
    uint32_t cap = pb_arraysize(cellar_ManifestReply, entries); /* 32, device 3 */
    uint32_t max = r->max_entries && r->max_entries < cap ? r->max_entries : cap;
    uint32_t n = man_slots(m);
    man_entry_t *e = svc_me_take(s); /* issue 14 */
    int k = 0;
    s->resp.which_body = cellar_Response_manifest_tag;
    for (uint32_t i = r->cursor; i < n; i++) {
        k = man_get(m, i, e);
        if (k < 0)
            break;
        if (k == 0)
            continue;
        if (o->entries_count == max) {
            o->next_cursor = i;
            break;
        }
        entry_out(s, (uint32_t)part, e, &o->entries[o->entries_count++]);
    }
    svc_me_give(s);
    if (k < 0) {
        s->resp.which_body = 0;
        return svc_fail_in(s, k, (uint32_t)part, MAN_FILE, NULL);
    }
    return 0;
}

static int import_in(svc_t *s, const cellar_ManifestImportRequest *r,
                     man_entry_t *e)
{
    svc_part_t *p = &s->part[USR];
    if (!p->has_man)
        return svc_fail_path(s, CFS_ERR_IO, "/usr", "partition is not mounted");
    /* every entry is checked before any is written: a bad one is EINVAL
     * (not the ENOSPC a full partition gives the writes) */
    for (int pass = 0; pass < 2; pass++)
    for (pb_size_t i = 0; i < r->entries_count; i++) {
        const cellar_ManifestEntry *in = &r->entries[i];
        memset(e, 0, sizeof(*e));
        int err = svc_usr_path(s, in->path, e->path);
        if (err) {
            man_revert(&p->man);
            return err;
        }
        if (in->sha256.size != 32 || in->size < -1 ||
            in->size > (int64_t)CFS_FILE_MAX) {
            man_revert(&p->man);
            return svc_fail_path(s, CFS_ERR_INVAL, s->pb.show,
                                 in->sha256.size != 32
                                     ? "sha256 must be 32 bytes"
                                     : "size must be -1 (unknown) or a file size");
        }
        if (pass == 0)
            continue; /* (enospc: the first pass only checks) */
        e->kind = MAN_TRACK;
        e->flags = in->size >= 0 ? MAN_F_SIZE : 0;
        e->size = in->size >= 0 ? (uint32_t)in->size : 0;
        e->mtime = svc_now_s(s);
        memcpy(e->sha, in->sha256.bytes, 32);
        if ((err = man_set(&p->man, e))) {
            man_revert(&p->man);
            return svc_fail_in(s, err, USR, e->path, NULL);
        }
    }
    /* (enospc: no entries, nothing written: nothing to commit, and the
     * manifest may be open read-only) */
    int err = p->man.held ? man_commit(&p->man, NULL, NULL, 0) : 0;
    if (err)
        return svc_fail_in(s, err, USR, MAN_FILE, NULL);
    svc_reply_done(s);
    return 0;
}

int svc_do_manifest_import(svc_t *s, const cellar_ManifestImportRequest *r)
{
    int err = import_in(s, r, svc_me_take(s)); /* issue 14 */
    svc_me_give(s);
    return err;
}

int svc_do_verify(svc_t *s, svc_conn_t *c, const cellar_VerifyRequest *r)
{
    int part = svc_part_arg(s, r->partition);
    if (part < 0)
        return CFS_ERR_NOENT;
    if (r->repair && part != (int)USR)
        return svc_fail_path(s, CFS_ERR_INVAL, r->partition,
                             "only /usr can be repaired (from /bak)");
    svc_job_t *j = &s->job;
    memset(j, 0, sizeof(*j));
    j->kind = SVC_JOB_VERIFY;
    j->part = (uint8_t)part;
    j->repair = r->repair;
    j->cursor = r->cursor;
    uint32_t cap = pb_arraysize(cellar_VerifyReply, problems); /* 16, device 3 */
    j->max = r->max_entries && r->max_entries < cap ? r->max_entries : cap;
    j->nslots = man_slots(&s->part[part].man);
    /* issue 14: r is read; with SVC_REQ_IN_QUEUE its bytes (c's queue,
     * held until the reply) take the reply so far */
#if SVC_REQ_IN_QUEUE
    CFS_ASSERT(c->req_held);
    j->vr = &c->qvr;
#else
    j->vr = &j->vr_own;
#endif
    memset(j->vr, 0, sizeof(*j->vr));
    if (svc_update_job_step(s))
        return s->resp.has_error ? CFS_ERR_INVAL : 0; /* done at once */
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

static int entry_begin(svc_t *s, cellar_ProblemKind *kind)
{
    return svc_check_begin(s, s->job.part, &s->job.e, kind);
}

static int entry_hashed(svc_t *s, int r, cellar_ProblemKind *kind)
{
    return svc_check_done(s, r, &s->job.e, kind);
}

/* A problem with s->job.e: report it (verify), restore it (repair, the
 * check). Requests ran between the steps that read the file: if its entry
 * changed since, the file was rewritten with it and is not reported. */
static void entry_problem(svc_t *s, cellar_ProblemKind k)
{
    svc_job_t *j = &s->job;
    man_entry_t *now = svc_me2_take(s); /* issue 14 */
    uint32_t slot;
    int r = man_find(&s->part[j->part].man, j->e.path, now, &slot);
    bool changed = r == 1 && (now->size != j->e.size ||
                              now->flags != j->e.flags ||
                              now->mtime != j->e.mtime ||
                              memcmp(now->sha, j->e.sha, 32) != 0);
    svc_me2_give(s);
    if (changed || r == 0)
        return;
    if (j->kind == SVC_JOB_CHECK) {
        j->bad++;
        svc_log_path(s, "check:", USR, j->e.path,
                     k == cellar_ProblemKind_MISSING ? "missing"
                     : k == cellar_ProblemKind_MISMATCH ? "corrupt (SHA-256 differs)"
                                                    : "unreadable");
    } else {
        if (j->vr->problems_count >= pb_arraysize(cellar_VerifyReply, problems))
            return;
        cellar_Problem *pr = &j->vr->problems[j->vr->problems_count++];
        svc_show_path(s, j->part, j->e.path, pr->path, sizeof(pr->path));
        pr->kind = k;
        if (!j->repair)
            return;
    }
    /* the restore of this one file: a copy in steps (repair_done) */
    svc_copy_t *cp = &j->cp;
    cp->rel[0] = j->e.path; /* stays while the repair goes on */
    cp->out = NULL;         /* (the union holds vr): files only */
    cp->n = 1;
    j->kprob = (uint8_t)k;
    s->cp.decided = 0; /* decided: says this restore's only (repair_done) */
    int err = s->nparts > BAK && s->part[BAK].has_man
                  ? svc_copy_begin(s, BAK, USR, false, false)
                  : CFS_ERR_NOENT;
    if (err) {
        cp->err = err;
        repair_done(s);
    }
}

/* The restore of s->job.e is over (s->job.cp): log it, mark it. */
static void repair_done(svc_t *s)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    /* decided: a restore that is committed but not finished is repaired */
    bool ok = (!cp->err || s->cp.decided) && cp->files == 1;
    if (j->kind == SVC_JOB_CHECK) {
        if (ok) {
            j->fixed++;
            svc_log_path(s, "check: restored", USR, j->e.path, "from /bak");
        } else {
            svc_log_path(s, "check: cannot restore", USR, j->e.path,
                         cp->err ? svc_reason(cp->err) : "no verified copy in /bak");
        }
        return;
    }
    j->vr->problems[j->vr->problems_count - 1].repaired = ok;
    if (ok)
        svc_log_path(s, "verify: restored", USR, j->e.path, "from /bak");
}

/* The job is at its end: the reply (verify) or the summary (check). */
static int job_end(svc_t *s)
{
    svc_job_t *j = &s->job;
    if (j->kind == SVC_JOB_VERIFY) {
        s->resp.which_body = cellar_Response_verify_tag;
        s->resp.body.verify = *j->vr;
        j->kind = SVC_JOB_NONE;
        return 1;
    }
    if (SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, NULL);
        svc_sb_str(&b, "check of /usr: ");
        svc_sb_u64(&b, j->nslots);
        svc_sb_str(&b, " manifest slots, ");
        svc_sb_u64(&b, j->bad);
        svc_sb_str(&b, " problems, ");
        svc_sb_u64(&b, j->fixed);
        svc_sb_str(&b, " restored from /bak");
        svc_log_end(s);
    }
    j->kind = SVC_JOB_NONE;
    return 1;
}

/* A device error: a verify fails naming the path; the check logs it and
 * goes on with the next entry. */
static int entry_error(svc_t *s, int err, const char *path)
{
    svc_job_t *j = &s->job;
    if (j->kind == SVC_JOB_CHECK) {
        svc_log_path(s, "check: cannot read", USR, path, svc_reason(err));
        return 0;
    }
    j->kind = SVC_JOB_NONE;
    (void)svc_fail_in(s, err, j->part, path, NULL);
    return 1;
}

int svc_update_job_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    man_t *m = &s->part[j->part].man;
    uint32_t budget = SVC_JOB_STEP_BYTES, looked = 0;
    cellar_ProblemKind k;
    if (j->kind == SVC_JOB_COPY) {
        if (!svc_copy_step(s, &budget))
            return 0;
        svc_copy_reply(s);
        j->kind = SVC_JOB_NONE;
        return 1;
    }
    if (j->kind == SVC_JOB_COMMIT)
        return svc_commit_step(s);
    if (j->kind == SVC_JOB_DECLARE) {
        if (!svc_declare_run(s))
            return 0;
        j->kind = SVC_JOB_NONE;
        return 1;
    }
    for (;;) {
        if (j->cp.active) { /* a repair's restore */
            if (!svc_copy_step(s, &budget))
                return 0;
            repair_done(s);
            if (!budget)
                return 0;
            continue;
        }
        if (j->hashing) {
            int r = svc_job_hash_step(s, &budget);
            if (r == 0)
                return 0; /* the budget is spent */
            int err = entry_hashed(s, r, &k);
            if (err && entry_error(s, err, j->e.path))
                return 1;
            if (!err && k != cellar_ProblemKind_P_NONE)
                entry_problem(s, k);
            if (!budget || j->cp.active)
                return 0;
            continue;
        }
        if (j->cursor >= j->nslots)
            return job_end(s);
        if (looked++ == 16)
            return 0; /* slots read in this step */
        SVC_JOB_NOT_COPY(s); /* issue 14: the union */
        int r = man_get(m, j->cursor, &j->e);
        if (r < 0) {
            if (j->kind == SVC_JOB_CHECK) {
                svc_log_path(s, "check: cannot read", USR, MAN_FILE, svc_reason(r));
                j->cursor = j->nslots;
                return job_end(s);
            }
            j->kind = SVC_JOB_NONE;
            (void)svc_fail_in(s, r, j->part, MAN_FILE, NULL);
            return 1;
        }
        if (r == 0) {
            j->cursor++;
            continue;
        }
        if (j->kind == SVC_JOB_VERIFY && j->vr->checked == j->max) {
            j->vr->next_cursor = j->cursor;
            return job_end(s);
        }
        j->cursor++;
        if (j->kind == SVC_JOB_VERIFY)
            j->vr->checked++;
        int err = entry_begin(s, &k);
        if (err < 0 && entry_error(s, err, j->e.path))
            return 1;
        if (err == 0 && k != cellar_ProblemKind_P_NONE)
            entry_problem(s, k);
    }
}

void svc_update_job_cancel(svc_t *s)
{
    svc_raw_install_cancel(s); /* issue 15: finished at once */
    svc_copy_cancel(s);
    svc_lcopy_end(s, false);
}

const svc_job_kinds_t svc_job_kinds = { svc_update_job_step,
                                        svc_update_job_cancel };
