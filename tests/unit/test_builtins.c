/*  test_builtins.c - the built-in job types, called directly: echo, sleep
    (payload parsing and abandon), fail, sha256 (known digests), concat.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dq_builtins.h"

typedef struct {
    atomic_bool abandoned;
    dq_task_t task;
    dq_result_t result;
} s_fix_t;

static int
setup (void **state)
{
    s_fix_t *f = calloc (1, sizeof *f);
    assert_non_null (f);
    atomic_init (&f->abandoned, false);
    f->task.id = "j-1";
    f->task.attempt = 1;
    f->task.abandoned = &f->abandoned;
    f->task.abandon_fd = -1;
    *state = f;
    return 0;
}

static int
teardown (void **state)
{
    s_fix_t *f = *state;
    free (f->result.output);
    free (f->result.error);
    free (f);
    return 0;
}

static int
s_call (s_fix_t *f, const char *type, const void *payload, size_t size)
{
    free (f->result.output);
    free (f->result.error);
    memset (&f->result, 0, sizeof f->result);
    f->task.type = type;
    f->task.payload = payload;
    f->task.payload_size = size;
    dq_handler_fn *fn = dq_builtins_find (type, NULL);
    assert_non_null (fn);
    return fn (&f->task, NULL, &f->result);
}

static void
test_builtins_table (void **state)
{
    (void) state;
    int flags = -1;
    assert_non_null (dq_builtins_find ("echo", &flags));
    assert_int_equal (flags, DQ_WORKER_INLINE);
    assert_non_null (dq_builtins_find ("sleep", &flags));
    assert_int_equal (flags, 0);
    assert_null (dq_builtins_find ("nope", &flags));
    assert_null (dq_builtins_find (NULL, &flags));
    const char *const *types = dq_builtins_types ();
    int n = 0;
    while (types [n]) {
        assert_non_null (dq_builtins_find (types [n], NULL));
        n++;
    }
    assert_int_equal (n, 5);
    //  Registering twice fails on the first duplicate.
    dq_worker_t *w = dq_worker_new ("tcp://127.0.0.1:1", 1);
    assert_non_null (w);
    assert_int_equal (dq_builtins_register (w), 0);
    assert_int_equal (dq_builtins_register (w), -1);
    dq_worker_destroy (&w);
}

static void
test_builtins_echo (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_call (f, "echo", "a\0b", 3), 0);
    assert_int_equal (f->result.output_size, 3);
    assert_memory_equal (f->result.output, "a\0b", 3);
    assert_int_equal (s_call (f, "echo", NULL, 0), 0);
    assert_int_equal (f->result.output_size, 0);
}

static void
test_builtins_sha256 (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_call (f, "sha256", "", 0), 0);
    assert_int_equal (f->result.output_size, 64);
    assert_memory_equal (f->result.output,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 64);
    assert_int_equal (s_call (f, "sha256", "abc", 3), 0);
    assert_memory_equal (f->result.output,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", 64);
}

static void
test_builtins_fail (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_call (f, "fail", "disk\0full", 9), -1);
    assert_string_equal (f->result.error, "disk?full");
    assert_int_equal (s_call (f, "fail", NULL, 0), -1);
    assert_string_equal (f->result.error, "failed as asked");
    char *big = malloc (10000);
    memset (big, 'x', 10000);
    assert_int_equal (s_call (f, "fail", big, 10000), -1);
    assert_int_equal (strlen (f->result.error), DQ_WORKER_ERROR_MAX);
    free (big);
}

static void
test_builtins_concat (void **state)
{
    s_fix_t *f = *state;
    dq_parent_t parents [] = {
        { "p-1", "a", "one ", 4 }, { "p-2", NULL, NULL, 0 }, { "p-3", "c", "three", 5 },
    };
    f->task.parents = parents;
    f->task.nparents = 3;
    assert_int_equal (s_call (f, "concat", "ignored", 7), 0);
    assert_int_equal (f->result.output_size, 9);
    assert_memory_equal (f->result.output, "one three", 9);
    f->task.nparents = 0;
    assert_int_equal (s_call (f, "concat", NULL, 0), 0);
    assert_int_equal (f->result.output_size, 0);
}

static void
test_builtins_sleep_parse (void **state)
{
    s_fix_t *f = *state;
    assert_int_equal (s_call (f, "sleep", "0", 1), 0);
    assert_int_equal (f->result.output_size, 0);
    assert_int_equal (s_call (f, "sleep", " 5\n", 3), 0);
    const char *bad [] = { "", "abc", "-5", "1.5", "5ms", "1 2", "99999999999",
                           "86400001" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        assert_int_equal (s_call (f, "sleep", bad [i], strlen (bad [i])), -1);
        assert_non_null (strstr (f->result.error, "whole number of milliseconds"));
    }
}

typedef struct {
    s_fix_t *f;
    int rc;
} s_bg_t;

static void *
s_bg_sleep (void *arg)
{
    s_bg_t *bg = arg;
    bg->rc = s_call (bg->f, "sleep", "86400000", 8);
    return NULL;
}

//  A day-long sleep returns as soon as it is abandoned, by fd or by flag.
static void
test_builtins_sleep_abandon (void **state)
{
    s_fix_t *f = *state;
    for (int use_fd = 0; use_fd < 2; use_fd++) {
        atomic_store (&f->abandoned, false);
        int efd = use_fd? eventfd (0, EFD_CLOEXEC): -1;
        f->task.abandon_fd = efd;
        s_bg_t bg = { f, 0 };
        pthread_t thread;
        assert_int_equal (pthread_create (&thread, NULL, s_bg_sleep, &bg), 0);
        atomic_store (&f->abandoned, true);
        if (efd >= 0) {
            uint64_t one = 1;
            assert_int_equal (write (efd, &one, sizeof one), sizeof one);
        }
        pthread_join (thread, NULL);
        assert_int_equal (bg.rc, -1);
        assert_string_equal (f->result.error, "abandoned");
        if (efd >= 0)
            close (efd);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_builtins_table),
        cmocka_unit_test_setup_teardown (test_builtins_echo, setup, teardown),
        cmocka_unit_test_setup_teardown (test_builtins_sha256, setup, teardown),
        cmocka_unit_test_setup_teardown (test_builtins_fail, setup, teardown),
        cmocka_unit_test_setup_teardown (test_builtins_concat, setup, teardown),
        cmocka_unit_test_setup_teardown (test_builtins_sleep_parse, setup, teardown),
        cmocka_unit_test_setup_teardown (test_builtins_sleep_abandon, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
