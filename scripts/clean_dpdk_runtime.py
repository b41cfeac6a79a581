#!/usr/bin/env python3
"""Removes DPDK runtime directories and hugepage files that test processes left behind.

Usage: clean_dpdk_runtime.py [PATTERN...]   (default: ft* ferry-unit-*)

Only leftovers of dead processes are removed, so tests running concurrently (another checkout,
another session) are not disturbed:
  - /var/run/dpdk/<prefix>/ is stale when nobody holds the lock a DPDK primary keeps on its
    "config" file, no unix socket under it is bound (/proc/net/unix: mp_socket, telemetry), and
    it was not modified in the last 30 seconds (a process that is starting has not locked yet);
  - a hugepage file <prefix>map_* is stale when an exclusive flock() on it succeeds: every
    process that maps a segment holds a shared one (DPDK's own clear_hugedir test).
Prints one line per removal. Exit status: 0.
"""
import fcntl
import fnmatch
import os
import shutil
import sys
import time

RUNTIME = "/var/run/dpdk"
MIN_AGE_S = 30


def bound_unix_paths():
    paths = set()
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7].startswith("/"):
                    paths.add(fields[7])
    except OSError:
        pass
    return paths


def config_locked(path):
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def runtime_dir_stale(d, bound):
    if time.time() - os.stat(d).st_mtime < MIN_AGE_S:
        return False
    if config_locked(os.path.join(d, "config")):
        return False
    return not any(p.startswith(d + "/") for p in bound)


def hugetlbfs_mounts():
    mounts = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "hugetlbfs":
                    mounts.append(fields[1])
    except OSError:
        pass
    return mounts


def hugepage_file_stale(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock


def main(argv):
    patterns = argv[1:] or ["ft*", "ferry-unit-*"]
    bound = bound_unix_paths()
    if os.path.isdir(RUNTIME):
        for name in sorted(os.listdir(RUNTIME)):
            d = os.path.join(RUNTIME, name)
            if not any(fnmatch.fnmatch(name, p) for p in patterns) or not os.path.isdir(d):
                continue
            try:
                if runtime_dir_stale(d, bound):
                    shutil.rmtree(d, ignore_errors=True)
                    print(f"removed stale DPDK runtime dir {d}")
            except OSError:
                pass
    for mount in hugetlbfs_mounts():
        try:
            names = os.listdir(mount)
        except OSError:
            continue
        for name in sorted(names):
            if "map_" not in name or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            path = os.path.join(mount, name)
            if hugepage_file_stale(path):
                try:
                    os.unlink(path)
                    print(f"removed stale hugepage file {path}")
                except OSError:
                    pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
