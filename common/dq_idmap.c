/*  dq_idmap.c - compact hash map from 64-bit ids to borrowed pointers.

    Layout: one array of 16-byte slots {hash, value}. A slot stores the hash
    of its key rather than the key: the hash (splitmix64's finalizer) is a
    bijection on 64 bits that maps only 0 to 0, so hash 0 marks an empty
    slot, equal hashes mean equal keys, and the key is recovered by
    inverting the hash when an iteration asks for it.

    Ordered linear probing (Amble and Knuth's ordered hash table, which is
    Robin Hood hashing with linear probing): the home slot of a hash is its
    top bits, so homes rise with hashes, and the whole array is kept sorted
    by hash with empty slots in between. Invariants:

      - every entry sits at or after its home, with no empty slot between;
      - occupied slots are in strictly increasing hash order.

    Probing never wraps around: an entry whose run passes the last home slot
    spills into a short tail of extra slots past `capacity`, grown on demand.
    Consequences:

      - a lookup stops at the first hash above its own, so misses are short;
      - a removal shifts the rest of its run back by one slot (backward-shift
        deletion), so there are no tombstones and no probe lengths creep up;
      - a rebuild at another capacity is one linear merge, no rehash probes;
      - iteration walks hashes in increasing order and its cursor is the last
        hash returned, which no insertion, removal or rebuild invalidates.

    It does not own values, lock, or allocate per entry.
*/
#include "dq_idmap.h"
#include "dq_mem.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

//  The iteration cursor holds a 64-bit hash in a size_t.
_Static_assert (sizeof (size_t) >= sizeof (uint64_t),
                "dq_idmap_next needs a 64-bit size_t");

//  Home slots in a new or shrunk map (a power of two).
#define DQ_IDMAP_CAPACITY_MIN 16
//  Smallest overflow tail past the home slots; grows by doubling when a run
//  would spill past it (rare: at load 0.7 runs are a few slots long).
#define DQ_IDMAP_TAIL_MIN     16

typedef struct {
    uint64_t hash;              //  hash of the key; 0 = empty slot
    void *value;                //  borrowed, never NULL in a used slot
} s_slot_t;

struct _dq_idmap_t {
    s_slot_t *slots;            //  sorted by hash, `length` slots
    size_t capacity;            //  home slots, a power of two
    size_t length;              //  slots allocated: capacity + tail
    unsigned shift;             //  64 - log2 (capacity): hash >> shift = home
    size_t size;                //  entries
};

//  splitmix64's finalizer (Steele, Lea, Flood): a bijection that maps 0, and
//  only 0, to 0. Sequential ids come out well spread in the top bits.
static inline uint64_t
s_hash (uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

//  Inverse of s_hash: undo each step in reverse. x ^= x >> s is undone by
//  x ^= x >> s ^ x >> 2s (for s >= 22); each odd multiplier by its inverse
//  mod 2^64.
static inline uint64_t
s_unhash (uint64_t x)
{
    x ^= (x >> 31) ^ (x >> 62);
    x *= 0x319642b2d24d8ec3ULL;
    x ^= (x >> 27) ^ (x >> 54);
    x *= 0x96de1b173f119089ULL;
    x ^= (x >> 30) ^ (x >> 60);
    return x;
}

static inline size_t
s_home (const dq_idmap_t *self, uint64_t hash)
{
    return (size_t) (hash >> self->shift);
}

static unsigned
s_log2 (size_t power_of_two)
{
    unsigned bits = 0;
    while (power_of_two > 1) {
        power_of_two >>= 1;
        bits++;
    }
    return bits;
}

//  Return the slot holding hash, or where it would be inserted (possibly
//  `length`, past the end). Sets *found accordingly.
static size_t
s_find (const dq_idmap_t *self, uint64_t hash, bool *found)
{
    size_t index = s_home (self, hash);
    while (index < self->length
       &&  self->slots [index].hash != 0
       &&  self->slots [index].hash < hash)
        index++;
    *found = index < self->length && self->slots [index].hash == hash;
    return index;
}

//  Slots needed to lay out the current entries with home = hash >> shift:
//  one past the last entry's position after a merge.
static size_t
s_layout_length (const dq_idmap_t *self, unsigned shift)
{
    size_t next = 0;
    for (size_t index = 0; index < self->length; index++) {
        uint64_t hash = self->slots [index].hash;
        if (hash) {
            size_t home = (size_t) (hash >> shift);
            next = (home > next ? home : next) + 1;
        }
    }
    return next;
}

//  Rebuild with `capacity` home slots. The old array is already sorted, so
//  each entry goes to max (its home, one past the previous entry). Returns
//  0, or -1 on allocation failure with the map unchanged.
static int
s_rebuild (dq_idmap_t *self, size_t capacity)
{
    unsigned shift = 64 - s_log2 (capacity);
    size_t needed = s_layout_length (self, shift);
    size_t tail = DQ_IDMAP_TAIL_MIN;
    if (needed > capacity && needed - capacity > tail / 2)
        tail = 2 * (needed - capacity);
    if (tail > SIZE_MAX / sizeof (s_slot_t) - capacity)
        return -1;
    size_t length = capacity + tail;
    s_slot_t *slots = dq_mem_calloc (length, sizeof (s_slot_t));
    if (!slots)
        return -1;

    size_t next = 0;
    for (size_t index = 0; index < self->length; index++) {
        s_slot_t slot = self->slots [index];
        if (slot.hash) {
            size_t home = (size_t) (slot.hash >> shift);
            size_t target = home > next ? home : next;
            slots [target] = slot;
            next = target + 1;
        }
    }
    free (self->slots);
    self->slots = slots;
    self->capacity = capacity;
    self->length = length;
    self->shift = shift;
    return 0;
}

//  Double the tail when a run needs a slot past the end of the array.
static int
s_grow_tail (dq_idmap_t *self)
{
    size_t tail = self->length - self->capacity;
    if (tail > SIZE_MAX / sizeof (s_slot_t) - self->length)
        return -1;
    size_t length = self->length + tail;
    s_slot_t *slots = realloc (self->slots, length * sizeof (s_slot_t));
    if (!slots)
        return -1;
    memset (slots + self->length, 0, tail * sizeof (s_slot_t));
    self->slots = slots;
    self->length = length;
    return 0;
}

dq_idmap_t *
dq_idmap_new (void)
{
    dq_idmap_t *self = calloc (1, sizeof (dq_idmap_t));
    if (!self)
        return NULL;
    self->capacity = DQ_IDMAP_CAPACITY_MIN;
    self->length = DQ_IDMAP_CAPACITY_MIN + DQ_IDMAP_TAIL_MIN;
    self->shift = 64 - s_log2 (DQ_IDMAP_CAPACITY_MIN);
    self->slots = calloc (self->length, sizeof (s_slot_t));
    if (!self->slots) {
        free (self);
        return NULL;
    }
    return self;
}

void
dq_idmap_destroy (dq_idmap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_idmap_t *self = *self_p;
    free (self->slots);
    free (self);
    *self_p = NULL;
}

int
dq_idmap_put (dq_idmap_t *self, uint64_t key, void *value)
{
    if (!self || key == 0 || !value)
        return -1;
    uint64_t hash = s_hash (key);
    bool found;
    size_t index = s_find (self, hash, &found);
    if (found) {
        self->slots [index].value = value;
        return 0;
    }
    //  Keep the load factor at or under 0.7. size <= capacity <= SIZE_MAX / 16,
    //  so neither product overflows.
    if ((self->size + 1) * 10 > self->capacity * 7) {
        if (self->capacity > SIZE_MAX / 4 / sizeof (s_slot_t))
            return -1;
        if (s_rebuild (self, self->capacity * 2))
            return -1;
        index = s_find (self, hash, &found);
    }
    //  Make room at index by shifting the rest of its run up one slot.
    size_t empty = index;
    while (empty < self->length && self->slots [empty].hash != 0)
        empty++;
    if (empty == self->length && s_grow_tail (self))
        return -1;
    memmove (self->slots + index + 1, self->slots + index,
             (empty - index) * sizeof (s_slot_t));
    self->slots [index].hash = hash;
    self->slots [index].value = value;
    self->size++;
    return 0;
}

void *
dq_idmap_get (const dq_idmap_t *self, uint64_t key)
{
    if (!self || key == 0)
        return NULL;
    bool found;
    size_t index = s_find (self, s_hash (key), &found);
    return found ? self->slots [index].value : NULL;
}

void *
dq_idmap_remove (dq_idmap_t *self, uint64_t key)
{
    if (!self || key == 0)
        return NULL;
    bool found;
    size_t index = s_find (self, s_hash (key), &found);
    if (!found)
        return NULL;
    void *value = self->slots [index].value;

    //  Backward shift: entries after the hole that are not at their home
    //  move back one slot; the run ends at an empty slot or at an entry at
    //  its home (those after it have homes at or past it, so cannot move).
    size_t end = index + 1;
    while (end < self->length
       &&  self->slots [end].hash != 0
       &&  s_home (self, self->slots [end].hash) < end)
        end++;
    memmove (self->slots + index, self->slots + index + 1,
             (end - index - 1) * sizeof (s_slot_t));
    self->slots [end - 1].hash = 0;
    self->slots [end - 1].value = NULL;
    self->size--;

    //  Under 1/8 full: rebuild at the smallest capacity that is at most half
    //  full, far from both thresholds. On failure the big table stays.
    if (self->capacity > DQ_IDMAP_CAPACITY_MIN && self->size < self->capacity / 8) {
        size_t capacity = DQ_IDMAP_CAPACITY_MIN;
        while (capacity < 2 * self->size)
            capacity *= 2;
        s_rebuild (self, capacity);
    }
    return value;
}

size_t
dq_idmap_size (const dq_idmap_t *self)
{
    return self ? self->size : 0;
}

void *
dq_idmap_next (const dq_idmap_t *self, size_t *cursor, uint64_t *key)
{
    if (!self || !cursor)
        return NULL;
    //  Return the entry with the smallest hash above the cursor. Any such
    //  entry sits at or after the cursor's home slot, and the array is
    //  sorted, so the first one found scanning from there is it. Empty
    //  slots (hash 0) are never above the cursor.
    uint64_t after = (uint64_t) *cursor;
    for (size_t index = s_home (self, after); index < self->length; index++) {
        const s_slot_t *slot = &self->slots [index];
        if (slot->hash > after) {
            *cursor = (size_t) slot->hash;
            if (key)
                *key = s_unhash (slot->hash);
            return slot->value;
        }
    }
    //  Park the cursor at the top so that further calls return at once.
    *cursor = SIZE_MAX;
    return NULL;
}

size_t
dq_idmap_capacity (const dq_idmap_t *self)
{
    return self ? self->length : 0;
}
