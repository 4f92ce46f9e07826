/*  bench_beanstalkd - the core benchmark's workload on beanstalkd, for
    comparison (docs/benchmarks.md).

    Starts nothing: connects to a running beanstalkd. One producer
    connection pipelines `put` commands of --size byte bodies (at most
    --window unanswered); --consumers connections each keep --pipeline
    `reserve` commands outstanding and answer every RESERVED with `delete`
    and a new `reserve` (beanstalkd runs a connection's commands in order,
    so pipelined reserves are served one after the other). A job is done
    when its DELETED reply is read. Prints the jobs/s end to end (first put
    sent to last DELETED read) and the put -> reserved latency percentiles
    (the body carries its send time).

    Plain C and POSIX sockets; nothing of dagq is used. Bounded by
    --timeout. Exit status: 0 every job done, 1 error or timeout, 2 usage.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_CONSUMERS_MAX 256
#define S_BUF 65536

typedef struct {
    int fd;
    char in [S_BUF];            //  bytes read, not yet parsed
    size_t nin;
    char *out;                  //  bytes to write
    size_t nout, outcap;
    uint64_t pending;           //  commands sent, reply not yet read
} s_conn_t;

typedef struct {
    const char *host;
    uint64_t port, jobs, size, window, consumers, pipeline, timeout_s;
} opts_t;

static uint64_t
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static int
s_num (const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull (s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: bench_beanstalkd [OPTION]...\n"
"Push jobs through a running beanstalkd: put, reserve, delete.\n"
"\n"
"  --host ADDR        beanstalkd address (default 127.0.0.1)\n"
"  --port PORT        beanstalkd port (default 11300)\n"
"  --jobs N           jobs (default 200000)\n"
"  --size BYTES       body size, at least 16 (default 100)\n"
"  --window W         puts sent but not answered, at most (default 1000)\n"
"  --consumers C      consumer connections (default 3)\n"
"  --pipeline P       reserves outstanding per consumer (default 64)\n"
"  --timeout SECONDS  give up after this long (default 300)\n"
"  -h, --help         this help\n"
"\n"
"The last line of output is machine-readable: RESULT key=value ...\n");
}

static int
s_parse (int argc, char **argv, opts_t *o)
{
    *o = (opts_t) { .host = "127.0.0.1", .port = 11300, .jobs = 200000, .size = 100,
                    .window = 1000, .consumers = 3, .pipeline = 64, .timeout_s = 300 };
    static const struct option longopts [] = {
        { "host", required_argument, NULL, 'H' },
        { "port", required_argument, NULL, 'p' },
        { "jobs", required_argument, NULL, 'n' },
        { "size", required_argument, NULL, 's' },
        { "window", required_argument, NULL, 'w' },
        { "consumers", required_argument, NULL, 'c' },
        { "pipeline", required_argument, NULL, 'P' },
        { "timeout", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int c;
    while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
            case 'H': o->host = optarg; break;
            case 'p': rc = s_num (optarg, 1, 65535, &o->port); break;
            case 'n': rc = s_num (optarg, 1, 100000000, &o->jobs); break;
            case 's': rc = s_num (optarg, 16, 60000, &o->size); break;
            case 'w': rc = s_num (optarg, 1, 1000000, &o->window); break;
            case 'c': rc = s_num (optarg, 1, S_CONSUMERS_MAX, &o->consumers); break;
            case 'P': rc = s_num (optarg, 1, 10000, &o->pipeline); break;
            case 'T': rc = s_num (optarg, 1, 86400, &o->timeout_s); break;
            case 'h': s_usage (stdout); exit (0);
            default: s_usage (stderr); return -1;
        }
        if (rc) {
            fprintf (stderr, "bench_beanstalkd: bad value '%s'\n", optarg);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "bench_beanstalkd: unexpected argument '%s'\n", argv [optind]);
        return -1;
    }
    return 0;
}

static int
s_connect (const char *host, uint16_t port)
{
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons (port) };
    if (inet_pton (AF_INET, host, &addr.sin_addr) != 1) {
        fprintf (stderr, "bench_beanstalkd: '%s' is not an IPv4 address\n", host);
        return -1;
    }
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
        fprintf (stderr, "bench_beanstalkd: cannot connect to %s:%u: %s\n", host, port,
                 strerror (errno));
        close (fd);
        return -1;
    }
    return fd;
}

static int
s_append (s_conn_t *c, const void *data, size_t size)
{
    if (c->nout + size > c->outcap) {
        size_t cap = c->outcap? c->outcap: 65536;
        while (cap < c->nout + size)
            cap *= 2;
        char *out = realloc (c->out, cap);
        if (!out)
            return -1;
        c->out = out;
        c->outcap = cap;
    }
    memcpy (c->out + c->nout, data, size);
    c->nout += size;
    return 0;
}

static int
s_flush (s_conn_t *c)
{
    while (c->nout) {
        ssize_t n = send (c->fd, c->out, c->nout, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        memmove (c->out, c->out + n, c->nout - (size_t) n);
        c->nout -= (size_t) n;
    }
    return 0;
}

static int
s_fill (s_conn_t *c)
{
    if (c->nin == sizeof c->in)
        return 0;
    ssize_t n = recv (c->fd, c->in + c->nin, sizeof c->in - c->nin, MSG_DONTWAIT);
    if (n == 0) {
        fprintf (stderr, "bench_beanstalkd: beanstalkd closed the connection\n");
        return -1;
    }
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)? 0: -1;
    c->nin += (size_t) n;
    return 0;
}

static void
s_consume (s_conn_t *c, size_t n)
{
    memmove (c->in, c->in + n, c->nin - n);
    c->nin -= n;
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

int
main (int argc, char **argv)
{
    opts_t o;
    if (s_parse (argc, argv, &o))
        return 2;
    s_conn_t *conns = calloc (o.consumers + 1, sizeof *conns);
    uint64_t *lat = calloc (o.jobs, sizeof *lat);
    char *put = malloc (o.size + 64);
    if (!conns || !lat || !put) {
        fprintf (stderr, "bench_beanstalkd: out of memory\n");
        return 1;
    }
    int status = 1;
    uint64_t nconns = 0, reserves = 0;
    struct pollfd *pfds = NULL;
    for (uint64_t i = 0; i <= o.consumers; i++) {
        conns [i].fd = s_connect (o.host, (uint16_t) o.port);
        if (conns [i].fd < 0)
            goto done;
        nconns++;
    }
    s_conn_t *prod = &conns [0];
    //  Consumers: P reserves each, outstanding from the start.
    for (uint64_t i = 1; i <= o.consumers; i++)
        for (uint64_t k = 0; k < o.pipeline; k++) {
            if (s_append (&conns [i], "reserve\r\n", 9))
                goto done;
            reserves++;
        }
    int hlen = snprintf (put, 64, "put 0 0 120 %" PRIu64 "\r\n", o.size);
    memset (put + hlen, 'x', o.size);
    memcpy (put + hlen + o.size, "\r\n", 2);
    size_t putlen = (size_t) hlen + o.size + 2;

    uint64_t sent = 0, inserted = 0, reserved = 0, deleted = 0, nlat = 0;
    uint64_t t0 = s_now_ns (), t_last = t0;
    uint64_t deadline = t0 + o.timeout_s * 1000000000ULL;
    pfds = calloc (nconns, sizeof *pfds);
    if (!pfds)
        goto done;
    while (deleted < o.jobs) {
        if (s_now_ns () > deadline) {
            fprintf (stderr, "bench_beanstalkd: timeout: %" PRIu64 " of %" PRIu64
                     " jobs deleted\n", deleted, o.jobs);
            goto done;
        }
        while (sent < o.jobs && prod->pending < o.window) {
            uint64_t now = s_now_ns ();
            memcpy (put + hlen, &now, sizeof now);
            if (s_append (prod, put, putlen))
                goto done;
            prod->pending++;
            sent++;
        }
        for (uint64_t i = 0; i < nconns; i++) {
            if (s_flush (&conns [i])) {
                fprintf (stderr, "bench_beanstalkd: send: %s\n", strerror (errno));
                goto done;
            }
            pfds [i] = (struct pollfd) { .fd = conns [i].fd,
                                         .events = POLLIN | (conns [i].nout? POLLOUT: 0) };
        }
        if (poll (pfds, nconns, 100) < 0 && errno != EINTR)
            goto done;
        for (uint64_t i = 0; i < nconns; i++) {
            s_conn_t *c = &conns [i];
            if (!(pfds [i].revents & (POLLIN | POLLERR | POLLHUP)))
                continue;
            if (s_fill (c))
                goto done;
            uint64_t now = s_now_ns ();
            while (c->nin) {
                char *eol = memchr (c->in, '\n', c->nin);
                if (!eol)
                    break;
                size_t linelen = (size_t) (eol - c->in) + 1;
                uint64_t id, bytes;
                if (i == 0) {
                    if (strncmp (c->in, "INSERTED ", 9) != 0) {
                        fprintf (stderr, "bench_beanstalkd: put answered '%.*s'\n",
                                 (int) linelen - 2, c->in);
                        goto done;
                    }
                    inserted++;
                    c->pending--;
                    s_consume (c, linelen);
                }
                else
                if (strncmp (c->in, "RESERVED ", 9) == 0) {
                    if (sscanf (c->in + 9, "%" SCNu64 " %" SCNu64, &id, &bytes) != 2) {
                        fprintf (stderr, "bench_beanstalkd: bad RESERVED line\n");
                        goto done;
                    }
                    if (c->nin < linelen + bytes + 2)
                        break;          //  the body is not all here yet
                    uint64_t at;
                    memcpy (&at, eol + 1, sizeof at);
                    if (nlat < o.jobs && now > at)
                        lat [nlat++] = now - at;
                    reserved++;
                    char cmd [64];
                    int n = snprintf (cmd, sizeof cmd, "delete %" PRIu64 "\r\n", id);
                    if (s_append (c, cmd, (size_t) n))
                        goto done;
                    //  Another reserve while jobs may still come for it.
                    if (reserves < o.jobs) {
                        if (s_append (c, "reserve\r\n", 9))
                            goto done;
                        reserves++;
                    }
                    s_consume (c, linelen + bytes + 2);
                }
                else
                if (strncmp (c->in, "DELETED", 7) == 0) {
                    deleted++;
                    t_last = now;
                    s_consume (c, linelen);
                }
                else {
                    fprintf (stderr, "bench_beanstalkd: unexpected '%.*s'\n",
                             (int) linelen - 2, c->in);
                    goto done;
                }
            }
        }
    }
    double secs = (double) (t_last - t0) / 1e9;
    qsort (lat, nlat, sizeof *lat, s_cmp_u64);
    double p50 = nlat? (double) lat [nlat / 2] / 1e6: 0;
    double p99 = nlat? (double) lat [(size_t) ((double) nlat * 0.99)] / 1e6: 0;
    printf ("beanstalkd  %" PRIu64 " jobs of %" PRIu64 " B, %" PRIu64 " consumers x %" PRIu64
            " reserves, window %" PRIu64 "\n", o.jobs, o.size, o.consumers, o.pipeline,
            o.window);
    printf ("completed   %" PRIu64 " put, reserved and deleted in %.3f s = %.0f jobs/s\n",
            deleted, secs, (double) deleted / secs);
    printf ("latency     put sent -> RESERVED read: p50 %.3f ms  p99 %.3f ms\n", p50, p99);
    printf ("RESULT jobs=%" PRIu64 " e2e_rate=%.0f p50_ms=%.3f p99_ms=%.3f\n", deleted,
            (double) deleted / secs, p50, p99);
    status = 0;
done:
    free (pfds);
    for (uint64_t i = 0; i < nconns; i++)
        close (conns [i].fd);
    for (uint64_t i = 0; i <= o.consumers; i++)
        free (conns [i].out);
    free (conns);
    free (lat);
    free (put);
    return status;
}
