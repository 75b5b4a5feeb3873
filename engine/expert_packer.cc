#include "engine/expert_packer.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "io/expert_bundle.h"
#include "io/expert_file.h"
#include "kernels/cpu/dtype.h"
#include "kernels/cpu/quant_blocks.h"

namespace expertd::engine {
namespace {

// Writes matrix w into its place `m` of the bundle at `bundle`, in m's
// dtype; a matching dtype copies bytes unchanged, so a "keep" pack computes
// bit-identically to the checkpoint.
absl::Status AppendMatrix(const kernels::WeightMatrix& w, const io::BundleMatrix& m, std::vector<float>& scratch,
                          std::byte* bundle) {
  const DType target = m.dtype;
  if (w.rows != m.rows || w.cols != m.cols) {
    // The config's sizes give the bundle; the checkpoint's shapes were checked
    // against them at load, so this is a bug, not bad input.
    return absl::InternalError(absl::StrCat("expert matrix is ", w.rows, "x", w.cols, ", its bundle place ", m.rows,
                                            "x", m.cols));
  }
  std::byte* out = bundle + m.offset_bytes;
  const int64_t count = w.rows * w.cols;
  if (w.dtype == target) {
    std::memcpy(out, w.data, static_cast<size_t>(w.size_bytes()));
    return absl::OkStatus();
  }
  if (target != DType::kF32 && target != DType::kBF16 && !DTypeIsQuantized(target)) {
    // ParsePackDtype offers no other target; never write bf16 bits under another dtype's name.
    return absl::UnimplementedError(absl::StrCat("packing experts as ", std::string(DTypeName(target)),
                                                 " is not supported (choose ", PackDtypeChoices(), ")"));
  }
  scratch.resize(count);
  kernels::DequantizeRow(w.dtype, w.data, count, scratch.data());
  if (DTypeIsQuantized(target)) {
    // Row by row, each quantised on its own (the file's rows are whole
    // blocks: ExpertFileWriter checked the widths).
    const int64_t row_bytes = DTypeBytes(target, w.cols);
    for (int64_t r = 0; r < w.rows; ++r) {
      kernels::QuantizeRow(target, scratch.data() + r * w.cols, w.cols, out + r * row_bytes);
    }
    return absl::OkStatus();
  }
  if (target == DType::kF32) {
    std::memcpy(out, scratch.data(), count * sizeof(float));
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t bits = kernels::F32ToBF16(scratch[i]);
    std::memcpy(out + 2 * i, &bits, 2);
  }
  return absl::OkStatus();
}

}  // namespace

std::string PackDtypeChoices() {
  std::string choices = "keep";
  for (DType dtype : kAllDTypes) {
    if (dtype != DType::kF16) absl::StrAppend(&choices, ", ", std::string(DTypeName(dtype)));
  }
  return choices;
}

absl::StatusOr<std::optional<DType>> ParsePackDtype(absl::string_view name) {
  if (name == "keep") return std::optional<DType>();
  // AppendMatrix converts to these (f16 is kept as it is, never converted to).
  const std::optional<DType> dtype = DTypeFromName(std::string_view(name.data(), name.size()));
  if (dtype.has_value() && *dtype != DType::kF16) return dtype;
  return absl::InvalidArgumentError(absl::StrCat("unknown pack dtype '", name, "' (choose ", PackDtypeChoices(), ")"));
}

namespace {

// Each expert's dtypes, known from its (layer, expert) and its checkpoint
// matrices' dtypes, before its bytes are read.
using DtypesOf = std::function<absl::StatusOr<io::BundleDtypes>(int layer, int expert, const model::FeedForwardWeights& e)>;

absl::Status PackExpertsAs(const model::Model& model, const std::string& path, const DtypesOf& dtypes_of,
                           const std::function<void(int done, int total)>& progress) {
  const model::ModelConfig& config = model.config();
  const model::ModelWeights& weights = model.weights();
  int first_moe = -1;
  int total = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!weights.layers[layer].is_moe) continue;
    if (first_moe < 0) first_moe = layer;
    total += config.num_experts;
  }
  if (first_moe < 0) return absl::InvalidArgumentError(absl::StrCat(model.dir(), " has no MoE layers to pack"));

  // The slot holds the widest dtype of each matrix over all experts, so
  // every bundle fits it; the cache's slots are all this size.
  ASSIGN_OR_RETURN(io::BundleDtypes slot, dtypes_of(first_moe, 0, weights.layers[first_moe].experts[0]));
  const auto widest = [](DType& into, DType candidate, int64_t row) {
    if (DTypeBytes(candidate, row) > DTypeBytes(into, row)) into = candidate;
  };
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!weights.layers[layer].is_moe) continue;
    for (int e = 0; e < config.num_experts; ++e) {
      ASSIGN_OR_RETURN(const io::BundleDtypes d, dtypes_of(layer, e, weights.layers[layer].experts[e]));
      widest(slot.gate, d.gate, config.hidden_size);
      widest(slot.up, d.up, config.hidden_size);
      widest(slot.down, d.down, config.expert_intermediate_size);
    }
  }

  io::ExpertFileLayout layout;
  layout.model_fingerprint = model.fingerprint();
  layout.dtypes = slot;
  layout.num_layers = config.num_layers;
  layout.num_experts = config.num_experts;
  layout.hidden_size = config.hidden_size;
  layout.intermediate_size = config.expert_intermediate_size;
  ASSIGN_OR_RETURN(auto writer, io::ExpertFileWriter::Create(path, layout));

  // A model loaded for offloading holds no expert bytes: they are read from
  // its shards, opened for the packing only (and refused if they changed
  // since the load, as the packed experts must match the dense weights).
  std::unique_ptr<model::TensorSource> checkpoint;
  std::vector<std::byte> expert_bytes;
  if (!model.resident_experts()) {
    ASSIGN_OR_RETURN(checkpoint, model.ReopenTensorSource());
  }

  std::vector<std::byte> bundle(layout.expert_bytes());
  std::vector<float> scratch;
  int done = 0;
  for (int layer = 0; layer < config.num_layers; ++layer) {
    if (!weights.layers[layer].is_moe) continue;
    for (int e = 0; e < config.num_experts; ++e) {
      model::FeedForwardWeights expert = weights.layers[layer].experts[e];
      if (checkpoint != nullptr) {
        ASSIGN_OR_RETURN(expert, model::ReadRoutedExpert(*checkpoint, config, layer, e, expert_bytes));
      }
      ASSIGN_OR_RETURN(const io::BundleDtypes dtypes, dtypes_of(layer, e, expert));
      const io::BundleLayout bundle_layout =
          io::ExpertBundleLayout(dtypes, config.hidden_size, config.expert_intermediate_size);
      RETURN_IF_ERROR(AppendMatrix(expert.gate, bundle_layout.gate, scratch, bundle.data()));
      RETURN_IF_ERROR(AppendMatrix(expert.up, bundle_layout.up, scratch, bundle.data()));
      RETURN_IF_ERROR(AppendMatrix(expert.down, bundle_layout.down, scratch, bundle.data()));
      RETURN_IF_ERROR(writer->Add(layer, e, dtypes, absl::MakeConstSpan(bundle.data(), bundle_layout.bytes)));
      if (progress) progress(++done, total);
    }
  }
  return writer->Finish();
}

}  // namespace

absl::Status PackExperts(const model::Model& model, const std::string& path, std::optional<DType> dtype,
                         const std::function<void(int done, int total)>& progress) {
  // Each expert's matrices in `dtype`, or with "keep" in the checkpoint's
  // own (a Q4_K_M GGUF: q4_k gate and up, q6_k or q4_k down by layer).
  return PackExpertsAs(
      model, path,
      [&](int, int, const model::FeedForwardWeights& e) -> absl::StatusOr<io::BundleDtypes> {
        return dtype.has_value() ? io::BundleDtypes::Uniform(*dtype)
                                 : io::BundleDtypes{e.gate.dtype, e.up.dtype, e.down.dtype};
      },
      progress);
}

absl::Status PackExperts(const model::Model& model, const std::string& path, const PrecisionPlan& plan,
                         const std::function<void(int done, int total)>& progress) {
  return PackExpertsAs(
      model, path,
      [&](int layer, int expert, const model::FeedForwardWeights&) -> absl::StatusOr<io::BundleDtypes> {
        ASSIGN_OR_RETURN(const DType dtype, plan.DtypeOf(layer, expert));
        return io::BundleDtypes::Uniform(dtype);
      },
      progress);
}

}  // namespace expertd::engine
