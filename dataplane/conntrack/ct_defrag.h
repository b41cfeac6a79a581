// Reassembly of IP fragments for connection tracking, one table per worker (docs/conntrack.md,
// "Fragments"). Like Open vSwitch's ipf and Linux's nf_defrag it holds the fragments of a
// datagram until all are there, so that conntrack can judge the datagram once, by the ports of
// its first fragment and the checksum of the whole; unlike a reassembler for delivery it keeps
// the fragments themselves (they are forwarded as they came, each with the datagram's verdict)
// and builds nothing. Only bookkeeping lives here: which fragments of which datagram are held,
// whether they overlap, when the datagram is whole, the sum of its transport bytes. The packets
// are opaque handles the caller owns the meaning of (rte_mbuf* in the switch), so the table is
// free of DPDK and unit-tested alone.
//
// Bounds, all fixed at create(): datagrams in flight, fragments per datagram, bytes per
// datagram, fragments held in all (the buffers taken from the packet pool), and the time a
// datagram may take to complete, counted from its first fragment as Linux's ipfrag_time. Every
// structure is allocated by create(); add, expire and emit neither allocate nor lock. Written by
// its worker only. Context: fast path, owner worker (create: control).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "dataplane/drop_reason.h"
#include "dataplane/flow_key.h"
#include "dataplane/rule.h"

namespace ferry {

/// A fragment as ct_frag_parse read it from its frame.
struct CtFragment {
    uint32_t id;          // IPv4: the 16-bit identification; IPv6: the fragment header's
    uint32_t offset;      // of its payload in the datagram's fragmentable part, bytes
    uint32_t length;      // payload bytes it carries
    uint32_t payload_at;  // frame offset of that payload
    uint32_t l4_at;       // first fragment: frame offset of the transport header; else 0
    bool more;            // more fragments follow (MF / M flag)
};

/// Reads the fragment fields of a packet the parser flagged (layout.fragment). Context: fast
/// path. @return nullopt with *f filled, or kCtFragBad for a fragment no reassembly can take:
///         empty, a non-last one whose length is not a multiple of 8, or one ending past the
///         65,535 bytes an IP length can say
std::optional<DropReason> ct_frag_parse(const uint8_t* frame, uint32_t len,
                                        const PacketLayout& layout, const FlowKey& key,
                                        CtFragment* f);

/// The whole datagram's transport checks, as the L4 bits of a CtRxCsum (kCsumL4Good or
/// kCsumL4Bad; kCsumUnknown for a protocol conntrack does not check): its checksum over the
/// l4_length bytes whose unfolded sum is l4_sum (what the fragments added), with the
/// pseudo-header of f0, and for UDP a length within the datagram, as Linux checks them after
/// nf_defrag. f0: the first fragment's frame, its transport header within. Context: fast path.
uint8_t ct_datagram_l4_verdict(const uint8_t* f0, const PacketLayout& l, const FlowKey& k,
                               uint32_t l4_length, uint64_t l4_sum);

/// The most fragments a datagram may have: a datagram is emitted as one run of its fragments.
inline constexpr uint32_t kCtDefragMaxFragments = 64;

/// The limits of one worker's table.
struct CtDefragLimits {
    uint32_t datagrams = 1024;   // datagrams in flight
    uint32_t fragments = 64;     // fragments of one datagram (at most kCtDefragMaxFragments)
    uint32_t bytes = 65535;      // payload bytes of one datagram
    uint32_t held = 1024;        // fragments held in all: packet buffers kept from the pool
    uint32_t timeout_ms = 1000;  // from a datagram's first fragment to its completion
};

/// Which datagram a fragment belongs to (RFC 791 / 8200: addresses, protocol, identification),
/// with the port it came in on and the conntrack zone it is tracked in.
struct CtFragKey {
    uint8_t src[16];
    uint8_t dst[16];
    uint32_t id;
    uint16_t in_port;
    uint16_t zone;
    uint8_t proto;
    uint8_t ip_version;
    uint8_t pad[6];
    bool operator==(const CtFragKey&) const = default;
};
static_assert(sizeof(CtFragKey) == 48);

/// A complete datagram, as emit() hands it over: its fragments in offset order (the first holds
/// the transport header), and what tracking the whole needs.
struct CtDatagram {
    const CtFragKey* key;
    void* const* pkts;  // n handles, offset order
    uint32_t n;
    uint32_t l4_length;        // transport message length: the datagram's bytes from its header on
    uint64_t l4_sum;           // unfolded one's-complement sum of those bytes
    const CompiledRule* rule;  // the first fragment's ct action and the actions after it
    uint8_t hops;              // the first fragment's hand-offs (ct_action)
};

/// What add() did with a fragment.
enum class CtFragAdd : uint8_t {
    kHeld,      // kept; the datagram is not complete yet
    kComplete,  // kept, and its datagram is whole: emit() hands it over
    kRefused,   // not kept: the caller drops it with *reason (held ones went to the release hook)
};

class CtDefrag {
public:
    /// Called with every held packet the table discards (its datagram overlapped, grew past a
    /// bound or timed out), the port it came in on, and the reason. Context: fast path, owner.
    using Release = void (*)(void* ctx, void* pkt, uint16_t in_port, DropReason reason);

    /// A table with the given limits, or nullptr when they are out of range (0, more than
    /// kCtDefragMaxFragments fragments) or memory is short. Context: control (setup).
    static std::unique_ptr<CtDefrag> create(const CtDefragLimits& limits, Release release,
                                            void* ctx);
    ~CtDefrag();
    CtDefrag(const CtDefrag&) = delete;
    CtDefrag& operator=(const CtDefrag&) = delete;

    /// Takes one fragment. Context: fast path, owner.
    /// @param sum   unfolded one's-complement sum of the bytes the fragment adds to the
    ///              transport message: the first fragment's from its transport header on, the
    ///              others' whole payload (their offsets are multiples of 8: no byte swap)
    /// @param rule  the first fragment's: its ct action and the actions after it, copied (held
    ///              packets outlive rule snapshots); ignored for the others
    /// @return kRefused with *reason: kCtFragDuplicate (the same bytes again: only this one is
    ///         dropped), kCtFragOverlap, kCtFragTooMany, kCtFragBad (an end that contradicts the
    ///         last fragment's: the datagram is dropped too), kCtFragFull (no datagram or
    ///         buffer left: nothing else changes)
    CtFragAdd add(const CtFragKey& key, const CtFragment& f, uint64_t sum, void* pkt,
                  const CompiledRule* rule, uint8_t hops, uint64_t now_ms, DropReason* reason);

    /// Drops the datagrams whose time is up (kCtFragTimeout). The oldest is at the head of a
    /// list in arrival order, so the common call looks at one deadline. Context: fast path.
    /// @return datagrams dropped
    uint32_t expire(uint64_t now_ms);

    /// Whether complete datagrams wait for emit(). Context: fast path, owner.
    bool ready() const { return ready_head_ != kNone; }

    /// Hands every complete datagram to fn(const CtDatagram&), oldest first, and forgets it: fn
    /// takes ownership of the handles. Context: fast path, owner.
    template <class Fn>
    void emit(Fn&& fn) {
        while (ready_head_ != kNone) {
            const uint32_t s = ready_head_;
            ready_head_ = slots_[s].next;
            if (ready_head_ == kNone) ready_tail_ = kNone;
            CtDatagram d;
            fill(s, &d);
            fn(static_cast<const CtDatagram&>(d));
            release_slot(s);
        }
    }

    /// Datagrams and fragments held now (ready ones included). Context: owner, or control while
    /// the owner is paused.
    uint32_t datagrams() const { return in_use_; }
    uint32_t fragments() const { return held_; }
    const CtDefragLimits& limits() const { return limits_; }

    /// Replaces the release hook (teardown, when the worker whose counters it used is gone).
    /// Context: control while the owner is stopped.
    void set_release(Release release, void* ctx) {
        release_ = release;
        release_ctx_ = ctx;
    }

    /// Releases every held packet (kCtFragTimeout): the table is emptied. Context: owner, or
    /// control while the owner is paused (teardown).
    void clear();

private:
    static constexpr uint32_t kNone = UINT32_MAX;
    /// One datagram: in the free list, in progress (hashed, in the age list) or ready.
    struct Slot {
        CtFragKey key;
        CompiledRule rule;    // valid once the first fragment is held
        uint64_t expires_ms;  // in progress: when it is dropped
        uint64_t sum;         // of the transport bytes held
        uint32_t next;        // free, age or ready list
        uint32_t prev;        // age list
        uint32_t hash_next;   // bucket chain
        uint32_t end;         // length of the fragmentable part, once the last fragment is held
        uint32_t bytes;       // payload bytes held
        uint32_t l4_skip;     // bytes of the fragmentable part before the transport header
        uint8_t n;            // fragments held
        uint8_t have_first;
        uint8_t have_last;
        uint8_t hops;
    };
    CtDefrag() = default;
    uint32_t find(const CtFragKey& key, uint64_t h) const;
    uint32_t open(const CtFragKey& key, uint64_t h, uint64_t now_ms);
    void drop_datagram(uint32_t s, DropReason reason);
    void unlink_age(uint32_t s);
    void unlink_hash(uint32_t s);
    void release_slot(uint32_t s);
    void fill(uint32_t s, CtDatagram* d) const;

    CtDefragLimits limits_;
    Release release_ = nullptr;
    void* release_ctx_ = nullptr;
    Slot* slots_ = nullptr;
    void** pkts_ = nullptr;  // fragments x datagrams handles, offset order in each slot
    /// Where a held fragment's payload lies in its datagram's fragmentable part.
    struct Span {
        uint32_t begin;
        uint32_t end;
    };
    Span* spans_ = nullptr;  // beside pkts_
    uint32_t* buckets_ = nullptr;
    uint32_t bucket_mask_ = 0;
    uint32_t free_head_ = kNone;
    uint32_t age_head_ = kNone;  // oldest datagram in progress
    uint32_t age_tail_ = kNone;
    uint32_t ready_head_ = kNone;
    uint32_t ready_tail_ = kNone;
    uint32_t in_use_ = 0;
    uint32_t held_ = 0;
};

}  // namespace ferry
