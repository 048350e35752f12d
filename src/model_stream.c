/* model_stream.c — feed-forward weights in host memory streamed to the GPU for large
 * micro-batches, and the measurements that decide when.
 *
 * A prompt of hundreds of tokens computes a host-resident feed-forward block faster on
 * the GPU, copy included, than the CPU does; a decode step does not. Each layer's
 * host-resident feed-forward weights are copied into one of two device slots while the
 * layer before computes (the backend's stage_copy / stage_wait). Whether a micro-batch
 * streams follows from two running means measured on real batches: the copy rate and
 * the CPU's seconds per token for the same layers (m->stream).
 */
#include "model_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The k-th layer of P->stream_layers with its host-resident feed-forward weights copied
 * to the GPU in slot k % 2, as P->staged[slot]; when the copy cannot be made (no room
 * on the GPU) that layer's feed-forward runs where its weights are, and stream.error
 * says why. */
static void stage_layer(model *m, int k)
{
    model_priv *P = m->scratch;
    if (k >= m->stream.layers)
        return;
    const int slot = k & 1;
    model_layer *S = &P->staged[slot];
    *S = m->layers[P->stream_layers[k]];
    tensor **ffn[] = FFN_TENSORS(S);
    const tensor *src[FFN_N_TENSORS];
    tensor **at[FFN_N_TENSORS];
    int c = 0;
    for (int i = 0; i < FFN_N_TENSORS; i++)
        if (*ffn[i] && (*ffn[i])->be == m->cpu) {
            src[c] = *ffn[i];
            at[c++] = ffn[i];
        }
    llmfs_error e = {0};
    P->staged_ok[slot] = m->gpu->ops->stage_copy(m->gpu, slot, P->staged_t[slot], src, c, &e) == 0;
    if (!P->staged_ok[slot]) {
        snprintf(m->stream.error, sizeof m->stream.error, "%.120s", e.msg);
        return;
    }
    for (int i = 0; i < c; i++)
        *at[i] = &P->staged_t[slot][i];
}

#define STREAM_BATCH_GUESS 32   /* before the CPU has been timed (llama.cpp's fixed choice) */
#define STREAM_RATE_GUESS 16e9  /* bytes/s before a streamed batch has been timed (PCIe 4 x16) */

/* The micro-batch size from which streaming pays off: where the copy (at the measured
 * rate) costs less than the CPU's measured time for the same layers. */
static int stream_auto_threshold(const model *m)
{
    const model_stream_stats *s = &m->stream;
    if (s->cpu_s_per_token <= 0)
        return STREAM_BATCH_GUESS;
    const double rate = s->gpu_bytes_per_s > 0 ? s->gpu_bytes_per_s : STREAM_RATE_GUESS;
    const double n = (double)s->bytes / rate / s->cpu_s_per_token;
    return n < 2 ? 2 : n > 1048576 ? 1048576 : (int)ceil(n);
}

bool model_streams(const model *m, int n)
{
    const int threshold = model_stream_threshold(&m->stream, m->offload_batch);
    return threshold > 0 && n >= threshold;
}

/* The layers whose feed-forward weights a GPU could take for a large batch: those with
 * any of them in host memory. */
int model_stream_plan(model *m, llmfs_error *err)
{
    model_priv *P = m->scratch;
    if (!m->gpu || !m->gpu->ops->stage_copy)
        return 0;
    P->stream_layers = malloc(sizeof(int) * (size_t)m->hp.n_layer);
    if (!P->stream_layers)
        return llmfs_errorf(err, ENOMEM, "model: out of memory");
    for (int il = 0; il < m->hp.n_layer; il++) {
        model_layer *L = &m->layers[il];
        tensor **ffn[] = FFN_TENSORS(L);
        uint64_t bytes = 0;
        for (int i = 0; i < FFN_N_TENSORS; i++)
            if (*ffn[i] && (*ffn[i])->be == m->cpu)
                bytes += (*ffn[i])->nb2 * (uint64_t)(*ffn[i])->ne[2];
        if (bytes) {
            P->stream_layers[m->stream.layers++] = il;
            m->stream.bytes += bytes;
        }
    }
    m->stream.threshold = stream_auto_threshold(m);
    return 0;
}


void model_stream_begin(model *m, stream_pass *sp, int n, bool stream)
{
    model_priv *P = m->scratch;
    /* CPU feed-forward time of the layers that could stream, for the choice (batches of
     * 8+ tokens, whose time per token no longer falls with the batch size) */
    *sp = (stream_pass){.stream = stream, .timed = !stream && P->stream_layers && n >= 8, .n = n,
                        .t0 = stream ? now_s() : 0};
    P->cpu_ffn_s = 0;
    P->cpu_ffn_layers = 0;
    if (stream) { /* two layers ahead: one slot computes while the other fills */
        stage_layer(m, 0);
        stage_layer(m, 1);
    }
}

fwd_bufs *model_stream_ffn(model *m, stream_pass *sp, int il, fwd_bufs *B, int rows)
{
    model_priv *P = m->scratch;
    const int k = sp->k;
    const model_layer *F = &m->layers[il];
    const bool host_ffn = k < m->stream.layers && P->stream_layers[k] == il;
    if (host_ffn && sp->stream && P->staged_ok[k & 1]) {
        m->gpu->ops->stage_wait(m->gpu, k & 1);
        F = &P->staged[k & 1];
    }
    B = model_move_to(m, B, F->ffn_norm->be, rows);
    if (host_ffn && sp->timed && rows == sp->n) {
        /* from an idle GPU, so that the time is this block's (its CPU part waits for
         * the GPU's inputs anyway) */
        if (m->gpu->ops->sync)
            m->gpu->ops->sync(m->gpu);
        const double t0 = now_s();
        m->family->ffn(m, F, B, rows);
        P->cpu_ffn_s += now_s() - t0;
        P->cpu_ffn_layers++;
    } else {
        m->family->ffn(m, F, B, rows);
    }
    if (host_ffn && sp->stream) /* the slot is free once this layer's ops are done */
        stage_layer(m, k + 2);
    sp->k += host_ffn;
    return B;
}

void model_stream_end(model *m, stream_pass *sp)
{
    model_priv *P = m->scratch;
    /* running means, recent batches weighing more */
    model_stream_stats *st = &m->stream;
    if (sp->stream) {
        const double rate = (double)st->bytes / (now_s() - sp->t0);
        st->gpu_bytes_per_s = st->gpu_bytes_per_s > 0 ? 0.75 * st->gpu_bytes_per_s + 0.25 * rate : rate;
        st->batches++;
    } else if (P->cpu_ffn_layers > 0) { /* per token, over every such layer */
        const double per = P->cpu_ffn_s / sp->n * st->layers / P->cpu_ffn_layers;
        st->cpu_s_per_token = st->cpu_s_per_token > 0 ? 0.75 * st->cpu_s_per_token + 0.25 * per : per;
    }
    if (sp->stream || P->cpu_ffn_layers > 0)
        st->threshold = stream_auto_threshold(m);
}

void model_stream_give_up(model *m, llmfs_error *err)
{
    /* the two layers in flight took the room this batch needed */
    m->gpu->ops->stage_release(m->gpu);
    m->stream.off = true;
    snprintf(m->stream.error, sizeof m->stream.error,
             "streaming off until the model is loaded again: %.80s", err ? err->msg : "out of memory");
    if (err)
        memset(err, 0, sizeof *err);
}
