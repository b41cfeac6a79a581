// Moving a migration stream between two ferryd: addresses ("unix:/path", "tcp:HOST:PORT",
// "tcp-insecure:HOST:PORT"), connecting and listening, who may connect to a unix socket, sending
// a stream, reading exactly one stream off a byte channel (framed by its own header and section
// lengths, the magic checked first), and the target's answer (docs/migration-stream.md, "The
// exchange"). A channel is a plain socket or a TLS session over one (migrate/tls_channel.h).
// Blocking calls with deadlines; they run on a migration thread, never on a worker or the
// control loop. Context: control (migration thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/result.h"

namespace ferry {

using Deadline = std::chrono::steady_clock::time_point;

/// What an address names. tcp: is TLS with certificates on both ends; tcp-insecure: is the
/// operator's explicit choice of a clear, unauthenticated TCP channel.
enum class TransportScheme { kUnix, kTcp, kTcpInsecure };

struct TransportAddress {
    TransportScheme scheme = TransportScheme::kUnix;
    std::string path;  // unix
    std::string host;  // tcp, without brackets
    std::string port;
};

/// Parses "unix:/path", "tcp:HOST:PORT" or "tcp-insecure:HOST:PORT" ([v6] hosts in brackets).
/// Context: any. @return the parts, or kInvalidParams saying what an address looks like
Result<TransportAddress> transport_parse(const std::string& address);

/// Opens a listening socket at "unix:/path" or "tcp[-insecure]:HOST:PORT" (PORT 0: any free
/// port). A unix socket is mode 0600 before it listens; what the path names already is
/// replaced only if it is a socket (an old listener's), else kInvalidParams and it is left
/// alone. Context: control. @return the fd, or kInvalidParams / kFailed
Result<int> transport_listen(const std::string& address);
/// The address a listening socket actually has ("tcp:127.0.0.1:40123", with the scheme of
/// given; unix: as given). Context: any.
std::string transport_local_address(int fd, const std::string& given);
/// Waits for one connection. @return the connected fd, or kFailed on timeout or error
Result<int> transport_accept(int listen_fd, Deadline deadline);
/// Connects to "unix:/path" or "tcp[-insecure]:HOST:PORT". @return the fd, or kFailed
Result<int> transport_connect(const std::string& address, Deadline deadline);

/// The peer of a connected unix socket must run as this process's effective uid or as root
/// (SO_PEERCRED), checked before anything is read from it. Context: migration thread.
/// @return Ok, or kFailed naming the peer's uid and pid
Status transport_check_peer_uid(int fd);

/// A connected byte stream to the peer: a plain socket or a TLS session over one. Reads and
/// writes wait at most until their deadline. Context: migration thread.
class ByteChannel {
public:
    virtual ~ByteChannel() = default;
    /// Reads at most n (> 0) bytes. @return the count read (0: the peer closed), or kFailed
    ///         on an error or at the deadline
    virtual Result<size_t> read_some(uint8_t* dst, size_t n, Deadline deadline) = 0;
    /// Writes at most n (> 0) bytes. @return the count written (> 0), or kFailed
    virtual Result<size_t> write_some(const uint8_t* src, size_t n, Deadline deadline) = 0;
    /// The socket underneath (to shut it down from another thread).
    virtual int fd() const = 0;
};

/// A plain socket as a channel; the caller keeps owning fd. Context: migration thread.
std::unique_ptr<ByteChannel> plain_channel(int fd);

/// Writes all of data. @return kFailed when the peer goes away or the deadline passes
Status transport_send(ByteChannel& ch, const uint8_t* data, size_t n, Deadline deadline);
/// The same over a plain socket (the takeover socket).
Status transport_send(int fd, const uint8_t* data, size_t n, Deadline deadline);

/// Reads one stream: the header, then sections up to and including the trailer, nothing more.
/// on_section is called with the stream so far and each section's offset and length (header
/// and payload) as it completes, so a caller can decode while the rest arrives; an error it
/// returns ends the read. @return the stream's bytes, or kInvalidParams for something that is
/// not a stream (bad magic, a section beyond the size limit, on_section's error), kFailed when
/// the peer closes early or the deadline passes
using SectionCallback = std::function<Status(const uint8_t* stream, size_t offset, size_t length)>;
Result<std::vector<uint8_t>> transport_read_stream(ByteChannel& ch, Deadline deadline,
                                                   size_t max_bytes,
                                                   const SectionCallback& on_section = {});
/// The same over a plain socket (the takeover socket).
Result<std::vector<uint8_t>> transport_read_stream(int fd, Deadline deadline, size_t max_bytes,
                                                   const SectionCallback& on_section = {});

/// The target's answer: commit (message empty) or refusal (message says why).
struct StreamAnswer {
    bool commit = false;
    uint64_t stream_id = 0;
    std::string message;
};
/// Sends the target's answer. @return kFailed when it could not be written by the deadline
Status transport_send_answer(ByteChannel& ch, const StreamAnswer& a, Deadline deadline);
/// The target's READY after a PRECOPY_END section: it has decoded everything sent so far.
Status transport_send_ready(ByteChannel& ch, Deadline deadline);
/// Waits for READY. @return kFailed when something else, or nothing, arrives in time
Status transport_await_ready(ByteChannel& ch, Deadline deadline);
/// @return the answer, or kFailed when none arrives in time or it is malformed
Result<StreamAnswer> transport_read_answer(ByteChannel& ch, Deadline deadline);

/// A source that did not hear the answer asks on a new connection what became of stream_id
/// (docs/migration-stream.md, "The exchange"); the target answers as it answered the stream.
/// @return kFailed when it could not be written by the deadline
Status transport_send_outcome_query(ByteChannel& ch, uint64_t stream_id, Deadline deadline);
/// A target's side of that. @return the stream_id asked about, kInvalidParams for anything
///         but a query, kFailed when nothing complete arrives in time
Result<uint64_t> transport_read_outcome_query(ByteChannel& ch, Deadline deadline);

}  // namespace ferry
