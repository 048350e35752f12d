/* settings.h — the one table of settings and the struct that holds their values.
 *
 * Every setting is one line of SETTINGS_LIST below: the line declares the struct field,
 * the text name used by ctl files, INI keys and command-line flags, the type, the scope
 * it belongs to, the allowed range, the default and the help line. Parsing, printing,
 * range checks and the docs table are all derived from it, so a new knob is one line
 * here plus the code that reads the field.
 *
 * Scopes nest: the daemon holds a full llmfs_settings whose model and session fields are
 * defaults for models loaded later; a model holds one whose session fields are defaults
 * for its sessions; a session uses only its session fields.
 */
#ifndef LLMFS_SETTINGS_H
#define LLMFS_SETTINGS_H

#include "llmfs.h"

#include <stdbool.h>
#include <stdint.h>

/* Storage types. INT and I64 are integers with a range, OCTAL an integer shown in octal
 * (file modes), BOOL reads on|off (also true/false, yes/no, 1/0), ENUM one of the
 * '|'-separated choices (stored as its index), STRING one word or path, TEXT the rest
 * of the line (newlines and backslashes written as \n and \\), PROFILE the name of a
 * preset whose key=value pairs are applied when it is set, CPUS a cpu list ("0-11,16"),
 * "p-cores", "e-cores" or empty (cpuset.h), checked when set. */
#define SET_T_INT int
#define SET_T_I64 int64_t
#define SET_T_OCTAL int
#define SET_T_FLOAT float
#define SET_T_BOOL bool
#define SET_T_ENUM int
#define SET_T_STRING char *
#define SET_T_TEXT char *
#define SET_T_PROFILE char *
#define SET_T_CPUS char *

#define S_D LLMFS_SCOPE_DAEMON
#define S_M LLMFS_SCOPE_MODEL
#define S_S LLMFS_SCOPE_SESSION

/* When a new value takes effect on a loaded model (on the daemon's ctl every value is only
 * stored, as a default for models loaded later):
 *   A_NOW      at once (the next step of the scheduler reads it);
 *   A_KV       the KV cache is reallocated at once, refused with EBUSY while a session
 *              of the model generates (the cached conversations are dropped);
 *   A_SCRATCH  the forward pass's micro-batch buffers are reallocated at once, refused
 *              with EBUSY while a session generates;
 *   A_LOAD     read when the model loads (daemon settings: when the daemon starts); a
 *              different value on a loaded model is refused with EBUSY. */
enum setting_applies { A_NOW, A_KV, A_SCRATCH, A_LOAD };

/* X(name, TYPE, home scope, applies, min, max, choices, default, help)
 * Order matters for printing: `profile` comes before the keys it sets, so that writing a
 * settings text back applies the preset first and the explicit values after it. */
#define SETTINGS_LIST(X)                                                                      \
    /* session */                                                                             \
    X(mode, ENUM, S_S, A_NOW, 0, 0, "chat|raw", "chat",                                              \
      "chat: prompts are user turns rendered with the chat template; raw: text to complete")  \
    X(system, TEXT, S_S, A_NOW, 0, 0, "", "", "system message for chat mode (rest of the line)")     \
    X(temp, FLOAT, S_S, A_NOW, 0, 100, "", "0.8", "sampling temperature; 0 picks the likeliest token") \
    X(top_k, INT, S_S, A_NOW, 0, 1000000, "", "40", "keep the k likeliest tokens; 0 off")            \
    X(top_p, FLOAT, S_S, A_NOW, 0, 1, "", "0.95", "keep the smallest set with this total probability; 1 off") \
    X(min_p, FLOAT, S_S, A_NOW, 0, 1, "", "0.05", "drop tokens below this fraction of the top probability; 0 off") \
    X(repeat_penalty, FLOAT, S_S, A_NOW, 0.01, 10, "", "1", "divide the scores of recent tokens by this; 1 off") \
    X(repeat_last_n, INT, S_S, A_NOW, 0, 1000000, "", "64", "how many recent tokens the repeat penalty sees") \
    X(seed, I64, S_S, A_NOW, -1, 4294967295.0, "", "-1", "random seed of the sampler; -1 a new one each prompt") \
    X(n_predict, INT, S_S, A_NOW, -1, 100000000, "", "-1",                                           \
      "most tokens one reply may have; -1 until end of generation or a full context")        \
    X(stop_strings, TEXT, S_S, A_NOW, 0, 0, "", "",                                                  \
      "strings that end a reply, not emitted: separated by |, with backslash escapes (rest of the line)") \
    X(reasoning_effort, ENUM, S_S, A_NOW, 0, 0, "low|medium|high", "medium",                         \
      "how long a reasoning model (gpt-oss) thinks, passed to its chat template")            \
    X(spec, BOOL, S_S, A_NOW, 0, 0, "", "on",                                                        \
      "speculative decoding for this session where the model has it (spec_type); off decodes one token a step") \
    X(media_marker, STRING, S_S, A_NOW, 0, 0, "", "<__media__>",                                     \
      "text in a prompt that the next image replaces")                                        \
    /* model */                                                                               \
    X(profile, PROFILE, S_M, A_NOW, 0, 0, "", "", "apply a preset of model settings")                \
    X(ctx, INT, S_M, A_KV, 16, 16777216, "", "4096", "context length of each sequence, in tokens")  \
    X(parallel, INT, S_M, A_KV, 1, 256, "", "1", "sequences the KV cache holds (sessions generating at once)") \
    X(batch, INT, S_M, A_NOW, 1, 1048576, "", "2048", "most tokens the scheduler evaluates in one step") \
    X(ubatch, INT, S_M, A_SCRATCH, 1, 1048576, "", "512", "micro-batch of prompt processing, in tokens")  \
    X(cache_type_k, ENUM, S_M, A_KV, 0, 0, "f16|q8_0|q4_0", "f16", "type of the K cache (alias ctk)") \
    X(cache_type_v, ENUM, S_M, A_KV, 0, 0, "f16|q8_0|q4_0", "f16", "type of the V cache (alias ctv)") \
    X(flash_attn, BOOL, S_M, A_NOW, 0, 0, "", "off", "fused attention kernel")                       \
    X(swa_full, BOOL, S_M, A_KV, 0, 0, "", "off",                                                    \
      "sliding-window layers keep the whole context, not a ring of window + ubatch cells")           \
    X(threads, INT, S_M, A_LOAD, 0, 1024, "", "0", "CPU threads for generation; 0 the physical cores") \
    X(threads_batch, INT, S_M, A_LOAD, 0, 1024, "", "0", "CPU threads for prompts; 0 same as threads") \
    X(cpu_affinity, CPUS, S_M, A_LOAD, 0, 0, "", "",                                          \
      "cores the model's threads run on: a list like 0-11,16, p-cores or e-cores; empty every core, on a hybrid CPU the P-cores") \
    X(priority, INT, S_M, A_LOAD, 0, 3, "", "0",                                              \
      "the model threads' priority: 0 unchanged, 1 nice -5, 2 nice -10, 3 SCHED_RR; refused beyond the user's rights") \
    X(ngl, INT, S_M, A_LOAD, -1, 100000, "", "-1", "layers on the GPU; -1 all that fit, 0 none")      \
    X(override_tensor, STRING, S_M, A_LOAD, 0, 0, "", "", "REGEX=DEVICE,... pins matching tensors to a device") \
    X(n_cpu_moe, INT, S_M, A_LOAD, 0, 100000, "", "0", "keep the experts of the first N layers on the CPU") \
    X(offload_batch, INT, S_M, A_NOW, -1, 1048576, "", "-1",                                         \
      "smallest prompt micro-batch that streams CPU-resident feed-forward weights to the GPU; -1 chosen from measured speed, 0 never") \
    X(fit, BOOL, S_M, A_LOAD, 0, 0, "", "on", "shrink ngl and ctx until the model fits the GPU")       \
    X(fit_target, INT, S_M, A_LOAD, 0, 1048576, "", "1024", "MiB of GPU memory fit leaves free")      \
    X(fit_ctx, INT, S_M, A_LOAD, 0, 16777216, "", "4096", "smallest context fit may shrink ctx to")   \
    X(vram_limit, INT, S_M, A_LOAD, 0, 16777216, "", "0", "MiB of GPU memory llmfs may use; 0 all")   \
    X(mmap, BOOL, S_M, A_LOAD, 0, 0, "", "on", "map the model file instead of reading it into memory") \
    X(mlock, BOOL, S_M, A_LOAD, 0, 0, "", "off", "lock the model's pages in RAM")                     \
    X(idle_unload, INT, S_M, A_NOW, 0, 100000000, "", "0", "unload the model after this many idle seconds; 0 never") \
    X(session_idle, INT, S_M, A_NOW, 0, 100000000, "", "0", "close clone sessions idle this many seconds; 0 never") \
    X(spec_type, ENUM, S_M, A_LOAD, 0, 0, "none|ngram|draft|draft+ngram|mtp", "none",              \
      "speculative decoding: drafts from n-gram lookup, a draft model, both (n-gram first), or the model's MTP head") \
    X(spec_draft_model, STRING, S_M, A_LOAD, 0, 0, "", "",                                           \
      "GGUF of the draft model (same vocabulary as the target; model_dirs apply); with spec_type mtp an MTP file (mtp-*.gguf) of the target, empty: the head in the target's file") \
    X(spec_draft_n_max, INT, S_M, A_NOW, 0, 64, "", "3", "most tokens drafted per step")           \
    X(spec_draft_n_min, INT, S_M, A_NOW, 0, 64, "", "0", "fewer drafts than this are not verified (the step decodes one token)") \
    X(spec_draft_p_min, FLOAT, S_M, A_NOW, 0, 1, "", "0",                                            \
      "stop drafting where the draft model's (or MTP head's, among its 10 best) top probability is below this; 0 never") \
    X(spec_draft_ngl, INT, S_M, A_LOAD, -1, 100000, "", "-1", "draft model layers on the GPU; -1 all, 0 none") \
    X(spec_draft_threads, INT, S_M, A_LOAD, 0, 1024, "", "0", "CPU threads of the draft model; 0 as threads") \
    X(spec_draft_ctk, ENUM, S_M, A_LOAD, 0, 0, "f16|q8_0|q4_0", "f16", "type of the draft model's K cache") \
    X(spec_draft_ctv, ENUM, S_M, A_LOAD, 0, 0, "f16|q8_0|q4_0", "f16", "type of the draft model's V cache") \
    X(spec_ngram_n, INT, S_M, A_NOW, 1, 64, "", "3", "tokens of the n-gram looked up in the session's tokens") \
    X(spec_ngram_min_hits, INT, S_M, A_NOW, 1, 1000000, "", "1", "earlier occurrences the n-gram needs before it drafts") \
    X(mmproj, STRING, S_M, A_LOAD, 0, 0, "", "",                                              \
      "vision projector (mmproj GGUF) loaded with the model, under the model_dirs rules; empty none") \
    X(mmproj_offload, BOOL, S_M, A_LOAD, 0, 0, "", "on",                                      \
      "run the vision projector on the GPU that holds the model's layers; off: on the CPU")   \
    X(image_min_tokens, INT, S_M, A_NOW, 0, 65536, "", "0",                                  \
      "fewest tokens an image becomes (projectors of dynamic size, gemma4v); 0 the projector's default") \
    X(image_max_tokens, INT, S_M, A_NOW, 0, 65536, "", "0",                                  \
      "most tokens an image becomes (gemma4v); 0 the projector's default")                   \
    /* daemon */                                                                              \
    X(mountpoint, STRING, S_D, A_LOAD, 0, 0, "", "", "where the file system is mounted")              \
    X(model_dirs, STRING, S_D, A_NOW, 0, 0, "", "",                                                  \
      "colon-separated folders models may be loaded from; empty allows any path")             \
    X(max_prompt_bytes, INT, S_D, A_NOW, 1, 1073741824, "", "1048576", "largest prompt accepted, in bytes") \
    X(max_image_bytes, INT, S_D, A_NOW, 1, 1073741824, "", "20971520", "largest image file accepted, in bytes") \
    X(max_sessions, INT, S_D, A_NOW, 1, 100000, "", "64", "most clone sessions per model")            \
    X(max_ctl_line, INT, S_D, A_NOW, 64, 16777216, "", "65536", "longest ctl line accepted, in bytes") \
    X(allow_other, BOOL, S_D, A_LOAD, 0, 0, "", "off", "let other users access the mount")            \
    X(file_mode, OCTAL, S_D, A_NOW, 0, 0777, "", "0600", "permission bits of files")                 \
    X(dir_mode, OCTAL, S_D, A_NOW, 0, 0777, "", "0700", "permission bits of folders")         \
    X(remote_hosts, STRING, S_D, A_NOW, 0, 0, "", "",                                               \
      "hosts (HOST or HOST:PORT, comma-separated) remote models may be loaded from; empty remote loading off") \
    X(http_listen, STRING, S_D, A_LOAD, 0, 0, "", "",                                                \
      "ADDR:PORT of the OpenAI-compatible HTTP endpoint; empty off")                          \
    X(http_api_key_file, STRING, S_D, A_LOAD, 0, 0, "", "",                                          \
      "file whose first line is the endpoint's bearer token; required for a non-loopback address")

#define SETTINGS_FIELD_(name, type, scope, applies, mn, mx, choices, def, help) SET_T_##type name;
#define SETTINGS_COUNT_(name, type, scope, applies, mn, mx, choices, def, help) +1
enum { SETTINGS_N = 0 SETTINGS_LIST(SETTINGS_COUNT_) };

/* Enum values. */
enum { MODE_CHAT = 0, MODE_RAW = 1 };
enum { CACHE_F16 = 0, CACHE_Q8_0 = 1, CACHE_Q4_0 = 2 };
/* spec_type's values are spec.h's bit masks: none 0, ngram 1, draft 2, draft+ngram 3, mtp 4 */

typedef struct llmfs_settings {
    SETTINGS_LIST(SETTINGS_FIELD_)
    /* 1 where the value was set explicitly (by a user, a profile or a load argument)
     * rather than inherited from the table's default; sampling defaults of a model
     * family fill only the rest. */
    uint8_t explicit_set[SETTINGS_N];
} llmfs_settings;

/* Every field at its default (strings allocated). */
void settings_init(llmfs_settings *s);
/* Frees the strings. */
void settings_clear(llmfs_settings *s);
/* Deep copy into an uninitialised or cleared dst. */
void settings_copy(llmfs_settings *dst, const llmfs_settings *src);

/* Index of a setting by name or alias, -1 if none. */
int settings_find(const char *name);
const llmfs_setting_info *settings_info(int idx);
/* The scope a setting belongs to (its narrowest). */
int settings_home_scope(int idx);
/* When a new value of the setting takes effect (enum setting_applies). */
enum setting_applies settings_applies(int idx);

/* Sets one value. scope_mask: the scopes this caller may set (a setting is accepted if
 * any of its scopes is in the mask). On error the settings are unchanged.
 * -ENOENT unknown key, -EINVAL bad value, out of range, or a setting of another scope. */
int settings_set(llmfs_settings *s, int scope_mask, const char *key, const char *value,
                 llmfs_error *err);
/* Like settings_set without marking the value explicit (family defaults). */
int settings_set_default(llmfs_settings *s, const char *key, const char *value);
/* Splits a "key value", "key=value" or "key = value" line and sets it. Empty and
 * '#' lines are accepted and ignored. Same errors as settings_set. */
int settings_set_line(llmfs_settings *s, int scope_mask, const char *line, llmfs_error *err);
/* Splits a line into its first word (copied to key, at most cap bytes) and the rest,
 * trimmed (returned, pointing into line). NULL if the line is empty or a comment. */
const char *settings_split_line(const char *line, char *key, size_t cap, size_t *value_len);

/* Current value as text (as the parser accepts back). -ENOENT unknown key. Returns the
 * length like snprintf. */
int settings_get(const llmfs_settings *s, const char *key, char *buf, size_t cap);
/* "key value\n" lines of every setting whose home scope is in scope_mask, table order. */
int settings_text(const llmfs_settings *s, int scope_mask, char *buf, size_t cap);
bool settings_is_explicit(const llmfs_settings *s, const char *key);

/* A markdown table of every setting (for docs/). */
int settings_markdown(char *buf, size_t cap);

#endif
