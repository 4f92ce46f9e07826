/*  dq_dag.h - the DAG tracker: which jobs may run, which must be skipped.

    Plain data structure: no sockets, no disk, no clock. The tracker does not
    own nodes; the broker embeds a dq_dag_node_t in each job record (intrusive,
    like beanstalkd's heap index) and tells the tracker when a job is added and
    when it finishes. The tracker answers through callbacks: a node became
    ready (every parent resolved and none blocks it), or a node is skipped
    (a parent failed, was cancelled or skipped, and the edge does not say
    run_on_failure). Every node reaches exactly one of released/skipped, and
    each callback fires at most once per node.
*/
#ifndef DQ_DAG_H_INCLUDED
#define DQ_DAG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dq_proto.h"

typedef struct dq_dag_node_s dq_dag_node_t;

typedef struct {
    dq_dag_node_t *node;     //  NULL once the parent was forgotten
    bool run_on_failure;
    uint32_t slot;           //  tracker-private: index of the child in
                             //  node->children, so forget is O(1) per edge
} dq_dag_edge_t;

//  Node phases, as the tracker sees them.
typedef enum {
    DQ_DAG_PENDING = 0,      //  waiting for parents
    DQ_DAG_RELEASED,         //  on_ready fired: the job may run
    DQ_DAG_SUCCEEDED,        //  finished: succeeded
    DQ_DAG_FAILED,           //  finished: failed or cancelled
    DQ_DAG_SKIPPED           //  on_skip fired (or finished as skipped)
} dq_dag_phase_t;

struct dq_dag_node_s {
    uint64_t id;             //  the job's id (for messages and tests)
    uint8_t phase;           //  dq_dag_phase_t
    uint8_t flags;           //  tracker-private
    uint32_t nparents;
    uint32_t unresolved;     //  parents not finished yet
    dq_dag_edge_t *parents;  //  owned by the tracker, in depends_on order
    dq_dag_node_t **children;  //  owned by the tracker
    uint32_t nchildren, children_cap;
    dq_dag_node_t *skipped_by;  //  the finished ancestor that caused a skip;
                                //  NULL again once that ancestor is forgotten
    void *block;             //  tracker-private: the shared edge block of a
                             //  node added by dq_dag_add_batch, or NULL
};

typedef struct {
    //  The node may run now (called once per node).
    void (*on_ready) (void *arg, dq_dag_node_t *node);
    //  The node is skipped because of cause (a failed/cancelled ancestor);
    //  called once per node, before on_skip of its descendants.
    void (*on_skip) (void *arg, dq_dag_node_t *node, dq_dag_node_t *cause);
    void *arg;
} dq_dag_events_t;
//  Callbacks fire after the tracker's state is fully updated, ancestors before
//  descendants. They may call dq_dag_add and dq_dag_finish: the callbacks
//  those cause are queued and fire after the current one returns. They must
//  not call dq_dag_forget or dq_dag_destroy. on_ready is not delivered for a
//  node a callback finished (cancelled) before its turn came.

typedef struct _dq_dag_t dq_dag_t;

//  Create a tracker; events may be NULL (no callbacks). NULL if out of memory.
dq_dag_t *
    dq_dag_new (const dq_dag_events_t *events);
//  Destroy the tracker, NULL-safe. Nodes are not touched: forget them first
//  or their edge arrays leak.
void
    dq_dag_destroy (dq_dag_t **self_p);

//  Check a batch of n new jobs whose dependencies on each other are local
//  indexes (dq_dep_t.idx >= 0; idx == -1 deps are existing jobs, resolved by
//  the caller). Checks: indexes in range, no self dependency, no duplicate
//  dependency, no duplicate non-NULL names, no cycle. Returns DQ_OK, or
//  DQ_ERR_INVALID / DQ_ERR_CYCLE with a message in err that says where, e.g.
//  "cycle: a -> b -> c -> a" (names, or "#index" for unnamed jobs; each job
//  depends on the next, the first is the lowest index in the cycle). err may
//  be NULL; a long message is cut short with "...". DQ_ERR_INTERNAL if out of
//  memory. Also rejects a missing deps array and an idx == -1 dep with no id.
int
    dq_dag_check (const dq_jobspec_t *jobs, uint32_t n,
                  char *err, size_t err_size);

//  Initialise node (zeroed by the caller, id set) with its parents, in
//  depends_on order. Parents must already be added (a batch is added in
//  topological order: see dq_dag_topo_order). If every parent already
//  succeeded (or nparents == 0) on_ready fires at once; if a blocking parent
//  already failed or was skipped, on_skip fires at once (and cascades to
//  nothing, as the node has no children yet). Returns 0 or -1 (a parent is
//  NULL or node itself, node was already added, out of memory): then nothing
//  changed. run_on_failure may be NULL (all false). Duplicate parents are
//  allowed: the child is blocked if any edge to a failed parent blocks.
int
    dq_dag_add (dq_dag_t *self, dq_dag_node_t *node,
                dq_dag_node_t *const *parents, const bool *run_on_failure,
                uint32_t nparents);

//  Add n new nodes at once, as dq_dag_add would one by one in that order,
//  for a submission: the parent edges of all of them and the child slots
//  they get from each other come from one allocation (freed when the last
//  of them is forgotten), placed in one pass without growing any array.
//  nodes are zeroed by the caller (ids set), distinct, and in topological
//  order: a parent in the batch comes before its children. The parents of
//  nodes [i] are parents [first [i] .. first [i + 1]), in depends_on
//  order, with run_on_failure alike (rof may be NULL: all false); parents
//  outside the batch must be added already. Callbacks for nodes that are
//  ready or skipped at once fire after the whole batch is in. Returns 0,
//  or -1 (a bad argument as for dq_dag_add, a parent in the batch that
//  comes after its child, out of memory): then nothing changed.
int
    dq_dag_add_batch (dq_dag_t *self, dq_dag_node_t *const *nodes, uint32_t n,
                      const size_t *first, dq_dag_node_t *const *parents,
                      const bool *rof);

//  Order a checked batch so every job comes after its local parents: fills
//  order[0..n-1] with indexes (Kahn's algorithm, ties by index). Returns 0,
//  or -1 if there is a cycle, a bad index or no memory.
int
    dq_dag_topo_order (const dq_jobspec_t *jobs, uint32_t n, uint32_t *order);

//  The node finished with state DQ_STATE_SUCCEEDED, _FAILED or _CANCELLED
//  (a node may finish from any phase but SKIPPED/finished: cancelling a
//  pending node is allowed), or _SKIPPED (replaying a skip the tracker did
//  not see: the node counts as the cause for its children). Resolves
//  children: releases those whose parents are all resolved, skips the
//  blocked ones and their descendants (iteratively, no recursion). Cost:
//  O(children) per node reached, plus O(parents of the child) per edge out
//  of a failed or skipped node. Returns 0, or -1 if the node had already
//  finished or was skipped, or state is not one of those four (nothing
//  happens: exactly once).
int
    dq_dag_finish (dq_dag_t *self, dq_dag_node_t *node, int state);

//  Remove a finished node from the graph: its children keep an edge with
//  node == NULL, its parents forget it. Frees the node's edge arrays; the
//  node keeps its id and phase. Clears skipped_by of nodes whose recorded
//  cause it was (or was reached through it). Forgetting an unfinished node
//  (teardown) leaves its children pending forever. Cost: O(parents +
//  children), plus the nodes whose skipped_by is cleared. NULL-safe.
void
    dq_dag_forget (dq_dag_t *self, dq_dag_node_t *node);

//  Teardown: free node's edge arrays without touching any other node (all
//  of them are going: drop each). NULL-safe.
void
    dq_dag_drop (dq_dag_node_t *node);

//  True when some child of node has not finished (so its output is still
//  needed and it must not be forgotten yet).
bool
    dq_dag_has_pending_children (const dq_dag_node_t *node);

#endif
