/*
 * cli_image.c - `cellar image build|ls|cat|extract|check|info`: offline
 * flash images, no device needed. They use the filesystem (fs/cfs.h) on the
 * NOR simulator (fs/flash_sim.h) with the partition table of
 * service/layout.h, exactly as cellard does.
 *
 * An image is the raw flash: 4 KiB erase blocks, 256-byte pages, its size a
 * multiple of the block size. Read-only commands work on a copy in memory,
 * so they never change the file (a mount may replay or repair in RAM).
 * build writes a temporary file beside the image and renames it into place.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flash_sim.h"
#include "cfs.h"
#include "layout.h"
#include "manifest.h"
#include "common/csha.h"

#define IMG_BLOCK 4096u
#define IMG_PAGE 256u

typedef struct img {
    flash_sim_t *sim;
    const flash_dev_t *dev;
    layout_t layout;
    bool has_layout;
    uint32_t now;                       /* clock for fs (file times) */
    cfs_config_t cfg[LAYOUT_MAX_PARTS];
    cfs_t *fs[LAYOUT_MAX_PARTS];         /* mounted, or NULL */
    int mount_err[LAYOUT_MAX_PARTS];
} img_t;

#define cmd_of(name) cli_cmd_find(cli_image_cmds, (name))
#define PARSE_OR_RETURN(n, cli, argc, argv, o) \
    CLI_PARSE_OR_RETURN(n, cli, cli_image_cmds, argc, argv, o)

static uint32_t img_clock(void *ctx)
{
    return ((img_t *)ctx)->now;
}

static void img_free(img_t *im)
{
    for (int i = 0; i < LAYOUT_MAX_PARTS; i++) {
        free(im->fs[i]);
        im->fs[i] = NULL;
    }
    flash_sim_free(im->sim);
    im->sim = NULL;
}

static int img_new(cli_t *cli, img_t *im, uint32_t blocks)
{
    memset(im, 0, sizeof(*im));
    flash_sim_config_t sc = {.block_size = IMG_BLOCK, .block_count = blocks,
                             .page_size = IMG_PAGE};
    im->sim = flash_sim_new(&sc);
    if (!im->sim) {
        cli_error(cli, NULL, -ENOMEM, "cannot create a %u-block flash simulator",
                  (unsigned)blocks);
        return -ENOMEM;
    }
    im->dev = flash_sim_dev(im->sim);
    return 0;
}

/* Load an image file into a RAM simulator and read its partition table. */
static int img_load(cli_t *cli, const char *path, img_t *im)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        cli_error(cli, path, e, "%s", strerror(-e));
        return e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        cli_error(cli, path, CELLAR_ERR_INVAL, "not a regular file");
        return CELLAR_ERR_INVAL;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0 || size % IMG_BLOCK || size / IMG_BLOCK > UINT32_MAX) {
        close(fd);
        cli_error(cli, path, CELLAR_ERR_INVAL,
                  "not a cellar image: size %llu is not a multiple of %u bytes",
                  (unsigned long long)size, IMG_BLOCK);
        return CELLAR_ERR_INVAL;
    }
    int err = img_new(cli, im, (uint32_t)(size / IMG_BLOCK));
    if (err < 0) {
        close(fd);
        return err;
    }
    uint8_t *data = flash_sim_data(im->sim);
    uint64_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, data + got, (size_t)(size - got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = r < 0 ? -errno : -EIO;
            close(fd);
            cli_error(cli, path, err, "read: %s", strerror(-err));
            img_free(im);
            return err;
        }
        got += (uint64_t)r;
    }
    close(fd);
    err = layout_read(im->dev, &im->layout);
    if (err == -2 || err == LAYOUT_ERR_FOREIGN) {
        cli_error(cli, path, CELLAR_ERR_INVAL,
                  "no cellar partition table in block 0 (not an image?)");
        img_free(im);
        return CELLAR_ERR_INVAL;
    }
    if (err < 0) {
        cli_error(cli, path, CELLAR_ERR_ILSEQ, "partition table is corrupt (%s)",
                  cfs_strerror(err));
        img_free(im);
        return CELLAR_ERR_ILSEQ;
    }
    im->has_layout = true;
    return 0;
}

static cfs_config_t *part_cfg(img_t *im, int i)
{
    cfs_config_t *c = &im->cfg[i];
    memset(c, 0, sizeof(*c));
    c->dev = im->dev;
    c->first_block = im->layout.part[i].first_block;
    c->block_count = im->layout.part[i].block_count;
    c->clock = img_clock;
    c->clock_ctx = im;
    return c;
}

/* Mount partition i (once). Returns the fs or NULL (mount_err set). */
static cfs_t *img_mount(img_t *im, int i)
{
    if (im->fs[i])
        return im->fs[i];
    if (im->mount_err[i])
        return NULL;
    cfs_t *fs = calloc(1, sizeof(*fs));
    if (!fs) {
        im->mount_err[i] = CFS_ERR_NOMEM;
        return NULL;
    }
    int err = cfs_mount(fs, part_cfg(im, i));
    if (err < 0) {
        free(fs);
        im->mount_err[i] = err;
        return NULL;
    }
    im->fs[i] = fs;
    return fs;
}

static int part_index(const img_t *im, const char *name)
{
    for (uint32_t i = 0; i < im->layout.nparts; i++)
        if (strcmp(im->layout.part[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* A path inside the image: "/usr/a.py", "a.py" (in /usr), "/bak/x", "/".
 * Sets *part (-1 for "/") and fspath ("/" or "/a/b"). */
static int img_path(cli_t *cli, img_t *im, const char *arg, int *part,
                    char fspath[CELLAR_PATH_MAX + 1], char show[CELLAR_PATH_MAX + 2])
{
    char p[CELLAR_PATH_MAX + 1];
    int err = cli_devpath(arg, p);
    if (err < 0) {
        cli_error(cli, arg, err, "%s", cellar_strerror(err));
        return err;
    }
    snprintf(show, CELLAR_PATH_MAX + 2, "%s", p);
    if (strcmp(p, "/") == 0) {
        *part = -1;
        strcpy(fspath, "/");
        return 0;
    }
    const char *name = p + 1, *rest = strchr(name, '/');
    char pn[LAYOUT_NAME_MAX + 1];
    size_t nl = rest ? (size_t)(rest - name) : strlen(name);
    if (nl > LAYOUT_NAME_MAX) {
        cli_error(cli, show, CELLAR_ERR_NOENT, "no such partition");
        return CELLAR_ERR_NOENT;
    }
    memcpy(pn, name, nl);
    pn[nl] = 0;
    *part = part_index(im, pn);
    if (*part < 0) {
        cli_error(cli, show, CELLAR_ERR_NOENT, "no such partition '%s'", pn);
        return CELLAR_ERR_NOENT;
    }
    snprintf(fspath, CELLAR_PATH_MAX + 1, "%s", rest ? rest : "/");
    return 0;
}

static int mount_or_report(cli_t *cli, img_t *im, int part, cfs_t **out)
{
    *out = img_mount(im, part);
    if (!*out) {
        cli_error(cli, NULL, im->mount_err[part], "/%s: cannot mount: %s",
                  im->layout.part[part].name, cfs_strerror(im->mount_err[part]));
        return im->mount_err[part];
    }
    return 0;
}

/* img_load for the commands that report per partition: with --json the
 * result gets "image" and a "partitions" array (*parts; NULL otherwise). */
static int img_load_parts(cli_t *cli, const char *path, img_t *im, cJSON **parts)
{
    *parts = NULL;
    if (img_load(cli, path, im) < 0)
        return -1;
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "image", path);
        *parts = cJSON_AddArrayToObject(cli->out, "partitions");
    }
    return 0;
}

/* A new {"path": "/NAME"} object at the end of parts. */
static cJSON *part_json(cJSON *parts, const char *name)
{
    cJSON *p = cJSON_CreateObject();
    char pp[LAYOUT_NAME_MAX + 2];
    snprintf(pp, sizeof(pp), "/%s", name);
    cJSON_AddStringToObject(p, "path", pp);
    cJSON_AddItemToArray(parts, p);
    return p;
}

/* ---- build ------------------------------------------------------------------------ */
/* A raw partition of `image build --raw` (issue 15): its content. */
typedef struct raw_src {
    char name[LAYOUT_NAME_MAX];
    const char *file;   /* NULL: the partition stays erased */
    uint8_t *data;
    uint32_t len;
    uint32_t blocks;
    uint8_t sha[32];
} raw_src_t;

typedef struct build {
    cli_t *cli;
    img_t *im;
    cfs_t *fs;
    man_t *man;         /* the partition's manifest, filled as files go in */
    const char *part;
    uint32_t files, dirs;
    uint64_t bytes;
    uint8_t *buf;
    raw_src_t *raws;    /* issue 15: their entries go into /usr's manifest */
    uint32_t nraw;
} build_t;

static int no_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
}

static int build_file(build_t *b, const char *src, const char *dst,
                      const struct stat *st)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = -errno;
        cli_error(b->cli, src, e, "%s", strerror(-e));
        return e;
    }
    if ((uint64_t)st->st_size > CFS_FILE_MAX) {
        close(fd);
        cli_error(b->cli, src, CELLAR_ERR_FBIG, "file too large");
        return CELLAR_ERR_FBIG;
    }
    b->im->now = (uint32_t)st->st_mtime;
    cfs_file_t f;
    int err = cfs_file_open(b->fs, &f, dst, CFS_O_WRONLY | CFS_O_CREAT | CFS_O_TRUNC);
    if (err < 0) {
        close(fd);
        cli_error(b->cli, src, err, "/%s%s: %s", b->part, dst, cfs_strerror(err));
        return err;
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t r = read(fd, b->buf, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = -errno;
            cli_error(b->cli, src, err, "read: %s", strerror(-err));
            break;
        }
        if (r == 0)
            break;
        int w = cfs_file_write(b->fs, &f, b->buf, (uint32_t)r);
        if (w < 0) {
            err = w;
            cli_error(b->cli, src, err, "/%s%s: %s%s", b->part, dst, cfs_strerror(err),
                      err == CFS_ERR_NOSPC ? " (image too small: use a larger --size)"
                                          : "");
            break;
        }
        total += (uint64_t)r;
    }
    close(fd);
    int cerr = cfs_file_close(b->fs, &f);
    if (err == 0 && cerr < 0) {
        err = cerr;
        cli_error(b->cli, src, err, "/%s%s: %s", b->part, dst, cfs_strerror(err));
    }
    if (err == 0) { /* its manifest entry: size, SHA-256, time */
        man_entry_t e;
        cfs_file_t t;
        memset(&e, 0, sizeof(e));
        err = man_hash_path(b->fs, &t, dst, b->buf, 65536, e.sha, &e.size);
        if (err == 0) {
            e.kind = MAN_TRACK;
            e.flags = MAN_F_SIZE;
            e.mtime = b->im->now;
            size_t dn = strlen(dst);
            memcpy(e.path, dst, dn < sizeof(e.path) ? dn + 1 : 0);
            e.path[sizeof(e.path) - 1] = 0;
            err = man_set(b->man, &e);
        }
        if (err < 0)
            cli_error(b->cli, src, err, "/%s%s: manifest: %s", b->part, dst,
                      cfs_strerror(err));
    }
    if (err == 0) {
        b->files++;
        b->bytes += total;
    }
    return err;
}

static int build_dir(build_t *b, const char *src, const char *dst)
{
    struct dirent **names = NULL;
    int n = scandir(src, &names, no_dots, alphasort);
    if (n < 0) {
        int e = -errno;
        cli_error(b->cli, src, e, "%s", strerror(-e));
        return e;
    }
    int err = 0;
    for (int i = 0; i < n && err == 0; i++) {
        size_t sl = strlen(src) + strlen(names[i]->d_name) + 2;
        char *sp = malloc(sl);
        char dp[CELLAR_PATH_MAX + 2];
        if (!sp) {
            err = -ENOMEM;
            break;
        }
        snprintf(sp, sl, "%s/%s", src, names[i]->d_name);
        int dl = snprintf(dp, sizeof(dp), "%s%s%s", dst, strcmp(dst, "/") ? "/" : "",
                          names[i]->d_name);
        struct stat st;
        if (strcmp(dst, "/") == 0 && strcmp(names[i]->d_name, &MAN_DIR[1]) == 0) {
            err = CELLAR_ERR_INVAL;
            cli_error(b->cli, sp, err, "%s is reserved for the device's manifest",
                      MAN_DIR);
        } else if (dl < 0 || (size_t)dl > CFS_PATH_MAX) {
            err = CELLAR_ERR_NAMETOOLONG;
            cli_error(b->cli, sp, err, "path too long inside the image (max %d bytes)",
                      CFS_PATH_MAX);
        } else if (stat(sp, &st) < 0) {
            err = -errno;
            cli_error(b->cli, sp, err, "%s", strerror(-err));
        } else if (S_ISDIR(st.st_mode)) {
            b->im->now = (uint32_t)st.st_mtime;
            err = cfs_mkdir(b->fs, dp);
            if (err < 0)
                cli_error(b->cli, sp, err, "/%s%s: %s", b->part, dp, cfs_strerror(err));
            else {
                b->dirs++;
                err = build_dir(b, sp, dp);
            }
        } else if (S_ISREG(st.st_mode)) {
            err = build_file(b, sp, dp, &st);
        } else {
            fprintf(stderr, "cellar: %s: %s: not a regular file, skipped\n",
                    b->cli->cmd, sp);
        }
        free(sp);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return err;
}

static int write_image(cli_t *cli, img_t *im, const char *out)
{
    size_t n = strlen(out) + 16;
    char *tmp = malloc(n);
    if (!tmp)
        return -ENOMEM;
    snprintf(tmp, n, "%s.tmp%d", out, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    int err = 0;
    if (fd < 0) {
        err = -errno;
        cli_error(cli, out, err, "%s", strerror(-err));
        free(tmp);
        return err;
    }
    const uint8_t *data = flash_sim_data(im->sim);
    uint64_t size = flash_sim_size(im->sim), done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, (size_t)(size - done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            err = -errno;
            break;
        }
        done += (uint64_t)w;
    }
    if (err == 0 && fsync(fd) < 0)
        err = -errno;
    if (close(fd) < 0 && err == 0)
        err = -errno;
    if (err == 0 && rename(tmp, out) < 0)
        err = -errno;
    if (err < 0) {
        unlink(tmp);
        cli_error(cli, out, err, "write: %s", strerror(-err));
    }
    free(tmp);
    return err;
}

static int build_part(cli_t *cli, img_t *im, int idx, const char *dir,
                      build_t *b, cJSON *parts)
{
    cfs_t *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return -ENOMEM;
    im->fs[idx] = fs;
    cfs_config_t *cfg = part_cfg(im, idx);
    int err = cfs_format(fs, cfg);
    if (err == 0)
        err = cfs_mount(fs, cfg);
    if (err < 0) {
        cli_error(cli, NULL, err, "/%s: format: %s", im->layout.part[idx].name,
                  cfs_strerror(err));
        return err;
    }
    b->fs = fs;
    b->part = im->layout.part[idx].name;
    b->files = b->dirs = 0;
    b->bytes = 0;
    man_t *man = calloc(1, sizeof(*man));
    if (!man)
        return -ENOMEM;
    b->man = man;
    err = man_open(man, fs);
    if (err < 0)
        cli_error(cli, NULL, err, "/%s: manifest: %s", b->part, cfs_strerror(err));
    if (dir && err == 0) {
        struct stat st;
        if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
            cli_error(cli, dir, CELLAR_ERR_NOTDIR, "not a directory");
            err = CELLAR_ERR_NOTDIR;
        } else {
            err = build_dir(b, dir, "/");
        }
    }
    /* issue 15: each raw image gets its /usr entry (docs/RAW.md) */
    for (uint32_t r = 0; err == 0 && !strcmp(b->part, "usr") && r < b->nraw; r++) {
        if (!b->raws[r].file)
            continue;
        man_entry_t e = {.kind = MAN_TRACK, .flags = MAN_F_SIZE,
                         .size = b->raws[r].len, .mtime = im->now};
        memcpy(e.sha, b->raws[r].sha, 32);
        snprintf(e.path, sizeof(e.path), MAN_DIR "/raw/%s", b->raws[r].name);
        err = man_set(man, &e);
        if (err < 0)
            cli_error(cli, NULL, err, "/usr: manifest: %s", cfs_strerror(err));
    }
    if (err == 0) {
        err = man_commit(man, NULL, NULL, 0);
        if (err < 0)
            cli_error(cli, NULL, err, "/%s: manifest: %s", b->part, cfs_strerror(err));
    }
    (void)man_close(man);
    free(man);
    b->man = NULL;
    cfs_statvfs_t sv;
    if (err == 0)
        err = cfs_statvfs(fs, &sv);
    int uerr = cfs_unmount(fs);
    if (err == 0 && uerr < 0) {
        err = uerr;
        cli_error(cli, NULL, err, "/%s: unmount: %s", b->part, cfs_strerror(err));
    }
    free(fs);
    im->fs[idx] = NULL;
    if (err < 0)
        return err;
    if (parts) {
        cJSON *p = part_json(parts, b->part);
        if (dir)
            cJSON_AddStringToObject(p, "source", dir);
        cli_json_num(p, "files", b->files);
        cli_json_num(p, "dirs", b->dirs);
        cli_json_num(p, "bytes", (double)b->bytes);
        cli_json_num(p, "used", (double)sv.used);
        cli_json_num(p, "total", (double)sv.total);
    } else if (!cli->json) {
        char h1[32], h2[32], h3[32];
        printf("/%s: %u files, %u directories, %s of data; %s of %s used\n", b->part,
               b->files, b->dirs, cli_human(b->bytes, h1, sizeof(h1)),
               cli_human(sv.used, h2, sizeof(h2)),
               cli_human(sv.total, h3, sizeof(h3)));
    }
    return 0;
}

/* issue 15: "--raw NAME[:SIZE]=FILE" or "--raw NAME:SIZE" (repeatable):
 * taken out of argv before the other options are parsed. Returns the
 * count, or -1 after a usage error. */
static int raw_args(cli_t *cli, const cli_cmd_t *me, int *argc, char **argv,
                    raw_src_t *raws)
{
    int nraw = 0, k = 1;
    for (int i = 1; i < *argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--raw") && i + 1 < *argc)
            v = argv[++i];
        else if (!strncmp(argv[i], "--raw=", 6))
            v = argv[i] + 6;
        else if (!strcmp(argv[i], "--raw"))
            return cli_usage(cli, me, "option --raw needs a value"), -1;
        if (!v) {
            argv[k++] = argv[i];
            continue;
        }
        if (nraw == LAYOUT_MAX_RAW)
            return cli_usage(cli, me, "at most %d --raw options", LAYOUT_MAX_RAW), -1;
        raw_src_t *r = &raws[nraw];
        memset(r, 0, sizeof(*r));
        size_t nl = strcspn(v, ":=");
        if (nl == 0 || nl >= LAYOUT_NAME_MAX)
            return cli_usage(cli, me, "--raw %s: expected NAME[:SIZE]=FILE", v), -1;
        memcpy(r->name, v, nl);
        if (!layout_raw_name_ok(r->name))
            return cli_usage(cli, me, "--raw %s: NAME must be [a-z0-9_-], start with "
                             "a letter, and not be usr, bak or sd", v), -1;
        const char *eq = strchr(v, '=');
        uint64_t size = 0;
        if (v[nl] == ':') {
            char sz[32];
            size_t sl = eq ? (size_t)(eq - v - nl - 1) : strlen(v + nl + 1);
            if (sl == 0 || sl >= sizeof(sz))
                return cli_usage(cli, me, "--raw %s: bad SIZE", v), -1;
            memcpy(sz, v + nl + 1, sl);
            sz[sl] = 0;
            if (cli_parse_size(sz, &size) < 0 || size == 0 || size % IMG_BLOCK ||
                size / IMG_BLOCK > 0x7fffffffu)
                return cli_usage(cli, me, "--raw %s: SIZE must be a non-zero multiple "
                                 "of %u bytes", v, IMG_BLOCK), -1;
        } else if (!eq) {
            return cli_usage(cli, me, "--raw %s: expected NAME[:SIZE]=FILE", v), -1;
        }
        r->file = eq && eq[1] ? eq + 1 : NULL;
        if (eq && !eq[1])
            return cli_usage(cli, me, "--raw %s: missing FILE after '='", v), -1;
        r->blocks = (uint32_t)(size / IMG_BLOCK);
        for (int j = 0; j < nraw; j++)
            if (!strcmp(raws[j].name, r->name))
                return cli_usage(cli, me, "--raw %s: the name is given twice", v), -1;
        nraw++;
    }
    *argc = k;
    return nraw;
}

/* Read the files of the raw partitions and size them. 0 or an error. */
static int raw_load(cli_t *cli, raw_src_t *raws, int nraw)
{
    for (int i = 0; i < nraw; i++) {
        raw_src_t *r = &raws[i];
        if (!r->file)
            continue;
        FILE *f = fopen(r->file, "rb");
        struct stat st;
        if (!f || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
            st.st_size > 0x7fffffff) {
            int e = f ? (S_ISREG(st.st_mode) ? -EFBIG : -EINVAL) : -errno;
            if (f)
                fclose(f);
            cli_error(cli, r->file, e, "%s", strerror(-e));
            return e;
        }
        r->len = (uint32_t)st.st_size;
        r->data = malloc(r->len ? r->len : 1);
        if (!r->data || fread(r->data, 1, r->len, f) != r->len) {
            fclose(f);
            cli_error(cli, r->file, CELLAR_ERR_IO, "read failed");
            return CELLAR_ERR_IO;
        }
        fclose(f);
        uint64_t need = ((uint64_t)r->len + IMG_BLOCK - 1) / IMG_BLOCK;
        if (!r->blocks)
            r->blocks = need ? (uint32_t)need : 1;
        if (need > r->blocks) {
            cli_error(cli, r->file, CELLAR_ERR_FBIG, "%u bytes do not fit the raw "
                      "partition %s (%llu bytes)", r->len, r->name,
                      (unsigned long long)r->blocks * IMG_BLOCK);
            return CELLAR_ERR_FBIG;
        }
        csha_t h;
        csha_init(&h);
        int bad = csha_start(&h) || csha_update(&h, r->data, r->len) ||
                  csha_finish(&h, r->sha);
        csha_free(&h);
        if (bad)
            return cli_error(cli, r->file, CELLAR_ERR_IO, "SHA-256 failed"), CELLAR_ERR_IO;
    }
    return 0;
}

/* Program raw partition i with its content (the rest stays erased). */
static int raw_fill(cli_t *cli, img_t *im, int i, const raw_src_t *r)
{
    const layout_part_t *lp = &im->layout.part[i];
    for (uint32_t off = 0; r->file && off < r->len; off += IMG_BLOCK) {
        uint32_t n = r->len - off < IMG_BLOCK ? r->len - off : IMG_BLOCK;
        int err = im->dev->prog(im->dev, lp->first_block + off / IMG_BLOCK, 0,
                                r->data + off, n);
        if (err < 0) {
            cli_error(cli, r->file, err, "raw %s: %s", r->name, cfs_strerror(err));
            return err;
        }
    }
    return 0;
}

static int cmd_build(cli_t *cli, int argc, char **argv)
{
    static const char *const vlongs[] = {"size", "bak-dir", "bak-size", "output", NULL};
    const cli_cmd_t *me = cmd_of("build");
    cli_opts_t o = {.value_longs = vlongs, .value_shorts = "o"};
    raw_src_t raws[LAYOUT_MAX_RAW];
    int nraw = raw_args(cli, me, &argc, argv, raws);
    if (nraw < 0)
        return CLI_USAGE;
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    const char *out = o.svalue['o'] ? o.svalue['o'] : o.value[3];
    if (n != 1)
        return cli_usage(cli, me, n ? "one source directory expected"
                                    : "missing source directory");
    if (!out)
        return cli_usage(cli, me, "missing -o IMG");
    if (!o.value[0])
        return cli_usage(cli, me, "missing --size SIZE");
    uint64_t size = 0, bak = 0;
    if (cli_parse_size(o.value[0], &size) < 0 || size == 0 || size % IMG_BLOCK ||
        size / IMG_BLOCK > 0x7fffffffu)
        return cli_usage(cli, me, "--size '%s': need a multiple of %u bytes "
                                  "(e.g. 4M)", o.value[0], IMG_BLOCK);
    if (o.value[2] && (cli_parse_size(o.value[2], &bak) < 0 || bak % IMG_BLOCK ||
                       bak == 0))
        return cli_usage(cli, me, "--bak-size '%s': need a multiple of %u bytes",
                         o.value[2], IMG_BLOCK);
    uint32_t blocks = (uint32_t)(size / IMG_BLOCK);
    img_t im;
    if (img_new(cli, &im, blocks) < 0)
        return CLI_FAILED;
    int status = CLI_FAILED;
    build_t b = {.cli = cli, .im = &im, .buf = malloc(65536), .raws = raws,
                 .nraw = (uint32_t)nraw};
    cJSON *parts = NULL;
    layout_raw_t lraw[LAYOUT_MAX_RAW];
    if (!b.buf || raw_load(cli, raws, nraw) < 0)
        goto done;
    for (int i = 0; i < nraw; i++)
        lraw[i] = (layout_raw_t){raws[i].name, raws[i].blocks};
    int err = layout_default_raw(blocks, (uint32_t)(bak / IMG_BLOCK), lraw,
                                 (uint32_t)nraw, &im.layout);
    if (err < 0) {
        cli_error(cli, out, CELLAR_ERR_INVAL,
                  "%llu bytes is too small for this layout (each partition needs "
                  "at least 16 blocks of %u bytes)", (unsigned long long)size,
                  IMG_BLOCK);
        goto done;
    }
    err = layout_write(im.dev, &im.layout);
    if (err < 0) {
        cli_error(cli, out, err, "writing the partition table: %s", cfs_strerror(err));
        goto done;
    }
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "image", out);
        cli_json_num(cli->out, "size", (double)size);
        cli_json_num(cli->out, "block_size", IMG_BLOCK);
        cli_json_num(cli->out, "block_count", blocks);
        parts = cJSON_AddArrayToObject(cli->out, "partitions");
    }
    for (uint32_t i = 0; i < im.layout.nparts; i++) {
        const char *name = im.layout.part[i].name;
        if (im.layout.part[i].kind == LAYOUT_KIND_RAW) { /* issue 15 */
            for (int r = 0; r < nraw; r++)
                if (!strcmp(raws[r].name, name) && raw_fill(cli, &im, (int)i, &raws[r]) < 0)
                    goto done;
            if (parts) {
                cJSON *p = part_json(parts, name);
                cJSON_AddStringToObject(p, "kind", "raw");
                cli_json_num(p, "bytes", (double)im.layout.part[i].block_count * IMG_BLOCK);
            } else if (!cli->json) {
                printf("%s: raw partition, %u blocks at %#llx\n", name,
                       im.layout.part[i].block_count,
                       (unsigned long long)im.layout.part[i].first_block * IMG_BLOCK);
            }
            continue;
        }
        const char *dir = !strcmp(name, "usr") ? argv[0]
                          : !strcmp(name, "bak") ? o.value[1] : NULL;
        if (build_part(cli, &im, (int)i, dir, &b, parts) < 0)
            goto done;
    }
    if (write_image(cli, &im, out) < 0)
        goto done;
    if (!cli->json) {
        char h[32];
        printf("wrote %s (%s, %u blocks)\n", out, cli_human(size, h, sizeof(h)), blocks);
    }
    status = CLI_OK;
done:
    free(b.buf);
    for (int i = 0; i < nraw; i++)
        free(raws[i].data);
    img_free(&im);
    return status;
}

/* ---- ls ----------------------------------------------------------------------------- */
typedef struct ent {
    char name[CFS_NAME_MAX + 1];
    cfs_stat_t st;
} ent_t;

static int ent_cmp(const void *a, const void *b)
{
    return strcmp(((const ent_t *)a)->name, ((const ent_t *)b)->name);
}

/* Sorted listing of a directory of fs; returns count or an fs error. */
static int img_list(cfs_t *fs, const char *path, ent_t **out)
{
    *out = NULL;
    cfs_dir_t d;
    int err = cfs_dir_open(fs, &d, path);
    if (err < 0)
        return err;
    ent_t *v = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            ent_t *nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                err = CFS_ERR_NOMEM;
                break;
            }
            v = nv;
        }
        err = cfs_dir_read(fs, &d, v[n].name, sizeof(v[n].name), &v[n].st);
        if (err <= 0)
            break;
        if (strcmp(path, "/") == 0 && strcmp(v[n].name, &MAN_DIR[1]) == 0)
            continue; /* the device's own directory */
        n++;
    }
    (void)cfs_dir_close(fs, &d);
    if (err < 0) {
        free(v);
        return err;
    }
    if (n)
        qsort(v, n, sizeof(*v), ent_cmp);
    *out = v;
    return (int)n;
}

static cJSON *ent_json(const char *name, const char *path, const cfs_stat_t *st)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "path", path);
    cJSON_AddStringToObject(e, "type", st->type == CFS_TYPE_DIR ? "dir" : "file");
    cli_json_num(e, "size", st->size);
    cli_json_num(e, "mtime", st->mtime);
    cli_json_num(e, "ctime", st->ctime);
    return e;
}

static void ent_print(cli_t *cli, bool lng, const char *rel, const cfs_stat_t *st)
{
    if (cli->json)
        return;
    const char *slash = st->type == CFS_TYPE_DIR ? "/" : "";
    if (lng) {
        char t[32];
        printf("%c %10u  %s  %s%s\n", st->type == CFS_TYPE_DIR ? 'd' : '-',
               (unsigned)st->size, cli_time(st->mtime, t, sizeof(t)), rel, slash);
    } else {
        printf("%s%s\n", rel, slash);
    }
}

typedef struct ls_ctx {
    cli_t *cli;
    cfs_t *fs;
    const char *part;
    bool lng, rec, all;
    cJSON *arr;
} ls_ctx_t;

static void img_ls_dir(ls_ctx_t *l, const char *path, const char *rel)
{
    ent_t *v = NULL;
    int n = img_list(l->fs, path, &v);
    if (n < 0) {
        cli_error(l->cli, NULL, n, "/%s%s: %s", l->part, path, cfs_strerror(n));
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!l->all && v[i].name[0] == '.')
            continue;
        char full[2 * CELLAR_PATH_MAX + 4], r[2 * CELLAR_PATH_MAX + 4], show[sizeof(full) + 16];
        snprintf(full, sizeof(full), "%s%s%s", path, strcmp(path, "/") ? "/" : "", v[i].name);
        snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", v[i].name);
        snprintf(show, sizeof(show), "/%s%s", l->part, full);
        ent_print(l->cli, l->lng, r, &v[i].st);
        if (l->arr)
            cJSON_AddItemToArray(l->arr, ent_json(r, show, &v[i].st));
        if (l->rec && v[i].st.type == CFS_TYPE_DIR)
            img_ls_dir(l, full, r);
    }
    free(v);
}

static int cmd_ls(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.shorts = "lra"};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1 || n > 2)
        return cli_usage(cli, cmd_of("ls"), n ? "too many operands" : "missing IMG");
    img_t im;
    if (img_load(cli, argv[0], &im) < 0)
        return CLI_FAILED;
    int part;
    char fspath[CELLAR_PATH_MAX + 1], show[CELLAR_PATH_MAX + 2];
    if (img_path(cli, &im, n > 1 ? argv[1] : "/usr", &part, fspath, show) < 0) {
        img_free(&im);
        return CLI_FAILED;
    }
    ls_ctx_t l = {.cli = cli, .lng = o.flag['l'], .rec = o.flag['r'], .all = o.flag['a']};
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "image", argv[0]);
        cJSON_AddStringToObject(cli->out, "path", show);
        l.arr = cJSON_AddArrayToObject(cli->out, "entries");
    }
    if (part < 0) {
        for (uint32_t i = 0; i < im.layout.nparts; i++) {
            if (im.layout.part[i].kind == LAYOUT_KIND_RAW)
                continue; /* issue 15: not a directory (image info lists it) */
            cfs_stat_t st = {.type = CFS_TYPE_DIR};
            cfs_t *fs = img_mount(&im, (int)i);
            if (fs)
                (void)cfs_stat(fs, "/", &st);
            char sp[16];
            snprintf(sp, sizeof(sp), "/%s", im.layout.part[i].name);
            ent_print(cli, l.lng, im.layout.part[i].name, &st);
            if (l.arr)
                cJSON_AddItemToArray(l.arr, ent_json(im.layout.part[i].name, sp, &st));
            if (l.rec && fs) {
                l.fs = fs;
                l.part = im.layout.part[i].name;
                img_ls_dir(&l, "/", im.layout.part[i].name);
            }
        }
    } else if (mount_or_report(cli, &im, part, &l.fs) == 0) {
        l.part = im.layout.part[part].name;
        cfs_stat_t st;
        int err = cfs_stat(l.fs, fspath, &st);
        if (err < 0) {
            cli_error(cli, show, err, "%s", cfs_strerror(err));
        } else if (st.type != CFS_TYPE_DIR) {
            const char *base = strrchr(show, '/') + 1;
            ent_print(cli, l.lng, base, &st);
            if (l.arr)
                cJSON_AddItemToArray(l.arr, ent_json(base, show, &st));
        } else {
            img_ls_dir(&l, fspath, "");
        }
    }
    img_free(&im);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- cat ------------------------------------------------------------------------------ */
/* Read a whole file of the image into a malloc'ed buffer. */
static int img_read_file(cfs_t *fs, const char *path, uint8_t **data, uint32_t *len)
{
    cfs_file_t f;
    *data = NULL;
    *len = 0;
    int err = cfs_file_open(fs, &f, path, CFS_O_RDONLY);
    if (err < 0)
        return err;
    int32_t size = cfs_file_size(fs, &f);
    if (size < 0) {
        (void)cfs_file_close(fs, &f);
        return size;
    }
    uint8_t *buf = malloc((size_t)size + 1);
    if (!buf) {
        (void)cfs_file_close(fs, &f);
        return CFS_ERR_NOMEM;
    }
    uint32_t got = 0;
    while (got < (uint32_t)size) {
        uint32_t want = (uint32_t)size - got;
        if (want > 65536)
            want = 65536;
        int r = cfs_file_read(fs, &f, buf + got, want);
        if (r < 0) {
            err = r;
            break;
        }
        if (r == 0)
            break;
        got += (uint32_t)r;
    }
    (void)cfs_file_close(fs, &f);
    if (err == 0 && got != (uint32_t)size)
        err = CFS_ERR_IO;
    if (err < 0) {
        free(buf);
        return err;
    }
    *data = buf;
    *len = got;
    return 0;
}

static int cmd_cat(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 2)
        return cli_usage(cli, cmd_of("cat"), n ? "missing PATH" : "missing IMG and PATH");
    img_t im;
    if (img_load(cli, argv[0], &im) < 0)
        return CLI_FAILED;
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, "files") : NULL;
    for (int i = 1; i < n; i++) {
        int part;
        cfs_t *fs;
        char fspath[CELLAR_PATH_MAX + 1], show[CELLAR_PATH_MAX + 2];
        if (img_path(cli, &im, argv[i], &part, fspath, show) < 0)
            continue;
        if (part < 0) {
            cli_error(cli, show, CELLAR_ERR_ISDIR, "is a directory");
            continue;
        }
        if (mount_or_report(cli, &im, part, &fs) < 0)
            continue;
        uint8_t *data;
        uint32_t len;
        int err = img_read_file(fs, fspath, &data, &len);
        if (err < 0) {
            cli_error(cli, show, err, "%s", cfs_strerror(err));
            continue;
        }
        if (arr) {
            cJSON *f = cJSON_CreateObject();
            uint8_t sha[32];
            char hex[65];
            cellar_sha256(data, len, sha);
            cJSON_AddStringToObject(f, "path", show);
            cli_json_num(f, "size", len);
            cJSON_AddStringToObject(f, "sha256", cellar_sha256_hex(sha, hex));
            data[len] = 0;
            if (memchr(data, 0, len) == NULL) {
                cJSON *s = cJSON_CreateString((const char *)data);
                cJSON_AddItemToObject(f, "content", s);
            }
            cJSON_AddItemToArray(arr, f);
        } else {
            fwrite(data, 1, len, stdout);
        }
        free(data);
    }
    fflush(stdout);
    img_free(&im);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- extract ---------------------------------------------------------------------------- */
typedef struct ext {
    cli_t *cli;
    cfs_t *fs;
    const char *part;
    uint32_t files, dirs;
    uint64_t bytes;
} ext_t;

static void set_times(const char *path, uint32_t mtime)
{
    if (!mtime)
        return;
    struct timespec ts[2] = {{.tv_sec = mtime}, {.tv_sec = mtime}};
    (void)utimensat(AT_FDCWD, path, ts, 0);
}

static int extract_dir(ext_t *e, const char *fspath, const char *dir)
{
    ent_t *v = NULL;
    int n = img_list(e->fs, fspath, &v);
    if (n < 0) {
        cli_error(e->cli, NULL, n, "/%s%s: %s", e->part, fspath, cfs_strerror(n));
        return n;
    }
    int first = 0;
    for (int i = 0; i < n; i++) {
        if (strchr(v[i].name, '/') || !strcmp(v[i].name, ".") || !strcmp(v[i].name, ".."))
            continue;
        char fp[2 * CELLAR_PATH_MAX + 4];
        snprintf(fp, sizeof(fp), "%s%s%s", fspath, strcmp(fspath, "/") ? "/" : "",
                 v[i].name);
        size_t ll = strlen(dir) + strlen(v[i].name) + 2;
        char *lp = malloc(ll);
        if (!lp)
            return -ENOMEM;
        snprintf(lp, ll, "%s/%s", dir, v[i].name);
        int err = 0;
        if (v[i].st.type == CFS_TYPE_DIR) {
            if (mkdir(lp, 0777) < 0 && errno != EEXIST) {
                err = -errno;
                cli_error(e->cli, lp, err, "%s", strerror(-err));
            } else {
                e->dirs++;
                err = extract_dir(e, fp, lp);
                set_times(lp, v[i].st.mtime);
            }
        } else {
            uint8_t *data;
            uint32_t len;
            err = img_read_file(e->fs, fp, &data, &len);
            if (err < 0) {
                cli_error(e->cli, NULL, err, "/%s%s: %s", e->part, fp, cfs_strerror(err));
            } else {
                int fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
                if (fd < 0) {
                    err = -errno;
                } else {
                    uint32_t done = 0;
                    while (done < len) {
                        ssize_t w = write(fd, data + done, len - done);
                        if (w < 0 && errno == EINTR)
                            continue;
                        if (w < 0) {
                            err = -errno;
                            break;
                        }
                        done += (uint32_t)w;
                    }
                    if (close(fd) < 0 && err == 0)
                        err = -errno;
                }
                if (err < 0)
                    cli_error(e->cli, lp, err, "%s", strerror(-err));
                else {
                    set_times(lp, v[i].st.mtime);
                    e->files++;
                    e->bytes += len;
                }
                free(data);
            }
        }
        free(lp);
        if (err < 0 && first == 0)
            first = err;
    }
    free(v);
    return first;
}

static int cmd_extract(cli_t *cli, int argc, char **argv)
{
    static const char *const vlongs[] = {"bak-dir", NULL};
    cli_opts_t o = {.value_longs = vlongs};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n != 2)
        return cli_usage(cli, cmd_of("extract"), "need IMG and DIR");
    img_t im;
    cJSON *parts;
    if (img_load_parts(cli, argv[0], &im, &parts) < 0)
        return CLI_FAILED;
    const char *targets[2][2] = {{"usr", argv[1]}, {"bak", o.value[0]}};
    for (int t = 0; t < 2; t++) {
        if (!targets[t][1])
            continue;
        int part = part_index(&im, targets[t][0]);
        if (part < 0) {
            cli_error(cli, argv[0], CELLAR_ERR_NOENT, "no /%s partition", targets[t][0]);
            continue;
        }
        ext_t e = {.cli = cli, .part = targets[t][0]};
        if (mount_or_report(cli, &im, part, &e.fs) < 0)
            continue;
        const char *dir = targets[t][1];
        if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
            cli_error(cli, dir, -errno, "%s", strerror(errno));
            continue;
        }
        (void)extract_dir(&e, "/", dir);
        if (parts) {
            cJSON *p = part_json(parts, e.part);
            cJSON_AddStringToObject(p, "dir", dir);
            cli_json_num(p, "files", e.files);
            cli_json_num(p, "dirs", e.dirs);
            cli_json_num(p, "bytes", (double)e.bytes);
        } else {
            char h[32];
            printf("/%s -> %s: %u files, %u directories, %s\n", e.part, dir, e.files,
                   e.dirs, cli_human(e.bytes, h, sizeof(h)));
        }
    }
    img_free(&im);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- check ------------------------------------------------------------------------------ */
typedef struct chk {
    cli_t *cli;
    const char *part;
    cJSON *problems;
    unsigned count;
    img_t *im;          /* issue 15: raw entries are checked on its bytes */
} chk_t;

static void chk_report(void *ctx, const char *line)
{
    chk_t *c = ctx;
    c->count++;
    if (c->problems)
        cJSON_AddItemToArray(c->problems, cJSON_CreateString(line));
    else
        fprintf(stderr, "cellar: %s: /%s: %s\n", c->cli->cmd, c->part, line);
}

/* Files under dir (not the device's own directory); -1 on an error. */
static long count_files(cfs_t *fs, const char *dir, int depth)
{
    ent_t *v = NULL;
    int n = img_list(fs, dir, &v);
    if (n < 0 || depth > 64) {
        free(v);
        return -1;
    }
    long total = 0;
    for (int i = 0; i < n && total >= 0; i++) {
        char p[2 * CELLAR_PATH_MAX + 4];
        snprintf(p, sizeof(p), "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", v[i].name);
        if (v[i].st.type == CFS_TYPE_DIR) {
            long k = count_files(fs, p, depth + 1);
            total = k < 0 ? -1 : total + k;
        } else {
            total++;
        }
    }
    free(v);
    return total;
}

/* The manifest against the files: every entry names a file with that size
 * and SHA-256, and every file has an entry. */
static void check_manifest(cfs_t *fs, chk_t *c)
{
    char line[CELLAR_PATH_MAX + 96];
    cfs_stat_t st;
    if (cfs_stat(fs, MAN_FILE, &st) < 0) {
        chk_report(c, "manifest: none (an image built without one?)");
        return;
    }
    man_t *m = calloc(1, sizeof(*m));
    uint8_t *buf = malloc(65536);
    if (!m || !buf || man_open(m, fs) < 0) {
        chk_report(c, "manifest: cannot be opened");
        free(m);
        free(buf);
        return;
    }
    long entries = 0;
    for (uint32_t i = 0, n = man_slots(m); i < n; i++) {
        man_entry_t e;
        int k = man_get(m, i, &e);
        if (k < 0) {
            snprintf(line, sizeof(line), "manifest: slot %u: %s", i, cfs_strerror(k));
            chk_report(c, line);
            continue;
        }
        if (k == 0)
            continue;
        const char *rawname = !strncmp(e.path, MAN_DIR "/raw/", 13) ? e.path + 13 : NULL;
        int pi = rawname && c->im ? part_index(c->im, rawname) : -1;
        if (pi >= 0 && c->im->layout.part[pi].kind == LAYOUT_KIND_RAW &&
            cfs_stat(fs, e.path, &st) == CFS_ERR_NOENT) {
            /* issue 15: a raw partition's entry: its bytes */
            const layout_part_t *lp = &c->im->layout.part[pi];
            uint8_t sha[32];
            csha_t h;
            bool ok = (uint64_t)e.size <= (uint64_t)lp->block_count * IMG_BLOCK;
            csha_init(&h);
            if (ok)
                ok = !csha_start(&h) &&
                     !csha_update(&h, flash_sim_data(c->im->sim) +
                                          (uint64_t)lp->first_block * IMG_BLOCK, e.size) &&
                     !csha_finish(&h, sha) && !memcmp(sha, e.sha, 32);
            csha_free(&h);
            if (!ok) {
                snprintf(line, sizeof(line), "manifest: raw partition %s: content "
                         "differs from its entry", rawname);
                chk_report(c, line);
            }
            continue;
        }
        if (!rawname) /* a raw image /bak holds as a file is in /.cellar */
            entries++;
        cfs_file_t t;
        int r = man_check(fs, &t, &e, buf, 65536);
        const char *why = r == MAN_OK ? NULL
                          : r == MAN_MISSING ? "missing"
                          : r == MAN_MISMATCH ? "content differs from its entry"
                          : r == MAN_UNREADABLE ? "unreadable (checksum error)"
                                                : cfs_strerror(r);
        if (why) {
            snprintf(line, sizeof(line), "manifest: %s: %s", e.path, why);
            chk_report(c, line);
        }
    }
    long files = count_files(fs, "/", 0);
    if (files != entries) {
        snprintf(line, sizeof(line), "manifest: %ld entries for %ld files", entries, files);
        chk_report(c, line);
    }
    (void)man_close(m);
    free(m);
    free(buf);
}

static int cmd_check(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n != 1)
        return cli_usage(cli, cmd_of("check"), "need IMG");
    img_t im;
    cJSON *parts;
    if (img_load_parts(cli, argv[0], &im, &parts) < 0)
        return CLI_FAILED;
    bool clean = true;
    for (uint32_t i = 0; i < im.layout.nparts; i++) {
        chk_t c = {.cli = cli, .part = im.layout.part[i].name, .im = &im};
        cJSON *p = NULL;
        if (parts) {
            p = part_json(parts, c.part);
            if (im.layout.part[i].kind == LAYOUT_KIND_RAW) /* issue 15 */
                cJSON_AddStringToObject(p, "kind", "raw");
            c.problems = cJSON_AddArrayToObject(p, "problems");
        }
        if (im.layout.part[i].kind == LAYOUT_KIND_RAW) {
            /* no filesystem to check: /usr's manifest checks its bytes */
            if (p)
                cJSON_AddBoolToObject(p, "clean", true);
            else
                printf("%s: raw partition (checked through /usr's manifest)\n", c.part);
            continue;
        }
        cfs_t *fs = img_mount(&im, (int)i);
        int err;
        if (!fs) {
            char line[128];
            err = im.mount_err[i];
            snprintf(line, sizeof(line), "cannot mount: %s", cfs_strerror(err));
            chk_report(&c, line);
        } else {
            err = cfs_fsck(fs, chk_report, &c);
            if (err < 0 && c.count == 0) {
                char line[128];
                snprintf(line, sizeof(line), "fsck: %s", cfs_strerror(err));
                chk_report(&c, line);
            }
            if (err == 0)
                check_manifest(fs, &c);
        }
        bool ok = err == 0 && c.count == 0;
        if (p)
            cJSON_AddBoolToObject(p, "clean", ok);
        else
            printf("/%s: %s\n", c.part, ok ? "clean" : "CORRUPT");
        if (!ok) {
            clean = false;
            cli->failed = true;
        }
    }
    if (cli->json)
        cJSON_AddBoolToObject(cli->out, "clean", clean);
    if (!clean && !cli->json)
        fprintf(stderr, "cellar: %s: %s: the image is corrupt\n", cli->cmd, argv[0]);
    img_free(&im);
    return clean ? CLI_OK : CLI_FAILED;
}

/* ---- info ------------------------------------------------------------------------------- */
static int cmd_info(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n != 1)
        return cli_usage(cli, cmd_of("info"), "need IMG");
    img_t im;
    cJSON *parts;
    if (img_load_parts(cli, argv[0], &im, &parts) < 0)
        return CLI_FAILED;
    uint64_t size = flash_sim_size(im.sim);
    uint32_t blocks = (uint32_t)(size / IMG_BLOCK);
    char h[32], h2[32], h3[32], h4[32];
    if (cli->json) {
        cli_json_num(cli->out, "size", (double)size);
        cli_json_num(cli->out, "block_size", IMG_BLOCK);
        cli_json_num(cli->out, "block_count", blocks);
        cli_json_num(cli->out, "page_size", IMG_PAGE);
    } else {
        printf("image:      %s\n", argv[0]);
        printf("flash:      %s, %u blocks of %u bytes, %u-byte pages\n",
               cli_human(size, h, sizeof(h)), blocks, IMG_BLOCK, IMG_PAGE);
        printf("partitions:\n");
    }
    for (uint32_t i = 0; i < im.layout.nparts; i++) {
        const layout_part_t *lp = &im.layout.part[i];
        if (lp->kind == LAYOUT_KIND_RAW) { /* issue 15 */
            if (parts) {
                cJSON *p = part_json(parts, lp->name);
                cJSON_AddStringToObject(p, "kind", "raw");
                cli_json_num(p, "first_block", lp->first_block);
                cli_json_num(p, "block_count", lp->block_count);
                cli_json_num(p, "bytes", (double)lp->block_count * IMG_BLOCK);
            } else {
                printf("  %-5s blocks %u-%u (%s), raw partition at %#llx\n", lp->name,
                       lp->first_block, lp->first_block + lp->block_count - 1,
                       cli_human((uint64_t)lp->block_count * IMG_BLOCK, h, sizeof(h)),
                       (unsigned long long)lp->first_block * IMG_BLOCK);
            }
            continue;
        }
        cfs_t *fs = img_mount(&im, (int)i);
        cfs_statvfs_t sv;
        int err = fs ? cfs_statvfs(fs, &sv) : im.mount_err[i];
        uint32_t of, od;
        if (err == 0 && man_own_counts(fs, &of, &od) == 0 && of <= sv.files &&
            od < sv.dirs) {
            sv.files -= of; /* the device's manifest is not a user file */
            sv.dirs -= od;
        }
        if (parts) {
            cJSON *p = part_json(parts, lp->name);
            cli_json_num(p, "first_block", lp->first_block);
            cli_json_num(p, "block_count", lp->block_count);
            cli_json_num(p, "bytes", (double)lp->block_count * IMG_BLOCK);
            cJSON_AddBoolToObject(p, "mounted", err == 0);
            if (err < 0) {
                cJSON_AddStringToObject(p, "error", cfs_strerror(err));
            } else {
                cellar_statfs_t f = {
                    .total = sv.total, .used = sv.used, .live = sv.live,
                    .free = sv.free, .reclaimable = sv.reclaimable,
                    .files = sv.files, .dirs = sv.dirs, .erase_max = sv.erase_max,
                    .erase_mean = sv.erase_mean, .erase_min = sv.erase_min,
                    .bad_blocks = sv.bad_blocks, .block_size = sv.block_size,
                    .block_count = sv.block_count,
                };
                cli_json_space(p, &f);
            }
        } else {
            printf("  /%-4s blocks %u-%u (%s)\n", lp->name, lp->first_block,
                   lp->first_block + lp->block_count - 1,
                   cli_human((uint64_t)lp->block_count * IMG_BLOCK, h, sizeof(h)));
            if (err < 0) {
                printf("        cannot mount: %s\n", cfs_strerror(err));
            } else {
                printf("        used %s of %s (%s free, %s reclaimable), %u files, "
                       "%u dirs\n", cli_human(sv.used, h, sizeof(h)),
                       cli_human(sv.total, h2, sizeof(h2)),
                       cli_human(sv.free, h3, sizeof(h3)),
                       cli_human(sv.reclaimable, h4, sizeof(h4)), sv.files, sv.dirs);
                printf("        wear: erase count max %u, mean %u, min %u; %u bad "
                       "blocks\n", sv.erase_max, sv.erase_mean, sv.erase_min,
                       sv.bad_blocks);
            }
        }
        if (err < 0)
            cli->failed = true;
    }
    img_free(&im);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

const cli_cmd_t cli_image_cmds[] = {
    {"build", cmd_build,
     "image build DIR -o IMG --size SIZE [--bak-dir DIR2] [--bak-size SIZE] "
     "[--raw NAME[:SIZE]=FILE]...",
     "Build a flash image: partition table, /usr from DIR (and /bak).",
     "  -o IMG            output image (written atomically)\n"
     "  --size SIZE       flash size, a multiple of 4 KiB (4M, 64MiB, 1048576)\n"
     "  --bak-dir DIR2    content of the /bak partition (default empty)\n"
     "  --bak-size SIZE   size of /bak (default a quarter of the flash)\n"
     "  --raw NAME[:SIZE]=FILE  a raw partition (docs/RAW.md) holding FILE\n"
     "                    (SIZE default: FILE rounded up to 4 KiB; NAME:SIZE\n"
     "                    alone: erased); repeatable, in address order from\n"
     "                    block 1; /usr's manifest gets its SHA-256\n"
     "Files keep their modification times.\n"},
    {"ls", cmd_ls, "image ls [-l] [-r] [-a] IMG [PATH]",
     "List a directory of an image (\"/usr/lib\", \"lib\" = /usr/lib, \"/\").", NULL},
    {"cat", cmd_cat, "image cat IMG PATH...", "Print files of an image.", NULL},
    {"extract", cmd_extract, "image extract IMG DIR [--bak-dir DIR2]",
     "Copy /usr of an image into DIR (and /bak into DIR2), with times.", NULL},
    {"check", cmd_check, "image check IMG",
     "Check every partition (cfs_fsck); exit status 1 when corrupt.", NULL},
    {"info", cmd_info, "image info IMG",
     "Geometry, partitions, usage and wear of an image.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
