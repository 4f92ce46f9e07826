/*  dq_store.h - the broker's durable store: SQLite in WAL mode.

    One database file, <data-dir>/dagq.db, that an operator can open
    read-only with the sqlite3 shell while the broker runs. The data dir is
    locked (flock on <data-dir>/LOCK) so two brokers cannot share it. The
    schema and its format version are documented at the top of dq_store.c
    and in docs/operations.md.

    Writes are grouped: the first write after a commit opens a transaction
    (BEGIN IMMEDIATE), dq_store_commit ends it. The broker commits once per
    batch of messages, before it sends that batch's replies (group commit).
    A write or commit that fails returns -1; the broker treats that as
    fail-stop. Nothing here knows about sockets or the broker's records.

    What is stored: a job as submitted (once), its retries, and its outcome
    (once, when it ends). Dispatches are not: a job that was queued or
    running when the broker stopped loads back as waiting, with the
    attempts counted at its last retry.
*/
#ifndef DQ_STORE_H_INCLUDED
#define DQ_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_proto.h"

#define DQ_STORE_FORMAT_VERSION 2
#define DQ_STORE_FILE "dagq.db"

typedef enum {
    DQ_STORE_SYNC_FULL = 0,  //  fsync at every commit: nothing acked is lost
    DQ_STORE_SYNC_NORMAL,    //  WAL synchronous=NORMAL: power loss may lose
                             //  the last commits, a process crash loses none
    DQ_STORE_SYNC_OFF        //  no fsync: an OS crash may lose recent commits
} dq_store_sync_t;

//  One job as stored. Pointers are borrowed (in dq_store_load callbacks,
//  valid only during the callback). An unfinished job (state below
//  DQ_STATE_SUCCEEDED) has no outcome: started_ms, finished_ms, output,
//  worker and skipped_by are 0/NULL, and it loads as DQ_STATE_WAITING.
typedef struct {
    uint64_t id;             //  the job's sequence number
    const char *type;
    const void *payload;
    size_t payload_size;
    const char *content_type;  //  or NULL
    const char *name;        //  local name in its DAG, or NULL
    const char *key;         //  idempotency key, or NULL
    int32_t priority;
    uint32_t max_attempts;
    uint32_t attempts;       //  attempts counted (at a retry or the end)
    uint32_t timeout_ms;
    uint64_t run_at_ms;      //  not before (delay, retry backoff); 0 = now
    uint64_t created_ms, started_ms, finished_ms;
    int state;               //  dq_state_t
    const void *output;
    size_t output_size;
    const char *error;       //  last error, or NULL
    const char *worker;      //  last worker, or NULL
    uint64_t dag;            //  DAG sequence number, 0 = none
    uint64_t skipped_by;     //  job that caused a skip, 0 = none
    const uint64_t *parents; //  in depends_on order
    const bool *run_on_failure;  //  per parent
    uint32_t nparents;
    bool has_children;       //  dq_store_load only: a stored job names it
                             //  as a parent
} dq_store_job_t;

//  The outcome of a job: a terminal state, recorded once.
typedef struct {
    uint64_t id;
    int state;               //  DQ_STATE_SUCCEEDED .. DQ_STATE_SKIPPED
    uint32_t attempts;       //  attempts it took (0: never ran)
    uint64_t started_ms;     //  start of the last attempt, 0 = never ran
    uint64_t finished_ms;
    const char *worker;      //  worker of the last attempt, or NULL
    const void *output;      //  or NULL
    size_t output_size;
    const char *error;       //  or NULL
    uint64_t skipped_by;     //  job that caused a skip, 0 = none
} dq_store_end_t;

typedef struct {
    uint64_t id;
    const char *name;        //  or NULL
    const char *key;         //  or NULL
    uint64_t created_ms;
} dq_store_dag_t;

//  An idempotency key of a submission: it created jobs first..first+count-1
//  (ids are allocated consecutively) and maybe DAG dag.
typedef struct {
    const char *key;
    uint64_t first;
    uint32_t count;
    uint64_t dag;            //  0 = none
    uint64_t created_ms;
} dq_store_key_t;

typedef struct {
    //  Called in id order, so a job's parents come before it. Return 0 to go
    //  on, -1 to stop the load (dq_store_load then returns -1).
    int (*on_job) (void *arg, const dq_store_job_t *job);
    int (*on_dag) (void *arg, const dq_store_dag_t *dag);
    int (*on_key) (void *arg, const dq_store_key_t *key);
    void *arg;
} dq_store_loader_t;

typedef struct _dq_store_t dq_store_t;

//  Open (creating if needed) the store in dir; a store of an older format
//  version is upgraded (in one transaction). Refuses, with a message in err
//  an operator can act on, when: the dir is locked by another process; the
//  file is not a SQLite database or is one of another program; its format
//  version is unknown; the database is corrupt (integrity check of the
//  header pages). Returns NULL on failure.
dq_store_t *
    dq_store_open (const char *dir, dq_store_sync_t sync,
                   char *err, size_t err_size);

//  Commit anything open, close, unlock. NULL-safe.
void
    dq_store_close (dq_store_t **self_p);

//  Persistent key/value metadata (broker_id, next_seq, ...). get returns a
//  new string (caller frees) or NULL.
char *
    dq_store_meta_get (dq_store_t *self, const char *key);
int
    dq_store_meta_set (dq_store_t *self, const char *key, const char *value);

//  Writes; each joins the open transaction (opening one if none).
//  put_job stores a new job (an id already stored is an error: ids are
//  never reused), its edges, and its outcome if its state is terminal.
int
    dq_store_put_job (dq_store_t *self, const dq_store_job_t *job);
int
    dq_store_put_dag (dq_store_t *self, const dq_store_dag_t *dag);
int
    dq_store_put_key (dq_store_t *self, const dq_store_key_t *key);
//  Back to waiting for a retry at run_at_ms, with the attempts counted so
//  far and the last error.
int
    dq_store_set_retry (dq_store_t *self, uint64_t id, uint32_t attempts,
                        uint64_t run_at_ms, const char *error);
//  The job's outcome (replaces one recorded before, if any), for a job
//  stored: an outcome of an id not stored is kept but never loaded.
int
    dq_store_set_finished (dq_store_t *self, const dq_store_end_t *end);
//  Retention: delete a job (its edges and outcome), a DAG, keys created
//  before t.
int
    dq_store_delete_job (dq_store_t *self, uint64_t id);
int
    dq_store_delete_dag (dq_store_t *self, uint64_t dag);
int
    dq_store_expire_keys (dq_store_t *self, uint64_t created_before_ms);

//  Commit the open transaction, if any. 0, or -1 (fail-stop).
int
    dq_store_commit (dq_store_t *self);

//  Asynchronous syncs, for a store opened with DQ_STORE_SYNC_FULL: from now
//  on dq_store_commit does not wait for the disk; a thread fdatasyncs the
//  WAL behind the commits, and a commit is on disk once dq_store_durable
//  reports it. Returns a file descriptor that becomes readable whenever a
//  sync ends (poll it, then call dq_store_durable), or -1 (other sync
//  modes, or no thread: commits keep syncing themselves, and
//  dq_store_durable always reports every commit).
int
    dq_store_sync_async (dq_store_t *self);

//  Commits so far (dq_store_commit calls that committed something).
uint64_t
    dq_store_commits (dq_store_t *self);

//  Copy how long the sync thread's fdatasyncs took, as counts per bucket
//  (bounds DQ_PROTO_HIST_BOUNDS_MS, the last +Inf). 0, or -1 without the
//  sync thread.
int
    dq_store_sync_hist (dq_store_t *self, uint64_t hist [DQ_PROTO_HIST_BUCKETS]);

//  Ask for every commit so far to be synced (a no-op without the syncer).
//  0, or -1 if a sync failed (fail-stop).
int
    dq_store_sync (dq_store_t *self);

//  True while a sync asked for by dq_store_sync has not ended: a commit now
//  would be synced only by the next one.
bool
    dq_store_syncing (dq_store_t *self);

//  Store in *durable how many of the commits are known to be on disk, and
//  drain the descriptor of dq_store_sync_async. 0, or -1 if a sync failed
//  (fail-stop: nothing after the last good sync may be acknowledged).
int
    dq_store_durable (dq_store_t *self, uint64_t *durable);

//  Replay everything stored: keys, DAGs, then jobs in id order. Jobs come
//  without their output (output_size only: dq_store_get_output reads it),
//  and finished ones without their payload (payload_size only).
int
    dq_store_load (dq_store_t *self, const dq_store_loader_t *loader);

//  A job's output and error, read back from disk (for results of jobs
//  whose output the broker dropped from memory). *output is malloc'd.
int
    dq_store_get_output (dq_store_t *self, uint64_t id, void **output,
                         size_t *output_size, char **error);

//  One job as stored, with its outcome and parents, but not its payload
//  or output (payload_size and output_size say how big they are). Strings
//  and arrays point into *mem, which the caller frees. Returns 0, 1 if the
//  job is not stored, or -1 (error).
int
    dq_store_get_job (dq_store_t *self, uint64_t id, dq_store_job_t *job,
                      void **mem);

//  Retention: up to max finished jobs whose finished_ms is before
//  before_ms, in (finished_ms, id) order, starting after the cursor
//  (after_ms, after_id): their ids and finish times. Returns how many, or
//  -1 (error).
int
    dq_store_expired (dq_store_t *self, uint64_t before_ms, uint64_t after_ms,
                      uint64_t after_id, uint64_t *ids, uint64_t *finished,
                      size_t max);

//  Bytes used by the database (and WAL), and bytes free on its file system.
uint64_t
    dq_store_size (dq_store_t *self);
uint64_t
    dq_store_disk_free (dq_store_t *self);

const char *
    dq_store_path (dq_store_t *self);

//  The format version this open upgraded the store from, 0 if none.
int
    dq_store_upgraded_from (dq_store_t *self);

//  The text of the last error (a refused write, a failed write, commit,
//  read or load), "" if none; borrowed, valid until the next call. After a
//  SQLite error in a write or commit the open transaction is rolled back
//  and every later write and commit returns -1 (fail-stop): close and reopen.
const char *
    dq_store_error (dq_store_t *self);

#endif
