//! The corpus of bad specs: every `tests/bad/NAME.yaml` (or `.json`) must be
//! refused with exactly the error lines in `tests/bad/NAME.err` (the Display
//! of each error, `file:line:col: path: message`, file being the bare name).
//!
//! `BLESS=1 cargo test -p corral-types --test spec_corpus` rewrites the
//! `.err` files from the current output; review the diff before keeping it.

use std::fs;
use std::path::{Path, PathBuf};

use corral_types::spec::{SourceFormat, parse_jobs};

const MIN_CASES: usize = 35;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    cases.sort();
    cases
}

/// The error lines for one case, or why there are none.
fn actual(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("read case");
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 file name");
    match parse_jobs(&text, file, SourceFormat::detect(file, &text)) {
        Ok(jobs) => format!("<parsed without errors: {} job(s)>", jobs.len()),
        Err(e) => e
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn bad_specs_give_the_expected_errors() {
    let cases = cases();
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let got = actual(case);
        let err_file = case.with_extension("err");
        if bless {
            fs::write(&err_file, format!("{got}\n")).expect("write .err");
            continue;
        }
        let want = fs::read_to_string(&err_file).unwrap_or_else(|_| "<missing .err file>".into());
        if got.trim_end() != want.trim_end() {
            failures.push(format!(
                "{}:\n  expected:\n    {}\n  got:\n    {}",
                case.display(),
                want.trim_end().replace('\n', "\n    "),
                got.replace('\n', "\n    ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad specs did not give the expected errors:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    assert!(
        cases.len() >= MIN_CASES,
        "the corpus has {} cases; keep at least {MIN_CASES}",
        cases.len()
    );
}

#[test]
fn every_err_file_has_a_spec() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let specs = cases();
    let orphans: Vec<String> = fs::read_dir(&dir)
        .expect("read tests/bad")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("err"))
        .filter(|p| !specs.iter().any(|s| s.with_extension("err") == *p))
        .map(|p| p.display().to_string())
        .collect();
    assert!(orphans.is_empty(), ".err files without a spec: {orphans:?}");
}
