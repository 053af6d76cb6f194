/* fat.c - FAT16/FAT32 with long file names over 512-byte sectors (fat.h).
 * Portable device code: no OS calls, no allocation, no stdio. The volume,
 * the FAT and the files are here; directories, names and paths are in
 * fat_dir.c (fat_int.h is what the two share). */
#include <string.h>

#include "fat_int.h"

/* ---- little-endian fields ------------------------------------------------------ */
uint16_t fat_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t fat_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
void fat_wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
void fat_wr32(uint8_t *p, uint32_t v)
{
    fat_wr16(p, (uint16_t)v);
    fat_wr16(p + 2, (uint16_t)(v >> 16));
}

/* ---- the two sector buffers ------------------------------------------------------ */
static int dev_read(fat_t *fs, uint32_t lba, void *buf)
{
    if (lba >= fs->bd->sector_count)
        return FAT_ERR_IO;
    return fs->bd->read(fs->bd, lba, buf, 1) < 0 ? FAT_ERR_IO : 0;
}

static int dev_write(fat_t *fs, uint32_t lba, const void *buf)
{
    if (lba >= fs->bd->sector_count)
        return FAT_ERR_IO;
    return fs->bd->write(fs->bd, lba, buf, 1) < 0 ? FAT_ERR_IO : 0;
}

int fat_dflush(fat_t *fs)
{
    if (!fs->dbuf_valid || !fs->dbuf_dirty)
        return 0;
    int err = dev_write(fs, fs->dbuf_lba, fs->dbuf);
    if (err) {
        fs->dbuf_valid = 0; /* what the card holds is unknown now */
        fs->dbuf_dirty = 0;
        return err;
    }
    fs->dbuf_dirty = 0;
    return 0;
}

int fat_dload(fat_t *fs, uint32_t lba)
{
    if (fs->dbuf_valid && fs->dbuf_lba == lba)
        return 0;
    int err = fat_dflush(fs);
    if (err)
        return err;
    fs->dbuf_valid = 0;
    err = dev_read(fs, lba, fs->dbuf);
    if (err)
        return err;
    fs->dbuf_lba = lba;
    fs->dbuf_valid = 1;
    return 0;
}

/* Take sector lba into dbuf as zeros (it will be overwritten whole). */
int fat_dzero(fat_t *fs, uint32_t lba)
{
    if (!(fs->dbuf_valid && fs->dbuf_lba == lba)) {
        int err = fat_dflush(fs);
        if (err)
            return err;
    }
    memset(fs->dbuf, 0, FAT_SECTOR);
    fs->dbuf_lba = lba;
    fs->dbuf_valid = 1;
    fs->dbuf_dirty = 1;
    return 0;
}

/* The FAT sector in fbuf goes to every copy. */
static int fflush_fat(fat_t *fs)
{
    if (!fs->fbuf_valid || !fs->fbuf_dirty)
        return 0;
    for (uint32_t k = 0; k < fs->nfats; k++) {
        int err = dev_write(fs, fs->fat_lba + k * fs->fat_sectors + fs->fbuf_lba,
                            fs->fbuf);
        if (err) {
            fs->fbuf_valid = 0;
            fs->fbuf_dirty = 0;
            return err;
        }
    }
    fs->fbuf_dirty = 0;
    return 0;
}

static int fload(fat_t *fs, uint32_t sec)
{
    if (fs->fbuf_valid && fs->fbuf_lba == sec)
        return 0;
    int err = fflush_fat(fs);
    if (err)
        return err;
    fs->fbuf_valid = 0;
    err = dev_read(fs, fs->fat_lba + sec, fs->fbuf);
    if (err)
        return err;
    fs->fbuf_lba = sec;
    fs->fbuf_valid = 1;
    return 0;
}

/* Data first, then the FAT: what a directory entry will point to is on the
 * card before the entry. */
int fat_flush(fat_t *fs)
{
    int err = fat_dflush(fs);
    int e2 = fflush_fat(fs);
    return err ? err : e2;
}

/* ---- the FAT ---------------------------------------------------------------------- */
static uint32_t eoc_mark(const fat_t *fs)
{
    return fs->bits == 32 ? 0x0FFFFFFFu : 0xFFFFu;
}

static bool is_eoc(const fat_t *fs, uint32_t v)
{
    return fs->bits == 32 ? v >= 0x0FFFFFF8u : v >= 0xFFF8u;
}

static int fat_get(fat_t *fs, uint32_t cl, uint32_t *val)
{
    uint32_t bpe = fs->bits / 8, off = cl * bpe;
    int err = fload(fs, off / FAT_SECTOR);
    if (err)
        return err;
    const uint8_t *p = fs->fbuf + off % FAT_SECTOR;
    *val = bpe == 4 ? fat_rd32(p) & 0x0FFFFFFFu : fat_rd16(p);
    return 0;
}

static int fat_set(fat_t *fs, uint32_t cl, uint32_t val)
{
    uint32_t bpe = fs->bits / 8, off = cl * bpe;
    int err = fload(fs, off / FAT_SECTOR);
    if (err)
        return err;
    uint8_t *p = fs->fbuf + off % FAT_SECTOR;
    if (bpe == 4)
        fat_wr32(p, (fat_rd32(p) & 0xF0000000u) | (val & 0x0FFFFFFFu));
    else
        fat_wr16(p, (uint16_t)val);
    fs->fbuf_dirty = 1;
    return 0;
}

bool fat_valid_cluster(const fat_t *fs, uint32_t cl)
{
    return cl >= 2 && cl < fs->clusters + 2;
}

/* The cluster after cl: *nx = 0 at the end of the chain. */
int fat_next(fat_t *fs, uint32_t cl, uint32_t *nx)
{
    if (!fat_valid_cluster(fs, cl))
        return FAT_ERR_CORRUPT;
    uint32_t v;
    int err = fat_get(fs, cl, &v);
    if (err)
        return err;
    if (is_eoc(fs, v)) {
        *nx = 0;
        return 0;
    }
    if (!fat_valid_cluster(fs, v))
        return FAT_ERR_CORRUPT; /* free, bad or out of range inside a chain */
    *nx = v;
    return 0;
}

uint32_t fat_clus_lba(const fat_t *fs, uint32_t cl)
{
    return fs->data_lba + (cl - 2) * fs->spc;
}

/* Take a free cluster, mark it the end of a chain, and link it after prev
 * (0 = the start of a new chain). */
int fat_alloc(fat_t *fs, uint32_t prev, uint32_t *out)
{
    if (!fs->free_count)
        return FAT_ERR_NOSPC;
    uint32_t cl = fat_valid_cluster(fs, fs->next_free) ? fs->next_free : 2;
    for (uint32_t n = 0; n < fs->clusters; n++) {
        uint32_t v;
        int err = fat_get(fs, cl, &v);
        if (err)
            return err;
        if (v == 0) {
            if ((err = fat_set(fs, cl, eoc_mark(fs))) != 0)
                return err;
            if (prev && (err = fat_set(fs, prev, cl)) != 0)
                return err;
            fs->free_count--;
            fs->next_free = cl + 1;
            fs->fsinfo_dirty = 1;
            *out = cl;
            return 0;
        }
        cl = cl + 1 < fs->clusters + 2 ? cl + 1 : 2;
    }
    fs->free_count = 0; /* the count was wrong */
    return FAT_ERR_NOSPC;
}

int fat_link(fat_t *fs, uint32_t prev, uint32_t cl)
{
    return fat_set(fs, prev, cl);
}

int fat_end_chain(fat_t *fs, uint32_t cl)
{
    return fat_set(fs, cl, eoc_mark(fs));
}

/* Free a chain from cl (0 = nothing). Bounded by the cluster count. */
int fat_free_chain(fat_t *fs, uint32_t cl)
{
    fs->dc_start = UINT32_MAX;
    for (uint32_t n = 0; cl && n < fs->clusters; n++) {
        if (!fat_valid_cluster(fs, cl))
            return FAT_ERR_CORRUPT;
        uint32_t v;
        int err = fat_get(fs, cl, &v);
        if (err)
            return err;
        if (v == 0)
            return FAT_ERR_CORRUPT; /* already free: a cross-link */
        if ((err = fat_set(fs, cl, 0)) != 0)
            return err;
        fs->free_count++;
        fs->fsinfo_dirty = 1;
        if (cl < fs->next_free)
            fs->next_free = cl;
        cl = is_eoc(fs, v) || !fat_valid_cluster(fs, v) ? 0 : v;
    }
    return 0;
}

int fat_zero_cluster(fat_t *fs, uint32_t cl)
{
    uint32_t lba = fat_clus_lba(fs, cl);
    for (uint32_t i = 0; i < fs->spc; i++) {
        int err = fat_dzero(fs, lba + i);
        if (!err)
            err = fat_dflush(fs);
        if (err)
            return err;
    }
    return 0;
}

/* ---- time ------------------------------------------------------------------------- */
void fat_time_now(fat_t *fs, uint16_t *date, uint16_t *time)
{
    uint32_t t = fs->clock ? fs->clock(fs->clock_ctx) : 0;
    if (t < 315532800u) { /* before 1980: FAT's epoch */
        *date = 0x21;
        *time = 0;
        return;
    }
    uint32_t days = t / 86400u, sod = t % 86400u;
    /* civil from days (Howard Hinnant's algorithm) */
    int64_t z = (int64_t)days + 719468;
    int64_t era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    if (m <= 2)
        y++;
    if (y > 2107)
        y = 2107;
    *date = (uint16_t)((y - 1980) << 9 | m << 5 | d);
    *time = (uint16_t)((sod / 3600) << 11 | (sod / 60 % 60) << 5 | (sod % 60) / 2);
}

uint32_t fat_time_unix(uint16_t date, uint16_t time)
{
    int64_t y = 1980 + (date >> 9), m = (date >> 5) & 15, d = date & 31;
    if (m < 1 || m > 12 || d < 1)
        return 0;
    /* days from civil */
    y -= m <= 2;
    int64_t era = y / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return (uint32_t)(days * 86400 + (time >> 11) * 3600 +
                      ((time >> 5) & 63) * 60 + (time & 31) * 2);
}

/* ---- mount ------------------------------------------------------------------------ */
static bool bpb_ok(const uint8_t *b)
{
    uint8_t spc = b[13];
    return (b[0] == 0xEB || b[0] == 0xE9) && fat_rd16(b + 11) == FAT_SECTOR &&
           spc && !(spc & (spc - 1)) && fat_rd16(b + 14) >= 1 &&
           (b[16] == 1 || b[16] == 2) && b[510] == 0x55 && b[511] == 0xAA;
}

static void copy_label(char *dst, const uint8_t *src)
{
    size_t n = 11;
    while (n && src[n - 1] == ' ')
        n--;
    memcpy(dst, src, n);
    dst[n] = 0;
    if (strcmp(dst, "NO NAME") == 0)
        dst[0] = 0;
}

int fat_mount(fat_t *fs, const fat_blk_t *bd, uint32_t (*clock)(void *),
              void *clock_ctx)
{
    memset(fs, 0, sizeof(*fs));
    fs->bd = bd;
    fs->clock = clock;
    fs->clock_ctx = clock_ctx;
    fs->dc_start = UINT32_MAX;
    if (!bd || !bd->read || !bd->write || bd->sector_count < 16)
        return FAT_ERR_NOTFAT;
    uint8_t *b = fs->dbuf; /* the boot sector, read through dbuf */
    int err = dev_read(fs, 0, b);
    if (err)
        return err;
    if (!bpb_ok(b)) {
        /* a partitioned card: the first FAT partition of the MBR */
        if (b[510] != 0x55 || b[511] != 0xAA)
            return FAT_ERR_NOTFAT;
        uint32_t base = 0;
        for (int i = 0; i < 4 && !base; i++) {
            const uint8_t *e = b + 446 + 16 * i;
            uint8_t t = e[4];
            if (t == 0x04 || t == 0x06 || t == 0x0E || t == 0x0B || t == 0x0C)
                base = fat_rd32(e + 8);
        }
        if (!base || base >= bd->sector_count)
            return FAT_ERR_NOTFAT;
        if ((err = dev_read(fs, base, b)) != 0)
            return err;
        if (!bpb_ok(b))
            return FAT_ERR_NOTFAT;
        fs->base = base;
    }
    uint32_t res = fat_rd16(b + 14), root_ents = fat_rd16(b + 17);
    uint32_t tot = fat_rd16(b + 19) ? fat_rd16(b + 19) : fat_rd32(b + 32);
    uint32_t fatsz16 = fat_rd16(b + 22);
    uint32_t fatsz = fatsz16 ? fatsz16 : fat_rd32(b + 36);
    fs->spc = b[13];
    fs->nfats = b[16];
    fs->fat_sectors = fatsz;
    fs->root_sectors = (root_ents * 32 + FAT_SECTOR - 1) / FAT_SECTOR;
    uint64_t meta = (uint64_t)res + (uint64_t)fs->nfats * fatsz + fs->root_sectors;
    if (!fatsz || meta >= tot)
        return FAT_ERR_NOTFAT;
    fs->clusters = (uint32_t)((tot - meta) / fs->spc);
    if (fatsz16 == 0 && root_ents == 0) {
        fs->bits = 32;
        if (fat_rd16(b + 42) != 0) /* FAT32 version 0.0 only */
            return FAT_ERR_NOTFAT;
    } else if (fs->clusters >= 4085 && fs->clusters < 65525) {
        fs->bits = 16;
    } else {
        return FAT_ERR_NOTFAT; /* FAT12 (floppies) is not supported */
    }
    if ((uint64_t)fs->base + tot > bd->sector_count)
        return FAT_ERR_CORRUPT; /* the volume is larger than the card */
    if ((uint64_t)fatsz * FAT_SECTOR / (fs->bits / 8) < (uint64_t)fs->clusters + 2)
        return FAT_ERR_CORRUPT; /* the FAT cannot hold every cluster */
    fs->fat_lba = fs->base + res;
    fs->root_lba = fs->fat_lba + fs->nfats * fatsz;
    fs->data_lba = fs->root_lba + fs->root_sectors;
    if (fs->bits == 32) {
        fs->root_cluster = fat_rd32(b + 44);
        if (!fat_valid_cluster(fs, fs->root_cluster))
            return FAT_ERR_CORRUPT;
        uint32_t fsi = fat_rd16(b + 48);
        if (fsi && fsi < res)
            fs->fsinfo_lba = fs->base + fsi;
        copy_label(fs->label, b + 71);
    } else {
        copy_label(fs->label, b + 43);
    }
    fs->dbuf_valid = 0;
    /* count the free clusters (FSInfo's count may be stale after a cut) */
    fs->next_free = 2;
    for (uint32_t cl = 2; cl < fs->clusters + 2; cl++) {
        uint32_t v;
        if ((err = fat_get(fs, cl, &v)) != 0)
            return err;
        if (v == 0) {
            if (!fs->free_count)
                fs->next_free = cl;
            fs->free_count++;
        }
    }
    /* FSInfo is written when it would change: keep the card's if right */
    if (fs->fsinfo_lba) {
        if ((err = fat_dload(fs, fs->fsinfo_lba)) != 0)
            return err;
        if (fat_rd32(fs->dbuf) != 0x41615252u ||
            fat_rd32(fs->dbuf + 484) != 0x61417272u)
            fs->fsinfo_lba = 0; /* not an FSInfo sector: leave it alone */
        else if (fat_rd32(fs->dbuf + 488) != fs->free_count)
            fs->fsinfo_dirty = 1;
    }
    fs->mounted = 1;
    return 0;
}

static int write_fsinfo(fat_t *fs)
{
    if (!fs->fsinfo_lba || !fs->fsinfo_dirty)
        return 0;
    int err = fat_dload(fs, fs->fsinfo_lba);
    if (err)
        return err;
    fat_wr32(fs->dbuf + 488, fs->free_count);
    fat_wr32(fs->dbuf + 492, fs->next_free);
    fs->dbuf_dirty = 1;
    if ((err = fat_dflush(fs)) != 0)
        return err;
    fs->fsinfo_dirty = 0;
    return 0;
}

int fat_sync(fat_t *fs)
{
    if (!fs || !fs->mounted)
        return FAT_ERR_INVAL;
    int err = 0;
    for (uint32_t i = 0; i < FAT_MAX_OPEN && !err; i++)
        if (fs->files[i].used && fs->files[i].dirty)
            err = fat_file_sync(fs, &fs->files[i]);
    if (!err)
        err = fat_flush(fs);
    if (!err)
        err = write_fsinfo(fs);
    if (!err && fs->bd->sync && fs->bd->sync(fs->bd) < 0)
        err = FAT_ERR_IO;
    return err;
}

int fat_unmount(fat_t *fs)
{
    if (!fs || !fs->mounted)
        return 0;
    int err = fat_sync(fs);
    memset(fs->files, 0, sizeof(fs->files));
    fs->mounted = 0;
    return err;
}

int fat_statfs(fat_t *fs, fat_statfs_t *sf)
{
    if (!fs->mounted)
        return FAT_ERR_INVAL;
    memset(sf, 0, sizeof(*sf));
    sf->fat_bits = fs->bits;
    sf->cluster_size = fs->spc * FAT_SECTOR;
    sf->clusters = fs->clusters;
    sf->free_clusters = fs->free_count;
    sf->total = (uint64_t)fs->clusters * sf->cluster_size;
    sf->free = (uint64_t)fs->free_count * sf->cluster_size;
    memcpy(sf->label, fs->label, sizeof(sf->label));
    return 0;
}

/* ---- files ------------------------------------------------------------------------ */
uint32_t fat_file_size(const fat_file_t *f) { return f->size; }

static uint32_t csize(const fat_t *fs) { return fs->spc * FAT_SECTOR; }

/* Cluster number n of the file's chain, growing it when extend. */
static int file_cluster(fat_t *fs, fat_file_t *f, uint32_t n, bool extend,
                        uint32_t *out)
{
    int err;
    if (!f->first) {
        if (!extend)
            return FAT_ERR_CORRUPT;
        if ((err = fat_alloc(fs, 0, &f->first)) != 0)
            return err;
        f->dirty = 1;
        f->ci = 0;
        f->cc = f->first;
    }
    uint32_t i = 0, c = f->first;
    if (f->cc && f->ci <= n) {
        i = f->ci;
        c = f->cc;
    }
    while (i < n) {
        uint32_t nx;
        if ((err = fat_next(fs, c, &nx)) != 0)
            return err;
        if (!nx) {
            if (!extend)
                return FAT_ERR_CORRUPT; /* the chain is shorter than the size */
            if ((err = fat_alloc(fs, c, &nx)) != 0)
                return err;
        }
        c = nx;
        i++;
    }
    f->ci = n;
    f->cc = c;
    *out = c;
    return 0;
}

/* Read or write (buf NULL on a write = zeros) len bytes at off. */
static int32_t file_rw(fat_t *fs, fat_file_t *f, uint32_t off, uint8_t *rbuf,
                       const uint8_t *wbuf, uint32_t len, bool write)
{
    uint32_t done = 0, cs = csize(fs);
    while (done < len) {
        uint32_t pos = off + done;
        uint32_t cl;
        int err = file_cluster(fs, f, pos / cs, write, &cl);
        if (err)
            return done ? (int32_t)done : err;
        uint32_t lba = fat_clus_lba(fs, cl) + pos % cs / FAT_SECTOR;
        uint32_t in = pos % FAT_SECTOR, n = FAT_SECTOR - in;
        if (n > len - done)
            n = len - done;
        if (write) {
            err = n == FAT_SECTOR ? fat_dzero(fs, lba) : fat_dload(fs, lba);
            if (err)
                return done ? (int32_t)done : err;
            if (wbuf)
                memcpy(fs->dbuf + in, wbuf + done, n);
            else
                memset(fs->dbuf + in, 0, n);
            fs->dbuf_dirty = 1;
            if (pos + n > f->size) {
                f->size = pos + n;
                f->dirty = 1;
            }
        } else {
            if ((err = fat_dload(fs, lba)) != 0)
                return done ? (int32_t)done : err;
            memcpy(rbuf + done, fs->dbuf + in, n);
        }
        done += n;
    }
    return (int32_t)done;
}

static bool file_ok(fat_t *fs, fat_file_t *f)
{
    return fs->mounted && f >= fs->files && f < fs->files + FAT_MAX_OPEN &&
           f->used;
}

int32_t fat_read(fat_t *fs, fat_file_t *f, uint32_t off, void *buf,
                 uint32_t len)
{
    if (!file_ok(fs, f))
        return FAT_ERR_BADF;
    if (off >= f->size)
        return 0;
    if (len > f->size - off)
        len = f->size - off;
    if (len > INT32_MAX)
        len = INT32_MAX;
    return file_rw(fs, f, off, buf, NULL, len, false);
}

int32_t fat_write(fat_t *fs, fat_file_t *f, uint32_t off, const void *buf,
                  uint32_t len)
{
    if (!file_ok(fs, f))
        return FAT_ERR_BADF;
    if (!f->writable)
        return FAT_ERR_BADF;
    if ((uint64_t)off + len > 0xFFFFFFFFu || len > INT32_MAX)
        return FAT_ERR_FBIG;
    if (off > f->size) { /* the gap reads as zeros */
        uint32_t gap = off - f->size;
        int32_t r = file_rw(fs, f, f->size, NULL, NULL, gap, true);
        if (r < 0)
            return r;
        if ((uint32_t)r < gap)
            return FAT_ERR_NOSPC;
    }
    return file_rw(fs, f, off, NULL, buf, len, true);
}

int fat_truncate(fat_t *fs, fat_file_t *f, uint32_t size)
{
    if (!file_ok(fs, f) || !f->writable)
        return FAT_ERR_BADF;
    if (size > f->size) {
        int32_t r = file_rw(fs, f, f->size, NULL, NULL, size - f->size, true);
        if (r < 0)
            return r;
        return (uint32_t)r < size - f->size ? FAT_ERR_NOSPC : 0;
    }
    if (size == f->size)
        return 0;
    uint32_t cs = csize(fs), keep = (size + cs - 1) / cs;
    int err;
    f->cc = 0;
    f->ci = 0;
    if (keep == 0) {
        uint32_t first = f->first;
        f->first = 0;
        f->size = 0;
        f->dirty = 1;
        /* the entry lets go of the chain before the chain is freed */
        if ((err = fat_file_sync(fs, f)) != 0)
            return err;
        return fat_free_chain(fs, first);
    }
    uint32_t last, rest;
    if ((err = file_cluster(fs, f, keep - 1, false, &last)) != 0)
        return err;
    if ((err = fat_next(fs, last, &rest)) != 0)
        return err;
    f->size = size;
    f->dirty = 1;
    if ((err = fat_file_sync(fs, f)) != 0)
        return err;
    if (rest) {
        if ((err = fat_end_chain(fs, last)) != 0)
            return err;
        if ((err = fat_free_chain(fs, rest)) != 0)
            return err;
    }
    return fat_flush(fs);
}

int fat_file_sync(fat_t *fs, fat_file_t *f)
{
    if (!file_ok(fs, f))
        return FAT_ERR_BADF;
    int err = fat_flush(fs); /* data and FAT before the entry */
    if (err || !f->dirty)
        return err;
    if ((err = fat_dload(fs, f->dirent_lba)) != 0)
        return err;
    uint8_t *e = fs->dbuf + f->dirent_idx * 32u;
    uint16_t d, t;
    fat_time_now(fs, &d, &t);
    fat_wr16(e + 20, (uint16_t)(f->first >> 16));
    fat_wr16(e + 26, (uint16_t)f->first);
    fat_wr32(e + 28, f->size);
    fat_wr16(e + 22, t);
    fat_wr16(e + 24, d);
    fat_wr16(e + 18, d);
    e[11] |= 0x20; /* archive */
    fs->dbuf_dirty = 1;
    if ((err = fat_dflush(fs)) != 0)
        return err;
    f->dirty = 0;
    return 0;
}

int fat_close(fat_t *fs, fat_file_t *f)
{
    if (!file_ok(fs, f))
        return FAT_ERR_BADF;
    int err = f->writable ? fat_file_sync(fs, f) : 0;
    if (!err && f->writable)
        err = write_fsinfo(fs);
    if (!err && f->writable && fs->bd->sync && fs->bd->sync(fs->bd) < 0)
        err = FAT_ERR_IO;
    memset(f, 0, sizeof(*f));
    return err;
}

fat_file_t *fat_find_open(fat_t *fs, uint32_t lba, uint32_t idx)
{
    for (uint32_t i = 0; i < FAT_MAX_OPEN; i++)
        if (fs->files[i].used && fs->files[i].dirent_lba == lba &&
            fs->files[i].dirent_idx == idx)
            return &fs->files[i];
    return NULL;
}

int fat_open(fat_t *fs, const char *path, uint32_t flags, fat_file_t **out)
{
    if (!fs->mounted)
        return FAT_ERR_INVAL;
    bool wr = flags & (FAT_O_WRITE | FAT_O_TRUNC);
    fat_file_t *f = NULL;
    for (uint32_t i = 0; i < FAT_MAX_OPEN && !f; i++)
        if (!fs->files[i].used)
            f = &fs->files[i];
    if (!f)
        return FAT_ERR_NOMEM;
    fat_ent_t *e = &fs->ent;
    int err = fat_lookup(fs, path, e);
    if (err == FAT_ERR_NOENT && (flags & FAT_O_CREATE)) {
        if ((err = fat_create(fs, path, 0x20, 0, 0, NULL, e)) != 0)
            return err;
    } else if (err) {
        return err;
    } else if (flags & FAT_O_EXCL && flags & FAT_O_CREATE) {
        return FAT_ERR_EXIST;
    }
    if (e->root || e->st.type == FAT_T_DIR)
        return FAT_ERR_ISDIR;
    fat_file_t *other = fat_find_open(fs, e->lba, (uint16_t)(e->idx % 16));
    if (other && (wr || other->writable))
        return FAT_ERR_BUSY; /* one writer, or readers: never both */
    memset(f, 0, sizeof(*f));
    f->used = 1;
    f->writable = wr;
    f->dirent_lba = e->lba;
    f->dirent_idx = (uint16_t)(e->idx % 16);
    f->first = e->st.cluster;
    f->size = e->st.size;
    if (f->first && !fat_valid_cluster(fs, f->first)) {
        memset(f, 0, sizeof(*f));
        return FAT_ERR_CORRUPT;
    }
    if (wr && (flags & FAT_O_TRUNC) && (f->size || f->first)) {
        if ((err = fat_truncate(fs, f, 0)) != 0) {
            memset(f, 0, sizeof(*f));
            return err;
        }
    }
    *out = f;
    return 0;
}
