/* Unit tests for src/cidr.c: parsing address lists and matching peers against them. */
#include "parley/base/cidr.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int match4(const pl_cidr_list_t *l, const char *ip)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return pl_cidr_match(l, (struct sockaddr *)&a);
}

static int match6(const pl_cidr_list_t *l, const char *ip)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return pl_cidr_match(l, (struct sockaddr *)&a);
}

static void parse_and_match(void)
{
    pl_cidr_list_t l;
    char err[128];
    CHECK_EQ_INT(
        pl_cidr_parse(&l, "127.0.0.1, 10.1.0.0/16,192.168.1.128/25 ,fd00::/8", err, sizeof err), 0);
    CHECK_EQ_INT(l.n, 4);
    CHECK(match4(&l, "127.0.0.1"));
    CHECK(!match4(&l, "127.0.0.2")); /* a single address is /32 */
    CHECK(match4(&l, "10.1.255.7"));
    CHECK(!match4(&l, "10.2.0.1"));
    CHECK(match4(&l, "192.168.1.200"));
    CHECK(!match4(&l, "192.168.1.127")); /* a prefix not on a byte boundary */
    CHECK(match6(&l, "fd12::1"));
    CHECK(!match6(&l, "fe80::1"));
    CHECK(match6(&l, "::ffff:10.1.2.3")); /* IPv4-mapped counts as IPv4 */
    CHECK(!match6(&l, "::ffff:11.1.2.3"));
    CHECK_EQ_INT(pl_cidr_parse(&l, "0.0.0.0/0", err, sizeof err), 0);
    CHECK(match4(&l, "8.8.8.8"));
    CHECK(!match6(&l, "::1")); /* families do not mix */
}

static void empty_and_bad(void)
{
    pl_cidr_list_t l;
    char err[128];
    CHECK_EQ_INT(pl_cidr_parse(&l, "", err, sizeof err), 0);
    CHECK_EQ_INT(l.n, 0);
    CHECK(!match4(&l, "127.0.0.1"));
    CHECK_EQ_INT(pl_cidr_parse(&l, " , ,", err, sizeof err), 0);
    CHECK_EQ_INT(l.n, 0);
    static const char *const bad[] = {"10.0.0.0/33", "::/129",     "10.0.0",    "host.example",
                                      "10.0.0.1/",   "10.0.0.1/x", "1.2.3.4/-1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        int rc = pl_cidr_parse(&l, bad[i], err, sizeof err);
        if (rc != -1 || !err[0]) printf("  '%s' accepted (err '%s')\n", bad[i], err);
        CHECK(rc == -1 && err[0]);
    }
    char many[PL_CIDR_MAX * 12 + 32] = "";
    for (int i = 0; i <= PL_CIDR_MAX; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "10.0.0.%d,", i);
    CHECK_EQ_INT(pl_cidr_parse(&l, many, err, sizeof err), -1);
}

int main(void)
{
    RUN(parse_and_match);
    RUN(empty_and_bad);
    UNIT_EXIT();
}
