/*  dq_client.c - the client API: one DEALER socket to the broker's frontend.

    Synchronous calls encode the request once, send it, and wait for the
    reply that carries its rid, dropping replies to other rids (stale
    answers to earlier re-sends). If none comes, the same bytes (same rid,
    same idempotency key) are sent again after 1 s, 2 s, 4 s... until the
    call's total timeout: ZeroMQ reconnects by itself, so a broker that
    restarted gets the request again and a SUBMIT whose first reply was lost
    returns the ids it already created.

    The socket is connected on first use, so CURVE keys can be set after
    dq_client_new. Each client owns its ZeroMQ context: a client is one
    object for one thread, and nothing here touches czmq's global state
    except zcert_load for reading certificate files.

    Not done here: retrying BUSY replies (the caller decides, with retry_ms)
    and anything that prints.
*/
#include "dq_client.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define DQ_CLIENT_RESEND_FIRST  1000    //  ms before the first re-send
#define DQ_CLIENT_EAGAIN_RETRY  100     //  ms between tries when the queue is full
#define DQ_CLIENT_HWM           100000  //  messages queued each way
#define DQ_CLIENT_FLUSH_MS      500     //  linger when pipelined sends are unanswered
#define DQ_CLIENT_POLL_FIRST    5       //  ms, first wait interval
#define DQ_CLIENT_POLL_MAX      500     //  ms, longest wait interval
#define DQ_CLIENT_ERROR_SIZE    600
#define DQ_CLIENT_BROKER_MESSAGE_DEFAULT (64 * 1024 * 1024)  //  broker --max-message

struct _dq_client_t {
    void *ctx;                  //  our own ZeroMQ context
    void *sock;                 //  DEALER
    char *endpoint;
    bool connected;             //  connect happens on first use
    int timeout_ms;             //  total time of one synchronous call
    uint64_t rid;               //  last rid used (randomly seeded)
    uint64_t key_prefix;        //  random: the start of generated keys
    uint64_t key_count;         //  generated keys so far
    uint64_t unanswered;        //  pipelined sends not yet matched by a recv
    uint32_t retry_ms;          //  retry_ms of the last ERROR reply
    bool curve;                 //  CURVE keys below are set
    uint8_t curve_public [32];
    uint8_t curve_secret [32];
    uint8_t curve_server [32];
    char error [DQ_CLIENT_ERROR_SIZE];  //  last failure
};

static int
s_fail (dq_client_t *self, int code, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, args);
    va_end (args);
    return code;
}

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

//  Random bytes from the kernel; /dev/urandom if getrandom is missing.
//  Returns 0 or -1.
static int
s_random (void *buf, size_t size)
{
    size_t got = 0;
    while (got < size) {
        ssize_t n = getrandom ((char *) buf + got, size - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    if (got == size)
        return 0;
    int fd = open ("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    while (got < size) {
        ssize_t n = read (fd, (char *) buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    close (fd);
    return got == size? 0: -1;
}

//  n random 64-bit words; without kernel randomness, time, pid and an
//  address (salt) still make words no other process will have.
static void
s_unique_bits (uint64_t *bits, size_t n, const void *salt)
{
    if (s_random (bits, n * sizeof *bits) == 0)
        return;
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    for (size_t i = 0; i < n; i++)
        bits [i] = ((uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec + i)
                 ^ ((uint64_t) getpid () << 32) ^ (uint64_t) (uintptr_t) salt;
}

//  A fresh idempotency key: 32 hex characters, this client's random
//  64-bit prefix and a counter. Keys that rise within a client land
//  together in the broker's key index (random ones each dirtied a page of
//  their own there, which slowed the broker down as the index grew).
static void
s_new_key (dq_client_t *self, char *key)
{
    snprintf (key, 33, "%016llx%016llx", (unsigned long long) self->key_prefix,
              (unsigned long long) ++self->key_count);
}

static uint64_t
s_next_rid (dq_client_t *self)
{
    if (++self->rid == 0)
        self->rid = 1;          //  rid 0 is for messages that need no reply
    return self->rid;
}

//  The call timeout as text: "10 s", "1.5 s".
static const char *
s_seconds (int ms, char *buf, size_t size)
{
    snprintf (buf, size, "%g s", ms / 1000.0);
    return buf;
}

//  ---------------------------------------------------------------------------

dq_client_t *
dq_client_new (const char *endpoint)
{
    if (!endpoint || !*endpoint)
        return NULL;
    dq_client_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->timeout_ms = DQ_CLIENT_TIMEOUT_DEFAULT;
    self->endpoint = strdup (endpoint);
    self->ctx = zmq_ctx_new ();
    if (!self->endpoint || !self->ctx)
        goto fail;
    //  Check the endpoint now with a throwaway socket, so a typo is reported
    //  here rather than as "no reply" later.
    void *probe = zmq_socket (self->ctx, ZMQ_DEALER);
    if (!probe)
        goto fail;
    int zero = 0;
    zmq_setsockopt (probe, ZMQ_LINGER, &zero, sizeof zero);
    int rc = zmq_connect (probe, endpoint);
    zmq_close (probe);
    if (rc)
        goto fail;
    self->sock = zmq_socket (self->ctx, ZMQ_DEALER);
    if (!self->sock)
        goto fail;
    int hwm = DQ_CLIENT_HWM;
    int64_t maxmsg = DQ_PROTO_BODY_MAX;
    int timeout = self->timeout_ms;
    zmq_setsockopt (self->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt (self->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt (self->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt (self->sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    uint32_t seed = 0;
    if (s_random (&seed, sizeof seed))
        seed = (uint32_t) s_now_ms () ^ (uint32_t) getpid ();
    self->rid = seed;
    s_unique_bits (&self->key_prefix, 1, self);
    return self;
fail:
    if (self->sock)
        zmq_close (self->sock);
    if (self->ctx)
        zmq_ctx_term (self->ctx);
    free (self->endpoint);
    free (self);
    return NULL;
}

void
dq_client_destroy (dq_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_client_t *self = *self_p;
    //  Give pipelined requests nobody waited for a moment to leave; a
    //  synchronous call has its answer, and its queued re-sends may go.
    int linger = self->unanswered? DQ_CLIENT_FLUSH_MS: 0;
    zmq_setsockopt (self->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close (self->sock);
    zmq_ctx_term (self->ctx);
    memset (self->curve_secret, 0, sizeof self->curve_secret);
    free (self->endpoint);
    free (self);
    *self_p = NULL;
}

void
dq_client_set_timeout (dq_client_t *self, int timeout_ms)
{
    self->timeout_ms = timeout_ms > 0? timeout_ms: DQ_CLIENT_TIMEOUT_DEFAULT;
    zmq_setsockopt (self->sock, ZMQ_SNDTIMEO, &self->timeout_ms,
                    sizeof self->timeout_ms);
}

int
dq_client_timeout (dq_client_t *self)
{
    return self->timeout_ms;
}

const char *
dq_client_endpoint (dq_client_t *self)
{
    return self->endpoint;
}

//  Load one certificate file; zcert_load also tries "<file>_secret" first.
static zcert_t *
s_load_cert (dq_client_t *self, const char *file)
{
    if (strlen (file) > 240) {
        s_fail (self, -1, "certificate path is too long: %s", file);
        return NULL;
    }
    //  zcert_load reads "<file>_secret" when it exists, else file. Look
    //  at that file first: czmq leaks memory on a file it cannot parse.
    char secret [256];
    snprintf (secret, sizeof secret, "%s_secret", file);
    const char *actual = access (secret, R_OK) == 0? secret: file;
    FILE *f = fopen (actual, "r");
    if (!f) {
        s_fail (self, -1, "cannot read certificate %s: %s", file, strerror (errno));
        return NULL;
    }
    char head [8192];
    size_t n = fread (head, 1, sizeof head - 1, f);
    head [n] = 0;
    fclose (f);
    if (!strstr (head, "public-key")) {
        s_fail (self, -1, "%s is not a CURVE certificate (zcert format)", actual);
        return NULL;
    }
    //  czmq initialises itself on first use and then catches SIGINT and
    //  SIGTERM, which would keep Ctrl-C from stopping a client program:
    //  put the program's own handlers back afterwards.
    struct sigaction old_int, old_term;
    sigaction (SIGINT, NULL, &old_int);
    sigaction (SIGTERM, NULL, &old_term);
    zcert_t *cert = zcert_load (file);
    sigaction (SIGINT, &old_int, NULL);
    sigaction (SIGTERM, &old_term, NULL);
    if (!cert)
        s_fail (self, -1, "%s is not a CURVE certificate (zcert format)", file);
    return cert;
}

int
dq_client_set_curve (dq_client_t *self, const char *secret_cert,
                     const char *broker_public_cert)
{
    if (self->connected)
        return s_fail (self, -1, "CURVE keys must be set before the first request");
    if (!secret_cert || !broker_public_cert)
        return s_fail (self, -1, "CURVE needs this client's secret certificate "
                       "and the broker's public certificate");
    if (!zmq_has ("curve"))
        return s_fail (self, -1, "this libzmq was built without CURVE support");
    zcert_t *mine = s_load_cert (self, secret_cert);
    if (!mine)
        return -1;
    static const uint8_t zeros [32] = { 0 };
    if (memcmp (zcert_secret_key (mine), zeros, 32) == 0) {
        zcert_destroy (&mine);
        return s_fail (self, -1, "%s holds no secret key (give the NAME_secret "
                       "file that dagq keygen wrote)", secret_cert);
    }
    zcert_t *broker = s_load_cert (self, broker_public_cert);
    if (!broker) {
        zcert_destroy (&mine);
        return -1;
    }
    memcpy (self->curve_public, zcert_public_key (mine), 32);
    memcpy (self->curve_secret, zcert_secret_key (mine), 32);
    memcpy (self->curve_server, zcert_public_key (broker), 32);
    zcert_destroy (&mine);
    zcert_destroy (&broker);
    self->curve = true;
    return 0;
}

void
dq_client_make_key (char *key)
{
    uint64_t bits [2];
    s_unique_bits (bits, 2, key);
    snprintf (key, 33, "%016llx%016llx", (unsigned long long) bits [0],
              (unsigned long long) bits [1]);
}

const char *
dq_client_error (dq_client_t *self)
{
    return self->error;
}

//  Connect on first use, after any CURVE keys are set.
static int
s_connect (dq_client_t *self)
{
    if (self->connected)
        return 0;
    if (self->curve
    &&  (zmq_setsockopt (self->sock, ZMQ_CURVE_SERVERKEY, self->curve_server, 32)
    ||   zmq_setsockopt (self->sock, ZMQ_CURVE_PUBLICKEY, self->curve_public, 32)
    ||   zmq_setsockopt (self->sock, ZMQ_CURVE_SECRETKEY, self->curve_secret, 32)))
        return s_fail (self, DQ_ERR_UNAVAILABLE, "cannot set CURVE keys: %s",
                       zmq_strerror (errno));
    if (zmq_connect (self->sock, self->endpoint))
        return s_fail (self, DQ_ERR_UNAVAILABLE, "cannot connect to %s: %s",
                       self->endpoint, zmq_strerror (errno));
    self->connected = true;
    return 0;
}

//  An encoded request body shared by all its copies in flight: re-sends
//  do not copy it (a big DAG would otherwise pile up one copy per re-send
//  in the send queue while the broker is away). libzmq drops a reference
//  from its I/O thread when it is done with a copy.
typedef struct {
    atomic_int refs;
    void *data;                 //  from dq_msg_encode
    size_t size;
} s_body_t;

static s_body_t *
s_body_new (void *data, size_t size)
{
    s_body_t *self = malloc (sizeof *self);
    if (!self)
        return NULL;
    atomic_init (&self->refs, 1);
    self->data = data;
    self->size = size;
    return self;
}

static void
s_body_unref (void *data, void *hint)
{
    (void) data;
    s_body_t *self = hint;
    if (atomic_fetch_sub (&self->refs, 1) == 1) {
        free (self->data);
        free (self);
    }
}

//  Send one encoded request. Returns 0, or -1 with errno (EAGAIN: the
//  queue is full, nothing was sent).
static int
s_send_body (dq_client_t *self, dq_cmd_t cmd, s_body_t *body, int flags)
{
    const char *name = dq_cmd_str (cmd);
    if (zmq_send (self->sock, DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE,
                  ZMQ_SNDMORE | flags) == -1)
        return -1;
    //  The rest of a started message is always accepted.
    if (zmq_send (self->sock, name, strlen (name), ZMQ_SNDMORE) == -1)
        return -1;
    zmq_msg_t frame;
    atomic_fetch_add (&body->refs, 1);
    if (zmq_msg_init_data (&frame, body->data, body->size, s_body_unref, body)) {
        s_body_unref (NULL, body);
        return -1;
    }
    if (zmq_msg_send (&frame, self->sock, 0) == -1) {
        zmq_msg_close (&frame);
        return -1;
    }
    return 0;
}

//  Turn the reply to our request into a result.
static int
s_take_reply (dq_client_t *self, dq_msg_t *msg, dq_cmd_t request,
              dq_cmd_t expect, dq_msg_t **reply)
{
    if (msg->cmd == DQ_CMD_ERROR) {
        int code = (int) msg->code;
        self->retry_ms = msg->retry_ms;
        const char *text = msg->message && *msg->message? msg->message: NULL;
        if (code <= DQ_OK || code >= DQ_ERR_COUNT_)
            code = s_fail (self, DQ_ERR_PROTOCOL, "broker answered error code "
                           "%d: %s", code, text? text: "(no message)");
        else
            s_fail (self, code, "%s", text? text: dq_err_str (code));
        dq_msg_destroy (&msg);
        return code;
    }
    if (msg->cmd != expect) {
        s_fail (self, 0, "broker answered %s to %s (expected %s)",
                dq_cmd_str (msg->cmd), dq_cmd_str (request), dq_cmd_str (expect));
        dq_msg_destroy (&msg);
        return DQ_ERR_PROTOCOL;
    }
    *reply = msg;
    return DQ_OK;
}

//  One synchronous request: send, wait for the reply with its rid, re-send
//  after 1, 2, 4... s, give up after timeout_ms.
static int
s_call (dq_client_t *self, dq_msg_t *req, dq_cmd_t expect, int timeout_ms,
        dq_msg_t **reply)
{
    *reply = NULL;
    self->error [0] = 0;
    self->retry_ms = 0;
    int rc = s_connect (self);
    if (rc)
        return rc;
    req->rid = s_next_rid (self);
    void *data;
    size_t size;
    if (dq_msg_encode (req, &data, &size))
        return s_fail (self, DQ_ERR_TOO_BIG, "%s request is over a protocol "
                       "limit (ids, names and keys 256 bytes, errors 4096, payloads 64 MiB, "
                       "messages 256 MiB)", dq_cmd_str (req->cmd));
    s_body_t *body = s_body_new (data, size);
    if (!body) {
        free (data);
        return s_fail (self, DQ_ERR_INTERNAL, "out of memory");
    }
    int64_t start = s_now_ms ();
    int64_t deadline = start + timeout_ms;
    int64_t next_send = start;
    int64_t interval = DQ_CLIENT_RESEND_FIRST;
    bool sent = false;
    char bad [200] = "";        //  why the last undecodable reply was dropped
    rc = -1;
    while (rc == -1) {
        int64_t now = s_now_ms ();
        if (now >= deadline)
            break;
        if (now >= next_send) {
            if (s_send_body (self, req->cmd, body, ZMQ_DONTWAIT) == 0) {
                sent = true;
                next_send = now + interval;
                interval *= 2;
            }
            else
            if (errno == EAGAIN || errno == EINTR)
                next_send = now + DQ_CLIENT_EAGAIN_RETRY;
            else {
                rc = s_fail (self, DQ_ERR_UNAVAILABLE, "cannot send to %s: %s",
                             self->endpoint, zmq_strerror (errno));
                break;
            }
        }
        int64_t until = next_send < deadline? next_send: deadline;
        zmq_pollitem_t item = { self->sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) (until > now? until - now: 0)) == -1
        &&  errno != EINTR) {
            rc = s_fail (self, DQ_ERR_UNAVAILABLE, "poll failed: %s",
                         zmq_strerror (errno));
            break;
        }
        //  Read everything waiting; keep ours, drop the rest.
        while (rc == -1) {
            dq_err_t err;
            char reason [200];
            dq_msg_t *msg = dq_msg_recv (self->sock, NULL, NULL, ZMQ_DONTWAIT,
                                         &err, reason);
            if (!msg) {
                if (err == DQ_OK)
                    break;
                snprintf (bad, sizeof bad, "%s", reason);
                continue;
            }
            if (msg->rid != req->rid) {
                dq_msg_destroy (&msg);
                continue;
            }
            rc = s_take_reply (self, msg, req->cmd, expect, reply);
        }
    }
    s_body_unref (NULL, body);
    if (rc == -1) {
        char secs [32];
        //  The broker's ZMQ_MAXMSGSIZE drops bigger messages with the
        //  connection, silently: say so when that may be why.
        char hint [160] = "";
        if (size > DQ_CLIENT_BROKER_MESSAGE_DEFAULT)
            snprintf (hint, sizeof hint, "; the request was %zu MiB, over the "
                      "broker's default --max-message of %d MiB, past which it "
                      "drops the connection unanswered", size >> 20,
                      DQ_CLIENT_BROKER_MESSAGE_DEFAULT >> 20);
        if (!sent)
            rc = s_fail (self, DQ_ERR_UNAVAILABLE, "could not send to broker at "
                         "%s within %s (send queue full)", self->endpoint,
                         s_seconds (timeout_ms, secs, sizeof secs));
        else
        if (*bad)
            rc = s_fail (self, DQ_ERR_UNAVAILABLE, "no valid reply from broker "
                         "at %s within %s (dropped a malformed reply: %s)%s",
                         self->endpoint, s_seconds (timeout_ms, secs, sizeof secs),
                         bad, hint);
        else
            rc = s_fail (self, DQ_ERR_UNAVAILABLE, "no reply from broker at %s "
                         "within %s%s", self->endpoint,
                         s_seconds (timeout_ms, secs, sizeof secs), hint);
    }
    return rc;
}

static int
s_check_id (dq_client_t *self, const char *id)
{
    if (!id || !*id)
        return s_fail (self, DQ_ERR_INVALID, "an id is required");
    if (strlen (id) > 256)
        return s_fail (self, DQ_ERR_INVALID, "id is longer than 256 bytes");
    return DQ_OK;
}

int
dq_client_submit (dq_client_t *self, const dq_jobspec_t *jobs, uint32_t njobs,
                  const char *dag_name, const char *key, dq_msg_t **reply,
                  uint32_t *retry_ms)
{
    *reply = NULL;
    if (retry_ms)
        *retry_ms = 0;
    if (!jobs || njobs == 0)
        return s_fail (self, DQ_ERR_INVALID, "a submission needs at least one job");
    if (njobs > DQ_PROTO_ARRAY_MAX)
        return s_fail (self, DQ_ERR_TOO_BIG, "%u jobs in one submission, over "
                       "the protocol limit of %u", njobs, DQ_PROTO_ARRAY_MAX);
    char generated [33];
    if (!key) {
        s_new_key (self, generated);
        key = generated;
    }
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_SUBMIT);
    req.key = key;
    req.dag_name = dag_name;
    req.jobs = (dq_jobspec_t *) jobs;       //  encoding only reads them
    req.njobs = njobs;
    int rc = s_call (self, &req, DQ_CMD_SUBMITTED, self->timeout_ms, reply);
    if (rc == DQ_ERR_BUSY && retry_ms)
        *retry_ms = self->retry_ms;
    if (rc == DQ_OK && (*reply)->nids != njobs) {
        rc = s_fail (self, DQ_ERR_PROTOCOL, "broker returned %u ids for %u jobs",
                     (*reply)->nids, njobs);
        dq_msg_destroy (reply);
    }
    return rc;
}

//  STATUS with a given call timeout.
static int
s_status (dq_client_t *self, const char **ids, uint32_t n, int timeout_ms,
          dq_msg_t **reply)
{
    *reply = NULL;
    if (!ids || n == 0)
        return s_fail (self, DQ_ERR_INVALID, "STATUS needs at least one id");
    if (n > DQ_PROTO_STATUS_IDS_MAX)
        return s_fail (self, DQ_ERR_TOO_BIG, "%u ids in one STATUS, over the "
                       "protocol limit of %u", n, DQ_PROTO_STATUS_IDS_MAX);
    for (uint32_t i = 0; i < n; i++) {
        int rc = s_check_id (self, ids [i]);
        if (rc)
            return rc;
    }
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_STATUS);
    req.ids = ids;
    req.nids = n;
    int rc = s_call (self, &req, DQ_CMD_JOBS, timeout_ms, reply);
    if (rc == DQ_OK && (*reply)->ninfos != n) {
        rc = s_fail (self, DQ_ERR_PROTOCOL, "broker returned %u job states for "
                     "%u ids", (*reply)->ninfos, n);
        dq_msg_destroy (reply);
    }
    return rc;
}

int
dq_client_status (dq_client_t *self, const char **ids, uint32_t n,
                  dq_msg_t **reply)
{
    return s_status (self, ids, n, self->timeout_ms, reply);
}

int
dq_client_result (dq_client_t *self, const char *id, dq_msg_t **reply)
{
    *reply = NULL;
    int rc = s_check_id (self, id);
    if (rc)
        return rc;
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_RESULT);
    req.id = id;
    return s_call (self, &req, DQ_CMD_OUTPUT, self->timeout_ms, reply);
}

int
dq_client_cancel (dq_client_t *self, const char *id, uint64_t *count)
{
    if (count)
        *count = 0;
    int rc = s_check_id (self, id);
    if (rc)
        return rc;
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_CANCEL);
    req.id = id;
    dq_msg_t *reply;
    rc = s_call (self, &req, DQ_CMD_CANCELLED, self->timeout_ms, &reply);
    if (rc == DQ_OK) {
        if (count)
            *count = reply->count;
        dq_msg_destroy (&reply);
    }
    return rc;
}

int
dq_client_stats (dq_client_t *self, dq_msg_t **reply)
{
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_STATS);
    return s_call (self, &req, DQ_CMD_STATS_REPLY, self->timeout_ms, reply);
}

static int
s_dag (dq_client_t *self, const char *id, bool summary, uint32_t offset,
       uint32_t limit, dq_msg_t **reply)
{
    *reply = NULL;
    int rc = s_check_id (self, id);
    if (rc)
        return rc;
    if (limit > DQ_PROTO_DAG_JOBS_MAX)
        return s_fail (self, DQ_ERR_TOO_BIG, "a DAG page is at most %u jobs, not %u",
                       DQ_PROTO_DAG_JOBS_MAX, limit);
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_DAG);
    req.id = id;
    req.summary = summary;
    req.offset = offset;
    req.limit = limit;
    rc = s_call (self, &req, DQ_CMD_DAG_INFO, self->timeout_ms, reply);
    if (rc == DQ_OK && !(*reply)->dag) {
        rc = s_fail (self, DQ_ERR_PROTOCOL, "DAG_INFO reply without 'dag'");
        dq_msg_destroy (reply);
    }
    return rc;
}

int
dq_client_dag (dq_client_t *self, const char *id, dq_msg_t **reply)
{
    //  Page by page (the broker lists at most DQ_PROTO_DAG_JOBS_MAX jobs a
    //  reply), gathered into the first page's reply.
    int rc = s_dag (self, id, false, 0, 0, reply);
    while (rc == DQ_OK && (*reply)->next_offset) {
        uint32_t at = (*reply)->next_offset;
        dq_msg_t *page;
        rc = s_dag (self, id, false, at, 0, &page);
        if (rc == DQ_OK)
            rc = dq_msg_append_infos (*reply, &page);
        if (rc == DQ_ERR_PROTOCOL || rc == DQ_ERR_INTERNAL)
            rc = s_fail (self, rc, "%s gathering the pages of DAG %s (at job %u)",
                         rc == DQ_ERR_PROTOCOL? "DAG_INFO points back": "out of memory",
                         id, at);
        if (rc != DQ_OK)
            dq_msg_destroy (reply);
    }
    return rc;
}

int
dq_client_dag_page (dq_client_t *self, const char *id, uint32_t offset, uint32_t limit,
                    dq_msg_t **reply)
{
    return s_dag (self, id, false, offset, limit, reply);
}

int
dq_client_dag_summary (dq_client_t *self, const char *id, dq_msg_t **reply)
{
    return s_dag (self, id, true, 0, 0, reply);
}

//  Sleep ms, not reading the socket (nothing is due on it between calls).
static void
s_sleep_ms (int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = { (time_t) (ms / 1000), (long) (ms % 1000) * 1000000 };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

int
dq_client_wait (dq_client_t *self, const char **ids, uint32_t n,
                int timeout_ms, dq_msg_t **reply)
{
    if (reply)
        *reply = NULL;
    if (n == 0)
        return DQ_OK;
    if (!ids)
        return s_fail (self, DQ_ERR_INVALID, "no ids to wait for");
    int64_t deadline = timeout_ms < 0? INT64_MAX: s_now_ms () + timeout_ms;
    int64_t interval = DQ_CLIENT_POLL_FIRST;
    bool answered = false;      //  the broker answered at least once
    dq_msg_t *last = NULL;
    //  Polls ask only for ids not yet terminal (a finished job may have to
    //  be read from the broker's store). Up to one chunk, a last STATUS of
    //  them all makes the reply describe them all.
    const char **pending = malloc (n * sizeof (char *));
    uint32_t npending = n;
    if (!pending)
        return s_fail (self, DQ_ERR_INTERNAL, "out of memory");
    memcpy (pending, ids, n * sizeof (char *));
    int rc = DQ_OK;
    while (true) {
        uint32_t kept = 0;
        for (uint32_t at = 0; at < npending; at += DQ_PROTO_STATUS_IDS_MAX) {
            uint32_t chunk = npending - at < DQ_PROTO_STATUS_IDS_MAX
                           ? npending - at: DQ_PROTO_STATUS_IDS_MAX;
            //  A poll may outlast the deadline by up to a second, so a busy
            //  broker is not mistaken for an absent one.
            int64_t left = deadline - s_now_ms ();
            if (left < DQ_CLIENT_RESEND_FIRST)
                left = DQ_CLIENT_RESEND_FIRST;
            int call_ms = left < self->timeout_ms? (int) left: self->timeout_ms;
            dq_msg_t *jobs;
            const char **batch = pending + at;
            rc = s_status (self, batch, chunk, call_ms, &jobs);
            if (rc) {
                if (rc == DQ_ERR_UNAVAILABLE && answered && s_now_ms () >= deadline)
                    rc = DQ_CLIENT_TIMED_OUT;
                goto done;
            }
            answered = true;
            for (uint32_t i = 0; i < chunk; i++)
                if (!dq_state_is_terminal (jobs->infos [i].state))
                    pending [kept++] = batch [i];
            dq_msg_destroy (&last);
            last = jobs;
        }
        npending = kept;
        if (npending == 0) {
            if (reply && n <= DQ_PROTO_STATUS_IDS_MAX && last->ninfos != n) {
                dq_msg_destroy (&last);
                rc = s_status (self, ids, n, self->timeout_ms, &last);
            }
            goto done;
        }
        int64_t left = deadline - s_now_ms ();
        if (left <= 0) {
            rc = DQ_CLIENT_TIMED_OUT;
            s_fail (self, rc, "timed out waiting for %u job%s", n, n == 1? "": "s");
            goto done;
        }
        s_sleep_ms (interval < left? interval: left);
        interval = interval * 2 < DQ_CLIENT_POLL_MAX? interval * 2: DQ_CLIENT_POLL_MAX;
    }
done:
    free (pending);
    if (reply)
        *reply = last;
    else
        dq_msg_destroy (&last);
    return rc;
}

uint64_t
dq_client_send (dq_client_t *self, dq_msg_t *req)
{
    self->error [0] = 0;
    if (s_connect (self))
        return 0;
    req->rid = s_next_rid (self);
    //  Blocks at most the call timeout (ZMQ_SNDTIMEO) when the queue is full.
    if (dq_msg_send (req, self->sock, NULL, 0, 0)) {
        char secs [32];
        if (errno == EMSGSIZE)
            s_fail (self, 0, "%s request is over a protocol limit",
                    dq_cmd_str (req->cmd));
        else
        if (errno == EAGAIN)
            s_fail (self, 0, "could not send to broker at %s within %s (send "
                    "queue full)", self->endpoint,
                    s_seconds (self->timeout_ms, secs, sizeof secs));
        else
            s_fail (self, 0, "cannot send to %s: %s", self->endpoint,
                    zmq_strerror (errno));
        return 0;
    }
    self->unanswered++;
    return req->rid;
}

dq_msg_t *
dq_client_recv (dq_client_t *self, int timeout_ms, dq_err_t *err)
{
    dq_err_t dummy;
    if (!err)
        err = &dummy;
    *err = DQ_OK;
    if (s_connect (self)) {
        *err = DQ_ERR_UNAVAILABLE;
        return NULL;
    }
    int64_t deadline = timeout_ms < 0? INT64_MAX: s_now_ms () + timeout_ms;
    while (true) {
        char reason [200];
        dq_msg_t *msg = dq_msg_recv (self->sock, NULL, NULL, ZMQ_DONTWAIT, err,
                                     reason);
        if (msg) {
            if (self->unanswered)
                self->unanswered--;
            return msg;
        }
        if (*err != DQ_OK) {
            s_fail (self, 0, "malformed reply from broker: %s", reason);
            return NULL;
        }
        int64_t now = s_now_ms ();
        if (now >= deadline)
            break;
        zmq_pollitem_t item = { self->sock, 0, ZMQ_POLLIN, 0 };
        long wait = deadline == INT64_MAX? -1: (long) (deadline - now);
        if (zmq_poll (&item, 1, wait) == -1 && errno != EINTR) {
            *err = DQ_ERR_UNAVAILABLE;
            s_fail (self, 0, "poll failed: %s", zmq_strerror (errno));
            return NULL;
        }
    }
    char secs [32];
    *err = DQ_ERR_UNAVAILABLE;
    s_fail (self, 0, "no reply from broker at %s within %s", self->endpoint,
            s_seconds (timeout_ms, secs, sizeof secs));
    return NULL;
}

void *
dq_client_socket (dq_client_t *self)
{
    s_connect (self);
    return self->sock;
}
