/*  test_idmap.c - unit tests for dq_idmap.

    Random operations against a reference (a presence array over a fixed set
    of keys), growth and shrink, deletion inside crafted collision clusters
    (including runs that spill past the last home slot), iteration that
    returns each entry exactly once while entries are removed or added, key
    0 and NULL rejected, and 2M entries.

    Crafting collisions needs the map's hash: s_hash and s_unhash below
    mirror dq_idmap.c (splitmix64's finalizer, home slot = top bits).
    test_idmap_iterates_in_hash_order checks that the copies agree.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dq_idmap.h"

static uint64_t
s_hash (uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t
s_unhash (uint64_t x)
{
    x ^= (x >> 31) ^ (x >> 62);
    x *= 0x319642b2d24d8ec3ULL;
    x ^= (x >> 27) ^ (x >> 54);
    x *= 0x96de1b173f119089ULL;
    x ^= (x >> 30) ^ (x >> 60);
    return x;
}

//  splitmix64 generator for test data.
static uint64_t
s_rand (uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return s_hash (*state);
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return (x > y) - (x < y);
}

//  Reference model: keys [i] is present iff present [i]; its value is
//  &values [2 * i + generation [i]] so replacement is visible.
typedef struct {
    size_t count;
    uint64_t *keys;             //  distinct, non-zero
    bool *present;
    unsigned char *generation;
    char *values;               //  2 * count bytes, only addresses used
    size_t live;
} model_t;

//  Index of key in the model (keys sorted), or count if not a model key.
static size_t
s_model_index (const model_t *model, uint64_t key)
{
    const uint64_t *hit = bsearch (&key, model->keys, model->count,
                                   sizeof (uint64_t), s_cmp_u64);
    return hit ? (size_t) (hit - model->keys) : model->count;
}

static void
s_model_init (model_t *model, uint64_t *keys, size_t count)
{
    qsort (keys, count, sizeof (uint64_t), s_cmp_u64);
    for (size_t i = 0; i < count; i++) {
        assert_true (keys [i] != 0);
        if (i > 0)
            assert_true (keys [i] != keys [i - 1]);
    }
    model->count = count;
    model->keys = keys;
    model->present = calloc (count, sizeof (bool));
    model->generation = calloc (count, 1);
    model->values = calloc (2 * count, 1);
    model->live = 0;
    assert_non_null (model->present);
    assert_non_null (model->generation);
    assert_non_null (model->values);
}

static void
s_model_free (model_t *model)
{
    free (model->present);
    free (model->generation);
    free (model->values);
    free (model->keys);
}

static void *
s_model_value (const model_t *model, size_t i)
{
    return &model->values [2 * i + model->generation [i]];
}

//  Every key's lookup, size, and one full iteration agree with the model.
static void
s_check (const dq_idmap_t *map, const model_t *model)
{
    assert_int_equal (dq_idmap_size (map), model->live);
    for (size_t i = 0; i < model->count; i++) {
        void *value = dq_idmap_get (map, model->keys [i]);
        if (model->present [i])
            assert_ptr_equal (value, s_model_value (model, i));
        else
            assert_null (value);
    }
    bool *seen = calloc (model->count + 1, sizeof (bool));
    assert_non_null (seen);
    size_t cursor = 0, visited = 0;
    uint64_t key;
    void *value;
    while ((value = dq_idmap_next (map, &cursor, &key))) {
        size_t i = s_model_index (model, key);
        assert_true (i < model->count);
        assert_true (model->present [i]);
        assert_false (seen [i]);
        seen [i] = true;
        assert_ptr_equal (value, s_model_value (model, i));
        visited++;
    }
    assert_int_equal (visited, model->live);
    free (seen);
}

static void
s_model_put (dq_idmap_t *map, model_t *model, size_t i)
{
    if (model->present [i])
        model->generation [i] ^= 1;     //  replace with a different value
    else
        model->live++;
    model->present [i] = true;
    assert_int_equal (dq_idmap_put (map, model->keys [i], s_model_value (model, i)), 0);
    assert_ptr_equal (dq_idmap_get (map, model->keys [i]), s_model_value (model, i));
}

static void
s_model_remove (dq_idmap_t *map, model_t *model, size_t i)
{
    void *value = dq_idmap_remove (map, model->keys [i]);
    if (model->present [i]) {
        assert_ptr_equal (value, s_model_value (model, i));
        model->present [i] = false;
        model->live--;
    }
    else
        assert_null (value);
    assert_null (dq_idmap_get (map, model->keys [i]));
}

//  A key whose hash has the given top 16 bits and random low bits: all such
//  keys share a home slot in any table of up to 65536 home slots.
static uint64_t
s_key_with_top (uint16_t top, uint64_t *seed)
{
    uint64_t hash;
    do
        hash = ((uint64_t) top << 48) | (s_rand (seed) >> 16);
    while (hash == 0);
    return s_unhash (hash);
}

static int
setup (void **state)
{
    dq_idmap_t *map = dq_idmap_new ();
    if (!map)
        return -1;
    *state = map;
    return 0;
}

static int
teardown (void **state)
{
    dq_idmap_t *map = *state;
    dq_idmap_destroy (&map);
    return 0;
}

static void
test_idmap_hash_copy_round_trips (void **state)
{
    (void) state;
    uint64_t seed = 1;
    assert_true (s_hash (0) == 0);
    for (int i = 0; i < 100000; i++) {
        uint64_t x = s_rand (&seed);
        assert_true (s_unhash (s_hash (x)) == x);
        assert_true (s_hash (s_unhash (x)) == x);
    }
}

static void
test_idmap_rejects_bad_input (void **state)
{
    dq_idmap_t *map = *state;
    char value;
    assert_int_equal (dq_idmap_put (map, 0, &value), -1);
    assert_int_equal (dq_idmap_put (map, 1, NULL), -1);
    assert_int_equal (dq_idmap_size (map), 0);
    assert_null (dq_idmap_get (map, 0));
    assert_null (dq_idmap_remove (map, 0));
    assert_null (dq_idmap_get (map, 1));
    assert_null (dq_idmap_remove (map, 1));

    assert_int_equal (dq_idmap_put (map, 1, &value), 0);
    assert_int_equal (dq_idmap_put (map, 0, &value), -1);
    assert_null (dq_idmap_get (map, 0));
    assert_null (dq_idmap_remove (map, 0));
    assert_int_equal (dq_idmap_size (map), 1);
    assert_ptr_equal (dq_idmap_get (map, 1), &value);

    //  Replacement keeps one entry.
    char other;
    assert_int_equal (dq_idmap_put (map, 1, &other), 0);
    assert_int_equal (dq_idmap_size (map), 1);
    assert_ptr_equal (dq_idmap_get (map, 1), &other);
    //  Extreme keys
    assert_int_equal (dq_idmap_put (map, UINT64_MAX, &value), 0);
    assert_ptr_equal (dq_idmap_get (map, UINT64_MAX), &value);
    uint64_t top = s_unhash (UINT64_MAX);       //  hash at the very end
    assert_int_equal (dq_idmap_put (map, top, &other), 0);
    assert_ptr_equal (dq_idmap_get (map, top), &other);
    assert_int_equal (dq_idmap_size (map), 3);

    //  NULL arguments
    size_t cursor = 0;
    assert_null (dq_idmap_next (map, NULL, NULL));
    assert_null (dq_idmap_next (NULL, &cursor, NULL));
    assert_int_equal (dq_idmap_put (NULL, 1, &value), -1);
    assert_null (dq_idmap_get (NULL, 1));
    assert_null (dq_idmap_remove (NULL, 1));
    assert_int_equal (dq_idmap_size (NULL), 0);
    assert_int_equal (dq_idmap_capacity (NULL), 0);
    dq_idmap_t *null_map = NULL;
    dq_idmap_destroy (&null_map);
    dq_idmap_destroy (NULL);
}

static void
test_idmap_iteration_end_is_sticky (void **state)
{
    dq_idmap_t *map = *state;
    size_t cursor = 0;
    assert_null (dq_idmap_next (map, &cursor, NULL));      //  empty map
    assert_null (dq_idmap_next (map, &cursor, NULL));

    char a, b;
    assert_int_equal (dq_idmap_put (map, 10, &a), 0);
    assert_int_equal (dq_idmap_put (map, 20, &b), 0);
    cursor = 0;
    uint64_t key = 0, sum = 0;
    int count = 0;
    void *value;
    while ((value = dq_idmap_next (map, &cursor, &key))) {
        assert_ptr_equal (value, key == 10 ? (void *) &a : (void *) &b);
        sum += key;
        count++;
    }
    assert_int_equal (count, 2);
    assert_int_equal (sum, 30);
    assert_null (dq_idmap_next (map, &cursor, &key));
    assert_null (dq_idmap_next (map, &cursor, NULL));
    //  key may be NULL
    cursor = 0;
    assert_non_null (dq_idmap_next (map, &cursor, NULL));
}

static void
test_idmap_iterates_in_hash_order (void **state)
{
    dq_idmap_t *map = *state;
    uint64_t seed = 8;
    static char value;
    for (int i = 0; i < 5000; i++) {
        uint64_t key = s_rand (&seed) | 1;
        assert_int_equal (dq_idmap_put (map, key, &value), 0);
    }
    size_t cursor = 0, count = 0;
    uint64_t key, last = 0;
    while (dq_idmap_next (map, &cursor, &key)) {
        assert_true (s_hash (key) > last);      //  our hash copy is the map's
        last = s_hash (key);
        count++;
    }
    assert_int_equal (count, dq_idmap_size (map));
}

static void
test_idmap_random_ops_match_model (void **state)
{
    dq_idmap_t *map = *state;
    uint64_t seed = 2025;
    //  Keys: small sequential ids (like the broker's), random 64-bit keys,
    //  and a block of crafted collisions.
    const size_t count = 30000;
    uint64_t *keys = malloc (count * sizeof (uint64_t));
    assert_non_null (keys);
    for (size_t i = 0; i < 10000; i++)
        keys [i] = i + 1;
    for (size_t i = 10000; i < 29000; i++) {
        do
            keys [i] = s_rand (&seed);
        while (keys [i] <= 10000);
    }
    for (size_t i = 29000; i < count; i++)
        keys [i] = s_key_with_top ((uint16_t) (0x7000 + i % 3), &seed);
    model_t model;
    s_model_init (&model, keys, count);

    for (size_t round = 0; round < 400000; round++) {
        size_t i = s_rand (&seed) % count;
        //  Phases: mostly inserting, then mixed, then mostly removing, so the
        //  map grows and shrinks through several capacities.
        unsigned phase = (unsigned) ((round / 50000) % 4);
        unsigned put_percent = phase == 0 ? 80 : phase == 1 ? 50 : phase == 2 ? 20 : 50;
        if (s_rand (&seed) % 100 < put_percent)
            s_model_put (map, &model, i);
        else
            s_model_remove (map, &model, i);
        if (round % 25000 == 0)
            s_check (map, &model);
    }
    s_check (map, &model);
    for (size_t i = 0; i < count; i++)
        s_model_remove (map, &model, i);
    s_check (map, &model);
    assert_true (dq_idmap_capacity (map) <= 32);
    s_model_free (&model);
}

static void
test_idmap_grows_and_shrinks (void **state)
{
    dq_idmap_t *map = *state;
    static char value;
    size_t initial = dq_idmap_capacity (map);
    assert_true (initial > 0 && initial <= 32);

    const uint64_t count = 200000;
    for (uint64_t key = 1; key <= count; key++) {
        assert_int_equal (dq_idmap_put (map, key, &value), 0);
        //  Load factor stays at or under 0.7 (capacity counts the tail too,
        //  so this is looser than the home-slot bound, never tighter).
        assert_true (dq_idmap_size (map) * 10 <= dq_idmap_capacity (map) * 7);
    }
    size_t peak = dq_idmap_capacity (map);
    assert_true (peak >= count);
    assert_true (peak <= 4 * count);

    //  Drain: capacity follows the size down (under 1/8 full triggers a
    //  rebuild at most half full), never below the initial table.
    for (uint64_t key = 1; key <= count; key++) {
        assert_ptr_equal (dq_idmap_remove (map, key), &value);
        size_t size = dq_idmap_size (map);
        assert_true (dq_idmap_capacity (map) <= 16 * (size + 1) + 64);
    }
    assert_int_equal (dq_idmap_size (map), 0);
    assert_true (dq_idmap_capacity (map) <= initial);

    //  Grow again after shrinking.
    for (uint64_t key = 1; key <= 1000; key++)
        assert_int_equal (dq_idmap_put (map, key * 7919, &value), 0);
    for (uint64_t key = 1; key <= 1000; key++)
        assert_ptr_equal (dq_idmap_get (map, key * 7919), &value);
    assert_null (dq_idmap_get (map, 7918));
}

//  Deletion inside long runs: keys crafted to share a home slot, in
//  adjacent homes (so runs merge), and at the last home slot (so runs spill
//  past it into the tail). After every removal every other key must still
//  be found, i.e. backward shifting left no hole in any run.
static void
test_idmap_delete_within_collisions (void **state)
{
    dq_idmap_t *map = *state;
    uint64_t seed = 31337;
    const size_t count = 1200;
    uint64_t *keys = malloc (count * sizeof (uint64_t));
    assert_non_null (keys);
    for (size_t i = 0; i < count; i++) {
        uint16_t top;
        switch (i % 6) {
            case 0:  top = 0x0000; break;           //  first home slot
            case 1:  top = 0x4000; break;           //  one shared home
            case 2:  top = 0x4001; break;           //  ... and its neighbours
            case 3:  top = 0x4002; break;
            case 4:  top = 0xffff; break;           //  last home: spills
            default: top = (uint16_t) (s_rand (&seed) >> 48); break;
        }
        keys [i] = s_key_with_top (top, &seed);
    }
    model_t model;
    s_model_init (&model, keys, count);
    size_t *order = malloc (count * sizeof (size_t));
    assert_non_null (order);

    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < count; i++)
            s_model_put (map, &model, i);
        s_check (map, &model);
        //  200 entries share the last home slot, so the tail past the home
        //  slots (a power of two, at most 0.7 full) had to grow to hold them.
        size_t home_slots = 16;
        while (home_slots * 7 < count * 10)
            home_slots *= 2;
        assert_true (dq_idmap_capacity (map) >= home_slots + 199);

        for (size_t i = 0; i < count; i++)
            order [i] = i;
        for (size_t i = count - 1; i > 0; i--) {
            size_t j = s_rand (&seed) % (i + 1);
            size_t t = order [i]; order [i] = order [j]; order [j] = t;
        }
        //  Remove all (the table shrinks on the way); full check after
        //  each of the first removals and every 50 after.
        for (size_t n = 0; n < count; n++) {
            s_model_remove (map, &model, order [n]);
            if (n < 100 || n % 50 == 0)
                s_check (map, &model);
        }
        s_check (map, &model);
    }
    free (order);
    s_model_free (&model);
}

//  Removing the entry just returned, while the table shrinks underneath:
//  every entry is still visited exactly once.
static void
test_idmap_remove_while_iterating (void **state)
{
    dq_idmap_t *map = *state;
    const size_t count = 100000;
    char *values = calloc (count + 1, 1);
    unsigned char *seen = calloc (count + 1, 1);
    assert_non_null (values);
    assert_non_null (seen);
    for (uint64_t key = 1; key <= count; key++)
        assert_int_equal (dq_idmap_put (map, key, &values [key]), 0);
    size_t peak = dq_idmap_capacity (map);

    //  First pass removes the odd keys only.
    size_t cursor = 0;
    uint64_t key;
    void *value;
    while ((value = dq_idmap_next (map, &cursor, &key))) {
        assert_true (key >= 1 && key <= count);
        assert_ptr_equal (value, &values [key]);
        assert_int_equal (seen [key], 0);
        seen [key] = 1;
        if (key % 2)
            assert_ptr_equal (dq_idmap_remove (map, key), value);
    }
    for (uint64_t k = 1; k <= count; k++)
        assert_int_equal (seen [k], 1);
    assert_int_equal (dq_idmap_size (map), count / 2);

    //  Second pass removes everything it visits: the map shrinks to the
    //  minimum during the iteration.
    cursor = 0;
    size_t visited = 0;
    while ((value = dq_idmap_next (map, &cursor, &key))) {
        assert_int_equal (key % 2, 0);
        assert_int_equal (seen [key], 1);
        seen [key] = 2;
        assert_ptr_equal (dq_idmap_remove (map, key), value);
        visited++;
    }
    assert_int_equal (visited, count / 2);
    assert_int_equal (dq_idmap_size (map), 0);
    assert_true (dq_idmap_capacity (map) < peak / 100);
    free (seen);
    free (values);
}

//  Insertions during an iteration (forcing growth): entries present
//  throughout are visited exactly once, new ones at most once.
static void
test_idmap_insert_while_iterating (void **state)
{
    dq_idmap_t *map = *state;
    const size_t count = 20000;
    unsigned char *seen = calloc (4 * count + 1, 1);
    assert_non_null (seen);
    static char value;
    for (uint64_t key = 1; key <= count; key++)
        assert_int_equal (dq_idmap_put (map, key, &value), 0);
    size_t before = dq_idmap_capacity (map);

    size_t cursor = 0;
    uint64_t key, added = count;
    while (dq_idmap_next (map, &cursor, &key)) {
        assert_true (key >= 1 && key <= 4 * count);
        assert_int_equal (seen [key], 0);
        seen [key] = 1;
        //  While iterating the old keys, add up to 3 new ones per step.
        for (int n = 0; n < 3 && added < 4 * count; n++) {
            added++;
            assert_int_equal (dq_idmap_put (map, added, &value), 0);
        }
        //  Replacing a value is harmless too.
        assert_int_equal (dq_idmap_put (map, key, &value), 0);
    }
    assert_true (dq_idmap_capacity (map) > before);
    for (uint64_t k = 1; k <= count; k++)
        assert_int_equal (seen [k], 1);
    assert_int_equal (dq_idmap_size (map), 4 * count);
    free (seen);
}

//  The broker's scale: 2M sequential ids, then 2M random keys.
static void
test_idmap_two_million (void **state)
{
    dq_idmap_t *map = *state;
    const uint64_t count = 2000000;
    char *values = malloc (count);
    assert_non_null (values);
    for (uint64_t key = 1; key <= count; key++)
        assert_int_equal (dq_idmap_put (map, key, &values [key - 1]), 0);
    assert_int_equal (dq_idmap_size (map), count);
    //  Compact: 16-byte slots, at most 1 / 0.35 slots per entry (just after
    //  a doubling) plus a small tail.
    size_t bytes = dq_idmap_capacity (map) * 16;
    assert_true (bytes <= count * 16 * 100 / 35 + 4096);
    for (uint64_t key = 1; key <= count; key++)
        assert_ptr_equal (dq_idmap_get (map, key), &values [key - 1]);
    assert_null (dq_idmap_get (map, count + 1));

    size_t cursor = 0, visited = 0;
    uint64_t key;
    void *value;
    while ((value = dq_idmap_next (map, &cursor, &key))) {
        assert_ptr_equal (value, &values [key - 1]);
        visited++;
    }
    assert_int_equal (visited, count);
    for (uint64_t key2 = 1; key2 <= count; key2++)
        assert_ptr_equal (dq_idmap_remove (map, key2), &values [key2 - 1]);
    assert_int_equal (dq_idmap_size (map), 0);
    assert_true (dq_idmap_capacity (map) <= 32);

    uint64_t seed = 4242;
    uint64_t *keys = malloc (count * sizeof (uint64_t));
    assert_non_null (keys);
    for (uint64_t i = 0; i < count; i++) {
        keys [i] = s_rand (&seed) | 1;
        assert_int_equal (dq_idmap_put (map, keys [i], &values [i]), 0);
    }
    //  Random keys may repeat (with negligible odds); compare counts via a
    //  sort to stay exact.
    qsort (keys, count, sizeof (uint64_t), s_cmp_u64);
    size_t distinct = 0;
    for (uint64_t i = 0; i < count; i++)
        if (i == 0 || keys [i] != keys [i - 1])
            distinct++;
    assert_int_equal (dq_idmap_size (map), distinct);
    for (uint64_t i = 0; i < count; i++) {
        if (i == 0 || keys [i] != keys [i - 1])
            assert_non_null (dq_idmap_remove (map, keys [i]));
        else
            assert_null (dq_idmap_remove (map, keys [i]));
    }
    assert_int_equal (dq_idmap_size (map), 0);
    free (keys);
    free (values);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_idmap_hash_copy_round_trips),
        cmocka_unit_test_setup_teardown (test_idmap_rejects_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_iteration_end_is_sticky, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_iterates_in_hash_order, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_random_ops_match_model, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_grows_and_shrinks, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_delete_within_collisions, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_remove_while_iterating, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_insert_while_iterating, setup, teardown),
        cmocka_unit_test_setup_teardown (test_idmap_two_million, setup, teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
