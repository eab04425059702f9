//! `paystream serve` on embedded defaults: the gateway answers on its address, the
//! operations endpoints report liveness, readiness and metrics Prometheus accepts, and
//! accounts, sessions and signing keys survive a SIGKILL.

mod common;

use common::served::{Served, http, json_of, post_once, start_serve, start_serve_with};
use common::{paystream, wait_until};
use serde_json::json;

#[test]
fn serve_answers_reports_readiness_and_keeps_accounts_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let served = start_serve(dir.path());
    wait_until("serve is ready", 60, 100, || http(&served.operations, "GET", "/readyz", None, None).0 == 200);
    assert_eq!(http(&served.operations, "GET", "/livez", None, None).0, 200);

    let signup = json!({"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"});
    let (status, body) = http(&served.gateway, "POST", "/v1/auth/signup", None, Some(signup.clone()));
    assert_eq!(status, 201, "{body}");
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, body) = http(&served.gateway, "POST", "/v1/auth/login", None, Some(login.clone()));
    assert_eq!(status, 200, "{body}");
    let tokens = json_of(&body);
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, body) = http(&served.gateway, "GET", "/v1/me", Some(&access), None);
    assert_eq!((status, json_of(&body)["email"].as_str()), (200, Some("ada@example.com")));
    // A top-up and a payment through the gateway, each answered with the pipeline's
    // decision; the same key again replays the answer and publishes nothing.
    let top_up = json!({"amount": "50.00", "currency": "EUR"});
    let (status, body) = post_once(&served.gateway, "/v1/wallet/top-ups", &access, "t-1", top_up);
    assert_eq!((status, json_of(&body)["status"].as_str()), (201, Some("approved")), "{body}");
    let payment = json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "12.34", "currency": "EUR"});
    let (status, paid) = post_once(&served.gateway, "/v1/payments", &access, "p-1", payment.clone());
    assert_eq!((status, json_of(&paid)["status"].as_str()), (201, Some("approved")), "{paid}");
    let (status, replayed) = post_once(&served.gateway, "/v1/payments", &access, "p-1", payment.clone());
    assert_eq!((status, &replayed), (201, &paid));
    let dumped = paystream().args(["log", "dump", "payments", "--data-dir"]).arg(dir.path()).output().unwrap();
    let payment_id = json_of(&paid)["payment_id"].as_str().unwrap().to_string();
    assert_eq!(String::from_utf8_lossy(&dumped.stdout).matches(&payment_id).count(), 1, "one event");

    let (status, document) = http(&served.gateway, "GET", "/openapi.json", None, None);
    assert_eq!((status, json_of(&document)["openapi"].as_str()), (200, Some("3.1.0")));
    let (status, body) = http(&served.gateway, "GET", "/v1/nothing", None, None);
    assert_eq!((status, json_of(&body)["code"].as_str()), (404, Some("not_found")));

    // Prometheus's linter accepts the whole exposition, pipeline and HTTP metrics alike.
    let (_, metrics) = http(&served.operations, "GET", "/metrics", None, None);
    for expected in
        ["paystream_http_requests_total{method=\"GET\",route=\"/v1/me\",status=\"200\"} 1", "paystream_batch_seconds"]
    {
        assert!(metrics.contains(expected), "{expected} missing");
    }
    common::assert_promtool_accepts(&metrics);

    // SIGKILL: no chance to flush anything.
    let Served { process: mut killed, .. } = served;
    killed.kill().unwrap();
    killed.wait().unwrap();
    let served = start_serve(dir.path());
    wait_until("serve is ready again", 60, 100, || http(&served.operations, "GET", "/readyz", None, None).0 == 200);
    let (status, _) = http(&served.gateway, "GET", "/v1/me", Some(&access), None);
    assert_eq!(status, 200, "the signing key and the session survived");
    // The payment and its idempotency record survived too: the same key replays the
    // same answer.
    let (status, stored) = http(&served.gateway, "GET", &format!("/v1/payments/{payment_id}"), Some(&access), None);
    assert_eq!((status, json_of(&stored)["status"].as_str()), (200, Some("approved")), "{stored}");
    let (status, replayed) = post_once(&served.gateway, "/v1/payments", &access, "p-1", payment.clone());
    assert_eq!((status, &replayed), (201, &paid));
    let (status, body) =
        http(&served.gateway, "POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": refresh})));
    assert_eq!(status, 200, "the refresh token survived: {body}");
    let (status, _) = http(&served.gateway, "POST", "/v1/auth/signup", None, Some(signup));
    assert_eq!(status, 409, "the account survived");
    let (status, body) = http(&served.gateway, "POST", "/v1/auth/login", None, Some(login.clone()));
    assert_eq!(status, 200);
    let access = json_of(&body)["access_token"].as_str().unwrap().to_string();

    // The operator makes the first admin; tokens issued before stop at once.
    let granted = paystream()
        .args(["auth", "set-roles", "--email", "Ada@example.com", "--role", "admin", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    assert_eq!(http(&served.gateway, "GET", "/v1/me", Some(&access), None).0, 401);
    let (_, body) = http(&served.gateway, "POST", "/v1/auth/login", None, Some(login));
    let access = json_of(&body)["access_token"].as_str().unwrap().to_string();
    let (_, body) = http(&served.gateway, "GET", "/v1/me", Some(&access), None);
    assert_eq!(json_of(&body)["roles"], json!(["admin"]));
}

#[test]
fn two_gateway_processes_on_one_redis_share_the_login_limit() {
    let redis = std::env::var("PAYSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("test:serve:{}", paystream_testkit::unique_suffix());
    let extra = [
        "--service",
        "auth",
        "--redis-url",
        &redis,
        "--rate-limit-prefix",
        &prefix,
        "--auth-rate-limit-per-minute",
        "4",
    ];
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let gateways = [start_serve_with(first_dir.path(), &extra), start_serve_with(second_dir.path(), &extra)];
    // An auth-only process still exports its build and process metrics.
    let (_, metrics) = http(&gateways[0].operations, "GET", "/metrics", None, None);
    assert!(metrics.contains("paystream_build_info{") && metrics.contains("process_resident_memory_bytes "));
    assert!(!metrics.contains("paystream_batch_seconds"), "no pipeline here");
    common::assert_promtool_accepts(&metrics);
    let login = json!({"email": "nobody@example.com", "password": "not the password"});
    let statuses: Vec<u16> =
        (0..8).map(|i| http(&gateways[i % 2].gateway, "POST", "/v1/auth/login", None, Some(login.clone())).0).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 401).count(), 4, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 429).count(), 4, "{statuses:?}");
}

#[test]
fn loadtest_drives_serve_and_every_payment_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    let served =
        start_serve_with(dir.path(), &["--rate-limit-per-minute", "100000", "--auth-rate-limit-per-minute", "1000"]);
    wait_until("serve is ready", 60, 100, || http(&served.operations, "GET", "/readyz", None, None).0 == 200);
    let output = paystream()
        .args(["loadtest", "--rate", "100", "--duration", "2", "--users", "3", "--url"])
        .arg(format!("http://{}", served.gateway))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("answers: 201 (decided) 200, 202 (pending) 0, 429 0, 5xx 0"), "{stdout}");
    assert!(stdout.contains("latency from due time: p50"), "{stdout}");
}

/// For Kubernetes: the auth service, the payments API (with the pipeline) and the
/// gateway each in their own process, the services sharing PostgreSQL and one signing
/// key file. The gateway forwards by path prefix; an upstream that cannot be reached is
/// a 502, one that does not answer in time a 504.
#[test]
fn a_gateway_alone_forwards_to_services_in_other_processes() {
    let postgres = paystream_testkit::postgres_url();
    let suffix = paystream_testkit::unique_suffix();
    let (auth_schema, payments_schema) = (format!("test_split_auth_{suffix}"), format!("test_split_payments_{suffix}"));
    // (With PostgreSQL the pipeline also copies its records there: into this test's schema.)
    let records_schema = format!("test_split_records_{suffix}");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let shared = ["--postgres-url", &postgres, "--auth-schema", &auth_schema, "--trusted-proxy", "127.0.0.1"];
    let auth = start_serve_with(dirs[0].path(), &[&["--service", "auth"][..], &shared[..]].concat());
    let key_file = dirs[0].path().join("services/auth-keys.json");
    let key_file = key_file.to_str().unwrap();
    let payments_only = [
        "--service",
        "payments",
        "--payments-schema",
        &payments_schema,
        "--postgres-schema",
        &records_schema,
        "--auth-key-file",
        key_file,
    ];
    let payments = start_serve_with(dirs[1].path(), &[&payments_only[..], &shared[..]].concat());
    wait_until("the payments service is ready", 60, 100, || {
        http(&payments.operations, "GET", "/readyz", None, None).0 == 200
    });
    // An upstream that accepts connections and never answers, and one that is gone.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_address = hung.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().collect();
        drop(held);
    });
    let gone_address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let routes = [
        format!("/v1/auth=http://{}", auth.gateway),
        format!("/v1/me=http://{}", auth.gateway),
        format!("/v1/payments=http://{}", payments.gateway),
        format!("/v1/wallet=http://{}", payments.gateway),
        format!("/v1/balance=http://{}", payments.gateway),
        format!("/v1/slow=http://{hung_address}"),
        format!("/v1/gone=http://{gone_address}"),
    ];
    let mut gateway_args = vec!["--service", "gateway", "--request-timeout-ms", "1500"];
    for route in &routes {
        gateway_args.extend(["--route", route]);
    }
    let gateway = start_serve_with(dirs[2].path(), &gateway_args);
    let at = gateway.gateway.as_str();

    let signup = json!({"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"});
    assert_eq!(http(at, "POST", "/v1/auth/signup", None, Some(signup)).0, 201);
    let login = json!({"email": "ada@example.com", "password": "correct horse battery"});
    let (status, body) = http(at, "POST", "/v1/auth/login", None, Some(login));
    assert_eq!(status, 200, "{body}");
    let access = json_of(&body)["access_token"].as_str().unwrap().to_string();
    let (status, body) = http(at, "GET", "/v1/me", Some(&access), None);
    assert_eq!((status, json_of(&body)["email"].as_str()), (200, Some("ada@example.com")), "{body}");
    // The payments service knows the token the auth service issued.
    let (status, body) =
        post_once(at, "/v1/wallet/top-ups", &access, "t-1", json!({"amount": "50.00", "currency": "EUR"}));
    assert_eq!((status, json_of(&body)["status"].as_str()), (201, Some("approved")), "{body}");
    let payment = json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "12.34", "currency": "EUR"});
    let (status, paid) = post_once(at, "/v1/payments", &access, "p-1", payment);
    assert_eq!((status, json_of(&paid)["status"].as_str()), (201, Some("approved")), "{paid}");
    let payment_id = json_of(&paid)["payment_id"].as_str().unwrap().to_string();
    let (status, body) = http(at, "GET", &format!("/v1/payments/{payment_id}"), Some(&access), None);
    assert_eq!((status, json_of(&body)["payment_id"].as_str()), (200, Some(payment_id.as_str())), "{body}");
    wait_until("the balance shows both", 30, 100, || {
        let (_, body) = http(at, "GET", "/v1/balance", Some(&access), None);
        json_of(&body)["balances"][0]["balance"] == "37.66"
    });
    assert_eq!(http(at, "GET", "/v1/payments", Some("not-a-token"), None).0, 401, "the service authenticates");
    let (status, body) = http(at, "GET", "/v1/nothing", None, None);
    assert_eq!((status, json_of(&body)["code"].as_str()), (404, Some("not_found")), "no route: the gateway's 404");

    let (status, body) = http(at, "GET", "/v1/gone/1", None, None);
    assert_eq!((status, json_of(&body)["code"].as_str()), (502, Some("bad_gateway")), "{body}");
    assert!(!body.contains(&gone_address), "no internals in the error: {body}");
    let (status, body) = http(at, "GET", "/v1/slow", None, None);
    assert_eq!((status, json_of(&body)["code"].as_str()), (504, Some("timeout")), "{body}");

    let (_, metrics) = http(&gateway.operations, "GET", "/metrics", None, None);
    assert!(metrics.contains("route=\"/v1/payments/{*rest}\""), "forwarded routes are measured");
    assert!(!metrics.contains("paystream_batch_seconds"), "no pipeline in the gateway");
    common::assert_promtool_accepts(&metrics);

    drop((gateway, payments, auth));
    let dropped = std::process::Command::new("psql")
        .args([&postgres, "-q", "-c"])
        .arg(format!(
            "DROP SCHEMA {auth_schema} CASCADE; DROP SCHEMA {payments_schema} CASCADE; DROP SCHEMA {records_schema} CASCADE"
        ))
        .output()
        .expect("psql");
    assert!(dropped.status.success(), "{}", String::from_utf8_lossy(&dropped.stderr));
}
