#include "kernels/cuda/runtime.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace expertd::kernels::cuda {
namespace {

bool NoDriverOrDevice(cudaError_t error) {
  return error == cudaErrorNoDevice || error == cudaErrorInsufficientDriver ||
         error == cudaErrorInitializationError || error == cudaErrorCompatNotSupportedOnDevice ||
         error == cudaErrorSystemDriverMismatch || error == cudaErrorDevicesUnavailable;
}

}  // namespace

absl::Status CudaStatus(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  // Non-sticky errors stay in the runtime's last-error slot otherwise and
  // would be reported again by an unrelated later launch check.
  (void)cudaGetLastError();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  if (NoDriverOrDevice(error)) return absl::FailedPreconditionError(message);
  if (error == cudaErrorInvalidValue) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

absl::StatusOr<int> CudaDeviceCount(std::string* why_none) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error == cudaSuccess && count > 0) return count;
  if (error == cudaSuccess || NoDriverOrDevice(error)) {
    if (why_none != nullptr) {
      *why_none = error == cudaSuccess
                      ? std::string("the CUDA driver reports no devices")
                      : absl::StrCat("cudaGetDeviceCount failed with ", cudaGetErrorName(error), " (",
                                     cudaGetErrorString(error), ")");
    }
    (void)cudaGetLastError();
    return 0;
  }
  return CudaStatus(error, "cudaGetDeviceCount");
}

// --- DeviceBuffer ---

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0) return buffer;
  if (absl::Status s = CudaStatus(cudaMalloc(&buffer.data_, bytes), absl::StrCat("cudaMalloc of ", bytes, " bytes"));
      !s.ok()) {
    buffer.data_ = nullptr;
    return s;
  }
  buffer.bytes_ = bytes;
  return buffer;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) (void)cudaFree(data_);
}

absl::Status DeviceBuffer::CopyFromHost(const void* host, size_t bytes) {
  if (bytes > bytes_) {
    return absl::InvalidArgumentError(absl::StrCat("copy of ", bytes, " bytes into a ", bytes_, "-byte device buffer"));
  }
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy host to device");
}

absl::Status DeviceBuffer::CopyToHost(void* host, size_t bytes) const {
  if (bytes > bytes_) {
    return absl::InvalidArgumentError(absl::StrCat("copy of ", bytes, " bytes out of a ", bytes_, "-byte device buffer"));
  }
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(host, data_, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy device to host");
}

// --- PinnedHostBuffer ---

absl::StatusOr<PinnedHostBuffer> PinnedHostBuffer::Allocate(size_t bytes) {
  PinnedHostBuffer buffer;
  if (bytes == 0) return buffer;
  if (absl::Status s =
          CudaStatus(cudaMallocHost(&buffer.data_, bytes), absl::StrCat("cudaMallocHost of ", bytes, " bytes"));
      !s.ok()) {
    buffer.data_ = nullptr;
    return s;
  }
  buffer.bytes_ = bytes;
  return buffer;
}

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& other) noexcept { *this = std::move(other); }

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaFreeHost(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (data_ != nullptr) (void)cudaFreeHost(data_);
}

// --- HostRegistration ---

absl::StatusOr<HostRegistration> HostRegistration::Register(void* host, size_t bytes) {
  HostRegistration registration;
  if (host == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("cudaHostRegister of an empty range");
  }
  if (absl::Status s = CudaStatus(cudaHostRegister(host, bytes, cudaHostRegisterDefault),
                                  absl::StrCat("cudaHostRegister of ", bytes, " bytes"));
      !s.ok()) {
    return s;
  }
  registration.data_ = host;
  registration.bytes_ = bytes;
  return registration;
}

HostRegistration::HostRegistration(HostRegistration&& other) noexcept { *this = std::move(other); }

HostRegistration& HostRegistration::operator=(HostRegistration&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) (void)cudaHostUnregister(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

HostRegistration::~HostRegistration() {
  if (data_ != nullptr) (void)cudaHostUnregister(data_);
}

// --- Stream ---

absl::StatusOr<Stream> Stream::Create() {
  Stream stream;
  if (absl::Status s = CudaStatus(cudaStreamCreateWithFlags(&stream.stream_, cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags");
      !s.ok()) {
    stream.stream_ = nullptr;
    return s;
  }
  return stream;
}

Stream::Stream(Stream&& other) noexcept { *this = std::move(other); }

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

Stream::~Stream() {
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

absl::Status Stream::Synchronize() const {
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

absl::Status Stream::Wait(cudaEvent_t event) const {
  return CudaStatus(cudaStreamWaitEvent(stream_, event, 0), "cudaStreamWaitEvent");
}

// --- Event ---

absl::StatusOr<Event> Event::Create(bool timing) {
  Event event;
  const unsigned flags = timing ? cudaEventDefault : cudaEventDisableTiming;
  if (absl::Status s = CudaStatus(cudaEventCreateWithFlags(&event.event_, flags), "cudaEventCreateWithFlags");
      !s.ok()) {
    event.event_ = nullptr;
    return s;
  }
  return event;
}

Event::Event(Event&& other) noexcept { *this = std::move(other); }

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

absl::Status Event::Record(cudaStream_t stream) const {
  return CudaStatus(cudaEventRecord(event_, stream), "cudaEventRecord");
}

absl::Status Event::Synchronize() const { return CudaStatus(cudaEventSynchronize(event_), "cudaEventSynchronize"); }

absl::StatusOr<bool> Event::Done() const {
  const cudaError_t error = cudaEventQuery(event_);
  if (error == cudaSuccess) return true;
  if (error == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return CudaStatus(error, "cudaEventQuery");
}

absl::StatusOr<float> Event::MillisecondsSince(const Event& start) const {
  float ms = 0.0f;
  if (absl::Status s = CudaStatus(cudaEventElapsedTime(&ms, start.event_, event_), "cudaEventElapsedTime"); !s.ok()) {
    return s;
  }
  return ms;
}

}  // namespace expertd::kernels::cuda
