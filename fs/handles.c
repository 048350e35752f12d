/* handles.c — the list of open files and folders (see server.h). */
#include "server.h"

static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static fs_handle handles = {&handles, &handles, NULL};

void fs_handle_add(fs_handle *h, void (*destroy)(fs_handle *h))
{
    h->destroy = destroy;
    pthread_mutex_lock(&handles_mu);
    h->next = handles.next;
    h->prev = &handles;
    handles.next->prev = h;
    handles.next = h;
    pthread_mutex_unlock(&handles_mu);
}

void fs_handle_remove(fs_handle *h)
{
    pthread_mutex_lock(&handles_mu);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    pthread_mutex_unlock(&handles_mu);
}

void fs_close_all(void)
{
    while (handles.next != &handles) {
        fs_handle *h = handles.next;
        fs_handle_remove(h);
        h->destroy(h);
    }
}
