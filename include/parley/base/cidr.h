/*
 * cidr: lists of IP addresses and networks ("10.0.0.0/8", "127.0.0.1",
 * "::1", "fd00::/8"), parsed once from configuration and matched against a
 * peer's address (PARLEY_TRUSTED_PROXIES). Pure functions over plain data:
 * a list is filled at start-up and then only read, by any thread.
 */
#ifndef PARLEY_BASE_CIDR_H
#define PARLEY_BASE_CIDR_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/** Most entries one list holds. */
#define PL_CIDR_MAX 32

/** One network: family 4 or 6, the address in network order, the prefix length. */
typedef struct {
    uint8_t family;
    uint8_t bits;
    uint8_t addr[16];
} pl_cidr_t;

/** A list of networks; zero-initialised it is empty and matches nothing. */
typedef struct {
    size_t n;
    pl_cidr_t e[PL_CIDR_MAX];
} pl_cidr_list_t;

/**
 * Parse a comma-separated list (spaces around entries allowed; "" is the
 * empty list). Returns 0, or -1 after writing which entry is wrong into
 * `err` (size `err_size`).
 */
int pl_cidr_parse(pl_cidr_list_t *l, const char *s, char *err, size_t err_size);

/** 1 if `sa` (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) is in `l`. */
int pl_cidr_match(const pl_cidr_list_t *l, const struct sockaddr *sa);

#endif
