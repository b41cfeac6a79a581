// Big-endian fixed-width encoding for the migration stream: a writer that appends to a byte
// vector, and a bounded reader that never reads past its end (a short read sets a sticky
// failure and yields zeros, so a parser checks once at the end). Context: control.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ferry {

class WireWriter {
public:
    explicit WireWriter(std::vector<uint8_t>& out) : out_(out) {}
    void u8(uint8_t v) { out_.push_back(v); }
    void u16(uint16_t v) { put(v, 2); }
    void u32(uint32_t v) { put(v, 4); }
    void u64(uint64_t v) { put(v, 8); }
    void bytes(const uint8_t* p, size_t n) { out_.insert(out_.end(), p, p + n); }
    /// A u8 length and the bytes; the caller keeps s within 255 bytes.
    void str8(const std::string& s) {
        u8(static_cast<uint8_t>(s.size()));
        bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
    size_t size() const { return out_.size(); }
    /// Overwrites 4 bytes at `at` (a length or CRC written after its payload).
    void patch32(size_t at, uint32_t v) {
        for (int i = 0; i < 4; ++i) out_[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
    }

private:
    void put(uint64_t v, int n) {
        const size_t at = out_.size();
        out_.resize(at + static_cast<size_t>(n));
        const uint64_t be = __builtin_bswap64(v) >> (8 * (8 - n));
        std::memcpy(out_.data() + at, &be, static_cast<size_t>(n));
    }
    std::vector<uint8_t>& out_;
};

/// Writes big-endian fields into memory the caller sized (bulk sections: no bounds checks).
class RawWriter {
public:
    explicit RawWriter(uint8_t* p) : p_(p) {}
    void u8(uint8_t v) { *p_++ = v; }
    void u16(uint16_t v) { store(__builtin_bswap16(v)); }
    void u32(uint32_t v) { store(__builtin_bswap32(v)); }
    void u64(uint64_t v) { store(__builtin_bswap64(v)); }
    void bytes(const uint8_t* src, size_t n) {
        std::memcpy(p_, src, n);
        p_ += n;
    }
    void zeros(size_t n) {
        std::memset(p_, 0, n);
        p_ += n;
    }
    uint8_t* at() const { return p_; }

private:
    template <class T>
    void store(T v) {
        std::memcpy(p_, &v, sizeof(v));
        p_ += sizeof(v);
    }
    uint8_t* p_;
};

/// Reads big-endian fields from memory whose length the caller checked (bulk sections: no
/// bounds checks).
class RawReader {
public:
    explicit RawReader(const uint8_t* p) : p_(p) {}
    uint8_t u8() { return *p_++; }
    uint16_t u16() { return __builtin_bswap16(load<uint16_t>()); }
    uint32_t u32() { return __builtin_bswap32(load<uint32_t>()); }
    uint64_t u64() { return __builtin_bswap64(load<uint64_t>()); }
    int32_t i32() { return static_cast<int32_t>(u32()); }
    void bytes(uint8_t* dst, size_t n) {
        std::memcpy(dst, p_, n);
        p_ += n;
    }

private:
    template <class T>
    T load() {
        T v;
        std::memcpy(&v, p_, sizeof(v));
        p_ += sizeof(v);
        return v;
    }
    const uint8_t* p_;
};

class WireReader {
public:
    WireReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
    uint8_t u8() { return static_cast<uint8_t>(get(1)); }
    uint16_t u16() { return static_cast<uint16_t>(get(2)); }
    uint32_t u32() { return static_cast<uint32_t>(get(4)); }
    uint64_t u64() { return get(8); }
    int32_t i32() { return static_cast<int32_t>(u32()); }
    /// Copies n bytes to dst (zeros when short).
    void bytes(uint8_t* dst, size_t n) {
        if (!take(n)) {
            std::memset(dst, 0, n);
            return;
        }
        std::memcpy(dst, p_ + pos_ - n, n);
    }
    /// Points at the next n bytes and skips them; nullptr when short.
    const uint8_t* view(size_t n) { return take(n) ? p_ + pos_ - n : nullptr; }
    /// A u8 length and that many bytes, at most max_len of them.
    bool str8(std::string* s, size_t max_len) {
        const uint8_t n = u8();
        const uint8_t* v = view(n);
        if (v == nullptr || n > max_len) return fail();
        s->assign(reinterpret_cast<const char*>(v), n);
        return true;
    }
    size_t pos() const { return pos_; }
    size_t remaining() const { return n_ - pos_; }
    bool ok() const { return ok_; }
    /// Whether everything was read, exactly.
    bool done() const { return ok_ && pos_ == n_; }
    bool fail() {
        ok_ = false;
        return false;
    }

private:
    bool take(size_t n) {
        if (!ok_ || n > n_ - pos_) return fail();
        pos_ += n;
        return true;
    }
    uint64_t get(int n) {
        if (!take(static_cast<size_t>(n))) return 0;
        uint64_t v = 0;
        std::memcpy(&v, p_ + pos_ - n, static_cast<size_t>(n));
        return __builtin_bswap64(v) >> (8 * (8 - n));
    }
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace ferry
