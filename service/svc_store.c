/* svc_store.c - the store under the RPCs: mount-time work (manifest,
 * staging, the start-up check), shadow writes, manifest-aware remove and
 * rename, handles, checking a file against its entry (svc_int.h,
 * docs/ARCHITECTURE.md "Service core"). Device-side code: no OS calls, no
 * allocation, no stdio. */
#include <stddef.h>
#include <string.h>

#include "svc_int.h"

/* ---- handles ------------------------------------------------------------------ */

/* Close a handle: a Hash reading it is cancelled, a shadow never published
 * is dropped. */
void svc_handle_release(svc_t *s, svc_handle_t *h)
{
    svc_part_t *p = &s->part[h->part];
    int err = 0;
    if (s->job.kind && s->job.fp == &h->file) /* a Hash reads it */
        svc_job_cancel(s, CFS_ERR_BADF, "cancelled: the handle was closed");
    if (p->mounted && h->shadow)
        svc_shadow_discard(s, h); /* never published: nothing changes */
    else if (p->mounted)
        err = cfs_file_close(&p->fs, &h->file);
    if (err < 0 && SVC_LOGS(s)) {
        sb_t b = svc_log_begin(s, NULL);
        svc_sb_str(&b, "closing ");
        svc_sb_qstr(&b, h->path);
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, svc_reason(err));
        svc_log_end(s);
    }
    memset(h, 0, sizeof(*h));
}

uint32_t svc_now_s(svc_t *s)
{
    return s->cfg.clock ? s->cfg.clock(s->cfg.clock_ctx) : 0;
}

/* "/usr" + path inside the partition, for messages and replies. */
void svc_show_path(svc_t *s, uint32_t part, const char *in, char *out,
                   size_t cap)
{
    size_t pn = strlen(s->part[part].name);
    size_t n = strlen(in);
    if (cap < pn + 3)
        return;
    out[0] = '/';
    memcpy(out + 1, s->part[part].name, pn);
    if (n == 1 && in[0] == '/')
        n = 0;
    if (1 + pn + n >= cap)
        n = cap - 2 - pn;
    memcpy(out + 1 + pn, in, n);
    out[1 + pn + n] = 0;
}

int svc_fail_in(svc_t *s, int err, uint32_t part, const char *path,
                const char *why)
{
    char show[SVC_SHOW_MAX];
    svc_show_path(s, part, path, show, sizeof(show));
    return svc_fail_path(s, err, show, why);
}

#if CELLAR_WITH_LOG /* issue 14: else a macro of svc_int.h */
void svc_log_path(svc_t *s, const char *what, uint32_t part,
                  const char *path, const char *tail)
{
    if (!SVC_LOGS(s))
        return;
    char show[SVC_SHOW_MAX];
    svc_show_path(s, part, path, show, sizeof(show));
    sb_t b = svc_log_begin(s, NULL);
    svc_sb_str(&b, what);
    svc_sb_str(&b, " ");
    svc_sb_qstr(&b, show);
    if (tail) {
        svc_sb_str(&b, ": ");
        svc_sb_str(&b, tail);
    }
    svc_log_end(s);
}
#endif

/* Partition named by a request field: "" = usr. -1 with the error set. */
int svc_part_arg(svc_t *s, const char *name)
{
    const char *w = name[0] == '/' ? name + 1 : name;
    if (!w[0])
        w = "usr";
    for (uint32_t i = 0; i < s->nparts; i++)
        if (strcmp(s->part[i].name, w) == 0) {
            if (!s->part[i].mounted || !s->part[i].has_man) {
                (void)svc_fail_path(s, CFS_ERR_IO, name[0] ? name : "/usr",
                                    s->part[i].mounted
                                        ? "the partition's manifest cannot "
                                          "be used (format it)"
                                        : "partition is not mounted");
                return -1;
            }
            return (int)i;
        }
    (void)svc_fail_path(s, CFS_ERR_NOENT, name,
                        "no such partition (use \"/usr\" or \"/bak\")");
    return -1;
}

bool svc_sha_eq(const man_entry_t *a, const man_entry_t *b)
{
    return memcmp(a->sha, b->sha, 32) == 0 &&
           (!(a->flags & MAN_F_SIZE) || !(b->flags & MAN_F_SIZE) ||
            a->size == b->size);
}

/* ---- setup -------------------------------------------------------------------- */

/* Open the manifest of partition i, whatever the partition holds: a
 * manifest that is not a file is set aside (cleared), damaged slots are
 * freed, and a partition too full for a writable manifest gets a
 * read-only one (PART_FULL) or none (PART_NO_MANIFEST). */
/* man_open / man_open_ro, and (issue 14, the device profile) the slot
 * buffer shared with the txn scratch (TXN_W_SLOT marks it taken). */
static int man_open_s(svc_t *s, man_t *m, cfs_t *fs, bool ro)
{
    int err = ro ? man_open_ro(m, fs) : man_open(m, fs);
#ifdef MAN_SHARED_SLOT
    man_share_slot(m, s->txw.slot, &s->txw.busy, TXN_W_SLOT);
#endif
    return err;
}

static void attach_manifest(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    cfs_stat_t st;
    int err = man_open_s(s, &p->man, &p->fs, false);
    if (err == CFS_ERR_NOSPC || err == CFS_ERR_ROFS) {
        (void)cfs_gc(&p->fs, 0); /* stale data a failed operation left */
        err = man_open_s(s, &p->man, &p->fs, false);
    }
    if (err == CFS_ERR_ISDIR || err == CFS_ERR_NOTDIR ||
        (err == CFS_ERR_CORRUPT &&
         cfs_stat(&p->fs, MAN_FILE, &st) == 0)) {
        /* not a manifest at all: the files stay, their entries are lost */
        int e2 = txn_clear(&s->txw, &p->fs, cfs_stat(&p->fs, MAN_DIR, &st) == 0 &&
                                           st.type == CFS_TYPE_DIR
                                       ? MAN_FILE : MAN_DIR);
        svc_problem(s, i, "the manifest is not a file", svc_reason(err),
                    e2 ? "it could not be cleared" :
                    "cleared: every file is untracked (import or rewrite)");
        err = e2 ? e2 : man_open_s(s, &p->man, &p->fs, false);
    }
    if (err == CFS_ERR_NOSPC || err == CFS_ERR_ROFS) {
        if (man_open_s(s, &p->man, &p->fs, true) == 0) {
            cfs_statvfs_t v;
            p->has_man = 1;
            p->state = SVC_PART_FULL;
            p->full_claimed = cfs_statvfs(&p->fs, &v) ? 0 : v.claimed;
            svc_problem(s, i, "no room for the service's bookkeeping",
                        svc_reason(err), "served read-only: remove files "
                        "to free space");
            return;
        }
    }
    if (err) {
        cfs_statvfs_t v;
        p->state = SVC_PART_NO_MANIFEST;
        p->full_claimed = cfs_statvfs(&p->fs, &v) ? 0 : v.claimed;
        svc_problem(s, i, "cannot open the manifest", svc_reason(err),
                    err == CFS_ERR_NOSPC ? "served read-only: remove files "
                    "to free space" : "served read-only; format it");
        return;
    }
    p->has_man = 1;
    uint32_t dropped = 0;
    err = man_scrub(&p->man, &dropped);
    if (err)
        svc_problem(s, i, "the manifest is damaged", svc_reason(err),
                    "left as it is (verify reports it)");
    else if (dropped)
        svc_problem(s, i, "the manifest had damaged slots", NULL,
                    "dropped them: their files are untracked");
}

/* Drop a staging directory the service cannot use. */
static void clear_staging(svc_t *s, uint32_t i, const char *dir, int why)
{
    svc_part_t *p = &s->part[i];
    int err = txn_clear(&s->txw, &p->fs, dir);
    /* issue 14: svc_problem keeps its words by pointer: literals */
    CFS_ASSERT(strcmp(dir, CP_DIR) == 0 || strcmp(dir, TX_DIR) == 0);
    const char *what = strcmp(dir, CP_DIR) == 0 ? "cannot recover " CP_DIR
                                                : "cannot recover " TX_DIR;
    svc_problem(s, i, what, svc_reason(why),
                err ? "it could not be removed either"
                    : "dropped it (an update or copy in it is lost)");
}

/* decided: a transaction whose decision is durable but whose roll forward
 * failed for the device (I/O, space) is kept, never dropped as garbage:
 * it is finished before the next update or copy, or at the next start.
 * True when t is kept. */
static bool keep_decided(svc_t *s, uint32_t i, txn_t *t, int why)
{
    if (why != CFS_ERR_IO && why != CFS_ERR_NOSPC && why != CFS_ERR_NOMEM &&
        why != CFS_ERR_BUSY && why != CFS_ERR_ROFS)
        return false;
    if (txn_decided(t) == 0)
        return false;
    /* issue 14: svc_problem keeps its words by pointer: literals */
    CFS_ASSERT(strcmp(t->dir, CP_DIR) == 0 || strcmp(t->dir, TX_DIR) == 0);
    const char *what = strcmp(t->dir, CP_DIR) == 0
                           ? "cannot finish the committed " CP_DIR
                           : "cannot finish the committed " TX_DIR;
    svc_problem(s, i, what, svc_reason(why), "kept: finished before the "
                "next update or copy, or at the next start");
    return true;
}

int svc_attach(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    p->state = SVC_PART_OK;
    /* shadows of writers a power cut or a stop interrupted: removed first,
     * one at a time (a removal needs no room), so what they held is free
     * for the manifest */
    int err = txn_clear(&s->txw, &p->fs, MAN_SHADOW_DIR);
    if (err)
        svc_problem(s, i, "cannot remove the shadow copies in "
                    MAN_SHADOW_DIR, svc_reason(err), "left as they are");
    attach_manifest(s, i);
    cfs_statvfs_t v;
    if (cfs_statvfs(&p->fs, &v) == 0 && v.claimed + v.reserve > v.total)
        svc_problem(s, i, "files claim more than the partition holds "
                    "(sparse files)", NULL, "growth is refused until they "
                    "are removed or truncated");
    if (!p->has_man || p->state != SVC_PART_OK) {
        if (i == USR)
            txn_bind(&s->tx, NULL, NULL, NULL, &s->txw);
        return 0;
    }
    /* a copy (backup / restore) committed before a cut is finished; one
     * not committed is dropped */
    txn_bind(&s->cp, &p->fs, &p->man, CP_DIR, &s->txw);
    int r = txn_load(&s->cp);
    if (r == 1)
        svc_log_path(s, "finished the interrupted copy into", i, "/", NULL);
    if (r >= 0 && s->cp.active)
        r = txn_abort(&s->cp);
    cfs_stat_t cst;
    if (r >= 0 && cfs_stat(&p->fs, CP_DIR, &cst) == 0)
        r = CFS_ERR_NOTEMPTY; /* what the abort could not remove */
    if (r < 0 && !keep_decided(s, i, &s->cp, r)) {
        if (s->cp.plan_open)
            (void)cfs_file_close(&p->fs, &s->cp.plan);
        txn_bind(&s->cp, &p->fs, &p->man, CP_DIR, &s->txw);
        clear_staging(s, i, CP_DIR, r);
    }
    if (i == USR) {
        txn_bind(&s->tx, &p->fs, &p->man, TX_DIR, &s->txw);
        r = txn_load(&s->tx);
        if (r == 1)
            svc_log_path(s, "finished the committed update of", i, "/", NULL);
        else if (r == 0 && s->tx.active && SVC_LOGS(s)) {
            sb_t b = svc_log_begin(s, NULL);
            svc_sb_str(&b, "a staged update is kept for a resume (");
            svc_sb_u64(&b, s->tx.declared);
            svc_sb_str(&b, " entries declared)");
            svc_log_end(s);
        }
        cfs_stat_t st;
        if (r == 0 && !s->tx.active && cfs_stat(&p->fs, TX_DIR, &st) == 0)
            r = CFS_ERR_NOTEMPTY; /* what an abort could not remove */
        if (r < 0 && !keep_decided(s, i, &s->tx, r)) {
            if (s->tx.plan_open)
                (void)cfs_file_close(&p->fs, &s->tx.plan);
            txn_bind(&s->tx, &p->fs, &p->man, TX_DIR, &s->txw);
            clear_staging(s, i, TX_DIR, r);
        }
        s->tx_owner = NULL;
        s->tx_idle_since = 0;
        /* issue 15: a raw image committed before a cut is written now */
        (void)svc_raw_finish(s);
    }
    r = svc_raw_prepare(s, i);
    if (r < 0)
        svc_problem(s, i, "cannot make " RAW_DIR, svc_reason(r),
                    i == USR ? "raw updates are refused"
                             : "backups of raw partitions are refused");
    return 0;
}

/* A partition in PART_FULL: try again to open its manifest for writing
 * (after removals freed space). True when it is back to PART_OK. */
bool svc_store_retry(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    if (!p->mounted || (p->state != SVC_PART_FULL &&
                        p->state != SVC_PART_NO_MANIFEST))
        return p->mounted && p->state == SVC_PART_OK;
    /* only after removals (the attempt may run GC: not on every request) */
    cfs_statvfs_t v;
    if (cfs_statvfs(&p->fs, &v) || v.claimed >= p->full_claimed)
        return false;
    if (p->has_man)
        (void)man_close(&p->man);
    p->has_man = 0;
    svc_problems_forget(s, i); /* what is still wrong is found again */
    (void)svc_attach(s, i); /* the manifest and the staging as at start-up */
    if (p->state == SVC_PART_OK)
        svc_log_path(s, "space was freed:", i, "/",
                     "the manifest is writable again");
    return p->state == SVC_PART_OK;
}

static void detach(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    if (i == USR && s->tx.fs) {
        (void)txn_park(&s->tx);
        if (s->tx.plan_open)
            (void)cfs_file_close(&p->fs, &s->tx.plan);
        txn_bind(&s->tx, NULL, NULL, NULL, &s->txw);
        s->tx_owner = NULL;
    }
    if (p->has_man)
        (void)man_close(&p->man);
    p->has_man = 0;
}

/* Startup check of /usr: a job (svc_job_t) that svc_process advances in
 * bounded steps once setup is done, so the service serves while it checks
 * (docs/UPDATE.md). One file at a time, so memory stays fixed. */
static void check_usr(svc_t *s)
{
    svc_job_t *j = &s->job;
    memset(j, 0, sizeof(*j));
    j->kind = SVC_JOB_CHECK;
    j->part = USR;
    j->op = "check";
    j->nslots = man_slots(&s->part[USR].man);
    svc_log_msg(s, NULL, "check of /usr: started (requests are served "
                         "meanwhile)");
}

int svc_store_setup(svc_t *s)
{
    for (uint32_t i = 0; i < s->nparts; i++)
        if (s->part[i].mounted)
            (void)svc_attach(s, i);
    if (s->cfg.check_at_start && s->nparts > BAK &&
        s->part[USR].state == SVC_PART_OK && s->part[BAK].has_man)
        check_usr(s);
    return 0;
}

void svc_store_free(svc_t *s)
{
    for (uint32_t i = s->nparts; i-- > 0;)
        if (s->part[i].mounted)
            detach(s, i);
}

void svc_store_detach(svc_t *s, uint32_t i)
{
    detach(s, i);
}

int svc_store_attach(svc_t *s, uint32_t i)
{
    return svc_attach(s, i);
}

void svc_store_conn_gone(svc_t *s, svc_conn_t *c)
{
    if (s->tx_owner != c)
        return;
    (void)txn_park(&s->tx);
    s->tx_owner = NULL;
    s->tx_idle_since = s->now_ms ? s->now_ms : 1;
}

void svc_store_tick(svc_t *s)
{
    if (!s->tx.active || s->tx_owner)
        return;
    uint32_t limit = s->cfg.tx_timeout_ms ? s->cfg.tx_timeout_ms
                                          : SVC_TX_ABANDON_MS;
    if (!s->tx_idle_since) {
        s->tx_idle_since = s->now_ms ? s->now_ms : 1;
        return;
    }
    if (s->now_ms - s->tx_idle_since < limit)
        return;
    svc_log_msg(s, NULL, "dropping a staged update nobody resumed");
    (void)txn_abort(&s->tx);
    s->tx_idle_since = 0;
}

/* ---- shadow writes -------------------------------------------------------------- */

static const char *shadow_name(char *buf, uint32_t no)
{
    char num[12];
    int k = (int)sizeof(num);
    num[--k] = 0;
    do {
        num[--k] = (char)('0' + no % 10);
        no /= 10;
    } while (no);
    strcpy(buf, MAN_SHADOW_DIR "/");
    strcat(buf, num + k);
    return buf;
}

/* Is a shadow writer open on part:path (other than except)? */
static bool writer_open(svc_t *s, uint32_t part, const char *show,
                        const svc_handle_t *except)
{
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            const svc_handle_t *h = &c->h[k];
            if (h->id && h != except && h->shadow && h->part == part &&
                strcmp(h->path, show) == 0)
                return true;
        }
    return false;
}

static bool all_zero(const uint8_t *p, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Create shadow f (named by *no) holding the first `keep` bytes of path. */
static int shadow_create(svc_t *s, uint32_t part, cfs_file_t *f, uint32_t *no,
                         const char *path, uint32_t keep)
{
    cfs_t *fs = &s->part[part].fs;
    char name[40];
    int err = cfs_mkdir(fs, MAN_SHADOW_DIR);
    if (err && err != CFS_ERR_EXIST)
        return err;
    *no = ++s->shadow_seq;
    err = cfs_file_open(fs, f, shadow_name(name, *no),
                       CFS_O_RDWR | CFS_O_CREAT | CFS_O_TRUNC);
    if (err)
        return err;
    if (keep) {
        err = cfs_file_open(fs, &s->t1, path, CFS_O_RDONLY);
        bool opened = err == 0;
        for (uint32_t off = 0; !err && off < keep;) {
            uint32_t want = keep - off < sizeof(s->scratch)
                                ? keep - off : (uint32_t)sizeof(s->scratch);
            int n = cfs_file_pread(fs, &s->t1, s->scratch, want, off);
            if (n == 0)
                break;
            if (n > 0 && !all_zero(s->scratch, (uint32_t)n))
                n = cfs_file_pwrite(fs, f, s->scratch, (uint32_t)n, off);
            if (n < 0)
                err = n;
            else
                off += (uint32_t)n;
        }
        if (opened)
            (void)cfs_file_close(fs, &s->t1);
        /* zeros were not written: the copy stores what the file stores,
         * and the size makes the rest read as zeros */
        if (!err)
            err = cfs_file_truncate(fs, f, keep);
    }
    if (err) {
        (void)cfs_file_revert(fs, f);
        (void)cfs_file_close(fs, f);
        (void)cfs_remove(fs, name);
    }
    return err;
}

/* Hash f, commit it (hidden), then move it over path together with its
 * manifest entry. f is closed in every case; on failure the data is gone. */
static int publish(svc_t *s, uint32_t part, cfs_file_t *f, uint32_t no,
                   const char *path)
{
    svc_part_t *p = &s->part[part];
    man_entry_t *e = svc_me_take(s); /* issue 14 */
    char name[40];
    memset(e, 0, sizeof(*e));
    int err = man_hash_file(&p->fs, f, s->scratch, sizeof(s->scratch), e->sha,
                            &e->size);
    int err2 = cfs_file_close(&p->fs, f);
    shadow_name(name, no);
    if (!err)
        err = err2;
    if (!err) {
        e->kind = MAN_TRACK;
        e->flags = MAN_F_SIZE;
        e->mtime = svc_now_s(s);
        svc_copy_str(e->path, sizeof(e->path), path);
        err = man_set(&p->man, e);
        if (err)
            man_revert(&p->man);
    }
    if (!err) {
        const char *src[1] = { name }, *dst[1] = { path };
        err = man_commit(&p->man, src, dst, 1);
    }
    svc_me_give(s);
    if (err)
        (void)cfs_remove(&p->fs, name);
    return err;
}

const char *svc_handle_rel(svc_t *s, const svc_handle_t *h)
{
    const char *r = h->path + 1 + strlen(s->part[h->part].name);
    return r[0] ? r : "/";
}

int svc_shadow_open(svc_t *s, svc_handle_t *h, const svc_path_t *p, int ff)
{
    cfs_t *fs = &s->part[p->part].fs;
    cfs_stat_t st;
    int err = cfs_stat(fs, p->fs, &st);
    if (err && err != CFS_ERR_NOENT)
        return svc_fail_path(s, err, p->show, NULL);
    if (!err && st.type == CFS_TYPE_DIR)
        return svc_fail_path(s, CFS_ERR_ISDIR, p->show, NULL);
    if (err && !(ff & CFS_O_CREAT))
        return svc_fail_path(s, CFS_ERR_NOENT, p->show, NULL);
    if (!err && (ff & CFS_O_CREAT) && (ff & CFS_O_EXCL))
        return svc_fail_path(s, CFS_ERR_EXIST, p->show, NULL);
    if (err) { /* the parent must be a directory */
        int e2 = svc_parent_dir(fs, p->fs, (char *)s->scratch);
        if (e2)
            return svc_fail_path(s, e2, p->show, NULL);
    }
    if (writer_open(s, (uint32_t)p->part, p->show, h))
        return svc_fail_path(s, CFS_ERR_BUSY, p->show,
                             "file is open for writing by another handle");
    uint32_t keep = (!err && !(ff & CFS_O_TRUNC)) ? st.size : 0;
    /* the copy claims the file's size again (docs/UPDATE.md, "Space") */
    if ((err = svc_room(s, (uint32_t)p->part, (uint64_t)keep + (err ? 64 : 0),
                        p->show)))
        return err;
    err = shadow_create(s, (uint32_t)p->part, &h->file, &h->shadow_no, p->fs,
                        keep);
    if (err)
        return svc_fail_open(s, err, p->show);
    h->shadow = 1;
    return 0;
}

int svc_shadow_publish(svc_t *s, svc_handle_t *h)
{
    char rel[SVC_MAX_PATH + 2];
    svc_copy_str(rel, sizeof(rel), svc_handle_rel(s, h));
    h->shadow = 0;
    int err = publish(s, h->part, &h->file, h->shadow_no, rel);
    if (err)
        return svc_fail_handle(s, err, h, "the data written was not kept");
    return 0;
}

void svc_shadow_discard(svc_t *s, svc_handle_t *h)
{
    cfs_t *fs = &s->part[h->part].fs;
    char name[40];
    (void)cfs_file_revert(fs, &h->file);
    (void)cfs_file_close(fs, &h->file);
    (void)cfs_remove(fs, shadow_name(name, h->shadow_no));
    h->shadow = 0;
}

static int shadow_truncate_in(svc_t *s, const svc_path_t *p, uint32_t size,
                              cfs_file_t *f)
{
    cfs_t *fs = &s->part[p->part].fs;
    cfs_stat_t st;
    uint32_t no;
    int err = cfs_stat(fs, p->fs, &st);
    if (!err && st.type == CFS_TYPE_DIR)
        err = CFS_ERR_ISDIR;
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    if (writer_open(s, (uint32_t)p->part, p->show, NULL))
        return svc_fail_path(s, CFS_ERR_BUSY, p->show,
                             "file is open for writing");
    if ((err = svc_room(s, (uint32_t)p->part, size, p->show)))
        return err;
    err = shadow_create(s, (uint32_t)p->part, f, &no, p->fs,
                        size < st.size ? size : st.size);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    err = cfs_file_truncate(fs, f, size);
    if (err) {
        char name[40];
        (void)cfs_file_revert(fs, f);
        (void)cfs_file_close(fs, f);
        (void)cfs_remove(fs, shadow_name(name, no));
        return svc_fail_path(s, err, p->show, NULL);
    }
    err = publish(s, (uint32_t)p->part, f, no, p->fs);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    return 0;
}

int svc_shadow_truncate(svc_t *s, const svc_path_t *p, uint32_t size)
{
    int err = shadow_truncate_in(s, p, size, svc_t2_take(s)); /* issue 14 */
    svc_t2_give(s);
    return err;
}

int svc_man_remove(svc_t *s, const svc_path_t *p)
{
    svc_part_t *pt = &s->part[p->part];
    cfs_stat_t st;
    /* a path that is gone but still has an entry (a repair after a
     * crash or a bug): the removal drops the entry */
    bool gone = cfs_stat(&pt->fs, p->fs, &st) == CFS_ERR_NOENT;
    uint32_t slot;
    int k = man_find(&pt->man, p->fs, svc_me_take(s), &slot); /* issue 14 */
    svc_me_give(s);
    if (k < 0)
        return k;
    if (gone && k == 0)
        return CFS_ERR_NOENT;
    if (k == 0) /* untracked: a plain removal, which needs no room */
        return cfs_remove(&pt->fs, p->fs);
    /* dropping the entry of a file that is gone frees space: like the
     * filesystem's own removals it may use the reserve down to its floor
     * (a hold of 0 bytes), so a full partition can always be emptied */
    const char *src[1] = { p->fs };
    int err = gone ? man_hold(&pt->man, 0) : 0;
    if (!err)
        err = man_del(&pt->man, p->fs);
    if (!err)
        err = man_commit(&pt->man, src, NULL, gone ? 0 : 1);
    else
        man_revert(&pt->man);
    if (err == CFS_ERR_NOSPC && !gone) {
        /* too full even for the slot write and the commit (the log's free
         * blocks are fewer than the space rule's figures say, or files
         * were put there behind the service's back): nothing changed;
         * free the space first, then drop the entry; a cut in between
         * leaves an entry whose removal finishes it */
        err = cfs_remove(&pt->fs, p->fs);
        if (err)
            return err;
        svc_log_path(s, "removed before its manifest entry (no room):",
                     p->part, p->fs, NULL);
        gone = true;
        err = man_hold(&pt->man, 0);
        if (!err)
            err = man_del(&pt->man, p->fs);
        if (!err)
            err = man_commit(&pt->man, src, NULL, 0);
        else
            man_revert(&pt->man);
    }
    if (!err && gone)
        svc_log_path(s, "dropped the entry of the missing", p->part, p->fs, NULL);
    return err;
}

int svc_store_drop_staging(svc_t *s)
{
    svc_part_t *p = &s->part[USR];
    if (!p->mounted)
        return CFS_ERR_IO;
    /* decided: a committed update there is finished, never dropped (on a
     * full partition it may have to wait for removals to free space) */
    txn_bind(&s->tx, &p->fs, &p->man, TX_DIR, &s->txw);
    int err = txn_decided(&s->tx);
    if (err == 1)
        err = txn_finish(&s->tx);
    memset(&s->tx, 0, sizeof(s->tx)); /* (not loaded, as before) */
    if (!err)
        err = txn_clear(&s->txw, &p->fs, TX_DIR);
    (void)svc_store_retry(s, USR);
    return err;
}

/* Why renaming a to b cannot work whatever the room (0: it could). The
 * filesystem asks for room before it looks at the paths; on a full
 * partition the request's own error is the answer, not ENOSPC. */
static int rename_check(cfs_t *fs, const char *a, const char *b)
{
    cfs_stat_t sa, sb;
    int err = cfs_stat(fs, a, &sa);
    if (err)
        return err;
    if (strcmp(a, b) == 0)
        return 0;
    if (man_under(b, a))
        return CFS_ERR_INVAL; /* into itself */
    err = cfs_stat(fs, b, &sb);
    if (err == CFS_ERR_NOENT) {
        char parent[MAN_PATH_MAX + 1];
        return svc_parent_dir(fs, b, parent);
    }
    if (err)
        return err;
    if (sa.type == CFS_TYPE_FILE && sb.type == CFS_TYPE_DIR)
        return CFS_ERR_ISDIR;
    if (sa.type == CFS_TYPE_DIR && sb.type == CFS_TYPE_FILE)
        return CFS_ERR_NOTDIR;
    if (sa.type == CFS_TYPE_DIR && sb.type == CFS_TYPE_DIR) {
        cfs_dir_t d;
        char name[CFS_NAME_MAX + 1];
        if (cfs_dir_open(fs, &d, b) == 0) {
            int r = cfs_dir_read(fs, &d, name, sizeof(name), &sb);
            (void)cfs_dir_close(fs, &d);
            if (r == 1)
                return CFS_ERR_NOTEMPTY;
        }
    }
    return 0;
}

int svc_man_rename(svc_t *s, const svc_path_t *a, const svc_path_t *b)
{
    svc_part_t *pt = &s->part[a->part];
    int err;
    if (strcmp(a->fs, b->fs) == 0) {
        err = cfs_rename(&pt->fs, a->fs, b->fs);
    } else if (!(err = man_move(&pt->man, a->fs, b->fs))) {
        const char *src[1] = { a->fs }, *dst[1] = { b->fs };
        err = man_commit(&pt->man, src, dst, 1);
    } else {
        man_revert(&pt->man);
    }
    if (err == CFS_ERR_NOSPC) {
        int why = rename_check(&pt->fs, a->fs, b->fs);
        if (why)
            err = why;
    }
    return err;
}

/* A /usr path from a request into the partition path (rel). */
int svc_usr_path(svc_t *s, const char *in, char *rel)
{
    int err = svc_resolve(s, in, &s->pb);
    if (err)
        return err;
    if (s->pb.part != (int)USR || svc_is_part_root(&s->pb))
        return svc_fail_path(s, CFS_ERR_INVAL, s->pb.show,
                             "must name a file under /usr");
    strcpy(rel, s->pb.fs);
    return 0;
}

/* Begin checking file e of partition part against its entry: 0 = decided
 * without reading (*kind), 1 = its content is being hashed (the job's
 * hash, svc_job_hash_step), or a device error. */
int svc_check_begin(svc_t *s, uint32_t part, const man_entry_t *e,
                    cellar_ProblemKind *kind)
{
    svc_job_t *j = &s->job;
    cfs_t *fs = &s->part[part].fs;
    cfs_stat_t st;
    if (part == USR && svc_raw_rel_name(e->path)) /* issue 15 */
        return svc_raw_check_begin(s, e, kind);
    int err = cfs_stat(fs, e->path, &st);
    if (!err && st.type != CFS_TYPE_FILE) {
        *kind = cellar_ProblemKind_MISMATCH;
        return 0;
    }
    if (!err && (e->flags & MAN_F_SIZE) && st.size != e->size) {
        *kind = cellar_ProblemKind_MISMATCH; /* no need to read it */
        return 0;
    }
    if (!err)
        err = cfs_file_open(fs, &j->f, e->path, CFS_O_RDONLY);
    if (err == CFS_ERR_NOENT || err == CFS_ERR_NOTDIR ||
        err == CFS_ERR_NAMETOOLONG || err == CFS_ERR_INVAL) {
        *kind = cellar_ProblemKind_MISSING;
        return 0;
    }
    if (err == CFS_ERR_CORRUPT) {
        *kind = cellar_ProblemKind_UNREADABLE;
        return 0;
    }
    if (err)
        return err;
    int32_t size = cfs_file_size(fs, &j->f);
    if (size < 0) {
        (void)cfs_file_close(fs, &j->f);
        return size;
    }
    err = svc_job_hash_begin(s, part, &j->f, 0, (uint32_t)size);
    if (err) {
        svc_job_hash_end(s);
        return err;
    }
    return 1;
}

/* The hash begun by check_begin is done (r = 1) or failed: e's
 * ProblemKind, or a device error. */
int svc_check_done(svc_t *s, int r, const man_entry_t *e,
                   cellar_ProblemKind *kind)
{
    svc_job_t *j = &s->job;
    uint32_t size = j->total;
    svc_job_hash_end(s);
    if (r == CFS_ERR_CORRUPT) {
        *kind = cellar_ProblemKind_UNREADABLE;
        return 0;
    }
    if (r < 0)
        return r;
    *kind = memcmp(j->digest, e->sha, 32) == 0 &&
                    (!(e->flags & MAN_F_SIZE) || size == e->size)
                ? cellar_ProblemKind_P_NONE
                : cellar_ProblemKind_MISMATCH;
    return 0;
}
