#!/bin/bash
# Two exports over one file: overlapping windows must be refused, disjoint ones accepted.
# Also the same file reached through a loop device (not detected?).
B=/work/wt-review2/target/debug
truncate -s 16M /tmp/rv7.img
ln -sf /tmp/rv7.img /tmp/rv7.link
try() { # name file1 off1 len1 file2 off2 len2
cat > /tmp/rv7.toml <<T
[[export]]
shelf = 7
slot = 0
interfaces = ["rvA0"]
file = "$2"
offset = $3
$( [ -n "$4" ] && echo "length = $4" )
[[export]]
shelf = 7
slot = 1
interfaces = ["rvA0"]
file = "$5"
offset = $6
$( [ -n "$7" ] && echo "length = $7" )
T
out=$(ip netns exec rvA timeout -k 1 3 $B/aoe-target --check --config /tmp/rv7.toml 2>&1 </dev/null); echo "$1: rc=$? $out" | head -2
}
try "disjoint adjacent" /tmp/rv7.img 0 100 /tmp/rv7.img 100 ""
try "overlap by one sector" /tmp/rv7.img 0 101 /tmp/rv7.img 100 ""
try "same file via symlink" /tmp/rv7.img 0 "" /tmp/rv7.link 0 ""
L=$(losetup -f --show /tmp/rv7.img)
try "file and loop device of it" /tmp/rv7.img 0 "" $L 0 ""
losetup -d $L
try "huge offset" /tmp/rv7.img 18446744073709551615 1 /tmp/rv7.img 0 ""
try "huge length" /tmp/rv7.img 1 18446744073709551615 /tmp/rv7.img 0 ""
