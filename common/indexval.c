/* Encoding and strict decoding of event index values ({"id":"<uuid>","status":"<word>"}). */
#include "indexval.h"

#include <string.h>

static const char head[] = "{\"id\":\"";
static const char mid[] = "\",\"status\":\"";
static const char tail[] = "\"}";
#define HEAD_LEN (sizeof head - 1)
#define MID_LEN (sizeof mid - 1)
#define TAIL_LEN (sizeof tail - 1)

size_t indexval_encode(char *out, const char *id)
{
    static const char status[] = "active";
    char *p = out;
    memcpy(p, head, HEAD_LEN);
    p += HEAD_LEN;
    id_normalize(id, p);
    p += ID_LEN;
    memcpy(p, mid, MID_LEN);
    p += MID_LEN;
    memcpy(p, status, sizeof status - 1);
    p += sizeof status - 1;
    memcpy(p, tail, TAIL_LEN);
    p += TAIL_LEN;
    *p = '\0';
    return (size_t)(p - out);
}

bool indexval_decode(const char *v, size_t n, struct indexval *out)
{
    if (!v || n < HEAD_LEN + ID_LEN + MID_LEN + 1 + TAIL_LEN ||
        n > HEAD_LEN + ID_LEN + MID_LEN + INDEXVAL_STATUS_MAX + TAIL_LEN)
        return false;
    if (memcmp(v, head, HEAD_LEN) != 0 || !id_valid(v + HEAD_LEN, ID_LEN))
        return false;
    const char *p = v + HEAD_LEN + ID_LEN;
    if (memcmp(p, mid, MID_LEN) != 0)
        return false;
    p += MID_LEN;
    size_t slen = n - (size_t)(p - v) - TAIL_LEN;
    if (memcmp(p + slen, tail, TAIL_LEN) != 0)
        return false;
    for (size_t i = 0; i < slen; i++)
        if (p[i] < 'a' || p[i] > 'z')
            return false;
    id_normalize(v + HEAD_LEN, out->id);
    memcpy(out->status, p, slen);
    out->status[slen] = '\0';
    return true;
}
