/*  dq_proto.h - the dagq wire protocol: frames, commands, fields, errors.

    docs/protocol.md is normative; this is its summary.

    Every message is a ZeroMQ multipart message of three frames (a ROUTER
    peer sees the routing id in front of them):

        frame 0  signature + version: the 3 bytes 'D' 'Q' 0x01
        frame 1  command name, ASCII, e.g. "SUBMIT"
        frame 2  msgpack map with string keys (the body)

    Every request body carries "rid" (uint), echoed in its reply, so clients
    can pipeline. Unknown keys are ignored (forward compatibility); a known key
    with the wrong msgpack type, a missing required key, or a value over its
    limit makes the whole message invalid.

    Client -> broker (frontend):  SUBMIT STATUS RESULT CANCEL STATS DAG
    Broker -> client:             SUBMITTED JOBS OUTPUT CANCELLED STATS_REPLY
                                  DAG_INFO ERROR
    Worker -> broker (backend):   READY HEARTBEAT DONE BYE
                                  (JOB and DONE may carry several jobs or
                                  results: "tasks" / "results" arrays)
    Broker -> worker:             WELCOME HEARTBEAT JOB ACK ABANDON
                                  REREGISTER ERROR
    Broker -> PUB events:         frame 0 topic "job <id> <state>" or
                                  "dag <id> <state>", frame 1 msgpack map

    dq_proto.c is the only file that includes <msgpack.h>.
*/
#ifndef DQ_PROTO_H_INCLUDED
#define DQ_PROTO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_PROTO_SIGNATURE      "DQ\x01"
#define DQ_PROTO_SIGNATURE_SIZE 3
#define DQ_PROTO_VERSION        1

//  Hard limits of the wire format. Brokers may be configured lower.
#define DQ_PROTO_BODY_MAX       (256u * 1024 * 1024)  //  one body frame
#define DQ_PROTO_PAYLOAD_MAX    (64u * 1024 * 1024)   //  one payload/output
#define DQ_PROTO_STR_MAX        4096                  //  error and message texts
#define DQ_PROTO_NAME_MAX       256                   //  ids, names, keys, other strings
#define DQ_PROTO_TYPE_MAX       128                   //  job type name
#define DQ_PROTO_ARRAY_MAX      (1u << 21)            //  any array (jobs per SUBMIT, ids...)
#define DQ_PROTO_DEPS_MAX       4096                  //  deps of one job
#define DQ_PROTO_STATUS_IDS_MAX 10000                 //  ids in one STATUS (one broker
                                                      //  turn: ~150 ms if all are on disk)
#define DQ_PROTO_DAG_JOBS_MAX   10000                 //  jobs in one DAG_INFO page (a
                                                      //  million-job DAG: 100 pages)
#define DQ_PROTO_VALUES_MAX     (32u << 20)           //  msgpack values in one body
#define DQ_PROTO_TYPES_MAX      256                   //  types one worker announces
#define DQ_PROTO_HIST_BUCKETS   14
#define DQ_PROTO_HIST_BOUNDS_MS { 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 }

//  Error codes: travel on the wire, come out of dq_client_*, map to HTTP.
typedef enum {
    DQ_OK = 0,
    DQ_ERR_INVALID = 1,      //  malformed message or bad argument      (400)
    DQ_ERR_NOT_FOUND = 2,    //  unknown job or DAG id                  (404)
    DQ_ERR_BUSY = 3,         //  over a limit; retry after retry_ms     (429)
    DQ_ERR_CYCLE = 4,        //  DAG has a cycle; message names it      (400)
    DQ_ERR_TOO_BIG = 5,      //  payload or message over its limit      (413)
    DQ_ERR_INTERNAL = 6,     //  broker fault (store failed)            (500)
    DQ_ERR_UNAVAILABLE = 7,  //  broker unreachable or timed out        (503)
    DQ_ERR_NOT_FINISHED = 8, //  result asked for a non-terminal job    (409)
    DQ_ERR_PROTOCOL = 9,     //  wrong signature/version/command        (400)
    DQ_ERR_UNKNOWN_WORKER = 10, //  worker message before READY         (-)
    DQ_ERR_STORE_FULL = 11,  //  store over its size or disk full       (507)
    DQ_ERR_COUNT_
} dq_err_t;

//  Stable lowercase name of an error code ("invalid", "not_found", ...).
const char *
    dq_err_str (int code);

//  Commands. The names on the wire are the enum names without DQ_CMD_.
typedef enum {
    DQ_CMD_NONE = 0,
    DQ_CMD_SUBMIT, DQ_CMD_SUBMITTED,
    DQ_CMD_STATUS, DQ_CMD_JOBS,
    DQ_CMD_RESULT, DQ_CMD_OUTPUT,
    DQ_CMD_CANCEL, DQ_CMD_CANCELLED,
    DQ_CMD_STATS, DQ_CMD_STATS_REPLY,
    DQ_CMD_DAG, DQ_CMD_DAG_INFO,
    DQ_CMD_ERROR,
    DQ_CMD_READY, DQ_CMD_WELCOME,
    DQ_CMD_HEARTBEAT,
    DQ_CMD_DONE, DQ_CMD_ACK,
    DQ_CMD_JOB, DQ_CMD_ABANDON,
    DQ_CMD_REREGISTER, DQ_CMD_BYE,
    DQ_CMD_COUNT_
} dq_cmd_t;

const char *
    dq_cmd_str (dq_cmd_t cmd);

//  Job states. Terminal: succeeded, failed, cancelled, skipped.
typedef enum {
    DQ_STATE_WAITING = 0,    //  parents unfinished, or delayed / backing off
    DQ_STATE_QUEUED,
    DQ_STATE_RUNNING,
    DQ_STATE_SUCCEEDED,
    DQ_STATE_FAILED,
    DQ_STATE_CANCELLED,
    DQ_STATE_SKIPPED,
    DQ_STATE_COUNT_
} dq_state_t;

const char *
    dq_state_str (int state);
//  Returns the state for a name, or -1.
int
    dq_state_parse (const char *name);
bool
    dq_state_is_terminal (int state);

//  The bucket of a latency histogram (bounds DQ_PROTO_HIST_BOUNDS_MS, the
//  last bucket unbounded) that ms falls in.
size_t
    dq_proto_hist_bucket (uint64_t ms);

//  --- Plain records carried in bodies. Pointers are borrowed: in a received
//  message they point into memory the message owns; when sending, into the
//  caller's memory. Byte strings are (ptr, size); text strings NUL-terminated.

typedef struct {
    int32_t idx;             //  index of a job in the same SUBMIT, or -1
    const char *id;          //  id of an existing job when idx == -1
    bool run_on_failure;     //  run the child even if this parent fails
} dq_dep_t;

typedef struct {
    const char *type;        //  required, 1..DQ_PROTO_TYPE_MAX bytes
    const void *payload;
    size_t payload_size;
    const char *content_type;  //  optional, echoed with the output
    const char *name;        //  optional local name (DAG documents)
    const char *key;         //  optional idempotency key of this job
    int32_t priority;        //  higher runs first; default 0
    uint32_t attempts;       //  0 = broker default (3)
    uint32_t timeout_ms;     //  0 = no timeout
    uint64_t delay_ms;       //  run no earlier than now + delay
    dq_dep_t *deps;
    uint32_t ndeps;
} dq_jobspec_t;

typedef struct {
    const char *id;
    const char *name;        //  local name in its DAG, or NULL
    const void *output;
    size_t output_size;
} dq_parent_t;

//  What STATUS and DAG report about one job.
typedef struct {
    const char *id;
    const char *type;
    const char *name;        //  local name in its DAG, or NULL
    const char *dag_id;      //  or NULL
    int state;               //  dq_state_t
    int32_t priority;
    uint32_t attempts;       //  attempts started so far
    uint32_t max_attempts;
    const char *worker;      //  last worker that ran it, or NULL
    uint64_t created_ms, started_ms, finished_ms;  //  unix ms; 0 = not yet
    const char *error;       //  or NULL
    const char *skipped_by;  //  ancestor whose failure skipped it, or NULL
    size_t output_size;
    //  Parents: ids and states (no outputs).
    const char **parent_ids;
    int *parent_states;
    uint32_t nparents;
} dq_jobinfo_t;

typedef struct {
    const char *type;
    uint64_t waiting, queued, running, succeeded, failed, cancelled, skipped;
    uint32_t workers;        //  workers announcing this type
} dq_typestat_t;

typedef struct {
    const char *id;          //  broker-assigned worker id
    const char *name, *host;
    uint32_t pid, capacity, inflight;
    uint64_t last_seen_ms;   //  unix ms of its last message
    uint64_t done;           //  results it reported
    const char **types;
    uint32_t ntypes;
} dq_workerinfo_t;

typedef struct {
    const char *id;
    const char *name;
    int state;               //  running (DQ_STATE_RUNNING), succeeded or failed
    uint32_t total, waiting, queued, running, succeeded, failed, cancelled, skipped;
    uint64_t created_ms, finished_ms;
} dq_daginfo_t;

//  One job of a batched JOB message (same fields as a single JOB).
typedef struct {
    const char *id;
    const char *type;
    const void *payload;
    size_t payload_size;
    const char *content_type;
    uint32_t attempt;
    uint32_t timeout_ms;
    dq_parent_t *parents;
    uint32_t nparents;
} dq_task_rec_t;

//  One result of a batched DONE message (same fields as a single DONE).
typedef struct {
    const char *id;
    uint32_t attempt;
    bool ok;
    const void *output;
    size_t output_size;
    const char *error;
    const char *content_type;
} dq_result_rec_t;

//  --- A message: one struct holding every field any command uses (like a
//  zproto class); each command uses the subset docs/protocol.md lists.
typedef struct {
    dq_cmd_t cmd;
    uint64_t rid;
    const char *id;          //  RESULT CANCEL DAG OUTPUT DONE ACK JOB ABANDON
    const char **ids;        //  STATUS SUBMITTED ACK
    uint32_t nids;
    const char *key;         //  SUBMIT: idempotency key of the submission
    const char *dag_name;    //  SUBMIT: non-NULL makes the jobs one DAG
    const char *dag_id;      //  SUBMITTED
    dq_jobspec_t *jobs;      //  SUBMIT
    uint32_t njobs;
    const void *payload;     //  JOB
    size_t payload_size;
    const char *type;        //  JOB
    const char *content_type;  //  JOB OUTPUT DONE
    const void *output;      //  OUTPUT DONE
    size_t output_size;
    const char *error;       //  OUTPUT DONE: the job's error text
    int state;               //  OUTPUT: job state
    bool ok;                 //  DONE: success?
    uint32_t attempt;        //  JOB DONE
    uint32_t timeout_ms;     //  JOB
    dq_parent_t *parents;    //  JOB
    uint32_t nparents;
    dq_task_rec_t *tasks;    //  JOB (batched): several jobs in one message
    uint32_t ntasks;
    dq_result_rec_t *results;  //  DONE (batched): several results
    uint32_t nresults;
    bool batch;              //  READY: this worker takes batched JOBs
    bool summary;            //  DAG: the counts only, no job list
    uint32_t offset;         //  DAG: first job listed (submission order)
    uint32_t limit;          //  DAG: jobs listed, at most DQ_PROTO_DAG_JOBS_MAX;
                             //  0 = that many
    uint32_t next_offset;    //  DAG_INFO: offset of the next page; 0 = none
    uint32_t code;           //  ERROR: dq_err_t
    const char *message;     //  ERROR ABANDON: human-readable text
    uint32_t retry_ms;       //  ERROR (busy): retry hint
    uint64_t count;          //  CANCELLED
    //  Workers
    const char *name;        //  READY: worker name
    const char *host;        //  READY
    uint32_t pid;            //  READY
    uint32_t capacity;       //  READY: jobs at once; 0 = draining
    const char **types;      //  READY
    uint32_t ntypes;
    const char **running;    //  READY: job ids still running (re-register)
    uint32_t nrunning;
    uint32_t heartbeat_ms;   //  WELCOME
    uint32_t liveness;       //  WELCOME: missed heartbeats before "dead"
    const char *broker_id;   //  WELCOME STATS_REPLY
    const char *worker_id;   //  WELCOME: id the broker gave this worker
    //  Replies with records
    dq_jobinfo_t *infos;     //  JOBS DAG_INFO
    uint32_t ninfos;
    dq_typestat_t *typestats;  //  STATS_REPLY
    uint32_t ntypestats;
    dq_workerinfo_t *workers;  //  STATS_REPLY
    uint32_t nworkers;
    dq_daginfo_t *dag;       //  DAG_INFO
    uint64_t uptime_ms;      //  STATS_REPLY
    uint64_t jobs_total;     //  STATS_REPLY: jobs in the broker's table
    uint64_t jobs_in_memory; //  STATS_REPLY: of those, held in memory (the
                             //  rest are finished jobs kept by the store)
    uint64_t queued_bytes;   //  STATS_REPLY: payload bytes of unfinished jobs
    //  STATS_REPLY: dispatch latency (ready to dispatched) histogram: counts
    //  per bucket, upper bounds DQ_PROTO_HIST_BOUNDS_MS, the last is +Inf.
    const uint64_t *dispatch_hist;
    uint32_t ndispatch_hist;
    //  STATS_REPLY: the store's fdatasync durations (same buckets); absent
    //  when the broker has no sync thread (--memory, --sync normal|off).
    const uint64_t *sync_hist;
    uint32_t nsync_hist;
    uint64_t workers_total;  //  STATS_REPLY: workers connected
    void *priv_;             //  decoder state; do not touch
} dq_msg_t;

//  Initialise a message for sending: all fields zero, cmd set.
void
    dq_msg_init (dq_msg_t *self, dq_cmd_t cmd);

//  Encode self into a freshly allocated body buffer (msgpack). Returns 0 and
//  sets *data (caller frees with free()) and *size, or -1 if a field is over
//  its limit.
int
    dq_msg_encode (const dq_msg_t *self, void **data, size_t *size);

//  Decode one message from its frames: signature, command and body. Returns
//  a new message (destroy with dq_msg_destroy) or NULL with *err set and,
//  when reason is not NULL, a short reason copied into it (up to 200 bytes).
//  Never trusts the input: every length and type is checked.
dq_msg_t *
    dq_msg_decode (const void *sig, size_t sig_size,
                   const void *cmd, size_t cmd_size,
                   const void *body, size_t body_size,
                   dq_err_t *err, char *reason);

void
    dq_msg_destroy (dq_msg_t **self_p);

//  Append the job list of *page_p (a decoded DAG_INFO, the page at self's
//  next_offset) to self's (another), so one reply holds every page of a
//  DAG: self takes *page_p over (its records stay where they are;
//  dq_msg_destroy of self frees both) and gets page's next_offset. Returns
//  DQ_OK; DQ_ERR_PROTOCOL if page's next_offset does not move on (a broker
//  that could make a reader loop); DQ_ERR_INTERNAL if out of memory or
//  self was not decoded. On an error self is unchanged and *page_p is
//  destroyed.
int
    dq_msg_append_infos (dq_msg_t *self, dq_msg_t **page_p);

//  Send self on a ZeroMQ socket (DEALER, or ROUTER with routing_id non-NULL).
//  flags may include ZMQ_DONTWAIT. Returns 0, or -1 with errno set (EAGAIN,
//  EHOSTUNREACH, EMSGSIZE for a field over its limit).
int
    dq_msg_send (const dq_msg_t *self, void *sock,
                 const void *routing_id, size_t routing_id_size, int flags);

//  Receive one message. For a ROUTER socket pass routing_id (a buffer of at
//  least 256 bytes) and *routing_id_size receives its size; for DEALER pass
//  NULL. Returns the message, or NULL: *err is DQ_OK when nothing could be
//  read (EAGAIN, interrupted) and an error code when what came was invalid
//  (all its frames are consumed; reason says why).
dq_msg_t *
    dq_msg_recv (void *sock, void *routing_id, size_t *routing_id_size,
                 int flags, dq_err_t *err, char *reason);

//  As dq_msg_recv; when the message is invalid but its body is a map with a
//  readable "rid", *req_rid gets it (else 0), so the error reply can carry it.
dq_msg_t *
    dq_msg_recv_rid (void *sock, void *routing_id, size_t *routing_id_size,
                     int flags, dq_err_t *err, char *reason, uint64_t *req_rid);

//  The authenticated peer's key for a received message: with CURVE and
//  czmq's zauth, the sender's public key in Z85; NULL without CURVE or for
//  a message that was not received from a socket.
const char *
    dq_msg_peer_key (const dq_msg_t *self);

//  Send an ERROR reply. Convenience for the broker and tests.
int
    dq_msg_send_error (void *sock, const void *routing_id, size_t rid_size,
                       uint64_t rid, dq_err_t code, uint32_t retry_ms,
                       const char *message);

//  --- Events (PUB). topic is "job <id> <state>" or "dag <id> <state>".
typedef struct {
    const char *kind;        //  "job" or "dag"
    const char *id;
    int state;
    const char *type;        //  jobs only
    const char *dag_id;      //  or NULL
    uint32_t attempt;
    uint64_t at_ms;          //  unix ms of the event
    uint64_t latency_us;     //  jobs: submit to terminal
} dq_event_t;

int
    dq_event_send (const dq_event_t *ev, void *pub, int flags);
//  Decode an event from its two frames; the event's strings are allocated in
//  *strbuf (caller frees). Returns 0 or -1 on malformed input.
int
    dq_event_decode (const void *topic, size_t topic_size,
                     const void *body, size_t body_size,
                     dq_event_t *ev, char **strbuf);

#ifdef __cplusplus
}
#endif
#endif
