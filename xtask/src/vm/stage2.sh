# lb-vm stage 2: PID 1 in the host's root (the overlay), run by busybox from
# /run/lb-vm. Mounts what a booted system has, runs the command with its
# stdout and stderr on virtio-serial ports that xtask streams, and reports
# "start" and "exit STATUS" on a port of their own, never on the console.

/run/lb-vm/busybox mkdir -p /run/lb-vm/bin
/run/lb-vm/busybox --install -s /run/lb-vm/bin
export PATH=/run/lb-vm/bin

mount_fs() { # type target options
    mkdir -p "$2"
    mount -t "$1" -o "$3" "$1" "$2" || echo "lb-vm stage 2: cannot mount $1 at $2"
}
mount_fs devpts /dev/pts gid=5,mode=0620,ptmxmode=0666
mount_fs tmpfs /dev/shm mode=1777,nosuid,nodev
mount_fs mqueue /dev/mqueue nosuid,nodev,noexec
# The host's /tmp stays reachable under /run/lb-vm/host-tmp: a command run
# from a checkout there (a clone in /tmp) gets it bound back in place.
mkdir -p /run/lb-vm/host-tmp
mount --bind /tmp /run/lb-vm/host-tmp || echo "lb-vm stage 2: cannot keep the host's /tmp"
mount_fs tmpfs /tmp mode=1777,nosuid,nodev
mount_fs bpf /sys/fs/bpf mode=0700
mount_fs cgroup2 /sys/fs/cgroup nsdelegate
mount_fs tracefs /sys/kernel/tracing nosuid,nodev,noexec
mount_fs debugfs /sys/kernel/debug nosuid,nodev,noexec
# What udev or systemd would otherwise provide.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
ip link set lo up
hostname lb-vm

# /dev/virtio-ports/NAME, as udev would name them.
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    ln -s "../${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done
ports=/dev/virtio-ports

echo start > $ports/lb.status
# The command script is run by the host's /bin/sh, not by busybox, so that
# its `exec` finds the host's programs and never a busybox applet.
env -i /bin/sh /run/lb-vm/command < /dev/null > $ports/lb.stdout 2> $ports/lb.stderr
echo "exit $?" > $ports/lb.status
poweroff -f
