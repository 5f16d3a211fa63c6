#!/usr/bin/env bash
# Runs the whole test suite. As root it first installs the real peers the integration
# tests drive (vblade, aoetools, tshark, iproute2; the NBD tools libnbd-bin, nbdkit and
# qemu-utils; fuse3, e2fsprogs, fdisk, mount and util-linux for the aoe attach tests) and
# requires those tests to run.
#
#   sudo scripts/test.sh            # everything, nothing skipped
#   scripts/test.sh                 # unprivileged: namespace tests print SKIP lines
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  need=()
  for tool in vblade:vblade aoeping:aoetools tshark:tshark ip:iproute2 kill:procps \
      nbdinfo:libnbd-bin nbdkit:nbdkit qemu-img:qemu-utils \
      fusermount3:fuse3 mkfs.ext4:e2fsprogs e2fsck:e2fsprogs sfdisk:fdisk losetup:mount \
      nsenter:util-linux setpriv:util-linux unshare:util-linux blockdev:util-linux curl:curl; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
  # A skipped privileged test is a failure here.
  export AOE_REQUIRE_NETNS=1 AOE_REQUIRE_PEERS=1
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
