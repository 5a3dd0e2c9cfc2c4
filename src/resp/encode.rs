//! Replies → bytes, in RESP2 or RESP3 (after `HELLO 3`), into an
//! [`Output`] that copies small values into one buffer and keeps large ones
//! as they are, to be written with the rest in one vectored write.

use std::borrow::Cow;
use std::io::IoSlice;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Values at least this large are not copied into the output buffer.
pub const SHARE_FROM: usize = 16 * 1024;

/// Encoded replies waiting to be written: a buffer, and the large values
/// between its parts.
#[derive(Default)]
pub struct Output {
    buf: BytesMut,
    /// Written before `buf`: parts of it already split off, and large
    /// values, in order.
    chunks: Vec<Bytes>,
    chunked: usize,
}

impl Output {
    pub fn with_capacity(n: usize) -> Self {
        Output {
            buf: BytesMut::with_capacity(n),
            ..Output::default()
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.chunked + self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.chunks.clear();
        // A huge MGET's list of chunks is not kept for the connection's life.
        if self.chunks.capacity() > 1024 {
            self.chunks = Vec::new();
        }
        self.chunked = 0;
    }

    fn put_u8(&mut self, b: u8) {
        self.buf.put_u8(b);
    }

    fn put_slice(&mut self, s: &[u8]) {
        self.buf.put_slice(s);
    }

    /// A reply already encoded (by Redis), passed on as it is.
    pub fn put_raw(&mut self, reply: &Bytes) {
        self.put_value(reply);
    }

    /// A value: copied if small, else queued as it is.
    fn put_value(&mut self, v: &Bytes) {
        if v.len() < SHARE_FROM {
            self.buf.put_slice(v);
            return;
        }
        if !self.buf.is_empty() {
            let head = self.buf.split().freeze();
            self.chunked += head.len();
            self.chunks.push(head);
        }
        self.chunked += v.len();
        self.chunks.push(v.clone());
    }

    /// Writes everything to `w` (one write when no value was large, one
    /// vectored write when none is short), then empties.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        if self.chunks.is_empty() {
            w.write_all(&self.buf).await?;
            self.buf.clear();
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.chunks.push(self.buf.split().freeze());
        }
        let (mut first, mut skip) = (0, 0);
        while first < self.chunks.len() {
            // At most what one system call takes (IOV_MAX), so a long list
            // written slowly is not rebuilt whole on every call.
            let slices: Vec<IoSlice<'_>> = std::iter::once(&self.chunks[first][skip..])
                .chain(self.chunks[first + 1..].iter().map(|c| &c[..]))
                .take(1024)
                .map(IoSlice::new)
                .collect();
            let mut n = w.write_vectored(&slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let left = self.chunks[first].len() - skip;
                if n < left {
                    skip += n;
                    n = 0;
                } else {
                    n -= left;
                    first += 1;
                    skip = 0;
                }
            }
        }
        self.clear();
        Ok(())
    }

    /// Everything encoded so far, as one vector (for tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all: Vec<u8> = self.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        all.extend_from_slice(&self.buf);
        all
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// A reply, independent of the protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Cow<'static, str>),
    /// The whole error line, code first: `ERR unknown command …`.
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// Text for a person (INFO): RESP3's verbatim string (`=`, format
    /// `txt`), a bulk string in RESP2.
    Verbatim(Bytes),
    Null,
    Array(Vec<Reply>),
    /// A map in RESP3, a flat array of key, value, … in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Cow::Borrowed(s))
    }

    pub fn error(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    pub fn bulk(s: impl Into<Bytes>) -> Reply {
        Reply::Bulk(s.into())
    }
}

pub fn encode(reply: &Reply, proto: Proto, out: &mut Output) {
    match reply {
        Reply::Simple(s) => line(out, b'+', s.as_bytes()),
        Reply::Error(e) => {
            // An error is one line: a CR or LF inside would end it early.
            let clean: Vec<u8> = e
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect();
            line(out, b'-', &clean)
        }
        Reply::Int(n) => line(out, b':', itoa::Buffer::new().format(*n).as_bytes()),
        Reply::Bulk(b) => {
            header(out, b'$', b.len());
            out.put_value(b);
            out.put_slice(b"\r\n");
        }
        Reply::Verbatim(text) if proto == Proto::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.put_slice(b"txt:");
            out.put_value(text);
            out.put_slice(b"\r\n");
        }
        Reply::Verbatim(b) => encode(&Reply::Bulk(b.clone()), proto, out),
        Reply::Null => match proto {
            Proto::Resp2 => out.put_slice(b"$-1\r\n"),
            Proto::Resp3 => out.put_slice(b"_\r\n"),
        },
        Reply::Array(items) => {
            header(out, b'*', items.len());
            for item in items {
                encode(item, proto, out);
            }
        }
        Reply::Map(pairs) => {
            match proto {
                Proto::Resp2 => header(out, b'*', pairs.len() * 2),
                Proto::Resp3 => header(out, b'%', pairs.len()),
            }
            for (k, v) in pairs {
                encode(k, proto, out);
                encode(v, proto, out);
            }
        }
    }
}

/// The start of an array of `len` replies, encoded one by one after it.
pub fn array_header(len: usize, out: &mut Output) {
    header(out, b'*', len);
}

fn header(out: &mut Output, kind: u8, len: usize) {
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

fn line(out: &mut Output, kind: u8, text: &[u8]) {
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, p: Proto) -> Vec<u8> {
        let mut out = Output::default();
        encode(r, p, &mut out);
        out.to_vec()
    }

    #[tokio::test]
    async fn large_values_are_written_from_where_they_are() {
        let big = Bytes::from(vec![b'x'; SHARE_FROM]);
        let mut out = Output::default();
        encode(&Reply::bulk("small"), Proto::Resp2, &mut out);
        encode(&Reply::Bulk(big.clone()), Proto::Resp2, &mut out);
        encode(
            &Reply::Array(vec![Reply::Bulk(big.clone()), Reply::Int(1)]),
            Proto::Resp2,
            &mut out,
        );
        let shared = out.chunks.iter().filter(|c| c.as_ptr() == big.as_ptr()).count();
        assert_eq!(shared, 2, "the value itself, twice, not copies");
        let mut expected = b"$5\r\nsmall\r\n".to_vec();
        for prefix in [&b""[..], &b"*2\r\n"[..]] {
            expected.extend_from_slice(prefix);
            expected.extend_from_slice(format!("${SHARE_FROM}\r\n").as_bytes());
            expected.extend_from_slice(&big);
            expected.extend_from_slice(b"\r\n");
        }
        expected.extend_from_slice(b":1\r\n");
        assert_eq!(out.len(), expected.len());
        let mut written = Vec::new();
        out.write_to(&mut written).await.unwrap();
        assert_eq!(written, expected);
        assert!(out.is_empty());
    }

    #[test]
    fn each_reply_in_resp2_and_resp3() {
        use Proto::*;
        assert_eq!(enc(&Reply::ok(), Resp2), b"+OK\r\n");
        assert_eq!(enc(&Reply::error("ERR x\ny"), Resp2), b"-ERR x y\r\n");
        assert_eq!(enc(&Reply::Int(-3), Resp3), b":-3\r\n");
        assert_eq!(enc(&Reply::bulk("ab"), Resp2), b"$2\r\nab\r\n");
        assert_eq!(enc(&Reply::Null, Resp2), b"$-1\r\n");
        assert_eq!(enc(&Reply::Null, Resp3), b"_\r\n");
        let arr = Reply::Array(vec![Reply::bulk("a"), Reply::Null]);
        assert_eq!(enc(&arr, Resp2), b"*2\r\n$1\r\na\r\n$-1\r\n");
        let map = Reply::Map(vec![(Reply::bulk("k"), Reply::Int(1))]);
        assert_eq!(enc(&map, Resp2), b"*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(enc(&map, Resp3), b"%1\r\n$1\r\nk\r\n:1\r\n");
    }
}
