/* render.h — the text files: snapshots rendered when a file is opened.
 *
 * Every function appends to `out` and returns 0 or a negative errno. The `key value`
 * files have one setting per line, the value being the rest of the line; names are
 * lowercase with underscores, sizes in bytes, times in seconds unless the name says
 * otherwise (ttft_ms).
 */
#ifndef LLMFS_FS_RENDER_H
#define LLMFS_FS_RENDER_H

#include "llmfs.h"
#include "text.h"

/* Root files. */
int render_models(llmfs *lf, fs_text *out);
int render_daemon_stats(llmfs *lf, fs_text *out);
int render_metrics(llmfs *lf, fs_text *out);

/* A model folder's stats: its default session's lines, then the model's. */
int render_model_stats(llmfs_model *m, llmfs_session *s, fs_text *out);
int render_session_stats(llmfs_session *s, fs_text *out);
int render_placement(llmfs_model *m, fs_text *out);
int render_kv(llmfs_model *m, fs_text *out);
int render_info(llmfs_model *m, fs_text *out);

#endif
