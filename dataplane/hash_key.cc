#include "dataplane/hash_key.h"

#include <cerrno>
#include <cstddef>

#include <sys/random.h>

namespace ferry {

bool hash_keys_init() {
    if (hash_key_detail::initialised) return true;
    HashKeys k;
    auto* p = reinterpret_cast<unsigned char*>(&k);
    size_t got = 0;
    // Blocks only until the kernel's pool is first seeded (early boot); never on a running host.
    while (got < sizeof(k)) {
        const ssize_t n = getrandom(p + got, sizeof(k) - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        got += static_cast<size_t>(n);
    }
    hash_keys_set(k);
    return true;
}

namespace {
// Drawn when the process starts, before main(): whatever a process hashes before its switch
// exists (ferryd --takeover reads and checks the predecessor's stream first, into tuple-keyed
// maps) never uses the public keys. Should the kernel fail here, the keys stay public and the
// switch's own hash_keys_init() call tries again and refuses to start.
[[maybe_unused]] const bool drawn_at_start = hash_keys_init();
}  // namespace

}  // namespace ferry
