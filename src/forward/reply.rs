//! Where one reply from Redis ends, in RESP2 or RESP3, without decoding
//! it: forwarded replies are passed on as the bytes Redis wrote, so a
//! client sees exactly what Redis would have sent it.

/// Where a reply being read ends, kept between reads: a long reply that
/// arrives in many pieces is scanned once, not again from its start at
/// every read.
#[derive(Debug, Clone, Copy)]
pub struct Scanner {
    /// How far the complete elements go.
    at: usize,
    /// Elements still to skip: one, plus the elements of the aggregates
    /// opened on the way (an attribute adds the reply it precedes).
    left: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner { at: 0, left: 1 }
    }
}

impl Scanner {
    /// The length of the reply at the start of `buf`, if it is all there
    /// (then the scanner is ready for the next reply, which starts at
    /// that length: the caller splits it off). `buf` only grows between
    /// calls that return None.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        while self.left > 0 {
            let Some(line_end) = find_crlf(buf, self.at) else {
                return Ok(None);
            };
            let kind = buf[self.at];
            let line = &buf[self.at + 1..line_end];
            let mut next = line_end + 2;
            let mut more = 0;
            match kind {
                b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {}
                b'$' | b'!' | b'=' => {
                    let n = number(line)?;
                    if n >= 0 {
                        let end = next + n as usize + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err("a bulk reply without its CRLF".into());
                        }
                        next = end;
                    }
                }
                b'*' | b'~' | b'>' => more = number(line)?.max(0) as u64,
                b'%' => more = 2 * number(line)?.max(0) as u64,
                // An attribute map, then the reply it is about.
                b'|' => more = 2 * number(line)?.max(0) as u64 + 1,
                other => return Err(format!("unexpected reply type byte {other:#04x}")),
            }
            self.at = next;
            self.left = self.left - 1 + more;
        }
        let len = self.at;
        *self = Scanner::default();
        Ok(Some(len))
    }
}

/// A reply's length in `buf`, if it is all there.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, String> {
    Scanner::default().scan(buf)
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let i = memchr(b'\r', rest)?;
    (rest.get(i + 1) == Some(&b'\n')).then_some(from + i)
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

fn number(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length in reply: {:?}", String::from_utf8_lossy(line)))
}

/// Whether a complete reply is an error (`-` or RESP3's `!`).
pub fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}

/// Whether a complete reply is a RESP3 push.
pub fn is_push(reply: &[u8]) -> bool {
    reply.first() == Some(&b'>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_replies_of_every_type() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":12\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"%1\r\n+k\r\n*1\r\n,1.5\r\n",
            b"~2\r\n#t\r\n_\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"!3\r\nERR\r\n",
            b"(123\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
            b"$4\r\na\r\nb\r\n",
        ];
        for case in cases {
            assert_eq!(
                reply_len(case),
                Ok(Some(case.len())),
                "{}",
                String::from_utf8_lossy(case)
            );
            let mut two = case.to_vec();
            two.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(reply_len(&two), Ok(Some(case.len())));
            for cut in 0..case.len() {
                assert_eq!(reply_len(&case[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_reply_in_pieces_is_scanned_once() {
        let mut reply = b"*3\r\n".to_vec();
        reply.extend_from_slice(b"$3\r\nabc\r\n:1\r\n*1\r\n+x\r\n");
        let mut scanner = Scanner::default();
        for cut in 0..reply.len() {
            assert_eq!(scanner.scan(&reply[..cut]), Ok(None));
        }
        assert_eq!(scanner.scan(&reply), Ok(Some(reply.len())));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(reply_len(b"?x\r\n").is_err());
        assert!(reply_len(b"$x\r\n").is_err());
        assert!(reply_len(b"$1\r\nabc\r\n").is_err());
    }
}
