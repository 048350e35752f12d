/* prompt.h — writes to a prompt file: the bytes gather until the writer closes the
 * file, and the close submits them, so the writer's close(2) gets the error. */
#ifndef LLMFS_FS_PROMPT_H
#define LLMFS_FS_PROMPT_H

#include <stddef.h>

struct fs_file;

/* One write(2): 0 or a negative errno (EBUSY while the session generates, EFBIG past
 * max_prompt_bytes); a failed write drops the prompt. */
int prompt_write(struct fs_file *f, const char *buf, size_t n);
/* One close(2): submits what was written, or returns the error a write had. */
int prompt_flush(struct fs_file *f);

#endif
