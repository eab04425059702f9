# A single-node Apache Cassandra 5.0 for the tests: sourced by deploy/local/servers.sh,
# which defines the helpers (fetch_jars, running, stop_pid, log, die, java_bin) and
# $HERE, $CACHE_DIR and $STATE_DIR.
#
# Serves CQL on 127.0.0.1:$PAYSTREAM_CASSANDRA_PORT (default 9042) without authentication,
# gossips with itself on 127.0.0.1:$PAYSTREAM_CASSANDRA_STORAGE_PORT (default 7000), and
# keeps its data, commit log, log (cassandra.log) and pid in $STATE_DIR/cassandra, where
# they survive stop and start. JMX is off. The heap is $PAYSTREAM_CASSANDRA_HEAP (default
# 512m).

CASSANDRA_PORT="${PAYSTREAM_CASSANDRA_PORT:-9042}"
CASSANDRA_STORAGE_PORT="${PAYSTREAM_CASSANDRA_STORAGE_PORT:-7000}"
CASSANDRA_HEAP="${PAYSTREAM_CASSANDRA_HEAP:-512m}"
CASSANDRA_START_SECONDS_MAX=180
# On SIGTERM Cassandra drains: it flushes every memtable before exiting.
CASSANDRA_STOP_SECONDS_MAX=120
# cassandra.log is moved to cassandra.log.1 at start once it is larger than this.
CASSANDRA_LOG_BYTES_MAX=$((20 * 1024 * 1024))

# cassandra_answers: true once the node answers a CQL query (or, without python3, accepts
# connections and has logged that it serves CQL clients).
cassandra_answers() {
    if command -v python3 >/dev/null; then
        python3 "$HERE/cassandra/cql_ping.py" 127.0.0.1 "$CASSANDRA_PORT" 5 >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$CASSANDRA_PORT") 2>/dev/null \
            && grep -q "Starting listening for CQL clients" "$STATE_DIR/cassandra/cassandra.log"
    fi
}

# cassandra_port_taken: true if something already accepts connections on the CQL port.
cassandra_port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$CASSANDRA_PORT") 2>/dev/null
}

# cassandra_write_config DIR: DIR/cassandra.yaml from the template, for this node's ports
# and directories.
cassandra_write_config() {
    local dir="$1" yaml
    yaml="$(<"$HERE/cassandra/cassandra.yaml.in")"
    yaml="${yaml//@STATE_DIR@/"$dir"}"
    yaml="${yaml//@NATIVE_PORT@/"$CASSANDRA_PORT"}"
    yaml="${yaml//@STORAGE_PORT@/"$CASSANDRA_STORAGE_PORT"}"
    printf '%s\n' "$yaml" >"$dir/cassandra.yaml"
}

# cassandra_jvm_opts DIR LIB: the JVM options, one per line. They are those of Cassandra's
# conf/jvm-server.options and conf/jvm17-server.options (which the Maven artifact does not
# ship), with a small fixed heap and settings for a quick single-node start.
cassandra_jvm_opts() {
    local dir="$1" lib="$2" jamm
    grep -v '^#' <<OPTIONS
-Xms$CASSANDRA_HEAP
-Xmx$CASSANDRA_HEAP
-Xss256k
# The client compiler only: a short-lived test node on few cores starts faster and runs a
# test workload no slower without C2 compiling in the background.
-XX:TieredStopAtLevel=1
-XX:+UseG1GC
-XX:+ParallelRefProcEnabled
-XX:MaxTenuringThreshold=1
-XX:G1RSetUpdatingPauseTimePercent=5
-XX:MaxGCPauseMillis=300
-XX:+PerfDisableSharedMem
-XX:ErrorFile=$dir/hs_err_pid%p.log
# Exit on OutOfMemoryError rather than go on in a state that may corrupt data (Cassandra warns otherwise).
-XX:+ExitOnOutOfMemoryError
-ea
-da:net.openhft...
-Djava.net.preferIPv4Stack=true
# Java 17 module access Cassandra 5.0 needs.
-Djdk.attach.allowAttachSelf=true
--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED
--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED
--add-exports=java.sql/java.sql=ALL-UNNAMED
--add-exports=java.base/java.lang.ref=ALL-UNNAMED
--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED
--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED
--add-opens=java.base/java.lang.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED
--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED
--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED
--add-opens=java.base/jdk.internal.math=ALL-UNNAMED
--add-opens=java.base/jdk.internal.module=ALL-UNNAMED
--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED
--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED
--add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/java.io=ALL-UNNAMED
--add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
--add-opens=java.base/java.lang=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED
--add-opens=java.base/java.nio=ALL-UNNAMED
-Dio.netty.tryReflectionSetAccessible=true
-Dio.netty.allocator.useCacheForAllThreads=true
-Dio.netty.allocator.maxOrder=11
# Keeps standard output and error open (they go to cassandra.log).
-Dcassandra-foreground=yes
-Dcassandra.config=file://$dir/cassandra.yaml
-Dcassandra.storagedir=$dir
-Dcassandra.logdir=$dir
-Dcassandra.triggers_dir=$dir/triggers
-Dlogback.configurationFile=$HERE/cassandra/logback.xml
# One node: nothing to wait for in gossip or the ring, nor before creating the default
# role, nor after announcing shutdown. No cassandra.jmx.*.port: Cassandra starts no JMX
# connector.
-Dcassandra.skip_wait_for_gossip_to_settle=0
-Dcassandra.ring_delay_ms=1000
-Dcassandra.superuser_setup_delay_ms=0
-Dcassandra.shutdown_announce_in_ms=0
OPTIONS
    # Cassandra measures its objects with the jamm agent.
    jamm="$(compgen -G "$lib/jamm-*.jar" | head -n 1 || true)"
    [[ -z "$jamm" ]] || echo "-javaagent:$jamm"
}

start_cassandra() {
    local dir="$STATE_DIR/cassandra" lib="$CACHE_DIR/cassandra/lib" pid started waited=0
    local -a opts
    local port
    for port in "$CASSANDRA_PORT" "$CASSANDRA_STORAGE_PORT"; do
        [[ "$port" =~ ^[1-9][0-9]*$ ]] && ((port <= 65535)) || die "cassandra: invalid port '$port'"
    done
    if running cassandra CassandraDaemon; then
        pid="$(cat "$dir/pid")"
        log "cassandra is already running (pid $pid)"
    else
        fetch_jars cassandra
        if cassandra_port_taken; then
            die "127.0.0.1:$CASSANDRA_PORT is already in use by a process this script did not start"
        fi
        mkdir -p "$dir"/{data,commitlog,hints,saved_caches,cdc_raw,triggers}
        cassandra_write_config "$dir"
        mapfile -t opts < <(cassandra_jvm_opts "$dir" "$lib")
        if [[ -f "$dir/cassandra.log" ]] && (($(stat -c %s "$dir/cassandra.log") > CASSANDRA_LOG_BYTES_MAX)); then
            mv -f "$dir/cassandra.log" "$dir/cassandra.log.1"
        fi
        echo "=== servers.sh: starting Cassandra on 127.0.0.1:$CASSANDRA_PORT at $(date -Is)" >>"$dir/cassandra.log"
        log "starting cassandra on 127.0.0.1:$CASSANDRA_PORT (log: $dir/cassandra.log)"
        # From the state directory, so that anything the JVM writes to its working
        # directory lands there; MALLOC_ARENA_MAX keeps glibc's per-thread arenas few.
        # Cassandra mlockall()s its memory at start, which would keep the whole heap
        # resident: a 64 KiB RLIMIT_MEMLOCK makes that fail (Cassandra goes on with a
        # warning), and for root, which may lock regardless, setpriv drops CAP_IPC_LOCK.
        local -a unlock=()
        if ((EUID == 0)) && command -v setpriv >/dev/null; then unlock=(setpriv --bounding-set=-ipc_lock); fi
        (
            cd "$dir"
            ulimit -l 64 2>/dev/null || true
            MALLOC_ARENA_MAX=4 exec nohup "${unlock[@]}" "$(java_bin)" "${opts[@]}" -cp "$lib/*" \
                org.apache.cassandra.service.CassandraDaemon >>"$dir/cassandra.log" 2>&1 </dev/null
        ) &
        pid=$!
        echo "$pid" >"$dir/pid"
    fi
    started="$SECONDS"
    until cassandra_answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/pid"
            tail -n 40 "$dir/cassandra.log" >&2 || true
            die "cassandra exited while starting (log above: $dir/cassandra.log)"
        fi
        waited=$((SECONDS - started))
        if ((waited >= CASSANDRA_START_SECONDS_MAX)); then
            tail -n 40 "$dir/cassandra.log" >&2 || true
            die "cassandra (pid $pid) did not answer CQL within ${CASSANDRA_START_SECONDS_MAX}s (log above: $dir/cassandra.log); stop it with: $0 stop cassandra"
        fi
        sleep 1
    done
    log "cassandra answers CQL (pid $pid, after $((SECONDS - started))s)"
    echo "127.0.0.1:$CASSANDRA_PORT"
}

stop_cassandra() {
    stop_pid cassandra CassandraDaemon "$CASSANDRA_STOP_SECONDS_MAX"
}
