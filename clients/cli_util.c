/*
 * cli_util.c - helpers of the `cellar` tool: option parsing, device paths,
 * error reporting, progress bar, sizes and times (see cli.h).
 */
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- usage ------------------------------------------------------------------- */
void cli_print_help(const cli_cmd_t *cmd)
{
    printf("usage: cellar [-d URL] [--json] %s\n\n%s\n", cmd->usage, cmd->help);
    if (cmd->details)
        printf("\n%s", cmd->details);
    printf("\nGlobal options: -d URL (or CELLAR_DEVICE; default %s), "
           "--json (machine-readable output).\n"
           "Exit status: 0 success, 1 operation failed, 2 usage error.\n",
           CELLAR_DEFAULT_URL);
}

int cli_usage(cli_t *cli, const cli_cmd_t *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (cli->cmd && strcmp(cli->cmd, "cellar"))
        fprintf(stderr, "cellar: %s: %s\n", cli->cmd, msg);
    else
        fprintf(stderr, "cellar: %s\n", msg);
    if (cmd)
        fprintf(stderr, "usage: cellar %s\n", cmd->usage);
    if (cmd)
        fprintf(stderr, "Try 'cellar %s --help'.\n", cli->cmd);
    else
        fprintf(stderr, "Try 'cellar --help'.\n");
    if (cli->json && cli->errors) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "error", "EUSAGE");
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddItemToArray(cli->errors, e);
    }
    return CLI_USAGE;
}

const cli_cmd_t *cli_cmd_find(const cli_cmd_t *table, const char *name)
{
    for (const cli_cmd_t *c = table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

int cli_parse_cmd(cli_t *cli, const cli_cmd_t *table, int argc, char **argv,
                  cli_opts_t *o)
{
    int n = cli_parse(cli, cli_cmd_find(table, argv[0]), argc, argv, o);
    if (n == -2)
        return -(CLI_OK + 1);
    if (n < 0)
        return -(CLI_USAGE + 1);
    return n;
}

static int find_str(const char *const *list, const char *s, size_t n)
{
    for (int i = 0; list && list[i]; i++)
        if (strlen(list[i]) == n && strncmp(list[i], s, n) == 0)
            return i;
    return -1;
}

int cli_parse(cli_t *cli, const cli_cmd_t *cmd, int argc, char **argv,
              cli_opts_t *o)
{
    int nops = 0;
    bool only_ops = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_ops || a[0] != '-' || a[1] == 0) {
            argv[nops++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_ops = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(cmd);
            return -2;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            int k = find_str(o->longs, name, n);
            if (k >= 0 && !eq) {
                o->long_set[k] = true;
                continue;
            }
            k = find_str(o->value_longs, name, n);
            if (k >= 0) {
                if (eq) {
                    o->value[k] = eq + 1;
                } else if (i + 1 < argc) {
                    o->value[k] = argv[++i];
                } else {
                    cli_usage(cli, cmd, "option --%s needs a value", name);
                    return -1;
                }
                continue;
            }
            cli_usage(cli, cmd, "unknown option '%s'", a);
            return -1;
        }
        for (const char *p = a + 1; *p; p++) {
            unsigned char ch = (unsigned char)*p;
            if (ch < 128 && o->shorts && strchr(o->shorts, ch)) {
                o->flag[ch] = true;
            } else if (ch < 128 && o->value_shorts && strchr(o->value_shorts, ch)) {
                if (p[1]) {
                    o->svalue[ch] = p + 1;
                } else if (i + 1 < argc) {
                    o->svalue[ch] = argv[++i];
                } else {
                    cli_usage(cli, cmd, "option -%c needs a value", ch);
                    return -1;
                }
                break;
            } else {
                cli_usage(cli, cmd, "unknown option '-%c'", ch);
                return -1;
            }
        }
    }
    return nops;
}

/* ---- errors ------------------------------------------------------------------- */
static void json_error(cli_t *cli, const char *path, int code, const char *msg,
                       const char *devmsg)
{
    if (!cli->json || !cli->errors)
        return;
    cJSON *e = cJSON_CreateObject();
    if (path)
        cJSON_AddStringToObject(e, "path", path);
    cJSON_AddStringToObject(e, "error", code ? cellar_errname(code) : "EFAIL");
    cJSON_AddNumberToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", msg);
    if (devmsg && *devmsg)
        cJSON_AddStringToObject(e, "detail", devmsg);
    cJSON_AddItemToArray(cli->errors, e);
}

void cli_error(cli_t *cli, const char *path, int code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cli_bar_clear(cli);
    fflush(stdout);
    if (path)
        fprintf(stderr, "cellar: %s: %s: %s\n", cli->cmd, path, msg);
    else
        fprintf(stderr, "cellar: %s: %s\n", cli->cmd, msg);
    json_error(cli, path, code, msg, NULL);
    cli->failed = true;
}

/* The reason part of a device message: `op "/usr/x": reason` -> reason. */
static const char *device_reason(const char *msg, const char *path)
{
    const char *q = NULL;
    for (const char *p = strstr(msg, "\": "); p; p = strstr(p + 1, "\": "))
        q = p;
    if (q)
        return q + 3;
    size_t n = path ? strlen(path) : 0;
    if (n && strncmp(msg, path, n) == 0 && strncmp(msg + n, ": ", 2) == 0)
        return msg + n + 2;
    return msg;
}

void cli_lib_error(cli_t *cli, const char *fallback, int err)
{
    const char *ep = cellar_errpath(&cli->dev);
    const char *msg = cellar_errmsg(&cli->dev);
    char devmsg[256];
    snprintf(devmsg, sizeof(devmsg), "%s", msg);
    cli_bar_clear(cli);
    fflush(stdout);
    if (*ep && *ep != ':') {
        /* Local file: the message already starts with the path. */
        fprintf(stderr, "cellar: %s: %s\n", cli->cmd, devmsg);
        const char *r = device_reason(devmsg, ep);
        json_error(cli, ep, err, r, NULL);
    } else {
        char show[CELLAR_PATH_MAX + 2];
        const char *path = fallback;
        if (*ep) {
            snprintf(show, sizeof(show), "%s", ep);
            path = show;
        }
        const char *reason = *devmsg ? device_reason(devmsg, path ? path + 1 : NULL)
                                     : cellar_strerror(err);
        if (path)
            fprintf(stderr, "cellar: %s: %s: %s\n", cli->cmd, path, reason);
        else
            fprintf(stderr, "cellar: %s: %s\n", cli->cmd, reason);
        json_error(cli, path, err, reason, devmsg);
    }
    cli->failed = true;
}

/* ---- device ----------------------------------------------------------------------- */
int cli_connect(cli_t *cli)
{
    if (cli->connected)
        return 0;
    cellar_config_t cfg = {.client_name = "cellar-cli/" CELLAR_LIB_VERSION,
                           .tls_cert = cli->tls_cert, .tls_key = cli->tls_key,
                           .tls_ca = cli->tls_ca, .tls_psk = cli->tls_psk,
                           .hello_pipelined = true}; /* issue 11 */
    cellar_init(&cli->dev, &cfg);
    int err = cellar_connect(&cli->dev, cli->url);
    if (err < 0) {
        const char *m = cellar_errmsg(&cli->dev);
        char msg[300];
        snprintf(msg, sizeof(msg), "%s", m);
        fflush(stdout);
        fprintf(stderr, "cellar: %s: cannot connect to the device: %s\n",
                cli->cmd, msg);
        json_error(cli, NULL, err, msg, NULL);
        cli->failed = true;
        return err;
    }
    cli->connected = true;
    return 0;
}

bool cli_is_remote(const char *arg)
{
    return arg[0] == ':';
}

int cli_devpath(const char *arg, char *out)
{
    const char *p = arg[0] == ':' ? arg + 1 : arg;
    char tmp[2 * CELLAR_PATH_MAX + 16];
    if (strlen(p) > 2 * CELLAR_PATH_MAX)
        return CELLAR_ERR_NAMETOOLONG;
    if (p[0] == '/')
        snprintf(tmp, sizeof(tmp), "%s", p);
    else
        snprintf(tmp, sizeof(tmp), "/usr/%s", p);
    /* Normalise component by component into out. */
    size_t n = 0;
    char *save = NULL;
    char buf[sizeof(tmp)];
    char res[sizeof(tmp)];
    memcpy(buf, tmp, sizeof(buf));
    for (char *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0)
            continue;
        if (strcmp(c, "..") == 0) {
            while (n > 0 && res[n - 1] != '/')
                n--;
            if (n > 0)
                n--; /* the slash */
            continue;
        }
        size_t cl = strlen(c);
        if (n + 1 + cl >= sizeof(res))
            return CELLAR_ERR_NAMETOOLONG;
        res[n++] = '/';
        memcpy(res + n, c, cl);
        n += cl;
    }
    if (n == 0)
        res[n++] = '/';
    res[n] = 0;
    if (n > CELLAR_PATH_MAX)
        return CELLAR_ERR_NAMETOOLONG;
    memcpy(out, res, n + 1);
    return 0;
}

const char *cli_show(const char *devpath, char *buf, size_t cap)
{
    snprintf(buf, cap, ":%s", devpath);
    return buf;
}

/* ---- formatting ------------------------------------------------------------------- */
double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *cli_human(uint64_t b, char *buf, size_t cap)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)b);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

const char *cli_time(uint32_t t, char *buf, size_t cap)
{
    if (t == 0) {
        snprintf(buf, cap, "%-16s", "-");
        return buf;
    }
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M", &tm);
    return buf;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || s[0] == '-')
        return -1;
    uint64_t mul = 1;
    if (*end) {
        char u = *end;
        const char *rest = end + 1;
        if (u == 'k' || u == 'K')
            mul = 1024ull;
        else if (u == 'm' || u == 'M')
            mul = 1024ull * 1024;
        else if (u == 'g' || u == 'G')
            mul = 1024ull * 1024 * 1024;
        else if (u == 'b' || u == 'B')
            mul = 1, rest = end + 1;
        else
            return -1;
        if (*rest && strcmp(rest, "iB") && strcmp(rest, "B") && strcmp(rest, "ib") &&
            strcmp(rest, "b"))
            return -1;
        if (u == 'b' || u == 'B') {
            if (*rest)
                return -1;
        }
    }
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

void cli_json_num(cJSON *o, const char *name, double v)
{
    cJSON_AddNumberToObject(o, name, v);
}

/* ---- progress bar -------------------------------------------------------------------- */
void cli_bar_clear(cli_t *cli)
{
    if (cli->bar_shown) {
        fputs("\r\033[K", stdout);
        fflush(stdout);
        cli->bar_shown = false;
    }
}

void cli_progress(void *ctx, const char *path, uint64_t done, uint64_t total)
{
    cli_t *cli = ctx;
    if (!cli->tty)
        return;
    double now = cli_now();
    if (done == 0) {
        cli->bar_start = now;
        cli->bar_last = 0;
        return;
    }
    if (now - cli->bar_start < 1.0)
        return; /* only transfers longer than a second get a bar */
    if (done < total && now - cli->bar_last < 0.1)
        return;
    cli->bar_last = now;
    int pct = total ? (int)(done * 100 / total) : 100;
    int width = 30, fill = pct * width / 100;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[width] = 0;
    double rate = (double)done / (now - cli->bar_start);
    char a[32], b[32], r[32];
    const char *name = strrchr(path ? path : "", '/');
    name = name ? name + 1 : (path ? path : "");
    printf("\r\033[K%-24.24s [%s] %3d%% %s/%s %s/s", name, bar, pct,
           cli_human(done, a, sizeof(a)), cli_human(total, b, sizeof(b)),
           cli_human((uint64_t)rate, r, sizeof(r)));
    fflush(stdout);
    cli->bar_shown = true;
    if (done >= total)
        cli_bar_clear(cli);
}

void cli_json_space(cJSON *o, const cellar_statfs_t *f)
{
    cli_json_num(o, "total", (double)f->total);
    cli_json_num(o, "used", (double)f->used);
    cli_json_num(o, "live", (double)f->live);
    cli_json_num(o, "free", (double)f->free);
    cli_json_num(o, "reclaimable", (double)f->reclaimable);
    cli_json_num(o, "available", (double)f->available);
    cli_json_num(o, "files", f->files);
    cli_json_num(o, "dirs", f->dirs);
    cli_json_num(o, "erase_max", f->erase_max);
    cli_json_num(o, "erase_mean", f->erase_mean);
    cli_json_num(o, "erase_min", f->erase_min);
    cli_json_num(o, "bad_blocks", f->bad_blocks);
    cli_json_num(o, "page_size", f->page_size);
    cli_json_num(o, "pages_free", f->pages_free);
    cli_json_num(o, "pages_used", f->pages_used);
    cli_json_num(o, "pages_erased", f->pages_erased);
    cli_json_num(o, "pages_bad", f->pages_bad);
    cli_json_num(o, "gc_threshold", f->gc_threshold);
}

bool cli_devpath_arg(cli_t *cli, const char *arg, char *out)
{
    int err = cli_devpath(arg, out);
    if (err < 0) {
        cli_error(cli, arg, err, "%s", cellar_strerror(err));
        return false;
    }
    return true;
}
