/*  dq_cli_dag.c - `dagq dag DAG_ID [--json | --dot] [--offset N] [--limit M]`:
    every job of a DAG (or one page of them) with its state, attempts,
    worker, duration and error, as a table, JSON, or a Graphviz graph with
    nodes coloured by state.
*/
#include "dq_cli.h"

#include <czmq.h>
#include <string.h>

static void
s_help (void)
{
    printf (
"Usage: dagq dag DAG_ID [--json | --dot] [--offset N] [--limit M]\n"
"\n"
"Show a DAG and every job in it: local id, job id, state, attempts, worker,\n"
"duration and error (or which ancestor's failure skipped it).\n"
"\n"
"Options:\n"
"  --json      machine-readable: {\"dag\": {...}, \"jobs\": [...], \"next_offset\": N|null}\n"
"  --dot       Graphviz, nodes coloured by state:  dagq dag ID --dot | dot -Tsvg > dag.svg\n"
"  --offset N  one page of the jobs, from the Nth (submission order, from 0)\n"
"  --limit M   jobs in that page, 1 to 10000 (default 10000); the page ends\n"
"              with where the next one starts (next_offset)\n"
"  -h, --help  this help\n");
}

static const char *
s_color (int state)
{
    switch (state) {
        case DQ_STATE_WAITING:   return "#e0e0e0";
        case DQ_STATE_QUEUED:    return "#fff3b0";
        case DQ_STATE_RUNNING:   return "#9ecbff";
        case DQ_STATE_SUCCEEDED: return "#a6e3a1";
        case DQ_STATE_FAILED:    return "#f28b82";
        case DQ_STATE_CANCELLED: return "#d7b8f3";
        default:                 return "#ffffff";   //  skipped
    }
}

//  A DOT double-quoted string body.
static void
s_dot_text (FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc ('\\', out);
        if (*s == '\n')
            fputs ("\\n", out);
        else
        if ((unsigned char) *s >= 0x20)
            fputc (*s, out);
    }
}

static int64_t
s_duration (const dq_jobinfo_t *j, uint64_t now)
{
    if (!j->started_ms)
        return -1;
    uint64_t end = j->finished_ms? j->finished_ms: now;
    return end > j->started_ms? (int64_t) (end - j->started_ms): 0;
}

static int
s_print_dot (const dq_msg_t *r)
{
    const dq_daginfo_t *d = r->dag;
    zhashx_t *members = zhashx_new ();
    zhashx_t *external = zhashx_new ();
    if (!members || !external) {
        zhashx_destroy (&members);
        zhashx_destroy (&external);
        return dq_cli_error ("dag", "out of memory");
    }
    for (uint32_t i = 0; i < r->ninfos; i++)
        if (r->infos [i].id)
            zhashx_insert (members, r->infos [i].id, (void *) &r->infos [i]);
    FILE *out = stdout;
    fprintf (out, "digraph \"");
    s_dot_text (out, d->name && *d->name? d->name: d->id);
    fprintf (out, "\" {\n");
    fprintf (out, "  label=\"");
    s_dot_text (out, d->id);
    if (d->name && *d->name) {
        fputs (" (", out);
        s_dot_text (out, d->name);
        fputs (")", out);
    }
    fprintf (out, ": %s, %u/%u succeeded\";\n", dq_state_str (d->state),
             d->succeeded, d->total);
    fprintf (out, "  rankdir=LR;\n");
    fprintf (out, "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n");
    for (uint32_t i = 0; i < r->ninfos; i++) {
        const dq_jobinfo_t *j = &r->infos [i];
        fputs ("  \"", out);
        s_dot_text (out, j->id);
        fputs ("\" [label=\"", out);
        s_dot_text (out, j->name && *j->name? j->name: j->id);
        fprintf (out, "\\n%s", dq_state_str (j->state));
        if (j->attempts > 1)
            fprintf (out, " (%u attempts)", j->attempts);
        fprintf (out, "\", fillcolor=\"%s\"", s_color (j->state));
        if (j->state == DQ_STATE_SKIPPED)
            fputs (", style=\"rounded,dashed\"", out);
        if (j->error && *j->error) {
            fputs (", tooltip=\"", out);
            s_dot_text (out, j->error);
            fputs ("\"", out);
        }
        fputs ("];\n", out);
    }
    //  Edges parent -> child; parents outside the DAG become grey nodes.
    for (uint32_t i = 0; i < r->ninfos; i++) {
        const dq_jobinfo_t *j = &r->infos [i];
        for (uint32_t k = 0; j->parent_ids && k < j->nparents; k++) {
            const char *p = j->parent_ids [k];
            if (!zhashx_lookup (members, p) && !zhashx_lookup (external, p)) {
                int state = j->parent_states? j->parent_states [k]: -1;
                zhashx_insert (external, p, (void *) p);
                fputs ("  \"", out);
                s_dot_text (out, p);
                fputs ("\" [label=\"", out);
                s_dot_text (out, p);
                fprintf (out, "\\n%s (outside this DAG)\", fillcolor=\"%s\", "
                         "style=\"rounded,filled,dotted\"];\n",
                         state >= 0? dq_state_str (state): "?",
                         state >= 0? s_color (state): "#ffffff");
            }
            fputs ("  \"", out);
            s_dot_text (out, p);
            fputs ("\" -> \"", out);
            s_dot_text (out, j->id);
            fputs ("\";\n", out);
        }
    }
    fputs ("}\n", out);
    zhashx_destroy (&members);
    zhashx_destroy (&external);
    return fflush (out)? DQ_CLI_EXIT_FAIL: DQ_CLI_EXIT_OK;
}

static int
s_print_json (const dq_msg_t *r)
{
    const dq_daginfo_t *d = r->dag;
    json_t *dag = json_object ();
    json_object_set_new (dag, "id", d->id? json_string (d->id): json_null ());
    json_object_set_new (dag, "name", d->name? json_string (d->name): json_null ());
    json_object_set_new (dag, "state", json_string (dq_state_str (d->state)));
    json_object_set_new (dag, "total", json_integer (d->total));
    json_object_set_new (dag, "waiting", json_integer (d->waiting));
    json_object_set_new (dag, "queued", json_integer (d->queued));
    json_object_set_new (dag, "running", json_integer (d->running));
    json_object_set_new (dag, "succeeded", json_integer (d->succeeded));
    json_object_set_new (dag, "failed", json_integer (d->failed));
    json_object_set_new (dag, "cancelled", json_integer (d->cancelled));
    json_object_set_new (dag, "skipped", json_integer (d->skipped));
    json_object_set_new (dag, "created_ms", json_integer ((json_int_t) d->created_ms));
    json_object_set_new (dag, "finished_ms", json_integer ((json_int_t) d->finished_ms));
    json_t *jobs = json_array ();
    uint64_t now = dq_cli_now_ms ();
    for (uint32_t i = 0; i < r->ninfos; i++) {
        json_t *j = dq_cli_jobinfo_json (&r->infos [i]);
        int64_t dur = s_duration (&r->infos [i], now);
        json_object_set_new (j, "duration_ms", dur >= 0? json_integer (dur): json_null ());
        json_array_append_new (jobs, j);
    }
    json_t *o = json_object ();
    json_object_set_new (o, "dag", dag);
    json_object_set_new (o, "jobs", jobs);
    json_object_set_new (o, "next_offset", r->next_offset? json_integer (r->next_offset)
                                                          : json_null ());
    return dq_cli_print_json (o);
}

static int
s_print_table (const dq_msg_t *r)
{
    const dq_daginfo_t *d = r->dag;
    char t [40], took [32];
    printf ("dag %s%s%s%s: %s, %u jobs: %u waiting, %u queued, %u running, "
            "%u succeeded, %u failed, %u cancelled, %u skipped\n",
            d->id, d->name && *d->name? " '": "", d->name && *d->name? d->name: "",
            d->name && *d->name? "'": "", dq_state_str (d->state), d->total,
            d->waiting, d->queued, d->running, d->succeeded, d->failed,
            d->cancelled, d->skipped);
    printf ("created %s", dq_cli_fmt_time (d->created_ms, t, sizeof t));
    if (d->finished_ms && d->finished_ms >= d->created_ms)
        printf (", finished %s (took %s)", dq_cli_fmt_time (d->finished_ms, t, sizeof t),
                dq_cli_fmt_duration ((int64_t) (d->finished_ms - d->created_ms),
                                     took, sizeof took));
    printf ("\n\n");
    const char *head [] = { "NAME", "ID", "STATE", "ATTEMPTS", "WORKER", "DURATION",
                            "ERROR" };
    const bool right [] = { false, false, false, true, false, true, false };
    dq_cli_table_t *table = dq_cli_table_new (7, head, right);
    if (!table)
        return dq_cli_error ("dag", "out of memory");
    uint64_t now = dq_cli_now_ms ();
    for (uint32_t i = 0; i < r->ninfos; i++) {
        const dq_jobinfo_t *j = &r->infos [i];
        char attempts [32], dur [32], why [300];
        if (j->max_attempts)
            snprintf (attempts, sizeof attempts, "%u/%u", j->attempts, j->max_attempts);
        else
            snprintf (attempts, sizeof attempts, "%u", j->attempts);
        int64_t ms = s_duration (j, now);
        if (ms >= 0) {
            dq_cli_fmt_duration (ms, dur, sizeof dur);
            if (!j->finished_ms)
                strncat (dur, "+", sizeof dur - strlen (dur) - 1);
        }
        else
            snprintf (dur, sizeof dur, "-");
        const char *error = j->error && *j->error? j->error: NULL;
        if (!error && j->skipped_by) {
            snprintf (why, sizeof why, "skipped: %s did not succeed", j->skipped_by);
            error = why;
        }
        const char *row [] = { j->name, j->id, dq_state_str (j->state), attempts,
                               j->worker, dur, error? error: "" };
        dq_cli_table_add (table, row);
    }
    dq_cli_table_print (table, stdout, "");
    dq_cli_table_destroy (&table);
    if (r->next_offset)
        printf ("\n(more: --offset %u)\n", r->next_offset);
    return fflush (stdout)? DQ_CLI_EXIT_FAIL: DQ_CLI_EXIT_OK;
}

int
dq_cli_dag (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "dag";
    const char *id = NULL;
    bool json = false, dot = false, paged = false;
    int64_t offset = 0, limit = 0;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (id)
                return dq_cli_usage (cmd, "one DAG_ID only");
            id = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
        if (strcmp (opt, "--json") == 0 || strcmp (opt, "--dot") == 0) {
            if (dq_cli_args_no_value (&args))
                return DQ_CLI_EXIT_USAGE;
            if (opt [2] == 'j')
                json = true;
            else
                dot = true;
        }
        else
        if (strcmp (opt, "--offset") == 0 || strcmp (opt, "--limit") == 0) {
            const char *v = dq_cli_args_value (&args);
            if (!v)
                return DQ_CLI_EXIT_USAGE;
            bool is_offset = opt [2] == 'o';
            if (dq_cli_parse_int (cmd, opt, v, is_offset? 0: 1,
                                  is_offset? UINT32_MAX: DQ_PROTO_DAG_JOBS_MAX,
                                  is_offset? &offset: &limit))
                return DQ_CLI_EXIT_USAGE;
            paged = true;
        }
        else
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
    }
    if (!id || !*id)
        return dq_cli_usage (cmd, "a DAG_ID is required");
    if (json && dot)
        return dq_cli_usage (cmd, "give --json or --dot, not both");
    int status = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        return status;
    dq_msg_t *reply;
    int rc = paged? dq_client_dag_page (client, id, (uint32_t) offset, (uint32_t) limit, &reply)
                  : dq_client_dag (client, id, &reply);
    if (rc)
        return dq_cli_fail (cli, cmd, rc);
    if (json)
        status = s_print_json (reply);
    else
    if (dot)
        status = s_print_dot (reply);
    else
        status = s_print_table (reply);
    dq_msg_destroy (&reply);
    return status;
}
