//! The payments API against a real pipeline on the durable embedded log, with its state
//! on SQLite and on PostgreSQL: idempotency, decisions, object-level authorization,
//! pagination and validation.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use paystream_auth::service::system_clock;
use paystream_auth::{AuthConfig, AuthService, AuthStore, Keyring};
use paystream_http::Role;
use paystream_operators::{OperatorConfig, default_model};
use paystream_payments::{LogIntake, PaymentsService, PaymentsStore};
use paystream_pipeline::log::Log;
use paystream_pipeline::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use paystream_pipeline::{Pipeline, PipelineConfig, RunControl, RunMode, ensure_topics};
use paystream_storage::FileSnapshotStore;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    store_name: &'static str,
    router: Router,
    auth: Arc<AuthService>,
    payments: Arc<PaymentsService>,
    log: Arc<dyn Log>,
    control: Arc<RunControl>,
    intake_stop: Arc<AtomicBool>,
    pipeline: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.control.stop();
        self.intake_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.join().unwrap();
        }
    }
}

async fn harness(store_name: &'static str, store: PaymentsStore) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = Arc::new(EmbeddedLog::open(EmbeddedLogConfig::new(dir.path().join("log"))).unwrap());
    let config = PipelineConfig { partitions: 4, workers: 1, ..PipelineConfig::default() };
    let topics = ensure_topics(log.as_ref(), &config).unwrap();
    let snapshots = Arc::new(FileSnapshotStore::open(dir.path().join("snapshots")).unwrap());
    let control = Arc::new(RunControl::new(true));
    let pipeline = Pipeline::new(log.clone(), snapshots, default_model(&OperatorConfig::default()), config);
    let running = control.clone();
    let pipeline = std::thread::spawn(move || {
        pipeline.run(RunMode::Forever, &running).unwrap();
    });
    let intake_stop = Arc::new(AtomicBool::new(false));
    let intake = LogIntake::start(log.clone(), &topics, system_clock(), intake_stop.clone()).unwrap();
    let payments = PaymentsService::start(store, intake, system_clock());
    let auth_store = AuthStore::open_embedded(&dir.path().join("services")).await.unwrap();
    let keys = Keyring::generate(0).unwrap();
    let auth = Arc::new(AuthService::new(auth_store, keys, AuthConfig::default(), system_clock()).await.unwrap());
    let authenticator = paystream_auth::authenticator(&auth);
    let router = paystream_auth::router(auth.clone()).merge(paystream_payments::router(payments.clone())).layer(
        axum::middleware::from_fn(move |request, next| {
            paystream_http::principal::layer(authenticator.clone(), request, next)
        }),
    );
    Harness { store_name, router, auth, payments, log, control, intake_stop, pipeline: Some(pipeline), _dir: dir }
}

/// Runs `check` with the payments store on SQLite, then on a PostgreSQL schema.
async fn on_every_store<F, Fut>(test: &str, check: F)
where
    F: Fn(Harness) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    check(harness("sqlite", PaymentsStore::open_embedded(dir.path()).await.unwrap()).await).await;
    let schema = format!("test_payments_{test}_{}", paystream_testkit::unique_suffix());
    let postgres = PaymentsStore::connect(&paystream_testkit::postgres_url(), &schema)
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL must be running ({}): {error}", paystream_testkit::postgres_url()));
    check(harness("postgres", postgres.clone()).await).await;
    postgres.drop_schema(&schema).await.unwrap();
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request =
            Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request.header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec();
        Answer { status, headers, bytes }
    }

    /// Signs up and logs in; `merchant` binds the account to a merchant id.
    async fn user(&self, email: &str, merchant: Option<&str>) -> String {
        let account = self.auth.signup(email, "correct horse battery", "Test").await.unwrap();
        if let Some(merchant_id) = merchant {
            self.auth.set_roles(&account.user_id, &[Role::Merchant], Some(merchant_id)).await.unwrap();
        }
        self.auth.login(email, "correct horse battery", None).await.unwrap().access_token
    }

    async fn pay(&self, token: &str, key: &str, body: Value) -> Answer {
        self.call(Method::POST, "/v1/payments", token, &[("idempotency-key", key)], Some(body)).await
    }

    async fn top_up(&self, token: &str, key: &str, amount: &str) -> Answer {
        let body = json!({"amount": amount, "currency": "EUR"});
        self.call(Method::POST, "/v1/wallet/top-ups", token, &[("idempotency-key", key)], Some(body)).await
    }

    /// The caller's balances once its EUR balance is `balance_minor` (the ledger is
    /// recorded as the pipeline writes it), without their times.
    async fn balances(&self, token: &str, balance_minor: i64) -> Value {
        let mut balances = Value::Null;
        for _ in 0..200 {
            balances = self.call(Method::GET, "/v1/balance", token, &[], None).await.json()["balances"].clone();
            if balances[0]["balance_minor"] == balance_minor {
                for balance in balances.as_array_mut().unwrap() {
                    assert!(balance["updated_at_ms"].as_i64().unwrap() > 0, "{balance}");
                    balance.as_object_mut().unwrap().remove("updated_at_ms");
                }
                return balances;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the balance never reached {balance_minor}: {balances}");
    }

    /// How many events with `payment_id` the payments topic holds.
    fn events(&self, payment_id: &str) -> usize {
        let topic = self.log.topic("payments").unwrap();
        (0..topic.partitions)
            .flat_map(|partition| self.log.fetch(&topic, partition, 0, usize::MAX).unwrap())
            .filter(|record| serde_json::from_slice::<Value>(&record.value).unwrap()["payment_id"] == payment_id)
            .count()
    }
}

fn to_merchant(amount: &str) -> Value {
    json!({"merchant_id": "M1", "terminal_id": "T1", "amount": amount, "currency": "EUR"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_and_publish_once() {
    on_every_store("idempotency", |h: Harness| async move {
        let ada = h.user("ada@example.com", None).await;
        let missing = h.call(Method::POST, "/v1/payments", &ada, &[], Some(to_merchant("1.00"))).await;
        assert_eq!(
            (missing.status, missing.json()["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("idempotency_key_missing"))
        );

        let first = h.pay(&ada, "order-1", to_merchant("1.00")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}: {}", h.store_name, first.json());
        let payment_id = first.json()["payment_id"].as_str().unwrap().to_string();
        assert_eq!(first.headers[header::LOCATION], format!("/v1/payments/{payment_id}").as_str());
        // The same key and body (keys reordered): the first answer, byte for byte.
        let again = h
            .pay(
                &ada,
                "order-1",
                json!({"currency": "EUR", "amount": "1.00", "terminal_id": "T1", "merchant_id": "M1"}),
            )
            .await;
        assert_eq!((again.status, &again.bytes), (first.status, &first.bytes));
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert!(!first.headers.contains_key("idempotent-replayed"));
        // The same key, another body.
        let other = h.pay(&ada, "order-1", to_merchant("2.00")).await;
        assert_eq!(
            (other.status, other.json()["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
        );
        assert_eq!(h.events(&payment_id), 1, "one event in the topic");
        // Keys are scoped per client: another user's "order-1" is another payment.
        let bob = h.user("bob@example.com", None).await;
        let bobs = h.pay(&bob, "order-1", to_merchant("1.00")).await;
        assert_eq!(bobs.status, StatusCode::CREATED);
        assert_ne!(bobs.json()["payment_id"], payment_id.as_str());
        // A request in flight with the key: 409.
        let ada_id = h.auth.store().account_by_email("ada@example.com").await.unwrap().unwrap().user_id;
        let hash = paystream_payments::model::request_hash("/v1/payments", &to_merchant("3.00"));
        let now = (system_clock())();
        h.payments.store().begin_key(&ada_id, "order-2", &hash, now).await.unwrap();
        let busy = h.pay(&ada, "order-2", to_merchant("3.00")).await;
        assert_eq!(
            (busy.status, busy.json()["code"].as_str()),
            (StatusCode::CONFLICT, Some("idempotency_key_in_flight"))
        );
        // Concurrent first requests with one key: one event whatever the interleaving.
        let racing = futures_race(&h, &ada).await;
        assert!(racing.iter().filter(|status| **status == StatusCode::CREATED).count() >= 1, "{racing:?}");
        assert!(
            racing.iter().all(|status| *status == StatusCode::CREATED || *status == StatusCode::CONFLICT),
            "{racing:?}"
        );
        let raced_id = paystream_payments::model::payment_id(&ada_id, "order-3");
        assert_eq!(h.events(&raced_id), 1);
        // A key freed after a failure (the payment stored, its answer never kept) and
        // reused with other terms: still the first payment's key.
        let stored = h.payments.store().payment(&payment_id).await.unwrap().unwrap();
        let freed = paystream_payments::store::PaymentRecord {
            payment_id: paystream_payments::model::payment_id(&ada_id, "order-4"),
            status: "pending".into(),
            ..stored
        };
        h.payments.store().insert_payment(&freed).await.unwrap();
        let reused = h.pay(&ada, "order-4", to_merchant("9.99")).await;
        assert_eq!(
            (reused.status, reused.json()["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
        );
        assert_eq!(h.events(&freed.payment_id), 0, "nothing published under another payment's id");
    })
    .await;
}

async fn futures_race(h: &Harness, token: &str) -> Vec<StatusCode> {
    let (a, b, c) = tokio::join!(
        h.pay(token, "order-3", to_merchant("4.00")),
        h.pay(token, "order-3", to_merchant("4.00")),
        h.pay(token, "order-3", to_merchant("4.00"))
    );
    vec![a.status, b.status, c.status]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_come_back_and_wallets_need_funds() {
    on_every_store("decisions", |h: Harness| async move {
        let ada = h.user("ada@example.com", None).await;
        let broke = h.pay(&ada, "p1", to_merchant("20.00")).await;
        assert_eq!(broke.status, StatusCode::CREATED, "{}", broke.json());
        assert_eq!(broke.json()["status"], "declined");
        assert_eq!(broke.json()["reasons"][0], "insufficient_funds");
        let topped = h.top_up(&ada, "t1", "50.00").await;
        assert_eq!((topped.status, topped.json()["status"].as_str()), (StatusCode::CREATED, Some("approved")));
        let paid = h.pay(&ada, "p2", to_merchant("20.00")).await;
        assert_eq!(paid.json()["status"], "approved", "{}", paid.json());
        assert_eq!(paid.json()["amount_minor"], 2000);
        // Without waiting: 202 and a Location to poll, which the pipeline fills in.
        let later = h
            .call(
                Method::POST,
                "/v1/payments",
                &ada,
                &[("idempotency-key", "p3"), ("prefer", "wait=0")],
                Some(to_merchant("1.00")),
            )
            .await;
        assert_eq!(later.status, StatusCode::ACCEPTED, "{}", later.json());
        assert_eq!(later.json()["status"], "pending");
        let location = later.headers[header::LOCATION].to_str().unwrap().to_string();
        let mut polled = Value::Null;
        for _ in 0..100 {
            polled = h.call(Method::GET, &location, &ada, &[], None).await.json();
            if polled["status"] != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(polled["status"], "approved", "{polled}");
        // A payment to another account.
        let bob = h.user("bob@example.com", None).await;
        let bob_id =
            h.call(Method::GET, "/v1/me", &bob, &[], None).await.json()["user_id"].as_str().unwrap().to_string();
        let sent = h.pay(&ada, "p4", json!({"payee_user_id": bob_id, "amount": "5.00", "currency": "EUR"})).await;
        assert_eq!(
            (sent.status, sent.json()["status"].as_str()),
            (StatusCode::CREATED, Some("approved")),
            "{}",
            sent.json()
        );
        // Balances follow the ledger: 50.00 in, 20.00 + 1.00 to the merchant, 5.00 to bob.
        assert_eq!(
            h.balances(&ada, 2_400).await,
            json!([{"currency": "EUR", "balance": "24.00", "balance_minor": 2400, "postings": 4}])
        );
        // Bob's 5.00 arrives less the payment's fee.
        assert_eq!(h.balances(&bob, 494).await[0]["balance"], "4.94");
        let carol = h.user("carol@example.com", None).await;
        assert_eq!(h.call(Method::GET, "/v1/balance", &carol, &[], None).await.json(), json!({"balances": []}));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_peoples_payments_do_not_exist() {
    on_every_store("objects", |h: Harness| async move {
        let ada = h.user("ada@example.com", None).await;
        let bob = h.user("bob@example.com", None).await;
        let m1 = h.user("m1@example.com", Some("M1")).await;
        let m2 = h.user("m2@example.com", Some("M2")).await;
        let paid = h.pay(&ada, "p1", to_merchant("1.00")).await.json();
        let path = format!("/v1/payments/{}", paid["payment_id"].as_str().unwrap());
        assert_eq!(h.call(Method::GET, &path, &ada, &[], None).await.status, StatusCode::OK);
        assert_eq!(h.call(Method::GET, &path, &m1, &[], None).await.status, StatusCode::OK, "the payee merchant");
        for (who, token) in [("bob", &bob), ("m2", &m2)] {
            let answer = h.call(Method::GET, &path, token, &[], None).await;
            assert_eq!(
                (answer.status, answer.json()["code"].as_str()),
                (StatusCode::NOT_FOUND, Some("not_found")),
                "{who}"
            );
        }
        let unknown = h.call(Method::GET, "/v1/payments/pay_nothing", &ada, &[], None).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "same answer as someone else's");
        assert_eq!(h.call(Method::GET, "/v1/payments", &bob, &[], None).await.json()["data"], json!([]));
        assert_eq!(
            h.call(Method::GET, "/v1/merchant/payments", &m1, &[], None).await.json()["data"].as_array().unwrap().len(),
            1
        );
        assert_eq!(h.call(Method::GET, "/v1/merchant/payments", &m2, &[], None).await.json()["data"], json!([]));
        // Roles: merchants do not pay, customers do not read merchant lists.
        assert_eq!(h.pay(&m1, "x", to_merchant("1.00")).await.status, StatusCode::FORBIDDEN);
        assert_eq!(h.call(Method::GET, "/v1/merchant/payments", &ada, &[], None).await.status, StatusCode::FORBIDDEN);
        assert_eq!(
            h.call(Method::GET, "/v1/payments", "not-a-token", &[], None).await.status,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_by_cursor_and_bad_requests_say_why() {
    on_every_store("lists", |h: Harness| async move {
        let ada = h.user("ada@example.com", None).await;
        let mut made = Vec::new();
        for i in 0..3 {
            let paid = h.pay(&ada, &format!("p{i}"), to_merchant("1.00")).await.json();
            made.push(paid["payment_id"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let first = h.call(Method::GET, "/v1/payments?limit=2", &ada, &[], None).await.json();
        assert_eq!(first["has_more"], true);
        let cursor = first["next_cursor"].as_str().unwrap();
        let second = h.call(Method::GET, &format!("/v1/payments?limit=2&starting_after={cursor}"), &ada, &[], None).await.json();
        assert_eq!(second["has_more"], false);
        let mut seen: Vec<String> = first["data"].as_array().unwrap().iter().chain(second["data"].as_array().unwrap())
            .map(|payment| payment["payment_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seen.first(), made.last(), "newest first");
        seen.sort();
        made.sort();
        assert_eq!(seen, made, "every payment once");
        assert_eq!(h.call(Method::GET, "/v1/payments", &ada, &[], None).await.json()["data"].as_array().unwrap().len(), 3);
        for query in ["limit=0", "limit=101", "limit=x", "starting_after=!!", "color=red"] {
            let answer = h.call(Method::GET, &format!("/v1/payments?{query}"), &ada, &[], None).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}: {}", answer.json());
        }
        for (body, code) in [
            (to_merchant("1.234"), "invalid_amount"),
            (to_merchant("0.00"), "non_positive_amount"),
            (json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "1.00", "currency": "ZZZ"}), "unknown_currency"),
            (json!({"merchant_id": "M1", "amount": "1.00", "currency": "EUR"}), "invalid_payee"),
            (json!({"merchant_id": "M1", "terminal_id": "T1", "amount": 1, "currency": "EUR"}), "invalid_body"),
            (json!({"merchant_id": "M1", "terminal_id": "T1", "amount": "1.00", "currency": "EUR", "payer_account_id": "usr_x"}), "invalid_body"),
        ] {
            let answer = h.pay(&ada, "bad", body.clone()).await;
            assert_eq!((answer.status, answer.json()["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
        }
        // A refused request leaves its key free.
        assert_eq!(h.pay(&ada, "bad", to_merchant("1.00")).await.status, StatusCode::CREATED);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_voids_and_refunds_belong_to_the_payee_merchant() {
    on_every_store("follow_ups", |h: Harness| async move {
        let ada = h.user("ada@example.com", None).await;
        let bob = h.user("bob@example.com", None).await;
        let m1 = h.user("m1@example.com", Some("M1")).await;
        let m2 = h.user("m2@example.com", Some("M2")).await;
        assert_eq!(h.top_up(&ada, "t1", "100.00").await.json()["status"], "approved");
        let mut hold = to_merchant("30.00");
        hold["capture"] = json!(false);
        let held = h.pay(&ada, "a1", hold).await.json();
        assert_eq!((held["type"].as_str(), held["status"].as_str()), (Some("authorize"), Some("approved")), "{held}");
        let held_id = held["payment_id"].as_str().unwrap().to_string();
        // Another merchant and another customer: the authorization does not exist.
        assert_eq!(act(&h, &held_id, &m2, "capture", "c1", None).await.status, StatusCode::NOT_FOUND);
        assert_eq!(act(&h, &held_id, &bob, "void", "v1", None).await.status, StatusCode::NOT_FOUND);
        // The payer may not capture (role), the payee merchant captures part of it.
        assert_eq!(act(&h, &held_id, &ada, "capture", "c1", None).await.status, StatusCode::FORBIDDEN);
        let captured = act(&h, &held_id, &m1, "capture", "c1", Some(json!({"amount": "25.00"}))).await;
        assert_eq!(captured.status, StatusCode::CREATED, "{}", captured.json());
        assert_eq!(
            (captured.json()["type"].as_str(), captured.json()["status"].as_str()),
            (Some("capture"), Some("approved"))
        );
        assert_eq!(captured.json()["payer_user_id"], held["payer_user_id"], "the payer's money, the payer's record");
        // A void after the capture: the ledger says the authorization is closed.
        let voided = act(&h, &held_id, &ada, "void", "v1", None).await.json();
        assert_eq!(
            (voided["status"].as_str(), voided["reasons"][0].as_str()),
            (Some("declined"), Some("authorization_closed"))
        );
        assert_eq!(
            act(&h, &held_id, &m1, "void", "v2", Some(json!({"amount": "1.00"}))).await.status,
            StatusCode::BAD_REQUEST
        );
        // Refunds: the payee merchant only, of a payment.
        let paid = h.pay(&ada, "p1", to_merchant("10.00")).await.json();
        let paid_id = paid["payment_id"].as_str().unwrap();
        assert_eq!(
            act(&h, paid_id, &m2, "refund", "r1", Some(json!({"amount": "4.00"}))).await.status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            act(&h, paid_id, &ada, "refund", "r1", Some(json!({"amount": "4.00"}))).await.status,
            StatusCode::FORBIDDEN
        );
        let refunded = act(&h, paid_id, &m1, "refund", "r1", Some(json!({"amount": "4.00"}))).await;
        assert_eq!(
            (refunded.status, refunded.json()["status"].as_str()),
            (StatusCode::CREATED, Some("approved")),
            "{}",
            refunded.json()
        );
        let again = act(&h, paid_id, &m1, "refund", "r1", Some(json!({"amount": "4.00"}))).await;
        assert_eq!((again.status, &again.bytes), (refunded.status, &refunded.bytes), "replayed");
        // Not JSON: 415, as a problem.
        let text = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/payments/{paid_id}/refund"))
            .header(header::AUTHORIZATION, format!("Bearer {m1}"))
            .header("idempotency-key", "r2")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("amount=4.00"))
            .unwrap();
        let text = h.router.clone().oneshot(text).await.unwrap();
        assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(text.headers()[header::CONTENT_TYPE], "application/problem+json");
        // A capture of a plain payment is refused before it reaches the pipeline.
        let path = format!("/v1/payments/{paid_id}/capture");
        let wrong = h_call(&h, &path, &m1, "c9", None).await;
        assert_eq!((wrong.status, wrong.json()["code"].as_str()), (StatusCode::CONFLICT, Some("invalid_original")));
        assert_eq!(
            h.call(Method::GET, "/v1/merchant/payments", &m1, &[], None).await.json()["data"].as_array().unwrap().len(),
            5
        );
    })
    .await;
}

async fn h_call(h: &Harness, path: &str, token: &str, key: &str, body: Option<Value>) -> Answer {
    h.call(Method::POST, path, token, &[("idempotency-key", key)], body).await
}

/// `POST /v1/payments/{payment_id}/{what}` with an idempotency key.
async fn act(h: &Harness, payment_id: &str, token: &str, what: &str, key: &str, body: Option<Value>) -> Answer {
    h_call(h, &format!("/v1/payments/{payment_id}/{what}"), token, key, body).await
}
