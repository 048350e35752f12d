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
        /* A reason quotes user input (values, template text) and must stay one line. */
        for (char *p = e->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = ' ';
        e->code = code;
    }
    return -code;
}
