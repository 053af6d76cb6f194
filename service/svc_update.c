/* svc_update.c - the update RPCs: UpdateBegin, UpdateDeclare (with local
 * copies), UpdateWrite, UpdateCommit (in steps), UpdateAbort (svc_int.h,
 * docs/ARCHITECTURE.md "Service core"). Device-side code: no OS calls, no
 * allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- update transactions ------------------------------------------------------------- */

static void hex8(char *out, const uint8_t *id)
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 4; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[8] = 0;
}

static int no_update(svc_t *s)
{
    return svc_fail(s, CFS_ERR_INVAL,
                    "no update is in progress on this connection (send "
                    "UpdateBegin first)");
}

/* The update transaction, with the index of its paths attached (attach
 * binds s->tx afresh at every mount: the index is then rebuilt from the
 * plan as needed). */
static txn_t *tx_indexed(svc_t *s)
{
    if (s->tx.ix != &s->txix) {
        memset(&s->txix, 0, sizeof(s->txix));
        s->tx.ix = &s->txix;
    }
    return &s->tx;
}

/* "entries 0 and 1 conflict (why; tail): "/usr/a", "/usr/a/b"" (cur: the
 * path of the entry being declared, entry s->tx.declared, or NULL) */
static int conflict(svc_t *s, uint32_t a, uint32_t b, int why,
                    const char *tail, const char *cur)
{
    man_entry_t *e = svc_me2_take(s); /* issue 14 */
    char show[SVC_SHOW_MAX];
    sb_t m = svc_err_begin(s, CFS_ERR_INVAL);
    svc_sb_str(&m, ": entries ");
    svc_sb_u64(&m, a);
    svc_sb_str(&m, " and ");
    svc_sb_u64(&m, b);
    svc_sb_str(&m, " conflict (");
    svc_sb_str(&m, why == TXN_CONFLICT_TWICE ? "the same path twice"
                   : why == TXN_CONFLICT_UNDER_FILE
                       ? "a path below a file of the bundle"
                       : "a file below a directory the bundle removes");
    svc_sb_str(&m, tail);
    svc_sb_str(&m, "):");
    for (int k = 0; k < 2; k++) {
        uint32_t i = k ? b : a;
        if (i == s->tx.declared && cur) /* the entry being declared */
            svc_copy_str(e->path, sizeof(e->path), cur);
        else if (txn_entry(&s->tx, i, e))
            continue;
        svc_show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&m, k ? ", " : " ");
        svc_sb_qstr(&m, show);
    }
    svc_me2_give(s);
    return CFS_ERR_INVAL;
}

/* decided: why an update cannot begin or commit now */
#define DECIDED_LEFT "an earlier update or copy is decided but cannot be " \
                     "finished now (kept: tried again before the next " \
                     "update or copy, and at the next start); nothing " \
                     "changed"

/* The connection's transaction, checked against a bundle id (size 0 =
 * any). NULL with the error set. */
static txn_t *own_tx(svc_t *s, svc_conn_t *c, const uint8_t *id, pb_size_t n)
{
    (void)tx_indexed(s);
    if (!s->tx.active || s->tx_owner != c) {
        (void)no_update(s);
        return NULL;
    }
    if (n && (n != 32 || memcmp(id, s->tx.id, 32) != 0)) {
        (void)svc_fail(s, CFS_ERR_INVAL,
                       "bundle id does not match the update in progress");
        return NULL;
    }
    return &s->tx;
}

static void update_log(svc_t *s, svc_conn_t *c, const char *what)
{
    if (!SVC_LOGS(s))
        return;
    char h[9];
    hex8(h, s->tx.id);
    sb_t b = svc_log_begin(s, c);
    svc_sb_str(&b, "update ");
    svc_sb_str(&b, h);
    svc_sb_str(&b, ": ");
    svc_sb_str(&b, what);
    svc_log_end(s);
}

int svc_do_update_begin(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateBeginRequest *r)
{
    svc_part_t *p = &s->part[USR];
    txn_t *t = tx_indexed(s);
    if (!p->has_man)
        return svc_fail_path(s, CFS_ERR_IO, "/usr", "partition is not mounted");
    if (p->state != SVC_PART_OK && !svc_store_retry(s, USR))
        return svc_fail_path(s, CFS_ERR_NOSPC, "/usr",
                             "the partition is too full for the service's "
                             "bookkeeping: remove files first");
    if (r->bundle.size != 32)
        return svc_fail(s, CFS_ERR_INVAL, "bundle id must be 32 bytes");
    if (r->entries > TXN_MAX_ENTRIES) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, ": a bundle has at most 1024 entries, this one ");
        svc_sb_u64(&b, r->entries);
        return CFS_ERR_INVAL;
    }
    cfs_statvfs_t v;
    int err = cfs_statvfs(&p->fs, &v);
    if (err)
        return svc_fail_path(s, err, "/usr", NULL);
    if (r->bytes > v.total) {
        sb_t b = svc_err_begin(s, CFS_ERR_NOSPC);
        svc_sb_str(&b, ": the bundle is ");
        svc_sb_u64(&b, r->bytes);
        svc_sb_str(&b, " bytes, /usr holds at most ");
        svc_sb_u64(&b, v.total);
        return CFS_ERR_NOSPC;
    }
    if (t->active && s->tx_owner && s->tx_owner != c) {
        char h[9];
        hex8(h, t->id);
        sb_t b = svc_err_begin(s, CFS_ERR_BUSY);
        svc_sb_str(&b, ": another client's update (bundle ");
        svc_sb_str(&b, h);
        svc_sb_str(&b, ", connection #");
        svc_sb_u64(&b, s->tx_owner->num);
        svc_sb_str(&b, ") is in progress; try again when it is done");
        return CFS_ERR_BUSY;
    }
    /* decided: a commit that is not finished (an update's, a copy's) is
     * finished first; what cannot be stays for the next try */
    if ((err = svc_finish_decided(s, true)) < 0)
        return svc_fail_path(s, err, "/usr", DECIDED_LEFT);
    cellar_UpdateBeginReply *o = &s->resp.body.update_begin;
    if (t->active && memcmp(t->id, r->bundle.bytes, 32) == 0 &&
        t->nentries == r->entries && t->bytes == r->bytes) {
        o->resumed = true;
        o->declared = t->declared;
        man_entry_t *e = svc_me_take(s); /* issue 14 */
        for (uint32_t i = 0; i < t->declared; i++) {
            int64_t have;
            if ((err = txn_entry(t, i, e)))
                break;
            if (e->kind == MAN_TRACK && (e->flags & MAN_F_SEND) &&
                (have = txn_staged(t, i)) > 0)
                o->staged += (uint64_t)have;
        }
        svc_me_give(s);
        if (err) { /* a damaged plan: start over */
            memset(o, 0, sizeof(*o));
            err = 0;
        } else {
            s->tx_owner = c;
            s->resp.which_body = cellar_Response_update_begin_tag;
            update_log(s, c, "resumed");
            return 0;
        }
    }
    if (t->active)
        update_log(s, c, "dropped (a new bundle was begun)");
    err = txn_begin(t, r->bundle.bytes, r->entries, r->bytes);
    if (err)
        return svc_fail_path(s, err, "/usr", "cannot stage an update");
    s->tx_owner = c;
    s->tx_need = 0;
    s->resp.which_body = cellar_Response_update_begin_tag;
    update_log(s, c, "begun");
    return 0;
}

/* Drop the update after a refusal: nothing of it stays. */
static int refuse(svc_t *s, int err)
{
    (void)txn_abort(&s->tx);
    s->decided_check = 1; /* an abort keeps a decided commit */
    s->tx_owner = NULL;
    return err;
}

/* A local copy (UpdateDeclare): entry idx is staged from `other`, a file
 * the manifest says holds the same size and SHA-256 (a move, a copy), so
 * nothing needs to cross the link. It runs in steps (the job's f ->
 * cp.dst); the copy is hashed as it is made. */
static int lcopy_begin(svc_t *s, txn_t *t, uint32_t idx, const man_entry_t *e,
                       const char *other)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    cfs_t *fs = &s->part[USR].fs;
    if (!other[0] || (t->stage_open && t->stage_idx == idx))
        return CFS_ERR_NOENT;
    int err = cfs_file_open(fs, &j->f, other, CFS_O_RDONLY);
    if (err)
        return err;
    int32_t size = cfs_file_size(fs, &j->f);
    if (size < 0 || (uint32_t)size != e->size) {
        (void)cfs_file_close(fs, &j->f);
        return CFS_ERR_INVAL; /* not the content its entry says */
    }
    SVC_JOB_NOT_COPY(s); /* issue 14: the union */
    svc_copy_str(j->show, sizeof(j->show), txn_data_path(t, idx));
    err = cfs_file_open(fs, &cp->dst, j->show,
                       CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (err) {
        (void)cfs_file_close(fs, &j->f);
        return err;
    }
    cp->dst_open = 1;
    cp->off = 0;
    cp->rsrc = NULL; /* issue 15: a file, not a raw partition */
    cp->size = (uint32_t)size;
    err = svc_job_hash_begin(s, USR, &j->f, 0, (uint32_t)size);
    j->lcopy = 1;
    return err;
}

/* End the local copy: keep the staged file (it matched) or drop it. */
void svc_lcopy_end(svc_t *s, bool keep)
{
    svc_job_t *j = &s->job;
    svc_copy_t *cp = &j->cp;
    cfs_t *fs = &s->part[USR].fs;
    if (!j->lcopy)
        return;
    if (cp->dst_open) {
        if (!keep)
            (void)cfs_file_revert(fs, &cp->dst);
        if (cfs_file_close(fs, &cp->dst))
            keep = false;
        cp->dst_open = 0;
    }
    svc_job_hash_end(s);
    if (!keep)
        (void)cfs_remove(fs, j->show);
    j->lcopy = 0;
}

/* Copy up to *budget bytes: 1 = staged and it matched e, 2 = it did not
 * (dropped: the client sends the file), 0 = more to do. */
static int lcopy_step(svc_t *s, const man_entry_t *e, uint32_t *budget)
{
    cfs_t *fs = &s->part[USR].fs;
    uint8_t sha[32];
    int r = svc_copy_chunk(s, fs, fs, budget, sha);
    if (r == 0)
        return 0;
    bool ok = r == 1 && s->job.cp.size == e->size &&
              memcmp(sha, e->sha, 32) == 0;
    svc_lcopy_end(s, ok);
    return ok ? 1 : 2;
}

/* The entries of an UpdateDeclare (s->job.decl) from s->job.di on: 1 =
 * done (the reply or the error is in s->resp), 0 = a local copy goes on
 * in the next step. */
int svc_declare_run(svc_t *s)
{
    svc_job_t *j = &s->job;
    const cellar_UpdateDeclareRequest *r = j->decl;
    txn_t *t = &s->tx;
    svc_part_t *p = &s->part[USR];
    cellar_UpdateDeclareReply *o = &j->drep;
    man_entry_t *e = &j->e;
    uint32_t budget = SVC_JOB_STEP_BYTES, idx, slot;
    cfs_stat_t st;
    int err, se, k;
    if (j->lcopy) {
        k = lcopy_step(s, e, &budget);
        if (k == 0)
            return 0;
        if (k == 1)
            j->dhave = e->size; /* the device had the content elsewhere */
        goto entry_tail;
    }
    for (; j->di < r->entries_count; j->di++) {
        const cellar_BundleEntry *in = &r->entries[j->di];
        idx = r->first + j->di;
        memset(e, 0, sizeof(*e));
        bool raw = strncmp(in->path, "raw:", 4) == 0; /* issue 15 */
        if (raw)
            err = svc_raw_bundle_path(s, in->path, in->size, in->remove,
                                      e->path);
        else
            err = svc_usr_path(s, in->path, e->path);
        if (err)
            return refuse(s, err), 1;
        se = cfs_stat(&p->fs, e->path, &st);
        if (se == CFS_ERR_NOTDIR) /* under a file (the bundle may remove it) */
            se = CFS_ERR_NOENT;
        if (se && se != CFS_ERR_NOENT)
            return refuse(s, svc_fail_in(s, se, USR, e->path, NULL)), 1;
        j->dhave = 0;
        if (in->remove) {
            e->kind = MAN_REMOVE;
            j->dstatus = se ? cellar_EntryStatus_ABSENT
                            : cellar_EntryStatus_REMOVE;
        } else {
            if (in->sha256.size != 32)
                return refuse(s, svc_fail_in(s, CFS_ERR_INVAL, USR, e->path,
                                             "sha256 must be 32 bytes")), 1;
            if (in->size > CFS_FILE_MAX)
                return refuse(s, svc_fail_in(s, CFS_ERR_FBIG, USR, e->path,
                                             NULL)), 1;
            e->kind = MAN_TRACK;
            e->flags = MAN_F_SIZE;
            e->size = (uint32_t)in->size;
            memcpy(e->sha, in->sha256.bytes, 32);
            char *other = j->dother;
            CFS_ASSERT(j->kind == SVC_JOB_DECLARE); /* the union's member */
            CFS_ASSERT(!j->lcopy); /* svcram2: dother shares show's bytes */
            man_entry_t *m = svc_me2_take(s); /* issue 14 */
            k = man_find_content(&p->man, e->path, e->sha, e->size, m, &slot,
                                 other);
            /* issue 15: a raw image is always sent and written: its
             * entry alone cannot vouch for the partition's bytes */
            bool same = k == 1 && !raw && !se && st.type == CFS_TYPE_FILE &&
                        (m->flags & MAN_F_SIZE) && m->size == e->size &&
                        st.size == e->size && memcmp(m->sha, e->sha, 32) == 0;
            svc_me2_give(s);
            if (k < 0)
                return refuse(s, svc_fail_in(s, k, USR, MAN_FILE, NULL)), 1;
            if (same) {
                j->dstatus = cellar_EntryStatus_UNCHANGED;
            } else {
                j->dstatus = se && !(raw && k == 1) /* issue 15: raw: */
                                 ? cellar_EntryStatus_SEND_NEW /* by entry */
                                 : cellar_EntryStatus_SEND_CHANGED;
                e->flags |= MAN_F_SEND;
                int64_t h = txn_staged(t, idx);
                if (h > (int64_t)e->size) { /* not this content: drop it */
                    (void)cfs_remove(&p->fs, txn_data_path(t, idx));
                    h = 0;
                }
                j->dhave = h > 0 ? (uint64_t)h : 0;
                if (j->dhave == 0 && e->size > 0 &&
                    lcopy_begin(s, t, idx, e, other) == 0) {
                    k = lcopy_step(s, e, &budget);
                    if (k == 0)
                        return 0; /* the rest in steps */
                    if (k == 1)
                        j->dhave = e->size;
                } else {
                    svc_lcopy_end(s, false);
                }
            }
        }
    entry_tail:
        idx = r->first + j->di;
        if (e->kind == MAN_TRACK && (e->flags & MAN_F_SEND))
            s->tx_need += e->size - j->dhave;
        if (idx == t->declared) { /* new: against every earlier entry */
            uint32_t other;
            int why;
            k = txn_check_entry(t, e, &other, &why);
            if (k < 0)
                return refuse(s, svc_fail_in(s, k, USR, TX_DIR, NULL)), 1;
            if (k == 1) {
                memset(o, 0, sizeof(*o));
                return refuse(s, conflict(s, other, idx, why,
                                          "; the update is dropped",
                                          e->path)), 1;
            }
        }
        err = txn_declare(t, idx, e);
        if (err == CFS_ERR_INVAL) {
            sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
            svc_sb_str(&b, ": entry ");
            svc_sb_u64(&b, idx);
            svc_sb_str(&b, " differs from the bundle staged under this id; "
                           "the update is dropped");
            return refuse(s, CFS_ERR_INVAL), 1;
        }
        if (err)
            return refuse(s, svc_fail_in(s, err, USR, TX_DIR, NULL)), 1;
        o->status[o->status_count++] = (cellar_EntryStatus)j->dstatus;
        o->have[o->have_count++] = j->dhave;
    }
    if ((err = txn_sync_plan(t)))
        return refuse(s, svc_fail_in(s, err, USR, TX_DIR, NULL)), 1;
    cfs_statvfs_t v;
    if ((err = cfs_statvfs(&p->fs, &v)))
        return svc_fail_path(s, err, "/usr", NULL), 1;
    uint64_t avail = svc_room_bytes(s, USR); /* the service's own kept */
    uint64_t need = s->tx_need + s->tx_need / 32 + 512u * t->declared;
    if (need > avail) {
        sb_t b = svc_err_begin(s, CFS_ERR_NOSPC);
        svc_sb_str(&b, ": the bundle needs ");
        svc_sb_u64(&b, need);
        svc_sb_str(&b, " more bytes on /usr, ");
        svc_sb_u64(&b, avail);
        svc_sb_str(&b, " are free; the update is dropped");
        return refuse(s, CFS_ERR_NOSPC), 1;
    }
    s->resp.which_body = cellar_Response_update_declare_tag;
    s->resp.body.update_declare = *o;
    return 1;
}

int svc_do_update_declare(svc_t *s, svc_conn_t *c,
                          const cellar_UpdateDeclareRequest *r)
{
    txn_t *t = own_tx(s, c, r->bundle.bytes, r->bundle.size);
    if (!t)
        return CFS_ERR_INVAL;
    if (r->first > t->declared) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, ": declare entries in order: the next is ");
        svc_sb_u64(&b, t->declared);
        return CFS_ERR_INVAL;
    }
    if ((uint64_t)r->first + r->entries_count > t->nentries) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, ": more entries than the ");
        svc_sb_u64(&b, t->nentries);
        svc_sb_str(&b, " announced in UpdateBegin; the update is dropped");
        return refuse(s, CFS_ERR_INVAL);
    }
    if (r->first == 0)
        s->tx_need = 0;
    /* as a job: a local copy of a large file runs in steps */
    svc_job_t *j = &s->job;
    memset(j, 0, sizeof(*j));
    j->kind = SVC_JOB_DECLARE;
    j->part = USR;
    j->conn = c;
#if SVC_REQ_IN_QUEUE /* issue 14: r stays in c's queue until the reply */
    CFS_ASSERT(c->req_held);
    j->decl = r;
#else
    j->decl_own = *r;
    j->decl = &j->decl_own;
#endif
    if (svc_declare_run(s)) {
        j->kind = SVC_JOB_NONE;
        return s->resp.has_error ? CFS_ERR_INVAL : 0;
    }
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

static int update_write_in(svc_t *s, txn_t *t,
                           const cellar_UpdateWriteRequest *r, man_entry_t *e)
{
    int err;
    if (r->index >= t->declared) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, ": entry ");
        svc_sb_u64(&b, r->index);
        svc_sb_str(&b, " is not declared");
        return CFS_ERR_INVAL;
    }
    if ((err = txn_entry(t, r->index, e)))
        return svc_fail_in(s, err, USR, TX_DIR, NULL);
    if (e->kind != MAN_TRACK || !(e->flags & MAN_F_SEND))
        return svc_fail_in(s, CFS_ERR_INVAL, USR, e->path,
                           "this entry takes no data (unchanged or a removal)");
    int64_t have = txn_staged(t, r->index);
    if (have < 0)
        return svc_fail_in(s, (int)have, USR, e->path, NULL);
    if (r->offset > (uint64_t)have) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        char show[SVC_SHOW_MAX];
        svc_show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, show);
        svc_sb_str(&b, ": offset ");
        svc_sb_u64(&b, r->offset);
        svc_sb_str(&b, " is past the ");
        svc_sb_u64(&b, (uint64_t)have);
        svc_sb_str(&b, " bytes staged (send the data in order)");
        return CFS_ERR_INVAL;
    }
    if (r->offset + r->data.size > e->size) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EMSGSIZE);
        char show[SVC_SHOW_MAX];
        svc_show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, show);
        svc_sb_str(&b, ": more data than declared (");
        svc_sb_u64(&b, e->size);
        svc_sb_str(&b, " bytes)");
        return -(int)cellar_Code_EMSGSIZE;
    }
    if (r->offset + r->data.size > (uint64_t)have &&
        svc_room(s, USR, r->offset + r->data.size - (uint64_t)have, "/usr"))
        return CFS_ERR_NOSPC; /* others took the room since the Declare */
    int n = txn_write(t, r->index, (uint32_t)r->offset, r->data.bytes,
                      r->data.size);
    if (n < 0)
        return svc_fail_in(s, n, USR, e->path, "staging failed");
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = r->offset;
    s->resp.body.write.written = (uint32_t)n;
    return 0;
}

int svc_do_update_write(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateWriteRequest *r)
{
    txn_t *t = own_tx(s, c, NULL, 0);
    if (!t)
        return CFS_ERR_INVAL;
    int err = update_write_in(s, t, r, svc_me_take(s)); /* issue 14 */
    svc_me_give(s);
    return err;
}

/* The reply of an UpdateCommit whose checks or commit ended with err. */
static int commit_result(svc_t *s, svc_conn_t *c, txn_t *t, int err,
                         uint32_t bad, const txn_stats_t *st)
{
    if (err == CFS_ERR_INVAL && t->ix && t->ix->cwhy) {
        /* two entries conflict: nothing changed; the bundle cannot be
         * committed as it is */
        (void)conflict(s, t->ix->ca, t->ix->cb, t->ix->cwhy,
                       "; abort and declare the bundle again", NULL);
        return CFS_ERR_INVAL;
    }
    if (err) {
        man_entry_t *e = svc_me_take(s); /* issue 14: given back below */
        bool have_e = bad < t->declared && txn_entry(t, bad, e) == 0;
        const char *why = NULL;
        if (err == TXN_ERR_BADMSG)
            why = have_e && !(e->flags & MAN_F_SEND)
                      ? "changed on the device since it was declared "
                        "unchanged: declare the bundle again"
                      : "size or SHA-256 of the data sent differs from the "
                        "declaration (the staged data was dropped: send it "
                        "again)";
        else if (err == CFS_ERR_ISDIR)
            why = "a directory is in the way";
        else if (err == CFS_ERR_NOTDIR)
            why = "a component of the path is a file";
        else if (err == CFS_ERR_BUSY)
            why = "open by a client: close it and commit again";
        if (t->decided) { /* decided, but the roll forward stopped */
            s->tx_owner = NULL;
            err = svc_fail_path(s, err, "/usr", "update committed, but not "
                                "finished: it is finished before the next "
                                "update or copy, or at the next start (do "
                                "not send it again)");
        } else {
            err = have_e ? svc_fail_in(s, err, USR, e->path, why)
                         : svc_fail_path(s, err, "/usr", why);
        }
        svc_me_give(s);
        return err;
    }
    if (t->skipped && SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "update: ");
        svc_sb_u64(&b, t->skipped);
        svc_sb_str(&b, " files could not be moved into place (verify "
                       "reports them)");
        svc_log_end(s);
    }
    cellar_UpdateCommitReply *o = &s->resp.body.update_commit;
    o->written = st->written;
    o->removed = st->removed;
    o->unchanged = st->unchanged;
    o->bytes = st->bytes;
    s->tx_owner = NULL;
    s->resp.which_body = cellar_Response_update_commit_tag;
    if (SVC_LOGS(s)) {
        char h[9];
        hex8(h, t->id);
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "update ");
        svc_sb_str(&b, h);
        svc_sb_str(&b, " committed: ");
        svc_sb_u64(&b, st->written);
        svc_sb_str(&b, " written, ");
        svc_sb_u64(&b, st->removed);
        svc_sb_str(&b, " removed, ");
        svc_sb_u64(&b, st->unchanged);
        svc_sb_str(&b, " unchanged");
        svc_log_end(s);
    }
    return 0;
}

/* One step of an UpdateCommit job: the staged files are hashed in steps
 * (t->verified grows), then txn_commit makes the checks that read no file
 * data and commits, in one step. 1 = done (the reply is in s->resp). A
 * staged file whose size or SHA-256 differs is dropped here; the commit
 * then reports it (TXN_ERR_BADMSG) as it always did. */
int svc_commit_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    txn_t *t = &s->tx;
    cfs_t *fs = &s->part[USR].fs;
    uint32_t budget = SVC_JOB_STEP_BYTES, looked = 0;
    if (j->rawing) { /* issue 15: committed; its raw images in steps */
        if (!svc_raw_install_step(s, &budget))
            return 0;
        (void)commit_result(s, j->conn, t, 0, 0, &j->cst);
        j->kind = SVC_JOB_NONE;
        return 1;
    }
    for (;;) {
        if (j->hashing) {
            int r = svc_job_hash_step(s, &budget);
            if (r == 0)
                return 0;
            uint32_t size = j->total;
            svc_job_hash_end(s);
            if (r == 1 && size == j->e.size &&
                memcmp(j->digest, j->e.sha, 32) == 0) {
                if (t->verified == j->centry)
                    t->verified = j->centry + 1;
            } else if (r == 1 || r == CFS_ERR_CORRUPT) {
                (void)cfs_remove(fs, txn_data_path(t, j->centry));
                break; /* the commit reports it */
            } else {
                break;
            }
            j->centry++;
            continue;
        }
        if (j->centry >= t->declared)
            break;
        if (!budget || looked++ == 16)
            return 0; /* more in the next step */
        SVC_JOB_NOT_COPY(s); /* issue 14: the union */
        if (txn_entry(t, j->centry, &j->e))
            break; /* the commit reports it */
        if (j->e.kind != MAN_TRACK || !(j->e.flags & MAN_F_SEND) ||
            j->e.size == 0) {
            if (t->verified == j->centry)
                t->verified = j->centry + 1; /* nothing to read */
            j->centry++;
            continue;
        }
        const char *dp = txn_data_path(t, j->centry);
        cfs_stat_t st;
        if (cfs_stat(fs, dp, &st) || st.size != j->e.size) {
            if (cfs_stat(fs, dp, &st) == 0)
                (void)cfs_remove(fs, dp); /* not what was declared */
            break; /* the commit reports it */
        }
        if (cfs_file_open(fs, &j->f, dp, CFS_O_RDONLY))
            break;
        if (svc_job_hash_begin(s, USR, &j->f, 0, st.size)) {
            svc_job_hash_end(s);
            break;
        }
    }
    txn_stats_t st;
    uint32_t bad = 0;
    t->now = svc_now_s(s);
    int err = txn_commit(t, s->scratch, sizeof(s->scratch), &st, &bad,
                         svc_path_busy, s);
    if (err && t->decided) {
        /* decided: committed; only forward: once more now, else before the
         * next update or copy (svc_finish_decided) or at the next start */
        int d = txn_decided(t);
        err = d == 0 ? 0 : d < 0 ? d : txn_finish(t);
    }
    if (!err && svc_raw_pending(s)) {
        /* issue 15: committed; the raw images are written in the next
         * steps, then the reply goes (a cut: start-up finishes them) */
        j->rawing = 1;
        j->rphase = 0;
        j->ridx = 0;
        j->cst = st;
        return 0;
    }
    (void)commit_result(s, j->conn, t, err, bad, &st);
    j->kind = SVC_JOB_NONE;
    return 1;
}

int svc_do_update_commit(svc_t *s, svc_conn_t *c,
                         const cellar_UpdateCommitRequest *r)
{
    txn_t *t = own_tx(s, c, r->bundle.bytes, r->bundle.size);
    if (!t)
        return CFS_ERR_INVAL;
    if (t->declared != t->nentries) {
        sb_t b = svc_err_begin(s, CFS_ERR_INVAL);
        svc_sb_str(&b, ": only ");
        svc_sb_u64(&b, t->declared);
        svc_sb_str(&b, " of the ");
        svc_sb_u64(&b, t->nentries);
        svc_sb_str(&b, " entries are declared");
        return CFS_ERR_INVAL;
    }
    txn_stats_t st;
    uint32_t bad = 0;
    memset(&st, 0, sizeof(st));
    /* decided: a copy into /usr that is not finished goes first */
    int err = svc_finish_decided(s, false);
    if (err < 0)
        return svc_fail_path(s, err, "/usr", DECIDED_LEFT);
    err = txn_commit_prepare(t, &bad);
    if (err)
        return commit_result(s, c, t, err, bad, &st);
    /* the staged files are hashed in steps: svc_process */
    svc_job_t *j = &s->job;
    memset(j, 0, sizeof(*j));
    j->kind = SVC_JOB_COMMIT;
    j->part = USR;
    j->centry = t->verified;
    j->conn = c;
    if (svc_commit_step(s))
        return s->resp.has_error ? CFS_ERR_INVAL : 0; /* done at once */
    svc_job_defer(s, c);
    return 0;
}

int svc_do_update_abort(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateAbortRequest *r)
{
    txn_t *t = &s->tx;
    if (s->part[USR].state == SVC_PART_FULL) { /* staging never loaded */
        int err = svc_store_drop_staging(s);
        if (err) /* decided: a committed update is kept, not dropped */
            return svc_fail_path(s, err, "/usr", "dropping the staging failed "
                                 "(a committed update in it, if any, is kept: "
                                 "it is finished once removals free space)");
        svc_reply_done(s);
        return 0;
    }
    if (t->active) {
        if (s->tx_owner && s->tx_owner != c)
            return svc_fail(s, CFS_ERR_BUSY,
                            "the update in progress belongs to another "
                            "connection");
        if (r->bundle.size && (r->bundle.size != 32 ||
                               memcmp(r->bundle.bytes, t->id, 32) != 0))
            return svc_fail(s, CFS_ERR_INVAL,
                            "bundle id does not match the staged update");
        update_log(s, c, "aborted");
        int err = txn_abort(t);
        s->tx_owner = NULL;
        if (err)
            return svc_fail_path(s, err, "/usr", "dropping the staging failed");
    }
    svc_reply_done(s);
    return 0;
}
