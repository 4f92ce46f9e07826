/*  dq_worker.c - the embeddable worker engine.

    Threads. dq_worker_run runs the engine on the caller's thread: one
    zmq_poll loop over the DEALER to the broker, an eventfd the pool writes
    when results are ready, and an eventfd dq_worker_stop writes. Pool
    threads (created on demand, at most `concurrency`) take tasks from a
    mutex-protected work list and put them back on a done list; the engine
    alone touches the socket and its bookkeeping, so the only shared state is
    the two lists, each task's `thread` field (all under `lock`) and the
    atomic `abandoned` flags.

    Tasks. One s_task_t per job id this process holds, in `tasks` (id ->
    task). A task is QUEUED (waiting for a free pool thread), RUNNING (in
    the pool, or on the engine thread for an inline handler) or DONE (its
    result waits for the broker's ACK; it is in `outbox` while its DONE
    still has to be sent on the current connection). ABANDON removes the
    task from `tasks` at once; a running one becomes an orphan the pool
    returns later, whose result is then dropped.

    Connection. READY is sent on connect and repeated every heartbeat until
    WELCOME; DONE messages go out only once welcomed, and a WELCOME that
    answers a registration puts every unacknowledged result back in the
    outbox (the broker ignores duplicates). A broker silent for liveness x
    heartbeat closes the socket; a new one connects after a jittered,
    doubling backoff (100 ms .. 5 s). Every DONE carries its task's sequence
    number as rid, so an ERROR about it can be matched.

    Not here: what a handler does (worker/dq_exec, worker/dq_builtins), and
    option parsing (worker/dagq_worker.c).
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             //  pipe2, asprintf, nftw, eventfd, sigabbrev_np
#endif
#include "dq_worker.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define S_PREWELCOME_HEARTBEAT_MS 1000  //  until WELCOME says otherwise
#define S_PREWELCOME_LIVENESS     3
#define S_BACKOFF_MIN_MS          100
#define S_BACKOFF_MAX_MS          5000
#define S_ACK_WAIT_MS             2000  //  on stop: wait this long for ACKs
#define S_ABANDON_WAIT_MS         5000  //  on stop: for abandoned handlers
#define S_POLL_MAX_MS             100   //  re-check zsys_interrupted this often
#define S_RECV_BATCH              256   //  messages read per loop turn
#define S_LINGER_BYE_MS           500   //  to flush BYE on close
#define S_ERROR_RETRY_MS          1000  //  resend after a transient ERROR
#define S_CONTENT_TYPE_MAX        256   //  as the decoder accepts
#define S_NAME_MAX                256

typedef struct {
    char *type;
    dq_handler_fn *fn;
    void *arg;
    int flags;
    void (*arg_free) (void *arg);
} s_handler_t;

typedef struct _s_thread_t s_thread_t;

typedef enum { S_QUEUED, S_RUNNING, S_DONE } s_state_t;

//  A received JOB message, shared by the tasks it carries (a batched JOB
//  carries several). Engine thread only.
typedef struct {
    dq_msg_t *msg;
    uint32_t refs;
} s_jobmsg_t;

static void
s_jobmsg_release (s_jobmsg_t **self_p)
{
    s_jobmsg_t *self = *self_p;
    if (self && --self->refs == 0) {
        dq_msg_destroy (&self->msg);
        free (self);
    }
    *self_p = NULL;
}

typedef struct _s_task_t {
    char *id;                    //  job id (key in tasks)
    uint64_t seq;                //  rid of its DONE messages
    s_state_t state;
    s_handler_t *handler;        //  NULL: no handler for the type
    s_jobmsg_t *job;             //  the JOB message (owns payload, parents)
    dq_task_t view;              //  what the handler sees
    atomic_bool abandoned;
    bool orphan;                 //  abandoned while in the pool: drop on return
    uint32_t attempt;            //  for DONE (the newest attempt the broker sent)
    s_thread_t *thread;          //  pool thread running it (under lock)
    struct _s_task_t *next;      //  work and done lists (under lock)
    int rc;                      //  handler's return
    dq_result_t result;          //  handler's result, normalised once DONE
    char *content_type;          //  owned copy for DONE, or NULL
    void *queue_handle;          //  in queue, or NULL
    void *outbox_handle;         //  in outbox, or NULL
    int64_t resend_at;           //  after a transient ERROR, or 0
} s_task_t;

struct _s_thread_t {
    pthread_t tid;
    dq_worker_t *owner;
    int efd;                     //  abandon_fd of the task it runs
};

typedef enum { S_RUN, S_DRAIN, S_ACKWAIT } s_phase_t;

struct _dq_worker_t {
    //  Settings, fixed once running
    char *endpoint;
    uint32_t concurrency;
    char *name;
    int grace_ms;
    int log_level;
    size_t max_output;
    zcert_t *curve_cert;         //  our secret cert, or NULL
    char *curve_server_key;      //  broker's public key (Z85), or NULL
    s_handler_t *handlers;
    uint32_t nhandlers;

    //  Shared with other threads
    pthread_mutex_t lock;
    pthread_cond_t work_cond;    //  pool threads wait for work here
    pthread_cond_t run_cond;     //  destroy waits for run to return here
    bool running;                //  dq_worker_run in progress (under lock)
    bool ran;                    //  dq_worker_run was called (under lock)
    s_task_t *work_head, *work_tail;  //  handed to the pool, not taken yet
    s_task_t *done_head, *done_tail;  //  returned by the pool
    bool pool_quit;
    s_thread_t *threads;         //  concurrency slots, nthreads started
    uint32_t nthreads;
    int wake_fd;                 //  pool -> engine: done list not empty
    int stop_fd;                 //  dq_worker_stop -> engine
    atomic_bool stop_requested;
    atomic_uint_fast64_t done;   //  jobs completed (dq_worker_done)

    //  Engine thread only
    zsock_t *sock;               //  NULL while waiting to reconnect
    void *handle;                //  its libzmq handle
    zhashx_t *tasks;             //  id -> s_task_t
    zlistx_t *queue;             //  QUEUED tasks, FIFO
    zlistx_t *outbox;            //  DONE tasks whose DONE must be sent
    zlistx_t *retry;             //  DONE tasks waiting for resend_at
    uint32_t nbusy;              //  tasks in the pool (including orphans)
    uint64_t next_seq;
    const char **types;          //  registered types, for READY
    char host [S_NAME_MAX + 1];
    s_phase_t phase;
    bool welcomed;               //  WELCOME received on this connection
    bool registering;            //  READY sent for (re)registration
    bool ready_pending;          //  READY could not be queued yet
    bool out_blocked;            //  last DONE send said EAGAIN
    uint32_t heartbeat_ms, liveness;
    int64_t last_send, last_recv, last_ready;
    int64_t reconnect_at;        //  when sock is NULL
    int backoff_ms;
    int64_t grace_deadline, ack_deadline;
    unsigned int rand_state;
};

#define s_log(self, lvl, fn, ...) \
    do { if ((self)->log_level >= (lvl)) fn (__VA_ARGS__); } while (0)
#define s_error(self, ...) s_log (self, DQ_WORKER_LOG_ERROR, zsys_error, __VA_ARGS__)
#define s_warn(self, ...)  s_log (self, DQ_WORKER_LOG_WARN, zsys_warning, __VA_ARGS__)
#define s_info(self, ...)  s_log (self, DQ_WORKER_LOG_INFO, zsys_info, __VA_ARGS__)
#define s_debug(self, ...) s_log (self, DQ_WORKER_LOG_DEBUG, zsys_debug, __VA_ARGS__)

//  ---------------------------------------------------------------------------
//  Small helpers

//  Job type names: as dq_proto accepts in READY.
static bool
s_type_ok (const char *t)
{
    size_t len = t? strlen (t): 0;
    if (len == 0 || len > DQ_PROTO_TYPE_MAX)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
           || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'
           || *p == ':' || *p == '-'))
            return false;
    return true;
}

//  Cut s to at most max bytes and make it valid UTF-8 in place: each byte
//  that does not start a well-formed sequence becomes '?'. Errors come from
//  stderr of arbitrary programs; the protocol and JSON want UTF-8.
static void
s_text_clean (char *s, size_t max)
{
    size_t len = strnlen (s, max);
    s [len] = 0;
    unsigned char *p = (unsigned char *) s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p [i];
        size_t n = c < 0x80? 1: (c >= 0xc2 && c <= 0xdf)? 2:
                   (c >= 0xe0 && c <= 0xef)? 3: (c >= 0xf0 && c <= 0xf4)? 4: 0;
        bool ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            if ((p [i + k] & 0xc0) != 0x80)
                ok = false;
        //  Overlong 3- and 4-byte forms, surrogates, beyond U+10FFFF.
        if (ok && n == 3 && ((c == 0xe0 && p [i + 1] < 0xa0)
                         ||  (c == 0xed && p [i + 1] > 0x9f)))
            ok = false;
        if (ok && n == 4 && ((c == 0xf0 && p [i + 1] < 0x90)
                         ||  (c == 0xf4 && p [i + 1] > 0x8f)))
            ok = false;
        if (!ok) {
            p [i++] = '?';
            continue;
        }
        i += n;
    }
}

static int64_t
s_now (void)
{
    return zclock_mono ();
}

static void
s_fd_signal (int fd)
{
    uint64_t one = 1;
    //  An eventfd only fails to take a write when its counter is full,
    //  and then it is readable anyway.
    ssize_t rc = write (fd, &one, sizeof one);
    (void) rc;
}

static void
s_fd_drain (int fd)
{
    uint64_t value;
    ssize_t rc = read (fd, &value, sizeof value);
    (void) rc;
}

//  ---------------------------------------------------------------------------
//  Tasks

static void
s_task_destroy (s_task_t **self_p)
{
    if (!*self_p)
        return;
    s_task_t *self = *self_p;
    s_jobmsg_release (&self->job);
    free (self->result.output);
    free (self->result.error);
    free (self->content_type);
    free (self->id);
    free (self);
    *self_p = NULL;
}

//  Take a task out of every engine structure (not the pool lists).
static void
s_task_unlink (dq_worker_t *self, s_task_t *task)
{
    if (task->queue_handle) {
        zlistx_delete (self->queue, task->queue_handle);
        task->queue_handle = NULL;
    }
    if (task->outbox_handle) {
        zlistx_delete (self->outbox, task->outbox_handle);
        task->outbox_handle = NULL;
    }
    if (task->resend_at) {
        void *handle = zlistx_find (self->retry, task);
        if (handle)
            zlistx_delete (self->retry, handle);
        task->resend_at = 0;
    }
    if (zhashx_lookup (self->tasks, task->id) == task)
        zhashx_delete (self->tasks, task->id);
}

static void
s_outbox_add (dq_worker_t *self, s_task_t *task)
{
    if (!task->outbox_handle)
        task->outbox_handle = zlistx_add_end (self->outbox, task);
}

//  Check and tidy a handler's result, then make the task DONE (or drop it
//  if it was abandoned meanwhile).
static void
s_task_finish (dq_worker_t *self, s_task_t *task)
{
    if (task->orphan) {
        s_debug (self, "job=%s - abandoned job returned, result dropped", task->id);
        s_task_destroy (&task);
        return;
    }
    dq_result_t *r = &task->result;
    char reason [160] = "";
    if (task->rc == 0) {
        if (r->output_size > 0 && !r->output)
            snprintf (reason, sizeof reason,
                      "handler bug: output_size %zu without output", r->output_size);
        else
        if (r->output_size > self->max_output)
            snprintf (reason, sizeof reason,
                      "output too large (%zu bytes, limit %zu)",
                      r->output_size, self->max_output);
    }
    if (!reason [0] && r->content_type
    &&  strnlen (r->content_type, S_CONTENT_TYPE_MAX + 1) > S_CONTENT_TYPE_MAX)
        snprintf (reason, sizeof reason,
                  "handler returned a content type over %d bytes", S_CONTENT_TYPE_MAX);
    if (reason [0]) {
        task->rc = -1;
        free (r->error);
        r->error = strdup (reason);
    }
    if (task->rc == 0) {
        free (r->error);
        r->error = NULL;
        if (r->output_size == 0) {
            free (r->output);
            r->output = NULL;
        }
    }
    else {
        free (r->output);
        r->output = NULL;
        r->output_size = 0;
        if (!r->error || !r->error [0]) {
            free (r->error);
            r->error = strdup ("handler failed");
        }
        if (r->error)
            s_text_clean (r->error, DQ_WORKER_ERROR_MAX);
    }
    const char *ct = r->content_type;
    if (!ct)
        ct = task->view.content_type;
    task->content_type = ct? strdup (ct): NULL;
    if (task->content_type)
        s_text_clean (task->content_type, S_CONTENT_TYPE_MAX);
    r->content_type = NULL;
    s_jobmsg_release (&task->job);
    memset (&task->view, 0, sizeof task->view);
    task->state = S_DONE;
    atomic_fetch_add (&self->done, 1);
    s_debug (self, "job=%s attempt=%u output_size=%zu - %s%s%s", task->id,
             task->attempt, r->output_size, task->rc == 0? "succeeded": "failed",
             task->rc == 0? "": ": ", task->rc == 0 || !r->error? "": r->error);
    s_outbox_add (self, task);
}

//  ---------------------------------------------------------------------------
//  Pool

static void *
s_pool_thread (void *arg)
{
    s_thread_t *th = arg;
    dq_worker_t *self = th->owner;
    pthread_mutex_lock (&self->lock);
    while (true) {
        while (!self->work_head && !self->pool_quit)
            pthread_cond_wait (&self->work_cond, &self->lock);
        if (!self->work_head)
            break;
        s_task_t *task = self->work_head;
        self->work_head = task->next;
        if (!self->work_head)
            self->work_tail = NULL;
        task->next = NULL;
        //  Forget an abandon signal meant for this thread's previous task:
        //  the engine signals only while task->thread is set, under lock.
        uint64_t junk;
        ssize_t rc = read (th->efd, &junk, sizeof junk);
        (void) rc;
        task->thread = th;
        pthread_mutex_unlock (&self->lock);

        if (atomic_load (&task->abandoned))
            task->rc = -1;
        else {
            task->view.abandon_fd = th->efd;
            task->rc = task->handler->fn (&task->view, task->handler->arg,
                                          &task->result);
        }

        pthread_mutex_lock (&self->lock);
        task->thread = NULL;
        bool was_empty = self->done_head == NULL;
        if (self->done_tail)
            self->done_tail->next = task;
        else
            self->done_head = task;
        self->done_tail = task;
        if (was_empty)
            s_fd_signal (self->wake_fd);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

//  Start one more pool thread, with the signals a handler must not take
//  blocked (so SIGINT and SIGTERM reach the engine's thread).
static int
s_pool_grow (dq_worker_t *self)
{
    if (self->nthreads >= self->concurrency)
        return -1;
    s_thread_t *th = &self->threads [self->nthreads];
    th->owner = self;
    th->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (th->efd == -1)
        return -1;
    sigset_t block, old;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    sigaddset (&block, SIGHUP);
    sigaddset (&block, SIGPIPE);
    pthread_sigmask (SIG_BLOCK, &block, &old);
    int rc = pthread_create (&th->tid, NULL, s_pool_thread, th);
    pthread_sigmask (SIG_SETMASK, &old, NULL);
    if (rc) {
        close (th->efd);
        th->efd = -1;
        errno = rc;
        return -1;
    }
    self->nthreads++;
    return 0;
}

static void
s_pool_submit (dq_worker_t *self, s_task_t *task)
{
    task->state = S_RUNNING;
    if (self->nbusy + 1 > self->nthreads && s_pool_grow (self)) {
        if (self->nthreads == 0) {
            //  No thread at all: report it rather than hold the job forever.
            task->rc = -1;
            char text [200];
            snprintf (text, sizeof text, "worker could not start a thread: %s",
                      strerror (errno));
            task->result.error = strdup (text);
            s_error (self, "job=%s - %s", task->id, text);
            s_task_finish (self, task);
            return;
        }
        s_warn (self, "could not start pool thread %u: %s (running with %u)",
                self->nthreads + 1, strerror (errno), self->nthreads);
    }
    self->nbusy++;
    pthread_mutex_lock (&self->lock);
    task->next = NULL;
    if (self->work_tail)
        self->work_tail->next = task;
    else
        self->work_head = task;
    self->work_tail = task;
    pthread_cond_signal (&self->work_cond);
    pthread_mutex_unlock (&self->lock);
}

//  Move queued tasks into the pool while it has room.
static void
s_pool_fill (dq_worker_t *self)
{
    while (self->nbusy < self->concurrency && zlistx_size (self->queue)) {
        s_task_t *task = zlistx_first (self->queue);
        zlistx_delete (self->queue, task->queue_handle);
        task->queue_handle = NULL;
        s_pool_submit (self, task);
    }
}

//  Take every task the pool has returned.
static void
s_pool_collect (dq_worker_t *self)
{
    s_fd_drain (self->wake_fd);
    pthread_mutex_lock (&self->lock);
    s_task_t *list = self->done_head;
    self->done_head = self->done_tail = NULL;
    pthread_mutex_unlock (&self->lock);
    while (list) {
        s_task_t *task = list;
        list = task->next;
        task->next = NULL;
        self->nbusy--;
        s_task_finish (self, task);
    }
}

//  Tell a task to stop. A task in the pool learns it from its flag and its
//  thread's eventfd; its result is dropped when it comes back.
static void
s_task_abandon (dq_worker_t *self, s_task_t *task)
{
    atomic_store (&task->abandoned, true);
    pthread_mutex_lock (&self->lock);
    if (task->thread)
        s_fd_signal (task->thread->efd);
    pthread_mutex_unlock (&self->lock);
}

static void
s_pool_stop (dq_worker_t *self)
{
    pthread_mutex_lock (&self->lock);
    self->pool_quit = true;
    pthread_cond_broadcast (&self->work_cond);
    pthread_mutex_unlock (&self->lock);
    for (uint32_t i = 0; i < self->nthreads; i++) {
        pthread_join (self->threads [i].tid, NULL);
        close (self->threads [i].efd);
    }
    self->nthreads = 0;
}

//  ---------------------------------------------------------------------------
//  Sending

static int
s_send (dq_worker_t *self, dq_msg_t *msg)
{
    if (!self->handle) {
        errno = EAGAIN;
        return -1;
    }
    int rc = dq_msg_send (msg, self->handle, NULL, 0, ZMQ_DONTWAIT);
    if (rc == 0)
        self->last_send = s_now ();
    return rc;
}

static void
s_send_ready (dq_worker_t *self)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_READY);
    msg.name = self->name;
    msg.host = self->host;
    msg.pid = (uint32_t) getpid ();
    msg.capacity = self->phase == S_RUN? self->concurrency: 0;
    msg.types = self->types;
    msg.ntypes = self->nhandlers;
    msg.batch = true;           //  we take several jobs per JOB message
    //  Jobs this process still holds, so the broker counts them again.
    size_t n = zhashx_size (self->tasks);
    const char **running = n? malloc (n * sizeof (char *)): NULL;
    uint32_t nrunning = 0;
    if (running)
        for (s_task_t *t = zhashx_first (self->tasks); t; t = zhashx_next (self->tasks))
            if (t->state != S_DONE)
                running [nrunning++] = t->id;
    msg.running = running;
    msg.nrunning = nrunning;
    self->last_ready = s_now ();
    if (s_send (self, &msg) == 0) {
        self->ready_pending = false;
        s_debug (self, "capacity=%u running=%u - READY sent", msg.capacity, nrunning);
    }
    else
    if (errno == EAGAIN)
        self->ready_pending = true;     //  sent when the socket is writable
    else
        s_error (self, "cannot send READY: %s", zmq_strerror (errno));
    free (running);
}

static void
s_send_simple (dq_worker_t *self, dq_cmd_t cmd)
{
    dq_msg_t msg;
    dq_msg_init (&msg, cmd);
    if (s_send (self, &msg) && errno != EAGAIN)
        s_warn (self, "cannot send %s: %s", dq_cmd_str (cmd), zmq_strerror (errno));
}

//  Send queued DONE messages until the socket pushes back. Several results
//  go in one DONE ("results" array): one message per batch, not per job.
#define S_DONE_BATCH_MAX   256
#define S_DONE_BATCH_BYTES (4u << 20)

static void
s_flush_outbox (dq_worker_t *self)
{
    self->out_blocked = false;
    if (!self->welcomed)
        return;
    dq_result_rec_t results [S_DONE_BATCH_MAX];
    s_task_t *tasks [S_DONE_BATCH_MAX];
    while (zlistx_size (self->outbox)) {
        uint32_t n = 0;
        size_t bytes = 0;
        for (s_task_t *task = zlistx_first (self->outbox);
             task && n < S_DONE_BATCH_MAX && (n == 0 || bytes < S_DONE_BATCH_BYTES);
             task = zlistx_next (self->outbox)) {
            results [n] = (dq_result_rec_t) {
                .id = task->id, .attempt = task->attempt, .ok = task->rc == 0,
                .output = task->result.output, .output_size = task->result.output_size,
                .error = task->rc == 0? NULL: task->result.error,
                .content_type = task->content_type };
            bytes += task->result.output_size;
            tasks [n++] = task;
        }
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_DONE);
        msg.rid = tasks [0]->seq;
        if (n == 1) {
            msg.id = results [0].id;
            msg.attempt = results [0].attempt;
            msg.ok = results [0].ok;
            msg.output = results [0].output;
            msg.output_size = results [0].output_size;
            msg.content_type = results [0].content_type;
            msg.error = results [0].error;
        }
        else {
            msg.results = results;
            msg.nresults = n;
        }
        if (s_send (self, &msg)) {
            if (errno == EAGAIN) {
                self->out_blocked = true;
                return;
            }
            //  Cannot be encoded (we check limits first, so this is a bug):
            //  the broker times the job out.
            s_error (self, "job=%s - cannot send DONE (%s), result dropped",
                     tasks [0]->id, zmq_strerror (errno));
            s_task_t *task = tasks [0];
            s_task_unlink (self, task);
            s_task_destroy (&task);
            continue;
        }
        for (uint32_t i = 0; i < n; i++) {
            zlistx_delete (self->outbox, tasks [i]->outbox_handle);
            tasks [i]->outbox_handle = NULL;
        }
    }
}

//  ---------------------------------------------------------------------------
//  Connection

static void
s_disconnect (dq_worker_t *self, int linger_ms)
{
    if (!self->sock)
        return;
    zsock_set_linger (self->sock, linger_ms);
    zsock_destroy (&self->sock);
    self->handle = NULL;
    self->welcomed = false;
    self->ready_pending = false;
    self->out_blocked = false;
}

static int
s_connect (dq_worker_t *self)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock) {
        s_error (self, "cannot create a socket: %s", zmq_strerror (errno));
        return -1;
    }
    zsock_set_linger (sock, 0);
    zsock_set_immediate (sock, 1);
    zsock_set_tcp_keepalive (sock, 1);
    zsock_set_tcp_keepalive_idle (sock, 30);
    zsock_set_tcp_keepalive_intvl (sock, 10);
    zsock_set_tcp_keepalive_cnt (sock, 3);
    zsock_set_reconnect_ivl (sock, S_BACKOFF_MIN_MS);
    zsock_set_reconnect_ivl_max (sock, S_BACKOFF_MAX_MS);
    zsock_set_maxmsgsize (sock, (int) DQ_PROTO_BODY_MAX);
    if (self->curve_cert) {
        zcert_apply (self->curve_cert, sock);
        zsock_set_curve_serverkey (sock, self->curve_server_key);
    }
    if (zsock_connect (sock, "%s", self->endpoint)) {
        s_error (self, "endpoint=%s - cannot connect: %s", self->endpoint,
                 zmq_strerror (errno));
        zsock_destroy (&sock);
        return -1;
    }
    self->sock = sock;
    self->handle = zsock_resolve (sock);
    self->welcomed = false;
    self->registering = true;
    self->heartbeat_ms = S_PREWELCOME_HEARTBEAT_MS;
    self->liveness = S_PREWELCOME_LIVENESS;
    self->last_recv = s_now ();
    s_debug (self, "endpoint=%s - connecting", self->endpoint);
    s_send_ready (self);
    return 0;
}

//  The broker went silent: drop the socket, try again after a backoff.
static void
s_schedule_reconnect (dq_worker_t *self, const char *why)
{
    s_disconnect (self, 0);
    int base = self->backoff_ms;
    int delay = base / 2 + (int) (rand_r (&self->rand_state) % (unsigned) (base / 2 + 1));
    self->reconnect_at = s_now () + delay;
    self->backoff_ms = base * 2 > S_BACKOFF_MAX_MS? S_BACKOFF_MAX_MS: base * 2;
    s_warn (self, "endpoint=%s - %s, reconnecting in %d ms", self->endpoint, why, delay);
}

//  ---------------------------------------------------------------------------
//  Handling broker messages

static s_handler_t *
s_handler_find (dq_worker_t *self, const char *type)
{
    for (uint32_t i = 0; i < self->nhandlers; i++)
        if (strcmp (self->handlers [i].type, type) == 0)
            return &self->handlers [i];
    return NULL;
}

static void
s_on_welcome (dq_worker_t *self, dq_msg_t *msg)
{
    uint32_t hb = msg->heartbeat_ms? msg->heartbeat_ms: S_PREWELCOME_HEARTBEAT_MS;
    uint32_t lv = msg->liveness? msg->liveness: S_PREWELCOME_LIVENESS;
    self->heartbeat_ms = hb < 10? 10: hb > 3600000? 3600000: hb;
    self->liveness = lv > 1000? 1000: lv;
    bool first = !self->welcomed;
    self->welcomed = true;
    self->backoff_ms = S_BACKOFF_MIN_MS;
    if (self->registering) {
        //  Results the broker may not have: all of them again.
        self->registering = false;
        for (s_task_t *t = zhashx_first (self->tasks); t; t = zhashx_next (self->tasks))
            if (t->state == S_DONE && !t->resend_at)
                s_outbox_add (self, t);
    }
    if (first)
        s_info (self, "endpoint=%s broker=%s worker=%s heartbeat_ms=%u liveness=%u"
                " unacked=%zu - registered", self->endpoint,
                msg->broker_id? msg->broker_id: "?", msg->worker_id? msg->worker_id: "?",
                self->heartbeat_ms, self->liveness, zlistx_size (self->outbox));
}

//  One job from a JOB message (a batched JOB carries several).
static void
s_on_task (dq_worker_t *self, s_jobmsg_t *jm, const dq_task_rec_t *t)
{
    if (self->phase == S_ACKWAIT) {
        //  Leaving: BYE makes the broker requeue it.
        s_debug (self, "job=%s - received while leaving, ignored", t->id);
        return;
    }
    s_task_t *existing = zhashx_lookup (self->tasks, t->id);
    if (existing) {
        if (existing->state != S_DONE || existing->rc == 0) {
            //  Still running here, or succeeded and not acknowledged yet:
            //  report under the newer attempt, do not run it twice.
            s_debug (self, "job=%s attempt=%u - already held here", t->id, t->attempt);
            existing->attempt = t->attempt;
            if (existing->state == S_DONE && !existing->resend_at)
                s_outbox_add (self, existing);
            return;
        }
        //  A failed attempt the broker may count already: run it again.
        s_task_unlink (self, existing);
        s_task_destroy (&existing);
    }
    s_task_t *task = calloc (1, sizeof *task);
    char *id = strdup (t->id);
    if (!task || !id) {
        free (task);
        free (id);
        s_error (self, "job=%s - out of memory, job ignored", t->id);
        return;
    }
    task->id = id;
    task->seq = ++self->next_seq;
    task->attempt = t->attempt;
    task->handler = s_handler_find (self, t->type);
    task->job = jm;
    jm->refs++;
    atomic_init (&task->abandoned, false);
    task->view.id = task->id;
    task->view.type = t->type;
    task->view.payload = t->payload;
    task->view.payload_size = t->payload_size;
    task->view.content_type = t->content_type;
    task->view.attempt = t->attempt;
    task->view.timeout_ms = t->timeout_ms;
    task->view.parents = t->parents;
    task->view.nparents = t->nparents;
    task->view.abandoned = &task->abandoned;
    task->view.abandon_fd = -1;
    zhashx_insert (self->tasks, task->id, task);
    s_debug (self, "job=%s type=%s attempt=%u payload_size=%zu - received",
             task->id, t->type, t->attempt, t->payload_size);
    if (!task->handler) {
        char text [200];
        snprintf (text, sizeof text, "no handler for type '%s' on this worker", t->type);
        task->rc = -1;
        task->result.error = strdup (text);
        s_warn (self, "job=%s - %s", task->id, text);
        s_task_finish (self, task);
    }
    else
    if (task->handler->flags & DQ_WORKER_INLINE) {
        task->state = S_RUNNING;
        task->rc = task->handler->fn (&task->view, task->handler->arg, &task->result);
        s_task_finish (self, task);
    }
    else
    if (self->nbusy < self->concurrency)
        s_pool_submit (self, task);
    else {
        task->state = S_QUEUED;
        task->queue_handle = zlistx_add_end (self->queue, task);
        s_debug (self, "job=%s - all %u pool threads busy, queued here",
                 task->id, self->concurrency);
    }
}

static void
s_on_job (dq_worker_t *self, dq_msg_t **msg_p)
{
    s_jobmsg_t *jm = calloc (1, sizeof *jm);
    if (!jm) {
        s_error (self, "out of memory, JOB ignored");
        dq_msg_destroy (msg_p);
        return;
    }
    dq_msg_t *msg = jm->msg = *msg_p;
    *msg_p = NULL;
    jm->refs = 1;               //  ours, while the tasks are created
    if (msg->ntasks) {
        for (uint32_t i = 0; i < msg->ntasks; i++)
            s_on_task (self, jm, &msg->tasks [i]);
    }
    else {
        dq_task_rec_t t = { msg->id, msg->type, msg->payload, msg->payload_size,
                            msg->content_type, msg->attempt, msg->timeout_ms,
                            msg->parents, msg->nparents };
        s_on_task (self, jm, &t);
    }
    s_jobmsg_release (&jm);
}

static void
s_on_ack (dq_worker_t *self, dq_msg_t *msg)
{
    for (uint32_t i = 0; i < msg->nids; i++) {
        s_task_t *task = zhashx_lookup (self->tasks, msg->ids [i]);
        if (task && task->state == S_DONE) {
            s_task_unlink (self, task);
            s_task_destroy (&task);
        }
    }
}

static void
s_on_abandon (dq_worker_t *self, dq_msg_t *msg)
{
    s_task_t *task = zhashx_lookup (self->tasks, msg->id);
    if (!task) {
        s_debug (self, "job=%s - ABANDON for a job not held here", msg->id);
        return;
    }
    s_info (self, "job=%s reason=%s - abandoned", task->id,
            msg->message? msg->message: "");
    s_task_unlink (self, task);
    if (task->state == S_RUNNING) {
        task->orphan = true;            //  the pool returns it later
        s_task_abandon (self, task);
    }
    else
        s_task_destroy (&task);
}

static void
s_on_error (dq_worker_t *self, dq_msg_t *msg)
{
    s_task_t *task = NULL;
    if (msg->rid)
        for (s_task_t *t = zhashx_first (self->tasks); t; t = zhashx_next (self->tasks))
            if (t->seq == msg->rid && t->state == S_DONE) {
                task = t;
                break;
            }
    const char *text = msg->message? msg->message: "";
    if (!task) {
        s_warn (self, "code=%s - broker error: %s", dq_err_str ((int) msg->code), text);
        if (msg->code == DQ_ERR_UNKNOWN_WORKER && !self->registering) {
            self->welcomed = false;
            self->registering = true;
            s_send_ready (self);
        }
        return;
    }
    bool transient = msg->code == DQ_ERR_BUSY || msg->code == DQ_ERR_INTERNAL
                  || msg->code == DQ_ERR_STORE_FULL || msg->code == DQ_ERR_UNAVAILABLE;
    if (transient) {
        int64_t delay = msg->retry_ms > S_ERROR_RETRY_MS? msg->retry_ms: S_ERROR_RETRY_MS;
        s_warn (self, "job=%s code=%s - broker refused the result for now (%s),"
                " resending in %lld ms", task->id, dq_err_str ((int) msg->code), text,
                (long long) delay);
        if (task->outbox_handle) {
            zlistx_delete (self->outbox, task->outbox_handle);
            task->outbox_handle = NULL;
        }
        if (!task->resend_at)
            zlistx_add_end (self->retry, task);
        task->resend_at = s_now () + delay;
    }
    else {
        s_error (self, "job=%s code=%s - broker rejected the result (%s), dropped",
                 task->id, dq_err_str ((int) msg->code), text);
        s_task_unlink (self, task);
        s_task_destroy (&task);
    }
}

static void
s_handle (dq_worker_t *self, dq_msg_t **msg_p)
{
    dq_msg_t *msg = *msg_p;
    switch (msg->cmd) {
        case DQ_CMD_WELCOME:
            s_on_welcome (self, msg);
            break;
        case DQ_CMD_JOB:
            s_on_job (self, msg_p);
            break;
        case DQ_CMD_ACK:
            s_on_ack (self, msg);
            break;
        case DQ_CMD_ABANDON:
            s_on_abandon (self, msg);
            break;
        case DQ_CMD_HEARTBEAT:
            break;
        case DQ_CMD_REREGISTER:
            s_info (self, "endpoint=%s - broker asked to register again", self->endpoint);
            self->welcomed = false;
            self->registering = true;
            s_send_ready (self);
            break;
        case DQ_CMD_ERROR:
            s_on_error (self, msg);
            break;
        default:
            s_warn (self, "command=%s - unexpected from the broker, ignored",
                    dq_cmd_str (msg->cmd));
            break;
    }
    dq_msg_destroy (msg_p);
}

static void
s_recv_batch (dq_worker_t *self)
{
    for (int i = 0; i < S_RECV_BATCH && self->handle; i++) {
        dq_err_t err;
        char reason [200];
        dq_msg_t *msg = dq_msg_recv (self->handle, NULL, NULL, ZMQ_DONTWAIT, &err, reason);
        if (!msg && err == DQ_OK)
            return;                     //  nothing more for now
        self->last_recv = s_now ();
        if (!msg) {
            s_warn (self, "code=%s - malformed message from the broker: %s",
                    dq_err_str (err), reason);
            continue;
        }
        s_debug (self, "command=%s - received", dq_cmd_str (msg->cmd));
        s_handle (self, &msg);
    }
}

//  ---------------------------------------------------------------------------
//  Stopping

//  Jobs still held that are not done (queued or running, orphans aside).
static size_t
s_unfinished (dq_worker_t *self)
{
    size_t n = 0;
    for (s_task_t *t = zhashx_first (self->tasks); t; t = zhashx_next (self->tasks))
        if (t->state != S_DONE)
            n++;
    return n;
}

static size_t
s_unacked (dq_worker_t *self)
{
    return zhashx_size (self->tasks) - s_unfinished (self);
}

static void
s_abandon_unfinished (dq_worker_t *self)
{
    zlistx_t *all = zhashx_values (self->tasks);
    for (s_task_t *t = zlistx_first (all); t; t = zlistx_next (all)) {
        if (t->state == S_DONE)
            continue;
        s_warn (self, "job=%s - grace period over, abandoned", t->id);
        s_task_unlink (self, t);
        if (t->state == S_RUNNING) {
            t->orphan = true;
            s_task_abandon (self, t);
        }
        else
            s_task_destroy (&t);
    }
    zlistx_destroy (&all);
}

//  Advance the stop sequence. Returns true when it is time to send BYE.
static bool
s_stop_step (dq_worker_t *self, int64_t now)
{
    if (self->phase == S_RUN) {
        if (!atomic_load (&self->stop_requested) && !zsys_interrupted)
            return false;
        self->phase = S_DRAIN;
        self->grace_deadline = now + self->grace_ms;
        s_info (self, "running=%zu grace_ms=%d - stopping: no new jobs",
                s_unfinished (self), self->grace_ms);
        if (self->sock)
            s_send_ready (self);        //  capacity 0
    }
    if (self->phase == S_DRAIN) {
        size_t left = s_unfinished (self);
        if (left && now < self->grace_deadline)
            return false;
        if (left)
            s_abandon_unfinished (self);
        self->phase = S_ACKWAIT;
        self->ack_deadline = now + S_ACK_WAIT_MS;
    }
    return s_unacked (self) == 0 || now >= self->ack_deadline;
}

//  ---------------------------------------------------------------------------
//  The loop

static int64_t
s_min (int64_t a, int64_t b)
{
    return a < b? a: b;
}

//  Time-driven work: reconnect, READY retries, heartbeats, liveness, resends.
//  Returns the next moment something is due.
static int64_t
s_timers (dq_worker_t *self, int64_t now)
{
    int64_t next = now + S_POLL_MAX_MS;
    if (!self->sock) {
        if (now >= self->reconnect_at) {
            if (s_connect (self))
                s_schedule_reconnect (self, "connect failed");
        }
        if (!self->sock)
            return s_min (next, self->reconnect_at);
    }
    int64_t silence = (int64_t) self->liveness * self->heartbeat_ms;
    if (now - self->last_recv > silence) {
        s_schedule_reconnect (self, self->welcomed? "broker silent": "no WELCOME");
        return s_min (next, self->reconnect_at);
    }
    next = s_min (next, self->last_recv + silence + 1);
    if (!self->welcomed) {
        if (now - self->last_ready >= self->heartbeat_ms)
            s_send_ready (self);
        next = s_min (next, self->last_ready + self->heartbeat_ms);
    }
    else {
        if (now - self->last_send >= self->heartbeat_ms)
            s_send_simple (self, DQ_CMD_HEARTBEAT);
        next = s_min (next, self->last_send + self->heartbeat_ms);
    }
    if (zlistx_size (self->retry)) {
        s_task_t *t = zlistx_first (self->retry);
        while (t) {
            s_task_t *following = zlistx_next (self->retry);
            if (t->resend_at <= now) {
                zlistx_delete (self->retry, zlistx_find (self->retry, t));
                t->resend_at = 0;
                s_outbox_add (self, t);
            }
            else
                next = s_min (next, t->resend_at);
            t = following;
        }
    }
    if (self->phase == S_DRAIN)
        next = s_min (next, self->grace_deadline);
    if (self->phase == S_ACKWAIT)
        next = s_min (next, self->ack_deadline);
    return next;
}

//  Give abandoned handlers still in the pool a bounded time to return.
static void
s_pool_wait (dq_worker_t *self, int timeout_ms)
{
    int64_t deadline = s_now () + timeout_ms;
    while (self->nbusy) {
        int64_t left = deadline - s_now ();
        if (left <= 0)
            break;
        zmq_pollitem_t item = { NULL, self->wake_fd, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) s_min (left, S_POLL_MAX_MS)) > 0)
            s_pool_collect (self);
    }
}

static void
s_loop (dq_worker_t *self)
{
    while (true) {
        int64_t now = s_now ();
        if (s_stop_step (self, now))
            break;
        int64_t next = s_timers (self, now);
        s_pool_fill (self);
        s_flush_outbox (self);

        zmq_pollitem_t items [3] = {
            { NULL, self->wake_fd, ZMQ_POLLIN, 0 },
            { NULL, self->stop_fd, ZMQ_POLLIN, 0 },
            { self->handle, 0, ZMQ_POLLIN, 0 },
        };
        int nitems = self->handle? 3: 2;
        if (self->handle && (self->ready_pending || (self->out_blocked && self->welcomed)))
            items [2].events |= ZMQ_POLLOUT;
        int64_t timeout = next - s_now ();
        if (timeout < 0)
            timeout = 0;
        int rc = zmq_poll (items, nitems, (long) timeout);
        if (rc == -1) {
            if (errno == EINTR)
                continue;
            s_error (self, "poll failed: %s", zmq_strerror (errno));
            zclock_sleep (S_POLL_MAX_MS);
            continue;
        }
        if (items [1].revents & ZMQ_POLLIN)
            s_fd_drain (self->stop_fd);
        if (nitems == 3 && (items [2].revents & ZMQ_POLLIN))
            s_recv_batch (self);
        if (items [0].revents & ZMQ_POLLIN)
            s_pool_collect (self);
        if (self->ready_pending && self->handle)
            s_send_ready (self);
    }
    if (self->welcomed) {
        s_send_simple (self, DQ_CMD_BYE);
        s_info (self, "endpoint=%s unacked=%zu - BYE sent", self->endpoint,
                s_unacked (self));
    }
    s_disconnect (self, S_LINGER_BYE_MS);
}

//  ---------------------------------------------------------------------------
//  Public API

dq_worker_t *
dq_worker_new (const char *endpoint, uint32_t concurrency)
{
    if (!endpoint || !strstr (endpoint, "://") || strlen (endpoint) > 1024)
        return NULL;
    if (concurrency == 0) {
        long cores = sysconf (_SC_NPROCESSORS_ONLN);
        concurrency = cores > 0? (uint32_t) cores: 1;
        if (concurrency > DQ_WORKER_CONCURRENCY_MAX)
            concurrency = DQ_WORKER_CONCURRENCY_MAX;
    }
    if (concurrency > DQ_WORKER_CONCURRENCY_MAX)
        return NULL;
    dq_worker_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->wake_fd = self->stop_fd = -1;
    self->endpoint = strdup (endpoint);
    self->concurrency = concurrency;
    self->grace_ms = DQ_WORKER_GRACE_DEFAULT;
    self->log_level = DQ_WORKER_LOG_INFO;
    self->max_output = DQ_WORKER_OUTPUT_MAX;
    self->threads = calloc (concurrency, sizeof (s_thread_t));
    self->handlers = calloc (DQ_PROTO_TYPES_MAX, sizeof (s_handler_t));
    self->wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->stop_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    self->tasks = zhashx_new ();
    self->queue = zlistx_new ();
    self->outbox = zlistx_new ();
    self->retry = zlistx_new ();
    self->backoff_ms = S_BACKOFF_MIN_MS;
    self->rand_state = (unsigned int) (zclock_usecs () ^ (int64_t) getpid ());
    atomic_init (&self->stop_requested, false);
    atomic_init (&self->done, 0);
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->work_cond, NULL);
    pthread_cond_init (&self->run_cond, NULL);
    if (!self->endpoint || !self->threads || !self->handlers || self->wake_fd == -1
    ||  self->stop_fd == -1 || !self->tasks || !self->queue || !self->outbox
    ||  !self->retry) {
        dq_worker_destroy (&self);
        return NULL;
    }
    return self;
}

void
dq_worker_destroy (dq_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_worker_t *self = *self_p;
    //  If dq_worker_run is going on in another thread, stop it and wait.
    dq_worker_stop (self);
    pthread_mutex_lock (&self->lock);
    while (self->running)
        pthread_cond_wait (&self->run_cond, &self->lock);
    pthread_mutex_unlock (&self->lock);

    s_pool_stop (self);
    s_pool_collect (self);              //  orphans and anything left
    s_disconnect (self, 0);
    if (self->tasks) {
        zlistx_t *all = zhashx_values (self->tasks);
        for (s_task_t *t = zlistx_first (all); t; t = zlistx_next (all)) {
            s_task_t *task = t;
            s_task_destroy (&task);
        }
        zlistx_destroy (&all);
    }
    zhashx_destroy (&self->tasks);
    zlistx_destroy (&self->queue);
    zlistx_destroy (&self->outbox);
    zlistx_destroy (&self->retry);
    for (uint32_t i = 0; self->handlers && i < self->nhandlers; i++) {
        s_handler_t *h = &self->handlers [i];
        if (h->arg_free)
            h->arg_free (h->arg);
        free (h->type);
    }
    free (self->handlers);
    free (self->types);
    free (self->threads);
    if (self->wake_fd != -1)
        close (self->wake_fd);
    if (self->stop_fd != -1)
        close (self->stop_fd);
    zcert_destroy (&self->curve_cert);
    free (self->curve_server_key);
    free (self->endpoint);
    free (self->name);
    pthread_mutex_destroy (&self->lock);
    pthread_cond_destroy (&self->work_cond);
    pthread_cond_destroy (&self->run_cond);
    free (self);
    *self_p = NULL;
}

int
dq_worker_register_full (dq_worker_t *self, const char *type,
                         dq_handler_fn *fn, void *arg, int flags,
                         void (*arg_free) (void *arg))
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    bool started = self->ran;
    pthread_mutex_unlock (&self->lock);
    char *copy = NULL;
    if (started || !fn || !s_type_ok (type) || self->nhandlers >= DQ_PROTO_TYPES_MAX
    ||  (flags & ~DQ_WORKER_INLINE) || s_handler_find (self, type)
    ||  !(copy = strdup (type))) {
        if (arg_free)
            arg_free (arg);
        return -1;
    }
    s_handler_t *h = &self->handlers [self->nhandlers++];
    h->type = copy;
    h->fn = fn;
    h->arg = arg;
    h->flags = flags;
    h->arg_free = arg_free;
    return 0;
}

int
dq_worker_register (dq_worker_t *self, const char *type,
                    dq_handler_fn *fn, void *arg, int flags)
{
    return dq_worker_register_full (self, type, fn, arg, flags, NULL);
}

void
dq_worker_set_name (dq_worker_t *self, const char *name)
{
    assert (self);
    free (self->name);
    self->name = name? strdup (name): NULL;
    if (self->name)
        s_text_clean (self->name, S_NAME_MAX);
}

void
dq_worker_set_grace (dq_worker_t *self, int grace_ms)
{
    assert (self);
    self->grace_ms = grace_ms < 0? 0: grace_ms;
}

void
dq_worker_set_verbose (dq_worker_t *self, bool verbose)
{
    assert (self);
    self->log_level = verbose? DQ_WORKER_LOG_DEBUG: DQ_WORKER_LOG_INFO;
}

void
dq_worker_set_log_level (dq_worker_t *self, int level)
{
    assert (self);
    self->log_level = level < DQ_WORKER_LOG_ERROR? DQ_WORKER_LOG_ERROR:
                      level > DQ_WORKER_LOG_DEBUG? DQ_WORKER_LOG_DEBUG: level;
}

void
dq_worker_set_max_output (dq_worker_t *self, size_t max_output)
{
    assert (self);
    self->max_output = max_output > DQ_WORKER_OUTPUT_MAX? DQ_WORKER_OUTPUT_MAX: max_output;
}

int
dq_worker_set_curve (dq_worker_t *self, const char *secret_cert,
                     const char *broker_public_cert)
{
    assert (self);
    if (!secret_cert || !broker_public_cert || !zsys_has_curve ())
        return -1;
    zcert_t *mine = zcert_load (secret_cert);
    zcert_t *broker = zcert_load (broker_public_cert);
    int rc = -1;
    if (mine && broker) {
        //  A certificate without its secret half cannot authenticate us.
        static const char zero_key [41] = "0000000000000000000000000000000000000000";
        const char *secret = zcert_secret_txt (mine);
        if (secret && strcmp (secret, zero_key) != 0) {
            zcert_destroy (&self->curve_cert);
            free (self->curve_server_key);
            self->curve_server_key = strdup (zcert_public_txt (broker));
            self->curve_cert = mine;
            mine = NULL;
            rc = self->curve_server_key? 0: -1;
        }
    }
    zcert_destroy (&mine);
    zcert_destroy (&broker);
    return rc;
}

int
dq_worker_run (dq_worker_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->lock);
    bool again = self->ran;
    self->ran = true;
    if (!again)
        self->running = true;
    pthread_mutex_unlock (&self->lock);
    if (again) {
        s_error (self, "dq_worker_run called twice");
        return -1;
    }
    int rc = -1;
    if (self->nhandlers == 0) {
        s_error (self, "no handlers registered: nothing to run");
        goto done;
    }
    self->types = calloc (self->nhandlers, sizeof (char *));
    if (!self->types)
        goto done;
    for (uint32_t i = 0; i < self->nhandlers; i++)
        self->types [i] = self->handlers [i].type;
    if (gethostname (self->host, sizeof self->host - 1))
        snprintf (self->host, sizeof self->host, "unknown");
    self->host [sizeof self->host - 1] = 0;
    s_text_clean (self->host, S_NAME_MAX);
    if (!self->name)
        self->name = strdup (self->host);
    if (!self->name)
        goto done;
    if (s_connect (self))
        goto done;
    s_info (self, "endpoint=%s name=%s concurrency=%u types=%u - worker started",
            self->endpoint, self->name, self->concurrency, self->nhandlers);
    s_loop (self);
    s_pool_wait (self, S_ABANDON_WAIT_MS);
    if (self->nbusy)
        s_warn (self, "handlers=%u - abandoned handlers still running", self->nbusy);
    else
        s_pool_stop (self);
    s_info (self, "done=%llu - worker stopped",
            (unsigned long long) atomic_load (&self->done));
    rc = 0;
done:
    pthread_mutex_lock (&self->lock);
    self->running = false;
    pthread_cond_broadcast (&self->run_cond);
    pthread_mutex_unlock (&self->lock);
    return rc;
}

void
dq_worker_stop (dq_worker_t *self)
{
    //  Async-signal-safe: a lock-free atomic store and write(2).
    if (!self)
        return;
    atomic_store (&self->stop_requested, true);
    if (self->stop_fd != -1)
        s_fd_signal (self->stop_fd);
}

uint64_t
dq_worker_done (dq_worker_t *self)
{
    assert (self);
    return atomic_load (&self->done);
}
