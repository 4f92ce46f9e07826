/*  dq_seqmap.c - map from sequence numbers to borrowed pointers.

    Layout: key k lives in slot k % DQ_SEQMAP_PAGE of page k / DQ_SEQMAP_PAGE.
    The spine is an array of page pointers; entries [head, head + length)
    hold pages first .. first + length - 1 (NULL where a page has no live
    key). When length > 0 the first and last of them are never NULL, so
    the spine spans exactly the live keys' pages.

    Keys arrive in increasing order and mostly leave in increasing order,
    so the spine slides forwards: removals at the front advance head, puts
    at the back extend length. When the back runs out of room the live part
    is moved to the front of the array (if it fills at most half of it) or
    the array doubles; either way the next move is at least as many pages
    away as were moved, so moves cost O(1) per page.
*/
#include "dq_seqmap.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

//  Widest span of pages the spine may cover: 2^24 pages of 1024 keys (a
//  spine of up to 128 MiB), far more than a broker holds at once. It
//  refuses absurd keys, e.g. from a damaged store, instead of asking for
//  terabytes.
#define S_SPAN_MAX (1ULL << 24)
#define S_SPINE_MIN 16

typedef struct {
    uint32_t used;              //  non-NULL slots
    void *slots [DQ_SEQMAP_PAGE];
} s_page_t;

struct _dq_seqmap_t {
    s_page_t **spine;
    size_t capacity;            //  spine entries allocated
    size_t head;                //  index of page `first` in spine
    size_t length;              //  pages spanned, 0 when empty
    uint64_t first;             //  page number of spine [head]
    size_t size;                //  entries
    size_t pages;               //  pages allocated
};

dq_seqmap_t *
dq_seqmap_new (void)
{
    return calloc (1, sizeof (dq_seqmap_t));
}

void
dq_seqmap_destroy (dq_seqmap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dq_seqmap_t *self = *self_p;
    for (size_t i = 0; i < self->length; i++)
        free (self->spine [self->head + i]);
    free (self->spine);
    free (self);
    *self_p = NULL;
}

//  The page holding key, or NULL.
static inline s_page_t *
s_page (const dq_seqmap_t *self, uint64_t key)
{
    uint64_t page = key / DQ_SEQMAP_PAGE;
    if (page < self->first || page - self->first >= self->length)
        return NULL;
    return self->spine [self->head + (size_t) (page - self->first)];
}

//  Make the spine span `page` as well. Returns 0, or -1 (span too wide or
//  out of memory) with the map unchanged.
static int
s_span (dq_seqmap_t *self, uint64_t page)
{
    if (self->length == 0) {
        if (!self->spine) {
            self->spine = malloc (S_SPINE_MIN * sizeof (s_page_t *));
            if (!self->spine)
                return -1;
            self->capacity = S_SPINE_MIN;
        }
        self->head = 0;
        self->first = page;
        self->length = 1;
        self->spine [0] = NULL;
        return 0;
    }
    uint64_t last = self->first + self->length - 1;
    uint64_t lo = page < self->first? page: self->first;
    uint64_t hi = page > last? page: last;
    if (hi - lo >= S_SPAN_MAX)
        return -1;
    size_t length = (size_t) (hi - lo + 1);
    size_t before = (size_t) (self->first - lo);   //  new pages in front

    size_t head;
    if (before <= self->head && self->head - before + length <= self->capacity)
        head = self->head - before;                 //  fits where it is
    else {
        if (length * 2 > self->capacity) {
            size_t capacity = self->capacity;
            while (capacity < length * 2)
                capacity *= 2;
            s_page_t **spine = realloc (self->spine, capacity * sizeof (s_page_t *));
            if (!spine)
                return -1;
            self->spine = spine;
            self->capacity = capacity;
        }
        head = 0;
        memmove (self->spine + before, self->spine + self->head,
                 self->length * sizeof (s_page_t *));
        self->head = before;
    }
    //  Clear the entries newly spanned, in front and behind.
    memset (self->spine + head, 0, (self->head - head) * sizeof (s_page_t *));
    size_t end = self->head + self->length;
    memset (self->spine + end, 0, (head + length - end) * sizeof (s_page_t *));
    self->head = head;
    self->first = lo;
    self->length = length;
    return 0;
}

int
dq_seqmap_put (dq_seqmap_t *self, uint64_t key, void *value)
{
    if (!value || key == UINT64_MAX)
        return -1;
    s_page_t *page = s_page (self, key);
    if (!page) {
        page = calloc (1, sizeof (s_page_t));
        if (!page || s_span (self, key / DQ_SEQMAP_PAGE)) {
            free (page);
            return -1;
        }
        self->spine [self->head + (size_t) (key / DQ_SEQMAP_PAGE - self->first)] = page;
        self->pages++;
    }
    void **slot = &page->slots [key % DQ_SEQMAP_PAGE];
    if (!*slot) {
        page->used++;
        self->size++;
    }
    *slot = value;
    return 0;
}

void *
dq_seqmap_get (const dq_seqmap_t *self, uint64_t key)
{
    s_page_t *page = s_page (self, key);
    return page? page->slots [key % DQ_SEQMAP_PAGE]: NULL;
}

void *
dq_seqmap_remove (dq_seqmap_t *self, uint64_t key)
{
    s_page_t *page = s_page (self, key);
    if (!page)
        return NULL;
    void **slot = &page->slots [key % DQ_SEQMAP_PAGE];
    void *value = *slot;
    if (!value)
        return NULL;
    *slot = NULL;
    self->size--;
    if (--page->used)
        return value;

    //  The page is empty: free it, and trim empty pages off either end.
    free (page);
    self->pages--;
    self->spine [self->head + (size_t) (key / DQ_SEQMAP_PAGE - self->first)] = NULL;
    while (self->length && !self->spine [self->head]) {
        self->head++;
        self->first++;
        self->length--;
    }
    while (self->length && !self->spine [self->head + self->length - 1])
        self->length--;
    if (!self->length)
        self->head = 0;
    return value;
}

size_t
dq_seqmap_size (const dq_seqmap_t *self)
{
    return self->size;
}

void *
dq_seqmap_next (const dq_seqmap_t *self, uint64_t *cursor, uint64_t *key)
{
    if (!self->length || *cursor == UINT64_MAX)
        return NULL;
    uint64_t page = *cursor / DQ_SEQMAP_PAGE;
    size_t offset = (size_t) (*cursor % DQ_SEQMAP_PAGE);
    if (page < self->first) {
        page = self->first;
        offset = 0;
    }
    for (; page - self->first < self->length; page++, offset = 0) {
        s_page_t *p = self->spine [self->head + (size_t) (page - self->first)];
        for (size_t i = offset; p && i < DQ_SEQMAP_PAGE; i++)
            if (p->slots [i]) {
                uint64_t k = page * DQ_SEQMAP_PAGE + i;
                if (key)
                    *key = k;
                *cursor = k + 1;    //  k < UINT64_MAX: put refuses that
                return p->slots [i];
            }
    }
    return NULL;
}

size_t
dq_seqmap_pages (const dq_seqmap_t *self)
{
    return self->pages;
}
