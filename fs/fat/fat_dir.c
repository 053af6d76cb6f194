/* fat_dir.c - FAT directories: entries, long names (LFN) and 8.3 names with
 * ~N tails and checksums, paths, mkdir / remove / rename (fat.h). Portable
 * device code: no OS calls, no allocation, no stdio. */
#include <string.h>

#include "fat_int.h"

#define ENT_PER_SEC (FAT_SECTOR / 32u)
#define DIR_MAX_ENTRIES 65536u /* the FAT limit on a directory */
#define ATTR_LFN 0x0F
#define ATTR_VOLUME 0x08
#define ATTR_DIR 0x10

static uint32_t root_start(const fat_t *fs)
{
    return fs->bits == 32 ? fs->root_cluster : 0;
}

/* The sector of entry idx of the directory starting at `start`: 0, 1 when
 * the directory ends before it, or an error. */
static int dir_loc(fat_t *fs, uint32_t start, uint32_t idx, uint32_t *lba)
{
    if (idx >= DIR_MAX_ENTRIES)
        return 1;
    if (start == 0 && fs->bits == 16) {
        if (idx / ENT_PER_SEC >= fs->root_sectors)
            return 1;
        *lba = fs->root_lba + idx / ENT_PER_SEC;
        return 0;
    }
    if (start == 0)
        start = fs->root_cluster;
    uint32_t per = ENT_PER_SEC * fs->spc, ci = idx / per, i = 0, c = start;
    if (fs->dc_start == start && fs->dc_i <= ci) {
        i = fs->dc_i;
        c = fs->dc_c;
    }
    while (i < ci) {
        uint32_t nx;
        int err = fat_next(fs, c, &nx);
        if (err)
            return err;
        if (!nx)
            return 1;
        c = nx;
        i++;
    }
    fs->dc_start = start;
    fs->dc_i = ci;
    fs->dc_c = c;
    *lba = fat_clus_lba(fs, c) + idx % per / ENT_PER_SEC;
    return 0;
}

/* Entry idx into dbuf: 0 and *ent, 1 past the end, or an error. */
static int dir_entry(fat_t *fs, uint32_t start, uint32_t idx, uint32_t *lba,
                     uint8_t **ent)
{
    int r = dir_loc(fs, start, idx, lba);
    if (r)
        return r;
    if ((r = fat_dload(fs, *lba)) != 0)
        return r;
    *ent = fs->dbuf + idx % ENT_PER_SEC * 32u;
    return 0;
}

/* Add a zeroed cluster at the end of a directory (not FAT16's root). */
static int dir_extend(fat_t *fs, uint32_t start)
{
    if (start == 0 && fs->bits == 16)
        return FAT_ERR_NOSPC; /* the fixed root is full */
    if (start == 0)
        start = fs->root_cluster;
    uint32_t last = start, nx, nc;
    int err;
    for (uint32_t n = 0; n < fs->clusters; n++) {
        if ((err = fat_next(fs, last, &nx)) != 0)
            return err;
        if (!nx)
            break;
        last = nx;
    }
    if ((err = fat_alloc(fs, 0, &nc)) != 0)
        return err;
    if ((err = fat_zero_cluster(fs, nc)) != 0)
        return err;
    return fat_link(fs, last, nc); /* linked once it is zeroed */
}

/* ---- names ------------------------------------------------------------------------- */
static uint8_t sfn_sum(const uint8_t *n)
{
    uint8_t s = 0;
    for (int i = 0; i < 11; i++)
        s = (uint8_t)(((s & 1) << 7) + (s >> 1) + n[i]);
    return s;
}

/* UTF-16 units to UTF-8: bytes written, or -1 (invalid, or longer than
 * cap - 1). */
static int utf16_to_utf8(const uint16_t *u, uint32_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t c = u[i];
        if (c >= 0xD800 && c < 0xDC00) {
            if (i + 1 >= n || u[i + 1] < 0xDC00 || u[i + 1] >= 0xE000)
                return -1;
            c = 0x10000 + ((c - 0xD800) << 10) + (u[++i] - 0xDC00);
        } else if (c >= 0xDC00 && c < 0xE000) {
            return -1;
        }
        uint8_t b[4];
        size_t k;
        if (c < 0x80) {
            b[0] = (uint8_t)c;
            k = 1;
        } else if (c < 0x800) {
            b[0] = (uint8_t)(0xC0 | c >> 6);
            b[1] = (uint8_t)(0x80 | (c & 63));
            k = 2;
        } else if (c < 0x10000) {
            b[0] = (uint8_t)(0xE0 | c >> 12);
            b[1] = (uint8_t)(0x80 | (c >> 6 & 63));
            b[2] = (uint8_t)(0x80 | (c & 63));
            k = 3;
        } else {
            b[0] = (uint8_t)(0xF0 | c >> 18);
            b[1] = (uint8_t)(0x80 | (c >> 12 & 63));
            b[2] = (uint8_t)(0x80 | (c >> 6 & 63));
            b[3] = (uint8_t)(0x80 | (c & 63));
            k = 4;
        }
        if (o + k >= cap)
            return -1;
        memcpy(out + o, b, k);
        o += k;
    }
    out[o] = 0;
    return (int)o;
}

/* A name (n bytes of UTF-8) to UTF-16, checked against FAT's rules:
 * units, or an error. */
static int name_to_utf16(const char *name, size_t n, uint16_t *out)
{
    if (n == 0 || (n == 1 && name[0] == '.') ||
        (n == 2 && name[0] == '.' && name[1] == '.'))
        return FAT_ERR_INVAL;
    if (name[n - 1] == ' ' || name[n - 1] == '.')
        return FAT_ERR_INVAL; /* FAT drops trailing dots and spaces */
    const uint8_t *s = (const uint8_t *)name;
    uint32_t u = 0;
    for (size_t i = 0; i < n;) {
        uint32_t c = s[i], k = 1;
        if (c >= 0xF0 && c < 0xF5) {
            k = 4;
            c &= 7;
        } else if (c >= 0xE0 && c < 0xF0) {
            k = 3;
            c &= 15;
        } else if (c >= 0xC2 && c < 0xE0) {
            k = 2;
            c &= 31;
        } else if (c >= 0x80) {
            return FAT_ERR_INVAL;
        }
        if (i + k > n)
            return FAT_ERR_INVAL;
        for (uint32_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return FAT_ERR_INVAL;
            c = c << 6 | (s[i + j] & 63);
        }
        if ((k == 3 && (c < 0x800 || (c >= 0xD800 && c < 0xE000))) ||
            (k == 4 && (c < 0x10000 || c > 0x10FFFF)))
            return FAT_ERR_INVAL;
        if (c < 0x20 || (c < 0x80 && strchr("\"*/:<>?\\|", (int)c)))
            return FAT_ERR_INVAL;
        if (u + (c >= 0x10000 ? 2 : 1) > FAT_NAME_MAX)
            return FAT_ERR_NAMETOOLONG;
        if (c >= 0x10000) {
            c -= 0x10000;
            out[u++] = (uint16_t)(0xD800 + (c >> 10));
            out[u++] = (uint16_t)(0xDC00 + (c & 0x3FF));
        } else {
            out[u++] = (uint16_t)c;
        }
        i += k;
    }
    return (int)u;
}

static bool sfn_ok(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'()-@^_`{}~", c));
}

/* The displayed form of an 8.3 entry name: "README.TXT". */
static void sfn_show(const uint8_t *raw, uint8_t nt, char out[13])
{
    size_t o = 0, b = 8, x = 3;
    while (b && raw[b - 1] == ' ')
        b--;
    while (x && raw[8 + x - 1] == ' ')
        x--;
    for (size_t i = 0; i < b; i++) {
        uint8_t c = i == 0 && raw[0] == 0x05 ? 0xE5 : raw[i];
        if (c >= 0x80)
            c = '_'; /* an OEM code page byte */
        out[o++] = (char)((nt & 0x08) && c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    if (x) {
        out[o++] = '.';
        for (size_t i = 0; i < x; i++) {
            uint8_t c = raw[8 + i] >= 0x80 ? '_' : raw[8 + i];
            out[o++] = (char)((nt & 0x10) && c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
    }
    out[o] = 0;
}

/* The basis of an 8.3 name for a long name: *lossy when characters were
 * dropped or replaced, *exact when the name is its own 8.3 name. */
static void sfn_basis(const char *name, size_t n, uint8_t sfn[11], bool *lossy,
                      bool *exact)
{
    memset(sfn, ' ', 11);
    *lossy = false;
    size_t st = 0;
    while (st < n && name[st] == '.') {
        st++;
        *lossy = true;
    }
    size_t dot = n;
    for (size_t i = n; i > st; i--)
        if (name[i - 1] == '.') {
            dot = i - 1;
            break;
        }
    for (int part = 0; part < 2; part++) {
        size_t from = part ? dot + 1 : st, to = part ? n : dot;
        size_t cap = part ? 3 : 8, k = 0;
        if (part && dot == n)
            break;
        for (size_t i = from; i < to; i++) {
            uint8_t c = (uint8_t)name[i];
            if (c == ' ' || c == '.') {
                *lossy = true;
                continue;
            }
            if (c >= 0x80) {
                while (i + 1 < to && ((uint8_t)name[i + 1] & 0xC0) == 0x80)
                    i++;
                c = '_';
                *lossy = true;
            } else if (c >= 'a' && c <= 'z') {
                c = (uint8_t)(c - 32);
            } else if (!sfn_ok(c)) {
                c = '_';
                *lossy = true;
            }
            if (k == cap) {
                *lossy = true;
                break;
            }
            sfn[(part ? 8 : 0) + k++] = c;
        }
    }
    if (sfn[0] == ' ') {
        sfn[0] = '_';
        *lossy = true;
    }
    char shown[13];
    sfn_show(sfn, 0, shown);
    *exact = !*lossy && strlen(shown) == n && memcmp(shown, name, n) == 0;
}

/* ---- reading entries ----------------------------------------------------------------- */
/* The next live entry from *pos: 1 and *e, 0 at the end, or an error.
 * Long names are taken when their sequence and checksum match the 8.3
 * entry; otherwise the 8.3 name is used. "." / ".." and volume labels are
 * skipped. */
static int dir_next(fat_t *fs, uint32_t start, uint32_t *pos, fat_ent_t *e)
{
    uint8_t chk = 0, expect = 0, total = 0;
    bool lfn = false;
    uint32_t lfn_first = 0;
    for (uint32_t idx = *pos;; idx++) {
        uint32_t lba;
        uint8_t *d;
        int r = dir_entry(fs, start, idx, &lba, &d);
        if (r < 0)
            return r;
        if (r == 1 || d[0] == 0) {
            *pos = idx;
            return 0;
        }
        if (d[0] == 0xE5) {
            lfn = false;
            continue;
        }
        if ((d[11] & 0x3F) == ATTR_LFN) {
            uint8_t ord = d[0];
            if (ord & 0x40) {
                total = ord & 0x1F;
                expect = total;
                chk = d[13];
                lfn = total >= 1 && total <= 20;
                lfn_first = idx;
            }
            if (!lfn || (ord & 0x1F) != expect || d[13] != chk || !expect) {
                lfn = false;
                continue;
            }
            static const uint8_t at[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22,
                                            24, 28, 30 };
            uint32_t base = (uint32_t)(expect - 1) * 13u;
            for (int k = 0; k < 13; k++)
                if (base + k < FAT_NAME_MAX)
                    fs->lfn[base + k] = fat_rd16(d + at[k]);
            expect--;
            continue;
        }
        if (d[11] & ATTR_VOLUME) {
            lfn = false;
            continue;
        }
        if (d[0] == '.' && (d[1] == ' ' || (d[1] == '.' && d[2] == ' '))) {
            lfn = false;
            continue;
        }
        memset(e, 0, sizeof(*e));
        e->dir = start;
        e->idx = idx;
        e->lba = lba;
        e->first = idx;
        memcpy(e->raw, d, 32);
        sfn_show(d, d[12], e->st.short_name);
        int got = -1;
        if (lfn && expect == 0 && chk == sfn_sum(d)) {
            uint32_t n = 0, max = (uint32_t)total * 13u;
            if (max > FAT_NAME_MAX)
                max = FAT_NAME_MAX;
            while (n < max && fs->lfn[n] != 0)
                n++;
            got = utf16_to_utf8(fs->lfn, n, e->st.name, sizeof(e->st.name));
            if (got > 0)
                e->first = lfn_first;
        }
        if (got <= 0)
            memcpy(e->st.name, e->st.short_name, sizeof(e->st.short_name));
        e->st.attr = d[11];
        e->st.type = d[11] & ATTR_DIR ? FAT_T_DIR : FAT_T_FILE;
        e->st.cluster = fat_rd16(d + 26) |
                        (fs->bits == 32 ? (uint32_t)fat_rd16(d + 20) << 16 : 0);
        e->st.size = e->st.type == FAT_T_FILE ? fat_rd32(d + 28) : 0;
        e->st.mtime = fat_time_unix(fat_rd16(d + 24), fat_rd16(d + 22));
        e->st.ctime = fat_time_unix(fat_rd16(d + 16), fat_rd16(d + 14));
        *pos = idx + 1;
        return 1;
    }
}

static bool ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char x = a[i], y = b[i];
        if (x >= 'a' && x <= 'z')
            x = (char)(x - 32);
        if (y >= 'a' && y <= 'z')
            y = (char)(y - 32);
        if (x != y)
            return false;
    }
    return true;
}

static bool name_is(const fat_ent_t *e, const char *name, size_t n)
{
    return (strlen(e->st.name) == n && ieq(e->st.name, name, n)) ||
           (strlen(e->st.short_name) == n && ieq(e->st.short_name, name, n));
}

static int dir_find(fat_t *fs, uint32_t start, const char *name, size_t n,
                    fat_ent_t *e)
{
    uint32_t pos = 0;
    for (;;) {
        int r = dir_next(fs, start, &pos, e);
        if (r <= 0)
            return r < 0 ? r : FAT_ERR_NOENT;
        if (name_is(e, name, n))
            return 0;
    }
}

/* Is an 8.3 name taken in the directory? 1, 0 or an error. */
static int sfn_taken(fat_t *fs, uint32_t start, const uint8_t sfn[11])
{
    for (uint32_t idx = 0;; idx++) {
        uint32_t lba;
        uint8_t *d;
        int r = dir_entry(fs, start, idx, &lba, &d);
        if (r < 0)
            return r;
        if (r == 1 || d[0] == 0)
            return 0;
        if (d[0] != 0xE5 && (d[11] & 0x3F) != ATTR_LFN && memcmp(d, sfn, 11) == 0)
            return 1;
    }
}

/* ---- paths ------------------------------------------------------------------------- */
static void root_ent(fat_t *fs, fat_ent_t *e)
{
    memset(e, 0, sizeof(*e));
    e->root = 1;
    e->st.type = FAT_T_DIR;
    e->st.attr = ATTR_DIR;
    e->st.cluster = root_start(fs);
    e->st.name[0] = '/';
}

/* The entry of the first len bytes of path. */
static int lookup_n(fat_t *fs, const char *path, size_t len, fat_ent_t *e)
{
    if (!fs->mounted)
        return FAT_ERR_INVAL;
    if (len == 0 || path[0] != '/')
        return FAT_ERR_INVAL;
    root_ent(fs, e);
    uint32_t cur = root_start(fs);
    size_t i = 0;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t st = i;
        while (i < len && path[i] != '/')
            i++;
        if (i - st > FAT_NAME_MAX)
            return FAT_ERR_NAMETOOLONG;
        if (e->st.type != FAT_T_DIR)
            return FAT_ERR_NOTDIR;
        if (!e->root) {
            cur = e->st.cluster;
            if (!fat_valid_cluster(fs, cur))
                return FAT_ERR_CORRUPT; /* a directory without a cluster */
        }
        int r = dir_find(fs, cur, path + st, i - st, e);
        if (r)
            return r;
    }
    return 0;
}

int fat_lookup(fat_t *fs, const char *path, fat_ent_t *e)
{
    return lookup_n(fs, path, strlen(path), e);
}

/* The directory a new name at path goes into: its first cluster (0 for
 * FAT16's root), and the name. */
static int parent_of(fat_t *fs, const char *path, uint32_t *dir,
                     const char **name, size_t *n)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t st = len;
    while (st > 0 && path[st - 1] != '/')
        st--;
    if (st == len || st == 0)
        return FAT_ERR_INVAL; /* "/" itself, or not absolute */
    if (len - st > FAT_NAME_MAX)
        return FAT_ERR_NAMETOOLONG;
    fat_ent_t p;
    int r = lookup_n(fs, path, st, &p);
    if (r)
        return r;
    if (p.st.type != FAT_T_DIR)
        return FAT_ERR_NOTDIR;
    if (p.root)
        *dir = root_start(fs);
    else if (!fat_valid_cluster(fs, p.st.cluster))
        return FAT_ERR_CORRUPT;
    else
        *dir = p.st.cluster;
    *name = path + st;
    *n = len - st;
    return 0;
}

/* ---- writing entries --------------------------------------------------------------- */
/* Add name (n bytes) to the directory: long-name entries, then the 8.3
 * entry (tmpl with the generated name). */
static int dir_add(fat_t *fs, uint32_t start, const char *name, size_t n,
                   const uint8_t tmpl[32], fat_ent_t *out)
{
    int units = name_to_utf16(name, n, fs->lfn_w);
    if (units < 0)
        return units;
    uint8_t sfn[11];
    bool lossy, exact;
    sfn_basis(name, n, sfn, &lossy, &exact);
    int r;
    if (!exact) {
        /* a numeric tail when the basis lost something or is taken */
        bool tail = lossy;
        if (!tail && (r = sfn_taken(fs, start, sfn)) != 0) {
            if (r < 0)
                return r;
            tail = true;
        }
        if (tail) {
            uint8_t base[8];
            memcpy(base, sfn, 8);
            size_t bl = 8;
            while (bl && base[bl - 1] == ' ')
                bl--;
            uint32_t k;
            for (k = 1; k < 1000000; k++) {
                char t[8];
                size_t tl = 0;
                for (uint32_t v = k; v; v /= 10)
                    t[tl++] = (char)('0' + v % 10);
                size_t keep = bl < 7 - tl ? bl : 7 - tl;
                memset(sfn, ' ', 8);
                memcpy(sfn, base, keep);
                sfn[keep] = '~';
                for (size_t j = 0; j < tl; j++)
                    sfn[keep + 1 + j] = (uint8_t)t[tl - 1 - j];
                if ((r = sfn_taken(fs, start, sfn)) < 0)
                    return r;
                if (!r)
                    break;
            }
            if (k == 1000000)
                return FAT_ERR_EXIST;
        }
    }
    uint32_t nl = exact ? 0 : ((uint32_t)units + 12) / 13, slots = nl + 1;
    /* a run of free entries, growing the directory when there is none */
    uint32_t run = 0, at = 0;
    for (uint32_t idx = 0; run < slots; idx++) {
        uint32_t lba;
        uint8_t *d;
        r = dir_entry(fs, start, idx, &lba, &d);
        if (r < 0)
            return r;
        if (r == 1) {
            if (idx >= DIR_MAX_ENTRIES)
                return FAT_ERR_NOSPC;
            if ((r = dir_extend(fs, start)) != 0)
                return r;
            idx--;
            continue;
        }
        if (d[0] == 0 || d[0] == 0xE5) {
            if (!run)
                at = idx;
            run++;
        } else {
            run = 0;
        }
    }
    uint8_t sum = sfn_sum(sfn);
    static const uint8_t pos[13] = { 1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24,
                                     28, 30 };
    for (uint32_t i = 0; i < nl; i++) {
        uint32_t ord = nl - i, lba;
        uint8_t *d;
        if ((r = dir_entry(fs, start, at + i, &lba, &d)) != 0)
            return r < 0 ? r : FAT_ERR_CORRUPT;
        memset(d, 0, 32);
        d[0] = (uint8_t)(ord | (i == 0 ? 0x40 : 0));
        d[11] = ATTR_LFN;
        d[13] = sum;
        for (uint32_t k = 0; k < 13; k++) {
            uint32_t u = (ord - 1) * 13 + k;
            uint16_t v = u < (uint32_t)units ? fs->lfn_w[u]
                         : u == (uint32_t)units ? 0 : 0xFFFF;
            fat_wr16(d + pos[k], v);
        }
        fs->dbuf_dirty = 1;
    }
    uint32_t lba;
    uint8_t *d;
    if ((r = dir_entry(fs, start, at + nl, &lba, &d)) != 0)
        return r < 0 ? r : FAT_ERR_CORRUPT;
    memcpy(d, tmpl, 32);
    memcpy(d, sfn, 11);
    d[12] = 0;
    fs->dbuf_dirty = 1;
    if ((r = fat_flush(fs)) != 0)
        return r;
    if (out) {
        memset(out, 0, sizeof(*out));
        out->dir = start;
        out->idx = at + nl;
        out->first = at;
        out->lba = lba;
        memcpy(out->raw, tmpl, 32);
        memcpy(out->raw, sfn, 11);
        memcpy(out->st.name, name, n);
        sfn_show(sfn, 0, out->st.short_name);
        out->st.attr = tmpl[11];
        out->st.type = tmpl[11] & ATTR_DIR ? FAT_T_DIR : FAT_T_FILE;
        out->st.cluster = fat_rd16(tmpl + 26) | (uint32_t)fat_rd16(tmpl + 20) << 16;
        out->st.size = fat_rd32(tmpl + 28);
    }
    return 0;
}

/* Mark an entry and its long-name entries deleted. */
static int dir_del(fat_t *fs, const fat_ent_t *e)
{
    for (uint32_t i = e->first; i <= e->idx; i++) {
        uint32_t lba;
        uint8_t *d;
        int r = dir_entry(fs, e->dir, i, &lba, &d);
        if (r)
            return r < 0 ? r : FAT_ERR_CORRUPT;
        d[0] = 0xE5;
        fs->dbuf_dirty = 1;
    }
    return fat_dflush(fs);
}

static void make_tmpl(fat_t *fs, uint8_t t[32], uint8_t attr, uint32_t cl,
                      uint32_t size)
{
    uint16_t d, tm;
    fat_time_now(fs, &d, &tm);
    memset(t, 0, 32);
    memset(t, ' ', 11);
    t[11] = attr;
    fat_wr16(t + 14, tm);
    fat_wr16(t + 16, d);
    fat_wr16(t + 18, d);
    fat_wr16(t + 20, (uint16_t)(cl >> 16));
    fat_wr16(t + 22, tm);
    fat_wr16(t + 24, d);
    fat_wr16(t + 26, (uint16_t)cl);
    fat_wr32(t + 28, size);
}

int fat_create(fat_t *fs, const char *path, uint8_t attr, uint32_t cluster,
               uint32_t size, const uint8_t *tmpl, fat_ent_t *out)
{
    uint32_t dir;
    const char *name;
    size_t n;
    int r = parent_of(fs, path, &dir, &name, &n);
    if (r)
        return r;
    fat_ent_t *e = out;
    r = dir_find(fs, dir, name, n, e);
    if (r == 0)
        return FAT_ERR_EXIST;
    if (r != FAT_ERR_NOENT)
        return r;
    uint8_t t[32];
    if (tmpl) {
        memcpy(t, tmpl, 32);
    } else {
        make_tmpl(fs, t, attr, cluster, size);
    }
    return dir_add(fs, dir, name, n, t, out);
}

/* ---- the public directory calls ------------------------------------------------------ */
int fat_stat(fat_t *fs, const char *path, fat_stat_t *st)
{
    fat_ent_t *e = &fs->ent;
    int r = fat_lookup(fs, path, e);
    if (!r)
        *st = e->st;
    return r;
}

int fat_dir_open(fat_t *fs, const char *path, fat_dir_t *d)
{
    fat_ent_t *e = &fs->ent;
    int r = fat_lookup(fs, path, e);
    if (r)
        return r;
    if (e->st.type != FAT_T_DIR)
        return FAT_ERR_NOTDIR;
    if (!e->root && !fat_valid_cluster(fs, e->st.cluster))
        return FAT_ERR_CORRUPT;
    d->start = e->root ? root_start(fs) : e->st.cluster;
    d->next = 0;
    return 0;
}

int fat_dir_read(fat_t *fs, fat_dir_t *d, fat_stat_t *st)
{
    if (!fs->mounted)
        return FAT_ERR_INVAL;
    fat_ent_t *e = &fs->ent;
    int r = dir_next(fs, d->start, &d->next, e);
    if (r == 1)
        *st = e->st;
    return r;
}

int fat_name_check(fat_t *fs, const char *path)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    size_t st = len;
    while (st > 0 && path[st - 1] != '/')
        st--;
    if (st == len)
        return FAT_ERR_INVAL;
    if (len - st > FAT_NAME_MAX)
        return FAT_ERR_NAMETOOLONG;
    int r = name_to_utf16(path + st, len - st, fs->lfn_w);
    return r < 0 ? r : 0;
}

int fat_mkdir(fat_t *fs, const char *path)
{
    uint32_t dir, c;
    const char *name;
    size_t n;
    int r = parent_of(fs, path, &dir, &name, &n);
    if (r)
        return r;
    fat_ent_t *e = &fs->ent;
    r = dir_find(fs, dir, name, n, e);
    if (r == 0)
        return FAT_ERR_EXIST;
    if (r != FAT_ERR_NOENT)
        return r;
    if ((r = name_to_utf16(name, n, fs->lfn_w)) < 0)
        return r;
    if ((r = fat_alloc(fs, 0, &c)) != 0)
        return r;
    if ((r = fat_zero_cluster(fs, c)) != 0)
        goto fail;
    uint8_t t[32];
    if ((r = fat_dload(fs, fat_clus_lba(fs, c))) != 0)
        goto fail;
    make_tmpl(fs, t, ATTR_DIR, c, 0);
    memcpy(t, ".          ", 11);
    memcpy(fs->dbuf, t, 32);
    uint32_t up = dir == root_start(fs) ? 0 : dir; /* ".." of a root child: 0 */
    make_tmpl(fs, t, ATTR_DIR, up, 0);
    memcpy(t, "..         ", 11);
    memcpy(fs->dbuf + 32, t, 32);
    fs->dbuf_dirty = 1;
    if ((r = fat_flush(fs)) != 0)
        goto fail;
    make_tmpl(fs, t, ATTR_DIR, c, 0);
    if ((r = dir_add(fs, dir, name, n, t, e)) != 0)
        goto fail;
    return 0;
fail:
    (void)fat_free_chain(fs, c);
    (void)fat_flush(fs);
    return r;
}

static int dir_empty(fat_t *fs, uint32_t start)
{
    fat_ent_t e;
    uint32_t pos = 0;
    int r = dir_next(fs, start, &pos, &e);
    return r < 0 ? r : r ? FAT_ERR_NOTEMPTY : 0;
}

int fat_remove(fat_t *fs, const char *path, bool dir)
{
    fat_ent_t *e = &fs->ent;
    int r = fat_lookup(fs, path, e);
    if (r)
        return r;
    if (e->root)
        return FAT_ERR_BUSY;
    if (dir && e->st.type != FAT_T_DIR)
        return FAT_ERR_NOTDIR;
    if (!dir && e->st.type == FAT_T_DIR)
        return FAT_ERR_ISDIR;
    if (fat_find_open(fs, e->lba, e->idx % ENT_PER_SEC))
        return FAT_ERR_BUSY;
    uint32_t cl = e->st.cluster;
    if (dir) {
        if (!fat_valid_cluster(fs, cl))
            return FAT_ERR_CORRUPT;
        if ((r = dir_empty(fs, cl)) != 0)
            return r;
    }
    if ((r = dir_del(fs, e)) != 0)
        return r;
    if (cl && fat_valid_cluster(fs, cl) && (r = fat_free_chain(fs, cl)) != 0)
        return r;
    return fat_flush(fs);
}

/* Is directory `dir` (a first cluster) the directory `top` or inside it?
 * Walks up the ".." entries (whatever name or alias the path used). */
static int inside(fat_t *fs, uint32_t dir, uint32_t top)
{
    for (uint32_t n = 0; n < 4096; n++) {
        if (dir == top)
            return 1;
        if (dir == 0 || dir == root_start(fs) || !fat_valid_cluster(fs, dir))
            return 0;
        int r = fat_dload(fs, fat_clus_lba(fs, dir));
        if (r)
            return r;
        const uint8_t *d = fs->dbuf + 32; /* ".." */
        if (d[0] != '.' || d[1] != '.')
            return FAT_ERR_CORRUPT;
        dir = fat_rd16(d + 26) |
              (fs->bits == 32 ? (uint32_t)fat_rd16(d + 20) << 16 : 0);
    }
    return FAT_ERR_CORRUPT; /* a loop of directories */
}

static int rename_as(fat_t *fs, const char *from, const char *to,
                     bool drop_first);

int fat_rename(fat_t *fs, const char *from, const char *to)
{
    return rename_as(fs, from, to, false);
}

int fat_publish(fat_t *fs, const char *shadow, const char *to)
{
    fat_ent_t *e = &fs->ent;
    int r = fat_lookup(fs, shadow, e);
    if (r)
        return r;
    if (e->root || e->st.type != FAT_T_FILE)
        return FAT_ERR_INVAL;
    return rename_as(fs, shadow, to, true);
}

/* drop_first: a new name is added only after the old one is gone (a cut in
 * between loses the file's clusters to fsck, never two names on a chain). */
static int rename_as(fat_t *fs, const char *from, const char *to,
                     bool drop_first)
{
    fat_ent_t a, b;
    int r = fat_lookup(fs, from, &a);
    if (r)
        return r;
    if (a.root)
        return FAT_ERR_BUSY;
    if (fat_find_open(fs, a.lba, a.idx % ENT_PER_SEC))
        return FAT_ERR_BUSY;
    uint32_t dir;
    const char *name;
    size_t n;
    if ((r = parent_of(fs, to, &dir, &name, &n)) != 0)
        return r;
    bool isdir = a.st.type == FAT_T_DIR;
    if (isdir && (r = inside(fs, dir, a.st.cluster)) != 0)
        return r < 0 ? r : FAT_ERR_INVAL;
    if ((r = name_to_utf16(name, n, fs->lfn_w)) < 0)
        return r;
    r = dir_find(fs, dir, name, n, &b);
    if (r && r != FAT_ERR_NOENT)
        return r;
    if (r == 0 && b.lba == a.lba && b.idx == a.idx) {
        if (strlen(a.st.name) == n && memcmp(a.st.name, name, n) == 0)
            return 0; /* the same name */
        /* a new spelling of the same name: write it anew */
        if ((r = dir_del(fs, &a)) != 0)
            return r;
        return dir_add(fs, dir, name, n, a.raw, NULL);
    }
    if (r == 0) {
        if (b.st.type == FAT_T_DIR)
            return isdir ? FAT_ERR_EXIST : FAT_ERR_ISDIR;
        if (isdir)
            return FAT_ERR_NOTDIR;
        if (fat_find_open(fs, b.lba, b.idx % ENT_PER_SEC))
            return FAT_ERR_BUSY;
        /* replace: a's name goes first (a cut here leaves b old and a's
         * chain lost, never two names on one chain), then b's entry takes
         * a's chain in one sector write, then b's old chain is freed */
        if ((r = fat_flush(fs)) != 0 || (r = dir_del(fs, &a)) != 0)
            return r;
        if ((r = fat_dload(fs, b.lba)) != 0)
            return r;
        uint8_t *d = fs->dbuf + b.idx % ENT_PER_SEC * 32u;
        memcpy(d + 20, a.raw + 20, 2);
        memcpy(d + 22, a.raw + 22, 4);
        memcpy(d + 26, a.raw + 26, 6);
        fs->dbuf_dirty = 1;
        if ((r = fat_dflush(fs)) != 0)
            return r;
        if (b.st.cluster && fat_valid_cluster(fs, b.st.cluster) &&
            b.st.cluster != a.st.cluster &&
            (r = fat_free_chain(fs, b.st.cluster)) != 0)
            return r;
        return fat_flush(fs);
    }
    /* a new name: add it, then drop the old one (a cut in between leaves
     * both on one chain: fsck.fat repairs it); or the other way round */
    if (drop_first) {
        if ((r = dir_del(fs, &a)) != 0)
            return r;
        if ((r = dir_add(fs, dir, name, n, a.raw, NULL)) != 0) {
            /* the shadow's name is gone: give its chain back */
            (void)fat_free_chain(fs, a.st.cluster);
            (void)fat_flush(fs);
            return r;
        }
        return fat_flush(fs);
    }
    if ((r = dir_add(fs, dir, name, n, a.raw, NULL)) != 0)
        return r;
    if ((r = dir_del(fs, &a)) != 0)
        return r;
    if (isdir && dir != a.dir && fat_valid_cluster(fs, a.st.cluster)) {
        if ((r = fat_dload(fs, fat_clus_lba(fs, a.st.cluster))) != 0)
            return r;
        uint8_t *d = fs->dbuf + 32; /* ".." */
        if (d[0] == '.' && d[1] == '.') {
            uint32_t up = dir == root_start(fs) ? 0 : dir;
            fat_wr16(d + 20, (uint16_t)(up >> 16));
            fat_wr16(d + 26, (uint16_t)up);
            fs->dbuf_dirty = 1;
        }
    }
    return fat_flush(fs);
}
