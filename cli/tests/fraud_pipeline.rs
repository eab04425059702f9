//! The learned model inside `paystream run`: the pipeline's online features are the
//! ones the model was trained on (no training/serving skew), every decision carries
//! the model version and reasons, and a crash changes no score.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{check_exactly_once, dump, paystream, run_ok};

struct Trained {
    csv: PathBuf,
    model: PathBuf,
    /// Backtest scores of the test-set transactions.
    scores: HashMap<String, f64>,
    version: String,
}

/// Generates a small handbook data set, backtests a gradient-boosted model on it and
/// keeps the model file and the test-set scores.
fn train(dir: &Path) -> Trained {
    let csv = dir.join("transactions.csv");
    let scores_csv = dir.join("scores.csv");
    let model = dir.join("model.json");
    common::generate_csv(&csv, 600, 1_200, 40, 8);
    let output = paystream()
        .arg("backtest")
        .arg(&csv)
        .args(["--train-start", "2018-04-16", "--model", "gbt", "--scores"])
        .arg(&scores_csv)
        .arg("--model-out")
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let version = stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("model"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("backtest prints the model version")
        .to_string();
    let scores = std::fs::read_to_string(&scores_csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| {
            let (id, score) = line.split_once(',').unwrap();
            (id.to_string(), score.parse().unwrap())
        })
        .collect();
    Trained { csv, model, scores, version }
}

/// payment id → (score, model version, outcome, reasons) from the decisions topic.
fn decisions(data: &Path) -> HashMap<String, (f64, String, String, Vec<String>)> {
    dump(data, "decisions")
        .into_iter()
        .map(|record| {
            let v = &record["value"];
            let reasons = v["reasons"]
                .as_array()
                .map_or(Vec::new(), |r| r.iter().map(|x| x.as_str().unwrap().to_string()).collect());
            (
                v["payment_id"].as_str().unwrap().to_string(),
                (
                    v["score"].as_f64().unwrap(),
                    v["model_version"].as_str().unwrap().to_string(),
                    v["outcome"].as_str().unwrap().to_string(),
                    reasons,
                ),
            )
        })
        .collect()
}

fn assert_same_scores(expected: &HashMap<String, f64>, got: &HashMap<String, (f64, String, String, Vec<String>)>) {
    let mut compared = 0;
    for (id, score) in expected {
        let (live, ..) = got.get(id).unwrap_or_else(|| panic!("payment {id} was not decided"));
        // Decisions carry the score as f32.
        assert!((live - score).abs() <= 1e-6 * score.max(1e-3), "payment {id}: live {live} vs backtest {score}");
        compared += 1;
    }
    assert!(compared > 1_000, "only {compared} scores compared");
}

/// A trained model and its data set replayed over four partitions into `dir/data`.
fn replayed(dir: &Path) -> (Trained, PathBuf) {
    let trained = train(dir);
    let data = dir.join("data");
    run_ok(&data, &["replay", trained.csv.to_str().unwrap(), "--partitions", "4"]);
    (trained, data)
}

#[test]
fn live_pipeline_scores_exactly_as_the_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let (trained, data) = replayed(dir.path());
    let model = trained.model.to_str().unwrap();
    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--workers", "2", "--model", model]);

    let decided = decisions(&data);
    // The same features, computed by the same operators — here across four partitions,
    // two workers and a terminal index fed by the labels topic — give the same scores.
    assert_same_scores(&trained.scores, &decided);
    assert!(decided.values().all(|(_, version, ..)| *version == trained.version), "every decision is stamped");
    let flagged: Vec<_> = decided.values().filter(|(_, _, outcome, _)| outcome != "approve").collect();
    assert!(!flagged.is_empty(), "the model flags some payments");
    assert!(flagged.iter().all(|(.., reasons)| !reasons.is_empty() && reasons.len() <= 3), "{flagged:?}");
    assert!(
        flagged.iter().any(|(.., reasons)| reasons.iter().any(|r| r.starts_with("TERMINAL_ID_RISK"))),
        "terminal risk (fed by the label stream) explains some flagged payments"
    );
    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!(decisions + dead_letters, dump(&data, "payments").len());
}

/// Batches of two payments span minutes of event time, far less than the allowed
/// lateness (1 h): every payer needs the other partitions indexed past what their
/// workers hold in their buffers (3 batches), so the workers must index ahead by event
/// time (indexed, dropped, parsed again when scored). The run finishes — no payer waits
/// on another forever — and scores exactly as the backtest.
#[test]
fn batches_shorter_than_the_lateness_still_finish_and_score_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (trained, data) = replayed(dir.path());
    let model = trained.model.to_str().unwrap();
    let mut child = spawn_quiet(
        &data,
        &["run", "--no-metrics", "--until-idle", "--no-fsync", "--workers", "2", "--batch-records-max", "2"],
        &["--model", model],
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the run did not finish: payers wait on each other");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_same_scores(&trained.scores, &decisions(&data));
    let (decisions, dead_letters) = check_exactly_once(&data, true);
    assert_eq!(decisions + dead_letters, dump(&data, "payments").len());
}

/// Kills the child if the test fails before it does.
struct Running(Child);

/// `paystream ARGS MORE --data-dir DATA`, its output discarded.
fn spawn_quiet(data: &Path, args: &[&str], more: &[&str]) -> Running {
    let mut command = paystream();
    command.args(args).args(more).arg("--data-dir").arg(data).stdout(Stdio::null()).stderr(Stdio::null());
    Running(command.spawn().unwrap())
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decisions_so_far(data: &Path) -> usize {
    let output = paystream().args(["log", "topics", "--data-dir"]).arg(data).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("decisions\t"))
        .and_then(|l| l.split('\t').find_map(|f| f.strip_prefix("records=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn crashes_change_no_score() {
    let dir = tempfile::tempdir().unwrap();
    let trained = train(dir.path());
    let model = trained.model.to_str().unwrap();
    let data = dir.path().join("data");
    run_ok(&data, &["replay", trained.csv.to_str().unwrap(), "--partitions", "3"]);
    let total = dump(&data, "payments").len();

    let mut previous = 0;
    for (round, delay_ms) in [60u64, 300, 150].into_iter().enumerate() {
        let mut child = spawn_quiet(
            &data,
            &["run", "--no-metrics", "--batch-records-max", "64", "--snapshot-interval-batches", "5"],
            &["--max-input-rate", "20000", "--model", model],
        );
        let started = Instant::now();
        while decisions_so_far(&data) <= previous {
            assert!(started.elapsed() < Duration::from_secs(60), "round {round}: no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        let decided = decisions_so_far(&data);
        assert!(decided < total, "round {round}: finished before the kill");
        previous = decided;
        check_exactly_once(&data, false);
    }
    run_ok(&data, &["run", "--no-metrics", "--until-idle", "--model", model]);
    let (decisions_count, dead_letters) = check_exactly_once(&data, true);
    assert_eq!(decisions_count + dead_letters, total);
    // Restored customer windows and terminal index give exactly the uninterrupted scores.
    assert_same_scores(&trained.scores, &decisions(&data));
}
