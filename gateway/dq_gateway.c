/*  dq_gateway.c - the REST front door: HTTP (libmicrohttpd) to the broker's
    client protocol (dq_gwlink).

    libmicrohttpd runs a pool of epoll threads. For each request the access
    handler (s_on_request) is called:

      1. first, once the head is in (s_begin): route, authenticate, check
         Content-Length against --max-body and parse the query options, so
         bad requests are refused before their body is read;
      2. then once per piece of body (s_on_body), counted against the limit;
      3. then once with no more body (s_dispatch): the request becomes a
         dq_gwop_t, the connection is suspended and the op handed to the
         link thread; quick routes (/healthz, /readyz) answer at once;
      4. after the link answered (s_on_op_done resumes the connection):
         s_finish builds the response from the op.

    JSON is jansson's both ways: it parses bulk submissions (the DAG parser,
    dq_dagdoc, uses it too) and builds every JSON response and error body
    (s_json_*: text from the broker is made valid UTF-8 first). Only the
    /metrics exposition is plain text (s_buf_t). dq_err_t -> HTTP status
    lives in one table, s_err_status.

    Slow clients: libmicrohttpd closes connections idle for --idle-timeout
    but a client trickling its request head byte by byte is never idle. So
    every connection records when it last finished a request; the run loop
    (s_reap) shuts down those whose next request head has not completed
    within --idle-timeout, and those whose body has not arrived within
    --idle-timeout plus a second per S_BODY_MIN_RATE bytes received.

    Not here: option parsing (dagq_gateway.c), broker I/O (dq_gwlink).
*/
#include "dq_gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dq_dagdoc.h"
#include "dq_gwlink.h"
#include "dq_log.h"
#include "dq_proto.h"
#include "dq_util.h"

#define S_METRICS_TIMEOUT_MS  2000   //  /metrics waits this long for STATS
#define S_REAP_MS             100    //  run loop period (slow-client checks)
#define S_DRAIN_MS            5000   //  at stop: wait for broker answers
#define S_KEY_MAX             256    //  Idempotency-Key bytes
#define S_CTYPE_MAX           255    //  Content-Type bytes kept as the job's
#define S_TOKEN_MAX           4096
#define S_FILE_MAX            (1u << 20)   //  token, certificate and key files
#define S_PATH_MAX            512    //  longer paths match no route
#define S_BODY_MIN_RATE       1024   //  bytes/s a body must average (past
                                     //  --idle-timeout) or it is cut

//  ---------------------------------------------------------------------------
//  Actions: what a request does; also the labels of its metrics.

typedef enum {
    A_SUBMIT,                //  POST /v1/jobs/{type}
    A_BULK,                  //  POST /v1/jobs
    A_DAG_SUBMIT,            //  POST /v1/dags
    A_JOB_GET,               //  GET /v1/jobs/{id}
    A_JOB_RESULT,            //  GET /v1/jobs/{id}/result
    A_JOB_CANCEL,            //  DELETE /v1/jobs/{id}
    A_DAG_GET,               //  GET /v1/dags/{id}
    A_DAG_CANCEL,            //  DELETE /v1/dags/{id}
    A_STATS,                 //  GET /v1/stats
    A_HEALTHZ,
    A_READYZ,
    A_METRICS,
    A_OTHER,                 //  unknown route or method
    A_COUNT_
} s_action_t;

static const struct {
    const char *method, *route;
} s_labels [A_COUNT_] = {
    { "POST", "/v1/jobs/{type}" }, { "POST", "/v1/jobs" }, { "POST", "/v1/dags" },
    { "GET", "/v1/jobs/{id}" }, { "GET", "/v1/jobs/{id}/result" },
    { "DELETE", "/v1/jobs/{id}" }, { "GET", "/v1/dags/{id}" },
    { "DELETE", "/v1/dags/{id}" }, { "GET", "/v1/stats" }, { "GET", "/healthz" },
    { "GET", "/readyz" }, { "GET", "/metrics" }, { "other", "other" }
};

//  Statuses counted by their own label; anything else is "other".
static const unsigned s_statuses [] = {
    200, 202, 400, 401, 403, 404, 405, 409, 410, 413, 422, 424, 429, 431,
    500, 503, 507
};
#define S_NSTATUS (sizeof s_statuses / sizeof s_statuses [0] + 1)

//  Request duration buckets, seconds (?wait requests may take minutes).
static const double s_bounds [] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    10, 30, 60, 300
};
#define S_NBOUNDS (sizeof s_bounds / sizeof s_bounds [0])

typedef struct {
    atomic_uint_fast64_t requests [A_COUNT_][S_NSTATUS];
    atomic_uint_fast64_t buckets [A_COUNT_][S_NBOUNDS + 1];  //  not cumulative
    atomic_uint_fast64_t sum_us [A_COUNT_];
    atomic_uint_fast64_t slow_cut;       //  connections cut by s_reap
    atomic_uint_fast64_t connections;    //  open now
    atomic_uint_fast64_t accepted_jobs;  //  jobs acknowledged through this gateway
} s_metrics_t;

//  ---------------------------------------------------------------------------
//  Connections (socket context) and requests (con_cls)

typedef struct _s_conn_t s_conn_t;
struct _s_conn_t {
    int fd;
    atomic_bool busy;                //  a request head is complete
    atomic_uint_fast64_t since;      //  monotonic ms: opened or last request
                                     //  done; while busy, head complete
    atomic_bool reading;             //  its body is arriving (while busy)
    atomic_uint_fast64_t body_bytes; //  of the body so far
    bool cut;                        //  shut down by s_reap
    s_conn_t *prev, *next;           //  in dq_gateway_t.conns
};

typedef enum {
    S_REQ_READING,           //  head parsed, body coming
    S_REQ_HELD,              //  suspended, op with the link
    S_REQ_ANSWERED,          //  op done, connection resumed
    S_REQ_DONE               //  response queued
} s_req_state_t;

typedef struct {
    dq_gateway_t *gw;
    struct MHD_Connection *con;
    s_conn_t *conn;          //  its connection's record, or NULL
    s_action_t action;       //  what it does; its metrics labels
    s_req_state_t state;     //  written by the link thread only while HELD
    uint64_t start_us;       //  monotonic: when its head was complete
    unsigned status;         //  response status, for metrics (0 = none)
    char arg [S_PATH_MAX];   //  type or id from the path, checked by its route
    //  Body
    char *body;              //  the payload (POST routes), or NULL
    size_t body_size, body_cap;
    bool keep_body;          //  POST routes keep it; others only count it
    //  POST /v1/jobs/{type}
    dq_jobspec_t spec;       //  the job; its strings point into this request
    dq_dep_t *deps;          //  from depends_on
    uint32_t ndeps, deps_cap;
    char key [S_KEY_MAX + 1];          //  Idempotency-Key
    char ctype [S_CTYPE_MAX + 1];      //  Content-Type, kept with the job
    unsigned options_seen;   //  bit i: s_single_options [i] was given
    char bad [400];          //  first bad option, for a 400
    int bad_status;          //  400, 403 or 413
    //  POST /v1/jobs and /v1/dags
    json_t *json;            //  the bulk document (specs point into it)
    dq_jobspec_t *specs;     //  bulk jobs
    uint32_t nspecs;
    dq_dagdoc_t *doc;        //  the DAG document
    void **allocs;           //  freed with the request
    uint32_t nallocs, allocs_cap;
    dq_gwop_t op;            //  what the link does for it
} s_req_t;

struct _dq_gateway_t {
    dq_gateway_cfg_t cfg;
    struct MHD_Daemon *daemon;
    dq_gwlink_t *link;       //  the broker I/O thread
    int listen_fd;           //  ours; libmicrohttpd accepts on it
    uint16_t port;           //  bound port
    char **tokens;           //  --token-file, or none
    size_t *token_lens;
    uint32_t ntokens;
    char **types;            //  --allow-types, or NULL
    uint32_t ntypes;
    char *tls_cert, *tls_key;          //  PEM text
    pthread_mutex_t conns_lock;        //  guards conns and their cut flags
    s_conn_t *conns;         //  open connections, for s_reap
    s_metrics_t metrics;
    volatile sig_atomic_t stopping;    //  set by signals and dq_gateway_stop
};

static dq_gateway_t *s_signal_target;

//  ---------------------------------------------------------------------------
//  A growing text buffer: response text (JSON from jansson, /metrics).

typedef struct {
    char *data;
    size_t size, cap;
} s_buf_t;

static void
s_buf_need (s_buf_t *b, size_t n)
{
    if (b->size + n + 1 <= b->cap)
        return;
    size_t cap = b->cap? b->cap: 256;
    while (cap < b->size + n + 1)
        cap *= 2;
    b->data = realloc (b->data, cap);
    assert (b->data);
    b->cap = cap;
}

static void
s_buf_add (s_buf_t *b, const char *s, size_t n)
{
    s_buf_need (b, n);
    memcpy (b->data + b->size, s, n);
    b->size += n;
    b->data [b->size] = 0;
}

static void
s_buf_str (s_buf_t *b, const char *s)
{
    s_buf_add (b, s, strlen (s));
}

static void
s_buf_fmt (s_buf_t *b, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    char small [256];
    int n = vsnprintf (small, sizeof small, fmt, args);
    va_end (args);
    if (n < 0)
        return;
    if ((size_t) n < sizeof small) {
        s_buf_add (b, small, (size_t) n);
        return;
    }
    s_buf_need (b, (size_t) n);
    va_start (args, fmt);
    vsnprintf (b->data + b->size, (size_t) n + 1, fmt, args);
    va_end (args);
    b->size += (size_t) n;
}

//  ---------------------------------------------------------------------------
//  JSON values for responses (jansson). Every builder returns NULL only when
//  out of memory, and s_json_set/s_json_push then drop the whole container,
//  so a document is complete or NULL (and a NULL document is no response).

//  Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid.
static size_t
s_utf8_len (const unsigned char *s, size_t left)
{
    unsigned char c = s [0];
    size_t n = c < 0x80? 1: c >= 0xC2 && c <= 0xDF? 2: c >= 0xE0 && c <= 0xEF? 3:
               c >= 0xF0 && c <= 0xF4? 4: 0;
    if (n == 0 || n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s [i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s [1] < 0xA0) || (c == 0xED && s [1] > 0x9F)
    ||  (c == 0xF0 && s [1] < 0x90) || (c == 0xF4 && s [1] > 0x8F))
        return 0;
    return n;
}

//  A JSON string of len bytes. json_stringn refuses invalid UTF-8, and the
//  text here can be any bytes (paths and query values quoted in messages,
//  names and errors from the broker), so each byte that does not start a
//  valid sequence becomes U+FFFD first.
static json_t *
s_json_text (const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t valid = 0, n;
    while (valid < len && (n = s_utf8_len (p + valid, len - valid)) > 0)
        valid += n;
    if (valid == len)
        return json_stringn_nocheck (s, len);
    if (len > SIZE_MAX / 3)
        return NULL;
    char *clean = malloc (len * 3);      //  one byte becomes at most three
    if (!clean)
        return NULL;
    memcpy (clean, s, valid);
    size_t size = valid;
    for (size_t i = valid; i < len; ) {
        n = s_utf8_len (p + i, len - i);
        if (n) {
            memcpy (clean + size, s + i, n);
            size += n;
            i += n;
        }
        else {
            memcpy (clean + size, "\xEF\xBF\xBD", 3);
            size += 3;
            i++;
        }
    }
    json_t *value = json_stringn_nocheck (clean, size);
    free (clean);
    return value;
}

//  A JSON string, or null for NULL.
static json_t *
s_json_str (const char *s)
{
    return s? s_json_text (s, strlen (s)): json_null ();
}

//  A JSON integer of an unsigned count (json_int_t is signed).
static json_t *
s_json_u64 (uint64_t value)
{
    return json_integer (value > INT64_MAX? INT64_MAX: (json_int_t) value);
}

//  object[key] = value, taking value; key is a literal. On failure the
//  object is dropped: returns the object or NULL.
static json_t *
s_json_set (json_t *object, const char *key, json_t *value)
{
    if (json_object_set_new_nocheck (object, key, value)) {
        json_decref (object);
        return NULL;
    }
    return object;
}

//  The same with a key of any text (sanitised like s_json_str; NULL is "").
static json_t *
s_json_set_text (json_t *object, const char *key, json_t *value)
{
    json_t *name = s_json_text (key? key: "", key? strlen (key): 0);
    if (!name || json_object_setn_new_nocheck (object, json_string_value (name),
                                               json_string_length (name), value)) {
        if (!name)
            json_decref (value);
        json_decref (name);
        json_decref (object);
        return NULL;
    }
    json_decref (name);
    return object;
}

//  Append value to array, taking value. On failure the array is dropped:
//  returns the array or NULL.
static json_t *
s_json_push (json_t *array, json_t *value)
{
    if (json_array_append_new (array, value)) {
        json_decref (array);
        return NULL;
    }
    return array;
}

//  "<key>_ms": a unix-ms time and "<key>_at": its ISO 8601 form, or both
//  null for 0.
static json_t *
s_json_set_time (json_t *object, const char *key, uint64_t ms)
{
    char name_ms [32], name_at [32];
    snprintf (name_ms, sizeof name_ms, "%s_ms", key);
    snprintf (name_at, sizeof name_at, "%s_at", key);
    if (!ms) {
        object = s_json_set (object, name_ms, json_null ());
        return s_json_set (object, name_at, json_null ());
    }
    time_t secs = (time_t) (ms / 1000);
    struct tm tm;
    char iso [64] = "", at [80];
    if (gmtime_r (&secs, &tm))
        strftime (iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (at, sizeof at, "%s.%03uZ", iso, (unsigned) (ms % 1000));
    object = s_json_set (object, name_ms, s_json_u64 (ms));
    return s_json_set (object, name_at, json_string_nocheck (at));
}

//  "<key>": "<prefix><id><suffix>" (ids are at most 64 bytes).
static json_t *
s_json_set_url (json_t *object, const char *key, const char *prefix, const char *id,
                const char *suffix)
{
    char url [256];
    snprintf (url, sizeof url, "%s%s%s", prefix, id? id: "", suffix);
    return s_json_set (object, key, s_json_str (url));
}

//  ---------------------------------------------------------------------------
//  Responses

static uint64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

//  Queue a response and drop our reference to it.
static enum MHD_Result
s_queue (s_req_t *req, unsigned status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    req->status = status;
    req->state = S_REQ_DONE;
    enum MHD_Result rc = MHD_queue_response (req->con, status, resp);
    MHD_destroy_response (resp);
    return rc;
}

//  A response owning the buffer's text.
static struct MHD_Response *
s_response_buf (s_buf_t *b, const char *ctype)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer (
        b->size, b->data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free (b->data);
        return NULL;
    }
    b->data = NULL;
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return resp;
}

static int
s_json_dump_buf (const char *text, size_t size, void *data)
{
    s_buf_add ((s_buf_t *) data, text, size);
    return 0;
}

//  A response with doc's compact text, taking doc; NULL when doc is NULL
//  (out of memory). jansson writes straight into the buffer the response
//  then owns: one pass, no copy.
static struct MHD_Response *
s_response_json (json_t *doc)
{
    s_buf_t b = { 0 };
    int rc = doc? json_dump_callback (doc, s_json_dump_buf, &b, JSON_COMPACT): -1;
    json_decref (doc);
    if (rc || !b.data) {
        free (b.data);
        return NULL;
    }
    return s_response_buf (&b, "application/json");
}

//  Answer with a JSON document, taking it.
static enum MHD_Result
s_json_reply (s_req_t *req, unsigned status, json_t *doc)
{
    return s_queue (req, status, s_response_json (doc));
}

//  An error: {"error": {"code": ..., "message": ...}}, then extra's fields if
//  extra is given (taken). retry_s > 0 adds Retry-After; allow (405) adds
//  Allow; 401 adds WWW-Authenticate.
static enum MHD_Result
s_error_ex (s_req_t *req, unsigned status, const char *code, uint32_t retry_s,
            const char *allow, json_t *extra, const char *fmt, ...)
{
    char message [1024];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    json_t *error = json_object ();
    error = s_json_set (error, "code", s_json_str (code));
    error = s_json_set (error, "message", s_json_str (message));
    if (extra && json_object_update (error, extra)) {
        json_decref (error);
        error = NULL;
    }
    json_decref (extra);
    struct MHD_Response *resp = s_response_json (s_json_set (json_object (), "error",
                                                             error));
    if (!resp)
        return MHD_NO;
    if (retry_s) {
        char value [16];
        snprintf (value, sizeof value, "%u", retry_s);
        MHD_add_response_header (resp, MHD_HTTP_HEADER_RETRY_AFTER, value);
    }
    if (allow)
        MHD_add_response_header (resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == 401)
        MHD_add_response_header (resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                 "Bearer realm=\"dagq\"");
    return s_queue (req, status, resp);
}

#define s_error(req, status, code, ...) \
    s_error_ex (req, status, code, 0, NULL, NULL, __VA_ARGS__)

//  dq_err_t -> HTTP status: the one table. A submission naming an unknown
//  parent is the request's fault (400), not a missing resource (404).
static unsigned
s_err_status (int err, bool submission)
{
    switch (err) {
        case DQ_ERR_INVALID:        return 400;
        case DQ_ERR_NOT_FOUND:      return submission? 400: 404;
        case DQ_ERR_BUSY:           return 429;
        case DQ_ERR_CYCLE:          return 400;
        case DQ_ERR_TOO_BIG:        return 413;
        case DQ_ERR_UNAVAILABLE:    return 503;
        case DQ_ERR_NOT_FINISHED:   return 409;
        case DQ_ERR_PROTOCOL:       return 400;
        case DQ_ERR_STORE_FULL:     return 507;
        case DQ_ERR_INTERNAL:
        default:                    return 500;
    }
}

static uint32_t
s_retry_after (int err, uint32_t retry_ms)
{
    if (err != DQ_ERR_BUSY && err != DQ_ERR_UNAVAILABLE && err != DQ_ERR_STORE_FULL)
        return 0;
    uint32_t s = (retry_ms + 999) / 1000;
    return s? s: 1;
}

//  Answer an op that failed at the broker (or on the way to it).
static enum MHD_Result
s_broker_error (s_req_t *req, bool submission)
{
    dq_gwop_t *op = &req->op;
    const char *code = dq_err_str (op->err);
    return s_error_ex (req, s_err_status (op->err, submission), code,
                       s_retry_after (op->err, op->retry_ms), NULL, NULL, "%s",
                       *op->message? op->message: code);
}

//  A terminal job that did not succeed: 422 failed, 410 cancelled,
//  424 skipped, with the job's error.
static enum MHD_Result
s_job_error (s_req_t *req, const char *id, int state, const char *error,
             const char *skipped_by)
{
    json_t *extra = json_object ();
    extra = s_json_set (extra, "id", s_json_str (id));
    extra = s_json_set (extra, "state", s_json_str (dq_state_str (state)));
    if (skipped_by)
        extra = s_json_set (extra, "skipped_by", s_json_str (skipped_by));
    if (!extra)
        return MHD_NO;          //  out of memory: no partial error
    if (state == DQ_STATE_CANCELLED)
        return s_error_ex (req, 410, "job_cancelled", 0, NULL, extra, "%s",
                           error? error: "cancelled");
    if (state == DQ_STATE_SKIPPED)
        return s_error_ex (req, 424, "job_skipped", 0, NULL, extra, "%s",
                           error? error: "skipped: a parent did not succeed");
    return s_error_ex (req, 422, "job_failed", 0, NULL, extra, "%s",
                       error? error: "failed");
}

static void
s_free_msg (void *cls)
{
    dq_msg_t *msg = cls;
    dq_msg_destroy (&msg);
}

//  200 with a job's output as the body (the OUTPUT reply, taken over by the
//  response: no copy), or the job's error.
static enum MHD_Result
s_output_reply (s_req_t *req, const char *id)
{
    dq_msg_t *out = req->op.reply;
    if (out->state != DQ_STATE_SUCCEEDED)
        return s_job_error (req, id, out->state, out->error, NULL);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls (
        out->output_size, (void *) (out->output? out->output: ""), s_free_msg, out);
    if (!resp)
        return MHD_NO;
    req->op.reply = NULL;       //  the response frees it
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                             out->content_type && *out->content_type?
                             out->content_type: "application/octet-stream");
    MHD_add_response_header (resp, "X-Dagq-Job-Id", id);
    return s_queue (req, 200, resp);
}

//  ---------------------------------------------------------------------------
//  Validation helpers

static bool
s_valid_type (const char *s)
{
    size_t n = strlen (s);
    if (n == 0 || n > DQ_PROTO_TYPE_MAX)
        return false;
    for (; *s; s++)
        if (!isalnum ((unsigned char) *s) && !strchr ("_.:-", *s))
            return false;
    return true;
}

static bool
s_is_dag_id (const char *s)
{
    size_t n = strlen (s);
    const char *dash = strrchr (s, '-');
    if (n > 64 || !dash || dash == s || dash [1] != 'd' || !dash [2])
        return false;
    for (const char *p = dash + 2; *p; p++)
        if (!isdigit ((unsigned char) *p))
            return false;
    for (const char *p = s; p < dash; p++)
        if (!isalnum ((unsigned char) *p) && !strchr ("_.:-", *p))
            return false;
    return true;
}

//  Visible ASCII (and spaces inside when spaces is true), 1..max bytes.
static bool
s_valid_text (const char *s, size_t max, bool spaces)
{
    size_t n = strlen (s);
    if (n == 0 || n > max)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char) *s;
        if (c > 0x7E || c < 0x20 || (c == ' ' && !spaces))
            return false;
    }
    return true;
}

static bool
s_type_allowed (dq_gateway_t *self, const char *type)
{
    if (!self->types)
        return true;
    for (uint32_t i = 0; i < self->ntypes; i++)
        if (!strcmp (self->types [i], type))
            return true;
    return false;
}

static void
s_track (s_req_t *req, void *p)
{
    if (req->nallocs == req->allocs_cap) {
        req->allocs_cap = req->allocs_cap? req->allocs_cap * 2: 8;
        req->allocs = realloc (req->allocs, req->allocs_cap * sizeof *req->allocs);
        assert (req->allocs);
    }
    req->allocs [req->nallocs++] = p;
}

//  Constant-time comparison of the presented token with every configured
//  one (no early exit on a match either).
static bool
s_authorized (dq_gateway_t *self, struct MHD_Connection *con)
{
    if (!self->ntokens)
        return true;
    const char *auth = MHD_lookup_connection_value (con, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (!auth || strncasecmp (auth, "Bearer ", 7))
        return false;
    const char *token = auth + 7;
    while (*token == ' ')
        token++;
    size_t len = strlen (token);
    while (len && token [len - 1] == ' ')
        len--;
    if (len == 0 || len > S_TOKEN_MAX)
        return false;
    unsigned ok = 0;
    for (uint32_t i = 0; i < self->ntokens; i++) {
        unsigned diff = self->token_lens [i] != len;
        const char *t = self->tokens [i];
        for (size_t k = 0; k < len; k++)
            diff |= (unsigned char) token [k]
                  ^ (unsigned char) (k < self->token_lens [i]? t [k]: 0);
        ok |= diff == 0;
    }
    return ok != 0;
}

//  Decode standard base64 (padding optional, whitespace skipped). Returns
//  0 and the size, or -1.
static int
s_base64_decode (const char *s, size_t len, uint8_t *out, size_t *out_size)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        int v;
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+') v = 62;
        else if (c == '/') v = 63;
        else if (c == '=') { pad++; continue; }
        else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        else return -1;
        if (pad)
            return -1;           //  data after padding
        acc = (acc << 6) | (uint32_t) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [n++] = (uint8_t) (acc >> bits);
        }
    }
    //  Leftover bits must be zero padding of a complete quantum.
    if (bits >= 6 || (acc & ((1u << bits) - 1)) || pad > 2)
        return -1;
    *out_size = n;
    return 0;
}

//  ---------------------------------------------------------------------------
//  Routing

static int
s_hex_digit (char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

//  Decodes %HH in paths and query values as libmicrohttpd's own does, except
//  %00, which stays as it is: decoded, it would cut the C string short, so
//  POST /v1/jobs/ec%00ho would submit type "ec" and ?priority=1%00x be 1.
//  Kept, it fails the value's check like any other bad character.
static size_t
s_unescape (void *cls, struct MHD_Connection *con, char *s)
{
    (void) cls;
    (void) con;
    char *out = s;
    for (const char *in = s; *in; ) {
        int hi, lo;
        if (in [0] == '%' && (hi = s_hex_digit (in [1])) >= 0
        &&  (lo = s_hex_digit (in [2])) >= 0 && (hi | lo)) {
            *out++ = (char) (hi << 4 | lo);
            in += 3;
        }
        else
            *out++ = *in++;
    }
    *out = 0;
    return (size_t) (out - s);
}

//  Find the action for a path and method. Returns A_OTHER with *status 404
//  or 405 (and *allow) when there is none; copies the path's parameter
//  into arg.
static s_action_t
s_route (const char *url, const char *method, char *arg, size_t arg_size,
         unsigned *status, const char **allow)
{
    bool get = !strcmp (method, "GET") || !strcmp (method, "HEAD");
    bool post = !strcmp (method, "POST");
    bool del = !strcmp (method, "DELETE");
    *status = 404;
    *allow = NULL;
    char path [S_PATH_MAX];
    size_t n = strlen (url);
    if (n >= sizeof path)
        return A_OTHER;
    memcpy (path, url, n + 1);
    if (n > 1 && path [n - 1] == '/')
        path [--n] = 0;          //  one trailing slash is forgiven
    //  Split into at most 4 segments.
    char *seg [5] = { NULL };
    int nseg = 0;
    char *save = NULL;
    for (char *s = strtok_r (path, "/", &save); s; s = strtok_r (NULL, "/", &save)) {
        if (nseg == 5)
            return A_OTHER;
        seg [nseg++] = s;
    }
    #define ROUTE(cond, action) do { if (cond) return action; } while (0)
    #define NOT_ALLOWED(methods) do { *status = 405; *allow = methods; return A_OTHER; } while (0)
    if (nseg == 1) {
        if (!strcmp (seg [0], "healthz")) { ROUTE (get, A_HEALTHZ); NOT_ALLOWED ("GET, HEAD"); }
        if (!strcmp (seg [0], "readyz"))  { ROUTE (get, A_READYZ);  NOT_ALLOWED ("GET, HEAD"); }
        if (!strcmp (seg [0], "metrics")) { ROUTE (get, A_METRICS); NOT_ALLOWED ("GET, HEAD"); }
        return A_OTHER;
    }
    if (nseg < 2 || strcmp (seg [0], "v1"))
        return A_OTHER;
    if (nseg == 2) {
        if (!strcmp (seg [1], "jobs"))  { ROUTE (post, A_BULK); NOT_ALLOWED ("POST"); }
        if (!strcmp (seg [1], "dags"))  { ROUTE (post, A_DAG_SUBMIT); NOT_ALLOWED ("POST"); }
        if (!strcmp (seg [1], "stats")) { ROUTE (get, A_STATS); NOT_ALLOWED ("GET, HEAD"); }
        return A_OTHER;
    }
    snprintf (arg, arg_size, "%s", seg [2]);   //  fits: arg_size is S_PATH_MAX
    if (nseg == 3 && !strcmp (seg [1], "jobs")) {
        ROUTE (post, A_SUBMIT);
        ROUTE (get, A_JOB_GET);
        ROUTE (del, A_JOB_CANCEL);
        NOT_ALLOWED ("GET, HEAD, POST, DELETE");
    }
    if (nseg == 4 && !strcmp (seg [1], "jobs") && !strcmp (seg [3], "result")) {
        ROUTE (get, A_JOB_RESULT);
        NOT_ALLOWED ("GET, HEAD");
    }
    if (nseg == 3 && !strcmp (seg [1], "dags")) {
        ROUTE (get, A_DAG_GET);
        ROUTE (del, A_DAG_CANCEL);
        NOT_ALLOWED ("GET, HEAD, DELETE");
    }
    #undef ROUTE
    #undef NOT_ALLOWED
    return A_OTHER;
}

//  ---------------------------------------------------------------------------
//  POST /v1/jobs/{type}: options from the query and headers

static void
s_bad (s_req_t *req, const char *fmt, ...)
{
    if (*req->bad)
        return;                  //  the first problem is the one reported
    va_list args;
    va_start (args, fmt);
    vsnprintf (req->bad, sizeof req->bad, fmt, args);
    va_end (args);
    req->bad_status = 400;
}

static int
s_add_dep (s_req_t *req, const char *id, size_t len)
{
    char buf [DQ_GWLINK_ID_MAX];
    if (len == 0)
        return 0;                //  "a,,b" or a trailing comma
    if (len >= sizeof buf) {
        s_bad (req, "depends_on: '%.*s...' is not a job id", 20, id);
        return -1;
    }
    memcpy (buf, id, len);
    buf [len] = 0;
    if (!dq_dagdoc_is_job_id (buf)) {
        s_bad (req, "depends_on: '%s' is not a job id", buf);
        return -1;
    }
    if (req->ndeps == DQ_PROTO_DEPS_MAX) {
        s_bad (req, "depends_on: more than %u dependencies", DQ_PROTO_DEPS_MAX);
        return -1;
    }
    if (req->ndeps == req->deps_cap) {
        req->deps_cap = req->deps_cap? req->deps_cap * 2: 4;
        req->deps = realloc (req->deps, req->deps_cap * sizeof *req->deps);
        assert (req->deps);
    }
    char *copy = strdup (buf);
    assert (copy);
    s_track (req, copy);
    req->deps [req->ndeps++] = (dq_dep_t) { .idx = -1, .id = copy };
    return 0;
}

//  Options that take one value: given twice, which one was meant is unclear.
static const char *const s_single_options [] = {
    "priority", "attempts", "timeout", "delay", "wait"
};

//  Index of key in names (n of them, at most 32), or -1. A name seen
//  before in this request is a 400.
static int
s_option_once (s_req_t *req, const char *key, const char *const *names, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!strcmp (key, names [i])) {
            if (req->options_seen & (1u << i))
                s_bad (req, "query parameter '%s' given more than once", key);
            req->options_seen |= 1u << i;
            return (int) i;
        }
    return -1;
}

static enum MHD_Result
s_on_arg (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void) kind;
    s_req_t *req = cls;
    dq_gateway_t *self = req->gw;
    if (*req->bad)
        return MHD_NO;
    if (!value || !*value) {
        s_bad (req, "query parameter '%s' needs a value", key);
        return MHD_NO;
    }
    s_option_once (req, key, s_single_options,
                   sizeof s_single_options / sizeof s_single_options [0]);
    if (*req->bad)
        return MHD_NO;
    if (!strcmp (key, "priority")) {
        int64_t v;
        if (dq_parse_i64 (value, INT32_MIN, INT32_MAX, &v))
            s_bad (req, "priority must be an integer in [%d, %d], not '%s'",
                   INT32_MIN, INT32_MAX, value);
        req->spec.priority = (int32_t) v;
    }
    else
    if (!strcmp (key, "attempts")) {
        uint64_t v;
        if (dq_parse_u64 (value, 1, 1000, &v))
            s_bad (req, "attempts must be an integer in [1, 1000], not '%s'", value);
        req->spec.attempts = (uint32_t) v;
    }
    else
    if (!strcmp (key, "timeout")) {
        uint64_t ms;
        if (dq_parse_seconds_ms (value, UINT32_MAX / 1000.0, &ms))
            s_bad (req, "timeout must be seconds in [0, %u], not '%s'",
                   UINT32_MAX / 1000, value);
        req->spec.timeout_ms = (uint32_t) ms;
    }
    else
    if (!strcmp (key, "delay")) {
        uint64_t ms;
        if (dq_parse_seconds_ms (value, DQ_DAGDOC_DELAY_MAX_S, &ms))
            s_bad (req, "delay must be seconds in [0, %.0f], not '%s'",
                   DQ_DAGDOC_DELAY_MAX_S, value);
        req->spec.delay_ms = ms;
    }
    else
    if (!strcmp (key, "wait")) {
        uint64_t ms;
        double max_s = self->cfg.max_wait_ms / 1000.0;
        if (dq_parse_seconds_ms (value, max_s, &ms))
            s_bad (req, "wait must be seconds in [0, %g], not '%s'", max_s, value);
        req->op.wait_ms = (uint32_t) ms;
    }
    else
    if (!strcmp (key, "depends_on")) {
        //  Repeatable, and each may list several ids separated by commas.
        const char *p = value;
        while (*p) {
            const char *comma = strchr (p, ',');
            size_t len = comma? (size_t) (comma - p): strlen (p);
            if (s_add_dep (req, p, len))
                break;
            p += len + (comma? 1: 0);
        }
    }
    else
        s_bad (req, "unknown query parameter '%s' (known: priority, attempts, "
               "timeout, delay, depends_on, wait)", key);
    return *req->bad? MHD_NO: MHD_YES;
}

//  GET /v1/dags/{id} options: jobs=false (the counts only, cheap to poll
//  on a big DAG), and offset and limit for one page of the job list.
//  Other parameters are ignored, as on every GET route.
enum { S_DAG_JOBS, S_DAG_OFFSET, S_DAG_LIMIT };
static const char *const s_dag_options [] = { "jobs", "offset", "limit" };

static enum MHD_Result
s_on_dag_arg (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void) kind;
    s_req_t *req = cls;
    int i = s_option_once (req, key, s_dag_options, 3);
    if (i < 0)
        return MHD_YES;
    if (*req->bad)
        return MHD_NO;
    uint64_t v = 0;
    if (!value || !*value)
        s_bad (req, "query parameter '%s' needs a value", key);
    else
    if (i == S_DAG_JOBS) {
        if (strcmp (value, "true") && strcmp (value, "false"))
            s_bad (req, "jobs must be true or false, not '%.64s'", value);
        req->op.summary = !strcmp (value, "false");
    }
    else
    if (i == S_DAG_OFFSET) {
        if (dq_parse_u64 (value, 0, UINT32_MAX, &v))
            s_bad (req, "offset must be an integer in [0, %u], not '%.64s'",
                   UINT32_MAX, value);
        req->op.offset = (uint32_t) v;
    }
    else {
        if (dq_parse_u64 (value, 1, DQ_PROTO_DAG_JOBS_MAX, &v))
            s_bad (req, "limit must be an integer in [1, %u] (jobs a page), not '%.64s'",
                   DQ_PROTO_DAG_JOBS_MAX, value);
        req->op.limit = (uint32_t) v;
    }
    return *req->bad? MHD_NO: MHD_YES;
}

//  Read the options of a single-job submission (before its body).
static void
s_parse_submit (s_req_t *req)
{
    dq_gateway_t *self = req->gw;
    size_t length = strlen (req->arg);
    if (length > DQ_PROTO_TYPE_MAX) {
        s_bad (req, "bad job type: %zu characters, at most %d", length,
               DQ_PROTO_TYPE_MAX);
        return;
    }
    if (!s_valid_type (req->arg)) {
        s_bad (req, "bad job type '%s': 1 to %d characters of A-Z a-z 0-9 _ . : -",
               req->arg, DQ_PROTO_TYPE_MAX);
        return;
    }
    if (!s_type_allowed (self, req->arg)) {
        snprintf (req->bad, sizeof req->bad, "job type '%.*s' is not allowed here "
                  "(--allow-types)", DQ_PROTO_TYPE_MAX, req->arg);
        req->bad_status = 403;
        return;
    }
    req->spec.type = req->arg;
    MHD_get_connection_values (req->con, MHD_GET_ARGUMENT_KIND, s_on_arg, req);
    if (*req->bad)
        return;
    req->spec.deps = req->deps;
    req->spec.ndeps = req->ndeps;
    const char *key = MHD_lookup_connection_value (req->con, MHD_HEADER_KIND,
                                                   "Idempotency-Key");
    if (key) {
        if (!s_valid_text (key, S_KEY_MAX, false)) {
            s_bad (req, "Idempotency-Key must be 1 to %d visible ASCII characters",
                   S_KEY_MAX);
            return;
        }
        snprintf (req->key, sizeof req->key, "%s", key);
        req->spec.key = req->key;
    }
    const char *ctype = MHD_lookup_connection_value (req->con, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ctype && *ctype) {
        if (!s_valid_text (ctype, S_CTYPE_MAX, true)) {
            s_bad (req, "Content-Type must be 1 to %d ASCII characters", S_CTYPE_MAX);
            return;
        }
        snprintf (req->ctype, sizeof req->ctype, "%s", ctype);
        req->spec.content_type = req->ctype;
    }
}

//  ---------------------------------------------------------------------------
//  POST /v1/jobs: the bulk document

static const char *
s_json_kind (const json_t *v)
{
    switch (json_typeof (v)) {
        case JSON_OBJECT:  return "an object";
        case JSON_ARRAY:   return "an array";
        case JSON_STRING:  return "a string";
        case JSON_INTEGER: return "an integer";
        case JSON_REAL:    return "a number";
        case JSON_TRUE:
        case JSON_FALSE:   return "a boolean";
        default:           return "null";
    }
}

//  A JSON string usable as C text (no NUL inside), or NULL.
static const char *
s_json_cstr (const json_t *v)
{
    const char *s = json_string_value (v);
    return s && strlen (s) == json_string_length (v)? s: NULL;
}

//  Seconds (a JSON number >= 0, at most max_s) into ms.
static int
s_json_seconds (const json_t *v, double max_s, uint64_t *ms)
{
    if (!json_is_number (v))
        return -1;
    double s = json_number_value (v);
    if (!(s >= 0) || s > max_s)
        return -1;
    *ms = (uint64_t) llround (s * 1000.0);
    return 0;
}

static int
s_bulk_dep (s_req_t *req, uint32_t i, uint32_t k, uint32_t njobs, const json_t *d,
            dq_dep_t *dep)
{
    const json_t *target = d;
    dep->idx = -1;
    dep->run_on_failure = false;
    if (json_is_object (d)) {
        const char *field;
        json_t *value;
        target = NULL;
        json_object_foreach ((json_t *) d, field, value) {
            if (!strcmp (field, "id") || !strcmp (field, "index"))
                target = value;
            else
            if (!strcmp (field, "on_failure")) {
                const char *s = s_json_cstr (value);
                if (!s || (strcmp (s, "run") && strcmp (s, "skip"))) {
                    s_bad (req, "jobs[%u]: depends_on[%u]: on_failure must be \"run\" "
                           "or \"skip\"", i, k);
                    return -1;
                }
                dep->run_on_failure = !strcmp (s, "run");
            }
            else {
                s_bad (req, "jobs[%u]: depends_on[%u]: unknown field '%s' (known: id, "
                       "index, on_failure)", i, k, field);
                return -1;
            }
        }
        if (!target) {
            s_bad (req, "jobs[%u]: depends_on[%u]: needs 'id' or 'index'", i, k);
            return -1;
        }
    }
    if (json_is_string (target)) {
        const char *id = s_json_cstr (target);
        if (!id || !dq_dagdoc_is_job_id (id)) {
            s_bad (req, "jobs[%u]: depends_on[%u]: '%.80s' is not a job id", i, k,
                   json_string_value (target));
            return -1;
        }
        dep->id = id;
        return 0;
    }
    if (json_is_integer (target)) {
        json_int_t idx = json_integer_value (target);
        if (idx < 0 || idx >= (json_int_t) njobs || idx == (json_int_t) i) {
            s_bad (req, "jobs[%u]: depends_on[%u]: index %lld is not another job of "
                   "this request", i, k, (long long) idx);
            return -1;
        }
        dep->idx = (int32_t) idx;
        return 0;
    }
    s_bad (req, "jobs[%u]: depends_on[%u] must be a job id (string), an index into "
           "jobs (integer) or an object, not %s", i, k, s_json_kind (target));
    return -1;
}

static int
s_bulk_job (s_req_t *req, uint32_t i, uint32_t njobs, json_t *job, dq_jobspec_t *spec)
{
    dq_gateway_t *self = req->gw;
    if (!json_is_object (job)) {
        s_bad (req, "jobs[%u] must be an object, not %s", i, s_json_kind (job));
        return -1;
    }
    const char *field;
    json_t *v;
    bool has_payload = false;
    json_object_foreach (job, field, v) {
        if (!strcmp (field, "type")) {
            const char *type = s_json_cstr (v);
            if (!type || !s_valid_type (type)) {
                s_bad (req, "jobs[%u]: type must be 1 to %d characters of A-Z a-z 0-9 "
                       "_ . : -", i, DQ_PROTO_TYPE_MAX);
                return -1;
            }
            if (!s_type_allowed (self, type)) {
                snprintf (req->bad, sizeof req->bad, "jobs[%u]: job type '%s' is not "
                          "allowed here (--allow-types)", i, type);
                req->bad_status = 403;
                return -1;
            }
            spec->type = type;
        }
        else
        if (!strcmp (field, "payload") || !strcmp (field, "payload_text")
        ||  !strcmp (field, "payload_base64")) {
            if (has_payload) {
                s_bad (req, "jobs[%u]: give only one of payload, payload_text and "
                       "payload_base64", i);
                return -1;
            }
            has_payload = true;
            if (!strcmp (field, "payload")) {
                char *text = json_dumps (v, JSON_COMPACT | JSON_ENCODE_ANY);
                if (!text) {
                    s_bad (req, "jobs[%u]: payload cannot be encoded", i);
                    return -1;
                }
                s_track (req, text);
                spec->payload = text;
                spec->payload_size = strlen (text);
            }
            else
            if (!json_is_string (v)) {
                s_bad (req, "jobs[%u]: %s must be a string, not %s", i, field,
                       s_json_kind (v));
                return -1;
            }
            else
            if (!strcmp (field, "payload_text")) {
                spec->payload = json_string_value (v);
                spec->payload_size = json_string_length (v);
            }
            else {
                size_t len = json_string_length (v);
                uint8_t *bin = malloc (len / 4 * 3 + 3);
                assert (bin);
                s_track (req, bin);
                size_t size;
                if (s_base64_decode (json_string_value (v), len, bin, &size)) {
                    s_bad (req, "jobs[%u]: payload_base64 is not valid base64", i);
                    return -1;
                }
                spec->payload = bin;
                spec->payload_size = size;
            }
        }
        else
        if (!strcmp (field, "priority")) {
            json_int_t p = json_integer_value (v);
            if (!json_is_integer (v) || p < INT32_MIN || p > INT32_MAX) {
                s_bad (req, "jobs[%u]: priority must be an integer in [%d, %d]", i,
                       INT32_MIN, INT32_MAX);
                return -1;
            }
            spec->priority = (int32_t) p;
        }
        else
        if (!strcmp (field, "attempts")) {
            json_int_t a = json_integer_value (v);
            if (!json_is_integer (v) || a < 1 || a > 1000) {
                s_bad (req, "jobs[%u]: attempts must be an integer in [1, 1000]", i);
                return -1;
            }
            spec->attempts = (uint32_t) a;
        }
        else
        if (!strcmp (field, "timeout")) {
            uint64_t ms;
            if (s_json_seconds (v, UINT32_MAX / 1000.0, &ms)) {
                s_bad (req, "jobs[%u]: timeout must be seconds in [0, %u]", i,
                       UINT32_MAX / 1000);
                return -1;
            }
            spec->timeout_ms = (uint32_t) ms;
        }
        else
        if (!strcmp (field, "delay")) {
            uint64_t ms;
            if (s_json_seconds (v, DQ_DAGDOC_DELAY_MAX_S, &ms)) {
                s_bad (req, "jobs[%u]: delay must be seconds in [0, %.0f]", i,
                       DQ_DAGDOC_DELAY_MAX_S);
                return -1;
            }
            spec->delay_ms = ms;
        }
        else
        if (!strcmp (field, "key")) {
            const char *key = s_json_cstr (v);
            if (!key || !s_valid_text (key, S_KEY_MAX, false)) {
                s_bad (req, "jobs[%u]: key must be 1 to %d visible ASCII characters",
                       i, S_KEY_MAX);
                return -1;
            }
            spec->key = key;
        }
        else
        if (!strcmp (field, "content_type")) {
            const char *ct = s_json_cstr (v);
            if (!ct || !s_valid_text (ct, S_CTYPE_MAX, true)) {
                s_bad (req, "jobs[%u]: content_type must be 1 to %d ASCII characters",
                       i, S_CTYPE_MAX);
                return -1;
            }
            spec->content_type = ct;
        }
        else
        if (!strcmp (field, "depends_on")) {
            if (!json_is_array (v)) {
                s_bad (req, "jobs[%u]: depends_on must be an array, not %s", i,
                       s_json_kind (v));
                return -1;
            }
            size_t n = json_array_size (v);
            if (n > DQ_PROTO_DEPS_MAX) {
                s_bad (req, "jobs[%u]: more than %u dependencies", i, DQ_PROTO_DEPS_MAX);
                return -1;
            }
            dq_dep_t *deps = calloc (n + 1, sizeof *deps);
            assert (deps);
            s_track (req, deps);
            for (size_t k = 0; k < n; k++)
                if (s_bulk_dep (req, i, (uint32_t) k, njobs, json_array_get (v, k),
                                &deps [k]))
                    return -1;
            spec->deps = deps;
            spec->ndeps = (uint32_t) n;
        }
        else {
            s_bad (req, "jobs[%u]: unknown field '%s' (known: type, payload, "
                   "payload_text, payload_base64, priority, attempts, timeout, delay, "
                   "key, content_type, depends_on)", i, field);
            return -1;
        }
    }
    if (!spec->type) {
        s_bad (req, "jobs[%u]: type is missing", i);
        return -1;
    }
    return 0;
}

//  Parse the body of POST /v1/jobs. Returns 0, or -1 with req->bad set
//  (req->bad_status 400, 403 or 413).
static int
s_parse_bulk (s_req_t *req)
{
    dq_gateway_t *self = req->gw;
    json_error_t jerr;
    req->json = json_loadb (req->body? req->body: "", req->body_size,
                            JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!req->json) {
        s_bad (req, "malformed JSON at line %d, column %d: %s", jerr.line,
               jerr.column, jerr.text);
        return -1;
    }
    if (!json_is_object (req->json)) {
        s_bad (req, "the body must be a JSON object {\"jobs\": [...]}, not %s",
               s_json_kind (req->json));
        return -1;
    }
    const char *field;
    json_t *v, *jobs = NULL;
    json_object_foreach (req->json, field, v) {
        if (!strcmp (field, "jobs"))
            jobs = v;
        else {
            s_bad (req, "unknown field '%s' (known: jobs)", field);
            return -1;
        }
    }
    if (!json_is_array (jobs) || json_array_size (jobs) == 0) {
        s_bad (req, "'jobs' must be a non-empty array");
        return -1;
    }
    size_t n = json_array_size (jobs);
    if (n > self->cfg.max_bulk) {
        s_bad (req, "%zu jobs in one request; the limit is %u (--max-bulk)", n,
               self->cfg.max_bulk);
        req->bad_status = 413;
        return -1;
    }
    req->specs = calloc (n, sizeof *req->specs);
    assert (req->specs);
    req->nspecs = (uint32_t) n;
    for (size_t i = 0; i < n; i++)
        if (s_bulk_job (req, (uint32_t) i, (uint32_t) n, json_array_get (jobs, i),
                        &req->specs [i]))
            return -1;
    return 0;
}

//  ---------------------------------------------------------------------------
//  JSON of broker records

static json_t *
s_jobinfo_json (const dq_jobinfo_t *info)
{
    json_t *o = json_object ();
    o = s_json_set (o, "id", s_json_str (info->id));
    o = s_json_set (o, "type", s_json_str (info->type));
    o = s_json_set (o, "name", s_json_str (info->name));
    o = s_json_set (o, "dag_id", s_json_str (info->dag_id));
    o = s_json_set (o, "state", s_json_str (dq_state_str (info->state)));
    o = s_json_set (o, "terminal", json_boolean (dq_state_is_terminal (info->state)));
    o = s_json_set (o, "priority", json_integer (info->priority));
    o = s_json_set (o, "attempts", s_json_u64 (info->attempts));
    o = s_json_set (o, "max_attempts", s_json_u64 (info->max_attempts));
    o = s_json_set (o, "worker", s_json_str (info->worker));
    o = s_json_set_time (o, "created", info->created_ms);
    o = s_json_set_time (o, "started", info->started_ms);
    o = s_json_set_time (o, "finished", info->finished_ms);
    o = s_json_set (o, "error", s_json_str (info->error));
    o = s_json_set (o, "skipped_by", s_json_str (info->skipped_by));
    o = s_json_set (o, "output_size", s_json_u64 (info->output_size));
    json_t *parents = json_array ();
    for (uint32_t i = 0; i < info->nparents; i++) {
        json_t *parent = json_object ();
        parent = s_json_set (parent, "id", s_json_str (info->parent_ids [i]));
        parent = s_json_set (parent, "state",
                             s_json_str (dq_state_str (info->parent_states [i])));
        parents = s_json_push (parents, parent);
    }
    o = s_json_set (o, "parents", parents);
    o = s_json_set_url (o, "status_url", "/v1/jobs/", info->id, "");
    return s_json_set_url (o, "result_url", "/v1/jobs/", info->id, "/result");
}

static json_t *
s_daginfo_json (const dq_daginfo_t *d)
{
    json_t *dag = json_object ();
    dag = s_json_set (dag, "id", s_json_str (d->id));
    dag = s_json_set (dag, "name", s_json_str (d->name));
    dag = s_json_set (dag, "state", s_json_str (dq_state_str (d->state)));
    dag = s_json_set (dag, "terminal", json_boolean (d->state != DQ_STATE_RUNNING));
    dag = s_json_set (dag, "total", s_json_u64 (d->total));
    dag = s_json_set (dag, "waiting", s_json_u64 (d->waiting));
    dag = s_json_set (dag, "queued", s_json_u64 (d->queued));
    dag = s_json_set (dag, "running", s_json_u64 (d->running));
    dag = s_json_set (dag, "succeeded", s_json_u64 (d->succeeded));
    dag = s_json_set (dag, "failed", s_json_u64 (d->failed));
    dag = s_json_set (dag, "cancelled", s_json_u64 (d->cancelled));
    dag = s_json_set (dag, "skipped", s_json_u64 (d->skipped));
    dag = s_json_set_time (dag, "created", d->created_ms);
    dag = s_json_set_time (dag, "finished", d->finished_ms);
    dag = s_json_set_url (dag, "status_url", "/v1/dags/", d->id, "");
    return dag;
}

//  GET /v1/dags/{id}: {"dag": {...}, "jobs": [...]}, the list left out with
//  summary. Written one job at a time: as one jansson tree, a 100,000-job
//  DAG (51 MB of text) took the gateway 350 MB, kept by the allocator.
static struct MHD_Response *
s_dag_response (const dq_msg_t *reply, bool summary)
{
    s_buf_t b = { 0 };
    s_buf_str (&b, "{\"dag\":");
    json_t *dag = s_daginfo_json (reply->dag);
    int rc = dag? json_dump_callback (dag, s_json_dump_buf, &b, JSON_COMPACT): -1;
    json_decref (dag);
    if (!summary && rc == 0) {
        s_buf_str (&b, ",\"jobs\":[");
        for (uint32_t i = 0; i < reply->ninfos && rc == 0; i++) {
            if (i)
                s_buf_add (&b, ",", 1);
            json_t *job = s_jobinfo_json (&reply->infos [i]);
            rc = job? json_dump_callback (job, s_json_dump_buf, &b, JSON_COMPACT): -1;
            json_decref (job);
        }
        s_buf_add (&b, "]", 1);
        char next [40] = "null";
        if (reply->next_offset)
            snprintf (next, sizeof next, "%u", reply->next_offset);
        s_buf_str (&b, ",\"next_offset\":");
        s_buf_str (&b, next);
    }
    s_buf_add (&b, "}", 1);
    if (rc) {
        free (b.data);
        return NULL;
    }
    return s_response_buf (&b, "application/json");
}

//  A broker histogram as [{"le": bound in ms or "+Inf", "count": n}, ...].
static json_t *
s_json_hist (const uint64_t *h, uint32_t n)
{
    static const uint64_t bounds [] = DQ_PROTO_HIST_BOUNDS_MS;
    json_t *hist = json_array ();
    for (uint32_t i = 0; i < n; i++) {
        json_t *bucket = json_object ();
        bucket = s_json_set (bucket, "le", i < sizeof bounds / sizeof bounds [0]?
                             s_json_u64 (bounds [i]): json_string_nocheck ("+Inf"));
        bucket = s_json_set (bucket, "count", s_json_u64 (h [i]));
        hist = s_json_push (hist, bucket);
    }
    return hist;
}

static json_t *
s_stats_json (dq_gateway_t *self, const dq_msg_t *r)
{
    json_t *o = json_object ();
    o = s_json_set (o, "broker_id", s_json_str (r->broker_id));
    o = s_json_set (o, "uptime_ms", s_json_u64 (r->uptime_ms));
    o = s_json_set (o, "jobs_total", s_json_u64 (r->jobs_total));
    o = s_json_set (o, "jobs_in_memory", s_json_u64 (r->jobs_in_memory));
    o = s_json_set (o, "queued_bytes", s_json_u64 (r->queued_bytes));
    o = s_json_set (o, "workers_total", s_json_u64 (r->workers_total));
    json_t *types = json_array ();
    for (uint32_t i = 0; i < r->ntypestats; i++) {
        const dq_typestat_t *t = &r->typestats [i];
        json_t *type = json_object ();
        type = s_json_set (type, "type", s_json_str (t->type));
        type = s_json_set (type, "waiting", s_json_u64 (t->waiting));
        type = s_json_set (type, "queued", s_json_u64 (t->queued));
        type = s_json_set (type, "running", s_json_u64 (t->running));
        type = s_json_set (type, "succeeded", s_json_u64 (t->succeeded));
        type = s_json_set (type, "failed", s_json_u64 (t->failed));
        type = s_json_set (type, "cancelled", s_json_u64 (t->cancelled));
        type = s_json_set (type, "skipped", s_json_u64 (t->skipped));
        type = s_json_set (type, "workers", s_json_u64 (t->workers));
        types = s_json_push (types, type);
    }
    o = s_json_set (o, "types", types);
    json_t *workers = json_array ();
    for (uint32_t i = 0; i < r->nworkers; i++) {
        const dq_workerinfo_t *w = &r->workers [i];
        json_t *worker = json_object ();
        worker = s_json_set (worker, "id", s_json_str (w->id));
        worker = s_json_set (worker, "name", s_json_str (w->name));
        worker = s_json_set (worker, "host", s_json_str (w->host));
        worker = s_json_set (worker, "pid", s_json_u64 (w->pid));
        worker = s_json_set (worker, "capacity", s_json_u64 (w->capacity));
        worker = s_json_set (worker, "inflight", s_json_u64 (w->inflight));
        worker = s_json_set (worker, "last_seen_ms", s_json_u64 (w->last_seen_ms));
        worker = s_json_set (worker, "done", s_json_u64 (w->done));
        json_t *wtypes = json_array ();
        for (uint32_t k = 0; k < w->ntypes; k++)
            wtypes = s_json_push (wtypes, s_json_str (w->types [k]));
        worker = s_json_set (worker, "types", wtypes);
        workers = s_json_push (workers, worker);
    }
    o = s_json_set (o, "workers", workers);
    o = s_json_set (o, "dispatch_latency_ms", s_json_hist (r->dispatch_hist, r->ndispatch_hist));
    if (r->nsync_hist)
        o = s_json_set (o, "store_sync_ms", s_json_hist (r->sync_hist, r->nsync_hist));
    dq_gwlink_stats_t ls;
    dq_gwlink_stats (self->link, &ls);
    json_t *gw = json_object ();
    gw = s_json_set (gw, "batches", s_json_u64 (ls.batches));
    gw = s_json_set (gw, "batched_jobs", s_json_u64 (ls.batched_jobs));
    gw = s_json_set (gw, "resends", s_json_u64 (ls.resends));
    gw = s_json_set (gw, "timeouts", s_json_u64 (ls.timeouts));
    gw = s_json_set (gw, "splits", s_json_u64 (ls.splits));
    gw = s_json_set (gw, "inflight", s_json_u64 (ls.inflight));
    gw = s_json_set (gw, "waiting", s_json_u64 (ls.waiting));
    gw = s_json_set (gw, "turns", s_json_u64 (ls.turns));
    gw = s_json_set (gw, "connections",
                     s_json_u64 (atomic_load (&self->metrics.connections)));
    return s_json_set (o, "gateway", gw);
}

//  ---------------------------------------------------------------------------
//  /metrics: Prometheus text exposition format 0.0.4

static void
s_prom_label (s_buf_t *b, const char *value)
{
    for (const char *p = value? value: ""; *p; p++) {
        if (*p == '\\')      s_buf_str (b, "\\\\");
        else if (*p == '"')  s_buf_str (b, "\\\"");
        else if (*p == '\n') s_buf_str (b, "\\n");
        else                 s_buf_add (b, p, 1);
    }
}

static void
s_prom_head (s_buf_t *b, const char *name, const char *type, const char *help)
{
    s_buf_fmt (b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
s_prom_value (s_buf_t *b, const char *name, uint64_t value)
{
    s_buf_fmt (b, "%s %llu\n", name, (unsigned long long) value);
}

//  One sample per job type of a STATS_REPLY field.
static void
s_prom_types (s_buf_t *b, const dq_msg_t *r, const char *name, const char *type,
              const char *help, size_t offset, bool all_states)
{
    s_prom_head (b, name, type, help);
    for (uint32_t i = 0; i < r->ntypestats; i++) {
        const dq_typestat_t *t = &r->typestats [i];
        uint64_t v = all_states?
            t->waiting + t->queued + t->running + t->succeeded + t->failed
            + t->cancelled + t->skipped:
            *(const uint64_t *) ((const char *) t + offset);
        s_buf_fmt (b, "%s{type=\"", name);
        s_prom_label (b, t->type);
        s_buf_fmt (b, "\"} %llu\n", (unsigned long long) v);
    }
}

//  A broker histogram (counts per bucket, bounds DQ_PROTO_HIST_BOUNDS_MS);
//  nothing if the broker sent none. The broker keeps no sum: no _sum line.
static void
s_prom_hist (s_buf_t *b, const char *name, const char *help, const uint64_t *h, uint32_t n)
{
    if (!n)
        return;
    static const uint64_t bounds [] = DQ_PROTO_HIST_BOUNDS_MS;
    s_prom_head (b, name, "histogram", help);
    uint64_t cum = 0;
    for (uint32_t i = 0; i < n; i++) {
        cum += h [i];
        if (i < sizeof bounds / sizeof bounds [0] && i + 1 < n)
            s_buf_fmt (b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds [i] / 1000.0,
                       (unsigned long long) cum);
    }
    s_buf_fmt (b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long) cum);
    s_buf_fmt (b, "%s_count %llu\n", name, (unsigned long long) cum);
}

static void
s_metrics_text (dq_gateway_t *self, s_buf_t *b, const dq_msg_t *r)
{
    s_metrics_t *m = &self->metrics;
    s_prom_head (b, "dagq_http_requests_total", "counter",
                 "HTTP requests answered, by method, route and status.");
    for (int a = 0; a < A_COUNT_; a++)
        for (size_t k = 0; k < S_NSTATUS; k++) {
            uint64_t v = atomic_load_explicit (&m->requests [a][k], memory_order_relaxed);
            if (!v)
                continue;
            char status [16];
            if (k < S_NSTATUS - 1)
                snprintf (status, sizeof status, "%u", s_statuses [k]);
            else
                snprintf (status, sizeof status, "other");
            s_buf_fmt (b, "dagq_http_requests_total{method=\"%s\",route=\"%s\","
                       "status=\"%s\"} %llu\n", s_labels [a].method, s_labels [a].route,
                       status, (unsigned long long) v);
        }
    s_prom_head (b, "dagq_http_request_duration_seconds", "histogram",
                 "Time from a request's head to its response, by method and route.");
    for (int a = 0; a < A_COUNT_; a++) {
        uint64_t counts [S_NBOUNDS + 1], total = 0;
        for (size_t k = 0; k <= S_NBOUNDS; k++) {
            counts [k] = atomic_load_explicit (&m->buckets [a][k], memory_order_relaxed);
            total += counts [k];
        }
        if (!total)
            continue;
        uint64_t cum = 0;
        for (size_t k = 0; k <= S_NBOUNDS; k++) {
            cum += counts [k];
            char le [32];
            if (k < S_NBOUNDS)
                snprintf (le, sizeof le, "%g", s_bounds [k]);
            else
                snprintf (le, sizeof le, "+Inf");
            s_buf_fmt (b, "dagq_http_request_duration_seconds_bucket{method=\"%s\","
                       "route=\"%s\",le=\"%s\"} %llu\n", s_labels [a].method,
                       s_labels [a].route, le, (unsigned long long) cum);
        }
        uint64_t sum_us = atomic_load_explicit (&m->sum_us [a], memory_order_relaxed);
        s_buf_fmt (b, "dagq_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} "
                   "%.6f\n", s_labels [a].method, s_labels [a].route, sum_us / 1e6);
        s_buf_fmt (b, "dagq_http_request_duration_seconds_count{method=\"%s\","
                   "route=\"%s\"} %llu\n", s_labels [a].method, s_labels [a].route,
                   (unsigned long long) cum);
    }
    s_prom_head (b, "dagq_gateway_connections", "gauge", "Open HTTP connections.");
    s_prom_value (b, "dagq_gateway_connections", atomic_load (&m->connections));
    s_prom_head (b, "dagq_gateway_slow_clients_cut_total", "counter",
                 "Connections cut because a request head took longer than --idle-timeout.");
    s_prom_value (b, "dagq_gateway_slow_clients_cut_total", atomic_load (&m->slow_cut));
    s_prom_head (b, "dagq_gateway_jobs_accepted_total", "counter",
                 "Jobs the broker acknowledged through this gateway.");
    s_prom_value (b, "dagq_gateway_jobs_accepted_total", atomic_load (&m->accepted_jobs));
    dq_gwlink_stats_t ls;
    dq_gwlink_stats (self->link, &ls);
    s_prom_head (b, "dagq_gateway_batches_total", "counter",
                 "Coalesced SUBMIT requests sent to the broker.");
    s_prom_value (b, "dagq_gateway_batches_total", ls.batches);
    s_prom_head (b, "dagq_gateway_batched_jobs_total", "counter",
                 "Jobs sent in coalesced SUBMIT requests.");
    s_prom_value (b, "dagq_gateway_batched_jobs_total", ls.batched_jobs);
    s_prom_head (b, "dagq_gateway_broker_resends_total", "counter",
                 "Broker requests sent again after no answer.");
    s_prom_value (b, "dagq_gateway_broker_resends_total", ls.resends);
    s_prom_head (b, "dagq_gateway_broker_timeouts_total", "counter",
                 "Broker requests given up after --request-timeout.");
    s_prom_value (b, "dagq_gateway_broker_timeouts_total", ls.timeouts);
    s_prom_head (b, "dagq_gateway_batch_splits_total", "counter",
                 "Coalesced SUBMITs refused whole and re-sent job by job.");
    s_prom_value (b, "dagq_gateway_batch_splits_total", ls.splits);
    s_prom_head (b, "dagq_gateway_broker_inflight", "gauge",
                 "Broker requests sent and not answered yet.");
    s_prom_value (b, "dagq_gateway_broker_inflight", ls.inflight);
    s_prom_head (b, "dagq_gateway_waiting_requests", "gauge",
                 "Requests held by ?wait until their job ends.");
    s_prom_value (b, "dagq_gateway_waiting_requests", ls.waiting);
    s_prom_head (b, "dagq_broker_up", "gauge", "1 if the broker answered this scrape.");
    s_prom_value (b, "dagq_broker_up", r? 1: 0);
    if (!r)
        return;
    s_prom_head (b, "dagq_broker_uptime_seconds", "gauge", "Seconds since the broker started.");
    s_buf_fmt (b, "dagq_broker_uptime_seconds %.3f\n", r->uptime_ms / 1000.0);
    s_prom_head (b, "dagq_broker_jobs", "gauge",
                 "Jobs in the broker's table (unfinished and retained finished ones).");
    s_prom_value (b, "dagq_broker_jobs", r->jobs_total);
    s_prom_head (b, "dagq_broker_jobs_in_memory", "gauge",
                 "Jobs the broker holds in memory (the rest are finished jobs in its store).");
    s_prom_value (b, "dagq_broker_jobs_in_memory", r->jobs_in_memory);
    s_prom_head (b, "dagq_broker_queued_bytes", "gauge",
                 "Payload bytes of unfinished jobs.");
    s_prom_value (b, "dagq_broker_queued_bytes", r->queued_bytes);
    s_prom_types (b, r, "dagq_jobs_submitted_total", "counter",
                  "Jobs submitted, by type.", 0, true);
    s_prom_types (b, r, "dagq_jobs_succeeded_total", "counter",
                  "Jobs that succeeded, by type.", offsetof (dq_typestat_t, succeeded), false);
    s_prom_types (b, r, "dagq_jobs_failed_total", "counter",
                  "Jobs that failed for good, by type.", offsetof (dq_typestat_t, failed), false);
    s_prom_types (b, r, "dagq_jobs_cancelled_total", "counter",
                  "Jobs cancelled, by type.", offsetof (dq_typestat_t, cancelled), false);
    s_prom_types (b, r, "dagq_jobs_skipped_total", "counter",
                  "Jobs skipped because a parent did not succeed, by type.",
                  offsetof (dq_typestat_t, skipped), false);
    s_prom_types (b, r, "dagq_queue_depth", "gauge",
                  "Jobs ready and waiting for a worker, by type.",
                  offsetof (dq_typestat_t, queued), false);
    s_prom_types (b, r, "dagq_jobs_waiting", "gauge",
                  "Jobs waiting for parents, a delay or a retry, by type.",
                  offsetof (dq_typestat_t, waiting), false);
    uint64_t running = 0, capacity = 0, inflight = 0;
    for (uint32_t i = 0; i < r->ntypestats; i++)
        running += r->typestats [i].running;
    for (uint32_t i = 0; i < r->nworkers; i++) {
        capacity += r->workers [i].capacity;
        inflight += r->workers [i].inflight;
    }
    s_prom_head (b, "dagq_jobs_running", "gauge", "Jobs running on workers.");
    s_prom_value (b, "dagq_jobs_running", running);
    s_prom_head (b, "dagq_workers_connected", "gauge", "Workers connected to the broker.");
    s_prom_value (b, "dagq_workers_connected", r->workers_total);
    s_prom_head (b, "dagq_worker_capacity", "gauge", "Job slots of all connected workers.");
    s_prom_value (b, "dagq_worker_capacity", capacity);
    s_prom_head (b, "dagq_worker_inflight", "gauge", "Job slots in use.");
    s_prom_value (b, "dagq_worker_inflight", inflight);
    s_prom_hist (b, "dagq_dispatch_latency_seconds",
                 "Time from a job being ready to its dispatch to a worker.",
                 r->dispatch_hist, r->ndispatch_hist);
    s_prom_hist (b, "dagq_store_sync_seconds",
                 "Time the broker's fdatasync of its store took (--sync full); "
                 "replies wait for it.", r->sync_hist, r->nsync_hist);
}

static void
s_metrics_record (dq_gateway_t *self, s_req_t *req)
{
    s_metrics_t *m = &self->metrics;
    size_t k = S_NSTATUS - 1;
    for (size_t i = 0; i < S_NSTATUS - 1; i++)
        if (s_statuses [i] == req->status) {
            k = i;
            break;
        }
    uint64_t us = s_now_us () - req->start_us;
    double secs = us / 1e6;
    size_t bucket = 0;
    while (bucket < S_NBOUNDS && secs > s_bounds [bucket])
        bucket++;
    atomic_fetch_add_explicit (&m->requests [req->action][k], 1, memory_order_relaxed);
    atomic_fetch_add_explicit (&m->buckets [req->action][bucket], 1, memory_order_relaxed);
    atomic_fetch_add_explicit (&m->sum_us [req->action], us, memory_order_relaxed);
    dq_log_debug ("http method=%s route=%s status=%u us=%llu - answered",
                  s_labels [req->action].method, s_labels [req->action].route,
                  req->status, (unsigned long long) us);
}

//  ---------------------------------------------------------------------------
//  Answers (after the link)

//  True if id can go into JSON and a URL as it is (what broker ids are
//  made of): no quoting, no escaping.
static bool
s_plain_id (const char *id)
{
    if (!*id)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum ((unsigned char) *p) && *p != '-' && *p != '_' && *p != '.'
        &&  *p != ':')
            return false;
    return true;
}

//  202 {"id": ..., "status_url": ...}. The common case, a plain id, is
//  written directly (the hot path of every submission); anything else
//  goes through jansson, which escapes it.
static enum MHD_Result
s_accepted (s_req_t *req, const char *id)
{
    char url [DQ_GWLINK_ID_MAX + 16];
    snprintf (url, sizeof url, "/v1/jobs/%s", id);
    struct MHD_Response *resp;
    if (s_plain_id (id)) {
        char body [2 * DQ_GWLINK_ID_MAX + 64];
        int n = snprintf (body, sizeof body, "{\"id\":\"%s\",\"status_url\":\"%s\"}",
                          id, url);
        assert (n > 0 && (size_t) n < sizeof body);
        resp = MHD_create_response_from_buffer ((size_t) n, body, MHD_RESPMEM_MUST_COPY);
        if (resp)
            MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                     "application/json");
    }
    else {
        json_t *doc = s_json_set (json_object (), "id", s_json_str (id));
        doc = s_json_set (doc, "status_url", s_json_str (url));
        resp = s_response_json (doc);
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header (resp, MHD_HTTP_HEADER_LOCATION, url);
    return s_queue (req, 202, resp);
}

static enum MHD_Result
s_finish (s_req_t *req)
{
    dq_gateway_t *self = req->gw;
    dq_gwop_t *op = &req->op;
    dq_msg_t *r = op->reply;
    bool submission = req->action == A_SUBMIT || req->action == A_BULK
                   || req->action == A_DAG_SUBMIT;
    if (req->action == A_METRICS) {
        s_buf_t b = { 0 };
        s_metrics_text (self, &b, op->err? NULL: r);
        return s_queue (req, 200, s_response_buf (&b, "text/plain; version=0.0.4; "
                                                  "charset=utf-8"));
    }
    if (op->err)
        return s_broker_error (req, submission);
    json_t *doc = NULL;
    switch (req->action) {
        case A_SUBMIT:
            atomic_fetch_add_explicit (&self->metrics.accepted_jobs, 1, memory_order_relaxed);
            if (op->waited && r)
                return s_output_reply (req, op->job_id);
            return s_accepted (req, op->job_id);
        case A_BULK: {
            atomic_fetch_add_explicit (&self->metrics.accepted_jobs, r->nids,
                                       memory_order_relaxed);
            doc = s_json_set (json_object (), "count", s_json_u64 (r->nids));
            json_t *ids = json_array ();
            for (uint32_t i = 0; i < r->nids; i++)
                ids = s_json_push (ids, s_json_str (r->ids [i]));
            doc = s_json_set (doc, "ids", ids);
            return s_json_reply (req, 202, doc);
        }
        case A_DAG_SUBMIT: {
            atomic_fetch_add_explicit (&self->metrics.accepted_jobs, r->nids,
                                       memory_order_relaxed);
            char url [DQ_GWLINK_ID_MAX + 16];
            snprintf (url, sizeof url, "/v1/dags/%s", r->dag_id? r->dag_id: "");
            doc = s_json_set (json_object (), "dag_id", s_json_str (r->dag_id));
            doc = s_json_set (doc, "status_url", s_json_str (url));
            json_t *jobs = json_object ();
            for (uint32_t i = 0; i < r->nids && i < dq_dagdoc_njobs (req->doc); i++)
                jobs = s_json_set_text (jobs, dq_dagdoc_job_id (req->doc, i),
                                        s_json_str (r->ids [i]));
            doc = s_json_set (doc, "jobs", jobs);
            struct MHD_Response *resp = s_response_json (doc);
            if (resp && r->dag_id)
                MHD_add_response_header (resp, MHD_HTTP_HEADER_LOCATION, url);
            return s_queue (req, 202, resp);
        }
        case A_JOB_GET:
            if (r->ninfos < 1)
                return s_error (req, 500, "internal", "broker answered no job");
            return s_json_reply (req, 200, s_jobinfo_json (&r->infos [0]));
        case A_JOB_RESULT:
            return s_output_reply (req, req->arg);
        case A_JOB_CANCEL:
        case A_DAG_CANCEL:
            doc = s_json_set (json_object (), "id", s_json_str (req->arg));
            doc = s_json_set (doc, "cancelled", s_json_u64 (r->count));
            return s_json_reply (req, 200, doc);
        case A_DAG_GET:
            if (!r->dag)
                return s_error (req, 500, "internal", "broker answered no DAG");
            return s_queue (req, 200, s_dag_response (r, req->op.summary));
        case A_STATS:
            return s_json_reply (req, 200, s_stats_json (self, r));
        default:
            return s_error (req, 500, "internal", "no answer for this route");
    }
}

static void
s_on_op_done (dq_gwop_t *op)
{
    s_req_t *req = op->arg;
    req->state = S_REQ_ANSWERED;
    MHD_resume_connection (req->con);
}

//  Hand the op to the link and park the connection until it answers.
static enum MHD_Result
s_hold (s_req_t *req, dq_gwop_kind_t kind)
{
    req->op.kind = kind;
    req->op.done = s_on_op_done;
    req->op.arg = req;
    req->state = S_REQ_HELD;
    MHD_suspend_connection (req->con);
    dq_gwlink_push (req->gw->link, &req->op);
    return MHD_YES;
}

//  ---------------------------------------------------------------------------
//  The request handler

static enum MHD_Result
s_begin (dq_gateway_t *self, s_req_t *req, const char *url, const char *method)
{
    unsigned status;
    const char *allow;
    req->action = s_route (url, method, req->arg, sizeof req->arg, &status, &allow);
    if (req->action != A_HEALTHZ && !s_authorized (self, req->con))
        return s_error (req, 401, "unauthorized", "missing or wrong bearer token "
                        "(send Authorization: Bearer <token>)");
    if (req->action == A_OTHER && status == 405)
        return s_error_ex (req, 405, "method_not_allowed", 0, allow, NULL,
                           "%s is not allowed on %s (allowed: %s)", method, url, allow);
    if (req->action == A_OTHER)
        return s_error (req, 404, "not_found", "no route for %s %s", method, url);
    //  Refuse an oversize body before reading any of it.
    const char *cl = MHD_lookup_connection_value (req->con, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t length = 0;
    if (cl && dq_parse_u64 (cl, 0, UINT64_MAX, &length) == 0
    &&  length > self->cfg.max_body)
        return s_error (req, 413, "too_big", "body of %llu bytes is over the limit of "
                        "%llu bytes (--max-body)", (unsigned long long) length,
                        (unsigned long long) self->cfg.max_body);
    req->keep_body = req->action == A_SUBMIT || req->action == A_BULK
                  || req->action == A_DAG_SUBMIT;
    if (req->keep_body && length) {
        req->body = malloc (length);
        assert (req->body);
        req->body_cap = length;
    }
    if (req->action == A_SUBMIT) {
        s_parse_submit (req);
        if (*req->bad)
            return s_error (req, req->bad_status, req->bad_status == 403?
                            "type_not_allowed": "invalid", "%s", req->bad);
    }
    req->state = S_REQ_READING;
    return MHD_YES;
}

static enum MHD_Result
s_on_body (s_req_t *req, const char *data, size_t *size)
{
    dq_gateway_t *self = req->gw;
    size_t n = *size;
    *size = 0;
    if (req->state != S_REQ_READING)
        return MHD_YES;          //  answered already: the rest is dropped
    if (req->body_size + n > self->cfg.max_body) {
        //  Only a chunked upload gets here (Content-Length was checked): a
        //  response cannot be queued mid-body, so the connection is cut.
        req->status = 413;
        req->state = S_REQ_DONE;
        dq_log_debug ("http - chunked body over --max-body, connection closed");
        return MHD_NO;
    }
    if (req->keep_body) {
        if (req->body_size + n > req->body_cap) {
            size_t cap = req->body_cap? req->body_cap: 4096;
            while (cap < req->body_size + n)
                cap *= 2;
            if (cap > self->cfg.max_body)
                cap = self->cfg.max_body;
            req->body = realloc (req->body, cap);
            assert (req->body);
            req->body_cap = cap;
        }
        memcpy (req->body + req->body_size, data, n);
    }
    req->body_size += n;
    return MHD_YES;
}

static enum MHD_Result
s_dispatch (s_req_t *req)
{
    dq_gateway_t *self = req->gw;
    switch (req->action) {
        case A_HEALTHZ:
            return s_json_reply (req, 200, s_json_set (json_object (), "status",
                                                       json_string_nocheck ("ok")));
        case A_READYZ: {
            uint64_t last = dq_gwlink_last_answer (self->link);
            uint64_t now = dq_mono_ms ();
            if (last && now - last < DQ_GATEWAY_READY_WINDOW_MS) {
                json_t *doc = s_json_set (json_object (), "status",
                                          json_string_nocheck ("ready"));
                doc = s_json_set (doc, "broker_answered_ms_ago", s_json_u64 (now - last));
                return s_json_reply (req, 200, doc);
            }
            return s_error_ex (req, 503, "unavailable", 1, NULL, NULL,
                               "the broker has not answered for %u ms",
                               DQ_GATEWAY_READY_WINDOW_MS);
        }
        case A_SUBMIT:
            req->spec.payload = req->body;
            req->spec.payload_size = req->body_size;
            req->op.jobs = &req->spec;
            req->op.njobs = 1;
            return s_hold (req, DQ_GWOP_JOB);
        case A_BULK:
        case A_DAG_SUBMIT: {
            const char *key = MHD_lookup_connection_value (req->con, MHD_HEADER_KIND,
                                                           "Idempotency-Key");
            if (key && !s_valid_text (key, S_KEY_MAX, false))
                return s_error (req, 400, "invalid", "Idempotency-Key must be 1 to %d "
                                "visible ASCII characters", S_KEY_MAX);
            if (key)
                snprintf (req->key, sizeof req->key, "%s", key);
            if (MHD_lookup_connection_value (req->con, MHD_GET_ARGUMENT_KIND, "wait"))
                return s_error (req, 400, "invalid", "?wait is for single jobs "
                                "(POST /v1/jobs/{type})");
            if (req->action == A_BULK) {
                if (s_parse_bulk (req))
                    return s_error (req, req->bad_status, req->bad_status == 403?
                                    "type_not_allowed": req->bad_status == 413?
                                    "too_big": "invalid", "%s", req->bad);
                req->op.jobs = req->specs;
                req->op.njobs = req->nspecs;
                req->op.key = key? req->key: NULL;
                return s_hold (req, DQ_GWOP_SUBMIT);
            }
            char err [DQ_DAGDOC_ERR_SIZE];
            dq_dagdoc_limits_t limits = { .max_size = self->cfg.max_body };
            req->doc = dq_dagdoc_parse_limits (req->body? req->body: "", req->body_size,
                                               &limits, err, sizeof err);
            if (!req->doc)
                return s_error (req, 400, "invalid", "%s", err);
            const dq_jobspec_t *jobs = dq_dagdoc_jobs (req->doc);
            uint32_t n = dq_dagdoc_njobs (req->doc);
            for (uint32_t i = 0; i < n; i++)
                if (!s_type_allowed (self, jobs [i].type))
                    return s_error (req, 403, "type_not_allowed", "jobs[%u] (id '%s'): "
                                    "job type '%s' is not allowed here (--allow-types)",
                                    i, dq_dagdoc_job_id (req->doc, i), jobs [i].type);
            req->op.jobs = jobs;
            req->op.njobs = n;
            req->op.dag_name = dq_dagdoc_name (req->doc);
            req->op.key = dq_dagdoc_key (req->doc)? dq_dagdoc_key (req->doc):
                          key? req->key: NULL;
            return s_hold (req, DQ_GWOP_SUBMIT);
        }
        case A_JOB_GET:
        case A_JOB_RESULT:
        case A_JOB_CANCEL:
            if (!dq_dagdoc_is_job_id (req->arg))
                return s_error (req, 404, "not_found", "'%s' is not a job id", req->arg);
            req->op.id = req->arg;
            return s_hold (req, req->action == A_JOB_GET? DQ_GWOP_STATUS:
                                req->action == A_JOB_RESULT? DQ_GWOP_RESULT:
                                DQ_GWOP_CANCEL);
        case A_DAG_GET:
        case A_DAG_CANCEL:
            if (!s_is_dag_id (req->arg))
                return s_error (req, 404, "not_found", "'%s' is not a DAG id", req->arg);
            req->op.id = req->arg;
            if (req->action == A_DAG_GET) {
                MHD_get_connection_values (req->con, MHD_GET_ARGUMENT_KIND,
                                           s_on_dag_arg, req);
                if (*req->bad)
                    return s_error (req, 400, "invalid", "%s", req->bad);
                //  An offset alone asks for one page from there. The whole
                //  list is built in memory: capped, a DAG of millions of jobs
                //  is listed in pages.
                if ((req->options_seen & (1u << S_DAG_OFFSET)) && !req->op.limit)
                    req->op.limit = DQ_PROTO_DAG_JOBS_MAX;
                req->op.max_jobs = self->cfg.max_dag_list;
            }
            return s_hold (req, req->action == A_DAG_GET? DQ_GWOP_DAG: DQ_GWOP_CANCEL);
        case A_STATS:
            return s_hold (req, DQ_GWOP_STATS);
        case A_METRICS:
            req->op.timeout_ms = self->cfg.request_timeout_ms < S_METRICS_TIMEOUT_MS?
                                 self->cfg.request_timeout_ms: S_METRICS_TIMEOUT_MS;
            return s_hold (req, DQ_GWOP_STATS);
        default:
            return s_error (req, 404, "not_found", "no such route");
    }
}

static s_conn_t *
s_conn_of (struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info (con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci? ci->socket_context: NULL;
}

static enum MHD_Result
s_on_request (void *cls, struct MHD_Connection *con, const char *url,
              const char *method, const char *version, const char *upload_data,
              size_t *upload_data_size, void **con_cls)
{
    (void) version;
    dq_gateway_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req) {
        req = calloc (1, sizeof *req);
        assert (req);
        req->gw = self;
        req->con = con;
        req->start_us = s_now_us ();
        req->conn = s_conn_of (con);
        if (req->conn) {
            atomic_store (&req->conn->since, req->start_us / 1000);
            atomic_store (&req->conn->body_bytes, 0);
            atomic_store (&req->conn->reading, true);
            atomic_store (&req->conn->busy, true);
        }
        *con_cls = req;
        return s_begin (self, req, url, method);
    }
    if (req->state == S_REQ_ANSWERED)
        return s_finish (req);
    if (*upload_data_size) {
        if (req->conn)
            atomic_fetch_add (&req->conn->body_bytes, *upload_data_size);
        return s_on_body (req, upload_data, upload_data_size);
    }
    if (req->conn)
        atomic_store (&req->conn->reading, false);    //  the whole body is in
    if (req->state == S_REQ_READING)
        return s_dispatch (req);
    return MHD_YES;
}

static void
s_req_free (s_req_t *req)
{
    free (req->body);
    free (req->deps);
    for (uint32_t i = 0; i < req->nallocs; i++)
        free (req->allocs [i]);
    free (req->allocs);
    free (req->specs);
    json_decref (req->json);
    dq_dagdoc_destroy (&req->doc);
    dq_msg_destroy (&req->op.reply);
    free (req);
}

static void
s_on_completed (void *cls, struct MHD_Connection *con, void **con_cls,
                enum MHD_RequestTerminationCode toe)
{
    (void) toe;
    dq_gateway_t *self = cls;
    s_req_t *req = *con_cls;
    s_conn_t *conn = s_conn_of (con);
    if (req) {
        assert (req->state != S_REQ_HELD);
        if (req->status)
            s_metrics_record (self, req);
        s_req_free (req);
        *con_cls = NULL;
    }
    if (conn) {
        atomic_store (&conn->since, dq_mono_ms ());
        atomic_store (&conn->busy, false);
    }
}

static void
s_on_connection (void *cls, struct MHD_Connection *con, void **socket_context,
                 enum MHD_ConnectionNotificationCode toe)
{
    dq_gateway_t *self = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        s_conn_t *c = calloc (1, sizeof *c);
        assert (c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info (con, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci? ci->connect_fd: -1;
        atomic_init (&c->busy, false);
        atomic_init (&c->since, dq_mono_ms ());
        atomic_init (&c->reading, false);
        atomic_init (&c->body_bytes, 0);
        pthread_mutex_lock (&self->conns_lock);
        c->next = self->conns;
        if (self->conns)
            self->conns->prev = c;
        self->conns = c;
        pthread_mutex_unlock (&self->conns_lock);
        *socket_context = c;
        atomic_fetch_add (&self->metrics.connections, 1);
    }
    else
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        //  libmicrohttpd closes the socket after this returns, so s_reap
        //  (under the same lock) never shuts down a reused descriptor.
        s_conn_t *c = *socket_context;
        pthread_mutex_lock (&self->conns_lock);
        if (c->prev)
            c->prev->next = c->next;
        else
            self->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock (&self->conns_lock);
        free (c);
        *socket_context = NULL;
        atomic_fetch_sub (&self->metrics.connections, 1);
    }
}

//  Cut connections whose next request head is not complete within the
//  idle timeout, or whose body comes slower than S_BODY_MIN_RATE once that
//  timeout has passed (slow clients trickling bytes are never idle to MHD).
//  A request held for the broker or for ?wait is not reading.
static void
s_reap (dq_gateway_t *self)
{
    uint64_t now = dq_mono_ms ();
    uint64_t limit = (uint64_t) self->cfg.idle_timeout * 1000;
    pthread_mutex_lock (&self->conns_lock);
    for (s_conn_t *c = self->conns; c; c = c->next) {
        if (c->cut || c->fd < 0)
            continue;
        bool slow;
        if (!atomic_load (&c->busy))
            slow = now - atomic_load (&c->since) > limit;
        else
        if (atomic_load (&c->reading))
            slow = now - atomic_load (&c->since)
                 > limit + atomic_load (&c->body_bytes) * 1000 / S_BODY_MIN_RATE;
        else
            slow = false;
        if (slow) {
            shutdown (c->fd, SHUT_RDWR);
            c->cut = true;
            atomic_fetch_add (&self->metrics.slow_cut, 1);
        }
    }
    pthread_mutex_unlock (&self->conns_lock);
}

static void
s_mhd_log (void *cls, const char *fmt, va_list ap)
{
    (void) cls;
    if (dq_log_level () < DQ_LOG_DEBUG)
        return;
    char line [512];
    vsnprintf (line, sizeof line, fmt, ap);
    size_t n = strlen (line);
    while (n && (line [n - 1] == '\n' || line [n - 1] == '\r'))
        line [--n] = 0;
    dq_log_debug ("http - %s", line);
}

//  ---------------------------------------------------------------------------
//  Setup

void
dq_gateway_cfg_defaults (dq_gateway_cfg_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    cfg->listen = DQ_GATEWAY_LISTEN_DEFAULT;
    cfg->broker = DQ_GATEWAY_BROKER_DEFAULT;
    cfg->max_body = DQ_GATEWAY_MAX_BODY_DEFAULT;
    cfg->max_bulk = DQ_GATEWAY_MAX_BULK_DEFAULT;
    cfg->max_dag_list = DQ_GATEWAY_MAX_DAG_LIST_DEFAULT;
    cfg->max_connections = DQ_GATEWAY_MAX_CONNECTIONS_DEFAULT;
    cfg->max_per_ip = DQ_GATEWAY_MAX_PER_IP_DEFAULT;
    cfg->max_header = DQ_GATEWAY_MAX_HEADER_DEFAULT;
    cfg->idle_timeout = DQ_GATEWAY_IDLE_TIMEOUT_DEFAULT;
    cfg->request_timeout_ms = DQ_GATEWAY_REQUEST_TIMEOUT_DEFAULT;
    cfg->max_wait_ms = DQ_GATEWAY_MAX_WAIT_DEFAULT;
}

//  Read a whole small file as text. Returns it (caller frees) or NULL.
static char *
s_read_file (const char *path, char *err, size_t err_size)
{
    FILE *f = fopen (path, "rb");
    if (!f) {
        snprintf (err, err_size, "cannot read %s: %s", path, strerror (errno));
        return NULL;
    }
    char *text = malloc (S_FILE_MAX + 1);
    assert (text);
    size_t n = fread (text, 1, S_FILE_MAX + 1, f);
    bool failed = ferror (f);
    fclose (f);
    if (failed || n > S_FILE_MAX) {
        snprintf (err, err_size, "cannot read %s: %s", path,
                  failed? "read error": "larger than 1 MiB");
        free (text);
        return NULL;
    }
    text [n] = 0;
    return text;
}

static int
s_load_tokens (dq_gateway_t *self, const char *path, char *err, size_t err_size)
{
    char *text = s_read_file (path, err, err_size);
    if (!text)
        return -1;
    char *save = NULL;
    int rc = 0;
    for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t n = strlen (line);
        while (n && (line [n - 1] == '\r' || line [n - 1] == ' ' || line [n - 1] == '\t'))
            line [--n] = 0;
        if (n == 0 || line [0] == '#')
            continue;
        if (!s_valid_text (line, S_TOKEN_MAX, false)) {
            snprintf (err, err_size, "%s: a token must be 1 to %d visible ASCII "
                      "characters without spaces", path, S_TOKEN_MAX);
            rc = -1;
            break;
        }
        self->tokens = realloc (self->tokens, (self->ntokens + 1) * sizeof (char *));
        self->token_lens = realloc (self->token_lens, (self->ntokens + 1) * sizeof (size_t));
        assert (self->tokens && self->token_lens);
        self->tokens [self->ntokens] = strdup (line);
        assert (self->tokens [self->ntokens]);
        self->token_lens [self->ntokens++] = n;
    }
    free (text);
    if (rc == 0 && self->ntokens == 0) {
        snprintf (err, err_size, "%s holds no token (one a line; # starts a comment)", path);
        rc = -1;
    }
    return rc;
}

static int
s_load_types (dq_gateway_t *self, const char *list, char *err, size_t err_size)
{
    char *copy = strdup (list);
    assert (copy);
    char *save = NULL;
    int rc = 0;
    for (char *t = strtok_r (copy, ",", &save); t; t = strtok_r (NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t n = strlen (t);
        while (n && t [n - 1] == ' ')
            t [--n] = 0;
        if (n == 0)
            continue;
        if (!s_valid_type (t)) {
            snprintf (err, err_size, "--allow-types: '%s' is not a job type", t);
            rc = -1;
            break;
        }
        self->types = realloc (self->types, (self->ntypes + 1) * sizeof (char *));
        assert (self->types);
        self->types [self->ntypes] = strdup (t);
        assert (self->types [self->ntypes]);
        self->ntypes++;
    }
    free (copy);
    if (rc == 0 && self->ntypes == 0) {
        snprintf (err, err_size, "--allow-types lists no job type");
        rc = -1;
    }
    return rc;
}

//  Bind the listening socket ourselves: bind errors are then told apart
//  from TLS errors, and SO_REUSEPORT lets several gateways share a port.
static int
s_listen (dq_gateway_t *self, char *err, size_t err_size, int *exit_code, bool *ipv6)
{
    char host [256], port [16];
    const char *spec = self->cfg.listen;
    const char *colon;
    if (spec [0] == '[') {
        const char *end = strchr (spec, ']');
        if (!end || end [1] != ':' || (size_t) (end - spec - 1) >= sizeof host)
            goto bad;
        memcpy (host, spec + 1, (size_t) (end - spec - 1));
        host [end - spec - 1] = 0;
        colon = end + 1;
    }
    else {
        colon = strrchr (spec, ':');
        if (!colon || (size_t) (colon - spec) >= sizeof host)
            goto bad;
        memcpy (host, spec, (size_t) (colon - spec));
        host [colon - spec] = 0;
    }
    uint64_t p;
    if (dq_parse_u64 (colon + 1, 0, 65535, &p))
        goto bad;
    snprintf (port, sizeof port, "%llu", (unsigned long long) p);
    if (!*host || !strcmp (host, "*"))
        snprintf (host, sizeof host, "0.0.0.0");
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo (host, port, &hints, &res);
    if (gai) {
        snprintf (err, err_size, "--listen %s: cannot resolve '%s': %s", spec, host,
                  gai_strerror (gai));
        *exit_code = DQ_GATEWAY_EXIT_CONFIG;
        return -1;
    }
    int fd = socket (res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf (err, err_size, "cannot create a socket: %s", strerror (errno));
        freeaddrinfo (res);
        *exit_code = DQ_GATEWAY_EXIT_BIND;
        return -1;
    }
    int on = 1;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    setsockopt (fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
    *ipv6 = res->ai_family == AF_INET6;
    if (bind (fd, res->ai_addr, res->ai_addrlen) || listen (fd, 4096)) {
        snprintf (err, err_size, "cannot listen on %s: %s", spec, strerror (errno));
        close (fd);
        freeaddrinfo (res);
        *exit_code = DQ_GATEWAY_EXIT_BIND;
        return -1;
    }
    freeaddrinfo (res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname (fd, (struct sockaddr *) &ss, &len) == 0)
        self->port = ntohs (ss.ss_family == AF_INET6?
                            ((struct sockaddr_in6 *) &ss)->sin6_port:
                            ((struct sockaddr_in *) &ss)->sin_port);
    self->listen_fd = fd;
    return 0;
bad:
    snprintf (err, err_size, "--listen must be ADDR:PORT, [IPv6]:PORT or *:PORT, "
              "not '%s'", spec);
    *exit_code = DQ_GATEWAY_EXIT_CONFIG;
    return -1;
}

//  Room for the connections asked for: raise the descriptor limit to its
//  hard maximum and cap the connection limit below it.
static void
s_fit_connections (dq_gateway_t *self)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
        getrlimit (RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t) self->cfg.max_connections + 128) {
        uint32_t fit = rl.rlim_cur > 256? (uint32_t) (rl.rlim_cur - 128): 128;
        dq_log_warn ("gateway max_connections=%u nofile=%llu - lowered to %u (raise "
                     "the open files limit, ulimit -n)", self->cfg.max_connections,
                     (unsigned long long) rl.rlim_cur, fit);
        self->cfg.max_connections = fit;
    }
}

dq_gateway_t *
dq_gateway_new (const dq_gateway_cfg_t *cfg, char *err, size_t err_size, int *exit_code)
{
    dq_gateway_t *self = calloc (1, sizeof *self);
    assert (self);
    self->cfg = *cfg;
    self->listen_fd = -1;
    pthread_mutex_init (&self->conns_lock, NULL);
    *exit_code = DQ_GATEWAY_EXIT_CONFIG;
    if (!self->cfg.threads) {
        long cores = sysconf (_SC_NPROCESSORS_ONLN);
        self->cfg.threads = cores > 0? (uint32_t) cores: 1;
    }
    if (!self->cfg.max_body || !self->cfg.max_bulk || !self->cfg.max_connections
    ||  !self->cfg.idle_timeout || !self->cfg.request_timeout_ms) {
        snprintf (err, err_size, "max-body, max-bulk, max-connections, idle-timeout "
                  "and request-timeout must be above zero");
        goto fail;
    }
    if (self->cfg.max_body > DQ_PROTO_PAYLOAD_MAX)
        dq_log_warn ("gateway max_body=%llu - over the protocol's payload limit of %u; "
                     "bigger single jobs get 413 from the broker",
                     (unsigned long long) self->cfg.max_body, DQ_PROTO_PAYLOAD_MAX);
    if (cfg->token_file && s_load_tokens (self, cfg->token_file, err, err_size))
        goto fail;
    if (cfg->allow_types && s_load_types (self, cfg->allow_types, err, err_size))
        goto fail;
    if (!!cfg->tls_cert != !!cfg->tls_key) {
        snprintf (err, err_size, "TLS needs both --tls-cert and --tls-key");
        goto fail;
    }
    if (cfg->tls_cert) {
        if (!MHD_is_feature_supported (MHD_FEATURE_TLS)) {
            snprintf (err, err_size, "this libmicrohttpd has no TLS support");
            goto fail;
        }
        self->tls_cert = s_read_file (cfg->tls_cert, err, err_size);
        if (!self->tls_cert)
            goto fail;
        self->tls_key = s_read_file (cfg->tls_key, err, err_size);
        if (!self->tls_key)
            goto fail;
        if (!strstr (self->tls_cert, "-----BEGIN") || !strstr (self->tls_key, "-----BEGIN")) {
            snprintf (err, err_size, "--tls-cert and --tls-key must be PEM files");
            goto fail;
        }
    }
    bool ipv6 = false;
    if (s_listen (self, err, err_size, exit_code, &ipv6))
        goto fail;
    *exit_code = DQ_GATEWAY_EXIT_CONFIG;
    s_fit_connections (self);
    //  A client gone mid-response must not kill the process.
    signal (SIGPIPE, SIG_IGN);
    dq_gwlink_cfg_t lc = {
        .broker = cfg->broker, .events = cfg->events,
        .timeout_ms = cfg->request_timeout_ms, .curve_secret = cfg->curve_secret,
        .curve_broker_public = cfg->curve_broker_public };
    self->link = dq_gwlink_new (&lc, err, err_size);
    if (!self->link)
        goto fail;
    //  epoll costs two epoll_ctl calls a request here (a connection leaves
    //  the set while suspended and comes back on resume) and reads until
    //  EAGAIN; poll () needs neither but scans every connection each time.
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD
                       | (self->cfg.use_poll? MHD_USE_POLL: MHD_USE_EPOLL)
                       | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_TURBO
                       | MHD_USE_ERROR_LOG;
    if (self->cfg.tls_cert)
        flags |= MHD_USE_TLS;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem opts [16];
    int n = 0;
    #define OPT(o, v, p) opts [n++] = (struct MHD_OptionItem) { o, (intptr_t) (v), p }
    OPT (MHD_OPTION_LISTEN_SOCKET, self->listen_fd, NULL);
    OPT (MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self);
    OPT (MHD_OPTION_NOTIFY_CONNECTION, s_on_connection, self);
    OPT (MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, self);
    OPT (MHD_OPTION_UNESCAPE_CALLBACK, s_unescape, NULL);
    OPT (MHD_OPTION_CONNECTION_LIMIT, self->cfg.max_connections, NULL);
    OPT (MHD_OPTION_CONNECTION_TIMEOUT, self->cfg.idle_timeout, NULL);
    OPT (MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) self->cfg.max_header, NULL);
    if (self->cfg.max_per_ip)
        OPT (MHD_OPTION_PER_IP_CONNECTION_LIMIT, self->cfg.max_per_ip, NULL);
    if (self->cfg.threads > 1)
        OPT (MHD_OPTION_THREAD_POOL_SIZE, self->cfg.threads, NULL);
    if (self->tls_cert) {
        OPT (MHD_OPTION_HTTPS_MEM_CERT, 0, self->tls_cert);
        OPT (MHD_OPTION_HTTPS_MEM_KEY, 0, self->tls_key);
    }
    OPT (MHD_OPTION_END, 0, NULL);
    #undef OPT
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_on_request, self,
                                     MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf (err, err_size, "cannot start the HTTP server%s (see --log-level debug)",
                  self->tls_cert? ": check that --tls-cert and --tls-key are a "
                  "matching PEM certificate and private key": "");
        goto fail;
    }
    dq_log_info ("gateway listen=%s port=%u threads=%u event-loop=%s tls=%s auth=%s "
                 "broker=%s - serving", self->cfg.listen, self->port, self->cfg.threads,
                 self->cfg.use_poll? "poll": "epoll",
                 self->tls_cert? "on": "off", self->ntokens? "on": "off", cfg->broker);
    *exit_code = 0;
    return self;
fail:
    dq_gateway_destroy (&self);
    return NULL;
}

uint16_t
dq_gateway_port (dq_gateway_t *self)
{
    return self->port;
}

static void
s_on_signal (int sig)
{
    (void) sig;
    if (s_signal_target)
        s_signal_target->stopping = 1;
}

int
dq_gateway_run (dq_gateway_t *self)
{
    s_signal_target = self;
    struct sigaction sa = { .sa_handler = s_on_signal };
    sigemptyset (&sa.sa_mask);
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    int rc = 0;
    while (!self->stopping) {
        struct timespec ts = { 0, S_REAP_MS * 1000000L };
        nanosleep (&ts, NULL);
        s_reap (self);
        if (dq_gwlink_failed (self->link)) {
            dq_log_error ("gateway - the broker link failed; exiting");
            rc = DQ_GATEWAY_EXIT_RUNTIME;
            break;
        }
    }
    dq_log_info ("gateway - stopping");
    s_signal_target = NULL;
    return rc;
}

void
dq_gateway_stop (dq_gateway_t *self)
{
    self->stopping = 1;
}

void
dq_gateway_destroy (dq_gateway_t **self_p)
{
    assert (self_p);
    dq_gateway_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon) {
        //  Stop accepting, let the broker answer what is out (briefly),
        //  answer the rest, then close every connection.
        MHD_quiesce_daemon (self->daemon);
        uint64_t until = dq_mono_ms () + S_DRAIN_MS;
        dq_gwlink_stats_t ls;
        do {
            dq_gwlink_stats (self->link, &ls);
            if (ls.inflight == 0)
                break;
            struct timespec ts = { 0, 10 * 1000000L };
            nanosleep (&ts, NULL);
        } while (dq_mono_ms () < until);
        dq_gwlink_stop (self->link);
        MHD_stop_daemon (self->daemon);
        self->daemon = NULL;
    }
    dq_gwlink_destroy (&self->link);
    if (self->listen_fd >= 0)
        close (self->listen_fd);
    while (self->conns) {
        s_conn_t *next = self->conns->next;
        free (self->conns);
        self->conns = next;
    }
    for (uint32_t i = 0; i < self->ntokens; i++)
        free (self->tokens [i]);
    free (self->tokens);
    free (self->token_lens);
    for (uint32_t i = 0; i < self->ntypes; i++)
        free (self->types [i]);
    free (self->types);
    free (self->tls_cert);
    free (self->tls_key);
    pthread_mutex_destroy (&self->conns_lock);
    free (self);
    *self_p = NULL;
}
