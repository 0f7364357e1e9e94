//! The host-directory provider (needs only `tar`; no root).

mod common;

use std::fs;

use common::*;
use corral_types::units::Bytes;
use corral_volumes::{HostDir, VolumeError, VolumeProvider, VolumeRef};

#[test]
fn create_mount_write_export_import() {
    if corral_volumes::find_program("tar").is_none() {
        eprintln!("host dir: SKIPPED (needs tar)");
        return;
    }
    let t = TestDir::new();
    let a = HostDir::new(t.sub("node-a"));
    let b = HostDir::new(t.sub("node-b"));
    let v = VolumeRef("cache-0".to_string());
    assert!(matches!(a.mount(&v), Err(VolumeError::NotFound { .. })));
    a.create(&v, Bytes(MIB)).expect("create");
    a.create(&v, Bytes(MIB)).expect("create again");
    let data = a.mount(&v).expect("mount");
    assert_eq!(data, t.sub("node-a").join("cache-0"));
    fs::create_dir(data.join("d")).expect("mkdir");
    write_file(&data.join("d/f"), 2, 1);
    fs::write(data.join("small"), b"12345").expect("write");
    std::os::unix::fs::symlink("small", data.join("link")).expect("symlink");

    let u = a.usage(&v).expect("usage");
    assert_eq!(u.used, Bytes(2 * MIB + 5));
    assert!(u.size.0 > u.used.0, "size is the host filesystem's");
    assert!(matches!(
        a.snapshot(&v, "s"),
        Err(VolumeError::Unsupported { .. })
    ));

    let mut ex = a.export(&v, "s", None).expect("export");
    b.import(&v, "s", Bytes(MIB), &mut ex).expect("import");
    ex.finish().expect("finish");
    assert_eq!(
        tree_hashes(&b.mount(&v).expect("mount")),
        tree_hashes(&data)
    );

    assert_eq!(a.list().expect("list"), std::slice::from_ref(&v));
    a.quarantine(&v, "s1").expect("quarantine");
    assert!(a.list().expect("list").is_empty());
    assert_eq!(a.quarantined().expect("q"), ["cache-0.s1"]);
    b.delete(&v).expect("delete");
    b.delete(&v).expect("delete again");
    assert!(b.list().expect("list").is_empty());
    assert!(matches!(
        a.create(&VolumeRef("../x".to_string()), Bytes(MIB)),
        Err(VolumeError::Invalid { .. })
    ));
}

#[test]
fn detect_and_by_kind() {
    let kind = corral_volumes::detect();
    let t = TestDir::new();
    let p = corral_volumes::by_kind(kind, t.sub("v"));
    assert_eq!(p.kind(), kind);
    println!("detected {kind:?}");
}
