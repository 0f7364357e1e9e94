//! Shared by the root-only tests: the gate (root and tools, else SKIPPED),
//! a test directory that unmounts and detaches everything under it when
//! dropped (also when the test panics), and tree hashing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// True when the test can run: root, and every tool in `tools` installed.
/// Otherwise prints SKIPPED and returns false, or panics when
/// `CORRAL_REQUIRE_ROOT_TESTS=1` (CI on a prepared machine must not skip).
pub fn ready(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for t in tools {
        if corral_volumes::find_program(t).is_none() {
            missing.push((*t).to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: SKIPPED (needs {})", missing.join(", "));
    if std::env::var("CORRAL_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{msg} and CORRAL_REQUIRE_ROOT_TESTS=1");
    }
    eprintln!("{msg}");
    false
}

pub const BTRFS_TOOLS: &[&str] = &["mkfs.btrfs", "btrfs", "mount", "umount", "losetup"];
pub const EXT4_TOOLS: &[&str] = &[
    "mkfs.ext4",
    "e2fsck",
    "resize2fs",
    "mount",
    "umount",
    "losetup",
    "tar",
];

/// A temporary directory; on drop every mount under it is unmounted
/// (deepest first) and every loop device backed by a file in it detached.
pub struct TestDir {
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        let tmp = tempfile::Builder::new()
            .prefix("corral-vol-test-")
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().canonicalize().expect("canonical tempdir");
        TestDir { path, _tmp: tmp }
    }

    pub fn sub(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        corral_volumes::release::release_under(&self.path);
    }
}

#[allow(unused_imports)] // not every test binary counts mounts and loops
pub use corral_volumes::release::{loops_under, mounts_under};

/// Every path under `dir` (files and directories), relative, sorted.
pub fn paths_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).expect("under dir").to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// relative path -> sha256 (files) or "dir" / "link -> target".
pub fn tree_hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for rel in paths_under(dir) {
        let p = dir.join(&rel);
        let meta = fs::symlink_metadata(&p).expect("stat");
        let v = if meta.is_dir() {
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(&p).expect("readlink").display())
        } else {
            let mut f = fs::File::open(&p).expect("open");
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            format!("{:x}", h.finalize())
        };
        out.insert(rel.display().to_string(), v);
    }
    out
}

/// One MiB of incompressible bytes from `seed` (xorshift).
pub fn random_mib(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(1 << 20);
    for _ in 0..(1 << 17) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Write `mib` MiB to `path`: a random MiB stamped with seed and index, so
/// every MiB of every file differs.
pub fn write_file(path: &Path, mib: u64, seed: u64) {
    let mut block = random_mib(seed);
    let mut f = fs::File::create(path).expect("create");
    for i in 0..mib {
        block[..8].copy_from_slice(&seed.to_le_bytes());
        block[8..16].copy_from_slice(&i.to_le_bytes());
        f.write_all(&block).expect("write");
    }
    f.sync_all().expect("fsync");
}

/// Write into `dir` until the filesystem says no; returns (bytes written,
/// the error that stopped it).
pub fn fill(dir: &Path) -> (u64, std::io::Error) {
    let block = random_mib(7);
    let mut written = 0u64;
    let mut n = 0;
    loop {
        // Several files: one huge file can hit other limits first.
        let path = dir.join(format!("fill-{n}"));
        n += 1;
        let mut f = match fs::File::create(&path) {
            Ok(f) => f,
            Err(e) => return (written, e),
        };
        for _ in 0..64 {
            match f.write(&block) {
                Ok(k) => written += k as u64,
                Err(e) => return (written, e),
            }
        }
        if let Err(e) = f.sync_all() {
            return (written, e);
        }
    }
}

pub const MIB: u64 = 1 << 20;

pub fn statvfs_size(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_blocks * st.f_frsize
}
