//! Passwords: the account password rules and argon2id hashing, off the async threads.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=..,t=..,p=..$salt$hash`) with a random 16-byte salt
//! and the configured cost, so the cost can be raised later without invalidating old hashes:
//! verification reads the parameters from the stored string. Hashing is deliberately slow and
//! memory-hungry, so it runs on tokio's blocking pool behind a semaphore of
//! `max_concurrent_hashes`: a login flood queues instead of exhausting memory or starving the
//! event loops. Rules follow OWASP ASVS: a minimum length, a maximum of 1024 bytes, and no
//! composition rules.

use std::sync::Arc;

use argon2::password_hash::SaltString;
use argon2::Algorithm;
use argon2::Argon2;
use argon2::Params;
use argon2::PasswordHash;
use argon2::PasswordHasher as _;
use argon2::PasswordVerifier as _;
use argon2::Version;
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::config::AuthConfig;
use crate::error::ApiError;

/// Longest accepted password, in bytes (bounds the hashing work per request).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Bytes of salt per hash.
const SALT_BYTES: usize = 16;

/// The argon2id parameters of `config`, or why they are unusable. Config validation reports the
/// error; [`Passwords::new`] refuses them.
pub fn argon2_params(config: &AuthConfig) -> Result<Params, String> {
    Params::new(
        config.argon2_memory_kib,
        config.argon2_iterations,
        config.argon2_parallelism,
        None,
    )
    .map_err(|e| format!("auth.argon2_* parameters are invalid: {e}"))
}

/// Check a new password against the rules: at least `min_password_chars` characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_password_rules(password: &str, config: &AuthConfig) -> Result<(), ApiError> {
    if password.chars().count() < config.min_password_chars {
        return Err(ApiError::invalid(format!(
            "password must have at least {} characters",
            config.min_password_chars
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(format!(
            "password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Hash `password` into a PHC string with a fresh random salt. Slow: call from a blocking thread.
pub fn hash_password(password: &[u8], params: &Params) -> Result<String, ApiError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal(format!("cannot encode salt: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
}

/// Whether `password` matches the PHC string `phc`. Slow: call from a blocking thread.
pub fn verify_password(password: &[u8], phc: &str) -> Result<bool, ApiError> {
    let parsed =
        PasswordHash::new(phc).map_err(|e| ApiError::internal(format!("stored password hash is unreadable: {e}")))?;
    match Argon2::default().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(ApiError::internal(format!("password verification failed: {e}"))),
    }
}

/// Bounded, off-thread hashing with the node's parameters.
#[derive(Debug)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
}

impl Passwords {
    pub fn new(config: &AuthConfig) -> Result<Self, ApiError> {
        let params = argon2_params(config).map_err(ApiError::internal)?;
        Ok(Self::with_params(params, config.max_concurrent_hashes))
    }

    pub fn with_params(params: Params, max_concurrent: usize) -> Self {
        Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// Hash a new password (the caller has checked the rules).
    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.run(move || hash_password(password.as_bytes(), &params)).await
    }

    /// Check `password` against the stored hash. With no hash (unknown user), or an oversized
    /// password, the same hashing work is done anyway and the answer is `false`, so response
    /// time does not reveal whether an account exists.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, ApiError> {
        let params = self.params.clone();
        let bytes = password.as_bytes();
        let password = bytes[..bytes.len().min(MAX_PASSWORD_BYTES)].to_vec();
        let phc = phc.filter(|_| bytes.len() <= MAX_PASSWORD_BYTES).map(str::to_owned);
        self.run(move || match phc {
            Some(phc) => verify_password(&password, &phc),
            None => hash_password(&password, &params).map(|_| false),
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("password hashing is shut down"))?;
        // The permit moves into the task, so a cancelled request still holds it until the hash
        // is done: the bound is on hashes running, not on requests waiting.
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(permit);
            outcome
        })
        .await
        .map_err(|e| ApiError::internal(format!("password hashing task failed: {e}")))?
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Cheapest parameters argon2 accepts, for fast tests.
    pub(crate) fn tiny_config() -> AuthConfig {
        AuthConfig {
            argon2_memory_kib: 8,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            ..AuthConfig::default()
        }
    }

    #[test]
    fn hash_then_verify() {
        let params = argon2_params(&tiny_config()).expect("params");
        let phc = hash_password(b"correct horse", &params).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{phc}");
        assert!(verify_password(b"correct horse", &phc).expect("verify"));
        assert!(!verify_password(b"correct horsf", &phc).expect("verify"));
        // Fresh salt every time.
        assert_ne!(phc, hash_password(b"correct horse", &params).expect("hash"));
    }

    #[test]
    fn unreadable_stored_hash_is_an_error_not_a_mismatch() {
        assert!(verify_password(b"x", "not a phc string").is_err());
    }

    #[test]
    fn password_rules() {
        let config = AuthConfig {
            min_password_chars: 8,
            ..AuthConfig::default()
        };
        assert!(check_password_rules("short", &config).is_err());
        assert!(check_password_rules("ééééééé", &config).is_err());
        assert!(check_password_rules("éééééééé", &config).is_ok());
        assert!(check_password_rules("all lowercase is fine", &config).is_ok());
        assert!(check_password_rules(&"x".repeat(MAX_PASSWORD_BYTES), &config).is_ok());
        assert!(check_password_rules(&"x".repeat(MAX_PASSWORD_BYTES + 1), &config).is_err());
    }

    #[test]
    fn bad_params_are_reported() {
        let config = AuthConfig {
            argon2_memory_kib: 1,
            ..AuthConfig::default()
        };
        assert!(argon2_params(&config).is_err());
        assert!(argon2_params(&AuthConfig::default()).is_ok());
    }

    #[actix_rt::test]
    async fn async_hash_and_verify_including_unknown_user() {
        let passwords = Passwords::new(&tiny_config()).expect("params");
        let phc = passwords.hash("hunter2hunter2").await.expect("hash");
        assert!(passwords.verify("hunter2hunter2", Some(&phc)).await.expect("ok"));
        assert!(!passwords.verify("wrong", Some(&phc)).await.expect("ok"));
        assert!(!passwords.verify("hunter2hunter2", None).await.expect("ok"));
        let huge = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(!passwords.verify(&huge, Some(&phc)).await.expect("ok"));
    }
}
