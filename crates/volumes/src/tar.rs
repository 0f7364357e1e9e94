//! Full exports for providers without snapshots: a tar stream of the
//! volume's directory (GNU `tar`, numeric owners so uids survive a move
//! between nodes whose /etc/passwd differ).

use std::fs;
use std::io::Read;
use std::path::Path;

use crate::cmd::Cmd;
use crate::image::io_err;
use crate::provider::{Export, VolumeError};

pub(crate) fn export(vol: &str, dir: &Path) -> Result<Box<dyn Export>, VolumeError> {
    Cmd::new(vol, "tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg("-")
        .arg(".")
        .stream_stdout()
}

/// Unpack into `dir`, which must be empty: an import never merges with
/// data already there.
pub(crate) fn import(vol: &str, dir: &Path, input: &mut dyn Read) -> Result<(), VolumeError> {
    let mut entries = fs::read_dir(dir).map_err(io_err(vol, "list", dir))?;
    if entries.next().is_some() {
        return Err(VolumeError::Invalid {
            vol: vol.to_string(),
            detail: format!(
                "{} is not empty: import only into a new or empty volume",
                dir.display()
            ),
        });
    }
    Cmd::new(vol, "tar")
        .arg("--numeric-owner")
        .arg("--same-permissions")
        .arg("-C")
        .arg(dir)
        .arg("-xf")
        .arg("-")
        .feed(input)
}
