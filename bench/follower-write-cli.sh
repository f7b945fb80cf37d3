#!/bin/bash
# A quick check of issue 11 item 3 with the CLI, as a person sees it: starts
# 3 `orc server`s on loopback (temp dir), then times 50 `create-cluster`
# calls through a follower and 50 at the leader (each a fresh CLI process).
#   bench/follower-write-cli.sh target/release/orc
# The control-plane bench measures the same in-process (p50/p99).
set -u
ORC=$1; D=$(mktemp -d); P=$((20000 + RANDOM % 20000))
export ORC_CREDENTIALS=none  # plain text (--insecure), as the recorded figures were taken
$ORC server --insecure --bootstrap --data-dir $D/s1 --listen 127.0.0.1:$P 2>$D/s1.log & A=$!
sleep 1.5
$ORC server --insecure --join 127.0.0.1:$P --data-dir $D/s2 --listen 127.0.0.1:$((P+1)) 2>$D/s2.log & B=$!
$ORC server --insecure --join 127.0.0.1:$P --data-dir $D/s3 --listen 127.0.0.1:$((P+2)) 2>$D/s3.log & C=$!
for i in $(seq 1 100); do n=$($ORC --endpoint 127.0.0.1:$P cluster status --output json 2>/dev/null | grep -c '"voter": true'); [ "$n" = 3 ] && break; sleep 0.2; done
LEADER=$($ORC --endpoint 127.0.0.1:$P cluster status --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leaderAddress"])')
F=127.0.0.1:$((P+1)); [ "$F" = "$LEADER" ] && F=127.0.0.1:$((P+2))
$ORC --endpoint $F create-cluster --cluster-name warm >/dev/null
s=$(date +%s.%N); for i in $(seq 1 50); do $ORC --endpoint $F create-cluster --cluster-name f$i >/dev/null; done; e=$(date +%s.%N)
echo "through follower $F: 50 writes $(python3 -c "print(round(($e-$s)*1000/50,1))") ms each"
s=$(date +%s.%N); for i in $(seq 1 50); do $ORC --endpoint $LEADER create-cluster --cluster-name l$i >/dev/null; done; e=$(date +%s.%N)
echo "at the leader $LEADER: 50 writes $(python3 -c "print(round(($e-$s)*1000/50,1))") ms each"
kill $A $B $C; wait 2>/dev/null; rm -rf $D
