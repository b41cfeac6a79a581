// Payload inspection (Hyperscan stream mode) micro-benchmarks: scan throughput of one worker on
// web traffic, at 10, 1,000 and 10,000 patterns.
//
// Traffic (built once, fixed seed): 1,000 TCP/IPv4 connections, each a keep-alive HTTP/1.1
// conversation of 1 to 4 exchanges. Requests (to server, direction 0) are GETs and POSTs with
// browser headers, cookies and query strings, POST bodies JSON or form data; responses (to
// client, direction 1) are HTML pages, JSON documents, binary bodies (images, gzip: random
// bytes) and bodyless 304/302s. Messages are cut into segments of at most 1448 payload bytes
// (1514-byte frames: the TCP header carries a timestamp option) with consecutive sequence
// numbers. A few requests carry something the patterns look for (an X-Debug-Token header in
// 1 in 100, sqlmap's User-Agent, a SQL injection in a form body, an /admin/*.php?id= URL) and
// 1 in 1,000 responses an /etc/passwd line, so the match path runs now and then.
// Patterns (fixed seed, action alert): 24 known IDS signatures (literals, and regexes with
// classes and repeats such as /admin/[a-z_]+\.php\?id=[0-9]+, union\s+select, \x90{16}), then
// generated ones: URL paths, User-Agent and header literals, random words, binary byte strings
// and regexes, about a third caseless, most for both directions. The set of N patterns is the
// first N; it is compiled once per N, untimed.
//
//   BM_DpiInspect/N       DpiWorker::inspect, the worker's dpi stage, on one segment per
//                         iteration: connections in round robin, each connection's segments in
//                         order (its requests and responses interleaved as on the wire). The
//                         connections were set up, untimed, through a ConntrackShard (SYN with
//                         commit, SYN-ACK, ACK) and the CtPacketState of each direction kept;
//                         the ct lookup itself is not timed (see bench_conntrack), nor is the
//                         re-parse dpi_action does before inspect (see bench_parse). The TCP
//                         sequence number of each frame is rewritten before it is inspected so
//                         that the conversation continues in sequence across laps (the worker
//                         scans in-sequence bytes only); the depth limit is effectively off, so
//                         every byte is scanned. Alerts are drained every 32 packets, as the
//                         worker does after a burst.
//   BM_HsScanStreamRaw/N  the same segments in the same order given straight to hs_scan_stream,
//                         one Hyperscan stream per connection and direction, with the same
//                         databases and a callback that counts: no ferry code, so the difference
//                         is the engine's overhead.
//
// Counters: Gbit_per_s = payload bits scanned per second (bytes_per_second is the same in
// bytes), ns_per_packet, bytes_per_packet (mean payload of a segment), matches (of the run),
// stream_bytes (stream state of one connection: both directions' databases), compile_ms (both
// directions' databases, untimed). The frame pool (~40 MB of 1514-byte and smaller frames) is
// larger than L2, as packets that arrive from the NIC are. Round robin gives every connection
// the same packet rate, so short conversations weigh more than in the pool: bytes_per_packet
// is ~1220 against the pool's mean of ~1310.
//
//   FERRY_BUILD=build scripts/build benchmarks/bench_dpi
//   taskset -c 1 build/benchmarks/bench_dpi --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true      (one line)
//   (add --benchmark_filter=BM_DpiInspect --benchmark_min_time=0.2 for a quick run)
#include <benchmark/benchmark.h>
#include <hs/hs.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "benchmarks/bench_frames.h"
#include "dataplane/conntrack/ct_shard.h"
#include "dataplane/conntrack/ct_tuple.h"
#include "dataplane/conntrack/ct_zone.h"
#include "dataplane/dpi/dpi_database.h"
#include "dataplane/dpi/dpi_engine.h"
#include "dataplane/dpi/dpi_pattern.h"
#include "dataplane/dpi/dpi_version.h"
#include "dataplane/l4_payload.h"
#include "dataplane/packet_parse.h"

namespace {

using ferry::CtTuple;
using ferry::DpiDirection;
using ferry::DpiPattern;

constexpr uint32_t kConns = 1000;
constexpr uint32_t kMss = 1448;           // payload bytes per segment at most
constexpr uint32_t kHeaderLen = 66;       // Ethernet 14 + IPv4 20 + TCP 20 + timestamp option 12
constexpr uint32_t kDrainEvery = 32;      // packets between alert drains (a worker's burst)
constexpr uint32_t kDepth = 0xffffffffu;  // bytes inspected per direction: no limit in practice
constexpr uint64_t kNowMs = 1000;
constexpr uint8_t kTcpSyn = 0x02;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpAck = 0x10;

// ---- Deterministic random choices -------------------------------------------------------------

struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    uint64_t next() { return g(); }
    /// Uniform in [0, n).
    uint32_t below(uint32_t n) { return static_cast<uint32_t>(g() % n); }
    /// Uniform in [lo, hi].
    uint32_t range(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }
    /// True once in n.
    bool one_in(uint32_t n) { return below(n) == 0; }
    /// A size in [lo, hi] skewed towards lo (most bodies are small, a few large).
    uint32_t skewed(uint32_t lo, uint32_t hi) {
        const double u = static_cast<double>(g() >> 11) / static_cast<double>(1ull << 53);
        return lo + static_cast<uint32_t>(u * u * (hi - lo));
    }
    template <size_t N>
    const char* pick(const char* const (&list)[N]) {
        return list[below(N)];
    }
};

const char* const kWords[] = {
    "the",     "of",       "and",      "to",      "in",       "is",       "for",      "on",
    "with",    "as",       "by",       "this",    "that",     "from",     "are",      "be",
    "at",      "or",       "your",     "our",     "new",      "more",     "all",      "can",
    "about",   "product",  "service",  "price",   "order",    "shipping", "free",     "account",
    "search",  "home",     "contact",  "privacy", "policy",   "terms",    "news",     "blog",
    "support", "help",     "customer", "review",  "rating",   "delivery", "return",   "item",
    "cart",    "checkout", "sale",     "offer",   "best",     "quality",  "design",   "color",
    "size",    "model",    "brand",    "store",   "online",   "today",    "week",     "month",
    "year",    "team",     "company",  "market",  "report",   "update",   "release",  "version",
    "feature", "system",   "data",     "user",    "page",     "content",  "network",  "security",
    "cloud",   "server",   "mobile",   "app",     "software", "device",   "video",    "music",
    "photo",   "travel",   "hotel",    "flight",  "city",     "weather",  "sport",    "game",
    "player",  "season",   "health",   "food",    "recipe",   "kitchen",  "garden",   "house",
    "family",  "school",   "student",  "course",  "learn",    "guide",    "article",  "story",
    "event",   "ticket",   "member",   "login",   "register", "profile",  "settings", "message",
    "share",   "follow",   "comment",  "view",    "read",     "write",    "open",     "close",
    "first",   "last",     "next",     "great",   "small",    "large",    "fast",     "simple",
    "easy",    "secure",   "local",    "global",  "we",       "you",      "will",     "have",
    "not",     "it",       "an",       "was",     "which",    "their",    "when",     "also",
};

const char* const kDirs[] = {
    "api",      "v1",        "v2",       "static",      "assets",   "js",      "css",
    "img",      "images",    "media",    "uploads",     "products", "catalog", "category",
    "search",   "account",   "user",     "users",       "orders",   "cart",    "checkout",
    "blog",     "news",      "docs",     "help",        "admin",    "cgi-bin", "wp-content",
    "plugins",  "themes",    "includes", "wp-includes", "lib",      "vendor",  "modules",
    "portal",   "dashboard", "reports",  "export",      "download", "files",   "config",
    "backup",   "login",     "auth",     "oauth",       "session",  "graphql", "rest",
    "services", "mobile",    "feeds",    "rss",         "shop",     "store",   "content",
};

const char* const kExts[] = {".php", ".cgi",  ".asp",  ".aspx", ".jsp",    ".js",
                             ".css", ".html", ".json", ".do",   ".action", ".pl"};

const char* const kHosts[] = {"www.example.com",    "shop.example.com", "api.example.com",
                              "cdn.example.net",    "news.example.org", "mail.example.com",
                              "static.example.net", "portal.example.io"};

const char* const kAgents[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "okhttp/4.12.0",
};

/// n random lower-case letters.
std::string letters(Rng& r, uint32_t n) {
    std::string s(n, 'a');
    for (char& c : s) c = static_cast<char>('a' + r.below(26));
    return s;
}

/// n random lower-case hex digits.
std::string hex(Rng& r, uint32_t n) {
    static const char kHex[] = "0123456789abcdef";
    std::string s(n, '0');
    for (char& c : s) c = kHex[r.below(16)];
    return s;
}

std::string digits(Rng& r, uint32_t n) {
    std::string s(n, '0');
    for (char& c : s) c = static_cast<char>('0' + r.below(10));
    return s;
}

// ---- Web traffic ------------------------------------------------------------------------------

/// A sentence of English-looking words.
std::string sentence(Rng& r) {
    std::string s;
    const uint32_t n = r.range(6, 18);
    for (uint32_t i = 0; i < n; ++i) {
        if (i != 0) s += ' ';
        std::string w = r.pick(kWords);
        if (i == 0) w[0] = static_cast<char>(w[0] - 'a' + 'A');
        s += w;
        if (i + 1 < n && r.one_in(12)) s += ',';
    }
    return s + '.';
}

/// A site path such as /products/garden-house-1234 or /static/js/app.3f9a1c.js.
std::string site_path(Rng& r) {
    std::string p;
    switch (r.below(5)) {
        case 0:
            p = std::string("/static/") + (r.one_in(2) ? "js/" : "css/") + r.pick(kWords) + "." +
                hex(r, 8) + (r.one_in(2) ? ".js" : ".css");
            break;
        case 1:
            p = std::string("/api/v2/") + r.pick(kDirs) + "/" + digits(r, r.range(3, 7));
            if (r.one_in(2)) p += std::string("/") + r.pick(kWords);
            break;
        case 2:
            p = std::string("/") + r.pick(kDirs) + "/" + r.pick(kWords) + "-" + r.pick(kWords) +
                "-" + digits(r, r.range(2, 5));
            break;
        case 3:
            p = std::string("/") + r.pick(kDirs) + "/" + r.pick(kWords) + r.pick(kExts);
            break;
        default:
            p = std::string("/images/") + r.pick(kWords) + "_" + digits(r, 4) +
                (r.one_in(2) ? ".jpg" : ".webp");
            break;
    }
    return p;
}

std::string query_string(Rng& r) {
    std::string q;
    const uint32_t n = r.range(1, 5);
    for (uint32_t i = 0; i < n; ++i) {
        q += i == 0 ? '?' : '&';
        switch (r.below(4)) {
            case 0:
                q += std::string("q=") + r.pick(kWords) + "+" + r.pick(kWords);
                break;
            case 1:
                q += std::string("page=") + std::to_string(r.range(1, 40));
                break;
            case 2:
                q += std::string("utm_source=") + r.pick(kWords) + "&utm_medium=email";
                break;
            default:
                q += std::string(r.pick(kWords)) + "=" + hex(r, r.range(4, 16));
                break;
        }
    }
    return q;
}

struct RequestFlags {
    bool debug_token = false;  // X-Debug-Token header
    bool sqlmap = false;       // sqlmap's User-Agent
    bool injection = false;    // union select in a form body
    bool admin_url = false;    // /admin/<x>.php?id=<n>
};

std::string json_record(Rng& r) {
    std::string s = "{\"id\":" + digits(r, 6) + ",\"name\":\"" + r.pick(kWords) + " " +
                    r.pick(kWords) + "\",\"email\":\"" + letters(r, r.range(4, 9)) +
                    "@example.com\",\"created_at\":\"2023-" + std::to_string(r.range(10, 12)) +
                    "-" + std::to_string(r.range(10, 28)) + "T0" + std::to_string(r.below(10)) +
                    ":" + std::to_string(r.range(10, 59)) +
                    ":00Z\",\"price\":" + std::to_string(r.range(1, 999)) + "." + digits(r, 2) +
                    ",\"tags\":[\"" + r.pick(kWords) + "\",\"" + r.pick(kWords) +
                    "\"],\"active\":" + (r.one_in(3) ? "false" : "true");
    if (r.one_in(2)) s += ",\"description\":\"" + sentence(r) + "\"";
    return s + "}";
}

std::string http_request(Rng& r, const std::string& host, RequestFlags* f) {
    *f = RequestFlags{};
    f->debug_token = r.one_in(100);
    f->sqlmap = r.one_in(200);
    f->admin_url = r.one_in(500);
    const bool post = r.one_in(4);
    std::string body;
    std::string type;
    if (post) {
        if (r.one_in(2)) {
            type = "application/json";
            body = "{\"items\":[";
            const uint32_t n = r.range(1, 8);
            for (uint32_t i = 0; i < n; ++i) {
                if (i != 0) body += ',';
                body += json_record(r);
            }
            body += "],\"csrf\":\"" + hex(r, 32) + "\"}";
        } else {
            type = "application/x-www-form-urlencoded";
            body = std::string("username=") + letters(r, r.range(5, 10)) + "&comment=";
            const uint32_t n = r.range(1, 4);
            for (uint32_t i = 0; i < n; ++i) {
                std::string s = sentence(r);
                for (char& c : s)
                    if (c == ' ') c = '+';
                body += s;
            }
            f->injection = r.one_in(50);
            if (f->injection) body += "&q=1'+union select username,password from users--";
            body += "&token=" + hex(r, 40);
        }
    }
    std::string path = f->admin_url ? std::string("/admin/user_edit.php?id=") + digits(r, 3)
                                    : site_path(r) + (r.one_in(2) ? query_string(r) : "");
    std::string m = std::string(post ? "POST " : "GET ") + path + " HTTP/1.1\r\nHost: " + host +
                    "\r\nUser-Agent: " +
                    (f->sqlmap ? "sqlmap/1.7.2#stable (https://sqlmap.org)" : r.pick(kAgents)) +
                    "\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                    "image/webp,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n"
                    "Accept-Encoding: gzip, deflate, br\r\nReferer: https://" +
                    host + site_path(r) + "\r\nCookie: session=" + hex(r, 32) + "; _ga=GA1.2." +
                    digits(r, 10) + "." + digits(r, 10) +
                    "; theme=" + (r.one_in(2) ? "dark" : "light") + "; cart=" + hex(r, 16) + "\r\n";
    if (post)
        m += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\nOrigin: https://" + host + "\r\n";
    if (f->debug_token) m += "X-Debug-Token: " + hex(r, 24) + "\r\n";
    m += "Connection: keep-alive\r\n\r\n";
    return m + body;
}

std::string html_body(Rng& r, uint32_t target, bool passwd_leak) {
    std::string h =
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
        sentence(r) +
        "</title>\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"stylesheet\" href=\"/static/css/main." +
        hex(r, 8) + ".css\">\n<script src=\"/static/js/app." + hex(r, 8) +
        ".js\" defer></script>\n<script>window.dataLayer = window.dataLayer || []; "
        "function gtag(){dataLayer.push(arguments);} gtag('js', new Date());</script>\n"
        "</head>\n<body class=\"page-" +
        std::string(r.pick(kWords)) + "\">\n<div id=\"main\" class=\"container\">\n";
    if (passwd_leak) h += "<pre>root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin</pre>\n";
    while (h.size() < target) {
        switch (r.below(5)) {
            case 0:
                h += "<h2>" + sentence(r) + "</h2>\n";
                break;
            case 1:
                h += "<p>" + sentence(r) + " " + sentence(r) + " " + sentence(r) + "</p>\n";
                break;
            case 2:
                h += "<ul class=\"nav\">";
                for (uint32_t i = 0, n = r.range(3, 8); i < n; ++i)
                    h += "<li><a href=\"" + site_path(r) + "\">" + r.pick(kWords) + " " +
                         r.pick(kWords) + "</a></li>";
                h += "</ul>\n";
                break;
            case 3:
                h += "<div class=\"card " + std::string(r.pick(kWords)) + "\"><img src=\"" +
                     site_path(r) + "\" alt=\"" + r.pick(kWords) +
                     "\" loading=\"lazy\"><span class=\"price\">$" +
                     std::to_string(r.range(1, 500)) + ".99</span></div>\n";
                break;
            default:
                h += "<p>" + sentence(r) + " <a href=\"https://" + r.pick(kHosts) + site_path(r) +
                     "\">" + r.pick(kWords) + "</a> " + sentence(r) + "</p>\n";
                break;
        }
    }
    return h + "</div>\n<footer>&copy; 2023 Example Inc.</footer>\n</body>\n</html>\n";
}

std::string json_body(Rng& r, uint32_t target) {
    std::string j = "{\"status\":\"ok\",\"data\":[";
    bool first = true;
    while (j.size() < target) {
        if (!first) j += ',';
        j += json_record(r);
        first = false;
    }
    return j + "],\"page\":" + std::to_string(r.range(1, 20)) + ",\"total\":" + digits(r, 4) + "}";
}

std::string http_response(Rng& r, bool passwd_leak) {
    const uint32_t kind = passwd_leak ? 0 : r.below(20);
    std::string status = "200 OK";
    std::string type;
    std::string body;
    std::string extra;
    if (kind < 9) {  // 45%: a page
        type = "text/html; charset=utf-8";
        body = html_body(r, r.skewed(2000, 60000), passwd_leak);
    } else if (kind < 15) {  // 30%: an API answer
        type = "application/json";
        body = json_body(r, r.skewed(300, 16000));
    } else if (kind < 18) {  // 15%: compressed or binary content
        const bool image = r.one_in(2);
        type = image ? "image/jpeg" : "application/javascript";
        if (!image) extra = "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n";
        body.resize(r.skewed(2000, 48000));
        for (char& c : body) c = static_cast<char>(r.next());
    } else if (kind == 18) {
        status = "304 Not Modified";
        extra = "ETag: \"" + hex(r, 16) + "\"\r\n";
    } else {
        status = "302 Found";
        extra = std::string("Location: https://") + r.pick(kHosts) + site_path(r) + "\r\n";
    }
    std::string m = "HTTP/1.1 " + status +
                    "\r\nDate: Tue, 14 Nov 2023 08:" + std::to_string(r.range(10, 59)) + ":" +
                    std::to_string(r.range(10, 59)) + " GMT\r\nServer: nginx/1.24.0\r\n";
    if (!type.empty()) m += "Content-Type: " + type + "\r\n";
    m += "Content-Length: " + std::to_string(body.size()) + "\r\n" + extra +
         "Connection: keep-alive\r\nCache-Control: private, max-age=0\r\nSet-Cookie: session=" +
         hex(r, 32) + "; Path=/; HttpOnly; Secure; SameSite=Lax\r\nX-Request-Id: " + hex(r, 8) +
         "-" + hex(r, 4) + "-" + hex(r, 4) + "-" + hex(r, 12) +
         "\r\nStrict-Transport-Security: max-age=31536000\r\n\r\n";
    return m + body;
}

// ---- Frames -----------------------------------------------------------------------------------

/// Writes a TCP/IPv4 frame of t's direction with the payload (kHeaderLen + plen bytes) at out.
/// The TCP header has a timestamp option. The IPv4 checksum is right, the TCP one 0 (neither ct
/// nor dpi verifies it). Context: setup.
void write_frame(uint8_t* out, const CtTuple& t, uint32_t seq, uint32_t ack, uint8_t flags,
                 const char* payload, uint32_t plen) {
    uint8_t* tcp = ferry::bench::write_tcp_headers(out, t, seq, ack, flags, 8, plen, true);
    const uint8_t ts[12] = {1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78};  // NOP NOP TS
    std::memcpy(tcp + 20, ts, sizeof(ts));
    if (plen != 0) std::memcpy(out + kHeaderLen, payload, plen);
}

/// One data segment of the pool.
struct Segment {
    uint32_t frame_off;  // in Traffic::frames
    uint16_t frame_len;
    uint16_t payload_len;
    uint8_t dir;  // 0: client to server
};

/// Per connection and direction (index 2 * connection + dir).
struct Half {
    ferry::FlowKey key;
    ferry::PacketLayout layout;
};

struct Traffic {
    CtTuple tuples[kConns];  // original direction
    uint32_t isn[2 * kConns];
    std::vector<uint8_t> frames;
    std::vector<Segment> segs;        // connection by connection, in conversation order
    std::vector<uint32_t> first_seg;  // kConns + 1
    std::vector<Half> halves;         // 2 * kConns
    uint64_t payload_bytes = 0;
    uint32_t requests = 0;
    uint32_t marked_requests = 0;  // with something a pattern looks for
    const char* error = nullptr;
};

Traffic& traffic() {
    static std::unique_ptr<Traffic> built;
    if (built) return *built;
    auto tr = std::make_unique<Traffic>();
    Traffic& t = *tr;
    Rng r(20231114);
    t.halves.resize(2 * kConns);
    t.first_seg.resize(kConns + 1);
    for (uint32_t c = 0; c < kConns; ++c) {
        CtTuple& tu = t.tuples[c];
        tu = CtTuple{};
        const uint32_t client = 0x0a000000u | (c + 1);
        const uint8_t src[4] = {10, static_cast<uint8_t>(client >> 16),
                                static_cast<uint8_t>(client >> 8), static_cast<uint8_t>(client)};
        const uint8_t dst[4] = {198, 51, 100, static_cast<uint8_t>(1 + r.below(254))};
        std::memcpy(tu.src, src, 4);
        std::memcpy(tu.dst, dst, 4);
        tu.sport = static_cast<uint16_t>(32768 + r.below(28000));
        const uint16_t ports[] = {80, 80, 8080, 443};
        tu.dport = ports[r.below(4)];
        tu.proto = 6;
        tu.ip_version = 4;
        t.isn[2 * c] = static_cast<uint32_t>(r.next());
        t.isn[2 * c + 1] = static_cast<uint32_t>(r.next());
    }
    // The messages, cut into frames.
    for (uint32_t c = 0; c < kConns; ++c) {
        t.first_seg[c] = static_cast<uint32_t>(t.segs.size());
        const CtTuple tuples[2] = {t.tuples[c], ferry::ct_tuple_reverse(t.tuples[c])};
        uint32_t seq[2] = {t.isn[2 * c] + 1, t.isn[2 * c + 1] + 1};
        const std::string host = r.pick(kHosts);
        const uint32_t exchanges = r.range(1, 4);
        bool have_half[2] = {false, false};
        for (uint32_t e = 0; e < exchanges; ++e) {
            RequestFlags f;
            const std::string req = http_request(r, host, &f);
            ++t.requests;
            t.marked_requests += f.debug_token || f.sqlmap || f.injection || f.admin_url;
            const std::string resp = http_response(r, r.one_in(1000));
            const std::string* msgs[2] = {&req, &resp};
            for (uint8_t dir = 0; dir < 2; ++dir) {
                const std::string& m = *msgs[dir];
                for (size_t at = 0; at < m.size(); at += kMss) {
                    const auto plen = static_cast<uint32_t>(std::min<size_t>(kMss, m.size() - at));
                    const bool last = at + plen == m.size();
                    Segment s{};
                    s.frame_off = static_cast<uint32_t>(t.frames.size());
                    s.frame_len = static_cast<uint16_t>(kHeaderLen + plen);
                    s.payload_len = static_cast<uint16_t>(plen);
                    s.dir = dir;
                    // Frames start on a cache line, as in an mbuf.
                    t.frames.resize(t.frames.size() + (s.frame_len + 63u) / 64u * 64u);
                    uint8_t* fr = t.frames.data() + s.frame_off;
                    write_frame(fr, tuples[dir], seq[dir], seq[1 - dir],
                                last ? kTcpPsh | kTcpAck : kTcpAck, m.data() + at, plen);
                    seq[dir] += plen;
                    t.payload_bytes += plen;
                    t.segs.push_back(s);
                    ferry::FlowKey key;
                    ferry::PacketLayout layout;
                    uint32_t off = 0, len = 0;
                    if (ferry::parse_frame(fr, s.frame_len, 0, &key, &layout) ||
                        !ferry::l4_payload(fr, s.frame_len, layout, key, &off, &len) ||
                        off != kHeaderLen || len != plen) {
                        t.error = "data frame does not parse";
                        built = std::move(tr);
                        return *built;
                    }
                    if (!have_half[dir]) {
                        t.halves[2 * c + dir] = Half{key, layout};
                        have_half[dir] = true;
                    }
                }
            }
        }
    }
    t.first_seg[kConns] = static_cast<uint32_t>(t.segs.size());
    std::fprintf(stderr,
                 "bench_dpi traffic: %u connections, %u requests (%u with a signature), %zu "
                 "segments, %.1f MB payload, %.1f MB frames, %.0f payload bytes per segment\n",
                 kConns, t.requests, t.marked_requests, t.segs.size(),
                 static_cast<double>(t.payload_bytes) / 1e6,
                 static_cast<double>(t.frames.size()) / 1e6,
                 static_cast<double>(t.payload_bytes) / static_cast<double>(t.segs.size()));
    built = std::move(tr);
    return *built;
}

// ---- Patterns ---------------------------------------------------------------------------------

/// s with Hyperscan's (PCRE's) metacharacters escaped: a literal pattern.
std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (std::strchr("\\^$.|?*+()[]{}", c) != nullptr) out += '\\';
        out += c;
    }
    return out;
}

/// The first n patterns of the benchmark's signature set (ids 1..n). Context: setup.
std::vector<DpiPattern> make_patterns(uint32_t n) {
    constexpr uint8_t kCaseless = ferry::kDpiCaseless;
    struct Known {
        const char* regex;
        uint8_t flags;
        DpiDirection dir;
    };
    // Known signatures; those marked * occur in the traffic now and then (see http_request and
    // http_response).
    static const Known kKnown[] = {
        {"sqlmap", kCaseless, DpiDirection::kToServer},  // *
        {"/etc/passwd", 0, DpiDirection::kBoth},
        {"X-Debug-Token:", kCaseless, DpiDirection::kToServer},   // * 1 in 100
        {"union\\s+select", kCaseless, DpiDirection::kToServer},  // *
        {"cmd\\.exe", kCaseless, DpiDirection::kBoth},
        {"/admin/[a-z_]+\\.php\\?id=[0-9]+", 0, DpiDirection::kToServer},  // *
        {"\\x90{16}", 0, DpiDirection::kBoth},
        {"root:x:0:0:", 0, DpiDirection::kToClient},  // *
        {"<script>alert\\(", kCaseless, DpiDirection::kBoth},
        {"\\(\\) \\{ :; \\};", 0, DpiDirection::kToServer},             // shellshock
        {"\\$\\{jndi:(ldap|rmi|dns)", kCaseless, DpiDirection::kBoth},  // log4shell
        {"\\.\\./\\.\\./\\.\\./", 0, DpiDirection::kToServer},
        {"eval\\(base64_decode\\(", kCaseless, DpiDirection::kBoth},
        {"/bin/sh -c", 0, DpiDirection::kBoth},
        {"powershell(\\.exe)? -e(nc)? ", kCaseless, DpiDirection::kBoth},
        {"wget https?://", 0, DpiDirection::kToServer},
        {"User-Agent: [^\\r\\n]*(nikto|masscan|zgrab)", kCaseless, DpiDirection::kToServer},
        {"/wp-admin/admin-ajax\\.php\\?action=revslider", 0, DpiDirection::kToServer},
        {"<\\?php\\s+(system|passthru|shell_exec)\\(", kCaseless, DpiDirection::kBoth},
        {"MZ\\x90\\x00\\x03\\x00\\x00\\x00", 0, DpiDirection::kToClient},  // PE header
        {"xp_cmdshell", kCaseless, DpiDirection::kToServer},
        {"\\x7fELF[\\x01\\x02]", 0, DpiDirection::kToClient},
        {"javascript:[^\"']{0,40}document\\.cookie", kCaseless, DpiDirection::kBoth},
        {"/\\.git/(config|HEAD)", 0, DpiDirection::kToServer},
    };
    std::vector<DpiPattern> out;
    std::set<std::string> seen;
    auto add = [&](std::string regex, uint8_t flags, DpiDirection dir) {
        if (!seen.insert(regex).second) return;
        DpiPattern p;
        p.id = static_cast<uint32_t>(out.size() + 1);
        p.regex = std::move(regex);
        p.flags = flags;
        p.direction = dir;
        p.action = ferry::DpiVerdictKind::kAlert;
        out.push_back(std::move(p));
    };
    for (const Known& k : kKnown) {
        if (out.size() == n) return out;
        add(k.regex, k.flags, k.dir);
    }
    Rng r(1337);
    while (out.size() < n) {
        const uint32_t d = r.below(10);
        const DpiDirection dir = d < 7   ? DpiDirection::kBoth
                                 : d < 9 ? DpiDirection::kToServer
                                         : DpiDirection::kToClient;
        const uint8_t caseless = r.below(3) == 0 ? kCaseless : 0;
        const uint32_t kind = r.below(100);
        if (kind < 40) {  // a URL path of a vulnerable script
            const char* const seps[] = {"/", "_", "-", ""};
            add(escape(std::string("/") + r.pick(kDirs) + "/" + r.pick(kWords) + r.pick(seps) +
                       letters(r, r.range(3, 8)) + r.pick(kExts)),
                caseless, dir);
        } else if (kind < 60) {  // a word: tool name, malware family, keyword
            add(letters(r, r.range(6, 14)), caseless, dir);
        } else if (kind < 70) {  // a header of a tool or implant
            if (r.one_in(2))
                add(escape("User-Agent: " + letters(r, r.range(4, 10)) + "/"), kCaseless,
                    DpiDirection::kToServer);
            else
                add(escape("X-" + letters(r, r.range(4, 10)) + ": "), kCaseless, dir);
        } else if (kind < 80) {  // a binary signature
            std::string s;
            for (uint32_t i = 0, len = r.range(4, 12); i < len; ++i) {
                char b[5];
                std::snprintf(b, sizeof(b), "\\x%02x", r.below(256));
                s += b;
            }
            add(s, 0, dir);
        } else if (kind < 90) {  // a parameter with an attack value
            const char* const values[] = {"=\\.\\./", "=[^&]{0,16}<script", "=[0-9]+'\\s+or\\s+",
                                          "=https?://", "=\\|"};
            add(letters(r, r.range(4, 10)) + r.pick(values), caseless, DpiDirection::kToServer);
        } else {  // a regex with classes and repeats
            const std::string w1 = letters(r, r.range(4, 9));
            const std::string w2 = letters(r, r.range(4, 9));
            switch (r.below(5)) {
                case 0:
                    add("/" + w1 + "/[a-z]+\\.php\\?" + w2 + "=[0-9]+", caseless, dir);
                    break;
                case 1:
                    add(w1 + "=[0-9a-f]{32}", 0, dir);
                    break;
                case 2:
                    add(w1 + "\\s*\\(\\s*" + w2, caseless, dir);
                    break;
                case 3:
                    add("(" + w1 + "|" + w2 + ")\\.(exe|dll|scr)", kCaseless, dir);
                    break;
                default:
                    add(w1 + "/[0-9]+\\.[0-9]+\\.[0-9]+", 0, dir);
                    break;
            }
        }
    }
    return out;
}

/// A compiled pattern set, once per size.
struct Compiled {
    std::shared_ptr<const ferry::DpiDatabase> db;
    double compile_ms = 0;
    std::string error;
};

const Compiled& compiled(uint32_t n) {
    static std::map<uint32_t, Compiled> cache;
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
    Compiled& c = cache[n];
    const std::vector<DpiPattern> patterns = make_patterns(n);
    ferry::DpiCompileError err;
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<ferry::DpiDatabase> db = ferry::DpiDatabase::compile(patterns, &err);
    const auto t1 = std::chrono::steady_clock::now();
    c.compile_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    if (!db) {
        c.error = "compile failed: " + err.message +
                  (err.has_id ? " (pattern " + std::to_string(err.id) + ")" : "");
        return c;
    }
    c.db = std::move(db);
    return c;
}

double stream_bytes(const ferry::DpiDatabase& db) {
    return static_cast<double>(db.stream_bytes(0) + db.stream_bytes(1));
}

// ---- BM_DpiInspect ----------------------------------------------------------------------------

/// Where a benchmark stands in the traffic: each connection's next segment, the connection
/// whose turn it is. Kept across the runs of one N, so streams continue in sequence.
struct Cursor {
    std::vector<uint32_t> next_seg;  // by connection: index into Traffic::segs
    uint32_t conn = 0;

    explicit Cursor(const Traffic& t) : next_seg(t.first_seg.begin(), t.first_seg.end() - 1) {}
    /// The next segment in round robin. Context: timed loop.
    const Segment& advance(const Traffic& t, uint32_t* c) {
        *c = conn;
        conn = conn + 1 == kConns ? 0 : conn + 1;
        uint32_t& i = next_seg[*c];
        const Segment& s = t.segs[i];
        i = i + 1 == t.first_seg[*c + 1] ? t.first_seg[*c] : i + 1;
        return s;
    }
};

/// A worker's ct shard and dpi state for one pattern set.
struct EngineSetup {
    std::unique_ptr<ferry::CtZoneTable> zones = std::make_unique<ferry::CtZoneTable>();
    ferry::CtTimeouts timeouts;
    std::unique_ptr<ferry::ConntrackShard> shard;
    std::unique_ptr<ferry::DpiVersion> version;
    std::unique_ptr<ferry::DpiWorker> worker;
    std::vector<ferry::CtPacketState> st;  // 2 * kConns: by connection and direction
    std::vector<uint32_t> next_seq;        // 2 * kConns
    std::unique_ptr<Cursor> cursor;
    std::string error;
};

EngineSetup& engine_setup(uint32_t n, const Traffic& t, const Compiled& c) {
    static std::map<uint32_t, EngineSetup> cache;
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
    EngineSetup& s = cache[n];
    s.shard = ferry::ConntrackShard::create(kConns, 0, 1, s.zones.get(), &s.timeouts);
    if (!s.shard) {
        s.error = "ConntrackShard::create failed";
        return s;
    }
    s.version = ferry::DpiVersion::create(c.db, 1, 1, kConns, &s.error);
    s.worker = ferry::DpiWorker::create(0, kConns, kConns, kDepth);
    if (!s.version || !s.worker) {
        if (s.error.empty()) s.error = "DpiWorker::create failed";
        return s;
    }
    s.shard->set_remove_hook(&ferry::DpiWorker::remove_hook, s.worker.get());
    s.st.resize(2 * kConns);
    s.next_seq.resize(2 * kConns);
    ferry::CtParams commit;
    commit.commit = true;
    const ferry::CtParams track;
    uint8_t frame[kHeaderLen];
    for (uint32_t i = 0; i < kConns; ++i) {
        const CtTuple tu[2] = {t.tuples[i], ferry::ct_tuple_reverse(t.tuples[i])};
        const uint32_t c_isn = t.isn[2 * i], s_isn = t.isn[2 * i + 1];
        const struct {
            uint8_t dir;
            uint32_t seq, ack;
            uint8_t flags;
            const ferry::CtParams* p;
        } steps[3] = {{0, c_isn, 0, kTcpSyn, &commit},
                      {1, s_isn, c_isn + 1, kTcpSyn | kTcpAck, &track},
                      {0, c_isn + 1, s_isn + 1, kTcpAck, &track}};
        for (const auto& step : steps) {
            write_frame(frame, tu[step.dir], step.seq, step.ack, step.flags, nullptr, 0);
            ferry::FlowKey key;
            ferry::PacketLayout layout;
            ferry::CtPacketState st;
            if (ferry::parse_frame(frame, kHeaderLen, 0, &key, &layout) ||
                // The frames carry no TCP checksum (bench_frames.h): tracked as from a port
                // whose offload verified the checksums, or ct would refuse them.
                s.shard->process(frame, kHeaderLen, layout, &key, *step.p, 1, nullptr, &st,
                                 ferry::kCsumIpGood | ferry::kCsumL4Good) !=
                    ferry::CtVerdict::kContinue ||
                st.index == ferry::kCtNone || st.dir != step.dir) {
                s.error = "handshake not tracked";
                return s;
            }
            s.st[2 * i + step.dir] = st;
        }
        s.next_seq[2 * i] = c_isn + 1;
        s.next_seq[2 * i + 1] = s_isn + 1;
    }
    const auto est = static_cast<size_t>(ferry::TcpState::kEstablished);
    if (s.shard->counters().by_tcp_state[est] != kConns) {
        s.error = "not every connection reached ESTABLISHED";
        return s;
    }
    s.cursor = std::make_unique<Cursor>(t);
    return s;
}

/// The traffic and the patterns of the benchmark's Arg, or nullptr once SkipWithError said
/// why not. Context: benchmark setup.
const Compiled* prologue(benchmark::State& state, Traffic** t) {
    *t = &traffic();
    if ((*t)->error != nullptr) {
        state.SkipWithError((*t)->error);
        return nullptr;
    }
    const Compiled& c = compiled(static_cast<uint32_t>(state.range(0)));
    if (!c.db) {
        state.SkipWithError(c.error.c_str());
        return nullptr;
    }
    return &c;
}

/// The counters both benchmarks report (see the top of this file).
void report(benchmark::State& state, const Compiled& c, uint64_t bytes, uint64_t matches) {
    const auto iters = static_cast<double>(state.iterations());
    state.SetBytesProcessed(static_cast<int64_t>(bytes));
    state.counters["Gbit_per_s"] =
        benchmark::Counter(static_cast<double>(bytes) * 8 / 1e9, benchmark::Counter::kIsRate);
    state.counters["ns_per_packet"] =
        benchmark::Counter(iters * 1e-9, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    state.counters["bytes_per_packet"] = static_cast<double>(bytes) / iters;
    state.counters["matches"] = static_cast<double>(matches);
    state.counters["stream_bytes"] = stream_bytes(*c.db);
    state.counters["compile_ms"] = c.compile_ms;
}

void BM_DpiInspect(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    Traffic* tp = nullptr;
    const Compiled* cp = prologue(state, &tp);
    if (cp == nullptr) return;
    Traffic& t = *tp;
    const Compiled& c = *cp;
    EngineSetup& s = engine_setup(n, t, c);
    if (!s.error.empty()) {
        state.SkipWithError(s.error.c_str());
        return;
    }
    ferry::DpiWorker& w = *s.worker;
    ferry::DpiVersion& v = *s.version;
    ferry::ConntrackShard& shard = *s.shard;
    Cursor& cur = *s.cursor;
    // The frames and keys are shared with the other runs: each frame's sequence number is
    // rewritten before use, and a key changes only by a mark pattern (there is none).
    std::vector<uint8_t>& frames = t.frames;
    std::vector<Half>& halves = t.halves;
    const ferry::DpiCounters before = w.counters();
    uint64_t bytes = 0;
    uint32_t burst = 0;
    for (auto _ : state) {
        uint32_t conn;
        const Segment& sg = cur.advance(t, &conn);
        const uint32_t k = 2 * conn + sg.dir;
        Half& h = halves[k];
        uint8_t* f = frames.data() + sg.frame_off;
        ferry::store_be32(f + h.layout.l4_offset + 4, s.next_seq[k]);
        s.next_seq[k] += sg.payload_len;
        w.inspect(v, shard, s.st[k], f, sg.frame_len, h.layout, &h.key, kNowMs);
        bytes += sg.payload_len;
        if (++burst == kDrainEvery) {
            burst = 0;
            if (w.alert_count() != 0) w.clear_alerts();
        }
    }
    const ferry::DpiCounters& after = w.counters();
    if (after.bytes - before.bytes != bytes) {
        // Sequence bookkeeping went wrong (a gap or a skipped retransmission): not a scan rate.
        state.SkipWithError("the worker did not scan every byte");
        return;
    }
    report(state, c, bytes, after.matches - before.matches);
}
BENCHMARK(BM_DpiInspect)->Arg(10)->Arg(1000)->Arg(10000);

// ---- BM_HsScanStreamRaw -----------------------------------------------------------------------

/// Hyperscan's own streams and scratch over the same databases, for one pattern set.
struct RawSetup {
    std::shared_ptr<const ferry::DpiDatabase> db;
    hs_scratch_t* scratch = nullptr;
    std::vector<hs_stream_t*> streams;  // 2 * kConns; null where a direction has no database
    std::unique_ptr<Cursor> cursor;
    std::string error;

    RawSetup() = default;
    RawSetup(const RawSetup&) = delete;
    RawSetup& operator=(const RawSetup&) = delete;
    ~RawSetup() {
        for (hs_stream_t* st : streams)
            if (st != nullptr) hs_close_stream(st, nullptr, nullptr, nullptr);
        hs_free_scratch(scratch);
    }
};

RawSetup& raw_setup(uint32_t n, const Traffic& t, const Compiled& c) {
    static std::map<uint32_t, RawSetup> cache;
    auto it = cache.find(n);
    if (it != cache.end()) return it->second;
    RawSetup& s = cache[n];
    s.db = c.db;
    s.streams.assign(2 * kConns, nullptr);
    for (unsigned dir = 0; dir < 2; ++dir) {
        const hs_database_t* d = s.db->db(dir);
        if (d == nullptr) continue;
        if (hs_alloc_scratch(d, &s.scratch) != HS_SUCCESS) {
            s.error = "hs_alloc_scratch failed";
            return s;
        }
        for (uint32_t i = 0; i < kConns; ++i) {
            if (hs_open_stream(d, 0, &s.streams[2 * i + dir]) != HS_SUCCESS) {
                s.error = "hs_open_stream failed";
                return s;
            }
        }
    }
    s.cursor = std::make_unique<Cursor>(t);
    return s;
}

int count_match(unsigned /*id*/, unsigned long long /*from*/, unsigned long long /*to*/,
                unsigned /*flags*/, void* ctx) {
    ++*static_cast<uint64_t*>(ctx);
    return 0;
}

void BM_HsScanStreamRaw(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    Traffic* tp = nullptr;
    const Compiled* cp = prologue(state, &tp);
    if (cp == nullptr) return;
    const Traffic& t = *tp;
    const Compiled& c = *cp;
    RawSetup& s = raw_setup(n, t, c);
    if (!s.error.empty()) {
        state.SkipWithError(s.error.c_str());
        return;
    }
    Cursor& cur = *s.cursor;
    uint64_t bytes = 0;
    uint64_t matches = 0;
    uint64_t errors = 0;
    for (auto _ : state) {
        uint32_t conn;
        const Segment& sg = cur.advance(t, &conn);
        hs_stream_t* st = s.streams[2 * conn + sg.dir];
        if (st == nullptr) continue;
        const auto* data = reinterpret_cast<const char*>(t.frames.data() + sg.frame_off);
        errors += hs_scan_stream(st, data + kHeaderLen, sg.payload_len, 0, s.scratch, count_match,
                                 &matches) != HS_SUCCESS;
        bytes += sg.payload_len;
    }
    if (errors != 0) {
        state.SkipWithError("hs_scan_stream failed");
        return;
    }
    report(state, c, bytes, matches);
}
BENCHMARK(BM_HsScanStreamRaw)->Arg(10)->Arg(1000)->Arg(10000);

}  // namespace

BENCHMARK_MAIN();
