/*  bench_dag - accept time and end-to-end rate of one big random DAG.

    Starts nothing: connects to a running broker. Builds a random DAG of
    --jobs jobs in which every job depends on 1 .. 2*AVG-1 distinct earlier
    jobs (AVG = --avg-deps on average, fewer for the very first jobs),
    encodes it as ONE SUBMIT with a dag_name, sends it and measures the time
    from the send to the SUBMITTED reply (the broker decodes, validates
    indexes, duplicates and cycles, creates every job and edge and, with a
    store, commits them all before replying). With --pid, prints the
    broker's RSS growth per job, read from /proc/PID/status.

    Shapes: with --layers 0 (default) the parents of job i are uniform over
    jobs 0..i-1, so the graph is deep and narrow at the start; with
    --layers L the jobs are cut into L layers of equal width, the first
    parent of a job is in the layer just before its own (so the DAG is
    exactly L deep and a layer's jobs can all run in parallel) and the
    others are anywhere earlier.

    With --run the DAG's jobs are meant to execute (a type the workers run,
    e.g. echo): waits for the DAG's terminal event on the events PUB (topic
    "dag <id> "), counting job events ("job ") for progress, and falls back
    to polling DAG when events stop (PUB drops for slow subscribers); prints
    the end-to-end jobs/s from the send of the SUBMIT to the DAG's end.
    Bounded by --timeout.

    Exit status: 0 measured (and with --run the DAG succeeded), 1 failure,
    refusal, timeout or a failed DAG, 2 usage.
*/
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dq_proto.h"
#include "dq_util.h"

#define S_RID_SUBMIT    1ULL
#define S_RID_STATS     (1ULL << 60)
#define S_RID_WARMUP    (1ULL << 61)
#define S_RID_POLL      (1ULL << 62)
#define S_WARMUP_ROUNDS 10
#define S_DEPS_AVG_MAX  100

typedef struct {
    const char *frontend, *events, *type, *dag_name;
    uint64_t jobs, avg_deps, layers, size, pid, seed;
    uint64_t timeout_ms, idle_ms, wait_workers;
    bool run, verbose;
} opts_t;

typedef struct {
    opts_t o;
    void *ctx, *dealer, *sub;
    dq_jobspec_t *specs;
    dq_dep_t *deps;
    uint64_t nedges;
    uint8_t *payload;
    void *body;                 //  the encoded SUBMIT body
    size_t body_size;
    double encode_s;
    uint64_t deadline_ns;
    //  Run state
    char dag_id [128];          //  ours, once SUBMITTED came
    zhashx_t *dags_done;        //  dag id -> state + 1 (events, any order)
    char warm_ids [S_WARMUP_ROUNDS][128];
    int nwarm;
    uint64_t job_events;        //  terminal job events of DAG jobs
    uint64_t last_event_ns;
    uint64_t poll_seq;
    bool poll_waiting;
    bool finished;
    int dag_state;
    uint64_t done_ns;           //  when the DAG was seen terminal
    bool done_by_poll;
    uint32_t dag_counts [DQ_STATE_COUNT_];
} bench_t;

static uint64_t
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_dag [OPTION]...\n"
"Submit one random DAG as a single SUBMIT to a running dagq broker; print\n"
"the time to its SUBMITTED reply, the broker's memory per job and, with\n"
"--run, the end-to-end jobs/s.\n"
"\n"
"  --frontend ENDPOINT    broker frontend (default tcp://127.0.0.1:5555)\n"
"  --events ENDPOINT      broker events PUB (default tcp://127.0.0.1:5557)\n"
"  --jobs N               jobs in the DAG (default 1000000)\n"
"  --avg-deps D           parents per job on average, 0..%d (default 3)\n"
"  --layers L             cut the DAG into L layers (default 0: no layers)\n"
"  --type TYPE            job type (default n: a type no worker runs)\n"
"  --size BYTES           payload per job (default 0)\n"
"  --name NAME            the DAG's name (default bench-dag)\n"
"  --seed S               random seed (default 1)\n"
"  --pid PID              the broker's pid: print its RSS growth per job\n"
"  --run                  wait until the DAG has run (workers for TYPE needed)\n"
"  --wait-workers N       with --run, first wait (up to 30 s) for N workers\n"
"  --timeout SECONDS      give up after this long (default 300)\n"
"  --idle-ms MS           no event for this long: poll DAG (default 2000)\n"
"  -v, --verbose          progress on stderr every second\n"
"  -h, --help             this help\n"
"\n"
"The last line of output is machine-readable: RESULT key=value ...\n"
"Exit status: 0 measured, 1 failure or timeout, 2 usage.\n", S_DEPS_AVG_MAX);
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) {
        .frontend = "tcp://127.0.0.1:5555", .events = "tcp://127.0.0.1:5557",
        .type = "n", .dag_name = "bench-dag", .jobs = 1000000, .avg_deps = 3,
        .seed = 1, .timeout_ms = 300000, .idle_ms = 2000 };
    static const struct option longopts [] = {
        { "frontend", required_argument, NULL, 'f' },
        { "events", required_argument, NULL, 'e' },
        { "jobs", required_argument, NULL, 'n' },
        { "avg-deps", required_argument, NULL, 'd' },
        { "layers", required_argument, NULL, 'l' },
        { "type", required_argument, NULL, 't' },
        { "size", required_argument, NULL, 's' },
        { "name", required_argument, NULL, 'N' },
        { "seed", required_argument, NULL, 'S' },
        { "pid", required_argument, NULL, 'p' },
        { "run", no_argument, NULL, 'r' },
        { "wait-workers", required_argument, NULL, 'W' },
        { "timeout", required_argument, NULL, 'T' },
        { "idle-ms", required_argument, NULL, 'i' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "vh", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'f': o->frontend = optarg; break;
            case 'e': o->events = optarg; break;
            case 'n': rc = dq_parse_u64 (optarg, 1, DQ_PROTO_ARRAY_MAX, &o->jobs); break;
            case 'd': rc = dq_parse_u64 (optarg, 0, S_DEPS_AVG_MAX, &o->avg_deps); break;
            case 'l': rc = dq_parse_u64 (optarg, 0, DQ_PROTO_ARRAY_MAX, &o->layers); break;
            case 't': o->type = optarg; break;
            case 's': rc = dq_parse_u64 (optarg, 0, 1024 * 1024, &o->size); break;
            case 'N': o->dag_name = optarg; break;
            case 'S': rc = dq_parse_u64 (optarg, 0, UINT64_MAX, &o->seed); break;
            case 'p': rc = dq_parse_u64 (optarg, 1, UINT32_MAX, &o->pid); break;
            case 'r': o->run = true; break;
            case 'W': rc = dq_parse_u64 (optarg, 0, 100000, &o->wait_workers); break;
            case 'T': rc = dq_parse_seconds_ms (optarg, 86400, &o->timeout_ms); break;
            case 'i': rc = dq_parse_u64 (optarg, 10, 600000, &o->idle_ms); break;
            case 'v': o->verbose = true; break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            const char *name = "?";
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == c)
                    name = lo->name;
            fprintf (stderr, "bench_dag: bad value for --%s: '%s'\n", name, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "bench_dag: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    if (!*o->type || strlen (o->type) > DQ_PROTO_TYPE_MAX) {
        fprintf (stderr, "bench_dag: --type must be 1..%d bytes\n", DQ_PROTO_TYPE_MAX);
        return -1;
    }
    if (o->layers > o->jobs) {
        fprintf (stderr, "bench_dag: --layers is over --jobs\n");
        return -1;
    }
    return 0;
}

//  xorshift64*: fast, and the same DAG for the same seed everywhere.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

//  Uniform in [0, n), n >= 1.
static uint32_t
s_below (uint64_t *state, uint32_t n)
{
    return (uint32_t) (((s_rand (state) >> 32) * (uint64_t) n) >> 32);
}

//  Draw a parent in [lo, hi) not yet among chosen [0, k).
static uint32_t
s_draw (uint64_t *state, uint32_t lo, uint32_t hi, const dq_dep_t *chosen, uint32_t k)
{
    while (true) {
        uint32_t p = lo + s_below (state, hi - lo);
        bool dup = false;
        for (uint32_t j = 0; j < k && !dup; j++)
            dup = chosen [j].idx == (int32_t) p;
        if (!dup)
            return p;
    }
}

//  Build the job specs and their deps (see the file comment for shapes).
static int
s_build (bench_t *self)
{
    const opts_t *o = &self->o;
    uint32_t n = (uint32_t) o->jobs;
    uint32_t kmax = o->avg_deps? (uint32_t) (2 * o->avg_deps - 1): 0;
    self->specs = calloc (n, sizeof *self->specs);
    self->deps = malloc (((size_t) n * kmax + 1) * sizeof *self->deps);
    self->payload = malloc (o->size? o->size: 1);
    if (!self->specs || !self->deps || !self->payload)
        return -1;
    for (uint64_t i = 0; i < o->size; i++)
        self->payload [i] = (uint8_t) ('a' + i % 26);
    uint64_t state = o->seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (!state)
        state = 1;
    uint32_t width = o->layers? (uint32_t) ((o->jobs + o->layers - 1) / o->layers): 0;
    dq_dep_t *at = self->deps;
    for (uint32_t i = 0; i < n; i++) {
        dq_jobspec_t *spec = &self->specs [i];
        spec->type = o->type;
        spec->payload = o->size? self->payload: NULL;
        spec->payload_size = o->size;
        uint32_t k = kmax? 1 + s_below (&state, kmax): 0;
        //  Where the parents come from: [0, pool); with layers, the first
        //  one from the previous layer [prev, pool).
        uint32_t pool = i, prev = 0;
        if (width) {
            uint32_t layer = i / width;
            pool = layer * width;
            prev = layer? pool - width: 0;
        }
        if (k > pool)
            k = pool;
        spec->deps = k? at: NULL;
        spec->ndeps = k;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t lo = (width && j == 0)? prev: 0;
            at [j] = (dq_dep_t) { .idx = (int32_t) s_draw (&state, lo, pool, at, j) };
        }
        at += k;
        self->nedges += k;
    }
    return 0;
}

//  VmRSS or VmHWM of pid in kB, or -1.
static long
s_proc_kb (uint64_t pid, const char *field)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%" PRIu64 "/status", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    char line [256];
    long kb = -1;
    size_t len = strlen (field);
    while (fgets (line, sizeof line, f))
        if (strncmp (line, field, len) == 0 && line [len] == ':') {
            kb = strtol (line + len + 1, NULL, 10);
            break;
        }
    fclose (f);
    return kb;
}

//  CPU time (user + system) pid has used, in seconds, or -1.
static double
s_proc_cpu_s (uint64_t pid)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%" PRIu64 "/stat", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    char line [1024];
    bool got = fgets (line, sizeof line, f) != NULL;
    fclose (f);
    //  The command name may hold spaces: fields count from its ')'.
    char *p = got? strrchr (line, ')'): NULL;
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    if (sscanf (p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                &utime, &stime) != 2)
        return -1;
    long hz = sysconf (_SC_CLK_TCK);
    return (double) (utime + stime) / (double) (hz > 0? hz: 100);
}

static void
s_free_body (void *data, void *hint)
{
    (void) hint;
    free (data);
}

//  Send an encoded body as a message, handing the buffer to libzmq.
static int
s_send_body (void *sock, const char *cmd, void *body, size_t size)
{
    if (zmq_send (sock, DQ_PROTO_SIGNATURE, DQ_PROTO_SIGNATURE_SIZE, ZMQ_SNDMORE) == -1
    ||  zmq_send (sock, cmd, strlen (cmd), ZMQ_SNDMORE) == -1) {
        free (body);
        return -1;
    }
    zmq_msg_t frame;
    if (zmq_msg_init_data (&frame, body, size, s_free_body, NULL)) {
        free (body);
        return -1;
    }
    if (zmq_msg_send (&frame, sock, 0) == -1) {
        zmq_msg_close (&frame);
        return -1;
    }
    return 0;
}

//  One STATS round trip (proves the connection is up before timing);
//  *workers receives the number of workers connected.
static int
s_stats (bench_t *self, uint64_t seq, uint64_t *workers, uint64_t ms)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_STATS);
    msg.rid = S_RID_STATS | seq;
    if (dq_msg_send (&msg, self->dealer, NULL, 0, 0))
        return -1;
    uint64_t end = s_now_ns () + ms * 1000000ULL;
    while (s_now_ns () < end) {
        zmq_pollitem_t item = { self->dealer, 0, ZMQ_POLLIN, 0 };
        zmq_poll (&item, 1, 100);
        dq_err_t err;
        dq_msg_t *reply;
        while ((reply = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL))) {
            bool ours = reply->rid == msg.rid && reply->cmd == DQ_CMD_STATS_REPLY;
            if (ours && workers)
                *workers = reply->workers_total > reply->nworkers? reply->workers_total
                                                                  : reply->nworkers;
            dq_msg_destroy (&reply);
            if (ours)
                return 0;
        }
    }
    return -1;
}

//  Read every event waiting on the SUB socket: job events count progress,
//  DAG events are remembered by id (ours may come before its SUBMITTED).
static void
s_drain_events (bench_t *self)
{
    while (true) {
        zmq_msg_t topic, body;
        zmq_msg_init (&topic);
        if (zmq_msg_recv (&topic, self->sub, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&topic);
            return;
        }
        uint64_t now = s_now_ns ();
        zmq_msg_init (&body);
        bool two = zmq_msg_more (&topic) && zmq_msg_recv (&body, self->sub, 0) != -1;
        while (zmq_msg_more (two? &body: &topic)) {
            zmq_msg_t extra;
            zmq_msg_init (&extra);
            zmq_msg_recv (&extra, self->sub, 0);
            bool more = zmq_msg_more (&extra);
            zmq_msg_close (&extra);
            if (!more)
                break;
        }
        dq_event_t ev;
        char *strbuf = NULL;
        if (two && dq_event_decode (zmq_msg_data (&topic), zmq_msg_size (&topic),
                                    zmq_msg_data (&body), zmq_msg_size (&body),
                                    &ev, &strbuf) == 0
        &&  dq_state_is_terminal (ev.state)) {
            self->last_event_ns = now;
            if (strcmp (ev.kind, "job") == 0 && ev.dag_id) {
                bool warm = false;
                for (int i = 0; i < self->nwarm && !warm; i++)
                    warm = strcmp (ev.dag_id, self->warm_ids [i]) == 0;
                if (!warm)
                    self->job_events++;
            }
            else
            if (strcmp (ev.kind, "dag") == 0) {
                zhashx_update (self->dags_done, ev.id, (void *) (uintptr_t) (ev.state + 1));
                if (*self->dag_id && strcmp (ev.id, self->dag_id) == 0 && !self->finished) {
                    self->finished = true;
                    self->dag_state = ev.state;
                    self->done_ns = now;
                }
            }
        }
        free (strbuf);
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
}

//  A DAG whose id is in dags_done already ended (its event came first).
static void
s_check_early (bench_t *self, uint64_t now)
{
    void *seen = zhashx_lookup (self->dags_done, self->dag_id);
    if (seen && !self->finished) {
        self->finished = true;
        self->dag_state = (int) ((uintptr_t) seen - 1);
        self->done_ns = now;
    }
}

//  One job end to end before measuring, in a DAG of one: proves workers run
//  the type and that our subscription is in place (a SUB misses what is
//  published before its subscription reaches the PUB).
static int
s_warmup (bench_t *self)
{
    dq_jobspec_t spec = { .type = self->o.type };
    uint64_t end = s_now_ns () + 20000000000ULL;
    for (int round = 0; round < S_WARMUP_ROUNDS && s_now_ns () < end; round++) {
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_SUBMIT);
        msg.rid = S_RID_WARMUP | (uint64_t) round;
        msg.dag_name = "bench-dag-warmup";
        msg.jobs = &spec;
        msg.njobs = 1;
        if (dq_msg_send (&msg, self->dealer, NULL, 0, 0))
            return -1;
        uint64_t round_end = s_now_ns () + 2000000000ULL;
        while (s_now_ns () < round_end) {
            zmq_pollitem_t items [2] = {
                { self->dealer, 0, ZMQ_POLLIN, 0 }, { self->sub, 0, ZMQ_POLLIN, 0 } };
            zmq_poll (items, 2, 100);
            dq_err_t err;
            dq_msg_t *reply;
            while ((reply = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL))) {
                if ((reply->rid & S_RID_WARMUP) && reply->cmd == DQ_CMD_SUBMITTED
                &&  reply->dag_id && self->nwarm < S_WARMUP_ROUNDS)
                    snprintf (self->warm_ids [self->nwarm++], 128, "%s", reply->dag_id);
                else
                if ((reply->rid & S_RID_WARMUP) && reply->cmd == DQ_CMD_ERROR) {
                    fprintf (stderr, "bench_dag: warm-up SUBMIT refused: %s: %s\n",
                             dq_err_str ((int) reply->code),
                             reply->message? reply->message: "");
                    dq_msg_destroy (&reply);
                    return -1;
                }
                dq_msg_destroy (&reply);
            }
            s_drain_events (self);
            for (int i = 0; i < self->nwarm; i++) {
                void *seen = zhashx_lookup (self->dags_done, self->warm_ids [i]);
                if (!seen)
                    continue;
                if ((int) ((uintptr_t) seen - 1) != DQ_STATE_SUCCEEDED)
                    fprintf (stderr, "bench_dag: warm-up DAG %s ended %s\n",
                             self->warm_ids [i], dq_state_str ((int) ((uintptr_t) seen - 1)));
                return 0;
            }
        }
        if (self->o.verbose)
            fprintf (stderr, "bench_dag: warm-up round %d: no DAG event yet\n", round + 1);
    }
    fprintf (stderr, "bench_dag: no DAG event for a warm-up DAG of type '%s' within 20 s: "
             "are workers for it running, and is --events right?\n", self->o.type);
    return -1;
}

static int
s_wait_workers (bench_t *self, uint64_t n)
{
    uint64_t end = s_now_ns () + 30000000000ULL, seen = 0;
    for (uint64_t round = 1; s_now_ns () < end; round++) {
        if (s_stats (self, 1000 + round, &seen, 1000) == 0 && seen >= n)
            return 0;
        zmq_poll (NULL, 0, 200);
    }
    fprintf (stderr, "bench_dag: %" PRIu64 " of %" PRIu64 " workers connected after 30 s\n",
             seen, n);
    return -1;
}

static int
s_send_poll (bench_t *self)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_DAG);
    msg.rid = S_RID_POLL | ++self->poll_seq;
    msg.id = self->dag_id;
    if (dq_msg_send (&msg, self->dealer, NULL, 0, 0))
        return -1;
    self->poll_waiting = true;
    return 0;
}

//  Handle a reply: SUBMITTED (*accepted set), ERROR, DAG_INFO of a poll.
static int
s_handle_reply (bench_t *self, dq_msg_t *msg, uint64_t now, uint64_t *accepted_ns,
                uint64_t t0_ns, uint64_t t0_wall_ms)
{
    if (msg->rid == S_RID_SUBMIT) {
        if (msg->cmd == DQ_CMD_ERROR) {
            fprintf (stderr, "bench_dag: the broker refused the DAG: %s: %s\n",
                     dq_err_str ((int) msg->code), msg->message? msg->message: "");
            return -1;
        }
        if (msg->cmd != DQ_CMD_SUBMITTED || !msg->dag_id || msg->nids != self->o.jobs) {
            fprintf (stderr, "bench_dag: unexpected reply %s to the SUBMIT (%u ids)\n",
                     dq_cmd_str (msg->cmd), msg->nids);
            return -1;
        }
        *accepted_ns = now;
        snprintf (self->dag_id, sizeof self->dag_id, "%s", msg->dag_id);
        s_check_early (self, now);
        return 0;
    }
    if ((msg->rid & S_RID_POLL) && msg->rid == (S_RID_POLL | self->poll_seq)) {
        self->poll_waiting = false;
        if (msg->cmd == DQ_CMD_ERROR) {
            fprintf (stderr, "bench_dag: DAG poll failed: %s: %s\n",
                     dq_err_str ((int) msg->code), msg->message? msg->message: "");
            return -1;
        }
        if (msg->cmd == DQ_CMD_DAG_INFO && msg->dag) {
            const dq_daginfo_t *d = msg->dag;
            self->dag_counts [DQ_STATE_SUCCEEDED] = d->succeeded;
            self->dag_counts [DQ_STATE_FAILED] = d->failed;
            self->dag_counts [DQ_STATE_SKIPPED] = d->skipped;
            self->dag_counts [DQ_STATE_CANCELLED] = d->cancelled;
            if (d->finished_ms && !self->finished) {
                self->finished = true;
                self->done_by_poll = true;
                self->dag_state = d->state;
                //  Its end on our clock, from the broker's wall clock.
                self->done_ns = d->finished_ms > t0_wall_ms
                              ? t0_ns + (d->finished_ms - t0_wall_ms) * 1000000ULL: now;
                if (self->done_ns > now)
                    self->done_ns = now;
            }
        }
    }
    //  Anything else: late replies to warm-ups or STATS.
    return 0;
}

static int
s_run (bench_t *self)
{
    const opts_t *o = &self->o;
    uint64_t workers = 0;
    if (s_stats (self, 1, &workers, 10000)) {
        fprintf (stderr, "bench_dag: no STATS reply from %s within 10 s\n", o->frontend);
        return -1;
    }
    if (o->run) {
        if (o->wait_workers && s_wait_workers (self, o->wait_workers))
            return -1;
        if (s_warmup (self))
            return -1;
    }
    long rss0 = 0;
    double cpu0 = o->pid? s_proc_cpu_s (o->pid): -1, cpu1 = -1;
    if (o->pid && (rss0 = s_proc_kb (o->pid, "VmRSS")) < 0) {
        fprintf (stderr, "bench_dag: cannot read /proc/%" PRIu64 "/status\n", o->pid);
        return -1;
    }
    uint64_t t0_ns = s_now_ns (), t0_wall_ms = dq_now_ms ();
    void *body = self->body;
    self->body = NULL;                  //  libzmq owns it now
    if (s_send_body (self->dealer, "SUBMIT", body, self->body_size)) {
        fprintf (stderr, "bench_dag: cannot send the SUBMIT: %s\n", zmq_strerror (errno));
        return -1;
    }
    self->last_event_ns = t0_ns;
    uint64_t accepted_ns = 0, next_progress = t0_ns + 1000000000ULL, last_poll_ns = 0;
    long rss1 = -1, hwm = -1;
    while (!accepted_ns || (o->run && !self->finished)) {
        uint64_t now = s_now_ns ();
        if (now >= self->deadline_ns) {
            fprintf (stderr, "bench_dag: timeout: %s after %.1f s (%" PRIu64 " job events)\n",
                     accepted_ns? "the DAG did not finish": "no reply to the SUBMIT",
                     (double) (now - t0_ns) / 1e9, self->job_events);
            return 1;
        }
        if (accepted_ns && o->run && !self->poll_waiting
        &&  now - self->last_event_ns > o->idle_ms * 1000000ULL
        &&  now - last_poll_ns > o->idle_ms * 1000000ULL) {
            if (s_send_poll (self))
                return -1;
            last_poll_ns = now;
        }
        zmq_pollitem_t items [2] = {
            { self->dealer, 0, ZMQ_POLLIN, 0 }, { self->sub, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll (items, o->run? 2: 1, 100) == -1 && errno != EINTR)
            return -1;
        if (o->run)
            s_drain_events (self);
        now = s_now_ns ();
        dq_err_t err;
        char reason [256];
        dq_msg_t *reply;
        while ((reply = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, reason))) {
            bool was = accepted_ns != 0;
            int rc = s_handle_reply (self, reply, now, &accepted_ns, t0_ns, t0_wall_ms);
            dq_msg_destroy (&reply);
            if (rc)
                return -1;
            if (!was && accepted_ns && o->pid) {
                rss1 = s_proc_kb (o->pid, "VmRSS");
                hwm = s_proc_kb (o->pid, "VmHWM");
                cpu1 = s_proc_cpu_s (o->pid);
            }
        }
        if (err != DQ_OK)
            fprintf (stderr, "bench_dag: bad reply: %s\n", reason);
        if (o->verbose && now >= next_progress) {
            fprintf (stderr, "  %.0f s: %s, %" PRIu64 " job events\n",
                     (double) (now - t0_ns) / 1e9, accepted_ns? "accepted": "not accepted yet",
                     self->job_events);
            next_progress += 1000000000ULL;
        }
    }

    double accept_s = (double) (accepted_ns - t0_ns) / 1e9;
    printf ("dag         %" PRIu64 " jobs of type %s, payload %" PRIu64 " B, %" PRIu64
            " edges (%.2f per job), %s\n", o->jobs, o->type, o->size, self->nedges,
            (double) self->nedges / (double) o->jobs,
            o->layers? "layered": "parents uniform over earlier jobs");
    if (o->layers)
        printf ("layers      %" PRIu64 " of %" PRIu64 " jobs\n", o->layers,
                (o->jobs + o->layers - 1) / o->layers);
    printf ("message     one SUBMIT of %.1f MiB (%zu bytes), encoded in %.3f s\n",
            (double) self->body_size / 1048576.0, self->body_size, self->encode_s);
    printf ("accepted    in %.3f s (SUBMIT sent -> SUBMITTED read) = %.0f jobs/s, dag %s\n",
            accept_s, (double) o->jobs / accept_s, self->dag_id);
    double cpu_s = (cpu0 >= 0 && cpu1 >= 0)? cpu1 - cpu0: -1;
    if (cpu_s >= 0)
        printf ("broker CPU  %.2f s (user + system, all its threads) while accepting\n", cpu_s);
    double per_job = 0;
    if (o->pid && rss1 >= 0) {
        per_job = (double) (rss1 - rss0) * 1024.0 / (double) o->jobs;
        printf ("broker RSS  %.1f MiB -> %.1f MiB (+%.1f MiB) = %.1f bytes per job; "
                "peak %.1f MiB\n", rss0 / 1024.0, rss1 / 1024.0, (rss1 - rss0) / 1024.0,
                per_job, hwm / 1024.0);
    }
    double e2e_s = 0, e2e_rate = 0, run_s = 0, run_rate = 0;
    if (o->run) {
        e2e_s = (double) (self->done_ns - t0_ns) / 1e9;
        e2e_rate = e2e_s > 0? (double) o->jobs / e2e_s: 0;
        //  The jobs start running while the SUBMITTED reply is sent: the
        //  time after it is the DAG's execution alone.
        run_s = self->done_ns > accepted_ns? (double) (self->done_ns - accepted_ns) / 1e9: 0;
        run_rate = run_s > 0? (double) o->jobs / run_s: 0;
        printf ("completed   %s in %.3f s (SUBMIT sent -> DAG %s) = %.0f jobs/s end to end\n",
                dq_state_str (self->dag_state), e2e_s,
                self->done_by_poll? "seen terminal by polling DAG": "event read", e2e_rate);
        printf ("            %.3f s after SUBMITTED = %.0f jobs/s once accepted\n", run_s,
                run_rate);
        printf ("            %" PRIu64 " job events read%s\n", self->job_events,
                self->job_events < o->jobs? " (the PUB dropped some; the DAG's own state "
                                            "is what counts)": "");
    }
    printf ("RESULT jobs=%" PRIu64 " edges=%" PRIu64 " msg_bytes=%zu encode_s=%.3f"
            " accept_s=%.3f broker_cpu_s=%.2f rss_before_kb=%ld rss_after_kb=%ld hwm_kb=%ld"
            " rss_per_job=%.1f", o->jobs, self->nedges, self->body_size, self->encode_s,
            accept_s, cpu_s, rss0, rss1, hwm, per_job);
    if (o->run)
        printf (" e2e_s=%.3f e2e_rate=%.0f run_s=%.3f run_rate=%.0f state=%s job_events=%" PRIu64,
                e2e_s, e2e_rate, run_s, run_rate, dq_state_str (self->dag_state),
                self->job_events);
    printf ("\n");
    return (o->run && self->dag_state != DQ_STATE_SUCCEEDED)? 1: 0;
}

int
main (int argc, char **argv)
{
    bench_t self;
    memset (&self, 0, sizeof self);
    if (s_parse (argc, argv, &self.o))
        return 2;
    const opts_t *o = &self.o;
    zsys_init ();
    zsys_handler_set (NULL);            //  default SIGINT: stop at once
    self.deadline_ns = s_now_ns () + o->timeout_ms * 1000000ULL;
    self.dags_done = zhashx_new ();
    if (!self.dags_done || s_build (&self)) {
        fprintf (stderr, "bench_dag: out of memory\n");
        return 1;
    }
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_SUBMIT);
    msg.rid = S_RID_SUBMIT;
    msg.dag_name = o->dag_name;
    msg.jobs = self.specs;
    msg.njobs = (uint32_t) o->jobs;
    uint64_t t = s_now_ns ();
    if (dq_msg_encode (&msg, &self.body, &self.body_size)) {
        fprintf (stderr, "bench_dag: the DAG cannot be encoded (over a protocol limit)\n");
        return 1;
    }
    self.encode_s = (double) (s_now_ns () - t) / 1e9;
    //  The specs are in the body now; give their memory back.
    free (self.specs);
    free (self.deps);
    self.specs = NULL;
    self.deps = NULL;

    self.ctx = zmq_ctx_new ();
    self.dealer = zmq_socket (self.ctx, ZMQ_DEALER);
    self.sub = zmq_socket (self.ctx, ZMQ_SUB);
    int zero = 0, timeout = 30000;
    zmq_setsockopt (self.dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self.dealer, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt (self.dealer, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt (self.sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self.sub, ZMQ_RCVHWM, &zero, sizeof zero);
    int status = 1;
    if (o->run) {
        zmq_setsockopt (self.sub, ZMQ_SUBSCRIBE, "dag ", 4);
        zmq_setsockopt (self.sub, ZMQ_SUBSCRIBE, "job ", 4);
        if (zmq_connect (self.sub, o->events)) {
            fprintf (stderr, "bench_dag: cannot connect to %s: %s\n", o->events,
                     zmq_strerror (errno));
            goto done;
        }
    }
    if (zmq_connect (self.dealer, o->frontend)) {
        fprintf (stderr, "bench_dag: cannot connect to %s: %s\n", o->frontend,
                 zmq_strerror (errno));
        goto done;
    }
    int rc = s_run (&self);
    status = rc == 0? 0: 1;
done:
    zmq_close (self.dealer);
    zmq_close (self.sub);
    zmq_ctx_term (self.ctx);
    zhashx_destroy (&self.dags_done);
    free (self.body);
    free (self.specs);
    free (self.deps);
    free (self.payload);
    return status;
}
