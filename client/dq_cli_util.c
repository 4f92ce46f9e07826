/*  dq_cli_util.c - helpers shared by the dagq subcommands (see dq_cli.h):
    argument parsing, strict numbers, messages and exit statuses, the
    client connection, and formatting. Nothing here talks to the broker
    beyond opening the client.
*/
#include "dq_cli.h"
#include "dq_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  ---------------------------------------------------------------------------
//  Arguments

void
dq_cli_args_init (dq_cli_args_t *self, const char *cmd, int argc, char **argv)
{
    memset (self, 0, sizeof *self);
    self->cmd = cmd;
    self->argc = argc;
    self->argv = argv;
    self->i = 1;                    //  argv [0] is the subcommand
}

int
dq_cli_args_next (dq_cli_args_t *self, const char **opt, const char **arg)
{
    self->inline_value = NULL;
    self->opt [0] = 0;
    while (self->i < self->argc) {
        const char *a = self->argv [self->i++];
        if (self->only_positional || a [0] != '-' || strcmp (a, "-") == 0) {
            *arg = a;
            return 0;
        }
        if (strcmp (a, "--") == 0) {
            self->only_positional = true;
            continue;
        }
        const char *eq = strncmp (a, "--", 2) == 0? strchr (a, '='): NULL;
        size_t len = eq? (size_t) (eq - a): strlen (a);
        if (len >= sizeof self->opt)
            len = sizeof self->opt - 1;
        memcpy (self->opt, a, len);
        self->opt [len] = 0;
        if (eq)
            self->inline_value = eq + 1;
        if (strcmp (self->opt, "-h") == 0)
            strcpy (self->opt, "--help");
        *opt = self->opt;
        return 1;
    }
    return -1;
}

const char *
dq_cli_args_value (dq_cli_args_t *self)
{
    if (self->inline_value)
        return self->inline_value;
    if (self->i < self->argc)
        return self->argv [self->i++];
    dq_cli_usage (self->cmd, "%s needs a value", self->opt);
    return NULL;
}

int
dq_cli_args_no_value (dq_cli_args_t *self)
{
    if (self->inline_value) {
        dq_cli_usage (self->cmd, "%s takes no value", self->opt);
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------------
//  Numbers

int
dq_cli_parse_int (const char *cmd, const char *what, const char *s,
                  int64_t min, int64_t max, int64_t *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+')
        p++;
    bool digits = *p != 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            digits = false;
    errno = 0;
    char *end = NULL;
    long long v = digits? strtoll (s, &end, 10): 0;
    if (!digits || errno || *end || v < min || v > max) {
        dq_cli_usage (cmd, "%s must be an integer from %lld to %lld, not '%s'",
                      what, (long long) min, (long long) max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int
dq_cli_parse_seconds (const char *cmd, const char *what, const char *s,
                      double min, double max, uint64_t *out_ms)
{
    //  dq_parse_seconds_ms takes plain decimals only (no sign, exponent,
    //  space, "inf" or hex) up to max; min and the rounding are the CLI's.
    uint64_t ms = 0;
    double v = 0;
    bool ok = dq_parse_seconds_ms (s, max, &ms) == 0;
    if (ok) {
        v = strtod (s, NULL);
        ok = v >= min;
    }
    if (!ok) {
        dq_cli_usage (cmd, "%s must be a number of seconds from %g to %.0f, not '%s'",
                      what, min, max, s);
        return -1;
    }
    if (v > 0 && ms == 0)
        ms = 1;
    *out_ms = ms;
    return 0;
}

//  ---------------------------------------------------------------------------
//  Messages

int
dq_cli_usage (const char *cmd, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "dagq: %s: ", cmd? cmd: "usage");
    vfprintf (stderr, fmt, args);
    va_end (args);
    if (cmd)
        fprintf (stderr, "\nTry 'dagq %s --help'.\n", cmd);
    else
        fprintf (stderr, "\nTry 'dagq --help'.\n");
    return DQ_CLI_EXIT_USAGE;
}

int
dq_cli_error (const char *what, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "dagq: %s: ", what);
    vfprintf (stderr, fmt, args);
    va_end (args);
    fputc ('\n', stderr);
    return DQ_CLI_EXIT_FAIL;
}

int
dq_cli_fail (dq_cli_t *cli, const char *what, int code)
{
    const char *why = cli->client? dq_client_error (cli->client): "";
    if (!why || !*why)
        why = dq_err_str (code);
    if (code == DQ_ERR_UNAVAILABLE) {
        fprintf (stderr, "dagq: %s: %s\n", what, why);
        fprintf (stderr, "dagq: is dagq-broker running there? Set the address "
                 "with --broker or %s.\n", DQ_CLI_BROKER_ENV);
        if (cli->curve_secret)
            fprintf (stderr, "dagq: with CURVE, a broker that does not accept this "
                     "client's public key does not answer at all.\n");
        return DQ_CLI_EXIT_UNAVAILABLE;
    }
    fprintf (stderr, "dagq: %s: %s\n", what, why);
    return DQ_CLI_EXIT_FAIL;
}

dq_client_t *
dq_cli_client (dq_cli_t *cli, int *exit_code)
{
    if (cli->client)
        return cli->client;
    cli->client = dq_client_new (cli->broker);
    if (!cli->client) {
        *exit_code = dq_cli_usage (NULL, "--broker: '%s' is not a ZeroMQ endpoint "
                                   "(e.g. tcp://127.0.0.1:5555 or ipc:///run/dagq.sock)",
                                   cli->broker);
        return NULL;
    }
    if (cli->timeout_ms > 0)
        dq_client_set_timeout (cli->client, cli->timeout_ms);
    if (cli->curve_secret
    &&  dq_client_set_curve (cli->client, cli->curve_secret, cli->curve_public)) {
        *exit_code = dq_cli_error ("curve", "%s", dq_client_error (cli->client));
        dq_client_destroy (&cli->client);
        return NULL;
    }
    return cli->client;
}

bool
dq_cli_is_dag_id (const char *id)
{
    const char *dash = strrchr (id, '-');
    if (!dash || dash == id || dash [1] != 'd' || dash [2] == 0)
        return false;
    for (const char *p = dash + 2; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

//  ---------------------------------------------------------------------------
//  Input

int
dq_cli_read_all (FILE *file, size_t max, char **data, size_t *size)
{
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc (cap + 1);
    if (!buf)
        return -1;
    while (true) {
        if (len == cap) {
            if (cap > max) {
                free (buf);
                errno = EFBIG;
                return -1;
            }
            size_t ncap = cap * 2;
            char *nbuf = realloc (buf, ncap + 1);
            if (!nbuf) {
                free (buf);
                errno = ENOMEM;
                return -1;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t n = fread (buf + len, 1, cap - len, file);
        len += n;
        if (len > max) {
            free (buf);
            errno = EFBIG;
            return -1;
        }
        if (n == 0) {
            if (ferror (file)) {
                int e = errno? errno: EIO;
                free (buf);
                errno = e;
                return -1;
            }
            break;
        }
    }
    buf [len] = 0;
    *data = buf;
    *size = len;
    return 0;
}

//  ---------------------------------------------------------------------------
//  Output

const char *
dq_cli_fmt_time (uint64_t ms, char *buf, size_t size)
{
    if (ms == 0) {
        snprintf (buf, size, "-");
        return buf;
    }
    time_t secs = (time_t) (ms / 1000);
    struct tm tm;
    localtime_r (&secs, &tm);
    char text [32];
    strftime (text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf (buf, size, "%s.%03u", text, (unsigned) (ms % 1000));
    return buf;
}

const char *
dq_cli_fmt_duration (int64_t ms, char *buf, size_t size)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1000)
        snprintf (buf, size, "%dms", (int) ms);
    else
    if (ms < 10000)
        snprintf (buf, size, "%.2fs", ms / 1000.0);
    else
    if (ms < 60000)
        snprintf (buf, size, "%.1fs", ms / 1000.0);
    else
    if (ms < 3600000)
        snprintf (buf, size, "%dm%02ds", (int) (ms / 60000), (int) (ms / 1000 % 60));
    else
    if (ms < 86400000)
        snprintf (buf, size, "%dh%02dm", (int) (ms / 3600000), (int) (ms / 60000 % 60));
    else
        snprintf (buf, size, "%lldd%02dh", (long long) (ms / 86400000),
                  (int) (ms / 3600000 % 24));
    return buf;
}

const char *
dq_cli_fmt_bytes (uint64_t bytes, char *buf, size_t size)
{
    static const char *units [] = { "KiB", "MiB", "GiB", "TiB" };
    if (bytes < 1024) {
        snprintf (buf, size, "%llu B", (unsigned long long) bytes);
        return buf;
    }
    double v = bytes / 1024.0;
    int u = 0;
    while (v >= 1024 && u < 3) {
        v /= 1024;
        u++;
    }
    snprintf (buf, size, "%.1f %s", v, units [u]);
    return buf;
}

int
dq_cli_print_json (json_t *value)
{
    if (!value)
        return dq_cli_error ("json", "out of memory");
    int rc = json_dumpf (value, stdout, JSON_INDENT (2));
    json_decref (value);
    if (rc || fputc ('\n', stdout) == EOF || fflush (stdout))
        return dq_cli_error ("stdout", "%s", strerror (errno));
    return DQ_CLI_EXIT_OK;
}

json_t *
dq_cli_json_base64 (const void *data, size_t size)
{
    static const char alphabet [] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *in = data;
    size_t len = (size + 2) / 3 * 4;
    char *out = malloc (len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < size; i += 3) {
        uint32_t v = (uint32_t) in [i] << 16;
        if (i + 1 < size) v |= (uint32_t) in [i + 1] << 8;
        if (i + 2 < size) v |= in [i + 2];
        out [o++] = alphabet [(v >> 18) & 63];
        out [o++] = alphabet [(v >> 12) & 63];
        out [o++] = i + 1 < size? alphabet [(v >> 6) & 63]: '=';
        out [o++] = i + 2 < size? alphabet [v & 63]: '=';
    }
    out [o] = 0;
    json_t *s = json_stringn (out, o);
    free (out);
    return s;
}

void
dq_cli_json_set_output (json_t *object, const void *data, size_t size)
{
    //  jansson refuses invalid UTF-8: such output goes as base64.
    json_t *text = json_stringn (size? data: "", size);
    if (text)
        json_object_set_new (object, "output", text);
    else
        json_object_set_new (object, "output_base64", dq_cli_json_base64 (data, size));
}

static json_t *
s_json_str (const char *s)
{
    return s? json_string (s): json_null ();
}

json_t *
dq_cli_jobinfo_json (const dq_jobinfo_t *info)
{
    json_t *o = json_object ();
    json_object_set_new (o, "id", s_json_str (info->id));
    json_object_set_new (o, "type", s_json_str (info->type));
    json_object_set_new (o, "name", s_json_str (info->name));
    json_object_set_new (o, "dag_id", s_json_str (info->dag_id));
    json_object_set_new (o, "state", json_string (dq_state_str (info->state)));
    json_object_set_new (o, "priority", json_integer (info->priority));
    json_object_set_new (o, "attempts", json_integer (info->attempts));
    json_object_set_new (o, "max_attempts", json_integer (info->max_attempts));
    json_object_set_new (o, "worker", s_json_str (info->worker));
    json_object_set_new (o, "created_ms", json_integer ((json_int_t) info->created_ms));
    json_object_set_new (o, "started_ms", json_integer ((json_int_t) info->started_ms));
    json_object_set_new (o, "finished_ms", json_integer ((json_int_t) info->finished_ms));
    json_object_set_new (o, "error", s_json_str (info->error));
    json_object_set_new (o, "skipped_by", s_json_str (info->skipped_by));
    json_object_set_new (o, "output_size", json_integer ((json_int_t) info->output_size));
    json_t *parents = json_array ();
    for (uint32_t i = 0; i < info->nparents; i++) {
        //  The decoder may leave either array NULL when the broker sent only
        //  the other one.
        json_t *p = json_object ();
        json_object_set_new (p, "id", s_json_str (info->parent_ids? info->parent_ids [i]: NULL));
        json_object_set_new (p, "state", info->parent_states
                             ? json_string (dq_state_str (info->parent_states [i]))
                             : json_null ());
        json_array_append_new (parents, p);
    }
    json_object_set_new (o, "parents", parents);
    return o;
}

int
dq_cli_write_stdout (const char *what, const void *data, size_t size)
{
    if ((size && fwrite (data, 1, size, stdout) != size) || fflush (stdout)) {
        dq_cli_error (what, "cannot write to stdout: %s", strerror (errno));
        return -1;
    }
    return 0;
}

//  ---------------------------------------------------------------------------
//  Tables

#define DQ_CLI_CELL_MAX 60

struct _dq_cli_table_t {
    int ncols;
    char **cells;               //  rows * ncols, row 0 = headers
    size_t nrows, cap;
    size_t *width;              //  per column
    bool *right;                //  per column
};

dq_cli_table_t *
dq_cli_table_new (int ncols, const char *const *headers, const bool *right)
{
    dq_cli_table_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->ncols = ncols;
    self->width = calloc ((size_t) ncols, sizeof (size_t));
    self->right = calloc ((size_t) ncols, sizeof (bool));
    if (!self->width || !self->right) {
        dq_cli_table_destroy (&self);
        return NULL;
    }
    for (int c = 0; right && c < ncols; c++)
        self->right [c] = right [c];
    dq_cli_table_add (self, headers);
    return self;
}

//  Display width of UTF-8 text, counting code points.
static size_t
s_width (const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char) *s & 0xc0) != 0x80;
    return n;
}

//  A copy of s cut to DQ_CLI_CELL_MAX code points, first line only, with
//  control characters shown as spaces.
static char *
s_cell (const char *s)
{
    if (!s)
        s = "-";
    size_t full = strlen (s);
    while (full && (s [full - 1] == '\n' || s [full - 1] == '\r' || s [full - 1] == ' '))
        full--;
    size_t len = strcspn (s, "\n");
    if (len > full)
        len = full;
    char *copy = malloc (len + 4);
    if (!copy)
        return NULL;
    size_t points = 0, i = 0;
    for (; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        if ((c & 0xc0) != 0x80 && points++ == DQ_CLI_CELL_MAX)
            break;
        copy [i] = c < 0x20 || c == 0x7f? ' ': (char) c;
    }
    if (i < full) {
        //  Cut, or more lines follow: mark it.
        memcpy (copy + i, "...", 3);
        i += 3;
    }
    copy [i] = 0;
    return copy;
}

void
dq_cli_table_add (dq_cli_table_t *self, const char *const *cells)
{
    if (!self)
        return;
    if (self->nrows == self->cap) {
        size_t cap = self->cap? self->cap * 2: 16;
        char **grown = realloc (self->cells, cap * (size_t) self->ncols * sizeof (char *));
        if (!grown)
            return;
        self->cells = grown;
        self->cap = cap;
    }
    char **row = self->cells + self->nrows * (size_t) self->ncols;
    for (int c = 0; c < self->ncols; c++) {
        row [c] = s_cell (cells [c]);
        size_t w = row [c]? s_width (row [c]): 0;
        if (w > self->width [c])
            self->width [c] = w;
    }
    self->nrows++;
}

void
dq_cli_table_print (dq_cli_table_t *self, FILE *out, const char *indent)
{
    if (!self)
        return;
    for (size_t r = 0; r < self->nrows; r++) {
        fputs (indent? indent: "", out);
        char **row = self->cells + r * (size_t) self->ncols;
        for (int c = 0; c < self->ncols; c++) {
            const char *cell = row [c]? row [c]: "";
            size_t pad = self->width [c] - s_width (cell);
            bool last = c + 1 == self->ncols;
            if (self->right [c])
                fprintf (out, "%*s%s", (int) pad, "", cell);
            else
                fprintf (out, "%s%*s", cell, last? 0: (int) pad, "");
            if (!last)
                fputs ("  ", out);
        }
        fputc ('\n', out);
    }
}

void
dq_cli_table_destroy (dq_cli_table_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_cli_table_t *self = *self_p;
    for (size_t i = 0; i < self->nrows * (size_t) self->ncols; i++)
        free (self->cells [i]);
    free (self->cells);
    free (self->width);
    free (self->right);
    free (self);
    *self_p = NULL;
}

uint64_t
dq_cli_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

int64_t
dq_cli_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
dq_cli_sleep_ms (int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = { (time_t) (ms / 1000), (long) (ms % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}
