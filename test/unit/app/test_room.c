/* Unit tests for src/room.c: room ids, join/leave, swap-remove bookkeeping,
 * owner lists and table growth. */
#include "parley/app/room.h"
#include "unit.h"

#include <stdlib.h>

/* Every member of `r` points back at r and sits at its own idx. */
static int room_consistent(const pl_room_t *r)
{
    if (r->nmembers > r->cap) return 0;
    for (uint32_t i = 0; i < r->nmembers; i++)
        if (!r->members[i] || r->members[i]->idx != i || r->members[i]->room != r) return 0;
    return 1;
}

static pl_room_t *find_s(const pl_room_table_t *t, const char *name)
{
    return pl_room_find(t, name, strlen(name));
}

static pl_sub_t *join_s(pl_room_table_t *t, const char *name, void *owner, pl_sub_t **list)
{
    return pl_room_join(t, name, strlen(name), owner, list);
}

static void id_valid(void)
{
    CHECK(pl_room_id_valid("a", 1));
    CHECK(pl_room_id_valid("r1", 2));
    CHECK(pl_room_id_valid("AZaz09_.:-", 10));
    CHECK(pl_room_id_valid("x:y.z-w_0", 9));
    char s[PL_ROOM_MAX + 2];
    memset(s, 'k', sizeof s);
    CHECK(pl_room_id_valid(s, PL_ROOM_MAX));
    CHECK(!pl_room_id_valid(s, PL_ROOM_MAX + 1));
    CHECK(!pl_room_id_valid("", 0));
    CHECK(!pl_room_id_valid("a b", 3));
    CHECK(!pl_room_id_valid("a/b", 3));
    CHECK(!pl_room_id_valid("a\"", 2));
    CHECK(!pl_room_id_valid("a\\", 2));
    CHECK(!pl_room_id_valid("a*", 2));
    CHECK(!pl_room_id_valid("a@", 2));
    CHECK(!pl_room_id_valid("a#", 2));
    CHECK(!pl_room_id_valid("[a]", 3));
    CHECK(!pl_room_id_valid("a\n", 2));
    CHECK(!pl_room_id_valid("\xc3\xa9", 2));
    CHECK(!pl_room_id_valid("ab\0cd", 5)); /* length counts, NUL is not allowed */
    CHECK(pl_room_id_valid("ab\0cd", 2));  /* only len bytes are looked at */
    /* every byte outside the set is refused */
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        char one = (char)c;
        int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '.' || c == ':' || c == '-';
        bad += pl_room_id_valid(&one, 1) != want;
    }
    CHECK_EQ_INT(bad, 0);
}

static void join_leave_find(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    CHECK(find_s(&t, "r1") == NULL); /* empty table */
    int a, b;
    pl_sub_t *la = NULL, *lb = NULL;
    pl_sub_t *sa = join_s(&t, "r1", &a, &la);
    CHECK(sa != NULL);
    pl_room_t *r = find_s(&t, "r1");
    CHECK(r != NULL && sa->room == r && sa->owner == &a && la == sa);
    CHECK_EQ_INT(t.count, 1);
    CHECK_EQ_INT(r->nmembers, 1);
    CHECK_EQ_INT(r->len, 2);
    CHECK_STR(r->name, "r1");
    CHECK(find_s(&t, "r2") == NULL);
    CHECK(find_s(&t, "r") == NULL);
    CHECK(find_s(&t, "r10") == NULL);
    CHECK(pl_room_find(&t, "r1xx", 2) == r); /* length-delimited */

    pl_sub_t *sb = join_s(&t, "r1", &b, &lb);
    CHECK(sb && sb != sa && sb->room == r);
    CHECK_EQ_INT(r->nmembers, 2);
    CHECK_EQ_INT(t.count, 1);
    CHECK(room_consistent(r));

    pl_sub_t *sb2 = join_s(&t, "r2", &b, &lb);
    CHECK(sb2 && sb2->room != r);
    CHECK_EQ_INT(t.count, 2);
    CHECK_EQ_INT(pl_room_count(lb), 2);
    CHECK_EQ_INT(pl_room_count(la), 1);

    pl_room_leave(&t, &la, sa);
    CHECK(la == NULL);
    CHECK(find_s(&t, "r1") == r); /* b is still in it */
    CHECK_EQ_INT(r->nmembers, 1);
    CHECK(r->members[0] == sb && sb->idx == 0);

    pl_room_leave(&t, &lb, sb);
    CHECK(find_s(&t, "r1") == NULL); /* last one out frees the room */
    CHECK_EQ_INT(t.count, 1);
    CHECK_EQ_INT(pl_room_count(lb), 1);
    CHECK(lb == sb2);

    /* the room can be created again */
    sa = join_s(&t, "r1", &a, &la);
    CHECK(sa && find_s(&t, "r1") == sa->room && sa->room->nmembers == 1);
    CHECK_EQ_INT(t.count, 2);
    pl_room_leave_all(&t, &la);
    pl_room_leave_all(&t, &lb);
    CHECK_EQ_INT(t.count, 0);
    pl_room_table_free(&t);
}

static void idempotent_join(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    int a;
    pl_sub_t *l = NULL;
    pl_sub_t *s1 = join_s(&t, "lobby", &a, &l);
    pl_sub_t *s2 = join_s(&t, "lobby", &a, &l);
    CHECK(s1 && s1 == s2);
    CHECK_EQ_INT(pl_room_count(l), 1);
    CHECK_EQ_INT(s1->room->nmembers, 1);
    CHECK_EQ_INT(t.count, 1);
    pl_room_leave(&t, &l, s1);
    CHECK(l == NULL);
    CHECK(find_s(&t, "lobby") == NULL);
    CHECK_EQ_INT(t.count, 0);
    pl_room_table_free(&t);
}

static void swap_remove_keeps_indices(void)
{
    enum { N = 100 };
    pl_room_table_t t;
    pl_room_table_init(&t);
    int owners[N];
    pl_sub_t *lists[N] = {0};
    pl_sub_t *subs[N];
    for (int i = 0; i < N; i++) {
        subs[i] = join_s(&t, "big", &owners[i], &lists[i]);
        CHECK(subs[i] != NULL);
        /* the owner also has another room, so lists have more than one entry */
        CHECK(join_s(&t, i % 2 ? "odd" : "even", &owners[i], &lists[i]) != NULL);
    }
    pl_room_t *r = find_s(&t, "big");
    CHECK(r && r->nmembers == N && room_consistent(r));

    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    srand(12345);
    for (int i = N - 1; i > 0; i--) { /* Fisher-Yates */
        int j = rand() % (i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int present[N];
    for (int i = 0; i < N; i++)
        present[i] = 1;
    for (int k = 0; k < N; k++) {
        int o = order[k];
        pl_room_leave(&t, &lists[o], subs[o]);
        present[o] = 0;
        CHECK_EQ_INT(pl_room_count(lists[o]), 1);
        CHECK(lists[o] && lists[o]->room != r && lists[o]->next == NULL);
        if (k == N - 1) break;
        CHECK(find_s(&t, "big") == r);
        CHECK_EQ_INT(r->nmembers, N - 1 - k);
        CHECK(room_consistent(r));
        /* exactly the owners still present are members */
        int seen = 0, wrong = 0;
        for (uint32_t m = 0; m < r->nmembers; m++) {
            int idx = (int)((int *)r->members[m]->owner - owners);
            if (idx < 0 || idx >= N || !present[idx])
                wrong++;
            else
                seen++;
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK_EQ_INT(seen, N - 1 - k);
    }
    CHECK(find_s(&t, "big") == NULL);
    CHECK_EQ_INT(t.count, 2);
    for (int i = 0; i < N; i++)
        pl_room_leave_all(&t, &lists[i]);
    CHECK_EQ_INT(t.count, 0);
    pl_room_table_free(&t);
}

static void leave_all(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    int a, b;
    pl_sub_t *la = NULL, *lb = NULL;
    char name[24];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "room-%d", i);
        CHECK(join_s(&t, name, &a, &la) != NULL);
        if (i % 4 == 0) CHECK(join_s(&t, name, &b, &lb) != NULL);
    }
    CHECK_EQ_INT(pl_room_count(la), 20);
    CHECK_EQ_INT(pl_room_count(lb), 5);
    CHECK_EQ_INT(t.count, 20);
    pl_room_leave_all(&t, &la);
    CHECK(la == NULL);
    CHECK_EQ_INT(t.count, 5); /* rooms b is in survive */
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "room-%d", i);
        pl_room_t *r = find_s(&t, name);
        if (i % 4 == 0) {
            CHECK(r && r->nmembers == 1 && r->members[0]->owner == &b && room_consistent(r));
        } else {
            CHECK(r == NULL);
        }
    }
    pl_room_leave_all(&t, &lb);
    CHECK(lb == NULL);
    CHECK_EQ_INT(t.count, 0);
    pl_room_leave_all(&t, &lb); /* on an empty list: nothing */
    pl_room_table_free(&t);
}

static void many_rooms_table_growth(void)
{
    enum { N = 5000 };
    pl_room_table_t t;
    pl_room_table_init(&t);
    int owner;
    pl_sub_t *l = NULL;
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "room.%d", i);
        CHECK(join_s(&t, name, &owner, &l) != NULL);
    }
    CHECK_EQ_INT(t.count, N);
    CHECK(2 * t.h.nbuckets >= N);
        /* at most two per bucket on average */      /* load factor at most 1 */
    CHECK((t.h.nbuckets & (t.h.nbuckets - 1)) == 0); /* a power of two */
    CHECK_EQ_INT(pl_room_count(l), N);
    int missing = 0, wrong = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "room.%d", i);
        pl_room_t *r = find_s(&t, name);
        if (!r)
            missing++;
        else if (strcmp(r->name, name) != 0 || r->nmembers != 1)
            wrong++;
    }
    CHECK_EQ_INT(missing, 0);
    CHECK_EQ_INT(wrong, 0);
    /* every room is in exactly one chain, in the right bucket */
    size_t chained = 0, misplaced = 0;
    for (size_t bkt = 0; bkt < t.h.nbuckets; bkt++)
        for (pl_hnode_t *n = t.h.buckets[bkt]; n; n = n->next) {
            chained++;
            misplaced += (n->hash & (t.h.nbuckets - 1)) != bkt;
        }
    CHECK_EQ_INT(chained, N);
    CHECK_EQ_INT(misplaced, 0);
    CHECK(find_s(&t, "room.5000") == NULL);
    /* leave half, the rest are still findable */
    pl_sub_t **pp = &l;
    int left = 0;
    while (*pp) {
        pl_sub_t *s = *pp;
        int num = atoi(s->room->name + 5);
        if (num % 2) {
            pl_room_leave(&t, &l, s); /* removing from the head or middle of the list */
            left++;
            pp = &l; /* restart: the list changed */
        } else {
            pp = &s->next;
        }
    }
    CHECK_EQ_INT(left, N / 2);
    CHECK_EQ_INT(t.count, N / 2);
    missing = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "room.%d", i);
        missing += (find_s(&t, name) == NULL) != (i % 2 == 1);
    }
    CHECK_EQ_INT(missing, 0);
    /* free with rooms and subscriptions still in it (valgrind: no leak) */
    pl_room_table_free(&t);
    CHECK_EQ_INT(t.count, 0);
    CHECK(t.h.buckets == NULL);
}

static void sub_of(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    int a, b;
    pl_sub_t *la = NULL, *lb = NULL;
    pl_sub_t *a1 = join_s(&t, "one", &a, &la);
    pl_sub_t *a2 = join_s(&t, "two", &a, &la);
    pl_sub_t *a3 = join_s(&t, "three", &a, &la);
    pl_sub_t *b2 = join_s(&t, "two", &b, &lb);
    pl_sub_t *b4 = join_s(&t, "four", &b, &lb);
    pl_room_t *one = find_s(&t, "one"), *two = find_s(&t, "two"), *three = find_s(&t, "three"),
              *four = find_s(&t, "four");
    CHECK(pl_room_sub_of(la, one) == a1);
    CHECK(pl_room_sub_of(la, two) == a2);
    CHECK(pl_room_sub_of(la, three) == a3);
    CHECK(pl_room_sub_of(la, four) == NULL);
    CHECK(pl_room_sub_of(lb, two) == b2);
    CHECK(pl_room_sub_of(lb, four) == b4);
    CHECK(pl_room_sub_of(lb, one) == NULL);
    CHECK(pl_room_sub_of(NULL, one) == NULL);
    pl_room_leave(&t, &la, a2); /* from the middle of a's list */
    CHECK(pl_room_sub_of(la, two) == NULL);
    CHECK(pl_room_sub_of(la, one) == a1 && pl_room_sub_of(la, three) == a3);
    CHECK_EQ_INT(pl_room_count(la), 2);
    CHECK(pl_room_sub_of(lb, two) == b2);
    CHECK(find_s(&t, "two") == two && two->nmembers == 1 && room_consistent(two));
    pl_room_table_free(&t);
}

/* pl_room_first/next visit every room exactly once, empty table included. */
static void walk(void)
{
    pl_room_table_t t;
    pl_room_table_init(&t);
    CHECK(pl_room_first(&t) == NULL);
    enum { N = 300 };
    int owner;
    pl_sub_t *l = NULL;
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "w%d", i);
        CHECK(join_s(&t, name, &owner, &l) != NULL);
    }
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    size_t visits = 0;
    for (pl_room_t *r = pl_room_first(&t); r; r = pl_room_next(&t, r)) {
        int i = atoi(r->name + 1);
        CHECK(i >= 0 && i < N);
        if (i >= 0 && i < N) seen[i]++;
        visits++;
    }
    CHECK_EQ_INT(visits, N);
    int twice_or_never = 0;
    for (int i = 0; i < N; i++)
        twice_or_never += seen[i] != 1;
    CHECK_EQ_INT(twice_or_never, 0);
    pl_room_table_free(&t);
}

int main(void)
{
    RUN(walk);
    RUN(id_valid);
    RUN(join_leave_find);
    RUN(idempotent_join);
    RUN(swap_remove_keeps_indices);
    RUN(leave_all);
    RUN(many_rooms_table_growth);
    RUN(sub_of);
    UNIT_EXIT();
}
