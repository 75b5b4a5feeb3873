#ifndef EXPERTD_TESTS_TESTING_DEFERRED_COPIER_H_
#define EXPERTD_TESTS_TESTING_DEFERRED_COPIER_H_

// A device backend for tests whose copies complete later, on its own thread,
// in the order they were started (as on one copy stream): the readiness the
// cache hands out is truly deferred, as with the CUDA tier, but on the host.
//
// Each copy checks, as it lands, that its source still holds the bytes it held
// when the copy was started. A DRAM slot refilled under a pending copy is
// counted (sources_overwritten) and the device slot then gets the wrong bytes,
// so a test fails either way when the cache breaks that rule.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cache/expert_cache.h"
#include "cache/readiness.h"

namespace expertd::testing {

class DeferredCopier : public cache::DeviceCopier {
 public:
  // Each copy lands `delay` after it was started, or later while held.
  explicit DeferredCopier(std::chrono::microseconds delay) : delay_(delay), worker_([this] { Run(); }) {}
  ~DeferredCopier() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      held_ = false;
    }
    changed_.notify_all();
    worker_.join();  // lands what is queued first
  }

  absl::Status Copy(std::byte* device_dst, const std::byte* host_src, size_t bytes) override {
    absl::StatusOr<cache::Readiness> ready = CopyAsync(device_dst, host_src, bytes);
    return ready.ok() ? ready->Wait() : ready.status();
  }

  absl::StatusOr<cache::Readiness> CopyAsync(std::byte* device_dst, const std::byte* host_src,
                                             size_t bytes) override {
    Job job;
    job.dst = device_dst;
    job.src = host_src;
    job.snapshot.assign(host_src, host_src + bytes);
    job.due = std::chrono::steady_clock::now() + delay_;
    job.fence = std::make_shared<Fence>();
    cache::Readiness ready(job.fence);
    {
      std::lock_guard lock(mu_);
      ++started_;
      queue_.push_back(std::move(job));
    }
    changed_.notify_all();
    return ready;
  }

  // While held, no copy lands.
  void Hold() {
    std::lock_guard lock(mu_);
    held_ = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu_);
      held_ = false;
    }
    changed_.notify_all();
  }
  int started() const {
    std::lock_guard lock(mu_);
    return started_;
  }
  int landed() const {
    std::lock_guard lock(mu_);
    return landed_;
  }
  int sources_overwritten() const {
    std::lock_guard lock(mu_);
    return sources_overwritten_;
  }

 private:
  class Fence : public cache::Readiness::Fence {
   public:
    bool IsReady() const override {
      std::lock_guard lock(mu_);
      return done_;
    }
    absl::Status Wait() const override {
      std::unique_lock lock(mu_);
      done_changed_.wait(lock, [&] { return done_; });
      return absl::OkStatus();
    }
    void Complete() {
      {
        std::lock_guard lock(mu_);
        done_ = true;
      }
      done_changed_.notify_all();
    }

   private:
    mutable std::mutex mu_;  // guards done_
    mutable std::condition_variable done_changed_;
    bool done_ = false;
  };

  struct Job {
    std::byte* dst = nullptr;
    const std::byte* src = nullptr;
    std::vector<std::byte> snapshot{};
    std::chrono::steady_clock::time_point due{};
    std::shared_ptr<Fence> fence{};
  };

  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      if (queue_.empty()) {
        if (stopping_) return;
        changed_.wait(lock);
        continue;
      }
      if (held_) {
        changed_.wait(lock);
        continue;
      }
      const auto due = queue_.front().due;
      if (!stopping_ && std::chrono::steady_clock::now() < due) {
        changed_.wait_until(lock, due);
        continue;
      }
      Job job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      const bool overwritten = std::memcmp(job.src, job.snapshot.data(), job.snapshot.size()) != 0;
      std::memcpy(job.dst, job.src, job.snapshot.size());
      lock.lock();
      ++landed_;
      if (overwritten) ++sources_overwritten_;
      job.fence->Complete();
    }
  }

  const std::chrono::microseconds delay_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable changed_;
  std::deque<Job> queue_;
  bool held_ = false;
  bool stopping_ = false;
  int started_ = 0;
  int landed_ = 0;
  int sources_overwritten_ = 0;
  std::thread worker_;  // last: starts after the rest is initialised
};

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_DEFERRED_COPIER_H_
