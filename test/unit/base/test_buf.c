/* Unit tests for src/buf.c: growth, printf, integers and JSON string escaping. */
#include "parley/base/buf.h"
#include "unit.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

static void add_and_reset(void)
{
    pl_buf_t b = {0};
    pl_buf_add(&b, "ab", 2);
    pl_buf_adds(&b, "cd");
    pl_buf_add(&b, "e\0f", 3); /* binary-safe */
    CHECK_EQ_INT(b.len, 7);
    CHECK(memcmp(b.data, "abcde\0f", 7) == 0);
    CHECK(b.data[7] == '\0'); /* NUL after len */
    CHECK(b.cap >= 8);
    size_t cap = b.cap;
    char *data = b.data;
    pl_buf_reset(&b);
    CHECK_EQ_INT(b.len, 0);
    CHECK(b.data == data && b.cap == cap && b.data[0] == '\0'); /* storage kept */
    pl_buf_add(&b, "", 0);
    CHECK(b.data[0] == '\0');
    pl_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    pl_buf_reset(&b); /* safe on an empty buffer */
    pl_buf_free(&b);  /* and twice */
}

static void reserve(void)
{
    pl_buf_t b = {0};
    pl_buf_reserve(&b, 1000);
    CHECK(b.cap >= 1001 && b.data != NULL);
    CHECK_EQ_INT(b.len, 0);
    pl_buf_adds(&b, "xyz");
    char *before = b.data;
    pl_buf_reserve(&b, 10); /* already room: nothing moves */
    CHECK(b.data == before);
    pl_buf_reserve(&b, 100000);
    CHECK(b.cap >= 100000 + 3 + 1);
    CHECK(memcmp(b.data, "xyz", 4) == 0); /* contents and NUL kept */
    pl_buf_free(&b);
}

static void growth_many_appends(void)
{
    pl_buf_t b = {0};
    int room = 0;
    for (int i = 0; i < 10000; i++) {
        pl_buf_add(&b, "0123456789", 10);
        room += b.cap >= b.len + 1; /* the NUL after len is inside the allocation */
    }
    CHECK_EQ_INT(room, 10000);
    CHECK_EQ_INT(b.len, 100000);
    CHECK(b.cap > b.len);
    int bad = 0;
    for (size_t i = 0; i < b.len; i++)
        bad += b.data[i] != (char)('0' + i % 10);
    CHECK_EQ_INT(bad, 0);
    CHECK(b.data[b.len] == '\0');
    pl_buf_free(&b);
}

static void printf_growth(void)
{
    pl_buf_t b = {0};
    pl_buf_printf(&b, "%d-%s", 42, "x");
    CHECK_STR(b.data, "42-x");
    CHECK_EQ_INT(b.len, 4);
    size_t cap0 = b.cap;
    /* much longer than the initial capacity, in one call */
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pl_buf_printf(&b, "[%s]%05d", big, 7);
    CHECK(b.cap > cap0);
    CHECK_EQ_INT(b.len, 4 + 1 + 4999 + 1 + 5);
    CHECK_EQ_INT(strlen(b.data), b.len);
    CHECK(strncmp(b.data, "42-x[qqq", 8) == 0);
    CHECK(strcmp(b.data + b.len - 6, "]00007") == 0);
    /* exactly filling the buffer to its capacity boundary */
    pl_buf_t c = {0};
    pl_buf_reserve(&c, 0);
    size_t fill = c.cap - 1 - 3;
    char *pad = malloc(fill + 1);
    memset(pad, 'p', fill);
    pad[fill] = '\0';
    pl_buf_printf(&c, "%s", pad);
    pl_buf_printf(&c, "%s", "abc"); /* ends exactly at cap-1, NUL in the last byte */
    CHECK_EQ_INT(c.len, fill + 3);
    CHECK(strcmp(c.data + fill, "abc") == 0);
    CHECK(c.cap >= c.len + 1);
    pl_buf_printf(&c, "%s", "d"); /* one more: must grow */
    CHECK_EQ_INT(c.len, fill + 4);
    CHECK(c.cap >= c.len + 1);
    /* reserve + add at exact sizes around every power of two up to 4 KiB */
    for (size_t want = 1; want < 4200; want += 1) {
        pl_buf_t d = {0};
        char *z = calloc(1, want);
        pl_buf_add(&d, z, want);
        if (d.cap < want + 1) {
            printf("  add of %zu: cap %zu\n", want, d.cap);
            CHECK(0);
        }
        free(z);
        pl_buf_free(&d);
    }
    CHECK(strcmp(c.data + fill, "abcd") == 0);
    free(pad);
    pl_buf_free(&c);
    /* empty output leaves the buffer as it was */
    size_t len = b.len;
    pl_buf_printf(&b, "%s", "");
    CHECK_EQ_INT(b.len, len);
    pl_buf_free(&b);
}

static void ints(void)
{
    pl_buf_t b = {0};
    pl_buf_int(&b, 0);
    pl_buf_adds(&b, ",");
    pl_buf_int(&b, -1);
    pl_buf_adds(&b, ",");
    pl_buf_int(&b, 1700000000123LL);
    pl_buf_adds(&b, ",");
    pl_buf_int(&b, -42);
    pl_buf_adds(&b, ",");
    pl_buf_int(&b, INT64_MAX);
    pl_buf_adds(&b, ",");
    pl_buf_int(&b, INT64_MIN);
    CHECK_STR(b.data, "0,-1,1700000000123,-42,9223372036854775807,-9223372036854775808");
    pl_buf_reset(&b);
    pl_buf_uint(&b, UINT64_MAX);
    CHECK_STR(b.data, "18446744073709551615");
    pl_buf_free(&b);
    /* pl_u64_str against printf over every digit count */
    char out[21], want[32];
    int bad = 0;
    for (uint64_t v = 1, k = 0; k < 20; k++, v *= 10)
        for (uint64_t d = 0; d < 3; d++) {
            uint64_t x = v - 1 + d;
            snprintf(want, sizeof want, "%llu", (unsigned long long)x);
            if (pl_u64_str(out, x) != strlen(want) || strcmp(out, want) != 0) bad++;
        }
    CHECK_EQ_INT(bad, 0);
}

/* Escape s[0..n) and parse the result back with cJSON: it must be one JSON
 * string equal to the input. Returns the escaped text (caller frees b). */
static int roundtrips(pl_buf_t *b, const char *s, size_t n)
{
    pl_buf_reset(b);
    pl_buf_json_str(b, s, n);
    cJSON *j = cJSON_ParseWithLength(b->data, b->len);
    int ok =
        j && cJSON_IsString(j) && memcmp(j->valuestring, s, n) == 0 && j->valuestring[n] == '\0';
    cJSON_Delete(j);
    return ok;
}

static void json_escapes(void)
{
    pl_buf_t b = {0};
    pl_buf_json_str(&b, "plain", 5);
    CHECK_STR(b.data, "\"plain\"");
    pl_buf_reset(&b);
    pl_buf_json_str(&b, "", 0);
    CHECK_STR(b.data, "\"\"");
    pl_buf_reset(&b);
    pl_buf_json_str(&b, "a\"b\\c/d", 7);
    CHECK_STR(b.data, "\"a\\\"b\\\\c/d\"");
    pl_buf_reset(&b);
    pl_buf_json_str(&b, "\b\f\n\r\t", 5);
    CHECK_STR(b.data, "\"\\b\\f\\n\\r\\t\"");
    pl_buf_reset(&b);
    pl_buf_json_str(&b, "abcdef", 3); /* only n bytes */
    CHECK_STR(b.data, "\"abc\"");

    /* every byte below 0x20: a short escape or \u00XX, never raw */
    static const char *shortesc[32] = {
        ['\b'] = "\\b", ['\f'] = "\\f", ['\n'] = "\\n", ['\r'] = "\\r", ['\t'] = "\\t"};
    int bad = 0;
    for (int c = 0; c < 0x20; c++) {
        char in = (char)c, want[16];
        if (shortesc[c])
            snprintf(want, sizeof want, "\"%s\"", shortesc[c]);
        else
            snprintf(want, sizeof want, "\"\\u%04x\"", c);
        pl_buf_reset(&b);
        pl_buf_json_str(&b, &in, 1);
        if (strcmp(b.data, want) != 0 && !(b.len == 8 && strncasecmp(b.data, want, 8) == 0)) {
            printf("  byte 0x%02x -> %s (want %s)\n", c, b.data, want);
            bad++;
        }
        if (b.len != strlen(want)) bad++;
        if (!roundtrips(&b, &in, 1)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    /* NUL inside a string is kept as \u0000 */
    pl_buf_reset(&b);
    pl_buf_json_str(&b, "a\0b", 3);
    CHECK_STR(b.data, "\"a\\u0000b\"");
    CHECK_EQ_INT(b.len, 10);

    /* UTF-8 and DEL pass through as they are */
    const char *u = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f";
    pl_buf_reset(&b);
    pl_buf_json_str(&b, u, strlen(u));
    CHECK_EQ_INT(b.len, strlen(u) + 2);
    CHECK(b.data[0] == '"' && memcmp(b.data + 1, u, strlen(u)) == 0 && b.data[b.len - 1] == '"');
    CHECK(roundtrips(&b, u, strlen(u)));

    /* all of it at once */
    char all[256];
    for (int i = 1; i < 128; i++)
        all[i - 1] = (char)i;
    CHECK(roundtrips(&b, all, 127));
    pl_buf_free(&b);
}

static void json_worst_case_growth(void)
{
    /* 10000 control bytes = 60000 escaped bytes, appended after existing text */
    enum { N = 10000 };
    char *s = malloc(N);
    memset(s, 0x01, N);
    pl_buf_t b = {0};
    pl_buf_adds(&b, "pre:");
    pl_buf_json_str(&b, s, N);
    CHECK_EQ_INT(b.len, 4 + 2 + 6 * N);
    CHECK(b.cap > b.len);
    CHECK(strncmp(b.data, "pre:\"\\u0001\\u0001", 17) == 0);
    CHECK(b.data[b.len - 1] == '"' && b.data[b.len] == '\0');
    CHECK_EQ_INT(strlen(b.data), b.len);
    free(s);
    pl_buf_free(&b);
}

static int has_nul(const char *s)
{
    return pl_json_has_nul(s, strlen(s));
}

static void json_has_nul(void)
{
    CHECK_EQ_INT(pl_json_has_nul("", 0), 0);
    CHECK_EQ_INT(has_nul("{\"text\":\"hello\"}"), 0);
    CHECK_EQ_INT(pl_json_has_nul("{\"a\":\"x\0y\"}", 11), 1); /* a raw NUL */
    CHECK_EQ_INT(has_nul("\"\\u0000\""), 1);                  /* \u0000 */
    CHECK_EQ_INT(has_nul("{\"t\":\"ab\\u0000cd\"}"), 1);
    CHECK_EQ_INT(has_nul("\\u0000"), 1);           /* at the very start/end */
    CHECK_EQ_INT(has_nul("\"\\\\u0000\""), 0);     /* \\ then u0000: no NUL */
    CHECK_EQ_INT(has_nul("\"\\\\\\u0000\""), 1);   /* \\ then \u0000 */
    CHECK_EQ_INT(has_nul("\"\\\\\\\\u0000\""), 0); /* two escaped backslashes */
    CHECK_EQ_INT(has_nul("\"\\u0001\""), 0);
    CHECK_EQ_INT(has_nul("\"\\u00000\""), 1);
    CHECK_EQ_INT(has_nul("\"\\u000\""), 0);
    CHECK_EQ_INT(has_nul("\\u000"), 0); /* cut short at the end */
    CHECK_EQ_INT(has_nul("\"u0000\""), 0);
    CHECK_EQ_INT(has_nul("\"\\n\\u0000\""), 1);     /* after another escape */
    CHECK_EQ_INT(pl_json_has_nul("\\u0000", 5), 0); /* only n bytes */
    CHECK_EQ_INT(pl_json_has_nul("ab\0", 2), 0);

    /* Against cJSON: strings built from whole escapes, random order. The
     * decoded string holds a NUL exactly when a \u0000 token was used. */
    static const char *tok[] = {"a",   "\\\\", "\\u0000", "\\u0001", "u0000",
                                "\\n", "0",    "\\\"",    "\\u00e9", "\\/"};
    srand(7);
    int bad = 0;
    for (int iter = 0; iter < 5000; iter++) {
        char json[256] = "\"";
        int want = 0, ntok = rand() % 8;
        for (int k = 0; k < ntok; k++) {
            int t = rand() % 10;
            want |= t == 2;
            strcat(json, tok[t]);
        }
        strcat(json, "\"");
        cJSON *j = cJSON_Parse(json);
        if (!j) {
            bad++;
            continue;
        }
        if (has_nul(json) != want) {
            printf("  %s: has_nul %d, want %d\n", json, has_nul(json), want);
            bad++;
        }
        cJSON_Delete(j);
    }
    CHECK_EQ_INT(bad, 0);
}

int main(void)
{
    RUN(add_and_reset);
    RUN(reserve);
    RUN(growth_many_appends);
    RUN(printf_growth);
    RUN(ints);
    RUN(json_escapes);
    RUN(json_worst_case_growth);
    RUN(json_has_nul);
    UNIT_EXIT();
}
