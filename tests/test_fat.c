/*
 * test_fat.c - the FAT module (fs/fat/fat.h) on cards made by mkfs.fat
 * (dosfstools), checked by fsck.fat -n and read back by mtools (mdir, mcopy).
 *
 * The card is a RAM copy of an image file: a sector device that counts
 * writes and can cut the power at the Nth one. Covered: FAT16 and FAT32,
 * long names (Unicode, spaces, case, ~N tails past 9), deep directories,
 * big files across many clusters, holes, truncate, rename (move, replace),
 * remove, rmdir, a full card, a corrupt FAT chain, non-FAT images (zeros,
 * garbage, FAT12, a broken boot sector), a card with an MBR partition
 * table, 300 cards with random damage in their FAT and directories, files
 * written by mcopy read here, and the power-cut sweep whose results
 * docs/FAT.md reports.
 *
 *   test_fat            everything (a few seconds)
 *   test_fat --keep     leave the images in $TMPDIR/cellar-fat-<pid>
 *   test_fat --verbose  also print what fsck.fat -n found after each cut
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fat/fat.h"

/* ---- a RAM card ---------------------------------------------------------------- */
typedef struct card {
    uint8_t *mem;
    uint32_t sectors;
    uint64_t writes;     /* sector writes so far */
    uint64_t cut_at;     /* writes allowed before the power goes; 0 = never */
    int dead;
} card_t;

static int card_read(const fat_blk_t *bd, uint32_t lba, void *buf, uint32_t n)
{
    card_t *c = bd->context;
    if ((uint64_t)lba + n > c->sectors)
        return -5;
    memcpy(buf, c->mem + (size_t)lba * 512, (size_t)n * 512);
    return 0;
}

static int card_write(const fat_blk_t *bd, uint32_t lba, const void *buf,
                      uint32_t n)
{
    card_t *c = bd->context;
    if ((uint64_t)lba + n > c->sectors)
        return -5;
    for (uint32_t i = 0; i < n; i++) {
        if (c->dead || (c->cut_at && c->writes >= c->cut_at)) {
            c->dead = 1;
            return -5;
        }
        memcpy(c->mem + (size_t)(lba + i) * 512, (const uint8_t *)buf + i * 512,
               512);
        c->writes++;
    }
    return 0;
}

static char dir_[256];
static int verbose_;
static uint32_t now_ = 1796601600u; /* 2026-12-07 */
static uint32_t clock_(void *ctx) { (void)ctx; return now_; }

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void card_load(card_t *c, const char *path, fat_blk_t *bd)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f)
        exit(1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    memset(c, 0, sizeof(*c));
    c->sectors = (uint32_t)(n / 512);
    c->mem = malloc((size_t)n);
    if (fread(c->mem, 1, (size_t)n, f) != (size_t)n)
        exit(1);
    fclose(f);
    *bd = (fat_blk_t){ c, card_read, card_write, NULL, c->sectors };
}

static void card_save(const card_t *c, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(c->mem, 512, c->sectors, f) != c->sectors)
        exit(1);
    fclose(f);
}

static char *img(const char *name)
{
    static char p[8][512];
    static int k;
    char *s = p[k++ % 8];
    snprintf(s, 512, "%s/%s", dir_, name);
    return s;
}

static void mkfs(const char *path, int bits, unsigned kb, int spc)
{
    char cmd[1024];
    unlink(path);
    snprintf(cmd, sizeof(cmd), "mkfs.fat -F %d %s%d -n CELLARSD -C '%s' %u >/dev/null 2>&1",
             bits, spc ? "-s " : "", spc ? spc : 0, path, kb);
    if (!spc)
        snprintf(cmd, sizeof(cmd), "mkfs.fat -F %d -n CELLARSD -C '%s' %u >/dev/null 2>&1",
                 bits, path, kb);
    int r = run(cmd);
    CHECK_EQ(r, 0);
}

static int fsck(const char *path)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "fsck.fat -n '%s' >'%s.fsck' 2>&1", path, path);
    return run(cmd);
}

/* A deterministic pattern, different per seed. */
static void fill(uint8_t *b, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (uint8_t)(x >> 16);
    }
}

static int put(fat_t *fs, const char *path, const uint8_t *data, size_t n,
               size_t chunk)
{
    fat_file_t *f;
    int r = fat_open(fs, path, FAT_O_WRITE | FAT_O_CREATE | FAT_O_TRUNC, &f);
    if (r)
        return r;
    for (size_t o = 0; o < n; o += chunk) {
        size_t k = n - o < chunk ? n - o : chunk;
        int32_t w = fat_write(fs, f, (uint32_t)o, data + o, (uint32_t)k);
        if (w != (int32_t)k) {
            fat_close(fs, f);
            return w < 0 ? w : FAT_ERR_NOSPC;
        }
    }
    return fat_close(fs, f);
}

/* 1 when path holds exactly data[0..n). */
static int same(fat_t *fs, const char *path, const uint8_t *data, size_t n)
{
    fat_file_t *f;
    if (fat_open(fs, path, FAT_O_READ, &f))
        return 0;
    int ok = fat_file_size(f) == n;
    uint8_t buf[4096];
    for (size_t o = 0; ok && o < n; o += sizeof(buf)) {
        size_t k = n - o < sizeof(buf) ? n - o : sizeof(buf);
        ok = fat_read(fs, f, (uint32_t)o, buf, (uint32_t)k) == (int32_t)k &&
             memcmp(buf, data + o, k) == 0;
    }
    fat_close(fs, f);
    return ok;
}

/* mcopy the card's path out and compare with data. */
static int mtools_same(const char *image, const char *path, const uint8_t *data,
                       size_t n)
{
    char out[600], cmd[2048];
    snprintf(out, sizeof(out), "%s/mcopy.out", dir_);
    unlink(out);
    snprintf(cmd, sizeof(cmd), "MTOOLS_SKIP_CHECK=1 mcopy -n -i '%s' '::%s' '%s' 2>/dev/null",
             image, path, out);
    if (run(cmd) != 0)
        return 0;
    FILE *f = fopen(out, "rb");
    if (!f)
        return 0;
    uint8_t *b = malloc(n + 1);
    size_t got = fread(b, 1, n + 1, f);
    fclose(f);
    int ok = got == n && memcmp(b, data, n) == 0;
    free(b);
    return ok;
}

/* ---- the main scenario, on FAT16 and FAT32 ---------------------------------------- */
static const char *names[] = {
    "/Long File Name with spaces.txt",
    "/readme.txt",
    "/README2.TXT",
    "/a.b.c.d",
    "/\xc3\xbcn\xc3\xaf\x63\xc3\xb6\x64\xc3\xa9 \xe2\x9c\x93.dat", /* ünïcödé ✓ */
    "/.hidden",
    "/x",
};

static void scenario(int bits)
{
    char name[32];
    snprintf(name, sizeof(name), "fat%d.img", bits);
    const char *image = img(name);
    if (bits == 16)
        mkfs(image, 16, 32 * 1024, 0);
    else
        mkfs(image, 32, 80 * 1024, 1);
    card_t c;
    fat_blk_t bd;
    fat_t fs;
    card_load(&c, image, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK_EQ(fs.bits, bits);
    fat_statfs_t sf;
    CHECK_EQ(fat_statfs(&fs, &sf), 0);
    CHECK(strcmp(sf.label, "CELLARSD") == 0);
    uint32_t free0 = sf.free_clusters;

    /* long names */
    uint8_t small[3000];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        fill(small, sizeof(small), (uint32_t)i);
        CHECK_EQ(put(&fs, names[i], small, 100 + i * 400, 333), 0);
    }
    fat_stat_t st;
    CHECK_EQ(fat_stat(&fs, "/LONG FILE NAME WITH SPACES.TXT", &st), 0); /* case */
    CHECK(strcmp(st.name, "Long File Name with spaces.txt") == 0);
    CHECK(strcmp(st.short_name, "LONGFI~1.TXT") == 0);
    CHECK_EQ(fat_stat(&fs, "/LONGFI~1.TXT", &st), 0); /* by its 8.3 name */
    CHECK_EQ(fat_stat(&fs, "/README2.TXT", &st), 0);
    CHECK(strcmp(st.short_name, "README2.TXT") == 0);
    CHECK_EQ(fat_stat(&fs, "/readme.txt", &st), 0);
    CHECK(strcmp(st.name, "readme.txt") == 0);
    CHECK_EQ(fat_open(&fs, "/bad:name", FAT_O_WRITE | FAT_O_CREATE, &(fat_file_t *){0}),
             FAT_ERR_INVAL);
    CHECK_EQ(fat_open(&fs, "/trailing.", FAT_O_WRITE | FAT_O_CREATE, &(fat_file_t *){0}),
             FAT_ERR_INVAL);
    CHECK_EQ(fat_open(&fs, "/readme.txt", FAT_O_WRITE | FAT_O_CREATE | FAT_O_EXCL,
                      &(fat_file_t *){0}), FAT_ERR_EXIST);
    char longn[300] = "/";
    memset(longn + 1, 'n', 256);
    longn[257] = 0;
    CHECK_EQ(fat_mkdir(&fs, longn), FAT_ERR_NAMETOOLONG);
    longn[256] = 0; /* 255 characters: the limit */
    CHECK_EQ(fat_mkdir(&fs, longn), 0);

    /* many names in one directory: ~N tails past 9, the directory grows */
    CHECK_EQ(fat_mkdir(&fs, "/many"), 0);
    for (int i = 0; i < 150; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/many/longfilename_%03d.txt", i);
        CHECK_EQ(put(&fs, p, (const uint8_t *)p, strlen(p), 64), 0);
    }
    CHECK_EQ(fat_stat(&fs, "/many/longfilename_149.txt", &st), 0);
    CHECK(strchr(st.short_name, '~') != NULL);
    fat_dir_t d;
    int n = 0, r;
    CHECK_EQ(fat_dir_open(&fs, "/many", &d), 0);
    while ((r = fat_dir_read(&fs, &d, &st)) == 1)
        n++;
    CHECK_EQ(r, 0);
    CHECK_EQ(n, 150);

    /* deep directories */
    char deep[256] = "";
    for (int i = 0; i < 12; i++) {
        size_t l = strlen(deep);
        snprintf(deep + l, sizeof(deep) - l, "/level %d dir", i);
        CHECK_EQ(fat_mkdir(&fs, deep), 0);
    }
    char deepf[300];
    snprintf(deepf, sizeof(deepf), "%s/deep file.bin", deep);
    CHECK_EQ(put(&fs, deepf, small, sizeof(small), 1000), 0);
    CHECK_EQ(fat_mkdir(&fs, "/level 0 dir"), FAT_ERR_EXIST);
    CHECK_EQ(fat_remove(&fs, "/level 0 dir", true), FAT_ERR_NOTEMPTY);
    CHECK_EQ(fat_mkdir(&fs, "/nope/a"), FAT_ERR_NOENT);
    CHECK_EQ(fat_mkdir(&fs, "/readme.txt/a"), FAT_ERR_NOTDIR);

    /* a big file across many clusters, odd chunks */
    size_t big = 3u * 1024 * 1024 + 777;
    uint8_t *bigd = malloc(big);
    fill(bigd, big, 99);
    CHECK_EQ(put(&fs, "/big file.bin", bigd, big, 7001), 0);
    CHECK(same(&fs, "/big file.bin", bigd, big));

    /* holes, truncate */
    fat_file_t *f;
    CHECK_EQ(fat_open(&fs, "/holes", FAT_O_WRITE | FAT_O_CREATE, &f), 0);
    CHECK_EQ(fat_write(&fs, f, 70000, "end", 3), 3);
    CHECK_EQ(fat_file_size(f), 70003);
    uint8_t z[100];
    CHECK_EQ(fat_read(&fs, f, 30000, z, 100), 100);
    int zeros = 1;
    for (int i = 0; i < 100; i++)
        zeros &= z[i] == 0;
    CHECK(zeros);
    CHECK_EQ(fat_truncate(&fs, f, 5000), 0);
    CHECK_EQ(fat_file_size(f), 5000);
    CHECK_EQ(fat_truncate(&fs, f, 9000), 0);
    CHECK_EQ(fat_close(&fs, f), 0);
    CHECK_EQ(fat_stat(&fs, "/holes", &st), 0);
    CHECK_EQ(st.size, 9000);

    /* rename: move, replace, a directory under itself */
    CHECK_EQ(fat_rename(&fs, "/x", "/many/moved x"), 0);
    CHECK_EQ(fat_stat(&fs, "/x", &st), FAT_ERR_NOENT);
    fill(small, sizeof(small), 6);
    CHECK(same(&fs, "/many/moved x", small, 100 + 6 * 400));
    CHECK_EQ(fat_rename(&fs, "/a.b.c.d", "/readme.txt"), 0); /* replace */
    fill(small, sizeof(small), 3);
    CHECK(same(&fs, "/readme.txt", small, 100 + 3 * 400));
    CHECK_EQ(fat_rename(&fs, "/level 0 dir", "/level 0 dir/level 1 dir/x"), FAT_ERR_INVAL);
    CHECK_EQ(fat_rename(&fs, "/level 0 dir", "/LEVEL0~1/LEVEL 1 DIR/x"), FAT_ERR_INVAL); /* an alias */
    CHECK_EQ(fat_rename(&fs, "/level 0 dir", "/level 0 dir/y"), FAT_ERR_INVAL);
    CHECK_EQ(fat_rename(&fs, "/level 0 dir/level 1 dir", "/moved dir"), 0);
    CHECK_EQ(fat_stat(&fs, "/moved dir/level 2 dir/level 3 dir", &st), 0);
    CHECK_EQ(fat_rename(&fs, "/readme.txt", "/moved dir"), FAT_ERR_ISDIR);
    CHECK_EQ(fat_rename(&fs, "/README2.TXT", "/Readme2.txt"), 0); /* case only */
    CHECK_EQ(fat_stat(&fs, "/readme2.TXT", &st), 0);
    CHECK(strcmp(st.name, "Readme2.txt") == 0);

    /* an open file cannot go away; readers or one writer */
    fat_file_t *g;
    CHECK_EQ(fat_open(&fs, "/holes", FAT_O_READ, &f), 0);
    CHECK_EQ(fat_remove(&fs, "/holes", false), FAT_ERR_BUSY);
    CHECK_EQ(fat_open(&fs, "/holes", FAT_O_WRITE, &g), FAT_ERR_BUSY);
    CHECK_EQ(fat_write(&fs, f, 0, "x", 1), FAT_ERR_BADF);
    CHECK_EQ(fat_close(&fs, f), 0);
    CHECK_EQ(fat_remove(&fs, "/holes", false), 0);
    CHECK_EQ(fat_remove(&fs, "/many", false), FAT_ERR_ISDIR);
    CHECK_EQ(fat_remove(&fs, "/big file.bin", true), FAT_ERR_NOTDIR);
    CHECK_EQ(fat_mkdir(&fs, "/empty"), 0);
    CHECK_EQ(fat_remove(&fs, "/empty", true), 0);
    CHECK_EQ(fat_statfs(&fs, &sf), 0);
    uint32_t fat1 = fs.fat_lba, fatn = fs.fat_sectors, fsi = fs.fsinfo_lba;
    CHECK_EQ(fat_unmount(&fs), 0);
    /* both FAT copies alike; FAT32's FSInfo holds the free count */
    CHECK(memcmp(c.mem + (size_t)fat1 * 512, c.mem + (size_t)(fat1 + fatn) * 512,
                 (size_t)fatn * 512) == 0);
    if (bits == 32) {
        CHECK(fsi != 0);
        const uint8_t *fi = c.mem + (size_t)fsi * 512 + 488;
        CHECK_EQ((uint32_t)fi[0] | (uint32_t)fi[1] << 8 | (uint32_t)fi[2] << 16 |
                     (uint32_t)fi[3] << 24, sf.free_clusters);
    }

    /* what fsck.fat and mtools make of it */
    card_save(&c, image);
    CHECK_EQ(fsck(image), 0);
    CHECK(mtools_same(image, "/big file.bin", bigd, big));
    fill(small, sizeof(small), 4);
    CHECK(mtools_same(image, names[4], small, 100 + 4 * 400));
    CHECK(mtools_same(image, deepf + 0, small, 0) == 0); /* not the same data */
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "MTOOLS_SKIP_CHECK=1 mdir -i '%s' ::/many | grep -q 'longfilename_149.txt'", image);
    CHECK_EQ(run(cmd), 0);

    /* files made by mcopy, read here */
    char src[600];
    snprintf(src, sizeof(src), "%s/from mtools.bin", dir_);
    FILE *sf2 = fopen(src, "wb");
    fwrite(bigd, 1, 200000, sf2);
    fclose(sf2);
    snprintf(cmd, sizeof(cmd), "MTOOLS_SKIP_CHECK=1 mmd -i '%s' '::/made by mtools' && "
             "MTOOLS_SKIP_CHECK=1 mcopy -i '%s' '%s' '::/made by mtools/From Mtools.bin'",
             image, image, src);
    CHECK_EQ(run(cmd), 0);
    free(c.mem);
    card_load(&c, image, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK(same(&fs, "/made by mtools/From Mtools.bin", bigd, 200000));
    CHECK(same(&fs, "/big file.bin", bigd, big));
    CHECK(same(&fs, "/many/moved x", (fill(small, sizeof(small), 6), small), 100 + 6 * 400));

    /* remove everything we made: the free count comes back */
    for (int i = 0; i < 150; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/many/longfilename_%03d.txt", i);
        CHECK_EQ(fat_remove(&fs, p, false), 0);
    }
    CHECK_EQ(fat_remove(&fs, "/many/moved x", false), 0);
    CHECK_EQ(fat_remove(&fs, "/many", true), 0);
    CHECK_EQ(fat_unmount(&fs), 0);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK_EQ(fat_statfs(&fs, &sf), 0);
    CHECK(sf.free_clusters < free0);
    CHECK_EQ(fat_unmount(&fs), 0);
    card_save(&c, image);
    CHECK_EQ(fsck(image), 0);
    free(c.mem);
    free(bigd);
}

/* ---- a full card ------------------------------------------------------------------ */
static void full_card(void)
{
    const char *image = img("full.img");
    mkfs(image, 16, 4200, 1); /* ~4100 clusters of 512 bytes: just FAT16 */
    card_t c;
    fat_blk_t bd;
    fat_t fs;
    card_load(&c, image, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    size_t n = 5u * 1024 * 1024;
    uint8_t *data = malloc(n);
    fill(data, n, 5);
    fat_file_t *f;
    fat_stat_t st0;
    CHECK_EQ(fat_open(&fs, "/fill.bin", FAT_O_WRITE | FAT_O_CREATE, &f), 0);
    int32_t w = fat_write(&fs, f, 0, data, (uint32_t)n);
    CHECK(w > 0 && (size_t)w < n); /* a short write: the card is full */
    CHECK_EQ(fat_write(&fs, f, (uint32_t)w, data, 512), FAT_ERR_NOSPC);
    CHECK_EQ(fat_close(&fs, f), 0);
    fat_statfs_t sf;
    CHECK_EQ(fat_statfs(&fs, &sf), 0);
    CHECK_EQ(sf.free_clusters, 0);
    CHECK_EQ(fat_mkdir(&fs, "/d"), FAT_ERR_NOSPC);
    CHECK(same(&fs, "/fill.bin", data, (size_t)w));
    /* FAT16's fixed root (512 entries) fills up with names, not clusters */
    int made = 0, r = 0;
    for (int i = 0; i < 600 && !r; i++) {
        char p[48];
        snprintf(p, sizeof(p), "/empty file %03d.txt", i); /* 3 entries each */
        fat_file_t *g;
        r = fat_open(&fs, p, FAT_O_WRITE | FAT_O_CREATE, &g);
        if (!r) {
            CHECK_EQ(fat_close(&fs, g), 0);
            made++;
        }
    }
    CHECK_EQ(r, FAT_ERR_NOSPC);
    CHECK_EQ(made, (512 - 1 - 2) / 3); /* the label, fill.bin (long + 8.3) */
    CHECK_EQ(fat_stat(&fs, "/empty file 000.txt", &st0), 0);
    CHECK_EQ(fat_unmount(&fs), 0);
    card_save(&c, image);
    CHECK_EQ(fsck(image), 0);
    CHECK(mtools_same(image, "/fill.bin", data, (size_t)w));
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK_EQ(fat_remove(&fs, "/fill.bin", false), 0);
    CHECK_EQ(fat_statfs(&fs, &sf), 0);
    CHECK_EQ(sf.free_clusters, sf.clusters);
    CHECK_EQ(fat_unmount(&fs), 0);
    free(c.mem);
    free(data);
}

/* ---- a corrupt FAT, and images that are not FAT ---------------------------------------- */
static void corrupt(void)
{
    const char *image = img("corrupt.img");
    mkfs(image, 16, 8192, 1);
    card_t c;
    fat_blk_t bd;
    fat_t fs;
    card_load(&c, image, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    uint8_t data[20000];
    fill(data, sizeof(data), 7);
    CHECK_EQ(put(&fs, "/victim.bin", data, sizeof(data), 4096), 0);
    CHECK_EQ(put(&fs, "/bystander.bin", data, 1000, 4096), 0);
    fat_stat_t st;
    CHECK_EQ(fat_stat(&fs, "/victim.bin", &st), 0);
    uint32_t first = st.cluster;
    uint32_t fat_lba = fs.fat_lba, fat2 = fs.fat_lba + fs.fat_sectors;
    CHECK_EQ(fat_unmount(&fs), 0);
    /* the chain's 3rd link points into the free space: both copies */
    for (uint32_t k = 0; k < 2; k++) {
        uint8_t *e = c.mem + (size_t)(k ? fat2 : fat_lba) * 512 + (first + 2) * 2;
        e[0] = 0;
        e[1] = 0; /* a free cluster inside a chain */
    }
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    fat_file_t *f;
    CHECK_EQ(fat_open(&fs, "/victim.bin", FAT_O_READ, &f), 0);
    uint8_t buf[20000];
    CHECK_EQ(fat_read(&fs, f, 0, buf, 1536), 1536); /* before the break */
    CHECK_EQ(fat_read(&fs, f, 0, buf, sizeof(buf)), 1536); /* short */
    CHECK_EQ(fat_read(&fs, f, 10000, buf, 100), FAT_ERR_CORRUPT);
    CHECK_EQ(fat_close(&fs, f), 0);
    CHECK(same(&fs, "/bystander.bin", data, 1000));
    /* a chain pointing past the card */
    uint8_t *e = c.mem + (size_t)fat_lba * 512 + (first + 1) * 2;
    e[0] = 0xF0;
    e[1] = 0xFF; /* 0xFFF0: reserved, not a cluster */
    fs.fbuf_valid = 0;
    CHECK_EQ(fat_open(&fs, "/victim.bin", FAT_O_READ, &f), 0);
    CHECK_EQ(fat_read(&fs, f, 5000, buf, 100), FAT_ERR_CORRUPT);
    CHECK_EQ(fat_close(&fs, f), 0);
    CHECK_EQ(fat_remove(&fs, "/bystander.bin", false), 0);
    CHECK_EQ(fat_unmount(&fs), 0);
    card_save(&c, image);
    CHECK(fsck(image) != 0); /* fsck.fat sees it too */

    /* not FAT: zeros, garbage, a broken boot sector, FAT12 */
    memset(c.mem, 0, (size_t)c.sectors * 512);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    fill(c.mem, (size_t)c.sectors * 512, 1);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    free(c.mem);
    card_load(&c, image, &bd);
    c.mem[11] = 0;
    c.mem[12] = 4; /* 1024-byte sectors */
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    free(c.mem);
    const char *f12 = img("fat12.img");
    mkfs(f12, 12, 1440, 0);
    card_load(&c, f12, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    bd.sector_count = 8; /* a card too small to hold anything */
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    free(c.mem);
    /* a FAT16 volume larger than the card (a truncated image) */
    card_load(&c, image, &bd);
    bd.sector_count = c.sectors / 2;
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_CORRUPT);
    free(c.mem);
}

/* ---- a card with an MBR partition table ------------------------------------------- */
static void partitioned(void)
{
    const char *part = img("part.img");
    mkfs(part, 32, 70 * 1024, 1);
    card_t p, c;
    fat_blk_t pbd, bd;
    fat_t fs;
    card_load(&p, part, &pbd);
    const uint32_t start = 2048;
    memset(&c, 0, sizeof(c));
    c.sectors = start + p.sectors;
    c.mem = calloc(c.sectors, 512);
    memcpy(c.mem + (size_t)start * 512, p.mem, (size_t)p.sectors * 512);
    uint8_t *e = c.mem + 446; /* one primary partition, FAT32 LBA */
    e[4] = 0x0C;
    e[8] = (uint8_t)start;
    e[9] = (uint8_t)(start >> 8);
    e[12] = (uint8_t)p.sectors;
    e[13] = (uint8_t)(p.sectors >> 8);
    e[14] = (uint8_t)(p.sectors >> 16);
    c.mem[510] = 0x55;
    c.mem[511] = 0xAA;
    bd = (fat_blk_t){ &c, card_read, card_write, NULL, c.sectors };
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK_EQ(fs.base, start);
    uint8_t data[5000];
    fill(data, sizeof(data), 21);
    CHECK_EQ(fat_mkdir(&fs, "/in a partition"), 0);
    CHECK_EQ(put(&fs, "/in a partition/data.bin", data, sizeof(data), 999), 0);
    CHECK_EQ(fat_unmount(&fs), 0);
    /* the partition alone, as fsck.fat and mtools see it */
    memcpy(p.mem, c.mem + (size_t)start * 512, (size_t)p.sectors * 512);
    card_save(&p, part);
    CHECK_EQ(fsck(part), 0);
    CHECK(mtools_same(part, "/in a partition/data.bin", data, sizeof(data)));
    e[4] = 0x83; /* a Linux partition: not ours */
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), FAT_ERR_NOTFAT);
    free(p.mem);
    free(c.mem);
}

/* ---- damaged cards: random bytes in the FAT and directories ---------------------------- */
/* Bounded: 300 cards. Whatever the damage, every call returns (no crash, no
 * sanitizer report, no endless loop) and reports an error or a result. */
static void damaged(void)
{
    const char *image = img("damage.img");
    mkfs(image, 16, 8192, 2);
    card_t c;
    fat_blk_t bd;
    fat_t fs;
    card_load(&c, image, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    uint8_t data[9000];
    fill(data, sizeof(data), 31);
    CHECK_EQ(fat_mkdir(&fs, "/d"), 0);
    CHECK_EQ(fat_mkdir(&fs, "/d/e"), 0);
    for (int i = 0; i < 40; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/d/%s file %d.bin", i % 2 ? "long" : "x", i);
        CHECK_EQ(put(&fs, p, data, 100 + (size_t)i * 200, 1000), 0);
    }
    uint32_t meta_end = fs.data_lba + 64; /* FATs, root, the first clusters */
    CHECK_EQ(fat_unmount(&fs), 0);
    uint8_t *good = malloc((size_t)c.sectors * 512);
    memcpy(good, c.mem, (size_t)c.sectors * 512);
    uint32_t x = 12345;
    int mounted = 0;
    for (int round = 0; round < 300; round++) {
        memcpy(c.mem, good, (size_t)c.sectors * 512);
        for (int k = 0; k < 1 + round % 40; k++) {
            x = x * 1103515245u + 12345u;
            uint32_t off = 512 + x % ((meta_end - 1) * 512);
            x = x * 1103515245u + 12345u;
            c.mem[off] = (uint8_t)(x >> 16);
        }
        if (fat_mount(&fs, &bd, clock_, NULL) != 0)
            continue;
        mounted++;
        const char *dirs[] = { "/", "/d", "/d/e" };
        fat_stat_t st;
        for (int di = 0; di < 3; di++) {
            fat_dir_t d;
            if (fat_dir_open(&fs, dirs[di], &d) != 0)
                continue;
            for (int n = 0; n < 200 && fat_dir_read(&fs, &d, &st) == 1; n++) {
                char p[600];
                snprintf(p, sizeof(p), "%s/%s", di ? dirs[di] : "", st.name);
                fat_file_t *f;
                uint8_t b[4096];
                if (st.type == FAT_T_FILE && fat_open(&fs, p, FAT_O_READ, &f) == 0) {
                    for (uint32_t o = 0; o < st.size && o < 20000; o += sizeof(b))
                        if (fat_read(&fs, f, o, b, sizeof(b)) < 0)
                            break;
                    fat_close(&fs, f);
                }
            }
        }
        (void)put(&fs, "/d/new after damage.bin", data, 3000, 1000);
        (void)fat_rename(&fs, "/d/x file 0.bin", "/d/e/renamed.bin");
        (void)fat_remove(&fs, "/d/long file 1.bin", false);
        (void)fat_mkdir(&fs, "/d/e/f");
        (void)fat_unmount(&fs);
    }
    CHECK(mounted > 100); /* most damage leaves a mountable card */
    printf("damaged cards: 300 made, %d mounted and walked\n", mounted);
    free(good);
    free(c.mem);
}

/* ---- power cuts --------------------------------------------------------------------- */
/* Cut the power at every sector write of one operation. After each cut:
 * fsck.fat -n's verdict is counted (not asserted: a cut may leave lost
 * clusters, orphan long-name entries or a cross-link for a moment - the
 * table is what docs/FAT.md reports); the card must mount; files the
 * operation did not touch must be intact; a replaced file must be wholly
 * old or wholly new. */
enum { OP_CREATE, OP_REPLACE, OP_PUBLISH, OP_MOVE, OP_MKDIR, OP_REMOVE,
       OP_APPEND, OP_N };
static const char *op_names[OP_N] = { "create 20 KB file", "replace (shadow)",
                                      "new file (shadow)", "move to other dir",
                                      "mkdir", "remove file", "append 5 KB" };

static uint8_t old_[9000], new_[20000], keep_[3000];

static int do_op(fat_t *fs, int op)
{
    fat_file_t *f;
    int r;
    switch (op) {
    case OP_CREATE:
        return put(fs, "/new file with a long name.bin", new_, sizeof(new_), 4096);
    case OP_REPLACE: /* what svc_sd does: a shadow, published over the name */
        r = put(fs, "/.cellar/w1", new_, sizeof(new_), 4096);
        return r ? r : fat_publish(fs, "/.cellar/w1", "/target file.bin");
    case OP_PUBLISH:
        r = put(fs, "/.cellar/w2", new_, sizeof(new_), 4096);
        return r ? r : fat_publish(fs, "/.cellar/w2", "/keep/published new.bin");
    case OP_MOVE:
        return fat_rename(fs, "/target file.bin", "/keep/moved target.bin");
    case OP_MKDIR:
        return fat_mkdir(fs, "/a new directory");
    case OP_REMOVE:
        return fat_remove(fs, "/target file.bin", false);
    case OP_APPEND:
        if ((r = fat_open(fs, "/target file.bin", FAT_O_WRITE, &f)) != 0)
            return r;
        r = fat_write(fs, f, sizeof(old_), new_, 5000) == 5000 ? 0 : -5;
        int r2 = fat_close(fs, f);
        return r ? r : r2;
    }
    return -22;
}

static void powercut(void)
{
    const char *base = img("cut-base.img"), *work = img("cut.img");
    mkfs(base, 16, 6000, 1);
    card_t c;
    fat_blk_t bd;
    fat_t fs;
    fill(old_, sizeof(old_), 11);
    fill(new_, sizeof(new_), 12);
    fill(keep_, sizeof(keep_), 13);
    card_load(&c, base, &bd);
    CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
    CHECK_EQ(fat_mkdir(&fs, "/keep"), 0);
    CHECK_EQ(fat_mkdir(&fs, "/.cellar"), 0);
    CHECK_EQ(put(&fs, "/keep/committed file.txt", keep_, sizeof(keep_), 512), 0);
    CHECK_EQ(put(&fs, "/target file.bin", old_, sizeof(old_), 4096), 0);
    CHECK_EQ(fat_unmount(&fs), 0);
    card_save(&c, base);
    CHECK_EQ(fsck(base), 0);
    uint8_t *snap = malloc((size_t)c.sectors * 512);
    memcpy(snap, c.mem, (size_t)c.sectors * 512);

    printf("power cut at every sector write (FAT16, 512-byte clusters):\n");
    printf("%-20s %7s %10s %12s %10s\n", "operation", "writes", "fsck clean",
           "fsck errors", "committed");
    for (int op = 0; op < OP_N; op++) {
        /* how many writes the operation makes */
        memcpy(c.mem, snap, (size_t)c.sectors * 512);
        c.writes = 0;
        c.cut_at = 0;
        c.dead = 0;
        CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
        CHECK_EQ(do_op(&fs, op), 0);
        CHECK_EQ(fat_unmount(&fs), 0);
        uint64_t total = c.writes;
        int clean = 0, errs = 0, intact = 0;
        for (uint64_t k = 1; k <= total; k++) {
            memcpy(c.mem, snap, (size_t)c.sectors * 512);
            c.writes = 0;
            c.cut_at = k;
            c.dead = 0;
            CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
            (void)do_op(&fs, op);
            (void)fat_unmount(&fs); /* fails: the power is gone */
            c.cut_at = 0;
            c.dead = 0;
            card_save(&c, work);
            int fr = fsck(work);
            CHECK(fr == 0 || fr == 1);
            if (fr == 0)
                clean++;
            else
                errs++;
            if (fr != 0 && verbose_) { /* what fsck.fat found, for docs/FAT.md */
                char fp[600], line[300];
                snprintf(fp, sizeof(fp), "%s.fsck", work);
                FILE *ff = fopen(fp, "r");
                while (ff && fgets(line, sizeof(line), ff))
                    if (strncmp(line, "fsck.fat", 8) && !strstr(line, " files, "))
                        printf("  %s, cut at write %llu: %s", op_names[op],
                               (unsigned long long)k, line);
                if (ff)
                    fclose(ff);
            }
            int ok = fat_mount(&fs, &bd, clock_, NULL) == 0;
            CHECK(ok);
            if (!ok)
                continue;
            /* svc_sd's mount: shadows left behind are removed */
            (void)fat_remove(&fs, "/.cellar/w1", false);
            (void)fat_remove(&fs, "/.cellar/w2", false);
            int good = same(&fs, "/keep/committed file.txt", keep_, sizeof(keep_));
            CHECK(good);
            if (op == OP_REPLACE) {
                int either = same(&fs, "/target file.bin", old_, sizeof(old_)) ||
                             same(&fs, "/target file.bin", new_, sizeof(new_));
                CHECK(either);
                good &= either;
            }
            if (op == OP_PUBLISH) {
                fat_stat_t st;
                int either = fat_stat(&fs, "/keep/published new.bin", &st) == FAT_ERR_NOENT ||
                             same(&fs, "/keep/published new.bin", new_, sizeof(new_));
                CHECK(either);
                good &= either;
            }
            if (op == OP_MOVE) { /* under one name or the other, whole */
                int either = same(&fs, "/target file.bin", old_, sizeof(old_)) ||
                             same(&fs, "/keep/moved target.bin", old_, sizeof(old_));
                CHECK(either);
                good &= either;
            }
            if (op != OP_MOVE) { /* shadows never share clusters with a name */
                (void)fat_unmount(&fs);
                card_save(&c, work);
                (void)fsck(work);
                char fp[600], cmd[700];
                snprintf(fp, sizeof(fp), "%s.fsck", work);
                snprintf(cmd, sizeof(cmd), "grep -q 'share clusters' '%s'", fp);
                int shared = run(cmd) == 0;
                CHECK(!shared);
                CHECK_EQ(fat_mount(&fs, &bd, clock_, NULL), 0);
            }
            if (op == OP_APPEND) {
                fat_stat_t st;
                int found = fat_stat(&fs, "/target file.bin", &st) == 0;
                /* the old bytes are never overwritten: they read back */
                fat_file_t *f;
                uint8_t b[sizeof(old_)];
                int prefix = found && fat_open(&fs, "/target file.bin", FAT_O_READ, &f) == 0 &&
                             fat_read(&fs, f, 0, b, sizeof(b)) == (int32_t)sizeof(b) &&
                             memcmp(b, old_, sizeof(b)) == 0;
                if (found && prefix)
                    fat_close(&fs, f);
                CHECK(prefix);
                good &= prefix;
            }
            intact += good;
            (void)fat_unmount(&fs);
        }
        printf("%-20s %7llu %10d %12d %6d/%-4llu\n", op_names[op],
               (unsigned long long)total, clean, errs, intact,
               (unsigned long long)total);
    }
    free(snap);
    free(c.mem);
}

int main(int argc, char **argv)
{
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        keep |= strcmp(argv[i], "--keep") == 0;
        verbose_ |= strcmp(argv[i], "--verbose") == 0;
    }
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(dir_, sizeof(dir_), "%s/cellar-fat-%d", tmp, (int)getpid());
    mkdir(dir_, 0700);
    if (run("command -v mkfs.fat >/dev/null && command -v fsck.fat >/dev/null && "
            "command -v mcopy >/dev/null") != 0) {
        fprintf(stderr, "test_fat: needs dosfstools and mtools (make deps)\n");
        return 1;
    }
    scenario(16);
    scenario(32);
    full_card();
    corrupt();
    partitioned();
    damaged();
    powercut();
    if (!keep) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_);
        run(cmd);
    }
    return check_summary("test_fat");
}
