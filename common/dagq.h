/*  dagq.h - libdagq, the one header a program needs.

    The wire protocol (dq_proto.h), the client API (dq_client.h: submit jobs
    and DAGs, wait, read results) and the embeddable worker (dq_worker.h).
    Link with -ldagq (pkg-config names: libzmq libczmq msgpack jansson).
*/
#ifndef DAGQ_H_INCLUDED
#define DAGQ_H_INCLUDED

#define DAGQ_VERSION_MAJOR 0
#define DAGQ_VERSION_MINOR 1
#define DAGQ_VERSION_PATCH 0

#include "dq_proto.h"
#include "dq_client.h"
#include "dq_dagdoc.h"
#include "dq_worker.h"

#endif
