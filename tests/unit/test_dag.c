/*  test_dag.c - unit tests for dq_dag.

    Batch checks (cycles named in order, bad indexes, self and duplicate
    deps, duplicate names) and Kahn ordering; the tracker's release and skip
    rules on small hand-built graphs (existing finished parents, failure
    policy with run_on_failure, cancel before release, exactly once,
    forget, callbacks that call back in); batches added at once; a property
    test over 1,000 random DAGs (nodes added one by one and in batches) run
    in random order with injected failures and cancels, checked
    against an independent model; and million-node chains and fans to show
    cascades do not recurse. Random data comes from a seeded generator, so
    runs are reproducible.
*/
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dq_dag.h"

//  splitmix64: small, seedable, good enough for test data.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint32_t
s_below (uint64_t *state, uint32_t bound)
{
    return (uint32_t) (s_rand (state) % bound);
}

//  Every edge's slot points back at its child, and every child entry has
//  a matching edge: the invariant forget relies on.
static void
s_check_slots (dq_dag_node_t *const *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        dq_dag_node_t *node = nodes [i];
        for (uint32_t k = 0; k < node->nparents; k++) {
            dq_dag_node_t *parent = node->parents [k].node;
            if (!parent)
                continue;
            assert_true (node->parents [k].slot < parent->nchildren);
            assert_ptr_equal (parent->children [node->parents [k].slot], node);
        }
        assert_true (node->nchildren <= node->children_cap);
        for (uint32_t c = 0; c < node->nchildren; c++) {
            dq_dag_node_t *child = node->children [c];
            bool found = false;
            for (uint32_t k = 0; k < child->nparents; k++)
                if (child->parents [k].node == node && child->parents [k].slot == c)
                    found = true;
            assert_true (found);
        }
    }
}

//  --- Batches for dq_dag_check and dq_dag_topo_order -----------------------

#define BATCH_DEPS_MAX 8

typedef struct {
    dq_jobspec_t *jobs;
    dq_dep_t *deps;             //  BATCH_DEPS_MAX per job
    uint32_t n;
} batch_t;

static void
s_batch_init (batch_t *batch, uint32_t n, const char *const *names)
{
    batch->n = n;
    batch->jobs = calloc (n, sizeof (dq_jobspec_t));
    batch->deps = calloc ((size_t) n * BATCH_DEPS_MAX, sizeof (dq_dep_t));
    assert_non_null (batch->jobs);
    assert_non_null (batch->deps);
    for (uint32_t i = 0; i < n; i++) {
        batch->jobs [i].type = "t";
        batch->jobs [i].name = names ? names [i] : NULL;
        batch->jobs [i].deps = batch->deps + (size_t) i * BATCH_DEPS_MAX;
    }
}

//  Job child depends on job parent (an index, or -1 with id).
static void
s_batch_dep (batch_t *batch, uint32_t child, int32_t parent, const char *id)
{
    dq_jobspec_t *job = &batch->jobs [child];
    assert_true (job->ndeps < BATCH_DEPS_MAX);
    job->deps [job->ndeps].idx = parent;
    job->deps [job->ndeps].id = id;
    job->ndeps++;
}

static void
s_batch_free (batch_t *batch)
{
    free (batch->jobs);
    free (batch->deps);
    batch->jobs = NULL;
    batch->deps = NULL;
}

static int
s_check (batch_t *batch, char *err, size_t size)
{
    return dq_dag_check (batch->jobs, batch->n, err, size);
}

//  order is a permutation in which every job follows its local deps.
static void
s_assert_topo (const batch_t *batch, const uint32_t *order)
{
    uint32_t *pos = malloc (batch->n * sizeof (uint32_t));
    assert_non_null (pos);
    for (uint32_t i = 0; i < batch->n; i++)
        pos [i] = UINT32_MAX;
    for (uint32_t k = 0; k < batch->n; k++) {
        assert_true (order [k] < batch->n);
        assert_int_equal (pos [order [k]], UINT32_MAX);
        pos [order [k]] = k;
    }
    for (uint32_t i = 0; i < batch->n; i++)
        for (uint32_t k = 0; k < batch->jobs [i].ndeps; k++) {
            int32_t idx = batch->jobs [i].deps [k].idx;
            if (idx >= 0)
                assert_true (pos [idx] < pos [i]);
        }
    free (pos);
}

static void
test_dag_check_accepts_dag (void **state)
{
    (void) state;
    const char *names [] = { "fetch", "resize", "thumb", "publish" };
    batch_t b;
    s_batch_init (&b, 4, names);
    s_batch_dep (&b, 3, 1, NULL);
    s_batch_dep (&b, 3, 2, NULL);
    s_batch_dep (&b, 1, 0, NULL);
    s_batch_dep (&b, 2, 0, NULL);
    s_batch_dep (&b, 0, -1, "j-existing");     //  existing job: not checked here
    char err [128] = "junk";
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_OK);
    assert_string_equal (err, "");
    assert_int_equal (s_check (&b, NULL, 0), DQ_OK);
    assert_int_equal (dq_dag_check (NULL, 0, err, sizeof (err)), DQ_OK);

    uint32_t order [4];
    assert_int_equal (dq_dag_topo_order (b.jobs, 4, order), 0);
    s_assert_topo (&b, order);
    assert_int_equal (order [0], 0);
    assert_int_equal (order [3], 3);
    s_batch_free (&b);
}

static void
test_dag_check_names_cycle (void **state)
{
    (void) state;
    const char *names [] = { "a", "b", "c" };
    batch_t b;
    char err [128];
    uint32_t order [3];
    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 0, 1, NULL);               //  a depends on b ...
    s_batch_dep (&b, 1, 2, NULL);
    s_batch_dep (&b, 2, 0, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_CYCLE);
    assert_string_equal (err, "cycle: a -> b -> c -> a");
    assert_int_equal (dq_dag_topo_order (b.jobs, 3, order), -1);
    s_batch_free (&b);
}

static void
test_dag_check_names_two_cycle (void **state)
{
    (void) state;
    const char *names [] = { "x", "a", "b" };
    batch_t b;
    char err [128];
    uint32_t order [3];
    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 0, 2, NULL);               //  the search enters at b
    s_batch_dep (&b, 2, 1, NULL);
    s_batch_dep (&b, 1, 2, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_CYCLE);
    assert_string_equal (err, "cycle: a -> b -> a");
    assert_int_equal (dq_dag_topo_order (b.jobs, 3, order), -1);
    s_batch_free (&b);
}

static void
test_dag_check_cycle_away_from_first_job (void **state)
{
    (void) state;
    //  Job 0 is fine and leads into the cycle; jobs 4..6 form the cycle,
    //  unnamed, entered at 6.
    const char *names [] = { "root", "ok1", "ok2", NULL, NULL, NULL, NULL };
    batch_t b;
    char err [128];
    s_batch_init (&b, 7, names);
    s_batch_dep (&b, 1, 2, NULL);
    s_batch_dep (&b, 0, 1, NULL);
    s_batch_dep (&b, 0, 6, NULL);
    s_batch_dep (&b, 6, 4, NULL);
    s_batch_dep (&b, 4, 5, NULL);
    s_batch_dep (&b, 5, 6, NULL);
    s_batch_dep (&b, 5, 3, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_CYCLE);
    assert_string_equal (err, "cycle: #4 -> #5 -> #6 -> #4");
    s_batch_free (&b);
}

static void
test_dag_check_names_long_cycle (void **state)
{
    (void) state;
    const uint32_t n = 1000;
    batch_t b;
    s_batch_init (&b, n, NULL);
    for (uint32_t i = 0; i < n; i++)
        s_batch_dep (&b, i, (int32_t) ((i + 1) % n), NULL);
    size_t size = 16 * 1024;
    char *expect = malloc (size), *err = malloc (size);
    assert_non_null (expect);
    assert_non_null (err);
    size_t len = (size_t) snprintf (expect, size, "cycle: #0");
    for (uint32_t i = 1; i <= n; i++)
        len += (size_t) snprintf (expect + len, size - len, " -> #%u", i % n);
    assert_int_equal (s_check (&b, err, size), DQ_ERR_CYCLE);
    assert_string_equal (err, expect);

    //  A small buffer gets the start of it, marked as cut.
    char small [32];
    assert_int_equal (s_check (&b, small, sizeof (small)), DQ_ERR_CYCLE);
    assert_int_equal (strlen (small), sizeof (small) - 1);
    assert_memory_equal (small, expect, sizeof (small) - 4);
    assert_string_equal (small + sizeof (small) - 4, "...");
    assert_int_equal (s_check (&b, small, 1), DQ_ERR_CYCLE);
    assert_string_equal (small, "");
    free (expect);
    free (err);
    s_batch_free (&b);
}

static void
test_dag_check_rejects_self_dep (void **state)
{
    (void) state;
    const char *names [] = { "w", "x", NULL };
    batch_t b;
    char err [128];
    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 1, 0, NULL);
    s_batch_dep (&b, 1, 1, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'x': depends on itself");
    s_batch_free (&b);

    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 2, 2, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job #2: depends on itself");
    uint32_t order [3];
    assert_int_equal (dq_dag_topo_order (b.jobs, 3, order), -1);
    s_batch_free (&b);
}

static void
test_dag_check_rejects_bad_index (void **state)
{
    (void) state;
    const char *names [] = { "a", "b" };
    batch_t b;
    char err [128];
    uint32_t order [2];
    s_batch_init (&b, 2, names);
    s_batch_dep (&b, 1, 2, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'b': dependency 0 has invalid index 2 (batch of 2)");
    assert_int_equal (dq_dag_topo_order (b.jobs, 2, order), -1);
    s_batch_free (&b);

    s_batch_init (&b, 2, names);
    s_batch_dep (&b, 0, -1, "j-1");
    s_batch_dep (&b, 0, -7, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'a': dependency 1 has invalid index -7 (batch of 2)");
    assert_int_equal (dq_dag_topo_order (b.jobs, 2, order), -1);
    s_batch_free (&b);

    //  An existing-job dep needs an id.
    s_batch_init (&b, 2, names);
    s_batch_dep (&b, 1, -1, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'b': dependency 0 has neither index nor id");
    s_batch_free (&b);

    //  ndeps without an array.
    s_batch_init (&b, 2, names);
    b.jobs [0].deps = NULL;
    b.jobs [0].ndeps = 1;
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'a': dependency list missing");
    assert_int_equal (dq_dag_topo_order (b.jobs, 2, order), -1);
    assert_int_equal (dq_dag_check (NULL, 2, err, sizeof (err)), DQ_ERR_INVALID);
    s_batch_free (&b);
}

static void
test_dag_check_rejects_duplicates (void **state)
{
    (void) state;
    const char *names [] = { "a", "b", "c" };
    batch_t b;
    char err [128];
    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 1, 0, NULL);
    s_batch_dep (&b, 1, 2, NULL);
    s_batch_dep (&b, 1, 0, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "job 'b': depends twice on job 'a'");
    s_batch_free (&b);

    //  The same index in different jobs is fine.
    s_batch_init (&b, 3, names);
    s_batch_dep (&b, 1, 0, NULL);
    s_batch_dep (&b, 2, 0, NULL);
    s_batch_dep (&b, 2, 1, NULL);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_OK);
    s_batch_free (&b);

    const char *dups [] = { "a", NULL, "b", NULL, "a" };
    s_batch_init (&b, 5, dups);
    assert_int_equal (s_check (&b, err, sizeof (err)), DQ_ERR_INVALID);
    assert_string_equal (err, "duplicate name 'a': jobs #0 and #4");
    s_batch_free (&b);
}

//  --- Small tracker graphs with a recorder ---------------------------------

#define FX_NODES 32

typedef struct {
    dq_dag_t *dag;
    dq_dag_node_t node [FX_NODES];
    char log [1024];            //  "r3 s4/1 ..." ready / skip(cause)
    int ready [FX_NODES], skipped [FX_NODES];
    int depth, max_depth;       //  callback nesting
    bool auto_succeed;          //  on_ready finishes the node at once
    int cancel_on_ready [FX_NODES];     //  on_ready i cancels node [j - 1]
    int add_on_skip [FX_NODES];         //  on_skip i adds node [j - 1] under i
} fx_t;

static int
s_index (fx_t *fx, const dq_dag_node_t *node)
{
    assert_true (node >= fx->node && node < fx->node + FX_NODES);
    return (int) (node - fx->node);
}

//  Appends "r<node>" (cause < 0) or "s<node>/<cause>" to the log.
static void
s_log (fx_t *fx, int node, int cause)
{
    size_t len = strlen (fx->log);
    if (len)
        fx->log [len++] = ' ';
    if (cause < 0)
        snprintf (fx->log + len, sizeof (fx->log) - len, "r%d", node);
    else
        snprintf (fx->log + len, sizeof (fx->log) - len, "s%d/%d", node, cause);
}

static void
s_on_ready (void *arg, dq_dag_node_t *node)
{
    fx_t *fx = arg;
    int i = s_index (fx, node);
    if (++fx->depth > fx->max_depth)
        fx->max_depth = fx->depth;
    assert_int_equal (node->phase, DQ_DAG_RELEASED);
    fx->ready [i]++;
    s_log (fx, i, -1);
    if (fx->cancel_on_ready [i])
        assert_int_equal (dq_dag_finish (fx->dag, &fx->node [fx->cancel_on_ready [i] - 1],
                                         DQ_STATE_CANCELLED), 0);
    if (fx->auto_succeed)
        assert_int_equal (dq_dag_finish (fx->dag, node, DQ_STATE_SUCCEEDED), 0);
    fx->depth--;
}

static void
s_on_skip (void *arg, dq_dag_node_t *node, dq_dag_node_t *cause)
{
    fx_t *fx = arg;
    int i = s_index (fx, node);
    if (++fx->depth > fx->max_depth)
        fx->max_depth = fx->depth;
    assert_int_equal (node->phase, DQ_DAG_SKIPPED);
    assert_ptr_equal (node->skipped_by, cause);
    fx->skipped [i]++;
    s_log (fx, i, s_index (fx, cause));
    if (fx->add_on_skip [i]) {
        dq_dag_node_t *parent = node;
        assert_int_equal (dq_dag_add (fx->dag, &fx->node [fx->add_on_skip [i] - 1],
                                      &parent, NULL, 1), 0);
    }
    fx->depth--;
}

static int
setup (void **state)
{
    fx_t *fx = calloc (1, sizeof (fx_t));
    if (!fx)
        return -1;
    for (int i = 0; i < FX_NODES; i++)
        fx->node [i].id = (uint64_t) i;
    dq_dag_events_t events = { s_on_ready, s_on_skip, fx };
    fx->dag = dq_dag_new (&events);
    if (!fx->dag) {
        free (fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
teardown (void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < FX_NODES; i++)
        dq_dag_forget (fx->dag, &fx->node [i]);
    for (int i = 0; i < FX_NODES; i++) {
        assert_null (fx->node [i].parents);
        assert_null (fx->node [i].children);
    }
    dq_dag_destroy (&fx->dag);
    dq_dag_destroy (&fx->dag);
    assert_null (fx->dag);
    free (fx);
    return 0;
}

//  Adds node i under parents written as "0 3r 5" (r: run_on_failure).
static int
s_add (fx_t *fx, int i, const char *spec)
{
    dq_dag_node_t *parents [8];
    bool rof [8];
    uint32_t n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long idx = strtol (p, &end, 10);
        assert_true (end != p && n < 8);
        parents [n] = &fx->node [idx];
        rof [n] = *end == 'r';
        if (*end == 'r')
            end++;
        n++;
        while (*end == ' ')
            end++;
        p = end;
    }
    return dq_dag_add (fx->dag, &fx->node [i], parents, rof, n);
}

static int
s_finish (fx_t *fx, int i, int state)
{
    return dq_dag_finish (fx->dag, &fx->node [i], state);
}

//  Compares the callbacks so far with expect and clears the log.
#define assert_log(fx, expect) do { \
    assert_string_equal ((fx)->log, (expect)); \
    (fx)->log [0] = '\0'; \
} while (0)

static void
s_check_fx_slots (fx_t *fx)
{
    dq_dag_node_t *all [FX_NODES];
    for (int i = 0; i < FX_NODES; i++)
        all [i] = &fx->node [i];
    s_check_slots (all, FX_NODES);
}

static void
test_dag_roots_ready_at_once (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_log (fx, "r0");
    assert_int_equal (fx->node [0].phase, DQ_DAG_RELEASED);
    assert_int_equal (dq_dag_add (fx->dag, &fx->node [1], NULL, NULL, 0), 0);
    assert_log (fx, "r1");
    assert_false (dq_dag_has_pending_children (&fx->node [0]));
    assert_false (dq_dag_has_pending_children (NULL));
}

static void
test_dag_waits_for_unfinished_parents (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, ""), 0);
    assert_int_equal (s_add (fx, 2, "0 1"), 0);
    assert_int_equal (s_add (fx, 3, "2"), 0);
    assert_log (fx, "r0 r1");
    assert_int_equal (fx->node [2].unresolved, 2);
    assert_int_equal (fx->node [2].nparents, 2);
    assert_ptr_equal (fx->node [2].parents [1].node, &fx->node [1]);
    assert_true (dq_dag_has_pending_children (&fx->node [0]));

    assert_int_equal (s_finish (fx, 1, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "");
    assert_int_equal (fx->node [2].unresolved, 1);
    assert_int_equal (fx->node [2].phase, DQ_DAG_PENDING);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r2");
    //  Added while its parent is released: waits for it.
    assert_int_equal (s_add (fx, 4, "2 0"), 0);
    assert_log (fx, "");
    assert_int_equal (fx->node [4].unresolved, 1);
    assert_int_equal (s_finish (fx, 2, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r3 r4");
    assert_int_equal (fx->node [0].nchildren, 2);
    s_check_fx_slots (fx);
}

static void
test_dag_existing_finished_parents (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, ""), 0);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_FAILED), 0);
    assert_log (fx, "r0 r1");

    //  Succeeded parent: ready at once.
    assert_int_equal (s_add (fx, 2, "0"), 0);
    assert_log (fx, "r2");
    //  Failed parent: skipped at once, the failed job as cause.
    assert_int_equal (s_add (fx, 3, "0 1"), 0);
    assert_log (fx, "s3/1");
    assert_ptr_equal (fx->node [3].skipped_by, &fx->node [1]);
    //  Skipped parent: the original failure is the cause.
    assert_int_equal (s_add (fx, 4, "3"), 0);
    assert_log (fx, "s4/1");
    //  run_on_failure edges to failed or skipped parents do not block.
    assert_int_equal (s_add (fx, 5, "1r 3r 0"), 0);
    assert_log (fx, "r5");
    //  Mixed: one blocking edge is enough, even with others pending.
    assert_int_equal (s_add (fx, 6, ""), 0);
    assert_log (fx, "r6");
    assert_int_equal (s_add (fx, 7, "6 1r 4"), 0);
    assert_log (fx, "s7/1");
    assert_int_equal (fx->node [1].nchildren, 3);
    assert_int_equal (fx->node [3].nchildren, 2);
    assert_true (dq_dag_has_pending_children (&fx->node [3]));   //  5 may run
    assert_false (dq_dag_has_pending_children (&fx->node [4]));  //  7 skipped
    assert_true (dq_dag_has_pending_children (&fx->node [0]));
    //  The skipped child of a still running parent must not be released.
    assert_int_equal (s_finish (fx, 6, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "");
    assert_int_equal (fx->node [7].phase, DQ_DAG_SKIPPED);
    s_check_fx_slots (fx);
}

static void
test_dag_failure_skips_descendants_at_once (void **state)
{
    fx_t *fx = *state;
    //  0, 1 roots; 2 (0, 1); 3 (2); 4 (2 run_on_failure); 5 (3, 4);
    //  6 (0 run_on_failure, 1); 7 (3 run_on_failure).
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, ""), 0);
    assert_int_equal (s_add (fx, 2, "0 1"), 0);
    assert_int_equal (s_add (fx, 3, "2"), 0);
    assert_int_equal (s_add (fx, 4, "2r"), 0);
    assert_int_equal (s_add (fx, 5, "3 4"), 0);
    assert_int_equal (s_add (fx, 6, "0r 1"), 0);
    assert_int_equal (s_add (fx, 7, "3r"), 0);
    assert_log (fx, "r0 r1");

    //  0 fails while 1 still runs: 2 and its blocking descendants are skipped
    //  now, ancestors first; 4 and 7 run after a skipped parent (their edges
    //  say run_on_failure), 6 still waits for 1.
    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), 0);
    assert_log (fx, "s2/0 s3/0 r4 s5/0 r7");
    assert_ptr_equal (fx->node [5].skipped_by, &fx->node [0]);
    assert_int_equal (fx->node [6].phase, DQ_DAG_PENDING);
    assert_int_equal (fx->node [6].unresolved, 1);

    assert_int_equal (s_finish (fx, 1, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r6");
    assert_int_equal (fx->node [2].unresolved, 0);
    assert_int_equal (s_finish (fx, 4, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 7, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 6, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "");
    for (int i = 0; i < 8; i++) {
        assert_true (fx->ready [i] + fx->skipped [i] == 1);
        assert_false (dq_dag_has_pending_children (&fx->node [i]));
    }
}

static void
test_dag_cancelled_parent_blocks_like_failure (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "0r"), 0);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_CANCELLED), 0);
    assert_log (fx, "r0 s1/0 r2");
    assert_int_equal (fx->node [0].phase, DQ_DAG_FAILED);
}

static void
test_dag_cancel_pending_node (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "1"), 0);
    assert_int_equal (s_add (fx, 3, "1r"), 0);
    assert_int_equal (s_add (fx, 4, "2"), 0);
    assert_log (fx, "r0");

    //  Cancel 1 before it was released: it cascades like a failure.
    assert_int_equal (s_finish (fx, 1, DQ_STATE_CANCELLED), 0);
    assert_log (fx, "s2/1 r3 s4/1");
    assert_int_equal (fx->node [1].phase, DQ_DAG_FAILED);
    assert_int_equal (fx->node [1].unresolved, 1);
    //  Its parent finishing later does not release it.
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "");
    assert_int_equal (fx->node [1].phase, DQ_DAG_FAILED);
    assert_int_equal (fx->node [1].unresolved, 0);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_CANCELLED), -1);
    assert_int_equal (fx->ready [1], 0);

    //  Nor does a parent failing later skip a cancelled node.
    assert_int_equal (s_add (fx, 5, ""), 0);
    assert_int_equal (s_add (fx, 6, "5"), 0);
    assert_int_equal (s_finish (fx, 6, DQ_STATE_CANCELLED), 0);
    assert_int_equal (s_finish (fx, 5, DQ_STATE_FAILED), 0);
    assert_log (fx, "r5");
    assert_int_equal (fx->node [6].phase, DQ_DAG_FAILED);
    assert_null (fx->node [6].skipped_by);
}

static void
test_dag_finish_exactly_once (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "1"), 0);
    assert_log (fx, "r0");
    assert_int_equal (s_finish (fx, 0, DQ_STATE_RUNNING), -1);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_WAITING), -1);
    assert_int_equal (s_finish (fx, 0, 99), -1);
    assert_int_equal (s_finish (fx, 0, -1), -1);
    assert_int_equal (fx->node [0].phase, DQ_DAG_RELEASED);

    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), 0);
    assert_log (fx, "s1/0 s2/0");
    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), -1);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), -1);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_SUCCEEDED), -1);
    assert_int_equal (s_finish (fx, 2, DQ_STATE_CANCELLED), -1);
    assert_int_equal (s_finish (fx, 2, DQ_STATE_SKIPPED), -1);
    assert_log (fx, "");
    assert_int_equal (fx->node [0].phase, DQ_DAG_FAILED);
    assert_int_equal (fx->node [1].phase, DQ_DAG_SKIPPED);

    assert_int_equal (s_add (fx, 3, ""), 0);
    assert_int_equal (s_add (fx, 4, "3"), 0);
    assert_int_equal (s_finish (fx, 3, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 3, DQ_STATE_SUCCEEDED), -1);
    assert_int_equal (s_finish (fx, 3, DQ_STATE_FAILED), -1);
    assert_log (fx, "r3 r4");
    assert_int_equal (fx->ready [4], 1);
    assert_int_equal (dq_dag_finish (NULL, &fx->node [4], DQ_STATE_SUCCEEDED), -1);
    assert_int_equal (dq_dag_finish (fx->dag, NULL, DQ_STATE_SUCCEEDED), -1);
}

static void
test_dag_finish_as_skipped (void **state)
{
    fx_t *fx = *state;
    //  The broker replays a skip the tracker did not make itself.
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "1"), 0);
    assert_int_equal (s_add (fx, 3, "1r"), 0);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_SKIPPED), 0);
    assert_log (fx, "r0 s2/1 r3");
    assert_int_equal (fx->node [1].phase, DQ_DAG_SKIPPED);
    assert_int_equal (fx->skipped [1], 0);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_FAILED), -1);
    assert_int_equal (s_add (fx, 4, "2"), 0);
    assert_log (fx, "s4/1");
}

static void
test_dag_add_rejects_bad_input (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_log (fx, "r0");
    dq_dag_node_t *parents [2] = { &fx->node [0], NULL };
    assert_int_equal (dq_dag_add (fx->dag, &fx->node [1], parents, NULL, 2), -1);
    assert_int_equal (dq_dag_add (fx->dag, &fx->node [1], NULL, NULL, 1), -1);
    assert_int_equal (dq_dag_add (NULL, &fx->node [1], parents, NULL, 1), -1);
    assert_int_equal (dq_dag_add (fx->dag, NULL, parents, NULL, 1), -1);
    parents [1] = &fx->node [1];
    assert_int_equal (dq_dag_add (fx->dag, &fx->node [1], parents, NULL, 2), -1);
    //  Nothing changed: node 0 has no children, node 1 is untouched.
    assert_int_equal (fx->node [0].nchildren, 0);
    assert_null (fx->node [1].parents);
    assert_int_equal (fx->node [1].phase, DQ_DAG_PENDING);
    //  Adding a node twice.
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 1, "0"), -1);
    assert_int_equal (s_add (fx, 0, ""), -1);
    assert_int_equal (fx->node [0].nchildren, 1);
    assert_log (fx, "");
}

static void
test_dag_add_batch (void **state)
{
    fx_t *fx = *state;
    //  0 exists and failed; the batch is 1, 2 (on 1), 3 (on 0 and 2), 4
    //  (on 0, run_on_failure, and on 1 twice).
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), 0);
    assert_log (fx, "r0");
    dq_dag_node_t *nodes [4] = { &fx->node [1], &fx->node [2], &fx->node [3], &fx->node [4] };
    dq_dag_node_t *parents [6] = { &fx->node [1], &fx->node [0], &fx->node [2],
                                   &fx->node [0], &fx->node [1], &fx->node [1] };
    bool rof [6] = { false, false, false, true, false, false };
    size_t first [5] = { 0, 0, 1, 3, 6 };
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 4, first, parents, rof), 0);
    //  Callbacks once the whole batch is in, in batch order.
    assert_log (fx, "r1 s3/0");
    assert_int_equal (fx->node [1].nchildren, 3);
    assert_int_equal (fx->node [0].nchildren, 2);
    assert_int_equal (fx->node [4].unresolved, 2);
    s_check_fx_slots (fx);
    //  A later child of a batch node moves its children to an array of
    //  its own.
    assert_int_equal (s_add (fx, 5, "1 4"), 0);
    assert_int_equal (fx->node [1].nchildren, 4);
    s_check_fx_slots (fx);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r2 r4");
    assert_int_equal (s_finish (fx, 4, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r5");
    //  Forgetting batch nodes in any order keeps the rest consistent.
    dq_dag_forget (fx->dag, &fx->node [2]);
    dq_dag_forget (fx->dag, &fx->node [1]);
    s_check_fx_slots (fx);
    assert_null (fx->node [5].parents [0].node);
    assert_ptr_equal (fx->node [5].parents [1].node, &fx->node [4]);
}

static void
test_dag_add_batch_rejects_bad_input (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_log (fx, "r0");
    dq_dag_node_t *nodes [2] = { &fx->node [1], &fx->node [2] };
    //  A parent in the batch after its child.
    dq_dag_node_t *parents [2] = { &fx->node [0], &fx->node [2] };
    size_t first [3] = { 0, 2, 2 };
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, first, parents, NULL), -1);
    //  A node depending on itself, a NULL parent, a node twice, a node
    //  added already.
    parents [1] = &fx->node [1];
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, first, parents, NULL), -1);
    parents [1] = NULL;
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, first, parents, NULL), -1);
    size_t none [3] = { 0, 0, 0 };
    nodes [1] = &fx->node [1];
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, none, parents, NULL), -1);
    nodes [1] = &fx->node [0];
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, none, parents, NULL), -1);
    assert_int_equal (dq_dag_add_batch (NULL, nodes, 2, none, parents, NULL), -1);
    //  Nothing changed.
    assert_int_equal (fx->node [0].nchildren, 0);
    assert_int_equal (fx->node [0].phase, DQ_DAG_RELEASED);
    for (int i = 1; i <= 2; i++) {
        assert_null (fx->node [i].parents);
        assert_null (fx->node [i].children);
        assert_null (fx->node [i].block);
        assert_int_equal (fx->node [i].flags, 0);
        assert_int_equal (fx->node [i].children_cap, 0);
    }
    assert_log (fx, "");
    //  An empty batch is fine; then a good one.
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 0, none, NULL, NULL), 0);
    nodes [1] = &fx->node [2];
    parents [0] = &fx->node [0];
    parents [1] = &fx->node [1];
    size_t chain [3] = { 0, 1, 2 };
    assert_int_equal (dq_dag_add_batch (fx->dag, nodes, 2, chain, parents, NULL), 0);
    assert_log (fx, "");
    s_check_fx_slots (fx);
}

static void
test_dag_duplicate_parents (void **state)
{
    fx_t *fx = *state;
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0 0"), 0);
    assert_int_equal (s_add (fx, 2, "0r 0r"), 0);
    assert_int_equal (s_add (fx, 3, "0r 0"), 0);
    assert_int_equal (fx->node [0].nchildren, 6);
    assert_int_equal (fx->node [1].unresolved, 2);
    s_check_fx_slots (fx);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), 0);
    assert_log (fx, "r0 s1/0 r2 s3/0");
    assert_int_equal (fx->node [2].unresolved, 0);
    //  Forgetting the child with two edges unlinks both.
    dq_dag_forget (fx->dag, &fx->node [1]);
    assert_int_equal (fx->node [0].nchildren, 4);
    s_check_fx_slots (fx);
}

static void
test_dag_forget (void **state)
{
    fx_t *fx = *state;
    //  0 -> 1 -> 2, and 0 -> 3..9 (a wider child array).
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "1 0"), 0);
    for (int i = 3; i < 10; i++)
        assert_int_equal (s_add (fx, i, "0"), 0);
    assert_int_equal (fx->node [0].nchildren, 9);
    assert_true (fx->node [0].children_cap >= 9);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 1, DQ_STATE_SUCCEEDED), 0);
    assert_true (dq_dag_has_pending_children (&fx->node [1]));

    //  Forget some siblings out of order: the others keep valid slots.
    assert_int_equal (s_finish (fx, 4, DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_finish (fx, 7, DQ_STATE_FAILED), 0);
    dq_dag_forget (fx->dag, &fx->node [4]);
    dq_dag_forget (fx->dag, &fx->node [7]);
    assert_int_equal (fx->node [0].nchildren, 7);
    s_check_fx_slots (fx);
    for (uint32_t c = 0; c < fx->node [0].nchildren; c++) {
        assert_ptr_not_equal (fx->node [0].children [c], &fx->node [4]);
        assert_ptr_not_equal (fx->node [0].children [c], &fx->node [7]);
    }
    assert_null (fx->node [4].parents);
    assert_int_equal (fx->node [4].nparents, 0);
    assert_int_equal (fx->node [4].phase, DQ_DAG_SUCCEEDED);
    assert_int_equal (fx->node [4].id, 4);

    //  Forget a parent: its children keep the edge, with node NULL.
    dq_dag_forget (fx->dag, &fx->node [1]);
    assert_int_equal (fx->node [2].nparents, 2);
    assert_null (fx->node [2].parents [0].node);
    assert_ptr_equal (fx->node [2].parents [1].node, &fx->node [0]);
    assert_null (fx->node [1].children);
    assert_int_equal (fx->node [1].nchildren, 0);
    assert_int_equal (fx->node [0].nchildren, 6);
    s_check_fx_slots (fx);

    //  Finishing and forgetting the rest; forgetting twice is harmless.
    for (int i = 2; i < 10; i++)
        if (i != 4 && i != 7)
            assert_int_equal (s_finish (fx, i, DQ_STATE_SUCCEEDED), 0);
    assert_false (dq_dag_has_pending_children (&fx->node [0]));
    dq_dag_forget (fx->dag, &fx->node [0]);
    dq_dag_forget (fx->dag, &fx->node [0]);
    dq_dag_forget (fx->dag, NULL);
    dq_dag_forget (NULL, &fx->node [0]);
    assert_null (fx->node [2].parents [1].node);
    for (int i = 3; i < 10; i++)
        if (i != 4 && i != 7)
            assert_null (fx->node [i].parents [0].node);
    s_check_fx_slots (fx);
}

static void
test_dag_forget_clears_skip_causes (void **state)
{
    fx_t *fx = *state;
    //  0 fails: 1, 2 (under 1), 3 (under 2) skipped with cause 0.
    assert_int_equal (s_add (fx, 0, ""), 0);
    assert_int_equal (s_add (fx, 1, "0"), 0);
    assert_int_equal (s_add (fx, 2, "1"), 0);
    assert_int_equal (s_add (fx, 3, "2"), 0);
    assert_int_equal (s_add (fx, 4, ""), 0);
    assert_int_equal (s_add (fx, 5, "4"), 0);
    assert_int_equal (s_finish (fx, 0, DQ_STATE_FAILED), 0);
    assert_int_equal (s_finish (fx, 4, DQ_STATE_FAILED), 0);
    assert_log (fx, "r0 r4 s1/0 s2/0 s3/0 s5/4");

    //  Forgetting the skipped middle node 1 cuts 2 and 3 off from 0:
    //  their cause pointers are cleared now, before 0 can be freed.
    dq_dag_forget (fx->dag, &fx->node [1]);
    assert_null (fx->node [2].skipped_by);
    assert_null (fx->node [3].skipped_by);
    //  A new child of a skipped node with no known cause blames that node.
    assert_int_equal (s_add (fx, 6, "3"), 0);
    assert_log (fx, "s6/3");
    //  Forgetting a failed job clears the causes that point at it.
    assert_ptr_equal (fx->node [5].skipped_by, &fx->node [4]);
    dq_dag_forget (fx->dag, &fx->node [4]);
    assert_null (fx->node [5].skipped_by);
    assert_int_equal (fx->node [5].phase, DQ_DAG_SKIPPED);
    //  Other causes are kept.
    assert_ptr_equal (fx->node [6].skipped_by, &fx->node [3]);
}

static void
test_dag_callbacks_may_call_back (void **state)
{
    fx_t *fx = *state;
    //  A chain whose jobs finish inside on_ready: one call runs it all,
    //  without callbacks nesting.
    assert_int_equal (s_add (fx, 0, ""), 0);
    for (int i = 1; i < 10; i++) {
        char spec [8];
        snprintf (spec, sizeof (spec), "%d", i - 1);
        assert_int_equal (s_add (fx, i, spec), 0);
    }
    assert_log (fx, "r0");
    fx->auto_succeed = true;
    assert_int_equal (s_finish (fx, 0, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r1 r2 r3 r4 r5 r6 r7 r8 r9");
    assert_int_equal (fx->node [9].phase, DQ_DAG_SUCCEEDED);
    assert_int_equal (fx->max_depth, 1);
    fx->auto_succeed = false;

    //  on_ready of 11 cancels 12, released in the same cascade but not yet
    //  told: 12 never hears on_ready, its child is skipped.
    assert_int_equal (s_add (fx, 10, ""), 0);
    assert_int_equal (s_add (fx, 11, "10"), 0);
    assert_int_equal (s_add (fx, 12, "10"), 0);
    assert_int_equal (s_add (fx, 13, "12"), 0);
    fx->cancel_on_ready [11] = 12 + 1;
    assert_int_equal (s_finish (fx, 10, DQ_STATE_SUCCEEDED), 0);
    assert_log (fx, "r10 r11 s13/12");
    assert_int_equal (fx->ready [12], 0);
    assert_int_equal (fx->node [12].phase, DQ_DAG_FAILED);

    //  on_skip of 15 adds 16 under it: 16 is skipped after 15's callback.
    assert_int_equal (s_add (fx, 14, ""), 0);
    assert_int_equal (s_add (fx, 15, "14"), 0);
    assert_int_equal (s_add (fx, 17, "15"), 0);
    fx->add_on_skip [15] = 16 + 1;
    assert_int_equal (s_finish (fx, 14, DQ_STATE_FAILED), 0);
    assert_log (fx, "r14 s15/14 s17/14 s16/14");
    assert_int_equal (fx->max_depth, 1);
    s_check_fx_slots (fx);
}

static void
test_dag_new_without_events (void **state)
{
    (void) state;
    //  Edges cost no more than two pointers each.
    assert_true (sizeof (dq_dag_edge_t) <= 2 * sizeof (void *));
    dq_dag_t *dag = dq_dag_new (NULL);
    assert_non_null (dag);
    dq_dag_node_t a = { .id = 1 }, b = { .id = 2 };
    dq_dag_node_t *pa = &a;
    assert_int_equal (dq_dag_add (dag, &a, NULL, NULL, 0), 0);
    assert_int_equal (dq_dag_add (dag, &b, &pa, NULL, 1), 0);
    assert_int_equal (dq_dag_finish (dag, &a, DQ_STATE_FAILED), 0);
    assert_int_equal (b.phase, DQ_DAG_SKIPPED);
    dq_dag_forget (dag, &a);
    dq_dag_forget (dag, &b);
    dq_dag_destroy (&dag);
    assert_null (dag);
    dq_dag_destroy (NULL);
}

//  --- Property test: random DAGs against an independent model ------------

enum { OUT_NONE = 0, OUT_OK, OUT_FAIL, OUT_SKIP };

typedef struct {
    uint32_t n;
    dq_dag_node_t *nodes;
    uint32_t *first;            //  parents of v: par [first [v] .. first [v + 1]]
    uint32_t *par;
    bool *rof;
    uint8_t *outcome;           //  what the test knows of each node
    bool *direct;               //  finished by the simulation (ran or cancelled)
    bool *readied, *skipped;    //  callbacks seen
    dq_dag_node_t **cause;      //  on_skip's cause
    uint32_t *runnable;         //  released, not finished yet
    uint32_t nrunnable;
    uint64_t callbacks;
    dq_dag_t *dag;
} model_t;

static uint32_t
s_model_index (model_t *m, const dq_dag_node_t *node)
{
    assert_true (node >= m->nodes && node < m->nodes + m->n);
    return (uint32_t) (node - m->nodes);
}

static void
s_model_on_ready (void *arg, dq_dag_node_t *node)
{
    model_t *m = arg;
    uint32_t v = s_model_index (m, node);
    m->callbacks++;
    assert_false (m->readied [v]);
    assert_false (m->skipped [v]);
    assert_false (m->direct [v]);
    //  Every parent finished, and blocking parents succeeded.
    for (uint32_t e = m->first [v]; e < m->first [v + 1]; e++) {
        uint8_t out = m->outcome [m->par [e]];
        assert_int_not_equal (out, OUT_NONE);
        if (!m->rof [e])
            assert_int_equal (out, OUT_OK);
    }
    assert_int_equal (node->unresolved, 0);
    m->readied [v] = true;
    m->runnable [m->nrunnable++] = v;
}

static void
s_model_on_skip (void *arg, dq_dag_node_t *node, dq_dag_node_t *cause)
{
    model_t *m = arg;
    uint32_t v = s_model_index (m, node);
    m->callbacks++;
    assert_false (m->readied [v]);
    assert_false (m->skipped [v]);
    assert_false (m->direct [v]);
    assert_ptr_equal (node->skipped_by, cause);
    //  Some blocking parent already failed or was reported skipped, and the
    //  cause is such a failed parent or the cause of such a skipped one.
    bool blocked = false, cause_ok = false;
    for (uint32_t e = m->first [v]; e < m->first [v + 1]; e++) {
        uint32_t p = m->par [e];
        if (m->rof [e])
            continue;
        if (m->outcome [p] == OUT_FAIL) {
            blocked = true;
            cause_ok |= cause == &m->nodes [p];
        }
        if (m->outcome [p] == OUT_SKIP) {
            blocked = true;
            cause_ok |= cause == m->cause [p];
        }
    }
    assert_true (blocked);
    assert_true (cause_ok);
    assert_int_equal (m->outcome [s_model_index (m, cause)], OUT_FAIL);
    m->skipped [v] = true;
    m->outcome [v] = OUT_SKIP;
    m->cause [v] = cause;
}

static void
s_model_add (model_t *m, uint32_t v)
{
    dq_dag_node_t *parents [16];
    uint32_t np = m->first [v + 1] - m->first [v];
    assert_true (np <= 16);
    for (uint32_t k = 0; k < np; k++)
        parents [k] = &m->nodes [m->par [m->first [v] + k]];
    m->nodes [v].id = v;
    assert_int_equal (dq_dag_add (m->dag, &m->nodes [v], parents,
                                  m->rof + m->first [v], np), 0);
}

//  Adds nodes v .. v + count - 1 with one dq_dag_add_batch.
static void
s_model_add_batch (model_t *m, uint32_t v, uint32_t count)
{
    dq_dag_node_t *nodes [16], *parents [16 * 6];
    size_t first [17];
    bool rof [16 * 6];
    size_t e = 0;
    assert_true (count <= 16);
    for (uint32_t i = 0; i < count; i++) {
        first [i] = e;
        nodes [i] = &m->nodes [v + i];
        nodes [i]->id = v + i;
        for (uint32_t k = m->first [v + i]; k < m->first [v + i + 1]; k++) {
            parents [e] = &m->nodes [m->par [k]];
            rof [e++] = m->rof [k];
        }
    }
    first [count] = e;
    assert_int_equal (dq_dag_add_batch (m->dag, nodes, count, first, parents, rof), 0);
}

//  The simulation decided v's fate: record it first (callbacks look), then
//  tell the tracker.
static void
s_model_finish (model_t *m, uint32_t v, uint8_t out, int state)
{
    m->direct [v] = true;
    m->outcome [v] = out;
    assert_int_equal (dq_dag_finish (m->dag, &m->nodes [v], state), 0);
    //  A second finish is refused and changes nothing.
    uint64_t after = m->callbacks;
    assert_int_equal (dq_dag_finish (m->dag, &m->nodes [v], DQ_STATE_SUCCEEDED), -1);
    assert_int_equal (m->callbacks, after);
}

static void
s_property_run (uint64_t *rng, uint32_t n)
{
    model_t m = { .n = n };
    m.nodes = calloc (n, sizeof (dq_dag_node_t));
    m.first = calloc ((size_t) n + 1, sizeof (uint32_t));
    m.par = malloc ((size_t) n * 6 * sizeof (uint32_t));
    m.rof = calloc ((size_t) n * 6, sizeof (bool));
    m.outcome = calloc (n, 1);
    m.direct = calloc (n, sizeof (bool));
    m.readied = calloc (n, sizeof (bool));
    m.skipped = calloc (n, sizeof (bool));
    m.cause = calloc (n, sizeof (dq_dag_node_t *));
    m.runnable = malloc (n * sizeof (uint32_t));
    assert_true (m.nodes && m.first && m.par && m.rof && m.outcome && m.direct
                 && m.readied && m.skipped && m.cause && m.runnable);

    //  Shape: each node takes 0..5 parents among earlier ones, near (chains)
    //  or anywhere (fans); duplicates happen and are allowed. Some edges
    //  run on failure.
    uint32_t rof_pct = s_below (rng, 4) * 10;
    uint32_t window = 1 + s_below (rng, 20);
    uint32_t edges = 0;
    for (uint32_t v = 0; v < n; v++) {
        m.first [v] = edges;
        uint32_t np = v == 0 ? 0 : s_below (rng, 6);
        if (np > v)
            np = v;
        for (uint32_t k = 0; k < np; k++) {
            uint32_t p = s_below (rng, 2)
                       ? v - 1 - s_below (rng, v < window ? v : window)
                       : s_below (rng, v);
            m.par [edges] = p;
            m.rof [edges] = s_below (rng, 100) < rof_pct;
            edges++;
        }
    }
    m.first [n] = edges;

    dq_dag_events_t events = { s_model_on_ready, s_model_on_skip, &m };
    m.dag = dq_dag_new (&events);
    assert_non_null (m.dag);

    //  Run: add nodes in order, interleaved with finishing released nodes
    //  in random order (some fail or are cancelled) and cancelling pending
    //  ones.
    uint32_t fail_pct = s_below (rng, 4) == 0 ? 0 : 1 + s_below (rng, 25);
    uint32_t next = 0;
    while (next < n || m.nrunnable > 0) {
        uint32_t roll = s_below (rng, 100);
        if (next < n && (m.nrunnable == 0 || roll < 30)) {
            //  One by one, or a batch of up to 16 (parents in it or before).
            if (s_below (rng, 2)) {
                s_model_add (&m, next++);
            }
            else {
                uint32_t count = 1 + s_below (rng, 16);
                if (count > n - next)
                    count = n - next;
                s_model_add_batch (&m, next, count);
                next += count;
            }
        }
        else
        if (roll < 35 && next > 0) {
            //  Cancel a random added node if the model says it is pending.
            uint32_t v = s_below (rng, next);
            if (!m.readied [v] && !m.skipped [v] && !m.direct [v]) {
                assert_int_equal (m.nodes [v].phase, DQ_DAG_PENDING);
                s_model_finish (&m, v, OUT_FAIL, DQ_STATE_CANCELLED);
            }
            else
            if (m.skipped [v] || m.direct [v]) {
                uint64_t before = m.callbacks;
                assert_int_equal (dq_dag_finish (m.dag, &m.nodes [v],
                                                 DQ_STATE_CANCELLED), -1);
                assert_int_equal (m.callbacks, before);
            }
        }
        else
        if (m.nrunnable > 0) {
            uint32_t k = s_below (rng, m.nrunnable);
            uint32_t v = m.runnable [k];
            m.runnable [k] = m.runnable [--m.nrunnable];
            uint32_t pick = s_below (rng, 100);
            if (pick < fail_pct)
                s_model_finish (&m, v, OUT_FAIL, DQ_STATE_FAILED);
            else
            if (pick < fail_pct + 3)
                s_model_finish (&m, v, OUT_FAIL, DQ_STATE_CANCELLED);
            else
                s_model_finish (&m, v, OUT_OK, DQ_STATE_SUCCEEDED);
        }
    }

    //  Expected skips, from the simulation's own decisions only: nodes are
    //  in topological order, so one pass settles every fate.
    uint8_t *expect = calloc (n, 1);
    assert_non_null (expect);
    for (uint32_t v = 0; v < n; v++) {
        if (m.direct [v]) {
            expect [v] = m.outcome [v];
            continue;
        }
        bool blocked = false;
        for (uint32_t e = m.first [v]; e < m.first [v + 1]; e++)
            if (!m.rof [e] && (expect [m.par [e]] == OUT_FAIL
                           ||  expect [m.par [e]] == OUT_SKIP))
                blocked = true;
        //  Not finished by the simulation and not blocked would mean it was
        //  never released: the tracker lost it.
        assert_true (blocked);
        expect [v] = OUT_SKIP;
    }
    for (uint32_t v = 0; v < n; v++) {
        assert_int_equal (m.skipped [v], expect [v] == OUT_SKIP);
        uint8_t phase = m.nodes [v].phase;
        if (expect [v] == OUT_OK)
            assert_int_equal (phase, DQ_DAG_SUCCEEDED);
        else
        if (expect [v] == OUT_FAIL)
            assert_int_equal (phase, DQ_DAG_FAILED);
        else
            assert_int_equal (phase, DQ_DAG_SKIPPED);
        assert_int_equal (m.nodes [v].unresolved, 0);
        assert_false (dq_dag_has_pending_children (&m.nodes [v]));
        assert_int_equal (m.nodes [v].nparents, m.first [v + 1] - m.first [v]);
    }

    //  Forget everything in random order; check the links as it goes.
    dq_dag_node_t **all = malloc (n * sizeof (dq_dag_node_t *));
    assert_non_null (all);
    for (uint32_t v = 0; v < n; v++)
        all [v] = &m.nodes [v];
    s_check_slots (all, n);
    for (uint32_t k = n; k > 1; k--) {
        uint32_t j = s_below (rng, k);
        dq_dag_node_t *tmp = all [k - 1];
        all [k - 1] = all [j];
        all [j] = tmp;
    }
    for (uint32_t k = 0; k < n; k++) {
        dq_dag_node_t *dead = all [k];
        dq_dag_forget (m.dag, dead);
        //  Nothing may point at a forgotten node any more.
        if (n <= 64 || k % 97 == 0) {
            for (uint32_t v = 0; v < n; v++) {
                dq_dag_node_t *node = &m.nodes [v];
                assert_ptr_not_equal (node->skipped_by, dead);
                for (uint32_t e = 0; e < node->nparents; e++)
                    assert_ptr_not_equal (node->parents [e].node, dead);
                for (uint32_t c = 0; c < node->nchildren; c++)
                    assert_ptr_not_equal (node->children [c], dead);
            }
            s_check_slots (all + k + 1, n - k - 1);
        }
    }
    for (uint32_t v = 0; v < n; v++) {
        assert_null (m.nodes [v].parents);
        assert_null (m.nodes [v].children);
    }

    dq_dag_destroy (&m.dag);
    free (all);
    free (expect);
    free (m.nodes);
    free (m.first);
    free (m.par);
    free (m.rof);
    free (m.outcome);
    free (m.direct);
    free (m.readied);
    free (m.skipped);
    free (m.cause);
    free (m.runnable);
}

//  Random batches for dq_dag_check / dq_dag_topo_order: acyclic ones pass
//  and sort; one added back edge makes a cycle whose report is checked step
//  by step against the deps.
static void
s_property_check (uint64_t *rng, uint32_t n)
{
    batch_t b;
    s_batch_init (&b, n, NULL);
    //  perm [v] is the batch index of the v-th node in creation order.
    uint32_t *perm = malloc (n * sizeof (uint32_t));
    uint32_t *order = malloc (n * sizeof (uint32_t));
    assert_non_null (perm);
    assert_non_null (order);
    for (uint32_t v = 0; v < n; v++)
        perm [v] = v;
    for (uint32_t k = n; k > 1; k--) {
        uint32_t j = s_below (rng, k), tmp = perm [k - 1];
        perm [k - 1] = perm [j];
        perm [j] = tmp;
    }
    for (uint32_t v = 1; v < n; v++) {
        uint32_t np = s_below (rng, 4);
        for (uint32_t k = 0; k < np; k++) {
            uint32_t p = perm [s_below (rng, v)];
            dq_jobspec_t *job = &b.jobs [perm [v]];
            bool dup = false;
            for (uint32_t d = 0; d < job->ndeps; d++)
                dup |= job->deps [d].idx == (int32_t) p;
            if (!dup)
                s_batch_dep (&b, perm [v], (int32_t) p, NULL);
        }
    }
    size_t size = 64 * 1024;
    char *err = malloc (size);
    assert_non_null (err);
    assert_int_equal (s_check (&b, err, size), DQ_OK);
    assert_int_equal (dq_dag_topo_order (b.jobs, n, order), 0);
    s_assert_topo (&b, order);

    //  Walk up from a node with parents to an ancestor, make it depend on
    //  the node.
    uint32_t start = s_below (rng, n);
    for (uint32_t k = 0; k < n && b.jobs [start].ndeps == 0; k++)
        start = (start + 1) % n;
    uint32_t up = start, steps = 1 + s_below (rng, 10);
    while (steps-- > 0 && b.jobs [up].ndeps > 0)
        up = (uint32_t) b.jobs [up].deps [s_below (rng, b.jobs [up].ndeps)].idx;
    if (up != start && b.jobs [up].ndeps < BATCH_DEPS_MAX) {
        s_batch_dep (&b, up, (int32_t) start, NULL);
        assert_int_equal (s_check (&b, err, size), DQ_ERR_CYCLE);
        assert_int_equal (dq_dag_topo_order (b.jobs, n, order), -1);
        //  "cycle: #a -> #b -> ... -> #a", each job depending on the next.
        assert_memory_equal (err, "cycle: #", 8);
        const char *p = err + 7;
        uint32_t firstjob = UINT32_MAX, prev = UINT32_MAX, steps_seen = 0;
        while (*p) {
            assert_int_equal (*p, '#');
            char *end;
            unsigned long job = strtoul (p + 1, &end, 10);
            assert_true (job < n);
            if (prev != UINT32_MAX) {
                bool edge = false;
                for (uint32_t d = 0; d < b.jobs [prev].ndeps; d++)
                    edge |= b.jobs [prev].deps [d].idx == (int32_t) job;
                assert_true (edge);
                steps_seen++;
            }
            else
                firstjob = (uint32_t) job;
            prev = (uint32_t) job;
            p = end;
            if (*p) {
                assert_memory_equal (p, " -> ", 4);
                p += 4;
            }
        }
        assert_int_equal (prev, firstjob);
        assert_true (steps_seen >= 2);
    }
    free (err);
    free (perm);
    free (order);
    s_batch_free (&b);
}

static void
test_dag_property_random_dags (void **state)
{
    (void) state;
    uint64_t rng = 20240611;
    uint64_t nodes = 0;
    for (int round = 0; round < 1000; round++) {
        //  Mostly small, some hundreds, a few thousands.
        uint32_t r = s_below (&rng, 100), n;
        if (r < 70)
            n = 2 + s_below (&rng, 30);
        else
        if (r < 95)
            n = 2 + s_below (&rng, 300);
        else
            n = 1000 + s_below (&rng, 2500);
        s_property_run (&rng, n);
        if (round % 3 == 0)
            s_property_check (&rng, n);
        nodes += n;
    }
    assert_true (nodes > 50000);
}

//  --- A million nodes: cascades must not recurse ---------------------------

#define BIG 1000000

static uint64_t s_big_ready, s_big_skipped;
static dq_dag_node_t *s_big_cause;

static void
s_big_on_ready (void *arg, dq_dag_node_t *node)
{
    (void) arg;
    (void) node;
    s_big_ready++;
}

static void
s_big_on_skip (void *arg, dq_dag_node_t *node, dq_dag_node_t *cause)
{
    (void) arg;
    (void) node;
    if (cause != s_big_cause)
        fail_msg ("node %" PRIu64 " skipped for the wrong cause", node->id);
    s_big_skipped++;
}

static void
test_dag_million_chain (void **state)
{
    (void) state;
    dq_dag_events_t events = { s_big_on_ready, s_big_on_skip, NULL };
    dq_dag_t *dag = dq_dag_new (&events);
    dq_dag_node_t *nodes = calloc (BIG, sizeof (dq_dag_node_t));
    assert_non_null (dag);
    assert_non_null (nodes);
    s_big_ready = s_big_skipped = 0;
    for (uint32_t i = 0; i < BIG; i++) {
        dq_dag_node_t *parent = i ? &nodes [i - 1] : NULL;
        nodes [i].id = i;
        assert_int_equal (dq_dag_add (dag, &nodes [i], &parent, NULL, i ? 1 : 0), 0);
    }
    assert_int_equal (s_big_ready, 1);
    //  The first half runs one by one, then a failure skips the rest in one
    //  cascade a million-ish levels deep.
    for (uint32_t i = 0; i < BIG / 2; i++)
        assert_int_equal (dq_dag_finish (dag, &nodes [i], DQ_STATE_SUCCEEDED), 0);
    assert_int_equal (s_big_ready, BIG / 2 + 1);
    s_big_cause = &nodes [BIG / 2];
    assert_int_equal (dq_dag_finish (dag, &nodes [BIG / 2], DQ_STATE_FAILED), 0);
    assert_int_equal (s_big_skipped, BIG - BIG / 2 - 1);
    assert_int_equal (nodes [BIG - 1].phase, DQ_DAG_SKIPPED);
    assert_ptr_equal (nodes [BIG - 1].skipped_by, s_big_cause);
    //  Forgetting the cause clears a million-deep chain of skip causes.
    dq_dag_forget (dag, &nodes [BIG / 2]);
    assert_null (nodes [BIG - 1].skipped_by);
    for (uint32_t i = 0; i < BIG; i++)
        dq_dag_forget (dag, &nodes [i]);
    dq_dag_destroy (&dag);
    free (nodes);

    //  The same chain as a batch: checked and ordered without recursion,
    //  and a million-long cycle is found.
    dq_jobspec_t *jobs = calloc (BIG, sizeof (dq_jobspec_t));
    dq_dep_t *deps = calloc (BIG, sizeof (dq_dep_t));
    uint32_t *order = malloc (BIG * sizeof (uint32_t));
    assert_non_null (jobs);
    assert_non_null (deps);
    assert_non_null (order);
    for (uint32_t i = 0; i + 1 < BIG; i++) {
        deps [i].idx = (int32_t) i + 1;         //  i depends on i + 1
        jobs [i].deps = &deps [i];
        jobs [i].ndeps = 1;
    }
    char err [64];
    assert_int_equal (dq_dag_check (jobs, BIG, err, sizeof (err)), DQ_OK);
    assert_int_equal (dq_dag_topo_order (jobs, BIG, order), 0);
    for (uint32_t k = 0; k < BIG; k++)
        assert_int_equal (order [k], BIG - 1 - k);
    deps [BIG - 1].idx = 0;
    jobs [BIG - 1].deps = &deps [BIG - 1];
    jobs [BIG - 1].ndeps = 1;
    assert_int_equal (dq_dag_check (jobs, BIG, err, sizeof (err)), DQ_ERR_CYCLE);
    assert_memory_equal (err, "cycle: #0 -> #1 -> #2", 21);
    assert_int_equal (dq_dag_topo_order (jobs, BIG, order), -1);
    free (jobs);
    free (deps);
    free (order);
}

static void
test_dag_million_wide (void **state)
{
    (void) state;
    dq_dag_events_t events = { s_big_on_ready, s_big_on_skip, NULL };
    dq_dag_t *dag = dq_dag_new (&events);
    dq_dag_node_t *nodes = calloc (BIG, sizeof (dq_dag_node_t));
    assert_non_null (dag);
    assert_non_null (nodes);
    s_big_ready = s_big_skipped = 0;
    //  Two roots; every other node depends on both, half of them with
    //  run_on_failure on root 1.
    assert_int_equal (dq_dag_add (dag, &nodes [0], NULL, NULL, 0), 0);
    assert_int_equal (dq_dag_add (dag, &nodes [1], NULL, NULL, 0), 0);
    dq_dag_node_t *parents [2] = { &nodes [0], &nodes [1] };
    for (uint32_t i = 2; i < BIG; i++) {
        bool rof [2] = { false, i % 2 == 0 };
        nodes [i].id = i;
        assert_int_equal (dq_dag_add (dag, &nodes [i], parents, rof, 2), 0);
    }
    assert_int_equal (nodes [0].nchildren, BIG - 2);
    assert_int_equal (s_big_ready, 2);
    assert_int_equal (dq_dag_finish (dag, &nodes [0], DQ_STATE_SUCCEEDED), 0);
    s_big_cause = &nodes [1];
    assert_int_equal (dq_dag_finish (dag, &nodes [1], DQ_STATE_FAILED), 0);
    assert_int_equal (s_big_ready, 2 + (BIG - 2) / 2);
    assert_int_equal (s_big_skipped, (BIG - 2) / 2);

    //  Forget the children in random order: O(1) each, not a scan of a
    //  million-entry array.
    uint64_t rng = 7;
    uint32_t *perm = malloc (BIG * sizeof (uint32_t));
    assert_non_null (perm);
    for (uint32_t i = 0; i < BIG; i++)
        perm [i] = i;
    for (uint32_t k = BIG; k > 1; k--) {
        uint32_t j = s_below (&rng, k), tmp = perm [k - 1];
        perm [k - 1] = perm [j];
        perm [j] = tmp;
    }
    for (uint32_t k = 0; k < BIG; k++)
        if (perm [k] >= 2)
            dq_dag_forget (dag, &nodes [perm [k]]);
    assert_int_equal (nodes [0].nchildren, 0);
    assert_null (nodes [0].children);
    dq_dag_forget (dag, &nodes [0]);
    dq_dag_forget (dag, &nodes [1]);
    dq_dag_destroy (&dag);
    free (perm);
    free (nodes);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_dag_check_accepts_dag),
        cmocka_unit_test (test_dag_check_names_cycle),
        cmocka_unit_test (test_dag_check_names_two_cycle),
        cmocka_unit_test (test_dag_check_cycle_away_from_first_job),
        cmocka_unit_test (test_dag_check_names_long_cycle),
        cmocka_unit_test (test_dag_check_rejects_self_dep),
        cmocka_unit_test (test_dag_check_rejects_bad_index),
        cmocka_unit_test (test_dag_check_rejects_duplicates),
        cmocka_unit_test_setup_teardown (test_dag_roots_ready_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_waits_for_unfinished_parents, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_existing_finished_parents, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_failure_skips_descendants_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_cancelled_parent_blocks_like_failure, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_cancel_pending_node, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_finish_exactly_once, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_finish_as_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_add_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_add_batch, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_add_batch_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_duplicate_parents, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_forget, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_forget_clears_skip_causes, setup, teardown),
        cmocka_unit_test_setup_teardown (test_dag_callbacks_may_call_back, setup, teardown),
        cmocka_unit_test (test_dag_new_without_events),
        cmocka_unit_test (test_dag_property_random_dags),
        cmocka_unit_test (test_dag_million_chain),
        cmocka_unit_test (test_dag_million_wide),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
