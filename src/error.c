#include "llmfs.h"

#include <stdarg.h>
#include <stdio.h>

int llmfs_errorf(llmfs_error *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return -code;
}
