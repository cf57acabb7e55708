/* The web console's static files (issue 12, decision 38): console/index.html, app.js and
 * style.css built into the binary at compile time (the assembler's .incbin; the Makefile passes
 * console/ as its include path and makes this object depend on the files, as for openapi.c),
 * served byte for byte at GET /, /console/app.js and /console/style.css without an API key
 * (they hold no data: the page asks for the key and sends it with each API call), with a
 * Content-Security-Policy that allows only these files and calls to this origin. */
#include "api.h"

#include <event2/keyvalq_struct.h>

/* One file: symbols NAME and NAME_end around its bytes, hidden so a position-independent
 * executable reaches them without a GOT entry. */
#define CONSOLE_FILE(name, file)                                                                   \
    __asm__(".section .rodata\n"                                                                   \
            ".global " #name "\n"                                                                  \
            ".hidden " #name "\n"                                                                  \
            ".type " #name ", @object\n" #name ":\n"                                               \
            ".incbin \"" file "\"\n"                                                               \
            ".global " #name "_end\n"                                                              \
            ".hidden " #name "_end\n" #name "_end:\n"                                              \
            ".previous\n");                                                                        \
    extern const char name[], name##_end[]

CONSOLE_FILE(console_index_html, "index.html");
CONSOLE_FILE(console_app, "app.js");
CONSOLE_FILE(console_style, "style.css");

/* Nothing but this origin's script, style and API; no inline code, no frames, no forms posted
 * anywhere, no <base>. */
#define CONSOLE_CSP                                                                                \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* The files change only with the binary: a browser may keep them but asks again each time
 * (no validator: they are small, and a stale console after an upgrade would be worse). */
static void console_send(struct req *r, const char *ctype, const char *data, const char *end)
{
    if (r->ev) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->ev);
        evhttp_add_header(h, "Content-Security-Policy", CONSOLE_CSP);
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
        evhttp_add_header(h, "Referrer-Policy", "no-referrer");
        evhttp_add_header(h, "X-Frame-Options", "DENY");
        evhttp_add_header(h, "Cross-Origin-Opener-Policy", "same-origin");
    }
    http_reply_typed(r, 200, ctype, "no-cache", data, (size_t)(end - data));
}

void console_index(struct req *r)
{
    console_send(r, "text/html; charset=utf-8", console_index_html, console_index_html_end);
}

void console_app_js(struct req *r)
{
    console_send(r, "text/javascript; charset=utf-8", console_app, console_app_end);
}

void console_style_css(struct req *r)
{
    console_send(r, "text/css; charset=utf-8", console_style, console_style_end);
}
