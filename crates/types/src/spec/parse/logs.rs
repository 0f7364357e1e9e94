//! The `logs` block of a task: how much of its output its node keeps.

use crate::spec::LogPolicy;

use super::ctx::{Ctx, Field, fields, size, uint};

pub(super) const LOG_FIELDS: &[&str] = &["max_size", "max_files"];

/// A logs block; fields not given keep their defaults.
pub(super) fn logs(ctx: &mut Ctx<'_>, fl: &Field<'_>) -> LogPolicy {
    let mut p = LogPolicy::default();
    let expected = "a log rotation policy like {max_size: 10M, max_files: 5}";
    let Some(f) = fields(ctx, fl.node, &fl.path, LOG_FIELDS, expected) else {
        return p;
    };
    if let Some(x) = f.get("max_size")
        && let Some(s) = size(ctx, x.node, &x.path)
    {
        if s < LogPolicy::MIN_SIZE {
            ctx.error(
                x.node.pos,
                &x.path,
                format!(
                    "max_size must be at least {}, found {}; a log file holds whole lines",
                    LogPolicy::MIN_SIZE,
                    x.node.text
                ),
            );
        } else {
            p.max_size = s;
        }
    }
    if let Some(x) = f.get("max_files") {
        p.max_files = uint(ctx, x.node, &x.path, "max_files", 1).unwrap_or(p.max_files);
    }
    p
}

#[cfg(test)]
mod tests {
    use crate::spec::{LogPolicy, SourceFormat, parse_jobs};
    use crate::units::Bytes;

    fn task_logs(text: &str) -> Result<LogPolicy, Vec<String>> {
        parse_jobs(text, "x.yaml", SourceFormat::Yaml)
            .map(|jobs| jobs[0].groups[0].tasks[0].logs)
            .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            task_logs("image: a:1\n"),
            Ok(LogPolicy {
                max_size: Bytes(10_000_000),
                max_files: 5
            })
        );
        assert_eq!(
            task_logs("image: a:1\nlogs: {max_size: 2K, max_files: 3}\n"),
            Ok(LogPolicy {
                max_size: Bytes(2000),
                max_files: 3
            })
        );
        let full = "groups:\n  - name: g\n    tasks:\n      - name: t\n        image: a:1\n        logs: {max_files: 2}\n";
        assert_eq!(
            task_logs(full),
            Ok(LogPolicy {
                max_size: Bytes(10_000_000),
                max_files: 2
            })
        );
    }

    #[test]
    fn bad_values_are_located() {
        let errs = task_logs("image: a:1\nlogs: {max_size: 10, max_files: 0}\n").unwrap_err();
        assert_eq!(
            errs,
            vec![
                "x.yaml:2:18: logs.max_size: max_size must be at least 1K, found 10; a log file holds whole lines",
                "x.yaml:2:33: logs.max_files: max_files must be 1 or more, found 0",
            ]
        );
        let errs = task_logs("image: a:1\nlogs: 10M\n").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("a log rotation policy"), "{errs:?}");
    }

    #[test]
    fn the_default_is_not_serialized() {
        let jobs = parse_jobs("image: a:1\n", "x.yaml", SourceFormat::Yaml).unwrap();
        let json = serde_json::to_string(&jobs[0]).unwrap();
        assert!(!json.contains("max_files"), "{json}");
        let jobs = parse_jobs(
            "image: a:1\nlogs: {max_files: 2}\n",
            "x.yaml",
            SourceFormat::Yaml,
        )
        .unwrap();
        let json = serde_json::to_string(&jobs[0]).unwrap();
        assert!(json.contains("\"max_files\":2"), "{json}");
        let back: crate::spec::JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, jobs[0]);
    }
}
