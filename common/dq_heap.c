/*  dq_heap.c - binary min-heap of borrowed pointers with an intrusive index.

    Classic array heap: children of i at 2i+1 and 2i+2. Sifting moves a hole
    rather than swapping, so each level costs one store and one setpos call.
    The heap never frees items and never calls less or setpos on items after
    they have left it.
*/
#include "dq_heap.h"

#include <stdlib.h>

//  Smallest allocation; also the floor below which the array never shrinks.
#define DQ_HEAP_CAPACITY_MIN 16

struct _dq_heap_t {
    void **items;               //  heap-ordered array, items[0] smallest
    size_t size;                //  items in use
    size_t capacity;            //  slots allocated (0 until the first push)
    dq_heap_less_fn less;       //  order
    dq_heap_setpos_fn setpos;   //  position callback, may be NULL
};

static inline void
s_place (dq_heap_t *self, size_t pos, void *item)
{
    self->items [pos] = item;
    if (self->setpos)
        self->setpos (item, pos);
}

//  Move the item at pos towards the root while it is smaller than its parent.
static void
s_sift_up (dq_heap_t *self, size_t pos)
{
    void *item = self->items [pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!self->less (item, self->items [parent]))
            break;
        s_place (self, pos, self->items [parent]);
        pos = parent;
    }
    s_place (self, pos, item);
}

//  Move the item at pos towards the leaves while a child is smaller. capacity
//  is at most SIZE_MAX / sizeof (void *), so 2 * pos + 2 cannot overflow.
static void
s_sift_down (dq_heap_t *self, size_t pos)
{
    void *item = self->items [pos];
    while (true) {
        size_t child = 2 * pos + 1;
        if (child >= self->size)
            break;
        if (child + 1 < self->size
        &&  self->less (self->items [child + 1], self->items [child]))
            child++;
        if (!self->less (self->items [child], item))
            break;
        s_place (self, pos, self->items [child]);
        pos = child;
    }
    s_place (self, pos, item);
}

//  Put the item at pos where it belongs, whichever way its key moved.
static void
s_fix (dq_heap_t *self, size_t pos)
{
    if (pos > 0 && self->less (self->items [pos], self->items [(pos - 1) / 2]))
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}

static int
s_resize (dq_heap_t *self, size_t capacity)
{
    void **items = realloc (self->items, capacity * sizeof (void *));
    if (!items)
        return -1;
    self->items = items;
    self->capacity = capacity;
    return 0;
}

//  Halve the array when under a quarter full. Halving (not shrinking to fit)
//  leaves room for the size to double before the next grow, so a heap that
//  hovers around a boundary does not realloc on every call. A failed
//  shrink is harmless: the larger array stays.
static void
s_maybe_shrink (dq_heap_t *self)
{
    if (self->capacity > DQ_HEAP_CAPACITY_MIN && self->size < self->capacity / 4)
        s_resize (self, self->capacity / 2);
}

dq_heap_t *
dq_heap_new (dq_heap_less_fn less, dq_heap_setpos_fn setpos)
{
    if (!less)
        return NULL;
    dq_heap_t *self = calloc (1, sizeof (dq_heap_t));
    if (!self)
        return NULL;
    self->less = less;
    self->setpos = setpos;
    return self;
}

void
dq_heap_destroy (dq_heap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_heap_t *self = *self_p;
    free (self->items);
    free (self);
    *self_p = NULL;
}

int
dq_heap_push (dq_heap_t *self, void *item)
{
    if (!self || !item)
        return -1;
    if (self->size == self->capacity) {
        size_t capacity = self->capacity ? self->capacity : DQ_HEAP_CAPACITY_MIN / 2;
        if (capacity > SIZE_MAX / 2 / sizeof (void *))
            return -1;
        if (s_resize (self, capacity * 2))
            return -1;
    }
    self->items [self->size++] = item;
    s_sift_up (self, self->size - 1);
    return 0;
}

void *
dq_heap_peek (const dq_heap_t *self)
{
    return self && self->size ? self->items [0] : NULL;
}

void *
dq_heap_pop (dq_heap_t *self)
{
    return dq_heap_remove (self, 0);
}

void *
dq_heap_remove (dq_heap_t *self, size_t pos)
{
    if (!self || pos >= self->size)
        return NULL;
    void *item = self->items [pos];
    self->size--;
    if (pos < self->size) {
        //  The last item fills the hole; it may belong above or below it.
        self->items [pos] = self->items [self->size];
        s_fix (self, pos);
    }
    if (self->setpos)
        self->setpos (item, DQ_HEAP_NONE);
    s_maybe_shrink (self);
    return item;
}

void
dq_heap_update (dq_heap_t *self, size_t pos)
{
    if (!self || pos >= self->size)
        return;
    s_fix (self, pos);
}

size_t
dq_heap_size (const dq_heap_t *self)
{
    return self ? self->size : 0;
}

void *
dq_heap_at (const dq_heap_t *self, size_t pos)
{
    return self && pos < self->size ? self->items [pos] : NULL;
}

size_t
dq_heap_capacity (const dq_heap_t *self)
{
    return self ? self->capacity : 0;
}
