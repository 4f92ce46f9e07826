/*  dq_worker.h - the embeddable worker engine.

    A dq_worker_t connects one DEALER to a broker's backend, announces the
    types it has handlers for and its capacity (jobs at once), runs jobs,
    heartbeats, reports results (keeping each until the broker acknowledges
    it, and sending it again after a reconnect), and reconnects with backoff
    when the broker goes away. dagq-worker is built on it; so can be any
    program that wants to run jobs in-process (see examples/).

    Handlers run on a pool of `concurrency` threads, one job per thread, so a
    handler may block. Handlers registered with DQ_WORKER_INLINE run on the
    engine's own thread instead and must be quick (echo, hashing small
    payloads): they save the thread hand-off.

    The engine never runs more than `concurrency` pool handlers at once. If
    the broker sends a job while every pool thread is busy (it can, after an
    ABANDON whose handler has not returned yet: the broker frees the slot at
    once), the job waits in a local queue until a thread is free.

    The engine uses czmq's global context (zsys_init), so czmq's SIGINT and
    SIGTERM handler sets zsys_interrupted, which stops dq_worker_run. A
    program that wants its own signal handling calls zsys_handler_set (NULL)
    (or sets ZSYS_SIGHANDLER=false) first and calls dq_worker_stop itself.
    Pool threads block SIGINT, SIGTERM, SIGHUP and SIGPIPE.

    Protocol (docs/protocol.md): READY on connect, repeated every second
    until WELCOME (whose heartbeat_ms and liveness then apply); HEARTBEAT
    after heartbeat_ms without sending; a broker silent for liveness x
    heartbeat_ms is given up: new socket after 100 ms doubling to 5 s, with
    jitter, and READY again listing the jobs still held. Each DONE carries
    its job's sequence number as rid, so an ERROR about it is matched: busy,
    internal, store_full or unavailable resends it after max(retry_ms, 1 s),
    other codes drop it. A JOB for an id already held is not run twice: a
    running one reports under the newer attempt, a succeeded one not yet
    acknowledged is sent again, a failed one runs again.

    Logging goes through czmq's zsys_* (stdout unless the program calls
    zsys_set_logstream), never with payloads; per-job lines are DEBUG.

    Not done here: running external commands (worker/dq_exec), the built-in
    types (worker/dq_builtins), option parsing (worker/dagq_worker.c).
*/
#ifndef DQ_WORKER_H_INCLUDED
#define DQ_WORKER_H_INCLUDED

#include <stdatomic.h>
#include "dq_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_WORKER_BROKER_DEFAULT "tcp://127.0.0.1:5556"
#define DQ_WORKER_GRACE_DEFAULT  30000      //  ms to finish jobs on stop
#define DQ_WORKER_CONCURRENCY_MAX 1024      //  pool threads at most
#define DQ_WORKER_ERROR_MAX      4000       //  bytes of a job's error text kept
//  Largest output reported as success: the protocol's payload limit less
//  room for the rest of the DONE message, so a DONE always fits a broker's
//  default 64 MiB message limit (a bigger message would make ZeroMQ drop
//  the connection, and the worker would send it again after reconnecting).
#define DQ_WORKER_OUTPUT_MAX     (DQ_PROTO_PAYLOAD_MAX - 8192)

//  Log thresholds for dq_worker_set_log_level (czmq's zsys_* does the
//  writing; czmq itself has no threshold).
#define DQ_WORKER_LOG_ERROR 0
#define DQ_WORKER_LOG_WARN  1
#define DQ_WORKER_LOG_INFO  2               //  default: lifecycle events
#define DQ_WORKER_LOG_DEBUG 3               //  every job and message

//  What a handler gets. Everything is borrowed for the call.
typedef struct {
    const char *id;
    const char *type;
    const void *payload;
    size_t payload_size;
    const char *content_type;    //  or NULL
    uint32_t attempt;            //  1 for the first
    uint32_t timeout_ms;         //  0 = none
    const dq_parent_t *parents;  //  parents' outputs, in depends_on order
    uint32_t nparents;
    //  Set when the broker abandons the job (cancel, timeout) or the worker
    //  is stopping past its grace period: a long handler should poll it and
    //  return early. Its result is then discarded.
    atomic_bool *abandoned;
    //  A file descriptor that becomes readable at the same moment (for
    //  poll()), or -1 (inline handlers). Owned by the engine: do not close.
    int abandon_fd;
} dq_task_t;

//  What a handler returns. On success set output (malloc'd; the engine frees
//  it) and output_size; on failure set error (malloc'd text). content_type
//  is optional (a static string).
typedef struct {
    void *output;
    size_t output_size;
    char *error;
    const char *content_type;
} dq_result_t;

//  Returns 0 for success, -1 for failure. Output over the worker's output
//  limit (DQ_WORKER_OUTPUT_MAX unless set lower) becomes the failure "output
//  too large"; an error text is cut to DQ_WORKER_ERROR_MAX bytes and made
//  valid UTF-8; a failure without error text reports "handler failed".
//  content_type must be at most 256 bytes.
typedef int (dq_handler_fn) (const dq_task_t *task, void *arg,
                             dq_result_t *result);

#define DQ_WORKER_INLINE 1

typedef struct _dq_worker_t dq_worker_t;

//  A worker for the broker backend at endpoint running up to concurrency
//  jobs at once (0 = number of cores). Returns NULL on a bad argument.
dq_worker_t *
    dq_worker_new (const char *endpoint, uint32_t concurrency);

//  Stop (as dq_worker_stop) if running and wait for dq_worker_run to
//  return, join the pool threads (a handler that ignores `abandoned`
//  blocks this), free. NULL-safe.
void
    dq_worker_destroy (dq_worker_t **self_p);

//  Register a handler for a job type (before dq_worker_run). Returns 0, or
//  -1 for a bad type name or a type registered twice.
int
    dq_worker_register (dq_worker_t *self, const char *type,
                        dq_handler_fn *fn, void *arg, int flags);

//  As dq_worker_register; in addition the worker owns arg and calls
//  arg_free (arg) when it is destroyed, or at once when this call fails.
int
    dq_worker_register_full (dq_worker_t *self, const char *type,
                             dq_handler_fn *fn, void *arg, int flags,
                             void (*arg_free) (void *arg));

//  Optional settings, before dq_worker_run.
void
    dq_worker_set_name (dq_worker_t *self, const char *name);
void
    dq_worker_set_grace (dq_worker_t *self, int grace_ms);
//  verbose = log level DEBUG; not verbose = INFO.
void
    dq_worker_set_verbose (dq_worker_t *self, bool verbose);
//  One of DQ_WORKER_LOG_*; out-of-range values are clamped.
void
    dq_worker_set_log_level (dq_worker_t *self, int level);
//  Largest handler output reported as success, in bytes (default and
//  maximum DQ_WORKER_OUTPUT_MAX). Set it to the broker's --max-payload so
//  an oversize output fails on the worker with a clear error.
void
    dq_worker_set_max_output (dq_worker_t *self, size_t max_output);
//  CURVE: this worker's secret certificate file and the broker's public
//  certificate file (czmq zcert format). Returns 0, or -1 if a file cannot
//  be read or this libzmq has no CURVE.
int
    dq_worker_set_curve (dq_worker_t *self, const char *secret_cert,
                         const char *broker_public_cert);

//  Run until dq_worker_stop is called or SIGINT/SIGTERM arrives (czmq's
//  zsys_interrupted): then stop taking jobs (READY with capacity 0), finish
//  running ones within the grace period, abandon the rest, wait up to 2 s
//  for the broker to acknowledge the results, send BYE, give abandoned
//  handlers up to 5 s to return, and return 0. Returns -1 if it could not
//  start (bad endpoint, no handlers, CURVE failure, called a second time).
//  Runs on the calling thread.
int
    dq_worker_run (dq_worker_t *self);

//  Ask a running worker to stop (thread-safe, async-signal-safe).
void
    dq_worker_stop (dq_worker_t *self);

//  Jobs completed by this worker so far (succeeded + failed), thread-safe.
uint64_t
    dq_worker_done (dq_worker_t *self);

#ifdef __cplusplus
}
#endif
#endif
