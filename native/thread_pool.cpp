#include "thread_pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace saekit {
namespace {

int default_threads() {
  if (const char* env = std::getenv("SAEKIT_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

class Pool {
 public:
  ~Pool() { stop_workers(); }

  int size() const { return wanted_.load(); }

  // Takes effect at the start of the next job, so a caller (the JS main thread) never waits
  // for a running kernel.
  void resize(int n) { wanted_.store(n <= 0 ? default_threads() : n); }

  void run(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) {
    if (n_tasks <= 0) return;
    std::lock_guard<std::mutex> job(job_mutex_);
    const int wanted = wanted_.load();
    if (size_ == 0 || wanted != size_) {
      stop_workers();
      size_ = wanted;
      start_workers();
    }
    if (size_ == 1 || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t, 0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      error_ = nullptr;
      pending_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    cv_start_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lk(m_);
    cv_done_.wait(lk, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work(int worker) {
    for (;;) {
      int64_t t = next_.fetch_add(1);
      if (t >= n_tasks_) break;
      try {
        (*fn_)(t, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lk(m_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_tasks_);  // skip the rest
      }
    }
  }

  void start_workers() {
    quit_ = false;
    for (int w = 1; w < size_.load(); ++w) workers_.emplace_back([this, w] { loop(w); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
    }
    cv_start_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void loop(int worker) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_start_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
      }
      work(worker);
      std::lock_guard<std::mutex> lk(m_);
      if (--pending_ == 0) cv_done_.notify_one();
    }
  }

  std::mutex job_mutex_;  // one parallel job at a time
  std::mutex m_;
  std::condition_variable cv_start_, cv_done_;
  std::vector<std::thread> workers_;
  std::atomic<int> size_{0};
  std::atomic<int> wanted_{default_threads()};
  bool quit_ = false;
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
  std::exception_ptr error_;
};

Pool& pool() {
  // Leaked on purpose: joining threads from a static destructor at process exit can deadlock
  // when Node tears down; the OS reclaims them.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

void parallel_for(int64_t n_tasks, const std::function<void(int64_t, int)>& fn) { pool().run(n_tasks, fn); }

int threads() { return pool().size(); }

void set_threads(int n) { pool().resize(n); }

}  // namespace saekit
