//! The terminal stage: the index of every partition's payments per terminal, with the
//! fraud labels reported for them, shared by all payer partitions of this process.
//!
//! The pipeline is keyed by payer, but terminal features need every partition's
//! payments at a terminal and the label stream. Each worker indexes its own partitions'
//! payments as it reads them, ahead of scoring them ([`PAYMENT_BUFFER_BATCHES`](crate::limits::PAYMENT_BUFFER_BATCHES) batches
//! parsed ahead, each payment parsed once for both), and the indexer thread reads the
//! labels topic; both add to one [`TerminalIndex`], which the workers read.
//!
//! Terminal features are an as-of query (see `paystream_operators::features`), so they are exact
//! once the index holds every payment before a payment's event time t and every label
//! reported by t. Before scoring a batch, a payer partition asks
//! [`TerminalStage::complete_through_ms`] how far that holds: an input partition counts
//! as complete when the index holds everything the log held when the batch was fetched
//! (nothing that had arrived is missing), or through (newest event time indexed there −
//! allowed lateness) while it is still reading a backlog. The payer stops before the
//! first payment past the bound and resumes once the index has caught up. So a replay
//! of data already in the log scores exactly as the backtest does, and on a live stream
//! a payment waits only for input that arrived before it. Input arriving after payments
//! later than it were scored (beyond the lateness) is counted
//! (`paystream_terminal_late_inputs_total`): features served before it could not see it.
//!
//! No cycle of waits: indexing waits for nothing but the index's lock (held for a batch or
//! an expiry pass), never for scoring. A worker whose payments find the lock taken (the
//! other workers read the index for a whole batch) keeps them for its next turn instead
//! of waiting, and then adds them whatever the lock: a waiting writer would also hold
//! up every reader behind it. A worker indexes each of its partitions on
//! every turn of its loop, whether or not that partition's scoring waits — its buffer,
//! then ([`TerminalStage::read_until_ms`]) up to `terminal_read_ahead_ms` of event time
//! past the newest payer, which exceeds the lateness, so every payer's bound can be
//! reached. Past the buffer, payments are indexed and dropped, and parsed again when
//! their turn to be scored comes.
//!
//! Exactly once: the index is idempotent (a payment or label indexed twice counts
//! once). It is snapshotted with the input positions it covers (retention keeps the
//! input after them, group [`TERMINAL_INDEX_GROUP`]); a restart loads the snapshot
//! before any worker starts, and each worker indexes its partitions from the snapshot's
//! positions (before its own committed position if the snapshot is older). Bad labels
//! go to the dead-letter topic in one transaction with the pipeline group's label
//! positions, so a re-read does not dead-letter them twice. Invalid payments are the
//! payer's to dead-letter and are not indexed.

mod indexer;
mod stage;

pub(crate) use indexer::run_indexer;
pub(crate) use stage::{InputProgress, read_position};
pub use stage::{TERMINAL_INDEX_GROUP, TerminalStage};
