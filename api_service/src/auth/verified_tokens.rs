//! Access tokens this instance has already verified, so a client presenting the same token on
//! every request pays for the signature check and the claims' JSON once, not per request
//! (they were a tenth of the API's CPU on a hot `/stock` in the benchmark's profile).
//!
//! Reusing a verification is safe because all it checked, except the clock, is a property of
//! the token's exact bytes: a hit needs the identical token string, so a token altered in any
//! byte is verified afresh. The clock checks (`exp`, `nbf`, same leeway) run again on every
//! hit. Logouts, token versions and deleted users are not properties of the token; the
//! extractors check them on every request as before.
//!
//! Bounded: only tokens that verified are kept, at most [`CAPACITY`]. A full cache first drops
//! its expired entries and, if still full, starts over. Filling it takes valid tokens (a login
//! each), and a miss costs no more than every request did before.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::jwt::{Claims, TokenError};

/// Tokens kept per instance: more than the clients one instance serves at once, and ~2 MB at
/// most (a token and its claims are a few hundred bytes).
pub const CAPACITY: usize = 4096;

pub struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Claims>>,
    capacity: usize,
    leeway: u64,
}

impl VerifiedTokens {
    /// `leeway`: the clock-skew allowance the full verification applies to `exp` and `nbf`.
    pub fn new(leeway: u64) -> Self {
        Self::with_capacity(CAPACITY, leeway)
    }

    pub fn with_capacity(capacity: usize, leeway: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            leeway,
        }
    }

    /// The claims of `token` if it was verified before, checked against the clock at `now`
    /// (Unix seconds); `None` if it must be verified.
    pub fn get(&self, token: &str, now: u64) -> Option<Result<Claims, TokenError>> {
        let claims = self.lock().get(token)?.clone();
        Some(self.clock_check(&claims, now).map(|()| claims))
    }

    /// Remembers a token that has just passed the full verification.
    pub fn insert(&self, token: &str, claims: &Claims, now: u64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, kept| self.clock_check(kept, now).is_ok());
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(token.into(), claims.clone());
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// What jsonwebtoken's validation checks of the clock, with the same leeway.
    fn clock_check(&self, claims: &Claims, now: u64) -> Result<(), TokenError> {
        if claims.exp < now.saturating_sub(self.leeway) {
            return Err(TokenError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Claims>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-written.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn claims(exp: u64, nbf: Option<u64>) -> Claims {
        Claims {
            sub: "7".into(),
            role: Role::User,
            iat: 1_000,
            nbf,
            exp,
            iss: "iss".into(),
            aud: "aud".into(),
            jti: "jti".into(),
            ver: 0,
        }
    }

    #[test]
    fn a_token_never_verified_is_a_miss() {
        let cache = VerifiedTokens::new(2);
        cache.insert("a.b.c", &claims(2_000, None), 1_000);

        assert!(cache.get("a.b.d", 1_000).is_none());
    }

    #[test]
    fn a_verified_token_is_served_until_it_expires() {
        let cache = VerifiedTokens::new(2);
        let kept = claims(2_000, Some(1_000));
        cache.insert("a.b.c", &kept, 1_000);

        assert_eq!(cache.get("a.b.c", 1_500), Some(Ok(kept.clone())));
        assert_eq!(
            cache.get("a.b.c", 2_002),
            Some(Ok(kept)),
            "within the leeway"
        );
        assert_eq!(cache.get("a.b.c", 2_003), Some(Err(TokenError::Expired)));
    }

    #[test]
    fn a_clock_gone_back_before_nbf_refuses_the_token() {
        let cache = VerifiedTokens::new(2);
        cache.insert("a.b.c", &claims(2_000, Some(1_000)), 1_000);

        assert_eq!(cache.get("a.b.c", 997), Some(Err(TokenError::NotYetValid)));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let cache = VerifiedTokens::with_capacity(3, 2);
        for n in 0..10 {
            cache.insert(&format!("token-{n}"), &claims(2_000, None), 1_000);
            assert!(cache.len() <= 3, "{} entries after {n}", cache.len());
        }
        assert!(cache.get("token-9", 1_000).is_some(), "the newest is kept");
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_first() {
        let cache = VerifiedTokens::with_capacity(3, 0);
        cache.insert("old", &claims(1_100, None), 1_000);
        cache.insert("live-1", &claims(5_000, None), 1_000);
        cache.insert("live-2", &claims(5_000, None), 1_000);

        cache.insert("new", &claims(5_000, None), 2_000);

        assert!(cache.get("old", 2_000).is_none());
        for kept in ["live-1", "live-2", "new"] {
            assert!(cache.get(kept, 2_000).is_some(), "{kept}");
        }
    }
}
