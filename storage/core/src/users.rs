//! Users: the people behind wallets, for the auth and customer services. A user has a
//! stable id, a unique e-mail address (compared lower-cased), a display name and a KYC
//! state. In memory ([`MemoryUserStore`]) or in PostgreSQL (`paystream-storage-postgres`:
//! a schema of the users' own, apart from the record sink's tables).

use std::collections::HashMap;

use crate::error::StorageError;

/// Where a user stands with know-your-customer checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KycStatus {
    Pending,
    Verified,
    Rejected,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KycStatus::Pending => "pending",
            KycStatus::Verified => "verified",
            KycStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Result<KycStatus, StorageError> {
        match text {
            "pending" => Ok(KycStatus::Pending),
            "verified" => Ok(KycStatus::Verified),
            "rejected" => Ok(KycStatus::Rejected),
            other => Err(StorageError::InvalidRecord(format!("unknown KYC status {other:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    /// Lower-cased.
    pub email: String,
    pub display_name: String,
    pub kyc_status: KycStatus,
    pub created_at_ms: i64,
}

/// Longest user id, e-mail address and display name accepted.
pub const USER_FIELD_BYTES_MAX: usize = 320;

impl User {
    /// A new user with pending KYC; the e-mail address is lower-cased and checked.
    pub fn new(user_id: &str, email: &str, display_name: &str, created_at_ms: i64) -> Result<User, StorageError> {
        let email = email.trim().to_lowercase();
        let valid_email = email.find('@').is_some_and(|at| at > 0 && at + 1 < email.len()) && !email.contains(' ');
        if !valid_email {
            return Err(StorageError::InvalidRecord(format!("{email:?} is not an e-mail address")));
        }
        for (field, value) in [("user_id", user_id), ("email", &email), ("display_name", display_name)] {
            if value.trim().is_empty() || value.len() > USER_FIELD_BYTES_MAX {
                return Err(StorageError::InvalidRecord(format!("{field} must be 1 to {USER_FIELD_BYTES_MAX} bytes")));
            }
        }
        Ok(User {
            user_id: user_id.to_string(),
            email,
            display_name: display_name.to_string(),
            kyc_status: KycStatus::Pending,
            created_at_ms,
        })
    }
}

/// Users by id and e-mail. Creating a user whose id or e-mail exists is
/// [`StorageError::Conflict`], never a silent overwrite.
pub trait UserStore: Send {
    fn create_user(&mut self, user: &User) -> Result<(), StorageError>;
    fn user(&mut self, user_id: &str) -> Result<Option<User>, StorageError>;
    /// Looks the address up lower-cased.
    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, StorageError>;
    /// Sets the KYC state; `Ok(false)` if there is no such user.
    fn set_kyc_status(&mut self, user_id: &str, status: KycStatus) -> Result<bool, StorageError>;
}

#[derive(Default)]
pub struct MemoryUserStore {
    users: HashMap<String, User>,
}

impl UserStore for MemoryUserStore {
    fn create_user(&mut self, user: &User) -> Result<(), StorageError> {
        if self.users.contains_key(&user.user_id) {
            return Err(StorageError::Conflict(format!("user {:?} exists", user.user_id)));
        }
        if self.users.values().any(|u| u.email == user.email) {
            return Err(StorageError::Conflict(format!("e-mail {:?} is taken", user.email)));
        }
        self.users.insert(user.user_id.clone(), user.clone());
        Ok(())
    }

    fn user(&mut self, user_id: &str) -> Result<Option<User>, StorageError> {
        Ok(self.users.get(user_id).cloned())
    }

    fn user_by_email(&mut self, email: &str) -> Result<Option<User>, StorageError> {
        let email = email.trim().to_lowercase();
        Ok(self.users.values().find(|u| u.email == email).cloned())
    }

    fn set_kyc_status(&mut self, user_id: &str, status: KycStatus) -> Result<bool, StorageError> {
        Ok(self.users.get_mut(user_id).map(|u| u.kyc_status = status).is_some())
    }
}
