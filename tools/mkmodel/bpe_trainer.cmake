# Byte-level BPE trainer for the test-model generator. Included from
# tools/mkmodel/CMakeLists.txt. It reuses tokenizer/'s
# pre-tokenizer so that training and encoding split text identically.
add_library(expertd_bpe_trainer ${CMAKE_CURRENT_LIST_DIR}/bpe_trainer.cc)
target_link_libraries(expertd_bpe_trainer
  PUBLIC nlohmann_json::nlohmann_json absl::status absl::statusor
  PRIVATE expertd_tokenizer PkgConfig::PCRE2 absl::strings absl::flat_hash_map)
