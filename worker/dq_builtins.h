/*  dq_builtins.h - job types built into dagq-worker (--builtins).

    echo     output = payload (inline)
    sleep    payload = decimal milliseconds (surrounding blanks allowed, at
             most DQ_BUILTINS_SLEEP_MAX_MS); output empty; returns early,
             failing with "abandoned", when the job is abandoned (pool)
    fail     always fails; error = payload text ("failed as asked" when empty)
             (inline)
    sha256   output = lowercase hex SHA-256 of the payload, 64 bytes (inline;
             nettle)
    concat   output = the parents' outputs joined in dependency order
             (inline)

    Inline types run on the engine thread (see dq_worker.h): they are quick.

    Not here: external commands (dq_exec), the engine (dq_worker).
*/
#ifndef DQ_BUILTINS_H_INCLUDED
#define DQ_BUILTINS_H_INCLUDED

#include "dq_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_BUILTINS_SLEEP_MAX_MS 86400000u  //  one day

//  Register every built-in type on w. Returns 0, or -1 if one could not be
//  registered (already registered type); types before it stay registered.
int
    dq_builtins_register (dq_worker_t *w);

//  The handler of a built-in type and its flags (DQ_WORKER_INLINE or 0), or
//  NULL for an unknown type. For tests and for programs that want only some
//  built-ins.
dq_handler_fn *
    dq_builtins_find (const char *type, int *flags);

//  Names of the built-in types, NULL-terminated.
const char *const *
    dq_builtins_types (void);

#ifdef __cplusplus
}
#endif
#endif
