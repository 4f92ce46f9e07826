/*  test_walbuf.c - the VFS that writes a commit's WAL frames at once.

    A connection through DQ_WALBUF_VFS writes in WAL mode while a second
    connection (the default VFS) reads. The unix VFS's pwrite is replaced
    (xSetSystemCall) by one that counts calls and can fail on demand, so the
    tests see how many writes a commit makes and what a failed write does.
*/
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq_walbuf.h"

static ssize_t (*s_pwrite_real) (int, const void *, size_t, off_t);
static int s_writes;            //  pwrite calls since the last reset
static int s_fail_after = -1;   //  fail the write after this many, -1 never

static ssize_t
s_pwrite_counting (int fd, const void *buf, size_t n, off_t off)
{
    if (s_fail_after == 0) {
        errno = ENOSPC;
        return -1;
    }
    if (s_fail_after > 0)
        s_fail_after--;
    s_writes++;
    return s_pwrite_real (fd, buf, n, off);
}

typedef struct {
    char dir [64];
    char path [96];
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    snprintf (fx->dir, sizeof fx->dir, "/tmp/dq-walbuf-XXXXXX");
    assert_non_null (mkdtemp (fx->dir));
    snprintf (fx->path, sizeof fx->path, "%s/t.db", fx->dir);
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    char p [128];
    const char *ext [] = { "", "-wal", "-shm" };
    for (int i = 0; i < 3; i++) {
        snprintf (p, sizeof p, "%s%s", fx->path, ext [i]);
        unlink (p);
    }
    rmdir (fx->dir);
    free (fx);
    return 0;
}

static void
s_exec (sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec (db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg ("%s: %s", sql, msg? msg: sqlite3_errstr (rc));
}

static sqlite3 *
s_open (const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                       vfs), SQLITE_OK);
    s_exec (db, "PRAGMA journal_mode = WAL");
    s_exec (db, "PRAGMA synchronous = NORMAL");
    s_exec (db, "PRAGMA wal_autocheckpoint = 0");
    return db;
}

static long long
s_count (sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    long long n = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    return n;
}

static off_t
s_size (const char *path, const char *suffix)
{
    char p [128];
    snprintf (p, sizeof p, "%s%s", path, suffix);
    struct stat st;
    return stat (p, &st) == 0? st.st_size: -1;
}

//  Insert n rows of `bytes` random bytes each in one transaction.
static int
s_insert (sqlite3 *db, int n, int bytes)
{
    char sql [160];
    snprintf (sql, sizeof sql, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
              "FROM c WHERE i < %d) INSERT INTO t (v) SELECT randomblob (%d) FROM c",
              n, bytes);
    return sqlite3_exec (db, sql, NULL, NULL, NULL);
}

//  A commit of many pages is one write to the WAL (the default VFS makes two
//  a page); a reader on another connection sees every commit at once, and
//  the WAL file on disk holds every frame when the commit returns.
static void
test_walbuf_one_write_per_commit (void **state)
{
    fixture_t *fx = *state;
    sqlite3 *w = s_open (fx->path, DQ_WALBUF_VFS);
    s_exec (w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3 *r = s_open (fx->path, NULL);
    for (int i = 1; i <= 20; i++) {
        s_writes = 0;
        assert_int_equal (s_insert (w, 10, 3000), SQLITE_OK);
        assert_int_equal (s_writes, 1);
        assert_int_equal (s_count (r, "SELECT count(*) FROM t"), 10 * i);
        //  32-byte header, then frames of 24 + 4096 bytes: nothing is left
        //  in memory.
        off_t wal = s_size (fx->path, "-wal");
        assert_true (wal > 32);
        assert_int_equal ((wal - 32) % (24 + 4096), 0);
    }
    //  The same work through the default VFS: a write per header and page.
    sqlite3_close (w);
    w = s_open (fx->path, NULL);
    s_writes = 0;
    assert_int_equal (s_insert (w, 10, 3000), SQLITE_OK);
    assert_true (s_writes >= 20);
    sqlite3_close (w);
    assert_int_equal (s_count (r, "SELECT count(*) FROM t"), 210);
    sqlite3_close (r);
}

//  Transactions larger than the buffer, checkpoints, the WAL starting over
//  and a rollback: the data stays whole.
static void
test_walbuf_big_transactions_and_checkpoints (void **state)
{
    fixture_t *fx = *state;
    sqlite3 *w = s_open (fx->path, DQ_WALBUF_VFS);
    s_exec (w, "PRAGMA cache_size = 64");   //  small: spills pages mid-transaction
    s_exec (w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    sqlite3 *r = s_open (fx->path, NULL);
    long long rows = 0;
    for (int round = 0; round < 4; round++) {
        assert_int_equal (s_insert (w, 1500, 2000), SQLITE_OK);   //  ~3 MB
        rows += 1500;
        assert_int_equal (s_count (r, "SELECT count(*) FROM t"), rows);
        s_exec (w, "BEGIN");
        assert_int_equal (s_insert (w, 500, 2000), SQLITE_OK);
        s_exec (w, "ROLLBACK");
        //  Copy the WAL into the database from the reader's side, as the
        //  broker's checkpointer does; the writer then starts it over.
        assert_int_equal (sqlite3_wal_checkpoint_v2 (r, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                                     NULL, NULL), SQLITE_OK);
        assert_int_equal (s_insert (w, 3, 100), SQLITE_OK);
        rows += 3;
    }
    s_exec (w, "PRAGMA wal_checkpoint (TRUNCATE)");
    assert_int_equal (s_size (fx->path, "-wal"), 0);
    assert_int_equal (s_insert (w, 5, 100), SQLITE_OK);
    rows += 5;
    sqlite3_close (w);
    assert_int_equal (s_count (r, "SELECT count(*) FROM t"), rows);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (r, "PRAGMA integrity_check", -1, &stmt, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "ok");
    sqlite3_finalize (stmt);
    sqlite3_close (r);
}

//  A write that fails fails the commit that needed it, and leaves the
//  database as it was before that commit, for this connection and others.
static void
test_walbuf_failed_write_fails_the_commit (void **state)
{
    fixture_t *fx = *state;
    sqlite3 *w = s_open (fx->path, DQ_WALBUF_VFS);
    s_exec (w, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    assert_int_equal (s_insert (w, 10, 500), SQLITE_OK);
    sqlite3 *r = s_open (fx->path, NULL);
    s_fail_after = 0;
    int rc = s_insert (w, 10, 500);
    s_fail_after = -1;
    assert_int_equal (rc & 0xff, SQLITE_FULL);
    assert_int_equal (s_count (r, "SELECT count(*) FROM t"), 10);
    assert_int_equal (s_count (w, "SELECT count(*) FROM t"), 10);
    //  The connection goes on: the next commit writes.
    assert_int_equal (s_insert (w, 10, 500), SQLITE_OK);
    assert_int_equal (s_count (r, "SELECT count(*) FROM t"), 20);
    sqlite3_close (w);
    sqlite3_close (r);
    //  And a new connection finds the same after recovery from the WAL.
    sqlite3 *again = s_open (fx->path, NULL);
    assert_int_equal (s_count (again, "SELECT count(*) FROM t"), 20);
    sqlite3_close (again);
}

int
main (void)
{
    assert_int_equal (dq_walbuf_register (), SQLITE_OK);
    assert_int_equal (dq_walbuf_register (), SQLITE_OK);
    sqlite3_vfs *unix_vfs = sqlite3_vfs_find ("unix");
    assert_non_null (unix_vfs);
    //  SQLite calls pwrite64 or pwrite, as it was built.
    const char *names [] = { "pwrite64", "pwrite" };
    for (int i = 0; i < 2 && !s_pwrite_real; i++) {
        sqlite3_syscall_ptr p = unix_vfs->xGetSystemCall (unix_vfs, names [i]);
        if (p && unix_vfs->xSetSystemCall (unix_vfs, names [i],
                                           (sqlite3_syscall_ptr) s_pwrite_counting) == SQLITE_OK)
            s_pwrite_real = (ssize_t (*) (int, const void *, size_t, off_t)) p;
    }
    assert_non_null (s_pwrite_real);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_walbuf_one_write_per_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_walbuf_big_transactions_and_checkpoints,
                                         s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_walbuf_failed_write_fails_the_commit,
                                         s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
