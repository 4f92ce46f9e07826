/*  dq_exec.c - run a job as `/bin/sh -c COMMAND` (see dq_exec.h).

    One call of dq_exec_run owns one child: it creates the parents'
    directory and three pipes (close-on-exec, our ends non-blocking, all
    above fd 2), spawns the shell in a new process group with a clean signal
    mask, then runs one poll loop over stdin (writing the payload), stdout,
    stderr, the abandon fd and a pidfd that becomes readable when the shell
    exits (without a pidfd, a 50 ms tick checks instead). The shell's exit
    is observed with WNOWAIT, so its zombie keeps the group's id reserved
    until the group has been swept with SIGKILL and the shell is reaped.

    Not here: when a job runs or what happens to its result (dq_worker).
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             //  pipe2, asprintf, nftw, eventfd, sigabbrev_np
#endif
#include "dq_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define S_CHUNK          65536          //  bytes per read or write
#define S_TICK_MS        50             //  exit check without a pidfd
#define S_FLAG_TICK_MS   100            //  abandoned check without an fd
#define S_GIVE_UP_MS     1000           //  after SIGKILL, stop waiting for pipes
#define S_TAIL_MAX       DQ_WORKER_ERROR_MAX
#define S_FILE_NAME_MAX  200

typedef struct {
    char *data;
    size_t size, alloc;
} s_buf_t;

typedef struct {
    char data [S_TAIL_MAX];
    size_t size;
} s_tail_t;

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_close (int *fd)
{
    if (*fd >= 0) {
        close (*fd);
        *fd = -1;
    }
}

static void
s_tail_add (s_tail_t *t, const char *data, size_t n)
{
    if (n >= S_TAIL_MAX) {
        memcpy (t->data, data + n - S_TAIL_MAX, S_TAIL_MAX);
        t->size = S_TAIL_MAX;
    }
    else
    if (t->size + n > S_TAIL_MAX) {
        size_t keep = S_TAIL_MAX - n;
        memmove (t->data, t->data + t->size - keep, keep);
        memcpy (t->data + keep, data, n);
        t->size = S_TAIL_MAX;
    }
    else {
        memcpy (t->data + t->size, data, n);
        t->size += n;
    }
}

//  A failure text: prefix, then as much of the end of stderr as fits in
//  DQ_WORKER_ERROR_MAX bytes. NUL bytes become '?'; trailing blanks go.
static char *
s_error_text (const char *prefix, const s_tail_t *tail)
{
    size_t n = tail? tail->size: 0;
    while (n && (tail->data [n - 1] == '\n' || tail->data [n - 1] == '\r'
              || tail->data [n - 1] == ' ' || tail->data [n - 1] == '\t'))
        n--;
    size_t plen = strlen (prefix);
    size_t room = DQ_WORKER_ERROR_MAX > plen + 2? DQ_WORKER_ERROR_MAX - plen - 2: 0;
    size_t from = n > room? n - room: 0;
    char *text = malloc (plen + 2 + (n - from) + 1);
    if (!text)
        return NULL;
    memcpy (text, prefix, plen);
    size_t len = plen;
    if (n > from) {
        memcpy (text + len, ": ", 2);
        len += 2;
        for (size_t i = from; i < n; i++)
            text [len++] = tail->data [i]? tail->data [i]: '?';
    }
    text [len] = 0;
    return text;
}

static char *
s_strerror_text (const char *what, int err)
{
    char text [300];
    snprintf (text, sizeof text, "%s: %s", what, strerror (err));
    return strdup (text);
}

//  Move fd above 2 so dup2 onto 0..2 in the child always clears
//  close-on-exec (a worker started with stdio closed gets pipes at 0..2).
static int
s_fd_high (int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int high = fcntl (fd, F_DUPFD_CLOEXEC, 3);
    close (fd);
    return high;
}

static int
s_pipe (int fds [2])
{
    if (pipe2 (fds, O_CLOEXEC))
        return -1;
    fds [0] = s_fd_high (fds [0]);
    fds [1] = s_fd_high (fds [1]);
    if (fds [0] < 0 || fds [1] < 0) {
        s_close (&fds [0]);
        s_close (&fds [1]);
        return -1;
    }
    return 0;
}

static int
s_nonblock (int fd)
{
    int flags = fcntl (fd, F_GETFL);
    return flags == -1? -1: fcntl (fd, F_SETFL, flags | O_NONBLOCK);
}

//  ---------------------------------------------------------------------------
//  The parents' directory

static int
s_write_all (int fd, const void *data, size_t size)
{
    const char *p = data;
    while (size) {
        ssize_t n = write (fd, p, size);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        size -= (size_t) n;
    }
    return 0;
}

//  File name for parent i: its local name, else its id; no '/', no
//  leading '.', at most S_FILE_NAME_MAX bytes.
static void
s_parent_file_name (const dq_parent_t *parent, uint32_t i, char *name, size_t size)
{
    const char *base = parent->name && *parent->name? parent->name:
                       parent->id && *parent->id? parent->id: NULL;
    if (!base) {
        snprintf (name, size, "parent-%u", i + 1);
        return;
    }
    snprintf (name, size, "%.*s", S_FILE_NAME_MAX, base);
    for (char *c = name; *c; c++)
        if (*c == '/')
            *c = '_';
    if (name [0] == '.')
        name [0] = '_';
}

static int
s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    remove (path);
    return 0;                   //  best effort: go on with the rest
}

static void
s_remove_tree (const char *dir)
{
    nftw (dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

//  Create the directory and one file per parent. Returns 0 or -1 (errno).
static int
s_parents_dir (const dq_task_t *task, char *dir, size_t size)
{
    const char *tmp = getenv ("TMPDIR");
    if (!tmp || !*tmp || strlen (tmp) > size - 32)
        tmp = "/tmp";
    //  The pid says whose it is, should a killed worker leave one behind.
    snprintf (dir, size, "%s/dagq-job-%ld-XXXXXX", tmp, (long) getpid ());
    if (!mkdtemp (dir))
        return -1;
    for (uint32_t i = 0; i < task->nparents; i++) {
        const dq_parent_t *parent = &task->parents [i];
        char name [S_FILE_NAME_MAX + 16];
        s_parent_file_name (parent, i, name, sizeof name);
        char path [PATH_MAX];
        int fd = -1;
        for (int attempt = 0; fd < 0; attempt++) {
            if (attempt == 0)
                snprintf (path, sizeof path, "%s/%s", dir, name);
            else            //  two names that sanitise alike
                snprintf (path, sizeof path, "%s/%s~%d", dir, name, attempt + 1);
            fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd < 0 && (errno != EEXIST || attempt > (int) task->nparents))
                break;
        }
        if (fd < 0
        ||  s_write_all (fd, parent->output, parent->output_size)) {
            int err = errno;
            if (fd >= 0)
                close (fd);
            s_remove_tree (dir);
            errno = err;
            return -1;
        }
        if (close (fd)) {
            int err = errno;
            s_remove_tree (dir);
            errno = err;
            return -1;
        }
    }
    return 0;
}

//  ---------------------------------------------------------------------------
//  Environment

static bool
s_is_ours (const char *entry)
{
    static const char *names [] = {
        "DAGQ_JOB_ID=", "DAGQ_JOB_TYPE=", "DAGQ_ATTEMPT=", "DAGQ_PARENTS_DIR=",
    };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++)
        if (strncmp (entry, names [i], strlen (names [i])) == 0)
            return true;
    return false;
}

//  environ plus the job's variables. Returns NULL on allocation failure;
//  free with s_env_free.
static char **
s_env_new (const dq_task_t *task, const char *dir)
{
    size_t n = 0;
    while (environ && environ [n])
        n++;
    char **env = calloc (n + 5, sizeof (char *));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!s_is_ours (environ [i]))
            env [k++] = environ [i];
    //  Ours are the 4 entries after the inherited ones, freed by s_env_free.
    size_t first = k;
    if (asprintf (&env [k++], "DAGQ_JOB_ID=%s", task->id? task->id: "") < 0
    ||  asprintf (&env [k++], "DAGQ_JOB_TYPE=%s", task->type? task->type: "") < 0
    ||  asprintf (&env [k++], "DAGQ_ATTEMPT=%u", task->attempt) < 0
    ||  asprintf (&env [k++], "DAGQ_PARENTS_DIR=%s", dir) < 0) {
        //  asprintf leaves the pointer undefined on failure.
        env [k - 1] = NULL;
        for (size_t i = first; i < k - 1; i++)
            free (env [i]);
        free (env);
        return NULL;
    }
    env [k] = NULL;
    return env;
}

static void
s_env_free (char **env)
{
    if (!env)
        return;
    size_t n = 0;
    while (env [n])
        n++;
    for (size_t i = n - 4; i < n; i++)
        free (env [i]);
    free (env);
}

//  ---------------------------------------------------------------------------
//  Running

typedef struct {
    pid_t pid;                  //  the shell, leader of its group
    int pidfd;                  //  readable when it exits, or -1
    int in, out, err;           //  our pipe ends, -1 when closed
    size_t written;             //  payload bytes written so far
    s_buf_t output;
    bool output_over;           //  output went past the limit
    s_tail_t tail;              //  last bytes of stderr
    bool exited;                //  shell exited (zombie not yet reaped)
    int kill_stage;             //  0 none, 1 SIGTERM sent, 2 SIGKILL sent
    int64_t kill_at;            //  next step of the kill sequence
    const char *reason;         //  why we killed it, or NULL
    bool got_epipe;             //  a write raised SIGPIPE (blocked)
} s_child_t;

static void
s_kill_start (s_child_t *c, const char *reason)
{
    if (reason && !c->reason)
        c->reason = reason;
    if (c->kill_stage)
        return;
    kill (-c->pid, SIGTERM);
    kill (-c->pid, SIGCONT);    //  a stopped process must see the SIGTERM
    c->kill_stage = 1;
    c->kill_at = s_now_ms () + DQ_EXEC_KILL_GRACE_MS;
}

static void
s_kill_step (s_child_t *c, int64_t now)
{
    if (c->kill_stage == 1 && now >= c->kill_at) {
        kill (-c->pid, SIGKILL);
        c->kill_stage = 2;
        c->kill_at = now + S_GIVE_UP_MS;
    }
    else
    if (c->kill_stage == 2 && now >= c->kill_at && c->exited) {
        //  Something outside the group still holds the pipes: stop waiting.
        s_close (&c->out);
        s_close (&c->err);
    }
}

//  Read what is there. Returns after EOF, EAGAIN or an error. Past the
//  limit, output is read and dropped until the kill lands.
static void
s_read_out (s_child_t *c)
{
    char scratch [S_CHUNK];
    while (c->out >= 0) {
        char *dst = scratch;
        size_t room = sizeof scratch;
        if (!c->output_over) {
            if (c->output.size == c->output.alloc) {
                //  Grows to one byte over the limit, which proves "over".
                size_t alloc = c->output.alloc? c->output.alloc * 2: S_CHUNK;
                if (alloc > DQ_WORKER_OUTPUT_MAX + (size_t) 1)
                    alloc = DQ_WORKER_OUTPUT_MAX + (size_t) 1;
                char *data = realloc (c->output.data, alloc);
                if (!data) {
                    c->output_over = true;
                    s_kill_start (c, "out of memory for the output");
                    continue;
                }
                c->output.data = data;
                c->output.alloc = alloc;
            }
            dst = c->output.data + c->output.size;
            room = c->output.alloc - c->output.size;
        }
        ssize_t n = read (c->out, dst, room);
        if (n > 0) {
            if (!c->output_over) {
                c->output.size += (size_t) n;
                if (c->output.size > DQ_WORKER_OUTPUT_MAX) {
                    c->output_over = true;
                    s_kill_start (c, "output too large");
                }
            }
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN)
            s_close (&c->out);
        return;
    }
}

static void
s_read_err (s_child_t *c)
{
    char chunk [S_CHUNK];
    while (c->err >= 0) {
        ssize_t n = read (c->err, chunk, sizeof chunk);
        if (n > 0) {
            s_tail_add (&c->tail, chunk, (size_t) n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno != EAGAIN)
            s_close (&c->err);
        return;
    }
}

static void
s_write_in (s_child_t *c, const dq_task_t *task)
{
    while (c->in >= 0 && c->written < task->payload_size) {
        size_t left = task->payload_size - c->written;
        ssize_t n = write (c->in, (const char *) task->payload + c->written,
                           left > S_CHUNK? S_CHUNK: left);
        if (n > 0) {
            c->written += (size_t) n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        //  EPIPE: the command does not read (all of) its input; fine.
        if (n < 0 && errno == EPIPE)
            c->got_epipe = true;
        s_close (&c->in);
    }
    if (c->in >= 0 && c->written >= task->payload_size)
        s_close (&c->in);       //  EOF for the command
}

static bool
s_shell_exited (s_child_t *c)
{
    siginfo_t info;
    memset (&info, 0, sizeof info);
    if (waitid (P_PID, (id_t) c->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0)
        return info.si_pid == c->pid;
    //  ECHILD: someone else reaped it (a careless waitpid(-1) elsewhere).
    return errno == ECHILD;
}

static bool
s_abandoned (const dq_task_t *task)
{
    return task->abandoned && atomic_load (task->abandoned);
}

static void
s_loop (s_child_t *c, const dq_task_t *task)
{
    int64_t deadline = task->timeout_ms? s_now_ms () + task->timeout_ms: 0;
    while (!(c->exited && c->out < 0 && c->err < 0)) {
        struct pollfd fds [5];
        int nfds = 0, i_in = -1, i_out = -1, i_err = -1, i_ab = -1, i_pid = -1;
        if (c->in >= 0) {
            i_in = nfds;
            fds [nfds++] = (struct pollfd) { c->in, POLLOUT, 0 };
        }
        if (c->out >= 0) {
            i_out = nfds;
            fds [nfds++] = (struct pollfd) { c->out, POLLIN, 0 };
        }
        if (c->err >= 0) {
            i_err = nfds;
            fds [nfds++] = (struct pollfd) { c->err, POLLIN, 0 };
        }
        if (task->abandon_fd >= 0 && !c->kill_stage) {
            i_ab = nfds;
            fds [nfds++] = (struct pollfd) { task->abandon_fd, POLLIN, 0 };
        }
        if (c->pidfd >= 0 && !c->exited) {
            i_pid = nfds;
            fds [nfds++] = (struct pollfd) { c->pidfd, POLLIN, 0 };
        }
        int64_t now = s_now_ms ();
        int64_t wait = -1;
        if (c->pidfd < 0 && !c->exited)
            wait = S_TICK_MS;
        if (task->abandon_fd < 0 && task->abandoned && !c->kill_stage)
            wait = wait < 0 || wait > S_FLAG_TICK_MS? S_FLAG_TICK_MS: wait;
        if (deadline && !c->kill_stage) {
            int64_t left = deadline > now? deadline - now: 0;
            wait = wait < 0 || wait > left? left: wait;
        }
        if (c->kill_stage) {
            //  Past the last step only the shell's exit is left to see.
            int64_t left = c->kill_at > now? c->kill_at - now: S_TICK_MS;
            wait = wait < 0 || wait > left? left: wait;
        }
        int rc = poll (fds, (nfds_t) nfds, (int) wait);
        if (rc < 0 && errno != EINTR)
            s_kill_start (c, "poll failed");

        if (rc > 0 && i_in >= 0 && fds [i_in].revents)
            s_write_in (c, task);
        if (rc > 0 && i_out >= 0 && fds [i_out].revents)
            s_read_out (c);
        if (rc > 0 && i_err >= 0 && fds [i_err].revents)
            s_read_err (c);
        if (!c->kill_stage
        &&  (s_abandoned (task) || (rc > 0 && i_ab >= 0 && fds [i_ab].revents)))
            s_kill_start (c, "abandoned");
        now = s_now_ms ();
        if (deadline && now >= deadline && !c->kill_stage)
            s_kill_start (c, "timed out");
        if (!c->exited && (i_pid < 0 || (rc > 0 && fds [i_pid].revents))
        &&  s_shell_exited (c)) {
            c->exited = true;
            s_close (&c->in);
            //  The shell's own ends closed before it became a zombie, so
            //  pipes that stay open after draining are held by processes it
            //  left behind.
            s_read_out (c);
            s_read_err (c);
            if (c->out >= 0 || c->err >= 0)
                s_kill_start (c, NULL);
        }
        s_kill_step (c, now);
    }
}

int
dq_exec_run (const char *command, const dq_task_t *task, dq_result_t *result)
{
    memset (result, 0, sizeof *result);
    if (!command || !*command || !task) {
        result->error = strdup ("no command to run");
        return -1;
    }
    s_child_t c = { .pid = -1, .pidfd = -1, .in = -1, .out = -1, .err = -1 };
    int fds_in [2] = { -1, -1 }, fds_out [2] = { -1, -1 }, fds_err [2] = { -1, -1 };
    char dir [PATH_MAX] = "";
    char **env = NULL;
    bool have_attr = false, have_actions = false;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    int rc = -1;

    //  SIGPIPE stays blocked on this thread while we write to the child.
    sigset_t pipe_set, old_mask;
    sigemptyset (&pipe_set);
    sigaddset (&pipe_set, SIGPIPE);
    pthread_sigmask (SIG_BLOCK, &pipe_set, &old_mask);

    if (s_parents_dir (task, dir, sizeof dir)) {
        result->error = s_strerror_text ("cannot write the parents' outputs", errno);
        dir [0] = 0;
        goto done;
    }
    env = s_env_new (task, dir);
    if (!env) {
        result->error = strdup ("out of memory");
        goto done;
    }
    if (s_pipe (fds_in) || s_pipe (fds_out) || s_pipe (fds_err)
    ||  s_nonblock (fds_in [1]) || s_nonblock (fds_out [0]) || s_nonblock (fds_err [0])) {
        result->error = s_strerror_text ("cannot create pipes", errno);
        goto done;
    }
    int err = posix_spawnattr_init (&attr);
    have_attr = err == 0;
    if (!err) {
        err = posix_spawn_file_actions_init (&actions);
        have_actions = err == 0;
    }
    if (!err) {
        sigset_t empty, defaults;
        sigemptyset (&empty);
        sigemptyset (&defaults);
        int sigs [] = { SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGALRM,
                        SIGUSR1, SIGUSR2, SIGTSTP, SIGTTIN, SIGTTOU, SIGXFSZ };
        for (size_t i = 0; i < sizeof sigs / sizeof sigs [0]; i++)
            sigaddset (&defaults, sigs [i]);
        err = posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETPGROUP
                                             | POSIX_SPAWN_SETSIGMASK
                                             | POSIX_SPAWN_SETSIGDEF);
        if (!err) err = posix_spawnattr_setpgroup (&attr, 0);
        if (!err) err = posix_spawnattr_setsigmask (&attr, &empty);
        if (!err) err = posix_spawnattr_setsigdefault (&attr, &defaults);
        if (!err) err = posix_spawn_file_actions_adddup2 (&actions, fds_in [0], 0);
        if (!err) err = posix_spawn_file_actions_adddup2 (&actions, fds_out [1], 1);
        if (!err) err = posix_spawn_file_actions_adddup2 (&actions, fds_err [1], 2);
#if defined (__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        //  Descriptors an embedding program forgot to mark close-on-exec.
        if (!err) err = posix_spawn_file_actions_addclosefrom_np (&actions, 3);
#endif
    }
    if (!err) {
        char *argv [] = { "sh", "-c", (char *) command, NULL };
        err = posix_spawn (&c.pid, DQ_EXEC_SHELL, &actions, &attr, argv, env);
    }
    if (err) {
        c.pid = -1;
        result->error = s_strerror_text ("cannot start " DQ_EXEC_SHELL, err);
        goto done;
    }
    s_close (&fds_in [0]);
    s_close (&fds_out [1]);
    s_close (&fds_err [1]);
    c.in = fds_in [1];
    c.out = fds_out [0];
    c.err = fds_err [0];
    fds_in [1] = fds_out [0] = fds_err [0] = -1;
#ifdef SYS_pidfd_open
    c.pidfd = (int) syscall (SYS_pidfd_open, c.pid, 0);
    if (c.pidfd < 0)
        c.pidfd = -1;           //  old kernel or seccomp: tick instead
#endif
    s_write_in (&c, task);
    s_loop (&c, task);

    //  The shell is a zombie now: its group id cannot be reused yet. Sweep
    //  whatever is left in the group, then reap.
    kill (-c.pid, SIGKILL);
    int status = 0;
    pid_t waited;
    do
        waited = waitpid (c.pid, &status, 0);
    while (waited == -1 && errno == EINTR);
    //  Reap the members of the group that became our children: all of them
    //  when this process is a child subreaper (dagq-worker is), else none.
    //  Every member got SIGKILL, so this ends.
    while (true) {
        siginfo_t info;
        memset (&info, 0, sizeof info);
        if (waitid (P_PGID, (id_t) c.pid, &info, WEXITED) == -1 && errno != EINTR)
            break;
    }

    char prefix [160];
    if (c.reason && strcmp (c.reason, "timed out") == 0) {
        snprintf (prefix, sizeof prefix, "timed out after %u ms", task->timeout_ms);
        result->error = s_error_text (prefix, &c.tail);
    }
    else
    if (c.reason && strcmp (c.reason, "output too large") == 0) {
        snprintf (prefix, sizeof prefix, "output too large (over %u bytes)",
                  (unsigned) DQ_WORKER_OUTPUT_MAX);
        result->error = strdup (prefix);
    }
    else
    if (c.reason)
        result->error = strdup (c.reason);
    else
    if (waited != c.pid)
        result->error = s_error_text ("lost track of the command's exit status", &c.tail);
    else
    if (WIFEXITED (status) && WEXITSTATUS (status) == 0) {
        //  The result is kept until the broker acknowledges it: give back
        //  what doubling the buffer over-allocated.
        if (c.output.size && c.output.alloc - c.output.size > S_CHUNK) {
            char *data = realloc (c.output.data, c.output.size);
            if (data)
                c.output.data = data;
        }
        result->output_size = c.output.size;
        result->output = c.output.size? c.output.data: NULL;
        if (!c.output.size)
            free (c.output.data);
        c.output.data = NULL;
        rc = 0;
    }
    else
    if (WIFEXITED (status)) {
        snprintf (prefix, sizeof prefix, "exit status %d", WEXITSTATUS (status));
        result->error = s_error_text (prefix, &c.tail);
    }
    else {
        int sig = WIFSIGNALED (status)? WTERMSIG (status): 0;
        const char *name = sigabbrev_np (sig);
        snprintf (prefix, sizeof prefix, "killed by signal %d%s%s%s", sig,
                  name? " (SIG": "", name? name: "", name? ")": "");
        result->error = s_error_text (prefix, &c.tail);
    }
    if (rc != 0 && !result->error)
        result->error = strdup ("command failed");

done:
    free (c.output.data);
    s_close (&c.in);
    s_close (&c.out);
    s_close (&c.err);
    s_close (&c.pidfd);
    for (int i = 0; i < 2; i++) {
        s_close (&fds_in [i]);
        s_close (&fds_out [i]);
        s_close (&fds_err [i]);
    }
    if (have_actions)
        posix_spawn_file_actions_destroy (&actions);
    if (have_attr)
        posix_spawnattr_destroy (&attr);
    s_env_free (env);
    if (dir [0])
        s_remove_tree (dir);
    if (c.got_epipe) {
        //  Take the SIGPIPE the write raised (pending, blocked) off this
        //  thread before unblocking it.
        struct timespec zero = { 0, 0 };
        while (sigtimedwait (&pipe_set, NULL, &zero) == SIGPIPE)
            ;
    }
    pthread_sigmask (SIG_SETMASK, &old_mask, NULL);
    return rc;
}

//  ---------------------------------------------------------------------------
//  Registration

static int
s_handler (const dq_task_t *task, void *arg, dq_result_t *result)
{
    return dq_exec_run ((const char *) arg, task, result);
}

int
dq_exec_register (dq_worker_t *w, const char *type, const char *command)
{
    if (!w || !command || !*command)
        return -1;
    char *copy = strdup (command);
    if (!copy)
        return -1;
    return dq_worker_register_full (w, type, s_handler, copy, 0, free);
}
