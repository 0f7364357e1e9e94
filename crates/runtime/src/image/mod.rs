//! Images made on the node, without a registry: the pod sandbox (pause)
//! image every pod needs, and small busybox-based images for the demo and
//! the tests. Written as OCI archives (an OCI layout in a tar) that
//! containerd imports as they are.

mod oci;

use std::path::{Path, PathBuf};

pub use oci::{ImageError, ImageFile, ImageSpec, write_oci_archive};

/// Where Debian's busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The sandbox image corral builds for itself.
pub const PAUSE_IMAGE: &str = "corral.local/pause:1";

/// The demo image of the README.
pub const DEMO_IMAGE: &str = "corral.local/demo:1";

/// Applets the images link to busybox.
const APPLETS: &[&str] = &[
    "sh", "sleep", "cat", "echo", "env", "grep", "head", "tail", "tr", "ls", "ps", "id",
    "hostname", "httpd", "wget", "nc", "kill", "true", "false", "dd", "mkdir", "rm", "date", "seq",
    "yes", "printf", "test", "[", "wc", "sed", "awk", "mount",
];

/// busybox and its applets, from a static busybox on this host.
pub fn busybox_files(busybox: &Path) -> Vec<ImageFile> {
    let mut files = vec![
        ImageFile::dir("bin"),
        ImageFile::dir("tmp"),
        ImageFile::host("bin/busybox", busybox.to_path_buf(), 0o755),
    ];
    for a in APPLETS {
        files.push(ImageFile::symlink(&format!("bin/{a}"), "busybox"));
    }
    files
}

/// The pause image: PID 1 sleeps forever and exits on SIGTERM (busybox
/// `sleep` as PID 1 would ignore it and make every pod stop wait out its
/// timeout).
pub fn pause_image(busybox: &Path) -> ImageSpec {
    ImageSpec {
        name: PAUSE_IMAGE.into(),
        entrypoint: vec![
            "/bin/sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".into(),
        ],
        cmd: vec![],
        env: vec!["PATH=/bin".into()],
        workdir: None,
        files: busybox_files(busybox),
    }
}

/// The demo image: a busybox httpd on port 8080 whose page shows `$FOO`,
/// and which prints `FOO=...` to its log on start.
pub fn demo_image(busybox: &Path) -> ImageSpec {
    let script = r#"#!/bin/sh
trap 'exit 0' TERM INT
echo "FOO=$FOO"
mkdir -p /www
printf '<h1>hello from %s</h1><p>FOO=%s</p>\n' "$(hostname)" "$FOO" > /www/index.html
httpd -f -p "${PORT:-8080}" -h /www &
wait $!
"#;
    let mut files = busybox_files(busybox);
    files.push(ImageFile::bytes(
        "bin/demo",
        script.as_bytes().to_vec(),
        0o755,
    ));
    ImageSpec {
        name: DEMO_IMAGE.into(),
        entrypoint: vec!["/bin/demo".into()],
        cmd: vec![],
        env: vec!["PATH=/bin".into()],
        workdir: Some("/".into()),
        files,
    }
}

/// Write `spec` as an OCI archive into `dir`; returns the file.
pub fn build_into(spec: &ImageSpec, dir: &Path) -> Result<PathBuf, ImageError> {
    let file = dir.join(format!("{}.oci.tar", spec.name.replace(['/', ':'], "_")));
    write_oci_archive(spec, &file)?;
    Ok(file)
}
