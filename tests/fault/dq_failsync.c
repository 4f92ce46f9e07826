/*  dq_failsync.c - LD_PRELOAD fault injection: slow or failing fsyncs.

    While the file named by $DQ_SLOW_SYNC_FILE exists, every fsync and
    fdatasync of the process first sleeps 1.5 s, like a disk that stalls.
    Once the file named by $DQ_FAIL_SYNC_FILE exists, they fail with EIO,
    as they do when a disk reports a write error. Otherwise they are the
    real calls. Used by tests/fault/test_syncfail.py against a real
    broker; never installed. Built without sanitizers so it can be
    preloaded into any process.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             //  RTLD_NEXT
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int
s_exists (const char *variable)
{
    const char *path = getenv (variable);
    return path && access (path, F_OK) == 0;
}

//  What fsync or fdatasync (named) does to fd under the triggers.
static int
s_sync (const char *name, int fd)
{
    if (s_exists ("DQ_SLOW_SYNC_FILE")) {
        struct timespec pause = { 1, 500000000 };
        nanosleep (&pause, NULL);
    }
    if (s_exists ("DQ_FAIL_SYNC_FILE")) {
        errno = EIO;
        return -1;
    }
    int (*real) (int) = (int (*) (int)) dlsym (RTLD_NEXT, name);
    return real? real (fd): -1;
}

int
fdatasync (int fd)
{
    return s_sync ("fdatasync", fd);
}

int
fsync (int fd)
{
    return s_sync ("fsync", fd);
}
