/* One call to the broker's API and its outcome: the path built with escaped segments, the
 * answer printed as it came (--json) or parsed for the command to render, errors on stderr
 * and the exit code of their class. */
#ifndef WH_CLI_API_H
#define WH_CLI_API_H

#include <cJSON.h>

#include "cli.h"
#include "mem.h"

/* Appends "/" and s percent-encoded (all but unreserved characters) to path. */
void api_seg(struct buf *path, const char *s);
/* Appends "?name=value" or "&name=value", value percent-encoded; nothing when value is NULL. */
void api_query(struct buf *path, const char *name, const char *value);

struct api_call {
    const char *method;
    const char *path;
    const char *body; /* NULL: none */
    size_t body_len;
    const char *idem_key;
    bool no_auth; /* /readyz, /healthz */
};

/* Sends the call. A 2xx answer: with --json it is printed to stdout as it came and *out is
 * NULL; otherwise *out is the parsed JSON (caller frees with cJSON_Delete). Returns the exit
 * code: EXIT_OK, or, with the error printed to stderr (and, with --json, the answer's body to
 * stdout), EXIT_CLIENT / EXIT_AUTH / EXIT_SERVER / EXIT_CONNECT. *status gets the HTTP status
 * (0 when no answer) when status is not NULL. */
int api_do(const struct cli *c, const struct api_call *call, cJSON **out, long *status)
    __attribute__((warn_unused_result));

/* api_do, then an answer that is one object printed as "key: value" lines (--json: as it came).
 * Returns api_do's exit code. */
int api_show(const struct cli *c, const struct api_call *call) __attribute__((warn_unused_result));

/* The exit code of an HTTP status (2xx: EXIT_OK). */
int api_exit_code(long status);

#endif
