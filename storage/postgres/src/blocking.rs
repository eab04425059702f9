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

/// A PostgreSQL store that lives in a schema of its own, created and migrated on connect.
pub trait SchemaStore: Sized {
    fn connect(url: &str, schema: &str) -> impl Future<Output = Result<Self, StorageError>>;
    fn drop_schema(self) -> impl Future<Output = Result<(), StorageError>>;
}

impl SchemaStore for PostgresRecordStore {
    fn connect(url: &str, schema: &str) -> impl Future<Output = Result<Self, StorageError>> {
        PostgresRecordStore::connect(url, schema)
    }

    fn drop_schema(self) -> impl Future<Output = Result<(), StorageError>> {
        PostgresRecordStore::drop_schema(self)
    }
}

impl SchemaStore for PostgresUserStore {
    fn connect(url: &str, schema: &str) -> impl Future<Output = Result<Self, StorageError>> {
        PostgresUserStore::connect(url, schema)
    }

    fn drop_schema(self) -> impl Future<Output = Result<(), StorageError>> {
        PostgresUserStore::drop_schema(self)
    }
}

impl<S: SchemaStore> Blocking<S> {
    /// The store's `connect` on a runtime of the store's own.
    pub fn connect(url: &str, schema: &str) -> Result<Blocking<S>, StorageError> {
        let runtime = BlockingRuntime::current_thread()?;
        let store = runtime.block_on("connect to PostgreSQL", S::connect(url, schema))??;
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
