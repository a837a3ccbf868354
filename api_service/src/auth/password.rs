//! Password hashing with argon2id at OWASP's recommended cost (m = 19 MiB, t = 2, p = 1).
//!
//! Each hash takes tens of milliseconds of CPU and 19 MiB of memory, so it runs on the
//! blocking pool (never stalling the async workers) behind a semaphore sized to the CPU
//! count: a login flood queues up instead of exhausting memory.
//!
//! Unknown users are "verified" against a dummy hash computed once at start-up, so a wrong
//! username costs the same time as a wrong password and response timing reveals nothing
//! about which usernames exist.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet, argon2id option 1.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
        .expect("the OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes on the calling thread; use from blocking contexts (CLI) or via [`Hasher`].
pub fn hash_password_blocking(password: &str) -> Result<String, PasswordError> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True only when `phc` is a valid argon2 PHC string for `password`. A malformed stored
/// hash verifies as false (and is logged) rather than failing the login with a 500.
pub fn verify_password_blocking(password: &str, phc: &str) -> bool {
    let parsed = match PasswordHash::new(phc) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::error!(error = %err, "stored password hash is malformed");
            return false;
        }
    };
    // The parameters come from the stored hash, so older hashes keep verifying if the
    // cost is raised later.
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Shared, concurrency-limited access to argon2 for request handlers.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// Computes the dummy hash (one full argon2 run) before returning.
    pub async fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let dummy_password = uuid::Uuid::new_v4().to_string();
        let dummy_hash =
            tokio::task::spawn_blocking(move || hash_password_blocking(&dummy_password)).await??;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        tokio::task::spawn_blocking(move || hash_password_blocking(password.expose_secret()))
            .await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no user
    /// (always false then, after the same amount of work).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let user_exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            verify_password_blocking(password.expose_secret(), &phc)
        })
        .await?;
        Ok(matches && user_exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_uses_argon2id_with_owasp_parameters() {
        let hash = hash_password_blocking("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(hash.contains("m=19456,t=2,p=1"), "{hash}");
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong_password() {
        let hash = hash_password_blocking("correct horse").unwrap();
        assert!(verify_password_blocking("correct horse", &hash));
        assert!(!verify_password_blocking("correct horsf", &hash));
        assert!(!verify_password_blocking("", &hash));
    }

    #[test]
    fn same_password_hashes_differently() {
        let a = hash_password_blocking("pw").unwrap();
        let b = hash_password_blocking("pw").unwrap();
        assert_ne!(a, b, "salts must be random");
    }

    #[test]
    fn malformed_stored_hash_does_not_verify() {
        assert!(!verify_password_blocking("pw", "not a phc string"));
        assert!(!verify_password_blocking("pw", ""));
    }

    #[tokio::test]
    async fn unknown_user_never_verifies_even_with_dummy_password() {
        let hasher = Hasher::new(2).await.unwrap();
        // Whatever the password, "no user" is false.
        assert!(
            !hasher
                .verify(SecretString::from("anything"), None)
                .await
                .unwrap()
        );
        let hash = hasher.hash(SecretString::from("pw-123456")).await.unwrap();
        assert!(
            hasher
                .verify(SecretString::from("pw-123456"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_user_costs_about_as_much_as_a_wrong_password() {
        let hasher = Hasher::new(1).await.unwrap();
        let hash = hasher.hash(SecretString::from("pw-123456")).await.unwrap();
        let time_one = |stored: Option<String>| {
            let hasher = hasher.clone();
            async move {
                let start = std::time::Instant::now();
                hasher
                    .verify(SecretString::from("wrong-password"), stored)
                    .await
                    .unwrap();
                start.elapsed()
            }
        };
        // Interleaved runs, compared by their minimum: robust against other tests
        // competing for the CPU.
        let (mut known, mut unknown) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..7 {
            known = known.min(time_one(Some(hash.clone())).await);
            unknown = unknown.min(time_one(None).await);
        }
        // Without the dummy hash the unknown-user path would be ~1000x faster; a loose
        // bound catches that without flaking on a busy machine.
        let ratio = known.as_secs_f64() / unknown.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "known {known:?} vs unknown {unknown:?}"
        );
    }
}
