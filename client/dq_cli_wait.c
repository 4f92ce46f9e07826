/*  dq_cli_wait.c - `dagq wait ID... [--timeout SECONDS]`.

    Job ids are waited for with dq_client_wait (STATUS polls); DAG ids by
    polling the DAG command, which also feeds a progress line on stderr:
    rewritten in place on a terminal, a plain line every few seconds
    otherwise. The poll interval grows with the DAG's size (a DAG reply
    lists every job), so watching a huge DAG does not load the broker.
*/
#include "dq_cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DQ_CLI_WAIT_POLL_FIRST  20      //  ms
#define DQ_CLI_WAIT_POLL_MAX    1000    //  ms
#define DQ_CLI_WAIT_PLAIN_EVERY 5000    //  ms between lines when not a terminal
#define DQ_CLI_WAIT_RATE_WINDOW 15000   //  ms of history for the rate
#define DQ_CLI_WAIT_SAMPLES     64
#define DQ_CLI_WAIT_SHOW_MAX    10      //  failed jobs named

static void
s_help (void)
{
    printf (
"Usage: dagq wait ID... [--timeout SECONDS]\n"
"\n"
"Wait until every job (and every DAG, given by its DAG id) is finished.\n"
"For a DAG, a progress line on stderr shows done/total, running, failed,\n"
"the rate in jobs/s and the time left (live on a terminal, every few seconds\n"
"otherwise).\n"
"\n"
"Options:\n"
"  --timeout SECONDS  give up after this long (default: wait forever)\n"
"  -h, --help         this help\n"
"\n"
"Exit status: 0 every job succeeded; 1 some job failed, was cancelled or\n"
"skipped (named on stderr), or an id is unknown; 2 the timeout passed first;\n"
"3 no answer from the broker.\n");
}

//  (time, done) samples for the rate over the last few seconds.
typedef struct {
    int64_t t [DQ_CLI_WAIT_SAMPLES];
    uint64_t done [DQ_CLI_WAIT_SAMPLES];
    int n, head;
} s_rate_t;

static void
s_rate_add (s_rate_t *r, int64_t t, uint64_t done)
{
    r->t [r->head] = t;
    r->done [r->head] = done;
    r->head = (r->head + 1) % DQ_CLI_WAIT_SAMPLES;
    if (r->n < DQ_CLI_WAIT_SAMPLES)
        r->n++;
}

//  Jobs per second between the oldest sample in the window and the newest;
//  -1 when unknown.
static double
s_rate_get (const s_rate_t *r)
{
    if (r->n < 2)
        return -1;
    int newest = (r->head + DQ_CLI_WAIT_SAMPLES - 1) % DQ_CLI_WAIT_SAMPLES;
    int oldest = (r->head + DQ_CLI_WAIT_SAMPLES - r->n) % DQ_CLI_WAIT_SAMPLES;
    for (int k = 0; k < r->n - 1; k++) {
        int i = (oldest + k) % DQ_CLI_WAIT_SAMPLES;
        if (r->t [newest] - r->t [i] <= DQ_CLI_WAIT_RATE_WINDOW) {
            oldest = i;
            break;
        }
    }
    int64_t dt = r->t [newest] - r->t [oldest];
    if (dt <= 0)
        return -1;
    return (double) (r->done [newest] - r->done [oldest]) * 1000.0 / (double) dt;
}

static void
s_progress_line (const dq_daginfo_t *d, double rate, char *line, size_t size)
{
    uint64_t done = (uint64_t) d->succeeded + d->failed + d->cancelled + d->skipped;
    int n = snprintf (line, size, "dag %s: %llu/%u done, %u running, %u failed",
                      d->id? d->id: "?", (unsigned long long) done, d->total,
                      d->running, d->failed);
    if (d->cancelled && n > 0 && (size_t) n < size)
        n += snprintf (line + n, size - (size_t) n, ", %u cancelled", d->cancelled);
    if (d->skipped && n > 0 && (size_t) n < size)
        n += snprintf (line + n, size - (size_t) n, ", %u skipped", d->skipped);
    if (n <= 0 || (size_t) n >= size)
        return;
    if (rate < 0)
        snprintf (line + n, size - (size_t) n, ", -- jobs/s, ETA --");
    else {
        char eta [32];
        uint64_t left = d->total > done? d->total - done: 0;
        if (rate > 0)
            dq_cli_fmt_duration ((int64_t) (left / rate * 1000.0), eta, sizeof eta);
        else
            snprintf (eta, sizeof eta, "--");
        snprintf (line + n, size - (size_t) n, ", %.*f jobs/s, ETA %s",
                  rate < 10? 1: 0, rate, eta);
    }
}

//  Name the jobs that did not succeed (failed first, then the others).
static void
s_report_failures (const char *cmd, const dq_msg_t *reply)
{
    const dq_daginfo_t *d = reply->dag;
    dq_cli_error (cmd, "dag %s %s: %u succeeded, %u failed, %u cancelled, "
                  "%u skipped of %u", d->id, dq_state_str (d->state), d->succeeded,
                  d->failed, d->cancelled, d->skipped, d->total);
    uint32_t shown = 0, more = 0;
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < reply->ninfos; i++) {
            const dq_jobinfo_t *j = &reply->infos [i];
            bool failed = j->state == DQ_STATE_FAILED;
            if (j->state == DQ_STATE_SUCCEEDED || failed != (pass == 0))
                continue;
            if (shown == DQ_CLI_WAIT_SHOW_MAX) {
                more++;
                continue;
            }
            shown++;
            fprintf (stderr, "  %s '%s' (%s)", dq_state_str (j->state),
                     j->name? j->name: "", j->id? j->id: "?");
            if (j->error && *j->error)
                fprintf (stderr, ": %s", j->error);
            else
            if (j->skipped_by)
                fprintf (stderr, ": because %s did not succeed", j->skipped_by);
            fputc ('\n', stderr);
        }
    if (more)
        fprintf (stderr, "  ... and %u more (see dagq dag %s)\n", more, d->id);
}

int
dq_cli_wait_dag (dq_cli_t *cli, const char *cmd, const char *dag_id,
                 int64_t deadline)
{
    int exit_code = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &exit_code);
    if (!client)
        return exit_code;
    bool tty = isatty (STDERR_FILENO);
    int64_t start = dq_cli_mono_ms ();
    int64_t interval = DQ_CLI_WAIT_POLL_FIRST;
    int64_t last_plain = start;
    bool live = false;              //  a live line is on the terminal
    s_rate_t rate = { .n = 0 };
    char line [300];
    while (true) {
        int64_t t0 = dq_cli_mono_ms ();
        dq_msg_t *reply;
        //  Polls ask for the counts only; the job list is fetched once, to
        //  name what failed.
        int rc = dq_client_dag_summary (client, dag_id, &reply);
        int64_t t1 = dq_cli_mono_ms ();
        if (rc) {
            if (live)
                fputs ("\n", stderr);
            if (rc == DQ_ERR_UNAVAILABLE && deadline >= 0 && t1 >= deadline) {
                dq_cli_error (cmd, "timed out waiting for dag %s", dag_id);
                return DQ_CLI_EXIT_TIMEOUT;
            }
            return dq_cli_fail (cli, cmd, rc);
        }
        const dq_daginfo_t *d = reply->dag;
        uint64_t done = (uint64_t) d->succeeded + d->failed + d->cancelled + d->skipped;
        s_rate_add (&rate, t1, done);
        bool finished = d->state != DQ_STATE_RUNNING;
        s_progress_line (d, s_rate_get (&rate), line, sizeof line);
        if (finished) {
            char took [32];
            dq_cli_fmt_duration (t1 - start, took, sizeof took);
            if (tty)
                fprintf (stderr, "\r\033[K");
            if (tty || t1 - start >= DQ_CLI_WAIT_PLAIN_EVERY)
                fprintf (stderr, "dag %s: %s, %llu/%u done (waited %s)\n", dag_id,
                         dq_state_str (d->state), (unsigned long long) done,
                         d->total, took);
            int status = DQ_CLI_EXIT_OK;
            if (d->state != DQ_STATE_SUCCEEDED || d->succeeded != d->total) {
                dq_msg_t *full;
                if (dq_client_dag (client, dag_id, &full) == DQ_OK) {
                    s_report_failures (cmd, full);
                    dq_msg_destroy (&full);
                }
                else
                    s_report_failures (cmd, reply);
                status = DQ_CLI_EXIT_FAIL;
            }
            dq_msg_destroy (&reply);
            return status;
        }
        if (tty) {
            fprintf (stderr, "\r\033[K%s", line);
            live = true;
        }
        else
        if (t1 - last_plain >= DQ_CLI_WAIT_PLAIN_EVERY) {
            fprintf (stderr, "%s\n", line);
            last_plain = t1;
        }
        fflush (stderr);
        uint32_t total = d->total;
        dq_msg_destroy (&reply);
        if (deadline >= 0 && t1 >= deadline) {
            if (live)
                fputs ("\n", stderr);
            dq_cli_error (cmd, "timed out waiting for dag %s: %llu of %u jobs done",
                          dag_id, (unsigned long long) done, total);
            return DQ_CLI_EXIT_TIMEOUT;
        }
        //  Summary polls are small whatever the DAG's size; still, poll no
        //  more often than every 5 x the time a reply took (a busy broker).
        int64_t pause = interval;
        if (pause < 5 * (t1 - t0))
            pause = 5 * (t1 - t0);
        if (pause > DQ_CLI_WAIT_POLL_MAX)
            pause = DQ_CLI_WAIT_POLL_MAX;
        if (deadline >= 0 && t1 + pause > deadline)
            pause = deadline - t1;
        dq_cli_sleep_ms (pause);
        interval = interval * 2 < DQ_CLI_WAIT_POLL_MAX? interval * 2: DQ_CLI_WAIT_POLL_MAX;
    }
}

//  Wait for plain job ids. Returns the exit status.
static int
s_wait_jobs (dq_cli_t *cli, dq_client_t *client, const char **ids, uint32_t n,
             int64_t deadline)
{
    const char *cmd = "wait";
    int timeout = -1;
    if (deadline >= 0) {
        int64_t left = deadline - dq_cli_mono_ms ();
        timeout = left > 0? (int) left: 0;
    }
    dq_msg_t *reply = NULL;
    int rc = dq_client_wait (client, ids, n, timeout, &reply);
    if (rc == DQ_CLIENT_TIMED_OUT) {
        uint32_t open = 0;
        for (uint32_t i = 0; reply && i < reply->ninfos; i++)
            open += !dq_state_is_terminal (reply->infos [i].state);
        if (reply && n <= DQ_CLI_STATUS_CHUNK)
            dq_cli_error (cmd, "timed out: %u of %u job%s not finished", open, n,
                          n == 1? "": "s");
        else
            dq_cli_error (cmd, "timed out before all %u jobs finished", n);
        dq_msg_destroy (&reply);
        return DQ_CLI_EXIT_TIMEOUT;
    }
    if (rc) {
        dq_msg_destroy (&reply);
        return dq_cli_fail (cli, cmd, rc);
    }
    //  Every job is terminal; find those that did not succeed. Beyond one
    //  chunk the last reply covers only the last poll: ask again.
    int status = DQ_CLI_EXIT_OK;
    uint32_t shown = 0, bad = 0;
    for (uint32_t at = 0; at < n; at += DQ_CLI_STATUS_CHUNK) {
        uint32_t chunk = n - at < DQ_CLI_STATUS_CHUNK? n - at: DQ_CLI_STATUS_CHUNK;
        if (n > DQ_CLI_STATUS_CHUNK) {
            dq_msg_destroy (&reply);
            rc = dq_client_status (client, ids + at, chunk, &reply);
            if (rc)
                return dq_cli_fail (cli, cmd, rc);
        }
        for (uint32_t i = 0; i < reply->ninfos; i++) {
            const dq_jobinfo_t *j = &reply->infos [i];
            if (j->state == DQ_STATE_SUCCEEDED)
                continue;
            status = DQ_CLI_EXIT_FAIL;
            bad++;
            if (shown++ < DQ_CLI_WAIT_SHOW_MAX)
                dq_cli_error (cmd, "job %s %s%s%s", j->id? j->id: ids [at + i],
                              dq_state_str (j->state), j->error? ": ": "",
                              j->error? j->error: "");
        }
    }
    if (bad > DQ_CLI_WAIT_SHOW_MAX)
        dq_cli_error (cmd, "%u jobs did not succeed", bad);
    dq_msg_destroy (&reply);
    return status;
}

int
dq_cli_wait (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "wait";
    int64_t deadline = -1;
    const char **jobs = calloc ((size_t) argc, sizeof (char *));
    const char **dags = calloc ((size_t) argc, sizeof (char *));
    uint32_t njobs = 0, ndags = 0;
    int status = DQ_CLI_EXIT_OK;
    if (!jobs || !dags) {
        status = dq_cli_error (cmd, "out of memory");
        goto done;
    }
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
            if (dq_cli_is_dag_id (arg))
                dags [ndags++] = arg;
            else
                jobs [njobs++] = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_help ();
            goto done;
        }
        else
        if (strcmp (opt, "--timeout") == 0) {
            const char *v = dq_cli_args_value (&args);
            uint64_t ms;
            if (!v || dq_cli_parse_seconds (cmd, "--timeout", v, 0,
                                            DQ_CLI_CALL_TIMEOUT_MAX, &ms)) {
                status = DQ_CLI_EXIT_USAGE;
                goto done;
            }
            deadline = dq_cli_mono_ms () + (int64_t) ms;
        }
        else {
            status = dq_cli_usage (cmd, "unknown option '%s'", opt);
            goto done;
        }
    }
    if (njobs + ndags == 0) {
        status = dq_cli_usage (cmd, "give at least one job or DAG id");
        goto done;
    }
    dq_client_t *client = dq_cli_client (cli, &status);
    if (!client)
        goto done;
    if (njobs)
        status = s_wait_jobs (cli, client, jobs, njobs, deadline);
    for (uint32_t i = 0; i < ndags && status != DQ_CLI_EXIT_TIMEOUT
                                   && status != DQ_CLI_EXIT_UNAVAILABLE; i++) {
        int rc = dq_cli_wait_dag (cli, cmd, dags [i], deadline);
        if (rc != DQ_CLI_EXIT_OK)
            status = rc;
    }
done:
    free (jobs);
    free (dags);
    return status;
}
