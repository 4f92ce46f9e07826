/*  dagq-gateway - the REST front door of dagq. main only: options, start,
    run, stop. The engine is dq_gateway; routes are in docs/http.md.

    Precedence: defaults < --config file (ZPL, section gateway/) < DAGQ_*
    environment < command line. Exit codes: 0 stopped by SIGINT/SIGTERM,
    1 failure while running, 2 usage, 3 configuration, 4 cannot bind.
*/
#include <czmq.h>

#include "dq_cfg.h"
#include "dq_gateway.h"
#include "dq_log.h"

//  Settings, in table order (the index apply receives).
enum {
    OPT_LISTEN, OPT_BROKER, OPT_EVENTS, OPT_THREADS, OPT_EVENT_LOOP, OPT_TOKEN_FILE,
    OPT_ALLOW_TYPES, OPT_MAX_BODY, OPT_MAX_BULK, OPT_MAX_DAG_LIST, OPT_MAX_CONNECTIONS, OPT_MAX_PER_IP, OPT_MAX_HEADER,
    OPT_IDLE_TIMEOUT, OPT_REQUEST_TIMEOUT, OPT_MAX_WAIT, OPT_TLS_CERT, OPT_TLS_KEY,
    OPT_CURVE_SECRET, OPT_CURVE_BROKER_PUBLIC, OPT_LOG_LEVEL, NOPTS
};

static const char *s_event_loops [] = { "epoll", "poll", NULL };

//  One table: flag, config key gateway/<name> and environment variable
//  DAGQ_<NAME> of every setting.
static const dq_cfg_opt_t s_opts [NOPTS] = {
    [OPT_LISTEN] = { "listen", DQ_CFG_STR,
                     "ADDR:PORT to serve HTTP on ([IPv6]:PORT, *:PORT; port 0 = any)", 0, 0, 0, NULL },
    [OPT_BROKER] = { "broker", DQ_CFG_STR, "broker frontend endpoint", 0, 0, 0, NULL },
    [OPT_EVENTS] = { "events", DQ_CFG_STR,
                     "broker events endpoint (PUB), for ?wait; empty = poll only", 0, 0, 0, NULL },
    [OPT_THREADS] = { "threads", DQ_CFG_U32, "HTTP threads (0 = one per core)", 0, 1024, 0, NULL },
    [OPT_EVENT_LOOP] = { "event-loop", DQ_CFG_CHOICE,
                         "epoll|poll: how HTTP threads wait (poll: fewer system calls "
                         "per request, for up to a few hundred connections)", 0, 0, 0,
                         s_event_loops },
    [OPT_TOKEN_FILE] = { "token-file", DQ_CFG_STR,
                         "file of bearer tokens, one a line (enables auth)", 0, 0, 0, NULL },
    [OPT_ALLOW_TYPES] = { "allow-types", DQ_CFG_STR,
                          "comma-separated job types that may be submitted", 0, 0, 0, NULL },
    [OPT_MAX_BODY] = { "max-body", DQ_CFG_SIZE, "largest request body (e.g. 16M)", 1, 256u << 20, 0, NULL },
    [OPT_MAX_BULK] = { "max-bulk", DQ_CFG_U32, "jobs in one POST /v1/jobs", 1, 2097152, 0, NULL },
    [OPT_MAX_DAG_LIST] = { "max-dag-list", DQ_CFG_U32,
                           "jobs GET /v1/dags/{id} lists without ?offset&limit", 1, 2097152,
                           0, NULL },
    [OPT_MAX_CONNECTIONS] = { "max-connections", DQ_CFG_U32, "open connections in total",
                              1, 1000000, 0, NULL },
    [OPT_MAX_PER_IP] = { "max-per-ip", DQ_CFG_U32,
                         "open connections per client address (0 = no limit)", 0, 1000000, 0, NULL },
    [OPT_MAX_HEADER] = { "max-header", DQ_CFG_SIZE, "bytes of request line and headers",
                         4096, 1u << 20, 0, NULL },
    [OPT_IDLE_TIMEOUT] = { "idle-timeout", DQ_CFG_U32,
                           "seconds before an idle or slow connection is cut", 1, 86400, 0, NULL },
    //  DQ_CFG_MS bounds are in ms: a request timeout of 0 would fail every call.
    [OPT_REQUEST_TIMEOUT] = { "request-timeout", DQ_CFG_MS, "seconds to wait for the broker's answer",
                              1, 3600 * 1000, 0, NULL },
    [OPT_MAX_WAIT] = { "max-wait", DQ_CFG_MS, "largest ?wait in seconds", 0, 86400 * 1000, 0, NULL },
    [OPT_TLS_CERT] = { "tls-cert", DQ_CFG_STR, "PEM certificate (chain): serve HTTPS", 0, 0, 0, NULL },
    [OPT_TLS_KEY] = { "tls-key", DQ_CFG_STR, "PEM private key of --tls-cert", 0, 0, 0, NULL },
    [OPT_CURVE_SECRET] = { "curve-secret", DQ_CFG_STR, "this gateway's secret CURVE certificate",
                           0, 0, 0, NULL },
    [OPT_CURVE_BROKER_PUBLIC] = { "curve-broker-public", DQ_CFG_STR,
                                  "the broker's public CURVE certificate", 0, 0, 0, NULL },
    [OPT_LOG_LEVEL] = { "log-level", DQ_CFG_LEVEL, "error|warn|info|debug", 0, 0, 0, NULL },
};

//  What the settings fill: the engine's config and our log level.
typedef struct {
    dq_gateway_cfg_t cfg;
    int level;
} settings_t;

static void
s_usage (dq_cfg_t *loader, FILE *out)
{
    dq_gateway_cfg_t d;
    dq_gateway_cfg_defaults (&d);
    fprintf (out,
        "Usage: dagq-gateway [OPTIONS]\n"
        "The dagq REST front door: turns HTTP requests into broker calls. It keeps\n"
        "no state, so any number can run behind a load balancer.\n\n"
        "Options (each also DAGQ_<NAME> in the environment, e.g. DAGQ_LISTEN,\n"
        "and gateway/<name> in a --config file):\n");
    dq_cfg_usage (loader, out, 20, NULL);
    fprintf (out, "\n"
        "Defaults: listen %s, broker %s, threads = cores, event-loop epoll,\n"
        "max-body %llu, max-bulk %u, max-dag-list %u, max-connections %u,\n"
        "max-per-ip %u, "
        "max-header %u, idle-timeout %u s, request-timeout %u s, max-wait %u s.\n\n"
        "Routes: POST /v1/jobs/{type}, POST /v1/jobs, POST /v1/dags,\n"
        "GET|DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/result, GET|DELETE /v1/dags/{id},\n"
        "GET /v1/stats, /healthz, /readyz, /metrics (see docs/http.md).\n\n"
        "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 failure while running,\n"
        "2 usage, 3 configuration, 4 cannot bind.\n",
        d.listen, d.broker, (unsigned long long) d.max_body, d.max_bulk,
        d.max_dag_list, d.max_connections, d.max_per_ip, d.max_header, d.idle_timeout,
        d.request_timeout_ms / 1000, d.max_wait_ms / 1000);
}

//  Store one checked setting (dq_cfg_apply_fn). Strings are borrowed from
//  argv, the environment or the loader, which outlive the gateway.
static int
s_apply (void *arg, size_t index, const dq_cfg_value_t *v)
{
    settings_t *self = (settings_t *) arg;
    dq_gateway_cfg_t *cfg = &self->cfg;
    const char *s = *v->str? v->str: NULL;      //  "" clears a string setting
    switch (index) {
        case OPT_LISTEN:              cfg->listen = v->str; break;
        case OPT_BROKER:              cfg->broker = v->str; break;
        case OPT_EVENTS:              cfg->events = s; break;
        case OPT_THREADS:             cfg->threads = (uint32_t) v->num; break;
        case OPT_EVENT_LOOP:          cfg->use_poll = v->index == 1; break;
        case OPT_TOKEN_FILE:          cfg->token_file = s; break;
        case OPT_ALLOW_TYPES:         cfg->allow_types = s; break;
        case OPT_MAX_BODY:            cfg->max_body = v->num; break;
        case OPT_MAX_BULK:            cfg->max_bulk = (uint32_t) v->num; break;
        case OPT_MAX_DAG_LIST:        cfg->max_dag_list = (uint32_t) v->num; break;
        case OPT_MAX_CONNECTIONS:     cfg->max_connections = (uint32_t) v->num; break;
        case OPT_MAX_PER_IP:          cfg->max_per_ip = (uint32_t) v->num; break;
        case OPT_MAX_HEADER:          cfg->max_header = (uint32_t) v->num; break;
        case OPT_IDLE_TIMEOUT:        cfg->idle_timeout = (uint32_t) v->num; break;
        case OPT_REQUEST_TIMEOUT:     cfg->request_timeout_ms = (uint32_t) v->num; break;
        case OPT_MAX_WAIT:            cfg->max_wait_ms = (uint32_t) v->num; break;
        case OPT_TLS_CERT:            cfg->tls_cert = s; break;
        case OPT_TLS_KEY:             cfg->tls_key = s; break;
        case OPT_CURVE_SECRET:        cfg->curve_secret = s; break;
        case OPT_CURVE_BROKER_PUBLIC: cfg->curve_broker_public = s; break;
        case OPT_LOG_LEVEL:           self->level = v->index; break;
        default:                      assert (false);
    }
    return 0;
}

static void
s_print_config (const dq_gateway_cfg_t *c, int level)
{
    static const char *levels [] = { "error", "warn", "info", "debug" };
    printf ("listen = %s\nbroker = %s\nevents = %s\nthreads = %u\nevent-loop = %s\n"
            "token-file = %s\n"
            "allow-types = %s\nmax-body = %llu\nmax-bulk = %u\nmax-dag-list = %u\n"
            "max-connections = %u\n"
            "max-per-ip = %u\nmax-header = %u\nidle-timeout = %u\nrequest-timeout = %g\n"
            "max-wait = %g\ntls-cert = %s\ntls-key = %s\ncurve-secret = %s\n"
            "curve-broker-public = %s\nlog-level = %s\n",
            c->listen, c->broker, c->events? c->events: "", c->threads,
            c->use_poll? "poll": "epoll",
            c->token_file? c->token_file: "", c->allow_types? c->allow_types: "",
            (unsigned long long) c->max_body, c->max_bulk, c->max_dag_list,
            c->max_connections,
            c->max_per_ip, c->max_header, c->idle_timeout,
            c->request_timeout_ms / 1000.0, c->max_wait_ms / 1000.0,
            c->tls_cert? c->tls_cert: "", c->tls_key? c->tls_key: "",
            c->curve_secret? c->curve_secret: "",
            c->curve_broker_public? c->curve_broker_public: "", levels [level]);
}

int
main (int argc, char *argv [])
{
    //  Our own SIGINT/SIGTERM handling (dq_gateway_run) replaces czmq's.
    zsys_handler_set (NULL);
    dq_log_init ("dagq-gateway", false);
    settings_t set;
    dq_gateway_cfg_defaults (&set.cfg);
    set.level = DQ_LOG_INFO;

    dq_cfg_t *loader = dq_cfg_new ("dagq-gateway", "gateway", s_opts, NOPTS);
    assert (loader);
    int rc = 0;
    switch (dq_cfg_load (loader, argc, argv, s_apply, &set)) {
        case DQ_CFG_RUN:        break;
        case DQ_CFG_HELP:       s_usage (loader, stdout); goto done;
        case DQ_CFG_VERSION:    printf ("dagq-gateway %s\n", DAGQ_VERSION); goto done;
        case DQ_CFG_ERR_CONFIG: rc = DQ_GATEWAY_EXIT_CONFIG; goto done;
        default:                rc = DQ_GATEWAY_EXIT_USAGE; goto done;
    }
    if (dq_cfg_print_requested (loader)) {
        s_print_config (&set.cfg, set.level);
        goto done;
    }
    dq_log_set_level (set.level);
    char err [600];
    dq_gateway_t *gateway = dq_gateway_new (&set.cfg, err, sizeof err, &rc);
    if (!gateway) {
        dq_log_error ("gateway - cannot start: %s", err);
        goto done;
    }
    rc = dq_gateway_run (gateway);
    dq_gateway_destroy (&gateway);
done:
    //  Last: settings from the file point into the loader.
    dq_cfg_destroy (&loader);
    return rc;
}
