/*  dq_failsync.c - LD_PRELOAD fault injection: fsync and fdatasync fail.

    Once the file named by $DQ_FAIL_SYNC_FILE exists, every fsync and
    fdatasync of the process fails with EIO, as they do when a disk
    reports a write error. Until then they are the real calls. Used by
    tests/fault/test_syncfail.py against a real broker; never installed.
    Built without sanitizers so it can be preloaded into any process.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE             //  RTLD_NEXT
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int
s_failing (void)
{
    const char *path = getenv ("DQ_FAIL_SYNC_FILE");
    return path && access (path, F_OK) == 0;
}

int
fdatasync (int fd)
{
    if (s_failing ()) {
        errno = EIO;
        return -1;
    }
    int (*real) (int) = (int (*) (int)) dlsym (RTLD_NEXT, "fdatasync");
    return real? real (fd): -1;
}

int
fsync (int fd)
{
    if (s_failing ()) {
        errno = EIO;
        return -1;
    }
    int (*real) (int) = (int (*) (int)) dlsym (RTLD_NEXT, "fsync");
    return real? real (fd): -1;
}
