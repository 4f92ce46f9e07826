/*  test_proto.c - unit tests for the wire codec (dq_proto).

    Round trips of every command with every field set and with none set,
    nested records (jobs and their deps in both forms, parents, job infos,
    type stats, workers, DAG info), binary bytes with NULs and the size
    limits. Hostile bodies: truncation at every offset, a wrong type for
    every known field in every record, non-map bodies and non-string keys,
    declared lengths of gigabytes, deep nesting, bad frames 0 and 1, NULs in
    text, bad type names, bad dependencies, and a seeded fuzz loop whose
    survivors must re-encode to the same message. Events over a real PUB
    socket, and dq_msg_send / dq_msg_recv over ROUTER/DEALER pairs (inproc
    and tcp loopback), including wrong frame counts that must be consumed
    whole.

    Bodies that the encoder cannot produce are packed with msgpack-c here.
*/
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <msgpack.h>
#include <zmq.h>

#include "dq_proto.h"

#define RECV_TIMEOUT_MS 20000   //  generous: the machine is shared

//  ---------------------------------------------------------------------------
//  Helpers

//  splitmix64: small, seedable; runs are reproducible.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static dq_msg_t *
s_decode (dq_cmd_t cmd, const void *body, size_t size, dq_err_t *err)
{
    const char *name = dq_cmd_str (cmd);
    char reason [256];
    dq_msg_t *msg = dq_msg_decode (DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE,
                                   name, strlen (name), body, size, err, reason);
    //  A failure always says why.
    if (!msg)
        assert_true (strlen (reason) > 0);
    else
        assert_int_equal (*err, DQ_OK);
    return msg;
}

//  Decode and expect failure with the given code.
static void
s_expect_fail (dq_cmd_t cmd, const void *body, size_t size, dq_err_t code)
{
    //  An exact-size copy, so ASan sees any read past the end.
    void *copy = malloc (size? size: 1);
    assert_non_null (copy);
    if (size)
        memcpy (copy, body, size);
    dq_err_t err = DQ_OK;
    dq_msg_t *msg = s_decode (cmd, copy, size, &err);
    if (msg)
        fail_msg ("%s: decoding succeeded, expected %s", dq_cmd_str (cmd),
                  dq_err_str (code));
    assert_int_equal (err, code);
    free (copy);
}

static dq_msg_t *
s_expect_ok (dq_cmd_t cmd, const void *body, size_t size)
{
    dq_err_t err = DQ_ERR_INTERNAL;
    char reason [256] = "";
    const char *name = dq_cmd_str (cmd);
    dq_msg_t *msg = dq_msg_decode (DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE,
                                   name, strlen (name), body, size, &err, reason);
    if (!msg)
        fail_msg ("%s: decoding failed: %s (%s)", name, dq_err_str (err), reason);
    assert_int_equal (err, DQ_OK);
    return msg;
}

static dq_msg_t *
s_roundtrip (const dq_msg_t *in)
{
    void *body = NULL;
    size_t size = 0;
    assert_int_equal (dq_msg_encode (in, &body, &size), 0);
    assert_non_null (body);
    dq_msg_t *out = s_expect_ok (in->cmd, body, size);
    free (body);
    assert_int_equal (out->cmd, in->cmd);
    return out;
}

static void
s_str_eq (const char *a, const char *b)
{
    if (!a)
        assert_null (b);
    else {
        assert_non_null (b);
        assert_string_equal (a, b);
    }
}

static void
s_bin_eq (const void *a, size_t asize, const void *b, size_t bsize)
{
    assert_int_equal (asize, bsize);
    if (asize)
        assert_memory_equal (a, b, asize);
}

static void
s_strs_eq (const char **a, uint32_t na, const char **b, uint32_t nb)
{
    assert_int_equal (na, nb);
    for (uint32_t i = 0; i < na; i++)
        s_str_eq (a [i]? a [i]: "", b [i]);
}

//  What a dep looks like after a round trip: an id wins over idx.
static void
s_dep_eq (const dq_dep_t *a, const dq_dep_t *b)
{
    if (a->id) {
        assert_int_equal (b->idx, -1);
        s_str_eq (a->id, b->id);
    }
    else {
        assert_int_equal (a->idx, b->idx);
        assert_null (b->id);
    }
    assert_int_equal (a->run_on_failure, b->run_on_failure);
}

static void
s_jobspec_eq (const dq_jobspec_t *a, const dq_jobspec_t *b)
{
    s_str_eq (a->type, b->type);
    s_bin_eq (a->payload, a->payload_size, b->payload, b->payload_size);
    s_str_eq (a->content_type, b->content_type);
    s_str_eq (a->name, b->name);
    s_str_eq (a->key, b->key);
    assert_int_equal (a->priority, b->priority);
    assert_int_equal (a->attempts, b->attempts);
    assert_int_equal (a->timeout_ms, b->timeout_ms);
    assert_int_equal (a->delay_ms, b->delay_ms);
    assert_int_equal (a->ndeps, b->ndeps);
    for (uint32_t i = 0; i < a->ndeps; i++)
        s_dep_eq (&a->deps [i], &b->deps [i]);
}

static void
s_parent_eq (const dq_parent_t *a, const dq_parent_t *b)
{
    s_str_eq (a->id, b->id);
    s_str_eq (a->name, b->name);
    s_bin_eq (a->output, a->output_size, b->output, b->output_size);
}

static void
s_jobinfo_eq (const dq_jobinfo_t *a, const dq_jobinfo_t *b)
{
    s_str_eq (a->id, b->id);
    s_str_eq (a->type, b->type);
    s_str_eq (a->name, b->name);
    s_str_eq (a->dag_id, b->dag_id);
    assert_int_equal (a->state, b->state);
    assert_int_equal (a->priority, b->priority);
    assert_int_equal (a->attempts, b->attempts);
    assert_int_equal (a->max_attempts, b->max_attempts);
    s_str_eq (a->worker, b->worker);
    assert_int_equal (a->created_ms, b->created_ms);
    assert_int_equal (a->started_ms, b->started_ms);
    assert_int_equal (a->finished_ms, b->finished_ms);
    s_str_eq (a->error, b->error);
    s_str_eq (a->skipped_by, b->skipped_by);
    assert_int_equal (a->output_size, b->output_size);
    assert_int_equal (a->nparents, b->nparents);
    for (uint32_t i = 0; i < a->nparents; i++) {
        s_str_eq (a->parent_ids [i], b->parent_ids [i]);
        assert_int_equal (a->parent_states [i], b->parent_states [i]);
    }
}

static void
s_typestat_eq (const dq_typestat_t *a, const dq_typestat_t *b)
{
    s_str_eq (a->type, b->type);
    assert_int_equal (a->waiting, b->waiting);
    assert_int_equal (a->queued, b->queued);
    assert_int_equal (a->running, b->running);
    assert_int_equal (a->succeeded, b->succeeded);
    assert_int_equal (a->failed, b->failed);
    assert_int_equal (a->cancelled, b->cancelled);
    assert_int_equal (a->skipped, b->skipped);
    assert_int_equal (a->workers, b->workers);
}

static void
s_workerinfo_eq (const dq_workerinfo_t *a, const dq_workerinfo_t *b)
{
    s_str_eq (a->id, b->id);
    s_str_eq (a->name, b->name);
    s_str_eq (a->host, b->host);
    assert_int_equal (a->pid, b->pid);
    assert_int_equal (a->capacity, b->capacity);
    assert_int_equal (a->inflight, b->inflight);
    assert_int_equal (a->last_seen_ms, b->last_seen_ms);
    assert_int_equal (a->done, b->done);
    s_strs_eq (a->types, a->ntypes, b->types, b->ntypes);
}

static void
s_daginfo_eq (const dq_daginfo_t *a, const dq_daginfo_t *b)
{
    if (!a) {
        assert_null (b);
        return;
    }
    assert_non_null (b);
    s_str_eq (a->id, b->id);
    s_str_eq (a->name, b->name);
    assert_int_equal (a->state, b->state);
    assert_int_equal (a->total, b->total);
    assert_int_equal (a->waiting, b->waiting);
    assert_int_equal (a->queued, b->queued);
    assert_int_equal (a->running, b->running);
    assert_int_equal (a->succeeded, b->succeeded);
    assert_int_equal (a->failed, b->failed);
    assert_int_equal (a->cancelled, b->cancelled);
    assert_int_equal (a->skipped, b->skipped);
    assert_int_equal (a->created_ms, b->created_ms);
    assert_int_equal (a->finished_ms, b->finished_ms);
}

//  Every field of dq_msg_t. capacity is compared as sent: a READY always
//  carries it, other commands omit 0.
static void
s_msg_eq (const dq_msg_t *a, const dq_msg_t *b)
{
    assert_int_equal (a->cmd, b->cmd);
    assert_int_equal (a->rid, b->rid);
    s_str_eq (a->id, b->id);
    s_strs_eq (a->ids, a->nids, b->ids, b->nids);
    s_str_eq (a->key, b->key);
    s_str_eq (a->dag_name, b->dag_name);
    s_str_eq (a->dag_id, b->dag_id);
    assert_int_equal (a->njobs, b->njobs);
    for (uint32_t i = 0; i < a->njobs; i++)
        s_jobspec_eq (&a->jobs [i], &b->jobs [i]);
    s_bin_eq (a->payload, a->payload_size, b->payload, b->payload_size);
    s_str_eq (a->type, b->type);
    s_str_eq (a->content_type, b->content_type);
    s_bin_eq (a->output, a->output_size, b->output, b->output_size);
    s_str_eq (a->error, b->error);
    assert_int_equal (a->state, b->state);
    assert_int_equal (a->ok, b->ok);
    assert_int_equal (a->attempt, b->attempt);
    assert_int_equal (a->timeout_ms, b->timeout_ms);
    assert_int_equal (a->nparents, b->nparents);
    for (uint32_t i = 0; i < a->nparents; i++)
        s_parent_eq (&a->parents [i], &b->parents [i]);
    assert_int_equal (a->code, b->code);
    s_str_eq (a->message, b->message);
    assert_int_equal (a->retry_ms, b->retry_ms);
    assert_int_equal (a->count, b->count);
    s_str_eq (a->name, b->name);
    s_str_eq (a->host, b->host);
    assert_int_equal (a->pid, b->pid);
    assert_int_equal (a->capacity, b->capacity);
    s_strs_eq (a->types, a->ntypes, b->types, b->ntypes);
    s_strs_eq (a->running, a->nrunning, b->running, b->nrunning);
    assert_int_equal (a->heartbeat_ms, b->heartbeat_ms);
    assert_int_equal (a->liveness, b->liveness);
    s_str_eq (a->broker_id, b->broker_id);
    s_str_eq (a->worker_id, b->worker_id);
    assert_int_equal (a->ninfos, b->ninfos);
    for (uint32_t i = 0; i < a->ninfos; i++)
        s_jobinfo_eq (&a->infos [i], &b->infos [i]);
    assert_int_equal (a->ntypestats, b->ntypestats);
    for (uint32_t i = 0; i < a->ntypestats; i++)
        s_typestat_eq (&a->typestats [i], &b->typestats [i]);
    assert_int_equal (a->nworkers, b->nworkers);
    for (uint32_t i = 0; i < a->nworkers; i++)
        s_workerinfo_eq (&a->workers [i], &b->workers [i]);
    s_daginfo_eq (a->dag, b->dag);
    assert_int_equal (a->uptime_ms, b->uptime_ms);
    assert_int_equal (a->jobs_total, b->jobs_total);
    assert_int_equal (a->jobs_in_memory, b->jobs_in_memory);
    assert_int_equal (a->queued_bytes, b->queued_bytes);
    assert_int_equal (a->workers_total, b->workers_total);
    assert_int_equal (a->ndispatch_hist, b->ndispatch_hist);
    for (uint32_t i = 0; i < a->ndispatch_hist; i++)
        assert_int_equal (a->dispatch_hist [i], b->dispatch_hist [i]);
    assert_int_equal (a->nsync_hist, b->nsync_hist);
    for (uint32_t i = 0; i < a->nsync_hist; i++)
        assert_int_equal (a->sync_hist [i], b->sync_hist [i]);
}

//  A message with every field set, valid for every command (the fields a
//  command needs are all there). Storage lives in the struct.
typedef struct {
    dq_msg_t msg;
    uint8_t payload [256];      //  every byte value, NULs included
    uint8_t output [300];
    const char *ids [3];
    dq_dep_t deps1 [4], deps2 [2];
    dq_jobspec_t jobs [3];
    dq_parent_t parents [3];
    const char *pids [3];
    int pstates [3];
    dq_jobinfo_t infos [2];
    dq_typestat_t typestats [2];
    const char *wtypes [3];
    dq_workerinfo_t workers [2];
    dq_daginfo_t dag;
    const char *types [3];
    const char *running [2];
    uint64_t hist [DQ_PROTO_HIST_BUCKETS];
} full_t;

static void
s_full_init (full_t *f, dq_cmd_t cmd)
{
    memset (f, 0, sizeof *f);
    for (int i = 0; i < 256; i++)
        f->payload [i] = (uint8_t) i;
    for (int i = 0; i < 300; i++)
        f->output [i] = (uint8_t) (i % 3 == 0? 0: i * 7);
    dq_msg_t *m = &f->msg;
    dq_msg_init (m, cmd);
    m->rid = UINT64_MAX;
    m->id = "b7f3a-42";
    f->ids [0] = "b7f3a-1";
    f->ids [1] = "";
    f->ids [2] = "b7f3a-3";
    m->ids = f->ids;
    m->nids = 3;
    m->key = "submission-key";
    m->dag_name = "nightly";
    m->dag_id = "b7f3a-d7";

    //  Deps: local (idx, including 0) and existing (id), both flavours of
    //  run_on_failure.
    f->deps1 [0] = (dq_dep_t) { .idx = 0 };
    f->deps1 [1] = (dq_dep_t) { .idx = -1, .id = "b7f3a-9", .run_on_failure = true };
    f->deps1 [2] = (dq_dep_t) { .idx = 2, .run_on_failure = true };
    f->deps1 [3] = (dq_dep_t) { .idx = -1, .id = "b7f3a-10" };
    f->deps2 [0] = (dq_dep_t) { .idx = 1 };
    f->deps2 [1] = (dq_dep_t) { .idx = 0, .run_on_failure = true };
    f->jobs [0] = (dq_jobspec_t) {
        .type = "echo", .payload = f->payload, .payload_size = sizeof f->payload,
        .content_type = "application/octet-stream", .name = "first", .key = "k0",
        .priority = -5, .attempts = 7, .timeout_ms = UINT32_MAX,
        .delay_ms = UINT64_MAX / 2 };
    f->jobs [1] = (dq_jobspec_t) {
        .type = "sha256", .payload = "abc", .payload_size = 3,
        .priority = INT32_MAX, .attempts = 1, .timeout_ms = 1, .delay_ms = 1,
        .deps = f->deps1, .ndeps = 4 };
    f->jobs [2] = (dq_jobspec_t) {
        .type = "A-z_0.9:x", .payload = "", .payload_size = 0,
        .priority = INT32_MIN, .deps = f->deps2, .ndeps = 2 };
    m->jobs = f->jobs;
    m->njobs = 3;

    m->payload = f->payload;
    m->payload_size = sizeof f->payload;
    m->type = "echo";
    m->content_type = "text/plain; charset=utf-8";
    m->output = f->output;
    m->output_size = sizeof f->output;
    m->error = "exit status 3: \xe2\x9c\x97 failed";
    m->state = DQ_STATE_SKIPPED;
    m->ok = true;
    m->attempt = 3;
    m->timeout_ms = 30000;
    f->parents [0] = (dq_parent_t) { .id = "b7f3a-1", .name = "fetch",
                                     .output = f->output, .output_size = 10 };
    f->parents [1] = (dq_parent_t) { .id = "b7f3a-2" };
    f->parents [2] = (dq_parent_t) { .id = "(expired)", .name = "", .output = "\0\0",
                                     .output_size = 2 };
    m->parents = f->parents;
    m->nparents = 3;
    m->code = DQ_ERR_BUSY;
    m->message = "queue full";
    m->retry_ms = 250;
    m->count = UINT64_MAX;
    m->name = "worker-a";
    m->host = "host.example";
    m->pid = UINT32_MAX;
    m->capacity = 64;
    f->types [0] = "echo";
    f->types [1] = "sleep";
    f->types [2] = "x:y.z-1_2";
    m->types = f->types;
    m->ntypes = 3;
    f->running [0] = "b7f3a-5";
    f->running [1] = "b7f3a-6";
    m->running = f->running;
    m->nrunning = 2;
    m->heartbeat_ms = 1000;
    m->liveness = 3;
    m->broker_id = "b7f3a";
    m->worker_id = "w12";

    f->pids [0] = "b7f3a-1";
    f->pids [1] = "b7f3a-2";
    f->pids [2] = "b7f3a-3";
    f->pstates [0] = DQ_STATE_SUCCEEDED;
    f->pstates [1] = DQ_STATE_WAITING;
    f->pstates [2] = DQ_STATE_SKIPPED;
    f->infos [0] = (dq_jobinfo_t) {
        .id = "b7f3a-4", .type = "echo", .name = "n", .dag_id = "b7f3a-d7",
        .state = DQ_STATE_FAILED, .priority = -1, .attempts = 3, .max_attempts = 3,
        .worker = "w12", .created_ms = 1700000000000ULL, .started_ms = 1700000000001ULL,
        .finished_ms = UINT64_MAX, .error = "boom", .skipped_by = "b7f3a-0",
        .output_size = SIZE_MAX, .parent_ids = f->pids, .parent_states = f->pstates,
        .nparents = 3 };
    f->infos [1] = (dq_jobinfo_t) { .id = "b7f3a-5" };   //  everything else zero
    m->infos = f->infos;
    m->ninfos = 2;
    f->typestats [0] = (dq_typestat_t) {
        .type = "echo", .waiting = 1, .queued = 2, .running = 3, .succeeded = 4,
        .failed = 5, .cancelled = 6, .skipped = UINT64_MAX, .workers = 8 };
    f->typestats [1] = (dq_typestat_t) { .type = "idle" };
    m->typestats = f->typestats;
    m->ntypestats = 2;
    f->wtypes [0] = "echo";
    f->wtypes [1] = "sha256";
    f->wtypes [2] = "fail";
    f->workers [0] = (dq_workerinfo_t) {
        .id = "w1", .name = "alpha", .host = "h1", .pid = 1234, .capacity = 64,
        .inflight = 63, .last_seen_ms = 1700000000000ULL, .done = UINT64_MAX,
        .types = f->wtypes, .ntypes = 3 };
    f->workers [1] = (dq_workerinfo_t) { .id = "w2", .capacity = 0 };
    m->workers = f->workers;
    m->nworkers = 2;
    f->dag = (dq_daginfo_t) {
        .id = "b7f3a-d7", .name = "nightly", .state = DQ_STATE_RUNNING,
        .total = UINT32_MAX, .waiting = 1, .queued = 2, .running = 3,
        .succeeded = 4, .failed = 5, .cancelled = 6, .skipped = 7,
        .created_ms = 1, .finished_ms = UINT64_MAX };
    m->dag = &f->dag;
    m->uptime_ms = 123456789;
    m->jobs_total = 1000000;
    m->jobs_in_memory = 4321;
    m->queued_bytes = UINT64_MAX;
    m->workers_total = 3;
    for (int i = 0; i < DQ_PROTO_HIST_BUCKETS; i++)
        f->hist [i] = (uint64_t) i * 1000 + (i == 5? UINT64_MAX / 2: 0);
    m->dispatch_hist = f->hist;
    m->ndispatch_hist = DQ_PROTO_HIST_BUCKETS;
    m->sync_hist = f->hist + 1;
    m->nsync_hist = DQ_PROTO_HIST_BUCKETS - 1;
}

static void
s_encode (const dq_msg_t *msg, void **body, size_t *size)
{
    assert_int_equal (dq_msg_encode (msg, body, size), 0);
}

//  ---------------------------------------------------------------------------
//  Names

//  Latency histograms: a bucket holds values up to its bound.
static void
test_proto_hist_bucket (void **state)
{
    (void) state;
    assert_int_equal (dq_proto_hist_bucket (0), 0);
    assert_int_equal (dq_proto_hist_bucket (1), 0);
    assert_int_equal (dq_proto_hist_bucket (2), 1);
    assert_int_equal (dq_proto_hist_bucket (3), 2);
    assert_int_equal (dq_proto_hist_bucket (10000), DQ_PROTO_HIST_BUCKETS - 2);
    assert_int_equal (dq_proto_hist_bucket (10001), DQ_PROTO_HIST_BUCKETS - 1);
    assert_int_equal (dq_proto_hist_bucket (UINT64_MAX), DQ_PROTO_HIST_BUCKETS - 1);
}

static void
test_proto_names (void **state)
{
    (void) state;
    assert_string_equal (dq_err_str (DQ_OK), "ok");
    assert_string_equal (dq_err_str (DQ_ERR_INVALID), "invalid");
    assert_string_equal (dq_err_str (DQ_ERR_STORE_FULL), "store_full");
    assert_string_equal (dq_err_str (-1), "unknown");
    assert_string_equal (dq_err_str (DQ_ERR_COUNT_), "unknown");
    assert_string_equal (dq_cmd_str (DQ_CMD_SUBMIT), "SUBMIT");
    assert_string_equal (dq_cmd_str (DQ_CMD_STATS_REPLY), "STATS_REPLY");
    assert_string_equal (dq_cmd_str (DQ_CMD_BYE), "BYE");
    assert_string_equal (dq_cmd_str (DQ_CMD_COUNT_), "UNKNOWN");
    for (int s = 0; s < DQ_STATE_COUNT_; s++) {
        assert_int_equal (dq_state_parse (dq_state_str (s)), s);
        assert_int_equal (dq_state_is_terminal (s), s >= DQ_STATE_SUCCEEDED);
    }
    assert_string_equal (dq_state_str (DQ_STATE_COUNT_), "unknown");
    assert_int_equal (dq_state_parse ("bogus"), -1);
    assert_int_equal (dq_state_parse (NULL), -1);
    assert_false (dq_state_is_terminal (-1));
    assert_false (dq_state_is_terminal (DQ_STATE_COUNT_));
    //  Every command has a distinct wire name.
    for (int a = 1; a < DQ_CMD_COUNT_; a++)
        for (int b = a + 1; b < DQ_CMD_COUNT_; b++)
            assert_string_not_equal (dq_cmd_str ((dq_cmd_t) a), dq_cmd_str ((dq_cmd_t) b));
}

//  ---------------------------------------------------------------------------
//  Round trips

static void
test_proto_roundtrip_every_command_full (void **state)
{
    (void) state;
    full_t *f = malloc (sizeof *f);
    assert_non_null (f);
    for (int c = 1; c < DQ_CMD_COUNT_; c++) {
        s_full_init (f, (dq_cmd_t) c);
        dq_msg_t *out = s_roundtrip (&f->msg);
        s_msg_eq (&f->msg, out);
        //  Borrowed strings point into the message, not into the sender.
        assert_ptr_not_equal (out->id, f->msg.id);
        dq_msg_destroy (&out);
        assert_null (out);
    }
    free (f);
}

//  Each command with only the fields it needs: everything else comes back
//  zero, NULL or empty.
static void
test_proto_roundtrip_every_command_minimal (void **state)
{
    (void) state;
    for (int c = 1; c < DQ_CMD_COUNT_; c++) {
        dq_msg_t in;
        dq_msg_init (&in, (dq_cmd_t) c);
        dq_jobspec_t job = { .type = "echo" };
        const char *ids [1] = { "x-1" };
        switch (c) {
            case DQ_CMD_SUBMIT: in.jobs = &job; in.njobs = 1; break;
            case DQ_CMD_STATUS: in.ids = ids; in.nids = 1; break;
            case DQ_CMD_RESULT: case DQ_CMD_CANCEL: case DQ_CMD_DAG:
            case DQ_CMD_DONE: case DQ_CMD_ABANDON: in.id = "x-1"; break;
            case DQ_CMD_JOB: in.id = "x-1"; in.type = "echo"; break;
            default: break;
        }
        dq_msg_t *out = s_roundtrip (&in);
        s_msg_eq (&in, out);
        assert_null (out->dag_name);
        assert_null (out->dag);
        assert_null (out->payload);
        assert_int_equal (out->payload_size, 0);
        assert_null (out->infos);
        assert_false (out->ok);
        if (c == DQ_CMD_SUBMIT) {
            assert_int_equal (out->jobs [0].priority, 0);
            assert_int_equal (out->jobs [0].attempts, 0);
            assert_null (out->jobs [0].deps);
            assert_null (out->jobs [0].payload);
            assert_int_equal (out->jobs [0].payload_size, 0);
        }
        dq_msg_destroy (&out);
    }
}

//  STATUS asks for at most DQ_PROTO_STATUS_IDS_MAX ids: one more is refused
//  as too big, whatever the broker's other limits.
static void
test_proto_status_ids_cap (void **state)
{
    (void) state;
    uint32_t n = DQ_PROTO_STATUS_IDS_MAX + 1;
    const char **ids = calloc (n, sizeof *ids);
    assert_non_null (ids);
    for (uint32_t i = 0; i < n; i++)
        ids [i] = "x-1";
    dq_msg_t in;
    dq_msg_init (&in, DQ_CMD_STATUS);
    in.ids = ids;
    in.nids = n - 1;
    dq_msg_t *out = s_roundtrip (&in);
    assert_int_equal (out->nids, DQ_PROTO_STATUS_IDS_MAX);
    dq_msg_destroy (&out);
    in.nids = n;
    void *body = NULL;
    size_t size = 0;
    assert_int_equal (dq_msg_encode (&in, &body, &size), 0);
    s_expect_fail (DQ_CMD_STATUS, body, size, DQ_ERR_TOO_BIG);
    free (body);
    free (ids);
}

//  Absent fields are omitted by the encoder: a HEARTBEAT is {"rid": 0}, a
//  draining READY still carries capacity 0.
static void
test_proto_encode_omits_absent (void **state)
{
    (void) state;
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_HEARTBEAT);
    void *body;
    size_t size;
    s_encode (&msg, &body, &size);
    static const uint8_t heartbeat [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x00 };
    assert_int_equal (size, sizeof heartbeat);
    assert_memory_equal (body, heartbeat, size);
    free (body);

    dq_msg_init (&msg, DQ_CMD_READY);
    s_encode (&msg, &body, &size);
    assert_non_null (memmem (body, size, "capacity", 8));
    dq_msg_t *out = s_expect_ok (DQ_CMD_READY, body, size);
    assert_int_equal (out->capacity, 0);
    dq_msg_destroy (&out);
    free (body);

    dq_msg_init (&msg, DQ_CMD_WELCOME);
    s_encode (&msg, &body, &size);
    assert_null (memmem (body, size, "capacity", 8));
    free (body);

    //  An empty dag_name is still "present": it makes a DAG.
    dq_jobspec_t job = { .type = "t" };
    dq_msg_init (&msg, DQ_CMD_SUBMIT);
    msg.jobs = &job;
    msg.njobs = 1;
    msg.dag_name = "";
    out = s_roundtrip (&msg);
    assert_non_null (out->dag_name);
    assert_string_equal (out->dag_name, "");
    dq_msg_destroy (&out);

    dq_msg_destroy (&out);      //  NULL-safe, twice
    dq_msg_destroy (NULL);
}

//  A body with only rid decodes with every other field zero.
static void
test_proto_absent_is_zero (void **state)
{
    (void) state;
    static const uint8_t body [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x07 };
    for (int c = 1; c < DQ_CMD_COUNT_; c++) {
        if (c == DQ_CMD_SUBMIT || c == DQ_CMD_STATUS || c == DQ_CMD_RESULT
        ||  c == DQ_CMD_CANCEL || c == DQ_CMD_DAG || c == DQ_CMD_DONE
        ||  c == DQ_CMD_ABANDON || c == DQ_CMD_JOB) {
            s_expect_fail ((dq_cmd_t) c, body, sizeof body, DQ_ERR_INVALID);
            continue;
        }
        dq_msg_t *out = s_expect_ok ((dq_cmd_t) c, body, sizeof body);
        dq_msg_t zero;
        dq_msg_init (&zero, (dq_cmd_t) c);
        zero.rid = 7;
        s_msg_eq (&zero, out);
        dq_msg_destroy (&out);
    }
}

//  Dependencies: idx 0 is a real index; an id wins over idx in the C struct
//  (a zero-initialised dq_dep_t with only id set is an existing-job dep).
static void
test_proto_dep_forms (void **state)
{
    (void) state;
    dq_dep_t deps [3] = {
        { .idx = 0 },
        { .id = "b7f3a-1" },                    //  idx left 0
        { .idx = 5, .id = "b7f3a-2", .run_on_failure = true },
    };
    dq_jobspec_t jobs [2] = { { .type = "a" }, { .type = "b", .deps = deps, .ndeps = 3 } };
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_SUBMIT);
    msg.jobs = jobs;
    msg.njobs = 2;
    dq_msg_t *out = s_roundtrip (&msg);
    assert_int_equal (out->jobs [1].ndeps, 3);
    assert_int_equal (out->jobs [1].deps [0].idx, 0);
    assert_null (out->jobs [1].deps [0].id);
    assert_int_equal (out->jobs [1].deps [1].idx, -1);
    assert_string_equal (out->jobs [1].deps [1].id, "b7f3a-1");
    assert_int_equal (out->jobs [1].deps [2].idx, -1);
    assert_string_equal (out->jobs [1].deps [2].id, "b7f3a-2");
    assert_true (out->jobs [1].deps [2].run_on_failure);
    dq_msg_destroy (&out);
}

//  ---------------------------------------------------------------------------
//  Hand-packed bodies

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} pack_t;

static void
s_pack_init (pack_t *p)
{
    msgpack_sbuffer_init (&p->sb);
    msgpack_packer_init (&p->pk, &p->sb, msgpack_sbuffer_write);
}

static void
s_pack_fini (pack_t *p)
{
    msgpack_sbuffer_destroy (&p->sb);
}

static void
s_pk_str (msgpack_packer *pk, const char *s)
{
    size_t len = strlen (s);
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, s, len);
}

static void
s_pk_strn (msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, s, len);
}

static void
s_pk_bin (msgpack_packer *pk, const void *b, size_t len)
{
    msgpack_pack_bin (pk, len);
    msgpack_pack_bin_body (pk, b, len);
}

//  Values used as wrong (or right) field contents.
typedef enum {
    V_NIL, V_TRUE, V_FALSE, V_ZERO, V_THREE, V_SEVEN, V_NEG1, V_NEG7, V_2P31, V_NEG2P31M1,
    V_2P32, V_U64MAX, V_FLOAT, V_STR, V_STR_NUL, V_STR_TYPE, V_BIN, V_EXT,
    V_ARR_EMPTY, V_ARR_INT, V_ARR_NIL, V_ARR_STR, V_ARR_BIN, V_ARR_ARR, V_ARR_NEG,
    V_ARR_8, V_ARR_FLOAT, V_ARR_STR_NUL, V_ARR_MAP_EMPTY, V_ARR_MAP_INTKEY,
    V_MAP_EMPTY, V_MAP_INTKEY, V_END = -1
} val_t;

static void
s_pk_val (msgpack_packer *pk, val_t v)
{
    switch (v) {
        case V_NIL: msgpack_pack_nil (pk); break;
        case V_TRUE: msgpack_pack_true (pk); break;
        case V_FALSE: msgpack_pack_false (pk); break;
        case V_ZERO: msgpack_pack_uint64 (pk, 0); break;
        case V_THREE: msgpack_pack_uint64 (pk, 3); break;
        case V_SEVEN: msgpack_pack_uint64 (pk, 7); break;
        case V_NEG1: msgpack_pack_int64 (pk, -1); break;
        case V_NEG7: msgpack_pack_int64 (pk, -7); break;
        case V_2P31: msgpack_pack_uint64 (pk, 1ULL << 31); break;
        case V_NEG2P31M1: msgpack_pack_int64 (pk, -(1LL << 31) - 1); break;
        case V_2P32: msgpack_pack_uint64 (pk, 1ULL << 32); break;
        case V_U64MAX: msgpack_pack_uint64 (pk, UINT64_MAX); break;
        case V_FLOAT: msgpack_pack_double (pk, 1.5); break;
        case V_STR: s_pk_str (pk, "ok"); break;
        case V_STR_NUL: s_pk_strn (pk, "a\0b", 3); break;
        case V_STR_TYPE: s_pk_str (pk, "echo"); break;
        case V_BIN: s_pk_bin (pk, "b\0", 2); break;
        case V_EXT:
            msgpack_pack_ext (pk, 2, 5);
            msgpack_pack_ext_body (pk, "ab", 2);
            break;
        case V_ARR_EMPTY: msgpack_pack_array (pk, 0); break;
        case V_ARR_INT: msgpack_pack_array (pk, 1); msgpack_pack_uint64 (pk, 1); break;
        case V_ARR_NIL: msgpack_pack_array (pk, 1); msgpack_pack_nil (pk); break;
        case V_ARR_STR: msgpack_pack_array (pk, 1); s_pk_str (pk, "echo"); break;
        case V_ARR_BIN: msgpack_pack_array (pk, 1); s_pk_bin (pk, "x", 1); break;
        case V_ARR_ARR: msgpack_pack_array (pk, 1); msgpack_pack_array (pk, 0); break;
        case V_ARR_NEG: msgpack_pack_array (pk, 1); msgpack_pack_int64 (pk, -1); break;
        case V_ARR_8: msgpack_pack_array (pk, 1); msgpack_pack_uint64 (pk, 8); break;
        case V_ARR_FLOAT: msgpack_pack_array (pk, 1); msgpack_pack_double (pk, 2.5); break;
        case V_ARR_STR_NUL: msgpack_pack_array (pk, 1); s_pk_strn (pk, "\0", 1); break;
        case V_ARR_MAP_EMPTY: msgpack_pack_array (pk, 1); msgpack_pack_map (pk, 0); break;
        case V_ARR_MAP_INTKEY:
            msgpack_pack_array (pk, 1);
            msgpack_pack_map (pk, 1);
            msgpack_pack_uint64 (pk, 1);
            msgpack_pack_uint64 (pk, 1);
            break;
        case V_MAP_EMPTY: msgpack_pack_map (pk, 0); break;
        case V_MAP_INTKEY:
            msgpack_pack_map (pk, 1);
            msgpack_pack_uint64 (pk, 1);
            msgpack_pack_uint64 (pk, 1);
            break;
        case V_END: break;
    }
}

//  Field kinds, each with a value it accepts and values it must refuse.
typedef enum {
    K_U64, K_U32, K_I32, K_IDX, K_STATE, K_STR, K_BIN, K_BOOL, K_STRS, K_RECS,
    K_MAP, K_STATES, K_U64S
} kind_t;

typedef struct {
    val_t good;
    val_t bad [24];
} kind_vals_t;

static const kind_vals_t s_kind_vals [] = {
    [K_U64] = { V_SEVEN, { V_NIL, V_TRUE, V_NEG1, V_FLOAT, V_STR, V_BIN, V_EXT,
                           V_ARR_EMPTY, V_MAP_EMPTY, V_END } },
    [K_U32] = { V_SEVEN, { V_NIL, V_TRUE, V_NEG1, V_2P32, V_U64MAX, V_FLOAT, V_STR,
                           V_BIN, V_EXT, V_ARR_EMPTY, V_MAP_EMPTY, V_END } },
    [K_I32] = { V_NEG7, { V_NIL, V_FALSE, V_2P31, V_NEG2P31M1, V_U64MAX, V_FLOAT,
                          V_STR, V_BIN, V_EXT, V_ARR_INT, V_MAP_EMPTY, V_END } },
    [K_IDX] = { V_ZERO, { V_NIL, V_TRUE, V_NEG1, V_2P31, V_FLOAT, V_STR, V_BIN,
                          V_EXT, V_ARR_INT, V_MAP_EMPTY, V_END } },
    [K_STATE] = { V_THREE, { V_NIL, V_TRUE, V_NEG1, V_SEVEN, V_2P32,
                          V_FLOAT, V_STR, V_BIN, V_EXT, V_ARR_INT, V_MAP_EMPTY, V_END } },
    [K_STR] = { V_STR, { V_NIL, V_TRUE, V_ZERO, V_NEG1, V_FLOAT, V_BIN, V_EXT,
                         V_STR_NUL, V_ARR_STR, V_MAP_EMPTY, V_END } },
    [K_BIN] = { V_BIN, { V_NIL, V_FALSE, V_SEVEN, V_NEG1, V_FLOAT, V_EXT,
                         V_ARR_BIN, V_MAP_EMPTY, V_END } },
    [K_BOOL] = { V_TRUE, { V_NIL, V_ZERO, V_SEVEN, V_FLOAT, V_STR, V_BIN, V_EXT,
                           V_ARR_EMPTY, V_MAP_EMPTY, V_END } },
    [K_STRS] = { V_ARR_EMPTY, { V_NIL, V_TRUE, V_SEVEN, V_STR, V_BIN, V_MAP_EMPTY,
                                V_ARR_INT, V_ARR_NIL, V_ARR_BIN, V_ARR_ARR,
                                V_ARR_STR_NUL, V_ARR_MAP_EMPTY, V_END } },
    [K_RECS] = { V_ARR_EMPTY, { V_NIL, V_TRUE, V_SEVEN, V_STR, V_BIN, V_MAP_EMPTY,
                                V_ARR_INT, V_ARR_NIL, V_ARR_STR, V_ARR_ARR,
                                V_ARR_MAP_INTKEY, V_END } },
    [K_MAP] = { V_MAP_EMPTY, { V_NIL, V_TRUE, V_SEVEN, V_STR, V_BIN, V_ARR_EMPTY,
                               V_ARR_MAP_EMPTY, V_MAP_INTKEY, V_END } },
    [K_STATES] = { V_ARR_EMPTY, { V_NIL, V_TRUE, V_SEVEN, V_STR, V_MAP_EMPTY,
                                  V_ARR_NEG, V_ARR_8, V_ARR_NIL, V_ARR_STR,
                                  V_ARR_FLOAT, V_END } },
    [K_U64S] = { V_ARR_EMPTY, { V_NIL, V_TRUE, V_SEVEN, V_STR, V_MAP_EMPTY,
                                V_ARR_NEG, V_ARR_NIL, V_ARR_STR, V_ARR_FLOAT, V_END } },
};

typedef struct {
    const char *key;
    kind_t kind;
} field_t;

//  Where a field lives: the top-level body or a nested record.
typedef enum {
    C_TOP, C_JOB, C_DEP, C_PARENT, C_INFO, C_TYPESTAT, C_WORKER, C_DAG
} ctx_t;

static const field_t s_top_fields [] = {
    { "rid", K_U64 }, { "id", K_STR }, { "ids", K_STRS }, { "key", K_STR },
    { "dag_name", K_STR }, { "dag_id", K_STR }, { "jobs", K_RECS },
    { "payload", K_BIN }, { "type", K_STR }, { "content_type", K_STR },
    { "output", K_BIN }, { "error", K_STR }, { "state", K_STATE }, { "ok", K_BOOL },
    { "attempt", K_U32 }, { "timeout_ms", K_U32 }, { "parents", K_RECS },
    { "code", K_U32 }, { "message", K_STR }, { "retry_ms", K_U32 },
    { "count", K_U64 }, { "name", K_STR }, { "host", K_STR }, { "pid", K_U32 },
    { "capacity", K_U32 }, { "types", K_STRS }, { "running", K_STRS },
    { "heartbeat_ms", K_U32 }, { "liveness", K_U32 }, { "broker_id", K_STR },
    { "worker_id", K_STR }, { "infos", K_RECS }, { "typestats", K_RECS },
    { "workers", K_RECS }, { "dag", K_MAP }, { "uptime_ms", K_U64 },
    { "jobs_total", K_U64 }, { "jobs_in_memory", K_U64 }, { "queued_bytes", K_U64 }, { "workers_total", K_U64 },
    { "dispatch_hist", K_U64S }, { "sync_hist", K_U64S }, { NULL, 0 }
};
static const field_t s_job_fields [] = {
    { "type", K_STR }, { "payload", K_BIN }, { "content_type", K_STR },
    { "name", K_STR }, { "key", K_STR }, { "priority", K_I32 },
    { "attempts", K_U32 }, { "timeout_ms", K_U32 }, { "delay_ms", K_U64 },
    { "deps", K_RECS }, { NULL, 0 }
};
static const field_t s_dep_fields [] = {
    { "idx", K_IDX }, { "id", K_STR }, { "run_on_failure", K_BOOL }, { NULL, 0 }
};
static const field_t s_parent_fields [] = {
    { "id", K_STR }, { "name", K_STR }, { "output", K_BIN }, { NULL, 0 }
};
static const field_t s_info_fields [] = {
    { "id", K_STR }, { "type", K_STR }, { "name", K_STR }, { "dag_id", K_STR },
    { "state", K_STATE }, { "priority", K_I32 }, { "attempts", K_U32 },
    { "max_attempts", K_U32 }, { "worker", K_STR }, { "created_ms", K_U64 },
    { "started_ms", K_U64 }, { "finished_ms", K_U64 }, { "error", K_STR },
    { "skipped_by", K_STR }, { "output_size", K_U64 }, { "parent_ids", K_STRS },
    { "parent_states", K_STATES }, { NULL, 0 }
};
static const field_t s_typestat_fields [] = {
    { "type", K_STR }, { "waiting", K_U64 }, { "queued", K_U64 },
    { "running", K_U64 }, { "succeeded", K_U64 }, { "failed", K_U64 },
    { "cancelled", K_U64 }, { "skipped", K_U64 }, { "workers", K_U32 }, { NULL, 0 }
};
static const field_t s_worker_fields [] = {
    { "id", K_STR }, { "name", K_STR }, { "host", K_STR }, { "pid", K_U32 },
    { "capacity", K_U32 }, { "inflight", K_U32 }, { "last_seen_ms", K_U64 },
    { "done", K_U64 }, { "types", K_STRS }, { NULL, 0 }
};
static const field_t s_dag_fields [] = {
    { "id", K_STR }, { "name", K_STR }, { "state", K_STATE }, { "total", K_U32 },
    { "waiting", K_U32 }, { "queued", K_U32 }, { "running", K_U32 },
    { "succeeded", K_U32 }, { "failed", K_U32 }, { "cancelled", K_U32 },
    { "skipped", K_U32 }, { "created_ms", K_U64 }, { "finished_ms", K_U64 },
    { NULL, 0 }
};

//  Pack a body that is valid except for key = value inside the record that
//  ctx names. Returns the command to decode it as.
static dq_cmd_t
s_pack_with (pack_t *p, ctx_t ctx, const char *key, val_t v)
{
    msgpack_packer *pk = &p->pk;
    switch (ctx) {
        case C_TOP:
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return DQ_CMD_STATS;
        case C_JOB:
            msgpack_pack_map (pk, 2);
            s_pk_str (pk, "rid");
            msgpack_pack_uint64 (pk, 1);
            s_pk_str (pk, "jobs");
            msgpack_pack_array (pk, 1);
            msgpack_pack_map (pk, 2);
            s_pk_str (pk, "type");
            s_pk_str (pk, "echo");
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return DQ_CMD_SUBMIT;
        case C_DEP: {
            //  The dep needs exactly one of idx and id: supply idx unless
            //  the field under test is one of them.
            bool form = strcmp (key, "idx") == 0 || strcmp (key, "id") == 0;
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, "jobs");
            msgpack_pack_array (pk, 2);
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, "type");
            s_pk_str (pk, "a");
            msgpack_pack_map (pk, 2);
            s_pk_str (pk, "type");
            s_pk_str (pk, "b");
            s_pk_str (pk, "deps");
            msgpack_pack_array (pk, 1);
            msgpack_pack_map (pk, form? 1: 2);
            if (!form) {
                s_pk_str (pk, "idx");
                msgpack_pack_uint64 (pk, 0);
            }
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return DQ_CMD_SUBMIT;
        }
        case C_PARENT:
            msgpack_pack_map (pk, 3);
            s_pk_str (pk, "id");
            s_pk_str (pk, "j-1");
            s_pk_str (pk, "type");
            s_pk_str (pk, "echo");
            s_pk_str (pk, "parents");
            msgpack_pack_array (pk, 1);
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return DQ_CMD_JOB;
        case C_INFO:
        case C_TYPESTAT:
        case C_WORKER:
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, ctx == C_INFO? "infos": ctx == C_TYPESTAT? "typestats": "workers");
            msgpack_pack_array (pk, 1);
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return ctx == C_INFO? DQ_CMD_JOBS: DQ_CMD_STATS_REPLY;
        case C_DAG:
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, "dag");
            msgpack_pack_map (pk, 1);
            s_pk_str (pk, key);
            s_pk_val (pk, v);
            return DQ_CMD_DAG_INFO;
    }
    return DQ_CMD_NONE;
}

static void
s_check_fields (ctx_t ctx, const field_t *fields, int *checked)
{
    for (const field_t *f = fields; f->key; f++) {
        const kind_vals_t *kv = &s_kind_vals [f->kind];
        //  The right type is accepted...
        pack_t p;
        s_pack_init (&p);
        dq_cmd_t cmd = s_pack_with (&p, ctx, f->key, kv->good);
        dq_msg_t *msg = s_expect_ok (cmd, p.sb.data, p.sb.size);
        dq_msg_destroy (&msg);
        s_pack_fini (&p);
        //  ...and every wrong one refused.
        for (const val_t *v = kv->bad; *v != V_END; v++) {
            s_pack_init (&p);
            cmd = s_pack_with (&p, ctx, f->key, *v);
            dq_err_t err = DQ_OK;
            msg = s_decode (cmd, p.sb.data, p.sb.size, &err);
            if (msg)
                fail_msg ("context %d field '%s' accepted bad value %d", (int) ctx,
                          f->key, (int) *v);
            assert_int_equal (err, DQ_ERR_INVALID);
            s_pack_fini (&p);
            (*checked)++;
        }
    }
}

static void
test_proto_wrong_types (void **state)
{
    (void) state;
    int checked = 0;
    s_check_fields (C_TOP, s_top_fields, &checked);
    s_check_fields (C_JOB, s_job_fields, &checked);
    s_check_fields (C_DEP, s_dep_fields, &checked);
    s_check_fields (C_PARENT, s_parent_fields, &checked);
    s_check_fields (C_INFO, s_info_fields, &checked);
    s_check_fields (C_TYPESTAT, s_typestat_fields, &checked);
    s_check_fields (C_WORKER, s_worker_fields, &checked);
    s_check_fields (C_DAG, s_dag_fields, &checked);
    assert_true (checked > 1000);
}

//  Unknown keys are ignored whatever they hold (within the depth limit).
static void
test_proto_unknown_keys_ignored (void **state)
{
    (void) state;
    for (val_t v = V_NIL; v <= V_MAP_INTKEY; v++) {
        for (ctx_t ctx = C_TOP; ctx <= C_DAG; ctx++) {
            pack_t p;
            s_pack_init (&p);
            dq_cmd_t cmd = s_pack_with (&p, ctx, "x_future_field", v);
            dq_msg_t *msg = s_expect_ok (cmd, p.sb.data, p.sb.size);
            dq_msg_destroy (&msg);
            s_pack_fini (&p);
        }
    }
}

static void
test_proto_non_map_body (void **state)
{
    (void) state;
    for (val_t v = V_NIL; v <= V_MAP_INTKEY; v++) {
        if (v == V_MAP_EMPTY)
            continue;
        pack_t p;
        s_pack_init (&p);
        s_pk_val (&p.pk, v);
        s_expect_fail (DQ_CMD_STATS, p.sb.data, p.sb.size, DQ_ERR_INVALID);
        s_pack_fini (&p);
    }
    //  An empty map is a valid STATS body; nothing at all is not.
    static const uint8_t empty_map [] = { 0x80 };
    dq_msg_t *msg = s_expect_ok (DQ_CMD_STATS, empty_map, 1);
    dq_msg_destroy (&msg);
    s_expect_fail (DQ_CMD_STATS, "", 0, DQ_ERR_INVALID);
    dq_err_t err;
    msg = dq_msg_decode (DQ_PROTO_SIGNATURE, 3, "STATS", 5, NULL, 0, &err, NULL);
    assert_null (msg);
    assert_int_equal (err, DQ_ERR_INVALID);
    //  Two values back to back, or trailing bytes, are not one map.
    static const uint8_t two [] = { 0x80, 0x80 };
    s_expect_fail (DQ_CMD_STATS, two, sizeof two, DQ_ERR_INVALID);
    static const uint8_t trailing [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x01, 0xc0 };
    s_expect_fail (DQ_CMD_STATS, trailing, sizeof trailing, DQ_ERR_INVALID);
    //  A reserved byte.
    static const uint8_t reserved [] = { 0x81, 0xa1, 'x', 0xc1 };
    s_expect_fail (DQ_CMD_STATS, reserved, sizeof reserved, DQ_ERR_INVALID);
}

static void
test_proto_non_string_keys (void **state)
{
    (void) state;
    //  Top level: integer, nil, binary, array keys.
    val_t keys [] = { V_SEVEN, V_NIL, V_BIN, V_ARR_EMPTY, V_MAP_EMPTY, V_TRUE, V_FLOAT };
    for (size_t i = 0; i < sizeof keys / sizeof keys [0]; i++) {
        pack_t p;
        s_pack_init (&p);
        msgpack_pack_map (&p.pk, 2);
        s_pk_str (&p.pk, "rid");
        msgpack_pack_uint64 (&p.pk, 1);
        s_pk_val (&p.pk, keys [i]);
        msgpack_pack_uint64 (&p.pk, 1);
        s_expect_fail (DQ_CMD_STATS, p.sb.data, p.sb.size, DQ_ERR_INVALID);
        s_pack_fini (&p);
    }
    //  Nested records: job, dep, dag.
    static const uint8_t job_intkey [] = {
        0x81, 0xa4, 'j', 'o', 'b', 's', 0x91, 0x82,
        0xa4, 't', 'y', 'p', 'e', 0xa1, 'a', 0x01, 0x02 };
    s_expect_fail (DQ_CMD_SUBMIT, job_intkey, sizeof job_intkey, DQ_ERR_INVALID);
    static const uint8_t dep_intkey [] = {
        0x81, 0xa4, 'j', 'o', 'b', 's', 0x91, 0x82,
        0xa4, 't', 'y', 'p', 'e', 0xa1, 'a',
        0xa4, 'd', 'e', 'p', 's', 0x91, 0x82, 0xa3, 'i', 'd', 'x', 0x00, 0x05, 0x05 };
    s_expect_fail (DQ_CMD_SUBMIT, dep_intkey, sizeof dep_intkey, DQ_ERR_INVALID);
    static const uint8_t dag_binkey [] = {
        0x81, 0xa3, 'd', 'a', 'g', 0x81, 0xc4, 0x02, 'i', 'd', 0xa1, 'x' };
    s_expect_fail (DQ_CMD_DAG_INFO, dag_binkey, sizeof dag_binkey, DQ_ERR_INVALID);
}

//  Length headers that claim gigabytes in a small frame are refused at once
//  (ASan would abort on a 4 GiB allocation).
static void
test_proto_huge_declared_lengths (void **state)
{
    (void) state;
    static const uint8_t heads [] = { 0xdb, 0xc6, 0xdd, 0xdf, 0xc9 };
    static const uint32_t lens [] = { 0xffffffffu, 0x7fffffffu, 0x10000000u, 100 };
    for (size_t h = 0; h < sizeof heads; h++) {
        for (size_t l = 0; l < sizeof lens / sizeof lens [0]; l++) {
            uint8_t body [64];
            memset (body, 0xa0, sizeof body);      //  filler: empty strings
            uint32_t n = lens [l];
            //  As the whole body.
            body [0] = heads [h];
            body [1] = (uint8_t) (n >> 24);
            body [2] = (uint8_t) (n >> 16);
            body [3] = (uint8_t) (n >> 8);
            body [4] = (uint8_t) n;
            s_expect_fail (DQ_CMD_STATS, body, sizeof body, DQ_ERR_INVALID);
            //  As a field value: {"payload": <head>...}
            static const uint8_t prefix [] = { 0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd' };
            memcpy (body, prefix, sizeof prefix);
            body [9] = heads [h];
            body [10] = (uint8_t) (n >> 24);
            body [11] = (uint8_t) (n >> 16);
            body [12] = (uint8_t) (n >> 8);
            body [13] = (uint8_t) n;
            s_expect_fail (DQ_CMD_JOB, body, sizeof body, DQ_ERR_INVALID);
            s_expect_fail (DQ_CMD_STATS, body, sizeof body, DQ_ERR_INVALID);
        }
    }
    //  16- and 8-bit headers that overrun: str8, bin8, str16, array16, map16.
    static const uint8_t shorts [][4] = {
        { 0xd9, 0xff, 'a', 'b' }, { 0xc4, 0x10, 0, 0 }, { 0xda, 0xff, 0xff, 'a' },
        { 0xdc, 0xff, 0xff, 0xc0 }, { 0xde, 0x00, 0x02, 0xa0 }, { 0xc7, 0x05, 0x01, 0 },
        { 0xd8, 0x01, 0x00, 0x00 }, { 0xcf, 0x00, 0x00, 0x00 }, { 0xcb, 0x00, 0x00, 0x00 },
    };
    for (size_t i = 0; i < sizeof shorts / sizeof shorts [0]; i++)
        s_expect_fail (DQ_CMD_STATS, shorts [i], 4, DQ_ERR_INVALID);
    //  A fixarray/fixmap that claims more elements than bytes remain.
    static const uint8_t fix [] = { 0x81, 0xa1, 'x', 0x9f, 0xc0 };
    s_expect_fail (DQ_CMD_STATS, fix, sizeof fix, DQ_ERR_INVALID);
    static const uint8_t fixmap [] = { 0x8f, 0xa1, 'x', 0xc0 };
    s_expect_fail (DQ_CMD_STATS, fixmap, sizeof fixmap, DQ_ERR_INVALID);
    //  An array32 of 2^31 nils backed by one byte per element would need
    //  2 GiB: a frame that large is over DQ_PROTO_BODY_MAX anyway, so a small
    //  frame claiming it is simply short.
    uint8_t arr [] = { 0x81, 0xa1, 'x', 0xdd, 0x80, 0x00, 0x00, 0x00, 0xc0, 0xc0 };
    s_expect_fail (DQ_CMD_STATS, arr, sizeof arr, DQ_ERR_INVALID);
}

//  Nesting: 16 levels of containers are allowed, 17 are not, and 1000 are
//  refused without deep recursion.
static void
s_nested (pack_t *p, int levels, bool maps)
{
    //  {"x": [[[...nil...]]]}: the body map is level 1.
    msgpack_pack_map (&p->pk, 1);
    s_pk_str (&p->pk, "x");
    for (int i = 1; i < levels; i++) {
        if (maps) {
            msgpack_pack_map (&p->pk, 1);
            s_pk_str (&p->pk, "a");
        }
        else
            msgpack_pack_array (&p->pk, 1);
    }
    msgpack_pack_nil (&p->pk);
}

static void
test_proto_deep_nesting (void **state)
{
    (void) state;
    for (int maps = 0; maps < 2; maps++) {
        pack_t p;
        s_pack_init (&p);
        s_nested (&p, 16, maps);
        dq_msg_t *msg = s_expect_ok (DQ_CMD_STATS, p.sb.data, p.sb.size);
        dq_msg_destroy (&msg);
        s_pack_fini (&p);
        int bad [] = { 17, 18, 100, 1000, 100000 };
        for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
            s_pack_init (&p);
            s_nested (&p, bad [i], maps);
            s_expect_fail (DQ_CMD_STATS, p.sb.data, p.sb.size, DQ_ERR_INVALID);
            s_pack_fini (&p);
        }
    }
    //  1000 bare arrays as the body.
    uint8_t body [1001];
    memset (body, 0x91, 1000);
    body [1000] = 0xc0;
    s_expect_fail (DQ_CMD_STATS, body, sizeof body, DQ_ERR_INVALID);
}

static void
s_expect_frame_fail (const void *sig, size_t sig_size, const char *cmd, size_t cmd_size)
{
    static const uint8_t body [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x07 };
    dq_err_t err = DQ_OK;
    char reason [256] = "";
    dq_msg_t *msg = dq_msg_decode (sig, sig_size, cmd, cmd_size, body, sizeof body,
                                   &err, reason);
    assert_null (msg);
    assert_int_equal (err, DQ_ERR_PROTOCOL);
    assert_true (strlen (reason) > 0);
}

static void
test_proto_bad_frames (void **state)
{
    (void) state;
    s_expect_frame_fail ("XQ\x01", 3, "STATS", 5);
    s_expect_frame_fail ("DX\x01", 3, "STATS", 5);
    s_expect_frame_fail ("DQ", 2, "STATS", 5);
    s_expect_frame_fail ("DQ\x01\x00", 4, "STATS", 5);
    s_expect_frame_fail ("", 0, "STATS", 5);
    s_expect_frame_fail ("DQ\x02", 3, "STATS", 5);
    s_expect_frame_fail ("DQ\x00", 3, "STATS", 5);
    s_expect_frame_fail ("DQ\xff", 3, "STATS", 5);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "FOO", 3);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "stats", 5);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "", 0);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "NONE", 4);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "UNKNOWN", 7);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "STATS\0", 6);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "STAT", 4);
    s_expect_frame_fail (DQ_PROTO_SIGNATURE, 3, "STATSX", 6);
    //  reason may be NULL.
    dq_err_t err;
    assert_null (dq_msg_decode ("XQ\x01", 3, "STATS", 5, "\x80", 1, &err, NULL));
    assert_int_equal (err, DQ_ERR_PROTOCOL);
    //  Every command name is accepted exactly.
    for (int c = 1; c < DQ_CMD_COUNT_; c++) {
        if (c == DQ_CMD_SUBMIT || c == DQ_CMD_STATUS || c == DQ_CMD_RESULT
        ||  c == DQ_CMD_CANCEL || c == DQ_CMD_DAG || c == DQ_CMD_DONE
        ||  c == DQ_CMD_ABANDON || c == DQ_CMD_JOB)
            continue;               //  these need fields
        const char *name = dq_cmd_str ((dq_cmd_t) c);
        dq_msg_t *msg = dq_msg_decode (DQ_PROTO_SIGNATURE, 3, name, strlen (name),
                                       "\x80", 1, &err, NULL);
        assert_non_null (msg);
        assert_int_equal (msg->cmd, c);
        dq_msg_destroy (&msg);
    }
}

//  A body {key: value} built by hand (the encoder refuses it): the decoder
//  must refuse it as too big too.
static void
s_expect_str_too_big (dq_cmd_t cmd, const char *key, const char *value)
{
    pack_t p;
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, key);
    s_pk_str (&p.pk, value);
    s_expect_fail (cmd, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
    s_pack_fini (&p);
}

//  Text fields: limits, NUL bytes. Bytes fields may hold anything.
static void
test_proto_strings (void **state)
{
    (void) state;
    char *big = malloc (DQ_PROTO_STR_MAX + 2);
    assert_non_null (big);
    memset (big, 'x', DQ_PROTO_STR_MAX + 1);
    big [DQ_PROTO_STR_MAX + 1] = 0;

    //  id: NAME_MAX bytes fine, one more refused by both sides (what
    //  encodes also decodes).
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_RESULT);
    big [DQ_PROTO_NAME_MAX] = 0;
    msg.id = big;
    dq_msg_t *out = s_roundtrip (&msg);
    assert_int_equal (strlen (out->id), DQ_PROTO_NAME_MAX);
    dq_msg_destroy (&out);
    big [DQ_PROTO_NAME_MAX] = 'x';
    big [DQ_PROTO_NAME_MAX + 1] = 0;
    void *body;
    size_t size;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    s_expect_str_too_big (DQ_CMD_RESULT, "id", big);
    //  type: DQ_PROTO_TYPE_MAX; a worker's types likewise.
    dq_msg_init (&msg, DQ_CMD_READY);
    big [DQ_PROTO_TYPE_MAX + 1] = 0;
    const char *types [1] = { big };
    msg.types = types;
    msg.ntypes = 1;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    big [DQ_PROTO_TYPE_MAX + 1] = 'x';
    big [DQ_PROTO_NAME_MAX + 1] = 'x';

    //  error and message: STR_MAX fine, one more refused by both sides.
    dq_msg_init (&msg, DQ_CMD_ERROR);
    big [DQ_PROTO_STR_MAX] = 0;
    msg.message = big;
    out = s_roundtrip (&msg);
    assert_int_equal (strlen (out->message), DQ_PROTO_STR_MAX);
    dq_msg_destroy (&out);
    big [DQ_PROTO_STR_MAX] = 'x';
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    s_expect_str_too_big (DQ_CMD_OUTPUT, "error", big);

    //  Strings inside arrays: too long, NUL.
    const char *ids [2] = { "ok", big };
    dq_msg_init (&msg, DQ_CMD_STATUS);
    msg.ids = ids;
    msg.nids = 2;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    big [300] = 0;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    pack_t p;
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "ids");
    msgpack_pack_array (&p.pk, 2);
    s_pk_str (&p.pk, "ok");
    s_pk_str (&p.pk, big);
    s_expect_fail (DQ_CMD_STATUS, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
    s_pack_fini (&p);
    free (big);

    //  Embedded NUL in text: refused wherever text is read.
    const char *text_keys [] = { "id", "key", "dag_name", "error", "message", "name",
                                 "host", "broker_id", "worker_id", "content_type" };
    for (size_t i = 0; i < sizeof text_keys / sizeof text_keys [0]; i++) {
        s_pack_init (&p);
        msgpack_pack_map (&p.pk, 1);
        s_pk_str (&p.pk, text_keys [i]);
        s_pk_strn (&p.pk, "abc\0def", 7);
        s_expect_fail (DQ_CMD_STATS, p.sb.data, p.sb.size, DQ_ERR_INVALID);
        s_pack_fini (&p);
    }
    //  ...but bytes fields take NULs, and a str is accepted for bytes.
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 2);
    s_pk_str (&p.pk, "output");
    s_pk_strn (&p.pk, "abc\0def", 7);
    s_pk_str (&p.pk, "payload");
    s_pk_bin (&p.pk, "\0\0\0", 3);
    out = s_expect_ok (DQ_CMD_OUTPUT, p.sb.data, p.sb.size);
    s_bin_eq (out->output, out->output_size, "abc\0def", 7);
    s_bin_eq (out->payload, out->payload_size, "\0\0\0", 3);
    dq_msg_destroy (&out);
    s_pack_fini (&p);

    //  UTF-8 text survives byte for byte.
    dq_msg_init (&msg, DQ_CMD_ERROR);
    msg.message = "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    out = s_roundtrip (&msg);
    assert_string_equal (out->message, msg.message);
    dq_msg_destroy (&out);
}

static void
s_submit_type (const char *type, dq_err_t expect)
{
    pack_t p;
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "jobs");
    msgpack_pack_array (&p.pk, 1);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "type");
    s_pk_str (&p.pk, type);
    if (expect == DQ_OK) {
        dq_msg_t *msg = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
        assert_string_equal (msg->jobs [0].type, type);
        dq_msg_destroy (&msg);
    }
    else
        s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, expect);
    s_pack_fini (&p);

    //  The same rule for the types a worker announces.
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 2);
    s_pk_str (&p.pk, "capacity");
    msgpack_pack_uint64 (&p.pk, 1);
    s_pk_str (&p.pk, "types");
    msgpack_pack_array (&p.pk, 2);
    s_pk_str (&p.pk, "echo");
    s_pk_str (&p.pk, type);
    if (expect == DQ_OK) {
        dq_msg_t *msg = s_expect_ok (DQ_CMD_READY, p.sb.data, p.sb.size);
        assert_int_equal (msg->ntypes, 2);
        dq_msg_destroy (&msg);
    }
    else
        s_expect_fail (DQ_CMD_READY, p.sb.data, p.sb.size, expect);
    s_pack_fini (&p);
}

static void
test_proto_type_names (void **state)
{
    (void) state;
    char name [DQ_PROTO_TYPE_MAX + 2];
    memset (name, 'a', sizeof name);
    name [DQ_PROTO_TYPE_MAX] = 0;
    s_submit_type (name, DQ_OK);
    name [DQ_PROTO_TYPE_MAX] = 'a';
    name [DQ_PROTO_TYPE_MAX + 1] = 0;
    s_submit_type (name, DQ_ERR_TOO_BIG);
    s_submit_type ("A-Za-z0-9_.:-", DQ_OK);
    s_submit_type ("x", DQ_OK);
    const char *bad [] = { "", "a b", "a/b", "a\tb", "caf\xc3\xa9", "a*", "a,b",
                           "job\n", "a\"b", "\xff" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        s_submit_type (bad [i], DQ_ERR_INVALID);
    //  A job without a type.
    static const uint8_t notype [] = { 0x81, 0xa4, 'j', 'o', 'b', 's', 0x91, 0x80 };
    s_expect_fail (DQ_CMD_SUBMIT, notype, sizeof notype, DQ_ERR_INVALID);
}

//  Pack a two-job SUBMIT whose second job has one dep {fields...}.
static void
s_submit_dep (pack_t *p, int has_idx, int64_t idx, const char *id, bool rof)
{
    s_pack_init (p);
    msgpack_pack_map (&p->pk, 1);
    s_pk_str (&p->pk, "jobs");
    msgpack_pack_array (&p->pk, 2);
    msgpack_pack_map (&p->pk, 1);
    s_pk_str (&p->pk, "type");
    s_pk_str (&p->pk, "a");
    msgpack_pack_map (&p->pk, 2);
    s_pk_str (&p->pk, "type");
    s_pk_str (&p->pk, "b");
    s_pk_str (&p->pk, "deps");
    msgpack_pack_array (&p->pk, 1);
    msgpack_pack_map (&p->pk, (has_idx? 1: 0) + (id? 1: 0) + (rof? 1: 0));
    if (has_idx) {
        s_pk_str (&p->pk, "idx");
        msgpack_pack_int64 (&p->pk, idx);
    }
    if (id) {
        s_pk_str (&p->pk, "id");
        s_pk_str (&p->pk, id);
    }
    if (rof) {
        s_pk_str (&p->pk, "run_on_failure");
        msgpack_pack_true (&p->pk);
    }
}

static void
test_proto_bad_deps (void **state)
{
    (void) state;
    pack_t p;
    //  Valid: idx 0, idx 1 (itself: cycles are the DAG tracker's business),
    //  an id.
    for (int64_t idx = 0; idx < 2; idx++) {
        s_submit_dep (&p, 1, idx, NULL, true);
        dq_msg_t *msg = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
        assert_int_equal (msg->jobs [1].deps [0].idx, idx);
        assert_true (msg->jobs [1].deps [0].run_on_failure);
        dq_msg_destroy (&msg);
        s_pack_fini (&p);
    }
    s_submit_dep (&p, 0, 0, "b7f3a-1", false);
    dq_msg_t *msg = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
    assert_int_equal (msg->jobs [1].deps [0].idx, -1);
    assert_string_equal (msg->jobs [1].deps [0].id, "b7f3a-1");
    dq_msg_destroy (&msg);
    s_pack_fini (&p);

    //  Out of range, negative, neither, both.
    int64_t bad_idx [] = { 2, 3, 1000, INT32_MAX, -1, -2, INT32_MIN };
    for (size_t i = 0; i < sizeof bad_idx / sizeof bad_idx [0]; i++) {
        s_submit_dep (&p, 1, bad_idx [i], NULL, false);
        s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, DQ_ERR_INVALID);
        s_pack_fini (&p);
    }
    s_submit_dep (&p, 0, 0, NULL, false);          //  {}
    s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, DQ_ERR_INVALID);
    s_pack_fini (&p);
    s_submit_dep (&p, 0, 0, NULL, true);           //  {run_on_failure}
    s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, DQ_ERR_INVALID);
    s_pack_fini (&p);
    s_submit_dep (&p, 1, 0, "b7f3a-1", false);     //  both
    s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, DQ_ERR_INVALID);
    s_pack_fini (&p);
    s_submit_dep (&p, 0, 0, "", false);            //  an empty id is still an id
    msg = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
    assert_int_equal (msg->jobs [1].deps [0].idx, -1);
    dq_msg_destroy (&msg);
    s_pack_fini (&p);

    //  Too many deps.
    for (uint32_t n = DQ_PROTO_DEPS_MAX; n <= DQ_PROTO_DEPS_MAX + 1; n++) {
        s_pack_init (&p);
        msgpack_pack_map (&p.pk, 1);
        s_pk_str (&p.pk, "jobs");
        msgpack_pack_array (&p.pk, 1);
        msgpack_pack_map (&p.pk, 2);
        s_pk_str (&p.pk, "type");
        s_pk_str (&p.pk, "a");
        s_pk_str (&p.pk, "deps");
        msgpack_pack_array (&p.pk, n);
        for (uint32_t i = 0; i < n; i++) {
            msgpack_pack_map (&p.pk, 1);
            s_pk_str (&p.pk, "idx");
            msgpack_pack_uint64 (&p.pk, 0);
        }
        if (n == DQ_PROTO_DEPS_MAX) {
            msg = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
            assert_int_equal (msg->jobs [0].ndeps, n);
            dq_msg_destroy (&msg);
        }
        else
            s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
        s_pack_fini (&p);
    }
}

static void
test_proto_required_fields (void **state)
{
    (void) state;
    //  SUBMIT with no jobs, an empty jobs array.
    static const uint8_t nojobs [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x01 };
    s_expect_fail (DQ_CMD_SUBMIT, nojobs, sizeof nojobs, DQ_ERR_INVALID);
    static const uint8_t emptyjobs [] = { 0x81, 0xa4, 'j', 'o', 'b', 's', 0x90 };
    s_expect_fail (DQ_CMD_SUBMIT, emptyjobs, sizeof emptyjobs, DQ_ERR_INVALID);
    //  STATUS with no ids.
    static const uint8_t emptyids [] = { 0x81, 0xa3, 'i', 'd', 's', 0x90 };
    s_expect_fail (DQ_CMD_STATUS, emptyids, sizeof emptyids, DQ_ERR_INVALID);
    //  JOB with an id but no type.
    static const uint8_t jobid [] = { 0x81, 0xa2, 'i', 'd', 0xa1, 'x' };
    s_expect_fail (DQ_CMD_JOB, jobid, sizeof jobid, DQ_ERR_INVALID);
    dq_msg_t *msg = s_expect_ok (DQ_CMD_DONE, jobid, sizeof jobid);
    dq_msg_destroy (&msg);

    //  The encoder refuses a count without its array instead of crashing.
    dq_msg_t m;
    void *body;
    size_t size;
    dq_msg_init (&m, DQ_CMD_STATUS);
    m.nids = 3;
    assert_int_equal (dq_msg_encode (&m, &body, &size), -1);
    dq_msg_init (&m, DQ_CMD_SUBMIT);
    m.njobs = 2;
    assert_int_equal (dq_msg_encode (&m, &body, &size), -1);
    dq_msg_init (&m, DQ_CMD_JOB);
    m.payload_size = 10;
    assert_int_equal (dq_msg_encode (&m, &body, &size), -1);
    dq_jobinfo_t info = { .id = "x", .nparents = 2 };
    const char *pids [2] = { "a", "b" };
    info.parent_ids = pids;             //  but no states
    dq_msg_init (&m, DQ_CMD_JOBS);
    m.infos = &info;
    m.ninfos = 1;
    assert_int_equal (dq_msg_encode (&m, &body, &size), -1);
}

//  parent_ids and parent_states must agree in length (readers index both).
static void
test_proto_parent_arrays (void **state)
{
    (void) state;
    struct { int nids, nstates; bool ok; } cases [] = {
        { 0, 0, true }, { 2, 2, true }, { 2, -1, false }, { -1, 2, false },
        { 2, 0, false }, { 0, 2, false }, { 2, 3, false }, { 3, 2, false },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        for (int order = 0; order < 2; order++) {
            pack_t p;
            s_pack_init (&p);
            msgpack_pack_map (&p.pk, 1);
            s_pk_str (&p.pk, "infos");
            msgpack_pack_array (&p.pk, 1);
            int n = 1 + (cases [c].nids >= 0) + (cases [c].nstates >= 0);
            msgpack_pack_map (&p.pk, (size_t) n);
            s_pk_str (&p.pk, "id");
            s_pk_str (&p.pk, "x-1");
            for (int k = 0; k < 2; k++) {
                bool ids = (k == 0) != (order == 1);
                int count = ids? cases [c].nids: cases [c].nstates;
                if (count < 0)
                    continue;
                s_pk_str (&p.pk, ids? "parent_ids": "parent_states");
                msgpack_pack_array (&p.pk, (size_t) count);
                for (int i = 0; i < count; i++) {
                    if (ids)
                        s_pk_str (&p.pk, "p-1");
                    else
                        msgpack_pack_uint64 (&p.pk, DQ_STATE_SUCCEEDED);
                }
            }
            if (cases [c].ok) {
                dq_msg_t *msg = s_expect_ok (DQ_CMD_JOBS, p.sb.data, p.sb.size);
                assert_int_equal (msg->infos [0].nparents, (uint32_t) cases [c].nids);
                dq_msg_destroy (&msg);
            }
            else
                s_expect_fail (DQ_CMD_JOBS, p.sb.data, p.sb.size, DQ_ERR_INVALID);
            s_pack_fini (&p);
        }
    }
}

//  Duplicate keys: the last one wins and nothing leaks.
static void
test_proto_duplicate_keys (void **state)
{
    (void) state;
    pack_t p;
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 4);
    s_pk_str (&p.pk, "rid");
    msgpack_pack_uint64 (&p.pk, 1);
    s_pk_str (&p.pk, "ids");
    msgpack_pack_array (&p.pk, 1);
    s_pk_str (&p.pk, "a-1");
    s_pk_str (&p.pk, "rid");
    msgpack_pack_uint64 (&p.pk, 2);
    s_pk_str (&p.pk, "ids");
    msgpack_pack_array (&p.pk, 2);
    s_pk_str (&p.pk, "b-1");
    s_pk_str (&p.pk, "b-2");
    dq_msg_t *msg = s_expect_ok (DQ_CMD_STATUS, p.sb.data, p.sb.size);
    assert_int_equal (msg->rid, 2);
    assert_int_equal (msg->nids, 2);
    assert_string_equal (msg->ids [1], "b-2");
    dq_msg_destroy (&msg);
    s_pack_fini (&p);
}

//  Size limits: a payload of exactly DQ_PROTO_PAYLOAD_MAX goes through, one
//  byte more does not (either way); arrays at and over their limits.
static void
test_proto_max_sizes (void **state)
{
    (void) state;
    size_t max = DQ_PROTO_PAYLOAD_MAX;
    uint8_t *big = malloc (max + 1);
    assert_non_null (big);
    for (size_t i = 0; i < max + 1; i++)
        big [i] = (uint8_t) (i * 31 + (i >> 13));
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_JOB);
    msg.id = "j-1";
    msg.type = "echo";
    msg.payload = big;
    msg.payload_size = max;
    dq_msg_t *out = s_roundtrip (&msg);
    s_bin_eq (big, max, out->payload, out->payload_size);
    dq_msg_destroy (&out);
    msg.payload_size = max + 1;
    void *body;
    size_t size;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    pack_t p;
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "output");
    s_pk_bin (&p.pk, big, max + 1);
    s_expect_fail (DQ_CMD_OUTPUT, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
    s_pack_fini (&p);
    free (big);

    //  A body frame over DQ_PROTO_BODY_MAX is refused before it is read
    //  (calloc'd so its pages are never touched).
    uint8_t *huge = calloc (1, (size_t) DQ_PROTO_BODY_MAX + 1);
    assert_non_null (huge);
    dq_err_t err;
    out = dq_msg_decode (DQ_PROTO_SIGNATURE, 3, "STATS", 5, huge,
                         (size_t) DQ_PROTO_BODY_MAX + 1, &err, NULL);
    assert_null (out);
    assert_int_equal (err, DQ_ERR_TOO_BIG);
    free (huge);

    //  ids (of a SUBMITTED: STATUS has a lower cap of its own):
    //  DQ_PROTO_ARRAY_MAX entries fine, one more refused.
    uint32_t n = DQ_PROTO_ARRAY_MAX;
    const char **ids = malloc ((n + 1) * sizeof *ids);
    assert_non_null (ids);
    for (uint32_t i = 0; i <= n; i++)
        ids [i] = (i % 1000 == 0)? "b7f3a-1000000": "";
    dq_msg_init (&msg, DQ_CMD_SUBMITTED);
    msg.ids = ids;
    msg.nids = n;
    out = s_roundtrip (&msg);
    assert_int_equal (out->nids, n);
    assert_string_equal (out->ids [n - 1], "");
    assert_string_equal (out->ids [1000], "b7f3a-1000000");
    dq_msg_destroy (&out);
    msg.nids = n + 1;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "ids");
    msgpack_pack_array (&p.pk, n + 1);
    for (uint32_t i = 0; i <= n; i++)
        s_pk_str (&p.pk, "");
    s_expect_fail (DQ_CMD_SUBMITTED, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
    s_pack_fini (&p);
    free (ids);

    //  A worker's types: DQ_PROTO_TYPES_MAX fine, one more refused.
    const char *types [DQ_PROTO_TYPES_MAX + 1];
    char names [DQ_PROTO_TYPES_MAX + 1][8];
    for (int i = 0; i <= DQ_PROTO_TYPES_MAX; i++) {
        snprintf (names [i], sizeof names [i], "t%d", i);
        types [i] = names [i];
    }
    dq_msg_init (&msg, DQ_CMD_READY);
    msg.types = types;
    msg.ntypes = DQ_PROTO_TYPES_MAX;
    msg.capacity = 4;
    out = s_roundtrip (&msg);
    assert_int_equal (out->ntypes, DQ_PROTO_TYPES_MAX);
    dq_msg_destroy (&out);
    msg.ntypes = DQ_PROTO_TYPES_MAX + 1;
    s_encode (&msg, &body, &size);
    s_expect_fail (DQ_CMD_READY, body, size, DQ_ERR_TOO_BIG);
    free (body);

    //  Many jobs in one SUBMIT, each with a binary payload.
    uint32_t njobs = 100000;
    dq_jobspec_t *jobs = calloc (njobs, sizeof *jobs);
    assert_non_null (jobs);
    uint8_t payload [100];
    memset (payload, 0, sizeof payload);
    for (uint32_t i = 0; i < njobs; i++) {
        jobs [i].type = "echo";
        jobs [i].payload = payload;
        jobs [i].payload_size = sizeof payload;
        jobs [i].priority = (int32_t) (i % 7) - 3;
    }
    dq_msg_init (&msg, DQ_CMD_SUBMIT);
    msg.jobs = jobs;
    msg.njobs = njobs;
    out = s_roundtrip (&msg);
    assert_int_equal (out->njobs, njobs);
    for (uint32_t i = 0; i < njobs; i += 997)
        s_jobspec_eq (&jobs [i], &out->jobs [i]);
    dq_msg_destroy (&out);
    free (jobs);

    //  A dispatch histogram carries at most 64 buckets.
    uint64_t hist [65];
    for (int i = 0; i < 65; i++)
        hist [i] = (uint64_t) i;
    dq_msg_init (&msg, DQ_CMD_STATS_REPLY);
    msg.dispatch_hist = hist;
    msg.ndispatch_hist = 64;
    out = s_roundtrip (&msg);
    s_msg_eq (&msg, out);
    dq_msg_destroy (&out);
    msg.ndispatch_hist = 65;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    msg.dispatch_hist = NULL;
    msg.ndispatch_hist = 3;
    assert_int_equal (dq_msg_encode (&msg, &body, &size), -1);
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 1);
    s_pk_str (&p.pk, "dispatch_hist");
    msgpack_pack_array (&p.pk, 65);
    for (int i = 0; i < 65; i++)
        msgpack_pack_uint64 (&p.pk, 1);
    s_expect_fail (DQ_CMD_STATS_REPLY, p.sb.data, p.sb.size, DQ_ERR_TOO_BIG);
    s_pack_fini (&p);
}

//  Every proper prefix of a valid body is refused.
static void
test_proto_truncated (void **state)
{
    (void) state;
    full_t *f = malloc (sizeof *f);
    assert_non_null (f);
    dq_cmd_t cmds [] = { DQ_CMD_SUBMIT, DQ_CMD_JOBS, DQ_CMD_STATS_REPLY,
                         DQ_CMD_DAG_INFO, DQ_CMD_JOB, DQ_CMD_READY };
    for (size_t c = 0; c < sizeof cmds / sizeof cmds [0]; c++) {
        s_full_init (f, cmds [c]);
        void *body;
        size_t size;
        s_encode (&f->msg, &body, &size);
        for (size_t len = 0; len < size; len++)
            s_expect_fail (cmds [c], body, len, DQ_ERR_INVALID);
        dq_msg_t *msg = s_expect_ok (cmds [c], body, size);
        dq_msg_destroy (&msg);
        free (body);
    }
    free (f);
}

//  ---------------------------------------------------------------------------
//  Fuzz: random and mutated bodies never crash or leak, and whatever decodes
//  re-encodes to a body that decodes to the same message.

static const uint8_t s_interesting [] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8,
    0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff
};

static size_t
s_mutate (uint8_t *buf, size_t size, size_t cap, uint64_t *rng)
{
    int rounds = 1 + (int) (s_rand (rng) % 6);
    for (int r = 0; r < rounds; r++) {
        uint64_t x = s_rand (rng);
        size_t at = size? (size_t) (x >> 8) % size: 0;
        switch (x % 8) {
            case 0:                 //  flip a bit
                if (size)
                    buf [at] ^= (uint8_t) (1u << ((x >> 40) % 8));
                break;
            case 1:                 //  an interesting byte
                if (size)
                    buf [at] = s_interesting [(x >> 40) % sizeof s_interesting];
                break;
            case 2:                 //  a random byte
                if (size)
                    buf [at] = (uint8_t) (x >> 48);
                break;
            case 3:                 //  0xff run: huge lengths
                for (size_t i = at; i < size && i < at + 4; i++)
                    buf [i] = 0xff;
                break;
            case 4:                 //  insert a byte
                if (size < cap) {
                    memmove (buf + at + 1, buf + at, size - at);
                    buf [at] = s_interesting [(x >> 40) % sizeof s_interesting];
                    size++;
                }
                break;
            case 5:                 //  delete a byte
                if (size) {
                    memmove (buf + at, buf + at + 1, size - at - 1);
                    size--;
                }
                break;
            case 6:                 //  truncate
                size = at;
                break;
            case 7: {               //  copy a chunk over another place
                if (size < 2)
                    break;
                size_t from = (size_t) (x >> 20) % size;
                size_t len = 1 + (size_t) (x >> 50) % 16;
                for (size_t i = 0; i < len && from + i < size && at + i < size; i++)
                    buf [at + i] = buf [from + i];
                break;
            }
        }
    }
    return size;
}

static void
test_proto_fuzz (void **state)
{
    (void) state;
    //  Seeds: every command with every field, and minimal ones.
    enum { NSEEDS = (DQ_CMD_COUNT_ - 1) * 2 };
    void *seeds [NSEEDS];
    size_t sizes [NSEEDS];
    dq_cmd_t seed_cmds [NSEEDS];
    full_t *f = malloc (sizeof *f);
    assert_non_null (f);
    int ns = 0;
    for (int c = 1; c < DQ_CMD_COUNT_; c++) {
        s_full_init (f, (dq_cmd_t) c);
        s_encode (&f->msg, &seeds [ns], &sizes [ns]);
        seed_cmds [ns++] = (dq_cmd_t) c;
        //  A small one: rid, one job with a dep, one info with a parent.
        dq_msg_t *m = &f->msg;
        m->nids = 1;
        m->njobs = 2;
        f->jobs [1].ndeps = 1;
        m->ninfos = 1;
        f->infos [0].nparents = 1;
        m->nparents = 1;
        m->ntypestats = 1;
        m->nworkers = 1;
        m->payload_size = 3;
        m->output_size = 2;
        f->jobs [0].payload_size = 2;
        m->ndispatch_hist = 2;
        s_encode (m, &seeds [ns], &sizes [ns]);
        seed_cmds [ns++] = (dq_cmd_t) c;
    }
    free (f);

    uint64_t rng = 20261129;
    size_t cap = 8192;
    uint8_t *buf = malloc (cap);
    assert_non_null (buf);
    long decoded = 0;
    const long iterations = 200000;
    for (long it = 0; it < iterations; it++) {
        uint64_t x = s_rand (&rng);
        dq_cmd_t cmd;
        size_t size;
        if (x % 10 == 0) {
            //  Pure random bytes, often starting like a map.
            size = (size_t) (x >> 8) % 96;
            for (size_t i = 0; i < size; i++)
                buf [i] = (uint8_t) s_rand (&rng);
            if (size && (x & 0x100))
                buf [0] = 0x80 | (buf [0] & 0x0f);
            cmd = (dq_cmd_t) (1 + (x >> 32) % (DQ_CMD_COUNT_ - 1));
        }
        else {
            int s = (int) ((x >> 8) % NSEEDS);
            size = sizes [s] < cap? sizes [s]: cap;
            memcpy (buf, seeds [s], size);
            if (x % 10 == 1) {
                //  Splice another seed's tail.
                int s2 = (int) ((x >> 24) % NSEEDS);
                size_t at = size? (size_t) (x >> 40) % size: 0;
                size_t from = sizes [s2]? (size_t) s_rand (&rng) % sizes [s2]: 0;
                size_t len = sizes [s2] - from;
                if (at + len > cap)
                    len = cap - at;
                memcpy (buf + at, (uint8_t *) seeds [s2] + from, len);
                size = at + len;
            }
            size = s_mutate (buf, size, cap, &rng);
            cmd = (x % 10 == 2)? (dq_cmd_t) (1 + (x >> 32) % (DQ_CMD_COUNT_ - 1))
                               : seed_cmds [s];
        }
        //  Exact-size copy so ASan catches any over-read.
        uint8_t *body = malloc (size? size: 1);
        assert_non_null (body);
        memcpy (body, buf, size);
        dq_err_t err = DQ_OK;
        const char *name = dq_cmd_str (cmd);
        dq_msg_t *msg = dq_msg_decode (DQ_PROTO_SIGNATURE, 3, name, strlen (name),
                                       body, size, &err, NULL);
        free (body);
        if (!msg) {
            assert_true (err == DQ_ERR_INVALID || err == DQ_ERR_TOO_BIG);
            continue;
        }
        decoded++;
        //  The message owns its memory: the input is gone already.
        void *again;
        size_t again_size;
        if (dq_msg_encode (msg, &again, &again_size))
            fail_msg ("iteration %ld: a decoded %s does not re-encode", it, name);
        dq_msg_t *msg2 = s_expect_ok (cmd, again, again_size);
        s_msg_eq (msg, msg2);
        free (again);
        dq_msg_destroy (&msg2);
        dq_msg_destroy (&msg);
    }
    free (buf);
    for (int i = 0; i < ns; i++)
        free (seeds [i]);
    //  The mutations must leave a fair share decodable, or the re-encode
    //  check tested nothing.
    assert_true (decoded > iterations / 50);
    print_message ("fuzz: %ld of %ld bodies decoded\n", decoded, iterations);
}

//  ---------------------------------------------------------------------------
//  Events

static void *
s_wait_socket (void *sock)
{
    int timeout = RECV_TIMEOUT_MS;
    assert_int_equal (zmq_setsockopt (sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout), 0);
    assert_int_equal (zmq_setsockopt (sock, ZMQ_SNDTIMEO, &timeout, sizeof timeout), 0);
    int linger = 0;
    assert_int_equal (zmq_setsockopt (sock, ZMQ_LINGER, &linger, sizeof linger), 0);
    return sock;
}

//  Receive one event (two frames) and decode it.
static void
s_recv_event (void *sub, char *topic, size_t topic_cap, dq_event_t *ev, char **strbuf)
{
    zmq_msg_t t, b;
    zmq_msg_init (&t);
    zmq_msg_init (&b);
    assert_true (zmq_msg_recv (&t, sub, 0) >= 0);
    assert_true (zmq_msg_more (&t));
    assert_true (zmq_msg_recv (&b, sub, 0) >= 0);
    assert_false (zmq_msg_more (&b));
    size_t n = zmq_msg_size (&t) < topic_cap - 1? zmq_msg_size (&t): topic_cap - 1;
    memcpy (topic, zmq_msg_data (&t), n);
    topic [n] = 0;
    assert_int_equal (dq_event_decode (zmq_msg_data (&t), zmq_msg_size (&t),
                                       zmq_msg_data (&b), zmq_msg_size (&b),
                                       ev, strbuf), 0);
    zmq_msg_close (&t);
    zmq_msg_close (&b);
}

static void
test_proto_event_roundtrip (void **state)
{
    (void) state;
    void *ctx = zmq_ctx_new ();
    assert_non_null (ctx);
    //  XPUB is a PUB that tells us when the subscription arrived, so nothing
    //  is sent before anyone listens (no sleeps).
    void *pub = s_wait_socket (zmq_socket (ctx, ZMQ_XPUB));
    void *sub = s_wait_socket (zmq_socket (ctx, ZMQ_SUB));
    assert_int_equal (zmq_bind (pub, "inproc://test-proto-events"), 0);
    assert_int_equal (zmq_connect (sub, "inproc://test-proto-events"), 0);
    assert_int_equal (zmq_setsockopt (sub, ZMQ_SUBSCRIBE, "job ", 4), 0);
    char sub_frame [16];
    int n = zmq_recv (pub, sub_frame, sizeof sub_frame, 0);
    assert_int_equal (n, 5);
    assert_memory_equal (sub_frame, "\x01job ", 5);

    //  A DAG event is filtered out by the "job " prefix.
    dq_event_t dag = { .kind = "dag", .id = "b7f3a-d7", .state = DQ_STATE_SUCCEEDED,
                       .at_ms = 5 };
    assert_int_equal (dq_event_send (&dag, pub, 0), 0);
    dq_event_t ev = {
        .kind = "job", .id = "b7f3a-42", .state = DQ_STATE_FAILED, .type = "sha256",
        .dag_id = "b7f3a-d7", .attempt = 3, .at_ms = 1700000000123ULL,
        .latency_us = UINT64_MAX };
    assert_int_equal (dq_event_send (&ev, pub, 0), 0);
    dq_event_t minimal = { .kind = "job", .id = "b7f3a-43", .state = DQ_STATE_WAITING };
    assert_int_equal (dq_event_send (&minimal, pub, 0), 0);

    char topic [256];
    dq_event_t got;
    char *strbuf = NULL;
    s_recv_event (sub, topic, sizeof topic, &got, &strbuf);
    assert_string_equal (topic, "job b7f3a-42 failed");
    assert_string_equal (got.kind, "job");
    assert_string_equal (got.id, "b7f3a-42");
    assert_int_equal (got.state, DQ_STATE_FAILED);
    assert_string_equal (got.type, "sha256");
    assert_string_equal (got.dag_id, "b7f3a-d7");
    assert_int_equal (got.attempt, 3);
    assert_int_equal (got.at_ms, 1700000000123ULL);
    assert_int_equal (got.latency_us, UINT64_MAX);
    free (strbuf);

    s_recv_event (sub, topic, sizeof topic, &got, &strbuf);
    assert_string_equal (topic, "job b7f3a-43 waiting");
    assert_string_equal (got.id, "b7f3a-43");
    assert_int_equal (got.state, DQ_STATE_WAITING);
    assert_null (got.type);
    assert_null (got.dag_id);
    assert_int_equal (got.latency_us, 0);
    free (strbuf);

    //  An event without kind or id is not sent.
    dq_event_t bad = { .id = "x" };
    assert_int_equal (dq_event_send (&bad, pub, 0), -1);
    bad = (dq_event_t) { .kind = "job" };
    assert_int_equal (dq_event_send (&bad, pub, 0), -1);

    zmq_close (sub);
    zmq_close (pub);
    zmq_ctx_term (ctx);
}

static void
s_event_expect_fail (const void *body, size_t size)
{
    void *copy = malloc (size? size: 1);
    assert_non_null (copy);
    if (size)
        memcpy (copy, body, size);
    dq_event_t ev;
    char *strbuf = (char *) "not touched";
    assert_int_equal (dq_event_decode ("job", 3, copy, size, &ev, &strbuf), -1);
    assert_null (strbuf);           //  nothing to free on failure
    assert_null (ev.kind);
    free (copy);
}

static void
test_proto_event_decode_hostile (void **state)
{
    (void) state;
    //  Not a map; a map without kind or id; non-string key; trailing byte.
    pack_t p;
    for (val_t v = V_NIL; v <= V_MAP_INTKEY; v++) {
        s_pack_init (&p);
        s_pk_val (&p.pk, v);
        s_event_expect_fail (p.sb.data, p.sb.size);
        s_pack_fini (&p);
    }
    static const uint8_t noid [] = { 0x81, 0xa4, 'k', 'i', 'n', 'd', 0xa3, 'j', 'o', 'b' };
    s_event_expect_fail (noid, sizeof noid);
    static const uint8_t intkey [] = {
        0x83, 0xa4, 'k', 'i', 'n', 'd', 0xa3, 'j', 'o', 'b',
        0xa2, 'i', 'd', 0xa1, 'x', 0x01, 0x01 };
    s_event_expect_fail (intkey, sizeof intkey);
    static const uint8_t trailing [] = {
        0x82, 0xa4, 'k', 'i', 'n', 'd', 0xa3, 'j', 'o', 'b',
        0xa2, 'i', 'd', 0xa1, 'x', 0xc0 };
    s_event_expect_fail (trailing, sizeof trailing);
    s_event_expect_fail ("", 0);
    static const uint8_t huge [] = { 0xdf, 0xff, 0xff, 0xff, 0xff, 0xa0, 0xa0 };
    s_event_expect_fail (huge, sizeof huge);
    uint8_t deep [1001];
    memset (deep, 0x91, 1000);
    deep [1000] = 0xc0;
    s_event_expect_fail (deep, sizeof deep);

    //  A valid one, then every truncation of it, then mutations.
    s_pack_init (&p);
    msgpack_pack_map (&p.pk, 8);
    s_pk_str (&p.pk, "kind");     s_pk_str (&p.pk, "job");
    s_pk_str (&p.pk, "id");       s_pk_str (&p.pk, "b7f3a-42");
    s_pk_str (&p.pk, "state");    msgpack_pack_uint64 (&p.pk, 3);
    s_pk_str (&p.pk, "type");     s_pk_str (&p.pk, "echo");
    s_pk_str (&p.pk, "dag_id");   s_pk_str (&p.pk, "");
    s_pk_str (&p.pk, "attempt");  msgpack_pack_uint64 (&p.pk, 2);
    s_pk_str (&p.pk, "at_ms");    msgpack_pack_uint64 (&p.pk, 99);
    s_pk_str (&p.pk, "future");   msgpack_pack_array (&p.pk, 0);
    dq_event_t ev;
    char *strbuf;
    assert_int_equal (dq_event_decode ("job", 3, p.sb.data, p.sb.size, &ev, &strbuf), 0);
    assert_string_equal (ev.id, "b7f3a-42");
    assert_string_equal (ev.dag_id, "");
    assert_int_equal (ev.state, 3);
    assert_int_equal (ev.attempt, 2);
    free (strbuf);
    for (size_t len = 0; len < p.sb.size; len++)
        s_event_expect_fail (p.sb.data, len);

    uint64_t rng = 7;
    uint8_t buf [512];
    for (int it = 0; it < 50000; it++) {
        size_t size = p.sb.size;
        memcpy (buf, p.sb.data, size);
        size = s_mutate (buf, size, sizeof buf, &rng);
        uint8_t *body = malloc (size? size: 1);
        assert_non_null (body);
        memcpy (body, buf, size);
        strbuf = NULL;
        if (dq_event_decode ("job", 3, body, size, &ev, &strbuf) == 0) {
            assert_non_null (ev.kind);
            assert_non_null (ev.id);
            assert_true (ev.state >= 0 && ev.state < DQ_STATE_COUNT_);
            free (strbuf);
        }
        else
            assert_null (strbuf);
        free (body);
    }
    s_pack_fini (&p);
}

//  ---------------------------------------------------------------------------
//  Sockets

typedef struct {
    void *ctx;
    void *router;
    void *dealer;
} pair_t;

static void
s_pair_open (pair_t *pair, const char *endpoint)
{
    pair->ctx = zmq_ctx_new ();
    assert_non_null (pair->ctx);
    pair->router = s_wait_socket (zmq_socket (pair->ctx, ZMQ_ROUTER));
    pair->dealer = s_wait_socket (zmq_socket (pair->ctx, ZMQ_DEALER));
    int one = 1;
    assert_int_equal (zmq_setsockopt (pair->router, ZMQ_ROUTER_MANDATORY, &one,
                                      sizeof one), 0);
    assert_int_equal (zmq_bind (pair->router, endpoint), 0);
    char bound [256];
    size_t len = sizeof bound;
    assert_int_equal (zmq_getsockopt (pair->router, ZMQ_LAST_ENDPOINT, bound, &len), 0);
    assert_int_equal (zmq_connect (pair->dealer, bound), 0);
}

static void
s_pair_close (pair_t *pair)
{
    zmq_close (pair->dealer);
    zmq_close (pair->router);
    zmq_ctx_term (pair->ctx);
}

//  Receive on the router, expecting success.
static dq_msg_t *
s_router_recv (pair_t *pair, uint8_t *rid, size_t *rid_size)
{
    dq_err_t err = DQ_ERR_INTERNAL;
    char reason [256];
    dq_msg_t *msg = dq_msg_recv (pair->router, rid, rid_size, 0, &err, reason);
    if (!msg)
        fail_msg ("router recv failed: %s (%s), errno %d", dq_err_str (err), reason, errno);
    return msg;
}

//  Send raw frames (no routing id) from sock.
static void
s_send_frames (void *sock, const void *routing_id, size_t rid_size, int nframes,
               const void *const *frames, const size_t *sizes)
{
    if (routing_id)
        assert_true (zmq_send (sock, routing_id, rid_size, ZMQ_SNDMORE) >= 0);
    for (int i = 0; i < nframes; i++)
        assert_true (zmq_send (sock, frames [i], sizes [i],
                               i < nframes - 1? ZMQ_SNDMORE: 0) >= 0);
}

static void
s_send_heartbeat (void *sock, const void *rid, size_t rid_size, uint64_t marker)
{
    dq_msg_t hb;
    dq_msg_init (&hb, DQ_CMD_HEARTBEAT);
    hb.rid = marker;
    assert_int_equal (dq_msg_send (&hb, sock, rid, rid_size, 0), 0);
}

static void
s_socket_exchange (const char *endpoint, size_t payload_size)
{
    pair_t pair;
    s_pair_open (&pair, endpoint);
    full_t *f = malloc (sizeof *f);
    assert_non_null (f);

    //  Client -> broker: a full SUBMIT.
    s_full_init (f, DQ_CMD_SUBMIT);
    assert_int_equal (dq_msg_send (&f->msg, pair.dealer, NULL, 0, 0), 0);
    uint8_t rid [256];
    size_t rid_size = 0;
    dq_msg_t *got = s_router_recv (&pair, rid, &rid_size);
    assert_true (rid_size > 0);
    s_msg_eq (&f->msg, got);
    dq_msg_destroy (&got);

    //  Broker -> client: a JOB with a large payload, routed by id.
    uint8_t *payload = malloc (payload_size);
    assert_non_null (payload);
    for (size_t i = 0; i < payload_size; i++)
        payload [i] = (uint8_t) (i ^ (i >> 8));
    s_full_init (f, DQ_CMD_JOB);
    f->msg.payload = payload;
    f->msg.payload_size = payload_size;
    assert_int_equal (dq_msg_send (&f->msg, pair.router, rid, rid_size, 0), 0);
    dq_err_t err = DQ_ERR_INTERNAL;
    got = dq_msg_recv (pair.dealer, NULL, NULL, 0, &err, NULL);
    assert_non_null (got);
    assert_int_equal (err, DQ_OK);
    s_msg_eq (&f->msg, got);
    dq_msg_destroy (&got);
    free (payload);

    //  ERROR helper.
    assert_int_equal (dq_msg_send_error (pair.router, rid, rid_size, 77, DQ_ERR_BUSY,
                                         500, "too many queued jobs"), 0);
    got = dq_msg_recv (pair.dealer, NULL, NULL, 0, &err, NULL);
    assert_non_null (got);
    assert_int_equal (got->cmd, DQ_CMD_ERROR);
    assert_int_equal (got->rid, 77);
    assert_int_equal (got->code, DQ_ERR_BUSY);
    assert_int_equal (got->retry_ms, 500);
    assert_string_equal (got->message, "too many queued jobs");
    dq_msg_destroy (&got);

    free (f);
    s_pair_close (&pair);
}

static void
test_proto_socket_inproc (void **state)
{
    (void) state;
    s_socket_exchange ("inproc://test-proto-sockets", 100);
}

static void
test_proto_socket_tcp (void **state)
{
    (void) state;
    s_socket_exchange ("tcp://127.0.0.1:*", 3 * 1024 * 1024 + 17);
}

//  Wrong frame counts, bad frames: refused with every frame consumed, so the
//  next message is read whole.
static void
test_proto_socket_bad_frames (void **state)
{
    (void) state;
    pair_t pair;
    s_pair_open (&pair, "inproc://test-proto-frames");
    uint8_t rid [256];
    size_t rid_size = 0;

    //  Learn the dealer's routing id.
    s_send_heartbeat (pair.dealer, NULL, 0, 1);
    dq_msg_t *got = s_router_recv (&pair, rid, &rid_size);
    assert_int_equal (got->rid, 1);
    dq_msg_destroy (&got);

    static const uint8_t body [] = { 0x81, 0xa3, 'r', 'i', 'd', 0x05 };
    const void *frames [6] = { DQ_PROTO_SIGNATURE, "HEARTBEAT", body, "extra", "more", "x" };
    size_t sizes [6] = { 3, 9, sizeof body, 5, 4, 1 };
    static const uint8_t bad_body [] = { 0x92, 0x01, 0x02 };
    const void *bad_frames [3] = { DQ_PROTO_SIGNATURE, "HEARTBEAT", bad_body };
    size_t bad_sizes [3] = { 3, 9, sizeof bad_body };
    const void *sig_frames [3] = { "DQ\x07", "HEARTBEAT", body };
    const void *cmd_frames [3] = { DQ_PROTO_SIGNATURE, "HEARTBEATS", body };
    size_t cmd_sizes [3] = { 3, 10, sizeof body };

    struct {
        const void *const *frames;
        const size_t *sizes;
        int n;
        dq_err_t err;
    } cases [] = {
        { frames, sizes, 1, DQ_ERR_PROTOCOL },
        { frames, sizes, 2, DQ_ERR_PROTOCOL },
        { frames, sizes, 4, DQ_ERR_PROTOCOL },
        { frames, sizes, 6, DQ_ERR_PROTOCOL },
        { sig_frames, sizes, 3, DQ_ERR_PROTOCOL },
        { cmd_frames, cmd_sizes, 3, DQ_ERR_PROTOCOL },
        { bad_frames, bad_sizes, 3, DQ_ERR_INVALID },
        { frames, sizes, 3, DQ_OK },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        for (int dir = 0; dir < 2; dir++) {
            //  dir 0: dealer -> router; dir 1: router -> dealer.
            void *from = dir? pair.router: pair.dealer;
            void *to = dir? pair.dealer: pair.router;
            s_send_frames (from, dir? rid: NULL, rid_size, cases [c].n,
                           cases [c].frames, cases [c].sizes);
            s_send_heartbeat (from, dir? rid: NULL, rid_size, 1000 + c);
            uint8_t rid2 [256];
            size_t rid2_size = 0;
            dq_err_t err = DQ_ERR_INTERNAL;
            char reason [256] = "";
            got = dq_msg_recv (to, dir? NULL: rid2, dir? NULL: &rid2_size, 0, &err,
                               reason);
            if (cases [c].err == DQ_OK) {
                assert_non_null (got);
                assert_int_equal (got->rid, 5);
                dq_msg_destroy (&got);
            }
            else {
                assert_null (got);
                assert_int_equal (err, cases [c].err);
                assert_true (strlen (reason) > 0);
                if (dir == 0) {
                    assert_int_equal (rid2_size, rid_size);
                    assert_memory_equal (rid2, rid, rid_size);
                }
            }
            //  The marker comes next, whole.
            got = dq_msg_recv (to, dir? NULL: rid2, dir? NULL: &rid2_size, 0, &err,
                               reason);
            assert_non_null (got);
            assert_int_equal (got->cmd, DQ_CMD_HEARTBEAT);
            assert_int_equal (got->rid, 1000 + c);
            dq_msg_destroy (&got);
        }
    }

    //  Nothing waiting: NULL with DQ_OK and EAGAIN.
    dq_err_t err = DQ_ERR_INTERNAL;
    got = dq_msg_recv (pair.router, rid, &rid_size, ZMQ_DONTWAIT, &err, NULL);
    assert_null (got);
    assert_int_equal (err, DQ_OK);
    assert_int_equal (errno, EAGAIN);
    got = dq_msg_recv (pair.dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL);
    assert_null (got);
    assert_int_equal (err, DQ_OK);

    //  A message over a limit is not sent at all: the next one arrives first.
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_OUTPUT);
    void *huge_output = calloc (1, (size_t) DQ_PROTO_PAYLOAD_MAX + 1);
    assert_non_null (huge_output);
    msg.output = huge_output;
    msg.output_size = (size_t) DQ_PROTO_PAYLOAD_MAX + 1;
    errno = 0;
    assert_int_equal (dq_msg_send (&msg, pair.dealer, NULL, 0, 0), -1);
    assert_int_equal (errno, EMSGSIZE);
    free (huge_output);
    s_send_heartbeat (pair.dealer, NULL, 0, 42);
    got = s_router_recv (&pair, rid, &rid_size);
    assert_int_equal (got->rid, 42);
    dq_msg_destroy (&got);

    //  ROUTER_MANDATORY: an unknown peer is an error, not a silent drop.
    errno = 0;
    dq_msg_init (&msg, DQ_CMD_HEARTBEAT);
    assert_int_equal (dq_msg_send (&msg, pair.router, "nobody", 6, ZMQ_DONTWAIT), -1);
    assert_int_equal (errno, EHOSTUNREACH);

    s_pair_close (&pair);
}

//  Batched JOB (tasks) and DONE (results) round trip, and their checks.
//  DAG with and without summary: the flag survives, absent means false.
static void
test_proto_dag_summary (void **state)
{
    (void) state;
    dq_msg_t in;
    dq_msg_init (&in, DQ_CMD_DAG);
    in.rid = 9;
    in.id = "b1-d3";
    dq_msg_t *out = s_roundtrip (&in);
    assert_false (out->summary);
    s_str_eq (out->id, "b1-d3");
    dq_msg_destroy (&out);
    in.summary = true;
    out = s_roundtrip (&in);
    assert_true (out->summary);
    dq_msg_destroy (&out);
}

//  DAG pages: offset and limit travel, a limit over DQ_PROTO_DAG_JOBS_MAX
//  is refused as too big, and DAG_INFO carries where the next page starts.
static void
test_proto_dag_pages (void **state)
{
    (void) state;
    dq_msg_t in;
    dq_msg_init (&in, DQ_CMD_DAG);
    in.id = "b1-d3";
    in.offset = 20000;
    in.limit = DQ_PROTO_DAG_JOBS_MAX;
    dq_msg_t *out = s_roundtrip (&in);
    assert_int_equal (out->offset, 20000);
    assert_int_equal (out->limit, DQ_PROTO_DAG_JOBS_MAX);
    dq_msg_destroy (&out);
    in.limit = DQ_PROTO_DAG_JOBS_MAX + 1;
    void *body = NULL;
    size_t size = 0;
    assert_int_equal (dq_msg_encode (&in, &body, &size), 0);
    s_expect_fail (DQ_CMD_DAG, body, size, DQ_ERR_TOO_BIG);
    free (body);

    dq_daginfo_t dag = { .id = "b1-d3", .total = 5 };
    dq_jobinfo_t infos [3] = { { .id = "b1-4" }, { .id = "b1-5" }, { .id = "b1-6" } };
    dq_msg_init (&in, DQ_CMD_DAG_INFO);
    in.dag = &dag;
    in.infos = infos;
    in.ninfos = 2;
    in.next_offset = 2;
    out = s_roundtrip (&in);
    assert_int_equal (out->next_offset, 2);
    assert_int_equal (out->ninfos, 2);
    dq_msg_destroy (&out);
}

//  dq_msg_append_infos gathers DAG_INFO pages into the first: every job in
//  order, the last page's next_offset, and one destroy frees them all
//  (the sanitizer build checks that); a page that points back is refused.
static void
test_proto_dag_append_pages (void **state)
{
    (void) state;
    dq_daginfo_t dag = { .id = "b1-d3", .total = 5 };
    dq_jobinfo_t infos [5] = { { .id = "b1-4" }, { .id = "b1-5" }, { .id = "b1-6" },
                               { .id = "b1-7" }, { .id = "b1-8" } };
    dq_msg_t in;
    dq_msg_init (&in, DQ_CMD_DAG_INFO);
    in.dag = &dag;
    in.infos = infos;
    in.ninfos = 2;
    in.next_offset = 2;
    dq_msg_t *all = s_roundtrip (&in);
    in.infos = infos + 2;
    in.next_offset = 4;
    dq_msg_t *page = s_roundtrip (&in);
    assert_int_equal (dq_msg_append_infos (all, &page), 0);
    assert_null (page);
    assert_int_equal (all->next_offset, 4);
    //  A page whose next page would be one already read is refused.
    in.next_offset = 3;
    page = s_roundtrip (&in);
    assert_int_equal (dq_msg_append_infos (all, &page), DQ_ERR_PROTOCOL);
    assert_null (page);
    assert_int_equal (all->ninfos, 4);
    assert_int_equal (all->next_offset, 4);
    in.infos = infos + 4;
    in.ninfos = 1;
    in.next_offset = 0;
    page = s_roundtrip (&in);
    assert_int_equal (dq_msg_append_infos (all, &page), 0);
    //  An empty page changes nothing but next_offset.
    in.ninfos = 0;
    page = s_roundtrip (&in);
    assert_int_equal (dq_msg_append_infos (all, &page), 0);
    assert_int_equal (all->ninfos, 5);
    assert_int_equal (all->next_offset, 0);
    for (int i = 0; i < 5; i++)
        assert_string_equal (all->infos [i].id, infos [i].id);
    s_str_eq (all->dag->id, "b1-d3");
    //  Only decoded messages gather: the page is destroyed either way.
    dq_msg_t *encoded = calloc (1, sizeof *encoded);
    assert_non_null (encoded);
    dq_msg_init (encoded, DQ_CMD_DAG_INFO);
    page = s_roundtrip (&in);
    assert_int_equal (dq_msg_append_infos (encoded, &page), DQ_ERR_INTERNAL);
    assert_null (page);
    free (encoded);
    dq_msg_destroy (&all);
}

static void
test_proto_batches (void **state)
{
    (void) state;
    dq_parent_t parents [1] = { { "b1-1", "up", "\0out", 4 } };
    dq_task_rec_t tasks [2] = {
        { "b1-2", "echo", "p\0q", 3, "text/plain", 1, 500, parents, 1 },
        { "b1-3", "sha256", NULL, 0, NULL, 2, 0, NULL, 0 } };
    dq_msg_t in;
    dq_msg_init (&in, DQ_CMD_JOB);
    in.tasks = tasks;
    in.ntasks = 2;
    dq_msg_t *out = s_roundtrip (&in);
    assert_non_null (out);
    assert_int_equal (out->ntasks, 2);
    assert_string_equal (out->tasks [0].id, "b1-2");
    assert_string_equal (out->tasks [0].type, "echo");
    assert_int_equal (out->tasks [0].payload_size, 3);
    assert_memory_equal (out->tasks [0].payload, "p\0q", 3);
    assert_string_equal (out->tasks [0].content_type, "text/plain");
    assert_int_equal (out->tasks [0].timeout_ms, 500);
    assert_int_equal (out->tasks [0].nparents, 1);
    assert_memory_equal (out->tasks [0].parents [0].output, "\0out", 4);
    assert_int_equal (out->tasks [1].attempt, 2);
    assert_null (out->tasks [1].payload);
    dq_msg_destroy (&out);

    dq_result_rec_t results [2] = {
        { "b1-2", 1, true, "o", 1, NULL, "text/plain" },
        { "b1-3", 2, false, NULL, 0, "boom", NULL } };
    dq_msg_init (&in, DQ_CMD_DONE);
    in.results = results;
    in.nresults = 2;
    out = s_roundtrip (&in);
    assert_non_null (out);
    assert_int_equal (out->nresults, 2);
    assert_true (out->results [0].ok);
    assert_memory_equal (out->results [0].output, "o", 1);
    assert_false (out->results [1].ok);
    assert_string_equal (out->results [1].error, "boom");
    dq_msg_destroy (&out);

    //  A task without a type, a result without an id: invalid.
    tasks [1].type = NULL;
    dq_msg_init (&in, DQ_CMD_JOB);
    in.tasks = tasks;
    in.ntasks = 2;
    void *body;
    size_t size;
    assert_int_equal (dq_msg_encode (&in, &body, &size), 0);
    dq_err_t err;
    assert_null (s_decode (DQ_CMD_JOB, body, size, &err));
    assert_int_equal (err, DQ_ERR_INVALID);
    free (body);
    results [0].id = NULL;
    dq_msg_init (&in, DQ_CMD_DONE);
    in.results = results;
    in.nresults = 2;
    assert_int_equal (dq_msg_encode (&in, &body, &size), 0);
    assert_null (s_decode (DQ_CMD_DONE, body, size, &err));
    assert_int_equal (err, DQ_ERR_INVALID);
    free (body);
}

//  The pull reader types integers by value, whatever their encoding (as
//  msgpack-c did), steps over unknown keys whatever they hold, and gives
//  jobs of one SUBMIT with equal types one shared string.
static void
test_proto_reader_encodings (void **state)
{
    (void) state;
    pack_t p;
    s_pack_init (&p);
    msgpack_packer *pk = &p.pk;
    msgpack_pack_map (pk, 3);
    s_pk_str (pk, "rid");
    msgpack_pack_fix_int8 (pk, 5);              //  signed format, positive value
    s_pk_str (pk, "x-future");                  //  unknown, nested
    msgpack_pack_map (pk, 2);
    s_pk_str (pk, "a");
    msgpack_pack_array (pk, 3);
    msgpack_pack_nil (pk);
    msgpack_pack_double (pk, 2.5);
    msgpack_pack_map (pk, 1);
    s_pk_str (pk, "jobs");                      //  a known name, nested: ignored
    msgpack_pack_array (pk, 0);
    s_pk_str (pk, "b");
    msgpack_pack_ext (pk, 3, 1);
    msgpack_pack_ext_body (pk, "xyz", 3);
    s_pk_str (pk, "jobs");
    msgpack_pack_array (pk, 3);
    msgpack_pack_map (pk, 4);
    s_pk_str (pk, "type");
    s_pk_str (pk, "resize");
    s_pk_str (pk, "priority");
    msgpack_pack_fix_int16 (pk, -300);
    s_pk_str (pk, "attempts");
    msgpack_pack_fix_int32 (pk, 7);
    s_pk_str (pk, "unknown");
    msgpack_pack_array (pk, 2);
    msgpack_pack_map (pk, 0);
    msgpack_pack_fix_uint64 (pk, 9);
    msgpack_pack_map (pk, 2);
    s_pk_str (pk, "type");
    s_pk_str (pk, "resize");
    s_pk_str (pk, "deps");
    msgpack_pack_array (pk, 1);
    msgpack_pack_map (pk, 1);
    s_pk_str (pk, "idx");
    msgpack_pack_fix_uint16 (pk, 0);
    msgpack_pack_map (pk, 1);
    s_pk_str (pk, "type");
    s_pk_str (pk, "upload");
    dq_msg_t *m = s_expect_ok (DQ_CMD_SUBMIT, p.sb.data, p.sb.size);
    assert_int_equal (m->rid, 5);
    assert_int_equal (m->njobs, 3);
    assert_int_equal (m->jobs [0].priority, -300);
    assert_int_equal (m->jobs [0].attempts, 7);
    assert_string_equal (m->jobs [0].type, "resize");
    assert_ptr_equal (m->jobs [1].type, m->jobs [0].type);
    assert_string_equal (m->jobs [2].type, "upload");
    assert_int_equal (m->jobs [1].ndeps, 1);
    assert_int_equal (m->jobs [1].deps [0].idx, 0);
    dq_msg_destroy (&m);
    //  Cut anywhere, the same body is refused, never read past its end.
    for (size_t cut = 0; cut < p.sb.size; cut++)
        s_expect_fail (DQ_CMD_SUBMIT, p.sb.data, cut, DQ_ERR_INVALID);
    s_pack_fini (&p);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_proto_names),
        cmocka_unit_test (test_proto_hist_bucket),
        cmocka_unit_test (test_proto_roundtrip_every_command_full),
        cmocka_unit_test (test_proto_roundtrip_every_command_minimal),
        cmocka_unit_test (test_proto_encode_omits_absent),
        cmocka_unit_test (test_proto_absent_is_zero),
        cmocka_unit_test (test_proto_dep_forms),
        cmocka_unit_test (test_proto_status_ids_cap),
        cmocka_unit_test (test_proto_wrong_types),
        cmocka_unit_test (test_proto_unknown_keys_ignored),
        cmocka_unit_test (test_proto_non_map_body),
        cmocka_unit_test (test_proto_non_string_keys),
        cmocka_unit_test (test_proto_huge_declared_lengths),
        cmocka_unit_test (test_proto_deep_nesting),
        cmocka_unit_test (test_proto_bad_frames),
        cmocka_unit_test (test_proto_strings),
        cmocka_unit_test (test_proto_type_names),
        cmocka_unit_test (test_proto_bad_deps),
        cmocka_unit_test (test_proto_required_fields),
        cmocka_unit_test (test_proto_parent_arrays),
        cmocka_unit_test (test_proto_duplicate_keys),
        cmocka_unit_test (test_proto_max_sizes),
        cmocka_unit_test (test_proto_truncated),
        cmocka_unit_test (test_proto_fuzz),
        cmocka_unit_test (test_proto_event_roundtrip),
        cmocka_unit_test (test_proto_event_decode_hostile),
        cmocka_unit_test (test_proto_socket_inproc),
        cmocka_unit_test (test_proto_socket_tcp),
        cmocka_unit_test (test_proto_socket_bad_frames),
        cmocka_unit_test (test_proto_batches),
        cmocka_unit_test (test_proto_dag_summary),
        cmocka_unit_test (test_proto_dag_pages),
        cmocka_unit_test (test_proto_dag_append_pages),
        cmocka_unit_test (test_proto_reader_encodings),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
