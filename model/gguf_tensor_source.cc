#include "model/gguf_tensor_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace expertd::model {
namespace {

// Leading dimensions of 1 say nothing about a tensor's layout: GGUF keeps
// llama.cpp's [hidden] where HF has [1][hidden] (the shared expert's gate).
std::vector<int64_t> WithoutLeadingOnes(const std::vector<int64_t>& shape) {
  size_t first = 0;
  while (first + 1 < shape.size() && shape[first] == 1) ++first;
  return {shape.begin() + static_cast<std::ptrdiff_t>(first), shape.end()};
}

std::string ShapeText(const std::vector<int64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// Closes a descriptor on every return.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

absl::Status PreadAll(int fd, const std::string& path, uint64_t offset, std::byte* out, size_t bytes) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, out + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::DataLossError(absl::StrCat(path, ": read at byte ", offset + done, ": ", std::strerror(errno)));
    }
    if (n == 0) {
      return absl::AbortedError(absl::StrCat(path, ": the file ends at byte ", offset + done,
                                             " while reading its weights (truncated while loading?)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

std::optional<GgufTensorSource::Mapping> GgufTensorSource::Map(const std::string& hf_name) const {
  if (hf_name == "model.embed_tokens.weight") return Mapping{"token_embd.weight"};
  if (hf_name == "model.norm.weight") return Mapping{"output_norm.weight"};
  if (hf_name == "lm_head.weight") return Mapping{"output.weight"};
  constexpr absl::string_view kLayers = "model.layers.";
  if (!absl::StartsWith(hf_name, kLayers)) return std::nullopt;
  const absl::string_view rest_of_name = absl::string_view(hf_name).substr(kLayers.size());
  const size_t dot = rest_of_name.find('.');
  int layer = 0;
  if (dot == absl::string_view::npos || !absl::SimpleAtoi(rest_of_name.substr(0, dot), &layer) || layer < 0) {
    return std::nullopt;
  }
  const absl::string_view rest = rest_of_name.substr(dot + 1);
  const std::string blk = absl::StrCat("blk.", layer, ".");
  const bool mixtral = config_.architecture == Architecture::kMixtral;
  if (config_.architecture == Architecture::kGptOss) {
    // gpt-oss's norm after attention is llama.cpp's post_attention_norm
    // (other families call it ffn_norm); its other tensors are its own.
    static constexpr struct {
      absl::string_view hf;
      absl::string_view gguf;
    } kGptOss[] = {
        {"post_attention_layernorm.weight", "post_attention_norm.weight"},
        {"self_attn.o_proj.bias", "attn_output.bias"},
        {"self_attn.sinks", "attn_sinks.weight"},
        {"mlp.router.weight", "ffn_gate_inp.weight"},
        {"mlp.router.bias", "ffn_gate_inp.bias"},
        {"mlp.experts.gate_proj_bias", "ffn_gate_exps.bias"},
        {"mlp.experts.up_proj_bias", "ffn_up_exps.bias"},
        {"mlp.experts.down_proj_bias", "ffn_down_exps.bias"},
    };
    for (const auto& p : kGptOss) {
      if (rest == p.hf) return Mapping{absl::StrCat(blk, p.gguf)};
    }
  }
  struct Plain {
    absl::string_view hf;
    absl::string_view gguf;
  };
  static constexpr Plain kPlain[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"mlp.gate.weight", "ffn_gate_inp.weight"},
      {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
      {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},
      {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
      {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
      {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
      // DeepSeek-V2 (llama.cpp's deepseek2, kv_b whole).
      {"self_attn.q_a_proj.weight", "attn_q_a.weight"},
      {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
      {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
      {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
      {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
      {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
      {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},
      {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
      {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
  };
  if (rest == "self_attn.kv_b_proj.weight" && file_->FindTensor(blk + "attn_kv_b.weight") == nullptr &&
      file_->FindTensor(blk + "attn_k_b.weight") != nullptr) {
    Mapping split{blk + "attn_k_b.weight"};
    split.split_kv_b = true;
    return split;
  }
  for (const Plain& p : kPlain) {
    if (rest == p.hf) return Mapping{absl::StrCat(blk, p.gguf)};
  }
  // llama.cpp's converter permutes q and k of the "llama" architecture only
  // (the Qwen and OLMoE graphs rotate halves, as HF does).
  if (rest == "self_attn.q_proj.weight") return Mapping{blk + "attn_q.weight", -1, mixtral ? config_.num_heads : 0};
  if (rest == "self_attn.k_proj.weight") return Mapping{blk + "attn_k.weight", -1, mixtral ? config_.num_kv_heads : 0};

  // <moe>.experts.E.<projection>.weight
  for (absl::string_view moe : {"mlp.experts.", "block_sparse_moe.experts."}) {
    if (!absl::StartsWith(rest, moe)) continue;
    const absl::string_view tail = rest.substr(moe.size());
    const size_t expert_dot = tail.find('.');
    int expert = 0;
    if (expert_dot == absl::string_view::npos || !absl::SimpleAtoi(tail.substr(0, expert_dot), &expert) ||
        expert < 0) {
      return std::nullopt;
    }
    const absl::string_view projection = tail.substr(expert_dot + 1);
    absl::string_view kind;
    if (projection == "gate_proj.weight" || projection == "w1.weight") kind = "gate";
    if (projection == "up_proj.weight" || projection == "w3.weight") kind = "up";
    if (projection == "down_proj.weight" || projection == "w2.weight") kind = "down";
    if (kind.empty()) return std::nullopt;
    const std::string stacked = absl::StrCat(blk, "ffn_", kind, "_exps.weight");
    // Mixtral files converted before llama.cpp stacked its experts keep one
    // tensor per expert.
    const std::string single = absl::StrCat(blk, "ffn_", kind, ".", expert, ".weight");
    if (file_->FindTensor(stacked) == nullptr && file_->FindTensor(single) != nullptr) return Mapping{single};
    return Mapping{stacked, expert};
  }
  return std::nullopt;
}

bool GgufTensorSource::Has(const std::string& name) const {
  const std::optional<Mapping> mapping = Map(name);
  return mapping.has_value() && file_->FindTensor(mapping->gguf_name) != nullptr;
}

absl::StatusOr<SourceTensor> GgufTensorSource::Get(const std::string& name, const std::vector<int64_t>& shape) const {
  const std::optional<Mapping> mapping = Map(name);
  if (!mapping.has_value()) {
    return absl::NotFoundError(absl::StrCat(path(), ": no GGUF tensor stands for '", name, "'"));
  }
  const formats::GgufTensorInfo* info = file_->FindTensor(mapping->gguf_name);
  if (info == nullptr) {
    return absl::NotFoundError(
        absl::StrCat(path(), ": tensor '", mapping->gguf_name, "' (", name, ") is missing from the file"));
  }
  ASSIGN_OR_RETURN(const formats::GgufWeight weight, file_->Weight(mapping->gguf_name));
  if (mapping->split_kv_b) return SplitKvB(name, shape, *info, weight.dtype);
  std::vector<int64_t> stored = info->shape();
  std::vector<int64_t> wanted = shape;
  std::string what = absl::StrCat("tensor '", info->name, "'");
  if (mapping->expert >= 0) {
    // [experts][rows][cols]: expert E is its own [rows][cols].
    if (stored.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(path(), ": ", what, " has shape ", ShapeText(stored),
                                                     ", expected a stack of experts [experts, ",
                                                     absl::StrJoin(shape, ", "), "]"));
    }
    if (mapping->expert >= stored[0]) {
      return absl::InvalidArgumentError(absl::StrCat(path(), ": ", what, " stacks ", stored[0],
                                                     " experts; expert ", mapping->expert, " (", name,
                                                     ") is not among them"));
    }
    stored.erase(stored.begin());
    what = absl::StrCat(what, " (expert ", mapping->expert, ")");
  }
  if (WithoutLeadingOnes(stored) != WithoutLeadingOnes(wanted)) {
    return absl::InvalidArgumentError(absl::StrCat(path(), ": ", what, " (", name, ") has shape ", ShapeText(stored),
                                                   ", expected ", ShapeText(shape)));
  }
  SourceTensor out;
  out.name = name;
  out.shape = shape;
  out.dtype = weight.dtype;
  const int64_t cols = shape.empty() ? 1 : shape.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  out.size_bytes = static_cast<uint64_t>(rows) * static_cast<uint64_t>(DTypeBytes(weight.dtype, cols));
  out.origin = info;
  out.offset = mapping->expert >= 0 ? static_cast<uint64_t>(mapping->expert) * out.size_bytes : 0;
  if (out.offset + out.size_bytes > info->size_bytes) {
    return absl::InternalError(absl::StrCat(path(), ": ", what, " is ", info->size_bytes, " bytes, shorter than ",
                                            out.offset + out.size_bytes));
  }
  if (mapping->permuted_heads > 0) {
    const int heads = mapping->permuted_heads;
    if (rows % heads != 0 || (rows / heads) % 2 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(path(), ": ", what, " has ", rows,
                                                     " rows, not an even head size for ", heads, " heads"));
    }
    out.permuted_heads = heads;
  }
  return out;
}

absl::Status GgufTensorSource::ReadSplitKvB(int fd, const SourceTensor& tensor, std::byte* destination,
                                            XXH64_state_t* hash, FileReadStats& stats) const {
  const auto* k_b = static_cast<const formats::GgufTensorInfo*>(tensor.origin);
  const auto* v_b = static_cast<const formats::GgufTensorInfo*>(tensor.kv_b_values);
  const size_t element = static_cast<size_t>(DTypeBytes(tensor.dtype, 1));
  const int64_t heads = config_.num_heads, rank = config_.mla->kv_lora_rank;
  const int64_t nope = config_.mla->qk_nope_head_dim, v = config_.mla->v_head_dim;
  std::vector<std::byte> keys(static_cast<size_t>(heads * rank * nope) * element);
  std::vector<std::byte> values(static_cast<size_t>(heads * v * rank) * element);
  for (auto [info, bytes] : {std::pair{k_b, &keys}, std::pair{v_b, &values}}) {
    if (absl::Status status = PreadAll(fd, path(), info->file_offset, bytes->data(), bytes->size()); !status.ok()) {
      return absl::Status(status.code(), absl::StrCat(status.message(), " (tensor '", info->name, "')"));
    }
    XXH64_update(hash, bytes->data(), bytes->size());
    stats.read_bytes += bytes->size();
  }
  // Head h's rows of kv_b: nope key rows (k_b[h] transposed), then v value
  // rows (v_b[h] as stored).
  const size_t row = static_cast<size_t>(rank) * element;
  for (int64_t h = 0; h < heads; ++h) {
    std::byte* head = destination + static_cast<size_t>(h * (nope + v)) * row;
    for (int64_t j = 0; j < nope; ++j) {
      for (int64_t r = 0; r < rank; ++r) {
        std::memcpy(head + static_cast<size_t>(j) * row + static_cast<size_t>(r) * element,
                    keys.data() + static_cast<size_t>((h * rank + r) * nope + j) * element, element);
      }
    }
    std::memcpy(head + static_cast<size_t>(nope) * row, values.data() + static_cast<size_t>(h * v) * row,
                static_cast<size_t>(v) * row);
  }
  return absl::OkStatus();
}

absl::StatusOr<SourceTensor> GgufTensorSource::SplitKvB(const std::string& name, const std::vector<int64_t>& shape,
                                                        const formats::GgufTensorInfo& k_b, DType dtype) const {
  const std::string v_b_name = absl::StrCat(k_b.name.substr(0, k_b.name.size() - std::string("k_b.weight").size()),
                                            "v_b.weight");
  const formats::GgufTensorInfo* v_b = file_->FindTensor(v_b_name);
  if (v_b == nullptr) {
    return absl::NotFoundError(absl::StrCat(path(), ": tensor '", v_b_name, "' (the value half of ", name,
                                            ", beside '", k_b.name, "') is missing from the file"));
  }
  ASSIGN_OR_RETURN(const formats::GgufWeight v_weight, file_->Weight(v_b_name));
  if (!config_.mla || shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(path(), ": '", k_b.name, "' stands for ", name,
                                                   " of a latent-attention model only"));
  }
  const int64_t heads = config_.num_heads, rank = config_.mla->kv_lora_rank;
  const int64_t nope = config_.mla->qk_nope_head_dim, v = config_.mla->v_head_dim;
  const std::vector<int64_t> k_shape{heads, rank, nope}, v_shape{heads, v, rank};
  if (k_b.shape() != k_shape || v_b->shape() != v_shape || shape != std::vector<int64_t>{heads * (nope + v), rank}) {
    return absl::InvalidArgumentError(absl::StrCat(path(), ": tensors '", k_b.name, "' ", ShapeText(k_b.shape()),
                                                   " and '", v_b_name, "' ", ShapeText(v_b->shape()), " are not ",
                                                   ShapeText(k_shape), " and ", ShapeText(v_shape), " (", name,
                                                   " ", ShapeText(shape), ")"));
  }
  if (v_weight.dtype != dtype || !(dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16)) {
    return absl::UnimplementedError(absl::StrCat(path(), ": tensors '", k_b.name, "' and '", v_b_name, "' are ",
                                                 std::string(DTypeName(dtype)), " and ",
                                                 std::string(DTypeName(v_weight.dtype)), "; expertd reassembles ",
                                                 name, " from them in F32, F16 or BF16 only (both the same)"));
  }
  SourceTensor out;
  out.name = name;
  out.shape = shape;
  out.dtype = dtype;
  out.size_bytes = static_cast<uint64_t>(heads * (nope + v) * rank) * static_cast<uint64_t>(DTypeBytes(dtype, 1));
  out.origin = &k_b;
  out.kv_b_values = v_b;
  return out;
}

const std::byte* GgufTensorSource::MappedBytes(const SourceTensor& tensor) const {
  if (tensor.permuted_heads > 0 || tensor.kv_b_values != nullptr || tensor.mxfp4_scales != nullptr) return nullptr;
  const auto* info = static_cast<const formats::GgufTensorInfo*>(tensor.origin);
  return file_->bytes().data() + info->file_offset + tensor.offset;
}

absl::StatusOr<std::vector<FileReadStats>> GgufTensorSource::ReadTensors(absl::Span<const TensorRead> reads) const {
  std::vector<FileReadStats> all_stats;
  if (reads.empty()) return all_stats;
  const auto start = std::chrono::steady_clock::now();
  const std::string& file_path = path();
  Fd fd(::open(file_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open ", file_path, ": ", std::strerror(errno)));
  }
  struct stat before {};
  if (::fstat(fd.get(), &before) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", file_path, ": ", std::strerror(errno)));
  }
  if (static_cast<uint64_t>(before.st_size) != file_->file_size()) {
    return absl::AbortedError(absl::StrCat(file_path, " is ", before.st_size, " bytes, not the ", file_->file_size(),
                                           " it had when opened: it changed while loading"));
  }
  std::vector<const TensorRead*> ordered;
  ordered.reserve(reads.size());
  for (const TensorRead& read : reads) ordered.push_back(&read);
  const auto file_offset = [](const TensorRead* read) {
    return static_cast<const formats::GgufTensorInfo*>(read->tensor->origin)->file_offset + read->tensor->offset;
  };
  std::sort(ordered.begin(), ordered.end(),
            [&](const TensorRead* a, const TensorRead* b) { return file_offset(a) < file_offset(b); });

  std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> hash(XXH64_createState(), &XXH64_freeState);
  if (hash == nullptr) return absl::ResourceExhaustedError("cannot allocate an XXH64 state");
  XXH64_reset(hash.get(), 0);
  FileReadStats stats;
  stats.path = file_path;
  stats.file_bytes = file_->file_size();
  std::vector<std::byte> stored;  // a permuted tensor's rows as stored
  for (const TensorRead* read : ordered) {
    const SourceTensor& tensor = *read->tensor;
    if (tensor.kv_b_values != nullptr) {
      RETURN_IF_ERROR(ReadSplitKvB(fd.get(), tensor, read->destination, hash.get(), stats));
      continue;
    }
    const uint64_t at = file_offset(read);
    const size_t bytes = tensor.size_bytes;
    std::byte* target = read->destination;
    if (tensor.permuted_heads > 0) {
      stored.resize(bytes);
      target = stored.data();
    }
    if (absl::Status status = PreadAll(fd.get(), file_path, at, target, bytes); !status.ok()) {
      return absl::Status(status.code(), absl::StrCat(status.message(), " (tensor '",
                                                      static_cast<const formats::GgufTensorInfo*>(tensor.origin)->name,
                                                      "')"));
    }
    XXH64_update(hash.get(), target, bytes);
    stats.read_bytes += bytes;
    if (tensor.permuted_heads > 0) {
      // Stored row h*hd + 2i + half is HF's row h*hd + half*hd/2 + i.
      const int64_t rows = tensor.shape.size() == 2 ? tensor.shape[0] : 1;
      const int64_t head_dim = rows / tensor.permuted_heads;
      const size_t row_bytes = bytes / static_cast<size_t>(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t head = r / head_dim, j = r % head_dim;
        const int64_t half = j / (head_dim / 2), i = j % (head_dim / 2);
        const int64_t source_row = head * head_dim + 2 * i + half;
        std::memcpy(read->destination + r * row_bytes, stored.data() + source_row * row_bytes, row_bytes);
      }
    }
  }
  struct stat after {};
  if (::fstat(fd.get(), &after) != 0 || after.st_size != before.st_size || after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
      after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
    return absl::AbortedError(absl::StrCat(file_path, " changed while its weights were read; load it again"));
  }
  stats.xxh64 = XXH64_digest(hash.get());
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  all_stats.push_back(std::move(stats));
  return all_stats;
}

}  // namespace expertd::model
