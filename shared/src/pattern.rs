//! Building blocks for the `pattern`s the OpenAPI document states, so each one is built from
//! the same constants as the validator it describes instead of being retyped by hand.
//!
//! The output stays within the regular-expression syntax that JSON Schema (ECMA-262),
//! Python's `re` (which schemathesis generates from) and Rust's `regex` read alike: `^` and
//! `$`, character classes of plain characters and `\uXXXX` escapes, `{m,n}` and `(?:…)?`.

/// A class of the ASCII letters and digits plus `extra` (ASCII punctuation), e.g.
/// `[A-Za-z0-9._@\-]`.
pub fn ascii_alphanumeric_class(extra: &[char]) -> String {
    let mut class = String::from("[A-Za-z0-9");
    for &c in extra {
        push_class_char(&mut class, c);
    }
    class.push(']');
    class
}

/// A class of exactly the characters [`str::trim`] removes (Unicode `White_Space`), so a
/// pattern can allow the whitespace a validator trims before it checks.
pub fn whitespace_class() -> String {
    let mut class = String::from("[");
    let mut spaces = ('\0'..=char::MAX).filter(|c| c.is_whitespace()).peekable();
    while let Some(first) = spaces.next() {
        let mut last = first;
        while let Some(&next) = spaces.peek() {
            if u32::from(next) != u32::from(last) + 1 {
                break;
            }
            last = next;
            spaces.next();
        }
        push_class_char(&mut class, first);
        if last != first {
            class.push('-');
            push_class_char(&mut class, last);
        }
    }
    class.push(']');
    class
}

/// Appends `c` so that it means itself inside `[...]` in every dialect above: class
/// metacharacters get a backslash, anything outside printable ASCII a `\uXXXX` escape.
fn push_class_char(class: &mut String, c: char) {
    match c {
        '\\' | ']' | '[' | '^' | '-' | '.' => {
            class.push('\\');
            class.push(c);
        }
        ' '..='~' => class.push(c),
        _ => {
            let code = u32::from(c);
            assert!(
                code <= 0xFFFF,
                "{code:#X} needs a surrogate pair in ECMA-262"
            );
            class.push_str(&format!("\\u{code:04X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    fn whole(class: &str) -> Regex {
        Regex::new(&format!("^{class}$")).unwrap()
    }

    #[test]
    fn whitespace_class_is_what_trim_removes() {
        let class = whole(&whitespace_class());
        for c in '\0'..=char::MAX {
            let text = c.to_string();
            assert_eq!(
                class.is_match(&text),
                text.trim().is_empty(),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn ascii_class_holds_letters_digits_and_the_extras_only() {
        let class = whole(&ascii_alphanumeric_class(&['.', '^', '-', '_', '@']));
        for c in '\0'..='\u{2FF}' {
            let expected = c.is_ascii_alphanumeric() || ".^-_@".contains(c);
            assert_eq!(class.is_match(&c.to_string()), expected, "{c:?}");
        }
    }
}
