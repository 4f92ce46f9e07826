/*  test_store.c - unit tests of dq_store: schema, round trips, updates,
    group commit, the data dir lock, refusal of foreign, garbage, newer and
    corrupt files, the upgrade of a format version 1 store, fail-stop after
    a SQLite error, and a 100,000-job load.

    Each test gets its own mkdtemp directory, removed in teardown. A second
    SQLite connection (read-only, or read-write to inject a failure) stands
    in for an operator's sqlite3 shell.
*/
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "dq_proto.h"
#include "dq_store.h"

typedef struct {
    char dir [256];              //  the mkdtemp directory
    char data [300];             //  <dir>/data: the store's data dir
    char db [320];               //  <data>/dagq.db
} fixture_t;

static int
s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st; (void) flag; (void) ftw;
    return remove (path);
}

static int
setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    assert_non_null (fx);
    const char *tmp = getenv ("TMPDIR");
    snprintf (fx->dir, sizeof fx->dir, "%s/dq_store_test.XXXXXX",
              tmp && *tmp? tmp: "/tmp");
    assert_non_null (mkdtemp (fx->dir));
    snprintf (fx->data, sizeof fx->data, "%s/data", fx->dir);
    snprintf (fx->db, sizeof fx->db, "%s/%s", fx->data, DQ_STORE_FILE);
    *state = fx;
    return 0;
}

static int
teardown (void **state)
{
    fixture_t *fx = *state;
    nftw (fx->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free (fx);
    return 0;
}

static dq_store_t *
s_open (fixture_t *fx)
{
    char err [512];
    dq_store_t *store = dq_store_open (fx->data, DQ_STORE_SYNC_FULL, err, sizeof err);
    if (!store)
        fail_msg ("dq_store_open: %s", err);
    return store;
}

//  Reads a whole file into a malloc'd buffer.
static unsigned char *
s_slurp (const char *path, size_t *size)
{
    FILE *file = fopen (path, "rb");
    assert_non_null (file);
    assert_int_equal (fseek (file, 0, SEEK_END), 0);
    long len = ftell (file);
    assert_true (len >= 0);
    rewind (file);
    unsigned char *data = malloc ((size_t) len + 1);
    assert_non_null (data);
    assert_int_equal (fread (data, 1, (size_t) len, file), (size_t) len);
    fclose (file);
    *size = (size_t) len;
    return data;
}

static void
s_exec (sqlite3 *db, const char *sql)
{
    char *errmsg = NULL;
    if (sqlite3_exec (db, sql, NULL, NULL, &errmsg) != SQLITE_OK) {
        fail_msg ("sql '%s': %s", sql, errmsg);
    }
}

static int64_t
s_count (sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    int64_t n = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    return n;
}

static sqlite3 *
s_reader (fixture_t *fx)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (fx->db, &db, SQLITE_OPEN_READONLY, NULL),
                      SQLITE_OK);
    sqlite3_busy_timeout (db, 10000);
    return db;
}

//  --------------------------------------------------------------------------
//  A loader that keeps deep copies of what it is given

typedef struct {
    dq_store_job_t job;          //  pointers below are owned copies
    uint64_t *parents;
    bool *run_on_failure;
} loaded_job_t;

typedef struct {
    loaded_job_t *jobs;
    size_t njobs, jobs_cap;
    dq_store_dag_t *dags;
    size_t ndags;
    dq_store_key_t *keys;
    size_t nkeys;
    uint64_t last_id;            //  to check id order
    size_t stop_after;           //  on_job fails after this many, 0 = never
} loaded_t;

static char *
s_strdup_or_null (const char *s)
{
    return s? strdup (s): NULL;
}

static void *
s_memdup_or_null (const void *p, size_t size)
{
    if (!p)
        return NULL;
    void *copy = malloc (size? size: 1);
    assert_non_null (copy);
    memcpy (copy, p, size);
    return copy;
}

static int
s_on_job (void *arg, const dq_store_job_t *job)
{
    loaded_t *loaded = arg;
    if (loaded->njobs)
        assert_true (job->id > loaded->last_id);
    loaded->last_id = job->id;
    if (loaded->stop_after && loaded->njobs == loaded->stop_after)
        return -1;
    if (loaded->njobs == loaded->jobs_cap) {
        loaded->jobs_cap = loaded->jobs_cap? loaded->jobs_cap * 2: 16;
        loaded->jobs = realloc (loaded->jobs, loaded->jobs_cap * sizeof *loaded->jobs);
        assert_non_null (loaded->jobs);
    }
    loaded_job_t *copy = &loaded->jobs [loaded->njobs++];
    copy->job = *job;
    copy->job.type = s_strdup_or_null (job->type);
    copy->job.payload = s_memdup_or_null (job->payload, job->payload_size);
    copy->job.content_type = s_strdup_or_null (job->content_type);
    copy->job.name = s_strdup_or_null (job->name);
    copy->job.key = s_strdup_or_null (job->key);
    copy->job.output = s_memdup_or_null (job->output, job->output_size);
    copy->job.error = s_strdup_or_null (job->error);
    copy->job.worker = s_strdup_or_null (job->worker);
    copy->parents = s_memdup_or_null (job->parents,
                                      job->nparents * sizeof *job->parents);
    copy->run_on_failure = s_memdup_or_null (job->run_on_failure,
                                             job->nparents * sizeof (bool));
    copy->job.parents = copy->parents;
    copy->job.run_on_failure = copy->run_on_failure;
    if (job->nparents == 0) {
        assert_null (job->parents);
        assert_null (job->run_on_failure);
    }
    return 0;
}

static int
s_on_dag (void *arg, const dq_store_dag_t *dag)
{
    loaded_t *loaded = arg;
    loaded->dags = realloc (loaded->dags, (loaded->ndags + 1) * sizeof *loaded->dags);
    assert_non_null (loaded->dags);
    dq_store_dag_t *copy = &loaded->dags [loaded->ndags++];
    *copy = *dag;
    copy->name = s_strdup_or_null (dag->name);
    copy->key = s_strdup_or_null (dag->key);
    //  keys come before DAGs, DAGs before jobs
    assert_int_equal (loaded->njobs, 0);
    return 0;
}

static int
s_on_key (void *arg, const dq_store_key_t *key)
{
    loaded_t *loaded = arg;
    loaded->keys = realloc (loaded->keys, (loaded->nkeys + 1) * sizeof *loaded->keys);
    assert_non_null (loaded->keys);
    dq_store_key_t *copy = &loaded->keys [loaded->nkeys++];
    *copy = *key;
    copy->key = s_strdup_or_null (key->key);
    assert_int_equal (loaded->ndags, 0);
    assert_int_equal (loaded->njobs, 0);
    return 0;
}

static void
s_loaded_free (loaded_t *loaded)
{
    for (size_t i = 0; i < loaded->njobs; i++) {
        dq_store_job_t *job = &loaded->jobs [i].job;
        free ((void *) job->type);
        free ((void *) job->payload);
        free ((void *) job->content_type);
        free ((void *) job->name);
        free ((void *) job->key);
        free ((void *) job->output);
        free ((void *) job->error);
        free ((void *) job->worker);
        free (loaded->jobs [i].parents);
        free (loaded->jobs [i].run_on_failure);
    }
    for (size_t i = 0; i < loaded->ndags; i++) {
        free ((void *) loaded->dags [i].name);
        free ((void *) loaded->dags [i].key);
    }
    for (size_t i = 0; i < loaded->nkeys; i++)
        free ((void *) loaded->keys [i].key);
    free (loaded->jobs);
    free (loaded->dags);
    free (loaded->keys);
    memset (loaded, 0, sizeof *loaded);
}

static void
s_load (dq_store_t *store, loaded_t *loaded)
{
    s_loaded_free (loaded);
    dq_store_loader_t loader = { s_on_job, s_on_dag, s_on_key, loaded };
    if (dq_store_load (store, &loader))
        fail_msg ("dq_store_load: %s", dq_store_error (store));
}

static const loaded_job_t *
s_find_job (const loaded_t *loaded, uint64_t id)
{
    for (size_t i = 0; i < loaded->njobs; i++)
        if (loaded->jobs [i].job.id == id)
            return &loaded->jobs [i];
    return NULL;
}

static void
s_assert_str (const char *expected, const char *actual)
{
    if (!expected)
        assert_null (actual);
    else {
        assert_non_null (actual);
        assert_string_equal (expected, actual);
    }
}

static void
s_assert_bytes (const void *expected, size_t expected_size,
                const void *actual, size_t actual_size)
{
    assert_int_equal (expected_size, actual_size);
    if (!expected)
        assert_null (actual);
    else {
        assert_non_null (actual);
        assert_memory_equal (expected, actual, expected_size);
    }
}

static void
s_assert_job (const dq_store_job_t *expected, const dq_store_job_t *actual)
{
    assert_int_equal (expected->id, actual->id);
    s_assert_str (expected->type, actual->type);
    s_assert_bytes (expected->payload, expected->payload_size,
                    actual->payload, actual->payload_size);
    s_assert_str (expected->content_type, actual->content_type);
    s_assert_str (expected->name, actual->name);
    s_assert_str (expected->key, actual->key);
    assert_int_equal (expected->priority, actual->priority);
    assert_int_equal (expected->max_attempts, actual->max_attempts);
    assert_int_equal (expected->attempts, actual->attempts);
    assert_int_equal (expected->timeout_ms, actual->timeout_ms);
    assert_int_equal (expected->run_at_ms, actual->run_at_ms);
    assert_int_equal (expected->created_ms, actual->created_ms);
    assert_int_equal (expected->started_ms, actual->started_ms);
    assert_int_equal (expected->finished_ms, actual->finished_ms);
    assert_int_equal (expected->state, actual->state);
    s_assert_bytes (expected->output, expected->output_size,
                    actual->output, actual->output_size);
    s_assert_str (expected->error, actual->error);
    s_assert_str (expected->worker, actual->worker);
    assert_int_equal (expected->dag, actual->dag);
    assert_int_equal (expected->skipped_by, actual->skipped_by);
    assert_int_equal (expected->nparents, actual->nparents);
    for (uint32_t i = 0; i < expected->nparents; i++) {
        assert_int_equal (expected->parents [i], actual->parents [i]);
        bool want = expected->run_on_failure && expected->run_on_failure [i];
        assert_int_equal (want, actual->run_on_failure [i]);
    }
}

//  What dq_store_load passes of a stored job: no output (its size only),
//  and no payload once the job has finished (its size only).
static void
s_assert_loaded (const dq_store_job_t *expected, const dq_store_job_t *actual)
{
    dq_store_job_t want = *expected;
    want.output = NULL;
    if (want.state >= DQ_STATE_SUCCEEDED)
        want.payload = NULL;
    s_assert_job (&want, actual);
}

//  A job with only the required fields. Unfinished jobs load as waiting.
static dq_store_job_t
s_plain_job (uint64_t id)
{
    dq_store_job_t job = {
        .id = id, .type = "echo", .max_attempts = 3, .created_ms = 1000 + id,
        .state = DQ_STATE_WAITING
    };
    return job;
}

//  --------------------------------------------------------------------------

static void
test_store_creates_schema_and_reopens (void **state)
{
    fixture_t *fx = *state;
    //  A nested data dir that does not exist yet
    snprintf (fx->data, sizeof fx->data, "%s/nested/data", fx->dir);
    snprintf (fx->db, sizeof fx->db, "%s/%s", fx->data, DQ_STORE_FILE);
    dq_store_t *store = s_open (fx);

    struct stat st;
    assert_int_equal (stat (fx->data, &st), 0);
    assert_true (S_ISDIR (st.st_mode));
    assert_int_equal (st.st_mode & 0027, 0);        //  at most 0750
    assert_int_equal (stat (fx->db, &st), 0);
    assert_string_equal (dq_store_path (store), fx->db);
    assert_string_equal (dq_store_error (store), "");

    char *value = dq_store_meta_get (store, "app");
    assert_non_null (value);
    assert_string_equal (value, "dagq");
    free (value);
    value = dq_store_meta_get (store, "format_version");
    assert_non_null (value);
    assert_string_equal (value, "2");
    free (value);
    assert_int_equal (dq_store_upgraded_from (store), 0);
    assert_true (dq_store_size (store) > 0);
    assert_true (dq_store_disk_free (store) > 0);

    //  The schema is what the docs say, and the file is in WAL mode
    sqlite3 *db = s_reader (fx);
    assert_int_equal (s_count (db,
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
        " AND name IN ('meta', 'jobs', 'outcomes', 'edges', 'dags', 'keys')"), 6);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "PRAGMA journal_mode", -1, &stmt, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "wal");
    sqlite3_finalize (stmt);
    sqlite3_close (db);

    dq_store_close (&store);
    assert_null (store);
    dq_store_close (&store);        //  harmless twice
    dq_store_close (NULL);

    store = s_open (fx);
    value = dq_store_meta_get (store, "format_version");
    assert_string_equal (value, "2");
    free (value);
    dq_store_close (&store);
}

static void
test_store_round_trips_every_field (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);

    static const unsigned char payload [] = { 'a', 0, 'b', 0, 0, 0xff, 0x80, 'z' };
    static const unsigned char output [] = { 0, 1, 2, 0, 3 };
    uint64_t parents [] = { 3, 1, 2 };
    bool run_on_failure [] = { false, true, false };

    dq_store_job_t jobs [5];
    jobs [0] = s_plain_job (1);                     //  every optional field NULL
    jobs [1] = s_plain_job (2);
    jobs [1].payload = "";                          //  empty but present
    jobs [1].output = "";
    jobs [1].state = DQ_STATE_SUCCEEDED;
    jobs [1].finished_ms = 2000;
    jobs [2] = s_plain_job (3);                     //  unfinished, retried
    jobs [2].payload = "";
    jobs [2].attempts = 2;
    jobs [2].run_at_ms = 1700000000999ull;
    jobs [2].error = "timed out";
    jobs [3] = (dq_store_job_t) {
        .id = 10, .type = "thumbnail",
        .payload = payload, .payload_size = sizeof payload,
        .content_type = "application/octet-stream", .name = "resize",
        .key = "req-77", .priority = -42, .max_attempts = 7, .attempts = 2,
        .timeout_ms = 30000, .run_at_ms = 1700000000123ull,
        .created_ms = 1700000000000ull, .started_ms = 1700000000200ull,
        .finished_ms = 1700000000300ull, .state = DQ_STATE_FAILED,
        .output = output, .output_size = sizeof output,
        .error = "exit status 3", .worker = "w-12@host", .dag = 5,
        .skipped_by = 0,
        .parents = parents, .run_on_failure = run_on_failure, .nparents = 3
    };
    //  Edges in an order that is not sorted, run_on_failure NULL = all false,
    //  extreme values
    uint64_t parents2 [] = { 10, 2 };
    jobs [4] = (dq_store_job_t) {
        .id = 11, .type = "t", .priority = INT32_MAX, .max_attempts = UINT32_MAX,
        .attempts = UINT32_MAX, .timeout_ms = UINT32_MAX,
        .run_at_ms = UINT64_MAX, .created_ms = UINT64_MAX - 1,
        .state = DQ_STATE_SKIPPED, .skipped_by = 10, .dag = 5,
        .parents = parents2, .run_on_failure = NULL, .nparents = 2
    };
    //  Put out of id order: load still returns id order
    for (int i = 4; i >= 0; i--)
        assert_int_equal (dq_store_put_job (store, &jobs [i]), 0);

    dq_store_dag_t dags [] = {
        { .id = 5, .name = "pipeline", .key = "dag-key", .created_ms = 99 },
        { .id = 6, .name = NULL, .key = NULL, .created_ms = 100 },
    };
    dq_store_key_t keys [] = {
        { .key = "req-77", .first = 10, .count = 2, .dag = 5, .created_ms = 500 },
        { .key = "solo", .first = 1, .count = 1, .dag = 0, .created_ms = 600 },
    };
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal (dq_store_put_dag (store, &dags [i]), 0);
        assert_int_equal (dq_store_put_key (store, &keys [i]), 0);
    }
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (dq_store_commit (store), 0);      //  nothing open: no-op

    loaded_t loaded = { 0 };
    //  Twice: in the same session, and after a reopen
    for (int round = 0; round < 2; round++) {
        s_load (store, &loaded);
        assert_int_equal (loaded.njobs, 5);
        uint64_t order [] = { 1, 2, 3, 10, 11 };
        for (size_t i = 0; i < 5; i++)
            assert_int_equal (loaded.jobs [i].job.id, order [i]);
        s_assert_loaded (&jobs [0], &s_find_job (&loaded, 1)->job);
        s_assert_loaded (&jobs [1], &s_find_job (&loaded, 2)->job);
        s_assert_loaded (&jobs [2], &s_find_job (&loaded, 3)->job);
        s_assert_loaded (&jobs [3], &s_find_job (&loaded, 10)->job);
        s_assert_loaded (&jobs [4], &s_find_job (&loaded, 11)->job);
        //  X'' is not NULL
        const dq_store_job_t *empty = &s_find_job (&loaded, 3)->job;
        assert_non_null (empty->payload);
        assert_int_equal (empty->payload_size, 0);
        //  Which jobs are parents of stored jobs
        for (size_t i = 0; i < 5; i++) {
            const dq_store_job_t *job = &loaded.jobs [i].job;
            assert_int_equal (job->has_children,
                              job->id != 11);   //  1, 2, 3 and 10 are parents
        }

        assert_int_equal (loaded.ndags, 2);
        assert_int_equal (loaded.dags [0].id, 5);
        s_assert_str ("pipeline", loaded.dags [0].name);
        s_assert_str ("dag-key", loaded.dags [0].key);
        assert_int_equal (loaded.dags [0].created_ms, 99);
        assert_int_equal (loaded.dags [1].id, 6);
        assert_null (loaded.dags [1].name);
        assert_null (loaded.dags [1].key);

        assert_int_equal (loaded.nkeys, 2);
        for (size_t i = 0; i < 2; i++) {
            const dq_store_key_t *key = strcmp (loaded.keys [i].key, "solo") == 0?
                                        &keys [1]: &keys [0];
            s_assert_str (key->key, loaded.keys [i].key);
            assert_int_equal (key->first, loaded.keys [i].first);
            assert_int_equal (key->count, loaded.keys [i].count);
            assert_int_equal (key->dag, loaded.keys [i].dag);
            assert_int_equal (key->created_ms, loaded.keys [i].created_ms);
        }
        dq_store_close (&store);
        store = s_open (fx);
    }

    //  One job at a time (cold jobs): every field but the payload and
    //  the output, whose sizes it gives
    for (size_t i = 0; i < 5; i++) {
        dq_store_job_t got;
        void *mem = NULL;
        assert_int_equal (dq_store_get_job (store, jobs [i].id, &got, &mem), 0);
        assert_non_null (mem);
        dq_store_job_t want = jobs [i];
        want.payload = want.output = NULL;
        if (want.state < DQ_STATE_SUCCEEDED)
            want.state = DQ_STATE_WAITING;
        s_assert_job (&want, &got);
        free (mem);
    }
    dq_store_job_t none;
    void *none_mem = &none;
    assert_int_equal (dq_store_get_job (store, 999, &none, &none_mem), 1);
    assert_null (none_mem);

    //  Output read back from disk
    void *out = NULL;
    size_t out_size = 0;
    char *error = NULL;
    assert_int_equal (dq_store_get_output (store, 10, &out, &out_size, &error), 0);
    s_assert_bytes (output, sizeof output, out, out_size);
    assert_string_equal (error, "exit status 3");
    free (out);
    free (error);
    assert_int_equal (dq_store_get_output (store, 1, &out, &out_size, &error), 0);
    assert_null (out);
    assert_int_equal (out_size, 0);
    assert_null (error);
    //  An unfinished job: no output, the last retry's error
    assert_int_equal (dq_store_get_output (store, 3, &out, &out_size, &error), 0);
    assert_null (out);
    assert_int_equal (out_size, 0);
    assert_string_equal (error, "timed out");
    free (error);
    assert_int_equal (dq_store_get_output (store, 2, &out, &out_size, NULL), 0);
    assert_non_null (out);                          //  X'' is not NULL
    assert_int_equal (out_size, 0);
    free (out);
    assert_int_equal (dq_store_get_output (store, 999, &out, &out_size, &error), -1);
    assert_non_null (strstr (dq_store_error (store), "999"));

    //  Ids are never reused: putting one again is an error, and like any
    //  failed write it stops the store (nothing of the batch is committed)
    dq_store_job_t extra = s_plain_job (12);
    assert_int_equal (dq_store_put_job (store, &extra), 0);
    assert_int_equal (dq_store_put_job (store, &jobs [3]), -1);
    assert_non_null (strstr (dq_store_error (store), "put_job"));
    assert_int_equal (dq_store_commit (store), -1);
    dq_store_close (&store);
    store = s_open (fx);
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 5);
    assert_null (s_find_job (&loaded, 12));
    s_assert_loaded (&jobs [3], &s_find_job (&loaded, 10)->job);

    s_loaded_free (&loaded);
    dq_store_close (&store);
}

static void
test_store_updates_show_in_load (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    for (uint64_t id = 1; id <= 4; id++) {
        dq_store_job_t job = s_plain_job (id);
        uint64_t parent = id - 1;
        if (id > 1) {
            job.parents = &parent;
            job.nparents = 1;
        }
        assert_int_equal (dq_store_put_job (store, &job), 0);
    }
    dq_store_dag_t dag = { .id = 1, .name = "d", .created_ms = 1 };
    assert_int_equal (dq_store_put_dag (store, &dag), 0);
    dq_store_key_t old_key = { .key = "old", .first = 1, .count = 1, .created_ms = 100 };
    dq_store_key_t new_key = { .key = "new", .first = 2, .count = 1, .created_ms = 200 };
    assert_int_equal (dq_store_put_key (store, &old_key), 0);
    assert_int_equal (dq_store_put_key (store, &new_key), 0);
    assert_int_equal (dq_store_commit (store), 0);

    assert_int_equal (dq_store_set_retry (store, 2, 1, 9000, "timed out"), 0);
    static const unsigned char out [] = { 'o', 0, 'k' };
    dq_store_end_t end1 = {
        .id = 1, .state = DQ_STATE_SUCCEEDED, .attempts = 1, .started_ms = 5000,
        .finished_ms = 6000, .worker = "w-1", .output = out,
        .output_size = sizeof out
    };
    assert_int_equal (dq_store_set_finished (store, &end1), 0);
    dq_store_end_t end4 = {
        .id = 4, .state = DQ_STATE_SKIPPED, .finished_ms = 6001,
        .error = "parent failed", .skipped_by = 3
    };
    assert_int_equal (dq_store_set_finished (store, &end4), 0);
    //  Job 3 finishes, then retention deletes it with its outcome
    dq_store_end_t end3 = { .id = 3, .state = DQ_STATE_FAILED, .attempts = 3,
                            .finished_ms = 5500, .error = "boom" };
    assert_int_equal (dq_store_set_finished (store, &end3), 0);
    assert_int_equal (dq_store_delete_job (store, 3), 0);
    assert_int_equal (dq_store_delete_dag (store, 1), 0);
    assert_int_equal (dq_store_expire_keys (store, 150), 0);
    //  A retry or delete of an id not stored changes nothing and succeeds;
    //  an outcome of one is kept but never loaded (no job to attach it to)
    assert_int_equal (dq_store_set_retry (store, 77, 1, 1, NULL), 0);
    assert_int_equal (dq_store_delete_job (store, 78), 0);
    dq_store_end_t end77 = { .id = 77, .state = DQ_STATE_FAILED, .attempts = 1 };
    assert_int_equal (dq_store_set_finished (store, &end77), 0);
    assert_int_equal (dq_store_commit (store), 0);
    dq_store_close (&store);

    store = s_open (fx);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 3);
    assert_null (s_find_job (&loaded, 3));

    const dq_store_job_t *job = &s_find_job (&loaded, 1)->job;
    assert_int_equal (job->state, DQ_STATE_SUCCEEDED);
    assert_int_equal (job->attempts, 1);
    assert_int_equal (job->started_ms, 5000);
    assert_int_equal (job->finished_ms, 6000);
    s_assert_str ("w-1", job->worker);
    assert_null (job->output);              //  read on request
    assert_int_equal (job->output_size, sizeof out);
    assert_null (job->error);

    //  A retried job: waiting, its attempts and error kept; no attempt of
    //  it is stored beyond that
    job = &s_find_job (&loaded, 2)->job;
    assert_int_equal (job->state, DQ_STATE_WAITING);
    assert_int_equal (job->attempts, 1);
    assert_int_equal (job->started_ms, 0);
    assert_int_equal (job->run_at_ms, 9000);
    s_assert_str ("timed out", job->error);
    assert_null (job->worker);
    assert_null (job->output);
    assert_int_equal (job->nparents, 1);
    assert_int_equal (job->parents [0], 1);

    job = &s_find_job (&loaded, 4)->job;
    assert_int_equal (job->state, DQ_STATE_SKIPPED);
    assert_int_equal (job->finished_ms, 6001);
    assert_int_equal (job->skipped_by, 3);
    s_assert_str ("parent failed", job->error);
    assert_null (job->output);
    //  Job 4's own edge (to the deleted job 3) stays: only the deleted
    //  job's edges as child go
    assert_int_equal (job->nparents, 1);
    assert_int_equal (job->parents [0], 3);

    assert_int_equal (loaded.ndags, 0);
    assert_int_equal (loaded.nkeys, 1);
    assert_string_equal (loaded.keys [0].key, "new");
    s_loaded_free (&loaded);
    dq_store_close (&store);

    sqlite3 *db = s_reader (fx);
    assert_int_equal (s_count (db, "SELECT count(*) FROM edges WHERE child = 3"), 0);
    assert_int_equal (s_count (db, "SELECT count(*) FROM outcomes WHERE id = 3"), 0);
    assert_int_equal (s_count (db, "SELECT count(*) FROM outcomes WHERE id = 77"), 1);
    assert_int_equal (s_count (db, "SELECT count(*) FROM outcomes"), 3);
    sqlite3_close (db);

    //  An outcome recorded again replaces the first (one row per job)
    store = s_open (fx);
    assert_int_equal (dq_store_delete_job (store, 77), 0);
    end1.state = DQ_STATE_FAILED;
    end1.output = NULL;
    end1.output_size = 0;
    end1.error = "second";
    assert_int_equal (dq_store_set_finished (store, &end1), 0);
    assert_int_equal (dq_store_commit (store), 0);
    s_load (store, &loaded);
    job = &s_find_job (&loaded, 1)->job;
    assert_int_equal (job->state, DQ_STATE_FAILED);
    assert_null (job->output);
    s_assert_str ("second", job->error);
    s_loaded_free (&loaded);
    dq_store_close (&store);
    db = s_reader (fx);
    assert_int_equal (s_count (db, "SELECT count(*) FROM outcomes"), 2);
    sqlite3_close (db);
}

//  Retention finds finished jobs by finish time, from a cursor.
static void
test_store_finds_expired_jobs (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    //  Ids 1..20; finish times not in id order, two jobs per time, and job
    //  7 never finishes
    for (uint64_t id = 1; id <= 20; id++) {
        dq_store_job_t job = s_plain_job (id);
        assert_int_equal (dq_store_put_job (store, &job), 0);
        if (id == 7)
            continue;
        dq_store_end_t end = { .id = id, .state = DQ_STATE_SUCCEEDED,
                               .finished_ms = 1000 + (20 - id) / 2 };
        assert_int_equal (dq_store_set_finished (store, &end), 0);
    }
    assert_int_equal (dq_store_commit (store), 0);
    uint64_t ids [8], fin [8];
    //  Before 1003: ids 20, 19 (1000), 18, 17 (1001), 16, 15 (1002)
    assert_int_equal (dq_store_expired (store, 1003, 0, 0, ids, fin, 8), 6);
    uint64_t want [] = { 19, 20, 17, 18, 15, 16 };
    for (int i = 0; i < 6; i++) {
        assert_int_equal (ids [i], want [i]);
        assert_int_equal (fin [i], 1000 + i / 2);
    }
    //  From a cursor in the middle of a finish time, in pages of 3
    assert_int_equal (dq_store_expired (store, 1003, 1001, 17, ids, fin, 3), 3);
    assert_int_equal (ids [0], 18);
    assert_int_equal (ids [1], 15);
    assert_int_equal (ids [2], 16);
    assert_int_equal (dq_store_expired (store, 1003, 1002, 16, ids, fin, 3), 0);
    //  Deleted jobs are not found again; the unfinished one never is
    assert_int_equal (dq_store_delete_job (store, 19), 0);
    assert_int_equal (dq_store_expired (store, UINT64_MAX, 0, 0, ids, fin, 8), 8);
    assert_int_equal (ids [0], 20);
    uint64_t n = 0, cursor_ms = 0, cursor_id = 0;
    int got;
    while ((got = dq_store_expired (store, UINT64_MAX, cursor_ms, cursor_id,
                                    ids, fin, 4)) > 0) {
        for (int i = 0; i < got; i++)
            assert_true (ids [i] != 7 && ids [i] != 19);
        n += (uint64_t) got;
        cursor_ms = fin [got - 1];
        cursor_id = ids [got - 1];
    }
    assert_int_equal (got, 0);
    assert_int_equal (n, 18);
    //  A transaction that only read commits without counting as a commit
    //  (nothing for the syncer to do); one that wrote counts
    uint64_t commits = dq_store_commits (store);
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (dq_store_commits (store), commits + 1);
    assert_int_equal (dq_store_expired (store, 1003, 0, 0, ids, fin, 8), 5);
    dq_store_job_t row;
    void *mem = NULL;
    assert_int_equal (dq_store_get_job (store, 20, &row, &mem), 0);
    free (mem);
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (dq_store_commits (store), commits + 1);
    dq_store_close (&store);

    //  A store of an earlier broker, without the index: open builds it
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "DROP INDEX outcomes_finished");
    sqlite3_close (db);
    store = s_open (fx);
    assert_int_equal (dq_store_expired (store, 1003, 0, 0, ids, fin, 8), 5);
    dq_store_close (&store);
    db = s_reader (fx);
    assert_int_equal (s_count (db, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name = 'outcomes_finished'"), 1);
    sqlite3_close (db);
}

static void
test_store_meta_get_set (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    assert_null (dq_store_meta_get (store, "broker_id"));
    assert_int_equal (dq_store_meta_set (store, "broker_id", "b-1"), 0);
    char *value = dq_store_meta_get (store, "broker_id");
    assert_string_equal (value, "b-1");         //  visible in its own transaction
    free (value);
    assert_int_equal (dq_store_meta_set (store, "broker_id", "b-2"), 0);
    assert_int_equal (dq_store_meta_set (store, "next_seq", "12345"), 0);
    assert_int_equal (dq_store_meta_set (store, NULL, "x"), -1);
    assert_int_equal (dq_store_meta_set (store, "x", NULL), -1);
    assert_null (dq_store_meta_get (store, NULL));
    //  No commit: close commits what is open
    dq_store_close (&store);

    store = s_open (fx);
    value = dq_store_meta_get (store, "broker_id");
    assert_string_equal (value, "b-2");
    free (value);
    value = dq_store_meta_get (store, "next_seq");
    assert_string_equal (value, "12345");
    free (value);
    dq_store_close (&store);
}

static void
test_store_commit_groups_writes (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    sqlite3 *reader = s_reader (fx);

    for (uint64_t id = 1; id <= 50; id++) {
        dq_store_job_t job = s_plain_job (id);
        assert_int_equal (dq_store_put_job (store, &job), 0);
    }
    assert_int_equal (dq_store_meta_set (store, "next_seq", "51"), 0);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal (s_count (reader,
        "SELECT count(*) FROM meta WHERE key = 'next_seq'"), 0);

    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM jobs"), 50);
    assert_int_equal (s_count (reader,
        "SELECT count(*) FROM meta WHERE key = 'next_seq'"), 1);

    //  The next batch opens a new transaction
    dq_store_end_t end = { .id = 1, .state = DQ_STATE_SUCCEEDED, .attempts = 1 };
    assert_int_equal (dq_store_set_finished (store, &end), 0);
    assert_int_equal (dq_store_delete_job (store, 2), 0);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM outcomes"), 0);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM jobs"), 50);
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM outcomes"), 1);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM jobs"), 49);
    assert_true (dq_store_size (store) > 0);

    sqlite3_close (reader);
    dq_store_close (&store);
}

//  Checkpoints run on their own thread, woken by the WAL hook that replaces
//  SQLite's automatic checkpoint: once the WAL passes the threshold, pages
//  reach the database file while the store stays open.
static void
test_store_checkpoints_in_background (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    assert_int_equal (dq_store_commit (store), 0);
    struct stat st;
    assert_int_equal (stat (fx->db, &st), 0);
    off_t before = st.st_size;
    //  ~24 MiB of payloads in commits of 100 jobs: past the 16 MiB mark.
    static char payload [4096];
    memset (payload, 'p', sizeof payload);
    for (uint64_t id = 1; id <= 6000; id++) {
        dq_store_job_t job = s_plain_job (id);
        job.payload = payload;
        job.payload_size = sizeof payload;
        assert_int_equal (dq_store_put_job (store, &job), 0);
        if (id % 100 == 0)
            assert_int_equal (dq_store_commit (store), 0);
    }
    //  Wait (generously) for the checkpointer to copy pages over.
    bool grew = false;
    for (int i = 0; i < 6000 && !grew; i++) {
        assert_int_equal (stat (fx->db, &st), 0);
        grew = st.st_size > before + (8 << 20);
        if (!grew)
            usleep (10 * 1000);
    }
    assert_true (grew);
    //  Writing goes on while and after it checkpoints; everything is there.
    dq_store_job_t job = s_plain_job (6001);
    assert_int_equal (dq_store_put_job (store, &job), 0);
    assert_int_equal (dq_store_commit (store), 0);
    sqlite3 *reader = s_reader (fx);
    assert_int_equal (s_count (reader, "SELECT count(*) FROM jobs"), 6001);
    sqlite3_close (reader);
    dq_store_close (&store);
}

//  --sync full with the syncer: commits return at once, dq_store_durable
//  catches up after dq_store_sync, never passes the commits, and what was
//  committed is all there after a reopen. Other modes have no syncer and
//  report every commit durable.
static void
test_store_syncs_asynchronously (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    int fd = dq_store_sync_async (store);
    assert_true (fd >= 0);
    assert_int_equal (dq_store_sync_async (store), fd);
    uint64_t durable = 0, before = dq_store_commits (store), last = 0;
    assert_int_equal (dq_store_durable (store, &durable), 0);
    assert_int_equal (durable, before);
    assert_false (dq_store_syncing (store));
    for (uint64_t id = 1; id <= 200; id++) {
        dq_store_job_t job = s_plain_job (id);
        assert_int_equal (dq_store_put_job (store, &job), 0);
        assert_int_equal (dq_store_commit (store), 0);
        assert_int_equal (dq_store_commits (store), before + id);
        assert_int_equal (dq_store_sync (store), 0);
        //  Syncing until the sync asked for is done, not longer.
        bool syncing = dq_store_syncing (store);
        assert_int_equal (dq_store_durable (store, &durable), 0);
        assert_true (durable >= last && durable <= before + id);
        if (!syncing)
            assert_int_equal (durable, before + id);
        last = durable;
    }
    //  A commit with nothing open is not counted.
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (dq_store_commits (store), before + 200);
    //  Wait (generously) for the last sync, woken by the descriptor.
    for (int i = 0; i < 600 && durable < before + 200; i++) {
        struct pollfd pfd = { fd, POLLIN, 0 };
        poll (&pfd, 1, 100);
        assert_int_equal (dq_store_durable (store, &durable), 0);
    }
    assert_int_equal (durable, before + 200);
    assert_false (dq_store_syncing (store));
    dq_store_close (&store);

    store = s_open (fx);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 200);
    s_loaded_free (&loaded);
    dq_store_close (&store);

    char err [512];
    store = dq_store_open (fx->data, DQ_STORE_SYNC_NORMAL, err, sizeof err);
    assert_non_null (store);
    assert_int_equal (dq_store_sync_async (store), -1);
    dq_store_job_t job = s_plain_job (201);
    assert_int_equal (dq_store_put_job (store, &job), 0);
    assert_int_equal (dq_store_commit (store), 0);
    assert_int_equal (dq_store_sync (store), 0);
    assert_int_equal (dq_store_durable (store, &durable), 0);
    assert_int_equal (durable, dq_store_commits (store));
    assert_false (dq_store_syncing (store));
    dq_store_close (&store);
}

static void
test_store_lock_refuses_second_open (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);

    //  The LOCK file names us
    char lock_path [400];
    snprintf (lock_path, sizeof lock_path, "%s/LOCK", fx->data);
    size_t size;
    char *text = (char *) s_slurp (lock_path, &size);
    text [size] = '\0';
    assert_int_equal (atol (text), (long) getpid ());
    free (text);

    //  In this process
    char err [512];
    char expected [512];
    snprintf (expected, sizeof expected,
              "data dir %s is in use by another broker (pid %ld)",
              fx->data, (long) getpid ());
    assert_null (dq_store_open (fx->data, DQ_STORE_SYNC_FULL, err, sizeof err));
    assert_string_equal (err, expected);

    //  In another process
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        char child_err [512] = "";
        dq_store_t *other = dq_store_open (fx->data, DQ_STORE_SYNC_FULL,
                                           child_err, sizeof child_err);
        _exit (other == NULL && strcmp (child_err, expected) == 0? 0: 1);
    }
    int status = 0;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);

    //  The store is unharmed, and after close the dir is free again
    dq_store_job_t job = s_plain_job (1);
    assert_int_equal (dq_store_put_job (store, &job), 0);
    assert_int_equal (dq_store_commit (store), 0);
    dq_store_close (&store);
    store = s_open (fx);
    dq_store_close (&store);
}

//  Opens must fail with a message containing needle, leaving the file as it was.
static void
s_assert_refused (fixture_t *fx, const char *needle)
{
    size_t before_size, after_size;
    unsigned char *before = s_slurp (fx->db, &before_size);
    char err [512] = "";
    dq_store_t *store = dq_store_open (fx->data, DQ_STORE_SYNC_FULL, err, sizeof err);
    assert_null (store);
    if (!strstr (err, needle))
        fail_msg ("error '%s' does not mention '%s'", err, needle);
    assert_non_null (strstr (err, fx->db));
    unsigned char *after = s_slurp (fx->db, &after_size);
    assert_int_equal (before_size, after_size);
    assert_memory_equal (before, after, before_size);
    free (before);
    free (after);
    print_message ("refused: %s\n", err);
    //  No WAL or WAL index was left next to it either
    char sidecar [400];
    snprintf (sidecar, sizeof sidecar, "%s-wal", fx->db);
    assert_int_equal (access (sidecar, F_OK), -1);
    snprintf (sidecar, sizeof sidecar, "%s-shm", fx->db);
    assert_int_equal (access (sidecar, F_OK), -1);
}

static void
test_store_refuses_foreign_database (void **state)
{
    fixture_t *fx = *state;
    assert_int_equal (mkdir (fx->data, 0750), 0);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
                "INSERT INTO users VALUES (1, 'alice');");
    sqlite3_close (db);
    s_assert_refused (fx, "another program");
    s_assert_refused (fx, "users");

    //  A meta table of someone else's
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "DROP TABLE users;"
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
                "INSERT INTO meta VALUES ('app', 'otherapp');");
    sqlite3_close (db);
    s_assert_refused (fx, "otherapp");

    //  A meta table of another shape
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "DROP TABLE meta; CREATE TABLE meta (a, b);");
    sqlite3_close (db);
    s_assert_refused (fx, "another program");

    //  A foreign database in WAL mode
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "DROP TABLE meta; PRAGMA journal_mode = WAL;"
                "CREATE TABLE orders (id INTEGER PRIMARY KEY);");
    sqlite3_close (db);
    s_assert_refused (fx, "orders");
}

static void
test_store_refuses_garbage_file (void **state)
{
    fixture_t *fx = *state;
    assert_int_equal (mkdir (fx->data, 0750), 0);
    FILE *file = fopen (fx->db, "wb");
    assert_non_null (file);
    for (int i = 0; i < 10000; i++)
        fputc ((i * 7919) & 0xff, file);
    fclose (file);
    s_assert_refused (fx, "not a SQLite database");

    //  A short file too
    file = fopen (fx->db, "wb");
    assert_non_null (file);
    fputs ("hello", file);
    fclose (file);
    s_assert_refused (fx, "not a SQLite database");

    //  The magic but nothing sane behind it
    file = fopen (fx->db, "wb");
    assert_non_null (file);
    fwrite ("SQLite format 3", 1, 16, file);
    for (int i = 0; i < 8192; i++)
        fputc (0xa5, file);
    fclose (file);
    s_assert_refused (fx, "refusing");
}

static void
test_store_refuses_unknown_format_version (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    dq_store_close (&store);

    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "UPDATE meta SET value = '3' WHERE key = 'format_version'");
    sqlite3_close (db);
    s_assert_refused (fx, "format version 3, newer");

    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "UPDATE meta SET value = '0' WHERE key = 'format_version'");
    sqlite3_close (db);
    s_assert_refused (fx, "unknown store format version '0'");

    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "UPDATE meta SET value = 'x1' WHERE key = 'format_version'");
    sqlite3_close (db);
    s_assert_refused (fx, "unknown store format version 'x1'");

    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "DELETE FROM meta WHERE key = 'format_version'");
    sqlite3_close (db);
    s_assert_refused (fx, "no store format version");

    //  Restored, it opens again
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "INSERT INTO meta VALUES ('format_version', '2')");
    sqlite3_close (db);
    store = s_open (fx);
    dq_store_close (&store);
}

//  The schema of format version 1, as dq_store wrote it.
static const char *s_v1_schema =
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY, type TEXT NOT NULL, payload BLOB,"
    "  content_type TEXT, name TEXT, key TEXT, priority INTEGER NOT NULL,"
    "  max_attempts INTEGER NOT NULL, attempts INTEGER NOT NULL,"
    "  timeout_ms INTEGER NOT NULL, run_at_ms INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL, state INTEGER NOT NULL, output BLOB,"
    "  error TEXT, worker TEXT, dag INTEGER NOT NULL,"
    "  skipped_by INTEGER NOT NULL);"
    "CREATE TABLE edges ("
    "  child INTEGER NOT NULL, pos INTEGER NOT NULL, parent INTEGER NOT NULL,"
    "  run_on_failure INTEGER NOT NULL, PRIMARY KEY (child, pos)) WITHOUT ROWID;"
    "CREATE TABLE dags ("
    "  id INTEGER PRIMARY KEY, name TEXT, key TEXT, created_ms INTEGER NOT NULL);"
    "CREATE TABLE keys ("
    "  key TEXT PRIMARY KEY, first INTEGER NOT NULL, count INTEGER NOT NULL,"
    "  dag INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE INDEX keys_created ON keys (created_ms);"
    "INSERT INTO meta VALUES ('app', 'dagq'), ('format_version', '1'),"
    "  ('broker_id', 'b1234'), ('next_seq', '6');";

static void
test_store_upgrades_format_version_1 (void **state)
{
    fixture_t *fx = *state;
    assert_int_equal (mkdir (fx->data, 0750), 0);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, "PRAGMA journal_mode = WAL");
    s_exec (db, s_v1_schema);
    //  Succeeded; running (its second attempt); skipped; waiting with a key
    s_exec (db,
        "INSERT INTO jobs VALUES (1, 'echo', X'7031', NULL, 'a', NULL, 0, 3, 1,"
        "  0, 0, 100, 5000, 6000, 3, X'6F6B', NULL, 'w1', 5, 0);"
        "INSERT INTO jobs VALUES (2, 'echo', X'7032', 'text/plain', 'b', NULL,"
        "  -4, 3, 2, 30000, 4000, 101, 7000, 0, 2, NULL, 'first try failed',"
        "  'w2', 5, 0);"
        "INSERT INTO jobs VALUES (3, 'echo', NULL, NULL, 'c', NULL, 0, 3, 0,"
        "  0, 0, 102, 0, 6500, 6, NULL, 'parent 2 failed', NULL, 5, 2);"
        "INSERT INTO jobs VALUES (4, 'resize', X'', NULL, NULL, 'k4', 7, 1, 0,"
        "  0, 0, 103, 0, 0, 0, NULL, NULL, NULL, 0, 0);"
        "INSERT INTO edges VALUES (2, 0, 1, 0), (3, 0, 2, 1), (3, 1, 1, 0);"
        "INSERT INTO dags VALUES (5, 'pipeline', NULL, 99);"
        "INSERT INTO keys VALUES ('k4', 4, 1, 0, 103);");
    sqlite3_close (db);

    dq_store_t *store = s_open (fx);
    assert_int_equal (dq_store_upgraded_from (store), 1);
    char *value = dq_store_meta_get (store, "format_version");
    assert_string_equal (value, "2");
    free (value);
    value = dq_store_meta_get (store, "broker_id");
    assert_string_equal (value, "b1234");
    free (value);

    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 4);
    assert_int_equal (loaded.ndags, 1);
    assert_int_equal (loaded.nkeys, 1);
    static const unsigned char p1 [] = { 'p', '1' }, p2 [] = { 'p', '2' };
    static const unsigned char ok [] = { 'o', 'k' };
    uint64_t parents2 [] = { 1 }, parents3 [] = { 2, 1 };
    bool rof3 [] = { true, false };
    dq_store_job_t expected [] = {
        { .id = 1, .type = "echo", .payload = p1, .payload_size = 2, .name = "a",
          .max_attempts = 3, .attempts = 1, .created_ms = 100,
          .started_ms = 5000, .finished_ms = 6000, .state = DQ_STATE_SUCCEEDED,
          .output = ok, .output_size = 2, .worker = "w1", .dag = 5 },
        //  Running is not a stored state any more: waiting, attempts kept
        { .id = 2, .type = "echo", .payload = p2, .payload_size = 2,
          .content_type = "text/plain", .name = "b", .priority = -4,
          .max_attempts = 3, .attempts = 2, .timeout_ms = 30000,
          .run_at_ms = 4000, .created_ms = 101, .state = DQ_STATE_WAITING,
          .error = "first try failed", .dag = 5,
          .parents = parents2, .nparents = 1 },
        { .id = 3, .type = "echo", .name = "c", .max_attempts = 3,
          .created_ms = 102, .finished_ms = 6500, .state = DQ_STATE_SKIPPED,
          .error = "parent 2 failed", .dag = 5, .skipped_by = 2,
          .parents = parents3, .run_on_failure = rof3, .nparents = 2 },
        { .id = 4, .type = "resize", .payload = "", .key = "k4", .priority = 7,
          .max_attempts = 1, .created_ms = 103, .state = DQ_STATE_WAITING },
    };
    for (size_t i = 0; i < 4; i++)
        s_assert_loaded (&expected [i], &loaded.jobs [i].job);
    s_loaded_free (&loaded);
    dq_store_close (&store);

    //  Once: the next open finds version 2
    store = s_open (fx);
    assert_int_equal (dq_store_upgraded_from (store), 0);
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 4);
    s_assert_loaded (&expected [1], &s_find_job (&loaded, 2)->job);
    s_loaded_free (&loaded);
    dq_store_close (&store);
    db = s_reader (fx);
    assert_int_equal (s_count (db, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name = 'jobs_v1'"), 0);
    assert_int_equal (s_count (db, "SELECT count(*) FROM outcomes"), 2);
    sqlite3_close (db);
}

//  An upgrade that fails leaves the version 1 store as it was.
static void
test_store_upgrade_is_all_or_nothing (void **state)
{
    fixture_t *fx = *state;
    assert_int_equal (mkdir (fx->data, 0750), 0);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    s_exec (db, s_v1_schema);
    //  A row version 2 cannot take (no type), in a table without the
    //  NOT NULL version 1 had, and a good row before it
    s_exec (db,
        "INSERT INTO jobs VALUES (1, 'echo', NULL, NULL, NULL, NULL, 0, 3, 0,"
        "  0, 0, 100, 0, 0, 0, NULL, NULL, NULL, 0, 0);"
        "ALTER TABLE jobs RENAME TO jobs_old;"
        "CREATE TABLE jobs AS SELECT * FROM jobs_old;"
        "DROP TABLE jobs_old;"
        "INSERT INTO jobs (id, type, priority, max_attempts, attempts,"
        "  timeout_ms, run_at_ms, created_ms, started_ms, finished_ms, state,"
        "  dag, skipped_by) VALUES (2, NULL, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0);");
    sqlite3_close (db);

    char err [512] = "";
    assert_null (dq_store_open (fx->data, DQ_STORE_SYNC_FULL, err, sizeof err));
    print_message ("refused: %s\n", err);
    assert_non_null (strstr (err, "NOT NULL"));
    assert_non_null (strstr (err, "cannot upgrade the store from format version 1"));
    db = s_reader (fx);
    assert_int_equal (s_count (db, "SELECT count(*) FROM meta"
                                   " WHERE key = 'format_version' AND value = '1'"), 1);
    assert_int_equal (s_count (db, "SELECT count(*) FROM sqlite_master"
                                   " WHERE name IN ('outcomes', 'jobs_v1')"), 0);
    assert_int_equal (s_count (db, "SELECT count(*) FROM jobs"), 2);
    sqlite3_close (db);
}

//  A store of 2000 jobs with 512-byte payloads, closed (so checkpointed:
//  everything is in dagq.db, over 64 pages).
static void
s_fill_and_close (fixture_t *fx)
{
    dq_store_t *store = s_open (fx);
    char payload [512];
    memset (payload, 'p', sizeof payload);
    for (uint64_t id = 1; id <= 2000; id++) {
        dq_store_job_t job = s_plain_job (id);
        job.payload = payload;
        job.payload_size = sizeof payload;
        assert_int_equal (dq_store_put_job (store, &job), 0);
    }
    assert_int_equal (dq_store_commit (store), 0);
    dq_store_close (&store);
}

//  Scribble over 8 pages in the middle of the file (page 1, the header and
//  schema, stays intact).
static void
s_scribble (fixture_t *fx)
{
    size_t size;
    unsigned char *data = s_slurp (fx->db, &size);
    assert_true (size > 64 * 4096);
    free (data);
    unsigned char junk [4096 * 8];
    for (size_t i = 0; i < sizeof junk; i++)
        junk [i] = (unsigned char) (i * 31 + 7);
    int fd = open (fx->db, O_WRONLY);
    assert_true (fd >= 0);
    assert_int_equal (pwrite (fd, junk, sizeof junk, 4096 * 20), (ssize_t) sizeof junk);
    close (fd);
}

static void
test_store_refuses_corrupt_database (void **state)
{
    fixture_t *fx = *state;
    s_fill_and_close (fx);
    s_scribble (fx);
    s_assert_refused (fx, "corrupt");
}

//  The clean-stop marker: a clean close leaves CLEAN (and the file's
//  modification time a second back), an open removes it and skips
//  quick_check only for a file untouched since. A write after the close,
//  however soon, is checked (and refused when it corrupted the file); the
//  check is skipped only when the file still looks as the close left it,
//  which here means restoring its modification time by hand.
static void
test_store_clean_stop_skips_check (void **state)
{
    fixture_t *fx = *state;
    char clean [400];
    snprintf (clean, sizeof clean, "%s/CLEAN", fx->data);
    s_fill_and_close (fx);
    assert_int_equal (access (clean, F_OK), 0);
    struct stat closed;
    assert_int_equal (stat (fx->db, &closed), 0);
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    assert_true (closed.st_mtim.tv_sec < now.tv_sec);

    //  Reopened: the marker is gone while the store is open, and back after.
    dq_store_t *store = s_open (fx);
    assert_int_equal (access (clean, F_OK), -1);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 2000);
    s_loaded_free (&loaded);
    dq_store_close (&store);
    assert_int_equal (access (clean, F_OK), 0);

    //  Pages scribbled over at once: checked and refused, marker kept.
    assert_int_equal (stat (fx->db, &closed), 0);
    s_scribble (fx);
    s_assert_refused (fx, "corrupt");
    assert_int_equal (access (clean, F_OK), 0);

    //  The same damage with the close's modification time put back looks
    //  untouched: opened without the check (its pages are not read).
    struct timespec times [2] = { closed.st_atim, closed.st_mtim };
    assert_int_equal (utimensat (AT_FDCWD, fx->db, times, 0), 0);
    store = s_open (fx);
    assert_int_equal (access (clean, F_OK), -1);
    dq_store_close (&store);

    //  A marker that does not match (another inode) is no reason to skip.
    FILE *f = fopen (clean, "w");
    assert_non_null (f);
    fprintf (f, "dagq-clean 1 %llu %llu %lld %lld %ld\n",
             (unsigned long long) closed.st_dev, (unsigned long long) closed.st_ino + 1,
             (long long) closed.st_size, (long long) closed.st_mtim.tv_sec,
             closed.st_mtim.tv_nsec);
    fclose (f);
    assert_int_equal (utimensat (AT_FDCWD, fx->db, times, 0), 0);
    s_assert_refused (fx, "corrupt");
}

static void
test_store_fails_stop_on_sqlite_error (void **state)
{
    fixture_t *fx = *state;
    dq_store_t *store = s_open (fx);
    //  A trigger added behind the store's back is the failure seam
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (fx->db, &db), SQLITE_OK);
    sqlite3_busy_timeout (db, 10000);
    s_exec (db, "CREATE TRIGGER boom BEFORE INSERT ON dags"
                " BEGIN SELECT RAISE (ABORT, 'injected failure'); END");

    dq_store_job_t job = s_plain_job (1);
    assert_int_equal (dq_store_put_job (store, &job), 0);
    dq_store_dag_t dag = { .id = 1, .created_ms = 1 };
    assert_int_equal (dq_store_put_dag (store, &dag), -1);
    assert_non_null (strstr (dq_store_error (store), "injected failure"));
    //  Fail-stop: later writes and the commit fail, nothing of the batch lands
    job = s_plain_job (2);
    assert_int_equal (dq_store_put_job (store, &job), -1);
    assert_int_equal (dq_store_commit (store), -1);
    assert_non_null (strstr (dq_store_error (store), "injected failure"));
    assert_int_equal (s_count (db, "SELECT count(*) FROM jobs"), 0);
    dq_store_close (&store);

    s_exec (db, "DROP TRIGGER boom");
    sqlite3_close (db);
    store = s_open (fx);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 0);
    assert_int_equal (dq_store_put_dag (store, &dag), 0);
    assert_int_equal (dq_store_commit (store), 0);
    s_loaded_free (&loaded);
    dq_store_close (&store);
}

static void
test_store_recovers_after_crash (void **state)
{
    fixture_t *fx = *state;
    //  A child commits job 1, writes job 2 without committing, and dies
    //  without closing: its locks go with it, the WAL stays behind
    pid_t child = fork ();
    assert_true (child >= 0);
    if (child == 0) {
        char err [512];
        dq_store_t *store = dq_store_open (fx->data, DQ_STORE_SYNC_FULL,
                                           err, sizeof err);
        if (!store)
            _exit (2);
        dq_store_job_t job = s_plain_job (1);
        if (dq_store_put_job (store, &job) || dq_store_commit (store))
            _exit (3);
        job = s_plain_job (2);
        if (dq_store_put_job (store, &job))
            _exit (4);
        _exit (0);
    }
    int status = 0;
    assert_int_equal (waitpid (child, &status, 0), child);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 0);

    dq_store_t *store = s_open (fx);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 1);
    assert_int_equal (loaded.jobs [0].job.id, 1);
    s_loaded_free (&loaded);
    dq_store_close (&store);
}

static void
test_store_rejects_bad_arguments (void **state)
{
    fixture_t *fx = *state;
    char err [256];
    assert_null (dq_store_open (NULL, DQ_STORE_SYNC_FULL, err, sizeof err));
    assert_null (dq_store_open ("", DQ_STORE_SYNC_FULL, err, sizeof err));
    assert_null (dq_store_open (fx->data, (dq_store_sync_t) 9, err, sizeof err));
    assert_non_null (strstr (err, "sync"));
    assert_null (dq_store_open (NULL, DQ_STORE_SYNC_FULL, NULL, 0));

    //  A data dir path through a regular file
    char file_path [400];
    snprintf (file_path, sizeof file_path, "%s/plain", fx->dir);
    FILE *file = fopen (file_path, "w");
    assert_non_null (file);
    fclose (file);
    assert_null (dq_store_open (file_path, DQ_STORE_SYNC_FULL, err, sizeof err));
    assert_non_null (strstr (err, "not a directory"));

    dq_store_t *store = s_open (fx);
    dq_store_job_t job = s_plain_job (1);
    job.type = NULL;
    assert_int_equal (dq_store_put_job (store, &job), -1);
    assert_int_equal (dq_store_put_job (store, NULL), -1);
    job = s_plain_job (1);
    job.payload_size = 10;                   //  size without data
    assert_int_equal (dq_store_put_job (store, &job), -1);
    job = s_plain_job (1);
    job.nparents = 2;
    assert_int_equal (dq_store_put_job (store, &job), -1);
    job = s_plain_job (1);
    job.state = 99;
    assert_int_equal (dq_store_put_job (store, &job), -1);
    job = s_plain_job ((uint64_t) INT64_MAX + 1);
    assert_int_equal (dq_store_put_job (store, &job), -1);
    assert_int_equal (dq_store_put_dag (store, NULL), -1);
    assert_int_equal (dq_store_put_key (store, NULL), -1);
    dq_store_key_t key = { .key = NULL };
    assert_int_equal (dq_store_put_key (store, &key), -1);
    //  An unfinished job with what only an end has
    job = s_plain_job (1);
    job.output = "x";
    job.output_size = 1;
    assert_int_equal (dq_store_put_job (store, &job), -1);
    job = s_plain_job (1);
    job.started_ms = 5;
    assert_int_equal (dq_store_put_job (store, &job), -1);
    job = s_plain_job (1);
    job.state = DQ_STATE_RUNNING;
    job.worker = "w1";
    assert_int_equal (dq_store_put_job (store, &job), -1);
    dq_store_end_t end = { .id = 1, .state = DQ_STATE_RUNNING, .attempts = 1 };
    assert_int_equal (dq_store_set_finished (store, &end), -1);
    end.state = DQ_STATE_COUNT_;
    assert_int_equal (dq_store_set_finished (store, &end), -1);
    end = (dq_store_end_t) { .id = 1, .state = DQ_STATE_SUCCEEDED, .output_size = 5 };
    assert_int_equal (dq_store_set_finished (store, &end), -1);
    assert_int_equal (dq_store_set_finished (store, NULL), -1);
    assert_int_equal (dq_store_set_finished (NULL, &end), -1);
    assert_int_equal (dq_store_load (store, NULL), -1);
    void *out;
    assert_int_equal (dq_store_get_output (store, 1, &out, NULL, NULL), -1);
    assert_true (strlen (dq_store_error (store)) > 0);

    //  Refused input wrote nothing and did not stop the store
    job = s_plain_job (1);
    assert_int_equal (dq_store_put_job (store, &job), 0);
    assert_int_equal (dq_store_commit (store), 0);
    dq_store_close (&store);

    //  NULL store
    assert_int_equal (dq_store_put_job (NULL, &job), -1);
    assert_int_equal (dq_store_commit (NULL), -1);
    assert_int_equal (dq_store_meta_set (NULL, "a", "b"), -1);
    assert_null (dq_store_meta_get (NULL, "a"));
    assert_int_equal (dq_store_size (NULL), 0);
    assert_int_equal (dq_store_disk_free (NULL), 0);
    assert_null (dq_store_path (NULL));
    assert_non_null (dq_store_error (NULL));
}

static void
test_store_opens_in_every_sync_mode (void **state)
{
    fixture_t *fx = *state;
    dq_store_sync_t modes [] = {
        DQ_STORE_SYNC_FULL, DQ_STORE_SYNC_NORMAL, DQ_STORE_SYNC_OFF
    };
    for (size_t i = 0; i < 3; i++) {
        char err [512];
        dq_store_t *store = dq_store_open (fx->data, modes [i], err, sizeof err);
        if (!store)
            fail_msg ("open in mode %d: %s", (int) modes [i], err);
        dq_store_job_t job = s_plain_job (i + 1);
        assert_int_equal (dq_store_put_job (store, &job), 0);
        assert_int_equal (dq_store_commit (store), 0);
        dq_store_close (&store);
    }
    dq_store_t *store = s_open (fx);
    loaded_t loaded = { 0 };
    s_load (store, &loaded);
    assert_int_equal (loaded.njobs, 3);
    s_loaded_free (&loaded);
    dq_store_close (&store);
}

//  --------------------------------------------------------------------------
//  A large load: counts only, no deep copies

#define S_BIG_JOBS 100000

typedef struct {
    uint64_t jobs;
    uint64_t last_id;
    uint64_t parent_sum;
    uint64_t run_on_failure;
    uint64_t payload_bytes;
    bool order_ok;
} big_count_t;

static int
s_on_big_job (void *arg, const dq_store_job_t *job)
{
    big_count_t *count = arg;
    if (job->id <= count->last_id)
        count->order_ok = false;
    count->last_id = job->id;
    count->jobs++;
    for (uint32_t i = 0; i < job->nparents; i++) {
        count->parent_sum += job->parents [i];
        count->run_on_failure += job->run_on_failure [i];
        if (job->parents [i] >= job->id)
            count->order_ok = false;        //  parents come first
    }
    count->payload_bytes += job->payload_size;
    return 0;
}

static int
s_on_job_stop (void *arg, const dq_store_job_t *job)
{
    (void) job;
    int *seen = arg;
    return ++*seen == 10? -1: 0;
}

static void
test_store_loads_many_jobs (void **state)
{
    fixture_t *fx = *state;
    char err [512];
    //  OFF only to keep the setup light on a shared machine
    dq_store_t *store = dq_store_open (fx->data, DQ_STORE_SYNC_OFF, err, sizeof err);
    assert_non_null (store);
    uint64_t expected_parent_sum = 0, expected_rof = 0;
    for (uint64_t id = 1; id <= S_BIG_JOBS; id++) {
        dq_store_job_t job = s_plain_job (id);
        char payload [16];
        int len = snprintf (payload, sizeof payload, "job-%" PRIu64, id);
        job.payload = payload;
        job.payload_size = (size_t) len;
        uint64_t parents [2] = { id - 1, id / 2 };
        bool rof [2] = { id % 3 == 0, false };
        if (id > 2) {
            job.parents = parents;
            job.run_on_failure = rof;
            job.nparents = 2;
            expected_parent_sum += parents [0] + parents [1];
            expected_rof += rof [0];
        }
        assert_int_equal (dq_store_put_job (store, &job), 0);
        if (id % 10000 == 0)
            assert_int_equal (dq_store_commit (store), 0);
    }
    assert_int_equal (dq_store_commit (store), 0);
    dq_store_close (&store);

    store = s_open (fx);
    big_count_t count = { .order_ok = true };
    dq_store_loader_t loader = { s_on_big_job, NULL, NULL, &count };
    assert_int_equal (dq_store_load (store, &loader), 0);
    assert_int_equal (count.jobs, S_BIG_JOBS);
    assert_true (count.order_ok);
    assert_int_equal (count.parent_sum, expected_parent_sum);
    assert_int_equal (count.run_on_failure, expected_rof);
    assert_true (count.payload_bytes > 5 * S_BIG_JOBS);

    //  A loader that says stop stops the load
    int seen = 0;
    dq_store_loader_t stopper = { s_on_job_stop, NULL, NULL, &seen };
    assert_int_equal (dq_store_load (store, &stopper), -1);
    assert_int_equal (seen, 10);
    assert_non_null (strstr (dq_store_error (store), "stopped"));
    dq_store_close (&store);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_store_creates_schema_and_reopens,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_round_trips_every_field,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_updates_show_in_load,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_meta_get_set, setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_commit_groups_writes,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_checkpoints_in_background,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_syncs_asynchronously,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_lock_refuses_second_open,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_refuses_foreign_database,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_refuses_garbage_file,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_refuses_unknown_format_version,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_upgrades_format_version_1,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_upgrade_is_all_or_nothing,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_refuses_corrupt_database,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_clean_stop_skips_check,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_fails_stop_on_sqlite_error,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_recovers_after_crash,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_rejects_bad_arguments,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_opens_in_every_sync_mode,
                                         setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_loads_many_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown (test_store_finds_expired_jobs, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
