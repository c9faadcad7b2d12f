/*
 * passwd - `protobus passwd`: prints the argon2id hash of a password, for
 * a [user NAME] section's password_hash; and the credentials the other
 * commands send with --user NAME (the password from $PROTOBUS_PASSWORD or
 * read from the terminal without echo; never from the command line, where
 * every user of the machine could read it in the process list).
 *
 * Hash parameters: argon2id, t = 2, m = 19 MiB, p = 1 (OWASP's minimum for
 * argon2id): ~20-40 ms to verify on this project's machine, and the
 * parameters travel inside the hash, so stronger ones can be chosen later
 * without breaking old hashes.
 *
 * Threads: the main thread only.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define PASSWD_OPSLIMIT 2
#define PASSWD_MEMLIMIT (19u << 20)

static const char usage[] =
    "Usage: protobus passwd [--stdin]\n"
    "\n"
    "Reads a password and prints its argon2id hash (t=2, m=19 MiB, p=1), for\n"
    "the password_hash of a [user NAME] section of protobusd's configuration:\n"
    "\n"
    "  [user alice]\n"
    "  password_hash = $argon2id$v=19$m=19456,t=2,p=1$...\n"
    "\n"
    "From a terminal the password is asked twice, without echo; otherwise (or\n"
    "with --stdin) it is the first line of standard input.\n"
    "\n"
    "Options:\n"
    "      --stdin   read the password from standard input even on a terminal\n"
    "  -h, --help    show this help\n";

/* One line (without its newline) from fd into buf; false at EOF before
 * anything, or if it does not fit. */
static bool read_line(int fd, char *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    bool any = false;
    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        any = true;
        if (ch == '\n')
            break;
        if (n + 1 >= cap)
            return false;
        buf[n++] = ch;
    }
    if (n && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    *len = n;
    return any;
}

bool cli_read_password(const char *cmd, const char *prompt, char *buf, size_t cap)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        cli_error(cmd,
                  "no terminal to ask for the password (/dev/tty: %s); set "
                  "PROTOBUS_PASSWORD",
                  strerror(errno));
        return false;
    }
    struct termios old, quiet;
    bool restore = tcgetattr(fd, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* the prompt is a courtesy: reading still works */
    }
    size_t len;
    bool ok = read_line(fd, buf, cap, &len);
    if (restore)
        (void)tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) {
        /* as above */
    }
    close(fd);
    if (!ok)
        cli_error(cmd, "no password read (or longer than %zu bytes)", cap - 1);
    return ok;
}

bool cli_credentials(const char *cmd, const char *user, pb_client_options *opts, char *buf,
                     size_t cap)
{
    if (!user)
        return true;
    const char *env = getenv("PROTOBUS_PASSWORD");
    if (env) {
        if (strlen(env) >= cap) {
            cli_error(cmd, "PROTOBUS_PASSWORD is longer than %zu bytes", cap - 1);
            return false;
        }
        snprintf(buf, cap, "%s", env);
    } else {
        char prompt[128];
        snprintf(prompt, sizeof prompt, "Password for %.64s: ", user);
        if (!cli_read_password(cmd, prompt, buf, cap))
            return false;
    }
    opts->user = user;
    opts->password = buf;
    return true;
}

int cli_connect(const char *cmd, pb_client **c, const char *server, const char *user,
                pb_client_options *opts)
{
    char err[256];
    char password[1024];
    if (!cli_credentials(cmd, user, opts, password, sizeof password))
        return CLI_EXIT_RUNTIME;
    int rc = pb_client_connect(c, server, opts, err, sizeof err);
    explicit_bzero(password, sizeof password); /* a plain memset of a dying buffer may go */
    opts->password = NULL;
    if (rc < 0) {
        cli_error(cmd, "%s", err);
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}

/* The password to hash, into buf: from the terminal (twice) or stdin. */
static int read_new_password(bool from_stdin, char *buf, size_t cap)
{
    size_t len;
    if (from_stdin || !isatty(STDIN_FILENO)) {
        if (!read_line(STDIN_FILENO, buf, cap, &len)) {
            cli_error("passwd", "no password on standard input (or longer than %zu bytes)",
                      cap - 1);
            return CLI_EXIT_RUNTIME;
        }
    } else {
        char again[1024];
        if (!cli_read_password("passwd", "New password: ", buf, cap) ||
            !cli_read_password("passwd", "Again: ", again, sizeof again))
            return CLI_EXIT_RUNTIME;
        bool same = strcmp(buf, again) == 0;
        sodium_memzero(again, sizeof again);
        if (!same) {
            cli_error("passwd", "the two passwords differ; nothing printed");
            return CLI_EXIT_RUNTIME;
        }
        len = strlen(buf);
    }
    if (len == 0) {
        cli_error("passwd", "empty password refused");
        return CLI_EXIT_RUNTIME;
    }
    return CLI_EXIT_OK;
}

int cmd_passwd(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"stdin", no_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool from_stdin = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'i':
            from_stdin = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return cli_flush_stdout("passwd") ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
        default:
            return cli_try_help("passwd");
        }
    }
    if (optind < argc)
        return cli_usage_error("passwd", "unexpected argument (the password is never given on "
                                         "the command line)");
    if (sodium_init() < 0) {
        cli_error("passwd", "libsodium failed to initialise");
        return CLI_EXIT_RUNTIME;
    }
    char pw[1024];
    int rc = read_new_password(from_stdin, pw, sizeof pw);
    if (rc != CLI_EXIT_OK) {
        sodium_memzero(pw, sizeof pw);
        return rc;
    }
    char hash[crypto_pwhash_STRBYTES];
    int hr = crypto_pwhash_str(hash, pw, strlen(pw), PASSWD_OPSLIMIT, PASSWD_MEMLIMIT);
    sodium_memzero(pw, sizeof pw);
    if (hr != 0) {
        cli_error("passwd", "hashing failed (out of memory?)");
        return CLI_EXIT_RUNTIME;
    }
    printf("%s\n", hash);
    return cli_flush_stdout("passwd") ? CLI_EXIT_OK : CLI_EXIT_RUNTIME;
}
