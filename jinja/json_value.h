#ifndef EXPERTD_JINJA_JSON_VALUE_H_
#define EXPERTD_JINJA_JSON_VALUE_H_

#include "jinja/value.h"
#include "nlohmann/json.hpp"

namespace expertd::jinja {

// A JSON document as template values: objects become dicts in the order
// their keys were read (ordered_json keeps it), arrays lists, integers ints
// (unsigned ones past INT64_MAX become floats), null None.
Value ValueFromJson(const nlohmann::ordered_json& json);
// The same from nlohmann::json, whose objects iterate in key order.
Value ValueFromJson(const nlohmann::json& json);

}  // namespace expertd::jinja

#endif  // EXPERTD_JINJA_JSON_VALUE_H_
