// Reassembly for connection tracking (dataplane/conntrack/ct_defrag.h) and the tracking of a
// reassembled datagram by a shard (its first fragment with the whole's length and checks, the
// later ones through the packet state), as the ct stage runs them (ct_defrag_stage.cc).
// Sends: UDP datagrams cut into IPv4 and IPv6 fragments, in order, out of order, repeated,
// overlapping, too many, malformed, late. Expects: a datagram is handed over exactly when whole,
// its fragments in offset order with the transport sum that verifies its checksum; everything
// else is refused or released with its drop reason; NAT rewrites every fragment and the
// reassembled datagram's checksum stays right.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "dataplane/conntrack/ct_checksum.h"
#include "dataplane/conntrack/ct_defrag.h"
#include "tests/unit/ct_shard_fixture.h"

namespace ferry {
namespace {

/// The IPv4 fragments of the UDP (or proto) datagram `l4` (checksum computed) from src to dst:
/// pieces cut at the given payload offsets (multiples of 8).
std::vector<Bytes> ipv4_fragments(const Addr& src, const Addr& dst, Bytes l4,
                                  const std::vector<size_t>& cuts, uint16_t id = 0x4242,
                                  uint8_t proto = kUdp) {
    set16(l4, checksum_at(proto),
          l4_checksum(4, proto, src.data(), dst.data(), l4.data(), l4.size()));
    std::vector<Bytes> out;
    std::vector<size_t> at = cuts;
    at.insert(at.begin(), 0);
    at.push_back(l4.size());
    for (size_t i = 0; i + 1 < at.size(); ++i) {
        const Bytes piece(l4.begin() + static_cast<std::ptrdiff_t>(at[i]),
                          l4.begin() + static_cast<std::ptrdiff_t>(at[i + 1]));
        Bytes ip;
        put16(ip, 0x4500);
        put16(ip, static_cast<uint16_t>(20 + piece.size()));
        put16(ip, id);
        const bool more = i + 2 < at.size();
        put16(ip, static_cast<uint16_t>((more ? 0x2000 : 0) | at[i] / 8));
        ip.push_back(64);
        ip.push_back(proto);
        put16(ip, 0);
        ip.insert(ip.end(), src.begin(), src.begin() + 4);
        ip.insert(ip.end(), dst.begin(), dst.begin() + 4);
        set16(ip, 10, ipv4_header_checksum(ip.data()));
        out.push_back(ethernet(0x0800, cat(ip, piece)));
    }
    return out;
}

/// The IPv6 fragments (fragment header, next header UDP) of the UDP datagram `l4`.
std::vector<Bytes> ipv6_fragments(const Addr& src, const Addr& dst, Bytes l4,
                                  const std::vector<size_t>& cuts, uint32_t id = 0x12345678) {
    set16(l4, 6, l4_checksum(6, kUdp, src.data(), dst.data(), l4.data(), l4.size()));
    std::vector<Bytes> out;
    std::vector<size_t> at = cuts;
    at.insert(at.begin(), 0);
    at.push_back(l4.size());
    for (size_t i = 0; i + 1 < at.size(); ++i) {
        const Bytes piece(l4.begin() + static_cast<std::ptrdiff_t>(at[i]),
                          l4.begin() + static_cast<std::ptrdiff_t>(at[i + 1]));
        Bytes ip;
        put16(ip, 0x6000);
        put16(ip, 0);
        put16(ip, static_cast<uint16_t>(8 + piece.size()));
        ip.push_back(44);  // fragment header
        ip.push_back(64);
        ip.insert(ip.end(), src.begin(), src.end());
        ip.insert(ip.end(), dst.begin(), dst.end());
        ip.push_back(kUdp);
        ip.push_back(0);
        const bool more = i + 2 < at.size();
        put16(ip, static_cast<uint16_t>(at[i] | (more ? 1 : 0)));
        put32(ip, id);
        out.push_back(ethernet(0x86dd, cat(ip, piece)));
    }
    return out;
}

/// What the release hook was given.
struct Released {
    std::vector<std::pair<void*, DropReason>> pkts;
};

void record_release(void* ctx, void* pkt, uint16_t, DropReason r) {
    static_cast<Released*>(ctx)->pkts.emplace_back(pkt, r);
}

/// A reassembly table fed with test frames, as ct_defrag_hold feeds it.
class CtDefragTest : public ::testing::Test {
protected:
    void make(const CtDefragLimits& limits = {}) {
        table_ = CtDefrag::create(limits, record_release, &released_);
        ASSERT_NE(table_, nullptr);
    }
    void SetUp() override { make(); }

    /// Adds frame f (its handle: its address); *why gets the reason when refused.
    CtFragAdd add(Bytes& f, uint64_t now_ms = 0, DropReason* why = nullptr) {
        Parsed p;
        EXPECT_TRUE(parse(f, &p));
        EXPECT_TRUE(p.layout.fragment);
        CtFragment frag;
        DropReason r = DropReason::kCount;
        if (auto bad =
                ct_frag_parse(f.data(), static_cast<uint32_t>(f.size()), p.layout, p.key, &frag)) {
            if (why != nullptr) *why = *bad;
            return CtFragAdd::kRefused;
        }
        const uint32_t from = frag.offset == 0 ? frag.l4_at : frag.payload_at;
        const uint64_t sum =
            csum_detail::add_bytes(f.data() + from, frag.payload_at + frag.length - from, 0);
        CtFragKey key{};
        std::memcpy(key.src, p.key.ip_src, 16);
        std::memcpy(key.dst, p.key.ip_dst, 16);
        key.id = frag.id;
        key.in_port = kInPort;
        key.proto = p.key.ip_proto;
        key.ip_version = p.key.ip_version;
        CompiledRule rule{};
        rule.n_actions = 1;
        const CtFragAdd a = table_->add(key, frag, sum, &f, &rule, 0, now_ms, &r);
        if (why != nullptr) *why = r;
        return a;
    }

    /// The datagrams emit() hands over: for each, its frames and whether its checks pass.
    struct Out {
        std::vector<const Bytes*> frames;
        uint8_t verdict;
        uint32_t l4_length;
    };
    std::vector<Out> emit() {
        std::vector<Out> out;
        table_->emit([&](const CtDatagram& d) {
            Out o{};
            for (uint32_t i = 0; i < d.n; ++i) o.frames.push_back(static_cast<Bytes*>(d.pkts[i]));
            Parsed p;
            EXPECT_TRUE(parse(*o.frames[0], &p));
            o.verdict =
                ct_datagram_l4_verdict(o.frames[0]->data(), p.layout, p.key, d.l4_length, d.l4_sum);
            o.l4_length = d.l4_length;
            out.push_back(o);
        });
        return out;
    }

    Released released_;
    std::unique_ptr<CtDefrag> table_;
};

/// The datagram most tests cut: 108 bytes of UDP from port 5353 to 53.
Bytes udp_datagram() {
    return udp(5353, 53, pattern(100));
}

TEST_F(CtDefragTest, ParserFlagsFragmentsAndKeepsPortsOfTheFirstOnly) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    Parsed first;
    Parsed second;
    ASSERT_TRUE(parse(f[0], &first));
    ASSERT_TRUE(parse(f[1], &second));
    EXPECT_TRUE(first.layout.fragment);
    EXPECT_NE(first.layout.l4_offset, 0);
    EXPECT_EQ(first.key.l4_src, 5353);
    EXPECT_TRUE(second.layout.fragment);
    EXPECT_EQ(second.layout.l4_offset, 0);
    Parsed whole;
    const Bytes w = udp_frame(kClient4, 1, kServer4, 2);
    ASSERT_TRUE(parse(w, &whole));
    EXPECT_FALSE(whole.layout.fragment);
}

TEST_F(CtDefragTest, InOrderFragmentsCompleteWithTheLastAndVerify) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {32, 64});
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[1]), CtFragAdd::kHeld);
    EXPECT_FALSE(table_->ready());
    EXPECT_EQ(add(f[2]), CtFragAdd::kComplete);
    EXPECT_EQ(table_->fragments(), 3u);
    auto out = emit();
    ASSERT_EQ(out.size(), 1u);
    ASSERT_EQ(out[0].frames.size(), 3u);
    EXPECT_EQ(out[0].frames[0], &f[0]);
    EXPECT_EQ(out[0].frames[2], &f[2]);
    EXPECT_EQ(out[0].l4_length, udp_datagram().size());
    EXPECT_EQ(out[0].verdict, kCsumL4Good);
    EXPECT_EQ(table_->datagrams(), 0u);
    EXPECT_EQ(table_->fragments(), 0u);
    EXPECT_TRUE(released_.pkts.empty());
}

TEST_F(CtDefragTest, OutOfOrderFragmentsAreHandedOverInOffsetOrder) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {32, 64});
    EXPECT_EQ(add(f[2]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[1]), CtFragAdd::kComplete);
    auto out = emit();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frames, (std::vector<const Bytes*>{&f[0], &f[1], &f[2]}));
    EXPECT_EQ(out[0].verdict, kCsumL4Good);
}

TEST_F(CtDefragTest, ADuplicateIsDroppedAloneAndTheDatagramCompletes) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    Bytes again = f[0];
    DropReason why;
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(again, 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragDuplicate);
    EXPECT_EQ(add(f[1]), CtFragAdd::kComplete);
    auto out = emit();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frames.size(), 2u);
    EXPECT_TRUE(released_.pkts.empty());
}

TEST_F(CtDefragTest, AnOverlapDropsTheWholeDatagram) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    // Bytes 40.. again, overlapping the first fragment's 0..48: a rewrite of the ports' data.
    auto other = ipv4_fragments(kClient4, kServer4, udp_datagram(), {40});
    DropReason why;
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(other[1], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragOverlap);
    ASSERT_EQ(released_.pkts.size(), 1u);
    EXPECT_EQ(released_.pkts[0].first, &f[0]);
    EXPECT_EQ(released_.pkts[0].second, DropReason::kCtFragOverlap);
    // The datagram is gone: its last fragment alone starts a new one.
    EXPECT_EQ(add(f[1]), CtFragAdd::kHeld);
    EXPECT_EQ(table_->datagrams(), 1u);
}

TEST_F(CtDefragTest, AnIncompleteDatagramTimesOutFromItsFirstFragment) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    EXPECT_EQ(add(f[0], 100), CtFragAdd::kHeld);
    EXPECT_EQ(table_->expire(1099), 0u);
    EXPECT_TRUE(released_.pkts.empty());
    EXPECT_EQ(table_->expire(1100), 1u);
    ASSERT_EQ(released_.pkts.size(), 1u);
    EXPECT_EQ(released_.pkts[0].second, DropReason::kCtFragTimeout);
    EXPECT_EQ(table_->datagrams(), 0u);
    // A late fragment whose datagram expiry has not visited yet is not completed by it either.
    auto g = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48}, 7);
    EXPECT_EQ(add(g[0], 2000), CtFragAdd::kHeld);
    EXPECT_EQ(add(g[1], 3000), CtFragAdd::kHeld);
    EXPECT_EQ(released_.pkts.back().first, &g[0]);
    EXPECT_EQ(released_.pkts.back().second, DropReason::kCtFragTimeout);
}

TEST_F(CtDefragTest, TooManyFragmentsDropTheDatagram) {
    CtDefragLimits lim;
    lim.fragments = 4;
    make(lim);
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {8, 16, 24, 32, 40});
    for (int i = 0; i < 4; ++i) EXPECT_EQ(add(f[static_cast<size_t>(i)]), CtFragAdd::kHeld);
    DropReason why;
    EXPECT_EQ(add(f[4], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragTooMany);
    EXPECT_EQ(released_.pkts.size(), 4u);
    EXPECT_EQ(table_->fragments(), 0u);
}

TEST_F(CtDefragTest, TheTableRefusesPastItsDatagramsAndHeldFragments) {
    CtDefragLimits lim;
    lim.datagrams = 2;
    lim.held = 3;
    make(lim);
    auto a = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48}, 1);
    auto b = ipv4_fragments(kClient4, kServer4, udp_datagram(), {16, 48}, 2);
    auto c = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48}, 3);
    DropReason why;
    EXPECT_EQ(add(a[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(b[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(c[0], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragFull);
    EXPECT_EQ(add(b[1]), CtFragAdd::kHeld);
    EXPECT_EQ(add(b[2], 0, &why), CtFragAdd::kRefused);  // 3 held already
    EXPECT_EQ(why, DropReason::kCtFragFull);
    EXPECT_TRUE(released_.pkts.empty());  // a refusal for room takes nothing held
}

TEST_F(CtDefragTest, MalformedFragmentsAreRefused) {
    DropReason why;
    // A non-last fragment whose length is not a multiple of 8.
    auto odd = ipv4_fragments(kClient4, kServer4, udp_datagram(), {44});
    EXPECT_EQ(add(odd[0], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragBad);
    // One ending past 65,535 bytes: offset 65528 with 16 bytes.
    auto far = ipv4_fragments(kClient4, kServer4, udp(1, 2, pattern(8)), {});
    set16(far[0], 14 + 6, static_cast<uint16_t>(65528 / 8));
    set16(far[0], 14 + 10, 0);
    set16(far[0], 14 + 10, ipv4_header_checksum(far[0].data() + 14));
    EXPECT_EQ(add(far[0], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragBad);
    // A last fragment ending before bytes already held drops the datagram.
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48, 96});
    auto short_end = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    set16(short_end[1], 14 + 2, static_cast<uint16_t>(20 + 40));  // ends at 88, not 108
    short_end[1].resize(14 + 20 + 40);
    set16(short_end[1], 14 + 10, 0);
    set16(short_end[1], 14 + 10, ipv4_header_checksum(short_end[1].data() + 14));
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[2]), CtFragAdd::kHeld);
    EXPECT_EQ(add(short_end[1], 0, &why), CtFragAdd::kRefused);
    EXPECT_EQ(why, DropReason::kCtFragBad);
    EXPECT_EQ(released_.pkts.size(), 2u);
}

TEST_F(CtDefragTest, AWrongChecksumOrUdpLengthShowsInTheVerdict) {
    Bytes l4 = udp_datagram();
    auto f = ipv4_fragments(kClient4, kServer4, l4, {48});
    f[1][f[1].size() - 1] ^= 0x40;  // a payload byte of the last fragment
    EXPECT_EQ(add(f[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[1]), CtFragAdd::kComplete);
    auto out = emit();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].verdict, kCsumL4Bad);
    // A UDP length beyond the datagram (its checksum right for it).
    Bytes longer = udp_datagram();
    set16(longer, 4, static_cast<uint16_t>(longer.size() + 8));
    auto g = ipv4_fragments(kClient4, kServer4, longer, {48}, 9);
    EXPECT_EQ(add(g[0]), CtFragAdd::kHeld);
    EXPECT_EQ(add(g[1]), CtFragAdd::kComplete);
    out = emit();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].verdict, kCsumL4Bad);
}

TEST_F(CtDefragTest, Ipv6FragmentHeaderDatagramsReassemble) {
    auto f = ipv6_fragments(kClient6, kServer6, udp_datagram(), {56});
    Parsed first;
    ASSERT_TRUE(parse(f[0], &first));
    EXPECT_EQ(first.key.ip_proto, kUdp);
    EXPECT_EQ(first.key.l4_dst, 53);
    EXPECT_EQ(add(f[1]), CtFragAdd::kHeld);
    EXPECT_EQ(add(f[0]), CtFragAdd::kComplete);
    auto out = emit();
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].frames.size(), 2u);
    EXPECT_EQ(out[0].l4_length, udp_datagram().size());
    EXPECT_EQ(out[0].verdict, kCsumL4Good);
    // Another identification is another datagram.
    auto g = ipv6_fragments(kClient6, kServer6, udp_datagram(), {56}, 99);
    EXPECT_EQ(add(g[1]), CtFragAdd::kHeld);
    EXPECT_EQ(table_->datagrams(), 1u);
}

TEST_F(CtDefragTest, AnIpv6AtomicFragmentIsAWholePacket) {
    auto f = ipv6_fragments(kClient6, kServer6, udp_datagram(), {});
    Parsed p;
    ASSERT_TRUE(parse(f[0], &p));
    EXPECT_FALSE(p.layout.fragment);
    EXPECT_EQ(p.key.l4_dst, 53);
}

/// The reassembled UDP message of IPv4 fragments (in offset order) and its addresses.
Bytes reassembled_l4(const std::vector<Bytes>& frags) {
    Bytes l4;
    for (const Bytes& f : frags) l4.insert(l4.end(), f.begin() + 14 + 20, f.end());
    return l4;
}

/// Tracks a datagram's fragments as the ct stage emits them: the first with the datagram's
/// length and checks, the others through the packet state. @return each fragment's ct_state
std::vector<uint8_t> track_datagram(ConntrackShard& shard, std::vector<Bytes>& frags,
                                    const CtParams& p, uint64_t now_ms) {
    CtPacketState st{};
    st.datagram = 1;
    Parsed f0;
    EXPECT_TRUE(parse(frags[0], &f0));
    uint64_t sum = 0;
    uint32_t l4_len = 0;
    for (size_t i = 0; i < frags.size(); ++i) {
        Parsed pi;
        EXPECT_TRUE(parse(frags[i], &pi));
        CtFragment fr;
        EXPECT_FALSE(ct_frag_parse(frags[i].data(), static_cast<uint32_t>(frags[i].size()),
                                   pi.layout, pi.key, &fr));
        const uint32_t from = i == 0 ? fr.l4_at : fr.payload_at;
        sum = csum_detail::add_bytes(frags[i].data() + from, fr.payload_at + fr.length - from, sum);
        l4_len += fr.length;
    }
    st.l4_length = l4_len;
    st.datagram_rx = ct_datagram_l4_verdict(frags[0].data(), f0.layout, f0.key, l4_len, sum);
    std::vector<uint8_t> states;
    for (size_t i = 0; i < frags.size(); ++i) {
        Parsed pi;
        EXPECT_TRUE(parse(frags[i], &pi));
        if (i == 0) {
            CtKeyed keyed{};
            keyed.l4_length = l4_len;
            EXPECT_TRUE(ct_packet_tuple(frags[i].data(), static_cast<uint32_t>(frags[i].size()),
                                        pi.layout, pi.key, p.zone, &keyed.tuple,
                                        &keyed.icmp_error));
            EXPECT_EQ(shard.process(frags[i].data(), static_cast<uint32_t>(frags[i].size()),
                                    pi.layout, &pi.key, p, now_ms, &keyed, &st, st.datagram_rx),
                      CtVerdict::kContinue);
        } else {
            EXPECT_NE(st.index, kCtNone);
            EXPECT_EQ(shard.process(frags[i].data(), static_cast<uint32_t>(frags[i].size()),
                                    pi.layout, &pi.key, p, now_ms, nullptr, &st),
                      CtVerdict::kContinue);
        }
        states.push_back(pi.key.ct_state);
    }
    return states;
}

class CtDefragTrackTest : public CtShardTest {};

TEST_F(CtDefragTrackTest, AFragmentedUdpDatagramIsTrackedWholeAndItsReplyEstablishes) {
    auto out = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    auto states = track_datagram(*shard_, out, commit(), 0);
    EXPECT_EQ(st(states[0]), "+trk+new");
    EXPECT_EQ(st(states[1]), "+trk+new");
    auto back = ipv4_fragments(kServer4, kClient4, udp(53, 5353, pattern(100)), {48});
    states = track_datagram(*shard_, back, track(), 1);
    EXPECT_EQ(st(states[0]), "+trk+est+rpl");
    EXPECT_EQ(st(states[1]), "+trk+est+rpl");
}

TEST_F(CtDefragTrackTest, AWrongChecksumOverTheDatagramIsInvalid) {
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {48});
    f[1][f[1].size() - 1] ^= 0x40;
    CtPacketState st0{};
    Parsed p0;
    ASSERT_TRUE(parse(f[0], &p0));
    CtKeyed keyed{};
    keyed.l4_length = static_cast<uint32_t>(udp_datagram().size());
    ASSERT_TRUE(ct_packet_tuple(f[0].data(), static_cast<uint32_t>(f[0].size()), p0.layout, p0.key,
                                0, &keyed.tuple, &keyed.icmp_error));
    shard_->process(f[0].data(), static_cast<uint32_t>(f[0].size()), p0.layout, &p0.key, commit(),
                    0, &keyed, &st0, kCsumL4Bad);
    EXPECT_EQ(st(p0.key.ct_state), "+trk+inv");
    EXPECT_EQ(st0.index, kCtNone);
    EXPECT_EQ(shard_->counters().created, 0u);
}

TEST_F(CtDefragTrackTest, NatRewritesEveryFragmentAndKeepsTheDatagramChecksumRight) {
    const NatSpec snat = nat_spec(NatSpec::kSrc, kPublic4, kPublic4, 20000, 20000);
    auto f = ipv4_fragments(kClient4, kServer4, udp_datagram(), {32, 64});
    auto states = track_datagram(*shard_, f, commit_nat(&snat), 0);
    for (const Bytes& g : f) {
        EXPECT_EQ(Addr({g[26], g[27], g[28], g[29]}), kPublic4);
        EXPECT_EQ(get16(g, 14 + 10), ipv4_header_checksum(g.data() + 14));
    }
    EXPECT_EQ(get16(f[0], 34), 20000);  // the source port, in the first fragment only
    const Bytes l4 = reassembled_l4(f);
    EXPECT_EQ(get16(l4, 6),
              l4_checksum(4, kUdp, kPublic4.data(), kServer4.data(), l4.data(), l4.size()));
    // The reply, fragmented, to the public address: translated back on every fragment.
    auto r = ipv4_fragments(kServer4, kPublic4, udp(53, 20000, pattern(100)), {48});
    states = track_datagram(*shard_, r, nat(), 1);
    EXPECT_EQ(st(states[1]), "+trk+est+rpl");
    for (const Bytes& g : r) EXPECT_EQ(Addr({g[30], g[31], g[32], g[33]}), kClient4);
    EXPECT_EQ(get16(r[0], 36), 5353);
    const Bytes rl4 = reassembled_l4(r);
    EXPECT_EQ(get16(rl4, 6),
              l4_checksum(4, kUdp, kServer4.data(), kClient4.data(), rl4.data(), rl4.size()));
}

TEST_F(CtDefragTrackTest, AFragmentedTcpSegmentCountsItsWholeLength) {
    TcpFlow c;
    for (const Bytes& f : {c.syn(), c.syn_ack(), c.ack()}) {
        Bytes g = f;
        Parsed p;
        ASSERT_TRUE(parse(g, &p));
        shard_->process(g.data(), static_cast<uint32_t>(g.size()), p.layout, &p.key, commit(), 0);
    }
    // 200 bytes of data in three fragments; the server acknowledges all of them.
    const Bytes seg = tcp(c.cport, c.sport, c.c_isn + 1, c.s_isn + 1, kPsh | kAck, pattern(200));
    auto f = ipv4_fragments(c.client, c.server, seg, {80, 160}, 77, kTcp);
    auto states = track_datagram(*shard_, f, track(), 1);
    EXPECT_EQ(st(states[0]), "+trk+est");
    EXPECT_EQ(st(states[2]), "+trk+est");
    Bytes ack = c.from_server(kAck, c.s_isn + 1, c.c_isn + 1 + 200);
    Parsed p;
    ASSERT_TRUE(parse(ack, &p));
    shard_->process(ack.data(), static_cast<uint32_t>(ack.size()), p.layout, &p.key, track(), 2);
    EXPECT_EQ(st(p.key.ct_state), "+trk+est+rpl");  // within what was sent: not +inv
}

TEST_F(CtDefragTrackTest, APacketTooBigQuotingAFirstFragmentIsRelated) {
    auto f = ipv6_fragments(kClient6, kServer6, udp_datagram(), {56});
    auto states = track_datagram(*shard_, f, commit(), 0);
    EXPECT_EQ(st(states[0]), "+trk+new");
    const Bytes quoted(f[0].begin() + 14, f[0].end());  // IPv6 + fragment header + UDP...
    Bytes ptb = icmp_error(6, 2, 0, kRouter6, kClient6, quoted, quoted.size());
    Parsed p;
    ASSERT_TRUE(parse(ptb, &p));
    EXPECT_FALSE(p.layout.fragment);
    shard_->process(ptb.data(), static_cast<uint32_t>(ptb.size()), p.layout, &p.key, track(), 1);
    EXPECT_EQ(st(p.key.ct_state), "+trk+rel+rpl");
}

}  // namespace
}  // namespace ferry
