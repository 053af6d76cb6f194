/* manifest.c - the manifest file of a partition (see manifest.h). */
#include "manifest.h"

#include <string.h>

#include "le.h"

/* Slot layout (little-endian): u8 kind, u8 flags, u16 path length,
 * u32 size, u32 mtime, u8 sha256[32], path bytes (zero padded). */
#define SLOT_FIXED 44u

static void encode_as(const man_entry_t *e, uint8_t kind, uint8_t flags,
                      uint8_t p[MAN_SLOT])
{
    size_t n = kind == MAN_FREE ? 0 : strlen(e->path);
    memset(p, 0, MAN_SLOT);
    p[0] = kind;
    p[1] = flags;
    le_put16(p + 2, (uint16_t)n);
    le_put32(p + 4, e->size);
    le_put32(p + 8, e->mtime);
    memcpy(p + 12, e->sha, 32);
    memcpy(p + SLOT_FIXED, e->path, n);
}

void man_encode(const man_entry_t *e, uint8_t p[MAN_SLOT])
{
    encode_as(e, e->kind, e->flags, p);
}

int man_decode(man_entry_t *e, const uint8_t p[MAN_SLOT])
{
    uint32_t n = le_get16(p + 2);
    if (!e) /* only check it (issue 14: no entry on the caller's stack) */
        return p[0] == MAN_FREE ? 0 :
               p[0] > MAN_REMOVE || n == 0 || n > MAN_PATH_MAX ||
               n > MAN_SLOT - SLOT_FIXED || p[SLOT_FIXED] != '/' ||
               memchr(p + SLOT_FIXED, 0, n) ? CFS_ERR_CORRUPT : 0;
    memset(e, 0, sizeof(*e));
    e->kind = p[0];
    if (e->kind == MAN_FREE)
        return 0;
    if (e->kind > MAN_REMOVE || n == 0 || n > MAN_PATH_MAX ||
        n > MAN_SLOT - SLOT_FIXED || p[SLOT_FIXED] != '/')
        return CFS_ERR_CORRUPT;
    e->flags = p[1];
    e->size = le_get32(p + 4);
    e->mtime = le_get32(p + 8);
    memcpy(e->sha, p + 12, 32);
    memcpy(e->path, p + SLOT_FIXED, n);
    e->path[n] = 0;
    if (memchr(e->path, 0, n))
        return CFS_ERR_CORRUPT;
    return 0;
}

/* The slot buffer taken / given back (issue 14: shared on the device). */
#ifdef MAN_SHARED_SLOT
static void slot_take(man_t *m)
{
    CFS_ASSERT(m->slot && !(*m->busy & m->bit));
    *m->busy |= m->bit;
}
static void slot_give(man_t *m)
{
    *m->busy &= ~m->bit;
}
#else
static void slot_take(man_t *m) { (void)m; }
static void slot_give(man_t *m) { (void)m; }
#endif

#if SLOT_FIXED + MAN_PATH_MAX > MAN_SLOT
#error "a manifest slot must hold the longest path"
#endif

int man_open(man_t *m, cfs_t *fs)
{
    cfs_stat_t st;
    memset(m, 0, sizeof(*m));
    m->fs = fs;
    /* (a look first: on a full device even a mkdir that finds the
     * directory there asks for room) */
    int err = cfs_stat(fs, MAN_DIR, &st);
    if (err == CFS_ERR_NOENT)
        err = cfs_mkdir(fs, MAN_DIR);
    else if (!err && st.type != CFS_TYPE_DIR)
        err = CFS_ERR_NOTDIR;
    if (err && err != CFS_ERR_EXIST)
        return err;
    err = cfs_file_open(fs, &m->f, MAN_FILE, CFS_O_RDWR | CFS_O_CREAT);
    if (err)
        return err;
    m->open = 1;
    return 0;
}

int man_open_ro(man_t *m, cfs_t *fs)
{
    memset(m, 0, sizeof(*m));
    m->fs = fs;
    int err = cfs_file_open(fs, &m->f, MAN_FILE, CFS_O_RDONLY);
    if (err)
        return err;
    m->open = 1;
    m->ro = 1;
    return 0;
}

static int man_get_in(man_t *m, uint32_t i, man_entry_t *e);

int man_scrub(man_t *m, uint32_t *dropped)
{
    *dropped = 0;
    int32_t size = cfs_file_size(m->fs, &m->f);
    if (size < 0)
        return size;
    uint32_t n = (uint32_t)size / MAN_SLOT;
    for (uint32_t i = 0; i < n; i++) {
        slot_take(m);
        int r = man_get_in(m, i, NULL);
        if (r == CFS_ERR_CORRUPT && m->slot[0] != MAN_FREE) {
            int err = man_hold(m, 4 * MAN_SLOT + 4096);
            if (!err) {
                memset(m->slot, 0, MAN_SLOT);
                int k = cfs_file_pwrite(m->fs, &m->f, m->slot, MAN_SLOT,
                                       i * MAN_SLOT);
                err = k < 0 ? k : 0;
            }
            slot_give(m);
            if (err) {
                man_revert(m);
                return err;
            }
            (*dropped)++;
            continue;
        }
        slot_give(m);
        if (r < 0 && r != CFS_ERR_CORRUPT) {
            man_revert(m);
            return r;
        }
    }
    if ((uint32_t)size % MAN_SLOT) { /* a torn tail: no whole slot */
        int err = man_hold(m, 4096);
        if (!err)
            err = cfs_file_truncate(m->fs, &m->f, n * MAN_SLOT);
        if (err) {
            man_revert(m);
            return err;
        }
        (*dropped)++;
    }
    if (!m->held)
        return 0;
    return man_commit(m, NULL, NULL, 0);
}

int man_clear(cfs_t *fs, const char *path, char *tmp)
{
    cfs_stat_t st;
    cfs_dir_t d;
    size_t base = strlen(path);
    if (base + 1 > 256)
        return CFS_ERR_NAMETOOLONG;
    int err = cfs_stat(fs, path, &st);
    if (err == CFS_ERR_NOENT)
        return 0;
    if (err)
        return err;
    if (st.type == CFS_TYPE_FILE)
        return cfs_remove(fs, path);
    /* One entry at a time, depth first, with the path in tmp: memory does
     * not grow with the depth of the tree. */
    memcpy(tmp, path, base + 1);
    for (uint32_t guard = 0; guard < 1000000; guard++) {
        err = cfs_dir_open(fs, &d, tmp);
        if (err)
            return err;
        int r = cfs_dir_read(fs, &d, tmp + 256, 256, &st);
        (void)cfs_dir_close(fs, &d);
        if (r < 0)
            return r;
        size_t n = strlen(tmp);
        if (r == 0) { /* empty: remove it and go back up */
            err = cfs_remove(fs, tmp);
            if (err)
                return err;
            if (n == base)
                return 0;
            while (n > base && tmp[n - 1] != '/')
                n--;
            tmp[n - 1] = 0;
            continue;
        }
        size_t nl = strlen(tmp + 256);
        if (n + 1 + nl > CFS_PATH_MAX)
            return CFS_ERR_NAMETOOLONG;
        tmp[n] = '/';
        memmove(tmp + n + 1, tmp + 256, nl + 1);
        if (st.type == CFS_TYPE_FILE) {
            err = cfs_remove(fs, tmp);
            if (err)
                return err;
            tmp[n] = 0;
        }
    }
    return CFS_ERR_CORRUPT;
}

int man_close(man_t *m)
{
    if (!m->open)
        return 0;
    man_revert(m);
    m->open = 0;
    return cfs_file_close(m->fs, &m->f);
}

int man_hold(man_t *m, uint32_t bytes)
{
    if (m->held)
        return 0;
    int err = cfs_hold(m->fs, bytes);
    if (!err)
        m->held = 1;
    return err;
}

uint32_t man_slots(man_t *m)
{
    int32_t size = cfs_file_size(m->fs, &m->f);
    return size > 0 ? (uint32_t)size / MAN_SLOT : 0;
}

/* man_get with the slot buffer taken. */
static int man_get_in(man_t *m, uint32_t i, man_entry_t *e)
{
    int n = cfs_file_pread(m->fs, &m->f, m->slot, MAN_SLOT, i * MAN_SLOT);
    if (n < 0)
        return n;
    if (n != (int)MAN_SLOT)
        return CFS_ERR_CORRUPT;
    int err = man_decode(e, m->slot); /* e NULL: only checked */
    if (err)
        return err;
    return m->slot[0] == MAN_FREE ? 0 : 1;
}

int man_get(man_t *m, uint32_t i, man_entry_t *e)
{
    slot_take(m);
    int r = man_get_in(m, i, e);
    slot_give(m);
    return r;
}

static int find_content_in(man_t *m, const char *path, const uint8_t *sha,
                           uint32_t size, man_entry_t *e, uint32_t *slot,
                           char *other);

int man_find_content(man_t *m, const char *path, const uint8_t *sha,
                     uint32_t size, man_entry_t *e, uint32_t *slot,
                     char *other)
{
    slot_take(m);
    int r = find_content_in(m, path, sha, size, e, slot, other);
    slot_give(m);
    return r;
}

static int find_content_in(man_t *m, const char *path, const uint8_t *sha,
                           uint32_t size, man_entry_t *e, uint32_t *slot,
                           char *other)
{
    uint32_t n = man_slots(m);
    size_t len = strlen(path);
    int found = 0;
    if (other)
        other[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* compare the fixed part and the path without decoding misses */
        int r = cfs_file_pread(m->fs, &m->f, m->slot, MAN_SLOT, i * MAN_SLOT);
        if (r < 0)
            return r;
        if (r != (int)MAN_SLOT)
            return CFS_ERR_CORRUPT;
        if (m->slot[0] != MAN_TRACK)
            continue;
        uint32_t pl = le_get16(m->slot + 2);
        bool same_path = pl == len && memcmp(m->slot + SLOT_FIXED, path, len) == 0;
        if (same_path && !found) {
            int err = man_decode(e, m->slot); /* e NULL: only checked */
            if (err)
                return err;
            *slot = i;
            found = 1;
        } else if (!same_path && other && !other[0] && sha &&
                   (m->slot[1] & MAN_F_SIZE) && le_get32(m->slot + 4) == size &&
                   memcmp(m->slot + 12, sha, 32) == 0 && pl <= MAN_PATH_MAX) {
            memcpy(other, m->slot + SLOT_FIXED, pl);
            other[pl] = 0;
        }
        if (found && (!other || other[0] || !sha))
            break;
    }
    return found;
}

int man_find(man_t *m, const char *path, man_entry_t *e, uint32_t *slot)
{
    return man_find_content(m, path, NULL, 0, e, slot, NULL);
}

/* Write slot i: what m->slot holds (the caller took it). */
static int slot_write_in(man_t *m, uint32_t i)
{
    int err = man_hold(m, 4 * MAN_SLOT + 4096);
    if (err)
        return err;
    int n = cfs_file_pwrite(m->fs, &m->f, m->slot, MAN_SLOT, i * MAN_SLOT);
    return n < 0 ? n : 0;
}

/* Write slot i: e encoded. */
static int slot_write(man_t *m, uint32_t i, const man_entry_t *e)
{
    slot_take(m);
    man_encode(e, m->slot);
    int err = slot_write_in(m, i);
    slot_give(m);
    return err;
}

int man_set(man_t *m, const man_entry_t *e)
{
    uint32_t slot, n = man_slots(m), free_slot = n;
    int r = man_find(m, e->path, NULL, &slot);
    if (r < 0)
        return r;
    slot_take(m);
    if (r == 0) {
        for (uint32_t i = 0; i < n; i++) {
            int k = cfs_file_pread(m->fs, &m->f, m->slot, 1, i * MAN_SLOT);
            if (k < 0) {
                slot_give(m);
                return k;
            }
            if (k == 1 && m->slot[0] == MAN_FREE) {
                free_slot = i;
                break;
            }
        }
        slot = free_slot;
    }
    /* as a tracked file, only its size flag */
    encode_as(e, MAN_TRACK, e->flags & MAN_F_SIZE, m->slot);
    int err = slot_write_in(m, slot);
    slot_give(m);
    return err;
}

int man_del(man_t *m, const char *path)
{
    uint32_t slot;
    int r = man_find(m, path, NULL, &slot);
    if (r <= 0)
        return r;
    slot_take(m);
    memset(m->slot, 0, MAN_SLOT);
    int err = slot_write_in(m, slot);
    slot_give(m);
    return err;
}

bool man_under(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 1 && prefix[0] == '/')
        return true;
    return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '/');
}

int man_move(man_t *m, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    uint32_t n = man_slots(m);
    man_entry_t e;
    /* A file moved over another drops the other's entry. */
    int err = man_del(m, to);
    if (err)
        return err;
    for (uint32_t i = 0; i < n; i++) {
        int r = man_get(m, i, &e);
        if (r < 0)
            return r;
        if (r == 0 || !man_under(e.path, from))
            continue;
        size_t rest = strlen(e.path) - fl;
        if (tl + rest > MAN_PATH_MAX)
            return CFS_ERR_NAMETOOLONG;
        memmove(e.path + tl, e.path + fl, rest + 1);
        memcpy(e.path, to, tl);
        if ((err = slot_write(m, i, &e)))
            return err;
    }
    return 0;
}

int man_commit(man_t *m, const char *const *src, const char *const *dst,
               uint32_t n)
{
    int err = cfs_file_commit_with(m->fs, &m->f, src, dst, n);
    if (err) {
        man_revert(m);
        return err;
    }
    if (m->held) {
        m->held = 0;
        cfs_release(m->fs);
    }
    return 0;
}

void man_revert(man_t *m)
{
    (void)cfs_file_revert(m->fs, &m->f);
    if (m->held) {
        m->held = 0;
        cfs_release(m->fs);
    }
}

int man_hash_file(cfs_t *fs, cfs_file_t *f, uint8_t *buf, uint32_t buflen,
                  uint8_t sha[32], uint32_t *size)
{
    csha_t h;
    int32_t sz = cfs_file_size(fs, f);
    if (sz < 0)
        return sz;
    csha_init(&h);
    int err = csha_start(&h) ? CFS_ERR_IO : 0;
    uint32_t off = 0;
    while (!err && off < (uint32_t)sz) {
        uint32_t want = (uint32_t)sz - off < buflen ? (uint32_t)sz - off : buflen;
        int n = cfs_file_pread(fs, f, buf, want, off);
        if (n < 0)
            err = n;
        else if (n == 0)
            err = CFS_ERR_CORRUPT; /* shorter than its size */
        else if (csha_update(&h, buf, (size_t)n))
            err = CFS_ERR_IO;
        else
            off += (uint32_t)n;
    }
    if (!err && csha_finish(&h, sha))
        err = CFS_ERR_IO;
    csha_free(&h);
    *size = (uint32_t)sz;
    return err;
}

int man_hash_path(cfs_t *fs, cfs_file_t *tmp, const char *path, uint8_t *buf,
                  uint32_t buflen, uint8_t sha[32], uint32_t *size)
{
    int err = cfs_file_open(fs, tmp, path, CFS_O_RDONLY);
    if (err)
        return err;
    err = man_hash_file(fs, tmp, buf, buflen, sha, size);
    int err2 = cfs_file_close(fs, tmp);
    return err ? err : err2;
}

int man_check(cfs_t *fs, cfs_file_t *tmp, const man_entry_t *e, uint8_t *buf,
              uint32_t buflen)
{
    cfs_stat_t st;
    uint8_t sha[32];
    uint32_t size;
    int err = cfs_stat(fs, e->path, &st);
    if (err == CFS_ERR_NOENT || err == CFS_ERR_NOTDIR || err == CFS_ERR_NAMETOOLONG ||
        err == CFS_ERR_INVAL)
        return MAN_MISSING;
    if (!err && st.type != CFS_TYPE_FILE)
        return MAN_MISMATCH;
    if (!err)
        err = man_hash_path(fs, tmp, e->path, buf, buflen, sha, &size);
    if (err == CFS_ERR_CORRUPT)
        return MAN_UNREADABLE;
    if (err)
        return err;
    return memcmp(sha, e->sha, 32) == 0 && (!(e->flags & MAN_F_SIZE) || size == e->size)
               ? MAN_OK : MAN_MISMATCH;
}

int man_copy_file(cfs_t *cfs_a, const char *src, cfs_t *cfs_b, const char *dst,
                  cfs_file_t *t1, cfs_file_t *t2, uint8_t *buf,
                  uint32_t buflen, uint8_t sha[32], uint32_t *size)
{
    csha_t h;
    int err = cfs_file_open(cfs_a, t1, src, CFS_O_RDONLY);
    if (err)
        return err;
    err = cfs_file_open(cfs_b, t2, dst, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (err) {
        (void)cfs_file_close(cfs_a, t1);
        return err;
    }
    int32_t sz = cfs_file_size(cfs_a, t1);
    err = sz < 0 ? sz : 0;
    csha_init(&h);
    if (!err && csha_start(&h))
        err = CFS_ERR_IO;
    uint32_t off = 0;
    while (!err && off < (uint32_t)sz) {
        uint32_t want = (uint32_t)sz - off < buflen ? (uint32_t)sz - off : buflen;
        int n = cfs_file_pread(cfs_a, t1, buf, want, off);
        if (n < 0)
            err = n;
        else if (n == 0)
            err = CFS_ERR_CORRUPT;
        else if (csha_update(&h, buf, (size_t)n))
            err = CFS_ERR_IO;
        else {
            int w = cfs_file_pwrite(cfs_b, t2, buf, (uint32_t)n, off);
            if (w < 0)
                err = w;
            else
                off += (uint32_t)n;
        }
    }
    if (!err && csha_finish(&h, sha))
        err = CFS_ERR_IO;
    csha_free(&h);
    if (err)
        (void)cfs_file_revert(cfs_b, t2);
    int e1 = cfs_file_close(cfs_a, t1), e2 = cfs_file_close(cfs_b, t2);
    if (!err)
        err = e1 ? e1 : e2;
    if (err)
        (void)cfs_remove(cfs_b, dst);
    *size = sz < 0 ? 0 : (uint32_t)sz;
    return err;
}

int man_mkdir_parents(cfs_t *fs, const char *path, char *tmp)
{
    size_t n = strlen(path);
    if (n > MAN_PATH_MAX)
        return CFS_ERR_NAMETOOLONG;
    for (size_t i = 1; i < n; i++) {
        if (path[i] != '/')
            continue;
        memcpy(tmp, path, i);
        tmp[i] = 0;
        cfs_stat_t st;
        int err = cfs_stat(fs, tmp, &st);
        if (err == CFS_ERR_NOENT)
            err = cfs_mkdir(fs, tmp);
        else if (!err && st.type != CFS_TYPE_DIR)
            err = CFS_ERR_NOTDIR;
        if (err)
            return err;
    }
    return 0;
}

int man_wipe(cfs_t *fs, const char *dir, char *tmp)
{
    cfs_dir_t d;
    cfs_stat_t st;
    size_t dl = strlen(dir);
    if (dl + 2 > 256)
        return CFS_ERR_NAMETOOLONG;
    /* A flat directory: files only. Remove a batch of names at a time,
     * reading the listing again from the start after each batch. The
     * names ("dir/name", under 40 bytes each) are packed into tmp, not
     * kept on the stack (issue 14). */
    enum { NAME_MAX40 = 40 };
    for (uint32_t guard = 0; guard < 100000; guard++) {
        const char *src[CFS_RENAME_MANY_MAX];
        uint32_t k = 0, pos = 0;
        int err = cfs_dir_open(fs, &d, dir);
        if (err == CFS_ERR_NOENT)
            return 0;
        if (err)
            return err;
        while (k < CFS_RENAME_MANY_MAX && pos + NAME_MAX40 <= 512) {
            char *name = tmp + pos;
            int r = cfs_dir_read(fs, &d, name + dl + 1,
                                 dl + 2 < NAME_MAX40
                                     ? (uint32_t)(NAME_MAX40 - dl - 1) : 1u,
                                 &st);
            if (r == CFS_ERR_NAMETOOLONG)
                r = CFS_ERR_NOTEMPTY; /* not a name of ours */
            if (r == 1 && st.type != CFS_TYPE_FILE)
                r = CFS_ERR_NOTEMPTY;
            if (r < 0) {
                (void)cfs_dir_close(fs, &d);
                return r;
            }
            if (r == 0)
                break;
            memcpy(name, dir, dl);
            name[dl] = '/';
            src[k++] = name;
            pos += (uint32_t)(dl + 2 + strlen(name + dl + 1));
        }
        (void)cfs_dir_close(fs, &d);
        if (k == 0)
            break;
        err = cfs_rename_many(fs, src, NULL, k);
        if (err)
            return err;
    }
    int err = cfs_rmdir(fs, dir);
    return err == CFS_ERR_NOENT ? 0 : err;
}

int man_own_counts(cfs_t *fs, uint32_t *files, uint32_t *dirs)
{
    static const char *const sub[] = { MAN_DIR, MAN_DIR "/w", MAN_DIR "/tx",
                                       MAN_DIR "/cp" };
    char name[CFS_NAME_MAX + 1];
    *files = *dirs = 0;
    for (uint32_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
        cfs_dir_t d;
        cfs_stat_t st;
        int err = cfs_dir_open(fs, &d, sub[i]);
        if (err == CFS_ERR_NOENT)
            continue;
        if (err)
            return err;
        (*dirs) += i == 0;
        while ((err = cfs_dir_read(fs, &d, name, sizeof(name), &st)) == 1)
            if (st.type == CFS_TYPE_DIR)
                (*dirs)++;
            else
                (*files)++;
        (void)cfs_dir_close(fs, &d);
        if (err < 0)
            return err;
    }
    return 0;
}
