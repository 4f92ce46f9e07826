/*  dq_dagdoc.h - parse a DAG document (JSON) into job specs for SUBMIT.

    A DAG document is the JSON form of one DAG submission, used by
    `dagq submit-dag` and the gateway:

        {"name": "photo-42",                 optional, the DAG's name
         "key":  "photo-42-v1",              optional idempotency key
         "jobs": [
           {"id": "upload", "type": "store", "payload": {"path": "a.jpg"}},
           {"id": "faces",  "type": "faces", "depends_on": ["upload"]},
           {"id": "notify", "type": "mail",
            "depends_on": [{"id": "faces", "on_failure": "run"}]}
         ]}

    Job fields: id (local name, required, unique), type (required),
    at most one of payload (any JSON value: the worker gets its compact JSON
    text), payload_text (a string: its bytes) and payload_base64 (binary),
    priority (integer), attempts (integer >= 1), timeout and delay (seconds,
    may be fractional), key, content_type, depends_on (array of strings or
    {"id": ..., "on_failure": "run"|"skip"} objects). A dependency that names
    a job of the document is local (idx); otherwise it must look like a job
    id (<broker id>-<digits>) of a job submitted earlier, which the broker
    resolves. Unknown fields are errors, so typos are never silently ignored.

    Everything is validated here, with messages that say where, e.g.
        jobs[3] (id 'ocr'): depends_on[1]: unknown job 'uplod' - not in this
        document and not a job id
    Cycles are not looked for: the broker rejects them, naming the cycle.
    This module does no I/O and knows no sockets.
*/
#ifndef DQ_DAGDOC_H_INCLUDED
#define DQ_DAGDOC_H_INCLUDED

#include "dq_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_DAGDOC_MAX_JOBS_DEFAULT  1000000              //  jobs per document
#define DQ_DAGDOC_MAX_DEPS_DEFAULT  1024                 //  depends_on per job
#define DQ_DAGDOC_MAX_SIZE_DEFAULT  (256u * 1024 * 1024) //  document bytes
#define DQ_DAGDOC_ATTEMPTS_MAX      1000000
#define DQ_DAGDOC_DELAY_MAX_S       315360000.0          //  ten years
#define DQ_DAGDOC_ERR_SIZE          512                  //  enough for any message

typedef struct _dq_dagdoc_t dq_dagdoc_t;

//  Limits for dq_dagdoc_parse_limits. A zero field means its default;
//  max_jobs is capped at DQ_PROTO_ARRAY_MAX, max_deps at DQ_PROTO_DEPS_MAX.
typedef struct {
    uint32_t max_jobs;          //  jobs in one document
    uint32_t max_deps;          //  entries in one job's depends_on
    size_t max_size;            //  bytes of JSON text
} dq_dagdoc_limits_t;

//  Parse and validate len bytes of JSON with the default limits. Returns a
//  new document, or NULL with a message in err (NUL-terminated, truncated
//  to err_size; err may be NULL). The input need not be NUL-terminated.
dq_dagdoc_t *
    dq_dagdoc_parse (const char *json, size_t len, char *err, size_t err_size);

//  The same with explicit limits (limits may be NULL: defaults).
dq_dagdoc_t *
    dq_dagdoc_parse_limits (const char *json, size_t len,
                            const dq_dagdoc_limits_t *limits,
                            char *err, size_t err_size);

//  Destroy a document and nullify the reference. NULL-safe.
void
    dq_dagdoc_destroy (dq_dagdoc_t **self_p);

//  The jobs, ready for dq_client_submit (jobs, njobs, name, key). Each
//  spec's name is its local id; local dependencies have idx >= 0 and id
//  NULL, dependencies on existing jobs idx -1 and id set. Everything is
//  owned by the document and valid until it is destroyed.
const dq_jobspec_t *
    dq_dagdoc_jobs (const dq_dagdoc_t *self);
uint32_t
    dq_dagdoc_njobs (const dq_dagdoc_t *self);

//  The DAG's name: "" when the document has none (never NULL: a document is
//  always one DAG, so pass it as dag_name).
const char *
    dq_dagdoc_name (const dq_dagdoc_t *self);

//  The submission's idempotency key, or NULL when the document has none.
const char *
    dq_dagdoc_key (const dq_dagdoc_t *self);

//  Local id of job i (same as dq_dagdoc_jobs (self) [i].name), or NULL if i
//  is out of range.
const char *
    dq_dagdoc_job_id (const dq_dagdoc_t *self, uint32_t i);

//  True if s has the shape of a job id issued by a broker: at most 64 bytes,
//  a broker id of [A-Za-z0-9_.:-]+, a dash, and decimal digits. DAG ids
//  (<broker id>-d<digits>) are not job ids.
bool
    dq_dagdoc_is_job_id (const char *s);

#ifdef __cplusplus
}
#endif
#endif
