/*  dq_cli_submit.c - `dagq submit` (one job) and `dagq submit-dag` (a DAG
    document).

    Both generate an idempotency key when none is given, and keep it across
    the retries: the client library re-sends a request whose reply is late,
    and a BUSY answer is retried here after the broker's retry_ms, until
    the call timeout. Payloads come from --data, --file, or stdin when
    neither is given and stdin is not a terminal.
*/
#include "dq_cli.h"
#include "dq_dagdoc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
s_submit_help (void)
{
    printf (
"Usage: dagq submit TYPE [OPTIONS]\n"
"\n"
"Submit one job of type TYPE and print its id. The payload comes from --data,\n"
"--file, or standard input when neither is given and stdin is not a terminal.\n"
"\n"
"Options:\n"
"  --data STRING         the payload\n"
"  --file PATH           read the payload from PATH ('-' for stdin)\n"
"  --priority N          higher runs first (-2147483648..2147483647, default 0)\n"
"  --attempts N          attempts allowed, 1 = no retry (1..%d, default 3)\n"
"  --timeout SECONDS     abandon an attempt running longer (default: none)\n"
"  --delay SECONDS       run no earlier than SECONDS from now\n"
"  --depends-on ID       run only after job ID succeeded (repeatable)\n"
"  --key KEY             idempotency key: a second submit with the same key\n"
"                        returns the first job's id and creates nothing\n"
"  --content-type TYPE   media type stored with the job, e.g. text/plain\n"
"  --wait                wait for the job, print its output bytes instead of\n"
"                        its id; exit 0 if it succeeded, 1 if not (error on\n"
"                        stderr)\n"
"  --json                print {\"id\": ...} (with --wait: id, state, output or\n"
"                        output_base64, error)\n"
"  -h, --help            this help\n"
"\n"
"Examples:\n"
"  dagq submit sha256 --data hello\n"
"  echo hi | dagq submit echo --wait\n"
"  dagq submit thumbnail --file a.jpg --priority 5 --attempts 5 --timeout 30\n",
            DQ_DAGDOC_ATTEMPTS_MAX);
}

static void
s_submit_dag_help (void)
{
    printf (
"Usage: dagq submit-dag FILE|- [--json] [--wait]\n"
"\n"
"Submit a DAG document (JSON; '-' reads standard input) as one DAG, all or\n"
"nothing, and print its DAG id and the id of every job:\n"
"\n"
"  {\"name\": \"photo-42\", \"key\": \"optional idempotency key\",\n"
"   \"jobs\": [\n"
"     {\"id\": \"upload\", \"type\": \"store\", \"payload\": {\"path\": \"a.jpg\"}},\n"
"     {\"id\": \"faces\",  \"type\": \"faces\", \"depends_on\": [\"upload\"]},\n"
"     {\"id\": \"ocr\",    \"type\": \"ocr\",   \"depends_on\": [\"upload\"], \"attempts\": 5},\n"
"     {\"id\": \"index\",  \"type\": \"index\", \"depends_on\": [\"faces\", \"ocr\"]},\n"
"     {\"id\": \"notify\", \"type\": \"mail\",\n"
"      \"depends_on\": [{\"id\": \"index\", \"on_failure\": \"run\"}]}\n"
"   ]}\n"
"\n"
"Job fields: id (local name), type, payload (any JSON value; the worker gets\n"
"its JSON text) or payload_text (a string) or payload_base64, priority,\n"
"attempts, timeout and delay (seconds), key, content_type, depends_on (local\n"
"ids, or ids of jobs submitted earlier). Unknown fields are errors.\n"
"\n"
"Options:\n"
"  --json      print exactly {\"dag_id\": ..., \"jobs\": {\"<local id>\": \"<job id>\", ...}}\n"
"  --wait      then wait for the DAG, showing progress on stderr; exit 0 if\n"
"              every job succeeded, 1 if not\n"
"  -h, --help  this help\n");
}

static bool
s_type_ok (const char *t)
{
    size_t len = strlen (t);
    if (len == 0 || len > DQ_PROTO_TYPE_MAX)
        return false;
    return strspn (t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789_.:-") == len;
}

//  Submit, retrying BUSY answers after the broker's retry_ms until the call
//  timeout has passed. Returns the client's code; *reply on DQ_OK.
static int
s_submit_retrying (dq_client_t *client, const dq_jobspec_t *jobs, uint32_t njobs,
                   const char *dag_name, const char *key, dq_msg_t **reply)
{
    int64_t deadline = dq_cli_mono_ms () + dq_client_timeout (client);
    while (true) {
        uint32_t retry_ms = 0;
        int rc = dq_client_submit (client, jobs, njobs, dag_name, key, reply,
                                   &retry_ms);
        if (rc != DQ_ERR_BUSY)
            return rc;
        int64_t wait = retry_ms? retry_ms: 100;
        if (dq_cli_mono_ms () + wait >= deadline)
            return rc;
        dq_cli_sleep_ms (wait);
    }
}

//  Read the payload source. Returns 0, or an exit status.
static int
s_read_payload (const char *cmd, const char *path, char **data, size_t *size)
{
    FILE *file = stdin;
    if (path && strcmp (path, "-") != 0) {
        file = fopen (path, "rb");
        if (!file)
            return dq_cli_error (cmd, "cannot open %s: %s", path, strerror (errno));
    }
    int rc = dq_cli_read_all (file, DQ_PROTO_PAYLOAD_MAX, data, size);
    int err = errno;
    if (file != stdin)
        fclose (file);
    if (rc) {
        const char *name = path && strcmp (path, "-")? path: "standard input";
        if (err == EFBIG)
            return dq_cli_error (cmd, "%s is over the protocol's payload limit "
                                 "of %u bytes", name, DQ_PROTO_PAYLOAD_MAX);
        return dq_cli_error (cmd, "cannot read %s: %s", name, strerror (err));
    }
    return 0;
}

//  --wait of submit: wait for the job, print its output or its error.
static int
s_wait_and_print (dq_cli_t *cli, dq_client_t *client, const char *id, bool json)
{
    const char *ids [] = { id };
    int rc = dq_client_wait (client, ids, 1, -1, NULL);
    if (rc)
        return dq_cli_fail (cli, "submit", rc);
    dq_msg_t *out;
    rc = dq_client_result (client, id, &out);
    if (rc)
        return dq_cli_fail (cli, "submit", rc);
    int status = out->state == DQ_STATE_SUCCEEDED? DQ_CLI_EXIT_OK: DQ_CLI_EXIT_FAIL;
    if (json) {
        json_t *o = json_object ();
        json_object_set_new (o, "id", json_string (id));
        json_object_set_new (o, "state", json_string (dq_state_str (out->state)));
        dq_cli_json_set_output (o, out->output, out->output_size);
        json_object_set_new (o, "error", out->error? json_string (out->error): json_null ());
        if (dq_cli_print_json (o))
            status = DQ_CLI_EXIT_FAIL;
    }
    else
    if (status == DQ_CLI_EXIT_OK) {
        if (dq_cli_write_stdout ("submit", out->output, out->output_size))
            status = DQ_CLI_EXIT_FAIL;
    }
    if (out->state != DQ_STATE_SUCCEEDED)
        dq_cli_error ("submit", "job %s %s%s%s", id, dq_state_str (out->state),
                      out->error && *out->error? ": ": "",
                      out->error? out->error: "");
    dq_msg_destroy (&out);
    return status;
}

int
dq_cli_submit (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "submit";
    const char *type = NULL, *data = NULL, *file = NULL, *key = NULL;
    const char *content_type = NULL;
    bool wait = false, json = false;
    dq_jobspec_t job = { 0 };
    dq_dep_t deps [DQ_DAGDOC_MAX_DEPS_DEFAULT];
    uint32_t ndeps = 0;

    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg, *v;
    int kind;
    int64_t n;
    uint64_t ms;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (type)
                return dq_cli_usage (cmd, "one TYPE only (got '%s' and '%s'); "
                                     "the payload goes in --data", type, arg);
            type = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_submit_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
        if (strcmp (opt, "--wait") == 0 || strcmp (opt, "--json") == 0) {
            if (dq_cli_args_no_value (&args))
                return DQ_CLI_EXIT_USAGE;
            if (opt [2] == 'w')
                wait = true;
            else
                json = true;
        }
        else {
            if (!(v = dq_cli_args_value (&args)))
                return DQ_CLI_EXIT_USAGE;
            if (strcmp (opt, "--data") == 0)
                data = v;
            else
            if (strcmp (opt, "--file") == 0)
                file = v;
            else
            if (strcmp (opt, "--priority") == 0) {
                if (dq_cli_parse_int (cmd, "--priority", v, INT32_MIN, INT32_MAX, &n))
                    return DQ_CLI_EXIT_USAGE;
                job.priority = (int32_t) n;
            }
            else
            if (strcmp (opt, "--attempts") == 0) {
                if (dq_cli_parse_int (cmd, "--attempts", v, 1, DQ_DAGDOC_ATTEMPTS_MAX, &n))
                    return DQ_CLI_EXIT_USAGE;
                job.attempts = (uint32_t) n;
            }
            else
            if (strcmp (opt, "--timeout") == 0) {
                if (dq_cli_parse_seconds (cmd, "--timeout", v, 0, DQ_CLI_JOB_TIMEOUT_MAX, &ms))
                    return DQ_CLI_EXIT_USAGE;
                job.timeout_ms = (uint32_t) ms;
            }
            else
            if (strcmp (opt, "--delay") == 0) {
                if (dq_cli_parse_seconds (cmd, "--delay", v, 0, DQ_DAGDOC_DELAY_MAX_S, &ms))
                    return DQ_CLI_EXIT_USAGE;
                job.delay_ms = ms;
            }
            else
            if (strcmp (opt, "--depends-on") == 0) {
                if (!*v || strlen (v) > 256)
                    return dq_cli_usage (cmd, "--depends-on needs a job id");
                if (ndeps == DQ_DAGDOC_MAX_DEPS_DEFAULT)
                    return dq_cli_usage (cmd, "at most %d --depends-on",
                                         DQ_DAGDOC_MAX_DEPS_DEFAULT);
                for (uint32_t d = 0; d < ndeps; d++)
                    if (strcmp (deps [d].id, v) == 0)
                        return dq_cli_usage (cmd, "--depends-on %s is given twice", v);
                deps [ndeps++] = (dq_dep_t) { .idx = -1, .id = v };
            }
            else
            if (strcmp (opt, "--key") == 0) {
                if (!*v || strlen (v) > 256)
                    return dq_cli_usage (cmd, "--key must be 1 to 256 bytes");
                key = v;
            }
            else
            if (strcmp (opt, "--content-type") == 0) {
                if (!*v || strlen (v) > 256)
                    return dq_cli_usage (cmd, "--content-type must be 1 to 256 bytes");
                content_type = v;
            }
            else
                return dq_cli_usage (cmd, "unknown option '%s'", opt);
        }
    }
    if (!type)
        return dq_cli_usage (cmd, "the job TYPE is required");
    if (!s_type_ok (type))
        return dq_cli_usage (cmd, "TYPE must be 1 to %d characters from "
                             "[A-Za-z0-9_.:-], not '%s'", DQ_PROTO_TYPE_MAX, type);
    if (data && file)
        return dq_cli_usage (cmd, "give --data or --file, not both");

    char *payload = NULL;
    size_t payload_size = 0;
    if (file || (!data && !isatty (STDIN_FILENO))) {
        int rc = s_read_payload (cmd, file, &payload, &payload_size);
        if (rc)
            return rc;
    }
    else
    if (data) {
        payload_size = strlen (data);
        if (payload_size > DQ_PROTO_PAYLOAD_MAX)
            return dq_cli_error (cmd, "--data is over the payload limit of %u bytes",
                                 DQ_PROTO_PAYLOAD_MAX);
    }
    job.type = type;
    job.payload = payload? payload: data;
    job.payload_size = payload_size;
    job.content_type = content_type;
    job.deps = ndeps? deps: NULL;
    job.ndeps = ndeps;

    int exit_code = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &exit_code);
    if (!client) {
        free (payload);
        return exit_code;
    }
    char generated [33];
    if (!key) {
        dq_client_make_key (generated);
        key = generated;
    }
    dq_msg_t *reply;
    int rc = s_submit_retrying (client, &job, 1, NULL, key, &reply);
    free (payload);
    if (rc)
        return dq_cli_fail (cli, cmd, rc);
    char id [300];
    snprintf (id, sizeof id, "%s", reply->ids [0]);
    dq_msg_destroy (&reply);
    if (wait)
        return s_wait_and_print (cli, client, id, json);
    if (json) {
        json_t *o = json_object ();
        json_object_set_new (o, "id", json_string (id));
        return dq_cli_print_json (o);
    }
    printf ("%s\n", id);
    return fflush (stdout)? DQ_CLI_EXIT_FAIL: DQ_CLI_EXIT_OK;
}

int
dq_cli_submit_dag (dq_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "submit-dag";
    const char *path = NULL;
    bool json = false, wait = false;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (path)
                return dq_cli_usage (cmd, "one FILE only (got '%s' and '%s')", path, arg);
            path = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_submit_dag_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
        if (strcmp (opt, "--json") == 0 || strcmp (opt, "--wait") == 0) {
            if (dq_cli_args_no_value (&args))
                return DQ_CLI_EXIT_USAGE;
            if (opt [2] == 'j')
                json = true;
            else
                wait = true;
        }
        else
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
    }
    if (!path)
        return dq_cli_usage (cmd, "a FILE (or - for standard input) is required");

    FILE *file = stdin;
    const char *name = strcmp (path, "-") == 0? "standard input": path;
    if (file && strcmp (path, "-") != 0) {
        file = fopen (path, "rb");
        if (!file)
            return dq_cli_error (cmd, "cannot open %s: %s", path, strerror (errno));
    }
    char *text;
    size_t size;
    int rc = dq_cli_read_all (file, DQ_DAGDOC_MAX_SIZE_DEFAULT, &text, &size);
    int err = errno;
    if (file != stdin)
        fclose (file);
    if (rc) {
        if (err == EFBIG)
            return dq_cli_error (cmd, "%s is over the document limit of %u bytes",
                                 name, DQ_DAGDOC_MAX_SIZE_DEFAULT);
        return dq_cli_error (cmd, "cannot read %s: %s", name, strerror (err));
    }
    char why [DQ_DAGDOC_ERR_SIZE];
    dq_dagdoc_t *doc = dq_dagdoc_parse (text, size, why, sizeof why);
    free (text);
    if (!doc)
        return dq_cli_error (cmd, "%s: %s", name, why);

    int exit_code = DQ_CLI_EXIT_OK;
    dq_client_t *client = dq_cli_client (cli, &exit_code);
    if (!client) {
        dq_dagdoc_destroy (&doc);
        return exit_code;
    }
    char generated [33];
    const char *key = dq_dagdoc_key (doc);
    if (!key) {
        dq_client_make_key (generated);
        key = generated;
    }
    dq_msg_t *reply;
    uint32_t njobs = dq_dagdoc_njobs (doc);
    rc = s_submit_retrying (client, dq_dagdoc_jobs (doc), njobs,
                            dq_dagdoc_name (doc), key, &reply);
    if (rc) {
        dq_dagdoc_destroy (&doc);
        char what [300];
        snprintf (what, sizeof what, "%s: %s", cmd, name);
        return dq_cli_fail (cli, what, rc);
    }
    char dag_id [300];
    snprintf (dag_id, sizeof dag_id, "%s", reply->dag_id? reply->dag_id: "");
    if (json) {
        json_t *o = json_object ();
        json_object_set_new (o, "dag_id", json_string (dag_id));
        json_t *jobs = json_object ();
        for (uint32_t i = 0; i < njobs; i++)
            json_object_set_new (jobs, dq_dagdoc_job_id (doc, i),
                                 json_string (reply->ids [i]));
        json_object_set_new (o, "jobs", jobs);
        exit_code = dq_cli_print_json (o);
    }
    else {
        const char *dag_name = dq_dagdoc_name (doc);
        printf ("dag %s%s%s%s: %u job%s\n", dag_id, *dag_name? " '": "", dag_name,
                *dag_name? "'": "", njobs, njobs == 1? "": "s");
        size_t width = 2;
        for (uint32_t i = 0; i < njobs; i++) {
            size_t len = strlen (dq_dagdoc_job_id (doc, i));
            if (len > width)
                width = len;
        }
        if (width > 40)
            width = 40;
        printf ("  %-*s  %s\n", (int) width, "ID", "JOB ID");
        for (uint32_t i = 0; i < njobs; i++)
            printf ("  %-*s  %s\n", (int) width, dq_dagdoc_job_id (doc, i),
                    reply->ids [i]);
        if (fflush (stdout))
            exit_code = dq_cli_error (cmd, "cannot write to stdout: %s", strerror (errno));
    }
    dq_msg_destroy (&reply);
    dq_dagdoc_destroy (&doc);
    if (wait && exit_code == DQ_CLI_EXIT_OK && *dag_id)
        exit_code = dq_cli_wait_dag (cli, cmd, dag_id, -1);
    return exit_code;
}
