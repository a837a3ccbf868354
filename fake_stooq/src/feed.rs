//! The CSV the real feed returns, built deterministically: a few hand-written fixtures copied
//! from real answers, and for every other symbol prices derived from a hash of its name, so a
//! benchmark can ask for thousands of distinct symbols and get stable, plausible rows.

/// The header row stooq sends for `f=sd2t2ohlcvn&h`.
pub const HEADER: &str = "Symbol,Date,Time,Open,High,Low,Close,Volume,Name";

/// The date every derived (non-fixture) row carries: a fixed recent trading day (a Friday),
/// so answers never change between runs.
pub const QUOTE_DATE: &str = "2026-04-17";

/// Warsaw local time of the derived rows: the US close (16:00 New York) in CEST.
pub const QUOTE_TIME: &str = "22:00:05";

/// Symbols that are well-formed but unknown to the feed, besides any starting with one of
/// [`NOT_FOUND_PREFIXES`].
pub const NOT_FOUND: &[&str] = &["nosuch.us", "delisted.us", "notreal"];

/// Any symbol starting with one of these is answered with the `N/D` row.
pub const NOT_FOUND_PREFIXES: &[&str] = &["unknown", "xxxx"];

/// Rows captured from (or modelled on) real answers, keyed by lower-case symbol. Fields after
/// the symbol: date, time, open, high, low, close, volume (may be empty), name.
const FIXTURES: &[(&str, [&str; 8])] = &[
    (
        "aapl.us",
        [
            "2024-05-10",
            "22:00:09",
            "184.9",
            "185.09",
            "182.13",
            "183.05",
            "50759496",
            "APPLE",
        ],
    ),
    (
        "msft.us",
        [
            "2024-05-10",
            "22:00:09",
            "412.2",
            "415.38",
            "411.8",
            "414.74",
            "15177840",
            "MICROSOFT",
        ],
    ),
    (
        "t.us",
        [
            "2024-05-10",
            "22:00:09",
            "17.09",
            "17.2",
            "17.01",
            "17.15",
            "33460316",
            "AT&T, INC.",
        ],
    ),
    (
        "^spx",
        [
            "2024-05-10",
            "22:00:00",
            "5225.49",
            "5239.66",
            "5209.68",
            "5222.68",
            "",
            "S&P 500",
        ],
    ),
    (
        "eurusd",
        [
            "2024-05-10",
            "22:59:58",
            "1.0781",
            "1.0804",
            "1.0765",
            "1.0769",
            "",
            "EURUSD",
        ],
    ),
    (
        "cdr",
        [
            "2024-05-10",
            "17:04:47",
            "124",
            "126.4",
            "123.5",
            "125.3",
            "265000",
            "CDPROJEKT",
        ],
    ),
];

/// What the feed knows about one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Found {
        symbol: String,
        date: String,
        time: String,
        open: String,
        high: String,
        low: String,
        close: String,
        volume: String,
        name: String,
    },
    NotFound {
        symbol: String,
    },
}

/// The row the feed returns for `symbol` (any case), given extra not-found symbols.
pub fn row_for(symbol: &str, extra_not_found: &[String]) -> Row {
    let lower = symbol.to_ascii_lowercase();
    let upper = symbol.to_ascii_uppercase();
    if is_not_found(&lower, extra_not_found) {
        return Row::NotFound { symbol: upper };
    }
    if let Some((_, f)) = FIXTURES.iter().find(|(s, _)| *s == lower) {
        let [date, time, open, high, low, close, volume, name] = f.map(str::to_owned);
        return Row::Found {
            symbol: upper,
            date,
            time,
            open,
            high,
            low,
            close,
            volume,
            name,
        };
    }
    derived(&lower, upper)
}

fn is_not_found(lower: &str, extra: &[String]) -> bool {
    lower.is_empty()
        || !lower
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '^' | '-' | '_'))
        || NOT_FOUND_PREFIXES.iter().any(|p| lower.starts_with(p))
        || NOT_FOUND.contains(&lower)
        || extra.iter().any(|s| s.eq_ignore_ascii_case(lower))
}

/// Prices in thousandths from a hash of the symbol: open between 1 and 1000, high/low within
/// 5% of it, close between them. Half the symbols get cent precision, the rest a third decimal,
/// so clients see the variable precision of the real feed.
fn derived(lower: &str, upper: String) -> Row {
    let h = fnv1a(lower.as_bytes());
    let h2 = fnv1a(&h.to_le_bytes());
    let cents_only = h2 & 1 == 0;
    let round = |m: u64| if cents_only { m / 10 * 10 } else { m };
    let open = round(1_000 + h % 999_000);
    let spread = open / 20 + 1;
    let high = round(open + (h >> 20) % spread);
    let low = round(open.saturating_sub((h >> 36) % spread).max(10));
    let close = round(low + (h2 >> 8) % (high - low + 1));
    let no_volume = lower.starts_with('^')
        || lower.ends_with(".f")
        || (lower.len() == 6 && lower.chars().all(|c| c.is_ascii_alphabetic()));
    let volume = if no_volume {
        String::new()
    } else {
        ((h2 >> 16) % 50_000_000).to_string()
    };
    let name = upper.split('.').next().unwrap_or(&upper).to_owned();
    Row::Found {
        symbol: upper,
        date: QUOTE_DATE.to_owned(),
        time: QUOTE_TIME.to_owned(),
        open: thousandths(open),
        high: thousandths(high),
        low: thousandths(low),
        close: thousandths(close),
        volume,
        name,
    }
}

/// A stable hash (std's `DefaultHasher` may change between Rust releases).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `124000` → `124`, `150400` → `150.4`, `163015` → `163.015`: stooq prints whole numbers bare
/// and drops trailing zeros.
fn thousandths(m: u64) -> String {
    let (whole, frac) = (m / 1000, m % 1000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:03}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Quotes a CSV field only when it must be (comma, quote or line break inside).
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

impl Row {
    /// The CSV line, without line ending.
    pub fn to_csv(&self) -> String {
        match self {
            Row::Found {
                symbol,
                date,
                time,
                open,
                high,
                low,
                close,
                volume,
                name,
            } => [symbol, date, time, open, high, low, close, volume, name]
                .map(|f| csv_field(f))
                .join(","),
            Row::NotFound { symbol } => {
                let s = csv_field(symbol);
                format!("{s},N/D,N/D,N/D,N/D,N/D,N/D,N/D,{s}")
            }
        }
    }
}

/// The whole body for a request: optional header, then one CRLF-terminated row per symbol.
pub fn csv_body(symbols: &[String], header: bool, extra_not_found: &[String]) -> String {
    csv_body_at(symbols, header, extra_not_found, 0, 0)
}

/// [`csv_body`] with prices as they read at price tick `tick` under `seed` (see
/// [`crate::moving`]); tick 0 is the static feed.
pub fn csv_body_at(
    symbols: &[String],
    header: bool,
    extra_not_found: &[String],
    seed: u64,
    tick: u64,
) -> String {
    let mut body = String::new();
    if header {
        body.push_str(HEADER);
        body.push_str("\r\n");
    }
    for symbol in symbols {
        let row = crate::moving::at_tick(row_for(symbol, extra_not_found), seed, tick);
        body.push_str(&row.to_csv());
        body.push_str("\r\n");
    }
    body
}

/// A response cut off mid-line, as a dropped transfer leaves it: the header and about half of
/// the first row, no final line ending.
pub fn truncated_body(symbols: &[String]) -> String {
    let first = symbols.first().map_or("aapl.us", String::as_str);
    let row = row_for(first, &[]).to_csv();
    format!("{HEADER}\r\n{}", &row[..row.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_rows_match_the_real_feed() {
        assert_eq!(
            row_for("AAPL.us", &[]).to_csv(),
            "AAPL.US,2024-05-10,22:00:09,184.9,185.09,182.13,183.05,50759496,APPLE"
        );
        assert!(row_for("t.us", &[]).to_csv().ends_with(",\"AT&T, INC.\""));
        assert!(row_for("^spx", &[]).to_csv().contains(",5222.68,,S&P 500"));
    }

    #[test]
    fn not_found_rows() {
        let nd = "XXXX.US,N/D,N/D,N/D,N/D,N/D,N/D,N/D,XXXX.US";
        assert_eq!(row_for("xxxx.us", &[]).to_csv(), nd);
        assert!(matches!(row_for("unknown42", &[]), Row::NotFound { .. }));
        assert!(matches!(row_for("nosuch.us", &[]), Row::NotFound { .. }));
        assert!(matches!(row_for("a b", &[]), Row::NotFound { .. }));
        assert!(matches!(
            row_for("gone.de", &["GONE.DE".into()]),
            Row::NotFound { .. }
        ));
    }

    #[test]
    fn derived_rows_are_deterministic_and_consistent() {
        for i in 0..2_000 {
            let sym = format!("s{i}.us");
            let row = row_for(&sym, &[]);
            assert_eq!(row, row_for(&sym.to_uppercase(), &[]));
            let Row::Found {
                open,
                high,
                low,
                close,
                volume,
                ..
            } = row
            else {
                panic!("{sym} not found");
            };
            let [o, h, l, c]: [f64; 4] = [open, high, low, close].map(|p| p.parse().unwrap());
            assert!(l <= o && o <= h && l <= c && c <= h && l > 0.0, "{sym}");
            assert!(volume.parse::<u64>().is_ok());
        }
        assert_ne!(row_for("a.us", &[]).to_csv(), row_for("b.us", &[]).to_csv());
    }

    #[test]
    fn indices_currencies_and_futures_have_no_volume() {
        for sym in ["^dax", "gbpusd", "cl.f"] {
            let csv = row_for(sym, &[]).to_csv();
            let fields: Vec<&str> = csv.split(',').collect();
            assert_eq!(fields[7], "", "{csv}");
        }
    }

    #[test]
    fn whole_numbers_print_bare() {
        assert_eq!(thousandths(124_000), "124");
        assert_eq!(thousandths(150_400), "150.4");
        assert_eq!(thousandths(163_015), "163.015");
        assert_eq!(thousandths(1_050), "1.05");
    }

    #[test]
    fn body_has_crlf_after_every_row() {
        let body = csv_body(&["aapl.us".into(), "xxxx.us".into()], true, &[]);
        assert!(body.starts_with("Symbol,Date,Time,Open,High,Low,Close,Volume,Name\r\n"));
        assert_eq!(body.matches("\r\n").count(), 3);
        assert!(body.ends_with("\r\n"));
        let cut = truncated_body(&["aapl.us".into()]);
        assert!(!cut.ends_with('\n') && cut.len() > HEADER.len() + 2);
    }
}
