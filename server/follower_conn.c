/*
 * follower_conn - a hot standby's connection to its primary: TCP connect
 * (bounded, stoppable), then TLS when follow_tls is set (OpenSSL on the
 * non-blocking socket, TLS 1.2 at least, the primary's certificate checked
 * against follow_ca or the system's CAs and against the host name or IP
 * address of `follow`; a client certificate for mutual TLS), and the reads
 * and writes of the session through either. Every wait is a poll that the
 * stop eventfd interrupts.
 *
 * Threads: follower_conn_setup / teardown on the main thread (start, stop);
 * the rest on the follower's thread.
 */
#include "follower_internal.h"

#include "pb_errors.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNECT_WAIT_MS 5000
/* A write the primary does not take for this long ends the session. */
#define SEND_WAIT_MS 20000
#define PASSWORD_MAX 1024

int follower_wait_fd(follower *f, int fd, short events, int ms)
{
    struct pollfd pf[2] = {{.fd = f->stop_fd, .events = POLLIN}, {.fd = fd, .events = events}};
    int n = poll(pf, fd >= 0 ? 2 : 1, ms);
    if (atomic_load(&f->stopping) || (n > 0 && (pf[0].revents & POLLIN)))
        return PB_ECLOSED;
    return n > 0 ? 1 : 0;
}

/* OpenSSL's reason for the last failure (the certificate check's, if it
 * was that). */
static void ssl_reason(SSL *ssl, char *out, size_t n)
{
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = ERR_get_error();
    if (v != X509_V_OK) {
        snprintf(out, n, "the primary's certificate failed verification: %s",
                 X509_verify_cert_error_string(v));
    } else if (e) {
        char buf[200];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, n, "%s", buf);
    } else {
        snprintf(out, n,
                 "the primary closed the connection during the handshake (is it "
                 "listening with TLS?)");
    }
    ERR_clear_error();
}

/* follow_password_file: its first line, without the line end. */
static int read_password(follower *f, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "re");
    if (!fp) {
        snprintf(err, errlen, "follow_password_file %s: %s", path, strerror(errno));
        return PB_EINVAL;
    }
    char line[PASSWORD_MAX + 2];
    bool got = fgets(line, sizeof line, fp) != NULL;
    fclose(fp);
    size_t len = got ? strcspn(line, "\r\n") : 0;
    if (len == 0 || len > PASSWORD_MAX) {
        snprintf(err, errlen, "follow_password_file %s: %s", path,
                 len == 0 ? "the first line is empty (it holds the password)"
                          : "the first line is longer than 1024 bytes");
        explicit_bzero(line, sizeof line);
        return PB_EINVAL;
    }
    f->password = strndup(line, len);
    explicit_bzero(line, sizeof line);
    return f->password ? 0 : PB_ENOMEM;
}

/* The TLS context of follow_tls: CAs and the client certificate. */
static int tls_setup(follower *f, char *err, size_t errlen)
{
    const follower_options *o = &f->o;
    char why[300];
    f->tls = SSL_CTX_new(TLS_client_method());
    if (!f->tls) {
        snprintf(err, errlen, "follow_tls: out of memory for TLS");
        return PB_ENOMEM;
    }
    SSL_CTX_set_min_proto_version(f->tls, TLS1_2_VERSION);
    SSL_CTX_set_mode(f->tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(f->tls, SSL_VERIFY_PEER, NULL);
    if (o->tls_ca ? SSL_CTX_load_verify_locations(f->tls, o->tls_ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(f->tls) != 1) {
        ssl_reason(NULL, why, sizeof why);
        snprintf(err, errlen, "follow_ca %s: cannot load the CA certificates: %s",
                 o->tls_ca ? o->tls_ca : "(the system's)", why);
        return PB_EINVAL;
    }
    if (o->tls_cert && (SSL_CTX_use_certificate_chain_file(f->tls, o->tls_cert) != 1 ||
                        SSL_CTX_use_PrivateKey_file(f->tls, o->tls_key, SSL_FILETYPE_PEM) != 1 ||
                        SSL_CTX_check_private_key(f->tls) != 1)) {
        ssl_reason(NULL, why, sizeof why);
        snprintf(err, errlen, "follow_tls_cert %s / follow_tls_key %s: %s", o->tls_cert, o->tls_key,
                 why);
        return PB_EINVAL;
    }
    return 0;
}

int follower_conn_setup(follower *f, char *err, size_t errlen)
{
    if (f->o.password_file) {
        int rc = read_password(f, f->o.password_file, err, errlen);
        if (rc < 0)
            return rc;
    } else if (f->o.password && !(f->password = strdup(f->o.password))) {
        return PB_ENOMEM;
    }
    f->o.password = NULL; /* the copy above is the one used */
    return f->o.tls ? tls_setup(f, err, errlen) : 0;
}

void follower_conn_teardown(follower *f)
{
    if (f->password) {
        explicit_bzero(f->password, strlen(f->password));
        free(f->password);
        f->password = NULL;
    }
    SSL_CTX_free(f->tls);
    f->tls = NULL;
}

/* One address: a non-blocking connect, waited for up to CONNECT_WAIT_MS.
 * The socket, or -1 with why set. */
static int connect_one(follower *f, const struct addrinfo *a, char *why, size_t n)
{
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) {
        snprintf(why, n, "socket: %s", strerror(errno));
        return -1;
    }
    int r = connect(fd, a->ai_addr, a->ai_addrlen);
    if (r < 0 && errno == EINPROGRESS) {
        if (follower_wait_fd(f, fd, POLLOUT, CONNECT_WAIT_MS) == 1) {
            int e = 0;
            socklen_t el = sizeof e;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
            errno = e;
            r = e ? -1 : 0;
        } else {
            errno = ETIMEDOUT;
        }
    }
    if (r < 0) {
        snprintf(why, n, "connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    /* Without it, a ReplicaAck sent while the previous one is not yet
     * ACKed by the primary's kernel waits (Nagle) for that ACK, which the
     * primary may delay (up to 40 ms) when it has nothing to send: in the
     * synchronous mode its publishes wait for exactly that ReplicaAck. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* a hint: acks still flow */
    return fd;
}

/* The TLS handshake on f->fd, bounded by CONNECT_WAIT_MS. */
static int tls_handshake(follower *f, char *why, size_t n)
{
    f->ssl = SSL_new(f->tls);
    if (!f->ssl || SSL_set_fd(f->ssl, f->fd) != 1) {
        snprintf(why, n, "out of memory for TLS");
        return PB_ENOMEM;
    }
    /* The certificate must name what `follow` says. */
    struct in6_addr a6;
    struct in_addr a4;
    const char *host = f->hp.host;
    if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(f->ssl), host);
    } else {
        SSL_set_tlsext_host_name(f->ssl, host);
        SSL_set1_host(f->ssl, host);
    }
    for (int waited = 0;;) {
        int r = SSL_connect(f->ssl);
        if (r == 1)
            return 0;
        int e = SSL_get_error(f->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            char reason[300];
            ssl_reason(f->ssl, reason, sizeof reason);
            snprintf(why, n, "TLS handshake failed: %s", reason);
            return PB_ECONNECT;
        }
        if (waited >= CONNECT_WAIT_MS) {
            snprintf(why, n, "TLS handshake: no answer within %d ms", CONNECT_WAIT_MS);
            return PB_ETIMEDOUT;
        }
        int w = follower_wait_fd(f, f->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 100);
        if (w < 0)
            return w;
        waited += w ? 0 : 100;
    }
}

int follower_connect(follower *f, char *why, size_t n)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", f->hp.port);
    int rc = getaddrinfo(f->hp.host, port, &hints, &res);
    if (rc != 0) {
        snprintf(why, n, "cannot resolve %s: %s", f->hp.host, gai_strerror(rc));
        return PB_ECONNECT;
    }
    f->fd = -1;
    for (struct addrinfo *a = res; a && f->fd < 0 && !atomic_load(&f->stopping); a = a->ai_next)
        f->fd = connect_one(f, a, why, n);
    freeaddrinfo(res);
    if (f->fd < 0)
        return PB_ECONNECT;
    if (f->tls && (rc = tls_handshake(f, why, n)) < 0) {
        follower_disconnect(f);
        return rc;
    }
    return 0;
}

void follower_disconnect(follower *f)
{
    if (f->ssl) {
        SSL_shutdown(f->ssl); /* close_notify, best effort: the socket is non-blocking */
        SSL_free(f->ssl);
        f->ssl = NULL;
    }
    ERR_clear_error();
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/* One write: > 0 bytes taken, 0 would block (*wait_for set), or < 0. */
static long send_some(follower *f, const uint8_t *p, size_t len, short *wait_for)
{
    *wait_for = POLLOUT;
    if (!f->ssl) {
        ssize_t w = send(f->fd, p, len, MSG_NOSIGNAL);
        if (w >= 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return w > 0 ? w : 0;
        return PB_ECLOSED;
    }
    int w = SSL_write(f->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
    if (w > 0)
        return w;
    int e = SSL_get_error(f->ssl, w);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *wait_for = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        return 0;
    }
    ERR_clear_error();
    return PB_ECLOSED;
}

int follower_send(follower *f, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    int waited = 0;
    while (len > 0) {
        short wait_for;
        long w = send_some(f, p, len, &wait_for);
        if (w < 0)
            return (int)w;
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            waited = 0;
            continue;
        }
        if (waited >= SEND_WAIT_MS)
            return PB_ETIMEDOUT;
        int r = follower_wait_fd(f, f->fd, wait_for, 1000);
        if (r < 0)
            return r;
        waited += r ? 0 : 1000;
    }
    return 0;
}

/* One read: > 0 bytes, 0 nothing now, PB_ECLOSED (why set). */
static long recv_some(follower *f, uint8_t *buf, size_t cap, char *why, size_t n)
{
    if (!f->ssl) {
        ssize_t r = read(f->fd, buf, cap);
        if (r > 0)
            return r;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        snprintf(why, n, "%s", r == 0 ? "the primary closed the connection" : strerror(errno));
        return PB_ECLOSED;
    }
    int r = SSL_read(f->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (r > 0)
        return r;
    int e = SSL_get_error(f->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
        snprintf(why, n, "the primary closed the connection");
    else
        ssl_reason(f->ssl, why, n);
    ERR_clear_error();
    return PB_ECLOSED;
}

long follower_recv(follower *f, uint8_t *buf, size_t cap, char *why, size_t n)
{
    size_t got = 0;
    while (got < cap) {
        long r = recv_some(f, buf + got, cap - got, why, n);
        if (r < 0 && got == 0)
            return r;
        if (r <= 0)
            break; /* a close after bytes: the next call says it */
        got += (size_t)r;
    }
    return (long)got;
}

bool follower_recv_pending(const follower *f)
{
    return f->ssl && SSL_pending(f->ssl) > 0;
}
