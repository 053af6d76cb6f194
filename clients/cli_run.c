/*
 * cli_run.c - `cellar` entry point: global options, command dispatch, the
 * JSON result envelope and the exit status (see cli.h).
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef CELLAR_VERSION
#define CELLAR_VERSION CELLAR_LIB_VERSION
#endif

static void main_help(void)
{
    printf("usage: cellar [-d URL] [--json] COMMAND [ARGS...]\n\n"
           "cellar - the command-line tool of the cellar storage service.\n"
           "Device paths start with ':' (\":main.py\" = /usr/main.py, \":\" = "
           "/usr, \":/bak/x\").\n\n"
           "Device commands:\n");
    for (const cli_cmd_t *c = cli_device_cmds; c->name; c++)
        printf("  %-38s %s\n", c->usage, c->help);
    printf("\nUpdates, manifest and backup:\n");
    for (const cli_cmd_t *c = cli_update_cmds; c->name; c++)
        printf("  %-38s %s\n", c->usage, c->help);
    printf("\nKeys and certificates for tls:// (no device needed):\n"
           "  %-38s %s\n", "pki init|device|client|psk ...",
           "a CA, device/client certificates, PSK lines (pki --help)");
    printf("\nRaw partitions (issue 15, docs/RAW.md):\n");
    for (const cli_cmd_t *c = cli_raw_cmds; c->name; c++)
        printf("  %-38s %s\n", c->usage, c->help);
    printf("\nOffline flash images (no device needed):\n");
    for (const cli_cmd_t *c = cli_image_cmds; c->name; c++)
        printf("  %-38s %s\n", c->usage, c->help);
    printf("\nGlobal options:\n"
           "  -d URL, --device URL  device: tcp://HOST[:PORT] (default port %d; IPv6\n"
           "                        as tcp://[::1]:PORT), tls://HOST[:PORT] (7443;\n"
           "                        docs/TLS.md); uart: is not built yet;\n"
           "                        default $CELLAR_DEVICE or %s\n"
           "  --cert FILE --key FILE  tls:// client certificate and key\n"
           "                        (default $CELLAR_CERT, $CELLAR_KEY)\n"
           "  --ca FILE             CA of the device certificate ($CELLAR_CA)\n"
           "  --psk IDENTITY:HEXKEY tls:// with a pre-shared key ($CELLAR_PSK)\n"
           "  --json                machine-readable output (one JSON object)\n"
           "  -h, --help            this help; `cellar COMMAND --help` for one command\n"
           "  --version             print the version\n\n"
           "Exit status: 0 success, 1 an operation failed, 2 usage error.\n",
           CELLAR_DEFAULT_PORT, CELLAR_DEFAULT_URL);
}

static const cli_cmd_t *lookup(const cli_cmd_t *table, const char *name)
{
    for (const cli_cmd_t *c = table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static int finish(cli_t *cli, int status)
{
    if (cli->connected)
        cellar_close(&cli->dev);
    cli->connected = false;
    cli_bar_clear(cli);
    if (status == CLI_OK && cli->failed)
        status = CLI_FAILED;
    if (cli->json && cli->out) {
        cJSON *ok = cJSON_CreateBool(status == CLI_OK);
        cJSON_ReplaceItemInObject(cli->out, "ok", ok);
        char *s = cJSON_Print(status == CLI_OK && cli->out_raw ? cli->out_raw : cli->out);
        if (s) {
            fputs(s, stdout);
            fputc('\n', stdout);
            free(s);
        }
        cJSON_Delete(cli->out);
        cli->out = NULL;
    }
    cJSON_Delete(cli->out_raw);
    cli->out_raw = NULL;
    fflush(stdout);
    return status;
}

int cli_main(int argc, char **argv)
{
    cli_t cli;
    memset(&cli, 0, sizeof(cli));
    cli.cmd = "cellar";
    cli.url = getenv("CELLAR_DEVICE");
    if (!cli.url || !*cli.url)
        cli.url = CELLAR_DEFAULT_URL;

    /* Pull the global options out of argv, wherever they are (before "--"). */
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    if (!args) {
        perror("cellar");
        return CLI_FAILED;
    }
    int n = 0;
    bool dashdash = false, help = false, version = false;
    const char *bad = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (dashdash) {
            args[n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = true;
            args[n++] = argv[i];
        } else if (strcmp(a, "--json") == 0) {
            cli.json = true;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--device") == 0) {
            if (i + 1 >= argc)
                bad = "option -d needs a URL";
            else
                cli.url = argv[++i];
        } else if (strncmp(a, "--device=", 9) == 0) {
            cli.url = a + 9;
        } else if (strncmp(a, "-d", 2) == 0 && a[2] && n == 0) {
            cli.url = a + 2;
        } else if (n == 0 && (!strcmp(a, "--cert") || !strcmp(a, "--key") ||
                              !strcmp(a, "--ca") || !strcmp(a, "--psk"))) {
            /* issue 13: tls:// credentials (before the command) */
            const char **dst = a[2] == 'c' ? (a[3] == 'e' ? &cli.tls_cert : &cli.tls_ca)
                             : a[2] == 'k' ? &cli.tls_key : &cli.tls_psk;
            if (i + 1 >= argc)
                bad = "options --cert, --key, --ca and --psk need a value";
            else
                *dst = argv[++i];
        } else if (n == 0 && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            help = true;
        } else if (n == 0 && strcmp(a, "--version") == 0) {
            version = true;
        } else {
            args[n++] = argv[i];
        }
    }
    if (cli.json) {
        cli.out = cJSON_CreateObject();
        cJSON_AddBoolToObject(cli.out, "ok", false);
        cli.errors = cJSON_AddArrayToObject(cli.out, "errors");
    }
    cli.tty = !cli.json && isatty(STDOUT_FILENO);
    int status;
    if (bad) {
        status = cli_usage(&cli, NULL, "%s", bad);
    } else if (version) {
        if (cli.json) {
            cJSON_AddStringToObject(cli.out, "version", CELLAR_VERSION);
            cli_json_num(cli.out, "protocol", CELLAR_PROTOCOL_VERSION);
        } else {
            printf("cellar %s (libcellar %s, protocol %d)\n", CELLAR_VERSION,
                   CELLAR_LIB_VERSION, CELLAR_PROTOCOL_VERSION);
        }
        status = CLI_OK;
    } else if (help || n == 0) {
        if (n == 0 && !help) {
            status = cli_usage(&cli, NULL, "no command given");
        } else {
            main_help();
            status = CLI_OK;
        }
    } else if (strcmp(args[0], "help") == 0) {
        const cli_cmd_t *c = n > 1 ? lookup(cli_device_cmds, args[1]) : NULL;
        if (!c && n > 1)
            c = lookup(cli_update_cmds, args[1]);
        if (c)
            cli_print_help(c);
        else
            main_help();
        status = CLI_OK;
    } else if (strcmp(args[0], "pki") == 0) { /* issue 13 */
        status = cli_pki(&cli, n, args);
    } else if (strcmp(args[0], "raw") == 0) { /* issue 15 */
        const cli_cmd_t *c = n > 1 ? lookup(cli_raw_cmds, args[1]) : NULL;
        static char name[64];
        snprintf(name, sizeof(name), "raw %s", n > 1 ? args[1] : "");
        cli.cmd = n > 1 ? name : "raw";
        if (n > 1 && (!strcmp(args[1], "--help") || !strcmp(args[1], "-h"))) {
            main_help();
            status = CLI_OK;
        } else if (!c) {
            status = cli_usage(&cli, NULL, n < 2 ? "missing raw command (ls, read, "
                               "write, erase, sha256sum, update)"
                               : "unknown raw command '%s'", n > 1 ? args[1] : "");
        } else {
            status = c->run(&cli, n - 1, args + 1);
        }
    } else if (strcmp(args[0], "image") == 0) {
        if (n < 2 || !strcmp(args[1], "--help") || !strcmp(args[1], "-h")) {
            if (n < 2) {
                cli.cmd = "image";
                status = cli_usage(&cli, NULL, "missing image command "
                                               "(build, ls, cat, extract, check, info)");
            } else {
                main_help();
                status = CLI_OK;
            }
        } else {
            const cli_cmd_t *c = lookup(cli_image_cmds, args[1]);
            static char name[64];
            snprintf(name, sizeof(name), "image %s", args[1]);
            cli.cmd = name;
            if (!c)
                status = cli_usage(&cli, NULL, "unknown image command '%s'", args[1]);
            else
                status = c->run(&cli, n - 1, args + 1);
        }
    } else {
        const cli_cmd_t *c = lookup(cli_device_cmds, args[0]);
        if (!c)
            c = lookup(cli_update_cmds, args[0]);
        cli.cmd = args[0];
        if (!c) {
            cli.cmd = "cellar";
            status = cli_usage(&cli, NULL, "unknown command '%s'", args[0]);
        } else {
            status = c->run(&cli, n, args);
        }
    }
    free(args);
    return finish(&cli, status);
}
