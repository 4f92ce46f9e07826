/*  dq_heap.h - binary min-heap of borrowed pointers with an intrusive index.

    The broker keeps every deadline (job timeouts, heartbeat expiries, delayed
    jobs and retries) in one heap; its smallest item sets the poll timeout.
    Each item remembers its own position through the setpos callback (as
    beanstalkd's heap.c does with heap_index), so cancelling or re-arming a
    deadline is O(log n): dq_heap_remove or dq_heap_update at that position.

    The heap does not own its items: it never frees them, and destroying the
    heap does not call setpos. It does not copy keys either: the caller must
    call dq_heap_update after changing anything `less` looks at. It is not
    thread-safe; one heap belongs to one thread.

    Costs: push, pop, remove, update O(log n); peek, at, size O(1). The array
    doubles when full and halves when less than a quarter used, so memory
    follows the number of items after a burst drains.
*/
#ifndef DQ_HEAP_H_INCLUDED
#define DQ_HEAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Position given to setpos for an item that has left the heap.
#define DQ_HEAP_NONE SIZE_MAX

//  Strict weak order: true if a must come out before b. Equal keys are
//  allowed; their relative order is unspecified.
typedef bool (*dq_heap_less_fn) (const void *a, const void *b);

//  Tells an item its new position in the heap, or DQ_HEAP_NONE once it has
//  been popped or removed. Called on every move, so keep it to a store.
typedef void (*dq_heap_setpos_fn) (void *item, size_t pos);

typedef struct _dq_heap_t dq_heap_t;

//  Create an empty heap ordered by less. setpos may be NULL if the caller
//  never needs positions. Returns NULL if less is NULL or on allocation
//  failure.
dq_heap_t *
    dq_heap_new (dq_heap_less_fn less, dq_heap_setpos_fn setpos);

//  Destroy the heap and nullify the caller's reference. Items still in it
//  are neither freed nor told (setpos is not called): they may already be
//  gone. NULL-safe, also when *self_p is NULL.
void
    dq_heap_destroy (dq_heap_t **self_p);

//  Insert an item; setpos tells it where it landed. Returns 0, or -1 if item
//  is NULL (NULL means "empty" to peek and pop) or on allocation failure, in
//  which case the heap is unchanged.
int
    dq_heap_push (dq_heap_t *self, void *item);

//  Return the smallest item without removing it, or NULL if the heap is
//  empty.
void *
    dq_heap_peek (const dq_heap_t *self);

//  Remove and return the smallest item (setpos gets DQ_HEAP_NONE), or NULL if
//  the heap is empty.
void *
    dq_heap_pop (dq_heap_t *self);

//  Remove and return the item at pos, the position setpos last gave it
//  (setpos gets DQ_HEAP_NONE). Returns NULL, changing nothing, if pos is out
//  of range (DQ_HEAP_NONE included).
void *
    dq_heap_remove (dq_heap_t *self, size_t pos);

//  Restore the order after the key of the item at pos changed, in either
//  direction. Does nothing if pos is out of range.
void
    dq_heap_update (dq_heap_t *self, size_t pos);

//  Return the number of items.
size_t
    dq_heap_size (const dq_heap_t *self);

//  Return the item at pos (0 is the smallest), or NULL if out of range. The
//  order beyond position 0 is the heap's, not sorted.
void *
    dq_heap_at (const dq_heap_t *self, size_t pos);

//  Return the number of item slots allocated (for stats and tests).
size_t
    dq_heap_capacity (const dq_heap_t *self);

#ifdef __cplusplus
}
#endif

#endif
