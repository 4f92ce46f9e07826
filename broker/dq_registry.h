/*  dq_registry.h - the workers the broker knows, by ZeroMQ routing id.

    Owns the worker records (dq_bworker_t in dq_rec.h). No sockets: the
    broker looks workers up by the routing id a message came with, and walks
    them for heartbeats and stats.
*/
#ifndef DQ_REGISTRY_H_INCLUDED
#define DQ_REGISTRY_H_INCLUDED

#include "dq_rec.h"

typedef struct _dq_registry_t dq_registry_t;

dq_registry_t *
    dq_registry_new (void);
//  Destroys every worker record. NULL-safe.
void
    dq_registry_destroy (dq_registry_t **self_p);

dq_bworker_t *
    dq_registry_lookup (dq_registry_t *self, const void *rid, size_t rid_size);
//  A new, zeroed worker record for rid with the next worker number.
dq_bworker_t *
    dq_registry_add (dq_registry_t *self, const void *rid, size_t rid_size);
//  Destroy a worker record (it must hold no jobs and be out of the scheduler).
void
    dq_registry_remove (dq_registry_t *self, dq_bworker_t **worker_p);

size_t
    dq_registry_size (dq_registry_t *self);
//  Iterate: first, then next until NULL. Do not add or remove workers while
//  iterating: collect them, then remove.
dq_bworker_t *
    dq_registry_first (dq_registry_t *self);
dq_bworker_t *
    dq_registry_next (dq_registry_t *self);

#endif
