#include "model/model_weights.h"

#include <sys/mman.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/dtype.h"

namespace expertd::model {
namespace {

// Tensor names differ per family; everything else about a layer is shared.
struct TensorNames {
  const char* router;         // relative to the layer's MoE block
  const char* moe_block;      // "mlp" or "block_sparse_moe"
  const char* expert_gate;    // gate_proj / w1
  const char* expert_up;      // up_proj / w3
  const char* expert_down;    // down_proj / w2
  bool fused_experts = false;  // gpt-oss: experts.gate_up_proj and experts.down_proj for all experts
};

TensorNames NamesFor(Architecture arch) {
  if (arch == Architecture::kMixtral) return {"gate", "block_sparse_moe", "w1", "w3", "w2"};
  if (arch == Architecture::kGptOss) return {"router", "mlp", "", "", "", true};
  return {"gate", "mlp", "gate_proj", "up_proj", "down_proj"};
}

// Where each matrix starts in the storage (a cache line; see ModelWeights).
constexpr size_t kMatrixAlignment = 64;

size_t RoundUp(size_t bytes, size_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

// Whether a gpt-oss layer's experts come split into gate, up and down
// matrices per expert with a bias tensor each (a GGUF file: llama.cpp splits
// HF's fused gate_up_proj; gguf_tensor_source.h) rather than HF's fused
// tensors. `moe` is the layer's "model.layers.N.mlp." prefix.
bool SplitExperts(const TensorSource& source, const std::string& moe) {
  return source.Has(moe + "experts.gate_proj_bias");
}

std::string ExpertPrefix(const TensorNames& names, int layer, int expert) {
  return absl::StrCat("model.layers.", layer, ".", names.moe_block, ".experts.", expert, ".");
}

// Load in two steps: every tensor is first resolved and checked, and given a
// place (matrices in the storage, vectors in a scratch buffer until they are
// converted to f32), so a bad checkpoint fails before any data is read; then
// ReadAll reads them all in one pass over each file. The targets are fields
// of the weights being built, which must not move until ReadAll.
class Loader {
 public:
  // With map_weights, matrices the source can map (TensorSource::MappedBytes)
  // point into its mapping instead of being copied; bf16_activations goes
  // on every matrix.
  explicit Loader(const TensorSource& source, const WeightLoadOptions& options = {})
      : source_(source), map_(options.map_weights), bf16_activations_(options.bf16_activations) {}

  // With read false, *out gets shape and dtype only (a non-resident expert).
  absl::Status Matrix(const std::string& name, int64_t rows, int64_t cols, WeightMatrix* out, bool read = true) {
    ASSIGN_OR_RETURN(SourceTensor tensor, source_.Get(name, {rows, cols}));
    *out = WeightMatrix{tensor.dtype, nullptr, rows, cols};
    out->bf16_activations = bf16_activations_;
    const std::byte* mapped = read && map_ ? source_.MappedBytes(tensor) : nullptr;
    if (mapped != nullptr) {
      out->data = mapped;
      mapped_.push_back({mapped, tensor.size_bytes});
      return absl::OkStatus();
    }
    if (read) {
      const size_t bytes = RoundUp(tensor.size_bytes, kMatrixAlignment);
      matrices_.push_back({std::make_unique<SourceTensor>(std::move(tensor)), out, storage_bytes_});
      storage_bytes_ += bytes;
    }
    return absl::OkStatus();
  }

  absl::Status Vector(const std::string& name, int64_t size, std::vector<float>* out) {
    return Vector(name, std::vector<int64_t>{size}, out);
  }
  // A tensor of any shape read as one flat f32 vector.
  absl::Status Vector(const std::string& name, const std::vector<int64_t>& shape, std::vector<float>* out) {
    ASSIGN_OR_RETURN(SourceTensor tensor, source_.Get(name, shape));
    int64_t size = 1;
    for (int64_t d : shape) size *= d;
    const size_t bytes = RoundUp(tensor.size_bytes, kMatrixAlignment);  // keeps each f32 vector aligned
    vectors_.push_back({std::make_unique<SourceTensor>(std::move(tensor)), size, out, scratch_bytes_});
    scratch_bytes_ += bytes;
    return absl::OkStatus();
  }

  absl::Status FeedForward(const std::string& prefix, const char* gate, const char* up, const char* down,
                           int64_t hidden, int64_t ffn, FeedForwardWeights* out, bool read = true) {
    RETURN_IF_ERROR(Matrix(absl::StrCat(prefix, gate, ".weight"), ffn, hidden, &out->gate, read));
    RETURN_IF_ERROR(Matrix(absl::StrCat(prefix, up, ".weight"), ffn, hidden, &out->up, read));
    return Matrix(absl::StrCat(prefix, down, ".weight"), hidden, ffn, &out->down, read);
  }

  // One expert of gpt-oss's fused experts (HF GptOssExperts): gate_up_proj
  // [E][hidden][2 ffn] with gate and up interleaved along its last axis,
  // down_proj [E][ffn][hidden], both [in][out] per expert. The engine's
  // matrices are [out][in]: each expert's slab is read where its gate and
  // up (or down) matrices go, then de-interleaved and transposed in place
  // (ReadAll), so no copy of the whole fused tensor is ever held.
  absl::Status FusedExpert(const std::string& moe, int expert, int64_t num_experts, int64_t hidden, int64_t ffn,
                           FeedForwardWeights* out, bool read) {
    const std::string gate_up_name = moe + "experts.gate_up_proj";
    const std::string down_name = moe + "experts.down_proj";
    // The checkpoint's MXFP4 experts (quant_method "mxfp4": gate_up_proj_blocks
    // and _scales) are stored [out][in], gate and up interleaved by row; the
    // source reads them back as MXFP4 blocks (CheckpointTensorSource).
    const bool mxfp4 = source_.Has(gate_up_name + "_blocks");
    ASSIGN_OR_RETURN(SourceTensor gate_up, mxfp4 ? source_.Get(gate_up_name, {num_experts, 2 * ffn, hidden})
                                                 : source_.Get(gate_up_name, {num_experts, hidden, 2 * ffn}));
    ASSIGN_OR_RETURN(SourceTensor down, mxfp4 ? source_.Get(down_name, {num_experts, hidden, ffn})
                                              : source_.Get(down_name, {num_experts, ffn, hidden}));
    for (const SourceTensor* t : {&gate_up, &down}) {
      if (DTypeIsQuantized(t->dtype) != mxfp4) {
        return absl::UnimplementedError(absl::StrCat(source_.path(), ": tensor '", t->name, "' is ",
                                                     std::string(DTypeName(t->dtype)),
                                                     "; fused experts must be F32, BF16, F16 or an MXFP4 pair"));
      }
    }
    out->gate = WeightMatrix{gate_up.dtype, nullptr, ffn, hidden};
    out->up = WeightMatrix{gate_up.dtype, nullptr, ffn, hidden};
    out->down = WeightMatrix{down.dtype, nullptr, hidden, ffn};
    for (WeightMatrix* m : {&out->gate, &out->up, &out->down}) m->bf16_activations = bf16_activations_;
    if (!read) return absl::OkStatus();
    const FusedKind gate_up_kind = mxfp4 ? FusedKind::kGateUpRows : FusedKind::kGateUp;
    const FusedKind down_kind = mxfp4 ? FusedKind::kDownRows : FusedKind::kDown;
    for (auto [tensor, kind] : {std::pair{&gate_up, gate_up_kind}, std::pair{&down, down_kind}}) {
      const uint64_t slab = tensor->size_bytes / num_experts;
      tensor->offset += slab * expert;
      tensor->size_bytes = slab;
      fused_.push_back({std::make_unique<SourceTensor>(std::move(*tensor)), out, storage_bytes_, kind, hidden, ffn});
      storage_bytes_ += RoundUp(slab, kMatrixAlignment);
    }
    return absl::OkStatus();
  }

  // The bytes ReadAll's storage must have.
  size_t storage_bytes() const { return storage_bytes_; }

  // Reads every planned tensor, points the matrices into storage and fills
  // the vectors.
  absl::StatusOr<std::vector<FileReadStats>> ReadAll(std::byte* storage) {
    std::vector<std::byte> scratch(scratch_bytes_);  // the vectors' stored bytes; a few KiB per layer
    std::vector<TensorSource::TensorRead> reads;
    reads.reserve(matrices_.size() + vectors_.size() + fused_.size());
    for (const PlannedMatrix& m : matrices_) reads.push_back({m.tensor.get(), storage + m.offset});
    for (const PlannedVector& v : vectors_) reads.push_back({v.tensor.get(), scratch.data() + v.offset});
    for (const PlannedFused& f : fused_) reads.push_back({f.tensor.get(), storage + f.offset});
    ASSIGN_OR_RETURN(std::vector<FileReadStats> stats, source_.ReadTensors(reads));
    for (const PlannedMatrix& m : matrices_) m.target->data = storage + m.offset;
    std::vector<std::byte> slab;  // one expert's stored slab, rearranged from this copy
    for (const PlannedFused& f : fused_) {
      std::byte* at = storage + f.offset;
      if (f.kind == FusedKind::kDownRows) {  // already [hidden][ffn]
        f.target->down.data = at;
        continue;
      }
      slab.assign(at, at + f.tensor->size_bytes);
      if (f.kind == FusedKind::kGateUpRows) {
        // stored rows gate 0, up 0, gate 1, ... -> gate [ffn][hidden], then up.
        const size_t row = f.tensor->size_bytes / (2 * f.ffn);
        std::byte* up = at + row * f.ffn;
        for (int64_t j = 0; j < f.ffn; ++j) {
          std::memcpy(at + row * j, slab.data() + row * (2 * j), row);
          std::memcpy(up + row * j, slab.data() + row * (2 * j + 1), row);
        }
        f.target->gate.data = at;
        f.target->up.data = up;
        continue;
      }
      const size_t element = static_cast<size_t>(DTypeBytes(f.tensor->dtype, 1));
      const int64_t hidden = f.hidden, ffn = f.ffn;
      if (f.kind == FusedKind::kGateUp) {
        // stored [hidden][ffn][gate, up] -> gate [ffn][hidden], then up.
        std::byte* up = at + static_cast<size_t>(ffn * hidden) * element;
        for (int64_t i = 0; i < hidden; ++i) {
          for (int64_t j = 0; j < ffn; ++j) {
            const std::byte* pair = slab.data() + static_cast<size_t>((i * ffn + j) * 2) * element;
            std::memcpy(at + static_cast<size_t>(j * hidden + i) * element, pair, element);
            std::memcpy(up + static_cast<size_t>(j * hidden + i) * element, pair + element, element);
          }
        }
        f.target->gate.data = at;
        f.target->up.data = up;
      } else {
        // stored [ffn][hidden] -> [hidden][ffn].
        for (int64_t j = 0; j < ffn; ++j) {
          for (int64_t i = 0; i < hidden; ++i) {
            std::memcpy(at + static_cast<size_t>(i * ffn + j) * element,
                        slab.data() + static_cast<size_t>(j * hidden + i) * element, element);
          }
        }
        f.target->down.data = at;
      }
    }
    for (const PlannedVector& v : vectors_) {
      v.target->resize(v.size);
      kernels::ConvertToF32(v.tensor->dtype, scratch.data() + v.offset, v.size, v.target->data());
    }
    if (!mapped_.empty()) {
      const auto start = std::chrono::steady_clock::now();
      const uint64_t mapped_bytes = PopulateMapped();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      auto file = std::find_if(stats.begin(), stats.end(), [&](const FileReadStats& f) { return f.path == source_.path(); });
      if (file == stats.end()) file = stats.insert(stats.end(), FileReadStats{.path = source_.path()});
      file->mapped_bytes += mapped_bytes;
      file->seconds += seconds;
    }
    return stats;
  }

  // Whether any matrix points into the source's mapping.
  bool mapped_any() const { return !mapped_.empty(); }

 private:
  // Tensors are held by pointer: TensorRead points at them while the
  // vectors of plans grow.
  struct PlannedMatrix {
    std::unique_ptr<SourceTensor> tensor;
    WeightMatrix* target;
    size_t offset;  // in the storage
  };
  struct PlannedVector {
    std::unique_ptr<SourceTensor> tensor;
    int64_t size;
    std::vector<float>* target;
    size_t offset;  // in the scratch buffer
  };

  // kGateUp, kDown: HF's [in][out] slabs (f32/bf16/f16), transposed;
  // kGateUpRows, kDownRows: MXFP4 slabs, already [out][in].
  enum class FusedKind { kGateUp, kDown, kGateUpRows, kDownRows };
  struct PlannedFused {
    std::unique_ptr<SourceTensor> tensor;  // one expert's slab of the fused tensor
    FeedForwardWeights* target;
    size_t offset;  // in the storage
    FusedKind kind;
    int64_t hidden, ffn;
  };

  // Faults every page of the mapped matrices in now (MADV_POPULATE_READ,
  // or a read per page on kernels before 5.14), so the first request does
  // not pay for a page fault per 4 KiB of weights. Returns the bytes mapped
  // (each page once).
  uint64_t PopulateMapped() const {
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<std::pair<uintptr_t, uintptr_t>> ranges;  // page-aligned [begin, end)
    ranges.reserve(mapped_.size());
    for (const MappedMatrix& m : mapped_) {
      const auto begin = reinterpret_cast<uintptr_t>(m.data);
      ranges.push_back({begin / page * page, RoundUp(begin + m.bytes, page)});
    }
    std::sort(ranges.begin(), ranges.end());
    std::vector<std::pair<uintptr_t, uintptr_t>> merged;
    for (const auto& range : ranges) {
      if (!merged.empty() && range.first <= merged.back().second) {
        merged.back().second = std::max(merged.back().second, range.second);
      } else {
        merged.push_back(range);
      }
    }
    uint64_t total = 0;
    for (const auto& [begin, end] : merged) {
      total += end - begin;
      void* at = reinterpret_cast<void*>(begin);
      if (::madvise(at, end - begin, kMadvPopulateRead) == 0) continue;
      // Older kernels: one read per page does the same, more slowly (a
      // volatile read is never optimised away).
      for (uintptr_t p = begin; p < end; p += page) (void)*reinterpret_cast<const volatile uint8_t*>(p);
    }
    return total;
  }
  // MADV_POPULATE_READ (Linux 5.14), spelt out for older headers.
  static constexpr int kMadvPopulateRead = 22;

  struct MappedMatrix {
    const std::byte* data;
    size_t bytes;
  };

  const TensorSource& source_;
  const bool map_;
  const bool bf16_activations_;
  std::vector<MappedMatrix> mapped_;
  std::vector<PlannedFused> fused_;
  std::vector<PlannedMatrix> matrices_;
  std::vector<PlannedVector> vectors_;
  size_t storage_bytes_ = 0;
  size_t scratch_bytes_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> ModelWeights::Load(const Checkpoint& checkpoint, const ModelConfig& config,
                                                const WeightLoadOptions& options,
                                                std::vector<FileReadStats>* read_stats) {
  return Load(CheckpointTensorSource(checkpoint), config, options, read_stats);
}

absl::StatusOr<ModelWeights> ModelWeights::Load(const TensorSource& checkpoint, const ModelConfig& config,
                                                const WeightLoadOptions& options,
                                                std::vector<FileReadStats>* read_stats) {
  Loader load(checkpoint, options);
  const TensorNames names = NamesFor(config.architecture);
  const int64_t hidden = config.hidden_size;
  ModelWeights weights;
  RETURN_IF_ERROR(load.Matrix("model.embed_tokens.weight", config.vocab_size, hidden, &weights.embedding));
  RETURN_IF_ERROR(load.Vector("model.norm.weight", hidden, &weights.final_norm));
  const bool tied = config.tie_word_embeddings && !checkpoint.Has("lm_head.weight");
  if (!tied) RETURN_IF_ERROR(load.Matrix("lm_head.weight", config.vocab_size, hidden, &weights.lm_head));

  weights.layers.resize(config.num_layers);
  for (int i = 0; i < config.num_layers; ++i) {
    LayerWeights& layer = weights.layers[i];
    const std::string prefix = absl::StrCat("model.layers.", i, ".");
    const std::string attn = prefix + "self_attn.";
    RETURN_IF_ERROR(load.Vector(prefix + "input_layernorm.weight", hidden, &layer.input_norm));
    RETURN_IF_ERROR(load.Vector(prefix + "post_attention_layernorm.weight", hidden, &layer.post_attention_norm));
    if (config.mla) {
      const MlaConfig& mla = *config.mla;
      if (mla.q_lora_rank > 0) {
        RETURN_IF_ERROR(load.Matrix(attn + "q_a_proj.weight", mla.q_lora_rank, hidden, &layer.q_a));
        RETURN_IF_ERROR(load.Vector(attn + "q_a_layernorm.weight", mla.q_lora_rank, &layer.q_a_norm));
        RETURN_IF_ERROR(load.Matrix(attn + "q_b_proj.weight", config.q_size(), mla.q_lora_rank, &layer.q_b));
      } else {
        RETURN_IF_ERROR(load.Matrix(attn + "q_proj.weight", config.q_size(), hidden, &layer.q));
      }
      RETURN_IF_ERROR(load.Matrix(attn + "kv_a_proj_with_mqa.weight", mla.latent_size(), hidden, &layer.kv_a));
      RETURN_IF_ERROR(load.Vector(attn + "kv_a_layernorm.weight", mla.kv_lora_rank, &layer.kv_a_norm));
      RETURN_IF_ERROR(load.Matrix(attn + "kv_b_proj.weight",
                                  int64_t{config.num_heads} * (mla.qk_nope_head_dim + mla.v_head_dim),
                                  mla.kv_lora_rank, &layer.kv_b));
      RETURN_IF_ERROR(
          load.Matrix(attn + "o_proj.weight", hidden, int64_t{config.num_heads} * mla.v_head_dim, &layer.o));
    } else {
      RETURN_IF_ERROR(load.Matrix(attn + "q_proj.weight", config.q_size(), hidden, &layer.q));
      RETURN_IF_ERROR(load.Matrix(attn + "k_proj.weight", config.kv_size(), hidden, &layer.k));
      RETURN_IF_ERROR(load.Matrix(attn + "v_proj.weight", config.kv_size(), hidden, &layer.v));
      RETURN_IF_ERROR(load.Matrix(attn + "o_proj.weight", hidden, config.q_size(), &layer.o));
    }
    if (config.attention_bias) {
      RETURN_IF_ERROR(load.Vector(attn + "q_proj.bias", config.q_size(), &layer.q_bias));
      RETURN_IF_ERROR(load.Vector(attn + "k_proj.bias", config.kv_size(), &layer.k_bias));
      RETURN_IF_ERROR(load.Vector(attn + "v_proj.bias", config.kv_size(), &layer.v_bias));
    }
    if (config.attention_output_bias) RETURN_IF_ERROR(load.Vector(attn + "o_proj.bias", hidden, &layer.o_bias));
    if (config.attention_sinks) RETURN_IF_ERROR(load.Vector(attn + "sinks", config.num_heads, &layer.sinks));
    if (config.qk_norm == QkNorm::kWholeProjection) {
      RETURN_IF_ERROR(load.Vector(attn + "q_norm.weight", config.q_size(), &layer.q_norm));
      RETURN_IF_ERROR(load.Vector(attn + "k_norm.weight", config.kv_size(), &layer.k_norm));
    } else if (config.qk_norm == QkNorm::kPerHead) {
      RETURN_IF_ERROR(load.Vector(attn + "q_norm.weight", config.head_dim, &layer.q_norm));
      RETURN_IF_ERROR(load.Vector(attn + "k_norm.weight", config.head_dim, &layer.k_norm));
    }

    layer.is_moe = config.layer_is_moe[i];
    const std::string moe = absl::StrCat(prefix, names.moe_block, ".");
    if (!layer.is_moe) {
      RETURN_IF_ERROR(load.FeedForward(prefix + "mlp.", "gate_proj", "up_proj", "down_proj", hidden,
                                       config.dense_intermediate_size, &layer.dense_mlp));
      continue;
    }
    RETURN_IF_ERROR(load.Matrix(moe + names.router + ".weight", config.num_experts, hidden, &layer.router));
    if (config.router_bias) {
      RETURN_IF_ERROR(load.Vector(moe + names.router + ".bias", config.num_experts, &layer.router_bias));
    }
    layer.experts.resize(config.num_experts);
    if (names.fused_experts && SplitExperts(checkpoint, moe)) {
      const int64_t ffn = config.expert_intermediate_size;
      RETURN_IF_ERROR(load.Vector(moe + "experts.gate_proj_bias", {config.num_experts, ffn}, &layer.expert_gate_bias));
      RETURN_IF_ERROR(load.Vector(moe + "experts.up_proj_bias", {config.num_experts, ffn}, &layer.expert_up_bias));
      RETURN_IF_ERROR(load.Vector(moe + "experts.down_proj_bias", {config.num_experts, hidden},
                                  &layer.expert_down_bias));
      for (int e = 0; e < config.num_experts; ++e) {
        RETURN_IF_ERROR(load.FeedForward(ExpertPrefix(names, i, e), "gate_proj", "up_proj", "down_proj", hidden, ffn,
                                         &layer.experts[e], options.resident_experts));
      }
      continue;
    }
    if (names.fused_experts) {
      const int64_t ffn = config.expert_intermediate_size;
      // Interleaved as stored ([E][gate, up pairs]); split after ReadAll.
      RETURN_IF_ERROR(load.Vector(moe + "experts.gate_up_proj_bias", {config.num_experts, 2 * ffn},
                                  &layer.expert_up_bias));
      RETURN_IF_ERROR(load.Vector(moe + "experts.down_proj_bias", {config.num_experts, hidden},
                                  &layer.expert_down_bias));
      for (int e = 0; e < config.num_experts; ++e) {
        RETURN_IF_ERROR(load.FusedExpert(moe, e, config.num_experts, hidden, ffn, &layer.experts[e],
                                         options.resident_experts));
      }
      continue;
    }
    for (int e = 0; e < config.num_experts; ++e) {
      RETURN_IF_ERROR(load.FeedForward(ExpertPrefix(names, i, e), names.expert_gate, names.expert_up,
                                       names.expert_down, hidden, config.expert_intermediate_size,
                                       &layer.experts[e], options.resident_experts));
    }
    if (config.shared_expert_intermediate_size > 0) {
      // Qwen2-MoE's one gated shared_expert; DeepSeek's shared_experts, n
      // of them fused into one MLP, ungated.
      const char* shared = config.shared_expert_gated ? "shared_expert." : "shared_experts.";
      RETURN_IF_ERROR(load.FeedForward(moe + shared, "gate_proj", "up_proj", "down_proj", hidden,
                                       config.shared_expert_intermediate_size, &layer.shared_expert.emplace()));
      if (config.shared_expert_gated) {
        RETURN_IF_ERROR(load.Matrix(moe + "shared_expert_gate.weight", 1, hidden, &layer.shared_expert_gate));
      }
    }
  }

  auto storage = io::AlignedBuffer::Allocate(load.storage_bytes());
  if (!storage.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", load.storage_bytes(),
                                                     " bytes for the weights of ", checkpoint.path(), ": ",
                                                     storage.status().message()));
  }
  weights.storage = std::move(*storage);
  // Huge pages where the kernel has them (THP "madvise" or "always"): the
  // copy then faults once per 2 MiB instead of once per 4 KiB, which more
  // than halves the load of the bundled model's 7.5 MiB from page cache
  // (3 ms instead of 8), and the matmuls walk the weights with fewer TLB
  // misses. Only advice: the load works the same without it.
  if (weights.storage.size() > 0) {
    (void)::madvise(weights.storage.data(), weights.storage.size(), MADV_HUGEPAGE);
  }
  ASSIGN_OR_RETURN(std::vector<FileReadStats> stats, load.ReadAll(weights.storage.data()));
  if (load.mapped_any()) weights.mapping = checkpoint.MappingOwner();
  if (tied) weights.lm_head = weights.embedding;
  for (LayerWeights& layer : weights.layers) {
    if (layer.expert_up_bias.empty() || !layer.expert_gate_bias.empty()) continue;  // none, or split already
    // gate_up_proj_bias [E][ffn][gate, up] -> gate [E][ffn] and up [E][ffn].
    const std::vector<float> interleaved = std::move(layer.expert_up_bias);
    layer.expert_gate_bias.resize(interleaved.size() / 2);
    layer.expert_up_bias.resize(interleaved.size() / 2);
    for (size_t i = 0; i < interleaved.size() / 2; ++i) {
      layer.expert_gate_bias[i] = interleaved[2 * i];
      layer.expert_up_bias[i] = interleaved[2 * i + 1];
    }
  }
  if (read_stats != nullptr) *read_stats = std::move(stats);
  return weights;
}

absl::StatusOr<FeedForwardWeights> ReadRoutedExpert(const Checkpoint& checkpoint, const ModelConfig& config,
                                                    int layer, int expert, std::vector<std::byte>& storage) {
  return ReadRoutedExpert(CheckpointTensorSource(checkpoint), config, layer, expert, storage);
}

absl::StatusOr<FeedForwardWeights> ReadRoutedExpert(const TensorSource& checkpoint, const ModelConfig& config,
                                                    int layer, int expert, std::vector<std::byte>& storage) {
  if (layer < 0 || layer >= config.num_layers || !config.layer_is_moe[layer] || expert < 0 ||
      expert >= config.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("no routed expert ", expert, " in layer ", layer, " of ",
                                                   checkpoint.path()));
  }
  const TensorNames names = NamesFor(config.architecture);
  Loader load(checkpoint);
  FeedForwardWeights weights;
  const std::string moe = absl::StrCat("model.layers.", layer, ".mlp.");
  if (names.fused_experts && !SplitExperts(checkpoint, moe)) {
    RETURN_IF_ERROR(load.FusedExpert(moe, expert, config.num_experts,
                                     config.hidden_size, config.expert_intermediate_size, &weights, true));
    storage.resize(load.storage_bytes());
    RETURN_IF_ERROR(load.ReadAll(storage.data()).status());
    return weights;
  }
  const bool split = names.fused_experts;  // gpt-oss's experts as GGUF splits them
  RETURN_IF_ERROR(load.FeedForward(ExpertPrefix(names, layer, expert), split ? "gate_proj" : names.expert_gate,
                                   split ? "up_proj" : names.expert_up, split ? "down_proj" : names.expert_down,
                                   config.hidden_size, config.expert_intermediate_size, &weights));
  storage.resize(load.storage_bytes());
  RETURN_IF_ERROR(load.ReadAll(storage.data()).status());
  return weights;
}

}  // namespace expertd::model
