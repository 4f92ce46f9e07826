/*  test_exec.c - dq_exec_run without a broker: output, stdin, failures,
    timeouts and abandons that kill the whole process group, the parents'
    directory, the environment, and no zombie left after any run.

    The test process is a child subreaper (as dagq-worker is), so processes
    a command leaves behind are ours to reap, and "no zombie" is checked
    with waitpid (-1, WNOHANG) == -1 / ECHILD after every run.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dq_exec.h"

#define S_DEADLINE_MS 30000

typedef struct {
    char dir [256];             //  scratch dir for pid files
    atomic_bool abandoned;
    dq_task_t task;
    dq_result_t result;
} s_fix_t;

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_nap (void)
{
    struct timespec ts = { 0, 10 * 1000000 };
    nanosleep (&ts, NULL);
}

static int
setup (void **state)
{
    s_fix_t *f = calloc (1, sizeof *f);
    assert_non_null (f);
    snprintf (f->dir, sizeof f->dir, "/tmp/test_exec-XXXXXX");
    assert_non_null (mkdtemp (f->dir));
    atomic_init (&f->abandoned, false);
    f->task.id = "b7f3a-42";
    f->task.type = "shell";
    f->task.attempt = 2;
    f->task.abandoned = &f->abandoned;
    f->task.abandon_fd = -1;
    *state = f;
    return 0;
}

static int
teardown (void **state)
{
    s_fix_t *f = *state;
    free (f->result.output);
    free (f->result.error);
    char cmd [300];
    snprintf (cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal (system (cmd), 0);
    free (f);
    return 0;
}

//  No child of ours is left, running or zombie.
static void
s_assert_no_children (void)
{
    int status;
    assert_int_equal (waitpid (-1, &status, WNOHANG), -1);
    assert_int_equal (errno, ECHILD);
}

//  Read a pid the command wrote into dir/name, waiting for it to appear.
static pid_t
s_read_pid (s_fix_t *f, const char *name)
{
    char path [300];
    snprintf (path, sizeof path, "%s/%s", f->dir, name);
    int64_t deadline = s_now_ms () + S_DEADLINE_MS;
    while (s_now_ms () < deadline) {
        FILE *file = fopen (path, "r");
        if (file) {
            long pid = 0;
            int n = fscanf (file, "%ld", &pid);
            fclose (file);
            if (n == 1 && pid > 1)
                return (pid_t) pid;
        }
        s_nap ();
    }
    fail_msg ("no pid in %s", path);
    return -1;
}

static void
s_assert_group_gone (pid_t pgid)
{
    assert_int_equal (kill (-pgid, 0), -1);
    assert_int_equal (errno, ESRCH);
}

static int
s_run (s_fix_t *f, const char *command)
{
    free (f->result.output);
    free (f->result.error);
    memset (&f->result, 0, sizeof f->result);
    int rc = dq_exec_run (command, &f->task, &f->result);
    s_assert_no_children ();
    return rc;
}

//  ---------------------------------------------------------------------------

static void
test_exec_success_output (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "printf 'hello world'"), 0);
    assert_int_equal (f->result.output_size, 11);
    assert_memory_equal (f->result.output, "hello world", 11);
    assert_null (f->result.error);
}

static void
test_exec_empty_output (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "true"), 0);
    assert_int_equal (f->result.output_size, 0);
    assert_null (f->result.output);
}

static void
test_exec_stdin_round_trip (void **state)
{
    s_fix_t *f = *state;
    size_t size = 1024 * 1024;
    unsigned char *payload = malloc (size);
    assert_non_null (payload);
    unsigned int seed = 42;
    for (size_t i = 0; i < size; i++)
        payload [i] = (unsigned char) (rand_r (&seed) & 0xff);
    f->task.payload = payload;
    f->task.payload_size = size;
    assert_int_equal (s_run (f, "cat"), 0);
    assert_int_equal (f->result.output_size, size);
    assert_memory_equal (f->result.output, payload, size);
    free (payload);
}

//  A command that never reads a big payload must not stall us.
static void
test_exec_unread_stdin (void **state)
{
    s_fix_t *f = *state;
    size_t size = 4 * 1024 * 1024;
    char *payload = calloc (1, size);
    assert_non_null (payload);
    f->task.payload = payload;
    f->task.payload_size = size;
    assert_int_equal (s_run (f, "printf done"), 0);
    assert_int_equal (f->result.output_size, 4);
    assert_memory_equal (f->result.output, "done", 4);
    //  Reads a little, then exits.
    assert_int_equal (s_run (f, "head -c 10 >/dev/null; printf ok"), 0);
    assert_memory_equal (f->result.output, "ok", 2);
    free (payload);
    //  SIGPIPE was taken and is not pending any more.
    sigset_t pending;
    sigpending (&pending);
    assert_false (sigismember (&pending, SIGPIPE));
}

static void
test_exec_failure_stderr (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "echo partial; echo 'it broke' >&2; exit 3"), -1);
    assert_null (f->result.output);
    assert_non_null (f->result.error);
    assert_string_equal (f->result.error, "exit status 3: it broke");
}

static void
test_exec_exit_codes (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "exit 1"), -1);
    assert_string_equal (f->result.error, "exit status 1");
    assert_int_equal (s_run (f, "exit 255"), -1);
    assert_string_equal (f->result.error, "exit status 255");
    assert_int_equal (s_run (f, "exit 0"), 0);
    assert_int_equal (s_run (f, "kill -KILL $$"), -1);
    assert_string_equal (f->result.error, "killed by signal 9 (SIGKILL)");
    assert_int_equal (s_run (f, "no-such-command-dagq-test"), -1);
    assert_non_null (strstr (f->result.error, "exit status 127: "));
    assert_non_null (strstr (f->result.error, "not found"));
}

static void
test_exec_stderr_tail_capped (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "i=0; while [ $i -lt 2000 ]; do echo \"line $i\"; "
                                "i=$((i+1)); done >&2; printf 'THE END\\n' >&2; "
                                "exit 1"), -1);
    size_t len = strlen (f->result.error);
    assert_true (len <= DQ_WORKER_ERROR_MAX);
    assert_true (len > DQ_WORKER_ERROR_MAX - 100);
    assert_memory_equal (f->result.error, "exit status 1: ", 15);
    assert_string_equal (f->result.error + len - 7, "THE END");
    //  NUL bytes in stderr do not cut the text.
    assert_int_equal (s_run (f, "printf 'a\\000b' >&2; exit 2"), -1);
    assert_string_equal (f->result.error, "exit status 2: a?b");
}

static void
test_exec_timeout_kills_group (void **state)
{
    s_fix_t *f = *state;
    char cmd [600];
    snprintf (cmd, sizeof cmd, "echo $$ > '%s/pgid'; sleep 1000 & sleep 1000; wait",
              f->dir);
    f->task.timeout_ms = 1500;
    assert_int_equal (s_run (f, cmd), -1);
    assert_non_null (strstr (f->result.error, "timed out after 1500 ms"));
    s_assert_group_gone (s_read_pid (f, "pgid"));
}

//  A group that ignores SIGTERM gets SIGKILL after the grace.
static void
test_exec_timeout_escalates (void **state)
{
    s_fix_t *f = *state;
    char cmd [600];
    snprintf (cmd, sizeof cmd, "trap '' TERM; echo $$ > '%s/pgid'; sleep 1000; "
              "sleep 1000", f->dir);
    f->task.timeout_ms = 300;
    int64_t start = s_now_ms ();
    assert_int_equal (s_run (f, cmd), -1);
    assert_true (s_now_ms () - start >= DQ_EXEC_KILL_GRACE_MS);
    assert_non_null (strstr (f->result.error, "timed out after 300 ms"));
    s_assert_group_gone (s_read_pid (f, "pgid"));
}

typedef struct {
    s_fix_t *f;
    const char *command;
    int rc;
} s_bg_t;

static void *
s_bg_run (void *arg)
{
    s_bg_t *bg = arg;
    bg->rc = dq_exec_run (bg->command, &bg->f->task, &bg->f->result);
    return NULL;
}

static void
s_abandon_case (s_fix_t *f, bool use_fd)
{
    int efd = -1;
    if (use_fd) {
        efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true (efd >= 0);
        f->task.abandon_fd = efd;
    }
    char cmd [600];
    snprintf (cmd, sizeof cmd, "echo $$ > '%s/pgid'; sleep 1000 & exec sleep 1000", f->dir);
    s_bg_t bg = { f, cmd, 0 };
    pthread_t thread;
    assert_int_equal (pthread_create (&thread, NULL, s_bg_run, &bg), 0);
    pid_t pgid = s_read_pid (f, "pgid");
    atomic_store (&f->abandoned, true);
    if (use_fd) {
        uint64_t one = 1;
        assert_int_equal (write (efd, &one, sizeof one), sizeof one);
    }
    pthread_join (thread, NULL);
    assert_int_equal (bg.rc, -1);
    assert_string_equal (f->result.error, "abandoned");
    s_assert_no_children ();
    s_assert_group_gone (pgid);
    if (efd >= 0)
        close (efd);
}

static void
test_exec_abandon_fd (void **state)
{
    s_abandon_case (*state, true);
}

static void
test_exec_abandon_flag (void **state)
{
    s_abandon_case (*state, false);
}

//  Background processes holding stdout after the shell exits are killed;
//  the job still succeeds with what the shell wrote.
static void
test_exec_leftover_holds_pipe (void **state)
{
    s_fix_t *f = *state;
    char cmd [600];
    snprintf (cmd, sizeof cmd, "echo $$ > '%s/pgid'; sleep 1000 & printf hi", f->dir);
    assert_int_equal (s_run (f, cmd), 0);
    assert_int_equal (f->result.output_size, 2);
    assert_memory_equal (f->result.output, "hi", 2);
    s_assert_group_gone (s_read_pid (f, "pgid"));
}

//  A detached leftover (stdio redirected) is killed at the end all the same.
static void
test_exec_leftover_detached (void **state)
{
    s_fix_t *f = *state;
    char cmd [600];
    snprintf (cmd, sizeof cmd, "echo $$ > '%s/pgid'; "
              "sleep 1000 </dev/null >/dev/null 2>&1 & printf ok", f->dir);
    assert_int_equal (s_run (f, cmd), 0);
    assert_memory_equal (f->result.output, "ok", 2);
    s_assert_group_gone (s_read_pid (f, "pgid"));
}

static void
test_exec_output_too_large (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_run (f, "exec cat /dev/zero"), -1);
    assert_non_null (strstr (f->result.error, "output too large"));
    assert_null (f->result.output);
    //  Exactly the limit is fine.
    char cmd [100];
    snprintf (cmd, sizeof cmd, "head -c %u /dev/zero", (unsigned) DQ_WORKER_OUTPUT_MAX);
    assert_int_equal (s_run (f, cmd), 0);
    assert_int_equal (f->result.output_size, DQ_WORKER_OUTPUT_MAX);
    snprintf (cmd, sizeof cmd, "head -c %u /dev/zero", (unsigned) DQ_WORKER_OUTPUT_MAX + 1);
    assert_int_equal (s_run (f, cmd), -1);
    assert_non_null (strstr (f->result.error, "output too large"));
}

static void
test_exec_env (void **state)
{
    s_fix_t *f = *state;
    setenv ("DAGQ_JOB_ID", "stale", 1);      //  replaced, not duplicated
    assert_int_equal (s_run (f, "printf '%s|%s|%s|' \"$DAGQ_JOB_ID\" "
                                "\"$DAGQ_JOB_TYPE\" \"$DAGQ_ATTEMPT\"; "
                                "env | grep -c '^DAGQ_JOB_ID='"), 0);
    unsetenv ("DAGQ_JOB_ID");
    const char *want = "b7f3a-42|shell|2|1\n";
    assert_int_equal (f->result.output_size, strlen (want));
    assert_memory_equal (f->result.output, want, strlen (want));
}

static void
test_exec_parents_dir (void **state)
{
    s_fix_t *f = *state;
    dq_parent_t parents [] = {
        { "b7f3a-1", "upload", "AAA", 3 },
        { "b7f3a-2", NULL, "BB", 2 },           //  no name: its id
        { "b7f3a-3", "../evil/x", "E", 1 },     //  sanitised
        { "b7f3a-4", ".hidden", "", 0 },        //  leading dot, empty output
        { "b7f3a-5", "a_b", "1", 1 },           //  collides with the next
        { "b7f3a-6", "a/b", "2", 1 },
    };
    f->task.parents = parents;
    f->task.nparents = sizeof parents / sizeof parents [0];
    assert_int_equal (s_run (f, "printf '%s\\n' \"$DAGQ_PARENTS_DIR\"; "
                                "cd \"$DAGQ_PARENTS_DIR\" && ls -A | LC_ALL=C sort | "
                                "tr '\\n' ' '; cat upload b7f3a-2 _._evil_x; "
                                "cat a_b a_b~2"), 0);
    char *out = strndup (f->result.output, f->result.output_size);
    char *nl = strchr (out, '\n');
    assert_non_null (nl);
    *nl = 0;
    const char *dir = out;
    assert_non_null (strstr (dir, "dagq-job-"));
    assert_string_equal (nl + 1,
                         "_._evil_x _hidden a_b a_b~2 b7f3a-2 upload AAABBE12");
    //  Removed after the job.
    struct stat st;
    assert_int_equal (stat (dir, &st), -1);
    assert_int_equal (errno, ENOENT);
    free (out);
    //  Removed also when the command leaves more files and dirs in it.
    assert_int_equal (s_run (f, "mkdir -p \"$DAGQ_PARENTS_DIR/x/y\"; "
                                "touch \"$DAGQ_PARENTS_DIR/x/y/z\"; "
                                "printf %s \"$DAGQ_PARENTS_DIR\""), 0);
    out = strndup (f->result.output, f->result.output_size);
    assert_int_equal (stat (out, &st), -1);
    free (out);
}

static void
test_exec_bad_arguments (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (dq_exec_run ("", &f->task, &f->result), -1);
    assert_non_null (f->result.error);
    free (f->result.error);
    f->result.error = NULL;
    assert_int_equal (dq_exec_run (NULL, &f->task, &f->result), -1);
    assert_non_null (f->result.error);
}

int
main (void)
{
    //  Like dagq-worker: orphans of commands become ours to reap.
    prctl (PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_exec_success_output, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_empty_output, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_stdin_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_unread_stdin, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_failure_stderr, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_exit_codes, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_stderr_tail_capped, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_timeout_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_timeout_escalates, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_abandon_fd, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_abandon_flag, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_leftover_holds_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_leftover_detached, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_output_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_env, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_parents_dir, setup, teardown),
        cmocka_unit_test_setup_teardown (test_exec_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
