/* hostport: "host:port" / "[IPv6]:port" parsing and printing (hostport.h). */
#include "hostport.h"

#include "pb_errors.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define EXAMPLE "(e.g. 127.0.0.1:7420 or [::1]:7420)"

/* Decimal digits only, no sign, no spaces; *port <= 65535. */
static bool parse_port(const char *s, uint16_t *port)
{
    uint32_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (uint32_t)(*s - '0');
        if (v > 65535)
            return false;
    }
    *port = (uint16_t)v;
    return true;
}

int hostport_parse(const char *s, unsigned flags, hostport *out, char *err, size_t errlen)
{
    const char *host = s, *port;
    size_t host_len;
    bool bracketed = s[0] == '[';
    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            goto not_host_port;
        host = s + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            goto not_host_port;
        host_len = (size_t)(colon - s);
        if (memchr(s, ':', host_len)) {
            pb_set_err(err, errlen, "\"%s\": put an IPv6 address in brackets, e.g. [::1]:7420", s);
            return PB_EINVAL;
        }
        port = colon + 1;
    }
    if (host_len == 0) {
        pb_set_err(err, errlen, "\"%s\": the host is empty %s", s, EXAMPLE);
        return PB_EINVAL;
    }
    if (host_len > HOSTPORT_HOST_MAX) {
        pb_set_err(err, errlen, "\"%s\": the host is longer than %d bytes", s, HOSTPORT_HOST_MAX);
        return PB_EINVAL;
    }
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->bracketed = bracketed;
    if (flags & HOSTPORT_NUMERIC) {
        unsigned char addr[sizeof(struct in6_addr)];
        if (inet_pton(bracketed ? AF_INET6 : AF_INET, out->host, addr) != 1) {
            pb_set_err(err, errlen, "\"%s\": \"%s\" is not a numeric %s address", s, out->host,
                       bracketed ? "IPv6" : "IPv4");
            return PB_EINVAL;
        }
    }
    unsigned min_port = flags & HOSTPORT_PORT_ZERO ? 0 : 1;
    if (!parse_port(port, &out->port) || out->port < min_port) {
        pb_set_err(err, errlen, "\"%s\": port must be a number %u..65535", s, min_port);
        return PB_EINVAL;
    }
    return 0;
not_host_port:
    pb_set_err(err, errlen, "\"%s\" is not host:port %s", s, EXAMPLE);
    return PB_EINVAL;
}

void hostport_format(char *out, size_t len, const char *host, unsigned port)
{
    if (strchr(host, ':'))
        snprintf(out, len, "[%s]:%u", host, port);
    else
        snprintf(out, len, "%s:%u", host, port);
}

bool hostport_format_sockaddr(char *out, size_t len, const struct sockaddr *sa)
{
    char host[INET6_ADDRSTRLEN];
    unsigned port;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host))
            return false;
        port = ntohs(a->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host))
            return false;
        port = ntohs(a->sin6_port);
    } else {
        return false;
    }
    hostport_format(out, len, host, port);
    return true;
}
