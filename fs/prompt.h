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

/* The same for a session's image file: the bytes of one PNG or JPEG, added to the
 * session's images for its next prompt at close (EFBIG past max_image_bytes; EINVAL not
 * an image or no projector). */
int image_write(struct fs_file *f, const char *buf, size_t n);
int image_flush(struct fs_file *f);

#endif
