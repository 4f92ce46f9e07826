/*  bench_gearman - the core benchmark's workload on Gearman, for
    comparison (docs/benchmarks.md).

    Starts nothing but its own threads: connects to a running gearmand.
    The main thread is the producer: one gearman_client that adds --batch
    background jobs (SUBMIT_JOB_BG) of --size bytes with
    gearman_client_add_task_background and sends them with
    gearman_client_run_tasks, which writes them all before it reads the
    JOB_CREATED replies; then the next batch. --workers threads each run a
    gearman_worker with a no-op function; a job is done when
    gearman_worker_work returns after it (the WORK_COMPLETE is sent). A
    Gearman worker holds one job at a time (GRAB_JOB, JOB_ASSIGN): there is
    no prefetch as in the dagq or beanstalkd benchmarks.

    Prints the jobs/s end to end (first submit to the last job done in a
    worker), the accept rate (first submit to the last JOB_CREATED) and the
    submit -> worker latency percentiles (the body carries its send time).
    Bounded by --timeout. Exit status: 0 every job done, 1 error or
    timeout, 2 usage.
*/
#include <libgearman-1.0/gearman.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dq_util.h"

#define S_WORKERS_MAX 64
#define S_FUNCTION "echo"

typedef struct {
    const char *host;
    uint64_t port, jobs, size, batch, workers, timeout_s;
} opts_t;

//  Shared by the producer and the worker threads.
typedef struct {
    const opts_t *o;
    atomic_uint_fast64_t done;          //  jobs finished in a worker
    atomic_uint_fast64_t nlat;          //  latency samples taken
    atomic_uint_fast64_t t_last;        //  when the last job finished (ns)
    atomic_int ready;                   //  workers connected
    atomic_bool stop;                   //  workers: leave
    atomic_bool failed;                 //  a worker hit an error
    uint64_t *lat;
} s_shared_t;

typedef struct {
    s_shared_t *shared;
    unsigned index;
    pthread_t thread;
    bool started;
} s_worker_t;

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
"Usage: bench_gearman [OPTION]...\n"
"Push background jobs through a running gearmand to no-op workers.\n"
"\n"
"  --host ADDR        gearmand address (default 127.0.0.1)\n"
"  --port PORT        gearmand port (default 4730)\n"
"  --jobs N           jobs (default 200000)\n"
"  --size BYTES       payload size, at least 16 (default 100)\n"
"  --batch B          background jobs sent per gearman_client_run_tasks\n"
"                     (default 1000)\n"
"  --workers W        worker threads, one gearman_worker each (default 3)\n"
"  --timeout SECONDS  give up after this long (default 300)\n"
"  -h, --help         this help\n"
"\n"
"The last line of output is machine-readable: RESULT key=value ...\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) { .host = "127.0.0.1", .port = 4730, .jobs = 200000, .size = 100,
                    .batch = 1000, .workers = 3, .timeout_s = 300 };
    static const struct option longopts [] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "jobs", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "batch", required_argument, NULL, 'b' },
        { "workers", required_argument, NULL, 'w' },
        { "timeout", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'H': o->host = optarg; break;
            case 'p': rc = dq_parse_u64 (optarg, 1, 65535, &o->port); break;
            case 'n': rc = dq_parse_u64 (optarg, 1, 100000000, &o->jobs); break;
            case 's': rc = dq_parse_u64 (optarg, 16, 60000, &o->size); break;
            case 'b': rc = dq_parse_u64 (optarg, 1, 1000000, &o->batch); break;
            case 'w': rc = dq_parse_u64 (optarg, 1, S_WORKERS_MAX, &o->workers); break;
            case 'T': rc = dq_parse_u64 (optarg, 1, 86400, &o->timeout_s); break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            fprintf (stderr, "bench_gearman: bad value '%s'\n", optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "bench_gearman: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    return 0;
}

//  The job's function: note the latency, do nothing else.
static gearman_return_t
s_echo (gearman_job_st *job, void *context)
{
    s_shared_t *shared = context;
    uint64_t now = s_now_ns (), at;
    if (gearman_job_workload_size (job) < sizeof at)
        return GEARMAN_ERROR;
    memcpy (&at, gearman_job_workload (job), sizeof at);
    uint64_t i = atomic_fetch_add (&shared->nlat, 1);
    if (i < shared->o->jobs && now > at)
        shared->lat [i] = now - at;
    return GEARMAN_SUCCESS;
}

static void *
s_worker_run (void *arg)
{
    s_worker_t *self = arg;
    s_shared_t *shared = self->shared;
    const opts_t *o = shared->o;
    bool ready = false;
    gearman_worker_st *worker = gearman_worker_create (NULL);
    if (!worker) {
        fprintf (stderr, "bench_gearman: worker %u: out of memory\n", self->index);
        goto fail;
    }
    //  Wake up now and then while idle, to see the stop flag.
    gearman_worker_set_timeout (worker, 100);
    gearman_return_t rc = gearman_worker_add_server (worker, o->host, (in_port_t) o->port);
    if (gearman_success (rc))
        rc = gearman_worker_define_function (worker, S_FUNCTION, strlen (S_FUNCTION),
                                             gearman_function_create (s_echo), 0, shared);
    if (gearman_success (rc))
        rc = gearman_worker_echo (worker, "ping", 4);     //  connected, CAN_DO sent
    if (gearman_failed (rc)) {
        fprintf (stderr, "bench_gearman: worker %u: %s\n", self->index,
                 gearman_worker_error (worker));
        goto fail;
    }
    atomic_fetch_add (&shared->ready, 1);
    ready = true;
    while (!atomic_load (&shared->stop)) {
        rc = gearman_worker_work (worker);
        if (rc == GEARMAN_SUCCESS) {
            atomic_store (&shared->t_last, s_now_ns ());
            atomic_fetch_add (&shared->done, 1);
        }
        else
        if (rc != GEARMAN_TIMEOUT && rc != GEARMAN_IO_WAIT && rc != GEARMAN_NO_JOBS) {
            fprintf (stderr, "bench_gearman: worker %u: %s\n", self->index,
                     gearman_worker_error (worker));
            goto fail;
        }
    }
    gearman_worker_free (worker);
    return NULL;
fail:
    atomic_store (&shared->failed, true);
    if (!ready)
        atomic_fetch_add (&shared->ready, 1);
    if (worker)
        gearman_worker_free (worker);
    return NULL;
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

static void
s_sleep_ms (long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
    nanosleep (&ts, NULL);
}

int
main (int argc, char **argv)
{
    opts_t o;
    if (s_parse (argc, argv, &o))
        return 2;
    int status = 1;
    s_shared_t shared = { .o = &o };
    s_worker_t workers [S_WORKERS_MAX] = { { 0 } };
    shared.lat = calloc (o.jobs, sizeof *shared.lat);
    char *payload = malloc (o.size);
    gearman_client_st *client = gearman_client_create (NULL);
    if (!shared.lat || !payload || !client) {
        fprintf (stderr, "bench_gearman: out of memory\n");
        goto done;
    }
    memset (payload, 'x', o.size);
    uint64_t t_start = s_now_ns ();
    uint64_t deadline = t_start + o.timeout_s * 1000000000ULL;

    for (unsigned i = 0; i < o.workers; i++) {
        workers [i] = (s_worker_t) { .shared = &shared, .index = i };
        if (pthread_create (&workers [i].thread, NULL, s_worker_run, &workers [i])) {
            fprintf (stderr, "bench_gearman: cannot start a worker thread\n");
            goto done;
        }
        workers [i].started = true;
    }
    while ((uint64_t) atomic_load (&shared.ready) < o.workers) {
        if (s_now_ns () > deadline) {
            fprintf (stderr, "bench_gearman: timeout: workers not connected\n");
            goto done;
        }
        s_sleep_ms (10);
    }
    if (atomic_load (&shared.failed))
        goto done;

    //  Freed tasks once their JOB_CREATED is in: a batch leaves nothing.
    gearman_client_add_options (client, GEARMAN_CLIENT_FREE_TASKS);
    gearman_client_set_timeout (client, 10000);
    if (gearman_failed (gearman_client_add_server (client, o.host, (in_port_t) o.port))) {
        fprintf (stderr, "bench_gearman: client: %s\n", gearman_client_error (client));
        goto done;
    }
    uint64_t sent = 0;
    uint64_t t0 = s_now_ns ();
    while (sent < o.jobs) {
        if (s_now_ns () > deadline || atomic_load (&shared.failed)) {
            fprintf (stderr, "bench_gearman: %s: %" PRIu64 " of %" PRIu64 " jobs sent\n",
                     atomic_load (&shared.failed)? "a worker failed": "timeout", sent, o.jobs);
            goto done;
        }
        uint64_t n = o.jobs - sent < o.batch? o.jobs - sent: o.batch;
        for (uint64_t k = 0; k < n; k++) {
            uint64_t now = s_now_ns ();
            memcpy (payload, &now, sizeof now);
            //  A unique id per job, so that gearmand merges none; made
            //  here, as libgearman's own (a UUID) costs two failed system
            //  calls per job when no uuidd runs.
            char unique [48];
            snprintf (unique, sizeof unique, "%ld-%" PRIu64, (long) getpid (), sent + k);
            gearman_return_t rc;
            gearman_task_st *task = gearman_client_add_task_background (
                client, NULL, NULL, S_FUNCTION, unique, payload, o.size, &rc);
            if (!task || gearman_failed (rc)) {
                fprintf (stderr, "bench_gearman: add task: %s\n",
                         gearman_client_error (client));
                goto done;
            }
        }
        gearman_return_t rc = gearman_client_run_tasks (client);
        if (gearman_failed (rc)) {
            fprintf (stderr, "bench_gearman: run tasks: %s\n", gearman_client_error (client));
            goto done;
        }
        sent += n;
    }
    uint64_t t_accepted = s_now_ns ();
    while (atomic_load (&shared.done) < o.jobs) {
        if (s_now_ns () > deadline || atomic_load (&shared.failed)) {
            fprintf (stderr, "bench_gearman: %s: %" PRIu64 " of %" PRIu64 " jobs done\n",
                     atomic_load (&shared.failed)? "a worker failed": "timeout",
                     (uint64_t) atomic_load (&shared.done), o.jobs);
            goto done;
        }
        s_sleep_ms (1);
    }
    uint64_t done = atomic_load (&shared.done);
    uint64_t nlat = atomic_load (&shared.nlat);
    if (nlat > o.jobs)
        nlat = o.jobs;
    double secs = (double) (atomic_load (&shared.t_last) - t0) / 1e9;
    double accept_secs = (double) (t_accepted - t0) / 1e9;
    qsort (shared.lat, nlat, sizeof *shared.lat, s_cmp_u64);
    double p50 = nlat? (double) shared.lat [nlat / 2] / 1e6: 0;
    double p99 = nlat? (double) shared.lat [(size_t) ((double) nlat * 0.99)] / 1e6: 0;
    printf ("gearman     %" PRIu64 " background jobs of %" PRIu64 " B, batches of %" PRIu64
            ", %" PRIu64 " workers\n", o.jobs, o.size, o.batch, o.workers);
    printf ("accepted    %" PRIu64 " JOB_CREATED in %.3f s = %.0f jobs/s\n", o.jobs,
            accept_secs, (double) o.jobs / accept_secs);
    printf ("completed   %" PRIu64 " run by the workers in %.3f s = %.0f jobs/s\n", done,
            secs, (double) done / secs);
    printf ("latency     submitted -> in a worker: p50 %.3f ms  p99 %.3f ms\n", p50, p99);
    printf ("RESULT jobs=%" PRIu64 " e2e_rate=%.0f accept_rate=%.0f p50_ms=%.3f"
            " p99_ms=%.3f\n", done, (double) done / secs, (double) o.jobs / accept_secs,
            p50, p99);
    status = done == o.jobs? 0: 1;
done:
    atomic_store (&shared.stop, true);
    for (unsigned i = 0; i < o.workers; i++)
        if (workers [i].started)
            pthread_join (workers [i].thread, NULL);
    if (client)
        gearman_client_free (client);
    free (payload);
    free (shared.lat);
    return status;
}
