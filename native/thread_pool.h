// One process-wide pool of kernel threads. AsyncWorkers run on libuv's pool (4 threads); if
// every call spawned its own threads the machine would be oversubscribed, so all kernels share
// this pool and one parallel job runs at a time (others wait their turn).
#pragma once
#include <cstdint>
#include <functional>

namespace saekit {

// Runs fn(task, worker) for task in [0, n_tasks), tasks handed out dynamically; worker is in
// [0, threads()). The calling thread takes part. Exceptions from fn are rethrown to the caller
// (the first one; remaining tasks are skipped).
void parallel_for(int64_t n_tasks, const std::function<void(int64_t task, int worker)>& fn);

int threads();
// n <= 0 restores the default (all hardware threads).
void set_threads(int n);

}  // namespace saekit
