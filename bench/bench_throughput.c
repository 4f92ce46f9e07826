/*  bench_throughput - end-to-end throughput and latency of a running broker.

    Starts nothing: connects to a broker that has workers for --type. One
    DEALER pipelines SUBMIT messages of --batch jobs each, with at most
    --window jobs sent but not yet acknowledged (SUBMITTED); a SUB socket
    subscribed to "job " sees completions. Latency is measured from the
    moment the SUBMIT carrying a job was sent to the moment its completion
    event is read, matched by job id; the event's own latency_us (broker
    side, created to terminal, ms resolution) is reported as a cross-check.

    PUB drops events for a slow subscriber. When completions stop coming,
    the jobs still unseen are polled with STATUS; they count as completed
    (by their finished_ms) but carry no latency, and are reported as lost
    events. With --rate the submissions are paced (to measure latency below
    the maximum rate). Bounded in time by --timeout.

    Uses dq_proto directly (dq_msg_send, dq_msg_recv, dq_event_decode), not
    the client library. Exit status: 0 every job succeeded, 1 failures,
    timeout or broker errors, 2 usage.
*/
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dq_proto.h"
#include "dq_util.h"

#define S_STATUS_BATCH   1000        //  ids per STATUS request when polling
#define S_RID_WARMUP     (1ULL << 62)
#define S_RID_STATUS     (1ULL << 63)

typedef struct {
    const char *frontend, *events, *type, *latency_file;
    uint64_t jobs, size, window, batch, rate, max_outstanding;
    uint64_t timeout_ms, idle_ms, wait_workers;
    bool verbose;
} opts_t;

typedef struct {
    uint64_t send_ns;           //  when its latest SUBMIT was sent
    uint32_t first, count;      //  job ordinals [first, first + count)
    uint32_t attempt;           //  SUBMIT attempts (BUSY makes us resend)
    bool acked;
} batch_t;

typedef struct {
    opts_t o;
    void *ctx, *dealer, *sub;
    dq_jobspec_t *specs;        //  one batch worth, all sharing payload
    uint8_t *payload;
    batch_t *batches;
    uint32_t nbatches, next_batch;
    uint32_t *retry;            //  batches refused with BUSY, to resend
    uint32_t nretry;
    uint64_t retry_at_ns;
    zhashx_t *pending;          //  id -> ordinal + 1: acked, not seen done
    zhashx_t *early;            //  id -> recv ns << 3 | state: its event came
                                //  before its SUBMITTED
    uint8_t *done;              //  per ordinal: 0, 1 by event, 2 by STATUS
    uint64_t *lat_ns;           //  per ordinal, when done by event
    uint64_t *broker_us;        //  per ordinal: the event's latency_us
    uint64_t sent_jobs;         //  jobs in SUBMITs sent (first attempts)
    uint64_t unacked;           //  jobs sent, reply not yet read
    uint64_t acked, completed, by_event, by_status, failed;
    uint64_t t0_ns, t0_wall_ms, last_ack_ns, last_done_ns, last_event_ns;
    uint64_t proto_errors, busy_replies;
    uint64_t status_rid;        //  rid of the STATUS request in flight
    bool status_waiting;
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
"Usage: bench_throughput [OPTION]...\n"
"Push jobs through a running dagq broker and its workers; print jobs/s and\n"
"latency percentiles (submit sent -> completion event read).\n"
"\n"
"  --frontend ENDPOINT    broker frontend (default tcp://127.0.0.1:5555)\n"
"  --events ENDPOINT      broker events PUB (default tcp://127.0.0.1:5557)\n"
"  --jobs N               jobs to run (default 200000)\n"
"  --size BYTES           payload size (default 100)\n"
"  --type TYPE            job type (default echo)\n"
"  --window W             jobs sent but not yet acknowledged, at most (default 20000)\n"
"  --batch B              jobs per SUBMIT (default 100)\n"
"  --rate R               pace submissions at R jobs/s (default: as fast as allowed)\n"
"  --max-outstanding M    jobs submitted but not completed, at most (default 0: no limit)\n"
"  --timeout SECONDS      give up after this long (default 300)\n"
"  --idle-ms MS           no completion for this long: poll STATUS (default 2000)\n"
"  --wait-workers N       first wait (up to 30 s) until N workers are connected\n"
"  --latency-file PATH    write one line per job seen by event: microseconds from\n"
"                         the start to its SUBMIT, and its latency (to find stalls)\n"
"  -v, --verbose          progress on stderr every second\n"
"  -h, --help             this help\n"
"\n"
"The last line of output is machine-readable: RESULT key=value ...\n"
"Exit status: 0 all jobs succeeded, 1 failures or timeout, 2 usage.\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) {
        .frontend = "tcp://127.0.0.1:5555", .events = "tcp://127.0.0.1:5557",
        .type = "echo", .jobs = 200000, .size = 100, .window = 20000,
        .batch = 100, .rate = 0, .max_outstanding = 0, .timeout_ms = 300000,
        .idle_ms = 2000 };
    static const struct option longopts [] = {
        { "frontend", required_argument, NULL, 'f' },
        { "events", required_argument, NULL, 'e' },
        { "jobs", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "type", required_argument, NULL, 't' },
        { "window", required_argument, NULL, 'w' },
        { "batch", required_argument, NULL, 'b' },
        { "rate", required_argument, NULL, 'r' },
        { "max-outstanding", required_argument, NULL, 'm' },
        { "timeout", required_argument, NULL, 'T' },
        { "idle-ms", required_argument, NULL, 'i' },
        { "wait-workers", required_argument, NULL, 'W' },
        { "latency-file", required_argument, NULL, 'L' },
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
            case 't': o->type = optarg; break;
            case 'n': rc = dq_parse_u64 (optarg, 1, 100000000, &o->jobs); break;
            case 's': rc = dq_parse_u64 (optarg, 0, DQ_PROTO_PAYLOAD_MAX, &o->size); break;
            case 'w': rc = dq_parse_u64 (optarg, 1, 100000000, &o->window); break;
            case 'b': rc = dq_parse_u64 (optarg, 1, 100000, &o->batch); break;
            case 'r': rc = dq_parse_u64 (optarg, 0, 100000000, &o->rate); break;
            case 'm': rc = dq_parse_u64 (optarg, 0, 100000000, &o->max_outstanding); break;
            case 'T': rc = dq_parse_seconds_ms (optarg, 86400, &o->timeout_ms); break;
            case 'i': rc = dq_parse_u64 (optarg, 10, 600000, &o->idle_ms); break;
            case 'W': rc = dq_parse_u64 (optarg, 0, 100000, &o->wait_workers); break;
            case 'L': o->latency_file = optarg; break;
            case 'v': o->verbose = true; break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            const char *name = "?";
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == c)
                    name = lo->name;
            fprintf (stderr, "bench_throughput: bad value for --%s: '%s'\n", name, optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "bench_throughput: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    if (o->batch > o->window)
        o->batch = o->window;
    if (o->max_outstanding && o->batch > o->max_outstanding)
        o->batch = o->max_outstanding;
    return 0;
}

//  Send batch b (again, after BUSY, with a new attempt number).
static int
s_send_batch (bench_t *self, uint32_t b)
{
    batch_t *bt = &self->batches [b];
    bt->attempt++;
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_SUBMIT);
    msg.rid = ((uint64_t) bt->attempt << 32) | (b + 1);
    msg.jobs = self->specs;
    msg.njobs = bt->count;
    bt->send_ns = s_now_ns ();
    if (dq_msg_send (&msg, self->dealer, NULL, 0, 0)) {
        fprintf (stderr, "bench_throughput: cannot send SUBMIT: %s\n", zmq_strerror (errno));
        return -1;
    }
    self->unacked += bt->count;
    return 0;
}

//  A job is done; latency when seen by event (recv_ns != 0).
static void
s_job_done (bench_t *self, uint32_t ordinal, int state, uint64_t recv_ns,
            uint64_t broker_us, bool by_event)
{
    if (self->done [ordinal])
        return;
    self->done [ordinal] = by_event? 1: 2;
    self->completed++;
    if (by_event) {
        self->by_event++;
        batch_t *bt = &self->batches [ordinal / self->o.batch];
        self->lat_ns [ordinal] = recv_ns > bt->send_ns? recv_ns - bt->send_ns: 0;
        self->broker_us [ordinal] = broker_us;
        if (recv_ns > self->last_done_ns)
            self->last_done_ns = recv_ns;
    }
    else
        self->by_status++;
    if (state != DQ_STATE_SUCCEEDED)
        self->failed++;
}

static void
s_handle_submitted (bench_t *self, dq_msg_t *msg)
{
    uint32_t b = (uint32_t) (msg->rid & 0xffffffffu);
    uint32_t attempt = (uint32_t) (msg->rid >> 32);
    if (b == 0 || b > self->next_batch) {
        self->proto_errors++;
        return;
    }
    batch_t *bt = &self->batches [b - 1];
    if (bt->acked || attempt != bt->attempt || msg->nids != bt->count) {
        self->proto_errors++;
        return;
    }
    bt->acked = true;
    self->unacked -= bt->count;
    self->acked += bt->count;
    self->last_ack_ns = s_now_ns ();
    for (uint32_t i = 0; i < msg->nids; i++) {
        uint32_t ordinal = bt->first + i;
        void *seen = zhashx_lookup (self->early, msg->ids [i]);
        if (seen) {
            //  Its event came before this reply (two sockets, no order).
            uint64_t packed = (uint64_t) (uintptr_t) seen;
            zhashx_delete (self->early, msg->ids [i]);
            s_job_done (self, ordinal, (int) (packed & 7), packed >> 3, 0, true);
        }
        else
            zhashx_insert (self->pending, msg->ids [i], (void *) (uintptr_t) (ordinal + 1));
    }
}

static int
s_handle_error (bench_t *self, dq_msg_t *msg)
{
    uint64_t low = msg->rid & 0xffffffffu;
    if (msg->code == DQ_ERR_BUSY && low >= 1 && low <= self->next_batch) {
        //  Over the broker's queue limits: send that batch again later.
        batch_t *bt = &self->batches [low - 1];
        if (bt->acked || (uint32_t) (msg->rid >> 32) != bt->attempt)
            return 0;
        self->unacked -= bt->count;
        self->busy_replies++;
        self->retry [self->nretry++] = (uint32_t) low - 1;
        uint64_t wait = msg->retry_ms? msg->retry_ms: 100;
        self->retry_at_ns = s_now_ns () + wait * 1000000ULL;
        return 0;
    }
    fprintf (stderr, "bench_throughput: broker error %s: %s\n", dq_err_str ((int) msg->code),
             msg->message? msg->message: "(no message)");
    return -1;
}

static void
s_handle_jobs (bench_t *self, dq_msg_t *msg)
{
    self->status_waiting = false;
    for (uint32_t i = 0; i < msg->ninfos; i++) {
        const dq_jobinfo_t *info = &msg->infos [i];
        if (!info->id || !dq_state_is_terminal (info->state))
            continue;
        void *item = zhashx_lookup (self->pending, info->id);
        if (!item)
            continue;
        uint32_t ordinal = (uint32_t) ((uintptr_t) item - 1);
        zhashx_delete (self->pending, info->id);
        s_job_done (self, ordinal, info->state, 0, 0, false);
        //  The completion time on our clock, from its wall-clock finish.
        if (info->finished_ms > self->t0_wall_ms) {
            uint64_t at = self->t0_ns + (info->finished_ms - self->t0_wall_ms) * 1000000ULL;
            if (at > self->last_done_ns)
                self->last_done_ns = at;
        }
    }
}

//  Read every reply waiting on the DEALER. Returns -1 on a fatal error.
static int
s_drain_dealer (bench_t *self)
{
    while (true) {
        dq_err_t err;
        char reason [256];
        dq_msg_t *msg = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, reason);
        if (!msg) {
            if (err == DQ_OK)
                return 0;
            self->proto_errors++;
            fprintf (stderr, "bench_throughput: bad reply (%s): %s\n", dq_err_str (err), reason);
            continue;
        }
        int rc = 0;
        if (msg->rid & S_RID_STATUS) {
            if (msg->cmd == DQ_CMD_JOBS && msg->rid == self->status_rid)
                s_handle_jobs (self, msg);
            else
            if (msg->cmd == DQ_CMD_ERROR) {
                fprintf (stderr, "bench_throughput: STATUS failed: %s: %s\n",
                         dq_err_str ((int) msg->code), msg->message? msg->message: "");
                rc = -1;
            }
        }
        else
        if (msg->rid & S_RID_WARMUP)
            ;                               //  a late reply to a warm-up
        else
        if (msg->cmd == DQ_CMD_SUBMITTED)
            s_handle_submitted (self, msg);
        else
        if (msg->cmd == DQ_CMD_ERROR)
            rc = s_handle_error (self, msg);
        else
            self->proto_errors++;
        dq_msg_destroy (&msg);
        if (rc)
            return -1;
    }
}

//  Read every event waiting on the SUB socket.
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
        //  Anything beyond two frames is not an event of ours.
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
        &&  strcmp (ev.kind, "job") == 0 && dq_state_is_terminal (ev.state)) {
            self->last_event_ns = now;
            void *item = zhashx_lookup (self->pending, ev.id);
            if (item) {
                uint32_t ordinal = (uint32_t) ((uintptr_t) item - 1);
                zhashx_delete (self->pending, ev.id);
                s_job_done (self, ordinal, ev.state, now, ev.latency_us, true);
            }
            else
                zhashx_insert (self->early, ev.id,
                               (void *) (uintptr_t) (now << 3 | (uint64_t) ev.state));
        }
        free (strbuf);
        zmq_msg_close (&topic);
        zmq_msg_close (&body);
    }
}

//  Wait up to ms for either socket, then read what came.
static int
s_poll (bench_t *self, long ms)
{
    zmq_pollitem_t items [2] = {
        { self->dealer, 0, ZMQ_POLLIN, 0 }, { self->sub, 0, ZMQ_POLLIN, 0 } };
    if (zmq_poll (items, 2, ms) == -1 && errno != EINTR)
        return -1;
    s_drain_events (self);
    return s_drain_dealer (self);
}

//  One job through the whole path before measuring: proves that a worker
//  runs the type and that our subscription is in place (a SUB misses what
//  is published before its subscription reaches the PUB).
static int
s_warmup (bench_t *self)
{
    uint64_t deadline = s_now_ns () + 20000000000ULL;
    for (int round = 1; s_now_ns () < deadline; round++) {
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_SUBMIT);
        msg.rid = S_RID_WARMUP | (uint64_t) round;
        msg.jobs = self->specs;
        msg.njobs = 1;
        if (dq_msg_send (&msg, self->dealer, NULL, 0, 0))
            return -1;
        char id [300] = "";
        uint64_t round_end = s_now_ns () + 2000000000ULL;
        bool seen = false;
        while (s_now_ns () < round_end && !seen) {
            zmq_pollitem_t items [2] = {
                { self->dealer, 0, ZMQ_POLLIN, 0 }, { self->sub, 0, ZMQ_POLLIN, 0 } };
            zmq_poll (items, 2, 100);
            dq_err_t err;
            dq_msg_t *reply;
            while ((reply = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL))) {
                if (reply->rid == msg.rid && reply->cmd == DQ_CMD_SUBMITTED && reply->nids == 1)
                    snprintf (id, sizeof id, "%s", reply->ids [0]);
                else
                if (reply->rid == msg.rid && reply->cmd == DQ_CMD_ERROR) {
                    fprintf (stderr, "bench_throughput: warm-up SUBMIT refused: %s: %s\n",
                             dq_err_str ((int) reply->code),
                             reply->message? reply->message: "");
                    dq_msg_destroy (&reply);
                    return -1;
                }
                dq_msg_destroy (&reply);
            }
            zmq_msg_t topic, body;
            zmq_msg_init (&topic);
            zmq_msg_init (&body);
            while (zmq_msg_recv (&topic, self->sub, ZMQ_DONTWAIT) != -1) {
                if (zmq_msg_more (&topic) && zmq_msg_recv (&body, self->sub, 0) != -1) {
                    dq_event_t ev;
                    char *strbuf = NULL;
                    if (*id && dq_event_decode (zmq_msg_data (&topic), zmq_msg_size (&topic),
                                                zmq_msg_data (&body), zmq_msg_size (&body),
                                                &ev, &strbuf) == 0
                    &&  strcmp (ev.id, id) == 0 && dq_state_is_terminal (ev.state)) {
                        seen = true;
                        if (ev.state != DQ_STATE_SUCCEEDED)
                            fprintf (stderr, "bench_throughput: warm-up job %s ended %s\n",
                                     id, dq_state_str (ev.state));
                    }
                    free (strbuf);
                }
            }
            zmq_msg_close (&topic);
            zmq_msg_close (&body);
        }
        if (seen)
            return 0;
        if (self->o.verbose)
            fprintf (stderr, "bench_throughput: warm-up round %d: no event yet\n", round);
    }
    fprintf (stderr, "bench_throughput: no completion event for a warm-up job of type '%s' "
             "within 20 s: are workers for it running, and is --events right?\n",
             self->o.type);
    return -1;
}

//  Ask STATUS about up to S_STATUS_BATCH jobs still unseen.
static int
s_send_status (bench_t *self)
{
    const char **ids = malloc (S_STATUS_BATCH * sizeof *ids);
    char (*buf) [260] = malloc (S_STATUS_BATCH * 260);
    if (!ids || !buf) {
        free (ids);
        free (buf);
        return -1;
    }
    uint32_t n = 0;
    for (void *item = zhashx_first (self->pending); item && n < S_STATUS_BATCH;
         item = zhashx_next (self->pending)) {
        snprintf (buf [n], 260, "%s", (const char *) zhashx_cursor (self->pending));
        ids [n] = buf [n];
        n++;
    }
    int rc = 0;
    if (n) {
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_STATUS);
        msg.rid = self->status_rid = S_RID_STATUS | ((self->status_rid + 1) & 0xffffffffu);
        msg.ids = ids;
        msg.nids = n;
        rc = dq_msg_send (&msg, self->dealer, NULL, 0, 0);
        self->status_waiting = rc == 0;
    }
    free (ids);
    free (buf);
    return rc;
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

static uint64_t
s_pct (const uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t) (q * (double) n);
    if (i >= n)
        i = n - 1;
    return v [i];
}

//  One line per job seen by event: when its SUBMIT went out (µs from the
//  start) and its latency (µs). Stalls show as runs of high latencies.
static void
s_write_latencies (bench_t *self, const char *path)
{
    FILE *file = fopen (path, "w");
    if (!file) {
        fprintf (stderr, "bench_throughput: cannot write %s: %s\n", path, strerror (errno));
        return;
    }
    for (uint64_t i = 0; i < self->o.jobs; i++)
        if (self->done [i] == 1)
            fprintf (file, "%" PRIu64 " %" PRIu64 "\n",
                     (self->batches [i / self->o.batch].send_ns - self->t0_ns) / 1000,
                     self->lat_ns [i] / 1000);
    if (fclose (file))
        fprintf (stderr, "bench_throughput: cannot write %s: %s\n", path, strerror (errno));
}

static int
s_report (bench_t *self, bool timed_out)
{
    const opts_t *o = &self->o;
    double submit_s = self->last_ack_ns > self->t0_ns
                    ? (double) (self->last_ack_ns - self->t0_ns) / 1e9: 0;
    double e2e_s = self->last_done_ns > self->t0_ns
                 ? (double) (self->last_done_ns - self->t0_ns) / 1e9: 0;
    double submit_rate = submit_s > 0? (double) self->acked / submit_s: 0;
    double e2e_rate = e2e_s > 0? (double) self->completed / e2e_s: 0;

    uint64_t *lat = malloc ((self->by_event + 1) * sizeof *lat);
    uint64_t *blat = malloc ((self->by_event + 1) * sizeof *blat);
    size_t n = 0, nb = 0;
    for (uint64_t i = 0; lat && blat && i < o->jobs; i++)
        if (self->done [i] == 1) {
            lat [n++] = self->lat_ns [i];
            if (self->broker_us [i])
                blat [nb++] = self->broker_us [i];
        }
    if (o->latency_file)
        s_write_latencies (self, o->latency_file);
    if (lat)
        qsort (lat, n, sizeof *lat, s_cmp_u64);
    if (blat)
        qsort (blat, nb, sizeof *blat, s_cmp_u64);
    double p50 = (double) s_pct (lat, n, 0.50) / 1e6, p90 = (double) s_pct (lat, n, 0.90) / 1e6;
    double p99 = (double) s_pct (lat, n, 0.99) / 1e6, pmax = n? (double) lat [n - 1] / 1e6: 0;
    double bp50 = (double) s_pct (blat, nb, 0.50) / 1e3, bp99 = (double) s_pct (blat, nb, 0.99) / 1e3;

    printf ("jobs        %" PRIu64 " of type %s, payload %" PRIu64 " B, batch %" PRIu64
            ", window %" PRIu64 ", rate %s\n", o->jobs, o->type, o->size, o->batch,
            o->window, o->rate? "paced": "max");
    if (o->rate)
        printf ("pacing      %" PRIu64 " jobs/s requested\n", o->rate);
    printf ("submitted   %" PRIu64 " acknowledged in %.3f s = %.0f jobs/s",
            self->acked, submit_s, submit_rate);
    if (self->busy_replies)
        printf (" (%" PRIu64 " BUSY replies, resent)", self->busy_replies);
    printf ("\ncompleted   %" PRIu64 " in %.3f s = %.0f jobs/s end to end\n",
            self->completed, e2e_s, e2e_rate);
    printf ("            %" PRIu64 " seen by event, %" PRIu64 " by STATUS polling",
            self->by_event, self->by_status);
    if (self->by_status)
        printf (" (the PUB dropped %" PRIu64 " events)", self->by_status);
    printf ("\n");
    if (self->failed)
        printf ("failed      %" PRIu64 " jobs did not succeed\n", self->failed);
    printf ("latency     submit -> completion event, %zu jobs: p50 %.3f ms  p90 %.3f ms  "
            "p99 %.3f ms  max %.3f ms\n", n, p50, p90, p99, pmax);
    printf ("broker      created -> terminal (event latency_us, ms resolution): "
            "p50 %.3f ms  p99 %.3f ms\n", bp50, bp99);
    if (self->proto_errors)
        printf ("warning     %" PRIu64 " unexpected or malformed replies\n", self->proto_errors);
    if (timed_out)
        printf ("TIMEOUT     gave up after %.1f s with %" PRIu64 " of %" PRIu64 " jobs done\n",
                (double) o->timeout_ms / 1000, self->completed, o->jobs);
    printf ("RESULT jobs=%" PRIu64 " completed=%" PRIu64 " failed=%" PRIu64
            " lost_events=%" PRIu64 " submit_rate=%.0f e2e_rate=%.0f p50_ms=%.3f"
            " p90_ms=%.3f p99_ms=%.3f max_ms=%.3f rate=%" PRIu64 "\n",
            o->jobs, self->completed, self->failed, self->by_status, submit_rate,
            e2e_rate, p50, p90, p99, pmax, o->rate);
    free (lat);
    free (blat);
    return (timed_out || self->failed || self->completed < o->jobs)? 1: 0;
}

//  Ask STATS until at least n workers are connected (30 s at most).
static int
s_wait_workers (bench_t *self, uint64_t n)
{
    uint64_t deadline = s_now_ns () + 30000000000ULL;
    uint64_t seen = 0;
    for (uint64_t round = 1; s_now_ns () < deadline; round++) {
        dq_msg_t msg;
        dq_msg_init (&msg, DQ_CMD_STATS);
        msg.rid = S_RID_WARMUP | (1ULL << 40) | round;
        if (dq_msg_send (&msg, self->dealer, NULL, 0, 0))
            return -1;
        uint64_t round_end = s_now_ns () + 1000000000ULL;
        while (s_now_ns () < round_end) {
            zmq_pollitem_t item = { self->dealer, 0, ZMQ_POLLIN, 0 };
            zmq_poll (&item, 1, 100);
            dq_err_t err;
            dq_msg_t *reply = dq_msg_recv (self->dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL);
            if (!reply)
                continue;
            bool ours = reply->rid == msg.rid && reply->cmd == DQ_CMD_STATS_REPLY;
            if (ours) {
                seen = reply->workers_total > reply->nworkers? reply->workers_total
                                                              : reply->nworkers;
            }
            dq_msg_destroy (&reply);
            if (ours) {
                if (seen >= n)
                    return 0;
                //  Not yet: ask again in a while.
                zmq_poll (NULL, 0, 200);
                break;
            }
        }
    }
    fprintf (stderr, "bench_throughput: %" PRIu64 " of %" PRIu64 " workers connected "
             "after 30 s\n", seen, n);
    return -1;
}

static int
s_run (bench_t *self)
{
    const opts_t *o = &self->o;
    if (o->wait_workers && s_wait_workers (self, o->wait_workers))
        return -1;
    if (s_warmup (self))
        return -1;
    self->t0_ns = s_now_ns ();
    self->t0_wall_ms = dq_now_ms ();
    self->last_event_ns = self->t0_ns;
    uint64_t deadline = self->t0_ns + o->timeout_ms * 1000000ULL;
    uint64_t next_progress = self->t0_ns + 1000000000ULL;
    uint64_t last_status_ns = 0;
    while (self->completed < o->jobs) {
        uint64_t now = s_now_ns ();
        if (now >= deadline)
            return 1;
        //  Send what the window, the pacing and BUSY allow.
        long wait_ms = 100;
        while (true) {
            uint32_t b;
            bool is_retry = self->nretry > 0;
            if (is_retry) {
                if (now < self->retry_at_ns) {
                    wait_ms = (long) ((self->retry_at_ns - now) / 1000000) + 1;
                    break;
                }
                b = self->retry [0];
            }
            else
            if (self->next_batch < self->nbatches)
                b = self->next_batch;
            else
                break;
            uint32_t count = self->batches [b].count;
            if (self->unacked + count > o->window)
                break;
            if (o->max_outstanding
            &&  self->sent_jobs - self->completed + (is_retry? 0: count) > o->max_outstanding)
                break;
            if (o->rate && !is_retry) {
                uint64_t due = self->t0_ns + self->sent_jobs * 1000000000ULL / o->rate;
                if (now < due) {
                    //  Sleep at least 1 ms and then send what is due at
                    //  once: a busy wait would take a core from the broker.
                    wait_ms = (long) ((due - now) / 1000000);
                    if (wait_ms < 1)
                        wait_ms = 1;
                    break;
                }
            }
            if (s_send_batch (self, b))
                return -1;
            if (is_retry)
                memmove (self->retry, self->retry + 1, --self->nretry * sizeof (uint32_t));
            else {
                self->next_batch++;
                self->sent_jobs += count;
            }
            now = s_now_ns ();
        }
        //  Completions stopped coming although everything was acknowledged:
        //  the PUB dropped some. Ask STATUS about the rest.
        if (self->acked == o->jobs && !self->status_waiting
        &&  now - self->last_event_ns > o->idle_ms * 1000000ULL
        &&  now - last_status_ns > 100000000ULL) {
            if (s_send_status (self))
                return -1;
            last_status_ns = now;
        }
        if (s_poll (self, wait_ms))
            return -1;
        if (o->verbose && s_now_ns () >= next_progress) {
            fprintf (stderr, "  %.0f s: sent %" PRIu64 " acked %" PRIu64 " done %" PRIu64
                     " (events %" PRIu64 ", status %" PRIu64 ")\n",
                     (double) (s_now_ns () - self->t0_ns) / 1e9, self->sent_jobs,
                     self->acked, self->completed, self->by_event, self->by_status);
            next_progress += 1000000000ULL;
        }
    }
    return 0;
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
    self.nbatches = (uint32_t) ((o->jobs + o->batch - 1) / o->batch);
    self.batches = calloc (self.nbatches, sizeof *self.batches);
    self.retry = calloc (self.nbatches, sizeof *self.retry);
    self.done = calloc (o->jobs, 1);
    self.lat_ns = calloc (o->jobs, sizeof *self.lat_ns);
    self.broker_us = calloc (o->jobs, sizeof *self.broker_us);
    self.specs = calloc (o->batch, sizeof *self.specs);
    self.payload = malloc (o->size? o->size: 1);
    self.pending = zhashx_new ();
    self.early = zhashx_new ();
    if (!self.batches || !self.retry || !self.done || !self.lat_ns || !self.broker_us
    ||  !self.specs || !self.payload || !self.pending || !self.early) {
        fprintf (stderr, "bench_throughput: out of memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < o->size; i++)
        self.payload [i] = (uint8_t) ('a' + i % 26);
    for (uint64_t i = 0; i < o->batch; i++) {
        self.specs [i].type = o->type;
        self.specs [i].payload = self.payload;
        self.specs [i].payload_size = o->size;
    }
    for (uint32_t b = 0; b < self.nbatches; b++) {
        self.batches [b].first = (uint32_t) (b * o->batch);
        uint64_t left = o->jobs - (uint64_t) b * o->batch;
        self.batches [b].count = (uint32_t) (left < o->batch? left: o->batch);
    }

    self.ctx = zmq_ctx_new ();
    self.dealer = zmq_socket (self.ctx, ZMQ_DEALER);
    self.sub = zmq_socket (self.ctx, ZMQ_SUB);
    int zero = 0, timeout = 10000, big = 0;
    zmq_setsockopt (self.dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self.dealer, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt (self.dealer, ZMQ_RCVHWM, &big, sizeof big);
    zmq_setsockopt (self.sub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (self.sub, ZMQ_RCVHWM, &big, sizeof big);     //  never drop here
    zmq_setsockopt (self.sub, ZMQ_SUBSCRIBE, "job ", 4);
    if (zmq_connect (self.sub, o->events) || zmq_connect (self.dealer, o->frontend)) {
        fprintf (stderr, "bench_throughput: cannot connect: %s\n", zmq_strerror (errno));
        return 1;
    }
    int rc = s_run (&self);
    int status;
    if (rc < 0)
        status = 1;
    else
        status = s_report (&self, rc == 1);
    zmq_close (self.dealer);
    zmq_close (self.sub);
    zmq_ctx_term (self.ctx);
    zhashx_destroy (&self.pending);
    zhashx_destroy (&self.early);
    free (self.batches);
    free (self.retry);
    free (self.done);
    free (self.lat_ns);
    free (self.broker_us);
    free (self.specs);
    free (self.payload);
    return status;
}
