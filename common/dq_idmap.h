/*  dq_idmap.h - compact hash map from 64-bit ids to borrowed pointers.

    The broker's job table: millions of entries, 16 bytes per slot, no
    per-entry allocation. Keys are any uint64_t except 0 (reserved for empty
    slots); values are any non-NULL pointer (NULL means "absent" to get,
    remove and next).

    The map does not own its values: it never frees them, and destroying it
    leaves them alone. It is not thread-safe; one map belongs to one thread.

    Costs: put, get, remove O(1) expected (open addressing, linear probing,
    load factor at most 0.7, no tombstones). The table doubles when it would
    exceed 0.7 and is rebuilt smaller when under 1/8 full, so memory follows
    the number of entries after a burst drains. Growing or shrinking is O(n),
    amortised O(1).

    Iteration order is unspecified (it follows the hash of the key) but
    stable under changes: see dq_idmap_next.
*/
#ifndef DQ_IDMAP_H_INCLUDED
#define DQ_IDMAP_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _dq_idmap_t dq_idmap_t;

//  Create an empty map. Returns NULL on allocation failure.
dq_idmap_t *
    dq_idmap_new (void);

//  Destroy the map and nullify the caller's reference. Values are not freed.
//  NULL-safe, also when *self_p is NULL.
void
    dq_idmap_destroy (dq_idmap_t **self_p);

//  Map key to value, replacing any previous value for key. Returns 0, or -1
//  if key is 0, value is NULL, or on allocation failure; on -1 the map is
//  unchanged.
int
    dq_idmap_put (dq_idmap_t *self, uint64_t key, void *value);

//  Return the value for key, or NULL if absent (always for key 0).
void *
    dq_idmap_get (const dq_idmap_t *self, uint64_t key);

//  Remove key and return its value, or NULL if it was absent. May rebuild a
//  smaller table; that never disturbs an iteration (see dq_idmap_next).
void *
    dq_idmap_remove (dq_idmap_t *self, uint64_t key);

//  Return the number of entries.
size_t
    dq_idmap_size (const dq_idmap_t *self);

//  Iterate. Start with *cursor = 0; each call returns the next value, stores
//  its key in *key if key is not NULL, and advances *cursor (an opaque
//  position, not an index). Returns NULL when no entries are left.
//
//      size_t cursor = 0;
//      uint64_t id;
//      void *job;
//      while ((job = dq_idmap_next (map, &cursor, &id)))
//          if (s_expired (job))
//              dq_idmap_remove (map, id);
//
//  Any change during an iteration is safe, including removing the entry just
//  returned, removing or adding others, and the table growing or shrinking:
//  every entry present from start to end of the iteration is returned
//  exactly once; an entry added or removed meanwhile is returned at most
//  once. A full iteration costs O(capacity).
void *
    dq_idmap_next (const dq_idmap_t *self, size_t *cursor, uint64_t *key);

//  Return the number of slots allocated, 16 bytes each (for stats and
//  tests).
size_t
    dq_idmap_capacity (const dq_idmap_t *self);

#ifdef __cplusplus
}
#endif

#endif
