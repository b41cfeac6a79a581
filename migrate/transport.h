// Moving a migration stream between two ferryd: addresses ("unix:/path", "tcp:HOST:PORT"),
// connecting and listening, sending a stream, reading exactly one stream off a socket (framed
// by its own header and section lengths, the magic checked first), and the target's answer
// (docs/migration-stream.md, "The exchange"). Blocking calls with deadlines; they run on a
// migration thread, never on a worker or the control loop. Context: control (migration thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "control/result.h"

namespace ferry {

using Deadline = std::chrono::steady_clock::time_point;

/// Opens a listening socket at "unix:/path" (an existing socket file is replaced) or
/// "tcp:HOST:PORT" (PORT 0: any free port). @return the fd, or kInvalidParams / kFailed
Result<int> transport_listen(const std::string& address);
/// The address a listening socket actually has ("tcp:127.0.0.1:40123"; unix: as given).
std::string transport_local_address(int fd, const std::string& given);
/// Waits for one connection. @return the connected fd, or kFailed on timeout or error
Result<int> transport_accept(int listen_fd, Deadline deadline);
/// Connects to "unix:/path" or "tcp:HOST:PORT". @return the fd, or kFailed
Result<int> transport_connect(const std::string& address, Deadline deadline);

/// Writes all of data. @return kFailed when the peer goes away or the deadline passes
Status transport_send(int fd, const uint8_t* data, size_t n, Deadline deadline);

/// Reads one stream: the header, then sections up to and including the trailer, nothing more.
/// on_section is called with the stream so far and each section's offset and length (header
/// and payload) as it completes, so a caller can decode while the rest arrives; an error it
/// returns ends the read. @return the stream's bytes, or kInvalidParams for something that is
/// not a stream (bad magic, a section beyond the size limit, on_section's error), kFailed when
/// the peer closes early or the deadline passes
using SectionCallback = std::function<Status(const uint8_t* stream, size_t offset, size_t length)>;
Result<std::vector<uint8_t>> transport_read_stream(int fd, Deadline deadline, size_t max_bytes,
                                                   const SectionCallback& on_section = {});

/// The target's answer: commit (message empty) or refusal (message says why).
struct StreamAnswer {
    bool commit = false;
    uint64_t stream_id = 0;
    std::string message;
};
Status transport_send_answer(int fd, const StreamAnswer& a, Deadline deadline);
/// The target's READY after a PRECOPY_END section: it has decoded everything sent so far.
Status transport_send_ready(int fd, Deadline deadline);
/// Waits for READY. @return kFailed when something else, or nothing, arrives in time
Status transport_await_ready(int fd, Deadline deadline);
/// @return the answer, or kFailed when none arrives in time or it is malformed
Result<StreamAnswer> transport_read_answer(int fd, Deadline deadline);

}  // namespace ferry
