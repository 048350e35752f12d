/* fs.h — the llmfs file server: models and sessions served as a FUSE file system.
 *
 * The tree and its files are described in docs/llmfs.4.md. The server reaches the
 * inference core only through src/llmfs.h.
 */
#ifndef LLMFS_FS_H
#define LLMFS_FS_H

/* `llmfs mount [-c CONF] [-f] [--set KEY=VALUE] [--KEY VALUE] [MOUNTPOINT]`.
 * argv[0] is the subcommand's name ("mount"). Without -f the command returns once the
 * file system is mounted and the configured models are loaded, leaving a daemon that
 * serves it; with -f it serves in the foreground until SIGINT or SIGTERM unmounts it.
 * Returns the process exit status: 0 success, 1 failure, 2 usage error. */
int fs_mount_main(int argc, char **argv);

#endif
