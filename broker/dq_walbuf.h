/*  dq_walbuf.h - a SQLite VFS that writes each commit's WAL frames with one
    system call.

    SQLite appends a WAL frame with two writes (its 24-byte header, then the
    page), so a commit of 30 pages costs 60 pwrite calls, and system calls
    are what the broker's loop spends most of its time on. This VFS sits on
    the default one and gathers the appends to a WAL file in memory; they
    reach the file as one write when the commit frame is complete (so a
    failure is the commit's error, as before), and before anything that
    could see the file: a read, a sync, a truncate, its size, closing it, or
    SQLite publishing new frames to other connections (the shared-memory
    barrier). Nothing else changes: the database file and other files go
    straight through.

    Use it for the connection that writes (sqlite3_open_v2 with
    DQ_WALBUF_VFS); other connections read through the default VFS.
*/
#ifndef DQ_WALBUF_H_INCLUDED
#define DQ_WALBUF_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

#define DQ_WALBUF_VFS "dagq-walbuf"

//  Register the VFS (not as the default); safe to call more than once and
//  from several threads. Returns a SQLite result code.
int
    dq_walbuf_register (void);

#ifdef __cplusplus
}
#endif
#endif
