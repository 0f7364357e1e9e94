//! The docs hold to the parser (issue 14, cases 8 and 10):
//!
//! - every fenced block of README.md, docs/*.md and examples/*.md has a
//!   language, and every ```yaml / ```json block is a job spec that parses,
//!   unless its info string says otherwise: `fragment=<block>` (the fields
//!   of one block, wrapped in a minimal job by [`wrap`] and parsed) or
//!   `not-a-job-spec` (anything else: a Prometheus config, ...);
//! - docs/SPEC.md documents exactly the fields the parser takes in each
//!   block ([`corral_types::spec::SPEC_BLOCKS`]), each row's example parses,
//!   and each default written as one `code` value gives the same job as
//!   leaving the field out.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use corral_types::JobSpec;
use corral_types::spec::{
    NOT_YET_FIELDS, SEED_GROUP_FIELDS, SEED_TASK_FIELDS, SPEC_BLOCKS, SourceFormat, parse_jobs,
};
use serde_json::{Map, Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md, docs/*.md and examples/*.md, as paths relative to the repo.
fn doc_files() -> Vec<String> {
    let mut out = vec!["README.md".to_owned()];
    for dir in ["docs", "examples"] {
        let mut names: Vec<String> = fs::read_dir(repo().join(dir))
            .unwrap_or_else(|e| panic!("read {dir}/: {e}"))
            .map(|entry| entry.expect("directory entry").file_name())
            .filter_map(|n| n.to_str().map(str::to_owned))
            .filter(|n| n.ends_with(".md"))
            .map(|n| format!("{dir}/{n}"))
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A fenced code block of a Markdown file.
struct Fence {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's indentation, removed from the content.
    indent: usize,
    info: String,
    body: String,
}

impl Fence {
    fn lang(&self) -> &str {
        self.info.split_whitespace().next().unwrap_or("")
    }

    fn markers(&self) -> Vec<&str> {
        self.info.split_whitespace().skip(1).collect()
    }
}

/// The fenced blocks of `text` (``` or ~~~, possibly indented in a list).
fn fences(file: &str, text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    // (line, indent, fence char, fence length, info, body)
    let mut open: Option<(usize, usize, char, usize, String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match open.as_mut() {
            None => {
                if let Some(c) = fence_char
                    && run >= 3
                {
                    let info = trimmed[run..].trim().to_owned();
                    open = Some((i + 1, indent, c, run, info, String::new()));
                }
            }
            Some((start, fence_indent, c, len, info, body)) => {
                if fence_char == Some(*c) && run >= *len && trimmed[run..].trim().is_empty() {
                    out.push(Fence {
                        line: *start,
                        indent: *fence_indent,
                        info: std::mem::take(info),
                        body: std::mem::take(body),
                    });
                    open = None;
                } else {
                    let strip = indent.min(*fence_indent);
                    body.push_str(&line[strip..]);
                    body.push('\n');
                }
            }
        }
    }
    if let Some((start, ..)) = open {
        panic!("{file}:{start}: a fenced block is never closed");
    }
    out
}

// ---------------------------------------------------------------------
// Wrapping the fields of one block into a job.

/// Parses a YAML flow value (`count: 3`, `{a: 1}`, `[x]`, `30m`).
fn yaml_value(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// `count: 3` or `{count: 3, ...}` as a mapping.
fn yaml_map(text: &str) -> Result<Map<String, Value>, String> {
    match yaml_value(text)? {
        Value::Object(m) => Ok(m),
        other => Err(format!("expected a mapping of fields, found {other}")),
    }
}

fn add(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !m.contains_key(key) {
        m.insert(key.to_owned(), value);
    }
}

const IMAGE: &str = "org/app:1.0";

/// A minimal job holding `fields` in `block`, with only what that block
/// needs around it (and in it, when not given: a check's `type`, a
/// service's `name`, ...). The job is `shop`, its group `web`, its task
/// `app` with the port `http` where a service needs one.
fn wrap(block: &str, mut f: Map<String, Value>) -> Result<Value, String> {
    let task_with_port = json!({"name": "app", "image": IMAGE, "ports": {"http": 8080}});
    let seed = |key: &str, v: Value| json!({"name": "shop", "image": IMAGE, key: v});
    let full = |group: Value| json!({"name": "shop", "groups": [group]});
    Ok(match block {
        "job" => {
            if !["groups", "image", "driver", "command"]
                .iter()
                .any(|k| f.contains_key(*k))
            {
                f.insert("image".into(), json!(IMAGE));
            }
            Value::Object(f)
        }
        "group" => {
            add(&mut f, "name", json!("web"));
            add(&mut f, "tasks", json!([task_with_port]));
            full(Value::Object(f))
        }
        "task" => {
            if !f.contains_key("image") && f.get("driver") != Some(&json!("exec")) {
                f.insert("image".into(), json!(IMAGE));
            }
            add(&mut f, "name", json!("app"));
            full(json!({"name": "web", "tasks": [Value::Object(f)]}))
        }
        "restart" | "reschedule" | "update" | "spread" | "resources" | "security" | "logs" => {
            seed(block, Value::Object(f))
        }
        "constraint" => {
            let op = f
                .get("op")
                .and_then(Value::as_str)
                .unwrap_or("=")
                .to_owned();
            if op != "distinct_hosts" {
                add(&mut f, "attr", json!("node.labels.zone"));
                if !f.contains_key("value") && !f.contains_key("values") {
                    let v = if op == "in" { json!(["a"]) } else { json!("a") };
                    f.insert(if op == "in" { "values" } else { "value" }.into(), v);
                }
            }
            seed("constraints", json!([Value::Object(f)]))
        }
        "service" => {
            add(&mut f, "name", json!("web"));
            add(&mut f, "port", json!("http"));
            full(json!({"name": "web", "service": Value::Object(f), "tasks": [task_with_port]}))
        }
        "volume" => {
            add(&mut f, "size", json!("1G"));
            seed("volume", Value::Object(f))
        }
        "backup" => {
            add(&mut f, "every", json!("24h"));
            add(&mut f, "to", json!("nas"));
            seed("volume", json!({"size": "1G", "backup": Value::Object(f)}))
        }
        "hooks" => {
            if !f.contains_key("pre_snapshot") && !f.contains_key("post_snapshot") {
                f.insert("pre_snapshot".into(), json!(["sync"]));
            }
            if f.get("task") == Some(&json!("db")) {
                f.remove("task");
            }
            seed("volume", json!({"size": "1G", "hooks": Value::Object(f)}))
        }
        "keep" => {
            if f.is_empty() {
                f.insert("last".into(), json!(7));
            }
            seed(
                "volume",
                json!({"size": "1G", "backup": {"every": "24h", "to": "nas", "keep": Value::Object(f)}}),
            )
        }
        "snapshots" => {
            add(&mut f, "every", json!("1h"));
            seed(
                "volume",
                json!({"size": "1G", "snapshots": Value::Object(f)}),
            )
        }
        "route" => {
            let mut svc = Map::new();
            if f.contains_key("port") {
                svc.insert("type".into(), json!("tcp"));
            } else if !f.contains_key("hosts") && !f.contains_key("paths") {
                add(&mut f, "paths", json!(["/api"]));
            }
            svc.insert("name".into(), json!("web"));
            svc.insert("port".into(), json!("http"));
            svc.insert("route".into(), Value::Object(f));
            full(json!({"name": "web", "service": Value::Object(svc), "tasks": [task_with_port]}))
        }
        "check" | "check_restart" => {
            let check = if block == "check" {
                f
            } else {
                add(&mut f, "limit", json!(3));
                let mut c = Map::new();
                c.insert("check_restart".into(), Value::Object(f));
                c
            };
            let mut check = check;
            add(&mut check, "type", json!("http"));
            if check.get("type") == Some(&json!("http")) {
                add(&mut check, "path", json!("/healthz"));
            }
            let service = json!({"name": "web", "port": "http", "check": Value::Object(check)});
            full(json!({"name": "web", "service": service, "tasks": [task_with_port]}))
        }
        other => return Err(format!("no block `{other}` to wrap fields in")),
    })
}

/// Parses a wrapped job; `Err` holds the parser's error lines.
fn parse_wrapped(job: &Value) -> Result<Vec<JobSpec>, String> {
    let text = serde_json::to_string_pretty(job).expect("serialize");
    parse_jobs(&text, "shop.json", SourceFormat::Json)
        .map_err(|e| format!("{e}\n    (the job tested:\n{text})"))
}

// ---------------------------------------------------------------------
// Case 8: every snippet of the docs.

/// Why a snippet of a doc does not parse, `None` when it does (or is not
/// a job spec, as its info string says).
fn check_snippet(file: &str, f: &Fence) -> Option<String> {
    let lang = f.lang();
    if lang.is_empty() {
        return Some(format!(
            "{file}:{}: a fenced block without a language; write ```yaml for a job spec, ```text for output, ```toml, ```sh, ...",
            f.line
        ));
    }
    let format = match lang {
        "yaml" | "yml" => SourceFormat::Yaml,
        "json" => SourceFormat::Json,
        _ => return None,
    };
    let markers = f.markers();
    match markers.first().copied() {
        None => {
            let name = if format == SourceFormat::Json {
                "snippet.json"
            } else {
                "snippet.yaml"
            };
            let errors = parse_jobs(&f.body, name, format).err()?;
            // The block's lines are the file's, from the line after the fence.
            let lines: Vec<String> = errors
                .errors
                .iter()
                .map(|e| {
                    let at = if e.line == 0 {
                        f.line
                    } else {
                        f.line + e.line as usize
                    };
                    let path = if e.path.is_empty() {
                        String::new()
                    } else {
                        format!("{}: ", e.path)
                    };
                    format!(
                        "  {file}:{at}:{}: {path}{}",
                        e.column as usize + f.indent,
                        e.message
                    )
                })
                .collect();
            Some(format!(
                "{file}:{}: this ```{lang} block is not a job spec the parser takes (mark it ```{lang} not-a-job-spec if it is not meant to be one):\n{}",
                f.line,
                lines.join("\n")
            ))
        }
        Some("not-a-job-spec") => None,
        Some(m) if m.starts_with("fragment=") => {
            let block = &m["fragment=".len()..];
            let result = yaml_map(&f.body)
                .and_then(|fields| wrap(block, fields))
                .and_then(|job| parse_wrapped(&job));
            result.err().map(|e| {
                format!(
                    "{file}:{}: this ```{lang} fragment={block} block, wrapped in a job, does not parse:\n{e}",
                    f.line
                )
            })
        }
        Some(m) => Some(format!(
            "{file}:{}: unknown marker `{m}` on a ```{lang} block; use none (a job spec), `fragment=<block>` or `not-a-job-spec`",
            f.line
        )),
    }
}

#[test]
fn every_job_spec_in_the_docs_parses() {
    let mut failures = Vec::new();
    let mut specs = 0;
    for file in doc_files() {
        let text = read(&file);
        for f in fences(&file, &text) {
            if matches!(f.lang(), "yaml" | "yml" | "json") && f.markers().is_empty() {
                specs += 1;
            }
            failures.extend(check_snippet(&file, &f));
        }
    }
    assert!(
        failures.is_empty(),
        "{} block(s) of the docs:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // README (2), CHECKS (1), SPEC (2) at least: a scan that finds fewer
    // is broken.
    assert!(specs >= 5, "only {specs} job specs found in the docs");
}

#[test]
fn the_snippet_check_catches_what_it_should() {
    let doc = "# t\n\n```yaml\nimage: org/app:1.0\ncout: 3\n```\n\n```\nbare\n```\n\n```yaml fragment=service\nname: web\nport: http\n```\n\n```yaml fragment=service\nname: web\nprot: http\n```\n\n```yaml prometheus\nscrape_configs: []\n```\n\n```yaml not-a-job-spec\nscrape_configs: []\n```\n\n- in a list:\n\n  ```yaml\n  image: org/app:1.0\n  count: 2\n  ```\n";
    let got: Vec<String> = fences("t.md", doc)
        .iter()
        .filter_map(|f| check_snippet("t.md", f))
        .collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(
        got[0].starts_with("t.md:3: this ```yaml block is not a job spec")
            && got[0].contains("t.md:5:1: cout: unknown field `cout`; did you mean `count`?"),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("t.md:8: a fenced block without a language"));
    assert!(
        got[2].starts_with("t.md:17: this ```yaml fragment=service block")
            && got[2].contains("unknown field `prot`"),
        "{}",
        got[2]
    );
    assert!(
        got[3].starts_with("t.md:22: unknown marker `prometheus`"),
        "{}",
        got[3]
    );
}

// ---------------------------------------------------------------------
// Case 10: docs/SPEC.md against the parser.

/// The cells of a Markdown table row; `|` inside a code span or escaped
/// does not split.
fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_code = false;
    let mut chars = row.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '`' => {
                in_code = !in_code;
                cur.push(c);
            }
            '|' if !in_code => out.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_owned());
    out
}

/// The content of a cell that is exactly one code span.
fn code(cell: &str) -> Option<&str> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!inner.contains('`')).then_some(inner)
}

/// One documented field.
struct Row {
    line: usize,
    field: String,
    seed: Option<String>,
    kind: String,
    default: String,
    example: String,
    meaning: String,
}

/// The tables of SPEC.md by block, from `<!-- spec-block: NAME -->`.
fn spec_tables(text: &str) -> Vec<(String, usize, Vec<Row>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.trim().strip_prefix("<!-- spec-block:") else {
            continue;
        };
        let block = rest
            .strip_suffix("-->")
            .unwrap_or_else(|| panic!("docs/SPEC.md:{}: unclosed marker", i + 1))
            .trim()
            .to_owned();
        let start = (i + 1..lines.len())
            .find(|&j| !lines[j].trim().is_empty())
            .filter(|&j| lines[j].trim_start().starts_with('|'))
            .unwrap_or_else(|| panic!("docs/SPEC.md:{}: no table after the marker", i + 1));
        let header: Vec<String> = cells(lines[start])
            .iter()
            .map(|c| c.to_lowercase())
            .collect();
        let col = |name: &str| header.iter().position(|h| h == name);
        let need = |name: &str| {
            col(name).unwrap_or_else(|| {
                panic!(
                    "docs/SPEC.md:{}: the table has no `{name}` column",
                    start + 1
                )
            })
        };
        let (field, kind, default, example, meaning) = (
            need("field"),
            need("type"),
            need("default"),
            need("example"),
            need("meaning"),
        );
        let seed = col("seed");
        let mut rows = Vec::new();
        for (j, row) in lines
            .iter()
            .enumerate()
            .skip(start + 2)
            .take_while(|(_, r)| r.trim_start().starts_with('|'))
        {
            let c = cells(row);
            assert_eq!(
                c.len(),
                header.len(),
                "docs/SPEC.md:{}: {} cells, the header has {}",
                j + 1,
                c.len(),
                header.len()
            );
            let name = code(&c[field]).unwrap_or_else(|| {
                panic!(
                    "docs/SPEC.md:{}: the field must be one `code` span, found {:?}",
                    j + 1,
                    c[field]
                )
            });
            rows.push(Row {
                line: j + 1,
                field: name.to_owned(),
                seed: seed.map(|s| c[s].clone()),
                kind: c[kind].clone(),
                default: c[default].clone(),
                example: c[example].clone(),
                meaning: c[meaning].clone(),
            });
        }
        out.push((block, i + 1, rows));
    }
    out
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    items.into_iter().collect()
}

#[test]
fn spec_md_lists_every_field_the_parser_takes_and_no_other() {
    let text = read("docs/SPEC.md");
    let tables = spec_tables(&text);
    let mut failures = Vec::new();
    let documented: Vec<&str> = tables.iter().map(|(b, _, _)| b.as_str()).collect();
    let known: Vec<&str> = SPEC_BLOCKS.iter().map(|b| b.name).collect();
    assert_eq!(
        documented, known,
        "docs/SPEC.md must have one `<!-- spec-block: NAME -->` table per block of the parser, in this order"
    );
    for (block, line, rows) in &tables {
        let parser = SPEC_BLOCKS
            .iter()
            .find(|b| b.name == block)
            .expect("known block");
        let mut seen = BTreeSet::new();
        for r in rows {
            if !seen.insert(r.field.as_str()) {
                failures.push(format!(
                    "docs/SPEC.md:{}: `{}` is listed twice in {block}",
                    r.line, r.field
                ));
            }
            if NOT_YET_FIELDS.contains(&r.field.as_str()) {
                failures.push(format!(
                    "docs/SPEC.md:{}: `{}` is not supported yet by the parser",
                    r.line, r.field
                ));
            }
        }
        let expected: BTreeSet<&str> = if block == "job" {
            // The seed form's group and task fields are marked in those
            // tables.
            set(parser.fields.iter().copied())
                .difference(&set(SEED_GROUP_FIELDS
                    .iter()
                    .chain(SEED_TASK_FIELDS)
                    .copied()))
                .copied()
                .collect()
        } else {
            set(parser.fields.iter().copied())
        };
        for missing in expected.difference(&seen) {
            failures.push(format!(
                "docs/SPEC.md:{line}: the parser takes `{missing}` in {block}, and the table does not list it"
            ));
        }
        for extra in seen.difference(&expected) {
            failures.push(format!(
                "docs/SPEC.md:{line}: the table of {block} lists `{extra}`, which the parser does not take there"
            ));
        }
        let seed_fields = match block.as_str() {
            "group" => Some(SEED_GROUP_FIELDS),
            "task" => Some(SEED_TASK_FIELDS),
            _ => None,
        };
        if let Some(seed_fields) = seed_fields {
            let marked: BTreeSet<&str> = rows
                .iter()
                .filter(|r| r.seed.as_deref().is_some_and(|s| s.starts_with("yes")))
                .map(|r| r.field.as_str())
                .collect();
            assert!(
                rows.iter().all(|r| r.seed.is_some()),
                "docs/SPEC.md:{line}: the {block} table needs a `seed` column"
            );
            if marked != set(seed_fields.iter().copied()) {
                failures.push(format!(
                    "docs/SPEC.md:{line}: the {block} fields marked `seed: yes` are {marked:?}; the seed form takes {seed_fields:?} at the top"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spec_md_examples_parse_and_defaults_are_the_parsers() {
    let text = read("docs/SPEC.md");
    let mut failures = Vec::new();
    let mut checked_defaults = 0;
    for (block, _, rows) in spec_tables(&text) {
        let base = wrap(&block, Map::new()).and_then(|job| parse_wrapped(&job));
        for r in &rows {
            let at = format!("docs/SPEC.md:{}: {block}.{}", r.line, r.field);
            for (what, cell) in [
                ("type", &r.kind),
                ("default", &r.default),
                ("meaning", &r.meaning),
            ] {
                if cell.is_empty() {
                    failures.push(format!("{at}: no {what}"));
                }
            }
            // The example: one code span holding the field (and what it
            // needs beside it) as YAML.
            let Some(example) = code(&r.example) else {
                failures.push(format!(
                    "{at}: the example must be one `code` span, found {:?}",
                    r.example
                ));
                continue;
            };
            match yaml_map(example) {
                Ok(fields) if !fields.contains_key(&r.field) => failures.push(format!(
                    "{at}: the example `{example}` does not set `{}`",
                    r.field
                )),
                Ok(fields) => {
                    if let Err(e) = wrap(&block, fields).and_then(|job| parse_wrapped(&job)) {
                        failures.push(format!(
                            "{at}: the example `{example}` does not parse:\n{e}"
                        ));
                    }
                }
                Err(e) => failures.push(format!("{at}: the example `{example}` is not YAML: {e}")),
            }
            // A default written as one code span is a value: writing it
            // must give the job that leaving the field out gives.
            let Some(default) = code(&r.default) else {
                continue;
            };
            checked_defaults += 1;
            let written = yaml_value(default).and_then(|v| {
                let mut fields = Map::new();
                fields.insert(r.field.clone(), v);
                wrap(&block, fields).and_then(|job| parse_wrapped(&job))
            });
            match (&base, written) {
                (Ok(base), Ok(written)) if *base == written => {}
                (Ok(_), Ok(_)) => failures.push(format!(
                    "{at}: the documented default `{default}` is not the parser's: writing it changes the job"
                )),
                (Err(e), _) => failures.push(format!("{at}: the block's minimal job does not parse: {e}")),
                (_, Err(e)) => failures.push(format!(
                    "{at}: the documented default `{default}` does not parse when written:\n{e}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        checked_defaults >= 30,
        "only {checked_defaults} defaults checked"
    );
}

#[test]
fn a_wrong_default_is_caught() {
    // The check of the test itself: a default that is not the parser's
    // gives another job.
    let base = parse_wrapped(&wrap("update", Map::new()).expect("wrap")).expect("parses");
    let wrong =
        parse_wrapped(&wrap("update", yaml_map("max_parallel: 2").expect("yaml")).expect("wrap"))
            .expect("parses");
    assert_ne!(base, wrong);
    let same =
        parse_wrapped(&wrap("update", yaml_map("max_parallel: 1").expect("yaml")).expect("wrap"))
            .expect("parses");
    assert_eq!(base, same);
}
