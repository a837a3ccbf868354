//! Reading a JSON request body in two steps, so that the status says which mistake the
//! client made and the message is ours, never serde's or axum's wording:
//!
//! 1. Syntax: the bytes must be exactly one JSON value. They are parsed into a [`Node`] tree,
//!    which accepts any value and keeps every object member in order, duplicates included.
//!    Failure is a [`BodyError::Syntax`] (400).
//! 2. Shape: the tree is read into the request type through [`NodeDeserializer`], whose
//!    errors ([`ShapeError`]) record which field is wrong and how. Any failure here (wrong
//!    type, missing field, unknown enum value, a key given twice) is a [`BodyError::Shape`]
//!    (422) naming the field.
//!
//! Splitting the steps is what makes the rule hold: serde_json alone classifies some wrong
//! types (`null` or `{}` where an enum is expected) as syntax errors.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use zeroize::Zeroize as _;

/// Why a body could not be read; the text is the client-facing message.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not one well-formed JSON value (400).
    Syntax(String),
    /// Well-formed JSON that is not what the endpoint takes (422).
    Shape(String),
}

/// Parses `bytes` as one JSON value of type `T`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    let node: Node = serde_json::from_slice(bytes).map_err(|err| syntax_error(bytes, &err))?;
    T::deserialize(NodeDeserializer(&node)).map_err(|err| BodyError::Shape(err.to_string()))
}

fn syntax_error(bytes: &[u8], err: &serde_json::Error) -> BodyError {
    let message = if bytes.iter().all(u8::is_ascii_whitespace) {
        "the request body is empty; send a JSON object".to_owned()
    } else if err.is_eof() {
        "the request body ends in the middle of its JSON".to_owned()
    } else {
        format!(
            "the request body is not valid JSON (line {}, column {})",
            err.line(),
            err.column()
        )
    };
    BodyError::Syntax(message)
}

/// Any JSON value, object members kept in order with duplicates (a map would keep one).
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// The JSON type, as messages name it.
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Unsigned(_) | Node::Signed(_) | Node::Float(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        }
    }
}

/// Bodies carry passwords: their text does not outlive the request in freed memory.
impl Drop for Node {
    fn drop(&mut self) {
        if let Node::String(text) = self {
            text.zeroize();
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Signed(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

/// Where in the body a problem is: object keys and array indexes from the top.
#[derive(Debug)]
enum Segment {
    Key(String),
    Index(usize),
}

#[derive(Debug)]
enum Problem {
    /// A type this deserializer checked itself: what it wanted, what it got.
    WrongType {
        expected: &'static str,
        got: &'static str,
    },
    /// A type a visitor refused (its expectation is in serde's words, so left out).
    UnexpectedType {
        got: &'static str,
    },
    OneOf(&'static [&'static str]),
    Missing(&'static str),
    Duplicate(&'static str),
    Unknown(String),
    Invalid,
}

/// A body of the wrong shape: where, and what is wrong, rendered in the API's words.
#[derive(Debug)]
pub struct ShapeError {
    path: Vec<Segment>,
    problem: Problem,
}

impl ShapeError {
    fn new(problem: Problem) -> Self {
        Self {
            path: Vec::new(),
            problem,
        }
    }

    fn wrong_type(expected: &'static str, node: &Node) -> Self {
        Self::new(Problem::WrongType {
            expected,
            got: node.kind(),
        })
    }

    /// The same error, seen from the value that contains `segment`.
    fn within(mut self, segment: Segment) -> Self {
        self.path.insert(0, segment);
        self
    }

    /// `a.b[0]`, or `a.b[0].field` for problems about a member of the value at the path.
    fn location(&self, member: Option<&str>) -> String {
        let mut at = String::new();
        let keys = self.path.iter().map(|segment| match segment {
            Segment::Key(key) => Ok(key.as_str()),
            Segment::Index(index) => Err(*index),
        });
        for key in keys.chain(member.map(Ok)) {
            match key {
                Ok(key) => {
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(&printable(key));
                }
                Err(index) => at.push_str(&format!("[{index}]")),
            }
        }
        at
    }
}

/// A key as it may appear in a message: short, and with anything unusual escaped.
fn printable(key: &str) -> String {
    const MAX: usize = 64;
    let plain = key.len() <= MAX
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if plain {
        return key.to_owned();
    }
    let short: String = key.chars().take(MAX).collect();
    let ellipsis = if short.len() < key.len() { "…" } else { "" };
    format!("{short:?}{ellipsis}")
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let subject = |member: Option<&str>| {
            let at = self.location(member);
            if at.is_empty() {
                "the request body".to_owned()
            } else {
                format!("field `{at}`")
            }
        };
        match &self.problem {
            Problem::WrongType { expected, got } => {
                write!(f, "{} must be {expected}, not {got}", subject(None))
            }
            Problem::UnexpectedType { got } => {
                write!(f, "{} has the wrong type ({got})", subject(None))
            }
            Problem::OneOf(options) => {
                let options: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
                write!(f, "{} must be one of {}", subject(None), options.join(", "))
            }
            Problem::Missing(field) => write!(f, "{} is required", subject(Some(field))),
            Problem::Duplicate(field) => {
                write!(f, "{} is given more than once", subject(Some(field)))
            }
            Problem::Unknown(field) => write!(f, "{} is not a known field", subject(Some(field))),
            Problem::Invalid => write!(f, "{} has an invalid value", subject(None)),
        }
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    /// A type's own check failed; its text is not ours to show.
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self::new(Problem::Invalid)
    }
    fn invalid_type(unexpected: de::Unexpected, _: &dyn de::Expected) -> Self {
        Self::new(Problem::UnexpectedType {
            got: unexpected_kind(&unexpected),
        })
    }
    fn invalid_value(_: de::Unexpected, _: &dyn de::Expected) -> Self {
        Self::new(Problem::Invalid)
    }
    fn invalid_length(_: usize, _: &dyn de::Expected) -> Self {
        Self::new(Problem::Invalid)
    }
    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Self::new(Problem::OneOf(expected))
    }
    fn unknown_field(field: &str, _: &'static [&'static str]) -> Self {
        Self::new(Problem::Unknown(field.to_owned()))
    }
    fn missing_field(field: &'static str) -> Self {
        Self::new(Problem::Missing(field))
    }
    fn duplicate_field(field: &'static str) -> Self {
        Self::new(Problem::Duplicate(field))
    }
}

/// A serde `Unexpected` as the JSON type it came from.
fn unexpected_kind(unexpected: &de::Unexpected) -> &'static str {
    use de::Unexpected as U;
    match unexpected {
        U::Bool(_) => "a boolean",
        U::Unsigned(_) | U::Signed(_) | U::Float(_) => "a number",
        U::Char(_) | U::Str(_) | U::Bytes(_) => "a string",
        U::Unit | U::Option => "null",
        U::Seq => "an array",
        U::Map | U::StructVariant => "an object",
        _ => "a value of another type",
    }
}

/// Reads a [`Node`] into any `Deserialize` type, checking JSON types itself so that the
/// errors say what was expected in the API's words.
struct NodeDeserializer<'a>(&'a Node);

impl<'a> NodeDeserializer<'a> {
    fn string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::String(text) => visitor.visit_borrowed_str(text),
            other => Err(ShapeError::wrong_type("a string", other)),
        }
    }

    fn number<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match *self.0 {
            Node::Unsigned(n) => visitor.visit_u64(n),
            Node::Signed(n) => visitor.visit_i64(n),
            Node::Float(n) => visitor.visit_f64(n),
            ref other => Err(ShapeError::wrong_type("a number", other)),
        }
    }

    fn array<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Array(items) => visitor.visit_seq(Items {
                items: items.iter().enumerate(),
            }),
            other => Err(ShapeError::wrong_type("an array", other)),
        }
    }

    fn object<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Object(members) => visitor.visit_map(Members {
                members: members.iter(),
                value: None,
            }),
            other => Err(ShapeError::wrong_type("an object", other)),
        }
    }
}

macro_rules! to_numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
            self.number(visitor)
        }
    )*};
}

impl<'a> Deserializer<'a> for NodeDeserializer<'a> {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Unsigned(_) | Node::Signed(_) | Node::Float(_) => self.number(visitor),
            Node::String(_) => self.string(visitor),
            Node::Array(_) => self.array(visitor),
            Node::Object(_) => self.object(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Bool(b) => visitor.visit_bool(*b),
            other => Err(ShapeError::wrong_type("true or false", other)),
        }
    }

    to_numbers!(
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    );

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }
    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }
    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }
    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }
    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.string(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::Null => visitor.visit_unit(),
            other => Err(ShapeError::wrong_type("null", other)),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.array(visitor)
    }
    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.array(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.array(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        self.object(visitor)
    }
    /// Only an object: serde_json would also take an array of the fields in order, which
    /// the document does not allow.
    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        self.object(visitor)
    }

    /// Unit variants only, spelled as strings: the only enums request bodies carry.
    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self.0 {
            Node::String(text) => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => Err(ShapeError::new(Problem::OneOf(variants))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        visitor.visit_unit()
    }
}

/// An array's items, each error tagged with its index.
struct Items<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
}

impl<'a> de::SeqAccess<'a> for Items<'a> {
    type Error = ShapeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ShapeError> {
        let Some((index, item)) = self.items.next() else {
            return Ok(None);
        };
        seed.deserialize(NodeDeserializer(item))
            .map(Some)
            .map_err(|err| err.within(Segment::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// An object's members in order, duplicates included, each error tagged with its key.
struct Members<'a> {
    members: std::slice::Iter<'a, (String, Node)>,
    value: Option<(&'a str, &'a Node)>,
}

impl<'a> de::MapAccess<'a> for Members<'a> {
    type Error = ShapeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ShapeError> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, ShapeError> {
        // serde asks for a value only after its key; a type that did not is a bad value.
        let Some((key, value)) = self.value.take() else {
            return Err(ShapeError::new(Problem::Invalid));
        };
        seed.deserialize(NodeDeserializer(value))
            .map_err(|err| err.within(Segment::Key(key.to_owned())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Role {
        User,
        Admin,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct NewUser {
        username: String,
        role: Role,
        age: Option<u8>,
        tags: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        name: String,
    }

    fn shape(body: &str) -> String {
        match parse::<NewUser>(body.as_bytes()) {
            Err(BodyError::Shape(message)) => message,
            other => panic!("{body}: expected a shape error, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_body_of_the_right_shape_is_read() {
        let user: NewUser =
            parse(br#"{"username":"bob","role":"admin","age":7,"tags":["a"],"extra":{}}"#).unwrap();
        assert_eq!(
            user,
            NewUser {
                username: "bob".into(),
                role: Role::Admin,
                age: Some(7),
                tags: Some(vec!["a".into()]),
            }
        );
    }

    #[test]
    fn bytes_that_are_not_one_json_value_are_syntax_errors() {
        for body in [
            &b""[..],
            b"  \n",
            b"{",
            b"{\"username\": }",
            b"{\"username\":\"a\"} x",
            b"{\"username\":\"\xff\"}",
            b"{\"username\":\"a\x01b\"}",
            b"{'username':'a'}",
        ] {
            let err = parse::<NewUser>(body).unwrap_err();
            assert!(
                matches!(err, BodyError::Syntax(_)),
                "{}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn syntax_errors_say_where_in_the_api_words() {
        assert_eq!(
            parse::<NewUser>(b"").unwrap_err(),
            BodyError::Syntax("the request body is empty; send a JSON object".into())
        );
        assert_eq!(
            parse::<NewUser>(b"{\"username\":").unwrap_err(),
            BodyError::Syntax("the request body ends in the middle of its JSON".into())
        );
        assert_eq!(
            parse::<NewUser>(b"{\n  \"a\": nope}").unwrap_err(),
            BodyError::Syntax("the request body is not valid JSON (line 2, column 9)".into())
        );
    }

    #[test]
    fn a_wrong_type_names_the_field_and_both_types() {
        assert_eq!(
            shape(r#"{"username":1,"role":"user"}"#),
            "field `username` must be a string, not a number"
        );
        assert_eq!(
            shape(r#"{"username":"a","role":"user","tags":"a"}"#),
            "field `tags` must be an array, not a string"
        );
        assert_eq!(
            shape(r#"{"username":"a","role":"user","tags":["a",{}]}"#),
            "field `tags[1]` must be a string, not an object"
        );
    }

    #[test]
    fn an_enum_of_any_other_type_or_value_lists_the_choices() {
        for role in [r#"{}"#, "null", "1", "[]", r#""root""#, r#""ADMIN""#] {
            assert_eq!(
                shape(&format!(r#"{{"username":"a","role":{role}}}"#)),
                r#"field `role` must be one of "user", "admin""#,
                "{role}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_says_so() {
        for (body, got) in [
            ("[]", "an array"),
            (r#"["a","user"]"#, "an array"),
            ("null", "null"),
            (r#""a""#, "a string"),
            ("true", "a boolean"),
        ] {
            assert_eq!(
                shape(body),
                format!("the request body must be an object, not {got}")
            );
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(shape(r#"{"role":"user"}"#), "field `username` is required");
        assert_eq!(shape("{}"), "field `username` is required");
    }

    #[test]
    fn a_key_given_twice_is_named() {
        assert_eq!(
            shape(r#"{"username":"a","role":"user","username":"b"}"#),
            "field `username` is given more than once"
        );
    }

    #[test]
    fn an_out_of_range_number_is_an_invalid_value() {
        assert_eq!(
            shape(r#"{"username":"a","role":"user","age":300}"#),
            "field `age` has an invalid value"
        );
        assert_eq!(
            shape(r#"{"username":"a","role":"user","age":-1}"#),
            "field `age` has an invalid value"
        );
    }

    #[test]
    fn unknown_fields_are_named_where_a_type_refuses_them() {
        match parse::<Strict>(br#"{"name":"a","is admin":true}"#) {
            Err(BodyError::Shape(message)) => {
                assert_eq!(message, r#"field `"is admin"` is not a known field"#)
            }
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("an unknown field was accepted"),
        }
    }

    #[test]
    fn messages_are_ours_and_never_echo_values() {
        let secret = "hunter2-secret-value";
        let bodies = [
            format!(r#"{{"username":"a","role":"{secret}"}}"#),
            format!(r#"{{"username":["{secret}"],"role":"user"}}"#),
            format!(r#"{{"username":"a","role":"user","age":"{secret}"}}"#),
        ];
        for body in bodies {
            let message = shape(&body);
            for word in [
                secret,
                "invalid type",
                "expected",
                "variant",
                "Failed to",
                "line",
            ] {
                assert!(!message.contains(word), "{body}: {message}");
            }
        }
    }
}
