// A reader wrapper for tests that turns chosen requests into the failures a
// disk produces (DESIGN.md §4): EIO, a read that stays short (a truncated
// file), and late completions. Every decision is a pure function of the seed
// and the request's sequence number, so a single-threaded test sees the same
// faults on every run.

#include "tests/testing/fault_injecting_reader.h"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/expert_reader.h"
#include "io/posix_file.h"

namespace expertd::testing {
namespace {

// SplitMix64's finalizer: a well-mixed 64-bit hash of its input.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from the seed, the request's sequence number and which
// decision this is.
double Uniform(uint64_t seed, uint64_t sequence, uint64_t salt) {
  return static_cast<double>(Mix(Mix(seed ^ Mix(sequence)) + salt) >> 11) * 0x1.0p-53;
}

class FaultInjectingReader final : public io::ExpertReader {
 public:
  FaultInjectingReader(std::unique_ptr<io::ExpertReader> inner, const FaultOptions& options)
      : inner_(std::move(inner)), options_(options), name_(absl::StrCat("fault(", inner_->name(), ")")) {
    if (options_.delay.count() > 0) delayer_ = std::thread([this] { DelayLoop(); });
  }

  ~FaultInjectingReader() override {
    // The inner reader completes or cancels everything it holds, which may
    // queue more delayed completions; only then can the delayer drain.
    inner_.reset();
    if (delayer_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      delayer_.join();
    }
  }

  absl::string_view name() const override { return name_; }
  int queue_depth() const override { return inner_->queue_depth(); }

  absl::Status RegisterBuffers(absl::Span<const iovec> buffers) override { return inner_->RegisterBuffers(buffers); }

  void Promote(uint64_t tag) override { inner_->Promote(tag); }
  int CancelSpeculative(uint64_t tag) override { return inner_->CancelSpeculative(tag); }

  using io::ExpertReader::Submit;
  void Submit(uint64_t offset, uint64_t length, std::byte* dest, Done done, io::ReadClass read_class) override {
    uint64_t sequence;
    {
      std::lock_guard<std::mutex> lock(mu_);
      sequence = next_sequence_++;
    }
    const bool eio = (options_.fail_offset && options_.fail_offset(offset)) ||
                     Uniform(options_.seed, sequence, 1) < options_.eio_probability;
    const bool short_read = !eio && Uniform(options_.seed, sequence, 2) < options_.short_read_probability;

    // The inner reader still runs every request, so completions arrive on its
    // thread as the interface demands, never inside Submit.
    uint64_t read_length = length;
    if (short_read) {
      // Half the request, kept 4 KiB aligned so O_DIRECT accepts it.
      read_length = length / 2 / io::kDirectIoAlignment * io::kDirectIoAlignment;
    }
    inner_->Submit(offset, read_length, dest,
                   [this, offset, length, read_length, eio, short_read, done = std::move(done)](
                       absl::Status status) mutable {
                     if (status.ok() && eio) {
                       status = io::ReadErrorStatus(absl::StrCat(name_, " (injected fault)"), offset, length, EIO);
                     } else if (status.ok() && short_read) {
                       status = io::UnexpectedEofStatus(absl::StrCat(name_, " (injected short read)"), offset, length,
                                                    offset + read_length, length - read_length);
                     }
                     Finish(std::move(done), std::move(status));
                   },
                   read_class);
  }

 private:
  struct Delayed {
    std::chrono::steady_clock::time_point due;
    Done done;
    absl::Status status;
  };

  void Finish(Done done, absl::Status status) {
    if (options_.delay.count() <= 0) {
      done(std::move(status));
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Pushed in order of `due` (a constant delay after a clock read under
      // the lock), so the queue's front is always the next one due.
      delayed_.push_back({std::chrono::steady_clock::now() + options_.delay, std::move(done), std::move(status)});
    }
    cv_.notify_all();
  }

  // A thread of its own delays completions without holding up the inner
  // reader's thread, so delayed requests overlap as slow disk reads do.
  void DelayLoop() {
    io::SetCurrentThreadName("expertd-fault");
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      if (delayed_.empty()) {
        if (stopping_) return;
        cv_.wait(lock);
        continue;
      }
      if (!stopping_ && std::chrono::steady_clock::now() < delayed_.front().due) {
        cv_.wait_until(lock, delayed_.front().due);
        continue;
      }
      Delayed d = std::move(delayed_.front());
      delayed_.pop_front();
      lock.unlock();
      d.done(std::move(d.status));
      lock.lock();
    }
  }

  std::unique_ptr<io::ExpertReader> inner_;
  const FaultOptions options_;
  const std::string name_;
  std::thread delayer_;

  std::mutex mu_;  // guards the members below
  std::condition_variable cv_;
  uint64_t next_sequence_ = 0;
  std::deque<Delayed> delayed_;
  bool stopping_ = false;
};

}  // namespace

std::unique_ptr<io::ExpertReader> MakeFaultInjectingReader(std::unique_ptr<io::ExpertReader> inner,
                                                       const FaultOptions& options) {
  return std::make_unique<FaultInjectingReader>(std::move(inner), options);
}

}  // namespace expertd::testing
