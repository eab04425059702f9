//! A statement's view of the log: the end of every partition of every table's topic,
//! taken once per statement, so the tables it joins agree.
//!
//! On the embedded log the cut is a read-only opening of the log directory: it holds
//! what was committed when it opened, and one commit writes all its topics at once, so
//! the cut falls between two commits. On Kafka each partition's end is its last stable
//! offset (committed records only) when the statement starts.

use std::collections::HashMap;
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

/// The cut of the statement running now, made on its first table scan and reused by the
/// others (keyed by the statement's start time, which DataFusion stamps per statement).
pub struct Cuts {
    source: LogSource,
    /// The topic of each table.
    topics: Vec<String>,
    current: Mutex<Option<(i64, Arc<Cut>)>>,
}

impl Cuts {
    pub fn new(source: LogSource, topics: Vec<String>) -> Cuts {
        Cuts { source, topics, current: Mutex::new(None) }
    }

    /// The cut for the statement that started at `statement_ns`.
    pub fn for_statement(&self, statement_ns: i64) -> Result<Arc<Cut>, SqlError> {
        let mut current = self.current.lock().expect("cut lock");
        if let Some((started, cut)) = current.as_ref()
            && *started == statement_ns
        {
            return Ok(cut.clone());
        }
        let cut = Arc::new(self.take()?);
        *current = Some((statement_ns, cut.clone()));
        Ok(cut)
    }

    fn take(&self) -> Result<Cut, SqlError> {
        let log: Arc<dyn Log> = match &self.source {
            LogSource::Embedded(dir) => Arc::new(EmbeddedLog::open_read_only(EmbeddedLogConfig::new(dir.join("log")))?),
            LogSource::Shared(log) => log.clone(),
        };
        let mut ranges = HashMap::new();
        for name in &self.topics {
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
