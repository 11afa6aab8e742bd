#!/bin/busybox sh
# /init of the kernel test bed's initramfs (see tests/kernel/vm.py).
#
# 1. load the modules listed in /modules/order (virtio PCI, 9p, overlay);
# 2. mount the host's root (9p tag "hostroot", read-only) under a tmpfs overlay, so the
#    guest sees the host's files (python, kinkd, krb5kdc, ip, /lib/modules) and may write
#    anywhere (writes stay in the guest's memory);
#    a working directory under /tmp or /run (kernel argument kinkd.expose=DIR) gets an
#    overlay of its own there, above the guest's tmpfs;
# 3. mount the exchange directory (9p tag "xfer", read-write) on /run/kvm-xfer: the
#    command comes from there (cmd.sh), its output, exit status and timings go there;
# 4. switch_root into the overlay (module autoload then uses the host's modprobe and
#    /lib/modules), run cmd.sh, power off (qemu runs with -no-reboot and exits).
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
X=/newroot/run/kvm-xfer
fail() {
    echo "kinkd-vm init: $*" >/dev/console
    [ -d "$X" ] && echo 125 > "$X/rc"
    sync
    reboot -f
    sleep 10
}
read up _ </proc/uptime
stamp="init=$up"
for m in $(cat /modules/order); do
    insmod "/modules/$m" || fail "insmod $m failed"
done
read up _ </proc/uptime
stamp="$stamp modules=$up"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
    || fail "cannot mount the host root (9p tag hostroot)"
mount -t tmpfs -o mode=755 tmpfs /rw || fail "cannot mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "cannot mount the overlay"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout
ln -sf /proc/self/fd/2 /newroot/dev/stderr
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
# a working directory under /tmp or /run (masked by the tmpfs above): its own overlay
E=
for arg in $(cat /proc/cmdline); do
    case "$arg" in kinkd.expose=*) E="${arg#kinkd.expose=}" ;; esac
done
if [ -n "$E" ]; then
    mkdir -p /rw/expose/upper /rw/expose/work "/newroot$E"
    mount -t overlay -o "lowerdir=/lower$E,upperdir=/rw/expose/upper,workdir=/rw/expose/work" \
        overlay "/newroot$E" || fail "cannot show $E to the guest"
fi
mkdir -p "$X"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 xfer "$X" \
    || fail "cannot mount the exchange directory (9p tag xfer)"
read up _ </proc/uptime
echo "$stamp mounts=$up" > "$X/timings"
cp /bin/busybox /newroot/run/busybox
cat > /newroot/run/stage2 <<'EOF'
#!/run/busybox sh
B=/run/busybox
X=/run/kvm-xfer
$B ip link set lo up
$B hostname kinkd-vm
read up _ </proc/uptime
echo "command_start=$up" >> $X/timings
/bin/bash $X/cmd.sh </dev/null >$X/output 2>&1
echo $? > $X/rc.tmp
read up _ </proc/uptime
echo "command_end=$up" >> $X/timings
$B mv $X/rc.tmp $X/rc
$B sync
$B reboot -f
EOF
chmod +x /newroot/run/stage2
exec switch_root /newroot /run/stage2
