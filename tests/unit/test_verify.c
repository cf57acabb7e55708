/* Unit tests for broker/verify.c's verdict on a challenge's answer (verify_judge): a 2xx whose
 * body is a JSON object echoing the challenge passes; anything else fails with a message that
 * says what came back, bounded and with unprintable bytes replaced. Linked with
 * broker/verify.o. */
#include <stdbool.h>
#include <string.h>

#include "../../broker/verify.h"
#include "unit.h"

static const char ch[] = "5f2c";

static enum verify_result judge(long status, const char *body, char *why, size_t whylen)
{
    return verify_judge(ch, status, body, strlen(body), false, why, whylen);
}

int main(int argc, char **argv)
{
    (void)argc;
    char why[512];
    CHECK_EQ_INT(judge(200, "{\"challenge\":\"5f2c\"}", why, sizeof why), VERIFY_OK);
    CHECK_EQ_INT(judge(201, " { \"other\": 1, \"challenge\" : \"5f2c\" }\n", why, sizeof why),
                 VERIFY_OK);
    CHECK_EQ_INT(judge(299, "{\"challenge\":\"5f2c\"}", why, sizeof why), VERIFY_OK);

    /* not 2xx, whatever the body */
    CHECK_EQ_INT(judge(500, "{\"challenge\":\"5f2c\"}", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "HTTP 500") && strstr(why, "a 2xx is required"));
    CHECK_EQ_INT(judge(302, "", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "redirects are not followed") != NULL);
    CHECK_EQ_INT(judge(100, "{\"challenge\":\"5f2c\"}", why, sizeof why), VERIFY_FAILED);

    /* 2xx, but not the echo */
    CHECK_EQ_INT(judge(200, "5f2c", why, sizeof why), VERIFY_FAILED); /* plain text: strict */
    CHECK(strstr(why, "not a JSON object") != NULL);
    CHECK_EQ_INT(judge(200, "\"5f2c\"", why, sizeof why), VERIFY_FAILED);
    CHECK_EQ_INT(judge(200, "[\"5f2c\"]", why, sizeof why), VERIFY_FAILED);
    CHECK_EQ_INT(judge(200, "", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "is empty") != NULL);
    CHECK_EQ_INT(judge(200, "{\"challenge\":\"5f2c\"} trailing", why, sizeof why), VERIFY_FAILED);
    CHECK_EQ_INT(judge(200, "{\"challenge\":5}", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "no \"challenge\" string") != NULL);
    CHECK_EQ_INT(judge(200, "{\"Challenge\":\"5f2c\"}", why, sizeof why), VERIFY_FAILED);
    CHECK_EQ_INT(judge(200, "{\"challenge\":\"5F2C\"}", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "another challenge") != NULL);
    CHECK_EQ_INT(judge(200, "{\"challenge\":\"5f2c0\"}", why, sizeof why), VERIFY_FAILED);
    /* a NUL inside the body is not skipped over */
    CHECK_EQ_INT(verify_judge(ch, 200, "{\"challenge\":\"5f2c\"}\0x", 22, false, why, sizeof why),
                 VERIFY_FAILED);
    /* cut off at VERIFY_BODY_MAX */
    CHECK_EQ_INT(verify_judge(ch, 200, "{\"challenge\":\"5f2c\"}", 20, true, why, sizeof why),
                 VERIFY_FAILED);
    CHECK(strstr(why, "over 65536 bytes") != NULL);

    /* the excerpt: unprintable bytes replaced, at most VERIFY_EXCERPT_MAX bytes, "..." when cut */
    CHECK_EQ_INT(judge(400, "a\x01\xc3\xa9\"b\n", why, sizeof why), VERIFY_FAILED);
    CHECK(strstr(why, "body: \"a???\"b?\"") != NULL);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_EQ_INT(judge(400, big, why, sizeof why), VERIFY_FAILED);
    const char *q = strstr(why, "body: \"");
    CHECK(q && strlen(q + 7) == VERIFY_EXCERPT_MAX + 3 + 1); /* excerpt, "...", closing quote */
    CHECK(q && strstr(q, "x...\"") != NULL);
    /* a short message buffer is never overrun */
    char tiny[16];
    CHECK_EQ_INT(judge(400, big, tiny, sizeof tiny), VERIFY_FAILED);
    CHECK(strlen(tiny) == sizeof tiny - 1);
    return unit_done(argv[0]);
}
