/*  dagq.c - the dagq command line client: global options and dispatch.

    dagq [GLOBAL OPTIONS] COMMAND [ARGS]

    Global options come before the command. Each command is implemented in
    client/dq_cli_<verb>.c and has its own --help. This file holds only the
    global options, the command table, the top-level help (which lists the
    exit statuses) and main.
*/
#include "dq_cli.h"

#include <stdlib.h>
#include <string.h>

#ifndef DAGQ_VERSION
#define DAGQ_VERSION "0.0.0"
#endif

typedef struct {
    const char *name;
    dq_cli_fn *fn;
    const char *summary;
} s_command_t;

static const s_command_t s_commands [] = {
    { "submit", dq_cli_submit, "submit one job; prints its id" },
    { "submit-dag", dq_cli_submit_dag, "submit a DAG document (JSON file or -)" },
    { "status", dq_cli_status, "show the state of jobs (and DAGs)" },
    { "wait", dq_cli_wait, "wait until jobs or DAGs finish" },
    { "result", dq_cli_result, "print a finished job's output bytes" },
    { "cancel", dq_cli_cancel, "cancel a job or every unfinished job of a DAG" },
    { "stats", dq_cli_stats, "show queues per type and connected workers" },
    { "dag", dq_cli_dag, "show every job of a DAG (table, --json or --dot)" },
    { "keygen", dq_cli_keygen, "write a CURVE certificate pair (NAME, NAME_secret)" },
    { NULL, NULL, NULL }
};

static void
s_help (void)
{
    printf (
"Usage: dagq [GLOBAL OPTIONS] COMMAND [ARGS]\n"
"\n"
"Client for the dagq job broker: submit jobs and DAGs, wait for them, read\n"
"their results, inspect and cancel them.\n"
"\n"
"Commands:\n");
    for (const s_command_t *c = s_commands; c->name; c++)
        printf ("  %-11s %s\n", c->name, c->summary);
    printf (
"\n"
"Run 'dagq COMMAND --help' (or 'dagq help COMMAND') for a command's options.\n"
"\n"
"Global options (before the command):\n"
"  --broker ENDPOINT         broker frontend (env %s, default %s)\n"
"  --timeout SECONDS         give up on one request to the broker after this\n"
"                            long (default %d); it is re-sent after 1, 2, 4...\n"
"                            seconds meanwhile, with the same idempotency key\n"
"  --curve-secret FILE       this client's secret CURVE certificate\n"
"                            (env %s)\n"
"  --curve-broker-public FILE  the broker's public CURVE certificate\n"
"                            (env %s)\n"
"  -h, --help                this help\n"
"  --version                 print the version\n"
"\n"
"Exit status:\n"
"  0  success; for wait and submit --wait: every job succeeded\n"
"  1  a job failed, was cancelled or skipped; an unknown id (not found); the\n"
"     broker refused the request (invalid, cycle, busy, too big...)\n"
"  2  usage error; for wait: the timeout passed before the jobs finished\n"
"  3  no answer from the broker (not running, unreachable, or too slow)\n",
            DQ_CLI_BROKER_ENV, DQ_CLIENT_BROKER_DEFAULT,
            DQ_CLIENT_TIMEOUT_DEFAULT / 1000, DQ_CLI_CURVE_SECRET_ENV,
            DQ_CLI_CURVE_PUBLIC_ENV);
}

static const s_command_t *
s_find (const char *name)
{
    for (const s_command_t *c = s_commands; c->name; c++)
        if (strcmp (c->name, name) == 0)
            return c;
    return NULL;
}

static const char *
s_env (const char *name)
{
    const char *v = getenv (name);
    return v && *v? v: NULL;
}

int
main (int argc, char **argv)
{
    dq_cli_t cli = {
        .broker = s_env (DQ_CLI_BROKER_ENV),
        .curve_secret = s_env (DQ_CLI_CURVE_SECRET_ENV),
        .curve_public = s_env (DQ_CLI_CURVE_PUBLIC_ENV),
    };
    if (!cli.broker)
        cli.broker = DQ_CLIENT_BROKER_DEFAULT;

    int i = 1;
    for (; i < argc && argv [i][0] == '-'; i++) {
        const char *a = argv [i];
        const char *eq = strncmp (a, "--", 2) == 0? strchr (a, '='): NULL;
        size_t len = eq? (size_t) (eq - a): strlen (a);
        const char *value = eq? eq + 1: NULL;
        #define S_IS(name) (len == strlen (name) && strncmp (a, name, len) == 0)
        if (S_IS ("--help") || S_IS ("-h")) {
            s_help ();
            return DQ_CLI_EXIT_OK;
        }
        if (S_IS ("--version")) {
            printf ("dagq %s (protocol %d)\n", DAGQ_VERSION, DQ_PROTO_VERSION);
            return DQ_CLI_EXIT_OK;
        }
        bool takes_value = S_IS ("--broker") || S_IS ("--timeout")
                        || S_IS ("--curve-secret") || S_IS ("--curve-broker-public");
        if (!takes_value) {
            if (strcmp (a, "--") == 0) {
                i++;
                break;
            }
            return dq_cli_usage (NULL, "unknown global option '%s' (global options "
                                 "go before the command)", a);
        }
        if (!value) {
            if (i + 1 >= argc)
                return dq_cli_usage (NULL, "%.*s needs a value", (int) len, a);
            value = argv [++i];
        }
        if (S_IS ("--broker")) {
            if (!*value)
                return dq_cli_usage (NULL, "--broker needs an endpoint");
            cli.broker = value;
        }
        else
        if (S_IS ("--timeout")) {
            uint64_t ms;
            if (dq_cli_parse_seconds (NULL, "--timeout", value, 0.001,
                                      DQ_CLI_CALL_TIMEOUT_MAX, &ms))
                return DQ_CLI_EXIT_USAGE;
            cli.timeout_ms = (int) ms;
        }
        else
        if (S_IS ("--curve-secret"))
            cli.curve_secret = *value? value: NULL;
        else
            cli.curve_public = *value? value: NULL;
        #undef S_IS
    }
    if (i >= argc) {
        s_help ();
        return DQ_CLI_EXIT_USAGE;
    }
    if ((cli.curve_secret != NULL) != (cli.curve_public != NULL))
        return dq_cli_usage (NULL, "CURVE needs both --curve-secret and "
                             "--curve-broker-public (or %s and %s)",
                             DQ_CLI_CURVE_SECRET_ENV, DQ_CLI_CURVE_PUBLIC_ENV);

    const char *name = argv [i];
    if (strcmp (name, "help") == 0) {
        if (i + 1 >= argc) {
            s_help ();
            return DQ_CLI_EXIT_OK;
        }
        const s_command_t *c = s_find (argv [i + 1]);
        if (!c)
            return dq_cli_usage (NULL, "unknown command '%s'", argv [i + 1]);
        char *help_argv [] = { (char *) c->name, (char *) "--help", NULL };
        return c->fn (&cli, 2, help_argv);
    }
    const s_command_t *c = s_find (name);
    if (!c)
        return dq_cli_usage (NULL, "unknown command '%s'", name);
    int rc = c->fn (&cli, argc - i, argv + i);
    dq_client_destroy (&cli.client);
    return rc;
}
