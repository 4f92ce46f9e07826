/*  dq_seqmap.h - map from sequence numbers to borrowed pointers.

    The broker's job and DAG tables. Keys are the broker's sequence numbers,
    handed out in increasing order, so the map is a direct-indexed array in
    pages of DQ_SEQMAP_PAGE slots (8 bytes each) under a spine of page
    pointers: no hashing, and no table that is ever copied as it grows, so
    no operation stalls the broker's loop (a hash table's doubling moved
    every entry at once: 10 to 40 ms at 200,000 jobs on a small VM).

    A page is allocated when its first key is put and freed when its last
    key is removed, so memory follows the live keys: 8 bytes per key while
    keys are dense, at most one page per live key where they are sparse.
    The spine covers the pages between the lowest and the highest live
    key (8 bytes per page).

    Values are any non-NULL pointer (NULL means "absent" to get, remove and
    next). The map does not own its values: it never frees them, and
    destroying it leaves them alone. Not thread-safe; one map belongs to one
    thread.

    Costs: get O(1); put O(1) amortised (the spine, one pointer per page,
    may be reallocated); remove O(1); iteration O(pages spanned + keys).
*/
#ifndef DQ_SEQMAP_H_INCLUDED
#define DQ_SEQMAP_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Slots per page (a power of two): 8 KiB pages.
#define DQ_SEQMAP_PAGE 1024

typedef struct _dq_seqmap_t dq_seqmap_t;

//  Create an empty map. Returns NULL on allocation failure.
dq_seqmap_t *
    dq_seqmap_new (void);

//  Destroy the map and nullify the caller's reference. Values are not freed.
//  NULL-safe, also when *self_p is NULL.
void
    dq_seqmap_destroy (dq_seqmap_t **self_p);

//  Map key to value, replacing any previous value for key. Returns 0, or -1
//  if value is NULL, key is UINT64_MAX, the map would span more than 2^34
//  keys from its lowest to its highest, or on allocation failure; on -1 the
//  map is unchanged.
int
    dq_seqmap_put (dq_seqmap_t *self, uint64_t key, void *value);

//  Return the value for key, or NULL if absent.
void *
    dq_seqmap_get (const dq_seqmap_t *self, uint64_t key);

//  Remove key and return its value, or NULL if it was absent.
void *
    dq_seqmap_remove (dq_seqmap_t *self, uint64_t key);

//  Return the number of entries.
size_t
    dq_seqmap_size (const dq_seqmap_t *self);

//  Iterate in increasing key order. Start with *cursor = 0; each call
//  returns the value of the lowest key >= *cursor, stores that key in *key
//  if key is not NULL, and sets *cursor past it. Returns NULL when no
//  entries are left.
//
//      uint64_t cursor = 0, seq;
//      void *job;
//      while ((job = dq_seqmap_next (map, &cursor, &seq)))
//          if (s_expired (job))
//              dq_seqmap_remove (map, seq);
//
//  Any change during an iteration is safe: an entry present from start to
//  end is returned exactly once; one put or removed meanwhile is returned
//  if and only if its key is at or past the cursor while it is present.
void *
    dq_seqmap_next (const dq_seqmap_t *self, uint64_t *cursor, uint64_t *key);

//  Return the number of pages allocated, DQ_SEQMAP_PAGE slots each (for
//  stats and tests).
size_t
    dq_seqmap_pages (const dq_seqmap_t *self);

#ifdef __cplusplus
}
#endif

#endif
