// The control thread's periodic work and events: the clock, draining the workers' rings, aging,
// DPI alerts, port events from DPDK's interrupt thread (flag and eventfd), tasks posted from other
// threads, link state and what a link change sets off (in-band migration, departed MACs).
#include "control/switch.h"

#include <rte_cycles.h>
#include <unistd.h>

#include <algorithm>

#include "control/dpi_control.h"
#include "control/log.h"
#include "dataplane/mac_table.h"
#include "migrate/inband_migration.h"

namespace ferry {

void Switch::housekeeping() {
    uint32_t now = static_cast<uint32_t>((rte_get_tsc_cycles() - start_tsc_) / rte_get_tsc_hz());
    clock_s_.store(now, std::memory_order_relaxed);
    drain_learn_events();
    drain_addresses(now);
    if (dpi_) dpi_->drain_alerts();
    if (now != last_age_s_) {
        last_age_s_ = now;
        age_macs();
    }
    if (events_pending_.load() || now != last_link_poll_s_) {
        last_link_poll_s_ = now;
        handle_port_events();
    }
    // A migration's destination QEMU connects to a port and sends its state long before the
    // device starts, with no event from net_vhost in between: look for such connections on
    // the vhost-user ports without a running device (docs/migration.md, "In-band migration").
    std::vector<std::string> idle_vhost;
    {
        std::lock_guard lock(registry_mutex_);
        for (const auto& [n, r] : ports_)
            if (r.cfg.type == PortType::kVhostUser && !r.link_up) idle_vhost.push_back(r.cfg.path);
    }
    for (const std::string& path : idle_vhost) inband_attach(path);
}

void Switch::on_port_event(void* self) {
    // DPDK's interrupt thread: only flag and wake the control thread.
    auto* sw = static_cast<Switch*>(self);
    sw->events_pending_.store(true);
    uint64_t one = 1;
    ssize_t ignored = write(sw->event_fd_, &one, sizeof(one));
    (void)ignored;
}

void Switch::post(std::function<void()> task) {
    {
        std::lock_guard lock(posted_mutex_);
        posted_.push_back(std::move(task));
    }
    uint64_t one = 1;
    ssize_t ignored = write(event_fd_, &one, sizeof(one));
    (void)ignored;
}

void Switch::handle_port_events() {
    uint64_t drained;
    while (read(event_fd_, &drained, sizeof(drained)) > 0) {
    }
    std::vector<std::function<void()>> tasks;
    {
        std::lock_guard lock(posted_mutex_);
        tasks.swap(posted_);
    }
    for (auto& t : tasks) t();
    events_pending_.store(false);
    poll_links();
}

void Switch::poll_links() {
    bool changed = false;
    std::vector<uint16_t> went_down;
    std::vector<std::string> resumed;
    std::vector<uint16_t> vhost_down;
    {
        std::lock_guard lock(registry_mutex_);
        for (auto& [n, r] : ports_) {
            bool up = port_link_up(r.dev.dpdk_port);
            if (up == r.link_up) continue;
            r.link_up = up;
            changed = true;
            const char* what =
                r.cfg.type == PortType::kVhostUser
                    ? (up ? "vhost-user peer connected" : "vhost-user peer disconnected")
                    : "link";
            FERRY_LOG_INFO("port %s: link %s (%s)", n.c_str(), up ? "up" : "down", what);
            if (!up) went_down.push_back(r.slot);
            if (r.cfg.type == PortType::kVhostUser) {
                if (up) resumed.push_back(r.cfg.path);
                if (up) departed_macs_.erase(r.slot);
                if (!up) vhost_down.push_back(r.slot);
            }
        }
    }
    if (!changed) return;
    for (const std::string& path : resumed) inband_device_resumed(path);
    publish();
    for (uint16_t slot : went_down) {
        // A vhost-user port's link goes down when QEMU stops the device, also right before it
        // asks for the port's state: the MACs stay known for that state, not for forwarding.
        const bool keep = std::find(vhost_down.begin(), vhost_down.end(), slot) != vhost_down.end();
        std::vector<DepartedMac> departed;
        macs_->remove_if([&](uint64_t key, MacEntry e) {
            if (e.port != slot) return false;
            if (keep) departed.push_back({key, e.stamp_s});
            return true;
        });
        if (keep) departed_macs_[slot] = std::move(departed);
    }
}

}  // namespace ferry
