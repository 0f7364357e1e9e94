//! `corral job init`: an example job file to start from.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// The seed form: the smallest job.
pub const SHORT: &str = "\
# A job: `corral run job.yaml` starts 3 copies of the image, `corral status job` shows them.
# Every field: docs/SPEC.md, or `corral job init` without --short.
image: org/app:1.0
env: {FOO: bar}
count: 3
";

/// The full form, every block with its defaults spelled out.
pub const FULL: &str = "\
# A job in the full form. `corral plan job.yaml` shows what it would do, `corral run job.yaml` runs it.
# Every field, its default and its errors: docs/SPEC.md. Delete what you do not need: the
# values below are the defaults unless a comment says otherwise.
name: app
update:                          # how a new version rolls out (Nomad's defaults)
  max_parallel: 1                # 0: replace everything at once, without a deployment
  min_healthy_time: 10s
  healthy_deadline: 5m
  progress_deadline: 10m
  auto_revert: false             # true: a failed rollout goes back to the last good version
  canary: 0                      # new-version copies that run beside the old until `corral deploy promote`
groups:
  - name: web
    count: 2                     # copies to keep running (default 1)
    restart: {attempts: 2, interval: 30m, delay: 15s, mode: fail}    # restarts in place
    reschedule: {delay: 30s, delay_function: exponential, max_delay: 1h, unlimited: true}  # then elsewhere
    constraints:                 # where it may run (default: anywhere)
      - {attr: node.labels.zone, op: \"!=\", value: c}
    service:                     # an endpoint: http://web.localhost through the router, web.service.corral in DNS
      name: web
      port: http
      check: {type: http, path: /, interval: 5s, timeout: 1s}
    volume: {size: 1G, mount: /data, per_alloc: true}    # storage that follows each copy (docs/VOLUMES.md)
    tasks:
      - name: app
        image: org/app:1.0       # or `driver: exec` with a `command` run on the node
        env: {FOO: bar}
        ports: {http: 8080}      # the port inside; the node publishes it on a port of its range
        resources: {cpu: 250m, memory: 128M}
        kill_timeout: 5s
";

/// Write the example to `file` (`-`: standard output).
pub fn run(file: &Path, short: bool, force: bool) -> Result<()> {
    let text = if short { SHORT } else { FULL };
    if file == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(());
    }
    if file.exists() && !force {
        bail!(
            "{} exists; pick another name, or add --force to replace it",
            file.display()
        );
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
    eprintln!(
        "wrote {}; `corral plan {}` shows what it would do, `corral run {}` runs it",
        file.display(),
        file.display(),
        file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use corral_types::spec::{SourceFormat, parse_jobs};

    /// Both examples are valid jobs, as `corral run` reads them.
    #[test]
    fn the_examples_parse() {
        let short = parse_jobs(super::SHORT, "job.yaml", SourceFormat::Yaml).unwrap();
        assert_eq!(short[0].groups[0].count, 3);
        let full = parse_jobs(super::FULL, "job.yaml", SourceFormat::Yaml).unwrap();
        let g = &full[0].groups[0];
        assert_eq!((g.count, g.volumes.len(), g.services.len()), (2, 1, 1));
        assert_eq!(g.reschedule, corral_types::ReschedulePolicy::default());
    }
}
