#include "kernels/cpu/thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace expertd::kernels {
namespace {

// A decode step issues hundreds of ParallelFor calls a few microseconds
// apart; waking a worker through a futex costs about as much as one of them.
// So workers (and the caller, when waiting for them) poll for a while before
// blocking: first with pause, then yielding so that a thread which shares
// the core (more threads than cores, or other engine threads) can run.
constexpr int kPauseIterations = 256;
constexpr int kSpinIterations = 2304;

// Split each loop into up to this many chunks per thread so that a thread
// that was descheduled (2-core machines share cores with I/O threads) does
// not hold up the others for a whole 1/num_threads of the work.
constexpr int64_t kChunksPerThread = 4;

// Called with the poll count so far; see kPauseIterations.
inline void Backoff(int iteration) {
#if defined(__x86_64__) || defined(__i386__)
  if (iteration < kPauseIterations) {
    __builtin_ia32_pause();
    return;
  }
#endif
  std::this_thread::yield();
}

}  // namespace

struct ThreadPool::State {
  explicit State(int threads) : num_threads(threads) {}

  // Runs chunks of the current job until none are left.
  void RunChunks() {
    for (;;) {
      const int64_t begin = next_begin.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      (*fn)(begin, std::min(n, begin + chunk));
    }
  }

  void WorkerLoop() {
    uint64_t seen_generation = 0;
    for (;;) {
      uint64_t current = seen_generation;
      for (int i = 0; i < kSpinIterations && current == seen_generation; ++i) {
        Backoff(i);
        current = generation.load(std::memory_order_acquire);
      }
      if (current == seen_generation) {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, [&] {
          return stop || generation.load(std::memory_order_acquire) != seen_generation;
        });
        if (stop) return;
        current = generation.load(std::memory_order_acquire);
      }
      seen_generation = current;
      RunChunks();
      // The caller returns (and may reuse the job fields) once this reaches
      // zero, so nothing of the job may be touched after the decrement.
      if (pending_workers.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu);
        done_cv.notify_one();
      }
    }
  }

  const int num_threads;
  std::vector<std::thread> workers;

  std::mutex mu;
  std::condition_variable work_cv;  // a new generation was published, or stop
  std::condition_variable done_cv;  // pending_workers reached zero
  bool stop = false;                // guarded by mu

  // Bumped (release) by ParallelFor after it has written the job below;
  // workers read the job only after observing the new value (acquire), and
  // the caller rewrites it only after every worker has checked out through
  // pending_workers. That ordering is what makes the plain fields safe.
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending_workers{0};
  std::atomic<int64_t> next_begin{0};
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 1;
};

ThreadPool::ThreadPool(int num_threads)
    : state_(std::make_unique<State>(std::max(1, num_threads))) {
  const int num_workers = state_->num_threads - 1;
  state_->workers.reserve(static_cast<size_t>(num_workers));
  for (int i = 0; i < num_workers; ++i) {
    state_->workers.emplace_back([state = state_.get()] { state->WorkerLoop(); });
    // Best effort: the name only helps top/perf, so a failure is ignored.
    pthread_setname_np(state_->workers.back().native_handle(), "expertd-compute");
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->work_cv.notify_all();
  for (std::thread& worker : state_->workers) worker.join();
}

int ThreadPool::num_threads() const { return state_->num_threads; }

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  State& s = *state_;
  if (s.num_threads == 1 || n <= min_chunk) {
    fn(0, n);
    return;
  }
  const int64_t target_chunks = s.num_threads * kChunksPerThread;
  const int64_t chunk = std::max(min_chunk, (n + target_chunks - 1) / target_chunks);

  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.fn = &fn;
    s.n = n;
    s.chunk = chunk;
    s.next_begin.store(0, std::memory_order_relaxed);
    s.pending_workers.store(static_cast<int>(s.workers.size()), std::memory_order_relaxed);
    s.generation.fetch_add(1, std::memory_order_release);
  }
  s.work_cv.notify_all();

  s.RunChunks();

  for (int i = 0; i < kSpinIterations; ++i) {
    if (s.pending_workers.load(std::memory_order_acquire) == 0) return;
    Backoff(i);
  }
  std::unique_lock<std::mutex> lock(s.mu);
  s.done_cv.wait(lock, [&] { return s.pending_workers.load(std::memory_order_acquire) == 0; });
}

}  // namespace expertd::kernels
