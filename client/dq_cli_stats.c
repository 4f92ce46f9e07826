/*  dq_cli_stats.c - `dagq stats [--json]`: the broker's queues per job type
    and its connected workers.
*/
#include "dq_cli.h"

#include <string.h>

static void
s_help (void)
{
    printf (
"Usage: dagq stats [--json]\n"
"\n"
"Show, per job type, how many jobs are waiting, queued, running, succeeded,\n"
"failed, cancelled and skipped, and how many workers run it; and per worker:\n"
"id, name, host, pid, types, capacity, jobs in flight, jobs done and when it\n"
"was last heard from.\n"
"\n"
"Options:\n"
"  --json      machine-readable (times in unix ms)\n"
"  -h, --help  this help\n");
}

static json_t *
s_str (const char *s)
{
    return s? json_string (s): json_null ();
}

static int
s_print_json (const dq_msg_t *r, uint64_t now)
{
    json_t *o = json_object ();
    json_object_set_new (o, "broker_id", s_str (r->broker_id));
    json_object_set_new (o, "uptime_ms", json_integer ((json_int_t) r->uptime_ms));
    json_object_set_new (o, "jobs_total", json_integer ((json_int_t) r->jobs_total));
    json_object_set_new (o, "jobs_in_memory", json_integer ((json_int_t) r->jobs_in_memory));
    json_object_set_new (o, "queued_bytes", json_integer ((json_int_t) r->queued_bytes));
    json_t *types = json_array ();
    for (uint32_t i = 0; i < r->ntypestats; i++) {
        const dq_typestat_t *t = &r->typestats [i];
        json_t *e = json_object ();
        json_object_set_new (e, "type", s_str (t->type));
        json_object_set_new (e, "waiting", json_integer ((json_int_t) t->waiting));
        json_object_set_new (e, "queued", json_integer ((json_int_t) t->queued));
        json_object_set_new (e, "running", json_integer ((json_int_t) t->running));
        json_object_set_new (e, "succeeded", json_integer ((json_int_t) t->succeeded));
        json_object_set_new (e, "failed", json_integer ((json_int_t) t->failed));
        json_object_set_new (e, "cancelled", json_integer ((json_int_t) t->cancelled));
        json_object_set_new (e, "skipped", json_integer ((json_int_t) t->skipped));
        json_object_set_new (e, "workers", json_integer (t->workers));
        json_array_append_new (types, e);
    }
    json_object_set_new (o, "types", types);
    json_t *workers = json_array ();
    for (uint32_t i = 0; i < r->nworkers; i++) {
        const dq_workerinfo_t *w = &r->workers [i];
        json_t *e = json_object ();
        json_object_set_new (e, "id", s_str (w->id));
        json_object_set_new (e, "name", s_str (w->name));
        json_object_set_new (e, "host", s_str (w->host));
        json_object_set_new (e, "pid", json_integer (w->pid));
        json_t *wt = json_array ();
        for (uint32_t k = 0; w->types && k < w->ntypes; k++)
            json_array_append_new (wt, s_str (w->types [k]));
        json_object_set_new (e, "types", wt);
        json_object_set_new (e, "capacity", json_integer (w->capacity));
        json_object_set_new (e, "inflight", json_integer (w->inflight));
        json_object_set_new (e, "done", json_integer ((json_int_t) w->done));
        json_object_set_new (e, "last_seen_ms", json_integer ((json_int_t) w->last_seen_ms));
        json_object_set_new (e, "last_seen_ago_ms", json_integer (
            now > w->last_seen_ms? (json_int_t) (now - w->last_seen_ms): 0));
        json_array_append_new (workers, e);
    }
    json_object_set_new (o, "workers", workers);
    json_object_set_new (o, "workers_total", json_integer ((json_int_t)
                         (r->workers_total > r->nworkers? r->workers_total: r->nworkers)));
    return dq_cli_print_json (o);
}

static void
s_u64 (uint64_t v, char *buf, size_t size)
{
    snprintf (buf, size, "%llu", (unsigned long long) v);
}

static void
s_print_text (const dq_msg_t *r, uint64_t now)
{
    char up [32], bytes [32];
    printf ("broker %s, up %s, %llu jobs (%llu in memory), %s of payloads unfinished\n",
            r->broker_id? r->broker_id: "?",
            dq_cli_fmt_duration ((int64_t) r->uptime_ms, up, sizeof up),
            (unsigned long long) r->jobs_total,
            (unsigned long long) r->jobs_in_memory,
            dq_cli_fmt_bytes (r->queued_bytes, bytes, sizeof bytes));

    printf ("\n");
    if (r->ntypestats == 0)
        printf ("no job types yet\n");
    else {
        const char *head [] = { "TYPE", "WAITING", "QUEUED", "RUNNING", "SUCCEEDED",
                                "FAILED", "CANCELLED", "SKIPPED", "WORKERS" };
        const bool right [] = { false, true, true, true, true, true, true, true, true };
        dq_cli_table_t *table = dq_cli_table_new (9, head, right);
        for (uint32_t i = 0; i < r->ntypestats; i++) {
            const dq_typestat_t *t = &r->typestats [i];
            char v [8][24];
            s_u64 (t->waiting, v [0], 24);
            s_u64 (t->queued, v [1], 24);
            s_u64 (t->running, v [2], 24);
            s_u64 (t->succeeded, v [3], 24);
            s_u64 (t->failed, v [4], 24);
            s_u64 (t->cancelled, v [5], 24);
            s_u64 (t->skipped, v [6], 24);
            s_u64 (t->workers, v [7], 24);
            const char *row [] = { t->type, v [0], v [1], v [2], v [3], v [4], v [5],
                                   v [6], v [7] };
            dq_cli_table_add (table, row);
        }
        dq_cli_table_print (table, stdout, "");
        dq_cli_table_destroy (&table);
    }

    printf ("\n");
    if (r->nworkers == 0) {
        printf ("no workers connected\n");
        return;
    }
    const char *head [] = { "WORKER", "NAME", "HOST", "PID", "TYPES", "CAPACITY",
                            "IN FLIGHT", "DONE", "LAST HEARTBEAT" };
    const bool right [] = { false, false, false, true, false, true, true, true, false };
    dq_cli_table_t *table = dq_cli_table_new (9, head, right);
    for (uint32_t i = 0; i < r->nworkers; i++) {
        const dq_workerinfo_t *w = &r->workers [i];
        char pid [16], cap [16], inflight [16], done [24], ago [48], types [256];
        snprintf (pid, sizeof pid, "%u", w->pid);
        snprintf (cap, sizeof cap, "%u", w->capacity);
        snprintf (inflight, sizeof inflight, "%u", w->inflight);
        s_u64 (w->done, done, sizeof done);
        char d [32];
        if (w->last_seen_ms == 0)
            snprintf (ago, sizeof ago, "never");
        else {
            //  Seconds with one decimal ("0.4s ago") while it is fresh.
            int64_t age = now > w->last_seen_ms? (int64_t) (now - w->last_seen_ms): 0;
            if (age < 60000)
                snprintf (d, sizeof d, "%.1fs", age / 1000.0);
            else
                dq_cli_fmt_duration (age, d, sizeof d);
            snprintf (ago, sizeof ago, "%s ago", d);
        }
        size_t n = 0;
        types [0] = 0;
        for (uint32_t k = 0; w->types && k < w->ntypes && n < sizeof types; k++)
            n += (size_t) snprintf (types + n, sizeof types - n, "%s%s", k? ",": "",
                                    w->types [k]);
        const char *row [] = { w->id, w->name, w->host, pid, types, cap, inflight,
                               done, ago };
        dq_cli_table_add (table, row);
    }
    dq_cli_table_print (table, stdout, "");
    dq_cli_table_destroy (&table);
    //  A broker with very many workers may list only some of them.
    if (r->workers_total > r->nworkers)
        printf ("(%u of %llu workers shown)\n", r->nworkers,
                (unsigned long long) r->workers_total);
}

int
dq_cli_stats (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "stats";
    bool json = false;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0)
            return dq_cli_usage (cmd, "unexpected argument '%s'", arg);
        if (strcmp (opt, "--help") == 0) {
            s_help ();
            return DQ_CLI_EXIT_OK;
        }
        if (strcmp (opt, "--json") != 0)
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
        if (dq_cli_args_no_value (&args))
            return DQ_CLI_EXIT_USAGE;
        json = true;
    }
    int status = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        return status;
    dq_msg_t *reply;
    int rc = dq_client_stats (client, &reply);
    if (rc)
        return dq_cli_fail (cli, cmd, rc);
    uint64_t now = dq_cli_now_ms ();
    if (json)
        status = s_print_json (reply, now);
    else {
        s_print_text (reply, now);
        if (fflush (stdout))
            status = DQ_CLI_EXIT_FAIL;
    }
    dq_msg_destroy (&reply);
    return status;
}
