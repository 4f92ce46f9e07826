/*  dq_exec.h - the external-command handler of dagq-worker.

    Each job of a type registered with dq_exec_register runs `/bin/sh -c
    COMMAND` in its own process group, on a pool thread:

    - the payload is written to its stdin (without blocking: a command that
      does not read its input cannot stall the worker);
    - its stdout is the output (at most DQ_WORKER_OUTPUT_MAX bytes: more is a
      failure "output too large" and the command is killed);
    - exit status 0 is success; anything else fails with "exit status N:
      <last bytes of stderr>" or "killed by signal N (NAME): <...>";
    - environment: DAGQ_JOB_ID, DAGQ_JOB_TYPE, DAGQ_ATTEMPT and
      DAGQ_PARENTS_DIR, a fresh directory holding one file per parent, named
      after the parent's local name (its id if it has none; '/' becomes '_',
      a leading '.' becomes '_'), containing the parent's output. The
      directory ($TMPDIR or /tmp, named dagq-job-<worker pid>-XXXXXX) is
      removed after the job (not if the worker is killed with SIGKILL).
    - on the job's timeout (timeout_ms) or when it is abandoned, the whole
      group gets SIGTERM (and SIGCONT), then SIGKILL DQ_EXEC_KILL_GRACE_MS
      later. When the shell exits while background processes still hold its
      stdout or stderr, they are treated the same way. Whatever is left in
      the group when the job ends is killed, and the shell is always reaped.
      Processes of the group that the shell left behind are reaped too when
      they are this process's children, which they are when it is a child
      subreaper (prctl PR_SET_CHILD_SUBREAPER, as dagq-worker sets); else
      they go to init. So no zombie or orphan remains (a process that left
      the group with setsid or setpgid is beyond reach).

    Not here: the worker engine (common/dq_worker), the built-in types.
*/
#ifndef DQ_EXEC_H_INCLUDED
#define DQ_EXEC_H_INCLUDED

#include "dq_worker.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_EXEC_KILL_GRACE_MS 2000      //  SIGTERM -> SIGKILL
#define DQ_EXEC_SHELL         "/bin/sh"

//  Register an external command for a job type on w (a pool handler; the
//  worker owns its copy of command). Returns 0, or -1 for a bad type, an
//  empty command or a type registered twice.
int
    dq_exec_register (dq_worker_t *w, const char *type, const char *command);

//  Run command for one task, as the handler does, and fill result (output
//  malloc'd, or error malloc'd). Returns 0 on success, -1 on failure. Safe to
//  call from any thread; blocks SIGPIPE on the calling thread while it runs.
//  Exposed for tests and for programs that embed the worker.
int
    dq_exec_run (const char *command, const dq_task_t *task, dq_result_t *result);

#ifdef __cplusplus
}
#endif
#endif
