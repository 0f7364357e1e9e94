//! The source as a tree of nodes with positions.
//!
//! serde-saphyr does the YAML work (JSON is parsed as YAML 1.2): every node is
//! read as a [`serde_saphyr::Spanned`] value through `deserialize_any`, which
//! gives its line, column and byte span. Mapping entries are kept in source
//! order with duplicates passed through, so the walker can report them itself.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, NonFiniteFloatPolicy, Spanned};

/// A 1-based line and column; 0:0 when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn from_location(l: &Location) -> Pos {
        Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub value: Value,
    pub pos: Pos,
    /// The scalar as written in the source (quotes included); empty for
    /// lists and mappings.
    pub text: String,
}

impl Node {
    /// The scalar's text: a string's value, or a number or boolean as
    /// written. `None` for null, lists and mappings.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(&self.text),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// How the node reads in a "found ..." message.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".into(),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            Value::Str(s) if s.contains('\n') || s.chars().count() > 60 => "a long text".into(),
            Value::Str(s) if self.text.is_empty() => format!("{s:?}"),
            _ if self.text.contains('\n') => "a multi-line value".into(),
            _ => self.text.clone(),
        }
    }
}

/// What one serde-saphyr document deserializes into before positions are
/// turned into [`Pos`] and source text.
struct Raw(RawValue);

enum RawValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw(RawValue::Null))
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw(RawValue::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw(RawValue::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw(RawValue::Int(i128::from(v))))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw(RawValue::Int(i128::from(v))))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw(RawValue::Int(v)))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw(RawValue::Int(i128::try_from(v).unwrap_or(i128::MAX))))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw(RawValue::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw(RawValue::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw(RawValue::Str(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw(RawValue::Str(String::from_utf8_lossy(v).into_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(Raw(RawValue::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<Raw>>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            entries.push((key, value));
        }
        Ok(Raw(RawValue::Map(entries)))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<Raw, A::Error> {
        Err(de::Error::custom(
            "tagged values are not supported here; remove the tag",
        ))
    }
}

/// A YAML (or JSON) syntax error: the parser's message and location.
pub(super) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parse every non-empty document of `text`.
pub(super) fn load(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let options = serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        non_finite_float_policy: NonFiniteFloatPolicy::PassThrough,
        with_snippet: false,
    };
    match serde_saphyr::from_multiple_with_options::<Spanned<Raw>>(text, options) {
        Ok(docs) => Ok(docs.into_iter().map(|d| convert(text, d)).collect()),
        Err(e) => {
            let e = e.without_snippet();
            let pos = e
                .location()
                .map(|l| Pos::from_location(&l))
                .unwrap_or_default();
            let mut message = e.to_string();
            // serde-saphyr appends the location; ours goes in front.
            let suffix = format!(" at line {}, column {}", pos.line, pos.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            Err(SyntaxError { pos, message })
        }
    }
}

fn convert(src: &str, node: Spanned<Raw>) -> Node {
    let pos = Pos::from_location(&node.referenced);
    let value = match node.value.0 {
        RawValue::Null => Value::Null,
        RawValue::Bool(b) => Value::Bool(b),
        RawValue::Int(i) => Value::Int(i),
        RawValue::Float(f) => Value::Float(f),
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| convert(src, i)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (convert(src, k), convert(src, v)))
                .collect(),
        ),
    };
    let text = match &value {
        Value::Seq(_) | Value::Map(_) => String::new(),
        // Where the value is defined: an alias points at its anchor.
        _ => source_text(src, &node.defined).unwrap_or_else(|| match &value {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            _ => String::new(),
        }),
    };
    Node { value, pos, text }
}

fn source_text(src: &str, loc: &Location) -> Option<String> {
    let span = loc.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let text = src.get(start..start.checked_add(len)?)?.trim_end();
    (!text.is_empty()).then(|| text.to_owned())
}
