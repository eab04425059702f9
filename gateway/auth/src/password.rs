//! Passwords are hashed with argon2id at OWASP's parameters (m = 19 MiB, t = 2, p = 1),
//! as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`) that carry their parameters, so
//! a hash made with weaker parameters is recognised and replaced at the next login.
//! Hashing takes tens of milliseconds of CPU: callers run it with `spawn_blocking`.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::AuthError;

/// OWASP Password Storage Cheat Sheet, argon2id option 1 or stronger.
pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const PARALLELISM: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    pub const CURRENT: HashParams =
        HashParams { memory_kib: MEMORY_KIB, iterations: ITERATIONS, parallelism: PARALLELISM };

    fn hasher(self) -> Argon2<'static> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .expect("argon2 parameters within the algorithm's bounds");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }
}

pub fn hash(password: &str, params: HashParams) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    params
        .hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Internal(format!("hash a password: {error}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but hashed with weaker parameters or another algorithm than
    /// [`HashParams::CURRENT`]: store a new hash.
    YesRehash,
}

pub fn verify(password: &str, stored: &str) -> Verified {
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::error!("a stored password hash does not parse");
        return Verified::No;
    };
    // Verification uses the parameters in the hash.
    if Argon2::default().verify_password(password.as_bytes(), &parsed).is_err() {
        return Verified::No;
    }
    let current = HashParams::CURRENT;
    let weaker = parsed.algorithm.as_str() != "argon2id"
        || Params::try_from(&parsed)
            .map_or(true, |params| params.m_cost() < current.memory_kib || params.t_cost() < current.iterations);
    if weaker { Verified::YesRehash } else { Verified::Yes }
}

/// A hash of a random password, verified against when the account does not exist, so
/// that unknown accounts and wrong passwords take the same time.
pub fn decoy_hash() -> String {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random source works");
    let secret = paystream_http::hex::encode(&secret);
    hash(&secret, HashParams::CURRENT).expect("hashing a decoy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_with_argon2id_and_asks_for_rehash_of_weaker_hashes() {
        let stored = hash("correct horse battery", HashParams::CURRENT).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert_eq!(verify("correct horse battery", &stored), Verified::Yes);
        assert_eq!(verify("wrong horse battery", &stored), Verified::No);
        let weak = hash("correct horse battery", HashParams { memory_kib: 8, iterations: 1, parallelism: 1 }).unwrap();
        assert_eq!(verify("correct horse battery", &weak), Verified::YesRehash);
        assert_eq!(verify("wrong", &weak), Verified::No);
        assert_eq!(verify("anything", "not a hash"), Verified::No);
    }
}
