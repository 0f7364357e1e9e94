//! The ext4-image fallback against the real kernel (root only).

mod common;

use std::fs;

use common::*;
use corral_types::units::Bytes;
use corral_volumes::{Ext4Image, VolumeError, VolumeProvider, VolumeRef};

fn vol(name: &str) -> VolumeRef {
    VolumeRef(name.to_string())
}

#[test]
fn create_mount_write_export_import() {
    if !ready("ext4 basic", EXT4_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let a = Ext4Image::new(t.sub("node-a"));
    let b = Ext4Image::new(t.sub("node-b"));
    let v = vol("web-0");
    assert!(matches!(
        a.create(&v, Bytes(8 * MIB)),
        Err(VolumeError::Invalid { .. })
    ));
    a.create(&v, Bytes(64 * MIB)).expect("create");
    a.create(&v, Bytes(64 * MIB)).expect("create again");
    let data = a.mount(&v).expect("mount");
    assert_eq!(a.mount(&v).expect("mount again"), data);
    assert!(data.ends_with("mnt/data"));
    assert!(fs::read_dir(&data).expect("list").next().is_none(), "empty");
    fs::create_dir(data.join("d")).expect("mkdir");
    write_file(&data.join("d/f"), 3, 1);
    fs::write(data.join("small"), b"x").expect("write");
    std::os::unix::fs::symlink("small", data.join("link")).expect("symlink");

    assert!(matches!(
        a.snapshot(&v, "s"),
        Err(VolumeError::Unsupported { .. })
    ));
    assert!(matches!(
        a.export(&v, "s", Some("base")),
        Err(VolumeError::Unsupported { .. })
    ));
    let mut ex = a.export(&v, "s", None).expect("export");
    b.import(&v, "s", Bytes(64 * MIB), &mut ex).expect("import");
    ex.finish().expect("finish");
    let bdata = b.mount(&v).expect("mount b");
    assert_eq!(tree_hashes(&bdata), tree_hashes(&data));
    assert_eq!(b.usage(&v).expect("usage").size, Bytes(64 * MIB));

    // Import never merges into data already there.
    let mut ex = a.export(&v, "s", None).expect("export");
    assert!(matches!(
        b.import(&v, "s", Bytes(64 * MIB), &mut ex),
        Err(VolumeError::Invalid { .. })
    ));
    drop(ex);

    for p in [&a, &b] {
        p.delete(&v).expect("delete");
    }
    assert!(mounts_under(&t.path).is_empty());
    assert!(loops_under(&t.path).is_empty());
}

#[test]
fn enospc_and_offline_grow() {
    if !ready("ext4 enospc/grow", EXT4_TOOLS) {
        return;
    }
    let t = TestDir::new();
    let p = Ext4Image::new(t.sub("vols"));
    let v = vol("g");
    let size = 64 * MIB;
    p.create(&v, Bytes(size)).expect("create");
    let data = p.mount(&v).expect("mount");
    let fs_size = statvfs_size(&data);
    assert!(fs_size <= size && fs_size > size * 8 / 10, "{fs_size}");
    let (written, err) = fill(&data);
    println!("ext4 wrote {written} of {size} before {err}");
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    assert!(written <= size && written > size * 8 / 10, "{written}");

    assert!(matches!(
        p.grow(&v, Bytes(128 * MIB)),
        Err(VolumeError::Unsupported { .. })
    ));
    p.unmount(&v).expect("unmount");
    p.grow(&v, Bytes(128 * MIB)).expect("grow offline");
    let data = p.mount(&v).expect("mount");
    assert!(statvfs_size(&data) > 110 * MIB);
    write_file(&data.join("more"), 40, 2);
    assert_eq!(p.usage(&v).expect("usage").size, Bytes(128 * MIB));

    p.quarantine(&v, "old").expect("quarantine");
    assert!(p.list().expect("list").is_empty());
    assert_eq!(p.quarantined().expect("q"), ["g.old"]);
    assert!(mounts_under(&t.path).is_empty());
    assert!(loops_under(&t.path).is_empty());
}
