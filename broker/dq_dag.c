/*  dq_dag.c - the DAG tracker: which jobs may run, which must be skipped.

    Nodes are intrusive (embedded in the broker's job records); the tracker
    owns only each node's two edge arrays and its own work arrays. Every
    change is applied in full before any callback fires: a cascade first
    walks the graph with an explicit stack (no recursion, so a chain of a
    million jobs is fine) and queues one event per node it releases or
    skips; the queue is then drained in order. Calls made from callbacks
    (dq_dag_add, dq_dag_finish) change state at once and append to the same
    queue, so callbacks never nest.

    Each edge of a child remembers the child's slot in its parent's children
    array, so forgetting a node costs O(1) per edge (swap-remove) instead of
    a scan of a possibly huge fan-out.

    What it does not do: allocate or free nodes, know job ids beyond the
    number stored in the node, talk to sockets, disk or the clock.
*/
#include "dq_dag.h"
#include "dq_mem.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  First allocation of a children array: 3 pointers fill glibc's smallest
//  chunk, and the average job has few children. Then x1.5.
#define DQ_DAG_CHILDREN_MIN 3
//  Work arrays larger than this (items) are freed once the tracker is idle,
//  so one huge cascade does not pin memory.
#define DQ_DAG_WORK_KEEP 4096

//  node->flags. IN_BATCH and SEEN live only inside dq_dag_add_batch.
#define S_IN_BATCH       1      //  a node of the batch being added
#define S_SEEN           2      //  ... whose parents were checked already
#define S_CHILDREN_LENT  4      //  children points into a shared block

//  The allocation a batch's edges and child slots come from: this header,
//  then the edges, then the child slots. Freed with its last node.
typedef struct {
    uint32_t refs;              //  nodes not forgotten yet
} s_block_t;

//  A queued callback: on_ready when cause is NULL, else on_skip.
typedef struct {
    dq_dag_node_t *node;
    dq_dag_node_t *cause;
} s_event_t;

struct _dq_dag_t {
    dq_dag_events_t events;     //  callbacks (any may be NULL)
    dq_dag_node_t **stack;      //  nodes whose children need resolving
    size_t nstack, stack_cap;
    s_event_t *queue;           //  callbacks not fired yet, FIFO
    size_t qhead, qlen, qcap;
    bool firing;                //  draining the queue: do not nest
};

//  Allocation failure in the middle of a cascade cannot be undone cleanly;
//  STYLE allows aborting on it. Everything that can fail early returns -1.
static _Noreturn void
s_out_of_memory (void)
{
    fprintf (stderr, "dq_dag: out of memory\n");
    abort ();
}

static int
s_stack_reserve (dq_dag_t *self, size_t extra)
{
    void *grown = dq_mem_grow (self->stack, &self->stack_cap, self->nstack + extra,
                          sizeof (*self->stack));
    if (!grown)
        return -1;
    self->stack = grown;
    return 0;
}

static void
s_stack_push (dq_dag_t *self, dq_dag_node_t *node)
{
    if (s_stack_reserve (self, 1))
        s_out_of_memory ();
    self->stack [self->nstack++] = node;
}

static void
s_queue_push (dq_dag_t *self, dq_dag_node_t *node, dq_dag_node_t *cause)
{
    void *grown = dq_mem_grow (self->queue, &self->qcap, self->qlen + 1,
                          sizeof (*self->queue));
    if (!grown)
        s_out_of_memory ();
    self->queue = grown;
    self->queue [self->qlen].node = node;
    self->queue [self->qlen].cause = cause;
    self->qlen++;
}

//  Appends child to parent's children array; *slot receives its index.
static int
s_child_append (dq_dag_node_t *parent, dq_dag_node_t *child, uint32_t *slot)
{
    if (parent->nchildren == parent->children_cap) {
        uint32_t cap = parent->children_cap;
        if (cap == UINT32_MAX)
            return -1;
        uint32_t newcap = cap < DQ_DAG_CHILDREN_MIN
                        ? DQ_DAG_CHILDREN_MIN
                        : (cap > UINT32_MAX - cap / 2 ? UINT32_MAX : cap + cap / 2);
        bool lent = parent->flags & S_CHILDREN_LENT;
        //  Slots in a shared block cannot grow: move to an array of its own.
        dq_dag_node_t **grown = lent? malloc ((size_t) newcap * sizeof (*grown))
                                    : realloc (parent->children,
                                               (size_t) newcap * sizeof (*grown));
        if (!grown)
            return -1;
        if (lent && parent->nchildren)
            memcpy (grown, parent->children, parent->nchildren * sizeof (*grown));
        parent->flags &= (uint8_t) ~S_CHILDREN_LENT;
        parent->children = grown;
        parent->children_cap = newcap;
    }
    *slot = parent->nchildren;
    parent->children [parent->nchildren++] = child;
    return 0;
}

//  Gives back memory once a children array is mostly empty. Slots stay valid:
//  the array is dense, only its tail is cut.
static void
s_children_shrink (dq_dag_node_t *node)
{
    if (node->flags & S_CHILDREN_LENT) {
        if (node->nchildren == 0) {     //  the block keeps the slots
            node->flags &= (uint8_t) ~S_CHILDREN_LENT;
            node->children = NULL;
            node->children_cap = 0;
        }
        return;
    }
    if (node->nchildren == 0) {
        free (node->children);
        node->children = NULL;
        node->children_cap = 0;
    }
    else
    if (node->children_cap > 16 && node->nchildren < node->children_cap / 4) {
        uint32_t newcap = node->nchildren * 2;
        dq_dag_node_t **shrunk = realloc (node->children,
                                          (size_t) newcap * sizeof (*shrunk));
        if (shrunk) {               //  on failure the bigger array is fine
            node->children = shrunk;
            node->children_cap = newcap;
        }
    }
}

//  Removes the edge child -> parent kept at parent->children [slot]; the last
//  child moves into the hole and its edge learns its new slot.
static void
s_child_remove (dq_dag_node_t *parent, uint32_t slot)
{
    uint32_t last = parent->nchildren - 1;
    if (slot != last) {
        dq_dag_node_t *moved = parent->children [last];
        parent->children [slot] = moved;
        for (uint32_t i = 0; i < moved->nparents; i++) {
            dq_dag_edge_t *edge = &moved->parents [i];
            if (edge->node == parent && edge->slot == last) {
                edge->slot = slot;
                break;
            }
        }
    }
    parent->nchildren = last;
    s_children_shrink (parent);
}

static bool
s_is_finished (const dq_dag_node_t *node)
{
    return node->phase == DQ_DAG_SUCCEEDED
        || node->phase == DQ_DAG_FAILED
        || node->phase == DQ_DAG_SKIPPED;
}

//  The job to blame when node (failed or skipped) blocks a child: the skip's
//  recorded origin, or node itself.
static dq_dag_node_t *
s_cause_of (dq_dag_node_t *node)
{
    if (node->phase == DQ_DAG_SKIPPED && node->skipped_by)
        return node->skipped_by;
    return node;
}

//  True if some edge from child to parent does not say run_on_failure.
//  O(child's parents): only called when parent failed or was skipped.
static bool
s_edge_blocks (const dq_dag_node_t *child, const dq_dag_node_t *parent)
{
    for (uint32_t i = 0; i < child->nparents; i++)
        if (child->parents [i].node == parent && !child->parents [i].run_on_failure)
            return true;
    return false;
}

//  Resolves the children of every node on the stack (finished or just
//  skipped), pushing newly skipped ones, until the stack is empty. No
//  callback runs here: events are only queued.
static void
s_cascade (dq_dag_t *self)
{
    while (self->nstack > 0) {
        dq_dag_node_t *node = self->stack [--self->nstack];
        bool failed = node->phase != DQ_DAG_SUCCEEDED;
        dq_dag_node_t *cause = s_cause_of (node);
        for (uint32_t i = 0; i < node->nchildren; i++) {
            dq_dag_node_t *child = node->children [i];
            if (child->unresolved > 0)
                child->unresolved--;
            if (child->phase != DQ_DAG_PENDING)
                continue;           //  cancelled or skipped already
            if (failed && s_edge_blocks (child, node)) {
                child->phase = DQ_DAG_SKIPPED;
                child->skipped_by = cause;
                s_queue_push (self, child, cause);
                s_stack_push (self, child);
            }
            else
            if (child->unresolved == 0) {
                child->phase = DQ_DAG_RELEASED;
                s_queue_push (self, child, NULL);
            }
        }
    }
}

//  Frees work arrays a big cascade or walk left behind, once they are empty.
static void
s_trim (dq_dag_t *self)
{
    if (self->qlen == 0 && self->qcap > DQ_DAG_WORK_KEEP) {
        free (self->queue);
        self->queue = NULL;
        self->qcap = 0;
    }
    if (self->nstack == 0 && self->stack_cap > DQ_DAG_WORK_KEEP) {
        free (self->stack);
        self->stack = NULL;
        self->stack_cap = 0;
    }
}

//  Fires queued callbacks in order, unless a caller up the stack already
//  does (then it will reach the new events too).
static void
s_fire (dq_dag_t *self)
{
    if (self->firing)
        return;
    self->firing = true;
    while (self->qhead < self->qlen) {
        //  Copy: a callback may append and move the queue.
        s_event_t event = self->queue [self->qhead++];
        if (event.cause) {
            if (self->events.on_skip)
                self->events.on_skip (self->events.arg, event.node, event.cause);
        }
        else
        if (event.node->phase == DQ_DAG_RELEASED) {
            if (self->events.on_ready)
                self->events.on_ready (self->events.arg, event.node);
        }
    }
    self->qhead = self->qlen = 0;
    s_trim (self);
    self->firing = false;
}

dq_dag_t *
dq_dag_new (const dq_dag_events_t *events)
{
    dq_dag_t *self = calloc (1, sizeof (*self));
    if (self && events)
        self->events = *events;
    return self;
}

void
dq_dag_destroy (dq_dag_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_dag_t *self = *self_p;
    free (self->stack);
    free (self->queue);
    free (self);
    *self_p = NULL;
}

//  --- Batch checks ---------------------------------------------------------

//  A message being built into the caller's buffer; cut short with "...".
typedef struct {
    char *buf;
    size_t size;
    size_t len;
    bool cut;
} s_msg_t;

static void
s_msg_put (s_msg_t *msg, const char *str)
{
    if (!msg->buf || msg->size == 0 || msg->cut)
        return;
    size_t room = msg->size - 1 - msg->len;
    size_t slen = strlen (str);
    if (slen > room) {
        slen = room;
        msg->cut = true;
    }
    memcpy (msg->buf + msg->len, str, slen);
    msg->len += slen;
    msg->buf [msg->len] = '\0';
    if (msg->cut && msg->size >= 4)
        memcpy (msg->buf + msg->size - 4, "...", 4);
}

static void
s_msg_uint (s_msg_t *msg, uint64_t value)
{
    char text [24];
    snprintf (text, sizeof (text), "%" PRIu64, value);
    s_msg_put (msg, text);
}

static bool
s_has_name (const dq_jobspec_t *job)
{
    return job->name && job->name [0];
}

//  A job as a cycle step: its name, or "#index".
static void
s_msg_job (s_msg_t *msg, const dq_jobspec_t *jobs, uint32_t i)
{
    if (s_has_name (&jobs [i]))
        s_msg_put (msg, jobs [i].name);
    else {
        s_msg_put (msg, "#");
        s_msg_uint (msg, i);
    }
}

//  A job as a subject: "job 'name'" or "job #index".
static void
s_msg_subject (s_msg_t *msg, const dq_jobspec_t *jobs, uint32_t i)
{
    s_msg_put (msg, "job ");
    if (s_has_name (&jobs [i])) {
        s_msg_put (msg, "'");
        s_msg_put (msg, jobs [i].name);
        s_msg_put (msg, "'");
    }
    else {
        s_msg_put (msg, "#");
        s_msg_uint (msg, i);
    }
}

//  Indexes, self and duplicate deps. Returns DQ_OK or DQ_ERR_INVALID.
static int
s_check_deps (const dq_jobspec_t *jobs, uint32_t n, uint32_t *seen, s_msg_t *msg)
{
    //  seen [j] == i + 1 when job i already lists j: no clearing per job.
    for (uint32_t i = 0; i < n; i++) {
        const dq_jobspec_t *job = &jobs [i];
        if (job->ndeps > 0 && !job->deps) {
            s_msg_subject (msg, jobs, i);
            s_msg_put (msg, ": dependency list missing");
            return DQ_ERR_INVALID;
        }
        for (uint32_t k = 0; k < job->ndeps; k++) {
            const dq_dep_t *dep = &job->deps [k];
            if (dep->idx == -1) {
                if (!dep->id || !dep->id [0]) {
                    s_msg_subject (msg, jobs, i);
                    s_msg_put (msg, ": dependency ");
                    s_msg_uint (msg, k);
                    s_msg_put (msg, " has neither index nor id");
                    return DQ_ERR_INVALID;
                }
                continue;
            }
            if (dep->idx < 0 || (uint32_t) dep->idx >= n) {
                s_msg_subject (msg, jobs, i);
                s_msg_put (msg, ": dependency ");
                s_msg_uint (msg, k);
                s_msg_put (msg, " has invalid index ");
                if (dep->idx < 0)
                    s_msg_put (msg, "-");
                s_msg_uint (msg, dep->idx < 0 ? (uint64_t) -(int64_t) dep->idx
                                              : (uint64_t) dep->idx);
                s_msg_put (msg, " (batch of ");
                s_msg_uint (msg, n);
                s_msg_put (msg, ")");
                return DQ_ERR_INVALID;
            }
            uint32_t j = (uint32_t) dep->idx;
            if (j == i) {
                s_msg_subject (msg, jobs, i);
                s_msg_put (msg, ": depends on itself");
                return DQ_ERR_INVALID;
            }
            if (seen [j] == i + 1) {
                s_msg_subject (msg, jobs, i);
                s_msg_put (msg, ": depends twice on ");
                s_msg_subject (msg, jobs, j);
                return DQ_ERR_INVALID;
            }
            seen [j] = i + 1;
        }
    }
    return DQ_OK;
}

//  FNV-1a: names are short, any decent spread will do.
static uint64_t
s_hash (const char *str)
{
    uint64_t hash = 14695981039346656037ULL;
    for (; *str; str++) {
        hash ^= (unsigned char) *str;
        hash *= 1099511628211ULL;
    }
    return hash;
}

//  Duplicate non-NULL names, with an open-addressing table of index + 1.
static int
s_check_names (const dq_jobspec_t *jobs, uint32_t n, s_msg_t *msg)
{
    uint32_t named = 0;
    for (uint32_t i = 0; i < n; i++)
        named += jobs [i].name != NULL;
    if (named < 2)
        return DQ_OK;           //  no table needed (big batches are often unnamed)
    size_t cap = 16;
    while (cap < (size_t) named * 2)
        cap *= 2;
    uint32_t *table = dq_mem_calloc (cap, sizeof (*table));
    if (!table) {
        s_msg_put (msg, "out of memory");
        return DQ_ERR_INTERNAL;
    }
    int rc = DQ_OK;
    for (uint32_t i = 0; i < n && rc == DQ_OK; i++) {
        if (!jobs [i].name)
            continue;
        size_t pos = (size_t) s_hash (jobs [i].name) & (cap - 1);
        while (table [pos]) {
            uint32_t j = table [pos] - 1;
            if (strcmp (jobs [j].name, jobs [i].name) == 0) {
                s_msg_put (msg, "duplicate name '");
                s_msg_put (msg, jobs [i].name);
                s_msg_put (msg, "': jobs #");
                s_msg_uint (msg, j);
                s_msg_put (msg, " and #");
                s_msg_uint (msg, i);
                rc = DQ_ERR_INVALID;
                break;
            }
            pos = (pos + 1) & (cap - 1);
        }
        table [pos] = i + 1;
    }
    free (table);
    return rc;
}

//  Depth-first search with an explicit stack; on the first back edge, names
//  the cycle starting from its lowest index. Indexes were checked already.
static int
s_check_cycles (const dq_jobspec_t *jobs, uint32_t n, s_msg_t *msg)
{
    //  When every job depends only on earlier ones (the usual way to list
    //  a DAG) there is no cycle to look for.
    bool forward = true;
    for (uint32_t i = 0; i < n && forward; i++)
        for (uint32_t k = 0; k < jobs [i].ndeps && forward; k++)
            forward = jobs [i].deps [k].idx < (int32_t) i;
    if (forward)
        return DQ_OK;
    enum { WHITE = 0, GREY, BLACK };
    uint8_t *color = dq_mem_calloc (n, sizeof (*color));
    uint32_t *stack = dq_mem_malloc ((size_t) n * sizeof (*stack));
    uint32_t *next = dq_mem_calloc (n, sizeof (*next));   //  next dep to follow
    int rc = DQ_OK;
    if (!color || !stack || !next) {
        s_msg_put (msg, "out of memory");
        rc = DQ_ERR_INTERNAL;
        goto done;
    }
    for (uint32_t root = 0; root < n && rc == DQ_OK; root++) {
        if (color [root] != WHITE)
            continue;
        size_t depth = 0;
        stack [depth++] = root;
        color [root] = GREY;
        while (depth > 0) {
            uint32_t u = stack [depth - 1];
            if (next [u] == jobs [u].ndeps) {
                color [u] = BLACK;
                depth--;
                continue;
            }
            int32_t idx = jobs [u].deps [next [u]++].idx;
            if (idx < 0)
                continue;           //  an existing job: cannot close a cycle
            uint32_t v = (uint32_t) idx;
            if (color [v] == WHITE) {
                color [v] = GREY;
                stack [depth++] = v;
            }
            else
            if (color [v] == GREY) {
                //  stack [from .. depth - 1] is v -> ... -> u, and u -> v.
                size_t from = depth - 1;
                while (stack [from] != v)
                    from--;
                size_t len = depth - from, start = 0;
                for (size_t k = 1; k < len; k++)
                    if (stack [from + k] < stack [from + start])
                        start = k;
                s_msg_put (msg, "cycle: ");
                for (size_t k = 0; k <= len; k++) {
                    if (k > 0)
                        s_msg_put (msg, " -> ");
                    s_msg_job (msg, jobs, stack [from + (start + k) % len]);
                }
                rc = DQ_ERR_CYCLE;
                break;
            }
        }
    }
done:
    free (color);
    free (stack);
    free (next);
    return rc;
}

int
dq_dag_check (const dq_jobspec_t *jobs, uint32_t n, char *err, size_t err_size)
{
    s_msg_t msg = { err, err_size, 0, false };
    if (err && err_size > 0)
        err [0] = '\0';
    if (n == 0)
        return DQ_OK;
    if (!jobs) {
        s_msg_put (&msg, "no jobs given");
        return DQ_ERR_INVALID;
    }
    uint32_t *seen = dq_mem_calloc (n, sizeof (*seen));
    if (!seen) {
        s_msg_put (&msg, "out of memory");
        return DQ_ERR_INTERNAL;
    }
    int rc = s_check_deps (jobs, n, seen, &msg);
    free (seen);
    if (rc == DQ_OK)
        rc = s_check_names (jobs, n, &msg);
    if (rc == DQ_OK)
        rc = s_check_cycles (jobs, n, &msg);
    return rc;
}

//  --- Graph changes ---------------------------------------------------------

//  Queues on_ready or on_skip for a node just added, if it is due.
static void
s_settle_new (dq_dag_t *self, dq_dag_node_t *node)
{
    dq_dag_node_t *cause = NULL;
    node->unresolved = 0;
    for (uint32_t i = 0; i < node->nparents; i++) {
        dq_dag_node_t *parent = node->parents [i].node;
        if (!s_is_finished (parent))
            node->unresolved++;
        else
        if (parent->phase != DQ_DAG_SUCCEEDED && !node->parents [i].run_on_failure
        &&  !cause)
            cause = s_cause_of (parent);
    }
    node->phase = DQ_DAG_PENDING;
    if (cause) {
        node->phase = DQ_DAG_SKIPPED;
        node->skipped_by = cause;
        s_queue_push (self, node, cause);
    }
    else
    if (node->unresolved == 0) {
        node->phase = DQ_DAG_RELEASED;
        s_queue_push (self, node, NULL);
    }
}

int
dq_dag_add (dq_dag_t *self, dq_dag_node_t *node,
            dq_dag_node_t *const *parents, const bool *run_on_failure,
            uint32_t nparents)
{
    if (!self || !node || (nparents > 0 && !parents))
        return -1;
    //  A zeroed node has no arrays; an added one with edges does.
    if (node->parents || node->children || node->nchildren || node->phase
    ||  node->block)
        return -1;
    for (uint32_t i = 0; i < nparents; i++)
        if (!parents [i] || parents [i] == node)
            return -1;

    dq_dag_edge_t *edges = NULL;
    if (nparents > 0) {
        edges = calloc (nparents, sizeof (*edges));
        if (!edges)
            return -1;
    }
    for (uint32_t i = 0; i < nparents; i++) {
        if (s_child_append (parents [i], node, &edges [i].slot)) {
            //  Undo in reverse: node is the last child of each parent so far.
            while (i-- > 0) {
                parents [i]->nchildren--;
                s_children_shrink (parents [i]);
            }
            free (edges);
            return -1;
        }
        edges [i].node = parents [i];
        edges [i].run_on_failure = run_on_failure && run_on_failure [i];
    }
    node->parents = edges;
    node->nparents = nparents;
    node->skipped_by = NULL;
    s_settle_new (self, node);
    s_fire (self);
    return 0;
}

//  Undoes a batch that failed part way: pops the children appended to
//  parents outside it (edges [0 .. nedges) of the first nodes, in reverse,
//  as each was the last child of its parent when appended), clears flags.
static void
s_batch_undo (dq_dag_node_t *const *nodes, uint32_t n, const size_t *first,
              dq_dag_node_t *const *parents, size_t nedges)
{
    for (size_t e = nedges; e-- > 0; ) {
        dq_dag_node_t *parent = parents [e];
        if (!(parent->flags & S_IN_BATCH)) {
            parent->nchildren--;
            s_children_shrink (parent);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        dq_dag_node_t *node = nodes [i];
        node->flags = 0;
        node->parents = NULL;
        node->nparents = 0;
        node->children = NULL;
        node->nchildren = 0;
        node->children_cap = 0;
        node->block = NULL;
    }
    (void) first;
}

int
dq_dag_add_batch (dq_dag_t *self, dq_dag_node_t *const *nodes, uint32_t n,
                  const size_t *first, dq_dag_node_t *const *parents,
                  const bool *rof)
{
    if (!self || (n > 0 && (!nodes || !first)))
        return -1;
    if (n == 0)
        return 0;
    size_t nedges = first [n];
    if (nedges > 0 && !parents)
        return -1;
    //  Every node fresh and once in the batch.
    uint32_t marked = 0;
    int rc = 0;
    while (marked < n) {
        dq_dag_node_t *node = nodes [marked];
        if (!node || node->parents || node->children || node->nchildren
        ||  node->phase || node->block || node->flags
        ||  first [marked] > first [marked + 1]
        ||  first [marked + 1] - first [marked] > UINT32_MAX) {
            rc = -1;
            break;
        }
        node->flags = S_IN_BATCH;
        marked++;
    }
    //  Parents: given, not the child, in the batch only if earlier. Count
    //  each batch node's children in the batch (in children_cap, for now).
    size_t nslots = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        dq_dag_node_t *node = nodes [i];
        for (size_t e = first [i]; e < first [i + 1] && rc == 0; e++) {
            dq_dag_node_t *parent = parents [e];
            if (!parent || parent == node
            ||  ((parent->flags & S_IN_BATCH) && !(parent->flags & S_SEEN)))
                rc = -1;
            else
            if ((parent->flags & S_IN_BATCH) && parent->children_cap == UINT32_MAX)
                rc = -1;
            else
            if (parent->flags & S_IN_BATCH) {
                parent->children_cap++;
                nslots++;
            }
        }
        node->flags |= S_SEEN;
    }
    s_block_t *block = NULL;
    if (rc == 0) {
        size_t head = (sizeof (s_block_t) + 15) & ~(size_t) 15;
        if (nedges > (SIZE_MAX - head) / 2 / sizeof (dq_dag_edge_t)
        ||  nslots > (SIZE_MAX - head) / 2 / sizeof (dq_dag_node_t *))
            rc = -1;
        else
            block = dq_mem_malloc (head + nedges * sizeof (dq_dag_edge_t)
                                        + nslots * sizeof (dq_dag_node_t *));
        if (!block)
            rc = -1;
    }
    if (rc) {
        for (uint32_t i = 0; i < marked; i++) {
            nodes [i]->flags = 0;
            nodes [i]->children_cap = 0;
        }
        return -1;
    }
    block->refs = n;
    dq_dag_edge_t *edges = (dq_dag_edge_t *)
        ((char *) block + ((sizeof (s_block_t) + 15) & ~(size_t) 15));
    dq_dag_node_t **slots = (dq_dag_node_t **) (edges + nedges);
    //  Child slots: each batch node gets exactly what the batch gives it.
    for (uint32_t i = 0; i < n; i++) {
        dq_dag_node_t *node = nodes [i];
        node->block = block;
        if (node->children_cap) {
            node->children = slots;
            node->flags |= S_CHILDREN_LENT;
            slots += node->children_cap;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        dq_dag_node_t *node = nodes [i];
        node->parents = edges + first [i];
        node->nparents = (uint32_t) (first [i + 1] - first [i]);
        for (size_t e = first [i]; e < first [i + 1]; e++) {
            dq_dag_node_t *parent = parents [e];
            dq_dag_edge_t *edge = &edges [e];
            edge->node = parent;
            edge->run_on_failure = rof && rof [e];
            if (parent->flags & S_IN_BATCH) {
                edge->slot = parent->nchildren;
                parent->children [parent->nchildren++] = node;
            }
            else
            if (s_child_append (parent, node, &edge->slot)) {
                s_batch_undo (nodes, n, first, parents, e);
                free (block);
                return -1;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        dq_dag_node_t *node = nodes [i];
        node->flags &= (uint8_t) ~(S_IN_BATCH | S_SEEN);
        node->skipped_by = NULL;
        s_settle_new (self, node);
    }
    s_fire (self);
    return 0;
}

int
dq_dag_topo_order (const dq_jobspec_t *jobs, uint32_t n, uint32_t *order)
{
    if (n == 0)
        return 0;
    if (!jobs || !order)
        return -1;
    //  Children lists in compressed form: first [j] .. first [j + 1] in child.
    uint32_t *indegree = calloc (n, sizeof (*indegree));
    size_t *first = calloc ((size_t) n + 1, sizeof (*first));
    uint32_t *child = NULL;
    int rc = -1;
    if (!indegree || !first)
        goto done;
    size_t nedges = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (jobs [i].ndeps > 0 && !jobs [i].deps)
            goto done;
        for (uint32_t k = 0; k < jobs [i].ndeps; k++) {
            int32_t idx = jobs [i].deps [k].idx;
            if (idx == -1)
                continue;
            if (idx < 0 || (uint32_t) idx >= n)
                goto done;
            first [idx + 1]++;
            indegree [i]++;
            nedges++;
        }
    }
    for (uint32_t j = 0; j < n; j++)
        first [j + 1] += first [j];
    child = malloc ((nedges ? nedges : 1) * sizeof (*child));
    if (!child)
        goto done;
    {
        //  Fill from the back of each range, reusing first [] as cursors;
        //  afterwards first [j] is the start of j's range again.
        for (uint32_t i = n; i-- > 0; )
            for (uint32_t k = jobs [i].ndeps; k-- > 0; ) {
                int32_t idx = jobs [i].deps [k].idx;
                if (idx >= 0)
                    child [--first [idx + 1]] = i;
            }
        //  first [j + 1] now holds the start of j's range; shift back.
        for (uint32_t j = 0; j < n; j++)
            first [j] = first [j + 1];
        first [n] = nedges;
    }
    //  order [] is the FIFO queue: head reads, tail writes.
    uint32_t head = 0, tail = 0;
    for (uint32_t i = 0; i < n; i++)
        if (indegree [i] == 0)
            order [tail++] = i;
    while (head < tail) {
        uint32_t u = order [head++];
        for (size_t e = first [u]; e < first [u + 1]; e++)
            if (--indegree [child [e]] == 0)
                order [tail++] = child [e];
    }
    rc = tail == n ? 0 : -1;
done:
    free (indegree);
    free (first);
    free (child);
    return rc;
}

int
dq_dag_finish (dq_dag_t *self, dq_dag_node_t *node, int state)
{
    if (!self || !node)
        return -1;
    uint8_t phase;
    switch (state) {
        case DQ_STATE_SUCCEEDED: phase = DQ_DAG_SUCCEEDED; break;
        case DQ_STATE_FAILED:
        case DQ_STATE_CANCELLED: phase = DQ_DAG_FAILED; break;
        case DQ_STATE_SKIPPED:   phase = DQ_DAG_SKIPPED; break;
        default: return -1;
    }
    if (node->phase != DQ_DAG_PENDING && node->phase != DQ_DAG_RELEASED)
        return -1;
    if (s_stack_reserve (self, 1))
        return -1;
    node->phase = phase;
    s_stack_push (self, node);
    s_cascade (self);
    s_fire (self);
    return 0;
}

void
dq_dag_forget (dq_dag_t *self, dq_dag_node_t *node)
{
    if (!self || !node)
        return;
    //  Nodes that recorded this node as their cause, directly or through it
    //  (same recorded cause, reached via children), would keep a pointer to
    //  memory the broker is about to free: clear them. A node is cleared at
    //  most once in its life, so this costs O(edges) overall.
    dq_dag_node_t *key = s_cause_of (node);
    if (node->nchildren > 0) {
        size_t base = self->nstack;
        s_stack_push (self, node);
        while (self->nstack > base) {
            dq_dag_node_t *walk = self->stack [--self->nstack];
            for (uint32_t i = 0; i < walk->nchildren; i++) {
                dq_dag_node_t *child = walk->children [i];
                if (child->skipped_by == key) {
                    child->skipped_by = NULL;
                    s_stack_push (self, child);
                }
            }
        }
        if (!self->firing)
            s_trim (self);
    }
    for (uint32_t i = 0; i < node->nparents; i++) {
        dq_dag_node_t *parent = node->parents [i].node;
        if (parent)
            s_child_remove (parent, node->parents [i].slot);
    }
    for (uint32_t i = 0; i < node->nchildren; i++) {
        dq_dag_node_t *child = node->children [i];
        for (uint32_t k = 0; k < child->nparents; k++)
            if (child->parents [k].node == node && child->parents [k].slot == i) {
                child->parents [k].node = NULL;
                break;
            }
    }
    dq_dag_drop (node);
}

void
dq_dag_drop (dq_dag_node_t *node)
{
    if (!node)
        return;
    if (!node->block)
        free (node->parents);
    if (!(node->flags & S_CHILDREN_LENT))
        free (node->children);
    s_block_t *block = node->block;
    if (block && --block->refs == 0)
        free (block);
    node->block = NULL;
    node->flags = 0;
    node->parents = NULL;
    node->children = NULL;
    node->nparents = 0;
    node->nchildren = 0;
    node->children_cap = 0;
    node->unresolved = 0;
    node->skipped_by = NULL;
}

bool
dq_dag_has_pending_children (const dq_dag_node_t *node)
{
    if (!node)
        return false;
    for (uint32_t i = 0; i < node->nchildren; i++) {
        uint8_t phase = node->children [i]->phase;
        if (phase == DQ_DAG_PENDING || phase == DQ_DAG_RELEASED)
            return true;
    }
    return false;
}
