/*  dq_builtins.c - echo, sleep, fail, sha256, concat (see dq_builtins.h).

    Each handler validates its payload and reports a failure a person can
    act on; none logs (the engine logs job outcomes, never payloads).
*/
#include "dq_builtins.h"

#include <errno.h>
#include <nettle/sha2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_FLAG_TICK_MS 100      //  abandoned check when there is no fd

static int
s_fail_with (dq_result_t *result, const char *text)
{
    result->error = strdup (text);
    return -1;
}

//  ---------------------------------------------------------------------------

static int
s_echo (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    if (task->payload_size == 0)
        return 0;
    result->output = malloc (task->payload_size);
    if (!result->output)
        return s_fail_with (result, "echo: out of memory");
    memcpy (result->output, task->payload, task->payload_size);
    result->output_size = task->payload_size;
    return 0;
}

//  ---------------------------------------------------------------------------

//  Decimal milliseconds, blanks around allowed. Returns 0 or -1.
static int
s_parse_ms (const void *payload, size_t size, uint32_t *ms)
{
    const char *p = payload, *end = p + size;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    while (end > p && (end [-1] == ' ' || end [-1] == '\t' || end [-1] == '\n'
                    || end [-1] == '\r'))
        end--;
    if (p == end)
        return -1;
    uint64_t value = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (uint64_t) (*p - '0');
        if (value > DQ_BUILTINS_SLEEP_MAX_MS)
            return -1;
    }
    *ms = (uint32_t) value;
    return 0;
}

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
s_abandoned (const dq_task_t *task)
{
    return task->abandoned && atomic_load (task->abandoned);
}

static int
s_sleep (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    uint32_t ms;
    if (s_parse_ms (task->payload, task->payload_size, &ms)) {
        char text [160];
        snprintf (text, sizeof text, "sleep: the payload must be a whole number "
                  "of milliseconds from 0 to %u", DQ_BUILTINS_SLEEP_MAX_MS);
        return s_fail_with (result, text);
    }
    int64_t end = s_now_ms () + ms;
    while (true) {
        if (s_abandoned (task))
            return s_fail_with (result, "abandoned");
        int64_t left = end - s_now_ms ();
        if (left <= 0)
            return 0;
        if (task->abandon_fd >= 0) {
            struct pollfd pfd = { task->abandon_fd, POLLIN, 0 };
            if (poll (&pfd, 1, (int) left) > 0 && (pfd.revents & POLLIN))
                return s_fail_with (result, "abandoned");
        }
        else {
            int64_t nap = left > S_FLAG_TICK_MS? S_FLAG_TICK_MS: left;
            struct timespec ts = { nap / 1000, (nap % 1000) * 1000000 };
            nanosleep (&ts, NULL);
        }
    }
}

//  ---------------------------------------------------------------------------

static int
s_fail (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    size_t size = task->payload_size;
    if (size == 0)
        return s_fail_with (result, "failed as asked");
    if (size > DQ_WORKER_ERROR_MAX)
        size = DQ_WORKER_ERROR_MAX;
    char *text = malloc (size + 1);
    if (!text)
        return s_fail_with (result, "fail: out of memory");
    memcpy (text, task->payload, size);
    for (size_t i = 0; i < size; i++)
        if (text [i] == 0)
            text [i] = '?';
    text [size] = 0;
    result->error = text;
    return -1;
}

//  ---------------------------------------------------------------------------

static int
s_sha256 (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    struct sha256_ctx ctx;
    uint8_t digest [SHA256_DIGEST_SIZE];
    sha256_init (&ctx);
    sha256_update (&ctx, task->payload_size, task->payload);
    sha256_digest (&ctx, SHA256_DIGEST_SIZE, digest);
    static const char hex [] = "0123456789abcdef";
    char *out = malloc (SHA256_DIGEST_SIZE * 2);
    if (!out)
        return s_fail_with (result, "sha256: out of memory");
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
        out [2 * i] = hex [digest [i] >> 4];
        out [2 * i + 1] = hex [digest [i] & 15];
    }
    result->output = out;
    result->output_size = SHA256_DIGEST_SIZE * 2;
    return 0;
}

//  ---------------------------------------------------------------------------

static int
s_concat (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    size_t total = 0;
    for (uint32_t i = 0; i < task->nparents; i++) {
        total += task->parents [i].output_size;
        if (total > DQ_WORKER_OUTPUT_MAX) {
            char text [120];
            snprintf (text, sizeof text, "concat: output too large (over %u bytes)",
                      (unsigned) DQ_WORKER_OUTPUT_MAX);
            return s_fail_with (result, text);
        }
    }
    if (total == 0)
        return 0;
    char *out = malloc (total);
    if (!out)
        return s_fail_with (result, "concat: out of memory");
    size_t at = 0;
    for (uint32_t i = 0; i < task->nparents; i++) {
        const dq_parent_t *parent = &task->parents [i];
        if (parent->output_size) {
            memcpy (out + at, parent->output, parent->output_size);
            at += parent->output_size;
        }
    }
    result->output = out;
    result->output_size = total;
    return 0;
}

//  ---------------------------------------------------------------------------

typedef struct {
    const char *type;
    dq_handler_fn *fn;
    int flags;
} s_builtin_t;

static const s_builtin_t s_builtins [] = {
    { "echo",   s_echo,   DQ_WORKER_INLINE },
    { "sleep",  s_sleep,  0 },
    { "fail",   s_fail,   DQ_WORKER_INLINE },
    { "sha256", s_sha256, DQ_WORKER_INLINE },
    { "concat", s_concat, DQ_WORKER_INLINE },
};

#define S_NBUILTINS (sizeof s_builtins / sizeof s_builtins [0])

int
dq_builtins_register (dq_worker_t *w)
{
    for (size_t i = 0; i < S_NBUILTINS; i++)
        if (dq_worker_register (w, s_builtins [i].type, s_builtins [i].fn, NULL,
                                s_builtins [i].flags))
            return -1;
    return 0;
}

dq_handler_fn *
dq_builtins_find (const char *type, int *flags)
{
    for (size_t i = 0; type && i < S_NBUILTINS; i++)
        if (strcmp (type, s_builtins [i].type) == 0) {
            if (flags)
                *flags = s_builtins [i].flags;
            return s_builtins [i].fn;
        }
    return NULL;
}

const char *const *
dq_builtins_types (void)
{
    static const char *const names [S_NBUILTINS + 1] = {
        "echo", "sleep", "fail", "sha256", "concat", NULL,
    };
    return names;
}
