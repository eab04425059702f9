//! The two migration chains and the two APIs, on this machine's PostgreSQL
//! (`PAYSTREAM_TEST_POSTGRES_URL` overrides the URL): the record sink's schema and a users
//! schema each refuse the other's chain; a sink schema migrated when users shared it
//! (its `_sqlx_migrations` lists version 2) still opens; the async API runs inside a
//! tokio runtime, where the blocking one refuses instead of panicking.

use paystream_storage::StorageError;
use paystream_storage::records::{OutputSlice, RecordStore, SliceApplied};
use paystream_storage::users::{User, UserStore};
use paystream_storage_postgres::{Blocking, PostgresRecordStore, PostgresUserStore};
use sqlx::Connection;

/// Asserts `result` is the refusal of a schema migrated by the other chain.
fn assert_refused_migration<T>(result: Result<T, StorageError>, what: &str) {
    match result {
        Err(StorageError::Database { context, why }) => assert_eq!(context, "migrate the schema", "{what}: {why}"),
        Err(other) => panic!("{what}: {other}"),
        Ok(_) => panic!("{what}: migrated"),
    }
}

#[test]
fn each_chain_refuses_the_other_chains_schema() {
    let url = paystream_testkit::postgres_url();
    let sink_schema = format!("test_chains_sink_{}", paystream_testkit::unique_suffix());
    let users_schema = format!("test_chains_users_{}", paystream_testkit::unique_suffix());
    let mut records = Blocking::<PostgresRecordStore>::connect(&url, &sink_schema).unwrap();
    let mut users = Blocking::<PostgresUserStore>::connect(&url, &users_schema).unwrap();
    assert_refused_migration(Blocking::<PostgresUserStore>::connect(&url, &sink_schema), "users in the sink's schema");
    assert_refused_migration(
        Blocking::<PostgresRecordStore>::connect(&url, &users_schema),
        "sink tables in the users' schema",
    );
    // Both stores still work, each in its own schema.
    assert_eq!(records.totals().unwrap().decisions, 0);
    users.create_user(&User::new("u1", "a@example.com", "A", 0).unwrap()).unwrap();
    assert!(users.user("u1").unwrap().is_some());
    records.drop_schema().unwrap();
    users.drop_schema().unwrap();
}

#[test]
fn a_sink_schema_migrated_when_users_shared_it_still_opens() {
    let url = paystream_testkit::postgres_url();
    let schema = format!("test_chains_legacy_{}", paystream_testkit::unique_suffix());
    let records = Blocking::<PostgresRecordStore>::connect(&url, &schema).unwrap();
    drop(records);
    // What the single chain left: version 2 applied, and its users table.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("CREATE TABLE {schema}.users (user_id text PRIMARY KEY)"))
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query(&format!(
            "INSERT INTO {schema}._sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (2, 'users', true, '\\x00'::bytea, 0)"
        ))
        .execute(&mut connection)
        .await
        .unwrap();
    });
    let mut records = Blocking::<PostgresRecordStore>::connect(&url, &schema).unwrap();
    assert_eq!(records.position("decisions", 0).unwrap(), 0);
    records.drop_schema().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_async_api_runs_inside_a_runtime_where_the_blocking_one_refuses() {
    fn assert_send<T: Send>(_: &T) {}
    let url = paystream_testkit::postgres_url();
    let schema = format!("test_async_{}", paystream_testkit::unique_suffix());
    let mut store = PostgresRecordStore::connect(&url, &schema).await.unwrap();
    assert_eq!(store.schema(), schema);
    let slice =
        OutputSlice { topic: "decisions".into(), partition: 0, from_offset: 0, to_offset: 3, ..OutputSlice::default() };
    let apply = store.apply(&slice);
    assert_send(&apply); // an axum handler may hold it across an await
    assert_eq!(apply.await.unwrap(), SliceApplied::Applied);
    assert_eq!(store.apply(&slice).await.unwrap(), SliceApplied::AlreadyApplied);
    assert_eq!(store.position("decisions", 0).await.unwrap(), 3);
    assert_eq!(store.totals().await.unwrap().decisions, 0);

    // As an axum handler would misuse it: refused, never a panic.
    assert!(matches!(Blocking::<PostgresRecordStore>::connect(&url, &schema), Err(StorageError::InsideRuntime { .. })));
    let (outside_url, outside_schema) = (url.clone(), schema.clone());
    let mut made_outside =
        std::thread::spawn(move || Blocking::<PostgresRecordStore>::connect(&outside_url, &outside_schema).unwrap())
            .join()
            .unwrap();
    assert!(matches!(made_outside.position("decisions", 0), Err(StorageError::InsideRuntime { .. })));
    drop(made_outside); // dropping it here does not panic either

    let users_schema = format!("test_async_users_{}", paystream_testkit::unique_suffix());
    let mut users = PostgresUserStore::connect(&url, &users_schema).await.unwrap();
    let ada = User::new("u1", "ada@example.com", "Ada", 0).unwrap();
    let create = users.create_user(&ada);
    assert_send(&create);
    create.await.unwrap();
    assert_eq!(users.user_by_email("ADA@example.com").await.unwrap(), Some(ada));
    users.drop_schema().await.unwrap();
    store.drop_schema().await.unwrap();
}
