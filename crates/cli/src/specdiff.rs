//! `corral job history`'s diff: a job spec flattened into `path: value`
//! leaves, and the leaves that differ between two versions.
//!
//! Lists of named things (groups, tasks, services, checks) are keyed by
//! name (`groups[web].tasks[app].image`), so reordering them or adding one
//! in the middle shows as what it is rather than as every later entry
//! changing; other lists are keyed by position (`command[1]`).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

/// One leaf that differs: `old` absent when added, `new` absent when
/// removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// Every leaf of `v` with its path, in document order. Empty objects and
/// lists are leaves too (`env: {}`), so emptying one shows.
pub fn flatten(v: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The names of a list's items when every item is an object with a
/// distinct string `name`.
fn item_names(items: &[Value]) -> Option<Vec<&str>> {
    let names: Vec<&str> = items
        .iter()
        .map(|i| i.get("name").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    (distinct.len() == names.len()).then_some(names)
}

fn walk(path: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                walk(&join(path, k), val, out);
            }
        }
        Value::Array(items) if !items.is_empty() => match item_names(items) {
            Some(names) => {
                for (item, name) in items.iter().zip(names) {
                    let p = format!("{path}[{name}]");
                    // The name is the key already.
                    if let Value::Object(m) = item {
                        let rest: serde_json::Map<String, Value> = m
                            .iter()
                            .filter(|(k, _)| k.as_str() != "name")
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        if rest.is_empty() {
                            out.push((p, Value::Object(rest)));
                        } else {
                            walk(&p, &Value::Object(rest), out);
                        }
                    }
                }
            }
            None => {
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), item, out);
                }
            }
        },
        _ => out.push((path.to_string(), v.clone())),
    }
}

/// The leaves that differ between `old` and `new`, in the new document's
/// order, removed leaves where they stood in the old one.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    diff_leaves(&flatten(old), &flatten(new))
}

pub fn diff_leaves(old: &[(String, Value)], new: &[(String, Value)]) -> Vec<Change> {
    let old_at: HashMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.as_str(), i))
        .collect();
    let in_new: BTreeSet<&str> = new.iter().map(|(p, _)| p.as_str()).collect();
    let removed = |i: usize| -> Option<Change> {
        let (p, v) = &old[i];
        (!in_new.contains(p.as_str())).then(|| Change {
            path: p.clone(),
            old: Some(v.clone()),
            new: None,
        })
    };
    // For each new leaf, the old position of the first leaf at or after it
    // that both have: removed leaves before that go first (as in a line
    // diff, `-` before `+` in the same gap).
    let mut anchor = vec![old.len(); new.len() + 1];
    for (i, (p, _)) in new.iter().enumerate().rev() {
        anchor[i] = old_at.get(p.as_str()).copied().unwrap_or(anchor[i + 1]);
    }
    let mut out = Vec::new();
    // Old leaves before `next` have been placed.
    let mut next = 0;
    for (i, (p, v)) in new.iter().enumerate() {
        let a = anchor[i];
        if a > next {
            out.extend((next..a).filter_map(removed));
            next = a;
        }
        match old_at.get(p.as_str()) {
            Some(&k) => {
                next = next.max(k + 1);
                let was = &old[k].1;
                if was != v {
                    out.push(Change {
                        path: p.clone(),
                        old: Some(was.clone()),
                        new: Some(v.clone()),
                    });
                }
            }
            None => out.push(Change {
                path: p.clone(),
                old: None,
                new: Some(v.clone()),
            }),
        }
    }
    out.extend((next..old.len()).filter_map(removed));
    out
}

/// `- path: old` and `+ path: new` lines.
pub fn lines(changes: &[Change]) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes {
        if let Some(o) = &c.old {
            out.push(format!("- {}: {o}", c.path));
        }
        if let Some(n) = &c.new {
            out.push(format!("+ {}: {n}", c.path));
        }
    }
    out
}
