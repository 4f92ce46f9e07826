/*  dq_log.c - logging level and setup. See dq_log.h. */
#include "dq_log.h"

#include <stdatomic.h>

static atomic_int s_level = DQ_LOG_INFO;

void
dq_log_set_level (int level)
{
    atomic_store (&s_level, level);
}

int
dq_log_level (void)
{
    return atomic_load_explicit (&s_level, memory_order_relaxed);
}

int
dq_log_parse_level (const char *name)
{
    static const char *names [] = { "error", "warn", "info", "debug" };
    for (int i = 0; name && i < 4; i++)
        if (strcmp (name, names [i]) == 0)
            return i;
    return -1;
}

void
dq_log_init (const char *ident, bool syslog)
{
    zsys_set_logident (ident);
    zsys_set_logstream (stderr);
    zsys_set_logsystem (syslog);
}
