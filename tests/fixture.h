/* fixture.h — the ../shared/fixtures cases (llama.cpp reference tokens, logits and
 * greedy continuations), loaded once for the model tests on every backend. */
#ifndef LLMFS_TEST_FIXTURE_H
#define LLMFS_TEST_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct fixture {
    char name[320];       /* "model/case" */
    char model[1024];     /* path of the GGUF */
    int ctk, ctv;
    bool flash;
    int n_vocab, n_tok, n_greedy;
    int32_t *tok, *greedy;
    float *margin;        /* [n_greedy] */
    float *ref;           /* [n_tok][n_vocab] */
    double tol;
} fixture;

/* Every case under <shared>/fixtures, sorted by model then case; at most max. Exits with
 * a message if a case is incomplete; skips (77) without the test assets. */
int fixtures_load(fixture *cases, int max);

#endif
