/* backend_test.h — test-only control of the device registry; the daemon never calls it. */
#ifndef LLMFS_BACKEND_TEST_H
#define LLMFS_BACKEND_TEST_H

/* n_threads > 0: where a GPU is asked for and none is usable, a second CPU backend with
 * that many threads takes its place (placement, copies between backends and streaming
 * then run on any machine); 0 turns it off. */
void backend_test_second_cpu(int n_threads);

#endif
