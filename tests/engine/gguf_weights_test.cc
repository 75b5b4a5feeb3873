// A .gguf file alone is a model: Model::Load of the GGUF a model was
// converted to (tools/gguf/hf_to_gguf.py, llama.cpp's naming) computes what
// the same model loaded from its HF directory computes.
//
// Fixtures: testdata/gguf_weights/<family>-{f32,bf16,q8_0}.gguf (and
// gpt-oss-mxfp4.gguf), written by
// make_gguf_weight_fixtures.py from mkmodel models; the test makes the same
// HF models here with the mkmodel library (kFamilies are the script's
// FAMILIES and SHAPE), so it needs no Python.

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cache/expert_cache.h"
#include "engine/expert_packer.h"
#include "engine/expert_source.h"
#include "engine/forward.h"
#include "model/gguf_tensor_source.h"
#include "model/model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/all_logits.h"
#include "io/expert_file.h"
#include "io/expert_reader.h"
#include "tests/testing/test_models.h"
#include "tools/mkmodel/make_model.h"

namespace expertd::engine {
namespace {

using ::expertd::testing::ScopedTempDir;
using ::testing::HasSubstr;

const std::string kTestdata = EXPERTD_GGUF_WEIGHTS_TESTDATA;
// Ids below 260 (the fixtures' vocabulary); repeats exercise the KV cache.
const std::vector<int32_t> kPrompt = {5, 17, 200, 99, 3, 42, 42, 1, 259, 77, 128, 0};

// make_gguf_weight_fixtures.py's SHAPE and FAMILIES.
tools::MakeModelOptions FamilyOptions(const std::string& family, const std::string& dtype) {
  tools::MakeModelOptions o;
  o.layers = 2;
  o.hidden = 32;
  o.heads = 2;
  o.experts = 4;
  o.top_k = 2;
  o.ffn = 32;
  o.vocab = 260;
  o.max_position = 512;
  o.dtype = dtype;
  if (family == "olmoe") {
    o.arch = "olmoe";
    o.kv_heads = 2;
    o.norm_topk_prob = false;
    o.seed = 11;
  } else if (family == "qwen2moe") {
    o.arch = "qwen2_moe";
    o.kv_heads = 1;
    o.norm_topk_prob = false;
    o.shared_ffn = 64;
    o.seed = 12;
  } else if (family == "qwen3moe") {
    o.arch = "qwen3_moe";
    o.kv_heads = 1;
    o.norm_topk_prob = true;
    o.tie_embeddings = true;
    o.seed = 13;
  } else if (family == "gpt-oss") {
    o.arch = "gpt_oss";
    o.kv_heads = 1;
    o.head_dim = 16;
    o.sliding_window = 4;
    o.yarn_factor = 32;
    o.yarn_original_max_position = 16;
    o.swiglu_limit = 7.0f;
    // Seed 16 put two experts' router logits so close at position 2 that
    // llama.cpp's BF16 rounding of the activations picked the other one
    // there (8.6% of the largest logit on the BF16 file, 0.06% on F32).
    o.seed = 18;
  } else {
    o.arch = "mixtral";
    o.kv_heads = 1;
    o.seed = 14;
  }
  return o;
}

std::string Fixture(const std::string& family, const std::string& dtype) {
  return kTestdata + "/" + family + "-" + dtype + ".gguf";
}

std::unique_ptr<model::Model> LoadOrDie(const std::string& path, const model::WeightLoadOptions& options = {}) {
  auto model = model::Model::Load(path, options);
  EXPECT_TRUE(model.ok()) << path << ": " << model.status();
  return model.ok() ? std::move(*model) : nullptr;
}

std::vector<float> Logits(const model::Model& model, ExpertSource* experts = nullptr) {
  return testing::AllPositionLogits(model, kPrompt, experts);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class GgufWeights : public ::testing::TestWithParam<std::string> {
 protected:
  std::string family() const { return GetParam(); }
  ScopedTempDir dir_{"gguf_weights"};
};

// The same weights in the same dtypes through the same kernels: the GGUF
// model's logits equal the HF directory's bit for bit. The converter writes
// norms and routers as F32 where the BF16 checkpoint has BF16; BF16 widens to
// F32 exactly and the kernels widen BF16 to F32 before multiplying, so even
// then nothing differs. Mixtral's q and k rows are stored in llama.cpp's
// order and put back on load: without that its logits would differ.
TEST_P(GgufWeights, LogitsEqualTheHfDirectorysForF32AndBf16) {
  for (const std::string dtype : {"f32", "bf16"}) {
    SCOPED_TRACE(dtype);
    const std::string hf_dir = testing::MakeTestModel(dir_, family() + "-" + dtype, FamilyOptions(family(), dtype));
    std::unique_ptr<model::Model> hf = LoadOrDie(hf_dir);
    std::unique_ptr<model::Model> gguf = LoadOrDie(Fixture(family(), dtype));
    ASSERT_TRUE(hf && gguf);
    EXPECT_TRUE(gguf->is_gguf());
    const model::ModelConfig& a = hf->config();
    const model::ModelConfig& b = gguf->config();
    EXPECT_EQ(a.architecture, b.architecture);
    EXPECT_EQ(a.num_layers, b.num_layers);
    EXPECT_EQ(a.hidden_size, b.hidden_size);
    EXPECT_EQ(a.num_experts, b.num_experts);
    EXPECT_EQ(a.shared_expert_intermediate_size, b.shared_expert_intermediate_size);
    EXPECT_EQ(gguf->weights().layers[0].q.dtype, dtype == "f32" ? DType::kF32 : DType::kBF16);
    EXPECT_EQ(gguf->weights().layers[0].experts[3].down.dtype, dtype == "f32" ? DType::kF32 : DType::kBF16);
    const std::vector<float> expected = Logits(*hf);
    const std::vector<float> got = Logits(*gguf);
    ASSERT_EQ(got.size(), expected.size());
    ASSERT_EQ(got.size(), kPrompt.size() * static_cast<size_t>(a.vocab_size));
    EXPECT_EQ(got, expected);
    // The vocabulary came from the file too.
    const std::string text = "In the beginning";
    EXPECT_EQ(gguf->tokenizer().Encode(text), hf->tokenizer().Encode(text));
  }
}

bool InStorage(const model::ModelWeights& w, const void* data) {
  const auto* p = static_cast<const std::byte*>(data);
  return p >= w.storage.data() && p < w.storage.data() + w.storage.size();
}

// WeightLoadOptions::map_weights: matrices stored as the engine computes
// with them point into the file's mapping (outside the copied storage, which
// shrinks to the rest), holding the same bytes the copying load reads, so
// the logits are the same bits. Mixtral's q and k rows are stored in
// llama.cpp's order and must be put back: those stay copies.
TEST_P(GgufWeights, MappedWeightsAreTheFilesBytesAndComputeTheSameLogits) {
  for (const std::string dtype : {"bf16", "q8_0"}) {
    SCOPED_TRACE(dtype);
    std::unique_ptr<model::Model> copied = LoadOrDie(Fixture(family(), dtype));
    std::unique_ptr<model::Model> mapped = LoadOrDie(Fixture(family(), dtype), {.map_weights = true});
    ASSERT_TRUE(copied && mapped);
    const model::ModelWeights& c = copied->weights();
    const model::ModelWeights& m = mapped->weights();
    EXPECT_EQ(c.mapping, nullptr);
    EXPECT_NE(m.mapping, nullptr);
    EXPECT_LT(m.storage.size(), c.storage.size());
    const kernels::WeightMatrix& expert = m.layers[1].experts[2].down;
    EXPECT_FALSE(InStorage(m, expert.data));
    ASSERT_EQ(expert.size_bytes(), c.layers[1].experts[2].down.size_bytes());
    EXPECT_EQ(std::memcmp(expert.data, c.layers[1].experts[2].down.data, expert.size_bytes()), 0);
    EXPECT_EQ(InStorage(m, m.layers[0].q.data), family() == "mixtral") << "permuted rows are copies";
    EXPECT_FALSE(InStorage(m, m.layers[0].v.data));
    EXPECT_EQ(Logits(*mapped), Logits(*copied));
  }
}

// Q8_0 (gguf-py's reference quantizer on the F32 model): every matrix but
// the routers is blocks, the embedding and LM head included, so the
// embedding lookup dequantizes a row and attention and the LM head run the
// quantized kernels. Logits stay near the F32 model's: the weights are
// rounded to 8 bits per 32-element block (relative error ~1/254 of the
// block's largest weight) and the activations likewise in the dot products;
// over 2 layers that moves logits by 1-2% of the largest (measured: olmoe
// 1.25%, qwen2moe 2.02%, qwen3moe 1.34%, mixtral 2.18%), bounded at 4%; the
// argmax agrees at nearly every position (measured 12 of 12, bounded at 10).
TEST_P(GgufWeights, Q8_0LoadsAndStaysNearTheF32Model) {
  std::unique_ptr<model::Model> f32 = LoadOrDie(Fixture(family(), "f32"));
  std::unique_ptr<model::Model> q8 = LoadOrDie(Fixture(family(), "q8_0"));
  ASSERT_TRUE(f32 && q8);
  const model::ModelWeights& w = q8->weights();
  EXPECT_EQ(w.embedding.dtype, DType::kQ8_0);
  EXPECT_EQ(w.lm_head.dtype, DType::kQ8_0);
  EXPECT_EQ(w.layers[1].q.dtype, DType::kQ8_0);
  EXPECT_EQ(w.layers[1].o.dtype, DType::kQ8_0);
  EXPECT_EQ(w.layers[1].experts[2].up.dtype, DType::kQ8_0);
  EXPECT_EQ(w.layers[1].router.dtype, DType::kF32);
  const std::vector<float> expected = Logits(*f32);
  const std::vector<float> got = Logits(*q8);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_NE(got, expected);
  const size_t vocab = f32->config().vocab_size;
  float scale = 0, worst = 0;
  int same_argmax = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    scale = std::max(scale, std::abs(expected[i]));
    worst = std::max(worst, std::abs(got[i] - expected[i]));
  }
  for (size_t t = 0; t < kPrompt.size(); ++t) {
    const auto row = [&](const std::vector<float>& l) {
      return std::max_element(l.begin() + t * vocab, l.begin() + (t + 1) * vocab) - (l.begin() + t * vocab);
    };
    same_argmax += row(got) == row(expected);
  }
  EXPECT_LT(worst, 0.04f * scale) << "largest difference " << worst << " of logits up to " << scale;
  EXPECT_GE(same_argmax, 10);
  std::printf("[ measure  ] %s q8_0: worst |dlogit| %.4f of max %.3f (%.2f%%), argmax agrees %d/%zu\n",
              family().c_str(), worst, scale, 100 * worst / scale, same_argmax, kPrompt.size());
}

// `expertd pack --model file.gguf` keeps the experts' GGUF type (Q8_0 here)
// and the model runs offloaded from that file exactly as it runs resident:
// the packed blocks are the file's blocks.
TEST_P(GgufWeights, PacksItsExpertsInTheirOwnTypeAndRunsOffloaded) {
  const std::string path = Fixture(family(), "q8_0");
  std::unique_ptr<model::Model> resident = LoadOrDie(path);
  std::unique_ptr<model::Model> offloaded = LoadOrDie(path, {.resident_experts = false});
  ASSERT_TRUE(resident && offloaded);
  EXPECT_EQ(resident->fingerprint(), offloaded->fingerprint());
  EXPECT_THAT(offloaded->DefaultExpertFilePath(), ::testing::EndsWith("-q8_0.experts"));
  const std::string packed = dir_.Sub("model.experts");
  ASSERT_TRUE(PackExperts(*offloaded, packed, std::nullopt).ok());
  auto file = io::ExpertFile::Open(packed, offloaded->fingerprint());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->layout().dtypes, io::BundleDtypes::Uniform(DType::kQ8_0));
  io::ReaderOptions reader_options;
  reader_options.path = packed;
  auto reader = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  cache::ExpertCacheOptions options;
  options.dram_budget_bytes = 4 * (*file)->layout().slot_bytes();
  options.min_slots = 4;
  auto cache = cache::ExpertCache::Create(**file, **reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  CachedExperts experts(**cache, **file);
  EXPECT_EQ(Logits(*offloaded, &experts), Logits(*resident));
}

// llama.cpp's logits on the same files (make_gguf_llamacpp_reference.sh,
// llama.cpp's CPU backend, one thread), committed as <name>.llamacpp.f32.
// Two implementations of the same graph, so not bit-identical: llama.cpp
// keeps its KV cache in F16 (the largest difference on F32 files: keys and
// values rounded to 11 bits), rounds the activation rows to BF16 for BF16
// weights and to its own Q8_0 blocks for Q8_0 weights, and sums in its own
// order. Measured worst differences, of the largest logit: F32 0.03-0.06%,
// BF16 0.30-0.44%, Q8_0 1.03-1.66%, argmax 12 of 12 everywhere (gpt-oss:
// F32 0.059%, BF16 0.42%, Q8_0 1.31%; its fixture's YaRN ramp ends round to
// themselves, so llama.cpp's always-rounded ramp is HF's unrounded one
// there: see make_gguf_weight_fixtures.py). Bounds: F32
// 1e-3, BF16 2%, Q8_0 3%; argmax 12 of 12 on F32, 11 of 12 otherwise.
TEST_P(GgufWeights, LogitsMatchLlamaCppOnTheSameFile) {
  for (const auto& [dtype, tolerance] :
       {std::pair<std::string, float>{"f32", 1e-3f}, {"bf16", 0.02f}, {"q8_0", 0.03f}}) {
    SCOPED_TRACE(dtype);
    const std::string reference_bytes = ReadAll(kTestdata + "/" + family() + "-" + dtype + ".llamacpp.f32");
    std::unique_ptr<model::Model> model = LoadOrDie(Fixture(family(), dtype));
    ASSERT_TRUE(model);
    const std::vector<float> got = Logits(*model);
    ASSERT_EQ(reference_bytes.size(), got.size() * sizeof(float));
    std::vector<float> reference(got.size());
    std::memcpy(reference.data(), reference_bytes.data(), reference_bytes.size());
    const size_t vocab = model->config().vocab_size;
    float scale = 0, worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      scale = std::max(scale, std::abs(reference[i]));
      worst = std::max(worst, std::abs(got[i] - reference[i]));
    }
    int same_argmax = 0;
    for (size_t t = 0; t < kPrompt.size(); ++t) {
      const auto row = [&](const std::vector<float>& l) {
        return std::max_element(l.begin() + t * vocab, l.begin() + (t + 1) * vocab) - (l.begin() + t * vocab);
      };
      same_argmax += row(got) == row(reference);
    }
    std::printf("[ measure  ] %s %s vs llama.cpp: worst |dlogit| %.6f of max %.3f (%.4f%%), argmax agrees %d/%zu\n",
                family().c_str(), dtype.c_str(), worst, scale, 100 * worst / scale, same_argmax, kPrompt.size());
    EXPECT_LT(worst, tolerance * scale);
    EXPECT_GE(same_argmax, dtype == "f32" ? 12 : 11);
  }
}

float WorstDifference(const std::vector<float>& a, const std::vector<float>& b, float* scale);

INSTANTIATE_TEST_SUITE_P(Families, GgufWeights,
                         ::testing::Values("olmoe", "qwen2moe", "qwen3moe", "mixtral", "gpt-oss"));

// make_gguf_weight_fixtures.py's DEEPSEEK2 (or DEEPSEEK2_LITE).
tools::MakeModelOptions DeepseekOptions(const std::string& dtype, bool lite = false) {
  tools::MakeModelOptions o = FamilyOptions("mixtral", dtype);
  o.arch = "deepseek_v2";
  o.kv_heads = 2;
  o.q_lora_rank = 24;
  o.kv_lora_rank = 32;
  o.dense_ffn = 32;
  o.first_dense_layers = 1;
  o.shared_experts = 1;
  o.routed_scaling_factor = 1.5f;
  o.seed = 19;
  if (lite) {
    o.q_lora_rank = 0;
    o.shared_experts = 2;
    o.routed_scaling_factor = 1.0f;
    o.yarn_factor = 4.0f;
    o.yarn_original_max_position = 64;
    o.seed = 20;
  }
  return o;
}

// DeepSeek-V2 from llama.cpp's deepseek2 layout (attn_kv_b whole; the
// low-rank query, the latent and its norm, a dense first layer, a shared
// expert, routed_scaling_factor as expert_weights_scale): the same config
// and logits as the HF directory, bit for bit, for F32 and BF16; and near
// llama.cpp's on the same file. llama.cpp decompresses the latent into
// per-head keys and values and keeps them in its F16 KV cache, and it
// normalises q_a and kv_a with the file's rms epsilon (1e-5 here) where
// DeepSeek's code keeps RMSNorm's default 1e-6 (MlaConfig::kLatentNormEps):
// measured F32 0.040%, BF16 0.67% of the largest logit, bounded like the
// other families' (F32 1e-3, BF16 2%). The same F32 model as llama.cpp's
// converter now writes it, kv_b split into attn_k_b (each head's key rows
// transposed) and attn_v_b, is reassembled on load into the same kv_b, so
// the same logits; llama.cpp runs that file through its absorbed-MLA path
// (an F16 cache of the latent): measured 0.036%. And a V2-Lite-like model
// (plain q_proj, two shared experts, YaRN x4 with mscale = mscale_all_dim
// = 0.707, split): llama.cpp's YaRN (rope.scaling.yarn_log_multiplier,
// kq_scale = mscale^2 / sqrt(head)) agrees with DeepSeek's: 0.051%.
TEST(GgufWeightsDeepseek, LoadsAsTheHfDirectoryAndMatchesLlamaCpp) {
  ScopedTempDir dir("gguf_weights_deepseek");
  struct Case {
    std::string file, dtype;
    float tolerance;
    bool lite = false;
  };
  for (const Case& c : {Case{"f32", "f32", 1e-3f}, Case{"bf16", "bf16", 0.02f}, Case{"split-f32", "f32", 1e-3f},
                        Case{"lite-f32", "f32", 1e-3f, true}}) {
    const std::string& dtype = c.dtype;
    const float tolerance = c.tolerance;
    SCOPED_TRACE(c.file);
    std::unique_ptr<model::Model> hf =
        LoadOrDie(testing::MakeTestModel(dir, "hf-" + c.file, DeepseekOptions(dtype, c.lite)));
    std::unique_ptr<model::Model> gguf = LoadOrDie(kTestdata + "/deepseek2-" + c.file + ".gguf");
    ASSERT_TRUE(hf && gguf);
    const model::ModelConfig& a = hf->config();
    const model::ModelConfig& b = gguf->config();
    EXPECT_EQ(b.architecture, model::Architecture::kDeepseekV2);
    ASSERT_TRUE(a.mla && b.mla);
    EXPECT_EQ(b.mla->q_lora_rank, c.lite ? 0 : 24);
    EXPECT_EQ(b.mla->kv_lora_rank, a.mla->kv_lora_rank);
    EXPECT_EQ(b.mla->qk_nope_head_dim, a.mla->qk_nope_head_dim);
    EXPECT_EQ(b.mla->qk_rope_head_dim, a.mla->qk_rope_head_dim);
    EXPECT_EQ(b.mla->v_head_dim, a.mla->v_head_dim);
    EXPECT_EQ(b.head_dim, a.head_dim);
    EXPECT_EQ(b.num_kv_heads, a.num_kv_heads);
    EXPECT_EQ(b.layer_is_moe, (std::vector<bool>{false, true}));
    EXPECT_EQ(b.dense_intermediate_size, a.dense_intermediate_size);
    EXPECT_EQ(b.shared_expert_intermediate_size, a.shared_expert_intermediate_size);
    EXPECT_FALSE(b.shared_expert_gated);
    EXPECT_EQ(b.routed_scaling_factor, a.routed_scaling_factor);
    ASSERT_EQ(b.yarn.has_value(), c.lite);
    if (c.lite) {
      EXPECT_EQ(b.yarn->factor, a.yarn->factor);
      EXPECT_EQ(b.yarn->original_max_position_embeddings, a.yarn->original_max_position_embeddings);
      EXPECT_FLOAT_EQ(b.yarn->mscale, a.yarn->mscale);
      EXPECT_FLOAT_EQ(b.yarn->mscale_all_dim, a.yarn->mscale_all_dim);
      EXPECT_EQ(b.yarn->truncate, a.yarn->truncate);
    }
    EXPECT_EQ(b.norm_topk_prob, a.norm_topk_prob);
    EXPECT_EQ(b.topk_method, model::TopkMethod::kGreedy);
    for (int layer = 0; layer < 2; ++layer) {
      const kernels::WeightMatrix& x = hf->weights().layers[layer].kv_b;
      const kernels::WeightMatrix& y = gguf->weights().layers[layer].kv_b;
      EXPECT_EQ(y.dtype, dtype == "f32" ? DType::kF32 : DType::kBF16);
      ASSERT_EQ(y.size_bytes(), x.size_bytes());
      EXPECT_EQ(std::memcmp(x.data, y.data, static_cast<size_t>(x.size_bytes())), 0) << "kv_b of layer " << layer;
    }
    const std::vector<float> got = Logits(*gguf);
    if (!c.lite) {
      EXPECT_EQ(got, Logits(*hf));
    } else {
      // GGUF keeps 0.1 x mscale_all_dim as an F32 (0.0707f), which divides
      // back to 0.70699996, not config.json's 0.707f: the YaRN scales differ
      // in the last bits, so the logits agree closely, not exactly.
      float scale = 0;
      const float worst = WorstDifference(got, Logits(*hf), &scale);
      EXPECT_LT(worst, 1e-5f * scale);
    }

    const std::string reference_bytes = ReadAll(kTestdata + "/deepseek2-" + c.file + ".llamacpp.f32");
    ASSERT_EQ(reference_bytes.size(), got.size() * sizeof(float));
    std::vector<float> reference(got.size());
    std::memcpy(reference.data(), reference_bytes.data(), reference_bytes.size());
    float scale = 0;
    const float worst = WorstDifference(got, reference, &scale);
    std::printf("[ measure  ] deepseek2 %s vs llama.cpp: worst |dlogit| %.6f of max %.3f (%.4f%%)\n", c.file.c_str(),
                worst, scale, 100 * worst / scale);
    EXPECT_LT(worst, tolerance * scale);
  }
}

// gpt-oss with its experts in MXFP4, as the released checkpoints ship them
// (testdata/gguf_weights/gpt-oss-mxfp4.gguf: the converter repacks HF's
// blocks, element 2k in byte k's low nibble, into GGML's block_mxfp4,
// element j in byte j's low nibble and j + 16 in its high one). The blocks
// are the ones expertd makes of the HF directory, so the logits are the
// same bit for bit; the experts pack in MXFP4 and run offloaded exactly as
// resident; and llama.cpp on the same file agrees as on Q8_0 files (each
// side rounds the activations to its own 8-bit blocks for the MXFP4 dot
// products, and llama.cpp's KV cache is F16).
TEST(GgufWeightsGptOss, Mxfp4ExpertsAreTheHfCheckpointsAndMatchLlamaCpp) {
  ScopedTempDir dir("gguf_weights_gpt_oss_mxfp4");
  tools::MakeModelOptions options = FamilyOptions("gpt-oss", "f32");
  options.mxfp4_experts = true;
  options.seed = 17;
  const std::string path = kTestdata + "/gpt-oss-mxfp4.gguf";
  std::unique_ptr<model::Model> hf = LoadOrDie(testing::MakeTestModel(dir, "hf", options));
  std::unique_ptr<model::Model> gguf = LoadOrDie(path);
  std::unique_ptr<model::Model> offloaded = LoadOrDie(path, {.resident_experts = false});
  ASSERT_TRUE(hf && gguf && offloaded);
  EXPECT_EQ(gguf->weights().layers[1].experts[2].gate.dtype, DType::kMXFP4);
  EXPECT_EQ(gguf->weights().layers[1].experts[2].down.dtype, DType::kMXFP4);
  EXPECT_EQ(gguf->weights().layers[1].q.dtype, DType::kF32);
  const std::vector<float> got = Logits(*gguf);
  EXPECT_EQ(got, Logits(*hf));

  const std::string packed = dir.Sub("model.experts");
  ASSERT_TRUE(PackExperts(*offloaded, packed, std::nullopt).ok());
  auto file = io::ExpertFile::Open(packed, offloaded->fingerprint());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->layout().dtypes, io::BundleDtypes::Uniform(DType::kMXFP4));
  io::ReaderOptions reader_options;
  reader_options.path = packed;
  auto reader = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  cache::ExpertCacheOptions cache_options;
  cache_options.dram_budget_bytes = 2 * (*file)->layout().slot_bytes();
  cache_options.min_slots = 2;  // top-2 of 4: every token evicts
  auto cache = cache::ExpertCache::Create(**file, **reader, std::move(cache_options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  CachedExperts experts(**cache, **file);
  EXPECT_EQ(Logits(*offloaded, &experts), got);

  const std::string reference_bytes = ReadAll(kTestdata + "/gpt-oss-mxfp4.llamacpp.f32");
  ASSERT_EQ(reference_bytes.size(), got.size() * sizeof(float));
  std::vector<float> reference(got.size());
  std::memcpy(reference.data(), reference_bytes.data(), reference_bytes.size());
  float scale = 0;
  const float worst = WorstDifference(got, reference, &scale);
  std::printf("[ measure  ] gpt-oss mxfp4 vs llama.cpp: worst |dlogit| %.6f of max %.3f (%.4f%%)\n", worst, scale,
              100 * worst / scale);
  EXPECT_LT(worst, 0.03f * scale);
}

// gpt-oss's GGUF says in llama.cpp's keys (or, for the SwiGLU clamp and
// YaRN's unrounded ramp, by being gpt-oss) what its config.json says, and
// its split experts and their biases are HF's fused ones rearranged.
TEST(GgufWeightsGptOss, ConfigAndExpertsAreTheHfDirectorys) {
  ScopedTempDir dir("gguf_weights_gpt_oss");
  std::unique_ptr<model::Model> hf = LoadOrDie(testing::MakeTestModel(dir, "hf", FamilyOptions("gpt-oss", "f32")));
  std::unique_ptr<model::Model> gguf = LoadOrDie(Fixture("gpt-oss", "f32"));
  ASSERT_TRUE(hf && gguf);
  const model::ModelConfig& a = hf->config();
  const model::ModelConfig& b = gguf->config();
  EXPECT_EQ(b.architecture, model::Architecture::kGptOss);
  EXPECT_EQ(b.head_dim, 16);
  EXPECT_EQ(b.num_kv_heads, a.num_kv_heads);
  EXPECT_EQ(b.expert_intermediate_size, a.expert_intermediate_size);
  EXPECT_EQ(b.sliding_window, 4);
  EXPECT_EQ(b.layer_is_sliding, a.layer_is_sliding);
  EXPECT_EQ(b.layer_is_sliding, (std::vector<bool>{true, false}));
  EXPECT_EQ(b.rope_theta, a.rope_theta);
  EXPECT_EQ(b.rms_norm_eps, a.rms_norm_eps);
  EXPECT_TRUE(b.attention_sinks && b.attention_bias && b.attention_output_bias && b.router_bias && b.expert_bias);
  EXPECT_TRUE(b.norm_topk_prob);
  EXPECT_FALSE(b.tie_word_embeddings);
  ASSERT_TRUE(a.clamped_swiglu && b.clamped_swiglu);
  EXPECT_EQ(b.clamped_swiglu->alpha, a.clamped_swiglu->alpha);
  EXPECT_EQ(b.clamped_swiglu->limit, a.clamped_swiglu->limit);
  ASSERT_TRUE(a.yarn && b.yarn);
  EXPECT_EQ(b.yarn->factor, 32.0f);
  EXPECT_EQ(b.yarn->original_max_position_embeddings, 16);
  EXPECT_EQ(b.yarn->beta_fast, a.yarn->beta_fast);
  EXPECT_EQ(b.yarn->beta_slow, a.yarn->beta_slow);
  EXPECT_FALSE(b.yarn->truncate);
  EXPECT_EQ(b.yarn->attention_factor, a.yarn->attention_factor);
  const int64_t hidden = a.hidden_size, ffn = a.expert_intermediate_size;
  for (int layer = 0; layer < a.num_layers; ++layer) {
    const model::LayerWeights& x = hf->weights().layers[layer];
    const model::LayerWeights& y = gguf->weights().layers[layer];
    EXPECT_EQ(y.sinks, x.sinks);
    EXPECT_EQ(y.o_bias, x.o_bias);
    EXPECT_EQ(y.router_bias, x.router_bias);
    EXPECT_EQ(y.expert_gate_bias, x.expert_gate_bias);
    EXPECT_EQ(y.expert_up_bias, x.expert_up_bias);
    EXPECT_EQ(y.expert_down_bias, x.expert_down_bias);
    for (int e = 0; e < a.num_experts; ++e) {
      for (auto [m, n] : {std::pair{&model::FeedForwardWeights::gate, ffn * hidden}, {&model::FeedForwardWeights::up, ffn * hidden},
                          {&model::FeedForwardWeights::down, hidden * ffn}}) {
        const kernels::WeightMatrix& u = x.experts[e].*m;
        const kernels::WeightMatrix& v = y.experts[e].*m;
        ASSERT_EQ(v.rows, u.rows);
        EXPECT_EQ(std::memcmp(u.data, v.data, static_cast<size_t>(n) * sizeof(float)), 0)
            << "layer " << layer << " expert " << e;
      }
    }
  }
}

// make_gguf_kquant_fixture.sh's model: 256 wide, as K-quant rows are whole
// 256-element super-blocks.
tools::MakeModelOptions KQuantOptions() {
  tools::MakeModelOptions o;
  o.arch = "qwen3_moe";
  o.layers = 2;
  o.hidden = 256;
  o.heads = 4;
  o.kv_heads = 1;
  o.experts = 2;
  o.top_k = 2;
  o.ffn = 256;
  o.vocab = 260;
  o.max_position = 512;
  o.norm_topk_prob = true;
  o.tie_embeddings = true;
  o.seed = 15;
  o.dtype = "f32";
  return o;
}

float WorstDifference(const std::vector<float>& a, const std::vector<float>& b, float* scale) {
  float worst = 0;
  *scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    *scale = std::max(*scale, std::abs(b[i]));
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}

// A Q4_K_M file from llama.cpp's own quantizer: Q4_K and Q6_K mixed as in
// the files people download (the tied embedding, layer 1's attn_v and its
// experts' down projection Q6_K, the rest Q4_K), so the embedding lookup
// dequantizes Q6_K rows and the LM head, attention and experts run both
// K-quant kernels. Its logits stay near the F32 model it was quantized from
// (4.5 to 6.6 bits per weight; measured 2.84% of the largest logit, bounded
// at 10%) and near llama.cpp's on the same file (the same blocks; each side
// rounds the activations to its own 8-bit blocks and llama.cpp's KV cache
// is F16: measured 0.50%, bounded at 3%). Top-2 of 2 experts, so no routing
// choice can flip between the two: with top-1 the same file gave 23% at one
// position where llama.cpp's rounding picked the other expert (expertd's
// stayed within 2.7% of the F32 model at every position; on the F32 file the
// two agree to 0.01%).
TEST(GgufWeightsKQuant, Q4KMRunsNearTheF32ModelAndLlamaCpp) {
  ScopedTempDir dir("gguf_weights_kquant");
  const std::string path = kTestdata + "/qwen3moe-q4_k_m.gguf";
  std::unique_ptr<model::Model> f32 = LoadOrDie(testing::MakeTestModel(dir, "f32", KQuantOptions()));
  std::unique_ptr<model::Model> model = LoadOrDie(path);
  ASSERT_TRUE(f32 && model);
  const model::ModelWeights& w = model->weights();
  EXPECT_EQ(w.embedding.dtype, DType::kQ6_K);
  EXPECT_EQ(w.lm_head.data, w.embedding.data);
  EXPECT_EQ(w.layers[0].q.dtype, DType::kQ4_K);
  EXPECT_EQ(w.layers[1].v.dtype, DType::kQ6_K);
  EXPECT_EQ(w.layers[0].experts[1].down.dtype, DType::kQ4_K);
  EXPECT_EQ(w.layers[1].experts[1].down.dtype, DType::kQ6_K);
  EXPECT_EQ(w.layers[1].experts[1].gate.dtype, DType::kQ4_K);
  const std::vector<float> got = Logits(*model);
  float scale = 0;
  const float from_f32 = WorstDifference(got, Logits(*f32), &scale);
  std::printf("[ measure  ] q4_k_m vs the f32 model: worst |dlogit| %.4f of max %.3f (%.2f%%)\n", from_f32, scale,
              100 * from_f32 / scale);
  EXPECT_LT(from_f32, 0.10f * scale);
  const std::string reference_bytes = ReadAll(kTestdata + "/qwen3moe-q4_k_m.llamacpp.f32");
  ASSERT_EQ(reference_bytes.size(), got.size() * sizeof(float));
  std::vector<float> reference(got.size());
  std::memcpy(reference.data(), reference_bytes.data(), reference_bytes.size());
  const float from_llamacpp = WorstDifference(got, reference, &scale);
  std::printf("[ measure  ] q4_k_m vs llama.cpp: worst |dlogit| %.4f of max %.3f (%.2f%%)\n", from_llamacpp, scale,
              100 * from_llamacpp / scale);
  EXPECT_LT(from_llamacpp, 0.03f * scale);
}

// `expertd pack` of a Q4_K_M file keeps each matrix's own type (the default,
// "keep"): layer 0's experts q4_k throughout, layer 1's q4_k/q4_k/q6_k, in
// one version-2 file whose slots fit the larger bundle. The bundles are the
// GGUF's own blocks, so the model offloaded through a cache of two slots
// (of four experts: every token evicts) computes exactly the resident
// logits. --dtype q4_k still converts every matrix.
TEST(GgufWeightsKQuant, Q4KMPacksEachMatrixInItsOwnTypeAndOffloadsExactly) {
  ScopedTempDir dir("gguf_weights_kquant_pack");
  const std::string path = kTestdata + "/qwen3moe-q4_k_m.gguf";
  std::unique_ptr<model::Model> resident = LoadOrDie(path);
  std::unique_ptr<model::Model> offloaded = LoadOrDie(path, {.resident_experts = false});
  ASSERT_TRUE(resident && offloaded);
  const std::string packed = dir.Sub("q4_k_m.experts");
  ASSERT_TRUE(PackExperts(*offloaded, packed, std::nullopt).ok());
  auto file = io::ExpertFile::Open(packed, offloaded->fingerprint());
  ASSERT_TRUE(file.ok()) << file.status();
  const io::BundleDtypes q4_k = io::BundleDtypes::Uniform(DType::kQ4_K);
  const io::BundleDtypes q4_k_m{DType::kQ4_K, DType::kQ4_K, DType::kQ6_K};
  EXPECT_EQ((*file)->version(), 3u);
  EXPECT_EQ((*file)->layout().dtypes, q4_k_m);
  // hidden = ffn = 256: a q4_k matrix is 256 rows of one 144-byte block, a
  // q6_k one 256 rows of 210 bytes; the slot is the larger bundle, 127488
  // bytes, rounded up to 4096.
  EXPECT_EQ((*file)->layout().expert_bytes(), 2u * 36864 + 53760);
  EXPECT_EQ((*file)->layout().slot_bytes(), 131072u);
  EXPECT_EQ(io::DescribeDtypeMix((*file)->dtype_mix()), "q4_k x 2, q4_k/q4_k/q6_k x 2");
  for (int layer = 0; layer < 2; ++layer) {
    for (int e = 0; e < 2; ++e) {
      SCOPED_TRACE(absl::StrCat("layer ", layer, " expert ", e));
      auto extent = (*file)->Find(layer, e);
      ASSERT_TRUE(extent.ok()) << extent.status();
      EXPECT_EQ(extent->dtypes, layer == 0 ? q4_k : q4_k_m);
      // The bundle is the GGUF's blocks, byte for byte.
      const model::FeedForwardWeights& w = resident->weights().layers[layer].experts[e];
      std::string bundle(extent->length, '\0');
      std::ifstream in(packed, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(extent->offset));
      in.read(bundle.data(), static_cast<std::streamsize>(bundle.size()));
      std::string expected;
      for (const kernels::WeightMatrix* m : {&w.gate, &w.up, &w.down}) {
        expected.append(reinterpret_cast<const char*>(m->data), static_cast<size_t>(m->size_bytes()));
      }
      EXPECT_TRUE(bundle == expected);
    }
  }

  io::ReaderOptions reader_options;
  reader_options.path = packed;
  auto reader = io::OpenExpertReader(reader_options);
  ASSERT_TRUE(reader.ok()) << reader.status();
  cache::ExpertCacheOptions options;
  options.dram_budget_bytes = 2 * (*file)->layout().slot_bytes();
  options.min_slots = 2;  // top-2
  auto cache = cache::ExpertCache::Create(**file, **reader, std::move(options));
  ASSERT_TRUE(cache.ok()) << cache.status();
  CachedExperts experts(**cache, **file);
  {
    // The views follow each expert's own bundle.
    auto handle = experts.Acquire(1, 0);
    ASSERT_TRUE(handle.ok()) << handle.status();
    EXPECT_EQ(handle->weights.gate.dtype, DType::kQ4_K);
    EXPECT_EQ(handle->weights.down.dtype, DType::kQ6_K);
    handle = experts.Acquire(0, 1);
    ASSERT_TRUE(handle.ok()) << handle.status();
    EXPECT_EQ(handle->weights.down.dtype, DType::kQ4_K);
  }
  EXPECT_EQ(Logits(*offloaded, &experts), Logits(*resident));
  EXPECT_GT((*cache)->stats().dram.evictions, 0u) << "two slots for four experts: the cache must have evicted";

  const std::string converted = dir.Sub("q4_k.experts");
  ASSERT_TRUE(PackExperts(*offloaded, converted, DType::kQ4_K).ok());
  auto uniform = io::ExpertFile::Open(converted, offloaded->fingerprint());
  ASSERT_TRUE(uniform.ok()) << uniform.status();
  EXPECT_EQ((*uniform)->layout().dtypes, q4_k);
  EXPECT_EQ((*uniform)->layout().slot_bytes(), 3u * 36864);
  EXPECT_EQ(io::DescribeDtypeMix((*uniform)->dtype_mix()), "q4_k x 4");
}

// Qwen3-MoE's GGUF has no output.weight: the LM head is the embedding.
TEST(GgufWeightsTied, AbsentOutputIsTheEmbedding) {
  std::unique_ptr<model::Model> model = LoadOrDie(Fixture("qwen3moe", "bf16"));
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->config().tie_word_embeddings);
  EXPECT_EQ(model->weights().lm_head.data, model->weights().embedding.data);
  std::unique_ptr<model::Model> untied = LoadOrDie(Fixture("olmoe", "bf16"));
  ASSERT_TRUE(untied);
  EXPECT_NE(untied->weights().lm_head.data, untied->weights().embedding.data);
}

TEST(GgufWeightsMapping, NamesFollowLlamaCpp) {
  auto file = formats::GgufFile::Open(Fixture("mixtral", "f32"));
  ASSERT_TRUE(file.ok()) << file.status();
  model::ModelConfig config;
  config.architecture = model::Architecture::kMixtral;
  config.num_heads = 2;
  config.num_kv_heads = 1;
  model::GgufTensorSource source(std::move(*file), config);
  auto q = source.Map("model.layers.1.self_attn.q_proj.weight");
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->gguf_name, "blk.1.attn_q.weight");
  EXPECT_EQ(q->permuted_heads, 2);
  EXPECT_EQ(source.Map("model.layers.1.self_attn.k_proj.weight")->permuted_heads, 1);
  EXPECT_EQ(source.Map("model.layers.1.self_attn.v_proj.weight")->permuted_heads, 0);
  auto w2 = source.Map("model.layers.0.block_sparse_moe.experts.3.w2.weight");
  ASSERT_TRUE(w2.has_value());
  EXPECT_EQ(w2->gguf_name, "blk.0.ffn_down_exps.weight");
  EXPECT_EQ(w2->expert, 3);
  EXPECT_FALSE(source.Map("model.layers.x.mlp.gate.weight").has_value());
  // An expert past the stack is refused by name.
  auto missing = source.Get("model.layers.0.block_sparse_moe.experts.9.w1.weight", {32, 32});
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("blk.0.ffn_gate_exps.weight"));
}

// Rewrites the type of tensor `name` in a copy of the GGUF at `from`: the
// tensor info is the name, n_dims (u32), n_dims u64 dimensions, the type
// (u32) and the offset (u64).
std::string WithTensorType(const std::string& from, const std::string& to, const std::string& name, uint32_t type) {
  std::string bytes = ReadAll(from);
  std::string key;
  const uint64_t length = name.size();
  key.append(reinterpret_cast<const char*>(&length), 8);
  key += name;
  const size_t at = bytes.find(key);
  EXPECT_NE(at, std::string::npos) << name;
  if (at == std::string::npos) return to;
  size_t p = at + key.size();
  uint32_t dims = 0;
  std::memcpy(&dims, bytes.data() + p, 4);
  p += 4 + 8 * static_cast<size_t>(dims);
  std::memcpy(bytes.data() + p, &type, 4);
  WriteAll(to, bytes);
  return to;
}

TEST(GgufWeightsErrors, AnUnsupportedTypeIsRefusedNamingTheTensor) {
  ScopedTempDir dir("gguf_weights_type");
  // I16 has BF16's width, so the file stays well formed; expertd cannot
  // compute with it.
  const std::string path = WithTensorType(Fixture("olmoe", "bf16"), dir.Sub("i16.gguf"), "blk.1.attn_v.weight", 25);
  auto model = model::Model::Load(path);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented) << model.status();
  const std::string message(model.status().message());
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("blk.1.attn_v.weight"));
  EXPECT_THAT(message, HasSubstr("I16"));
}

TEST(GgufWeightsErrors, ATruncatedFileFailsWithAClearError) {
  ScopedTempDir dir("gguf_weights_truncated");
  const std::string bytes = ReadAll(Fixture("qwen2moe", "q8_0"));
  ASSERT_GT(bytes.size(), 4096u);
  for (size_t size : {size_t{0}, size_t{3}, size_t{24}, size_t{200}, size_t{2000}, bytes.size() / 2,
                      bytes.size() - 1}) {
    SCOPED_TRACE(size);
    const std::string path = dir.Sub("cut.gguf");
    WriteAll(path, bytes.substr(0, size));
    auto model = model::Model::Load(path);
    ASSERT_FALSE(model.ok());
    EXPECT_THAT(std::string(model.status().message()), HasSubstr(path));
  }
}

TEST(GgufWeightsErrors, ANonGgufFileIsNotAModel) {
  ScopedTempDir dir("gguf_weights_text");
  const std::string path = dir.Sub("notes.txt");
  WriteAll(path, "not a model at all, but long enough to have a header's worth of bytes");
  auto model = model::Model::Load(path);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(path));
}

}  // namespace
}  // namespace expertd::engine
