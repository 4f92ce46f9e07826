/*  test_worker.c - the worker engine (dq_worker) against a fake broker.

    The fake broker is a ROUTER on a free loopback port, driven by the test
    with dq_msg_send / dq_msg_recv; the engine runs dq_worker_run in a thread.
    Every wait has a generous deadline and no test depends on speed: where
    order matters, a later job's DONE is the proof that an earlier one was
    not (re)sent.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <czmq.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_worker.h"

#define S_DEADLINE_MS 20000
#define S_HEARTBEAT_MS 200      //  the fake broker's, while it waits

//  What test handlers share with the test.
typedef struct {
    atomic_int active;           //  pool handlers running now
    atomic_int max_active;
    atomic_int started;          //  "block" handlers started
    atomic_int abandoned_seen;   //  "block" handlers that saw the abandon
    atomic_int tokens;           //  each lets one "block" handler finish
} s_shared_t;

typedef struct {
    zsock_t *router;
    char endpoint [128];
    dq_worker_t *worker;
    pthread_t thread;
    bool running;
    int run_rc;
    s_shared_t shared;
    uint8_t rid [256];           //  routing id of the worker's last message
    size_t rid_size;
    int64_t last_send;           //  when the fake broker last sent something
    bool silent;                 //  fake broker sends no heartbeats
    zlistx_t *split;             //  single DONEs split from a batched one
} s_fix_t;

static int64_t
s_now (void)
{
    return zclock_mono ();
}

//  ---------------------------------------------------------------------------
//  Handlers

static int
s_echo (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    if (task->payload_size) {
        result->output = malloc (task->payload_size);
        memcpy (result->output, task->payload, task->payload_size);
        result->output_size = task->payload_size;
    }
    return 0;
}

//  Blocks until it takes a token (then echoes) or is abandoned.
static int
s_block (const dq_task_t *task, void *arg, dq_result_t *result)
{
    s_shared_t *sh = arg;
    int now = atomic_fetch_add (&sh->active, 1) + 1;
    int max = atomic_load (&sh->max_active);
    while (now > max && !atomic_compare_exchange_weak (&sh->max_active, &max, now))
        ;
    atomic_fetch_add (&sh->started, 1);
    int rc = 0;
    while (true) {
        int t = atomic_load (&sh->tokens);
        if (t > 0 && atomic_compare_exchange_weak (&sh->tokens, &t, t - 1)) {
            rc = s_echo (task, NULL, result);
            break;
        }
        if (atomic_load (task->abandoned)) {
            struct pollfd pfd = { task->abandon_fd, POLLIN, 0 };
            //  The flag and the fd go together.
            assert_true (task->abandon_fd >= 0 && poll (&pfd, 1, 0) == 1);
            atomic_fetch_add (&sh->abandoned_seen, 1);
            result->error = strdup ("abandoned");
            rc = -1;
            break;
        }
        struct pollfd pfd = { task->abandon_fd, POLLIN, 0 };
        poll (&pfd, 1, 5);
    }
    atomic_fetch_sub (&sh->active, 1);
    return rc;
}

static int
s_big (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) task;
    (void) arg;
    result->output_size = DQ_WORKER_OUTPUT_MAX + (size_t) 1;
    result->output = calloc (1, result->output_size);
    return 0;
}

//  Exactly the largest output allowed.
static int
s_limit (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) task;
    (void) arg;
    result->output_size = DQ_WORKER_OUTPUT_MAX;
    result->output = malloc (result->output_size);
    memset (result->output, 'L', result->output_size);
    return 0;
}

static int
s_longerr (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) task;
    (void) arg;
    result->error = malloc (10001);
    memset (result->error, 'e', 10000);
    result->error [10000] = 0;
    return -1;
}

static int
s_badutf8 (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) task;
    (void) arg;
    result->error = strdup ("\xff\xfe bad \xc3\xa9");
    return -1;
}

static int
s_silent_fail (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) task;
    (void) arg;
    (void) result;
    return -1;
}

static int
s_typed (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    result->content_type = "application/x-test";
    return s_echo (task, NULL, result);
}

//  ---------------------------------------------------------------------------
//  Fixture and fake broker

static int
setup (void **state)
{
    s_fix_t *f = calloc (1, sizeof *f);
    assert_non_null (f);
    f->router = zsock_new (ZMQ_ROUTER);
    assert_non_null (f->router);
    zsock_set_linger (f->router, 0);
    //  As the broker's default --max-message: a bigger frame drops the peer.
    zsock_set_maxmsgsize (f->router, 64 << 20);
    assert_true (zsock_bind (f->router, "tcp://127.0.0.1:*") > 0);
    char *last = zsock_last_endpoint (f->router);
    assert_non_null (last);
    snprintf (f->endpoint, sizeof f->endpoint, "%s", last);
    free (last);
    *state = f;
    return 0;
}

static int
teardown (void **state)
{
    s_fix_t *f = *state;
    atomic_store (&f->shared.tokens, 1000000);
    if (f->running) {
        dq_worker_stop (f->worker);
        pthread_join (f->thread, NULL);
    }
    dq_worker_destroy (&f->worker);
    zsock_destroy (&f->router);
    if (f->split) {
        dq_msg_t *m;
        while ((m = zlistx_first (f->split))) {
            zlistx_delete (f->split, NULL);
            dq_msg_destroy (&m);
        }
        zlistx_destroy (&f->split);
    }
    free (f);
    return 0;
}

static void *
s_run_thread (void *arg)
{
    s_fix_t *f = arg;
    f->run_rc = dq_worker_run (f->worker);
    return NULL;
}

static void
s_start (s_fix_t *f, uint32_t capacity, int grace_ms)
{
    f->worker = dq_worker_new (f->endpoint, capacity);
    assert_non_null (f->worker);
    dq_worker_set_name (f->worker, "test-worker");
    dq_worker_set_grace (f->worker, grace_ms);
    dq_worker_set_log_level (f->worker, getenv ("DQ_TEST_VERBOSE")?
                             DQ_WORKER_LOG_DEBUG: DQ_WORKER_LOG_ERROR);
    assert_int_equal (dq_worker_register (f->worker, "echo", s_echo, NULL,
                                          DQ_WORKER_INLINE), 0);
    assert_int_equal (dq_worker_register (f->worker, "block", s_block, &f->shared, 0), 0);
    assert_int_equal (dq_worker_register (f->worker, "big", s_big, NULL, 0), 0);
    assert_int_equal (dq_worker_register (f->worker, "longerr", s_longerr, NULL, 0), 0);
    assert_int_equal (dq_worker_register (f->worker, "badutf8", s_badutf8, NULL,
                                          DQ_WORKER_INLINE), 0);
    assert_int_equal (dq_worker_register (f->worker, "silent", s_silent_fail, NULL, 0), 0);
    assert_int_equal (dq_worker_register (f->worker, "typed", s_typed, NULL, 0), 0);
    assert_int_equal (dq_worker_register (f->worker, "limit", s_limit, NULL, 0), 0);
    assert_int_equal (pthread_create (&f->thread, NULL, s_run_thread, f), 0);
    f->running = true;
}

//  Wait for the worker to return from dq_worker_run.
static void
s_join (s_fix_t *f)
{
    pthread_join (f->thread, NULL);
    f->running = false;
}

//  Like a real broker, heartbeat when idle (unless told to be silent), so
//  no test depends on how fast the worker gets through a job.
static void
s_pump (s_fix_t *f)
{
    if (f->silent || !f->rid_size || s_now () - f->last_send < S_HEARTBEAT_MS)
        return;
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_HEARTBEAT);
    dq_msg_send (&msg, zsock_resolve (f->router), f->rid, f->rid_size, ZMQ_DONTWAIT);
    f->last_send = s_now ();
}

//  A batched DONE ("results") as one single DONE message per result, so the
//  tests see every result the same way whatever the worker batched.
static void
s_split_done (s_fix_t *f, dq_msg_t **msg_p)
{
    dq_msg_t *batch = *msg_p;
    if (!f->split)
        f->split = zlistx_new ();
    for (uint32_t i = 0; i < batch->nresults; i++) {
        const dq_result_rec_t *r = &batch->results [i];
        dq_msg_t one;
        dq_msg_init (&one, DQ_CMD_DONE);
        one.rid = batch->rid;
        one.id = r->id;
        one.attempt = r->attempt;
        one.ok = r->ok;
        one.output = r->output;
        one.output_size = r->output_size;
        one.error = r->error;
        one.content_type = r->content_type;
        void *body;
        size_t size;
        assert_int_equal (dq_msg_encode (&one, &body, &size), 0);
        dq_err_t err;
        dq_msg_t *copy = dq_msg_decode (DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE,
                                        "DONE", 4, body, size, &err, NULL);
        free (body);
        assert_non_null (copy);
        zlistx_add_end (f->split, copy);
    }
    dq_msg_destroy (msg_p);
}

//  Next message from the worker, or NULL after timeout_ms.
static dq_msg_t *
s_recv (s_fix_t *f, int timeout_ms)
{
    if (f->split && zlistx_size (f->split)) {
        dq_msg_t *msg = zlistx_first (f->split);
        zlistx_delete (f->split, NULL);
        return msg;
    }
    int64_t deadline = s_now () + timeout_ms;
    while (true) {
        s_pump (f);
        int64_t left = deadline - s_now ();
        if (left < 0)
            return NULL;
        zmq_pollitem_t item = { zsock_resolve (f->router), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) (left < S_HEARTBEAT_MS? left: S_HEARTBEAT_MS)) <= 0)
            continue;
        dq_err_t err;
        char reason [200];
        uint8_t rid [256];
        size_t rid_size = 0;
        dq_msg_t *msg = dq_msg_recv (zsock_resolve (f->router), rid, &rid_size,
                                     ZMQ_DONTWAIT, &err, reason);
        if (!msg) {
            if (err != DQ_OK)
                fail_msg ("worker sent a malformed message: %s", reason);
            continue;
        }
        memcpy (f->rid, rid, rid_size);
        f->rid_size = rid_size;
        if (msg->cmd == DQ_CMD_DONE && msg->nresults) {
            s_split_done (f, &msg);
            msg = zlistx_first (f->split);
            zlistx_delete (f->split, NULL);
        }
        return msg;
    }
}

//  Next message that is not a HEARTBEAT; it must be cmd.
static dq_msg_t *
s_expect (s_fix_t *f, dq_cmd_t cmd)
{
    int64_t deadline = s_now () + S_DEADLINE_MS;
    while (s_now () < deadline) {
        dq_msg_t *msg = s_recv (f, (int) (deadline - s_now ()));
        if (!msg)
            break;
        if (msg->cmd == DQ_CMD_HEARTBEAT && cmd != DQ_CMD_HEARTBEAT) {
            dq_msg_destroy (&msg);
            continue;
        }
        if (msg->cmd != cmd)
            fail_msg ("expected %s, got %s (id %s)", dq_cmd_str (cmd),
                      dq_cmd_str (msg->cmd), msg->id? msg->id: "-");
        return msg;
    }
    fail_msg ("no %s from the worker in time", dq_cmd_str (cmd));
    return NULL;
}

static void
s_send (s_fix_t *f, dq_msg_t *msg)
{
    assert_int_equal (dq_msg_send (msg, zsock_resolve (f->router), f->rid,
                                   f->rid_size, 0), 0);
    f->last_send = s_now ();
}

static void
s_send_cmd (s_fix_t *f, dq_cmd_t cmd)
{
    dq_msg_t msg;
    dq_msg_init (&msg, cmd);
    s_send (f, &msg);
}

static void
s_welcome (s_fix_t *f, uint32_t heartbeat_ms, uint32_t liveness)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_WELCOME);
    msg.heartbeat_ms = heartbeat_ms;
    msg.liveness = liveness;
    msg.broker_id = "b7f3a";
    msg.worker_id = "w1";
    s_send (f, &msg);
}

static void
s_job (s_fix_t *f, const char *id, const char *type, const char *payload,
       uint32_t attempt)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_JOB);
    msg.id = id;
    msg.type = type;
    msg.payload = payload;
    msg.payload_size = payload? strlen (payload): 0;
    msg.attempt = attempt;
    s_send (f, &msg);
}

static void
s_ack (s_fix_t *f, const char *id)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_ACK);
    msg.ids = &id;
    msg.nids = 1;
    s_send (f, &msg);
}

static void
s_abandon (s_fix_t *f, const char *id)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_ABANDON);
    msg.id = id;
    msg.message = "cancelled";
    s_send (f, &msg);
}

//  Expect a DONE for id; check ok and, if not NULL, output. Returns it.
static dq_msg_t *
s_expect_done (s_fix_t *f, const char *id, bool ok, const char *output)
{
    dq_msg_t *msg = s_expect (f, DQ_CMD_DONE);
    assert_string_equal (msg->id, id);
    assert_int_equal (msg->ok, ok);
    if (output) {
        assert_int_equal (msg->output_size, strlen (output));
        assert_memory_equal (msg->output, output, strlen (output));
    }
    return msg;
}

static void
s_done_and_ack (s_fix_t *f, const char *id, const char *output)
{
    dq_msg_t *msg = s_expect_done (f, id, true, output);
    dq_msg_destroy (&msg);
    s_ack (f, id);
}

static void
s_wait_int (s_fix_t *f, atomic_int *value, int want)
{
    int64_t deadline = s_now () + S_DEADLINE_MS;
    while (atomic_load (value) < want && s_now () < deadline) {
        s_pump (f);
        zclock_sleep (5);
    }
    assert_int_equal (atomic_load (value), want);
}

//  Start, take READY, answer WELCOME.
static void
s_start_welcomed (s_fix_t *f, uint32_t capacity, int grace_ms)
{
    s_start (f, capacity, grace_ms);
    dq_msg_t *ready = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&ready);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
}

//  Stop the worker politely: READY capacity 0, then BYE.
static void
s_stop (s_fix_t *f)
{
    dq_worker_stop (f->worker);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_int_equal (msg->capacity, 0);
    dq_msg_destroy (&msg);
    msg = s_expect (f, DQ_CMD_BYE);
    dq_msg_destroy (&msg);
    s_join (f);
    assert_int_equal (f->run_rc, 0);
}

//  ---------------------------------------------------------------------------
//  Tests

static int s_freed;

static void
s_count_free (void *arg)
{
    (void) arg;
    s_freed++;
}

static void
test_worker_api_validation (void **state)
{
    s_fix_t *f = *state;
    assert_null (dq_worker_new (NULL, 1));
    assert_null (dq_worker_new ("localhost:5556", 1));
    assert_null (dq_worker_new (f->endpoint, DQ_WORKER_CONCURRENCY_MAX + 1));
    dq_worker_t *w = dq_worker_new (f->endpoint, 0);       //  0: cores
    assert_non_null (w);
    dq_worker_set_log_level (w, DQ_WORKER_LOG_ERROR - 1);    //  clamped, silent
    //  Nothing registered: run refuses, and only once anyway.
    assert_int_equal (dq_worker_run (w), -1);
    assert_int_equal (dq_worker_run (w), -1);
    dq_worker_destroy (&w);
    assert_null (w);
    dq_worker_destroy (&w);

    w = dq_worker_new (f->endpoint, 2);
    dq_worker_set_log_level (w, -1);
    char long_type [DQ_PROTO_TYPE_MAX + 2];
    memset (long_type, 'a', sizeof long_type - 1);
    long_type [sizeof long_type - 1] = 0;
    assert_int_equal (dq_worker_register (w, "", s_echo, NULL, 0), -1);
    assert_int_equal (dq_worker_register (w, NULL, s_echo, NULL, 0), -1);
    assert_int_equal (dq_worker_register (w, "a b", s_echo, NULL, 0), -1);
    assert_int_equal (dq_worker_register (w, long_type, s_echo, NULL, 0), -1);
    long_type [DQ_PROTO_TYPE_MAX] = 0;
    assert_int_equal (dq_worker_register (w, long_type, s_echo, NULL, 0), 0);
    assert_int_equal (dq_worker_register (w, "x", NULL, NULL, 0), -1);
    assert_int_equal (dq_worker_register (w, "x", s_echo, NULL, 0x100), -1);
    assert_int_equal (dq_worker_register (w, "img.thumb:v2-x_y", s_echo, NULL, 0), 0);
    assert_int_equal (dq_worker_register (w, "img.thumb:v2-x_y", s_echo, NULL, 0), -1);
    //  The worker owns arg: freed on failure at once, else on destroy.
    s_freed = 0;
    assert_int_equal (dq_worker_register_full (w, "a b", s_echo, NULL, 0, s_count_free), -1);
    assert_int_equal (s_freed, 1);
    assert_int_equal (dq_worker_register_full (w, "owned", s_echo, NULL, 0, s_count_free), 0);
    assert_int_equal (s_freed, 1);
    assert_int_equal (dq_worker_set_curve (w, "/nonexistent", "/nonexistent"), -1);
    dq_worker_destroy (&w);
    assert_int_equal (s_freed, 2);

    //  Type count limit.
    w = dq_worker_new (f->endpoint, 1);
    dq_worker_set_log_level (w, -1);
    char name [32];
    for (int i = 0; i < DQ_PROTO_TYPES_MAX; i++) {
        snprintf (name, sizeof name, "t%d", i);
        assert_int_equal (dq_worker_register (w, name, s_echo, NULL, 0), 0);
    }
    assert_int_equal (dq_worker_register (w, "one-more", s_echo, NULL, 0), -1);
    dq_worker_destroy (&w);

    //  A stop before run makes run return at once.
    w = dq_worker_new (f->endpoint, 1);
    dq_worker_set_log_level (w, -1);
    assert_int_equal (dq_worker_register (w, "echo", s_echo, NULL, 0), 0);
    dq_worker_stop (w);
    assert_int_equal (dq_worker_run (w), 0);
    dq_worker_destroy (&w);
}

static void
test_worker_ready_job_done_ack (void **state)
{
    s_fix_t *f = *state;
    s_start (f, 3, 30000);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_string_equal (msg->name, "test-worker");
    assert_non_null (msg->host);
    assert_true (strlen (msg->host) > 0);
    assert_int_equal (msg->pid, (uint32_t) getpid ());
    assert_int_equal (msg->capacity, 3);
    assert_int_equal (msg->ntypes, 8);
    assert_string_equal (msg->types [0], "echo");
    assert_string_equal (msg->types [1], "block");
    assert_int_equal (msg->nrunning, 0);
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test

    //  Inline handler; the job's content type comes back with the output.
    dq_msg_t job;
    dq_msg_init (&job, DQ_CMD_JOB);
    job.id = "j-1";
    job.type = "echo";
    job.payload = "hello\0world";
    job.payload_size = 11;
    job.content_type = "text/plain";
    job.attempt = 2;
    s_send (f, &job);
    msg = s_expect (f, DQ_CMD_DONE);
    assert_string_equal (msg->id, "j-1");
    assert_true (msg->ok);
    assert_int_equal (msg->attempt, 2);
    assert_int_equal (msg->output_size, 11);
    assert_memory_equal (msg->output, "hello\0world", 11);
    assert_string_equal (msg->content_type, "text/plain");
    assert_null (msg->error);
    assert_true (msg->rid != 0);
    dq_msg_destroy (&msg);
    s_ack (f, "j-1");

    //  Pool handler; its own content type wins.
    s_job (f, "j-2", "typed", "abc", 1);
    msg = s_expect_done (f, "j-2", true, "abc");
    assert_string_equal (msg->content_type, "application/x-test");
    dq_msg_destroy (&msg);
    s_ack (f, "j-2");

    //  Empty payload, empty output.
    s_job (f, "j-3", "echo", NULL, 1);
    msg = s_expect_done (f, "j-3", true, "");
    assert_null (msg->content_type);
    dq_msg_destroy (&msg);
    s_ack (f, "j-3");
    assert_int_equal (dq_worker_done (f->worker), 3);
    s_stop (f);
}

static void
test_worker_capacity_never_exceeded (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 2, 30000);
    //  The broker over-sends: 6 jobs for 2 slots. Extra ones wait here.
    char ids [6][16];
    for (int i = 0; i < 6; i++) {
        snprintf (ids [i], sizeof ids [i], "c-%d", i);
        s_job (f, ids [i], "block", ids [i], 1);
    }
    s_wait_int (f, &f->shared.started, 2);
    //  READY on re-registration lists every job held, queued ones too.
    s_send_cmd (f, DQ_CMD_REREGISTER);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_int_equal (msg->nrunning, 6);
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
    assert_int_equal (atomic_load (&f->shared.started), 2);
    atomic_store (&f->shared.tokens, 6);
    bool seen [6] = { false };
    for (int i = 0; i < 6; i++) {
        msg = s_expect (f, DQ_CMD_DONE);
        assert_true (msg->ok);
        int k = atoi (msg->id + 2);
        assert_true (k >= 0 && k < 6 && !seen [k]);
        seen [k] = true;
        assert_int_equal (msg->output_size, strlen (ids [k]));
        assert_memory_equal (msg->output, ids [k], strlen (ids [k]));
        s_ack (f, msg->id);
        dq_msg_destroy (&msg);
    }
    assert_int_equal (atomic_load (&f->shared.max_active), 2);
    assert_int_equal (atomic_load (&f->shared.started), 6);
    s_stop (f);
}

static void
test_worker_abandon (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 1, 30000);
    //  A running job: its handler sees the flag and the fd.
    s_job (f, "a-1", "block", "x", 1);
    s_wait_int (f, &f->shared.started, 1);
    s_abandon (f, "a-1");
    s_wait_int (f, &f->shared.abandoned_seen, 1);
    //  The pool thread frees up and takes the next job; no DONE for a-1
    //  comes before b-1's.
    s_job (f, "b-1", "block", "y", 1);
    s_wait_int (f, &f->shared.started, 2);
    atomic_store (&f->shared.tokens, 1);
    s_done_and_ack (f, "b-1", "y");

    //  A job queued here (all threads busy) and abandoned never runs.
    s_job (f, "a-2", "block", "r", 1);
    s_wait_int (f, &f->shared.started, 3);
    s_job (f, "a-3", "block", "q", 1);
    s_abandon (f, "a-3");
    s_abandon (f, "unknown-id");            //  ignored
    //  e-1's DONE proves the ABANDON was handled before a-2 may finish.
    s_job (f, "e-1", "echo", "z", 1);
    s_done_and_ack (f, "e-1", "z");
    atomic_store (&f->shared.tokens, 1);
    s_done_and_ack (f, "a-2", "r");
    s_job (f, "e-0", "echo", "sync", 1);
    s_done_and_ack (f, "e-0", "sync");
    assert_int_equal (atomic_load (&f->shared.started), 3);

    //  ABANDON of a result not yet acknowledged discards it: it is not sent
    //  again after a re-registration.
    s_job (f, "a-4", "echo", "w", 1);
    dq_msg_t *msg = s_expect_done (f, "a-4", true, "w");
    dq_msg_destroy (&msg);
    s_abandon (f, "a-4");
    s_send_cmd (f, DQ_CMD_REREGISTER);
    msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
    s_job (f, "e-2", "echo", "v", 1);
    s_done_and_ack (f, "e-2", "v");
    s_stop (f);
}

static void
test_worker_reregister (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 2, 30000);
    s_job (f, "r-1", "block", "one", 1);
    s_wait_int (f, &f->shared.started, 1);
    //  The broker forgot us (restart): READY again, with the running job.
    s_send_cmd (f, DQ_CMD_REREGISTER);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_int_equal (msg->capacity, 2);
    assert_int_equal (msg->nrunning, 1);
    assert_string_equal (msg->running [0], "r-1");
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
    atomic_store (&f->shared.tokens, 1);
    s_done_and_ack (f, "r-1", "one");
    s_stop (f);
}

static void
test_worker_resend_after_reconnect (void **state)
{
    s_fix_t *f = *state;
    s_start (f, 2, 30000);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    uint8_t first_rid [256];
    size_t first_size = f->rid_size;
    memcpy (first_rid, f->rid, f->rid_size);
    s_welcome (f, 60000, 3);
    s_job (f, "x-1", "echo", "result", 1);
    msg = s_expect_done (f, "x-1", true, "result");
    uint64_t rid = msg->rid;
    dq_msg_destroy (&msg);
    //  Short heartbeats now: a silent broker is noticed after 300 ms. No
    //  ACK, and silence: the worker reconnects (new routing id) and
    //  registers again.
    f->silent = true;
    s_welcome (f, 100, 3);
    msg = s_expect (f, DQ_CMD_READY);
    assert_false (f->rid_size == first_size
                  && memcmp (f->rid, first_rid, first_size) == 0);
    assert_int_equal (msg->nrunning, 0);
    dq_msg_destroy (&msg);
    f->silent = false;
    s_welcome (f, 60000, 3);
    //  The unacknowledged result comes again, unchanged.
    msg = s_expect_done (f, "x-1", true, "result");
    assert_int_equal (msg->rid, rid);
    dq_msg_destroy (&msg);
    s_ack (f, "x-1");
    //  Acknowledged now: not sent after the next registration. y-1's DONE
    //  coming first proves it.
    s_send_cmd (f, DQ_CMD_REREGISTER);
    msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    s_welcome (f, 60000, 3);
    s_job (f, "y-1", "echo", "next", 1);
    s_done_and_ack (f, "y-1", "next");
    s_stop (f);
}

static void
test_worker_ready_repeated_until_welcome (void **state)
{
    s_fix_t *f = *state;
    s_start (f, 1, 30000);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    msg = s_expect (f, DQ_CMD_READY);       //  no WELCOME yet: again
    dq_msg_destroy (&msg);
    s_welcome (f, 100, 1000);
    //  Idle and welcomed: heartbeats.
    msg = s_expect (f, DQ_CMD_HEARTBEAT);
    dq_msg_destroy (&msg);
    msg = s_expect (f, DQ_CMD_HEARTBEAT);
    dq_msg_destroy (&msg);
    s_stop (f);
}

static void
test_worker_stop_finishes_running (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 1, 30000);
    s_job (f, "s-1", "block", "done", 1);
    s_wait_int (f, &f->shared.started, 1);
    dq_worker_stop (f->worker);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_int_equal (msg->capacity, 0);
    assert_int_equal (msg->nrunning, 1);
    dq_msg_destroy (&msg);
    atomic_store (&f->shared.tokens, 1);
    s_done_and_ack (f, "s-1", "done");
    msg = s_expect (f, DQ_CMD_BYE);
    dq_msg_destroy (&msg);
    s_join (f);
    assert_int_equal (f->run_rc, 0);
    assert_int_equal (atomic_load (&f->shared.abandoned_seen), 0);
}

static void
test_worker_stop_grace_abandons (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 1, 200);
    s_job (f, "g-1", "block", "never", 1);
    s_wait_int (f, &f->shared.started, 1);
    dq_worker_stop (f->worker);
    dq_msg_t *msg = s_expect (f, DQ_CMD_READY);
    assert_int_equal (msg->capacity, 0);
    dq_msg_destroy (&msg);
    //  Grace over: abandoned, no DONE, BYE.
    msg = s_expect (f, DQ_CMD_BYE);
    dq_msg_destroy (&msg);
    s_join (f);
    assert_int_equal (f->run_rc, 0);
    assert_int_equal (atomic_load (&f->shared.abandoned_seen), 1);
}

static void
test_worker_bad_results (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 2, 30000);
    s_job (f, "b-1", "big", NULL, 1);
    dq_msg_t *msg = s_expect_done (f, "b-1", false, NULL);
    assert_int_equal (msg->output_size, 0);
    assert_non_null (strstr (msg->error, "output too large"));
    dq_msg_destroy (&msg);
    s_ack (f, "b-1");

    //  Exactly the limit passes, and its DONE fits a 64 MiB message.
    s_job (f, "b-1b", "limit", NULL, 1);
    msg = s_expect_done (f, "b-1b", true, NULL);
    assert_int_equal (msg->output_size, DQ_WORKER_OUTPUT_MAX);
    dq_msg_destroy (&msg);
    s_ack (f, "b-1b");

    s_job (f, "b-2", "longerr", NULL, 1);
    msg = s_expect_done (f, "b-2", false, NULL);
    assert_int_equal (strlen (msg->error), DQ_WORKER_ERROR_MAX);
    dq_msg_destroy (&msg);
    s_ack (f, "b-2");

    s_job (f, "b-3", "badutf8", NULL, 1);
    msg = s_expect_done (f, "b-3", false, NULL);
    assert_string_equal (msg->error, "?? bad \xc3\xa9");
    dq_msg_destroy (&msg);
    s_ack (f, "b-3");

    s_job (f, "b-4", "silent", NULL, 1);
    msg = s_expect_done (f, "b-4", false, NULL);
    assert_string_equal (msg->error, "handler failed");
    dq_msg_destroy (&msg);
    s_ack (f, "b-4");

    s_job (f, "b-5", "no-such-type", NULL, 1);
    msg = s_expect_done (f, "b-5", false, NULL);
    assert_non_null (strstr (msg->error, "no handler for type 'no-such-type'"));
    dq_msg_destroy (&msg);
    s_ack (f, "b-5");

    //  Garbage from the broker is logged and dropped.
    zmq_send (zsock_resolve (f->router), f->rid, f->rid_size, ZMQ_SNDMORE);
    zmq_send (zsock_resolve (f->router), "junk", 4, 0);
    zmq_send (zsock_resolve (f->router), f->rid, f->rid_size, ZMQ_SNDMORE);
    zmq_send (zsock_resolve (f->router), DQ_PROTO_SIGNATURE, 3, ZMQ_SNDMORE);
    zmq_send (zsock_resolve (f->router), "JOB", 3, ZMQ_SNDMORE);
    zmq_send (zsock_resolve (f->router), "\x81\xa2id\x01", 5, 0);
    //  A command a worker does not expect.
    s_send_cmd (f, DQ_CMD_STATS);
    s_job (f, "b-6", "echo", "still here", 1);
    s_done_and_ack (f, "b-6", "still here");
    s_stop (f);
}

static void
test_worker_duplicate_job (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 2, 30000);
    s_job (f, "d-1", "block", "dup", 1);
    s_wait_int (f, &f->shared.started, 1);
    //  The same job again (broker restart): not run twice, reported under
    //  the newer attempt.
    s_job (f, "d-1", "block", "dup", 2);
    s_job (f, "e-1", "echo", "sync", 1);
    s_done_and_ack (f, "e-1", "sync");
    atomic_store (&f->shared.tokens, 5);
    dq_msg_t *msg = s_expect_done (f, "d-1", true, "dup");
    assert_int_equal (msg->attempt, 2);
    dq_msg_destroy (&msg);
    assert_int_equal (atomic_load (&f->shared.started), 1);
    //  A succeeded result not yet acknowledged is sent again, not rerun.
    s_job (f, "d-1", "block", "dup", 3);
    msg = s_expect_done (f, "d-1", true, "dup");
    assert_int_equal (msg->attempt, 3);
    dq_msg_destroy (&msg);
    s_ack (f, "d-1");
    assert_int_equal (atomic_load (&f->shared.started), 1);
    s_stop (f);
}

static void
s_error_reply (s_fix_t *f, uint64_t rid, dq_err_t code)
{
    assert_int_equal (dq_msg_send_error (zsock_resolve (f->router), f->rid, f->rid_size,
                                         rid, code, 50, "test refusal"), 0);
}

static void
test_worker_error_replies (void **state)
{
    s_fix_t *f = *state;
    s_start_welcomed (f, 2, 30000);
    //  A transient refusal of a DONE: the result comes again after a while.
    s_job (f, "k-1", "echo", "again", 1);
    dq_msg_t *msg = s_expect_done (f, "k-1", true, "again");
    s_error_reply (f, msg->rid, DQ_ERR_BUSY);
    dq_msg_destroy (&msg);
    s_done_and_ack (f, "k-1", "again");

    //  A final refusal: dropped, not sent again after re-registering.
    s_job (f, "k-2", "echo", "drop", 1);
    msg = s_expect_done (f, "k-2", true, "drop");
    s_error_reply (f, msg->rid, DQ_ERR_INVALID);
    dq_msg_destroy (&msg);
    s_send_cmd (f, DQ_CMD_REREGISTER);
    msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
    s_job (f, "k-3", "echo", "fresh", 1);
    s_done_and_ack (f, "k-3", "fresh");

    //  "unknown worker" about something else: register again.
    s_error_reply (f, 0, DQ_ERR_UNKNOWN_WORKER);
    msg = s_expect (f, DQ_CMD_READY);
    dq_msg_destroy (&msg);
    s_welcome (f, 1000, 30);   //  generous: a loaded machine may stall the test
    s_job (f, "k-4", "echo", "ok", 1);
    s_done_and_ack (f, "k-4", "ok");
    s_stop (f);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_worker_api_validation, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_ready_job_done_ack, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_capacity_never_exceeded, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_abandon, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_reregister, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_resend_after_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_ready_repeated_until_welcome, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_stop_finishes_running, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_stop_grace_abandons, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_bad_results, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_duplicate_job, setup, teardown),
        cmocka_unit_test_setup_teardown (test_worker_error_replies, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
