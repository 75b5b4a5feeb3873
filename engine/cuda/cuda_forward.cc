#include "engine/cuda/cuda_forward.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "engine/cpu_feed_forward.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cuda/kernels.h"

namespace expertd::engine {
namespace {

namespace kc = kernels::cuda;
using kc::CudaStatus;

constexpr size_t kAlignment = 256;  // cudaMalloc's; keeps 16-byte loads aligned

size_t Aligned(size_t bytes) { return (bytes + kAlignment - 1) / kAlignment * kAlignment; }

// KV caches in VRAM. Their clearing and growth copies go on the compute
// stream (which is non-blocking: work on the legacy stream would not be
// ordered with it) on the pass's device, whatever thread asks.
class DeviceKvMemory : public KvMemory {
 public:
  DeviceKvMemory(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  bool on_host() const override { return false; }
  absl::StatusOr<std::shared_ptr<float>> Allocate(size_t floats) override {
    RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    ASSIGN_OR_RETURN(kc::DeviceBuffer buffer, kc::DeviceBuffer::Allocate(std::max<size_t>(floats, 1) * sizeof(float)));
    RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(buffer.data(), 0, buffer.size_bytes(), stream_), "clearing a KV cache"));
    auto owner = std::make_shared<kc::DeviceBuffer>(std::move(buffer));
    return std::shared_ptr<float>(owner, owner->as<float>());
  }
  absl::Status Copy(float* dst, const float* src, size_t floats) override {
    RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(dst, src, floats * sizeof(float), cudaMemcpyDeviceToDevice, stream_), "growing a KV cache"));
    // The source is freed as soon as we return.
    return CudaStatus(cudaStreamSynchronize(stream_), "growing a KV cache");
  }

 private:
  const int device_;
  const cudaStream_t stream_;
};

// Every expert uploaded with the dense weights.
class UploadedExperts : public ExpertSource {
 public:
  explicit UploadedExperts(const std::vector<std::vector<model::FeedForwardWeights>>& experts) : experts_(experts) {}
  absl::StatusOr<ExpertHandle> Acquire(int layer, int expert) override {
    ExpertHandle handle;
    handle.weights = experts_[layer][expert];
    return handle;
  }
  std::optional<ExpertHandle> TryAcquire(int layer, int expert) override { return *Acquire(layer, expert); }

 private:
  const std::vector<std::vector<model::FeedForwardWeights>>& experts_;
};

// Puts host tensors into one device allocation: a first walk over the
// model measures (Place returns null), a second copies.
class Uploader {
 public:
  absl::Status StartCopying() {
    ASSIGN_OR_RETURN(memory_, kc::DeviceBuffer::Allocate(std::max<size_t>(total_, 1)));
    copying_ = true;
    total_ = 0;
    return absl::OkStatus();
  }
  absl::StatusOr<const void*> Place(const void* host, size_t bytes) {
    const size_t offset = total_;
    total_ += Aligned(bytes);
    if (!copying_ || bytes == 0) return static_cast<const void*>(nullptr);
    std::byte* device = memory_.as<std::byte>() + offset;
    RETURN_IF_ERROR(CudaStatus(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "uploading weights"));
    return static_cast<const void*>(device);
  }
  absl::StatusOr<kernels::WeightMatrix> Matrix(const kernels::WeightMatrix& host) {
    if (host.data == nullptr) return host;  // absent (an architecture without it)
    kernels::WeightMatrix device = host;
    ASSIGN_OR_RETURN(device.data, Place(host.data, static_cast<size_t>(host.size_bytes())));
    return device;
  }
  absl::StatusOr<const float*> Vector(const std::vector<float>& host) {
    if (host.empty()) return static_cast<const float*>(nullptr);
    ASSIGN_OR_RETURN(const void* device, Place(host.data(), host.size() * sizeof(float)));
    return static_cast<const float*>(device);
  }
  absl::StatusOr<model::FeedForwardWeights> FeedForward(const model::FeedForwardWeights& host) {
    model::FeedForwardWeights device;
    ASSIGN_OR_RETURN(device.gate, Matrix(host.gate));
    ASSIGN_OR_RETURN(device.up, Matrix(host.up));
    ASSIGN_OR_RETURN(device.down, Matrix(host.down));
    return device;
  }
  size_t total() const { return total_; }
  kc::DeviceBuffer Take() { return std::move(memory_); }

 private:
  kc::DeviceBuffer memory_;
  size_t total_ = 0;
  bool copying_ = false;
};

// The first weight the pass would multiply on the GPU in a dtype its kernels
// cannot read, named with its dtype; "" when there is none (so far always:
// the GPU reads the float types and every GGML block format, which the
// upload and the VRAM tier move as plain bytes). Routed experts
// count when they run on the device: uploaded with the model (the
// checkpoint's dtypes) or cached in VRAM (the packed file's); a cache with
// no device tier runs them on the CPU, which reads every dtype. The
// embedding is gathered on the host and needs no kernel.
std::string FirstWeightTheGpuCannotRun(const model::ModelWeights& weights, const CudaForwardOptions& options) {
  std::string found;
  const auto check = [&](const kernels::WeightMatrix& m, const std::string& what) {
    if (found.empty() && m.data != nullptr && !kc::MatMulSupports(m.dtype)) {
      found = absl::StrCat(what, " (", std::string(DTypeName(m.dtype)), ")");
    }
  };
  const auto check_ff = [&](const model::FeedForwardWeights& ff, const std::string& what) {
    check(ff.gate, absl::StrCat(what, " gate"));
    check(ff.up, absl::StrCat(what, " up"));
    check(ff.down, absl::StrCat(what, " down"));
  };
  const bool upload_all = options.experts == CudaForwardOptions::Experts::kUploadAll;
  for (size_t l = 0; l < weights.layers.size(); ++l) {
    const model::LayerWeights& layer = weights.layers[l];
    const std::string name = absl::StrCat("layer ", l, "'s");
    check(layer.q, absl::StrCat(name, " q"));
    check(layer.k, absl::StrCat(name, " k"));
    check(layer.v, absl::StrCat(name, " v"));
    check(layer.o, absl::StrCat(name, " o"));
    check(layer.q_a, absl::StrCat(name, " q_a"));
    check(layer.q_b, absl::StrCat(name, " q_b"));
    check(layer.kv_a, absl::StrCat(name, " kv_a"));
    check(layer.kv_b, absl::StrCat(name, " kv_b"));
    if (!layer.is_moe) {
      check_ff(layer.dense_mlp, absl::StrCat(name, " dense MLP"));
      continue;
    }
    check(layer.router, absl::StrCat(name, " router"));
    if (layer.shared_expert) check_ff(*layer.shared_expert, absl::StrCat(name, " shared expert"));
    check(layer.shared_expert_gate, absl::StrCat(name, " shared expert gate"));
    if (upload_all) {
      for (size_t e = 0; e < layer.experts.size(); ++e) {
        check_ff(layer.experts[e], absl::StrCat(name, " expert ", e));
      }
    }
  }
  check(weights.lm_head, "the LM head");
  if (found.empty() && options.experts == CudaForwardOptions::Experts::kCacheOnDevice) {
    for (DType dtype : options.cached_expert_dtypes) {
      if (!kc::MatMulSupports(dtype)) {
        return absl::StrCat("the packed experts' ", std::string(DTypeName(dtype)), " matrices (cached in VRAM)");
      }
    }
  }
  return found;
}

// Each head's W_UK (kv_b's rows head * (nope + v) .. + nope, [nope][rank])
// transposed, [heads][rank][nope] in f32: the absorbed query W_UK^T q_nope
// is then one MatMul per head. Block formats are dequantised exactly.
std::vector<float> TransposedKeyWeights(const kernels::WeightMatrix& kv_b, const model::MlaConfig& mla, int heads) {
  const int rank = mla.kv_lora_rank, nope = mla.qk_nope_head_dim, v_dim = mla.v_head_dim;
  std::vector<float> out(static_cast<size_t>(heads) * rank * nope);
  std::vector<float> row(rank);
  const size_t row_bytes = DTypeBytes(kv_b.dtype, rank);
  const auto* base = static_cast<const std::byte*>(kv_b.data);
  for (int head = 0; head < heads; ++head) {
    for (int i = 0; i < nope; ++i) {
      kernels::ConvertToF32(kv_b.dtype, base + static_cast<size_t>(head * (nope + v_dim) + i) * row_bytes, rank,
                            row.data());
      for (int r = 0; r < rank; ++r) out[(static_cast<size_t>(head) * rank + r) * nope + i] = row[r];
    }
  }
  return out;
}

// Copies `rows` rows of `width` floats between strided layouts (strides in
// floats), on the stream.
absl::Status CopyRows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int rows, int64_t width,
                      cudaStream_t stream) {
  if (rows == 0 || width == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy2DAsync(dst, dst_stride * sizeof(float), src, src_stride * sizeof(float),
                                      width * sizeof(float), rows, cudaMemcpyDeviceToDevice, stream),
                    "copying rows");
}

float* Row(const kc::DeviceBuffer& buffer, int row, int64_t width) {
  return buffer.as<float>() + static_cast<size_t>(row) * width;
}

// Grows `buffer` to hold `count` values of T.
template <typename T>
absl::Status Ensure(kc::DeviceBuffer& buffer, size_t count) {
  const size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
  if (buffer.size_bytes() >= bytes) return absl::OkStatus();
  ASSIGN_OR_RETURN(buffer, kc::DeviceBuffer::Allocate(bytes));
  return absl::OkStatus();
}

}  // namespace

struct CudaForwardPass::DeviceWeights {
  struct Layer {
    const float* input_norm = nullptr;
    const float* post_attention_norm = nullptr;
    kernels::WeightMatrix q, k, v, o;
    // Multi-head latent attention (model::LayerWeights); w_uk_t is
    // TransposedKeyWeights of kv_b, [heads * rank][nope] f32.
    kernels::WeightMatrix q_a, q_b, kv_a, kv_b, w_uk_t;
    const float* q_a_norm = nullptr;
    const float* kv_a_norm = nullptr;
    const float* q_bias = nullptr;
    const float* k_bias = nullptr;
    const float* v_bias = nullptr;
    const float* o_bias = nullptr;
    const float* sinks = nullptr;  // [heads]: attention sinks
    const float* q_norm = nullptr;
    const float* k_norm = nullptr;
    bool is_moe = true;
    kernels::WeightMatrix router;
    const float* router_bias = nullptr;
    // gpt-oss: every routed expert's biases, [experts][ffn] and
    // [experts][hidden], uploaded with the dense weights whatever tier the
    // experts' matrices are in (model::LayerWeights keeps them resident the
    // same way), so cached experts find theirs by index.
    const float* expert_gate_bias = nullptr;
    const float* expert_up_bias = nullptr;
    const float* expert_down_bias = nullptr;
    std::optional<model::FeedForwardWeights> shared_expert;
    kernels::WeightMatrix shared_expert_gate;
    model::FeedForwardWeights dense_mlp;
  };
  std::vector<Layer> layers;
  const float* final_norm = nullptr;
  kernels::WeightMatrix lm_head;
  std::vector<std::vector<model::FeedForwardWeights>> experts;  // [layer][expert], uploaded
  kc::DeviceBuffer memory;

  // One walk over the model's weights: measuring, or copying.
  absl::Status Walk(const model::ModelWeights& host, const model::ModelConfig& config, bool with_experts,
                    Uploader& up) {
    layers.assign(host.layers.size(), Layer());
    experts.assign(host.layers.size(), {});
    for (size_t l = 0; l < host.layers.size(); ++l) {
      const model::LayerWeights& h = host.layers[l];
      Layer& d = layers[l];
      ASSIGN_OR_RETURN(d.input_norm, up.Vector(h.input_norm));
      ASSIGN_OR_RETURN(d.post_attention_norm, up.Vector(h.post_attention_norm));
      ASSIGN_OR_RETURN(d.q, up.Matrix(h.q));
      ASSIGN_OR_RETURN(d.k, up.Matrix(h.k));
      ASSIGN_OR_RETURN(d.v, up.Matrix(h.v));
      ASSIGN_OR_RETURN(d.o, up.Matrix(h.o));
      ASSIGN_OR_RETURN(d.q_a, up.Matrix(h.q_a));
      ASSIGN_OR_RETURN(d.q_b, up.Matrix(h.q_b));
      ASSIGN_OR_RETURN(d.kv_a, up.Matrix(h.kv_a));
      ASSIGN_OR_RETURN(d.kv_b, up.Matrix(h.kv_b));
      ASSIGN_OR_RETURN(d.q_a_norm, up.Vector(h.q_a_norm));
      ASSIGN_OR_RETURN(d.kv_a_norm, up.Vector(h.kv_a_norm));
      if (config.mla && h.kv_b.data != nullptr && config.mla->qk_nope_head_dim > 0) {
        const std::vector<float> w_uk_t = TransposedKeyWeights(h.kv_b, *config.mla, config.num_heads);
        ASSIGN_OR_RETURN(const float* w, up.Vector(w_uk_t));
        d.w_uk_t = kernels::WeightMatrix{DType::kF32, w, static_cast<int64_t>(config.num_heads) * config.mla->kv_lora_rank,
                                         config.mla->qk_nope_head_dim};
      }
      ASSIGN_OR_RETURN(d.q_bias, up.Vector(h.q_bias));
      ASSIGN_OR_RETURN(d.k_bias, up.Vector(h.k_bias));
      ASSIGN_OR_RETURN(d.v_bias, up.Vector(h.v_bias));
      ASSIGN_OR_RETURN(d.o_bias, up.Vector(h.o_bias));
      ASSIGN_OR_RETURN(d.sinks, up.Vector(h.sinks));
      ASSIGN_OR_RETURN(d.q_norm, up.Vector(h.q_norm));
      ASSIGN_OR_RETURN(d.k_norm, up.Vector(h.k_norm));
      d.is_moe = h.is_moe;
      if (!h.is_moe) {
        ASSIGN_OR_RETURN(d.dense_mlp, up.FeedForward(h.dense_mlp));
        continue;
      }
      ASSIGN_OR_RETURN(d.router, up.Matrix(h.router));
      ASSIGN_OR_RETURN(d.router_bias, up.Vector(h.router_bias));
      ASSIGN_OR_RETURN(d.expert_gate_bias, up.Vector(h.expert_gate_bias));
      ASSIGN_OR_RETURN(d.expert_up_bias, up.Vector(h.expert_up_bias));
      ASSIGN_OR_RETURN(d.expert_down_bias, up.Vector(h.expert_down_bias));
      if (h.shared_expert) {
        ASSIGN_OR_RETURN(d.shared_expert, up.FeedForward(*h.shared_expert));
        ASSIGN_OR_RETURN(d.shared_expert_gate, up.Matrix(h.shared_expert_gate));
      }
      if (with_experts) {
        for (const model::FeedForwardWeights& expert : h.experts) {
          ASSIGN_OR_RETURN(model::FeedForwardWeights uploaded, up.FeedForward(expert));
          experts[l].push_back(uploaded);
        }
      }
    }
    ASSIGN_OR_RETURN(final_norm, up.Vector(host.final_norm));
    ASSIGN_OR_RETURN(lm_head, up.Matrix(host.lm_head));
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<CudaForwardPass>> CudaForwardPass::Create(const model::Model& model,
                                                                         kernels::ThreadPool* pool,
                                                                         ExpertSource* experts,
                                                                         CudaForwardOptions options) {
  const bool upload_all = options.experts == CudaForwardOptions::Experts::kUploadAll;
  if (upload_all != (experts == nullptr)) {
    return absl::InvalidArgumentError("the GPU pass takes an expert source exactly when experts are cached");
  }
  if (options.experts == CudaForwardOptions::Experts::kCacheOnDevice && !experts->has_device_tier()) {
    return absl::InvalidArgumentError("experts cached in VRAM need a cache with a device (CUDA) tier");
  }
  // With latent attention every head attends to the latent: one head of
  // latent_size.
  const model::ModelConfig& config = model.config();
  if (const int width = config.mla ? config.mla->latent_size() : config.head_dim; width > kc::kMaxAttentionHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("the GPU pass attends over heads up to ", kc::kMaxAttentionHeadDim,
                                                   " values wide, this model's are ", width));
  }
  // Refused here, at load, rather than by the first MatMul of a request.
  if (const std::string unsupported = FirstWeightTheGpuCannotRun(model.weights(), options); !unsupported.empty()) {
    // Every DType has a GPU kernel today (kernels/cuda MatMulSupports); this
    // stays for a format added to the CPU first.
    return absl::UnimplementedError(absl::StrCat(
        "the GPU pass cannot run ", unsupported, ": no GPU kernel reads that type yet; run on the CPU (no GPU "
        "device), or, for routed experts, give the cache no device budget (they then run on the CPU from DRAM) or "
        "pack them in a type the GPU reads (`expertd pack --dtype bf16`)"));
  }
  std::string why_none;
  ASSIGN_OR_RETURN(int devices, kc::CudaDeviceCount(&why_none));
  if (devices == 0) return absl::FailedPreconditionError(absl::StrCat("no CUDA device: ", why_none));
  if (options.device < 0 || options.device >= devices) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device, " requested, ", devices, " present"));
  }
  std::unique_ptr<CudaForwardPass> pass(new CudaForwardPass(model, pool, experts, std::move(options)));
  RETURN_IF_ERROR(pass->Init());
  return pass;
}

CudaForwardPass::CudaForwardPass(const model::Model& model, kernels::ThreadPool* pool, ExpertSource* experts,
                                 CudaForwardOptions options)
    : model_(model),
      config_(model.config()),
      pool_(pool),
      experts_(experts),
      options_(std::move(options)),
      placement_(options_.placement),
      inv_freq_(RopeInverseFrequencies(model.config())),
      rope_attention_factor_(RopeAttentionFactor(model.config())) {
  if (config_.mla) {
    // As the CPU pass: the attention kernel scales by latent_size^-1/2,
    // the model's softmax scale is MlaSoftmaxScale.
    latent_query_scale_ = MlaSoftmaxScale(config_) * std::sqrt(static_cast<float>(config_.mla->latent_size()));
  }
}

CudaForwardPass::~CudaForwardPass() {
  if (stream_.get() != nullptr) (void)stream_.Synchronize();
}

absl::Status CudaForwardPass::Init() {
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), absl::StrCat("cudaSetDevice(", options_.device, ")")));
  ASSIGN_OR_RETURN(stream_, kc::Stream::Create());
  const bool upload_all = options_.experts == CudaForwardOptions::Experts::kUploadAll;
  weights_ = std::make_unique<DeviceWeights>();
  Uploader uploader;
  RETURN_IF_ERROR(weights_->Walk(model_.weights(), config_, upload_all, uploader));
  const size_t bytes = uploader.total();
  if (absl::Status s = uploader.StartCopying(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("uploading ", bytes >> 20, " MiB of ",
                                               upload_all ? "weights (every expert included: give a DRAM budget to "
                                                            "offload experts)"
                                                          : "dense weights",
                                               ": ", s.message()));
  }
  RETURN_IF_ERROR(weights_->Walk(model_.weights(), config_, upload_all, uploader));
  weights_->memory = uploader.Take();
  if (upload_all) {
    uploaded_experts_ = std::make_unique<UploadedExperts>(weights_->experts);
    experts_ = uploaded_experts_.get();
  }
  kv_memory_ = std::make_unique<DeviceKvMemory>(options_.device, stream_.get());
  // One expert's shapes, in the dtype the cache holds (the packed file's),
  // for execution placement.
  for (const model::LayerWeights& layer : model_.weights().layers) {
    if (!layer.is_moe || layer.experts.empty()) continue;
    expert_like_ = layer.experts[0];
    if (options_.cached_expert_slot_dtypes) {
      expert_like_.gate.dtype = options_.cached_expert_slot_dtypes->gate;
      expert_like_.up.dtype = options_.cached_expert_slot_dtypes->up;
      expert_like_.down.dtype = options_.cached_expert_slot_dtypes->down;
    }
    expert_bytes_ = expert_like_.gate.size_bytes() + expert_like_.up.size_bytes() + expert_like_.down.size_bytes();
    break;
  }
  runner_.emplace(config_, *experts_);
  if (options_.experts == CudaForwardOptions::Experts::kCacheOnDevice && options_.execution_placement) {
    runner_->SetPlacement(&placement_, expert_bytes_);
  }
  if (experts_ != nullptr) copies_seen_ = experts_->device_copies();
  // The uploads from pageable memory may still be in flight.
  RETURN_IF_ERROR(CudaStatus(cudaDeviceSynchronize(), "finishing the weight upload"));
  if (options_.experts == CudaForwardOptions::Experts::kCacheOnDevice && options_.execution_placement &&
      expert_bytes_ > 0) {
    RETURN_IF_ERROR(CalibratePlacement());
  }
  return absl::OkStatus();
}

absl::Status CudaForwardPass::CalibratePlacement() {
  // Both sides of the placement decision measured once up front, so the
  // first decisions are this machine's; running figures refine them.
  CalibrateCpuExperts(expert_like_, pool_, placement_);
  ASSIGN_OR_RETURN(kc::PinnedHostBuffer host, kc::PinnedHostBuffer::Allocate(expert_bytes_));
  ASSIGN_OR_RETURN(kc::DeviceBuffer device, kc::DeviceBuffer::Allocate(expert_bytes_));
  ASSIGN_OR_RETURN(kc::Event start, kc::Event::Create(/*timing=*/true));
  ASSIGN_OR_RETURN(kc::Event stop, kc::Event::Create(/*timing=*/true));
  std::memset(host.data(), 0, expert_bytes_);
  constexpr int kReps = 3;
  for (int r = 0; r <= kReps; ++r) {
    if (r == 1) RETURN_IF_ERROR(start.Record(stream_.get()));  // the first is a warm-up
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(device.data(), host.data(), expert_bytes_, cudaMemcpyHostToDevice, stream_.get()),
        "timing an expert copy"));
  }
  RETURN_IF_ERROR(stop.Record(stream_.get()));
  RETURN_IF_ERROR(stop.Synchronize());
  ASSIGN_OR_RETURN(float ms, stop.MillisecondsSince(start));
  placement_.RecordCopy(expert_bytes_, ms / 1e3 / kReps);
  return absl::OkStatus();
}

KvMemory& CudaForwardPass::kv_memory() { return *kv_memory_; }

uint64_t CudaForwardPass::weight_bytes() const { return weights_->memory.size_bytes(); }

absl::Status CudaForwardPass::EnsureScratch(int n, int slots, int logit_rows) {
  // Logits only for the rows that want them: a long prompt wants one.
  RETURN_IF_ERROR(Ensure<float>(logits_, static_cast<size_t>(logit_rows) * config_.vocab_size));
  if (n <= scratch_rows_ && slots <= scratch_slots_) return absl::OkStatus();
  n = std::max(n, scratch_rows_);
  slots = std::max(slots, scratch_slots_);
  const size_t h = config_.hidden_size;
  const size_t max_ffn = std::max({config_.expert_intermediate_size, config_.shared_expert_intermediate_size,
                                   config_.dense_intermediate_size});
  RETURN_IF_ERROR(Ensure<float>(residual_, n * h));
  RETURN_IF_ERROR(Ensure<float>(normed_, n * h));
  RETURN_IF_ERROR(Ensure<float>(q_, static_cast<size_t>(n) * config_.q_size()));
  RETURN_IF_ERROR(Ensure<float>(k_, static_cast<size_t>(n) * config_.kv_size()));
  RETURN_IF_ERROR(Ensure<float>(v_, static_cast<size_t>(n) * config_.kv_size()));
  int attention_width = config_.q_size();
  if (config_.mla) {
    const model::MlaConfig& mla = *config_.mla;
    attention_width = std::max(attention_width, config_.num_heads * mla.v_head_dim);
    const size_t latent_q = static_cast<size_t>(n) * config_.num_heads * mla.latent_size();
    RETURN_IF_ERROR(Ensure<float>(q_lora_, static_cast<size_t>(n) * mla.q_lora_rank));
    RETURN_IF_ERROR(Ensure<float>(latent_q_, latent_q));
    RETURN_IF_ERROR(Ensure<float>(latent_out_, latent_q));
    RETURN_IF_ERROR(
        Ensure<float>(mla_in_, static_cast<size_t>(n) * std::max(mla.qk_nope_head_dim, mla.kv_lora_rank)));
    RETURN_IF_ERROR(Ensure<float>(mla_out_, static_cast<size_t>(n) * std::max(mla.kv_lora_rank, mla.v_head_dim)));
  }
  RETURN_IF_ERROR(Ensure<float>(attention_, static_cast<size_t>(n) * attention_width));
  RETURN_IF_ERROR(Ensure<float>(block_out_, n * h));
  RETURN_IF_ERROR(Ensure<float>(rope_, static_cast<size_t>(n) * config_.head_dim));
  RETURN_IF_ERROR(Ensure<float>(router_logits_, static_cast<size_t>(n) * config_.num_experts));
  RETURN_IF_ERROR(Ensure<float>(gathered_, n * h));
  RETURN_IF_ERROR(Ensure<float>(ffn_gate_, n * max_ffn));
  RETURN_IF_ERROR(Ensure<float>(ffn_up_, n * max_ffn));
  RETURN_IF_ERROR(Ensure<float>(ffn_out_, n * h));
  RETURN_IF_ERROR(Ensure<float>(expert_out_, static_cast<size_t>(slots) * h));
  RETURN_IF_ERROR(Ensure<float>(shared_gate_, n));
  RETURN_IF_ERROR(Ensure<int32_t>(slots_by_expert_, slots));
  RETURN_IF_ERROR(Ensure<int32_t>(rows_by_expert_, slots));
  RETURN_IF_ERROR(Ensure<float>(slot_weights_, slots));
  RETURN_IF_ERROR(Ensure<int32_t>(row_slot_begin_, n + 1));
  host_rows_.resize(n * h);
  host_rope_.resize(static_cast<size_t>(n) * config_.head_dim);
  host_router_logits_.resize(static_cast<size_t>(n) * config_.num_experts);
  host_rows_by_expert_.resize(slots);
  host_row_slot_begin_.resize(n + 1);
  cpu_in_.resize(n * h);
  cpu_gate_.resize(n * max_ffn);
  cpu_up_.resize(n * max_ffn);
  cpu_out_.resize(n * h);
  scratch_rows_ = n;
  scratch_slots_ = slots;
  return absl::OkStatus();
}

absl::Status CudaForwardPass::Run(absl::Span<const int32_t> tokens, KvCache& kv, const ForwardOptions& options,
                                  std::vector<float>* logits, RoutingTrace* trace) {
  // The current device is per thread, and planning may grow KV caches.
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
  RETURN_IF_ERROR(PlanPromptRows(config_, tokens, kv, options, trace, kv_memory_.get(), &rows_));
  const int n = static_cast<int>(tokens.size());
  contiguous_ = true;
  RETURN_IF_ERROR(RunPass(tokens, options.all_logits ? 0 : n - 1, logits));
  kv.Commit(n);
  return absl::OkStatus();
}

absl::Status CudaForwardPass::Step(absl::Span<const StepRow> rows, std::vector<float>* logits) {
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"));
  RETURN_IF_ERROR(PlanStepRows(config_, rows, kv_memory_.get(), &rows_, &step_tokens_));
  contiguous_ = false;
  RETURN_IF_ERROR(RunPass(step_tokens_, 0, logits));
  for (const StepRow& row : rows) {
    if (row.appends_kv) row.kv->Commit(1);
  }
  return absl::OkStatus();
}

absl::Status CudaForwardPass::RunPass(absl::Span<const int32_t> tokens, int first_row, std::vector<float>* logits) {
  const int n = static_cast<int>(tokens.size());
  const int h = config_.hidden_size;
  runner_->BeginPass(rows_);
  RETURN_IF_ERROR(EnsureScratch(n, runner_->dispatch().num_slots(), n - first_row));

  // Embeddings and RoPE angles are computed on the host (a row lookup and
  // a few sines) and go over with one copy each.
  const kernels::WeightMatrix& embedding = model_.weights().embedding;
  for (int t = 0; t < n; ++t) {
    kernels::ConvertToF32(embedding.dtype,
                          static_cast<const std::byte*>(embedding.data) +
                              static_cast<size_t>(tokens[t]) * DTypeBytes(embedding.dtype, h),
                          h, host_rows_.data() + static_cast<size_t>(t) * h);
    float* cos_sin = host_rope_.data() + static_cast<size_t>(t) * config_.head_dim;
    RopeCosSin(inv_freq_, rows_[t].position, cos_sin);
    if (!config_.mla && rope_attention_factor_ != 1.0f) {
      // YaRN on rotate-half RoPE (gpt-oss) scales cos and sin, as the CPU
      // pass does; the latent attention's interleaved RoPE applies the
      // factor itself.
      for (int i = 0; i < config_.head_dim; ++i) cos_sin[i] *= rope_attention_factor_;
    }
  }
  cudaStream_t stream = stream_.get();
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(residual_.data(), host_rows_.data(), static_cast<size_t>(n) * h * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "copying embeddings"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(rope_.data(), host_rope_.data(),
                                             static_cast<size_t>(n) * config_.head_dim * 4, cudaMemcpyHostToDevice,
                                             stream),
                             "copying RoPE angles"));

  RETURN_IF_ERROR(runner_->RunLayers(*this));

  const int rows = n - first_row;
  RETURN_IF_ERROR(kc::RmsNorm(Row(residual_, first_row, h), weights_->final_norm, rows, h, config_.rms_norm_eps,
                              normed_.as<float>(), stream));
  RETURN_IF_ERROR(kc::MatMul(weights_->lm_head, normed_.as<float>(), rows, logits_.as<float>(), stream));
  logits->resize(static_cast<size_t>(rows) * config_.vocab_size);
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(logits->data(), logits_.data(), logits->size() * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream),
                             "copying logits"));
  return stream_.Synchronize();
}

absl::Status CudaForwardPass::Attention(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  RETURN_IF_ERROR(SelfAttention(layer_index, n));
  return kc::RmsNorm(residual_.as<float>(), weights_->layers[layer_index].post_attention_norm, n,
                     config_.hidden_size, config_.rms_norm_eps, normed_.as<float>(), stream_.get());
}

absl::Status CudaForwardPass::SelfAttention(int layer_index, int n) {
  if (config_.mla) return LatentAttention(layer_index, n);
  const DeviceWeights::Layer& layer = weights_->layers[layer_index];
  const int h = config_.hidden_size;
  const int q_size = config_.q_size();
  const int kv_size = config_.kv_size();
  const int head_dim = config_.head_dim;
  const float eps = config_.rms_norm_eps;
  cudaStream_t stream = stream_.get();

  RETURN_IF_ERROR(kc::RmsNorm(residual_.as<float>(), layer.input_norm, n, h, eps, normed_.as<float>(), stream));
  RETURN_IF_ERROR(kc::MatMul(layer.q, normed_.as<float>(), n, q_.as<float>(), stream));
  RETURN_IF_ERROR(kc::MatMul(layer.k, normed_.as<float>(), n, k_.as<float>(), stream));
  RETURN_IF_ERROR(kc::MatMul(layer.v, normed_.as<float>(), n, v_.as<float>(), stream));
  if (layer.q_bias != nullptr) RETURN_IF_ERROR(kc::AddBias(layer.q_bias, n, q_size, q_.as<float>(), stream));
  if (layer.k_bias != nullptr) RETURN_IF_ERROR(kc::AddBias(layer.k_bias, n, kv_size, k_.as<float>(), stream));
  if (layer.v_bias != nullptr) RETURN_IF_ERROR(kc::AddBias(layer.v_bias, n, kv_size, v_.as<float>(), stream));
  if (config_.qk_norm == model::QkNorm::kWholeProjection) {
    RETURN_IF_ERROR(kc::RmsNorm(q_.as<float>(), layer.q_norm, n, q_size, eps, q_.as<float>(), stream));
    RETURN_IF_ERROR(kc::RmsNorm(k_.as<float>(), layer.k_norm, n, kv_size, eps, k_.as<float>(), stream));
  } else if (config_.qk_norm == model::QkNorm::kPerHead) {
    // Every head of every row is one row of head_dim values.
    RETURN_IF_ERROR(
        kc::RmsNorm(q_.as<float>(), layer.q_norm, n * config_.num_heads, head_dim, eps, q_.as<float>(), stream));
    RETURN_IF_ERROR(
        kc::RmsNorm(k_.as<float>(), layer.k_norm, n * config_.num_kv_heads, head_dim, eps, k_.as<float>(), stream));
  }
  if (config_.clip_qkv) {
    // OLMoE clamps after the QK-norm.
    RETURN_IF_ERROR(kc::Clip(*config_.clip_qkv, static_cast<int64_t>(n) * q_size, q_.as<float>(), stream));
    RETURN_IF_ERROR(kc::Clip(*config_.clip_qkv, static_cast<int64_t>(n) * kv_size, k_.as<float>(), stream));
    RETURN_IF_ERROR(kc::Clip(*config_.clip_qkv, static_cast<int64_t>(n) * kv_size, v_.as<float>(), stream));
  }
  RETURN_IF_ERROR(kc::ApplyRope(q_.as<float>(), n, config_.num_heads, head_dim, rope_.as<float>(), stream));
  RETURN_IF_ERROR(kc::ApplyRope(k_.as<float>(), n, config_.num_kv_heads, head_dim, rope_.as<float>(), stream));

  // Sliding-window layers and attention sinks (gpt-oss); the sinks are in
  // device memory.
  const kernels::AttentionShape shape{config_.num_heads, config_.num_kv_heads, head_dim,
                                     config_.AttentionWindow(layer_index), layer.sinks};
  const size_t row_bytes = static_cast<size_t>(kv_size) * sizeof(float);
  // Writes rows [t, t + count)'s keys and values at position `at` onwards.
  auto write_kv = [&](KvCache& kv, int t, int count, int at) -> absl::Status {
    RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(kv.Keys(layer_index) + static_cast<size_t>(at) * kv_size,
                                               Row(k_, t, kv_size), count * row_bytes, cudaMemcpyDeviceToDevice,
                                               stream),
                               "writing keys to the KV cache"));
    return CudaStatus(cudaMemcpyAsync(kv.Values(layer_index) + static_cast<size_t>(at) * kv_size,
                                      Row(v_, t, kv_size), count * row_bytes, cudaMemcpyDeviceToDevice, stream),
                      "writing values to the KV cache");
  };
  RETURN_IF_ERROR(ForEachAttentionBlock(n, [&](KvCache& kv, int t, int count, int position) -> absl::Status {
    RETURN_IF_ERROR(write_kv(kv, t, count, position));
    return kc::CausalAttention(shape, Row(q_, t, q_size), count, position, kv.Keys(layer_index),
                               kv.Values(layer_index), Row(attention_, t, q_size), stream);
  }));
  RETURN_IF_ERROR(kc::MatMul(layer.o, attention_.as<float>(), n, block_out_.as<float>(), stream));
  if (layer.o_bias != nullptr) RETURN_IF_ERROR(kc::AddBias(layer.o_bias, n, h, block_out_.as<float>(), stream));
  return kc::AddRows(block_out_.as<float>(), n, h, residual_.as<float>(), stream);
}

absl::Status CudaForwardPass::ForEachAttentionBlock(
    int n, const std::function<absl::Status(KvCache& kv, int first_row, int count, int position)>& attend) {
  // One sequence's consecutive positions: one causal block.
  if (contiguous_) return attend(*rows_[0].kv, 0, n, rows_[0].position);
  // A Roster sample that does not append attends to the history plus its
  // own key and value: on one stream, writing them into the (reserved,
  // uncommitted) next position just before its attention is exactly that.
  // Appending rows go last, so the position ends up holding theirs.
  for (bool appending : {false, true}) {
    for (int t = 0; t < n; ++t) {
      const RowPlan& row = rows_[t];
      if (row.appends_kv != appending) continue;
      RETURN_IF_ERROR(attend(*row.kv, t, 1, row.position));
    }
  }
  return absl::OkStatus();
}

absl::Status CudaForwardPass::LatentAttention(int layer_index, int n) {
  const DeviceWeights::Layer& layer = weights_->layers[layer_index];
  const model::MlaConfig& mla = *config_.mla;
  const int h = config_.hidden_size;
  const int heads = config_.num_heads;
  const int nope = mla.qk_nope_head_dim;
  const int rope = mla.qk_rope_head_dim;
  const int qk = mla.qk_head_dim();
  const int rank = mla.kv_lora_rank;
  const int latent = mla.latent_size();
  const int v_dim = mla.v_head_dim;
  const int q_size = config_.q_size();
  const int64_t q_width = static_cast<int64_t>(heads) * latent;  // absorbed queries per row
  constexpr float kLatentEps = model::MlaConfig::kLatentNormEps;
  cudaStream_t stream = stream_.get();
  float* q = q_.as<float>();
  float* latents = k_.as<float>();  // [n][latent]: what the KV cache keeps
  float* latent_q = latent_q_.as<float>();
  float* latent_out = latent_out_.as<float>();
  float* part_in = mla_in_.as<float>();
  float* part_out = mla_out_.as<float>();

  RETURN_IF_ERROR(kc::RmsNorm(residual_.as<float>(), layer.input_norm, n, h, config_.rms_norm_eps,
                              normed_.as<float>(), stream));
  if (mla.q_lora_rank > 0) {
    RETURN_IF_ERROR(kc::MatMul(layer.q_a, normed_.as<float>(), n, q_lora_.as<float>(), stream));
    RETURN_IF_ERROR(
        kc::RmsNorm(q_lora_.as<float>(), layer.q_a_norm, n, mla.q_lora_rank, kLatentEps, q_lora_.as<float>(), stream));
    RETURN_IF_ERROR(kc::MatMul(layer.q_b, q_lora_.as<float>(), n, q, stream));
  } else {
    RETURN_IF_ERROR(kc::MatMul(layer.q, normed_.as<float>(), n, q, stream));
  }
  RETURN_IF_ERROR(kc::MatMul(layer.kv_a, normed_.as<float>(), n, latents, stream));
  // The latent's first kv_lora_rank values are normalised; RmsNorm reads
  // contiguous rows, so they go through part_in and back.
  RETURN_IF_ERROR(CopyRows(part_in, rank, latents, latent, n, rank, stream));
  RETURN_IF_ERROR(kc::RmsNorm(part_in, layer.kv_a_norm, n, rank, kLatentEps, part_in, stream));
  RETURN_IF_ERROR(CopyRows(latents, latent, part_in, rank, n, rank, stream));
  // RoPE on the shared key part and on every head's query part.
  RETURN_IF_ERROR(kc::InterleavedRope(latents + rank, n, latent, 1, 0, rope, rope_.as<float>(),
                                      rope_attention_factor_, stream));
  RETURN_IF_ERROR(kc::InterleavedRope(q + nope, n, q_size, heads, qk, rope, rope_.as<float>(), rope_attention_factor_,
                                      stream));

  // The absorbed query of each head: [W_UK^T q_nope | q_rope], scaled.
  RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(latent_q, 0, static_cast<size_t>(n) * q_width * sizeof(float), stream),
                             "clearing the absorbed queries"));
  for (int head = 0; head < heads; ++head) {
    if (nope > 0) {
      RETURN_IF_ERROR(CopyRows(part_in, nope, q + static_cast<int64_t>(head) * qk, q_size, n, nope, stream));
      kernels::WeightMatrix w_uk_t = layer.w_uk_t;
      w_uk_t.data = static_cast<const float*>(layer.w_uk_t.data) + static_cast<size_t>(head) * rank * nope;
      w_uk_t.rows = rank;
      RETURN_IF_ERROR(kc::MatMul(w_uk_t, part_in, n, part_out, stream));
      RETURN_IF_ERROR(CopyRows(latent_q + static_cast<int64_t>(head) * latent, q_width, part_out, rank, n, rank, stream));
    }
    RETURN_IF_ERROR(CopyRows(latent_q + static_cast<int64_t>(head) * latent + rank, q_width,
                             q + static_cast<int64_t>(head) * qk + nope, q_size, n, rope, stream));
  }
  RETURN_IF_ERROR(kc::Scale(latent_query_scale_, static_cast<int64_t>(n) * q_width, latent_q, stream));

  // Every head attends to the one latent row per position: one "KV head"
  // of latent_size whose values are the same rows (only their first
  // kv_lora_rank outputs are used).
  const kernels::AttentionShape shape{heads, 1, latent};
  auto write_latents = [&](KvCache& kv, int t, int count, int at) -> absl::Status {
    return CudaStatus(cudaMemcpyAsync(kv.Keys(layer_index) + static_cast<size_t>(at) * latent, Row(k_, t, latent),
                                      static_cast<size_t>(count) * latent * sizeof(float), cudaMemcpyDeviceToDevice,
                                      stream),
                      "writing latents to the KV cache");
  };
  RETURN_IF_ERROR(ForEachAttentionBlock(n, [&](KvCache& kv, int t, int count, int position) -> absl::Status {
    RETURN_IF_ERROR(write_latents(kv, t, count, position));
    const float* keys = kv.Keys(layer_index);
    return kc::CausalAttention(shape, latent_q + t * q_width, count, position, keys, keys, latent_out + t * q_width,
                               stream);
  }));

  // Each head's value: W_UV[head] (kv_b's rows head * (nope + v) + nope ..
  // + v, a view into the uploaded kv_b) times its attended latent.
  const size_t kv_b_row_bytes = DTypeBytes(layer.kv_b.dtype, rank);
  const int attention_width = heads * v_dim;
  for (int head = 0; head < heads; ++head) {
    RETURN_IF_ERROR(CopyRows(part_in, rank, latent_out + static_cast<int64_t>(head) * latent, q_width, n, rank, stream));
    kernels::WeightMatrix w_uv = layer.kv_b;
    w_uv.data = static_cast<const std::byte*>(layer.kv_b.data) +
                static_cast<size_t>(head * (nope + v_dim) + nope) * kv_b_row_bytes;
    w_uv.rows = v_dim;
    RETURN_IF_ERROR(kc::MatMul(w_uv, part_in, n, part_out, stream));
    RETURN_IF_ERROR(CopyRows(attention_.as<float>() + static_cast<int64_t>(head) * v_dim, attention_width, part_out,
                             v_dim, n, v_dim, stream));
  }
  RETURN_IF_ERROR(kc::MatMul(layer.o, attention_.as<float>(), n, block_out_.as<float>(), stream));
  return kc::AddRows(block_out_.as<float>(), n, h, residual_.as<float>(), stream);
}

absl::Status CudaForwardPass::FeedForward(const model::FeedForwardWeights& ff, const float* x, int m, float* out,
                                          const DeviceExpertBiases* routed) {
  cudaStream_t stream = stream_.get();
  const int64_t ffn = ff.gate.rows;
  float* gate = ffn_gate_.as<float>();
  float* up = ffn_up_.as<float>();
  RETURN_IF_ERROR(kc::MatMul(ff.gate, x, m, gate, stream));
  RETURN_IF_ERROR(kc::MatMul(ff.up, x, m, up, stream));
  // As model::LayerWeights::ExtrasOf: a routed expert of a model with the
  // clamped SwiGLU gets it, with its biases when the model has them.
  const DeviceExpertBiases biases = routed != nullptr ? *routed : DeviceExpertBiases{};
  if (routed != nullptr && config_.clamped_swiglu) {
    RETURN_IF_ERROR(kc::ClampedSwiglu(gate, up, biases.gate, biases.up, m, ffn, config_.clamped_swiglu->alpha,
                                      config_.clamped_swiglu->limit, gate, stream));
  } else {
    if (biases.gate != nullptr) RETURN_IF_ERROR(kc::AddBias(biases.gate, m, ffn, gate, stream));
    if (biases.up != nullptr) RETURN_IF_ERROR(kc::AddBias(biases.up, m, ffn, up, stream));
    RETURN_IF_ERROR(kc::SiluMul(gate, up, m * ffn, gate, stream));
  }
  RETURN_IF_ERROR(kc::MatMul(ff.down, gate, m, out, stream));
  if (biases.down != nullptr) RETURN_IF_ERROR(kc::AddBias(biases.down, m, ff.down.rows, out, stream));
  return absl::OkStatus();
}

absl::Status CudaForwardPass::UploadDispatch(const MoeDispatch& dispatch, int n) {
  // The slots grouped by expert (the dispatch's order, in which experts'
  // rows are gathered), the row of each, and each row's slot range for the
  // combine.
  absl::Span<const int32_t> grouped = dispatch.slots_by_expert();
  for (size_t i = 0; i < grouped.size(); ++i) host_rows_by_expert_[i] = dispatch.RowOfSlot(grouped[i]);
  for (int t = 0; t < n; ++t) host_row_slot_begin_[t] = dispatch.row(t).first_slot;
  host_row_slot_begin_[n] = dispatch.num_slots();
  cudaStream_t stream = stream_.get();
  const size_t slots = dispatch.num_slots();
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(slots_by_expert_.data(), grouped.data(), slots * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "copying the dispatch"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(rows_by_expert_.data(), host_rows_by_expert_.data(), slots * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "copying the dispatch"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(slot_weights_.data(), dispatch.chosen_weights().data(), slots * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "copying the gate weights"));
  return CudaStatus(cudaMemcpyAsync(row_slot_begin_.data(), host_row_slot_begin_.data(), (n + 1) * 4,
                                    cudaMemcpyHostToDevice, stream),
                    "copying the dispatch");
}

absl::Status CudaForwardPass::RunExpertOnDevice(const MoeDispatch& dispatch, int expert,
                                                const model::FeedForwardWeights& weights) {
  cudaStream_t stream = stream_.get();
  const int h = config_.hidden_size;
  const int m = static_cast<int>(dispatch.SlotsOf(expert).size());
  const int offset = dispatch.FirstIndexOf(expert);
  if (m == 0) return absl::OkStatus();
  RETURN_IF_ERROR(kc::GatherRows(normed_.as<float>(), rows_by_expert_.as<int32_t>() + offset, m, h,
                                 gathered_.as<float>(), stream));
  const DeviceWeights::Layer& layer = weights_->layers[moe_layer_];
  DeviceExpertBiases biases;
  if (layer.expert_gate_bias != nullptr) {
    const size_t ffn = static_cast<size_t>(config_.expert_intermediate_size);
    biases.gate = layer.expert_gate_bias + expert * ffn;
    biases.up = layer.expert_up_bias + expert * ffn;
    biases.down = layer.expert_down_bias + static_cast<size_t>(expert) * h;
  }
  RETURN_IF_ERROR(FeedForward(weights, gathered_.as<float>(), m, ffn_out_.as<float>(), &biases));
  return kc::ScatterRows(ffn_out_.as<float>(), slots_by_expert_.as<int32_t>() + offset, m, h,
                         expert_out_.as<float>(), stream);
}

absl::Status CudaForwardPass::RunExpertOnCpu(const MoeDispatch& dispatch, int expert,
                                             const model::FeedForwardWeights& weights) {
  const auto start = std::chrono::steady_clock::now();
  const int h = config_.hidden_size;
  absl::Span<const int32_t> slots = dispatch.SlotsOf(expert);
  const int m = static_cast<int>(slots.size());
  // host_rows_ holds the layer's gate inputs (copied back for routing).
  for (int i = 0; i < m; ++i) {
    std::copy_n(host_rows_.data() + static_cast<size_t>(dispatch.RowOfSlot(slots[i])) * h, h,
                cpu_in_.data() + static_cast<size_t>(i) * h);
  }
  CpuFeedForward(weights, cpu_in_.data(), m, cpu_gate_.data(), cpu_up_.data(), cpu_out_.data(), pool_,
                 model_.weights().layers[moe_layer_].ExtrasOf(expert, config_));
  placement_.RecordCpuCompute(expert_bytes_, m,
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  // A pageable copy returns once cpu_out_ has been staged, so it may be
  // reused; on the stream it follows the kernels already queued on ffn_out_.
  cudaStream_t stream = stream_.get();
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(ffn_out_.data(), cpu_out_.data(), static_cast<size_t>(m) * h * 4,
                                             cudaMemcpyHostToDevice, stream),
                             "copying a CPU expert's output"));
  return kc::ScatterRows(ffn_out_.as<float>(), slots_by_expert_.as<int32_t>() + dispatch.FirstIndexOf(expert), m, h,
                         expert_out_.as<float>(), stream);
}

void CudaForwardPass::RecordCopyTimings() {
  if (experts_ == nullptr) return;
  const cache::DeviceCopyStats now = experts_->device_copies();
  const uint64_t copies = now.copies - copies_seen_.copies;
  if (copies > 0) {
    placement_.RecordCopy((now.bytes - copies_seen_.bytes) / copies,
                          static_cast<double>(now.copy_ns - copies_seen_.copy_ns) / copies / 1e9);
  }
  copies_seen_ = now;
}

absl::Status CudaForwardPass::DenseFeedForward(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  RETURN_IF_ERROR(
      FeedForward(weights_->layers[layer_index].dense_mlp, normed_.as<float>(), n, block_out_.as<float>()));
  return kc::AddRows(block_out_.as<float>(), n, config_.hidden_size, residual_.as<float>(), stream_.get());
}

absl::StatusOr<RouterOutput> CudaForwardPass::Router(int layer_index) {
  const int n = static_cast<int>(rows_.size());
  const int h = config_.hidden_size;
  cudaStream_t stream = stream_.get();
  // Routing happens on the host: the cache must know the experts anyway.
  const DeviceWeights::Layer& layer = weights_->layers[layer_index];
  RETURN_IF_ERROR(kc::MatMul(layer.router, normed_.as<float>(), n, router_logits_.as<float>(), stream));
  if (layer.router_bias != nullptr) {
    RETURN_IF_ERROR(
        kc::AddBias(layer.router_bias, n, config_.num_experts, router_logits_.as<float>(), stream));
  }
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host_router_logits_.data(), router_logits_.data(),
                                             static_cast<size_t>(n) * config_.num_experts * 4,
                                             cudaMemcpyDeviceToHost, stream),
                             "copying router logits"));
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(host_rows_.data(), normed_.data(), static_cast<size_t>(n) * h * 4,
                                             cudaMemcpyDeviceToHost, stream),
                             "copying gate inputs"));
  RETURN_IF_ERROR(stream_.Synchronize());
  // host_rows_ now holds the gate inputs, which CPU experts read too.
  return RouterOutput{.logits = host_router_logits_.data(), .gate_inputs = host_rows_.data()};
}

absl::Status CudaForwardPass::Dispatched(int layer, const MoeDispatch& dispatch) {
  moe_layer_ = layer;  // whose expert biases RunExpert adds
  RETURN_IF_ERROR(UploadDispatch(dispatch, static_cast<int>(rows_.size())));
  // The copies made since the last layer, for the placement the plan decides on next.
  RecordCopyTimings();
  return absl::OkStatus();
}

absl::Status CudaForwardPass::AwaitExpert(const cache::Readiness& ready) {
  if (void* event = ready.stream_event()) {
    // The kernels queued next read the slot: they start once its copy has
    // landed, and the host goes on queueing meanwhile.
    return CudaStatus(cudaStreamWaitEvent(stream_.get(), static_cast<cudaEvent_t>(event), 0),
                      "making the compute stream wait for an expert's copy");
  }
  return ready.Wait();  // ready from the start (DRAM, uploaded), or a host-only backend
}

absl::Status CudaForwardPass::RunExpert(const MoeDispatch& dispatch, int expert, const model::FeedForwardWeights& weights,
                                        ExpertOrigin origin) {
  // Without a device tier every expert is in host memory.
  if (origin == ExpertOrigin::kHostCopy || options_.experts == CudaForwardOptions::Experts::kCacheOnHost) {
    RETURN_IF_ERROR(RunExpertOnCpu(dispatch, expert, weights));
    ++stats_.experts_on_cpu;
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(RunExpertOnDevice(dispatch, expert, weights));
  ++(origin == ExpertOrigin::kLoaded ? stats_.experts_loaded : stats_.experts_on_device);
  return absl::OkStatus();
}

absl::Status CudaForwardPass::Combine(int layer_index, const MoeDispatch& /*dispatch*/) {
  const DeviceWeights::Layer& layer = weights_->layers[layer_index];
  const int n = static_cast<int>(rows_.size());
  const int h = config_.hidden_size;
  cudaStream_t stream = stream_.get();
  // Each row's experts in rank order, weighted (the dispatch went over in
  // Dispatched); then the shared expert.
  RETURN_IF_ERROR(kc::AddWeightedSlots(expert_out_.as<float>(), slot_weights_.as<float>(),
                                       row_slot_begin_.as<int32_t>(), n, h, residual_.as<float>(), stream));
  if (layer.shared_expert) {
    // Qwen2-MoE: out += sigmoid(gate . x) * shared_expert(x); DeepSeek:
    // out += shared_experts(x).
    RETURN_IF_ERROR(FeedForward(*layer.shared_expert, normed_.as<float>(), n, ffn_out_.as<float>()));
    if (config_.shared_expert_gated) {
      RETURN_IF_ERROR(kc::MatMul(layer.shared_expert_gate, normed_.as<float>(), n, shared_gate_.as<float>(), stream));
      RETURN_IF_ERROR(kc::AddGatedRows(ffn_out_.as<float>(), shared_gate_.as<float>(), n, h, residual_.as<float>(),
                                       stream));
    } else {
      RETURN_IF_ERROR(kc::AddRows(ffn_out_.as<float>(), n, h, residual_.as<float>(), stream));
    }
  }
  return absl::OkStatus();
}

}  // namespace expertd::engine
