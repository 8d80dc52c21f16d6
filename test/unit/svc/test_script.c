/* Unit tests for the key names of src/svc/script.c: on one Redis they are the names Parley has
 * always used (what is in a running Redis keeps working); in a cluster every key of a room shares
 * the room's hash slot, and rooms spread over slots. */
#include "parley/svc/script.h"

#include <stdio.h>
#include <string.h>

#include "parley/svc/slots.h"
#include "unit.h"

static pl_buf_t b;

static const char *str(void)
{
    pl_buf_add(&b, "", 1); /* NUL-terminated for comparing; not part of the key */
    return b.data;
}

static uint16_t slot(void)
{
    return pl_slots_key(b.data, b.len);
}

static void single_redis_names(void)
{
    pl_key_set_cluster(0);
    pl_key_seq(&b, "general", 7);
    CHECK_STR(str(), "parley:seq:general");
    pl_key_stream(&b, "general", 7);
    CHECK_STR(str(), "parley:stream:general");
    pl_key_ready(&b, "general", 7);
    CHECK_STR(str(), "parley:ready");
    pl_key_cid(&b, "general", 7, "alice", "c1", 2);
    CHECK_STR(str(), "parley:cid:5:alice:c1");
    pl_key_read(&b, "ws:", "general", 7);
    CHECK_STR(str(), "ws:read:general");
    pl_key_typing(&b, "ws:", "typing:", "general", 7, "alice");
    CHECK_STR(str(), "ws:typing:general:alice");
    pl_key_typing(&b, "ws:", "typing_rl:", "general", 7, "alice");
    CHECK_STR(str(), "ws:typing_rl:general:alice");
    pl_key_room_chan(&b, "general", 7);
    CHECK_STR(str(), "room:general");
    CHECK_STR(pl_key_publish_cmd(), "PUBLISH");
}

static void cluster_names_share_the_room_slot(void)
{
    pl_key_set_cluster(1);
    pl_key_seq(&b, "general", 7);
    uint16_t s = slot();
    CHECK_STR(str(), "parley:{r:general}:seq");
    pl_key_stream(&b, "general", 7);
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "parley:{r:general}:stream");
    pl_key_ready(&b, "general", 7);
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "parley:{r:general}:ready");
    pl_key_cid(&b, "general", 7, "alice", "c1", 2);
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "parley:{r:general}:cid:5:alice:c1");
    pl_key_read(&b, "ws:", "general", 7);
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "ws:{r:general}:read");
    pl_key_typing(&b, "ws:", "typing:", "general", 7, "al}ice");
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "ws:{r:general}:typing:al}ice");
    pl_key_typing(&b, "ws:", "typing_rl:", "general", 7, "alice");
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "ws:{r:general}:typing_rl:alice");
    pl_key_room_chan(&b, "general", 7); /* the shard channel lives with the room's keys */
    CHECK_EQ_INT(slot(), s);
    CHECK_STR(str(), "room:{r:general}");
    CHECK_STR(pl_key_publish_cmd(), "SPUBLISH");
    /* The tag is the room: another room, another slot (for these two). */
    pl_key_seq(&b, "random", 6);
    CHECK(slot() != s);
    /* Room ids have no braces (pl_room_id_valid), so the tag is the whole id; a user id with
     * one (above) comes after the tag and cannot move the key. A direct conversation: */
    pl_key_seq(&b, "dm:alice:bob", 12);
    CHECK_STR(str(), "parley:{r:dm:alice:bob}:seq");
    pl_key_set_cluster(0);
}

/* A user's keys share the user's slot, an instance's the instance's; the online set is spread
 * over PL_KEY_ONLINE_BUCKETS buckets, each user always in the same one. */
static void cluster_names_of_users_and_instances(void)
{
    pl_key_set_cluster(1);
    pl_key_user(&b, "ws:", "alice", "user");
    uint16_t s = slot();
    CHECK_STR(str(), "ws:{u:alice}:user");
    pl_key_user(&b, "ws:", "alice", "rooms");
    CHECK_EQ_INT(slot(), s);
    pl_key_user(&b, "ws:", "alice", "revoked");
    CHECK_EQ_INT(slot(), s);
    CHECK_EQ_INT(s, pl_slots_key("u:alice", 7));
    pl_key_server(&b, "ws:", "node-1", "users");
    CHECK_STR(str(), "ws:{s:node-1}:users");
    pl_key_server(&b, "ws:", "node-1", "server");
    CHECK_EQ_INT(slot(), pl_slots_key("s:node-1", 8));
    pl_key_participants(&b, "ws:", "general", 7);
    CHECK_STR(str(), "ws:{r:general}:participants");
    CHECK_EQ_INT(slot(), pl_slots_key("r:general", 9));
    /* The bucket: the user's CRC16 mod 64, the same on every call. */
    char want[32];
    snprintf(want, sizeof want, "ws:{o:%u}:online", (unsigned)(pl_slots_key("alice", 5) % 64));
    pl_key_online(&b, "ws:", "alice");
    CHECK_STR(str(), want);
    int seen[PL_KEY_ONLINE_BUCKETS] = {0}, used = 0;
    char user[24];
    for (int i = 0; i < 1000; i++) {
        snprintf(user, sizeof user, "user-%d", i);
        pl_key_online(&b, "ws:", user);
        unsigned k;
        CHECK(sscanf(str(), "ws:{o:%u}:online", &k) == 1 && k < PL_KEY_ONLINE_BUCKETS);
        if (k < PL_KEY_ONLINE_BUCKETS && !seen[k]++) used++;
    }
    CHECK_EQ_INT(used, PL_KEY_ONLINE_BUCKETS); /* 1,000 users reach every bucket */
    pl_key_participants(&b, "ws:", "general", 7);
    pl_key_set_cluster(0);
    pl_key_participants(&b, "ws:", "general", 7);
    CHECK_STR(str(), "ws:room_participants:general");
}

/* A room channel names its room back, in the mode it was named in; nothing else does. */
static void room_of_channel(void)
{
    const char *room;
    size_t len;
    for (int cluster = 0; cluster < 2; cluster++) {
        pl_key_set_cluster(cluster);
        pl_key_room_chan(&b, "dm:a:b", 6);
        CHECK_EQ_INT(pl_key_room_of_chan(b.data, b.len, &room, &len), 0);
        CHECK(len == 6 && memcmp(room, "dm:a:b", 6) == 0);
    }
    pl_key_set_cluster(0);
    CHECK_EQ_INT(pl_key_room_of_chan("room:", 5, &room, &len), -1);
    CHECK_EQ_INT(pl_key_room_of_chan("server:x", 8, &room, &len), -1);
    pl_key_set_cluster(1);
    CHECK_EQ_INT(pl_key_room_of_chan("room:general", 12, &room, &len), -1);
    CHECK_EQ_INT(pl_key_room_of_chan("room:{r:}", 9, &room, &len), -1);
    CHECK_EQ_INT(pl_key_room_of_chan("room:{r:x", 9, &room, &len), -1);
    pl_key_set_cluster(0);
}

int main(void)
{
    RUN(single_redis_names);
    RUN(cluster_names_share_the_room_slot);
    RUN(room_of_channel);
    RUN(cluster_names_of_users_and_instances);
    pl_buf_free(&b);
    UNIT_EXIT();
}
