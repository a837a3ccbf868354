//! Symbol rules, applied before any network call so garbage never reaches stooq or the broker.

use std::fmt;

/// Longest symbol accepted. Real tickers are far shorter; the bound keeps cache keys and
/// upstream URLs small and rejects pasted junk early.
pub const MAX_SYMBOL_LEN: usize = 20;

/// What a symbol may contain besides ASCII letters and digits.
pub const SYMBOL_PUNCTUATION: &[char] = &['.', '^', '-', '_'];

/// A validated, normalised (trimmed, lower-case) stooq symbol such as `aapl.us` or `^spx`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol is longer than {MAX_SYMBOL_LEN} characters")]
    TooLong,
    #[error("symbol contains {0:?}; only ASCII letters, digits and . ^ - _ are allowed")]
    InvalidChar(char),
}

impl Symbol {
    pub fn parse(raw: &str) -> Result<Self, SymbolError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(SymbolError::Empty);
        }
        if let Some(bad) = trimmed.chars().find(|c| !is_symbol_char(*c)) {
            return Err(SymbolError::InvalidChar(bad));
        }
        // All characters are ASCII here, so byte length equals character count.
        if trimmed.len() > MAX_SYMBOL_LEN {
            return Err(SymbolError::TooLong);
        }
        Ok(Self(trimmed.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || SYMBOL_PUNCTUATION.contains(&c)
}

/// The symbol rules as a regular expression (the OpenAPI `pattern` of `q`): exactly the
/// strings [`Symbol::parse`] accepts, including the surrounding whitespace it trims.
pub fn pattern() -> String {
    let space = crate::pattern::whitespace_class();
    let symbol = crate::pattern::ascii_alphanumeric_class(SYMBOL_PUNCTUATION);
    format!("^{space}*{symbol}{{1,{MAX_SYMBOL_LEN}}}{space}*$")
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// [`pattern`] compiled once: building it scans every `char` for whitespace.
    static PATTERN: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(&pattern()).unwrap());

    #[test]
    fn trims_and_lower_cases() {
        assert_eq!(Symbol::parse("  AAPL.US \n").unwrap().as_str(), "aapl.us");
    }

    #[test]
    fn accepts_every_documented_shape() {
        for s in [
            "aapl.us", "vod.uk", "7974.jp", "cdr", "^spx", "eurusd", "cl.f", "brk-b.us", "a_b",
        ] {
            assert!(Symbol::parse(s).is_ok(), "{s} should be valid");
        }
    }

    #[test]
    fn rejects_empty_and_blank() {
        assert_eq!(Symbol::parse(""), Err(SymbolError::Empty));
        assert_eq!(Symbol::parse("   "), Err(SymbolError::Empty));
    }

    #[test]
    fn rejects_over_twenty_chars() {
        assert!(Symbol::parse(&"a".repeat(20)).is_ok());
        assert_eq!(Symbol::parse(&"a".repeat(21)), Err(SymbolError::TooLong));
    }

    #[test]
    fn rejects_separators_and_non_ascii() {
        for s in [
            "aapl+msft",
            "a b",
            "a,b",
            "a/b",
            "a%20",
            "ąę",
            "a'b",
            "a;drop",
        ] {
            assert!(
                matches!(Symbol::parse(s), Err(SymbolError::InvalidChar(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn pattern_agrees_with_parse_on_edge_cases() {
        let longest = "a".repeat(MAX_SYMBOL_LEN);
        let too_long = "a".repeat(MAX_SYMBOL_LEN + 1);
        let padded = format!(" \t{longest}\u{3000}\n");
        for s in [
            "aapl.us",
            "^SPX",
            "brk-b.us",
            "a_b",
            " aapl ",
            "\u{2028}aapl\u{85}",
            longest.as_str(),
            padded.as_str(),
            too_long.as_str(),
            "",
            "   ",
            "a b",
            "a+b",
            "ąę",
            "aapl\u{feff}",
            "\u{200b}aapl",
            "a\0",
            "aapl\n\n",
        ] {
            assert_eq!(PATTERN.is_match(s), Symbol::parse(s).is_ok(), "{s:?}");
        }
    }

    proptest! {
        #[test]
        fn pattern_accepts_exactly_what_parse_accepts(
            s in "[ \t\n\u{85}\u{a0}\u{3000}\u{feff}\u{200b}aZ9.^_\\-+/ą,\0]{0,24}"
        ) {
            prop_assert_eq!(PATTERN.is_match(&s), Symbol::parse(&s).is_ok(), "{:?}", s);
        }

        #[test]
        fn parse_never_panics_and_output_obeys_rules(s in ".{0,64}") {
            if let Ok(sym) = Symbol::parse(&s) {
                let v = sym.as_str();
                prop_assert!(!v.is_empty() && v.len() <= MAX_SYMBOL_LEN);
                prop_assert!(v.chars().all(|c| is_symbol_char(c) && !c.is_ascii_uppercase()));
                prop_assert_eq!(Symbol::parse(v).unwrap(), sym.clone());
            }
        }
    }
}
