#!/usr/bin/env bash
# Starts and stops the servers paystream's tests run against that Debian does not package:
# a single-node Apache Kafka (KRaft) and a single-node Apache Cassandra, both fetched from
# Maven Central with Maven and run on this machine's Java 17, on 127.0.0.1.
#
#   deploy/local/servers.sh start kafka       # prints the bootstrap address last
#   deploy/local/servers.sh stop kafka
#   deploy/local/servers.sh start cassandra   # prints the CQL address last
#   deploy/local/servers.sh stop cassandra
#   deploy/local/servers.sh status
#
# `start` is idempotent: a server this script started and that still answers is reused.
# `stop` ends only the process this script started (its pid file), never another one.
# Jars are cached in $PAYSTREAM_SERVERS_CACHE (default ~/.cache/paystream/servers); each
# server's data, logs and pid live in $PAYSTREAM_SERVERS_DIR/<server> (default
# ~/.local/state/paystream/servers).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${PAYSTREAM_SERVERS_CACHE:-$HOME/.cache/paystream/servers}"
STATE_DIR="${PAYSTREAM_SERVERS_DIR:-$HOME/.local/state/paystream/servers}"

log() { echo "servers.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# fetch_jars NAME: copies the pom's dependencies (and theirs) to $CACHE_DIR/NAME/lib once.
fetch_jars() {
    local name="$1" lib="$CACHE_DIR/$1/lib" pom="$HERE/$1/pom.xml"
    local stamp="$lib/.pom.sha256" sum
    sum="$(sha256sum "$pom" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then return; fi
    command -v mvn >/dev/null || die "mvn is required to fetch $name (Debian: apt-get install maven)"
    log "fetching $name from Maven Central into $lib"
    rm -rf "$lib"
    mkdir -p "$lib"
    mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib" >&2 \
        || die "mvn could not fetch $name's jars (see its output above)"
    echo "$sum" >"$stamp"
}

# running NAME: true if the pid file names a live process whose command line matches.
running() {
    local pidfile="$STATE_DIR/$1/pid" pattern="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pattern"
}

# stop_pid NAME PATTERN SECONDS: SIGTERM, then SIGKILL after SECONDS, the process in NAME's pid file.
stop_pid() {
    local name="$1" pattern="$2" seconds="$3" pidfile="$STATE_DIR/$1/pid" pid
    if ! running "$name" "$pattern"; then
        log "$name is not running (no live process in $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    for _ in $(seq 1 "$seconds"); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) did not stop in ${seconds}s; killing it"
        kill -KILL "$pid" || true
        sleep 1
    fi
    rm -f "$pidfile"
    log "$name stopped"
}

# java_bin: the java to run servers with ($JAVA_HOME's if set).
java_bin() { echo "${JAVA_HOME:+$JAVA_HOME/bin/}java"; }

usage() { die "usage: $0 start|stop kafka|cassandra, or $0 status"; }

case "${1:-}" in
    start | stop)
        [[ $# -eq 2 ]] || usage
        case "$2" in
            kafka | cassandra)
                # Each server's start_NAME and stop_NAME live beside its pom.
                # shellcheck source=/dev/null
                source "$HERE/$2/server.sh"
                "${1}_$2"
                ;;
            *) usage ;;
        esac
        ;;
    status)
        running kafka kafka.Kafka && echo "kafka: running (pid $(cat "$STATE_DIR/kafka/pid"))" || echo "kafka: stopped"
        running cassandra CassandraDaemon && echo "cassandra: running (pid $(cat "$STATE_DIR/cassandra/pid"))" \
            || echo "cassandra: stopped"
        ;;
    *) usage ;;
esac
