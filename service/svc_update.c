/* svc_update.c - the manifest, shadow writes, update transactions, verify,
 * backup and restore (docs/UPDATE.md). Device-side code: no OS calls, no
 * allocation. */
#include <string.h>

#include "svc_int.h"

#define USR 0u
#define BAK 1u
#define CP_DIR "/.cellar/cp"
#define TX_DIR "/.cellar/tx"

static uint32_t now_s(svc_t *s)
{
    return s->cfg.clock ? s->cfg.clock(s->cfg.clock_ctx) : 0;
}

/* "/usr" + path inside the partition, for messages and replies. */
static void show_path(svc_t *s, uint32_t part, const char *in, char *out,
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

static int fail_in(svc_t *s, int err, uint32_t part, const char *path,
                   const char *why)
{
    char show[SVC_MAX_PATH + 8];
    show_path(s, part, path, show, sizeof(show));
    return svc_fail_path(s, err, show, why);
}

static void log_path(svc_t *s, const char *what, uint32_t part,
                     const char *path, const char *tail)
{
    if (!s->cfg.log)
        return;
    char show[SVC_MAX_PATH + 8];
    show_path(s, part, path, show, sizeof(show));
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

/* Partition named by a request field: "" = usr. -1 with the error set. */
static int part_arg(svc_t *s, const char *name)
{
    const char *w = name[0] == '/' ? name + 1 : name;
    if (!w[0])
        w = "usr";
    for (uint32_t i = 0; i < s->nparts; i++)
        if (strcmp(s->part[i].name, w) == 0) {
            if (!s->part[i].mounted || !s->part[i].has_man) {
                (void)svc_fail_path(s, FS_ERR_IO, name[0] ? name : "/usr",
                                    s->part[i].mounted
                                        ? "the partition's manifest cannot "
                                          "be used (format it)"
                                        : "partition is not mounted");
                return -1;
            }
            return (int)i;
        }
    (void)svc_fail_path(s, FS_ERR_NOENT, name,
                        "no such partition (use \"/usr\" or \"/bak\")");
    return -1;
}

static bool sha_eq(const man_entry_t *a, const man_entry_t *b)
{
    return memcmp(a->sha, b->sha, 32) == 0 &&
           (!(a->flags & MAN_F_SIZE) || !(b->flags & MAN_F_SIZE) ||
            a->size == b->size);
}

/* Check a file against its manifest entry: P_NONE, or the ProblemKind
 * (*errp: a device error, reported as UNREADABLE). */
static cellar_ProblemKind check_file(svc_t *s, uint32_t part,
                                     const man_entry_t *e, int *errp)
{
    static const cellar_ProblemKind kind[] = {
        [MAN_OK] = cellar_ProblemKind_P_NONE,
        [MAN_MISSING] = cellar_ProblemKind_MISSING,
        [MAN_MISMATCH] = cellar_ProblemKind_MISMATCH,
        [MAN_UNREADABLE] = cellar_ProblemKind_UNREADABLE,
    };
    int r = man_check(&s->part[part].fs, &s->t1, e, s->scratch,
                      sizeof(s->scratch));
    *errp = r < 0 ? r : 0;
    return r < 0 ? cellar_ProblemKind_UNREADABLE : kind[r];
}

/* ---- setup -------------------------------------------------------------------- */

/* Open the manifest of partition i, whatever the partition holds: a
 * manifest that is not a file is set aside (cleared), damaged slots are
 * freed, and a partition too full for a writable manifest gets a
 * read-only one (PART_FULL) or none (PART_NO_MANIFEST). */
static void attach_manifest(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    fs_stat_t st;
    int err = man_open(&p->man, &p->fs);
    if (err == FS_ERR_NOSPC || err == FS_ERR_ROFS) {
        (void)fs_gc(&p->fs, 0); /* stale data a failed operation left */
        err = man_open(&p->man, &p->fs);
    }
    if (err == FS_ERR_ISDIR || err == FS_ERR_NOTDIR ||
        (err == FS_ERR_CORRUPT &&
         fs_stat(&p->fs, MAN_FILE, &st) == 0)) {
        /* not a manifest at all: the files stay, their entries are lost */
        int e2 = man_clear(&p->fs, fs_stat(&p->fs, MAN_DIR, &st) == 0 &&
                                           st.type == FS_TYPE_DIR
                                       ? MAN_FILE : MAN_DIR,
                           s->cp.tmp);
        svc_problem(s, i, "the manifest is not a file", svc_reason(err),
                    e2 ? "it could not be cleared" :
                    "cleared: every file is untracked (import or rewrite)");
        err = e2 ? e2 : man_open(&p->man, &p->fs);
    }
    if (err == FS_ERR_NOSPC || err == FS_ERR_ROFS) {
        if (man_open_ro(&p->man, &p->fs) == 0) {
            fs_statvfs_t v;
            p->has_man = 1;
            p->state = SVC_PART_FULL;
            p->full_claimed = fs_statvfs(&p->fs, &v) ? 0 : v.claimed;
            svc_problem(s, i, "no room for the service's bookkeeping",
                        svc_reason(err), "served read-only: remove files "
                        "to free space");
            return;
        }
    }
    if (err) {
        fs_statvfs_t v;
        p->state = SVC_PART_NO_MANIFEST;
        p->full_claimed = fs_statvfs(&p->fs, &v) ? 0 : v.claimed;
        svc_problem(s, i, "cannot open the manifest", svc_reason(err),
                    err == FS_ERR_NOSPC ? "served read-only: remove files "
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
    int err = man_clear(&p->fs, dir, s->cp.tmp);
    char what[64] = "cannot recover ";
    strcat(what, dir);
    svc_problem(s, i, what, svc_reason(why),
                err ? "it could not be removed either"
                    : "dropped it (an update or copy in it is lost)");
}

static int attach(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    p->state = SVC_PART_OK;
    /* shadows of writers a power cut or a stop interrupted: removed first,
     * one at a time (a removal needs no room), so what they held is free
     * for the manifest */
    int err = man_clear(&p->fs, MAN_SHADOW_DIR, s->cp.tmp);
    if (err)
        svc_problem(s, i, "cannot remove the shadow copies in "
                    MAN_SHADOW_DIR, svc_reason(err), "left as they are");
    attach_manifest(s, i);
    fs_statvfs_t v;
    if (fs_statvfs(&p->fs, &v) == 0 && v.claimed + v.reserve > v.total)
        svc_problem(s, i, "files claim more than the partition holds "
                    "(sparse files)", NULL, "growth is refused until they "
                    "are removed or truncated");
    if (!p->has_man || p->state != SVC_PART_OK) {
        if (i == USR)
            memset(&s->tx, 0, sizeof(s->tx));
        return 0;
    }
    /* a copy (backup / restore) committed before a cut is finished; one
     * not committed is dropped */
    txn_bind(&s->cp, &p->fs, &p->man, CP_DIR);
    int r = txn_load(&s->cp);
    if (r == 1)
        log_path(s, "finished the interrupted copy into", i, "/", NULL);
    if (r >= 0 && s->cp.active)
        r = txn_abort(&s->cp);
    fs_stat_t cst;
    if (r >= 0 && fs_stat(&p->fs, CP_DIR, &cst) == 0)
        r = FS_ERR_NOTEMPTY; /* what the abort could not remove */
    if (r < 0) {
        if (s->cp.plan_open)
            (void)fs_file_close(&p->fs, &s->cp.plan);
        txn_bind(&s->cp, &p->fs, &p->man, CP_DIR);
        clear_staging(s, i, CP_DIR, r);
    }
    if (i == USR) {
        txn_bind(&s->tx, &p->fs, &p->man, TX_DIR);
        r = txn_load(&s->tx);
        if (r == 1)
            log_path(s, "finished the committed update of", i, "/", NULL);
        else if (r == 0 && s->tx.active && s->cfg.log) {
            sb_t b = svc_log_begin(s, NULL);
            svc_sb_str(&b, "a staged update is kept for a resume (");
            svc_sb_u64(&b, s->tx.declared);
            svc_sb_str(&b, " entries declared)");
            svc_log_end(s);
        }
        fs_stat_t st;
        if (r == 0 && !s->tx.active && fs_stat(&p->fs, TX_DIR, &st) == 0)
            r = FS_ERR_NOTEMPTY; /* what an abort could not remove */
        if (r < 0) {
            if (s->tx.plan_open)
                (void)fs_file_close(&p->fs, &s->tx.plan);
            txn_bind(&s->tx, &p->fs, &p->man, TX_DIR);
            clear_staging(s, i, TX_DIR, r);
        }
        s->tx_owner = NULL;
        s->tx_idle_since = 0;
    }
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
    fs_statvfs_t v;
    if (fs_statvfs(&p->fs, &v) || v.claimed >= p->full_claimed)
        return false;
    if (p->has_man)
        (void)man_close(&p->man);
    p->has_man = 0;
    svc_problems_forget(s, i); /* what is still wrong is found again */
    (void)attach(s, i); /* the manifest and the staging as at start-up */
    if (p->state == SVC_PART_OK)
        log_path(s, "space was freed:", i, "/",
                 "the manifest is writable again");
    return p->state == SVC_PART_OK;
}

static void detach(svc_t *s, uint32_t i)
{
    svc_part_t *p = &s->part[i];
    if (i == USR && s->tx.fs) {
        (void)txn_park(&s->tx);
        if (s->tx.plan_open)
            (void)fs_file_close(&p->fs, &s->tx.plan);
        memset(&s->tx, 0, sizeof(s->tx));
        s->tx_owner = NULL;
    }
    if (p->has_man)
        (void)man_close(&p->man);
    p->has_man = 0;
}

static int restore_paths(svc_t *s, const char *const *paths, uint32_t n,
                         cellar_CopyReply *out, bool *found);

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
            (void)attach(s, i);
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
    return attach(s, i);
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
static int shadow_create(svc_t *s, uint32_t part, fs_file_t *f, uint32_t *no,
                         const char *path, uint32_t keep)
{
    fs_t *fs = &s->part[part].fs;
    char name[40];
    int err = fs_mkdir(fs, MAN_SHADOW_DIR);
    if (err && err != FS_ERR_EXIST)
        return err;
    *no = ++s->shadow_seq;
    err = fs_file_open(fs, f, shadow_name(name, *no),
                       FS_O_RDWR | FS_O_CREAT | FS_O_TRUNC);
    if (err)
        return err;
    if (keep) {
        err = fs_file_open(fs, &s->t1, path, FS_O_RDONLY);
        bool opened = err == 0;
        for (uint32_t off = 0; !err && off < keep;) {
            uint32_t want = keep - off < sizeof(s->scratch)
                                ? keep - off : (uint32_t)sizeof(s->scratch);
            int n = fs_file_pread(fs, &s->t1, s->scratch, want, off);
            if (n == 0)
                break;
            if (n > 0 && !all_zero(s->scratch, (uint32_t)n))
                n = fs_file_pwrite(fs, f, s->scratch, (uint32_t)n, off);
            if (n < 0)
                err = n;
            else
                off += (uint32_t)n;
        }
        if (opened)
            (void)fs_file_close(fs, &s->t1);
        /* zeros were not written: the copy stores what the file stores,
         * and the size makes the rest read as zeros */
        if (!err)
            err = fs_file_truncate(fs, f, keep);
    }
    if (err) {
        (void)fs_file_revert(fs, f);
        (void)fs_file_close(fs, f);
        (void)fs_remove(fs, name);
    }
    return err;
}

/* Hash f, commit it (hidden), then move it over path together with its
 * manifest entry. f is closed in every case; on failure the data is gone. */
static int publish(svc_t *s, uint32_t part, fs_file_t *f, uint32_t no,
                   const char *path)
{
    svc_part_t *p = &s->part[part];
    man_entry_t *e = &s->me;
    char name[40];
    memset(e, 0, sizeof(*e));
    int err = man_hash_file(&p->fs, f, s->scratch, sizeof(s->scratch), e->sha,
                            &e->size);
    int err2 = fs_file_close(&p->fs, f);
    shadow_name(name, no);
    if (!err)
        err = err2;
    if (!err) {
        e->kind = MAN_TRACK;
        e->flags = MAN_F_SIZE;
        e->mtime = now_s(s);
        svc_copy_str(e->path, sizeof(e->path), path);
        err = man_set(&p->man, e);
        if (err)
            man_revert(&p->man);
    }
    if (!err) {
        const char *src[1] = { name }, *dst[1] = { path };
        err = man_commit(&p->man, src, dst, 1);
    }
    if (err)
        (void)fs_remove(&p->fs, name);
    return err;
}

static const char *handle_rel(svc_t *s, const svc_handle_t *h)
{
    const char *r = h->path + 1 + strlen(s->part[h->part].name);
    return r[0] ? r : "/";
}

int svc_shadow_open(svc_t *s, svc_handle_t *h, const svc_path_t *p, int ff)
{
    fs_t *fs = &s->part[p->part].fs;
    fs_stat_t st;
    int err = fs_stat(fs, p->fs, &st);
    if (err && err != FS_ERR_NOENT)
        return svc_fail_path(s, err, p->show, NULL);
    if (!err && st.type == FS_TYPE_DIR)
        return svc_fail_path(s, FS_ERR_ISDIR, p->show, NULL);
    if (err && !(ff & FS_O_CREAT))
        return svc_fail_path(s, FS_ERR_NOENT, p->show, NULL);
    if (!err && (ff & FS_O_CREAT) && (ff & FS_O_EXCL))
        return svc_fail_path(s, FS_ERR_EXIST, p->show, NULL);
    if (err) { /* the parent must be a directory */
        char *par = (char *)s->scratch;
        strcpy(par, p->fs);
        char *slash = strrchr(par, '/');
        if (slash == par)
            slash[1] = 0;
        else
            *slash = 0;
        fs_stat_t pst;
        int e2 = fs_stat(fs, par, &pst);
        if (e2)
            return svc_fail_path(s, e2, p->show, NULL);
        if (pst.type != FS_TYPE_DIR)
            return svc_fail_path(s, FS_ERR_NOTDIR, p->show, NULL);
    }
    if (writer_open(s, (uint32_t)p->part, p->show, h))
        return svc_fail_path(s, FS_ERR_BUSY, p->show,
                             "file is open for writing by another handle");
    uint32_t keep = (!err && !(ff & FS_O_TRUNC)) ? st.size : 0;
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
    svc_copy_str(rel, sizeof(rel), handle_rel(s, h));
    h->shadow = 0;
    int err = publish(s, h->part, &h->file, h->shadow_no, rel);
    if (err)
        return svc_fail_handle(s, err, h, "the data written was not kept");
    return 0;
}

void svc_shadow_discard(svc_t *s, svc_handle_t *h)
{
    fs_t *fs = &s->part[h->part].fs;
    char name[40];
    (void)fs_file_revert(fs, &h->file);
    (void)fs_file_close(fs, &h->file);
    (void)fs_remove(fs, shadow_name(name, h->shadow_no));
    h->shadow = 0;
}

int svc_shadow_truncate(svc_t *s, const svc_path_t *p, uint32_t size)
{
    fs_t *fs = &s->part[p->part].fs;
    fs_stat_t st;
    uint32_t no;
    int err = fs_stat(fs, p->fs, &st);
    if (!err && st.type == FS_TYPE_DIR)
        err = FS_ERR_ISDIR;
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    if (writer_open(s, (uint32_t)p->part, p->show, NULL))
        return svc_fail_path(s, FS_ERR_BUSY, p->show,
                             "file is open for writing");
    if ((err = svc_room(s, (uint32_t)p->part, size, p->show)))
        return err;
    err = shadow_create(s, (uint32_t)p->part, &s->t2, &no, p->fs,
                        size < st.size ? size : st.size);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    err = fs_file_truncate(fs, &s->t2, size);
    if (err) {
        char name[40];
        (void)fs_file_revert(fs, &s->t2);
        (void)fs_file_close(fs, &s->t2);
        (void)fs_remove(fs, shadow_name(name, no));
        return svc_fail_path(s, err, p->show, NULL);
    }
    err = publish(s, (uint32_t)p->part, &s->t2, no, p->fs);
    if (err)
        return svc_fail_path(s, err, p->show, NULL);
    return 0;
}

int svc_man_remove(svc_t *s, const svc_path_t *p)
{
    svc_part_t *pt = &s->part[p->part];
    fs_stat_t st;
    /* a path that is gone but still has an entry (a repair after a
     * crash or a bug): the removal drops the entry */
    bool gone = fs_stat(&pt->fs, p->fs, &st) == FS_ERR_NOENT;
    uint32_t slot;
    int k = man_find(&pt->man, p->fs, &s->me, &slot);
    if (k < 0)
        return k;
    if (gone && k == 0)
        return FS_ERR_NOENT;
    if (k == 0) /* untracked: a plain removal, which needs no room */
        return fs_remove(&pt->fs, p->fs);
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
    if (err == FS_ERR_NOSPC && !gone) {
        /* too full even for the slot write and the commit (the log's free
         * blocks are fewer than the space rule's figures say, or files
         * were put there behind the service's back): nothing changed;
         * free the space first, then drop the entry; a cut in between
         * leaves an entry whose removal finishes it */
        err = fs_remove(&pt->fs, p->fs);
        if (err)
            return err;
        log_path(s, "removed before its manifest entry (no room):",
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
        log_path(s, "dropped the entry of the missing", p->part, p->fs, NULL);
    return err;
}

int svc_store_drop_staging(svc_t *s)
{
    svc_part_t *p = &s->part[USR];
    if (!p->mounted)
        return FS_ERR_IO;
    int err = man_clear(&p->fs, TX_DIR, s->cp.tmp);
    (void)svc_store_retry(s, USR);
    return err;
}

/* Why renaming a to b cannot work whatever the room (0: it could). The
 * filesystem asks for room before it looks at the paths; on a full
 * partition the request's own error is the answer, not ENOSPC. */
static int rename_check(fs_t *fs, const char *a, const char *b)
{
    fs_stat_t sa, sb;
    int err = fs_stat(fs, a, &sa);
    if (err)
        return err;
    if (strcmp(a, b) == 0)
        return 0;
    if (man_under(b, a))
        return FS_ERR_INVAL; /* into itself */
    err = fs_stat(fs, b, &sb);
    if (err == FS_ERR_NOENT) {
        char parent[MAN_PATH_MAX + 1];
        size_t n = strlen(b);
        while (n > 1 && b[n - 1] != '/')
            n--;
        n = n > 1 ? n - 1 : 1;
        memcpy(parent, b, n);
        parent[n] = 0;
        return fs_stat(fs, parent, &sb);
    }
    if (err)
        return err;
    if (sa.type == FS_TYPE_FILE && sb.type == FS_TYPE_DIR)
        return FS_ERR_ISDIR;
    if (sa.type == FS_TYPE_DIR && sb.type == FS_TYPE_FILE)
        return FS_ERR_NOTDIR;
    if (sa.type == FS_TYPE_DIR && sb.type == FS_TYPE_DIR) {
        fs_dir_t d;
        char name[FS_NAME_MAX + 1];
        if (fs_dir_open(fs, &d, b) == 0) {
            int r = fs_dir_read(fs, &d, name, sizeof(name), &sb);
            (void)fs_dir_close(fs, &d);
            if (r == 1)
                return FS_ERR_NOTEMPTY;
        }
    }
    return 0;
}

int svc_man_rename(svc_t *s, const svc_path_t *a, const svc_path_t *b)
{
    svc_part_t *pt = &s->part[a->part];
    int err;
    if (strcmp(a->fs, b->fs) == 0) {
        err = fs_rename(&pt->fs, a->fs, b->fs);
    } else if (!(err = man_move(&pt->man, a->fs, b->fs))) {
        const char *src[1] = { a->fs }, *dst[1] = { b->fs };
        err = man_commit(&pt->man, src, dst, 1);
    } else {
        man_revert(&pt->man);
    }
    if (err == FS_ERR_NOSPC) {
        int why = rename_check(&pt->fs, a->fs, b->fs);
        if (why)
            err = why;
    }
    return err;
}

/* ---- manifest RPCs --------------------------------------------------------------- */

static void entry_out(svc_t *s, uint32_t part, const man_entry_t *e,
                      cellar_ManifestEntry *o)
{
    show_path(s, part, e->path, o->path, sizeof(o->path));
    o->size = (e->flags & MAN_F_SIZE) ? (int64_t)e->size : -1;
    o->sha256.size = 32;
    memcpy(o->sha256.bytes, e->sha, 32);
    o->mtime = e->mtime;
}

int svc_do_manifest(svc_t *s, const cellar_ManifestRequest *r)
{
    int part = part_arg(s, r->partition);
    if (part < 0)
        return -1 == part ? FS_ERR_NOENT : part;
    man_t *m = &s->part[part].man;
    cellar_ManifestReply *o = &s->resp.body.manifest;
    uint32_t max = r->max_entries && r->max_entries < 32 ? r->max_entries : 32;
    uint32_t n = man_slots(m);
    man_entry_t *e = &s->me;
    s->resp.which_body = cellar_Response_manifest_tag;
    for (uint32_t i = r->cursor; i < n; i++) {
        int k = man_get(m, i, e);
        if (k < 0) {
            s->resp.which_body = 0;
            return fail_in(s, k, (uint32_t)part, MAN_FILE, NULL);
        }
        if (k == 0)
            continue;
        if (o->entries_count == max) {
            o->next_cursor = i;
            break;
        }
        entry_out(s, (uint32_t)part, e, &o->entries[o->entries_count++]);
    }
    return 0;
}

/* A /usr path from a request into the partition path (rel). */
static int usr_path(svc_t *s, const char *in, char *rel)
{
    int err = svc_resolve(s, in, &s->pb);
    if (err)
        return err;
    if (s->pb.part != (int)USR || svc_is_part_root(&s->pb))
        return svc_fail_path(s, FS_ERR_INVAL, s->pb.show,
                             "must name a file under /usr");
    strcpy(rel, s->pb.fs);
    return 0;
}

int svc_do_manifest_import(svc_t *s, const cellar_ManifestImportRequest *r)
{
    svc_part_t *p = &s->part[USR];
    man_entry_t *e = &s->me;
    if (!p->has_man)
        return svc_fail_path(s, FS_ERR_IO, "/usr", "partition is not mounted");
    /* every entry is checked before any is written: a bad one is EINVAL
     * (not the ENOSPC a full partition gives the writes) */
    for (int pass = 0; pass < 2; pass++)
    for (pb_size_t i = 0; i < r->entries_count; i++) {
        const cellar_ManifestEntry *in = &r->entries[i];
        memset(e, 0, sizeof(*e));
        int err = usr_path(s, in->path, e->path);
        if (err) {
            man_revert(&p->man);
            return err;
        }
        if (in->sha256.size != 32 || in->size < -1 ||
            in->size > (int64_t)FS_FILE_MAX) {
            man_revert(&p->man);
            return svc_fail_path(s, FS_ERR_INVAL, s->pb.show,
                                 in->sha256.size != 32
                                     ? "sha256 must be 32 bytes"
                                     : "size must be -1 (unknown) or a file size");
        }
        if (pass == 0)
            continue;
        e->kind = MAN_TRACK;
        e->flags = in->size >= 0 ? MAN_F_SIZE : 0;
        e->size = in->size >= 0 ? (uint32_t)in->size : 0;
        e->mtime = now_s(s);
        memcpy(e->sha, in->sha256.bytes, 32);
        if ((err = man_set(&p->man, e))) {
            man_revert(&p->man);
            return fail_in(s, err, USR, e->path, NULL);
        }
    }
    int err = man_commit(&p->man, NULL, NULL, 0);
    if (err)
        return fail_in(s, err, USR, MAN_FILE, NULL);
    svc_reply_done(s);
    return 0;
}

int svc_do_verify(svc_t *s, svc_conn_t *c, const cellar_VerifyRequest *r)
{
    int part = part_arg(s, r->partition);
    if (part < 0)
        return FS_ERR_NOENT;
    if (r->repair && part != (int)USR)
        return svc_fail_path(s, FS_ERR_INVAL, r->partition,
                             "only /usr can be repaired (from /bak)");
    svc_job_t *j = &s->job;
    memset(j, 0, sizeof(*j));
    j->kind = SVC_JOB_VERIFY;
    j->part = (uint8_t)part;
    j->repair = r->repair;
    j->cursor = r->cursor;
    j->max = r->max_entries && r->max_entries < 16 ? r->max_entries : 16;
    j->nslots = man_slots(&s->part[part].man);
    if (svc_update_job_step(s))
        return s->resp.has_error ? FS_ERR_INVAL : 0; /* done at once */
    svc_job_defer(s, c); /* the rest in steps: svc_process */
    return 0;
}

/* ---- the steps of verify and of the start-up check ---------------------------- */

/* Begin checking s->job.e: 0 = decided without reading (*kind), 1 = its
 * content is being hashed, or a device error. */
static int entry_begin(svc_t *s, cellar_ProblemKind *kind)
{
    svc_job_t *j = &s->job;
    fs_t *fs = &s->part[j->part].fs;
    fs_stat_t st;
    int err = fs_stat(fs, j->e.path, &st);
    if (!err && st.type != FS_TYPE_FILE) {
        *kind = cellar_ProblemKind_MISMATCH;
        return 0;
    }
    if (!err && (j->e.flags & MAN_F_SIZE) && st.size != j->e.size) {
        *kind = cellar_ProblemKind_MISMATCH; /* no need to read it */
        return 0;
    }
    if (!err)
        err = fs_file_open(fs, &j->f, j->e.path, FS_O_RDONLY);
    if (err == FS_ERR_NOENT || err == FS_ERR_NOTDIR ||
        err == FS_ERR_NAMETOOLONG || err == FS_ERR_INVAL) {
        *kind = cellar_ProblemKind_MISSING;
        return 0;
    }
    if (err == FS_ERR_CORRUPT) {
        *kind = cellar_ProblemKind_UNREADABLE;
        return 0;
    }
    if (err)
        return err;
    int32_t size = fs_file_size(fs, &j->f);
    if (size < 0) {
        (void)fs_file_close(fs, &j->f);
        return size;
    }
    err = svc_job_hash_begin(s, j->part, &j->f, 0, (uint32_t)size);
    if (err) {
        svc_job_hash_end(s);
        return err;
    }
    return 1;
}

/* The hash of s->job.e is done (r = 1) or failed: its ProblemKind, or a
 * device error. */
static int entry_hashed(svc_t *s, int r, cellar_ProblemKind *kind)
{
    svc_job_t *j = &s->job;
    uint32_t size = j->total;
    svc_job_hash_end(s);
    if (r == FS_ERR_CORRUPT) {
        *kind = cellar_ProblemKind_UNREADABLE;
        return 0;
    }
    if (r < 0)
        return r;
    *kind = memcmp(j->digest, j->e.sha, 32) == 0 &&
                    (!(j->e.flags & MAN_F_SIZE) || size == j->e.size)
                ? cellar_ProblemKind_P_NONE
                : cellar_ProblemKind_MISMATCH;
    return 0;
}

/* A problem with s->job.e: report it (verify), restore it (repair, the
 * check). Requests ran between the steps that read the file: if its entry
 * changed since, the file was rewritten with it and is not reported. */
static void entry_problem(svc_t *s, cellar_ProblemKind k)
{
    svc_job_t *j = &s->job;
    man_entry_t *now = &s->me2;
    uint32_t slot;
    int r = man_find(&s->part[j->part].man, j->e.path, now, &slot);
    if (r == 1 && (now->size != j->e.size || now->flags != j->e.flags ||
                   now->mtime != j->e.mtime ||
                   memcmp(now->sha, j->e.sha, 32) != 0))
        return;
    if (r == 0)
        return;
    const char *one[1] = { j->e.path };
    cellar_CopyReply rep;
    bool found = false;
    if (j->kind == SVC_JOB_CHECK) {
        j->bad++;
        log_path(s, "check:", USR, j->e.path,
                 k == cellar_ProblemKind_MISSING ? "missing"
                 : k == cellar_ProblemKind_MISMATCH ? "corrupt (SHA-256 differs)"
                                                    : "unreadable");
        memset(&rep, 0, sizeof(rep));
        int err = restore_paths(s, one, 1, &rep, &found);
        if (!err && rep.files == 1) {
            j->fixed++;
            log_path(s, "check: restored", USR, j->e.path, "from /bak");
        } else {
            log_path(s, "check: cannot restore", USR, j->e.path,
                     err ? svc_reason(err) : "no verified copy in /bak");
        }
        return;
    }
    if (j->vr.problems_count >= 16)
        return;
    cellar_Problem *pr = &j->vr.problems[j->vr.problems_count++];
    show_path(s, j->part, j->e.path, pr->path, sizeof(pr->path));
    pr->kind = k;
    if (j->repair) {
        memset(&rep, 0, sizeof(rep));
        int rerr = restore_paths(s, one, 1, &rep, &found);
        pr->repaired = !rerr && rep.files == 1;
        if (pr->repaired)
            log_path(s, "verify: restored", USR, j->e.path, "from /bak");
    }
}

/* The job is at its end: the reply (verify) or the summary (check). */
static int job_end(svc_t *s)
{
    svc_job_t *j = &s->job;
    if (j->kind == SVC_JOB_VERIFY) {
        s->resp.which_body = cellar_Response_verify_tag;
        s->resp.body.verify = j->vr;
        j->kind = SVC_JOB_NONE;
        return 1;
    }
    if (s->cfg.log) {
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
        log_path(s, "check: cannot read", USR, path, svc_reason(err));
        return 0;
    }
    j->kind = SVC_JOB_NONE;
    (void)fail_in(s, err, j->part, path, NULL);
    return 1;
}

int svc_update_job_step(svc_t *s)
{
    svc_job_t *j = &s->job;
    man_t *m = &s->part[j->part].man;
    uint32_t budget = SVC_JOB_STEP_BYTES, looked = 0;
    cellar_ProblemKind k;
    for (;;) {
        if (j->hashing) {
            int r = svc_job_hash_step(s, &budget);
            if (r == 0)
                return 0; /* the budget is spent */
            int err = entry_hashed(s, r, &k);
            if (err && entry_error(s, err, j->e.path))
                return 1;
            if (!err && k != cellar_ProblemKind_P_NONE)
                entry_problem(s, k);
            if (!budget)
                return 0;
            continue;
        }
        if (j->cursor >= j->nslots)
            return job_end(s);
        if (looked++ == 16)
            return 0; /* slots read in this step */
        int r = man_get(m, j->cursor, &j->e);
        if (r < 0) {
            if (j->kind == SVC_JOB_CHECK) {
                log_path(s, "check: cannot read", USR, MAN_FILE, svc_reason(r));
                j->cursor = j->nslots;
                return job_end(s);
            }
            j->kind = SVC_JOB_NONE;
            (void)fail_in(s, r, j->part, MAN_FILE, NULL);
            return 1;
        }
        if (r == 0) {
            j->cursor++;
            continue;
        }
        if (j->kind == SVC_JOB_VERIFY && j->vr.checked == j->max) {
            j->vr.next_cursor = j->cursor;
            return job_end(s);
        }
        j->cursor++;
        if (j->kind == SVC_JOB_VERIFY)
            j->vr.checked++;
        int err = entry_begin(s, &k);
        if (err < 0 && entry_error(s, err, j->e.path))
            return 1;
        if (err == 0 && k != cellar_ProblemKind_P_NONE)
            entry_problem(s, k);
    }
}

/* ---- copies between partitions (backup, restore) ------------------------------------ */

static bool wanted(const char *path, const char *const *paths, uint32_t n,
                   bool *found)
{
    if (n == 0)
        return true;
    for (uint32_t j = 0; j < n; j++)
        if (man_under(path, paths[j])) {
            if (found)
                found[j] = true;
            return true;
        }
    return false;
}

static void add_skip(cellar_CopyReply *out, svc_t *s, uint32_t part,
                     const char *path, cellar_ProblemKind k)
{
    if (out->skipped_count >= 16)
        return;
    cellar_Problem *pr = &out->skipped[out->skipped_count++];
    show_path(s, part, path, pr->path, sizeof(pr->path));
    pr->kind = k;
}

/* Copy the verified files of partition `from` named by paths (all when
 * n == 0) into partition `to`, with their manifest entries, as one
 * transaction. mirror: also remove from `to` what `from`'s manifest does
 * not have. found[j]: paths[j] matched an entry. */
static int copy_tree(svc_t *s, uint32_t from, uint32_t to,
                     const char *const *paths, uint32_t n, bool mirror,
                     cellar_CopyReply *out, bool *found)
{
    svc_part_t *pa = &s->part[from], *pb = &s->part[to];
    man_entry_t e, *cur = &s->me;
    uint32_t slot, idx = 0, ns = man_slots(&pa->man);
    static const uint8_t zero[32];
    int err;

    txn_bind(&s->cp, &pb->fs, &pb->man, CP_DIR);
    if ((err = txn_begin(&s->cp, zero, 0, 0)))
        return err;
    for (uint32_t i = 0; i < ns; i++) {
        int k = man_get(&pa->man, i, &e);
        if (k < 0) {
            err = k;
            goto fail;
        }
        if (k == 0 || !wanted(e.path, paths, n, found))
            continue;
        /* the same content there already? (then the source is only
         * checked, for the report) */
        int cerr;
        k = man_find(&pb->man, e.path, cur, &slot);
        if (k < 0) {
            err = k;
            goto fail;
        }
        if (k == 1 && sha_eq(&e, cur) &&
            check_file(s, to, cur, &cerr) == cellar_ProblemKind_P_NONE) {
            cellar_ProblemKind pk = check_file(s, from, &e, &cerr);
            if (cerr && cerr != FS_ERR_CORRUPT) {
                err = cerr;
                goto fail;
            }
            if (pk != cellar_ProblemKind_P_NONE)
                add_skip(out, s, from, e.path, pk);
            else
                out->unchanged++;
            continue;
        }
        if (idx == TXN_MAX_ENTRIES) {
            err = FS_ERR_NOSPC;
            goto fail;
        }
        /* the copy reads the source once: its hash is the source's check */
        const char *dp = txn_data_path(&s->cp, idx);
        err = man_copy_file(&pa->fs, e.path, &pb->fs, dp, &s->t1, &s->t2, s->scratch,
                            sizeof(s->scratch), cur->sha, &cur->size);
        cellar_ProblemKind pk = cellar_ProblemKind_P_NONE;
        if (err == FS_ERR_NOENT || err == FS_ERR_NOTDIR || err == FS_ERR_ISDIR)
            pk = err == FS_ERR_ISDIR ? cellar_ProblemKind_MISMATCH
                                     : cellar_ProblemKind_MISSING;
        else if (err == FS_ERR_CORRUPT)
            pk = cellar_ProblemKind_UNREADABLE;
        else if (err)
            goto fail;
        else if (memcmp(cur->sha, e.sha, 32) != 0 ||
                 ((e.flags & MAN_F_SIZE) && cur->size != e.size))
            pk = cellar_ProblemKind_MISMATCH;
        if (pk != cellar_ProblemKind_P_NONE) {
            add_skip(out, s, from, e.path, pk);
            (void)fs_remove(&pb->fs, dp);
            continue;
        }
        e.kind = MAN_TRACK;
        e.flags = MAN_F_SIZE | MAN_F_SEND;
        e.size = cur->size;
        if ((err = txn_declare(&s->cp, idx++, &e)))
            goto fail;
    }
    if (mirror) { /* what `to` holds that `from` does not track */
        uint32_t nb = man_slots(&pb->man);
        for (uint32_t i = 0; i < nb; i++) {
            int k = man_get(&pb->man, i, &e);
            if (k < 0) {
                err = k;
                goto fail;
            }
            if (k == 0)
                continue;
            k = man_find(&pa->man, e.path, cur, &slot);
            if (k < 0) {
                err = k;
                goto fail;
            }
            if (k == 1 || idx == TXN_MAX_ENTRIES)
                continue;
            e.kind = MAN_REMOVE;
            e.flags = 0;
            if ((err = txn_declare(&s->cp, idx++, &e)))
                goto fail;
        }
    }
    if (idx == 0) {
        err = txn_abort(&s->cp);
        return err;
    }
    s->cp.now = now_s(s);
    txn_stats_t st;
    uint32_t bad = 0;
    err = txn_commit(&s->cp, s->scratch, sizeof(s->scratch), &st, &bad, NULL,
                     NULL);
    if (err)
        goto fail;
    out->files += st.written;
    out->removed += st.removed;
    out->bytes += st.bytes;
    return 0;
fail:
    (void)txn_abort(&s->cp);
    return err;
}

/* Is path open by any client handle of partition part? */
static bool path_busy(void *ctx, const char *path)
{
    svc_t *s = ctx;
    char show[SVC_MAX_PATH + 8];
    show_path(s, USR, path, show, sizeof(show));
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++)
            if (c->h[k].id && c->h[k].part == USR && !c->h[k].shadow &&
                strcmp(c->h[k].path, show) == 0)
                return true;
    return false;
}

static int restore_paths(svc_t *s, const char *const *paths, uint32_t n,
                         cellar_CopyReply *out, bool *found)
{
    if (s->nparts <= BAK || !s->part[BAK].has_man)
        return FS_ERR_NOENT;
    /* close readers of the files that will be replaced: a restore wins */
    for (svc_conn_t *c = s->conns; c; c = c->next)
        for (uint32_t k = 0; k < SVC_MAX_HANDLES; k++) {
            svc_handle_t *h = &c->h[k];
            if (h->id && h->part == USR && !h->shadow &&
                wanted(handle_rel(s, h), paths, n, NULL))
                svc_handle_release(s, h);
        }
    return copy_tree(s, BAK, USR, paths, n, false, out, found);
}

/* Request paths (full device paths) into partition paths. */
static int copy_args(svc_t *s, const char (*in)[256], pb_size_t n,
                     char rel[][SVC_MAX_PATH + 2], const char **ptrs,
                     bool any_part)
{
    for (pb_size_t i = 0; i < n; i++) {
        int err = svc_resolve(s, in[i], &s->pb);
        if (err)
            return err;
        if (s->pb.part < 0 || (!any_part && s->pb.part != (int)USR))
            return svc_fail_path(s, FS_ERR_INVAL, s->pb.show,
                                 any_part ? "name a path under /usr or /bak"
                                          : "name a path under /usr");
        strcpy(rel[i], s->pb.fs);
        ptrs[i] = rel[i];
    }
    return 0;
}

static int copy_rpc(svc_t *s, bool backup, const char (*paths)[256],
                    pb_size_t n)
{
    char rel[16][SVC_MAX_PATH + 2];
    const char *ptrs[16];
    bool found[16];
    cellar_CopyReply *o = &s->resp.body.copy;
    if (s->nparts <= BAK || !s->part[USR].has_man || !s->part[BAK].has_man)
        return svc_fail_path(s, FS_ERR_IO, "/bak", "partition is not mounted");
    if (n > 16)
        n = 16;
    int err = copy_args(s, paths, n, rel, ptrs, !backup);
    if (err)
        return err;
    memset(found, 0, sizeof(found));
    if (backup)
        err = copy_tree(s, USR, BAK, ptrs, n, n == 0, o, found);
    else
        err = restore_paths(s, ptrs, n, o, found);
    if (err) {
        memset(o, 0, sizeof(*o));
        return svc_fail_path(s, err, backup ? "/bak" : "/usr",
                             backup ? "backup failed, /bak is unchanged"
                                    : "restore failed, /usr is unchanged");
    }
    for (pb_size_t j = 0; j < n; j++)
        if (!found[j])
            add_skip(o, s, USR, ptrs[j],
                     backup ? cellar_ProblemKind_MISSING
                            : cellar_ProblemKind_NOT_IN_BACKUP);
    s->resp.which_body = cellar_Response_copy_tag;
    if (s->cfg.log) {
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
    return 0;
}

int svc_do_backup(svc_t *s, const cellar_BackupRequest *r)
{
    return copy_rpc(s, true, r->paths, r->paths_count);
}

int svc_do_restore(svc_t *s, const cellar_RestoreRequest *r)
{
    return copy_rpc(s, false, r->paths, r->paths_count);
}

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
    return svc_fail(s, FS_ERR_INVAL,
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

/* "entries 0 and 1 conflict (why; tail): "/usr/a", "/usr/a/b"" */
static int conflict(svc_t *s, uint32_t a, uint32_t b, int why,
                    const char *tail)
{
    man_entry_t *e = &s->me2;
    char show[SVC_MAX_PATH + 8];
    sb_t m = svc_err_begin(s, FS_ERR_INVAL);
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
        if (i == s->tx.declared) /* the entry being declared */
            svc_copy_str(e->path, sizeof(e->path), s->me.path);
        else if (txn_entry(&s->tx, i, e))
            continue;
        show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&m, k ? ", " : " ");
        svc_sb_qstr(&m, show);
    }
    return FS_ERR_INVAL;
}

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
        (void)svc_fail(s, FS_ERR_INVAL,
                       "bundle id does not match the update in progress");
        return NULL;
    }
    return &s->tx;
}

static void update_log(svc_t *s, svc_conn_t *c, const char *what)
{
    if (!s->cfg.log)
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
        return svc_fail_path(s, FS_ERR_IO, "/usr", "partition is not mounted");
    if (p->state != SVC_PART_OK && !svc_store_retry(s, USR))
        return svc_fail_path(s, FS_ERR_NOSPC, "/usr",
                             "the partition is too full for the service's "
                             "bookkeeping: remove files first");
    if (r->bundle.size != 32)
        return svc_fail(s, FS_ERR_INVAL, "bundle id must be 32 bytes");
    if (r->entries > TXN_MAX_ENTRIES) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, ": a bundle has at most 1024 entries, this one ");
        svc_sb_u64(&b, r->entries);
        return FS_ERR_INVAL;
    }
    fs_statvfs_t v;
    int err = fs_statvfs(&p->fs, &v);
    if (err)
        return svc_fail_path(s, err, "/usr", NULL);
    if (r->bytes > v.total) {
        sb_t b = svc_err_begin(s, FS_ERR_NOSPC);
        svc_sb_str(&b, ": the bundle is ");
        svc_sb_u64(&b, r->bytes);
        svc_sb_str(&b, " bytes, /usr holds at most ");
        svc_sb_u64(&b, v.total);
        return FS_ERR_NOSPC;
    }
    if (t->active && s->tx_owner && s->tx_owner != c) {
        char h[9];
        hex8(h, t->id);
        sb_t b = svc_err_begin(s, FS_ERR_BUSY);
        svc_sb_str(&b, ": another client's update (bundle ");
        svc_sb_str(&b, h);
        svc_sb_str(&b, ", connection #");
        svc_sb_u64(&b, s->tx_owner->num);
        svc_sb_str(&b, ") is in progress; try again when it is done");
        return FS_ERR_BUSY;
    }
    cellar_UpdateBeginReply *o = &s->resp.body.update_begin;
    if (t->active && memcmp(t->id, r->bundle.bytes, 32) == 0 &&
        t->nentries == r->entries && t->bytes == r->bytes) {
        o->resumed = true;
        o->declared = t->declared;
        for (uint32_t i = 0; i < t->declared; i++) {
            man_entry_t *e = &s->me;
            int64_t have;
            if ((err = txn_entry(t, i, e)))
                break;
            if (e->kind == MAN_TRACK && (e->flags & MAN_F_SEND) &&
                (have = txn_staged(t, i)) > 0)
                o->staged += (uint64_t)have;
        }
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
    s->tx_owner = NULL;
    return err;
}

/* Stage entry idx from `other`, a file the manifest says holds the same
 * size and SHA-256 (a move, a copy): nothing needs to cross the link. The
 * copy is hashed as it is made; true if it matched. */
static bool local_copy(svc_t *s, txn_t *t, uint32_t idx, const man_entry_t *e,
                       const char *other)
{
    svc_part_t *p = &s->part[USR];
    uint8_t sha[32];
    uint32_t size;
    char dp[64];
    if (!other[0] || (t->stage_open && t->stage_idx == idx))
        return false;
    svc_copy_str(dp, sizeof(dp), txn_data_path(t, idx));
    int err = man_copy_file(&p->fs, other, &p->fs, dp, &s->t1, &s->t2,
                            s->scratch, sizeof(s->scratch), sha, &size);
    if (!err && size == e->size && memcmp(sha, e->sha, 32) == 0)
        return true;
    (void)fs_remove(&p->fs, dp); /* that file is not what its entry says */
    return false;
}

int svc_do_update_declare(svc_t *s, svc_conn_t *c,
                          const cellar_UpdateDeclareRequest *r)
{
    txn_t *t = own_tx(s, c, r->bundle.bytes, r->bundle.size);
    if (!t)
        return FS_ERR_INVAL;
    svc_part_t *p = &s->part[USR];
    cellar_UpdateDeclareReply *o = &s->resp.body.update_declare;
    man_entry_t *e = &s->me, *m = &s->me2;
    int err;
    if (r->first > t->declared) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, ": declare entries in order: the next is ");
        svc_sb_u64(&b, t->declared);
        return FS_ERR_INVAL;
    }
    if ((uint64_t)r->first + r->entries_count > t->nentries) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, ": more entries than the ");
        svc_sb_u64(&b, t->nentries);
        svc_sb_str(&b, " announced in UpdateBegin; the update is dropped");
        return refuse(s, FS_ERR_INVAL);
    }
    if (r->first == 0)
        s->tx_need = 0;
    for (pb_size_t i = 0; i < r->entries_count; i++) {
        const cellar_BundleEntry *in = &r->entries[i];
        uint32_t idx = r->first + i, slot;
        memset(e, 0, sizeof(*e));
        if ((err = usr_path(s, in->path, e->path)))
            return refuse(s, err);
        fs_stat_t st;
        int se = fs_stat(&p->fs, e->path, &st);
        if (se == FS_ERR_NOTDIR) /* under a file (the bundle may remove it) */
            se = FS_ERR_NOENT;
        if (se && se != FS_ERR_NOENT)
            return refuse(s, fail_in(s, se, USR, e->path, NULL));
        cellar_EntryStatus status;
        uint64_t have = 0;
        if (in->remove) {
            e->kind = MAN_REMOVE;
            status = se ? cellar_EntryStatus_ABSENT : cellar_EntryStatus_REMOVE;
        } else {
            if (in->sha256.size != 32)
                return refuse(s, fail_in(s, FS_ERR_INVAL, USR, e->path,
                                         "sha256 must be 32 bytes"));
            if (in->size > FS_FILE_MAX)
                return refuse(s, fail_in(s, FS_ERR_FBIG, USR, e->path, NULL));
            e->kind = MAN_TRACK;
            e->flags = MAN_F_SIZE;
            e->size = (uint32_t)in->size;
            memcpy(e->sha, in->sha256.bytes, 32);
            char *other = s->tx_other;
            int k = man_find_content(&p->man, e->path, e->sha, e->size, m, &slot,
                                     other);
            if (k < 0)
                return refuse(s, fail_in(s, k, USR, MAN_FILE, NULL));
            if (k == 1 && !se && st.type == FS_TYPE_FILE &&
                (m->flags & MAN_F_SIZE) && m->size == e->size &&
                st.size == e->size && memcmp(m->sha, e->sha, 32) == 0) {
                status = cellar_EntryStatus_UNCHANGED;
            } else {
                status = se ? cellar_EntryStatus_SEND_NEW
                            : cellar_EntryStatus_SEND_CHANGED;
                e->flags |= MAN_F_SEND;
                int64_t h = txn_staged(t, idx);
                if (h > (int64_t)e->size) { /* not this content: drop it */
                    (void)fs_remove(&p->fs, txn_data_path(t, idx));
                    h = 0;
                }
                have = h > 0 ? (uint64_t)h : 0;
                if (have == 0 && e->size > 0 && local_copy(s, t, idx, e, other))
                    have = e->size; /* the device had the content elsewhere */
                s->tx_need += e->size - have;
            }
        }
        if (idx == t->declared) { /* new: against every earlier entry */
            uint32_t other;
            int why;
            int k = txn_check_entry(t, e, &other, &why);
            if (k < 0)
                return refuse(s, fail_in(s, k, USR, TX_DIR, NULL));
            if (k == 1) {
                memset(o, 0, sizeof(*o));
                return refuse(s, conflict(s, other, idx, why,
                                          "; the update is dropped"));
            }
        }
        err = txn_declare(t, idx, e);
        if (err == FS_ERR_INVAL) {
            sb_t b = svc_err_begin(s, FS_ERR_INVAL);
            svc_sb_str(&b, ": entry ");
            svc_sb_u64(&b, idx);
            svc_sb_str(&b, " differs from the bundle staged under this id; "
                           "the update is dropped");
            return refuse(s, FS_ERR_INVAL);
        }
        if (err)
            return refuse(s, fail_in(s, err, USR, TX_DIR, NULL));
        o->status[o->status_count++] = status;
        o->have[o->have_count++] = have;
    }
    if ((err = txn_sync_plan(t)))
        return refuse(s, fail_in(s, err, USR, TX_DIR, NULL));
    fs_statvfs_t v;
    if ((err = fs_statvfs(&p->fs, &v)))
        return svc_fail_path(s, err, "/usr", NULL);
    uint64_t avail = svc_room_bytes(s, USR); /* the service's own kept */
    uint64_t need = s->tx_need + s->tx_need / 32 + 512u * t->declared;
    if (need > avail) {
        memset(o, 0, sizeof(*o));
        sb_t b = svc_err_begin(s, FS_ERR_NOSPC);
        svc_sb_str(&b, ": the bundle needs ");
        svc_sb_u64(&b, need);
        svc_sb_str(&b, " more bytes on /usr, ");
        svc_sb_u64(&b, avail);
        svc_sb_str(&b, " are free; the update is dropped");
        return refuse(s, FS_ERR_NOSPC);
    }
    s->resp.which_body = cellar_Response_update_declare_tag;
    return 0;
}

int svc_do_update_write(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateWriteRequest *r)
{
    txn_t *t = own_tx(s, c, NULL, 0);
    if (!t)
        return FS_ERR_INVAL;
    man_entry_t *e = &s->me;
    int err;
    if (r->index >= t->declared) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, ": entry ");
        svc_sb_u64(&b, r->index);
        svc_sb_str(&b, " is not declared");
        return FS_ERR_INVAL;
    }
    if ((err = txn_entry(t, r->index, e)))
        return fail_in(s, err, USR, TX_DIR, NULL);
    if (e->kind != MAN_TRACK || !(e->flags & MAN_F_SEND))
        return fail_in(s, FS_ERR_INVAL, USR, e->path,
                       "this entry takes no data (unchanged or a removal)");
    int64_t have = txn_staged(t, r->index);
    if (have < 0)
        return fail_in(s, (int)have, USR, e->path, NULL);
    if (r->offset > (uint64_t)have) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        char show[SVC_MAX_PATH + 8];
        show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, show);
        svc_sb_str(&b, ": offset ");
        svc_sb_u64(&b, r->offset);
        svc_sb_str(&b, " is past the ");
        svc_sb_u64(&b, (uint64_t)have);
        svc_sb_str(&b, " bytes staged (send the data in order)");
        return FS_ERR_INVAL;
    }
    if (r->offset + r->data.size > e->size) {
        sb_t b = svc_err_begin(s, -(int)cellar_Code_EMSGSIZE);
        char show[SVC_MAX_PATH + 8];
        show_path(s, USR, e->path, show, sizeof(show));
        svc_sb_str(&b, " ");
        svc_sb_qstr(&b, show);
        svc_sb_str(&b, ": more data than declared (");
        svc_sb_u64(&b, e->size);
        svc_sb_str(&b, " bytes)");
        return -(int)cellar_Code_EMSGSIZE;
    }
    if (r->offset + r->data.size > (uint64_t)have &&
        svc_room(s, USR, r->offset + r->data.size - (uint64_t)have, "/usr"))
        return FS_ERR_NOSPC; /* others took the room since the Declare */
    int n = txn_write(t, r->index, (uint32_t)r->offset, r->data.bytes,
                      r->data.size);
    if (n < 0)
        return fail_in(s, n, USR, e->path, "staging failed");
    s->resp.which_body = cellar_Response_write_tag;
    s->resp.body.write.offset = r->offset;
    s->resp.body.write.written = (uint32_t)n;
    return 0;
}

int svc_do_update_commit(svc_t *s, svc_conn_t *c,
                         const cellar_UpdateCommitRequest *r)
{
    txn_t *t = own_tx(s, c, r->bundle.bytes, r->bundle.size);
    if (!t)
        return FS_ERR_INVAL;
    if (t->declared != t->nentries) {
        sb_t b = svc_err_begin(s, FS_ERR_INVAL);
        svc_sb_str(&b, ": only ");
        svc_sb_u64(&b, t->declared);
        svc_sb_str(&b, " of the ");
        svc_sb_u64(&b, t->nentries);
        svc_sb_str(&b, " entries are declared");
        return FS_ERR_INVAL;
    }
    txn_stats_t st;
    uint32_t bad = 0;
    t->now = now_s(s);
    int err = txn_commit(t, s->scratch, sizeof(s->scratch), &st, &bad,
                         path_busy, s);
    if (err == FS_ERR_INVAL && t->ix && t->ix->cwhy) {
        /* two entries conflict: nothing changed; the bundle cannot be
         * committed as it is */
        (void)conflict(s, t->ix->ca, t->ix->cb, t->ix->cwhy,
                       "; abort and declare the bundle again");
        return FS_ERR_INVAL;
    }
    if (err) {
        man_entry_t *e = &s->me;
        bool have_e = bad < t->declared && txn_entry(t, bad, e) == 0;
        const char *why = NULL;
        if (err == TXN_ERR_BADMSG)
            why = have_e && !(e->flags & MAN_F_SEND)
                      ? "changed on the device since it was declared "
                        "unchanged: declare the bundle again"
                      : "size or SHA-256 of the data sent differs from the "
                        "declaration (the staged data was dropped: send it "
                        "again)";
        else if (err == FS_ERR_ISDIR)
            why = "a directory is in the way";
        else if (err == FS_ERR_NOTDIR)
            why = "a component of the path is a file";
        else if (err == FS_ERR_BUSY)
            why = "open by a client: close it and commit again";
        if (!t->active) { /* decided, but the roll forward stopped */
            s->tx_owner = NULL;
            (void)txn_load(t);
        }
        return have_e ? fail_in(s, err, USR, e->path, why)
                      : svc_fail_path(s, err, "/usr", why);
    }
    if (t->skipped && s->cfg.log) {
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "update: ");
        svc_sb_u64(&b, t->skipped);
        svc_sb_str(&b, " files could not be moved into place (verify "
                       "reports them)");
        svc_log_end(s);
    }
    cellar_UpdateCommitReply *o = &s->resp.body.update_commit;
    o->written = st.written;
    o->removed = st.removed;
    o->unchanged = st.unchanged;
    o->bytes = st.bytes;
    s->tx_owner = NULL;
    s->resp.which_body = cellar_Response_update_commit_tag;
    if (s->cfg.log) {
        char h[9];
        hex8(h, t->id);
        sb_t b = svc_log_begin(s, c);
        svc_sb_str(&b, "update ");
        svc_sb_str(&b, h);
        svc_sb_str(&b, " committed: ");
        svc_sb_u64(&b, st.written);
        svc_sb_str(&b, " written, ");
        svc_sb_u64(&b, st.removed);
        svc_sb_str(&b, " removed, ");
        svc_sb_u64(&b, st.unchanged);
        svc_sb_str(&b, " unchanged");
        svc_log_end(s);
    }
    return 0;
}

int svc_do_update_abort(svc_t *s, svc_conn_t *c,
                        const cellar_UpdateAbortRequest *r)
{
    txn_t *t = &s->tx;
    if (s->part[USR].state == SVC_PART_FULL) { /* staging never loaded */
        int err = svc_store_drop_staging(s);
        if (err)
            return svc_fail_path(s, err, "/usr", "dropping the staging failed");
        svc_reply_done(s);
        return 0;
    }
    if (t->active) {
        if (s->tx_owner && s->tx_owner != c)
            return svc_fail(s, FS_ERR_BUSY,
                            "the update in progress belongs to another "
                            "connection");
        if (r->bundle.size && (r->bundle.size != 32 ||
                               memcmp(r->bundle.bytes, t->id, 32) != 0))
            return svc_fail(s, FS_ERR_INVAL,
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
