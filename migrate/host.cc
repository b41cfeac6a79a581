#include "migrate/host.h"

#include <cstdarg>
#include <cstdio>

namespace ferry {

void MigrationHost::log(MigrateLog level, const char* fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_line(level, buf);
}

}  // namespace ferry
