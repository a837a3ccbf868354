//! Prices that move over time, so streaming tests and demos see changes. Deterministic: the
//! close at price tick `t` is a function of (seed, symbol, t) only, so two runs with the same
//! seed and the same ticks see the same prices, and a test can predict them.
//!
//! Tick 0 is the static feed itself (fixtures and derived rows unchanged). From tick 1 on the
//! close wanders within ±5% of the static close, and consecutive ticks always differ: the
//! close in thousandths has the parity of the tick, so no tick can repeat the previous one's
//! price. High and low widen to include the close; open, volume, date and time stay.

use crate::feed::Row;

/// The row as it reads at `tick` (unchanged for tick 0 and for `N/D` rows).
pub fn at_tick(row: Row, seed: u64, tick: u64) -> Row {
    let Row::Found {
        symbol,
        date,
        time,
        open,
        high,
        low,
        close,
        volume,
        name,
    } = row
    else {
        return row;
    };
    let (Some(base), true) = (Price::parse(&close), tick > 0) else {
        return Row::Found {
            symbol,
            date,
            time,
            open,
            high,
            low,
            close,
            volume,
            name,
        };
    };
    let moved = Price {
        units: close_at(base.units, &symbol, seed, tick),
        ..base
    };
    let high = match Price::parse(&high) {
        Some(h) if h.value() >= moved.value() => high,
        _ => moved.to_string(),
    };
    let low = match Price::parse(&low) {
        Some(l) if l.value() <= moved.value() => low,
        _ => moved.to_string(),
    };
    Row::Found {
        symbol,
        date,
        time,
        open,
        high,
        low,
        close: moved.to_string(),
        volume,
        name,
    }
}

/// The close (in the price's smallest units) at `tick` (> 0): within ±5% of `base`, at least 2
/// units, and of the tick's parity, so it always differs from the close one tick earlier.
fn close_at(base: u64, symbol: &str, seed: u64, tick: u64) -> u64 {
    let mut key = Vec::with_capacity(symbol.len() + 16);
    key.extend_from_slice(&seed.to_le_bytes());
    key.extend_from_slice(&tick.to_le_bytes());
    key.extend_from_slice(symbol.to_ascii_lowercase().as_bytes());
    let h = crate::feed::fnv1a(&key);
    let span = base / 20 + 1;
    let offset = h % (2 * span + 1);
    let raw = (base + offset).saturating_sub(span).max(2);
    if raw % 2 == tick % 2 { raw } else { raw + 1 }
}

/// A price as the feed prints it: `units` of 10^-`scale`, with at least three decimals of
/// room so a move is finer than a cent (`183.05` → 183050 × 10^-3, `1.0769` → 10769 × 10^-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Price {
    units: u64,
    scale: u32,
}

impl Price {
    /// `None` for anything that is not a plain non-negative decimal (e.g. `N/D`).
    fn parse(price: &str) -> Option<Price> {
        let (whole, frac) = price.split_once('.').unwrap_or((price, ""));
        if whole.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let scale = (frac.len() as u32).max(3);
        let whole: u64 = whole.parse().ok()?;
        let frac: u64 = format!("{frac:0<width$}", width = scale as usize)
            .parse()
            .ok()?;
        Some(Price {
            units: whole * 10u64.pow(scale) + frac,
            scale,
        })
    }

    fn value(self) -> f64 {
        self.units as f64 / 10f64.powi(self.scale as i32)
    }
}

/// Whole numbers bare, trailing zeros dropped, as stooq prints prices.
impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = 10u64.pow(self.scale);
        let (whole, frac) = (self.units / unit, self.units % unit);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:0width$}", width = self.scale as usize);
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::row_for;

    fn close(row: &Row) -> f64 {
        match row {
            Row::Found { close, .. } => close.parse().unwrap(),
            Row::NotFound { .. } => panic!("not found"),
        }
    }

    #[test]
    fn tick_zero_is_the_static_feed() {
        let row = row_for("aapl.us", &[]);
        assert_eq!(at_tick(row.clone(), 7, 0), row);
    }

    #[test]
    fn every_tick_changes_every_symbol_within_five_percent() {
        for sym in [
            "aapl.us", "msft.us", "^spx", "eurusd", "s1.us", "s2.us", "x.de",
        ] {
            let base = close(&row_for(sym, &[]));
            let mut previous = base;
            for tick in 1..500 {
                let now = close(&at_tick(row_for(sym, &[]), 42, tick));
                assert_ne!(now, previous, "{sym} tick {tick}");
                assert!(
                    (now - base).abs() <= base * 0.05 + 0.002,
                    "{sym} {now} vs {base}"
                );
                previous = now;
            }
        }
    }

    #[test]
    fn same_seed_same_prices_other_seed_other_prices() {
        let a: Vec<f64> = (1..20)
            .map(|t| close(&at_tick(row_for("aapl.us", &[]), 1, t)))
            .collect();
        let b: Vec<f64> = (1..20)
            .map(|t| close(&at_tick(row_for("aapl.us", &[]), 1, t)))
            .collect();
        let c: Vec<f64> = (1..20)
            .map(|t| close(&at_tick(row_for("aapl.us", &[]), 2, t)))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn high_and_low_include_the_moved_close() {
        for tick in 1..200 {
            let Row::Found {
                high, low, close, ..
            } = at_tick(row_for("msft.us", &[]), 3, tick)
            else {
                panic!()
            };
            let [h, l, c]: [f64; 3] = [high, low, close].map(|p| p.parse().unwrap());
            assert!(l <= c && c <= h, "tick {tick}: {l} {c} {h}");
        }
    }

    #[test]
    fn not_found_rows_do_not_move() {
        let row = row_for("xxxx.us", &[]);
        assert_eq!(at_tick(row.clone(), 1, 5), row);
    }

    #[test]
    fn prices_round_trip_as_the_feed_prints_them() {
        for p in ["183.05", "124", "1.0769", "0.002", "163.015"] {
            assert_eq!(Price::parse(p).unwrap().to_string(), p);
        }
        assert_eq!(Price::parse("183.05").unwrap().units, 183_050);
        assert_eq!(Price::parse("1.0769").unwrap().scale, 4);
        assert_eq!(Price::parse("N/D"), None);
    }
}
