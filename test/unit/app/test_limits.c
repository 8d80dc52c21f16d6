/* Unit tests for src/app/limits.c: the token bucket's arithmetic and the per-address count. */
#include "parley/app/limits.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static void bucket_refills_at_its_rate(void)
{
    pl_limits_bucket_t b = {0};
    pl_limits_rate_t r = {20, 40};
    uint64_t t = 1000000;
    for (int i = 0; i < 40; i++)
        CHECK_EQ_INT(pl_limits_take(&b, &r, 1, t), 0); /* a zeroed bucket is full */
    uint32_t wait = pl_limits_take(&b, &r, 1, t);
    CHECK_EQ_INT(wait, 50); /* one token every 50 ms at 20/s */
    CHECK(pl_limits_take(&b, &r, 1, t + 49) > 0);
    CHECK_EQ_INT(pl_limits_take(&b, &r, 1, t + 50), 0);
    CHECK(pl_limits_take(&b, &r, 1, t + 50) > 0);
    /* A long pause fills it to its burst, no more. */
    int n = 0;
    while (n < 1000 && pl_limits_take(&b, &r, 1, t + 3600000) == 0)
        n++;
    CHECK_EQ_INT(n, 40);
    /* n tokens at once; more than the burst costs the whole burst. */
    pl_limits_bucket_t c = {0};
    CHECK_EQ_INT(pl_limits_take(&c, &r, 30, t), 0);
    CHECK_EQ_INT(pl_limits_take(&c, &r, 30, t), 1000); /* 20 more tokens: 1 s */
    pl_limits_bucket_t d = {0};
    CHECK_EQ_INT(pl_limits_take(&d, &r, 1000, t), 0);
    CHECK_EQ_INT(pl_limits_take(&d, &r, 1, t), 50);
}

static struct sockaddr_storage addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        ss.ss_family = AF_INET6;
        inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
    } else {
        ss.ss_family = AF_INET;
        inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr);
    }
    return ss;
}
#define SA(x) ((struct sockaddr *)&(x))

static void per_address_and_instance(void)
{
    pl_limits_conns_t *t = calloc(1, sizeof *t);
    pl_limits_conns_init(t, 3, 1000);
    struct sockaddr_storage a = addr("10.0.0.1"), b = addr("10.0.0.2");
    pl_limits_slot_t s[5];
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(a), &s[i]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(a), &s[3]), PL_LIMITS_PER_ADDR);
    CHECK_EQ_INT(s[3].counted, 0);
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(a)), 3);
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(b), &s[4]), PL_LIMITS_OK); /* another address */
    CHECK_EQ_INT(atomic_load(&t->total), 4);
    pl_limits_conn_release(t, &s[0]);
    pl_limits_conn_release(t, &s[0]); /* twice is once */
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(a)), 2);
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(a), &s[0]), PL_LIMITS_OK);
    for (int i = 0; i < 5; i++)
        pl_limits_conn_release(t, &s[i]);
    CHECK_EQ_INT(atomic_load(&t->total), 0);
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(a)), 0);

    /* An IPv6 address counts by its /64; an IPv4-mapped one as its IPv4 address. */
    struct sockaddr_storage x = addr("2001:db8:1:2::1"), y = addr("2001:db8:1:2::ffff"),
                            z = addr("2001:db8:1:3::1"), m = addr("::ffff:10.0.0.1");
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(x), &s[0]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(y), &s[1]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(x)), 2);
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(z)), 0);
    CHECK_EQ_INT(pl_limits_conn_acquire(t, SA(m), &s[2]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_count(t, SA(a)), 1);
    for (int i = 0; i < 3; i++)
        pl_limits_conn_release(t, &s[i]);

    /* The instance's limit, whatever the address. */
    pl_limits_conns_t *u = calloc(1, sizeof *u);
    pl_limits_conns_init(u, 0, 2);
    CHECK_EQ_INT(pl_limits_conn_acquire(u, SA(a), &s[0]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_acquire(u, SA(b), &s[1]), PL_LIMITS_OK);
    CHECK_EQ_INT(pl_limits_conn_acquire(u, SA(x), &s[2]), PL_LIMITS_INSTANCE);
    pl_limits_conn_release(u, &s[1]);
    CHECK_EQ_INT(pl_limits_conn_acquire(u, SA(x), &s[2]), PL_LIMITS_OK);
    free(t);
    free(u);
}

/* Many addresses at once: the sketch never counts an address below its true count, and with
 * fewer addresses than columns above it by a neighbour or two at most (what matters against a
 * limit in the hundreds). */
static void many_addresses(void)
{
    pl_limits_conns_t *t = calloc(1, sizeof *t);
    pl_limits_conns_init(t, 1000, 0);
    static pl_limits_slot_t s[4000];
    for (int i = 0; i < 4000; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        CHECK_EQ_INT(pl_limits_conn_acquire(t, (struct sockaddr *)&a, &s[i]), PL_LIMITS_OK);
    }
    int exact = 0;
    uint32_t most = 0;
    for (int i = 0; i < 4000; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        uint32_t n = pl_limits_conn_count(t, (struct sockaddr *)&a);
        CHECK(n >= 1);
        exact += n == 1;
        if (n > most) most = n;
    }
    CHECK(exact > 3000); /* about 85% expected: 1 - (1 - e^(-4000/8192))^2 */
    CHECK(most <= 5);
    for (int i = 0; i < 4000; i++)
        pl_limits_conn_release(t, &s[i]);
    for (int r = 0; r < PL_LIMITS_ROWS; r++)
        for (int c = 0; c < PL_LIMITS_COLS; c++)
            CHECK(atomic_load(&t->count[r][c]) == 0);
    free(t);
}

int main(void)
{
    RUN(bucket_refills_at_its_rate);
    RUN(per_address_and_instance);
    RUN(many_addresses);
    UNIT_EXIT();
}
