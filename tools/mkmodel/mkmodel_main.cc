// mkmodel: writes a deterministic random-weight MoE model directory in HF
// format, for tests and benchmarks (no model can be downloaded here).

#include <fstream>
#include <iterator>
#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "tools/mkmodel/make_model.h"

int main(int argc, char** argv) {
  expertd::tools::MakeModelOptions o;
  std::string out;
  CLI::App app{"mkmodel: generate a random-weight MoE checkpoint (config.json, model.safetensors, tokenizer.json)"};
  app.add_option("--arch", o.arch, "olmoe | mixtral | qwen2_moe | qwen3_moe | deepseek_v2 | gpt_oss")->capture_default_str();
  app.add_option("--layers", o.layers)->capture_default_str();
  app.add_option("--hidden", o.hidden)->capture_default_str();
  app.add_option("--experts", o.experts)->capture_default_str();
  app.add_option("--top-k", o.top_k)->capture_default_str();
  app.add_option("--ffn", o.ffn, "routed expert intermediate size")->capture_default_str();
  app.add_option("--shared-ffn", o.shared_ffn, "qwen2_moe shared expert size; 0 = 2 * ffn")->capture_default_str();
  app.add_option("--dense-ffn", o.dense_ffn, "qwen dense layer size; 0 = 4 * ffn")->capture_default_str();
  app.add_option("--dense-layers", o.dense_layers, "qwen: layers with a dense MLP (mlp_only_layers)");
  app.add_option("--heads", o.heads)->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads)->capture_default_str();
  app.add_option("--head-dim", o.head_dim, "0 = hidden / heads")->capture_default_str();
  app.add_option("--vocab", o.vocab)->capture_default_str();
  app.add_option("--max-position", o.max_position)->capture_default_str();
  app.add_option("--dtype", o.dtype, "f32 | bf16 | f16")->capture_default_str();
  app.add_option("--norm-topk-prob", o.norm_topk_prob)->capture_default_str();
  app.add_flag("--tie-embeddings", o.tie_embeddings);
  app.add_flag("--shared-router", o.shared_router, "the same router in every MoE layer (predictor tests)");
  app.add_flag("--static-residual", o.static_residual,
               "zero attention and expert outputs, one post-attention norm: the hidden state never changes");
  app.add_option("--q-lora-rank", o.q_lora_rank, "deepseek_v2: 0 = a plain q_proj")->capture_default_str();
  app.add_option("--kv-lora-rank", o.kv_lora_rank, "deepseek_v2")->capture_default_str();
  app.add_option("--qk-nope-head-dim", o.qk_nope_head_dim, "deepseek_v2")->capture_default_str();
  app.add_option("--qk-rope-head-dim", o.qk_rope_head_dim, "deepseek_v2")->capture_default_str();
  app.add_option("--v-head-dim", o.v_head_dim, "deepseek_v2")->capture_default_str();
  app.add_option("--first-dense-layers", o.first_dense_layers, "deepseek_v2: first_k_dense_replace")
      ->capture_default_str();
  app.add_option("--shared-experts", o.shared_experts, "deepseek_v2: n_shared_experts")->capture_default_str();
  app.add_option("--n-group", o.n_group, "deepseek_v2: > 0 routes group_limited_greedy")->capture_default_str();
  app.add_option("--topk-group", o.topk_group, "deepseek_v2")->capture_default_str();
  app.add_option("--routed-scaling-factor", o.routed_scaling_factor, "deepseek_v2")->capture_default_str();
  app.add_option("--yarn-factor", o.yarn_factor, "deepseek_v2: > 0 adds YaRN rope_scaling; gpt_oss: its factor (0 = 32)")->capture_default_str();
  app.add_option("--yarn-original-max-position", o.yarn_original_max_position, "deepseek_v2")
      ->capture_default_str();
  app.add_option("--sliding-window", o.sliding_window, "gpt_oss: window of the sliding layers (0: none)")
      ->capture_default_str();
  app.add_option("--swiglu-limit", o.swiglu_limit, "gpt_oss: the experts' SwiGLU clamp")->capture_default_str();
  app.add_flag("--mxfp4-experts", o.mxfp4_experts,
               "gpt_oss: experts as HF MXFP4 blocks and scales (quant_method mxfp4), as the released checkpoints");
  app.add_option("--seed", o.seed)->capture_default_str();
  std::string chat_template_file;
  app.add_option("--chat-template", chat_template_file,
                 "a Jinja chat template file for tokenizer_config.json; its <|markers|> become special tokens")
      ->check(CLI::ExistingFile);
  app.add_option("--out", out, "output directory")->required();
  CLI11_PARSE(app, argc, argv);

  if (!chat_template_file.empty()) {
    std::ifstream in(chat_template_file, std::ios::binary);
    o.chat_template.assign(std::istreambuf_iterator<char>(in), {});
  }
  absl::Status status = expertd::tools::MakeModel(o, out);
  if (!status.ok()) {
    std::fprintf(stderr, "mkmodel: error: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("wrote %s model to %s\n", o.arch.c_str(), out.c_str());
  return 0;
}
