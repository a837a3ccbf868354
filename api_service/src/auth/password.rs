//! Password hashing with argon2id at OWASP's recommended cost (m = 19 MiB, t = 2, p = 1).
//!
//! Each hash takes tens of milliseconds of CPU and 19 MiB of memory, so it runs on the
//! blocking pool (never stalling the async workers) behind a semaphore sized to the CPU
//! count: a login flood queues up instead of exhausting memory.
//!
//! The 19 MiB working memory is NOT allocated per hash: glibc malloc raises its mmap
//! threshold after the first free of such a block and then keeps every later one in its
//! per-thread arenas, so a login storm left the process at hundreds of MB for good. Instead
//! [`Hasher`] keeps one block buffer per semaphore permit, created on first use and reused
//! for every hash (argon2 overwrites each block before reading it, so reuse is sound). Peak
//! hashing memory is therefore `permits × 19 MiB`, and it never grows past that.
//!
//! Unknown users are "verified" against a dummy hash computed once at start-up, through the
//! same pooled path, so a wrong username costs the same time as a wrong password and
//! response timing reveals nothing about which usernames exist.
//!
//! A stored hash is verified with its own parameters, within [`ParamBounds`]: a hash far
//! cheaper than anything this service writes is treated as tampered, and one far costlier
//! would let a single row pin a CPU and hundreds of MiB per login. A hash cheaper than the
//! current cost still verifies, and [`needs_rehash`] tells the login to upgrade it.
//!
//! Waiting for a hashing slot is bounded ([`MAX_WAIT`]): a login flood gets a quick
//! "busy, retry" instead of piling up requests that each hold a connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::PasswordVerifier as _;
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use zeroize::Zeroize as _;

/// OWASP Password Storage Cheat Sheet, argon2id option 1.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;

/// How long a login waits for a hashing slot before being told to retry (503).
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The parameters a stored hash may have and still be verified.
pub struct ParamBounds;

impl ParamBounds {
    /// Below 4 MiB argon2 is cheap enough to brute-force on a GPU; this service never wrote
    /// such a hash, so a row carrying one was tampered with or imported carelessly.
    pub const MIN_M_COST_KIB: u32 = 4 * 1024;
    /// 256 MiB, 16 passes, 16 lanes: an order of magnitude above the current cost, and a
    /// bound on what one stored row can make a login spend.
    pub const MAX_M_COST_KIB: u32 = 256 * 1024;
    pub const MAX_T_COST: u32 = 16;
    pub const MAX_P_COST: u32 = 16;

    fn check(params: &Params) -> Result<(), String> {
        let (m, t, p) = (params.m_cost(), params.t_cost(), params.p_cost());
        if m < Self::MIN_M_COST_KIB {
            return Err(format!(
                "m={m} KiB is below the floor of {}",
                Self::MIN_M_COST_KIB
            ));
        }
        if m > Self::MAX_M_COST_KIB || t > Self::MAX_T_COST || p > Self::MAX_P_COST {
            return Err(format!("m={m},t={t},p={p} is above the ceiling"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Every hashing slot stayed taken for [`MAX_WAIT`].
    #[error("every password hashing slot is busy")]
    Busy,
}

fn owasp_params() -> Params {
    Params::new(M_COST_KIB, T_COST, P_COST, None).expect("the OWASP argon2 parameters are valid")
}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, owasp_params())
}

/// A zeroed working buffer big enough for one hash at the OWASP parameters.
fn new_memory() -> Vec<Block> {
    vec![Block::default(); owasp_params().block_count()]
}

/// Hashes `password` with a fresh random salt, using `memory` as argon2's working blocks
/// (must hold at least [`Params::block_count`] blocks). Returns the standard PHC string
/// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
fn hash_with_memory(password: &str, memory: &mut [Block]) -> Result<String, PasswordError> {
    let hash_err = |e: &dyn std::fmt::Display| PasswordError::Hash(e.to_string());
    let argon2 = argon2();
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
        .map_err(|e| hash_err(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| hash_err(&e))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| hash_err(&e))?),
    };
    Ok(phc.to_string())
}

/// True only when `phc` is a valid argon2 PHC string for `password`, recomputed with the
/// stored hash's own algorithm, version and parameters (so older hashes keep verifying if
/// the cost is raised later). Uses `memory` when it is big enough for those parameters and
/// falls back to argon2's own allocating verifier otherwise. A malformed stored hash
/// verifies as false (and is logged) rather than failing the login with a 500.
fn verify_with_memory(password: &str, phc: &str, memory: &mut [Block]) -> bool {
    let parsed = match PasswordHash::new(phc) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::error!(error = %err, "stored password hash is malformed");
            return false;
        }
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        tracing::error!("stored password hash has no salt or no hash");
        return false;
    };
    let context = Algorithm::try_from(parsed.algorithm.as_str()).and_then(|algorithm| {
        let version = parsed.version.map(Version::try_from).transpose()?;
        let params = Params::try_from(&parsed)?;
        Ok((algorithm, version.unwrap_or_default(), params))
    });
    let (algorithm, version, params) = match context {
        Ok(context) => context,
        Err(err) => {
            tracing::error!(error = %err, "stored password hash has unusable parameters");
            return false;
        }
    };
    if let Err(why) = ParamBounds::check(&params) {
        tracing::error!(
            why,
            "stored password hash is out of bounds; reset this user's password"
        );
        return false;
    }
    if params.block_count() > memory.len() {
        // Costlier than the pool's buffers (a hash from a future, higher setting): rare,
        // so argon2 may allocate for it.
        return argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
    }
    let mut buffer = [0u8; Output::MAX_LENGTH];
    let Some(out) = buffer.get_mut(..expected.len()) else {
        return false;
    };
    let computed = Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
        .map_err(|e| e.to_string())
        .and_then(|()| Output::new(out).map_err(|e| e.to_string()));
    match computed {
        // `Output`'s `PartialEq` is constant-time.
        Ok(computed) => computed == *expected,
        Err(err) => {
            tracing::error!(error = %err, "argon2 failed while verifying a password");
            false
        }
    }
}

/// True when `phc` verifies but is cheaper than what this service writes now (older
/// parameters, another argon2 variant or version): the login that proves the password
/// should store a fresh hash. Never true for a costlier hash (no downgrades), nor for an
/// unparsable one (it does not verify at all).
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    let current_variant = parsed.algorithm == Algorithm::Argon2id.ident()
        && parsed
            .version
            .is_none_or(|v| v == u32::from(Version::V0x13));
    !current_variant || params.m_cost() < M_COST_KIB || params.t_cost() < T_COST
}

/// Hashes on the calling thread; use from blocking contexts (CLI) or via [`Hasher`].
pub fn hash_password_blocking(password: &str) -> Result<String, PasswordError> {
    hash_with_memory(password, &mut new_memory())
}

/// True only when `phc` is a valid argon2 PHC string for `password`. A malformed stored
/// hash verifies as false (and is logged) rather than failing the login with a 500.
pub fn verify_password_blocking(password: &str, phc: &str) -> bool {
    // No buffer: argon2 allocates exactly what the stored parameters need.
    verify_with_memory(password, phc, &mut [])
}

/// Argon2 working buffers, at most one per [`Hasher`] permit (a permit is held for as long
/// as its buffer is out of the pool).
#[derive(Default)]
struct MemoryPool(Mutex<Vec<Vec<Block>>>);

impl MemoryPool {
    fn take(&self) -> Vec<Block> {
        let pooled = self.0.lock().unwrap_or_else(PoisonError::into_inner).pop();
        pooled.unwrap_or_else(new_memory)
    }

    /// Wipes the buffer (it holds values derived from the password) before pooling it.
    fn put(&self, mut memory: Vec<Block>) {
        memory.iter_mut().for_each(Block::zeroize);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(memory);
    }
}

/// Shared, concurrency-limited access to argon2 for request handlers.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    max_wait: Duration,
    pool: Arc<MemoryPool>,
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// Computes the dummy hash (one full argon2 run, outside the pool) before returning.
    pub async fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let dummy_password = uuid::Uuid::new_v4().to_string();
        // Not through the pool: a pooled buffer would stay resident (19 MiB) in a server that
        // has not served a single login yet. This one is freed, and the pool fills on demand.
        let dummy_hash =
            tokio::task::spawn_blocking(move || hash_password_blocking(&dummy_password)).await??;
        Ok(Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            max_wait: MAX_WAIT,
            pool: Arc::default(),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// How long a hash may wait for a slot before failing with [`PasswordError::Busy`].
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Runs `work` on the blocking pool with a pooled argon2 buffer. The permit moves into
    /// the task and is released only after the buffer is back in the pool, so even when the
    /// caller's future is dropped mid-hash there are never more buffers than permits.
    async fn with_memory<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = tokio::time::timeout(self.max_wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .expect("semaphore never closed");
        let pool = Arc::clone(&self.pool);
        let result = tokio::task::spawn_blocking(move || {
            let mut memory = pool.take();
            let result = work(&mut memory);
            pool.put(memory);
            drop(permit);
            result
        })
        .await?;
        Ok(result)
    }

    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        self.with_memory(move |memory| hash_with_memory(password.expose_secret(), memory))
            .await?
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no user
    /// (always false then, after the same amount of work).
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let user_exists = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self
            .with_memory(move |memory| verify_with_memory(password.expose_secret(), &phc, memory))
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

    fn stock_verify(password: &str, phc: &str) -> bool {
        Argon2::default()
            .verify_password(password.as_bytes(), &PasswordHash::new(phc).unwrap())
            .is_ok()
    }

    #[test]
    fn pooled_hash_is_a_standard_phc_string_stock_argon2_accepts() {
        let mut memory = new_memory();
        let hash = hash_with_memory("correct horse", &mut memory).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(stock_verify("correct horse", &hash));
        assert!(!stock_verify("correct horsf", &hash));
        // The reused buffer gives the same answers on a second run.
        assert!(verify_with_memory("correct horse", &hash, &mut memory));
        assert!(!verify_with_memory("wrong", &hash, &mut memory));
    }

    #[test]
    fn pooled_verify_accepts_stock_argon2_hashes() {
        use argon2::password_hash::PasswordHasher as _;
        let stock = argon2().hash_password(b"pw-123456").unwrap().to_string();
        let mut memory = new_memory();
        assert!(verify_with_memory("pw-123456", &stock, &mut memory));
        assert!(!verify_with_memory("pw-1234567", &stock, &mut memory));
    }

    #[test]
    fn hashes_with_other_parameters_verify_with_their_own() {
        use argon2::password_hash::{CustomizedPasswordHasher as _, PasswordHasher as _};
        let salt = Salt::generate();
        let cheaper = Argon2::default()
            .hash_password_customized(
                b"old-password",
                &salt,
                None,
                None,
                Params::new(8192, 1, 1, None).unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(cheaper.contains("m=8192,t=1,p=1"), "{cheaper}");
        let mut memory = new_memory();
        assert!(verify_with_memory("old-password", &cheaper, &mut memory));
        assert!(!verify_with_memory("new-password", &cheaper, &mut memory));

        // Costlier than the pooled buffer: falls back to argon2's own allocation.
        let costlier = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(M_COST_KIB + 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"big")
        .unwrap()
        .to_string();
        assert!(verify_with_memory("big", &costlier, &mut memory));
        assert!(!verify_with_memory("small", &costlier, &mut memory));

        // argon2i (older default in some libraries) with a shorter output.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(4096, 3, 1, Some(16)).unwrap(),
        )
        .hash_password(b"legacy")
        .unwrap()
        .to_string();
        assert!(argon2i.starts_with("$argon2i$"), "{argon2i}");
        assert!(verify_with_memory("legacy", &argon2i, &mut memory));
        assert!(!verify_with_memory("legacz", &argon2i, &mut memory));
    }

    #[test]
    fn hashes_outside_the_parameter_bounds_do_not_verify() {
        use argon2::password_hash::{CustomizedPasswordHasher as _, PasswordHasher as _};
        let too_cheap = Argon2::default()
            .hash_password_customized(
                b"pw",
                &Salt::generate(),
                None,
                None,
                Params::new(1024, 1, 1, None).unwrap(),
            )
            .unwrap()
            .to_string();
        assert!(!verify_with_memory("pw", &too_cheap, &mut new_memory()));
        // A forged row asking for 1 GiB is refused before any work: the salt and hash are
        // never even computed against.
        let current = argon2().hash_password(b"pw").unwrap().to_string();
        let too_costly = current.replace("m=19456", "m=1048576");
        let started = std::time::Instant::now();
        assert!(!verify_with_memory("pw", &too_costly, &mut new_memory()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn only_hashes_cheaper_than_the_current_cost_need_a_rehash() {
        use argon2::password_hash::PasswordHasher as _;
        let current = hash_password_blocking("pw").unwrap();
        assert!(!needs_rehash(&current));
        let with = |algorithm, params| {
            Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"pw")
                .unwrap()
                .to_string()
        };
        let fewer_passes = with(
            Algorithm::Argon2id,
            Params::new(M_COST_KIB, 1, 1, None).unwrap(),
        );
        let less_memory = with(Algorithm::Argon2id, Params::new(8192, 2, 1, None).unwrap());
        let argon2i = with(
            Algorithm::Argon2i,
            Params::new(M_COST_KIB, 2, 1, None).unwrap(),
        );
        let costlier = with(
            Algorithm::Argon2id,
            Params::new(M_COST_KIB, 3, 1, None).unwrap(),
        );
        assert!(needs_rehash(&fewer_passes), "{fewer_passes}");
        assert!(needs_rehash(&less_memory), "{less_memory}");
        assert!(needs_rehash(&argon2i), "{argon2i}");
        assert!(!needs_rehash(&costlier), "no downgrade: {costlier}");
        assert!(!needs_rehash("not a phc string"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hash_waits_for_a_slot_only_so_long() {
        let hasher = Hasher::new(1)
            .await
            .unwrap()
            .with_max_wait(Duration::from_secs(3));
        let _taken = Arc::clone(&hasher.permits).acquire_owned().await.unwrap();
        let started = tokio::time::Instant::now();
        let result = hasher.verify(SecretString::from("pw"), None).await;
        assert!(matches!(result, Err(PasswordError::Busy)), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn pooled_buffers_are_wiped() {
        let hasher = Hasher::new(1).await.unwrap();
        hasher.hash(SecretString::from("pw-123456")).await.unwrap();
        let pool = hasher.pool.0.lock().unwrap();
        let memory = pool.first().expect("one pooled buffer");
        assert!(
            memory
                .iter()
                .all(|block| block.as_ref().iter().all(|&word| word == 0))
        );
    }

    #[tokio::test]
    async fn pool_never_holds_more_buffers_than_permits() {
        let hasher = Hasher::new(2).await.unwrap();
        let hash = hasher.hash(SecretString::from("pw-123456")).await.unwrap();
        let logins =
            (0..6).map(|_| hasher.verify(SecretString::from("pw-123456"), Some(hash.clone())));
        for ok in futures::future::join_all(logins).await {
            assert!(ok.unwrap());
        }
        let pooled = hasher.pool.0.lock().unwrap().len();
        assert!((1..=2).contains(&pooled), "{pooled} buffers");
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
