/*
 * cli_update.c - the update commands of the `cellar` tool: push (a local
 * directory as one atomic, resumable update bundle), manifest (list, digest,
 * import a QuecPython checksum.json), verify, backup and restore.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHOW_MAX (CELLAR_PATH_MAX + 2)

#define cmd_of(name) cli_cmd_find(cli_update_cmds, (name))
#define PARSE_OR_RETURN(n, cli, argc, argv, o) \
    CLI_PARSE_OR_RETURN(n, cli, cli_update_cmds, argc, argv, o)

/* A partition operand: ":/usr" (default, also ":") or ":/bak". Returns
 * false after a usage error. */
static bool partition_arg(cli_t *cli, const cli_cmd_t *me, int n, char **argv,
                          char *part, int *status)
{
    snprintf(part, CELLAR_PATH_MAX + 1, "/usr");
    if (n > 1) {
        *status = cli_usage(cli, me, "too many operands");
        return false;
    }
    if (n == 1 && (cli_devpath(argv[0], part) < 0 ||
                   (strcmp(part, "/usr") && strcmp(part, "/bak")))) {
        *status = cli_usage(cli, me, "'%s': give a partition, :/usr or :/bak", argv[0]);
        return false;
    }
    return true;
}

static const char *hex32(const uint8_t d[CELLAR_SHA256_SIZE], char hex[65])
{
    return cellar_sha256_hex(d, hex);
}

/* ---- push ---------------------------------------------------------------------- */
static void push_warn(void *ctx, const char *local, const char *why)
{
    cli_t *cli = ctx;
    cli_bar_clear(cli);
    fflush(stdout);
    fprintf(stderr, "cellar: %s: %s: %s\n", cli->cmd, local, why);
    if (cli->json) {
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(cli->out, "skipped_local");
        if (!arr)
            arr = cJSON_AddArrayToObject(cli->out, "skipped_local");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "path", local);
        cJSON_AddStringToObject(e, "reason", why);
        cJSON_AddItemToArray(arr, e);
    }
}

/* "/usr/x" or "/usr/dir/" for directory removals. */
static const char *entry_name(const cellar_push_entry_t *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s%s", e->path, e->is_dir ? "/" : "");
    return buf;
}

static void push_json(cli_t *cli, const cellar_push_report_t *r, bool dry)
{
    cJSON *o = cli->out;
    cJSON *arr[6] = {NULL};
    arr[CELLAR_PUSH_NEW] = cJSON_AddArrayToObject(o, "new");
    arr[CELLAR_PUSH_CHANGED] = cJSON_AddArrayToObject(o, "changed");
    arr[CELLAR_PUSH_UNCHANGED] = cJSON_AddArrayToObject(o, "unchanged");
    arr[CELLAR_PUSH_DELETED] = cJSON_AddArrayToObject(o, "deleted");
    arr[CELLAR_PUSH_ABSENT] = cJSON_AddArrayToObject(o, "absent");
    for (size_t i = 0; i < r->nentries; i++) {
        const cellar_push_entry_t *e = &r->entries[i];
        char name[CELLAR_PATH_MAX + 2];
        if (e->action >= CELLAR_PUSH_NEW && e->action <= CELLAR_PUSH_ABSENT)
            cJSON_AddItemToArray(arr[e->action],
                                 cJSON_CreateString(entry_name(e, name, sizeof(name))));
    }
    char hex[65];
    cJSON_AddBoolToObject(o, "dry_run", dry);
    cli_json_num(o, "bytes_sent", (double)r->bytes_sent);
    cli_json_num(o, "bundle_bytes", (double)r->bundle_bytes);
    cli_json_num(o, "to_send", (double)r->to_send);
    cJSON_AddBoolToObject(o, "resumed", r->resumed);
    cli_json_num(o, "staged", (double)r->staged);
    cJSON_AddBoolToObject(o, "committed", r->committed);
    cJSON_AddStringToObject(o, "bundle", hex32(r->bundle, hex));
    if (r->have_digest)
        cJSON_AddStringToObject(o, "digest", hex32(r->digest, hex));
    else
        cJSON_AddNullToObject(o, "digest");
}

static int cmd_push(cli_t *cli, int argc, char **argv)
{
    const cli_cmd_t *me = cmd_of("push");
    static const char *const longs[] = {"delete", "dry-run", NULL};
    cli_opts_t o = {.longs = longs};
    cli_raw_img_t raws[6]; /* issue 15: --raw NAME=FILE, repeatable */
    int nraw = cli_raw_push_args(cli, me, &argc, argv, raws, 6);
    if (nraw < 0)
        return CLI_USAGE;
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n < 1)
        return cli_usage(cli, me, "missing the local directory");
    if (n > 2)
        return cli_usage(cli, me, "too many operands");
    const char *local = argv[0];
    if (cli_is_remote(local))
        return cli_usage(cli, me, "'%s': the source must be a local directory", local);
    if (n == 2 && !cli_is_remote(argv[1]))
        return cli_usage(cli, me, "'%s': the destination must be a device path (:PATH)",
                         argv[1]);
    char rdir[CELLAR_PATH_MAX + 1], show[SHOW_MAX];
    if (!cli_devpath_arg(cli, n == 2 ? argv[1] : ":", rdir))
        return CLI_FAILED;
    if (strncmp(rdir, "/usr", 4) != 0 || (rdir[4] != 0 && rdir[4] != '/'))
        return cli_usage(cli, me, "'%s': the destination must be a directory under /usr",
                         argv[1]);
    cli_show(rdir, show, sizeof(show));
    struct stat st;
    if (stat(local, &st) < 0) {
        cli_error(cli, local, -errno, "%s", strerror(errno));
        return CLI_FAILED;
    }
    if (!S_ISDIR(st.st_mode)) {
        cli_error(cli, local, CELLAR_ERR_NOTDIR, "not a directory");
        return CLI_FAILED;
    }
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    bool dry = o.long_set[1];
    cellar_push_opts_t po = {
        .delete_extra = o.long_set[0], .dry_run = dry,
        .progress = cli_progress, .progress_ctx = cli,
        .warn = push_warn, .warn_ctx = cli,
    };
    cellar_push_report_t r;
    int err = nraw ? cli_raw_push(cli, local, rdir, &po, &r, raws, nraw)
                   : cellar_push(&cli->dev, local, rdir, &po, &r);
    cli_bar_clear(cli);
    if (cli->json)
        push_json(cli, &r, dry);
    if (err < 0) {
        cli_lib_error(cli, show, err);
        /* a retry helps after a lost link or a restart, not after a
         * refusal that would come again */
        bool again = err != CELLAR_ERR_ISDIR && err != CELLAR_ERR_NOTDIR &&
                     err != CELLAR_ERR_INVAL && err != CELLAR_ERR_ACCES &&
                     err != CELLAR_ERR_NOSPC && err != CELLAR_ERR_BUSY;
        if (!cli->json && r.bytes_sent && again)
            fprintf(stderr, "cellar: %s: %llu bytes were sent and stay staged on the "
                            "device: push the same directory again to resume\n",
                    cli->cmd, (unsigned long long)r.bytes_sent);
        cellar_push_report_free(&r);
        return CLI_FAILED;
    }
    if (!cli->json) {
        for (size_t i = 0; i < r.nentries; i++) {
            const cellar_push_entry_t *e = &r.entries[i];
            char name[CELLAR_PATH_MAX + 2];
            if (e->action == CELLAR_PUSH_NEW || e->action == CELLAR_PUSH_CHANGED ||
                e->action == CELLAR_PUSH_DELETED)
                printf("%s %s\n", cellar_push_action_name(e->action),
                       entry_name(e, name, sizeof(name)));
        }
        char a[32], b[32], hex[65];
        printf("%s%u new, %u changed, %u deleted, %u unchanged (skipped)%s\n",
               dry ? "dry run: " : "", r.nnew, r.nchanged, r.ndeleted, r.nunchanged,
               dry ? "; nothing was changed on the device" : "");
        if (dry)
            printf("would send %llu of %llu bundle bytes (%s of %s)\n",
                   (unsigned long long)r.to_send, (unsigned long long)r.bundle_bytes,
                   cli_human(r.to_send, a, sizeof(a)),
                   cli_human(r.bundle_bytes, b, sizeof(b)));
        else
            printf("sent %llu of %llu bundle bytes (%s of %s)",
                   (unsigned long long)r.bytes_sent, (unsigned long long)r.bundle_bytes,
                   cli_human(r.bytes_sent, a, sizeof(a)),
                   cli_human(r.bundle_bytes, b, sizeof(b)));
        if (!dry && r.resumed)
            printf("; resumed, %llu bytes were staged", (unsigned long long)r.staged);
        if (!dry)
            printf("\n");
        if (r.have_digest)
            printf("manifest %s%s\n", hex32(r.digest, hex), dry ? " (as it is now)" : "");
    }
    cellar_push_report_free(&r);
    return cli->failed ? CLI_FAILED : CLI_OK;
}

/* ---- manifest ------------------------------------------------------------------- */
static int manifest_import(cli_t *cli, const char *file)
{
    cellar_mentry_t *v = NULL;
    size_t n = 0;
    char msg[512];
    int err = cellar_checksum_json_load(file, &v, &n, msg, sizeof(msg));
    if (err < 0) {
        /* msg starts with the file name */
        cli_bar_clear(cli);
        const char *reason = msg;
        size_t fl = strlen(file);
        if (!strncmp(msg, file, fl) && !strncmp(msg + fl, ": ", 2))
            reason = msg + fl + 2;
        cli_error(cli, file, err, "%s", reason);
        return CLI_FAILED;
    }
    if (cli_connect(cli) < 0) {
        free(v);
        return CLI_FAILED;
    }
    err = cellar_manifest_import(&cli->dev, v, n);
    free(v);
    if (err < 0) {
        cli_lib_error(cli, NULL, err);
        return CLI_FAILED;
    }
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "file", file);
        cli_json_num(cli->out, "imported", (double)n);
    } else {
        printf("imported %zu entr%s into the /usr manifest\n", n, n == 1 ? "y" : "ies");
    }
    return CLI_OK;
}

static int cmd_manifest(cli_t *cli, int argc, char **argv)
{
    const cli_cmd_t *me = cmd_of("manifest");
    static const char *const vlongs[] = {"import", NULL};
    cli_opts_t o = {.value_longs = vlongs};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (o.value[0]) {
        if (n > 0)
            return cli_usage(cli, me, "--import takes no partition (it sets /usr)");
        return manifest_import(cli, o.value[0]);
    }
    char part[CELLAR_PATH_MAX + 1];
    int status;
    if (!partition_arg(cli, me, n, argv, part, &status))
        return status;
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cellar_mentry_t *v = NULL;
    size_t cnt = 0;
    int err = cellar_manifest_list(&cli->dev, part, &v, &cnt);
    if (err < 0) {
        char show[SHOW_MAX];
        cli_lib_error(cli, cli_show(part, show, sizeof(show)), err);
        return CLI_FAILED;
    }
    uint8_t digest[CELLAR_SHA256_SIZE];
    err = cellar_manifest_digest(v, cnt, digest);
    if (err < 0) {
        free(v);
        cli_error(cli, NULL, err, "out of memory");
        return CLI_FAILED;
    }
    char hex[65];
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "partition", part);
        cJSON *arr = cJSON_AddArrayToObject(cli->out, "files");
        for (size_t i = 0; i < cnt; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", v[i].path);
            cJSON_AddStringToObject(e, "sha256", hex32(v[i].sha256, hex));
            if (v[i].size >= 0)
                cli_json_num(e, "size", (double)v[i].size);
            cli_json_num(e, "mtime", v[i].mtime);
            cJSON_AddItemToArray(arr, e);
        }
        cli_json_num(cli->out, "count", (double)cnt);
        cJSON_AddStringToObject(cli->out, "digest", hex32(digest, hex));
        /* what is printed: QuecPython's checksum.json, a bare list */
        cli->out_raw = cJSON_Duplicate(arr, true);
    } else {
        for (size_t i = 0; i < cnt; i++) {
            if (v[i].size < 0)
                printf("%s  -  %s\n", hex32(v[i].sha256, hex), v[i].path);
            else
                printf("%s  %lld  %s\n", hex32(v[i].sha256, hex), (long long)v[i].size,
                       v[i].path);
        }
    }
    free(v);
    return CLI_OK;
}

/* ---- verify ---------------------------------------------------------------------- */
static void verify_problem(void *ctx, const cellar_problem_t *p)
{
    cli_t *cli = ctx;
    if (cli->json) {
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(cli->out, "problems");
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "path", p->path);
        cJSON_AddStringToObject(e, "kind", cellar_problem_name(p->kind));
        cJSON_AddBoolToObject(e, "repaired", p->repaired);
        cJSON_AddItemToArray(arr, e);
    } else {
        printf("%s %s%s\n", cellar_problem_name(p->kind), p->path,
               p->repaired ? " (repaired from /bak)" : "");
    }
}

static int cmd_verify(cli_t *cli, int argc, char **argv)
{
    const cli_cmd_t *me = cmd_of("verify");
    static const char *const longs[] = {"repair", NULL};
    cli_opts_t o = {.longs = longs};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    char part[CELLAR_PATH_MAX + 1];
    int status;
    if (!partition_arg(cli, me, n, argv, part, &status))
        return status;
    bool repair = o.long_set[0];
    if (repair && strcmp(part, "/usr"))
        return cli_usage(cli, me, "--repair works on /usr (from the copies in /bak)");
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    if (cli->json) {
        cJSON_AddStringToObject(cli->out, "partition", part);
        cJSON_AddArrayToObject(cli->out, "problems");
    }
    /* what the device found at start-up on this partition (cellar info) */
    const cellar_info_t *in = cellar_info(&cli->dev);
    uint32_t pstate = 0;
    size_t pl = strlen(part);
    for (uint32_t i = 0; i < in->npartitions; i++)
        if (strcmp(in->partitions[i].path, part) == 0)
            pstate = in->partitions[i].state;
    cJSON *dp = cli->json ? cJSON_AddArrayToObject(cli->out, "device_problems")
                          : NULL;
    for (uint32_t i = 0; i < in->nproblems; i++) {
        if (strncmp(in->problems[i], part, pl) || in->problems[i][pl] != ':')
            continue;
        if (dp)
            cJSON_AddItemToArray(dp, cJSON_CreateString(in->problems[i]));
        else
            printf("device: %s\n", in->problems[i]);
    }
    if (pstate) {
        if (cli->json)
            cli_json_num(cli->out, "state", pstate);
        cli_error(cli, part, CELLAR_ERR_IO, "the partition is %s (see cellar "
                  "info)", pstate == CELLAR_PART_FULL ? "too full for the "
                  "device's bookkeeping: remove files"
                  : pstate == CELLAR_PART_NO_MANIFEST ? "without a usable "
                  "manifest: format it" : "not mounted: format it");
        if (pstate == CELLAR_PART_UNMOUNTED || pstate == CELLAR_PART_NO_MANIFEST)
            return CLI_FAILED;
    }
    cellar_verify_report_t r;
    int err = cellar_verify(&cli->dev, part, repair, verify_problem, cli, &r);
    if (err < 0) {
        char show[SHOW_MAX];
        cli_lib_error(cli, cli_show(part, show, sizeof(show)), err);
        return CLI_FAILED;
    }
    uint32_t problems = r.missing + r.mismatch + r.unreadable + r.not_in_backup;
    if (cli->json) {
        cli_json_num(cli->out, "checked", r.checked);
        cli_json_num(cli->out, "files", r.files);
        cli_json_num(cli->out, "missing", r.missing);
        cli_json_num(cli->out, "mismatch", r.mismatch);
        cli_json_num(cli->out, "unreadable", r.unreadable);
        cli_json_num(cli->out, "not_in_backup", r.not_in_backup);
        cli_json_num(cli->out, "untracked", r.untracked);
        cli_json_num(cli->out, "repaired", r.repaired);
        cli_json_num(cli->out, "unrepaired", r.unrepaired);
        cJSON_AddBoolToObject(cli->out, "clean", r.unrepaired == 0);
    } else if (problems + r.untracked == 0) {
        printf("%s: %u file%s checked, all match the manifest\n", part, r.checked,
               r.checked == 1 ? "" : "s");
    } else {
        printf("%s: %u file%s checked, %u problem%s (%u repaired), %u untracked\n", part,
               r.checked, r.checked == 1 ? "" : "s", problems, problems == 1 ? "" : "s", r.repaired, r.untracked);
    }
    return r.unrepaired || pstate ? CLI_FAILED : CLI_OK;
}

/* ---- backup, restore -------------------------------------------------------------- */
static const char *skip_reason(cellar_problem_kind_t k)
{
    switch (k) {
    case CELLAR_PROBLEM_MISSING: return "missing";
    case CELLAR_PROBLEM_MISMATCH: return "content does not match the manifest";
    case CELLAR_PROBLEM_UNREADABLE: return "unreadable (flash data corrupt)";
    case CELLAR_PROBLEM_NOT_IN_BACKUP: return "no verified copy in /bak";
    default: return cellar_problem_name(k);
    }
}

static int copy_cmd(cli_t *cli, int argc, char **argv, bool backup)
{
    const char *name = backup ? "backup" : "restore";
    const cli_cmd_t *me = cmd_of(name);
    cli_opts_t o = {0};
    PARSE_OR_RETURN(n, cli, argc, argv, &o);
    if (n > CELLAR_COPY_PATHS)
        return cli_usage(cli, me, "at most %d paths at once", CELLAR_COPY_PATHS);
    char paths[CELLAR_COPY_PATHS][CELLAR_PATH_MAX + 1];
    const char *ptrs[CELLAR_COPY_PATHS];
    for (int i = 0; i < n; i++) {
        if (!cli_devpath_arg(cli, argv[i], paths[i]))
            return CLI_FAILED;
        ptrs[i] = paths[i];
    }
    if (cli_connect(cli) < 0)
        return CLI_FAILED;
    cellar_copy_report_t r;
    int err = backup ? cellar_backup(&cli->dev, ptrs, (size_t)n, &r)
                     : cellar_restore(&cli->dev, ptrs, (size_t)n, &r);
    if (err < 0) {
        cli_lib_error(cli, NULL, err);
        return CLI_FAILED;
    }
    if (cli->json) {
        cli_json_num(cli->out, "files", r.files);
        cli_json_num(cli->out, "unchanged", r.unchanged);
        cli_json_num(cli->out, "removed", r.removed);
        cli_json_num(cli->out, "bytes", (double)r.bytes);
        cJSON *arr = cJSON_AddArrayToObject(cli->out, "skipped");
        for (uint32_t i = 0; i < r.nskipped; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", r.skipped[i].path);
            cJSON_AddStringToObject(e, "kind", cellar_problem_name(r.skipped[i].kind));
            cJSON_AddStringToObject(e, "reason", skip_reason(r.skipped[i].kind));
            cJSON_AddItemToArray(arr, e);
        }
    } else {
        char h[32];
        printf("%s: %u file%s copied, %u unchanged, %u removed, %llu bytes (%s)\n", name,
               r.files, r.files == 1 ? "" : "s", r.unchanged, r.removed,
               (unsigned long long)r.bytes, cli_human(r.bytes, h, sizeof(h)));
        for (uint32_t i = 0; i < r.nskipped; i++)
            printf("skipped %s: %s\n", r.skipped[i].path, skip_reason(r.skipped[i].kind));
    }
    return r.nskipped ? CLI_FAILED : CLI_OK;
}

static int cmd_backup(cli_t *cli, int argc, char **argv)
{
    return copy_cmd(cli, argc, argv, true);
}

static int cmd_restore(cli_t *cli, int argc, char **argv)
{
    return copy_cmd(cli, argc, argv, false);
}

const cli_cmd_t cli_update_cmds[] = {
    {"push", cmd_push, "push LOCALDIR [:REMOTEDIR] [--delete] [--dry-run]",
     "Update a device directory (default :/usr) from LOCALDIR in one atomic step.",
     "  --delete   also remove device files and directories under REMOTEDIR that\n"
     "             LOCALDIR does not have\n"
     "  --dry-run  show what would change; nothing is sent or staged\n"
     "  --raw NAME=FILE  also a raw partition's image, in the same bundle\n"
     "             (repeatable; written after the commit: docs/RAW.md)\n"
     "Only new and changed files are sent (SHA-256 against the device's\n"
     "manifest); the device checks every file and makes the whole update\n"
     "visible at once, or none of it. An interrupted push (dropped link, killed\n"
     "client, device restart) resumes when the same directory is pushed again:\n"
     "only the bytes the device has not staged are sent. Symbolic links are\n"
     "skipped with a warning. Prints one line per new/changed/deleted file, the\n"
     "counts, the bytes sent and the manifest digest.\n"},
    {"manifest", cmd_manifest, "manifest [:/usr | :/bak] | --import FILE",
     "Print a partition's manifest (SHA-256, size, path), or import a checksum.json.",
     "  --import FILE  set /usr manifest entries from a QuecPython checksum.json\n"
     "                 ([{\"name\": \"/usr/a.py\", \"sha256\": \"...\"}], optional \"size\")\n"
     "Lines are \"<sha256>  <size or ->  <path>\" sorted by path, so\n"
     "`cellar manifest | sha256sum` is the manifest digest `push` prints.\n"
     "With --json: a list [{\"name\", \"sha256\", \"size\", \"mtime\"}], the shape of\n"
     "QuecPython's checksum.json (on a failure, the usual {\"ok\": false, ...}).\n"},
    {"verify", cmd_verify, "verify [:/usr | :/bak] [--repair]",
     "Check every file against the manifest; list untracked files.",
     "  --repair  restore missing or damaged /usr files from their /bak copies\n"
     "Prints \"missing PATH\", \"mismatch PATH\", \"unreadable PATH\",\n"
     "\"not-in-backup PATH\" and \"untracked PATH\" lines; exit status 1 when\n"
     "anything is wrong and not repaired (untracked files included).\n"},
    {"backup", cmd_backup, "backup [:PATH...]",
     "Copy verified /usr files (default all of /usr) into /bak, atomically.",
     "At most 16 paths (files or directories). Files that do not match the\n"
     "manifest are skipped and named; the exit status is then 1.\n"},
    {"restore", cmd_restore, "restore [:PATH...]",
     "Copy verified /bak copies back into /usr (default everything), atomically.",
     "At most 16 paths (/usr paths, or the /bak paths of the copies). Paths\n"
     "without a verified copy are skipped and named; the exit status is then 1.\n"},
    {NULL, NULL, NULL, NULL, NULL},
};
