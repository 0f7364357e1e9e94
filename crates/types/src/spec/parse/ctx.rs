//! The error collector, field paths, mapping walkers and scalar readers the
//! spec walker is built from. Every reader records its own error and returns
//! `None`, so one pass reports every mistake in a file.

use crate::spec::SpecError;
use crate::units::{self, Bytes, MilliCpu, Millis};

use super::tree::{Node, Pos, Value};

/// Collects errors for one file.
pub(super) struct Ctx<'a> {
    file: &'a str,
    pub errors: Vec<SpecError>,
    /// The service names and routes the job being read claims.
    pub claims: Vec<crate::spec::ServiceClaim>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a str) -> Self {
        Ctx {
            file,
            errors: Vec::new(),
            claims: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        self.file
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.errors.push(SpecError {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Report that `node` is not what `expected` describes.
    pub fn expected(&mut self, node: &Node, path: &str, expected: &str) {
        self.error(
            node.pos,
            path,
            format!("expected {expected}, found {}", node.describe()),
        );
    }
}

/// `path.field`, or `field` at the top.
pub(super) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `path[i]`.
pub(super) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// One known field of a mapping.
pub(super) struct Field<'n> {
    pub key_pos: Pos,
    pub node: &'n Node,
    pub path: String,
}

/// The known, unique fields of a mapping, after unknown and repeated keys
/// have been reported.
pub(super) struct Fields<'n> {
    pub pos: Pos,
    pub path: String,
    entries: Vec<(&'n str, Pos, &'n Node)>,
    /// Fields suggested for misspelt keys: a missing one was probably
    /// meant, so "missing" errors about it are left out.
    suggested: Vec<String>,
}

impl<'n> Fields<'n> {
    pub fn get(&self, name: &str) -> Option<Field<'n>> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == name)
            .map(|(k, key_pos, node)| Field {
                key_pos: *key_pos,
                node,
                path: join(&self.path, k),
            })
    }

    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| *k == name)
    }

    /// Whether `name` is given, or was suggested for a misspelt key.
    pub fn has_or_meant(&self, name: &str) -> bool {
        self.has(name) || self.suggested.iter().any(|s| s == name)
    }

    /// Fields present, in source order.
    pub fn names(&self) -> impl Iterator<Item = (&'n str, Pos)> + '_ {
        self.entries.iter().map(|(k, pos, _)| (*k, *pos))
    }
}

/// Fields of the design that corral does not support yet.
pub(super) const NOT_YET: &[&str] = &[];

/// Names users bring from other tools, and what they are called here.
const ALIASES: &[(&str, &str)] = &[
    ("replicas", "count"),
    ("instances", "count"),
    ("scale", "count"),
    ("environment", "env"),
    ("cmd", "command"),
    ("entrypoint", "command"),
    ("arguments", "args"),
    ("working_dir", "workdir"),
    ("workingdir", "workdir"),
    ("working_directory", "workdir"),
    ("cwd", "workdir"),
    ("mem", "memory"),
    ("ram", "memory"),
    ("cpus", "cpu"),
    ("restart_policy", "restart"),
    ("restartpolicy", "restart"),
    ("update_policy", "update"),
    ("group", "groups"),
    ("task", "tasks"),
    ("containers", "tasks"),
    ("port", "ports"),
    ("imagepullpolicy", "pull_policy"),
    ("image_pull_policy", "pull_policy"),
    ("operator", "op"),
    ("attribute", "attr"),
    ("kind", "type"),
    ("healthcheck", "check"),
    ("healthchecks", "checks"),
    ("health_checks", "checks"),
    ("expected_status", "status"),
    ("status_code", "status"),
    ("header", "headers"),
    ("period", "interval"),
    ("initial_delay", "grace"),
    ("grace_period", "grace"),
    ("success_before_passing", "success_threshold"),
    ("failures_before_critical", "failure_threshold"),
];

/// The closest of `options` to `word`, when it is close enough to be a
/// likely misspelling.
pub(super) fn closest<'o>(word: &str, options: &[&'o str]) -> Option<&'o str> {
    let lower = word.to_ascii_lowercase();
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == lower)
        && let Some(o) = options.iter().find(|o| **o == *to)
    {
        return Some(o);
    }
    options
        .iter()
        .map(|o| (strsim::jaro_winkler(&lower, o), *o))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o)
}

/// `` `a`, `b` or `c` ``.
pub(super) fn one_of(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// The text of a mapping key, as written.
fn key_text(key: &Node) -> Option<&str> {
    match &key.value {
        Value::Str(s) => Some(s),
        Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Null => Some(&key.text),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

/// The entries of a mapping with their key text; reports a node that is not
/// a mapping (as `expected`) and keys that are lists or mappings.
pub(super) fn entries<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    expected: &str,
) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
    let Value::Map(map) = &node.value else {
        ctx.expected(node, path, expected);
        return None;
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        match key_text(key) {
            Some(k) => out.push((k, key, value)),
            None => ctx.error(
                key.pos,
                path,
                format!("a key must be a name, found {}", key.describe()),
            ),
        }
    }
    Some(out)
}

/// Walk a mapping whose keys must be among `allowed`: reports unknown keys
/// (with a suggestion) and repeated keys, and keeps the first of each.
pub(super) fn fields<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    allowed: &[&str],
    expected: &str,
) -> Option<Fields<'n>> {
    let raw = entries(ctx, node, path, expected)?;
    let mut kept: Vec<(&'n str, Pos, &'n Node)> = Vec::with_capacity(raw.len());
    let mut suggested = Vec::new();
    for (k, key, value) in raw {
        let field_path = join(path, k);
        if !allowed.contains(&k) {
            let message = if NOT_YET.contains(&k) {
                format!("`{k}` is not supported yet; remove it")
            } else if let Some(s) = closest(k, allowed) {
                suggested.push(s.to_owned());
                format!("unknown field `{k}`; did you mean `{s}`?")
            } else {
                format!(
                    "unknown field `{k}`; the fields here are {}",
                    one_of(allowed)
                )
            };
            ctx.error(key.pos, &field_path, message);
        } else if kept.iter().any(|(seen, _, _)| *seen == k) {
            ctx.error(
                key.pos,
                &field_path,
                format!("`{k}` is given twice; keep one"),
            );
        } else {
            kept.push((k, key.pos, value));
        }
    }
    Some(Fields {
        pos: node.pos,
        path: path.to_owned(),
        entries: kept,
        suggested,
    })
}

/// The items of a block that takes one (`one: {...}`) or several
/// (`many: [...]`), with their paths; `noun` names one item in messages,
/// `example` shows the list. Both given: an error and none.
pub(super) fn one_or_many<'n>(
    ctx: &mut Ctx<'_>,
    f: &Fields<'n>,
    (one, many): (&str, &str),
    noun: &str,
    example: &str,
) -> Vec<(&'n Node, String)> {
    let mut nodes = Vec::new();
    match (f.get(one), f.get(many)) {
        (Some(_), Some(x)) => ctx.error(
            x.key_pos,
            &x.path,
            format!("give either `{one}` (one) or `{many}` (a list), not both"),
        ),
        (Some(x), None) => match &x.node.value {
            Value::Seq(_) => ctx.error(
                x.node.pos,
                &x.path,
                format!("`{one}` takes one {noun}; for a list of {noun}s write `{many}:`"),
            ),
            _ => nodes.push((x.node, x.path)),
        },
        (None, Some(x)) => {
            if let Value::Map(_) = &x.node.value {
                ctx.error(
                    x.node.pos,
                    &x.path,
                    format!("`{many}` takes a list of {noun}s; for one {noun} write `{one}:`"),
                );
            } else if let Some(items) = list(ctx, x.node, &x.path, example) {
                nodes.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (n, index(&x.path, i))),
                );
            }
        }
        (None, None) => {}
    }
    nodes
}

/// A list; reports anything else as `expected`.
pub(super) fn list<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    expected: &str,
) -> Option<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            ctx.expected(node, path, expected);
            None
        }
    }
}

/// A string; numbers and booleans are taken as written.
pub(super) fn text(ctx: &mut Ctx<'_>, node: &Node, path: &str, expected: &str) -> Option<String> {
    match node.scalar_text() {
        Some(s) => Some(s.to_owned()),
        None => {
            ctx.expected(node, path, expected);
            None
        }
    }
}

/// A non-empty string without whitespace or control characters; `what`
/// names it in messages, `expected` describes it.
pub(super) fn word(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    what: &str,
    expected: &str,
) -> Option<String> {
    let s = text(ctx, node, path, expected)?;
    if s.is_empty() {
        ctx.error(
            node.pos,
            path,
            format!("{what} is empty; write a value or remove the field"),
        );
        return None;
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        ctx.error(
            node.pos,
            path,
            format!("{what} {s:?} contains spaces; remove them"),
        );
        return None;
    }
    Some(s)
}

/// A list of strings (numbers and booleans taken as written).
pub(super) fn strings(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    expected: &str,
) -> Option<Vec<String>> {
    let items = list(ctx, node, path, expected)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match text(ctx, item, &index(path, i), "a string") {
            Some(s) => out.push(s),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn boolean(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<bool> {
    match node.value {
        Value::Bool(b) => Some(b),
        _ => {
            ctx.expected(node, path, "true or false");
            None
        }
    }
}

/// A whole number in `min..=u32::MAX`; `field` names it in messages.
pub(super) fn uint(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    field: &str,
    min: u32,
) -> Option<u32> {
    let Value::Int(i) = node.value else {
        let expected = if min == 0 {
            "a whole number, 0 or more"
        } else {
            "a whole number, 1 or more"
        };
        ctx.expected(node, path, expected);
        return None;
    };
    if i < i128::from(min) {
        ctx.error(
            node.pos,
            path,
            format!("{field} must be {min} or more, found {}", node.text),
        );
        return None;
    }
    match u32::try_from(i) {
        Ok(v) => Some(v),
        Err(_) => {
            ctx.error(
                node.pos,
                path,
                format!(
                    "{field} is too large, found {}; the most is {}",
                    node.text,
                    u32::MAX
                ),
            );
            None
        }
    }
}

/// The text a unit parser gets: a string, or a number as written.
fn quantity_text<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n Node,
    path: &str,
    expected: &str,
) -> Option<&'n str> {
    match &node.value {
        Value::Str(s) => Some(s),
        Value::Int(_) | Value::Float(_) => Some(&node.text),
        _ => {
            ctx.expected(node, path, expected);
            None
        }
    }
}

pub(super) fn duration(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Millis> {
    let s = quantity_text(ctx, node, path, "a duration like 10s, 5m or 1h")?;
    match units::parse_duration(s) {
        Ok(d) => Some(d),
        Err(e) => {
            ctx.error(node.pos, path, e);
            None
        }
    }
}

pub(super) fn size(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Bytes> {
    if let Value::Int(i) = node.value {
        return match u64::try_from(i) {
            Ok(b) => Some(Bytes(b)),
            Err(_) => {
                ctx.error(
                    node.pos,
                    path,
                    format!("expected a size like 256M or 1G, found {}", node.text),
                );
                None
            }
        };
    }
    let s = quantity_text(ctx, node, path, "a size like 256M, 1G or 512MiB")?;
    match units::parse_size(s) {
        Ok(b) => Some(b),
        Err(e) => {
            ctx.error(node.pos, path, e);
            None
        }
    }
}

pub(super) fn cpu(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<MilliCpu> {
    let s = quantity_text(ctx, node, path, "cpu like 500m (millicores) or 2 (cores)")?;
    match units::parse_cpu(s) {
        Ok(c) => Some(c),
        Err(e) => {
            ctx.error(node.pos, path, e);
            None
        }
    }
}

/// One of `options` (a string); `what` names the setting in messages.
pub(super) fn choice(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    what: &str,
    options: &[&str],
) -> Option<usize> {
    let Value::Str(s) = &node.value else {
        ctx.expected(node, path, &one_of(options));
        return None;
    };
    if let Some(i) = options.iter().position(|o| o == s) {
        return Some(i);
    }
    let message = match closest(s, options) {
        Some(c) => format!("unknown {what} `{s}`; did you mean `{c}`?"),
        None => format!("unknown {what} `{s}`; use {}", one_of(options)),
    };
    ctx.error(node.pos, path, message);
    None
}

/// Why `name` is not a valid job, group or task name, if it is not.
pub fn name_problem(name: &str) -> Option<String> {
    const RULE: &str =
        "use lowercase letters, digits, `-` and `_`, starting with a letter or digit";
    if name.is_empty() {
        return Some(format!("the name is empty; {RULE}"));
    }
    if name.len() > 63 {
        return Some(format!(
            "`{name}` is {} characters long; use at most 63",
            name.len()
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if first_ok && rest_ok {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if lower != name && name_problem(&lower).is_none() {
        return Some(format!(
            "`{name}` is not a valid name; {RULE}, e.g. `{lower}`"
        ));
    }
    Some(format!("`{name}` is not a valid name; {RULE}"))
}

/// A job, group or task name.
pub(super) fn name(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let s = text(ctx, node, path, "a name")?;
    match name_problem(&s) {
        None => Some(s),
        Some(problem) => {
            ctx.error(node.pos, path, problem);
            None
        }
    }
}
