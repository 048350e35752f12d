/* idle.h — the idle timers, run by the control loop once a second: clone sessions idle
 * for a model's session_idle seconds are closed, and a model idle for its idle_unload
 * seconds is unloaded (0 turns either off). */
#ifndef LLMFS_FS_IDLE_H
#define LLMFS_FS_IDLE_H

#include "llmfs.h"

void idle_check(llmfs *lf);

#endif
