//! The scan cache never changes an answer: over any interleaving of commits and
//! statements (any columns, any `_partition`/`_offset` narrowing), a session that keeps
//! decoded columns answers exactly as one that decodes every statement from the log;
//! and a log recreated under the same directory is read afresh.

use std::path::Path;
use std::sync::Arc;

use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, Transaction};
use paystream_sql::output::Format;
use paystream_sql::{LogSource, ScanCache, ScanLimits, SessionContext};

const PARTITIONS: u32 = 2;

fn open(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig::new(dir.join("log"))).unwrap()
}

/// Commits `count` ledger transactions of two postings each to `partition`, numbered
/// from `first` (`salt` changes their accounts, to tell two logs apart).
fn commit(log: &EmbeddedLog, partition: u32, first: u64, count: u64, salt: u64) {
    let topic = log.create_topic("ledger", PARTITIONS).unwrap();
    let mut transaction = Transaction::new();
    for n in first..first + count {
        let value = format!(
            r#"{{"transaction_id":"t{n}","payment_id":"p{n}","event_time":"2026-01-02T03:04:05Z","currency":"EUR",
                "postings":[{{"account_id":"wallet:{a}","direction":"debit","amount_minor":{m}}},
                            {{"account_id":"merchant:{b}","direction":"credit","amount_minor":{m}}}]}}"#,
            a = (n + salt) % 5,
            b = (n * 7 + salt) % 3,
            m = 100 + n * 13 + salt,
        );
        transaction.send_to_partition(&topic, partition, b"k", value.as_bytes(), 1_000 + n as i64).unwrap();
    }
    log.commit(transaction).unwrap();
}

async fn session(dir: &Path, cache_bytes_max: usize) -> SessionContext {
    let cache = Arc::new(ScanCache::new(cache_bytes_max, None));
    let source = LogSource::Embedded(dir.to_path_buf());
    paystream_sql::session_context(source, |role| role.to_string(), ScanLimits::default(), cache, &[]).await.unwrap()
}

async fn csv(session: &SessionContext, statement: &str) -> String {
    let frame = session.sql(statement).await.unwrap();
    let schema = paystream_sql::SchemaRef::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.unwrap();
    let mut out = Vec::new();
    paystream_sql::output::write(&batches, &schema, Format::Csv, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// Statements over different columns and ranges (ordered, so results compare as text).
fn statement(shape: u8, low: u64, high: u64) -> String {
    match shape % 5 {
        0 => "SELECT _partition, _offset, account_id, signed_minor FROM ledger ORDER BY 1, 2, 3".into(),
        1 => "SELECT count(*), sum(signed_minor), count(DISTINCT transaction_id) FROM ledger".into(),
        2 => format!(
            "SELECT account_id, sum(amount_minor) FROM ledger WHERE _offset >= {low} AND _offset < {high} \
             GROUP BY account_id ORDER BY 1"
        ),
        3 => format!("SELECT * FROM ledger WHERE _partition = 1 AND _offset > {low} ORDER BY _offset, account_id"),
        _ => format!("SELECT transaction_id, direction FROM ledger WHERE _offset <= {high} ORDER BY 1, 2"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    #[test]
    fn cached_answers_equal_decoded_ones(
        steps in proptest::collection::vec((0u32..PARTITIONS, 0u64..30, 0u8..5, 0u64..40, 0u64..40), 1..12),
        budget_bytes in proptest::prop_oneof![proptest::strategy::Just(64usize << 20), 0usize..20_000],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let runtime = runtime();
        let (cached, decoded) = runtime.block_on(async {
            (session(dir.path(), budget_bytes).await, session(dir.path(), 0).await)
        });
        let mut next = [0u64; PARTITIONS as usize];
        for (partition, count, shape, a, b) in steps {
            if count > 0 {
                commit(&log, partition, next[partition as usize], count, 0);
                next[partition as usize] += count;
            }
            let statement = statement(shape, a.min(b), a.max(b));
            let (with_cache, without) =
                runtime.block_on(async { (csv(&cached, &statement).await, csv(&decoded, &statement).await) });
            proptest::prop_assert_eq!(with_cache, without, "{}", statement);
        }
    }
}

#[test]
fn a_recreated_log_is_read_afresh() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    commit(&log, 0, 0, 20, 0);
    let cached = runtime.block_on(session(dir.path(), 64 << 20));
    let statement = "SELECT account_id, sum(signed_minor), count(*) FROM ledger GROUP BY 1 ORDER BY 1";
    let before = runtime.block_on(csv(&cached, statement));
    drop(log);
    // The same directory, other records: as many, then more.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let log = open(dir.path());
    commit(&log, 0, 0, 20, 1);
    let fresh = runtime.block_on(session(dir.path(), 0));
    let after = runtime.block_on(csv(&cached, statement));
    assert_ne!(after, before, "the new log's rows differ");
    assert_eq!(after, runtime.block_on(csv(&fresh, statement)));
    commit(&log, 0, 20, 5, 1);
    assert_eq!(runtime.block_on(csv(&cached, statement)), runtime.block_on(csv(&fresh, statement)));
    // Recreated smaller than the cache, then grown past it.
    drop(log);
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    let log = open(dir.path());
    commit(&log, 0, 0, 10, 2);
    assert_eq!(runtime.block_on(csv(&cached, statement)), runtime.block_on(csv(&fresh, statement)));
    commit(&log, 0, 10, 30, 2);
    assert_eq!(runtime.block_on(csv(&cached, statement)), runtime.block_on(csv(&fresh, statement)));
}
