//! Volume benchmark (issue 16): create, snapshot, move and back up a btrfs
//! image volume, each against a baseline or peer measured in the same run
//! (BENCHMARKS.md, "Volumes").
//!
//! ```text
//! sudo cargo run --release -p corral-volumes --example bench -- \
//!     [--size 1G] [--data 800M] [--change 50M] [--file 4MiB] [--dir DIR] [--json]
//! ```
//!
//! Two provider directories stand for two nodes ("node A", "node B") on
//! this machine's disk. A volume of `--size` is made on A and filled with
//! `--data` of incompressible files; then, each with its peer:
//!
//! - create + mount of the volume, against an ext4 image volume of the same size;
//! - a read-only snapshot (median of 5), against `cp -a --reflink=always`
//!   of the data inside the same btrfs filesystem, then `sync -f` (a btrfs
//!   snapshot is committed when the command returns);
//! - the move: a full export → import A → B while the task would still run,
//!   then `--change` of files rewritten on A and the incremental export →
//!   import (snapshot, send, receive, mount on B): the downtime. Against the
//!   naive move, stop then copy everything: `cp -a` of A's data to a fresh
//!   directory on B's side, and a full send/receive after the change;
//! - restic backups of the two read-only snapshots to a directory target
//!   (full, then incremental) against `tar -c` of the same snapshot into a
//!   file on the same disk (and GNU tar's own incremental), restic restore
//!   against `tar -x`.
//!
//! Every timed step ends with `sync` (writes are on disk, as a move or a
//! backup must be), and an untimed `sync` comes before each. Everything is
//! made under one temporary directory, unmounted and removed at the end,
//! also on an error or a panic (the `Scratch` guard).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use corral_types::units::{Bytes, parse_size};
use corral_volumes::backup::{BackupStats, BackupTarget, Restic, Secret, TargetKind};
use corral_volumes::{BtrfsImage, Ext4Image, VolumeProvider, VolumeRef};
use serde::Serialize;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const MIB: u64 = 1 << 20;
const USAGE: &str = "usage: bench [--size 1G] [--data 800M] [--change 50M] [--file 4MiB] [--dir DIR] [--json]
  --size    size of the btrfs image volume (default 1G; sizes as in job specs: 1G = 10^9 bytes, 1GiB = 2^30)
  --data    incompressible data written into it (default 800M)
  --change  data rewritten on node A between the full and the incremental copy (default 50M)
  --file    size of each data file (default 4MiB)
  --dir     where the scratch directory goes (default: $TMPDIR or /tmp); it needs ~8x --data free
  --json    print the results as JSON instead of a markdown table
Needs root: it loop-mounts images and runs restic in a mount namespace.";

/// Programs the run needs, checked up front.
const TOOLS: &[&str] = &[
    "mkfs.btrfs",
    "mkfs.ext4",
    "btrfs",
    "mount",
    "umount",
    "losetup",
    "unshare",
    "cp",
    "tar",
];

struct Args {
    size: Bytes,
    data: u64,
    change: u64,
    file: u64,
    dir: Option<PathBuf>,
    json: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        size: Bytes(1_000_000_000),
        data: 800_000_000,
        change: 50_000_000,
        file: 4 * MIB,
        dir: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--size" => a.size = parse_size(&value("--size")?)?,
            "--data" => a.data = parse_size(&value("--data")?)?.0,
            "--change" => a.change = parse_size(&value("--change")?)?.0,
            "--file" => a.file = parse_size(&value("--file")?)?.0,
            "--dir" => a.dir = Some(PathBuf::from(value("--dir")?)),
            "--json" => a.json = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.file == 0 || a.data == 0 {
        return Err("--data and --file must be more than 0".into());
    }
    if a.change > a.data {
        return Err("--change cannot exceed --data".into());
    }
    // btrfs takes metadata (DUP) and system chunks out of the image.
    if a.data > a.size.0 / 100 * 90 {
        return Err(format!(
            "--data {} does not fit a {} volume with room for btrfs metadata (at most 90%)",
            Bytes(a.data),
            a.size
        ));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bench: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "bench: must run as root: it creates loop-mounted btrfs and ext4 images and runs \
             restic in a private mount namespace.\nRun it as root, e.g. \
             `sudo -E cargo run --release -p corral-volumes --example bench -- ...` or \
             `sudo scripts/bench volumes`."
        );
        return ExitCode::from(2);
    }
    let restic = std::env::var("CORRAL_BENCH_RESTIC").unwrap_or_else(|_| "restic".into());
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .chain([restic.as_str()])
        .filter(|t| corral_volumes::find_program(t).is_none() && !Path::new(t).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!("bench: missing programs: {}", missing.join(", "));
        return ExitCode::from(2);
    }
    let scratch = match Scratch::new(args.dir.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: cannot make a scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&args, &scratch.path, &restic);
    // Unmount, detach and remove before printing, so a failed cleanup shows.
    drop(scratch);
    match result {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.markdown());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The temporary directory everything goes in. Dropped (also on a panic):
/// every mount under it is unmounted, deepest first, every loop device
/// backed by a file in it is detached, then it is removed.
struct Scratch {
    path: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Scratch {
    fn new(dir: Option<&Path>) -> Res<Scratch> {
        let mut b = tempfile::Builder::new();
        b.prefix("corral-vol-bench-");
        let tmp = match dir {
            Some(d) => b.tempdir_in(d)?,
            None => b.tempdir()?,
        };
        let path = tmp.path().canonicalize()?;
        Ok(Scratch {
            path,
            tmp: Some(tmp),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        corral_volumes::release::release_under(&self.path);
        if let Some(tmp) = self.tmp.take() {
            let path = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                eprintln!("bench: cleanup: cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Run a command to success, with its stderr in the error.
fn sh(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Res<()> {
    let out = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .output()?;
    if !out.status.success() {
        let line: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        return Err(format!(
            "{program} {} failed ({}): {}",
            line.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Time `f` followed by a `sync`, after an untimed `sync` (so it pays
/// neither for earlier writes nor leaves its own in the page cache).
fn timed<T>(f: impl FnOnce() -> Res<T>) -> Res<(f64, T)> {
    rustix::fs::sync();
    let t0 = Instant::now();
    let v = f()?;
    rustix::fs::sync();
    Ok((t0.elapsed().as_secs_f64(), v))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Incompressible bytes (xorshift64*, 8 bytes a step): ~GB/s, far above
/// the disk, where /dev/urandom would be the bottleneck.
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// The data set: `count` files of `file` bytes (the last one shorter),
/// 32 to a directory.
struct DataSet {
    file: u64,
    total: u64,
}

impl DataSet {
    fn count(&self) -> u64 {
        self.total.div_ceil(self.file)
    }
    fn rel(&self, i: u64) -> PathBuf {
        PathBuf::from(format!("d{:03}/f{i:05}", i / 32))
    }
    fn len(&self, i: u64) -> u64 {
        (self.total - i * self.file).min(self.file)
    }

    fn write_all(&self, root: &Path) -> Res<()> {
        let mut buf = vec![0u8; usize::try_from(self.file)?];
        for i in 0..self.count() {
            let path = root.join(self.rel(i));
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let len = usize::try_from(self.len(i))?;
            fill_random(&mut buf[..len], i + 1);
            fs::write(&path, &buf[..len])?;
        }
        Ok(())
    }

    /// Overwrite `bytes` worth of files spread over the set with new
    /// content (in place, same sizes): the task's writes before it stops.
    fn change(&self, root: &Path, bytes: u64, round: u64) -> Res<u64> {
        let n = self.count();
        let k = bytes.div_ceil(self.file).clamp(1, n);
        let mut buf = vec![0u8; usize::try_from(self.file)?];
        let mut left = bytes;
        let mut changed = 0;
        for j in 0..k {
            let i = j * n / k;
            let len = self.len(i).min(left);
            let l = usize::try_from(len)?;
            fill_random(&mut buf[..l], (round << 32) + i + 1);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .open(root.join(self.rel(i)))?;
            f.write_all(&buf[..l])?;
            left -= len;
            changed += len;
        }
        Ok(changed)
    }

    /// Same files with the same sizes under `a` and `b` (a cheap check that
    /// a copy is complete; the provider tests compare contents).
    fn check_copy(&self, what: &str, a: &Path, b: &Path) -> Res<()> {
        for i in 0..self.count() {
            let rel = self.rel(i);
            let la = fs::metadata(a.join(&rel))?.len();
            let lb = fs::metadata(b.join(&rel))
                .map_err(|e| format!("{what}: {}: {e}", rel.display()))?
                .len();
            if la != lb {
                return Err(format!("{what}: {} is {lb} bytes, not {la}", rel.display()).into());
            }
        }
        // And the last changed file's bytes, which only a complete
        // incremental carries.
        let rel = self.rel(0);
        if fs::read(a.join(&rel))? != fs::read(b.join(&rel))? {
            return Err(format!("{what}: {} differs", rel.display()).into());
        }
        Ok(())
    }
}

/// Counts what passes through (the size of a send stream).
struct Counting<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Stream snapshot `snap` of `vol` on `a` (against `base`) into `b`
/// (the same volume name: a move), mount it there. Returns the stream's
/// size.
fn send(
    a: &BtrfsImage,
    b: &BtrfsImage,
    vol: &VolumeRef,
    snap: &str,
    base: Option<&str>,
    size: Bytes,
) -> Res<u64> {
    let mut ex = a.export(vol, snap, base)?;
    let mut counting = Counting {
        inner: &mut ex,
        n: 0,
    };
    b.import(vol, snap, size, &mut counting)?;
    let n = counting.n;
    ex.finish()?;
    b.mount(vol)?;
    Ok(n)
}

#[derive(Serialize)]
struct Row {
    what: String,
    secs: f64,
    peer: String,
    peer_secs: f64,
    /// secs / peer_secs: under 1 is faster than the peer.
    ratio: f64,
}

#[derive(Serialize)]
struct Report {
    size_bytes: u64,
    data_bytes: u64,
    change_bytes: u64,
    files: u64,
    file_bytes: u64,
    scratch_fs: String,
    write_data_secs: f64,
    snapshot_secs_each: Vec<f64>,
    reflink_secs_each: Vec<f64>,
    full_stream_bytes: u64,
    incremental_stream_bytes: u64,
    restic_full: Option<BackupStats>,
    restic_incremental: Option<BackupStats>,
    tar_incremental_bytes: u64,
    rows: Vec<Row>,
}

impl Report {
    fn row(&mut self, what: &str, secs: f64, peer: &str, peer_secs: f64) {
        self.rows.push(Row {
            what: what.into(),
            secs,
            peer: peer.into(),
            peer_secs,
            ratio: secs / peer_secs,
        });
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "corral-volumes bench: btrfs image volume of {}, {} of data in {} files of {}, {} changed; scratch on {}",
            Bytes(self.size_bytes),
            Bytes(self.data_bytes),
            self.files,
            Bytes(self.file_bytes),
            Bytes(self.change_bytes),
            self.scratch_fs,
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| measured | s | baseline / peer (same run) | s | ratio |"
        );
        let _ = writeln!(s, "|---|---:|---|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {:.3} | {} | {:.3} | {:.2}x |",
                r.what, r.secs, r.peer, r.peer_secs, r.ratio
            );
        }
        let _ = writeln!(s);
        let each = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{:.3}", x))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            "writing the data: {:.2} s ({:.0} MB/s); snapshots {} s; reflink copies {} s",
            self.write_data_secs,
            self.data_bytes as f64 / 1e6 / self.write_data_secs,
            each(&self.snapshot_secs_each),
            each(&self.reflink_secs_each),
        );
        let _ = writeln!(
            s,
            "send streams: full {}, incremental {}; tar incremental archive {}",
            Bytes(self.full_stream_bytes),
            Bytes(self.incremental_stream_bytes),
            Bytes(self.tar_incremental_bytes),
        );
        for (what, st) in [
            ("full", self.restic_full),
            ("incremental", self.restic_incremental),
        ] {
            if let Some(st) = st {
                let _ = writeln!(
                    s,
                    "restic {what}: added {}, files new/changed/unmodified {}/{}/{}",
                    Bytes(st.bytes_added),
                    st.files_new,
                    st.files_changed,
                    st.files_unmodified,
                );
            }
        }
        s
    }
}

fn fs_type(path: &Path) -> String {
    Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE", "-T"])
        .arg(path)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

fn run(args: &Args, root: &Path, restic_bin: &str) -> Res<Report> {
    let set = DataSet {
        file: args.file,
        total: args.data,
    };
    let size = args.size;
    let a = BtrfsImage::new(root.join("node-a"));
    let b = BtrfsImage::new(root.join("node-b"));
    let host_b = root.join("node-b-host");
    fs::create_dir_all(&host_b)?;
    let v = VolumeRef("bench-0".into());
    let mut rep = Report {
        size_bytes: size.0,
        data_bytes: args.data,
        change_bytes: args.change,
        files: set.count(),
        file_bytes: args.file,
        scratch_fs: fs_type(root),
        write_data_secs: 0.0,
        snapshot_secs_each: Vec::new(),
        reflink_secs_each: Vec::new(),
        full_stream_bytes: 0,
        incremental_stream_bytes: 0,
        restic_full: None,
        restic_incremental: None,
        tar_incremental_bytes: 0,
        rows: Vec::new(),
    };

    // 1. create + mount, against an ext4 image volume of the same size.
    log("create + mount");
    let (create_s, data) = timed(|| {
        a.create(&v, size)?;
        Ok(a.mount(&v)?)
    })?;
    let e = Ext4Image::new(root.join("node-a-ext4"));
    let (ext4_s, _) = timed(|| {
        e.create(&v, size)?;
        Ok(e.mount(&v)?)
    })?;
    e.delete(&v)?;
    rep.row(
        "create + mount (btrfs image)",
        create_s,
        "create + mount, ext4 image of the same size",
        ext4_s,
    );

    log(&format!(
        "writing {} into node A's volume",
        Bytes(args.data)
    ));
    let (w, ()) = timed(|| set.write_all(&data))?;
    rep.write_data_secs = w;

    // 2. snapshot, median of 5, alternating with the reflink copy.
    log("snapshots");
    let fs_root = data
        .parent()
        .ok_or("the data directory has no parent")?
        .to_path_buf();
    for i in 0..5 {
        let name = format!("bench-{i}");
        let (s, _) = timed(|| Ok(a.snapshot(&v, &name)?))?;
        rep.snapshot_secs_each.push(s);
        a.delete_snapshot(&v, &name)?;
        let copy = fs_root.join(format!("reflink-{i}"));
        let (r, ()) = timed(|| {
            sh("cp", &[&"-a", &"--reflink=always", &data, &copy])?;
            sh("sync", &[&"-f", &copy])
        })?;
        rep.reflink_secs_each.push(r);
        fs::remove_dir_all(&copy)?;
    }
    rep.row(
        "read-only snapshot (median of 5)",
        median(rep.snapshot_secs_each.clone()),
        "`cp -a --reflink=always` of the data in the same btrfs (median of 5)",
        median(rep.reflink_secs_each.clone()),
    );

    // 3. the move, part one: the full copy while the task still runs.
    log("full export -> import A -> B");
    let (full_s, n) = timed(|| {
        a.snapshot(&v, "s1")?;
        send(&a, &b, &v, "s1", None, size)
    })?;
    rep.full_stream_bytes = n;
    set.check_copy("full copy", &data, &b.data_dir(&v))?;

    // 4. backups of s1, before the change (an incremental tar compares
    // mtimes with the time its level 0 ran, so level 0 must come first).
    log("restic and tar, full");
    let restic = Restic::new(restic_bin, root.join("restic-cache"));
    let target = BackupTarget {
        name: "bench".into(),
        kind: TargetKind::Dir {
            path: root.join("backups"),
        },
        password: Secret::new("corral-volume-bench"),
    };
    restic.ensure_repo(&target, &v)?;
    let s1 = a.snapshot_dir(&v, "s1")?;
    let (rfull_s, info) = timed(|| Ok(restic.backup(&target, &v, &s1, &[])?))?;
    rep.restic_full = info.stats;
    let tars = root.join("tar");
    fs::create_dir_all(&tars)?;
    let snar = tars.join("level0.snar");
    // The btrfs snapshots keep inode numbers but not the device, hence
    // --no-check-device for GNU tar's incremental.
    let (tfull_s, ()) = timed(|| {
        sh(
            "tar",
            &[
                &"-c",
                &"-f",
                &tars.join("s1.tar"),
                &"--listed-incremental",
                &snar,
                &"--no-check-device",
                &"-C",
                &s1,
                &".",
            ],
        )
    })?;

    // 5. the task writes, then stops: the move's second part.
    log(&format!("changing {} on A", Bytes(args.change)));
    set.change(&data, args.change, 1)?;
    rustix::fs::sync();

    log("incremental export -> import A -> B (the downtime)");
    let (down_s, n) = timed(|| {
        a.snapshot(&v, "s2")?;
        send(&a, &b, &v, "s2", Some("s1"), size)
    })?;
    rep.incremental_stream_bytes = n;
    set.check_copy("incremental copy", &data, &b.data_dir(&v))?;

    log("naive move: cp -a of everything");
    let naive = host_b.join("naive-copy");
    let (cp_s, ()) = timed(|| sh("cp", &[&"-a", &data, &naive]))?;
    set.check_copy("cp -a", &data, &naive)?;
    fs::remove_dir_all(&naive)?;

    log("naive move: cp -a into a fresh btrfs image volume on B");
    let b2 = BtrfsImage::new(root.join("node-b2"));
    b2.create(&v, size)?;
    let b2_data = b2.mount(&v)?;
    let b2_copy = b2_data.join("copy");
    let (cp_btrfs_s, ()) = timed(|| sh("cp", &[&"-a", &data, &b2_copy]))?;
    set.check_copy("cp -a into btrfs", &data, &b2_copy)?;
    b2.delete(&v)?;

    log("naive move: full send/receive after the change");
    let b3 = BtrfsImage::new(root.join("node-b3"));
    b3.create(&v, size)?;
    b3.mount(&v)?;
    let (full2_s, _) = timed(|| send(&a, &b3, &v, "s2", None, size))?;
    set.check_copy("full send/receive", &data, &b3.data_dir(&v))?;
    b3.delete(&v)?;

    rep.row(
        "full export → import A→B (task still running on A)",
        full_s,
        "`cp -a` of the data to a fresh directory on B's disk",
        cp_s,
    );
    rep.row(
        "full export → import A→B (as above)",
        full_s,
        "`cp -a` of the data into a fresh btrfs image volume on B",
        cp_btrfs_s,
    );
    rep.row(
        "**move downtime**: snapshot + incremental export → import + mount on B",
        down_s,
        "naive move: stop, then `cp -a` everything to a fresh directory on B's disk",
        cp_s,
    );
    rep.row(
        "move downtime (as above)",
        down_s,
        "stop, then a full export → import (no copy ahead)",
        full2_s,
    );

    // 6. backups of s2, after the change.
    log("restic and tar, incremental");
    let s2 = a.snapshot_dir(&v, "s2")?;
    let (rinc_s, info) = timed(|| Ok(restic.backup(&target, &v, &s2, &[])?))?;
    rep.restic_incremental = info.stats;
    let (tfull2_s, ()) = timed(|| {
        sh(
            "tar",
            &[&"-c", &"-f", &tars.join("s2.tar"), &"-C", &s2, &"."],
        )
    })?;
    let snar1 = tars.join("level1.snar");
    fs::copy(&snar, &snar1)?;
    let inc_tar = tars.join("s2-level1.tar");
    let (tinc_s, ()) = timed(|| {
        sh(
            "tar",
            &[
                &"-c",
                &"-f",
                &inc_tar,
                &"--listed-incremental",
                &snar1,
                &"--no-check-device",
                &"-C",
                &s2,
                &".",
            ],
        )
    })?;
    rep.tar_incremental_bytes = fs::metadata(&inc_tar)?.len();
    if rep.tar_incremental_bytes < args.change / 2 {
        return Err(format!(
            "GNU tar's incremental archive holds {} for {} changed: the peer is broken",
            Bytes(rep.tar_incremental_bytes),
            Bytes(args.change)
        )
        .into());
    }

    rep.row(
        "restic backup, full (snapshot s1 → directory repository)",
        rfull_s,
        "`tar -c --listed-incremental` (level 0) of s1 into a file on the same disk",
        tfull_s,
    );
    rep.row(
        "restic backup, incremental (s2)",
        rinc_s,
        "`tar -c` of all of s2",
        tfull2_s,
    );
    rep.row(
        "restic backup, incremental (as above)",
        rinc_s,
        "GNU tar incremental (`--listed-incremental`, level 1) of s2",
        tinc_s,
    );

    log("restore");
    let rdest = root.join("restore-restic");
    fs::create_dir_all(&rdest)?;
    let (rrest_s, ()) = timed(|| Ok(restic.restore(&target, &v, "latest", &rdest)?))?;
    set.check_copy("restic restore", &s2, &rdest)?;
    let tdest = root.join("restore-tar");
    fs::create_dir_all(&tdest)?;
    let (tx_s, ()) = timed(|| sh("tar", &[&"-x", &"-f", &tars.join("s2.tar"), &"-C", &tdest]))?;
    set.check_copy("tar -x", &s2, &tdest)?;
    rep.row(
        "restic restore (latest, s2) into an empty directory",
        rrest_s,
        "`tar -x` of s2's archive into an empty directory",
        tx_s,
    );
    Ok(rep)
}
