// Payload inspection of one worker: which of its connections have a stream slot, how far each
// direction has been scanned, and the scan itself. Written only by its worker (or by the
// control thread while the worker is paused). No allocation after create().
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/counters.h"
#include "dataplane/dpi/dpi_version.h"

namespace ferry {

class ConntrackShard;
struct CtPacketState;
struct FlowKey;
struct PacketLayout;

/// Counters of one worker's inspection: written by the worker, read by the control thread.
// Payload inspection's counters, one table for the struct, the names dpi.stats reports (summed
// over the workers) and their descriptions (stats.describe, the exporter,
// docs/control-api.md): _(field, description); every one only grows.
#define FERRY_FOREACH_DPI_COUNTER(_)                                            \
    _(packets, "Packets with payload scanned.")                                 \
    _(bytes, "Payload bytes scanned.")                                          \
    _(matches, "Pattern matches reported, every action.")                       \
    _(drops, "Connections ended by a drop pattern.")                            \
    _(alerts, "Alert matches.")                                                 \
    _(alerts_lost, "Alerts not reported: the outbox was full.")                 \
    _(marks, "Mark matches.")                                                   \
    _(streams_exhausted, "Connections not inspected: no free stream slot.")     \
    _(depth_reached, "Directions whose inspection stopped at the depth limit.") \
    _(gaps, "Directions whose inspection stopped at a sequence gap.")           \
    _(restarts, "Connections whose inspection restarted on a new database.")    \
    _(untracked, "Packets that reached dpi without a tracked connection.")      \
    _(scan_errors, "Hyperscan errors (the direction stops being inspected).")

struct DpiCounters {
#define FERRY_DPI_COUNTER_FIELD(field, description) uint64_t field;
    FERRY_FOREACH_DPI_COUNTER(FERRY_DPI_COUNTER_FIELD)
#undef FERRY_DPI_COUNTER_FIELD
};

/// One counter of DpiCounters: its name, description and field.
struct DpiCounterInfo {
    std::string_view name;
    std::string_view description;
    uint64_t DpiCounters::*field;
};

inline constexpr DpiCounterInfo kDpiCounters[] = {
#define FERRY_DPI_COUNTER_INFO(field, description) {#field, description, &DpiCounters::field},
    FERRY_FOREACH_DPI_COUNTER(FERRY_DPI_COUNTER_INFO)
#undef FERRY_DPI_COUNTER_INFO
};

/// A match the control thread reports (alert action).
struct DpiAlert {
    uint32_t pattern_id;
    uint8_t dir;  // 0: to server, 1: to client
    uint8_t pad[3];
    uint64_t offset;  // end of the match in the direction's stream
    CtTuple tuple;    // the connection's original tuple
};

inline constexpr unsigned kDpiAlertSlots = 64;

/// What dpi decided for the packet.
enum class DpiOutcome : uint8_t { kPass, kDrop };

/// What DpiWorker::scan_begin decided: a verdict already, or payload bytes to scan.
enum class DpiStep : uint8_t { kPass, kDrop, kScan };

class DpiWorker;

/// One packet's scan, from scan_begin to scan_end: the bytes of the frame to give to
/// scan_piece, and what the match callback reports into. Lives on the caller's stack.
struct DpiScan {
    uint32_t offset = 0;  // first byte of the frame to scan
    uint32_t length = 0;  // bytes to scan from there, in pieces, in order
    // The engine's, between scan_begin and scan_end:
    DpiWorker* self = nullptr;
    DpiVersion* version = nullptr;
    ConntrackShard* ct = nullptr;
    FlowKey* key = nullptr;
    uint32_t ct_index = 0;
    uint32_t slot = 0;
    int rc = 0;  // Hyperscan's first error (HS_SUCCESS: none)
    uint8_t dir = 0;
    bool drop = false;  // a drop pattern matched: scanning stopped
};

/// A connection's inspection state as it leaves a worker (migration) or enters one.
/// streams[d] is hs_compress_stream output, meaningful only to a database of hash db_hash.
struct DpiStreamState {
    uint64_t db_hash = 0;
    uint32_t seen[2] = {0, 0};      // bytes scanned per direction
    uint32_t next_seq[2] = {0, 0};  // TCP: the next expected sequence number per direction
    uint8_t dir_state[2] = {0, 0};  // DpiDirState
    std::vector<uint8_t> streams[2];
};

/// How an imported state was taken.
enum class DpiImport : uint8_t {
    kExpanded,   // same database: inspection continues where the source left it
    kRestarted,  // another database: inspection restarts from the next byte
    kNoSlot,     // no free stream slot: the connection is not inspected (counted)
    kFailed,     // the compressed stream was refused by Hyperscan: inspection restarts
};

/// Per direction: where inspection stands.
enum DpiDirState : uint8_t {
    kDpiFresh = 0,  // nothing scanned yet (TCP: sequence not known yet)
    kDpiScanning = 1,
    kDpiDone = 2,  // depth reached, sequence gap, match ended it, or no patterns
};

class DpiWorker {
public:
    /// @param slots          stream slots (connections inspected at once)
    /// @param ct_capacity    the shard's connection capacity (entries are indexed by it)
    /// @param depth_bytes    bytes inspected per direction of a connection
    /// Context: control (setup). @return nullptr on bad sizes or memory
    static std::unique_ptr<DpiWorker> create(uint16_t worker, uint32_t slots, uint32_t ct_capacity,
                                             uint32_t depth_bytes);

    /// Scans the payload of a tracked packet (st: its connection in shard ct) with v and
    /// applies what matches: kDrop ends the connection (ct.block) and drops the packet; mark
    /// sets the connection's mark and key->ct_mark; alert counts and queues a DpiAlert.
    /// The frame lies whole at frame (len bytes); a frame in several segments goes through
    /// scan_begin, scan_piece and scan_end instead. Context: fast path, owner.
    DpiOutcome inspect(DpiVersion& v, ConntrackShard& ct, const CtPacketState& st,
                       const uint8_t* frame, uint32_t len, const PacketLayout& layout, FlowKey* key,
                       uint64_t now_ms);

    /// inspect in three steps, for a frame whose payload lies in pieces (the segments of an
    /// mbuf): scan_begin decides from the headers (in the first piece, at frame; len is the
    /// whole frame's length) which payload bytes to scan, in sequence order and within the
    /// depth; the caller gives them to scan_piece in order, in as many pieces as they lie in
    /// (Hyperscan's stream mode finds matches across pieces as across packets); scan_end
    /// applies the outcome. Context: fast path, owner.
    /// @return kScan with *scan set: bytes [scan->offset, + scan->length) of the frame are to
    ///         be scanned; otherwise the verdict (nothing more to call)
    DpiStep scan_begin(DpiVersion& v, ConntrackShard& ct, const CtPacketState& st,
                       const uint8_t* frame, uint32_t len, const PacketLayout& layout, FlowKey* key,
                       DpiScan* scan);
    /// Scans the next n bytes of the range scan_begin set. @return false once scanning stopped
    /// (a drop pattern matched or Hyperscan failed): the rest need not be given
    bool scan_piece(DpiScan& scan, const uint8_t* bytes, uint32_t n);
    /// Ends a scan scan_begin started. @return kDrop when a drop pattern matched (the
    /// connection is ended), else kPass
    DpiOutcome scan_end(DpiScan& scan, uint64_t now_ms);

    /// The shard's remove hook: frees the connection's stream slot. Context: owner.
    void connection_removed(uint32_t ct_index);
    static void remove_hook(void* self, uint32_t ct_index);

    /// Copies a connection's inspection state out. Context: control, worker paused.
    /// @return false when the connection has none (never inspected, or finished)
    bool export_state(const DpiVersion& v, uint32_t ct_index, DpiStreamState* out) const;
    /// Gives connection ct_index the state `in`. Context: control, worker paused.
    DpiImport import_state(DpiVersion& v, uint32_t ct_index, const DpiStreamState& in);

    const DpiAlert* alerts() const { return alerts_; }
    unsigned alert_count() const { return n_alerts_; }
    void clear_alerts() { n_alerts_ = 0; }
    void count_lost_alerts(unsigned n);

    const DpiCounters& counters() const { return counters_; }
    uint32_t slots_in_use() const { return in_use_; }
    uint32_t slots() const { return static_cast<uint32_t>(slot_.size()); }
    uint32_t depth_bytes() const { return depth_; }
    uint16_t worker() const { return worker_; }

private:
    struct Slot {
        uint32_t ct_index;
        uint32_t next_free;
        uint64_t generation;  // of the DpiVersion its streams were last reset under; 0: none
        uint32_t seen[2];
        uint32_t next_seq[2];
        uint32_t first_seq[2];  // TCP: where scanning started; bytes before it were never seen
        uint8_t state[2];
        uint8_t pad[6];
    };
    DpiWorker() = default;
    /// Frees the connection's slot once neither direction has anything left to scan.
    void release_if_done(const DpiDatabase& db, uint32_t& so);
    uint32_t acquire(uint32_t ct_index);
    void release(uint32_t slot);
    void reset_streams(DpiVersion& v, uint32_t slot);
    static int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned flags,
                        void* ctx);

    uint16_t worker_ = 0;
    uint32_t depth_ = 0;
    uint32_t free_head_ = 0;
    uint32_t in_use_ = 0;
    std::vector<Slot> slot_;
    std::vector<uint32_t> slot_of_;  // by connection index: its slot, kNoSlot or kFinished
    DpiCounters counters_{};
    unsigned n_alerts_ = 0;
    DpiAlert alerts_[kDpiAlertSlots];
};

}  // namespace ferry
