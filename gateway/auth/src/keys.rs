//! The keys access tokens are signed with: Ed25519 (JWT `alg: EdDSA`, pinned; no other
//! algorithm is accepted), each with a `kid`. The newest key signs; a retired key still
//! verifies until every token it signed has expired, then leaves the key set. The
//! public keys are published as a JWKS (`/.well-known/jwks.json`).
//!
//! The key file is JSON, mode 0600. In the embedded default it is created at first start
//! in the data directory; in production it is mounted from a secret
//! (`--auth-key-file`), and `paystream auth rotate-key` adds a key to it.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use paystream_http::AuthFailure;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ACCESS_TOKEN_TTL_SECONDS_MAX, AuthConfig, TOKEN_LEEWAY_SECONDS};
use crate::error::AuthError;
use crate::model::AccessClaims;

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A key file holds at most this many keys (signing plus retired ones).
pub const KEYS_MAX: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// The Ed25519 seed, base64url.
    private_key: String,
    created_at_ms: i64,
    #[serde(default)]
    retired_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Clone)]
struct LoadedKey {
    stored: StoredKey,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: [u8; 32],
}

#[derive(Clone)]
pub struct Keyring {
    keys: Vec<LoadedKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|key| key.stored.kid.as_str()).collect();
        formatter.debug_struct("Keyring").field("kids", &kids).finish()
    }
}

fn load_key(stored: StoredKey) -> Result<LoadedKey, AuthError> {
    let seed = URL_SAFE_NO_PAD
        .decode(&stored.private_key)
        .map_err(|_| AuthError::Keys(format!("key {}: private_key is not base64url", stored.kid)))?;
    let seed: [u8; 32] =
        seed.try_into().map_err(|_| AuthError::Keys(format!("key {}: an Ed25519 seed is 32 bytes", stored.kid)))?;
    let public_key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(public_key))
        .map_err(|error| AuthError::Keys(format!("key {}: {error}", stored.kid)))?;
    Ok(LoadedKey { stored, encoding: EncodingKey::from_ed_der(&der), decoding, public_key })
}

fn new_key(now_ms: i64) -> Result<LoadedKey, AuthError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| AuthError::Keys(format!("random source: {error}")))?;
    let public_key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let kid = paystream_http::hex::encode(&Sha256::digest(public_key)[..8]);
    load_key(StoredKey { kid, private_key: URL_SAFE_NO_PAD.encode(seed), created_at_ms: now_ms, retired_at_ms: None })
}

/// How long after retirement a key still verifies: the longest token lifetime plus
/// leeway.
const RETIRED_VERIFY_MS: i64 = ((ACCESS_TOKEN_TTL_SECONDS_MAX + TOKEN_LEEWAY_SECONDS) * 1000) as i64;

impl Keyring {
    /// One new key (tests and the first start).
    pub fn generate(now_ms: i64) -> Result<Keyring, AuthError> {
        Ok(Keyring { keys: vec![new_key(now_ms)?] })
    }

    /// Reads the key file at `path`; creates it with one new key if it does not exist.
    pub fn load_or_create(path: &Path, now_ms: i64) -> Result<Keyring, AuthError> {
        if path.exists() {
            return Keyring::load(path);
        }
        let keyring = Keyring::generate(now_ms)?;
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)
                .map_err(|error| AuthError::Keys(format!("create {}: {error}", directory.display())))?;
        }
        keyring.save(path)?;
        tracing::info!(path = %path.display(), "created a signing key");
        Ok(keyring)
    }

    pub fn load(path: &Path) -> Result<Keyring, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| AuthError::Keys(format!("read {}: {error}", path.display())))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|error| AuthError::Keys(format!("{}: not a key file: {error}", path.display())))?;
        if file.keys.is_empty() || file.keys.len() > KEYS_MAX {
            return Err(AuthError::Keys(format!("{}: 1 to {KEYS_MAX} keys", path.display())));
        }
        let keys = file.keys.into_iter().map(load_key).collect::<Result<Vec<_>, _>>()?;
        let keyring = Keyring { keys };
        keyring.signing_key()?;
        Ok(keyring)
    }

    /// Writes the key file (mode 0600) atomically: a temporary file, fsync, rename.
    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = KeyFile { keys: self.keys.iter().map(|key| key.stored.clone()).collect() };
        let text = serde_json::to_string_pretty(&file).map_err(|error| AuthError::Keys(error.to_string()))?;
        let temporary = path.with_extension("tmp");
        let io = |error: std::io::Error| AuthError::Keys(format!("write {}: {error}", path.display()));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(io)?;
        out.write_all(text.as_bytes()).map_err(io)?;
        out.sync_all().map_err(io)?;
        std::fs::rename(&temporary, path).map_err(io)?;
        Ok(())
    }

    /// Adds a new signing key and retires the current one (it verifies on until its
    /// tokens expire); keys retired longer ago than that are dropped.
    pub fn rotate(&mut self, now_ms: i64) -> Result<String, AuthError> {
        for key in &mut self.keys {
            key.stored.retired_at_ms.get_or_insert(now_ms);
        }
        self.keys.retain(|key| key.stored.retired_at_ms.is_none_or(|retired| now_ms < retired + RETIRED_VERIFY_MS));
        let key = new_key(now_ms)?;
        let kid = key.stored.kid.clone();
        self.keys.push(key);
        if self.keys.len() > KEYS_MAX {
            return Err(AuthError::Keys(format!("more than {KEYS_MAX} keys still verify")));
        }
        Ok(kid)
    }

    fn signing_key(&self) -> Result<&LoadedKey, AuthError> {
        self.keys
            .iter()
            .filter(|key| key.stored.retired_at_ms.is_none())
            .max_by_key(|key| key.stored.created_at_ms)
            .ok_or_else(|| AuthError::Keys("no signing key (every key is retired)".to_string()))
    }

    pub fn signing_kid(&self) -> Result<&str, AuthError> {
        Ok(&self.signing_key()?.stored.kid)
    }

    fn verifies(key: &LoadedKey, now_ms: i64) -> bool {
        key.stored.retired_at_ms.is_none_or(|retired| now_ms < retired + RETIRED_VERIFY_MS)
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, AuthError> {
        let key = self.signing_key()?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.stored.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|error| AuthError::Keys(format!("sign: {error}")))
    }

    /// Checks a token: `alg` EdDSA, a `kid` of a key that still verifies, the
    /// signature, `exp` (with [`TOKEN_LEEWAY_SECONDS`]), `iss` and `aud`.
    pub fn verify(&self, token: &str, config: &AuthConfig, now_ms: i64) -> Result<AccessClaims, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthFailure::BadSignature);
        }
        let kid = header.kid.ok_or(AuthFailure::UnknownKey)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.stored.kid == kid && Keyring::verifies(key, now_ms))
            .ok_or(AuthFailure::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = TOKEN_LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AuthFailure::Expired,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthFailure::BadSignature,
                _ => AuthFailure::Malformed,
            }
        })?;
        let claims = data.claims;
        // Tokens are never issued for longer than the maximum; one that says so was not
        // issued here.
        if claims.exp.saturating_sub(claims.iat) > ACCESS_TOKEN_TTL_SECONDS_MAX {
            return Err(AuthFailure::Malformed);
        }
        Ok(claims)
    }

    /// The public keys that still verify, as a JSON Web Key Set (RFC 8037 OKP keys).
    pub fn jwks(&self, now_ms: i64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .filter(|key| Keyring::verifies(key, now_ms))
            .map(|key| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": key.stored.kid,
                    "x": URL_SAFE_NO_PAD.encode(key.public_key),
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}
