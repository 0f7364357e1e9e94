//! A minimal OCI image writer: one uncompressed layer, a config, a
//! manifest and an index, packed as an OCI layout in a tar. Entries are
//! written in a fixed order with fixed times so the same input gives the
//! same digests.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image}: cannot read {path}: {source}")]
    Read {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: cannot write {path}: {source}")]
    Write {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `corral.local/demo:1`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub files: Vec<ImageFile>,
}

#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Path inside the image, without a leading `/`.
    pub path: String,
    pub kind: FileKind,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub enum FileKind {
    Dir,
    Bytes(Vec<u8>),
    Host(PathBuf),
    Symlink(String),
}

impl ImageFile {
    pub fn dir(path: &str) -> ImageFile {
        ImageFile {
            path: path.into(),
            kind: FileKind::Dir,
            mode: 0o755,
        }
    }
    pub fn bytes(path: &str, data: Vec<u8>, mode: u32) -> ImageFile {
        ImageFile {
            path: path.into(),
            kind: FileKind::Bytes(data),
            mode,
        }
    }
    pub fn host(path: &str, src: PathBuf, mode: u32) -> ImageFile {
        ImageFile {
            path: path.into(),
            kind: FileKind::Host(src),
            mode,
        }
    }
    pub fn symlink(path: &str, target: &str) -> ImageFile {
        ImageFile {
            path: path.into(),
            kind: FileKind::Symlink(target.into()),
            mode: 0o777,
        }
    }
}

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_path(path);
    h.set_cksum();
    h
}

fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>, ImageError> {
    let image = spec.name.clone();
    let werr = |source| ImageError::Write {
        image: image.clone(),
        path: PathBuf::from("<layer>"),
        source,
    };
    let mut b = tar::Builder::new(Vec::new());
    for f in &spec.files {
        match &f.kind {
            FileKind::Dir => {
                let mut h = header(
                    &format!("{}/", f.path),
                    0,
                    f.mode,
                    tar::EntryType::Directory,
                );
                b.append_data(&mut h, format!("{}/", f.path), std::io::empty())
                    .map_err(werr)?;
            }
            FileKind::Bytes(data) => {
                let mut h = header(&f.path, data.len() as u64, f.mode, tar::EntryType::Regular);
                b.append_data(&mut h, &f.path, data.as_slice())
                    .map_err(werr)?;
            }
            FileKind::Host(src) => {
                let data = std::fs::read(src).map_err(|source| ImageError::Read {
                    image: spec.name.clone(),
                    path: src.clone(),
                    source,
                })?;
                let mut h = header(&f.path, data.len() as u64, f.mode, tar::EntryType::Regular);
                b.append_data(&mut h, &f.path, data.as_slice())
                    .map_err(werr)?;
            }
            FileKind::Symlink(target) => {
                let mut h = header(&f.path, 0, f.mode, tar::EntryType::Symlink);
                b.append_link(&mut h, &f.path, target).map_err(werr)?;
            }
        }
    }
    b.into_inner().map_err(werr)
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Write the image as an OCI archive at `out`.
pub fn write_oci_archive(spec: &ImageSpec, out: &Path) -> Result<(), ImageError> {
    let werr = |source| ImageError::Write {
        image: spec.name.clone(),
        path: out.to_path_buf(),
        source,
    };
    let layer = layer_tar(spec)?;
    let layer_digest = sha256(&layer);
    let mut config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": {
            "Env": spec.env,
            "Entrypoint": spec.entrypoint,
            "Cmd": spec.cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created_by": "corral image builder"}],
    });
    if let Some(w) = &spec.workdir {
        config["config"]["WorkingDir"] = json!(w);
    }
    let config = serde_json::to_vec(&config).map_err(|e| werr(std::io::Error::other(e)))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    }))
    .map_err(|e| werr(std::io::Error::other(e)))?;
    let manifest_digest = sha256(&manifest);
    let tag = spec
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))
    .map_err(|e| werr(std::io::Error::other(e)))?;

    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(werr)?;
    }
    let tmp = out.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(werr)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    let mut put = |path: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = header(path, data.len() as u64, 0o644, tar::EntryType::Regular);
        b.append_data(&mut h, path, data)
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(werr)?;
    put("index.json", &index).map_err(werr)?;
    put(&format!("blobs/sha256/{layer_digest}"), &layer).map_err(werr)?;
    put(&format!("blobs/sha256/{config_digest}"), &config).map_err(werr)?;
    put(&format!("blobs/sha256/{manifest_digest}"), &manifest).map_err(werr)?;
    let mut w = b.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_reproducible_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec {
            name: "corral.local/t:1".into(),
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec![],
            env: vec!["PATH=/bin".into()],
            workdir: None,
            files: vec![
                ImageFile::dir("bin"),
                ImageFile::bytes("bin/x", b"hi".to_vec(), 0o755),
                ImageFile::symlink("bin/sh", "x"),
            ],
        };
        let a = dir.path().join("a.tar");
        let b = dir.path().join("b.tar");
        write_oci_archive(&spec, &a).unwrap();
        write_oci_archive(&spec, &b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "same input, same bytes"
        );
        let mut ar = tar::Archive::new(std::fs::File::open(&a).unwrap());
        let mut names = vec![];
        let mut index = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            if p == "index.json" {
                use std::io::Read;
                e.read_to_string(&mut index).unwrap();
            }
            names.push(p);
        }
        assert_eq!(names.len(), 5);
        assert!(names.contains(&"oci-layout".to_string()));
        let v: serde_json::Value = serde_json::from_str(&index).unwrap();
        assert_eq!(
            v["manifests"][0]["annotations"]["io.containerd.image.name"],
            "corral.local/t:1"
        );
        // Every blob is named by its own digest.
        let mut ar = tar::Archive::new(std::fs::File::open(&a).unwrap());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            if let Some(d) = p.strip_prefix("blobs/sha256/") {
                let mut data = vec![];
                use std::io::Read;
                e.read_to_end(&mut data).unwrap();
                assert_eq!(sha256(&data), d);
            }
        }
    }
}
