//! The embedded log against its contract: atomic commits, recovery from torn tails,
//! retention that never deletes what a consumer still needs, seeks by time that skip
//! only earlier records.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, LogError, Topic, Transaction};
use proptest::prelude::*;

fn open(dir: &Path) -> EmbeddedLog {
    EmbeddedLog::open(EmbeddedLogConfig::new(dir)).unwrap()
}

fn values(log: &EmbeddedLog, topic: &Topic, partition: u32) -> Vec<String> {
    let records = log.fetch(topic, partition, log.offsets(topic, partition).unwrap().start, usize::MAX).unwrap();
    records.iter().map(|r| String::from_utf8(r.value.to_vec()).unwrap()).collect()
}

fn active_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    segments.pop().unwrap()
}

#[test]
fn commits_are_visible_ordered_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let topic = log.create_topic("payments", 3).unwrap();
        assert_eq!(log.create_topic("payments", 3).unwrap(), topic);
        assert!(matches!(log.create_topic("payments", 4), Err(LogError::TopicExists { .. })));
        assert!(matches!(log.create_topic("bad name", 1), Err(LogError::InvalidTopic(_))));
        let mut txn = Transaction::new();
        for i in 0..10 {
            txn.send_to_partition(&topic, i % 3, format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), i64::from(i))
                .unwrap();
        }
        txn.set_position("g", &topic, 1, 2);
        log.commit(txn).unwrap();
        assert_eq!(values(&log, &topic, 0), ["v0", "v3", "v6", "v9"]);
        assert_eq!(log.committed_position("g", &topic, 1).unwrap(), Some(2));
        let tail = log.fetch(&topic, 0, 2, 1).unwrap();
        assert_eq!(
            (tail[0].offset, &tail[0].value[..], &tail[0].key[..], tail[0].timestamp_ms),
            (2, &b"v6"[..], &b"k6"[..], 6)
        );
        assert!(log.fetch(&topic, 0, 4, 10).unwrap().is_empty());
        assert!(matches!(log.fetch(&topic, 0, 5, 10), Err(LogError::OffsetOutOfRange { .. })));
        assert!(matches!(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path())), Err(LogError::Locked(_))));
    }
    let log = open(dir.path());
    let topic = log.topic("payments").unwrap();
    assert_eq!(values(&log, &topic, 0), ["v0", "v3", "v6", "v9"]);
    assert_eq!(log.offsets(&topic, 2).unwrap().end, 3);
    assert_eq!(log.committed_position("g", &topic, 1).unwrap(), Some(2));
    assert_eq!(log.committed_position("other", &topic, 1).unwrap(), None);
}

#[test]
fn key_partitioning_matches_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let topic = log.create_topic("t", 8).unwrap();
    let mut txn = Transaction::new();
    txn.send(&topic, b"foobar", b"x", 0).unwrap();
    log.commit(txn).unwrap();
    // (murmur2("foobar") & 0x7fffffff) % 8 = (-790332482 & 0x7fffffff) % 8 = 6
    assert_eq!(log.offsets(&topic, 6).unwrap().end, 1);
}

#[test]
fn a_torn_tail_is_cut_off_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        let topic = log.create_topic("t", 1).unwrap();
        for i in 0..3 {
            let mut txn = Transaction::new();
            txn.send_to_partition(&topic, 0, b"k", format!("v{i}").as_bytes(), 0).unwrap();
            log.commit(txn).unwrap();
        }
    }
    // A crash mid-write: half a frame, then garbage.
    let mut file = OpenOptions::new().append(true).open(active_segment(dir.path())).unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(file);
    {
        let log = open(dir.path());
        let topic = log.topic("t").unwrap();
        assert_eq!(values(&log, &topic, 0), ["v0", "v1", "v2"]);
        let mut txn = Transaction::new();
        txn.send_to_partition(&topic, 0, b"k", b"v3", 0).unwrap();
        log.commit(txn).unwrap();
    }
    let log = open(dir.path());
    assert_eq!(values(&log, &log.topic("t").unwrap(), 0), ["v0", "v1", "v2", "v3"]);
}

#[test]
fn retention_deletes_old_segments_but_never_unread_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedLogConfig {
        segment_bytes_max: 4_096,
        retention_bytes_max: Some(16_384),
        ..EmbeddedLogConfig::new(dir.path())
    };
    let value = vec![b'x'; 500];
    {
        let log = EmbeddedLog::open(config.clone()).unwrap();
        let input = log.create_topic("input", 1).unwrap();
        let output = log.create_topic("output", 1).unwrap();
        for i in 0..400u64 {
            let mut txn = Transaction::new();
            txn.send_to_partition(&input, 0, b"k", &value, 0).unwrap();
            txn.send_to_partition(&output, 0, b"k", &value, 0).unwrap();
            // The consumer lags the input by 100 records.
            txn.set_position("g", &input, 0, i.saturating_sub(100));
            log.commit(txn).unwrap();
        }
        let input_offsets = log.offsets(&input, 0).unwrap();
        assert!(input_offsets.start > 0, "retention deleted nothing");
        assert!(input_offsets.start <= 299, "retention deleted input the consumer has not read");
        assert!(log.stored_bytes() < 400 * 1_100, "the log kept everything");
        assert!(matches!(log.fetch(&input, 0, 0, 1), Err(LogError::OffsetOutOfRange { .. })));
        assert_eq!(log.fetch(&input, 0, 299, 1).unwrap().len(), 1);
    }
    let log = EmbeddedLog::open(config).unwrap();
    let input = log.topic("input").unwrap();
    assert_eq!(log.offsets(&input, 0).unwrap().end, 400);
    assert_eq!(log.committed_position("g", &input, 0).unwrap(), Some(299));
    assert_eq!(log.fetch(&input, 0, 299, 200).unwrap().len(), 101);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Cutting the log at any byte (a crash mid-write) recovers exactly a prefix of the
    /// committed transactions: each all or nothing, in order.
    #[test]
    fn any_crash_point_recovers_a_prefix_of_transactions(
        transactions in proptest::collection::vec(proptest::collection::vec((0u32..3, 0usize..40), 1..6), 1..12),
        cut_fraction in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut ends = Vec::new();
        {
            let log = open(dir.path());
            let topic = log.create_topic("t", 3).unwrap();
            ends.push(std::fs::metadata(active_segment(dir.path())).unwrap().len());
            for (n, records) in transactions.iter().enumerate() {
                let mut txn = Transaction::new();
                for (i, (partition, size)) in records.iter().enumerate() {
                    txn.send_to_partition(&topic, *partition, b"", format!("{n}.{i}{}", "x".repeat(*size)).as_bytes(), 0).unwrap();
                }
                txn.set_position("g", &topic, 0, n as u64);
                log.commit(txn).unwrap();
                ends.push(std::fs::metadata(active_segment(dir.path())).unwrap().len());
            }
        }
        let segment = active_segment(dir.path());
        let full = std::fs::metadata(&segment).unwrap().len();
        let cut = (full as f64 * cut_fraction) as u64;
        OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
        let survivors = ends.iter().skip(1).filter(|&&end| end <= cut).count();
        if cut < ends[0] {
            // Even the topic's creation was cut: the log is empty.
            let log = open(dir.path());
            prop_assert!(log.topic("t").is_err());
            return Ok(());
        }
        let log = open(dir.path());
        let topic = log.topic("t").unwrap();
        let mut expected: Vec<Vec<String>> = vec![Vec::new(); 3];
        for (n, records) in transactions.iter().take(survivors).enumerate() {
            for (i, (partition, size)) in records.iter().enumerate() {
                expected[*partition as usize].push(format!("{n}.{i}{}", "x".repeat(*size)));
            }
        }
        for partition in 0..3 {
            prop_assert_eq!(values(&log, &topic, partition), expected[partition as usize].clone());
        }
        let position = log.committed_position("g", &topic, 0).unwrap();
        prop_assert_eq!(position, survivors.checked_sub(1).map(|n| n as u64));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A seek by time never skips a record at or after the time, and starts in a frame
    /// that holds one (timestamps in any order, compressed frames and plain ones), before
    /// and after reopening.
    #[test]
    fn a_seek_by_time_skips_only_earlier_records(
        transactions in proptest::collection::vec(proptest::collection::vec((0u32..2, 0i64..1_000, 0usize..300), 1..8), 1..10),
        at in 0i64..1_100,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let check = |log: &EmbeddedLog| -> Result<(), TestCaseError> {
            let topic = log.topic("t").unwrap();
            for partition in 0..2 {
                let records = log.fetch(&topic, partition, 0, usize::MAX).unwrap();
                let seek = log.offset_for_time(&topic, partition, at).unwrap().unwrap();
                prop_assert!(records.iter().filter(|r| r.offset < seek).all(|r| r.timestamp_ms < at));
                let end = log.offsets(&topic, partition).unwrap().end;
                prop_assert!(seek == end || records.iter().any(|r| r.offset >= seek && r.timestamp_ms >= at));
            }
            Ok(())
        };
        {
            let log = open(dir.path());
            let topic = log.create_topic("t", 2).unwrap();
            for records in &transactions {
                let mut txn = Transaction::new();
                for (partition, timestamp_ms, size) in records {
                    // A partition's records of one commit past 512 bytes make a compressed frame.
                    txn.send_to_partition(&topic, *partition, b"", "x".repeat(*size).as_bytes(), *timestamp_ms).unwrap();
                }
                log.commit(txn).unwrap();
            }
            check(&log)?;
        }
        check(&open(dir.path()))?;
    }
}

/// Group commit: many threads committing to the same partitions at once get dense
/// offsets, every record exactly once, and the same view after reopening.
#[test]
fn concurrent_commits_are_dense_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 4;
    let commits = 50;
    {
        let log = std::sync::Arc::new(open(dir.path()));
        let topic = log.create_topic("t", 2).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let log = log.clone();
                let topic = topic.clone();
                scope.spawn(move || {
                    for commit in 0..commits {
                        let mut txn = Transaction::new();
                        for partition in 0..2 {
                            txn.send_to_partition(
                                &topic,
                                partition,
                                b"",
                                format!("{thread}.{commit}.{partition}").as_bytes(),
                                0,
                            )
                            .unwrap();
                        }
                        txn.set_position(&format!("g{thread}"), &topic, 0, commit);
                        log.commit(txn).unwrap();
                    }
                });
            }
        });
        for partition in 0..2 {
            let records = log.fetch(&topic, partition, 0, usize::MAX).unwrap();
            assert_eq!(records.len(), threads * commits as usize);
            assert!(records.iter().enumerate().all(|(i, r)| r.offset == i as u64));
        }
    }
    let log = open(dir.path());
    let topic = log.topic("t").unwrap();
    for partition in 0..2 {
        let mut got = values(&log, &topic, partition);
        got.sort();
        let mut expected: Vec<String> =
            (0..threads).flat_map(|t| (0..commits).map(move |c| format!("{t}.{c}.{partition}"))).collect();
        expected.sort();
        assert_eq!(got, expected);
    }
    for thread in 0..threads {
        assert_eq!(log.committed_position(&format!("g{thread}"), &topic, 0).unwrap(), Some(commits - 1));
    }
}
