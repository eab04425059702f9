//! Materialized views created and dropped over the wire, on the embedded log: the views
//! author's `CREATE MATERIALIZED VIEW` (psql, a real client) reaches `paystream serve`,
//! which owns the log, and starts the view at once; the analyst may not; a standalone
//! `paystream sql` says where to send it. The view's windows equal the batch query; a
//! dropped view's tables and metrics go, its windows stay for the same definition to
//! resume (another one is refused), and the view outlives the process that created it.

mod common;

use common::served::{http, start_serve_with};
use common::sql::{psql_as_err, psql_as_ok, start_sql};
use common::views::{check_view, view_sql, wait_settled};
use common::{decided_log, run_ok, wait_until};

const ANALYST_PASSWORD: &str = "analysts-only-password";
const AUTHOR_PASSWORD: &str = "views-author-password";
const AUTHOR: &str = "views_author";
/// No views file: the views are the catalog's.
const NO_FILE: &str = "/dev/null";

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn the_views_author_creates_and_drops_views_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());

    let address = free_address();
    let passwords = ["--sql-password", ANALYST_PASSWORD, "--sql-author-password", AUTHOR_PASSWORD];
    let mut served = start_serve_with(&data, &[&["--sql-addr", address.as_str()][..], &passwords].concat());
    let analyst = |command: &str| psql_as_err(&address, "analyst", ANALYST_PASSWORD, command);
    let author = |command: &str| psql_as_ok(&address, AUTHOR, AUTHOR_PASSWORD, command);
    let author_err = |command: &str| psql_as_err(&address, AUTHOR, AUTHOR_PASSWORD, command);
    wait_until("the SQL endpoint listens", 60, 200, || {
        psql_as_ok(&address, "analyst", ANALYST_PASSWORD, "SELECT 1") == "1"
    });

    let name = "outcomes_by_hour";
    let create = view_sql(name, "0 seconds", "1 second");
    assert!(analyst(&create).contains("42501"), "only the views author creates views");
    assert_eq!(author(&create), "CREATE MATERIALIZED VIEW");
    assert!(author_err(&create).contains("42P07"), "a name is created once");
    assert!(author_err("CREATE MATERIALIZED VIEW payments AS SELECT 1").contains("42P07"), "a table's name");
    let unwindowed = author_err("CREATE MATERIALIZED VIEW unwindowed AS SELECT count(*) AS n FROM decisions");
    assert!(unwindowed.contains("42601") && unwindowed.contains("date_bin"), "views are checked: {unwindowed}");
    // The catalog is a log: no transaction can take a view back.
    let other = view_sql("in_a_transaction", "0 seconds", "1 second");
    let in_block = common::sql::psql_command(&address, AUTHOR, AUTHOR_PASSWORD, "BEGIN")
        .args(["-c", &other, "-c", "COMMIT"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&in_block.stderr).contains("25001"), "{in_block:?}");
    // Names fold to lowercase, as SQL's do: the view's tables go by it.
    let shouted = view_sql("OUTCOMES_BY_HOUR", "0 seconds", "1 second");
    assert!(author_err(&shouted).contains("42P07"), "the same name as {name}");

    // serve keeps it at once: its windows close as it reads the decisions.
    let windows = wait_settled(&data, NO_FILE, name);
    assert!(windows > 50, "{windows} windows");
    let (checked, _) = check_view(&data, NO_FILE, name);
    assert_eq!(checked, windows);
    let (_, exposition) = http(&served.operations, "GET", "/metrics", None, None);
    assert!(exposition.contains(&format!("paystream_view_running{{view=\"{name}\"}} 1")), "{exposition}");

    // A standalone endpoint on the embedded log reads a log another process owns.
    let (mut standalone, standalone_address, _) =
        start_sql(&data, ANALYST_PASSWORD, &["--sql-author-password", AUTHOR_PASSWORD]);
    let other = view_sql("elsewhere", "0 seconds", "1 second");
    let refused = psql_as_err(&standalone_address, AUTHOR, AUTHOR_PASSWORD, &other);
    assert!(refused.contains("25006") && refused.contains("paystream serve"), "{refused}");
    // It follows the catalog all the same.
    assert_eq!(
        psql_as_ok(&standalone_address, "analyst", ANALYST_PASSWORD, &format!("SELECT count(*) FROM {name}")),
        windows.to_string()
    );
    standalone.kill().unwrap();

    // Dropped: its tables and metrics go; its topic keeps the windows for the same
    // definition only.
    assert!(analyst(&format!("DROP MATERIALIZED VIEW {name}")).contains("42501"));
    assert_eq!(author(&format!("DROP MATERIALIZED VIEW {name}")), "DROP MATERIALIZED VIEW");
    assert!(author_err(&format!("SELECT count(*) FROM {name}")).contains("not found"));
    assert!(author_err(&format!("DROP MATERIALIZED VIEW {name}")).contains("42P01"));
    assert_eq!(author(&format!("DROP MATERIALIZED VIEW IF EXISTS {name}")), "DROP MATERIALIZED VIEW");
    wait_until("the dropped view's metrics go", 30, 200, || {
        let (_, exposition) = http(&served.operations, "GET", "/metrics", None, None);
        !exposition.contains(&format!("view=\"{name}\""))
    });
    let refused = author_err(&view_sql(name, "1 hour", "1 second"));
    assert!(refused.contains("another definition"), "{refused}");
    assert_eq!(author(&create), "CREATE MATERIALIZED VIEW");
    assert_eq!(wait_settled(&data, NO_FILE, name), windows, "resumed: no window emitted again");
    assert_eq!(check_view(&data, NO_FILE, name).0, windows);

    // The catalog outlives the process: `paystream views` alone keeps the view.
    common::signal(&served.process, "-TERM");
    served.process.wait().unwrap();
    let output = run_ok(&data, &["views", "--no-metrics", "--until-idle"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains(&format!("materialized view {name}: ")), "{said}");
    assert_eq!(check_view(&data, NO_FILE, name).0, windows);
}
