#!/bin/bash
# A FIFO (or anything that blocks on open) as an export's state file: aoe-target hangs at
# start-up and SIGTERM does not stop it (exit 137 = needed the SIGKILL of timeout -k).
B=/work/wt-review2/target/debug
truncate -s 16M /tmp/rv5.img
rm -rf /tmp/rv_state; mkdir /tmp/rv_state; mkfifo /tmp/rv_state/e5.0.toml
cat > /tmp/rv5.toml <<T
state_dir = "/tmp/rv_state"
[[export]]
shelf = 5
slot = 0
interfaces = ["rvA0"]
file = "/tmp/rv5.img"
T
S=$(date +%s)
ip netns exec rvA timeout -k 3 5 $B/aoe-target --config /tmp/rv5.toml </dev/null >/dev/null 2>&1
echo "rc=$? after $(( $(date +%s)-S ))s (expected: one line, exit 1; 124: stopped by SIGTERM; 137: needed SIGKILL)"
rm -rf /tmp/rv_state
