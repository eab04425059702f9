//! A statement's view of the log: the end of every partition of every table's topic,
//! taken once per statement, so the tables it joins agree.
//!
//! On the embedded log the cut is a read-only opening of the log directory: it holds
//! what was committed when it opened, and one commit writes all its topics at once, so
//! the cut falls between two commits. On Kafka each partition's end is its last stable
//! offset (committed records only) when the statement starts.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::{Log, Topic};

use crate::error::SqlError;

/// Where the tables read from.
pub enum LogSource {
    /// The embedded log in this directory, opened read-only per statement (another
    /// process may be writing it).
    Embedded(PathBuf),
    /// A log this process keeps open (Kafka).
    Shared(Arc<dyn Log>),
}

/// The log as one statement sees it.
pub struct Cut {
    pub log: Arc<dyn Log>,
    /// (topic name, partition) → (first offset, end offset).
    pub ranges: HashMap<(String, u32), (u64, u64)>,
}

impl Cut {
    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.log.topic(name).ok()
    }
}

/// Cuts of recent statements kept at once (statements on other connections run
/// meanwhile; each keeps its own).
pub const CUTS_KEPT_MAX: usize = 256;

/// The cut of each statement, made on its first table scan and reused by its others
/// (keyed by the statement's start time, which DataFusion stamps per statement).
pub struct Cuts {
    source: LogSource,
    /// The topic of each table (a view created later adds its own).
    topics: Mutex<Vec<String>>,
    recent: Mutex<VecDeque<(i64, Arc<Cut>)>>,
}

impl Cuts {
    pub fn new(source: LogSource, topics: Vec<String>) -> Cuts {
        Cuts { source, topics: Mutex::new(topics), recent: Mutex::new(VecDeque::new()) }
    }

    /// Statements from now on cut `topic` too (a table registered after the session).
    pub fn add_topic(&self, topic: String) {
        let mut topics = self.topics.lock().expect("cuts lock");
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }

    /// The cut for the statement that started at `statement_ns`.
    pub fn for_statement(&self, statement_ns: i64) -> Result<Arc<Cut>, SqlError> {
        if let Some((_, cut)) =
            self.recent.lock().expect("cuts lock").iter().find(|(started, _)| *started == statement_ns)
        {
            return Ok(cut.clone());
        }
        let cut = Arc::new(self.take()?);
        let mut recent = self.recent.lock().expect("cuts lock");
        // Two scans of one statement may have raced here: the first cut stays.
        if let Some((_, kept)) = recent.iter().find(|(started, _)| *started == statement_ns) {
            return Ok(kept.clone());
        }
        if recent.len() >= CUTS_KEPT_MAX {
            recent.pop_front();
        }
        recent.push_back((statement_ns, cut.clone()));
        Ok(cut)
    }

    /// Whether each look at the log reopens it (an embedded log another process owns).
    pub fn reopens_log(&self) -> bool {
        matches!(self.source, LogSource::Embedded(_))
    }

    /// How many partitions `topic` has now (0 when nobody has written it yet).
    pub fn partitions(&self, topic: &str) -> Result<u32, SqlError> {
        Ok(self.log()?.topic(topic).map_or(0, |topic| topic.partitions))
    }

    /// The log as it is now: on the embedded log a read-only opening of it.
    pub fn log(&self) -> Result<Arc<dyn Log>, SqlError> {
        Ok(match &self.source {
            LogSource::Embedded(dir) => Arc::new(EmbeddedLog::open_read_only(EmbeddedLogConfig::new(dir.join("log")))?),
            LogSource::Shared(log) => log.clone(),
        })
    }

    fn take(&self) -> Result<Cut, SqlError> {
        let log = self.log()?;
        let mut ranges = HashMap::new();
        let topics = self.topics.lock().expect("cuts lock").clone();
        for name in &topics {
            // A topic nobody has written yet is an empty table.
            let Ok(topic) = log.topic(name) else { continue };
            for partition in 0..topic.partitions {
                let offsets = log.offsets(&topic, partition)?;
                ranges.insert((name.clone(), partition), (offsets.start, offsets.end));
            }
        }
        Ok(Cut { log, ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_pipeline::log::Transaction;

    #[test]
    fn each_statement_keeps_its_own_cut_while_others_run() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap());
        let topic = log.create_topic("decisions", 1).unwrap();
        let write = |value: &[u8]| {
            let mut transaction = Transaction::new();
            transaction.send(&topic, b"k", value, 0).unwrap();
            log.commit(transaction).unwrap();
        };
        let cuts = Cuts::new(LogSource::Shared(log.clone()), vec!["decisions".into(), "missing".into()]);
        write(b"1");
        let first = cuts.for_statement(1).unwrap();
        write(b"2");
        let second = cuts.for_statement(2).unwrap();
        // Statement 1's next scan sees its own cut, not statement 2's.
        assert!(Arc::ptr_eq(&cuts.for_statement(1).unwrap(), &first));
        assert_eq!(first.ranges[&("decisions".to_string(), 0)], (0, 1));
        assert_eq!(second.ranges[&("decisions".to_string(), 0)], (0, 2));
        assert!(!first.ranges.keys().any(|(name, _)| name == "missing"), "a topic not written yet is empty");
        for statement in 3..(3 + CUTS_KEPT_MAX as i64) {
            cuts.for_statement(statement).unwrap();
        }
        assert!(!Arc::ptr_eq(&cuts.for_statement(1).unwrap(), &first), "old cuts are let go");
    }
}
