/*  dq_cli_status.c - `dagq status`, `dagq result` and `dagq cancel`: the
    commands that look at or act on given ids.

    status asks STATUS for job ids (10,000 per request) and DAG for DAG ids
    (a summary only; `dagq dag` lists the jobs).
*/
#include "dq_cli.h"

#include <stdlib.h>
#include <string.h>

static void
s_status_help (void)
{
    printf (
"Usage: dagq status ID... [--json]\n"
"\n"
"Show each job's state (waiting, queued, running, succeeded, failed,\n"
"cancelled, skipped), type, attempts, worker, timestamps and error; for a\n"
"job of a DAG also its DAG and its parents' states. A DAG id shows the DAG's\n"
"counts (see 'dagq dag' for its jobs).\n"
"\n"
"Options:\n"
"  --json      machine-readable: one object for one id, an array for several\n"
"  -h, --help  this help\n");
}

static void
s_result_help (void)
{
    printf (
"Usage: dagq result ID\n"
"\n"
"Write the output bytes of a finished job to standard output, as they are.\n"
"A job that failed, was cancelled or skipped prints its error on stderr and\n"
"exits 1; so does a job that is not finished yet (see 'dagq wait').\n"
"\n"
"Options:\n"
"  -h, --help  this help\n");
}

static void
s_cancel_help (void)
{
    printf (
"Usage: dagq cancel ID [--json]\n"
"\n"
"Cancel a job, or every unfinished job of a DAG (given its DAG id). Queued\n"
"and waiting jobs never run; a running job is abandoned by its worker; jobs\n"
"that depend on a cancelled job are skipped. Prints how many were cancelled.\n"
"\n"
"Options:\n"
"  --json      print {\"cancelled\": N}\n"
"  -h, --help  this help\n");
}

//  The human form of one job.
static void
s_print_job (const dq_jobinfo_t *j)
{
    char t1 [40], t2 [40], d [32];
    printf ("%s: %s\n", j->id? j->id: "?", dq_state_str (j->state));
    printf ("  type        %s\n", j->type? j->type: "?");
    if (j->dag_id)
        printf ("  dag         %s (as '%s')\n", j->dag_id, j->name? j->name: "");
    else
    if (j->name)
        printf ("  name        %s\n", j->name);
    printf ("  priority    %d\n", j->priority);
    if (j->max_attempts)
        printf ("  attempts    %u of %u\n", j->attempts, j->max_attempts);
    else
        printf ("  attempts    %u\n", j->attempts);
    if (j->worker)
        printf ("  worker      %s\n", j->worker);
    printf ("  created     %s\n", dq_cli_fmt_time (j->created_ms, t1, sizeof t1));
    if (j->started_ms) {
        printf ("  started     %s", dq_cli_fmt_time (j->started_ms, t1, sizeof t1));
        if (j->created_ms && j->started_ms >= j->created_ms)
            printf (" (after %s)", dq_cli_fmt_duration (
                    (int64_t) (j->started_ms - j->created_ms), d, sizeof d));
        printf ("\n");
    }
    if (j->finished_ms) {
        printf ("  finished    %s", dq_cli_fmt_time (j->finished_ms, t2, sizeof t2));
        if (j->started_ms && j->finished_ms >= j->started_ms)
            printf (" (ran %s)", dq_cli_fmt_duration (
                    (int64_t) (j->finished_ms - j->started_ms), d, sizeof d));
        printf ("\n");
    }
    else
    if (j->state == DQ_STATE_RUNNING && j->started_ms) {
        uint64_t now = dq_cli_now_ms ();
        printf ("  running for %s\n", dq_cli_fmt_duration (
                now > j->started_ms? (int64_t) (now - j->started_ms): 0, d, sizeof d));
    }
    if (j->state == DQ_STATE_SUCCEEDED || j->output_size)
        printf ("  output      %s\n", dq_cli_fmt_bytes (j->output_size, t1, sizeof t1));
    if (j->error && *j->error)
        printf ("  error       %s\n", j->error);
    if (j->skipped_by)
        printf ("  skipped by  %s\n", j->skipped_by);
    if (j->nparents) {
        printf ("  parents    ");
        for (uint32_t i = 0; i < j->nparents; i++)
            printf (" %s %s%s", j->parent_ids? j->parent_ids [i]: "?",
                    j->parent_states? dq_state_str (j->parent_states [i]): "?",
                    i + 1 < j->nparents? ",": "");
        printf ("\n");
    }
}

static json_t *
s_daginfo_json (const dq_daginfo_t *d)
{
    json_t *o = json_object ();
    json_object_set_new (o, "id", d->id? json_string (d->id): json_null ());
    json_object_set_new (o, "name", d->name? json_string (d->name): json_null ());
    json_object_set_new (o, "state", json_string (dq_state_str (d->state)));
    json_object_set_new (o, "total", json_integer (d->total));
    json_object_set_new (o, "waiting", json_integer (d->waiting));
    json_object_set_new (o, "queued", json_integer (d->queued));
    json_object_set_new (o, "running", json_integer (d->running));
    json_object_set_new (o, "succeeded", json_integer (d->succeeded));
    json_object_set_new (o, "failed", json_integer (d->failed));
    json_object_set_new (o, "cancelled", json_integer (d->cancelled));
    json_object_set_new (o, "skipped", json_integer (d->skipped));
    json_object_set_new (o, "created_ms", json_integer ((json_int_t) d->created_ms));
    json_object_set_new (o, "finished_ms", json_integer ((json_int_t) d->finished_ms));
    return o;
}

static void
s_print_dag (const dq_daginfo_t *d)
{
    char t [40], dur [32];
    printf ("%s: dag%s%s%s, %s\n", d->id? d->id: "?", d->name && *d->name? " '": "",
            d->name && *d->name? d->name: "", d->name && *d->name? "'": "",
            dq_state_str (d->state));
    printf ("  jobs        %u: %u waiting, %u queued, %u running, %u succeeded, "
            "%u failed, %u cancelled, %u skipped\n", d->total, d->waiting, d->queued,
            d->running, d->succeeded, d->failed, d->cancelled, d->skipped);
    printf ("  created     %s\n", dq_cli_fmt_time (d->created_ms, t, sizeof t));
    if (d->finished_ms) {
        printf ("  finished    %s", dq_cli_fmt_time (d->finished_ms, t, sizeof t));
        if (d->created_ms && d->finished_ms >= d->created_ms)
            printf (" (took %s)", dq_cli_fmt_duration (
                    (int64_t) (d->finished_ms - d->created_ms), dur, sizeof dur));
        printf ("\n");
    }
}

int
dq_cli_status (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "status";
    bool json = false;
    const char **ids = calloc ((size_t) argc, sizeof (char *));
    uint32_t nids = 0;
    int status = DQ_CLI_EXIT_OK;
    json_t *all = NULL;
    if (!ids)
        return dq_cli_error (cmd, "out of memory");
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (!*arg || strlen (arg) > 256) {
                status = dq_cli_usage (cmd, "'%s' is not an id", arg);
                goto done;
            }
            ids [nids++] = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_status_help ();
            goto done;
        }
        else
        if (strcmp (opt, "--json") == 0) {
            if (dq_cli_args_no_value (&args)) {
                status = DQ_CLI_EXIT_USAGE;
                goto done;
            }
            json = true;
        }
        else {
            status = dq_cli_usage (cmd, "unknown option '%s'", opt);
            goto done;
        }
    }
    if (nids == 0) {
        status = dq_cli_usage (cmd, "give at least one job or DAG id");
        goto done;
    }
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        goto done;
    all = json_array ();
    //  In the order given: runs of job ids go in one STATUS (up to a chunk),
    //  DAG ids one by one.
    uint32_t i = 0;
    bool first = true;
    while (i < nids) {
        dq_msg_t *reply;
        if (dq_cli_is_dag_id (ids [i])) {
            int rc = dq_client_dag_summary (client, ids [i], &reply);
            if (rc) {
                status = dq_cli_fail (cli, cmd, rc);
                goto done;
            }
            if (json)
                json_array_append_new (all, s_daginfo_json (reply->dag));
            else {
                if (!first)
                    printf ("\n");
                s_print_dag (reply->dag);
            }
            first = false;
            dq_msg_destroy (&reply);
            i++;
            continue;
        }
        uint32_t run = 0;
        while (i + run < nids && run < DQ_CLI_STATUS_CHUNK
           &&  !dq_cli_is_dag_id (ids [i + run]))
            run++;
        int rc = dq_client_status (client, ids + i, run, &reply);
        if (rc) {
            status = dq_cli_fail (cli, cmd, rc);
            goto done;
        }
        for (uint32_t k = 0; k < reply->ninfos; k++) {
            if (json)
                json_array_append_new (all, dq_cli_jobinfo_json (&reply->infos [k]));
            else {
                if (!first)
                    printf ("\n");
                s_print_job (&reply->infos [k]);
            }
            first = false;
        }
        dq_msg_destroy (&reply);
        i += run;
    }
    if (json) {
        json_t *out = nids == 1? json_incref (json_array_get (all, 0)): json_incref (all);
        status = dq_cli_print_json (out);
    }
    else
    if (fflush (stdout))
        status = DQ_CLI_EXIT_FAIL;
done:
    json_decref (all);
    free (ids);
    return status;
}

int
dq_cli_result (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "result";
    const char *id = NULL;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (id)
                return dq_cli_usage (cmd, "one ID only");
            id = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_result_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
    }
    if (!id || !*id)
        return dq_cli_usage (cmd, "a job ID is required");
    int status = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        return status;
    dq_msg_t *out;
    int rc = dq_client_result (client, id, &out);
    if (rc == DQ_ERR_NOT_FINISHED)
        return dq_cli_error (cmd, "%s; 'dagq wait %s' waits for it",
                             dq_client_error (client), id);
    if (rc)
        return dq_cli_fail (cli, cmd, rc);
    if (out->state == DQ_STATE_SUCCEEDED) {
        if (dq_cli_write_stdout (cmd, out->output, out->output_size))
            status = DQ_CLI_EXIT_FAIL;
    }
    else {
        status = dq_cli_error (cmd, "job %s %s%s%s", id, dq_state_str (out->state),
                               out->error && *out->error? ": ": "",
                               out->error? out->error: "");
    }
    dq_msg_destroy (&out);
    return status;
}

int
dq_cli_cancel (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "cancel";
    const char *id = NULL;
    bool json = false;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (id)
                return dq_cli_usage (cmd, "one ID only");
            id = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_cancel_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
        if (strcmp (opt, "--json") == 0) {
            if (dq_cli_args_no_value (&args))
                return DQ_CLI_EXIT_USAGE;
            json = true;
        }
        else
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
    }
    if (!id || !*id)
        return dq_cli_usage (cmd, "a job or DAG ID is required");
    int status = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        return status;
    uint64_t count = 0;
    int rc = dq_client_cancel (client, id, &count);
    if (rc)
        return dq_cli_fail (cli, cmd, rc);
    if (json) {
        json_t *o = json_object ();
        json_object_set_new (o, "cancelled", json_integer ((json_int_t) count));
        return dq_cli_print_json (o);
    }
    if (count == 0)
        printf ("nothing to cancel: %s is already finished\n", id);
    else
        printf ("cancelled %llu job%s\n", (unsigned long long) count,
                count == 1? "": "s");
    return fflush (stdout)? DQ_CLI_EXIT_FAIL: DQ_CLI_EXIT_OK;
}
