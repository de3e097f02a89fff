#!/usr/bin/env bash
# Real Redis deployments on loopback for the tests, each in a directory of its own:
#
#   redis-topologies.sh cluster DIR P1 P2 P3 P4 P5 P6
#       three masters (P1-P3) with one replica each (P4-P6), made with
#       `redis-cli --cluster create`; prints its REDIS_URL once every replica is in sync.
#   redis-topologies.sh sentinel DIR MASTER REPLICA S1 S2 S3
#       a master, its replica and three Sentinels (quorum 2) watching it as `cqrs`;
#       prints its REDIS_URL once the Sentinels see the replica.
#   redis-topologies.sh restart DIR PORT
#       starts the server on PORT again as it was first started (after a kill).
#   redis-topologies.sh stop DIR
#       stops every server started in DIR.
#
# Failover is quick on purpose (a node is judged down after one second), so the failover
# tests take seconds. The printed URLs ask for one replica's acknowledgement of the writes
# the suite relies on (`replica_acks=1`), as a deployment of either kind should.
set -euo pipefail

die() { echo "redis-topologies: $*" >&2; exit 1; }

wait_for() { # SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out waiting for $what"
    sleep 0.1
  done
}

server() { # DIR PORT EXTRA-ARGS...
  local dir=$1 port=$2
  shift 2
  mkdir -p "$dir/$port"
  if (($#)); then printf '%q ' "$@" >"$dir/$port.args"; else : >"$dir/$port.args"; fi
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode no --daemonize yes \
    --pidfile "$dir/$port.pid" --logfile "$dir/$port.log" --dir "$dir/$port" \
    --save '' --appendonly no "$@"
  wait_for 10 "redis on $port" redis-cli -p "$port" ping
}

replicas_online() { # PORT COUNT
  [[ $(redis-cli -p "$1" info replication | grep -c 'state=online') -ge $2 ]]
}

cluster_ok() { redis-cli -p "$1" cluster info | grep -q 'cluster_state:ok'; }

case ${1:-} in
  cluster)
    (($# == 8)) || die "usage: $0 cluster DIR P1 P2 P3 P4 P5 P6"
    dir=$2
    shift 2
    ports=("$@")
    for port in "${ports[@]}"; do
      server "$dir" "$port" --cluster-enabled yes --cluster-node-timeout 1000 \
        --cluster-config-file "$dir/$port/nodes.conf"
    done
    nodes=()
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
      >"$dir/create.log" 2>&1 || die "cluster create failed: $(tail -5 "$dir/create.log")"
    for port in "${ports[@]}"; do wait_for 30 "cluster state on $port" cluster_ok "$port"; done
    for port in "${ports[@]}"; do
      if redis-cli -p "$port" role | head -1 | grep -q master; then
        wait_for 30 "the replica of $port" replicas_online "$port" 1
      fi
    done
    echo "redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}?replica_acks=1"
    ;;
  sentinel)
    (($# == 7)) || die "usage: $0 sentinel DIR MASTER REPLICA S1 S2 S3"
    dir=$2 master=$3 replica=$4
    shift 4
    server "$dir" "$master"
    server "$dir" "$replica" --replicaof 127.0.0.1 "$master"
    wait_for 30 "the replica of $master" replicas_online "$master" 1
    for port in "$@"; do
      mkdir -p "$dir/$port"
      cat >"$dir/$port/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile $dir/$port.pid
logfile $dir/$port.log
dir $dir/$port
sentinel monitor cqrs 127.0.0.1 $master 2
sentinel down-after-milliseconds cqrs 1000
sentinel failover-timeout cqrs 5000
sentinel parallel-syncs cqrs 1
EOF
      redis-server "$dir/$port/sentinel.conf" --sentinel
      wait_for 10 "sentinel on $port" redis-cli -p "$port" ping
    done
    for port in "$@"; do
      wait_for 30 "sentinel $port to see the replica" \
        bash -c "redis-cli -p $port sentinel replicas cqrs | grep -q $replica"
      wait_for 30 "sentinel $port to see the quorum" \
        bash -c "redis-cli -p $port sentinel ckquorum cqrs | grep -q OK"
    done
    hosts=()
    for port in "$@"; do hosts+=("127.0.0.1:$port"); done
    (IFS=,; echo "redis+sentinel://${hosts[*]}/cqrs?replica_acks=1")
    ;;
  restart)
    (($# == 3)) || die "usage: $0 restart DIR PORT"
    [[ -e $2/$3.args ]] || die "no server on $3 in $2"
    eval "server \"\$2\" \"\$3\" $(cat "$2/$3.args")"
    ;;
  stop)
    (($# == 2)) || die "usage: $0 stop DIR"
    for pidfile in "$2"/*.pid; do
      [[ -e $pidfile ]] || continue
      kill -9 "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    ;;
  *)
    die "usage: $0 cluster|sentinel|stop DIR …"
    ;;
esac
