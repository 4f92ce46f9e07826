/*  dq_gateway.h - the REST front door: HTTP requests in, client protocol
    calls out (libmicrohttpd, jansson, and the broker link dq_gwlink).

    A gateway holds no state of its own: any number can run behind a load
    balancer in front of one broker. libmicrohttpd runs its own pool of
    threads (epoll, one per core by default); request handlers never block
    on the broker: they build the request, hand it to the link thread and
    suspend their connection until the answer comes (dq_gwlink).

    Routes, statuses and bodies: docs/http.md. Not here: option parsing
    (dagq_gateway.c), the broker protocol (dq_gwlink, dq_proto).
*/
#ifndef DQ_GATEWAY_H_INCLUDED
#define DQ_GATEWAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_GATEWAY_LISTEN_DEFAULT          "127.0.0.1:8080"
#define DQ_GATEWAY_BROKER_DEFAULT          "tcp://127.0.0.1:5555"
#define DQ_GATEWAY_MAX_BODY_DEFAULT        (16u << 20)   //  bytes
#define DQ_GATEWAY_MAX_BULK_DEFAULT        10000         //  jobs per POST /v1/jobs
#define DQ_GATEWAY_MAX_DAG_LIST_DEFAULT    100000        //  jobs a whole DAG listing
#define DQ_GATEWAY_MAX_CONNECTIONS_DEFAULT 10000
#define DQ_GATEWAY_MAX_PER_IP_DEFAULT      1000          //  0 = no limit
#define DQ_GATEWAY_IDLE_TIMEOUT_DEFAULT    30            //  seconds
#define DQ_GATEWAY_REQUEST_TIMEOUT_DEFAULT 10000         //  ms, broker answer
#define DQ_GATEWAY_MAX_WAIT_DEFAULT        300000        //  ms, ?wait cap
#define DQ_GATEWAY_MAX_HEADER_DEFAULT      (16u << 10)   //  bytes of request head
#define DQ_GATEWAY_READY_WINDOW_MS         3000          //  /readyz: broker answered within

//  Exit codes of dagq-gateway.
#define DQ_GATEWAY_EXIT_RUNTIME 1
#define DQ_GATEWAY_EXIT_USAGE   2
#define DQ_GATEWAY_EXIT_CONFIG  3
#define DQ_GATEWAY_EXIT_BIND    4

typedef struct {
    const char *listen;          //  ADDR:PORT, [IPv6]:PORT, *:PORT; port 0 = any
    const char *broker;          //  frontend endpoint
    const char *events;          //  broker's PUB endpoint, or NULL (poll only)
    uint32_t threads;            //  HTTP threads; 0 = number of cores
    bool use_poll;               //  poll () instead of epoll: fewer system
                                 //  calls a request, cost grows with connections
    const char *token_file;      //  bearer tokens, one a line; NULL = no auth
    const char *allow_types;     //  comma-separated job types; NULL = any
    uint64_t max_body;           //  request body bytes
    uint32_t max_bulk;           //  jobs in one POST /v1/jobs
    uint32_t max_dag_list;       //  jobs GET /v1/dags/{id} lists unpaged
    uint32_t max_connections;    //  in total
    uint32_t max_per_ip;         //  per client address; 0 = no limit
    uint32_t max_header;         //  bytes of request line + headers
    uint32_t idle_timeout;       //  s: idle connections, and slow request heads
    uint32_t request_timeout_ms; //  broker answer deadline
    uint32_t max_wait_ms;        //  largest ?wait
    const char *tls_cert;        //  PEM files; both or neither
    const char *tls_key;
    const char *curve_secret;    //  client CURVE certificate (secret), or NULL
    const char *curve_broker_public;
} dq_gateway_cfg_t;

//  Fill cfg with the defaults above.
void
    dq_gateway_cfg_defaults (dq_gateway_cfg_t *cfg);

typedef struct _dq_gateway_t dq_gateway_t;

//  Validate cfg, read the token file and TLS files, bind the listening
//  socket, connect to the broker and start serving. On failure returns
//  NULL, writes a message to err and sets *exit_code (DQ_GATEWAY_EXIT_*).
dq_gateway_t *
    dq_gateway_new (const dq_gateway_cfg_t *cfg, char *err, size_t err_size,
                    int *exit_code);

//  The port actually bound (useful with port 0).
uint16_t
    dq_gateway_port (dq_gateway_t *self);

//  Serve until SIGINT/SIGTERM (or dq_gateway_stop); also enforces the
//  request-head deadline (slow clients). Returns 0, or
//  DQ_GATEWAY_EXIT_RUNTIME if the broker link failed.
int
    dq_gateway_run (dq_gateway_t *self);

//  Async-signal-safe request to stop dq_gateway_run.
void
    dq_gateway_stop (dq_gateway_t *self);

//  Stop accepting, answer every held request, close everything. NULL-safe.
void
    dq_gateway_destroy (dq_gateway_t **self_p);

#ifdef __cplusplus
}
#endif
#endif
