// What the migration drivers need from the switch they move state out of and into, and nothing
// more: the control thread to post work to, the workers to pause, the ports by name, and the
// tables the workers own (conntrack shards, DPI streams, learned MACs). control/ implements it
// over its Switch (control/migration_host.h); migrate/ never includes control/, so the drivers
// here see the switch only through this. Unit tests implement it over bare tables.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/pauser.h"

namespace ferry {

class ConntrackShard;
class DpiVersion;
class DpiWorker;
class MacTable;
struct CtTuple;
struct MigratedAddress;
struct CtZoneTable;

/// How loud a driver's log line is; the host maps it onto its own log.
enum class MigrateLog { kDebug, kInfo, kWarn, kError };

class MigrationHost {
public:
    virtual ~MigrationHost() = default;

    /// Runs task on the control thread soon. Context: any thread.
    virtual void post(std::function<void()> task) = 0;
    /// The workers, to pause with a ScopedPause around whatever reads or writes their tables.
    /// Context: control.
    virtual Pauser& workers() = 0;

    /// Names and slots of every port, by name. Context: control.
    virtual std::vector<std::pair<std::string, uint16_t>> port_slots() const = 0;
    /// The slot of a port by name, or nullopt. Context: control.
    virtual std::optional<uint16_t> port_slot(const std::string& name) const = 0;
    /// A port's MAC address as "aa:bb:cc:dd:ee:ff" ("" when unknown). Context: control.
    virtual std::string port_mac_text(const std::string& name) const = 0;

    /// A MAC a port's link down took out of the MAC table (its device stopped, perhaps for a
    /// QEMU migration that asks for the port's state next): the table's key (address and VLAN)
    /// and its stamp.
    struct DepartedMac {
        uint64_t key;
        uint32_t stamp_s;
    };
    /// The MACs the port in slot forgot at its last link down; empty once it is up again.
    /// Context: control.
    virtual std::vector<DepartedMac> departed_macs(uint16_t slot) const = 0;

    /// A port's addresses as a stream carries them (stream flags, migrate/stream_format.h): the
    /// configured ones and those its guest was seen sending from. Context: control, workers
    /// paused (what they reported last is included).
    virtual std::vector<MigratedAddress> port_addresses(const std::string& name) = 0;
    /// Takes the addresses another ferryd saw the port's guest send from (flag kAddrLearned),
    /// those that the port's security here allows (all when it has none), as seen now.
    /// @return how many were taken. Context: control.
    virtual size_t learn_port_addresses(const std::string& name,
                                        const std::vector<MigratedAddress>& addresses) = 0;

    /// The learned MACs and the clock their stamps use, in seconds. Context: control (the MAC
    /// table's only writer).
    virtual MacTable& mac_table() = 0;
    virtual uint32_t clock_s() const = 0;

    /// Connection tracking: one shard per worker, written by its worker (read or change one
    /// only while the workers are paused or not started), the zones they share, and the
    /// clock their timeouts use. Context: control.
    virtual uint16_t ct_shard_count() const = 0;
    virtual ConntrackShard& ct_shard(uint16_t worker) = 0;
    virtual CtZoneTable& ct_zones() = 0;
    virtual uint64_t ct_now_ms() const = 0;
    /// A connection's tuple as the host's logs and ct.list spell it, for messages. Context: any.
    virtual std::string ct_tuple_text(const CtTuple& t) const = 0;

    /// Payload inspection: the published database generation and each worker's streams (as
    /// the shards: while paused). Context: control.
    virtual DpiVersion& dpi_current() = 0;
    virtual DpiWorker& dpi_worker(uint16_t worker) = 0;

    /// Writes one line to the host's log. Context: any thread (one call, one line).
    virtual void log_line(MigrateLog level, const std::string& line) = 0;
    /// log_line with printf formatting. Context: any thread.
    void log(MigrateLog level, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
};

}  // namespace ferry
