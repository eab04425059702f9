//! Keeps the materialized views of a process: those of the views file, and those of the
//! view catalog (created over the wire), which it follows while it runs: a view created
//! starts within [`CATALOG_POLL_INTERVAL_MS`], a view dropped stops.
//!
//! On Kafka each view commits through a log of its own, whose transactional id
//! (`paystream-view-<name>`) fences any other process keeping it; on the embedded log
//! through the log this process owns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use paystream_pipeline::log::Log;
use paystream_sql::SqlMetrics;
use paystream_sql::views::catalog::{Catalog, Change};
use paystream_sql::views::follower::CATALOG_POLL_INTERVAL_MS;
use paystream_sql::views::{RunningView, ViewDef};

use crate::log_args::{LogArgs, LogRole};

/// How often the catalog's follower looks whether to stop, between its reads.
const STOP_CHECK_INTERVAL_MS: u64 = 100;

/// The views a process keeps.
pub struct ViewKeeper {
    running: Arc<Mutex<Vec<RunningView>>>,
    follower: Option<std::thread::JoinHandle<()>>,
}

/// What starting a view needs, kept by the catalog's follower.
#[derive(Clone)]
struct Starter {
    log_args: LogArgs,
    embedded: Option<Arc<dyn Log>>,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    metrics: Option<SqlMetrics>,
}

impl Starter {
    fn start(&self, view: ViewDef) -> Result<RunningView> {
        let view_log = match self.log_args.open_kafka_for_view(&view.name, &view.topic())? {
            Some(kafka) => kafka as Arc<dyn Log>,
            None => self.embedded.clone().context("materialized views on the embedded log need its owner")?,
        };
        let names = self.log_args.topic_names()?;
        let topic_of = move |role: &str| names.of_role(role).unwrap_or(role).to_string();
        let (stop, drain) = (self.stop.clone(), self.drain.clone());
        let mut running =
            paystream_sql::views::spawn_views(vec![(view, view_log)], topic_of, stop, drain, self.metrics.clone())?;
        let view = running.pop().context("one view started")?;
        eprintln!("materialized view {} running", view.name);
        Ok(view)
    }
}

impl ViewKeeper {
    /// Starts the views of `fixed`, and with `catalog` (its topic) those of the view
    /// catalog, which it then follows until `stop` or `drain`.
    pub fn start(
        fixed: Vec<ViewDef>,
        catalog: Option<&str>,
        log_args: &LogArgs,
        embedded: Option<Arc<dyn Log>>,
        (stop, drain): (Arc<AtomicBool>, Arc<AtomicBool>),
        metrics: Option<SqlMetrics>,
    ) -> Result<ViewKeeper> {
        let starter = Starter { log_args: log_args.clone(), embedded: embedded.clone(), stop, drain, metrics };
        let followed = catalog.map(|topic| Catalog::new(topic, &fixed));
        let running = Arc::new(Mutex::new(Vec::new()));
        for view in fixed {
            running.lock().expect("views lock").push(starter.start(view)?);
        }
        let follower = if let Some(mut followed) = followed {
            let catalog_log: Arc<dyn Log> = match embedded {
                Some(log) => log,
                None => {
                    log_args.open_kafka(LogRole::Reader)?.context("the view catalog is on Kafka or the embedded log")?
                }
            };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let changes = runtime.block_on(followed.poll(catalog_log.as_ref()))?;
            apply(changes, &starter, &running);
            let running = running.clone();
            Some(std::thread::Builder::new().name("view-catalog".into()).spawn(move || {
                follow(followed, catalog_log, runtime, &starter, &running);
            })?)
        } else {
            None
        };
        Ok(ViewKeeper { running, follower })
    }

    /// Whether every view's thread has ended (they end with `drain` once read up, or
    /// on an error).
    pub fn all_finished(&self) -> bool {
        self.running.lock().expect("views lock").iter().all(|view| view.thread.is_finished())
    }

    /// Waits for the follower (which ends with `stop` or `drain`) and every view's thread, and
    /// prints what each did; returns the names of the views that stopped on an error.
    pub fn join(self) -> Vec<String> {
        if let Some(follower) = self.follower {
            let _ = follower.join();
        }
        let running = std::mem::take(&mut *self.running.lock().expect("views lock"));
        crate::sql::join_views(running)
    }
}

/// Reads the catalog every [`CATALOG_POLL_INTERVAL_MS`] until `stop`, or `drain` (the
/// views finish what they read; no new one starts).
fn follow(
    mut catalog: Catalog,
    log: Arc<dyn Log>,
    runtime: tokio::runtime::Runtime,
    starter: &Starter,
    running: &Mutex<Vec<RunningView>>,
) {
    let poll = Duration::from_millis(CATALOG_POLL_INTERVAL_MS);
    let step = Duration::from_millis(STOP_CHECK_INTERVAL_MS);
    loop {
        let mut waited = Duration::ZERO;
        while waited < poll {
            if starter.stop.load(Ordering::SeqCst) || starter.drain.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(step);
            waited += step;
        }
        match runtime.block_on(catalog.poll(log.as_ref())) {
            Ok(changes) => apply(changes, starter, running),
            Err(error) => tracing::warn!(%error, "reading the view catalog failed; retrying"),
        }
    }
}

/// Starts the views created and stops the views dropped. A view that cannot start says
/// why and is left out; the others go on.
fn apply(changes: Vec<Change>, starter: &Starter, running: &Mutex<Vec<RunningView>>) {
    for change in changes {
        match change {
            Change::Created(view) => {
                let name = view.name.clone();
                match starter.start(view) {
                    Ok(view) => running.lock().expect("views lock").push(view),
                    Err(error) => {
                        tracing::error!(view = %name, %error, "materialized view not started");
                        eprintln!("materialized view {name} not started: {error:#}");
                    }
                }
            }
            Change::Dropped(name) => {
                let dropped: Vec<RunningView> = {
                    let mut running = running.lock().expect("views lock");
                    let (dropped, kept) = std::mem::take(&mut *running).into_iter().partition(|view| view.name == name);
                    *running = kept;
                    dropped
                };
                for view in dropped {
                    view.stats.dropped.store(true, Ordering::SeqCst);
                    let _ = view.thread.join();
                    if let Some(metrics) = &starter.metrics {
                        metrics.forget_view(&name);
                    }
                    eprintln!("materialized view {name} dropped");
                }
            }
        }
    }
}
