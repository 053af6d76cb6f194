/*
 * cli_raw.c - `cellar raw ls|read|write|erase|sha256sum|update` (issue 15,
 * docs/RAW.md): raw partitions, named ":NAME" ("cellar raw read :model").
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define cmd_of(name) cli_cmd_find(cli_raw_cmds, (name))
#define PARSE_OR_RETURN(n, cli, argc, argv, o) \
    CLI_PARSE_OR_RETURN(n, cli, cli_raw_cmds, argc, argv, o)

/* The partition of a ":NAME" operand (reported when unknown). */
static const cellar_partition_t *raw_arg(cli_t *cli, const char *arg, const char **name)
{
    *name = arg[0] == ':' ? arg + 1 : arg;
    if (cli_connect(cli) < 0)
        return NULL;
    const cellar_partition_t *p = cellar_raw_find(&cli->dev, *name);
    if (!p)
        cli_error(cli, arg, CELLAR_ERR_NOENT, "no raw partition of that name "
                  "(see `cellar raw ls`)");
    return p;
}

/* -o OFFSET and -n LENGTH: 0, or -1 after a usage error. */
static int range_opts(cli_t *cli, const cli_cmd_t *me, const cli_opts_t *o,
                      uint64_t *off, uint64_t *len)
{
    *off = *len = 0;
    if (o->svalue['o'] && cli_parse_size(o->svalue['o'], off) < 0)
        return cli_usage(cli, me, "-o %s: expected an offset", o->svalue['o']), -1;
    if (o->svalue['n'] && cli_parse_size(o->svalue['n'], len) < 0)
        return cli_usage(cli, me, "-n %s: expected a length", o->svalue['n']), -1;
    return 0;
}

static uint64_t part_bytes(cli_t *cli, const cellar_partition_t *p)
{
    return (uint64_t)p->block_count * cellar_info(&cli->dev)->block_size;
}

static int cmd_ls(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    (void)n;
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    const cellar_info_t *in = cellar_info(&cli->dev);
    cJSON *arr = cli->json ? cJSON_AddArrayToObject(cli->out, "raw") : NULL;
    if (!arr)
        printf("%-8s %10s %12s %8s %8s\n", "name", "bytes", "address", "first", "blocks");
    for (uint32_t i = 0; i < in->npartitions; i++) {
        const cellar_partition_t *p = &in->partitions[i];
        if (p->kind != CELLAR_KIND_RAW)
            continue;
        uint64_t addr = (uint64_t)p->first_block * in->block_size;
        if (arr) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", p->path);
            cli_json_num(e, "bytes", (double)part_bytes(cli, p));
            cli_json_num(e, "address", (double)addr);
            cli_json_num(e, "first_block", p->first_block);
            cli_json_num(e, "block_count", p->block_count);
            cJSON_AddItemToArray(arr, e);
        } else {
            printf("%-8s %10llu %#12llx %8u %8u\n", p->path,
                   (unsigned long long)part_bytes(cli, p), (unsigned long long)addr,
                   p->first_block, p->block_count);
        }
    }
    return CLI_OK;
}

static int cmd_read(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.value_shorts = "on"};
    const cli_cmd_t *me = cmd_of("read");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    uint64_t off, len;
    const char *name;
    if (n < 1 || n > 2)
        return cli_usage(cli, me, "expected :NAME [FILE]");
    if (range_opts(cli, me, &o, &off, &len) < 0)
        return CLI_USAGE;
    const cellar_partition_t *p = raw_arg(cli, argv[0], &name);
    if (!p)
        return CLI_FAILED;
    uint64_t size = part_bytes(cli, p);
    if (!o.svalue['n'])
        len = off < size ? size - off : 1; /* past the end: the device says */
    if (len > (64u << 20))
        return cli_usage(cli, me, "-n: at most 64 MiB at once");
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return cli_error(cli, NULL, CELLAR_ERR_NOMEM, "out of memory"), CLI_FAILED;
    int64_t got = cellar_raw_read(&cli->dev, name, off, buf, (uint32_t)len);
    if (got < 0) {
        cli_lib_error(cli, argv[0], (int)got);
        free(buf);
        return CLI_FAILED;
    }
    const char *out = n == 2 ? argv[1] : NULL;
    if (out && strcmp(out, "-") != 0) {
        FILE *f = fopen(out, "wb");
        if (!f || fwrite(buf, 1, (size_t)got, f) != (size_t)got || fclose(f) != 0) {
            cli_error(cli, out, -errno, "%s", strerror(errno));
            free(buf);
            return CLI_FAILED;
        }
        if (cli->json)
            cli_json_num(cli->out, "bytes", (double)got);
    } else if (cli->json) {
        cli_json_num(cli->out, "bytes", (double)got);
    } else {
        fwrite(buf, 1, (size_t)got, stdout);
    }
    free(buf);
    return CLI_OK;
}

/* The whole of a local file (at most max bytes). */
static uint8_t *load(cli_t *cli, const char *path, uint64_t max, uint32_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error(cli, path, -errno, "%s", strerror(errno));
        return NULL;
    }
    uint8_t *buf = malloc(max ? max : 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    int extra = buf ? fgetc(f) : EOF;
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad || extra != EOF) {
        cli_error(cli, path, bad ? CELLAR_ERR_IO : CELLAR_ERR_FBIG,
                  "%s", !buf ? "out of memory" : bad ? "read error"
                  : "larger than the raw partition");
        free(buf);
        return NULL;
    }
    *len = (uint32_t)n;
    return buf;
}

static int cmd_write(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.value_shorts = "o"};
    const cli_cmd_t *me = cmd_of("write");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    uint64_t off, len;
    const char *name;
    if (n != 2)
        return cli_usage(cli, me, "expected :NAME FILE");
    if (range_opts(cli, me, &o, &off, &len) < 0)
        return CLI_USAGE;
    const cellar_partition_t *p = raw_arg(cli, argv[0], &name);
    if (!p)
        return CLI_FAILED;
    uint64_t size = part_bytes(cli, p);
    uint32_t n_bytes = 0;
    uint8_t *buf = load(cli, argv[1], off < size ? size - off : 0, &n_bytes);
    if (!buf)
        return CLI_FAILED;
    int err = cellar_raw_write(&cli->dev, name, off, buf, n_bytes);
    free(buf);
    if (err < 0) {
        cli_lib_error(cli, argv[0], err);
        return CLI_FAILED;
    }
    if (cli->json)
        cli_json_num(cli->out, "bytes", n_bytes);
    else
        printf("wrote %u bytes to :%s at %llu\n", n_bytes, name, (unsigned long long)off);
    return CLI_OK;
}

static int cmd_erase(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.value_shorts = "on"};
    const cli_cmd_t *me = cmd_of("erase");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    uint64_t off, len;
    const char *name;
    if (n != 1)
        return cli_usage(cli, me, "expected :NAME");
    if (range_opts(cli, me, &o, &off, &len) < 0)
        return CLI_USAGE;
    if (!raw_arg(cli, argv[0], &name))
        return CLI_FAILED;
    int err = cellar_raw_erase(&cli->dev, name, off, len);
    if (err < 0) {
        cli_lib_error(cli, argv[0], err);
        return CLI_FAILED;
    }
    if (!cli->json)
        printf("erased :%s\n", name);
    return CLI_OK;
}

static int cmd_sha256sum(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {.value_shorts = "on"};
    const cli_cmd_t *me = cmd_of("sha256sum");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    uint64_t off, len;
    const char *name;
    if (n != 1)
        return cli_usage(cli, me, "expected :NAME");
    if (range_opts(cli, me, &o, &off, &len) < 0)
        return CLI_USAGE;
    if (!raw_arg(cli, argv[0], &name))
        return CLI_FAILED;
    uint8_t sha[CELLAR_SHA256_SIZE];
    uint64_t hashed = 0;
    char hex[65];
    int err = cellar_raw_sha256(&cli->dev, name, off, len, sha, &hashed);
    if (err < 0) {
        cli_lib_error(cli, argv[0], err);
        return CLI_FAILED;
    }
    cellar_sha256_hex(sha, hex);
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "sha256", hex);
        cli_json_num(cli->out, "bytes", (double)hashed);
    } else {
        printf("%s  :%s\n", hex, name);
    }
    return CLI_OK;
}

static int cmd_update(cli_t *cli, int argc, char **argv)
{
    cli_opts_t o = {0};
    const cli_cmd_t *me = cmd_of("update");
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    const char *name;
    if (n != 2)
        return cli_usage(cli, me, "expected :NAME FILE");
    const cellar_partition_t *p = raw_arg(cli, argv[0], &name);
    if (!p)
        return CLI_FAILED;
    uint32_t len = 0;
    uint8_t *buf = load(cli, argv[1], part_bytes(cli, p), &len);
    if (!buf)
        return CLI_FAILED;
    bool same = false;
    int err = cellar_raw_update(&cli->dev, name, buf, len, &same);
    free(buf);
    if (err < 0) {
        cli_lib_error(cli, argv[0], err);
        return CLI_FAILED;
    }
    if (cli->json) {
        cli_json_num(cli->out, "bytes", len);
        cJSON_AddBoolToObject(cli->out, "unchanged", same);
    } else {
        printf("%s :%s (%u bytes, SHA-256 verified)\n",
               same ? "unchanged" : "updated", name, len);
    }
    return CLI_OK;
}

int cli_raw_push_args(cli_t *cli, const cli_cmd_t *me, int *argc, char **argv,
                      cli_raw_img_t *out, int max)
{
    int n = 0, k = 1;
    for (int i = 1; i < *argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--raw") && i + 1 < *argc)
            v = argv[++i];
        else if (!strncmp(argv[i], "--raw=", 6))
            v = argv[i] + 6;
        else if (!strcmp(argv[i], "--raw"))
            return cli_usage(cli, me, "option --raw needs NAME=FILE"), -1;
        if (!v) {
            argv[k++] = argv[i];
            continue;
        }
        const char *eq = strchr(v, '=');
        size_t nl = eq ? (size_t)(eq - v) : 0;
        if (!eq || nl == 0 || nl >= sizeof(out[0].name) || !eq[1])
            return cli_usage(cli, me, "--raw %s: expected NAME=FILE", v), -1;
        if (n == max)
            return cli_usage(cli, me, "at most %d --raw options", max), -1;
        memcpy(out[n].name, v, nl);
        out[n].name[nl] = 0;
        out[n].file = eq + 1;
        n++;
    }
    *argc = k;
    return n;
}

int cli_raw_push(cli_t *cli, const char *local, const char *rdir,
                 const cellar_push_opts_t *po, cellar_push_report_t *r,
                 const cli_raw_img_t *imgs, int n)
{
    cellar_bundle_t *b = NULL;
    memset(r, 0, sizeof(*r));
    int err = cellar_bundle_build(&cli->dev, local, rdir, po->warn, po->warn_ctx, &b);
    for (int i = 0; err == 0 && i < n; i++)
        err = cellar_bundle_add_raw(&cli->dev, b, imgs[i].name, imgs[i].file);
    if (err == 0)
        err = cellar_bundle_push(&cli->dev, b, po, r);
    cellar_bundle_free(b);
    return err;
}

const cli_cmd_t cli_raw_cmds[] = {
    {"ls", cmd_ls, "raw ls", "List the raw partitions: name, size, address, blocks.",
     NULL},
    {"read", cmd_read, "raw read [-o OFF] [-n LEN] :NAME [FILE]",
     "Read a raw partition (default all of it) to FILE or stdout.", NULL},
    {"write", cmd_write, "raw write [-o OFF] :NAME FILE",
     "Program FILE at OFF: only into erased bytes (else nothing is written).", NULL},
    {"erase", cmd_erase, "raw erase [-o OFF] [-n LEN] :NAME",
     "Erase a block-aligned range (default the whole partition).", NULL},
    {"sha256sum", cmd_sha256sum, "raw sha256sum [-o OFF] [-n LEN] :NAME",
     "SHA-256 of a range (default the whole partition), computed on the device.",
     NULL},
    {"update", cmd_update, "raw update :NAME FILE",
     "Verified update: the image is staged, checked, then written (power-cut safe).",
     "The device stages FILE in free /usr space, checks its SHA-256, commits\n"
     "it with its manifest entry, then erases and writes the partition; a power\n"
     "cut during the write is finished from the staged copy at start-up.\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
