/* Unit tests for src/app/users.c (and the htab under it): filing connections by user, chains
 * of several connections, removal from any place, held links, the walk, growth, free. */
#include "parley/app/users.h"
#include "unit.h"

#include <stdlib.h>

static pl_user_t *find_s(const pl_users_t *t, const char *name)
{
    return pl_users_find(t, name, strlen(name));
}

/* 1 if `u`'s chain holds exactly the `n` links given, each pointing back at u. */
static int chain_is(const pl_user_t *u, pl_user_link_t **want, int n)
{
    int seen = 0;
    for (pl_user_link_t *l = u->first; l; l = l->next) {
        int found = 0;
        for (int i = 0; i < n; i++)
            found |= want[i] == l;
        if (!found || l->user != u) return 0;
        seen++;
    }
    return seen == n && u->n == (uint32_t)n;
}

static void add_find_remove(void)
{
    pl_users_t t = {0};
    pl_user_link_t a1 = {0}, a2 = {0}, a3 = {0}, b1 = {0};
    CHECK(find_s(&t, "alice") == NULL); /* no buckets yet */
    CHECK_EQ_INT(pl_users_add(&t, "alice", 5, &a1), 0);
    CHECK_EQ_INT(pl_users_add(&t, "alice", 5, &a2), 0);
    CHECK_EQ_INT(pl_users_add(&t, "bob", 3, &b1), 0);
    CHECK_EQ_INT(pl_users_add(&t, "alice", 5, &a3), 0);
    CHECK_EQ_INT(pl_users_count(&t), 2);
    pl_user_t *a = find_s(&t, "alice"), *b = find_s(&t, "bob");
    CHECK(a && b && a != b);
    CHECK_STR(a->name, "alice");
    CHECK(chain_is(a, (pl_user_link_t *[]){&a1, &a2, &a3}, 3));
    CHECK(chain_is(b, (pl_user_link_t *[]){&b1}, 1));
    CHECK(find_s(&t, "alic") == NULL && find_s(&t, "alicee") == NULL);
    pl_users_remove(&t, &a2); /* the middle of the chain: held, its name still there */
    CHECK(a2.user == a && a2.next == &a2 && strcmp(pl_users_name(&a2), "alice") == 0);
    CHECK(chain_is(a, (pl_user_link_t *[]){&a1, &a3}, 2));
    pl_users_remove(&t, &a2); /* held already: nothing happens */
    CHECK(chain_is(a, (pl_user_link_t *[]){&a1, &a3}, 2));
    pl_users_release(&t, &a2); /* let go: zeroed, the entry stays for a1 and a3 */
    CHECK(a2.user == NULL && a2.next == NULL && pl_users_name(&a2) == NULL);
    CHECK(find_s(&t, "alice") == a && a->refs == 2);
    pl_users_remove(&t, &a3); /* the head */
    CHECK(chain_is(a, (pl_user_link_t *[]){&a1}, 1));
    pl_users_remove(&t, &a1); /* the last filed: the entry leaves the index, held by a1, a3 */
    CHECK(find_s(&t, "alice") == NULL);
    CHECK_EQ_INT(pl_users_count(&t), 1);
    CHECK_STR(pl_users_name(&a1), "alice");
    pl_user_link_t a4 = {0};
    CHECK_EQ_INT(pl_users_add(&t, "alice", 5, &a4), 0); /* back again: a new entry */
    CHECK(find_s(&t, "alice") != NULL && find_s(&t, "alice") != a1.user);
    CHECK(chain_is(find_s(&t, "alice"), (pl_user_link_t *[]){&a4}, 1));
    pl_users_release(&t, &a3);
    CHECK_STR(pl_users_name(&a1), "alice"); /* the old entry lives while a1 holds it */
    pl_users_release(&t, &a1);              /* and goes with it (valgrind: no leak) */
    pl_users_release(&t, &b1);              /* filed: unfiled, and its entry goes */
    CHECK(find_s(&t, "bob") == NULL);
    pl_users_free(&t); /* with entries in it (valgrind: no leak) */
    CHECK_EQ_INT(pl_users_count(&t), 0);
    CHECK(t.h.buckets == NULL);
}

static void many_users_walk_and_growth(void)
{
    enum { N = 3000 };
    pl_users_t t = {0};
    pl_user_link_t *links = calloc(2 * N, sizeof *links);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        CHECK_EQ_INT(pl_users_add(&t, name, strlen(name), &links[2 * i]), 0);
        if (i % 3 == 0) CHECK_EQ_INT(pl_users_add(&t, name, strlen(name), &links[2 * i + 1]), 0);
    }
    CHECK_EQ_INT(pl_users_count(&t), N);
    CHECK(2 * t.h.nbuckets >= N && (t.h.nbuckets & (t.h.nbuckets - 1)) == 0);
    /* the walk sees every user once, with its count */
    int seen = 0, wrong = 0;
    char *mark = calloc(N, 1);
    for (pl_user_t *u = pl_users_first(&t); u; u = pl_users_next(&t, u)) {
        int i = atoi(u->name + 5);
        wrong += i < 0 || i >= N || mark[i] || u->n != (i % 3 == 0 ? 2u : 1u) ||
                 u->node.hash != pl_htab_hash(u->name, u->len);
        if (i >= 0 && i < N) mark[i] = 1;
        seen++;
    }
    CHECK_EQ_INT(seen, N);
    CHECK_EQ_INT(wrong, 0);
    /* remove every odd user's links (one or two): the rest are still found */
    for (int i = 1; i < N; i += 2) {
        pl_users_release(&t, &links[2 * i]);
        if (i % 3 == 0) {
            CHECK(links[2 * i + 1].user && links[2 * i + 1].user->n == 1); /* one still there */
            pl_users_release(&t, &links[2 * i + 1]);
        }
    }
    int missing = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        missing += (find_s(&t, name) == NULL) != (i % 2 == 1);
    }
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(pl_users_count(&t), N / 2);
    pl_users_free(&t);
    free(mark);
    free(links);
}

/* One user's entry counts at most PL_USERS_MAX_LINKS links: one more is refused (-2), not
 * wrapped around to a count that would free the entry under its links. */
static void links_per_user_bounded(void)
{
    pl_users_t t = {0};
    pl_user_link_t *l = calloc(PL_USERS_MAX_LINKS + 1, sizeof *l);
    CHECK(l != NULL);
    int ok = 1;
    for (int i = 0; i < PL_USERS_MAX_LINKS; i++)
        ok &= pl_users_add(&t, "many", 4, &l[i]) == 0;
    CHECK(ok);
    CHECK_EQ_INT(pl_users_add(&t, "many", 4, &l[PL_USERS_MAX_LINKS]), -2);
    CHECK(l[PL_USERS_MAX_LINKS].user == NULL);
    /* Releasing one makes room for one. */
    pl_users_release(&t, &l[0]);
    CHECK_EQ_INT(pl_users_add(&t, "many", 4, &l[PL_USERS_MAX_LINKS]), 0);
    for (int i = 1; i <= PL_USERS_MAX_LINKS; i++)
        pl_users_release(&t, &l[i]);
    CHECK(find_s(&t, "many") == NULL);
    pl_users_free(&t);
    free(l);
}

/* Names of every length an entry class takes, and longer (from malloc): each is filed, found
 * whole and freed by its last release (valgrind: no leak, no access past a slot). */
static void name_lengths(void)
{
    enum { N = 200 };
    static pl_user_link_t l[N];
    static char name[N + 1];
    pl_users_t t = {0};
    memset(l, 0, sizeof l);
    for (int n = 1; n < N; n++) {
        memset(name, 'a' + n % 26, (size_t)n);
        name[n] = '\0';
        CHECK_EQ_INT(pl_users_add(&t, name, (size_t)n, &l[n]), 0);
    }
    CHECK_EQ_INT(pl_users_count(&t), N - 1);
    for (int n = 1; n < N; n++) {
        memset(name, 'a' + n % 26, (size_t)n);
        name[n] = '\0';
        pl_user_t *u = find_s(&t, name);
        CHECK(u && u->len == n && strcmp(u->name, name) == 0);
    }
    for (int n = 1; n < N; n += 2)
        pl_users_release(&t, &l[n]);
    CHECK_EQ_INT(pl_users_count(&t), N / 2 - 1);
    pl_users_free(&t); /* the rest, and the slabs */
}

int main(void)
{
    RUN(name_lengths);
    RUN(links_per_user_bounded);
    RUN(add_find_remove);
    RUN(many_users_walk_and_growth);
    UNIT_EXIT();
}
