/*  dq_cfg.h - table-driven settings for the dagq programs.

    A program describes its settings in one table of dq_cfg_opt_t (name,
    kind, help, bounds). Each setting is then, with the same name:
      --name VALUE on the command line,
      DAGQ_NAME in the environment (dashes become underscores, upper case),
      <section>/name in a ZPL file given with --config FILE.
    dq_cfg_load applies them in that order of strength: file < environment <
    command line (defaults are whatever the program filled in first). Every
    value is checked against its kind and bounds, then handed to the
    program's apply function, which stores it in its own config struct.

    The loader also owns the fixed options: --config FILE, --print-config,
    -h/--help, -V/--version, and -v/--verbose (same as --<level option>
    debug) when the table has a DQ_CFG_LEVEL setting.

    Messages go to stderr as "<program>: <where>: --<name> must be ..., not
    '<value>'", where <where> is the file path, the variable name or
    "command line".
*/
#ifndef DQ_CFG_H_INCLUDED
#define DQ_CFG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    DQ_CFG_STR,        //  any text, "" included
    DQ_CFG_U32,        //  decimal integer in [min, max]; max <= UINT32_MAX
    DQ_CFG_U64,        //  decimal integer in [min, max]
    DQ_CFG_SIZE,       //  bytes, optional K/M/G suffix (1024s), in [min, max]
    DQ_CFG_MS,         //  seconds, fractions allowed ("2.5"), kept as ms;
                       //  min and max are in ms
    DQ_CFG_BOOL,       //  true, false, 1 or 0
    DQ_CFG_CHOICE,     //  one of the opt's choices (index)
    DQ_CFG_LEVEL       //  error, warn, info or debug (DQ_LOG_*)
} dq_cfg_kind_t;

//  Flag of a DQ_CFG_BOOL setting: on the command line it takes no argument
//  and means true (--memory); file and environment still say true/false.
#define DQ_CFG_NOARG 1

typedef struct {
    const char *name;              //  lower case, digits and '-'
    dq_cfg_kind_t kind;
    const char *help;              //  one line for --help
    uint64_t min, max;             //  numeric kinds only
    int flags;                     //  DQ_CFG_NOARG or 0
    const char *const *choices;    //  DQ_CFG_CHOICE: NULL-terminated names
} dq_cfg_opt_t;

//  A checked value, as handed to the apply function.
typedef struct {
    const char *str;       //  the text as given ("true" for a NOARG flag);
                           //  borrowed, valid until dq_cfg_destroy
    uint64_t num;          //  U32, U64, SIZE: the number; MS: milliseconds;
                           //  BOOL: 0 or 1
    bool on;               //  BOOL: the value
    int index;             //  CHOICE: index in choices; LEVEL: DQ_LOG_*
} dq_cfg_value_t;

//  Store setting opts [index] with this value in the program's config (arg).
//  Returns 0, or -1 after printing why the value is refused.
typedef int (dq_cfg_apply_fn) (void *arg, size_t index, const dq_cfg_value_t *value);

//  What dq_cfg_load found.
typedef enum {
    DQ_CFG_RUN = 0,        //  all settings applied: go on
    DQ_CFG_HELP,           //  --help: print the usage, exit 0
    DQ_CFG_VERSION,        //  --version: print the version, exit 0
    DQ_CFG_ERR_USAGE,      //  bad command line, message printed
    DQ_CFG_ERR_CONFIG      //  bad file or environment, message printed
} dq_cfg_status_t;

typedef struct _dq_cfg_t dq_cfg_t;

//  Create a loader for program (the name in messages, e.g. "dagq-broker")
//  whose file settings live in section (e.g. "broker"). Borrows opts, which
//  must outlive the loader. Returns NULL if the table is malformed: empty
//  or bad name, duplicate or reserved name (config, print-config, verbose,
//  help, version), bounds out of order, U32 max above UINT32_MAX, NOARG on
//  a kind other than BOOL, CHOICE without choices.
dq_cfg_t *
    dq_cfg_new (const char *program, const char *section,
                const dq_cfg_opt_t *opts, size_t nopts);

//  Destroy the loader and nullify the caller's reference. Strings handed to
//  apply (dq_cfg_value_t.str) from the file die with it. NULL-safe.
void
    dq_cfg_destroy (dq_cfg_t **self_p);

//  Check text as a value of opt. Returns 0 with *value filled, or -1 with a
//  message "--name must be ..., not 'text'" in err (may be NULL).
int
    dq_cfg_parse (const dq_cfg_opt_t *opt, const char *text,
                  dq_cfg_value_t *value, char *err, size_t err_size);

//  Read argv (getopt_long, so argv may be permuted), then the --config
//  file, the environment and the command line, calling apply for every
//  setting found, in that order. Stops at the first error. --help and
//  --version win if they come before any bad option. Returns a
//  dq_cfg_status_t.
int
    dq_cfg_load (dq_cfg_t *self, int argc, char *argv [],
                 dq_cfg_apply_fn *apply, void *arg);

//  True if --print-config was given.
bool
    dq_cfg_print_requested (dq_cfg_t *self);

//  The --config file given, or NULL.
const char *
    dq_cfg_file (dq_cfg_t *self);

//  Env variable name of opts [index] ("DAGQ_DATA_DIR"), or NULL if out of range.
const char *
    dq_cfg_env_name (dq_cfg_t *self, size_t index);

//  List the settings and the fixed options for --help, one a line:
//  "  --name" padded to width columns, a space, then the help. example, if
//  not NULL, is named after --config's help, e.g. "deploy/dagq.cfg".
void
    dq_cfg_usage (dq_cfg_t *self, FILE *out, int width, const char *example);

#endif
