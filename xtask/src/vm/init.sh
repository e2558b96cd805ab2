#!/bin/sh
# lb-vm stage 1: PID 1 of the initramfs (busybox). Mounts the host's root,
# shared read-only over virtio-9p, under a tmpfs overlay so that the guest
# can write anywhere, puts the guest kernel's own module tree at
# /lib/modules/<release>, and hands over to stage 2 inside that root.
# Its messages go to the console (the log xtask shows when a boot fails).

/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "lb-vm stage 1: $*"
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r module; do
    insmod "/lb-vm/modules/$module" || fail "insmod $module failed"
done < /lb-vm/modules.order

release=$(cat /lb-vm/release)
# cache=loose: the host's files do not change under a run, and reading
# binaries through an uncached 9p is many times slower.
ninep=trans=virtio,version=9p2000.L,cache=loose,msize=262144,ro

mount -t 9p -o "$ninep" hostroot /lower || fail "cannot mount the host's root (9p tag hostroot)"
mount -t tmpfs -o mode=0755 overlay-rw /rw || fail "cannot mount a tmpfs for the overlay"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    fail "cannot mount the overlay over the host's root"

mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run || fail "cannot mount /run"
mkdir /newroot/run/lb-vm
cp /bin/busybox /lb-vm/stage2 /lb-vm/command /newroot/run/lb-vm/ || fail "cannot copy to /run/lb-vm"

# The kernel's module autoload runs /sbin/modprobe of the new root, which
# looks in /lib/modules/$(uname -r): the unpacked Debian package's tree.
mkdir -p "/newroot/lib/modules/$release"
mount -t 9p -o "$ninep" modules "/newroot/lib/modules/$release" ||
    fail "cannot mount the kernel's modules (9p tag modules)"

for fs in dev proc sys; do
    mount --move "/$fs" "/newroot/$fs" || fail "cannot move /$fs into the new root"
done

exec switch_root /newroot /run/lb-vm/busybox sh /run/lb-vm/stage2
fail "switch_root failed"
