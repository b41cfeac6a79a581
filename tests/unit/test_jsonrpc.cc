// JsonRpcDispatcher: sends one request line per case and checks the response line — every error
// code path, notifications, params checks naming the field, and the pause/resume contract.
#include "control/jsonrpc.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace ferry {
namespace {

using nlohmann::json;

/// Records calls; pause() fails when told to.
class FakePauser : public Pauser {
public:
    Status pause() override {
        ++pauses;
        if (fail) return make_error(ErrorCode::kBusy, "workers did not stop within 100 ms");
        paused = true;
        return Ok{};
    }
    void resume() override {
        ++resumes;
        paused = false;
    }
    int pauses = 0;
    int resumes = 0;
    bool paused = false;
    bool fail = false;
};

class JsonRpcTest : public ::testing::Test {
protected:
    JsonRpcTest() : dispatcher_(make_table(), &pauser_) {}

    std::vector<CommandSpec> make_table() {
        return {
            {"echo",
             "returns its params",
             true,
             {{"text", ParamType::kString, true, "what to echo"},
              {"count", ParamType::kInteger, false, ""},
              {"queues", ParamType::kUnsigned, false, ""},
              {"up", ParamType::kBoolean, false, ""},
              {"opts", ParamType::kObject, false, ""},
              {"list", ParamType::kArray, false, ""},
              {"any", ParamType::kAny, false, ""}},
             [this](const json& params) -> Result<json> {
                 ++echo_calls_;
                 return params;
             }},
            {"port.add",
             "unsafe: pauses",
             false,
             {{"name", ParamType::kString, true, ""}},
             [this](const json& params) -> Result<json> {
                 ++unsafe_calls_;
                 was_paused_ = pauser_.paused;
                 if (params["name"] == "dup") {
                     return make_error(ErrorCode::kConflict, "port 'dup' already exists");
                 }
                 return json{{"added", params["name"]}};
             }},
            {"throws",
             "handler throws",
             false,
             {},
             [](const json&) -> Result<json> { throw std::runtime_error("boom"); }},
            {"nothing",
             "returns null",
             true,
             {},
             [](const json&) -> Result<json> { return json(nullptr); }},
        };
    }

    /// Sends a line and parses the response; fails the test on a missing response.
    json send(const std::string& line) {
        auto response = dispatcher_.handle_line(line);
        EXPECT_TRUE(response.has_value()) << line;
        if (!response) return json();
        EXPECT_EQ(response->find('\n'), std::string::npos);
        return json::parse(*response);
    }

    /// Sends a line and expects an error with code and a message containing text.
    void expect_error(const std::string& line, ErrorCode code, const std::string& text,
                      const json& id = nullptr) {
        json r = send(line);
        SCOPED_TRACE(line + " -> " + r.dump());
        EXPECT_EQ(r["jsonrpc"], "2.0");
        ASSERT_TRUE(r.contains("error"));
        EXPECT_FALSE(r.contains("result"));
        EXPECT_EQ(r["error"]["code"], static_cast<int>(code));
        EXPECT_NE(r["error"]["message"].get<std::string>().find(text), std::string::npos)
            << r["error"]["message"];
        EXPECT_EQ(r["id"], id);
    }

    FakePauser pauser_;
    int echo_calls_ = 0;
    int unsafe_calls_ = 0;
    bool was_paused_ = false;
    JsonRpcDispatcher dispatcher_;
};

TEST_F(JsonRpcTest, SuccessEchoesResultAndId) {
    json r = send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"hi"},"id":7})");
    EXPECT_EQ(r, json::parse(R"({"jsonrpc":"2.0","result":{"text":"hi"},"id":7})"));
    r = send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"hi"},"id":"abc"})");
    EXPECT_EQ(r["id"], "abc");
    r = send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"hi"},"id":null})");
    EXPECT_TRUE(r["id"].is_null());
    EXPECT_EQ(r["result"]["text"], "hi");
}

TEST_F(JsonRpcTest, MembersComeInCustomaryOrder) {
    auto line = dispatcher_.handle_line(R"({"id":1,"method":"nothing","jsonrpc":"2.0"})");
    ASSERT_TRUE(line);
    EXPECT_EQ(*line, R"({"jsonrpc":"2.0","result":null,"id":1})");
}

TEST_F(JsonRpcTest, AbsentParamsAreAnEmptyObject) {
    json r = send(R"({"jsonrpc":"2.0","method":"nothing","id":1})");
    EXPECT_TRUE(r.contains("result"));
    EXPECT_TRUE(r["result"].is_null());
}

TEST_F(JsonRpcTest, NotificationGetsNoResponseButRuns) {
    EXPECT_FALSE(
        dispatcher_.handle_line(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"x"}})"));
    EXPECT_EQ(echo_calls_, 1);
    // Its errors are not reported either.
    EXPECT_FALSE(dispatcher_.handle_line(R"({"jsonrpc":"2.0","method":"nope"})"));
    EXPECT_FALSE(dispatcher_.handle_line(R"({"jsonrpc":"2.0","method":"echo","params":{}})"));
    EXPECT_FALSE(dispatcher_.handle_line(R"({"jsonrpc":"2.0","method":"throws"})"));
}

TEST_F(JsonRpcTest, ParseError) {
    expect_error("{", ErrorCode::kParseError, "parse error");
    expect_error("not json", ErrorCode::kParseError, "");
    expect_error("", ErrorCode::kParseError, "");
    expect_error(R"({"jsonrpc":"2.0","method":"echo","id":1} trailing)", ErrorCode::kParseError,
                 "");
    expect_error("\"\xff\"", ErrorCode::kParseError, "");  // invalid UTF-8
}

TEST_F(JsonRpcTest, ParseErrorMessageIsShort) {
    std::string long_string(100000, 'a');
    long_string.insert(0, 1, '"');
    json r = send(long_string);
    EXPECT_LE(r["error"]["message"].get<std::string>().size(), 200u);
}

TEST_F(JsonRpcTest, InvalidRequestVariants) {
    expect_error("[]", ErrorCode::kInvalidRequest, "batch requests are not supported");
    expect_error(R"([{"jsonrpc":"2.0","method":"echo","id":1}])", ErrorCode::kInvalidRequest,
                 "batch");
    expect_error("42", ErrorCode::kInvalidRequest, "JSON object");
    expect_error(R"("str")", ErrorCode::kInvalidRequest, "JSON object");
    expect_error(R"({"method":"echo","id":1})", ErrorCode::kInvalidRequest, "jsonrpc", 1);
    expect_error(R"({"jsonrpc":"1.0","method":"echo","id":1})", ErrorCode::kInvalidRequest,
                 "jsonrpc", 1);
    expect_error(R"({"jsonrpc":2.0,"method":"echo","id":1})", ErrorCode::kInvalidRequest, "jsonrpc",
                 1);
    expect_error(R"({"jsonrpc":"2.0","id":1})", ErrorCode::kInvalidRequest, "method", 1);
    expect_error(R"({"jsonrpc":"2.0","method":5,"id":"a"})", ErrorCode::kInvalidRequest, "method",
                 "a");
    expect_error(R"({"jsonrpc":"2.0","method":"echo","params":[1],"id":1})",
                 ErrorCode::kInvalidRequest, "params", 1);
    expect_error(R"({"jsonrpc":"2.0","method":"echo","params":"x","id":1})",
                 ErrorCode::kInvalidRequest, "params", 1);
    expect_error(R"({"jsonrpc":"2.0","method":"echo","params":null,"id":1})",
                 ErrorCode::kInvalidRequest, "params", 1);
}

TEST_F(JsonRpcTest, InvalidIdIsAnsweredWithNullId) {
    for (const char* id : {"{}", "[1]", "true", "1.5"}) {
        expect_error(std::string(R"({"jsonrpc":"2.0","method":"echo","id":)") + id + "}",
                     ErrorCode::kInvalidRequest, "\"id\"");
    }
    EXPECT_EQ(echo_calls_, 0);
}

TEST_F(JsonRpcTest, InvalidEnvelopeWithoutIdIsStillAnswered) {
    expect_error(R"({"jsonrpc":"2.0","method":1})", ErrorCode::kInvalidRequest, "method");
}

TEST_F(JsonRpcTest, MethodNotFoundNamesTheMethod) {
    expect_error(R"({"jsonrpc":"2.0","method":"port.frob","id":3})", ErrorCode::kMethodNotFound,
                 "'port.frob'", 3);
    json r = send(R"({"jsonrpc":"2.0","method":")" + std::string(5000, 'm') + R"(","id":3})");
    EXPECT_LT(r["error"]["message"].get<std::string>().size(), 200u);
}

TEST_F(JsonRpcTest, UnknownFieldIsNamed) {
    expect_error(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"a","colour":1},"id":1})",
                 ErrorCode::kInvalidParams, "unknown field 'colour'", 1);
    expect_error(R"({"jsonrpc":"2.0","method":"nothing","params":{"x":1},"id":1})",
                 ErrorCode::kInvalidParams, "unknown field 'x'", 1);
    EXPECT_EQ(echo_calls_, 0);
}

TEST_F(JsonRpcTest, MissingRequiredFieldIsNamed) {
    expect_error(R"({"jsonrpc":"2.0","method":"echo","params":{},"id":1})",
                 ErrorCode::kInvalidParams, "missing required field 'text'", 1);
    expect_error(R"({"jsonrpc":"2.0","method":"echo","id":1})", ErrorCode::kInvalidParams,
                 "missing required field 'text'", 1);
}

TEST_F(JsonRpcTest, WrongTypeIsNamed) {
    struct Case {
        const char* field;
        const char* value;
    };
    for (const Case& c : {Case{"text", "1"}, Case{"count", "\"1\""}, Case{"count", "1.5"},
                          Case{"queues", "-1"}, Case{"queues", "2.0"}, Case{"up", "1"},
                          Case{"opts", "[]"}, Case{"list", "{}"}, Case{"text", "null"}}) {
        std::string params = std::string(R"({"text":"a",")") + c.field + "\":" + c.value + "}";
        if (std::string(c.field) == "text") params = std::string(R"({"text":)") + c.value + "}";
        expect_error(R"({"jsonrpc":"2.0","method":"echo","params":)" + params + R"(,"id":1})",
                     ErrorCode::kInvalidParams, std::string("field '") + c.field + "' must be", 1);
    }
    EXPECT_EQ(echo_calls_, 0);
}

TEST_F(JsonRpcTest, EveryTypeAcceptsItsValues) {
    json r = send(
        R"({"jsonrpc":"2.0","method":"echo","id":1,"params":{"text":"a","count":-3,"queues":0,)"
        R"("up":false,"opts":{"a":1},"list":[1,"x"],"any":null}})");
    EXPECT_TRUE(r.contains("result")) << r.dump();
    EXPECT_EQ(echo_calls_, 1);
}

TEST(CheckParams, SignedNonNegativeCountsAsUnsigned) {
    std::vector<ParamSpec> specs = {{"n", ParamType::kUnsigned, true, ""}};
    EXPECT_TRUE(check_params(specs, json{{"n", int64_t{4}}}).ok());
    EXPECT_FALSE(check_params(specs, json{{"n", int64_t{-4}}}).ok());
}

TEST_F(JsonRpcTest, SafeRowDoesNotPause) {
    send(R"({"jsonrpc":"2.0","method":"echo","params":{"text":"a"},"id":1})");
    EXPECT_EQ(pauser_.pauses, 0);
    EXPECT_EQ(pauser_.resumes, 0);
}

TEST_F(JsonRpcTest, UnsafeRowRunsPaused) {
    json r = send(R"({"jsonrpc":"2.0","method":"port.add","params":{"name":"vm1"},"id":1})");
    EXPECT_EQ(r["result"]["added"], "vm1");
    EXPECT_TRUE(was_paused_);
    EXPECT_EQ(pauser_.pauses, 1);
    EXPECT_EQ(pauser_.resumes, 1);
    EXPECT_FALSE(pauser_.paused);
}

TEST_F(JsonRpcTest, HandlerErrorBecomesErrorObjectAndResumes) {
    expect_error(R"({"jsonrpc":"2.0","method":"port.add","params":{"name":"dup"},"id":2})",
                 ErrorCode::kConflict, "port 'dup' already exists", 2);
    EXPECT_EQ(pauser_.pauses, 1);
    EXPECT_EQ(pauser_.resumes, 1);
}

TEST_F(JsonRpcTest, PauseFailureIsBusyAndHandlerNotCalled) {
    pauser_.fail = true;
    expect_error(R"({"jsonrpc":"2.0","method":"port.add","params":{"name":"vm1"},"id":4})",
                 ErrorCode::kBusy, "did not stop", 4);
    EXPECT_EQ(unsafe_calls_, 0);
    EXPECT_EQ(pauser_.resumes, 0);
}

TEST_F(JsonRpcTest, InvalidParamsDoNotPause) {
    expect_error(R"({"jsonrpc":"2.0","method":"port.add","params":{},"id":1})",
                 ErrorCode::kInvalidParams, "'name'", 1);
    EXPECT_EQ(pauser_.pauses, 0);
}

TEST_F(JsonRpcTest, HandlerThrowingIsInternalErrorAndResumes) {
    expect_error(R"({"jsonrpc":"2.0","method":"throws","id":5})", ErrorCode::kInternal, "boom", 5);
    EXPECT_EQ(pauser_.pauses, 1);
    EXPECT_EQ(pauser_.resumes, 1);
}

TEST(JsonRpcNoPauser, UnsafeRowRunsDirectly) {
    int calls = 0;
    JsonRpcDispatcher dispatcher({{"stop",
                                   "",
                                   false,
                                   {},
                                   [&](const json&) -> Result<json> {
                                       ++calls;
                                       return json::object();
                                   }}},
                                 nullptr);
    auto line = dispatcher.handle_line(R"({"jsonrpc":"2.0","method":"stop","id":1})");
    ASSERT_TRUE(line);
    EXPECT_EQ(*line, R"({"jsonrpc":"2.0","result":{},"id":1})");
    EXPECT_EQ(calls, 1);
}

TEST(JsonRpcNoPauser, EmptyHandlerIsInternalError) {
    JsonRpcDispatcher dispatcher({{"hollow", "", true, {}, nullptr}}, nullptr);
    auto line = dispatcher.handle_line(R"({"jsonrpc":"2.0","method":"hollow","id":1})");
    ASSERT_TRUE(line);
    EXPECT_EQ(json::parse(*line)["error"]["code"], static_cast<int>(ErrorCode::kInternal));
}

TEST(JsonRpcNoPauser, InvalidUtf8InResultIsReplacedNotThrown) {
    JsonRpcDispatcher dispatcher(
        {{"bad", "", true, {}, [](const json&) -> Result<json> { return json("\xff"); }}}, nullptr);
    auto line = dispatcher.handle_line(R"({"jsonrpc":"2.0","method":"bad","id":1})");
    ASSERT_TRUE(line);
    EXPECT_TRUE(json::parse(*line).contains("result"));
}

TEST(JsonRpcNoPauser, DeepNestingIsRefusedBeforeAHandlerSeesIt) {
    int calls = 0;
    JsonRpcDispatcher dispatcher({{"take",
                                   "",
                                   true,
                                   {{"v", ParamType::kAny, false, ""}},
                                   [&](const json& params) -> Result<json> {
                                       ++calls;
                                       return params;  // copying and dumping recurse
                                   }}},
                                 nullptr);
    std::string deep = std::string(300000, '[') + std::string(300000, ']');
    auto line = dispatcher.handle_line(R"({"jsonrpc":"2.0","method":"take","id":1,"params":{"v":)" +
                                       deep + "}}");
    ASSERT_TRUE(line);
    json r = json::parse(*line);
    EXPECT_EQ(r["error"]["code"], static_cast<int>(ErrorCode::kInvalidRequest));
    EXPECT_NE(r["error"]["message"].get<std::string>().find("deeper"), std::string::npos);
    EXPECT_EQ(calls, 0);
    // Ordinary nesting still works.
    std::string nested = std::string(20, '[') + std::string(20, ']');
    line = dispatcher.handle_line(R"({"jsonrpc":"2.0","method":"take","id":1,"params":{"v":)" +
                                  nested + "}}");
    ASSERT_TRUE(line);
    EXPECT_TRUE(json::parse(*line).contains("result"));
}

TEST(DescribeMethods, ListsRowsWithParams) {
    std::vector<CommandSpec> table = {
        {"port.add",
         "Adds a port",
         false,
         {{"name", ParamType::kString, true, "port name"},
          {"queues", ParamType::kUnsigned, false, "rx queues"}},
         nullptr},
        {"version", "Versions", true, {}, nullptr},
    };
    json d = describe_methods(table);
    ASSERT_EQ(d.size(), 2u);
    EXPECT_EQ(d[0]["name"], "port.add");
    EXPECT_EQ(d[0]["help"], "Adds a port");
    EXPECT_EQ(d[0]["safe_while_running"], false);
    EXPECT_EQ(d[0]["params"][1], json({{"name", "queues"},
                                       {"type", "unsigned"},
                                       {"required", false},
                                       {"help", "rx queues"}}));
    EXPECT_EQ(d[1]["params"], json::array());
    EXPECT_EQ(d[1]["safe_while_running"], true);
}

TEST(MakeErrorLine, BuildsAnErrorResponse) {
    std::string line = make_error_line(make_error(ErrorCode::kInvalidRequest, "too big"));
    EXPECT_EQ(line, R"({"jsonrpc":"2.0","error":{"code":-32600,"message":"too big"},"id":null})");
}

}  // namespace
}  // namespace ferry
