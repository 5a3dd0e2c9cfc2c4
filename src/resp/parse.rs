//! The server side of RESP: bytes from a client → commands. A pure function
//! over the read buffer, no I/O, so it can be fuzzed and property-tested.
//!
//! Accepts what Redis accepts from clients: arrays of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands (`GET k\r\n`, with
//! Redis's quoting rules). Bounds ([`Limits`]): a bulk string over 512 MiB,
//! an array over 1M elements or an inline line over 64 KiB is a protocol
//! error; before AUTH, a bulk over 16 KiB or more than 10 arguments is (as
//! Redis has it since CVE-2021-32675).
//!
//! A frame that is not all here yet is not re-read from its start on the
//! next call: [`Progress`] keeps where parsing got to, so a frame trickled
//! in a byte at a time costs linear time, not quadratic.

use std::ops::Range;

use bytes::Bytes;

pub const MAX_BULK: usize = 512 * 1024 * 1024;
pub const MAX_ARRAY: usize = 1024 * 1024;
pub const MAX_INLINE: usize = 64 * 1024;

/// What a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_args: usize,
    pub max_bulk: usize,
    authenticated: bool,
}

impl Limits {
    pub const AUTHENTICATED: Limits = Limits {
        max_args: MAX_ARRAY,
        max_bulk: MAX_BULK,
        authenticated: true,
    };

    /// Before AUTH (when a password is set), as Redis since CVE-2021-32675.
    pub const UNAUTHENTICATED: Limits = Limits {
        max_args: 10,
        max_bulk: 16 * 1024,
        authenticated: false,
    };
}

/// How far parsing a frame that is not all here yet got, so the next call
/// goes on from there. Start each connection with `Progress::default()`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Arguments still to come in the array being parsed; None until its
    /// header is parsed.
    remaining: Option<usize>,
    /// Where the next argument starts, or how far an inline line has been
    /// searched for its end.
    at: usize,
    /// Bytes examined over all calls: what the tests check is linear.
    pub examined: usize,
}

impl Progress {
    fn done(&mut self) {
        self.remaining = None;
        self.at = 0;
    }
}

/// One command: its name and arguments, as the client sent them (copied;
/// see [`parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<Bytes>,
}

/// A whole command found at the front of the buffer by [`parse_frame`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A RESP array of `len` bytes; its arguments are byte ranges of it,
    /// left in the caller's list, so they can be sliced out of the read
    /// buffer instead of copied.
    Array { len: usize },
    /// An inline command of `len` bytes, its arguments unescaped.
    Inline { len: usize, args: Vec<Bytes> },
}

/// What is wrong with the bytes; shown to the client after
/// `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Finds one command at the front of `buf`. For an array, `ranges`
/// receives where its arguments are.
///
/// `Ok(None)`: not a whole command yet; read more, and call again with the
/// same `ranges` and `progress` and the buffer grown (not consumed). An
/// empty array or an empty inline line is a command with no arguments,
/// which the caller skips (Redis sends nothing back for them).
pub fn parse_frame(
    buf: &[u8],
    ranges: &mut Vec<Range<usize>>,
    progress: &mut Progress,
    limits: Limits,
) -> Result<Option<Frame>, ParseError> {
    if progress.remaining.is_none() && progress.at == 0 {
        ranges.clear();
    }
    let found = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, ranges, progress, limits),
        Some(_) => parse_inline(buf, progress),
    };
    if !matches!(found, Ok(None)) {
        progress.done();
    }
    found
}

/// [`parse_frame`], with the arguments copied out: `Ok(Some((request,
/// n)))` is a command taken from the first `n` bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, ParseError> {
    let mut ranges = Vec::new();
    let frame = parse_frame(buf, &mut ranges, &mut Progress::default(), Limits::AUTHENTICATED)?;
    Ok(frame.map(|frame| match frame {
        Frame::Array { len } => {
            let args = ranges
                .iter()
                .map(|r| Bytes::copy_from_slice(&buf[r.clone()]))
                .collect();
            (Request { args }, len)
        }
        Frame::Inline { len, args } => (Request { args }, len),
    }))
}

/// The line starting at `at`, without its `\r\n`, and where the next
/// starts. Only short lines (lengths) are searched for: see
/// [`guard_unterminated`].
fn line<'a>(buf: &'a [u8], at: usize, examined: &mut usize) -> Option<(&'a [u8], usize)> {
    let rest = buf.get(at..)?;
    // A longer line is an error however it arrives: whole, or in pieces.
    let rest = &rest[..rest.len().min(MAX_LENGTH_LINE + 2)];
    let found = rest.windows(2).position(|w| w == b"\r\n");
    *examined += found.map_or(rest.len(), |rel| rel + 2);
    let rel = found?;
    Some((&buf[at..at + rel], at + rel + 2))
}

/// A decimal length as Redis writes it; `what` names it in errors.
fn number(digits: &[u8], what: &str) -> Result<i64, ParseError> {
    let s = std::str::from_utf8(digits).ok();
    match s.and_then(|s| s.parse::<i64>().ok()) {
        Some(n) => Ok(n),
        None => err(format!("invalid {what} length")),
    }
}

fn parse_array(
    buf: &[u8],
    ranges: &mut Vec<Range<usize>>,
    progress: &mut Progress,
    limits: Limits,
) -> Result<Option<Frame>, ParseError> {
    if progress.remaining.is_none() {
        let Some((header, first)) = line(buf, 1, &mut progress.examined) else {
            return guard_unterminated(buf, 1, "multibulk");
        };
        let count = number(header, "multibulk")?;
        if count > limits.max_args as i64 {
            return err(if limits.authenticated {
                "invalid multibulk length"
            } else {
                "unauthenticated multibulk length"
            });
        }
        progress.remaining = Some(count.max(0) as usize);
        progress.at = first;
    }
    while let Some(remaining @ 1..) = progress.remaining {
        match bulk(buf, progress.at, limits, &mut progress.examined)? {
            Some((range, next)) => {
                ranges.push(range);
                progress.at = next;
                progress.remaining = Some(remaining - 1);
            }
            None => return Ok(None),
        }
    }
    Ok(Some(Frame::Array { len: progress.at }))
}

/// The bulk string at `at`: where its bytes are and where the next thing
/// starts, or None if it is not all here yet. Costs its length line, not
/// its length: the bytes themselves are not looked at until they are all
/// here.
fn bulk(
    buf: &[u8],
    at: usize,
    limits: Limits,
    examined: &mut usize,
) -> Result<Option<(Range<usize>, usize)>, ParseError> {
    *examined += 1;
    match buf.get(at) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&c) => return err(format!("expected '$', got '{}'", c as char)),
    }
    let Some((digits, start)) = line(buf, at + 1, examined) else {
        return guard_unterminated::<()>(buf, at + 1, "bulk").map(|_| None);
    };
    let len = number(digits, "bulk")?;
    if len < 0 || len > limits.max_bulk as i64 {
        return err(if limits.authenticated {
            "invalid bulk length"
        } else {
            "unauthenticated bulk length"
        });
    }
    let end = start + len as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return err("expected CRLF after bulk string");
    }
    Ok(Some((start..end, end + 2)))
}

/// The longest length line (`*`/`$` excluded) accepted: far more than
/// the 20 characters of any i64, and short enough that looking for its end
/// costs nothing.
const MAX_LENGTH_LINE: usize = 32;

/// A length line that has not ended is an error once it is longer than any
/// valid one could be, so a client cannot make us buffer forever: with the
/// `\r` of a line of [`MAX_LENGTH_LINE`] bytes here, its `\n` may still
/// come.
fn guard_unterminated<T>(buf: &[u8], from: usize, what: &str) -> Result<Option<T>, ParseError> {
    if buf.len().saturating_sub(from) > MAX_LENGTH_LINE + 1 {
        err(format!("invalid {what} length"))
    } else {
        Ok(None)
    }
}

fn parse_inline(buf: &[u8], progress: &mut Progress) -> Result<Option<Frame>, ParseError> {
    let from = progress.at.min(buf.len());
    let found = buf[from..].iter().position(|&b| b == b'\n');
    progress.examined += found.map_or(buf.len() - from, |n| n + 1);
    let Some(nl) = found.map(|n| from + n) else {
        if buf.len() > MAX_INLINE {
            return err("too big inline request");
        }
        // Next time, search only what arrives after this.
        progress.at = buf.len();
        return Ok(None);
    };
    if nl > MAX_INLINE {
        return err("too big inline request");
    }
    let mut text = &buf[..nl];
    if let Some(stripped) = text.strip_suffix(b"\r") {
        text = stripped;
    }
    let args = split_args(text).ok_or_else(|| ParseError("unbalanced quotes in request".into()))?;
    Ok(Some(Frame::Inline { len: nl + 1, args }))
}

/// Redis's `sdssplitargs`: words separated by blanks; "double quotes" with
/// \n \r \t \b \a \\ \" \xHH escapes; 'single quotes' with \' only. A
/// closing quote must be followed by a blank or the end. None: unbalanced.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let (word, end) = match line[i] {
            b'"' => double_quoted(line, i + 1)?,
            b'\'' => single_quoted(line, i + 1)?,
            _ => {
                let end = line[i..]
                    .iter()
                    .position(|c| c.is_ascii_whitespace())
                    .map_or(line.len(), |n| i + n);
                (line[i..end].to_vec(), end)
            }
        };
        args.push(Bytes::from(word));
        i = end;
    }
}

/// The word in double quotes starting at `i` (after the quote), with its
/// escapes resolved, and where it ends.
fn double_quoted(line: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut word = Vec::new();
    loop {
        let c = *line.get(i)?;
        if c == b'\\'
            && i + 3 < line.len()
            && line[i + 1] == b'x'
            && let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3]))
        {
            word.push(h << 4 | l);
            i += 4;
        } else if c == b'\\' && i + 1 < line.len() {
            word.push(match line[i + 1] {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'b' => 8,
                b'a' => 7,
                other => other,
            });
            i += 2;
        } else if c == b'"' {
            blank_or_end(line, i + 1)?;
            return Some((word, i + 1));
        } else {
            word.push(c);
            i += 1;
        }
    }
}

/// The word in single quotes starting at `i` (after the quote): only `\'`
/// is an escape.
fn single_quoted(line: &[u8], mut i: usize) -> Option<(Vec<u8>, usize)> {
    let mut word = Vec::new();
    loop {
        let c = *line.get(i)?;
        if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
            word.push(b'\'');
            i += 2;
        } else if c == b'\'' {
            blank_or_end(line, i + 1)?;
            return Some((word, i + 1));
        } else {
            word.push(c);
            i += 1;
        }
    }
}

/// A closing quote must be followed by a blank or the end of the line.
fn blank_or_end(line: &[u8], i: usize) -> Option<()> {
    line.get(i).is_none_or(|c| c.is_ascii_whitespace()).then_some(())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args(r: &Request) -> Vec<&[u8]> {
        r.args.iter().map(|a| &a[..]).collect()
    }

    #[test]
    fn arrays_of_bulk_strings() {
        let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        let (r, n) = parse(buf).unwrap().unwrap();
        assert_eq!(args(&r), [&b"GET"[..], b"k"]);
        assert_eq!(&buf[n..], b"rest");
        assert_eq!(
            parse(b"*1\r\n$0\r\n\r\n").unwrap().unwrap().0.args,
            [Bytes::new()]
        );
        let (r, n) = parse(b"*0\r\n").unwrap().unwrap();
        assert!(r.args.is_empty() && n == 4);
    }

    #[test]
    fn every_prefix_of_a_frame_is_incomplete() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nvv\r\n";
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        let (r, n) = parse(buf).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(r.args[2], &b"v\r\nvv"[..]);
    }

    #[test]
    fn a_frame_trickled_in_small_pieces_costs_linear_work() {
        let n = 100_000;
        let mut frame = format!("*{}\r\n$4\r\nMGET\r\n", n + 1).into_bytes();
        for i in 0..n {
            let key = format!("key:{i}");
            frame.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
        }
        let (mut ranges, mut progress) = (Vec::new(), Progress::default());
        let mut found = None;
        for end in (16..=frame.len()).step_by(16).chain([frame.len()]) {
            found = parse_frame(&frame[..end], &mut ranges, &mut progress, Limits::AUTHENTICATED).unwrap();
            // Checked as it goes, so a parser that re-reads fails at once
            // rather than after hours.
            assert!(
                progress.examined < 4 * frame.len(),
                "quadratic: {} bytes",
                progress.examined
            );
            if found.is_some() {
                break;
            }
        }
        assert_eq!(found, Some(Frame::Array { len: frame.len() }));
        assert_eq!(ranges.len(), n + 1);
        assert_eq!(&frame[ranges[n].clone()], format!("key:{}", n - 1).as_bytes());
        // Re-reading the frame from its start on each of the ~100,000 calls
        // would examine thousands of times its length.
        assert!(
            progress.examined < 4 * frame.len(),
            "examined {} bytes of a {}-byte frame",
            progress.examined,
            frame.len()
        );
    }

    #[test]
    fn before_auth_at_most_10_arguments_and_16_kib_a_bulk() {
        let unauth = |buf: &[u8]| {
            parse_frame(
                buf,
                &mut Vec::new(),
                &mut Progress::default(),
                Limits::UNAUTHENTICATED,
            )
            .map_err(|e| e.0)
            .map(|f| f.is_some())
        };
        let array = |n: usize| {
            let mut out = format!("*{n}\r\n").into_bytes();
            for _ in 0..n {
                out.extend_from_slice(b"$1\r\nx\r\n");
            }
            out
        };
        assert_eq!(unauth(&array(10)), Ok(true));
        assert_eq!(unauth(&array(11)), Err("unauthenticated multibulk length".into()));
        let bulk = |n: usize| format!("*1\r\n${n}\r\n{}\r\n", "x".repeat(n)).into_bytes();
        assert_eq!(unauth(&bulk(16 * 1024)), Ok(true));
        assert_eq!(
            unauth(&bulk(16 * 1024 + 1)),
            Err("unauthenticated bulk length".into())
        );
        assert_eq!(
            parse(&bulk(16 * 1024 + 1)).map(|r| r.is_some()),
            Ok(true),
            "after AUTH it is fine"
        );
    }

    #[test]
    fn a_length_line_is_bounded_alike_whole_or_in_pieces() {
        // Found by the fuzz target: a 104-digit count was accepted whole
        // and refused in pieces.
        let long = format!("*{}\r\n", "0".repeat(MAX_LENGTH_LINE + 1));
        let longest = format!("*{}1\r\n$1\r\na\r\n", "0".repeat(MAX_LENGTH_LINE - 1));
        for (frame, ok) in [(long, false), (longest, true)] {
            let frame = frame.as_bytes();
            assert_eq!(parse(frame).is_ok(), ok, "{:?}", String::from_utf8_lossy(frame));
            let (mut ranges, mut progress) = (Vec::new(), Progress::default());
            let pieces = (1..=frame.len())
                .map(|end| parse_frame(&frame[..end], &mut ranges, &mut progress, Limits::AUTHENTICATED))
                .find(|r| !matches!(r, Ok(None)));
            assert_eq!(
                pieces.unwrap().is_ok(),
                ok,
                "{:?}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn malformed_frames_and_oversized_lengths_are_errors() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n:1\r\n").is_err());
        assert!(parse(b"*1\r\n$-1\r\n").is_err());
        assert!(parse(b"*1\r\n$3\r\nabcde").is_err());
        assert!(parse(format!("*{}\r\n", MAX_ARRAY + 1).as_bytes()).is_err());
        assert!(parse(format!("*1\r\n${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
        assert!(parse(&[b'*'; 40]).is_err());
        assert!(parse(&vec![b'a'; MAX_INLINE + 1]).is_err());
        assert!(parse(b"GET \"k\r\n").is_err());
        assert!(parse(b"GET \"k\"x\r\n").is_err());
        // A bulk of the maximum size is fine, just incomplete.
        assert_eq!(parse(format!("*1\r\n${MAX_BULK}\r\n").as_bytes()), Ok(None));
    }

    #[test]
    fn inline_commands() {
        let (r, n) = parse(b"GET k\r\nnext").unwrap().unwrap();
        assert_eq!((args(&r), n), (vec![&b"GET"[..], b"k"], 7));
        let (r, _) = parse(b"  set  \"a b\\x41\\n\" 'it\\'s'\n").unwrap().unwrap();
        assert_eq!(args(&r), [&b"set"[..], b"a bA\n", b"it's"]);
        let (r, n) = parse(b"\r\n").unwrap().unwrap();
        assert!(r.args.is_empty() && n == 2);
        assert_eq!(parse(b"GET k"), Ok(None));
    }

    /// Encodes like a client library does.
    fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        for cmd in cmds {
            out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
            for a in cmd {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    proptest! {
        /// Random commands, encoded, fed to the parser in random pieces as a
        /// connection would read them, come back the same.
        #[test]
        fn split_reads_give_back_the_commands(
            cmds in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..10),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let bytes = encode(&cmds);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.push(bytes.len());
            cuts.sort();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut fed = 0;
            for cut in cuts {
                buf.extend_from_slice(&bytes[fed..cut]);
                fed = cut;
                while let Some((r, n)) = parse(&buf).unwrap() {
                    got.push(r.args.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
                    buf.drain(..n);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, cmds);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
