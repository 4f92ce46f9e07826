/*  dq_sched.h - ready queues and worker choice.

    Plain data structure: no sockets, no clock. Each job type has a ready
    queue (priority, then submission order) and a heap of the workers that
    announced it (least loaded first: in-flight/capacity, ties go to the
    worker given a job longest ago). dq_sched_next pairs the best job of a
    type with the best worker for it, visiting types round-robin so one busy
    type cannot starve another that shares its workers.

    A worker has a free slot when it is not stalled and inflight < capacity.
    The scheduler never changes a worker's counters: the caller does, then
    calls dq_sched_worker_changed.
*/
#ifndef DQ_SCHED_H_INCLUDED
#define DQ_SCHED_H_INCLUDED

#include "dq_rec.h"

typedef struct _dq_sched_t dq_sched_t;

dq_sched_t *
    dq_sched_new (void);
//  Frees the types and their heaps, not jobs or workers. NULL-safe.
void
    dq_sched_destroy (dq_sched_t **self_p);

//  The type named name, created when create is true (NULL otherwise).
dq_type_t *
    dq_sched_type (dq_sched_t *self, const char *name, bool create);
size_t
    dq_sched_ntypes (dq_sched_t *self);
dq_type_t *
    dq_sched_type_at (dq_sched_t *self, size_t index);

//  Put a job in its type's ready queue (job->where = DQ_WHERE_READY).
int
    dq_sched_enqueue (dq_sched_t *self, dq_bjob_t *job);
//  Take a queued job out of its queue.
void
    dq_sched_dequeue (dq_sched_t *self, dq_bjob_t *job);

//  Join a worker to the heaps of its types (worker->types, ntypes); replaces
//  any earlier membership. Returns 0 or -1.
int
    dq_sched_worker_join (dq_sched_t *self, dq_bworker_t *worker,
                          const char *const *types, uint32_t ntypes);
//  Leave every heap.
void
    dq_sched_worker_leave (dq_sched_t *self, dq_bworker_t *worker);
//  Re-order the worker after inflight, capacity, tick or stalled changed.
void
    dq_sched_worker_changed (dq_sched_t *self, dq_bworker_t *worker);

bool
    dq_sched_worker_free (const dq_bworker_t *worker);

//  Pick the next (job, worker) pair: removes the job from its queue and
//  returns true, or returns false if no queued job has a free worker.
bool
    dq_sched_next (dq_sched_t *self, dq_bjob_t **job, dq_bworker_t **worker);

#endif
