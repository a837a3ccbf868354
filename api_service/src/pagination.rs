//! Keyset pagination for the history: pages are "rows older than the last one you saw",
//! so they stay stable while new rows are added and cost one index range scan however deep
//! the client pages.
//!
//! The cursor is opaque to clients (base64url of a versioned string holding the last row
//! id): they pass back what the `Link` header gave them, and the format can change later.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

const CURSOR_PREFIX: &str = "h1:";
/// Cursors are short; refuse to decode anything longer.
const MAX_CURSOR_LEN: usize = 64;

/// `?limit=`: absent means the default; 0, over the maximum or not a number is an error.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "limit must be a whole number between 1 and {MAX_LIMIT}, got {raw:?}"
        )),
    }
}

/// Position in a user's history: rows with a smaller id come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{}", self.0))
    }

    pub fn decode(raw: &str) -> Result<Self, String> {
        let invalid = || "invalid cursor; pass back the one from the Link header".to_owned();
        if raw.len() > MAX_CURSOR_LEN {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let id = text
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|id| id.parse::<i64>().ok())
            .filter(|id| *id > 0)
            .ok_or_else(invalid)?;
        Ok(Cursor(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        for id in [1, 42, 1_000_000, i64::MAX] {
            let encoded = Cursor(id).encode();
            assert!(
                encoded
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
            assert_eq!(Cursor::decode(&encoded), Ok(Cursor(id)));
        }
    }

    #[test]
    fn cursor_is_not_a_bare_number() {
        assert_ne!(Cursor(42).encode(), "42");
        assert!(Cursor::decode("42").is_err());
    }

    #[test]
    fn garbage_cursors_are_rejected() {
        let wrong_prefix = URL_SAFE_NO_PAD.encode("x9:5");
        let negative = URL_SAFE_NO_PAD.encode("h1:-5");
        let zero = URL_SAFE_NO_PAD.encode("h1:0");
        let not_number = URL_SAFE_NO_PAD.encode("h1:abc");
        let long = "A".repeat(100);
        for bad in [
            "",
            "!!!",
            "%%%",
            wrong_prefix.as_str(),
            negative.as_str(),
            zero.as_str(),
            not_number.as_str(),
            long.as_str(),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("1000")), Ok(1000));
        for bad in ["0", "1001", "-1", "ten", "", "1.5", "99999999999999"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
