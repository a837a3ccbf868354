//! SSE event ids that let a client resume with `Last-Event-ID` on any instance, after any
//! restart, without duplicates and without missing a change.
//!
//! The id is the stream's state, not a position in a log: for each symbol of the stream (in
//! its canonical order: sorted, deduplicated) the fingerprint of the quote the client last
//! received, 12 hex digits (48 bits), or `-` for none yet, joined by `.`. A resumed stream
//! sends exactly the symbols whose current quote differs from what the id says the client
//! has. So nothing that changed is missed and nothing unchanged is repeated, on whichever
//! instance the client lands, with no replay buffer to bound or lose.
//!
//! Limits (documented in the README): a client gets the *latest* quote of each symbol that
//! moved while it was away, not every intermediate one (quotes supersede each other); a
//! price that moved away and back while it was away is not resent (the client's is current);
//! and two different quotes with equal 48-bit fingerprints (one chance in 2^48) would look
//! unchanged. An id that does not fit the stream's symbols (other `q`, garbled) is ignored:
//! the stream starts afresh with every symbol's current quote.

/// Fingerprints are cut to this many bits in ids (12 hex digits).
const BITS: u32 = 48;

/// The part of a fingerprint an id carries; compare only these.
pub fn short(fingerprint: u64) -> u64 {
    fingerprint >> (64 - BITS)
}

pub fn encode(state: &[Option<u64>]) -> String {
    state
        .iter()
        .map(|s| match s {
            Some(fp) => format!("{fp:012x}"),
            None => "-".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The per-symbol state an id describes, if it describes a stream of `symbols` symbols.
pub fn decode(id: &str, symbols: usize) -> Option<Vec<Option<u64>>> {
    let parts: Vec<&str> = id.trim().split('.').collect();
    if parts.len() != symbols {
        return None;
    }
    parts
        .into_iter()
        .map(|p| match p {
            "-" => Some(None),
            hex if hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u64::from_str_radix(hex, 16).ok().map(Some)
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let state = vec![Some(short(u64::MAX)), None, Some(0x1234)];
        let id = encode(&state);
        assert_eq!(id, "ffffffffffff.-.000000001234");
        assert_eq!(decode(&id, 3), Some(state));
    }

    #[test]
    fn an_id_for_another_stream_or_garbled_is_ignored() {
        assert_eq!(decode("ffffffffffff.-", 3), None);
        assert_eq!(decode("zzzzzzzzzzzz", 1), None);
        assert_eq!(decode("", 1), None);
        assert_eq!(decode("fffffffffffff", 1), None, "13 digits");
    }
}
