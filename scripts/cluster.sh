#!/usr/bin/env bash
# A Dragonfly P2P cluster on one machine, for trying dfnydus: Redis, the real Dragonfly scheduler
# (bin/scheduler, d7y.io/dragonfly/v2 v2.5.1), a docker-registry, one seed peer and N dfnydus
# daemons (each its own cache, control socket and ports), a sample image converted to nydus, and
# the image mounted on every peer. State lives in $DIR (default /var/tmp/dfnydus-cluster).
#
#   scripts/cluster.sh up [N]   start it (N peers, default 3) and read the image on every peer
#   scripts/cluster.sh down     stop everything and remove $DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DIR:-/var/tmp/dfnydus-cluster}
bin=$PWD/bin/dfnydus

down() {
  [ -d "$DIR" ] || return 0
  for s in "$DIR"/peer*/ctl.sock "$DIR"/seed/ctl.sock; do
    [ -S "$s" ] || continue
    d=$(dirname "$s")
    [ -f "$d/pid" ] && kill "$(cat "$d/pid")" 2>/dev/null || true
  done
  sleep 1
  for p in "$DIR"/*.pid "$DIR"/*/pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
  done
  sleep 1
  for m in "$DIR"/peer*/mnt "$DIR"/seed/mnt; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
  done
  rm -rf "$DIR"
}

wait_for() { # wait_for CMD... : up to 30 s
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for: $*" >&2; return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

up() {
  local n=${1:-3}
  down
  mkdir -p "$DIR"
  # The scheduler refuses to preheat from loopback registries: use the host's first address.
  local ip; ip=$(hostname -I 2>/dev/null | awk '{print $1}'); ip=${ip:-127.0.0.1}
  local rport sport rdport; rport=$(free_port); sport=$(free_port); rdport=$(free_port)

  echo "== redis on 127.0.0.1:$rdport (the scheduler's preheat jobs)"
  redis-server --bind 127.0.0.1 --port "$rdport" --save "" --appendonly no >"$DIR/redis.log" 2>&1 & echo $! >"$DIR/redis.pid"
  wait_for redis-cli -p "$rdport" ping

  echo "== Dragonfly scheduler on $ip:$sport"
  mkdir -p "$DIR/scheduler"
  cat >"$DIR/scheduler/scheduler.yaml" <<YML
server: {advertiseIP: $ip, advertisePort: $sport, listenIP: $ip, port: $sport, host: dfnydus-cluster, logDir: $DIR/scheduler/log, pluginDir: $DIR/scheduler/plugins}
scheduler: {retryInterval: 100ms}
database: {redis: {addrs: ["127.0.0.1:$rdport"]}}
job: {enable: true}
metrics: {enable: false}
YML
  bin/scheduler --config "$DIR/scheduler/scheduler.yaml" --dynconfig "$DIR/scheduler/dynconfig.yaml" --console >"$DIR/scheduler.log" 2>&1 &
  echo $! >"$DIR/scheduler.pid"
  sleep 2

  echo "== registry on $ip:$rport"
  cat >"$DIR/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $DIR/registry}}
http: {addr: $ip:$rport}
YML
  docker-registry serve "$DIR/registry.yml" >"$DIR/registry.log" 2>&1 & echo $! >"$DIR/registry.pid"
  wait_for curl -sf "http://$ip:$rport/v2/"

  local reg=$ip:$rport src=${IMAGE_DIR:-$(go env GOROOT)}
  echo "== sample image: $src, converted to nydus"
  umoci init --layout "$DIR/oci" && umoci new --image "$DIR/oci:img"
  tar --numeric-owner -C "$src" -cf "$DIR/img.tar" . && umoci raw add-layer --image "$DIR/oci:img" "$DIR/img.tar" && rm "$DIR/img.tar"
  skopeo copy --quiet --dest-tls-verify=false "oci:$DIR/oci:img" "docker://$reg/sample:v1"
  $bin convert --log-level warn --plain-http --work-dir "$DIR/convert" "$reg/sample:v1" "$reg/sample:nydus"

  start_peer() { # start_peer NAME UPLOADPORT SEED
    local d=$DIR/$1
    mkdir -p "$d/mnt"
    cat >"$d/dfnydus.yaml" <<YML
cacheDir: $d/cache
controlSocket: $d/ctl.sock
prefetch: {mode: off}
registry: {plainHTTP: true}
scheduler:
  addrs: ["$ip:$sport"]
  seed: $3
  advertiseIP: $ip
  hostname: $1
  uploadPort: $2
  piecePort: $(($2 + 5))
YML
    $bin daemon --config "$d/dfnydus.yaml" >"$d/daemon.log" 2>&1 & echo $! >"$d/pid"
    wait_for test -S "$d/ctl.sock"
  }
  echo "== seed peer and $n peers (dfnydus daemon), each with its own cache and ports"
  start_peer seed 14000 true
  for i in $(seq "$n"); do start_peer "peer$i" $((14000 + 10 * i)) false; done

  echo "== mounting $reg/sample:nydus on every peer and reading all of it, one peer after another"
  for i in $(seq "$n"); do
    local d=$DIR/peer$i
    $bin mount --daemon-socket "$d/ctl.sock" --plain-http "$reg/sample:nydus" "$d/mnt" >/dev/null
    local t0 t1; t0=$(date +%s.%N)
    find "$d/mnt" -type f -print0 | xargs -0 cat >/dev/null
    t1=$(date +%s.%N)
    printf '   peer%d read the image in %.2f s: ' "$i" "$(echo "$t1 - $t0" | bc)"
    curl -s --unix-socket "$(ls "$d"/cache/run/*.sock | head -1)" http://peer/metrics |
      awk '/^dfnydus_p2p_piece_bytes_total/ {split($1,a,"\""); printf "%s %.1f MB  ", a[2], $2/1e6} END {print ""}'
  done
  cat <<TXT
== the cluster is up ($DIR)
   scheduler $ip:$sport, registry $reg, control sockets $DIR/{seed,peer1..peer$n}/ctl.sock
   try:  $bin preheat --daemon-socket $DIR/seed/ctl.sock --plain-http $reg/sample:nydus
         $bin list --daemon-socket $DIR/peer1/ctl.sock
   stop: scripts/cluster.sh down   (or make cluster-down)
TXT
}

case ${1:-up} in
  up) shift || true; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up [N] | down" >&2; exit 2 ;;
esac
