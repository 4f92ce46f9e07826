/*  dq_dagdoc.c - parse and validate a DAG document (see dq_dagdoc.h).

    The document is never loaded as one jansson tree: for a million jobs
    that alone takes gigabytes. A small scanner walks the top-level object
    and the jobs array, finding the byte range of each value, and jansson
    parses one value at a time (rejecting duplicate keys), freed before the
    next. Pass one reads and checks every job's fields and indexes the local
    ids in an open-addressing hash; pass two resolves each depends_on entry
    against that index, or accepts it as the id of an existing job. Strings,
    payloads and dependency arrays live in one arena owned by the document,
    so a million-job document costs about 350 bytes per job and a few
    hundred allocations that outlive the parse.

    Not done here: cycle detection (the broker does it, naming the cycle)
    and checking that existing job ids exist (the broker answers not_found).
*/
#include "dq_dagdoc.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DQ_DAGDOC_TEXT_MAX      256             //  id, key, name, content_type
#define DQ_DAGDOC_JOBID_MAX     64              //  ids the broker issues
#define DQ_DAGDOC_TIMEOUT_MAX_S 4294967.0       //  timeout_ms is 32-bit
#define DQ_DAGDOC_BLOCK_SIZE    (1024 * 1024)   //  arena block
#define DQ_DAGDOC_BIG_ITEM      (64 * 1024)     //  gets a block of its own

//  Arena block. Big items get a block of their own, linked after the head
//  so the head keeps filling up.
typedef struct s_block_t_ {
    struct s_block_t_ *next;
    size_t used;                //  bytes handed out
    size_t size;                //  bytes in data
    char *data;                 //  points at the block's tail, or adopted
    bool adopted;               //  data came from malloc: free it too
} s_block_t;

struct _dq_dagdoc_t {
    dq_jobspec_t *jobs;         //  njobs specs (malloc)
    uint32_t njobs;
    const char *name;           //  in the arena; "" when absent
    const char *key;            //  in the arena, or NULL
    s_block_t *arena;           //  everything else
};

//  Parse state.
typedef struct {
    dq_dagdoc_t *doc;
    char *err;                  //  caller's buffer, or NULL
    size_t err_size;
    uint32_t max_jobs;
    uint32_t max_deps;
    uint32_t *table;            //  local id hash: job index + 1, 0 = empty
    size_t mask;                //  table size - 1 (a power of two)
    bool in_job;                //  the fields below are set
    uint32_t job;               //  index of the job being read
    const char *job_id;         //  its local id, or NULL before it is known
    char where [400];           //  "jobs[3] (id 'ocr')", made by s_where
} s_ctx_t;

static const char *s_job_fields [] = {
    "id", "type", "payload", "payload_text", "payload_base64", "priority",
    "attempts", "timeout", "delay", "key", "content_type", "depends_on", NULL
};
#define S_JOB_FIELDS_TEXT "id, type, payload, payload_text, payload_base64, " \
    "priority, attempts, timeout, delay, key, content_type, depends_on"

//  ---------------------------------------------------------------------------
//  Arena

static void *
s_alloc (dq_dagdoc_t *self, size_t size)
{
    size = (size + 7) & ~(size_t) 7;
    if (size == 0)
        size = 8;
    s_block_t *head = self->arena;
    if (head && head->size - head->used >= size) {
        void *p = head->data + head->used;
        head->used += size;
        return p;
    }
    bool big = size >= DQ_DAGDOC_BIG_ITEM;
    size_t bsize = big? size: DQ_DAGDOC_BLOCK_SIZE;
    s_block_t *block = malloc (sizeof (s_block_t) + bsize);
    if (!block)
        return NULL;
    block->data = (char *) (block + 1);
    block->size = bsize;
    block->used = size;
    block->adopted = false;
    if (big && head) {
        block->next = head->next;
        head->next = block;
    }
    else {
        block->next = head;
        self->arena = block;
    }
    return block->data;
}

//  Take ownership of a malloc'd buffer (freed with the document).
static int
s_adopt (dq_dagdoc_t *self, char *data, size_t size)
{
    s_block_t *block = malloc (sizeof (s_block_t));
    if (!block)
        return -1;
    block->data = data;
    block->size = block->used = size;
    block->adopted = true;
    if (self->arena) {
        block->next = self->arena->next;
        self->arena->next = block;
    }
    else {
        block->next = NULL;
        self->arena = block;
    }
    return 0;
}

static char *
s_strdup (dq_dagdoc_t *self, const char *s, size_t len)
{
    char *copy = s_alloc (self, len + 1);
    if (copy) {
        memcpy (copy, s, len);
        copy [len] = 0;
    }
    return copy;
}

//  ---------------------------------------------------------------------------
//  Messages

static int
s_error (s_ctx_t *ctx, const char *fmt, ...)
{
    if (ctx->err && ctx->err_size) {
        va_list args;
        va_start (args, fmt);
        vsnprintf (ctx->err, ctx->err_size, fmt, args);
        va_end (args);
    }
    return -1;
}

//  A short printable form of user text for messages: at most 64 bytes,
//  control characters as '?', "..." when cut (never inside a UTF-8 char).
static const char *
s_quote (const char *s, char *buf, size_t size)
{
    size_t max = size - 4 < 64? size - 4: 64;
    size_t i = 0;
    for (; s [i] && i < max; i++)
        buf [i] = (unsigned char) s [i] < 0x20 || s [i] == 0x7f? '?': s [i];
    if (s [i]) {
        //  Cut before the character s [i] belongs to.
        while (i > 0 && ((unsigned char) s [i] & 0xc0) == 0x80)
            i--;
        memcpy (buf + i, "...", 3);
        i += 3;
    }
    buf [i] = 0;
    return buf;
}

static const char *
s_jtype (const json_t *v)
{
    switch (json_typeof (v)) {
        case JSON_OBJECT:  return "an object";
        case JSON_ARRAY:   return "an array";
        case JSON_STRING:  return "a string";
        case JSON_INTEGER: return "an integer";
        case JSON_REAL:    return "a fractional number";
        case JSON_TRUE:
        case JSON_FALSE:   return "a boolean";
        default:           return "null";
    }
}

//  Note which job is being read; its description is only formatted when a
//  message needs it (s_where), which keeps a million-job parse cheap.
static void
s_set_where (s_ctx_t *ctx, uint32_t i, const char *id)
{
    ctx->in_job = true;
    ctx->job = i;
    ctx->job_id = id;
}

static const char *
s_where (s_ctx_t *ctx)
{
    if (!ctx->in_job)
        ctx->where [0] = 0;
    else
    if (ctx->job_id) {
        char q [80];
        snprintf (ctx->where, sizeof ctx->where, "jobs[%u] (id '%s')", ctx->job,
                  s_quote (ctx->job_id, q, sizeof q));
    }
    else
        snprintf (ctx->where, sizeof ctx->where, "jobs[%u]", ctx->job);
    return ctx->where;
}

//  A text field: non-empty string of at most DQ_DAGDOC_TEXT_MAX bytes with
//  no control characters. what names it in messages ("'key'").
static int
s_text (s_ctx_t *ctx, const json_t *v, const char *what, const char **out)
{
    const char *problem = NULL;
    char detail [80];
    const char *s = json_string_value (v);
    size_t len = json_string_length (v);
    if (!json_is_string (v)) {
        snprintf (detail, sizeof detail, "must be a string, not %s", s_jtype (v));
        problem = detail;
    }
    else
    if (len == 0)
        problem = "must not be empty";
    else
    if (len > DQ_DAGDOC_TEXT_MAX) {
        snprintf (detail, sizeof detail, "is %zu bytes, over the limit of %d",
                  len, DQ_DAGDOC_TEXT_MAX);
        problem = detail;
    }
    else
    for (size_t i = 0; i < len && !problem; i++)
        if ((unsigned char) s [i] < 0x20 || s [i] == 0x7f)
            problem = "must not contain control characters";
    if (problem) {
        const char *where = s_where (ctx);
        return s_error (ctx, "%s%s%s %s", where, *where? ": ": "", what, problem);
    }
    *out = s_strdup (ctx->doc, s, len);
    if (!*out)
        return s_error (ctx, "out of memory");
    return 0;
}

//  ---------------------------------------------------------------------------
//  Local id index: FNV-1a, linear probing, at most half full.

static uint64_t
s_hash (const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char) *s) * 0x100000001b3ULL;
    return h;
}

//  Index of the job with local id name, or -1.
static int64_t
s_lookup (const s_ctx_t *ctx, const char *name)
{
    size_t slot = (size_t) s_hash (name) & ctx->mask;
    while (ctx->table [slot]) {
        uint32_t i = ctx->table [slot] - 1;
        if (strcmp (ctx->doc->jobs [i].name, name) == 0)
            return i;
        slot = (slot + 1) & ctx->mask;
    }
    return -1;
}

//  Insert job i; returns the index of an earlier job with the same id, or -1.
static int64_t
s_insert (s_ctx_t *ctx, uint32_t i)
{
    const char *name = ctx->doc->jobs [i].name;
    size_t slot = (size_t) s_hash (name) & ctx->mask;
    while (ctx->table [slot]) {
        uint32_t j = ctx->table [slot] - 1;
        if (strcmp (ctx->doc->jobs [j].name, name) == 0)
            return j;
        slot = (slot + 1) & ctx->mask;
    }
    ctx->table [slot] = i + 1;
    return -1;
}

//  ---------------------------------------------------------------------------
//  Payloads

typedef struct {
    char *data;
    size_t size, cap;
    bool over;                  //  passed DQ_PROTO_PAYLOAD_MAX: stop
} s_buf_t;

static void
s_put (s_buf_t *b, const char *s, size_t n)
{
    if (b->over)
        return;
    if (b->size + n > DQ_PROTO_PAYLOAD_MAX) {
        b->over = true;
        return;
    }
    if (b->size + n > b->cap) {
        size_t cap = b->cap? b->cap * 2: 64;
        while (cap < b->size + n)
            cap *= 2;
        char *data = realloc (b->data, cap);
        if (!data) {
            b->over = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy (b->data + b->size, s, n);
    b->size += n;
}

static void
s_put_string (s_buf_t *b, const char *s, size_t len)
{
    static const char hex [] = "0123456789abcdef";
    s_put (b, "\"", 1);
    size_t run = 0;             //  start of bytes copied as they are
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s [i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        s_put (b, s + run, i - run);
        run = i + 1;
        char esc [7] = { '\\', 0 };
        size_t n = 2;
        switch (c) {
            case '"':  esc [1] = '"'; break;
            case '\\': esc [1] = '\\'; break;
            case '\b': esc [1] = 'b'; break;
            case '\f': esc [1] = 'f'; break;
            case '\n': esc [1] = 'n'; break;
            case '\r': esc [1] = 'r'; break;
            case '\t': esc [1] = 't'; break;
            default:
                memcpy (esc + 1, "u00", 3);
                esc [4] = hex [c >> 4];
                esc [5] = hex [c & 15];
                n = 6;
        }
        s_put (b, esc, n);
    }
    s_put (b, s + run, len - run);
    s_put (b, "\"", 1);
}

//  Shortest %g form that reads back as the same double, keeping a '.' or
//  exponent so a real stays a real (jansson would print 0.1 as
//  0.10000000000000001).
static void
s_put_real (s_buf_t *b, double v)
{
    char text [40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf (text, sizeof text, "%.*g", precision, v);
        if (strtod (text, NULL) == v)
            break;
    }
    s_put (b, text, strlen (text));
    if (!strpbrk (text, ".eEn"))
        s_put (b, ".0", 2);
}

//  Compact JSON text of v; keys keep their document order.
static void
s_dump (s_buf_t *b, const json_t *v)
{
    char text [32];
    switch (json_typeof (v)) {
        case JSON_OBJECT: {
            s_put (b, "{", 1);
            const char *key;
            json_t *value;
            bool first = true;
            json_object_foreach ((json_t *) v, key, value) {
                if (!first)
                    s_put (b, ",", 1);
                first = false;
                s_put_string (b, key, strlen (key));
                s_put (b, ":", 1);
                s_dump (b, value);
                if (b->over)
                    return;
            }
            s_put (b, "}", 1);
            break;
        }
        case JSON_ARRAY: {
            s_put (b, "[", 1);
            for (size_t i = 0; i < json_array_size (v); i++) {
                if (i)
                    s_put (b, ",", 1);
                s_dump (b, json_array_get (v, i));
                if (b->over)
                    return;
            }
            s_put (b, "]", 1);
            break;
        }
        case JSON_STRING:
            s_put_string (b, json_string_value (v), json_string_length (v));
            break;
        case JSON_INTEGER:
            snprintf (text, sizeof text, "%" JSON_INTEGER_FORMAT, json_integer_value (v));
            s_put (b, text, strlen (text));
            break;
        case JSON_REAL:
            s_put_real (b, json_real_value (v));
            break;
        case JSON_TRUE:  s_put (b, "true", 4); break;
        case JSON_FALSE: s_put (b, "false", 5); break;
        default:         s_put (b, "null", 4); break;
    }
}

static int
s_b64_value (unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

//  Standard alphabet; '=' padding optional but, when present, correct.
static int
s_base64 (s_ctx_t *ctx, dq_jobspec_t *spec, const char *s, size_t len)
{
    size_t pad = 0;
    while (pad < len && pad < 2 && s [len - 1 - pad] == '=')
        pad++;
    size_t n = len - pad;       //  data characters
    for (size_t i = 0; i < n; i++)
        if (s_b64_value ((unsigned char) s [i]) < 0) {
            char c = s [i];
            if (c == '=')
                return s_error (ctx, "%s: 'payload_base64' is not valid base64: "
                                "'=' padding at offset %zu is not at the end",
                                s_where (ctx), i);
            if ((unsigned char) c < 0x20 || (unsigned char) c >= 0x7f)
                return s_error (ctx, "%s: 'payload_base64' is not valid base64: "
                                "byte 0x%02x at offset %zu", s_where (ctx),
                                (unsigned char) c, i);
            return s_error (ctx, "%s: 'payload_base64' is not valid base64: "
                            "character '%c' at offset %zu", s_where (ctx), c, i);
        }
    if (n % 4 == 1 || (pad && (n + pad) % 4 != 0))
        return s_error (ctx, "%s: 'payload_base64' is not valid base64: "
                        "its length (%zu) is impossible", s_where (ctx), len);
    size_t size = n / 4 * 3 + (n % 4? n % 4 - 1: 0);
    if (size > DQ_PROTO_PAYLOAD_MAX)
        return s_error (ctx, "%s: payload is %zu bytes, over the limit of %u",
                        s_where (ctx), size, DQ_PROTO_PAYLOAD_MAX);
    unsigned char *out = s_alloc (ctx->doc, size);
    if (!out)
        return s_error (ctx, "out of memory");
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 6) | (uint32_t) s_b64_value ((unsigned char) s [i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out [o++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    spec->payload = out;
    spec->payload_size = o;
    return 0;
}

static int
s_payload (s_ctx_t *ctx, dq_jobspec_t *spec, const json_t *job)
{
    json_t *json = json_object_get (job, "payload");
    json_t *text = json_object_get (job, "payload_text");
    json_t *b64 = json_object_get (job, "payload_base64");
    if ((json != NULL) + (text != NULL) + (b64 != NULL) > 1)
        return s_error (ctx, "%s: give at most one of 'payload', 'payload_text' "
                        "and 'payload_base64'", s_where (ctx));
    if (json) {
        s_buf_t b = { NULL, 0, 0, false };
        s_dump (&b, json);
        if (b.over) {
            free (b.data);
            return s_error (ctx, "%s: 'payload' is over the limit of %u bytes "
                            "as JSON text", s_where (ctx), DQ_PROTO_PAYLOAD_MAX);
        }
        //  Small texts are copied into the arena; big ones are adopted.
        if (b.size < DQ_DAGDOC_BIG_ITEM) {
            char *copy = s_alloc (ctx->doc, b.size);
            if (copy && b.size)
                memcpy (copy, b.data, b.size);
            free (b.data);
            if (!copy)
                return s_error (ctx, "out of memory");
            spec->payload = copy;
        }
        else {
            if (s_adopt (ctx->doc, b.data, b.size)) {
                free (b.data);
                return s_error (ctx, "out of memory");
            }
            spec->payload = b.data;
        }
        spec->payload_size = b.size;
        return 0;
    }
    if (text) {
        if (!json_is_string (text))
            return s_error (ctx, "%s: 'payload_text' must be a string, not %s",
                            s_where (ctx), s_jtype (text));
        size_t len = json_string_length (text);
        if (len > DQ_PROTO_PAYLOAD_MAX)
            return s_error (ctx, "%s: payload is %zu bytes, over the limit of %u",
                            s_where (ctx), len, DQ_PROTO_PAYLOAD_MAX);
        spec->payload = s_strdup (ctx->doc, json_string_value (text), len);
        if (!spec->payload)
            return s_error (ctx, "out of memory");
        spec->payload_size = len;
        return 0;
    }
    if (b64) {
        if (!json_is_string (b64))
            return s_error (ctx, "%s: 'payload_base64' must be a string, not %s",
                            s_where (ctx), s_jtype (b64));
        return s_base64 (ctx, spec, json_string_value (b64), json_string_length (b64));
    }
    return 0;
}

//  ---------------------------------------------------------------------------
//  Job fields

//  Seconds (integer or fractional) in [0, max] to milliseconds. A positive
//  value below 1 ms becomes 1 ms rather than "none".
static int
s_seconds (s_ctx_t *ctx, const json_t *v, const char *field, double max,
           uint64_t *ms)
{
    if (!json_is_number (v))
        return s_error (ctx, "%s: '%s' must be a number of seconds, not %s",
                        s_where (ctx), field, s_jtype (v));
    double s = json_number_value (v);
    if (!(s >= 0 && s <= max))
        return s_error (ctx, "%s: '%s' must be from 0 to %.0f seconds",
                        s_where (ctx), field, max);
    *ms = (uint64_t) (s * 1000.0 + 0.5);   //  s >= 0: rounds to nearest
    if (s > 0 && *ms == 0)
        *ms = 1;
    return 0;
}

static bool
s_type_ok (const char *t, size_t len)
{
    if (len == 0 || len > DQ_PROTO_TYPE_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = t [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':'
           || c == '-'))
            return false;
    }
    return true;
}

//  One depends_on entry: a string, or {"id": ..., "on_failure": ...}. The
//  name goes into dep->id with idx -2 ("unresolved") for pass two.
//  "jobs[3] (id 'ocr'): depends_on[1]", for messages.
static const char *
s_dep_where (s_ctx_t *ctx, size_t k, char *buf, size_t size)
{
    snprintf (buf, size, "%s: depends_on[%zu]", s_where (ctx), k);
    return buf;
}

#define S_AT s_dep_where (ctx, k, where, sizeof where)
static int
s_dep (s_ctx_t *ctx, dq_dep_t *dep, const json_t *v, size_t k)
{
    char where [440];
    const json_t *id = v;
    dep->idx = -2;
    dep->run_on_failure = false;
    if (json_is_object (v)) {
        const char *key;
        json_t *value;
        json_object_foreach ((json_t *) v, key, value) {
            if (strcmp (key, "id") && strcmp (key, "on_failure")) {
                char q [80];
                return s_error (ctx, "%s: unknown field '%s' (expected id, "
                                "on_failure)", S_AT, s_quote (key, q, sizeof q));
            }
        }
        id = json_object_get (v, "id");
        if (!id)
            return s_error (ctx, "%s: 'id' is required", S_AT);
        json_t *policy = json_object_get (v, "on_failure");
        if (policy) {
            const char *p = json_string_value (policy);
            if (p && strcmp (p, "run") == 0 && json_string_length (policy) == 3)
                dep->run_on_failure = true;
            else
            if (!(p && strcmp (p, "skip") == 0 && json_string_length (policy) == 4))
                return s_error (ctx, "%s: 'on_failure' must be \"run\" or \"skip\"",
                                S_AT);
        }
        if (!json_is_string (id))
            return s_error (ctx, "%s: 'id' must be a string, not %s", S_AT,
                            s_jtype (id));
    }
    else
    if (!json_is_string (v))
        return s_error (ctx, "%s: must be a job id (string) or an object "
                        "{\"id\": ..., \"on_failure\": \"run\"|\"skip\"}, not %s",
                        S_AT, s_jtype (v));
    size_t len = json_string_length (id);
    const char *s = json_string_value (id);
    if (len == 0 || len > DQ_DAGDOC_TEXT_MAX || strlen (s) != len)
        return s_error (ctx, "%s: a job id must be 1 to %d bytes", S_AT,
                        DQ_DAGDOC_TEXT_MAX);
    dep->id = s_strdup (ctx->doc, s, len);
    if (!dep->id)
        return s_error (ctx, "out of memory");
    return 0;
}
#undef S_AT

static int
s_depends_on (s_ctx_t *ctx, dq_jobspec_t *spec, const json_t *v)
{
    if (!json_is_array (v))
        return s_error (ctx, "%s: 'depends_on' must be an array, not %s",
                        s_where (ctx), s_jtype (v));
    size_t n = json_array_size (v);
    if (n > ctx->max_deps)
        return s_error (ctx, "%s: 'depends_on' has %zu entries, over the limit "
                        "of %u", s_where (ctx), n, ctx->max_deps);
    if (n == 0)
        return 0;
    spec->deps = s_alloc (ctx->doc, n * sizeof (dq_dep_t));
    if (!spec->deps)
        return s_error (ctx, "out of memory");
    spec->ndeps = (uint32_t) n;
    for (size_t k = 0; k < n; k++)
        if (s_dep (ctx, &spec->deps [k], json_array_get (v, k), k))
            return -1;
    return 0;
}

//  Pass one over job i.
static int
s_job (s_ctx_t *ctx, uint32_t i, const json_t *job)
{
    dq_jobspec_t *spec = &ctx->doc->jobs [i];
    s_set_where (ctx, i, NULL);
    if (!json_is_object (job))
        return s_error (ctx, "%s: must be an object, not %s", s_where (ctx),
                        s_jtype (job));
    json_t *v = json_object_get (job, "id");
    if (!v)
        return s_error (ctx, "%s: 'id' is required", s_where (ctx));
    if (s_text (ctx, v, "'id'", &spec->name))
        return -1;
    s_set_where (ctx, i, spec->name);
    int64_t other = s_insert (ctx, i);
    if (other >= 0)
        return s_error (ctx, "%s: duplicate id (also jobs[%lld])", s_where (ctx),
                        (long long) other);

    const char *key;
    json_object_foreach ((json_t *) job, key, v) {
        bool known = false;
        for (int f = 0; s_job_fields [f] && !known; f++)
            known = strcmp (key, s_job_fields [f]) == 0;
        if (!known) {
            char q [80];
            return s_error (ctx, "%s: unknown field '%s' (expected "
                            S_JOB_FIELDS_TEXT ")", s_where (ctx),
                            s_quote (key, q, sizeof q));
        }
    }

    v = json_object_get (job, "type");
    if (!v)
        return s_error (ctx, "%s: 'type' is required", s_where (ctx));
    if (!json_is_string (v))
        return s_error (ctx, "%s: 'type' must be a string, not %s", s_where (ctx),
                        s_jtype (v));
    if (!s_type_ok (json_string_value (v), json_string_length (v))) {
        char q [80];
        return s_error (ctx, "%s: 'type' must be 1 to %d characters from "
                        "[A-Za-z0-9_.:-], not '%s'", s_where (ctx), DQ_PROTO_TYPE_MAX,
                        s_quote (json_string_value (v), q, sizeof q));
    }
    spec->type = s_strdup (ctx->doc, json_string_value (v), json_string_length (v));
    if (!spec->type)
        return s_error (ctx, "out of memory");

    if (s_payload (ctx, spec, job))
        return -1;

    if ((v = json_object_get (job, "priority"))) {
        if (!json_is_integer (v) || json_integer_value (v) < INT32_MIN
        ||  json_integer_value (v) > INT32_MAX)
            return s_error (ctx, "%s: 'priority' must be an integer from %d to %d",
                            s_where (ctx), INT32_MIN, INT32_MAX);
        spec->priority = (int32_t) json_integer_value (v);
    }
    if ((v = json_object_get (job, "attempts"))) {
        if (!json_is_integer (v) || json_integer_value (v) < 1
        ||  json_integer_value (v) > DQ_DAGDOC_ATTEMPTS_MAX)
            return s_error (ctx, "%s: 'attempts' must be an integer from 1 to %d",
                            s_where (ctx), DQ_DAGDOC_ATTEMPTS_MAX);
        spec->attempts = (uint32_t) json_integer_value (v);
    }
    uint64_t ms;
    if ((v = json_object_get (job, "timeout"))) {
        if (s_seconds (ctx, v, "timeout", DQ_DAGDOC_TIMEOUT_MAX_S, &ms))
            return -1;
        spec->timeout_ms = (uint32_t) ms;
    }
    if ((v = json_object_get (job, "delay"))) {
        if (s_seconds (ctx, v, "delay", DQ_DAGDOC_DELAY_MAX_S, &ms))
            return -1;
        spec->delay_ms = ms;
    }
    if ((v = json_object_get (job, "key"))
    &&  s_text (ctx, v, "'key'", &spec->key))
        return -1;
    if ((v = json_object_get (job, "content_type"))
    &&  s_text (ctx, v, "'content_type'", &spec->content_type))
        return -1;
    if ((v = json_object_get (job, "depends_on"))
    &&  s_depends_on (ctx, spec, v))
        return -1;
    return 0;
}

//  ---------------------------------------------------------------------------
//  Pass two: resolve dependencies

typedef struct {
    const char *id;
    uint32_t pos;               //  index in depends_on
} s_iddep_t;

static int
s_iddep_cmp (const void *a, const void *b)
{
    const s_iddep_t *x = a, *y = b;
    int c = strcmp (x->id, y->id);
    return c? c: (x->pos > y->pos) - (x->pos < y->pos);
}

static int
s_resolve (s_ctx_t *ctx)
{
    dq_dagdoc_t *doc = ctx->doc;
    //  seen [j] == i + 1 when job i already lists local job j, at seen_at [j].
    uint32_t *seen = calloc (doc->njobs, sizeof (uint32_t));
    uint32_t *seen_at = calloc (doc->njobs, sizeof (uint32_t));
    s_iddep_t *iddeps = calloc (ctx->max_deps? ctx->max_deps: 1, sizeof (s_iddep_t));
    int rc = 0;
    if (!seen || !seen_at || !iddeps) {
        rc = s_error (ctx, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < doc->njobs && rc == 0; i++) {
        dq_jobspec_t *spec = &doc->jobs [i];
        uint32_t niddeps = 0;
        for (uint32_t k = 0; k < spec->ndeps; k++) {
            dq_dep_t *dep = &spec->deps [k];
            int64_t j = s_lookup (ctx, dep->id);
            char q [80];
            if (j == i) {
                s_set_where (ctx, i, spec->name);
                rc = s_error (ctx, "%s: depends_on[%u]: a job cannot depend on "
                              "itself", s_where (ctx), k);
                break;
            }
            if (j >= 0) {
                if (seen [j] == i + 1) {
                    s_set_where (ctx, i, spec->name);
                    rc = s_error (ctx, "%s: depends_on[%u]: '%s' is already "
                                  "listed (depends_on[%u])", s_where (ctx), k,
                                  s_quote (dep->id, q, sizeof q), seen_at [j]);
                    break;
                }
                seen [j] = i + 1;
                seen_at [j] = k;
                dep->idx = (int32_t) j;
                dep->id = NULL;     //  local: the protocol wants idx alone
                continue;
            }
            if (!dq_dagdoc_is_job_id (dep->id)) {
                s_set_where (ctx, i, spec->name);
                rc = s_error (ctx, "%s: depends_on[%u]: unknown job '%s' "
                              "\xe2\x80\x94 not in this document and not a job id",
                              s_where (ctx), k, s_quote (dep->id, q, sizeof q));
                break;
            }
            dep->idx = -1;
            iddeps [niddeps].id = dep->id;
            iddeps [niddeps].pos = k;
            niddeps++;
        }
        if (rc || niddeps < 2)
            continue;
        qsort (iddeps, niddeps, sizeof (s_iddep_t), s_iddep_cmp);
        //  Report the duplicate that comes first in depends_on.
        uint32_t best = UINT32_MAX, first = 0;
        for (uint32_t d = 1; d < niddeps; d++)
            if (strcmp (iddeps [d].id, iddeps [d - 1].id) == 0) {
                uint32_t f = d - 1;
                while (f > 0 && strcmp (iddeps [f - 1].id, iddeps [d].id) == 0)
                    f--;
                if (iddeps [d].pos < best) {
                    best = iddeps [d].pos;
                    first = iddeps [f].pos;
                }
            }
        if (best != UINT32_MAX) {
            char q [80];
            s_set_where (ctx, i, spec->name);
            rc = s_error (ctx, "%s: depends_on[%u]: '%s' is already listed "
                          "(depends_on[%u])", s_where (ctx), best,
                          s_quote (spec->deps [best].id, q, sizeof q), first);
        }
    }
done:
    free (seen);
    free (seen_at);
    free (iddeps);
    return rc;
}

//  ---------------------------------------------------------------------------
//  Top level

bool
dq_dagdoc_is_job_id (const char *s)
{
    if (!s)
        return false;
    size_t len = strlen (s);
    if (len < 3 || len > DQ_DAGDOC_JOBID_MAX)
        return false;
    const char *dash = strrchr (s, '-');
    if (!dash || dash == s || dash [1] == 0)
        return false;
    for (const char *p = dash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    for (const char *p = s; p < dash; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
           || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'
           || *p == ':' || *p == '-'))
            return false;
    return true;
}

//  ---------------------------------------------------------------------------
//  Top level. The document is not loaded as one jansson tree (a million
//  jobs would take gigabytes): a scanner walks the top-level object and the
//  jobs array, finding the byte range of each value, and jansson parses one
//  value at a time: name, key, then each job, freed before the next.

typedef struct {
    const char *start;          //  the document
    size_t len;
} s_text_t;

typedef struct {
    size_t at, end;             //  byte range of a value
    bool found;
} s_range_t;

//  Line and column (1-based, columns in characters) of byte offset at.
static void
s_position (const s_text_t *t, size_t at, int *line, int *column)
{
    *line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < at && i < t->len; i++)
        if (t->start [i] == '\n') {
            (*line)++;
            line_start = i + 1;
        }
    *column = 1;
    for (size_t i = line_start; i < at && i < t->len; i++)
        *column += ((unsigned char) t->start [i] & 0xc0) != 0x80;
}

static int
s_syntax (s_ctx_t *ctx, const s_text_t *t, size_t at, const char *what)
{
    int line, column;
    s_position (t, at, &line, &column);
    return s_error (ctx, "invalid JSON at line %d, column %d: %s", line, column, what);
}

static size_t
s_ws (const s_text_t *t, size_t at)
{
    while (at < t->len && (t->start [at] == ' ' || t->start [at] == '\t'
                        || t->start [at] == '\n' || t->start [at] == '\r'))
        at++;
    return at;
}

//  Find the end of the value starting at *at: brackets matched (strings
//  respected), or a scalar up to the next delimiter. The value's own syntax
//  is left to jansson. Returns 0 and sets *end, or -1 with the error set.
static int
s_skip_value (s_ctx_t *ctx, const s_text_t *t, size_t at, size_t *end)
{
    char stack [2048];          //  jansson's own nesting limit
    size_t depth = 0;
    size_t i = at;
    if (i >= t->len)
        return s_syntax (ctx, t, i, "unexpected end of input");
    do {
        char c = t->start [i];
        if (c == '"') {
            for (i++; i < t->len && t->start [i] != '"'; i++)
                if (t->start [i] == '\\')
                    i++;
            if (i >= t->len)
                return s_syntax (ctx, t, t->len, "unexpected end of input in a string");
            i++;
        }
        else
        if (c == '{' || c == '[') {
            if (depth == sizeof stack)
                return s_syntax (ctx, t, i, "too deeply nested");
            stack [depth++] = c == '{'? '}': ']';
            i++;
        }
        else
        if (c == '}' || c == ']') {
            if (depth == 0 || stack [depth - 1] != c) {
                char what [40];
                snprintf (what, sizeof what, "unexpected '%c'", c);
                return s_syntax (ctx, t, i, what);
            }
            depth--;
            i++;
        }
        else
        if (depth == 0) {
            //  A scalar: up to a delimiter; jansson judges it.
            while (i < t->len && !strchr (",]} \t\r\n:", t->start [i]))
                i++;
            if (i == at)
                return s_syntax (ctx, t, i, "a value was expected");
        }
        else
            i++;
        if (depth > 0 && i >= t->len)
            return s_syntax (ctx, t, t->len, "unexpected end of input");
    } while (depth > 0);
    *end = i;
    return 0;
}

//  jansson's verdict on one value (any JSON type).
static json_t *
s_load (s_ctx_t *ctx, const s_text_t *t, size_t at, size_t end)
{
    json_error_t jerr;
    json_t *value = json_loadb (t->start + at, end - at,
                                JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!value) {
        size_t pos = (size_t) (jerr.position > 0? jerr.position - 1: 0);
        s_syntax (ctx, t, at + pos, jerr.text);
    }
    return value;
}

//  The top-level object: ranges of name, key and jobs.
static int
s_top (s_ctx_t *ctx, const s_text_t *t, s_range_t *name, s_range_t *key,
       s_range_t *jobs)
{
    size_t at = s_ws (t, 0);
    if (at >= t->len)
        return s_error (ctx, "the document is empty");
    if (t->start [at] != '{') {
        size_t end;
        if (s_skip_value (ctx, t, at, &end))
            return -1;
        json_t *v = s_load (ctx, t, at, end);
        if (!v)
            return -1;
        s_error (ctx, "the document must be a JSON object {\"name\": ..., "
                 "\"jobs\": [...]}, not %s", s_jtype (v));
        json_decref (v);
        return -1;
    }
    at = s_ws (t, at + 1);
    if (at < t->len && t->start [at] == '}')
        at++;
    else
    while (true) {
        if (at >= t->len)
            return s_syntax (ctx, t, at, "unexpected end of input");
        if (t->start [at] != '"')
            return s_syntax (ctx, t, at, "string or '}' expected");
        size_t end;
        if (s_skip_value (ctx, t, at, &end))
            return -1;
        json_t *k = s_load (ctx, t, at, end);
        if (!k)
            return -1;
        const char *field = json_string_value (k);
        s_range_t *slot = strcmp (field, "name") == 0? name
                        : strcmp (field, "key") == 0? key
                        : strcmp (field, "jobs") == 0? jobs: NULL;
        if (!slot || json_string_length (k) != strlen (field)) {
            char q [80];
            s_error (ctx, "unknown field '%s' at the top level (expected name, key, "
                     "jobs)", s_quote (field, q, sizeof q));
            json_decref (k);
            return -1;
        }
        json_decref (k);
        if (slot->found)
            return s_syntax (ctx, t, at, "duplicate object key");
        at = s_ws (t, end);
        if (at >= t->len || t->start [at] != ':')
            return s_syntax (ctx, t, at, "':' expected");
        at = s_ws (t, at + 1);
        if (s_skip_value (ctx, t, at, &end))
            return -1;
        slot->found = true;
        slot->at = at;
        slot->end = end;
        at = s_ws (t, end);
        if (at < t->len && t->start [at] == ',') {
            at = s_ws (t, at + 1);
            continue;
        }
        if (at < t->len && t->start [at] == '}') {
            at++;
            break;
        }
        return s_syntax (ctx, t, at, at < t->len? "',' or '}' expected"
                                                : "unexpected end of input");
    }
    at = s_ws (t, at);
    if (at < t->len)
        return s_syntax (ctx, t, at, "end of file expected");
    return 0;
}

//  Walk the jobs array. With parse false only count (and check the
//  structure); with parse true hand each job to s_job.
static int
s_jobs_walk (s_ctx_t *ctx, const s_text_t *t, const s_range_t *r, bool parse,
             size_t *count)
{
    size_t at = s_ws (t, r->at + 1);
    size_t n = 0;
    if (at < r->end && t->start [at] == ']')
        at++;
    else
    while (true) {
        size_t end;
        if (s_skip_value (ctx, t, at, &end))
            return -1;
        if (parse) {
            json_t *job = s_load (ctx, t, at, end);
            if (!job)
                return -1;
            int rc = s_job (ctx, (uint32_t) n, job);
            json_decref (job);
            if (rc)
                return -1;
        }
        n++;
        at = s_ws (t, end);
        if (at < r->end && t->start [at] == ',') {
            at = s_ws (t, at + 1);
            continue;
        }
        if (at < r->end && t->start [at] == ']') {
            at++;
            break;
        }
        return s_syntax (ctx, t, at, "',' or ']' expected");
    }
    *count = n;
    return 0;
}

static int
s_document (s_ctx_t *ctx, const s_text_t *t)
{
    dq_dagdoc_t *doc = ctx->doc;
    s_range_t name = { 0 }, key = { 0 }, jobs = { 0 };
    if (s_top (ctx, t, &name, &key, &jobs))
        return -1;
    doc->name = "";
    if (name.found) {
        json_t *v = s_load (ctx, t, name.at, name.end);
        if (!v)
            return -1;
        //  An empty name is allowed: the DAG simply has none.
        int rc = json_is_string (v) && json_string_length (v) == 0
               ? 0: s_text (ctx, v, "'name'", &doc->name);
        json_decref (v);
        if (rc)
            return -1;
    }
    if (key.found) {
        json_t *v = s_load (ctx, t, key.at, key.end);
        if (!v)
            return -1;
        int rc = s_text (ctx, v, "'key'", &doc->key);
        json_decref (v);
        if (rc)
            return -1;
    }
    if (!jobs.found)
        return s_error (ctx, "'jobs' is required");
    if (t->start [jobs.at] != '[') {
        json_t *v = s_load (ctx, t, jobs.at, jobs.end);
        if (!v)
            return -1;
        s_error (ctx, "'jobs' must be an array, not %s", s_jtype (v));
        json_decref (v);
        return -1;
    }
    size_t n;
    if (s_jobs_walk (ctx, t, &jobs, false, &n))
        return -1;
    if (n == 0)
        return s_error (ctx, "'jobs' is empty: a DAG needs at least one job");
    if (n > ctx->max_jobs)
        return s_error (ctx, "'jobs' has %zu jobs, over the limit of %u", n,
                        ctx->max_jobs);
    doc->jobs = calloc (n, sizeof (dq_jobspec_t));
    size_t tsize = 16;
    while (tsize < 2 * n)
        tsize *= 2;
    ctx->table = calloc (tsize, sizeof (uint32_t));
    ctx->mask = tsize - 1;
    if (!doc->jobs || !ctx->table)
        return s_error (ctx, "out of memory");
    doc->njobs = (uint32_t) n;
    if (s_jobs_walk (ctx, t, &jobs, true, &n))
        return -1;
    return s_resolve (ctx);
}

dq_dagdoc_t *
dq_dagdoc_parse_limits (const char *json, size_t len,
                        const dq_dagdoc_limits_t *limits,
                        char *err, size_t err_size)
{
    s_ctx_t ctx = { .err = err, .err_size = err_size };
    if (err && err_size)
        err [0] = 0;
    ctx.max_jobs = limits && limits->max_jobs? limits->max_jobs
                                             : DQ_DAGDOC_MAX_JOBS_DEFAULT;
    if (ctx.max_jobs > DQ_PROTO_ARRAY_MAX)
        ctx.max_jobs = DQ_PROTO_ARRAY_MAX;
    ctx.max_deps = limits && limits->max_deps? limits->max_deps
                                             : DQ_DAGDOC_MAX_DEPS_DEFAULT;
    if (ctx.max_deps > DQ_PROTO_DEPS_MAX)
        ctx.max_deps = DQ_PROTO_DEPS_MAX;
    size_t max_size = limits && limits->max_size? limits->max_size
                                                : DQ_DAGDOC_MAX_SIZE_DEFAULT;
    if (!json) {
        s_error (&ctx, "no document");
        return NULL;
    }
    if (len > max_size) {
        s_error (&ctx, "the document is %zu bytes, over the limit of %zu", len,
                 max_size);
        return NULL;
    }
    ctx.doc = calloc (1, sizeof (dq_dagdoc_t));
    if (!ctx.doc) {
        s_error (&ctx, "out of memory");
        return NULL;
    }
    s_text_t text = { json, len };
    int rc = s_document (&ctx, &text);
    free (ctx.table);
    if (rc)
        dq_dagdoc_destroy (&ctx.doc);
    return ctx.doc;
}

dq_dagdoc_t *
dq_dagdoc_parse (const char *json, size_t len, char *err, size_t err_size)
{
    return dq_dagdoc_parse_limits (json, len, NULL, err, err_size);
}

void
dq_dagdoc_destroy (dq_dagdoc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_dagdoc_t *self = *self_p;
    s_block_t *block = self->arena;
    while (block) {
        s_block_t *next = block->next;
        if (block->adopted)
            free (block->data);
        free (block);
        block = next;
    }
    free (self->jobs);
    free (self);
    *self_p = NULL;
}

const dq_jobspec_t *
dq_dagdoc_jobs (const dq_dagdoc_t *self)
{
    return self->jobs;
}

uint32_t
dq_dagdoc_njobs (const dq_dagdoc_t *self)
{
    return self->njobs;
}

const char *
dq_dagdoc_name (const dq_dagdoc_t *self)
{
    return self->name;
}

const char *
dq_dagdoc_key (const dq_dagdoc_t *self)
{
    return self->key;
}

const char *
dq_dagdoc_job_id (const dq_dagdoc_t *self, uint32_t i)
{
    return i < self->njobs? self->jobs [i].name: NULL;
}
