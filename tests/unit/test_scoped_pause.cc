// ScopedPause (dataplane/pauser.h): the one way migration and takeover code pauses the workers.
// Against a Pauser that counts nested pauses as Switch does, expects every pause that took to be
// resumed exactly once (at the end of its scope or at release()), nested ones innermost first,
// and a pause that did not take never to be resumed.
#include <gtest/gtest.h>

#include "dataplane/pauser.h"

namespace ferry {
namespace {

/// Counts like Switch: nested pauses only count; fails the next `refuse` pauses.
struct CountingPauser : Pauser {
    int depth = 0;
    int pauses = 0;
    int resumes = 0;
    int refuse = 0;
    Status pause() override {
        if (refuse > 0) {
            --refuse;
            return make_error(ErrorCode::kBusy, "a worker did not pause");
        }
        ++pauses;
        ++depth;
        return Ok{};
    }
    void resume() override {
        ASSERT_GT(depth, 0) << "resume without a pause";
        ++resumes;
        --depth;
    }
};

TEST(ScopedPause, ResumesAtTheEndOfItsScope) {
    CountingPauser p;
    {
        ScopedPause paused(p);
        EXPECT_TRUE(paused);
        EXPECT_TRUE(paused.status());
        EXPECT_EQ(p.depth, 1);
    }
    EXPECT_EQ(p.depth, 0);
    EXPECT_EQ(p.resumes, 1);
}

TEST(ScopedPause, NestsInnermostFirst) {
    CountingPauser p;
    {
        ScopedPause outer(p);
        {
            ScopedPause inner(p);
            EXPECT_EQ(p.depth, 2);
        }
        EXPECT_EQ(p.depth, 1);  // the outer one still holds them
    }
    EXPECT_EQ(p.depth, 0);
    EXPECT_EQ(p.pauses, 2);
    EXPECT_EQ(p.resumes, 2);
}

TEST(ScopedPause, ReleaseResumesOnce) {
    CountingPauser p;
    {
        ScopedPause paused(p);
        paused.release();
        EXPECT_FALSE(paused);
        EXPECT_EQ(p.depth, 0);
        paused.release();
    }
    EXPECT_EQ(p.resumes, 1);
}

TEST(ScopedPause, APauseThatDidNotTakeIsNeverResumed) {
    CountingPauser p;
    p.refuse = 1;
    {
        ScopedPause paused(p);
        EXPECT_FALSE(paused);
        ASSERT_FALSE(paused.status());
        EXPECT_EQ(paused.status().error().code, ErrorCode::kBusy);
    }
    EXPECT_EQ(p.resumes, 0);
    EXPECT_EQ(p.depth, 0);
}

TEST(ScopedPause, HeldAcrossAScopeByOwner) {
    // As a migration source holds it from its capture until the target's answer.
    CountingPauser p;
    std::unique_ptr<ScopedPause> held;
    {
        auto paused = std::make_unique<ScopedPause>(p);
        ASSERT_TRUE(*paused);
        held = std::move(paused);
    }
    EXPECT_EQ(p.depth, 1);
    held.reset();
    EXPECT_EQ(p.depth, 0);
}

}  // namespace
}  // namespace ferry
