/*  dagq-broker - the dagq job broker. main only: options, start, run, stop.

    Precedence: defaults < --config file (ZPL) < DAGQ_* environment <
    command line. Exit codes: 0 clean stop, 1 store failure while running
    (fail-stop), 2 usage, 3 config, 4 bind, 5 store refused at start.
*/
#include <czmq.h>

#include "dq_broker.h"
#include "dq_cfg.h"
#include "dq_log.h"
#include "dq_store.h"

//  Settings, in table order (the index apply receives).
enum {
    OPT_FRONTEND, OPT_BACKEND, OPT_EVENTS, OPT_DATA_DIR, OPT_MEMORY, OPT_SYNC,
    OPT_BROKER_ID, OPT_HEARTBEAT_MS, OPT_LIVENESS, OPT_MAX_JOBS, OPT_MAX_BYTES,
    OPT_MAX_PAYLOAD, OPT_MAX_MESSAGE, OPT_MAX_DAG_JOBS, OPT_MAX_DEPS, OPT_ATTEMPTS,
    OPT_RETRY_BASE_MS, OPT_RETRY_MAX_MS, OPT_RESULT_TTL, OPT_MAX_STORE_BYTES,
    OPT_MIN_FREE_BYTES, OPT_BATCH, OPT_CURVE_SECRET, OPT_CURVE_CLIENTS,
    OPT_CURVE_WORKERS, OPT_LOG_LEVEL, NOPTS
};

//  In dq_store_sync_t order.
static const char *s_syncs [] = { "full", "normal", "off", NULL };

//  One table: flag, config key broker/<name> and environment variable
//  DAGQ_<NAME> of every setting.
static const dq_cfg_opt_t s_opts [NOPTS] = {
    [OPT_FRONTEND] = { "frontend", DQ_CFG_STR, "client endpoint (ROUTER)", 0, 0, 0, NULL },
    [OPT_BACKEND] = { "backend", DQ_CFG_STR, "worker endpoint (ROUTER)", 0, 0, 0, NULL },
    [OPT_EVENTS] = { "events", DQ_CFG_STR, "event endpoint (PUB); empty = none", 0, 0, 0, NULL },
    [OPT_DATA_DIR] = { "data-dir", DQ_CFG_STR, "directory of the store", 0, 0, 0, NULL },
    [OPT_MEMORY] = { "memory", DQ_CFG_BOOL, "no store: nothing survives a restart", 0, 0,
                     DQ_CFG_NOARG, NULL },
    [OPT_SYNC] = { "sync", DQ_CFG_CHOICE, "full|normal|off: fsync policy of the store", 0, 0,
                   0, s_syncs },
    [OPT_BROKER_ID] = { "broker-id", DQ_CFG_STR, "id of a new data dir (default random)", 0, 0, 0, NULL },
    [OPT_HEARTBEAT_MS] = { "heartbeat-ms", DQ_CFG_U32, "heartbeat interval in ms", 50, 600000, 0, NULL },
    [OPT_LIVENESS] = { "liveness", DQ_CFG_U32, "missed heartbeats before a worker is dropped",
                       2, 100, 0, NULL },
    [OPT_MAX_JOBS] = { "max-jobs", DQ_CFG_U64, "unfinished jobs before SUBMIT gets BUSY",
                       1, UINT64_MAX, 0, NULL },
    [OPT_MAX_BYTES] = { "max-bytes", DQ_CFG_SIZE, "payload bytes of unfinished jobs before BUSY",
                        1, UINT64_MAX, 0, NULL },
    [OPT_MAX_PAYLOAD] = { "max-payload", DQ_CFG_SIZE, "largest payload or output", 1, 64u << 20, 0, NULL },
    [OPT_MAX_MESSAGE] = { "max-message", DQ_CFG_SIZE, "largest message accepted", 4096, 256u << 20, 0, NULL },
    [OPT_MAX_DAG_JOBS] = { "max-dag-jobs", DQ_CFG_U32, "jobs in one submission", 1, 2097152, 0, NULL },
    [OPT_MAX_DEPS] = { "max-deps", DQ_CFG_U32, "dependencies of one job", 1, 4096, 0, NULL },
    [OPT_ATTEMPTS] = { "attempts", DQ_CFG_U32, "default attempts per job", 1, 1000, 0, NULL },
    [OPT_RETRY_BASE_MS] = { "retry-base-ms", DQ_CFG_U32, "first retry backoff in ms (doubles)",
                            0, 3600000, 0, NULL },
    [OPT_RETRY_MAX_MS] = { "retry-max-ms", DQ_CFG_U32, "largest retry backoff in ms", 0, 86400000, 0, NULL },
    //  Bounds in ms: 1 s to 365 days.
    [OPT_RESULT_TTL] = { "result-ttl", DQ_CFG_MS, "seconds finished jobs stay queryable",
                         1000, 365ull * 86400 * 1000, 0, NULL },
    [OPT_MAX_STORE_BYTES] = { "max-store-bytes", DQ_CFG_SIZE,
                              "store size before submissions are refused (0 = none)",
                              0, UINT64_MAX, 0, NULL },
    [OPT_MIN_FREE_BYTES] = { "min-free-bytes", DQ_CFG_SIZE, "disk space kept free for completions",
                             0, UINT64_MAX, 0, NULL },
    [OPT_BATCH] = { "batch", DQ_CFG_U32, "messages handled per loop turn", 1, 1000000, 0, NULL },
    [OPT_CURVE_SECRET] = { "curve-secret", DQ_CFG_STR, "broker's secret certificate (enables CURVE)",
                           0, 0, 0, NULL },
    [OPT_CURVE_CLIENTS] = { "curve-clients", DQ_CFG_STR, "dir of allowed client/worker public certs",
                            0, 0, 0, NULL },
    [OPT_CURVE_WORKERS] = { "curve-workers", DQ_CFG_STR, "optional dir of allowed worker public certs",
                            0, 0, 0, NULL },
    [OPT_LOG_LEVEL] = { "log-level", DQ_CFG_LEVEL, "error|warn|info|debug", 0, 0, 0, NULL },
};

//  What the settings fill: the engine's config and our log level.
typedef struct {
    dq_broker_cfg_t cfg;
    int level;
} settings_t;

static void
s_usage (dq_cfg_t *loader, FILE *out)
{
    dq_broker_cfg_t d;
    dq_broker_cfg_defaults (&d);
    fprintf (out,
        "Usage: dagq-broker [OPTIONS]\n"
        "The dagq job broker: accepts jobs and DAGs from clients, keeps them on\n"
        "disk, and hands ready jobs to workers.\n\n"
        "Options (each also DAGQ_<NAME> in the environment, e.g. DAGQ_DATA_DIR,\n"
        "and broker/<name> in a --config file):\n");
    dq_cfg_usage (loader, out, 18, "deploy/dagq.cfg");
    fprintf (out, "\n"
        "Defaults: frontend %s, backend %s, events %s, data-dir %s,\n"
        "sync full, heartbeat-ms %u, liveness %u, attempts %u, result-ttl %llu s.\n\n"
        "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 store failure while running,\n"
        "2 usage, 3 configuration, 4 cannot bind, 5 store refused at start.\n",
        d.frontend, d.backend, d.events, d.data_dir, d.heartbeat_ms, d.liveness,
        d.attempts, (unsigned long long) (d.result_ttl_ms / 1000));
}

//  Store one checked setting (dq_cfg_apply_fn). Strings are borrowed from
//  argv, the environment or the loader, which outlive the broker.
static int
s_apply (void *arg, size_t index, const dq_cfg_value_t *v)
{
    static const int syncs [] = {
        DQ_STORE_SYNC_FULL, DQ_STORE_SYNC_NORMAL, DQ_STORE_SYNC_OFF
    };
    settings_t *self = (settings_t *) arg;
    dq_broker_cfg_t *cfg = &self->cfg;
    switch (index) {
        case OPT_FRONTEND:        cfg->frontend = v->str; break;
        case OPT_BACKEND:         cfg->backend = v->str; break;
        case OPT_EVENTS:          cfg->events = v->str; break;
        case OPT_DATA_DIR:        cfg->data_dir = v->str; break;
        case OPT_MEMORY:          cfg->memory = v->on; break;
        case OPT_SYNC:            cfg->sync = syncs [v->index]; break;
        case OPT_BROKER_ID:       cfg->broker_id = v->str; break;
        case OPT_HEARTBEAT_MS:    cfg->heartbeat_ms = (uint32_t) v->num; break;
        case OPT_LIVENESS:        cfg->liveness = (uint32_t) v->num; break;
        case OPT_MAX_JOBS:        cfg->max_jobs = v->num; break;
        case OPT_MAX_BYTES:       cfg->max_bytes = v->num; break;
        case OPT_MAX_PAYLOAD:     cfg->max_payload = (uint32_t) v->num; break;
        case OPT_MAX_MESSAGE:     cfg->max_message = (uint32_t) v->num; break;
        case OPT_MAX_DAG_JOBS:    cfg->max_dag_jobs = (uint32_t) v->num; break;
        case OPT_MAX_DEPS:        cfg->max_deps = (uint32_t) v->num; break;
        case OPT_ATTEMPTS:        cfg->attempts = (uint32_t) v->num; break;
        case OPT_RETRY_BASE_MS:   cfg->retry_base_ms = (uint32_t) v->num; break;
        case OPT_RETRY_MAX_MS:    cfg->retry_max_ms = (uint32_t) v->num; break;
        case OPT_RESULT_TTL:      cfg->result_ttl_ms = v->num; break;
        case OPT_MAX_STORE_BYTES: cfg->max_store_bytes = v->num; break;
        case OPT_MIN_FREE_BYTES:  cfg->min_free_bytes = v->num; break;
        case OPT_BATCH:           cfg->batch = (uint32_t) v->num; break;
        case OPT_CURVE_SECRET:    cfg->curve_secret = v->str; break;
        case OPT_CURVE_CLIENTS:   cfg->curve_clients = v->str; break;
        case OPT_CURVE_WORKERS:   cfg->curve_workers = v->str; break;
        case OPT_LOG_LEVEL:       self->level = v->index; break;
        default:                  assert (false);
    }
    return 0;
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
    settings_t set;
    dq_broker_cfg_defaults (&set.cfg);
    set.level = DQ_LOG_INFO;
    dq_broker_cfg_t *cfg = &set.cfg;

    dq_cfg_t *loader = dq_cfg_new ("dagq-broker", "broker", s_opts, NOPTS);
    assert (loader);
    int rc = 0;
    switch (dq_cfg_load (loader, argc, argv, s_apply, &set)) {
        case DQ_CFG_RUN:        break;
        case DQ_CFG_HELP:       s_usage (loader, stdout); goto done;
        case DQ_CFG_VERSION:    printf ("dagq-broker %s\n", DAGQ_VERSION); goto done;
        case DQ_CFG_ERR_CONFIG: rc = DQ_BROKER_EXIT_CONFIG; goto done;
        default:                rc = DQ_BROKER_EXIT_USAGE; goto done;
    }
    if (cfg->retry_max_ms < cfg->retry_base_ms)
        cfg->retry_max_ms = cfg->retry_base_ms;
    if (cfg->curve_clients && !cfg->curve_secret) {
        fprintf (stderr, "dagq-broker: --curve-clients needs --curve-secret\n");
        rc = DQ_BROKER_EXIT_USAGE;
        goto done;
    }
    if (dq_cfg_print_requested (loader)) {
        s_print_config (cfg, set.level);
        goto done;
    }
    dq_log_set_level (set.level);
    if (cfg->memory)
        dq_log_warn ("broker - running with --memory: no store, nothing survives a restart");

    char err [600];
    dq_broker_t *broker = dq_broker_new (cfg, err, sizeof err, &rc);
    if (!broker) {
        dq_log_error ("broker - cannot start: %s", err);
        goto done;
    }
    s_stop_target = broker;
    if (s_stop_early)
        dq_broker_stop (broker);
    rc = dq_broker_run (broker);
    s_stop_target = NULL;
    dq_broker_destroy (&broker);
done:
    //  Last: settings from the file point into the loader.
    dq_cfg_destroy (&loader);
    return rc;
}
