/*  bench_reads - how fast a broker answers for jobs that have finished.

    Submits --jobs echo jobs of --size bytes to a running broker (with
    workers), at most S_WINDOW unfinished at a time (so the backlog, not
    what finished, stays small), waits until they have all finished, reads
    STATS (jobs_total, jobs_in_memory), then asks for them one at a time:
    --reads STATUS requests and as many RESULT requests, each for a job
    picked at random, each waiting for its answer. Prints the broker's memory figures (RSS
    growth per finished job with --pid) and the round-trip percentiles.

    Run it against a --memory broker (finished jobs held in memory) and a
    broker with a store (finished jobs read from SQLite) to compare; see
    docs/benchmarks.md. The last line is machine-readable: RESULT ...
    Exit status: 0 done, 1 failure or timeout, 2 usage.
*/
#include <czmq.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_client.h"
#include "dq_proto.h"
#include "dq_util.h"

#define S_BATCH 500
#define S_WINDOW 10          //  batches submitted and not yet finished

static uint64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

typedef struct {
    const char *frontend;
    uint64_t jobs, size, reads, per_status, timeout_ms, pid;
} opts_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_reads [OPTION]...\n"
"Time STATUS and RESULT of finished jobs, one request at a time.\n"
"\n"
"  --frontend ENDPOINT    broker frontend (default tcp://127.0.0.1:5555)\n"
"  --jobs N               echo jobs to submit and read back (default 100000)\n"
"  --size BYTES           payload (and so output) size (default 1024)\n"
"  --reads N              STATUS requests, and RESULT requests (default 20000)\n"
"  --timeout SECONDS      give up after this long (default 300)\n"
"  --pid PID              the broker's pid: report its RSS growth per job\n"
"  --ids-per-status K     job ids in each STATUS request (default 1)\n"
"  -h, --help             this help\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) { .frontend = "tcp://127.0.0.1:5555", .jobs = 100000,
                    .size = 1024, .reads = 20000, .per_status = 1,
                    .timeout_ms = 300000 };
    static const struct option longopts [] = {
        { "frontend", required_argument, NULL, 'f' },
        { "jobs", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "reads", required_argument, NULL, 'r' },
        { "timeout", required_argument, NULL, 'T' },
        { "pid", required_argument, NULL, 'p' },
        { "ids-per-status", required_argument, NULL, 'i' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'f': o->frontend = optarg; break;
            case 'n': rc = dq_parse_u64 (optarg, 1, 10000000, &o->jobs); break;
            case 's': rc = dq_parse_u64 (optarg, 0, 1 << 20, &o->size); break;
            case 'r': rc = dq_parse_u64 (optarg, 1, 10000000, &o->reads); break;
            case 'T': rc = dq_parse_seconds_ms (optarg, 86400, &o->timeout_ms); break;
            case 'p': rc = dq_parse_u64 (optarg, 1, INT32_MAX, &o->pid); break;
            case 'i': rc = dq_parse_u64 (optarg, 1, 10000, &o->per_status); break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            fprintf (stderr, "bench_reads: bad value '%s'\n", optarg);
            return -1;
        }
    }
    if (optind < argc) {
        s_usage (stderr);
        return -1;
    }
    return 0;
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y? -1: x > y;
}

static void
s_print_lat (const char *what, uint64_t *us, uint64_t n, double secs)
{
    qsort (us, n, sizeof *us, s_cmp_u64);
    printf ("%-8s %" PRIu64 " requests, %.0f/s one at a time: p50 %" PRIu64 " us, p99 %"
            PRIu64 " us, max %" PRIu64 " us\n", what, n, secs > 0? n / secs: 0,
            us [n / 2], us [n * 99 / 100], us [n - 1]);
}

//  VmRSS of pid in KiB, 0 if it cannot be read.
static uint64_t
s_rss_kib (uint64_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%" PRIu64 "/status", pid);
    FILE *f = fopen (path, "r");
    uint64_t kib = 0;
    while (f && fgets (line, sizeof line, f))
        if (sscanf (line, "VmRSS: %" SCNu64, &kib) == 1)
            break;
    if (f)
        fclose (f);
    return kib;
}

//  STATS figures: jobs the broker answers for, and of those held in memory.
static int
s_held (dq_client_t *client, uint64_t *total, uint64_t *memory)
{
    dq_msg_t *reply = NULL;
    int rc = dq_client_stats (client, &reply);
    if (rc == DQ_OK) {
        *total = reply->jobs_total;
        *memory = reply->jobs_in_memory;
    }
    dq_msg_destroy (&reply);
    return rc;
}

int
main (int argc, char **argv)
{
    opts_t o;
    if (s_parse (argc, argv, &o))
        return 2;
    dq_client_t *client = dq_client_new (o.frontend);
    char *payload = malloc (o.size + 1);
    char (*ids) [DQ_PROTO_NAME_MAX + 1] = calloc (o.jobs, sizeof *ids);
    uint64_t *lat = calloc (o.reads, sizeof *lat);
    const char **pick = calloc (o.per_status, sizeof *pick);
    dq_jobspec_t *specs = calloc (S_BATCH, sizeof *specs);
    const char **idp = calloc (o.jobs, sizeof *idp);
    if (!client || !payload || !ids || !lat || !specs || !idp || !pick) {
        fprintf (stderr, "bench_reads: out of memory\n");
        return 1;
    }
    memset (payload, 'r', o.size);
    int status = 1;
    uint64_t deadline = dq_mono_ms () + o.timeout_ms;
    uint64_t rss0 = o.pid? s_rss_kib (o.pid): 0;
    //  1. the jobs
    for (uint64_t at = 0; at < o.jobs; ) {
        if (at >= S_WINDOW * S_BATCH) {
            uint64_t from = at - S_WINDOW * S_BATCH;
            if (dq_client_wait (client, idp + from, S_BATCH,
                                (int) (deadline - dq_mono_ms ()), NULL) != DQ_OK) {
                fprintf (stderr, "bench_reads: jobs did not finish: %s\n",
                         dq_client_error (client));
                goto done;
            }
        }
        uint32_t n = o.jobs - at < S_BATCH? (uint32_t) (o.jobs - at): S_BATCH;
        for (uint32_t i = 0; i < n; i++)
            specs [i] = (dq_jobspec_t) { .type = "echo", .payload = payload,
                                         .payload_size = o.size };
        dq_msg_t *reply = NULL;
        uint32_t retry_ms = 0;
        int rc = dq_client_submit (client, specs, n, NULL, NULL, &reply, &retry_ms);
        if (rc == DQ_ERR_BUSY && dq_mono_ms () < deadline) {
            zclock_sleep ((int) (retry_ms? retry_ms: 50));
            continue;
        }
        if (rc != DQ_OK || reply->nids != n) {
            fprintf (stderr, "bench_reads: submit failed: %s\n", dq_client_error (client));
            dq_msg_destroy (&reply);
            goto done;
        }
        for (uint32_t i = 0; i < n; i++) {
            snprintf (ids [at + i], sizeof ids [at + i], "%s", reply->ids [i]);
            idp [at + i] = ids [at + i];
        }
        at += n;
        dq_msg_destroy (&reply);
    }
    int rc = dq_client_wait (client, idp, (uint32_t) o.jobs,
                             (int) (deadline - dq_mono_ms ()), NULL);
    if (rc != DQ_OK) {
        fprintf (stderr, "bench_reads: jobs did not finish: %s\n", dq_client_error (client));
        goto done;
    }
    //  2. held in memory or not. The broker lets finished jobs go at the
    //  end of the turn they finished in, before it answers the STATUS that
    //  saw them finished: STATS now shows where they are.
    uint64_t total = 0, memory = 0;
    if (s_held (client, &total, &memory) != DQ_OK) {
        fprintf (stderr, "bench_reads: STATS failed: %s\n", dq_client_error (client));
        goto done;
    }
    printf ("held     %" PRIu64 " jobs, %" PRIu64 " of them in memory\n", total, memory);
    int64_t grown = 0;
    if (o.pid) {
        grown = (int64_t) s_rss_kib (o.pid) - (int64_t) rss0;
        printf ("memory   broker RSS %" PRIu64 " KiB before, %" PRId64 " KiB more after: %.0f"
                " bytes per finished job\n", rss0, grown, grown * 1024.0 / (double) o.jobs);
    }
    //  3. one request at a time
    const char *what [] = { "status", "result" };
    uint64_t bytes = 0, p50 [2], p99 [2];
    for (int kind = 0; kind < 2; kind++) {
        uint64_t t0 = s_mono_us ();
        for (uint64_t i = 0; i < o.reads; i++) {
            uint32_t k = kind == 0? (uint32_t) o.per_status: 1;
            for (uint32_t j = 0; j < k; j++)
                pick [j] = idp [(uint64_t) rand () % o.jobs];
            const char *id = pick [0];
            dq_msg_t *reply = NULL;
            uint64_t start = s_mono_us ();
            rc = kind == 0? dq_client_status (client, pick, k, &reply)
                          : dq_client_result (client, id, &reply);
            lat [i] = s_mono_us () - start;
            bool ok = rc == DQ_OK && (kind == 0? reply->ninfos == k
                                               : reply->output_size == o.size);
            if (kind == 1 && ok)
                bytes += reply->output_size;
            dq_msg_destroy (&reply);
            if (!ok) {
                fprintf (stderr, "bench_reads: %s of %s failed: %s\n", what [kind], id,
                         rc == DQ_OK? "wrong answer": dq_client_error (client));
                goto done;
            }
        }
        s_print_lat (what [kind], lat, o.reads, (double) (s_mono_us () - t0) / 1e6);
        p50 [kind] = lat [o.reads / 2];
        p99 [kind] = lat [o.reads * 99 / 100];
    }
    printf ("RESULT held=%" PRIu64 " in_memory=%" PRIu64 " output_bytes=%" PRIu64
            " rss_grown_kib=%" PRId64 " status_p50_us=%" PRIu64 " status_p99_us=%" PRIu64
            " result_p50_us=%" PRIu64 " result_p99_us=%" PRIu64 "\n", total, memory,
            bytes, grown, p50 [0], p99 [0], p50 [1], p99 [1]);
    status = 0;
done:
    dq_client_destroy (&client);
    free (payload);
    free (ids);
    free (lat);
    free (specs);
    free (idp);
    free (pick);
    return status;
}
