/* node.c — the folder table behind inode numbers (see node.h). */
#include "node.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 256

struct fs_dir {
    uint64_t id;
    int type;
    char model[NODE_NAME_MAX];
    int sid;
    uint64_t refs;
    fs_dir *next_id;   /* chain by id */
    fs_dir *next_name; /* chain by (model, sid) */
    bool has_error;
    char error[256];
    char core_seen[256];
};

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static fs_dir *by_id[N_BUCKETS];
static fs_dir *by_name[N_BUCKETS];
static fs_dir root_dir = {.id = 0, .type = DIR_ROOT};
static uint64_t next_id = 1;

static unsigned id_bucket(uint64_t id)
{
    return (unsigned)((id * 0x9E3779B97F4A7C15ull) >> 56) % N_BUCKETS;
}

static unsigned name_bucket(const char *model, int sid)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)model; *p; p++)
        h = (h ^ *p) * 16777619u;
    h = (h ^ (uint32_t)sid) * 16777619u;
    return h % N_BUCKETS;
}

void node_init(void)
{
    pthread_mutex_lock(&table_mu);
    root_dir.refs = 1;
    by_id[id_bucket(0)] = &root_dir;
    pthread_mutex_unlock(&table_mu);
}

static void unlink_dir(fs_dir *d)
{
    for (fs_dir **p = &by_id[id_bucket(d->id)]; *p; p = &(*p)->next_id)
        if (*p == d) {
            *p = d->next_id;
            break;
        }
    for (fs_dir **p = &by_name[name_bucket(d->model, d->sid)]; *p; p = &(*p)->next_name)
        if (*p == d) {
            *p = d->next_name;
            break;
        }
}

void node_fini(void)
{
    pthread_mutex_lock(&table_mu);
    for (int b = 0; b < N_BUCKETS; b++) {
        fs_dir *d = by_id[b];
        while (d) {
            fs_dir *next = d->next_id;
            if (d != &root_dir)
                free(d);
            d = next;
        }
        by_id[b] = by_name[b] = NULL;
    }
    pthread_mutex_unlock(&table_mu);
}

fs_dir *node_root(void)
{
    return &root_dir;
}

fs_dir *node_dir_get(int type, const char *model, int sid, uint64_t refs)
{
    if (type == DIR_ROOT) {
        node_ref(&root_dir, refs);
        return &root_dir;
    }
    if (strlen(model) >= NODE_NAME_MAX)
        return NULL;
    unsigned nb = name_bucket(model, sid);
    pthread_mutex_lock(&table_mu);
    fs_dir *d;
    for (d = by_name[nb]; d; d = d->next_name)
        if (d->type == type && d->sid == sid && strcmp(d->model, model) == 0)
            break;
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d) {
            pthread_mutex_unlock(&table_mu);
            return NULL;
        }
        d->id = next_id++;
        d->type = type;
        d->sid = sid;
        strcpy(d->model, model);
        unsigned ib = id_bucket(d->id);
        d->next_id = by_id[ib];
        by_id[ib] = d;
        d->next_name = by_name[nb];
        by_name[nb] = d;
    }
    d->refs += refs;
    pthread_mutex_unlock(&table_mu);
    return d;
}

void node_ref(fs_dir *d, uint64_t n)
{
    pthread_mutex_lock(&table_mu);
    d->refs += n;
    pthread_mutex_unlock(&table_mu);
}

void node_unref(fs_dir *d, uint64_t n, bool (*exists)(const fs_dir *d))
{
    pthread_mutex_lock(&table_mu);
    d->refs = d->refs > n ? d->refs - n : 0;
    bool drop = d != &root_dir && d->refs == 0 && !exists(d);
    if (drop)
        unlink_dir(d);
    pthread_mutex_unlock(&table_mu);
    if (drop)
        free(d);
}

void node_sweep(bool (*exists)(const fs_dir *d))
{
    pthread_mutex_lock(&table_mu);
    for (int b = 0; b < N_BUCKETS; b++) {
        fs_dir *d = by_id[b];
        while (d) {
            fs_dir *next = d->next_id;
            if (d != &root_dir && d->refs == 0 && !exists(d)) {
                unlink_dir(d);
                free(d);
            }
            d = next;
        }
    }
    pthread_mutex_unlock(&table_mu);
}

fs_dir *node_from_ino(uint64_t ino, int *kind)
{
    *kind = (int)(ino & ((1u << NODE_KIND_BITS) - 1));
    uint64_t id = ino >> NODE_KIND_BITS;
    if (*kind < K_DIR || *kind >= NODE_KINDS)
        return NULL;
    pthread_mutex_lock(&table_mu);
    fs_dir *d;
    for (d = by_id[id_bucket(id)]; d; d = d->next_id)
        if (d->id == id)
            break;
    pthread_mutex_unlock(&table_mu);
    return d;
}

uint64_t node_ino(const fs_dir *d, int kind)
{
    /* The root folder's id 0 with kind K_DIR (1) gives FUSE's root inode number 1. */
    return d->id << NODE_KIND_BITS | (uint64_t)kind;
}

int node_type(const fs_dir *d)
{
    return d->type;
}

const char *node_model(const fs_dir *d)
{
    return d->model;
}

int node_sid(const fs_dir *d)
{
    return d->sid;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void node_set_error(fs_dir *d, const char *msg, const char *core_now)
{
    pthread_mutex_lock(&table_mu);
    d->has_error = true;
    copy_str(d->error, sizeof d->error, msg);
    copy_str(d->core_seen, sizeof d->core_seen, core_now);
    pthread_mutex_unlock(&table_mu);
}

void node_error_text(fs_dir *d, const char *core_now, char *buf, size_t cap)
{
    pthread_mutex_lock(&table_mu);
    bool mine = d->has_error && strncmp(d->core_seen, core_now, sizeof d->core_seen - 1) == 0;
    copy_str(buf, cap, mine ? d->error : core_now);
    pthread_mutex_unlock(&table_mu);
}
