/*  dq_proto.c - the wire codec. The only file that includes <msgpack.h>.

    Encoding packs a dq_msg_t into a msgpack map, omitting fields that are
    zero or NULL (absent means zero on decode, see docs/protocol.md).

    Decoding never trusts its input. Before msgpack-c sees a body, s_walk
    checks its structure without allocating: nesting depth, and that every
    declared length fits in the bytes that remain, so a frame that declares
    an array of four billion elements costs nothing. Then a pull reader
    (s_next) walks the body once, straight into the message's records,
    with type and size checks per field: no tree of msgpack objects is
    built, so a SUBMIT of a million jobs costs its records and little more.
    Records and copied strings live in one arena; binaries point into the
    body, which the message keeps.
*/
#include "dq_proto.h"
#include "dq_mem.h"

#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define DQ_WALK_DEPTH_MAX 16
#define S_HIST_MAX 64           //  buckets a dispatch_hist may carry
#define S_STRINGIFY(x) S_STRINGIFY_ (x)     //  a limit's value in a message
#define S_STRINGIFY_(x) #x

static const char *s_cmd_names [DQ_CMD_COUNT_] = {
    [DQ_CMD_NONE] = "NONE",
    [DQ_CMD_SUBMIT] = "SUBMIT", [DQ_CMD_SUBMITTED] = "SUBMITTED",
    [DQ_CMD_STATUS] = "STATUS", [DQ_CMD_JOBS] = "JOBS",
    [DQ_CMD_RESULT] = "RESULT", [DQ_CMD_OUTPUT] = "OUTPUT",
    [DQ_CMD_CANCEL] = "CANCEL", [DQ_CMD_CANCELLED] = "CANCELLED",
    [DQ_CMD_STATS] = "STATS", [DQ_CMD_STATS_REPLY] = "STATS_REPLY",
    [DQ_CMD_DAG] = "DAG", [DQ_CMD_DAG_INFO] = "DAG_INFO",
    [DQ_CMD_ERROR] = "ERROR",
    [DQ_CMD_READY] = "READY", [DQ_CMD_WELCOME] = "WELCOME",
    [DQ_CMD_HEARTBEAT] = "HEARTBEAT",
    [DQ_CMD_DONE] = "DONE", [DQ_CMD_ACK] = "ACK",
    [DQ_CMD_JOB] = "JOB", [DQ_CMD_ABANDON] = "ABANDON",
    [DQ_CMD_REREGISTER] = "REREGISTER", [DQ_CMD_BYE] = "BYE",
};

static const char *s_err_names [DQ_ERR_COUNT_] = {
    "ok", "invalid", "not_found", "busy", "cycle", "too_big", "internal",
    "unavailable", "not_finished", "protocol", "unknown_worker", "store_full",
};

static const char *s_state_names [DQ_STATE_COUNT_] = {
    "waiting", "queued", "running", "succeeded", "failed", "cancelled",
    "skipped",
};

const char *
dq_err_str (int code)
{
    if (code < 0 || code >= DQ_ERR_COUNT_)
        return "unknown";
    return s_err_names [code];
}

const char *
dq_cmd_str (dq_cmd_t cmd)
{
    if ((int) cmd < 0 || cmd >= DQ_CMD_COUNT_)
        return "UNKNOWN";
    return s_cmd_names [cmd];
}

const char *
dq_state_str (int state)
{
    if (state < 0 || state >= DQ_STATE_COUNT_)
        return "unknown";
    return s_state_names [state];
}

int
dq_state_parse (const char *name)
{
    for (int i = 0; name && i < DQ_STATE_COUNT_; i++)
        if (strcmp (name, s_state_names [i]) == 0)
            return i;
    return -1;
}

bool
dq_state_is_terminal (int state)
{
    return state >= DQ_STATE_SUCCEEDED && state < DQ_STATE_COUNT_;
}

size_t
dq_proto_hist_bucket (uint64_t ms)
{
    static const uint64_t bounds [] = DQ_PROTO_HIST_BOUNDS_MS;
    size_t b = 0;
    while (b < DQ_PROTO_HIST_BUCKETS - 1 && ms > bounds [b])
        b++;
    return b;
}

void
dq_msg_init (dq_msg_t *self, dq_cmd_t cmd)
{
    memset (self, 0, sizeof *self);
    self->cmd = cmd;
}

//  ---------------------------------------------------------------------------
//  Encoding

static void
s_key (msgpack_packer *pk, const char *key)
{
    size_t len = strlen (key);
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, key, len);
}

static void
s_str (msgpack_packer *pk, const char *s)
{
    size_t len = strlen (s);
    msgpack_pack_str (pk, len);
    msgpack_pack_str_body (pk, s, len);
}

//  A map writer that counts entries first: each record is emitted twice,
//  once with pk == NULL to count, once for real.
typedef struct {
    msgpack_packer *pk;
    uint32_t n;
    bool too_big;
} s_w_t;

static bool
s_w_field (s_w_t *w, const char *key)
{
    w->n++;
    if (w->pk)
        s_key (w->pk, key);
    return w->pk != NULL;
}

static void
s_w_u64 (s_w_t *w, const char *key, uint64_t v)
{
    if (v && s_w_field (w, key))
        msgpack_pack_uint64 (w->pk, v);
}

static void
s_w_i64 (s_w_t *w, const char *key, int64_t v)
{
    if (v && s_w_field (w, key))
        msgpack_pack_int64 (w->pk, v);
}

static void
s_w_bool (s_w_t *w, const char *key, bool v)
{
    if (v && s_w_field (w, key))
        msgpack_pack_true (w->pk);
}

//  The longest string a field may carry: the decoder's cap for it, so
//  what encodes also decodes.
static size_t
s_str_max (const char *key)
{
    if (strcmp (key, "error") == 0 || strcmp (key, "message") == 0)
        return DQ_PROTO_STR_MAX;
    if (strcmp (key, "type") == 0 || strcmp (key, "types") == 0)
        return DQ_PROTO_TYPE_MAX;
    return DQ_PROTO_NAME_MAX;
}

static void
s_w_str (s_w_t *w, const char *key, const char *v)
{
    if (!v)
        return;
    if (strlen (v) > s_str_max (key)) {
        w->too_big = true;      //  the body is dropped: skip the copy
        return;
    }
    if (s_w_field (w, key))
        s_str (w->pk, v);
}

static void
s_w_bin (s_w_t *w, const char *key, const void *v, size_t size)
{
    if (!v && !size)
        return;
    if (size > DQ_PROTO_PAYLOAD_MAX || !v) {
        //  Over the limit, or (NULL, size): the body is dropped, so skip
        //  the copy (and never read from NULL).
        w->too_big = true;
        return;
    }
    if (s_w_field (w, key)) {
        msgpack_pack_bin (w->pk, size);
        msgpack_pack_bin_body (w->pk, v, size);
    }
}

static void
s_w_strs (s_w_t *w, const char *key, const char **v, uint32_t n)
{
    if (!n)
        return;
    if (n > DQ_PROTO_ARRAY_MAX || !v)
        w->too_big = true;
    if (!v)
        return;                 //  a count without an array
    if (s_w_field (w, key)) {
        msgpack_pack_array (w->pk, n);
        for (uint32_t i = 0; i < n; i++) {
            if (v [i] && strlen (v [i]) > s_str_max (key))
                w->too_big = true;
            s_str (w->pk, v [i]? v [i]: "");
        }
    }
}

//  Emit a nested map built by fn(w, item) twice: count, then pack.
typedef void (s_emit_fn) (s_w_t *w, const void *item);

static void
s_pack_map (msgpack_packer *pk, s_emit_fn *fn, const void *item, bool *too_big)
{
    s_w_t count = { NULL, 0, false };
    fn (&count, item);
    msgpack_pack_map (pk, count.n);
    s_w_t real = { pk, 0, false };
    fn (&real, item);
    if (count.too_big || real.too_big)
        *too_big = true;
}

static void
s_w_array (s_w_t *w, const char *key, s_emit_fn *fn, const void *items,
           size_t item_size, uint32_t n)
{
    if (!n)
        return;
    if (n > DQ_PROTO_ARRAY_MAX || !items)
        w->too_big = true;
    if (!items)
        return;                 //  a count without an array
    if (s_w_field (w, key)) {
        msgpack_pack_array (w->pk, n);
        for (uint32_t i = 0; i < n; i++)
            s_pack_map (w->pk, fn, (const char *) items + i * item_size,
                        &w->too_big);
    }
}

static void
s_emit_dep (s_w_t *w, const void *item)
{
    const dq_dep_t *d = item;
    //  A dep is either local (idx) or existing (id), never both on the wire.
    //  An id wins, so a zero-initialised dq_dep_t with only id set (idx 0)
    //  does not turn into a dependency on job 0. idx 0 is meaningful, so
    //  "idx" is sent whenever the dep is local.
    if (d->id)
        s_w_str (w, "id", d->id);
    else
    if (d->idx >= 0 && s_w_field (w, "idx"))
        msgpack_pack_int32 (w->pk, d->idx);
    s_w_bool (w, "run_on_failure", d->run_on_failure);
}

static void
s_emit_jobspec (s_w_t *w, const void *item)
{
    const dq_jobspec_t *j = item;
    s_w_str (w, "type", j->type);
    s_w_bin (w, "payload", j->payload, j->payload_size);
    s_w_str (w, "content_type", j->content_type);
    s_w_str (w, "name", j->name);
    s_w_str (w, "key", j->key);
    s_w_i64 (w, "priority", j->priority);
    s_w_u64 (w, "attempts", j->attempts);
    s_w_u64 (w, "timeout_ms", j->timeout_ms);
    s_w_u64 (w, "delay_ms", j->delay_ms);
    if (j->ndeps > DQ_PROTO_DEPS_MAX)
        w->too_big = true;
    s_w_array (w, "deps", s_emit_dep, j->deps, sizeof (dq_dep_t), j->ndeps);
}

static void
s_emit_parent (s_w_t *w, const void *item)
{
    const dq_parent_t *p = item;
    s_w_str (w, "id", p->id);
    s_w_str (w, "name", p->name);
    s_w_bin (w, "output", p->output, p->output_size);
}

static void
s_emit_task (s_w_t *w, const void *item)
{
    const dq_task_rec_t *t = item;
    s_w_str (w, "id", t->id);
    s_w_str (w, "type", t->type);
    s_w_bin (w, "payload", t->payload, t->payload_size);
    s_w_str (w, "content_type", t->content_type);
    s_w_u64 (w, "attempt", t->attempt);
    s_w_u64 (w, "timeout_ms", t->timeout_ms);
    s_w_array (w, "parents", s_emit_parent, t->parents, sizeof (dq_parent_t),
               t->nparents);
}

static void
s_emit_result (s_w_t *w, const void *item)
{
    const dq_result_rec_t *r = item;
    s_w_str (w, "id", r->id);
    s_w_u64 (w, "attempt", r->attempt);
    s_w_bool (w, "ok", r->ok);
    s_w_bin (w, "output", r->output, r->output_size);
    s_w_str (w, "error", r->error);
    s_w_str (w, "content_type", r->content_type);
}

static void
s_emit_jobinfo (s_w_t *w, const void *item)
{
    const dq_jobinfo_t *j = item;
    s_w_str (w, "id", j->id);
    s_w_str (w, "type", j->type);
    s_w_str (w, "name", j->name);
    s_w_str (w, "dag_id", j->dag_id);
    s_w_u64 (w, "state", (uint64_t) j->state);
    s_w_i64 (w, "priority", j->priority);
    s_w_u64 (w, "attempts", j->attempts);
    s_w_u64 (w, "max_attempts", j->max_attempts);
    s_w_str (w, "worker", j->worker);
    s_w_u64 (w, "created_ms", j->created_ms);
    s_w_u64 (w, "started_ms", j->started_ms);
    s_w_u64 (w, "finished_ms", j->finished_ms);
    s_w_str (w, "error", j->error);
    s_w_str (w, "skipped_by", j->skipped_by);
    s_w_u64 (w, "output_size", j->output_size);
    if (j->nparents && (!j->parent_ids || !j->parent_states)) {
        w->too_big = true;      //  decoders need both arrays
        return;
    }
    s_w_strs (w, "parent_ids", j->parent_ids, j->nparents);
    if (j->nparents && s_w_field (w, "parent_states")) {
        msgpack_pack_array (w->pk, j->nparents);
        for (uint32_t i = 0; i < j->nparents; i++)
            msgpack_pack_int (w->pk, j->parent_states [i]);
    }
}

static void
s_emit_typestat (s_w_t *w, const void *item)
{
    const dq_typestat_t *t = item;
    s_w_str (w, "type", t->type);
    s_w_u64 (w, "waiting", t->waiting);
    s_w_u64 (w, "queued", t->queued);
    s_w_u64 (w, "running", t->running);
    s_w_u64 (w, "succeeded", t->succeeded);
    s_w_u64 (w, "failed", t->failed);
    s_w_u64 (w, "cancelled", t->cancelled);
    s_w_u64 (w, "skipped", t->skipped);
    s_w_u64 (w, "workers", t->workers);
}

static void
s_emit_workerinfo (s_w_t *w, const void *item)
{
    const dq_workerinfo_t *k = item;
    s_w_str (w, "id", k->id);
    s_w_str (w, "name", k->name);
    s_w_str (w, "host", k->host);
    s_w_u64 (w, "pid", k->pid);
    s_w_u64 (w, "capacity", k->capacity);
    s_w_u64 (w, "inflight", k->inflight);
    s_w_u64 (w, "last_seen_ms", k->last_seen_ms);
    s_w_u64 (w, "done", k->done);
    s_w_strs (w, "types", k->types, k->ntypes);
}

static void
s_emit_daginfo (s_w_t *w, const void *item)
{
    const dq_daginfo_t *d = item;
    s_w_str (w, "id", d->id);
    s_w_str (w, "name", d->name);
    s_w_u64 (w, "state", (uint64_t) d->state);
    s_w_u64 (w, "total", d->total);
    s_w_u64 (w, "waiting", d->waiting);
    s_w_u64 (w, "queued", d->queued);
    s_w_u64 (w, "running", d->running);
    s_w_u64 (w, "succeeded", d->succeeded);
    s_w_u64 (w, "failed", d->failed);
    s_w_u64 (w, "cancelled", d->cancelled);
    s_w_u64 (w, "skipped", d->skipped);
    s_w_u64 (w, "created_ms", d->created_ms);
    s_w_u64 (w, "finished_ms", d->finished_ms);
}

//  A histogram (counts per bucket), if it has any buckets.
static void
s_w_hist (s_w_t *w, const char *key, const uint64_t *hist, uint32_t n)
{
    if (n && (n > S_HIST_MAX || !hist))
        w->too_big = true;      //  the decoder would refuse it; never read NULL
    else
    if (n && s_w_field (w, key)) {
        msgpack_pack_array (w->pk, n);
        for (uint32_t i = 0; i < n; i++)
            msgpack_pack_uint64 (w->pk, hist [i]);
    }
}

static void
s_emit_msg (s_w_t *w, const void *item)
{
    const dq_msg_t *m = item;
    //  rid is always present, even when 0.
    if (s_w_field (w, "rid"))
        msgpack_pack_uint64 (w->pk, m->rid);
    s_w_str (w, "id", m->id);
    s_w_strs (w, "ids", m->ids, m->nids);
    s_w_str (w, "key", m->key);
    s_w_str (w, "dag_name", m->dag_name);
    s_w_str (w, "dag_id", m->dag_id);
    s_w_array (w, "jobs", s_emit_jobspec, m->jobs, sizeof (dq_jobspec_t),
               m->njobs);
    s_w_bin (w, "payload", m->payload, m->payload_size);
    s_w_str (w, "type", m->type);
    s_w_str (w, "content_type", m->content_type);
    s_w_bin (w, "output", m->output, m->output_size);
    s_w_str (w, "error", m->error);
    s_w_u64 (w, "state", (uint64_t) m->state);
    s_w_bool (w, "ok", m->ok);
    s_w_u64 (w, "attempt", m->attempt);
    s_w_u64 (w, "timeout_ms", m->timeout_ms);
    s_w_array (w, "parents", s_emit_parent, m->parents, sizeof (dq_parent_t),
               m->nparents);
    s_w_array (w, "tasks", s_emit_task, m->tasks, sizeof (dq_task_rec_t), m->ntasks);
    s_w_array (w, "results", s_emit_result, m->results, sizeof (dq_result_rec_t),
               m->nresults);
    s_w_bool (w, "batch", m->batch);
    s_w_bool (w, "summary", m->summary);
    s_w_u64 (w, "offset", m->offset);
    s_w_u64 (w, "limit", m->limit);
    s_w_u64 (w, "next_offset", m->next_offset);
    s_w_u64 (w, "code", m->code);
    s_w_str (w, "message", m->message);
    s_w_u64 (w, "retry_ms", m->retry_ms);
    s_w_u64 (w, "count", m->count);
    s_w_str (w, "name", m->name);
    s_w_str (w, "host", m->host);
    s_w_u64 (w, "pid", m->pid);
    //  capacity 0 means "draining", so READY always carries it.
    if ((m->capacity || m->cmd == DQ_CMD_READY) && s_w_field (w, "capacity"))
        msgpack_pack_uint32 (w->pk, m->capacity);
    s_w_strs (w, "types", m->types, m->ntypes);
    s_w_strs (w, "running", m->running, m->nrunning);
    s_w_u64 (w, "heartbeat_ms", m->heartbeat_ms);
    s_w_u64 (w, "liveness", m->liveness);
    s_w_str (w, "broker_id", m->broker_id);
    s_w_str (w, "worker_id", m->worker_id);
    s_w_array (w, "infos", s_emit_jobinfo, m->infos, sizeof (dq_jobinfo_t),
               m->ninfos);
    s_w_array (w, "typestats", s_emit_typestat, m->typestats,
               sizeof (dq_typestat_t), m->ntypestats);
    s_w_array (w, "workers", s_emit_workerinfo, m->workers,
               sizeof (dq_workerinfo_t), m->nworkers);
    if (m->dag && s_w_field (w, "dag"))
        s_pack_map (w->pk, s_emit_daginfo, m->dag, &w->too_big);
    s_w_u64 (w, "uptime_ms", m->uptime_ms);
    s_w_u64 (w, "jobs_total", m->jobs_total);
    s_w_u64 (w, "jobs_in_memory", m->jobs_in_memory);
    s_w_u64 (w, "queued_bytes", m->queued_bytes);
    s_w_u64 (w, "workers_total", m->workers_total);
    s_w_hist (w, "dispatch_hist", m->dispatch_hist, m->ndispatch_hist);
    s_w_hist (w, "sync_hist", m->sync_hist, m->nsync_hist);
}

//  A growable output buffer sized from the message, so small messages cost
//  one small allocation (msgpack's sbuffer starts at 8 KiB).
typedef struct {
    char *data;
    size_t size, alloc;
} s_buf_t;

static int
s_buf_write (void *data, const char *buf, size_t len)
{
    s_buf_t *b = data;
    if (b->size + len > b->alloc) {
        size_t alloc = b->alloc? b->alloc: 256;
        while (alloc < b->size + len)
            alloc *= 2;
        char *p = realloc (b->data, alloc);
        if (!p)
            return -1;
        dq_mem_advise (p + b->size, alloc - b->size);
        b->data = p;
        b->alloc = alloc;
    }
    memcpy (b->data + b->size, buf, len);
    b->size += len;
    return 0;
}

//  Like s_buf_write, but the buffer may start on the stack (events).
static int
s_buf_write_event (void *data, const char *buf, size_t len)
{
    s_buf_t *b = data;
    if (b->size + len > b->alloc) {
        size_t alloc = b->alloc * 2;
        while (alloc < b->size + len)
            alloc *= 2;
        char *p = malloc (alloc);
        if (!p)
            return -1;
        memcpy (p, b->data, b->size);
        if (b->alloc > 256)
            free (b->data);
        b->data = p;
        b->alloc = alloc;
    }
    memcpy (b->data + b->size, buf, len);
    b->size += len;
    return 0;
}

int
dq_msg_encode (const dq_msg_t *self, void **data, size_t *size)
{
    s_buf_t buf = { NULL, 0, 0 };
    buf.alloc = 192 + self->payload_size + self->output_size;
    if (self->payload_size + self->output_size > DQ_PROTO_BODY_MAX)
        return -1;
    buf.data = malloc (buf.alloc);
    if (!buf.data)
        return -1;
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buf, s_buf_write);
    bool too_big = false;
    s_pack_map (&pk, s_emit_msg, self, &too_big);
    if (too_big || buf.size > DQ_PROTO_BODY_MAX) {
        free (buf.data);
        return -1;
    }
    *data = buf.data;           //  caller frees
    *size = buf.size;
    return 0;
}

static void
s_free_buf (void *data, void *hint)
{
    (void) hint;
    free (data);
}

int
dq_msg_send (const dq_msg_t *self, void *sock,
             const void *routing_id, size_t routing_id_size, int flags)
{
    void *body;
    size_t body_size;
    if (dq_msg_encode (self, &body, &body_size)) {
        errno = EMSGSIZE;
        return -1;
    }
    const char *cmd = dq_cmd_str (self->cmd);
    //  The first frame decides: if it cannot be queued (EAGAIN,
    //  EHOSTUNREACH) nothing was sent. Later frames of a message that was
    //  started are always accepted by libzmq.
    if (routing_id
    &&  zmq_send (sock, routing_id, routing_id_size, ZMQ_SNDMORE | flags) == -1) {
        free (body);
        return -1;
    }
    if (zmq_send (sock, DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE,
                  ZMQ_SNDMORE | flags) == -1
    ||  zmq_send (sock, cmd, strlen (cmd), ZMQ_SNDMORE | flags) == -1) {
        free (body);
        return -1;
    }
    zmq_msg_t frame;
    if (zmq_msg_init_data (&frame, body, body_size, s_free_buf, NULL)) {
        free (body);
        return -1;
    }
    if (zmq_msg_send (&frame, sock, flags) == -1) {
        zmq_msg_close (&frame);
        return -1;
    }
    return 0;
}

int
dq_msg_send_error (void *sock, const void *routing_id, size_t rid_size,
                   uint64_t rid, dq_err_t code, uint32_t retry_ms,
                   const char *message)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_ERROR);
    msg.rid = rid;
    msg.code = code;
    msg.retry_ms = retry_ms;
    msg.message = message;
    return dq_msg_send (&msg, sock, routing_id, rid_size, ZMQ_DONTWAIT);
}

//  ---------------------------------------------------------------------------
//  Structural check before unpacking: returns 0 if the msgpack value at
//  *pos is complete, nests no deeper than DQ_WALK_DEPTH_MAX and declares no
//  length beyond the bytes left. Allocates nothing.

static int
s_need (size_t pos, size_t n, size_t size)
{
    return (n > size || pos > size - n)? -1: 0;
}

static uint64_t
s_be (const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p [i];
    return v;
}

static int
s_walk (const uint8_t *d, size_t size, size_t *pos, int depth, uint64_t *budget)
{
    //  msgpack-c spends about 24 bytes per value: cap how many values one
    //  body may hold, so tiny hostile values cannot cost gigabytes.
    if (depth > DQ_WALK_DEPTH_MAX || s_need (*pos, 1, size) || *budget == 0)
        return -1;
    (*budget)--;
    uint8_t b = d [(*pos)++];
    uint64_t n = 0;
    int items = 0;              //  0 scalar, 1 array, 2 map
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if ((b & 0xf0) == 0x80) { n = b & 0x0f; items = 2; }
    else
    if ((b & 0xf0) == 0x90) { n = b & 0x0f; items = 1; }
    else
    if ((b & 0xe0) == 0xa0) { n = b & 0x1f; }
    else {
        int lenbytes = 0;
        size_t fixed = 0;
        switch (b) {
            case 0xc4: case 0xd9: lenbytes = 1; break;        //  bin8 str8
            case 0xc5: case 0xda: lenbytes = 2; break;
            case 0xc6: case 0xdb: lenbytes = 4; break;
            case 0xc7: lenbytes = 1; fixed = 1; break;        //  ext
            case 0xc8: lenbytes = 2; fixed = 1; break;
            case 0xc9: lenbytes = 4; fixed = 1; break;
            case 0xca: return s_need (*pos, 4, size)? -1: (*pos += 4, 0);
            case 0xcb: return s_need (*pos, 8, size)? -1: (*pos += 8, 0);
            case 0xcc: case 0xd0: return s_need (*pos, 1, size)? -1: (*pos += 1, 0);
            case 0xcd: case 0xd1: return s_need (*pos, 2, size)? -1: (*pos += 2, 0);
            case 0xce: case 0xd2: return s_need (*pos, 4, size)? -1: (*pos += 4, 0);
            case 0xcf: case 0xd3: return s_need (*pos, 8, size)? -1: (*pos += 8, 0);
            case 0xd4: return s_need (*pos, 2, size)? -1: (*pos += 2, 0);
            case 0xd5: return s_need (*pos, 3, size)? -1: (*pos += 3, 0);
            case 0xd6: return s_need (*pos, 5, size)? -1: (*pos += 5, 0);
            case 0xd7: return s_need (*pos, 9, size)? -1: (*pos += 9, 0);
            case 0xd8: return s_need (*pos, 17, size)? -1: (*pos += 17, 0);
            case 0xdc: lenbytes = 2; items = 1; break;
            case 0xdd: lenbytes = 4; items = 1; break;
            case 0xde: lenbytes = 2; items = 2; break;
            case 0xdf: lenbytes = 4; items = 2; break;
            default: return -1;                               //  0xc1: never used
        }
        if (s_need (*pos, (size_t) lenbytes, size))
            return -1;
        n = s_be (d + *pos, lenbytes);
        *pos += (size_t) lenbytes;
        if (!items) {
            n += fixed;
            if (s_need (*pos, n, size))
                return -1;
            *pos += n;
            return 0;
        }
    }
    if (!items) {               //  fixstr
        if (s_need (*pos, n, size))
            return -1;
        *pos += n;
        return 0;
    }
    //  Every element takes at least one byte: reject impossible counts
    //  before walking them.
    uint64_t elements = items == 2? n * 2: n;
    if (elements > size - *pos)
        return -1;
    for (uint64_t i = 0; i < elements; i++)
        if (s_walk (d, size, pos, depth + 1, budget))
            return -1;
    return 0;
}

//  ---------------------------------------------------------------------------
//  Decoding
//
//  A pull reader over the body that s_walk has checked: values are read in
//  place, one header at a time, straight into the dq_msg_t records; no tree
//  of msgpack objects is built. Every read is still bounds-checked.

//  The arena of a decoded message: chunks of growing size (big ones on huge
//  pages, see dq_mem.h), all freed with the message.
typedef struct s_chunk_s {
    struct s_chunk_s *next;
    size_t size, used;          //  bytes of data after this header
} s_chunk_t;

#define S_CHUNK_HEAD   ((sizeof (s_chunk_t) + 15) & ~(size_t) 15)
#define S_CHUNK_MAX    (64u << 20)

typedef struct {
    s_chunk_t *head;            //  the chunk allocations come from
    size_t next;                //  size of the next chunk
} s_arena_t;

static void *
s_arena_alloc (s_arena_t *a, size_t size, bool zero)
{
    size = (size + 7) & ~(size_t) 7;
    s_chunk_t *c = a->head;
    if (c && c->size - c->used >= size) {
        void *p = (char *) c + S_CHUNK_HEAD + c->used;
        c->used += size;
        if (zero)
            memset (p, 0, size);
        return p;
    }
    //  A request over half a chunk gets a chunk of its own, behind the
    //  current one, which stays in use for the small ones.
    bool own = size > a->next / 2;
    size_t want = own? size: a->next;
    if (want > SIZE_MAX - S_CHUNK_HEAD)
        return NULL;
    c = dq_mem_malloc (S_CHUNK_HEAD + want);
    if (!c)
        return NULL;
    c->size = want;
    c->used = size;
    if (own && a->head) {
        c->next = a->head->next;
        a->head->next = c;
    }
    else {
        c->next = a->head;
        a->head = c;
        if (a->next < S_CHUNK_MAX)
            a->next *= 2;
    }
    void *p = (char *) c + S_CHUNK_HEAD;
    if (zero)
        memset (p, 0, size);
    return p;
}

static void
s_arena_free (s_arena_t *a)
{
    while (a->head) {
        s_chunk_t *next = a->head->next;
        free (a->head);
        a->head = next;
    }
}

typedef struct {
    s_arena_t arena;            //  decoded records and copied strings
    zmq_msg_t frame;            //  the body, when received from a socket
    bool have_frame;
    void *copy;                 //  the body, when decoded from a buffer
    dq_jobinfo_t *infos;        //  with appended pages: every page's infos
    dq_msg_t *pages;            //  the appended pages (their priv_ chains on)
} s_priv_t;

//  What a value is, as msgpack-c would type it: non-negative integers are
//  S_UINT whatever their encoding, negative ones S_INT.
typedef enum {
    S_NIL, S_BOOL, S_UINT, S_INT, S_FLOAT, S_STR, S_BIN, S_ARRAY, S_MAP, S_EXT
} s_kind_t;

//  One value's header. Scalars, strings, binaries and extensions are read
//  whole; for arrays and maps only the header is, and n counts their
//  elements (maps: pairs), which follow.
typedef struct {
    s_kind_t kind;
    bool b;
    uint64_t u;                 //  S_UINT
    int64_t i;                  //  S_INT
    const uint8_t *ptr;         //  S_STR S_BIN S_EXT
    uint32_t n;                 //  bytes (S_STR S_BIN S_EXT), elements
} s_val_t;

typedef struct {
    s_arena_t *arena;
    dq_err_t err;
    char *reason;
    const uint8_t *data;        //  the body
    size_t size, pos;
    const char *type;           //  the last job type decoded, to share it
    uint32_t type_len;
} s_dec_t;

static int
s_fail (s_dec_t *d, dq_err_t err, const char *fmt, const char *field)
{
    if (d->err == DQ_OK) {
        d->err = err;
        if (d->reason)
            snprintf (d->reason, 200, fmt, field);
    }
    return -1;
}

static int
s_truncated (s_dec_t *d)
{
    return s_fail (d, DQ_ERR_INVALID, "body is not valid msgpack%s", "");
}

//  Read the header of the value at d->pos into v (see s_val_t).
static int
s_next (s_dec_t *d, s_val_t *v)
{
    if (d->pos >= d->size)
        return s_truncated (d);
    const uint8_t *p = d->data + d->pos;
    size_t left = d->size - d->pos - 1;
    uint8_t b = *p++;
    d->pos++;
    size_t len = 0, skip = 0;   //  length bytes, then body bytes
    v->n = 0;
    if (b <= 0x7f) { v->kind = S_UINT; v->u = b; return 0; }
    if (b >= 0xe0) { v->kind = S_INT; v->i = (int8_t) b; return 0; }
    if ((b & 0xf0) == 0x80) { v->kind = S_MAP; v->n = b & 0x0f; return 0; }
    if ((b & 0xf0) == 0x90) { v->kind = S_ARRAY; v->n = b & 0x0f; return 0; }
    if ((b & 0xe0) == 0xa0) { v->kind = S_STR; skip = b & 0x1f; goto body; }
    switch (b) {
        case 0xc0: v->kind = S_NIL; return 0;
        case 0xc2: v->kind = S_BOOL; v->b = false; return 0;
        case 0xc3: v->kind = S_BOOL; v->b = true; return 0;
        case 0xc4: v->kind = S_BIN; len = 1; break;
        case 0xc5: v->kind = S_BIN; len = 2; break;
        case 0xc6: v->kind = S_BIN; len = 4; break;
        case 0xd9: v->kind = S_STR; len = 1; break;
        case 0xda: v->kind = S_STR; len = 2; break;
        case 0xdb: v->kind = S_STR; len = 4; break;
        case 0xc7: v->kind = S_EXT; len = 1; skip = 1; break;
        case 0xc8: v->kind = S_EXT; len = 2; skip = 1; break;
        case 0xc9: v->kind = S_EXT; len = 4; skip = 1; break;
        case 0xd4: v->kind = S_EXT; skip = 2; goto body;
        case 0xd5: v->kind = S_EXT; skip = 3; goto body;
        case 0xd6: v->kind = S_EXT; skip = 5; goto body;
        case 0xd7: v->kind = S_EXT; skip = 9; goto body;
        case 0xd8: v->kind = S_EXT; skip = 17; goto body;
        case 0xca: v->kind = S_FLOAT; skip = 4; goto body;
        case 0xcb: v->kind = S_FLOAT; skip = 8; goto body;
        case 0xcc: case 0xcd: case 0xce: case 0xcf: {
            int n = 1 << (b - 0xcc);
            if ((size_t) n > left)
                return s_truncated (d);
            v->kind = S_UINT;
            v->u = s_be (p, n);
            d->pos += (size_t) n;
            return 0;
        }
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            int n = 1 << (b - 0xd0);
            if ((size_t) n > left)
                return s_truncated (d);
            uint64_t raw = s_be (p, n);
            int64_t x = n == 1? (int8_t) raw: n == 2? (int16_t) raw:
                        n == 4? (int32_t) raw: (int64_t) raw;
            d->pos += (size_t) n;
            if (x >= 0) { v->kind = S_UINT; v->u = (uint64_t) x; }
            else        { v->kind = S_INT; v->i = x; }
            return 0;
        }
        case 0xdc: case 0xdd: case 0xde: case 0xdf: {
            int n = (b & 1)? 4: 2;
            if ((size_t) n > left)
                return s_truncated (d);
            v->kind = b < 0xde? S_ARRAY: S_MAP;
            uint64_t count = s_be (p, n);
            if (count > UINT32_MAX)
                return s_truncated (d);
            v->n = (uint32_t) count;
            d->pos += (size_t) n;
            return 0;
        }
        default:
            return s_truncated (d);       //  0xc1: never used
    }
    //  A length of len bytes, then (ext) a type byte, then the bytes.
    if (len > left)
        return s_truncated (d);
    skip += s_be (p, (int) len);
    p += len;
    left -= len;
    d->pos += len;
body:
    if (skip > left || skip - (v->kind == S_EXT && len? 1: 0) > UINT32_MAX)
        return s_truncated (d);
    v->ptr = p;
    v->n = (uint32_t) (skip - (v->kind == S_EXT && len? 1: 0));
    d->pos += skip;
    return 0;
}

//  Step over the rest of v: the elements of an array or map (nothing for
//  other kinds, read whole by s_next). Depth is bounded by s_walk.
static int
s_skip (s_dec_t *d, const s_val_t *v)
{
    if (v->kind != S_ARRAY && v->kind != S_MAP)
        return 0;
    uint64_t n = v->kind == S_MAP? (uint64_t) v->n * 2: v->n;
    for (uint64_t i = 0; i < n; i++) {
        s_val_t e;
        if (s_next (d, &e) || s_skip (d, &e))
            return -1;
    }
    return 0;
}

static bool
s_keyis (const s_val_t *k, const char *name)
{
    size_t len = strlen (name);
    return k->n == len && memcmp (k->ptr, name, len) == 0;
}

static int
s_get_u64 (s_dec_t *d, const s_val_t *o, const char *field,
           uint64_t max, uint64_t *out)
{
    if (o->kind != S_UINT)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be a non-negative integer", field);
    if (o->u > max)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' is out of range", field);
    *out = o->u;
    return 0;
}

static int
s_get_u32 (s_dec_t *d, const s_val_t *o, const char *field, uint32_t *out)
{
    uint64_t v;
    if (s_get_u64 (d, o, field, UINT32_MAX, &v))
        return -1;
    *out = (uint32_t) v;
    return 0;
}

static int
s_get_i32 (s_dec_t *d, const s_val_t *o, const char *field, int32_t *out)
{
    if (o->kind == S_UINT && o->u <= INT32_MAX)
        *out = (int32_t) o->u;
    else
    if (o->kind == S_INT && o->i >= INT32_MIN)
        *out = (int32_t) o->i;
    else
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be a 32-bit integer", field);
    return 0;
}

static int
s_get_bool (s_dec_t *d, const s_val_t *o, const char *field, bool *out)
{
    if (o->kind != S_BOOL)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be a boolean", field);
    *out = o->b;
    return 0;
}

//  A NUL-terminated copy in the arena. Embedded NULs are refused.
static int
s_get_str (s_dec_t *d, const s_val_t *o, const char *field,
           size_t max, const char **out)
{
    if (o->kind != S_STR)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be a string", field);
    size_t len = o->n;
    if (len > max)
        return s_fail (d, DQ_ERR_TOO_BIG, "field '%s' is too long", field);
    if (memchr (o->ptr, 0, len))
        return s_fail (d, DQ_ERR_INVALID, "field '%s' contains a NUL byte", field);
    char *s = s_arena_alloc (d->arena, len + 1, false);
    if (!s)
        return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", field);
    memcpy (s, o->ptr, len);
    s [len] = 0;
    *out = s;
    return 0;
}

//  A job's type: jobs of one submission mostly share a few types, so a
//  type equal to the previous one shares its copy (and consumers can
//  compare pointers before strings).
static int
s_get_type (s_dec_t *d, const s_val_t *o, const char **out)
{
    if (o->kind == S_STR && d->type && o->n == d->type_len
    &&  memcmp (o->ptr, d->type, o->n) == 0) {
        *out = d->type;
        return 0;
    }
    if (s_get_str (d, o, "type", DQ_PROTO_TYPE_MAX, out))
        return -1;
    d->type = *out;
    d->type_len = o->n;
    return 0;
}

//  Bytes: BIN (or STR, for peers whose msgpack library has no bin type).
static int
s_get_bin (s_dec_t *d, const s_val_t *o, const char *field,
           const void **out, size_t *size)
{
    if (o->kind != S_BIN && o->kind != S_STR)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be binary", field);
    *out = o->ptr;
    *size = o->n;
    if (*size > DQ_PROTO_PAYLOAD_MAX)
        return s_fail (d, DQ_ERR_TOO_BIG, "field '%s' is over the size limit", field);
    return 0;
}

static void *
s_zalloc (s_dec_t *d, size_t n, size_t size)
{
    if (n == 0)
        return NULL;
    if (n > SIZE_MAX / size)
        return NULL;
    return s_arena_alloc (d->arena, n * size, true);
}

static int
s_get_array (s_dec_t *d, const s_val_t *o, const char *field,
             uint32_t max, uint32_t *n)
{
    if (o->kind != S_ARRAY)
        return s_fail (d, DQ_ERR_INVALID, "field '%s' must be an array", field);
    if (o->n > max)
        return s_fail (d, DQ_ERR_TOO_BIG, "field '%s' has too many elements", field);
    *n = o->n;
    return 0;
}

static int
s_get_strs (s_dec_t *d, const s_val_t *o, const char *field,
            uint32_t max, size_t strmax, const char ***out, uint32_t *n)
{
    if (s_get_array (d, o, field, max, n))
        return -1;
    const char **v = s_zalloc (d, *n, sizeof (char *));
    if (*n && !v)
        return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", field);
    for (uint32_t i = 0; i < *n; i++) {
        s_val_t e;
        if (s_next (d, &e) || s_get_str (d, &e, field, strmax, &v [i]))
            return -1;
    }
    *out = v;
    return 0;
}

//  Job type names: 1..DQ_PROTO_TYPE_MAX of [A-Za-z0-9_.:-], as they name
//  queues, event topics and metric labels.
static bool
s_type_ok (const char *t)
{
    size_t len = strlen (t);
    if (len == 0 || len > DQ_PROTO_TYPE_MAX)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
           || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'
           || *p == ':' || *p == '-'))
            return false;
    return true;
}

//  Read a map value: for each entry call fn(d, key, value, out). fn reads
//  the whole value (s_skip for keys it does not know).
typedef int (s_field_fn) (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out);

static int
s_read_map (s_dec_t *d, const s_val_t *o, const char *what,
            s_field_fn *fn, void *out)
{
    if (o->kind != S_MAP)
        return s_fail (d, DQ_ERR_INVALID, "%s must be a map", what);
    for (uint32_t i = 0; i < o->n; i++) {
        s_val_t k, v;
        if (s_next (d, &k))
            return -1;
        if (k.kind != S_STR)
            return s_fail (d, DQ_ERR_INVALID, "%s has a non-string key", what);
        if (s_next (d, &v) || fn (d, &k, &v, out))
            return -1;
    }
    return 0;
}

static int
s_read_records (s_dec_t *d, const s_val_t *o, const char *field,
                uint32_t max, size_t size, s_field_fn *fn,
                void **out, uint32_t *n)
{
    if (s_get_array (d, o, field, max, n))
        return -1;
    char *v = s_zalloc (d, *n, size);
    if (*n && !v)
        return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", field);
    for (uint32_t i = 0; i < *n; i++) {
        s_val_t e;
        if (s_next (d, &e) || s_read_map (d, &e, field, fn, v + i * size))
            return -1;
    }
    *out = v;
    return 0;
}

#define KEY(name) s_keyis (k, name)

//  dq_dep_t.idx while its map is read; then -1 (existing job) or >= 0.
#define S_DEP_IDX_ABSENT (-2)

static int
s_dep_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_dep_t *dep = out;
    if (KEY ("idx")) {
        if (s_get_i32 (d, v, "idx", &dep->idx))
            return -1;
        if (dep->idx < 0)
            return s_fail (d, DQ_ERR_INVALID, "field '%s' must be >= 0", "idx");
        return 0;
    }
    if (KEY ("id"))             return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &dep->id);
    if (KEY ("run_on_failure")) return s_get_bool (d, v, "run_on_failure", &dep->run_on_failure);
    return s_skip (d, v);
}

static int
s_jobspec_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_jobspec_t *j = out;
    if (KEY ("type"))         return s_get_type (d, v, &j->type);
    if (KEY ("payload"))      return s_get_bin (d, v, "payload", &j->payload, &j->payload_size);
    if (KEY ("content_type")) return s_get_str (d, v, "content_type", DQ_PROTO_NAME_MAX, &j->content_type);
    if (KEY ("name"))         return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &j->name);
    if (KEY ("key"))          return s_get_str (d, v, "key", DQ_PROTO_NAME_MAX, &j->key);
    if (KEY ("priority"))     return s_get_i32 (d, v, "priority", &j->priority);
    if (KEY ("attempts"))     return s_get_u32 (d, v, "attempts", &j->attempts);
    if (KEY ("timeout_ms"))   return s_get_u32 (d, v, "timeout_ms", &j->timeout_ms);
    if (KEY ("delay_ms"))     return s_get_u64 (d, v, "delay_ms", UINT64_MAX / 2, &j->delay_ms);
    if (KEY ("deps")) {
        //  A dep needs exactly one of idx and id: mark idx absent before
        //  reading, so {} and {"idx": 0} differ.
        uint32_t n;
        if (s_get_array (d, v, "deps", DQ_PROTO_DEPS_MAX, &n))
            return -1;
        dq_dep_t *deps = s_zalloc (d, n, sizeof (dq_dep_t));
        if (n && !deps)
            return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", "deps");
        for (uint32_t i = 0; i < n; i++) {
            deps [i].idx = S_DEP_IDX_ABSENT;
            s_val_t e;
            if (s_next (d, &e) || s_read_map (d, &e, "deps", s_dep_field, &deps [i]))
                return -1;
            bool local = deps [i].idx >= 0;
            if (local == (deps [i].id != NULL))
                return s_fail (d, DQ_ERR_INVALID, "a dependency needs exactly one "
                               "of 'idx' and 'id'%s", "");
            if (!local)
                deps [i].idx = -1;      //  an existing job, by id
        }
        j->deps = deps;
        j->ndeps = n;
        return 0;
    }
    return s_skip (d, v);
}

static int
s_parent_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_parent_t *p = out;
    if (KEY ("id"))     return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &p->id);
    if (KEY ("name"))   return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &p->name);
    if (KEY ("output")) return s_get_bin (d, v, "output", &p->output, &p->output_size);
    return s_skip (d, v);
}

static int
s_task_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_task_rec_t *t = out;
    if (KEY ("id"))           return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &t->id);
    if (KEY ("type"))         return s_get_str (d, v, "type", DQ_PROTO_TYPE_MAX, &t->type);
    if (KEY ("payload"))      return s_get_bin (d, v, "payload", &t->payload, &t->payload_size);
    if (KEY ("content_type")) return s_get_str (d, v, "content_type", DQ_PROTO_NAME_MAX, &t->content_type);
    if (KEY ("attempt"))      return s_get_u32 (d, v, "attempt", &t->attempt);
    if (KEY ("timeout_ms"))   return s_get_u32 (d, v, "timeout_ms", &t->timeout_ms);
    if (KEY ("parents"))
        return s_read_records (d, v, "parents", DQ_PROTO_DEPS_MAX, sizeof (dq_parent_t),
                               s_parent_field, (void **) &t->parents, &t->nparents);
    return s_skip (d, v);
}

static int
s_result_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_result_rec_t *r = out;
    if (KEY ("id"))           return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &r->id);
    if (KEY ("attempt"))      return s_get_u32 (d, v, "attempt", &r->attempt);
    if (KEY ("ok"))           return s_get_bool (d, v, "ok", &r->ok);
    if (KEY ("output"))       return s_get_bin (d, v, "output", &r->output, &r->output_size);
    if (KEY ("error"))        return s_get_str (d, v, "error", DQ_PROTO_STR_MAX, &r->error);
    if (KEY ("content_type")) return s_get_str (d, v, "content_type", DQ_PROTO_NAME_MAX, &r->content_type);
    return s_skip (d, v);
}

static int
s_state_field (s_dec_t *d, const s_val_t *v, int *out)
{
    uint64_t s;
    if (s_get_u64 (d, v, "state", DQ_STATE_COUNT_ - 1, &s))
        return -1;
    *out = (int) s;
    return 0;
}

static int
s_jobinfo_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_jobinfo_t *j = out;
    if (KEY ("id"))           return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &j->id);
    if (KEY ("type"))         return s_get_str (d, v, "type", DQ_PROTO_TYPE_MAX, &j->type);
    if (KEY ("name"))         return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &j->name);
    if (KEY ("dag_id"))       return s_get_str (d, v, "dag_id", DQ_PROTO_NAME_MAX, &j->dag_id);
    if (KEY ("state"))        return s_state_field (d, v, &j->state);
    if (KEY ("priority"))     return s_get_i32 (d, v, "priority", &j->priority);
    if (KEY ("attempts"))     return s_get_u32 (d, v, "attempts", &j->attempts);
    if (KEY ("max_attempts")) return s_get_u32 (d, v, "max_attempts", &j->max_attempts);
    if (KEY ("worker"))       return s_get_str (d, v, "worker", DQ_PROTO_NAME_MAX, &j->worker);
    if (KEY ("created_ms"))   return s_get_u64 (d, v, "created_ms", UINT64_MAX, &j->created_ms);
    if (KEY ("started_ms"))   return s_get_u64 (d, v, "started_ms", UINT64_MAX, &j->started_ms);
    if (KEY ("finished_ms"))  return s_get_u64 (d, v, "finished_ms", UINT64_MAX, &j->finished_ms);
    if (KEY ("error"))        return s_get_str (d, v, "error", DQ_PROTO_STR_MAX, &j->error);
    if (KEY ("skipped_by"))   return s_get_str (d, v, "skipped_by", DQ_PROTO_NAME_MAX, &j->skipped_by);
    if (KEY ("output_size")) {
        uint64_t n;
        if (s_get_u64 (d, v, "output_size", UINT64_MAX, &n))
            return -1;
        j->output_size = (size_t) n;
        return 0;
    }
    if (KEY ("parent_ids")) {
        uint32_t n;
        if (s_get_strs (d, v, "parent_ids", DQ_PROTO_DEPS_MAX, DQ_PROTO_NAME_MAX, &j->parent_ids, &n))
            return -1;
        if (j->parent_states && n != j->nparents)
            return s_fail (d, DQ_ERR_INVALID, "field '%s' length mismatch", "parent_ids");
        j->nparents = n;
        return 0;
    }
    if (KEY ("parent_states")) {
        uint32_t n;
        if (s_get_array (d, v, "parent_states", DQ_PROTO_DEPS_MAX, &n))
            return -1;
        if (j->parent_ids && n != j->nparents)
            return s_fail (d, DQ_ERR_INVALID, "field '%s' length mismatch", "parent_states");
        int *states = s_zalloc (d, n, sizeof (int));
        if (n && !states)
            return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", "parent_states");
        for (uint32_t i = 0; i < n; i++) {
            s_val_t e;
            if (s_next (d, &e) || s_state_field (d, &e, &states [i]))
                return -1;
        }
        j->parent_states = states;
        j->nparents = n;
        return 0;
    }
    return s_skip (d, v);
}

static int
s_typestat_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_typestat_t *t = out;
    if (KEY ("type"))      return s_get_str (d, v, "type", DQ_PROTO_TYPE_MAX, &t->type);
    if (KEY ("waiting"))   return s_get_u64 (d, v, "waiting", UINT64_MAX, &t->waiting);
    if (KEY ("queued"))    return s_get_u64 (d, v, "queued", UINT64_MAX, &t->queued);
    if (KEY ("running"))   return s_get_u64 (d, v, "running", UINT64_MAX, &t->running);
    if (KEY ("succeeded")) return s_get_u64 (d, v, "succeeded", UINT64_MAX, &t->succeeded);
    if (KEY ("failed"))    return s_get_u64 (d, v, "failed", UINT64_MAX, &t->failed);
    if (KEY ("cancelled")) return s_get_u64 (d, v, "cancelled", UINT64_MAX, &t->cancelled);
    if (KEY ("skipped"))   return s_get_u64 (d, v, "skipped", UINT64_MAX, &t->skipped);
    if (KEY ("workers"))   return s_get_u32 (d, v, "workers", &t->workers);
    return s_skip (d, v);
}

static int
s_workerinfo_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_workerinfo_t *w = out;
    if (KEY ("id"))           return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &w->id);
    if (KEY ("name"))         return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &w->name);
    if (KEY ("host"))         return s_get_str (d, v, "host", DQ_PROTO_NAME_MAX, &w->host);
    if (KEY ("pid"))          return s_get_u32 (d, v, "pid", &w->pid);
    if (KEY ("capacity"))     return s_get_u32 (d, v, "capacity", &w->capacity);
    if (KEY ("inflight"))     return s_get_u32 (d, v, "inflight", &w->inflight);
    if (KEY ("last_seen_ms")) return s_get_u64 (d, v, "last_seen_ms", UINT64_MAX, &w->last_seen_ms);
    if (KEY ("done"))         return s_get_u64 (d, v, "done", UINT64_MAX, &w->done);
    if (KEY ("types"))
        return s_get_strs (d, v, "types", DQ_PROTO_TYPES_MAX, DQ_PROTO_TYPE_MAX,
                           &w->types, &w->ntypes);
    return s_skip (d, v);
}

static int
s_daginfo_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_daginfo_t *g = out;
    if (KEY ("id"))          return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &g->id);
    if (KEY ("name"))        return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &g->name);
    if (KEY ("state"))       return s_state_field (d, v, &g->state);
    if (KEY ("total"))       return s_get_u32 (d, v, "total", &g->total);
    if (KEY ("waiting"))     return s_get_u32 (d, v, "waiting", &g->waiting);
    if (KEY ("queued"))      return s_get_u32 (d, v, "queued", &g->queued);
    if (KEY ("running"))     return s_get_u32 (d, v, "running", &g->running);
    if (KEY ("succeeded"))   return s_get_u32 (d, v, "succeeded", &g->succeeded);
    if (KEY ("failed"))      return s_get_u32 (d, v, "failed", &g->failed);
    if (KEY ("cancelled"))   return s_get_u32 (d, v, "cancelled", &g->cancelled);
    if (KEY ("skipped"))     return s_get_u32 (d, v, "skipped", &g->skipped);
    if (KEY ("created_ms"))  return s_get_u64 (d, v, "created_ms", UINT64_MAX, &g->created_ms);
    if (KEY ("finished_ms")) return s_get_u64 (d, v, "finished_ms", UINT64_MAX, &g->finished_ms);
    return s_skip (d, v);
}

//  A histogram: at most S_HIST_MAX unsigned counts.
static int
s_get_hist (s_dec_t *d, const s_val_t *v, const char *key, const uint64_t **hist,
            uint32_t *nhist)
{
    uint32_t n;
    if (s_get_array (d, v, key, S_HIST_MAX, &n))
        return -1;
    uint64_t *h = s_zalloc (d, n, sizeof (uint64_t));
    if (n && !h)
        return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", key);
    for (uint32_t i = 0; i < n; i++) {
        s_val_t e;
        if (s_next (d, &e) || s_get_u64 (d, &e, key, UINT64_MAX, &h [i]))
            return -1;
    }
    *hist = h;
    *nhist = n;
    return 0;
}

static int
s_msg_field (s_dec_t *d, const s_val_t *k, const s_val_t *v, void *out)
{
    dq_msg_t *m = out;
    if (KEY ("rid"))          return s_get_u64 (d, v, "rid", UINT64_MAX, &m->rid);
    if (KEY ("id"))           return s_get_str (d, v, "id", DQ_PROTO_NAME_MAX, &m->id);
    if (KEY ("ids"))
        return s_get_strs (d, v, "ids", DQ_PROTO_ARRAY_MAX, DQ_PROTO_NAME_MAX, &m->ids, &m->nids);
    if (KEY ("key"))          return s_get_str (d, v, "key", DQ_PROTO_NAME_MAX, &m->key);
    if (KEY ("dag_name"))     return s_get_str (d, v, "dag_name", DQ_PROTO_NAME_MAX, &m->dag_name);
    if (KEY ("dag_id"))       return s_get_str (d, v, "dag_id", DQ_PROTO_NAME_MAX, &m->dag_id);
    if (KEY ("jobs"))
        return s_read_records (d, v, "jobs", DQ_PROTO_ARRAY_MAX, sizeof (dq_jobspec_t),
                               s_jobspec_field, (void **) &m->jobs, &m->njobs);
    if (KEY ("payload"))      return s_get_bin (d, v, "payload", &m->payload, &m->payload_size);
    if (KEY ("type"))         return s_get_str (d, v, "type", DQ_PROTO_TYPE_MAX, &m->type);
    if (KEY ("content_type")) return s_get_str (d, v, "content_type", DQ_PROTO_NAME_MAX, &m->content_type);
    if (KEY ("output"))       return s_get_bin (d, v, "output", &m->output, &m->output_size);
    if (KEY ("error"))        return s_get_str (d, v, "error", DQ_PROTO_STR_MAX, &m->error);
    if (KEY ("state"))        return s_state_field (d, v, &m->state);
    if (KEY ("ok"))           return s_get_bool (d, v, "ok", &m->ok);
    if (KEY ("attempt"))      return s_get_u32 (d, v, "attempt", &m->attempt);
    if (KEY ("timeout_ms"))   return s_get_u32 (d, v, "timeout_ms", &m->timeout_ms);
    if (KEY ("parents"))
        return s_read_records (d, v, "parents", DQ_PROTO_DEPS_MAX, sizeof (dq_parent_t),
                               s_parent_field, (void **) &m->parents, &m->nparents);
    if (KEY ("tasks"))
        return s_read_records (d, v, "tasks", DQ_PROTO_ARRAY_MAX, sizeof (dq_task_rec_t),
                               s_task_field, (void **) &m->tasks, &m->ntasks);
    if (KEY ("results"))
        return s_read_records (d, v, "results", DQ_PROTO_ARRAY_MAX, sizeof (dq_result_rec_t),
                               s_result_field, (void **) &m->results, &m->nresults);
    if (KEY ("batch"))        return s_get_bool (d, v, "batch", &m->batch);
    if (KEY ("summary"))      return s_get_bool (d, v, "summary", &m->summary);
    if (KEY ("offset"))       return s_get_u32 (d, v, "offset", &m->offset);
    if (KEY ("limit"))        return s_get_u32 (d, v, "limit", &m->limit);
    if (KEY ("next_offset"))  return s_get_u32 (d, v, "next_offset", &m->next_offset);
    if (KEY ("code"))         return s_get_u32 (d, v, "code", &m->code);
    if (KEY ("message"))      return s_get_str (d, v, "message", DQ_PROTO_STR_MAX, &m->message);
    if (KEY ("retry_ms"))     return s_get_u32 (d, v, "retry_ms", &m->retry_ms);
    if (KEY ("count"))        return s_get_u64 (d, v, "count", UINT64_MAX, &m->count);
    if (KEY ("name"))         return s_get_str (d, v, "name", DQ_PROTO_NAME_MAX, &m->name);
    if (KEY ("host"))         return s_get_str (d, v, "host", DQ_PROTO_NAME_MAX, &m->host);
    if (KEY ("pid"))          return s_get_u32 (d, v, "pid", &m->pid);
    if (KEY ("capacity"))     return s_get_u32 (d, v, "capacity", &m->capacity);
    if (KEY ("types"))
        return s_get_strs (d, v, "types", DQ_PROTO_TYPES_MAX, DQ_PROTO_TYPE_MAX,
                           &m->types, &m->ntypes);
    if (KEY ("running"))
        return s_get_strs (d, v, "running", DQ_PROTO_ARRAY_MAX, DQ_PROTO_NAME_MAX, &m->running, &m->nrunning);
    if (KEY ("heartbeat_ms")) return s_get_u32 (d, v, "heartbeat_ms", &m->heartbeat_ms);
    if (KEY ("liveness"))     return s_get_u32 (d, v, "liveness", &m->liveness);
    if (KEY ("broker_id"))    return s_get_str (d, v, "broker_id", DQ_PROTO_NAME_MAX, &m->broker_id);
    if (KEY ("worker_id"))    return s_get_str (d, v, "worker_id", DQ_PROTO_NAME_MAX, &m->worker_id);
    if (KEY ("infos")) {
        if (s_read_records (d, v, "infos", DQ_PROTO_ARRAY_MAX, sizeof (dq_jobinfo_t),
                            s_jobinfo_field, (void **) &m->infos, &m->ninfos))
            return -1;
        //  Readers index both parent arrays by nparents: one alone (or an
        //  empty one beside a full one) must not get through.
        for (uint32_t i = 0; i < m->ninfos; i++)
            if (m->infos [i].nparents
            &&  (!m->infos [i].parent_ids || !m->infos [i].parent_states))
                return s_fail (d, DQ_ERR_INVALID, "fields 'parent_ids' and "
                               "'parent_states' must have the same length%s", "");
        return 0;
    }
    if (KEY ("typestats"))
        return s_read_records (d, v, "typestats", DQ_PROTO_ARRAY_MAX, sizeof (dq_typestat_t),
                               s_typestat_field, (void **) &m->typestats, &m->ntypestats);
    if (KEY ("workers"))
        return s_read_records (d, v, "workers", DQ_PROTO_ARRAY_MAX, sizeof (dq_workerinfo_t),
                               s_workerinfo_field, (void **) &m->workers, &m->nworkers);
    if (KEY ("dag")) {
        m->dag = s_zalloc (d, 1, sizeof (dq_daginfo_t));
        if (!m->dag)
            return s_fail (d, DQ_ERR_INTERNAL, "out of memory decoding '%s'", "dag");
        return s_read_map (d, v, "dag", s_daginfo_field, m->dag);
    }
    if (KEY ("uptime_ms"))    return s_get_u64 (d, v, "uptime_ms", UINT64_MAX, &m->uptime_ms);
    if (KEY ("jobs_total"))   return s_get_u64 (d, v, "jobs_total", UINT64_MAX, &m->jobs_total);
    if (KEY ("jobs_in_memory")) return s_get_u64 (d, v, "jobs_in_memory", UINT64_MAX, &m->jobs_in_memory);
    if (KEY ("queued_bytes")) return s_get_u64 (d, v, "queued_bytes", UINT64_MAX, &m->queued_bytes);
    if (KEY ("workers_total")) return s_get_u64 (d, v, "workers_total", UINT64_MAX, &m->workers_total);
    if (KEY ("dispatch_hist"))
        return s_get_hist (d, v, "dispatch_hist", &m->dispatch_hist, &m->ndispatch_hist);
    if (KEY ("sync_hist"))
        return s_get_hist (d, v, "sync_hist", &m->sync_hist, &m->nsync_hist);
    return s_skip (d, v);
}

//  Per-command checks of required fields, after the map was read.
static int
s_check (s_dec_t *d, dq_msg_t *m)
{
    switch (m->cmd) {
        case DQ_CMD_SUBMIT:
            if (m->njobs == 0)
                return s_fail (d, DQ_ERR_INVALID, "%s needs a non-empty 'jobs' array", "SUBMIT");
            for (uint32_t i = 0; i < m->njobs; i++) {
                dq_jobspec_t *j = &m->jobs [i];
                char which [16];        //  "job <i>" names the culprit
                //  Jobs that share a type share its string: check it once.
                bool type_ok = j->type && ((i > 0 && j->type == m->jobs [i - 1].type)
                                           || s_type_ok (j->type));
                if (!type_ok) {
                    snprintf (which, sizeof which, "%u", i);
                    return s_fail (d, DQ_ERR_INVALID,
                                   "job %s needs a 'type' of 1-128 characters from "
                                   "[A-Za-z0-9_.:-]", which);
                }
                for (uint32_t k = 0; k < j->ndeps; k++)
                    if (j->deps [k].idx >= 0 && (uint32_t) j->deps [k].idx >= m->njobs) {
                        snprintf (which, sizeof which, "%u", i);
                        return s_fail (d, DQ_ERR_INVALID,
                                       "job %s: dependency 'idx' out of range", which);
                    }
            }
            return 0;
        case DQ_CMD_STATUS:
            if (m->nids == 0)
                return s_fail (d, DQ_ERR_INVALID, "%s needs a non-empty 'ids' array", "STATUS");
            if (m->nids > DQ_PROTO_STATUS_IDS_MAX)
                return s_fail (d, DQ_ERR_TOO_BIG, "%s: at most " S_STRINGIFY (DQ_PROTO_STATUS_IDS_MAX)
                               " ids in one request, send several", "STATUS");
            return 0;
        case DQ_CMD_DONE:
            //  One result (id at the top) or a batch of them.
            if (!m->id && m->nresults == 0)
                return s_fail (d, DQ_ERR_INVALID, "%s needs 'id' or 'results'", "DONE");
            for (uint32_t i = 0; i < m->nresults; i++)
                if (!m->results [i].id)
                    return s_fail (d, DQ_ERR_INVALID, "every DONE result needs 'id'%s", "");
            return 0;
        case DQ_CMD_DAG:
            if (m->limit > DQ_PROTO_DAG_JOBS_MAX)
                return s_fail (d, DQ_ERR_TOO_BIG, "%s: 'limit' is at most "
                               S_STRINGIFY (DQ_PROTO_DAG_JOBS_MAX) " jobs a page, ask "
                               "for the next with 'offset'", "DAG");
            if (!m->id)
                return s_fail (d, DQ_ERR_INVALID, "%s needs 'id'", "DAG");
            return 0;
        case DQ_CMD_RESULT: case DQ_CMD_CANCEL:
        case DQ_CMD_ABANDON:
            if (!m->id)
                return s_fail (d, DQ_ERR_INVALID, "%s needs 'id'", dq_cmd_str (m->cmd));
            return 0;
        case DQ_CMD_JOB:
            if ((!m->id || !m->type) && m->ntasks == 0)
                return s_fail (d, DQ_ERR_INVALID, "%s needs 'id' and 'type', or 'tasks'", "JOB");
            for (uint32_t i = 0; i < m->ntasks; i++)
                if (!m->tasks [i].id || !m->tasks [i].type)
                    return s_fail (d, DQ_ERR_INVALID, "every JOB task needs 'id' and 'type'%s", "");
            return 0;
        case DQ_CMD_READY:
            for (uint32_t i = 0; i < m->ntypes; i++)
                if (!s_type_ok (m->types [i]))
                    return s_fail (d, DQ_ERR_INVALID,
                                   "READY: type names are 1-128 characters from "
                                   "[A-Za-z0-9_.:-]%s", "");
            return 0;
        default:
            return 0;
    }
}

static dq_cmd_t
s_cmd_parse (const void *cmd, size_t size)
{
    for (int i = 1; i < DQ_CMD_COUNT_; i++)
        if (strlen (s_cmd_names [i]) == size && memcmp (s_cmd_names [i], cmd, size) == 0)
            return (dq_cmd_t) i;
    return DQ_CMD_NONE;
}

//  The request id of a body that failed to decode, if its top level is a
//  map with a readable "rid": so the error reply can carry it. 0 if not.
static uint64_t
s_peek_rid (const uint8_t *d, size_t size)
{
    if (!d || size == 0)
        return 0;
    size_t pos = 1;
    uint64_t n;
    if ((d [0] & 0xf0) == 0x80)
        n = d [0] & 0x0f;
    else
    if (d [0] == 0xde && size >= 3) {
        n = s_be (d + 1, 2);
        pos = 3;
    }
    else
    if (d [0] == 0xdf && size >= 5) {
        n = s_be (d + 1, 4);
        pos = 5;
    }
    else
        return 0;
    uint64_t budget = DQ_PROTO_VALUES_MAX;
    for (uint64_t i = 0; i < n && pos < size; i++) {
        //  Key "rid" as a fixstr, then a positive integer.
        if (pos + 4 <= size && d [pos] == 0xa3 && memcmp (d + pos + 1, "rid", 3) == 0) {
            pos += 4;
            if (pos >= size)
                return 0;
            uint8_t b = d [pos];
            if (b <= 0x7f)
                return b;
            int len = b == 0xcc? 1: b == 0xcd? 2: b == 0xce? 4: b == 0xcf? 8: 0;
            if (!len || pos + 1 + (size_t) len > size)
                return 0;
            return s_be (d + pos + 1, len);
        }
        if (s_walk (d, size, &pos, 1, &budget) || s_walk (d, size, &pos, 1, &budget))
            return 0;
    }
    return 0;
}

static dq_msg_t *
s_decode (const void *sig, size_t sig_size, const void *cmd, size_t cmd_size,
          const void *body, size_t body_size, s_priv_t *priv,
          dq_err_t *err, char *reason, uint64_t *req_rid)
{
    if (req_rid)
        *req_rid = 0;
    s_dec_t d = { .err = DQ_OK, .reason = reason };
    dq_msg_t *self = NULL;
    if (reason)
        reason [0] = 0;
    if (sig_size != DQ_PROTO_SIGNATURE_SIZE
    ||  memcmp (sig, DQ_PROTO_SIGNATURE, 2) != 0) {
        s_fail (&d, DQ_ERR_PROTOCOL, "not a dagq message (bad signature)%s", "");
        goto fail;
    }
    if (((const uint8_t *) sig) [2] != DQ_PROTO_VERSION) {
        s_fail (&d, DQ_ERR_PROTOCOL, "unsupported protocol version (this side speaks 1)%s", "");
        goto fail;
    }
    dq_cmd_t c = s_cmd_parse (cmd, cmd_size);
    if (c == DQ_CMD_NONE) {
        char name [40];
        size_t n = 0;
        for (size_t i = 0; i < cmd_size && n < 32; i++) {
            char ch = ((const char *) cmd) [i];
            name [n++] = (ch >= 'A' && ch <= 'Z') || ch == '_'? ch: '?';
        }
        name [n] = 0;
        s_fail (&d, DQ_ERR_PROTOCOL, "unknown command '%s'", name);
        goto fail;
    }
    if (body_size > DQ_PROTO_BODY_MAX) {
        s_fail (&d, DQ_ERR_TOO_BIG, "message body over the size limit%s", "");
        goto fail;
    }
    size_t pos = 0;
    uint64_t budget = DQ_PROTO_VALUES_MAX;
    if (s_walk (body, body_size, &pos, 0, &budget) || pos != body_size) {
        s_fail (&d, DQ_ERR_INVALID, "body is not one well-formed msgpack value%s", "");
        goto fail;
    }
    self = calloc (1, sizeof *self);
    if (!self) {
        s_fail (&d, DQ_ERR_INTERNAL, "out of memory%s", "");
        goto fail;
    }
    self->cmd = c;
    self->priv_ = priv;
    //  The first chunk, sized from the body, holds most messages whole.
    size_t chunk = 512 + body_size / 2;
    priv->arena.next = chunk > (1u << 20)? (1u << 20): chunk;
    d.arena = &priv->arena;
    d.data = body;
    d.size = body_size;
    s_val_t root;
    if (s_next (&d, &root))
        goto fail;
    if (s_read_map (&d, &root, "body", s_msg_field, self)
    ||  s_check (&d, self))
        goto fail;
    *err = DQ_OK;
    return self;
fail:
    *err = d.err;
    if (req_rid && sig_size == DQ_PROTO_SIGNATURE_SIZE
    &&  memcmp (sig, DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE) == 0)
        *req_rid = s_peek_rid (body, body_size);
    if (self)
        dq_msg_destroy (&self);
    else {
        if (priv->have_frame)
            zmq_msg_close (&priv->frame);
        free (priv->copy);
        free (priv);
    }
    return NULL;
}

dq_msg_t *
dq_msg_decode (const void *sig, size_t sig_size, const void *cmd, size_t cmd_size,
               const void *body, size_t body_size, dq_err_t *err, char *reason)
{
    s_priv_t *priv = calloc (1, sizeof *priv);
    if (!priv) {
        *err = DQ_ERR_INTERNAL;
        return NULL;
    }
    //  Strings and binaries point into the body: keep our own copy.
    if (body_size <= DQ_PROTO_BODY_MAX) {
        priv->copy = malloc (body_size? body_size: 1);
        if (!priv->copy) {
            free (priv);
            *err = DQ_ERR_INTERNAL;
            return NULL;
        }
        if (body_size)          //  body may be NULL when empty
            memcpy (priv->copy, body, body_size);
    }
    return s_decode (sig, sig_size, cmd, cmd_size, priv->copy, body_size,
                     priv, err, reason, NULL);
}

const char *
dq_msg_peer_key (const dq_msg_t *self)
{
    s_priv_t *priv = self->priv_;
    if (!priv || !priv->have_frame)
        return NULL;
    //  libzmq keeps the ZAP handler's user id as a property of each frame.
    const char *key = zmq_msg_gets (&priv->frame, "User-Id");
    return key && *key? key: NULL;
}

void
dq_msg_destroy (dq_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_msg_t *self = *self_p;
    s_priv_t *priv = self->priv_;
    if (priv) {
        free (priv->infos);
        dq_msg_destroy (&priv->pages);
        s_arena_free (&priv->arena);
        if (priv->have_frame)
            zmq_msg_close (&priv->frame);
        free (priv->copy);
        free (priv);
    }
    free (self);
    *self_p = NULL;
}

int
dq_msg_append_infos (dq_msg_t *self, dq_msg_t **page_p)
{
    dq_msg_t *page = *page_p;
    *page_p = NULL;
    if (page && page->next_offset && page->next_offset <= self->next_offset) {
        dq_msg_destroy (&page);
        return DQ_ERR_PROTOCOL;
    }
    s_priv_t *priv = self->priv_;
    s_priv_t *page_priv = page? page->priv_: NULL;
    size_t n = (size_t) self->ninfos + (page? page->ninfos: 0);
    dq_jobinfo_t *infos = priv && page_priv && n <= UINT32_MAX
                        ? realloc (priv->infos, (n + 1) * sizeof *infos): NULL;
    if (!infos) {
        dq_msg_destroy (&page);
        return DQ_ERR_INTERNAL;
    }
    //  The first append copies self's own list out of its arena.
    if (!priv->infos && self->ninfos)
        memcpy (infos, self->infos, self->ninfos * sizeof *infos);
    if (page->ninfos)
        memcpy (infos + self->ninfos, page->infos, page->ninfos * sizeof *infos);
    priv->infos = infos;
    self->infos = infos;
    self->ninfos = (uint32_t) n;
    self->next_offset = page->next_offset;
    //  Newest first: page keeps the pages appended before it.
    page_priv->pages = priv->pages;
    priv->pages = page;
    return DQ_OK;
}

//  Drain the rest of a multipart message we will not use.
static void
s_drain (void *sock)
{
    int more = 0;
    size_t len = sizeof more;
    while (zmq_getsockopt (sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t f;
        zmq_msg_init (&f);
        if (zmq_msg_recv (&f, sock, 0) == -1) {
            zmq_msg_close (&f);
            break;
        }
        zmq_msg_close (&f);
        len = sizeof more;
    }
}

static bool
s_more (void *sock)
{
    int more = 0;
    size_t len = sizeof more;
    return zmq_getsockopt (sock, ZMQ_RCVMORE, &more, &len) == 0 && more;
}

dq_msg_t *
dq_msg_recv (void *sock, void *routing_id, size_t *routing_id_size,
             int flags, dq_err_t *err, char *reason)
{
    return dq_msg_recv_rid (sock, routing_id, routing_id_size, flags, err,
                            reason, NULL);
}

dq_msg_t *
dq_msg_recv_rid (void *sock, void *routing_id, size_t *routing_id_size,
                 int flags, dq_err_t *err, char *reason, uint64_t *req_rid)
{
    if (req_rid)
        *req_rid = 0;
    *err = DQ_OK;
    if (reason)
        reason [0] = 0;
    if (routing_id) {
        int n = zmq_recv (sock, routing_id, 255, flags);
        if (n == -1)
            return NULL;
        *routing_id_size = (size_t) (n > 255? 255: n);
        if (!s_more (sock)) {
            *err = DQ_ERR_PROTOCOL;
            if (reason)
                snprintf (reason, 200, "empty message");
            return NULL;
        }
        flags &= ~ZMQ_DONTWAIT;     //  the rest of a started message is there
    }
    zmq_msg_t f [3];
    int nf = 0;
    for (nf = 0; nf < 3; nf++) {
        zmq_msg_init (&f [nf]);
        //  Inside a started message (after a frame or the routing id) the
        //  rest is already there: a signal must not make us leave it
        //  half read, or its next frame would pass for a new message.
        bool started = nf > 0 || routing_id;
        int rc;
        do
            rc = zmq_msg_recv (&f [nf], sock, nf == 0? flags: 0);
        while (rc == -1 && started && errno == EINTR);
        if (rc == -1) {
            zmq_msg_close (&f [nf]);
            for (int i = 0; i < nf; i++)
                zmq_msg_close (&f [i]);
            if (started)
                s_drain (sock);
            return NULL;            //  nothing (EAGAIN / EINTR)
        }
        flags &= ~ZMQ_DONTWAIT;
        if (nf < 2 && !zmq_msg_more (&f [nf])) {
            nf++;
            break;
        }
    }
    if (nf < 3 || zmq_msg_more (&f [2])) {
        s_drain (sock);
        for (int i = 0; i < nf; i++)
            zmq_msg_close (&f [i]);
        *err = DQ_ERR_PROTOCOL;
        if (reason)
            snprintf (reason, 200, "a dagq message has exactly 3 frames: "
                      "signature, command, body");
        return NULL;
    }
    s_priv_t *priv = calloc (1, sizeof *priv);
    if (!priv) {
        for (int i = 0; i < 3; i++)
            zmq_msg_close (&f [i]);
        *err = DQ_ERR_INTERNAL;
        return NULL;
    }
    priv->frame = f [2];            //  the message keeps the body frame
    priv->have_frame = true;
    dq_msg_t *msg = s_decode (zmq_msg_data (&f [0]), zmq_msg_size (&f [0]),
                              zmq_msg_data (&f [1]), zmq_msg_size (&f [1]),
                              zmq_msg_data (&priv->frame), zmq_msg_size (&priv->frame),
                              priv, err, reason, req_rid);
    zmq_msg_close (&f [0]);
    zmq_msg_close (&f [1]);
    return msg;
}

//  ---------------------------------------------------------------------------
//  Events

static void
s_emit_event (s_w_t *w, const void *item)
{
    const dq_event_t *e = item;
    s_w_str (w, "kind", e->kind);
    s_w_str (w, "id", e->id);
    if (s_w_field (w, "state"))
        msgpack_pack_int (w->pk, e->state);
    s_w_str (w, "type", e->type);
    s_w_str (w, "dag_id", e->dag_id);
    s_w_u64 (w, "attempt", e->attempt);
    s_w_u64 (w, "at_ms", e->at_ms);
    s_w_u64 (w, "latency_us", e->latency_us);
}

int
dq_event_send (const dq_event_t *ev, void *pub, int flags)
{
    if (!ev->kind || !ev->id)
        return -1;
    //  "kind id state", built by hand: one event per finished job.
    char topic [600];
    const char *parts [3] = { ev->kind, ev->id, dq_state_str (ev->state) };
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        size_t len = strlen (parts [i]);
        if (n + len + 1 >= sizeof topic)
            return -1;
        if (i)
            topic [n++] = ' ';
        memcpy (topic + n, parts [i], len);
        n += len;
    }
    char small [256];
    s_buf_t buf = { small, 0, sizeof small };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &buf, s_buf_write_event);
    bool too_big = false;
    s_pack_map (&pk, s_emit_event, ev, &too_big);
    int rc = -1;
    if (buf.data
    &&  !too_big
    &&  zmq_send (pub, topic, n, ZMQ_SNDMORE | flags) != -1
    &&  zmq_send (pub, buf.data, buf.size, flags) != -1)
        rc = 0;
    if (buf.data != small)
        free (buf.data);
    return rc;
}

int
dq_event_decode (const void *topic, size_t topic_size,
                 const void *body, size_t body_size,
                 dq_event_t *ev, char **strbuf)
{
    (void) topic;
    (void) topic_size;
    memset (ev, 0, sizeof *ev);
    *strbuf = NULL;
    size_t pos = 0;
    uint64_t budget = DQ_PROTO_VALUES_MAX;
    if (body_size > DQ_PROTO_BODY_MAX || s_walk (body, body_size, &pos, 0, &budget)
    ||  pos != body_size)
        return -1;
    s_dec_t d = { .data = body, .size = body_size };
    s_val_t map;
    int rc = -1;
    if (s_next (&d, &map) || map.kind != S_MAP)
        goto done;
    //  Strings are copied into one buffer the caller frees.
    char *buf = malloc (body_size + 8);
    if (!buf)
        goto done;
    *strbuf = buf;
    char *p = buf;
    for (uint32_t i = 0; i < map.n; i++) {
        s_val_t key, val;
        const s_val_t *k = &key, *v = &val;
        if (s_next (&d, &key) || key.kind != S_STR || s_next (&d, &val))
            goto done;
        if (v->kind == S_STR) {
            const char **dst = KEY ("kind")? &ev->kind: KEY ("id")? &ev->id:
                               KEY ("type")? &ev->type: KEY ("dag_id")? &ev->dag_id: NULL;
            if (dst) {
                memcpy (p, v->ptr, v->n);
                p [v->n] = 0;
                *dst = p;
                p += v->n + 1;
            }
        }
        else
        if (v->kind == S_UINT) {
            if (KEY ("state") && v->u < DQ_STATE_COUNT_) ev->state = (int) v->u;
            if (KEY ("attempt")) ev->attempt = (uint32_t) v->u;
            if (KEY ("at_ms")) ev->at_ms = v->u;
            if (KEY ("latency_us")) ev->latency_us = v->u;
        }
        else
        if (s_skip (&d, v))
            goto done;
    }
    rc = (ev->kind && ev->id)? 0: -1;
done:
    if (rc) {
        //  On failure the caller gets nothing to free.
        free (*strbuf);
        *strbuf = NULL;
        memset (ev, 0, sizeof *ev);
    }
    return rc;
}
