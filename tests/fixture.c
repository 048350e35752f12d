/* fixture.c — loading the ../shared/fixtures cases for the model tests. */
#include "fixture.h"
#include "testutil.h"

#include "quant.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* Tolerance from the README's table, by the weights' type (the model file's suffix). */
static double weight_tolerance(const char *model_file)
{
    if (strstr(model_file, "stories260K") || strstr(model_file, "-f16."))
        return 5e-3;
    if (strstr(model_file, "-bf16."))
        return 2e-2;
    if (strstr(model_file, "_k."))
        return 1e-1;
    return 6e-2; /* q8_0, q4_0, q4_1, q5_0, q5_1 */
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted subdirectory names of dir (malloc'd); returns the count. */
static int list_dirs(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char **v = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        v = realloc(v, sizeof *v * (size_t)(n + 1));
        v[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static void load_fixture(fixture *f, const char *dir, const char *name, int *n)
{
    char p[2048], v[256];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    if (test_meta_get(p, "model", v, sizeof v))
        return;
    char rel[300];
    snprintf(rel, sizeof rel, "models/%s", v);
    test_shared_path(rel, f->model, sizeof f->model);
    f->tol = weight_tolerance(v);
    test_meta_get(p, "ctk", v, sizeof v);
    f->ctk = type_from_name(v);
    test_meta_get(p, "ctv", v, sizeof v);
    f->ctv = type_from_name(v);
    test_meta_get(p, "flash_attn", v, sizeof v);
    f->flash = !strcmp(v, "on");
    test_meta_get(p, "n_vocab", v, sizeof v);
    f->n_vocab = atoi(v);
    if (f->ctk == T_Q8_0 || f->ctv == T_Q8_0)
        f->tol += 3e-2;
    snprintf(p, sizeof p, "%s/tokens.txt", dir);
    f->n_tok = test_read_ints(p, &f->tok);
    snprintf(p, sizeof p, "%s/greedy.txt", dir);
    f->n_greedy = test_read_ints(p, &f->greedy);
    snprintf(p, sizeof p, "%s/greedy_margin.txt", dir);
    int nm = test_read_floats(p, &f->margin);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    size_t len = 0;
    f->ref = (float *)test_read_file(p, &len);
    if (f->n_tok <= 0 || f->n_greedy <= 0 || nm != f->n_greedy || !f->ref || f->n_vocab <= 0 ||
        len != sizeof(float) * (size_t)f->n_tok * (size_t)f->n_vocab || f->ctk < 0 || f->ctv < 0) {
        fprintf(stderr, "fixture %s is incomplete\n", name);
        exit(1);
    }
    (*n)++;
}

int fixtures_load(fixture *cases, int max)
{
    int n = 0;
    char root[1024];
    test_shared_path("fixtures", root, sizeof root);
    char **models = NULL;
    int nm = list_dirs(root, &models);
    for (int i = 0; i < nm; i++) {
        char mdir[1400];
        snprintf(mdir, sizeof mdir, "%s/%s", root, models[i]);
        char **cs = NULL;
        int nc = list_dirs(mdir, &cs);
        for (int j = 0; j < nc && n < max; j++) {
            char cdir[1800], name[300];
            snprintf(cdir, sizeof cdir, "%s/%s", mdir, cs[j]);
            snprintf(name, sizeof name, "%s/%s", models[i], cs[j]);
            load_fixture(&cases[n], cdir, name, &n);
            free(cs[j]);
        }
        free(cs);
        free(models[i]);
    }
    free(models);
    return n;
}
