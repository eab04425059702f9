//! [`Blocking`]: a PostgreSQL store behind the synchronous traits (`RecordStore`,
//! `UserStore`) for plain threads, such as the pipeline's sink. It owns a current-thread
//! [`BlockingRuntime`], builds the store on it and runs each call with `block_on`; called
//! from inside a tokio runtime, it refuses with `StorageError::InsideRuntime`.

use paystream_storage::StorageError;
use paystream_storage::blocking::BlockingRuntime;
use paystream_storage::records::{OutputSlice, RecordStore, SliceApplied, StoreTotals, StoredDecision};
use paystream_storage::users::{KycStatus, User, UserStore};

use crate::records::PostgresRecordStore;
use crate::users::PostgresUserStore;

/// A PostgreSQL store `S` with the runtime that drives it.
pub struct Blocking<S> {
    // Dropped before the runtime its connection belongs to (fields drop in order).
    store: S,
    runtime: BlockingRuntime,
}

impl Blocking<PostgresRecordStore> {
    /// [`PostgresRecordStore::connect`] on a runtime of the store's own.
    pub fn connect(url: &str, schema: &str) -> Result<Blocking<PostgresRecordStore>, StorageError> {
        let runtime = BlockingRuntime::current_thread()?;
        let store = runtime.block_on("connect to PostgreSQL", PostgresRecordStore::connect(url, schema))??;
        Ok(Blocking { store, runtime })
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub fn drop_schema(self) -> Result<(), StorageError> {
        let Blocking { store, runtime } = self;
        runtime.block_on("drop a schema", store.drop_schema())?
    }
}

impl RecordStore for Blocking<PostgresRecordStore> {
    fn apply(&mut self, slice: &OutputSlice) -> Result<SliceApplied, StorageError> {
        self.runtime.block_on("apply a slice", self.store.apply(slice))?
    }

    fn position(&mut self, topic: &str, partition: u32) -> Result<u64, StorageError> {
        self.runtime.block_on("read a position", self.store.position(topic, partition))?
    }

    fn decision(&mut self, payment_id: &str) -> Result<Option<StoredDecision>, StorageError> {
        self.runtime.block_on("read a decision", self.store.decision(payment_id))?
    }

    fn balance_minor(&mut self, account_id: &str, currency: &str) -> Result<i64, StorageError> {
        self.runtime.block_on("read a balance", self.store.balance_minor(account_id, currency))?
    }

    fn totals(&mut self) -> Result<StoreTotals, StorageError> {
        self.runtime.block_on("read the totals", self.store.totals())?
    }
}

impl Blocking<PostgresUserStore> {
    /// [`PostgresUserStore::connect`] on a runtime of the store's own.
    pub fn connect(url: &str, schema: &str) -> Result<Blocking<PostgresUserStore>, StorageError> {
        let runtime = BlockingRuntime::current_thread()?;
        let store = runtime.block_on("connect to PostgreSQL", PostgresUserStore::connect(url, schema))??;
        Ok(Blocking { store, runtime })
    }

    /// Drops the schema and everything in it (tests and teardown).
    pub fn drop_schema(self) -> Result<(), StorageError> {
        let Blocking { store, runtime } = self;
        runtime.block_on("drop a schema", store.drop_schema())?
    }
}

impl UserStore for Blocking<PostgresUserStore> {
    fn create_user(&mut self, user: &User) -> Result<(), StorageError> {
        self.runtime.block_on("create a user", self.store.create_user(user))?
    }

    fn user(&mut self, user_id: &str) -> Result<Option<User>, StorageError> {
        self.runtime.block_on("read a user", self.store.user(user_id))?
    }

    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, StorageError> {
        self.runtime.block_on("read a user", self.store.user_by_email(email))?
    }

    fn set_kyc_status(&mut self, user_id: &str, status: KycStatus) -> Result<bool, StorageError> {
        self.runtime.block_on("set a KYC status", self.store.set_kyc_status(user_id, status))?
    }
}
