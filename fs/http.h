/* http.h — the OpenAI-compatible HTTP endpoint of the daemon (libmicrohttpd, jansson).
 *
 * Off unless the daemon setting http_listen names ADDR:PORT. Routes:
 *   GET  /health                 {"status":"ok"}
 *   GET  /metrics                the root metrics file's text
 *   GET  /v1/models              the loaded models
 *   POST /v1/chat/completions    chat (messages), streaming (server-sent events) or not
 *   POST /v1/completions         raw completion of a prompt, streaming or not
 * Each completion runs as a new clone session of the named model (so it shares the
 * scheduler with the file users and shows in stats and metrics), closed when the reply
 * is sent or the client goes away; a client that disconnects stops its generation.
 * With http_api_key_file every request needs "Authorization: Bearer KEY"; a
 * non-loopback address without a key file is refused. docs/llmfs.4.md has the details.
 */
#ifndef LLMFS_FS_HTTP_H
#define LLMFS_FS_HTTP_H

#include "llmfs.h"

#include <stddef.h>

/* Reads http_listen and http_api_key_file from lf and starts serving (nothing when
 * http_listen is empty). 0, or a negative errno with a one-line reason in msg. */
int http_start(llmfs *lf, char *msg, size_t cap);
/* Ends every request (running generations stop) and the server; safe when not started. */
void http_stop(void);

#endif
