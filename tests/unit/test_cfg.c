/*  test_cfg.c - unit tests for dq_cfg.

    Checks each kind's parsing and bounds, the layering default < file <
    environment < command line, unknown file keys, NOARG flags, -v, the
    fixed options, malformed tables and the --help listing. Config files
    are written to a private temporary directory; environment variables
    are set and cleared by each test. Also dq_util's UTF-8 helpers, which
    are compiled into this test with the option parsers.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "dq_cfg.h"
#include "dq_log.h"
#include "dq_util.h"

enum { T_NAME, T_COUNT, T_BIG, T_SIZE, T_TTL, T_MEMORY, T_MODE, T_LEVEL, T_NOPTS };

static const char *s_modes [] = { "fast", "safe", "off", NULL };

static const dq_cfg_opt_t s_opts [T_NOPTS] = {
    [T_NAME] = { "name", DQ_CFG_STR, "a name", 0, 0, 0, NULL },
    [T_COUNT] = { "count", DQ_CFG_U32, "a count", 2, 100, 0, NULL },
    [T_BIG] = { "big-number", DQ_CFG_U64, "a big number", 1, UINT64_MAX, 0, NULL },
    [T_SIZE] = { "max-size", DQ_CFG_SIZE, "a size", 4096, 16u << 20, 0, NULL },
    [T_TTL] = { "ttl", DQ_CFG_MS, "seconds", 1, 3600 * 1000, 0, NULL },
    [T_MEMORY] = { "memory", DQ_CFG_BOOL, "a flag", 0, 0, DQ_CFG_NOARG, NULL },
    [T_MODE] = { "mode", DQ_CFG_CHOICE, "fast|safe|off", 0, 0, 0, s_modes },
    [T_LEVEL] = { "log-level", DQ_CFG_LEVEL, "error|warn|info|debug", 0, 0, 0, NULL },
};

typedef struct {
    const char *name;
    uint64_t count, big, size, ttl_ms;
    bool memory;
    int mode, level;
    size_t calls;
    int refuse;                 //  index apply refuses, or -1
} conf_t;

static void
s_defaults (conf_t *c)
{
    memset (c, 0, sizeof *c);
    c->name = "default";
    c->count = 3;
    c->big = 7;
    c->size = 8192;
    c->ttl_ms = 2500;
    c->level = DQ_LOG_INFO;
    c->refuse = -1;
}

static int
s_apply (void *arg, size_t index, const dq_cfg_value_t *v)
{
    conf_t *c = (conf_t *) arg;
    c->calls++;
    if ((int) index == c->refuse)
        return -1;
    switch (index) {
        case T_NAME:   c->name = v->str; break;
        case T_COUNT:  c->count = v->num; break;
        case T_BIG:    c->big = v->num; break;
        case T_SIZE:   c->size = v->num; break;
        case T_TTL:    c->ttl_ms = v->num; break;
        case T_MEMORY: c->memory = v->on; break;
        case T_MODE:   c->mode = v->index; break;
        case T_LEVEL:  c->level = v->index; break;
        default:       fail ();
    }
    return 0;
}

static char s_dir [] = "/tmp/test_cfg.XXXXXX";
static char s_path [256];

//  Write text to a config file in the test directory; returns its path.
static const char *
s_write_file (const char *text)
{
    snprintf (s_path, sizeof s_path, "%s/test.cfg", s_dir);
    FILE *f = fopen (s_path, "w");
    assert_non_null (f);
    assert_int_equal (fputs (text, f) >= 0, 1);
    assert_int_equal (fclose (f), 0);
    return s_path;
}

static void
s_clear_env (void)
{
    const char *names [] = { "DAGQ_NAME", "DAGQ_COUNT", "DAGQ_BIG_NUMBER", "DAGQ_MAX_SIZE",
                             "DAGQ_TTL", "DAGQ_MEMORY", "DAGQ_MODE", "DAGQ_LOG_LEVEL" };
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++)
        unsetenv (names [i]);
}

static int
s_setup (void **state)
{
    (void) state;
    s_clear_env ();
    return 0;
}

static int
s_teardown (void **state)
{
    (void) state;
    s_clear_env ();
    unlink (s_path);
    return 0;
}

//  Run dq_cfg_load over a NULL-terminated argument list (after argv [0]).
static int
s_load (dq_cfg_t *cfg, conf_t *c, ...)
{
    char *argv [32];
    int argc = 0;
    argv [argc++] = (char *) "test_cfg";
    va_list ap;
    va_start (ap, c);
    const char *arg;
    while ((arg = va_arg (ap, const char *)) != NULL) {
        assert_true (argc < 31);
        argv [argc++] = (char *) arg;
    }
    va_end (ap);
    argv [argc] = NULL;
    return dq_cfg_load (cfg, argc, argv, s_apply, c);
}

static void
s_expect_parse_error (const dq_cfg_opt_t *o, const char *text, const char *part)
{
    dq_cfg_value_t v;
    char err [256];
    assert_int_equal (dq_cfg_parse (o, text, &v, err, sizeof err), -1);
    assert_non_null (strstr (err, o->name));
    assert_non_null (strstr (err, part));
    //  The refused text is quoted back to the operator.
    char quoted [128];
    snprintf (quoted, sizeof quoted, "not '%s'", text);
    assert_non_null (strstr (err, quoted));
}

static void
test_cfg_parse_numbers (void **state)
{
    (void) state;
    dq_cfg_value_t v;
    char err [256];
    assert_int_equal (dq_cfg_parse (&s_opts [T_COUNT], "2", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 2);
    assert_int_equal (dq_cfg_parse (&s_opts [T_COUNT], "100", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 100);
    s_expect_parse_error (&s_opts [T_COUNT], "1", "an integer in [2, 100]");
    s_expect_parse_error (&s_opts [T_COUNT], "101", "an integer in [2, 100]");
    s_expect_parse_error (&s_opts [T_COUNT], "-3", "integer");
    s_expect_parse_error (&s_opts [T_COUNT], "5x", "integer");
    s_expect_parse_error (&s_opts [T_COUNT], "", "integer");

    assert_int_equal (dq_cfg_parse (&s_opts [T_BIG], "18446744073709551615", &v, err,
                                    sizeof err), 0);
    assert_true (v.num == UINT64_MAX);
    s_expect_parse_error (&s_opts [T_BIG], "18446744073709551616", "integer");
    s_expect_parse_error (&s_opts [T_BIG], "0", "[1, 18446744073709551615]");

    assert_int_equal (dq_cfg_parse (&s_opts [T_SIZE], "16M", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 16u << 20);
    assert_int_equal (dq_cfg_parse (&s_opts [T_SIZE], "4k", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 4096);
    assert_int_equal (dq_cfg_parse (&s_opts [T_SIZE], "5000", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 5000);
    s_expect_parse_error (&s_opts [T_SIZE], "17M", "a size (e.g. 512K, 16M) in [4096, 16777216]");
    s_expect_parse_error (&s_opts [T_SIZE], "1K", "size");
    s_expect_parse_error (&s_opts [T_SIZE], "12Q", "size");
    s_expect_parse_error (&s_opts [T_SIZE], "99999999999999999999G", "size");

    //  Seconds in, milliseconds out; bounds are in ms and shown in seconds.
    assert_int_equal (dq_cfg_parse (&s_opts [T_TTL], "2.5", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 2500);
    assert_int_equal (dq_cfg_parse (&s_opts [T_TTL], "0.001", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 1);
    assert_int_equal (dq_cfg_parse (&s_opts [T_TTL], "3600", &v, err, sizeof err), 0);
    assert_int_equal (v.num, 3600000);
    s_expect_parse_error (&s_opts [T_TTL], "0", "seconds (e.g. 2.5) in [0.001, 3600]");
    s_expect_parse_error (&s_opts [T_TTL], "0.0001", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "3600.5", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "-1", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "nan", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "1s", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "0x10", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "1e3", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "1.2.3", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], ".", "seconds");
    s_expect_parse_error (&s_opts [T_TTL], "", "seconds");
}

static void
test_cfg_parse_words (void **state)
{
    (void) state;
    dq_cfg_value_t v;
    char err [256];
    assert_int_equal (dq_cfg_parse (&s_opts [T_NAME], "", &v, err, sizeof err), 0);
    assert_string_equal (v.str, "");
    assert_int_equal (dq_cfg_parse (&s_opts [T_NAME], "x y", &v, NULL, 0), 0);
    assert_string_equal (v.str, "x y");

    const char *yes [] = { "true", "1" }, *no [] = { "false", "0" };
    for (int i = 0; i < 2; i++) {
        assert_int_equal (dq_cfg_parse (&s_opts [T_MEMORY], yes [i], &v, err, sizeof err), 0);
        assert_true (v.on);
        assert_int_equal (v.num, 1);
        assert_int_equal (dq_cfg_parse (&s_opts [T_MEMORY], no [i], &v, err, sizeof err), 0);
        assert_false (v.on);
        assert_int_equal (v.num, 0);
    }
    s_expect_parse_error (&s_opts [T_MEMORY], "yes", "must be true or false");
    s_expect_parse_error (&s_opts [T_MEMORY], "", "true or false");

    assert_int_equal (dq_cfg_parse (&s_opts [T_MODE], "off", &v, err, sizeof err), 0);
    assert_int_equal (v.index, 2);
    s_expect_parse_error (&s_opts [T_MODE], "Fast", "must be fast, safe or off");

    assert_int_equal (dq_cfg_parse (&s_opts [T_LEVEL], "warn", &v, err, sizeof err), 0);
    assert_int_equal (v.index, DQ_LOG_WARN);
    assert_int_equal (dq_cfg_parse (&s_opts [T_LEVEL], "debug", &v, err, sizeof err), 0);
    assert_int_equal (v.index, DQ_LOG_DEBUG);
    s_expect_parse_error (&s_opts [T_LEVEL], "loud", "must be error, warn, info or debug");

    //  NULL text reads as empty; a failed parse leaves the value alone.
    v.num = 42;
    assert_int_equal (dq_cfg_parse (&s_opts [T_COUNT], NULL, &v, NULL, 0), -1);
    assert_int_equal (v.num, 42);
}

static void
test_cfg_defaults_stay (void **state)
{
    (void) state;
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, NULL), DQ_CFG_RUN);
    assert_int_equal (c.calls, 0);
    assert_string_equal (c.name, "default");
    assert_int_equal (c.count, 3);
    assert_false (dq_cfg_print_requested (cfg));
    assert_null (dq_cfg_file (cfg));
    dq_cfg_destroy (&cfg);
    assert_null (cfg);
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_precedence (void **state)
{
    (void) state;
    //  name: file only. count: file < env. big-number: file < env < argv.
    //  ttl: env < argv. max-size: argv only. mode: untouched.
    const char *path = s_write_file (
        "#   comment\n"
        "other\n"
        "    count = 99\n"
        "test\n"
        "    name = \"from file\"\n"
        "    count = 10\n"
        "    big-number = 100\n"
        "    memory = true\n");
    setenv ("DAGQ_COUNT", "20", 1);
    setenv ("DAGQ_BIG_NUMBER", "200", 1);
    setenv ("DAGQ_TTL", "1.5", 1);
    setenv ("DAGQ_MEMORY", "false", 1);

    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    assert_string_equal (dq_cfg_env_name (cfg, T_BIG), "DAGQ_BIG_NUMBER");
    assert_string_equal (dq_cfg_env_name (cfg, T_LEVEL), "DAGQ_LOG_LEVEL");
    assert_null (dq_cfg_env_name (cfg, T_NOPTS));
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--big-number", "300", "--config", path,
                              "--ttl=4", "--max-size", "1M", "--print-config", NULL),
                      DQ_CFG_RUN);
    assert_string_equal (c.name, "from file");
    assert_int_equal (c.count, 20);
    assert_int_equal (c.big, 300);
    assert_int_equal (c.ttl_ms, 4000);
    assert_int_equal (c.size, 1u << 20);
    assert_false (c.memory);
    assert_int_equal (c.mode, 0);
    assert_int_equal (c.level, DQ_LOG_INFO);
    assert_true (dq_cfg_print_requested (cfg));
    assert_string_equal (dq_cfg_file (cfg), path);

    //  The same loader again, with no file: file values are gone, env stays.
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, NULL), DQ_CFG_RUN);
    assert_string_equal (c.name, "default");
    assert_int_equal (c.count, 20);
    assert_int_equal (c.big, 200);
    assert_int_equal (c.ttl_ms, 1500);
    assert_false (dq_cfg_print_requested (cfg));
    assert_null (dq_cfg_file (cfg));
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_last_wins_and_verbose (void **state)
{
    (void) state;
    setenv ("DAGQ_LOG_LEVEL", "error", 1);
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, NULL), DQ_CFG_RUN);
    assert_int_equal (c.level, DQ_LOG_ERROR);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "-v", NULL), DQ_CFG_RUN);
    assert_int_equal (c.level, DQ_LOG_DEBUG);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--verbose", "--log-level", "warn", NULL), DQ_CFG_RUN);
    assert_int_equal (c.level, DQ_LOG_WARN);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--log-level", "warn", "-v", NULL), DQ_CFG_RUN);
    assert_int_equal (c.level, DQ_LOG_DEBUG);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--count", "5", "--count", "6", NULL), DQ_CFG_RUN);
    assert_int_equal (c.count, 6);
    dq_cfg_destroy (&cfg);

    //  Without a level setting there is no -v.
    dq_cfg_t *small = dq_cfg_new ("test", "test", s_opts, T_LEVEL);
    assert_non_null (small);
    s_defaults (&c);
    assert_int_equal (s_load (small, &c, "-v", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (small, &c, "--verbose", NULL), DQ_CFG_ERR_USAGE);
    dq_cfg_destroy (&small);
}

static void
test_cfg_flags (void **state)
{
    (void) state;
    const char *path = s_write_file ("test\n    memory = 1\n");
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--memory", NULL), DQ_CFG_RUN);
    assert_true (c.memory);
    //  A NOARG flag takes no value on the command line...
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--memory=false", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (c.calls, 0);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--memory", "false", NULL), DQ_CFG_ERR_USAGE);
    //  ...but does in the file and the environment.
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_RUN);
    assert_true (c.memory);
    setenv ("DAGQ_MEMORY", "0", 1);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_RUN);
    assert_false (c.memory);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, "--memory", NULL), DQ_CFG_RUN);
    assert_true (c.memory);
    setenv ("DAGQ_MEMORY", "on", 1);
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--memory", NULL), DQ_CFG_ERR_CONFIG);
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_unknown_key (void **state)
{
    (void) state;
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    //  Keys of other sections are not ours to judge.
    const char *path = s_write_file ("other\n    colour = red\ntest\n    count = 4\n");
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_RUN);
    assert_int_equal (c.count, 4);
    path = s_write_file ("test\n    count = 4\n    colour = red\n    name = x\n");
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_ERR_CONFIG);
    assert_int_equal (c.calls, 1);
    //  A key with no value reads as empty.
    path = s_write_file ("test\n    name\n");
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_RUN);
    assert_string_equal (c.name, "");
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_errors (void **state)
{
    (void) state;
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    //  Bad values: the command line is a usage error, the rest config errors.
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--count", "1", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "--mode", "slow", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "--count", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "--bogus", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "stray", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "--config", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "--config", "/nonexistent/x.cfg", NULL),
                      DQ_CFG_ERR_CONFIG);
    const char *path = s_write_file ("test\n    max-size = 1K\n");
    assert_int_equal (s_load (cfg, &c, "--config", path, NULL), DQ_CFG_ERR_CONFIG);
    setenv ("DAGQ_TTL", "forever", 1);
    assert_int_equal (s_load (cfg, &c, NULL), DQ_CFG_ERR_CONFIG);
    unsetenv ("DAGQ_TTL");
    //  Errors come before anything is applied from a later layer.
    s_defaults (&c);
    setenv ("DAGQ_COUNT", "1000", 1);
    assert_int_equal (s_load (cfg, &c, "--name", "x", NULL), DQ_CFG_ERR_CONFIG);
    assert_string_equal (c.name, "default");
    unsetenv ("DAGQ_COUNT");
    //  apply may refuse a value too.
    s_defaults (&c);
    c.refuse = T_NAME;
    assert_int_equal (s_load (cfg, &c, "--name", "x", NULL), DQ_CFG_ERR_USAGE);
    setenv ("DAGQ_NAME", "y", 1);
    assert_int_equal (s_load (cfg, &c, NULL), DQ_CFG_ERR_CONFIG);
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_help_version (void **state)
{
    (void) state;
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--help", NULL), DQ_CFG_HELP);
    assert_int_equal (s_load (cfg, &c, "-h", "--bogus", NULL), DQ_CFG_HELP);
    assert_int_equal (s_load (cfg, &c, "--bogus", "-h", NULL), DQ_CFG_ERR_USAGE);
    assert_int_equal (s_load (cfg, &c, "-V", NULL), DQ_CFG_VERSION);
    assert_int_equal (s_load (cfg, &c, "--config", "/nonexistent", "--version", NULL),
                      DQ_CFG_VERSION);
    //  Nothing is applied before help or version is seen.
    assert_int_equal (s_load (cfg, &c, "--count", "5", "--help", NULL), DQ_CFG_HELP);
    assert_int_equal (c.calls, 0);
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_bad_tables (void **state)
{
    (void) state;
    static const char *no_choices [] = { NULL };
    const dq_cfg_opt_t bad [] = {
        { "", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "Upper", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "a_b", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "-x", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "help", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "config", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "n", DQ_CFG_U32, "h", 5, 4, 0, NULL },
        { "n", DQ_CFG_U32, "h", 0, (uint64_t) UINT32_MAX + 1, 0, NULL },
        { "n", DQ_CFG_MS, "h", 10, 1, 0, NULL },
        { "n", DQ_CFG_STR, "h", 0, 0, DQ_CFG_NOARG, NULL },
        { "n", DQ_CFG_BOOL, "h", 0, 0, 4, NULL },
        { "n", DQ_CFG_CHOICE, "h", 0, 0, 0, NULL },
        { "n", DQ_CFG_CHOICE, "h", 0, 0, 0, no_choices },
        { "n", DQ_CFG_STR, NULL, 0, 0, 0, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        assert_null (dq_cfg_new ("test", "test", &bad [i], 1));
    const dq_cfg_opt_t twice [] = {
        { "n", DQ_CFG_STR, "h", 0, 0, 0, NULL },
        { "n", DQ_CFG_U32, "h", 0, 1, 0, NULL },
    };
    assert_null (dq_cfg_new ("test", "test", twice, 2));
    assert_null (dq_cfg_new ("test", "", s_opts, T_NOPTS));
    assert_null (dq_cfg_new (NULL, "test", s_opts, T_NOPTS));
    assert_null (dq_cfg_new ("test", "test", NULL, 1));
    //  An empty table is fine: only the fixed options.
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", NULL, 0);
    assert_non_null (cfg);
    conf_t c;
    s_defaults (&c);
    assert_int_equal (s_load (cfg, &c, "--print-config", NULL), DQ_CFG_RUN);
    assert_true (dq_cfg_print_requested (cfg));
    dq_cfg_destroy (&cfg);
}

static void
test_cfg_usage (void **state)
{
    (void) state;
    dq_cfg_t *cfg = dq_cfg_new ("test", "test", s_opts, T_NOPTS);
    assert_non_null (cfg);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    assert_non_null (out);
    dq_cfg_usage (cfg, out, 12, "deploy/dagq.cfg");
    assert_int_equal (fclose (out), 0);
    const char *expect =
        "  --name         a name\n"
        "  --count        a count\n"
        "  --big-number   a big number\n"
        "  --max-size     a size\n"
        "  --ttl          seconds\n"
        "  --memory       a flag\n"
        "  --mode         fast|safe|off\n"
        "  --log-level    error|warn|info|debug\n"
        "  --config FILE  read settings from a ZPL file (deploy/dagq.cfg)\n"
        "  --print-config print the effective settings and exit\n"
        "  -v, --verbose  same as --log-level debug\n"
        "  -h, --help     this help\n"
        "  -V, --version  print the version\n";
    assert_string_equal (text, expect);
    free (text);
    dq_cfg_destroy (&cfg);

    cfg = dq_cfg_new ("test", "test", s_opts, T_LEVEL);
    out = open_memstream (&text, &size);
    assert_non_null (out);
    dq_cfg_usage (cfg, out, 12, NULL);
    assert_int_equal (fclose (out), 0);
    assert_non_null (strstr (text, "  --config FILE  read settings from a ZPL file\n"));
    assert_null (strstr (text, "verbose"));
    free (text);
    dq_cfg_destroy (&cfg);
}

//  dq_util's UTF-8 check and clean-up (the broker's text rules).
static void
test_util_utf8 (void **state)
{
    (void) state;
    const char *good [] = { "", "plain ascii", "caf\xc3\xa9", "\xe2\x82\xac",
                            "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf" };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++)
        assert_true (dq_utf8_valid (good [i]));
    struct { const char *in, *clean; } bad [] = {
        { "\x80", "?" },                     //  lone continuation byte
        { "a\xc3", "a?" },                   //  truncated at the end
        { "\xc0\xaf", "??" },                 //  overlong '/'
        { "\xe0\x80\xaf", "???" },           //  overlong, 3 bytes
        { "\xed\xa0\x80", "???" },           //  a UTF-16 surrogate
        { "\xf4\x90\x80\x80", "????" },       //  past U+10FFFF
        { "\xf8\x88\x80\x80\x80", "?????" },   //  5-byte form
        { "\xff\xfe\x80" "a", "???a" },
        { "ok \xc3\xa9 \xe9 ok", "ok \xc3\xa9 ? ok" },  //  good bytes kept
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        assert_false (dq_utf8_valid (bad [i].in));
        char buf [32];
        snprintf (buf, sizeof buf, "%s", bad [i].in);
        dq_utf8_clean (buf);
        assert_string_equal (buf, bad [i].clean);
        assert_true (dq_utf8_valid (buf));
    }
}

int
main (void)
{
    assert_non_null (mkdtemp (s_dir));
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_cfg_parse_numbers, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_parse_words, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_defaults_stay, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_precedence, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_last_wins_and_verbose, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_flags, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_unknown_key, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_errors, s_setup, s_teardown),
        cmocka_unit_test (test_util_utf8),
        cmocka_unit_test_setup_teardown (test_cfg_help_version, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_bad_tables, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_cfg_usage, s_setup, s_teardown),
    };
    int failed = cmocka_run_group_tests (tests, NULL, NULL);
    rmdir (s_dir);
    return failed;
}
