//! `paystream sql` and `paystream query` over a decided log: results equal what
//! `paystream log dump` shows, psql (a real client) connects with SCRAM and reads the
//! tables, and the endpoint refuses writes and wrong passwords and holds its guardrails
//! (statement timeout while rows stream, cancel, row cap, memory cap) whatever the
//! client SETs.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::sql::{psql_as, scrape};
use common::{Running, decided_log, run_ok};

const PASSWORD: &str = "analysts-only-password";

fn query(data: &Path, format: &str, statement: &str) -> String {
    let output = run_ok(data, &["query", "--format", format, statement]);
    String::from_utf8(output.stdout).unwrap()
}

fn psql(address: &str, password: &str, command: &str) -> Output {
    psql_as(address, "analyst", password, command)
}

fn start_sql(data: &Path, extra: &[&str]) -> (Running, String, String) {
    common::sql::start_sql(data, PASSWORD, extra)
}

fn psql_command(address: &str, password: &str, command: &str) -> std::process::Command {
    common::sql::psql_command(address, "analyst", password, command)
}

/// psql's error for `command`, which must fail.
fn psql_err(address: &str, command: &str) -> String {
    let output = psql(address, PASSWORD, command);
    assert!(!output.status.success(), "{command} was accepted");
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn psql_ok(address: &str, command: &str) -> String {
    let output = psql(address, PASSWORD, command);
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn analysts_query_the_topics_with_psql_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());
    let dumped = common::dump(&data, "decisions");
    let decisions = dumped.len();
    assert!(decisions > 500, "{decisions}");

    // One statement from the shell, in each format.
    let printed = query(&data, "table", "SELECT count(*) AS n FROM decisions");
    assert!(printed.contains(&format!("| {decisions} ")), "{printed}");
    let declined = dumped.iter().filter(|decision| decision["value"]["outcome"] == "decline").count();
    let csv = query(&data, "csv", "SELECT outcome, count(*) AS n FROM decisions GROUP BY outcome ORDER BY outcome");
    assert!(csv.starts_with("outcome,n\n") && csv.contains(&format!("decline,{declined}\n")), "{csv}");
    let json =
        query(&data, "json", "SELECT payment_id, amount_minor FROM decisions ORDER BY _partition, _offset LIMIT 3");
    let rows: Vec<serde_json::Value> = json.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{json}");
    assert!(rows.iter().all(|row| row["payment_id"].is_string() && row["amount_minor"].is_i64()), "{json}");

    let (mut server, address, _) = start_sql(&data, &[]);

    assert_eq!(psql_ok(&address, "SELECT count(*) FROM decisions"), decisions.to_string());
    for (table, topic) in [("payments", "payments"), ("ledger", "ledger"), ("dead_letters", "dead-letters")] {
        let transactions = common::dump(&data, topic).len();
        let counted: usize = if table == "ledger" {
            psql_ok(&address, "SELECT count(DISTINCT transaction_id) FROM ledger").parse().unwrap()
        } else {
            psql_ok(&address, &format!("SELECT count(*) FROM {table}")).parse().unwrap()
        };
        assert_eq!(counted, transactions, "{table}");
    }
    // Every ledger transaction balances, so the balances of every account sum to zero.
    assert_eq!(
        psql_ok(
            &address,
            "SELECT count(*) FROM (SELECT currency FROM balances GROUP BY currency HAVING sum(balance_minor) <> 0)"
        ),
        "0"
    );
    // Balances as of a time: everything before the first posting is nothing, after the
    // last it is the balances view.
    assert_eq!(psql_ok(&address, "SELECT count(*) FROM balances_as_of(TIMESTAMP '2000-01-01T00:00:00Z')"), "0");
    let as_of_end = "SELECT account_id, currency, balance_minor, postings FROM balances_as_of('2100-01-01T00:00:00Z')";
    let differing = psql_ok(
        &address,
        &format!(
            "SELECT count(*) FROM ((({as_of_end}) EXCEPT ALL (SELECT * FROM balances)) UNION ALL \
             ((SELECT * FROM balances) EXCEPT ALL ({as_of_end}))) AS d"
        ),
    );
    assert_eq!(differing, "0");
    let day_two: i64 =
        psql_ok(&address, "SELECT count(*) FROM balances_as_of(TIMESTAMP '2018-04-02T00:00:00Z')").parse().unwrap();
    let all: i64 = psql_ok(&address, "SELECT count(*) FROM balances").parse().unwrap();
    assert!(0 < day_two && day_two <= all, "{day_two} of {all}");
    // Balances as of ledger positions: at each partition's end they are the balances view;
    // at any positions, whole transactions, so every currency sums to 0.
    let ends = psql_ok(
        &address,
        "SELECT string_agg(CAST(_partition AS VARCHAR) || ':' || CAST(last + 1 AS VARCHAR), ',') \
         FROM (SELECT _partition, max(_offset) AS last FROM ledger GROUP BY _partition)",
    );
    let halves = psql_ok(
        &address,
        "SELECT string_agg(CAST(_partition AS VARCHAR) || ':' || CAST(last / 2 AS VARCHAR), ',') \
         FROM (SELECT _partition, max(_offset) AS last FROM ledger GROUP BY _partition)",
    );
    let at_end = format!("SELECT account_id, currency, balance_minor, postings FROM balances_as_of('{ends}')");
    let differing = psql_ok(
        &address,
        &format!(
            "SELECT count(*) FROM ((({at_end}) EXCEPT ALL (SELECT * FROM balances)) UNION ALL \
             ((SELECT * FROM balances) EXCEPT ALL ({at_end}))) AS d"
        ),
    );
    assert_eq!(differing, "0", "{ends}");
    let half_postings: i64 =
        psql_ok(&address, &format!("SELECT sum(postings) FROM balances_as_of('{halves}')")).parse().unwrap();
    let all_postings: i64 = psql_ok(&address, "SELECT sum(postings) FROM balances").parse().unwrap();
    assert!(0 < half_postings && half_postings < all_postings, "{half_postings} of {all_postings}");
    let unbalanced = format!(
        "SELECT count(*) FROM (SELECT currency FROM balances_as_of('{halves}') GROUP BY currency \
         HAVING sum(balance_minor) <> 0)"
    );
    assert_eq!(psql_ok(&address, &unbalanced), "0", "{halves}");
    assert_eq!(psql_ok(&address, "SELECT count(*) FROM balances_as_of(0)"), "0");
    let first_of_each: i64 = psql_ok(&address, "SELECT sum(postings) FROM balances_as_of(1)").parse().unwrap();
    let first_records: i64 = psql_ok(&address, "SELECT count(*) FROM ledger WHERE _offset = 0").parse().unwrap();
    assert_eq!(first_of_each, first_records);
    // Every partition is named once, or the statement says how.
    let partitions: usize = psql_ok(&address, "SELECT count(DISTINCT _partition) FROM ledger").parse().unwrap();
    let missing_one = (0..partitions - 1).map(|partition| format!("{partition}:10")).collect::<Vec<_>>().join(",");
    assert!(
        psql_err(&address, &format!("SELECT * FROM balances_as_of('{missing_one}')"))
            .contains("partitions of ledger once")
    );
    // A join in one statement sees one cut: every approved decision has its postings.
    let unposted = psql_ok(
        &address,
        "SELECT count(*) FROM decisions d LEFT JOIN (SELECT DISTINCT payment_id FROM ledger) l \
         ON d.payment_id = l.payment_id WHERE d.outcome = 'approve' AND l.payment_id IS NULL",
    );
    assert_eq!(unposted, "0");
    // Filters on _partition and _offset narrow the read and still hold.
    let first_ten: usize =
        psql_ok(&address, "SELECT count(*) FROM decisions WHERE _partition = 1 AND _offset < 10").parse().unwrap();
    assert!(first_ten <= 10, "{first_ten}");
    // Times are timestamps with a zone, money integer minor units.
    let row = psql_ok(&address, "SELECT event_time, amount_minor FROM decisions ORDER BY _offset LIMIT 1");
    assert!(row.contains("2018-") && row.contains("+00"), "{row}");
    // psql's table list.
    let tables = psql_ok(&address, "\\dt");
    for table in ["payments", "decisions", "ledger", "settlements", "labels", "dead_letters"] {
        assert!(tables.contains(table), "{table} missing from \\dt: {tables}");
    }

    // Read-only, and the password is checked.
    for statement in [
        "CREATE TABLE t (a INT)",
        "INSERT INTO decisions (payment_id) VALUES ('x')",
        "SET datafusion.runtime.memory_limit = '100G'",
    ] {
        let output = psql(&address, PASSWORD, statement);
        assert!(!output.status.success(), "{statement} was accepted");
    }
    let output = psql(&address, "not-the-password", "SELECT 1");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(said.contains("password authentication failed"), "{said}");
    server.0.kill().unwrap();
}

#[test]
fn the_server_holds_its_guardrails_whatever_the_client_sets() {
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());
    let (mut server, address, metrics) = start_sql(
        &data,
        &["--statement-timeout-ms", "4000", "--result-rows-max", "50", "--connection-memory-bytes-max", "4000000"],
    );
    // An endless computation stops at the deadline, though its rows have not started,
    // and a client cannot lift the deadline.
    let endless = "SELECT count(*) FROM generate_series(1, 1000000000000)";
    let started = Instant::now();
    let said = psql_err(&address, &format!("SET statement_timeout = 0; {endless}"));
    assert!(said.contains("57014: canceling statement due to statement timeout"), "{said}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

    // Ctrl-C in psql (SIGINT) sends a cancel request, which stops the statement.
    let mut running = Running(psql_command(&address, PASSWORD, endless).stderr(Stdio::piped()).spawn().unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    common::signal(&running, "-INT");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut running.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!running.wait().unwrap().success());
    assert!(said.contains("57014: canceling statement due to user request"), "{said}");

    // The row cap holds on results, not on what was read to make them.
    let said = psql_err(&address, "SELECT * FROM decisions");
    assert!(said.contains("54000: the result has more than 50 rows"), "{said}");
    assert_eq!(psql_ok(&address, "SELECT payment_id FROM decisions LIMIT 50").lines().count(), 50);
    assert!(psql_ok(&address, "SELECT count(*) FROM decisions").parse::<usize>().unwrap() > 500);

    // The memory cap holds (nothing spills), and a SET cannot raise it.
    let said = psql_err(
        &address,
        "SELECT max(r) FROM (SELECT row_number() OVER (ORDER BY x DESC) AS r FROM generate_series(1, 3000000) AS t(x)) AS w",
    );
    assert!(said.contains("53200:") && said.to_lowercase().contains("resources exhausted"), "{said}");
    let said = psql_err(&address, "SET datafusion.runtime.memory_limit = '10G'");
    assert!(said.contains("DataFusion's settings are the server's"), "{said}");

    // Each guardrail shows on the endpoint's metrics, which Prometheus's linter accepts.
    let body = scrape(&metrics);
    for series in [
        "paystream_sql_statements_total{outcome=\"timeout\"} 1",
        "paystream_sql_statements_total{outcome=\"cancelled\"} 1",
        "paystream_sql_statements_total{outcome=\"row_cap\"} 1",
        "paystream_sql_statements_total{outcome=\"ok\"}",
        "paystream_sql_statement_seconds_bucket",
        "paystream_sql_connections 0",
        "paystream_build_info{",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.contains(series), "{series} missing from\n{body}");
    }
    common::assert_promtool_accepts(&body);
    server.0.kill().unwrap();
}

/// A self-signed certificate for `localhost` in `dir`: (certificate, key).
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (certificate, key) = (dir.join("sql.crt"), dir.join("sql.key"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (certificate, key)
}

#[test]
fn with_a_certificate_the_endpoint_speaks_tls_only_and_keeps_decoded_columns() {
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());
    let decisions = common::dump(&data, "decisions").len();
    let (certificate, key) = self_signed(dir.path());
    let (_server, address, metrics) =
        start_sql(&data, &["--sql-tls-cert", certificate.to_str().unwrap(), "--sql-tls-key", key.to_str().unwrap()]);
    let port = address.rsplit_once(':').unwrap().1;
    let at = |sslmode: &str| {
        let mut psql = psql_command(&format!("localhost:{port}"), PASSWORD, "SELECT count(*) FROM decisions");
        psql.env("PGSSLMODE", sslmode).env("PGSSLROOTCERT", &certificate);
        psql.output().unwrap()
    };
    // The certificate checked against its root and its name, twice: the second count
    // reads the columns the first decoded.
    for _ in 0..2 {
        let verified = at("verify-full");
        assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
        assert_eq!(String::from_utf8_lossy(&verified.stdout).trim(), decisions.to_string());
    }
    let plain = at("disable");
    assert!(!plain.status.success(), "a connection without TLS was served");
    let refused = String::from_utf8_lossy(&plain.stderr);
    assert!(refused.contains("FATAL") && refused.contains("TLS connections only"), "{refused}");
    let body = scrape(&metrics);
    let value = |name: &str| -> f64 {
        let line = body.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("{name}:\n{body}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert!(value("paystream_sql_scan_cache_bytes") > 0.0, "{body}");
    assert_eq!(value("paystream_sql_scan_rows_total{source=\"cache\"}"), decisions as f64, "the second count");
    assert_eq!(value("paystream_sql_scan_rows_total{source=\"log\"}"), decisions as f64, "the first count");
}
