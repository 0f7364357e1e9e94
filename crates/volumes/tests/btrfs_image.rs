//! The btrfs-image provider against the real kernel (root only; see
//! common::ready). Run with `--nocapture` to see the timings.

mod common;

use std::fs;
use std::process::Command;
use std::time::Instant;

use common::*;
use corral_types::units::Bytes;
use corral_volumes::{BtrfsImage, VolumeError, VolumeProvider, VolumeRef};

fn vol(name: &str) -> VolumeRef {
    VolumeRef(name.to_string())
}

fn ms(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

#[test]
fn enospc_at_the_set_size() {
    if !ready("btrfs enospc", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = BtrfsImage::new(t.sub("vols"));
    let v = vol("shop-data-0");
    let size = 256 * MIB;
    p.create(&v, Bytes(size)).expect("create");
    let data = p.mount(&v).expect("mount");
    let fs_size = statvfs_size(&data);
    println!("btrfs {size} image: statvfs size {fs_size}");
    assert!(fs_size <= size && fs_size > size * 9 / 10, "{fs_size}");

    let (written, err) = fill(&data);
    println!("btrfs wrote {written} of {size} before {err}");
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    assert!(written <= size, "{written} > {size}");
    // DUP metadata and system chunks take their share of a small image.
    assert!(written > size * 6 / 10, "only {written} of {size}");
    let u = p.usage(&v).expect("usage");
    assert_eq!(u.size, Bytes(size));
    assert!(u.used.0 > written * 9 / 10 && u.used.0 <= size, "{u:?}");

    // A full filesystem still deletes (and so recovers).
    fs::remove_file(data.join("fill-0")).expect("remove on a full fs");
    p.delete(&v).expect("delete");
}

#[test]
fn grow_while_mounted() {
    if !ready("btrfs grow", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = BtrfsImage::new(t.sub("vols"));
    let v = vol("grow");
    p.create(&v, Bytes(128 * MIB)).expect("create");
    let data = p.mount(&v).expect("mount");
    let (before, err) = fill(&data);
    assert_eq!(err.raw_os_error(), Some(28), "{err}");

    p.grow(&v, Bytes(384 * MIB)).expect("grow");
    assert_eq!(p.usage(&v).expect("usage").size, Bytes(384 * MIB));
    assert!(statvfs_size(&data) > 300 * MIB);
    // The same mount takes more now.
    write_file(&data.join("after-grow"), 150, 3);
    assert_eq!(p.mount(&v).expect("still mounted"), data);
    // Never shrinks, idempotent.
    p.grow(&v, Bytes(128 * MIB)).expect("no shrink");
    assert_eq!(p.usage(&v).expect("usage").size, Bytes(384 * MIB));

    // Grow an unmounted volume: it stays unmounted and the next mount sees it.
    p.unmount(&v).expect("unmount");
    p.grow(&v, Bytes(512 * MIB)).expect("grow offline");
    assert!(mounts_under(&t.path).is_empty());
    let data = p.mount(&v).expect("mount");
    assert!(statvfs_size(&data) > 450 * MIB);
    println!("btrfs grow: {before} bytes filled at 128MiB, grown to 512MiB");
    p.delete(&v).expect("delete");
}

#[test]
fn snapshot_export_import_full_then_incremental() {
    if !ready("btrfs send/receive", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    // Two "nodes": two provider directories.
    let a = BtrfsImage::new(t.sub("node-a"));
    let b = BtrfsImage::new(t.sub("node-b"));
    let v = vol("db-0");
    let size = Bytes(1 << 30);

    let t0 = Instant::now();
    a.create(&v, size).expect("create");
    let data = a.mount(&v).expect("mount");
    let create_mount_ms = ms(t0);

    // ~200 MiB: 20 files of 10 MiB, a directory, a symlink.
    fs::create_dir(data.join("dir")).expect("mkdir");
    for i in 0..20 {
        write_file(&data.join(format!("dir/f{i}")), 10, i);
    }
    fs::write(data.join("small"), b"hello").expect("write");
    std::os::unix::fs::symlink("small", data.join("link")).expect("symlink");

    let t0 = Instant::now();
    let s1 = a.snapshot(&v, "s1").expect("snapshot");
    let snapshot_ms = ms(t0);
    assert_eq!(s1.name, "s1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        s1.created_at <= now + 2000 && s1.created_at + 60_000 > now,
        "{s1:?}"
    );
    // Idempotent: the same snapshot again.
    assert_eq!(a.snapshot(&v, "s1").expect("again"), s1);
    let sdir = a.snapshot_dir(&v, "s1").expect("snapshot dir");
    assert_eq!(tree_hashes(&sdir), tree_hashes(&data));
    assert!(
        fs::write(sdir.join("x"), b"x").is_err(),
        "snapshot is read-only"
    );

    let t0 = Instant::now();
    let mut ex = a.export(&v, "s1", None).expect("export");
    b.import(&v, "s1", size, &mut ex).expect("import full");
    ex.finish().expect("export finished");
    let full_ms = ms(t0);
    let bdata = b.mount(&v).expect("mount b");
    assert_eq!(tree_hashes(&bdata), tree_hashes(&data));

    // Changes: ~20 MiB rewritten, one file deleted, one added.
    write_file(&data.join("dir/f0"), 10, 100);
    write_file(&data.join("dir/f1"), 10, 101);
    fs::remove_file(data.join("dir/f2")).expect("rm");
    fs::write(data.join("new"), b"new file").expect("write");
    a.snapshot(&v, "s2").expect("snapshot 2");

    let t0 = Instant::now();
    let mut ex = a.export(&v, "s2", Some("s1")).expect("export incremental");
    b.import(&v, "s2", size, &mut ex)
        .expect("import incremental");
    ex.finish().expect("export finished");
    let incr_ms = ms(t0);

    let (ha, hb) = (tree_hashes(&data), tree_hashes(&bdata));
    assert_eq!(ha, hb);
    assert!(!hb.contains_key("dir/f2"), "deleted file is gone");
    assert!(hb.contains_key("new"));
    let names: Vec<_> = b
        .snapshots(&v)
        .expect("snapshots")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    // B's data is writable (not the read-only received snapshot).
    fs::write(bdata.join("on-b"), b"b").expect("write on b");

    // An incremental whose base B lacks fails and leaves B as it was.
    a.snapshot(&v, "s3").expect("snapshot 3");
    a.delete_snapshot(&v, "s1").expect("delete s1 on a");
    let c = BtrfsImage::new(t.sub("node-c"));
    let mut ex = a.export(&v, "s3", Some("s2")).expect("export");
    let e = c.import(&v, "s3", size, &mut ex);
    drop(ex);
    assert!(e.is_err(), "import without its base must fail");
    assert!(c.snapshots(&v).expect("list").is_empty());
    assert!(matches!(
        a.export(&v, "s3", Some("s1")),
        Err(VolumeError::SnapshotNotFound { .. })
    ));

    println!(
        "TIMING btrfs: create+mount 1GiB {create_mount_ms} ms, snapshot {snapshot_ms} ms, \
         full export+import ~200MiB {full_ms} ms, incremental ~20MiB {incr_ms} ms"
    );
    for p in [&a, &b, &c] {
        p.delete(&v).expect("delete");
    }
    assert!(mounts_under(&t.path).is_empty());
    assert!(loops_under(&t.path).is_empty());
}

#[test]
fn rollback_replaces_live_data() {
    if !ready("btrfs rollback", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = BtrfsImage::new(t.sub("vols"));
    let v = vol("rb");
    p.create(&v, Bytes(128 * MIB)).expect("create");
    let data = p.mount(&v).expect("mount");
    fs::write(data.join("a"), b"one").expect("write");
    p.snapshot(&v, "good").expect("snapshot");
    fs::write(data.join("a"), b"two").expect("write");
    fs::write(data.join("b"), b"junk").expect("write");
    let before = tree_hashes(&p.snapshot_dir(&v, "good").expect("dir"));

    p.rollback(&v, "good").expect("rollback");
    let data = p.mount(&v).expect("mount");
    assert_eq!(tree_hashes(&data), before);
    assert_eq!(fs::read(data.join("a")).expect("read"), b"one");
    fs::write(data.join("c"), b"writable").expect("writable after rollback");
    assert!(matches!(
        p.rollback(&v, "nope"),
        Err(VolumeError::SnapshotNotFound { .. })
    ));

    // A switch of data cut short (crash between the renames) is finished
    // at the next mount.
    let mnt = data.parent().expect("mnt").to_path_buf();
    let ok = Command::new("btrfs")
        .args(["subvolume", "snapshot"])
        .arg(&data)
        .arg(mnt.join(".data-new"))
        .status()
        .expect("btrfs")
        .success();
    assert!(ok);
    fs::rename(&data, mnt.join(".data-old")).expect("rename");
    p.unmount(&v).expect("unmount");
    let data = p.mount(&v).expect("mount settles");
    assert_eq!(fs::read(data.join("c")).expect("read"), b"writable");
    assert!(!mnt.join(".data-new").exists() && !mnt.join(".data-old").exists());
    p.delete(&v).expect("delete");
}

#[test]
fn create_mount_list_quarantine_are_idempotent() {
    if !ready("btrfs lifecycle", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = BtrfsImage::new(t.sub("vols"));
    let (v1, v2) = (vol("one"), vol("two"));
    assert!(matches!(
        p.create(&v1, Bytes(64 * MIB)),
        Err(VolumeError::Invalid { .. })
    ));
    assert!(matches!(
        p.create(&vol("../escape"), Bytes(128 * MIB)),
        Err(VolumeError::Invalid { .. })
    ));
    assert!(matches!(p.mount(&v1), Err(VolumeError::NotFound { .. })));
    p.create(&v1, Bytes(128 * MIB)).expect("create");
    p.create(&v1, Bytes(128 * MIB)).expect("create again");
    assert!(matches!(
        p.create(&v1, Bytes(256 * MIB)),
        Err(VolumeError::Invalid { .. })
    ));
    p.create(&v2, Bytes(128 * MIB)).expect("create");
    let m = p.mount(&v1).expect("mount");
    assert_eq!(p.mount(&v1).expect("mount again"), m);
    assert_eq!(mounts_under(&t.path).len(), 1);
    assert_eq!(p.list().expect("list"), [v1.clone(), v2.clone()]);

    p.quarantine(&v1, "stale-g3").expect("quarantine");
    assert_eq!(p.list().expect("list"), std::slice::from_ref(&v2));
    assert_eq!(p.quarantined().expect("q"), ["one.stale-g3"]);
    assert!(mounts_under(&t.path).is_empty());
    assert!(loops_under(&t.path).is_empty());
    assert!(matches!(p.mount(&v1), Err(VolumeError::NotFound { .. })));

    p.delete(&v2).expect("delete");
    p.delete(&v2).expect("delete again");
    assert!(p.list().expect("list").is_empty());
}

#[test]
fn hundred_cycles_leave_nothing_behind() {
    if !ready("btrfs cycles", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let dir = t.sub("vols");
    fs::create_dir(&dir).expect("mkdir");
    let p = BtrfsImage::new(dir.clone());
    let before = (
        paths_under(&dir),
        mounts_under(&t.path),
        loops_under(&t.path),
    );
    let t0 = Instant::now();
    for i in 0..100 {
        let v = vol(&format!("cycle-{}", i % 7));
        p.create(&v, Bytes(128 * MIB)).expect("create");
        let data = p.mount(&v).expect("mount");
        fs::write(data.join("f"), vec![i as u8; 4096]).expect("write");
        if i % 3 == 0 {
            p.snapshot(&v, "s").expect("snapshot");
        }
        p.delete(&v).expect("delete");
    }
    let after = (
        paths_under(&dir),
        mounts_under(&t.path),
        loops_under(&t.path),
    );
    assert_eq!(before, after);
    println!(
        "TIMING btrfs: 100 create/mount/write/delete cycles {} ms",
        ms(t0)
    );
}

#[test]
fn killed_create_is_redone() {
    if !ready("btrfs killed create", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let dir = t.sub("vols");
    let p = BtrfsImage::new(dir.clone());
    // What a create killed mid-way leaves: a staging dir with a formatted
    // image, mounted (killed during init) or only attached to a loop
    // device (killed inside mount).
    for (name, mounted) in [("k1", true), ("k2", false)] {
        let staging = dir.join(format!(".creating-{name}"));
        fs::create_dir_all(staging.join("mnt")).expect("mkdir");
        let image = staging.join("image");
        fs::File::create(&image)
            .and_then(|f| f.set_len(128 * MIB))
            .expect("image");
        let run = |args: &[&str]| {
            let ok = Command::new(args[0])
                .args(&args[1..])
                .output()
                .expect("run")
                .status
                .success();
            assert!(ok, "{args:?}");
        };
        let img = image.to_str().expect("utf8");
        run(&["mkfs.btrfs", "-q", img]);
        if mounted {
            run(&[
                "mount",
                "-o",
                "loop",
                img,
                staging.join("mnt").to_str().expect("utf8"),
            ]);
        } else {
            run(&["losetup", "-f", img]);
        }
        assert!(
            p.list().expect("list").is_empty(),
            "staging is not a volume"
        );

        let v = vol(name);
        p.create(&v, Bytes(128 * MIB)).expect("create after a kill");
        assert!(!staging.exists());
        let data = p.mount(&v).expect("mount");
        fs::write(data.join("ok"), b"ok").expect("write");
        assert_eq!(mounts_under(&t.path).len(), 1);
        assert_eq!(loops_under(&t.path).len(), 1);
        p.delete(&v).expect("delete");
    }
    assert!(mounts_under(&t.path).is_empty());
    assert!(loops_under(&t.path).is_empty());
    // A delete also clears a staging leftover of its name.
    fs::create_dir_all(dir.join(".creating-k3/mnt")).expect("mkdir");
    p.delete(&vol("k3")).expect("delete");
    assert!(!dir.join(".creating-k3").exists());
}

#[test]
fn unmount_frees_the_loop_device() {
    if !ready("btrfs loop", BTRFS_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = BtrfsImage::new(t.sub("vols"));
    let v = vol("lp");
    p.create(&v, Bytes(128 * MIB)).expect("create");
    assert!(loops_under(&t.path).is_empty(), "create leaves it detached");
    p.mount(&v).expect("mount");
    assert_eq!(loops_under(&t.path).len(), 1);
    p.unmount(&v).expect("unmount");
    p.unmount(&v).expect("unmount again");
    assert!(loops_under(&t.path).is_empty());
    assert!(mounts_under(&t.path).is_empty());
    // Usage of an unmounted volume: the blocks the image holds.
    let u = p.usage(&v).expect("usage");
    assert!(u.used.0 > 0 && u.used.0 < 128 * MIB, "{u:?}");
    p.delete(&v).expect("delete");
}
