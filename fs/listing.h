/* listing.h — folder listings for opendir, readdir and releasedir: the names are
 * taken when the folder is opened (the file table's rows for the folder's type, then
 * the models or the sessions), so one `ls` sees one moment. */
#ifndef LLMFS_FS_LISTING_H
#define LLMFS_FS_LISTING_H

#include "server.h"

void listing_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void listing_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                  struct fuse_file_info *fi);
void listing_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);

#endif
