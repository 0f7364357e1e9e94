//! Where backups go: the targets named in the server config, and the restic
//! repository each volume gets inside one.
//!
//! # Config shape
//!
//! The server config holds one table per target under `[server.backup_targets]`;
//! the table key is the target's name (what a volume's `backup.to` says):
//!
//! ```toml
//! # A directory: local disk, or an NFS share mounted on every node.
//! [server.backup_targets.nas]
//! kind = "dir"
//! path = "/mnt/backups/corral"              # absolute
//! password_file = "/etc/corral/restic.pass" # or: password = "..."
//!
//! # SFTP through OpenSSH (`ssh -s sftp`), key authentication only.
//! [server.backup_targets.offsite]
//! kind = "sftp"
//! user = "backup"
//! host = "backup.example.com"
//! port = 22                                  # optional, default 22
//! path = "/srv/restic/corral"                # absolute, on the server
//! identity_file = "/etc/corral/backup_ed25519"      # optional
//! known_hosts = "/etc/corral/backup_known_hosts"    # optional; strict checking
//! password = "..."
//!
//! # S3-compatible object storage.
//! [server.backup_targets.s3]
//! kind = "s3"
//! endpoint = "https://s3.example.com"        # http:// or https://
//! bucket = "corral-backups"
//! prefix = "prod"                            # optional
//! region = "eu-central-1"                    # optional
//! access_key = "AKIA..."                     # or: access_key_file = "..."
//! secret_key = "..."                         # or: secret_key_file = "..."
//! password = "..."
//! ```
//!
//! Unknown keys are an error (a misspelt `identity_file` would otherwise be
//! ignored silently). `*_file` values are read when the config is loaded, with
//! one trailing newline stripped, so a missing file fails at startup rather
//! than at the first backup at night.
//!
//! Secrets (the repository password, the S3 keys) are [`Secret`]s: their
//! `Debug`, `Display` and `Serialize` print `***`, so a target can be logged
//! or shown by the API as is.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that must not reach logs, errors or the API. Only [`Secret::expose`]
/// gives the value, and only the restic runner calls it (to set a child's
/// environment and to scrub restic's stderr).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// One backup target from the server config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupTarget {
    /// The key of its `[backup_targets.NAME]` table.
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
    /// The restic repository password (the same for every volume's repository
    /// in this target).
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Dir {
        path: PathBuf,
    },
    Sftp {
        user: String,
        host: String,
        port: u16,
        path: String,
        identity_file: Option<PathBuf>,
        known_hosts: Option<PathBuf>,
    },
    S3 {
        /// `http://host:port` or `https://host`, without a path.
        endpoint: String,
        bucket: String,
        /// Key prefix inside the bucket; empty for none.
        prefix: String,
        region: Option<String>,
        access_key: Secret,
        secret_key: Secret,
    },
}

/// The `[backup_targets]` table: target names to targets, each carrying its
/// name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BackupTargets(pub BTreeMap<String, BackupTarget>);

impl BackupTargets {
    pub fn get(&self, name: &str) -> Option<&BackupTarget> {
        self.0.get(name)
    }
}

impl<'de> Deserialize<'de> for BackupTargets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, RawTarget>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, raw) in raw {
            let target =
                BackupTarget::from_raw(name.clone(), raw).map_err(serde::de::Error::custom)?;
            out.insert(name, target);
        }
        Ok(BackupTargets(out))
    }
}

impl<'de> Deserialize<'de> for BackupTarget {
    /// A lone target table (no key to take a name from): the name is empty
    /// until the caller sets it. [`BackupTargets`] sets it from the key.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTarget::deserialize(d)?;
        BackupTarget::from_raw(String::new(), raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Dir,
    Sftp,
    S3,
}

/// Flat on purpose: one struct with `deny_unknown_fields` rejects misspelt
/// keys, which `#[serde(flatten)]` and internally tagged enums cannot do.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: RawKind,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    path: Option<String>,
    user: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    identity_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    endpoint: Option<String>,
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    access_key: Option<Secret>,
    access_key_file: Option<PathBuf>,
    secret_key: Option<Secret>,
    secret_key_file: Option<PathBuf>,
}

/// Characters that break restic's repository strings or the `sftp.command`
/// restic splits on whitespace: rejected rather than escaped.
fn plain(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(format!(
            "`{field}` contains whitespace, a quote or a backslash"
        ));
    }
    Ok(())
}

fn secret_from(
    field: &str,
    inline: Option<Secret>,
    file: Option<PathBuf>,
) -> Result<Secret, String> {
    let secret = match (inline, file) {
        (Some(_), Some(_)) => return Err(format!("give `{field}` or `{field}_file`, not both")),
        (Some(s), None) => s,
        (None, Some(path)) => {
            let mut text = std::fs::read_to_string(&path)
                .map_err(|e| format!("`{field}_file` {}: {e}", path.display()))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Secret(text)
        }
        (None, None) => return Err(format!("`{field}` or `{field}_file` is required")),
    };
    if secret.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(secret)
}

fn required<T>(kind: &str, field: &str, v: Option<T>) -> Result<T, String> {
    v.ok_or_else(|| format!("a {kind} target needs `{field}`"))
}

fn absent(kind: &str, fields: &[(&str, bool)]) -> Result<(), String> {
    for (field, present) in fields {
        if *present {
            return Err(format!("`{field}` does not apply to a {kind} target"));
        }
    }
    Ok(())
}

/// Target names end up in logs, metrics labels and the API: keep them simple.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BackupTarget {
    /// The target as its config table, secrets included, for the one
    /// place it travels: from the server to the agent that runs restic,
    /// over the cluster's authenticated API. Never log or show it; reading
    /// it back (`serde_json::from_value::<BackupTarget>`) gives the target.
    pub fn to_wire(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("password".into(), self.password.expose().into());
        match &self.kind {
            TargetKind::Dir { path } => {
                m.insert("kind".into(), "dir".into());
                m.insert("path".into(), path.display().to_string().into());
            }
            TargetKind::Sftp {
                user,
                host,
                port,
                path,
                identity_file,
                known_hosts,
            } => {
                m.insert("kind".into(), "sftp".into());
                m.insert("user".into(), user.clone().into());
                m.insert("host".into(), host.clone().into());
                m.insert("port".into(), (*port).into());
                m.insert("path".into(), path.clone().into());
                if let Some(f) = identity_file {
                    m.insert("identity_file".into(), f.display().to_string().into());
                }
                if let Some(f) = known_hosts {
                    m.insert("known_hosts".into(), f.display().to_string().into());
                }
            }
            TargetKind::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                access_key,
                secret_key,
            } => {
                m.insert("kind".into(), "s3".into());
                m.insert("endpoint".into(), endpoint.clone().into());
                m.insert("bucket".into(), bucket.clone().into());
                if !prefix.is_empty() {
                    m.insert("prefix".into(), prefix.clone().into());
                }
                if let Some(r) = region {
                    m.insert("region".into(), r.clone().into());
                }
                m.insert("access_key".into(), access_key.expose().into());
                m.insert("secret_key".into(), secret_key.expose().into());
            }
        }
        serde_json::Value::Object(m)
    }

    fn from_raw(name: String, raw: RawTarget) -> Result<Self, String> {
        if !name.is_empty() && !valid_name(&name) {
            return Err(format!(
                "backup target name {name:?}: use letters, digits, '-' and '_' (at most 64)"
            ));
        }
        let ctx = |e: String| {
            if name.is_empty() {
                e
            } else {
                format!("backup target {name}: {e}")
            }
        };
        let password = secret_from("password", raw.password, raw.password_file).map_err(ctx)?;
        let kind = match raw.kind {
            RawKind::Dir => {
                absent(
                    "dir",
                    &[
                        ("user", raw.user.is_some()),
                        ("host", raw.host.is_some()),
                        ("port", raw.port.is_some()),
                        ("identity_file", raw.identity_file.is_some()),
                        ("known_hosts", raw.known_hosts.is_some()),
                        ("endpoint", raw.endpoint.is_some()),
                        ("bucket", raw.bucket.is_some()),
                        ("prefix", raw.prefix.is_some()),
                        ("region", raw.region.is_some()),
                        ("access_key", raw.access_key.is_some()),
                        ("access_key_file", raw.access_key_file.is_some()),
                        ("secret_key", raw.secret_key.is_some()),
                        ("secret_key_file", raw.secret_key_file.is_some()),
                    ],
                )
                .map_err(ctx)?;
                let path = PathBuf::from(required("dir", "path", raw.path).map_err(ctx)?);
                if !path.is_absolute() {
                    return Err(ctx("`path` must be absolute".into()));
                }
                TargetKind::Dir { path }
            }
            RawKind::Sftp => {
                absent(
                    "sftp",
                    &[
                        ("endpoint", raw.endpoint.is_some()),
                        ("bucket", raw.bucket.is_some()),
                        ("prefix", raw.prefix.is_some()),
                        ("region", raw.region.is_some()),
                        ("access_key", raw.access_key.is_some()),
                        ("access_key_file", raw.access_key_file.is_some()),
                        ("secret_key", raw.secret_key.is_some()),
                        ("secret_key_file", raw.secret_key_file.is_some()),
                    ],
                )
                .map_err(ctx)?;
                let user = required("sftp", "user", raw.user).map_err(ctx)?;
                let host = required("sftp", "host", raw.host).map_err(ctx)?;
                let path = required("sftp", "path", raw.path).map_err(ctx)?;
                plain("user", &user).map_err(ctx)?;
                plain("host", &host).map_err(ctx)?;
                plain("path", &path).map_err(ctx)?;
                if user.contains(['@', ':']) || host.contains(['@', '/']) {
                    return Err(ctx("`user` or `host` contains '@', ':' or '/'".into()));
                }
                if !path.starts_with('/') {
                    return Err(ctx("`path` must be absolute".into()));
                }
                for (field, p) in [
                    ("identity_file", &raw.identity_file),
                    ("known_hosts", &raw.known_hosts),
                ] {
                    if let Some(p) = p {
                        plain(field, &p.to_string_lossy()).map_err(ctx)?;
                        if !p.is_absolute() {
                            return Err(ctx(format!("`{field}` must be absolute")));
                        }
                    }
                }
                TargetKind::Sftp {
                    user,
                    host,
                    port: raw.port.unwrap_or(22),
                    path,
                    identity_file: raw.identity_file,
                    known_hosts: raw.known_hosts,
                }
            }
            RawKind::S3 => {
                absent(
                    "s3",
                    &[
                        ("path", raw.path.is_some()),
                        ("user", raw.user.is_some()),
                        ("host", raw.host.is_some()),
                        ("port", raw.port.is_some()),
                        ("identity_file", raw.identity_file.is_some()),
                        ("known_hosts", raw.known_hosts.is_some()),
                    ],
                )
                .map_err(ctx)?;
                let endpoint = required("s3", "endpoint", raw.endpoint).map_err(ctx)?;
                let endpoint = endpoint.trim_end_matches('/').to_string();
                let rest = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"));
                match rest {
                    Some(hostport) if !hostport.is_empty() && !hostport.contains('/') => {}
                    _ => {
                        return Err(ctx(
                            "`endpoint` must be http://host[:port] or https://host[:port]".into(),
                        ));
                    }
                }
                plain("endpoint", &endpoint).map_err(ctx)?;
                let bucket = required("s3", "bucket", raw.bucket).map_err(ctx)?;
                plain("bucket", &bucket).map_err(ctx)?;
                if bucket.contains('/') {
                    return Err(ctx("`bucket` contains '/'".into()));
                }
                let prefix = raw.prefix.unwrap_or_default().trim_matches('/').to_string();
                if !prefix.is_empty() {
                    plain("prefix", &prefix).map_err(ctx)?;
                }
                if let Some(region) = &raw.region {
                    plain("region", region).map_err(ctx)?;
                }
                let access_key =
                    secret_from("access_key", raw.access_key, raw.access_key_file).map_err(ctx)?;
                let secret_key =
                    secret_from("secret_key", raw.secret_key, raw.secret_key_file).map_err(ctx)?;
                TargetKind::S3 {
                    endpoint,
                    bucket,
                    prefix,
                    region: raw.region,
                    access_key,
                    secret_key,
                }
            }
        };
        Ok(BackupTarget {
            name,
            kind,
            password,
        })
    }

    /// The secret values of this target, for scrubbing text that leaves the
    /// runner.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out = vec![&self.password];
        if let TargetKind::S3 {
            access_key,
            secret_key,
            ..
        } = &self.kind
        {
            out.push(access_key);
            out.push(secret_key);
        }
        out
    }

    /// restic's `-r` for volume `vol` (already validated by the caller):
    /// one repository per volume, so retention, locks and deleting a volume's
    /// backups are per volume.
    pub fn repository(&self, vol: &str) -> String {
        match &self.kind {
            TargetKind::Dir { path } => path.join(vol).to_string_lossy().into_owned(),
            TargetKind::Sftp {
                user, host, path, ..
            } => {
                // IPv6 literals need brackets so restic can find the ':' before the path.
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("sftp:{user}@{host}:{}/{vol}", path.trim_end_matches('/'))
            }
            TargetKind::S3 {
                endpoint,
                bucket,
                prefix,
                ..
            } => {
                if prefix.is_empty() {
                    format!("s3:{endpoint}/{bucket}/{vol}")
                } else {
                    format!("s3:{endpoint}/{bucket}/{prefix}/{vol}")
                }
            }
        }
    }

    /// Extra `-o` options restic needs for this target. No secret is ever in
    /// here: these end up on a command line anyone on the node can read.
    pub fn restic_options(&self) -> Vec<String> {
        match &self.kind {
            TargetKind::Dir { .. } => Vec::new(),
            TargetKind::Sftp {
                user,
                host,
                port,
                identity_file,
                known_hosts,
                ..
            } => {
                // Always our own command: BatchMode so a missing key fails
                // instead of waiting for a password on a terminal nobody sees.
                let mut cmd = format!(
                    "ssh -p {port} -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=30"
                );
                if let Some(id) = identity_file {
                    cmd.push_str(&format!(" -o IdentitiesOnly=yes -i {}", id.display()));
                }
                if let Some(kh) = known_hosts {
                    cmd.push_str(&format!(
                        " -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                        kh.display()
                    ));
                }
                cmd.push_str(&format!(" {user}@{host} -s sftp"));
                vec![format!("sftp.command={cmd}")]
            }
            TargetKind::S3 { region, .. } => {
                region.iter().map(|r| format!("s3.region={r}")).collect()
            }
        }
    }

    /// Environment for the restic child (never the command line, which
    /// `ps` shows to every user).
    pub fn restic_env(&self) -> Vec<(&'static str, &str)> {
        let mut env = vec![("RESTIC_PASSWORD", self.password.expose())];
        if let TargetKind::S3 {
            access_key,
            secret_key,
            ..
        } = &self.kind
        {
            env.push(("AWS_ACCESS_KEY_ID", access_key.expose()));
            env.push(("AWS_SECRET_ACCESS_KEY", secret_key.expose()));
        }
        env
    }

    /// For a dir target: the directory, so callers can check the share is
    /// mounted before writing into the mount point.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.kind {
            TargetKind::Dir { path } => Some(path),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Config {
        backup_targets: BackupTargets,
    }

    fn parse(text: &str) -> Result<BackupTargets, String> {
        toml::from_str::<Config>(text)
            .map(|c| c.backup_targets)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn all_three_kinds_parse_and_name_their_repositories() -> Result<(), String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").map_err(|e| e.to_string())?;
        let t = parse(&format!(
            r#"
[backup_targets.nas]
kind = "dir"
path = "/mnt/backups"
password_file = "{}"

[backup_targets.offsite]
kind = "sftp"
user = "backup"
host = "::1"
port = 2222
path = "/srv/restic/"
identity_file = "/etc/corral/id"
known_hosts = "/etc/corral/kh"
password = "pw2"

[backup_targets.s3]
kind = "s3"
endpoint = "http://127.0.0.1:9000/"
bucket = "corral"
prefix = "/prod/"
region = "eu-1"
access_key = "AK"
secret_key = "SK"
password = "pw3"
"#,
            pw.display()
        ))?;
        let nas = t.get("nas").ok_or("nas")?;
        assert_eq!(nas.name, "nas");
        assert_eq!(nas.password.expose(), "from-file");
        assert_eq!(nas.repository("v1"), "/mnt/backups/v1");
        let off = t.get("offsite").ok_or("offsite")?;
        assert_eq!(off.repository("v1"), "sftp:backup@[::1]:/srv/restic/v1");
        assert_eq!(
            off.restic_options(),
            [
                "sftp.command=ssh -p 2222 -o BatchMode=yes -o ConnectTimeout=20 \
              -o ServerAliveInterval=30 -o IdentitiesOnly=yes -i /etc/corral/id \
              -o UserKnownHostsFile=/etc/corral/kh -o StrictHostKeyChecking=yes \
              backup@::1 -s sftp"
            ]
        );
        let s3 = t.get("s3").ok_or("s3")?;
        assert_eq!(
            s3.repository("v1"),
            "s3:http://127.0.0.1:9000/corral/prod/v1"
        );
        assert_eq!(s3.restic_options(), ["s3.region=eu-1"]);
        let env = s3.restic_env();
        assert!(env.contains(&("AWS_SECRET_ACCESS_KEY", "SK")));
        // What the server hands the agent reads back as the same target.
        for t in [nas, off, s3] {
            let mut back: BackupTarget =
                serde_json::from_value(t.to_wire()).map_err(|e| e.to_string())?;
            back.name = t.name.clone();
            assert_eq!(&back, t);
        }
        Ok(())
    }

    #[test]
    fn secrets_never_print() -> Result<(), String> {
        let t = parse(
            r#"
[backup_targets.s3]
kind = "s3"
endpoint = "https://s3.example.com"
bucket = "b"
access_key = "AKIDSECRETVALUE"
secret_key = "hunter2-secret-key"
password = "repo-pass-123"
"#,
        )?;
        let debug = format!("{t:?}");
        let json = serde_json::to_string(&t).map_err(|e| e.to_string())?;
        for shown in [&debug, &json] {
            for secret in ["AKIDSECRETVALUE", "hunter2-secret-key", "repo-pass-123"] {
                assert!(!shown.contains(secret), "{secret} leaked: {shown}");
            }
            assert!(shown.contains("***"));
        }
        assert!(json.contains(r#""kind":"s3""#), "{json}");
        Ok(())
    }

    #[test]
    fn mistakes_are_rejected_with_the_reason() {
        let cases = [
            (
                "kind = \"dir\"\npath = \"/x\"",
                "`password` or `password_file` is required",
            ),
            (
                "kind = \"dir\"\npath = \"rel\"\npassword = \"p\"",
                "must be absolute",
            ),
            (
                "kind = \"dir\"\npath = \"/x\"\npassword = \"p\"\nhost = \"h\"",
                "does not apply",
            ),
            (
                "kind = \"dir\"\npath = \"/x\"\npasword = \"p\"",
                "unknown field",
            ),
            (
                "kind = \"ftp\"\npath = \"/x\"\npassword = \"p\"",
                "unknown variant",
            ),
            (
                "kind = \"sftp\"\nhost = \"h\"\npath = \"/x\"\npassword = \"p\"",
                "needs `user`",
            ),
            (
                "kind = \"sftp\"\nuser = \"u\"\nhost = \"h\"\npath = \"/x y\"\npassword = \"p\"",
                "whitespace",
            ),
            (
                "kind = \"s3\"\nendpoint = \"s3.example.com\"\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\npassword = \"p\"",
                "http://",
            ),
            (
                "kind = \"s3\"\nendpoint = \"http://h\"\nbucket = \"b\"\naccess_key = \"a\"\npassword = \"p\"",
                "`secret_key` or `secret_key_file` is required",
            ),
        ];
        for (body, want) in cases {
            let text = format!("[backup_targets.t1]\n{body}\n");
            match parse(&text) {
                Ok(t) => panic!("accepted {body:?}: {t:?}"),
                Err(e) => assert!(e.contains(want), "{body:?}: {e}"),
            }
        }
        assert!(
            parse("[backup_targets.\"a b\"]\nkind = \"dir\"\npath = \"/x\"\npassword = \"p\"")
                .is_err()
        );
    }
}
