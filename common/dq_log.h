/*  dq_log.h - logging: czmq's zsys_* with the level checked before any
    formatting. Shape of a line: entity and id first, then key=value, then
    " - event", e.g. "job=b7f3-12 type=thumb worker=w3 attempt=2 - dispatched".
    Payloads are never logged, only their size.
*/
#ifndef DQ_LOG_H_INCLUDED
#define DQ_LOG_H_INCLUDED

#include <czmq.h>

typedef enum {
    DQ_LOG_ERROR = 0,
    DQ_LOG_WARN,
    DQ_LOG_INFO,
    DQ_LOG_DEBUG
} dq_log_level_t;

//  The level is process-wide, like czmq's own logging settings.
void
    dq_log_set_level (int level);
int
    dq_log_level (void);
//  "error", "warn", "info", "debug" -> level, or -1.
int
    dq_log_parse_level (const char *name);
//  Log under this name (ident), to stderr; to syslog too when syslog is true.
void
    dq_log_init (const char *ident, bool syslog);

#define dq_log_error(...) do { if (dq_log_level () >= DQ_LOG_ERROR) zsys_error (__VA_ARGS__); } while (0)
#define dq_log_warn(...)  do { if (dq_log_level () >= DQ_LOG_WARN)  zsys_warning (__VA_ARGS__); } while (0)
#define dq_log_info(...)  do { if (dq_log_level () >= DQ_LOG_INFO)  zsys_info (__VA_ARGS__); } while (0)
#define dq_log_debug(...) do { if (dq_log_level () >= DQ_LOG_DEBUG) zsys_debug (__VA_ARGS__); } while (0)

#endif
