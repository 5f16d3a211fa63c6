#!/bin/bash
# Access rules against a read-only and a denied initiator (namespaces from ns.sh).
B=/work/wt-review2/target/debug
M=$(ip netns exec rvB cat /sys/class/net/rvB0/address)
for rule in "deny $M" "read-only $M"; do
rm -rf /tmp/rv_state
cat > /tmp/rv6.toml <<T
state_dir = "/tmp/rv_state"
[[export]]
shelf = 5
slot = 0
interfaces = ["rvA0"]
file = "/tmp/rv5.img"
rules = ["$rule", "allow *"]
T
ip netns exec rvA timeout -k 2 40 $B/aoe-target --config /tmp/rv6.toml >/tmp/rv6.log 2>&1 </dev/null &
TP=$!
sleep 1.5
echo "=== rule: $rule"
A="ip netns exec rvB timeout -k 2 8 $B/aoe"
echo "- discover:"; $A discover </dev/null 2>&1 | head -5
echo "- identify:"; $A identify --dead-timeout 2 e5.0 </dev/null 2>&1 | head -2
echo "- write:"; echo hi | $A write --dead-timeout 2 e5.0 - 2>&1 | head -2
echo "- config set:"; $A config --dead-timeout 2 e5.0 set x </dev/null 2>&1 | head -2
echo "- mask add:"; $A mask --dead-timeout 2 e5.0 add 02:00:00:00:00:09 </dev/null 2>&1 | head -2
echo "- reserve set:"; $A reserve --dead-timeout 2 e5.0 set 02:00:00:00:00:09 </dev/null 2>&1 | head -2
echo "- read:"; $A read --dead-timeout 2 --length 512 e5.0 /tmp/rv6.out </dev/null 2>&1 | head -2
kill $TP; wait $TP
done
