//! Browser sessions: the access token in an `HttpOnly; SameSite=Strict` cookie, so page
//! scripts (and anything injected into them) never see it, and a CSRF token for the requests
//! that change something.
//!
//! The cookie holds an ordinary access token (same expiry, same revocation rules), so the
//! extractors treat it like a bearer token, with one addition: a request authenticated by the
//! cookie whose method is not GET, HEAD or OPTIONS must carry `X-CSRF-Token`, the value
//! `POST`/`GET /api/v1/session` answered for that token ([`crate::auth::JwtKeys::csrf_token`]).
//! SameSite=Strict alone already keeps the cookie off cross-site requests in current
//! browsers; the header is the second lock for older ones and for same-site subdomains.
//! Bearer clients are unaffected: a cross-site page cannot make a browser send an
//! `Authorization` header.

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method};

/// The cookie's name.
pub const COOKIE_NAME: &str = "sq_session";
/// The header carrying the CSRF token on unsafe cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the session cookie is written: its lifetime is the token's, `Secure` when the
/// operator serves over TLS (`COOKIE_SECURE=true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCookie {
    pub secure: bool,
    pub max_age: Duration,
}

impl SessionCookie {
    /// `Set-Cookie` for a freshly issued token.
    pub fn set(&self, token: &str) -> Option<(axum::http::HeaderName, HeaderValue)> {
        let value = self.render(token, self.max_age.as_secs());
        HeaderValue::from_str(&value).ok().map(|v| (SET_COOKIE, v))
    }

    /// `Set-Cookie` that makes the browser drop the cookie.
    pub fn clear(&self) -> (axum::http::HeaderName, HeaderValue) {
        let value = self.render("", 0);
        (
            SET_COOKIE,
            HeaderValue::from_str(&value).expect("a cookie of fixed ASCII is a valid header"),
        )
    }

    fn render(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
        )
    }
}

/// The session cookie's value among the request's `Cookie` headers, if one is present and
/// non-empty. Headers that are not visible ASCII are skipped rather than refused: a junk
/// cookie is the same as none.
pub fn from_headers(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Methods that must not change anything, so need no CSRF token.
pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    #[test]
    fn the_cookie_is_found_among_others_and_across_headers() {
        assert_eq!(from_headers(&headers(&["sq_session=abc"])), Some("abc"));
        assert_eq!(
            from_headers(&headers(&["theme=dark; sq_session=a.b.c; lang=en"])),
            Some("a.b.c")
        );
        assert_eq!(
            from_headers(&headers(&["theme=dark", "sq_session=xyz"])),
            Some("xyz")
        );
    }

    #[test]
    fn no_empty_or_lookalike_cookie_counts() {
        for cookies in [
            &[][..],
            &["sq_session="][..],
            &["sq_session_old=abc"][..],
            &["xsq_session=abc"][..],
            &["sq_session"][..],
        ] {
            assert_eq!(from_headers(&headers(cookies)), None, "{cookies:?}");
        }
    }

    #[test]
    fn a_cookie_header_that_is_not_ascii_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_bytes(b"sq_session=\xff").unwrap());
        assert_eq!(from_headers(&headers), None);
    }

    #[test]
    fn the_set_cookie_carries_every_flag() {
        let cookie = SessionCookie {
            secure: false,
            max_age: Duration::from_secs(900),
        };
        let (_, value) = cookie.set("t.o.k").unwrap();
        assert_eq!(
            value,
            "sq_session=t.o.k; HttpOnly; SameSite=Strict; Path=/; Max-Age=900"
        );
        let secure = SessionCookie {
            secure: true,
            ..cookie
        };
        assert!(
            secure
                .set("t")
                .unwrap()
                .1
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert_eq!(
            secure.clear().1,
            "sq_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        );
    }
}
