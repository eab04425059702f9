//! Every bound of the pipeline in one place: partitions, batches, queues, records, waits.
//! Related limits are tied together by `const` assertions.

use std::time::Duration;

/// Largest number of partitions a pipeline may have (bounds per-worker state).
pub const PIPELINE_PARTITIONS_MAX: u32 = 256;
/// Most partitions of a topic of the embedded log.
pub const TOPIC_PARTITIONS_MAX: u32 = 1_024;
/// Largest `batch_records_max`: records taken from one partition per batch.
pub const BATCH_RECORDS_MAX_LIMIT: usize = 65_536;
/// Batches a worker may have handed to its committer and not yet seen committed.
pub const COMMIT_QUEUE_DEPTH_MAX: usize = 2;
/// Partition batches of state ops a worker may have handed to its snapshotter and it not
/// yet applied (runtime `feed`; at most `batch_records_max` ops of ≤ 88 bytes each);
/// batches beyond are dropped, and the snapshotter reads them from the changelog.
pub const FEED_BATCHES_MAX: usize = 256;
/// Largest record (key plus value) any log accepts.
pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
/// Largest frame of the embedded log accepted when reading; a larger length field means
/// a torn or corrupt frame.
pub const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most records one Kafka commit may hold (they are all in the producer's queue at once).
pub const TRANSACTION_RECORDS_MAX: usize = 500_000;
/// Longest `log::read_to_written_end` waits for transactions still open to end: Kafka's
/// largest transaction timeout (`transaction.max.timeout.ms`, 15 minutes by default).
pub const OPEN_TRANSACTION_WAIT_MS_MAX: u64 = 15 * 60 * 1_000;
/// Most records per slice a sink hands its store at once (one database transaction).
pub const SINK_SLICE_RECORDS_MAX: usize = 4_096;
/// Batches (of `batch_records_max`) of payments a worker keeps read, parsed and indexed
/// ahead of scoring, per partition: the one it scores and two more, so that payers
/// advancing together find each other's whole batch indexed (a batch of 2,048 can span
/// more event time than the read-ahead) instead of cutting theirs and committing it in
/// pieces (see `connectors::terminal_index`).
pub const PAYMENT_BUFFER_BATCHES: usize = 3;
/// Largest latency the exact (HDR) histogram records, in microseconds (one hour).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// How often a worker refreshes its partitions' lag gauge.
pub const LAG_UPDATE_INTERVAL: Duration = Duration::from_secs(1);

// A pipeline's topics are created with its partition count.
const _: () = assert!(PIPELINE_PARTITIONS_MAX <= TOPIC_PARTITIONS_MAX);
// Any input record the parser accepts fits in the log.
const _: () = assert!(paystream_domain::event::INPUT_RECORD_BYTES_MAX <= RECORD_BYTES_MAX);
// A dead letter (its key and value copies in base64, with room for the rest) fits in the log.
const _: () = assert!(paystream_domain::event::DEAD_LETTER_COPY_BYTES_MAX * 2 * 4 / 3 + 64 * 1024 <= RECORD_BYTES_MAX);
// A frame holds at least one record of the largest size with its headers.
const _: () = assert!(RECORD_BYTES_MAX + 64 <= FRAME_BYTES_MAX);
