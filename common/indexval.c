/* Encoding and strict decoding of event index values ({"id":"<uuid>","status":"<word>"} and an
 * optional "filter" member last). */
#include "indexval.h"

#include <string.h>

static const char head[] = "{\"id\":\"";
static const char mid[] = "\",\"status\":\"";
static const char tail[] = "\"}";
#define HEAD_LEN (sizeof head - 1)
#define MID_LEN (sizeof mid - 1)
#define TAIL_LEN (sizeof tail - 1)
static const char fmid[] = "\",\"filter\":";
#define FMID_LEN (sizeof fmid - 1)

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

void indexval_encode_filter(struct buf *b, const char *id, const char *filter, size_t flen)
{
    char v[INDEXVAL_SIZE];
    size_t n = indexval_encode(v, id);
    if (!filter) {
        buf_add(b, v, n);
        return;
    }
    buf_add(b, v, n - TAIL_LEN + 1); /* up to the status' closing quote */
    buf_add(b, fmid + 1, FMID_LEN - 1);
    buf_add(b, filter, flen);
    buf_addc(b, '}');
}

bool indexval_decode(const char *v, size_t n, struct indexval *out)
{
    if (!v || n < HEAD_LEN + ID_LEN + MID_LEN + 1 + TAIL_LEN)
        return false;
    if (memcmp(v, head, HEAD_LEN) != 0 || !id_valid(v + HEAD_LEN, ID_LEN))
        return false;
    const char *p = v + HEAD_LEN + ID_LEN, *end = v + n;
    if (memcmp(p, mid, MID_LEN) != 0)
        return false;
    p += MID_LEN;
    size_t slen = 0;
    while (p + slen < end && p[slen] >= 'a' && p[slen] <= 'z')
        slen++;
    if (slen == 0 || slen > INDEXVAL_STATUS_MAX)
        return false;
    const char *q = p + slen;
    size_t rest = (size_t)(end - q);
    out->filter = NULL;
    out->filter_len = 0;
    if (rest == TAIL_LEN && memcmp(q, tail, TAIL_LEN) == 0) {
        /* no filter */
    } else if (rest > FMID_LEN + 2 && memcmp(q, fmid, FMID_LEN) == 0 && q[FMID_LEN] == '{' &&
               end[-1] == '}') {
        out->filter = q + FMID_LEN;
        out->filter_len = rest - FMID_LEN - 1;
    } else {
        return false;
    }
    id_normalize(v + HEAD_LEN, out->id);
    memcpy(out->status, p, slen);
    out->status[slen] = '\0';
    return true;
}
