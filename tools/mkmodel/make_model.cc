#include "tools/mkmodel/make_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "formats/safetensors.h"
#include "kernels/cpu/dtype.h"
#include "nlohmann/json.hpp"
#include "tools/mkmodel/bpe_trainer.h"

namespace expertd::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

// splitmix64: tiny, fast, and the same on every platform (unlike
// std::normal_distribution), so a seed always names the same model.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform with mean 0 and the given standard deviation.
  float Uniform(float stddev) {
    const double u = static_cast<double>(Next() >> 11) * 0x1.0p-53;  // [0, 1)
    return static_cast<float>((2.0 * u - 1.0) * std::sqrt(3.0) * stddev);
  }

 private:
  uint64_t state_;
};

struct Arch {
  const char* name;
  const char* hf_name;
  const char* model_type;
  const char* moe_block;
  const char* gate;
  const char* up;
  const char* down;
};
constexpr Arch kArchs[] = {
    {"olmoe", "OlmoeForCausalLM", "olmoe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"mixtral", "MixtralForCausalLM", "mixtral", "block_sparse_moe", "w1", "w3", "w2"},
    {"qwen2_moe", "Qwen2MoeForCausalLM", "qwen2_moe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"qwen3_moe", "Qwen3MoeForCausalLM", "qwen3_moe", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"deepseek_v2", "DeepseekV2ForCausalLM", "deepseek_v2", "mlp", "gate_proj", "up_proj", "down_proj"},
    {"gpt_oss", "GptOssForCausalLM", "gpt_oss", "mlp", "", "", ""},  // fused experts: see MakeModel
};

class TensorMaker {
 public:
  TensorMaker(formats::SafetensorsDtype dtype, uint64_t seed) : dtype_(dtype), random_(seed) {}

  // Values are `offset + Uniform(stddev)`.
  void Add(const std::string& name, std::vector<int64_t> shape, float stddev, float offset = 0.0f) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    formats::TensorToWrite tensor{name, dtype_, std::move(shape), {}};
    tensor.bytes.resize(static_cast<size_t>(count) * formats::SafetensorsDtypeSize(dtype_));
    std::byte* out = tensor.bytes.data();
    for (int64_t i = 0; i < count; ++i) {
      const float value = offset + random_.Uniform(stddev);
      if (dtype_ == formats::SafetensorsDtype::kF32) {
        std::memcpy(out + 4 * i, &value, 4);
      } else {
        const uint16_t bits = dtype_ == formats::SafetensorsDtype::kBF16 ? kernels::F32ToBF16(value) : kernels::F32ToF16(value);
        std::memcpy(out + 2 * i, &bits, 2);
      }
    }
    tensors_.push_back(std::move(tensor));
  }
  void Linear(const std::string& name, int64_t out_features, int64_t in_features, float gain = 1.0f) {
    Add(name, {out_features, in_features}, gain / std::sqrt(static_cast<float>(in_features)));
  }
  // HF's MXFP4 pair for a [rows][cols] matrix per leading index: name_blocks
  // [lead][rows][cols / 32][16] of random E2M1 code pairs and name_scales
  // [lead][rows][cols / 32] of exponents 122 or 123 (values up to 6 x 2^-4:
  // about the 1/sqrt(fan-in) of the other weights at test sizes).
  void Mxfp4(const std::string& name, int64_t lead, int64_t rows, int64_t cols) {
    const int64_t groups = lead * rows * (cols / 32);
    formats::TensorToWrite blocks{name + "_blocks", formats::SafetensorsDtype::kU8, {lead, rows, cols / 32, 16}, {}};
    formats::TensorToWrite scales{name + "_scales", formats::SafetensorsDtype::kU8, {lead, rows, cols / 32}, {}};
    blocks.bytes.resize(static_cast<size_t>(groups) * 16);
    scales.bytes.resize(static_cast<size_t>(groups));
    for (auto& b : blocks.bytes) b = static_cast<std::byte>(random_.Next() & 0xFF);
    for (auto& e : scales.bytes) e = static_cast<std::byte>(122 + (random_.Next() & 1));
    tensors_.push_back(std::move(blocks));
    tensors_.push_back(std::move(scales));
  }
  void Norm(const std::string& name, int64_t size) { Add(name, {size}, 0.1f, 1.0f); }
  void Zeros(const std::string& name, std::vector<int64_t> shape) { Add(name, std::move(shape), 0.0f); }
  // A new tensor with the bytes of an earlier one.
  void Copy(const std::string& name, const std::string& from) {
    for (const formats::TensorToWrite& t : tensors_) {
      if (t.name == from) {
        formats::TensorToWrite copy = t;
        copy.name = name;
        tensors_.push_back(std::move(copy));
        return;
      }
    }
  }

  const std::vector<formats::TensorToWrite>& tensors() const { return tensors_; }

 private:
  formats::SafetensorsDtype dtype_;
  Random random_;
  std::vector<formats::TensorToWrite> tensors_;
};

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

absl::Status Validate(const MakeModelOptions& o, const Arch* arch) {
  if (arch == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown --arch '", o.arch, "' (choose olmoe, mixtral, qwen2_moe, qwen3_moe, deepseek_v2 or gpt_oss)"));
  }
  auto positive = [](int value, const char* flag) -> absl::Status {
    if (value <= 0) return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be positive, got ", value));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive(o.layers, "layers"));
  RETURN_IF_ERROR(positive(o.hidden, "hidden"));
  RETURN_IF_ERROR(positive(o.experts, "experts"));
  RETURN_IF_ERROR(positive(o.top_k, "top-k"));
  RETURN_IF_ERROR(positive(o.ffn, "ffn"));
  RETURN_IF_ERROR(positive(o.heads, "heads"));
  RETURN_IF_ERROR(positive(o.kv_heads, "kv-heads"));
  RETURN_IF_ERROR(positive(o.vocab, "vocab"));
  if (o.static_residual && (o.arch == "qwen2_moe" || !o.dense_layers.empty())) {
    return absl::InvalidArgumentError("--static-residual supports olmoe, mixtral and qwen3_moe without dense layers");
  }
  if (o.arch == "deepseek_v2") {
    if (o.static_residual) return absl::InvalidArgumentError("--static-residual does not support deepseek_v2");
    RETURN_IF_ERROR(positive(o.kv_lora_rank, "kv-lora-rank"));
    RETURN_IF_ERROR(positive(o.qk_rope_head_dim, "qk-rope-head-dim"));
    RETURN_IF_ERROR(positive(o.v_head_dim, "v-head-dim"));
    if (o.qk_rope_head_dim % 2 != 0) return absl::InvalidArgumentError("--qk-rope-head-dim must be even");
    if (o.first_dense_layers < 0 || o.first_dense_layers >= o.layers) {
      return absl::InvalidArgumentError("--first-dense-layers must be in 0 .. layers - 1");
    }
    if (o.n_group > 0 && (o.experts % o.n_group != 0 || o.topk_group < 1 || o.topk_group > o.n_group ||
                          o.top_k > o.topk_group * (o.experts / o.n_group))) {
      return absl::InvalidArgumentError(
          "--n-group must divide --experts and --topk-group be in 1 .. n-group with room for --top-k experts");
    }
  }
  if (o.arch == "gpt_oss") {
    if (o.static_residual) return absl::InvalidArgumentError("--static-residual does not support gpt_oss");
    if (o.sliding_window < 0) return absl::InvalidArgumentError("--sliding-window must be >= 0");
    if (!(o.swiglu_limit > 0)) return absl::InvalidArgumentError("--swiglu-limit must be positive");
    if (o.mxfp4_experts && (o.hidden % 32 != 0 || o.ffn % 32 != 0)) {
      return absl::InvalidArgumentError("--mxfp4-experts needs --hidden and --ffn multiples of 32 (MXFP4 blocks)");
    }
  }
  if (o.top_k > o.experts) return absl::InvalidArgumentError("--top-k must not exceed --experts");
  if (o.heads % o.kv_heads != 0) return absl::InvalidArgumentError("--kv-heads must divide --heads");
  const int head_dim = o.head_dim > 0 ? o.head_dim : o.hidden / o.heads;
  if (head_dim <= 0 || head_dim % 2 != 0) return absl::InvalidArgumentError("head dim must be positive and even");
  if (o.head_dim == 0 && o.hidden % o.heads != 0) return absl::InvalidArgumentError("--heads must divide --hidden");
  if (o.vocab < 260) return absl::InvalidArgumentError("--vocab must be at least 260 (256 bytes + special tokens)");
  if (o.dtype != "f32" && o.dtype != "bf16" && o.dtype != "f16") {
    return absl::InvalidArgumentError(absl::StrCat("unknown --dtype '", o.dtype, "' (choose f32, bf16 or f16)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MakeModel(const MakeModelOptions& o, const std::string& out_dir) {
  const Arch* arch = nullptr;
  for (const Arch& candidate : kArchs) {
    if (o.arch == candidate.name) arch = &candidate;
  }
  RETURN_IF_ERROR(Validate(o, arch));
  const bool is_qwen = o.arch == "qwen2_moe" || o.arch == "qwen3_moe";
  const bool has_shared = o.arch == "qwen2_moe";
  const bool deepseek = o.arch == "deepseek_v2";
  const bool gpt_oss = o.arch == "gpt_oss";
  const int head_dim = o.head_dim > 0 ? o.head_dim : o.hidden / o.heads;
  const int shared_ffn = o.shared_ffn > 0 ? o.shared_ffn : 2 * o.ffn;
  const int dense_ffn = o.dense_ffn > 0 ? o.dense_ffn : 4 * o.ffn;
  const formats::SafetensorsDtype dtype =
      o.dtype == "f32" ? formats::SafetensorsDtype::kF32 : (o.dtype == "bf16" ? formats::SafetensorsDtype::kBF16 : formats::SafetensorsDtype::kF16);

  // Tokenizer first: its special tokens decide the bos/eos ids in config.json.
  BpeTrainerOptions bpe;
  bpe.vocab_size = o.vocab;
  if (o.arch == "mixtral") {
    bpe.special_tokens = {"<unk>", "<s>", "</s>"};
  } else if (is_qwen) {
    bpe.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  } else {
    bpe.special_tokens = {"<|endoftext|>", "<|padding|>"};
  }
  for (size_t begin = o.chat_template.find("<|"); begin != std::string::npos;
       begin = o.chat_template.find("<|", begin + 2)) {
    const size_t end = o.chat_template.find("|>", begin + 2);
    if (end == std::string::npos) break;
    const std::string marker = o.chat_template.substr(begin, end + 2 - begin);
    // Markers only: no spaces, quotes or template syntax inside.
    if (marker.find_first_of(" \t\n'\"{}") != std::string::npos) continue;
    if (std::find(bpe.special_tokens.begin(), bpe.special_tokens.end(), marker) == bpe.special_tokens.end()) {
      bpe.special_tokens.push_back(marker);
    }
  }
  bpe.style = is_qwen ? BpeTrainerOptions::Style::kQwen2 : BpeTrainerOptions::Style::kGpt2;
  ASSIGN_OR_RETURN(nlohmann::json tokenizer, TrainByteLevelBpe(DefaultTrainingCorpus(), bpe));
  auto special_id = [&](const std::string& content) -> int {
    for (const auto& added : tokenizer["added_tokens"]) {
      if (added["content"] == content) return added["id"].get<int>();
    }
    return -1;
  };
  const std::string eos_token = o.arch == "mixtral" ? "</s>" : (is_qwen ? "<|endoftext|>" : "<|endoftext|>");
  const std::string bos_token = o.arch == "mixtral" ? "<s>" : "<|endoftext|>";
  const int eos_id = special_id(eos_token);
  const int bos_id = special_id(bos_token);

  ordered_json config;
  config["architectures"] = {arch->hf_name};
  config["model_type"] = arch->model_type;
  config["vocab_size"] = o.vocab;
  config["hidden_size"] = o.hidden;
  config["num_hidden_layers"] = o.layers;
  config["num_attention_heads"] = o.heads;
  config["num_key_value_heads"] = o.kv_heads;
  if (o.head_dim > 0 || o.arch == "qwen3_moe" || gpt_oss) config["head_dim"] = head_dim;
  config["max_position_embeddings"] = o.max_position;
  config["rope_theta"] = 10000.0;
  config["rms_norm_eps"] = 1e-5;
  config["tie_word_embeddings"] = o.tie_embeddings;
  config["num_experts_per_tok"] = o.top_k;
  config["bos_token_id"] = bos_id;
  config["eos_token_id"] = eos_id;
  config["torch_dtype"] = o.dtype == "f32" ? "float32" : (o.dtype == "bf16" ? "bfloat16" : "float16");
  if (o.arch == "olmoe") {
    config["num_experts"] = o.experts;
    config["intermediate_size"] = o.ffn;
    config["norm_topk_prob"] = o.norm_topk_prob;
    config["clip_qkv"] = nullptr;
    config["attention_bias"] = false;
  } else if (o.arch == "mixtral") {
    config["num_local_experts"] = o.experts;
    config["intermediate_size"] = o.ffn;
    config["sliding_window"] = nullptr;
  } else if (deepseek) {
    config["num_key_value_heads"] = o.heads;
    config["n_routed_experts"] = o.experts;
    config["moe_intermediate_size"] = o.ffn;
    config["intermediate_size"] = dense_ffn;
    config["n_shared_experts"] = o.shared_experts;
    config["first_k_dense_replace"] = o.first_dense_layers;
    config["moe_layer_freq"] = 1;
    config["norm_topk_prob"] = o.norm_topk_prob;
    config["routed_scaling_factor"] = o.routed_scaling_factor;
    config["topk_method"] = o.n_group > 0 ? "group_limited_greedy" : "greedy";
    config["n_group"] = o.n_group > 0 ? ordered_json(o.n_group) : ordered_json(nullptr);
    config["topk_group"] = o.n_group > 0 ? ordered_json(o.topk_group) : ordered_json(nullptr);
    config["q_lora_rank"] = o.q_lora_rank > 0 ? ordered_json(o.q_lora_rank) : ordered_json(nullptr);
    config["kv_lora_rank"] = o.kv_lora_rank;
    config["qk_nope_head_dim"] = o.qk_nope_head_dim;
    config["qk_rope_head_dim"] = o.qk_rope_head_dim;
    config["v_head_dim"] = o.v_head_dim;
    config["attention_bias"] = false;
    config["hidden_act"] = "silu";
    if (o.yarn_factor > 0) {
      config["rope_scaling"] = {{"type", "yarn"},
                                {"factor", o.yarn_factor},
                                {"original_max_position_embeddings", o.yarn_original_max_position},
                                {"beta_fast", 32},
                                {"beta_slow", 1},
                                {"mscale", 0.707},
                                {"mscale_all_dim", 0.707}};
    } else {
      config["rope_scaling"] = nullptr;
    }
  } else if (gpt_oss) {
    config["num_local_experts"] = o.experts;
    config["intermediate_size"] = o.ffn;
    config["rope_theta"] = 150000.0;
    config["attention_bias"] = true;
    config["hidden_act"] = "silu";
    config["swiglu_limit"] = o.swiglu_limit;
    config["sliding_window"] = o.sliding_window;
    ordered_json types = ordered_json::array();
    for (int i = 0; i < o.layers; ++i) types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
    config["layer_types"] = types;
    config["rope_scaling"] = {{"rope_type", "yarn"},
                              {"factor", o.yarn_factor > 0 ? o.yarn_factor : 32.0f},
                              {"beta_fast", 32.0},
                              {"beta_slow", 1.0},
                              {"truncate", false},
                              {"original_max_position_embeddings", o.yarn_original_max_position}};
    if (o.mxfp4_experts) {
      // As openai/gpt-oss-20b's config.json.
      config["quantization_config"] = {
          {"quant_method", "mxfp4"},
          {"modules_to_not_convert",
           {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
    }
  } else {
    config["num_experts"] = o.experts;
    config["moe_intermediate_size"] = o.ffn;
    config["intermediate_size"] = dense_ffn;
    config["norm_topk_prob"] = o.norm_topk_prob;
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = o.dense_layers;
    if (has_shared) config["shared_expert_intermediate_size"] = shared_ffn;
    if (o.arch == "qwen3_moe") config["attention_bias"] = false;
  }

  TensorMaker make(dtype, o.seed);
  const int q_size = o.heads * head_dim;
  const int kv_size = o.kv_heads * head_dim;
  make.Add("model.embed_tokens.weight", {o.vocab, o.hidden}, 1.0f);
  make.Norm("model.norm.weight", o.hidden);
  if (!o.tie_embeddings) make.Linear("lm_head.weight", o.vocab, o.hidden);
  std::string first_router;
  for (int i = 0; i < o.layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    make.Norm(p + "input_layernorm.weight", o.hidden);
    if (o.static_residual && i > 0) {
      make.Copy(p + "post_attention_layernorm.weight", "model.layers.0.post_attention_layernorm.weight");
    } else {
      make.Norm(p + "post_attention_layernorm.weight", o.hidden);
    }
    if (deepseek) {
      const int qk_head_dim = o.qk_nope_head_dim + o.qk_rope_head_dim;
      const std::string a = p + "self_attn.";
      if (o.q_lora_rank > 0) {
        make.Linear(a + "q_a_proj.weight", o.q_lora_rank, o.hidden);
        make.Norm(a + "q_a_layernorm.weight", o.q_lora_rank);
        make.Linear(a + "q_b_proj.weight", o.heads * qk_head_dim, o.q_lora_rank);
      } else {
        make.Linear(a + "q_proj.weight", o.heads * qk_head_dim, o.hidden);
      }
      make.Linear(a + "kv_a_proj_with_mqa.weight", o.kv_lora_rank + o.qk_rope_head_dim, o.hidden);
      make.Norm(a + "kv_a_layernorm.weight", o.kv_lora_rank);
      make.Linear(a + "kv_b_proj.weight", o.heads * (o.qk_nope_head_dim + o.v_head_dim), o.kv_lora_rank);
      make.Linear(a + "o_proj.weight", o.hidden, o.heads * o.v_head_dim);
    } else {
      make.Linear(p + "self_attn.q_proj.weight", q_size, o.hidden);
      make.Linear(p + "self_attn.k_proj.weight", kv_size, o.hidden);
      make.Linear(p + "self_attn.v_proj.weight", kv_size, o.hidden);
      if (o.static_residual) {
        make.Zeros(p + "self_attn.o_proj.weight", {o.hidden, q_size});
      } else {
        make.Linear(p + "self_attn.o_proj.weight", o.hidden, q_size);
      }
    }
    if (gpt_oss) {
      make.Add(p + "self_attn.q_proj.bias", {q_size}, 0.1f);
      make.Add(p + "self_attn.k_proj.bias", {kv_size}, 0.1f);
      make.Add(p + "self_attn.v_proj.bias", {kv_size}, 0.1f);
      make.Add(p + "self_attn.o_proj.bias", {o.hidden}, 0.1f);
      // Sinks about as large as the attention scores: they take a real share.
      make.Add(p + "self_attn.sinks", {o.heads}, 1.0f);
    }
    if (o.arch == "qwen2_moe") {
      make.Add(p + "self_attn.q_proj.bias", {q_size}, 0.1f);
      make.Add(p + "self_attn.k_proj.bias", {kv_size}, 0.1f);
      make.Add(p + "self_attn.v_proj.bias", {kv_size}, 0.1f);
    }
    if (o.arch == "olmoe") {
      make.Norm(p + "self_attn.q_norm.weight", q_size);
      make.Norm(p + "self_attn.k_norm.weight", kv_size);
    } else if (o.arch == "qwen3_moe") {
      make.Norm(p + "self_attn.q_norm.weight", head_dim);
      make.Norm(p + "self_attn.k_norm.weight", head_dim);
    }
    const bool dense = (is_qwen && std::find(o.dense_layers.begin(), o.dense_layers.end(), i) != o.dense_layers.end()) ||
                       (deepseek && i < o.first_dense_layers);
    if (dense) {
      make.Linear(p + "mlp.gate_proj.weight", dense_ffn, o.hidden);
      make.Linear(p + "mlp.up_proj.weight", dense_ffn, o.hidden);
      make.Linear(p + "mlp.down_proj.weight", o.hidden, dense_ffn);
      continue;
    }
    const std::string moe = absl::StrCat(p, arch->moe_block, ".");
    if (gpt_oss) {
      // HF's GptOssMLP: router.weight/bias, experts fused and transposed
      // ([in][out] per expert), gate and up interleaved in gate_up_proj's
      // last axis.
      if (o.shared_router && !first_router.empty()) {
        make.Copy(moe + "router.weight", first_router + ".weight");
        make.Copy(moe + "router.bias", first_router + ".bias");
      } else {
        make.Linear(moe + "router.weight", o.experts, o.hidden, 2.0f);
        make.Add(moe + "router.bias", {o.experts}, 0.5f);
        first_router = moe + "router";
      }
      if (o.mxfp4_experts) {
        make.Mxfp4(moe + "experts.gate_up_proj", o.experts, 2 * o.ffn, o.hidden);
        make.Mxfp4(moe + "experts.down_proj", o.experts, o.hidden, o.ffn);
      } else {
        make.Add(moe + "experts.gate_up_proj", {o.experts, o.hidden, 2 * o.ffn}, 1.0f / std::sqrt(float(o.hidden)));
        make.Add(moe + "experts.down_proj", {o.experts, o.ffn, o.hidden}, 1.0f / std::sqrt(float(o.ffn)));
      }
      make.Add(moe + "experts.gate_up_proj_bias", {o.experts, 2 * o.ffn}, 0.1f);
      make.Add(moe + "experts.down_proj_bias", {o.experts, o.hidden}, 0.1f);
      continue;
    }
    // Router logits with a standard deviation of about 2: decisive routing.
    if (o.shared_router && !first_router.empty()) {
      make.Copy(moe + "gate.weight", first_router);
    } else {
      make.Linear(moe + "gate.weight", o.experts, o.hidden, 2.0f);
      first_router = moe + "gate.weight";
    }
    for (int e = 0; e < o.experts; ++e) {
      const std::string ex = absl::StrCat(moe, "experts.", e, ".");
      make.Linear(ex + arch->gate + ".weight", o.ffn, o.hidden);
      make.Linear(ex + arch->up + ".weight", o.ffn, o.hidden);
      if (o.static_residual) {
        make.Zeros(ex + arch->down + ".weight", {o.hidden, o.ffn});
      } else {
        make.Linear(ex + arch->down + ".weight", o.hidden, o.ffn);
      }
    }
    if (deepseek && o.shared_experts > 0) {
      const int width = o.shared_experts * o.ffn;
      make.Linear(moe + "shared_experts.gate_proj.weight", width, o.hidden);
      make.Linear(moe + "shared_experts.up_proj.weight", width, o.hidden);
      make.Linear(moe + "shared_experts.down_proj.weight", o.hidden, width);
    }
    if (has_shared) {
      make.Linear(moe + "shared_expert.gate_proj.weight", shared_ffn, o.hidden);
      make.Linear(moe + "shared_expert.up_proj.weight", shared_ffn, o.hidden);
      make.Linear(moe + "shared_expert.down_proj.weight", o.hidden, shared_ffn);
      make.Linear(moe + "shared_expert_gate.weight", 1, o.hidden);
    }
  }

  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  RETURN_IF_ERROR(formats::WriteSafetensors((dir / "model.safetensors").string(), make.tensors(), {{"format", "pt"}}));
  RETURN_IF_ERROR(WriteText(dir / "config.json", config.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteText(dir / "tokenizer.json", tokenizer.dump(2) + "\n"));
  ordered_json tokenizer_config;
  tokenizer_config["bos_token"] = bos_token;
  tokenizer_config["eos_token"] = eos_token;
  tokenizer_config["add_bos_token"] = false;
  tokenizer_config["model_max_length"] = o.max_position;
  if (!o.chat_template.empty()) tokenizer_config["chat_template"] = o.chat_template;
  RETURN_IF_ERROR(WriteText(dir / "tokenizer_config.json", tokenizer_config.dump(2) + "\n"));
  return absl::OkStatus();
}

}  // namespace expertd::tools
