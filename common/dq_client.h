/*  dq_client.h - the client API: submit jobs and DAGs, wait, read results.

    One dq_client_t wraps one DEALER socket to the broker's frontend. It
    belongs to one thread. Synchronous calls send a request and wait for the
    reply with the same request id, re-sending it (same rid, same idempotency
    key) with growing intervals until the total timeout, so a broker restart
    between its commit and its reply costs neither a loss nor a duplicate.
    For throughput, dq_client_send / dq_client_recv pipeline any number of
    requests on the socket.

    Every call returns a dq_err_t (DQ_OK = 0); dq_client_error gives the
    message of the last failure (the broker's text for broker errors).
*/
#ifndef DQ_CLIENT_H_INCLUDED
#define DQ_CLIENT_H_INCLUDED

#include "dq_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_CLIENT_BROKER_DEFAULT  "tcp://127.0.0.1:5555"
#define DQ_CLIENT_TIMEOUT_DEFAULT 10000     //  ms for one synchronous call
#define DQ_CLIENT_TIMED_OUT (-1)            //  dq_client_wait: deadline passed

typedef struct _dq_client_t dq_client_t;

//  Create a client connected to endpoint (e.g. tcp://127.0.0.1:5555).
//  Connecting is lazy in ZeroMQ: an unreachable broker shows up as
//  DQ_ERR_UNAVAILABLE from the first call. Returns NULL on a bad endpoint.
dq_client_t *
    dq_client_new (const char *endpoint);
void
    dq_client_destroy (dq_client_t **self_p);

//  Total time a synchronous call may take, in ms (default 10 s; a value
//  <= 0 restores the default). Also bounds dq_client_send when the send
//  queue is full.
void
    dq_client_set_timeout (dq_client_t *self, int timeout_ms);

//  The current call timeout in ms.
int
    dq_client_timeout (dq_client_t *self);

//  The endpoint given to dq_client_new.
const char *
    dq_client_endpoint (dq_client_t *self);

//  CURVE: this client's secret certificate file and the broker's public
//  certificate file (czmq zcert format). Call before the first request.
//  Returns 0 or -1 (unreadable file).
int
    dq_client_set_curve (dq_client_t *self, const char *secret_cert,
                         const char *broker_public_cert);

//  Write a fresh random idempotency key into key: 32 lowercase hex
//  characters and a NUL (key must hold 33 bytes). The key dq_client_submit
//  generates when given none; callers that retry a submission themselves
//  (e.g. on BUSY) make one first and pass it every time.
void
    dq_client_make_key (char *key);

//  Message of the last failed call ("" if none).
const char *
    dq_client_error (dq_client_t *self);

//  Submit njobs jobs (a DAG when dag_name is not NULL). key is the
//  submission's idempotency key; when NULL one is generated, so retries are
//  safe. On DQ_OK *reply is the SUBMITTED message (ids, dag_id); the caller
//  destroys it. On DQ_ERR_BUSY, *retry_ms (if not NULL) is the broker's hint.
int
    dq_client_submit (dq_client_t *self, const dq_jobspec_t *jobs,
                      uint32_t njobs, const char *dag_name, const char *key,
                      dq_msg_t **reply, uint32_t *retry_ms);

//  STATUS of n ids (1 to DQ_PROTO_STATUS_IDS_MAX; ask for more in several
//  calls): *reply is JOBS (infos in order).
int
    dq_client_status (dq_client_t *self, const char **ids, uint32_t n,
                      dq_msg_t **reply);

//  RESULT: *reply is OUTPUT (output, state, error). DQ_ERR_NOT_FINISHED if
//  the job is not terminal.
int
    dq_client_result (dq_client_t *self, const char *id, dq_msg_t **reply);

//  CANCEL a job or a DAG; *count (may be NULL) gets the number cancelled.
int
    dq_client_cancel (dq_client_t *self, const char *id, uint64_t *count);

//  STATS: *reply is STATS_REPLY.
int
    dq_client_stats (dq_client_t *self, dq_msg_t **reply);

//  DAG: *reply is DAG_INFO with every job of the DAG, gathered from as
//  many pages as it takes (one request per DQ_PROTO_DAG_JOBS_MAX jobs).
int
    dq_client_dag (dq_client_t *self, const char *id, dq_msg_t **reply);

//  DAG, one page: *reply is DAG_INFO with the jobs from offset (submission
//  order), at most limit of them (1 to DQ_PROTO_DAG_JOBS_MAX; 0 = that
//  many); (*reply)->next_offset is where the next page starts, 0 if none.
int
    dq_client_dag_page (dq_client_t *self, const char *id, uint32_t offset,
                        uint32_t limit, dq_msg_t **reply);

//  DAG with summary: *reply is DAG_INFO with the counts and no job list.
int
    dq_client_dag_summary (dq_client_t *self, const char *id, dq_msg_t **reply);

//  Wait until every id is terminal or timeout_ms passes (-1 = forever).
//  Polls STATUS (interval growing from 5 ms to 500 ms) for the ids not yet
//  terminal, at most 10,000 per request. Returns DQ_OK when all are
//  terminal, DQ_CLIENT_TIMED_OUT when timeout_ms passed first, or an error
//  code (DQ_ERR_UNAVAILABLE if the broker never answered); a poll in
//  progress may outlast timeout_ms by up to 1 s. *reply (if not NULL) gets
//  a JOBS message: on DQ_OK for up to 10,000 ids, of them all (asked for
//  once more at the end if some finished before the last poll); else of
//  the ids in the last poll (every id not terminal is among them).
int
    dq_client_wait (dq_client_t *self, const char **ids, uint32_t n,
                    int timeout_ms, dq_msg_t **reply);

//  --- Pipelining. send assigns req->rid (returned) and sends without
//  waiting; recv returns the next reply of any rid, or NULL after timeout_ms
//  (-1 = block) with *err DQ_ERR_UNAVAILABLE, or on a malformed reply.
//  send returns 0 (never a valid rid) when the request is over a protocol
//  limit or could not be queued within the call timeout; dq_client_error
//  says which. Do not mix with synchronous calls while replies are
//  outstanding: a synchronous call drops replies to other rids.
uint64_t
    dq_client_send (dq_client_t *self, dq_msg_t *req);
dq_msg_t *
    dq_client_recv (dq_client_t *self, int timeout_ms, dq_err_t *err);

//  The DEALER socket, for polling (ZMQ_POLLIN means a reply is waiting).
void *
    dq_client_socket (dq_client_t *self);

#ifdef __cplusplus
}
#endif
#endif
