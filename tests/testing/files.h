#ifndef EXPERTD_TESTS_TESTING_FILES_H_
#define EXPERTD_TESTS_TESTING_FILES_H_

#include <fstream>
#include <iterator>
#include <string>

namespace expertd::testing {

// The whole file, or "" when it cannot be read.
inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `arg` as one word for /bin/sh, whatever it contains.
inline std::string ShellQuote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace expertd::testing

#endif  // EXPERTD_TESTS_TESTING_FILES_H_
