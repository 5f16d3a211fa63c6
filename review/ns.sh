#!/bin/bash
# Namespaces rvA (target) and rvB (initiator) joined by a veth pair; target serving IMG.
# usage: ns.sh up IMG [target args...] | ns.sh down
set -u
B=/work/wt-review2/target/debug
case "$1" in
up)
  IMG=$2; shift 2
  ip netns add rvA; ip netns add rvB
  ip link add rvA0 type veth peer name rvB0
  ip link set rvA0 netns rvA; ip link set rvB0 netns rvB
  ip -n rvA link set rvA0 mtu 9000 up; ip -n rvB link set rvB0 mtu 9000 up
  ip -n rvA link set lo up; ip -n rvB link set lo up
  ip netns exec rvA timeout 1200 $B/aoe-target "$@" 1 0 rvA0 "$IMG" >/tmp/rv_target.log 2>&1 &
  echo $! > /tmp/rv_target.pid
  sleep 1; cat /tmp/rv_target.log
  ;;
down)
  kill $(cat /tmp/rv_target.pid) 2>/dev/null
  ip netns del rvA 2>/dev/null; ip netns del rvB 2>/dev/null
  ;;
esac
