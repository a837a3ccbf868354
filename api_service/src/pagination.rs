//! Keyset pagination for the history: pages are "rows older than the last one you saw",
//! so they stay stable while new rows are added and cost one index range scan however deep
//! the client pages.
//!
//! The cursor is opaque to clients: they pass back what the `Link` header gave them. It is
//! the base64url (unpadded) of a version byte and the last row id (8 bytes, big-endian):
//! always 12 characters, so the OpenAPI document can state its exact form
//! ([`cursor_pattern`]) and a fuzzer's schema-valid cursor is one the API accepts. Any id
//! is a valid position (one below every row is simply an empty page), and another version
//! byte can carry another format later.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MIN_LIMIT: u32 = 1;
pub const MAX_LIMIT: u32 = 1000;

/// The `limit` query parameter as documented, its bounds the ones [`parse_limit`] applies;
/// `items` names what a page holds ("Entries", "Users").
pub fn limit_param(items: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .minimum(Some(MIN_LIMIT))
        .maximum(Some(MAX_LIMIT));
    ParameterBuilder::new()
        .name("limit")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(format!("{items} per page (default {DEFAULT_LIMIT})")))
        .schema(Some(schema))
        .example(Some(50.into()))
        .build()
}

/// The `cursor` query parameter as documented: `pattern` is the form the endpoint's own
/// cursor parser accepts.
pub fn cursor_param(pattern: String, description: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern));
    ParameterBuilder::new()
        .name("cursor")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// First byte of every cursor this version issues.
const CURSOR_VERSION: u8 = 1;
/// Version byte and id: 9 bytes, so exactly 12 base64 characters with no leftover bits.
const CURSOR_BYTES: usize = 1 + size_of::<i64>();
/// The base64url alphabet, in the order of the 6-bit values it encodes.
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `?limit=`: absent means the default; anything but a whole number (plain ASCII digits)
/// from [`MIN_LIMIT`] to [`MAX_LIMIT`] is an error.
pub fn parse_limit(raw: Option<&str>) -> Result<u32, String> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u32>() {
        Ok(n) if digits && (MIN_LIMIT..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "limit must be a whole number between {MIN_LIMIT} and {MAX_LIMIT}, got {raw:?}"
        )),
    }
}

/// The cursors [`Cursor::decode`] accepts, as a regular expression (the OpenAPI `pattern` of
/// `?cursor=`); also matches the empty string, which the history reads as "first page".
pub fn cursor_pattern() -> String {
    // Three bytes make four characters. The first character is the version's top six bits;
    // the second, its low two bits then the id's top four: one of 16 consecutive letters.
    let first = char::from(BASE64URL[usize::from(CURSOR_VERSION >> 2)]);
    let low = usize::from(CURSOR_VERSION & 0b11) << 4;
    let second: String = BASE64URL[low..low + 16]
        .iter()
        .map(|&b| char::from(b))
        .collect();
    let any = shared::pattern::ascii_alphanumeric_class(&['-', '_']);
    let rest = CURSOR_BYTES * 4 / 3 - 2;
    format!("^(?:{first}[{second}]{any}{{{rest}}})?$")
}

/// Position in a user's history: rows with a smaller id come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn encode(self) -> String {
        let mut bytes = [0u8; CURSOR_BYTES];
        bytes[0] = CURSOR_VERSION;
        bytes[1..].copy_from_slice(&self.0.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(raw: &str) -> Result<Self, String> {
        let invalid = || "invalid cursor; pass back the one from the Link header".to_owned();
        // Checked before decoding, so a huge value costs nothing.
        if raw.len() != CURSOR_BYTES * 4 / 3 {
            return Err(invalid());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
        match bytes.split_first() {
            Some((&CURSOR_VERSION, id)) => {
                let id = <[u8; 8]>::try_from(id).map_err(|_| invalid())?;
                Ok(Cursor(i64::from_be_bytes(id)))
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursor_round_trips() {
        for id in [1, 42, 1_000_000, i64::MAX, 0, -1, i64::MIN] {
            let encoded = Cursor(id).encode();
            assert_eq!(encoded.len(), 12, "{encoded}");
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
        let wrong_version = URL_SAFE_NO_PAD.encode([2u8, 0, 0, 0, 0, 0, 0, 0, 5]);
        let short = URL_SAFE_NO_PAD.encode([1u8, 0, 0, 0, 0, 0, 0, 5]);
        let long = "A".repeat(100);
        let padded = format!(" {}", Cursor(5).encode());
        for bad in [
            "",
            "!!!",
            "%%%",
            "AQAAAAAAAAA+",
            "AQAAAAAAAAA=",
            wrong_version.as_str(),
            short.as_str(),
            long.as_str(),
            padded.as_str(),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_pattern_agrees_with_decode() {
        let pattern = regex::Regex::new(&cursor_pattern()).unwrap();
        for id in [1, 42, i64::MAX, 0, -1, i64::MIN] {
            assert!(pattern.is_match(&Cursor(id).encode()), "{id}");
        }
        assert!(pattern.is_match(""), "empty means the first page");
        let wrong_version = URL_SAFE_NO_PAD.encode([2u8, 0, 0, 0, 0, 0, 0, 0, 5]);
        for bad in [
            "AQAAAAAAAAA+",
            "AQAAAAAAAAA",
            " AQAAAAAAAAAF",
            "aDE6Mg",
            &wrong_version,
        ] {
            assert!(!pattern.is_match(bad), "{bad}");
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn cursor_pattern_accepts_exactly_what_decode_accepts(
            raw in "A[P-Zafg][A-Za-z0-9_+/= -]{9,11}"
        ) {
            let pattern = regex::Regex::new(&cursor_pattern()).unwrap();
            prop_assert_eq!(pattern.is_match(&raw), Cursor::decode(&raw).is_ok(), "{:?}", raw);
        }

        #[test]
        fn limit_accepts_exactly_the_documented_integers(raw in "[0-9+ .-]{0,5}") {
            let whole = raw.bytes().all(|b| b.is_ascii_digit()) && !raw.is_empty();
            let in_range = raw.parse::<u64>().is_ok_and(|n| {
                (u64::from(MIN_LIMIT)..=u64::from(MAX_LIMIT)).contains(&n)
            });
            prop_assert_eq!(parse_limit(Some(&raw)).is_ok(), whole && in_range);
        }
    }

    #[test]
    fn limit_defaults_and_bounds() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("1")), Ok(MIN_LIMIT));
        assert_eq!(parse_limit(Some("1000")), Ok(MAX_LIMIT));
        for bad in [
            "0",
            "1001",
            "-1",
            "+5",
            " 5",
            "ten",
            "",
            "1.5",
            "99999999999999",
        ] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
