/*  dagq_worker.c - dagq-worker: runs jobs for a dagq broker.

    main only: read the environment and the command line, register the
    handlers (built-ins, external commands), run the engine (common/
    dq_worker) until SIGINT or SIGTERM, exit. Flags, environment variables
    and exit codes are listed in s_usage.
*/
#include <czmq.h>
#include <signal.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "dq_builtins.h"
#include "dq_exec.h"
#include "dq_log.h"
#include "dq_util.h"
#include "dq_worker.h"

#ifndef DAGQ_VERSION
#define DAGQ_VERSION "unknown"
#endif

#define S_EXIT_OK      0
#define S_EXIT_FAILED  1                //  could not start
#define S_EXIT_USAGE   2
#define S_GRACE_MAX_S  86400

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: dagq-worker [OPTION]...\n"
"Run jobs for a dagq broker: announce the job types this process has handlers\n"
"for, run up to N jobs at once, report results. Stops on SIGINT or SIGTERM:\n"
"takes no new jobs, finishes running ones within the grace period, exits.\n"
"\n"
"  -b, --broker ENDPOINT    broker backend (default %s)\n"
"  -c, --concurrency N      jobs at once, 1-%d (default: number of cores)\n"
"      --builtins           enable the built-in types: echo, sleep (payload =\n"
"                           milliseconds), fail (error = payload), sha256\n"
"                           (lowercase hex digest), concat (parents' outputs)\n"
"      --handler TYPE=COMMAND\n"
"                           run `/bin/sh -c COMMAND` for each job of TYPE:\n"
"                           payload on stdin, stdout is the output, exit status\n"
"                           0 is success, else the end of stderr is the error;\n"
"                           env DAGQ_JOB_ID, DAGQ_JOB_TYPE, DAGQ_ATTEMPT,\n"
"                           DAGQ_PARENTS_DIR (one file per parent, holding its\n"
"                           output); repeatable\n"
"  -n, --name NAME          worker name shown in stats (default: host name)\n"
"  -g, --grace SECONDS      on stop, time running jobs get to finish (default %d)\n"
"      --max-output SIZE    largest output reported as success, bytes or with\n"
"                           K/M suffix (default and maximum %u; match the\n"
"                           broker's --max-payload)\n"
"      --curve-secret FILE  this worker's secret CURVE certificate (czmq zcert\n"
"                           format, as written by `dagq keygen`); with the\n"
"                           next option, encrypts and authenticates the link\n"
"      --curve-broker-public FILE\n"
"                           the broker's public CURVE certificate\n"
"                           (--curve-cert and --broker-cert are old names)\n"
"  -v, --verbose            log every job and message (same as --log-level debug)\n"
"      --log-level LEVEL    error, warn, info (default) or debug\n"
"  -h, --help               show this help and exit\n"
"  -V, --version            show the version and exit\n"
"\n"
"At least one of --builtins and --handler is needed. Logs go to stderr, one\n"
"line per event; payloads are never logged.\n"
"\n"
"Environment (the command line wins):\n"
"  DAGQ_WORKER_BROKER       as --broker\n"
"  DAGQ_CONCURRENCY         as --concurrency\n"
"  DAGQ_WORKER_NAME         as --name\n"
"  DAGQ_WORKER_GRACE        as --grace\n"
"  DAGQ_WORKER_MAX_OUTPUT   as --max-output\n"
"  DAGQ_CURVE_SECRET        as --curve-secret (old name DAGQ_WORKER_CURVE_CERT)\n"
"  DAGQ_CURVE_BROKER_PUBLIC as --curve-broker-public (old name\n"
"                           DAGQ_WORKER_BROKER_CERT)\n"
"  DAGQ_LOG_LEVEL           as --log-level\n"
"\n"
"Exit status: 0 stopped normally, 1 could not start (see the log),\n"
"2 usage error.\n",
             DQ_WORKER_BROKER_DEFAULT, DQ_WORKER_CONCURRENCY_MAX,
             DQ_WORKER_GRACE_DEFAULT / 1000, (unsigned) DQ_WORKER_OUTPUT_MAX);
}

static int
s_usage_error (const char *fmt, const char *a, const char *b)
{
    fprintf (stderr, "dagq-worker: ");
    fprintf (stderr, fmt, a, b);
    fprintf (stderr, "\nTry 'dagq-worker --help' for more information.\n");
    return S_EXIT_USAGE;
}

static bool
s_type_ok (const char *t)
{
    size_t len = strlen (t);
    if (len == 0 || len > DQ_PROTO_TYPE_MAX)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
           || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'
           || *p == ':' || *p == '-'))
            return false;
    return true;
}

typedef struct {
    char *type;                  //  copy of TYPE (argv stays as given, for ps)
    const char *command;         //  points into argv
} s_handler_opt_t;

typedef struct {
    const char *broker, *name, *curve_cert, *broker_cert;
    const char *concurrency, *grace, *max_output, *log_level;
    const char *concurrency_from, *grace_from, *max_output_from, *log_level_from;
    bool builtins, verbose;
    char **handlers;             //  "TYPE=COMMAND" as given
    int nhandlers;
    s_handler_opt_t *parsed;     //  nhandlers of them, once validated
} s_opts_t;

enum {
    S_OPT_BUILTINS = 256, S_OPT_HANDLER, S_OPT_MAX_OUTPUT, S_OPT_CURVE_CERT,
    S_OPT_BROKER_CERT, S_OPT_LOG_LEVEL,
};

static const char *
s_env (const char *name)
{
    const char *value = getenv (name);
    return value && *value? value: NULL;
}

//  SIGTERM/SIGINT before czmq installs its own handler (when the worker's
//  socket is created) must stop the worker too, not kill the process.
static dq_worker_t *volatile s_stop_target;
static volatile sig_atomic_t s_stop_early;

static void
s_on_signal (int sig)
{
    (void) sig;
    if (s_stop_target)
        dq_worker_stop (s_stop_target);
    else
        s_stop_early = 1;
}

int
main (int argc, char *argv [])
{
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction (SIGTERM, &sa, NULL);
    sigaction (SIGINT, &sa, NULL);
    s_opts_t o = { 0 };
    o.broker = s_env ("DAGQ_WORKER_BROKER");
    o.name = s_env ("DAGQ_WORKER_NAME");
    //  The names win over the old ones; both stay accepted.
    o.curve_cert = s_env ("DAGQ_CURVE_SECRET");
    if (!o.curve_cert)
        o.curve_cert = s_env ("DAGQ_WORKER_CURVE_CERT");
    o.broker_cert = s_env ("DAGQ_CURVE_BROKER_PUBLIC");
    if (!o.broker_cert)
        o.broker_cert = s_env ("DAGQ_WORKER_BROKER_CERT");
    o.concurrency = s_env ("DAGQ_CONCURRENCY");
    o.concurrency_from = "DAGQ_CONCURRENCY";
    o.grace = s_env ("DAGQ_WORKER_GRACE");
    o.grace_from = "DAGQ_WORKER_GRACE";
    o.max_output = s_env ("DAGQ_WORKER_MAX_OUTPUT");
    o.max_output_from = "DAGQ_WORKER_MAX_OUTPUT";
    o.log_level = s_env ("DAGQ_LOG_LEVEL");
    o.log_level_from = "DAGQ_LOG_LEVEL";
    o.handlers = calloc ((size_t) argc + 1, sizeof (char *));
    o.parsed = calloc ((size_t) argc + 1, sizeof (s_handler_opt_t));
    if (!o.handlers || !o.parsed) {
        free (o.handlers);
        free (o.parsed);
        return S_EXIT_FAILED;
    }

    static const struct option longopts [] = {
        { "broker",      required_argument, NULL, 'b' },
        { "concurrency", required_argument, NULL, 'c' },
        { "builtins",    no_argument,       NULL, S_OPT_BUILTINS },
        { "handler",     required_argument, NULL, S_OPT_HANDLER },
        { "name",        required_argument, NULL, 'n' },
        { "grace",       required_argument, NULL, 'g' },
        { "max-output",  required_argument, NULL, S_OPT_MAX_OUTPUT },
        { "curve-secret", required_argument, NULL, S_OPT_CURVE_CERT },
        { "curve-broker-public", required_argument, NULL, S_OPT_BROKER_CERT },
        { "curve-cert",  required_argument, NULL, S_OPT_CURVE_CERT },   //  old name
        { "broker-cert", required_argument, NULL, S_OPT_BROKER_CERT },  //  old name
        { "verbose",     no_argument,       NULL, 'v' },
        { "log-level",   required_argument, NULL, S_OPT_LOG_LEVEL },
        { "help",        no_argument,       NULL, 'h' },
        { "version",     no_argument,       NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    opterr = 0;
    int opt;
    int rc = S_EXIT_USAGE;
    dq_worker_t *worker = NULL;
    while ((opt = getopt_long (argc, argv, ":b:c:n:g:vhV", longopts, NULL)) != -1) {
        switch (opt) {
            case 'b': o.broker = optarg; break;
            case 'c': o.concurrency = optarg; o.concurrency_from = "--concurrency"; break;
            case S_OPT_BUILTINS: o.builtins = true; break;
            case S_OPT_HANDLER: o.handlers [o.nhandlers++] = optarg; break;
            case 'n': o.name = optarg; break;
            case 'g': o.grace = optarg; o.grace_from = "--grace"; break;
            case S_OPT_MAX_OUTPUT:
                o.max_output = optarg;
                o.max_output_from = "--max-output";
                break;
            case S_OPT_CURVE_CERT: o.curve_cert = optarg; break;
            case S_OPT_BROKER_CERT: o.broker_cert = optarg; break;
            case 'v': o.verbose = true; break;
            case S_OPT_LOG_LEVEL:
                o.log_level = optarg;
                o.log_level_from = "--log-level";
                break;
            case 'h':
                s_usage (stdout);
                rc = S_EXIT_OK;
                goto out;
            case 'V':
                printf ("dagq-worker %s\n", DAGQ_VERSION);
                rc = S_EXIT_OK;
                goto out;
            case ':':
                s_usage_error ("option '%s' needs a value%s", argv [optind - 1], "");
                goto out;
            default:
                s_usage_error ("unknown option '%s'%s", argv [optind - 1], "");
                goto out;
        }
    }
    if (optind < argc) {
        s_usage_error ("unexpected argument '%s'%s", argv [optind], "");
        goto out;
    }

    //  Validate everything before connecting anywhere.
    uint64_t concurrency = 0, max_output = DQ_WORKER_OUTPUT_MAX;
    if (o.concurrency
    &&  dq_parse_u64 (o.concurrency, 1, DQ_WORKER_CONCURRENCY_MAX, &concurrency)) {
        char range [64];
        snprintf (range, sizeof range, "1 to %d", DQ_WORKER_CONCURRENCY_MAX);
        fprintf (stderr, "dagq-worker: %s: '%s' is not a whole number from %s\n",
                 o.concurrency_from, o.concurrency, range);
        goto out;
    }
    if (o.max_output
    &&  (dq_parse_size (o.max_output, &max_output) || max_output > DQ_WORKER_OUTPUT_MAX)) {
        fprintf (stderr, "dagq-worker: %s: '%s' is not a size from 0 to %u bytes\n",
                 o.max_output_from, o.max_output, (unsigned) DQ_WORKER_OUTPUT_MAX);
        goto out;
    }
    uint64_t grace_ms = DQ_WORKER_GRACE_DEFAULT;
    if (o.grace && dq_parse_seconds_ms (o.grace, S_GRACE_MAX_S, &grace_ms)) {
        fprintf (stderr, "dagq-worker: %s: '%s' is not a number of seconds "
                 "from 0 to %d\n", o.grace_from, o.grace, S_GRACE_MAX_S);
        goto out;
    }
    int level = DQ_WORKER_LOG_INFO;
    if (o.log_level && (level = dq_log_parse_level (o.log_level)) < 0) {
        fprintf (stderr, "dagq-worker: %s: '%s' is not one of error, warn, info, "
                 "debug\n", o.log_level_from, o.log_level);
        goto out;
    }
    if (o.verbose)
        level = DQ_WORKER_LOG_DEBUG;
    const char *broker = o.broker? o.broker: DQ_WORKER_BROKER_DEFAULT;
    if (!strstr (broker, "://")) {
        fprintf (stderr, "dagq-worker: --broker: '%s' is not a ZeroMQ endpoint "
                 "(e.g. tcp://HOST:5556)\n", broker);
        goto out;
    }
    if (o.name && (!*o.name || strlen (o.name) > 256)) {
        fprintf (stderr, "dagq-worker: --name: must be 1 to 256 bytes\n");
        goto out;
    }
    if (!!o.curve_cert != !!o.broker_cert) {
        fprintf (stderr, "dagq-worker: --curve-secret and --curve-broker-public go "
                 "together\n");
        goto out;
    }
    if (!o.builtins && o.nhandlers == 0) {
        s_usage_error ("nothing to run: give --builtins or at least one "
                       "--handler TYPE=COMMAND%s%s", "", "");
        goto out;
    }
    for (int i = 0; i < o.nhandlers; i++) {
        char *eq = strchr (o.handlers [i], '=');
        if (!eq || eq == o.handlers [i] || !eq [1]) {
            fprintf (stderr, "dagq-worker: --handler: '%s' is not TYPE=COMMAND\n",
                     o.handlers [i]);
            goto out;
        }
        char *type = strndup (o.handlers [i], (size_t) (eq - o.handlers [i]));
        if (!type)
            goto out;
        o.parsed [i].type = type;
        o.parsed [i].command = eq + 1;
        if (!s_type_ok (type)) {
            fprintf (stderr, "dagq-worker: --handler: type '%s' must be 1 to %d "
                     "characters from A-Z a-z 0-9 _ . : -\n", type, DQ_PROTO_TYPE_MAX);
            goto out;
        }
        for (int k = 0; k < i; k++)
            if (strcmp (o.parsed [k].type, type) == 0) {
                fprintf (stderr, "dagq-worker: --handler: type '%s' given twice\n", type);
                goto out;
            }
        if (o.builtins && dq_builtins_find (type, NULL)) {
            fprintf (stderr, "dagq-worker: --handler: type '%s' is also a built-in "
                     "(drop --builtins or rename the type)\n", type);
            goto out;
        }
    }
    if (o.nhandlers + (o.builtins? 5: 0) > DQ_PROTO_TYPES_MAX) {
        fprintf (stderr, "dagq-worker: at most %d job types per worker\n",
                 DQ_PROTO_TYPES_MAX);
        goto out;
    }

    rc = S_EXIT_FAILED;
    dq_log_init ("dagq-worker", false);
    dq_log_set_level (level);
    //  Processes that jobs' commands leave behind become our children, so
    //  dq_exec reaps them even where init does not (containers).
    if (prctl (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
        dq_log_warn ("cannot become a child subreaper: %s", strerror (errno));
    worker = dq_worker_new (broker, (uint32_t) concurrency);
    if (!worker) {
        dq_log_error ("endpoint=%s - cannot create the worker", broker);
        goto out;
    }
    s_stop_target = worker;
    if (s_stop_early)
        dq_worker_stop (worker);
    dq_worker_set_log_level (worker, level);
    dq_worker_set_grace (worker, (int) grace_ms);
    dq_worker_set_max_output (worker, (size_t) max_output);
    if (o.name)
        dq_worker_set_name (worker, o.name);
    if (o.curve_cert && dq_worker_set_curve (worker, o.curve_cert, o.broker_cert)) {
        dq_log_error ("cannot use CURVE with %s and %s (unreadable, no secret key, or "
                    "libzmq without CURVE)", o.curve_cert, o.broker_cert);
        goto out;
    }
    for (int i = 0; i < o.nhandlers; i++)
        if (dq_exec_register (worker, o.parsed [i].type, o.parsed [i].command)) {
            dq_log_error ("type=%s - cannot register the handler", o.parsed [i].type);
            goto out;
        }
    if (o.builtins && dq_builtins_register (worker)) {
        dq_log_error ("cannot register the built-in types");
        goto out;
    }
    dq_log_info ("version=%s builtins=%s handlers=%d - starting", DAGQ_VERSION,
                 o.builtins? "yes": "no", o.nhandlers);
    if (dq_worker_run (worker) == 0)
        rc = S_EXIT_OK;

out:
    s_stop_target = NULL;
    dq_worker_destroy (&worker);
    for (int i = 0; i < o.nhandlers; i++)
        free (o.parsed [i].type);
    free (o.parsed);
    free (o.handlers);
    return rc;
}
