/*  bench_queued_memory - broker memory per queued job.

    Starts nothing: connects to a running broker (meant to be a fresh
    `dagq-broker --memory` with no worker for --type), reads its resident
    set size from /proc/<pid>/status, submits --jobs jobs of --size bytes
    that nobody runs, reads the RSS again once every job is acknowledged,
    and prints the growth per queued job and that growth minus the payload
    (what the broker spends on bookkeeping per job: record, id table slot,
    ready-heap entry, allocator overhead).

    Checks with STATS that the jobs are really there. Bounded by --timeout.
    Exit status: 0 measured, 1 failure, 2 usage.
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

#define S_RID_STATS (1ULL << 62)

typedef struct {
    const char *frontend, *type;
    uint64_t pid, jobs, size, batch, window, timeout_ms;
} opts_t;

static uint64_t
s_now_ms (void)
{
    return dq_mono_ms ();
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_queued_memory --pid PID [OPTION]...\n"
"Queue jobs nobody runs on a running broker and print its RSS growth per\n"
"queued job, and that growth minus the payload size.\n"
"\n"
"  --pid PID              the broker's process id (required)\n"
"  --frontend ENDPOINT    broker frontend (default tcp://127.0.0.1:5555)\n"
"  --jobs N               jobs to queue (default 1000000)\n"
"  --size BYTES           payload size (default 100)\n"
"  --type TYPE            job type, one no worker runs (default bench-unrun)\n"
"  --batch B              jobs per SUBMIT (default 1000)\n"
"  --window W             jobs sent but not acknowledged, at most (default 50000)\n"
"  --timeout SECONDS      give up after this long (default 300)\n"
"  -h, --help             this help\n"
"\n"
"The last line of output is machine-readable: RESULT key=value ...\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) { .frontend = "tcp://127.0.0.1:5555", .type = "bench-unrun",
                    .jobs = 1000000, .size = 100, .batch = 1000, .window = 50000,
                    .timeout_ms = 300000 };
    static const struct option longopts [] = {
        { "pid", required_argument, NULL, 'p' },
        { "frontend", required_argument, NULL, 'f' },
        { "jobs", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "type", required_argument, NULL, 't' },
        { "batch", required_argument, NULL, 'b' },
        { "window", required_argument, NULL, 'w' },
        { "timeout", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'p': rc = dq_parse_u64 (optarg, 1, UINT32_MAX, &o->pid); break;
            case 'f': o->frontend = optarg; break;
            case 't': o->type = optarg; break;
            case 'n': rc = dq_parse_u64 (optarg, 1, 100000000, &o->jobs); break;
            case 's': rc = dq_parse_u64 (optarg, 0, DQ_PROTO_PAYLOAD_MAX, &o->size); break;
            case 'b': rc = dq_parse_u64 (optarg, 1, 100000, &o->batch); break;
            case 'w': rc = dq_parse_u64 (optarg, 1, 100000000, &o->window); break;
            case 'T': rc = dq_parse_seconds_ms (optarg, 86400, &o->timeout_ms); break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            const char *name = "?";
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == c)
                    name = lo->name;
            fprintf (stderr, "bench_queued_memory: bad value for --%s: '%s'\n", name, optarg);
            return -1;
        }
    }
    if (optind < argc || !o->pid) {
        fprintf (stderr, "bench_queued_memory: --pid is required (and nothing else "
                 "but options)\n");
        return -1;
    }
    if (o->batch > o->window)
        o->batch = o->window;
    return 0;
}

//  VmRSS of pid in kB, or -1.
static long
s_rss_kb (uint64_t pid)
{
    char path [64];
    snprintf (path, sizeof path, "/proc/%" PRIu64 "/status", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return -1;
    char line [256];
    long kb = -1;
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kb = strtol (line + 6, NULL, 10);
            break;
        }
    fclose (f);
    return kb;
}

//  One STATS round trip: jobs_total and queued_bytes.
static int
s_stats (void *dealer, uint64_t *jobs_total, uint64_t *queued_bytes, uint64_t deadline)
{
    static uint64_t seq;
    dq_msg_t msg;
    dq_msg_init (&msg, DQ_CMD_STATS);
    msg.rid = S_RID_STATS | ++seq;
    if (dq_msg_send (&msg, dealer, NULL, 0, 0))
        return -1;
    while (s_now_ms () < deadline) {
        zmq_pollitem_t item = { dealer, 0, ZMQ_POLLIN, 0 };
        zmq_poll (&item, 1, 100);
        dq_err_t err;
        dq_msg_t *reply;
        while ((reply = dq_msg_recv (dealer, NULL, NULL, ZMQ_DONTWAIT, &err, NULL))) {
            bool ours = reply->rid == msg.rid && reply->cmd == DQ_CMD_STATS_REPLY;
            if (ours) {
                *jobs_total = reply->jobs_total;
                *queued_bytes = reply->queued_bytes;
            }
            dq_msg_destroy (&reply);
            if (ours)
                return 0;
        }
    }
    return -1;
}

int
main (int argc, char **argv)
{
    opts_t o;
    if (s_parse (argc, argv, &o))
        return 2;
    zsys_init ();
    zsys_handler_set (NULL);
    uint64_t deadline = s_now_ms () + o.timeout_ms;
    uint8_t *payload = malloc (o.size? o.size: 1);
    dq_jobspec_t *specs = calloc (o.batch, sizeof *specs);
    if (!payload || !specs) {
        fprintf (stderr, "bench_queued_memory: out of memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < o.size; i++)
        payload [i] = (uint8_t) ('a' + i % 26);
    for (uint64_t i = 0; i < o.batch; i++)
        specs [i] = (dq_jobspec_t) { .type = o.type, .payload = payload,
                                     .payload_size = o.size };

    void *ctx = zmq_ctx_new ();
    void *dealer = zmq_socket (ctx, ZMQ_DEALER);
    int zero = 0, timeout = 10000;
    zmq_setsockopt (dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (dealer, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt (dealer, ZMQ_RCVHWM, &zero, sizeof zero);
    int status = 1;
    if (zmq_connect (dealer, o.frontend)) {
        fprintf (stderr, "bench_queued_memory: cannot connect to %s: %s\n", o.frontend,
                 zmq_strerror (errno));
        goto done;
    }
    uint64_t jobs0, bytes0, jobs1, bytes1;
    if (s_stats (dealer, &jobs0, &bytes0, deadline)) {
        fprintf (stderr, "bench_queued_memory: no STATS reply from %s\n", o.frontend);
        goto done;
    }
    long rss0 = s_rss_kb (o.pid);
    if (rss0 < 0) {
        fprintf (stderr, "bench_queued_memory: cannot read /proc/%" PRIu64 "/status\n", o.pid);
        goto done;
    }

    //  Submit with at most --window jobs unacknowledged; BUSY means the
    //  broker's limits are below --jobs, which makes the figure meaningless.
    uint64_t sent = 0, acked = 0, unacked = 0, t0 = s_now_ms ();
    while (acked < o.jobs) {
        if (s_now_ms () >= deadline) {
            fprintf (stderr, "bench_queued_memory: timeout with %" PRIu64 " of %" PRIu64
                     " jobs queued\n", acked, o.jobs);
            goto done;
        }
        while (sent < o.jobs && unacked < o.window) {
            uint64_t n = o.jobs - sent < o.batch? o.jobs - sent: o.batch;
            if (unacked + n > o.window && unacked)
                break;
            dq_msg_t msg;
            dq_msg_init (&msg, DQ_CMD_SUBMIT);
            msg.rid = sent + 1;
            msg.jobs = specs;
            msg.njobs = (uint32_t) n;
            if (dq_msg_send (&msg, dealer, NULL, 0, 0)) {
                fprintf (stderr, "bench_queued_memory: cannot send: %s\n", zmq_strerror (errno));
                goto done;
            }
            sent += n;
            unacked += n;
        }
        zmq_pollitem_t item = { dealer, 0, ZMQ_POLLIN, 0 };
        zmq_poll (&item, 1, 100);
        dq_err_t err;
        char reason [256];
        dq_msg_t *reply;
        while ((reply = dq_msg_recv (dealer, NULL, NULL, ZMQ_DONTWAIT, &err, reason))) {
            if (reply->cmd == DQ_CMD_SUBMITTED && !(reply->rid & S_RID_STATS)) {
                acked += reply->nids;
                unacked -= reply->nids <= unacked? reply->nids: unacked;
            }
            else
            if (reply->cmd == DQ_CMD_ERROR) {
                fprintf (stderr, "bench_queued_memory: broker refused a SUBMIT: %s: %s "
                         "(raise its --max-jobs / --max-bytes?)\n",
                         dq_err_str ((int) reply->code), reply->message? reply->message: "");
                dq_msg_destroy (&reply);
                goto done;
            }
            dq_msg_destroy (&reply);
        }
        if (err != DQ_OK) {
            fprintf (stderr, "bench_queued_memory: bad reply: %s\n", reason);
            goto done;
        }
    }
    uint64_t t1 = s_now_ms ();
    if (s_stats (dealer, &jobs1, &bytes1, deadline)) {
        fprintf (stderr, "bench_queued_memory: no STATS reply after submitting\n");
        goto done;
    }
    long rss1 = s_rss_kb (o.pid);
    if (rss1 < 0) {
        fprintf (stderr, "bench_queued_memory: the broker (pid %" PRIu64 ") is gone\n", o.pid);
        goto done;
    }
    double per_job = (double) (rss1 - rss0) * 1024.0 / (double) o.jobs;
    printf ("queued      %" PRIu64 " jobs of %" PRIu64 " B (type %s) in %.2f s; broker "
            "now holds %" PRIu64 " jobs, %" PRIu64 " payload bytes\n", o.jobs, o.size,
            o.type, (double) (t1 - t0) / 1000, jobs1, bytes1);
    printf ("broker RSS  %.1f MiB -> %.1f MiB (+%.1f MiB)\n", rss0 / 1024.0, rss1 / 1024.0,
            (rss1 - rss0) / 1024.0);
    printf ("per job     %.1f bytes, %.1f beyond the %" PRIu64 "-byte payload\n", per_job,
            per_job - (double) o.size, o.size);
    if (jobs1 - jobs0 != o.jobs)
        printf ("warning     STATS counted %" PRIu64 " new jobs, not %" PRIu64 "\n",
                jobs1 - jobs0, o.jobs);
    printf ("RESULT jobs=%" PRIu64 " size=%" PRIu64 " rss_before_kb=%ld rss_after_kb=%ld"
            " bytes_per_job=%.1f overhead_per_job=%.1f\n", o.jobs, o.size, rss0, rss1,
            per_job, per_job - (double) o.size);
    status = 0;
done:
    zmq_close (dealer);
    zmq_ctx_term (ctx);
    free (payload);
    free (specs);
    return status;
}
