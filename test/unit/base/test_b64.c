/* Unit tests for src/base/b64.c: RFC 4648's vectors in both alphabets, round trips of every
 * length, and what decoding refuses. */
#include "parley/base/b64.h"
#include "unit.h"

static void rfc4648_vectors(void)
{
    static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char out[32];
    unsigned char dec[32];
    size_t n;
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        size_t len = strlen(in[i]);
        CHECK_EQ_INT(pl_b64_encode((const unsigned char *)in[i], len, out, sizeof out, PL_B64_STD),
                     (int)strlen(std[i]));
        CHECK_STR(out, std[i]);
        CHECK_EQ_INT(pl_b64_encode((const unsigned char *)in[i], len, out, sizeof out, PL_B64_URL),
                     (int)strlen(url[i]));
        CHECK_STR(out, url[i]);
        CHECK_EQ_INT(pl_b64_decode(url[i], strlen(url[i]), dec, sizeof dec, &n, PL_B64_URL), 0);
        CHECK_EQ_INT(n, len);
        CHECK(memcmp(dec, in[i], len) == 0);
    }
}

static void alphabets_and_round_trips(void)
{
    unsigned char raw[64], dec[64];
    char enc[PL_B64_ENCODED_SIZE(64)];
    size_t n;
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(i * 37 + 250); /* every 6-bit group turns up, 62 and 63 too */
    for (size_t len = 0; len <= sizeof raw; len++) {
        int e = pl_b64_encode(raw, len, enc, sizeof enc, PL_B64_URL);
        CHECK(e >= 0 && !strpbrk(enc, "+/="));
        CHECK_EQ_INT(pl_b64_decode(enc, (size_t)e, dec, sizeof dec, &n, PL_B64_URL), 0);
        CHECK(n == len && memcmp(dec, raw, len) == 0);
        e = pl_b64_encode(raw, len, enc, sizeof enc, PL_B64_STD);
        CHECK(e >= 0 && e % 4 == 0 && !strpbrk(enc, "-_"));
        size_t digits = (size_t)e;
        while (digits && enc[digits - 1] == '=')
            digits--;
        CHECK_EQ_INT(pl_b64_decode(enc, digits, dec, sizeof dec, &n, PL_B64_STD), 0);
        CHECK(n == len && memcmp(dec, raw, len) == 0);
    }
    /* The URL alphabet's digits are not standard ones, and the other way round. */
    CHECK_EQ_INT(pl_b64_decode("-_-_", 4, dec, sizeof dec, &n, PL_B64_STD), -1);
    CHECK_EQ_INT(pl_b64_decode("+/+/", 4, dec, sizeof dec, &n, PL_B64_URL), -1);
}

static void decode_refuses(void)
{
    unsigned char dec[16];
    size_t n;
    CHECK_EQ_INT(pl_b64_decode("Zm9vY", 5, dec, sizeof dec, &n, PL_B64_URL), -1); /* 1 left over */
    CHECK_EQ_INT(pl_b64_decode("Zh", 2, dec, sizeof dec, &n, PL_B64_URL), -1);    /* bits set */
    CHECK_EQ_INT(pl_b64_decode("Zm9", 3, dec, sizeof dec, &n, PL_B64_URL), -1);   /* bits set */
    CHECK_EQ_INT(pl_b64_decode("Zm8=", 4, dec, sizeof dec, &n, PL_B64_STD), -1);  /* padding */
    CHECK_EQ_INT(pl_b64_decode("Zm 9", 4, dec, sizeof dec, &n, PL_B64_STD), -1);
    CHECK_EQ_INT(pl_b64_decode("Zm\x80v", 4, dec, sizeof dec, &n, PL_B64_STD), -1);
    CHECK_EQ_INT(pl_b64_decode("Zm\0v", 4, dec, sizeof dec, &n, PL_B64_STD), -1);
    /* Output room: 6 digits make 4 bytes. */
    CHECK_EQ_INT(pl_b64_decode("Zm9vYg", 6, dec, 3, &n, PL_B64_URL), -1);
    CHECK_EQ_INT(pl_b64_decode("Zm9vYg", 6, dec, 4, &n, PL_B64_URL), 0);
    CHECK_EQ_INT(n, 4);
    char out[16];
    CHECK_EQ_INT(pl_b64_encode((const unsigned char *)"foob", 4, out, 8, PL_B64_STD), -1);
    CHECK_EQ_INT(pl_b64_encode((const unsigned char *)"foob", 4, out, 9, PL_B64_STD), 8);
}

int main(void)
{
    RUN(rfc4648_vectors);
    RUN(alphabets_and_round_trips);
    RUN(decode_refuses);
    UNIT_EXIT();
}
