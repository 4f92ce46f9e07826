/*  dq_rec.h - the broker's in-memory records, shared by its modules.

    Plain structs, as they are the broker's own: the job table (dq_broker.c)
    owns jobs, the registry owns workers, the scheduler owns types. Heaps and
    the DAG tracker hold borrowed pointers with intrusive indexes, so every
    removal is O(log n).

    A job record is small on purpose (the target is under 300 bytes per
    queued job beyond its payload, hash slot and heap entry included).
*/
#ifndef DQ_REC_H_INCLUDED
#define DQ_REC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dq_dag.h"
#include "dq_heap.h"

typedef struct dq_type_s dq_type_t;
typedef struct dq_bworker_s dq_bworker_t;
typedef struct dq_bdag_s dq_bdag_t;
typedef struct dq_bjob_s dq_bjob_t;

//  Which heap a job's pos indexes.
typedef enum {
    DQ_WHERE_NONE = 0,
    DQ_WHERE_READY,          //  its type's ready queue
    DQ_WHERE_TIMER           //  the broker's deadline heap
} dq_where_t;

struct dq_bjob_s {
    dq_dag_node_t node;      //  node.id is the job's sequence number
    dq_type_t *type;
    dq_bworker_t *worker;    //  while running
    dq_bdag_t *dag;          //  or NULL
    size_t pos;              //  index in the heap named by where
    uint64_t deadline_ms;    //  key in the deadline heap
    uint64_t created_ms, started_ms, finished_ms, run_at_ms;
    void *payload;           //  freed once the job is terminal
    void *output;
    char *error;
    char *name;              //  local name in its DAG
    char *content_type;
    uint64_t skipped_by;
    uint32_t payload_size, output_size, timeout_ms;
    uint32_t last_worker;    //  number of the last worker ("w<n>"), 0 = none
    union {
        uint32_t slot;       //  running: index in worker->jobs
        uint32_t ready_commit;  //  queued: the store commit (low 32 bits)
                             //  that holds what made it ready
    };
    int32_t priority;
    uint16_t attempts, max_attempts;
    uint8_t state, where;
    bool in_slab;            //  the record is part of its DAG's slab
    bool restored;           //  a cold job brought back: parents it had
                             //  that were not in memory are not in node
};

//  A worker's membership in one type's worker heap.
typedef struct {
    dq_bworker_t *worker;
    dq_type_t *type;
    size_t pos;
} dq_member_t;

struct dq_type_s {
    char *name;
    dq_heap_t *ready;        //  jobs: priority desc, then sequence asc
    dq_heap_t *workers;      //  members: least loaded first, then idle longest
    //  Jobs per state: gauges for waiting/queued/running, totals since
    //  start for the terminal states.
    uint64_t counts [DQ_STATE_COUNT_];
};

struct dq_bworker_s {
    uint8_t rid [256];       //  ZeroMQ routing id
    size_t rid_size;
    char key [520];          //  hex of rid: the registry's key
    uint32_t num;            //  "w<num>"
    char *name, *host;
    uint32_t pid;
    uint32_t capacity, inflight;
    dq_bjob_t **jobs;        //  slots, jobs_cap of them; NULL = free
    uint32_t jobs_cap;
    dq_member_t *members;
    uint32_t nmembers;
    char **types;
    uint64_t last_recv_ms, last_send_ms;
    uint64_t tick;           //  when it was last given a job (ties: oldest first)
    uint64_t done;
    uint64_t *acks;          //  job sequences to acknowledge after commit
    uint32_t nacks, acks_cap;
    dq_bjob_t **pending;     //  dispatched this turn, JOB not queued yet
    uint32_t npending, pending_cap;
    uint32_t nearly;         //  pending [0, nearly) may go at once
    uint64_t welcome_commit; //  the commit its last WELCOME waits for
    bool stalled;            //  a send would block: give it nothing more
    bool batch;              //  takes several jobs in one JOB message
};

struct dq_bdag_s {
    uint64_t seq;
    char *name;
    uint64_t created_ms, finished_ms;
    uint64_t *jobs;          //  job sequences, in submission order
    uint32_t njobs;
    dq_bjob_t *slab;         //  the records of the jobs it created, in one
                             //  array: freed with the DAG, after its jobs
    uint32_t alive;          //  jobs not yet deleted by retention
    uint32_t counts [DQ_STATE_COUNT_];     //  jobs per state
};

#endif
