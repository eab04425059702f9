//! Materialized views created and dropped over the wire on the test broker (a real
//! Apache Kafka): the views author's `CREATE MATERIALIZED VIEW`, sent by a driver over
//! the extended protocol (sqlx: parse, bind, execute), reaches `paystream sql`, which
//! writes it to the view catalog through a producer of its own; the one `paystream
//! views` process keeps the view within a second and its windows equal the batch query;
//! `DROP MATERIALIZED VIEW` (psql) stops it there and its metrics go.

mod common;

use common::sql::{psql_as_ok, start_sql};
use common::views::{check_view, start_views, view_running, view_sql, wait_settled};
use common::{decided_log, wait_until};
use sqlx::Connection;

const ANALYST_PASSWORD: &str = "analysts-only-password";
const AUTHOR_PASSWORD: &str = "views-author-password";
const AUTHOR: &str = "views_author";
/// No views file: the views are the catalog's.
const NO_FILE: &str = "/dev/null";

#[test]
fn views_created_over_the_wire_on_kafka_are_kept_by_the_views_process() {
    common::use_real_kafka("viewddl");
    let dir = tempfile::tempdir().unwrap();
    let data = decided_log(dir.path());

    let (mut keeper, metrics, said) = start_views(&data, None);
    let (_sql, address, _) = start_sql(&data, ANALYST_PASSWORD, &["--sql-author-password", AUTHOR_PASSWORD]);
    let name = paystream_testkit::unique_name("hourly");
    let create = view_sql(&name, "0 seconds", "1 second");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = format!("postgres://{AUTHOR}:{AUTHOR_PASSWORD}@{address}/paystream");
        let mut connection = sqlx::PgConnection::connect(&url).await.expect("the views author logs in");
        sqlx::query(&create).execute(&mut connection).await.expect("CREATE MATERIALIZED VIEW");
        let again = sqlx::query(&create).execute(&mut connection).await.unwrap_err();
        let code = again.as_database_error().and_then(|error| error.code()).map(|code| code.to_string());
        assert_eq!(code.as_deref(), Some("42P07"), "{again}");
        connection.close().await.unwrap();
    });

    wait_until("the views process keeps the view", 60, 200, || view_running(&metrics, &name) == Some(true));
    let settled = wait_settled(&data, NO_FILE, &name);
    let (windows, late) = check_view(&data, NO_FILE, &name);
    assert!(windows == settled && windows > 50, "{windows} windows, {settled} settled");
    eprintln!("{windows} windows, {late} late rows");

    let dropped = psql_as_ok(&address, AUTHOR, AUTHOR_PASSWORD, &format!("DROP MATERIALIZED VIEW {name}"));
    assert_eq!(dropped, "DROP MATERIALIZED VIEW");
    wait_until("the views process drops the view", 60, 200, || {
        said.lock().unwrap().contains(&format!("materialized view {name} dropped"))
            && view_running(&metrics, &name).is_none()
    });
    common::signal(&keeper, "-TERM");
    let status = keeper.wait().unwrap();
    assert!(status.success(), "{}", said.lock().unwrap());
}
