/*  bench_workers - many workers in one process, for the scale bench.

    Opens --count DEALER sockets to a broker's backend, each one worker as
    docs/protocol.md describes: READY (capacity --capacity, type --type),
    HEARTBEAT whenever it has sent nothing for the broker's heartbeat_ms,
    DONE (output = payload) for every JOB, READY again on REREGISTER. One
    thread polls them all. Runs until SIGINT or SIGTERM (or --seconds), then
    sends BYE on every socket and prints one line:

        RESULT workers=N welcomed=N with_jobs=N jobs=N silences=N
               reregisters=N errors=N max_gap_ms=N

    with_jobs counts sockets that ran at least one job; silences counts
    sockets that heard nothing from the broker for longer than liveness x
    heartbeat_ms (the broker would have dropped them); max_gap_ms is the
    longest silence seen. With --status-file the same line is rewritten
    there every second, so a script can watch without stopping us.

    Does not run real jobs or keep results across reconnects (dq_worker
    does): it measures the broker's cost per connected worker. Exit status:
    0 ran, 1 could not start, 2 usage.
*/
#include <zmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_proto.h"
#include "dq_util.h"

#define S_COUNT_MAX      4096
#define S_HB_DEFAULT_MS  1000        //  until WELCOME says otherwise
#define S_LIVENESS_DEFAULT 3
#define S_POLL_MAX_MS    50
#define S_STATUS_EVERY_MS 1000

typedef struct {
    void *sock;
    int64_t last_send, last_recv;   //  monotonic ms
    uint32_t hb_ms, liveness;       //  from WELCOME
    uint64_t jobs;                  //  JOBs answered
    bool welcomed;
    bool silent;                    //  currently past liveness (counted once)
} s_worker_t;

typedef struct {
    const char *broker, *name, *type, *status_file;
    uint32_t count, capacity;
    uint64_t seconds;
} s_opts_t;

typedef struct {
    s_opts_t o;
    void *ctx;
    s_worker_t *w;
    zmq_pollitem_t *items;
    char host [256];
    uint64_t silences, reregisters, errors, max_gap_ms;
} s_bench_t;

static volatile sig_atomic_t s_stop;

static void
s_on_signal (int sig)
{
    (void) sig;
    s_stop = 1;
}

static int64_t
s_now (void)
{
    return (int64_t) dq_mono_ms ();
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_workers --broker ENDPOINT [--count N] [--capacity C] [--type T]\n"
"                     [--name PREFIX] [--seconds S] [--status-file FILE]\n"
"N workers (DEALER sockets, default 250, at most %d) in one process, each\n"
"announcing type T (default echo) with capacity C (default 1), answering\n"
"every job with its payload and heartbeating. Prints a RESULT line at exit.\n",
             S_COUNT_MAX);
}

static int
s_send (s_bench_t *self, s_worker_t *w, dq_msg_t *msg)
{
    if (dq_msg_send (msg, w->sock, NULL, 0, ZMQ_DONTWAIT)) {
        if (errno != EAGAIN)
            self->errors++;
        return -1;
    }
    w->last_send = s_now ();
    return 0;
}

static void
s_send_ready (s_bench_t *self, uint32_t i)
{
    char name [300];
    snprintf (name, sizeof name, "%s-%u", self->o.name, i);
    const char *types [1] = { self->o.type };
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_READY);
    msg.name = name;
    msg.host = self->host;
    msg.pid = (uint32_t) getpid ();
    msg.capacity = self->o.capacity;
    msg.types = types;
    msg.ntypes = 1;
    s_send (self, &self->w [i], &msg);
}

static void
s_send_done (s_bench_t *self, s_worker_t *w, const char *id, uint32_t attempt,
             const void *output, size_t size)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_DONE);
    msg.id = id;
    msg.attempt = attempt;
    msg.ok = true;
    msg.output = output;
    msg.output_size = size;
    if (s_send (self, w, &msg) == 0)
        w->jobs++;
}

static void
s_handle (s_bench_t *self, uint32_t i, dq_msg_t *msg)
{
    s_worker_t *w = &self->w [i];
    switch (msg->cmd) {
        case DQ_CMD_WELCOME:
            w->welcomed = true;
            w->hb_ms = msg->heartbeat_ms? msg->heartbeat_ms: S_HB_DEFAULT_MS;
            w->liveness = msg->liveness? msg->liveness: S_LIVENESS_DEFAULT;
            break;
        case DQ_CMD_JOB:
            if (msg->ntasks) {
                for (uint32_t k = 0; k < msg->ntasks; k++)
                    s_send_done (self, w, msg->tasks [k].id, msg->tasks [k].attempt,
                                 msg->tasks [k].payload, msg->tasks [k].payload_size);
            }
            else
            if (msg->id)
                s_send_done (self, w, msg->id, msg->attempt, msg->payload, msg->payload_size);
            break;
        case DQ_CMD_REREGISTER:
            self->reregisters++;
            w->welcomed = false;
            s_send_ready (self, i);
            break;
        case DQ_CMD_ERROR:
            self->errors++;
            break;
        default:                    //  HEARTBEAT, ACK, ABANDON (nothing runs)
            break;
    }
}

static void
s_status_line (s_bench_t *self, char *buf, size_t size)
{
    uint64_t welcomed = 0, with_jobs = 0, jobs = 0;
    for (uint32_t i = 0; i < self->o.count; i++) {
        welcomed += self->w [i].welcomed;
        with_jobs += self->w [i].jobs > 0;
        jobs += self->w [i].jobs;
    }
    snprintf (buf, size, "RESULT workers=%u welcomed=%" PRIu64 " with_jobs=%" PRIu64
              " jobs=%" PRIu64 " silences=%" PRIu64 " reregisters=%" PRIu64
              " errors=%" PRIu64 " max_gap_ms=%" PRIu64,
              self->o.count, welcomed, with_jobs, jobs, self->silences,
              self->reregisters, self->errors, self->max_gap_ms);
}

//  Rewrite the status file atomically (write a temp file, rename it).
static void
s_write_status (s_bench_t *self)
{
    if (!self->o.status_file)
        return;
    char line [400], tmp [4200];
    s_status_line (self, line, sizeof line);
    snprintf (tmp, sizeof tmp, "%s.tmp", self->o.status_file);
    FILE *f = fopen (tmp, "w");
    if (!f)
        return;
    fprintf (f, "%s\n", line);
    if (fclose (f) == 0)
        rename (tmp, self->o.status_file);
}

static int
s_run (s_bench_t *self)
{
    int64_t started = s_now ();
    int64_t next_status = started;
    while (!s_stop) {
        int64_t now = s_now ();
        if (self->o.seconds && now - started >= (int64_t) self->o.seconds * 1000)
            break;
        if (zmq_poll (self->items, (int) self->o.count, S_POLL_MAX_MS) == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (uint32_t i = 0; i < self->o.count; i++) {
            if (!(self->items [i].revents & ZMQ_POLLIN))
                continue;
            //  A bounded batch per socket per turn keeps the others fair.
            for (int k = 0; k < 64; k++) {
                dq_err_t err;
                dq_msg_t *msg = dq_msg_recv (self->w [i].sock, NULL, NULL, ZMQ_DONTWAIT,
                                             &err, NULL);
                if (!msg) {
                    if (err != DQ_OK)
                        self->errors++;
                    else
                        break;
                    continue;
                }
                self->w [i].last_recv = s_now ();
                self->w [i].silent = false;
                s_handle (self, i, msg);
                dq_msg_destroy (&msg);
            }
        }
        now = s_now ();
        for (uint32_t i = 0; i < self->o.count; i++) {
            s_worker_t *w = &self->w [i];
            int64_t gap = now - w->last_recv;
            if (w->welcomed && gap > (int64_t) self->max_gap_ms)
                self->max_gap_ms = (uint64_t) gap;
            if (w->welcomed && !w->silent && gap > (int64_t) w->liveness * w->hb_ms) {
                w->silent = true;
                self->silences++;
            }
            if (!w->welcomed) {
                //  READY again every default heartbeat until WELCOME.
                if (now - w->last_send >= S_HB_DEFAULT_MS)
                    s_send_ready (self, i);
            }
            else
            if (now - w->last_send >= w->hb_ms) {
                dq_msg_t msg;
                dq_msg_init (&msg, DQ_CMD_HEARTBEAT);
                s_send (self, w, &msg);
            }
        }
        if (now >= next_status) {
            s_write_status (self);
            next_status = now + S_STATUS_EVERY_MS;
        }
    }
    return 0;
}

static int
s_parse (int argc, char *argv [], s_opts_t *o)
{
    static const struct option longopts [] = {
        { "broker",      required_argument, NULL, 'b' },
        { "count",       required_argument, NULL, 'n' },
        { "capacity",    required_argument, NULL, 'c' },
        { "type",        required_argument, NULL, 't' },
        { "name",        required_argument, NULL, 'N' },
        { "seconds",     required_argument, NULL, 's' },
        { "status-file", required_argument, NULL, 'S' },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    o->count = 250;
    o->capacity = 1;
    o->type = "echo";
    o->name = "bw";
    int opt;
    uint64_t v;
    while ((opt = getopt_long (argc, argv, "b:n:c:t:N:s:S:h", longopts, NULL)) != -1) {
        switch (opt) {
            case 'b': o->broker = optarg; break;
            case 'n':
                if (dq_parse_u64 (optarg, 1, S_COUNT_MAX, &v))
                    goto bad;
                o->count = (uint32_t) v;
                break;
            case 'c':
                if (dq_parse_u64 (optarg, 1, 1024, &v))
                    goto bad;
                o->capacity = (uint32_t) v;
                break;
            case 't':
                if (!*optarg || strlen (optarg) > DQ_PROTO_TYPE_MAX)
                    goto bad;
                o->type = optarg;
                break;
            case 'N':
                if (!*optarg || strlen (optarg) > 200)
                    goto bad;
                o->name = optarg;
                break;
            case 's':
                if (dq_parse_u64 (optarg, 0, 86400 * 365, &v))
                    goto bad;
                o->seconds = v;
                break;
            case 'S': o->status_file = optarg; break;
            case 'h': s_usage (stdout); return 1;
            default: s_usage (stderr); return -1;
        }
    }
    if (!o->broker || optind < argc) {
        s_usage (stderr);
        return -1;
    }
    return 0;
bad:
    fprintf (stderr, "bench_workers: bad value '%s' (see --help)\n", optarg);
    return -1;
}

int
main (int argc, char *argv [])
{
    s_bench_t self = { 0 };
    int rc = s_parse (argc, argv, &self.o);
    if (rc)
        return rc > 0? 0: 2;
    if (gethostname (self.host, sizeof self.host - 1))
        snprintf (self.host, sizeof self.host, "bench");
    signal (SIGINT, s_on_signal);
    signal (SIGTERM, s_on_signal);
    rc = 1;
    self.ctx = zmq_ctx_new ();
    self.w = calloc (self.o.count, sizeof *self.w);
    self.items = calloc (self.o.count, sizeof *self.items);
    if (!self.ctx || !self.w || !self.items)
        goto out;
    zmq_ctx_set (self.ctx, ZMQ_MAX_SOCKETS, (int) self.o.count + 16);
    int64_t now = s_now ();
    for (uint32_t i = 0; i < self.o.count; i++) {
        s_worker_t *w = &self.w [i];
        w->sock = zmq_socket (self.ctx, ZMQ_DEALER);
        if (!w->sock) {
            fprintf (stderr, "bench_workers: socket %u: %s (raise ulimit -n?)\n",
                     i, zmq_strerror (errno));
            goto out;
        }
        int zero = 0, immediate = 1;
        zmq_setsockopt (w->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt (w->sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate);
        if (zmq_connect (w->sock, self.o.broker)) {
            fprintf (stderr, "bench_workers: cannot connect to %s: %s\n",
                     self.o.broker, zmq_strerror (errno));
            goto out;
        }
        w->hb_ms = S_HB_DEFAULT_MS;
        w->liveness = S_LIVENESS_DEFAULT;
        w->last_recv = now;
        w->last_send = now - S_HB_DEFAULT_MS;   //  READY goes out at once
        self.items [i].socket = w->sock;
        self.items [i].events = ZMQ_POLLIN;
    }
    rc = s_run (&self) == 0? 0: 1;
    if (rc)
        fprintf (stderr, "bench_workers: poll failed: %s\n", zmq_strerror (errno));
    //  Leave politely, so the broker requeues nothing and logs "left".
    for (uint32_t i = 0; i < self.o.count; i++) {
        if (!self.w [i].welcomed)
            continue;
        int linger = 500;
        zmq_setsockopt (self.w [i].sock, ZMQ_LINGER, &linger, sizeof linger);
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_BYE);
        dq_msg_send (&msg, self.w [i].sock, NULL, 0, ZMQ_DONTWAIT);
    }
    char line [400];
    s_status_line (&self, line, sizeof line);
    s_write_status (&self);
    printf ("%s\n", line);
    fflush (stdout);
out:
    if (self.w)
        for (uint32_t i = 0; i < self.o.count; i++)
            if (self.w [i].sock)
                zmq_close (self.w [i].sock);
    free (self.w);
    free (self.items);
    if (self.ctx)
        zmq_ctx_term (self.ctx);
    return rc;
}
