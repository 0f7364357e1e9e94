//! Who copies a run's output: whoever holds an exclusive `flock` on the
//! run's stdout FIFO (a capture process, or the agent's in-process copy).
//! The kernel drops the lock when its holder dies, so "a copier runs"
//! needs no pid that could be reused, and a second copier (two readers
//! would share the pipe's bytes between them) never starts.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, OFlags, flock};

/// The lock of a run, or why there is none.
#[derive(Debug)]
pub(super) enum Taken {
    /// Held until this is dropped.
    Held { _fd: File },
    /// Another copier holds it.
    Busy,
    /// The FIFO is gone: the run's output was copied to its end.
    Gone,
}

/// Opens a FIFO for reading without waiting for a writer. Such an end,
/// even one that never reads, keeps the pipe's content alive while it is
/// open.
pub(super) fn open_reader(fifo: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(fifo)
}

/// Takes the lock of the run whose stdout FIFO this is, if nobody holds
/// it.
pub(super) fn take(stdout_fifo: &Path) -> std::io::Result<Taken> {
    let f = match open_reader(stdout_fifo) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Taken::Gone),
        Err(e) => return Err(e),
    };
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Taken::Held { _fd: f }),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Taken::Busy),
        Err(e) => Err(e.into()),
    }
}

/// Whether a copier holds the lock of the run whose stdout FIFO this is
/// (false when the FIFO is gone).
pub fn copier_runs(stdout_fifo: &Path) -> bool {
    // Taken (and dropped at once) means nobody else holds it.
    matches!(take(stdout_fifo), Ok(Taken::Busy))
}
