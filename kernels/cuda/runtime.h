#ifndef EXPERTD_KERNELS_CUDA_RUNTIME_H_
#define EXPERTD_KERNELS_CUDA_RUNTIME_H_

// Owners for CUDA runtime resources: every failure is an absl::Status with
// what was attempted, never an abort, so a machine without a driver or device
// gets an error it can report (and tests can skip on).

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace expertd::kernels::cuda {

// OK for cudaSuccess; otherwise an error naming `what` and the CUDA error.
// Out of memory is kResourceExhausted; no driver or device is
// kFailedPrecondition; a bad argument kInvalidArgument; the rest kInternal.
// Clears the runtime's last-error state for non-sticky errors.
absl::Status CudaStatus(cudaError_t error, absl::string_view what);

// The number of usable CUDA devices. No driver, a driver too old for this
// runtime, or no device is not an error: the result is 0 and, when
// `why_none` is given, it says which. Other failures are errors.
absl::StatusOr<int> CudaDeviceCount(std::string* why_none = nullptr);

// A device allocation (cudaMalloc), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  ~DeviceBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size_bytes() const { return bytes_; }

  // Synchronous copies of the first `bytes` bytes (bytes <= size_bytes()).
  absl::Status CopyFromHost(const void* host, size_t bytes);
  absl::Status CopyToHost(void* host, size_t bytes) const;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost), for staging and benchmarks.
class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  static absl::StatusOr<PinnedHostBuffer> Allocate(size_t bytes);
  PinnedHostBuffer(PinnedHostBuffer&& other) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& other) noexcept;
  ~PinnedHostBuffer();

  void* data() const { return data_; }
  size_t size_bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Pins existing host memory (cudaHostRegister) so DMA copies from it run
// asynchronously at full PCIe speed; unpinned on destruction, which must
// come before the memory is freed.
class HostRegistration {
 public:
  HostRegistration() = default;
  static absl::StatusOr<HostRegistration> Register(void* host, size_t bytes);
  HostRegistration(HostRegistration&& other) noexcept;
  HostRegistration& operator=(HostRegistration&& other) noexcept;
  ~HostRegistration();

  void* data() const { return data_; }
  size_t size_bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// A non-blocking stream (it does not synchronise with the legacy default
// stream), destroyed on destruction.
class Stream {
 public:
  Stream() = default;
  static absl::StatusOr<Stream> Create();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  ~Stream();

  cudaStream_t get() const { return stream_; }
  absl::Status Synchronize() const;
  // Later work on this stream waits for `event` (no host wait).
  absl::Status Wait(cudaEvent_t event) const;

 private:
  cudaStream_t stream_ = nullptr;
};

// An event; without timing it is the cheap kind used to order streams.
class Event {
 public:
  Event() = default;
  static absl::StatusOr<Event> Create(bool timing = false);
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  ~Event();

  cudaEvent_t get() const { return event_; }
  absl::Status Record(cudaStream_t stream) const;
  absl::Status Synchronize() const;
  // Whether the work before the last Record has finished.
  absl::StatusOr<bool> Done() const;
  // Milliseconds from `start` to this event; both timing events, both done.
  absl::StatusOr<float> MillisecondsSince(const Event& start) const;

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace expertd::kernels::cuda

#endif  // EXPERTD_KERNELS_CUDA_RUNTIME_H_
