/*  dq_mem.h - big arrays on transparent huge pages, where the kernel has them.

    A million-job DAG lives in a few arrays of tens of megabytes (decoded
    job specs, job records, edges, the job table). Touched 4 KiB at a time,
    each page costs a fault, and on virtual machines faults are the larger
    part of accepting such a DAG. Asking for huge pages (madvise
    MADV_HUGEPAGE, honoured when /sys/kernel/mm/transparent_hugepage/enabled
    is "always" or "madvise") cuts the faults 512-fold. It is a hint: where
    it is not honoured nothing changes, so failures are ignored.

    Header-only (static inline), so any module or unit test can use it
    without another object to link. Not part of the installed API.
*/
#ifndef DQ_MEM_H_INCLUDED
#define DQ_MEM_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

//  Smaller arrays are not worth a system call.
#define DQ_MEM_BIG (4u << 20)

//  Ask for huge pages for the whole pages inside [p, p + size), when size
//  is at least DQ_MEM_BIG. Call it before the memory is first written.
static inline void
dq_mem_advise (void *p, size_t size)
{
#ifdef MADV_HUGEPAGE
    if (!p || size < DQ_MEM_BIG)
        return;
    long ps = sysconf (_SC_PAGESIZE);
    uintptr_t page = ps > 0? (uintptr_t) ps: 4096;
    uintptr_t lo = ((uintptr_t) p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t) p + size) & ~(page - 1);
    if (hi > lo)
        (void) madvise ((void *) lo, hi - lo, MADV_HUGEPAGE);
#else
    (void) p;
    (void) size;
#endif
}

//  malloc and calloc for arrays that may be big; free with free().
static inline void *
dq_mem_malloc (size_t size)
{
    void *p = malloc (size? size: 1);
    dq_mem_advise (p, size);
    return p;
}

static inline void *
dq_mem_calloc (size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    //  Not calloc: it may clear memory it took from the heap before the
    //  hint could apply. Zero once the pages may be huge.
    void *p = dq_mem_malloc (n * size);
    if (p)
        memset (p, 0, n * size);
    return p;
}

//  Returns array grown to hold at least need items of size bytes (by half
//  again, at least 16; updating *cap), array itself if already big enough,
//  or NULL (array untouched). Not for big arrays that want huge pages.
static inline void *
dq_mem_grow (void *array, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return array;
    size_t newcap = *cap < 16 ? 16 : *cap + *cap / 2;
    if (newcap < need)
        newcap = need;
    if (newcap > SIZE_MAX / size)
        return NULL;
    void *grown = realloc (array, newcap * size);
    if (grown)
        *cap = newcap;
    return grown;
}

#endif
