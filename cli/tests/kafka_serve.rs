//! The payments API on Kafka (the test broker, a real Apache Kafka), scaled out as on
//! Kubernetes: the pipeline as a `paystream run` process, the auth service and the
//! payments API as `serve --service …` processes. The API publishes to the payments
//! topic and reads decisions and the ledger back from Kafka.

mod common;

use common::served::{http, json_of, post_once, start_serve_with};
use common::{Running, paystream, wait_until};
use serde_json::json;

#[test]
fn the_payments_api_alone_publishes_to_kafka_and_reads_decisions_back() {
    common::use_real_kafka("serve");
    let (pipeline_dir, services_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let _pipeline = Running(
        paystream()
            .args(["run", "--no-metrics", "--workers", "2", "--data-dir"])
            .arg(pipeline_dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn paystream run"),
    );
    // The two services share the auth store and keys (SQLite files in one directory).
    let auth = start_serve_with(services_dir.path(), &["--service", "auth"]);
    let payments = start_serve_with(services_dir.path(), &["--service", "payments"]);
    wait_until("the payments service is ready", 60, 100, || {
        http(&payments.operations, "GET", "/readyz", None, None).0 == 200
    });

    let signup = json!({"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"});
    assert_eq!(http(&auth.gateway, "POST", "/v1/auth/signup", None, Some(signup)).0, 201);
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, body) = http(&auth.gateway, "POST", "/v1/auth/login", None, Some(login));
    assert_eq!(status, 200, "{body}");
    let access = json_of(&body)["access_token"].as_str().unwrap().to_string();

    // The pipeline may still be joining its group: wait for the decision as long as it takes.
    let top_up = json!({"amount": "50.00", "currency": "EUR"});
    let (status, body) = post_once(&payments.gateway, "/v1/wallet/top-ups", &access, "t-1", top_up);
    assert!(status == 201 || status == 202, "{status} {body}");
    let top_up_id = json_of(&body)["payment_id"].as_str().unwrap().to_string();
    wait_until("the top-up is decided", 120, 200, || {
        let (_, body) = http(&payments.gateway, "GET", &format!("/v1/payments/{top_up_id}"), Some(&access), None);
        json_of(&body)["status"] != "pending"
    });
    let payment = json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "12.34", "currency": "EUR"});
    let (status, paid) = post_once(&payments.gateway, "/v1/payments", &access, "p-1", payment.clone());
    assert_eq!((status, json_of(&paid)["status"].as_str()), (201, Some("approved")), "{paid}");
    let (status, replayed) = post_once(&payments.gateway, "/v1/payments", &access, "p-1", payment);
    assert_eq!((status, &replayed), (201, &paid), "replayed byte for byte");
    wait_until("the balance shows both", 60, 100, || {
        let (_, body) = http(&payments.gateway, "GET", "/v1/balance", Some(&access), None);
        json_of(&body)["balances"][0]["balance"] == "37.66"
    });

    // One event per payment in the topic.
    let payment_id = json_of(&paid)["payment_id"].as_str().unwrap().to_string();
    let dumped = paystream()
        .args(["log", "dump", &common::topic("payments"), "--data-dir"])
        .arg(pipeline_dir.path())
        .output()
        .unwrap();
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    assert_eq!(String::from_utf8_lossy(&dumped.stdout).matches(&payment_id).count(), 1, "one event");
}
