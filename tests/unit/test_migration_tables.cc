// The phase table (migrate/phase.h) and the format half of the stage table (migrate/sections.h).
// Expects the names migrate.status prints to stay what scripts, tests and docs/control-api.md
// know, a new migration to be allowed exactly in idle and in the three ends, continue only in
// ready, cancel only in listening and ready, the workers paused exactly from sending to
// resolving on a source and while a target installs; and every section type this version knows
// to have one row, found by its type.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "migrate/phase.h"
#include "migrate/sections.h"

namespace ferry {
namespace {

TEST(MigrationPhases, NamesAreTheOnesMigrateStatusPrints) {
    const char* names[] = {"idle",       "listening",  "receiving",    "staging",
                           "installing", "precopy",    "precopy_sent", "ready",
                           "continuing", "cancelling", "sending",      "waiting_commit",
                           "resolving",  "committed",  "refused",      "failed"};
    ASSERT_EQ(std::size(names), kPhases.size());
    for (size_t i = 0; i < kPhases.size(); ++i)
        EXPECT_EQ(phase_name(static_cast<MigrationPhase>(i)), names[i]);
}

TEST(MigrationPhases, WhatEachAllows) {
    const std::set<MigrationPhase> start = {MigrationPhase::kIdle, MigrationPhase::kCommitted,
                                            MigrationPhase::kRefused, MigrationPhase::kFailed};
    for (const PhaseInfo& p : kPhases) {
        SCOPED_TRACE(std::string(p.name));
        EXPECT_EQ(phase_allows(p.phase, kAllowsSend), start.count(p.phase) == 1);
        EXPECT_EQ(phase_allows(p.phase, kAllowsReceive), start.count(p.phase) == 1);
        EXPECT_EQ(phase_allows(p.phase, kAllowsContinue), p.phase == MigrationPhase::kReady);
        EXPECT_EQ(phase_allows(p.phase, kAllowsCancel),
                  p.phase == MigrationPhase::kReady || p.phase == MigrationPhase::kListening);
    }
}

TEST(MigrationPhases, WhereTheWorkersAre) {
    const std::set<MigrationPhase> paused = {MigrationPhase::kInstalling, MigrationPhase::kSending,
                                             MigrationPhase::kWaitingCommit,
                                             MigrationPhase::kResolving};
    for (const PhaseInfo& p : kPhases) {
        SCOPED_TRACE(std::string(p.name));
        EXPECT_EQ(p.workers == PhaseWorkers::kPaused, paused.count(p.phase) == 1);
        EXPECT_EQ(p.workers == PhaseWorkers::kSlices, p.phase == MigrationPhase::kStaging);
    }
}

TEST(SectionTable, EveryKnownTypeHasOneRowFoundByItsType) {
    std::set<uint16_t> seen;
    for (const SectionCodec& c : kSectionCodecs) {
        const auto type = static_cast<uint16_t>(c.section);
        EXPECT_TRUE(seen.insert(type).second) << c.name << " twice";
        EXPECT_EQ(find_section(type), &c) << c.name;
        EXPECT_NE(c.read, nullptr) << c.name;
    }
    EXPECT_EQ(find_section(static_cast<uint16_t>(SectionType::kTrailer)), nullptr);
    EXPECT_EQ(find_section(0x1234), nullptr);
    // PORT sections come first: the others refer to ports by number.
    EXPECT_EQ(kSectionCodecs.front().section, SectionType::kPort);
}

}  // namespace
}  // namespace ferry
