// ferryctl: key=value arguments into params, results into tables and key: value lines.
#include "control/ferryctl/format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <utility>

namespace ferry {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;
using Flat = std::vector<std::pair<std::string, const ordered_json*>>;

bool contains(const std::vector<std::string_view>& keys, std::string_view key) {
    return std::find(keys.begin(), keys.end(), key) != keys.end();
}

/// Converts one scalar: integers (that fit 64 bits), booleans, else the text. Context: ferryctl.
json scalar_value(std::string_view text) {
    if (text == "true") return true;
    if (text == "false") return false;
    const char* end = text.data() + text.size();
    if (!text.empty() && text[0] == '-') {
        int64_t v = 0;
        auto [p, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc() && p == end) return v;
    } else {
        uint64_t v = 0;
        auto [p, ec] = std::from_chars(text.data(), end, v);
        if (ec == std::errc() && p == end && !text.empty()) return v;
    }
    return std::string(text);
}

/// A float for a person: two decimals, or three significant digits when small.
std::string float_text(double v) {
    char buf[64];
    if (v == 0 || std::fabs(v) >= 1) {
        std::snprintf(buf, sizeof(buf), "%.2f", v);
    } else {
        std::snprintf(buf, sizeof(buf), "%.3g", v);
    }
    return buf;
}

/// One value as a table cell or after "key: ". Arrays of scalars are comma-joined.
std::string cell_text(const ordered_json& v) {
    switch (v.type()) {
        case ordered_json::value_t::null:
            return "-";
        case ordered_json::value_t::string:
            return v.get<std::string>();
        case ordered_json::value_t::boolean:
            return v.get<bool>() ? "true" : "false";
        case ordered_json::value_t::number_float:
            return float_text(v.get<double>());
        case ordered_json::value_t::number_integer:
        case ordered_json::value_t::number_unsigned:
            return v.dump();
        case ordered_json::value_t::array: {
            std::string out;
            for (const auto& e : v) {
                if (!out.empty()) out += ',';
                out += e.is_structured() ? e.dump() : cell_text(e);
            }
            return out.empty() ? "-" : out;
        }
        case ordered_json::value_t::object: {
            // A group of counters in a table cell: only the non-zero ones, "0" when none.
            std::string out;
            for (const auto& [k, e] : v.items()) {
                if (e.is_number() && e == 0) continue;
                if (!out.empty()) out += ',';
                out += k + "=" + cell_text(e);
            }
            return out.empty() ? "0" : out;
        }
        default:
            return v.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
    }
}

/// Whether v is an object of numbers only: a group of counters (drops by reason, ...).
bool is_counter_group(const ordered_json& v) {
    return v.is_object() && !v.empty() &&
           std::all_of(v.begin(), v.end(), [](const ordered_json& e) { return e.is_number(); });
}

/// Nested objects become "a.b" keys; everything else (arrays included) is a leaf. With
/// keep_counters, a group of counters stays one leaf (one table column, not one per counter).
void flatten(const ordered_json& obj, const std::string& prefix, Flat* out,
             bool keep_counters = false) {
    for (const auto& [key, value] : obj.items()) {
        std::string name = prefix;
        if (!name.empty()) name += '.';
        name += key;
        if (value.is_object() && !(keep_counters && is_counter_group(value))) {
            flatten(value, name, out, keep_counters);
        } else {
            out->emplace_back(std::move(name), &value);
        }
    }
}

/// Rank of a key in column_order by its first component; unknown keys rank last.
size_t rank(std::string_view key, std::string_view column_order) {
    key = key.substr(0, key.find('.'));
    size_t index = 0;
    for (size_t pos = 0; pos < column_order.size();) {
        size_t end = std::min(column_order.find(' ', pos), column_order.size());
        if (column_order.substr(pos, end - pos) == key) return index;
        ++index;
        pos = end + 1;
    }
    return SIZE_MAX;
}

/// Puts keys named in column_order first, keeping the received order otherwise.
void order_keys(std::vector<std::string>* keys, std::string_view column_order) {
    std::stable_sort(keys->begin(), keys->end(), [&](const std::string& a, const std::string& b) {
        return rank(a, column_order) < rank(b, column_order);
    });
}

bool is_table(const ordered_json& v) {
    return v.is_array() && !v.empty() &&
           std::all_of(v.begin(), v.end(), [](const ordered_json& e) { return e.is_object(); });
}

/// An aligned table of an array of objects: one column per flattened key found in any row,
/// numbers right-aligned, missing cells "-".
std::string format_table(const ordered_json& rows, std::string_view column_order,
                         const std::string& indent) {
    std::vector<Flat> flat(rows.size());
    std::vector<std::string> columns;
    for (size_t r = 0; r < rows.size(); ++r) {
        flatten(rows[r], "", &flat[r], /*keep_counters=*/true);
        for (const auto& [key, value] : flat[r]) {
            if (std::find(columns.begin(), columns.end(), key) == columns.end()) {
                columns.push_back(key);
            }
        }
    }
    order_keys(&columns, column_order);

    std::vector<std::vector<std::string>> cells(rows.size(),
                                                std::vector<std::string>(columns.size(), "-"));
    std::vector<size_t> width(columns.size());
    std::vector<bool> numeric(columns.size(), true);
    for (size_t c = 0; c < columns.size(); ++c) {
        width[c] = columns[c].size();
        for (size_t r = 0; r < rows.size(); ++r) {
            for (const auto& [key, value] : flat[r]) {
                if (key != columns[c]) continue;
                cells[r][c] = cell_text(*value);
                numeric[c] = numeric[c] && (value->is_number() || value->is_null());
            }
            width[c] = std::max(width[c], cells[r][c].size());
        }
    }

    auto line = [&](const std::vector<std::string>& row) {
        std::string out = indent;
        for (size_t c = 0; c < row.size(); ++c) {
            std::string pad(width[c] - row[c].size(), ' ');
            bool last = c + 1 == row.size();
            out += numeric[c] ? pad + row[c] : (last ? row[c] : row[c] + pad);
            if (!last) out += "  ";
        }
        return out + "\n";
    };
    std::vector<std::string> header = columns;
    for (std::string& h : header) std::transform(h.begin(), h.end(), h.begin(), ::toupper);
    std::string out = line(header);
    for (const auto& row : cells) out += line(row);
    return out;
}

/// "key: value" lines of an object, keys aligned; arrays of objects become indented tables.
std::string format_object(const ordered_json& obj, std::string_view column_order,
                          const std::string& indent) {
    Flat flat;
    flatten(obj, "", &flat);
    std::vector<std::string> keys;
    for (const auto& [key, value] : flat) keys.push_back(key);
    order_keys(&keys, column_order);
    size_t width = 0;
    for (const auto& [key, value] : flat) {
        if (!is_table(*value)) width = std::max(width, key.size() + 1);
    }
    std::string out;
    for (const std::string& key : keys) {
        auto it =
            std::find_if(flat.begin(), flat.end(), [&](const auto& f) { return f.first == key; });
        const ordered_json& value = *it->second;
        if (is_table(value)) {
            out += indent + key + ":\n" + format_table(value, column_order, indent + "  ");
        } else {
            std::string label = key + ":";
            label.resize(width, ' ');
            out += indent + label + " " + cell_text(value) + "\n";
        }
    }
    return out;
}

}  // namespace

json cli_value(std::string_view key, std::string_view text, const CliKeyKinds& kinds) {
    if (contains(kinds.string_keys, key)) return std::string(text);
    if (!contains(kinds.list_keys, key)) return scalar_value(text);
    json list = json::array();
    for (size_t pos = 0; pos < text.size();) {
        size_t end = std::min(text.find(',', pos), text.size());
        list.push_back(scalar_value(text.substr(pos, end - pos)));
        pos = end + 1;
    }
    return list;
}

Status add_key_values(const std::vector<std::string>& args, const CliKeyKinds& kinds,
                      json* params) {
    for (const std::string& arg : args) {
        size_t eq = arg.find('=');
        if (eq == std::string::npos || eq == 0) {
            return make_error(ErrorCode::kInvalidParams, "expected key=value, got '" + arg + "'");
        }
        std::string key = arg.substr(0, eq);
        if (params->contains(key)) {
            return make_error(ErrorCode::kInvalidParams, "'" + key + "' given twice");
        }
        (*params)[key] = cli_value(key, std::string_view(arg).substr(eq + 1), kinds);
    }
    return Ok{};
}

std::string format_result(const ordered_json& result, std::string_view column_order) {
    if (result.is_null()) return "";
    if (result.is_object()) return format_object(result, column_order, "");
    if (result.is_array()) {
        if (result.empty()) return "(none)\n";
        if (is_table(result)) return format_table(result, column_order, "");
        std::string out;
        for (const auto& e : result) out += cell_text(e) + "\n";
        return out;
    }
    return cell_text(result) + "\n";
}

std::string format_methods(const ordered_json& methods) {
    if (!methods.is_array()) return format_result(methods, "");
    size_t name_width = 0;
    for (const auto& m : methods) name_width = std::max(name_width, m.value("name", "?").size());
    std::string out;
    for (const auto& m : methods) {
        std::string line = m.value("name", "?");
        line.resize(name_width + 2, ' ');
        line += m.value("help", "");
        if (!m.value("safe_while_running", true)) line += " [pauses workers]";
        line.erase(line.find_last_not_of(' ') + 1);
        out += line + "\n";
        const ordered_json params = m.value("params", ordered_json::array());
        size_t width = 0;
        std::vector<std::string> labels;
        for (const auto& p : params) {
            std::string label = p.value("name", "?") + " (" + p.value("type", "?") +
                                (p.value("required", false) ? ", required" : "") + ")";
            width = std::max(width, label.size());
            labels.push_back(std::move(label));
        }
        for (size_t i = 0; i < params.size(); ++i) {
            std::string help = params[i].value("help", "");
            std::string label = labels[i];
            if (!help.empty()) label.resize(width + 2, ' ');
            out += "    ";
            out += label;
            out += help;
            out += '\n';
        }
    }
    return out;
}

}  // namespace ferry
