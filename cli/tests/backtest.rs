//! `paystream backtest` runs the reference protocol end to end on a generated CSV.

mod common;

use common::paystream;

#[test]
fn backtest_on_a_small_generated_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("transactions.csv");
    let scores = dir.path().join("scores.csv");
    let model = dir.path().join("model.json");
    common::generate_csv(&csv, 1_000, 2_000, 40, 5);
    let output = paystream()
        .arg("backtest")
        .arg(&csv)
        .args(["--train-start", "2018-04-16", "--scores"])
        .arg(&scores)
        .arg("--model-out")
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let metric = |name: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    // Even on this small data set the online features separate fraud well; the
    // published reference data set gives ROC AUC 0.905 (README).
    assert!(metric("ROC AUC") > 0.75, "{stdout}");
    assert!(metric("avg precision") > 0.2, "{stdout}");
    let score_lines = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(score_lines.lines().next(), Some("TRANSACTION_ID,score"));
    let tested: usize = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("test "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(score_lines.lines().count(), tested + 1, "one score per test transaction");
    let model: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(model["feature_names"].as_array().unwrap().len(), 22, "extended features by default");
    assert_eq!(model["kind"], "gradient_boosted_trees", "the tree ensemble by default");
    // `train` writes the same model the backtest trained (training is deterministic).
    let trained = dir.path().join("trained.json");
    let train = paystream()
        .arg("train")
        .arg(&csv)
        .args(["--train-start", "2018-04-16", "--train-days", "7", "--model", "gbt", "--out"])
        .arg(&trained)
        .output()
        .unwrap();
    assert!(train.status.success(), "{}", String::from_utf8_lossy(&train.stderr));
    let trained: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trained).unwrap()).unwrap();
    assert_eq!(trained["version"], model["version"]);
    // Logistic regression runs the same protocol.
    let logistic = paystream()
        .arg("backtest")
        .arg(&csv)
        .args(["--train-start", "2018-04-16", "--model", "logistic"])
        .output()
        .unwrap();
    let logistic_stdout = String::from_utf8_lossy(&logistic.stdout);
    assert!(logistic.status.success(), "{logistic_stdout}");
    assert!(logistic_stdout.contains("logistic_regression"), "{logistic_stdout}");
    // Unknown model kinds are refused clearly.
    let refused = paystream().arg("backtest").arg(&csv).args(["--model", "xgboost"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("use one of logistic, gbt"));
}
