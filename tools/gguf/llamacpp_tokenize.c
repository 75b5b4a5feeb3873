// llama.cpp's tokenization of a list of texts with a GGUF file's vocabulary:
// the reference tests/model/make_gguf_vocab_fixtures.py records for
// gguf_tokenizer_test.
//
//   llamacpp_tokenize MODEL.gguf TEXTS > ids.txt
//
// TEXTS holds the texts separated by "\n__ggml_vocab_test__\n" (the format
// of llama.cpp's models/ggml-vocab-*.gguf.inp files). One output line per
// text, three tab-separated columns: the ids without the BOS/EOS the
// vocabulary asks for; the ids with them (special tokens written in the
// text are matched in both, as llama.cpp's server does for prompts); and
// llama.cpp's detokenization of the first column, special tokens kept, as
// hex bytes (it may hold newlines and tabs).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static const char kSeparator[] = "\n__ggml_vocab_test__\n";

static char* ReadFile(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  const long length = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* data = malloc((size_t)length + 1);
  if (data == NULL || fread(data, 1, (size_t)length, f) != (size_t)length) {
    fclose(f);
    free(data);
    return NULL;
  }
  fclose(f);
  data[length] = '\0';
  *size = (size_t)length;
  return data;
}

// The ids of text[0, length) into *ids (malloc'ed); their count, or -1.
static int Tokenize(const struct llama_vocab* vocab, const char* text, int length, int add_special, llama_token** ids) {
  const int capacity = length * 4 + 16;
  *ids = malloc(sizeof(llama_token) * (size_t)capacity);
  return llama_tokenize(vocab, text, length, *ids, capacity, add_special != 0, /*parse_special=*/true);
}

static void PrintIds(const llama_token* ids, int n) {
  for (int i = 0; i < n; ++i) printf(i == 0 ? "%d" : " %d", ids[i]);
}

static int PrintDetokenized(const struct llama_vocab* vocab, const llama_token* ids, int n, int capacity) {
  char* decoded = malloc((size_t)capacity);
  const int length = llama_detokenize(vocab, ids, n, decoded, capacity, /*remove_special=*/false,
                                      /*unparse_special=*/true);
  for (int i = 0; i < length; ++i) printf("%02x", (unsigned char)decoded[i]);
  free(decoded);
  return length < 0 ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.gguf TEXTS\n", argv[0]);
    return 2;
  }
  size_t size = 0;
  char* texts = ReadFile(argv[2], &size);
  if (texts == NULL) {
    fprintf(stderr, "%s: cannot read it\n", argv[2]);
    return 1;
  }
  llama_backend_init();
  struct llama_model_params model_params = llama_model_default_params();
  model_params.vocab_only = true;
  struct llama_model* model = llama_model_load_from_file(argv[1], model_params);
  if (model == NULL) {
    fprintf(stderr, "%s: llama.cpp cannot load it\n", argv[1]);
    return 1;
  }
  const struct llama_vocab* vocab = llama_model_get_vocab(model);
  const size_t separator_length = strlen(kSeparator);
  // As llama.cpp's test-tokenizer-0 splits them: a separator at the very
  // end closes the last text and starts none.
  for (char* text = texts; text < texts + size;) {
    char* end = strstr(text, kSeparator);
    const int length = end == NULL ? (int)(texts + size - text) : (int)(end - text);
    llama_token* plain = NULL;
    llama_token* with_special = NULL;
    const int n_plain = Tokenize(vocab, text, length, 0, &plain);
    const int n_with_special = Tokenize(vocab, text, length, 1, &with_special);
    if (n_plain < 0 || n_with_special < 0) return 1;
    PrintIds(plain, n_plain);
    printf("\t");
    PrintIds(with_special, n_with_special);
    printf("\t");
    if (PrintDetokenized(vocab, plain, n_plain, length * 8 + 64) != 0) return 1;
    printf("\n");
    free(plain);
    free(with_special);
    if (end == NULL) break;
    text = end + separator_length;
  }
  llama_model_free(model);
  free(texts);
  return 0;
}
