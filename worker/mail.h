/* E-mail alerts: a subscription to a broker.* event whose URL is mailto:<address> gets each
 * event as a short plain-text message sent through SMTP_URL with libcurl, on deliver.c's multi
 * handle; recorded as an attempt like any delivery (status code NULL), with the same retries. */
#ifndef WH_MAIL_H
#define WH_MAIL_H

#include <stdbool.h>

#include "worker.h"

bool mail_is(const struct job *j); /* the job's URL is mailto: */
/* Starts sending j (started_ms is set by the caller); a failure to start (no SMTP_URL) is a
 * failed attempt. */
void mail_start(struct job *j);
/* deliver.c's completion for a mail transfer it has removed from the multi handle: e is
 * mail.c's handle (cleaned up here); records the outcome. */
void mail_done(struct job *j, CURL *e, CURLcode res);
/* After deliver_shutdown: frees the messages of transfers that never completed. */
void mail_shutdown(void);

#endif
