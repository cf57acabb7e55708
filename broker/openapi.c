/* GET /api/v0/openapi.json: the OpenAPI document of the API, docs/openapi.json built into the
 * binary at compile time (the assembler's .incbin; the Makefile passes docs/ as its include
 * path and makes this object depend on the file), served byte for byte without an API key. */
#include "api.h"

/* Hidden, so a position-independent executable reaches them without a GOT entry. */
__asm__(".section .rodata\n"
        ".global openapi_doc\n"
        ".hidden openapi_doc\n"
        ".type openapi_doc, @object\n"
        "openapi_doc:\n"
        ".incbin \"openapi.json\"\n"
        ".global openapi_doc_end\n"
        ".hidden openapi_doc_end\n"
        "openapi_doc_end:\n"
        ".previous\n");
extern const char openapi_doc[], openapi_doc_end[];

void openapi_get(struct req *r)
{
    http_reply_bytes(r, 200, openapi_doc, (size_t)(openapi_doc_end - openapi_doc));
}
