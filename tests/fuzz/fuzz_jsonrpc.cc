// libFuzzer target for JsonRpcDispatcher::handle_line: any byte string is a request line (cut at
// its first newline, as the control server cuts them). The dispatcher runs a small table whose
// handlers succeed, fail, throw and return invalid UTF-8, behind a Pauser that sometimes refuses.
// Besides the sanitizers' checks it traps when the dispatcher breaks its contract: an exception
// escapes, a response is not one valid JSON-RPC 2.0 object with exactly one of result/error, a
// notification is answered or a request is not, the id is not echoed, or pause/resume do not
// pair up. Run through scripts/fuzz.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/jsonrpc.h"

namespace {

using nlohmann::json;

/// Aborts the run so libFuzzer records the input as a crash. Context: fuzzer only.
void check(bool ok) {
    if (!ok) __builtin_trap();
}

constexpr int kMaxDepth = 64;  // jsonrpc.cc refuses requests nesting deeper than this

/// Counts the calls so the harness can check that the dispatcher pairs them.
class FakePauser final : public ferry::Pauser {
public:
    bool refuse = false;  // the next pause() fails with kBusy
    int pauses = 0;       // successful pause() calls
    int resumes = 0;
    int attempts = 0;
    bool paused = false;

    ferry::Status pause() override {
        check(!paused);  // never paused twice
        ++attempts;
        if (refuse) return ferry::make_error(ferry::ErrorCode::kBusy, "workers did not stop");
        ++pauses;
        paused = true;
        return ferry::Ok{};
    }
    void resume() override {
        check(paused);  // only after a successful pause
        ++resumes;
        paused = false;
    }
};

FakePauser g_pauser;
int g_unsafe_calls = 0;  // handler runs of the unsafe row

std::vector<ferry::CommandSpec> make_table() {
    using ferry::ParamType;
    std::vector<ferry::CommandSpec> table;
    // Unsafe while running: runs between pause() and resume().
    table.push_back({
        .name = "port.add",
        .help = "adds a port",
        .safe_while_running = false,
        .params = {{"name", ParamType::kString, true, "port name"},
                   {"queues", ParamType::kUnsigned, false, "rx queues"},
                   {"vlan", ParamType::kInteger, false, "native VLAN"}},
        .handler = [](const json& params) -> ferry::Result<json> {
            check(g_pauser.paused);
            ++g_unsafe_calls;
            const std::string& name = params.at("name").get_ref<const std::string&>();
            if (name == "dup") return ferry::make_error(ferry::ErrorCode::kConflict, "exists");
            if (name == "throw") throw std::runtime_error("handler threw");
            // Half of the name: may cut a UTF-8 sequence, which dump() must survive.
            return json{{"added", name.substr(0, name.size() / 2)},
                        {"queues", params.value("queues", 1)}};
        },
    });
    table.push_back({
        .name = "rule.add",
        .help = "adds a rule",
        .safe_while_running = true,
        .params = {{"rule", ParamType::kObject, true, "the rule"},
                   {"tags", ParamType::kArray, false, "labels"},
                   {"dry_run", ParamType::kBoolean, false, "check only"}},
        .handler = [](const json& params) -> ferry::Result<json> {
            check(!g_pauser.paused);
            const json& rule = params.at("rule");
            if (rule.empty()) return ferry::make_error(ferry::ErrorCode::kInvalidParams, "empty");
            if (rule.contains("boom")) throw 42;  // not a std::exception
            json out = {{"rule", rule}};
            if (auto tags = params.find("tags"); tags != params.end()) out["n_tags"] = tags->size();
            return out;
        },
    });
    table.push_back({
        .name = "echo",
        .help = "returns its value",
        .safe_while_running = true,
        .params = {{"value", ParamType::kAny, false, "anything"},
                   {"raw", ParamType::kString, false, "bytes echoed as a string"}},
        .handler = [](const json& params) -> ferry::Result<json> {
            if (auto raw = params.find("raw"); raw != params.end()) {
                // Every other byte: invalid UTF-8 more often than not.
                std::string s;
                const std::string& in = raw->get_ref<const std::string&>();
                for (size_t i = 0; i < in.size(); i += 2) s += in[i];
                return json(s);
            }
            if (params.contains("value")) return params.at("value");
            return json();  // null is a valid result
        },
    });
    return table;
}

/// What the fuzzer can tell about the request before the dispatcher sees it.
struct Expectation {
    bool answered = true;           // false: a valid notification, no response allowed
    std::optional<json> echoed_id;  // the id the response must carry, when it can be trusted
};

Expectation expect(std::string_view line) {
    Expectation e;
    bool too_deep = false;
    const json request = json::parse(
        line,
        [&](int depth, json::parse_event_t, json&) {
            if (depth > kMaxDepth) too_deep = true;
            return true;
        },
        false);
    if (request.is_discarded() || too_deep || !request.is_object()) {
        e.echoed_id = json(nullptr);
        return e;
    }
    auto id = request.find("id");
    if (id != request.end() && !id->is_string() && !id->is_number_integer() && !id->is_null()) {
        e.echoed_id = json(nullptr);
        return e;
    }
    auto version = request.find("jsonrpc");
    auto method = request.find("method");
    auto params = request.find("params");
    const bool envelope_ok = version != request.end() && *version == "2.0" &&
                             method != request.end() && method->is_string() &&
                             (params == request.end() || params->is_object());
    if (id == request.end()) {
        e.answered = !envelope_ok;
        e.echoed_id = json(nullptr);
    } else {
        e.echoed_id = *id;
    }
    return e;
}

}  // namespace

// The name is libFuzzer's entry point, not ours to choose.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static ferry::JsonRpcDispatcher dispatcher(make_table(), &g_pauser);

    std::string_view line(reinterpret_cast<const char*>(data), size);
    if (size_t newline = line.find('\n'); newline != std::string_view::npos) {
        line = line.substr(0, newline);
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    // A deterministic, input-dependent refusal so both pause outcomes get exercised.
    g_pauser.refuse = size % 5 == 3;
    const int attempts_before = g_pauser.attempts;
    const int unsafe_before = g_unsafe_calls;

    std::optional<std::string> response;
    try {
        response = dispatcher.handle_line(line);
    } catch (...) {
        __builtin_trap();  // handle_line never throws
    }

    // Pause and resume pair up; a refused pause runs nothing.
    check(!g_pauser.paused && g_pauser.pauses == g_pauser.resumes);
    check(g_pauser.attempts - attempts_before <= 1);
    if (g_pauser.refuse) check(g_unsafe_calls == unsafe_before);

    const Expectation e = expect(line);
    check(response.has_value() == e.answered);
    if (!response) return 0;

    check(response->find('\n') == std::string::npos);  // one line on the wire
    const json r = json::parse(*response, nullptr, false);
    check(!r.is_discarded() && r.is_object());
    check(r.size() == 3);
    check(r.contains("jsonrpc") && r["jsonrpc"] == "2.0");
    check(r.contains("id"));
    check(r.contains("result") != r.contains("error"));
    if (r.contains("error")) {
        const json& error = r["error"];
        check(error.is_object() && error.size() == 2);
        check(error.contains("code") && error["code"].is_number_integer());
        check(error.contains("message") && error["message"].is_string());
    }
    // Requests the dispatcher could parse with a trustworthy id get it back; others get null.
    if (e.echoed_id) check(r["id"] == *e.echoed_id);
    return 0;
}
