/*  dq_cfg.c - table-driven settings: parse, layer, list. See dq_cfg.h.

    getopt_long is run twice over argv: first for the fixed options (so
    --config is known before anything is applied, and --help or a bad flag
    stops us before any file is read), then, after the file and the
    environment, for the settings themselves, so the command line wins.
*/
#include "dq_cfg.h"

#include <ctype.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "dq_log.h"
#include "dq_util.h"

//  getopt codes of the settings: DQ_CFG_CODE + index, above any char.
#define DQ_CFG_CODE 1000
//  Fixed long options after the table: config, print-config, verbose,
//  help, version, and the terminator.
#define DQ_CFG_FIXED 6

struct _dq_cfg_t {
    char *program;
    char *section;
    const dq_cfg_opt_t *opts;
    size_t nopts;
    char **env;                 //  DAGQ_<NAME> of each setting
    struct option *longopts;    //  nopts + DQ_CFG_FIXED
    int level_opt;              //  index of the DQ_CFG_LEVEL setting, or -1
    const char *config_file;    //  from argv
    bool print_config;
    zconfig_t *file;            //  kept: values handed to apply point into it
};

static const char *s_levels [] = { "error", "warn", "info", "debug", NULL };

static const char *s_reserved [] = {
    "config", "print-config", "verbose", "help", "version", NULL
};

static bool
s_name_ok (const char *name)
{
    if (!name || !*name || *name == '-' || strlen (name) > 64)
        return false;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return false;
    for (size_t i = 0; s_reserved [i]; i++)
        if (!strcmp (name, s_reserved [i]))
            return false;
    return true;
}

static bool
s_opt_ok (const dq_cfg_opt_t *o)
{
    if (!s_name_ok (o->name) || !o->help)
        return false;
    if ((o->flags & ~DQ_CFG_NOARG) || ((o->flags & DQ_CFG_NOARG) && o->kind != DQ_CFG_BOOL))
        return false;
    switch (o->kind) {
        case DQ_CFG_U32:
            return o->min <= o->max && o->max <= UINT32_MAX;
        case DQ_CFG_U64:
        case DQ_CFG_SIZE:
        case DQ_CFG_MS:
            return o->min <= o->max;
        case DQ_CFG_CHOICE:
            return o->choices && o->choices [0];
        case DQ_CFG_STR:
        case DQ_CFG_BOOL:
        case DQ_CFG_LEVEL:
            return true;
    }
    return false;
}

dq_cfg_t *
dq_cfg_new (const char *program, const char *section,
            const dq_cfg_opt_t *opts, size_t nopts)
{
    if (!program || !section || !*section || (nopts && !opts) || nopts > 10000)
        return NULL;
    int level_opt = -1;
    for (size_t i = 0; i < nopts; i++) {
        if (!s_opt_ok (&opts [i]))
            return NULL;
        for (size_t j = 0; j < i; j++)
            if (!strcmp (opts [i].name, opts [j].name))
                return NULL;
        if (opts [i].kind == DQ_CFG_LEVEL && level_opt < 0)
            level_opt = (int) i;
    }
    dq_cfg_t *self = (dq_cfg_t *) zmalloc (sizeof (dq_cfg_t));
    assert (self);
    self->program = strdup (program);
    self->section = strdup (section);
    self->env = (char **) calloc (nopts + 1, sizeof (char *));
    self->longopts = (struct option *) calloc (nopts + DQ_CFG_FIXED, sizeof (struct option));
    assert (self->program && self->section && self->env && self->longopts);
    self->opts = opts;
    self->nopts = nopts;
    self->level_opt = level_opt;
    for (size_t i = 0; i < nopts; i++) {
        //  DAGQ_ + the name, dashes to underscores, upper case.
        size_t len = strlen (opts [i].name);
        char *env = (char *) malloc (5 + len + 1);
        assert (env);
        memcpy (env, "DAGQ_", 5);
        for (size_t k = 0; k < len; k++) {
            char ch = opts [i].name [k];
            env [5 + k] = ch == '-'? '_': (char) toupper ((unsigned char) ch);
        }
        env [5 + len] = 0;
        self->env [i] = env;
        self->longopts [i] = (struct option) { opts [i].name,
            (opts [i].flags & DQ_CFG_NOARG)? no_argument: required_argument,
            NULL, DQ_CFG_CODE + (int) i };
    }
    struct option *fixed = self->longopts + nopts;
    size_t at = 0;
    fixed [at++] = (struct option) { "config", required_argument, NULL, 'c' };
    fixed [at++] = (struct option) { "print-config", no_argument, NULL, 'p' };
    if (level_opt >= 0)
        fixed [at++] = (struct option) { "verbose", no_argument, NULL, 'v' };
    fixed [at++] = (struct option) { "help", no_argument, NULL, 'h' };
    fixed [at++] = (struct option) { "version", no_argument, NULL, 'V' };
    fixed [at] = (struct option) { NULL, 0, NULL, 0 };
    return self;
}

void
dq_cfg_destroy (dq_cfg_t **self_p)
{
    assert (self_p);
    dq_cfg_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->nopts; i++)
        free (self->env [i]);
    free (self->env);
    free (self->longopts);
    free (self->program);
    free (self->section);
    zconfig_destroy (&self->file);
    free (self);
    *self_p = NULL;
}

//  "a, b or c" from a NULL-terminated list, truncated to fit.
static void
s_join_choices (const char *const *choices, char *buf, size_t size)
{
    size_t n = 0;
    while (choices [n])
        n++;
    size_t at = 0;
    buf [0] = 0;
    for (size_t i = 0; i < n && at < size; i++) {
        const char *sep = i == 0? "": i + 1 == n? " or ": ", ";
        int w = snprintf (buf + at, size - at, "%s%s", sep, choices [i]);
        if (w < 0)
            break;
        at += (size_t) w;
    }
}

//  Milliseconds as seconds: "86400", "0.001", "2.5".
static void
s_format_seconds (uint64_t ms, char *buf, size_t size)
{
    if (ms % 1000 == 0)
        snprintf (buf, size, "%llu", (unsigned long long) (ms / 1000));
    else {
        char frac [4];
        snprintf (frac, sizeof frac, "%03u", (unsigned) (ms % 1000));
        for (int i = 2; i > 0 && frac [i] == '0'; i--)
            frac [i] = 0;
        snprintf (buf, size, "%llu.%s", (unsigned long long) (ms / 1000), frac);
    }
}

int
dq_cfg_parse (const dq_cfg_opt_t *o, const char *text, dq_cfg_value_t *value,
              char *err, size_t err_size)
{
    assert (o && value);
    char dummy [1];
    if (!err || !err_size) {
        err = dummy;
        err_size = sizeof dummy;
    }
    err [0] = 0;
    if (!text)
        text = "";
    dq_cfg_value_t v = { text, 0, false, 0 };
    unsigned long long lo = o->min, hi = o->max;
    switch (o->kind) {
        case DQ_CFG_STR:
            break;
        case DQ_CFG_U32:
        case DQ_CFG_U64:
            if (dq_parse_u64 (text, o->min, o->max, &v.num)) {
                snprintf (err, err_size, "--%s must be an integer in [%llu, %llu], "
                          "not '%s'", o->name, lo, hi, text);
                return -1;
            }
            break;
        case DQ_CFG_SIZE:
            if (dq_parse_size (text, &v.num) || v.num < o->min || v.num > o->max) {
                snprintf (err, err_size, "--%s must be a size (e.g. 512K, 16M) in "
                          "[%llu, %llu], not '%s'", o->name, lo, hi, text);
                return -1;
            }
            break;
        case DQ_CFG_MS:
            //  The parser bounds whole seconds; the table bounds are in ms.
            if (dq_parse_seconds_ms (text, (double) o->max / 1000.0, &v.num)
            ||  v.num < o->min || v.num > o->max) {
                char min_s [32], max_s [32];
                s_format_seconds (o->min, min_s, sizeof min_s);
                s_format_seconds (o->max, max_s, sizeof max_s);
                snprintf (err, err_size, "--%s must be seconds (e.g. 2.5) in [%s, %s], "
                          "not '%s'", o->name, min_s, max_s, text);
                return -1;
            }
            break;
        case DQ_CFG_BOOL:
            if (!strcmp (text, "true") || !strcmp (text, "1"))
                v.on = true;
            else
            if (strcmp (text, "false") && strcmp (text, "0")) {
                snprintf (err, err_size, "--%s must be true or false, not '%s'",
                          o->name, text);
                return -1;
            }
            v.num = v.on;
            break;
        case DQ_CFG_CHOICE:
        case DQ_CFG_LEVEL: {
            const char *const *names = o->kind == DQ_CFG_LEVEL? s_levels: o->choices;
            int found = -1;
            if (o->kind == DQ_CFG_LEVEL)
                found = dq_log_parse_level (text);
            else
                for (int i = 0; names [i] && found < 0; i++)
                    if (!strcmp (text, names [i]))
                        found = i;
            if (found < 0) {
                char list [256];
                s_join_choices (names, list, sizeof list);
                snprintf (err, err_size, "--%s must be %s, not '%s'", o->name, list, text);
                return -1;
            }
            v.index = found;
            break;
        }
    }
    *value = v;
    return 0;
}

//  Check and apply one value; prints the message on failure.
static int
s_set (dq_cfg_t *self, size_t index, const char *text, const char *source,
       dq_cfg_apply_fn *apply, void *arg)
{
    dq_cfg_value_t value;
    char err [512];
    if (dq_cfg_parse (&self->opts [index], text, &value, err, sizeof err)) {
        fprintf (stderr, "%s: %s: %s\n", self->program, source, err);
        return -1;
    }
    return apply (arg, index, &value);
}

static int
s_find (dq_cfg_t *self, const char *name)
{
    for (size_t i = 0; name && i < self->nopts; i++)
        if (!strcmp (self->opts [i].name, name))
            return (int) i;
    return -1;
}

//  The file's section, in file order. Unknown keys are errors: a typo
//  must not silently leave a default in place.
static int
s_load_file (dq_cfg_t *self, dq_cfg_apply_fn *apply, void *arg)
{
    self->file = zconfig_load (self->config_file);
    if (!self->file) {
        fprintf (stderr, "%s: cannot read config file %s\n",
                 self->program, self->config_file);
        return -1;
    }
    zconfig_t *section = zconfig_locate (self->file, self->section);
    for (zconfig_t *item = section? zconfig_child (section): NULL; item;
         item = zconfig_next (item)) {
        int index = s_find (self, zconfig_name (item));
        if (index < 0) {
            fprintf (stderr, "%s: %s: unknown setting %s/%s\n", self->program,
                     self->config_file, self->section,
                     zconfig_name (item)? zconfig_name (item): "");
            return -1;
        }
        const char *text = zconfig_value (item);
        if (s_set (self, (size_t) index, text? text: "", self->config_file, apply, arg))
            return -1;
    }
    return 0;
}

int
dq_cfg_load (dq_cfg_t *self, int argc, char *argv [],
             dq_cfg_apply_fn *apply, void *arg)
{
    assert (self && apply);
    assert (argc >= 1 && argv);
    const char *shortopts = self->level_opt >= 0? "vhV": "hV";
    self->config_file = NULL;
    self->print_config = false;
    zconfig_destroy (&self->file);

    //  First pass: the fixed options and usage errors (getopt prints them).
    int c;
    optind = 0;                 //  glibc: full rescan, also on a second load
    opterr = 1;
    while ((c = getopt_long (argc, argv, shortopts, self->longopts, NULL)) != -1) {
        if (c == 'c')
            self->config_file = optarg;
        else
        if (c == 'p')
            self->print_config = true;
        else
        if (c == 'h')
            return DQ_CFG_HELP;
        else
        if (c == 'V')
            return DQ_CFG_VERSION;
        else
        if (c == '?' || c == ':') {
            fprintf (stderr, "Try '%s --help'.\n", self->program);
            return DQ_CFG_ERR_USAGE;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n",
                 self->program, argv [optind], self->program);
        return DQ_CFG_ERR_USAGE;
    }
    //  File, then environment, then command line.
    if (self->config_file && s_load_file (self, apply, arg))
        return DQ_CFG_ERR_CONFIG;
    for (size_t i = 0; i < self->nopts; i++) {
        const char *text = getenv (self->env [i]);
        if (text && s_set (self, i, text, self->env [i], apply, arg))
            return DQ_CFG_ERR_CONFIG;
    }
    optind = 0;
    opterr = 0;
    while ((c = getopt_long (argc, argv, shortopts, self->longopts, NULL)) != -1) {
        int rc = 0;
        if (c == 'v')
            rc = s_set (self, (size_t) self->level_opt, "debug", "command line", apply, arg);
        else
        if (c >= DQ_CFG_CODE && (size_t) (c - DQ_CFG_CODE) < self->nopts) {
            size_t index = (size_t) (c - DQ_CFG_CODE);
            const char *text = (self->opts [index].flags & DQ_CFG_NOARG)? "true": optarg;
            rc = s_set (self, index, text, "command line", apply, arg);
        }
        if (rc)
            return DQ_CFG_ERR_USAGE;
    }
    return DQ_CFG_RUN;
}

bool
dq_cfg_print_requested (dq_cfg_t *self)
{
    assert (self);
    return self->print_config;
}

const char *
dq_cfg_file (dq_cfg_t *self)
{
    assert (self);
    return self->config_file;
}

const char *
dq_cfg_env_name (dq_cfg_t *self, size_t index)
{
    assert (self);
    return index < self->nopts? self->env [index]: NULL;
}

void
dq_cfg_usage (dq_cfg_t *self, FILE *out, int width, const char *example)
{
    assert (self && out);
    if (width < 0)
        width = 0;
    for (size_t i = 0; i < self->nopts; i++)
        fprintf (out, "  --%-*s %s\n", width, self->opts [i].name, self->opts [i].help);
    int left = width + 2;       //  the fixed lines have no "--" prefix column
    if (example)
        fprintf (out, "  %-*s read settings from a ZPL file (%s)\n", left, "--config FILE",
                 example);
    else
        fprintf (out, "  %-*s read settings from a ZPL file\n", left, "--config FILE");
    fprintf (out, "  %-*s print the effective settings and exit\n", left, "--print-config");
    if (self->level_opt >= 0)
        fprintf (out, "  %-*s same as --%s debug\n", left, "-v, --verbose",
                 self->opts [self->level_opt].name);
    fprintf (out, "  %-*s this help\n", left, "-h, --help");
    fprintf (out, "  %-*s print the version\n", left, "-V, --version");
}
