//! How the fake answers: the normal CSV feed or one of the real feed's failure modes.

use std::fmt;
use std::str::FromStr;

/// One way stooq answers `/q/l/`. Every non-`Normal` mode is something the real feed has been
/// seen doing (see `docs/stooq-feed.md`), so the quote service can be tested against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The CSV feed: one header, one row per requested symbol.
    #[default]
    Normal,
    /// HTTP 200, plain text `Exceeded the daily hits limit`.
    DailyLimit,
    /// HTTP 200, an HTML page asking for an API key ("Get your apikey").
    ApiKeyPage,
    /// HTTP 200, an HTML browser challenge pointing at `/__verify`.
    Challenge,
    /// HTTP 200, some unrelated HTML page.
    OtherHtml,
    /// HTTP 200 with an empty body.
    Empty,
    /// HTTP 200, the CSV header and a row cut off mid-line.
    Truncated,
    /// The given HTTP status (e.g. 500, 503) with a short plain-text body.
    Status(u16),
    /// Close the connection without sending any response.
    Drop,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Normal => f.write_str("normal"),
            Mode::DailyLimit => f.write_str("daily_limit"),
            Mode::ApiKeyPage => f.write_str("api_key_page"),
            Mode::Challenge => f.write_str("challenge"),
            Mode::OtherHtml => f.write_str("other_html"),
            Mode::Empty => f.write_str("empty"),
            Mode::Truncated => f.write_str("truncated"),
            Mode::Status(code) => write!(f, "status:{code}"),
            Mode::Drop => f.write_str("drop"),
        }
    }
}

/// Accepts what [`Display`](fmt::Display) prints, dashes for underscores, any case, and a bare
/// status code (`503`), so `--mode` and `POST /fake/mode` are forgiving to type.
impl FromStr for Mode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim().to_ascii_lowercase().replace('-', "_");
        let code = s.strip_prefix("status:").or(s.strip_prefix("status_"));
        if let Some(code) = code.or_else(|| s.chars().all(|c| c.is_ascii_digit()).then_some(&s[..]))
        {
            return match code.parse::<u16>() {
                Ok(code) if (100..=999).contains(&code) => Ok(Mode::Status(code)),
                _ => Err(format!("{raw:?}: status must be a number from 100 to 999")),
            };
        }
        Ok(match s.as_str() {
            "normal" => Mode::Normal,
            "daily_limit" => Mode::DailyLimit,
            "api_key_page" | "apikey" => Mode::ApiKeyPage,
            "challenge" => Mode::Challenge,
            "other_html" | "html" => Mode::OtherHtml,
            "empty" => Mode::Empty,
            "truncated" => Mode::Truncated,
            "drop" => Mode::Drop,
            _ => {
                return Err(format!(
                    "unknown mode {raw:?} (normal, daily_limit, api_key_page, challenge, \
                     other_html, empty, truncated, status:NNN, drop)"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips() {
        for mode in [
            Mode::Normal,
            Mode::DailyLimit,
            Mode::ApiKeyPage,
            Mode::Challenge,
            Mode::OtherHtml,
            Mode::Empty,
            Mode::Truncated,
            Mode::Status(503),
            Mode::Drop,
        ] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
    }

    #[test]
    fn forgiving_spellings() {
        assert_eq!("Daily-Limit".parse::<Mode>(), Ok(Mode::DailyLimit));
        assert_eq!("500".parse::<Mode>(), Ok(Mode::Status(500)));
        assert!("status:42".parse::<Mode>().is_err());
        assert!("sideways".parse::<Mode>().is_err());
    }
}
