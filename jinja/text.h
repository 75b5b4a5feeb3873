#ifndef EXPERTD_JINJA_TEXT_H_
#define EXPERTD_JINJA_TEXT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "jinja/value.h"

namespace expertd::jinja {

// Python's str operations on UTF-8 text, by code point where Python counts
// code points. Case mapping is ASCII only (jinja/README.md lists it among
// the differences from Python).

// The code points of `text`; a malformed byte stands for itself (U+FFFD
// would change the text when it is written back).
std::vector<uint32_t> CodePoints(const std::string& text);
void AppendCodePoint(uint32_t cp, std::string* out);
// A str's code points as separate UTF-8 strings (Python indexes and slices
// strings by code point).
std::vector<std::string> Characters(const std::string& text);

// str.isspace() for one code point.
bool IsPythonSpace(uint32_t c);
bool IsAsciiLetter(char c);
// str.strip/lstrip/rstrip: chars null (or None) strips whitespace.
std::string Strip(const std::string& s, const Value* chars, bool left, bool right);
std::string Upper(std::string s);
std::string Lower(std::string s);
std::string Title(const std::string& s);
std::string Capitalize(const std::string& s);
// str.replace; count < 0 replaces all.
std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
// Jinja2's escape(): & < > " ' as HTML entities.
std::string HtmlEscape(const std::string& text);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_TEXT_H_
