// A JSON validator driven by tables that also writes the JSON Schema (draft 2020-12) of what it
// accepts, so that what is refused and what the schema says cannot drift apart. It knows nothing
// of ferryd: a caller describes its objects as ObjectSpec tables (control/config.cc holds
// ferryd's), validates a whole object tree with check_object(), then copies the already-valid
// values into its structs with take()/take_enum().
//
// Context: control, everything here. Checks return Ok or a kInvalidParams Error whose message
// starts with the JSON path of the offending value; the first error found ends the check.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "dataplane/result.h"

namespace ferry::json_schema {

using nlohmann::json;

/// A Rule's max that means "no bound" (and the schema says none).
inline constexpr uint64_t kUnbounded = std::numeric_limits<uint64_t>::max();

// ---------------------------------------------------------------------------------------------
// Rules: what a value may be. One Rule checks a value and describes it in the schema.

// kRawObject: any JSON object, checked by another parser later (e.g. flow rules, which need
// the ports to exist first).
enum class Kind { kBool, kUint, kString, kArray, kObject, kRawObject };

struct ObjectSpec;

struct Rule {
    Kind kind = Kind::kBool;
    uint64_t min = 0;           // kUint: value; kString: length in bytes; kArray: item count
    uint64_t max = kUnbounded;  // likewise, inclusive
    std::vector<std::string> one_of{};    // kString: the allowed values (empty = any)
    std::string pattern{};                // kString: anchored ECMA-262 regex (empty = any)
    std::string what{};                   // kString: message for a refused value ("must ...")
    std::shared_ptr<const Rule> items{};  // kArray: rule of every item
    bool unique = false;                  // kArray: items must differ
    const ObjectSpec* object = nullptr;   // kObject: the object's table
};

// One key of an object.
struct Field {
    std::string key{};
    Rule rule{};
    bool required = false;
    json default_value{};  // for the schema only; the parser leaves the struct's default in place
    std::string description{};
};

// Keys that exist only for one value of a discriminating key (e.g. "path" when type is
// "vhost-user"). The discriminator is a string field of the same object.
struct Variant {
    std::string value{};
    std::vector<Field> fields{};
};

struct Switch {
    std::string key{};
    std::vector<Variant> variants{};
};

struct ObjectSpec {
    std::string def_name{};  // non-empty: the schema holds it once under $defs and refers to it
    std::string description{};
    std::vector<Field> fields{};
    std::vector<Switch> switches{};
};

/// A boolean.
Rule boolean();
/// An integer in min..max (inclusive; negative integers are always refused).
Rule integer(uint64_t min, uint64_t max);
/// A string of min_bytes..max_bytes bytes; what: the message for a refused one ("must ...").
Rule text(uint64_t min_bytes, uint64_t max_bytes, std::string what = {});
/// A non-empty string matching an anchored ECMA-262 regex. libstdc++'s regex matcher recurses
/// about once per character: every pattern gets a length bound, checked before the regex runs,
/// so a hostile string cannot exhaust the stack.
Rule matching(std::string pattern, uint64_t max_bytes, std::string what);
/// A string among names (the JSON spelling of an enum, indexed by it).
template <size_t N>
Rule one_of(const std::array<std::string_view, N>& names) {
    Rule r{.kind = Kind::kString};
    for (std::string_view n : names) r.one_of.emplace_back(n);
    return r;
}
/// An array of min_items..max_items items, each checked by items; unique: no two equal.
Rule array_of(Rule items, uint64_t min_items, uint64_t max_items, bool unique);
/// An object checked against spec, which must outlive the Rule (the tables are static).
Rule object(const ObjectSpec& spec);
/// Any object (its content checked later by another parser); what describes it in the schema.
Rule raw_object(std::string what);

// ---------------------------------------------------------------------------------------------
// Validation.

/// Checks one value (and, for arrays and objects, everything inside it) against its rule.
/// @param path the value's JSON path, the prefix of error messages ("" for the root)
/// @return Ok, or kInvalidParams "path: must ..." naming the first offending value
Status check_value(const json& v, const Rule& r, const std::string& path);

/// Validates a whole object tree against its table. Errors come in a fixed order: the object's
/// type, unknown keys, base fields in table order (recursing), then the keys of each switch.
/// @return as check_value()
Status check_object(const json& v, const ObjectSpec& spec, const std::string& path);

/// Whether v nests deeper than limit levels. Recurses at most limit levels, so it is safe to call
/// before anything else walks v (copying or walking a JSON value recurses once per level).
bool deeper_than(const json& v, int limit);

// ---------------------------------------------------------------------------------------------
// Extraction of values that check_object() accepted.

/// The JSON spelling of an enum value, from its names array (indexed by the enum).
template <class E, size_t N>
std::string name_of(const std::array<std::string_view, N>& names, E value) {
    return std::string(names[static_cast<size_t>(value)]);
}

/// Copies obj[key] into out when present; out keeps its default otherwise. obj is validated.
template <class T>
void take(const json& obj, const char* key, T& out) {
    if (auto it = obj.find(key); it != obj.end()) it->get_to(out);
}

/// Copies the enum value whose name (in names, indexed by the enum) obj[key] holds, when present.
template <class E, size_t N>
void take_enum(const json& obj, const char* key, const std::array<std::string_view, N>& names,
               E& out) {
    auto it = obj.find(key);
    if (it == obj.end()) return;
    for (size_t i = 0; i < N; ++i) {
        if (names[i] == it->get_ref<const std::string&>()) out = static_cast<E>(i);
    }
}

/// obj[key], or an empty object when absent: an optional sub-object whose keys all have defaults.
const json& member_or_empty(const json& obj, const char* key);

// ---------------------------------------------------------------------------------------------
// The schema.

/// The JSON Schema (draft 2020-12) of documents root accepts, titled title. Objects with a
/// def_name are written once under $defs and referred to; a switch becomes one if/then per
/// variant. Context: control.
json document_schema(const ObjectSpec& root, const std::string& title);

}  // namespace ferry::json_schema
