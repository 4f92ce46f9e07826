/*  dagq-broker - the dagq job broker. main only: options, start, run, stop.

    Precedence: defaults < --config file (ZPL) < DAGQ_* environment <
    command line. Exit codes: 0 clean stop, 1 store failure while running
    (fail-stop), 2 usage, 3 config, 4 bind, 5 store refused at start.
*/
#include <czmq.h>
#include <getopt.h>

#include "dq_broker.h"
#include "dq_log.h"
#include "dq_store.h"
#include "dq_util.h"

typedef enum { OPT_STR, OPT_U64, OPT_U32, OPT_MS, OPT_SIZE, OPT_FLAG, OPT_SYNC,
               OPT_LEVEL } opt_kind_t;

typedef struct {
    const char *name;        //  --name, config key broker/name, env DAGQ_NAME
    opt_kind_t kind;
    const char *help;
    uint64_t min, max;
} opt_t;

//  One table: flag, config key and environment variable of every setting.
static const opt_t s_opts [] = {
    { "frontend", OPT_STR, "client endpoint (ROUTER)", 0, 0 },
    { "backend", OPT_STR, "worker endpoint (ROUTER)", 0, 0 },
    { "events", OPT_STR, "event endpoint (PUB); empty = none", 0, 0 },
    { "data-dir", OPT_STR, "directory of the store", 0, 0 },
    { "memory", OPT_FLAG, "no store: nothing survives a restart", 0, 0 },
    { "sync", OPT_SYNC, "full|normal|off: fsync policy of the store", 0, 0 },
    { "broker-id", OPT_STR, "id of a new data dir (default random)", 0, 0 },
    { "heartbeat-ms", OPT_U32, "heartbeat interval in ms", 50, 600000 },
    { "liveness", OPT_U32, "missed heartbeats before a worker is dropped", 2, 100 },
    { "max-jobs", OPT_U64, "unfinished jobs before SUBMIT gets BUSY", 1, UINT64_MAX },
    { "max-bytes", OPT_SIZE, "payload bytes of unfinished jobs before BUSY", 1, UINT64_MAX },
    { "max-payload", OPT_SIZE, "largest payload or output", 1, 64u << 20 },
    { "max-message", OPT_SIZE, "largest message accepted", 4096, 256u << 20 },
    { "max-dag-jobs", OPT_U32, "jobs in one submission", 1, 2097152 },
    { "max-deps", OPT_U32, "dependencies of one job", 1, 4096 },
    { "attempts", OPT_U32, "default attempts per job", 1, 1000 },
    { "retry-base-ms", OPT_U32, "first retry backoff in ms (doubles)", 0, 3600000 },
    { "retry-max-ms", OPT_U32, "largest retry backoff in ms", 0, 86400000 },
    { "result-ttl", OPT_MS, "seconds finished jobs stay queryable", 1, 365ull * 86400 },
    { "max-store-bytes", OPT_SIZE, "store size before submissions are refused (0 = none)", 0, UINT64_MAX },
    { "min-free-bytes", OPT_SIZE, "disk space kept free for completions", 0, UINT64_MAX },
    { "batch", OPT_U32, "messages handled per loop turn", 1, 1000000 },
    { "curve-secret", OPT_STR, "broker's secret certificate (enables CURVE)", 0, 0 },
    { "curve-clients", OPT_STR, "dir of allowed client/worker public certs", 0, 0 },
    { "curve-workers", OPT_STR, "optional dir of allowed worker public certs", 0, 0 },
    { "log-level", OPT_LEVEL, "error|warn|info|debug", 0, 0 },
};
#define NOPTS (sizeof s_opts / sizeof s_opts [0])

static void
s_usage (FILE *out)
{
    dq_broker_cfg_t d;
    dq_broker_cfg_defaults (&d);
    fprintf (out,
        "Usage: dagq-broker [OPTIONS]\n"
        "The dagq job broker: accepts jobs and DAGs from clients, keeps them on\n"
        "disk, and hands ready jobs to workers.\n\n"
        "Options (each also DAGQ_<NAME> in the environment, e.g. DAGQ_DATA_DIR,\n"
        "and broker/<name> in a --config file):\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf (out, "  --%-18s %s\n", s_opts [i].name, s_opts [i].help);
    fprintf (out,
        "  --config FILE        read settings from a ZPL file (deploy/dagq.cfg)\n"
        "  --print-config       print the effective settings and exit\n"
        "  -v, --verbose        same as --log-level debug\n"
        "  -h, --help           this help\n"
        "  -V, --version        print the version\n\n"
        "Defaults: frontend %s, backend %s, events %s, data-dir %s,\n"
        "sync full, heartbeat-ms %u, liveness %u, attempts %u, result-ttl %llu s.\n\n"
        "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 store failure while running,\n"
        "2 usage, 3 configuration, 4 cannot bind, 5 store refused at start.\n",
        d.frontend, d.backend, d.events, d.data_dir, d.heartbeat_ms, d.liveness,
        d.attempts, (unsigned long long) (d.result_ttl_ms / 1000));
}

//  Apply one setting; returns 0 or -1 with a message on stderr.
static int
s_apply (dq_broker_cfg_t *cfg, const opt_t *o, const char *value,
         const char *source, int *level)
{
    uint64_t v = 0;
    switch (o->kind) {
        case OPT_STR:
            break;
        case OPT_FLAG:
            if (strcmp (value, "1") && strcmp (value, "0") && strcmp (value, "true")
            &&  strcmp (value, "false")) {
                fprintf (stderr, "dagq-broker: %s: %s must be true or false\n", source, o->name);
                return -1;
            }
            v = (!strcmp (value, "1") || !strcmp (value, "true"));
            break;
        case OPT_SYNC:
            if      (!strcmp (value, "full"))   v = DQ_STORE_SYNC_FULL;
            else if (!strcmp (value, "normal")) v = DQ_STORE_SYNC_NORMAL;
            else if (!strcmp (value, "off"))    v = DQ_STORE_SYNC_OFF;
            else {
                fprintf (stderr, "dagq-broker: %s: --sync must be full, normal or off, not '%s'\n",
                         source, value);
                return -1;
            }
            break;
        case OPT_LEVEL:
            if (dq_log_parse_level (value) < 0) {
                fprintf (stderr, "dagq-broker: %s: --log-level must be error, warn, info "
                         "or debug, not '%s'\n", source, value);
                return -1;
            }
            *level = dq_log_parse_level (value);
            return 0;
        case OPT_MS: {
            uint64_t ms;
            if (dq_parse_seconds_ms (value, (double) o->max, &ms) || ms < o->min * 1000) {
                fprintf (stderr, "dagq-broker: %s: --%s must be seconds in [%llu, %llu], "
                         "not '%s'\n", source, o->name, (unsigned long long) o->min,
                         (unsigned long long) o->max, value);
                return -1;
            }
            v = ms;
            break;
        }
        case OPT_SIZE:
            if (dq_parse_size (value, &v) || v < o->min || v > o->max) {
                fprintf (stderr, "dagq-broker: %s: --%s must be a size (e.g. 512K, 16M) "
                         "in [%llu, %llu], not '%s'\n", source, o->name,
                         (unsigned long long) o->min, (unsigned long long) o->max, value);
                return -1;
            }
            break;
        case OPT_U64:
        case OPT_U32:
            if (dq_parse_u64 (value, o->min, o->max, &v)) {
                fprintf (stderr, "dagq-broker: %s: --%s must be an integer in [%llu, %llu], "
                         "not '%s'\n", source, o->name, (unsigned long long) o->min,
                         (unsigned long long) o->max, value);
                return -1;
            }
            break;
    }
    const char *n = o->name;
    if      (!strcmp (n, "frontend"))        cfg->frontend = value;
    else if (!strcmp (n, "backend"))         cfg->backend = value;
    else if (!strcmp (n, "events"))          cfg->events = value;
    else if (!strcmp (n, "data-dir"))        cfg->data_dir = value;
    else if (!strcmp (n, "memory"))          cfg->memory = v != 0;
    else if (!strcmp (n, "sync"))            cfg->sync = (int) v;
    else if (!strcmp (n, "broker-id"))       cfg->broker_id = value;
    else if (!strcmp (n, "heartbeat-ms"))    cfg->heartbeat_ms = (uint32_t) v;
    else if (!strcmp (n, "liveness"))        cfg->liveness = (uint32_t) v;
    else if (!strcmp (n, "max-jobs"))        cfg->max_jobs = v;
    else if (!strcmp (n, "max-bytes"))       cfg->max_bytes = v;
    else if (!strcmp (n, "max-payload"))     cfg->max_payload = (uint32_t) v;
    else if (!strcmp (n, "max-message"))     cfg->max_message = (uint32_t) v;
    else if (!strcmp (n, "max-dag-jobs"))    cfg->max_dag_jobs = (uint32_t) v;
    else if (!strcmp (n, "max-deps"))        cfg->max_deps = (uint32_t) v;
    else if (!strcmp (n, "attempts"))        cfg->attempts = (uint32_t) v;
    else if (!strcmp (n, "retry-base-ms"))   cfg->retry_base_ms = (uint32_t) v;
    else if (!strcmp (n, "retry-max-ms"))    cfg->retry_max_ms = (uint32_t) v;
    else if (!strcmp (n, "result-ttl"))      cfg->result_ttl_ms = v;
    else if (!strcmp (n, "max-store-bytes")) cfg->max_store_bytes = v;
    else if (!strcmp (n, "min-free-bytes"))  cfg->min_free_bytes = v;
    else if (!strcmp (n, "batch"))           cfg->batch = (uint32_t) v;
    else if (!strcmp (n, "curve-secret"))    cfg->curve_secret = value;
    else if (!strcmp (n, "curve-clients"))   cfg->curve_clients = value;
    else if (!strcmp (n, "curve-workers"))   cfg->curve_workers = value;
    return 0;
}

static const opt_t *
s_find (const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp (s_opts [i].name, name))
            return &s_opts [i];
    return NULL;
}

static void
s_print_config (const dq_broker_cfg_t *c, int level)
{
    static const char *syncs [] = { "full", "normal", "off" };
    static const char *levels [] = { "error", "warn", "info", "debug" };
    printf ("frontend = %s\nbackend = %s\nevents = %s\ndata-dir = %s\nmemory = %s\n"
            "sync = %s\nheartbeat-ms = %u\nliveness = %u\nmax-jobs = %llu\n"
            "max-bytes = %llu\nmax-payload = %u\nmax-message = %u\nmax-dag-jobs = %u\n"
            "max-deps = %u\nattempts = %u\nretry-base-ms = %u\nretry-max-ms = %u\n"
            "result-ttl = %llu\nmax-store-bytes = %llu\nmin-free-bytes = %llu\n"
            "batch = %u\ncurve-secret = %s\ncurve-clients = %s\ncurve-workers = %s\n"
            "log-level = %s\n",
            c->frontend, c->backend, c->events, c->data_dir, c->memory? "true": "false",
            syncs [c->sync], c->heartbeat_ms, c->liveness,
            (unsigned long long) c->max_jobs, (unsigned long long) c->max_bytes,
            c->max_payload, c->max_message, c->max_dag_jobs, c->max_deps, c->attempts,
            c->retry_base_ms, c->retry_max_ms,
            (unsigned long long) (c->result_ttl_ms / 1000),
            (unsigned long long) c->max_store_bytes, (unsigned long long) c->min_free_bytes,
            c->batch, c->curve_secret? c->curve_secret: "", c->curve_clients? c->curve_clients: "",
            c->curve_workers? c->curve_workers: "", levels [level]);
}

//  A signal that arrives before the loop runs stops the broker as soon as
//  it is created (dq_broker_run installs its own handler then).
static dq_broker_t *volatile s_stop_target;
static volatile sig_atomic_t s_stop_early;

static void
s_on_signal (int sig)
{
    (void) sig;
    if (s_stop_target)
        dq_broker_stop (s_stop_target);
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
    //  Our own SIGINT/SIGTERM handling (dq_broker_run) replaces czmq's.
    zsys_handler_set (NULL);
    dq_log_init ("dagq-broker", false);
    dq_broker_cfg_t cfg;
    dq_broker_cfg_defaults (&cfg);
    int level = DQ_LOG_INFO;
    bool print_config = false;
    const char *config_file = NULL;

    //  Long options from the table, plus the fixed ones.
    struct option longopts [NOPTS + 6];
    for (size_t i = 0; i < NOPTS; i++)
        longopts [i] = (struct option) { s_opts [i].name,
            s_opts [i].kind == OPT_FLAG? no_argument: required_argument, NULL, 1000 + (int) i };
    longopts [NOPTS + 0] = (struct option) { "config", required_argument, NULL, 'c' };
    longopts [NOPTS + 1] = (struct option) { "print-config", no_argument, NULL, 'p' };
    longopts [NOPTS + 2] = (struct option) { "verbose", no_argument, NULL, 'v' };
    longopts [NOPTS + 3] = (struct option) { "help", no_argument, NULL, 'h' };
    longopts [NOPTS + 4] = (struct option) { "version", no_argument, NULL, 'V' };
    longopts [NOPTS + 5] = (struct option) { NULL, 0, NULL, 0 };

    //  First pass: find --config and the fixed options.
    int c;
    opterr = 1;
    while ((c = getopt_long (argc, argv, "vhV", longopts, NULL)) != -1) {
        if (c == 'c') config_file = optarg;
        else if (c == 'p') print_config = true;
        else if (c == 'h') { s_usage (stdout); return 0; }
        else if (c == 'V') { printf ("dagq-broker %s\n", DAGQ_VERSION); return 0; }
        else if (c == '?') { fprintf (stderr, "Try 'dagq-broker --help'.\n"); return DQ_BROKER_EXIT_USAGE; }
    }
    if (optind < argc) {
        fprintf (stderr, "dagq-broker: unexpected argument '%s'\nTry 'dagq-broker --help'.\n",
                 argv [optind]);
        return DQ_BROKER_EXIT_USAGE;
    }
    //  File, then environment, then command line.
    zconfig_t *file = NULL;
    if (config_file) {
        file = zconfig_load (config_file);
        if (!file) {
            fprintf (stderr, "dagq-broker: cannot read config file %s\n", config_file);
            return DQ_BROKER_EXIT_CONFIG;
        }
        zconfig_t *section = zconfig_locate (file, "broker");
        for (zconfig_t *item = section? zconfig_child (section): NULL; item;
             item = zconfig_next (item)) {
            const opt_t *o = s_find (zconfig_name (item));
            if (!o) {
                fprintf (stderr, "dagq-broker: %s: unknown setting broker/%s\n",
                         config_file, zconfig_name (item));
                zconfig_destroy (&file);
                return DQ_BROKER_EXIT_CONFIG;
            }
            if (s_apply (&cfg, o, zconfig_value (item), config_file, &level)) {
                zconfig_destroy (&file);
                return DQ_BROKER_EXIT_CONFIG;
            }
        }
    }
    for (size_t i = 0; i < NOPTS; i++) {
        char env [64] = "DAGQ_";
        size_t at = 5;
        for (const char *p = s_opts [i].name; *p && at < sizeof env - 1; p++)
            env [at++] = *p == '-'? '_': (char) toupper ((unsigned char) *p);
        env [at] = 0;
        const char *value = getenv (env);
        if (value && s_apply (&cfg, &s_opts [i], value, env, &level)) {
            zconfig_destroy (&file);
            return DQ_BROKER_EXIT_CONFIG;
        }
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long (argc, argv, "vhV", longopts, NULL)) != -1) {
        if (c == 'v')
            level = DQ_LOG_DEBUG;
        else
        if (c >= 1000 && s_apply (&cfg, &s_opts [c - 1000],
                                  s_opts [c - 1000].kind == OPT_FLAG? "1": optarg,
                                  "command line", &level)) {
            zconfig_destroy (&file);
            return DQ_BROKER_EXIT_USAGE;
        }
    }
    if (cfg.retry_max_ms < cfg.retry_base_ms)
        cfg.retry_max_ms = cfg.retry_base_ms;
    if (cfg.curve_clients && !cfg.curve_secret) {
        fprintf (stderr, "dagq-broker: --curve-clients needs --curve-secret\n");
        zconfig_destroy (&file);
        return DQ_BROKER_EXIT_USAGE;
    }
    if (print_config) {
        s_print_config (&cfg, level);
        zconfig_destroy (&file);
        return 0;
    }
    dq_log_set_level (level);
    if (cfg.memory)
        dq_log_warn ("broker - running with --memory: no store, nothing survives a restart");

    char err [600];
    int code = 0;
    dq_broker_t *broker = dq_broker_new (&cfg, err, sizeof err, &code);
    if (!broker) {
        dq_log_error ("broker - cannot start: %s", err);
        zconfig_destroy (&file);
        return code;
    }
    s_stop_target = broker;
    if (s_stop_early)
        dq_broker_stop (broker);
    int rc = dq_broker_run (broker);
    s_stop_target = NULL;
    dq_broker_destroy (&broker);
    zconfig_destroy (&file);
    return rc;
}
