//! `paystream sql` over a decided log: results equal what `paystream log dump` shows,
//! psql (a real client) connects with SCRAM and reads the tables, and the endpoint
//! refuses writes and wrong passwords.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Running, generate_csv, paystream, run_ok};

const PASSWORD: &str = "analysts-only-password";

fn execute(data: &Path, statement: &str) -> String {
    let output = run_ok(data, &["sql", "--execute", statement]);
    String::from_utf8(output.stdout).unwrap()
}

/// psql with `command`, unaligned and tuples only (`-At`).
fn psql(address: &str, password: &str, command: &str) -> Output {
    let (host, port) = address.rsplit_once(':').unwrap();
    std::process::Command::new("psql")
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", host, "-p", port, "-U", "analyst", "-d", "datafusion", "-c"])
        .arg(command)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql")
}

fn psql_ok(address: &str, command: &str) -> String {
    let output = psql(address, PASSWORD, command);
    assert!(output.status.success(), "{command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn analysts_query_the_topics_with_psql_and_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("payments.csv");
    generate_csv(&csv, 100, 200, 5, 7);
    let data = dir.path().join("data");
    run_ok(&data, &["replay", csv.to_str().unwrap()]);
    run_ok(&data, &["run", "--no-metrics", "--until-idle"]);
    let decisions = common::dump(&data, "decisions").len();
    assert!(decisions > 500, "{decisions}");

    // One statement from the command line.
    let printed = execute(&data, "SELECT count(*) AS n FROM decisions");
    assert!(printed.contains(&format!("| {decisions} ")), "{printed}");

    let mut server = Running(
        paystream()
            .args(["sql", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("PAYSTREAM_SQL_PASSWORD", PASSWORD)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "paystream sql exited before listening");
        if let Some(rest) = line.trim().strip_prefix("sql: postgres://analyst@") {
            break rest.trim_end_matches("/datafusion").to_string();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

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
