"""Minimal QEMU guests for the end-to-end tests, built at test time from Debian packages: the
linux-image-amd64 kernel with its virtio modules and busybox-static in an initramfs whose /init
loads the modules in dependency order, gives eth0 the address in `ferry.ip=` and runs the
shell script in `ferry.run=` (base64), printing FERRY-GUEST-READY / -RUN / -EXIT lines
on the serial console, then powers off.

Guests run under TCG (KVM does not boot them on this kind of host), with guest RAM from a shared
memfd and a virtio-net NIC on a vhost-user socket, or more than one (eth1, ...: the guest's
script configures those; no MSI-X: QEMU 7.2 under TCG crashes at vhost-user start otherwise; no
option ROM, so no iPXE package is needed).
"""
import base64
import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import ferry_harness as fh  # noqa: E402

MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "failover", "net_failover", "virtio_net"]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %s; do
    insmod /lib/modules/$m.ko || echo "FERRY-GUEST: insmod $m failed"
done
arg() { sed -n "s/.*ferry\\.$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
ip link set lo up
ip addr add "$(arg ip)" dev eth0
ip link set eth0 up
echo "FERRY-GUEST-READY $(arg ip)"
arg run | base64 -d > /run.sh
echo "FERRY-GUEST-RUN $(head -c 200 /run.sh | tr '\\n' ' ')"
sh /run.sh
echo "FERRY-GUEST-EXIT $?"
poweroff -f
""" % " ".join(MODULES)


def _download(pkgs, into):
    """apt-get download, with an update first if the package lists do not know them."""
    for attempt in range(2):
        r = subprocess.run(["apt-get", "download", *pkgs], cwd=into, capture_output=True, text=True)
        if r.returncode == 0:
            return
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
    raise RuntimeError(f"apt-get download {' '.join(pkgs)}: {r.stderr.strip()[-400:]}")


def build(workdir):
    """Kernel and initramfs in workdir (reused when already there). @return (kernel, initrd)"""
    kernel = os.path.join(workdir, "vmlinuz")
    # Named for its /init, so that a changed /init is not served from an older build.
    initrd = os.path.join(workdir, f"initrd-{hashlib.sha256(INIT.encode()).hexdigest()[:12]}.gz")
    if os.path.exists(kernel) and os.path.exists(initrd):
        return kernel, initrd
    debs = os.path.join(workdir, "debs")
    os.makedirs(debs, exist_ok=True)
    _download(["linux-image-amd64", "busybox-static"], debs)
    meta = glob.glob(os.path.join(debs, "linux-image-amd64_*.deb"))[0]
    depends = subprocess.run(["dpkg-deb", "-f", meta, "Depends"], capture_output=True,
                             text=True, check=True).stdout
    image = depends.split(",")[0].split()[0].strip()  # linux-image-6.1.0-NN-amd64
    _download([image], debs)
    tree = os.path.join(workdir, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    for deb in glob.glob(os.path.join(debs, "*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
    root = os.path.join(workdir, "root")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "bin"))
    os.makedirs(os.path.join(root, "lib", "modules"))
    shutil.copy(os.path.join(tree, "bin", "busybox"), os.path.join(root, "bin", "busybox"))
    for m in MODULES:
        found = glob.glob(os.path.join(tree, "lib", "modules", "*", "kernel", "**", m + ".ko"),
                          recursive=True)
        if not found:
            raise RuntimeError(f"module {m}.ko is not in {image}")
        shutil.copy(found[0], os.path.join(root, "lib", "modules"))
    with open(os.path.join(root, "init"), "w") as f:
        f.write(INIT)
    os.chmod(os.path.join(root, "init"), 0o755)
    listing = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    archive = subprocess.run([os.path.join(root, "bin", "busybox"), "cpio", "-o", "-H", "newc"],
                             cwd=root, input=listing, capture_output=True, check=True).stdout
    with gzip.open(initrd + ".tmp", "wb", compresslevel=1) as f:
        f.write(archive)
    shutil.copy(glob.glob(os.path.join(tree, "boot", "vmlinuz-*"))[0], kernel + ".tmp")
    os.rename(initrd + ".tmp", initrd)
    os.rename(kernel + ".tmp", kernel)
    return kernel, initrd


class Guest:
    """One QEMU guest on a vhost-user socket, running `run` (a shell command) once booted."""

    def __init__(self, kernel, initrd, socket, mac, ip, run, console, mem_mb=256, qmp=None,
                 incoming=None, chardev="", more_nics=()):
        """qmp: a unix socket path for QMP; incoming: a migration URI to wait on (-incoming);
        chardev: more options of the vhost-user sockets' chardevs (",server=on,wait=off");
        more_nics: (socket, mac) of the NICs after eth0, in order (eth1, ...), unconfigured."""
        self.console = console
        self.qmp = qmp
        self.incoming = incoming
        script = base64.b64encode(run.encode()).decode()
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(mem_mb), "-smp", "1",
               "-object", f"memory-backend-memfd,id=mem,size={mem_mb}M,share=on",
               "-numa", "node,memdev=mem", "-kernel", kernel, "-initrd", initrd,
               "-append", f"console=ttyS0 quiet panic=-1 ferry.ip={ip} ferry.run={script}",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", f"file:{console}"]
        for i, (path, address) in enumerate([(socket, mac), *more_nics]):
            cmd += ["-chardev", f"socket,id=c{i},path={path}{chardev}",
                    "-netdev", f"vhost-user,id=n{i},chardev=c{i}",
                    "-device", f"virtio-net-pci,netdev=n{i},vectors=0,mac={address},romfile="]
        if qmp:
            cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
        if incoming:
            cmd += ["-incoming", incoming]
        self.proc = fh.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def output(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    EXIT_LINE = re.compile(r"^FERRY-GUEST-EXIT (-?\d+)\r?\n", re.MULTILINE)

    def exit_status(self):
        """The status the guest's command reported on a whole console line, or None. The
        console is read while the guest writes it: the marker alone, its status not yet
        written, is not an answer."""
        m = self.EXIT_LINE.search(self.output())
        return int(m.group(1)) if m else None

    def wait_exit(self, timeout):
        """Waits for the guest's command to finish. @return its exit status"""
        fh.wait_for(lambda: self.exit_status() is not None or self.proc.poll() is not None,
                    timeout, interval=0.2, what=f"the guest ({self.console}) to finish")
        status = self.exit_status()
        if status is not None:
            return status
        raise RuntimeError(f"the guest died: {self.proc.stderr.read().decode()[-400:]}"
                           f"\n{self.output()[-2000:]}")

    def stop(self):
        fh.stop_process(self.proc, timeout=5)
