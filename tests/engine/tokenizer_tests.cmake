# Tokenizer and BPE-trainer unit tests; included from tests/engine/CMakeLists.txt.
expertd_test(tokenizer_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/tokenizer_test.cc LIBS expertd_tokenizer expertd_bpe_trainer)
