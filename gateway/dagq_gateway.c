/*  dagq-gateway - the REST front door of dagq. main only: options, start,
    run, stop. The engine is dq_gateway; routes are in docs/http.md.

    Precedence: defaults < --config file (ZPL, section gateway/) < DAGQ_*
    environment < command line. Exit codes: 0 stopped by SIGINT/SIGTERM,
    1 failure while running, 2 usage, 3 configuration, 4 cannot bind.
*/
#include <czmq.h>
#include <getopt.h>

#include "dq_gateway.h"
#include "dq_log.h"
#include "dq_util.h"

typedef enum { OPT_STR, OPT_U32, OPT_SIZE, OPT_SECONDS, OPT_MS, OPT_LEVEL } opt_kind_t;

typedef struct {
    const char *name;        //  --name, config key gateway/name, env DAGQ_NAME
    opt_kind_t kind;
    const char *help;
    uint64_t min, max;       //  OPT_MS: seconds
} opt_t;

//  One table: flag, config key and environment variable of every setting.
static const opt_t s_opts [] = {
    { "listen", OPT_STR, "ADDR:PORT to serve HTTP on ([IPv6]:PORT, *:PORT; port 0 = any)", 0, 0 },
    { "broker", OPT_STR, "broker frontend endpoint", 0, 0 },
    { "events", OPT_STR, "broker events endpoint (PUB), for ?wait; empty = poll only", 0, 0 },
    { "threads", OPT_U32, "HTTP threads (0 = one per core)", 0, 1024 },
    { "token-file", OPT_STR, "file of bearer tokens, one a line (enables auth)", 0, 0 },
    { "allow-types", OPT_STR, "comma-separated job types that may be submitted", 0, 0 },
    { "max-body", OPT_SIZE, "largest request body (e.g. 16M)", 1, 256u << 20 },
    { "max-bulk", OPT_U32, "jobs in one POST /v1/jobs", 1, 2097152 },
    { "max-connections", OPT_U32, "open connections in total", 1, 1000000 },
    { "max-per-ip", OPT_U32, "open connections per client address (0 = no limit)", 0, 1000000 },
    { "max-header", OPT_SIZE, "bytes of request line and headers", 4096, 1u << 20 },
    { "idle-timeout", OPT_SECONDS, "seconds before an idle or slow connection is cut", 1, 86400 },
    { "request-timeout", OPT_MS, "seconds to wait for the broker's answer", 0, 3600 },
    { "max-wait", OPT_MS, "largest ?wait in seconds", 0, 86400 },
    { "tls-cert", OPT_STR, "PEM certificate (chain): serve HTTPS", 0, 0 },
    { "tls-key", OPT_STR, "PEM private key of --tls-cert", 0, 0 },
    { "curve-secret", OPT_STR, "this gateway's secret CURVE certificate", 0, 0 },
    { "curve-broker-public", OPT_STR, "the broker's public CURVE certificate", 0, 0 },
    { "log-level", OPT_LEVEL, "error|warn|info|debug", 0, 0 },
};
#define NOPTS (sizeof s_opts / sizeof s_opts [0])

static void
s_usage (FILE *out)
{
    dq_gateway_cfg_t d;
    dq_gateway_cfg_defaults (&d);
    fprintf (out,
        "Usage: dagq-gateway [OPTIONS]\n"
        "The dagq REST front door: turns HTTP requests into broker calls. It keeps\n"
        "no state, so any number can run behind a load balancer.\n\n"
        "Options (each also DAGQ_<NAME> in the environment, e.g. DAGQ_LISTEN,\n"
        "and gateway/<name> in a --config file):\n");
    for (size_t i = 0; i < NOPTS; i++)
        fprintf (out, "  --%-20s %s\n", s_opts [i].name, s_opts [i].help);
    fprintf (out,
        "  --config FILE          read settings from a ZPL file\n"
        "  --print-config         print the effective settings and exit\n"
        "  -v, --verbose          same as --log-level debug\n"
        "  -h, --help             this help\n"
        "  -V, --version          print the version\n\n"
        "Defaults: listen %s, broker %s, threads = cores, max-body %llu,\n"
        "max-bulk %u, max-connections %u, max-per-ip %u, max-header %u,\n"
        "idle-timeout %u s, request-timeout %u s, max-wait %u s.\n\n"
        "Routes: POST /v1/jobs/{type}, POST /v1/jobs, POST /v1/dags,\n"
        "GET|DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/result, GET|DELETE /v1/dags/{id},\n"
        "GET /v1/stats, /healthz, /readyz, /metrics (see docs/http.md).\n\n"
        "Exit codes: 0 stopped by SIGINT/SIGTERM, 1 failure while running,\n"
        "2 usage, 3 configuration, 4 cannot bind.\n",
        d.listen, d.broker, (unsigned long long) d.max_body, d.max_bulk,
        d.max_connections, d.max_per_ip, d.max_header, d.idle_timeout,
        d.request_timeout_ms / 1000, d.max_wait_ms / 1000);
}

//  Apply one setting; returns 0 or -1 with a message on stderr.
static int
s_apply (dq_gateway_cfg_t *cfg, const opt_t *o, const char *value,
         const char *source, int *level)
{
    uint64_t v = 0;
    switch (o->kind) {
        case OPT_STR:
            break;
        case OPT_LEVEL:
            if (dq_log_parse_level (value) < 0) {
                fprintf (stderr, "dagq-gateway: %s: --log-level must be error, warn, "
                         "info or debug, not '%s'\n", source, value);
                return -1;
            }
            *level = dq_log_parse_level (value);
            return 0;
        case OPT_SIZE:
            if (dq_parse_size (value, &v) || v < o->min || v > o->max) {
                fprintf (stderr, "dagq-gateway: %s: --%s must be a size (e.g. 512K, "
                         "16M) in [%llu, %llu], not '%s'\n", source, o->name,
                         (unsigned long long) o->min, (unsigned long long) o->max, value);
                return -1;
            }
            break;
        case OPT_MS:
            if (dq_parse_seconds_ms (value, (double) o->max, &v)
            ||  (!strcmp (o->name, "request-timeout") && v == 0)) {
                fprintf (stderr, "dagq-gateway: %s: --%s must be seconds in (%llu, %llu], "
                         "e.g. 2.5, not '%s'\n", source, o->name,
                         (unsigned long long) o->min, (unsigned long long) o->max, value);
                return -1;
            }
            break;
        case OPT_SECONDS:
        case OPT_U32:
            if (dq_parse_u64 (value, o->min, o->max, &v)) {
                fprintf (stderr, "dagq-gateway: %s: --%s must be an integer in "
                         "[%llu, %llu], not '%s'\n", source, o->name,
                         (unsigned long long) o->min, (unsigned long long) o->max, value);
                return -1;
            }
            break;
    }
    const char *n = o->name;
    const char *s = *value? value: NULL;      //  "" clears a string setting
    if      (!strcmp (n, "listen"))              cfg->listen = value;
    else if (!strcmp (n, "broker"))              cfg->broker = value;
    else if (!strcmp (n, "events"))              cfg->events = s;
    else if (!strcmp (n, "threads"))             cfg->threads = (uint32_t) v;
    else if (!strcmp (n, "token-file"))          cfg->token_file = s;
    else if (!strcmp (n, "allow-types"))         cfg->allow_types = s;
    else if (!strcmp (n, "max-body"))            cfg->max_body = v;
    else if (!strcmp (n, "max-bulk"))            cfg->max_bulk = (uint32_t) v;
    else if (!strcmp (n, "max-connections"))     cfg->max_connections = (uint32_t) v;
    else if (!strcmp (n, "max-per-ip"))          cfg->max_per_ip = (uint32_t) v;
    else if (!strcmp (n, "max-header"))          cfg->max_header = (uint32_t) v;
    else if (!strcmp (n, "idle-timeout"))        cfg->idle_timeout = (uint32_t) v;
    else if (!strcmp (n, "request-timeout"))     cfg->request_timeout_ms = (uint32_t) v;
    else if (!strcmp (n, "max-wait"))            cfg->max_wait_ms = (uint32_t) v;
    else if (!strcmp (n, "tls-cert"))            cfg->tls_cert = s;
    else if (!strcmp (n, "tls-key"))             cfg->tls_key = s;
    else if (!strcmp (n, "curve-secret"))        cfg->curve_secret = s;
    else if (!strcmp (n, "curve-broker-public")) cfg->curve_broker_public = s;
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
s_print_config (const dq_gateway_cfg_t *c, int level)
{
    static const char *levels [] = { "error", "warn", "info", "debug" };
    printf ("listen = %s\nbroker = %s\nevents = %s\nthreads = %u\ntoken-file = %s\n"
            "allow-types = %s\nmax-body = %llu\nmax-bulk = %u\nmax-connections = %u\n"
            "max-per-ip = %u\nmax-header = %u\nidle-timeout = %u\nrequest-timeout = %g\n"
            "max-wait = %g\ntls-cert = %s\ntls-key = %s\ncurve-secret = %s\n"
            "curve-broker-public = %s\nlog-level = %s\n",
            c->listen, c->broker, c->events? c->events: "", c->threads,
            c->token_file? c->token_file: "", c->allow_types? c->allow_types: "",
            (unsigned long long) c->max_body, c->max_bulk, c->max_connections,
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
    dq_gateway_cfg_t cfg;
    dq_gateway_cfg_defaults (&cfg);
    int level = DQ_LOG_INFO;
    bool print_config = false;
    const char *config_file = NULL;

    struct option longopts [NOPTS + 6];
    for (size_t i = 0; i < NOPTS; i++)
        longopts [i] = (struct option) { s_opts [i].name, required_argument, NULL,
                                         1000 + (int) i };
    longopts [NOPTS + 0] = (struct option) { "config", required_argument, NULL, 'c' };
    longopts [NOPTS + 1] = (struct option) { "print-config", no_argument, NULL, 'p' };
    longopts [NOPTS + 2] = (struct option) { "verbose", no_argument, NULL, 'v' };
    longopts [NOPTS + 3] = (struct option) { "help", no_argument, NULL, 'h' };
    longopts [NOPTS + 4] = (struct option) { "version", no_argument, NULL, 'V' };
    longopts [NOPTS + 5] = (struct option) { NULL, 0, NULL, 0 };

    //  First pass: --config and the fixed options; usage errors.
    int c;
    opterr = 1;
    while ((c = getopt_long (argc, argv, "vhV", longopts, NULL)) != -1) {
        if (c == 'c') config_file = optarg;
        else if (c == 'p') print_config = true;
        else if (c == 'h') { s_usage (stdout); return 0; }
        else if (c == 'V') { printf ("dagq-gateway %s\n", DAGQ_VERSION); return 0; }
        else if (c == '?') {
            fprintf (stderr, "Try 'dagq-gateway --help'.\n");
            return DQ_GATEWAY_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "dagq-gateway: unexpected argument '%s'\n"
                 "Try 'dagq-gateway --help'.\n", argv [optind]);
        return DQ_GATEWAY_EXIT_USAGE;
    }
    zconfig_t *file = NULL;
    if (config_file) {
        file = zconfig_load (config_file);
        if (!file) {
            fprintf (stderr, "dagq-gateway: cannot read config file %s\n", config_file);
            return DQ_GATEWAY_EXIT_CONFIG;
        }
        zconfig_t *section = zconfig_locate (file, "gateway");
        for (zconfig_t *item = section? zconfig_child (section): NULL; item;
             item = zconfig_next (item)) {
            const opt_t *o = s_find (zconfig_name (item));
            if (!o) {
                fprintf (stderr, "dagq-gateway: %s: unknown setting gateway/%s\n",
                         config_file, zconfig_name (item));
                zconfig_destroy (&file);
                return DQ_GATEWAY_EXIT_CONFIG;
            }
            const char *value = zconfig_value (item);
            if (s_apply (&cfg, o, value? value: "", config_file, &level)) {
                zconfig_destroy (&file);
                return DQ_GATEWAY_EXIT_CONFIG;
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
            return DQ_GATEWAY_EXIT_CONFIG;
        }
    }
    optind = 1;
    opterr = 0;
    while ((c = getopt_long (argc, argv, "vhV", longopts, NULL)) != -1) {
        if (c == 'v')
            level = DQ_LOG_DEBUG;
        else
        if (c >= 1000 && s_apply (&cfg, &s_opts [c - 1000], optarg, "command line", &level)) {
            zconfig_destroy (&file);
            return DQ_GATEWAY_EXIT_USAGE;
        }
    }
    if (print_config) {
        s_print_config (&cfg, level);
        zconfig_destroy (&file);
        return 0;
    }
    dq_log_set_level (level);
    char err [600];
    int code = 0;
    dq_gateway_t *gateway = dq_gateway_new (&cfg, err, sizeof err, &code);
    if (!gateway) {
        dq_log_error ("gateway - cannot start: %s", err);
        zconfig_destroy (&file);
        return code;
    }
    int rc = dq_gateway_run (gateway);
    dq_gateway_destroy (&gateway);
    zconfig_destroy (&file);
    return rc;
}
