//! Where the log is: the embedded log's directory and settings, or Kafka's brokers and
//! client settings, and the topic names (`--topic ROLE=NAME`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use paystream_domain::time::MILLIS_PER_HOUR;
use paystream_pipeline::PipelineConfig;
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::log::kafka::{KafkaConfig, KafkaLog};

#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Directory of the embedded log and state snapshots.
    #[arg(long, env = "PAYSTREAM_DATA_DIR", default_value = "paystream-data")]
    pub data_dir: PathBuf,
    /// Partitions of topics paystream creates (existing topics keep theirs).
    #[arg(long, env = "PAYSTREAM_PARTITIONS", default_value_t = 4)]
    pub partitions: u32,
    /// Delete the oldest log segments once the log exceeds this many MiB (never unread
    /// input or changelog a restore needs).
    #[arg(long, env = "PAYSTREAM_RETENTION_MIB")]
    pub retention_mib: Option<u64>,
    /// Delete log segments older than this many hours (same protections).
    #[arg(long, env = "PAYSTREAM_RETENTION_HOURS")]
    pub retention_hours: Option<u64>,
    /// Skip fdatasync on commit: still safe against process crashes (the OS keeps the
    /// data), not against power loss or kernel crashes. For experiments.
    #[arg(long, env = "PAYSTREAM_NO_FSYNC")]
    pub no_fsync: bool,
    /// Store log records uncompressed (default: LZ4 per record batch, like Kafka's
    /// compression.type=lz4): more disk bandwidth, less CPU.
    #[arg(long, env = "PAYSTREAM_NO_COMPRESSION")]
    pub no_compression: bool,
    /// Another name for one of the pipeline's topics, ROLE=NAME (repeatable); roles:
    /// payments, labels, decisions, ledger, settlements, dead-letters, changelog, transfers.
    #[arg(long = "topic", env = "PAYSTREAM_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Kafka as the log (instead of the embedded one). See README, "Running on Kafka".
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...): use Kafka instead of the embedded log.
    #[arg(long, env = "PAYSTREAM_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// A properties file (`key=value` lines, `#` comments) passed to every Kafka client:
    /// security.protocol, sasl.*, ssl.*, client.id, ….
    #[arg(long, env = "PAYSTREAM_KAFKA_CONFIG")]
    pub kafka_config: Option<PathBuf>,
    /// One more client property, KEY=VALUE (repeatable; wins over the file).
    #[arg(long = "kafka-property", env = "PAYSTREAM_KAFKA_PROPERTIES", value_delimiter = ',')]
    pub kafka_properties: Vec<String>,
    /// Prefix of the transactional ids: stable across restarts of one deployment (that is
    /// what fences a zombie), different for every `paystream run` process.
    #[arg(long, env = "PAYSTREAM_KAFKA_TRANSACTIONAL_ID", default_value = "paystream")]
    pub kafka_transactional_id: String,
    /// Replication factor of the topics paystream creates.
    #[arg(long, env = "PAYSTREAM_KAFKA_REPLICATION_FACTOR", default_value_t = 3)]
    pub kafka_replication_factor: i32,
    /// The broker aborts a transaction left open this long (a crashed process's).
    #[arg(long, env = "PAYSTREAM_KAFKA_TRANSACTION_TIMEOUT_MS", default_value_t = 60_000)]
    pub kafka_transaction_timeout_ms: u64,
    /// No transactions: outputs, changelog and positions are flushed per batch, and a
    /// crash repeats the outputs of the batches since the last flush. For measuring what
    /// exactly-once costs; not for money.
    #[arg(long, env = "PAYSTREAM_KAFKA_AT_LEAST_ONCE")]
    pub kafka_at_least_once: bool,
}

/// What a command does with the log; on Kafka it decides the transactional ids, so that a
/// publisher or a reader never fences the running pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRole {
    /// The pipeline: one transactional producer per worker.
    Pipeline { workers: usize },
    /// Publishes input (generate, replay): its own transactional id.
    Publisher,
    /// Reads only (log dump, log topics): no producer at all.
    Reader,
}

impl KafkaArgs {
    fn config(&self, brokers: &str, role: LogRole, changelog: &str) -> Result<KafkaConfig> {
        if brokers.trim().is_empty() {
            bail!("--kafka-brokers (PAYSTREAM_KAFKA_BROKERS) is empty: give host:port[,host:port...]");
        }
        let mut config = KafkaConfig::new(brokers);
        if let Some(path) = &self.kafka_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read the Kafka properties file {}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    bail!("{}:{}: expected key=value, found {line:?}", path.display(), number + 1);
                };
                config.client_properties.push((key.trim().to_string(), value.trim().to_string()));
            }
        }
        for property in &self.kafka_properties {
            let Some((key, value)) = property.split_once('=') else {
                bail!("--kafka-property: expected KEY=VALUE, found {property:?}");
            };
            config.client_properties.push((key.trim().to_string(), value.trim().to_string()));
        }
        config.replication_factor = self.kafka_replication_factor;
        config.transaction_timeout_ms = self.kafka_transaction_timeout_ms;
        config.exactly_once = !self.kafka_at_least_once;
        (config.transactional_id, config.producers) = match role {
            LogRole::Pipeline { workers } => (self.kafka_transactional_id.clone(), workers.max(1)),
            LogRole::Publisher => (format!("{}-publisher", self.kafka_transactional_id), 1),
            LogRole::Reader => (format!("{}-reader", self.kafka_transactional_id), 0),
        };
        // A restore replays the changelog from the last snapshot: retention must not delete it.
        for (key, value) in [("retention.ms", "-1"), ("retention.bytes", "-1")] {
            config.topic_properties.push((changelog.into(), key.into(), value.into()));
        }
        Ok(config)
    }
}

/// The roles `--topic ROLE=NAME` renames.
pub const TOPIC_ROLES: [&str; 9] = paystream_pipeline::TopicNames::ROLES;

impl LogArgs {
    pub fn open(&self) -> Result<Arc<EmbeddedLog>> {
        open_log(&self.data_dir, self)
    }

    /// The pipeline's topic names: the defaults, renamed by `--topic ROLE=NAME`.
    pub fn topic_names(&self) -> Result<paystream_pipeline::TopicNames> {
        let mut names = paystream_pipeline::TopicNames::default();
        for mapping in &self.topics {
            let Some((role, name)) = mapping.split_once('=') else {
                bail!("--topic: expected ROLE=NAME, found {mapping:?}");
            };
            // One arm per entry of TOPIC_ROLES.
            let slot = match role.trim() {
                "payments" => &mut names.payments,
                "labels" => &mut names.labels,
                "decisions" => &mut names.decisions,
                "ledger" => &mut names.ledger,
                "settlements" => &mut names.settlements,
                "dead-letters" => &mut names.dead_letters,
                "changelog" => &mut names.changelog,
                "transfers" => &mut names.transfers,
                "settlement-entries" => &mut names.settlement_entries,
                other => bail!(
                    "--topic: unknown role {other:?} (payments, labels, decisions, ledger, settlements, dead-letters, \
                     changelog, transfers, settlement-entries)"
                ),
            };
            *slot = name.trim().to_string();
        }
        Ok(names)
    }

    /// A pipeline configuration for publishing and reading: partitions and topic names.
    pub fn pipeline_config(&self) -> Result<PipelineConfig> {
        Ok(PipelineConfig { partitions: self.partitions, topics: self.topic_names()?, ..PipelineConfig::default() })
    }

    /// The log these arguments name: Kafka when brokers are given, else the embedded log.
    pub fn open_any(&self, role: LogRole) -> Result<Arc<dyn Log>> {
        if let Some(kafka) = self.open_kafka(role)? {
            return Ok(kafka);
        }
        Ok(match role {
            LogRole::Reader => self.open_read_only()?,
            _ => self.open()?,
        })
    }

    /// The Kafka log, if brokers are given.
    pub fn open_kafka(&self, role: LogRole) -> Result<Option<Arc<KafkaLog>>> {
        let Some(brokers) = &self.kafka.kafka_brokers else { return Ok(None) };
        let config = self.kafka.config(brokers, role, &self.topic_names()?.changelog)?;
        let log = KafkaLog::open(config).with_context(|| format!("open the Kafka log at {brokers}"))?;
        Ok(Some(Arc::new(log)))
    }

    /// The Kafka log a materialized view commits through to its `topic`, if brokers are
    /// given: one producer whose transactional id is the view's, `paystream-view-<name>`
    /// (`-0`), the same in every process, as the view's topic is: opening it fences any
    /// other process still keeping the view (its next commit fails) and aborts what that
    /// process left open. The view's topic keeps its records for good (its windows, and
    /// the progress the view resumes from).
    pub fn open_kafka_for_view(&self, view: &str, topic: &str) -> Result<Option<Arc<KafkaLog>>> {
        let Some(brokers) = &self.kafka.kafka_brokers else { return Ok(None) };
        if self.kafka.kafka_at_least_once {
            bail!("materialized views commit in Kafka transactions: drop --kafka-at-least-once to keep {view}");
        }
        let mut config = self.kafka.config(brokers, LogRole::Publisher, &self.topic_names()?.changelog)?;
        config.transactional_id = format!("paystream-view-{view}");
        for (key, value) in [("retention.ms", "-1"), ("retention.bytes", "-1")] {
            config.topic_properties.push((topic.into(), key.into(), value.into()));
        }
        let log = KafkaLog::open(config).with_context(|| format!("open the Kafka log at {brokers} for view {view}"))?;
        Ok(Some(Arc::new(log)))
    }

    /// The Kafka log the SQL endpoint writes the view catalog through, if brokers are
    /// given: a producer of its own (a transactional id per process, so endpoints never
    /// fence each other). The catalog topic keeps its records for good.
    pub fn open_kafka_for_catalog(&self, catalog: &str) -> Result<Option<Arc<KafkaLog>>> {
        let Some(brokers) = &self.kafka.kafka_brokers else { return Ok(None) };
        let mut config = self.kafka.config(brokers, LogRole::Publisher, &self.topic_names()?.changelog)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).context("the operating system's random source")?;
        let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
        config.transactional_id = format!("paystream-view-catalog-{suffix}");
        config.exactly_once = true;
        for (key, value) in [("retention.ms", "-1"), ("retention.bytes", "-1")] {
            config.topic_properties.push((catalog.into(), key.into(), value.into()));
        }
        let log =
            KafkaLog::open(config).with_context(|| format!("open the Kafka log at {brokers} for the view catalog"))?;
        Ok(Some(Arc::new(log)))
    }

    /// For inspection while another process (a running pipeline) writes the log.
    pub fn open_read_only(&self) -> Result<Arc<EmbeddedLog>> {
        let log = EmbeddedLog::open_read_only(EmbeddedLogConfig::new(self.data_dir.join("log")))
            .with_context(|| format!("open the embedded log in {} for reading", self.data_dir.display()))?;
        Ok(Arc::new(log))
    }
}

pub fn open_log(dir: &Path, args: &LogArgs) -> Result<Arc<EmbeddedLog>> {
    let config = EmbeddedLogConfig {
        retention_bytes_max: args.retention_mib.map(|m| m * 1024 * 1024),
        retention_age_ms_max: args.retention_hours.map(|h| h as i64 * MILLIS_PER_HOUR),
        fsync: !args.no_fsync,
        compression: !args.no_compression,
        ..EmbeddedLogConfig::new(dir.join("log"))
    };
    let log = EmbeddedLog::open(config).with_context(|| format!("open the embedded log in {}", dir.display()))?;
    Ok(Arc::new(log))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn log_args(extra: &[&str]) -> LogArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        Cli::try_parse_from(std::iter::once("paystream").chain(extra.iter().copied())).unwrap().log
    }

    #[test]
    fn topics_are_renamed_by_role_and_unknown_roles_refused() {
        let names = log_args(&["--topic", "payments=prod.payments", "--topic", "changelog=prod.changelog"])
            .topic_names()
            .unwrap();
        assert_eq!((names.payments.as_str(), names.changelog.as_str()), ("prod.payments", "prod.changelog"));
        assert_eq!(names.decisions, "decisions");
        let error = log_args(&["--topic", "paymnets=x"]).topic_names().unwrap_err().to_string();
        assert!(error.contains("unknown role \"paymnets\""), "{error}");
        assert!(log_args(&["--topic", "payments"]).topic_names().is_err());
    }

    #[test]
    fn kafka_properties_come_from_the_file_then_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client.properties");
        std::fs::write(&file, "# SASL\nsecurity.protocol = SASL_SSL\n\nsasl.username=pay\n").unwrap();
        let args = log_args(&[
            "--kafka-config",
            file.to_str().unwrap(),
            "--kafka-property",
            "sasl.username=other",
            "--kafka-transactional-id",
            "p1",
        ]);
        let config = args.kafka.config("k:9092", LogRole::Pipeline { workers: 3 }, "changes").unwrap();
        assert_eq!(
            config.client_properties,
            [
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.username".into(), "pay".into()),
                ("sasl.username".into(), "other".into()),
            ]
        );
        assert_eq!((config.transactional_id.as_str(), config.producers), ("p1", 3));
        assert!(config.topic_properties.iter().any(|(t, k, v)| t == "changes" && k == "retention.ms" && v == "-1"));
        let publisher = args.kafka.config("k:9092", LogRole::Publisher, "changes").unwrap();
        assert_eq!(publisher.transactional_id, "p1-publisher", "a publisher never fences the pipeline");
        assert_eq!(args.kafka.config("k:9092", LogRole::Reader, "changes").unwrap().producers, 0);
        std::fs::write(&file, "no equals sign\n").unwrap();
        assert!(args.kafka.config("k:9092", LogRole::Reader, "c").unwrap_err().to_string().contains(":1: expected"));
    }
}
