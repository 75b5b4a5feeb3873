// llama.cpp's own quantizer (llama-quantize's library call) on a GGUF file:
//
//   llamacpp_quantize IN.gguf OUT.gguf q4_k_m|q5_k_m|q6_k
//
// For test fixtures in the K-quant mixes llama.cpp's users download (Q4_K_M
// keeps some tensors in Q6_K), which gguf-py cannot write. Build as
// tests/engine/make_gguf_kquant_fixture.sh does.
#include <stdio.h>
#include <string.h>

#include "llama.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s IN.gguf OUT.gguf q4_k_m|q5_k_m|q6_k\n", argv[0]);
    return 2;
  }
  struct llama_model_quantize_params params = llama_model_quantize_default_params();
  params.nthread = 1;
  if (strcmp(argv[3], "q4_k_m") == 0) {
    params.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M;
  } else if (strcmp(argv[3], "q5_k_m") == 0) {
    params.ftype = LLAMA_FTYPE_MOSTLY_Q5_K_M;
  } else if (strcmp(argv[3], "q6_k") == 0) {
    params.ftype = LLAMA_FTYPE_MOSTLY_Q6_K;
  } else {
    fprintf(stderr, "unknown type %s\n", argv[3]);
    return 2;
  }
  llama_backend_init();
  const uint32_t status = llama_model_quantize(argv[1], argv[2], &params);
  llama_backend_free();
  return status == 0 ? 0 : 1;
}
