/* backend.c — what every backend shares. */
#include "backend.h"

void backend_free(backend *be)
{
    if (be && be->ops && be->ops->destroy)
        be->ops->destroy(be);
}
