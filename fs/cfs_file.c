/*
 * cfs_file.c - the file layer of cfs: inodes, directories and paths, file
 * handles, segment data (patch chains and extent maps), the namespace
 * operations, fsck, and the hooks the log layer's GC calls.
 * See docs/FS.md for the format and the rules.
 */
#include "cfs_internal.h"

#define CHUNK_ENT_MAX (DIRCHUNK_MAX - 4u) /* entry bytes in one chunk */
#define CHAIN_GUARD 8192u
#define PATH_DEPTH_MAX 128u
#define NSEGS(size) (((uint64_t)(size) + SEG_SPAN - 1) / SEG_SPAN)

static uint32_t min32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* ---- inodes ---------------------------------------------------------------- */

void inode_encode(const inode_t *in, uint8_t *p)
{
    p[0] = in->type;
    p[1] = 0;
    le_put16(p + 2, in->nchunks);
    le_put32(p + 4, in->parent);
    le_put32(p + 8, in->size);
    le_put32(p + 12, in->ctime);
    le_put32(p + 16, in->mtime);
}

void inode_decode(inode_t *in, const uint8_t *p)
{
    in->type = p[0];
    in->pad = 0;
    in->nchunks = le_get16(p + 2);
    in->parent = le_get32(p + 4);
    in->size = le_get32(p + 8);
    in->ctime = le_get32(p + 12);
    in->mtime = le_get32(p + 16);
}

static int inode_load(cfs_t *fs, uint32_t a, uint32_t ino, inode_t *in)
{
    rec_hdr_t h;
    uint8_t p[INODE_SIZE];
    int err = cfs_rec_read_hdr(fs, a, &h);
    if (err)
        return err;
    if (h.type != R_INODE || h.ino != ino || h.idx != 0 || h.len < INODE_SIZE)
        return CORRUPT_HERE;
    if (h.len > INODE_SIZE + 4 + COMMIT_MAX_ENT * COMMIT_ENT + COMMIT_TAIL)
        return CORRUPT_HERE;
    /* the whole record is checked, the inode kept (no 512-byte buffer) */
    err = cfs_rec_load_head(fs, a, &h, p, INODE_SIZE);
    if (err)
        return err;
    inode_decode(in, p);
    if (in->type != CFS_TYPE_FILE && in->type != CFS_TYPE_DIR)
        return CORRUPT_HERE;
    return 0;
}

int cfs_inode_at(cfs_t *fs, uint32_t addr, uint32_t ino, inode_t *in)
{
    return inode_load(fs, addr, ino, in);
}

int cfs_inode_get(cfs_t *fs, uint32_t ino, inode_t *in, uint32_t *addr)
{
    uint32_t a;
    int err = cfs_map_lookup(fs, ino, 0, &a);
    if (err)
        return err;
    if (a == CFS_ADDR_NONE)
        return CFS_ERR_NOENT;
    if (addr)
        *addr = a;
    return inode_load(fs, a, ino, in);
}

/* ---- operations: a pending chain of records plus explicit entries --------------
 * Every namespace change writes its records linked through their prev field;
 * lookups made during the operation look at that chain before the map, so
 * the steps of one operation (or of cfs_rename_many) build on each other. The
 * commit makes them all visible at once. */
typedef commit_t op_t;

static void op_init(op_t *op)
{
    op->chain_tail = CFS_ADDR_NONE;
    op->n = 0;
}

/* Newest version of a key in a chain; *found 0 when the chain lacks it. */
static int chain_find(cfs_t *fs, uint32_t chain, uint32_t ino, uint32_t idx,
                      uint32_t *addr, int *found)
{
    *found = 0;
    for (uint32_t g = 0; chain != CFS_ADDR_NONE; g++) {
        rec_hdr_t h;
        uint32_t prev;
        if (g > CHAIN_GUARD)
            return CORRUPT_HERE;
        int err = cfs_rec_read_hdr(fs, chain, &h);
        if (!err)
            err = cfs_chain_prev(fs, chain, &h, &prev);
        if (err)
            return err;
        if (h.ino == ino && h.idx == idx) {
            *addr = h.type == R_TOMB ? CFS_ADDR_NONE : chain;
            *found = 1;
            return 0;
        }
        chain = prev;
    }
    return 0;
}

static int obj_find(cfs_t *fs, uint32_t chain, uint32_t ino, uint32_t idx, uint32_t *addr)
{
    int found;
    int err = chain_find(fs, chain, ino, idx, addr, &found);
    if (err || found)
        return err;
    return cfs_map_lookup(fs, ino, idx, addr);
}

static int op_inode(cfs_t *fs, const op_t *op, uint32_t ino, inode_t *in)
{
    uint32_t a;
    int err = obj_find(fs, op->chain_tail, ino, 0, &a);
    if (err)
        return err;
    if (a == CFS_ADDR_NONE)
        return CFS_ERR_NOENT;
    return inode_load(fs, a, ino, in);
}

static int op_put_inode(cfs_t *fs, op_t *op, uint32_t ino, const inode_t *in)
{
    uint8_t p[INODE_SIZE + 4];
    inode_encode(in, p);
    le_put32(p + INODE_SIZE, op->chain_tail);
    return cfs_rec_write(fs, R_INODE, F_CHAIN, ino, 0, p, sizeof(p), NULL, 0, &op->chain_tail);
}

static int op_tomb(cfs_t *fs, op_t *op, uint32_t ino, uint32_t idx)
{
    uint8_t p[4];
    le_put32(p, op->chain_tail);
    return cfs_rec_write(fs, R_TOMB, 0, ino, idx, p, 4, NULL, 0, &op->chain_tail);
}

static int op_commit(cfs_t *fs, op_t *op)
{
    if (op->chain_tail == CFS_ADDR_NONE && op->n == 0)
        return 0;
    return cfs_commit(fs, op, 0, NULL, NULL);
}

/* Add seg-key deletions [*from, to) to an operation's entries while room is
 * left; *from is advanced past what was added. */
static void op_add_seg_deletes(op_t *op, uint32_t ino, uint64_t *from, uint64_t to)
{
    for (; *from < to && op->n < CFS_COMMIT_MAX; (*from)++) {
        op->ent[op->n].key.ino = ino;
        op->ent[op->n].key.idx = MKIDX(KIND_SEG, (uint32_t)*from);
        op->ent[op->n].addr = CFS_ADDR_DELETED;
        op->n++;
    }
}

/* Delete the segment keys [from, to) of ino from the map, in batches,
 * after a commit that removed a file, replaced it by a rename, or cut its
 * size. The operation has happened, so what the cleanup meets is not its
 * result: on a full partition its batches may find no room for their
 * commits or checkpoints (sweep_fill: one 32 MiB file on the device values
 * reported NOSPC with its name gone, and the service kept its manifest
 * entry). The keys left, as after a power cut here, are never read: an
 * inode number is not given out again, and a write into a segment wholly
 * past the size starts it afresh (write_piece); GC drops them as it
 * passes their records (cfs_seg_live). */
static void seg_cleanup(cfs_t *fs, uint32_t ino, uint64_t from, uint64_t to)
{
    while (from < to) {
        op_t c;
        op_init(&c);
        op_add_seg_deletes(&c, ino, &from, to);
        if (cfs_commit(fs, &c, 0, NULL, NULL))
            return;
    }
}

/* ---- directory chunks -------------------------------------------------------
 * Chunk i of directory d is the record (d, DIR|i): u32 prev, then entries
 * {u32 ino, u8 type, u8 namelen, name}. A chunk with no entries is deleted. */
typedef cfs_chunk_t chunk_t; /* {len, p[CHUNK_ENT_MAX]}: in the work area */

static int chunk_parse_ok(const uint8_t *e, uint32_t len)
{
    uint32_t off = 0;
    while (off < len) {
        if (off + DIRENT_FIXED > len)
            return 0;
        uint32_t nl = e[off + 5];
        if (nl == 0 || off + DIRENT_FIXED + nl > len)
            return 0;
        if (e[off + 4] != CFS_TYPE_FILE && e[off + 4] != CFS_TYPE_DIR)
            return 0;
        off += DIRENT_FIXED + nl;
    }
    return 1;
}

static int chunk_load_once(cfs_t *fs, uint32_t a, uint32_t dino, uint32_t i, chunk_t *ck)
{
    rec_hdr_t h;
    uint8_t prev[4];
    ck->len = 0;
    if (a == CFS_ADDR_NONE)
        return 0;
    int err = cfs_rec_read_hdr(fs, a, &h);
    if (err)
        return err;
    if (h.type != R_DIRCHUNK || h.ino != dino || h.idx != MKIDX(KIND_DIR, i) ||
        h.len < 4 || h.len > DIRCHUNK_MAX)
        return CORRUPT_HERE;
    /* the chain link, then the entries straight into the chunk */
    err = cfs_rec_read(fs, a, 0, prev, 4);
    if (!err)
        err = cfs_rec_read(fs, a, 4, ck->p, h.len - 4u);
    if (err)
        return err;
    if (crc32_update(crc32_update(0, prev, 4), ck->p, h.len - 4u) != h.dcrc ||
        !chunk_parse_ok(ck->p, h.len - 4u))
        return CORRUPT_HERE;
    ck->len = h.len - 4u;
    return 0;
}

static int chunk_load_at(cfs_t *fs, uint32_t a, uint32_t dino, uint32_t i, chunk_t *ck)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = chunk_load_once(fs, a, dino, i, ck);
    return err;
}

static int chunk_load(cfs_t *fs, uint32_t chain, uint32_t dino, uint32_t i, chunk_t *ck)
{
    uint32_t a;
    int err = obj_find(fs, chain, dino, MKIDX(KIND_DIR, i), &a);
    if (err)
        return err;
    return chunk_load_at(fs, a, dino, i, ck);
}

static int op_put_chunk(cfs_t *fs, op_t *op, uint32_t dino, uint32_t i, const chunk_t *ck)
{
    if (ck->len == 0)
        return op_tomb(fs, op, dino, MKIDX(KIND_DIR, i));
    uint8_t p[4];
    le_put32(p, op->chain_tail);
    return cfs_rec_write(fs, R_DIRCHUNK, 0, dino, MKIDX(KIND_DIR, i), p, 4, ck->p, ck->len,
                        &op->chain_tail);
}

/* Where a name was found in a directory. */
typedef struct dirpos {
    uint32_t chunk, off;
    uint32_t ino;
    uint8_t type;
} dirpos_t;

static int dir_find(cfs_t *fs, uint32_t chain, uint32_t dino, const inode_t *din,
                    const char *name, uint32_t nl, dirpos_t *pos, chunk_t *ck)
{
    for (uint32_t i = 0; i < din->nchunks; i++) {
        int err = chunk_load(fs, chain, dino, i, ck);
        if (err)
            return err;
        for (uint32_t off = 0; off < ck->len; off += DIRENT_FIXED + ck->p[off + 5]) {
            if (ck->p[off + 5] == nl && memcmp(ck->p + off + DIRENT_FIXED, name, nl) == 0) {
                pos->chunk = i;
                pos->off = off;
                pos->ino = le_get32(ck->p + off);
                pos->type = ck->p[off + 4];
                return 0;
            }
        }
    }
    return CFS_ERR_NOENT;
}

static int dir_is_empty(cfs_t *fs, uint32_t chain, uint32_t dino, const inode_t *din)
{
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    int r = 1;
    for (uint32_t i = 0; i < din->nchunks && r == 1; i++) {
        int err = chunk_load(fs, chain, dino, i, ck);
        if (err)
            r = err;
        else if (ck->len)
            r = 0;
    }
    cfs_work_give(fs, WORK_CHUNK);
    return r;
}

/* Add an entry to directory dino (whose inode *din is updated and rewritten
 * when a chunk is added). */
static int dir_add_in(cfs_t *fs, op_t *op, uint32_t dino, inode_t *din, uint32_t child,
                      uint8_t type, const char *name, uint32_t nl, chunk_t *ck)
{
    uint32_t need = DIRENT_FIXED + nl, i;
    int err;
    /* the last chunk first, then any other chunk with room */
    for (uint32_t k = 0; k < din->nchunks; k++) {
        i = din->nchunks - 1 - k;
        err = chunk_load(fs, op->chain_tail, dino, i, ck);
        if (err)
            return err;
        if (ck->len + need <= CHUNK_ENT_MAX)
            goto add;
    }
    if (din->nchunks >= 0xffffu)
        return CFS_ERR_NOSPC;
    i = din->nchunks++;
    ck->len = 0;
    err = op_put_inode(fs, op, dino, din);
    if (err)
        return err;
add:
    le_put32(ck->p + ck->len, child);
    ck->p[ck->len + 4] = type;
    ck->p[ck->len + 5] = (uint8_t)nl;
    memcpy(ck->p + ck->len + DIRENT_FIXED, name, nl);
    ck->len += need;
    return op_put_chunk(fs, op, dino, i, ck);
}

static int dir_add(cfs_t *fs, op_t *op, uint32_t dino, inode_t *din, uint32_t child,
                   uint8_t type, const char *name, uint32_t nl)
{
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    int err = dir_add_in(fs, op, dino, din, child, type, name, nl, ck);
    cfs_work_give(fs, WORK_CHUNK);
    return err;
}

/* Remove the entry at pos (ck holds that chunk). */
static int dir_del(cfs_t *fs, op_t *op, uint32_t dino, inode_t *din, const dirpos_t *pos,
                   chunk_t *ck)
{
    uint32_t elen = DIRENT_FIXED + ck->p[pos->off + 5];
    memmove(ck->p + pos->off, ck->p + pos->off + elen, ck->len - pos->off - elen);
    ck->len -= elen;
    int err = op_put_chunk(fs, op, dino, pos->chunk, ck);
    if (err)
        return err;
    if (ck->len == 0 && pos->chunk + 1 == din->nchunks) {
        din->nchunks--;
        err = op_put_inode(fs, op, dino, din);
    }
    return err;
}

/* ---- paths ----------------------------------------------------------------------
 * Absolute, '/'-separated; no empty, "." or ".." component, no trailing '/'
 * (except "/" itself). */
static int path_check(const char *path)
{
    if (!path)
        return CFS_ERR_INVAL;
    size_t n = 0;
    while (n <= CFS_PATH_MAX && path[n])
        n++;
    if (n > CFS_PATH_MAX)
        return CFS_ERR_NAMETOOLONG;
    if (n == 0 || path[0] != '/')
        return CFS_ERR_INVAL;
    if (n == 1)
        return 0;
    if (path[n - 1] == '/')
        return CFS_ERR_INVAL;
    const char *p = path + 1;
    while (*p) {
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t cl = (size_t)(e - p);
        if (cl == 0 || (cl == 1 && p[0] == '.') || (cl == 2 && p[0] == '.' && p[1] == '.'))
            return CFS_ERR_INVAL;
        if (cl > CFS_NAME_MAX)
            return CFS_ERR_NAMETOOLONG;
        p = *e ? e + 1 : e;
    }
    return 0;
}

typedef struct lookup {
    int exists;
    uint32_t ino;      /* the object (when exists) */
    inode_t in;
    uint32_t parent;   /* its directory (0 for the root) */
    inode_t pin;
    const char *name;  /* last component */
    uint32_t nlen;
    dirpos_t pos;      /* where the entry is (when exists) */
} lookup_t;

static int resolve_in(cfs_t *fs, uint32_t chain, const char *path, lookup_t *L, chunk_t *ck);

static int resolve(cfs_t *fs, uint32_t chain, const char *path, lookup_t *L)
{
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    int err = resolve_in(fs, chain, path, L, ck);
    cfs_work_give(fs, WORK_CHUNK);
    return err;
}

static int resolve_in(cfs_t *fs, uint32_t chain, const char *path, lookup_t *L, chunk_t *ck)
{
    int err = path_check(path);
    if (err)
        return err;
    op_t view;
    op_init(&view);
    view.chain_tail = chain;
    memset(L, 0, sizeof(*L));
    err = op_inode(fs, &view, ROOT_INO, &L->in);
    if (err)
        return err == CFS_ERR_NOENT ? CFS_ERR_CORRUPT : err;
    L->ino = ROOT_INO;
    L->exists = 1;
    if (path[1] == 0)
        return 0;
    const char *p = path + 1;
    for (uint32_t depth = 0; *p; depth++) {
        const char *e = p;
        while (*e && *e != '/')
            e++;
        uint32_t nl = (uint32_t)(e - p);
        if (L->in.type != CFS_TYPE_DIR || depth > PATH_DEPTH_MAX)
            return CFS_ERR_NOTDIR;
        L->parent = L->ino;
        L->pin = L->in;
        L->name = p;
        L->nlen = nl;
        err = dir_find(fs, chain, L->parent, &L->pin, p, nl, &L->pos, ck);
        if (err == CFS_ERR_NOENT) {
            L->exists = 0;
            return *e ? CFS_ERR_NOENT : 0;
        }
        if (err)
            return err;
        L->ino = L->pos.ino;
        err = op_inode(fs, &view, L->ino, &L->in);
        if (err)
            return err == CFS_ERR_NOENT ? CFS_ERR_CORRUPT : err;
        if (L->in.type != L->pos.type)
            return CORRUPT_HERE;
        p = *e ? e + 1 : e;
    }
    return 0;
}

/* ---- handles ---------------------------------------------------------------------- */

static int handle_open(const cfs_t *fs, const cfs_file_t *f)
{
    for (const cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h == f)
            return 1;
    return 0;
}

static int ino_open(const cfs_t *fs, uint32_t ino)
{
    for (const cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->ino == ino)
            return 1;
    return 0;
}

int cfs_seg_conflict(cfs_t *fs, uint32_t ino, uint32_t idx)
{
    for (cfs_file_t *h = fs->open_files; h; h = h->next) {
        if (h->ino != ino || h->pending_tail == CFS_ADDR_NONE)
            continue;
        uint32_t chain = h->pending_tail;
        for (uint32_t g = 0; chain != CFS_ADDR_NONE; g++) {
            rec_hdr_t rh;
            if (g > CHAIN_GUARD)
                return CORRUPT_HERE;
            int err = cfs_rec_read_hdr(fs, chain, &rh);
            if (!err)
                err = cfs_chain_prev(fs, chain, &rh, &chain);
            if (err)
                return err;
            if (rh.type == R_EXTMAP && rh.ino == ino && rh.idx == idx)
                return 1;
        }
    }
    return 0;
}

int cfs_pending_in_block(cfs_t *fs, uint32_t b)
{
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->dirty && h->pending_tail != CFS_ADDR_NONE && h->sync_head / fs->bsize == b)
            return 1;
    return 0;
}

/* ---- segments ----------------------------------------------------------------------
 * Segment s of a file holds the file bytes [s*SEG_SPAN, (s+1)*SEG_SPAN). Its
 * current version is the newest record of key (ino, SEG|s): a PATCH
 * {base, prev, off, check, data} laid over the version `base`, or an EXTMAP
 * listing extents {off, len, record} of PATCH records. */

static void seg_fixed(uint8_t *p, uint32_t base, uint32_t prev, uint32_t off)
{
    le_put32(p, base);
    le_put32(p + 4, prev);
    le_put16(p + 8, (uint16_t)off);
    le_put16(p + 10, (uint16_t)crc32_update(0, p, 10));
}

int cfs_seg_fixed_read(cfs_t *fs, uint32_t a, uint8_t *p)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        err = cfs_rec_read(fs, a, 0, p, SEG_FIXED);
        if (!err && le_get16(p + 10) != (uint16_t)crc32_update(0, p, 10))
            err = CFS_ERR_CORRUPT;
    }
    return err == CFS_ERR_CORRUPT ? CORRUPT_HERE : err;
}

/* A segment version, loaded: its patches newest first over an EXTMAP. */
typedef struct segv {
    uint32_t n;
    uint32_t addr[SEG_CHAIN_MAX + 2];
    uint16_t off[SEG_CHAIN_MAX + 2];
    uint16_t len[SEG_CHAIN_MAX + 2];
    uint8_t zero[SEG_CHAIN_MAX + 2];
    uint32_t ext;  /* EXTMAP at the bottom, or NONE */
    uint32_t next; /* its extent count */
    uint32_t cur;  /* extent cursor */
    uint8_t stale; /* a handle's view whose committed base has moved */
    uint8_t addr_only; /* seg_run: records only, not where in them (no reads) */
} segv_t;


/* Load version v of segment s. With a handle f, v may be one of its
 * uncommitted records: where their base links leave them, the committed
 * version is taken from the map (GC may have moved it since). */
static int segv_load(cfs_t *fs, const cfs_file_t *f, uint32_t ino, uint32_t s, uint32_t v,
                     segv_t *r)
{
    r->n = 0;
    r->ext = CFS_ADDR_NONE;
    r->next = 0;
    r->cur = 0;
    r->stale = 0;
    r->addr_only = 0;
    while (v != CFS_ADDR_NONE) {
        rec_hdr_t h;
        uint8_t fx[SEG_FIXED + 2];
        int err = cfs_rec_read_hdr(fs, v, &h);
        if (err)
            return err;
        if (h.ino != ino || h.idx != MKIDX(KIND_SEG, s) || h.len < SEG_FIXED)
            return CORRUPT_HERE;
        err = cfs_seg_fixed_read(fs, v, fx);
        if (err)
            return err;
        if (h.type == R_EXTMAP) {
            if ((h.len - SEG_FIXED) % EXT_SIZE || (h.len - SEG_FIXED) / EXT_SIZE > EXT_MAX)
                return CORRUPT_HERE;
            err = cfs_rec_verify(fs, v, &h);
            if (err)
                return err;
            r->ext = v;
            r->next = (h.len - SEG_FIXED) / EXT_SIZE;
            return 0;
        }
        if (h.type != R_PATCH || r->n >= SEG_CHAIN_MAX + 2)
            return CORRUPT_HERE;
        uint32_t len;
        if (h.flags & F_ZERO) {
            if (h.len != SEG_FIXED + 2)
                return CORRUPT_HERE;
            err = cfs_rec_load(fs, v, &h, fx, sizeof(fx));
            if (err)
                return err;
            len = le_get16(fx + SEG_FIXED);
        } else {
            len = h.len - SEG_FIXED;
        }
        uint32_t off = le_get16(fx + 8) & SEG_OFF_MASK;
        if (off + len > SEG_SPAN)
            return CORRUPT_HERE;
        r->addr[r->n] = v;
        r->off[r->n] = (uint16_t)off;
        r->len[r->n] = (uint16_t)len;
        r->zero[r->n] = (h.flags & F_ZERO) != 0;
        r->n++;
        v = le_get32(fx);
        if (f && (le_get16(fx + 8) & SEG_BASE_MAPPED)) {
            /* an uncommitted patch laid over the committed version: that
             * version is whatever the map holds now (GC may have moved it
             * since; the commit rebases on it) */
            uint32_t m;
            err = cfs_map_lookup(fs, ino, MKIDX(KIND_SEG, s), &m);
            if (err)
                return err;
            r->stale = m != v;
            v = m;
            f = NULL;
        }
    }
    return 0;
}

/* One run of segment bytes [p, end): zeros (rec 0), lost data
 * (rec CFS_ADDR_LOST) or bytes of PATCH record rec starting at data offset
 * doff in it. */
typedef struct run {
    uint32_t end;
    uint32_t rec;
    uint32_t doff;
} run_t;

static int ext_read(cfs_t *fs, const segv_t *r, uint32_t i, uint32_t *off, uint32_t *len,
                    uint32_t *rec)
{
    /* the map's checksum was checked when it was loaded; the entry is read
     * twice so that noise on this read cannot go unseen */
    uint8_t e[EXT_SIZE], e2[EXT_SIZE];
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        err = cfs_rec_read(fs, r->ext, SEG_FIXED + i * EXT_SIZE, e, EXT_SIZE);
        if (!err)
            err = cfs_rec_read(fs, r->ext, SEG_FIXED + i * EXT_SIZE, e2, EXT_SIZE);
        if (!err && memcmp(e, e2, EXT_SIZE) != 0)
            err = CFS_ERR_CORRUPT;
    }
    if (err)
        return err;
    *off = le_get16(e);
    *len = le_get16(e + 2);
    *rec = le_get32(e + 4);
    return *off + *len > SEG_SPAN ? CORRUPT_HERE : 0;
}

static int seg_run(cfs_t *fs, uint32_t ino, uint32_t s, segv_t *r, uint32_t p, uint32_t limit,
                   run_t *out)
{
    uint32_t end = limit;
    for (uint32_t i = 0; i < r->n; i++) {
        uint32_t o = r->off[i], l = r->len[i];
        if (p >= o && p < o + l) {
            out->end = min32(end, o + l);
            out->rec = r->zero[i] ? 0 : r->addr[i];
            out->doff = p - o;
            return 0;
        }
        if (o > p)
            end = min32(end, o);
    }
    out->rec = 0;
    out->doff = 0;
    out->end = end;
    while (r->ext != CFS_ADDR_NONE && r->cur < r->next) {
        uint32_t eo, el, rec;
        int err = ext_read(fs, r, r->cur, &eo, &el, &rec);
        if (err)
            return err;
        if (eo + el <= p) {
            r->cur++;
            continue;
        }
        if (eo > p) {
            out->end = min32(end, eo);
            return 0;
        }
        out->end = min32(end, eo + el);
        out->rec = rec;
        if (rec != 0 && rec != CFS_ADDR_LOST && !r->addr_only) {
            /* the record's own segment offset tells where p is in its data */
            rec_hdr_t h;
            uint8_t fx[SEG_FIXED];
            err = cfs_rec_read_hdr(fs, rec, &h);
            if (!err)
                err = cfs_seg_fixed_read(fs, rec, fx);
            if (err)
                return err;
            uint32_t ro = le_get16(fx + 8) & SEG_OFF_MASK;
            if (h.type != R_PATCH || (h.flags & F_ZERO) || h.ino != ino ||
                h.idx != MKIDX(KIND_SEG, s) || ro > p || p - ro >= h.len - SEG_FIXED)
                return CORRUPT_HERE;
            out->doff = p - ro;
        }
        return 0;
    }
    return 0;
}

/* Read n data bytes at data offset doff of PATCH rec, verifying the whole
 * record's checksum (buf may be NULL to verify only). */
static int patch_read_once(cfs_t *fs, uint32_t rec, uint32_t doff, uint8_t *buf, uint32_t n)
{
    rec_hdr_t h;
    uint8_t tmp[CFS_READ_CHUNK];
    int err = cfs_rec_read_hdr(fs, rec, &h);
    if (err)
        return err;
    if (h.type != R_PATCH || h.len < SEG_FIXED + doff + n)
        return CORRUPT_HERE;
    uint32_t crc = 0, want_lo = SEG_FIXED + doff, want_hi = want_lo + n;
    for (uint32_t off = 0; off < h.len;) {
        uint32_t k = min32(h.len - off, sizeof(tmp));
        err = cfs_rec_read(fs, rec, off, tmp, k);
        if (err)
            return err;
        crc = crc32_update(crc, tmp, k);
        if (buf) {
            uint32_t lo = off > want_lo ? off : want_lo, hi = min32(off + k, want_hi);
            if (lo < hi)
                memcpy(buf + (lo - want_lo), tmp + (lo - off), hi - lo);
        }
        off += k;
    }
    return crc == h.dcrc ? 0 : CORRUPT_HERE;
}

static int patch_read(cfs_t *fs, uint32_t rec, uint32_t doff, uint8_t *buf, uint32_t n)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = patch_read_once(fs, rec, doff, buf, n);
    return err;
}

/* Read segment bytes [o, o+n) of the version loaded in r (segv_load, just
 * before) into buf (NULL: verify only). */
static CFS_NOINLINE int seg_read_v(cfs_t *fs, uint32_t ino, uint32_t s, segv_t *r, uint32_t o,
                                   uint8_t *buf, uint32_t n)
{
    int err;
    uint32_t p = o;
    while (p < o + n) {
        run_t run;
        err = seg_run(fs, ino, s, r, p, o + n, &run);
        if (err)
            return err;
        if (run.end <= p)
            return CORRUPT_HERE;
        uint32_t k = run.end - p;
        if (run.rec == CFS_ADDR_LOST)
            return CORRUPT_HERE;
        if (run.rec == 0) {
            if (buf)
                memset(buf + (p - o), 0, k);
        } else {
            err = patch_read(fs, run.rec, run.doff, buf ? buf + (p - o) : NULL, k);
            if (err) {
                return err;
            }
        }
        p = run.end;
    }
    return 0;
}

/* Read segment bytes [o, o+n) of version v into buf (NULL: verify only). */
static int seg_read(cfs_t *fs, const cfs_file_t *f, uint32_t ino, uint32_t s, uint32_t v,
                    uint32_t o, uint8_t *buf, uint32_t n)
{
    if (v == CFS_ADDR_NONE) {
        if (buf)
            memset(buf, 0, n);
        return 0;
    }
    segv_t r;
    int err = segv_load(fs, f, ino, s, v, &r);
    if (err)
        return err;
    return seg_read_v(fs, ino, s, &r, o, buf, n);
}

/* GC: the records of a segment that lie in the block being collected
 * ([lo, hi)), and their copies. One rebuild copies up to RELOC_MAX of them
 * and writes one EXTMAP pointing at the copies. */
#define RELOC_MAX 32u
typedef struct reloc {
    uint32_t lo, hi;
    uint32_t n;
    int more; /* records in [lo, hi) left for another rebuild */
    uint8_t defrag_ok; /* a fragmented segment may be copied whole */
    uint8_t defragged; /* it was */
    uint32_t old[RELOC_MAX], copy[RELOC_MAX];
} reloc_t;

static int patch_copy(cfs_t *fs, uint32_t a, uint32_t *out);

static uint32_t reloc_map(const reloc_t *rl, uint32_t rec)
{
    for (uint32_t i = 0; rl && i < rl->n; i++)
        if (rl->old[i] == rec)
            return rl->copy[i];
    return rec;
}

/* Find the PATCH records in [rl->lo, rl->hi) that version v reads from
 * (at most RELOC_MAX; rl->more says some are left), count the extents an
 * extent map of v would hold (*extents), the bytes they cover (*covered)
 * and how often the block changes from one extent to the next (*spread:
 * about the number of blocks the segment's data lies in). reloc_copy
 * copies them. */
static int reloc_collect(cfs_t *fs, uint32_t ino, uint32_t s, uint32_t v, uint32_t seglen,
                         reloc_t *rl, uint32_t *extents, uint32_t *covered, uint32_t *spread)
{
    segv_t r;
    rl->n = 0;
    rl->more = 0;
    int err = segv_load(fs, NULL, ino, s, v, &r);
    if (err)
        return err;
    r.addr_only = 1;
    uint32_t n = 0, hi = 0, lrec = 0, lend = 0; /* the extent being merged */
    *covered = 0;
    *spread = 0;
    uint32_t lblk = UINT32_MAX;
    for (uint32_t p = 0; p < seglen;) {
        run_t run;
        err = seg_run(fs, ino, s, &r, p, seglen, &run);
        if (err)
            return err;
        if (run.end <= p)
            return CORRUPT_HERE;
        if (run.rec != 0) {
            *covered += run.end - p;
            if (run.rec / fs->bsize != lblk)
                (*spread)++;
            lblk = run.rec / fs->bsize;
            if (!(hi == p && lrec == run.rec && lend == run.doff))
                n++;
            lrec = run.rec;
            lend = run.doff + (run.end - p);
            hi = run.end;
        }
        if (run.rec >= rl->lo && run.rec < rl->hi && reloc_map(rl, run.rec) == run.rec) {
            if (rl->n < RELOC_MAX)
                rl->old[rl->n++] = run.rec;
            else
                rl->more = 1;
        }
        p = run.end;
    }
    *extents = n;
    return 0;
}

static int reloc_copy(cfs_t *fs, reloc_t *rl)
{
    for (uint32_t i = 0; i < rl->n; i++) {
        int err = patch_copy(fs, rl->old[i], &rl->copy[i]);
        if (err)
            return err;
    }
    return 0;
}

/* Write a new EXTMAP for the segment version v over [0, seglen): its data
 * runs become extents (with rl, runs of the records it relocates point at
 * their copies). When the extents would not fit, the data is copied into
 * fresh PATCH records. The EXTMAP's chain link is prev; its address goes to
 * *out. */
static int seg_rebuild(cfs_t *fs, const cfs_file_t *f, uint32_t ino, uint32_t s, uint32_t v,
                       uint32_t seglen, reloc_t *rl, uint32_t prev, uint32_t *out)
{
    uint32_t idx = MKIDX(KIND_SEG, s);
    uint8_t ebuf[CFS_EXT_BATCH * EXT_SIZE];
    uint32_t copies[SEG_SPAN / GC_DEFRAG_REC];
    uint32_t cs = PATCH_MAX; /* the size of the copies' records */
    uint32_t ncopies = 0;
    segv_t r;
    int err;
    uint32_t count = 0;
    uint32_t open_a = CFS_ADDR_NONE, open_len = 0; /* a record begun, not ended */
    int defrag = 0;
    if (rl) {
        /* GC: a segment in many pieces is copied whole into fresh patches
         * when the room is there, rather than given one more extent map
         * over copies of its pieces in this block. Its pieces elsewhere
         * are stale from then on. Two cases:
         * - more than GC_DEFRAG_EXTENTS pieces (small writes), into 4 KiB
         *   patches: small-write data shrinks to its size when it is moved
         *   instead of growing (a 100-byte write is a 132-byte record, and
         *   every 24 of them an extent map of up to 2 KiB);
         * - pieces spread over GC_DEFRAG_SPREAD blocks or more, in a
         *   segment with no more than an eighth of holes (the copy writes
         *   holes out as zeros), into GC_DEFRAG_REC-byte patches: a file
         *   rewritten slot by slot, as the service's manifest is (300-byte
         *   slots, ~54 to a segment, each somewhere else in the log).
         *   Piece by piece, every pass that met one slot wrote a new
         *   extent map of all ~54 extents and changed the segment's key,
         *   about 1 KB of log per slot moved, and a 16 MiB /usr of 3,487
         *   small files written in the device's 768-byte pieces ended
         *   where no pass gained (test_svc_fill --big). The copies are
         *   1 KiB so that reading one slot checks 1 KiB, not 4 (a read
         *   verifies the whole record it reads from), and they lie in a
         *   few blocks, so the copy is not copied whole again. */
        uint32_t ne, covered, spread;
        err = reloc_collect(fs, ino, s, v, seglen, rl, &ne, &covered, &spread);
        if (err)
            return err;
        rl->defragged = 0;
        int small = ne > GC_DEFRAG_EXTENTS;
        if (!small && spread >= GC_DEFRAG_SPREAD && covered >= seglen - seglen / 8) {
            small = 1;
            cs = GC_DEFRAG_REC;
        }
        if (rl->defrag_ok && v != CFS_ADDR_NONE && small &&
            cfs_gc_fits(fs, seglen + (seglen / cs + 2) * (REC_HDR + SEG_FIXED))) {
            defrag = 1;
            rl->defragged = 1;
            rl->n = 0;
            rl->more = 0;
        } else if ((err = reloc_copy(fs, rl))) {
            return err;
        }
    }
    /* The version is walked twice (counting, then writing): the runs of
     * both walks are summed up (sig) and must agree. Each extent entry
     * is read twice and compared (ext_read), but under heavy noise the
     * same flip on both reads of one entry happens (test_fs_gcfail's
     * noise runs: an extent's offset misread by 32, in a rebuild by GC,
     * made a 32-byte hole of committed data); the same wrong entry on
     * both walks does not. */
    uint32_t sig0 = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t a = CFS_ADDR_NONE, crc = 0, written = SEG_FIXED, nb = 0, sig = 0;
        if (pass == 1) {
            uint8_t fx[SEG_FIXED];
            seg_fixed(fx, CFS_ADDR_NONE, prev, 0);
            err = cfs_rec_begin(fs, SEG_FIXED + count * EXT_SIZE, &a);
            if (err)
                return err;
            open_a = a;
            open_len = SEG_FIXED + count * EXT_SIZE;
            err = cfs_rec_append(fs, a, 0, fx, SEG_FIXED, &crc);
            if (err)
                goto fail;
        }
        err = segv_load(fs, f, ino, s, v, &r);
        if (err)
            goto fail;
        uint32_t p = 0, n = 0;
        uint32_t lo = 0, hi = 0, lrec = 0, ldoff = 0; /* extent being merged */
        while (p < seglen) {
            run_t run;
            if (ncopies) {
                /* defragmented: the copies hold [0, seglen) in order */
                uint32_t i = p / cs;
                run.rec = copies[i];
                run.doff = p - i * cs;
                run.end = min32(seglen, (i + 1) * cs);
            } else {
                err = seg_run(fs, ino, s, &r, p, seglen, &run);
                if (err)
                    goto fail;
                if (run.end <= p) {
                    err = CORRUPT_HERE;
                    goto fail;
                }
                uint32_t q[4] = {p, run.end, run.rec, run.doff};
                sig = crc32_update(sig, q, sizeof(q));
                run.rec = reloc_map(rl, run.rec);
            }
            if (run.rec != 0) {
                if (hi == p && lrec == run.rec && ldoff + (hi - lo) == run.doff) {
                    hi = run.end; /* continues the previous extent */
                } else {
                    if (hi > lo) {
                        if (pass == 1) {
                            le_put16(ebuf + nb * EXT_SIZE, (uint16_t)lo);
                            le_put16(ebuf + nb * EXT_SIZE + 2, (uint16_t)(hi - lo));
                            le_put32(ebuf + nb * EXT_SIZE + 4, lrec);
                            if (++nb == CFS_EXT_BATCH) {
                                err = cfs_rec_append(fs, a, written, ebuf, nb * EXT_SIZE, &crc);
                                if (err)
                                    goto fail;
                                written += nb * EXT_SIZE;
                                nb = 0;
                            }
                        }
                        n++;
                    }
                    lo = p;
                    hi = run.end;
                    lrec = run.rec;
                    ldoff = run.doff;
                }
            }
            p = run.end;
        }
        if (hi > lo) {
            if (pass == 1) {
                le_put16(ebuf + nb * EXT_SIZE, (uint16_t)lo);
                le_put16(ebuf + nb * EXT_SIZE + 2, (uint16_t)(hi - lo));
                le_put32(ebuf + nb * EXT_SIZE + 4, lrec);
                nb++;
            }
            n++;
        }
        if (pass == 0) {
            count = n;
            sig0 = sig;
            if ((count > EXT_MAX || defrag) && ncopies == 0) {
                /* too fragmented: copy the data into fresh records */
                for (uint32_t o = 0; o < seglen; o += cs) {
                    uint32_t len = min32(cs, seglen - o), ca, ccrc = 0;
                    uint8_t fx[SEG_FIXED];
                    uint8_t tmp[CFS_READ_CHUNK];
                    seg_fixed(fx, CFS_ADDR_NONE, CFS_ADDR_NONE, o);
                    err = cfs_rec_begin(fs, SEG_FIXED + len, &ca);
                    if (err)
                        goto fail;
                    open_a = ca;
                    open_len = SEG_FIXED + len;
                    err = cfs_rec_append(fs, ca, 0, fx, SEG_FIXED, &ccrc);
                    for (uint32_t k = 0; !err && k < len; k += sizeof(tmp)) {
                        uint32_t m = min32(sizeof(tmp), len - k), c1 = 0;
                        /* seg_read through r (free until the next pass
                         * loads it): one segv_t on the stack, not two.
                         * Each piece is read on two walks of the version,
                         * which must agree (the copy replaces the data:
                         * the same flip on both reads of an extent entry
                         * gave a copy with a hole in it) */
                        for (int rd = 0; !err && rd < 2; rd++) {
                            err = v == CFS_ADDR_NONE ? (memset(tmp, 0, m), 0)
                                                     : segv_load(fs, f, ino, s, v, &r);
                            if (!err && v != CFS_ADDR_NONE)
                                err = seg_read_v(fs, ino, s, &r, o + k, tmp, m);
                            if (!err && rd == 0)
                                c1 = crc32_update(0, tmp, m);
                            else if (!err && crc32_update(0, tmp, m) != c1)
                                err = CFS_ERR_IO;
                        }
                        if (!err)
                            err = cfs_rec_append(fs, ca, SEG_FIXED + k, tmp, m, &ccrc);
                    }
                    if (!err)
                        err = cfs_rec_end(fs, ca, R_PATCH, SEG_DEPTH_FLAGS(1), ino, idx,
                                         SEG_FIXED + len, ccrc);
                    if (err)
                        goto fail;
                    open_a = CFS_ADDR_NONE;
                    copies[ncopies++] = ca;
                }
                pass = -1; /* count again over the copies */
                continue;
            }
        } else {
            if (n != count) {
                err = CORRUPT_HERE; /* the version changed under us */
                goto fail;
            }
            if (sig != sig0) {
                err = CFS_ERR_IO; /* noise on one of the walks: not written */
                goto fail;
            }
            if (nb) {
                err = cfs_rec_append(fs, a, written, ebuf, nb * EXT_SIZE, &crc);
                if (err)
                    goto fail;
            }
            err = cfs_rec_end(fs, a, R_EXTMAP, 0, ino, idx, SEG_FIXED + count * EXT_SIZE, crc);
            if (err)
                goto fail;
            *out = a;
        }
    }
    return 0;
fail:
    if (open_a != CFS_ADDR_NONE)
        cfs_rec_abandon(fs, open_a, open_len);
    return err;
}

/* Bytes of segment s that lie inside a file of the given size. */
static uint32_t seg_len(uint32_t size, uint32_t s)
{
    uint64_t start = (uint64_t)s * SEG_SPAN;
    if (size <= start)
        return 0;
    return (uint32_t)(size - start < SEG_SPAN ? size - start : SEG_SPAN);
}

/* Current version of segment s as handle f sees it: its own pending chain
 * first, then the map. */
static int seg_version_from(cfs_t *fs, cfs_file_t *f, uint32_t s, uint32_t *addr, int *mapped)
{
    uint32_t idx = MKIDX(KIND_SEG, s);
    *mapped = 0;
    if (f->pending_tail != CFS_ADDR_NONE) {
        if (f->cache_idx == s) {
            *addr = f->cache_addr;
            return 0;
        }
        int found;
        int err = chain_find(fs, f->pending_tail, f->ino, idx, addr, &found);
        if (err || found)
            return err;
    }
    *mapped = 1;
    return cfs_map_lookup(fs, f->ino, idx, addr);
}

static int seg_version(cfs_t *fs, cfs_file_t *f, uint32_t s, uint32_t *addr)
{
    int mapped;
    return seg_version_from(fs, f, s, addr, &mapped);
}

static void handle_pending(cfs_file_t *f, uint32_t s, uint32_t a)
{
    if (f->cache_idx != s)
        f->pending_segs++;
    if (f->pending_recs < UINT16_MAX)
        f->pending_recs++;
    f->pending_tail = a;
    f->cache_idx = s;
    f->cache_addr = a;
    if (s + 1 > f->pend_hi)
        f->pend_hi = s + 1;
}

/* Write one piece (inside one segment, at most PATCH_MAX bytes) to the
 * handle's pending chain: data, or zeros when data is NULL. */
static int write_piece(cfs_t *fs, cfs_file_t *f, uint32_t off, const uint8_t *data, uint32_t n)
{
    uint32_t s = off / SEG_SPAN, o = off % SEG_SPAN, idx = MKIDX(KIND_SEG, s);
    uint32_t base = CFS_ADDR_NONE, depth = 0;
    int err, mapped = 0;
    if (f->pending_tail == CFS_ADDR_NONE)
        f->sync_head = fs->head; /* the first pending record goes after this */
    if ((uint64_t)s * SEG_SPAN < f->size) {
        /* the segment holds file data: patch over its current version.
         * (A segment wholly beyond the size holds nothing live: start
         * afresh.) */
        err = seg_version_from(fs, f, s, &base, &mapped);
        if (err)
            return err;
        if (base != CFS_ADDR_NONE) {
            rec_hdr_t h;
            err = cfs_rec_read_hdr(fs, base, &h);
            if (err)
                return err;
            if ((h.type != R_PATCH && h.type != R_EXTMAP) || h.ino != f->ino || h.idx != idx)
                return CORRUPT_HERE;
            depth = h.type == R_PATCH ? SEG_DEPTH(h.flags) : 0;
            if (depth >= SEG_CHAIN_MAX) {
                uint32_t e;
                /* a committed base is read without f: the base-mapped
                 * marks in committed records are history, not links */
                err = seg_rebuild(fs, mapped ? NULL : f, f->ino, s, base, seg_len(f->size, s),
                                  NULL, f->pending_tail, &e);
                if (err)
                    return err;
                handle_pending(f, s, e);
                base = e;
                depth = 0;
                mapped = 0;
            }
        }
    }
    uint8_t fx[SEG_FIXED + 2];
    uint32_t a;
    seg_fixed(fx, base, f->pending_tail, o | (mapped && base != CFS_ADDR_NONE ? SEG_BASE_MAPPED : 0));
    if (data) {
        err = cfs_rec_write(fs, R_PATCH, SEG_DEPTH_FLAGS(depth + 1), f->ino, idx, fx, SEG_FIXED,
                           data, n, &a);
    } else {
        le_put16(fx + SEG_FIXED, (uint16_t)n);
        err = cfs_rec_write(fs, R_PATCH, (uint8_t)(F_ZERO | SEG_DEPTH_FLAGS(depth + 1)), f->ino,
                           idx, fx, SEG_FIXED + 2, NULL, 0, &a);
    }
    if (err)
        return err;
    handle_pending(f, s, a);
    f->dirty = 1;
    return 0;
}

/* Make the file bytes [f->size, to) read as zeros: segments wholly in that
 * range may still hold stale records (left by a truncation); tombstone
 * them. The segment holding f->size reads zeros past it already. */
static int expose(cfs_t *fs, cfs_file_t *f, uint64_t to)
{
    uint64_t first = NSEGS(f->size), last = NSEGS(to);
    for (uint64_t s = first; s < last; s++) {
        uint32_t a;
        int err = seg_version(fs, f, (uint32_t)s, &a);
        if (err)
            return err;
        if (a == CFS_ADDR_NONE)
            continue;
        uint8_t p[4];
        if (f->pending_tail == CFS_ADDR_NONE)
            f->sync_head = fs->head;
        le_put32(p, f->pending_tail);
        err = cfs_rec_write(fs, R_TOMB, 0, f->ino, MKIDX(KIND_SEG, (uint32_t)s), p, 4, NULL, 0,
                           &a);
        if (err)
            return err;
        handle_pending(f, (uint32_t)s, CFS_ADDR_NONE);
        f->pending_tail = a;
        f->dirty = 1;
    }
    return 0;
}

/* GC moved committed segment data while f had writes pending on it: give
 * every such segment a pending extent map over the moved version, so the
 * commit never links to records GC has freed. */
/* Is f's pending version v of segment s laid over a committed version GC
 * has moved since? 1 yes, 0 no (a frame of its own: issue 14). */
static CFS_NOINLINE int seg_stale(cfs_t *fs, const cfs_file_t *f, uint32_t s, uint32_t v)
{
    segv_t r;
    int err = segv_load(fs, f, f->ino, s, v, &r);
    return err ? err : r.stale;
}

static int handle_rebase(cfs_t *fs, cfs_file_t *f)
{
    uint32_t keys[CFS_AUTOSYNC_SEGS + 16], addrs[CFS_AUTOSYNC_SEGS + 16], nk = 0;
    uint32_t chain = f->pending_tail;
    for (uint32_t g = 0; chain != CFS_ADDR_NONE; g++) {
        rec_hdr_t h;
        uint32_t a = chain, k;
        if (g > CHAIN_GUARD)
            return CORRUPT_HERE;
        int err = cfs_rec_read_hdr(fs, a, &h);
        if (!err)
            err = cfs_chain_prev(fs, a, &h, &chain);
        if (err)
            return err;
        if (KEY_KIND(h.idx) != KIND_SEG)
            continue;
        for (k = 0; k < nk && keys[k] != h.idx; k++)
            ;
        if (k < nk)
            continue; /* an older record of a segment seen already */
        if (nk == sizeof(keys) / sizeof(keys[0]))
            return CORRUPT_HERE; /* more segments than autosync allows */
        keys[nk] = h.idx;
        addrs[nk++] = h.type == R_TOMB ? CFS_ADDR_NONE : a;
    }
    for (uint32_t k = 0; k < nk; k++) {
        uint32_t s = KEY_INDEX(keys[k]), e, len = seg_len(f->size, s);
        if (addrs[k] == CFS_ADDR_NONE || len == 0)
            continue;
        int err = seg_stale(fs, f, s, addrs[k]);
        if (err < 0)
            return err;
        if (!err)
            continue;
        err = seg_rebuild(fs, f, f->ino, s, addrs[k], len, NULL, f->pending_tail, &e);
        if (err)
            return err;
        handle_pending(f, s, e);
    }
    f->rebase = 0;
    return 0;
}

static void handle_committed(cfs_t *fs, cfs_file_t *f, uint64_t from, uint64_t to);

static int handle_sync_commit(cfs_t *fs, cfs_file_t *f, uint64_t *from, uint64_t *to);

/* Commit a handle's pending records and its size. */
static int handle_sync(cfs_t *fs, cfs_file_t *f)
{
    if (!f->dirty)
        return 0;
    uint64_t from, to;
    int err = handle_sync_commit(fs, f, &from, &to);
    if (!err)
        handle_committed(fs, f, from, to);
    return err;
}

/* handle_sync's commit (a frame of its own: the cleanup commits after it
 * do not stack on its op_t). [*from, *to): the segment keys left to drop. */
static CFS_NOINLINE int handle_sync_commit(cfs_t *fs, cfs_file_t *f, uint64_t *from, uint64_t *to)
{
    inode_t in;
    int err;
    if (f->rebase && f->pending_tail != CFS_ADDR_NONE) {
        err = handle_rebase(fs, f);
        if (err)
            return err;
    }
    err = cfs_inode_get(fs, f->ino, &in, NULL);
    if (err)
        return err == CFS_ERR_NOENT ? CFS_ERR_CORRUPT : err;
    in.size = f->size;
    in.mtime = cfs_now(fs);
    op_t c;
    op_init(&c);
    c.chain_tail = f->pending_tail;
    *from = NSEGS(f->size);
    *to = NSEGS(f->csize) > f->pend_hi ? NSEGS(f->csize) : f->pend_hi;
    op_add_seg_deletes(&c, f->ino, from, *to);
    return cfs_commit(fs, &c, f->ino, &in, NULL);
}

/* After a commit of f's pending records: reset its pending state, let the
 * other handles of the file see the new size, drop the segment keys [from,
 * to) past it that did not fit in the commit. */
static void handle_committed(cfs_t *fs, cfs_file_t *f, uint64_t from, uint64_t to)
{
    f->pending_tail = CFS_ADDR_NONE;
    f->cache_idx = CFS_ADDR_NONE;
    f->pending_segs = 0;
    f->pending_recs = 0;
    f->pend_hi = 0;
    f->commits++;
    f->dirty = 0;
    f->rebase = 0;
    f->csize = f->size;
    f->sync_head = fs->head;
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h != f && h->ino == f->ino && !h->dirty)
            h->size = h->csize = f->size;
    seg_cleanup(fs, f->ino, from, to);
}

int cfs_sync_block(cfs_t *fs, uint32_t b)
{
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->dirty && h->pending_tail != CFS_ADDR_NONE && h->sync_head / fs->bsize == b) {
            int err = handle_sync(fs, h);
            if (err)
                return err;
        }
    return 0;
}

int cfs_sync_ino(cfs_t *fs, uint32_t ino)
{
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->ino == ino && h->dirty) {
            int err = handle_sync(fs, h);
            if (err)
                return err;
        }
    return 0;
}

/* ---- GC hooks ---------------------------------------------------------------------- */

/* The current version of segment (ino, idx) for GC: the one the pass's
 * commit c holds (its slot through *slot, else c->n), else the map's. */
static int gc_seg_version(cfs_t *fs, uint32_t ino, uint32_t idx, const commit_t *c, uint32_t *v,
                          uint32_t *slot)
{
    *slot = c ? c->n : 0;
    for (uint32_t i = 0; c && i < c->n; i++)
        if (c->ent[i].key.ino == ino && c->ent[i].key.idx == idx) {
            *v = c->ent[i].addr == CFS_ADDR_DELETED ? CFS_ADDR_NONE : c->ent[i].addr;
            *slot = i;
        }
    if (c && *slot != c->n)
        return 0;
    return cfs_map_lookup(fs, ino, idx, v);
}

/* The span [*first, *last) of segment bytes version r (loaded) reads from
 * record addr; *whole: all of it from addr. *last is 0 when none. */
static int seg_span_of(cfs_t *fs, uint32_t ino, uint32_t s, segv_t *r, uint32_t seglen,
                       uint32_t addr, uint32_t *first, uint32_t *last, int *whole)
{
    *first = SEG_SPAN;
    *last = 0;
    *whole = 1;
    r->cur = 0;
    r->addr_only = 1;
    for (uint32_t p = 0; p < seglen;) {
        run_t run;
        int err = seg_run(fs, ino, s, r, p, seglen, &run);
        if (err)
            return err;
        if (run.end <= p)
            return CORRUPT_HERE;
        if (run.rec == addr) {
            if (*last != 0 && *last != p)
                *whole = 0;
            *first = *first < p ? *first : p;
            *last = run.end;
        }
        p = run.end;
    }
    return 0;
}

/* Does version v of segment s need record addr: part of its chain, its
 * extent map, or read through it? A record the extent map lists is needed
 * only while some byte of the segment is read from it: reads never follow
 * an extent that newer patches cover (GC may have freed what it points
 * at). The extent entries are read twice over (two walks): noise that
 * flips an entry the same way on both reads of one walk must not make a
 * needed record look free. */
static int seg_needs(cfs_t *fs, uint32_t ino, uint32_t s, uint32_t v, uint32_t seglen,
                     uint32_t addr)
{
    segv_t r;
    int err = segv_load(fs, NULL, ino, s, v, &r);
    if (err)
        return err;
    for (uint32_t i = 0; i < r.n; i++)
        if (r.addr[i] == addr)
            return 1;
    if (r.ext == CFS_ADDR_NONE)
        return 0;
    if (r.ext == addr)
        return 1;
    for (int walk = 0; walk < 2; walk++) {
        uint32_t first, last;
        int whole;
        err = seg_span_of(fs, ino, s, &r, seglen, addr, &first, &last, &whole);
        if (err)
            return err;
        if (last != 0)
            return 1;
    }
    return 0;
}

int cfs_seg_live(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t addr, const commit_t *c)
{
    inode_t in;
    uint32_t v, slot;
    int err = gc_seg_version(fs, ino, idx, c, &v, &slot);
    if (err)
        return err;
    if (v == CFS_ADDR_NONE)
        return 0;
    err = cfs_inode_get(fs, ino, &in, NULL);
    if (err && err != CFS_ERR_NOENT)
        return err;
    uint32_t s = KEY_INDEX(idx), seglen = err ? 0 : seg_len(in.size, s);
    if (err == CFS_ERR_NOENT || in.type != CFS_TYPE_FILE || seglen == 0)
        return v == addr ? 2 : 0; /* a key left behind: drop it */
    return seg_needs(fs, ino, s, v, seglen, addr);
}

/* Read payload bytes [off, off + k) of the record at a (k <= CFS_READ_CHUNK) until
 * two reads in a row agree. GC programs its copies from such reads: under
 * read noise, copies made from single reads nearly all came out with a
 * wrong checksum and were wasted, and a near-full device ran out of room
 * (test_fs_gcfail). */
static int read_agreed(cfs_t *fs, uint32_t a, uint32_t off, uint8_t *buf, uint32_t k)
{
    uint8_t again[CFS_READ_CHUNK];
    int err = cfs_rec_read(fs, a, off, buf, k);
    for (int r = 0; !err; r++) {
        err = cfs_rec_read(fs, a, off, again, k);
        if (err || memcmp(buf, again, k) == 0)
            break;
        if (r == 2 * READ_TRIES)
            return CFS_ERR_IO;
        memcpy(buf, again, k);
    }
    return err;
}

/* Copy a PATCH record verbatim. *out is CFS_ADDR_LOST when the record is
 * damaged on flash: several reads in a row give the same wrong checksum
 * (cfs_rec_check_sure). Reads that disagree are noise: CFS_ERR_IO, and the
 * GC pass is tried again later. */
static int patch_copy(cfs_t *fs, uint32_t a, uint32_t *out)
{
    rec_hdr_t h;
    uint8_t tmp[CFS_READ_CHUNK];
    int err = cfs_rec_read_hdr(fs, a, &h);
    if (err)
        return err;
    *out = CFS_ADDR_LOST;
    for (int t = 0; t < 8; t++) {
        err = cfs_rec_check_sure(fs, a, &h);
        if (err == CFS_ERR_CORRUPT)
            return 0; /* damaged on flash: the data is lost */
        if (err)
            return err;
        uint32_t na, crc = 0;
        err = cfs_rec_begin(fs, h.len, &na);
        if (err)
            return err;
        for (uint32_t off = 0; !err && off < h.len; off += sizeof(tmp)) {
            /* each piece is programmed only when two reads of it in a row
             * agree: a flip on one read must not cost a whole copy (under
             * noise that made every copy of a big patch a waste) */
            uint32_t k = min32(sizeof(tmp), h.len - off);
            err = read_agreed(fs, a, off, tmp, k);
            if (!err)
                err = cfs_rec_append(fs, na, off, tmp, k, &crc);
        }
        if (!err && crc == h.dcrc) {
            err = cfs_rec_end(fs, na, h.type, h.flags, h.ino, h.idx, h.len, crc);
            if (!err)
                *out = na;
            return err;
        }
        cfs_rec_abandon(fs, na, h.len);
        if (err)
            return err;
    }
    return CFS_ERR_IO;
}

/* seg_cover when the span is read from addr alone: copy segment bytes
 * [first, first + n) out of addr into a patch over v, checking addr's
 * checksum in the same reads. A mismatch is noise (addr read well just
 * before): the copy is given up, CFS_ERR_IO. */
static int cover_from(cfs_t *fs, uint32_t addr, const rec_hdr_t *h, uint32_t v, uint32_t first,
                      uint32_t n, uint32_t depth, uint32_t *out)
{
    uint8_t fx[SEG_FIXED], tmp[CFS_READ_CHUNK];
    int err = cfs_seg_fixed_read(fs, addr, fx);
    if (err)
        return err;
    uint32_t poff = le_get16(fx + 8) & SEG_OFF_MASK;
    if (first < poff || first - poff + n > h->len - SEG_FIXED)
        return CORRUPT_HERE;
    /* payload bytes [lo, hi) of addr are the span */
    uint32_t lo = SEG_FIXED + (first - poff), hi = lo + n, a, crc = 0, pcrc = 0;
    seg_fixed(fx, v, CFS_ADDR_NONE, first);
    err = cfs_rec_begin(fs, SEG_FIXED + n, &a);
    if (err)
        return err;
    err = cfs_rec_append(fs, a, 0, fx, SEG_FIXED, &crc);
    for (uint32_t off = 0; !err && off < h->len;) {
        /* pieces end where the span starts and ends */
        uint32_t k = min32(sizeof(tmp), h->len - off);
        if (off < lo && off + k > lo)
            k = lo - off;
        else if (off < hi && off + k > hi)
            k = hi - off;
        err = read_agreed(fs, addr, off, tmp, k);
        if (err)
            break;
        pcrc = crc32_update(pcrc, tmp, k);
        if (off >= lo && off < hi)
            err = cfs_rec_append(fs, a, SEG_FIXED + (off - lo), tmp, k, &crc);
        off += k;
    }
    if (!err && pcrc != h->dcrc)
        err = CFS_ERR_IO;
    if (!err)
        err = cfs_rec_end(fs, a, R_PATCH, SEG_DEPTH_FLAGS(depth + 1), h->ino, h->idx,
                         SEG_FIXED + n, crc);
    if (err) {
        cfs_rec_abandon(fs, a, SEG_FIXED + n);
        return err;
    }
    *out = a;
    return 0;
}

/* GC, the cheap way to move PATCH record `addr` that version v (of
 * segment s) reads through its extent map: a new patch over v holding what
 * v reads in the span of addr's bytes it still shows (at most the record's
 * own size). The extent map is not rewritten: its extent pointing at addr
 * is covered from now on, and reads never follow it. 1 when this does not
 * apply (the record is part of v's chain or its extent map, the chain is
 * as deep as it may be, the file has uncommitted writes whose chains the
 * extra patch could deepen past the limit, the record is damaged): the
 * caller rebuilds the extent map instead. */
static int seg_cover(cfs_t *fs, uint32_t ino, uint32_t s, uint32_t v, uint32_t seglen,
                     uint32_t addr, uint32_t *out)
{
    uint32_t idx = MKIDX(KIND_SEG, s);
    for (const cfs_file_t *f = fs->open_files; f; f = f->next)
        if (f->ino == ino && (f->dirty || f->pending_tail != CFS_ADDR_NONE))
            return 1;
    segv_t r;
    int err = segv_load(fs, NULL, ino, s, v, &r);
    if (err)
        return err;
    if (r.ext == addr || r.ext == CFS_ADDR_NONE)
        return 1;
    uint32_t depth = 0;
    for (uint32_t i = 0; i < r.n; i++)
        if (r.addr[i] == addr)
            return 1;
    if (r.n) {
        rec_hdr_t h;
        err = cfs_rec_read_hdr(fs, r.addr[0], &h);
        if (err)
            return err;
        depth = SEG_DEPTH(h.flags);
    }
    if (depth >= SEG_CHAIN_MAX)
        return 1;
    /* the span of segment bytes v reads from addr, found twice alike (a
     * wrong span would leave bytes read from addr after GC frees it) */
    uint32_t first, last, first2, last2;
    int whole, whole2;
    err = seg_span_of(fs, ino, s, &r, seglen, addr, &first, &last, &whole);
    if (!err)
        err = seg_span_of(fs, ino, s, &r, seglen, addr, &first2, &last2, &whole2);
    if (err)
        return err;
    if (first != first2 || last != last2 || whole != whole2)
        return CFS_ERR_IO;
    rec_hdr_t h;
    err = cfs_rec_read_hdr(fs, addr, &h);
    if (err)
        return err;
    if (first >= last || h.type != R_PATCH || (h.flags & F_ZERO) ||
        last - first > h.len - SEG_FIXED)
        return 1;
    err = cfs_rec_check_sure(fs, addr, &h);
    if (err == CFS_ERR_CORRUPT)
        return 1; /* damaged: the rebuild marks its bytes lost */
    if (err)
        return err;
    uint32_t n = last - first, a, crc = 0;
    uint8_t fx[SEG_FIXED], tmp[CFS_READ_CHUNK];
    if (whole)
        return cover_from(fs, addr, &h, v, first, n, depth, out);
    /* read it all before writing anything: a read that fails wastes no
     * flash then (damage elsewhere in the span: the rebuild copies only
     * what lies in the block) */
    for (uint32_t k = 0; k < n; k += sizeof(tmp)) {
        err = seg_read(fs, NULL, ino, s, v, first + k, NULL, min32(sizeof(tmp), n - k));
        if (err)
            return err == CFS_ERR_CORRUPT ? 1 : err;
    }
    seg_fixed(fx, v, CFS_ADDR_NONE, first);
    err = cfs_rec_begin(fs, SEG_FIXED + n, &a);
    if (err)
        return err;
    err = cfs_rec_append(fs, a, 0, fx, SEG_FIXED, &crc);
    for (uint32_t k = 0; !err && k < n; k += sizeof(tmp)) {
        uint32_t m = min32(sizeof(tmp), n - k);
        err = seg_read(fs, NULL, ino, s, v, first + k, tmp, m);
        if (!err)
            err = cfs_rec_append(fs, a, SEG_FIXED + k, tmp, m, &crc);
    }
    if (!err)
        err = cfs_rec_end(fs, a, R_PATCH, SEG_DEPTH_FLAGS(depth + 1), ino, idx, SEG_FIXED + n, crc);
    if (err) {
        cfs_rec_abandon(fs, a, SEG_FIXED + n);
        /* it read well just before: noise, tried again by a later pass */
        return err == CFS_ERR_CORRUPT ? CFS_ERR_IO : err;
    }
    *out = a;
    return 0;
}

int cfs_seg_relocate(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t addr, uint32_t lo,
                    uint32_t hi, commit_t *c)
{
    uint32_t v, slot, s = KEY_INDEX(idx), nv = CFS_ADDR_NONE;
    int err = gc_seg_version(fs, ino, idx, c, &v, &slot);
    if (err)
        return err;
    inode_t in;
    err = cfs_inode_get(fs, ino, &in, NULL);
    if (err)
        return err;
    uint32_t seglen = seg_len(in.size, s);
    err = seg_cover(fs, ino, s, v, seglen, addr, &nv);
    if (err < 0)
        return err;
    if (err) {
        /* one extent map for every record of the segment in the block */
        reloc_t rl;
        rl.lo = lo;
        rl.hi = hi;
        rl.defrag_ok = 1;
        uint32_t v0 = v;
        do {
            err = seg_rebuild(fs, NULL, ino, s, v, seglen, &rl, CFS_ADDR_NONE, &nv);
            if (err && rl.defragged && v == v0 && err != CFS_ERR_NOSPC) {
                /* a piece that does not read (damage, noise): the plain
                 * rebuild, which marks damaged bytes lost */
                rl.defrag_ok = 0;
                err = seg_rebuild(fs, NULL, ino, s, v, seglen, &rl, CFS_ADDR_NONE, &nv);
            }
            if (err)
                return err;
            v = nv;
        } while (rl.more);
    }
    /* the new version must not need addr any more: GC moves the tail past
     * it (a check against noise in the reads that built the version) */
    err = seg_needs(fs, ino, s, nv, seglen, addr);
    if (err)
        return err < 0 ? err : CFS_ERR_IO;
    /* open handles with uncommitted writes on this file must rebase them
     * on the moved version when they commit */
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->ino == ino && h->dirty)
            h->rebase = 1;
    c->ent[slot].key.ino = ino;
    c->ent[slot].key.idx = idx;
    c->ent[slot].addr = nv;
    if (slot == c->n)
        c->n++;
    return 0;
}

/* ---- files: public API -------------------------------------------------------------- */

#define O_KNOWN (CFS_O_RDWR | CFS_O_CREAT | CFS_O_EXCL | CFS_O_TRUNC | CFS_O_APPEND)

static int file_check(cfs_t *fs, cfs_file_t *f)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    if (!f || !handle_open(fs, f))
        return CFS_ERR_BADF;
    return 0;
}

/* Create a file or directory at L (which does not exist) in one commit. */
static int create_obj(cfs_t *fs, lookup_t *L, uint8_t type, uint32_t *ino_out)
{
    int err = cfs_admit(fs, 0, type == CFS_TYPE_FILE, type == CFS_TYPE_DIR);
    if (err)
        return err;
    op_t op;
    op_init(&op);
    uint32_t ino = fs->next_ino;
    uint32_t now = cfs_now(fs);
    inode_t in = {type, 0, 0, L->parent, 0, now, now};
    err = op_put_inode(fs, &op, ino, &in);
    if (!err)
        err = dir_add(fs, &op, L->parent, &L->pin, ino, type, L->name, L->nlen);
    if (!err)
        err = op_commit(fs, &op);
    if (!err && ino_out)
        *ino_out = ino;
    return err;
}

int cfs_file_open(cfs_t *fs, cfs_file_t *f, const char *path, int flags)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    int acc = flags & CFS_O_RDWR;
    if (!f || acc == 0 || (flags & ~O_KNOWN) || ((flags & CFS_O_TRUNC) && !(acc & CFS_O_WRONLY)) ||
        ((flags & CFS_O_EXCL) && !(flags & CFS_O_CREAT)))
        return CFS_ERR_INVAL;
    if (handle_open(fs, f))
        return CFS_ERR_BUSY;
    uint32_t nopen = 0;
    for (cfs_file_t *h = fs->open_files; h; h = h->next)
        nopen++;
    if (nopen >= CFS_MAX_OPEN)
        return CFS_ERR_NOMEM;
    int err = path_check(path);
    if (err)
        return err;
    int writer = (acc & CFS_O_WRONLY) != 0;
    int creating = (flags & CFS_O_CREAT) != 0;
    if (writer || creating) {
        err = cfs_op_begin(fs, 4096);
        if (err)
            return err;
    }
    lookup_t L;
    err = resolve(fs, CFS_ADDR_NONE, path, &L);
    if (err)
        goto out;
    if (L.ino == ROOT_INO && L.exists) {
        err = CFS_ERR_ISDIR;
        goto out;
    }
    if (!L.exists) {
        if (!creating) {
            err = CFS_ERR_NOENT;
            goto out;
        }
        if (fs->rofs) {
            err = CFS_ERR_ROFS;
            goto out;
        }
        err = create_obj(fs, &L, CFS_TYPE_FILE, &L.ino);
        if (err)
            goto out;
        err = cfs_inode_get(fs, L.ino, &L.in, NULL);
        if (err)
            goto out;
    } else if (creating && (flags & CFS_O_EXCL)) {
        err = CFS_ERR_EXIST;
        goto out;
    }
    if (L.in.type == CFS_TYPE_DIR) {
        err = CFS_ERR_ISDIR;
        goto out;
    }
    if (writer) {
        for (cfs_file_t *h = fs->open_files; h; h = h->next)
            if (h->ino == L.ino && (h->flags & CFS_O_WRONLY)) {
                err = CFS_ERR_BUSY; /* one writer per file at a time */
                goto out;
            }
    }
    memset(f, 0, sizeof(*f));
    f->ino = L.ino;
    f->flags = (uint32_t)flags;
    f->size = f->csize = L.in.size;
    f->ctime = L.in.ctime;
    f->pending_tail = CFS_ADDR_NONE;
    f->cache_idx = CFS_ADDR_NONE;
    f->cache_addr = CFS_ADDR_NONE;
    f->sync_head = fs->head;
    if ((flags & CFS_O_TRUNC) && f->size) {
        f->size = 0; /* takes effect at sync/close */
        f->dirty = 1;
    }
    f->next = fs->open_files;
    fs->open_files = f;
out:
    if (writer || creating)
        cfs_op_end(fs);
    return err;
}

int cfs_file_sync(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    if (err || !f->dirty)
        return err;
    err = cfs_op_begin(fs, 0);
    if (err)
        return err;
    err = handle_sync(fs, f);
    cfs_op_end(fs);
    return err;
}

int cfs_file_close(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    if (f->dirty)
        err = cfs_file_sync(fs, f);
    for (cfs_file_t **pp = &fs->open_files; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    f->next = NULL;
    return err;
}

int cfs_file_revert(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    if (err || !f->dirty)
        return err;
    /* The pending records were never committed: they are garbage now. */
    f->pending_tail = CFS_ADDR_NONE;
    f->cache_idx = CFS_ADDR_NONE;
    f->pending_segs = 0;
    f->pending_recs = 0;
    f->pend_hi = 0;
    f->dirty = 0;
    f->rebase = 0;
    f->size = f->csize;
    if (f->pos > f->size)
        f->pos = f->size;
    f->sync_head = fs->head;
    return 0;
}

int cfs_file_pread(cfs_t *fs, cfs_file_t *f, void *buf, uint32_t len, uint32_t off)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    if (!(f->flags & CFS_O_RDONLY))
        return CFS_ERR_BADF;
    if (!buf && len)
        return CFS_ERR_INVAL;
    if (off >= f->size || len == 0)
        return 0;
    if (len > f->size - off)
        len = f->size - off;
    if (len > 0x7fffffffu)
        len = 0x7fffffffu;
    uint8_t *p = buf;
    uint32_t done = 0;
    while (done < len) {
        uint32_t pos = off + done, s = pos / SEG_SPAN, o = pos % SEG_SPAN;
        uint32_t n = min32(len - done, SEG_SPAN - o), v;
        int mapped;
        err = seg_version_from(fs, f, s, &v, &mapped);
        if (!err) /* the committed version: read as any reader does */
            err = seg_read(fs, mapped ? NULL : f, f->ino, s, v, o, p + done, n);
        if (err)
            return err;
        done += n;
    }
    return (int)done;
}

int cfs_file_read(cfs_t *fs, cfs_file_t *f, void *buf, uint32_t len)
{
    int r = cfs_file_pread(fs, f, buf, len, f && fs && handle_open(fs, f) ? f->pos : 0);
    if (r > 0)
        f->pos += (uint32_t)r;
    return r;
}

/* Put a handle back in the state *before (its records since become
 * garbage), unless a commit happened since. Returns 1 if it did. */
static int handle_restore(cfs_file_t *f, const cfs_file_t *before)
{
    if (f->commits != before->commits)
        return 0;
    cfs_file_t *next = f->next;  /* the list may have changed since */
    uint8_t rebase = f->rebase; /* GC may have moved data meanwhile */
    *f = *before;
    f->next = next;
    f->rebase |= rebase;
    return 1;
}

int cfs_file_pwrite(cfs_t *fs, cfs_file_t *f, const void *buf, uint32_t len, uint32_t off)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    if (!(f->flags & CFS_O_WRONLY))
        return CFS_ERR_BADF;
    if (!buf && len)
        return CFS_ERR_INVAL;
    if (len == 0)
        return 0;
    if (len > 0x7fffffffu || (uint64_t)off + len > CFS_FILE_MAX)
        return CFS_ERR_FBIG;
    const uint8_t *p = buf;
    uint32_t done = 0;
    /* A write that fails changes nothing: unless a commit happened in the
     * middle (an automatic sync), the handle goes back to this state and
     * the records written become garbage. */
    cfs_file_t before = *f;
    if ((uint64_t)off + len > f->size) {
        err = cfs_admit(fs, (uint64_t)off + len - f->size, 0, 0);
        if (err)
            return err;
    }
    if (off > f->size) {
        err = cfs_op_begin(fs, 1024);
        if (err)
            return err;
        err = expose(fs, f, (uint64_t)off / SEG_SPAN * SEG_SPAN);
        cfs_op_end(fs);
        if (err) {
            handle_restore(f, &before);
            return err;
        }
    }
    /* GC runs once, up front, for the whole write: run between its pieces
     * it could commit the pieces written so far (an automatic sync when the
     * tail reaches them), and a write that then failed for room would leave
     * part of itself committed (the service publishes a file it wrote on
     * close, and test_svc_core found a failed write's first 4 KiB in it) */
    err = cfs_op_begin(fs, len + 256 * (len / PATCH_MAX + 2));
    if (err) {
        handle_restore(f, &before);
        return err;
    }
    while (done < len) {
        uint32_t pos = off + done, o = pos % SEG_SPAN;
        uint32_t n = min32(min32(len - done, SEG_SPAN - o), PATCH_MAX);
        err = cfs_op_begin(fs, n + 256);
        if (err)
            break;
        err = write_piece(fs, f, pos, p + done, n);
        if (!err) {
            done += n;
            if (pos + n > f->size)
                f->size = pos + n;
            if (f->pending_segs >= CFS_AUTOSYNC_SEGS || f->pending_recs >= AUTOSYNC_RECS)
                /* under cfs_hold nothing may be committed early */
                err = fs->hold ? CFS_ERR_FBIG : handle_sync(fs, f);
        }
        cfs_op_end(fs);
        if (err)
            break;
    }
    cfs_op_end(fs);
    if (err) {
        /* (if an automatic sync committed part of it, that part stays: the
         * error is still reported, so the caller knows the write failed) */
        handle_restore(f, &before);
        return err;
    }
    return (int)done;
}

int cfs_file_write(cfs_t *fs, cfs_file_t *f, const void *buf, uint32_t len)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    uint32_t off = (f->flags & CFS_O_APPEND) ? f->size : f->pos;
    int r = cfs_file_pwrite(fs, f, buf, len, off);
    if (r > 0)
        f->pos = off + (uint32_t)r;
    return r;
}

int32_t cfs_file_seek(cfs_t *fs, cfs_file_t *f, int32_t off, int whence)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    int64_t base;
    switch (whence) {
    case CFS_SEEK_SET: base = 0; break;
    case CFS_SEEK_CUR: base = f->pos; break;
    case CFS_SEEK_END: base = f->size; break;
    default: return CFS_ERR_INVAL;
    }
    int64_t np = base + off;
    if (np < 0 || np > CFS_FILE_MAX)
        return CFS_ERR_INVAL;
    f->pos = (uint32_t)np;
    return (int32_t)np;
}

int32_t cfs_file_tell(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    return err ? err : (int32_t)f->pos;
}

int32_t cfs_file_size(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    return err ? err : (int32_t)f->size;
}

int32_t cfs_file_committed_size(cfs_t *fs, cfs_file_t *f)
{
    int err = file_check(fs, f);
    return err ? err : (int32_t)f->csize;
}

int cfs_file_truncate(cfs_t *fs, cfs_file_t *f, uint32_t size)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    if (!(f->flags & CFS_O_WRONLY))
        return CFS_ERR_BADF;
    if (size > CFS_FILE_MAX)
        return CFS_ERR_FBIG;
    if (size == f->size)
        return 0;
    if (size > f->size) {
        err = cfs_admit(fs, size - f->size, 0, 0);
        if (err)
            return err;
    }
    err = cfs_op_begin(fs, size < f->size ? 0 : 1024);
    if (err)
        return err;
    if (size < f->size) {
        /* zero the rest of the segment that keeps data, so a later
         * extension reads zeros there */
        uint32_t o = size % SEG_SPAN;
        if (o) {
            uint32_t n = min32(SEG_SPAN - o, f->size - size);
            err = write_piece(fs, f, size, NULL, n);
        }
        if (!err)
            f->size = size;
    } else {
        err = expose(fs, f, size);
        if (!err)
            f->size = size;
    }
    if (!err)
        f->dirty = 1;
    cfs_op_end(fs);
    return err;
}

/* ---- namespace: public API ------------------------------------------------------------ */

static void stat_fill(cfs_stat_t *st, uint32_t ino, const inode_t *in)
{
    st->type = (cfs_type_t)in->type;
    st->size = in->type == CFS_TYPE_FILE ? in->size : 0;
    st->ctime = in->ctime;
    st->mtime = in->mtime;
    st->ino = ino;
}

/* Resolve a path that must exist (committed state). */
static int lookup_existing(cfs_t *fs, const char *path, lookup_t *L)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    int err = resolve(fs, CFS_ADDR_NONE, path, L);
    if (!err && !L->exists)
        err = CFS_ERR_NOENT;
    return err;
}

int cfs_stat(cfs_t *fs, const char *path, cfs_stat_t *st)
{
    lookup_t L;
    if (!st)
        return fs && fs->mounted ? CFS_ERR_INVAL : CFS_ERR_NOTMOUNTED;
    int err = lookup_existing(fs, path, &L);
    if (!err)
        stat_fill(st, L.ino, &L.in);
    return err;
}

/* Start a namespace operation on path: mounted, a valid path, room for
 * bytes of records (cfs_op_begin). */
static int ns_begin(cfs_t *fs, const char *path, uint32_t bytes)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    int err = path_check(path);
    return err ? err : cfs_op_begin(fs, bytes);
}

int cfs_mkdir(cfs_t *fs, const char *path)
{
    int err = ns_begin(fs, path, 2048);
    if (err)
        return err;
    lookup_t L;
    err = resolve(fs, CFS_ADDR_NONE, path, &L);
    if (!err && L.exists)
        err = CFS_ERR_EXIST;
    if (!err)
        err = create_obj(fs, &L, CFS_TYPE_DIR, NULL);
    cfs_op_end(fs);
    return err;
}

/* Remove the object found by L within op: its entry, its inode, and as many
 * of its segment keys as fit in the commit (*seg_from.. the rest after). */
static int remove_in_op(cfs_t *fs, op_t *op, lookup_t *L, uint64_t *seg_from, uint64_t *seg_to)
{
    chunk_t *ck;
    int err;
    if (L->in.type == CFS_TYPE_DIR) {
        err = dir_is_empty(fs, op->chain_tail, L->ino, &L->in);
        if (err < 0)
            return err;
        if (err == 0)
            return CFS_ERR_NOTEMPTY;
        for (uint32_t i = 0; i < L->in.nchunks; i++) {
            err = op_tomb(fs, op, L->ino, MKIDX(KIND_DIR, i));
            if (err)
                return err;
        }
    } else if (ino_open(fs, L->ino)) {
        return CFS_ERR_BUSY;
    }
    /* reload the entry's chunk through the op (earlier steps may have
     * changed it) */
    ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    err = dir_find(fs, op->chain_tail, L->parent, &L->pin, L->name, L->nlen, &L->pos, ck);
    if (!err)
        err = dir_del(fs, op, L->parent, &L->pin, &L->pos, ck);
    cfs_work_give(fs, WORK_CHUNK);
    if (!err)
        err = op_tomb(fs, op, L->ino, 0);
    if (err)
        return err;
    *seg_from = 0;
    *seg_to = L->in.type == CFS_TYPE_FILE ? NSEGS(L->in.size) : 0;
    op_add_seg_deletes(op, L->ino, seg_from, *seg_to);
    return 0;
}

static int remove_in_op_common(cfs_t *fs, const char *path, int want_dir);

static int remove_common(cfs_t *fs, const char *path, int want_dir)
{
    int err = ns_begin(fs, path, 0);
    if (err)
        return err;
    err = remove_in_op_common(fs, path, want_dir);
    cfs_op_end(fs);
    return err;
}

/* The body of remove_common, inside its operation (a frame of its own). */
static CFS_NOINLINE int remove_in_op_common(cfs_t *fs, const char *path, int want_dir)
{
    int err;
    lookup_t L;
    op_t op;
    op_init(&op);
    uint64_t from = 0, to = 0;
    uint32_t ino = 0;
    err = resolve(fs, CFS_ADDR_NONE, path, &L);
    if (!err && !L.exists)
        err = CFS_ERR_NOENT;
    if (!err && L.ino == ROOT_INO)
        err = CFS_ERR_PERM;
    if (!err && want_dir && L.in.type != CFS_TYPE_DIR)
        err = CFS_ERR_NOTDIR;
    if (!err) {
        ino = L.ino;
        err = remove_in_op(fs, &op, &L, &from, &to);
    }
    if (!err)
        err = op_commit(fs, &op);
    if (!err)
        seg_cleanup(fs, ino, from, to);
    return err;
}

int cfs_remove(cfs_t *fs, const char *path) { return remove_common(fs, path, 0); }
int cfs_rmdir(cfs_t *fs, const char *path) { return remove_common(fs, path, 1); }

/* Is directory dino `anc` or inside it? Walks the parent links. */
static int is_within(cfs_t *fs, const op_t *op, uint32_t dino, uint32_t anc)
{
    for (uint32_t depth = 0; depth <= PATH_DEPTH_MAX + 1; depth++) {
        if (dino == anc)
            return 1;
        if (dino == ROOT_INO)
            return 0;
        inode_t in;
        int err = op_inode(fs, op, dino, &in);
        if (err)
            return err;
        dino = in.parent;
    }
    return CORRUPT_HERE;
}

/* One rename (dst NULL: remove) inside op. Deferred segment cleanups of a
 * replaced target are returned through cl_ino/cl_from/cl_to. */
static int rename_in_op(cfs_t *fs, op_t *op, const char *src, const char *dst, uint32_t *cl_ino,
                        uint64_t *cl_from, uint64_t *cl_to)
{
    lookup_t S, D;
    int err = resolve(fs, op->chain_tail, src, &S);
    if (err)
        return err;
    if (!S.exists)
        return CFS_ERR_NOENT;
    if (S.ino == ROOT_INO)
        return CFS_ERR_PERM;
    *cl_ino = 0;
    *cl_from = *cl_to = 0;
    if (!dst) {
        *cl_ino = S.ino;
        return remove_in_op(fs, op, &S, cl_from, cl_to);
    }
    err = resolve(fs, op->chain_tail, dst, &D);
    if (err)
        return err;
    if (D.exists && D.ino == ROOT_INO)
        return CFS_ERR_PERM;
    if (D.exists && D.ino == S.ino)
        return 0; /* same object */
    if (S.in.type == CFS_TYPE_DIR) {
        err = is_within(fs, op, D.parent, S.ino);
        if (err < 0)
            return err;
        if (err)
            return CFS_ERR_INVAL; /* a directory into itself */
    }
    if (D.exists) {
        if (S.in.type == CFS_TYPE_FILE && D.in.type == CFS_TYPE_DIR)
            return CFS_ERR_ISDIR;
        if (S.in.type == CFS_TYPE_DIR && D.in.type == CFS_TYPE_FILE)
            return CFS_ERR_NOTDIR;
        *cl_ino = D.ino;
        err = remove_in_op(fs, op, &D, cl_from, cl_to);
        if (err)
            return err;
    }
    /* take the entry out of the source directory */
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    err = op_inode(fs, op, S.parent, &S.pin);
    if (!err)
        err = dir_find(fs, op->chain_tail, S.parent, &S.pin, S.name, S.nlen, &S.pos, ck);
    if (!err)
        err = dir_del(fs, op, S.parent, &S.pin, &S.pos, ck);
    cfs_work_give(fs, WORK_CHUNK);
    if (err)
        return err;
    /* and put it into the target directory */
    err = op_inode(fs, op, D.parent, &D.pin);
    if (!err)
        err = dir_add(fs, op, D.parent, &D.pin, S.ino, S.in.type, D.name, D.nlen);
    if (err)
        return err;
    if (S.in.parent != D.parent) {
        inode_t in;
        err = op_inode(fs, op, S.ino, &in);
        if (err)
            return err;
        in.parent = D.parent;
        err = op_put_inode(fs, op, S.ino, &in);
    }
    return err;
}

/* The body of cfs_rename_many, inside its operation (a frame of its own:
 * the GC that cfs_op_begin may run does not stack on its op). */
/* Segment keys of replaced or removed files to drop after a commit. */
typedef struct cleanups {
    uint32_t ino[CFS_RENAME_MANY_MAX];
    uint64_t from[CFS_RENAME_MANY_MAX], to[CFS_RENAME_MANY_MAX];
} cleanups_t;

static void cleanups_run(cfs_t *fs, const cleanups_t *cl, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (cl->ino[i])
            seg_cleanup(fs, cl->ino[i], cl->from[i], cl->to[i]);
}

/* The renames and their commit (a frame of its own: the cleanups after it
 * do not stack on its op_t). */
static CFS_NOINLINE int renames_commit(cfs_t *fs, const char *const *src,
                                       const char *const *dst, uint32_t n, cleanups_t *cl)
{
    int err = 0;
    op_t op;
    op_init(&op);
    for (uint32_t i = 0; i < n && !err; i++)
        err = rename_in_op(fs, &op, src[i], dst ? dst[i] : NULL, &cl->ino[i], &cl->from[i],
                           &cl->to[i]);
    if (!err)
        err = op_commit(fs, &op);
    return err;
}

static CFS_NOINLINE int rename_many_in_op(cfs_t *fs, const char *const *src,
                                          const char *const *dst, uint32_t n)
{
    cleanups_t cl;
    int err = renames_commit(fs, src, dst, n, &cl);
    if (!err)
        cleanups_run(fs, &cl, n);
    return err;
}

int cfs_rename_many(cfs_t *fs, const char *const *src, const char *const *dst, uint32_t n)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    if (n > CFS_RENAME_MANY_MAX || (n && !src))
        return CFS_ERR_INVAL;
    if (n == 0)
        return 0;
    for (uint32_t i = 0; i < n; i++) {
        int err = path_check(src[i]);
        if (!err && dst && dst[i])
            err = path_check(dst[i]);
        if (err)
            return err;
    }
    int err = cfs_op_begin(fs, 4096 + n * 2048);
    if (err)
        return err;
    err = rename_many_in_op(fs, src, dst, n);
    cfs_op_end(fs);
    return err;
}

static int commit_with_in_op(cfs_t *fs, cfs_file_t *f, const char *const *src,
                             const char *const *dst, uint32_t n);

int cfs_file_commit_with(cfs_t *fs, cfs_file_t *f, const char *const *src, const char *const *dst,
                        uint32_t n)
{
    int err = file_check(fs, f);
    if (err)
        return err;
    if (n > CFS_RENAME_MANY_MAX || (n && !src))
        return CFS_ERR_INVAL;
    if (!(f->flags & CFS_O_WRONLY))
        return CFS_ERR_BADF;
    for (uint32_t i = 0; i < n; i++) {
        err = path_check(src[i]);
        if (!err && dst && dst[i])
            err = path_check(dst[i]);
        if (err)
            return err;
    }
    err = cfs_op_begin(fs, 4096 + n * 2048);
    if (err)
        return err;
    err = commit_with_in_op(fs, f, src, dst, n);
    cfs_op_end(fs);
    return err;
}

/* The body of cfs_file_commit_with, inside its operation (a frame of its
 * own: the GC that cfs_op_begin may run does not stack on its op). */
static CFS_NOINLINE int commit_with_commit(cfs_t *fs, cfs_file_t *f, const char *const *src,
                                           const char *const *dst, uint32_t n, cleanups_t *cl,
                                           uint64_t *from_out, uint64_t *to_out);

static CFS_NOINLINE int commit_with_in_op(cfs_t *fs, cfs_file_t *f, const char *const *src,
                                          const char *const *dst, uint32_t n)
{
    cleanups_t cl;
    uint64_t from, to;
    int err = commit_with_commit(fs, f, src, dst, n, &cl, &from, &to);
    if (err)
        return err;
    if (f->dirty)
        handle_committed(fs, f, from, to);
    cleanups_run(fs, &cl, n);
    return 0;
}

/* The commit of cfs_file_commit_with (a frame of its own: the cleanups
 * after it do not stack on its op_t). */
static CFS_NOINLINE int commit_with_commit(cfs_t *fs, cfs_file_t *f, const char *const *src,
                                           const char *const *dst, uint32_t n, cleanups_t *cl,
                                           uint64_t *from_out, uint64_t *to_out)
{
    int err = 0;
    if (f->rebase && f->pending_tail != CFS_ADDR_NONE)
        err = handle_rebase(fs, f);
    inode_t in;
    if (!err)
        err = cfs_inode_get(fs, f->ino, &in, NULL);
    if (err == CFS_ERR_NOENT)
        err = CFS_ERR_CORRUPT;
    /* One chain: f's pending records, its inode, then the renames. */
    op_t op;
    op_init(&op);
    op.chain_tail = f->pending_tail;
    uint64_t from = NSEGS(f->size);
    uint64_t to = NSEGS(f->csize) > f->pend_hi ? NSEGS(f->csize) : f->pend_hi;
    if (!err && f->dirty) {
        in.size = f->size;
        in.mtime = cfs_now(fs);
        err = op_put_inode(fs, &op, f->ino, &in);
    }
    for (uint32_t i = 0; i < n && !err; i++)
        err = rename_in_op(fs, &op, src[i], dst ? dst[i] : NULL, &cl->ino[i], &cl->from[i],
                           &cl->to[i]);
    if (!err && f->dirty)
        op_add_seg_deletes(&op, f->ino, &from, to);
    if (!err)
        err = op_commit(fs, &op);
    *from_out = from;
    *to_out = to;
    return err;
}

int cfs_rename(cfs_t *fs, const char *src, const char *dst)
{
    if (!dst)
        return CFS_ERR_INVAL;
    const char *s[1] = {src}, *d[1] = {dst};
    return cfs_rename_many(fs, s, d, 1);
}

/* ---- directories ------------------------------------------------------------------------ */

int cfs_dir_open(cfs_t *fs, cfs_dir_t *dir, const char *path)
{
    lookup_t L;
    if (!dir)
        return fs && fs->mounted ? CFS_ERR_INVAL : CFS_ERR_NOTMOUNTED;
    int err = lookup_existing(fs, path, &L);
    if (err)
        return err;
    if (L.in.type != CFS_TYPE_DIR)
        return CFS_ERR_NOTDIR;
    dir->ino = L.ino;
    dir->chunk = 0;
    dir->off = 0;
    dir->nchunks = L.in.nchunks;
    return 0;
}

int cfs_dir_read(cfs_t *fs, cfs_dir_t *dir, char *name, uint32_t name_size, cfs_stat_t *st)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    if (!dir || !name || name_size == 0)
        return CFS_ERR_INVAL;
    if (dir->ino == 0)
        return CFS_ERR_BADF;
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    while (dir->chunk < dir->nchunks) {
        int err = chunk_load(fs, CFS_ADDR_NONE, dir->ino, dir->chunk, ck);
        if (err) {
            cfs_work_give(fs, WORK_CHUNK);
            return err;
        }
        if (dir->off >= ck->len) {
            dir->chunk++;
            dir->off = 0;
            continue;
        }
        const uint8_t *e = ck->p + dir->off;
        uint32_t nl = e[5], child = le_get32(e);
        if (nl + 1 > name_size) {
            cfs_work_give(fs, WORK_CHUNK);
            return CFS_ERR_NAMETOOLONG;
        }
        memcpy(name, e + DIRENT_FIXED, nl);
        name[nl] = 0;
        dir->off += DIRENT_FIXED + nl;
        cfs_work_give(fs, WORK_CHUNK);
        if (st) {
            inode_t in;
            err = cfs_inode_get(fs, child, &in, NULL);
            if (err)
                return err == CFS_ERR_NOENT ? CFS_ERR_CORRUPT : err;
            stat_fill(st, child, &in);
        }
        return 1;
    }
    cfs_work_give(fs, WORK_CHUNK);
    return 0;
}

int cfs_dir_close(cfs_t *fs, cfs_dir_t *dir)
{
    if (!fs || !dir)
        return CFS_ERR_INVAL;
    if (dir->ino == 0)
        return CFS_ERR_BADF;
    dir->ino = 0;
    return 0;
}

/* ---- unmount ---------------------------------------------------------------------------- */

int cfs_unmount(cfs_t *fs)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    int err = 0;
    while (fs->open_files) {
        int e = cfs_file_close(fs, fs->open_files);
        if (e && !err)
            err = e;
    }
    if (!fs->rofs) {
        /* a full checkpoint: the image then mounts with any journal size
         * (a journal checkpoint's keys must fit the mounting build's) */
        fs->ckpt_full = 1;
        int e = cfs_checkpoint(fs);
        if (e && !err)
            err = e;
    }
    fs->mounted = 0;
    return err;
}

/* ---- fsck ---------------------------------------------------------------------------------- */

typedef struct fsck {
    cfs_t *fs;
    cfs_report_fn report;
    void *ctx;
    uint32_t problems;
    uint32_t files, dirs;
} fsck_t;

static void fsck_say(fsck_t *k, const char *what, uint32_t ino, uint32_t n, int err)
{
    k->problems++;
    if (!k->report)
        return;
    char line[160];
    static const char hex[] = "0123456789";
    /* small formatter: no stdio in fs/ */
    uint32_t o = 0;
    for (const char *p = what; *p && o < 100; p++)
        line[o++] = *p;
    const char *lbl = " (inode ";
    for (const char *p = lbl; *p; p++)
        line[o++] = *p;
    char num[12];
    uint32_t nn = 0, v = ino;
    do {
        num[nn++] = hex[v % 10];
        v /= 10;
    } while (v);
    while (nn)
        line[o++] = num[--nn];
    lbl = ", item ";
    for (const char *p = lbl; *p; p++)
        line[o++] = *p;
    v = n;
    do {
        num[nn++] = hex[v % 10];
        v /= 10;
    } while (v);
    while (nn)
        line[o++] = num[--nn];
    line[o++] = ')';
    if (err) {
        line[o++] = ':';
        line[o++] = ' ';
        for (const char *p = cfs_strerror(err); *p && o < sizeof(line) - 1; p++)
            line[o++] = *p;
    }
    line[o] = 0;
    k->report(k->ctx, line);
}

static void fsck_file(fsck_t *k, uint32_t ino, const inode_t *in)
{
    uint8_t tmp[CFS_READ_CHUNK];
    for (uint64_t s = 0; s < NSEGS(in->size); s++) {
        uint32_t v, len = seg_len(in->size, (uint32_t)s);
        int err = cfs_map_lookup(k->fs, ino, MKIDX(KIND_SEG, (uint32_t)s), &v);
        for (uint32_t o = 0; !err && o < len; o += sizeof(tmp))
            err = seg_read(k->fs, NULL, ino, (uint32_t)s, v, o, tmp, min32(sizeof(tmp), len - o));
        if (err)
            fsck_say(k, "file data unreadable", ino, (uint32_t)s, err);
    }
}

int cfs_fsck(cfs_t *fs, cfs_report_fn report, void *report_ctx)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    fsck_t k = {fs, report, report_ctx, 0, 0, 0};
    struct frame {
        uint32_t ino;
        uint16_t nchunks, chunk; /* an inode's nchunks is 16 bits */
    } stack[PATH_DEPTH_MAX + 1];
    uint32_t sp = 0;
    inode_t in;
    int err = cfs_inode_get(fs, ROOT_INO, &in, NULL);
    if (err || in.type != CFS_TYPE_DIR) {
        fsck_say(&k, "root directory unreadable", ROOT_INO, 0, err ? err : CFS_ERR_CORRUPT);
        return CORRUPT_HERE;
    }
    k.dirs = 1;
    stack[sp++] = (struct frame){ROOT_INO, in.nchunks, 0};
    chunk_t *ck = &cfs_work_take(fs, WORK_CHUNK)->chunk;
    while (sp) {
        struct frame *fr = &stack[sp - 1];
        if (fr->chunk >= fr->nchunks) {
            sp--;
            continue;
        }
        uint32_t dino = fr->ino, ci = fr->chunk++;
        err = chunk_load(fs, CFS_ADDR_NONE, dino, ci, ck);
        if (err) {
            fsck_say(&k, "directory chunk unreadable", dino, ci, err);
            continue;
        }
        for (uint32_t off = 0; off < ck->len; off += DIRENT_FIXED + ck->p[off + 5]) {
            uint32_t child = le_get32(ck->p + off);
            uint8_t type = ck->p[off + 4];
            inode_t ci_in;
            err = cfs_inode_get(fs, child, &ci_in, NULL);
            if (err) {
                fsck_say(&k, "directory entry without a readable inode", child, dino, err);
                continue;
            }
            if (ci_in.type != type)
                fsck_say(&k, "directory entry type differs from the inode", child, dino, 0);
            if (ci_in.parent != dino)
                fsck_say(&k, "inode parent link differs from its directory", child, dino, 0);
            if (ci_in.type == CFS_TYPE_FILE) {
                k.files++;
                fsck_file(&k, child, &ci_in);
            } else {
                k.dirs++;
                if (sp > PATH_DEPTH_MAX) {
                    fsck_say(&k, "directory tree too deep (a cycle?)", child, dino, 0);
                    continue;
                }
                stack[sp++] = (struct frame){child, (uint16_t)ci_in.nchunks, 0};
            }
            if (k.files + k.dirs > fs->files + fs->dirs + 1000000u)
                break;
        }
    }
    cfs_work_give(fs, WORK_CHUNK);
    if (k.files != fs->files)
        fsck_say(&k, "file count differs from the counters", 0, k.files, 0);
    if (k.dirs != fs->dirs)
        fsck_say(&k, "directory count differs from the counters", 0, k.dirs, 0);
    return k.problems ? CORRUPT_HERE : 0;
}
