/*  dq_cli_keygen.c - `dagq keygen NAME [--force]`: write a CURVE
    certificate pair in czmq's zcert format: NAME (public, to hand to the
    other side) and NAME_secret (private, mode 0600).
*/
#include "dq_cli.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void
s_help (void)
{
    printf (
"Usage: dagq keygen NAME [--force]\n"
"\n"
"Write a new CURVE certificate pair (czmq zcert format): NAME holds the\n"
"public key, NAME_secret both keys (readable by you only). NAME is a path:\n"
"a plain name writes to the current directory. Existing files are kept\n"
"unless --force is given.\n"
"\n"
"Give the broker its secret file and every client and worker the broker's\n"
"public file; clients use theirs with --curve-secret NAME_secret\n"
"--curve-broker-public BROKER_PUBLIC.\n"
"\n"
"Options:\n"
"  --force     overwrite existing files\n"
"  -h, --help  this help\n");
}

int
dq_cli_keygen (dq_cli_t *cli, int argc, char **argv)
{
    (void) cli;
    const char *cmd = "keygen";
    const char *name = NULL;
    bool force = false;
    dq_cli_args_t args;
    dq_cli_args_init (&args, cmd, argc, argv);
    const char *opt, *arg;
    int kind;
    while ((kind = dq_cli_args_next (&args, &opt, &arg)) >= 0) {
        if (kind == 0) {
            if (name)
                return dq_cli_usage (cmd, "one NAME only");
            name = arg;
        }
        else
        if (strcmp (opt, "--help") == 0) {
            s_help ();
            return DQ_CLI_EXIT_OK;
        }
        else
        if (strcmp (opt, "--force") == 0) {
            if (dq_cli_args_no_value (&args))
                return DQ_CLI_EXIT_USAGE;
            force = true;
        }
        else
            return dq_cli_usage (cmd, "unknown option '%s'", opt);
    }
    if (!name || !*name || strcmp (name, "-") == 0)
        return dq_cli_usage (cmd, "a certificate NAME is required");
    //  czmq builds "<NAME>_secret" in a 256-byte buffer.
    if (strlen (name) > 240)
        return dq_cli_usage (cmd, "NAME is too long (240 bytes at most)");
    if (name [strlen (name) - 1] == '/')
        return dq_cli_usage (cmd, "NAME must name a file, not a directory");
    if (!zmq_has ("curve"))
        return dq_cli_error (cmd, "this libzmq was built without CURVE support");
    char secret [300];
    snprintf (secret, sizeof secret, "%s_secret", name);
    if (!force) {
        const char *exists = access (name, F_OK) == 0? name
                           : access (secret, F_OK) == 0? secret: NULL;
        if (exists)
            return dq_cli_error (cmd, "%s already exists (use --force to replace "
                                 "it)", exists);
    }
    zcert_t *cert = zcert_new ();
    if (!cert)
        return dq_cli_error (cmd, "cannot generate a key pair");
    const char *base = strrchr (name, '/');
    zcert_set_meta (cert, "name", "%s", base? base + 1: name);
    zcert_set_meta (cert, "created-by", "dagq keygen");
    //  The secret file is private from its creation: no window in which
    //  another user could open it.
    mode_t old_mask = umask (077);
    int rc = zcert_save_secret (cert, secret);
    int err = errno;
    umask (old_mask);
    if (rc == 0)
        chmod (secret, 0600);
    if (rc) {
        zcert_destroy (&cert);
        return dq_cli_error (cmd, "cannot write %s: %s", secret,
                             err? strerror (err): "write failed");
    }
    errno = 0;
    rc = zcert_save_public (cert, name);
    err = errno;
    char public_txt [41];
    snprintf (public_txt, sizeof public_txt, "%s", zcert_public_txt (cert));
    zcert_destroy (&cert);
    if (rc) {
        unlink (secret);
        return dq_cli_error (cmd, "cannot write %s: %s", name,
                             err? strerror (err): "write failed");
    }
    printf ("wrote %s (public key %s)\n", name, public_txt);
    printf ("wrote %s (secret: keep it private)\n", secret);
    return fflush (stdout)? DQ_CLI_EXIT_FAIL: DQ_CLI_EXIT_OK;
}
