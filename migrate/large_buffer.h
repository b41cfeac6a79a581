// Large transient buffers of a migration (a capture, an encoded stream, a received one): tens
// of megabytes at 100,000 connections, allocated fresh inside a guest's downtime. Faulting them
// in page by page cost more than encoding into them, so their memory is asked for in huge pages
// where the kernel gives them (transparent huge pages in madvise mode). Context: control.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry {

/// Reserves room for n elements in v and, when that is large, advises huge pages for it
/// (before any of it is touched). Only a hint: without huge pages it is a plain reserve.
template <class T>
void reserve_large(std::vector<T>& v, size_t n) {
    constexpr size_t kHugePage = size_t{2} << 20;
    const bool fresh = n > v.capacity();
    v.reserve(n);
    if (!fresh || v.capacity() * sizeof(T) < 2 * kHugePage) return;
#ifdef MADV_HUGEPAGE
    // The untouched part past the elements already there, in whole huge pages.
    const auto begin = reinterpret_cast<uintptr_t>(v.data() + v.size());
    const auto end = reinterpret_cast<uintptr_t>(v.data() + v.capacity());
    const uintptr_t from = (begin + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t to = end & ~(kHugePage - 1);
    if (to > from) madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
#endif
}

}  // namespace ferry
