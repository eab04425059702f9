//! The model the workers score with, and its hot reload from a model file.
//!
//! Workers hold the current model and check [`ModelHandle::generation`] once per batch;
//! a watcher thread polls the model file and swaps in a new model when the file changes
//! and the new one loads and checks out. A file that fails to load (bad JSON, unknown
//! features, a different label delay) is refused with a log line and a metric, and the
//! running model stays — a bad deploy never stops scoring.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use paystream_models::{FraudModel, LoadedModel};

use crate::context::RunContext;
use crate::error::RuntimeError;

/// The current model and a counter that moves each time it is replaced.
pub struct ModelHandle {
    slot: RwLock<(u64, Arc<dyn FraudModel>)>,
}

impl ModelHandle {
    pub fn new(model: Arc<dyn FraudModel>) -> ModelHandle {
        ModelHandle { slot: RwLock::new((0, model)) }
    }

    pub fn current(&self) -> (u64, Arc<dyn FraudModel>) {
        let slot = self.slot.read().expect("model lock");
        (slot.0, slot.1.clone())
    }

    pub fn generation(&self) -> u64 {
        self.slot.read().expect("model lock").0
    }

    pub fn replace(&self, model: Arc<dyn FraudModel>) {
        let mut slot = self.slot.write().expect("model lock");
        *slot = (slot.0 + 1, model);
    }
}

/// Loads a model file for the pipeline: any trained kind, every feature one paystream
/// computes, trained with the pipeline's label delay.
pub fn load_model_file(path: &Path, label_delay_ms: i64) -> Result<LoadedModel, RuntimeError> {
    let fail = |why: String| RuntimeError::Model { path: path.to_path_buf(), why };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let model = LoadedModel::from_json(&text).map_err(|e| fail(e.to_string()))?;
    match model.model().label_delay_ms() {
        Some(delay) if delay != label_delay_ms => Err(fail(format!(
            "trained with a label delay of {delay} ms but the pipeline uses {label_delay_ms} ms; its terminal features would differ"
        ))),
        _ => Ok(model),
    }
}

/// What identifies a version of the file on disk.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls `path` every `model_poll_ms` until the workers finish, swapping in each new
/// version that loads.
pub(crate) fn watch_model_file(path: &Path, run: &RunContext<'_>, handle: &ModelHandle) {
    let (metrics, finished) = (run.metrics, run.workers_finished);
    let label_delay_ms = run.config.operators.label_delay_ms;
    let poll = Duration::from_millis(run.config.model_poll_ms);
    let mut seen = stamp(path);
    let mut last_check = std::time::Instant::now();
    while !finished.load(Ordering::SeqCst) {
        // Short sleeps, so the watcher notices the end of the run quickly.
        std::thread::sleep(poll.min(Duration::from_millis(50)));
        if last_check.elapsed() < poll {
            continue;
        }
        last_check = std::time::Instant::now();
        let now = stamp(path);
        if now.is_none() || now == seen {
            continue;
        }
        // A writer may be mid-write: wait until the file is stable for one poll.
        std::thread::sleep(poll.min(Duration::from_millis(200)));
        if stamp(path) != now {
            continue;
        }
        seen = now;
        match load_model_file(path, label_delay_ms) {
            Ok(model) => {
                let old = handle.current().1.version().to_string();
                let model: Arc<dyn FraudModel> = Arc::new(model);
                metrics.model_loaded(&old, model.version());
                tracing::info!(from = %old, to = %model.version(), path = %path.display(), "model reloaded");
                handle.replace(model);
                metrics.model_reloads.with_label_values(&["ok"]).inc();
            }
            Err(error) => {
                tracing::error!(%error, "model file changed but cannot be loaded; keeping the running model");
                metrics.model_reloads.with_label_values(&["error"]).inc();
            }
        }
    }
}
