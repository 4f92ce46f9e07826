/*  dq_store.c - the broker's durable store: one SQLite database in WAL mode.

    Only this file knows the on-disk format. It does not know about sockets,
    the broker's in-memory records or the clock: the broker passes plain
    records (dq_store_job_t ...) and times in milliseconds.

    Files in the data dir:

        <dir>/dagq.db        the database (SQLite 3, journal_mode=WAL)
        <dir>/dagq.db-wal    its write-ahead log, -shm its WAL index
        <dir>/LOCK           flock(LOCK_EX) held while a broker has the store
                             open; holds that broker's pid, for messages

    Store format version 2 (DQ_STORE_FORMAT_VERSION):

        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT                  -- app='dagq', format_version='2',
        );                              -- and the broker's own keys
        CREATE TABLE jobs (             -- a job as submitted, written once
            id           INTEGER PRIMARY KEY,  -- job sequence number
            type         TEXT NOT NULL,
            payload      BLOB,          -- NULL = none, X'' = empty
            content_type TEXT,          -- NULL = none
            name         TEXT,          -- local name in its DAG, NULL = none
            key          TEXT,          -- idempotency key, NULL = none
            priority     INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            timeout_ms   INTEGER NOT NULL,  -- 0 = no timeout
            created_ms   INTEGER NOT NULL,
            dag          INTEGER NOT NULL,  -- dags.id, 0 = none
            attempts     INTEGER NOT NULL,  -- counted at the last retry
            run_at_ms    INTEGER NOT NULL,  -- not before; 0 = now
            error        TEXT           -- error of the last retry, NULL = none
        );                              -- (these three change at a retry)
        CREATE TABLE outcomes (         -- a finished job's end, written once
            id           INTEGER PRIMARY KEY,  -- jobs.id
            state        INTEGER NOT NULL,  -- dq_state_t: 3 succeeded,
                                            -- 4 failed, 5 cancelled, 6 skipped
            attempts     INTEGER NOT NULL,  -- attempts it took
            started_ms   INTEGER NOT NULL,  -- last attempt, 0 = never ran
            finished_ms  INTEGER NOT NULL,
            worker       TEXT,          -- last worker, NULL = none
            output       BLOB,          -- NULL = none, X'' = empty
            error        TEXT,          -- NULL = none
            skipped_by   INTEGER NOT NULL   -- jobs.id that caused a skip, 0 = none
        );
        CREATE TABLE edges (            -- a job's parents
            child          INTEGER NOT NULL,  -- jobs.id
            pos            INTEGER NOT NULL,  -- 0.. in depends_on order
            parent         INTEGER NOT NULL,  -- jobs.id
            run_on_failure INTEGER NOT NULL,  -- 0 or 1
            PRIMARY KEY (child, pos)
        ) WITHOUT ROWID;
        CREATE TABLE dags (
            id         INTEGER PRIMARY KEY,   -- DAG sequence number
            name       TEXT,
            key        TEXT,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE keys (             -- idempotency keys of submissions
            key        TEXT PRIMARY KEY,
            first      INTEGER NOT NULL,  -- first job id; jobs first..first+count-1
            count      INTEGER NOT NULL,
            dag        INTEGER NOT NULL,  -- dags.id, 0 = none
            created_ms INTEGER NOT NULL
        );
        CREATE INDEX keys_created ON keys (created_ms);
        CREATE INDEX outcomes_finished ON outcomes (finished_ms);

    outcomes_finished came after version 2 was released: open adds it to a
    store without it, and older brokers open such a store and keep it up to
    date (an index needs no code), so it did not need a new version. It is
    how retention finds expired jobs that the broker no longer holds in
    memory (dq_store_expired).

    A job is finished if and only if it has an outcomes row. Its lifetime
    costs one insert into jobs (and edges), one into outcomes, and the
    deletes of retention; a dispatch writes nothing (the broker does not
    persist "queued" or "running": an unfinished job loads as waiting).

    Version 1 kept everything in one jobs row that each dispatch and the
    end updated in place. Opening a version 1 store upgrades it in one
    transaction (s_upgrade_v1): rows of finished jobs (state >= 3) get an
    outcomes row, every job keeps its attempts, run_at_ms and error.

    Unsigned 64-bit values are stored as SQLite's signed INTEGER (bit for
    bit); job and DAG ids must be <= INT64_MAX so that ORDER BY id is their
    numeric order.

    Open refuses, without writing to it, a file that is not SQLite, a SQLite
    database of another program (no meta table but other tables, or meta.app
    other than 'dagq'), a format version other than 1 or 2, or a database that
    fails PRAGMA quick_check. The checks run on a read-only connection, so a
    refused file is never modified. quick_check reads the whole file, so it
    is skipped when the file is as a clean close left it (the CLEAN marker,
    see s_clean_matches).

    Changing the format: bump DQ_STORE_FORMAT_VERSION and this comment, add
    an upgrade step from the previous version in s_schema_create (run inside
    the schema transaction, keyed on the stored format_version), and keep
    accepting the old version in s_validate (DQ_STORE_FORMAT_OLDEST). Never
    reuse a version number.
*/

#include "dq_store.h"
#include "dq_log.h"
#include "dq_walbuf.h"
#include "dq_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define DQ_STORE_LOCK_FILE "LOCK"
#define DQ_STORE_CLEAN_FILE "CLEAN"
#define DQ_STORE_DIR_MODE 0750
#define DQ_STORE_LOCK_MODE 0640
#define DQ_STORE_APP "dagq"
#define DQ_STORE_FORMAT_OLDEST 1    //  the oldest version open upgrades
//  Tuning: 32 MiB page cache, a checkpoint every ~16 MiB of WAL (4 KiB
//  pages), the WAL truncated back to 64 MiB after a checkpoint, and up to
//  5 s of waiting on a lock held by a reader (e.g. an operator's shell).
//  Checkpoints run on a thread of their own (see s_checkpointer).
#define DQ_STORE_CACHE_KIB 32768
#define DQ_STORE_WAL_AUTOCHECKPOINT 4000
#define DQ_STORE_JOURNAL_SIZE_LIMIT (64 * 1024 * 1024)
#define DQ_STORE_BUSY_TIMEOUT_MS 5000
#define DQ_STORE_ERROR_MAX 512

//  Statements prepared once at open. Parameters are plain '?', bound in
//  order by s_binder_t.
typedef enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_META_GET,
    S_META_SET,
    S_JOB_PUT,
    S_EDGE_PUT,
    S_DAG_PUT,
    S_KEY_PUT,
    S_JOB_RETRY,
    S_OUTCOME_PUT,
    S_JOB_DELETE,
    S_OUTCOME_DELETE,
    S_EDGES_DELETE,
    S_DAG_DELETE,
    S_KEYS_EXPIRE,
    S_JOB_OUTPUT,
    S_JOB_GET,
    S_JOB_EDGES,
    S_EXPIRED,
    S_PAGE_COUNT,
    S_COUNT_
} s_stmt_t;

//  A job with its outcome, as s_row_job reads it: the output's size only,
//  the payload only while the job has not finished (its size always).
#define S_JOB_ROW \
    "SELECT j.id, j.type, CASE WHEN o.id IS NULL THEN j.payload END," \
    " length (j.payload), j.content_type, j.name, j.key, j.priority," \
    " j.max_attempts, j.timeout_ms, j.created_ms, j.dag, j.attempts," \
    " j.run_at_ms, j.error, o.id IS NOT NULL, o.state, o.attempts," \
    " o.started_ms, o.finished_ms, o.worker, length (o.output), o.error," \
    " o.skipped_by FROM jobs j LEFT JOIN outcomes o ON o.id = j.id"

static const char *s_sql [S_COUNT_] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?",
    //  An existing key is updated in place (its index entry is not touched:
    //  next_seq is written in most commits)
    [S_META_SET] =
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    //  A plain INSERT: ids are never reused, so no old row or edges to replace
    [S_JOB_PUT] =
        "INSERT INTO jobs (id, type, payload, content_type, name, key, priority,"
        " max_attempts, timeout_ms, created_ms, dag, attempts, run_at_ms, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_EDGE_PUT] =
        "INSERT INTO edges (child, pos, parent, run_on_failure) VALUES (?, ?, ?, ?)",
    [S_DAG_PUT] =
        "INSERT OR REPLACE INTO dags (id, name, key, created_ms) VALUES (?, ?, ?, ?)",
    [S_KEY_PUT] =
        "INSERT OR REPLACE INTO keys (key, first, count, dag, created_ms)"
        " VALUES (?, ?, ?, ?, ?)",
    [S_JOB_RETRY] =
        "UPDATE jobs SET attempts = ?, run_at_ms = ?, error = ? WHERE id = ?",
    [S_OUTCOME_PUT] =
        "INSERT OR REPLACE INTO outcomes (id, state, attempts, started_ms,"
        " finished_ms, worker, output, error, skipped_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [S_JOB_DELETE] = "DELETE FROM jobs WHERE id = ?",
    [S_OUTCOME_DELETE] = "DELETE FROM outcomes WHERE id = ?",
    [S_EDGES_DELETE] = "DELETE FROM edges WHERE child = ?",
    [S_DAG_DELETE] = "DELETE FROM dags WHERE id = ?",
    [S_KEYS_EXPIRE] = "DELETE FROM keys WHERE created_ms < ?",
    [S_JOB_OUTPUT] =
        "SELECT o.id IS NOT NULL, o.output, o.error, j.error FROM jobs j"
        " LEFT JOIN outcomes o ON o.id = j.id WHERE j.id = ?",
    [S_JOB_GET] = S_JOB_ROW " WHERE j.id = ?",
    [S_JOB_EDGES] =
        "SELECT parent, run_on_failure FROM edges WHERE child = ? ORDER BY pos",
    //  Walks the outcomes_finished index from a cursor
    [S_EXPIRED] =
        "SELECT id, finished_ms FROM outcomes WHERE finished_ms < ?"
        " AND (finished_ms, id) > (?, ?) ORDER BY finished_ms, id LIMIT ?",
    [S_PAGE_COUNT] = "PRAGMA page_count",
};

//  The schema of format version 2; IF NOT EXISTS so it also runs on an
//  existing store (it then changes nothing).
static const char *s_schema_sql =
    "CREATE TABLE IF NOT EXISTS meta ("
    "  key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS jobs ("
    "  id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload BLOB,"
    "  content_type TEXT, name TEXT, key TEXT, priority INTEGER NOT NULL,"
    "  max_attempts INTEGER NOT NULL, timeout_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, dag INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, run_at_ms INTEGER NOT NULL, error TEXT);"
    "CREATE TABLE IF NOT EXISTS outcomes ("
    "  id INTEGER PRIMARY KEY, state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, started_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL, worker TEXT, output BLOB, error TEXT,"
    "  skipped_by INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS edges ("
    "  child INTEGER NOT NULL, pos INTEGER NOT NULL, parent INTEGER NOT NULL,"
    "  run_on_failure INTEGER NOT NULL, PRIMARY KEY (child, pos)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS dags ("
    "  id INTEGER PRIMARY KEY, name TEXT, key TEXT, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS keys ("
    "  key TEXT PRIMARY KEY, first INTEGER NOT NULL, count INTEGER NOT NULL,"
    "  dag INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS keys_created ON keys (created_ms);"
    "CREATE INDEX IF NOT EXISTS outcomes_finished ON outcomes (finished_ms);";

//  Version 1 to 2: the jobs table is split into jobs and outcomes. Runs
//  before s_schema_sql, inside the schema transaction.
static const char *s_upgrade_v1_sql =
    "ALTER TABLE jobs RENAME TO jobs_v1;"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload BLOB,"
    "  content_type TEXT, name TEXT, key TEXT, priority INTEGER NOT NULL,"
    "  max_attempts INTEGER NOT NULL, timeout_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, dag INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, run_at_ms INTEGER NOT NULL, error TEXT);"
    "CREATE TABLE outcomes ("
    "  id INTEGER PRIMARY KEY, state INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL, started_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL, worker TEXT, output BLOB, error TEXT,"
    "  skipped_by INTEGER NOT NULL);"
    "INSERT INTO jobs SELECT id, type, payload, content_type, name, key,"
    "  priority, max_attempts, timeout_ms, created_ms, dag, attempts,"
    "  run_at_ms, error FROM jobs_v1 ORDER BY id;"
    "INSERT INTO outcomes SELECT id, state, attempts, started_ms, finished_ms,"
    "  worker, output, error, skipped_by FROM jobs_v1 WHERE state >= 3"
    "  ORDER BY id;"
    "DROP TABLE jobs_v1;";

struct _dq_store_t {
    sqlite3 *db;                 //  the read-write connection
    sqlite3_stmt *stmt [S_COUNT_];  //  prepared at open, finalized at close
    char *dir;                   //  data dir, as given
    char *path;                  //  <dir>/dagq.db
    char *wal_path;              //  <dir>/dagq.db-wal
    int lock_fd;                 //  <dir>/LOCK, flock'ed; -1 if none
    uint64_t page_size;          //  fixed once the database is in WAL mode
    int upgraded_from;           //  format version upgraded at open, 0 = none
    dq_store_sync_t sync;        //  as opened
    bool failed;                 //  a write or commit failed: fail-stop
    bool opened;                 //  dq_store_open succeeded
    bool dirty;                  //  the open transaction wrote something
    char error [DQ_STORE_ERROR_MAX];  //  last error, "" if none
    //  The checkpointer: its own connection and thread, woken by the WAL
    //  hook of the read-write connection.
    sqlite3 *ckpt_db;
    pthread_t ckpt_thread;
    bool ckpt_started;
    pthread_mutex_t ckpt_lock;
    pthread_cond_t ckpt_cond;
    bool ckpt_wanted, ckpt_stop;
    //  The syncer (dq_store_sync_async): commits skip the fsync and a
    //  thread fdatasyncs the WAL behind them. The first three fields are
    //  the writer's alone; the rest is under sync_lock.
    uint64_t commits;            //  commits so far
    uint64_t sync_asked;         //  commits dq_store_sync last asked for
    uint64_t synced_seen;        //  synced as dq_store_durable last saw it
    bool sync_started;
    int wal_fd, sync_fd;         //  the WAL, read-only; eventfd to the broker
    pthread_t sync_thread;
    pthread_mutex_t sync_lock;
    pthread_cond_t sync_cond;
    uint64_t sync_wanted;        //  commits the broker wants on disk
    uint64_t synced;             //  commits known on disk
    int sync_errno;              //  a failed fdatasync's errno, 0 if none
    bool sync_stop;
    uint64_t sync_hist [DQ_PROTO_HIST_BUCKETS];  //  fdatasync durations
};

//  An empty byte, so a zero-length BLOB loads as (non-NULL, 0), unlike NULL.
static const unsigned char s_empty_blob [1] = { 0 };


//  --------------------------------------------------------------------------
//  Small helpers

static void
s_format (char *buf, size_t size, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_format (char *buf, size_t size, const char *fmt, ...)
{
    if (!buf || size == 0)
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (buf, size, fmt, args);
    va_end (args);
}

static void
s_set_error (dq_store_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
s_set_error (dq_store_t *self, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (self->error, sizeof self->error, fmt, args);
    va_end (args);
}

static char *
s_concat (const char *a, const char *b)
{
    size_t alen = strlen (a), blen = strlen (b);
    char *s = malloc (alen + blen + 1);
    if (!s)
        return NULL;
    memcpy (s, a, alen);
    memcpy (s + alen, b, blen + 1);
    return s;
}

//  Binds parameters in order, remembering the first error, so a statement
//  with twenty parameters reads as twenty lines. Pointers are bound
//  SQLITE_STATIC: every statement is reset and its bindings cleared before
//  the write function returns, while the caller's memory is still valid.
typedef struct {
    sqlite3_stmt *stmt;
    int index;                   //  last parameter bound, 1-based
    int rc;                      //  first error, SQLITE_OK if none
} s_binder_t;

static void
s_bind_u64 (s_binder_t *b, uint64_t value)
{
    ++b->index;
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64 (b->stmt, b->index, (sqlite3_int64) value);
}

static void
s_bind_i64 (s_binder_t *b, int64_t value)
{
    ++b->index;
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64 (b->stmt, b->index, (sqlite3_int64) value);
}

static void
s_bind_text (s_binder_t *b, const char *text)
{
    ++b->index;
    if (b->rc != SQLITE_OK)
        return;
    if (text)
        b->rc = sqlite3_bind_text (b->stmt, b->index, text, -1, SQLITE_STATIC);
    else
        b->rc = sqlite3_bind_null (b->stmt, b->index);
}

static void
s_bind_blob (s_binder_t *b, const void *data, size_t size)
{
    ++b->index;
    if (b->rc != SQLITE_OK)
        return;
    if (data)
        b->rc = sqlite3_bind_blob64 (b->stmt, b->index, data,
                                     (sqlite3_uint64) size, SQLITE_STATIC);
    else
        b->rc = sqlite3_bind_null (b->stmt, b->index);
}

static s_binder_t
s_binder (dq_store_t *self, s_stmt_t which)
{
    s_binder_t binder = { self->stmt [which], 0, SQLITE_OK };
    return binder;
}

//  A column as a borrowed blob: NULL for SQL NULL, s_empty_blob for X''.
static const void *
s_column_blob (sqlite3_stmt *stmt, int col, size_t *size)
{
    *size = 0;
    if (sqlite3_column_type (stmt, col) == SQLITE_NULL)
        return NULL;
    const void *data = sqlite3_column_blob (stmt, col);
    int bytes = sqlite3_column_bytes (stmt, col);
    if (!data || bytes <= 0)
        return s_empty_blob;
    *size = (size_t) bytes;
    return data;
}

static const char *
s_column_text (sqlite3_stmt *stmt, int col)
{
    if (sqlite3_column_type (stmt, col) == SQLITE_NULL)
        return NULL;
    return (const char *) sqlite3_column_text (stmt, col);
}


//  --------------------------------------------------------------------------
//  Opening: directory, lock, validation, schema

//  mkdir -p, each created level with DQ_STORE_DIR_MODE (less the umask).
static int
s_mkdir_p (const char *dir, char *err, size_t err_size)
{
    char *tmp = strdup (dir);
    if (!tmp) {
        s_format (err, err_size, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *p = tmp + 1; *p && rc == 0; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir (tmp, DQ_STORE_DIR_MODE) == -1 && errno != EEXIST) {
            s_format (err, err_size, "cannot create data dir %s: %s",
                      tmp, strerror (errno));
            rc = -1;
        }
        *p = '/';
    }
    if (rc == 0 && mkdir (tmp, DQ_STORE_DIR_MODE) == -1 && errno != EEXIST) {
        s_format (err, err_size, "cannot create data dir %s: %s",
                  dir, strerror (errno));
        rc = -1;
    }
    free (tmp);
    if (rc == 0) {
        struct stat st;
        if (stat (dir, &st) == -1) {
            s_format (err, err_size, "data dir %s: %s", dir, strerror (errno));
            rc = -1;
        }
        else
        if (!S_ISDIR (st.st_mode)) {
            s_format (err, err_size, "data dir %s is not a directory", dir);
            rc = -1;
        }
    }
    return rc;
}

//  Takes the data dir's LOCK (flock is per open file description, so a
//  second open in the same process is refused too) and writes our pid into
//  it. Returns the locked fd, or -1.
static int
s_lock (const char *dir, char *err, size_t err_size)
{
    char *lock_path = s_concat (dir, "/" DQ_STORE_LOCK_FILE);
    if (!lock_path) {
        s_format (err, err_size, "out of memory");
        return -1;
    }
    int fd = open (lock_path, O_RDWR | O_CREAT | O_CLOEXEC, DQ_STORE_LOCK_MODE);
    if (fd == -1) {
        s_format (err, err_size, "cannot open lock file %s: %s",
                  lock_path, strerror (errno));
        free (lock_path);
        return -1;
    }
    if (flock (fd, LOCK_EX | LOCK_NB) == -1) {
        int saved = errno;
        if (saved == EWOULDBLOCK) {
            //  Best effort: the holder wrote its pid when it took the lock
            char buf [32] = "";
            ssize_t n = pread (fd, buf, sizeof buf - 1, 0);
            char *end = NULL;
            long pid = n > 0? strtol (buf, &end, 10): 0;
            if (pid > 0 && end != buf)
                s_format (err, err_size,
                          "data dir %s is in use by another broker (pid %ld)",
                          dir, pid);
            else
                s_format (err, err_size,
                          "data dir %s is in use by another broker (pid unknown)",
                          dir);
        }
        else
            s_format (err, err_size, "cannot lock %s: %s",
                      lock_path, strerror (saved));
        close (fd);
        free (lock_path);
        return -1;
    }
    char buf [32];
    int len = snprintf (buf, sizeof buf, "%ld\n", (long) getpid ());
    if (ftruncate (fd, 0) == -1
    ||  pwrite (fd, buf, (size_t) len, 0) != (ssize_t) len) {
        s_format (err, err_size, "cannot write pid to lock file %s: %s",
                  lock_path, strerror (errno));
        close (fd);
        free (lock_path);
        return -1;
    }
    free (lock_path);
    return fd;
}

//  Runs a one-row query on a validation connection and copies the first
//  column into out (or "" for no row). Returns the SQLite result code.
static int
s_query_text (sqlite3 *db, const char *sql, const char *param,
              char *out, size_t out_size, bool *found)
{
    sqlite3_stmt *stmt = NULL;
    *found = false;
    out [0] = '\0';
    int rc = sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    if (param)
        rc = sqlite3_bind_text (stmt, 1, param, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step (stmt);
        if (rc == SQLITE_ROW) {
            const char *text = (const char *) sqlite3_column_text (stmt, 0);
            snprintf (out, out_size, "%s", text? text: "");
            *found = true;
            rc = SQLITE_OK;
        }
        else
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
    }
    sqlite3_finalize (stmt);
    return rc;
}

//  Says, for an error on an existing file, whether it is damage.
static bool
s_is_corrupt (int rc)
{
    int primary = rc & 0xff;
    return primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB;
}

//  Checks an existing, non-empty database file on a read-only connection:
//  SQLite at all, dagq's and of a format version we read, not corrupt.
//  Nothing here can write to the file (a hot rollback journal of a foreign
//  database is reported, not rolled back).
static int
s_validate (const char *path, bool check, char *err, size_t err_size)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                              NULL);
    if (rc != SQLITE_OK) {
        s_format (err, err_size, "cannot open %s: %s", path,
                  db? sqlite3_errmsg (db): sqlite3_errstr (rc));
        sqlite3_close (db);
        return -1;
    }
    sqlite3_extended_result_codes (db, 1);
    sqlite3_busy_timeout (db, DQ_STORE_BUSY_TIMEOUT_MS);

    int result = -1;
    char value [256];
    bool found;
    //  Any table other than SQLite's own, to tell an empty file from a
    //  foreign database
    rc = s_query_text (db,
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        " AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'meta'"
        " ORDER BY name LIMIT 1", NULL, value, sizeof value, &found);
    if (rc != SQLITE_OK) {
        if (s_is_corrupt (rc))
            s_format (err, err_size,
                      "%s is not a usable SQLite database (%s); refusing to open it"
                      " - restore it from a backup or move it away",
                      path, sqlite3_errmsg (db));
        else
        if ((rc & 0xff) == SQLITE_READONLY || (rc & 0xff) == SQLITE_CANTOPEN)
            s_format (err, err_size,
                      "cannot read %s (%s); if it has a hot journal, let the"
                      " program that wrote it recover it first",
                      path, sqlite3_errmsg (db));
        else
            s_format (err, err_size, "cannot read %s: %s", path, sqlite3_errmsg (db));
        goto done;
    }
    char other_table [256];
    snprintf (other_table, sizeof other_table, "%s", value);
    bool has_other = found;

    bool has_meta;
    rc = s_query_text (db,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        NULL, value, sizeof value, &has_meta);
    if (rc != SQLITE_OK) {
        s_format (err, err_size, "cannot read %s: %s", path, sqlite3_errmsg (db));
        goto done;
    }
    if (!has_meta) {
        if (has_other) {
            s_format (err, err_size,
                      "%s is a SQLite database of another program (it has table"
                      " '%s' and no dagq meta table); refusing to touch it -"
                      " point the broker at another data dir",
                      path, other_table);
            goto done;
        }
        result = 0;             //  an empty database: we create the schema
        goto done;
    }
    rc = s_query_text (db, "SELECT value FROM meta WHERE key = ?", "app",
                       value, sizeof value, &found);
    if (rc != SQLITE_OK || !found || strcmp (value, DQ_STORE_APP) != 0) {
        if (rc == SQLITE_OK && found)
            s_format (err, err_size,
                      "%s belongs to another program (meta app='%s', not '%s');"
                      " refusing to touch it - point the broker at another data dir",
                      path, value, DQ_STORE_APP);
        else
            s_format (err, err_size,
                      "%s is a SQLite database of another program (its meta table"
                      " is not dagq's: %s); refusing to touch it - point the"
                      " broker at another data dir", path,
                      rc == SQLITE_OK? "no app row": sqlite3_errmsg (db));
        goto done;
    }
    rc = s_query_text (db, "SELECT value FROM meta WHERE key = ?", "format_version",
                       value, sizeof value, &found);
    if (rc != SQLITE_OK || !found) {
        s_format (err, err_size, "%s has no store format version (%s); refusing to"
                  " open it", path,
                  rc == SQLITE_OK? "no meta format_version": sqlite3_errmsg (db));
        goto done;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long version = strtoull (value, &end, 10);
    bool numeric = value [0] >= '0' && value [0] <= '9' && *end == '\0' && errno == 0;
    if (!numeric || version < DQ_STORE_FORMAT_OLDEST
    ||  version > DQ_STORE_FORMAT_VERSION) {
        if (numeric && version > DQ_STORE_FORMAT_VERSION)
            s_format (err, err_size,
                      "%s has store format version %llu, newer than this broker"
                      " reads (%d); run a newer dagq-broker", path, version,
                      DQ_STORE_FORMAT_VERSION);
        else
            s_format (err, err_size,
                      "%s has unknown store format version '%s' (this broker"
                      " reads %d to %d); refusing to open it", path, value,
                      DQ_STORE_FORMAT_OLDEST, DQ_STORE_FORMAT_VERSION);
        goto done;
    }
    //  quick_check reads every page (O(size)) but skips the index/table
    //  cross-checks of integrity_check; it is what makes "corrupt" a clear
    //  refusal at start rather than a fail-stop later. Skipped for a file
    //  untouched since a clean stop (s_clean_matches).
    if (!check) {
        result = 0;
        goto done;
    }
    sqlite3_stmt *stmt = NULL;
    rc = sqlite3_prepare_v2 (db, "PRAGMA quick_check(5)", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        char report [384] = "";
        size_t used = 0;
        bool ok = false;
        int rows = 0;
        while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
            const char *line = (const char *) sqlite3_column_text (stmt, 0);
            if (!line)
                line = "";
            if (rows++ == 0 && strcmp (line, "ok") == 0)
                ok = true;
            if (used < sizeof report - 1) {
                int n = snprintf (report + used, sizeof report - used, "%s%s",
                                  used? "; ": "", line);
                if (n > 0)
                    used += (size_t) n;
            }
        }
        sqlite3_finalize (stmt);
        for (char *c = report; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';       //  one log line
        if (rc == SQLITE_DONE && ok && rows == 1) {
            result = 0;
            goto done;
        }
        if (rc == SQLITE_DONE) {
            s_format (err, err_size, "%s is corrupt (quick_check: %s); refusing to"
                      " open it - restore it from a backup or move it away",
                      path, report);
            goto done;
        }
    }
    if (s_is_corrupt (rc))
        s_format (err, err_size, "%s is corrupt (quick_check failed: %s); refusing"
                  " to open it - restore it from a backup or move it away",
                  path, sqlite3_errmsg (db));
    else
        s_format (err, err_size, "cannot check %s (quick_check failed: %s)",
                  path, sqlite3_errmsg (db));
done:
    sqlite3_close (db);
    return result;
}

//  s_validate on the store's file. A read-only connection to a WAL-mode
//  database creates empty -wal and -shm files and leaves them; on refusal
//  those we created are removed again, so a refused directory is left as
//  it was. (None existed, so no other program had the database open.)
static int
s_validate_file (dq_store_t *self, bool check, char *err, size_t err_size)
{
    char *shm_path = s_concat (self->path, "-shm");
    if (!shm_path) {
        s_format (err, err_size, "out of memory");
        return -1;
    }
    bool had_wal = access (self->wal_path, F_OK) == 0;
    bool had_shm = access (shm_path, F_OK) == 0;
    struct stat st;
    if (check && stat (self->path, &st) == 0 && st.st_size >= (64 << 20))
        dq_log_info ("store - %s: checking it (quick_check reads all %lld MB)",
                     self->path, (long long) (st.st_size >> 20));
    int rc = s_validate (self->path, check, err, err_size);
    if (rc != 0) {
        if (!had_wal)
            unlink (self->wal_path);
        if (!had_shm)
            unlink (shm_path);
    }
    free (shm_path);
    return rc;
}

//  Runs a pragma that returns one row, copying its value. 0 or -1.
static int
s_pragma (dq_store_t *self, const char *sql, char *out, size_t out_size)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2 (self->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step (stmt);
        if (rc == SQLITE_ROW) {
            if (out) {
                const char *text = (const char *) sqlite3_column_text (stmt, 0);
                snprintf (out, out_size, "%s", text? text: "");
            }
            rc = SQLITE_DONE;
        }
    }
    int result = 0;
    if (rc != SQLITE_DONE) {
        s_set_error (self, "%s: %s failed: %s", self->path, sql,
                     sqlite3_errmsg (self->db));
        result = -1;
    }
    sqlite3_finalize (stmt);
    return result;
}

//  The synchronous pragma of each sync mode, for both connections.
static const char *s_sync_sql [] = {
    [DQ_STORE_SYNC_FULL] = "PRAGMA synchronous = FULL",
    [DQ_STORE_SYNC_NORMAL] = "PRAGMA synchronous = NORMAL",
    [DQ_STORE_SYNC_OFF] = "PRAGMA synchronous = OFF",
};

static int
s_configure (dq_store_t *self, dq_store_sync_t sync)
{
    char value [64];
    if (s_pragma (self, "PRAGMA journal_mode = WAL", value, sizeof value))
        return -1;
    if (strcmp (value, "wal") != 0) {
        s_set_error (self, "%s: cannot switch to WAL mode (journal_mode is '%s')",
                     self->path, value);
        return -1;
    }
    char sql [96];
    if (s_pragma (self, s_sync_sql [sync], NULL, 0))
        return -1;
    snprintf (sql, sizeof sql, "PRAGMA cache_size = -%d", DQ_STORE_CACHE_KIB);
    if (s_pragma (self, sql, NULL, 0))
        return -1;
    snprintf (sql, sizeof sql, "PRAGMA journal_size_limit = %d",
              DQ_STORE_JOURNAL_SIZE_LIMIT);
    if (s_pragma (self, sql, NULL, 0))
        return -1;
    snprintf (sql, sizeof sql, "PRAGMA wal_autocheckpoint = %d",
              DQ_STORE_WAL_AUTOCHECKPOINT);
    if (s_pragma (self, sql, NULL, 0))
        return -1;
    if (s_pragma (self, "PRAGMA foreign_keys = OFF", NULL, 0))
        return -1;
    return 0;
}

//  The format version stored in meta, 0 if none (a new store). -1 on error.
static int
s_stored_version (dq_store_t *self, char **errmsg)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2 (self->db,
        "SELECT value FROM meta WHERE key = 'format_version'", -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        //  No meta table yet: a new store
        sqlite3_finalize (stmt);
        return sqlite3_errcode (self->db) == SQLITE_ERROR? 0: -1;
    }
    int version = 0;
    rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        const char *text = (const char *) sqlite3_column_text (stmt, 0);
        version = text? atoi (text): 0;
    }
    else
    if (rc != SQLITE_DONE) {
        *errmsg = sqlite3_mprintf ("%s", sqlite3_errmsg (self->db));
        version = -1;
    }
    sqlite3_finalize (stmt);
    return version;
}

//  Creates the tables of an empty store, upgrades one of an older format
//  version, or checks an existing one has them; one transaction, so a
//  crash leaves either the old store or all of the new one.
static int
s_schema_create (dq_store_t *self)
{
    char *errmsg = NULL;
    if (sqlite3_exec (self->db, "BEGIN IMMEDIATE", NULL, NULL, &errmsg) != SQLITE_OK)
        goto failed;
    //  s_validate accepted the version; read again under the write lock
    int version = s_stored_version (self, &errmsg);
    if (version < 0)
        goto rollback;
    if (version == 1) {
        self->upgraded_from = 1;
        if (sqlite3_exec (self->db, s_upgrade_v1_sql, NULL, NULL, &errmsg) != SQLITE_OK)
            goto rollback;
    }
    if (sqlite3_exec (self->db, s_schema_sql, NULL, NULL, &errmsg) != SQLITE_OK)
        goto rollback;
    char sql [192];
    snprintf (sql, sizeof sql,
              "INSERT OR IGNORE INTO meta (key, value) VALUES ('app', '%s');"
              "INSERT OR REPLACE INTO meta (key, value) VALUES"
              " ('format_version', '%d')",
              DQ_STORE_APP, DQ_STORE_FORMAT_VERSION);
    if (sqlite3_exec (self->db, sql, NULL, NULL, &errmsg) != SQLITE_OK)
        goto rollback;
    if (sqlite3_exec (self->db, "COMMIT", NULL, NULL, &errmsg) != SQLITE_OK)
        goto rollback;
    return 0;

rollback:
    if (self->upgraded_from)
        s_set_error (self, "%s: cannot upgrade the store from format version %d"
                     " (it is left as it was; an older dagq-broker still opens"
                     " it): %s", self->path, self->upgraded_from,
                     errmsg? errmsg: sqlite3_errmsg (self->db));
    else
        s_set_error (self, "%s: cannot create the schema: %s", self->path,
                     errmsg? errmsg: sqlite3_errmsg (self->db));
    self->upgraded_from = 0;
    sqlite3_free (errmsg);
    if (!sqlite3_get_autocommit (self->db))
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
failed:
    s_set_error (self, "%s: cannot create the schema: %s", self->path,
                 errmsg? errmsg: sqlite3_errmsg (self->db));
    sqlite3_free (errmsg);
    return -1;
}

static int
s_prepare (dq_store_t *self)
{
    for (int i = 0; i < S_COUNT_; i++) {
        int rc = sqlite3_prepare_v3 (self->db, s_sql [i], -1,
                                     SQLITE_PREPARE_PERSISTENT,
                                     &self->stmt [i], NULL);
        if (rc != SQLITE_OK) {
            s_set_error (self, "%s: cannot prepare '%s': %s (is the schema"
                         " damaged?)", self->path, s_sql [i],
                         sqlite3_errmsg (self->db));
            return -1;
        }
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Open, close

//  Checkpoints copy the WAL into the database file and fsync it: tens of
//  milliseconds for 16 MiB. Run in the commit path (SQLite's automatic
//  checkpoint), they stalled the broker's loop and every reply waiting on
//  it. Here a thread with its own connection runs PASSIVE checkpoints,
//  which never block the writer; the writer's next transaction starts the
//  WAL over once a checkpoint has copied all of it. A failed checkpoint
//  loses nothing (the WAL still holds the data) and is tried again.
static void *
s_checkpointer (void *arg)
{
    dq_store_t *self = arg;
    pthread_mutex_lock (&self->ckpt_lock);
    while (true) {
        while (!self->ckpt_wanted && !self->ckpt_stop)
            pthread_cond_wait (&self->ckpt_cond, &self->ckpt_lock);
        if (self->ckpt_stop)
            break;
        self->ckpt_wanted = false;
        pthread_mutex_unlock (&self->ckpt_lock);
        int rc = sqlite3_wal_checkpoint_v2 (self->ckpt_db, NULL,
                                            SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            dq_log_warn ("store - %s: checkpoint failed (%s); the WAL keeps the "
                         "data and grows until one succeeds", self->path,
                         sqlite3_errmsg (self->ckpt_db));
        pthread_mutex_lock (&self->ckpt_lock);
    }
    pthread_mutex_unlock (&self->ckpt_lock);
    return NULL;
}

//  Called by SQLite after each commit of the read-write connection, with
//  the WAL's length in pages.
static int
s_wal_hook (void *arg, sqlite3 *db, const char *name, int pages)
{
    (void) name;
    dq_store_t *self = arg;
    if (pages >= DQ_STORE_WAL_AUTOCHECKPOINT) {
        pthread_mutex_lock (&self->ckpt_lock);
        self->ckpt_wanted = true;
        pthread_cond_signal (&self->ckpt_cond);
        pthread_mutex_unlock (&self->ckpt_lock);
    }
    //  The thread's checkpoints run while commits append, so under a steady
    //  stream they may not catch up; past four times the mark the writer
    //  checkpoints here, with nothing appending, which bounds the WAL.
    if (pages >= 4 * DQ_STORE_WAL_AUTOCHECKPOINT)
        (void) sqlite3_wal_checkpoint_v2 (db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                          NULL, NULL);
    return SQLITE_OK;
}

//  Open the checkpointer's connection and start its thread; on failure the
//  read-write connection keeps checkpointing by itself. 0 or -1.
static int
s_checkpointer_start (dq_store_t *self, dq_store_sync_t sync)
{
    char sql [64];
    snprintf (sql, sizeof sql, "PRAGMA journal_size_limit = %d",
              DQ_STORE_JOURNAL_SIZE_LIMIT);
    if (sqlite3_open_v2 (self->path, &self->ckpt_db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK
    ||  sqlite3_exec (self->ckpt_db, s_sync_sql [sync], NULL, NULL, NULL) != SQLITE_OK
    ||  sqlite3_exec (self->ckpt_db, sql, NULL, NULL, NULL) != SQLITE_OK
    ||  pthread_mutex_init (&self->ckpt_lock, NULL) != 0)
        goto no_lock;
    if (pthread_cond_init (&self->ckpt_cond, NULL) != 0)
        goto no_cond;
    if (pthread_create (&self->ckpt_thread, NULL, s_checkpointer, self) != 0)
        goto no_thread;
    self->ckpt_started = true;
    //  Replaces SQLite's automatic checkpoint (which is a WAL hook too).
    sqlite3_wal_hook (self->db, s_wal_hook, self);
    return 0;

no_thread:
    pthread_cond_destroy (&self->ckpt_cond);
no_cond:
    pthread_mutex_destroy (&self->ckpt_lock);
no_lock:
    sqlite3_close (self->ckpt_db);
    self->ckpt_db = NULL;
    return -1;
}

static void
s_checkpointer_stop (dq_store_t *self)
{
    if (!self->ckpt_started)
        return;
    sqlite3_wal_hook (self->db, NULL, NULL);
    pthread_mutex_lock (&self->ckpt_lock);
    self->ckpt_stop = true;
    pthread_cond_signal (&self->ckpt_cond);
    pthread_mutex_unlock (&self->ckpt_lock);
    pthread_join (self->ckpt_thread, NULL);
    pthread_cond_destroy (&self->ckpt_cond);
    pthread_mutex_destroy (&self->ckpt_lock);
    sqlite3_close (self->ckpt_db);
    self->ckpt_db = NULL;
    self->ckpt_started = false;
}

#define S_SYNC_SLOW_MS 1000    //  warn when an fdatasync takes this long

//  The syncer. With synchronous=FULL every commit waits for its fdatasync
//  (about a millisecond, more on a busy disk), and the broker's loop waits
//  with it. Instead, commits run with synchronous=NORMAL (no fsync; still
//  safe from corruption, SQLite syncs the WAL header when it reuses the
//  file) and this thread fdatasyncs the WAL behind them: everything a
//  commit wrote is in the file before the fdatasync starts, so when it
//  returns that commit is on disk. The broker holds each commit's replies
//  until then (dq_store_durable), and meanwhile goes on with the next
//  batch: the fsync overlaps work instead of stalling it. One sync covers
//  every commit made before it began.
static void *
s_syncer (void *arg)
{
    dq_store_t *self = arg;
    int64_t worst_ms = 0;       //  slowest sync not yet reported
    time_t warned = 0;          //  monotonic s of the last slow-sync warning
    pthread_mutex_lock (&self->sync_lock);
    while (true) {
        while (self->sync_wanted <= self->synced && !self->sync_stop)
            pthread_cond_wait (&self->sync_cond, &self->sync_lock);
        if (self->sync_wanted <= self->synced)
            break;              //  stopping, nothing left to sync
        uint64_t target = self->sync_wanted;
        pthread_mutex_unlock (&self->sync_lock);
        struct timespec t0, t1;
        clock_gettime (CLOCK_MONOTONIC, &t0);
        int rc = fdatasync (self->wal_fd);
        int saved = errno;
        clock_gettime (CLOCK_MONOTONIC, &t1);
        //  Every reply waits for this: say so when the disk is slow (at
        //  most once a minute, with the worst since the last warning).
        int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > worst_ms)
            worst_ms = ms;
        if (worst_ms >= S_SYNC_SLOW_MS && (!warned || t1.tv_sec - warned >= 60)) {
            dq_log_warn ("store - %s: fdatasync took %" PRId64 " ms; replies wait for "
                         "the disk", self->wal_path, worst_ms);
            warned = t1.tv_sec;
            worst_ms = 0;
        }
        pthread_mutex_lock (&self->sync_lock);
        self->sync_hist [dq_proto_hist_bucket (ms > 0? (uint64_t) ms: 0)]++;
        if (rc == 0)
            self->synced = target;
        else
        if (!self->sync_errno)
            self->sync_errno = saved;
        uint64_t one = 1;
        if (write (self->sync_fd, &one, sizeof one) != sizeof one) {
            //  Cannot fail: the counter is drained long before it overflows
        }
        if (rc)
            break;              //  fail-stop: never report later syncs
    }
    pthread_mutex_unlock (&self->sync_lock);
    return NULL;
}

static void s_fail (dq_store_t *self);

int
dq_store_sync_async (dq_store_t *self)
{
    if (!self || self->failed || self->sync != DQ_STORE_SYNC_FULL)
        return -1;
    if (self->sync_started)
        return self->sync_fd;
    //  The WAL exists from the first read in WAL mode (open has made some)
    //  and keeps its inode until the last connection closes.
    self->wal_fd = open (self->wal_path, O_RDONLY | O_CLOEXEC);
    self->sync_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->wal_fd == -1 || self->sync_fd == -1) {
        s_set_error (self, "%s: cannot open for syncing: %s", self->wal_path,
                     strerror (errno));
        goto no_lock;
    }
    if (pthread_mutex_init (&self->sync_lock, NULL) != 0)
        goto no_lock;
    if (pthread_cond_init (&self->sync_cond, NULL) != 0)
        goto no_cond;
    if (s_pragma (self, "PRAGMA synchronous = NORMAL", NULL, 0))
        goto no_thread;
    self->synced = self->sync_wanted = self->sync_asked = self->synced_seen = self->commits;
    if (pthread_create (&self->sync_thread, NULL, s_syncer, self) != 0) {
        (void) s_pragma (self, s_sync_sql [DQ_STORE_SYNC_FULL], NULL, 0);
        goto no_thread;
    }
    self->sync_started = true;
    return self->sync_fd;

no_thread:
    pthread_cond_destroy (&self->sync_cond);
no_cond:
    pthread_mutex_destroy (&self->sync_lock);
no_lock:
    if (self->wal_fd != -1)
        close (self->wal_fd);
    if (self->sync_fd != -1)
        close (self->sync_fd);
    self->wal_fd = self->sync_fd = -1;
    return -1;
}

//  A sync failed: nothing after the last good one may be acknowledged.
static int
s_sync_failed (dq_store_t *self, int err)
{
    s_set_error (self, "%s: fdatasync failed: %s", self->wal_path, strerror (err));
    s_fail (self);
    return -1;
}

int
dq_store_sync (dq_store_t *self)
{
    if (!self || self->failed)
        return -1;
    if (!self->sync_started || self->sync_asked == self->commits)
        return 0;               //  nothing new (a failure shows in durable)
    self->sync_asked = self->commits;
    pthread_mutex_lock (&self->sync_lock);
    int err = self->sync_errno;
    if (!err) {
        self->sync_wanted = self->commits;
        pthread_cond_signal (&self->sync_cond);
    }
    pthread_mutex_unlock (&self->sync_lock);
    return err? s_sync_failed (self, err): 0;
}

bool
dq_store_syncing (dq_store_t *self)
{
    if (!self || !self->sync_started)
        return false;
    pthread_mutex_lock (&self->sync_lock);
    bool syncing = self->synced < self->sync_asked && !self->sync_errno;
    pthread_mutex_unlock (&self->sync_lock);
    return syncing;
}

int
dq_store_durable (dq_store_t *self, uint64_t *durable)
{
    if (!self || self->failed)
        return -1;
    if (!self->sync_started) {
        *durable = self->commits;
        return 0;
    }
    pthread_mutex_lock (&self->sync_lock);
    int err = self->sync_errno;
    *durable = self->synced;
    pthread_mutex_unlock (&self->sync_lock);
    if (err)
        return s_sync_failed (self, err);
    //  The thread writes the descriptor, under the lock, each time it moves
    //  synced: drain it only then, not with a system call every turn.
    if (*durable != self->synced_seen) {
        self->synced_seen = *durable;
        uint64_t count;
        if (read (self->sync_fd, &count, sizeof count) == -1 && errno != EAGAIN) {
            //  Harmless: synced is what counts
        }
    }
    return 0;
}

int
dq_store_sync_hist (dq_store_t *self, uint64_t hist [DQ_PROTO_HIST_BUCKETS])
{
    if (!self || !self->sync_started)
        return -1;
    pthread_mutex_lock (&self->sync_lock);
    memcpy (hist, self->sync_hist, sizeof self->sync_hist);
    pthread_mutex_unlock (&self->sync_lock);
    return 0;
}

uint64_t
dq_store_commits (dq_store_t *self)
{
    return self? self->commits: 0;
}

//  Finishes the sync in flight (commits after it are synced by SQLite's own
//  close) and stops the thread.
static void
s_syncer_stop (dq_store_t *self)
{
    if (!self->sync_started)
        return;
    pthread_mutex_lock (&self->sync_lock);
    self->sync_stop = true;
    pthread_cond_signal (&self->sync_cond);
    pthread_mutex_unlock (&self->sync_lock);
    pthread_join (self->sync_thread, NULL);
    pthread_cond_destroy (&self->sync_cond);
    pthread_mutex_destroy (&self->sync_lock);
    close (self->wal_fd);
    close (self->sync_fd);
    self->wal_fd = self->sync_fd = -1;
    self->sync_started = false;
    //  Back to syncing at each commit for what the closing does.
    (void) s_pragma (self, s_sync_sql [DQ_STORE_SYNC_FULL], NULL, 0);
}

//  The clean-stop marker: <dir>/CLEAN names the database file as a clean
//  close left it (device, inode, size, modification time). At open, a file
//  that still matches, with no WAL beside it, has not changed since, so its
//  quick_check (which reads the whole file: minutes for a large store) is
//  skipped. The close sets the modification time to one second before it
//  ran, a time no later write can give the file whatever the clock's
//  granularity. The marker is removed at every open, before anything is
//  written, so a broker that stops any other way leaves none.
#define S_CLEAN_FORMAT "dagq-clean 1 %llu %llu %lld %lld %ld\n"

static char *
s_clean_path (dq_store_t *self)
{
    return s_concat (self->dir, "/" DQ_STORE_CLEAN_FILE);
}

//  fsync a directory, so a rename or unlink in it is durable. 0 or -1.
static int
s_sync_dir (const char *dir)
{
    int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd == -1)
        return -1;
    int rc = fsync (fd);
    close (fd);
    return rc;
}

//  At close: record the closed file in the marker (failures only cost the
//  next start its check).
static void
s_clean_put (dq_store_t *self)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct timespec times [2] = { { .tv_nsec = UTIME_OMIT },
                                  { .tv_sec = now.tv_sec - 1, .tv_nsec = now.tv_nsec } };
    struct stat st;
    if (access (self->wal_path, F_OK) == 0
    ||  utimensat (AT_FDCWD, self->path, times, 0) != 0
    ||  stat (self->path, &st) != 0)
        return;
    char *path = s_clean_path (self);
    char *tmp = path? s_concat (path, ".tmp"): NULL;
    char line [160];
    int n = snprintf (line, sizeof line, S_CLEAN_FORMAT, (unsigned long long) st.st_dev,
                      (unsigned long long) st.st_ino, (long long) st.st_size,
                      (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    int fd = tmp? open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                        DQ_STORE_LOCK_MODE): -1;
    bool ok = fd != -1 && write (fd, line, (size_t) n) == n && fsync (fd) == 0;
    if (fd != -1 && close (fd) != 0)
        ok = false;
    if (ok && rename (tmp, path) == 0)
        (void) s_sync_dir (self->dir);
    else
    if (tmp)
        unlink (tmp);
    free (tmp);
    free (path);
}

//  At open, with the database file's stat: true if the marker says the
//  file is as a clean close left it. A stale marker never matches: any
//  write since gave the file a later modification time.
static bool
s_clean_matches (dq_store_t *self, const struct stat *st)
{
    char *path = s_clean_path (self);
    if (!path)
        return false;
    char line [160] = "";
    FILE *file = fopen (path, "re");
    free (path);
    if (!file)
        return false;
    bool read = fgets (line, sizeof line, file) != NULL;
    fclose (file);
    unsigned long long dev, ino;
    long long size, sec;
    long nsec;
    bool same = read
             && sscanf (line, S_CLEAN_FORMAT, &dev, &ino, &size, &sec, &nsec) == 5
             && dev == (unsigned long long) st->st_dev
             && ino == (unsigned long long) st->st_ino
             && size == (long long) st->st_size
             && sec == (long long) st->st_mtim.tv_sec
             && nsec == st->st_mtim.tv_nsec
             && access (self->wal_path, F_OK) != 0;
    if (same)
        dq_log_info ("store - %s: unchanged since a clean stop; quick_check skipped",
                     self->path);
    else
        dq_log_info ("store - %s: no longer as its clean stop left it; checking it",
                     self->path);
    return same;
}

dq_store_t *
dq_store_open (const char *dir, dq_store_sync_t sync, char *err, size_t err_size)
{
    //  No global memory statistics: they cost a mutex and bookkeeping on
    //  every SQLite allocation. Only possible before SQLite initializes (a
    //  later call is refused, harmlessly).
    sqlite3_config (SQLITE_CONFIG_MEMSTATUS, 0);
    s_format (err, err_size, "%s", "");
    if (!dir || !*dir) {
        s_format (err, err_size, "no data dir given");
        return NULL;
    }
    if (strlen (dir) > PATH_MAX - 32) {
        s_format (err, err_size, "data dir name is too long");
        return NULL;
    }
    if ((int) sync < DQ_STORE_SYNC_FULL || (int) sync > DQ_STORE_SYNC_OFF) {
        s_format (err, err_size, "invalid store sync mode %d", (int) sync);
        return NULL;
    }
    dq_store_t *self = calloc (1, sizeof *self);
    if (!self) {
        s_format (err, err_size, "out of memory");
        return NULL;
    }
    self->lock_fd = -1;
    self->sync = sync;
    self->wal_fd = -1;
    self->sync_fd = -1;
    self->dir = strdup (dir);
    self->path = s_concat (dir, "/" DQ_STORE_FILE);
    self->wal_path = s_concat (dir, "/" DQ_STORE_FILE "-wal");
    if (!self->dir || !self->path || !self->wal_path) {
        s_format (err, err_size, "out of memory");
        goto failed;
    }
    if (s_mkdir_p (dir, err, err_size))
        goto failed;
    self->lock_fd = s_lock (dir, err, err_size);
    if (self->lock_fd == -1)
        goto failed;

    //  An existing file is examined before SQLite opens it for writing
    struct stat st;
    if (stat (self->path, &st) == 0) {
        if (!S_ISREG (st.st_mode)) {
            s_format (err, err_size, "%s is not a regular file", self->path);
            goto failed;
        }
        if (st.st_size > 0) {
            //  Magic first: SQLite itself would say "file is not a database"
            //  only later, and we want the operator to hear it plainly.
            char magic [16];
            int fd = open (self->path, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd == -1? -1: pread (fd, magic, sizeof magic, 0);
            int saved = errno;
            if (fd != -1)
                close (fd);
            if (n == -1) {
                s_format (err, err_size, "cannot read %s: %s", self->path,
                          strerror (saved));
                goto failed;
            }
            if (n != (ssize_t) sizeof magic
            ||  memcmp (magic, "SQLite format 3", sizeof magic) != 0) {
                s_format (err, err_size,
                          "%s is not a SQLite database; refusing to touch it -"
                          " move it away or point the broker at another data dir",
                          self->path);
                goto failed;
            }
            if (s_validate_file (self, !s_clean_matches (self, &st), err, err_size))
                goto failed;
        }
    }
    else
    if (errno != ENOENT) {
        s_format (err, err_size, "cannot stat %s: %s", self->path, strerror (errno));
        goto failed;
    }

    //  The marker is for one start: gone before anything is written (a
    //  refused store above keeps it, as it keeps everything else).
    char *clean = s_clean_path (self);
    if (!clean || (unlink (clean) == 0 && s_sync_dir (dir) != 0))
        dq_log_warn ("store - %s: cannot remove the clean-stop marker", dir);
    free (clean);

    //  The writing connection appends each commit to the WAL with one
    //  write (dq_walbuf); without it, SQLite's default VFS does the same.
    int rc = sqlite3_open_v2 (self->path, &self->db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                              | SQLITE_OPEN_NOMUTEX,
                              dq_walbuf_register () == SQLITE_OK? DQ_WALBUF_VFS: NULL);
    if (rc != SQLITE_OK) {
        s_format (err, err_size, "cannot open %s: %s", self->path,
                  self->db? sqlite3_errmsg (self->db): sqlite3_errstr (rc));
        goto failed;
    }
    sqlite3_extended_result_codes (self->db, 1);
    sqlite3_busy_timeout (self->db, DQ_STORE_BUSY_TIMEOUT_MS);
    char value [32];
    if (s_configure (self, sync)
    ||  s_schema_create (self)
    ||  s_prepare (self)
    ||  s_pragma (self, "PRAGMA page_size", value, sizeof value)) {
        s_format (err, err_size, "%s", self->error);
        goto failed;
    }
    self->page_size = strtoull (value, NULL, 10);
    if (s_checkpointer_start (self, sync))
        dq_log_warn ("store - %s: no checkpoint thread; checkpoints run in the "
                     "commit path", self->path);
    self->opened = true;
    return self;

failed:
    dq_store_close (&self);
    return NULL;
}

void
dq_store_close (dq_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_store_t *self = *self_p;
    s_syncer_stop (self);
    s_checkpointer_stop (self);
    if (self->db) {
        //  A failed store's transaction was already rolled back; a healthy
        //  one's is committed, as the header promises
        if (!sqlite3_get_autocommit (self->db))
            sqlite3_exec (self->db, self->failed? "ROLLBACK": "COMMIT",
                          NULL, NULL, NULL);
        for (int i = 0; i < S_COUNT_; i++)
            sqlite3_finalize (self->stmt [i]);
        //  The last connection to close checkpoints and removes the WAL
        if (sqlite3_close (self->db) == SQLITE_OK && self->opened && !self->failed)
            s_clean_put (self);
    }
    //  Unlock only after the database is closed
    if (self->lock_fd != -1)
        close (self->lock_fd);
    free (self->dir);
    free (self->path);
    free (self->wal_path);
    free (self);
    *self_p = NULL;
}


//  --------------------------------------------------------------------------
//  Writes

//  A write or commit failed in SQLite: roll back what the open transaction
//  holds (so no partial batch is ever committed) and refuse later writes.
static void
s_fail (dq_store_t *self)
{
    self->failed = true;
    if (!sqlite3_get_autocommit (self->db)) {
        sqlite3_step (self->stmt [S_ROLLBACK]);
        sqlite3_reset (self->stmt [S_ROLLBACK]);
    }
}

//  Joins the open transaction, opening one if none. 0 or -1. Reads join
//  it too: outside a transaction each statement would take and drop
//  SQLite's locks (fcntl calls) on its own.
static int
s_begin (dq_store_t *self)
{
    if (self->failed) {
        //  Keep the first error: it is the one the operator needs
        return -1;
    }
    if (!sqlite3_get_autocommit (self->db))
        return 0;
    sqlite3_stmt *stmt = self->stmt [S_BEGIN];
    int rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    if (rc != SQLITE_DONE) {
        s_set_error (self, "%s: cannot begin a transaction: %s", self->path,
                     sqlite3_errmsg (self->db));
        s_fail (self);
        return -1;
    }
    return 0;
}

static int
s_write_begin (dq_store_t *self)
{
    if (s_begin (self))
        return -1;
    self->dirty = true;
    return 0;
}

//  Steps a bound write statement to completion, then resets it and clears
//  its bindings (so no borrowed pointer outlives the call). 0 or -1.
static int
s_write_run (dq_store_t *self, s_binder_t *b, const char *what)
{
    int rc = b->rc;
    if (rc == SQLITE_OK)
        rc = sqlite3_step (b->stmt);
    if (rc == SQLITE_ROW)
        rc = SQLITE_DONE;       //  not expected of a write; harmless
    if (rc != SQLITE_DONE)
        s_set_error (self, "%s: %s failed: %s", self->path, what,
                     b->rc == SQLITE_OK? sqlite3_errmsg (self->db):
                                         sqlite3_errstr (b->rc));
    sqlite3_reset (b->stmt);
    sqlite3_clear_bindings (b->stmt);
    if (rc != SQLITE_DONE) {
        s_fail (self);
        return -1;
    }
    return 0;
}

char *
dq_store_meta_get (dq_store_t *self, const char *key)
{
    if (!self || !key)
        return NULL;
    sqlite3_stmt *stmt = self->stmt [S_META_GET];
    char *value = NULL;
    int rc = sqlite3_bind_text (stmt, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        const char *text = s_column_text (stmt, 0);
        if (text) {
            value = strdup (text);
            if (!value)
                s_set_error (self, "out of memory");
        }
    }
    else
    if (rc != SQLITE_DONE)
        s_set_error (self, "%s: reading meta '%s' failed: %s", self->path, key,
                     sqlite3_errmsg (self->db));
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
    return value;
}

int
dq_store_meta_set (dq_store_t *self, const char *key, const char *value)
{
    if (!self)
        return -1;
    if (!key || !value) {
        s_set_error (self, "meta_set: key and value are required");
        return -1;
    }
    if (s_write_begin (self))
        return -1;
    s_binder_t b = s_binder (self, S_META_SET);
    s_bind_text (&b, key);
    s_bind_text (&b, value);
    return s_write_run (self, &b, "meta_set");
}

//  Binds and runs S_OUTCOME_PUT. 0 or -1.
static int
s_put_outcome (dq_store_t *self, const dq_store_end_t *end)
{
    s_binder_t b = s_binder (self, S_OUTCOME_PUT);
    s_bind_u64 (&b, end->id);
    s_bind_i64 (&b, end->state);
    s_bind_u64 (&b, end->attempts);
    s_bind_u64 (&b, end->started_ms);
    s_bind_u64 (&b, end->finished_ms);
    s_bind_text (&b, end->worker);
    s_bind_blob (&b, end->output, end->output_size);
    s_bind_text (&b, end->error);
    s_bind_u64 (&b, end->skipped_by);
    return s_write_run (self, &b, "set_finished");
}

int
dq_store_put_job (dq_store_t *self, const dq_store_job_t *job)
{
    if (!self)
        return -1;
    if (!job || !job->type) {
        s_set_error (self, "put_job: a job with a type is required");
        return -1;
    }
    if (job->id > INT64_MAX) {
        s_set_error (self, "put_job: job id %" PRIu64 " is out of range", job->id);
        return -1;
    }
    if ((!job->payload && job->payload_size)
    ||  (!job->output && job->output_size)
    ||  (!job->parents && job->nparents)) {
        s_set_error (self, "put_job: job %" PRIu64 " has a size without data",
                     job->id);
        return -1;
    }
    if (job->state < 0 || job->state >= DQ_STATE_COUNT_) {
        s_set_error (self, "put_job: job %" PRIu64 " has invalid state %d",
                     job->id, job->state);
        return -1;
    }
    bool finished = job->state >= DQ_STATE_SUCCEEDED;
    if (!finished && (job->started_ms || job->finished_ms || job->output
                      || job->worker || job->skipped_by)) {
        //  Those describe an attempt or an end: not stored for unfinished jobs
        s_set_error (self, "put_job: job %" PRIu64 " is not finished but has"
                     " a start, end, output, worker or skip cause", job->id);
        return -1;
    }
    if (s_write_begin (self))
        return -1;

    s_binder_t b = s_binder (self, S_JOB_PUT);
    s_bind_u64 (&b, job->id);
    s_bind_text (&b, job->type);
    s_bind_blob (&b, job->payload, job->payload_size);
    s_bind_text (&b, job->content_type);
    s_bind_text (&b, job->name);
    s_bind_text (&b, job->key);
    s_bind_i64 (&b, job->priority);
    s_bind_u64 (&b, job->max_attempts);
    s_bind_u64 (&b, job->timeout_ms);
    s_bind_u64 (&b, job->created_ms);
    s_bind_u64 (&b, job->dag);
    s_bind_u64 (&b, job->attempts);
    s_bind_u64 (&b, job->run_at_ms);
    s_bind_text (&b, finished? NULL: job->error);
    if (s_write_run (self, &b, "put_job"))
        return -1;
    for (uint32_t i = 0; i < job->nparents; i++) {
        b = s_binder (self, S_EDGE_PUT);
        s_bind_u64 (&b, job->id);
        s_bind_u64 (&b, i);
        s_bind_u64 (&b, job->parents [i]);
        s_bind_i64 (&b, job->run_on_failure && job->run_on_failure [i]);
        if (s_write_run (self, &b, "put_job (edge)"))
            return -1;
    }
    if (finished) {
        dq_store_end_t end = {
            .id = job->id, .state = job->state, .attempts = job->attempts,
            .started_ms = job->started_ms, .finished_ms = job->finished_ms,
            .worker = job->worker, .output = job->output,
            .output_size = job->output_size, .error = job->error,
            .skipped_by = job->skipped_by
        };
        if (s_put_outcome (self, &end))
            return -1;
    }
    return 0;
}

int
dq_store_put_dag (dq_store_t *self, const dq_store_dag_t *dag)
{
    if (!self)
        return -1;
    if (!dag || dag->id > INT64_MAX) {
        s_set_error (self, "put_dag: a DAG with an id <= INT64_MAX is required");
        return -1;
    }
    if (s_write_begin (self))
        return -1;
    s_binder_t b = s_binder (self, S_DAG_PUT);
    s_bind_u64 (&b, dag->id);
    s_bind_text (&b, dag->name);
    s_bind_text (&b, dag->key);
    s_bind_u64 (&b, dag->created_ms);
    return s_write_run (self, &b, "put_dag");
}

int
dq_store_put_key (dq_store_t *self, const dq_store_key_t *key)
{
    if (!self)
        return -1;
    if (!key || !key->key) {
        s_set_error (self, "put_key: a key is required");
        return -1;
    }
    if (s_write_begin (self))
        return -1;
    s_binder_t b = s_binder (self, S_KEY_PUT);
    s_bind_text (&b, key->key);
    s_bind_u64 (&b, key->first);
    s_bind_u64 (&b, key->count);
    s_bind_u64 (&b, key->dag);
    s_bind_u64 (&b, key->created_ms);
    return s_write_run (self, &b, "put_key");
}

//  A retry or delete of an id not stored changes nothing (and succeeds).
//  An outcome is inserted without looking the job up (that costs as much
//  as the insert): one of an id not stored stays unused (load skips it)
//  until a delete of that id. The broker never records one.

int
dq_store_set_retry (dq_store_t *self, uint64_t id, uint32_t attempts,
                    uint64_t run_at_ms, const char *error)
{
    if (!self || s_write_begin (self))
        return -1;
    s_binder_t b = s_binder (self, S_JOB_RETRY);
    s_bind_u64 (&b, attempts);
    s_bind_u64 (&b, run_at_ms);
    s_bind_text (&b, error);
    s_bind_u64 (&b, id);
    return s_write_run (self, &b, "set_retry");
}

int
dq_store_set_finished (dq_store_t *self, const dq_store_end_t *end)
{
    if (!self)
        return -1;
    if (!end) {
        s_set_error (self, "set_finished: an outcome is required");
        return -1;
    }
    if (end->state < DQ_STATE_SUCCEEDED || end->state >= DQ_STATE_COUNT_) {
        s_set_error (self, "set_finished: job %" PRIu64 ": %d is not a terminal"
                     " state", end->id, end->state);
        return -1;
    }
    if (!end->output && end->output_size) {
        s_set_error (self, "set_finished: job %" PRIu64 ": output size without"
                     " data", end->id);
        return -1;
    }
    if (s_write_begin (self))
        return -1;
    return s_put_outcome (self, end);
}

int
dq_store_delete_job (dq_store_t *self, uint64_t id)
{
    if (!self || s_write_begin (self))
        return -1;
    static const struct {
        s_stmt_t stmt;
        const char *what;
    } deletes [] = {
        { S_JOB_DELETE, "delete_job" },
        { S_OUTCOME_DELETE, "delete_job (outcome)" },
        { S_EDGES_DELETE, "delete_job (edges)" },
    };
    for (size_t i = 0; i < sizeof deletes / sizeof deletes [0]; i++) {
        s_binder_t b = s_binder (self, deletes [i].stmt);
        s_bind_u64 (&b, id);
        if (s_write_run (self, &b, deletes [i].what))
            return -1;
    }
    return 0;
}

int
dq_store_delete_dag (dq_store_t *self, uint64_t dag)
{
    if (!self || s_write_begin (self))
        return -1;
    s_binder_t b = s_binder (self, S_DAG_DELETE);
    s_bind_u64 (&b, dag);
    return s_write_run (self, &b, "delete_dag");
}

int
dq_store_expire_keys (dq_store_t *self, uint64_t created_before_ms)
{
    if (!self || s_write_begin (self))
        return -1;
    if (created_before_ms > INT64_MAX)
        created_before_ms = INT64_MAX;  //  keep the signed comparison meaningful
    s_binder_t b = s_binder (self, S_KEYS_EXPIRE);
    s_bind_u64 (&b, created_before_ms);
    return s_write_run (self, &b, "expire_keys");
}

int
dq_store_commit (dq_store_t *self)
{
    if (!self || self->failed)
        return -1;
    if (sqlite3_get_autocommit (self->db))
        return 0;               //  nothing open
    sqlite3_stmt *stmt = self->stmt [S_COMMIT];
    int rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    if (rc != SQLITE_DONE) {
        s_set_error (self, "%s: commit failed: %s", self->path,
                     sqlite3_errmsg (self->db));
        s_fail (self);
        return -1;
    }
    if (self->dirty)
        self->commits++;        //  a transaction that only read needs no sync
    self->dirty = false;
    return 0;
}


//  --------------------------------------------------------------------------
//  Reads

//  Prepares a load query; the caller finalizes. 0 or -1.
static int
s_load_prepare (dq_store_t *self, const char *sql, sqlite3_stmt **stmt)
{
    if (sqlite3_prepare_v2 (self->db, sql, -1, stmt, NULL) != SQLITE_OK) {
        s_set_error (self, "%s: load: %s", self->path, sqlite3_errmsg (self->db));
        return -1;
    }
    return 0;
}

static int
s_load_keys (dq_store_t *self, const dq_store_loader_t *loader)
{
    sqlite3_stmt *stmt = NULL;
    if (s_load_prepare (self, "SELECT key, first, count, dag, created_ms FROM keys",
                        &stmt))
        return -1;
    int rc;
    int result = 0;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        dq_store_key_t key = {
            .key = s_column_text (stmt, 0),
            .first = (uint64_t) sqlite3_column_int64 (stmt, 1),
            .count = (uint32_t) sqlite3_column_int64 (stmt, 2),
            .dag = (uint64_t) sqlite3_column_int64 (stmt, 3),
            .created_ms = (uint64_t) sqlite3_column_int64 (stmt, 4)
        };
        if (!key.key)
            continue;           //  a NULL key cannot be looked up: skip it
        if (loader->on_key (loader->arg, &key)) {
            s_set_error (self, "load stopped by the loader at key '%s'", key.key);
            result = -1;
            break;
        }
    }
    if (result == 0 && rc != SQLITE_DONE) {
        s_set_error (self, "%s: loading keys failed: %s", self->path,
                     sqlite3_errmsg (self->db));
        result = -1;
    }
    sqlite3_finalize (stmt);
    return result;
}

static int
s_load_dags (dq_store_t *self, const dq_store_loader_t *loader)
{
    sqlite3_stmt *stmt = NULL;
    if (s_load_prepare (self, "SELECT id, name, key, created_ms FROM dags ORDER BY id",
                        &stmt))
        return -1;
    int rc;
    int result = 0;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        dq_store_dag_t dag = {
            .id = (uint64_t) sqlite3_column_int64 (stmt, 0),
            .name = s_column_text (stmt, 1),
            .key = s_column_text (stmt, 2),
            .created_ms = (uint64_t) sqlite3_column_int64 (stmt, 3)
        };
        if (loader->on_dag (loader->arg, &dag)) {
            s_set_error (self, "load stopped by the loader at DAG %" PRIu64, dag.id);
            result = -1;
            break;
        }
    }
    if (result == 0 && rc != SQLITE_DONE) {
        s_set_error (self, "%s: loading DAGs failed: %s", self->path,
                     sqlite3_errmsg (self->db));
        result = -1;
    }
    sqlite3_finalize (stmt);
    return result;
}

//  Append an edge to a job's parents, growing the arrays. 0 or -1.
static int
s_edge_push (dq_store_t *self, uint64_t **parents, bool **rof, uint32_t *n,
             size_t *cap, uint64_t parent, bool run_on_failure)
{
    if (*n == *cap) {
        size_t grown = *cap? *cap * 2: 16;
        uint64_t *p = realloc (*parents, grown * sizeof *p);
        if (p)
            *parents = p;
        bool *r = p? realloc (*rof, grown * sizeof *r): NULL;
        if (!r) {
            s_set_error (self, "out of memory reading edges");
            return -1;
        }
        *rof = r;
        *cap = grown;
    }
    (*parents) [*n] = parent;
    (*rof) [(*n)++] = run_on_failure;
    return 0;
}

//  A row of S_JOB_ROW into *job (pointers borrowed from stmt; no parents).
//  0, or -1 if the row is one the broker could not have written (the file
//  is input: such a row is reported, not passed on).
static int
s_row_job (dq_store_t *self, sqlite3_stmt *stmt, dq_store_job_t *job)
{
    *job = (dq_store_job_t) {
        .id = (uint64_t) sqlite3_column_int64 (stmt, 0),
        .type = s_column_text (stmt, 1),
        .payload_size = (size_t) sqlite3_column_int64 (stmt, 3),
        .content_type = s_column_text (stmt, 4),
        .name = s_column_text (stmt, 5),
        .key = s_column_text (stmt, 6),
        .priority = (int32_t) sqlite3_column_int64 (stmt, 7),
        .max_attempts = (uint32_t) sqlite3_column_int64 (stmt, 8),
        .timeout_ms = (uint32_t) sqlite3_column_int64 (stmt, 9),
        .created_ms = (uint64_t) sqlite3_column_int64 (stmt, 10),
        .dag = (uint64_t) sqlite3_column_int64 (stmt, 11),
        .attempts = (uint32_t) sqlite3_column_int64 (stmt, 12),
        .run_at_ms = (uint64_t) sqlite3_column_int64 (stmt, 13),
        .error = s_column_text (stmt, 14),
        .state = DQ_STATE_WAITING
    };
    if (!sqlite3_column_int (stmt, 15))
        job->payload = s_column_blob (stmt, 2, &job->payload_size);
    else {
        int64_t state = sqlite3_column_int64 (stmt, 16);
        if (state < DQ_STATE_SUCCEEDED || state >= DQ_STATE_COUNT_) {
            s_set_error (self, "%s: job %" PRIu64 " is damaged (invalid outcome"
                         " state %" PRId64 ")", self->path, job->id, state);
            return -1;
        }
        job->state = (int) state;
        job->attempts = (uint32_t) sqlite3_column_int64 (stmt, 17);
        job->started_ms = (uint64_t) sqlite3_column_int64 (stmt, 18);
        job->finished_ms = (uint64_t) sqlite3_column_int64 (stmt, 19);
        job->worker = s_column_text (stmt, 20);
        job->output_size = (size_t) sqlite3_column_int64 (stmt, 21);
        job->error = s_column_text (stmt, 22);
        job->skipped_by = (uint64_t) sqlite3_column_int64 (stmt, 23);
    }
    if (!job->type) {
        s_set_error (self, "%s: job %" PRIu64 " is damaged (no type)", self->path,
                     job->id);
        return -1;
    }
    return 0;
}

//  The ids of jobs some stored job names as a parent, ascending, into
//  *ids (malloc'd). 0 or -1.
static int
s_load_parents (dq_store_t *self, uint64_t **ids, size_t *count)
{
    sqlite3_stmt *stmt = NULL;
    size_t n = 0, cap = 0;
    *ids = NULL;
    if (s_load_prepare (self, "SELECT DISTINCT parent FROM edges ORDER BY parent", &stmt))
        return -1;
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap? cap * 2: 256;
            uint64_t *grown = realloc (*ids, cap * sizeof *grown);
            if (!grown) {
                s_set_error (self, "load: out of memory");
                break;
            }
            *ids = grown;
        }
        (*ids) [n++] = (uint64_t) sqlite3_column_int64 (stmt, 0);
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        s_set_error (self, "%s: loading edges failed: %s", self->path,
                     sqlite3_errmsg (self->db));
    sqlite3_finalize (stmt);
    if (rc != SQLITE_DONE) {
        free (*ids);
        *ids = NULL;
        return -1;
    }
    *count = n;
    return 0;
}

//  Jobs with their outcomes (a join on the id: a B-tree step per job) and
//  their edges come from two cursors walked in step, in id order. Blobs are
//  not read: an output's size only, a payload only while its job has not
//  finished (for large payloads and outputs most of the store).
static int
s_load_jobs (dq_store_t *self, const dq_store_loader_t *loader)
{
    sqlite3_stmt *jobs = NULL, *edges = NULL;
    uint64_t *parents = NULL;
    bool *run_on_failure = NULL;
    size_t capacity = 0;
    uint64_t *with_children = NULL;
    size_t nwith = 0, at_with = 0;
    int result = -1;

    if (s_load_parents (self, &with_children, &nwith)
    ||  s_load_prepare (self, S_JOB_ROW " ORDER BY j.id", &jobs)
    ||  s_load_prepare (self,
            "SELECT child, parent, run_on_failure FROM edges ORDER BY child, pos",
            &edges))
        goto done;

    int edge_rc = sqlite3_step (edges);
    int rc;
    while ((rc = sqlite3_step (jobs)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64 (jobs, 0);
        uint32_t nparents = 0;
        //  Edges of a job that is not stored (deleted by hand) are skipped
        while (edge_rc == SQLITE_ROW && sqlite3_column_int64 (edges, 0) < id)
            edge_rc = sqlite3_step (edges);
        while (edge_rc == SQLITE_ROW && sqlite3_column_int64 (edges, 0) == id) {
            if (s_edge_push (self, &parents, &run_on_failure, &nparents, &capacity,
                             (uint64_t) sqlite3_column_int64 (edges, 1),
                             sqlite3_column_int64 (edges, 2) != 0))
                goto done;
            edge_rc = sqlite3_step (edges);
        }
        if (edge_rc != SQLITE_ROW && edge_rc != SQLITE_DONE) {
            s_set_error (self, "%s: loading edges failed: %s", self->path,
                         sqlite3_errmsg (self->db));
            goto done;
        }
        while (at_with < nwith && with_children [at_with] < (uint64_t) id)
            at_with++;
        dq_store_job_t job;
        if (s_row_job (self, jobs, &job))
            goto done;
        job.parents = nparents? parents: NULL;
        job.run_on_failure = nparents? run_on_failure: NULL;
        job.nparents = nparents;
        job.has_children = at_with < nwith && with_children [at_with] == (uint64_t) id;
        if (loader->on_job (loader->arg, &job)) {
            s_set_error (self, "load stopped by the loader at job %" PRIu64, job.id);
            goto done;
        }
    }
    if (rc != SQLITE_DONE) {
        s_set_error (self, "%s: loading jobs failed: %s", self->path,
                     sqlite3_errmsg (self->db));
        goto done;
    }
    result = 0;
done:
    sqlite3_finalize (jobs);
    sqlite3_finalize (edges);
    free (parents);
    free (run_on_failure);
    free (with_children);
    return result;
}

int
dq_store_load (dq_store_t *self, const dq_store_loader_t *loader)
{
    if (!self)
        return -1;
    if (!loader) {
        s_set_error (self, "load: a loader is required");
        return -1;
    }
    if (loader->on_key && s_load_keys (self, loader))
        return -1;
    if (loader->on_dag && s_load_dags (self, loader))
        return -1;
    if (loader->on_job && s_load_jobs (self, loader))
        return -1;
    return 0;
}

int
dq_store_get_output (dq_store_t *self, uint64_t id, void **output,
                     size_t *output_size, char **error)
{
    if (output)
        *output = NULL;
    if (output_size)
        *output_size = 0;
    if (error)
        *error = NULL;
    if (!self)
        return -1;
    if (!output != !output_size) {
        s_set_error (self, "get_output: output and output_size go together");
        return -1;
    }
    if (s_begin (self))
        return -1;
    sqlite3_stmt *stmt = self->stmt [S_JOB_OUTPUT];
    int result = -1;
    int rc = sqlite3_bind_int64 (stmt, 1, (sqlite3_int64) id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        //  A finished job's output and error, else the last retry's error
        bool finished = sqlite3_column_int (stmt, 0) != 0;
        size_t size = 0;
        const void *data = finished? s_column_blob (stmt, 1, &size): NULL;
        const char *text = s_column_text (stmt, finished? 2: 3);
        void *copy = NULL;
        char *error_copy = NULL;
        bool ok = true;
        if (output && data) {
            copy = malloc (size? size: 1);     //  X'' comes back non-NULL
            if (copy)
                memcpy (copy, data, size);
            else
                ok = false;
        }
        if (error && text) {
            error_copy = strdup (text);
            if (!error_copy)
                ok = false;
        }
        if (ok) {
            if (output) {
                *output = copy;
                *output_size = size;
            }
            if (error)
                *error = error_copy;
            result = 0;
        }
        else {
            free (copy);
            free (error_copy);
            s_set_error (self, "get_output: out of memory");
        }
    }
    else
    if (rc == SQLITE_DONE)
        s_set_error (self, "get_output: job %" PRIu64 " is not stored", id);
    else
        s_set_error (self, "%s: get_output of job %" PRIu64 " failed: %s",
                     self->path, id, sqlite3_errmsg (self->db));
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
    return result;
}

//  Copy text into *at, advancing it; NULL stays NULL.
static const char *
s_copy_str (char **at, const char *text)
{
    if (!text)
        return NULL;
    size_t n = strlen (text) + 1;
    char *copy = memcpy (*at, text, n);
    *at += n;
    return copy;
}

static size_t
s_str_size (const char *text)
{
    return text? strlen (text) + 1: 0;
}

int
dq_store_get_job (dq_store_t *self, uint64_t id, dq_store_job_t *job, void **mem)
{
    *mem = NULL;
    memset (job, 0, sizeof *job);
    if (!self || s_begin (self))
        return -1;
    sqlite3_stmt *stmt = self->stmt [S_JOB_GET];
    sqlite3_stmt *edges = self->stmt [S_JOB_EDGES];
    uint64_t *parents = NULL;
    bool *rof = NULL;
    uint32_t nparents = 0;
    size_t cap = 0;
    int result = -1;
    int rc = sqlite3_bind_int64 (stmt, 1, (sqlite3_int64) id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc == SQLITE_DONE)
        result = 1;
    if (rc != SQLITE_ROW)
        goto done;
    rc = sqlite3_bind_int64 (edges, 1, (sqlite3_int64) id);
    while (rc == SQLITE_OK && (rc = sqlite3_step (edges)) == SQLITE_ROW)
        rc = s_edge_push (self, &parents, &rof, &nparents, &cap,
                          (uint64_t) sqlite3_column_int64 (edges, 0),
                          sqlite3_column_int64 (edges, 1) != 0)? SQLITE_NOMEM: SQLITE_OK;
    if (rc != SQLITE_DONE)
        goto done;
    dq_store_job_t row;
    if (s_row_job (self, stmt, &row))
        goto done;
    //  One allocation the caller frees: the parents' ids (aligned) first,
    //  then their run_on_failure flags and the strings
    size_t size = nparents * (sizeof (uint64_t) + 1) + s_str_size (row.type)
                + s_str_size (row.content_type) + s_str_size (row.name)
                + s_str_size (row.key) + s_str_size (row.error)
                + s_str_size (row.worker);
    char *block = malloc (size? size: 1);
    if (!block) {
        s_set_error (self, "get_job: out of memory");
        goto done;
    }
    *job = row;
    job->payload = NULL;         //  borrowed from the statement: not kept
    if (nparents) {
        job->parents = memcpy (block, parents, nparents * sizeof (uint64_t));
        job->run_on_failure = memcpy (block + nparents * sizeof (uint64_t), rof, nparents);
        job->nparents = nparents;
    }
    char *at = block + nparents * (sizeof (uint64_t) + 1);
    job->type = s_copy_str (&at, row.type);
    job->content_type = s_copy_str (&at, row.content_type);
    job->name = s_copy_str (&at, row.name);
    job->key = s_copy_str (&at, row.key);
    job->error = s_copy_str (&at, row.error);
    job->worker = s_copy_str (&at, row.worker);
    *mem = block;
    result = 0;
done:
    if (result < 0 && rc != SQLITE_ROW && rc != SQLITE_DONE && rc != SQLITE_NOMEM)
        s_set_error (self, "%s: get_job of job %" PRIu64 " failed: %s",
                     self->path, id, sqlite3_errmsg (self->db));
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
    sqlite3_reset (edges);
    sqlite3_clear_bindings (edges);
    free (parents);
    free (rof);
    return result;
}

int
dq_store_expired (dq_store_t *self, uint64_t before_ms, uint64_t after_ms,
                  uint64_t after_id, uint64_t *ids, uint64_t *finished,
                  size_t max)
{
    if (!self || s_begin (self))
        return -1;
    if (!max)
        return 0;
    if (before_ms > INT64_MAX)
        before_ms = INT64_MAX;
    if (max > INT32_MAX)
        max = INT32_MAX;
    sqlite3_stmt *stmt = self->stmt [S_EXPIRED];
    s_binder_t b = s_binder (self, S_EXPIRED);
    s_bind_u64 (&b, before_ms);
    s_bind_u64 (&b, after_ms);
    s_bind_u64 (&b, after_id);
    s_bind_u64 (&b, max);
    int rc = b.rc;
    size_t n = 0;
    while (rc == SQLITE_OK && (rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        ids [n] = (uint64_t) sqlite3_column_int64 (stmt, 0);
        finished [n++] = (uint64_t) sqlite3_column_int64 (stmt, 1);
        rc = n < max? SQLITE_OK: SQLITE_DONE;
    }
    if (rc != SQLITE_DONE)
        s_set_error (self, "%s: finding expired jobs failed: %s", self->path,
                     sqlite3_errmsg (self->db));
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
    return rc == SQLITE_DONE? (int) n: -1;
}

uint64_t
dq_store_size (dq_store_t *self)
{
    if (!self)
        return 0;
    uint64_t size = 0;
    sqlite3_stmt *stmt = self->stmt [S_PAGE_COUNT];
    if (sqlite3_step (stmt) == SQLITE_ROW)
        size = (uint64_t) sqlite3_column_int64 (stmt, 0) * self->page_size;
    sqlite3_reset (stmt);
    struct stat st;
    if (stat (self->wal_path, &st) == 0 && st.st_size > 0)
        size += (uint64_t) st.st_size;
    return size;
}

uint64_t
dq_store_disk_free (dq_store_t *self)
{
    if (!self)
        return 0;
    struct statvfs fs;
    if (statvfs (self->dir, &fs) == -1)
        return 0;
    return (uint64_t) fs.f_bavail * (uint64_t) fs.f_frsize;
}

int
dq_store_upgraded_from (dq_store_t *self)
{
    return self? self->upgraded_from: 0;
}

const char *
dq_store_path (dq_store_t *self)
{
    return self? self->path: NULL;
}

const char *
dq_store_error (dq_store_t *self)
{
    return self? self->error: "no store";
}
