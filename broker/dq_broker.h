/*  dq_broker.h - the broker: one event loop over the frontend (clients),
    backend (workers) and events (PUB) sockets, the job table, the DAG
    tracker, the scheduler, the worker registry, the deadline heap and the
    store. See dq_broker.c for the loop's phases.
*/
#ifndef DQ_BROKER_H_INCLUDED
#define DQ_BROKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DQ_BROKER_FRONTEND_DEFAULT   "tcp://*:5555"
#define DQ_BROKER_BACKEND_DEFAULT    "tcp://*:5556"
#define DQ_BROKER_EVENTS_DEFAULT     "tcp://*:5557"
#define DQ_BROKER_DATA_DIR_DEFAULT   "./dagq-data"
#define DQ_BROKER_HEARTBEAT_DEFAULT  1000          //  ms
#define DQ_BROKER_LIVENESS_DEFAULT   3             //  heartbeats
#define DQ_BROKER_MAX_JOBS_DEFAULT   5000000       //  unfinished jobs
#define DQ_BROKER_MAX_BYTES_DEFAULT  (2ull << 30)  //  payload bytes of unfinished jobs
#define DQ_BROKER_MAX_PAYLOAD_DEFAULT (16u << 20)
#define DQ_BROKER_MAX_MESSAGE_DEFAULT (256u << 20)  //  a 1,000,000-job DAG fits
#define DQ_BROKER_MAX_DAG_JOBS_DEFAULT 1000000
#define DQ_BROKER_MAX_DEPS_DEFAULT   1024
#define DQ_BROKER_ATTEMPTS_DEFAULT   3
#define DQ_BROKER_RETRY_BASE_DEFAULT 1000          //  ms, doubled per attempt
#define DQ_BROKER_RETRY_MAX_DEFAULT  60000         //  ms
#define DQ_BROKER_RESULT_TTL_DEFAULT (24ull * 3600 * 1000)
#define DQ_BROKER_MIN_FREE_DEFAULT   (64ull << 20) //  disk bytes kept free
#define DQ_BROKER_BATCH_DEFAULT      4096          //  messages per loop turn

typedef struct {
    const char *frontend, *backend, *events;
    const char *data_dir;
    bool memory;             //  no store: nothing survives a restart
    int sync;                //  dq_store_sync_t
    const char *broker_id;   //  only when creating a data dir; NULL = random
    uint32_t heartbeat_ms, liveness;
    uint64_t max_jobs, max_bytes;
    uint32_t max_payload, max_message;
    uint32_t max_dag_jobs, max_deps;
    uint32_t attempts;       //  default attempts per job
    uint32_t retry_base_ms, retry_max_ms;
    uint64_t result_ttl_ms;
    uint64_t max_store_bytes;  //  0 = no limit
    uint64_t min_free_bytes;
    uint32_t batch;
    //  CURVE (NULL = plain TCP)
    const char *curve_secret;    //  broker's secret certificate file
    const char *curve_clients;   //  dir of client (and worker) public certs
    const char *curve_workers;   //  optional separate dir for workers
} dq_broker_cfg_t;

//  Fill cfg with the defaults above.
void
    dq_broker_cfg_defaults (dq_broker_cfg_t *cfg);

typedef struct _dq_broker_t dq_broker_t;

//  Exit codes of dagq-broker for failures at start.
#define DQ_BROKER_EXIT_USAGE  2
#define DQ_BROKER_EXIT_CONFIG 3
#define DQ_BROKER_EXIT_BIND   4
#define DQ_BROKER_EXIT_STORE  5

//  Open the store and rebuild state from it, then bind the sockets. On
//  failure returns NULL, writes a message to err and sets *exit_code.
dq_broker_t *
    dq_broker_new (const dq_broker_cfg_t *cfg, char *err, size_t err_size,
                   int *exit_code);

//  Run the loop until SIGINT/SIGTERM (or dq_broker_stop). Returns 0 after a
//  clean stop, non-zero when a store write failed (fail-stop).
int
    dq_broker_run (dq_broker_t *self);

//  Async-signal-safe request to stop.
void
    dq_broker_stop (dq_broker_t *self);

void
    dq_broker_destroy (dq_broker_t **self_p);

#endif
