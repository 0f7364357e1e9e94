//! Lines that go on in the next file. The exec writer keeps a line's
//! records in one file, but a file may still end with the `P` parts of a
//! line whose final part opens the next one: written by an older agent,
//! or a container's log renamed while containerd was between a line's
//! parts. A reader that starts in the middle of the chain (`--tail`,
//! `--since`) seeds its joiner with what the previous file left open.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::super::format::{Joiner, MAX_LINE, Stream, parse_record};
use super::CHUNK;

/// How far back from a file's end an open line's first part is looked
/// for: a longer line is cut by the joiner anyway.
const LIMIT: u64 = (MAX_LINE + CHUNK) as u64;

/// A joiner holding the parts of lines still open at the end of `f`, each
/// from its first part when that lies within [`LIMIT`] of the end. Reads
/// a growing window back from the end until each stream's state is known.
pub(super) fn open_parts(f: &File) -> std::io::Result<Joiner> {
    let len = f.metadata()?.len();
    let mut window = CHUNK as u64;
    loop {
        let from = len.saturating_sub(window);
        let (joiner, known) = join_from(f, from, len)?;
        if known || from == 0 || window >= LIMIT {
            return Ok(joiner);
        }
        window = (window * 4).min(LIMIT);
    }
}

/// Joins the whole records of `f` between `from` (past the record cut
/// there) and `len`. Also returns whether that tells each stream's state
/// at the end: its last record is final, or its open line begins after a
/// final record of that stream, or the range starts the file.
fn join_from(f: &File, from: u64, len: u64) -> std::io::Result<(Joiner, bool)> {
    let mut buf = vec![0u8; usize::try_from(len - from).unwrap_or(usize::MAX)];
    let n = read_full(f, &mut buf, from)?;
    let buf = &buf[..n];
    let start = match (from, buf.iter().position(|b| *b == b'\n')) {
        (0, _) => 0,
        (_, Some(i)) => i + 1,
        (_, None) => return Ok((Joiner::default(), false)),
    };
    let mut joiner = Joiner::default();
    // Per stream (stdout, stderr): any record, a final record.
    let mut seen = [false; 2];
    let mut ended = [false; 2];
    // The text after the last newline is not a whole record yet.
    for rec in buf[start..].split_inclusive(|b| *b == b'\n') {
        let Some(r) = rec.strip_suffix(b"\n").and_then(parse_record) else {
            continue;
        };
        let i = index(r.stream);
        seen[i] = true;
        ended[i] |= !r.partial;
        joiner.push(&r);
    }
    let known = from == 0
        || [Stream::Stdout, Stream::Stderr].iter().all(|s| {
            let i = index(*s);
            if joiner.is_open(*s) {
                ended[i]
            } else {
                seen[i]
            }
        });
    Ok((joiner, known))
}

fn index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Reads from `pos` until `buf` is full or the file ends.
fn read_full(f: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], pos + n as u64)? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}
