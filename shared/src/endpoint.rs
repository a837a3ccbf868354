//! Where a connection URL points, fit for a log line: `host:port`, never the credentials.
//!
//! "pool timed out" or "Connection refused" alone leaves an operator guessing which of the
//! addresses in their configuration was tried; the URL itself cannot be logged because it
//! carries the password.

/// `host:port` of `scheme://[user[:password]@]host[:port][/path][?query]`, with the scheme's
/// default port when none is given (`amqp` 5672, `amqps` 5671, `postgres`/`postgresql`
/// 5432). Never includes the user, password, path or query. For text that is not such a URL,
/// a placeholder that reveals nothing of it.
pub fn of_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(unparsable URL)".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        return "(no host in URL)".to_owned();
    }
    // `[::1]:5672` or `host:5672`; a bare IPv6 address without brackets has no port.
    let has_port = match host_port.rfind(']') {
        Some(close) => host_port[close..].contains(':'),
        None => host_port.matches(':').count() == 1,
    };
    if has_port {
        return host_port.to_owned();
    }
    match default_port(scheme) {
        Some(port) => format!("{host_port}:{port}"),
        None => host_port.to_owned(),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "postgres" | "postgresql" => Some(5432),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::of_url;

    #[test]
    fn names_host_and_port_without_the_credentials() {
        let shown = of_url("amqp://quotes:s3cret@rabbitmq:5672/%2f");
        assert_eq!(shown, "rabbitmq:5672");
        assert!(!shown.contains("s3cret") && !shown.contains("quotes"));
    }

    #[test]
    fn fills_in_the_schemes_default_port() {
        assert_eq!(of_url("amqp://guest:guest@127.0.0.1"), "127.0.0.1:5672");
        assert_eq!(
            of_url("amqps://mq.example.com/vhost"),
            "mq.example.com:5671"
        );
        assert_eq!(of_url("postgres://u:p@db/app?sslmode=off"), "db:5432");
    }

    #[test]
    fn keeps_ipv6_brackets() {
        assert_eq!(of_url("postgres://u:p@[::1]:6543/db"), "[::1]:6543");
        assert_eq!(of_url("amqp://[::1]/%2f"), "[::1]:5672");
    }

    #[test]
    fn a_password_with_at_signs_or_colons_never_shows() {
        let shown = of_url("amqp://user:p@ss:w0rd@broker:5673/%2f");
        assert_eq!(shown, "broker:5673");
    }

    #[test]
    fn text_that_is_no_url_reveals_nothing() {
        assert_eq!(of_url("user:secret@host"), "(unparsable URL)");
    }
}
