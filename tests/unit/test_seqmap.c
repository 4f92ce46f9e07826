/*  test_seqmap.c - unit tests for dq_seqmap.

    Random operations against a reference array; a sliding window (the
    broker's pattern: put at the back, remove at the front) keeps pages and
    entries bounded; puts below the lowest key; sparse keys far apart;
    iteration in key order while entries are removed and added; refused
    arguments leave the map unchanged.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dq_seqmap.h"

#define PAGE DQ_SEQMAP_PAGE

static uint64_t
s_rand (uint64_t *state)
{
    uint64_t x = (*state += 0x9e3779b97f4a7c15ULL);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

//  Values are addresses inside this array, so each is distinct and
//  checkable: value of key k (generation g) is &s_values [(k + g) % N].
#define N_VALUES 4096
static char s_values [N_VALUES];

static void *
s_value (uint64_t key, unsigned generation)
{
    return &s_values [(key + generation) % N_VALUES];
}

static void
test_seqmap_random_against_reference (void **state)
{
    (void) state;
    //  Keys in [base, base + SPAN): several pages, some left empty.
    enum { SPAN = 5 * PAGE + 17 };
    const uint64_t base = 7ULL * PAGE * 1000 + 3;
    unsigned *gen = calloc (SPAN, sizeof *gen);      //  0 = absent
    assert_non_null (gen);
    dq_seqmap_t *map = dq_seqmap_new ();
    assert_non_null (map);
    uint64_t rng = 42;
    size_t size = 0;
    for (int op = 0; op < 400000; op++) {
        uint64_t r = s_rand (&rng);
        //  Bias towards a moving band so whole pages empty and refill.
        uint64_t band = (uint64_t) (op / 20000) % 5;
        uint64_t i = r % 3? (band * PAGE + (r >> 8) % (PAGE + 40)) % SPAN: (r >> 8) % SPAN;
        uint64_t key = base + i;
        switch ((r >> 40) % 3) {
            case 0: {
                unsigned g = gen [i] + 1;
                assert_int_equal (dq_seqmap_put (map, key, s_value (key, g)), 0);
                if (!gen [i])
                    size++;
                gen [i] = g;
                break;
            }
            case 1: {
                void *v = dq_seqmap_remove (map, key);
                if (gen [i]) {
                    assert_ptr_equal (v, s_value (key, gen [i]));
                    gen [i] = 0;
                    size--;
                }
                else
                    assert_null (v);
                break;
            }
            default:
                assert_ptr_equal (dq_seqmap_get (map, key),
                                  gen [i]? s_value (key, gen [i]): NULL);
        }
        assert_int_equal (dq_seqmap_size (map), size);
    }
    //  A full iteration returns exactly the present keys, in order.
    uint64_t cursor = 0, key = 0, prev = 0, seen = 0;
    void *v;
    while ((v = dq_seqmap_next (map, &cursor, &key))) {
        assert_true (key >= base && key < base + SPAN);
        assert_true (seen == 0 || key > prev);
        assert_true (gen [key - base] != 0);
        assert_ptr_equal (v, s_value (key, gen [key - base]));
        prev = key;
        seen++;
    }
    assert_int_equal (seen, size);
    //  Keys outside the span are absent.
    assert_null (dq_seqmap_get (map, base - 1));
    assert_null (dq_seqmap_get (map, base + SPAN));
    assert_null (dq_seqmap_get (map, 0));
    assert_null (dq_seqmap_get (map, UINT64_MAX));
    dq_seqmap_destroy (&map);
    assert_null (map);
    free (gen);
}

//  The broker's pattern: ids handed out in order, each removed a while
//  later. Memory follows the live window, however far the ids go.
static void
test_seqmap_sliding_window_stays_bounded (void **state)
{
    (void) state;
    dq_seqmap_t *map = dq_seqmap_new ();
    const uint64_t window = 10 * PAGE;
    const uint64_t total = 3000 * PAGE;
    for (uint64_t k = 1; k <= total; k++) {
        assert_int_equal (dq_seqmap_put (map, k, s_value (k, 0)), 0);
        if (k > window) {
            uint64_t old = k - window;
            assert_ptr_equal (dq_seqmap_remove (map, old), s_value (old, 0));
        }
        if (k % 997 == 0) {
            assert_int_equal (dq_seqmap_size (map), k > window? window: k);
            assert_true (dq_seqmap_pages (map) <= window / PAGE + 1);
            assert_ptr_equal (dq_seqmap_get (map, k), s_value (k, 0));
            assert_null (dq_seqmap_get (map, k > window? k - window: 0));
        }
    }
    //  Drain: nothing left, no page kept.
    for (uint64_t k = total - window + 1; k <= total; k++)
        assert_non_null (dq_seqmap_remove (map, k));
    assert_int_equal (dq_seqmap_size (map), 0);
    assert_int_equal (dq_seqmap_pages (map), 0);
    uint64_t cursor = 0;
    assert_null (dq_seqmap_next (map, &cursor, NULL));
    //  And it is usable again afterwards, anywhere.
    assert_int_equal (dq_seqmap_put (map, 5, s_value (5, 0)), 0);
    assert_ptr_equal (dq_seqmap_get (map, 5), s_value (5, 0));
    dq_seqmap_destroy (&map);
}

//  Keys below the lowest (a store loaded out of order), far apart, and an
//  iteration that removes and adds as it goes.
static void
test_seqmap_out_of_order_sparse_and_iteration (void **state)
{
    (void) state;
    dq_seqmap_t *map = dq_seqmap_new ();
    const uint64_t keys [] = { 1000000, 999999, 5, 1ULL << 30, 3 * PAGE, 0,
                               (1ULL << 30) + 1, 2 * PAGE - 1 };
    const size_t nkeys = sizeof keys / sizeof keys [0];
    for (size_t i = 0; i < nkeys; i++)
        assert_int_equal (dq_seqmap_put (map, keys [i], s_value (keys [i], 1)), 0);
    assert_int_equal (dq_seqmap_size (map), nkeys);
    for (size_t i = 0; i < nkeys; i++)
        assert_ptr_equal (dq_seqmap_get (map, keys [i]), s_value (keys [i], 1));
    //  One page per distinct page number.
    assert_int_equal (dq_seqmap_pages (map), 5);

    //  Iterate: remove each key returned, and add one key behind the cursor
    //  (not returned) and one ahead of it (returned).
    const uint64_t sorted [] = { 0, 5, 2 * PAGE - 1, 3 * PAGE, 999999, 1000000,
                                 1ULL << 30, (1ULL << 30) + 1 };
    uint64_t cursor = 0, key;
    size_t n = 0;
    void *v;
    while ((v = dq_seqmap_next (map, &cursor, &key))) {
        if (n < nkeys)
            assert_int_equal (key, sorted [n]);
        else
            assert_int_equal (key, (1ULL << 31));
        assert_non_null (dq_seqmap_remove (map, key));
        if (key == 5) {
            assert_int_equal (dq_seqmap_put (map, 4, s_value (4, 0)), 0);
            assert_int_equal (dq_seqmap_put (map, 1ULL << 31, s_value (1ULL << 31, 0)), 0);
        }
        n++;
    }
    assert_int_equal (n, nkeys + 1);
    assert_int_equal (dq_seqmap_size (map), 1);
    assert_ptr_equal (dq_seqmap_get (map, 4), s_value (4, 0));
    assert_int_equal (dq_seqmap_pages (map), 1);
    dq_seqmap_destroy (&map);
}

static void
test_seqmap_refuses_bad_arguments (void **state)
{
    (void) state;
    dq_seqmap_t *map = dq_seqmap_new ();
    assert_int_equal (dq_seqmap_put (map, 10, s_value (10, 0)), 0);
    assert_int_equal (dq_seqmap_put (map, 11, NULL), -1);
    assert_int_equal (dq_seqmap_put (map, UINT64_MAX, s_value (1, 0)), -1);
    //  A key 2^34 or more away from the others would need a spine of
    //  gigabytes: refused, nothing changes.
    assert_int_equal (dq_seqmap_put (map, 10 + (1ULL << 34) + PAGE, s_value (2, 0)), -1);
    assert_int_equal (dq_seqmap_put (map, UINT64_MAX - 1, s_value (2, 0)), -1);
    assert_int_equal (dq_seqmap_size (map), 1);
    assert_int_equal (dq_seqmap_pages (map), 1);
    assert_null (dq_seqmap_get (map, 11));
    assert_null (dq_seqmap_remove (map, 11));
    assert_null (dq_seqmap_remove (map, 1ULL << 50));
    assert_ptr_equal (dq_seqmap_get (map, 10), s_value (10, 0));
    //  Replacing a value keeps the size.
    assert_int_equal (dq_seqmap_put (map, 10, s_value (10, 1)), 0);
    assert_int_equal (dq_seqmap_size (map), 1);
    assert_ptr_equal (dq_seqmap_get (map, 10), s_value (10, 1));
    dq_seqmap_destroy (&map);
    dq_seqmap_destroy (&map);        //  NULL-safe
    dq_seqmap_destroy (NULL);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_seqmap_random_against_reference),
        cmocka_unit_test (test_seqmap_sliding_window_stays_bounded),
        cmocka_unit_test (test_seqmap_out_of_order_sparse_and_iteration),
        cmocka_unit_test (test_seqmap_refuses_bad_arguments),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
