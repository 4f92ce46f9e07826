/*  dq_sched.c - ready queues and worker choice. See dq_sched.h. */
#include "dq_sched.h"

#include <stdlib.h>
#include <string.h>

struct _dq_sched_t {
    dq_type_t **types;
    size_t ntypes, cap;
    size_t cursor;           //  round-robin position for dq_sched_next
};

static bool
s_job_before (const void *a, const void *b)
{
    const dq_bjob_t *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority > y->priority;
    return x->node.id < y->node.id;
}

static void
s_job_setpos (void *item, size_t pos)
{
    ((dq_bjob_t *) item)->pos = pos;
}

bool
dq_sched_worker_free (const dq_bworker_t *w)
{
    return !w->stalled && w->inflight < w->capacity;
}

//  Least loaded first. Load is inflight/capacity, compared without division;
//  a worker without a free slot sorts after every worker with one.
static bool
s_member_before (const void *a, const void *b)
{
    const dq_bworker_t *x = ((const dq_member_t *) a)->worker;
    const dq_bworker_t *y = ((const dq_member_t *) b)->worker;
    bool fx = dq_sched_worker_free (x), fy = dq_sched_worker_free (y);
    if (fx != fy)
        return fx;
    uint64_t lx = (uint64_t) x->inflight * (y->capacity? y->capacity: 1);
    uint64_t ly = (uint64_t) y->inflight * (x->capacity? x->capacity: 1);
    if (lx != ly)
        return lx < ly;
    return x->tick < y->tick;
}

static void
s_member_setpos (void *item, size_t pos)
{
    ((dq_member_t *) item)->pos = pos;
}

dq_sched_t *
dq_sched_new (void)
{
    return calloc (1, sizeof (dq_sched_t));
}

void
dq_sched_destroy (dq_sched_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_sched_t *self = *self_p;
    for (size_t i = 0; i < self->ntypes; i++) {
        dq_type_t *t = self->types [i];
        dq_heap_destroy (&t->ready);
        dq_heap_destroy (&t->workers);
        free (t->name);
        free (t);
    }
    free (self->types);
    free (self);
    *self_p = NULL;
}

dq_type_t *
dq_sched_type (dq_sched_t *self, const char *name, bool create)
{
    //  Deployments have tens of types, not thousands: a scan is fine and
    //  keeps the round-robin order stable.
    for (size_t i = 0; i < self->ntypes; i++)
        if (strcmp (self->types [i]->name, name) == 0)
            return self->types [i];
    if (!create)
        return NULL;
    if (self->ntypes == self->cap) {
        size_t cap = self->cap? self->cap * 2: 16;
        dq_type_t **types = realloc (self->types, cap * sizeof *types);
        if (!types)
            return NULL;
        self->types = types;
        self->cap = cap;
    }
    dq_type_t *t = calloc (1, sizeof *t);
    if (!t)
        return NULL;
    t->name = strdup (name);
    t->ready = dq_heap_new (s_job_before, s_job_setpos);
    t->workers = dq_heap_new (s_member_before, s_member_setpos);
    if (!t->name || !t->ready || !t->workers) {
        dq_heap_destroy (&t->ready);
        dq_heap_destroy (&t->workers);
        free (t->name);
        free (t);
        return NULL;
    }
    self->types [self->ntypes++] = t;
    return t;
}

size_t
dq_sched_ntypes (dq_sched_t *self)
{
    return self->ntypes;
}

dq_type_t *
dq_sched_type_at (dq_sched_t *self, size_t index)
{
    return index < self->ntypes? self->types [index]: NULL;
}

int
dq_sched_enqueue (dq_sched_t *self, dq_bjob_t *job)
{
    (void) self;
    if (dq_heap_push (job->type->ready, job))
        return -1;
    job->where = DQ_WHERE_READY;
    return 0;
}

void
dq_sched_dequeue (dq_sched_t *self, dq_bjob_t *job)
{
    (void) self;
    if (job->where == DQ_WHERE_READY) {
        dq_heap_remove (job->type->ready, job->pos);
        job->where = DQ_WHERE_NONE;
    }
}

void
dq_sched_worker_leave (dq_sched_t *self, dq_bworker_t *worker)
{
    (void) self;
    for (uint32_t i = 0; i < worker->nmembers; i++) {
        dq_member_t *m = &worker->members [i];
        dq_heap_remove (m->type->workers, m->pos);
    }
    free (worker->members);
    worker->members = NULL;
    worker->nmembers = 0;
}

int
dq_sched_worker_join (dq_sched_t *self, dq_bworker_t *worker,
                      const char *const *types, uint32_t ntypes)
{
    dq_sched_worker_leave (self, worker);
    if (ntypes == 0)
        return 0;
    worker->members = calloc (ntypes, sizeof (dq_member_t));
    if (!worker->members)
        return -1;
    for (uint32_t i = 0; i < ntypes; i++) {
        dq_type_t *t = dq_sched_type (self, types [i], true);
        if (!t)
            return -1;
        //  A type announced twice joins once.
        bool dup = false;
        for (uint32_t k = 0; k < worker->nmembers; k++)
            dup |= worker->members [k].type == t;
        if (dup)
            continue;
        dq_member_t *m = &worker->members [worker->nmembers];
        m->worker = worker;
        m->type = t;
        if (dq_heap_push (t->workers, m))
            return -1;
        worker->nmembers++;
    }
    return 0;
}

void
dq_sched_worker_changed (dq_sched_t *self, dq_bworker_t *worker)
{
    (void) self;
    for (uint32_t i = 0; i < worker->nmembers; i++) {
        dq_member_t *m = &worker->members [i];
        dq_heap_update (m->type->workers, m->pos);
    }
}

bool
dq_sched_next (dq_sched_t *self, dq_bjob_t **job, dq_bworker_t **worker)
{
    for (size_t n = 0; n < self->ntypes; n++) {
        dq_type_t *t = self->types [self->cursor];
        self->cursor = (self->cursor + 1) % self->ntypes;
        if (dq_heap_size (t->ready) == 0)
            continue;
        dq_member_t *m = dq_heap_peek (t->workers);
        if (!m || !dq_sched_worker_free (m->worker))
            continue;
        *job = dq_heap_pop (t->ready);
        (*job)->where = DQ_WHERE_NONE;
        *worker = m->worker;
        return true;
    }
    return false;
}
