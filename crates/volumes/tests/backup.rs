//! restic backups against real targets this harness starts: a directory, a
//! private OpenSSH sshd on loopback (SFTP), and moto's S3 server on loopback.
//!
//! Needs root (mount namespaces, bind mounts), `restic`, `unshare`, and for
//! SFTP `/usr/sbin/sshd` + `ssh` + `ssh-keygen`, for S3 moto installed by
//! `scripts/setup` at /opt/corral-test/moto (or `CORRAL_TEST_MOTO_SERVER`).
//! A missing piece prints SKIPPED, or fails the test when
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.
//!
//! Run: `cargo test -p corral-volumes --test backup -- --nocapture`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_volumes::VolumeRef;
use corral_volumes::backup::{
    BackupErrorKind, BackupTarget, Restic, Retention, Secret, TargetKind,
};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "test-repo-password-6f1d";
const S3_SECRET: &str = "test-s3-secret-key-93ab";
const S3_ACCESS: &str = "test-s3-access-key-77c0";

fn require() -> bool {
    std::env::var("CORRAL_REQUIRE_ROOT_TESTS").as_deref() == Ok("1")
}

/// Whether every named program runs; prints SKIPPED (or panics when
/// required) otherwise.
fn have(test: &str, what: &[&str]) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut missing: Vec<String> = Vec::new();
    if !root {
        missing.push("root".into());
    }
    for w in what {
        let found = if w.contains('/') {
            Path::new(w).exists()
        } else {
            Command::new("sh")
                .args(["-c", &format!("command -v {w}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !found {
            missing.push((*w).to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    if require() {
        panic!("{test}: missing {missing:?} and CORRAL_REQUIRE_ROOT_TESTS=1");
    }
    println!("SKIPPED {test}: missing {missing:?}");
    false
}

/// A server process killed (and reaped) when the test ends, pass or fail.
struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn wait_port(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("{} exited ({status}) before listening:\n{log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not listen on {port} within 60 s", self.name);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn restic(dir: &Path) -> Restic {
    let binary = std::env::var("CORRAL_TEST_RESTIC").unwrap_or_else(|_| "restic".into());
    Restic::new(binary, dir.join("cache"))
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough that
/// restic's compression does not flatter the numbers.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// sha256 of every regular file under `root`, by relative path; directories
/// and symlinks listed too so a missing empty dir is noticed.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &p, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&p).unwrap().display()),
                );
            } else {
                let digest = Sha256::digest(std::fs::read(&p).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                out.insert(rel, hex);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn target(name: &str, kind: TargetKind) -> BackupTarget {
    BackupTarget {
        name: name.into(),
        kind,
        password: Secret::new(PASSWORD),
    }
}

/// Assert no secret shows in an error's Display or Debug.
fn assert_no_secret(err: &dyn std::fmt::Debug, shown: &str) {
    let debug = format!("{err:?}");
    for text in [shown, debug.as_str()] {
        for s in [PASSWORD, S3_SECRET, S3_ACCESS, "wrong-password-c4e2"] {
            assert!(!text.contains(s), "secret {s} leaked: {text}");
        }
    }
}

/// The whole round for one target: two backups with known contents, each
/// restored and compared by sha256; retention; a wrong password.
fn round_trip(t: &BackupTarget, work: &Path) {
    let r = restic(work);
    let vol = VolumeRef("vol-a".into());
    let err = r.list(t, &vol).unwrap_err();
    assert!(
        matches!(err.kind, BackupErrorKind::NoRepository { .. }),
        "{err}"
    );
    assert!(r.ensure_repo(t, &vol).unwrap(), "first ensure_repo creates");
    assert!(!r.ensure_repo(t, &vol).unwrap(), "second finds it");

    let src = work.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("a.txt"), "first version\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), noise(1, 300_000)).unwrap();
    std::fs::write(src.join("sub/deeper/c.bin"), noise(2, 70_000)).unwrap();
    std::fs::write(src.join("empty"), "").unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    let want1 = tree(&src);
    let b1 = r.backup(t, &vol, &src, &["first".into()]).unwrap();
    let s1 = b1.stats.unwrap();
    assert_eq!(s1.files_new, 4, "{s1:?}");
    assert_eq!(b1.tags, ["first"]);

    std::fs::write(src.join("a.txt"), "second version, longer\n").unwrap();
    std::fs::remove_file(src.join("sub/deeper/c.bin")).unwrap();
    std::fs::write(src.join("new.bin"), noise(3, 50_000)).unwrap();
    let want2 = tree(&src);
    let b2 = r.backup(t, &vol, &src, &[]).unwrap();
    let s2 = b2.stats.unwrap();
    // The fixed path makes b1 the parent: b.bin is recognised unchanged.
    assert_eq!(
        (s2.files_new, s2.files_changed, s2.files_unmodified),
        (1, 1, 2),
        "{s2:?}"
    );
    assert!(s2.bytes_added < 120_000, "dedup failed: {s2:?}");

    let listed: Vec<String> = r.list(t, &vol).unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(listed, [b1.id.clone(), b2.id.clone()]);

    for (b, want) in [(&b1, &want1), (&b2, &want2)] {
        let dest = work.join(format!("restore-{}", &b.id[..8]));
        std::fs::create_dir(&dest).unwrap();
        r.restore(t, &vol, &b.id, &dest).unwrap();
        assert_eq!(&tree(&dest), want, "restore of {} differs", b.id);
    }
    // Short ids work too, and restore never mixes into existing files.
    let dest = work.join("restore-short");
    std::fs::create_dir(&dest).unwrap();
    r.restore(t, &vol, &b1.id[..8], &dest).unwrap();
    assert_eq!(tree(&dest), want1);
    let err = r.restore(t, &vol, &b2.id, &dest).unwrap_err();
    assert!(matches!(err.kind, BackupErrorKind::Invalid(_)), "{err}");

    // A wrong password is told apart, and shows in no message.
    let mut wrong = t.clone();
    wrong.password = Secret::new("wrong-password-c4e2");
    let err = r.list(&wrong, &vol).unwrap_err();
    assert!(
        matches!(err.kind, BackupErrorKind::WrongPassword { .. }),
        "{err}"
    );
    let shown = err.to_string();
    println!("[{}] wrong password: {shown}", t.name);
    assert!(shown.contains(&t.name) && shown.contains("vol-a") && shown.contains("list"));
    // What goes on restic's command line (visible in ps) holds no secret.
    assert_no_secret(
        t,
        &format!("{} {:?}", t.repository("vol-a"), t.restic_options()),
    );
    assert_no_secret(&err, &shown);
    assert_no_secret(t, &format!("{t:?} {t:#?}"));
    let json = serde_json::to_string(t).unwrap();
    assert_no_secret(t, &json);

    retention(t, &r, work);
}

/// Six backups at faked times, two rounds of `forget --prune`; the
/// survivors worked out by hand from restic's rules (newest first, a backup
/// is kept by a rule when it is the first seen of its day/ISO week and the
/// rule has count left; one backup can satisfy several rules).
fn retention(t: &BackupTarget, r: &Restic, work: &Path) {
    let vol = VolumeRef("vol-ret".into());
    r.ensure_repo(t, &vol).unwrap();
    let src = work.join("ret-src");
    std::fs::create_dir_all(&src).unwrap();
    // 2020-01-01 is a Wednesday (ISO week 1); 6..12 January is week 2.
    let times = [
        ("s1", "2020-01-01T10:00:00Z"),
        ("s2", "2020-01-06T10:00:00Z"),
        ("s3", "2020-01-08T09:00:00Z"),
        ("s4", "2020-01-08T18:00:00Z"),
        ("s5", "2020-01-09T10:00:00Z"),
        ("s6", "2020-01-10T08:00:00Z"),
    ];
    let mut ids = BTreeMap::new();
    let mut contents = BTreeMap::new();
    for (i, (name, at)) in times.iter().enumerate() {
        std::fs::write(
            src.join(format!("{name}.bin")),
            noise(100 + i as u64, 20_000),
        )
        .unwrap();
        let ms = parse_utc(at);
        let b = r.backup_at(t, &vol, &src, &[], Some(ms)).unwrap();
        assert_eq!(b.time, ms, "{name}: recorded time");
        ids.insert(*name, b.id);
        contents.insert(*name, tree(&src));
    }
    let id = |n: &str| ids[n].clone();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // daily 3: s6, s5, s4 (s3 is the same day as s4). weekly 2: s6 (week 2),
    // then s1 (week 1; s5..s2 are week 2 again).
    let res = r
        .forget(
            t,
            &vol,
            Retention {
                daily: Some(3),
                weekly: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        sorted(res.kept.clone()),
        sorted(vec![id("s6"), id("s5"), id("s4"), id("s1")])
    );
    assert_eq!(sorted(res.removed), sorted(vec![id("s3"), id("s2")]));

    // keep: {daily: 2, weekly: 1}: s6 takes a daily and the weekly, s5 the
    // other daily; s4 and s1 go.
    let res = r
        .forget(
            t,
            &vol,
            Retention {
                daily: Some(2),
                weekly: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(sorted(res.kept), sorted(vec![id("s6"), id("s5")]));
    assert_eq!(sorted(res.removed), sorted(vec![id("s4"), id("s1")]));
    let left: Vec<String> = r.list(t, &vol).unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(left, [id("s5"), id("s6")]);

    // Prune kept what the survivors need.
    let dest = work.join("ret-restore");
    std::fs::create_dir(&dest).unwrap();
    r.restore(t, &vol, &id("s5"), &dest).unwrap();
    assert_eq!(tree(&dest), contents["s5"]);

    let err = r.forget(t, &vol, Retention::default()).unwrap_err();
    assert!(matches!(err.kind, BackupErrorKind::Invalid(_)), "{err}");
}

fn parse_utc(s: &str) -> u64 {
    let out = Command::new("date")
        .args(["-u", "-d", s, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1000
}

#[test]
fn dir_target() {
    if !have("dir_target", &["restic", "unshare"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let t = target(
        "local",
        TargetKind::Dir {
            path: work.path().join("repos"),
        },
    );
    round_trip(&t, work.path());
    assert!(work.path().join("repos/vol-a/config").exists());
}

#[test]
fn sftp_target() {
    if !have(
        "sftp_target",
        &["restic", "unshare", "/usr/sbin/sshd", "ssh", "ssh-keygen"],
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("sshd");
    std::fs::create_dir(&dir).unwrap();
    for key in ["host_key", "client_key"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
            .arg(dir.join(key))
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let port = free_port();
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
    )
    .unwrap();
    // A private sshd: its own keys, port and config; nothing from
    // /etc/ssh and independent of any system sshd on port 22.
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
         AuthorizedKeysFile {d}/authorized_keys\nPidFile none\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         Subsystem sftp internal-sftp\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    // sshd refuses to start without its privilege separation directory,
    // which Debian makes only when its own service starts.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let log = dir.join("sshd.log");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        name: "sshd",
        log,
    };
    server.wait_port(port);

    let repos = work.path().join("sftp-repos");
    let t = target(
        "offsite",
        TargetKind::Sftp {
            user: "root".into(),
            host: "127.0.0.1".into(),
            port,
            path: repos.display().to_string(),
            identity_file: Some(dir.join("client_key")),
            known_hosts: Some(dir.join("known_hosts")),
        },
    );
    round_trip(&t, work.path());
    assert!(repos.join("vol-a/config").exists(), "written through sftp");

    // A host key that does not match known_hosts is refused, not accepted.
    std::fs::write(
        dir.join("known_hosts"),
        format!(
            "[127.0.0.1]:{port} {}\n",
            std::fs::read_to_string(dir.join("client_key.pub"))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .unwrap();
    let err = restic(work.path())
        .list(&t, &VolumeRef("vol-a".into()))
        .unwrap_err();
    println!("[offsite] host key mismatch: {err}");
    assert!(err.to_string().contains("offsite"), "{err}");
    assert_no_secret(&err, &err.to_string());
    drop(server);
}

fn moto_server() -> String {
    std::env::var("CORRAL_TEST_MOTO_SERVER")
        .unwrap_or_else(|_| "/opt/corral-test/moto/bin/moto_server".into())
}

/// `PUT /bucket` without auth: moto accepts any (or no) credentials.
fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
}

#[test]
fn s3_target() {
    let moto = moto_server();
    if !have("s3_target", &["restic", "unshare", &moto]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = work.path().join("moto.log");
    let child = Command::new(&moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = Server {
        child,
        name: "moto_server",
        log,
    };
    server.wait_port(port);
    create_bucket(port, "corral-backups");

    let t = BackupTarget {
        name: "objects".into(),
        kind: TargetKind::S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "corral-backups".into(),
            prefix: "prod".into(),
            region: Some("us-east-1".into()),
            access_key: Secret::new(S3_ACCESS),
            secret_key: Secret::new(S3_SECRET),
        },
        password: Secret::new(PASSWORD),
    };
    round_trip(&t, work.path());

    // The server gone: an error naming target, volume and operation, with
    // neither key nor password in it.
    drop(server);
    let err = restic(work.path())
        .list(&t, &VolumeRef("vol-a".into()))
        .unwrap_err();
    let shown = err.to_string();
    println!("[objects] server gone: {shown}");
    assert!(matches!(err.kind, BackupErrorKind::Failed { .. }), "{err}");
    assert!(
        shown.contains("objects") && shown.contains("vol-a"),
        "{shown}"
    );
    assert_no_secret(&err, &shown);
}

/// ~200 MiB in 50 files to a directory target: full backup, restore, then
/// an incremental backup after changing ~10 MiB. Prints the numbers.
#[test]
fn dir_target_timing() {
    if !have("dir_target_timing", &["restic", "unshare"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let r = restic(work.path());
    let t = target(
        "local",
        TargetKind::Dir {
            path: work.path().join("repos"),
        },
    );
    let vol = VolumeRef("big".into());
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    const FILE: usize = 4 << 20;
    for i in 0..50u64 {
        std::fs::write(src.join(format!("f{i:02}.bin")), noise(i, FILE)).unwrap();
    }
    let t0 = Instant::now();
    r.ensure_repo(&t, &vol).unwrap();
    let init = t0.elapsed();

    let t0 = Instant::now();
    let full = r.backup(&t, &vol, &src, &[]).unwrap();
    let full_time = t0.elapsed();

    // Change ~10 MiB: rewrite 1 MiB in the middle of 10 files.
    for i in 0..10u64 {
        let p = src.join(format!("f{:02}.bin", i * 5));
        let mut data = std::fs::read(&p).unwrap();
        data[FILE / 2..FILE / 2 + (1 << 20)].copy_from_slice(&noise(1000 + i, 1 << 20));
        std::fs::write(&p, data).unwrap();
    }
    let t0 = Instant::now();
    let inc = r.backup(&t, &vol, &src, &[]).unwrap();
    let inc_time = t0.elapsed();

    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let t0 = Instant::now();
    r.restore(&t, &vol, &inc.id, &dest).unwrap();
    let restore_time = t0.elapsed();
    assert_eq!(tree(&dest), tree(&src));

    // What the namespace itself costs: the same script around `true`.
    let t0 = Instant::now();
    let st = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "set -eu; mount -t tmpfs -o size=1m x /corral-backup; mkdir /corral-backup/v; \
             mount --bind \"$1\" /corral-backup/v; mount -o remount,bind,ro /corral-backup/v; true",
        )
        .arg("sh")
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let ns = t0.elapsed();

    let fs = full.stats.unwrap();
    let is = inc.stats.unwrap();
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    println!(
        "backup timing (dir target, 50 x 4 MiB = {:.0} MiB):\n  \
         init            {:>6} ms\n  \
         full backup     {:>6} ms  ({:.1} MiB added, {} new files)\n  \
         incremental     {:>6} ms  ({:.1} MiB added, {} changed, {} unmodified)\n  \
         restore (full)  {:>6} ms\n  \
         namespace+mount {:>6} ms",
        mib(fs.total_bytes),
        init.as_millis(),
        full_time.as_millis(),
        mib(fs.bytes_added),
        fs.files_new,
        inc_time.as_millis(),
        mib(is.bytes_added),
        is.files_changed,
        is.files_unmodified,
        restore_time.as_millis(),
        ns.as_millis(),
    );
    assert_eq!(is.files_changed, 10);
    assert_eq!(is.files_unmodified, 40);
    // Content-defined chunks: roughly the changed MiBs plus the chunks
    // around them, far from the 200 MiB a full copy would be.
    assert!(is.bytes_added < 40 << 20, "{is:?}");
}
