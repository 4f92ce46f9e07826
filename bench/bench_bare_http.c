/*  bench_bare_http.c - the ceiling for bench_gateway.sh: a libmicrohttpd
    server that reads each request body, throws it away and answers 202 with
    a small JSON body, set up like dagq-gateway (internal epoll threads, one
    per core, turbo) but doing nothing else.

    Usage: bench_bare_http [--listen PORT] [--threads N]
    Runs until SIGINT/SIGTERM. Prints "listening on PORT" when ready.
*/
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t s_stop;

static void
s_on_signal (int sig)
{
    (void) sig;
    s_stop = 1;
}

static enum MHD_Result
s_on_request (void *cls, struct MHD_Connection *con, const char *url,
              const char *method, const char *version, const char *upload_data,
              size_t *upload_data_size, void **con_cls)
{
    (void) cls; (void) url; (void) method; (void) version; (void) upload_data;
    static int marker;
    if (*con_cls == NULL) {
        *con_cls = &marker;     //  first call: headers only
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;  //  discard the body
        return MHD_YES;
    }
    static const char body [] = "{\"id\":\"bench-1\",\"status_url\":\"/v1/jobs/bench-1\"}";
    struct MHD_Response *resp = MHD_create_response_from_buffer (
        sizeof body - 1, (void *) body, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header (resp, MHD_HTTP_HEADER_LOCATION, "/v1/jobs/bench-1");
    enum MHD_Result rc = MHD_queue_response (con, MHD_HTTP_ACCEPTED, resp);
    MHD_destroy_response (resp);
    return rc;
}

int
main (int argc, char *argv [])
{
    unsigned port = 8090;
    long threads = sysconf (_SC_NPROCESSORS_ONLN);
    for (int i = 1; i < argc; i++) {
        if (!strcmp (argv [i], "--listen") && i + 1 < argc)
            port = (unsigned) strtoul (argv [++i], NULL, 10);
        else
        if (!strcmp (argv [i], "--threads") && i + 1 < argc)
            threads = strtol (argv [++i], NULL, 10);
        else {
            fprintf (stderr, "usage: bench_bare_http [--listen PORT] [--threads N]\n");
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;
    struct sigaction sa = { .sa_handler = s_on_signal };
    sigemptyset (&sa.sa_mask);
    sigaction (SIGINT, &sa, NULL);
    sigaction (SIGTERM, &sa, NULL);
    signal (SIGPIPE, SIG_IGN);
    struct MHD_Daemon *d = MHD_start_daemon (
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO
        | MHD_USE_ITC, (uint16_t) port, NULL, NULL, s_on_request, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 10000,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 30,
        MHD_OPTION_END);
    if (!d) {
        fprintf (stderr, "bench_bare_http: cannot listen on port %u\n", port);
        return 4;
    }
    printf ("listening on %u\n", port);
    fflush (stdout);
    while (!s_stop)
        pause ();
    MHD_stop_daemon (d);
    return 0;
}
