/*
 * hostport - network addresses written as text, one convention for the
 * daemon and the client: "host:port", and "[address]:port" when the host is
 * an IPv6 address (its colons would otherwise run into the port's). Parsed
 * from configuration, --listen and pb_client_connect's address; printed in
 * every log line and message that names a listener or a peer.
 *
 * Threads: any; pure functions on caller-owned memory. No I/O: resolving a
 * name is the caller's business (getaddrinfo).
 */
#ifndef PB_HOSTPORT_H
#define PB_HOSTPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

#define HOSTPORT_HOST_MAX 255 /* longest host accepted: a DNS name's limit */
/* Room for any address hostport_format_sockaddr prints:
 * "[" + 45-byte IPv6 text + "]:65535" + NUL. */
#define HOSTPORT_SOCKADDR_LEN 56

typedef struct hostport {
    char host[HOSTPORT_HOST_MAX + 1]; /* NUL-terminated, without the brackets */
    uint16_t port;
    bool bracketed; /* it was written "[host]:port" (an IPv6 address) */
} hostport;

/* Flags of hostport_parse. */
enum {
    /* The host must be a numeric address: IPv4 as such, IPv6 in brackets
     * (to bind a listener to one known address; no name is resolved). */
    HOSTPORT_NUMERIC = 1u << 0,
    /* Port 0 is allowed ("any free port", for a listener). Without it the
     * port must be 1..65535. */
    HOSTPORT_PORT_ZERO = 1u << 1,
};

/*
 * Parses "host:port" or "[host]:port" into *out. The host must not be
 * empty; outside brackets it must not contain ':' (an IPv6 address needs
 * them); the port is decimal digits only. 0, or PB_EINVAL with err (if not
 * NULL and errlen > 0) starting with the quoted input and saying what is
 * wrong, e.g. "\"::1:80\": put an IPv6 address in brackets, e.g.
 * [::1]:7420", so a caller prefixes only what the address was for.
 */
int hostport_parse(const char *s, unsigned flags, hostport *out, char *err, size_t errlen);

/* Writes host and port in the convention above into out (snprintf rules:
 * always NUL-terminated when len > 0, truncated if too long). Brackets are
 * added when host contains ':'. */
void hostport_format(char *out, size_t len, const char *host, unsigned port);

/* The same for an AF_INET or AF_INET6 socket address (a peer from
 * getpeername or accept). false, and out untouched, for other families. */
bool hostport_format_sockaddr(char *out, size_t len, const struct sockaddr *sa);

#endif
