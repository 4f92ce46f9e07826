/*  test_sched.c - unit tests for dq_sched (ready queues, worker choice).

    The tests play the broker: when dq_sched_next pairs a job with a worker,
    they count the job in worker->inflight, stamp worker->tick from a
    counter and call dq_sched_worker_changed; finishing a job does the
    reverse. Checked: priority then FIFO order, capacity never exceeded,
    least-loaded choice with ties to the smallest tick, no dispatch to a
    worker without the type, stalled and draining workers, leave and join,
    round robin across types sharing workers, dequeue, and a seeded random
    simulation checked against a brute-force oracle after every step.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dq_sched.h"

#define MAX_JOBS    20000
#define MAX_WORKERS 16

typedef struct {
    dq_sched_t *sched;
    dq_bjob_t *jobs;            //  MAX_JOBS records
    dq_bworker_t *workers;      //  MAX_WORKERS records
    uint64_t seq;               //  next job sequence (FIFO order)
    uint64_t tick;              //  dispatch counter, as the broker keeps
    uint64_t dispatched;
} fix_t;

static int
setup (void **state)
{
    fix_t *fx = calloc (1, sizeof *fx);
    assert_non_null (fx);
    fx->sched = dq_sched_new ();
    fx->jobs = calloc (MAX_JOBS, sizeof (dq_bjob_t));
    fx->workers = calloc (MAX_WORKERS, sizeof (dq_bworker_t));
    assert_non_null (fx->sched);
    assert_non_null (fx->jobs);
    assert_non_null (fx->workers);
    for (int i = 0; i < MAX_WORKERS; i++)
        fx->workers [i].num = (uint32_t) i + 1;
    *state = fx;
    return 0;
}

static int
teardown (void **state)
{
    fix_t *fx = *state;
    //  Workers leave before the scheduler goes (their memberships point into
    //  its heaps), as in the broker.
    for (int i = 0; i < MAX_WORKERS; i++) {
        dq_sched_worker_leave (fx->sched, &fx->workers [i]);
        dq_sched_worker_leave (fx->sched, &fx->workers [i]);    //  harmless
    }
    dq_sched_destroy (&fx->sched);
    assert_null (fx->sched);
    dq_sched_destroy (&fx->sched);          //  NULL-safe
    free (fx->jobs);
    free (fx->workers);
    free (fx);
    return 0;
}

//  splitmix64: seedable, so runs are reproducible.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

//  Create job i of the given type and priority with the next sequence, and
//  queue it.
static dq_bjob_t *
s_job (fix_t *fx, size_t i, const char *type, int32_t priority)
{
    assert_true (i < MAX_JOBS);
    dq_bjob_t *job = &fx->jobs [i];
    memset (job, 0, sizeof *job);
    job->node.id = ++fx->seq;
    job->priority = priority;
    job->type = dq_sched_type (fx->sched, type, true);
    assert_non_null (job->type);
    job->state = DQ_STATE_QUEUED;
    assert_int_equal (dq_sched_enqueue (fx->sched, job), 0);
    assert_int_equal (job->where, DQ_WHERE_READY);
    return job;
}

static dq_bworker_t *
s_worker (fix_t *fx, int i, uint32_t capacity, const char *const *types, uint32_t ntypes)
{
    assert_true (i < MAX_WORKERS);
    dq_bworker_t *w = &fx->workers [i];
    w->capacity = capacity;
    assert_int_equal (dq_sched_worker_join (fx->sched, w, types, ntypes), 0);
    return w;
}

static bool
s_has_type (const dq_bworker_t *w, const dq_type_t *type)
{
    for (uint32_t i = 0; i < w->nmembers; i++)
        if (w->members [i].type == type)
            return true;
    return false;
}

//  One dispatch, the broker's way. Returns false when nothing can go.
static bool
s_next (fix_t *fx, dq_bjob_t **job_p, dq_bworker_t **worker_p)
{
    dq_bjob_t *job = NULL;
    dq_bworker_t *w = NULL;
    if (!dq_sched_next (fx->sched, &job, &w))
        return false;
    assert_non_null (job);
    assert_non_null (w);
    assert_int_equal (job->where, DQ_WHERE_NONE);
    assert_true (dq_sched_worker_free (w));
    assert_true (s_has_type (w, job->type));
    assert_int_equal (job->state, DQ_STATE_QUEUED);
    job->state = DQ_STATE_RUNNING;
    job->worker = w;
    w->inflight++;
    assert_true (w->inflight <= w->capacity);
    w->tick = ++fx->tick;
    dq_sched_worker_changed (fx->sched, w);
    fx->dispatched++;
    if (job_p)
        *job_p = job;
    if (worker_p)
        *worker_p = w;
    return true;
}

//  The job finished: its worker has a slot again.
static void
s_finish (fix_t *fx, dq_bjob_t *job)
{
    dq_bworker_t *w = job->worker;
    assert_non_null (w);
    assert_true (w->inflight > 0);
    w->inflight--;
    job->worker = NULL;
    job->state = DQ_STATE_SUCCEEDED;
    dq_sched_worker_changed (fx->sched, w);
}

//  ---------------------------------------------------------------------------

static void
test_sched_types (void **state)
{
    fix_t *fx = *state;
    assert_int_equal (dq_sched_ntypes (fx->sched), 0);
    assert_null (dq_sched_type (fx->sched, "echo", false));
    assert_null (dq_sched_type_at (fx->sched, 0));
    dq_type_t *echo = dq_sched_type (fx->sched, "echo", true);
    assert_non_null (echo);
    assert_string_equal (echo->name, "echo");
    assert_ptr_equal (dq_sched_type (fx->sched, "echo", false), echo);
    assert_ptr_equal (dq_sched_type (fx->sched, "echo", true), echo);
    assert_int_equal (dq_sched_ntypes (fx->sched), 1);
    //  Many types: the table grows; order of creation is kept.
    char name [32];
    for (int i = 0; i < 200; i++) {
        snprintf (name, sizeof name, "t%d", i);
        assert_non_null (dq_sched_type (fx->sched, name, true));
    }
    assert_int_equal (dq_sched_ntypes (fx->sched), 201);
    assert_ptr_equal (dq_sched_type_at (fx->sched, 0), echo);
    assert_string_equal (dq_sched_type_at (fx->sched, 200)->name, "t199");
    assert_null (dq_sched_type_at (fx->sched, 201));
    assert_ptr_equal (dq_sched_type (fx->sched, "t57", false), dq_sched_type_at (fx->sched, 58));
    //  Nothing queued, nobody there.
    dq_bjob_t *job;
    dq_bworker_t *w;
    assert_false (dq_sched_next (fx->sched, &job, &w));
}

//  Within a type: higher priority first, equal priorities in sequence order,
//  whatever order they were queued in.
static void
test_sched_priority_then_fifo (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "echo" };
    s_worker (fx, 0, 100000, types, 1);
    uint64_t rng = 1;
    size_t n = 5000;
    //  Sequences are handed out in order, but jobs are queued shuffled.
    size_t *order = malloc (n * sizeof *order);
    assert_non_null (order);
    for (size_t i = 0; i < n; i++)
        order [i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t k = (size_t) (s_rand (&rng) % (i + 1));
        size_t t = order [i]; order [i] = order [k]; order [k] = t;
    }
    for (size_t i = 0; i < n; i++) {
        fx->jobs [i].node.id = i + 1;
        fx->jobs [i].priority = (int32_t) (s_rand (&rng) % 7) - 3;
    }
    fx->jobs [17].priority = INT32_MAX;
    fx->jobs [18].priority = INT32_MIN;
    dq_type_t *type = dq_sched_type (fx->sched, "echo", true);
    for (size_t i = 0; i < n; i++) {
        dq_bjob_t *job = &fx->jobs [order [i]];
        job->type = type;
        job->state = DQ_STATE_QUEUED;
        assert_int_equal (dq_sched_enqueue (fx->sched, job), 0);
    }
    free (order);
    assert_int_equal (dq_heap_size (type->ready), n);
    dq_bjob_t *prev = NULL, *job;
    size_t count = 0;
    while (s_next (fx, &job, NULL)) {
        if (prev) {
            assert_true (job->priority <= prev->priority);
            if (job->priority == prev->priority)
                assert_true (job->node.id > prev->node.id);
        }
        else
            assert_int_equal (job->priority, INT32_MAX);
        prev = job;
        count++;
    }
    assert_int_equal (count, n);
    assert_int_equal (prev->priority, INT32_MIN);
    assert_int_equal (dq_heap_size (type->ready), 0);
}

//  Never more than capacity in flight; a freed slot is used again.
static void
test_sched_capacity (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "t" };
    dq_bworker_t *a = s_worker (fx, 0, 1, types, 1);
    dq_bworker_t *b = s_worker (fx, 1, 2, types, 1);
    dq_bworker_t *c = s_worker (fx, 2, 5, types, 1);
    for (size_t i = 0; i < 100; i++)
        s_job (fx, i, "t", 0);
    dq_bjob_t *given [8];
    int n = 0;
    dq_bjob_t *job;
    while (s_next (fx, &job, NULL)) {
        assert_true (n < 8);
        given [n++] = job;
    }
    assert_int_equal (n, 8);
    assert_int_equal (a->inflight, 1);
    assert_int_equal (b->inflight, 2);
    assert_int_equal (c->inflight, 5);
    assert_false (dq_sched_worker_free (a));
    //  Finish one of b's: the next job goes to b, then nothing again.
    for (int i = 0; i < n; i++)
        if (given [i]->worker == b) {
            s_finish (fx, given [i]);
            break;
        }
    dq_bworker_t *w;
    assert_true (s_next (fx, &job, &w));
    assert_ptr_equal (w, b);
    assert_false (s_next (fx, NULL, NULL));
    //  Capacity raised (a READY update): the new slots fill.
    c->capacity = 7;
    dq_sched_worker_changed (fx->sched, c);
    assert_true (s_next (fx, NULL, &w));
    assert_ptr_equal (w, c);
    assert_true (s_next (fx, NULL, &w));
    assert_ptr_equal (w, c);
    assert_false (s_next (fx, NULL, NULL));
    //  Capacity lowered below inflight: nothing more until it drains below.
    c->capacity = 3;
    dq_sched_worker_changed (fx->sched, c);
    assert_false (dq_sched_worker_free (c));
    for (int i = 0; i < n; i++)
        if (given [i]->worker == a) {
            s_finish (fx, given [i]);
            break;
        }
    assert_true (s_next (fx, NULL, &w));
    assert_ptr_equal (w, a);
    assert_false (s_next (fx, NULL, NULL));
    assert_int_equal (c->inflight, 7);
}

//  The least loaded worker (inflight/capacity) gets the job; ties go to the
//  one given a job longest ago (smallest tick).
static void
test_sched_least_loaded (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "t" };
    dq_bworker_t *a = s_worker (fx, 0, 4, types, 1);
    dq_bworker_t *b = s_worker (fx, 1, 2, types, 1);
    dq_bworker_t *c = s_worker (fx, 2, 8, types, 1);
    //  Distinct starting ticks: b idle longest, then c, then a.
    a->tick = 3;
    b->tick = 1;
    c->tick = 2;
    fx->tick = 3;
    dq_sched_worker_changed (fx->sched, a);
    dq_sched_worker_changed (fx->sched, b);
    dq_sched_worker_changed (fx->sched, c);
    for (size_t i = 0; i < 14; i++)
        s_job (fx, i, "t", 0);
    //  Loads (a/4, b/2, c/8), ties by tick:
    //  0: all 0 -> b (tick 1). b=1/2.
    //  1: a 0, c 0 -> c (tick 2). c=1/8.
    //  2: a 0 -> a. a=1/4.
    //  3: c 1/8 -> c. c=2/8.
    //  4: a 1/4, c 2/8 tie -> a (tick 6 < 7). a=2/4.
    //  5: c 2/8 -> c. c=3/8.
    //  6: c 3/8 < a,b 1/2 -> c. c=4/8.
    //  7: a 2/4 (tick 8), b 1/2 (tick 4), c 4/8 (tick 10) -> b. b=2/2 full.
    //  8: a 2/4 (tick 8), c 4/8 (tick 10) -> a. a=3/4.
    //  9: c 4/8 -> c. c=5/8.
    //  10: c 5/8 < a 3/4 -> c. c=6/8.
    //  11: a 3/4 (tick 12), c 6/8 (tick 14) -> a. a full.
    //  12: c. 13: c. Then everything is full.
    dq_bworker_t *expect [] = { b, c, a, c, a, c, c, b, a, c, c, a, c, c };
    for (size_t i = 0; i < sizeof expect / sizeof expect [0]; i++) {
        dq_bworker_t *w;
        assert_true (s_next (fx, NULL, &w));
        if (w != expect [i])
            fail_msg ("dispatch %zu went to worker %u, expected %u", i, w->num,
                      expect [i]->num);
    }
    assert_false (s_next (fx, NULL, NULL));
    assert_int_equal (a->inflight, 4);
    assert_int_equal (b->inflight, 2);
    assert_int_equal (c->inflight, 8);
}

//  A job goes only to a worker that announced its type; a type nobody runs
//  waits in its queue without blocking the others.
static void
test_sched_type_filter (void **state)
{
    fix_t *fx = *state;
    const char *ta [] = { "a" }, *tb [] = { "b" };
    dq_bworker_t *wa = s_worker (fx, 0, 100, ta, 1);
    dq_bworker_t *wb = s_worker (fx, 1, 100, tb, 1);
    dq_bworker_t *none = s_worker (fx, 2, 100, NULL, 0);
    assert_int_equal (none->nmembers, 0);
    size_t j = 0;
    for (int i = 0; i < 20; i++) {
        s_job (fx, j++, "c", 5);                //  nobody runs c
        s_job (fx, j++, i % 2? "a": "b", 0);
    }
    dq_bjob_t *job;
    dq_bworker_t *w;
    int na = 0, nb = 0;
    while (s_next (fx, &job, &w)) {
        assert_string_not_equal (job->type->name, "c");
        if (strcmp (job->type->name, "a") == 0) {
            assert_ptr_equal (w, wa);
            na++;
        }
        else {
            assert_ptr_equal (w, wb);
            nb++;
        }
    }
    assert_int_equal (na, 10);
    assert_int_equal (nb, 10);
    assert_int_equal (none->inflight, 0);
    dq_type_t *c = dq_sched_type (fx->sched, "c", false);
    assert_int_equal (dq_heap_size (c->ready), 20);
    //  A worker for c arrives: it gets them, in order.
    const char *tc [] = { "c" };
    dq_bworker_t *wc = s_worker (fx, 3, 100, tc, 1);
    uint64_t last = 0;
    while (s_next (fx, &job, &w)) {
        assert_ptr_equal (w, wc);
        assert_true (job->node.id > last);
        last = job->node.id;
    }
    assert_int_equal (wc->inflight, 20);
}

//  A stalled worker (sends would block) and a draining one (capacity 0) get
//  nothing, and get jobs again once that changes.
static void
test_sched_stalled_and_draining (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "t" };
    dq_bworker_t *a = s_worker (fx, 0, 10, types, 1);
    dq_bworker_t *b = s_worker (fx, 1, 10, types, 1);
    a->stalled = true;
    dq_sched_worker_changed (fx->sched, a);
    assert_false (dq_sched_worker_free (a));
    for (size_t i = 0; i < 30; i++)
        s_job (fx, i, "t", 0);
    dq_bworker_t *w;
    for (int i = 0; i < 10; i++) {
        assert_true (s_next (fx, NULL, &w));
        assert_ptr_equal (w, b);
    }
    assert_false (s_next (fx, NULL, NULL));      //  b full, a stalled
    a->stalled = false;
    dq_sched_worker_changed (fx->sched, a);
    assert_true (s_next (fx, NULL, &w));
    assert_ptr_equal (w, a);
    //  Draining: capacity 0.
    a->capacity = 0;
    dq_sched_worker_changed (fx->sched, a);
    assert_false (s_next (fx, NULL, NULL));
    //  Only stalled workers: nothing, however many jobs wait.
    a->capacity = 10;
    a->stalled = true;
    dq_sched_worker_changed (fx->sched, a);
    assert_false (s_next (fx, NULL, NULL));
    dq_type_t *t = dq_sched_type (fx->sched, "t", false);
    assert_int_equal (dq_heap_size (t->ready), 19);
}

//  Leaving takes a worker out of every type; joining again (a new READY)
//  replaces its types.
static void
test_sched_leave_join (void **state)
{
    fix_t *fx = *state;
    const char *ab [] = { "a", "b", "a", "b" };     //  duplicates join once
    dq_bworker_t *w1 = s_worker (fx, 0, 100, ab, 4);
    assert_int_equal (w1->nmembers, 2);
    dq_type_t *a = dq_sched_type (fx->sched, "a", false);
    dq_type_t *b = dq_sched_type (fx->sched, "b", false);
    assert_int_equal (dq_heap_size (a->workers), 1);
    assert_int_equal (dq_heap_size (b->workers), 1);
    const char *bc [] = { "b", "c" };
    dq_bworker_t *w2 = s_worker (fx, 1, 100, bc, 2);
    dq_type_t *c = dq_sched_type (fx->sched, "c", false);
    assert_int_equal (dq_heap_size (b->workers), 2);

    dq_sched_worker_leave (fx->sched, w1);
    assert_int_equal (w1->nmembers, 0);
    assert_null (w1->members);
    assert_int_equal (dq_heap_size (a->workers), 0);
    assert_int_equal (dq_heap_size (b->workers), 1);
    for (size_t i = 0; i < 6; i++)
        s_job (fx, i, i < 3? "a": "b", 0);
    dq_bworker_t *w;
    for (int i = 0; i < 3; i++) {
        assert_true (s_next (fx, NULL, &w));
        assert_ptr_equal (w, w2);
    }
    assert_false (s_next (fx, NULL, NULL));          //  a's jobs wait

    //  w1 comes back with "a" only; w2 re-announces "c" only.
    const char *ta [] = { "a" }, *tc [] = { "c" };
    s_worker (fx, 0, 100, ta, 1);
    assert_int_equal (dq_sched_worker_join (fx->sched, w2, tc, 1), 0);
    assert_int_equal (dq_heap_size (a->workers), 1);
    assert_int_equal (dq_heap_size (b->workers), 0);
    assert_int_equal (dq_heap_size (c->workers), 1);
    for (int i = 0; i < 3; i++) {
        assert_true (s_next (fx, NULL, &w));
        assert_ptr_equal (w, w1);
    }
    assert_false (s_next (fx, NULL, NULL));
    //  Joining with no types leaves every heap.
    assert_int_equal (dq_sched_worker_join (fx->sched, w2, NULL, 0), 0);
    assert_int_equal (dq_heap_size (c->workers), 0);
    assert_int_equal (w2->nmembers, 0);
    //  Many workers join and leave in random order; heaps stay consistent.
    uint64_t rng = 3;
    const char *all [] = { "a", "b", "c" };
    for (int round = 0; round < 2000; round++) {
        int i = (int) (s_rand (&rng) % MAX_WORKERS);
        dq_bworker_t *x = &fx->workers [i];
        if (s_rand (&rng) % 3 == 0)
            dq_sched_worker_leave (fx->sched, x);
        else {
            uint32_t k = (uint32_t) (s_rand (&rng) % 3);
            assert_int_equal (dq_sched_worker_join (fx->sched, x, all + k, 3 - k), 0);
        }
    }
    for (int t = 0; t < 3; t++) {
        dq_type_t *type = dq_sched_type (fx->sched, all [t], false);
        size_t expect = 0;
        for (int i = 0; i < MAX_WORKERS; i++)
            expect += s_has_type (&fx->workers [i], type);
        assert_int_equal (dq_heap_size (type->workers), expect);
        for (size_t pos = 0; pos < dq_heap_size (type->workers); pos++) {
            dq_member_t *m = dq_heap_at (type->workers, pos);
            assert_int_equal (m->pos, pos);
            assert_ptr_equal (m->type, type);
        }
    }
}

//  Types sharing workers are served in turn, so a long queue of one type
//  does not starve another.
static void
test_sched_round_robin (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "a", "b", "c" };
    s_worker (fx, 0, 100000, types, 3);
    size_t j = 0;
    for (int i = 0; i < 1000; i++)
        s_job (fx, j++, "a", 10);                   //  a: long, high priority
    for (int i = 0; i < 10; i++)
        s_job (fx, j++, "b", 0);
    for (int i = 0; i < 10; i++)
        s_job (fx, j++, "c", 0);
    //  The first 30 dispatches visit a, b, c in turn.
    dq_bjob_t *job;
    const char *expect = "abc";
    for (int i = 0; i < 30; i++) {
        assert_true (s_next (fx, &job, NULL));
        assert_int_equal (job->type->name [0], expect [i % 3]);
    }
    //  Then only a is left.
    int rest = 0;
    while (s_next (fx, &job, NULL)) {
        assert_string_equal (job->type->name, "a");
        rest++;
    }
    assert_int_equal (rest, 990);
}

//  With one free slot at a time, types still alternate.
static void
test_sched_round_robin_one_slot (void **state)
{
    fix_t *fx = *state;
    const char *types [] = { "a", "b" };
    s_worker (fx, 0, 1, types, 2);
    size_t j = 0;
    for (int i = 0; i < 50; i++)
        s_job (fx, j++, "a", 0);
    for (int i = 0; i < 5; i++)
        s_job (fx, j++, "b", 0);
    int nb = 0;
    dq_bjob_t *job;
    for (int i = 0; i < 10; i++) {
        assert_true (s_next (fx, &job, NULL));
        assert_false (s_next (fx, NULL, NULL));
        nb += job->type->name [0] == 'b';
        s_finish (fx, job);
    }
    assert_int_equal (nb, 5);
}

//  A queued job taken out (cancelled) never comes out of dq_sched_next.
static void
test_sched_dequeue (void **state)
{
    fix_t *fx = *state;
    for (size_t i = 0; i < 10; i++)
        s_job (fx, i, "t", (int32_t) (i % 3));
    dq_type_t *t = dq_sched_type (fx->sched, "t", false);
    size_t gone [] = { 2, 5, 9, 0 };            //  includes the current head
    for (size_t i = 0; i < sizeof gone / sizeof gone [0]; i++) {
        dq_bjob_t *job = &fx->jobs [gone [i]];
        dq_sched_dequeue (fx->sched, job);
        assert_int_equal (job->where, DQ_WHERE_NONE);
        dq_sched_dequeue (fx->sched, job);      //  again: nothing happens
        job->state = DQ_STATE_CANCELLED;
    }
    assert_int_equal (dq_heap_size (t->ready), 6);
    //  A job in the timer heap is not the scheduler's to remove.
    dq_bjob_t *timer_job = &fx->jobs [100];
    timer_job->where = DQ_WHERE_TIMER;
    timer_job->pos = 0;
    timer_job->type = t;
    dq_sched_dequeue (fx->sched, timer_job);
    assert_int_equal (timer_job->where, DQ_WHERE_TIMER);
    assert_int_equal (dq_heap_size (t->ready), 6);

    const char *types [] = { "t" };
    s_worker (fx, 0, 100, types, 1);
    dq_bjob_t *job;
    int n = 0;
    int32_t prio = INT32_MAX;
    while (s_next (fx, &job, NULL)) {
        for (size_t i = 0; i < sizeof gone / sizeof gone [0]; i++)
            assert_ptr_not_equal (job, &fx->jobs [gone [i]]);
        assert_true (job->priority <= prio);
        prio = job->priority;
        n++;
    }
    assert_int_equal (n, 6);
    //  Queued again later (a retry): it is back in order.
    dq_bjob_t *again = &fx->jobs [5];
    again->state = DQ_STATE_QUEUED;
    assert_int_equal (dq_sched_enqueue (fx->sched, again), 0);
    assert_true (s_next (fx, &job, NULL));
    assert_ptr_equal (job, again);
}

//  ---------------------------------------------------------------------------
//  Random simulation against a brute-force oracle

#define SIM_TYPES 5

static const char *s_sim_types [SIM_TYPES] = { "t0", "t1", "t2", "t3", "t4" };

//  The queued jobs, kept by the test so the oracle need not scan them all.
typedef struct {
    size_t *list;               //  indexes of queued jobs
    size_t *pos;                //  per job index: its place in list
    size_t n;
} queued_t;

static void
s_queued_add (queued_t *q, size_t j)
{
    q->pos [j] = q->n;
    q->list [q->n++] = j;
}

static void
s_queued_remove (queued_t *q, size_t j)
{
    size_t at = q->pos [j];
    assert_true (at < q->n && q->list [at] == j);
    q->list [at] = q->list [--q->n];
    q->pos [q->list [at]] = at;
}

//  The best queued job of each type by brute force.
static void
s_oracle_jobs (fix_t *fx, const queued_t *q, dq_type_t **types, dq_bjob_t **best)
{
    for (int t = 0; t < SIM_TYPES; t++)
        best [t] = NULL;
    for (size_t i = 0; i < q->n; i++) {
        dq_bjob_t *j = &fx->jobs [q->list [i]];
        assert_int_equal (j->where, DQ_WHERE_READY);
        int t = 0;
        while (types [t] != j->type)
            t++;
        dq_bjob_t *b = best [t];
        if (!b || j->priority > b->priority
        ||  (j->priority == b->priority && j->node.id < b->node.id))
            best [t] = j;
    }
}

//  Is worker x a better choice than y? (load, then tick)
static bool
s_oracle_better (const dq_bworker_t *x, const dq_bworker_t *y)
{
    uint64_t lx = (uint64_t) x->inflight * y->capacity;
    uint64_t ly = (uint64_t) y->inflight * x->capacity;
    if (lx != ly)
        return lx < ly;
    return x->tick < y->tick;
}

//  The best free worker for a type by brute force.
static dq_bworker_t *
s_oracle_worker (fix_t *fx, dq_type_t *type)
{
    dq_bworker_t *best = NULL;
    for (int i = 0; i < MAX_WORKERS; i++) {
        dq_bworker_t *w = &fx->workers [i];
        if (!s_has_type (w, type) || !dq_sched_worker_free (w))
            continue;
        if (!best || s_oracle_better (w, best))
            best = w;
    }
    return best;
}

static void
test_sched_random_simulation (void **state)
{
    fix_t *fx = *state;
    uint64_t rng = 20261129;
    size_t njobs = 0;
    dq_bjob_t **running = calloc (MAX_JOBS, sizeof *running);
    assert_non_null (running);
    queued_t q = { calloc (MAX_JOBS, sizeof (size_t)), calloc (MAX_JOBS, sizeof (size_t)), 0 };
    assert_non_null (q.list);
    assert_non_null (q.pos);
    dq_type_t *types [SIM_TYPES];
    for (int t = 0; t < SIM_TYPES; t++)
        types [t] = dq_sched_type (fx->sched, s_sim_types [t], true);
    size_t nrunning = 0;
    //  Start ticks distinct so that ties are fully determined.
    for (int i = 0; i < MAX_WORKERS; i++) {
        fx->workers [i].tick = (uint64_t) i + 1;
        fx->tick = (uint64_t) i + 1;
    }
    for (int i = 0; i < 8; i++) {
        const char *names [SIM_TYPES];
        uint32_t n = 0;
        for (int t = 0; t < SIM_TYPES; t++)
            if (s_rand (&rng) % 2)
                names [n++] = s_sim_types [t];
        s_worker (fx, i, 1 + (uint32_t) (s_rand (&rng) % 6), names, n);
    }
    long steps = 0, checked = 0;
    while (njobs < MAX_JOBS && steps < 60000) {
        steps++;
        uint64_t op = s_rand (&rng) % 100;
        if (op < 25) {
            //  Submit a job.
            s_queued_add (&q, njobs);
            s_job (fx, njobs++, s_sim_types [s_rand (&rng) % SIM_TYPES],
                   (int32_t) (s_rand (&rng) % 4) - 1);
        }
        else
        if (op < 65) {
            //  Dispatch one, checked against the oracle: the job must be the
            //  best of its type and the worker the best for that type.
            dq_bjob_t *job;
            dq_bworker_t *w;
            //  Snapshot the candidates before the call changes them.
            dq_bjob_t *best_job [SIM_TYPES];
            dq_bworker_t *best_w [SIM_TYPES];
            s_oracle_jobs (fx, &q, types, best_job);
            bool any = false;
            for (int t = 0; t < SIM_TYPES; t++) {
                best_w [t] = s_oracle_worker (fx, types [t]);
                any |= best_job [t] && best_w [t];
            }
            if (!s_next (fx, &job, &w)) {
                assert_false (any);
                continue;
            }
            int t = 0;
            while (types [t] != job->type)
                t++;
            assert_ptr_equal (job, best_job [t]);
            assert_ptr_equal (w, best_w [t]);
            s_queued_remove (&q, (size_t) (job - fx->jobs));
            running [nrunning++] = job;
            checked++;
        }
        else
        if (op < 90) {
            //  Finish a random running job.
            if (nrunning) {
                size_t k = (size_t) (s_rand (&rng) % nrunning);
                s_finish (fx, running [k]);
                running [k] = running [--nrunning];
            }
        }
        else
        if (op < 93) {
            //  Stall or unstall a worker.
            dq_bworker_t *w = &fx->workers [s_rand (&rng) % 8];
            w->stalled = !w->stalled;
            dq_sched_worker_changed (fx->sched, w);
        }
        else
        if (op < 95) {
            //  Change a worker's capacity (never below what it runs: the
            //  broker does not either).
            dq_bworker_t *w = &fx->workers [s_rand (&rng) % 8];
            w->capacity = w->inflight + (uint32_t) (s_rand (&rng) % 4);
            dq_sched_worker_changed (fx->sched, w);
        }
        else
        if (op < 97) {
            //  A worker re-announces a new set of types.
            dq_bworker_t *w = &fx->workers [s_rand (&rng) % 8];
            const char *names [SIM_TYPES];
            uint32_t n = 0;
            for (int t = 0; t < SIM_TYPES; t++)
                if (s_rand (&rng) % 2)
                    names [n++] = s_sim_types [t];
            assert_int_equal (dq_sched_worker_join (fx->sched, w, names, n), 0);
        }
        else {
            //  Cancel a random queued job.
            if (njobs) {
                dq_bjob_t *j = &fx->jobs [s_rand (&rng) % njobs];
                if (j->where == DQ_WHERE_READY) {
                    s_queued_remove (&q, (size_t) (j - fx->jobs));
                    dq_sched_dequeue (fx->sched, j);
                    j->state = DQ_STATE_CANCELLED;
                }
            }
        }
        //  Invariants: no worker over capacity through our dispatches (a
        //  capacity lowered to inflight is at most equal).
        for (int i = 0; i < 8; i++)
            assert_true (fx->workers [i].inflight <= fx->workers [i].capacity);
    }
    //  Drain: finish everything, unstall everyone, and dispatch until done.
    for (int i = 0; i < 8; i++) {
        fx->workers [i].stalled = false;
        if (!fx->workers [i].capacity)
            fx->workers [i].capacity = 1;
        const char *all [SIM_TYPES];
        for (int t = 0; t < SIM_TYPES; t++)
            all [t] = s_sim_types [t];
        assert_int_equal (dq_sched_worker_join (fx->sched, &fx->workers [i], all,
                                                SIM_TYPES), 0);
    }
    while (nrunning)
        s_finish (fx, running [--nrunning]);
    dq_bjob_t *job;
    while (s_next (fx, &job, NULL))
        s_finish (fx, job);
    for (int t = 0; t < SIM_TYPES; t++)
        assert_int_equal (dq_heap_size (dq_sched_type (fx->sched, s_sim_types [t],
                                                       false)->ready), 0);
    free (running);
    free (q.list);
    free (q.pos);
    print_message ("simulation: %ld steps, %ld dispatches checked, %zu jobs\n",
                   steps, checked, njobs);
    assert_true (checked > 1000);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_sched_types, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_priority_then_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_least_loaded, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_type_filter, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_stalled_and_draining, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_leave_join, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_round_robin, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_round_robin_one_slot, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_dequeue, setup, teardown),
        cmocka_unit_test_setup_teardown (test_sched_random_simulation, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
