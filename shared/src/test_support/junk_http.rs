//! Hostile HTTP traffic for tests: invented methods, random paths and query strings, sent
//! over raw TCP because HTTP clients refuse or normalise odd methods.
//!
//! [`mix`] builds requests in a fixed rotation of *shapes* (every method kind against every
//! path kind) with fresh random parts drawn from a seed. Two mixes with different seeds thus
//! exercise the same routing outcomes with different strings: a server whose metric labels
//! come from a fixed set shows no new series on the second mix, one that copies request text
//! into labels shows hundreds.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::exposition::Exposition;

/// The methods of RFC 9110 and PATCH: the only ones a server should name in a label.
pub const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Longest a junk request may take, connect to last byte.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// One request line's worth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JunkRequest {
    pub method: String,
    /// Origin-form request target: path and optional query.
    pub target: String,
}

/// `count` requests: method kinds (each standard method, an invented one, a standard one in
/// the wrong case) rotate against path kinds (each of `routes`, then a random unknown path).
/// Route templates may hold `{param}` segments (filled with random text) and a final
/// `{*rest}` (filled with random segments); every target gets a random query string whose
/// parameter names no route reads, so it changes nothing but the text.
pub fn mix(seed: u64, count: usize, routes: &[&str]) -> Vec<JunkRequest> {
    let mut rng = StdRng::seed_from_u64(seed);
    let method_kinds = STANDARD_METHODS.len() + 2;
    let path_kinds = routes.len() + 1;
    (0..count)
        .map(|i| {
            let method = match i % method_kinds {
                k if k < STANDARD_METHODS.len() => STANDARD_METHODS[k].to_owned(),
                k if k == STANDARD_METHODS.len() => invented_method(&mut rng),
                _ => wrong_case(&mut rng),
            };
            let path = match routes.get((i / method_kinds) % path_kinds) {
                Some(template) => fill(template, &mut rng),
                None => format!("/zz{}", random_path(&mut rng)),
            };
            JunkRequest {
                method,
                target: format!("{path}?{}", random_query(&mut rng)),
            }
        })
        .collect()
}

/// Sends one request on a fresh connection (`Connection: close`) and returns the response's
/// status, or `None` when the server closed without answering (hyper refuses some request
/// lines outright).
pub async fn send(addr: SocketAddr, request: &JunkRequest) -> std::io::Result<Option<u16>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            request.method, request.target
        );
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(status_of(&response))
    };
    tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "junk request hung"))?
}

/// Sends each request in turn; panics on a connection failure or a hang, the server's
/// fault either way.
pub async fn send_all(addr: SocketAddr, requests: &[JunkRequest]) {
    for request in requests {
        if let Err(e) = send(addr, request).await {
            panic!("{} {}: {e}", request.method, request.target);
        }
    }
}

/// Asserts that a second round of junk requests, of the same shapes as the first but with
/// fresh random text, added no series: every label value comes from a fixed set, so once the
/// first round has produced each, the count stays put. Prints the counts at the start
/// (`untouched`) and after each round, the figures to read when it fails.
pub fn assert_second_round_added_no_series(
    untouched: &Exposition,
    after_first: &Exposition,
    after_second: &Exposition,
    after_second_text: &str,
) {
    eprintln!(
        "series: {} at start, {} after a first round of junk requests, {} after a second",
        untouched.series_count(),
        after_first.series_count(),
        after_second.series_count()
    );
    assert_eq!(
        after_second.series_count(),
        after_first.series_count(),
        "a second round of junk requests of the same shapes added series:\n{after_second_text}"
    );
}

fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A token of letters, digits and the punctuation RFC 9110 allows in a method.
fn invented_method(rng: &mut StdRng) -> String {
    const TCHARS: &[u8] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~";
    let len = rng.random_range(1..=16);
    let method: String = (0..len)
        .map(|_| TCHARS[rng.random_range(0..TCHARS.len())] as char)
        .collect();
    if STANDARD_METHODS.contains(&method.as_str()) {
        format!("{method}X")
    } else {
        method
    }
}

/// A standard method with at least one lower-case letter (`gEt`): not the same method.
fn wrong_case(rng: &mut StdRng) -> String {
    let method = STANDARD_METHODS[rng.random_range(0..STANDARD_METHODS.len())];
    let lower = rng.random_range(0..method.len());
    method
        .char_indices()
        .map(|(i, c)| {
            if i == lower || rng.random_bool(0.5) {
                c.to_ascii_lowercase()
            } else {
                c
            }
        })
        .collect()
}

/// Unreserved characters and percent-escapes of printable ASCII, so the decoded text is
/// always valid UTF-8 and routes answer each shape alike.
fn random_text(rng: &mut StdRng, max: usize) -> String {
    const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
    let len = rng.random_range(1..=max);
    let mut text = String::new();
    for _ in 0..len {
        if rng.random_bool(0.1) {
            text.push_str(&format!("%{:02X}", rng.random_range(0x20..=0x7Eu8)));
        } else {
            text.push(UNRESERVED[rng.random_range(0..UNRESERVED.len())] as char);
        }
    }
    text
}

fn random_path(rng: &mut StdRng) -> String {
    let segments = rng.random_range(1..=4);
    (0..segments)
        .map(|_| format!("/{}", random_text(rng, 12)))
        .collect()
}

/// Parameter names start with `zz`, which no route reads.
fn random_query(rng: &mut StdRng) -> String {
    format!("zz{}={}", random_text(rng, 8), random_text(rng, 16))
}

fn fill(template: &str, rng: &mut StdRng) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with("{*") {
                random_path(rng).trim_start_matches('/').to_owned()
            } else if segment.starts_with('{') {
                random_text(rng, 12)
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_kind_meets_every_path_kind() {
        let requests = mix(1, 11 * 3, &["/a", "/b/{id}"]);

        for (i, r) in requests.iter().enumerate() {
            let path = r.target.split('?').next().unwrap();
            match i / 11 {
                0 => assert_eq!(path, "/a"),
                1 => assert!(path.starts_with("/b/") && path.len() > 3, "{path}"),
                _ => assert!(path.starts_with("/zz"), "{path}"),
            }
        }
        let methods: Vec<_> = requests[..11].iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods[..9], STANDARD_METHODS);
        assert!(!STANDARD_METHODS.contains(&methods[9]), "{}", methods[9]);
        assert!(!STANDARD_METHODS.contains(&methods[10]), "{}", methods[10]);
        assert!(
            STANDARD_METHODS.contains(&methods[10].to_ascii_uppercase().as_str()),
            "{}",
            methods[10]
        );
    }

    #[test]
    fn seeds_give_different_text_in_the_same_shapes() {
        let a = mix(1, 50, &["/a"]);
        let b = mix(2, 50, &["/a"]);

        assert_ne!(a, b);
        assert_eq!(mix(1, 50, &["/a"]), a);
    }

    #[test]
    fn a_rest_segment_is_filled_with_a_path() {
        let requests = mix(3, 1, &["/docs/{*rest}"]);
        assert!(requests[0].target.starts_with("/docs/"));
        assert!(!requests[0].target.contains('{'));
    }

    #[test]
    fn the_status_line_is_read() {
        assert_eq!(
            status_of(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n"),
            Some(405)
        );
        assert_eq!(status_of(b""), None);
    }
}
