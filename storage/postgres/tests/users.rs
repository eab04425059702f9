//! One conformance suite for the user stores: in memory and PostgreSQL (this machine's
//! server; `PAYSTREAM_TEST_POSTGRES_URL` overrides the URL), each PostgreSQL test in a
//! users schema of its own.

use paystream_storage::StorageError;
use paystream_storage::users::{KycStatus, MemoryUserStore, User, UserStore};
use paystream_storage_postgres::{Blocking, PostgresUserStore};

/// Runs `check` on every store; PostgreSQL schemas are dropped afterwards.
fn on_every_store(test: &str, check: impl Fn(&str, &mut dyn UserStore)) {
    check("memory", &mut MemoryUserStore::default());
    let schema = format!("test_users_{test}_{}", paystream_testkit::unique_suffix());
    let mut postgres = Blocking::<PostgresUserStore>::connect(&paystream_testkit::postgres_url(), &schema)
        .unwrap_or_else(|e| {
            panic!("PostgreSQL must be running for these tests ({}): {e}", paystream_testkit::postgres_url())
        });
    check("postgres", &mut postgres);
    postgres.drop_schema().unwrap();
}

#[test]
fn users_are_created_once_found_by_id_and_email_and_their_kyc_moves() {
    on_every_store("basics", |store_name, store| {
        let ada = User::new("u1", "  Ada@Example.COM ", "Ada Lovelace", 1_700_000_000_000).unwrap();
        assert_eq!(ada.email, "ada@example.com", "{store_name}");
        store.create_user(&ada).unwrap();
        assert_eq!(store.user("u1").unwrap().as_ref(), Some(&ada), "{store_name}");
        assert_eq!(store.user_by_email("ADA@example.com").unwrap().as_ref(), Some(&ada), "{store_name}");
        assert_eq!(store.user("u2").unwrap(), None, "{store_name}");

        // Neither the id nor the address may be taken twice; nothing is overwritten.
        let same_id = User::new("u1", "other@example.com", "Other", 0).unwrap();
        assert!(
            matches!(store.create_user(&same_id), Err(StorageError::Conflict(m)) if m.contains("u1")),
            "{store_name}"
        );
        let same_email = User::new("u2", "ada@EXAMPLE.com", "Impostor", 0).unwrap();
        assert!(
            matches!(store.create_user(&same_email), Err(StorageError::Conflict(m)) if m.contains("e-mail")),
            "{store_name}"
        );
        assert_eq!(store.user("u1").unwrap().unwrap().display_name, "Ada Lovelace", "{store_name}");
        assert_eq!(store.user("u2").unwrap(), None, "{store_name}");

        assert!(store.set_kyc_status("u1", KycStatus::Verified).unwrap(), "{store_name}");
        assert_eq!(store.user("u1").unwrap().unwrap().kyc_status, KycStatus::Verified, "{store_name}");
        assert!(!store.set_kyc_status("nobody", KycStatus::Rejected).unwrap(), "{store_name}");
    });
}

#[test]
fn invalid_users_are_refused_before_any_store() {
    for (id, email, name) in
        [("u", "no-at-sign", "N"), ("u", "@example.com", "N"), ("", "a@b.c", "N"), ("u", "a@b.c", " ")]
    {
        assert!(
            matches!(User::new(id, email, name, 0), Err(StorageError::InvalidRecord(_))),
            "{id:?} {email:?} {name:?}"
        );
    }
    assert!(User::new("u", &format!("{}@example.com", "a".repeat(400)), "N", 0).is_err());
}
