/*
 * cli.h - the `cellar` command-line tool: shared declarations of
 * clients/cli_*.c (main() itself is in cli_main.c).
 *
 * Every command is a function `int cmd(cli_t *cli, int argc, char **argv)`
 * that gets its own arguments (argv[0] is the command name) with the global
 * options (-d URL, --json) already removed, and returns the exit status:
 * CLI_OK (0), CLI_FAILED (1: an operation failed) or CLI_USAGE (2).
 *
 * Output: human-readable text on stdout, errors on stderr as
 * "cellar: CMD: PATH: reason"; with --json exactly one JSON object on
 * stdout ({"ok": bool, ..., "errors": [...]}) and errors also on stderr.
 */
#ifndef CELLAR_CLI_H
#define CELLAR_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cellar.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

typedef struct cli {
    const char *cmd;   /* command name for messages ("cp", "image build") */
    const char *url;   /* device URL (-d, CELLAR_DEVICE or the default) */
    bool json;         /* --json */
    bool tty;          /* stdout is a terminal and not --json: progress bars */
    cJSON *out;        /* the JSON result object (--json) */
    cJSON *out_raw;    /* on success, printed instead of out (manifest
                          --json: a bare checksum.json list) */
    cJSON *errors;     /* its "errors" array */
    bool failed;       /* an operation failed: exit status 1 */
    bool connected;
    cellar_t dev;
    /* tls:// (issue 13): --cert --key --ca --psk; NULL = CELLAR_CERT... */
    const char *tls_cert, *tls_key, *tls_ca, *tls_psk;
    /* progress bar state */
    double bar_start;  /* when the current file started (seconds) */
    double bar_last;   /* last redraw */
    bool bar_shown;    /* a bar is on the screen */
} cli_t;

/* One command of the table. */
typedef struct cli_cmd {
    const char *name;
    int (*run)(cli_t *cli, int argc, char **argv);
    const char *usage;   /* "ls [-l] [-r] [-a] [:PATH]" */
    const char *help;    /* one line */
    const char *details; /* more lines for `cellar CMD --help` (may be NULL) */
} cli_cmd_t;

extern const cli_cmd_t cli_device_cmds[];  /* NULL-terminated */
extern const cli_cmd_t cli_image_cmds[];   /* NULL-terminated */
extern const cli_cmd_t cli_update_cmds[];  /* NULL-terminated (cli_update.c) */
extern const cli_cmd_t cli_raw_cmds[];     /* issue 15: `cellar raw` (cli_raw.c) */
/* issue 15: `cellar push ... --raw NAME=FILE` (cli_raw.c). The pairs are
 * taken out of argv (repeatable); returns their count, or -1 after a usage
 * error. */
typedef struct cli_raw_img {
    char name[8];
    const char *file;
} cli_raw_img_t;
int cli_raw_push_args(cli_t *cli, const cli_cmd_t *me, int *argc, char **argv,
                      cli_raw_img_t *out, int max);
/* cellar_push of local -> rdir with the raw images in the same bundle. */
int cli_raw_push(cli_t *cli, const char *local, const char *rdir,
                 const cellar_push_opts_t *po, cellar_push_report_t *r,
                 const cli_raw_img_t *imgs, int n);

/* Entry point of the tool: parse global options, dispatch, print the JSON
 * result. Returns the exit status. */
int cli_main(int argc, char **argv);

/* ---- argument parsing --------------------------------------------------------- */
/* Option letters and long options of one command. opts is a string of the
 * accepted short flags ("lra"); longs a NULL-terminated list of long flags
 * without "--" ("yes"); value options are handled by the caller. Parses
 * argv[1..], sets flags[c] for each short flag c and long_set[i] for
 * longs[i], and collects the operands into argv (in place). Returns the
 * operand count, or -1 after printing a usage error. "--help" prints the
 * command help and returns -2. */
typedef struct cli_opts {
    const char *shorts;
    const char *const *longs;
    const char *const *value_longs; /* long options taking a value */
    const char *value_shorts;       /* short options taking a value ("o") */
    bool flag[128];
    bool long_set[8];
    const char *value[8];           /* value of value_longs[i] */
    const char *svalue[128];        /* value of value_shorts */
} cli_opts_t;
int cli_parse(cli_t *cli, const cli_cmd_t *cmd, int argc, char **argv,
              cli_opts_t *o);

/* The command called name in a NULL-terminated table, or NULL. */
const cli_cmd_t *cli_cmd_find(const cli_cmd_t *table, const char *name);
/* cli_parse for the command argv[0] of table. Returns the operand count,
 * or -(exit status + 1) when the command is done (--help: CLI_OK; a usage
 * error: CLI_USAGE). */
int cli_parse_cmd(cli_t *cli, const cli_cmd_t *table, int argc, char **argv,
                  cli_opts_t *o);
/* Declare int n = the operand count, or return the exit status. */
#define CLI_PARSE_OR_RETURN(n, cli, table, argc, argv, o)          \
    int n = cli_parse_cmd((cli), (table), (argc), (argv), (o)); \
    if (n < 0)                                                  \
        return -n - 1

/* Print "cellar: CMD: msg" and the command's usage; returns CLI_USAGE. */
int cli_usage(cli_t *cli, const cli_cmd_t *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cli_print_help(const cli_cmd_t *cmd);

/* ---- errors ------------------------------------------------------------------- */
/* Report a failure about path (shown as given; NULL for none) with reason;
 * marks the run failed. */
void cli_error(cli_t *cli, const char *path, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Report a libcellar failure: the path from cellar_errpath (or fallback,
 * already in display form) and the device's reason. */
void cli_lib_error(cli_t *cli, const char *fallback, int err);

/* ---- device ------------------------------------------------------------------- */
/* `cellar pki ...` (issue 13, cli_pki.c): argv[0] is "pki". */
int cli_pki(cli_t *cli, int argc, char **argv);

/* Connect to cli->url once; on failure report and return the error. */
int cli_connect(cli_t *cli);

/* Device path from an argument: strip one leading ':' (required when
 * need_colon), make it absolute ("" -> "/usr", "x" -> "/usr/x"), and
 * normalise ("//", ".", "..", trailing '/'). Returns 0 or a negative error
 * (CELLAR_ERR_NAMETOOLONG, CELLAR_ERR_INVAL). out has CELLAR_PATH_MAX + 1
 * bytes. */
int cli_devpath(const char *arg, char *out);
/* The same for an operand, reporting a bad one (returns false). */
bool cli_devpath_arg(cli_t *cli, const char *arg, char *out);
bool cli_is_remote(const char *arg);
/* ":" + path into a static-per-call buffer for messages. */
const char *cli_show(const char *devpath, char *buf, size_t cap);

/* ---- output helpers -------------------------------------------------------------- */
double cli_now(void);
/* Size with a unit: "1.5 MiB". */
const char *cli_human(uint64_t bytes, char *buf, size_t cap);
/* "2024-01-31 12:00" (UTC) or "-" for 0. */
const char *cli_time(uint32_t t, char *buf, size_t cap);
/* Parse "4M", "64MiB", "4096", "512K", "0x1000". Returns 0 or -1. */
int cli_parse_size(const char *s, uint64_t *out);

/* Progress callback for libcellar (ctx = cli_t *). */
void cli_progress(void *ctx, const char *path, uint64_t done, uint64_t total);
/* Remove a progress bar from the screen before printing a line. */
void cli_bar_clear(cli_t *cli);

/* Add a number that fits a double exactly to a cJSON object. */
void cli_json_num(cJSON *o, const char *name, double v);
/* Add the space and wear figures of a partition (total, used, live, free,
 * reclaimable, files, dirs, erase_max/mean/min, bad_blocks). */
void cli_json_space(cJSON *o, const cellar_statfs_t *f);

#endif /* CELLAR_CLI_H */
