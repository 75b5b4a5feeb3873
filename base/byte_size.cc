#include "base/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace expertd {

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  const std::string original(text);
  text = absl::StripAsciiWhitespace(text);
  size_t split = 0;
  while (split < text.size() && (std::isdigit(static_cast<unsigned char>(text[split])) || text[split] == '.')) ++split;
  const absl::string_view number = text.substr(0, split);
  const std::string unit = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text.substr(split)));
  double value = 0;
  if (number.empty() || !absl::SimpleAtod(number, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("'", original, "' is not a byte size (try 1048576, 512MiB or 6GiB)"));
  }
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  const char* prefixes = "kmgt";
  for (int i = 0; i < 4 && scale == 0; ++i) {
    const std::string p(1, prefixes[i]);
    if (unit == p || unit == p + "ib") scale = std::pow(1024.0, i + 1);
    if (unit == p + "b") scale = std::pow(1000.0, i + 1);
  }
  if (scale == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", original, "' has an unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"));
  }
  const double bytes = value * scale;
  if (bytes >= 1.8e19) return absl::InvalidArgumentError(absl::StrCat("'", original, "' is too large"));
  return static_cast<uint64_t>(std::llround(bytes));
}

std::string FormatByteSize(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return buffer;
}

}  // namespace expertd
