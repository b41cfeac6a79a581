// Result of a control or migration operation: a value, or an error code with a message that a
// user can act on. The fast path never uses this; it counts drops instead. It lives in the lowest
// layer that uses it (dataplane/pauser.h: pausing the workers can fail), so that dataplane/,
// migrate/ and control/ share it without a lower layer including control/.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace ferry {

/// Error codes. Values >= -32768 and <= -32000 are JSON-RPC codes and go on the wire unchanged.
enum class ErrorCode : int {
    kParseError = -32700,
    kInvalidRequest = -32600,
    kMethodNotFound = -32601,
    kInvalidParams = -32602,
    kInternal = -32603,
    kFailed = -32000,    // the operation was tried and failed (device, EAL, system call)
    kBusy = -32001,      // workers could not be paused in time, or another operation runs
    kNotFound = -32002,  // a named object (port, MAC) does not exist
    kConflict = -32003,  // the object already exists or clashes with existing state
};

struct Error {
    ErrorCode code = ErrorCode::kFailed;
    std::string message;
};

template <class T>
class Result {
public:
    Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() { return value(); }
    const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

/// Result for operations that produce no value.
struct Ok {};
using Status = Result<Ok>;

inline Error make_error(ErrorCode code, std::string message) {
    return Error{code, std::move(message)};
}

}  // namespace ferry
