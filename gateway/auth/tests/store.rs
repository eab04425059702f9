//! Store properties the API tests do not reach: durability of the embedded store across
//! reopening, and one winner when the same refresh token is spent twice at once.

mod common;

use paystream_auth::AuthStore;
use paystream_auth::store::Account;
use paystream_http::Role;

fn account(user_id: &str, email: &str) -> Account {
    Account {
        user_id: user_id.into(),
        email: email.into(),
        display_name: "Test".into(),
        password_hash: "$argon2id$placeholder".into(),
        roles: vec![Role::Customer],
        merchant_id: None,
        auth_version: 1,
        created_at_ms: 1,
    }
}

#[tokio::test]
async fn the_embedded_store_keeps_what_it_committed() {
    let directory = tempfile::tempdir().unwrap();
    let store = AuthStore::open_embedded(directory.path()).await.unwrap();
    store.create_account(&account("usr_1", "a@example.com")).await.unwrap();
    store.create_session("ses_1", "usr_1", "hash1", 10, 1_000).await.unwrap();
    store.close().await;
    let reopened = AuthStore::open_embedded(directory.path()).await.unwrap();
    assert_eq!(reopened.account_by_id("usr_1").await.unwrap().unwrap().email, "a@example.com");
    assert!(reopened.refresh_record("hash1").await.unwrap().is_some());
    assert!(matches!(
        reopened.create_account(&account("usr_2", "a@example.com")).await,
        Err(paystream_auth::AuthError::EmailTaken)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_is_spent_once_under_concurrency() {
    let directory = tempfile::tempdir().unwrap();
    let sqlite = AuthStore::open_embedded(directory.path()).await.unwrap();
    let schema = format!("test_auth_spend_{}", paystream_testkit::unique_suffix());
    let postgres = AuthStore::connect(&paystream_testkit::postgres_url(), &schema).await.unwrap();
    for store in [sqlite, postgres.clone()] {
        store.create_account(&account("usr_1", "a@example.com")).await.unwrap();
        store.create_session("ses_1", "usr_1", "old", 10, 1_000_000).await.unwrap();
        let attempts = (0..8).map(|i| {
            let store = store.clone();
            tokio::spawn(
                async move { store.rotate_refresh_token("old", &format!("new{i}"), "ses_1", 20).await.unwrap() },
            )
        });
        let mut spent = 0;
        for attempt in attempts {
            spent += usize::from(attempt.await.unwrap());
        }
        assert_eq!(spent, 1, "{:?}", store.backend());
        assert!(store.refresh_record("old").await.unwrap().unwrap().state.token_used);
    }
    postgres.drop_schema(&schema).await.unwrap();
}
