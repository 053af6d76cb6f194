/* txn.c - staged, verified, atomic multi-file transactions (see txn.h). */
#include "txn.h"

#include <string.h>

#include "le.h"

#define TXN_MAGIC 0x31585443u /* "CTX1" */

/* dir + "/" + name [+ decimal n] into t->path. */
static const char *tpath(txn_t *t, const char *name, int64_t n)
{
    size_t dl = strlen(t->dir), nl = strlen(name);
    char num[12];
    int k = (int)sizeof(num);
    num[--k] = 0;
    if (n >= 0) {
        uint32_t v = (uint32_t)n;
        do {
            num[--k] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
    }
    memcpy(t->path, t->dir, dl);
    t->path[dl] = '/';
    memcpy(t->path + dl + 1, name, nl);
    strcpy(t->path + dl + 1 + nl, num + k);
    return t->path;
}

const char *txn_data_path(txn_t *t, uint32_t idx)
{
    return tpath(t, "d", idx);
}

void txn_bind(txn_t *t, cfs_t *fs, man_t *man, const char *dir,
              txn_work_t *w)
{
    memset(t, 0, sizeof(*t));
    t->fs = fs;
    t->man = man;
    t->dir = dir;
    t->w = w;
}

int txn_clear(txn_work_t *w, cfs_t *fs, const char *path)
{
    txn_work_take(w, TXN_W_TMP);
    int err = man_clear(fs, path, w->tmp);
    txn_work_give(w, TXN_W_TMP);
    return err;
}

/* ---- the bundle index ------------------------------------------------------ */

/* FNV-1a of the first n bytes of a path. */
static uint32_t path_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 16777619u;
    }
    return h;
}

/* The index's hash of a path (bit 0 is then the entry's removal flag):
 * issue 14, with 2 bytes the halves folded together. */
static txn_ix_hash_t ix_hash(const char *p, size_t n)
{
    uint32_t h = path_hash(p, n);
    if (sizeof(txn_ix_hash_t) < sizeof(h))
        h ^= h >> 16;
    return (txn_ix_hash_t)h;
}

static void bloom_pos(uint32_t h, uint32_t pos[2])
{
    pos[0] = h % TXN_BLOOM_BITS;
    pos[1] = ((h >> 13) ^ (h * 0x9e3779b1u)) % TXN_BLOOM_BITS;
}

static void ix_clear(txn_t *t)
{
    if (!t->ix)
        return;
    t->ix->n = 0;
    t->ix->ca = t->ix->cb = 0;
    t->ix->cwhy = TXN_CONFLICT_NONE;
    memset(t->ix->dirs, 0, sizeof(t->ix->dirs));
}

static void ix_add(txn_index_t *ix, const man_entry_t *e)
{
    size_t len = strlen(e->path);
    ix->h[ix->n++] = (txn_ix_hash_t)((ix_hash(e->path, len) & ~1u) |
                                     (e->kind == MAN_REMOVE ? 1u : 0u));
    if (e->kind != MAN_TRACK)
        return;
    for (size_t k = 1; k < len; k++) /* every directory above a file */
        if (e->path[k] == '/') {
            uint32_t pos[2];
            bloom_pos(path_hash(e->path, k), pos);
            ix->dirs[pos[0] / 8] |= (uint8_t)(1u << (pos[0] % 8));
            ix->dirs[pos[1] / 8] |= (uint8_t)(1u << (pos[1] % 8));
        }
}

static bool is_dir(txn_t *t, const char *path)
{
    cfs_stat_t st;
    return cfs_stat(t->fs, path, &st) == 0 && st.type == CFS_TYPE_DIR;
}

/* Check e against the indexed entries [0, ix->n): 0, 1 (a conflict:
 * *other, *why) or an error. The rules (docs/PROTOCOL.md): a path at most
 * once; nothing below a file entry but removals (they empty the directory
 * the file replaces); no file below a removal of a directory. */
static int ix_check_q(txn_t *t, const man_entry_t *e, uint32_t *other,
                      int *why, man_entry_t *qp)
{
    txn_index_t *ix = t->ix;
#define q (*qp)
    size_t len = strlen(e->path);
    bool file = e->kind == MAN_TRACK;
    /* an earlier entry of the same path or of a directory above it */
    for (size_t k = 1; k <= len; k++) {
        if (k < len && e->path[k] != '/')
            continue;
        if (k < len && !file)
            continue; /* a removal may be below anything */
        uint32_t hk = (uint32_t)ix_hash(e->path, k) >> 1;
        for (uint32_t i = 0; i < ix->n; i++) {
            if (((uint32_t)ix->h[i] >> 1) != hk)
                continue;
            int err = txn_entry(t, i, &q);
            if (err)
                return err;
            if (strlen(q.path) != k || memcmp(q.path, e->path, k) != 0)
                continue;
            *other = i;
            if (k == len) {
                *why = TXN_CONFLICT_TWICE;
                return 1;
            }
            if (q.kind == MAN_TRACK) {
                *why = TXN_CONFLICT_UNDER_FILE;
                return 1;
            }
            if (is_dir(t, q.path)) { /* removing a file there: a swap */
                *why = TXN_CONFLICT_INTO_RM;
                return 1;
            }
        }
    }
    /* an earlier file below e */
    if (!file && !is_dir(t, e->path))
        return 0;
    uint32_t pos[2];
    bloom_pos(path_hash(e->path, len), pos);
    if (!(ix->dirs[pos[0] / 8] & (1u << (pos[0] % 8))) ||
        !(ix->dirs[pos[1] / 8] & (1u << (pos[1] % 8))))
        return 0;
    for (uint32_t i = 0; i < ix->n; i++) {
        if (ix->h[i] & 1u)
            continue; /* removals */
        int err = txn_entry(t, i, &q);
        if (err)
            return err;
        if (man_under(q.path, e->path) && strcmp(q.path, e->path) != 0) {
            *other = i;
            *why = file ? TXN_CONFLICT_UNDER_FILE : TXN_CONFLICT_INTO_RM;
            return 1;
        }
    }
    return 0;
#undef q
}

static int ix_check(txn_t *t, const man_entry_t *e, uint32_t *other,
                    int *why)
{
    txn_work_take(t->w, TXN_W_EB);
    int r = ix_check_q(t, e, other, why, &t->w->eb);
    txn_work_give(t->w, TXN_W_EB);
    return r;
}

/* Index the declared entries not indexed yet (a plan loaded after a
 * restart), noting the first conflict among them. */
static int ix_sync(txn_t *t)
{
    txn_index_t *ix = t->ix;
    man_entry_t *e = &t->w->ea;
    int err = 0;
    if (ix->n > t->declared)
        ix_clear(t);
    txn_work_take(t->w, TXN_W_EA);
    while (!err && ix->n < t->declared) {
        err = txn_entry(t, ix->n, e);
        if (err)
            break;
        uint32_t other;
        int why;
        if (!ix->cwhy) {
            int r = ix_check(t, e, &other, &why);
            if (r < 0)
                err = r;
            else if (r == 1) {
                ix->ca = other;
                ix->cb = ix->n;
                ix->cwhy = (uint8_t)why;
            }
        }
        if (!err)
            ix_add(ix, e);
    }
    txn_work_give(t->w, TXN_W_EA);
    return err;
}

int txn_check_entry(txn_t *t, const man_entry_t *e, uint32_t *other,
                    int *why)
{
    if (!t->ix)
        return 0;
    int err = ix_sync(t);
    if (err)
        return err;
    return ix_check(t, e, other, why);
}

/* ---- staging ---------------------------------------------------------------- */

static void close_stage(txn_t *t, bool keep)
{
    if (!t->stage_open)
        return;
    if (!keep)
        (void)cfs_file_revert(t->fs, &t->stage);
    (void)cfs_file_close(t->fs, &t->stage);
    t->stage_open = 0;
    t->unsynced = 0;
}

static void close_plan(txn_t *t)
{
    if (t->plan_open)
        (void)cfs_file_close(t->fs, &t->plan);
    t->plan_open = 0;
}

static void reset(txn_t *t)
{
    close_stage(t, false);
    close_plan(t);
    t->active = 0;
    t->declared = 0;
    t->nentries = 0;
    t->bytes = 0;
    t->verified = 0;
    memset(t->id, 0, sizeof(t->id));
    ix_clear(t);
}

/* Remove the staging directory. man_wipe removes its files in batches,
 * and a batch asks the filesystem for room first; on a full partition the
 * files go one at a time (a plain removal may use the filesystem's
 * reserve), so dropping the staging always works. */
static int wipe_dir(txn_t *t)
{
    txn_work_take(t->w, TXN_W_TMP);
    int err = man_wipe(t->fs, t->dir, t->w->tmp);
    if (err == CFS_ERR_NOSPC)
        err = man_clear(t->fs, t->dir, t->w->tmp);
    txn_work_give(t->w, TXN_W_TMP);
    return err;
}

int txn_decided(txn_t *t)
{
    cfs_stat_t st;
    int err = cfs_stat(t->fs, tpath(t, "commit", -1), &st);
    if (err == CFS_ERR_NOENT)
        err = cfs_stat(t->fs, tpath(t, "commit2", -1), &st);
    return err == 0 ? 1 : err == CFS_ERR_NOENT ? 0 : err;
}

int txn_abort(txn_t *t)
{
    reset(t);
    /* decided: a commit the decision made durable only goes forward:
     * nothing is dropped (nor when the marker cannot be looked up); the
     * roll forward is txn_finish's (svc_finish_decided, txn_load), not
     * done here, so a cancel's stack stays as it was */
    int d = txn_decided(t);
    if (d)
        return d < 0 ? d : CFS_ERR_BUSY;
    /* The plan goes first: without it what is left is only garbage. */
    int err = cfs_remove(t->fs, tpath(t, "plan", -1));
    if (err && err != CFS_ERR_NOENT)
        return err;
    return wipe_dir(t);
}

static int read_hdr(txn_t *t)
{
    uint8_t h[TXN_HDR];
    int n = cfs_file_pread(t->fs, &t->plan, h, TXN_HDR, 0);
    if (n < 0)
        return n;
    int32_t size = cfs_file_size(t->fs, &t->plan);
    if (n != (int)TXN_HDR || le_get32(h) != TXN_MAGIC || size < 0 ||
        ((uint32_t)size - TXN_HDR) % MAN_SLOT)
        return CFS_ERR_CORRUPT;
    t->nentries = le_get32(h + 4);
    t->bytes = (uint64_t)le_get32(h + 8) | (uint64_t)le_get32(h + 12) << 32;
    memcpy(t->id, h + 16, 32);
    t->declared = ((uint32_t)size - TXN_HDR) / MAN_SLOT;
    return 0;
}

int txn_load(txn_t *t)
{
    reset(t);
    /* decided: a marker that cannot be looked up (an I/O error) is not
     * taken for an absent one. It was: a read error on the stat of
     * "commit" at start-up sent a decided update on to "no plan", whose
     * leftovers were wiped - the staged files of a committed update - and
     * the check at start then restored the old files from /bak
     * (test_decided's start sweep, read 1675 of 33,467) */
    int err = txn_decided(t);
    if (err < 0)
        return err;
    if (err == 1) {
        err = txn_finish(t);
        return err ? err : 1;
    }
    err = cfs_file_open(t->fs, &t->plan, tpath(t, "plan", -1), CFS_O_RDWR);
    if (err == CFS_ERR_NOENT)
        return wipe_dir(t); /* leftovers of an abort */
    if (err)
        return err;
    t->plan_open = 1;
    err = read_hdr(t);
    if (err) { /* a plan cut while it was first written: drop it */
        (void)txn_abort(t);
        return 0;
    }
    t->active = 1;
    return 0;
}

int txn_begin(txn_t *t, const uint8_t id[32], uint32_t nentries,
              uint64_t bytes)
{
    int err = txn_abort(t);
    if (err)
        return err;
    txn_work_take(t->w, TXN_W_TMP);
    err = man_mkdir_parents(t->fs, tpath(t, "plan", -1), t->w->tmp);
    txn_work_give(t->w, TXN_W_TMP);
    if (err)
        return err;
    err = cfs_file_open(t->fs, &t->plan, tpath(t, "plan", -1),
                       CFS_O_RDWR | CFS_O_CREAT | CFS_O_TRUNC);
    if (err)
        return err;
    t->plan_open = 1;
    uint8_t h[TXN_HDR];
    memset(h, 0, sizeof(h));
    le_put32(h, TXN_MAGIC);
    le_put32(h + 4, nentries);
    le_put32(h + 8, (uint32_t)bytes);
    le_put32(h + 12, (uint32_t)(bytes >> 32));
    memcpy(h + 16, id, 32);
    int n = cfs_file_pwrite(t->fs, &t->plan, h, TXN_HDR, 0);
    err = n < 0 ? n : cfs_file_sync(t->fs, &t->plan);
    if (err) {
        (void)txn_abort(t);
        return err;
    }
    memcpy(t->id, id, 32);
    t->nentries = nentries;
    t->bytes = bytes;
    t->declared = 0;
    t->active = 1;
    t->decided = 0;
    return 0;
}

int txn_entry(txn_t *t, uint32_t idx, man_entry_t *e)
{
    uint8_t *p = t->w->slot;
    if (idx >= t->declared)
        return CFS_ERR_INVAL;
    txn_work_take(t->w, TXN_W_SLOT);
    int n = cfs_file_pread(t->fs, &t->plan, p, MAN_SLOT, TXN_HDR + idx * MAN_SLOT);
    int err = n < 0 ? n : n != (int)MAN_SLOT ? CFS_ERR_CORRUPT
                                             : man_decode(e, p);
    txn_work_give(t->w, TXN_W_SLOT);
    if (!err && e->kind == MAN_FREE)
        err = CFS_ERR_CORRUPT;
    return err;
}

int txn_declare(txn_t *t, uint32_t idx, const man_entry_t *e)
{
    if (!t->active || idx > t->declared || idx >= TXN_MAX_ENTRIES)
        return CFS_ERR_INVAL;
    if (idx < t->declared) {
        man_entry_t *old = &t->w->eb;
        txn_work_take(t->w, TXN_W_EB);
        int err = txn_entry(t, idx, old);
        if (!err && (old->kind != e->kind || strcmp(old->path, e->path) != 0 ||
                     (e->kind == MAN_TRACK &&
                      (old->size != e->size ||
                       memcmp(old->sha, e->sha, 32) != 0))))
            err = CFS_ERR_INVAL;
        bool same = !err && old->flags == e->flags;
        txn_work_give(t->w, TXN_W_EB);
        if (err || same)
            return err;
        if (idx < t->verified)
            t->verified = idx;
    }
    txn_work_take(t->w, TXN_W_SLOT);
    man_encode(e, t->w->slot);
    int n = cfs_file_pwrite(t->fs, &t->plan, t->w->slot, MAN_SLOT,
                            TXN_HDR + idx * MAN_SLOT);
    txn_work_give(t->w, TXN_W_SLOT);
    if (n < 0)
        return n;
    if (idx == t->declared) {
        if (t->ix && t->ix->n == idx)
            ix_add(t->ix, e);
        t->declared++;
    }
    return 0;
}

int txn_sync_plan(txn_t *t)
{
    return t->plan_open ? cfs_file_sync(t->fs, &t->plan) : 0;
}

int64_t txn_staged(txn_t *t, uint32_t idx)
{
    if (t->stage_open && t->stage_idx == idx)
        return cfs_file_size(t->fs, &t->stage);
    cfs_stat_t st;
    int err = cfs_stat(t->fs, txn_data_path(t, idx), &st);
    if (err == CFS_ERR_NOENT)
        return 0;
    return err ? err : (int64_t)st.size;
}

static int stage_select(txn_t *t, uint32_t idx)
{
    if (t->stage_open && t->stage_idx == idx)
        return 0;
    int err = txn_park(t);
    if (err)
        return err;
    err = cfs_file_open(t->fs, &t->stage, txn_data_path(t, idx),
                       CFS_O_RDWR | CFS_O_CREAT);
    if (err)
        return err;
    t->stage_open = 1;
    t->stage_idx = idx;
    t->unsynced = 0;
    return 0;
}

int txn_write(txn_t *t, uint32_t idx, uint32_t off, const void *data,
              uint32_t len)
{
    int err = stage_select(t, idx);
    if (err)
        return err;
    if (idx < t->verified)
        t->verified = idx;
    int n = cfs_file_pwrite(t->fs, &t->stage, data, len, off);
    if (n < 0)
        return n;
    t->unsynced += len;
    if (t->unsynced >= TXN_SYNC_BYTES) {
        err = cfs_file_sync(t->fs, &t->stage);
        if (err)
            return err;
        t->unsynced = 0;
    }
    return n;
}

int txn_park(txn_t *t)
{
    if (!t->stage_open)
        return 0;
    int err = cfs_file_close(t->fs, &t->stage);
    t->stage_open = 0;
    t->unsynced = 0;
    return err;
}

/* Does the plan remove exactly path? 1 yes (*idx = the entry), 0 no, or an
 * error. With the index only the entries of the same hash are read. */
static int plan_removes_at(txn_t *t, const char *path, uint32_t *idx)
{
    man_entry_t *e = &t->w->ec;
    txn_ix_hash_t h = (txn_ix_hash_t)(ix_hash(path, strlen(path)) | 1u);
    int r = 0;
    txn_work_take(t->w, TXN_W_EC);
    for (uint32_t i = 0; !r && i < t->declared; i++) {
        if (t->ix && i < t->ix->n && t->ix->h[i] != h)
            continue;
        r = txn_entry(t, i, e);
        if (!r && e->kind == MAN_REMOVE && strcmp(e->path, path) == 0) {
            *idx = i;
            r = 1;
        }
    }
    txn_work_give(t->w, TXN_W_EC);
    return r;
}

static int plan_removes(txn_t *t, const char *path)
{
    uint32_t idx;
    return plan_removes_at(t, path, &idx);
}

/* plan_empties below path (a buffer of MAN_PATH_MAX + 1 bytes). */
static int empties_at(txn_t *t, char *path, int depth)
{
    cfs_dir_t d;
    cfs_stat_t st;
    if (depth > 8)
        return 0;
    int err = cfs_dir_open(t->fs, &d, path);
    if (err)
        return err == CFS_ERR_NOENT ? 1 : err;
    int all = 1;
    size_t dl = strlen(path);
    /* each name is read into place after path + "/" (a name that does not
     * fit, as before, counts as "no") */
    while (all == 1 && dl + 1 < MAN_PATH_MAX &&
           (err = cfs_dir_read(t->fs, &d, path + dl + 1,
                               (uint32_t)(MAN_PATH_MAX - dl), &st)) == 1) {
        path[dl] = '/';
        all = plan_removes(t, path);
        if (all == 1 && st.type == CFS_TYPE_DIR)
            all = empties_at(t, path, depth + 1);
        path[dl] = 0;
    }
    if (err == CFS_ERR_NAMETOOLONG || dl + 1 >= MAN_PATH_MAX)
        all = 0, err = 0;
    (void)cfs_dir_close(t->fs, &d);
    return err < 0 ? err : all;
}

/* Does the plan remove everything under directory dir (so that its own
 * removal will find it empty)? 1 yes, 0 no, or an error. Depth-bounded:
 * deeper trees count as "no". The path is built in the scratch's path. */
static int plan_empties(txn_t *t, const char *dir, int depth)
{
    txn_work_take(t->w, TXN_W_PATH);
    size_t n = strlen(dir);
    int r = CFS_ERR_NAMETOOLONG;
    if (n <= MAN_PATH_MAX) {
        memcpy(t->w->path, dir, n + 1);
        r = empties_at(t, t->w->path, depth);
    }
    txn_work_give(t->w, TXN_W_PATH);
    return r;
}

/* Check the directories above entry i's path: every existing one is a
 * directory the bundle does not remove (CFS_ERR_INVAL, a conflict noted in
 * the index), or a file the plan removes (the roll forward removes it
 * first: a file becomes a directory). *all_exist says whether every one
 * exists as a directory. */
static int check_parents_in(txn_t *t, uint32_t i, const char *path,
                            bool *all_exist, char *pre)
{
    size_t n = strlen(path);
    for (size_t k = 1; k < n; k++) {
        if (path[k] != '/')
            continue;
        memcpy(pre, path, k);
        pre[k] = 0;
        cfs_stat_t st;
        uint32_t at;
        int err = cfs_stat(t->fs, pre, &st);
        if (err == CFS_ERR_NOENT) {
            *all_exist = false;
            return 0;
        }
        if (err)
            return err;
        int r;
        if (st.type == CFS_TYPE_DIR) {
            /* (copies have no index and never remove what they write) */
            if (t->ix && (r = plan_removes_at(t, pre, &at)) != 0) {
                if (r < 0)
                    return r;
                t->ix->ca = at;
                t->ix->cb = i;
                t->ix->cwhy = TXN_CONFLICT_INTO_RM;
                return CFS_ERR_INVAL;
            }
            continue;
        }
        if ((r = plan_removes_at(t, pre, &at)) < 0)
            return r;
        if (!r)
            return CFS_ERR_NOTDIR;
        *all_exist = false; /* a file the bundle turns into a directory */
        return 0;
    }
    return 0;
}

static int check_parents(txn_t *t, uint32_t i, const char *path,
                         bool *all_exist)
{
    txn_work_take(t->w, TXN_W_PATH);
    int err = check_parents_in(t, i, path, all_exist, t->w->path);
    txn_work_give(t->w, TXN_W_PATH);
    return err;
}

int txn_commit_prepare(txn_t *t, uint32_t *bad)
{
    int err;
    if (!t->active)
        return CFS_ERR_INVAL;
    if ((err = txn_park(t)) || (err = txn_sync_plan(t)))
        return err;
    /* 0. The bundle as a whole: no two entries conflict. */
    if (t->ix) {
        if ((err = ix_sync(t)))
            return err;
        if (t->ix->cwhy) {
            *bad = t->ix->cb;
            return CFS_ERR_INVAL;
        }
    }
    return 0;
}

/* decided: a one-step commit that reported an error although its plan
 * is gone from flash (so the commit is there). */
static bool man_commit_durable(txn_t *t)
{
    cfs_stat_t st;
    return cfs_stat(t->fs, tpath(t, "plan", -1), &st) == CFS_ERR_NOENT;
}

/* The moves of a bundle committed in one step (txn_commit, step 3). */
static int commit_one_step(txn_t *t, man_entry_t *ep)
{
#define e (*ep)
    int err = 0;
    char (*names)[64] = t->w->bsrc;
    char (*targets)[MAN_PATH_MAX + 1] = t->w->bdst;
    const char *src[TXN_BATCH], *dst[TXN_BATCH];
    uint32_t n = 0;
    txn_work_take(t->w, TXN_W_BATCH);
    for (uint32_t i = 0; i < t->declared; i++) {
        cfs_stat_t fst;
        if ((err = txn_entry(t, i, &e)))
            goto out;
        if (e.kind == MAN_REMOVE) {
            int se = cfs_stat(t->fs, e.path, &fst);
            if (se == CFS_ERR_NOENT || se == CFS_ERR_NOTDIR)
                continue;
            if (se) { /* decided: not "gone" when it cannot be looked up */
                err = se;
                goto out;
            }
            strcpy(targets[n], e.path);
            src[n] = targets[n];
            dst[n++] = NULL;
        } else if (e.flags & MAN_F_SEND) {
            strcpy(names[n], txn_data_path(t, i));
            strcpy(targets[n], e.path);
            src[n] = names[n];
            dst[n] = targets[n];
            n++;
        }
    }
    /* removals first, as in the roll forward */
    for (uint32_t a = 0, b = 0; b < n; b++)
        if (!dst[b]) {
            const char *ts = src[a], *td = dst[a];
            src[a] = src[b], dst[a] = dst[b];
            src[b] = ts, dst[b] = td;
            a++;
        }
    strcpy(names[n], tpath(t, "plan", -1));
    src[n] = names[n];
    dst[n++] = NULL;
    close_plan(t);
    err = man_commit(t->man, src, dst, n);
    txn_work_give(t->w, TXN_W_BATCH);
    if (err) {
        t->plan_open = cfs_file_open(t->fs, &t->plan, tpath(t, "plan", -1),
                                    CFS_O_RDWR) == 0;
        if (t->plan_open || !man_commit_durable(t))
            return err;
        /* decided: the commit is on flash although it reported an error
         * (the plan it removed is gone) */
    }
    t->active = 0;
    t->decided = 1; /* committed: only the cleanup may still fail */
    return wipe_dir(t);
out:
    txn_work_give(t->w, TXN_W_BATCH);
    man_revert(t->man);
    return err;
#undef e
}

static int commit_in(txn_t *t, uint8_t *buf, uint32_t buflen,
                     txn_stats_t *st, uint32_t *bad,
                     bool (*busy)(void *ctx, const char *path),
                     void *busy_ctx, man_entry_t *ep, man_entry_t *mp);

int txn_commit(txn_t *t, uint8_t *buf, uint32_t buflen, txn_stats_t *st,
               uint32_t *bad, bool (*busy)(void *ctx, const char *path),
               void *busy_ctx)
{
    int err;
    memset(st, 0, sizeof(*st));
    if ((err = txn_commit_prepare(t, bad)))
        return err;
    /* the entries live in the shared scratch, not on the stack */
    txn_work_take(t->w, TXN_W_EA | TXN_W_EB);
    err = commit_in(t, buf, buflen, st, bad, busy, busy_ctx, &t->w->ea,
                    &t->w->eb);
    txn_work_give(t->w, TXN_W_EA | TXN_W_EB);
    /* 1: decided (plan -> commit): roll it forward */
    return err == 1 ? txn_finish(t) : err;
}

static int commit_in(txn_t *t, uint8_t *buf, uint32_t buflen,
                     txn_stats_t *st, uint32_t *bad,
                     bool (*busy)(void *ctx, const char *path),
                     void *busy_ctx, man_entry_t *ep, man_entry_t *mp)
{
#define e (*ep)
#define m (*mp)
    uint32_t slot, nact = 0;
    bool parents = true, dir_removals = false;
    int err;

    /* 1. Check everything against the device; nothing is changed until
     * all is well, and what is checked here is what the roll forward
     * needs: every move will find its way clear. */
    for (uint32_t i = 0; i < t->declared; i++) {
        *bad = i;
        if ((err = txn_entry(t, i, &e)))
            return err;
        cfs_stat_t fst;
        int se = cfs_stat(t->fs, e.path, &fst);
        if (se == CFS_ERR_NOTDIR) /* under a file: not there */
            se = CFS_ERR_NOENT;
        if (se && se != CFS_ERR_NOENT)
            return se;
        if (e.kind == MAN_REMOVE) {
            if (se == 0 && fst.type == CFS_TYPE_DIR) {
                /* removed only if the bundle empties it */
                dir_removals = true;
                int r = plan_empties(t, e.path, 0);
                if (r < 0)
                    return r;
                if (r) {
                    nact++;
                    st->removed++;
                }
            } else if (se == 0) {
                if (busy && busy(busy_ctx, e.path))
                    return CFS_ERR_BUSY;
                nact++;
                st->removed++;
            }
            continue;
        }
        if (se == 0 && fst.type == CFS_TYPE_DIR) {
            /* a directory the bundle empties becomes this file (the roll
             * forward removes it first) */
            int r = plan_empties(t, e.path, 0);
            if (r < 0)
                return r;
            if (!r)
                return CFS_ERR_ISDIR;
            dir_removals = true;
            se = CFS_ERR_NOENT;
        }
        if ((err = check_parents(t, i, e.path, &parents)))
            return err;
        if (!(e.flags & MAN_F_SEND)) {
            /* declared unchanged: it must still be */
            int r = man_find(t->man, e.path, &m, &slot);
            if (r < 0)
                return r;
            if (r == 0 || se != 0 || m.size != e.size || fst.size != e.size ||
                !(m.flags & MAN_F_SIZE) || memcmp(m.sha, e.sha, 32) != 0)
                return TXN_ERR_BADMSG;
            st->unchanged++;
            continue;
        }
        if (se == 0 && busy && busy(busy_ctx, e.path))
            return CFS_ERR_BUSY;
        uint8_t sha[32];
        uint32_t size = 0;
        cfs_stat_t dst;
        const char *dp = txn_data_path(t, i);
        if (e.size == 0 && cfs_stat(t->fs, dp, &dst) == CFS_ERR_NOENT) {
            /* an empty file needs no data: stage it now */
            cfs_file_t *f = &t->stage;
            if ((err = cfs_file_open(t->fs, f, dp, CFS_O_WRONLY | CFS_O_CREAT)) ||
                (err = cfs_file_close(t->fs, f)))
                return err;
        }
        if (i < t->verified && e.size > 0 && cfs_stat(t->fs, dp, &dst) == 0 &&
            dst.size == e.size) { /* hashed by the caller, in steps */
            nact++;
            st->written++;
            st->bytes += e.size;
            continue;
        }
        err = man_hash_path(t->fs, &t->stage, dp, buf, buflen, sha, &size);
        if (err == CFS_ERR_NOENT)
            size = UINT32_MAX; /* nothing staged */
        else if (err)
            return err;
        if (size != e.size || memcmp(sha, e.sha, 32) != 0) {
            (void)cfs_remove(t->fs, dp);
            return TXN_ERR_BADMSG;
        }
        nact++;
        st->written++;
        st->bytes += e.size;
    }

    *bad = UINT32_MAX; /* later failures are not about one entry */
    /* The roll forward (step 3 when the bundle is not committed in one
     * step) runs after the decision: it must not stop for room there, or
     * the request fails with the commit decided and the directories it
     * made left behind. Its room: what one rename asks for (4096 + 2048,
     * cfs_rename; a batch short of room goes one rename at a time, flush)
     * and the records the roll forward writes: for each file moved its
     * parent directories and its rename, and the commit -> commit2
     * rename. It is checked right before the decision (below). */
    bool one_step = nact + 1 <= TXN_BATCH && parents && !dir_removals;
    uint32_t rf = one_step ? 0 : 4096 + 2048 + 2048 + st->written * 256;
    /* room for every slot write and the commit, made before the hold (and
     * the GC asked for the roll forward's too; when it cannot make that
     * much, the check before the decision is what counts) */
    uint32_t hold = (t->declared + 4) * 2 * MAN_SLOT + 8192;
    err = man_hold(t->man, hold + rf);
    if (err == CFS_ERR_NOSPC && rf)
        err = man_hold(t->man, hold);
    if (err)
        return err;

    /* 2. The manifest: removals first, then the files written. A removal
     * drops the entry of its path, and the entries under it whose files
     * are gone; a file under a removed directory that stays (the directory
     * is only removed if empty) keeps its entry. */
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < t->declared; i++) {
            if ((err = txn_entry(t, i, &e)))
                goto revert;
            if (pass == 0 && e.kind == MAN_TRACK && is_dir(t, e.path)) {
                /* a directory becomes this file: no entry stays below */
                for (uint32_t k = 0, n = man_slots(t->man); k < n; k++) {
                    int r = man_get(t->man, k, &m);
                    if (r < 0) {
                        err = r;
                        goto revert;
                    }
                    if (r == 1 && man_under(m.path, e.path) &&
                        strcmp(m.path, e.path) != 0 &&
                        (err = man_del(t->man, m.path)))
                        goto revert;
                }
            } else if (pass == 0 && e.kind == MAN_REMOVE) {
                /* a file, or every entry under a directory */
                for (uint32_t k = 0, n = man_slots(t->man); k < n; k++) {
                    int r = man_get(t->man, k, &m);
                    if (r < 0) {
                        err = r;
                        goto revert;
                    }
                    cfs_stat_t mst;
                    int se = r == 1 && man_under(m.path, e.path)
                                 ? cfs_stat(t->fs, m.path, &mst) : 0;
                    if (se && se != CFS_ERR_NOENT && se != CFS_ERR_NOTDIR) {
                        err = se; /* decided: not "gone" on an I/O error */
                        goto revert;
                    }
                    if (r == 1 && man_under(m.path, e.path) &&
                        (strcmp(m.path, e.path) == 0 || se != 0) &&
                        (err = man_del(t->man, m.path)))
                        goto revert;
                }
            } else if (pass == 1 && e.kind == MAN_TRACK &&
                       (e.flags & MAN_F_SEND)) {
                e.flags = MAN_F_SIZE;
                e.mtime = t->now;
                if ((err = man_set(t->man, &e)))
                    goto revert;
            }
        }

    /* 3. Commit: the whole bundle in one step when it is small, else the
     * decision (plan -> commit) and a roll forward. */
    if (one_step)
        return commit_one_step(t, &e);
    /* the roll forward's room is still there now that the slot writes
     * are made (a hold inside the manifest's: no GC, only the check) */
    if ((err = cfs_hold(t->fs, rf)))
        goto revert;
    cfs_release(t->fs);
    close_plan(t);
    {
        char from[64], to[64];
        strcpy(from, tpath(t, "plan", -1));
        strcpy(to, tpath(t, "commit", -1));
        const char *src[1] = { from }, *dst[1] = { to };
        err = man_commit(t->man, src, dst, 1);
        if (err) {
            t->plan_open = cfs_file_open(t->fs, &t->plan, from, CFS_O_RDWR) == 0;
            if (t->plan_open || txn_decided(t) != 1)
                return err;
            /* decided: the marker is on flash although the commit reported
             * an error: go forward */
        }
    }
    t->active = 0;
    t->decided = 1; /* decided: a failure from here on goes forward only */
    return 1;       /* txn_commit rolls it forward */

revert:
    man_revert(t->man);
    return err;
#undef e
#undef m
}

/* Something in the way of a move: not the device's fault. */
static bool in_the_way(int err)
{
    return err == CFS_ERR_ISDIR || err == CFS_ERR_NOTDIR ||
           err == CFS_ERR_NOTEMPTY || err == CFS_ERR_EXIST ||
           err == CFS_ERR_BUSY;
}

/* Move a batch of staged files into place. If something is in the way,
 * one by one, skipping (and counting) what cannot be moved; one by one as
 * well when the batch finds no room (a batch asks for room for all its
 * renames at once, txn_commit keeps room for one). */
static int flush(txn_t *t, const char **src, const char **dst, uint32_t *n)
{
    if (*n == 0)
        return 0;
    int err = cfs_rename_many(t->fs, src, dst, *n);
    if (in_the_way(err) || (err == CFS_ERR_NOSPC && *n > 1)) {
        err = 0;
        for (uint32_t k = 0; !err && k < *n; k++) {
            int e2 = cfs_rename(t->fs, src[k], dst[k]);
            if (in_the_way(e2))
                t->skipped++;
            else
                err = e2;
        }
    }
    *n = 0;
    return err;
}

static int finish_in(txn_t *t, man_entry_t *ep);

int txn_finish(txn_t *t)
{
    /* the entry and the batch live in the shared scratch */
    txn_work_take(t->w, TXN_W_EA | TXN_W_BATCH);
    int err = finish_in(t, &t->w->ea);
    txn_work_give(t->w, TXN_W_EA | TXN_W_BATCH);
    return err;
}

static int finish_in(txn_t *t, man_entry_t *ep)
{
#define e (*ep)
    cfs_file_t *pf = &t->plan;
    cfs_stat_t st;
    char cname[64];
    int err;

    close_stage(t, true);
    close_plan(t);
    t->skipped = 0;
    bool phase2 = cfs_stat(t->fs, tpath(t, "commit2", -1), &st) == 0;
    strcpy(cname, t->path);
    if (!phase2)
        strcpy(cname, tpath(t, "commit", -1));
    if ((err = cfs_file_open(t->fs, pf, cname, CFS_O_RDONLY)))
        return err;
    t->plan_open = 1;
    if ((err = read_hdr(t)))
        goto out;

    /* Phase 1: removals: the files, then the directories that are empty,
     * again while that removes some (whatever order they were declared
     * in, children go first). */
    for (int pass = 0; !phase2 && pass < 10; pass++) {
        bool dirs = pass > 0, progress = false;
        for (uint32_t i = 0; i < t->declared; i++) {
            if ((err = txn_entry(t, i, &e)))
                goto out;
            /* a removal, or (in the directory passes) a directory that a
             * file of the bundle replaces */
            bool replaced = e.kind == MAN_TRACK && (e.flags & MAN_F_SEND) &&
                            dirs;
            if (e.kind != MAN_REMOVE && !replaced)
                continue;
            /* decided: a path that cannot be looked up (I/O) is not "gone":
             * stop, the marker stays */
            int se = cfs_stat(t->fs, e.path, &st);
            if (se == CFS_ERR_NOENT || se == CFS_ERR_NOTDIR)
                continue;
            if (se) {
                err = se;
                goto out;
            }
            if ((st.type == CFS_TYPE_DIR) != dirs)
                continue;
            err = dirs ? cfs_rmdir(t->fs, e.path) : cfs_remove(t->fs, e.path);
            if (err == 0)
                progress = true;
            if (err == CFS_ERR_NOENT || in_the_way(err))
                err = 0; /* a directory that is not empty stays */
            if (err)
                goto out;
        }
        if (dirs && !progress)
            break;
    }
    if (!phase2) {
        close_plan(t);
        char to[64];
        strcpy(to, tpath(t, "commit2", -1));
        if ((err = cfs_rename(t->fs, cname, to)))
            return err;
        strcpy(cname, to);
        if ((err = cfs_file_open(t->fs, pf, cname, CFS_O_RDONLY)))
            return err;
        t->plan_open = 1;
    }

    /* Phase 2: move the staged files into place (a staged file that is gone
     * was moved before a power cut). */
    {
        char (*names)[64] = t->w->bsrc;
        char (*targets)[MAN_PATH_MAX + 1] = t->w->bdst;
        const char *src[TXN_BATCH], *dst[TXN_BATCH];
        uint32_t n = 0;
        for (uint32_t i = 0; i < t->declared; i++) {
            if ((err = txn_entry(t, i, &e)))
                goto out;
            if (e.kind != MAN_TRACK || !(e.flags & MAN_F_SEND))
                continue;
            const char *dp = txn_data_path(t, i);
            /* decided: only a staged file that is not there was moved; one
             * that cannot be looked up (I/O) stops the roll forward */
            int se = cfs_stat(t->fs, dp, &st);
            if (se == CFS_ERR_NOENT)
                continue;
            if (se) {
                err = se;
                goto out;
            }
            /* two entries of one path: the later wins */
            for (uint32_t k = 0; k < n; k++)
                if (strcmp(targets[k], e.path) == 0 && (err = flush(t, src, dst, &n)))
                    goto out;
            strcpy(names[n], dp);
            txn_work_take(t->w, TXN_W_TMP);
            err = man_mkdir_parents(t->fs, e.path, t->w->tmp);
            txn_work_give(t->w, TXN_W_TMP);
            if (in_the_way(err)) {
                t->skipped++;
                err = 0;
                continue;
            }
            if (err)
                goto out;
            strcpy(targets[n], e.path);
            src[n] = names[n];
            dst[n] = targets[n];
            if (++n == TXN_BATCH && (err = flush(t, src, dst, &n)))
                goto out;
        }
        if ((err = flush(t, src, dst, &n)))
            goto out;
    }
    close_plan(t);
    err = cfs_remove(t->fs, cname);
    if (!err)
        err = wipe_dir(t);
    t->active = 0;
    return err;
out:
    close_plan(t);
    return err;
#undef e
}
