#include "jinja/json_value.h"

#include <cstdint>
#include <limits>

namespace expertd::jinja {

namespace {

template <typename Json>
Value Convert(const Json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(json.template get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(json.template get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.template get<uint64_t>();
      if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return Value(static_cast<int64_t>(u));
      return Value(static_cast<double>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(json.template get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(json.template get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(Convert(item));
      return Value::MakeList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      for (const auto& [key, item] : json.items()) dict.Set(key, Convert(item));
      return Value::MakeDict(std::move(dict));
    }
    default:
      return Value::None();  // binary and discarded values do not come from parsed JSON text
  }
}

}  // namespace

Value ValueFromJson(const nlohmann::ordered_json& json) { return Convert(json); }
Value ValueFromJson(const nlohmann::json& json) { return Convert(json); }

}  // namespace expertd::jinja
