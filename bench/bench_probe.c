/*  bench_probe - small STATS-based probes for the store benchmarks.

    Starts nothing: talks to a broker's frontend with STATS only.

    --wait-up      send STATS until one is answered and print how long that
                   took, counted from --since-ns (CLOCK_REALTIME ns, e.g.
                   `date +%s%N` taken just before starting the broker) or
                   from this program's start. Connects before the broker
                   listens and retries the connection every 10 ms.
    --wait-done N  poll STATS every --interval-ms until at least N jobs (of
                   --type, or of all types) are terminal; print the time
                   and rate, and how many did not succeed.
    --stats        one STATS: print the broker's job counts.

    Bounded by --timeout. The last line is machine-readable: RESULT ...
    Exit status: 0 done, 1 timeout or error, 2 usage, 3 the --pid process
    is gone (--wait-up).
*/
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <time.h>

#include "dq_proto.h"
#include "dq_util.h"

typedef enum { S_NONE, S_WAIT_UP, S_WAIT_DONE, S_STATS } s_mode_t;

typedef struct {
    s_mode_t mode;
    const char *frontend, *type;
    uint64_t since_ns, done_n, interval_ms, timeout_ms, pid;
} opts_t;

//  Counts summed over the types asked for.
typedef struct {
    uint64_t jobs_total, queued_bytes, uptime_ms;
    uint64_t waiting, queued, running, succeeded, failed, cancelled, skipped;
} s_counts_t;

static uint64_t
s_real_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_probe (--wait-up | --wait-done N | --stats) [OPTION]...\n"
"STATS probes of a running dagq broker, for the store benchmarks.\n"
"\n"
"  --wait-up              wait until the broker answers STATS; print the time\n"
"  --wait-done N          wait until N jobs are terminal; print time and rate\n"
"  --stats                print the broker's job counts once\n"
"  --frontend ENDPOINT    broker frontend (default tcp://127.0.0.1:5555)\n"
"  --type TYPE            count only jobs of this type (default: all types)\n"
"  --since-ns NS          --wait-up counts from this CLOCK_REALTIME time in ns\n"
"  --pid PID              --wait-up gives up (exit status 3) when PID is gone\n"
"  --interval-ms MS       --wait-done polls this often (default 500)\n"
"  --timeout SECONDS      give up after this long (default 300)\n"
"  -h, --help             this help\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) { .frontend = "tcp://127.0.0.1:5555", .interval_ms = 500,
                    .timeout_ms = 300000 };
    static const struct option longopts [] = {
        { "wait-up", no_argument, NULL, 'u' },
        { "wait-done", required_argument, NULL, 'd' },
        { "stats", no_argument, NULL, 's' },
        { "frontend", required_argument, NULL, 'f' },
        { "type", required_argument, NULL, 't' },
        { "since-ns", required_argument, NULL, 'S' },
        { "pid", required_argument, NULL, 'p' },
        { "interval-ms", required_argument, NULL, 'i' },
        { "timeout", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c, modes = 0;
    while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'u': o->mode = S_WAIT_UP; modes++; break;
            case 'd': o->mode = S_WAIT_DONE; modes++;
                      rc = dq_parse_u64 (optarg, 1, UINT64_MAX, &o->done_n); break;
            case 's': o->mode = S_STATS; modes++; break;
            case 'f': o->frontend = optarg; break;
            case 't': o->type = optarg; break;
            case 'S': rc = dq_parse_u64 (optarg, 1, UINT64_MAX, &o->since_ns); break;
            case 'p': rc = dq_parse_u64 (optarg, 1, INT32_MAX, &o->pid); break;
            case 'i': rc = dq_parse_u64 (optarg, 10, 60000, &o->interval_ms); break;
            case 'T': rc = dq_parse_seconds_ms (optarg, 86400, &o->timeout_ms); break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            const char *name = "?";
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == c)
                    name = lo->name;
            fprintf (stderr, "bench_probe: bad value for --%s: '%s'\n", name, optarg);
            return -1;
        }
    }
    if (optind < argc || modes != 1) {
        fprintf (stderr, "bench_probe: give exactly one of --wait-up, --wait-done, --stats\n");
        return -1;
    }
    return 0;
}

//  Send STATS and wait up to ms for its reply; fill *counts. Returns 0, 1
//  when no reply came in time, -1 on error.
static int
s_stats (void *dealer, const opts_t *o, uint64_t seq, uint64_t ms, s_counts_t *counts)
{
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_STATS);
    msg.rid = seq;
    if (dq_msg_send (&msg, dealer, NULL, 0, ZMQ_DONTWAIT)) {
        if (errno == EAGAIN)
            return 1;           //  not connected yet and the queue is full
        return -1;
    }
    uint64_t end = dq_mono_ms () + ms;
    while (true) {
        uint64_t now = dq_mono_ms ();
        if (now >= end)
            return 1;
        zmq_pollitem_t item = { dealer, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) (end - now)) == -1 && errno != EINTR)
            return -1;
        dq_err_t err;
        dq_msg_t *reply;
        //  Any STATS reply will do: a late one to an earlier request is
        //  as fresh as the broker's state when it was sent.
        while ((reply = dq_msg_recv (dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL))) {
            bool ok = reply->cmd == DQ_CMD_STATS_REPLY;
            if (ok) {
                memset (counts, 0, sizeof *counts);
                counts->jobs_total = reply->jobs_total;
                counts->queued_bytes = reply->queued_bytes;
                counts->uptime_ms = reply->uptime_ms;
                for (uint32_t i = 0; i < reply->ntypestats; i++) {
                    const dq_typestat_t *t = &reply->typestats [i];
                    if (o->type && (!t->type || strcmp (t->type, o->type) != 0))
                        continue;
                    counts->waiting += t->waiting;
                    counts->queued += t->queued;
                    counts->running += t->running;
                    counts->succeeded += t->succeeded;
                    counts->failed += t->failed;
                    counts->cancelled += t->cancelled;
                    counts->skipped += t->skipped;
                }
            }
            dq_msg_destroy (&reply);
            if (ok)
                return 0;
        }
    }
}

static uint64_t
s_terminal (const s_counts_t *c)
{
    return c->succeeded + c->failed + c->cancelled + c->skipped;
}

int
main (int argc, char **argv)
{
    uint64_t start_ns = s_real_ns ();
    opts_t o;
    if (s_parse (argc, argv, &o))
        return 2;
    zsys_init ();
    zsys_handler_set (NULL);
    void *ctx = zmq_ctx_new ();
    void *dealer = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0, ivl = 10, hwm = 1000;
    zmq_setsockopt (dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (dealer, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt (dealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    int status = 1;
    if (zmq_connect (dealer, o.frontend)) {
        fprintf (stderr, "bench_probe: cannot connect to %s: %s\n", o.frontend,
                 zmq_strerror (errno));
        goto done;
    }
    uint64_t deadline = dq_mono_ms () + o.timeout_ms;
    s_counts_t c = { 0 };
    uint64_t seq = 0;
    if (o.mode == S_WAIT_UP) {
        uint64_t from = o.since_ns? o.since_ns: start_ns;
        while (dq_mono_ms () < deadline) {
            int rc = s_stats (dealer, &o, ++seq, 1000, &c);
            if (rc < 0)
                break;
            if (rc == 1 && o.pid && kill ((pid_t) o.pid, 0) && errno == ESRCH) {
                fprintf (stderr, "bench_probe: process %" PRIu64 " is gone\n", o.pid);
                status = 3;
                goto done;
            }
            if (rc == 0) {
                double up_s = (double) (s_real_ns () - from) / 1e9;
                printf ("up          STATS answered %.3f s after the start, %" PRIu64
                        " jobs in the broker, %" PRIu64 " payload bytes unfinished\n",
                        up_s, c.jobs_total, c.queued_bytes);
                printf ("RESULT up_s=%.3f jobs_total=%" PRIu64 " queued_bytes=%" PRIu64 "\n",
                        up_s, c.jobs_total, c.queued_bytes);
                status = 0;
                goto done;
            }
        }
        fprintf (stderr, "bench_probe: no STATS reply from %s within %.0f s\n", o.frontend,
                 (double) o.timeout_ms / 1000);
    }
    else
    if (o.mode == S_WAIT_DONE) {
        uint64_t t0 = dq_mono_ms (), first = UINT64_MAX;
        while (dq_mono_ms () < deadline) {
            int rc = s_stats (dealer, &o, ++seq, 5000, &c);
            if (rc < 0)
                break;
            if (rc == 0) {
                if (first == UINT64_MAX)
                    first = s_terminal (&c);
                if (s_terminal (&c) >= o.done_n) {
                    double s = (double) (dq_mono_ms () - t0) / 1000;
                    uint64_t n = s_terminal (&c) - first;
                    printf ("done        %" PRIu64 " jobs terminal (%" PRIu64 " succeeded) after "
                            "%.1f s; %" PRIu64 " finished meanwhile = %.0f jobs/s\n",
                            s_terminal (&c), c.succeeded, s, n, s > 0? (double) n / s: 0);
                    printf ("RESULT terminal=%" PRIu64 " succeeded=%" PRIu64 " not_succeeded=%"
                            PRIu64 " secs=%.1f rate=%.0f\n", s_terminal (&c), c.succeeded,
                            s_terminal (&c) - c.succeeded, s, s > 0? (double) n / s: 0);
                    status = c.succeeded == s_terminal (&c)? 0: 1;
                    goto done;
                }
            }
            zmq_poll (NULL, 0, (long) o.interval_ms);
        }
        fprintf (stderr, "bench_probe: %" PRIu64 " of %" PRIu64 " jobs terminal after %.0f s\n",
                 s_terminal (&c), o.done_n, (double) o.timeout_ms / 1000);
    }
    else {
        while (dq_mono_ms () < deadline) {
            int rc = s_stats (dealer, &o, ++seq, 2000, &c);
            if (rc < 0)
                break;
            if (rc == 0) {
                printf ("RESULT jobs_total=%" PRIu64 " queued_bytes=%" PRIu64 " uptime_ms=%"
                        PRIu64 " waiting=%" PRIu64 " queued=%" PRIu64 " running=%" PRIu64
                        " succeeded=%" PRIu64 " failed=%" PRIu64 " cancelled=%" PRIu64
                        " skipped=%" PRIu64 "\n", c.jobs_total, c.queued_bytes, c.uptime_ms,
                        c.waiting, c.queued, c.running, c.succeeded, c.failed, c.cancelled,
                        c.skipped);
                status = 0;
                goto done;
            }
        }
        fprintf (stderr, "bench_probe: no STATS reply from %s\n", o.frontend);
    }
done:
    zmq_close (dealer);
    zmq_ctx_term (ctx);
    return status;
}
