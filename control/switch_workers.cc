// The worker lcores' run state: launching and stopping them, and pausing them (the Pauser that
// unsafe commands and migrations hold: all workers at once, nested) or one at a time (a flow
// dump's short slices). A paused worker is parked at the top of its loop and touches nothing.
#include "control/switch.h"

#include <rte_launch.h>

#include <chrono>
#include <thread>

#include "control/log.h"

namespace ferry {
namespace {

// A worker reaches its next pause point within a burst (microseconds) once it runs; the bound is
// for a host so busy that the worker's thread waits for a core. A second is long enough not to
// fail a migration over scheduling delays and short enough to tell a stuck worker.
constexpr auto kPauseTimeout = std::chrono::milliseconds(1000);

}  // namespace

Status Switch::start_workers() {
    for (WorkerState* w : workers_) {
        w->stop.store(false);
        int rc = rte_eal_remote_launch(worker_main, w, w->lcore);
        if (rc != 0) {
            stop_workers();
            return make_error(ErrorCode::kFailed,
                              "cannot launch worker on lcore " + std::to_string(w->lcore));
        }
    }
    workers_started_ = true;
    for (WorkerState* w : workers_)
        FERRY_LOG_INFO("worker %u started on lcore %u", w->index, w->lcore);
    return Ok{};
}

void Switch::stop_workers() {
    if (!workers_started_) return;
    for (WorkerState* w : workers_) w->stop.store(true, std::memory_order_release);
    for (WorkerState* w : workers_) rte_eal_wait_lcore(w->lcore);
    workers_started_ = false;
}

Status Switch::pause() {
    if (!workers_started_) return Ok{};
    // Nested pauses (an unsafe command while a migration holds the workers) only count.
    if (pause_depth_ > 0) {
        ++pause_depth_;
        return Ok{};
    }
    uint32_t epochs[kWorkerSlots] = {};
    for (size_t i = 0; i < workers_.size(); ++i) epochs[i] = workers_[i]->pause.request();
    auto deadline = std::chrono::steady_clock::now() + kPauseTimeout;
    for (size_t i = 0; i < workers_.size(); ++i) {
        WorkerState* w = workers_[i];
        while (!w->pause.parked(epochs[i])) {
            if (std::chrono::steady_clock::now() > deadline) {
                for (WorkerState* v : workers_) release_worker(v);
                return make_error(ErrorCode::kBusy, "worker on lcore " + std::to_string(w->lcore) +
                                                        " did not pause within 1 s");
            }
            std::this_thread::yield();
        }
    }
    pause_depth_ = 1;
    return Ok{};
}

void Switch::resume() {
    if (pause_depth_ == 0 || --pause_depth_ > 0) return;
    for (WorkerState* w : workers_) release_worker(w);
}

Status Switch::pause_worker(WorkerState* w) {
    if (!workers_started_) return Ok{};
    const uint32_t epoch = w->pause.request();
    auto deadline = std::chrono::steady_clock::now() + kPauseTimeout;
    while (!w->pause.parked(epoch)) {
        if (std::chrono::steady_clock::now() > deadline) {
            resume_worker(w);
            return make_error(ErrorCode::kBusy, "worker on lcore " + std::to_string(w->lcore) +
                                                    " did not pause within 1 s");
        }
        std::this_thread::yield();
    }
    return Ok{};
}

void Switch::resume_worker(WorkerState* w) {
    if (pause_depth_ == 0) release_worker(w);  // all paused: the outer pause lets them go
}

void Switch::release_worker(WorkerState* w) {
    w->pause.release();
}

}  // namespace ferry
