/*  dq_walbuf.c - one write per commit to the WAL (see dq_walbuf.h).

    The VFS is a copy of the default one with its own xOpen, which opens
    the real file inside a larger object (s_file_t, the real file right
    after it) and answers through s_methods. Every method forwards to the
    real file; a WAL file's writes are gathered first:

    - appends at the end of what is gathered join it (up to S_BUF_MAX);
      any other write, and any other method, writes what is gathered first;
    - a 24-byte frame header whose "database size" field is not zero starts
      a commit frame: the write after it (the page) completes the commit,
      and everything gathered is written then, inside that xWrite, so a
      failure fails the commit;
    - SQLite calls the database file's xShmBarrier before it publishes new
      frames to other connections: it writes what its WAL gathered. (After
      a commit there is nothing left; a failure here, which xShmBarrier
      cannot return, fails every later call on the WAL.)
*/
#include "dq_walbuf.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define S_BUF_MAX   (1 << 20)   //  bytes gathered before they are written anyway
//  The default VFS writes at most 128 KiB - 1 in one call (it masks the
//  length with 0x1ffff), so what is gathered goes out in pieces of this.
#define S_WRITE_MAX (124 << 10)
#define S_FRAME_HDR 24          //  a WAL frame header

typedef struct _s_file_t s_file_t;
struct _s_file_t {
    sqlite3_file base;          //  first: SQLite sees this
    sqlite3_file *real;         //  the default VFS's file, right after us
    bool is_wal;
    s_file_t *wal;              //  database file: its WAL, while open
    s_file_t *db;               //  WAL: its database file
    unsigned char *buf;         //  WAL: gathered bytes, for offset off
    size_t len;
    sqlite3_int64 off;
    bool commit_next;           //  WAL: the next write ends a commit frame
    int failed;                 //  WAL: a write at the barrier failed
};

static sqlite3_vfs s_vfs;
static sqlite3_vfs *s_real;
static int s_register_rc = SQLITE_ERROR;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

//  Writes what is gathered. A SQLite result code.
static int
s_flush (s_file_t *self)
{
    if (self->failed)
        return self->failed;
    int rc = SQLITE_OK;
    for (size_t done = 0; done < self->len && rc == SQLITE_OK; done += S_WRITE_MAX) {
        size_t n = self->len - done < S_WRITE_MAX? self->len - done: S_WRITE_MAX;
        rc = self->real->pMethods->xWrite (self->real, self->buf + done, (int) n,
                                           self->off + (sqlite3_int64) done);
    }
    self->len = 0;
    return rc;
}

static int
s_close (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    if (self->is_wal && self->db)
        self->db->wal = NULL;
    if (!self->is_wal && self->wal)
        self->wal->db = NULL;
    sqlite3_free (self->buf);
    self->buf = NULL;
    int close_rc = self->real->pMethods->xClose (self->real);
    return rc != SQLITE_OK? rc: close_rc;
}

static int
s_read (sqlite3_file *file, void *data, int n, sqlite3_int64 off)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    return rc != SQLITE_OK? rc: self->real->pMethods->xRead (self->real, data, n, off);
}

static int
s_write (sqlite3_file *file, const void *data, int n, sqlite3_int64 off)
{
    s_file_t *self = (s_file_t *) file;
    if (!self->is_wal)
        return self->real->pMethods->xWrite (self->real, data, n, off);
    if (self->failed)
        return self->failed;
    int rc = SQLITE_OK;
    if (self->len && (off != self->off + (sqlite3_int64) self->len
                      || self->len + (size_t) n > S_BUF_MAX))
        rc = s_flush (self);
    if (rc != SQLITE_OK)
        return rc;
    if (!self->buf)
        self->buf = sqlite3_malloc (S_BUF_MAX);
    if (!self->buf || n > S_WRITE_MAX) {
        //  Not gathered: what is, goes first, so a commit's write still
        //  writes the whole commit.
        rc = s_flush (self);
        self->commit_next = false;
        return rc != SQLITE_OK? rc: self->real->pMethods->xWrite (self->real, data, n, off);
    }
    if (!self->len)
        self->off = off;
    memcpy (self->buf + self->len, data, (size_t) n);
    self->len += (size_t) n;
    if (self->commit_next) {
        self->commit_next = false;
        return s_flush (self);
    }
    //  Frame header: page number, then the database size in pages after a
    //  commit (big-endian), zero in every frame but a commit's last.
    const unsigned char *h = data;
    if (n == S_FRAME_HDR && (h [4] | h [5] | h [6] | h [7]))
        self->commit_next = true;
    return SQLITE_OK;
}

static int
s_truncate (sqlite3_file *file, sqlite3_int64 size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    return rc != SQLITE_OK? rc: self->real->pMethods->xTruncate (self->real, size);
}

static int
s_sync (sqlite3_file *file, int flags)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    return rc != SQLITE_OK? rc: self->real->pMethods->xSync (self->real, flags);
}

static int
s_file_size (sqlite3_file *file, sqlite3_int64 *size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    return rc != SQLITE_OK? rc: self->real->pMethods->xFileSize (self->real, size);
}

static int
s_lock (sqlite3_file *file, int level)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xLock (real, level);
}

static int
s_unlock (sqlite3_file *file, int level)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xUnlock (real, level);
}

static int
s_check_reserved_lock (sqlite3_file *file, int *out)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xCheckReservedLock (real, out);
}

static int
s_file_control (sqlite3_file *file, int op, void *arg)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xFileControl (real, op, arg);
}

static int
s_sector_size (sqlite3_file *file)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xSectorSize (real);
}

static int
s_device_characteristics (sqlite3_file *file)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xDeviceCharacteristics (real);
}

static int
s_shm_map (sqlite3_file *file, int region, int size, int extend, void volatile **p)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xShmMap (real, region, size, extend, p);
}

static int
s_shm_lock (sqlite3_file *file, int offset, int n, int flags)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xShmLock (real, offset, n, flags);
}

static void
s_shm_barrier (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    s_file_t *wal = self->wal;
    if (wal && wal->len && !wal->failed) {
        int rc = s_flush (wal);
        if (rc != SQLITE_OK)
            wal->failed = rc;
    }
    self->real->pMethods->xShmBarrier (self->real);
}

static int
s_shm_unmap (sqlite3_file *file, int delete_flag)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xShmUnmap (real, delete_flag);
}

static int
s_fetch (sqlite3_file *file, sqlite3_int64 off, int n, void **p)
{
    s_file_t *self = (s_file_t *) file;
    int rc = self->is_wal? s_flush (self): SQLITE_OK;
    return rc != SQLITE_OK? rc: self->real->pMethods->xFetch (self->real, off, n, p);
}

static int
s_unfetch (sqlite3_file *file, sqlite3_int64 off, void *p)
{
    sqlite3_file *real = ((s_file_t *) file)->real;
    return real->pMethods->xUnfetch (real, off, p);
}

static const sqlite3_io_methods s_methods = {
    3, s_close, s_read, s_write, s_truncate, s_sync, s_file_size, s_lock, s_unlock,
    s_check_reserved_lock, s_file_control, s_sector_size, s_device_characteristics,
    s_shm_map, s_shm_lock, s_shm_barrier, s_shm_unmap, s_fetch, s_unfetch
};

static int
s_open (sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out)
{
    (void) vfs;
    s_file_t *self = (s_file_t *) file;
    memset (self, 0, sizeof *self);
    self->real = (sqlite3_file *) (self + 1);
    int rc = s_real->xOpen (s_real, name, self->real, flags, out);
    //  Only a version 3 file has every method s_methods forwards to (the
    //  default VFS's files all are); anything else is used as it is.
    if (rc != SQLITE_OK || !self->real->pMethods || self->real->pMethods->iVersion < 3) {
        if (rc == SQLITE_OK && self->real->pMethods)
            self->real->pMethods->xClose (self->real);
        self->base.pMethods = NULL;
        return rc != SQLITE_OK? rc: SQLITE_CANTOPEN;
    }
    self->base.pMethods = &s_methods;
    if ((flags & SQLITE_OPEN_WAL) && name) {
        self->is_wal = true;
        //  The database file was opened by this VFS too (same connection).
        s_file_t *db = (s_file_t *) sqlite3_database_file_object (name);
        if (db && db->base.pMethods == &s_methods) {
            self->db = db;
            db->wal = self;
        }
    }
    return SQLITE_OK;
}

static void
s_register (void)
{
    s_real = sqlite3_vfs_find (NULL);
    if (!s_real)
        return;
    s_vfs = *s_real;
    s_vfs.pNext = NULL;
    s_vfs.zName = DQ_WALBUF_VFS;
    //  Our object, then the real file; keep the real one 8-byte aligned.
    s_vfs.szOsFile = (int) ((sizeof (s_file_t) + 7) / 8 * 8) + s_real->szOsFile;
    s_vfs.xOpen = s_open;
    s_register_rc = sqlite3_vfs_register (&s_vfs, 0);
}

int
dq_walbuf_register (void)
{
    pthread_once (&s_once, s_register);
    return s_register_rc;
}
