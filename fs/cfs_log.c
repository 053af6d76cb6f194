/*
 * cfs_log.c - the log layer of cfs: record I/O on a circular log, anchors,
 * the object map (journal index + bucket pages), commits, checkpoints,
 * mount-time replay and garbage collection. See docs/FS.md.
 */
#include "cfs_internal.h"

/* ---- geometry ------------------------------------------------------------- */

#define FIRST_DATA 2u /* blocks 0 and 1 are the anchors */

_Static_assert(CFS_PAGE >= BUCKET_MAX * 12, "bucket page buffer");
_Static_assert(CFS_DIRPAGE >= DIRPAGE_FAN * 4, "directory page buffer");

/* Space tiers (K = ckpt_blocks, what a checkpoint of a full journal needs):
 *   GC moves one more block only with K + 3 free (the block's relocations,
 *   their commit, the checkpoint that ends the pass);
 *   an operation that frees space (cfs_op_begin with 0) starts with K + 4
 *   free and its records never go below K + 3: GC can run after it;
 *   an ordinary operation starts with its size + reserve (2K + 6) free,
 *   its records never go below K + 4, and with a checkpoint it may need
 *   (journal full) it still leaves K + 6: a remove can run after it.
 * The early checkpoint (journal half full) is written at the start of an
 * operation, only when it leaves the operation its own budget. */
#define GC_FLOOR(fs) ((fs)->ckpt_blocks + 3)
/* fs->in_gc: 1 while a pass relocates records, GC_COMMITTING while it
 * writes the commit of its relocations */
#define GC_COMMITTING 2
/* A pass's commit or closing checkpoint that fails on read noise is tried
 * this many times: it wrote nothing, and giving up wastes the copies. */
#define GC_TRIES 3
/* the most keys a journal checkpoint carries: under half the journal index
 * (the early checkpoint at half full must empty it) */
#define CKPT_JOURNAL_MAX (CFS_JOURNAL_MAX / 2 - 1)
#define JENT_SIZE 12u
#define CKPT_JOURNAL_ANY 127u /* the most any build writes */
_Static_assert(CKPT_JOURNAL_MAX <= CKPT_JOURNAL_ANY, "CFS_JOURNAL_MAX: at most 256");
_Static_assert(sizeof(cfs_jent_t) == JENT_SIZE, "journal entries are written as they are");

#define ANCHOR_SIZE 16u
#define ANCHOR_MAGIC 0x43414e31u /* "CAN1": seeds the anchor CRC */
#define BADANCHOR_MAGIC 0x42414431u /* "BAD1": a retired-block note */

static inline uint32_t blk_of(const cfs_t *fs, uint32_t a) { return a / fs->bsize; }
static inline uint32_t off_of(const cfs_t *fs, uint32_t a) { return a % fs->bsize; }
static inline uint32_t ndata(const cfs_t *fs) { return fs->nblocks - FIRST_DATA; }

static int is_bad(const cfs_t *fs, uint32_t b)
{
    for (uint32_t i = 0; i < fs->nbad; i++)
        if (fs->bad[i] == b)
            return 1;
    return 0;
}

/* Next good data block after b, wrapping; *wrapped set when it wrapped. */
static uint32_t next_good(const cfs_t *fs, uint32_t b, int *wrapped)
{
    for (uint32_t i = 0; i < fs->nblocks; i++) {
        b++;
        if (b >= fs->nblocks) {
            b = FIRST_DATA;
            if (wrapped)
                *wrapped = 1;
        }
        if (!is_bad(fs, b))
            return b;
    }
    return FIRST_DATA; /* every block bad: callers see ROFS before this */
}

/* Address n bytes after a in log order; bumps *lap on wrap. */
static uint32_t addr_add(const cfs_t *fs, uint32_t a, uint32_t n, uint32_t *lap)
{
    uint32_t b = blk_of(fs, a), o = off_of(fs, a);
    while (o + n >= fs->bsize) {
        n -= fs->bsize - o;
        int w = 0;
        b = next_good(fs, b, &w);
        if (w && lap)
            (*lap)++;
        o = 0;
        if (n == 0)
            break;
    }
    return b * fs->bsize + o + n;
}

/* Distance in data blocks from block a forward to block b. */
static uint32_t blk_dist(const cfs_t *fs, uint32_t a, uint32_t b)
{
    return (b + ndata(fs) - a) % ndata(fs);
}

/* Lap in which the record at addr was written, judged against the head:
 * everything behind the head in its lap, the rest in the lap before. */
static uint32_t lap_of(const cfs_t *fs, uint32_t a)
{
    uint32_t hb = blk_of(fs, fs->head), b = blk_of(fs, a);
    if (b < hb || (b == hb && a < fs->head))
        return fs->laps;
    return fs->laps - 1;
}

uint32_t cfs_free_blocks(const cfs_t *fs)
{
    uint32_t hb = blk_of(fs, fs->head), tb = blk_of(fs, fs->tail);
    uint32_t n;
    if (hb == tb && fs->tail > fs->head)
        return 0; /* the head has come round to the tail's block */
    if (hb == tb)
        n = ndata(fs) - 1;
    else
        n = blk_dist(fs, hb, tb) - 1;
    /* the head block is free while this lap has not entered it (and it is
     * not retired) */
    if (!fs->head_erased && !is_bad(fs, hb))
        n++;
    /* bad blocks inside the free range do not count */
    for (uint32_t i = 0; i < fs->nbad; i++) {
        uint32_t b = fs->bad[i];
        if (b == hb || b == tb)
            continue;
        if ((hb == tb || blk_dist(fs, hb, b) < blk_dist(fs, hb, tb)) && n > 0)
            n--;
    }
    return n;
}

uint32_t cfs_now(cfs_t *fs)
{
    return fs->clock ? fs->clock(fs->clock_ctx) : 0;
}

/* ---- raw flash access ------------------------------------------------------ */

static int dev_err(int err)
{
    if (err == 0)
        return 0;
    return err == FLASH_ERR_CORRUPT ? CFS_ERR_IO : (err < 0 ? CFS_ERR_IO : err);
}

int cfs_flash_read(cfs_t *fs, uint32_t a, void *buf, uint32_t len)
{
    uint8_t *p = buf;
    while (len) {
        uint32_t b = blk_of(fs, a), o = off_of(fs, a);
        uint32_t n = fs->bsize - o < len ? fs->bsize - o : len;
        int err = fs->dev->read(fs->dev, fs->first_block + b, o, p, n);
        if (err)
            return dev_err(err);
        p += n;
        len -= n;
        a = addr_add(fs, a, n, NULL);
    }
    return 0;
}

/* Program bytes at a (spanning blocks that were entered already). On a
 * failed program the block is remembered as failing (retired by GC). */
static int flash_prog(cfs_t *fs, uint32_t a, const void *buf, uint32_t len)
{
    const uint8_t *p = buf;
    while (len) {
        uint32_t b = blk_of(fs, a), o = off_of(fs, a);
        uint32_t n = fs->bsize - o < len ? fs->bsize - o : len;
        int err = fs->dev->prog(fs->dev, fs->first_block + b, o, p, n);
        if (err) {
            if (err != FLASH_ERR_POWER)
                fs->failing_block = b;
            fs->prog_failed = 1;
            return CFS_ERR_IO;
        }
        p += n;
        len -= n;
        a = addr_add(fs, a, n, NULL);
    }
    return 0;
}

static void anchor_note_bad(cfs_t *fs, uint32_t b);

static int retire_block(cfs_t *fs, uint32_t b)
{
    if (is_bad(fs, b))
        return 0;
    if (fs->nbad >= CFS_BAD_MAX) {
        fs->rofs = 1;
        return CFS_ERR_ROFS;
    }
    fs->bad[fs->nbad++] = (uint16_t)b;
    fs->ckpt_wanted = 1; /* make the list durable soon */
    if (fs->mounted)
        anchor_note_bad(fs, b); /* and at once, in the anchor block */
    return 0;
}

/* Erase the head block if this lap has not erased it yet. A block that fails
 * to erase is retired on the spot (it holds nothing live: it is free). */
static int enter_head(cfs_t *fs)
{
    while (!fs->head_erased) {
        uint32_t b = blk_of(fs, fs->head);
        if (b == blk_of(fs, fs->tail) && fs->tail > fs->head)
            return CFS_ERR_NOSPC; /* never erase the block the log starts in */
        int err = fs->dev->erase(fs->dev, fs->first_block + b);
        if (err == 0) {
            fs->head_erased = 1;
            break;
        }
        if (err == FLASH_ERR_POWER)
            return CFS_ERR_IO;
        err = retire_block(fs, b);
        if (err)
            return err;
        if (cfs_free_blocks(fs) == 0)
            return CFS_ERR_NOSPC;
        int w = 0;
        uint32_t nb = next_good(fs, b, &w);
        if (w)
            fs->laps++;
        fs->head = nb * fs->bsize;
    }
    return 0;
}

/* Move the head to the start of the next block (abandoning the rest of the
 * current one). */
static void head_next_block(cfs_t *fs)
{
    int w = 0;
    uint32_t nb = next_good(fs, blk_of(fs, fs->head), &w);
    if (w)
        fs->laps++;
    fs->head = nb * fs->bsize;
    fs->head_erased = 0;
}

/* ---- records ---------------------------------------------------------------- */

static void hdr_encode(const rec_hdr_t *h, uint8_t *p, uint32_t lap)
{
    p[0] = h->type;
    p[1] = h->flags;
    le_put16(p + 2, h->len);
    le_put32(p + 4, h->ino);
    le_put32(p + 8, h->idx);
    le_put32(p + 12, h->dcrc);
    le_put32(p + 16, crc32_update(lap, p, 16));
}

static int hdr_decode(rec_hdr_t *h, const uint8_t *p, uint32_t lap)
{
    int erased = 1;
    for (int i = 0; i < (int)REC_HDR; i++)
        if (p[i] != 0xff) {
            erased = 0;
            break;
        }
    if (erased)
        return CFS_ERR_NOENT;
    if (crc32_update(lap, p, 16) != le_get32(p + 16))
        return CORRUPT_HERE;
    h->type = p[0];
    h->flags = p[1];
    h->len = le_get16(p + 2);
    h->ino = le_get32(p + 4);
    h->idx = le_get32(p + 8);
    h->dcrc = le_get32(p + 12);
    h->hcrc = le_get32(p + 16);
    if (h->type < R_INODE || h->type > R_PAD || h->len > REC_MAX_PAYLOAD)
        return CORRUPT_HERE;
    return 0;
}

static int read_hdr_lap(cfs_t *fs, uint32_t a, rec_hdr_t *h, uint32_t lap)
{
    uint8_t p[REC_HDR];
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        err = cfs_flash_read(fs, a, p, REC_HDR);
        if (!err)
            err = hdr_decode(h, p, lap);
    }
    return err;
}

/* A header read by a scan (GC, replay) that must tell the end of the
 * records in a block from noise: CFS_ERR_NOENT (erased) or CFS_ERR_CORRUPT
 * (damaged or torn) only when several reads agree byte for byte; a clean
 * read among them is used (it was noise); reads that disagree give
 * CFS_ERR_IO (noise: the caller changes nothing). */
static int read_hdr_sure(cfs_t *fs, uint32_t a, rec_hdr_t *h, uint32_t lap)
{
    int err = read_hdr_lap(fs, a, h, lap);
    if (err != CFS_ERR_CORRUPT)
        return err;
    uint8_t p[REC_HDR], q[REC_HDR];
    if (cfs_flash_read(fs, a, p, REC_HDR))
        return CFS_ERR_IO;
    for (int t = 0; t < 4; t++) {
        if (cfs_flash_read(fs, a, q, REC_HDR))
            return CFS_ERR_IO;
        if (memcmp(p, q, REC_HDR) != 0)
            return CFS_ERR_IO;
    }
    /* the same bytes every time: decode them once more */
    return hdr_decode(h, p, lap);
}

int cfs_rec_read_hdr(cfs_t *fs, uint32_t a, rec_hdr_t *h)
{
    if (a == CFS_ADDR_NONE || a == CFS_ADDR_DELETED ||
        blk_of(fs, a) < FIRST_DATA || blk_of(fs, a) >= fs->nblocks)
        return CORRUPT_HERE;
    int err = read_hdr_lap(fs, a, h, lap_of(fs, a));
#ifdef CFS_DEBUG
    if (err)
        fprintf(stderr, "bad header at %u (block %u): head %u tail %u laps %u lap_of %u\n", a,
                blk_of(fs, a), fs->head, fs->tail, fs->laps, lap_of(fs, a));
#endif
    return err == CFS_ERR_NOENT ? CORRUPT_HERE : err;
}

int cfs_rec_read(cfs_t *fs, uint32_t a, uint32_t off, void *buf, uint32_t len)
{
    return cfs_flash_read(fs, addr_add(fs, a, REC_HDR + off, NULL), buf, len);
}

int cfs_rec_crc(cfs_t *fs, uint32_t a, const rec_hdr_t *h, uint32_t *crc)
{
    uint8_t tmp[CFS_READ_CHUNK];
    uint32_t p = addr_add(fs, a, REC_HDR, NULL);
    *crc = 0;
    for (uint32_t off = 0; off < h->len;) {
        uint32_t n = h->len - off < sizeof(tmp) ? h->len - off : sizeof(tmp);
        int err = cfs_flash_read(fs, p, tmp, n);
        if (err)
            return err;
        *crc = crc32_update(*crc, tmp, n);
        off += n;
        p = addr_add(fs, p, n, NULL);
    }
    return 0;
}

static int verify_payload(cfs_t *fs, uint32_t a, const rec_hdr_t *h)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        uint32_t crc;
        err = cfs_rec_crc(fs, a, h, &crc);
        if (!err && crc != h->dcrc)
            err = CORRUPT_HERE;
    }
    return err;
}

int cfs_rec_verify(cfs_t *fs, uint32_t a, const rec_hdr_t *h)
{
    return verify_payload(fs, a, h);
}

int cfs_rec_check_sure(cfs_t *fs, uint32_t a, const rec_hdr_t *h)
{
    uint32_t last = 0, same = 0;
    for (uint32_t t = 0; t < 4 * DAMAGE_READS; t++) {
        uint32_t c;
        int err = cfs_rec_crc(fs, a, h, &c);
        if (err)
            return err;
        if (c == h->dcrc)
            return 0;
        same = t > 0 && c == last ? same + 1 : 1;
        last = c;
        if (same >= DAMAGE_READS)
            return CORRUPT_HERE;
    }
    return CFS_ERR_IO; /* the reads do not settle: noise */
}

int cfs_rec_load(cfs_t *fs, uint32_t a, const rec_hdr_t *h, void *buf, uint32_t max)
{
    if (h->len > max)
        return CORRUPT_HERE;
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        err = cfs_rec_read(fs, a, 0, buf, h->len);
        if (!err && crc32_update(0, buf, h->len) != h->dcrc)
            err = CFS_ERR_CORRUPT;
    }
    return err == CFS_ERR_CORRUPT ? CORRUPT_HERE : err;
}

static int load_head_once(cfs_t *fs, uint32_t a, const rec_hdr_t *h, uint8_t *buf, uint32_t n)
{
    uint8_t tmp[CFS_READ_CHUNK];
    uint32_t crc = 0;
    for (uint32_t off = 0; off < h->len;) {
        uint32_t k = h->len - off < sizeof(tmp) ? h->len - off : sizeof(tmp);
        int err = cfs_rec_read(fs, a, off, tmp, k);
        if (err)
            return err;
        crc = crc32_update(crc, tmp, k);
        if (off < n)
            memcpy(buf + off, tmp, n - off < k ? n - off : k);
        off += k;
    }
    return crc == h->dcrc ? 0 : CFS_ERR_CORRUPT;
}

int cfs_rec_load_head(cfs_t *fs, uint32_t a, const rec_hdr_t *h, void *buf, uint32_t n)
{
    if (h->len < n)
        return CORRUPT_HERE;
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = load_head_once(fs, a, h, buf, n);
    return err == CFS_ERR_CORRUPT ? CORRUPT_HERE : err;
}

/* Blocks a record of total bytes starting at the head would newly enter. */
static uint32_t blocks_needed(const cfs_t *fs, uint32_t total)
{
    uint32_t o = off_of(fs, fs->head);
    uint32_t n = (o + total + fs->bsize - 1) / fs->bsize; /* blocks touched */
    return fs->head_erased ? n - 1 : n;
}

static int checkpoint_space(const cfs_t *fs);
static int checkpoint_space_for(const cfs_t *fs, uint32_t more);

/* What a GC relocation leaves free: the room of the commit and the
 * checkpoint that end the pass (at most GC_FLOOR - 1). */
static uint32_t gc_keep_blocks(const cfs_t *fs)
{
    uint32_t keep = (uint32_t)checkpoint_space_for(fs, 16) + 1;
    return keep < GC_FLOOR(fs) - 1 ? keep : GC_FLOOR(fs) - 1;
}

static int ensure_space(cfs_t *fs, uint32_t total)
{
    if (fs->rofs)
        return CFS_ERR_ROFS;
    uint32_t need = blocks_needed(fs, total);
    if (fs->in_ckpt || fs->in_gc == GC_COMMITTING)
        return cfs_free_blocks(fs) >= need ? 0 : CFS_ERR_NOSPC;
    if (fs->in_gc) {
        /* a relocation never eats the room of the commit and the
         * checkpoint that end the pass: it fails with NOSPC first, and
         * the pass ends before that record, keeping what it moved */
        return cfs_free_blocks(fs) >= need + gc_keep_blocks(fs) ? 0 : CFS_ERR_NOSPC;
    }
    /* inside an operation: no GC (it would move records the operation holds
     * addresses of); keep room for a checkpoint */
    return cfs_free_blocks(fs) >= need + GC_FLOOR(fs) + (fs->op_frees ? 0 : 1) ? 0 : CFS_ERR_NOSPC;
}

int cfs_gc_fits(const cfs_t *fs, uint32_t bytes)
{
    return cfs_free_blocks(fs) >= blocks_needed(fs, bytes) + gc_keep_blocks(fs);
}

/* Room to move (docs/FS.md section 6). GC reaches stale data only by
 * copying the live data in front of it, and every record it copies changes
 * a map key, which the next full checkpoint writes out: the key's bucket
 * page and a share of the directory pages. Keys are hashed over the
 * buckets, so with a journal of J keys that costs about a bucket page per
 * key (REC_HDR + 12 bytes per key the bucket holds) and a directory page
 * for each of the ~ndirpages * (1 - (1 - 1/ndirpages)^J) it touches,
 * divided among the J keys. A partition whose files leave less stale room
 * than that for every key ends at the point where a pass gains nothing:
 * files made in order and removed oldest first then free space that lies
 * a lap of live data away from the tail, which no pass can reach
 * (sweep_fill: every remove after the first 42 of 2,828 files refused on
 * 8 MiB). Kept: half again that cost for every key the files have (an
 * inode and a first segment key per file, an inode per directory, a key
 * per 16 KiB of data). */
uint64_t cfs_move_room(const cfs_t *fs, uint64_t live, uint64_t files, uint64_t dirs)
{
    uint64_t keys = 2 * files + dirs + live / SEG_SPAN;
    uint32_t j = CFS_JOURNAL_MAX / 2, nd = fs->ndirpages;
    uint64_t untouched = 1u << 16; /* (1 - 1/nd)^j, in 1/65536 */
    for (uint32_t i = 0; i < j && nd > 1; i++)
        untouched = untouched * (nd - 1) / nd;
    uint64_t touched = nd > 1 ? (uint64_t)nd * ((1u << 16) - untouched) >> 16 : 1;
    /* (keys x keys per bucket: not rounded to whole keys per bucket, so
     * the room grows smoothly with every key) */
    uint64_t cost = keys * REC_HDR + 12 * keys * keys / fs->nbuckets +
                    keys * touched * (REC_HDR + 4 * DIRPAGE_FAN) / j;
    return cost * 3 / 2;
}

int cfs_admit(const cfs_t *fs, uint64_t bytes, uint32_t files, uint32_t dirs)
{
    if (fs->no_move_room || fs->hold || fs->rofs)
        return 0; /* (read-only: the operation says so itself) */
    uint64_t live = fs->live + bytes + 64ull * (files + dirs);
    for (const cfs_file_t *h = fs->open_files; h; h = h->next)
        if (h->size > h->csize)
            live += h->size - h->csize; /* grown, not committed yet */
    uint64_t usable = (uint64_t)(ndata(fs) - fs->nbad - fs->reserve) * fs->bsize;
    uint64_t room = cfs_move_room(fs, live, (uint64_t)fs->files + files, (uint64_t)fs->dirs + dirs);
    return live + room > usable ? CFS_ERR_NOSPC : 0;
}

int cfs_op_begin(cfs_t *fs, uint32_t bytes)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    if (fs->rofs)
        return CFS_ERR_ROFS;
    uint32_t need = (bytes + fs->bsize - 1) / fs->bsize + 1;
    /* bytes 0: an operation that frees space or only commits what is
     * written already (remove, sync): it may use the reserve down to the GC
     * floor, so a full device can always be emptied (see the tiers above) */
    uint32_t reserve = bytes ? fs->reserve : GC_FLOOR(fs);
    /* an operation inside one that frees (a hold of 0 bytes: the service
     * dropping the manifest entry of a removed file) is part of it */
    if (fs->in_op && fs->op_frees)
        reserve = GC_FLOOR(fs);
    /* GC only when it can gain: the log holds more than a couple of blocks
     * of stale records */
    uint64_t used = (uint64_t)(ndata(fs) - fs->nbad - cfs_free_blocks(fs)) * fs->bsize;
    /* (fs->live counts file sizes: when it claims all the log holds or
     * more, sparse files make it an upper bound that says nothing about
     * the stale data; try, rather than refuse with the log full of it) */
    int worth = used > fs->live + 2ull * fs->bsize || fs->live >= used;
    /* Passes go on while the tail advances (up to a lap), even when a pass
     * gains nothing: stale records may lie behind a stretch of live ones. */
    /* A pass that fails (read noise) leaves the state as durable as it
     * was, keeping what it committed (cfs_gc_run): the operation goes on if
     * the space it needs is there, and otherwise fails with the pass's
     * error rather than NOSPC. No second pass is tried in the same
     * operation: each failed pass may waste the copies of one block. */
    /* The passes run for an ordinary operation stop once they have lost
     * 2 blocks: over live data each pass loses its commits and checkpoint,
     * and on a partition full of live data a lap of them found nothing and
     * drained the reserve a remove needs (sweep_fill: one file written
     * until NOSPC on 16 and 32 MiB). An operation that frees space keeps
     * going: its passes are how stale data behind live data comes back. */
    int gc_err = 0;
    uint32_t f0 = cfs_free_blocks(fs);
    for (uint32_t swept = 0; fs->in_op == 0 && worth && swept < ndata(fs) &&
                             cfs_free_blocks(fs) < need + fs->reserve + fs->gc_trigger;) {
        if (bytes && cfs_free_blocks(fs) + 2 < f0)
            break;
        int r = cfs_gc_run(fs, 0, cfs_free_blocks(fs) < need + reserve + 1 ? GC_URGENT : 0);
        if (r < 0 && r != CFS_ERR_NOSPC)
            gc_err = r;
        if (r <= 0)
            break;
        swept += (uint32_t)r;
        if (cfs_free_blocks(fs) >= need + reserve + 1 && swept >= 4)
            break; /* enough for this operation: leave the rest for later */
    }
    if (cfs_free_blocks(fs) < need + reserve)
        return gc_err ? gc_err : CFS_ERR_NOSPC;
    /* A checkpoint when the journal is half full, here at the start of an
     * operation and out of the reserve, so the operation's own commits
     * rarely need one (cfs_journal_room insists only when it is full). One
     * that fails changes nothing durable: the operation goes on. */
    if (fs->in_op == 0 && (fs->njournal >= CFS_JOURNAL_MAX / 2 ||
                           fs->journal_records >= CFS_JOURNAL_RECORDS) &&
        cfs_free_blocks(fs) >= need + reserve + (uint32_t)checkpoint_space(fs)) {
        int e = cfs_checkpoint(fs);
        if (e == CFS_ERR_ROFS)
            return e;
    }
    if (fs->in_op == 0)
        fs->op_frees = bytes == 0;
    fs->in_op++;
    return 0;
}

int cfs_hold(cfs_t *fs, uint32_t bytes)
{
    if (fs && fs->mounted && fs->hold == 255)
        return CFS_ERR_BUSY;
    /* an operation that stays open: the GC it may run is run here, first */
    int err = cfs_op_begin(fs, bytes);
    if (!err)
        fs->hold++;
    return err;
}

void cfs_release(cfs_t *fs)
{
    if (!fs || !fs->hold)
        return;
    fs->hold--;
    cfs_op_end(fs);
}

void cfs_op_end(cfs_t *fs)
{
    if (fs->in_op)
        fs->in_op--;
    if (fs->in_op == 0)
        fs->op_frees = 0;
    if (fs->in_op == 0 && fs->ckpt_wanted && !fs->rofs) {
        /* blocks were retired: a checkpoint records them (best effort; the
         * next operation tries again) */
        if (cfs_checkpoint(fs) == 0)
            fs->ckpt_wanted = 0;
    }
}

int cfs_rec_begin(cfs_t *fs, uint32_t len, uint32_t *addr)
{
    uint32_t total = REC_HDR + len;
    /* A failed prog may have left a record without a valid header (its
     * PAD header could not be written, or landed on torn bytes): readers
     * (GC, mount) take an erased or torn header as the end of its block, so
     * nothing may follow it there. When the flash comes back without a
     * remount (a transient failure), go on in the next block. */
    if (fs->prog_failed) {
        fs->prog_failed = 0;
        if (off_of(fs, fs->head) != 0)
            head_next_block(fs);
    }
    int err = ensure_space(fs, total);
    if (err)
        return err;
    err = enter_head(fs);
    if (err)
        return err;
    /* enter every further block the record spans */
    uint32_t a = fs->head;
    uint32_t o = off_of(fs, a);
    uint32_t span = (o + total - 1) / fs->bsize; /* extra blocks */
    uint32_t b = blk_of(fs, a);
    int gap = 0;
    for (uint32_t i = 0, c = b; i < span && !gap; i++) {
        uint32_t want = c + 1 >= fs->nblocks ? FIRST_DATA : c + 1;
        c = next_good(fs, c, NULL);
        gap = c != want;
    }
    if (gap && fs->ckpt_wanted) {
        /* A record never spans over a block retired since the last
         * checkpoint: a mount, not knowing of it, would read the record's
         * rest from that block. Start afresh in the next good block, or
         * (a record longer than a block) checkpoint the retirement first. */
        if (o != 0)
            head_next_block(fs);
        else if (!fs->in_ckpt && cfs_checkpoint(fs) == 0)
            fs->ckpt_wanted = 0;
        else
            return CFS_ERR_IO;
        return cfs_rec_begin(fs, len, addr);
    }
    for (uint32_t i = 0; i < span; i++) {
        int w = 0;
        b = next_good(fs, b, &w);
        if (b == blk_of(fs, fs->tail))
            return CFS_ERR_NOSPC; /* never erase the block the log starts in */
        int e = fs->dev->erase(fs->dev, fs->first_block + b);
        if (e) {
            if (e == FLASH_ERR_POWER)
                return CFS_ERR_IO;
            /* retire it and restart the record in a fresh block */
            err = retire_block(fs, b);
            if (err)
                return err;
            head_next_block(fs);
            return cfs_rec_begin(fs, len, addr);
        }
    }
    *addr = a;
    uint32_t lap = fs->laps;
    fs->head = addr_add(fs, a, total, &lap);
    fs->laps = lap;
    /* the head now sits in the last block the record touched (erased), or
     * at the start of a block not entered yet */
    fs->head_erased = off_of(fs, fs->head) != 0;
    fs->journal_records++;
    return 0;
}

int cfs_rec_append(cfs_t *fs, uint32_t addr, uint32_t off, const void *buf,
                  uint32_t len, uint32_t *crc)
{
    if (crc)
        *crc = crc32_update(*crc, buf, len);
    return flash_prog(fs, addr_add(fs, addr, REC_HDR + off, NULL), buf, len);
}

int cfs_rec_end(cfs_t *fs, uint32_t addr, uint8_t type, uint8_t flags,
               uint32_t ino, uint32_t idx, uint32_t len, uint32_t crc)
{
    rec_hdr_t h = {type, flags, (uint16_t)len, ino, idx, crc, 0};
    uint8_t p[REC_HDR];
    hdr_encode(&h, p, lap_of(fs, addr));
    return flash_prog(fs, addr, p, REC_HDR);
}

void cfs_rec_abandon(cfs_t *fs, uint32_t addr, uint32_t len)
{
    /* a header over whatever payload got written, so scans step over it */
    (void)cfs_rec_end(fs, addr, R_PAD, 0, 0, 0, len, 0);
}

int cfs_rec_write(cfs_t *fs, uint8_t type, uint8_t flags, uint32_t ino,
                 uint32_t idx, const void *p1, uint32_t n1, const void *p2,
                 uint32_t n2, uint32_t *addr)
{
    int err = CFS_ERR_IO;
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t a, crc = 0;
        err = cfs_rec_begin(fs, n1 + n2, &a);
        if (err)
            return err;
        err = cfs_rec_append(fs, a, 0, p1, n1, &crc);
        if (!err && n2)
            err = cfs_rec_append(fs, a, n1, p2, n2, &crc);
        if (!err)
            err = cfs_rec_end(fs, a, type, flags, ino, idx, n1 + n2, crc);
        if (!err) {
            *addr = a;
            return 0;
        }
        if (fs->failing_block == CFS_ADDR_NONE)
            return err; /* power loss or a device that is gone */
        /* a worn block refused the program: carry on in the next block */
        head_next_block(fs);
    }
    return CFS_ERR_NOSPC; /* no block took the record: worn out */
}

/* ---- object map --------------------------------------------------------------- */

static uint32_t key_bucket(const cfs_t *fs, uint32_t ino, uint32_t idx)
{
    if (ino == MAP_INO && (idx >> 28) == 4)
        return idx & 0x0fffffffu; /* GC marker: rewrite this bucket */
    uint32_t cl = KEY_KIND(idx) == KIND_INODE ? 0 : (KEY_KIND(idx) << 28) | (KEY_INDEX(idx) >> 3);
    uint32_t h = ino * 0x9e3779b1u ^ (cl + 0x7f4a7c15u) * 0x85ebca77u;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h % fs->nbuckets;
}

static int jfind(const cfs_t *fs, uint32_t ino, uint32_t idx)
{
    for (uint32_t i = 0; i < fs->njournal; i++)
        if (fs->journal[i].key.ino == ino && fs->journal[i].key.idx == idx)
            return (int)i;
    return -1;
}

/* The header of the map page (bucket or dir page) at a, checked. */
static int page_hdr(cfs_t *fs, uint32_t a, uint8_t type, rec_hdr_t *h)
{
    int err = cfs_rec_read_hdr(fs, a, h);
    if (err)
        return err;
    uint32_t max = type == R_DIRPAGE ? DIRPAGE_FAN * 4 : BUCKET_MAX * 12;
    return h->type != type || h->len > max ? CORRUPT_HERE : 0;
}

/* Read and verify a map page (bucket or dir page) into buf. */
static int read_page_once(cfs_t *fs, uint32_t a, uint8_t type, uint8_t *buf, uint32_t *len)
{
    rec_hdr_t h;
    int err = page_hdr(fs, a, type, &h);
    if (err)
        return err;
    err = cfs_rec_read(fs, a, 0, buf, h.len);
    if (err)
        return err;
    if (crc32_update(0, buf, h.len) != h.dcrc)
        return CORRUPT_HERE;
    *len = h.len;
    return 0;
}

static int read_page(cfs_t *fs, uint32_t a, uint8_t type, uint8_t *buf, uint32_t *len)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = read_page_once(fs, a, type, buf, len);
    return err;
}

/* A map page looked into without holding it (issue 14: no page buffer on
 * the stack): read and checked as read_page does, its payload in pieces of
 * whole bucket entries, keeping only what is asked: the word at byte
 * `word` (a dir page), or the address of key (ino, idx) (a bucket page;
 * `hit` 0 when it is not there). */
#define SCAN_PIECE ((CFS_READ_CHUNK < 48 ? 48 : CFS_READ_CHUNK) / 12 * 12)
typedef struct page_scan {
    uint32_t word;     /* dir page: byte offset of the word wanted */
    uint32_t ino, idx; /* bucket page: the key wanted */
    uint32_t found;    /* the word, or the key's address */
    int hit;
    uint32_t len;      /* payload bytes */
} page_scan_t;

static int page_scan_once(cfs_t *fs, uint32_t a, uint8_t type, page_scan_t *ps)
{
    rec_hdr_t h;
    uint8_t tmp[SCAN_PIECE];
    int err = page_hdr(fs, a, type, &h);
    if (err)
        return err;
    uint32_t crc = 0;
    ps->hit = 0;
    ps->found = CFS_ADDR_NONE;
    for (uint32_t off = 0; off < h.len;) {
        uint32_t k = h.len - off < sizeof(tmp) ? h.len - off : sizeof(tmp);
        err = cfs_rec_read(fs, a, off, tmp, k);
        if (err)
            return err;
        crc = crc32_update(crc, tmp, k);
        if (type == R_DIRPAGE) {
            if (ps->word >= off && ps->word + 4 <= off + k) {
                ps->found = le_get32(tmp + (ps->word - off));
                ps->hit = 1;
            }
        } else {
            for (uint32_t i = 0; i + 12 <= k && !ps->hit; i += 12)
                if (le_get32(tmp + i) == ps->ino && le_get32(tmp + i + 4) == ps->idx) {
                    ps->found = le_get32(tmp + i + 8);
                    ps->hit = 1;
                }
        }
        off += k;
    }
    if (crc != h.dcrc)
        return CORRUPT_HERE;
    ps->len = h.len;
    return 0;
}

static int page_scan(cfs_t *fs, uint32_t a, uint8_t type, page_scan_t *ps)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = page_scan_once(fs, a, type, ps);
    return err;
}

/* Address of bucket b's page from the checkpointed map, or NONE. */
static int bucket_addr(cfs_t *fs, uint32_t b, uint32_t *out)
{
    uint32_t d = b / DIRPAGE_FAN;
    uint32_t da = fs->dirpage_addr[d];
    *out = CFS_ADDR_NONE;
    if (da == CFS_ADDR_NONE)
        return 0;
    page_scan_t ps;
    ps.word = (b % DIRPAGE_FAN) * 4;
    int err = page_scan(fs, da, R_DIRPAGE, &ps);
    if (err)
        return err;
    if (ps.len != DIRPAGE_FAN * 4)
        return CORRUPT_HERE;
    *out = ps.found;
    return 0;
}

/* Look a key up in the checkpointed map only. */
static int map_lookup_ckpt(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t *addr, uint32_t *count)
{
    uint32_t b = key_bucket(fs, ino, idx), ba, len = 0;
    *addr = CFS_ADDR_NONE;
    if (count)
        *count = 0;
    int err = bucket_addr(fs, b, &ba);
    if (err || ba == CFS_ADDR_NONE)
        return err;
    page_scan_t ps;
    ps.ino = ino;
    ps.idx = idx;
    err = page_scan(fs, ba, R_BUCKET, &ps);
    if (err)
        return err;
    len = ps.len;
    if (count)
        *count = len / 12;
    if (ps.hit)
        *addr = ps.found;
    return 0;
}

int cfs_map_lookup(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t *addr)
{
    int j = jfind(fs, ino, idx);
    if (j >= 0 && fs->journal[j].addr != CFS_ADDR_NONE) {
        *addr = fs->journal[j].addr == CFS_ADDR_DELETED ? CFS_ADDR_NONE : fs->journal[j].addr;
        return 0;
    }
    return map_lookup_ckpt(fs, ino, idx, addr, NULL);
}

/* Set key -> addr in the journal index (room was checked by the caller).
 * addr NONE only marks the key's bucket for rewriting. */
static int jset(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t addr)
{
    int j = jfind(fs, ino, idx);
    if (j < 0) {
        if (fs->njournal >= CFS_JOURNAL_MAX)
            return CFS_ERR_NOMEM;
        j = (int)fs->njournal++;
        fs->journal[j].key.ino = ino;
        fs->journal[j].key.idx = idx;
    } else if (addr == CFS_ADDR_NONE) {
        return 0; /* a real update already dirties the bucket */
    }
    fs->journal[j].addr = addr;
    return 0;
}

/* Keys of bucket b in the map and in the journal (*count), and whether
 * (ino, idx) itself is in neither (*fresh). */
static int bucket_count(cfs_t *fs, uint32_t ino, uint32_t idx, uint32_t *count, int *fresh)
{
    uint32_t a;
    int err = map_lookup_ckpt(fs, ino, idx, &a, count);
    if (err)
        return err;
    *fresh = a == CFS_ADDR_NONE;
    uint32_t b = key_bucket(fs, ino, idx);
    for (uint32_t i = 0; i < fs->njournal; i++)
        if (fs->journal[i].addr != CFS_ADDR_NONE && fs->journal[i].addr != CFS_ADDR_DELETED &&
            key_bucket(fs, fs->journal[i].key.ino, fs->journal[i].key.idx) == b) {
            uint32_t a2;
            err = map_lookup_ckpt(fs, fs->journal[i].key.ino, fs->journal[i].key.idx, &a2, NULL);
            if (err)
                return err;
            if (a2 == CFS_ADDR_NONE)
                (*count)++;
            if (fs->journal[i].key.ino == ino && fs->journal[i].key.idx == idx)
                *fresh = 0;
        }
    return 0;
}

/* ---- commit plans ------------------------------------------------------------------
 * A commit's effect on the map and the counters is worked out before its
 * record is written, with every read it needs (the chain walk, the old and
 * new inodes). Once the record is durable the plan is applied without a
 * single read, so nothing can fail half-way: RAM never holds part of a
 * commit, nor misses a commit the flash holds (a replay after a power cut
 * would apply it, and a checkpoint of a RAM map that missed it would drop
 * it for good). */
#define PLAN_MAX CFS_JOURNAL_MAX
typedef struct plan {
    uint32_t n;
    uint32_t self;           /* 1: e[0] is the commit's own INODE record,
                                whose address is known once it is written */
    cfs_jent_t e[PLAN_MAX];   /* key -> address, first setter wins */
    int32_t files, dirs;     /* counter changes */
    int64_t live;
    uint32_t next_ino;
} plan_t; /* 1.6 KiB of stack */

static void plan_init(plan_t *p, const cfs_t *fs)
{
    p->n = 0;
    p->self = 0;
    p->files = p->dirs = 0;
    p->live = 0;
    p->next_ino = fs->next_ino;
}

/* The commit sets key (ino, idx) to addr unless an entry applied before it
 * (the inode record, then the explicit entries newest first, then the chain
 * newest first) set it already. */
static int plan_add(plan_t *p, uint32_t ino, uint32_t idx, uint32_t addr)
{
    for (uint32_t i = 0; i < p->n; i++)
        if (p->e[i].key.ino == ino && p->e[i].key.idx == idx)
            return 0;
    if (p->n >= PLAN_MAX)
        return CFS_ERR_NOMEM; /* more keys than the journal index holds */
    p->e[p->n].key.ino = ino;
    p->e[p->n].key.idx = idx;
    p->e[p->n].addr = addr;
    p->n++;
    return 0;
}

/* The keys of a pending chain, newest first. */
static int plan_chain(cfs_t *fs, plan_t *p, uint32_t chain)
{
    for (uint32_t guard = 0; chain != CFS_ADDR_NONE; guard++) {
        rec_hdr_t ch;
        uint32_t prev;
        if (guard > 4096)
            return CORRUPT_HERE;
        int err = cfs_rec_read_hdr(fs, chain, &ch);
        if (!err)
            err = cfs_chain_prev(fs, chain, &ch, &prev);
        if (!err)
            err = plan_add(p, ch.ino, ch.idx, ch.type == R_TOMB ? CFS_ADDR_DELETED : chain);
        if (err)
            return err;
        chain = prev;
    }
    return 0;
}

/* Counter changes: every inode key the commit sets, compared with the inode
 * the map holds now (self: the commit's own inode, not written yet). A
 * replay (replay 1) counts an old inode it cannot read as absent, as a
 * mount always did; a commit being made fails instead, before it writes. */
static int plan_counters(cfs_t *fs, plan_t *p, const inode_t *self, int replay)
{
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t ino = p->e[i].key.ino, addr = p->e[i].addr;
        if (KEY_KIND(p->e[i].key.idx) != KIND_INODE || ino == 0 || ino == MAP_INO)
            continue;
        inode_t old, nw = {0};
        uint32_t oa;
        int err = cfs_inode_get(fs, ino, &old, &oa);
        /* read noise must not pass for an absent inode: the counters
         * would drift for good (test_fs_corrupt's read-flip rounds) */
        for (int t = 1; replay && err == CFS_ERR_CORRUPT && t < DAMAGE_READS; t++)
            err = cfs_inode_get(fs, ino, &old, &oa);
        if (err && err != CFS_ERR_NOENT && !(replay && err == CFS_ERR_CORRUPT))
            return err;
        int had = err == 0, has = 0;
        if (i == 0 && p->self) {
            if (!self)
                return CORRUPT_HERE;
            nw = *self;
            has = 1;
        } else if (addr != CFS_ADDR_DELETED) {
            err = cfs_inode_at(fs, addr, ino, &nw);
            if (err)
                return err;
            has = 1;
        }
        if (had) {
            if (old.type == CFS_TYPE_DIR)
                p->dirs--;
            else
                p->files--;
            p->live -= (int64_t)old.size + 64;
        }
        if (has) {
            if (nw.type == CFS_TYPE_DIR)
                p->dirs++;
            else
                p->files++;
            p->live += (int64_t)nw.size + 64;
        }
        if (ino >= p->next_ino)
            p->next_ino = ino + 1;
    }
    return 0;
}

/* Would the keys the plan adds overflow a bucket at the next checkpoint?
 * NOSPC before anything is written. */
#define FRESH(k) ((fresh[(k) / 32] >> ((k) % 32)) & 1u)
static int plan_room_check(cfs_t *fs, const plan_t *p)
{
    uint32_t fresh[(PLAN_MAX + 31) / 32]; /* a bit per plan entry */
    memset(fresh, 0, sizeof(fresh));
    for (uint32_t k = 0; k < p->n; k++) {
        uint32_t ino = p->e[k].key.ino, idx = p->e[k].key.idx, count;
        int f;
        if (p->e[k].addr == CFS_ADDR_DELETED || ino == MAP_INO)
            continue;
        int err = bucket_count(fs, ino, idx, &count, &f);
        if (err)
            return err;
        if (!f)
            continue;
        fresh[k / 32] |= 1u << (k % 32);
        uint32_t b = key_bucket(fs, ino, idx);
        for (uint32_t i = 0; i < k; i++)
            if (FRESH(i) && key_bucket(fs, p->e[i].key.ino, p->e[i].key.idx) == b)
                count++;
        if (count + 1 + 2 > BUCKET_MAX)
            return CFS_ERR_NOSPC; /* that bucket is full */
    }
    return 0;
}

/* Keys of the plan the journal index does not hold yet. */
static uint32_t plan_new_keys(const cfs_t *fs, const plan_t *p)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < p->n; i++)
        if (jfind(fs, p->e[i].key.ino, p->e[i].key.idx) < 0)
            k++;
    return k;
}

/* Apply a plan: reads nothing, cannot fail (the journal index has room:
 * cfs_journal_room(p->n) before the record was written, or the same commit
 * fitted it when it was written, for a replay). self: the address of the
 * commit's own inode record. */
static void plan_apply(cfs_t *fs, const plan_t *p, uint32_t self)
{
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t a = i == 0 && p->self ? self : p->e[i].addr;
        int err = jset(fs, p->e[i].key.ino, p->e[i].key.idx, a);
        CFS_ASSERT(err == 0);
        (void)err;
    }
    fs->files = (uint32_t)((int64_t)fs->files + p->files);
    fs->dirs = (uint32_t)((int64_t)fs->dirs + p->dirs);
    fs->live = (uint64_t)((int64_t)fs->live + p->live);
    fs->next_ino = p->next_ino;
}

int cfs_journal_room(cfs_t *fs, uint32_t n)
{
    if (fs->njournal + n <= CFS_JOURNAL_MAX)
        return 0;
    int err = cfs_checkpoint(fs);
    if (err)
        return err;
    return fs->njournal + n <= CFS_JOURNAL_MAX ? 0 : CFS_ERR_NOMEM;
}

/* ---- commits ---------------------------------------------------------------------- */

/* Apply a commit record found by a replay at mount. */
static int apply_commit_in(cfs_t *fs, uint32_t rec_addr, const rec_hdr_t *h, uint8_t *pay);

int cfs_apply_commit(cfs_t *fs, uint32_t rec_addr, const rec_hdr_t *h)
{
    /* the record in the work area's chunk region (512 bytes: the largest
     * commit record, INODE_SIZE + 4 + COMMIT_MAX_ENT * COMMIT_ENT +
     * COMMIT_TAIL) */
    _Static_assert(INODE_SIZE + 4 + COMMIT_MAX_ENT * COMMIT_ENT + COMMIT_TAIL <= DIRCHUNK_MAX,
                   "a commit record fits the work area's chunk region");
    uint8_t *pay = (uint8_t *)&cfs_work_take(fs, WORK_CHUNK)->chunk;
    int err = apply_commit_in(fs, rec_addr, h, pay);
    cfs_work_give(fs, WORK_CHUNK);
    return err;
}

static int apply_commit_in(cfs_t *fs, uint32_t rec_addr, const rec_hdr_t *h, uint8_t *pay)
{
    if (h->len < COMMIT_TAIL)
        return CORRUPT_HERE;
    int err = cfs_rec_load(fs, rec_addr, h, pay, DIRCHUNK_MAX);
    if (err)
        return err;
    const uint8_t *t = pay + h->len - COMMIT_TAIL;
    uint32_t chain = le_get32(t);
    uint32_t n = le_get16(t + 4);
    if (le_get16(t + 6) != COMMIT_MAGIC || n > COMMIT_MAX_ENT ||
        COMMIT_TAIL + n * COMMIT_ENT > h->len)
        return CORRUPT_HERE;
    plan_t p; /* 1.6 KiB of stack */
    plan_init(&p, fs);
    /* the record itself, then the explicit entries, win over the chain */
    uint32_t ent_off = h->len - COMMIT_TAIL - n * COMMIT_ENT;
    inode_t self;
    if (h->type == R_INODE) {
        if (ent_off < INODE_SIZE)
            return CORRUPT_HERE;
        inode_decode(&self, pay);
        if (self.type != CFS_TYPE_FILE && self.type != CFS_TYPE_DIR)
            return CORRUPT_HERE;
        err = plan_add(&p, h->ino, 0, rec_addr);
        p.self = 1;
    }
    for (uint32_t i = n; i-- > 0 && !err;) {
        const uint8_t *e = pay + ent_off + i * COMMIT_ENT;
        err = plan_add(&p, le_get32(e), le_get32(e + 4), le_get32(e + 8));
    }
    if (!err)
        err = plan_chain(fs, &p, chain);
    if (!err)
        err = plan_counters(fs, &p, h->type == R_INODE ? &self : NULL, 1);
    if (!err && fs->njournal + plan_new_keys(fs, &p) > CFS_JOURNAL_MAX)
        err = CFS_ERR_NOMEM; /* it fitted when it was written: damage */
    if (err)
        return err;
    plan_apply(fs, &p, rec_addr);
    return 0;
}

int cfs_chain_prev(cfs_t *fs, uint32_t a, const rec_hdr_t *h, uint32_t *prev)
{
    uint32_t off;
    switch (h->type) {
    case R_PATCH:
    case R_EXTMAP: off = 4; break;
    case R_DIRCHUNK:
    case R_TOMB: off = 0; break;
    case R_INODE:
        if (!(h->flags & F_CHAIN))
            return CORRUPT_HERE;
        off = INODE_SIZE;
        break;
    default: return CORRUPT_HERE;
    }
    if (off + 4 > h->len)
        return CORRUPT_HERE;
    /* The link is taken only from a read that its checksum vouches for:
     * a segment record's fixed part carries its own check, the other
     * records are small and their payload checksum is read whole. (It
     * was read twice and compared: under heavy noise the same flip came
     * on both reads, and a remove's commit took a stale chain of an
     * earlier operation for its own - test_fs_gcfail's noise runs.) */
    uint8_t p[INODE_SIZE + 4]; /* (the longest head: a chained inode's) */
    int err;
    if (h->type == R_PATCH || h->type == R_EXTMAP)
        err = h->len < SEG_FIXED ? CORRUPT_HERE : cfs_seg_fixed_read(fs, a, p);
    else
        err = cfs_rec_load_head(fs, a, h, p, off + 4);
    if (err)
        return err;
    *prev = le_get32(p + off);
    return 0;
}

static int commit_make(cfs_t *fs, commit_t *c, uint32_t ino, const inode_t *inode,
                       uint32_t *inode_addr);

int cfs_commit(cfs_t *fs, commit_t *c, uint32_t ino, const inode_t *inode, uint32_t *inode_addr)
{
    /* in_commit: cfs_gc_run asserts it is never reached below a commit
     * (the stack budget of docs/FS.md section 8 counts on it) */
    fs->in_commit++;
    int err = commit_make(fs, c, ino, inode, inode_addr);
    fs->in_commit--;
    return err;
}

static int commit_make(cfs_t *fs, commit_t *c, uint32_t ino, const inode_t *inode,
                       uint32_t *inode_addr)
{
    uint8_t *buf; /* the record: the work area's chunk region (free here) */
    uint32_t n = 0;
    CFS_ASSERT(c->n <= CFS_COMMIT_MAX);
    /* The plan first (every read the commit needs), in the order a replay
     * applies the record: the inode, the explicit entries newest first, the
     * chain newest first. Its keys must fit the journal index and, counted
     * together, their buckets. */
    plan_t p;
    plan_init(&p, fs);
    int e = 0;
    if (inode) {
        e = plan_add(&p, ino, 0, CFS_ADDR_NONE);
        p.self = 1;
    }
    for (uint32_t i = c->n; i-- > 0 && !e;)
        e = plan_add(&p, c->ent[i].key.ino, c->ent[i].key.idx, c->ent[i].addr);
    if (!e)
        e = plan_chain(fs, &p, c->chain_tail);
    if (!e)
        e = cfs_journal_room(fs, p.n);
    if (!e)
        e = plan_room_check(fs, &p);
    if (!e)
        e = plan_counters(fs, &p, inode, 0);
    if (e)
        return e;
    buf = (uint8_t *)&cfs_work_take(fs, WORK_CHUNK)->chunk;
    if (inode) {
        inode_encode(inode, buf);
        n = INODE_SIZE;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        le_put32(buf + n, c->ent[i].key.ino);
        le_put32(buf + n + 4, c->ent[i].key.idx);
        le_put32(buf + n + 8, c->ent[i].addr);
        n += COMMIT_ENT;
    }
    le_put32(buf + n, c->chain_tail);
    le_put16(buf + n + 4, (uint16_t)c->n);
    le_put16(buf + n + 6, COMMIT_MAGIC);
    n += COMMIT_TAIL;
    uint32_t a;
    e = cfs_rec_write(fs, inode ? R_INODE : R_COMMIT, F_COMMIT, inode ? ino : 0, 0,
                     buf, n, NULL, 0, &a);
    cfs_work_give(fs, WORK_CHUNK);
    if (e)
        return e; /* no header: the commit is not there */
    /* The record is complete: a mount would replay it, so RAM holds it
     * too, whatever the sync says. */
    plan_apply(fs, &p, a);
    if (inode_addr)
        *inode_addr = a;
    if (fs->dev->sync && fs->dev->sync(fs->dev))
        return CFS_ERR_IO;
    return 0;
}

/* ---- anchors ------------------------------------------------------------------------ */

static int anchor_read_once(cfs_t *fs, uint32_t blk, uint32_t slot, uint32_t *seq,
                            uint32_t *ckpt, uint32_t *lap)
{
    uint8_t p[ANCHOR_SIZE];
    int err = fs->dev->read(fs->dev, fs->first_block + blk, slot * ANCHOR_SIZE, p, ANCHOR_SIZE);
    if (err)
        return CFS_ERR_IO;
    int erased = 1;
    for (uint32_t i = 0; i < ANCHOR_SIZE; i++)
        if (p[i] != 0xff)
            erased = 0;
    if (erased)
        return CFS_ERR_NOENT;
    *seq = le_get32(p);
    *ckpt = le_get32(p + 4);
    *lap = le_get32(p + 8);
    if (crc32_update(ANCHOR_MAGIC, p, 12) == le_get32(p + 12))
        return 0;
    if (crc32_update(BADANCHOR_MAGIC, p, 12) == le_get32(p + 12))
        return 1; /* a retired-block note: *ckpt is the block */
    return CFS_ERR_CORRUPT;
}

static int anchor_read(cfs_t *fs, uint32_t blk, uint32_t slot, uint32_t *seq,
                       uint32_t *ckpt, uint32_t *lap)
{
    int err = CFS_ERR_CORRUPT;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++)
        err = anchor_read_once(fs, blk, slot, seq, ckpt, lap);
    return err;
}

/* Move anchor_slot to the next slot that is really erased (damage may have
 * left bits cleared in slots the binary search took for free). 0 when one
 * is found in the current anchor block. */
static int anchor_find_free(cfs_t *fs)
{
    uint32_t slots = fs->bsize / ANCHOR_SIZE;
    uint8_t p[ANCHOR_SIZE];
    for (; fs->anchor_slot < slots; fs->anchor_slot++) {
        /* skipped only when every read says so: a slot skipped for read
         * noise would leave a gap that sends a mount to an older anchor */
        int erased = 0;
        for (int t = 0; t < 2 * READ_TRIES + 2 && !erased; t++) {
            if (fs->dev->read(fs->dev, fs->first_block + fs->anchor_block,
                              fs->anchor_slot * ANCHOR_SIZE, p, ANCHOR_SIZE))
                return CFS_ERR_IO;
            uint32_t i = 0;
            while (i < ANCHOR_SIZE && p[i] == 0xff)
                i++;
            erased = i == ANCHOR_SIZE;
        }
        if (erased)
            return 0;
    }
    return CFS_ERR_NOSPC;
}

/* Note a retired block in the anchor block, so a mount knows of it before
 * the next checkpoint lists it (best effort: the checkpoint does it too). */
static void anchor_note_bad(cfs_t *fs, uint32_t b)
{
    if (anchor_find_free(fs))
        return;
    uint8_t p[ANCHOR_SIZE];
    le_put32(p, fs->ckpt_seq);
    le_put32(p + 4, b);
    le_put32(p + 8, 0);
    le_put32(p + 12, crc32_update(BADANCHOR_MAGIC, p, 12));
    (void)fs->dev->prog(fs->dev, fs->first_block + fs->anchor_block,
                        fs->anchor_slot * ANCHOR_SIZE, p, ANCHOR_SIZE);
    fs->anchor_slot++;
}

static int anchor_write(cfs_t *fs, uint32_t ckpt, uint32_t lap)
{
    int found = anchor_find_free(fs);
    if (found == CFS_ERR_IO)
        return found;
    if (found) {
        uint32_t other = 1 - fs->anchor_block;
        int err = fs->dev->erase(fs->dev, fs->first_block + other);
        if (err == FLASH_ERR_POWER)
            return CFS_ERR_IO;
        if (err) {
            /* the anchors are worn out: no new state can be made durable */
            fs->rofs = 1;
            return CFS_ERR_ROFS;
        }
        fs->anchor_block = other;
        fs->anchor_slot = 0;
    }
    uint8_t p[ANCHOR_SIZE];
    le_put32(p, fs->ckpt_seq);
    le_put32(p + 4, ckpt);
    le_put32(p + 8, lap);
    le_put32(p + 12, crc32_update(ANCHOR_MAGIC, p, 12));
    int err = fs->dev->prog(fs->dev, fs->first_block + fs->anchor_block,
                            fs->anchor_slot * ANCHOR_SIZE, p, ANCHOR_SIZE);
    fs->anchor_slot++;
    if (!err && fs->dev->sync)
        err = fs->dev->sync(fs->dev);
    return err ? CFS_ERR_IO : 0;
}

/* Newest valid anchor in one block: binary search for the first erased slot
 * (slots are written in order), then step back over a torn one. */
/* Newest checkpoint anchor in one block: binary search for the first erased
 * slot (slots are written in order), then step back over retired-block notes
 * (collected into bad[], *nbad) and torn slots. */
static int anchor_scan(cfs_t *fs, uint32_t blk, uint32_t *seq, uint32_t *ckpt,
                       uint32_t *lap, uint32_t *next_slot, uint16_t *bad, uint32_t *nbad)
{
    uint32_t slots = fs->bsize / ANCHOR_SIZE, lo = 0, hi = slots;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2, s, c, l;
        int err = anchor_read(fs, blk, mid, &s, &c, &l);
        if (err == CFS_ERR_IO)
            return err;
        if (err == CFS_ERR_NOENT)
            hi = mid;
        else
            lo = mid + 1;
    }
    *next_slot = lo;
    *nbad = 0;
    for (uint32_t k = lo; k > 0; k--) {
        int r = anchor_read(fs, blk, k - 1, seq, ckpt, lap);
        if (r == 0)
            return 0;
        if (r == 1) {
            if (*nbad < CFS_BAD_MAX)
                bad[(*nbad)++] = (uint16_t)*ckpt;
            continue;
        }
        if (r == CFS_ERR_IO)
            return r;
        /* a torn slot: a cut during an anchor write (a cut during the
         * recovery from that cut leaves the next one torn too); those were
         * never durable, the newest valid anchor before them is */
    }
    return CFS_ERR_NOENT;
}

/* ---- checkpoints ---------------------------------------------------------------------- */

static void jsort_by_bucket(cfs_t *fs)
{
    for (uint32_t i = 1; i < fs->njournal; i++) {
        cfs_jent_t e = fs->journal[i];
        uint32_t be = key_bucket(fs, e.key.ino, e.key.idx);
        uint32_t j = i;
        while (j > 0 && key_bucket(fs, fs->journal[j - 1].key.ino, fs->journal[j - 1].key.idx) > be) {
            fs->journal[j] = fs->journal[j - 1];
            j--;
        }
        fs->journal[j] = e;
    }
}

/* big: the checkpoint's bucket page buffer (work area), free by now */
#define CKPT_REC_MAX (48 + CFS_DIRPAGES_MAX * 4 + CFS_BAD_MAX * 2)
_Static_assert(CKPT_REC_MAX <= CFS_PAGE, "a checkpoint record fits the work area's page");
static CFS_NOINLINE int write_checkpoint_record(cfs_t *fs, uint32_t tail, uint8_t *big,
                                                int with_journal)
{
    uint32_t n = 0;
    le_put32(big + n, fs->ckpt_seq + 1); n += 4;
    le_put32(big + n, tail); n += 4;
    le_put32(big + n, fs->next_ino); n += 4;
    le_put32(big + n, fs->files); n += 4;
    le_put32(big + n, fs->dirs); n += 4;
    le_put32(big + n, (uint32_t)fs->live); n += 4;
    le_put32(big + n, (uint32_t)(fs->live >> 32)); n += 4;
    le_put32(big + n, fs->nbuckets); n += 4;
    le_put32(big + n, fs->failing_block); n += 4;
    le_put16(big + n, (uint16_t)fs->ndirpages); n += 2;
    le_put16(big + n, (uint16_t)fs->nbad); n += 2;
    for (uint32_t i = 0; i < fs->ndirpages; i++, n += 4)
        le_put32(big + n, fs->dirpage_addr[i]);
    for (uint32_t i = 0; i < fs->nbad; i++, n += 2)
        le_put16(big + n, fs->bad[i]);
    uint32_t a;
    /* a journal checkpoint carries the journal index as its second piece:
     * {u32 ino, u32 idx, u32 addr} little-endian, the entries' layout in
     * RAM on the little-endian hosts it is written on (journal_ckpt_ok) */
    int err = cfs_rec_write(fs, R_CKPT, with_journal ? F_JOURNAL : 0, MAP_INO, CKPT_IDX, big, n,
                            with_journal ? (const void *)fs->journal : NULL,
                            with_journal ? fs->njournal * JENT_SIZE : 0, &a);
    if (err)
        return err;
    if (fs->dev->sync && fs->dev->sync(fs->dev))
        return CFS_ERR_IO;
    fs->ckpt_seq++;
    uint32_t lap = lap_of(fs, a);
    err = anchor_write(fs, a, lap);
    if (err)
        return err;
    fs->ckpt_addr = a;
    fs->journal_records = 0;
    return 0;
}

/* Blocks a checkpoint needs once `more` keys have joined the journal. */
static int checkpoint_space_for(const cfs_t *fs, uint32_t more)
{
    uint32_t keys = fs->njournal + more;
    uint32_t buckets = keys < fs->nbuckets ? keys : fs->nbuckets;
    uint32_t dps = fs->ndirpages;
    uint32_t bytes = buckets * (REC_HDR + BUCKET_MAX * 12) +
                     dps * (REC_HDR + DIRPAGE_FAN * 4) + 600;
    return (int)((bytes + fs->bsize - 1) / fs->bsize + 1);
}

static int checkpoint_space(const cfs_t *fs)
{
    return checkpoint_space_for(fs, 0);
}

static int checkpoint_with_tail(cfs_t *fs, uint32_t tail);

int cfs_checkpoint(cfs_t *fs)
{
    return checkpoint_with_tail(fs, fs->tail);
}

/* A journal checkpoint: the checkpoint record alone, carrying the journal
 * index (at most CKPT_JOURNAL_MAX keys) instead of rewriting the bucket
 * and directory pages they touch. It makes the tail and the counters
 * durable and ends the replay there for the cost of one record (about
 * 0.1-1 KiB) where a full one writes a bucket page (524 bytes) per key and
 * the directory pages: near full, each GC pass ended with a full
 * checkpoint of 3-4 blocks and a pass over live data lost that much.
 * The map pages stay those of the last full checkpoint, so it is taken
 * only while no GC pass has passed one of them (ckpt_full), no directory
 * page is marked (dirty_dirpages), and no key only marks its bucket. */
static int journal_ckpt_ok(const cfs_t *fs)
{
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1 || fs->ckpt_full || fs->dirty_dirpages ||
        fs->njournal > CKPT_JOURNAL_MAX)
        return 0; /* (a big-endian host writes full checkpoints only) */
    for (uint32_t i = 0; i < fs->njournal; i++)
        if (fs->journal[i].addr == CFS_ADDR_NONE)
            return 0;
    return 1;
}

/* A checkpoint that makes `tail` the start of the log. Its records are
 * written while fs->tail still holds the durable tail, so they never go
 * into blocks the new tail frees: until the anchor names this checkpoint,
 * the old one (and every record after its tail) must stay readable. */
static int checkpoint_with_tail(cfs_t *fs, uint32_t tail)
{
    if (fs->in_ckpt)
        return 0;
    if (!fs->in_gc && !fs->in_op && cfs_free_blocks(fs) < (uint32_t)checkpoint_space(fs) + 1) {
        int e = cfs_gc_run(fs, 0, GC_FORCED);
        if (e < 0 && e != CFS_ERR_NOSPC)
            return e;
    }
    fs->in_ckpt = 1;
    cfs_work_t *w = cfs_work_take(fs, WORK_PAGES);
    int err = 0;
    if (journal_ckpt_ok(fs)) {
        err = write_checkpoint_record(fs, tail, w->page, 1);
        cfs_work_give(fs, WORK_PAGES);
        fs->in_ckpt = 0;
        return err;
    }
    /* on failure the durable checkpoint stays the old one: so must the RAM
     * copy of its directory page addresses */
    uint32_t saved_dp[CFS_DIRPAGES_MAX];
    memcpy(saved_dp, fs->dirpage_addr, sizeof(saved_dp));
    uint64_t saved_dirty = fs->dirty_dirpages;
    jsort_by_bucket(fs);
    uint32_t i = 0;
    uint32_t cur_dp = CFS_ADDR_NONE;
    uint8_t *dp = w->dirpage; /* current dir page contents */
    uint8_t *bp = w->page;    /* current bucket page contents */
    while (i < fs->njournal || cur_dp != CFS_ADDR_NONE) {
        uint32_t b = i < fs->njournal ? key_bucket(fs, fs->journal[i].key.ino, fs->journal[i].key.idx)
                                      : CFS_ADDR_NONE;
        uint32_t d = b == CFS_ADDR_NONE ? CFS_ADDR_NONE : b / DIRPAGE_FAN;
        if (cur_dp != CFS_ADDR_NONE && d != cur_dp) {
            /* flush the dir page */
            uint32_t a;
            err = cfs_rec_write(fs, R_DIRPAGE, 0, MAP_INO, DIRPAGE_IDX | cur_dp, dp,
                               DIRPAGE_FAN * 4, NULL, 0, &a);
            if (err)
                goto out;
            fs->dirpage_addr[cur_dp] = a;
            fs->dirty_dirpages &= ~(1ull << cur_dp);
            cur_dp = CFS_ADDR_NONE;
        }
        if (b == CFS_ADDR_NONE)
            break;
        if (cur_dp == CFS_ADDR_NONE) {
            cur_dp = d;
            if (fs->dirpage_addr[d] == CFS_ADDR_NONE) {
                memset(dp, 0xff, DIRPAGE_FAN * 4);
            } else {
                uint32_t len;
                err = read_page(fs, fs->dirpage_addr[d], R_DIRPAGE, dp, &len);
                if (err)
                    goto out;
                if (len != DIRPAGE_FAN * 4) {
                    err = CFS_ERR_CORRUPT;
                    goto out;
                }
            }
        }
        /* load the bucket page */
        uint32_t ba = le_get32(dp + (b % DIRPAGE_FAN) * 4), blen = 0;
        if (ba != CFS_ADDR_NONE) {
            err = read_page(fs, ba, R_BUCKET, bp, &blen);
            if (err)
                goto out;
        }
        /* apply every journal entry of this bucket */
        for (; i < fs->njournal &&
               key_bucket(fs, fs->journal[i].key.ino, fs->journal[i].key.idx) == b; i++) {
            cfs_jent_t *e = &fs->journal[i];
            if (e->addr == CFS_ADDR_NONE)
                continue; /* bucket only marked for rewrite */
            uint32_t k;
            for (k = 0; k + 12 <= blen; k += 12)
                if (le_get32(bp + k) == e->key.ino && le_get32(bp + k + 4) == e->key.idx)
                    break;
            if (e->addr == CFS_ADDR_DELETED) {
                if (k + 12 <= blen) {
                    memmove(bp + k, bp + k + 12, blen - k - 12);
                    blen -= 12;
                }
            } else if (k + 12 <= blen) {
                le_put32(bp + k + 8, e->addr);
            } else {
                if (blen + 12 > BUCKET_MAX * 12) {
                    err = CFS_ERR_NOSPC; /* prevented by bucket_room */
                    goto out;
                }
                le_put32(bp + blen, e->key.ino);
                le_put32(bp + blen + 4, e->key.idx);
                le_put32(bp + blen + 8, e->addr);
                blen += 12;
            }
        }
        uint32_t na = CFS_ADDR_NONE;
        if (blen) {
            err = cfs_rec_write(fs, R_BUCKET, 0, MAP_INO, b, bp, blen, NULL, 0, &na);
            if (err)
                goto out;
        }
        le_put32(dp + (b % DIRPAGE_FAN) * 4, na);
    }
    /* dir pages marked by GC that no bucket change rewrote */
    for (uint32_t d = 0; d < fs->ndirpages; d++) {
        if (!(fs->dirty_dirpages & (1ull << d)) || fs->dirpage_addr[d] == CFS_ADDR_NONE)
            continue;
        uint32_t len, a;
        err = read_page(fs, fs->dirpage_addr[d], R_DIRPAGE, dp, &len);
        if (!err)
            err = cfs_rec_write(fs, R_DIRPAGE, 0, MAP_INO, DIRPAGE_IDX | d, dp, len, NULL, 0, &a);
        if (err)
            goto out;
        fs->dirpage_addr[d] = a;
    }
    fs->dirty_dirpages = 0;
    err = write_checkpoint_record(fs, tail, w->page, 0);
    if (err)
        goto out;
    fs->njournal = 0;
    fs->ckpt_full = 0;
out:
    if (err) {
        memcpy(fs->dirpage_addr, saved_dp, sizeof(saved_dp));
        fs->dirty_dirpages = saved_dirty;
    }
    cfs_work_give(fs, WORK_PAGES);
    fs->in_ckpt = 0;
    return err;
}

/* ---- garbage collection ----------------------------------------------------------------- */

/* Relocation state of one GC pass: the commit being built, the record the
 * scan is at, and how far the scan is covered by committed relocations. */
typedef struct gc_state {
    commit_t c;
    uint32_t at;   /* the record being scanned */
    uint32_t safe; /* every live record before it has its copy committed */
    int dropped;   /* a commit failed: safe stays where it is */
} gc_state_t;

/* Commit the relocations built so far. On success every record before the
 * one being scanned is safe to leave behind; on failure the relocations
 * are dropped (their copies are garbage) and safe stays where it was. */
static int gc_flush(cfs_t *fs, gc_state_t *g)
{
    int err = 0;
    if (g->c.n != 0 || g->c.chain_tail != CFS_ADDR_NONE) {
        /* a commit that fails has written nothing (cfs_commit): noise in
         * its reads is tried again, since giving up wastes the copies */
        fs->in_gc = GC_COMMITTING;
        err = cfs_commit(fs, &g->c, 0, NULL, NULL);
        for (int t = 1; t < GC_TRIES && (err == CFS_ERR_IO || err == CFS_ERR_CORRUPT); t++)
            err = cfs_commit(fs, &g->c, 0, NULL, NULL);
        fs->in_gc = 1;
    }
    g->c.n = 0;
    g->c.chain_tail = CFS_ADDR_NONE;
    if (err)
        g->dropped = 1;
    else if (!g->dropped)
        g->safe = g->at;
    return err;
}

static int gc_record(cfs_t *fs, gc_state_t *g, uint32_t a, const rec_hdr_t *h)
{
    uint32_t cur;
    int err;
    switch (h->type) {
    case R_INODE:
    case R_DIRCHUNK:
        err = cfs_map_lookup(fs, h->ino, h->idx, &cur);
        if (err)
            return err;
        if (cur != a)
            return 0;
        {
            /* copy the object (without any commit trailer), through the
             * work area's chunk region */
            uint8_t *obj = (uint8_t *)&cfs_work_take(fs, WORK_CHUNK)->chunk;
            uint32_t len = h->type == R_INODE ? INODE_SIZE : h->len;
            err = cfs_rec_load(fs, a, h, obj, DIRCHUNK_MAX);
            if (!err && h->type == R_DIRCHUNK)
                memset(obj, 0xff, 4); /* the copy is in no chain */
            uint32_t na;
            if (!err)
                err = cfs_rec_write(fs, h->type, 0, h->ino, h->idx, obj, len, NULL, 0, &na);
            cfs_work_give(fs, WORK_CHUNK);
            if (err)
                return err;
            if (g->c.n >= CFS_COMMIT_MAX) {
                err = gc_flush(fs, g);
                if (err)
                    return err;
            }
            g->c.ent[g->c.n].key.ino = h->ino;
            g->c.ent[g->c.n].key.idx = h->idx;
            g->c.ent[g->c.n].addr = na;
            g->c.n++;
        }
        return 0;
    case R_PATCH:
    case R_EXTMAP:
        err = cfs_seg_conflict(fs, h->ino, h->idx);
        if (err < 0)
            return err;
        if (err) {
            /* An open handle's uncommitted extent map of this segment points
             * at the records GC is about to move: commit it first (as an
             * automatic sync), so the move starts from its version. */
            err = gc_flush(fs, g);
            if (!err)
                err = cfs_sync_ino(fs, h->ino);
            if (err)
                return err;
        }
        err = cfs_seg_live(fs, h->ino, h->idx, a, &g->c);
        if (err < 0)
            return err;
        if (err == 0)
            return 0;
        if (g->c.n >= CFS_COMMIT_MAX) {
            err = gc_flush(fs, g);
            if (err)
                return err;
        }
        if (err == 2) {
            /* an orphan key (file removed or truncated, cleanup cut short):
             * drop it from the map */
            g->c.ent[g->c.n].key.ino = h->ino;
            g->c.ent[g->c.n].key.idx = h->idx;
            g->c.ent[g->c.n].addr = CFS_ADDR_DELETED;
            g->c.n++;
            return 0;
        }
        {
            uint32_t lo = blk_of(fs, a) * fs->bsize;
            return cfs_seg_relocate(fs, h->ino, h->idx, a, lo, lo + fs->bsize, &g->c);
        }
    case R_DIRPAGE: {
        uint32_t d = h->idx & ~DIRPAGE_IDX;
        if (d < fs->ndirpages && fs->dirpage_addr[d] == a) {
            fs->dirty_dirpages |= 1ull << d;
            fs->ckpt_full = 1;
        }
        return 0;
    }
    default:
        return 0; /* commits and checkpoints: superseded by the next one */
    }
}

/* The floor a GC pass checks before moving one more block: the checkpoint
 * it will end with, estimated from the journal as it is plus a block's
 * worth of keys, and two blocks of relocations. At most GC_FLOOR: what the
 * tiers promise is always enough; the estimate lets GC make progress with
 * less after power cuts wasted space (a worst-case checkpoint per moved block
 * would never get past a stretch of live data). */
static uint32_t gc_floor_now(const cfs_t *fs)
{
    uint32_t f = (uint32_t)checkpoint_space_for(fs, 16) + 2;
    return f < GC_FLOOR(fs) ? f : GC_FLOOR(fs);
}

int cfs_gc_run(cfs_t *fs, uint32_t blocks, int flags)
{
    /* Never below a commit being made: every commit is made inside an
     * operation or a GC pass, or by a format (of an empty partition), so
     * the checkpoint it may write never runs GC. The stack budget of the
     * device profile (make ram, NOT_BELOW) counts on it. */
    CFS_ASSERT(!fs->in_commit);
    if (fs->in_gc || fs->in_ckpt || fs->rofs)
        return 0;
    fs->in_gc = 1;
    gc_state_t g;
    g.c.n = 0;
    g.c.chain_tail = CFS_ADDR_NONE;
    g.at = g.safe = fs->tail;
    g.dropped = 0;
    uint32_t freed = 0, scanned = 0, start_free = cfs_free_blocks(fs);
    uint32_t want = blocks ? blocks : fs->gc_trigger + fs->reserve + 4;
    uint32_t new_tail = fs->tail;
    /* Records from this block on are this pass's own copies (not committed
     * yet): the pass stops before them. */
    uint32_t stop_block = blk_of(fs, fs->head);
    int err = 0;
    while (1) {
        uint32_t tb = blk_of(fs, new_tail);
        if (tb == blk_of(fs, fs->head) || tb == stop_block)
            break; /* the log is down to the head block */
        if (blocks ? freed >= blocks : cfs_free_blocks(fs) + freed >= want)
            break;
        if (scanned >= ndata(fs))
            break; /* a whole lap: nothing more to gain */
        /* never let relocation eat the last blocks: keep what a checkpoint
         * of the journal as it is needs, and a block for relocations. An
         * operation that frees space (cfs_op_begin with bytes 0) stops one
         * block above this, so GC can always run after it */
        if (cfs_free_blocks(fs) < gc_floor_now(fs))
            break;
        if (cfs_pending_in_block(fs, tb)) {
            /* Uncommitted records of an open file start here. Unless space
             * is short, stop: they stay uncommitted until their sync. When
             * it is, commit them (an automatic sync) before the tail passes
             * them. */
            if (!(flags & GC_URGENT))
                break;
            g.at = new_tail;
            err = gc_flush(fs, &g);
            if (!err)
                err = cfs_sync_block(fs, tb);
            if (err)
                goto stop;
        }
        uint32_t a = new_tail;
        while (blk_of(fs, a) == tb && a != fs->head) {
            rec_hdr_t h;
            g.at = a;
            int e = read_hdr_sure(fs, a, &h, lap_of(fs, a));
            if (e == CFS_ERR_IO) {
                err = e; /* noise: stop before this record */
                goto stop;
            }
            if (e) {
                /* erased or torn: nothing valid follows in this block */
                int w = 0;
                a = next_good(fs, tb, &w) * fs->bsize;
                break;
            }
            /* bucket pages are tracked in the journal with a marker key:
             * mark the bucket itself dirty */
            if (h.type == R_BUCKET) {
                uint32_t ba;
                e = bucket_addr(fs, h.idx, &ba);
                if (!e && ba == a) {
                    fs->ckpt_full = 1;
                    e = jset(fs, MAP_INO, 0x40000000u | h.idx, CFS_ADDR_NONE);
                }
            } else {
                e = gc_record(fs, &g, a, &h);
            }
            if (e) {
                err = e; /* stop before this record (noise, or no room) */
                goto stop;
            }
            a = addr_add(fs, a, REC_HDR + h.len, NULL);
            if (fs->njournal >= CFS_JOURNAL_MAX - CFS_COMMIT_MAX - 8) {
                g.at = a;
                err = gc_flush(fs, &g);
                if (!err)
                    err = cfs_checkpoint(fs);
                if (err)
                    goto stop;
            }
        }
        if (a == fs->head)
            break;
        /* block tb is done (the record at a starts in a later block):
         * commit its relocations, so a pass that fails later wastes at
         * most the copies of one block */
        g.at = a;
        err = gc_flush(fs, &g);
        if (err)
            goto stop;
        freed += blk_dist(fs, tb, blk_of(fs, a));
        scanned += blk_dist(fs, tb, blk_of(fs, a));
        if (fs->failing_block == tb) {
            err = retire_block(fs, tb);
            fs->failing_block = CFS_ADDR_NONE;
            if (err)
                goto stop;
        }
        new_tail = a;
    }
    g.at = new_tail;
stop:
    /* A pass that fails keeps what it did: the relocations built so far
     * are committed, and the tail moves up to the first record whose copy
     * is not (g.safe). Nothing else changes in RAM that the flash does not
     * hold: commits are applied whole or not at all (cfs_commit), and the
     * tail moves only with a durable checkpoint. */
    {
        int e = gc_flush(fs, &g);
        if (!err)
            err = e;
    }
    /* (a tail moved inside its block frees nothing, and its checkpoint
     * would cost a block or more: the copies made are committed, and the
     * records they replace are stale for the next pass) */
    if (blk_of(fs, g.safe) != blk_of(fs, fs->tail)) {
        /* the new tail becomes durable with a checkpoint: replay never has
         * to read a record the tail has passed */
        uint32_t old = fs->tail;
        int e = checkpoint_with_tail(fs, g.safe);
        /* a checkpoint that fails changes nothing durable: try again */
        for (int t = 1; t < GC_TRIES && (e == CFS_ERR_IO || e == CFS_ERR_CORRUPT); t++)
            e = checkpoint_with_tail(fs, g.safe);
        if (e) {
            if (!err)
                err = e;
        } else {
            fs->tail = g.safe;
        }
        if (!e && err) {
            /* progress despite the error: the next pass goes on from here */
            freed = blk_dist(fs, blk_of(fs, old), blk_of(fs, g.safe));
            err = 0;
        }
    }
    fs->in_gc = 0;
    if (err)
        return err;
    if (!(flags & GC_FORCED) && cfs_free_blocks(fs) <= start_free && freed == 0)
        return CFS_ERR_NOSPC;
    return (int)freed;
}

/* ---- format / mount / unmount ---------------------------------------------------------------- */

static int setup(cfs_t *fs, const cfs_config_t *cfg)
{
    if (!fs || !cfg || !cfg->dev)
        return CFS_ERR_INVAL;
    const flash_dev_t *dev = cfg->dev;
    uint32_t count = cfg->block_count ? cfg->block_count : dev->block_count - cfg->first_block;
    if (cfg->first_block >= dev->block_count || count < 16 ||
        cfg->first_block + count > dev->block_count || dev->block_size < 1024 ||
        dev->block_size > 65536 || dev->prog_size != 1 || count > 65535)
        return CFS_ERR_INVAL;
    memset(fs, 0, sizeof(*fs));
    fs->work = cfg->work;
    if (!fs->work) {
#if CFS_WORK_TLS
        static _Thread_local cfs_work_t own_work; /* host: one per thread */
        fs->work = &own_work;
#else
        return CFS_ERR_INVAL; /* the device profile: the caller's */
#endif
    }
    fs->work->busy = 0; /* needs no initialisation; no call of this thread is under way */
    fs->dev = dev;
    fs->first_block = cfg->first_block;
    fs->nblocks = count;
    fs->bsize = dev->block_size;
    fs->clock = cfg->clock;
    fs->clock_ctx = cfg->clock_ctx;
    fs->no_move_room = cfg->no_move_room ? 1 : 0;
    fs->failing_block = CFS_ADDR_NONE;
    fs->nbuckets = (count - FIRST_DATA) / 2;
    if (fs->nbuckets < 8)
        fs->nbuckets = 8;
    if (fs->nbuckets > DIRPAGE_FAN * 64)
        fs->nbuckets = DIRPAGE_FAN * 64;
    fs->ndirpages = (fs->nbuckets + DIRPAGE_FAN - 1) / DIRPAGE_FAN;
    if (fs->ndirpages > CFS_DIRPAGES_MAX)
        return CFS_ERR_INVAL; /* a partition bigger than the option serves */
    for (uint32_t i = 0; i < CFS_DIRPAGES_MAX; i++)
        fs->dirpage_addr[i] = CFS_ADDR_NONE;
    /* room kept for a checkpoint of a full journal index, and on top of it
     * for one GC pass */
    {
        uint32_t buckets = CFS_JOURNAL_MAX < fs->nbuckets ? CFS_JOURNAL_MAX : fs->nbuckets;
        uint32_t bytes = buckets * (REC_HDR + BUCKET_MAX * 12) +
                         fs->ndirpages * (REC_HDR + DIRPAGE_FAN * 4) + 600;
        fs->ckpt_blocks = (bytes + fs->bsize - 1) / fs->bsize + 1;
        /* The tiers at the top of this file: an ordinary operation may use
         * its size and a checkpoint, and must still leave what a remove
         * needs (K + 4). */
        fs->reserve = 2 * fs->ckpt_blocks + 6;
    }
    if (cfg->gc_free_blocks && cfg->gc_free_blocks < 6)
        return CFS_ERR_INVAL; /* below the documented minimum */
    /* default: 1/16 of the partition, at least 8 blocks: the headroom lets
     * one GC pass move many blocks of live (static) data per checkpoint */
    fs->gc_trigger = cfg->gc_free_blocks ? cfg->gc_free_blocks
                                         : ((count - FIRST_DATA) / 16 > 8 ? (count - FIRST_DATA) / 16 : 8);
    /* a small partition (16 blocks is the minimum) gets what fits */
    while (!cfg->gc_free_blocks && fs->gc_trigger > 2 &&
           fs->reserve + fs->gc_trigger + 4 > count - FIRST_DATA)
        fs->gc_trigger--;
    if (fs->reserve + fs->gc_trigger + 4 > count - FIRST_DATA)
        return CFS_ERR_INVAL; /* too small for its metadata reserve */
    return 0;
}

/* The root directory's commit (a frame of its own: the checkpoint after it
 * does not stack on its commit_t). */
static CFS_NOINLINE int format_root(cfs_t *fs)
{
    inode_t root = {CFS_TYPE_DIR, 0, 0, 0, 0, cfs_now(fs), cfs_now(fs)};
    commit_t c;
    c.n = 0;
    c.chain_tail = CFS_ADDR_NONE;
    return cfs_commit(fs, &c, ROOT_INO, &root, NULL);
}

int cfs_format(cfs_t *fs, const cfs_config_t *cfg)
{
    int err = setup(fs, cfg);
    if (err)
        return err;
    for (uint32_t b = 0; b < fs->nblocks; b++) {
        int e = fs->dev->erase(fs->dev, fs->first_block + b);
        if (e && b < FIRST_DATA)
            return CFS_ERR_IO; /* the anchors must work */
        if (e && retire_block(fs, b))
            return CFS_ERR_IO;
    }
    fs->laps = 1;
    fs->head = next_good(fs, FIRST_DATA - 1, NULL) * fs->bsize;
    fs->head_erased = 1;
    fs->tail = fs->head;
    fs->anchor_block = 0;
    fs->anchor_slot = 0;
    fs->next_ino = ROOT_INO + 1;
    fs->mounted = 1;
    err = format_root(fs);
    if (!err)
        err = cfs_checkpoint(fs);
    fs->mounted = 0;
    return err;
}

/* Replay the journal after the checkpoint: apply every commit record. */
static int replay(cfs_t *fs, uint32_t start, uint32_t lap)
{
    uint32_t a = start;
    uint32_t n = 0;
    fs->head = a;
    fs->laps = lap;
    /* Every record up to the head is replayed. Checkpoints (every 512
     * records when space allows) keep this short; a cap here would drop
     * commits. The bound only stops a walk over a damaged image. */
    uint32_t bound = ndata(fs) * (fs->bsize / REC_HDR + 1);
    while (n < bound) {
        rec_hdr_t h;
        int err = read_hdr_sure(fs, a, &h, lap);
        if (err == CFS_ERR_IO)
            return err; /* or noise: the end of the log is not known */
        if (err) {
            /* The head may have left the rest of this block (after a mount,
             * or a block that refused a program) and gone on at the start
             * of a following block: a record of this lap there continues
             * the log. Blocks not entered in this lap hold only records of
             * older laps, whose checksums do not match. */
            uint32_t b = blk_of(fs, a), jl = lap, found = 0;
            for (int k = 0; k < 32 && !found; k++) {
                int w = 0;
                b = next_good(fs, b, &w);
                if (w)
                    jl++;
                int e = read_hdr_lap(fs, b * fs->bsize, &h, jl);
                if (e == CFS_ERR_IO)
                    return e;
                if (e == 0)
                    found = 1;
            }
            if (!found)
                break;
            a = b * fs->bsize;
            lap = jl;
        }
        uint32_t next_lap = lap;
        uint32_t next = addr_add(fs, a, REC_HDR + h.len, &next_lap);
        /* position the head after this record so lap_of() sees it */
        fs->head = next;
        fs->laps = next_lap;
        if (h.flags & F_COMMIT) {
            /* a torn commit ends the log; noise must not (the commits
             * after it would be dropped for good by the next checkpoint) */
            err = cfs_rec_check_sure(fs, a, &h);
            if (err == CFS_ERR_CORRUPT)
                break;
            if (err)
                return err;
            /* the same commits fitted the journal index when they were
             * written (cfs_journal_room), so they fit it now */
            err = cfs_apply_commit(fs, a, &h);
            if (err)
                return err;
        }
        a = next;
        lap = next_lap;
        n++;
    }
    fs->head = a;
    fs->laps = lap;
    fs->journal_records = n;
    /* the rest of the head block may hold a torn record: start afresh in the
     * next block. An erased head block (offset 0) is erased again on use. */
    if (off_of(fs, a) != 0)
        head_next_block(fs);
    else
        fs->head_erased = 0;
    return 0;
}

/* Read and check the checkpoint record at ca (header *hp) into big, and
 * take the state it holds. */
static int ckpt_read(cfs_t *fs, uint32_t ca, const rec_hdr_t *hp, uint8_t *big)
{
    rec_hdr_t h = *hp;
    int err = CFS_ERR_CORRUPT;
    /* the fixed part (in big), then a journal checkpoint's entries (read
     * straight into the journal index) */
    uint32_t fixed = h.len, nj = 0;
    for (int t = 0; t < READ_TRIES && err == CFS_ERR_CORRUPT; t++) {
        uint32_t pa = addr_add(fs, ca, REC_HDR, NULL);
        fixed = h.len < CKPT_REC_MAX ? h.len : CKPT_REC_MAX;
        err = cfs_flash_read(fs, pa, big, fixed);
        nj = 0;
        if (!err && (h.flags & F_JOURNAL)) {
            fixed = 40 + (uint32_t)le_get16(big + 36) * 4 + (uint32_t)le_get16(big + 38) * 2;
            uint32_t n = fixed <= h.len ? (h.len - fixed) / JENT_SIZE : 0;
            if (fixed > h.len || fixed > CKPT_REC_MAX || fixed + n * JENT_SIZE != h.len) {
                err = CFS_ERR_CORRUPT; /* (or a misread count: read again) */
                continue;
            }
            if (n > CKPT_JOURNAL_MAX)
                return CFS_ERR_NOMEM; /* a build with a bigger journal index wrote it */
            nj = n;
            err = cfs_flash_read(fs, addr_add(fs, pa, fixed, NULL), fs->journal,
                                 nj * JENT_SIZE);
        }
        if (!err && crc32_update(crc32_update(0, big, fixed), fs->journal,
                                 nj * JENT_SIZE) != h.dcrc)
            err = CFS_ERR_CORRUPT;
    }
    if (err)
        return err == CFS_ERR_CORRUPT ? CORRUPT_HERE : err;
    fs->njournal = nj;
    uint32_t n = 0;
    uint32_t cseq = le_get32(big + n); n += 4;
    fs->tail = le_get32(big + n); n += 4;
    fs->next_ino = le_get32(big + n); n += 4;
    fs->files = le_get32(big + n); n += 4;
    fs->dirs = le_get32(big + n); n += 4;
    fs->live = le_get32(big + n); n += 4;
    fs->live |= (uint64_t)le_get32(big + n) << 32; n += 4;
    uint32_t nb = le_get32(big + n); n += 4;
    fs->failing_block = le_get32(big + n); n += 4;
    uint32_t ndp = le_get16(big + n); n += 2;
    fs->nbad = le_get16(big + n); n += 2;
    if (cseq != fs->ckpt_seq || nb != fs->nbuckets || ndp != fs->ndirpages ||
        fs->nbad > CFS_BAD_MAX || n + ndp * 4 + fs->nbad * 2 != fixed)
        return CORRUPT_HERE;
    for (uint32_t i = 0; i < ndp; i++, n += 4)
        fs->dirpage_addr[i] = le_get32(big + n);
    for (uint32_t i = 0; i < fs->nbad; i++, n += 2)
        fs->bad[i] = le_get16(big + n);
    return 0;
}

int cfs_mount(cfs_t *fs, const cfs_config_t *cfg)
{
    int err = setup(fs, cfg);
    if (err)
        return err;
    uint32_t seq[2] = {0, 0}, ck[2], lp[2], next[2], nb_notes[2];
    uint16_t notes[2][CFS_BAD_MAX];
    int ok[2];
    for (uint32_t b = 0; b < 2; b++) {
        err = anchor_scan(fs, b, &seq[b], &ck[b], &lp[b], &next[b], notes[b], &nb_notes[b]);
        if (err == CFS_ERR_IO)
            return err;
        ok[b] = err == 0;
    }
    if (!ok[0] && !ok[1])
        return CFS_ERR_NOTMOUNTED;
    uint32_t pick = (!ok[0] || (ok[1] && seq[1] > seq[0])) ? 1 : 0;
    fs->anchor_block = pick;
    fs->anchor_slot = next[pick];
    fs->ckpt_seq = seq[pick];
    uint32_t ca = ck[pick], cl = lp[pick];
    if (blk_of(fs, ca) < FIRST_DATA || blk_of(fs, ca) >= fs->nblocks)
        return CORRUPT_HERE;
    /* read the checkpoint (its lap is in the anchor) */
    rec_hdr_t h;
    err = read_hdr_lap(fs, ca, &h, cl);
    if (err)
        return err == CFS_ERR_IO ? err : CFS_ERR_CORRUPT;
    if (h.type != R_CKPT || h.len < 40 ||
        h.len > CKPT_REC_MAX + ((h.flags & F_JOURNAL) ? CKPT_JOURNAL_ANY * JENT_SIZE : 0))
        return CORRUPT_HERE;
    /* the record in the work area's page region (free: no checkpoint runs
     * during a mount) */
    uint8_t *big = cfs_work_take(fs, WORK_PAGES)->page;
    err = ckpt_read(fs, ca, &h, big);
    cfs_work_give(fs, WORK_PAGES);
    if (err)
        return err;
    /* blocks retired after that checkpoint, noted in the anchor block */
    for (uint32_t i = 0; i < nb_notes[pick]; i++) {
        uint32_t b = notes[pick][i];
        if (b >= FIRST_DATA && b < fs->nblocks && !is_bad(fs, b) && fs->nbad < CFS_BAD_MAX)
            fs->bad[fs->nbad++] = (uint16_t)b;
    }
    if (blk_of(fs, fs->tail) < FIRST_DATA || blk_of(fs, fs->tail) >= fs->nblocks)
        return CORRUPT_HERE;
    fs->ckpt_addr = ca;
    uint32_t jl = cl;
    uint32_t js = addr_add(fs, ca, REC_HDR + h.len, &jl);
    fs->mounted = 1;
    err = replay(fs, js, jl);
    if (err) {
        fs->mounted = 0;
        return err;
    }
    /* the root must exist */
    inode_t root;
    uint32_t ra;
    err = cfs_inode_get(fs, ROOT_INO, &root, &ra);
    if (err || root.type != CFS_TYPE_DIR) {
        fs->mounted = 0;
        return err ? err : CFS_ERR_CORRUPT;
    }
    return 0;
}

int cfs_statvfs(cfs_t *fs, cfs_statvfs_t *out)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    memset(out, 0, sizeof(*out));
    uint32_t good = ndata(fs) - fs->nbad;
    out->block_size = fs->bsize;
    out->block_count = fs->nblocks;
    out->total = (uint64_t)good * fs->bsize;
    out->free = (uint64_t)cfs_free_blocks(fs) * fs->bsize;
    out->used = out->total - out->free;
    /* live is counted from file sizes: a sparse file can claim more than
     * the log holds */
    out->live = fs->live < out->used ? fs->live : out->used;
    out->reclaimable = out->used > fs->live ? out->used - fs->live : 0;
    out->files = fs->files;
    out->dirs = fs->dirs;
    /* Every data block is erased once per lap of the head, plus once at
     * format: counts follow from the lap and the head's position. */
    uint32_t hb = blk_of(fs, fs->head);
    uint32_t entered = 0;
    for (uint32_t b = FIRST_DATA; b < fs->nblocks && b <= hb; b++)
        if (!is_bad(fs, b))
            entered++;
    if (!fs->head_erased && entered)
        entered--;
    out->erase_min = fs->laps + (entered == good ? 1 : 0);
    out->erase_max = fs->laps + (entered ? 1 : 0);
    out->erase_mean = fs->laps + (good ? (entered * 2 >= good ? 1 : 0) : 0);
    out->bad_blocks = fs->nbad;
    out->claimed = fs->live;
    out->reserve = (uint64_t)fs->reserve * fs->bsize;
    out->move_room = fs->no_move_room ? 0 : cfs_move_room(fs, fs->live, fs->files, fs->dirs);
    out->gc_threshold = fs->gc_trigger;
    return 0;
}

int cfs_set_gc_threshold(cfs_t *fs, uint32_t blocks, uint32_t *previous)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    /* the bounds of setup(): the documented minimum, and room for the
     * reserve and an operation above it */
    if (blocks < 6 || fs->reserve + blocks + 4 > ndata(fs) - fs->nbad)
        return CFS_ERR_INVAL;
    if (previous)
        *previous = fs->gc_trigger;
    fs->gc_trigger = blocks;
    return 0;
}

int cfs_gc(cfs_t *fs, uint32_t blocks)
{
    if (!fs || !fs->mounted)
        return CFS_ERR_NOTMOUNTED;
    if (fs->rofs)
        return CFS_ERR_ROFS;
    if (blocks)
        return cfs_gc_run(fs, blocks, GC_FORCED);
    /* everything there is to gain: passes while stale records remain and
     * the tail advances, up to one lap of the log; but not a lap of copies
     * for nothing: passes over twice the free space (at least 8 blocks)
     * that gained nothing end it (record headers count as stale in
     * `used - live`, so a log of small records never looks clean) */
    uint32_t start = cfs_free_blocks(fs), swept = 0;
    while (swept < ndata(fs)) {
        uint64_t used = (uint64_t)(ndata(fs) - fs->nbad - cfs_free_blocks(fs)) * fs->bsize;
        if (used <= fs->live + fs->bsize && fs->live < used)
            break;
        if (swept >= 2 * start + 8 && cfs_free_blocks(fs) <= start)
            break;
        int r = cfs_gc_run(fs, 4, GC_FORCED);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        swept += (uint32_t)r;
    }
    uint32_t end = cfs_free_blocks(fs);
    return end > start ? (int)(end - start) : 0;
}

const char *cfs_strerror(int err)
{
    switch (err) {
    case CFS_OK: return "success";
    case CFS_ERR_PERM: return "operation not permitted";
    case CFS_ERR_NOENT: return "no such file or directory";
    case CFS_ERR_IO: return "flash I/O error";
    case CFS_ERR_BADF: return "bad file handle";
    case CFS_ERR_NOMEM: return "too many open files or table full";
    case CFS_ERR_BUSY: return "resource busy";
    case CFS_ERR_EXIST: return "file exists";
    case CFS_ERR_NOTDIR: return "not a directory";
    case CFS_ERR_ISDIR: return "is a directory";
    case CFS_ERR_INVAL: return "invalid argument";
    case CFS_ERR_FBIG: return "file too large";
    case CFS_ERR_NOSPC: return "no space left on device";
    case CFS_ERR_ROFS: return "read-only filesystem (flash worn out)";
    case CFS_ERR_NAMETOOLONG: return "path too long";
    case CFS_ERR_NOTEMPTY: return "directory not empty";
    case CFS_ERR_NOTMOUNTED: return "no filesystem (not formatted or not mounted)";
    case CFS_ERR_CORRUPT: return "data corrupt (checksum mismatch)";
    default: return "unknown error";
    }
}
