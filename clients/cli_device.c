/*
 * cli_device.c - the device commands of the `cellar` tool: ls, cat, cp, rm,
 * mkdir, rmdir, mv, touch, sha256sum, tree, df, info, format.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHOW_MAX (CELLAR_PATH_MAX + 2)

#define cmd_of(name) cli_cmd_find(cli_device_cmds, (name))
#define PARSE_OR_RETURN(n, cli, argc, argv, o) \
    CLI_PARSE_OR_RETURN(n, cli, cli_device_cmds, argc, argv, o)

static const char *type_name(cellar_type_t t)
{
    return t == CELLAR_TYPE_DIR ? "dir" : t == CELLAR_TYPE_FILE ? "file" : "none";
}

static cJSON *entry_json(const cellar_stat_t *st, const char *name,
                         const char *path)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", name);
    cJSON_AddStringToObject(e, "path", path);
    cJSON_AddStringToObject(e, "type", type_name(st->type));
    cli_json_num(e, "size", (double)st->size);
    cli_json_num(e, "mtime", st->mtime);
    cli_json_num(e, "ctime", st->ctime);
    if (st->id)
        cli_json_num(e, "id", st->id);
    return e;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) {
        perror("cellar");
        exit(CLI_FAILED);
    }
    size_t dl = strlen(dir);
    snprintf(p, n, "%s%s%s", dir, dl && dir[dl - 1] == '/' ? "" : "/", name);
    return p;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const cellar_stat_t *)a)->name, ((const cellar_stat_t *)b)->name);
}

/* ls --sort (SPIFlashFileSystem's file list "ordered by date"): newest
 * first for the times, largest first for size, then by name. */
typedef enum { SORT_NAME = 0, SORT_TIME, SORT_CTIME, SORT_SIZE, SORT_ID, SORT_NONE } sort_key_t;
static const char *const sort_words[] = {"name", "time", "ctime", "size", "id", "none", NULL};

static int cmp_u64_desc(uint64_t a, uint64_t b) { return a > b ? -1 : a < b ? 1 : 0; }
static int by_time(const void *a, const void *b)
{
    const cellar_stat_t *x = a, *y = b;
    int r = cmp_u64_desc(x->mtime, y->mtime);
    return r ? r : by_name(a, b);
}
static int by_ctime(const void *a, const void *b)
{
    const cellar_stat_t *x = a, *y = b;
    int r = cmp_u64_desc(x->ctime, y->ctime);
    return r ? r : by_name(a, b);
}
static int by_size(const void *a, const void *b)
{
    const cellar_stat_t *x = a, *y = b;
    int r = cmp_u64_desc(x->size, y->size);
    return r ? r : by_name(a, b);
}
static int by_id(const void *a, const void *b)
{
    const cellar_stat_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id ? 1 : by_name(a, b);
}

/* Listing in the order asked (name when no ls options say otherwise);
 * returns count or error (reported). */
static int list_in_order(cli_t *cli, const char *path, cellar_stat_t **out,
                         sort_key_t key, bool reverse)
{
    int n = cellar_list_alloc(&cli->dev, path, out);
    if (n < 0) {
        char show[SHOW_MAX];
        cli_lib_error(cli, cli_show(path, show, sizeof(show)), n);
        return n;
    }
    int (*cmp[])(const void *, const void *) = {by_name, by_time, by_ctime, by_size, by_id};
    if (key != SORT_NONE)
        qsort(*out, (size_t)n, sizeof(**out), cmp[key]);
    for (int i = 0; reverse && i < n / 2; i++) {
        cellar_stat_t t = (*out)[i];
        (*out)[i] = (*out)[n - 1 - i];
        (*out)[n - 1 - i] = t;
    }
    return n;
}

static int list_sorted(cli_t *cli, const char *path, cellar_stat_t **out)
{
    return list_in_order(cli, path, out, SORT_NAME, false);
}

/* ---- ls ------------------------------------------------------------------------ */
typedef struct ls_opts {
    bool lng, rec, all, ids, reverse;
    sort_key_t sort;
} ls_opts_t;

static void ls_print(cli_t *cli, const ls_opts_t *lo, const cellar_stat_t *st,
                     const char *rel)
{
    if (cli->json)
        return;
    const char *slash = st->type == CELLAR_TYPE_DIR ? "/" : "";
    if (lo->ids)
        printf("%8u ", st->id);
    if (lo->lng) {
        /* the time sorted by: creation time with --sort=ctime */
        char t[32];
        uint32_t when = lo->sort == SORT_CTIME ? st->ctime : st->mtime;
        printf("%c %10llu  %s  %s%s\n", st->type == CELLAR_TYPE_DIR ? 'd' : '-',
               (unsigned long long)st->size, cli_time(when, t, sizeof(t)),
               rel, slash);
    } else {
        printf("%s%s\n", rel, slash);
    }
}

/* A hidden component (a name starting with '.') in rel? */
static bool hidden_rel(const char *rel)
{
    for (const char *p = rel; *p; p++)
        if (*p == '.' && (p == rel || p[-1] == '/'))
            return true;
    return false;
}

/* The part of a tree entry's path below the listed root. */
static const char *rel_of(const char *root, const char *full)
{
    size_t n = strlen(root);
    return full + n + (n && root[n - 1] == '/' ? 0 : 1);
}

/* Print the entries of t in [lo_i, hi_i) at depth d, siblings in the
 * order asked (--sort), each directory's subtree under it (the tree comes in
 * pre-order by name). */
static void ls_level(cli_t *cli, const ls_opts_t *lo, const cellar_tree_t *t,
                     const char *path, size_t lo_i, size_t hi_i, unsigned d,
                     cJSON *arr)
{
    size_t ns = 0;
    for (size_t i = lo_i; i < hi_i; i++)
        ns += t->v[i].depth == d;
    if (!ns)
        return;
    /* each sibling with the end of its subtree, sorted by its stat */
    typedef struct { cellar_stat_t st; size_t at, end; } sib_t;
    sib_t *s = calloc(ns, sizeof(*s));
    if (!s) {
        perror("cellar");
        exit(CLI_FAILED);
    }
    size_t k = 0;
    for (size_t i = lo_i; i < hi_i; i++)
        if (t->v[i].depth == d) {
            if (k)
                s[k - 1].end = i;
            s[k].st = t->v[i].st;
            s[k++].at = i;
        }
    s[k - 1].end = hi_i;
    int (*cmp[])(const void *, const void *) = {by_name, by_time, by_ctime, by_size, by_id};
    if (lo->sort != SORT_NONE) /* (st is the first member: the comparators fit) */
        qsort(s, ns, sizeof(*s), cmp[lo->sort]);
    for (size_t j = 0; j < ns; j++) {
        const sib_t *e = &s[lo->reverse ? ns - 1 - j : j];
        const cellar_tree_entry_t *te = &t->v[e->at];
        const char *r = rel_of(path, te->path);
        if (!lo->all && hidden_rel(r))
            continue;
        char eshow[SHOW_MAX + 256];
        snprintf(eshow, sizeof(eshow), ":%s", te->path);
        ls_print(cli, lo, &te->st, r);
        if (arr)
            cJSON_AddItemToArray(arr, entry_json(&te->st, r, eshow));
        ls_level(cli, lo, t, path, e->at + 1, e->end, d + 1, arr);
    }
    free(s);
}

static int cmd_ls(cli_t *cli, int argc, char **argv)
{
    static const char *const longs[] = {"reverse", NULL};
    static const char *const vlongs[] = {"sort", NULL};
    cli_opts_t o = {.shorts = "lraitS", .longs = longs, .value_longs = vlongs};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > 1)
        return cli_usage(cli, cmd_of("ls"), "too many paths");
    sort_key_t key = o.flag['t'] ? SORT_TIME : o.flag['S'] ? SORT_SIZE : SORT_NAME;
    if (o.value[0]) {
        int k = 0;
        while (sort_words[k] && strcmp(sort_words[k], o.value[0]))
            k++;
        if (!sort_words[k])
            return cli_usage(cli, cmd_of("ls"),
                             "--sort is name, time, ctime, size, id or none, not '%s'",
                             o.value[0]);
        key = (sort_key_t)k;
    }
    char path[CELLAR_PATH_MAX + 1];
    if (!cli_devpath_arg(cli, n ? argv[0] : ":", path))
        return CLI_FAILED;
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    ls_opts_t lo = {.lng = o.flag['l'], .rec = o.flag['r'], .all = o.flag['a'],
                    .ids = o.flag['i'], .reverse = o.long_set[0], .sort = key};
    char show[SHOW_MAX];
    cli_show(path, show, sizeof(show));
    /* issue 11: Stat and the listing (every level with -r) in one batch
     * per level */
    cellar_tree_t t;
    int err = cellar_tree_list(&cli->dev, path, lo.rec ? 0 : 1, &t);
    if (err < 0) {
        cli_lib_error(cli, show, err);
        return CLI_FAILED;
    }
    cJSON *arr = NULL;
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "path", show);
        arr = cJSON_AddArrayToObject(cli->out, "entries");
    }
    if (t.root.type != CELLAR_TYPE_DIR) {
        const char *base = strrchr(path, '/') + 1;
        ls_print(cli, &lo, &t.root, base);
        if (arr)
            cJSON_AddItemToArray(arr, entry_json(&t.root, base, show));
        cellar_tree_free(&t);
        return CLI_OK;
    }
    ls_level(cli, &lo, &t, path, 0, t.n, 1, arr);
    cellar_tree_free(&t);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- cat ------------------------------------------------------------------------- */
static bool valid_utf8_text(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c == 0)
            return false;
        int k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                           : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (k < 0 || i + (size_t)k >= n + (k ? 0 : 1))
            return false;
        for (int j = 1; j <= k; j++)
            if (i + (size_t)j >= n || (p[i + (size_t)j] & 0xc0) != 0x80)
                return false;
        i += (size_t)k + 1;
    }
    return true;
}

static char *base64(const uint8_t *p, size_t n)
{
    static const char t[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *q++ = t[v >> 18 & 63];
        *q++ = t[v >> 12 & 63];
        *q++ = i + 1 < n ? t[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? t[v & 63] : '=';
    }
    *q = 0;
    return o;
}

static int cmd_cat(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("cat"), "missing device path");
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, "files") : NULL;
    for (int i = 0; i < n; i++) {
        char path[CELLAR_PATH_MAX + 1], show[SHOW_MAX];
        if (!cli_devpath_arg(cli, argv[i], path))
            continue;
        cli_show(path, show, sizeof(show));
        int err;
        if (!cli->json) {
            fflush(stdout);
            err = cellar_get_fd(&cli->dev, path, STDOUT_FILENO, NULL);
        } else {
            void *data = NULL;
            size_t len = 0;
            err = cellar_get_mem(&cli->dev, path, 256u << 20, &data, &len);
            if (err == 0) {
                cJSON *f = cJSON_CreateObject();
                cJSON_AddStringToObject(f, "path", show);
                cli_json_num(f, "size", (double)len);
                uint8_t sha[32];
                char hex[65];
                cellar_sha256(data, len, sha);
                cJSON_AddStringToObject(f, "sha256", cellar_sha256_hex(sha, hex));
                if (valid_utf8_text(data, len)) {
                    char *s = malloc(len + 1);
                    if (s) {
                        memcpy(s, data, len);
                        s[len] = 0;
                        cJSON_AddStringToObject(f, "content", s);
                        free(s);
                    }
                } else {
                    char *b = base64(data, len);
                    if (b)
                        cJSON_AddStringToObject(f, "content_base64", b);
                    free(b);
                }
                cJSON_AddItemToArray(arr, f);
            }
            free(data);
        }
        if (err < 0)
            cli_lib_error(cli, show, err);
    }
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- cp -------------------------------------------------------------------------- */
typedef struct cp_ctx {
    cli_t *cli;
    bool upload;
    cJSON *copied, *skipped;
    unsigned ncopied, nskipped, nfailed;
} cp_ctx_t;

static void cp_on_file(void *ctx, const char *src, const char *dst, bool is_dir,
                       int result)
{
    cp_ctx_t *cp = ctx;
    cli_t *cli = cp->cli;
    char s[4096 + 2], d[4096 + 2];
    snprintf(s, sizeof(s), "%s%s", cp->upload || !src ? "" : ":", src ? src : "-");
    snprintf(d, sizeof(d), "%s%s", cp->upload ? ":" : "", dst);
    if (result < 0) {
        cp->nfailed++;
        cli_lib_error(cli, cp->upload ? d : s, result);
        return;
    }
    if (is_dir)
        return;
    uint64_t bytes = 0;
    struct stat st;
    if (stat(cp->upload ? src : dst, &st) == 0)
        bytes = (uint64_t)st.st_size;
    cli_bar_clear(cli);
    if (result == CELLAR_SKIPPED) {
        cp->nskipped++;
        if (!cli->json)
            printf("skipped %s (unchanged)\n", d);
        if (cp->skipped) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "src", s);
            cJSON_AddStringToObject(e, "dst", d);
            cli_json_num(e, "bytes", (double)bytes);
            cJSON_AddItemToArray(cp->skipped, e);
        }
    } else {
        cp->ncopied++;
        if (!cli->json)
            printf("copied %s -> %s (%llu bytes)\n", s, d, (unsigned long long)bytes);
        if (cp->copied) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "src", s);
            cJSON_AddStringToObject(e, "dst", d);
            cli_json_num(e, "bytes", (double)bytes);
            cJSON_AddItemToArray(cp->copied, e);
        }
    }
    fflush(stdout);
}

/* Last component of a local or device path, ignoring trailing slashes. */
static void base_of(const char *p, char *out, size_t cap)
{
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        n--;
    size_t s = n;
    while (s > 0 && p[s - 1] != '/')
        s--;
    snprintf(out, cap, "%.*s", (int)(n - s), p + s);
}

static int cmd_cp(cli_t *cli, int argc, char **argv)
{
    const cli_cmd_t *me = cmd_of("cp");
    cli_opts_t o = {.shorts = "rf"};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 2)
        return cli_usage(cli, me, "need a source and a destination");
    const char *dst = argv[n - 1];
    bool upload = cli_is_remote(dst);
    for (int i = 0; i < n - 1; i++) {
        if (cli_is_remote(argv[i]) == upload)
            return cli_usage(cli, me,
                             upload ? "'%s': copying between two device paths is "
                                      "not supported; sources must be local"
                                    : "'%s': one side must be a device path "
                                      "(:PATH)",
                             argv[i]);
    }
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cp_ctx_t cp = {.cli = cli, .upload = upload};
    if (cli->json) {
        cp.copied = cJSON_AddArrayToObject(cli->out, "copied");
        cp.skipped = cJSON_AddArrayToObject(cli->out, "skipped");
    }
    cellar_xfer_t x = {
        .skip_unchanged = !o.flag['f'],
        .progress = cli_progress, .progress_ctx = cli,
        .on_file = cp_on_file, .on_file_ctx = &cp,
    };
    bool multi = n > 2;
    size_t dl = strlen(dst);
    bool dst_slash = dst[dl - 1] == '/' || (upload && dl == 1);

    if (upload) {
        char rdst[CELLAR_PATH_MAX + 1];
        if (!cli_devpath_arg(cli, dst, rdst))
            return CLI_FAILED;
        struct stat ls1;
        if (!multi && !dst_slash && !o.flag['f'] && stat(argv[0], &ls1) == 0 &&
            S_ISREG(ls1.st_mode)) {
            /* issue 11: one file to a path: its skip check (Stat + Hash of
             * rdst) also says whether rdst is a directory, so no Stat of
             * its own first; into the directory when it is one */
            cellar_xfer_t x1 = x;
            x1.on_file = NULL;
            int r = cellar_put_file(&cli->dev, argv[0], rdst, &x1);
            char em[sizeof(cli->dev.errpath)];
            snprintf(em, sizeof(em), ":%s", rdst);
            if (r == CELLAR_ERR_ISDIR && !strcmp(cellar_errpath(&cli->dev), em)) {
                char base[4096], target[4096 + CELLAR_PATH_MAX + 8];
                base_of(argv[0], base, sizeof(base));
                snprintf(target, sizeof(target), "%s%s%s", rdst, strcmp(rdst, "/") ? "/" : "",
                         base);
                if (strlen(target) > CELLAR_PATH_MAX) {
                    cli_error(cli, target, CELLAR_ERR_NAMETOOLONG, "path too long");
                    return CLI_FAILED;
                }
                (void)cellar_put_file(&cli->dev, argv[0], target, &x);
            } else {
                cp_on_file(&cp, argv[0], rdst, false, r);
            }
            goto done;
        }
        cellar_stat_t st;
        int serr = cellar_stat(&cli->dev, rdst, &st);
        bool dst_dir = serr == 0 && st.type == CELLAR_TYPE_DIR;
        if (serr < 0 && serr != CELLAR_ERR_NOENT) {
            char show[SHOW_MAX];
            cli_lib_error(cli, cli_show(rdst, show, sizeof(show)), serr);
            return CLI_FAILED;
        }
        if ((multi || dst_slash) && !dst_dir) {
            char show[SHOW_MAX];
            cli_error(cli, cli_show(rdst, show, sizeof(show)),
                      serr == 0 ? CELLAR_ERR_NOTDIR : CELLAR_ERR_NOENT, "%s",
                      serr == 0 ? "not a directory" : "no such directory");
            return CLI_FAILED;
        }
        for (int i = 0; i < n - 1 && cellar_connected(&cli->dev); i++) {
            const char *src = argv[i];
            struct stat ls;
            if (stat(src, &ls) < 0) {
                cli_error(cli, src, -errno, "%s", strerror(errno));
                continue;
            }
            char target[4096 + CELLAR_PATH_MAX + 8];
            char base[4096];
            base_of(src, base, sizeof(base));
            if (dst_dir)
                snprintf(target, sizeof(target), "%s%s%s", rdst,
                         strcmp(rdst, "/") ? "/" : "", base);
            else
                snprintf(target, sizeof(target), "%s", rdst);
            if (strlen(target) > CELLAR_PATH_MAX) {
                cli_error(cli, target, CELLAR_ERR_NAMETOOLONG, "path too long");
                continue;
            }
            if (S_ISDIR(ls.st_mode)) {
                if (!o.flag['r']) {
                    cli_error(cli, src, CELLAR_ERR_ISDIR,
                              "is a directory (use -r to copy it)");
                    continue;
                }
                (void)cellar_put_tree(&cli->dev, src, target, &x);
            } else {
                (void)cellar_put_file(&cli->dev, src, target, &x);
            }
        }
    } else {
        struct stat ls;
        bool dst_dir = stat(dst, &ls) == 0 && S_ISDIR(ls.st_mode);
        if ((multi || dst_slash) && !dst_dir) {
            cli_error(cli, dst, CELLAR_ERR_NOTDIR, "no such directory");
            return CLI_FAILED;
        }
        for (int i = 0; i < n - 1 && cellar_connected(&cli->dev); i++) {
            char rsrc[CELLAR_PATH_MAX + 1], show[SHOW_MAX];
            if (!cli_devpath_arg(cli, argv[i], rsrc))
                continue;
            cli_show(rsrc, show, sizeof(show));
            cellar_stat_t st;
            int err = cellar_stat(&cli->dev, rsrc, &st);
            if (err < 0) {
                cli_lib_error(cli, show, err);
                continue;
            }
            char base[CELLAR_PATH_MAX + 1];
            base_of(rsrc, base, sizeof(base));
            if (!strcmp(rsrc, "/"))
                snprintf(base, sizeof(base), "root");
            char *target = dst_dir ? join(dst, base) : strdup(dst);
            if (st.type == CELLAR_TYPE_DIR) {
                if (!o.flag['r'])
                    cli_error(cli, show, CELLAR_ERR_ISDIR,
                              "is a directory (use -r to copy it)");
                else
                    (void)cellar_get_tree(&cli->dev, rsrc, target, &x);
            } else {
                (void)cellar_get_file(&cli->dev, rsrc, target, &x);
            }
            free(target);
        }
    }
done:
    if (!cellar_connected(&cli->dev) && !cli->failed)
        cli_lib_error(cli, NULL, CELLAR_ERR_NOTCONN);
    if (!cli->json && (cp.ncopied + cp.nskipped + cp.nfailed) > 1)
        printf("%u copied, %u skipped, %u failed\n", cp.ncopied, cp.nskipped,
               cp.nfailed);
    if (cli->json) {
        cli_json_num(cli->out, "ncopied", cp.ncopied);
        cli_json_num(cli->out, "nskipped", cp.nskipped);
        cli_json_num(cli->out, "nfailed", cp.nfailed);
    }
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- rm, mkdir, rmdir, touch ---------------------------------------------------------- */
static bool is_part_root(const char *p)
{
    if (!strcmp(p, "/"))
        return true;
    const char *s = strchr(p + 1, '/');
    return s == NULL;
}

/* A device path whose last name has a wildcard (* ? [...], as fnmatch; a
 * leading '.' only matched by a '.', as in the shell): the matching entries
 * of its directory, sorted, in *out (malloc'ed). Returns their number; 0 when
 * the path has no wildcard or nothing matches (the path is then used as
 * given, as the shell does), or an error (reported). So rm -r of ":/usr/"
 * and a star empties /usr and keeps its manifest (.cellar). */
static int glob_last(cli_t *cli, const char *path, char ***out)
{
    const char *slash = strrchr(path, '/');
    const char *pat = slash ? slash + 1 : path;
    if (!strpbrk(pat, "*?["))
        return 0;
    char dir[CELLAR_PATH_MAX + 1];
    size_t dl = slash ? (size_t)(slash - path) : 0;
    snprintf(dir, sizeof(dir), "%.*s", (int)(dl ? dl : 1), dl ? path : "/");
    cellar_stat_t *ents = NULL;
    int n = list_sorted(cli, dir, &ents);
    if (n < 0)
        return n;
    char **names = calloc((size_t)n + 1, sizeof(*names));
    int k = 0;
    for (int i = 0; names && i < n; i++)
        if (fnmatch(pat, ents[i].name, FNM_PERIOD) == 0)
            names[k++] = join(dir, ents[i].name);
    free(ents);
    *out = names;
    return k;
}

/* The operands (wildcards expanded) in one batch of requests, one round
 * trip for all (issue 11): each path's result is reported as each_path's
 * ops report it, in order. */
enum { NS_MKDIR, NS_RMDIR, NS_REMOVE, NS_TOUCH, NS_RENAME };
typedef struct ns_batch {
    cli_t *cli;
    char **paths;
    char **to;       /* NS_RENAME: where paths[i] goes (malloc'ed) */
    size_t n, cap;
    int kind;
    cJSON *arr;
} ns_batch_t;

static void ns_each(void *ctx, size_t i, int err)
{
    ns_batch_t *b = ctx;
    char show[SHOW_MAX];
    cli_show(b->paths[i], show, sizeof(show));
    if (err == CELLAR_ERR_ISDIR && b->kind == NS_REMOVE)
        cli_error(b->cli, show, err, "is a directory (use -r)");
    else if (err < 0)
        cli_lib_error(b->cli, show, err);
    else if (b->arr && b->kind == NS_RENAME) {
        char to[SHOW_MAX];
        cli_show(b->to[i], to, sizeof(to));
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "from", show);
        cJSON_AddStringToObject(m, "to", to);
        cJSON_AddItemToArray(b->arr, m);
    } else if (b->arr)
        cJSON_AddItemToArray(b->arr, cJSON_CreateString(show));
}

static bool ns_add(ns_batch_t *b, const char *path)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 16;
        char **nv = realloc(b->paths, nc * sizeof(*nv));
        if (!nv)
            return false;
        b->paths = nv;
        b->cap = nc;
    }
    return (b->paths[b->n] = strdup(path)) != NULL && ++b->n;
}

/* rm without -r: the Stats in one batch, then the Removes of what is not
 * a directory in another (the device's Remove would take an empty one). */
typedef struct rm_stat {
    ns_batch_t *b;
    bool *known;
} rm_stat_t;

static void stat_each(void *ctx, size_t i, int err)
{
    rm_stat_t *r = ctx;
    if (err < 0)
        ns_each(r->b, i, err);
    else
        r->known[i] = true;
}

static int remove_files(ns_batch_t *b)
{
    cellar_t *c = &b->cli->dev;
    cellar_stat_t *st = calloc(b->n, sizeof(*st));
    char **files = calloc(b->n, sizeof(*files));
    rm_stat_t r = {.b = b, .known = calloc(b->n, sizeof(bool))};
    int err = CELLAR_ERR_NOMEM;
    if (st && files && r.known)
        err = cellar_stat_many(c, b->n, (const char *const *)b->paths, st, stat_each, &r);
    else
        cli_error(b->cli, NULL, err, "out of memory");
    if (!st || !files || !r.known || !cellar_connected(c)) {
        free(st);
        free(files);
        free(r.known);
        return err;
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (r.known[i] && st[i].type == CELLAR_TYPE_DIR)
            ns_each(b, i, CELLAR_ERR_ISDIR);
        else if (r.known[i])
            files[k++] = b->paths[i];
    }
    if (k > 0) {
        ns_batch_t fb = *b;
        fb.paths = files;
        fb.n = k;
        err = cellar_remove_many(c, k, (const char *const *)files, ns_each, &fb);
    }
    free(st);
    free(files);
    free(r.known);
    return err;
}

/* The operands, wildcards expanded, into b->paths; false when out of memory
 * (reported). An operand that is not a device path is reported and left out. */
static bool collect_paths(cli_t *cli, int n, char **argv, ns_batch_t *b)
{
    bool oom = false;
    for (int i = 0; i < n && !oom && cellar_connected(&cli->dev); i++) {
        char path[CELLAR_PATH_MAX + 1];
        if (!cli_devpath_arg(cli, argv[i], path))
            continue;
        char **names = NULL;
        int k = glob_last(cli, path, &names);
        if (k < 0)
            continue;
        for (int j = 0; j < (k > 0 ? k : 1) && !oom; j++)
            oom = !ns_add(b, k > 0 ? names[j] : path);
        for (int j = 0; j < k; j++)
            free(names[j]);
        free(names);
    }
    if (oom)
        cli_error(cli, NULL, CELLAR_ERR_NOMEM, "out of memory");
    return !oom;
}

static void ns_free(ns_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->paths[i]);
        if (b->to)
            free(b->to[i]);
    }
    free(b->paths);
    free(b->to);
}

/* Run op on each operand (wildcards expanded: glob_last); collect the
 * paths done under `key`. */
static int each_path(cli_t *cli, int n, char **argv, const char *key,
                     int (*op)(cli_t *cli, const char *path, const char *show,
                               const cli_opts_t *o),
                     const cli_opts_t *o)
{
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, key) : NULL;
    ns_batch_t b = {.cli = cli};
    bool ok = collect_paths(cli, n, argv, &b);
    for (size_t i = 0; ok && i < b.n && cellar_connected(&cli->dev); i++) {
        char show[SHOW_MAX];
        cli_show(b.paths[i], show, sizeof(show));
        if (op(cli, b.paths[i], show, o) == 0 && arr)
            cJSON_AddItemToArray(arr, cJSON_CreateString(show));
    }
    ns_free(&b);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

static int batch_paths(cli_t *cli, int n, char **argv, const char *key, int kind,
                       const cli_opts_t *o)
{
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    ns_batch_t b = {.cli = cli, .kind = kind};
    b.arr = cli->json ? cJSON_AddArrayToObject(cli->out, key) : NULL;
    bool oom = !collect_paths(cli, n, argv, &b);
    if (!oom && b.n > 0 && cellar_connected(&cli->dev)) {
        const char *const *v = (const char *const *)b.paths;
        cellar_t *c = &cli->dev;
        int err = kind == NS_MKDIR   ? cellar_mkdir_many(c, b.n, v, o->flag['p'], ns_each, &b)
                  : kind == NS_RMDIR ? cellar_rmdir_many(c, b.n, v, ns_each, &b)
                  : kind == NS_TOUCH ? cellar_touch_many(c, b.n, v, ns_each, &b)
                                     : remove_files(&b);
        if (err < 0 && !cli->failed) /* a connection error before any answer */
            cli_lib_error(cli, NULL, err);
    }
    ns_free(&b);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

static int op_rm(cli_t *cli, const char *path, const char *show, const cli_opts_t *o)
{
    if (o->flag['r'] && !is_part_root(path)) {
        /* issue 11: the listing and the removals in two batches, whatever
         * path is (cellar_remove_tree takes a file too) */
        int rerr = cellar_remove_tree(&cli->dev, path);
        if (rerr < 0)
            cli_lib_error(cli, show, rerr);
        return rerr;
    }
    cellar_stat_t st;
    int err = cellar_stat(&cli->dev, path, &st);
    if (err == 0 && st.type == CELLAR_TYPE_DIR) {
        if (!o->flag['r']) {
            cli_error(cli, show, CELLAR_ERR_ISDIR, "is a directory (use -r)");
            return CELLAR_ERR_ISDIR;
        }
        if (is_part_root(path)) {
            cli_error(cli, show, CELLAR_ERR_PERM,
                      "refusing to remove a partition root (use format)");
            return CELLAR_ERR_PERM;
        }
        err = cellar_remove_tree(&cli->dev, path);
    } else if (err == 0) {
        err = cellar_remove(&cli->dev, path);
    }
    if (err < 0)
        cli_lib_error(cli, show, err);
    return err;
}

static int cmd_rm(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.shorts = "rf"};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("rm"), "missing device path");
    if (!o.flag['r'])
        return batch_paths(cli, n, argv, "removed", NS_REMOVE, &o);
    return each_path(cli, n, argv, "removed", op_rm, &o);
}

static int cmd_mkdir(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.shorts = "p"};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("mkdir"), "missing device path");
    return batch_paths(cli, n, argv, "created", NS_MKDIR, &o);
}

static int cmd_rmdir(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("rmdir"), "missing device path");
    return batch_paths(cli, n, argv, "removed", NS_RMDIR, &o);
}

static int cmd_touch(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("touch"), "missing device path");
    return batch_paths(cli, n, argv, "touched", NS_TOUCH, &o);
}

/* ---- mv ------------------------------------------------------------------------------- */
/* mv SRC... DIR: the Stat of DIR, then every rename in one batch. */
static int mv_into(cli_t *cli, int n, char **argv, const char *dir_arg)
{
    char dir[CELLAR_PATH_MAX + 1], show[SHOW_MAX];
    if (!cli_devpath_arg(cli, dir_arg, dir) || cli_connect(cli) < 0)
        return CLI_FAILED;
    cli_show(dir, show, sizeof(show));
    cellar_stat_t st;
    int err = cellar_stat(&cli->dev, dir, &st);
    if (err < 0) {
        cli_lib_error(cli, show, err);
        return CLI_FAILED;
    }
    if (st.type != CELLAR_TYPE_DIR) {
        cli_error(cli, show, CELLAR_ERR_NOTDIR,
                  "not a directory (the target of several sources)");
        return CLI_FAILED;
    }
    ns_batch_t b = {.cli = cli, .kind = NS_RENAME};
    b.arr = cli->json ? cJSON_AddArrayToObject(cli->out, "moved") : NULL;
    bool ok = collect_paths(cli, n, argv, &b);
    if (ok && b.n > 0)
        ok = (b.to = calloc(b.n, sizeof(*b.to))) != NULL;
    size_t dl = strlen(dir);
    for (size_t i = 0; ok && i < b.n; i++) {
        char base[CELLAR_PATH_MAX + 1];
        base_of(b.paths[i], base, sizeof(base));
        if (dl + 1 + strlen(base) > CELLAR_PATH_MAX) {
            cli_error(cli, show, CELLAR_ERR_NAMETOOLONG, "path too long");
            ok = false;
        } else if (!(b.to[i] = malloc(dl + 2 + strlen(base)))) {
            ok = false;
        } else {
            size_t k = dl;
            memcpy(b.to[i], dir, dl);
            if (strcmp(dir, "/"))
                b.to[i][k++] = '/';
            memcpy(b.to[i] + k, base, strlen(base) + 1);
        }
    }
    if (ok && b.n > 0 && cellar_connected(&cli->dev)) {
        err = cellar_rename_many(&cli->dev, b.n, (const char *const *)b.paths,
                                 (const char *const *)b.to, ns_each, &b);
        if (err < 0 && !cli->failed)
            cli_lib_error(cli, NULL, err);
    } else if (!ok && !cli->failed) {
        cli_error(cli, NULL, CELLAR_ERR_NOMEM, "out of memory");
    }
    ns_free(&b);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

static int cmd_mv(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 2)
        return cli_usage(cli, cmd_of("mv"), "need a source and a destination");
    if (n > 2)
        return mv_into(cli, n - 1, argv, argv[n - 1]);
    char from[CELLAR_PATH_MAX + 1], to[CELLAR_PATH_MAX + 1];
    char sf[SHOW_MAX], st_[SHOW_MAX];
    if (!cli_devpath_arg(cli, argv[0], from) || !cli_devpath_arg(cli, argv[1], to))
        return CLI_FAILED;
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cellar_stat_t st;
    if (cellar_stat(&cli->dev, to, &st) == 0 && st.type == CELLAR_TYPE_DIR) {
        char base[CELLAR_PATH_MAX + 1];
        base_of(from, base, sizeof(base));
        size_t tl = strlen(to);
        if (tl + 1 + strlen(base) > CELLAR_PATH_MAX) {
            cli_error(cli, argv[1], CELLAR_ERR_NAMETOOLONG, "path too long");
            return CLI_FAILED;
        }
        if (strcmp(to, "/"))
            to[tl++] = '/';
        memcpy(to + tl, base, strlen(base) + 1);
    }
    cli_show(from, sf, sizeof(sf));
    cli_show(to, st_, sizeof(st_));
    int err = cellar_rename(&cli->dev, from, to);
    if (err < 0) {
        cli_lib_error(cli, sf, err);
        return CLI_FAILED;
    }
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "from", sf);
        cJSON_AddStringToObject(cli->out, "to", st_);
    }
    return CLI_OK;
}

/* ---- sha256sum ------------------------------------------------------------------------- */
static int cmd_sha256sum(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, cmd_of("sha256sum"), "missing path");
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, "files") : NULL;
    /* issue 11: every device path hashed in one batch, printed in order */
    char (*rpath)[CELLAR_PATH_MAX + 1] = calloc((size_t)n, sizeof(*rpath));
    const char **rp = calloc((size_t)n, sizeof(*rp));
    uint8_t (*rsha)[CELLAR_SHA256_SIZE] = calloc((size_t)n, sizeof(*rsha));
    uint64_t *rsize = calloc((size_t)n, sizeof(*rsize));
    int *rerr = calloc((size_t)n, sizeof(*rerr)), *rk = calloc((size_t)n, sizeof(*rk));
    if (!rpath || !rp || !rsha || !rsize || !rerr || !rk) {
        perror("cellar");
        exit(CLI_FAILED);
    }
    size_t nr = 0;
    for (int i = 0; i < n; i++) {
        rk[i] = -1;
        if (cli_is_remote(argv[i]) && cli_devpath_arg(cli, argv[i], rpath[nr])) {
            rp[nr] = rpath[nr];
            rk[i] = (int)nr++;
        }
    }
    if (nr > 0) {
        if (cli_connect(cli) < 0) {
            free(rpath);
            free(rp);
            free(rsha);
            free(rsize);
            free(rerr);
            free(rk);
            return CLI_FAILED;
        }
        (void)cellar_hash_many(&cli->dev, nr, rp, rsha, rsize, rerr);
    }
    for (int i = 0; i < n; i++) {
        uint8_t sha[CELLAR_SHA256_SIZE];
        char hex[65], show[SHOW_MAX];
        const char *name = argv[i];
        uint64_t size = 0;
        int err;
        if (cli_is_remote(argv[i])) {
            if (rk[i] < 0)
                continue;
            name = cli_show(rpath[rk[i]], show, sizeof(show));
            err = rerr[rk[i]];
            if (err < 0) {
                cli_lib_error(cli, name, err);
                continue;
            }
            memcpy(sha, rsha[rk[i]], sizeof(sha));
            size = rsize[rk[i]];
        } else {
            err = cellar_sha256_file(argv[i], sha);
            if (err < 0) {
                cli_error(cli, argv[i], err, "%s", cellar_strerror(err));
                continue;
            }
            struct stat ls;
            if (stat(argv[i], &ls) == 0)
                size = (uint64_t)ls.st_size;
        }
        cellar_sha256_hex(sha, hex);
        if (arr) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", name);
            cJSON_AddStringToObject(e, "sha256", hex);
            cli_json_num(e, "size", (double)size);
            cJSON_AddItemToArray(arr, e);
        } else {
            printf("%s  %s\n", hex, name);
        }
    }
    free(rpath);
    free(rp);
    free(rsha);
    free(rsize);
    free(rerr);
    free(rk);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- tree ------------------------------------------------------------------------------- */
typedef struct tree_ctx {
    cli_t *cli;
    bool all;
    unsigned dirs, files;
    uint64_t bytes;
} tree_ctx_t;

static int cmd_tree(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.shorts = "a"};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > 1)
        return cli_usage(cli, cmd_of("tree"), "too many paths");
    char path[CELLAR_PATH_MAX + 1], show[SHOW_MAX];
    if (!cli_devpath_arg(cli, n ? argv[0] : ":", path))
        return CLI_FAILED;
    cli_show(path, show, sizeof(show));
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    /* issue 11: the whole tree, one batch per level */
    cellar_tree_t tr;
    int err = cellar_tree_list(&cli->dev, path, 0, &tr);
    if (err == 0 && tr.root.type != CELLAR_TYPE_DIR) {
        cellar_tree_free(&tr);
        err = CELLAR_ERR_NOTDIR;
    }
    if (err < 0) {
        if (err == CELLAR_ERR_NOTDIR)
            cli_error(cli, show, err, "not a directory");
        else
            cli_lib_error(cli, show, err);
        return CLI_FAILED;
    }
    tree_ctx_t t = {.cli = cli, .all = o.flag['a']};
    cJSON *root = NULL;
    if (cli->json) {
        root = cJSON_AddObjectToObject(cli->out, "tree");
        cJSON_AddStringToObject(root, "name", show);
        cJSON_AddStringToObject(root, "type", "dir");
    } else {
        printf("%s\n", show);
    }
    /* the entries shown (pre-order), and which is the last of its siblings */
    size_t *idx = malloc((tr.n + 1) * sizeof(*idx)), ns = 0;
    bool *last = malloc((tr.n + 1) * sizeof(*last));
    if (!idx || !last) {
        perror("cellar");
        exit(CLI_FAILED);
    }
    for (size_t i = 0; i < tr.n; i++)
        if (t.all || !hidden_rel(rel_of(path, tr.v[i].path)))
            idx[ns++] = i;
    enum { DMAX = 130 };
    bool after[DMAX + 1] = {false}, anc_last[DMAX + 1] = {false};
    cJSON *kids[DMAX + 1] = {NULL};
    for (size_t k = ns; k-- > 0;) {
        unsigned d = tr.v[idx[k]].depth > DMAX ? DMAX : tr.v[idx[k]].depth;
        last[k] = !after[d];
        after[d] = true;
        for (unsigned j = d + 1; j <= DMAX; j++)
            after[j] = false;
    }
    if (root)
        kids[1] = cJSON_AddArrayToObject(root, "children");
    for (size_t k = 0; k < ns; k++) {
        const cellar_tree_entry_t *e = &tr.v[idx[k]];
        unsigned d = e->depth > DMAX ? DMAX : e->depth;
        bool is_dir = e->st.type == CELLAR_TYPE_DIR;
        anc_last[d] = last[k];
        if (!cli->json) {
            for (unsigned j = 1; j < d; j++)
                fputs(anc_last[j] ? "    " : "\u2502   ", stdout);
            printf("%s%s%s\n", last[k] ? "\u2514\u2500\u2500 " : "\u251c\u2500\u2500 ",
                   e->st.name, is_dir ? "/" : "");
        }
        if (kids[d]) {
            cJSON *node = cJSON_CreateObject();
            cJSON_AddStringToObject(node, "name", e->st.name);
            cJSON_AddStringToObject(node, "type", type_name(e->st.type));
            cli_json_num(node, "size", (double)e->st.size);
            cli_json_num(node, "mtime", e->st.mtime);
            cJSON_AddItemToArray(kids[d], node);
            if (is_dir && d < DMAX)
                kids[d + 1] = cJSON_AddArrayToObject(node, "children");
        }
        if (is_dir) {
            t.dirs++;
        } else {
            t.files++;
            t.bytes += e->st.size;
        }
    }
    free(idx);
    free(last);
    cellar_tree_free(&tr);
    if (cli->json) {
        cli_json_num(cli->out, "dirs", t.dirs);
        cli_json_num(cli->out, "files", t.files);
        cli_json_num(cli->out, "bytes", (double)t.bytes);
    } else {
        char h[32];
        printf("\n%u director%s, %u file%s, %s\n", t.dirs, t.dirs == 1 ? "y" : "ies",
               t.files, t.files == 1 ? "" : "s", cli_human(t.bytes, h, sizeof(h)));
    }
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- df --------------------------------------------------------------------------------- */
static int cmd_df(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    const cellar_info_t *in = cellar_info(&cli->dev);
    char paths[CELLAR_MAX_PARTITIONS + 8][CELLAR_PATH_MAX + 1];
    int np = 0;
    if (n > 0) {
        for (int i = 0; i < n && np < CELLAR_MAX_PARTITIONS + 8; i++)
            if (cli_devpath_arg(cli, argv[i], paths[np]))
                np++;
    } else {
        for (uint32_t i = 0; i < in->npartitions; i++)
            if (in->partitions[i].kind != CELLAR_KIND_RAW) /* issue 15 */
                snprintf(paths[np++], sizeof(paths[0]), "%s", in->partitions[i].path);
        if (np == 0)
            snprintf(paths[np++], sizeof(paths[0]), "/usr");
    }
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, "partitions") : NULL;
    if (!cli->json)
        printf("%-8s %10s %10s %10s %10s %10s %5s %7s %6s  %9s %9s %4s\n", "path", "size",
               "used", "free", "freeable", "avail", "use%", "files", "dirs", "erase max",
               "mean", "bad");
    /* issue 11: every partition's StatFs in one batch */
    cellar_statfs_t fs[CELLAR_MAX_PARTITIONS + 8];
    int errs[CELLAR_MAX_PARTITIONS + 8];
    const char *pp[CELLAR_MAX_PARTITIONS + 8];
    for (int i = 0; i < np; i++)
        pp[i] = paths[i];
    (void)cellar_statfs_many(&cli->dev, (size_t)np, pp, fs, errs);
    for (int i = 0; i < np; i++) {
        cellar_statfs_t f = fs[i];
        char show[SHOW_MAX];
        int err = errs[i];
        if (err < 0) {
            cli_lib_error(cli, cli_show(paths[i], show, sizeof(show)), err);
            fs[i].page_size = 0; /* not in the pages table */
            continue;
        }
        double pct = f.total ? 100.0 * (double)f.used / (double)f.total : 0;
        if (arr) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", paths[i]);
            cli_json_space(e, &f);
            cli_json_num(e, "use_percent", pct);
            cli_json_num(e, "block_size", f.block_size);
            cli_json_num(e, "block_count", f.block_count);
            cJSON_AddItemToArray(arr, e);
        } else {
            char a[32], b[32], c[32], d[32], e[32];
            printf("%-8s %10s %10s %10s %10s %10s %4.0f%% %7u %6u  %9u %9u %4u\n", paths[i],
                   cli_human(f.total, a, sizeof(a)), cli_human(f.used, b, sizeof(b)),
                   cli_human(f.free, c, sizeof(c)), cli_human(f.reclaimable, e, sizeof(e)),
                   cli_human(f.available, d, sizeof(d)),
                   pct, f.files, f.dirs, f.erase_max, f.erase_mean, f.bad_blocks);
        }
    }
    /* SPIFlashFileSystem's page statistics, and the GC threshold */
    if (!cli->json && np > 0) {
        printf("\n%-8s %6s %9s %9s %9s %9s  %s\n", "path", "page", "free", "used",
               "erased", "bad", "gc below (blocks)");
        for (int i = 0; i < np; i++) {
            if (!fs[i].page_size)
                continue;
            printf("%-8s %6u %9u %9u %9u %9u  %u\n", paths[i], fs[i].page_size,
                   fs[i].pages_free, fs[i].pages_used, fs[i].pages_erased,
                   fs[i].pages_bad, fs[i].gc_threshold);
        }
    }
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- info ------------------------------------------------------------------------------- */
static const char *part_state(uint32_t st)
{
    switch (st) {
    case CELLAR_PART_OK: return "ok";
    case CELLAR_PART_FULL: return "full (only removals until space is freed)";
    case CELLAR_PART_NO_MANIFEST: return "no manifest (read-only)";
    case CELLAR_PART_UNMOUNTED: return "not mounted (format it)";
    default: return "unknown state";
    }
}

static int cmd_info(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > 0)
        return cli_usage(cli, cmd_of("info"), "no operands expected");
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    int herr = cellar_hello_status(&cli->dev); /* a pipelined Hello refused */
    if (herr < 0) {
        cli_lib_error(cli, NULL, herr);
        return CLI_FAILED;
    }
    const cellar_info_t *in = cellar_info(&cli->dev);
    if (cli->json) {
        cJSON *j = cli->out;
        cJSON_AddStringToObject(j, "url", cli->url);
        cJSON_AddStringToObject(j, "device", in->device);
        cJSON_AddStringToObject(j, "firmware", in->firmware);
        cli_json_num(j, "protocol", in->version);
        cli_json_num(j, "max_frame", in->max_frame);
        cli_json_num(j, "max_inflight", in->max_inflight);
        cli_json_num(j, "max_path", in->max_path);
        cli_json_num(j, "max_chunk", in->max_chunk);
        cli_json_num(j, "max_handles", in->max_handles);
        cli_json_num(j, "block_size", in->block_size);
        cli_json_num(j, "block_count", in->block_count);
        cli_json_num(j, "page_size", in->page_size);
        cli_json_num(j, "flash_bytes", (double)in->block_size * in->block_count);
        cJSON *arr = cJSON_AddArrayToObject(j, "partitions");
        for (uint32_t i = 0; i < in->npartitions; i++) {
            const cellar_partition_t *p = &in->partitions[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", p->path);
            cli_json_num(e, "first_block", p->first_block);
            cli_json_num(e, "block_count", p->block_count);
            cli_json_num(e, "bytes", (double)p->block_count * in->block_size);
            cJSON_AddBoolToObject(e, "read_only", p->read_only);
            cJSON_AddStringToObject(e, "state", part_state(p->state));
            cJSON_AddStringToObject(e, "kind", p->kind == CELLAR_KIND_RAW ? "raw" /* issue 15 */
                                               : p->kind == CELLAR_KIND_FAT ? "fat" : "cfs");
            cJSON_AddItemToArray(arr, e);
        }
        cJSON *pr = cJSON_AddArrayToObject(j, "problems");
        for (uint32_t i = 0; i < in->nproblems; i++)
            cJSON_AddItemToArray(pr, cJSON_CreateString(in->problems[i]));
        if (in->identity[0]) { /* issue 13 */
            cJSON_AddStringToObject(j, "identity", in->identity);
            cJSON_AddStringToObject(j, "role", in->role);
            cJSON *px = cJSON_AddArrayToObject(j, "prefixes");
            for (uint32_t i = 0; i < in->nprefixes; i++)
                cJSON_AddItemToArray(px, cJSON_CreateString(in->prefixes[i]));
        }
        return CLI_OK;
    }
    char h[32];
    printf("url:           %s\n", cli->url);
    printf("device:        %s\n", in->device);
    printf("firmware:      %s\n", in->firmware);
    printf("protocol:      %u\n", in->version);
    if (in->identity[0]) { /* issue 13 */
        printf("access:        identity: %s, role: %s", in->identity, in->role);
        for (uint32_t i = 0; i < in->nprefixes; i++)
            printf("%s%s", i ? " " : " (writes only under ", in->prefixes[i]);
        printf("%s\n", in->nprefixes ? ")" : "");
    }
    printf("flash:         %s (%u blocks of %u bytes, %u-byte pages)\n",
           cli_human((uint64_t)in->block_size * in->block_count, h, sizeof(h)),
           in->block_count, in->block_size, in->page_size);
    printf("limits:        frame %u B, chunk %u B, %u in flight, %u handles, "
           "path %u B\n", in->max_frame, in->max_chunk, in->max_inflight,
           in->max_handles, in->max_path);
    printf("partitions:\n");
    for (uint32_t i = 0; i < in->npartitions; i++) {
        const cellar_partition_t *p = &in->partitions[i];
        if (p->kind == CELLAR_KIND_FAT) { /* issue 15 (sd): the SD card */
            printf("  %-6s SD card, FAT (%s)%s\n", p->path,
                   cli_human((uint64_t)p->block_count * in->block_size, h, sizeof(h)),
                   p->state == CELLAR_PART_UNMOUNTED ? ", not mounted (see problems)" : "");
            continue;
        }
        printf("  %-6s blocks %u-%u (%s)%s%s%s\n", p->path, p->first_block,
               p->first_block + p->block_count - 1,
               cli_human((uint64_t)p->block_count * in->block_size, h, sizeof(h)),
               p->read_only ? ", read-only" : "",
               p->state ? ", " : "", p->state ? part_state(p->state) : "");
        if (p->kind == CELLAR_KIND_RAW) /* issue 15 */
            printf("         raw partition at %#llx (cellar raw ls)\n",
                   (unsigned long long)p->first_block * in->block_size);
    }
    if (in->nproblems) {
        printf("problems:\n");
        for (uint32_t i = 0; i < in->nproblems; i++)
            printf("  %s\n", in->problems[i]);
    }
    return CLI_OK;
}

/* ---- format ------------------------------------------------------------------------------ */
/* ---- gc (SPIFlashFileSystem's gc() and setAutoGc()) ----------------------------------- */
static bool parse_u32(const char *v, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (!*v || *end || errno || x > UINT32_MAX || v[0] == '-')
        return false;
    *out = (uint32_t)x;
    return true;
}

static int cmd_gc(cli_t *cli, int argc, char **argv)
{
    static const char *const vlongs[] = {"blocks", "threshold", NULL};
    cli_opts_t o = {.value_longs = vlongs};
    const cli_cmd_t *me = cmd_of("gc");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > 1)
        return cli_usage(cli, me, "give one partition");
    if (o.value[0] && o.value[1])
        return cli_usage(cli, me, "--blocks and --threshold do not go together");
    uint32_t blocks = 0, threshold = 0;
    if (o.value[0] && !parse_u32(o.value[0], &blocks))
        return cli_usage(cli, me, "--blocks takes a number of blocks, not '%s'", o.value[0]);
    if (o.value[1] && !parse_u32(o.value[1], &threshold))
        return cli_usage(cli, me, "--threshold takes a number of blocks, not '%s'",
                         o.value[1]);
    char part[CELLAR_PATH_MAX + 1] = "/usr";
    if (n == 1 && !cli_devpath_arg(cli, argv[0], part))
        return CLI_FAILED;
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    char show[SHOW_MAX];
    cli_show(part, show, sizeof(show));
    if (o.value[1]) {
        uint32_t prev = 0;
        int err = cellar_gc_threshold(&cli->dev, part, threshold, &prev);
        if (err < 0) {
            cli_lib_error(cli, show, err);
            return CLI_FAILED;
        }
        if (cli->json) {
            cli_json_num(cli->out, "threshold", threshold);
            cli_json_num(cli->out, "previous", prev);
        } else {
            printf("%s: automatic gc below %u free blocks (was %u), until restart\n",
                   show, threshold, prev);
        }
        return CLI_OK;
    }
    cellar_gc_result_t r;
    int err = cellar_gc(&cli->dev, part, blocks, &r);
    if (err < 0) {
        cli_lib_error(cli, show, err);
        return CLI_FAILED;
    }
    if (cli->json) {
        cli_json_num(cli->out, "blocks_swept", r.blocks_swept);
        cli_json_num(cli->out, "reclaimed", (double)r.reclaimed);
        cli_json_num(cli->out, "free_before", (double)r.free_before);
        cli_json_num(cli->out, "free_after", (double)r.free_after);
        cli_json_num(cli->out, "reclaimable_after", (double)r.reclaimable_after);
    } else {
        char a[32], b[32], c[32], d[32];
        printf("%s: reclaimed %s in %u blocks; free %s -> %s; %s still freeable\n", show,
               cli_human(r.reclaimed, a, sizeof(a)), r.blocks_swept,
               cli_human(r.free_before, b, sizeof(b)), cli_human(r.free_after, c, sizeof(c)),
               cli_human(r.reclaimable_after, d, sizeof(d)));
    }
    return CLI_OK;
}

static int cmd_format(cli_t *cli, int argc, char **argv)
{
    static const char *const longs[] = {"yes", "all", NULL};
    cli_opts_t o = {.longs = longs, .shorts = "y"};
    const cli_cmd_t *me = cmd_of("format");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > 1 || (n == 1 && o.long_set[1]))
        return cli_usage(cli, me, "give one partition or --all");
    char part[CELLAR_PATH_MAX + 1] = "/usr";
    if (o.long_set[1])
        part[0] = 0;
    else if (n == 1 && !cli_devpath_arg(cli, argv[0], part))
        return CLI_FAILED;
    const char *show = part[0] ? part : "every partition";
    if (!o.long_set[0] && !o.flag['y'])
        return cli_usage(cli, me, "this erases everything on %s: add --yes to confirm",
                         show);
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    int err = cellar_format(&cli->dev, part);
    if (err < 0) {
        char s[SHOW_MAX];
        cli_lib_error(cli, part[0] ? cli_show(part, s, sizeof(s)) : NULL, err);
        return CLI_FAILED;
    }
    if (cli->json)
        cJSON_AddStringToObject(cli->out, "formatted", part[0] ? part : "all");
    else
        printf("formatted %s\n", show);
    return CLI_OK;
}

const cli_cmd_t cli_device_cmds[] = {
    {"ls", cmd_ls, "ls [-l] [-r] [-a] [-i] [-t | -S | --sort=KEY] [--reverse] [:PATH]",
     "List a device directory (default \":\" = /usr; \":/\" lists the partitions).",
     "  -l  long listing: type, size, modification time (UTC)\n"
     "  -r  recursive\n"
     "  -a  show hidden entries (names starting with '.')\n"
     "  -i  show each file's id (unique on its partition)\n"
     "  -t  newest first (modification time); -S largest first\n"
     "  --sort=KEY  name (default), time, ctime (creation time, newest first;\n"
     "              -l then shows it), size, id, none (the device's order)\n"
     "  --reverse   the other way round\n"},
    {"cat", cmd_cat, "cat :PATH...", "Print device files (SHA-256 verified).", NULL},
    {"cp", cmd_cp, "cp [-r] [-f] SRC... DST",
     "Copy files between the host and the device (device paths start with ':').",
     "  -r  copy directories recursively\n"
     "  -f  copy even when the destination has the same SHA-256 (by default\n"
     "      unchanged files are skipped)\n"
     "Uploads go to a hidden temporary name, are verified by SHA-256 on the\n"
     "device and renamed into place, so a broken transfer never leaves a\n"
     "truncated file. Example: cellar cp -r app :/usr/app\n"},
    {"rm", cmd_rm, "rm [-r] :PATH...", "Remove device files (-r: directories too).",
     "  The last name of a PATH may hold wildcards (* ? [...], quoted so the\n"
     "  local shell leaves them): rm -r ':/usr/*' erases every file and\n"
     "  directory of /usr and keeps its manifest (.cellar).\n"},
    {"mkdir", cmd_mkdir, "mkdir [-p] :PATH...",
     "Create device directories (-p: with parents, no error if it exists).", NULL},
    {"rmdir", cmd_rmdir, "rmdir :PATH...", "Remove empty device directories.", NULL},
    {"mv", cmd_mv, "mv :SRC :DST | mv :SRC... :DIR",
     "Rename atomically on the device (into DST if it is a directory; several\n"
     "sources all go into DIR, in one batch).", NULL},
    {"touch", cmd_touch, "touch :PATH...", "Create empty device files if missing.", NULL},
    {"sha256sum", cmd_sha256sum, "sha256sum PATH...",
     "SHA-256 of device files (:PATH, computed on the device) or local files.", NULL},
    {"tree", cmd_tree, "tree [-a] [:PATH]", "Show a device directory as a tree.", NULL},
    {"df", cmd_df, "df [:PATH...]",
     "Space and wear of the partitions: size, used, free, freeable (stale data "
     "GC reclaims), files, erase counts, bad blocks; then flash pages by state "
     "(free, used, erased = stale, bad) and the GC threshold.", NULL},
    {"gc", cmd_gc, "gc [--blocks N | --threshold N] [:/usr | :/bak]",
     "Collect garbage now and report what was reclaimed, or set the automatic "
     "GC threshold.",
     "  --blocks N     stop once N blocks were gained (default: all that can be)\n"
     "  --threshold N  collect automatically when fewer than N blocks (at least\n"
     "                 6) are free above the reserve, until the device restarts\n"
     "                 (cellard --gc-threshold sets it at start)\n"},
    {"info", cmd_info, "info", "Show the device's Hello data and partitions.", NULL},
    {"format", cmd_format, "format --yes [:/usr | :/bak | --all]",
     "Erase and re-create a partition's filesystem (default /usr).",
     "  --yes  required: everything on the partition is lost\n"
     "  --all  every partition\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
