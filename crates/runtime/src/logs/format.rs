//! The CRI log format, which both drivers write: one record per line,
//! `<RFC 3339 time> <stream> <P|F> <message>`, where `P` marks a part of a
//! longer line continued by the next record of the same stream and `F`
//! its final part. containerd writes it for container tasks; the exec
//! driver's writer produces the same with [`LineSplitter`].

use std::fmt;

use corral_types::civil::{civil_from_days, days_from_civil};

/// Longest record message the exec writer produces; longer lines are split
/// into `P` parts (containerd's limit too).
pub const MAX_RECORD: usize = 16 * 1024;

/// Longest line the reader joins from parts before it gives what it has.
pub const MAX_LINE: usize = 1024 * 1024;

/// A point in time in nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    pub fn minus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
    }

    /// RFC 3339 with a fraction of 0 to 9 digits, in UTC (`Z`) or with an
    /// offset (`+01:00`): what containerd writes (Go's RFC3339Nano) and
    /// what users pass to `--since`.
    pub fn parse(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = s.get(r)?;
            if t.bytes().all(|c| c.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = i - start;
            if digits == 0 || digits > 9 {
                return None;
            }
            nanos = num(start..i)? * 10i64.pow((9 - digits) as u32);
        }
        let offset_secs = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                let o = oh * 3600 + om * 60;
                if *sign == b'+' { o } else { -o }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
        secs.checked_mul(1_000_000_000)?
            .checked_add(nanos)
            .map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    /// `2026-11-25T20:32:05.036626141Z`: always nine digits, so the text
    /// sorts as the time does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000_000);
        let nanos = self.0.rem_euclid(1_000_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Stream> {
        match b {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: Timestamp,
    pub stream: Stream,
    /// `P`: the line continues in the next record of the stream.
    pub partial: bool,
    pub message: &'a [u8],
}

/// Parses one line of a log file (without its newline); `None` for
/// anything else.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = Timestamp::parse(std::str::from_utf8(parts.next()?).ok()?)?;
    let stream = Stream::from_bytes(parts.next()?)?;
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        message: parts.next().unwrap_or_default(),
    })
}

/// Appends one record, newline included.
pub fn encode(out: &mut Vec<u8>, time: Timestamp, stream: Stream, partial: bool, message: &[u8]) {
    out.extend_from_slice(time.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(message);
    out.push(b'\n');
}

/// Cuts one stream's raw output into record messages: whole lines (`F`),
/// and `P` parts of lines longer than [`MAX_RECORD`].
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds output read at `time`; appends the records it completes.
    pub fn push(&mut self, data: &[u8], time: Timestamp, out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            self.emit(time, out, true);
        }
        self.pending.extend_from_slice(rest);
        self.emit(time, out, false);
    }

    /// The end of the stream: what is left becomes a final record.
    pub fn finish(&mut self, time: Timestamp, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.emit(time, out, true);
        }
    }

    /// A pause of the copy while the stream goes on (the capture process
    /// stops; another one continues): what is left becomes a `P` part, so
    /// that the line reads whole with what the next copier writes.
    pub fn cut(&mut self, time: Timestamp, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            encode(out, time, self.stream, true, &self.pending);
            self.pending.clear();
        }
    }

    /// Writes the pending bytes: whole `P` parts while more than
    /// [`MAX_RECORD`] remain (or is exactly that and the line continues),
    /// then, with `line_end`, the rest as the final part.
    fn emit(&mut self, time: Timestamp, out: &mut Vec<u8>, line_end: bool) {
        let mut start = 0;
        while self.pending.len() - start > MAX_RECORD
            || (!line_end && self.pending.len() - start == MAX_RECORD)
        {
            let end = start + MAX_RECORD;
            encode(out, time, self.stream, true, &self.pending[start..end]);
            start = end;
        }
        if line_end {
            encode(out, time, self.stream, false, &self.pending[start..]);
            self.pending.clear();
        } else {
            self.pending.drain(..start);
        }
    }
}

/// A line of output as the reader gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The time of its first part.
    pub time: Timestamp,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// Joins `P` parts to their final part, per stream (the parts of a long
/// stdout line may be interleaved with stderr records).
#[derive(Debug, Default)]
pub struct Joiner {
    stdout: Option<Line>,
    stderr: Option<Line>,
}

impl Joiner {
    /// Whether a line of `stream` has begun and not ended.
    pub fn is_open(&self, stream: Stream) -> bool {
        match stream {
            Stream::Stdout => self.stdout.is_some(),
            Stream::Stderr => self.stderr.is_some(),
        }
    }

    /// Feeds one record; returns the line it completes.
    pub fn push(&mut self, r: &Record<'_>) -> Option<Line> {
        let slot = match r.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let line = slot.get_or_insert_with(|| Line {
            time: r.time,
            stream: r.stream,
            text: Vec::new(),
        });
        line.text.extend_from_slice(r.message);
        if r.partial && line.text.len() < MAX_LINE {
            None
        } else {
            slot.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_accept_go_formats() {
        let t = Timestamp::parse("2026-11-25T20:32:05.036626141Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T20:32:05.036626141Z");
        // Go trims trailing zeros and may write a local offset.
        let a = Timestamp::parse("2026-11-25T20:32:05.0366Z").unwrap();
        assert_eq!(a.to_string(), "2026-11-25T20:32:05.036600000Z");
        let b = Timestamp::parse("2026-11-25T21:32:05.0366+01:00").unwrap();
        assert_eq!(a, b);
        let c = Timestamp::parse("2026-11-25T20:32:05Z").unwrap();
        assert_eq!(c.0 % 1_000_000_000, 0);
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z"), Some(Timestamp(0)));
        assert_eq!(
            Timestamp(951_782_400_000_000_000).to_string(),
            "2000-02-29T00:00:00.000000000Z"
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-13-25T20:32:05Z",
            "2026-11-25T20:32:05",
            "2026-11-25T20:32:05.Z",
            "2026-11-25T20:32:05.0123456789Z",
            "2026-11-25T20:32:05+0100",
            "2026-11-25T2x:32:05Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
        let now = Timestamp::now();
        assert_eq!(Timestamp::parse(&now.to_string()), Some(now));
    }

    #[test]
    fn records_parse_and_encode() {
        let mut out = Vec::new();
        let t = Timestamp(1_700_000_000_123_456_789);
        encode(&mut out, t, Stream::Stderr, false, b"oops: a b");
        assert_eq!(
            out,
            b"2023-11-14T22:13:20.123456789Z stderr F oops: a b\n".to_vec()
        );
        let r = parse_record(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            r,
            Record {
                time: t,
                stream: Stream::Stderr,
                partial: false,
                message: b"oops: a b"
            }
        );
        let r = parse_record(b"2023-11-14T22:13:20Z stdout P ").unwrap();
        assert!(r.partial);
        assert_eq!(r.message, b"");
        assert_eq!(
            parse_record(b"2023-11-14T22:13:20Z stdout F"),
            Some(Record {
                time: Timestamp(1_700_000_000_000_000_000),
                stream: Stream::Stdout,
                partial: false,
                message: b"",
            })
        );
        assert_eq!(parse_record(b"garbage"), None);
        assert_eq!(parse_record(b"2023-11-14T22:13:20Z stdin F x"), None);
        assert_eq!(parse_record(b"2023-11-14T22:13:20Z stdout X x"), None);
    }

    fn records(out: &[u8]) -> Vec<(bool, Vec<u8>)> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = parse_record(l).unwrap();
                (r.partial, r.message.to_vec())
            })
            .collect()
    }

    #[test]
    fn splitter_makes_lines_and_parts() {
        let t = Timestamp(0);
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.push(b"one\ntw", t, &mut out);
        s.push(b"o\n\nthree", t, &mut out);
        assert_eq!(
            records(&out),
            vec![
                (false, b"one".to_vec()),
                (false, b"two".to_vec()),
                (false, b"".to_vec())
            ]
        );
        out.clear();
        s.finish(t, &mut out);
        assert_eq!(records(&out), vec![(false, b"three".to_vec())]);
        out.clear();
        s.finish(t, &mut out);
        assert!(out.is_empty());

        // Cut while the line goes on: a part, joined with what follows.
        s.push(b"first-", t, &mut out);
        s.cut(t, &mut out);
        s.cut(t, &mut out);
        assert_eq!(records(&out), vec![(true, b"first-".to_vec())]);
        out.clear();

        // A long line in parts; joined back to the same text.
        let long: Vec<u8> = (0..MAX_RECORD * 2 + 10)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let mut input = long.clone();
        input.push(b'\n');
        for chunk in input.chunks(5000) {
            s.push(chunk, t, &mut out);
        }
        let recs = records(&out);
        assert_eq!(
            recs.iter().map(|(p, m)| (*p, m.len())).collect::<Vec<_>>(),
            vec![(true, MAX_RECORD), (true, MAX_RECORD), (false, 10)]
        );
        let mut j = Joiner::default();
        let mut lines = Vec::new();
        for l in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            lines.extend(j.push(&parse_record(l).unwrap()));
        }
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, long);
    }

    #[test]
    fn joiner_keeps_streams_apart() {
        let mut j = Joiner::default();
        let rec = |stream, partial, message: &'static [u8], t| Record {
            time: Timestamp(t),
            stream,
            partial,
            message,
        };
        assert_eq!(j.push(&rec(Stream::Stdout, true, b"par", 1)), None);
        let e = j.push(&rec(Stream::Stderr, false, b"err", 2)).unwrap();
        assert_eq!((e.text.as_slice(), e.time), (&b"err"[..], Timestamp(2)));
        let o = j.push(&rec(Stream::Stdout, false, b"tial", 3)).unwrap();
        assert_eq!((o.text.as_slice(), o.time), (&b"partial"[..], Timestamp(1)));
    }
}
