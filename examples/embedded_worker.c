/*  embedded_worker.c - a program that is its own dagq worker.

    Registers a C function for the job type `upper` (uppercases the payload)
    and runs the worker engine until SIGINT or SIGTERM.

        embedded_worker [BROKER_BACKEND]      (default tcp://127.0.0.1:5556)
        dagq submit upper --data 'hello' --wait     # prints HELLO
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "dagq.h"

//  A handler: read the task, fill the result (malloc'd output or error),
//  return 0 for success or -1 for failure. It runs on a pool thread.
static int
s_upper (const dq_task_t *task, void *arg, dq_result_t *result)
{
    (void) arg;
    if (task->payload_size == 0)
        return 0;                           //  empty in, empty out
    char *out = malloc (task->payload_size);
    if (!out)
        return -1;                          //  reported as "handler failed"
    const unsigned char *in = task->payload;
    for (size_t i = 0; i < task->payload_size; i++)
        out [i] = (char) toupper (in [i]);
    result->output = out;
    result->output_size = task->payload_size;
    result->content_type = "text/plain";
    return 0;
}

int
main (int argc, char *argv [])
{
    const char *broker = argc > 1? argv [1]: DQ_WORKER_BROKER_DEFAULT;
    dq_worker_t *worker = dq_worker_new (broker, 0);   //  0: one job per core
    if (!worker) {
        fprintf (stderr, "embedded_worker: bad broker endpoint '%s'\n", broker);
        return 2;
    }
    dq_worker_set_name (worker, "embedded-upper");
    if (dq_worker_register (worker, "upper", s_upper, NULL, 0)) {
        dq_worker_destroy (&worker);
        return 1;
    }
    int rc = dq_worker_run (worker);        //  returns after SIGINT/SIGTERM
    dq_worker_destroy (&worker);
    return rc == 0? 0: 1;
}
