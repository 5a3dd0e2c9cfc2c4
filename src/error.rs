//! One error type, sorted by where the error came from (as pingora does):
//! upstream (Redis down, too slow, or answering with an error), downstream
//! (a request the client should not have sent), internal (a bug). This is
//! the one place that decides what a client sees: the HTTP status and the
//! RESP error line. A Redis failure is a 503/504 or `-ERR`, never a 404 or
//! a nil.

use std::sync::Arc;
use std::time::Duration;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Redis, or the connection to it.
    Upstream,
    /// The client's request.
    Downstream,
    /// The proxy itself.
    Internal,
}

/// What went wrong while answering a request.
///
/// Cloned to every waiter of a coalesced miss, so it holds shared strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Redis is not connected, refused the connection or dropped it.
    #[error("backend unavailable: {0}")]
    Unavailable(Arc<str>),
    /// One Redis round trip took longer than `--backend-timeout`.
    #[error("backend timed out after {0:?}")]
    Timeout(Duration),
    /// A forwarded command's reply took longer than `--forward-timeout`:
    /// the command may have run.
    #[error("backend timed out after {0:?}; the command may have run")]
    ForwardTimeout(Duration),
    /// The key holds a list, hash, … rather than a string.
    #[error("{0}")]
    WrongType(Arc<str>),
    /// Redis answered with an error reply other than WRONGTYPE.
    #[error("backend error: {0}")]
    Reply(Arc<str>),
    /// The client's request cannot be served as sent: the HTTP status, the
    /// RESP error code (`ERR`, `NOAUTH`, `WRONGPASS`, …) and what to say.
    #[error("{message}")]
    Client {
        status: u16,
        code: &'static str,
        message: Arc<str>,
    },
    /// A bug: a task that failed, a state that should not happen.
    #[error("internal error: {0}")]
    Internal(Arc<str>),
}

impl Error {
    pub fn unavailable(msg: impl Into<Arc<str>>) -> Self {
        Error::Unavailable(msg.into())
    }

    pub fn internal(msg: impl Into<Arc<str>>) -> Self {
        Error::Internal(msg.into())
    }

    /// A client error answered with `status` over HTTP and `-ERR message`
    /// over RESP.
    pub fn client(status: u16, message: impl Into<Arc<str>>) -> Self {
        Error::Client {
            status,
            code: "ERR",
            message: message.into(),
        }
    }

    /// A client error as Redis words it: `code message` over RESP, 400 over
    /// HTTP.
    pub fn redis(code: &'static str, message: impl Into<Arc<str>>) -> Self {
        Error::Client {
            status: 400,
            code,
            message: message.into(),
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Error::Unavailable(_)
            | Error::Timeout(_)
            | Error::ForwardTimeout(_)
            | Error::WrongType(_)
            | Error::Reply(_) => Origin::Upstream,
            Error::Client { .. } => Origin::Downstream,
            Error::Internal(_) => Origin::Internal,
        }
    }

    /// The HTTP status that answers it.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Unavailable(_) | Error::Reply(_) => 503,
            Error::Timeout(_) | Error::ForwardTimeout(_) => 504,
            Error::WrongType(_) => 409,
            Error::Client { status, .. } => *status,
            Error::Internal(_) => 500,
        }
    }

    /// The RESP error line that answers it, code first, without the `-`.
    pub fn resp_line(&self) -> String {
        match self {
            Error::Unavailable(_) => "ERR backend unavailable".into(),
            Error::Timeout(t) => format!("ERR backend timed out after {t:?}"),
            Error::ForwardTimeout(t) => format!(
                "ERR backend timed out after {}; the command may have run",
                humantime::format_duration(*t)
            ),
            Error::WrongType(msg) => msg.to_string(),
            Error::Reply(msg) => format!("ERR backend error: {msg}"),
            Error::Client { code, message, .. } => format!("{code} {message}"),
            Error::Internal(msg) => format!("ERR internal error: {msg}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_failure_is_never_a_404_or_a_nil() {
        let upstream = [
            Error::unavailable("down"),
            Error::Timeout(Duration::from_secs(1)),
            Error::ForwardTimeout(Duration::from_secs(30)),
            Error::Reply("ERR x".into()),
        ];
        for e in upstream {
            assert_eq!(e.origin(), Origin::Upstream);
            assert!(matches!(e.http_status(), 503 | 504), "{e:?}");
            assert!(e.resp_line().starts_with("ERR backend"), "{e:?}");
        }
    }

    #[test]
    fn each_error_has_its_status_and_line() {
        let wrong = Error::WrongType("WRONGTYPE Operation against a key".into());
        assert_eq!(
            (wrong.http_status(), wrong.resp_line().as_str()),
            (409, "WRONGTYPE Operation against a key")
        );
        let noauth = Error::redis("NOAUTH", "Authentication required.");
        assert_eq!(noauth.origin(), Origin::Downstream);
        assert_eq!(noauth.resp_line(), "NOAUTH Authentication required.");
        let empty = Error::client(400, "empty key");
        assert_eq!(
            (empty.http_status(), empty.resp_line().as_str()),
            (400, "ERR empty key")
        );
        assert_eq!(empty.to_string(), "empty key");
        let bug = Error::internal("a task panicked");
        assert_eq!((bug.origin(), bug.http_status()), (Origin::Internal, 500));
    }
}
