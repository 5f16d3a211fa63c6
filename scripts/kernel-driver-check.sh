#!/usr/bin/env bash
# Checks aoe-target against the real Linux kernel AoE initiator (drivers/block/aoe).
#
# Boots a stock Debian kernel in qemu with a tiny busybox initramfs that loads aoe.ko,
# waits for the export to be discovered, reads bytes the host put into the image, writes
# a random pattern and reads it back with O_DIRECT. The host then checks the image file
# holds what the guest wrote. All networking is one tap device inside a private network
# namespace; nothing touches the host's interfaces.
#
#   sudo scripts/kernel-driver-check.sh
#
# To put something between the guest and the target (a fault-injecting relay, see
# aoe-cli/tests/target_kernel_driver.rs), name existing namespaces: the tap goes into
# $AOE_KCHECK_NETNS, bridged with its interface $AOE_KCHECK_BRIDGE, and aoe-target serves on
# $AOE_KCHECK_TARGET_IF in $AOE_KCHECK_TARGET_NETNS. $AOE_KCHECK_WRITE_KIB sets how much the
# guest writes and reads back (default 4096 KiB; or $AOE_KCHECK_WRITE_MIB in MiB), and
# $AOE_KCHECK_READ_KIB how much host data it reads first (default 1024 KiB); both in
# multiples of 64 KiB.
#
# Needs root and /dev/kvm (the guest runs under plain emulation unless AOE_QEMU_ACCEL=kvm,
# see below); without them it prints SKIP and exits 0 (or 1 if
# AOE_REQUIRE_KVM=1). The kernel .deb is downloaded (not installed) once and kept in
# $AOE_KCHECK_CACHE (default /var/tmp/aoe-kernel-check). Override the kernel package
# with AOE_KERNEL_PKG=linux-image-...-amd64.
set -euo pipefail
cd "$(dirname "$0")/.."

SHELF=1
SLOT=0
IMG_MIB=64        # size of the exported image
BS=65536          # the block size of every dd, in and out of the guest
WRITE_KIB=${AOE_KCHECK_WRITE_KIB:-$(( ${AOE_KCHECK_WRITE_MIB:-4} * 1024 ))}  # written at WRITE_OFF_MIB
WRITE_OFF_MIB=8
READ_KIB=${AOE_KCHECK_READ_KIB:-1024}  # host data pre-filled at offset 0 for the guest to read
for kib in "$WRITE_KIB" "$READ_KIB"; do
  if ! [[ "$kib" =~ ^[0-9]+$ ]] || [ "$kib" -eq 0 ] || [ $((kib % 64)) -ne 0 ]; then
    echo "kernel-driver-check: sizes must be positive multiples of 64 KiB, not '$kib'" >&2
    exit 2
  fi
done
WRITE_BLOCKS=$((WRITE_KIB / 64))
READ_BLOCKS=$((READ_KIB / 64))
WRITE_OFF_BLOCKS=$((WRITE_OFF_MIB * 16))

skip() {
  echo "SKIP: kernel-driver-check: needs root and /dev/kvm"
  if [ "${AOE_REQUIRE_KVM:-0}" = 1 ]; then exit 1; fi
  exit 0
}
[ "$(id -u)" = 0 ] || skip
[ -c /dev/kvm ] || skip
[ -c /dev/net/tun ] || { echo "kernel-driver-check: FAIL: /dev/net/tun missing"; exit 1; }

export DEBIAN_FRONTEND=noninteractive
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx insmod || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# The guest needs a statically linked busybox.
if ldd /bin/busybox >/dev/null 2>&1; then
  echo "installing busybox-static"
  apt-get install -y -q --no-install-recommends busybox-static
fi

echo "building aoe-target"
cargo build --release -q -p aoe-cli --bin aoe-target
TARGET_BIN=$PWD/target/release/aoe-target

# --- kernel: download the .deb, unpack it privately --------------------------------
CACHE=${AOE_KCHECK_CACHE:-/var/tmp/aoe-kernel-check}
mkdir -p "$CACHE"
PKG=${AOE_KERNEL_PKG:-}
if [ -z "$PKG" ]; then
  PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$PKG" ]; then
    apt-get update -q
    PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
fi
[ -n "$PKG" ] || { echo "kernel-driver-check: FAIL: cannot find a linux-image package"; exit 1; }
DEB=$(ls "$CACHE"/"${PKG}"_*.deb 2>/dev/null | head -1 || true)
if [ -z "$DEB" ]; then
  echo "downloading $PKG"
  (cd "$CACHE" && apt-get download -q "$PKG")
  DEB=$(ls "$CACHE"/"${PKG}"_*.deb | head -1)
fi
echo "kernel package: $(basename "$DEB") ($(du -h "$DEB" | cut -f1))"

WORK=$(mktemp -d /tmp/aoe-kcheck.XXXXXX)
NS=${AOE_KCHECK_NETNS:-aoekchk$$}
OWN_NS=1
[ -n "${AOE_KCHECK_NETNS:-}" ] && OWN_NS=0
TAP=aoetap0
BRIDGE_IF=${AOE_KCHECK_BRIDGE:-}
BRIDGE=aoekbr0
TARGET_NS=${AOE_KCHECK_TARGET_NETNS:-$NS}
TARGET_IF=${AOE_KCHECK_TARGET_IF:-$TAP}
IMG=/dev/shm/aoe-kcheck-$$.img
TPID=
cleanup() {
  if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then
    kill -TERM "$TPID" 2>/dev/null || true
    wait "$TPID" 2>/dev/null || true
  fi
  if [ "$OWN_NS" = 1 ]; then
    ip netns del "$NS" 2>/dev/null || true
  else
    ip -n "$NS" link del "$TAP" 2>/dev/null || true
    ip -n "$NS" link del "$BRIDGE" 2>/dev/null || true
  fi
  rm -f "$IMG"
  rm -rf "$WORK"
}
trap cleanup EXIT

dpkg -x "$DEB" "$WORK/k"
VMLINUZ=$(ls "$WORK"/k/boot/vmlinuz-* | head -1)
KVER=${VMLINUZ##*/vmlinuz-}
MODDIR=$WORK/k/lib/modules/$KVER/kernel
CONFIG=$WORK/k/boot/config-$KVER

# Fetch a module as a plain .ko (decompress if the kernel ships compressed modules).
getmod() { # relpath-without-.ko dest
  local base=$MODDIR/$1
  if [ -f "$base.ko" ]; then cp "$base.ko" "$2"
  elif [ -f "$base.ko.xz" ]; then xz -dc "$base.ko.xz" >"$2"
  elif [ -f "$base.ko.zst" ]; then zstd -qdc "$base.ko.zst" >"$2"
  elif [ -f "$base.ko.gz" ]; then gzip -dc "$base.ko.gz" >"$2"
  else echo "kernel-driver-check: FAIL: module $1 not in $PKG"; exit 1
  fi
}

# --- initramfs ---------------------------------------------------------------------
R=$WORK/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,mods}
cp /bin/busybox "$R/bin/busybox"
for a in sh mount ip insmod sleep cat ls dd md5sum echo sync poweroff dmesg grep head cut mkdir seq tr sed; do
  ln -s busybox "$R/bin/$a"
done
MODS=()
if ! grep -q '^CONFIG_ATA_OVER_ETH=y' "$CONFIG"; then getmod drivers/block/aoe/aoe "$R/mods/aoe.ko"; fi
# e1000 is what qemu emulates by default and it has no module dependencies.
if ! grep -q '^CONFIG_E1000=y' "$CONFIG"; then getmod drivers/net/ethernet/intel/e1000/e1000 "$R/mods/e1000.ko"; fi

cat >"$R/init" <<EOF
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 8 > /proc/sys/kernel/printk
say() { echo "AOE-CHECK \$*"; }
fail() { say "FAIL \$*"; dmesg | grep -i -E 'aoe|etherd' | sed 's/^/AOE-DMESG /' 2>/dev/null; poweroff -f; }
[ -f /mods/e1000.ko ] && insmod /mods/e1000.ko
i=0; while [ ! -e /sys/class/net/eth0 ] && [ \$i -lt 50 ]; do sleep 0.1; i=\$((i+1)); done
ip link set lo up
ip link set eth0 up || fail "no eth0"
say "eth0 \$(cat /sys/class/net/eth0/address) up"
[ -f /mods/aoe.ko ] && insmod /mods/aoe.ko aoe_iflist=eth0
DEV=/dev/etherd/e${SHELF}.${SLOT}
SYS="/sys/block/etherd!e${SHELF}.${SLOT}"
i=0
while [ ! -b "\$DEV" ] && [ \$i -lt 150 ]; do
  sleep 0.2; i=\$((i+1))
  # re-trigger discovery now and then
  [ \$((i % 10)) = 0 ] && [ -c /dev/etherd/discover ] && echo > /dev/etherd/discover
done
[ -b "\$DEV" ] || fail "discover: \$DEV never appeared"
say "discover ok dev=\$DEV size_sectors=\$(cat "\$SYS/size") state=\$(cat "\$SYS/state" 2>/dev/null) mac=\$(cat "\$SYS/mac" 2>/dev/null) netif=\$(cat "\$SYS/netif" 2>/dev/null) fwver=\$(cat "\$SYS/firmware-version" 2>/dev/null)"
ls -l /dev/etherd/ | sed 's/^/AOE-LS /'
PRE=\$(dd if=\$DEV bs=${BS} count=${READ_BLOCKS} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
say "preread md5=\$PRE"
dd if=/dev/urandom of=/tmp/pat bs=${BS} count=${WRITE_BLOCKS} 2>/dev/null || fail "urandom"
W=\$(md5sum /tmp/pat | cut -d' ' -f1)
T0=\$(cut -d' ' -f1 /proc/uptime)
dd if=/tmp/pat of=\$DEV bs=${BS} seek=${WRITE_OFF_BLOCKS} oflag=direct conv=fsync 2>/tmp/dd.err || fail "write: \$(cat /tmp/dd.err)"
sync
T1=\$(cut -d' ' -f1 /proc/uptime)
say "write ok md5=\$W"
echo 3 > /proc/sys/vm/drop_caches
T2=\$(cut -d' ' -f1 /proc/uptime)
RB=\$(dd if=\$DEV bs=${BS} skip=${WRITE_OFF_BLOCKS} count=${WRITE_BLOCKS} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
T3=\$(cut -d' ' -f1 /proc/uptime)
say "timing write \$T0 \$T1 read \$T2 \$T3"
if [ "\$RB" = "\$W" ]; then say "read ok md5=\$RB"; else say "FAIL read back md5=\$RB want \$W"; fi
dmesg | grep -i -E 'aoe|etherd' | sed 's/^/AOE-DMESG /'
say "done"
sync
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/initrd.gz")

# --- image -------------------------------------------------------------------------
truncate -s "${IMG_MIB}M" "$IMG"
dd if=/dev/urandom of="$IMG" bs="$BS" count="$READ_BLOCKS" conv=notrunc status=none
PRE_WANT=$(dd if="$IMG" bs="$BS" count="$READ_BLOCKS" status=none | md5sum | cut -d' ' -f1)

# --- namespace, tap, target, guest -------------------------------------------------
if [ "$OWN_NS" = 1 ]; then
  ip netns add "$NS"
  ip -n "$NS" link set lo up
fi
ip -n "$NS" tuntap add dev "$TAP" mode tap
ip -n "$NS" link set "$TAP" up
if [ -n "$BRIDGE_IF" ]; then
  ip -n "$NS" link add "$BRIDGE" type bridge
  ip -n "$NS" link set "$TAP" master "$BRIDGE"
  ip -n "$NS" link set "$BRIDGE_IF" master "$BRIDGE"
  ip -n "$NS" link set "$BRIDGE" up
fi
ip netns exec "$TARGET_NS" "$TARGET_BIN" "$SHELF" "$SLOT" "$TARGET_IF" "$IMG" >"$WORK/target.log" 2>&1 &
TPID=$!
sleep 0.5
kill -0 "$TPID" 2>/dev/null || { echo "kernel-driver-check: FAIL: aoe-target did not start:"; cat "$WORK/target.log"; exit 1; }

# KVM inside some nested hypervisors (e.g. Firecracker guests) hangs early in boot, so
# plain emulation (tcg) is the default; AOE_QEMU_ACCEL=kvm uses KVM where it works.
ACCEL=${AOE_QEMU_ACCEL:-tcg}
QTIMEOUT=${AOE_QEMU_TIMEOUT:-300}
echo "booting $KVER (qemu accel=$ACCEL, timeout ${QTIMEOUT}s)"
start=$(date +%s)
set +e
timeout "$QTIMEOUT" ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -m 512 -smp 1 \
  -display none -serial stdio -monitor none -no-reboot \
  -kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1" \
  -netdev tap,id=n0,ifname="$TAP",script=no,downscript=no -device e1000,netdev=n0 \
  </dev/null 2>&1 | tr -d '\r' | tee "$WORK/console.log" | grep -E '^(AOE-|\[ *[0-9.]+\] .*(aoe|etherd))'
rc=${PIPESTATUS[0]}
set -e
echo "guest finished in $(( $(date +%s) - start ))s (qemu status $rc)"

kill -TERM "$TPID" 2>/dev/null || true
wait "$TPID" 2>/dev/null || true
TPID=

log=$WORK/console.log
fails=()
grep -q '^AOE-CHECK discover ok' "$log" || fails+=("discover")
PRE_GOT=$(sed -n 's/^AOE-CHECK preread md5=//p' "$log")
[ "$PRE_GOT" = "$PRE_WANT" ] || fails+=("read of host data (guest md5 '${PRE_GOT}', image md5 ${PRE_WANT})")
W=$(sed -n 's/^AOE-CHECK write ok md5=//p' "$log")
[ -n "$W" ] || fails+=("write")
grep -q "^AOE-CHECK read ok md5=$W\$" "$log" || fails+=("read back")
if [ -n "$W" ]; then
  H=$(dd if="$IMG" bs="$BS" skip="$WRITE_OFF_BLOCKS" count="$WRITE_BLOCKS" status=none | md5sum | cut -d' ' -f1)
  [ "$H" = "$W" ] || fails+=("image file check (host md5 $H, guest wrote $W)")
fi
if [ ${#fails[@]} -gt 0 ]; then
  echo "kernel-driver-check: FAIL: ${fails[*]}"
  echo "--- last console lines ---"; tail -n 40 "$log"
  echo "--- aoe-target log ---"; cat "$WORK/target.log"
  exit 1
fi
timing=$(sed -n 's/^AOE-CHECK timing //p' "$log")
rates=$(echo "$timing" | awk -v mib="$WRITE_KIB" 'BEGIN { mib /= 1024 } { w = $3 - $2; r = $6 - $5; if (w <= 0) w = 0.01; if (r <= 0) r = 0.01;
  printf "write %.2f s (%.2f MB/s), read %.2f s (%.2f MB/s)", w, mib * 1.048576 / w, r, mib * 1.048576 / r }')
echo "kernel aoe driver ($KVER): discover ok, write ok, read ok ($WRITE_KIB KiB written at $WRITE_OFF_MIB MiB, $READ_KIB KiB of host data read; $rates)"
