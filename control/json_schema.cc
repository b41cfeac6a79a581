// The table-driven JSON validator and the JSON Schema writer (control/json_schema.h): checking a
// value against a Rule, an object against its ObjectSpec, and turning the same tables into the
// schema. Context: control, everything in this file.
#include "control/json_schema.h"

#include <algorithm>
#include <regex>
#include <utility>

#include "control/json_path.h"

namespace ferry::json_schema {
namespace {

using json_path::at;
using json_path::invalid;

std::string quoted_list(const std::vector<std::string>& values, std::string_view separator) {
    std::string out;
    for (const std::string& v : values) {
        if (!out.empty()) out += separator;
        out += "\"" + v + "\"";
    }
    return out;
}

// The message for a value the rule refuses.
std::string describe(const Rule& r) {
    switch (r.kind) {
        case Kind::kBool:
            return "must be a boolean";
        case Kind::kUint:
            return "must be an integer in " + std::to_string(r.min) + ".." + std::to_string(r.max);
        case Kind::kString:
            if (!r.what.empty()) return r.what;
            if (!r.one_of.empty()) return "must be one of " + quoted_list(r.one_of, ", ");
            if (r.min == 0 && r.max == kUnbounded) return "must be a string";
            if (r.min == 1 && r.max == kUnbounded) return "must be a non-empty string";
            return "must be a string of " + std::to_string(r.min) + ".." + std::to_string(r.max) +
                   " bytes";
        case Kind::kArray:
            return "must be an array";
        case Kind::kObject:
        case Kind::kRawObject:
            return "must be an object";
    }
    return "is invalid";
}

// Checks obj's member f.key if present; refuses its absence when the field is required.
Status check_field(const json& obj, const Field& f, const std::string& path) {
    auto it = obj.find(f.key);
    if (it == obj.end()) return f.required ? Status(invalid(at(path, f.key), "required")) : Ok{};
    return check_value(*it, f.rule, at(path, f.key));
}

bool defines(const std::vector<Field>& fields, const std::string& key) {
    return std::any_of(fields.begin(), fields.end(), [&](const Field& f) { return f.key == key; });
}

bool defines(const Switch& sw, const std::string& key) {
    return std::any_of(sw.variants.begin(), sw.variants.end(),
                       [&](const Variant& v) { return defines(v.fields, key); });
}

bool defines(const ObjectSpec& spec, const std::string& key) {
    return defines(spec.fields, key) ||
           std::any_of(spec.switches.begin(), spec.switches.end(),
                       [&](const Switch& sw) { return defines(sw, key); });
}

const Field* base_field(const ObjectSpec& spec, const std::string& key) {
    for (const Field& f : spec.fields) {
        if (f.key == key) return &f;
    }
    return nullptr;
}

// Checks the keys that depend on a discriminator; its value was already checked as a base field.
Status check_switch(const json& obj, const ObjectSpec& spec, const Switch& sw,
                    const std::string& path) {
    auto it = obj.find(sw.key);
    const std::string chosen = it != obj.end()
                                   ? it->get<std::string>()
                                   : base_field(spec, sw.key)->default_value.get<std::string>();
    const Variant* active = nullptr;
    for (const Variant& v : sw.variants) {
        if (v.value == chosen) active = &v;
    }
    for (const auto& [key, value] : obj.items()) {
        if (!defines(sw, key) || defines(active->fields, key)) continue;
        std::vector<std::string> owners;
        for (const Variant& v : sw.variants) {
            if (defines(v.fields, key)) owners.push_back(v.value);
        }
        return invalid(at(path, key),
                       "only allowed when " + sw.key + " is " + quoted_list(owners, " or "));
    }
    for (const Field& f : active->fields) {
        if (Status s = check_field(obj, f, path); !s) return s;
    }
    return Ok{};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Rules.

Rule boolean() {
    return Rule{.kind = Kind::kBool};
}

Rule integer(uint64_t min, uint64_t max) {
    return Rule{.kind = Kind::kUint, .min = min, .max = max};
}

Rule text(uint64_t min_bytes, uint64_t max_bytes, std::string what) {
    return Rule{.kind = Kind::kString, .min = min_bytes, .max = max_bytes, .what = std::move(what)};
}

Rule matching(std::string pattern, uint64_t max_bytes, std::string what) {
    return Rule{.kind = Kind::kString,
                .min = 1,
                .max = max_bytes,
                .pattern = std::move(pattern),
                .what = std::move(what)};
}

Rule array_of(Rule items, uint64_t min_items, uint64_t max_items, bool unique) {
    return Rule{.kind = Kind::kArray,
                .min = min_items,
                .max = max_items,
                .items = std::make_shared<const Rule>(std::move(items)),
                .unique = unique};
}

Rule object(const ObjectSpec& spec) {
    return Rule{.kind = Kind::kObject, .object = &spec};
}

Rule raw_object(std::string what) {
    return Rule{.kind = Kind::kRawObject, .what = std::move(what)};
}

// ---------------------------------------------------------------------------------------------
// Validation.

Status check_value(const json& v, const Rule& r, const std::string& path) {
    switch (r.kind) {
        case Kind::kBool:
            if (!v.is_boolean()) return invalid(path, describe(r));
            return Ok{};
        case Kind::kUint:
            // Built documents hold signed integers even when non-negative; parsed ones unsigned.
            // Negative numbers fail the range like any other value.
            if (!v.is_number_integer()) return invalid(path, describe(r));
            if (!v.is_number_unsigned() && v.get<int64_t>() < 0) return invalid(path, describe(r));
            if (v.get<uint64_t>() < r.min || v.get<uint64_t>() > r.max) {
                return invalid(path, describe(r));
            }
            return Ok{};
        case Kind::kString: {
            if (!v.is_string())
                return invalid(path, r.one_of.empty() ? "must be a string" : describe(r));
            const std::string& s = v.get_ref<const std::string&>();
            bool ok = s.size() >= r.min && s.size() <= r.max;
            if (ok && !r.one_of.empty())
                ok = std::find(r.one_of.begin(), r.one_of.end(), s) != r.one_of.end();
            if (ok && !r.pattern.empty()) ok = std::regex_search(s, std::regex(r.pattern));
            if (!ok) return invalid(path, describe(r));
            return Ok{};
        }
        case Kind::kArray: {
            if (!v.is_array()) return invalid(path, describe(r));
            if (v.size() < r.min) {
                return invalid(
                    path, r.min == 1 ? "must not be empty"
                                     : "must have at least " + std::to_string(r.min) + " items");
            }
            if (v.size() > r.max)
                return invalid(path, "must have at most " + std::to_string(r.max) + " items");
            for (size_t i = 0; i < v.size(); ++i) {
                if (Status s = check_value(v[i], *r.items, at(path, i)); !s) return s;
                for (size_t j = 0; r.unique && j < i; ++j) {
                    if (v[i] == v[j]) return invalid(at(path, i), "duplicate of " + at(path, j));
                }
            }
            return Ok{};
        }
        case Kind::kObject:
            return check_object(v, *r.object, path);
        case Kind::kRawObject:
            if (!v.is_object()) return invalid(path, describe(r));
            return Ok{};
    }
    return invalid(path, "is invalid");
}

Status check_object(const json& v, const ObjectSpec& spec, const std::string& path) {
    if (!v.is_object()) return invalid(path, "must be an object");
    for (const auto& [key, value] : v.items()) {
        if (!defines(spec, key)) return invalid(at(path, key), "unknown key");
    }
    for (const Field& f : spec.fields) {
        if (Status s = check_field(v, f, path); !s) return s;
    }
    for (const Switch& sw : spec.switches) {
        if (Status s = check_switch(v, spec, sw, path); !s) return s;
    }
    return Ok{};
}

bool deeper_than(const json& v, int limit) {
    if (!v.is_structured()) return false;
    if (limit == 0) return true;
    for (const json& child : v)
        if (deeper_than(child, limit - 1)) return true;
    return false;
}

const json& member_or_empty(const json& obj, const char* key) {
    static const json empty = json::object();
    auto it = obj.find(key);
    return it != obj.end() ? *it : empty;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Schema generation from the tables.

json schema_of(const ObjectSpec& spec, json& defs);

json schema_of(const Rule& r, json& defs) {
    json s = json::object();
    switch (r.kind) {
        case Kind::kBool:
            s["type"] = "boolean";
            break;
        case Kind::kUint:
            s["type"] = "integer";
            s["minimum"] = r.min;
            s["maximum"] = r.max;
            break;
        case Kind::kString:
            s["type"] = "string";
            if (!r.one_of.empty()) s["enum"] = r.one_of;
            if (!r.pattern.empty()) s["pattern"] = r.pattern;
            if (r.min > 0) s["minLength"] = r.min;
            if (r.max != kUnbounded) s["maxLength"] = r.max;
            break;
        case Kind::kArray:
            s["type"] = "array";
            s["items"] = schema_of(*r.items, defs);
            if (r.min > 0) s["minItems"] = r.min;
            if (r.max != kUnbounded) s["maxItems"] = r.max;
            if (r.unique) s["uniqueItems"] = true;
            break;
        case Kind::kObject:
            s = schema_of(*r.object, defs);
            break;
        case Kind::kRawObject:
            s["type"] = "object";
            s["description"] = r.what;
            break;
    }
    return s;
}

json schema_of(const Field& f, json& defs) {
    json s = schema_of(f.rule, defs);
    if (!f.default_value.is_null()) s["default"] = f.default_value;
    if (!f.description.empty()) s["description"] = f.description;
    return s;
}

// Base keys go under "properties"; a switch becomes one if/then per variant whose "then" holds
// the variant's keys and forbids (false) the keys of the other variants. The base "properties"
// lists variant keys as true so that additionalProperties: false lets them through.
json object_schema(const ObjectSpec& spec, json& defs) {
    json s = {{"type", "object"}, {"additionalProperties", false}};
    if (!spec.description.empty()) s["description"] = spec.description;
    json properties = json::object();
    json required = json::array();
    for (const Field& f : spec.fields) {
        properties[f.key] = schema_of(f, defs);
        if (f.required) required.push_back(f.key);
    }
    json all_of = json::array();
    for (const Switch& sw : spec.switches) {
        const json& fallback = base_field(spec, sw.key)->default_value;
        for (const Variant& variant : sw.variants) {
            json condition = {{"properties", {{sw.key, {{"const", variant.value}}}}}};
            // The default variant also applies when the key is absent.
            if (fallback != variant.value) condition["required"] = json::array({sw.key});
            json then = {{"properties", json::object()}};
            json then_required = json::array();
            for (const Field& f : variant.fields) {
                then["properties"][f.key] = schema_of(f, defs);
                if (f.required) then_required.push_back(f.key);
                properties[f.key] = true;
            }
            for (const Variant& other : sw.variants) {
                for (const Field& f : other.fields) {
                    if (!defines(variant.fields, f.key)) then["properties"][f.key] = false;
                }
            }
            if (!then_required.empty()) then["required"] = then_required;
            all_of.push_back({{"if", condition}, {"then", then}});
        }
    }
    s["properties"] = properties;
    if (!required.empty()) s["required"] = required;
    if (!all_of.empty()) s["allOf"] = all_of;
    return s;
}

json schema_of(const ObjectSpec& spec, json& defs) {
    if (spec.def_name.empty()) return object_schema(spec, defs);
    if (!defs.contains(spec.def_name)) defs[spec.def_name] = object_schema(spec, defs);
    return {{"$ref", "#/$defs/" + spec.def_name}};
}

}  // namespace

json document_schema(const ObjectSpec& root, const std::string& title) {
    json defs = json::object();
    json s = schema_of(root, defs);
    s["$schema"] = "https://json-schema.org/draft/2020-12/schema";
    s["title"] = title;
    if (!defs.empty()) s["$defs"] = defs;
    return s;
}

}  // namespace ferry::json_schema
