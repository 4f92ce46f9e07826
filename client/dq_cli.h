/*  dq_cli.h - what the dagq subcommands share: the global options, the
    client connection, argument parsing, messages and exit codes, and
    formatting of times, sizes and JSON.

    Each subcommand lives in dq_cli_<verb>.c as one function
    dq_cli_<verb> (cli, argc, argv) that returns the process exit status;
    argv [0] is the subcommand's name.
*/
#ifndef DQ_CLI_H_INCLUDED
#define DQ_CLI_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dq_client.h"

//  Exit statuses (listed in `dagq --help`).
#define DQ_CLI_EXIT_OK          0   //  success; every job waited for succeeded
#define DQ_CLI_EXIT_FAIL        1   //  a job did not succeed, not found, refused
#define DQ_CLI_EXIT_USAGE       2   //  bad command line
#define DQ_CLI_EXIT_TIMEOUT     2   //  wait: the timeout passed first
#define DQ_CLI_EXIT_UNAVAILABLE 3   //  the broker did not answer

#define DQ_CLI_BROKER_ENV       "DAGQ_BROKER"
#define DQ_CLI_CURVE_SECRET_ENV "DAGQ_CURVE_SECRET"
#define DQ_CLI_CURVE_PUBLIC_ENV "DAGQ_CURVE_BROKER_PUBLIC"
#define DQ_CLI_STATUS_CHUNK     DQ_PROTO_STATUS_IDS_MAX    //  ids per STATUS request
#define DQ_CLI_CALL_TIMEOUT_MAX 2147483.0   //  seconds: ms must fit an int
#define DQ_CLI_JOB_TIMEOUT_MAX  4294967.0   //  seconds: timeout_ms is 32-bit

typedef struct {
    const char *broker;             //  endpoint
    int timeout_ms;                 //  per call; 0 = library default
    const char *curve_secret;       //  this client's secret certificate
    const char *curve_public;       //  the broker's public certificate
    dq_client_t *client;            //  opened by dq_cli_client
} dq_cli_t;

typedef int (dq_cli_fn) (dq_cli_t *cli, int argc, char **argv);

//  The subcommands.
int dq_cli_submit (dq_cli_t *cli, int argc, char **argv);
int dq_cli_submit_dag (dq_cli_t *cli, int argc, char **argv);
int dq_cli_status (dq_cli_t *cli, int argc, char **argv);
int dq_cli_wait (dq_cli_t *cli, int argc, char **argv);
int dq_cli_result (dq_cli_t *cli, int argc, char **argv);
int dq_cli_cancel (dq_cli_t *cli, int argc, char **argv);
int dq_cli_stats (dq_cli_t *cli, int argc, char **argv);
int dq_cli_dag (dq_cli_t *cli, int argc, char **argv);
int dq_cli_keygen (dq_cli_t *cli, int argc, char **argv);

//  Wait for a DAG until it is finished or deadline (monotonic ms, -1 for
//  none) passes, with a progress line on stderr (live on a terminal, every
//  few seconds otherwise). Returns the exit status: OK when every job
//  succeeded, FAIL (failed jobs named on stderr), TIMEOUT, UNAVAILABLE.
int
    dq_cli_wait_dag (dq_cli_t *cli, const char *cmd, const char *dag_id,
                     int64_t deadline);

//  --- Argument parsing. Options and positional arguments may mix;
//  "--opt VALUE" and "--opt=VALUE" both work; "--" ends the options; "-"
//  is a positional argument.
typedef struct {
    int argc;
    char **argv;
    int i;                          //  next argv index
    bool only_positional;           //  after "--"
    const char *inline_value;       //  the VALUE of "--opt=VALUE"
    char opt [64];                  //  the option just read, without "=VALUE"
    const char *cmd;                //  subcommand, for messages
} dq_cli_args_t;

void
    dq_cli_args_init (dq_cli_args_t *self, const char *cmd, int argc, char **argv);

//  Next argument: returns 1 for an option (*opt set, e.g. "--json"), 0 for
//  a positional argument (*arg set), -1 at the end.
int
    dq_cli_args_next (dq_cli_args_t *self, const char **opt, const char **arg);

//  The value of the option just returned. Returns NULL, after printing a
//  usage error, when it has none.
const char *
    dq_cli_args_value (dq_cli_args_t *self);

//  Fails (usage error printed, returns -1) if the option just returned was
//  given a value with "=".
int
    dq_cli_args_no_value (dq_cli_args_t *self);

//  Strict numbers: all of s must be consumed. Print a usage error naming
//  what and return -1 when s is not valid.
int
    dq_cli_parse_int (const char *cmd, const char *what, const char *s,
                      int64_t min, int64_t max, int64_t *out);
//  Seconds: digits with an optional fraction ("5", "0.25"), in [min, max],
//  into ms (rounded to the nearest ms; a positive value is at least 1 ms).
int
    dq_cli_parse_seconds (const char *cmd, const char *what, const char *s,
                          double min, double max, uint64_t *out_ms);

//  --- Messages. All go to stderr as "dagq: <what>: <why>".

//  A usage error: prints it and a hint to --help, returns DQ_CLI_EXIT_USAGE.
int
    dq_cli_usage (const char *cmd, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

//  Prints "dagq: <what>: <why>"; returns DQ_CLI_EXIT_FAIL.
int
    dq_cli_error (const char *what, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

//  A failed client call: prints the client's message and returns the exit
//  status for code (DQ_CLI_EXIT_UNAVAILABLE for unavailable, else FAIL).
int
    dq_cli_fail (dq_cli_t *cli, const char *what, int code);

//  The client, opened on first use with the global options. Returns NULL
//  after printing why (*exit_code gets the status to return).
dq_client_t *
    dq_cli_client (dq_cli_t *cli, int *exit_code);

//  True if id has the shape of a DAG id (<broker id>-d<digits>).
bool
    dq_cli_is_dag_id (const char *id);

//  --- Input

//  Read all of a stream (at most max bytes; more is an error). Returns 0
//  with *data (caller frees; NUL-terminated) and *size, or -1 with errno
//  (EFBIG when over max).
int
    dq_cli_read_all (FILE *file, size_t max, char **data, size_t *size);

//  --- Output

//  Local time of a unix ms timestamp: "2025-01-31 12:00:00.123"; "-" for 0.
const char *
    dq_cli_fmt_time (uint64_t ms, char *buf, size_t size);
//  A duration: "123ms", "1.25s", "12.3s", "3m05s", "2h03m", "3d04h".
const char *
    dq_cli_fmt_duration (int64_t ms, char *buf, size_t size);
//  A byte count: "512 B", "1.5 KiB", "3.2 MiB".
const char *
    dq_cli_fmt_bytes (uint64_t bytes, char *buf, size_t size);

//  Print a JSON value (indented) and a newline to stdout, and release it.
//  Returns DQ_CLI_EXIT_OK, or FAIL if stdout could not be written.
int
    dq_cli_print_json (json_t *value);

//  A JSON string holding data in base64 (standard alphabet, padded).
json_t *
    dq_cli_json_base64 (const void *data, size_t size);

//  A job's STATUS record as a JSON object.
json_t *
    dq_cli_jobinfo_json (const dq_jobinfo_t *info);

//  Put the output bytes into object as "output" (UTF-8 text) or
//  "output_base64".
void
    dq_cli_json_set_output (json_t *object, const void *data, size_t size);

//  Write bytes to stdout and flush. Returns 0 or -1 (message printed).
int
    dq_cli_write_stdout (const char *what, const void *data, size_t size);

//  A text table: columns sized to their widest cell (cells are cut at 60
//  characters), numbers right-aligned where right [col] is true.
typedef struct _dq_cli_table_t dq_cli_table_t;
dq_cli_table_t *
    dq_cli_table_new (int ncols, const char *const *headers, const bool *right);
//  Add a row of ncols cells (copied; NULL shows as "-").
void
    dq_cli_table_add (dq_cli_table_t *self, const char *const *cells);
void
    dq_cli_table_print (dq_cli_table_t *self, FILE *out, const char *indent);
void
    dq_cli_table_destroy (dq_cli_table_t **self_p);

//  Wall clock in unix ms, and a monotonic clock in ms.
uint64_t
    dq_cli_now_ms (void);
int64_t
    dq_cli_mono_ms (void);
void
    dq_cli_sleep_ms (int64_t ms);

#endif
