/* llmfs.h — the public API of the llmfs inference core.
 *
 * Everything outside src/ (the file server in fs/, the command's subcommands) reaches
 * the core through this header alone. The model is a black box here: a caller loads a
 * model under a name, opens sessions on it, writes prompts, and reads the reply as a
 * byte stream. Generation runs on the core's own threads (one scheduler per model);
 * no function here runs the model on the caller's thread, so a FUSE thread calling
 * any of them returns promptly (model loading is the one slow call).
 *
 * Errors: functions that can fail return a negative errno (or NULL) and fill a
 * struct llmfs_error with that errno and a one-line reason.
 *
 * Lifetimes: models and sessions are reference counted. _get functions return a new
 * reference that the caller drops with _put. Unloading a model or closing a session
 * removes it from lookups at once; the memory goes when the last reference does.
 */
#ifndef LLMFS_H
#define LLMFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---- */

typedef struct llmfs_error {
    int code;      /* an errno value, 0 when no error */
    char msg[256]; /* one line, no trailing newline */
} llmfs_error;

/* Fills e (if non-NULL) and returns -code. */
int llmfs_errorf(llmfs_error *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- settings ----
 * One table declares every setting (name, type, range, default, scope, help). The ctl
 * files, the INI loader, the command-line flags and docs/ all use it through these
 * calls. Scopes nest: daemon settings are defaults for models, model settings are
 * defaults for sessions. */

enum llmfs_scope {
    LLMFS_SCOPE_DAEMON = 1,
    LLMFS_SCOPE_MODEL = 2,
    LLMFS_SCOPE_SESSION = 4,
};

typedef struct llmfs_setting_info {
    const char *name;  /* "temp", "ctx", "cache_type_k", ... */
    const char *type;  /* "int", "octal", "float", "bool", "string", "text", "enum", "cpus" */
    const char *range; /* "0..2", "f16|q8_0|q4_0", "" */
    const char *def;   /* default as text */
    int scope;         /* the llmfs_scope where it may be set (bit mask) */
    const char *help;  /* one line */
    /* when a new value takes effect on a loaded model: "now", "kv" (reallocates the KV
     * cache), "scratch" (reallocates the forward pass's buffers) — both refused with EBUSY
     * while a session generates — or "load" (only when the model loads; EBUSY) */
    const char *applies;
} llmfs_setting_info;

/* The table, for docs and help: returns the count, *out points at static storage. */
int llmfs_settings_table(const llmfs_setting_info **out);
/* The table's row for a setting's name or alias (ctk, ctv); NULL if there is none. */
const llmfs_setting_info *llmfs_setting_find(const char *name);

/* ---- the daemon-wide state ---- */

typedef struct llmfs llmfs;
typedef struct llmfs_model llmfs_model;
typedef struct llmfs_session llmfs_session;
typedef struct llmfs_stream llmfs_stream;

llmfs *llmfs_new(llmfs_error *err);
/* Stops every model's scheduler, wakes every stream reader, frees everything. */
void llmfs_free(llmfs *lf);

/* Daemon-scope setting, or a default that models and sessions inherit.
 * -EINVAL bad value, -ENOENT unknown key. */
int llmfs_set(llmfs *lf, const char *key, const char *value, llmfs_error *err);
/* Current value of any setting at daemon scope, as text. -ENOENT unknown key. */
int llmfs_get(llmfs *lf, const char *key, char *buf, size_t cap);
/* All settings of the given scope(s) as "key value\n" lines that llmfs_set accepts back.
 * Returns the length (like snprintf). */
int llmfs_settings_text(llmfs *lf, int scope_mask, char *buf, size_t cap);
/* Named preset profiles (text-12gb, ...): the key=value pairs a "profile NAME" applies. */
const char *llmfs_profile(const char *name);
/* One line of the root ctl: a setting at daemon scope ("key value" or "key=value"; model
 * and session settings become defaults for models loaded later), or a command:
 *   load NAME PATH [key=value ...]   (llmfs_model_load; slow)
 *   unload NAME
 * Empty and '#' lines are ignored. Errors as llmfs_set / llmfs_model_load. */
int llmfs_ctl(llmfs *lf, const char *line, llmfs_error *err);
/* The settings table as a markdown table (for docs/); returns the length like snprintf. */
int llmfs_settings_markdown(char *buf, size_t cap);

/* ---- models ---- */

/* Loads PATH as model NAME with "key=value" settings (model and session scope).
 * Slow: maps the file, builds the tokenizer, allocates the KV cache, starts the
 * scheduler. -EEXIST name taken, -ENOENT no file, -EINVAL bad file or setting,
 * -ENOMEM out of memory, -EACCES path outside the allowed model directories. */
int llmfs_model_load(llmfs *lf, const char *name, const char *path,
                     const char *const *settings, int n_settings, llmfs_error *err);
/* The one rule for model names, the one llmfs_model_load applies: 1 to 63 of
 * A-Z a-z 0-9 . _ - +, not starting with '.'. */
bool llmfs_model_name_valid(const char *name);
int llmfs_model_unload(llmfs *lf, const char *name, llmfs_error *err);

/* Names of the loaded models; returns the count (at most cap filled, strdup'd, caller
 * frees), or -ENOMEM (nothing to free). */
int llmfs_model_names(llmfs *lf, char **names, int cap);
llmfs_model *llmfs_model_get(llmfs *lf, const char *name); /* NULL if none */
void llmfs_model_put(llmfs_model *m);
const char *llmfs_model_name(const llmfs_model *m);

/* One line of the model's ctl: a model-scope or session-scope setting, or a command.
 * "temp 0.7" (session scope) sets the model's default for new sessions and the default
 * session. ctx, parallel, cache_type_k/v reallocate the KV cache: refused (-EBUSY) while
 * a session generates; sessions then recompute their cache on their next prompt. Load-
 * time settings (threads, ngl, mmap, fit, ...) are refused (-EBUSY) unless unchanged,
 * except as part of a profile, where they are kept for the next load. batch, ubatch,
 * flash_attn and the idle timers apply at once. Command: "stop" ends every running reply.
 * -EINVAL, -ENOENT, -EBUSY, -ENODEV (unloaded). */
int llmfs_model_ctl(llmfs_model *m, const char *line, llmfs_error *err);
/* Model settings plus the default session's, as writable "key value\n" lines. */
int llmfs_model_settings_text(llmfs_model *m, char *buf, size_t cap);
/* One setting of the model as text (session-scope keys: the default for new sessions),
 * e.g. "idle_unload". Returns the length like snprintf, -ENOENT unknown key. */
int llmfs_model_setting(llmfs_model *m, const char *key, char *buf, size_t cap);

typedef struct llmfs_model_info {
    char name[64];
    char path[1024];
    char arch[32];       /* "llama", "qwen2", "qwen3", "qwen3moe" */
    char file_type[32];  /* "Q4_K_M", "Q8_0", "F16", ... */
    char state[16];      /* "loading" "ready" "busy" "failed" */
    uint64_t file_bytes;
    uint64_t n_params;
    int n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_expert, n_expert_used;
    float rope_freq_base, rms_eps;
    char tokenizer[16];  /* "spm", "bpe" */
    char chat_template_name[32]; /* "chatml", "llama3", ..., "jinja", "none" */
    const char *chat_template; /* the raw template text (valid while the reference is held) */
    /* the vision projector (setting mmproj): projector[0] == 0 when none */
    char projector[16];  /* "gemma3", "gemma4v" */
    int image_size;      /* gemma3: the fixed input side; gemma4v: the largest side at image_max_tokens */
    int image_min_tokens, image_max_tokens; /* tokens per image (gemma3: both the fixed count) */
    uint64_t projector_bytes; /* its weights */
} llmfs_model_info;
void llmfs_model_info_get(llmfs_model *m, llmfs_model_info *out);

typedef struct llmfs_model_stats {
    char state[16];
    uint64_t n_prompt_tokens;   /* totals since load */
    uint64_t n_gen_tokens;
    double prompt_seconds, gen_seconds;
    int n_sessions, n_generating;
    int n_ctx;                  /* per sequence */
    int n_slots;                /* sequences the KV cache holds */
    uint64_t kv_cells_used, kv_cells_total;
    uint64_t kv_bytes;          /* K/V cells and recurrent state together */
    uint64_t state_bytes;       /* of which recurrent state (hybrid models), all sequences */
    int checkpoints;            /* recurrent-state checkpoints held (host memory) */
    uint64_t weight_bytes_cpu, weight_bytes_gpu;
    uint64_t vram_used_load, vram_used_now; /* bytes; 0 without a GPU */
    uint64_t ram_rss;
    uint64_t requests, errors;
    char warning[320];          /* the first of llmfs_model_warnings; empty if none */
    char cpus[256];             /* cores the model's threads are pinned to ("0-11"), "all" unpinned */
    int n_threads;              /* threads of single-token steps */
    int priority;               /* the priority setting in force (0-3) */
    /* speculative decoding totals since load (0 without it) */
    uint64_t spec_drafted, spec_accepted, spec_steps;
    char spec[128];             /* the drafters in use: "none", "ngram", "draft NAME", ... */
} llmfs_model_stats;
void llmfs_model_stats_get(llmfs_model *m, llmfs_model_stats *out);

/* The model's last error string ("" if none). */
void llmfs_model_error(llmfs_model *m, char *buf, size_t cap);

/* Placement: one row per layer and tensor group, then the totals. */
typedef struct llmfs_placement_row {
    char group[48];     /* "token_embd", "blk.3.attn", "blk.3.ffn_exps", "output" */
    char device[16];    /* "CPU", "CUDA0" */
    char type[16];      /* dominant tensor type */
    uint64_t bytes;
} llmfs_placement_row;
/* Fills up to cap rows, returns the total count, or -ENOMEM. */
int llmfs_model_placement(llmfs_model *m, llmfs_placement_row *rows, int cap);
/* Streaming: layers whose feed-forward weights live in host memory can be copied to the
 * GPU for a prompt micro-batch large enough that the copy costs less than the CPU would
 * take (offload_batch). What was decided and measured; zeros before any GPU work. */
typedef struct llmfs_stream_info {
    int layers;                /* layers with feed-forward weights in host memory (0: nothing streams) */
    uint64_t bytes;            /* what one streamed micro-batch copies */
    int threshold;             /* smallest micro-batch that streams: offload_batch, or measured; 0 never */
    uint64_t batches;          /* micro-batches streamed so far */
    double gpu_bytes_per_s;    /* measured copy-and-compute rate of streamed batches; 0 not yet */
    double cpu_s_per_token;    /* measured CPU time of those layers per token; 0 not yet */
    char error[128];           /* why streaming last fell back to the CPU; "" none */
} llmfs_stream_info;
void llmfs_model_stream_info(llmfs_model *m, llmfs_stream_info *out);
/* Free text describing the fit decision and headroom ("" when fit was off). */
void llmfs_model_fit_text(llmfs_model *m, char *buf, size_t cap);

typedef struct llmfs_kv_info {
    char type_k[8], type_v[8];
    int n_ctx, n_slots;
    uint64_t bytes;             /* K/V cells and recurrent state together */
    bool flash_attn;
    /* hybrid models (0 otherwise): recurrent state per sequence, independent of n_ctx,
     * and the checkpoints of it that prompt reuse resumes from */
    uint64_t state_bytes;       /* per sequence */
    uint64_t conv_bytes, ssm_bytes; /* per recurrent layer and sequence: its parts */
    int n_recurrent_layers;
    int checkpoints;            /* held, all sequences */
    uint64_t draft_bytes;       /* the draft model's cache (speculative decoding), 0 none */
    uint64_t mtp_bytes;         /* the MTP head's cache (spec_type mtp), 0 none */
    int snapshots;              /* recurrent states kept per sequence for rolling drafts back, 0 none */
    uint64_t snapshot_bytes;    /* their bytes, all sequences */
    /* The layers by kind ("full", "swa": a sliding window's ring, "shared": reads an
     * earlier layer's cache, "recurrent": state only) and size: how many, the cells each
     * keeps per sequence, and the K+V bytes of each (all sequences). */
    struct llmfs_kv_kind {
        char kind[12];
        int n_layers, cells;
        uint64_t layer_bytes;
    } kinds[8];
    int n_kinds;
    bool swa_full;              /* sliding-window layers keep the whole context */
} llmfs_kv_info;
void llmfs_model_kv_info(llmfs_model *m, llmfs_kv_info *out);

/* ---- sessions ----
 * A session is one conversation: its own settings, token history and KV slot.
 * Every model has a default session (id 0); clones get ids 1, 2, ... */

llmfs_session *llmfs_session_default(llmfs_model *m); /* new reference */
llmfs_session *llmfs_session_new(llmfs_model *m, llmfs_error *err); /* -EMFILE at the limit */
llmfs_session *llmfs_session_get(llmfs_model *m, int id);           /* NULL if none */
void llmfs_session_put(llmfs_session *s);
int llmfs_session_id(const llmfs_session *s);
/* Ids of the live clone sessions (not 0); returns the count, at most cap filled. */
int llmfs_session_ids(llmfs_model *m, int *ids, int cap);

/* One ctl line: a session setting or a command:
 *   stop    ends the running reply (stop reason "stopped"); nothing if idle
 *   reset   forgets the conversation (after stopping the running reply, if any)
 *   close   removes the session (-EINVAL for the default session)
 * -EINVAL bad value, -ENOENT unknown key. */
int llmfs_session_ctl(llmfs_session *s, const char *line, llmfs_error *err);
int llmfs_session_settings_text(llmfs_session *s, char *buf, size_t cap);
/* One session setting as text; -ENOENT unknown key. */
int llmfs_session_setting(llmfs_session *s, const char *key, char *buf, size_t cap);

/* Starts a generation for this prompt (chat mode: a user turn; raw mode: text to
 * complete). One trailing newline ("\n" or "\r\n", as echo adds) is dropped. Returns at
 * once; the reply goes to the stream llmfs_session_output returns from now on.
 * -EBUSY while a generation runs (or another prompt is being queued), -E2BIG prompt (or,
 * in chat mode, the conversation) too long for the context or over max_prompt_bytes,
 * -EINVAL empty prompt, NUL byte, not UTF-8, or chat mode without a chat template,
 * -EAGAIN model still loading, -ENODEV model unloaded, -ENOENT session closed. */
int llmfs_session_prompt(llmfs_session *s, const char *text, size_t len, llmfs_error *err);
/* Replaces the conversation of an idle session (chat mode) with the given history, for
 * callers that keep the history themselves (the HTTP endpoint): the system message
 * (NULL: the session's system setting stays) and n_turns earlier user/assistant pairs;
 * the next llmfs_session_prompt is the user turn after them. -EBUSY while a reply runs,
 * -ENOMEM, -ENOENT closed. */
int llmfs_session_set_history(llmfs_session *s, const char *system, const char *const *user,
                              const char *const *assistant, int n_turns, llmfs_error *err);
/* Adds an image (the bytes of a PNG or JPEG file) for the session's next prompt: it is
 * decoded now and encoded with that prompt. The prompt's media markers (setting
 * media_marker) take the images in order; images left without a marker go before its
 * text. -EINVAL no vision projector (setting mmproj) or not a readable image, -EFBIG over
 * max_image_bytes or larger than 16384 pixels a side, -EBUSY while a reply runs,
 * -ENOMEM. */
int llmfs_session_image(llmfs_session *s, const void *buf, size_t len, llmfs_error *err);
/* The images waiting for the next prompt, one "WIDTHxHEIGHT" line each. Returns the
 * length like snprintf. */
int llmfs_session_images_text(llmfs_session *s, char *buf, size_t cap);
/* The last prompt written (malloc'd, NUL-terminated; NULL if none). */
char *llmfs_session_last_prompt(llmfs_session *s);
void llmfs_session_error(llmfs_session *s, char *buf, size_t cap);

typedef struct llmfs_session_stats {
    int id;
    char state[16];        /* "idle" "queued" "prefill" "generating" */
    char stop_reason[16];  /* of the last generation: "eos" "length" "stopped" "context" "error" "" */
    int n_prompt;          /* tokens of the last prompt processed (after cache reuse) */
    int n_cached;          /* tokens reused from the cache */
    int n_gen;             /* tokens generated by the last (or current) generation */
    double ttft_ms;        /* prompt written -> first token */
    double pp_tps, tg_tps;
    int kv_used, kv_size;  /* cells of this session's sequence */
    int turns;
    /* speculative decoding in the last (or current) generation: tokens drafted, drafts
     * accepted, verification steps (0 without speculation) */
    int draft_n, draft_accepted, spec_steps;
    int checkpoints;       /* recurrent-state checkpoints of its sequence (hybrid models) */
} llmfs_session_stats;
void llmfs_session_stats_get(llmfs_session *s, llmfs_session_stats *out);
/* Seconds since the session last finished a reply or got a prompt; 0 while busy. */
double llmfs_session_idle_seconds(llmfs_session *s);
/* Whether a reply is running or a prompt is being queued: what makes
 * llmfs_session_prompt refuse with -EBUSY (at the moment of asking). */
bool llmfs_session_busy(llmfs_session *s);
/* Seconds since any session of the model was active; 0 while one is busy or loading. */
double llmfs_model_idle_seconds(llmfs_model *m);

/* ---- streams ----
 * An append-only byte log: a session's output (one per prompt) and its transcript.
 * Readers each get the whole stream at their own offset; a reader never slows the
 * writer. A stream is "done" when no more bytes will come (EOF). */

/* The stream a reader opening `output` now should see: the current generation's, or,
 * before the first prompt, the one the next prompt will fill. New reference. */
llmfs_stream *llmfs_session_output(llmfs_session *s);
llmfs_stream *llmfs_session_transcript(llmfs_session *s); /* never done until close */
/* The reasoning of the replies (harmony's analysis channel, Qwen3's <think> text) in
 * chat mode, appended reply after reply; output then carries only the answers, and the
 * transcript the replies as written. Never done until close. New reference. */
llmfs_stream *llmfs_session_reasoning(llmfs_session *s);
void llmfs_stream_put(llmfs_stream *st);

/* Whether the stream ended in an error (a remote model's reply failed): a reader at its
 * end should get EIO rather than end of file. */
bool llmfs_stream_failed(llmfs_stream *st);
/* Bytes available now and whether the stream is done. */
uint64_t llmfs_stream_size(llmfs_stream *st, bool *done);
/* Copies up to n bytes from offset off without blocking; returns the count
 * (0: nothing at off yet, or EOF if done). */
size_t llmfs_stream_read(llmfs_stream *st, void *buf, size_t n, uint64_t off);
/* Blocks until size > off, the stream is done, timeout_ms passes (-1: no limit) or
 * llmfs_stream_wake is called. Returns 1 if data or EOF is there, 0 otherwise. */
int llmfs_stream_wait(llmfs_stream *st, uint64_t off, int timeout_ms);
/* Wakes every waiter (used for interrupts and shutdown). */
void llmfs_stream_wake(llmfs_stream *st);
/* Calls fn(arg) (from a core thread, without the stream's data lock or any model lock
 * held) each time bytes are appended or the stream ends; one watcher per token, removed
 * with unwatch. Once unwatch returns, fn is not running and will not run again; fn must
 * not call watch/unwatch itself. Returns the token (> 0) or -EINVAL/-ENOMEM. For poll(2). */
int llmfs_stream_watch(llmfs_stream *st, void (*fn)(void *arg), void *arg);
void llmfs_stream_unwatch(llmfs_stream *st, int token);

/* The known ways a model runs badly with its settings on this machine (KV cache
 * quantized under speculative decoding, too little GPU headroom, threads on E-cores,
 * swapping during generation, model + KV over the free RAM, parallel above 1 on a
 * single-user profile, ...), as "warning TEXT\n" lines, each naming the setting to
 * change; "" when none. For the model's stats and error files. Returns the length like
 * snprintf. */
int llmfs_model_warnings(llmfs_model *m, char *buf, size_t cap);

/* ---- model discovery ---- */

/* The `available` file: one line per GGUF file (*.gguf, in folders up to 4 deep) under
 * the model_dirs folders, "FILE ARCH PARAMS TYPE SIZE": FILE relative to its folder (what
 * `load NAME FILE` accepts), the architecture, the parameter count (260.16K, 7.62B), the
 * file type (Q4_K_M) and the size in bytes, read from the headers only (a file that is no
 * valid GGUF says "invalid" for the three); sorted by FILE. "" when model_dirs is empty.
 * Malloc'd; NULL without memory. */
char *llmfs_available_text(llmfs *lf);
/* A model file named relative to a model_dirs folder: the path of the first folder's
 * file of that name, into out. -ENOENT none has it, -EACCES model_dirs is empty or the
 * name climbs out ("..") . */
int llmfs_model_file_resolve(llmfs *lf, const char *file, char *out, size_t cap, llmfs_error *err);

/* ---- diagnostics ---- */

/* The diag file: one line per check, "CHECK VALUE EXPECTED VERDICT [# reason]" with
 * VERDICT ok, warn or unknown and every field one word, then a "warning MODEL none warn
 * # TEXT" line per model warning. Reads /proc and /sys afresh (never runs a program);
 * lf may be NULL (no daemon: no models and no mount-time counters). Malloc'd; NULL
 * without memory. */
char *llmfs_diag_text(llmfs *lf);

/* ---- daemon stats ---- */
typedef struct llmfs_gpu_info {
    char name[128];
    uint64_t vram_total, vram_used, vram_free;
} llmfs_gpu_info;
int llmfs_gpus(llmfs_gpu_info *out, int cap); /* returns the count, 0 without CUDA */

typedef struct llmfs_daemon_stats {
    double uptime_s;
    uint64_t ram_total, ram_free, ram_rss;
    int n_models, n_sessions;
} llmfs_daemon_stats;
void llmfs_daemon_stats_get(llmfs *lf, llmfs_daemon_stats *out);

#ifdef __cplusplus
}
#endif
#endif
