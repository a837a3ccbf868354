//! The limits an operator sets on each HTTP listener, shared by both services' settings
//! (flattened into their clap structs, so `--help` and the environment are the same on both).

use std::time::Duration;

use crate::config::parse_positive_duration;

/// Defaults, as documented in `--help`, the README and `.env.example`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;

/// How long a client may take over each part of an HTTP exchange, and how many connections
/// one listener holds at once. Without these a few thousand clients sending half a header
/// each hold their sockets for ever and exhaust the process's file descriptors.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HttpServerSettings {
    /// Time a client has to send a request's whole header, counted from its first byte.
    /// Past it the connection is closed.
    #[arg(id = "http_header_timeout", long = "http-header-timeout", env = "HTTP_HEADER_TIMEOUT",
          default_value = "10s", value_parser = parse_positive_duration)]
    pub header_timeout: Duration,

    /// Time one request may take from its complete header to its response: reading the body
    /// and handling it. Past it the client gets 408 `request_timeout` and the connection is
    /// closed; a response still not delivered a second later is cut off (except a long-lived
    /// stream such as the API's live quotes, which bounds its own life).
    #[arg(id = "http_request_timeout", long = "http-request-timeout", env = "HTTP_REQUEST_TIMEOUT",
          default_value = "30s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,

    /// How long a connection may sit without a request (before its first or between
    /// keep-alive requests) before it is closed.
    #[arg(id = "http_idle_timeout", long = "http-idle-timeout", env = "HTTP_IDLE_TIMEOUT",
          default_value = "75s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Most connections the listener holds at once. One more gets an immediate 503
    /// `too_many_connections` and is closed; it is never queued.
    #[arg(id = "http_max_connections", long = "http-max-connections", env = "HTTP_MAX_CONNECTIONS",
          default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl Default for HttpServerSettings {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        http: HttpServerSettings,
    }

    #[test]
    fn clap_defaults_equal_the_documented_constants() {
        let cli = Cli::try_parse_from(["test"]).unwrap();

        assert_eq!(cli.http, HttpServerSettings::default());
    }

    #[test]
    fn zero_timeouts_and_connection_limits_are_refused() {
        for bad in [
            ["test", "--http-header-timeout", "0"],
            ["test", "--http-request-timeout", "0s"],
            ["test", "--http-idle-timeout", "0ms"],
            ["test", "--http-max-connections", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_take_the_usual_units() {
        let cli = Cli::try_parse_from(["test", "--http-header-timeout", "1500ms"]).unwrap();

        assert_eq!(cli.http.header_timeout, Duration::from_millis(1500));
    }
}
