/*  dq_registry.c - the workers the broker knows. See dq_registry.h. */
#include "dq_registry.h"

#include <czmq.h>

struct _dq_registry_t {
    zhashx_t *workers;       //  hex routing id -> dq_bworker_t (owned)
    uint32_t next_num;
};

static void
s_worker_free (void **item_p)
{
    dq_bworker_t *w = *item_p;
    if (!w)
        return;
    for (uint32_t i = 0; w->types && w->types [i]; i++)
        free (w->types [i]);
    free (w->types);
    free (w->name);
    free (w->host);
    free (w->jobs);
    free (w->members);
    free (w->acks);
    free (w->pending);
    free (w);
    *item_p = NULL;
}

static void
s_hex (char *out, const void *rid, size_t size)
{
    static const char digits [] = "0123456789abcdef";
    const uint8_t *b = rid;
    for (size_t i = 0; i < size; i++) {
        out [2 * i] = digits [b [i] >> 4];
        out [2 * i + 1] = digits [b [i] & 15];
    }
    out [2 * size] = 0;
}

dq_registry_t *
dq_registry_new (void)
{
    dq_registry_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->workers = zhashx_new ();
    if (!self->workers) {
        free (self);
        return NULL;
    }
    zhashx_set_destructor (self->workers, s_worker_free);
    return self;
}

void
dq_registry_destroy (dq_registry_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy (&(*self_p)->workers);
    free (*self_p);
    *self_p = NULL;
}

dq_bworker_t *
dq_registry_lookup (dq_registry_t *self, const void *rid, size_t rid_size)
{
    char key [520];
    if (rid_size > 255)
        return NULL;
    s_hex (key, rid, rid_size);
    return zhashx_lookup (self->workers, key);
}

dq_bworker_t *
dq_registry_add (dq_registry_t *self, const void *rid, size_t rid_size)
{
    if (rid_size > 255)
        return NULL;
    dq_bworker_t *w = calloc (1, sizeof *w);
    if (!w)
        return NULL;
    memcpy (w->rid, rid, rid_size);
    w->rid_size = rid_size;
    s_hex (w->key, rid, rid_size);
    w->num = ++self->next_num;
    if (zhashx_insert (self->workers, w->key, w)) {
        free (w);
        return NULL;
    }
    return w;
}

void
dq_registry_remove (dq_registry_t *self, dq_bworker_t **worker_p)
{
    if (!worker_p || !*worker_p)
        return;
    zhashx_delete (self->workers, (*worker_p)->key);
    *worker_p = NULL;
}

size_t
dq_registry_size (dq_registry_t *self)
{
    return zhashx_size (self->workers);
}

dq_bworker_t *
dq_registry_first (dq_registry_t *self)
{
    return zhashx_first (self->workers);
}

dq_bworker_t *
dq_registry_next (dq_registry_t *self)
{
    return zhashx_next (self->workers);
}
