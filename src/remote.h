/* remote.h — models served by a remote OpenAI-compatible server (libcurl, jansson).
 *
 * `load NAME https://HOST/v1 model=ID [api_key_file=PATH]` makes NAME a model whose
 * replies come from HOST's /chat/completions (chat mode) or /completions (raw mode),
 * streamed. The sessions, streams, transcript, stop strings and stats are the engine's
 * own; only the generation is elsewhere. The model's thread hands each queued prompt to
 * a thread of its own, so a slow remote holds up nothing but that reply. Time to first
 * token and generation speed are measured here; token counts come from the server's
 * usage (or one per streamed piece when it sends none).
 *
 * Errors (no connection, a timeout, an HTTP error status, a reply cut short) end the
 * reply with stop reason "error", the reason in the session's error, and the output
 * stream marked failed, so its reader gets EIO after the text that came.
 */
#ifndef LLMFS_REMOTE_H
#define LLMFS_REMOTE_H

#include "llmfs.h"

#include <stdbool.h>

typedef struct remote_model remote_model;

/* Whether PATH names a remote model (http:// or https://). */
bool remote_is_url(const char *path);
/* Whether the URL's host (HOST or HOST:PORT) is in hosts, a list separated by commas or
 * blanks; an entry without a port allows every port of that host. Empty hosts: none. */
bool remote_host_allowed(const char *url, const char *hosts);
/* Connects: reads the server's /models (the model must be listed) and the key file.
 * Slow (network). 0, or a negative errno with the reason: -ENOTSUP built without libcurl,
 * -EHOSTUNREACH/-ETIMEDOUT/-EIO the server, -ENOENT the model is not served there. */
int remote_open(remote_model **out, const char *url, const char *model_id, const char *key_file,
                llmfs_error *err);
void remote_free(remote_model *r);
/* The model's thread for a remote model (arg: the llmfs_model). Returns once the model
 * is stopping and every reply it started has ended. */
void *remote_main(void *arg);
/* For info: the served model's id, and the context length /models gave (0 unknown). */
const char *remote_model_id(const remote_model *r);
int remote_ctx_train(const remote_model *r);
const char *remote_owned_by(const remote_model *r);

#endif
