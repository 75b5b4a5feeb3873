#ifndef EXPERTD_KERNELS_CPU_THREAD_POOL_H_
#define EXPERTD_KERNELS_CPU_THREAD_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>

namespace expertd::kernels {

// A fixed pool of compute threads. ParallelFor splits [0, n) into contiguous
// ranges and runs them on the pool's workers and the calling thread; it
// returns when every range is done. One ParallelFor runs at a time per pool
// (the engine's forward pass is the only caller).
class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means no worker threads.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;

  // fn(begin, end) is called on disjoint ranges covering [0, n). Ranges are
  // at least min_chunk long (except the last) so tiny loops stay on one thread.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  struct State;
  // pimpl keeps <thread> and <mutex> out of the header.
  std::unique_ptr<State> state_;
};

}  // namespace expertd::kernels

#endif  // EXPERTD_KERNELS_CPU_THREAD_POOL_H_
