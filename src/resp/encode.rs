//! Replies → bytes, in RESP2 or RESP3 (after `HELLO 3`).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

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

pub fn encode(reply: &Reply, proto: Proto, out: &mut BytesMut) {
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
            out.put_slice(b);
            out.put_slice(b"\r\n");
        }
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

fn header(out: &mut BytesMut, kind: u8, len: usize) {
    out.put_u8(kind);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, p: Proto) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(r, p, &mut out);
        out.to_vec()
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
