/* engine.h — the objects behind llmfs.h: daemon, models, sessions, KV slots.
 *
 * Locks, in the order they may be taken: llmfs.mu (model list, daemon settings), then
 * llmfs_model.clip_mu and dev_mu (the projector, the model's GPU backend), then
 * llmfs_model.mu (everything of one model and its sessions: states, slots, settings,
 * conversations). Stream locks are leaves. No stream is appended to or finished while
 * llmfs_model.mu is held, because stream watchers run on the appending thread and may
 * call back into llmfs.h.
 *
 * A session's token sequence (toks) belongs to the scheduler thread while the session
 * is busy (queued, prefill, generating); FUSE threads touch it only while it is idle.
 */
#ifndef LLMFS_ENGINE_H
#define LLMFS_ENGINE_H

#include "clip.h"
#include "cpuset.h"
#include "llmfs.h"
#include "reasoning.h"
#include "model.h"
#include "sampler.h"
#include "settings.h"
#include "spec.h"
#include "mtp.h"
#include "stopstr.h"
#include "tokenizer.h"
#include "vision.h"

#include <pthread.h>
#include <stdatomic.h>

struct llmfs {
    pthread_mutex_t mu;
    llmfs_settings settings;   /* daemon scope; model and session fields are defaults */
    llmfs_model *models;       /* list, each holding one reference */
    double t_start;
    int64_t swap_at_start;     /* pages swapped in + out since boot when this started; -1 unknown */
};

enum model_state { MS_LOADING, MS_READY, MS_FAILED, MS_UNLOADED };

/* One sequence of the KV cache and the tokens whose keys and values it holds. */
typedef struct kv_slot {
    llmfs_session *owner; /* NULL: free (its cached tokens may still be reused) */
    int32_t *tokens;      /* positions 0..n-1 */
    int n, cap;
    double last_used;
} kv_slot;

struct llmfs_model {
    atomic_int refs;
    llmfs *lf;
    llmfs_model *next;
    char name[64];
    char path[1024];

    pthread_mutex_t mu;
    pthread_cond_t work_cv;    /* the scheduler sleeps on it */
    enum model_state state;
    bool stopping;             /* the scheduler exits */
    pthread_t thread;
    bool thread_started;

    model *mdl;
    kv_cache *kv;
    struct remote_model *remote; /* a remote model (remote.h): no mdl, no kv */
    clip_model *clip;          /* the vision projector (setting mmproj), NULL none */
    pthread_mutex_t clip_mu;   /* one image through the projector at a time */
    /* The text model's GPU backend (one stream, one set of scratch buffers) is used by
     * one thread at a time: while the projector runs on it (clip_on_device), the
     * scheduler holds dev_mu from planning a step to committing it (the cache's
     * recurrent states move on the device there too) and an image encode holds it for
     * the encode (after clip_mu). Taken before mu, never while holding it. */
    pthread_mutex_t dev_mu;
    char clip_note[192];       /* why the projector runs on the CPU though asked onto the GPU, "" */
    int n_vocab;
    const char *chat_template; /* owned by the GGUF file; NULL if none */
    char bos_text[64], eos_text[64];
    llmfs_settings settings;   /* model scope, and the defaults of new sessions */

    llmfs_session **sessions;  /* live sessions (the default one first), one reference each */
    int n_sessions, cap_sessions;
    int next_id;
    llmfs_session *def;        /* also in sessions[] */
    uint64_t queue_seq;

    kv_slot *slots;
    int n_slots;

    /* totals */
    uint64_t n_prompt_tokens, n_gen_tokens, requests, errors;
    double prompt_seconds, gen_seconds;
    uint64_t vram_load, vram_now; /* device bytes the model holds: after loading, after the last step */
    model_stream_stats stream; /* the model's, as of the last step (the scheduler writes the model's own) */
    double last_activity;
    char error[256];
    char fit_text[768];        /* what fit decided at load, "" if it did not run */

    /* where the model's threads run (cpu_affinity, priority), resolved at load */
    cpu_list cpus;             /* empty: anywhere */
    int priority;
    /* swap activity around generations (pages in + out, /proc/vmstat) */
    int64_t swap_gen_start;    /* when the last prompt was accepted; -1 unknown */
    int64_t swap_gen_delta;    /* during the last finished generation; -1 none yet */

    /* speculative decoding (spec.h): the drafters in use (spec_type as loaded, less the
     * draft model when it was refused) and the draft model with its own KV cache, one
     * sequence per slot; totals since load */
    int spec_mask;
    spec_drafter *drafter;
    mtp_drafter *mtp;          /* spec_type mtp: the model's MTP head with its own cache */
    uint64_t spec_drafted, spec_accepted, spec_steps;
};

enum session_state { SS_IDLE, SS_QUEUED, SS_PREFILL, SS_GEN };

typedef struct chat_turn {
    char *user;
    char *assistant; /* NULL until the reply is complete */
    vision_embd *imgs; /* the turn's images, in the order of its markers */
    int n_imgs;
} chat_turn;

struct llmfs_session {
    atomic_int refs;
    llmfs_model *m;            /* holds a model reference */
    int id;
    bool closed;               /* removed from the model; finishes what runs */
    llmfs_settings settings;   /* session scope used */

    enum session_state state;
    bool preparing;            /* a prompt is being tokenized outside the lock */
    atomic_bool stop_req;
    bool reset_after;          /* reset once the running generation ends */
    uint64_t queue_seq;

    /* the conversation (chat mode) */
    chat_turn *conv;
    int n_conv, cap_conv;
    char *system_logged;       /* system text last written to the transcript */

    /* images written to the session for its next prompt (decoded, not yet encoded) */
    image_rgb *pending;
    int n_pending;
    /* the sequence being evaluated: prompt then generated tokens; tokens -1 are image
     * rows, spans say where (their rows belong to the conversation's turns, or to
     * raw_imgs in raw mode) */
    int32_t *toks;
    vision_span *spans;
    int n_spans;
    vision_embd *raw_imgs;
    int n_raw_imgs;
    int n_toks, cap_toks;
    int slot;                  /* index into m->slots, -1 none */
    int n_predict;             /* of the running generation */
    bool raw_turn;             /* the running generation is raw mode */
    sampler *smp;
    detok_state detok;
    reason_split rsplit;       /* the reply's answer apart from its reasoning (chat mode) */
    stop_filter stops;         /* the reply's stop strings (stop_strings when the prompt came) */
    llmfs_stream *reasoning;   /* the reasoning of the current or last reply (done when it ends) */
    char *reply;               /* text generated so far in this turn */
    size_t reply_len, reply_cap;

    llmfs_stream *out;         /* the current (or next) generation's output */
    bool out_used;             /* out belongs to a prompt already */
    llmfs_stream *transcript;

    /* stats of the last (or current) generation */
    char stop_reason[16];
    int n_prompt, n_cached, n_gen, turns;
    double t_prompt, t_prefill, t_first, t_last;
    double ttft_ms, pp_tps, tg_tps;
    int draft_n, draft_accepted, spec_steps; /* speculative decoding: tokens drafted, accepted, verification steps */
    int n_gen_first;           /* tokens the first step generated (tg_tps counts the rest) */
    char *last_prompt;
    char error[256];
    double last_active;
};

double engine_now(void);

/* session.c */
llmfs_session *session_create(llmfs_model *m, int id, llmfs_error *err);
void session_ref(llmfs_session *s);
/* The streams of one reply: they end with it. */
typedef struct turn_streams {
    llmfs_stream *out;
    llmfs_stream *reasoning;
} turn_streams;
/* Marks the turn done: state idle, conversation updated; m->mu held. Fills *ended with
 * references to the turn's output and reasoning streams (a new prompt may replace them as
 * soon as the lock is released) and returns flags for session_end_turn_streams. */
int session_end_turn_locked(llmfs_session *s, const char *reason, turn_streams *ended);
/* Stream work after session_end_turn_locked, without m->mu: EOF on the reply's streams
 * (and drops those references), reset/close lines in the transcript. */
void session_end_turn_streams(llmfs_session *s, turn_streams *ended, int flags);
/* Drops the slot (m->mu held). */
void session_release_slot(llmfs_session *s);
/* Appends to the reply buffer (scheduler thread); -ENOMEM leaves it as it was. */
int session_reply_append(llmfs_session *s, const char *text, size_t n);

/* scheduler.c */
void *scheduler_main(void *arg);
/* Generated text of s's running turn: to the transcript as written, the answer through
 * the stop strings to output and the conversation, the reasoning to its stream. flush:
 * the end of the reply (held text goes out). -ENOMEM when a part could not be taken.
 * Called by the one thread producing the turn's text (the scheduler, or a remote reply). */
int sched_reply_text(llmfs_session *s, const char *text, int n, bool flush);
/* The transcript's end line of a turn (before the session becomes idle), with the
 * speculative-decoding counts of the turn (0, 0 without). */
void sched_transcript_end(llmfs_session *s, const char *reason, const char *why, double now,
                          double t_first, int n_gen, int draft_n, int draft_accepted);

/* engine.c */
void model_set_error(llmfs_model *m, const char *msg);
/* Bytes of the model's weights in host memory and on the GPU; m->mu held. */
void engine_weight_bytes(llmfs_model *m, uint64_t *cpu, uint64_t *gpu);

#endif
