//! Human output (aligned tables, relative times) and `-o json|yaml|wide|name`.

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use serde::Serialize;

pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    for r in rows {
        t.add_row(r);
    }
    for c in t.column_iter_mut() {
        c.set_cell_alignment(CellAlignment::Left);
        c.set_padding((0, 2));
    }
    t.to_string()
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// "3s ago", "5m ago", "2h ago", "4d ago".
pub fn ago(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let now = corral_types::model::now_ms().max(ms);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// How a command prints: `-o json|yaml|wide|name` or `--json`; a table
/// (or a description) by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Out {
    #[default]
    Human,
    /// The table with more columns (full ids, addresses).
    Wide,
    Json,
    Yaml,
    /// Only the names or ids, one per line (for scripts).
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
    Wide,
    Name,
}

/// A job file's formats (`corral job inspect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpecFormat {
    Json,
    Yaml,
}

/// The output flags every listing and action takes.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Print JSON (the same as `-o json`).
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    /// Output format: json, yaml, wide (more columns) or name (names or
    /// ids only, one per line). Times are Unix epoch milliseconds.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

impl OutputArgs {
    pub fn out(self) -> Out {
        match (self.json, self.output) {
            (true, _) | (_, Some(Format::Json)) => Out::Json,
            (_, Some(Format::Yaml)) => Out::Yaml,
            (_, Some(Format::Wide)) => Out::Wide,
            (_, Some(Format::Name)) => Out::Name,
            (false, None) => Out::Human,
        }
    }
}

impl Out {
    /// Prints `v` when the format is json or yaml, and `names()` one per
    /// line for `name`; returns whether it printed (a human format is
    /// left to the caller).
    pub fn data<T: Serialize>(
        self,
        v: &T,
        names: impl FnOnce() -> Vec<String>,
    ) -> anyhow::Result<bool> {
        match self {
            Out::Json => print_json(v)?,
            Out::Yaml => print_yaml(v)?,
            Out::Name => {
                for n in names() {
                    println!("{n}");
                }
            }
            Out::Human | Out::Wide => return Ok(false),
        }
        Ok(true)
    }

    pub fn wide(self) -> bool {
        self == Out::Wide
    }

    /// Data for scripts (json, yaml, name) rather than text for people.
    pub fn is_data(self) -> bool {
        !matches!(self, Out::Human | Out::Wide)
    }
}

pub fn print_yaml<T: Serialize>(v: &T) -> anyhow::Result<()> {
    print!("{}", to_yaml(v)?);
    Ok(())
}

pub fn to_yaml<T: Serialize>(v: &T) -> anyhow::Result<String> {
    // Through a JSON value: YAML then has exactly the JSON's fields.
    let v = serde_json::to_value(v)?;
    serde_saphyr::to_string(&v).map_err(|e| anyhow::anyhow!("cannot write YAML: {e}"))
}
