# A single-node Apache Kafka 4 broker in KRaft mode (broker and controller in one
# process), for the tests: sourced by deploy/local/servers.sh, which defines the helpers.
#
# Listens on 127.0.0.1:$PAYSTREAM_KAFKA_PORT (default 9092; the controller on the next
# port), with the single-broker transaction settings that exactly-once needs, and keeps its
# KRaft store in $STATE_DIR/kafka/data, formatted once.

KAFKA_PORT="${PAYSTREAM_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="$((KAFKA_PORT + 1))"
KAFKA_HEAP="${PAYSTREAM_KAFKA_HEAP:-512m}"
KAFKA_START_SECONDS_MAX=120

kafka_java() {
    "$(java_bin)" -cp "$CACHE_DIR/kafka/lib/*" "$@"
}

# kafka_answers: true once the broker serves metadata (kcat -L), or, without kcat, accepts
# connections.
kafka_answers() {
    if command -v kcat >/dev/null; then
        kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 2 >/dev/null 2>&1
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null
    fi
}

kafka_write_config() {
    local dir="$1"
    cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# Topics are created by paystream (or the test) with the partitions it needs.
auto.create.topics.enable=false
# Tests start groups at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# Aborted and timed-out transactions are noticed quickly in crash tests.
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=134217728
PROPERTIES
    cat >"$dir/log4j2.properties" <<'LOG4J'
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = info
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
logger.txn.name = kafka.coordinator.transaction
logger.txn.level = info
LOG4J
}

start_kafka() {
    local dir="$STATE_DIR/kafka" started
    if running kafka kafka.Kafka && kafka_answers; then
        log "kafka is already running (pid $(cat "$dir/pid"))"
        echo "127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    fetch_jars kafka
    mkdir -p "$dir/data"
    kafka_write_config "$dir"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid)"
        kafka_java -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >&2 \
            || die "could not format the KRaft store in $dir/data"
    fi
    started="$(date +%s)"
    nohup "$(java_bin)" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dkafka.logs.dir="$dir" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$CACHE_DIR/kafka/lib/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    for _ in $(seq 1 "$KAFKA_START_SECONDS_MAX"); do
        if kafka_answers; then
            log "kafka answers on 127.0.0.1:$KAFKA_PORT after $(($(date +%s) - started)) s (pid $(cat "$dir/pid"), logs in $dir)"
            echo "127.0.0.1:$KAFKA_PORT"
            return 0
        fi
        if ! running kafka kafka.Kafka; then
            tail -n 30 "$dir/stdout.log" "$dir/server.log" >&2 2>/dev/null || true
            die "kafka exited during start-up (logs in $dir)"
        fi
        sleep 1
    done
    tail -n 30 "$dir/server.log" >&2 2>/dev/null || true
    die "kafka did not answer on 127.0.0.1:$KAFKA_PORT within ${KAFKA_START_SECONDS_MAX}s (logs in $dir)"
}

stop_kafka() {
    stop_pid kafka kafka.Kafka 60
}
