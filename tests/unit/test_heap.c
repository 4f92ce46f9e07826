/*  test_heap.c - unit tests for dq_heap.

    Checks ordering against qsort, ties, removal and re-keying at arbitrary
    positions (heap invariant and every stored index verified after each
    step), a 1M push/pop run, and that the array shrinks as the heap drains.
    Random data comes from a seeded generator, so runs are reproducible.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "dq_heap.h"

typedef struct {
    int64_t key;                //  ordering key
    size_t pos;                 //  maintained by s_setpos
    size_t id;                  //  index in the test's array
} item_t;

static bool
s_less (const void *a, const void *b)
{
    return ((const item_t *) a)->key < ((const item_t *) b)->key;
}

static void
s_setpos (void *item, size_t pos)
{
    ((item_t *) item)->pos = pos;
}

//  splitmix64: small, seedable, good enough for test data.
static uint64_t
s_rand (uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int
s_cmp_int64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

//  Heap property at every node, and every item knows its position.
static void
s_check (const dq_heap_t *heap)
{
    size_t size = dq_heap_size (heap);
    for (size_t pos = 0; pos < size; pos++) {
        item_t *item = dq_heap_at (heap, pos);
        assert_non_null (item);
        assert_int_equal (item->pos, pos);
        if (pos > 0) {
            item_t *parent = dq_heap_at (heap, (pos - 1) / 2);
            assert_false (s_less (item, parent));
        }
    }
    assert_null (dq_heap_at (heap, size));
}

static item_t *
s_items_new (size_t count, uint64_t seed, int64_t modulo)
{
    item_t *items = calloc (count, sizeof (item_t));
    assert_non_null (items);
    for (size_t i = 0; i < count; i++) {
        uint64_t r = s_rand (&seed);
        items [i].key = modulo ? (int64_t) (r % (uint64_t) modulo) : (int64_t) r;
        items [i].pos = DQ_HEAP_NONE;
        items [i].id = i;
    }
    return items;
}

static int
setup (void **state)
{
    dq_heap_t *heap = dq_heap_new (s_less, s_setpos);
    if (!heap)
        return -1;
    *state = heap;
    return 0;
}

static int
teardown (void **state)
{
    dq_heap_t *heap = *state;
    dq_heap_destroy (&heap);
    return 0;
}

static void
test_heap_rejects_bad_input (void **state)
{
    (void) state;
    assert_null (dq_heap_new (NULL, s_setpos));
    dq_heap_t *heap = NULL;
    dq_heap_destroy (&heap);            //  NULL-safe
    dq_heap_destroy (NULL);

    heap = dq_heap_new (s_less, NULL);  //  setpos is optional
    assert_non_null (heap);
    assert_int_equal (dq_heap_push (heap, NULL), -1);
    assert_int_equal (dq_heap_size (heap), 0);
    assert_null (dq_heap_peek (heap));
    assert_null (dq_heap_pop (heap));
    assert_null (dq_heap_remove (heap, 0));
    assert_null (dq_heap_remove (heap, DQ_HEAP_NONE));
    assert_null (dq_heap_at (heap, 0));
    dq_heap_update (heap, 0);           //  out of range: no-op
    dq_heap_update (heap, DQ_HEAP_NONE);

    item_t a = { .key = 2 }, b = { .key = 1 };
    assert_int_equal (dq_heap_push (heap, &a), 0);
    assert_int_equal (dq_heap_push (heap, &b), 0);
    assert_ptr_equal (dq_heap_peek (heap), &b);
    assert_null (dq_heap_remove (heap, 2));
    assert_int_equal (dq_heap_size (heap), 2);
    assert_ptr_equal (dq_heap_pop (heap), &b);
    assert_ptr_equal (dq_heap_pop (heap), &a);
    assert_null (dq_heap_pop (heap));
    dq_heap_destroy (&heap);
    assert_null (heap);
    dq_heap_destroy (&heap);            //  twice is harmless

    //  NULL self everywhere
    assert_int_equal (dq_heap_push (NULL, &a), -1);
    assert_null (dq_heap_peek (NULL));
    assert_null (dq_heap_pop (NULL));
    assert_null (dq_heap_remove (NULL, 0));
    dq_heap_update (NULL, 0);
    assert_int_equal (dq_heap_size (NULL), 0);
    assert_null (dq_heap_at (NULL, 0));
    assert_int_equal (dq_heap_capacity (NULL), 0);
}

static void
test_heap_orders_like_qsort (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 20000;
    item_t *items = s_items_new (count, 42, 0);
    int64_t *sorted = malloc (count * sizeof (int64_t));
    assert_non_null (sorted);
    for (size_t i = 0; i < count; i++) {
        sorted [i] = items [i].key;
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
        assert_true (items [i].pos < dq_heap_size (heap));
    }
    s_check (heap);
    qsort (sorted, count, sizeof (int64_t), s_cmp_int64);

    for (size_t i = 0; i < count; i++) {
        item_t *top = dq_heap_peek (heap);
        item_t *item = dq_heap_pop (heap);
        assert_ptr_equal (item, top);
        assert_non_null (item);
        assert_true (item->key == sorted [i]);
        assert_int_equal (item->pos, DQ_HEAP_NONE);
        if (i % 1000 == 0)
            s_check (heap);
    }
    assert_int_equal (dq_heap_size (heap), 0);
    assert_null (dq_heap_pop (heap));
    free (sorted);
    free (items);
}

static void
test_heap_handles_ties (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 5000;
    item_t *items = s_items_new (count, 7, 4);     //  keys 0..3 only
    bool *seen = calloc (count, sizeof (bool));
    assert_non_null (seen);
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    s_check (heap);

    int64_t last = INT64_MIN;
    for (size_t i = 0; i < count; i++) {
        item_t *item = dq_heap_pop (heap);
        assert_non_null (item);
        assert_true (item->key >= last);
        assert_false (seen [item->id]);             //  each item exactly once
        seen [item->id] = true;
        last = item->key;
    }
    assert_null (dq_heap_pop (heap));

    //  All keys equal
    for (size_t i = 0; i < 100; i++) {
        items [i].key = 5;
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    }
    s_check (heap);
    while (dq_heap_size (heap) > 50)
        assert_non_null (dq_heap_remove (heap, dq_heap_size (heap) / 2));
    s_check (heap);
    free (seen);
    free (items);
}

static void
test_heap_remove_keeps_invariant (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 3000;
    uint64_t seed = 99;
    item_t *items = s_items_new (count, 1234, 1000);
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    s_check (heap);

    //  Remove items in random order through their stored index, including
    //  the root and the last slot.
    size_t live = count;
    size_t *order = malloc (count * sizeof (size_t));
    assert_non_null (order);
    for (size_t i = 0; i < count; i++)
        order [i] = i;
    for (size_t i = count - 1; i > 0; i--) {
        size_t j = s_rand (&seed) % (i + 1);
        size_t t = order [i]; order [i] = order [j]; order [j] = t;
    }
    for (size_t i = 0; i < count; i++) {
        if ((i == 10 || i == 20) && live > 0) {
            //  Also take the root once and the last slot once.
            size_t pos = i == 10 ? 0 : live - 1;
            item_t *edge = dq_heap_at (heap, pos);
            assert_ptr_equal (dq_heap_remove (heap, pos), edge);
            assert_int_equal (edge->pos, DQ_HEAP_NONE);
            live--;
            s_check (heap);
        }
        item_t *item = &items [order [i]];
        if (item->pos == DQ_HEAP_NONE)
            continue;                   //  already taken as root or last
        assert_ptr_equal (dq_heap_remove (heap, item->pos), item);
        assert_int_equal (item->pos, DQ_HEAP_NONE);
        live--;
        assert_int_equal (dq_heap_size (heap), live);
        s_check (heap);
    }
    assert_int_equal (dq_heap_size (heap), 0);

    //  Mix removal with pushes: pop order must stay sorted.
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    for (size_t i = 0; i < count; i += 3)
        assert_ptr_equal (dq_heap_remove (heap, items [i].pos), &items [i]);
    s_check (heap);
    int64_t last = INT64_MIN;
    item_t *item;
    while ((item = dq_heap_pop (heap))) {
        assert_true (item->key >= last);
        assert_true (item->id % 3 != 0);
        last = item->key;
    }
    free (order);
    free (items);
}

static void
test_heap_update_moves_up_and_down (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 2000;
    uint64_t seed = 5;
    item_t *items = s_items_new (count, 77, 100000);
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);

    //  Decrease a key below everything: it must become the root.
    items [1500].key = -1;
    dq_heap_update (heap, items [1500].pos);
    assert_ptr_equal (dq_heap_peek (heap), &items [1500]);
    s_check (heap);
    //  Increase the root's key above everything: it must sink to a leaf.
    items [1500].key = 1000000;
    dq_heap_update (heap, 0);
    assert_true (items [1500].pos >= count / 2);
    assert_true (dq_heap_peek (heap) != &items [1500]);
    s_check (heap);
    //  Unchanged key: nothing moves.
    size_t pos = items [3].pos;
    dq_heap_update (heap, pos);
    assert_int_equal (items [3].pos, pos);

    for (size_t round = 0; round < 20000; round++) {
        item_t *item = &items [s_rand (&seed) % count];
        int64_t delta = (int64_t) (s_rand (&seed) % 2001) - 1000;
        item->key += delta;
        dq_heap_update (heap, item->pos);
        if (round % 500 == 0)
            s_check (heap);
    }
    s_check (heap);
    int64_t last = INT64_MIN;
    for (size_t i = 0; i < count; i++) {
        item_t *item = dq_heap_pop (heap);
        assert_non_null (item);
        assert_true (item->key >= last);
        last = item->key;
    }
    free (items);
}

static void
test_heap_million_push_pop (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 1000000;
    item_t *items = s_items_new (count, 2024, 0);
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    assert_int_equal (dq_heap_size (heap), count);
    assert_true (dq_heap_capacity (heap) >= count);
    assert_true (dq_heap_capacity (heap) <= 2 * count);

    int64_t last = INT64_MIN;
    for (size_t i = 0; i < count; i++) {
        item_t *item = dq_heap_pop (heap);
        assert_non_null (item);
        assert_true (item->key >= last);
        last = item->key;
    }
    assert_int_equal (dq_heap_size (heap), 0);
    //  Memory followed the drain back down to the minimum.
    assert_true (dq_heap_capacity (heap) <= 16);
    free (items);
}

static void
test_heap_shrinks_as_it_drains (void **state)
{
    dq_heap_t *heap = *state;
    const size_t count = 100000;
    uint64_t seed = 11;
    item_t *items = s_items_new (count, 3, 0);
    for (size_t i = 0; i < count; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    size_t peak = dq_heap_capacity (heap);
    assert_true (peak >= count);

    //  Drain by random removal: capacity stays within 4x the size (plus the
    //  minimum) at every step.
    while (dq_heap_size (heap) > 0) {
        size_t size = dq_heap_size (heap);
        assert_non_null (dq_heap_remove (heap, s_rand (&seed) % size));
        size = dq_heap_size (heap);
        assert_true (dq_heap_capacity (heap) <= 4 * (size + 1) || dq_heap_capacity (heap) <= 16);
    }
    assert_true (dq_heap_capacity (heap) <= 16);

    //  And it grows again after shrinking.
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal (dq_heap_push (heap, &items [i]), 0);
    s_check (heap);
    assert_true (dq_heap_capacity (heap) >= 1000);
    while (dq_heap_pop (heap))
        ;
    free (items);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_heap_rejects_bad_input),
        cmocka_unit_test_setup_teardown (test_heap_orders_like_qsort, setup, teardown),
        cmocka_unit_test_setup_teardown (test_heap_handles_ties, setup, teardown),
        cmocka_unit_test_setup_teardown (test_heap_remove_keeps_invariant, setup, teardown),
        cmocka_unit_test_setup_teardown (test_heap_update_moves_up_and_down, setup, teardown),
        cmocka_unit_test_setup_teardown (test_heap_million_push_pop, setup, teardown),
        cmocka_unit_test_setup_teardown (test_heap_shrinks_as_it_drains, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
