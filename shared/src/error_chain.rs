//! One line per error, each cause said once.
//!
//! Many error types already print their cause in their own message *and* return it from
//! `source()` (sqlx's `error returned from database: {0}`, thiserror's `"...: {0}"` with
//! `#[source]`). Printing such an error with its whole source chain (anyhow's `{:#}`) then
//! repeats the cause: `... at line 948: ... at line 948`. [`report`] walks the chain and
//! leaves out every cause whose text the line already holds.

use std::error::Error;

/// The error and its causes as one `outer: cause: root` line, without repeats.
pub fn report(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a fixed message and an optional cause.
    #[derive(Debug)]
    struct Layer {
        message: String,
        cause: Option<Box<Layer>>,
    }

    impl Layer {
        fn new(message: &str, cause: Option<Layer>) -> Self {
            Self {
                message: message.to_owned(),
                cause: cause.map(Box::new),
            }
        }
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
        }
    }

    #[test]
    fn a_cause_the_message_already_holds_is_said_once() {
        let root = Layer::new("relation \"x\" does not exist at line 948", None);
        let driver = Layer::new(
            "error returned from database: relation \"x\" does not exist at line 948",
            Some(root),
        );
        let ours = Layer::new(
            "database unavailable: error returned from database: relation \"x\" does not exist at line 948",
            Some(driver),
        );

        let line = report(&ours);

        assert_eq!(line.matches("at line 948").count(), 1, "{line}");
        assert_eq!(
            line,
            "database unavailable: error returned from database: relation \"x\" does not exist at line 948"
        );
    }

    #[test]
    fn causes_a_message_leaves_out_are_appended_in_order() {
        let root = Layer::new("Connection refused (os error 111)", None);
        let middle = Layer::new("connecting to 127.0.0.1:5432", Some(root));
        let outer = Layer::new("applying migrations", Some(middle));

        assert_eq!(
            report(&outer),
            "applying migrations: connecting to 127.0.0.1:5432: Connection refused (os error 111)"
        );
    }

    #[test]
    fn an_error_without_a_cause_is_its_message() {
        assert_eq!(report(&Layer::new("timed out", None)), "timed out");
    }
}
