/*  dq_gwlink.h - the gateway's link to the broker: one I/O thread that owns
    the DEALER socket (and the optional SUB socket for events).

    HTTP handler threads never block on the broker. They fill a dq_gwop_t,
    hand it over with dq_gwlink_push (a mutex-protected list and an eventfd
    wake-up) and suspend their connection; the link thread sends the
    request, matches the reply by rid, fills the op's answer and calls its
    done callback, which resumes the connection.

    Single jobs (DQ_GWOP_JOB) are coalesced: all pending ones go to the
    broker as one SUBMIT whenever no batch is unanswered, so the batch size
    follows the broker's commit latency (the broker commits a batch per loop
    turn: coalescing is what makes "202 after durable" cheap). A batch that
    fails as a whole because of some of its jobs (all or nothing: one
    invalid job, one unknown parent) is resubmitted job by job, so each
    request gets its own answer; a full broker (BUSY) fails the batch.

    A request that was lost (a broker restart) is re-sent with the same rid
    and the same idempotency keys (a generated submission key when the
    caller gave none) until its timeout, so a lost reply or a broker restart
    costs neither a loss nor a duplicate. The socket reconnects by itself; when no
    connection exists for a while, requests fail at once with
    DQ_ERR_UNAVAILABLE instead of waiting for their timeout.

    A JOB op with wait_ms > 0 is held after the broker accepted it until
    the job is terminal (STATUS polls, woken early by the broker's PUB
    events when an events endpoint is configured), then its RESULT is
    fetched. Any failure after acceptance answers as without wait (the job
    is durable; the caller answers 202).

    Not here: HTTP, JSON, routes (dq_gateway).
*/
#ifndef DQ_GWLINK_H_INCLUDED
#define DQ_GWLINK_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "dq_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_GWLINK_ID_MAX        65          //  job id + NUL
#define DQ_GWLINK_MESSAGE_MAX   512         //  error text + NUL
#define DQ_GWLINK_BATCH_JOBS    4096        //  jobs coalesced into one SUBMIT
#define DQ_GWLINK_BATCH_BYTES   (8u << 20)  //  payload bytes in one SUBMIT
#define DQ_GWLINK_DOWN_GRACE_MS 2000        //  no connection this long: fail fast

typedef enum {
    DQ_GWOP_JOB = 1,         //  one job (jobs[0]); coalesced with others
    DQ_GWOP_SUBMIT,          //  a whole submission (bulk, DAG): one SUBMIT
    DQ_GWOP_STATUS,          //  id -> JOBS
    DQ_GWOP_RESULT,          //  id -> OUTPUT
    DQ_GWOP_CANCEL,          //  id (job or DAG) -> CANCELLED
    DQ_GWOP_STATS,           //  -> STATS_REPLY
    DQ_GWOP_DAG              //  id -> DAG_INFO
} dq_gwop_kind_t;

typedef struct _dq_gwop_t dq_gwop_t;

//  Called exactly once per op, on the link thread (or on the pushing
//  thread when the link is stopping). After it returns the link never
//  touches the op again.
typedef void (dq_gwop_done_fn) (dq_gwop_t *op);

//  One operation. The caller owns the memory (it is embedded in the HTTP
//  request) and keeps it, and everything its input fields point to, alive
//  and unchanged until done is called.
struct _dq_gwop_t {
    //  Input, set before dq_gwlink_push.
    dq_gwop_kind_t kind;
    const dq_jobspec_t *jobs;   //  JOB: one spec; SUBMIT: njobs specs
    uint32_t njobs;
    const char *dag_name;       //  SUBMIT: non-NULL makes a DAG
    const char *key;            //  SUBMIT: submission key, NULL = generated
    const char *id;             //  STATUS RESULT CANCEL DAG
    bool summary;               //  DAG: the counts only, no job list
    uint32_t offset, limit;     //  DAG: one page of the job list; limit 0 =
                                //  every job, gathered page by page
    uint32_t max_jobs;          //  DAG with limit 0: a larger DAG is TOO_BIG
                                //  (0 = any size)
    uint32_t wait_ms;           //  JOB: hold until terminal, up to this long
    uint32_t timeout_ms;        //  broker answer deadline; 0 = link default
    dq_gwop_done_fn *done;
    void *arg;                  //  for the caller
    //  Output, valid when done is called.
    int err;                    //  DQ_OK or a dq_err_t
    uint32_t retry_ms;          //  hint with BUSY, STORE_FULL, UNAVAILABLE
    char message [DQ_GWLINK_MESSAGE_MAX];  //  error text when err != DQ_OK
    char job_id [DQ_GWLINK_ID_MAX];        //  JOB: the job's id
    bool waited;                //  JOB with wait: reply is its OUTPUT
    dq_msg_t *reply;            //  broker's reply (SUBMIT, STATUS, ...), or
                                //  NULL; the caller destroys it
    //  Private to the link.
    dq_gwop_t *next_;
    uint64_t wait_until_;       //  monotonic ms: end of the ?wait hold
    uint64_t since_;            //  monotonic ms: when the link took it
};

typedef struct {
    const char *broker;         //  frontend endpoint, e.g. tcp://127.0.0.1:5555
    const char *events;         //  PUB endpoint or NULL
    uint32_t timeout_ms;        //  default broker answer deadline
    const char *curve_secret;   //  our secret certificate file, or NULL
    const char *curve_broker_public;  //  broker's public certificate file
} dq_gwlink_cfg_t;

//  Counters for /metrics; read with dq_gwlink_stats (approximate, relaxed).
typedef struct {
    uint64_t batches;           //  coalesced SUBMITs sent (first sends)
    uint64_t batched_jobs;      //  jobs in them
    uint64_t resends;           //  requests re-sent after no answer
    uint64_t timeouts;          //  requests given up (503)
    uint64_t splits;            //  batches refused whole and re-sent one by one
    uint64_t reconnects;        //  DEALER sockets recreated
    uint64_t inflight;          //  client requests at the broker, unanswered (gauge)
    uint64_t waiting;           //  jobs held for ?wait (gauge)
    uint64_t turns;             //  turns of the link thread's loop
} dq_gwlink_stats_t;

typedef struct _dq_gwlink_t dq_gwlink_t;

//  Start the link thread. Returns NULL with a message in err on a bad
//  endpoint or unreadable CURVE certificates.
dq_gwlink_t *
    dq_gwlink_new (const dq_gwlink_cfg_t *cfg, char *err, size_t err_size);

//  Stop the thread: every op not yet done is done (DQ_ERR_UNAVAILABLE, or
//  accepted-without-wait for held jobs); later pushes are answered at once
//  with DQ_ERR_UNAVAILABLE on the pushing thread. Idempotent.
void
    dq_gwlink_stop (dq_gwlink_t *self);

//  Stop (if not yet) and free. NULL-safe.
void
    dq_gwlink_destroy (dq_gwlink_t **self_p);

//  Hand an op to the link. Thread-safe. op->done is called exactly once.
void
    dq_gwlink_push (dq_gwlink_t *self, dq_gwop_t *op);

//  True if the link thread stopped on an error (it answers every op with
//  DQ_ERR_UNAVAILABLE from then on). Thread-safe.
bool
    dq_gwlink_failed (dq_gwlink_t *self);

//  Monotonic ms (dq_mono_ms) of the broker's last answer, 0 if none yet.
//  Thread-safe.
uint64_t
    dq_gwlink_last_answer (dq_gwlink_t *self);

//  Copy the counters. Thread-safe.
void
    dq_gwlink_stats (dq_gwlink_t *self, dq_gwlink_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif
