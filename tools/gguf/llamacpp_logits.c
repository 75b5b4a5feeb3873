// llama.cpp's logits of a token sequence on a GGUF file, every position, as
// float32 little-endian [n_tokens][n_vocab] on stdout: the reference
// tests/engine/make_gguf_llamacpp_reference.sh records for gguf_weights_test.
//
//   llamacpp_logits MODEL.gguf ID ID ... > logits.f32
//
// Built against a llama.cpp build (make_gguf_llamacpp_reference.sh says
// how); one thread, so llama.cpp's own sums do not depend on the machine's
// cores.
#include <stdio.h>
#include <stdlib.h>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.gguf ID [ID ...]\n", argv[0]);
    return 2;
  }
  const int n = argc - 2;
  llama_backend_init();
  struct llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  struct llama_model* model = llama_model_load_from_file(argv[1], model_params);
  if (model == NULL) {
    fprintf(stderr, "%s: llama.cpp cannot load it\n", argv[1]);
    return 1;
  }
  struct llama_context_params context_params = llama_context_default_params();
  context_params.n_ctx = 256;
  context_params.n_batch = 256;
  context_params.n_ubatch = 256;
  context_params.n_threads = 1;
  context_params.n_threads_batch = 1;
  struct llama_context* ctx = llama_init_from_model(model, context_params);
  if (ctx == NULL) {
    fprintf(stderr, "cannot make a llama.cpp context\n");
    return 1;
  }
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  struct llama_batch batch = llama_batch_init(n, 0, 1);
  for (int i = 0; i < n; ++i) {
    batch.token[i] = atoi(argv[i + 2]);
    batch.pos[i] = i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = 1;
  }
  batch.n_tokens = n;
  if (llama_decode(ctx, batch) != 0) {
    fprintf(stderr, "llama_decode failed\n");
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    const float* logits = llama_get_logits_ith(ctx, i);
    if (fwrite(logits, sizeof(float), (size_t)n_vocab, stdout) != (size_t)n_vocab) return 1;
  }
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
