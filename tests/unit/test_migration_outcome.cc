// The exchange's outcome query (docs/migration-stream.md, "The exchange"): a source that did not
// hear the target's answer asks what became of its stream. Sends a query over a socket pair and
// expects the target's side to read the stream_id back; anything else is refused as not a query.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include <gtest/gtest.h>

#include "migrate/transport.h"

namespace ferry {
namespace {

Deadline soon() {
    return std::chrono::steady_clock::now() + std::chrono::seconds(2);
}

struct Pair {
    int fd[2] = {-1, -1};
    Pair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0); }
    ~Pair() {
        close(fd[0]);
        close(fd[1]);
    }
};

TEST(OutcomeQuery, RoundTrip) {
    Pair p;
    auto source = plain_channel(p.fd[0]);
    auto target = plain_channel(p.fd[1]);
    ASSERT_TRUE(transport_send_outcome_query(*source, 0x0123456789abcdefULL, soon()));
    auto asked = transport_read_outcome_query(*target, soon());
    ASSERT_TRUE(asked) << asked.error().message;
    EXPECT_EQ(*asked, 0x0123456789abcdefULL);
    // The target answers as it answered the stream; the source reads it as any answer.
    ASSERT_TRUE(transport_send_answer(*target, StreamAnswer{true, *asked, ""}, soon()));
    auto answer = transport_read_answer(*source, soon());
    ASSERT_TRUE(answer) << answer.error().message;
    EXPECT_TRUE(answer->commit);
    EXPECT_EQ(answer->stream_id, 0x0123456789abcdefULL);
}

TEST(OutcomeQuery, AnAnswerIsNotAQuery) {
    Pair p;
    auto source = plain_channel(p.fd[0]);
    auto target = plain_channel(p.fd[1]);
    ASSERT_TRUE(transport_send_answer(*source, StreamAnswer{true, 7, ""}, soon()));
    auto asked = transport_read_outcome_query(*target, soon());
    ASSERT_FALSE(asked);
    EXPECT_EQ(asked.error().code, ErrorCode::kInvalidParams);
}

TEST(OutcomeQuery, ShortQueryTimesOut) {
    Pair p;
    const uint8_t half[5] = {0x89, 'F', 'E', 'R', 'R'};
    ASSERT_EQ(write(p.fd[0], half, sizeof(half)), 5);
    auto target = plain_channel(p.fd[1]);
    auto asked = transport_read_outcome_query(
        *target, std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
    ASSERT_FALSE(asked);
    EXPECT_EQ(asked.error().code, ErrorCode::kFailed);
}

}  // namespace
}  // namespace ferry
