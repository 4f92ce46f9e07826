/*  dq_gwlink.c - the gateway's broker link: one I/O thread, one DEALER.

    Each turn of s_run:

      1. poll the DEALER, the SUB (events) and the eventfd that pushers
         write when the incoming list goes from empty to non-empty;
      2. take every pushed op: single jobs join the pending list, anything
         else becomes a call (one request, one rid) and is sent at once;
      3. read every reply: match it to its call by rid, answer the call's
         ops (a batch refused for some of its jobs is split into
         single-job calls; a batch's answer first sends the jobs that
         gathered meanwhile, so the broker commits them while we resume
         the answered connections), and read events, which end ?wait
         holds early;
      4. while fewer than S_BATCHES_INFLIGHT batches are unanswered, send
         the pending jobs as one SUBMIT (more accumulate meanwhile: the
         batch size follows the broker's commit latency);
      5. every S_SCAN_MS: re-send (same rid, same keys) unanswered calls
         that were lost, at growing intervals; fail the ones past their
         deadline; poll STATUS for held jobs; ping the broker when it has
         been silent; recreate the socket when it has been silent with
         calls unanswered (Lazy Pirate).

    Calls live in a list (for scans) and an idmap by rid (for replies).
    Everything here belongs to the link thread except the incoming list
    (mutex) and the counters (atomics).
*/
#include "dq_gwlink.h"

#include <czmq.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "dq_idmap.h"
#include "dq_log.h"
#include "dq_util.h"

//  Coalesced SUBMITs unanswered at once: two, so the broker commits one
//  while the other's fsync runs (its syncs overlap its loop).
#define S_BATCHES_INFLIGHT   2
#define S_RESEND_FIRST_MS    1000   //  first re-send after no answer; doubles
#define S_SCAN_MS            10     //  period of timer scans
#define S_PING_IDLE_MS       1000   //  ping (STATS) after this much silence
#define S_PING_RETRY_MS      50     //  ping again this soon when it could not go
#define S_SILENT_RESET_MS    3000   //  silent this long with calls out: new socket
#define S_POLL_IDS_MAX       1024   //  job ids in one STATUS poll
#define S_WAIT_FIRST_MS      10     //  first STATUS poll of a held job
#define S_WAIT_MAX_MS        500    //  poll interval cap without events
#define S_WAIT_MAX_EVENTS_MS 2000   //  poll interval cap with events
#define S_HWM                100000 //  messages queued on the DEALER each way

typedef enum {
    S_CALL_OP,               //  one op: SUBMIT (JOB or SUBMIT), STATUS, ...
    S_CALL_BATCH,            //  coalesced JOB ops: one SUBMIT
    S_CALL_WAIT_RESULT,      //  RESULT of a held job that became terminal
    S_CALL_POLL,             //  STATUS of held jobs
    S_CALL_PING              //  STATS, to learn the broker is there
} s_call_kind_t;

typedef struct _s_call_t s_call_t;
struct _s_call_t {
    uint64_t rid;
    s_call_kind_t kind;
    dq_gwop_t **ops;         //  OP, WAIT_RESULT: one; BATCH: nops
    uint32_t nops;
    dq_jobspec_t *specs;     //  BATCH: copies of each op's job, in order
    char key [33];           //  generated submission key ("" = none)
    char (*ids) [DQ_GWLINK_ID_MAX];  //  POLL: the held jobs polled
    const char **idp;
    uint32_t nids;
    uint64_t deadline;       //  monotonic ms: give up (503)
    uint32_t timeout_ms;     //  what the deadline was set from
    uint64_t resend_at;      //  monotonic ms: send again
    uint32_t interval;       //  current re-send interval
    uint64_t sent_seq;       //  order of its last send (self->send_seq)
    bool sent;               //  on the current socket
    bool out;                //  BATCH: counted in batches_out
    s_call_t *prev, *next;
};

//  Jobs held for ?wait, one record per job id (several requests may wait
//  for the same job, e.g. with the same Idempotency-Key).
typedef struct {
    char id [DQ_GWLINK_ID_MAX];
    dq_gwop_t *ops;          //  linked by next_
    uint64_t next_poll;      //  monotonic ms
    uint32_t interval;
    bool polling;            //  in a POLL call now
    bool solo;               //  poll alone (a shared poll hit not_found)
} s_wait_t;

struct _dq_gwlink_t {
    dq_gwlink_cfg_t cfg;     //  strings point into the copies below
    char *broker, *events, *curve_secret, *curve_public;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;    //  guards in_head, in_tail, stopping, signalled, wants_jobs
    dq_gwop_t *in_head, *in_tail;
    bool stopping;
    bool signalled;          //  an eventfd write is pending since the last take
    bool wants_jobs;         //  a new single job would be sent at once
    int efd;                 //  eventfd: pushers wake the thread
    atomic_uint_fast64_t last_answer;
    atomic_bool failed;      //  the thread stopped on an error
    //  Counters (dq_gwlink_stats_t), relaxed atomics.
    atomic_uint_fast64_t n_batches, n_batched, n_resends, n_timeouts,
                         n_splits, n_reconnects, n_inflight, n_waiting, n_turns;
    //  Link thread only.
    zsock_t *dealer, *sub;
    zcert_t *cert;           //  CURVE: our certificate, or NULL
    char *server_key;        //  CURVE: broker's public key (Z85)
    dq_idmap_t *calls;       //  rid -> s_call_t
    s_call_t *calls_head, *calls_tail;
    uint64_t next_rid;
    uint64_t send_seq;       //  sends so far, numbering them in order
    char key_prefix [17];    //  random, per link: its generated keys'
    uint64_t key_count;      //  generated keys so far
    uint64_t answered_seq;   //  highest sent_seq of an answered call
    dq_gwop_t *pend_head, *pend_tail;  //  JOB ops not yet in a batch
    uint32_t batches_out;    //  BATCH calls unanswered
    zhashx_t *waits;         //  job id -> s_wait_t
    uint64_t now;            //  monotonic ms, read once per turn
    uint64_t last_recv;      //  monotonic ms of the last message from the broker
    uint64_t down_since;     //  first failed send since the last answer, 0 = none
    uint64_t last_scan, last_ping, last_reset;
    bool down_logged;
};

static void s_send_call (dq_gwlink_t *self, s_call_t *call);

//  ---------------------------------------------------------------------------
//  Ops and calls

static void
s_op_done (dq_gwop_t *op)
{
    op->next_ = NULL;
    op->done (op);
}

static void
s_op_fail (dq_gwop_t *op, int err, uint32_t retry_ms, const char *fmt, ...)
{
    op->err = err;
    op->retry_ms = retry_ms;
    va_list args;
    va_start (args, fmt);
    vsnprintf (op->message, sizeof op->message, fmt, args);
    va_end (args);
    s_op_done (op);
}

//  A held job is durable whatever happens next: answer as without wait.
static void
s_op_accepted (dq_gwop_t *op)
{
    op->err = DQ_OK;
    op->waited = false;
    s_op_done (op);
}

static uint32_t
s_timeout (dq_gwlink_t *self, const dq_gwop_t *op)
{
    return op && op->timeout_ms? op->timeout_ms: self->cfg.timeout_ms;
}

//  Calls that answer requests count as in flight; polls and pings do not.
static bool
s_counted (s_call_kind_t kind)
{
    return kind == S_CALL_OP || kind == S_CALL_BATCH || kind == S_CALL_WAIT_RESULT;
}

static s_call_t *
s_call_new (dq_gwlink_t *self, s_call_kind_t kind, uint32_t nops, uint32_t timeout_ms)
{
    s_call_t *call = calloc (1, sizeof *call);
    assert (call);
    call->kind = kind;
    call->rid = self->next_rid++;
    if (nops) {
        call->ops = calloc (nops, sizeof *call->ops);
        assert (call->ops);
    }
    call->nops = nops;
    call->deadline = self->now + timeout_ms;
    call->timeout_ms = timeout_ms;
    call->interval = S_RESEND_FIRST_MS;
    if (dq_idmap_put (self->calls, call->rid, call))
        assert (false);      //  rids are unique and never 0
    if (s_counted (kind))
        atomic_fetch_add_explicit (&self->n_inflight, 1, memory_order_relaxed);
    call->prev = self->calls_tail;
    if (self->calls_tail)
        self->calls_tail->next = call;
    else
        self->calls_head = call;
    self->calls_tail = call;
    return call;
}

//  Unlink and free a call (not its ops).
static void
s_call_destroy (dq_gwlink_t *self, s_call_t *call)
{
    dq_idmap_remove (self->calls, call->rid);
    if (call->prev)
        call->prev->next = call->next;
    else
        self->calls_head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        self->calls_tail = call->prev;
    if (call->out) {
        call->out = false;
        self->batches_out--;
    }
    if (s_counted (call->kind))
        atomic_fetch_sub_explicit (&self->n_inflight, 1, memory_order_relaxed);
    free (call->ops);
    free (call->specs);
    free (call->ids);
    free (call->idp);
    free (call);
}

//  A submission key: this link's random prefix and a counter. Keys that
//  rise within a gateway land together in the broker's key index, where
//  random ones each dirtied a page of their own: as the index outgrew the
//  cache every commit wrote more, and the broker slowed down run by run.
static void
s_gen_key (dq_gwlink_t *self, char *key)
{
    snprintf (key, 33, "%s%016llx", self->key_prefix,
              (unsigned long long) ++self->key_count);
}

//  A call of one op, sent at once.
static void
s_call_op (dq_gwlink_t *self, dq_gwop_t *op, s_call_kind_t kind)
{
    s_call_t *call = s_call_new (self, kind, 1, s_timeout (self, op));
    call->ops [0] = op;
    if (kind == S_CALL_OP && (op->kind == DQ_GWOP_JOB
                          ||  (op->kind == DQ_GWOP_SUBMIT && !op->key)))
        s_gen_key (self, call->key);
    s_send_call (self, call);
}

//  ---------------------------------------------------------------------------
//  Held jobs (?wait)

static void
s_wait_destroy (dq_gwlink_t *self, s_wait_t *w)
{
    if (self->sub) {
        char topic [DQ_GWLINK_ID_MAX + 8];
        snprintf (topic, sizeof topic, "job %s ", w->id);
        zsock_set_unsubscribe (self->sub, topic);
    }
    zhashx_delete (self->waits, w->id);
    free (w);
}

static void
s_wait_add (dq_gwlink_t *self, dq_gwop_t *op)
{
    s_wait_t *w = zhashx_lookup (self->waits, op->job_id);
    if (!w) {
        w = calloc (1, sizeof *w);
        assert (w);
        snprintf (w->id, sizeof w->id, "%s", op->job_id);
        w->interval = S_WAIT_FIRST_MS;
        w->next_poll = self->now + w->interval;
        zhashx_insert (self->waits, w->id, w);
        if (self->sub) {
            char topic [DQ_GWLINK_ID_MAX + 8];
            snprintf (topic, sizeof topic, "job %s ", w->id);
            zsock_set_subscribe (self->sub, topic);
            //  The job may end before the subscription reaches the broker:
            //  the first poll covers that.
            w->interval = 50;
            w->next_poll = self->now + w->interval;
        }
    }
    op->wait_until_ = self->now + op->wait_ms;
    op->next_ = w->ops;
    w->ops = op;
    atomic_fetch_add_explicit (&self->n_waiting, 1, memory_order_relaxed);
}

//  The job is terminal: fetch its result for every request holding it.
static void
s_wait_finish (dq_gwlink_t *self, s_wait_t *w)
{
    dq_gwop_t *op = w->ops;
    w->ops = NULL;
    while (op) {
        dq_gwop_t *next = op->next_;
        op->next_ = NULL;
        atomic_fetch_sub_explicit (&self->n_waiting, 1, memory_order_relaxed);
        s_call_op (self, op, S_CALL_WAIT_RESULT);
        op = next;
    }
    s_wait_destroy (self, w);
}

static void
s_wait_reschedule (dq_gwlink_t *self, s_wait_t *w)
{
    uint32_t cap = self->sub? S_WAIT_MAX_EVENTS_MS: S_WAIT_MAX_MS;
    w->polling = false;
    w->interval = w->interval * 2 > cap? cap: w->interval * 2;
    w->next_poll = self->now + w->interval;
}

//  Answer held requests whose wait is over; poll the jobs that are due.
static void
s_wait_scan (dq_gwlink_t *self)
{
    if (zhashx_size (self->waits) == 0)
        return;
    size_t n = zhashx_size (self->waits);
    s_wait_t **doomed = malloc (n * sizeof *doomed);
    s_wait_t **due = malloc (n * sizeof *due);
    assert (doomed && due);
    size_t ndoomed = 0, ndue = 0;
    for (s_wait_t *w = zhashx_first (self->waits); w; w = zhashx_next (self->waits)) {
        dq_gwop_t **link = &w->ops;
        while (*link) {
            dq_gwop_t *op = *link;
            if (op->wait_until_ <= self->now) {
                *link = op->next_;
                atomic_fetch_sub_explicit (&self->n_waiting, 1, memory_order_relaxed);
                s_op_accepted (op);
            }
            else
                link = &op->next_;
        }
        if (!w->ops && !w->polling)
            doomed [ndoomed++] = w;
        else
        if (w->ops && !w->polling && self->now >= w->next_poll)
            due [ndue++] = w;
    }
    for (size_t i = 0; i < ndoomed; i++)
        s_wait_destroy (self, doomed [i]);
    //  Due jobs in shared polls of up to S_POLL_IDS_MAX ids; "solo" ones alone.
    size_t i = 0;
    while (i < ndue) {
        uint32_t take = 0;
        if (due [i]->solo)
            take = 1;
        else
            while (i + take < ndue && take < S_POLL_IDS_MAX && !due [i + take]->solo)
                take++;
        s_call_t *call = s_call_new (self, S_CALL_POLL, 0, self->cfg.timeout_ms);
        call->ids = calloc (take, sizeof *call->ids);
        call->idp = calloc (take, sizeof *call->idp);
        assert (call->ids && call->idp);
        for (uint32_t k = 0; k < take; k++) {
            s_wait_t *w = due [i + k];
            w->polling = true;
            memcpy (call->ids [k], w->id, sizeof w->id);
            call->idp [k] = call->ids [k];
        }
        call->nids = take;
        i += take;
        s_send_call (self, call);
    }
    free (doomed);
    free (due);
}

//  ---------------------------------------------------------------------------
//  Sending

static bool
s_is_down (dq_gwlink_t *self)
{
    return self->down_since && self->now - self->down_since >= DQ_GWLINK_DOWN_GRACE_MS;
}

static void s_call_fail (dq_gwlink_t *self, s_call_t *call, int err,
                         uint32_t retry_ms, const char *message);

//  Send (or re-send) a call. A call that cannot be queued (no connection)
//  stays unsent and is retried by the scan, or fails at once when the
//  broker has been unreachable for a while.
static void
s_send_call (dq_gwlink_t *self, s_call_t *call)
{
    dq_msg_t msg;
    dq_gwop_t *op = call->nops? call->ops [0]: NULL;
    switch (call->kind) {
        case S_CALL_BATCH:
            dq_msg_init (&msg, DQ_CMD_SUBMIT);
            msg.jobs = call->specs;
            msg.njobs = call->nops;
            msg.key = call->key;
            break;
        case S_CALL_POLL:
            dq_msg_init (&msg, DQ_CMD_STATUS);
            msg.ids = call->idp;
            msg.nids = call->nids;
            break;
        case S_CALL_PING:
            dq_msg_init (&msg, DQ_CMD_STATS);
            break;
        case S_CALL_WAIT_RESULT:
            dq_msg_init (&msg, DQ_CMD_RESULT);
            msg.id = op->job_id;
            break;
        case S_CALL_OP:
            switch (op->kind) {
                case DQ_GWOP_JOB:
                    dq_msg_init (&msg, DQ_CMD_SUBMIT);
                    msg.jobs = (dq_jobspec_t *) op->jobs;
                    msg.njobs = 1;
                    msg.key = call->key;
                    break;
                case DQ_GWOP_SUBMIT:
                    dq_msg_init (&msg, DQ_CMD_SUBMIT);
                    msg.jobs = (dq_jobspec_t *) op->jobs;
                    msg.njobs = op->njobs;
                    msg.dag_name = op->dag_name;
                    msg.key = op->key? op->key: call->key;
                    break;
                case DQ_GWOP_STATUS:
                    dq_msg_init (&msg, DQ_CMD_STATUS);
                    msg.ids = &op->id;
                    msg.nids = 1;
                    break;
                case DQ_GWOP_RESULT:
                    dq_msg_init (&msg, DQ_CMD_RESULT);
                    msg.id = op->id;
                    break;
                case DQ_GWOP_CANCEL:
                    dq_msg_init (&msg, DQ_CMD_CANCEL);
                    msg.id = op->id;
                    break;
                case DQ_GWOP_STATS:
                    dq_msg_init (&msg, DQ_CMD_STATS);
                    break;
                case DQ_GWOP_DAG:
                    dq_msg_init (&msg, DQ_CMD_DAG);
                    msg.id = op->id;
                    msg.summary = op->summary;
                    msg.offset = op->offset;
                    msg.limit = op->limit;
                    break;
                default:
                    s_call_fail (self, call, DQ_ERR_INTERNAL, 0, "unknown operation");
                    return;
            }
            break;
        default:
            assert (false);
            return;
    }
    msg.rid = call->rid;
    if (dq_msg_send (&msg, zsock_resolve (self->dealer), NULL, 0, ZMQ_DONTWAIT) == 0) {
        //  With ZMQ_IMMEDIATE a queued message means a live connection.
        call->sent = true;
        call->sent_seq = ++self->send_seq;
        call->resend_at = self->now + call->interval;
        self->down_since = 0;
        return;
    }
    if (errno == EMSGSIZE) {
        //  A field over the protocol's limits: no use retrying it.
        s_call_fail (self, call, DQ_ERR_TOO_BIG, 0,
                     "request is over the wire protocol's limits");
        return;
    }
    //  EAGAIN (no connection) or EINTR: the scan tries again, unless the
    //  broker has been unreachable for a while: then answer at once.
    call->sent = false;
    if (!self->down_since)
        self->down_since = self->now;
    if (call->kind == S_CALL_PING) {
        //  Try again soon: readiness should follow the connection closely.
        self->last_ping = self->now - S_PING_IDLE_MS + S_PING_RETRY_MS;
        s_call_destroy (self, call);
    }
    else
    if (s_is_down (self))
        s_call_fail (self, call, DQ_ERR_UNAVAILABLE, 1000, "broker unreachable");
}

//  Send pending single jobs as one SUBMIT, as long as few batches are out.
static void
s_flush_pending (dq_gwlink_t *self)
{
    while (self->pend_head && self->batches_out < S_BATCHES_INFLIGHT) {
        //  Count what fits: jobs, bytes, and no idempotency key twice (the
        //  broker would create both jobs of one submission).
        uint32_t n = 0;
        uint64_t bytes = 0;
        zhashx_t *keys = NULL;
        dq_gwop_t *op = self->pend_head;
        for (; op && n < DQ_GWLINK_BATCH_JOBS; op = op->next_) {
            size_t size = op->jobs [0].payload_size;
            if (n > 0 && bytes + size > DQ_GWLINK_BATCH_BYTES)
                break;
            n++;
            bytes += size;
        }
        //  The deadline counts from when the oldest job arrived.
        uint64_t waited = self->now - self->pend_head->since_;
        uint32_t timeout = self->cfg.timeout_ms > waited?
                           (uint32_t) (self->cfg.timeout_ms - waited): 1;
        s_call_t *call = s_call_new (self, S_CALL_BATCH, n, timeout);
        call->timeout_ms = self->cfg.timeout_ms;
        call->specs = calloc (n, sizeof *call->specs);
        assert (call->specs);
        s_gen_key (self, call->key);
        //  Take the n first ops, leaving key duplicates for the next batch.
        dq_gwop_t **link = &self->pend_head, *last_kept = NULL;
        uint32_t taken = 0;
        for (uint32_t i = 0; i < n && *link; i++) {
            op = *link;
            const char *key = op->jobs [0].key;
            bool dup = false;
            if (key) {
                if (!keys) {
                    keys = zhashx_new ();
                    assert (keys);
                }
                dup = zhashx_insert (keys, key, (void *) 1) != 0;
            }
            if (dup) {
                last_kept = op;
                link = &op->next_;
                continue;
            }
            *link = op->next_;
            op->next_ = NULL;
            call->ops [taken] = op;
            call->specs [taken] = op->jobs [0];
            taken++;
        }
        if (!self->pend_head)
            self->pend_tail = NULL;
        else
        if (!*link)
            self->pend_tail = last_kept;
        zhashx_destroy (&keys);
        call->nops = taken;
        call->out = true;
        self->batches_out++;
        atomic_fetch_add_explicit (&self->n_batches, 1, memory_order_relaxed);
        atomic_fetch_add_explicit (&self->n_batched, taken, memory_order_relaxed);
        s_send_call (self, call);
    }
}

//  ---------------------------------------------------------------------------
//  Answers

static void
s_call_fail (dq_gwlink_t *self, s_call_t *call, int err, uint32_t retry_ms,
             const char *message)
{
    switch (call->kind) {
        case S_CALL_POLL:
            for (uint32_t i = 0; i < call->nids; i++) {
                s_wait_t *w = zhashx_lookup (self->waits, call->ids [i]);
                if (w)
                    s_wait_reschedule (self, w);
            }
            break;
        case S_CALL_WAIT_RESULT:
            s_op_accepted (call->ops [0]);
            break;
        case S_CALL_PING:
            break;
        default:
            for (uint32_t i = 0; i < call->nops; i++)
                s_op_fail (call->ops [i], err, retry_ms, "%s", message);
    }
    s_call_destroy (self, call);
}

//  The job was accepted: answer now, or hold it until terminal.
static void
s_job_accepted (dq_gwlink_t *self, dq_gwop_t *op, const char *id)
{
    snprintf (op->job_id, sizeof op->job_id, "%s", id? id: "");
    op->err = DQ_OK;
    if (op->wait_ms && *op->job_id)
        s_wait_add (self, op);
    else
        s_op_done (op);
}

//  Errors for which a batch refused whole is re-sent job by job: they may
//  concern only some of its jobs. Not BUSY: a full broker would get every
//  job once more, just when it can least afford it; all get 429.
static bool
s_splittable (int code)
{
    return code == DQ_ERR_INVALID || code == DQ_ERR_NOT_FOUND || code == DQ_ERR_TOO_BIG
        || code == DQ_ERR_CYCLE || code == DQ_ERR_PROTOCOL;
}

static void
s_on_batch_reply (dq_gwlink_t *self, s_call_t *call, dq_msg_t *msg)
{
    if (msg->cmd == DQ_CMD_SUBMITTED && msg->nids == call->nops) {
        for (uint32_t i = 0; i < call->nops; i++)
            s_job_accepted (self, call->ops [i], msg->ids [i]);
    }
    else
    if (msg->cmd == DQ_CMD_ERROR && call->nops > 1 && s_splittable ((int) msg->code)) {
        atomic_fetch_add_explicit (&self->n_splits, 1, memory_order_relaxed);
        dq_log_debug ("broker rid=%llu jobs=%u code=%s - batch refused, re-sending "
                      "job by job", (unsigned long long) call->rid, call->nops,
                      dq_err_str ((int) msg->code));
        for (uint32_t i = 0; i < call->nops; i++)
            s_call_op (self, call->ops [i], S_CALL_OP);
    }
    else
    if (msg->cmd == DQ_CMD_ERROR) {
        for (uint32_t i = 0; i < call->nops; i++)
            s_op_fail (call->ops [i], (int) msg->code, msg->retry_ms, "%s",
                       msg->message? msg->message: dq_err_str ((int) msg->code));
    }
    else {
        for (uint32_t i = 0; i < call->nops; i++)
            s_op_fail (call->ops [i], DQ_ERR_INTERNAL, 0, "unexpected %s reply to "
                       "SUBMIT", dq_cmd_str (msg->cmd));
    }
    dq_msg_destroy (&msg);
}

static dq_cmd_t
s_expected (const dq_gwop_t *op)
{
    switch (op->kind) {
        case DQ_GWOP_JOB:
        case DQ_GWOP_SUBMIT: return DQ_CMD_SUBMITTED;
        case DQ_GWOP_STATUS: return DQ_CMD_JOBS;
        case DQ_GWOP_RESULT: return DQ_CMD_OUTPUT;
        case DQ_GWOP_CANCEL: return DQ_CMD_CANCELLED;
        case DQ_GWOP_STATS:  return DQ_CMD_STATS_REPLY;
        case DQ_GWOP_DAG:    return DQ_CMD_DAG_INFO;
    }
    return DQ_CMD_NONE;
}

//  A DAG's whole job list: the broker answers a page at a time, so ask
//  for the next until none is left, gathering them into the first reply.
static void
s_on_dag_page (dq_gwlink_t *self, dq_gwop_t *op, dq_msg_t *msg)
{
    if (!op->reply && op->max_jobs && msg->dag && msg->dag->total > op->max_jobs) {
        s_op_fail (op, DQ_ERR_TOO_BIG, 0, "DAG %s has %u jobs, more than the %u listed "
                   "at once (--max-dag-list): ask for pages with ?offset=0&limit=%u, then "
                   "each next_offset, or for the counts alone with ?jobs=false",
                   op->id, msg->dag->total, op->max_jobs, DQ_PROTO_DAG_JOBS_MAX);
        dq_msg_destroy (&msg);
        return;
    }
    int rc = DQ_OK;
    if (!op->reply)
        op->reply = msg;
    else
        rc = dq_msg_append_infos (op->reply, &msg);
    if (rc != DQ_OK) {
        s_op_fail (op, rc, 0, "%s gathering the pages of DAG %s (at job %u)",
                   rc == DQ_ERR_PROTOCOL? "DAG_INFO points back": "out of memory",
                   op->id, op->offset);
        return;
    }
    if (op->reply->next_offset) {
        op->offset = op->reply->next_offset;
        s_call_op (self, op, S_CALL_OP);
        return;
    }
    op->err = DQ_OK;
    s_op_done (op);
}

static void
s_on_op_reply (dq_gwlink_t *self, s_call_t *call, dq_msg_t *msg)
{
    dq_gwop_t *op = call->ops [0];
    if (msg->cmd == DQ_CMD_ERROR) {
        dq_msg_destroy (&op->reply);     //  pages gathered before it
        op->reply = msg;
        s_op_fail (op, (int) msg->code, msg->retry_ms, "%s",
                   msg->message? msg->message: dq_err_str ((int) msg->code));
        return;
    }
    if (msg->cmd != s_expected (op)) {
        s_op_fail (op, DQ_ERR_INTERNAL, 0, "unexpected %s reply to a %s request",
                   dq_cmd_str (msg->cmd), dq_cmd_str (s_expected (op)));
        dq_msg_destroy (&msg);
        return;
    }
    if (op->kind == DQ_GWOP_JOB) {
        if (msg->nids != 1)
            s_op_fail (op, DQ_ERR_INTERNAL, 0, "broker answered %u ids for one job",
                       msg->nids);
        else
            s_job_accepted (self, op, msg->ids [0]);
        dq_msg_destroy (&msg);
        return;
    }
    if (op->kind == DQ_GWOP_DAG && !op->limit && !op->summary) {
        s_on_dag_page (self, op, msg);
        return;
    }
    op->err = DQ_OK;
    op->reply = msg;
    s_op_done (op);
}

static void
s_on_poll_reply (dq_gwlink_t *self, s_call_t *call, dq_msg_t *msg)
{
    if (msg->cmd == DQ_CMD_JOBS) {
        for (uint32_t i = 0; i < call->nids; i++) {
            s_wait_t *w = zhashx_lookup (self->waits, call->ids [i]);
            if (!w)
                continue;
            const dq_jobinfo_t *info = i < msg->ninfos? &msg->infos [i]: NULL;
            if (info && dq_state_is_terminal (info->state) && w->ops)
                s_wait_finish (self, w);
            else
                s_wait_reschedule (self, w);
        }
    }
    else
    for (uint32_t i = 0; i < call->nids; i++) {
        s_wait_t *w = zhashx_lookup (self->waits, call->ids [i]);
        if (!w)
            continue;
        if (msg->cmd == DQ_CMD_ERROR && msg->code == DQ_ERR_NOT_FOUND && call->nids == 1) {
            //  Gone (expired): nothing to wait for; answer as accepted.
            dq_gwop_t *op = w->ops;
            w->ops = NULL;
            while (op) {
                dq_gwop_t *next = op->next_;
                atomic_fetch_sub_explicit (&self->n_waiting, 1, memory_order_relaxed);
                s_op_accepted (op);
                op = next;
            }
            s_wait_destroy (self, w);
            continue;
        }
        if (msg->cmd == DQ_CMD_ERROR && msg->code == DQ_ERR_NOT_FOUND)
            w->solo = true;
        s_wait_reschedule (self, w);
        if (w->solo)
            w->next_poll = self->now;
    }
    dq_msg_destroy (&msg);
}

static void
s_on_reply (dq_gwlink_t *self, dq_msg_t *msg)
{
    s_call_t *call = dq_idmap_get (self->calls, msg->rid);
    if (!call) {
        //  A late answer to a call already answered or given up.
        dq_msg_destroy (&msg);
        return;
    }
    //  Unlink first: answering may create new calls.
    dq_idmap_remove (self->calls, call->rid);
    if (call->sent_seq > self->answered_seq)
        self->answered_seq = call->sent_seq;
    switch (call->kind) {
        case S_CALL_BATCH:
            //  The jobs that gathered while this batch was out go first:
            //  the broker commits them while we answer this one's requests
            //  (a wake-up per resumed connection), not after.
            call->out = false;
            self->batches_out--;
            s_flush_pending (self);
            s_on_batch_reply (self, call, msg);
            break;
        case S_CALL_OP:
            s_on_op_reply (self, call, msg);
            break;
        case S_CALL_WAIT_RESULT: {
            dq_gwop_t *op = call->ops [0];
            if (msg->cmd == DQ_CMD_OUTPUT) {
                op->err = DQ_OK;
                op->waited = true;
                op->reply = msg;
                s_op_done (op);
            }
            else {
                dq_msg_destroy (&msg);
                s_op_accepted (op);
            }
            break;
        }
        case S_CALL_POLL:
            s_on_poll_reply (self, call, msg);
            break;
        case S_CALL_PING:
            dq_msg_destroy (&msg);
            break;
    }
    s_call_destroy (self, call);
}

static void
s_read_dealer (dq_gwlink_t *self)
{
    void *sock = zsock_resolve (self->dealer);
    for (int i = 0; i < 10000; i++) {
        dq_err_t err;
        char reason [200];
        dq_msg_t *msg = dq_msg_recv (sock, NULL, NULL, ZMQ_DONTWAIT, &err, reason);
        if (!msg) {
            if (err == DQ_OK)
                return;          //  nothing more
            dq_log_warn ("broker - malformed reply dropped: %s", reason);
            continue;
        }
        self->last_recv = self->now;
        self->down_since = 0;
        if (self->down_logged) {
            dq_log_info ("broker endpoint=%s - reachable again", self->cfg.broker);
            self->down_logged = false;
        }
        atomic_store_explicit (&self->last_answer, self->now ? self->now: 1,
                               memory_order_relaxed);
        s_on_reply (self, msg);
    }
}

static void
s_read_events (dq_gwlink_t *self)
{
    void *sock = zsock_resolve (self->sub);
    for (int i = 0; i < 10000; i++) {
        zmq_msg_t topic, body;
        zmq_msg_init (&topic);
        if (zmq_msg_recv (&topic, sock, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&topic);
            return;
        }
        zmq_msg_init (&body);
        bool ok = zmq_msg_more (&topic) && zmq_msg_recv (&body, sock, 0) != -1;
        //  Drop any further frames of a malformed message.
        while (ok && zmq_msg_more (&body)) {
            zmq_msg_t extra;
            zmq_msg_init (&extra);
            zmq_msg_recv (&extra, sock, 0);
            ok = false;
            int more = zmq_msg_more (&extra);
            zmq_msg_close (&extra);
            if (!more)
                break;
        }
        dq_event_t ev;
        char *strbuf = NULL;
        if (ok && dq_event_decode (zmq_msg_data (&topic), zmq_msg_size (&topic),
                                   zmq_msg_data (&body), zmq_msg_size (&body),
                                   &ev, &strbuf) == 0
        &&  ev.kind && !strcmp (ev.kind, "job") && ev.id
        &&  dq_state_is_terminal (ev.state)) {
            s_wait_t *w = zhashx_lookup (self->waits, ev.id);
            if (w && w->ops && !w->polling)
                s_wait_finish (self, w);
            else
            if (w)
                w->next_poll = self->now;    //  poll again as soon as it can
        }
        free (strbuf);
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
}

//  ---------------------------------------------------------------------------
//  Sockets

static zsock_t *
s_dealer_new (dq_gwlink_t *self, char *err, size_t err_size)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock) {
        snprintf (err, err_size, "cannot create a ZeroMQ socket: %s", zmq_strerror (errno));
        return NULL;
    }
    zsock_set_linger (sock, 0);
    zsock_set_immediate (sock, 1);      //  no queueing into a dead connection
    zsock_set_sndhwm (sock, S_HWM);
    zsock_set_rcvhwm (sock, S_HWM);
    zsock_set_reconnect_ivl (sock, 100);
    zsock_set_reconnect_ivl_max (sock, 1000);
    if (self->cert) {
        zcert_apply (self->cert, sock);
        zsock_set_curve_serverkey (sock, self->server_key);
    }
    if (zsock_connect (sock, "%s", self->cfg.broker)) {
        snprintf (err, err_size, "cannot connect to broker endpoint '%s': %s",
                  self->cfg.broker, zmq_strerror (errno));
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

//  Lazy Pirate: a socket that has heard nothing while calls were out is
//  replaced, dropping whatever sat in its queues; every call is re-sent
//  with its rid on the new one.
static void
s_reset_dealer (dq_gwlink_t *self)
{
    char err [256];
    zsock_t *fresh = s_dealer_new (self, err, sizeof err);
    if (!fresh) {
        dq_log_warn ("broker - %s", err);
        return;
    }
    zsock_destroy (&self->dealer);
    self->dealer = fresh;
    self->last_reset = self->now;
    atomic_fetch_add_explicit (&self->n_reconnects, 1, memory_order_relaxed);
    for (s_call_t *c = self->calls_head; c; c = c->next)
        c->sent = false;
    dq_log_debug ("broker endpoint=%s - socket recreated", self->cfg.broker);
}

//  ---------------------------------------------------------------------------
//  Timers

static void
s_scan (dq_gwlink_t *self)
{
    self->last_scan = self->now;
    bool silent = self->now - self->last_recv >= S_SILENT_RESET_MS;
    if (s_is_down (self) && !self->down_logged) {
        dq_log_warn ("broker endpoint=%s - unreachable; requests get 503 until it "
                     "answers (check that dagq-broker runs there)", self->cfg.broker);
        self->down_logged = true;
    }
    //  Calls: re-send, give up, or send the unsent ones.
    bool any_old = false;
    s_call_t *call = self->calls_head;
    while (call) {
        s_call_t *next = call->next;
        if (self->now >= call->deadline) {
            if (call->kind != S_CALL_PING && call->kind != S_CALL_POLL)
                atomic_fetch_add_explicit (&self->n_timeouts, 1, memory_order_relaxed);
            char why [160];
            snprintf (why, sizeof why, "no answer from the broker within %u ms",
                      call->timeout_ms);
            s_call_fail (self, call, DQ_ERR_UNAVAILABLE, 1000, why);
        }
        else
        if (!call->sent)
            s_send_call (self, call);
        else
        if (self->now >= call->resend_at) {
            //  The broker answers one peer's requests in order: if one sent
            //  later was answered, this one was lost (a broker restart).
            //  Otherwise the broker is busy, or the connection is dead,
            //  which the socket reset below deals with; re-sending to a
            //  busy broker would only make it decode the request twice.
            any_old = true;
            if (self->answered_seq > call->sent_seq) {
                atomic_fetch_add_explicit (&self->n_resends, 1, memory_order_relaxed);
                call->interval *= 2;
                s_send_call (self, call);
            }
        }
        call = next;
    }
    if (any_old && silent && self->now - self->last_reset >= S_SILENT_RESET_MS)
        s_reset_dealer (self);
    //  Ping when silent, so readiness and "down" are known without traffic.
    if (self->now - self->last_recv >= S_PING_IDLE_MS
    &&  self->now - self->last_ping >= S_PING_IDLE_MS) {
        self->last_ping = self->now;
        s_call_t *ping = s_call_new (self, S_CALL_PING, 0, S_PING_IDLE_MS * 3);
        s_send_call (self, ping);
    }
    s_wait_scan (self);
}

//  ---------------------------------------------------------------------------
//  The thread

//  Take every pushed op. Returns false when the link is stopping.
static bool
s_take (dq_gwlink_t *self)
{
    pthread_mutex_lock (&self->lock);
    dq_gwop_t *op = self->in_head;
    self->in_head = self->in_tail = NULL;
    self->signalled = false;
    bool stopping = self->stopping;
    pthread_mutex_unlock (&self->lock);
    while (op) {
        dq_gwop_t *next = op->next_;
        op->next_ = NULL;
        if (op->kind == DQ_GWOP_JOB) {
            op->since_ = self->now;
            if (self->pend_tail)
                self->pend_tail->next_ = op;
            else
                self->pend_head = op;
            self->pend_tail = op;
        }
        else
            s_call_op (self, op, S_CALL_OP);
        op = next;
    }
    return !stopping;
}

//  Answer everything still open: the link is stopping.
static void
s_drain_all (dq_gwlink_t *self)
{
    pthread_mutex_lock (&self->lock);
    dq_gwop_t *op = self->in_head;
    self->in_head = self->in_tail = NULL;
    pthread_mutex_unlock (&self->lock);
    while (op) {
        dq_gwop_t *next = op->next_;
        s_op_fail (op, DQ_ERR_UNAVAILABLE, 1000, "gateway is shutting down");
        op = next;
    }
    while ((op = self->pend_head)) {
        self->pend_head = op->next_;
        s_op_fail (op, DQ_ERR_UNAVAILABLE, 1000, "gateway is shutting down");
    }
    self->pend_tail = NULL;
    while (self->calls_head)
        s_call_fail (self, self->calls_head, DQ_ERR_UNAVAILABLE, 1000,
                     "gateway is shutting down");
    s_wait_t *w;
    while ((w = zhashx_first (self->waits))) {
        op = w->ops;
        w->ops = NULL;
        while (op) {
            dq_gwop_t *next = op->next_;
            atomic_fetch_sub_explicit (&self->n_waiting, 1, memory_order_relaxed);
            s_op_accepted (op);
            op = next;
        }
        s_wait_destroy (self, w);
    }
}

static void *
s_run (void *arg)
{
    dq_gwlink_t *self = arg;
    self->now = dq_mono_ms ();
    self->last_recv = self->now - S_PING_IDLE_MS;   //  ping at once
    self->last_reset = self->now;
    bool running = true;
    while (running) {
        zmq_pollitem_t items [3] = {
            { zsock_resolve (self->dealer), 0, ZMQ_POLLIN, 0 },
            { NULL, self->efd, ZMQ_POLLIN, 0 },
            { self->sub? zsock_resolve (self->sub): NULL, 0, ZMQ_POLLIN, 0 }
        };
        //  Tell pushers whether a new single job would be sent right away.
        pthread_mutex_lock (&self->lock);
        self->wants_jobs = self->batches_out < S_BATCHES_INFLIGHT;
        pthread_mutex_unlock (&self->lock);
        bool busy = self->calls_head || self->pend_head || zhashx_size (self->waits);
        long timeout = busy? S_SCAN_MS: 100;
        int rc = zmq_poll (items, self->sub? 3: 2, timeout);
        atomic_fetch_add_explicit (&self->n_turns, 1, memory_order_relaxed);
        self->now = dq_mono_ms ();
        if (rc == -1 && errno != EINTR) {
            dq_log_error ("broker - zmq_poll failed: %s", zmq_strerror (errno));
            atomic_store (&self->failed, true);
            break;
        }
        if (rc > 0 && (items [1].revents & ZMQ_POLLIN)) {
            uint64_t v;
            if (read (self->efd, &v, sizeof v) < 0 && errno != EAGAIN)
                dq_log_warn ("gateway - eventfd read failed: %s", strerror (errno));
        }
        //  Pushed ops are taken every turn, not only when the eventfd fired:
        //  a push racing with the read above is never left behind.
        running = s_take (self);
        if (rc > 0 && (items [0].revents & ZMQ_POLLIN))
            s_read_dealer (self);
        if (rc > 0 && self->sub && (items [2].revents & ZMQ_POLLIN))
            s_read_events (self);
        s_flush_pending (self);
        if (self->now - self->last_scan >= S_SCAN_MS)
            s_scan (self);
    }
    //  From now on pushes are answered at once, on the pushing thread.
    pthread_mutex_lock (&self->lock);
    self->stopping = true;
    pthread_mutex_unlock (&self->lock);
    s_drain_all (self);
    return NULL;
}

//  ---------------------------------------------------------------------------
//  Public API

//  "tcp://*:5555" binds everywhere on a broker; to connect, it means here.
static char *
s_endpoint (const char *ep)
{
    if (!ep)
        return NULL;
    if (!strncmp (ep, "tcp://*:", 8)) {
        char *copy = malloc (strlen (ep) + 16);
        assert (copy);
        sprintf (copy, "tcp://127.0.0.1:%s", ep + 8);
        return copy;
    }
    char *copy = strdup (ep);
    assert (copy);
    return copy;
}

dq_gwlink_t *
dq_gwlink_new (const dq_gwlink_cfg_t *cfg, char *err, size_t err_size)
{
    assert (cfg && cfg->broker);
    dq_gwlink_t *self = calloc (1, sizeof *self);
    assert (self);
    self->cfg = *cfg;
    self->broker = s_endpoint (cfg->broker);
    self->events = cfg->events && *cfg->events? s_endpoint (cfg->events): NULL;
    self->cfg.broker = self->broker;
    self->cfg.events = self->events;
    if (!self->cfg.timeout_ms)
        self->cfg.timeout_ms = 10000;
    self->next_rid = 1;
    self->wants_jobs = true;
    pthread_mutex_init (&self->lock, NULL);
    self->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->calls = dq_idmap_new ();
    self->waits = zhashx_new ();
    if (dq_random_hex (self->key_prefix, 8))
        snprintf (self->key_prefix, sizeof self->key_prefix, "%016llx",
                  (unsigned long long) (dq_now_ms () ^ ((uint64_t) getpid () << 40)));
    if (self->efd < 0 || !self->calls || !self->waits) {
        snprintf (err, err_size, "out of resources: %s", strerror (errno));
        goto fail;
    }
    if (cfg->curve_secret || cfg->curve_broker_public) {
        if (!cfg->curve_secret || !cfg->curve_broker_public) {
            snprintf (err, err_size, "CURVE needs both --curve-secret and "
                      "--curve-broker-public");
            goto fail;
        }
        if (!zsys_has_curve ()) {
            snprintf (err, err_size, "this libzmq has no CURVE support");
            goto fail;
        }
        self->cert = zcert_load (cfg->curve_secret);
        zcert_t *broker = zcert_load (cfg->curve_broker_public);
        if (!self->cert || !broker) {
            snprintf (err, err_size, "cannot read certificate %s",
                      !self->cert? cfg->curve_secret: cfg->curve_broker_public);
            zcert_destroy (&broker);
            goto fail;
        }
        //  A secret certificate has a non-zero secret key.
        const char *secret = zcert_secret_txt (self->cert);
        if (!secret || !strcmp (secret, "0000000000000000000000000000000000000000")) {
            snprintf (err, err_size, "%s holds no secret key (pass the _secret "
                      "certificate)", cfg->curve_secret);
            zcert_destroy (&broker);
            goto fail;
        }
        self->server_key = strdup (zcert_public_txt (broker));
        zcert_destroy (&broker);
    }
    self->dealer = s_dealer_new (self, err, err_size);
    if (!self->dealer)
        goto fail;
    if (self->events) {
        self->sub = zsock_new (ZMQ_SUB);
        if (!self->sub || zsock_connect (self->sub, "%s", self->events)) {
            snprintf (err, err_size, "cannot connect to events endpoint '%s': %s",
                      self->events, zmq_strerror (errno));
            goto fail;
        }
        zsock_set_linger (self->sub, 0);
        zsock_set_rcvhwm (self->sub, S_HWM);
        if (self->cert) {
            zcert_apply (self->cert, self->sub);
            zsock_set_curve_serverkey (self->sub, self->server_key);
        }
    }
    if (pthread_create (&self->thread, NULL, s_run, self)) {
        snprintf (err, err_size, "cannot start the broker link thread");
        goto fail;
    }
    self->started = true;
    dq_log_info ("broker endpoint=%s events=%s timeout_ms=%u - link started",
                 self->cfg.broker, self->events? self->events: "-", self->cfg.timeout_ms);
    return self;
fail:
    dq_gwlink_destroy (&self);
    return NULL;
}

void
dq_gwlink_stop (dq_gwlink_t *self)
{
    pthread_mutex_lock (&self->lock);
    self->stopping = true;
    pthread_mutex_unlock (&self->lock);
    if (self->started) {
        uint64_t one = 1;
        if (write (self->efd, &one, sizeof one) < 0)
            dq_log_warn ("gateway - eventfd write failed: %s", strerror (errno));
        pthread_join (self->thread, NULL);
        self->started = false;
    }
}

void
dq_gwlink_destroy (dq_gwlink_t **self_p)
{
    assert (self_p);
    dq_gwlink_t *self = *self_p;
    if (!self)
        return;
    dq_gwlink_stop (self);
    zsock_destroy (&self->dealer);
    zsock_destroy (&self->sub);
    zcert_destroy (&self->cert);
    free (self->server_key);
    dq_idmap_destroy (&self->calls);
    zhashx_destroy (&self->waits);
    if (self->efd >= 0)
        close (self->efd);
    pthread_mutex_destroy (&self->lock);
    free (self->broker);
    free (self->events);
    free (self);
    *self_p = NULL;
}

void
dq_gwlink_push (dq_gwlink_t *self, dq_gwop_t *op)
{
    assert (self && op && op->done);
    op->err = DQ_OK;
    op->retry_ms = 0;
    op->message [0] = 0;
    op->job_id [0] = 0;
    op->waited = false;
    op->reply = NULL;
    op->next_ = NULL;
    pthread_mutex_lock (&self->lock);
    if (self->stopping) {
        pthread_mutex_unlock (&self->lock);
        s_op_fail (op, DQ_ERR_UNAVAILABLE, 1000, "gateway is shutting down");
        return;
    }
    if (self->in_tail)
        self->in_tail->next_ = op;
    else
        self->in_head = op;
    self->in_tail = op;
    //  Wake the thread only when it would act: single jobs wait anyway
    //  while a batch is out (its answer wakes the thread, which then takes
    //  them all), so under load most pushes cost no system call.
    bool wake = !self->signalled && (op->kind != DQ_GWOP_JOB || self->wants_jobs);
    if (wake)
        self->signalled = true;
    pthread_mutex_unlock (&self->lock);
    if (wake) {
        uint64_t one = 1;
        if (write (self->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            dq_log_warn ("gateway - eventfd write failed: %s", strerror (errno));
    }
}

bool
dq_gwlink_failed (dq_gwlink_t *self)
{
    return atomic_load (&self->failed);
}

uint64_t
dq_gwlink_last_answer (dq_gwlink_t *self)
{
    return atomic_load_explicit (&self->last_answer, memory_order_relaxed);
}

void
dq_gwlink_stats (dq_gwlink_t *self, dq_gwlink_stats_t *stats)
{
    stats->batches = atomic_load_explicit (&self->n_batches, memory_order_relaxed);
    stats->batched_jobs = atomic_load_explicit (&self->n_batched, memory_order_relaxed);
    stats->resends = atomic_load_explicit (&self->n_resends, memory_order_relaxed);
    stats->timeouts = atomic_load_explicit (&self->n_timeouts, memory_order_relaxed);
    stats->splits = atomic_load_explicit (&self->n_splits, memory_order_relaxed);
    stats->reconnects = atomic_load_explicit (&self->n_reconnects, memory_order_relaxed);
    stats->inflight = atomic_load_explicit (&self->n_inflight, memory_order_relaxed);
    stats->waiting = atomic_load_explicit (&self->n_waiting, memory_order_relaxed);
    stats->turns = atomic_load_explicit (&self->n_turns, memory_order_relaxed);
}
