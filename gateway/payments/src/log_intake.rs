//! [`PaymentIntake`] on the pipeline's log (embedded or Kafka). `submit` hands the event
//! to the publisher thread, which commits whatever has queued up as one transaction to
//! the `payments` topic, keyed by payer (group commit: one fsync for many requests), and
//! answers each request once its event is durable. One thread tails `decisions`,
//! `dead-letters` and `ledger` from their start: it hands the outcome of every API
//! payment (ids `pay_…`) to its waiter and to the recorder, and every wallet posting to
//! the recorder, so nothing stays unrecorded across a restart (recording is idempotent;
//! the price is that a restart re-reads those topics, which kept read positions would
//! avoid).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use paystream_http::clock::Clock;
use paystream_pipeline::PipelineTopics;
use paystream_pipeline::log::{Log, LogError, Record, Topic, Transaction, read_to_written_end};
use tokio::sync::{mpsc, oneshot};

use paystream_domain::LedgerTransaction;

use crate::intake::{DecisionNotice, IntakeFuture, PaymentIntake, PipelineNotice, WalletPosting};

/// Requests waiting for a decision at once; more answer 202 without waiting.
pub const WAITERS_MAX: usize = 100_000;
/// Notices queued for the recorder; the tail waits when it is full.
pub const NOTICES_QUEUE_MAX: usize = 10_000;
/// Records read per fetch while tailing.
pub const TAIL_FETCH_RECORDS_MAX: usize = 1_000;
/// Events committed together at most.
pub const PUBLISH_BATCH_RECORDS_MAX: usize = 1_000;
/// Events queued for the publisher at most; `submit` waits when it is full.
pub const PUBLISH_QUEUE_DEPTH_MAX: usize = 10_000;
/// How long the tail sleeps for a commit when it has read everything.
const TAIL_IDLE_WAIT: Duration = Duration::from_millis(50);

/// The payment ids the API makes start with this; others are not the API's business.
pub const API_PAYMENT_ID_PREFIX: &str = "pay_";

/// One event for the publisher, and where to say it is durable.
struct Publication {
    key: Vec<u8>,
    event: Vec<u8>,
    timestamp_ms: i64,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct LogIntake {
    log: Arc<dyn Log>,
    publications: std::sync::mpsc::SyncSender<Publication>,
    waiters: Mutex<HashMap<String, oneshot::Sender<DecisionNotice>>>,
    notices: Mutex<Option<mpsc::Receiver<PipelineNotice>>>,
}

impl LogIntake {
    /// Starts tailing; the thread ends when `stop` is set.
    pub fn start(
        log: Arc<dyn Log>,
        topics: &PipelineTopics,
        clock: Clock,
        stop: Arc<AtomicBool>,
    ) -> Result<Arc<LogIntake>, LogError> {
        let (sender, receiver) = mpsc::channel(NOTICES_QUEUE_MAX);
        let (publications, queue) = std::sync::mpsc::sync_channel(PUBLISH_QUEUE_DEPTH_MAX);
        let publisher_log = log.clone();
        let payments = topics.payments.clone();
        std::thread::Builder::new()
            .name("paystream-payments-publish".into())
            .spawn(move || publish(publisher_log.as_ref(), &payments, &queue))
            .map_err(LogError::io("spawn the payments publisher thread"))?;
        let intake = Arc::new(LogIntake {
            log: log.clone(),
            publications,
            waiters: Mutex::new(HashMap::new()),
            notices: Mutex::new(Some(receiver)),
        });
        let mut positions = Vec::new();
        for topic in [&topics.decisions, &topics.dead_letters, &topics.ledger] {
            for partition in 0..topic.partitions {
                // From the start: a decision made while no process was tailing (or not
                // yet recorded when one stopped) is recorded now; recording touches only
                // payments still pending, so reading one twice changes nothing.
                positions.push((topic.clone(), partition, log.offsets(topic, partition)?.start));
            }
        }
        let tail = intake.clone();
        let (decisions, ledger) = (topics.decisions.name.clone(), topics.ledger.name.clone());
        std::thread::Builder::new()
            .name("paystream-payments-tail".into())
            .spawn(move || tail.tail(positions, (&decisions, &ledger), clock, &sender, &stop))
            .map_err(LogError::io("spawn the payments tail thread"))?;
        Ok(intake)
    }

    fn tail(
        &self,
        mut positions: Vec<(Topic, u32, u64)>,
        (decisions, ledger): (&str, &str),
        clock: Clock,
        sender: &mpsc::Sender<PipelineNotice>,
        stop: &AtomicBool,
    ) {
        while !stop.load(Ordering::SeqCst) {
            let seen = self.log.commit_sequence();
            let mut read = false;
            for (topic, partition, offset) in &mut positions {
                let (is_decision, is_ledger) = (*topic.name == *decisions, *topic.name == *ledger);
                let result = read_to_written_end(
                    &*self.log,
                    topic,
                    *partition,
                    *offset,
                    TAIL_FETCH_RECORDS_MAX,
                    |record: &Record| {
                        if is_ledger {
                            for posting in wallet_postings(record, clock()) {
                                to_recorder(PipelineNotice::Posting(posting), sender);
                            }
                            return Ok::<(), LogError>(());
                        }
                        let notice = if is_decision {
                            decision_notice(record, clock())
                        } else {
                            dead_letter_notice(record, clock())
                        };
                        if let Some(notice) = notice {
                            self.deliver(notice, sender);
                        }
                        Ok::<(), LogError>(())
                    },
                );
                match result {
                    Ok(next) => {
                        read |= next != *offset;
                        *offset = next;
                    }
                    Err(error) => {
                        tracing::error!(%error, topic = %topic.name, partition, "tailing decisions failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
            if !read {
                self.log.wait_for_commit(seen, TAIL_IDLE_WAIT);
            }
        }
    }

    fn deliver(&self, notice: DecisionNotice, sender: &mpsc::Sender<PipelineNotice>) {
        if let Some(waiter) = self.waiters.lock().expect("waiters lock").remove(&notice.payment_id) {
            let _ = waiter.send(notice.clone());
        }
        to_recorder(PipelineNotice::Decision(notice), sender);
    }
}

/// Hands `notice` to the recorder (waits while its queue is full).
fn to_recorder(notice: PipelineNotice, sender: &mpsc::Sender<PipelineNotice>) {
    if sender.blocking_send(notice).is_err() {
        tracing::debug!("no recorder: a notice is not recorded");
    }
}

/// The publisher: takes what has queued up (at most [`PUBLISH_BATCH_RECORDS_MAX`]),
/// commits it as one transaction, answers each; ends when every sender is gone.
fn publish(log: &dyn Log, payments: &Topic, queue: &std::sync::mpsc::Receiver<Publication>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < PUBLISH_BATCH_RECORDS_MAX {
            match queue.try_recv() {
                Ok(publication) => batch.push(publication),
                Err(_) => break,
            }
        }
        let mut transaction = Transaction::new();
        let sent = batch.iter().try_for_each(|publication| {
            transaction.send(payments, &publication.key, &publication.event, publication.timestamp_ms)
        });
        let outcome = sent.and_then(|()| log.commit(transaction)).map_err(|error| error.to_string());
        for publication in batch {
            let _ = publication.done.send(outcome.clone());
        }
    }
}

/// `"pay_`: how an API payment id starts inside JSON; a cheap filter before parsing.
const API_PAYMENT_ID_NEEDLE: &[u8] = b"\"pay_";
const _: () = assert!(API_PAYMENT_ID_PREFIX.len() + 1 == API_PAYMENT_ID_NEEDLE.len());

fn has_api_payment_id(value: &[u8]) -> bool {
    value.windows(API_PAYMENT_ID_NEEDLE.len()).any(|window| window == API_PAYMENT_ID_NEEDLE)
}

fn decision_notice(record: &Record, now_ms: i64) -> Option<DecisionNotice> {
    if !has_api_payment_id(&record.value) {
        return None;
    }
    let decision: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    let payment_id = decision["payment_id"].as_str()?;
    if !payment_id.starts_with(API_PAYMENT_ID_PREFIX) {
        return None;
    }
    let status = match decision["outcome"].as_str()? {
        "approve" => "approved",
        "review" => "in_review",
        _ => "declined",
    };
    let reasons = decision["reasons"]
        .as_array()
        .map(|reasons| reasons.iter().filter_map(|reason| reason.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Some(DecisionNotice { payment_id: payment_id.to_string(), status, reasons, decided_at_ms: now_ms })
}

/// `"wallet:`: how a wallet account id starts inside JSON; a cheap filter before parsing.
const WALLET_ACCOUNT_NEEDLE: &[u8] = b"\"wallet:";

/// The wallets a ledger transaction moves, one posting per (wallet, currency) with its
/// net amount. Wallets of every user count, not only those made through the API:
/// a payment to a user from outside the API moves the user's balance too.
fn wallet_postings(record: &Record, now_ms: i64) -> Vec<WalletPosting> {
    if !record.value.windows(WALLET_ACCOUNT_NEEDLE.len()).any(|window| window == WALLET_ACCOUNT_NEEDLE) {
        return Vec::new();
    }
    let Ok(transaction) = serde_json::from_slice::<LedgerTransaction>(&record.value) else {
        tracing::warn!(offset = record.offset, "a ledger record that is not a ledger transaction");
        return Vec::new();
    };
    let mut postings: Vec<WalletPosting> = Vec::new();
    for posting in &transaction.postings {
        let Some(user_id) = posting.account_id.strip_prefix("wallet:") else { continue };
        // A wallet is a liability: credits fill it, debits empty it.
        let amount_minor = -posting.signed_minor_units();
        match postings.iter_mut().find(|known| known.user_id == user_id) {
            Some(known) => known.amount_minor += amount_minor,
            None => postings.push(WalletPosting {
                transaction_id: transaction.transaction_id.clone(),
                user_id: user_id.to_string(),
                currency: transaction.currency.code().to_string(),
                amount_minor,
                kind: transaction.kind.as_str().to_string(),
                payment_id: transaction.payment_id.clone(),
                event_time: transaction.event_time.clone(),
                recorded_at_ms: now_ms,
            }),
        }
    }
    postings
}

fn dead_letter_notice(record: &Record, now_ms: i64) -> Option<DecisionNotice> {
    let letter: serde_json::Value = serde_json::from_slice(&record.value).ok()?;
    let original = STANDARD.decode(letter["value_base64"].as_str()?).ok()?;
    if !has_api_payment_id(&original) {
        return None;
    }
    let payment: serde_json::Value = serde_json::from_slice(&original).ok()?;
    let payment_id = payment["payment_id"].as_str()?;
    let reason = letter["reason"].as_str()?.to_string();
    Some(DecisionNotice {
        payment_id: payment_id.to_string(),
        status: "rejected",
        reasons: vec![reason],
        decided_at_ms: now_ms,
    })
}

impl PaymentIntake for LogIntake {
    fn watch(&self, payment_id: &str) -> Option<oneshot::Receiver<DecisionNotice>> {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if waiters.len() >= WAITERS_MAX {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        waiters.insert(payment_id.to_string(), sender);
        Some(receiver)
    }

    fn unwatch(&self, payment_id: &str) {
        self.waiters.lock().expect("waiters lock").remove(payment_id);
    }

    fn submit<'a>(&'a self, payer: &'a str, event: Vec<u8>, timestamp_ms: i64) -> IntakeFuture<'a, ()> {
        let (done, answer) = oneshot::channel();
        let publication = Publication { key: payer.as_bytes().to_vec(), event, timestamp_ms, done };
        Box::pin(async move {
            match self.publications.try_send(publication) {
                Ok(()) => {}
                Err(std::sync::mpsc::TrySendError::Full(publication)) => {
                    // The queue is full: wait for room off the async threads.
                    let publications = self.publications.clone();
                    tokio::task::spawn_blocking(move || publications.send(publication))
                        .await
                        .map_err(|error| format!("publish queue: {error}"))?
                        .map_err(|_| "the publisher stopped".to_string())?;
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err("the publisher stopped".to_string()),
            }
            answer.await.map_err(|_| "the publisher stopped".to_string())?
        })
    }

    fn notices(&self) -> Option<mpsc::Receiver<PipelineNotice>> {
        self.notices.lock().expect("notices lock").take()
    }
}
