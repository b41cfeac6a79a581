// JSON-RPC 2.0 dispatcher: envelope checks, params checks, pause/resume around unsafe rows.
#include "control/jsonrpc.h"

#include <exception>
#include <utility>

namespace ferry {
namespace {

using nlohmann::json;

constexpr size_t kMaxQuoted = 80;  // longest user-supplied name echoed back in a message
// nlohmann parses iteratively but copies, compares and dumps recursively: a 1 MiB line of '['
// would overflow the stack in a handler. No real request nests this deep.
constexpr int kMaxDepth = 64;

struct TooDeep {};  // thrown out of the parser callback to stop at kMaxDepth

/// Quotes a user-supplied name for an error message, cut short so a 1 MiB method name does not
/// come back as a 1 MiB message. Context: any.
std::string quote_name(std::string_view name) {
    // Appended piece by piece: "'" + std::string trips GCC 12's false -Wrestrict (PR105651).
    std::string out(1, '\'');
    out += name.substr(0, kMaxQuoted);
    if (name.size() > kMaxQuoted) out += "...";
    out += '\'';
    return out;
}

/// Serialises without throwing: invalid UTF-8 from a handler becomes U+FFFD. Context: any.
std::string dump(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// Builds the error member of a response. Context: any.
json error_object(const Error& error) {
    return json{{"code", static_cast<int>(error.code)}, {"message", error.message}};
}

/// nlohmann's what() starts with "[json.exception.parse_error.101] "; users need the rest only.
std::string parse_error_message(const json::parse_error& e) {
    std::string_view what = e.what();
    if (auto end = what.find("] "); what.starts_with("[json.exception.") && end != what.npos) {
        what.remove_prefix(end + 2);
    }
    if (what.size() > 200) what = what.substr(0, 200);
    return std::string(what);
}

/// Checks the members every request needs besides "id". Context: control.
/// @return Ok, or kInvalidRequest saying which member is wrong.
Status check_envelope(const json& request) {
    auto version = request.find("jsonrpc");
    if (version == request.end() || *version != "2.0") {
        return make_error(ErrorCode::kInvalidRequest, "\"jsonrpc\" must be \"2.0\"");
    }
    auto method = request.find("method");
    if (method == request.end() || !method->is_string()) {
        return make_error(ErrorCode::kInvalidRequest, "\"method\" must be a string");
    }
    auto params = request.find("params");
    if (params != request.end() && !params->is_object()) {
        return make_error(ErrorCode::kInvalidRequest,
                          "\"params\" must be an object (positional params are not supported)");
    }
    return Ok{};
}

/// Whether value has the type a parameter declares. Context: any.
bool has_type(const json& value, ParamType type) {
    switch (type) {
        case ParamType::kString:
            return value.is_string();
        case ParamType::kInteger:
            return value.is_number_integer();
        case ParamType::kUnsigned:
            // Parsed non-negative integers are unsigned; built ones may be signed but >= 0.
            return value.is_number_unsigned() ||
                   (value.is_number_integer() && value.get<int64_t>() >= 0);
        case ParamType::kBoolean:
            return value.is_boolean();
        case ParamType::kObject:
            return value.is_object();
        case ParamType::kArray:
            return value.is_array();
        case ParamType::kAny:
            return true;
    }
    return false;
}

/// The phrase used in "field 'x' must be ..." messages. Context: any.
std::string_view type_phrase(ParamType type) {
    switch (type) {
        case ParamType::kString:
            return "a string";
        case ParamType::kInteger:
            return "an integer";
        case ParamType::kUnsigned:
            return "a non-negative integer";
        case ParamType::kBoolean:
            return "a boolean";
        case ParamType::kObject:
            return "an object";
        case ParamType::kArray:
            return "an array";
        case ParamType::kAny:
            return "any value";
    }
    return "?";
}

}  // namespace

JsonRpcDispatcher::JsonRpcDispatcher(std::vector<CommandSpec> table, Pauser* pauser)
    : table_(std::move(table)), pauser_(pauser) {
    for (size_t i = 0; i < table_.size(); ++i) index_.emplace(table_[i].name, i);
}

std::optional<std::string> JsonRpcDispatcher::handle_line(std::string_view line) {
    json id = nullptr;
    bool notification = false;
    try {
        json request;
        try {
            request = json::parse(line, [](int depth, json::parse_event_t, json&) {
                if (depth > kMaxDepth) throw TooDeep{};
                return true;
            });
        } catch (const json::parse_error& e) {
            return make_error_line(make_error(ErrorCode::kParseError, parse_error_message(e)));
        } catch (const TooDeep&) {
            return make_error_line(
                make_error(ErrorCode::kInvalidRequest,
                           "request nests deeper than " + std::to_string(kMaxDepth) + " levels"));
        }
        if (request.is_array()) {
            return make_error_line(
                make_error(ErrorCode::kInvalidRequest, "batch requests are not supported"));
        }
        if (!request.is_object()) {
            return make_error_line(
                make_error(ErrorCode::kInvalidRequest, "request must be a JSON object"));
        }
        auto id_it = request.find("id");
        notification = id_it == request.end();
        if (!notification) {
            if (!id_it->is_string() && !id_it->is_number_integer() && !id_it->is_null()) {
                return make_error_line(make_error(ErrorCode::kInvalidRequest,
                                                  "\"id\" must be a string, an integer or null"));
            }
            id = *id_it;
        }
        // An invalid envelope is answered even without an id: the sender cannot have meant a
        // notification it did not know how to write (the spec's own examples do the same).
        if (Status envelope = check_envelope(request); !envelope) {
            return make_error_line(envelope.error(), id);
        }

        const std::string& method = request["method"].get_ref<const std::string&>();
        auto row = index_.find(method);
        json response;
        if (row == index_.end()) {
            response["error"] = error_object(
                make_error(ErrorCode::kMethodNotFound, "method not found: " + quote_name(method)));
        } else {
            auto params_it = request.find("params");
            const json params = params_it == request.end() ? json::object() : *params_it;
            const CommandSpec& spec = table_[row->second];
            if (Status checked = check_params(spec.params, params); !checked) {
                response["error"] = error_object(checked.error());
            } else {
                response = call(spec, params);
            }
        }
        if (notification) return std::nullopt;
        // Built by hand so the members come in the customary order for people reading the wire.
        std::string out = "{\"jsonrpc\":\"2.0\",";
        if (auto result = response.find("result"); result != response.end()) {
            out += "\"result\":" + dump(*result);
        } else {
            out += "\"error\":" + dump(response["error"]);
        }
        out += ",\"id\":" + dump(id) + "}";
        return out;
    } catch (const std::exception& e) {
        if (notification) return std::nullopt;
        return make_error_line(make_error(ErrorCode::kInternal, e.what()), id);
    }
}

/// Runs one row's handler, between pause() and resume() when the row is unsafe while running.
/// Context: control. Never throws.
/// @return {"result": value} or {"error": {code, message}}.
json JsonRpcDispatcher::call(const CommandSpec& row, const json& params) {
    try {
        // The one RAII pauser: the workers resume whatever the handler did.
        std::optional<ScopedPause> paused;
        if (!row.safe_while_running && pauser_ != nullptr) {
            paused.emplace(*pauser_);
            if (!*paused) {
                return json{{"error", error_object(make_error(ErrorCode::kBusy,
                                                              paused->status().error().message))}};
            }
        }
        Result<json> result = row.handler(params);
        if (!result) return json{{"error", error_object(result.error())}};
        return json{{"result", std::move(result.value())}};
    } catch (const std::exception& e) {
        return json{{"error", error_object(make_error(
                                  ErrorCode::kInternal,
                                  "internal error in " + quote_name(row.name) + ": " + e.what()))}};
    } catch (...) {
        return json{{"error", error_object(make_error(ErrorCode::kInternal,
                                                      "internal error in " + quote_name(row.name) +
                                                          ": unknown exception"))}};
    }
}

Status check_params(const std::vector<ParamSpec>& specs, const json& params) {
    for (const auto& [key, value] : params.items()) {
        bool known = false;
        for (const ParamSpec& spec : specs) known = known || spec.name == key;
        if (known) continue;
        std::string message = "unknown field " + quote_name(key);
        if (specs.empty()) {
            message += " (the method takes no params)";
        } else {
            message += " (known:";
            for (const ParamSpec& spec : specs) {
                message += ' ';
                message += spec.name;
            }
            message += ")";
        }
        return make_error(ErrorCode::kInvalidParams, std::move(message));
    }
    for (const ParamSpec& spec : specs) {
        auto it = params.find(std::string(spec.name));
        if (it == params.end()) {
            if (spec.required) {
                return make_error(ErrorCode::kInvalidParams,
                                  "missing required field " + quote_name(spec.name));
            }
            continue;
        }
        if (!has_type(*it, spec.type)) {
            return make_error(ErrorCode::kInvalidParams, "field " + quote_name(spec.name) +
                                                             " must be " +
                                                             std::string(type_phrase(spec.type)));
        }
    }
    return Ok{};
}

std::string_view param_type_name(ParamType type) {
    switch (type) {
        case ParamType::kString:
            return "string";
        case ParamType::kInteger:
            return "integer";
        case ParamType::kUnsigned:
            return "unsigned";
        case ParamType::kBoolean:
            return "boolean";
        case ParamType::kObject:
            return "object";
        case ParamType::kArray:
            return "array";
        case ParamType::kAny:
            return "any";
    }
    return "?";
}

json describe_methods(const std::vector<CommandSpec>& table) {
    json methods = json::array();
    for (const CommandSpec& row : table) {
        json params = json::array();
        for (const ParamSpec& p : row.params) {
            params.push_back({{"name", p.name},
                              {"type", param_type_name(p.type)},
                              {"required", p.required},
                              {"help", p.help}});
        }
        methods.push_back({{"name", row.name},
                           {"help", row.help},
                           {"safe_while_running", row.safe_while_running},
                           {"params", std::move(params)}});
    }
    return methods;
}

std::string make_error_line(const Error& error, const json& id) {
    try {
        return "{\"jsonrpc\":\"2.0\",\"error\":" + dump(error_object(error)) +
               ",\"id\":" + dump(id) + "}";
    } catch (const std::exception&) {
        // Only allocation can fail here; answer with a fixed line rather than nothing.
        return R"({"jsonrpc":"2.0","error":{"code":-32603,"message":"internal error"},"id":null})";
    }
}

}  // namespace ferry
