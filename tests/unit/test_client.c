/*  test_client.c - unit tests for dq_client against a fake broker.

    The fake is a ROUTER on a free loopback port, run by a thread that hands
    each decoded request to a scenario function. Covered: round trips of
    every call, ERROR replies (code, message, retry_ms), stale and
    malformed replies dropped, re-sending with the same rid and key, the
    timeout message, generated and given idempotency keys, wait (success,
    timeout, chunks of at most 10,000 ids, errors), DAG pages gathered (and
    a broker whose pages point back refused), pipelining with replies
    out of order, CURVE, bad endpoints and bad arguments.

    Timing: no test depends on speed; deadlines are generous and only lower
    bounds of elapsed time are checked.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "dq_client.h"

#define FAKE_LOG_MAX 64

typedef struct fake_t_ fake_t;
//  Handles one request; may send any number of messages back.
typedef void (fake_fn) (fake_t *fake, const void *peer, size_t peer_size,
                        dq_msg_t *req);

struct fake_t_ {
    void *ctx;
    void *sock;                 //  ROUTER, owned by the thread once started
    char endpoint [256];
    pthread_t thread;
    atomic_bool stop;
    fake_fn *fn;
    int mode;                   //  scenario detail
    bool dedupe;                //  ignore re-sent copies (same rid) of requests
    //  Log of requests (read after fake_destroy joined the thread).
    atomic_int requests;
    uint64_t rids [FAKE_LOG_MAX];
    char keys [FAKE_LOG_MAX][64];
    char dag_names [FAKE_LOG_MAX][64];
    uint32_t nids [FAKE_LOG_MAX];
    dq_cmd_t cmds [FAKE_LOG_MAX];
    uint32_t njobs [FAKE_LOG_MAX];
    int polls;                  //  thread-private counters
    //  Pipelining: requests held back and answered in reverse.
    uint64_t held [200];
    int nheld;
};

static fake_fn s_fn_second_copy;

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *
s_fake_run (void *arg)
{
    fake_t *fake = arg;
    while (!atomic_load (&fake->stop)) {
        zmq_pollitem_t item = { fake->sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, 20) <= 0)
            continue;
        uint8_t peer [256];
        size_t peer_size = 0;
        dq_err_t err;
        char reason [200];
        dq_msg_t *req = dq_msg_recv (fake->sock, peer, &peer_size, ZMQ_DONTWAIT,
                                     &err, reason);
        if (!req)
            continue;
        int n = atomic_load (&fake->requests);
        //  On a slow machine a reply may take over a second and the client
        //  sends its request again; most scenarios count requests, not copies.
        bool copy = false;
        for (int i = 0; fake->dedupe && i < n && i < FAKE_LOG_MAX; i++)
            copy = copy || fake->rids [i] == req->rid;
        if (copy) {
            dq_msg_destroy (&req);
            continue;
        }
        if (n < FAKE_LOG_MAX) {
            fake->rids [n] = req->rid;
            snprintf (fake->keys [n], sizeof fake->keys [n], "%s", req->key? req->key: "");
            snprintf (fake->dag_names [n], sizeof fake->dag_names [n], "%s",
                      req->dag_name? req->dag_name: "(null)");
            fake->nids [n] = req->nids;
            fake->cmds [n] = req->cmd;
            fake->njobs [n] = req->njobs;
        }
        atomic_fetch_add (&fake->requests, 1);
        if (fake->fn)
            fake->fn (fake, peer, peer_size, req);
        dq_msg_destroy (&req);
    }
    return NULL;
}

static fake_t *
s_fake_new (fake_fn *fn, int mode, const char *curve_secret_file)
{
    fake_t *fake = calloc (1, sizeof *fake);
    assert_non_null (fake);
    fake->fn = fn;
    fake->mode = mode;
    //  The re-send tests see every copy; the others see each request once.
    fake->dedupe = fn != s_fn_second_copy && fn != NULL;
    fake->ctx = zmq_ctx_new ();
    fake->sock = zmq_socket (fake->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt (fake->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (curve_secret_file) {
        zcert_t *cert = zcert_load (curve_secret_file);
        assert_non_null (cert);
        int one = 1;
        assert_int_equal (zmq_setsockopt (fake->sock, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
        assert_int_equal (zmq_setsockopt (fake->sock, ZMQ_CURVE_SECRETKEY,
                                          zcert_secret_key (cert), 32), 0);
        zcert_destroy (&cert);
    }
    assert_int_equal (zmq_bind (fake->sock, "tcp://127.0.0.1:*"), 0);
    size_t size = sizeof fake->endpoint;
    assert_int_equal (zmq_getsockopt (fake->sock, ZMQ_LAST_ENDPOINT, fake->endpoint, &size), 0);
    assert_int_equal (pthread_create (&fake->thread, NULL, s_fake_run, fake), 0);
    return fake;
}

//  Stop the thread; the request log stays readable.
static void
s_fake_stop (fake_t *fake)
{
    if (!atomic_exchange (&fake->stop, true))
        pthread_join (fake->thread, NULL);
}

static void
s_fake_destroy (fake_t **fake_p)
{
    fake_t *fake = *fake_p;
    s_fake_stop (fake);
    zmq_close (fake->sock);
    zmq_ctx_term (fake->ctx);
    free (fake);
    *fake_p = NULL;
}

static void
s_reply (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *msg)
{
    assert_int_equal (dq_msg_send (msg, fake->sock, peer, peer_size, 0), 0);
}

//  JOBS for every id of req, in state (job i: state_of (i)).
static void
s_reply_jobs (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req,
              int (*state_of) (fake_t *, uint32_t, const char *))
{
    dq_msg_t jobs;
    dq_msg_init (&jobs, DQ_CMD_JOBS);
    jobs.rid = req->rid;
    jobs.ninfos = req->nids;
    jobs.infos = calloc (req->nids, sizeof (dq_jobinfo_t));
    assert_non_null (jobs.infos);
    for (uint32_t i = 0; i < req->nids; i++) {
        jobs.infos [i].id = req->ids [i];
        jobs.infos [i].type = "echo";
        jobs.infos [i].state = state_of (fake, i, req->ids [i]);
    }
    s_reply (fake, peer, peer_size, &jobs);
    free (jobs.infos);
}

static int
s_state_succeeded (fake_t *fake, uint32_t i, const char *id)
{
    (void) fake; (void) i; (void) id;
    return DQ_STATE_SUCCEEDED;
}

static int
s_state_running (fake_t *fake, uint32_t i, const char *id)
{
    (void) fake; (void) i; (void) id;
    return DQ_STATE_RUNNING;
}

//  Terminal from the fourth poll on.
static int
s_state_after_polls (fake_t *fake, uint32_t i, const char *id)
{
    (void) i; (void) id;
    return fake->polls >= 4? DQ_STATE_FAILED: DQ_STATE_QUEUED;
}

//  Ids "c-N": even N succeed at once, odd ones on the second poll of them.
static int
s_state_even_first (fake_t *fake, uint32_t i, const char *id)
{
    (void) i;
    long n = atol (id + 2);
    return (n % 2 == 0 || fake->polls > 3)? DQ_STATE_SUCCEEDED: DQ_STATE_RUNNING;
}

//  The scenario behind most tests: answers every command plausibly.
static void
s_fn_normal (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req)
{
    dq_msg_t rep;
    switch (req->cmd) {
        case DQ_CMD_STATUS:
            fake->polls++;
            if (fake->mode == 1)
                s_reply_jobs (fake, peer, peer_size, req, s_state_running);
            else
            if (fake->mode == 2)
                s_reply_jobs (fake, peer, peer_size, req, s_state_after_polls);
            else
            if (fake->mode == 3)
                s_reply_jobs (fake, peer, peer_size, req, s_state_even_first);
            else
            if (fake->mode == 4) {          //  one info too few
                req->nids = req->nids > 1? req->nids - 1: 0;
                if (req->nids)
                    s_reply_jobs (fake, peer, peer_size, req, s_state_running);
                else {
                    dq_msg_init (&rep, DQ_CMD_JOBS);
                    rep.rid = req->rid;
                    s_reply (fake, peer, peer_size, &rep);
                }
            }
            else
                s_reply_jobs (fake, peer, peer_size, req, s_state_succeeded);
            break;
        case DQ_CMD_SUBMIT: {
            dq_msg_init (&rep, DQ_CMD_SUBMITTED);
            rep.rid = req->rid;
            const char **ids = calloc (req->njobs, sizeof (char *));
            char (*text) [32] = calloc (req->njobs, 32);
            for (uint32_t i = 0; i < req->njobs; i++) {
                snprintf (text [i], 32, "b7f3a-%u", i + 1);
                ids [i] = text [i];
            }
            rep.ids = ids;
            rep.nids = req->njobs;
            rep.dag_id = req->dag_name? "b7f3a-d1": NULL;
            s_reply (fake, peer, peer_size, &rep);
            free (ids);
            free (text);
            break;
        }
        case DQ_CMD_RESULT:
            if (strcmp (req->id, "b7f3a-404") == 0) {
                dq_msg_send_error (fake->sock, peer, peer_size, req->rid,
                                   DQ_ERR_NOT_FOUND, 0, "job b7f3a-404 not found");
                break;
            }
            dq_msg_init (&rep, DQ_CMD_OUTPUT);
            rep.rid = req->rid;
            rep.id = req->id;
            rep.state = DQ_STATE_SUCCEEDED;
            rep.output = "out\0put";
            rep.output_size = 7;
            rep.content_type = "text/plain";
            s_reply (fake, peer, peer_size, &rep);
            break;
        case DQ_CMD_CANCEL:
            dq_msg_init (&rep, DQ_CMD_CANCELLED);
            rep.rid = req->rid;
            rep.count = 17;
            s_reply (fake, peer, peer_size, &rep);
            break;
        case DQ_CMD_STATS: {
            dq_msg_init (&rep, DQ_CMD_STATS_REPLY);
            rep.rid = req->rid;
            rep.broker_id = "b7f3a";
            dq_typestat_t ts = { .type = "echo", .queued = 5, .running = 2 };
            const char *types [] = { "echo", "sleep" };
            dq_workerinfo_t w = { .id = "w-1", .host = "h", .pid = 42, .capacity = 4,
                                  .inflight = 2, .types = types, .ntypes = 2 };
            rep.typestats = &ts;
            rep.ntypestats = 1;
            rep.workers = &w;
            rep.nworkers = 1;
            s_reply (fake, peer, peer_size, &rep);
            break;
        }
        case DQ_CMD_DAG: {
            dq_msg_init (&rep, DQ_CMD_DAG_INFO);
            rep.rid = req->rid;
            dq_daginfo_t dag = { .id = req->id, .name = "photo", .state = 2,
                                 .total = 4, .succeeded = 1 };
            if (fake->mode != 5)
                rep.dag = &dag;
            //  Modes 6 and 7: a 25-job DAG in pages of 10 (7: the third
            //  page points back to the first).
            char ids [25][24];
            dq_jobinfo_t infos [25];
            if (fake->mode == 6 || fake->mode == 7) {
                dag.total = 25;
                uint32_t from = req->offset < 25? req->offset: 25;
                uint32_t to = 25 - from > 10? from + 10: 25;
                for (uint32_t i = from; i < to; i++) {
                    snprintf (ids [i], sizeof ids [i], "b7f3a-%u", i + 1);
                    infos [i] = (dq_jobinfo_t) { .id = ids [i], .state = 3 };
                }
                rep.infos = infos + from;
                rep.ninfos = to - from;
                rep.next_offset = to < 25? to: 0;
                if (fake->mode == 7 && from == 20)
                    rep.next_offset = 10;
            }
            s_reply (fake, peer, peer_size, &rep);
            break;
        }
        default:
            break;
    }
}

static void
test_client_bad_arguments (void **state)
{
    (void) state;
    assert_null (dq_client_new (NULL));
    assert_null (dq_client_new (""));
    assert_null (dq_client_new ("nonsense"));
    assert_null (dq_client_new ("tcp://"));
    assert_null (dq_client_new ("bogus://x:1"));
    dq_client_t *client = dq_client_new ("tcp://127.0.0.1:1");
    assert_non_null (client);
    assert_string_equal (dq_client_endpoint (client), "tcp://127.0.0.1:1");
    assert_int_equal (dq_client_timeout (client), DQ_CLIENT_TIMEOUT_DEFAULT);
    dq_client_set_timeout (client, 2500);
    assert_int_equal (dq_client_timeout (client), 2500);
    dq_client_set_timeout (client, 0);
    assert_int_equal (dq_client_timeout (client), DQ_CLIENT_TIMEOUT_DEFAULT);
    dq_msg_t *reply = (dq_msg_t *) 1;
    assert_int_equal (dq_client_submit (client, NULL, 0, NULL, NULL, &reply, NULL),
                      DQ_ERR_INVALID);
    assert_null (reply);
    assert_string_equal (dq_client_error (client), "a submission needs at least one job");
    assert_int_equal (dq_client_status (client, NULL, 0, &reply), DQ_ERR_INVALID);
    assert_int_equal (dq_client_result (client, "", &reply), DQ_ERR_INVALID);
    assert_int_equal (dq_client_cancel (client, NULL, NULL), DQ_ERR_INVALID);
    assert_int_equal (dq_client_dag (client, NULL, &reply), DQ_ERR_INVALID);
    char longid [300];
    memset (longid, 'a', sizeof longid - 1);
    longid [sizeof longid - 1] = 0;
    assert_int_equal (dq_client_result (client, longid, &reply), DQ_ERR_INVALID);
    assert_int_equal (dq_client_wait (client, NULL, 0, 10, &reply), DQ_OK);
    assert_null (reply);
    //  A job type over the protocol limit cannot be encoded.
    char type [5000];
    memset (type, 'x', sizeof type - 1);
    type [sizeof type - 1] = 0;
    dq_jobspec_t job = { .type = type };
    assert_int_equal (dq_client_submit (client, &job, 1, NULL, NULL, &reply, NULL),
                      DQ_ERR_TOO_BIG);
    dq_client_destroy (&client);
    assert_null (client);
    dq_client_destroy (&client);
    dq_client_destroy (NULL);
}

static void
test_client_round_trips (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_normal, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    assert_non_null (client);

    const char *ids [] = { "b7f3a-1", "b7f3a-2" };
    dq_msg_t *reply;
    assert_int_equal (dq_client_status (client, ids, 2, &reply), DQ_OK);
    assert_int_equal (reply->cmd, DQ_CMD_JOBS);
    assert_int_equal (reply->ninfos, 2);
    assert_string_equal (reply->infos [1].id, "b7f3a-2");
    assert_int_equal (reply->infos [1].state, DQ_STATE_SUCCEEDED);
    dq_msg_destroy (&reply);

    assert_int_equal (dq_client_result (client, "b7f3a-1", &reply), DQ_OK);
    assert_int_equal (reply->output_size, 7);
    assert_memory_equal (reply->output, "out\0put", 7);
    assert_string_equal (reply->content_type, "text/plain");
    dq_msg_destroy (&reply);

    uint64_t count = 0;
    assert_int_equal (dq_client_cancel (client, "b7f3a-d1", &count), DQ_OK);
    assert_int_equal (count, 17);
    assert_int_equal (dq_client_cancel (client, "b7f3a-d1", NULL), DQ_OK);

    assert_int_equal (dq_client_stats (client, &reply), DQ_OK);
    assert_string_equal (reply->broker_id, "b7f3a");
    assert_int_equal (reply->ntypestats, 1);
    assert_int_equal (reply->typestats [0].queued, 5);
    assert_int_equal (reply->nworkers, 1);
    assert_int_equal (reply->workers [0].ntypes, 2);
    assert_string_equal (reply->workers [0].types [1], "sleep");
    dq_msg_destroy (&reply);

    assert_int_equal (dq_client_dag (client, "b7f3a-d9", &reply), DQ_OK);
    assert_non_null (reply->dag);
    assert_string_equal (reply->dag->id, "b7f3a-d9");
    assert_int_equal (reply->dag->total, 4);
    dq_msg_destroy (&reply);

    //  Submit with a generated key, then with a given one; a DAG.
    dq_dep_t dep = { .idx = 0 };
    dq_jobspec_t jobs [2] = {
        { .type = "echo", .payload = "hi", .payload_size = 2, .priority = -3 },
        { .type = "echo", .deps = &dep, .ndeps = 1 },
    };
    uint32_t retry = 99;
    assert_int_equal (dq_client_submit (client, jobs, 1, NULL, NULL, &reply, &retry), DQ_OK);
    assert_int_equal (retry, 0);
    assert_int_equal (reply->nids, 1);
    assert_string_equal (reply->ids [0], "b7f3a-1");
    assert_null (reply->dag_id);
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_submit (client, jobs, 2, "photo", "my-key", &reply, NULL),
                      DQ_OK);
    assert_int_equal (reply->nids, 2);
    assert_string_equal (reply->dag_id, "b7f3a-d1");
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_submit (client, jobs, 1, NULL, NULL, &reply, NULL), DQ_OK);
    dq_msg_destroy (&reply);

    dq_client_destroy (&client);
    s_fake_stop (fake);
    int n = atomic_load (&fake->requests);
    assert_int_equal (n, 9);
    //  Every request had its own rid, counting up.
    for (int i = 1; i < n; i++)
        assert_int_equal (fake->rids [i], fake->rids [i - 1] + 1);
    //  Generated keys: 32 lowercase hex characters, different each time.
    assert_int_equal (fake->cmds [6], DQ_CMD_SUBMIT);
    assert_int_equal (strlen (fake->keys [6]), 32);
    assert_int_equal (strspn (fake->keys [6], "0123456789abcdef"), 32);
    assert_string_equal (fake->dag_names [6], "(null)");
    assert_string_equal (fake->keys [7], "my-key");
    assert_string_equal (fake->dag_names [7], "photo");
    assert_int_equal (fake->njobs [7], 2);
    assert_int_equal (strlen (fake->keys [8]), 32);
    assert_string_not_equal (fake->keys [6], fake->keys [8]);
    s_fake_destroy (&fake);
}

//  ERROR replies: code, message and retry_ms reach the caller.
static void
s_fn_errors (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req)
{
    if (req->cmd == DQ_CMD_SUBMIT)
        dq_msg_send_error (fake->sock, peer, peer_size, req->rid, DQ_ERR_BUSY, 250,
                           "broker is full: 1000000 jobs queued; retry later");
    else
    if (req->cmd == DQ_CMD_STATUS)
        dq_msg_send_error (fake->sock, peer, peer_size, req->rid, DQ_ERR_NOT_FOUND, 0,
                           "job b7f3a-9 not found");
    else
    if (req->cmd == DQ_CMD_CANCEL)
        dq_msg_send_error (fake->sock, peer, peer_size, req->rid, 77, 0, "odd");
    else
    if (req->cmd == DQ_CMD_RESULT)
        dq_msg_send_error (fake->sock, peer, peer_size, req->rid, DQ_ERR_NOT_FINISHED,
                           0, NULL);
    else
    if (req->cmd == DQ_CMD_STATS) {
        //  Wrong reply command with the right rid.
        dq_msg_t rep;
        dq_msg_init (&rep, DQ_CMD_CANCELLED);
        rep.rid = req->rid;
        s_reply (fake, peer, peer_size, &rep);
    }
}

static void
test_client_error_replies (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_errors, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    dq_msg_t *reply;
    dq_jobspec_t job = { .type = "echo" };
    uint32_t retry = 0;
    assert_int_equal (dq_client_submit (client, &job, 1, NULL, NULL, &reply, &retry),
                      DQ_ERR_BUSY);
    assert_null (reply);
    assert_int_equal (retry, 250);
    assert_string_equal (dq_client_error (client),
                         "broker is full: 1000000 jobs queued; retry later");
    const char *ids [] = { "b7f3a-9" };
    assert_int_equal (dq_client_status (client, ids, 1, &reply), DQ_ERR_NOT_FOUND);
    assert_string_equal (dq_client_error (client), "job b7f3a-9 not found");
    assert_int_equal (dq_client_wait (client, ids, 1, 1000, &reply), DQ_ERR_NOT_FOUND);
    assert_null (reply);
    assert_int_equal (dq_client_cancel (client, "b7f3a-9", NULL), DQ_ERR_PROTOCOL);
    assert_string_equal (dq_client_error (client), "broker answered error code 77: odd");
    assert_int_equal (dq_client_result (client, "b7f3a-9", &reply), DQ_ERR_NOT_FINISHED);
    assert_string_equal (dq_client_error (client), "not_finished");
    assert_int_equal (dq_client_stats (client, &reply), DQ_ERR_PROTOCOL);
    assert_string_equal (dq_client_error (client),
                         "broker answered CANCELLED to STATS (expected STATS_REPLY)");
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

//  Before the real reply: a stale reply (another rid), a malformed message
//  and a message with wrong frames. All are dropped.
static void
s_fn_noise (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req)
{
    dq_msg_t rep;
    dq_msg_init (&rep, DQ_CMD_CANCELLED);
    rep.rid = req->rid - 1;
    rep.count = 666;
    s_reply (fake, peer, peer_size, &rep);
    zmq_send (fake->sock, peer, peer_size, ZMQ_SNDMORE);
    zmq_send (fake->sock, "DQ\x01", 3, ZMQ_SNDMORE);
    zmq_send (fake->sock, "CANCELLED", 9, ZMQ_SNDMORE);
    zmq_send (fake->sock, "\xc1garbage", 8, 0);
    zmq_send (fake->sock, peer, peer_size, ZMQ_SNDMORE);
    zmq_send (fake->sock, "hello", 5, 0);
    rep.rid = req->rid;
    rep.count = 1;
    s_reply (fake, peer, peer_size, &rep);
}

static void
test_client_drops_stale_and_malformed (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_noise, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    for (int i = 0; i < 3; i++) {
        uint64_t count = 0;
        assert_int_equal (dq_client_cancel (client, "b7f3a-1", &count), DQ_OK);
        assert_int_equal (count, 1);
    }
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

//  Ignores the first copy of each request; answers the second.
static void
s_fn_second_copy (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req)
{
    if (++fake->polls % 2 == 1)
        return;
    s_fn_normal (fake, peer, peer_size, req);
}

static void
test_client_resends_same_rid_and_key (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_second_copy, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    dq_client_set_timeout (client, 60000);
    dq_jobspec_t job = { .type = "echo" };
    dq_msg_t *reply;
    int64_t start = s_now_ms ();
    assert_int_equal (dq_client_submit (client, &job, 1, NULL, NULL, &reply, NULL), DQ_OK);
    assert_true (s_now_ms () - start >= 900);      //  the first re-send is after 1 s
    dq_msg_destroy (&reply);
    dq_client_destroy (&client);
    s_fake_stop (fake);
    //  The same request twice: same rid, same generated key.
    assert_int_equal (atomic_load (&fake->requests), 2);
    assert_int_equal (fake->rids [1], fake->rids [0]);
    assert_int_equal (strlen (fake->keys [0]), 32);
    assert_string_equal (fake->keys [1], fake->keys [0]);
    s_fake_destroy (&fake);
}

//  Never answers: the call times out with the documented message, having
//  sent the same request more than once.
static void
test_client_timeout (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (NULL, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    dq_client_set_timeout (client, 3500);
    dq_jobspec_t job = { .type = "echo" };
    dq_msg_t *reply;
    int64_t start = s_now_ms ();
    assert_int_equal (dq_client_submit (client, &job, 1, NULL, "k1", &reply, NULL),
                      DQ_ERR_UNAVAILABLE);
    assert_true (s_now_ms () - start >= 3400);
    assert_null (reply);
    char expected [300];
    snprintf (expected, sizeof expected, "no reply from broker at %s within 3.5 s",
              fake->endpoint);
    assert_string_equal (dq_client_error (client), expected);
    dq_client_destroy (&client);
    s_fake_stop (fake);
    int n = atomic_load (&fake->requests);
    //  Sent at 0, 1 and 3 s: at least two copies arrived, all alike.
    assert_true (n >= 2 && n <= 3);
    for (int i = 1; i < n; i++) {
        assert_int_equal (fake->rids [i], fake->rids [0]);
        assert_string_equal (fake->keys [i], "k1");
    }
    s_fake_destroy (&fake);
}

//  Nothing listens at all.
static void
test_client_no_broker (void **state)
{
    (void) state;
    void *ctx = zmq_ctx_new ();
    void *sock = zmq_socket (ctx, ZMQ_ROUTER);
    assert_int_equal (zmq_bind (sock, "tcp://127.0.0.1:*"), 0);
    char endpoint [256];
    size_t size = sizeof endpoint;
    zmq_getsockopt (sock, ZMQ_LAST_ENDPOINT, endpoint, &size);
    zmq_close (sock);
    zmq_ctx_term (ctx);
    dq_client_t *client = dq_client_new (endpoint);
    dq_client_set_timeout (client, 1200);
    dq_msg_t *reply;
    assert_int_equal (dq_client_stats (client, &reply), DQ_ERR_UNAVAILABLE);
    char expected [300];
    snprintf (expected, sizeof expected, "no reply from broker at %s within 1.2 s", endpoint);
    assert_string_equal (dq_client_error (client), expected);
    const char *ids [] = { "b7f3a-1" };
    assert_int_equal (dq_client_wait (client, ids, 1, 500, &reply), DQ_ERR_UNAVAILABLE);
    assert_null (reply);
    int64_t start = s_now_ms ();
    dq_client_destroy (&client);                //  linger 0: no hang
    assert_true (s_now_ms () - start < 5000);
}

static void
test_client_wait (void **state)
{
    (void) state;
    //  Terminal on the fourth poll.
    fake_t *fake = s_fake_new (s_fn_normal, 2, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    const char *ids [] = { "b7f3a-1", "b7f3a-2", "b7f3a-3" };
    dq_msg_t *reply;
    assert_int_equal (dq_client_wait (client, ids, 3, 60000, &reply), DQ_OK);
    assert_non_null (reply);
    assert_int_equal (reply->ninfos, 3);
    assert_int_equal (reply->infos [2].state, DQ_STATE_FAILED);
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_wait (client, ids, 3, -1, NULL), DQ_OK);
    dq_client_destroy (&client);
    s_fake_destroy (&fake);

    //  Never terminal: times out, with the last states.
    fake = s_fake_new (s_fn_normal, 1, NULL);
    client = dq_client_new (fake->endpoint);
    int64_t start = s_now_ms ();
    assert_int_equal (dq_client_wait (client, ids, 3, 300, &reply), DQ_CLIENT_TIMED_OUT);
    assert_true (s_now_ms () - start >= 290);
    assert_non_null (reply);
    assert_int_equal (reply->infos [0].state, DQ_STATE_RUNNING);
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_wait (client, ids, 3, 0, NULL), DQ_CLIENT_TIMED_OUT);
    dq_client_destroy (&client);
    s_fake_destroy (&fake);

    //  A reply with too few states is a protocol error.
    fake = s_fake_new (s_fn_normal, 4, NULL);
    client = dq_client_new (fake->endpoint);
    assert_int_equal (dq_client_wait (client, ids, 3, 5000, &reply), DQ_ERR_PROTOCOL);
    assert_string_equal (dq_client_error (client), "broker returned 2 job states for 3 ids");
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

//  25,000 ids: STATUS requests carry at most 10,000, and once a job is
//  terminal it is not asked about again; likewise for a few ids.
static void
test_client_wait_chunks (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_normal, 3, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    const uint32_t n = 25000;
    const char **ids = calloc (n, sizeof (char *));
    char (*text) [16] = calloc (n, 16);
    for (uint32_t i = 0; i < n; i++) {
        snprintf (text [i], 16, "c-%u", i);
        ids [i] = text [i];
    }
    assert_int_equal (dq_client_wait (client, ids, n, 60000, NULL), DQ_OK);
    dq_client_destroy (&client);
    s_fake_stop (fake);
    int requests = atomic_load (&fake->requests);
    //  Round 1: 10000 + 10000 + 5000; then 12500 odd ids: 10000 + 2500.
    assert_int_equal (requests, 5);
    uint32_t expect [] = { 10000, 10000, 5000, 10000, 2500 };
    for (int i = 0; i < requests; i++)
        assert_int_equal (fake->nids [i], expect [i]);
    s_fake_destroy (&fake);

    //  100 ids: polls skip the finished ones too; a last STATUS of all of
    //  them makes the reply describe them all.
    fake = s_fake_new (s_fn_normal, 3, NULL);
    client = dq_client_new (fake->endpoint);
    dq_msg_t *reply = NULL;
    assert_int_equal (dq_client_wait (client, ids, 100, 60000, &reply), DQ_OK);
    assert_non_null (reply);
    assert_int_equal (reply->ninfos, 100);
    for (uint32_t i = 0; i < 100; i++)
        assert_int_equal (reply->infos [i].state, DQ_STATE_SUCCEEDED);
    dq_msg_destroy (&reply);
    dq_client_destroy (&client);
    s_fake_stop (fake);
    uint32_t expect_small [] = { 100, 50, 50, 50, 100 };
    assert_int_equal (atomic_load (&fake->requests), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal (fake->nids [i], expect_small [i]);
    s_fake_destroy (&fake);
    free (ids);
    free (text);
}

//  Holds 100 STATUS requests, then answers them in reverse order.
static void
s_fn_reverse (fake_t *fake, const void *peer, size_t peer_size, dq_msg_t *req)
{
    fake->held [fake->nheld++] = req->rid;
    if (fake->nheld < 100)
        return;
    while (fake->nheld > 0) {
        dq_msg_t rep;
        dq_msg_init (&rep, DQ_CMD_CANCELLED);
        rep.rid = fake->held [--fake->nheld];
        rep.count = rep.rid;
        s_reply (fake, peer, peer_size, &rep);
    }
}

static void
test_client_pipelining (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_reverse, 0, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    assert_non_null (dq_client_socket (client));
    uint64_t rids [100];
    for (int i = 0; i < 100; i++) {
        dq_msg_t req;
        dq_msg_init (&req, DQ_CMD_CANCEL);
        req.id = "b7f3a-1";
        rids [i] = dq_client_send (client, &req);
        assert_true (rids [i] != 0);
        assert_int_equal (req.rid, rids [i]);
        if (i)
            assert_int_equal (rids [i], rids [i - 1] + 1);
    }
    for (int i = 99; i >= 0; i--) {
        dq_err_t err;
        dq_msg_t *rep = dq_client_recv (client, 30000, &err);
        assert_non_null (rep);
        assert_int_equal (err, DQ_OK);
        assert_int_equal (rep->rid, rids [i]);
        assert_int_equal (rep->count, rids [i]);
        dq_msg_destroy (&rep);
    }
    dq_err_t err;
    assert_null (dq_client_recv (client, 50, &err));
    assert_int_equal (err, DQ_ERR_UNAVAILABLE);
    //  Over a protocol limit: not sent.
    char type [5000];
    memset (type, 'x', sizeof type - 1);
    type [sizeof type - 1] = 0;
    dq_jobspec_t job = { .type = type };
    dq_msg_t req;
    dq_msg_init (&req, DQ_CMD_SUBMIT);
    req.jobs = &job;
    req.njobs = 1;
    assert_int_equal (dq_client_send (client, &req), 0);
    assert_string_equal (dq_client_error (client), "SUBMIT request is over a protocol limit");
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

static void
test_client_curve (void **state)
{
    (void) state;
    if (!zmq_has ("curve")) {
        skip ();
        return;
    }
    char dir [] = "/tmp/dq_test_client_XXXXXX";
    assert_non_null (mkdtemp (dir));
    char server [300], client_cert [300], path [330];
    snprintf (server, sizeof server, "%s/broker", dir);
    snprintf (client_cert, sizeof client_cert, "%s/client", dir);
    zcert_t *cert = zcert_new ();
    assert_int_equal (zcert_save (cert, server), 0);
    zcert_destroy (&cert);
    cert = zcert_new ();
    assert_int_equal (zcert_save (cert, client_cert), 0);
    zcert_destroy (&cert);

    snprintf (path, sizeof path, "%s_secret", server);
    fake_t *fake = s_fake_new (s_fn_normal, 0, path);
    dq_client_t *client = dq_client_new (fake->endpoint);
    snprintf (path, sizeof path, "%s_secret", client_cert);
    //  Errors first: missing file, public half given as the secret one.
    assert_int_equal (dq_client_set_curve (client, "/nonexistent/cert", server), -1);
    assert_non_null (strstr (dq_client_error (client), "cannot read certificate /nonexistent/cert"));
    snprintf (path, sizeof path, "%s/pubonly", dir);
    cert = zcert_new ();
    assert_int_equal (zcert_save_public (cert, path), 0);
    zcert_destroy (&cert);
    assert_int_equal (dq_client_set_curve (client, path, server), -1);
    assert_non_null (strstr (dq_client_error (client), "holds no secret key"));
    snprintf (path, sizeof path, "%s/garbage", dir);
    FILE *f = fopen (path, "w");
    fputs ("this is not a certificate\n", f);
    fclose (f);
    assert_int_equal (dq_client_set_curve (client, path, server), -1);
    assert_non_null (strstr (dq_client_error (client), "is not a CURVE certificate"));

    snprintf (path, sizeof path, "%s_secret", client_cert);
    assert_int_equal (dq_client_set_curve (client, path, server), 0);
    dq_msg_t *reply;
    assert_int_equal (dq_client_stats (client, &reply), DQ_OK);
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_set_curve (client, path, server), -1);
    assert_string_equal (dq_client_error (client),
                         "CURVE keys must be set before the first request");
    dq_client_destroy (&client);

    //  Without CURVE the broker never answers.
    client = dq_client_new (fake->endpoint);
    dq_client_set_timeout (client, 1500);
    assert_int_equal (dq_client_stats (client, &reply), DQ_ERR_UNAVAILABLE);
    dq_client_destroy (&client);
    s_fake_destroy (&fake);

    const char *names [] = { "broker", "broker_secret", "client", "client_secret",
                             "pubonly", "garbage" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++) {
        snprintf (path, sizeof path, "%s/%s", dir, names [i]);
        unlink (path);
    }
    rmdir (dir);
}

static void
test_client_dag_without_dag_field (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_normal, 5, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    dq_msg_t *reply;
    assert_int_equal (dq_client_dag (client, "b7f3a-d1", &reply), DQ_ERR_PROTOCOL);
    assert_null (reply);
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

//  dq_client_dag gathers every page in order; dq_client_dag_page gives
//  one; a broker whose pages point back is a protocol error, not a loop.
static void
test_client_dag_pages (void **state)
{
    (void) state;
    fake_t *fake = s_fake_new (s_fn_normal, 6, NULL);
    dq_client_t *client = dq_client_new (fake->endpoint);
    dq_msg_t *reply;
    assert_int_equal (dq_client_dag (client, "b7f3a-d1", &reply), DQ_OK);
    assert_int_equal (reply->ninfos, 25);
    assert_int_equal (reply->next_offset, 0);
    assert_int_equal (reply->dag->total, 25);
    for (uint32_t i = 0; i < 25; i++) {
        char id [24];
        snprintf (id, sizeof id, "b7f3a-%u", i + 1);
        assert_string_equal (reply->infos [i].id, id);
    }
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_dag_page (client, "b7f3a-d1", 10, 5, &reply), DQ_OK);
    assert_int_equal (reply->ninfos, 10);    //  the fake ignores limit
    assert_string_equal (reply->infos [0].id, "b7f3a-11");
    assert_int_equal (reply->next_offset, 20);
    dq_msg_destroy (&reply);
    assert_int_equal (dq_client_dag_page (client, "b7f3a-d1", 0, DQ_PROTO_DAG_JOBS_MAX + 1,
                                          &reply), DQ_ERR_TOO_BIG);
    assert_null (reply);
    dq_client_destroy (&client);
    s_fake_destroy (&fake);

    fake = s_fake_new (s_fn_normal, 7, NULL);
    client = dq_client_new (fake->endpoint);
    assert_int_equal (dq_client_dag (client, "b7f3a-d1", &reply), DQ_ERR_PROTOCOL);
    assert_null (reply);
    assert_non_null (strstr (dq_client_error (client), "points back"));
    dq_client_destroy (&client);
    s_fake_destroy (&fake);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_client_bad_arguments),
        cmocka_unit_test (test_client_dag_pages),
        cmocka_unit_test (test_client_round_trips),
        cmocka_unit_test (test_client_error_replies),
        cmocka_unit_test (test_client_drops_stale_and_malformed),
        cmocka_unit_test (test_client_resends_same_rid_and_key),
        cmocka_unit_test (test_client_timeout),
        cmocka_unit_test (test_client_no_broker),
        cmocka_unit_test (test_client_wait),
        cmocka_unit_test (test_client_wait_chunks),
        cmocka_unit_test (test_client_pipelining),
        cmocka_unit_test (test_client_curve),
        cmocka_unit_test (test_client_dag_without_dag_field),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
