//! What the tests of every crate share about the servers they run against.
//!
//! Apache Kafka and Apache Cassandra are not Debian packages: `deploy/local/servers.sh`
//! fetches them from Maven Central and runs one node of each on 127.0.0.1. A test asks
//! for a server here; it gets the address in `PAYSTREAM_TEST_KAFKA_BROKERS` or
//! `SCYLLA_NODES` when set (CI starts the servers once, before the tests), and otherwise
//! starts the server through the same script (which reuses one already running). A server
//! that cannot be started fails the test with the script's output: no test is skipped.
//!
//! Tests share one broker and one CQL node, so each names its topics, groups and
//! keyspaces with [`unique_name`].

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The repository's `deploy/local/servers.sh`.
pub fn servers_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/servers.sh")
}

/// `host:port` of the test broker: `PAYSTREAM_TEST_KAFKA_BROKERS`, or the one
/// `servers.sh start kafka` runs.
pub fn kafka_brokers() -> String {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS.get_or_init(|| from_env_or_start("PAYSTREAM_TEST_KAFKA_BROKERS", "kafka")).clone()
}

/// `host:port` of the test CQL node: `SCYLLA_NODES`, or the one
/// `servers.sh start cassandra` runs.
pub fn cql_nodes() -> String {
    static NODES: OnceLock<String> = OnceLock::new();
    NODES.get_or_init(|| from_env_or_start("SCYLLA_NODES", "cassandra")).clone()
}

/// Runs `servers.sh VERB SERVER` (e.g. `stop cassandra` in a restart test) and returns
/// the last line it printed; panics with its output if it fails.
pub fn servers(verb: &str, server: &str) -> String {
    let output = Command::new("bash")
        .arg(servers_script())
        .args([verb, server])
        .output()
        .unwrap_or_else(|error| panic!("run {} {verb} {server}: {error}", servers_script().display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "servers.sh {verb} {server} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

fn from_env_or_start(variable: &str, server: &str) -> String {
    match std::env::var(variable) {
        Ok(address) if !address.trim().is_empty() => address,
        _ => {
            let address = servers("start", server);
            assert!(address.contains(':'), "servers.sh start {server} printed no address: {address:?}");
            address
        }
    }
}

/// A name no other test, and no earlier run against the same server, uses:
/// `{prefix}_{pid}_{seconds}_{n}`, lower-case ASCII, valid as a Kafka topic, group or
/// transactional id and as a CQL keyspace (at most 48 characters).
pub fn unique_name(prefix: &str) -> String {
    let name = format!("{prefix}_{}", unique_suffix());
    assert!(name.len() <= 48 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    name
}

/// `{pid}_{seconds}_{n}`: unique per call, per process and per run, for names on shared
/// servers that have room for more than [`unique_name`]'s 48 characters (PostgreSQL
/// schemas, Redis key prefixes).
pub fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 1_000_000;
    format!("{}_{seconds}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A deterministic xorshift64 sequence: the same seed, the same test data forever.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// A synthetic stream of payments as any producer would write them (JSON v1): payment
/// `i` is `{id_prefix}{i}` from payer `c{i % payers}` at merchant `m{i % merchants}`,
/// terminal `t{i % terminals}`, `{1 + i % amount_units_max}.{i % 100}` EUR, one every
/// `spacing_ms` from 2018-04-01.
#[derive(Clone, Copy, Debug)]
pub struct PaymentStream {
    pub id_prefix: &'static str,
    pub payers: u32,
    pub merchants: u32,
    pub terminals: u32,
    pub amount_units_max: u32,
    pub spacing_ms: i64,
    pub channel: &'static str,
}

impl PaymentStream {
    /// Payment `i`: its payer (the record key) and its JSON.
    pub fn payment(&self, i: u32) -> (String, String) {
        let payer = format!("c{}", i % self.payers);
        let value = format!(
            r#"{{"payment_id":"{}{i}","payer_account_id":"{payer}","merchant_id":"m{}","terminal_id":"t{}","amount":"{}.{:02}","currency":"EUR","event_time":"{}","channel":"{}"}}"#,
            self.id_prefix,
            i % self.merchants,
            i % self.terminals,
            1 + i % self.amount_units_max,
            i % 100,
            paystream_domain::time::format_rfc3339_ms(1_522_540_800_000 + i64::from(i) * self.spacing_ms),
            self.channel,
        );
        (payer, value)
    }
}

/// The PostgreSQL the tests use: `PAYSTREAM_TEST_POSTGRES_URL`, or the role and database
/// `deploy/local/test-env.sh` creates on this machine.
pub fn postgres_url() -> String {
    std::env::var("PAYSTREAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://paystream:paystream@127.0.0.1:5432/test".into())
}
