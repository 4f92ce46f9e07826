/*  dq_broker.c - the broker's event loop and message handlers.

    One thread, no locks. dq_broker_run turns this loop:

      1. poll the frontend, the backend and the store's sync thread; read
         a bounded batch of messages (backend first: results free
         capacity);
      2. decode each (dq_proto) and dispatch it through s_client_handlers /
         s_worker_handlers to s_handle_<command>; handlers change memory,
         append to the open store transaction and queue their replies
         (s_queue_*), never send;
      3. pop due deadlines from the heap (job timeouts, delayed jobs and
         retries, retention of finished jobs), heartbeat idle workers and
         drop silent ones (their jobs go back to their queues);
      4. pair ready jobs with free workers (dq_sched_next) and queue one JOB
         message per worker;
      5. commit the store once for everything above (group commit); a failed
         commit is fail-stop: nothing of the batch is acknowledged. While
         the syncer is busy the commit waits for it (s_commit_later), so
         one commit covers the turns one sync takes;
      6. send the queued replies, ACKs, JOBs and events of every batch
         whose commit is on disk. With --sync full a thread fdatasyncs the
         WAL (dq_store_sync_async), so a batch's messages go out on a later
         turn, once its sync is done; the loop reads and commits the next
         batches meanwhile. A failed sync is fail-stop too. A JOB for a job
         whose readiness was on disk before this turn goes out at once
         (s_ready_on_disk): dispatches are not stored.

    The poll timeout is the earliest deadline in the heap, capped at a
    quarter of the heartbeat interval.
*/
#include "dq_broker.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <zmq.h>

#include "dq_dag.h"
#include "dq_heap.h"
#include "dq_seqmap.h"
#include "dq_log.h"
#include "dq_mem.h"
#include "dq_proto.h"
#include "dq_rec.h"
#include "dq_registry.h"
#include "dq_sched.h"
#include "dq_store.h"
#include "dq_util.h"

#define DQ_ID_MAX 64

//  A message waiting for the commit. Frames are encoded when queued, so
//  the records they came from may change or go before the flush.
typedef struct {
    void *sock;
    uint8_t rid [256];
    size_t rid_size;
    dq_cmd_t cmd;            //  DQ_CMD_NONE: an event, evs [body_size]
    void *body;
    size_t body_size;
    uint64_t *jobs;          //  JOB: the jobs' sequences, to undo on failure
    uint32_t njobs;
    uint32_t worker;         //  JOB: the worker's number
} s_out_t;

//  An event waiting for the commit, with its strings inline: events are
//  one per finished job, so they are queued without allocating.
typedef struct {
    dq_event_t ev;           //  pointers set when sent
    char id [DQ_ID_MAX], dag_id [DQ_ID_MAX], kind [8];
    char type [DQ_PROTO_TYPE_MAX + 1];
} s_evslot_t;

//  The end of a commit's messages in the out queue, and that commit.
typedef struct {
    size_t end;
    uint64_t n;
} s_mark_t;

//  An idempotency key: the jobs its first submission created.
typedef struct {
    char *key;
    uint64_t first;
    uint32_t count;
    uint64_t dag;
    uint64_t created_ms;
} s_key_t;

struct _dq_broker_t {
    dq_broker_cfg_t cfg;
    zsock_t *frontend, *backend, *events;
    void *fe, *be, *pub;     //  their libzmq handles
    zactor_t *auth;          //  CURVE authenticator, or NULL
    zhashx_t *worker_keys;   //  with --curve-workers: keys allowed on the backend
    dq_store_t *store;       //  NULL with --memory
    dq_seqmap_t *jobs;       //  sequence -> dq_bjob_t (owned)
    dq_seqmap_t *dags;       //  sequence -> dq_bdag_t (owned)
    zhashx_t *keys;          //  key -> s_key_t (owned)
    zlistx_t *key_order;     //  s_key_t in creation order, for expiry
    zlistx_t *pending_workers;  //  workers given jobs this turn
    dq_sched_t *sched;
    dq_registry_t *registry;
    dq_dag_t *dag;
    dq_heap_t *timers;       //  jobs by deadline_ms
    //  With a store, finished jobs outside DAGs and without children leave
    //  memory once the turn ends (they are "cold"): STATUS and RESULT read
    //  them from the store, retention deletes them there (s_cold_expire).
    uint64_t *evict;         //  finished this turn: sequences to evict
    size_t nevict, evict_cap;
    //  Finished DAGs go cold too (s_dag_chill): their jobs leave memory,
    //  the DAG's record stays for its retention.
    uint64_t *chill;         //  DAGs finished this turn
    size_t nchill, chill_cap;
    uint64_t *cold_dags;     //  cold DAGs from cold_dags_head, in the order
                             //  they went cold (at start: id order)
    size_t ncold_dags, cold_dags_head, cold_dags_cap;
    uint64_t cold;           //  cold jobs in the store
    uint64_t cold_ms, cold_id;  //  retention's cursor in the store
    uint64_t cold_checked;   //  wall ms (now) of its last pass
    bool cold_more;          //  the last pass stopped at its limit
    char broker_id [32];
    size_t broker_id_len;
    uint64_t next_seq;
    uint64_t stored_seq;     //  next_seq as last written to the store
    uint64_t unfinished, unfinished_bytes;
    uint64_t tick;
    uint64_t now;            //  wall clock ms, read once per turn
    uint64_t started_ms;
    uint64_t last_beat;      //  monotonic ms of the last heartbeat pass
    uint64_t space_checked;  //  monotonic ms of the last disk-space check
    bool space_full;
    char space_reason [200];
    s_out_t *out;
    size_t nout, out_cap;
    s_evslot_t *evs;         //  the events of the out queue
    size_t nevs, evs_cap;
    //  Committed messages waiting for their commit to reach the disk (with
    //  the store's syncer): out [0, marks [i].end) needs commit marks [i].n.
    s_mark_t *marks;
    size_t nmarks, marks_cap;
    int sync_fd;             //  the store's syncer, -1 if commits sync
    uint32_t commit_later;   //  turns since the last commit (s_commit_later)
    uint64_t durable;        //  commits known to be on disk (with the syncer)
    uint64_t dispatch_hist [DQ_PROTO_HIST_BUCKETS];
    uint64_t bad_logged, bad_window;  //  throttle for bad-input log lines
    volatile sig_atomic_t stopping;
    int exit_code;
};

static dq_broker_t *s_signal_target;

//  ---------------------------------------------------------------------------
//  Ids: "<broker>-<seq>" for jobs, "<broker>-d<seq>" for DAGs.

//  Ids are formatted for every message about a job: no snprintf.
static void
s_format_id (dq_broker_t *self, bool dag, uint64_t seq, char *buf)
{
    if (!self->broker_id_len)
        self->broker_id_len = strlen (self->broker_id);
    size_t n = self->broker_id_len;
    memcpy (buf, self->broker_id, n);
    buf [n++] = '-';
    if (dag)
        buf [n++] = 'd';
    char digits [24];
    int k = 0;
    do {
        digits [k++] = (char) ('0' + seq % 10);
        seq /= 10;
    } while (seq);
    while (k)
        buf [n++] = digits [--k];
    buf [n] = 0;
}

static void
s_job_id (dq_broker_t *self, uint64_t seq, char *buf)
{
    s_format_id (self, false, seq, buf);
}

static void
s_dag_id (dq_broker_t *self, uint64_t seq, char *buf)
{
    s_format_id (self, true, seq, buf);
}

//  Parse an id of this broker. Returns 0 and the sequence, -1 if malformed
//  or issued by another broker (why in err, if given).
static int
s_parse_id (dq_broker_t *self, const char *id, bool *is_dag, uint64_t *seq,
            char *err, size_t err_size)
{
    *is_dag = false;
    const char *dash = strrchr (id, '-');
    if (!dash || dash == id) {
        if (err)
            snprintf (err, err_size, "'%.64s' is not a dagq id", id);
        return -1;
    }
    size_t blen = (size_t) (dash - id);
    if (blen != strlen (self->broker_id) || memcmp (id, self->broker_id, blen)) {
        if (err)
            snprintf (err, err_size, "'%.64s' was not issued by this broker (%s)",
                      id, self->broker_id);
        return -1;
    }
    const char *num = dash + 1;
    *is_dag = *num == 'd';
    if (*is_dag)
        num++;
    if (*num < '1' || *num > '9' || dq_parse_u64 (num, 1, UINT64_MAX, seq)) {
        if (err)
            snprintf (err, err_size, "'%.64s' is not a dagq id", id);
        return -1;
    }
    return 0;
}

static dq_bjob_t *
s_job (dq_broker_t *self, uint64_t seq)
{
    return dq_seqmap_get (self->jobs, seq);
}

static dq_bjob_t *
s_job_by_id (dq_broker_t *self, const char *id)
{
    bool is_dag;
    uint64_t seq;
    if (s_parse_id (self, id, &is_dag, &seq, NULL, 0) || is_dag)
        return NULL;
    return s_job (self, seq);
}

//  Log a line about bad input at most 10 times a second, so a peer sending
//  garbage cannot flood the log.
static void
s_log_bad (dq_broker_t *self, const char *fmt, ...)
{
    uint64_t window = dq_mono_ms () / 1000;
    if (window != self->bad_window) {
        self->bad_window = window;
        self->bad_logged = 0;
    }
    if (++self->bad_logged > 10)
        return;
    char line [400];
    va_list args;
    va_start (args, fmt);
    vsnprintf (line, sizeof line, fmt, args);
    va_end (args);
    dq_log_warn ("%s", line);
}

//  ---------------------------------------------------------------------------
//  Out queue: everything sent is queued and flushed after the commit.

static s_out_t *
s_out_push (dq_broker_t *self)
{
    s_out_t *out = dq_mem_grow (self->out, &self->out_cap, self->nout + 1, sizeof *out);
    if (!out)
        return NULL;
    self->out = out;
    s_out_t *o = &self->out [self->nout++];
    memset (o, 0, offsetof (s_out_t, rid));
    o->rid_size = 0;
    o->body = NULL;
    o->jobs = NULL;
    o->njobs = 0;
    o->worker = 0;
    return o;
}

static void
s_queue_msg (dq_broker_t *self, void *sock, const void *rid, size_t rid_size,
             const dq_msg_t *msg)
{
    void *body;
    size_t size;
    if (dq_msg_encode (msg, &body, &size)) {
        //  Only replies the broker builds itself get here: too big to send.
        dq_log_error ("%s reply over the message size limit - not sent",
                      dq_cmd_str (msg->cmd));
        if (msg->cmd != DQ_CMD_ERROR && msg->rid)
            dq_msg_send_error (sock, rid, rid_size, msg->rid, DQ_ERR_TOO_BIG, 0,
                               "the reply would be over the message size limit");
        return;
    }
    s_out_t *o = s_out_push (self);
    if (!o) {
        free (body);
        return;
    }
    o->sock = sock;
    memcpy (o->rid, rid, rid_size);
    o->rid_size = rid_size;
    o->cmd = msg->cmd;
    o->body = body;
    o->body_size = size;
}

static void
s_queue_error (dq_broker_t *self, void *sock, const void *rid, size_t rid_size,
               uint64_t req, dq_err_t code, uint32_t retry_ms,
               const char *fmt, ...)
{
    char text [600];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    dq_utf8_clean (text);      //  it may quote what a peer sent
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_ERROR);
    msg.rid = req;
    msg.code = code;
    msg.retry_ms = retry_ms;
    msg.message = text;
    s_queue_msg (self, sock, rid, rid_size, &msg);
}

static void
s_queue_worker (dq_broker_t *self, dq_bworker_t *w, const dq_msg_t *msg)
{
    s_queue_msg (self, self->be, w->rid, w->rid_size, msg);
    w->last_send_ms = dq_mono_ms ();     //  any message serves as a heartbeat
}

static void
s_copy_str (char *dst, size_t size, const char *src)
{
    size_t n = src? strnlen (src, size - 1): 0;
    memcpy (dst, src? src: "", n);
    dst [n] = 0;
}

static void
s_queue_event (dq_broker_t *self, const dq_event_t *ev)
{
    if (!self->pub)
        return;
    s_evslot_t *evs = dq_mem_grow (self->evs, &self->evs_cap, self->nevs + 1, sizeof *evs);
    if (!evs)
        return;             //  events are best effort; the job's state is kept
    self->evs = evs;
    s_out_t *o = s_out_push (self);
    if (!o)
        return;
    s_evslot_t *e = &self->evs [self->nevs];
    e->ev = *ev;
    s_copy_str (e->id, sizeof e->id, ev->id);
    s_copy_str (e->dag_id, sizeof e->dag_id, ev->dag_id);
    s_copy_str (e->kind, sizeof e->kind, ev->kind);
    s_copy_str (e->type, sizeof e->type, ev->type);
    o->sock = self->pub;
    o->cmd = DQ_CMD_NONE;
    o->body_size = self->nevs++;
}

//  Undo a dispatch whose JOB could not be sent: the job goes back to its
//  queue and the attempt does not count.
static void s_release_worker (dq_broker_t *self, dq_bjob_t *job);
static void s_enqueue (dq_broker_t *self, dq_bjob_t *job);
static void s_set_state (dq_broker_t *self, dq_bjob_t *job, int state);

static void
s_undo_dispatch (dq_broker_t *self, s_out_t *o)
{
    bool undone = false;
    dq_bworker_t *w = NULL;
    for (uint32_t i = 0; i < o->njobs; i++) {
        dq_bjob_t *job = s_job (self, o->jobs [i]);
        if (!job || job->state != DQ_STATE_RUNNING || !job->worker
        ||  job->worker->num != o->worker)
            continue;
        w = job->worker;
        s_release_worker (self, job);
        if (job->attempts)
            job->attempts--;
        s_set_state (self, job, DQ_STATE_QUEUED);
        s_enqueue (self, job);
        undone = true;
    }
    //  EAGAIN means it stopped reading: give it nothing more until it
    //  speaks again (or its heartbeats lapse and it is dropped).
    if (undone && !w->stalled) {
        w->stalled = true;
        dq_sched_worker_changed (self->sched, w);
        dq_log_warn ("worker=w%u host=%s - not reading, jobs go elsewhere",
                     w->num, w->host? w->host: "?");
    }
}

//  Send one queued message (not an event) and free it.
static void
s_send_out (dq_broker_t *self, s_out_t *o)
{
    const char *cmd = dq_cmd_str (o->cmd);
    int rc = zmq_send (o->sock, o->rid, o->rid_size, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc != -1) {
        zmq_send (o->sock, DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE, ZMQ_SNDMORE);
        zmq_send (o->sock, cmd, strlen (cmd), ZMQ_SNDMORE);
        rc = zmq_send (o->sock, o->body, o->body_size, 0);
    }
    if (rc == -1) {
        if (o->cmd == DQ_CMD_JOB)
            s_undo_dispatch (self, o);
        else
            dq_log_debug ("%s not sent: %s", cmd, zmq_strerror (errno));
    }
    free (o->body);
    free (o->jobs);
}

//  Send the JOB messages of out [from, nout) now; the rest stays queued.
static void
s_send_jobs_now (dq_broker_t *self, size_t from)
{
    size_t kept = from;
    for (size_t i = from; i < self->nout; i++) {
        if (self->out [i].cmd == DQ_CMD_JOB)
            s_send_out (self, &self->out [i]);
        else
            self->out [kept++] = self->out [i];
    }
    self->nout = kept;
}

//  Send out [0, n) and drop it from the queue.
static void
s_flush (dq_broker_t *self, size_t n)
{
    size_t events = 0;
    for (size_t i = 0; i < n; i++) {
        s_out_t *o = &self->out [i];
        if (o->cmd == DQ_CMD_NONE) {
            s_evslot_t *e = &self->evs [o->body_size];
            e->ev.id = e->id;
            e->ev.kind = e->kind;
            e->ev.dag_id = *e->dag_id? e->dag_id: NULL;
            e->ev.type = *e->type? e->type: NULL;
            dq_event_send (&e->ev, o->sock, ZMQ_DONTWAIT);
            events++;
            continue;
        }
        s_send_out (self, o);
    }
    if (!n)
        return;                 //  (out may still be NULL)
    //  What stays moves to the front; its events (queued in order, after
    //  the ones sent) too.
    memmove (self->out, self->out + n, (self->nout - n) * sizeof *self->out);
    self->nout -= n;
    if (events) {
        memmove (self->evs, self->evs + events,
                 (self->nevs - events) * sizeof *self->evs);
        self->nevs -= events;
        for (size_t i = 0; i < self->nout; i++)
            if (self->out [i].cmd == DQ_CMD_NONE)
                self->out [i].body_size -= events;
    }
    for (size_t i = 0; i < self->nmarks; i++)
        self->marks [i].end -= n;
    //  Undone dispatches are queued again; the next turn hands them out.
}

//  The messages queued so far wait for commit number `commit`.
static void
s_mark (dq_broker_t *self, uint64_t commit)
{
    size_t last_end = self->nmarks? self->marks [self->nmarks - 1].end: 0;
    if (self->nout == last_end)
        return;                 //  nothing new
    if (self->nmarks && self->marks [self->nmarks - 1].n == commit) {
        self->marks [self->nmarks - 1].end = self->nout;
        return;
    }
    s_mark_t *marks = dq_mem_grow (self->marks, &self->marks_cap, self->nmarks + 1,
                                   sizeof *marks);
    assert (marks);
    self->marks = marks;
    self->marks [self->nmarks++] = (s_mark_t) { self->nout, commit };
}

//  Send what waited for commits up to `durable`, in order.
static void
s_flush_durable (dq_broker_t *self, uint64_t durable)
{
    size_t k = 0;
    while (k < self->nmarks && self->marks [k].n <= durable)
        k++;
    if (!k)
        return;
    size_t end = self->marks [k - 1].end;
    memmove (self->marks, self->marks + k, (self->nmarks - k) * sizeof *self->marks);
    self->nmarks -= k;
    s_flush (self, end);
}

//  ---------------------------------------------------------------------------
//  Job state and bookkeeping

//  A copy of an error text, at most DQ_PROTO_STR_MAX bytes long.
static char *
s_error_dup (const char *error)
{
    if (!error)
        return NULL;
    size_t len = strnlen (error, DQ_PROTO_STR_MAX);
    char *copy = malloc (len + 1);
    assert (copy);
    memcpy (copy, error, len);
    copy [len] = 0;
    dq_utf8_clean (copy);       //  a command's stderr may be any bytes
    return copy;
}

static void
s_set_state (dq_broker_t *self, dq_bjob_t *job, int state)
{
    (void) self;
    int old = job->state;
    if (old < DQ_STATE_COUNT_ && !dq_state_is_terminal (old)
    &&  job->type->counts [old])
        job->type->counts [old]--;
    job->type->counts [state]++;
    if (job->dag) {
        if (old < DQ_STATE_COUNT_ && job->dag->counts [old])
            job->dag->counts [old]--;
        job->dag->counts [state]++;
    }
    job->state = (uint8_t) state;
}

static void
s_timer_add (dq_broker_t *self, dq_bjob_t *job, uint64_t deadline)
{
    job->deadline_ms = deadline;
    if (dq_heap_push (self->timers, job) == 0)
        job->where = DQ_WHERE_TIMER;
}

static void
s_timer_remove (dq_broker_t *self, dq_bjob_t *job)
{
    if (job->where == DQ_WHERE_TIMER) {
        dq_heap_remove (self->timers, job->pos);
        job->where = DQ_WHERE_NONE;
    }
}

static void
s_enqueue (dq_broker_t *self, dq_bjob_t *job)
{
    //  While queued, deadline_ms holds when it became ready (for the
    //  dispatch latency histogram); the deadline heap does not hold it then.
    job->deadline_ms = self->now;
    //  What made it ready (its submission, its parents' outcomes, a retry)
    //  is in the open transaction at the latest.
    job->ready_commit = (uint32_t) (dq_store_commits (self->store) + 1);
    if (dq_sched_enqueue (self->sched, job))
        dq_log_error ("job=%s-%" PRIu64 " - out of memory queueing",
                      self->broker_id, job->node.id);
}

//  The job may run (parents done): queue it now, or at its run-at time.
static void
s_make_ready (dq_broker_t *self, dq_bjob_t *job)
{
    if (job->run_at_ms > self->now) {
        if (job->state != DQ_STATE_WAITING)
            s_set_state (self, job, DQ_STATE_WAITING);
        s_timer_add (self, job, job->run_at_ms);
    }
    else {
        s_set_state (self, job, DQ_STATE_QUEUED);
        s_enqueue (self, job);
    }
}

static void
s_worker_add_job (dq_bworker_t *w, dq_bjob_t *job)
{
    if (w->inflight == w->jobs_cap) {
        uint32_t cap = w->jobs_cap? w->jobs_cap * 2: 8;
        dq_bjob_t **jobs = realloc (w->jobs, cap * sizeof *jobs);
        assert (jobs);
        w->jobs = jobs;
        w->jobs_cap = cap;
    }
    job->slot = w->inflight;
    w->jobs [w->inflight++] = job;
    job->worker = w;
}

//  Take a running job off its worker (freeing the slot) and off the timeout
//  heap.
static void
s_release_worker (dq_broker_t *self, dq_bjob_t *job)
{
    s_timer_remove (self, job);
    dq_bworker_t *w = job->worker;
    if (!w)
        return;
    uint32_t last = w->inflight - 1;
    if (job->slot != last) {
        w->jobs [job->slot] = w->jobs [last];
        w->jobs [job->slot]->slot = job->slot;
    }
    w->jobs [last] = NULL;
    w->inflight = last;
    job->worker = NULL;
    dq_sched_worker_changed (self->sched, w);
}

static void
s_abandon (dq_broker_t *self, dq_bjob_t *job, const char *why)
{
    if (!job->worker)
        return;
    char id [DQ_ID_MAX];
    s_job_id (self, job->node.id, id);
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_ABANDON);
    msg.id = id;
    msg.message = why;
    s_queue_worker (self, job->worker, &msg);
}

static void
s_store_fail (dq_broker_t *self, const char *what)
{
    //  Fail-stop: unknown state on disk must not be acknowledged.
    dq_log_error ("store - %s failed: %s; stopping without acknowledging the batch",
                  what, self->store? dq_store_error (self->store): "?");
    self->exit_code = 1;
    self->stopping = 1;
}

//  Append seq to a growable array of sequences.
static void
s_seq_push (uint64_t **seqs, size_t *n, size_t *cap, uint64_t seq)
{
    uint64_t *grown = dq_mem_grow (*seqs, cap, *n + 1, sizeof *grown);
    assert (grown);
    *seqs = grown;
    grown [(*n)++] = seq;
}

static void
s_dag_check_done (dq_broker_t *self, dq_bdag_t *dag)
{
    uint32_t done = dag->counts [DQ_STATE_SUCCEEDED] + dag->counts [DQ_STATE_FAILED]
                  + dag->counts [DQ_STATE_CANCELLED] + dag->counts [DQ_STATE_SKIPPED];
    if (done < dag->njobs || dag->finished_ms)
        return;
    dag->finished_ms = self->now;
    bool ok = dag->counts [DQ_STATE_SUCCEEDED] == dag->njobs;
    char id [DQ_ID_MAX];
    s_dag_id (self, dag->seq, id);
    dq_log_info ("dag=%s name=%s jobs=%u failed=%u skipped=%u cancelled=%u - %s",
                 id, dag->name? dag->name: "", dag->njobs,
                 dag->counts [DQ_STATE_FAILED], dag->counts [DQ_STATE_SKIPPED],
                 dag->counts [DQ_STATE_CANCELLED], ok? "succeeded": "failed");
    dq_event_t ev = { .kind = "dag", .id = id,
                      .state = ok? DQ_STATE_SUCCEEDED: DQ_STATE_FAILED,
                      .at_ms = self->now };
    s_queue_event (self, &ev);
    if (self->store)
        s_seq_push (&self->chill, &self->nchill, &self->chill_cap, dag->seq);
}

//  Cold jobs (see s_evict_finished): a finished job to evict at the end
//  of the turn.
static void
s_evict_later (dq_broker_t *self, uint64_t seq)
{
    s_seq_push (&self->evict, &self->nevict, &self->evict_cap, seq);
}

//  Record a terminal state: memory, store, counters, event, retention.
//  Does not touch the DAG tracker (callers do, when the state came from
//  the job itself rather than from the tracker).
static void
s_terminal (dq_broker_t *self, dq_bjob_t *job, int state,
            const void *output, size_t output_size, const char *error,
            uint64_t skipped_by)
{
    dq_sched_dequeue (self->sched, job);
    s_timer_remove (self, job);
    if (job->worker)
        s_release_worker (self, job);
    job->finished_ms = self->now;
    job->output_size = (uint32_t) output_size;
    //  With a store the output lives on disk and is read back on request;
    //  memory keeps only what children are about to need, so finished
    //  jobs kept for --result-ttl cost no memory for their outputs.
    if (output_size && (!self->store || job->node.nchildren)) {
        job->output = malloc (output_size);
        assert (job->output);
        memcpy (job->output, output, output_size);
    }
    free (job->error);
    job->error = s_error_dup (error);
    job->skipped_by = skipped_by;
    if (self->unfinished)
        self->unfinished--;
    self->unfinished_bytes -= job->payload_size <= self->unfinished_bytes?
                              job->payload_size: self->unfinished_bytes;
    free (job->payload);
    job->payload = NULL;
    if (self->store) {
        char wid [16];
        if (job->last_worker)
            snprintf (wid, sizeof wid, "w%u", job->last_worker);
        dq_store_end_t end = {
            .id = job->node.id, .state = state, .attempts = job->attempts,
            .started_ms = job->started_ms, .finished_ms = job->finished_ms,
            .worker = job->last_worker? wid: NULL,
            .output = output, .output_size = output_size,
            .error = job->error, .skipped_by = skipped_by
        };
        if (dq_store_set_finished (self->store, &end))
            s_store_fail (self, "recording a finished job");
    }
    s_set_state (self, job, state);
    char id [DQ_ID_MAX], dag_id [DQ_ID_MAX];
    s_job_id (self, job->node.id, id);
    if (job->dag)
        s_dag_id (self, job->dag->seq, dag_id);
    dq_log_debug ("job=%s type=%s attempts=%u - %s", id, job->type->name,
                  job->attempts, dq_state_str (state));
    dq_event_t ev = { .kind = "job", .id = id, .state = state,
                      .type = job->type->name,
                      .dag_id = job->dag? dag_id: NULL,
                      .attempt = job->attempts, .at_ms = self->now,
                      .latency_us = (self->now - job->created_ms) * 1000 };
    s_queue_event (self, &ev);
    if (self->store && !job->dag) {
        //  Children may still be added this turn: decided at its end.
        s_evict_later (self, job->node.id);
    }
    else
        s_timer_add (self, job, self->now + self->cfg.result_ttl_ms);
    if (job->dag)
        s_dag_check_done (self, job->dag);
}

//  A job ended by itself (succeeded, failed, cancelled): record it and let
//  the tracker release or skip its descendants.
static void
s_finish (dq_broker_t *self, dq_bjob_t *job, int state,
          const void *output, size_t output_size, const char *error)
{
    s_terminal (self, job, state, output, output_size, error, 0);
    dq_dag_finish (self->dag, &job->node, state);
}

//  An attempt failed: retry after a backoff while attempts are left.
static void
s_attempt_failed (dq_broker_t *self, dq_bjob_t *job, const char *error,
                  bool backoff)
{
    if (job->worker)
        s_release_worker (self, job);
    if (job->attempts >= job->max_attempts) {
        s_finish (self, job, DQ_STATE_FAILED, NULL, 0, error);
        return;
    }
    uint64_t delay = 0;
    if (backoff) {
        delay = self->cfg.retry_base_ms;
        for (uint32_t i = 1; i < job->attempts && delay < self->cfg.retry_max_ms; i++)
            delay *= 2;
        if (delay > self->cfg.retry_max_ms)
            delay = self->cfg.retry_max_ms;
    }
    job->run_at_ms = self->now + delay;
    free (job->error);
    job->error = s_error_dup (error);
    if (self->store
    &&  dq_store_set_retry (self->store, job->node.id, job->attempts,
                            job->run_at_ms, job->error))
        s_store_fail (self, "recording a retry");
    s_set_state (self, job, DQ_STATE_WAITING);
    s_make_ready (self, job);
}

//  Tracker callbacks.
static void
s_on_ready (void *arg, dq_dag_node_t *node)
{
    dq_broker_t *self = arg;
    dq_bjob_t *job = (dq_bjob_t *) node;
    if (dq_state_is_terminal (job->state))
        return;                 //  loading a job that had already finished
    s_make_ready (self, job);
}

static void
s_on_skip (void *arg, dq_dag_node_t *node, dq_dag_node_t *cause)
{
    dq_broker_t *self = arg;
    dq_bjob_t *job = (dq_bjob_t *) node;
    if (dq_state_is_terminal (job->state))
        return;
    char why [160], cause_id [DQ_ID_MAX];
    s_job_id (self, cause->id, cause_id);
    dq_bjob_t *c = (dq_bjob_t *) cause;
    snprintf (why, sizeof why, "parent %s%s%s%s %s", cause_id,
              c->name? " (": "", c->name? c->name: "", c->name? ")": "",
              dq_state_str (c->state));
    s_terminal (self, job, DQ_STATE_SKIPPED, NULL, 0, why, cause->id);
}

//  A finished job leaves memory: the tracker, the table, its record (one
//  in its DAG's slab goes with the DAG).
static void
s_job_drop (dq_broker_t *self, dq_bjob_t *job)
{
    dq_dag_forget (self->dag, &job->node);
    dq_seqmap_remove (self->jobs, job->node.id);
    free (job->payload);
    free (job->output);
    free (job->error);
    free (job->name);
    free (job->content_type);
    if (!job->in_slab)
        free (job);
}

static void
s_dag_free (dq_broker_t *self, dq_bdag_t *dag)
{
    dq_seqmap_remove (self->dags, dag->seq);
    free (dag->name);
    free (dag->jobs);
    free (dag->slab);
    free (dag);
}

//  Delete a finished job (retention). Its DAG goes with its last job.
static void
s_delete_job (dq_broker_t *self, dq_bjob_t *job)
{
    if (self->store && dq_store_delete_job (self->store, job->node.id))
        s_store_fail (self, "deleting an expired job");
    dq_bdag_t *dag = job->dag;
    s_job_drop (self, job);
    //  A record in its DAG's slab goes with the DAG's last job.
    if (dag && --dag->alive == 0) {
        if (self->store && dq_store_delete_dag (self->store, dag->seq))
            s_store_fail (self, "deleting an expired DAG");
        s_dag_free (self, dag);
    }
}

//  ---------------------------------------------------------------------------
//  Cold jobs: finished, outside DAGs, without children, held by the store
//  alone. A broker taking a million jobs a minute with a day of retention
//  would otherwise hold over a billion finished records in memory.

static void s_dag_chill (dq_broker_t *self, dq_bdag_t *dag);

//  End of a turn: the jobs that finished in it (s_terminal: outside DAGs,
//  with a store) leave memory, unless they gained children meanwhile
//  (those wait for retention in memory).
static void
s_evict_finished (dq_broker_t *self)
{
    for (size_t i = 0; i < self->nevict; i++) {
        dq_bjob_t *job = s_job (self, self->evict [i]);
        assert (job);           //  nothing deletes a job in the turn it ends
        if (job->node.nchildren) {
            //  Children made ready this turn were dispatched with its
            //  output; later ones read it from the store.
            free (job->output);
            job->output = NULL;
            if (job->where == DQ_WHERE_NONE)
                s_timer_add (self, job, job->finished_ms + self->cfg.result_ttl_ms);
            continue;
        }
        s_timer_remove (self, job);
        s_job_drop (self, job);
        self->cold++;
    }
    self->nevict = 0;
    for (size_t i = 0; i < self->nchill; i++) {
        dq_bdag_t *dag = dq_seqmap_get (self->dags, self->chill [i]);
        if (dag)
            s_dag_chill (self, dag);
    }
    self->nchill = 0;
}

//  A finished DAG goes cold: its jobs leave memory like other finished
//  jobs (STATUS, RESULT and DAG read them from the store, retention
//  deletes them there), and only the DAG's record stays, 8 bytes a job,
//  until its own retention ends (s_cold_dags_expire). Held for a day, a
//  finished job in memory cost about 290 bytes. Not while a job of it has
//  a child still waiting (one added later, outside the DAG): that child
//  needs its record, and the DAG stays in memory as before, but without
//  the outputs kept for its children (s_output_get reads them back).
static void
s_dag_chill (dq_broker_t *self, dq_bdag_t *dag)
{
    bool held = false;
    for (uint32_t i = 0; i < dag->njobs && !held; i++) {
        dq_bjob_t *job = s_job (self, dag->jobs [i]);
        held = job && job->dag == dag && dq_dag_has_pending_children (&job->node);
    }
    uint64_t before = self->now > self->cfg.result_ttl_ms?
                      self->now - self->cfg.result_ttl_ms: 0;
    for (uint32_t i = 0; i < dag->njobs; i++) {
        dq_bjob_t *job = s_job (self, dag->jobs [i]);
        if (!job || job->dag != dag)
            continue;           //  expired, or a record of its own (s_job_warm)
        if (held) {
            free (job->output);
            job->output = NULL;
            continue;
        }
        s_timer_remove (self, job);
        //  Retention's walk of the store has passed the finish times that
        //  have expired: such a job is deleted here, not left there.
        bool expired = job->finished_ms < before;
        if (expired && dq_store_delete_job (self->store, job->node.id)) {
            s_store_fail (self, "deleting an expired job");
            return;
        }
        s_job_drop (self, job);
        dag->alive--;
        if (!expired)
            self->cold++;
    }
    if (held)
        return;
    free (dag->slab);
    dag->slab = NULL;
    s_seq_push (&self->cold_dags, &self->ncold_dags, &self->cold_dags_cap, dag->seq);
}

//  Retention of cold DAGs: their records go when their time is up (their
//  jobs, which finished earlier, went from the store by then).
static void
s_cold_dags_expire (dq_broker_t *self)
{
    while (self->cold_dags_head < self->ncold_dags) {
        dq_bdag_t *dag = dq_seqmap_get (self->dags, self->cold_dags [self->cold_dags_head]);
        if (dag && dag->finished_ms + self->cfg.result_ttl_ms > self->now)
            break;
        self->cold_dags_head++;
        if (!dag)
            continue;
        if (self->store && dq_store_delete_dag (self->store, dag->seq)) {
            s_store_fail (self, "deleting an expired DAG");
            return;
        }
        s_dag_free (self, dag);
    }
    //  Reclaim the front of the array once it is half of it.
    if (self->cold_dags_head > 64 && self->cold_dags_head * 2 > self->ncold_dags) {
        self->ncold_dags -= self->cold_dags_head;
        memmove (self->cold_dags, self->cold_dags + self->cold_dags_head,
                 self->ncold_dags * sizeof *self->cold_dags);
        self->cold_dags_head = 0;
    }
}

//  A job not in memory, read from the store: 0 (row filled, *mem to free),
//  1 if there is no such job, -1 on a store error (logged).
static int
s_cold_get (dq_broker_t *self, uint64_t seq, dq_store_job_t *row, void **mem)
{
    *mem = NULL;
    if (!self->store || seq >= self->next_seq)
        return 1;
    int rc = dq_store_get_job (self->store, seq, row, mem);
    if (rc < 0)
        dq_log_error ("store - reading job %s-%" PRIu64 " failed: %s",
                      self->broker_id, seq, dq_store_error (self->store));
    return rc;
}

static dq_bjob_t *s_restore (dq_broker_t *self, const dq_store_job_t *r,
                             bool loading);

//  A job by sequence for something that needs its record (a new child, a
//  job of a known key in a new submission): a cold job comes back into
//  memory until its retention ends. NULL if unknown (or on a store error).
static dq_bjob_t *
s_job_warm (dq_broker_t *self, uint64_t seq)
{
    dq_bjob_t *job = s_job (self, seq);
    if (job)
        return job;
    dq_store_job_t row;
    void *mem;
    if (s_cold_get (self, seq, &row, &mem))
        return NULL;
    job = dq_state_is_terminal (row.state)? s_restore (self, &row, false): NULL;
    free (mem);
    if (job && self->cold)
        self->cold--;
    return job;
}

//  Whether the broker answers for seq (held, or cold in the store).
static bool
s_job_known (dq_broker_t *self, uint64_t seq)
{
    if (s_job (self, seq))
        return true;
    dq_store_job_t row;
    void *mem;
    int rc = s_cold_get (self, seq, &row, &mem);
    free (mem);
    return rc == 0;
}

//  Retention in the store: delete cold jobs whose time is up, walking the
//  store's index of finish times from a cursor. Jobs held in memory are
//  left to their timers. A pass is bounded so the loop stays responsive;
//  with a backlog the next turn goes on, else once a second.
#define S_COLD_BATCH 512

static void
s_cold_expire (dq_broker_t *self)
{
    if (!self->store || (!self->cold_more && self->now - self->cold_checked < 1000))
        return;
    self->cold_checked = self->now;
    uint64_t before = self->now > self->cfg.result_ttl_ms?
                      self->now - self->cfg.result_ttl_ms: 0;
    uint64_t ids [S_COLD_BATCH], finished [S_COLD_BATCH];
    int n = dq_store_expired (self->store, before, self->cold_ms, self->cold_id,
                              ids, finished, S_COLD_BATCH);
    if (n < 0) {
        s_store_fail (self, "finding expired jobs");
        return;
    }
    for (int i = 0; i < n; i++) {
        if (s_job (self, ids [i]))
            continue;
        if (dq_store_delete_job (self->store, ids [i])) {
            s_store_fail (self, "deleting an expired job");
            return;
        }
        if (self->cold)
            self->cold--;
    }
    if (n > 0) {
        self->cold_ms = finished [n - 1];
        self->cold_id = ids [n - 1];
    }
    self->cold_more = n == S_COLD_BATCH;
}

//  ---------------------------------------------------------------------------
//  Idempotency keys

static void
s_key_free (void **item_p)
{
    s_key_t *k = *item_p;
    if (k) {
        free (k->key);
        free (k);
        *item_p = NULL;
    }
}

static void
s_key_add (dq_broker_t *self, const char *key, uint64_t first, uint32_t count,
           uint64_t dag, uint64_t created)
{
    s_key_t *k = calloc (1, sizeof *k);
    assert (k);
    k->key = strdup (key);
    k->first = first;
    k->count = count;
    k->dag = dag;
    k->created_ms = created;
    if (zhashx_insert (self->keys, key, k)) {
        free (k->key);
        free (k);
        return;
    }
    zlistx_add_end (self->key_order, k);
}

static void
s_keys_expire (dq_broker_t *self)
{
    uint64_t before = self->now > self->cfg.result_ttl_ms?
                      self->now - self->cfg.result_ttl_ms: 0;
    bool any = false;
    s_key_t *k;
    while ((k = zlistx_first (self->key_order)) && k->created_ms < before) {
        zlistx_delete (self->key_order, NULL);
        zhashx_delete (self->keys, k->key);   //  frees k
        any = true;
    }
    if (any && self->store && dq_store_expire_keys (self->store, before))
        s_store_fail (self, "expiring keys");
}

//  ---------------------------------------------------------------------------
//  Client handlers. Each gets the message and the routing id to reply to.

typedef struct {
    const uint8_t *rid;
    size_t rid_size;
} s_peer_t;

#define REPLY_ERROR(code, retry, ...) \
    s_queue_error (self, self->fe, peer->rid, peer->rid_size, msg->rid, code, retry, __VA_ARGS__)

//  Refuse a submission when the broker or its disk is full (Promise 6).
static bool
s_room_or_reply (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg,
                 uint64_t bytes)
{
    if (self->unfinished + msg->njobs > self->cfg.max_jobs) {
        REPLY_ERROR (DQ_ERR_BUSY, 1000,
                     "broker is full: %" PRIu64 " unfinished jobs (limit %" PRIu64
                     ", --max-jobs); retry later", self->unfinished, self->cfg.max_jobs);
        return false;
    }
    if (self->unfinished_bytes + bytes > self->cfg.max_bytes) {
        REPLY_ERROR (DQ_ERR_BUSY, 1000,
                     "broker is full: %" PRIu64 " payload bytes queued (limit %" PRIu64
                     ", --max-bytes); retry later", self->unfinished_bytes,
                     self->cfg.max_bytes);
        return false;
    }
    if (self->store) {
        uint64_t mono = dq_mono_ms ();
        if (mono - self->space_checked >= 100 || self->space_full) {
            self->space_checked = mono;
            self->space_full = false;
            uint64_t size = dq_store_size (self->store);
            uint64_t avail = dq_store_disk_free (self->store);
            if (self->cfg.max_store_bytes && size >= self->cfg.max_store_bytes) {
                self->space_full = true;
                snprintf (self->space_reason, sizeof self->space_reason,
                          "store is full: %" PRIu64 " bytes (limit %" PRIu64
                          ", --max-store-bytes)", size, self->cfg.max_store_bytes);
            }
            else
            if (avail < self->cfg.min_free_bytes + bytes * 2) {
                self->space_full = true;
                snprintf (self->space_reason, sizeof self->space_reason,
                          "disk of the data dir is nearly full: %" PRIu64
                          " bytes free (--min-free-bytes %" PRIu64 ")",
                          avail, self->cfg.min_free_bytes);
            }
        }
        if (self->space_full) {
            REPLY_ERROR (DQ_ERR_STORE_FULL, 5000, "%s; retry later", self->space_reason);
            return false;
        }
    }
    return true;
}

//  SUBMITTED with the ids of jobs [0..n) or, when jobs is NULL, of
//  sequences seqs [0..n).
static void
s_reply_submitted (dq_broker_t *self, const s_peer_t *peer, uint64_t req,
                   dq_bjob_t **jobs, const uint64_t *seqs, uint32_t n,
                   dq_bdag_t *dag)
{
    //  Ids packed one after the other: a few bytes each, not DQ_ID_MAX.
    size_t room = strlen (self->broker_id) + 24;
    char *ids = dq_mem_malloc ((size_t) n * room);
    const char **idp = dq_mem_malloc ((size_t) n * sizeof (char *));
    assert (ids && idp);
    char *at = ids;
    for (uint32_t i = 0; i < n; i++) {
        s_job_id (self, jobs? jobs [i]->node.id: seqs [i], at);
        idp [i] = at;
        at += strlen (at) + 1;
    }
    char dag_id [DQ_ID_MAX];
    dq_msg_t reply;
    dq_msg_init (&reply, DQ_CMD_SUBMITTED);
    reply.rid = req;
    reply.ids = idp;
    reply.nids = n;
    if (dag) {
        s_dag_id (self, dag->seq, dag_id);
        reply.dag_id = dag_id;
    }
    s_queue_msg (self, self->fe, peer->rid, peer->rid_size, &reply);
    free (idp);
    free (ids);
}

//  A retried submission: answer with what the first one created.
static bool
s_replay_key (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    s_key_t *k = zhashx_lookup (self->keys, msg->key);
    if (!k)
        return false;
    uint32_t n = msg->njobs < k->count? msg->njobs: k->count;
    uint64_t *seqs = calloc (n? n: 1, sizeof *seqs);
    assert (seqs);
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t seq = k->first + i;
        bool known = s_job_known (self, seq);
        if (!known && msg->jobs [i].key) {
            //  A job of its own key, created by an earlier submission
            s_key_t *jk = zhashx_lookup (self->keys, msg->jobs [i].key);
            seq = jk? jk->first: 0;
            known = seq && s_job_known (self, seq);
        }
        if (known)
            seqs [found++] = seq;
    }
    if (found == msg->njobs && n == msg->njobs)
        s_reply_submitted (self, peer, msg->rid, NULL, seqs, n,
                           k->dag? dq_seqmap_get (self->dags, k->dag): NULL);
    else
        REPLY_ERROR (DQ_ERR_INVALID, 0,
                     "idempotency key '%s' was used for a different submission "
                     "(or its jobs expired)", msg->key);
    free (seqs);
    return true;
}

//  A new job record: in slab (zeroed, owned by a DAG) when given.
static dq_bjob_t *
s_job_new (dq_broker_t *self, uint64_t seq, dq_type_t *type,
           const dq_jobspec_t *spec, dq_bjob_t *slab)
{
    dq_bjob_t *job = slab? slab: calloc (1, sizeof *job);
    assert (job);
    job->in_slab = slab != NULL;
    job->node.id = seq;
    job->type = type;
    job->state = DQ_STATE_COUNT_;          //  none yet: s_set_state counts it
    job->created_ms = self->now;
    job->run_at_ms = spec->delay_ms? self->now + spec->delay_ms: 0;
    job->priority = spec->priority;
    job->max_attempts = (uint16_t) (spec->attempts? spec->attempts: self->cfg.attempts);
    job->timeout_ms = spec->timeout_ms;
    if (spec->payload_size) {
        job->payload = malloc (spec->payload_size);
        assert (job->payload);
        memcpy (job->payload, spec->payload, spec->payload_size);
        job->payload_size = (uint32_t) spec->payload_size;
    }
    job->name = spec->name? strdup (spec->name): NULL;
    job->content_type = spec->content_type? strdup (spec->content_type): NULL;
    return job;
}

static void
s_handle_submit (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    if (msg->key && s_replay_key (self, peer, msg))
        return;
    uint32_t n = msg->njobs;
    if (n > self->cfg.max_dag_jobs) {
        REPLY_ERROR (DQ_ERR_TOO_BIG, 0, "%u jobs in one submission; the limit is %u "
                     "(--max-dag-jobs)", n, self->cfg.max_dag_jobs);
        return;
    }
    //  Validate everything before changing anything: all or nothing.
    if ((msg->dag_name && !dq_utf8_valid (msg->dag_name))
    ||  (msg->key && !dq_utf8_valid (msg->key))) {
        REPLY_ERROR (DQ_ERR_INVALID, 0, "the %s is not valid UTF-8",
                     msg->key && !dq_utf8_valid (msg->key)? "key": "DAG name");
        return;
    }
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        const dq_jobspec_t *j = &msg->jobs [i];
        //  Text is shown back (STATUS, DAG, RESULT): UTF-8 only. (The
        //  decoder already holds types to [A-Za-z0-9_.:-].)
        const char *text [] = { j->name, j->content_type, j->key };
        const char *field [] = { "name", "content_type", "key" };
        for (int t = 0; t < 3; t++)
            if (text [t] && !dq_utf8_valid (text [t])) {
                REPLY_ERROR (DQ_ERR_INVALID, 0, "jobs[%u]: %s is not valid UTF-8",
                             i, field [t]);
                return;
            }
        const char *name = j->name? j->name: "";
        if (j->payload_size > self->cfg.max_payload) {
            REPLY_ERROR (DQ_ERR_TOO_BIG, 0, "jobs[%u]%s%s%s: payload of %zu bytes is over "
                         "the limit of %u bytes (--max-payload)", i, *name? " '": "",
                         name, *name? "'": "", j->payload_size, self->cfg.max_payload);
            return;
        }
        if (j->ndeps > self->cfg.max_deps) {
            REPLY_ERROR (DQ_ERR_TOO_BIG, 0, "jobs[%u]%s%s%s: %u dependencies; the limit "
                         "is %u (--max-deps)", i, *name? " '": "", name, *name? "'": "",
                         j->ndeps, self->cfg.max_deps);
            return;
        }
        if (j->attempts > 1000) {
            REPLY_ERROR (DQ_ERR_INVALID, 0, "jobs[%u]: attempts must be 1..1000", i);
            return;
        }
        for (uint32_t k = 0; k < j->ndeps; k++) {
            if (j->deps [k].idx >= 0)
                continue;
            char why [200];
            bool is_dag;
            uint64_t seq;
            if (s_parse_id (self, j->deps [k].id, &is_dag, &seq, why, sizeof why)
            ||  is_dag || !s_job_warm (self, seq)) {
                REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "jobs[%u]%s%s%s: depends on unknown job "
                             "'%.64s'%s%s", i, *name? " '": "", name, *name? "'": "",
                             j->deps [k].id, is_dag? " (a DAG id, not a job id)": "",
                             (!is_dag && strstr (why, "issued"))? ": not issued by this broker": "");
                return;
            }
        }
        bytes += j->payload_size;
    }
    char err [512];
    int rc = dq_dag_check (msg->jobs, n, err, sizeof err);
    if (rc != DQ_OK) {
        REPLY_ERROR (rc, 0, "%s", err);
        return;
    }
    if (!s_room_or_reply (self, peer, msg, bytes))
        return;
    uint32_t *order = dq_mem_malloc ((size_t) n * sizeof *order);
    dq_bjob_t **jobs = dq_mem_calloc (n, sizeof *jobs);
    assert (order && jobs);
    //  Most submissions list parents before children already: keep their
    //  order then (ids, and so the store's B-trees, grow in order).
    bool in_order = true;
    for (uint32_t i = 0; i < n && in_order; i++)
        for (uint32_t k = 0; k < msg->jobs [i].ndeps && in_order; k++)
            in_order = msg->jobs [i].deps [k].idx < (int32_t) i;
    for (uint32_t i = 0; in_order && i < n; i++)
        order [i] = i;
    if (!in_order && dq_dag_topo_order (msg->jobs, n, order)) {
        REPLY_ERROR (DQ_ERR_CYCLE, 0, "the jobs form a cycle");
        free (order);
        free (jobs);
        return;
    }
    //  Sequences are consecutive, so a key records its jobs as (first, n).
    uint64_t first = self->next_seq;
    self->next_seq += n;
    dq_bdag_t *dag = NULL;
    if (msg->dag_name) {
        dag = calloc (1, sizeof *dag);
        assert (dag);
        dag->seq = self->next_seq++;
        dag->name = *msg->dag_name? strdup (msg->dag_name): NULL;
        dag->created_ms = self->now;
        dag->jobs = dq_mem_malloc ((size_t) n * sizeof (uint64_t));
        //  Its job records in one array: one allocation instead of one per
        //  job, and neighbours in memory as in the graph's numbering.
        dag->slab = dq_mem_calloc (n, sizeof (dq_bjob_t));
        assert (dag->jobs && dag->slab);
        //  Sequences are fresh and consecutive: only memory can fail.
        if (dq_seqmap_put (self->dags, dag->seq, dag)) {
            dq_log_error ("out of memory adding a DAG");
            abort ();
        }
        if (self->store) {
            dq_store_dag_t rec = { dag->seq, dag->name, msg->key, dag->created_ms };
            if (dq_store_put_dag (self->store, &rec))
                s_store_fail (self, "storing a DAG");
        }
    }
    //  Jobs whose own key is known are not created again.
    uint32_t nnew = 0;
    size_t nedges = 0;
    for (uint32_t i = 0; i < n; i++) {
        const dq_jobspec_t *j = &msg->jobs [i];
        s_key_t *jk = j->key? zhashx_lookup (self->keys, j->key): NULL;
        if (jk)
            jobs [i] = s_job_warm (self, jk->first);
        if (!jobs [i]) {
            nnew++;
            nedges += j->ndeps;
        }
    }
    //  The new jobs go to the tracker as one batch, their edges as one
    //  array (node m's parents are eparents [efirst [m] .. efirst [m + 1])).
    dq_dag_node_t **nodes = dq_mem_malloc ((size_t) nnew * sizeof *nodes);
    size_t *efirst = dq_mem_malloc (((size_t) nnew + 1) * sizeof *efirst);
    dq_dag_node_t **eparents = dq_mem_malloc (nedges * sizeof *eparents);
    bool *erof = dq_mem_malloc (nedges);
    uint64_t *pseq = NULL;
    uint32_t pcap = 0;
    assert (nodes && efirst && eparents && erof);
    uint32_t m = 0;
    size_t e = 0;
    dq_type_t *type = NULL;
    const char *type_name = NULL;
    for (uint32_t o = 0; o < n; o++) {
        uint32_t i = order [o];
        const dq_jobspec_t *j = &msg->jobs [i];
        if (jobs [i])
            continue;
        //  Jobs of a submission mostly share a type (and the codec gives
        //  equal types one string): look it up when it changes.
        if (!type || (j->type != type_name && strcmp (j->type, type->name) != 0)) {
            type = dq_sched_type (self->sched, j->type, true);
            assert (type);
        }
        type_name = j->type;
        dq_bjob_t *job = s_job_new (self, first + i, type, j, dag? &dag->slab [i]: NULL);
        jobs [i] = job;
        job->dag = dag;
        if (dag)
            dag->alive++;
        if (self->store && j->ndeps > pcap) {
            pcap = j->ndeps;
            pseq = realloc (pseq, pcap * sizeof *pseq);
            assert (pseq);
        }
        efirst [m] = e;
        nodes [m++] = &job->node;
        for (uint32_t k = 0; k < j->ndeps; k++) {
            const dq_dep_t *d = &j->deps [k];
            dq_bjob_t *p = d->idx >= 0? jobs [d->idx]: s_job_by_id (self, d->id);
            eparents [e] = &p->node;
            erof [e++] = d->run_on_failure;
            if (pseq)
                pseq [k] = p->node.id;
        }
        if (dq_seqmap_put (self->jobs, job->node.id, job)) {
            dq_log_error ("out of memory adding a job");
            abort ();
        }
        self->unfinished++;
        self->unfinished_bytes += job->payload_size;
        s_set_state (self, job, DQ_STATE_WAITING);
        if (self->store) {
            dq_store_job_t rec = {
                .id = job->node.id, .type = type->name,
                .payload = job->payload, .payload_size = job->payload_size,
                .content_type = job->content_type, .name = job->name, .key = j->key,
                .priority = job->priority, .max_attempts = job->max_attempts,
                .timeout_ms = job->timeout_ms, .run_at_ms = job->run_at_ms,
                .created_ms = job->created_ms, .state = DQ_STATE_WAITING,
                .dag = dag? dag->seq: 0,
                .parents = pseq, .run_on_failure = erof + efirst [m - 1],
                .nparents = j->ndeps };
            if (dq_store_put_job (self->store, &rec))
                s_store_fail (self, "storing a job");
            if (j->key) {
                dq_store_key_t kr = { j->key, job->node.id, 1, 0, self->now };
                if (dq_store_put_key (self->store, &kr))
                    s_store_fail (self, "storing a key");
            }
        }
        if (j->key)
            s_key_add (self, j->key, job->node.id, 1, 0, self->now);
    }
    efirst [m] = e;
    //  Callbacks (roots ready, jobs skipped by a failed existing parent)
    //  fire once every job is in.
    if (dq_dag_add_batch (self->dag, nodes, m, efirst, eparents, erof)) {
        dq_log_error ("out of memory adding %u jobs to the DAG tracker", m);
        abort ();
    }
    free (nodes);
    free (efirst);
    free (eparents);
    free (erof);
    free (pseq);
    //  The DAG lists its jobs in submission order (not the order they
    //  were created in, which puts parents first).
    for (uint32_t i = 0; dag && i < n; i++)
        if (jobs [i]->node.id == first + i)
            dag->jobs [dag->njobs++] = first + i;
    if (msg->key) {
        s_key_add (self, msg->key, first, n, dag? dag->seq: 0, self->now);
        if (self->store) {
            dq_store_key_t kr = { msg->key, first, n, dag? dag->seq: 0, self->now };
            if (dq_store_put_key (self->store, &kr))
                s_store_fail (self, "storing a key");
        }
    }
    if (dag && dag->njobs == 0) {
        //  Every job of the DAG already existed (job keys): nothing to
        //  track, and its record is kept for its retention as a cold DAG's.
        dag->finished_ms = self->now;
        s_seq_push (&self->cold_dags, &self->ncold_dags, &self->cold_dags_cap, dag->seq);
    }
    else
    if (dag)
        s_dag_check_done (self, dag);  //  e.g. every job skipped at once
    s_reply_submitted (self, peer, msg->rid, jobs, NULL, n, dag);
    free (order);
    free (jobs);
}

//  Fill a jobinfo; strings go to buf (at least 3 * DQ_ID_MAX bytes).
static void
s_jobinfo (dq_broker_t *self, dq_bjob_t *job, dq_jobinfo_t *info, char *buf,
           const char **pids, int *pstates, char (*pbuf) [DQ_ID_MAX])
{
    memset (info, 0, sizeof *info);
    char *id = buf, *dag_id = buf + DQ_ID_MAX, *worker = buf + 2 * DQ_ID_MAX,
         *skipped = buf + 3 * DQ_ID_MAX;
    s_job_id (self, job->node.id, id);
    info->id = id;
    info->type = job->type->name;
    info->name = job->name;
    if (job->dag) {
        s_dag_id (self, job->dag->seq, dag_id);
        info->dag_id = dag_id;
    }
    info->state = job->state;
    info->priority = job->priority;
    info->attempts = job->attempts;
    info->max_attempts = job->max_attempts;
    if (job->last_worker) {
        snprintf (worker, DQ_ID_MAX, "w%u", job->last_worker);
        info->worker = worker;
    }
    info->created_ms = job->created_ms;
    info->started_ms = job->started_ms;
    info->finished_ms = job->finished_ms;
    info->error = job->error;
    if (job->skipped_by) {
        s_job_id (self, job->skipped_by, skipped);
        info->skipped_by = skipped;
    }
    info->output_size = job->output_size;
    if (pids) {
        for (uint32_t k = 0; k < job->node.nparents; k++) {
            dq_dag_node_t *p = job->node.parents [k].node;
            if (p) {
                s_job_id (self, p->id, pbuf [k]);
                pstates [k] = ((dq_bjob_t *) p)->state;
            }
            else {
                snprintf (pbuf [k], DQ_ID_MAX, "(expired)");
                pstates [k] = DQ_STATE_SUCCEEDED;
            }
            pids [k] = pbuf [k];
        }
        info->parent_ids = pids;
        info->parent_states = pstates;
        info->nparents = job->node.nparents;
    }
}

#define S_INFO_BUF (4 * DQ_ID_MAX)

//  A job a client named: its record (job), or its row in the store (a cold
//  job: row, with mem to free).
typedef struct {
    dq_bjob_t *job;
    dq_store_job_t row;
    void *mem;
} s_found_t;

//  Find the job named id, in memory or in the store; a job brought back
//  from the store is read there again when rows is set (STATUS: its record
//  lacks parents that are not in memory). Replies with the error and
//  returns -1 when it is unknown or cannot be read.
static int
s_find_or_reply (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg,
                 const char *id, bool rows, s_found_t *found)
{
    memset (found, 0, sizeof *found);
    bool is_dag;
    uint64_t seq;
    int rc = 1;
    if (!s_parse_id (self, id, &is_dag, &seq, NULL, 0) && !is_dag) {
        found->job = s_job (self, seq);
        if (found->job && (!rows || !found->job->restored))
            return 0;
        found->job = NULL;
        rc = s_cold_get (self, seq, &found->row, &found->mem);
    }
    if (rc > 0)
        REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "job '%.64s' not found (unknown, or expired "
                     "after --result-ttl)", id);
    else
    if (rc < 0)
        REPLY_ERROR (DQ_ERR_INTERNAL, 1000, "job '%.64s' could not be read from the "
                     "store; try again", id);
    return rc? -1: 0;
}

//  A parent as STATUS shows it: held in memory, cold, or gone.
static void
s_parent_info (dq_broker_t *self, uint64_t seq, char *id, int *state)
{
    dq_bjob_t *p = s_job (self, seq);
    dq_store_job_t row;
    void *mem = NULL;
    if (p)
        *state = p->state;
    else
    if (s_cold_get (self, seq, &row, &mem) == 0)
        *state = row.state;
    else {
        snprintf (id, DQ_ID_MAX, "(expired)");
        *state = DQ_STATE_SUCCEEDED;
        return;
    }
    free (mem);
    s_job_id (self, seq, id);
}

//  s_jobinfo for a cold job's row: its fields through a record on the
//  stack, its parents (held, cold or gone) from the row.
static void
s_rowinfo (dq_broker_t *self, const dq_store_job_t *r, dq_jobinfo_t *info,
           char *buf, const char **pids, int *pstates, char (*pbuf) [DQ_ID_MAX])
{
    dq_type_t type = { .name = (char *) r->type };
    dq_bdag_t dag = { .seq = r->dag };
    dq_bjob_t job = {
        .dag = r->dag? &dag: NULL,
        .node.id = r->id, .type = &type, .name = (char *) r->name,
        .error = (char *) r->error, .created_ms = r->created_ms,
        .started_ms = r->started_ms, .finished_ms = r->finished_ms,
        .skipped_by = r->skipped_by, .output_size = (uint32_t) r->output_size,
        .priority = r->priority, .attempts = (uint16_t) r->attempts,
        .max_attempts = (uint16_t) r->max_attempts, .state = (uint8_t) r->state
    };
    unsigned worker;
    if (r->worker && sscanf (r->worker, "w%u", &worker) == 1)
        job.last_worker = worker;
    s_jobinfo (self, &job, info, buf, NULL, NULL, NULL);
    for (uint32_t k = 0; k < r->nparents; k++) {
        s_parent_info (self, r->parents [k], pbuf [k], &pstates [k]);
        pids [k] = pbuf [k];
    }
    info->parent_ids = pids;
    info->parent_states = pstates;
    info->nparents = r->nparents;
}

//  Queue reply (JOBS or DAG_INFO, its other fields set) with one info per
//  found job, in order.
static void
s_reply_infos (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *reply,
               const s_found_t *found, uint32_t n)
{
    size_t nparents = 0;
    for (uint32_t i = 0; i < n; i++)
        nparents += found [i].job? found [i].job->node.nparents: found [i].row.nparents;
    dq_jobinfo_t *infos = calloc (n + 1, sizeof *infos);
    char *bufs = malloc ((size_t) (n + 1) * S_INFO_BUF);
    const char **pids = malloc ((nparents + 1) * sizeof (char *));
    int *pstates = malloc ((nparents + 1) * sizeof (int));
    char (*pbuf) [DQ_ID_MAX] = malloc ((nparents + 1) * DQ_ID_MAX);
    assert (infos && bufs && pids && pstates && pbuf);
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        char *buf = bufs + (size_t) i * S_INFO_BUF;
        if (found [i].job) {
            s_jobinfo (self, found [i].job, &infos [i], buf, pids + at,
                       pstates + at, pbuf + at);
            at += found [i].job->node.nparents;
        }
        else {
            s_rowinfo (self, &found [i].row, &infos [i], buf, pids + at,
                       pstates + at, pbuf + at);
            at += found [i].row.nparents;
        }
    }
    reply->infos = infos;
    reply->ninfos = n;
    s_queue_msg (self, self->fe, peer->rid, peer->rid_size, reply);
    free (pbuf);
    free (pstates);
    free (pids);
    free (bufs);
    free (infos);
}

static void
s_handle_status (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    uint32_t n = msg->nids;
    s_found_t *found = calloc (n + 1, sizeof *found);
    assert (found);
    uint32_t k = 0;
    for (; k < n; k++)
        if (s_find_or_reply (self, peer, msg, msg->ids [k], true, &found [k]))
            break;
    if (k == n) {
        dq_msg_t reply;
        dq_msg_init (&reply, DQ_CMD_JOBS);
        reply.rid = msg->rid;
        s_reply_infos (self, peer, &reply, found, n);
    }
    //  calloc'd: entries not reached hold NULL
    for (uint32_t i = 0; i < n; i++)
        free (found [i].mem);
    free (found);
}

//  A finished job's output: from memory when held there, else read from
//  the store into *owned (the caller frees it). Returns 0 or -1 (store
//  error, logged).
static int
s_output_get (dq_broker_t *self, dq_bjob_t *job, const void **data,
              size_t *size, void **owned)
{
    *owned = NULL;
    *data = job->output;
    *size = job->output_size;
    if (job->output || !job->output_size)
        return 0;
    if (!self->store
    ||  dq_store_get_output (self->store, job->node.id, owned, size, NULL)) {
        dq_log_error ("store - reading the output of job %s-%" PRIu64 " failed: %s",
                      self->broker_id, job->node.id,
                      self->store? dq_store_error (self->store): "no store");
        *size = 0;
        return -1;
    }
    *data = *owned;
    return 0;
}

static void
s_handle_result (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    s_found_t f;
    if (s_find_or_reply (self, peer, msg, msg->id, false, &f))
        return;
    int state = f.job? f.job->state: f.row.state;
    const void *output = NULL;
    size_t output_size = 0;
    void *owned = NULL;
    if (!dq_state_is_terminal (state))
        REPLY_ERROR (DQ_ERR_NOT_FINISHED, 0, "job '%s' is %s, not finished yet",
                     msg->id, dq_state_str (state));
    else
    if (f.job? s_output_get (self, f.job, &output, &output_size, &owned)
             : dq_store_get_output (self->store, f.row.id, &owned, &output_size, NULL))
        REPLY_ERROR (DQ_ERR_INTERNAL, 1000, "the output of job '%s' could not be "
                     "read from the store; try again", msg->id);
    else {
        dq_msg_t reply;
        dq_msg_init (&reply, DQ_CMD_OUTPUT);
        reply.rid = msg->rid;
        reply.id = msg->id;
        reply.state = state;
        reply.output = f.job? output: owned;
        reply.output_size = output_size;
        reply.content_type = f.job? f.job->content_type: f.row.content_type;
        reply.error = f.job? f.job->error: f.row.error;
        s_queue_msg (self, self->fe, peer->rid, peer->rid_size, &reply);
    }
    free (owned);
    free (f.mem);
}

//  Cancel one job: it never runs (or its worker abandons it), descendants
//  are skipped. Returns 1 if it was cancelled, 0 if already terminal.
static int
s_cancel_job (dq_broker_t *self, dq_bjob_t *job)
{
    if (dq_state_is_terminal (job->state))
        return 0;
    if (job->state == DQ_STATE_RUNNING)
        s_abandon (self, job, "cancelled");
    s_finish (self, job, DQ_STATE_CANCELLED, NULL, 0, "cancelled by a client");
    return 1;
}

static void
s_handle_cancel (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    bool is_dag;
    uint64_t seq;
    char why [200];
    if (s_parse_id (self, msg->id, &is_dag, &seq, why, sizeof why)) {
        REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "%s", why);
        return;
    }
    uint64_t count = 0;
    if (is_dag) {
        dq_bdag_t *dag = dq_seqmap_get (self->dags, seq);
        if (!dag) {
            REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "DAG '%.64s' not found", msg->id);
            return;
        }
        //  Cancelling a job skips its descendants, which may be later in
        //  the list: those are then terminal and not counted twice.
        for (uint32_t i = 0; i < dag->njobs; i++) {
            dq_bjob_t *job = s_job (self, dag->jobs [i]);
            if (job)
                count += (uint64_t) s_cancel_job (self, job);
        }
    }
    else {
        //  A cold job has finished: nothing to cancel.
        s_found_t f;
        if (s_find_or_reply (self, peer, msg, msg->id, false, &f))
            return;
        count = f.job? (uint64_t) s_cancel_job (self, f.job): 0;
        free (f.mem);
    }
    dq_log_info ("%s=%s count=%" PRIu64 " - cancelled", is_dag? "dag": "job",
                 msg->id, count);
    dq_msg_t reply;
    dq_msg_init (&reply, DQ_CMD_CANCELLED);
    reply.rid = msg->rid;
    reply.count = count;
    s_queue_msg (self, self->fe, peer->rid, peer->rid_size, &reply);
}

static void
s_handle_stats (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    size_t nt = dq_sched_ntypes (self->sched);
    size_t nw = dq_registry_size (self->registry);
    dq_typestat_t *ts = calloc (nt + 1, sizeof *ts);
    dq_workerinfo_t *ws = calloc (nw + 1, sizeof *ws);
    char (*wids) [16] = calloc (nw + 1, 16);
    assert (ts && ws && wids);
    uint64_t mono = dq_mono_ms ();
    for (size_t i = 0; i < nt; i++) {
        dq_type_t *t = dq_sched_type_at (self->sched, i);
        ts [i].type = t->name;
        ts [i].waiting = t->counts [DQ_STATE_WAITING];
        ts [i].queued = t->counts [DQ_STATE_QUEUED];
        ts [i].running = t->counts [DQ_STATE_RUNNING];
        ts [i].succeeded = t->counts [DQ_STATE_SUCCEEDED];
        ts [i].failed = t->counts [DQ_STATE_FAILED];
        ts [i].cancelled = t->counts [DQ_STATE_CANCELLED];
        ts [i].skipped = t->counts [DQ_STATE_SKIPPED];
        ts [i].workers = (uint32_t) dq_heap_size (t->workers);
    }
    size_t i = 0;
    for (dq_bworker_t *w = dq_registry_first (self->registry); w && i < nw;
         w = dq_registry_next (self->registry), i++) {
        snprintf (wids [i], 16, "w%u", w->num);
        ws [i].id = wids [i];
        ws [i].name = w->name;
        ws [i].host = w->host;
        ws [i].pid = w->pid;
        ws [i].capacity = w->capacity;
        ws [i].inflight = w->inflight;
        //  last_recv_ms is monotonic: report it as wall-clock time.
        uint64_t ago = mono - w->last_recv_ms;
        ws [i].last_seen_ms = self->now > ago? self->now - ago: 0;
        ws [i].done = w->done;
        ws [i].types = (const char **) w->types;
        uint32_t nty = 0;
        while (w->types && w->types [nty])
            nty++;
        ws [i].ntypes = nty;
    }
    dq_msg_t reply;
    dq_msg_init (&reply, DQ_CMD_STATS_REPLY);
    reply.rid = msg->rid;
    reply.broker_id = self->broker_id;
    reply.uptime_ms = self->now - self->started_ms;
    reply.jobs_total = dq_seqmap_size (self->jobs) + self->cold;
    reply.jobs_in_memory = dq_seqmap_size (self->jobs);
    reply.queued_bytes = self->unfinished_bytes;
    reply.workers_total = nw;
    reply.dispatch_hist = self->dispatch_hist;
    reply.ndispatch_hist = DQ_PROTO_HIST_BUCKETS;
    uint64_t sync_hist [DQ_PROTO_HIST_BUCKETS];
    if (self->store && dq_store_sync_hist (self->store, sync_hist) == 0) {
        reply.sync_hist = sync_hist;
        reply.nsync_hist = DQ_PROTO_HIST_BUCKETS;
    }
    reply.typestats = ts;
    reply.ntypestats = (uint32_t) nt;
    reply.workers = ws;
    reply.nworkers = (uint32_t) i;
    s_queue_msg (self, self->fe, peer->rid, peer->rid_size, &reply);
    free (wids);
    free (ws);
    free (ts);
}

static void
s_handle_dag (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    bool is_dag;
    uint64_t seq;
    char why [200];
    if (s_parse_id (self, msg->id, &is_dag, &seq, why, sizeof why)) {
        REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "%s", why);
        return;
    }
    if (!is_dag) {
        REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "'%.64s' is a job id, not a DAG id", msg->id);
        return;
    }
    dq_bdag_t *dag = dq_seqmap_get (self->dags, seq);
    if (!dag) {
        REPLY_ERROR (DQ_ERR_NOT_FOUND, 0, "DAG '%.64s' not found (unknown, or expired "
                     "after --result-ttl)", msg->id);
        return;
    }
    //  One page of the job list: [first, end) in submission order, so one
    //  request costs the loop at most DQ_PROTO_DAG_JOBS_MAX jobs (under
    //  100 ms here when a cold DAG's are read from the store). A summary
    //  lists none.
    uint32_t limit = msg->limit? msg->limit: DQ_PROTO_DAG_JOBS_MAX;
    uint32_t first = msg->summary || msg->offset > dag->njobs? dag->njobs: msg->offset;
    uint32_t end = dag->njobs - first > limit? first + limit: dag->njobs;
    s_found_t *found = calloc (end - first + 1, sizeof *found);
    assert (found);
    uint32_t n = 0;
    int rc = 0;
    for (uint32_t i = first; i < end && rc >= 0; i++) {
        s_found_t *f = &found [n];
        f->job = s_job (self, dag->jobs [i]);
        //  A record of its own (s_job_warm) lacks its DAG and parents.
        if (f->job && f->job->dag == dag)
            n++;
        else {
            f->job = NULL;
            rc = self->store? s_cold_get (self, dag->jobs [i], &f->row, &f->mem): 1;
            if (rc == 0)
                n++;
            else {
                free (f->mem);  //  expired (1, not listed), or a store error
                f->mem = NULL;
            }
        }
    }
    if (rc < 0)
        REPLY_ERROR (DQ_ERR_INTERNAL, 1000, "DAG '%.64s' could not be read from the "
                     "store; try again", msg->id);
    else {
        char dag_id [DQ_ID_MAX];
        s_dag_id (self, dag->seq, dag_id);
        dq_daginfo_t di = {
            .id = dag_id, .name = dag->name, .total = dag->njobs,
            .waiting = dag->counts [DQ_STATE_WAITING], .queued = dag->counts [DQ_STATE_QUEUED],
            .running = dag->counts [DQ_STATE_RUNNING],
            .succeeded = dag->counts [DQ_STATE_SUCCEEDED],
            .failed = dag->counts [DQ_STATE_FAILED],
            .cancelled = dag->counts [DQ_STATE_CANCELLED],
            .skipped = dag->counts [DQ_STATE_SKIPPED],
            .created_ms = dag->created_ms, .finished_ms = dag->finished_ms };
        di.state = !dag->finished_ms? DQ_STATE_RUNNING:
                   dag->counts [DQ_STATE_SUCCEEDED] == dag->njobs? DQ_STATE_SUCCEEDED:
                   DQ_STATE_FAILED;
        dq_msg_t reply;
        dq_msg_init (&reply, DQ_CMD_DAG_INFO);
        reply.rid = msg->rid;
        reply.dag = &di;
        reply.next_offset = end < dag->njobs? end: 0;
        s_reply_infos (self, peer, &reply, found, n);
    }
    //  calloc'd: entries not used hold NULL
    for (uint32_t i = 0; i < end - first; i++)
        free (found [i].mem);
    free (found);
}

//  ---------------------------------------------------------------------------
//  Worker handlers

static void
s_reregister (dq_broker_t *self, const s_peer_t *peer)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_REREGISTER);
    s_queue_msg (self, self->be, peer->rid, peer->rid_size, &msg);
}

static void
s_worker_free_strings (dq_bworker_t *w)
{
    for (uint32_t i = 0; w->types && w->types [i]; i++)
        free (w->types [i]);
    free (w->types);
    w->types = NULL;
}

static void
s_handle_ready (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    dq_bworker_t *w = dq_registry_lookup (self->registry, peer->rid, peer->rid_size);
    bool known = w != NULL;
    if (!w) {
        w = dq_registry_add (self->registry, peer->rid, peer->rid_size);
        if (!w)
            return;
        w->last_send_ms = w->last_recv_ms = dq_mono_ms ();
    }
    free (w->name);
    free (w->host);
    w->name = strdup (msg->name? msg->name: "");
    w->host = strdup (msg->host? msg->host: "");
    assert (w->name && w->host);
    //  Shown in STATS, where text must be UTF-8.
    dq_utf8_clean (w->name);
    dq_utf8_clean (w->host);
    w->pid = msg->pid;
    w->capacity = msg->capacity;
    w->batch = msg->batch;
    w->stalled = false;
    s_worker_free_strings (w);
    w->types = calloc (msg->ntypes + 1, sizeof (char *));
    assert (w->types);
    for (uint32_t i = 0; i < msg->ntypes; i++)
        w->types [i] = strdup (msg->types [i]);
    if (dq_sched_worker_join (self->sched, w, msg->types, msg->ntypes))
        dq_log_error ("worker=w%u - out of memory joining its types", w->num);
    //  Jobs it still runs from before (broker restart, reconnect): if they
    //  are queued here, they are running there.
    for (uint32_t i = 0; i < msg->nrunning; i++) {
        dq_bjob_t *job = s_job_by_id (self, msg->running [i]);
        dq_bworker_t *old = job? job->worker: NULL;
        if (job && job->state == DQ_STATE_RUNNING && old && old != w
        &&  old->pid == w->pid && old->host && w->host && !strcmp (old->host, w->host)) {
            //  The same process under a new connection (it reconnected
            //  before its old one timed out): the job moves with it. A job
            //  another worker holds now stays there.
            s_release_worker (self, job);
            s_worker_add_job (w, job);
            job->last_worker = w->num;
            if (job->timeout_ms)
                s_timer_add (self, job, self->now + job->timeout_ms);
        }
        else
        if (job && job->state == DQ_STATE_QUEUED) {
            dq_sched_dequeue (self->sched, job);
            s_set_state (self, job, DQ_STATE_RUNNING);
            s_worker_add_job (w, job);
            job->last_worker = w->num;
            if (!job->attempts)
                job->attempts = 1;
            //  Dispatches are not stored: after a restart its start time
            //  is not known, the time the broker learns of it is a bound
            if (!job->started_ms)
                job->started_ms = self->now;
            if (job->timeout_ms)
                s_timer_add (self, job, self->now + job->timeout_ms);
        }
    }
    dq_sched_worker_changed (self->sched, w);
    if (!known || msg->capacity == 0)
        dq_log_info ("worker=w%u name=%s host=%s pid=%u capacity=%u types=%u - %s",
                     w->num, w->name, w->host, w->pid, w->capacity, msg->ntypes,
                     known? "draining": "registered");
    char wid [16];
    snprintf (wid, sizeof wid, "w%u", w->num);
    dq_msg_t reply;
    dq_msg_init (&reply, DQ_CMD_WELCOME);
    reply.heartbeat_ms = self->cfg.heartbeat_ms;
    reply.liveness = self->cfg.liveness;
    reply.broker_id = self->broker_id;
    reply.worker_id = wid;
    s_queue_worker (self, w, &reply);
    w->welcome_commit = dq_store_commits (self->store) + 1;
}

static void
s_ack_later (dq_bworker_t *w, uint64_t seq)
{
    if (w->nacks == w->acks_cap) {
        uint32_t cap = w->acks_cap? w->acks_cap * 2: 64;
        uint64_t *acks = realloc (w->acks, cap * sizeof *acks);
        assert (acks);
        w->acks = acks;
        w->acks_cap = cap;
    }
    w->acks [w->nacks++] = seq;
}

//  Record one result. The outcome counts even from a worker we do not know
//  (it ran the job before a broker restart): first terminal outcome wins.
//  Returns the job, or NULL if it is unknown (expired).
static dq_bjob_t *
s_record_result (dq_broker_t *self, dq_bworker_t *w, const dq_result_rec_t *r)
{
    dq_bjob_t *job = s_job_by_id (self, r->id);
    if (!job || dq_state_is_terminal (job->state))
        return job;
    if (job->worker && job->worker != w) {
        //  Another worker holds a later lease on it: it can stop.
        s_abandon (self, job, "finished elsewhere");
    }
    if (job->state != DQ_STATE_RUNNING && !job->started_ms) {
        //  It ran before a restart (dispatches are not stored): the
        //  worker's attempt counts, and the time the broker learns of it
        //  stands in for the start it did not record.
        if (r->attempt > job->attempts && r->attempt <= job->max_attempts)
            job->attempts = (uint16_t) r->attempt;
        if (!job->attempts)
            job->attempts = 1;
        job->started_ms = self->now;
    }
    if (!r->ok)
        s_attempt_failed (self, job, r->error? r->error: "failed", true);
    else
    if (r->output_size > self->cfg.max_payload)
        s_attempt_failed (self, job, "output over the --max-payload limit", false);
    else {
        if (r->content_type && !job->content_type) {
            job->content_type = strdup (r->content_type);
            assert (job->content_type);
            dq_utf8_clean (job->content_type);  //  shown in RESULT
        }
        s_finish (self, job, DQ_STATE_SUCCEEDED, r->output, r->output_size, NULL);
    }
    return job;
}

static void
s_handle_done (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    dq_bworker_t *w = dq_registry_lookup (self->registry, peer->rid, peer->rid_size);
    dq_result_rec_t single = { msg->id, msg->attempt, msg->ok, msg->output,
                               msg->output_size, msg->error, msg->content_type };
    dq_result_rec_t *results = msg->nresults? msg->results: &single;
    uint32_t n = msg->nresults? msg->nresults: 1;
    //  Results of jobs we know are acknowledged after the commit, with the
    //  worker's other ACKs; the rest (unknown worker, expired job) at once.
    const char **now_ids = NULL;
    uint32_t nnow = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!results [i].id)
            continue;
        dq_bjob_t *job = s_record_result (self, w, &results [i]);
        if (w)
            w->done++;
        if (w && job)
            s_ack_later (w, job->node.id);
        else {
            if (!now_ids) {
                now_ids = malloc (n * sizeof (char *));
                assert (now_ids);
            }
            now_ids [nnow++] = results [i].id;
        }
    }
    if (nnow) {
        dq_msg_t ack;
        dq_msg_init (&ack, DQ_CMD_ACK);
        ack.ids = now_ids;
        ack.nids = nnow;
        s_queue_msg (self, self->be, peer->rid, peer->rid_size, &ack);
    }
    free (now_ids);
    if (!w)
        s_reregister (self, peer);
}

//  Drop a worker: every job it held goes back to its queue, the attempt
//  counted (and failed for good when it was the last).
static void
s_worker_drop (dq_broker_t *self, dq_bworker_t *w, const char *why)
{
    dq_log_info ("worker=w%u name=%s host=%s inflight=%u - %s", w->num,
                 w->name? w->name: "", w->host? w->host: "", w->inflight, why);
    while (w->inflight) {
        dq_bjob_t *job = w->jobs [w->inflight - 1];
        char error [200];
        snprintf (error, sizeof error, "worker w%u (%s) lost: %s", w->num,
                  w->host? w->host: "?", why);
        s_attempt_failed (self, job, error, false);
    }
    dq_sched_worker_leave (self->sched, w);
    dq_registry_remove (self->registry, &w);
}

static void
s_handle_bye (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    (void) msg;
    dq_bworker_t *w = dq_registry_lookup (self->registry, peer->rid, peer->rid_size);
    if (w)
        s_worker_drop (self, w, "left");
}

static void
s_handle_heartbeat (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg)
{
    (void) msg;
    if (!dq_registry_lookup (self->registry, peer->rid, peer->rid_size))
        s_reregister (self, peer);
}

//  ---------------------------------------------------------------------------
//  Reading and dispatching messages

typedef void (s_handler_fn) (dq_broker_t *self, const s_peer_t *peer, dq_msg_t *msg);

static s_handler_fn *s_client_handlers [DQ_CMD_COUNT_] = {
    [DQ_CMD_SUBMIT] = s_handle_submit,
    [DQ_CMD_STATUS] = s_handle_status,
    [DQ_CMD_RESULT] = s_handle_result,
    [DQ_CMD_CANCEL] = s_handle_cancel,
    [DQ_CMD_STATS] = s_handle_stats,
    [DQ_CMD_DAG] = s_handle_dag,
};

static s_handler_fn *s_worker_handlers [DQ_CMD_COUNT_] = {
    [DQ_CMD_READY] = s_handle_ready,
    [DQ_CMD_HEARTBEAT] = s_handle_heartbeat,
    [DQ_CMD_DONE] = s_handle_done,
    [DQ_CMD_BYE] = s_handle_bye,
};

//  Read one message from sock. Returns false if there was none.
static bool
s_read_one (dq_broker_t *self, void *sock, s_handler_fn **handlers)
{
    uint8_t rid [256];
    size_t rid_size = 0;
    dq_err_t err;
    char reason [200];
    uint64_t req = 0;
    dq_msg_t *msg = dq_msg_recv_rid (sock, rid, &rid_size, ZMQ_DONTWAIT, &err,
                                     reason, &req);
    if (!msg) {
        if (err == DQ_OK)
            return false;
        const char *side = sock == self->fe? "frontend": "backend";
        s_log_bad (self, "%s peer - bad message: %s", side, reason);
        //  With the request id when it could be read, else 0.
        s_queue_error (self, sock, rid, rid_size, req, err, 0, "%s", reason);
        return true;
    }
    s_peer_t peer = { rid, rid_size };
    if (sock == self->be && self->worker_keys) {
        //  zauth let it in with any allowed key; only worker keys may act
        //  as workers.
        const char *key = dq_msg_peer_key (msg);
        if (!key || !zhashx_lookup (self->worker_keys, key)) {
            s_log_bad (self, "backend peer key=%s - not in --curve-workers, refused",
                       key? key: "-");
            s_queue_error (self, sock, rid, rid_size, msg->rid, DQ_ERR_INVALID, 0,
                           "this key may not act as a worker (not in the broker's "
                           "worker key directory)");
            dq_msg_destroy (&msg);
            return true;
        }
    }
    if (sock == self->be) {
        dq_bworker_t *w = dq_registry_lookup (self->registry, rid, rid_size);
        if (w) {
            w->last_recv_ms = dq_mono_ms ();
            if (w->stalled && msg->cmd != DQ_CMD_BYE) {
                w->stalled = false;
                dq_sched_worker_changed (self->sched, w);
            }
        }
    }
    s_handler_fn *fn = handlers [msg->cmd];
    if (fn)
        fn (self, &peer, msg);
    else {
        s_log_bad (self, "%s peer - %s is not a command for this port",
                   sock == self->fe? "frontend": "backend", dq_cmd_str (msg->cmd));
        s_queue_error (self, sock, rid, rid_size, msg->rid, DQ_ERR_PROTOCOL, 0,
                       "%s is not a command for the %s port", dq_cmd_str (msg->cmd),
                       sock == self->fe? "client (frontend)": "worker (backend)");
    }
    dq_msg_destroy (&msg);
    return true;
}

//  ---------------------------------------------------------------------------
//  Deadlines, dispatch, heartbeats

static void
s_run_timers (dq_broker_t *self)
{
    dq_bjob_t *job;
    while ((job = dq_heap_peek (self->timers)) && job->deadline_ms <= self->now) {
        dq_heap_pop (self->timers);
        job->where = DQ_WHERE_NONE;
        if (job->state == DQ_STATE_RUNNING) {
            char error [120];
            snprintf (error, sizeof error, "timed out after %.3f s (attempt %u)",
                      job->timeout_ms / 1000.0, job->attempts);
            s_abandon (self, job, "timeout");
            s_attempt_failed (self, job, error, true);
        }
        else
        if (job->state == DQ_STATE_WAITING) {
            s_set_state (self, job, DQ_STATE_QUEUED);
            s_enqueue (self, job);
        }
        else
        if (dq_state_is_terminal (job->state)) {
            if (dq_dag_has_pending_children (&job->node))
                s_timer_add (self, job, self->now + 60000);
            else
                s_delete_job (self, job);
        }
    }
    s_keys_expire (self);
    s_cold_expire (self);
    s_cold_dags_expire (self);
}

//  With the syncer, a JOB waits in the out queue for the sync of the turn
//  that dispatched it. It need not when everything that made the job ready
//  is on disk already (a job that waited in its queue while a worker was
//  busy): sending it at once saves a sync per job on a busy worker slot.
//  Dispatches themselves are not stored, so nothing of this turn is needed.
static bool
s_ready_on_disk (dq_broker_t *self, const dq_bjob_t *job)
{
    //  Wrapping difference: a job queued 2^31 commits ago just waits.
    return self->sync_fd != -1
        && (int32_t) (job->ready_commit - (uint32_t) self->durable) <= 0;
}

static void
s_dispatch (dq_broker_t *self, dq_bjob_t *job, dq_bworker_t *w)
{
    uint64_t waited = self->now - (job->deadline_ms <= self->now? job->deadline_ms: self->now);
    self->dispatch_hist [dq_proto_hist_bucket (waited)]++;
    bool early = s_ready_on_disk (self, job);     //  before slot replaces it
    s_worker_add_job (w, job);
    w->tick = ++self->tick;
    dq_sched_worker_changed (self->sched, w);
    job->attempts++;
    job->started_ms = self->now;
    job->last_worker = w->num;
    s_set_state (self, job, DQ_STATE_RUNNING);
    if (job->timeout_ms)
        s_timer_add (self, job, self->now + job->timeout_ms);
    //  Not stored: a job running when the broker stops is queued again
    //  (docs/operations.md), its attempt counted from the last retry.
    //  The JOB message is built once the turn's dispatching is done, so a
    //  worker given several jobs gets them in one message.
    if (w->npending == w->pending_cap) {
        uint32_t cap = w->pending_cap? w->pending_cap * 2: 16;
        dq_bjob_t **pending = realloc (w->pending, cap * sizeof *pending);
        assert (pending);
        w->pending = pending;
        w->pending_cap = cap;
    }
    if (w->npending == 0)
        zlistx_add_end (self->pending_workers, w);
    w->pending [w->npending++] = job;
    if (early) {
        w->pending [w->npending - 1] = w->pending [w->nearly];
        w->pending [w->nearly++] = job;
    }
    dq_log_debug ("job=%s-%" PRIu64 " type=%s worker=w%u attempt=%u - dispatched",
                  self->broker_id, job->node.id, job->type->name, w->num, job->attempts);
}

//  Fill a task record for job; parent ids go to pids (nparents of them).
//  Outputs read from the store go to owned (one slot per parent), freed by
//  the caller after encoding.
static void
s_task_rec (dq_broker_t *self, dq_bjob_t *job, dq_task_rec_t *t, char *id,
            dq_parent_t *parents, char (*pids) [DQ_ID_MAX], void **owned)
{
    s_job_id (self, job->node.id, id);
    for (uint32_t k = 0; k < job->node.nparents; k++) {
        dq_bjob_t *p = (dq_bjob_t *) job->node.parents [k].node;
        memset (&parents [k], 0, sizeof parents [k]);
        if (p) {
            s_job_id (self, p->node.id, pids [k]);
            parents [k].id = pids [k];
            parents [k].name = p->name;
            const void *output;
            size_t size;
            if (s_output_get (self, p, &output, &size, &owned [k]))
                s_store_fail (self, "reading a parent's output");
            parents [k].output = output;
            parents [k].output_size = size;
        }
        else
            parents [k].id = "(expired)";
    }
    *t = (dq_task_rec_t) {
        .id = id, .type = job->type->name, .payload = job->payload,
        .payload_size = job->payload_size, .content_type = job->content_type,
        .attempt = job->attempts, .timeout_ms = job->timeout_ms,
        .parents = parents, .nparents = job->node.nparents };
}

//  Queue JOB messages for jobs[0..n-1] of worker w: one message with a
//  "tasks" array when the worker takes batches, else one per job. Returns
//  false if the message could not be encoded (too big).
static bool
s_queue_jobs (dq_broker_t *self, dq_bworker_t *w, dq_bjob_t **jobs, uint32_t n)
{
    size_t nparents = 0;
    for (uint32_t i = 0; i < n; i++)
        nparents += jobs [i]->node.nparents;
    dq_task_rec_t *tasks = malloc (n * sizeof *tasks);
    char (*ids) [DQ_ID_MAX] = malloc ((size_t) n * DQ_ID_MAX);
    dq_parent_t *parents = malloc ((nparents + 1) * sizeof *parents);
    char (*pids) [DQ_ID_MAX] = malloc ((nparents + 1) * DQ_ID_MAX);
    uint64_t *seqs = malloc (n * sizeof *seqs);
    void **owned = calloc (nparents + 1, sizeof *owned);
    assert (tasks && ids && parents && pids && seqs && owned);
    size_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        s_task_rec (self, jobs [i], &tasks [i], ids [i], parents + at, pids + at,
                    owned + at);
        at += jobs [i]->node.nparents;
        seqs [i] = jobs [i]->node.id;
    }
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_JOB);
    if (n == 1 && !w->batch) {
        dq_task_rec_t *t = &tasks [0];
        msg.id = t->id;
        msg.type = t->type;
        msg.payload = t->payload;
        msg.payload_size = t->payload_size;
        msg.content_type = t->content_type;
        msg.attempt = t->attempt;
        msg.timeout_ms = t->timeout_ms;
        msg.parents = t->parents;
        msg.nparents = t->nparents;
    }
    else {
        msg.tasks = tasks;
        msg.ntasks = n;
    }
    size_t before = self->nout;
    s_queue_worker (self, w, &msg);
    bool queued = self->nout > before;
    if (queued) {
        self->out [before].jobs = seqs;
        self->out [before].njobs = n;
        self->out [before].worker = w->num;
    }
    else
        free (seqs);
    for (size_t k = 0; k < nparents; k++)
        free (owned [k]);
    free (owned);
    free (pids);
    free (parents);
    free (ids);
    free (tasks);
    return queued;
}

//  Batches stay well under the message limit and keep a slow worker's
//  share of the queue small.
#define S_BATCH_JOBS_MAX  256
#define S_BATCH_BYTES_MAX (4u << 20)

//  Queue JOB messages for w->pending [from, to), in batches.
static void
s_queue_pending (dq_broker_t *self, dq_bworker_t *w, uint32_t from, uint32_t to)
{
    uint32_t i = from;
    while (i < to) {
        uint32_t n = 0;
        size_t bytes = 0;
        if (w->batch) {
            while (i + n < to && n < S_BATCH_JOBS_MAX
            &&     (n == 0 || bytes < S_BATCH_BYTES_MAX)) {
                dq_bjob_t *job = w->pending [i + n];
                bytes += job->payload_size;
                for (uint32_t k = 0; k < job->node.nparents; k++)
                    if (job->node.parents [k].node)
                        bytes += ((dq_bjob_t *) job->node.parents [k].node)->output_size;
                n++;
            }
        }
        else
            n = 1;
        if (!s_queue_jobs (self, w, w->pending + i, n)) {
            if (n > 1) {
                //  Too big together: one message each.
                for (uint32_t k = 0; k < n; k++)
                    if (!s_queue_jobs (self, w, w->pending + i + k, 1))
                        s_attempt_failed (self, w->pending [i + k],
                            "the job's message (payload and parents' outputs) "
                            "is over the message size limit", false);
            }
            else
                s_attempt_failed (self, w->pending [i],
                    "the job's message (payload and parents' outputs) is over "
                    "the message size limit", false);
        }
        i += n;
    }
}

//  The turn's dispatches: jobs whose readiness is on disk go at once to a
//  worker whose WELCOME has gone out (s_ready_on_disk), the others wait in
//  the out queue for this turn's commit like every other message.
static void
s_send_jobs (dq_broker_t *self)
{
    dq_bworker_t *w;
    while ((w = zlistx_first (self->pending_workers))) {
        zlistx_delete (self->pending_workers, NULL);
        uint32_t now = w->welcome_commit <= self->durable? w->nearly: 0;
        if (now) {
            size_t from = self->nout;
            s_queue_pending (self, w, 0, now);
            s_send_jobs_now (self, from);
        }
        s_queue_pending (self, w, now, w->npending);
        w->npending = w->nearly = 0;
    }
}

static void
s_dispatch_all (dq_broker_t *self)
{
    dq_bjob_t *job;
    dq_bworker_t *w;
    while (dq_sched_next (self->sched, &job, &w))
        s_dispatch (self, job, w);
    s_send_jobs (self);
}

static void
s_send_acks (dq_broker_t *self)
{
    for (dq_bworker_t *w = dq_registry_first (self->registry); w;
         w = dq_registry_next (self->registry)) {
        if (!w->nacks)
            continue;
        char (*ids) [DQ_ID_MAX] = malloc ((size_t) w->nacks * DQ_ID_MAX);
        const char **idp = malloc ((size_t) w->nacks * sizeof (char *));
        assert (ids && idp);
        for (uint32_t i = 0; i < w->nacks; i++) {
            s_job_id (self, w->acks [i], ids [i]);
            idp [i] = ids [i];
        }
        dq_msg_t ack;
        dq_msg_init (&ack, DQ_CMD_ACK);
        ack.ids = idp;
        ack.nids = w->nacks;
        s_queue_worker (self, w, &ack);
        w->nacks = 0;
        free (idp);
        free (ids);
    }
}

static void
s_heartbeats (dq_broker_t *self)
{
    //  Checked every quarter interval, sent when a worker has heard nothing
    //  for three quarters: the longest silence a worker sees is about one
    //  interval, well inside its liveness.
    uint64_t mono = dq_mono_ms ();
    uint64_t interval = self->cfg.heartbeat_ms;
    if (mono - self->last_beat < interval / 4)
        return;
    self->last_beat = mono;
    uint64_t dead_after = interval * self->cfg.liveness;
    zlistx_t *dead = zlistx_new ();
    for (dq_bworker_t *w = dq_registry_first (self->registry); w;
         w = dq_registry_next (self->registry)) {
        if (mono - w->last_recv_ms > dead_after)
            zlistx_add_end (dead, w);
        else
        if (mono - w->last_send_ms >= interval * 3 / 4) {
            dq_msg_t hb;
            dq_msg_init (&hb, DQ_CMD_HEARTBEAT);
            s_queue_worker (self, w, &hb);
            w->last_send_ms = mono;
        }
    }
    for (dq_bworker_t *w = zlistx_first (dead); w; w = zlistx_next (dead))
        s_worker_drop (self, w, "missed heartbeats");
    zlistx_destroy (&dead);
}

static long
s_poll_timeout (dq_broker_t *self)
{
    if (self->cold_more)
        return 0;               //  retention has a backlog: go on at once
    long timeout = (long) self->cfg.heartbeat_ms / 4;
    dq_bjob_t *job = dq_heap_peek (self->timers);
    if (job) {
        uint64_t now = dq_now_ms ();
        long due = job->deadline_ms > now? (long) (job->deadline_ms - now): 0;
        if (due < timeout)
            timeout = due;
    }
    return timeout;
}

//  ---------------------------------------------------------------------------
//  Recovery from the store

static int
s_load_key (void *arg, const dq_store_key_t *k)
{
    dq_broker_t *self = arg;
    s_key_add (self, k->key, k->first, k->count, k->dag, k->created_ms);
    if (k->first + k->count > self->next_seq)
        self->next_seq = k->first + k->count;
    return 0;
}

static int
s_load_dag (void *arg, const dq_store_dag_t *d)
{
    dq_broker_t *self = arg;
    dq_bdag_t *dag = calloc (1, sizeof *dag);
    assert (dag);
    dag->seq = d->id;
    dag->name = d->name? strdup (d->name): NULL;
    dag->created_ms = d->created_ms;
    if (dq_seqmap_put (self->dags, dag->seq, dag)) {
        dq_log_error ("store - DAG id %" PRIu64 " is out of range", d->id);
        free (dag->name);
        free (dag);
        return -1;
    }
    if (d->id >= self->next_seq)
        self->next_seq = d->id + 1;
    return 0;
}

//  A record for a stored job: loading the store at start, or bringing a
//  cold job back (then it was counted already and is in no DAG). Returns
//  NULL if its id is out of range.
static dq_bjob_t *
s_restore (dq_broker_t *self, const dq_store_job_t *r, bool loading)
{
    dq_type_t *type = dq_sched_type (self->sched, r->type, true);
    if (!type)
        return NULL;
    //  A cold job comes back without its payload (it has finished).
    dq_jobspec_t spec = { .type = r->type, .payload = r->payload,
                          .payload_size = r->payload? r->payload_size: 0,
                          .content_type = r->content_type, .name = r->name,
                          .priority = r->priority, .attempts = r->max_attempts,
                          .timeout_ms = r->timeout_ms };
    dq_bjob_t *job = s_job_new (self, r->id, type, &spec, NULL);
    if (dq_seqmap_put (self->jobs, job->node.id, job)) {
        dq_log_error ("store - job id %" PRIu64 " is out of range", r->id);
        free (job->payload);
        free (job->name);
        free (job->content_type);
        free (job);
        return NULL;
    }
    job->restored = !loading;
    unsigned worker;
    if (r->worker && sscanf (r->worker, "w%u", &worker) == 1)
        job->last_worker = worker;
    job->created_ms = r->created_ms;
    job->started_ms = r->started_ms;
    job->run_at_ms = r->run_at_ms;
    job->attempts = (uint16_t) r->attempts;
    job->error = r->error? strdup (r->error): NULL;
    if (r->dag && loading) {
        job->dag = dq_seqmap_get (self->dags, r->dag);
        if (job->dag) {
            dq_bdag_t *dag = job->dag;
            uint64_t *jobs = realloc (dag->jobs, (dag->njobs + 1) * sizeof (uint64_t));
            assert (jobs);
            dag->jobs = jobs;
            dag->jobs [dag->njobs++] = job->node.id;
            dag->alive++;
        }
    }
    if (r->id >= self->next_seq)
        self->next_seq = r->id + 1;
    bool terminal = dq_state_is_terminal (r->state);
    if (terminal) {
        //  Counted as terminal from the start; the tracker is told below.
        job->state = (uint8_t) r->state;
        if (loading)
            job->type->counts [r->state]++;
        if (job->dag)
            job->dag->counts [r->state]++;
        job->finished_ms = r->finished_ms;
        job->skipped_by = r->skipped_by;
        job->output_size = (uint32_t) r->output_size;  //  read on request
        free (job->payload);
        job->payload = NULL;
        job->payload_size = 0;
    }
    else {
        self->unfinished++;
        self->unfinished_bytes += job->payload_size;
        s_set_state (self, job, DQ_STATE_WAITING);
    }
    //  Parents were loaded first (id order). Expired parents of finished
    //  jobs are simply gone.
    dq_dag_node_t **parents = calloc (r->nparents + 1, sizeof *parents);
    bool *rof = calloc (r->nparents + 1, sizeof *rof);
    assert (parents && rof);
    uint32_t np = 0;
    for (uint32_t k = 0; k < r->nparents; k++) {
        dq_bjob_t *p = s_job (self, r->parents [k]);
        if (p) {
            parents [np] = &p->node;
            rof [np++] = r->run_on_failure [k];
        }
        else
        if (!terminal)
            dq_log_warn ("job=%s-%" PRIu64 " - parent %" PRIu64 " missing from the "
                         "store; treated as succeeded", self->broker_id, r->id,
                         r->parents [k]);
    }
    dq_dag_add (self->dag, &job->node, parents, rof, np);
    free (parents);
    free (rof);
    if (terminal) {
        //  A skip the tracker already derived from the parents returns -1:
        //  nothing to do then.
        if (r->state != DQ_STATE_SKIPPED || job->node.phase != DQ_DAG_SKIPPED)
            dq_dag_finish (self->dag, &job->node, r->state);
        s_timer_add (self, job, job->finished_ms + self->cfg.result_ttl_ms);
    }
    return job;
}

static int
s_load_job (void *arg, const dq_store_job_t *r)
{
    dq_broker_t *self = arg;
    if (dq_state_is_terminal (r->state) && !r->dag && !r->has_children) {
        //  Cold (see s_evict_finished): counted, not held.
        dq_type_t *type = dq_sched_type (self->sched, r->type, true);
        if (!type)
            return -1;
        type->counts [r->state]++;
        if (r->id >= self->next_seq)
            self->next_seq = r->id + 1;
        self->cold++;
        return 0;
    }
    return s_restore (self, r, true)? 0: -1;
}

static int
s_load (dq_broker_t *self, char *err, size_t err_size)
{
    uint64_t t0 = dq_mono_ms ();
    dq_store_loader_t loader = { s_load_job, s_load_dag, s_load_key, self };
    int rc = dq_store_load (self->store, &loader);
    if (rc) {
        snprintf (err, err_size, "cannot read the store in %s: %s",
                  self->cfg.data_dir, dq_store_error (self->store));
        return -1;
    }
    char *seq = dq_store_meta_get (self->store, "next_seq");
    uint64_t stored = 0;
    if (seq && dq_parse_u64 (seq, 1, UINT64_MAX, &stored) == 0 && stored > self->next_seq)
        self->next_seq = stored;
    free (seq);
    //  DAGs that finished before the restart: their finish time is their
    //  last job's, and they go cold again (s_dag_chill).
    uint64_t cursor = 0;
    dq_bdag_t *dag;
    while ((dag = dq_seqmap_next (self->dags, &cursor, NULL))) {
        uint32_t done = dag->counts [DQ_STATE_SUCCEEDED] + dag->counts [DQ_STATE_FAILED]
                      + dag->counts [DQ_STATE_CANCELLED] + dag->counts [DQ_STATE_SKIPPED];
        if (done < dag->njobs)
            continue;
        dag->finished_ms = dag->created_ms;
        for (uint32_t i = 0; i < dag->njobs; i++) {
            dq_bjob_t *job = s_job (self, dag->jobs [i]);
            if (job && job->finished_ms > dag->finished_ms)
                dag->finished_ms = job->finished_ms;
        }
        s_seq_push (&self->chill, &self->nchill, &self->chill_cap, dag->seq);
    }
    s_evict_finished (self);
    dq_log_info ("store - loaded jobs=%" PRIu64 " (%zu in memory) unfinished=%" PRIu64
                 " dags=%zu keys=%zu in %" PRIu64 " ms",
                 (uint64_t) dq_seqmap_size (self->jobs) + self->cold,
                 dq_seqmap_size (self->jobs), self->unfinished,
                 dq_seqmap_size (self->dags), zhashx_size (self->keys),
                 dq_mono_ms () - t0);
    return 0;
}

//  ---------------------------------------------------------------------------
//  Setup

void
dq_broker_cfg_defaults (dq_broker_cfg_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    cfg->frontend = DQ_BROKER_FRONTEND_DEFAULT;
    cfg->backend = DQ_BROKER_BACKEND_DEFAULT;
    cfg->events = DQ_BROKER_EVENTS_DEFAULT;
    cfg->data_dir = DQ_BROKER_DATA_DIR_DEFAULT;
    cfg->sync = DQ_STORE_SYNC_FULL;
    cfg->heartbeat_ms = DQ_BROKER_HEARTBEAT_DEFAULT;
    cfg->liveness = DQ_BROKER_LIVENESS_DEFAULT;
    cfg->max_jobs = DQ_BROKER_MAX_JOBS_DEFAULT;
    cfg->max_bytes = DQ_BROKER_MAX_BYTES_DEFAULT;
    cfg->max_payload = DQ_BROKER_MAX_PAYLOAD_DEFAULT;
    cfg->max_message = DQ_BROKER_MAX_MESSAGE_DEFAULT;
    cfg->max_dag_jobs = DQ_BROKER_MAX_DAG_JOBS_DEFAULT;
    cfg->max_deps = DQ_BROKER_MAX_DEPS_DEFAULT;
    cfg->attempts = DQ_BROKER_ATTEMPTS_DEFAULT;
    cfg->retry_base_ms = DQ_BROKER_RETRY_BASE_DEFAULT;
    cfg->retry_max_ms = DQ_BROKER_RETRY_MAX_DEFAULT;
    cfg->result_ttl_ms = DQ_BROKER_RESULT_TTL_DEFAULT;
    cfg->min_free_bytes = DQ_BROKER_MIN_FREE_DEFAULT;
    cfg->batch = DQ_BROKER_BATCH_DEFAULT;
}

static bool
s_timer_before (const void *a, const void *b)
{
    const dq_bjob_t *x = a, *y = b;
    if (x->deadline_ms != y->deadline_ms)
        return x->deadline_ms < y->deadline_ms;
    return x->node.id < y->node.id;
}

static void
s_timer_setpos (void *item, size_t pos)
{
    ((dq_bjob_t *) item)->pos = pos;
}

static int
s_bind (dq_broker_t *self, zsock_t *sock, const char *endpoint, bool curve,
        char *err, size_t err_size)
{
    if (curve) {
        zcert_t *cert = zcert_load (self->cfg.curve_secret);
        if (!cert) {
            snprintf (err, err_size, "cannot read CURVE certificate %s",
                      self->cfg.curve_secret);
            return -1;
        }
        zcert_apply (cert, sock);
        zcert_destroy (&cert);
        zsock_set_curve_server (sock, 1);
        //  Without a running ZAP handler libzmq must refuse, not admit.
        zsock_set_zap_domain (sock, sock == self->backend? "dagq-workers": "dagq-clients");
        zsock_set_zap_enforce_domain (sock, 1);
    }
    if (zsock_bind (sock, "%s", endpoint) == -1) {
        snprintf (err, err_size, "cannot bind %s: %s", endpoint, zmq_strerror (errno));
        return -1;
    }
    return 0;
}

static zsock_t *
s_router (dq_broker_t *self)
{
    zsock_t *sock = zsock_new (ZMQ_ROUTER);
    if (!sock)
        return NULL;
    zsock_set_router_mandatory (sock, 1);
    zsock_set_maxmsgsize (sock, (int64_t) self->cfg.max_message);
    zsock_set_sndhwm (sock, 200000);
    zsock_set_rcvhwm (sock, 200000);
    zsock_set_linger (sock, 1000);
    zsock_set_tcp_keepalive (sock, 1);
    zsock_set_tcp_keepalive_idle (sock, 30);
    return sock;
}

dq_broker_t *
dq_broker_new (const dq_broker_cfg_t *cfg, char *err, size_t err_size,
               int *exit_code)
{
    dq_broker_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, err_size, "out of memory");
        *exit_code = DQ_BROKER_EXIT_CONFIG;
        return NULL;
    }
    self->cfg = *cfg;
    self->sync_fd = -1;
    self->jobs = dq_seqmap_new ();
    self->dags = dq_seqmap_new ();
    self->keys = zhashx_new ();
    self->key_order = zlistx_new ();
    self->pending_workers = zlistx_new ();
    self->sched = dq_sched_new ();
    self->registry = dq_registry_new ();
    dq_dag_events_t events = { s_on_ready, s_on_skip, self };
    self->dag = dq_dag_new (&events);
    self->timers = dq_heap_new (s_timer_before, s_timer_setpos);
    self->next_seq = 1;
    self->started_ms = self->now = dq_now_ms ();
    if (!self->jobs || !self->dags || !self->keys || !self->key_order
    ||  !self->sched || !self->registry || !self->dag || !self->timers
    ||  !self->pending_workers) {
        snprintf (err, err_size, "out of memory");
        *exit_code = DQ_BROKER_EXIT_CONFIG;
        goto fail;
    }
    zhashx_set_destructor (self->keys, s_key_free);

    //  The store first: a refused data dir must not leave ports bound.
    if (!cfg->memory) {
        char why [512];
        self->store = dq_store_open (cfg->data_dir, cfg->sync, why, sizeof why);
        if (!self->store) {
            snprintf (err, err_size, "%s", why);
            *exit_code = DQ_BROKER_EXIT_STORE;
            goto fail;
        }
        if (dq_store_upgraded_from (self->store))
            dq_log_info ("store - %s upgraded from format version %d to %d",
                         dq_store_path (self->store),
                         dq_store_upgraded_from (self->store),
                         DQ_STORE_FORMAT_VERSION);
        char *id = dq_store_meta_get (self->store, "broker_id");
        if (id && cfg->broker_id && strcmp (id, cfg->broker_id)) {
            snprintf (err, err_size, "data dir %s belongs to broker '%s', not '%s'",
                      cfg->data_dir, id, cfg->broker_id);
            free (id);
            *exit_code = DQ_BROKER_EXIT_STORE;
            goto fail;
        }
        if (!id) {
            char hex [16];
            dq_random_hex (hex, 2);
            snprintf (self->broker_id, sizeof self->broker_id, "%s",
                      cfg->broker_id? cfg->broker_id: hex);
            if (!cfg->broker_id)
                snprintf (self->broker_id, sizeof self->broker_id, "b%s", hex);
            if (dq_store_meta_set (self->store, "broker_id", self->broker_id)
            ||  dq_store_commit (self->store)) {
                snprintf (err, err_size, "cannot write to the store: %s",
                          dq_store_error (self->store));
                *exit_code = DQ_BROKER_EXIT_STORE;
                goto fail;
            }
        }
        else {
            snprintf (self->broker_id, sizeof self->broker_id, "%s", id);
            free (id);
        }
        if (s_load (self, err, err_size)) {
            *exit_code = DQ_BROKER_EXIT_STORE;
            goto fail;
        }
        self->stored_seq = self->next_seq;
        //  --sync full: commits are synced by a thread, beside the loop.
        self->sync_fd = dq_store_sync_async (self->store);
        if (self->sync_fd == -1 && cfg->sync == DQ_STORE_SYNC_FULL)
            dq_log_warn ("store - no sync thread (%s); each commit waits for "
                         "its fsync", dq_store_error (self->store));
    }
    else {
        char hex [16];
        dq_random_hex (hex, 3);
        snprintf (self->broker_id, sizeof self->broker_id, "%s",
                  cfg->broker_id? cfg->broker_id: "");
        if (!cfg->broker_id)
            snprintf (self->broker_id, sizeof self->broker_id, "m%s", hex);
    }

    //  CURVE: the authenticator runs before any bind.
    bool curve = cfg->curve_secret != NULL;
    if (curve) {
        self->auth = zactor_new (zauth, NULL);
        if (!self->auth) {
            snprintf (err, err_size, "cannot start the CURVE authenticator");
            *exit_code = DQ_BROKER_EXIT_CONFIG;
            goto fail;
        }
        if (cfg->curve_workers) {
            //  Worker keys: the public keys of the certificates in the dir.
            self->worker_keys = zhashx_new ();
            DIR *dir = opendir (cfg->curve_workers);
            struct dirent *entry;
            while (dir && (entry = readdir (dir))) {
                if (entry->d_name [0] == '.')
                    continue;
                char path [4096];
                snprintf (path, sizeof path, "%s/%s", cfg->curve_workers, entry->d_name);
                zcert_t *cert = zcert_load (path);
                if (cert) {
                    zhashx_insert (self->worker_keys, zcert_public_txt (cert), (void *) 1);
                    zcert_destroy (&cert);
                }
            }
            if (dir)
                closedir (dir);
            if (zhashx_size (self->worker_keys) == 0) {
                snprintf (err, err_size, "no certificates in --curve-workers %s",
                          cfg->curve_workers);
                *exit_code = DQ_BROKER_EXIT_CONFIG;
                goto fail;
            }
        }
        if (!cfg->curve_clients)
            dq_log_warn ("broker - CURVE without --curve-clients: every key may connect "
                         "(links are encrypted, peers are not authenticated)");
        const char *clients = cfg->curve_clients? cfg->curve_clients: CURVE_ALLOW_ANY;
        zstr_sendx (self->auth, "CURVE", clients, NULL);
        zsock_wait (self->auth);
    }
    self->frontend = s_router (self);
    self->backend = s_router (self);
    self->events = zsock_new (ZMQ_PUB);
    if (!self->frontend || !self->backend || !self->events) {
        snprintf (err, err_size, "cannot create sockets");
        *exit_code = DQ_BROKER_EXIT_BIND;
        goto fail;
    }
    zsock_set_sndhwm (self->events, 100000);
    zsock_set_linger (self->events, 0);
    if (s_bind (self, self->frontend, cfg->frontend, curve, err, err_size)
    ||  s_bind (self, self->backend, cfg->backend, curve, err, err_size)
    ||  (cfg->events && *cfg->events
         && s_bind (self, self->events, cfg->events, curve, err, err_size))) {
        *exit_code = DQ_BROKER_EXIT_BIND;
        goto fail;
    }
    self->fe = zsock_resolve (self->frontend);
    self->be = zsock_resolve (self->backend);
    self->pub = zsock_resolve (self->events);
    return self;
fail:
    dq_broker_destroy (&self);
    return NULL;
}

static void
s_on_signal (int sig)
{
    (void) sig;
    if (s_signal_target)
        s_signal_target->stopping = 1;
}

void
dq_broker_stop (dq_broker_t *self)
{
    self->stopping = 1;
}

//  On the way out: wait until every commit with messages waiting is on
//  disk, and send them. 0, or -1 if a sync failed.
static int
s_wait_durable (dq_broker_t *self)
{
    uint64_t need = self->marks [self->nmarks - 1].n, durable = 0;
    if (dq_store_sync (self->store))
        return -1;
    while (true) {
        if (dq_store_durable (self->store, &durable))
            return -1;
        if (durable >= need)
            break;
        zmq_pollitem_t item = { NULL, self->sync_fd, ZMQ_POLLIN, 0 };
        zmq_poll (&item, 1, 1000);
    }
    s_flush_durable (self, durable);
    return 0;
}

//  Send the messages whose commits are on disk. 0, or -1 if a sync failed
//  (fail-stop).
static int
s_flush_on_disk (dq_broker_t *self)
{
    if (dq_store_durable (self->store, &self->durable)) {
        s_store_fail (self, "fdatasync");
        return -1;
    }
    s_flush_durable (self, self->durable);
    return 0;
}

//  While a sync is in flight, a commit would only wait for the next one:
//  leave the transaction open and commit once the sync ends. One commit then
//  covers the turns a sync takes, which writes each of the pages they share
//  (the tables' last leaves, the indexes') to the WAL once, not once a turn.
//  Capped in turns so the transaction stays small when syncs are slow.
#define S_COMMIT_LATER_TURNS 64

static bool
s_commit_later (dq_broker_t *self)
{
    if (self->stopping || self->exit_code || !dq_store_syncing (self->store)
    ||  self->commit_later >= S_COMMIT_LATER_TURNS)
        return false;
    self->commit_later++;
    return true;
}

//  Commit the open transaction and ask for its sync; messages queued so far
//  wait for it. 0, or -1 (fail-stop, the broker stops).
static int
s_commit (dq_broker_t *self)
{
    self->commit_later = 0;
    if (self->next_seq != self->stored_seq) {
        char seq [32];
        snprintf (seq, sizeof seq, "%" PRIu64, self->next_seq);
        if (dq_store_meta_set (self->store, "next_seq", seq))
            s_store_fail (self, "recording the id sequence");
        self->stored_seq = self->next_seq;
    }
    if (self->exit_code || dq_store_commit (self->store)) {
        if (!self->exit_code)
            s_store_fail (self, "commit");
        return -1;
    }
    s_mark (self, dq_store_commits (self->store));
    if (dq_store_sync (self->store)) {
        s_store_fail (self, "fdatasync");
        return -1;
    }
    return 0;
}

int
dq_broker_run (dq_broker_t *self)
{
    s_signal_target = self;
    struct sigaction sa;
    memset (&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);

    dq_log_info ("broker=%s frontend=%s backend=%s events=%s store=%s - ready",
                 self->broker_id, self->cfg.frontend, self->cfg.backend,
                 self->cfg.events? self->cfg.events: "-",
                 self->store? dq_store_path (self->store): "none (--memory)");
    zmq_pollitem_t items [] = {
        { self->be, 0, ZMQ_POLLIN, 0 },
        { self->fe, 0, ZMQ_POLLIN, 0 },
        { NULL, self->sync_fd, ZMQ_POLLIN, 0 },
    };
    while (!self->stopping) {
        int rc = zmq_poll (items, self->sync_fd == -1? 2: 3, s_poll_timeout (self));
        if (rc == -1 && errno != EINTR)
            break;
        self->now = dq_now_ms ();
        uint64_t turn_start = dq_mono_ms ();
        //  What a sync finished meanwhile goes out first: a JOB sent at
        //  once this turn must not pass its worker's WELCOME.
        if (self->sync_fd != -1 && s_flush_on_disk (self))
            break;
        //  1-2. a bounded batch, backend first
        //  A socket that said "nothing" is not asked again this turn: an
        //  empty read costs libzmq a system call.
        uint32_t n = 0;
        bool be_more = true, fe_more = true;
        while (n < self->cfg.batch && (be_more || fe_more) && !self->stopping) {
            if (be_more && (be_more = s_read_one (self, self->be, s_worker_handlers)))
                n++;
            if (fe_more && (fe_more = s_read_one (self, self->fe, s_client_handlers)))
                n++;
        }
        //  3-4. deadlines and heartbeats (a silent worker's jobs go back
        //  to their queues), then hand out ready jobs. Time spent in a long
        //  turn (a million-job DAG) was time the broker was not listening:
        //  it does not count against the workers.
        uint64_t mono = dq_mono_ms ();
        uint64_t took = mono - turn_start;
        if (took > self->cfg.heartbeat_ms / 2) {
            for (dq_bworker_t *w = dq_registry_first (self->registry); w;
                 w = dq_registry_next (self->registry))
                w->last_recv_ms = w->last_recv_ms + took < mono? w->last_recv_ms + took: mono;
        }
        s_run_timers (self);
        s_heartbeats (self);
        s_dispatch_all (self);
        s_send_acks (self);
        //  5. group commit, before anything of the batch is sent
        if (self->store) {
            s_evict_finished (self);
            //  6. replies, ACKs, JOBs, events: each batch's once its commit
            //  is on disk. With the syncer that is a later turn, and this
            //  loop goes on meanwhile.
            //  Also with the syncer: what only read queued messages under a
            //  commit already on disk, and nothing would wake the loop.
            if (!s_commit_later (self) && s_commit (self))
                break;
            if (s_flush_on_disk (self))
                break;
        }
        else
            s_flush (self, self->nout);
    }
    if (self->store && !self->exit_code)
        (void) s_commit (self);     //  a turn that left its commit for later
    if (!self->exit_code && self->nmarks && s_wait_durable (self))
        s_store_fail (self, "fdatasync");
    if (self->exit_code) {
        //  Fail-stop: drop the queued replies unsent.
        for (size_t i = 0; i < self->nout; i++) {
            free (self->out [i].body);
            free (self->out [i].jobs);
        }
        self->nout = 0;
        self->nevs = 0;
        self->nmarks = 0;
        dq_log_error ("broker=%s - stopped after a store failure", self->broker_id);
        return self->exit_code;
    }
    dq_log_info ("broker=%s - stopping", self->broker_id);
    s_flush (self, self->nout);
    return 0;
}

void
dq_broker_destroy (dq_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_broker_t *self = *self_p;
    if (s_signal_target == self)
        s_signal_target = NULL;
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->events);
    zactor_destroy (&self->auth);
    zhashx_destroy (&self->worker_keys);
    for (size_t i = 0; i < self->nout; i++) {
        free (self->out [i].body);
        free (self->out [i].jobs);
    }
    free (self->out);
    free (self->evs);
    free (self->marks);
    free (self->evict);
    if (self->jobs) {
        uint64_t cursor = 0;
        dq_bjob_t *job;
        while ((job = dq_seqmap_next (self->jobs, &cursor, NULL))) {
            dq_dag_drop (&job->node);
            free (job->payload);
            free (job->output);
            free (job->error);
            free (job->name);
            free (job->content_type);
            if (!job->in_slab)
                free (job);         //  else freed with its DAG, below
        }
        dq_seqmap_destroy (&self->jobs);
    }
    if (self->dags) {
        uint64_t cursor = 0;
        dq_bdag_t *dag;
        while ((dag = dq_seqmap_next (self->dags, &cursor, NULL))) {
            free (dag->name);
            free (dag->jobs);
            free (dag->slab);
            free (dag);
        }
        dq_seqmap_destroy (&self->dags);
    }
    free (self->chill);
    free (self->cold_dags);
    zlistx_destroy (&self->key_order);
    zlistx_destroy (&self->pending_workers);
    zhashx_destroy (&self->keys);
    dq_registry_destroy (&self->registry);
    dq_sched_destroy (&self->sched);
    dq_dag_destroy (&self->dag);
    dq_heap_destroy (&self->timers);
    dq_store_close (&self->store);
    free (self);
    *self_p = NULL;
}
