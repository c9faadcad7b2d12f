/* Tests for proto/hostport: parsing "host:port" / "[IPv6]:port" (IPv4,
 * IPv6, names, bad and missing ports, empty and overlong hosts) and printing
 * addresses back in the same convention. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "hostport.h"
#include "pb_errors.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>

static void parses(const char *s, unsigned flags, const char *host, uint16_t port, bool bracketed)
{
    hostport hp;
    char err[256] = "";
    if (hostport_parse(s, flags, &hp, err, sizeof err) != 0)
        fail_msg("\"%s\" (flags %u) refused: %s", s, flags, err);
    assert_string_equal(hp.host, host);
    assert_int_equal(hp.port, port);
    assert_int_equal(hp.bracketed, bracketed);
}

/* Refused with PB_EINVAL and a message that quotes the input and contains
 * `why`. */
static void refuses(const char *s, unsigned flags, const char *why)
{
    hostport hp;
    char err[512] = "";
    int rc = hostport_parse(s, flags, &hp, err, sizeof err);
    if (rc != PB_EINVAL)
        fail_msg("\"%s\" (flags %u): expected PB_EINVAL, got %d", s, flags, rc);
    char quoted[400];
    snprintf(quoted, sizeof quoted, "\"%s\"", s);
    if (strncmp(err, quoted, strlen(quoted)) != 0 || !strstr(err, why))
        fail_msg("\"%s\": message \"%s\" should start with the input and say \"%s\"", s, err, why);
}

static void test_ipv4(void **state)
{
    parses("127.0.0.1:7420", 0, "127.0.0.1", 7420, false);
    parses("127.0.0.1:7420", HOSTPORT_NUMERIC, "127.0.0.1", 7420, false);
    parses("0.0.0.0:1", HOSTPORT_NUMERIC, "0.0.0.0", 1, false);
    parses("10.1.2.3:65535", HOSTPORT_NUMERIC, "10.1.2.3", 65535, false);
    refuses("1.2.3:80", HOSTPORT_NUMERIC, "\"1.2.3\" is not a numeric IPv4 address");
    refuses("256.1.1.1:80", HOSTPORT_NUMERIC, "is not a numeric IPv4 address");
}

static void test_ipv6(void **state)
{
    parses("[::1]:9000", 0, "::1", 9000, true);
    parses("[::1]:9000", HOSTPORT_NUMERIC, "::1", 9000, true);
    parses("[fe80::1:2]:80", HOSTPORT_NUMERIC, "fe80::1:2", 80, true);
    parses("[::ffff:1.2.3.4]:80", HOSTPORT_NUMERIC, "::ffff:1.2.3.4", 80, true);
    /* Without brackets the port cannot be told from the address. */
    refuses("::1:7420", 0, "put an IPv6 address in brackets, e.g. [::1]:7420");
    refuses("fe80::1:80", HOSTPORT_NUMERIC, "put an IPv6 address in brackets");
    /* Brackets mean IPv6 when the host must be numeric. */
    refuses("[1.2.3.4]:80", HOSTPORT_NUMERIC, "\"1.2.3.4\" is not a numeric IPv6 address");
    refuses("[::1]7420", 0, "is not host:port");
    refuses("[::1:7420", 0, "is not host:port");
    refuses("[::1]", 0, "is not host:port");
}

static void test_names(void **state)
{
    parses("localhost:7420", 0, "localhost", 7420, false);
    parses("broker.example.org:1", 0, "broker.example.org", 1, false);
    refuses("localhost:7420", HOSTPORT_NUMERIC, "\"localhost\" is not a numeric IPv4 address");
}

static void test_ports(void **state)
{
    parses("h:1", 0, "h", 1, false);
    parses("h:65535", 0, "h", 65535, false);
    parses("h:007420", 0, "h", 7420, false);
    /* Port 0 ("any free port") only for a listener. */
    refuses("h:0", 0, "port must be a number 1..65535");
    parses("127.0.0.1:0", HOSTPORT_NUMERIC | HOSTPORT_PORT_ZERO, "127.0.0.1", 0, false);
    refuses("h:65536", HOSTPORT_PORT_ZERO, "port must be a number 0..65535");
    refuses("h:99999999999999999999999", 0, "port must be a number");
    refuses("h:-1", 0, "port must be a number");
    refuses("h:+80", 0, "port must be a number");
    refuses("h: 80", 0, "port must be a number");
    refuses("h:80 ", 0, "port must be a number");
    refuses("h:80x", 0, "port must be a number");
    refuses("h:0x50", 0, "port must be a number");
    refuses("[::1]:http", 0, "port must be a number");
}

static void test_missing_parts(void **state)
{
    refuses("127.0.0.1", 0, "is not host:port (e.g. 127.0.0.1:7420 or [::1]:7420)");
    refuses("", 0, "is not host:port");
    refuses("h:", 0, "port must be a number");
    refuses("[::1]:", 0, "port must be a number");
    refuses(":7420", 0, "the host is empty");
    refuses("[]:7420", 0, "the host is empty");
}

static void test_host_length(void **state)
{
    char s[HOSTPORT_HOST_MAX + 16], host[HOSTPORT_HOST_MAX + 2];
    memset(host, 'a', HOSTPORT_HOST_MAX);
    host[HOSTPORT_HOST_MAX] = '\0';
    snprintf(s, sizeof s, "%s:80", host);
    parses(s, 0, host, 80, false);
    host[HOSTPORT_HOST_MAX] = 'a';
    host[HOSTPORT_HOST_MAX + 1] = '\0';
    snprintf(s, sizeof s, "%s:80", host);
    refuses(s, 0, "the host is longer than 255 bytes");
}

/* No message buffer is fine: the code alone reports the problem. */
static void test_no_err_buffer(void **state)
{
    hostport hp;
    assert_int_equal(hostport_parse("nope", 0, &hp, NULL, 0), PB_EINVAL);
    char err[4] = "xyz";
    assert_int_equal(hostport_parse("nope", 0, &hp, err, 0), PB_EINVAL);
    assert_string_equal(err, "xyz");
}

static void test_format(void **state)
{
    char out[64];
    hostport_format(out, sizeof out, "127.0.0.1", 7420);
    assert_string_equal(out, "127.0.0.1:7420");
    hostport_format(out, sizeof out, "::1", 9000);
    assert_string_equal(out, "[::1]:9000");
    hostport_format(out, sizeof out, "localhost", 0);
    assert_string_equal(out, "localhost:0");
    hostport_format(out, 6, "127.0.0.1", 7420);
    assert_string_equal(out, "127.0");
    /* What is printed parses back to the same address. */
    static const char *const hosts[] = {"127.0.0.1", "::1", "fe80::1", "example.org"};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        hostport_format(out, sizeof out, hosts[i], 65535);
        parses(out, 0, hosts[i], 65535, strchr(hosts[i], ':') != NULL);
    }
}

static void test_format_sockaddr(void **state)
{
    char out[HOSTPORT_SOCKADDR_LEN];
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons(5000);
    assert_int_equal(inet_pton(AF_INET, "192.168.1.20", &a4->sin_addr), 1);
    assert_true(hostport_format_sockaddr(out, sizeof out, (struct sockaddr *)&ss));
    assert_string_equal(out, "192.168.1.20:5000");

    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(65535);
    assert_int_equal(inet_pton(AF_INET6, "::1", &a6->sin6_addr), 1);
    assert_true(hostport_format_sockaddr(out, sizeof out, (struct sockaddr *)&ss));
    assert_string_equal(out, "[::1]:65535");

    /* A long IPv6 address fits HOSTPORT_SOCKADDR_LEN. */
    memset(&a6->sin6_addr, 0xff, sizeof a6->sin6_addr);
    assert_true(hostport_format_sockaddr(out, sizeof out, (struct sockaddr *)&ss));
    assert_string_equal(out, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    strcpy(out, "untouched");
    assert_false(hostport_format_sockaddr(out, sizeof out, (struct sockaddr *)&ss));
    assert_string_equal(out, "untouched");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_missing_parts),
        cmocka_unit_test(test_host_length),
        cmocka_unit_test(test_no_err_buffer),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_sockaddr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
