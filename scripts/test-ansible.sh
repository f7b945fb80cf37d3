#!/usr/bin/env bash
# Runs the Ansible playbooks for real against three hosts standing in for
# Raspberry Pis: privileged containers from an image built here from a
# debootstrapped Debian bookworm root file system, with systemd as PID 1 and
# reached through Ansible's community.docker.docker connection plugin. Each
# host gets Docker Engine from Debian's packages (its own dockerd, inside the
# container), an orc server and an orc agent, as a small Pi cluster would.
#
# It proves that:
#   1. site.yml on bare hosts brings up a healthy cluster (3 healthy voters,
#      3 connected agents) and that cluster runs a task;
#   2. a second site.yml run reports changed=0 on every host;
#   3. upgrade.yml restarts the servers one at a time with the cluster healthy
#      in between (forced restart, same binary);
#   4. remove.yml leaves no orc unit, binary, data dir, process or container.
# It does not cover: the memory-cgroup step (the hosts are not Pis: the role
# reads /proc/device-tree/model and skips), the reboot it triggers, ARM
# binaries (the hosts are x86_64; the aarch64/armv7 binaries are checked
# under qemu by scripts/smoke-arm.sh), ufw (not installed on the hosts).
#
# Needs root, Docker, debootstrap (installed when missing) and Python's pip;
# ansible and ansible-lint come from PyPI. Takes about 10 minutes the first
# time (debootstrap, then apt inside each host), about 5 after.
#
# Usage: scripts/test-ansible.sh       (ORC_BINARY=path to skip building)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

work=${ORC_ANSIBLE_WORK:-/var/tmp/orc-ansible-test}
image=orc-test/pi-host:bookworm
network=orc-pi-net
hosts=(pi1 pi2 pi3)
label=orc-test=ansible

log() { printf '\n== %s\n' "$*" >&2; }

command -v ansible-playbook >/dev/null && command -v ansible-lint >/dev/null \
  || pip install -q ansible ansible-lint
command -v debootstrap >/dev/null \
  || DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 debootstrap

log "ansible-lint"
(cd ansible && ansible-lint --offline -q site.yml upgrade.yml remove.yml)

# The x86_64 binary the playbooks copy (dist/orc-x86_64-linux).
if [ -n "${ORC_BINARY:-}" ]; then
  mkdir -p dist && cp "$ORC_BINARY" dist/orc-x86_64-linux
elif [ ! -x dist/orc-x86_64-linux ]; then
  scripts/build-release.sh x86_64
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
  log "building $image from a debootstrapped Debian bookworm"
  mkdir -p "$work"
  if [ ! -x "$work/rootfs/sbin/init" ]; then
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,dbus,python3,iproute2,procps,ca-certificates,sudo \
      bookworm "$work/rootfs" http://deb.debian.org/debian
  fi
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$work/rootfs" -c . | docker import \
    --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' - "$image" >/dev/null
fi

cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=$label")
  [ -z "$ids" ] || docker rm -fv $ids >/dev/null
  docker network rm "$network" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

log "starting ${hosts[*]} (systemd as PID 1)"
docker network create --label "$label" "$network" >/dev/null
for h in "${hosts[@]}"; do
  # /var/lib/docker on a volume: the inner dockerd cannot put overlay2 on
  # the container's own overlay. Every capability but CAP_SYS_RESOURCE
  # rather than --privileged: this machine's own bounding set lacks it.
  docker run -d --name "orc-$h" --hostname "$h" --network "$network" --network-alias "$h" \
    --label "$label" --cgroupns=host \
    --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
    --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
    -v /var/lib/docker "$image" >/dev/null
done
for h in "${hosts[@]}"; do
  for _ in $(seq 100); do
    state=$(docker exec "orc-$h" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.3
  done
  echo "$h: systemd $state" >&2
done

inventory="$work/inventory.yml"
mkdir -p "$work"
cat > "$inventory" <<INV
all:
  vars:
    ansible_connection: community.docker.docker
    ansible_python_interpreter: /usr/bin/python3
  children:
    servers:
      hosts:
        pi1: {ansible_host: orc-pi1}
        pi2: {ansible_host: orc-pi2}
        pi3: {ansible_host: orc-pi3}
    agents:
      hosts:
        pi1:
        pi2:
        pi3:
INV

run() {
  local playbook=$1 out=$2; shift 2
  (cd ansible && ANSIBLE_FORCE_COLOR=0 ansible-playbook -i "$inventory" "$playbook" "$@") | tee "$out"
  grep -q 'failed=0' "$out"
}
recap_changed() { awk '/PLAY RECAP/{r=1} r && /changed=/{for(i=1;i<=NF;i++) if($i ~ /^changed=/){split($i,a,"="); s+=a[2]}} END{print s+0}' "$1"; }

log "first run: site.yml on bare hosts"
t0=$(date +%s)
run site.yml "$work/run1.txt"
echo "first run: $(( $(date +%s) - t0 )) s, changed=$(recap_changed "$work/run1.txt")" >&2

log "the cluster is healthy and runs a task"
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi2 orc --endpoint pi1:7400 cluster status
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi1 orc --endpoint pi1:7400 --output json cluster status \
  | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"]; assert len(m)==3 and all(x["healthy"] and x["voter"] for x in m), m; print("3 healthy voters")'
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi1 orc --endpoint pi1:7400 --output json describe-container-instances \
  | python3 -c 'import json,sys; i=json.load(sys.stdin)["containerInstances"]; c=[x for x in i if x["agentConnected"]]; assert len(c)==3, i; print("3 connected agents")'
# A task from an image built on pi1's own Docker (no image can be pulled).
docker exec orc-pi1 sh -c 'mkdir -p /tmp/bb && cp /bin/busybox /tmp/bb/ 2>/dev/null; true'
busybox=$(command -v busybox || echo /bin/busybox)
for h in "${hosts[@]}"; do
  docker cp "$busybox" "orc-$h:/tmp/busybox" >/dev/null
  docker exec "orc-$h" sh -c 'cd /tmp && mkdir -p bbroot/bin && cp busybox bbroot/bin/ && ln -sf busybox bbroot/bin/sh && tar -C bbroot -c . | docker import --change "CMD [\"/bin/sh\"]" - orc-test/busybox:1 >/dev/null'
done
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi1 orc --endpoint pi1:7400 register-task-definition --family hello \
  --container-definitions '[{"name":"hello","image":"orc-test/busybox:1","memory":16,"command":["/bin/busybox","sleep","600"]}]' >/dev/null
task=$(docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi1 orc --endpoint pi1:7400 --output json run-task --task-definition hello \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"][0]["taskArn"])')
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi1 orc --endpoint pi1:7400 --timeout 180 wait tasks-running --tasks "$task"
echo "task $task is RUNNING" >&2

log "second run: site.yml again must change nothing"
run site.yml "$work/run2.txt"
changed=$(recap_changed "$work/run2.txt")
echo "second run: changed=$changed" >&2
[ "$changed" = 0 ] || { echo "the second run changed $changed things" >&2; exit 1; }

log "rolling upgrade: upgrade.yml, one server at a time"
run upgrade.yml "$work/upgrade.txt" -e orc_force_restart=true
docker exec -e ORC_CREDENTIALS=/var/lib/orc/server/tls/server.json orc-pi3 orc --endpoint pi3:7400 cluster status

log "removal: remove.yml"
run remove.yml "$work/remove.txt"
left=0
for h in "${hosts[@]}"; do
  found=$(docker exec "orc-$h" sh -c '
    ls -d /usr/local/bin/orc /var/lib/orc /etc/orc /etc/systemd/system/orc-*.service /etc/docker/daemon.json 2>/dev/null
    pgrep -a orc
    docker ps -aq --filter label=orc.managed
    docker network ls -q --filter label=orc.managed' || true)
  if [ -n "$found" ]; then
    echo "$h still has:" >&2; echo "$found" >&2; left=1
  fi
done
[ "$left" = 0 ] || exit 1
echo "remove.yml left nothing of orc on ${hosts[*]}" >&2
log "all checks passed"
