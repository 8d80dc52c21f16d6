/* cidr: address lists for trust decisions; see the header. */
#include "parley/base/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int parse_one(pl_cidr_t *c, const char *s, size_t len)
{
    char tmp[64];
    if (len == 0 || len >= sizeof tmp) return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *slash = strchr(tmp, '/');
    long bits = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        bits = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || bits < 0) return -1;
    }
    memset(c, 0, sizeof *c);
    if (inet_pton(AF_INET, tmp, c->addr) == 1) {
        c->family = 4;
        if (bits > 32) return -1;
        c->bits = (uint8_t)(bits < 0 ? 32 : bits);
    } else if (inet_pton(AF_INET6, tmp, c->addr) == 1) {
        c->family = 6;
        if (bits > 128) return -1;
        c->bits = (uint8_t)(bits < 0 ? 128 : bits);
    } else {
        return -1;
    }
    return 0;
}

int pl_cidr_parse(pl_cidr_list_t *l, const char *s, char *err, size_t err_size)
{
    memset(l, 0, sizeof *l);
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s) break;
        const char *end = s;
        while (*end && *end != ',')
            end++;
        size_t len = (size_t)(end - s);
        while (len && s[len - 1] == ' ')
            len--;
        if (l->n == PL_CIDR_MAX) {
            snprintf(err, err_size, "more than %d entries", PL_CIDR_MAX);
            return -1;
        }
        if (parse_one(&l->e[l->n], s, len) != 0) {
            snprintf(err, err_size, "'%.*s' is not an IP address or network (a.b.c.d/n, x::y/n)",
                     (int)(len > 60 ? 60 : len), s);
            return -1;
        }
        l->n++;
        s = end;
    }
    return 0;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full) != 0) return 0;
    if (!rest) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int pl_cidr_match(const pl_cidr_list_t *l, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        family = 4;
    } else if (sa->sa_family == AF_INET6) {
        const uint8_t *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6, mapped, 12) == 0) {
            memcpy(addr, a6 + 12, 4);
            family = 4;
        } else {
            memcpy(addr, a6, 16);
            family = 6;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].family == family && prefix_eq(addr, l->e[i].addr, l->e[i].bits)) return 1;
    return 0;
}
