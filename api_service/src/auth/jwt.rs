//! Access tokens: HS256 JWTs with a pinned algorithm, issuer and audience.
//!
//! Validation accepts exactly what this service issues: HS256 only (so `alg: none` and
//! algorithm-confusion tricks fail), our `iss` and `aud` required and checked, `exp`
//! required, `nbf` honoured, and a leeway of a couple of seconds for clock skew between
//! instances. The role claim is informative; authorisation reads the role from the
//! database (see `extractors`).

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::verified_tokens::VerifiedTokens;
use crate::settings::Settings;
use crate::store::Role;

/// Shortest accepted signing key: HS256 is only as strong as its key, and RFC 7518 §3.2
/// asks for at least the hash size (256 bits).
pub const MIN_SECRET_LEN: usize = 32;
/// Clock-skew allowance for `exp`/`nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id, as a string (RFC 7519 wants a StringOrURI).
    pub sub: String,
    /// Role at issue time; informative only.
    pub role: Role,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    /// Unique token id: what `POST /logout` revokes.
    pub jti: String,
    /// The user's token version at issue (absent in tokens older than versions: 0). A
    /// password or role change bumps the user's version and so refuses every older token.
    #[serde(default)]
    pub ver: i64,
}

impl Claims {
    pub fn user_id(&self) -> Option<i64> {
        self.sub.parse().ok()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtConfigError {
    #[error(
        "JWT_SECRET is not set; set a random secret of at least {MIN_SECRET_LEN} bytes \
         (or ALLOW_INSECURE_DEV_SECRET=true for local development only)"
    )]
    MissingSecret,
    #[error("JWT_SECRET is {0} bytes long; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort(usize),
}

/// Why a presented token was refused; the text goes into the 401 body.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("invalid token")]
    Invalid,
}

/// A freshly issued token, as returned by `/login` and `/session`.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    /// The token's `jti`: what its CSRF token is derived from (see [`JwtKeys::csrf_token`]).
    pub jti: String,
    /// The token's `exp` (Unix seconds).
    pub expires_at: u64,
}

/// Prefixed to a `jti` before it is MACed into a CSRF token: a JWT's signing input is
/// base64url text joined by dots and never contains `:`, so no CSRF token is ever a valid
/// signature of a token, nor the other way round.
const CSRF_DOMAIN: &[u8] = b"csrf-v1:";

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Tokens that passed [`Self::verify`] before (see `verified_tokens`).
    verified: VerifiedTokens,
}

impl JwtKeys {
    /// From settings, refusing to run without a proper secret unless explicitly allowed.
    pub fn from_settings(settings: &Settings) -> Result<Self, JwtConfigError> {
        // A copy of the key, wiped when dropped (the keys built from it wipe theirs too).
        let secret: Zeroizing<Vec<u8>> = match &settings.jwt_secret {
            Some(secret) => Zeroizing::new(secret.expose_secret().as_bytes().to_vec()),
            None if settings.allow_insecure_dev_secret => {
                tracing::warn!(
                    "!!! JWT_SECRET is not set and ALLOW_INSECURE_DEV_SECRET=true: signing \
                     tokens with a random per-process key. Tokens die with this process and \
                     are not accepted by other instances. NEVER DO THIS IN PRODUCTION. !!!"
                );
                let mut bytes = Zeroizing::new(vec![0u8; 48]);
                rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
                bytes
            }
            None => return Err(JwtConfigError::MissingSecret),
        };
        Self::build(
            &secret,
            &settings.jwt_issuer,
            &settings.jwt_audience,
            settings.jwt_ttl,
        )
    }

    pub fn new(
        secret: &SecretString,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, JwtConfigError> {
        Self::build(secret.expose_secret().as_bytes(), issuer, audience, ttl)
    }

    fn build(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, JwtConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(JwtConfigError::SecretTooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            verified: VerifiedTokens::new(LEEWAY_SECS),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        user_id: i64,
        role: Role,
        token_version: i64,
    ) -> Result<IssuedToken, anyhow::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            role,
            iat: now,
            nbf: Some(now),
            exp: now + self.ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            ver: token_version,
        };
        self.sign(&claims).map(|token| IssuedToken {
            token,
            expires_in: self.ttl.as_secs(),
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// The CSRF token of the session whose token has this `jti`: HMAC-SHA256 under the
    /// signing key, base64url. Bound to that one token (a new sign-in gets a new one), never
    /// stored, and unforgeable without the key; the page learns it from the `/session`
    /// answer, which a cross-site page cannot read.
    pub fn csrf_token(&self, jti: &str) -> Result<String, anyhow::Error> {
        Ok(jsonwebtoken::crypto::sign(
            &csrf_message(jti),
            &self.encoding,
            Algorithm::HS256,
        )?)
    }

    /// Whether `presented` is the CSRF token of the token with this `jti` (compared in
    /// constant time; anything that is not base64url is simply wrong).
    pub fn csrf_matches(&self, jti: &str, presented: &str) -> bool {
        jsonwebtoken::crypto::verify(
            presented,
            &csrf_message(jti),
            &self.decoding,
            Algorithm::HS256,
        )
        .unwrap_or(false)
    }

    /// Signs arbitrary claims (tests craft expired or not-yet-valid tokens with this).
    pub fn sign(&self, claims: &Claims) -> Result<String, anyhow::Error> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(known) = self.verified.get(token, now) {
            return known;
        }
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                self.verified.insert(token, &data.claims, now);
                Ok(data.claims)
            }
            Err(err) => Err(match err.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                other => {
                    tracing::debug!(reason = ?other, "token rejected");
                    TokenError::Invalid
                }
            }),
        }
    }
}

fn csrf_message(jti: &str) -> Vec<u8> {
    [CSRF_DOMAIN, jti.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &SecretString::from(SECRET),
            "stock-quotes",
            "stock-quotes-api",
            Duration::from_secs(3600),
        )
        .unwrap()
    }

    fn claims(keys: &JwtKeys) -> Claims {
        let token = keys.issue(7, Role::User, 0).unwrap().token;
        keys.verify(&token).unwrap()
    }

    #[test]
    fn issued_token_round_trips() {
        let keys = keys();
        let issued = keys.issue(42, Role::Admin, 0).unwrap();
        assert_eq!(issued.expires_in, 3600);
        let claims = keys.verify(&issued.token).unwrap();
        assert_eq!(claims.user_id(), Some(42));
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.iss, "stock-quotes");
        assert_eq!(claims.aud, "stock-quotes-api");
        assert_eq!(claims.exp - claims.iat, 3600);
        assert!(uuid::Uuid::parse_str(&claims.jti).is_ok());
    }

    #[test]
    fn every_token_gets_a_fresh_jti() {
        let keys = keys();
        let a = keys
            .verify(&keys.issue(1, Role::User, 0).unwrap().token)
            .unwrap();
        let b = keys
            .verify(&keys.issue(1, Role::User, 0).unwrap().token)
            .unwrap();
        assert_ne!(a.jti, b.jti);
    }

    #[test]
    fn expired_token_is_rejected() {
        let keys = keys();
        let mut c = claims(&keys);
        let now = jsonwebtoken::get_current_timestamp();
        c.iat = now - 100;
        c.nbf = Some(now - 100);
        c.exp = now - 10; // beyond the 2 s leeway
        assert_eq!(
            keys.verify(&keys.sign(&c).unwrap()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn token_from_the_future_is_rejected() {
        let keys = keys();
        let mut c = claims(&keys);
        c.nbf = Some(jsonwebtoken::get_current_timestamp() + 60);
        assert_eq!(
            keys.verify(&keys.sign(&c).unwrap()),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn tampered_payload_is_rejected_even_after_the_genuine_token_was_verified() {
        let keys = keys();
        let token = keys.issue(7, Role::User, 0).unwrap().token;
        keys.verify(&token).unwrap(); // now in the verified-token cache
        let parts: Vec<&str> = token.split('.').collect();
        let mut payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "1".into();
        payload["role"] = "admin".into();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            parts[2]
        );
        assert_eq!(keys.verify(&forged), Err(TokenError::Invalid));
    }

    #[test]
    fn alg_none_is_rejected() {
        let keys = keys();
        let c = claims(&keys);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&c).unwrap());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_eq!(keys.verify(&token), Err(TokenError::Invalid), "{token}");
        }
    }

    #[test]
    fn other_hmac_algorithm_is_rejected() {
        let keys = keys();
        let c = claims(&keys);
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn token_signed_with_another_key_is_rejected() {
        let keys = keys();
        let other = JwtKeys::new(
            &SecretString::from("another-secret-that-is-long-enough-!!"),
            "stock-quotes",
            "stock-quotes-api",
            Duration::from_secs(3600),
        )
        .unwrap();
        let token = other.issue(7, Role::User, 0).unwrap().token;
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn wrong_issuer_or_audience_is_rejected() {
        let keys = keys();
        let mut c = claims(&keys);
        c.iss = "someone-else".into();
        assert_eq!(
            keys.verify(&keys.sign(&c).unwrap()),
            Err(TokenError::Invalid)
        );
        let mut c = claims(&keys);
        c.aud = "another-api".into();
        assert_eq!(
            keys.verify(&keys.sign(&c).unwrap()),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn missing_required_claims_are_rejected() {
        let keys = keys();
        let now = jsonwebtoken::get_current_timestamp();
        // No exp, no iss, no aud: same key, right algorithm, still refused.
        for payload in [
            serde_json::json!({"sub":"1","role":"user","iat":now,"iss":"stock-quotes","aud":"stock-quotes-api","jti":"x"}),
            serde_json::json!({"sub":"1","role":"user","iat":now,"exp":now+60,"aud":"stock-quotes-api","jti":"x"}),
            serde_json::json!({"sub":"1","role":"user","iat":now,"exp":now+60,"iss":"stock-quotes","jti":"x"}),
        ] {
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &payload,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            assert_eq!(keys.verify(&token), Err(TokenError::Invalid), "{payload}");
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let keys = keys();
        for token in [
            "",
            "abc",
            "a.b.c",
            "....",
            "eyJhbGciOiJIUzI1NiJ9..",
            "🦀.🦀.🦀",
        ] {
            assert_eq!(keys.verify(token), Err(TokenError::Invalid), "{token}");
        }
    }

    #[test]
    fn leeway_is_small() {
        let keys = keys();
        let mut c = claims(&keys);
        // Expired one second ago: inside the leeway.
        c.exp = jsonwebtoken::get_current_timestamp() - 1;
        assert!(keys.verify(&keys.sign(&c).unwrap()).is_ok());
        const { assert!(LEEWAY_SECS <= 5) };
    }

    #[test]
    fn short_or_missing_secret_refuses_to_start() {
        assert_eq!(
            JwtKeys::new(
                &SecretString::from("short"),
                "i",
                "a",
                Duration::from_secs(60)
            )
            .err(),
            Some(JwtConfigError::SecretTooShort(5))
        );
        let mut settings = Settings::for_tests(
            "sqlite::memory:",
            crate::settings::TestTransport::Http {
                base_url: "http://127.0.0.1:1".into(),
            },
        );
        settings.jwt_secret = None;
        assert_eq!(
            JwtKeys::from_settings(&settings).err(),
            Some(JwtConfigError::MissingSecret)
        );
        settings.allow_insecure_dev_secret = true;
        let keys = JwtKeys::from_settings(&settings).unwrap();
        let token = keys.issue(1, Role::User, 0).unwrap().token;
        assert!(keys.verify(&token).is_ok());
    }

    #[test]
    fn a_csrf_token_belongs_to_one_token_and_one_key() {
        let keys = keys();
        let issued = keys.issue(7, Role::User, 0).unwrap();
        let csrf = keys.csrf_token(&issued.jti).unwrap();

        assert!(keys.csrf_matches(&issued.jti, &csrf));
        let other = keys.issue(7, Role::User, 0).unwrap();
        assert!(!keys.csrf_matches(&other.jti, &csrf), "another session's");
        let other_key = JwtKeys::new(
            &SecretString::from("another-secret-that-is-long-enough-0123456789"),
            "stock-quotes",
            "stock-quotes-api",
            Duration::from_secs(3600),
        )
        .unwrap();
        assert!(!other_key.csrf_matches(&issued.jti, &csrf), "another key's");
        for wrong in [
            "",
            "not base64!",
            &csrf[1..],
            &format!("{csrf}A"),
            &issued.jti,
        ] {
            assert!(!keys.csrf_matches(&issued.jti, wrong), "{wrong:?}");
        }
        // Never usable as a token signature, nor a token's signature as a CSRF token.
        let signature = issued.token.rsplit('.').next().unwrap();
        assert!(!keys.csrf_matches(&issued.jti, signature));
    }
}
