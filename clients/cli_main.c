/*
 * cli_main.c - main() of the `cellar` command-line tool. Everything else
 * lives in clients/cli_*.c (see cli.h), so tests can drive the commands.
 */
#include "cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
