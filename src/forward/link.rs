//! One raw connection to Redis: TCP or TLS, set up (HELLO in the client's
//! protocol, AUTH, SELECT, `CLIENT NO-EVICT on`), then bytes in and whole
//! replies out. Replies are not decoded: they go to the client as Redis
//! wrote them.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, IntoConnectionInfo, ProtocolVersion, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::reply::{Scanner, is_error};
use crate::error::Error;

/// A byte stream to Redis, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// Where Redis is and how to log in: the `--redis-url` and TLS files.
pub struct Target {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    user: Option<String>,
    password: Option<String>,
    /// The database of `--redis-url`.
    pub db: i64,
    connect_timeout: Duration,
}

/// What Redis said of itself in the HELLO that set a connection up.
#[derive(Debug, Clone, Default)]
pub struct Server {
    pub version: String,
    /// The HELLO reply's `modules` field, as Redis sent it.
    pub modules: Option<Value>,
}

impl Target {
    pub fn new(
        url: &str,
        tls: Option<&redis::TlsCertificates>,
        connect_timeout: Duration,
    ) -> Result<Target, String> {
        let info = url.into_connection_info().map_err(|e| e.to_string())?;
        let settings = info.redis_settings();
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, None),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let config = tls_config(tls)?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host}: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                (host.clone(), *port, Some((connector, name)))
            }
            other => return Err(format!("unsupported address {other:?}")),
        };
        Ok(Target {
            host,
            port,
            tls,
            user: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
            db: settings.db(),
            connect_timeout,
        })
    }

    /// A connection speaking `proto`, on database `db`, ready for commands.
    pub async fn connect(
        &self,
        proto: ProtocolVersion,
        db: i64,
        name: &str,
    ) -> Result<(Link, Server), Error> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|e| Error::unavailable(format!("connecting to Redis: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| Error::unavailable(format!("TLS to Redis: {e}")))?,
                ),
            };
            let mut link = Link::new(io);
            let server = self.set_up(&mut link, proto, db, name).await?;
            Ok((link, server))
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.connect_timeout)),
        }
    }

    async fn set_up(
        &self,
        link: &mut Link,
        proto: ProtocolVersion,
        db: i64,
        name: &str,
    ) -> Result<Server, Error> {
        let version: &[u8] = if proto == ProtocolVersion::RESP3 {
            b"3"
        } else {
            b"2"
        };
        let mut hello: Vec<&[u8]> = vec![b"HELLO", version];
        if let Some(password) = &self.password {
            hello.extend([
                b"AUTH".as_slice(),
                self.user.as_deref().unwrap_or("default").as_bytes(),
                password.as_bytes(),
            ]);
        }
        hello.extend([b"SETNAME".as_slice(), name.as_bytes()]);
        let reply = link.call(&hello).await?;
        if is_error(&reply) {
            return Err(Error::unavailable(format!(
                "Redis refused HELLO: {}",
                String::from_utf8_lossy(reply.trim_ascii_end())
            )));
        }
        let server = server_of(&reply);
        if db != 0 {
            let reply = link.call(&[b"SELECT", db.to_string().as_bytes()]).await?;
            if is_error(&reply) {
                // Redis's words, for the client whose SELECT this is.
                let line = String::from_utf8_lossy(&reply[1..]);
                let message = line.trim_end().trim_start_matches("ERR ").to_string();
                return Err(Error::redis("ERR", message));
            }
        }
        // A client asking for a huge reply must not get the proxy's own
        // connections evicted (maxmemory-clients); refused by old Redis or
        // a user without CLIENT, which is fine.
        link.call(&[b"CLIENT", b"NO-EVICT", b"on"]).await?;
        Ok(server)
    }
}

/// The TLS settings for `rediss://`: the given CA (else the system's roots)
/// and client certificate.
fn tls_config(files: Option<&redis::TlsCertificates>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match files.and_then(|f| f.root_cert.as_ref()) {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match files.and_then(|f| f.client_tls.as_ref()) {
        Some(client) => {
            let certs = CertificateDer::pem_slice_iter(&client.client_cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(&client.client_key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The version and modules a HELLO reply names.
fn server_of(reply: &[u8]) -> Server {
    let mut server = Server::default();
    let Ok(value) = redis::parse_redis_value(reply) else {
        return server;
    };
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut items = items.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        _ => return server,
    };
    for (k, v) in pairs {
        let key = match &k {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        match (key.as_str(), v) {
            ("version", Value::BulkString(b)) => server.version = String::from_utf8_lossy(&b).into_owned(),
            ("version", Value::SimpleString(s)) => server.version = s,
            ("modules", v) => server.modules = Some(v),
            _ => {}
        }
    }
    server
}

pub type Reader = tokio::io::ReadHalf<Box<dyn Io>>;
pub type Writer = tokio::io::WriteHalf<Box<dyn Io>>;

/// A connection: the stream, and what has been read of the next reply.
pub struct Link {
    io: Box<dyn Io>,
    input: BytesMut,
    scanner: Scanner,
}

impl Link {
    fn new(io: Box<dyn Io>) -> Link {
        Link {
            io,
            input: BytesMut::with_capacity(16 * 1024),
            scanner: Scanner::default(),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Bytes, Error> {
        let mut packed = BytesMut::new();
        pack(args, &mut packed);
        self.send(&packed).await?;
        self.reply().await
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.io.write_all(bytes).await.map_err(lost)?;
        // TLS buffers what it encrypts until flushed.
        self.io.flush().await.map_err(lost)
    }

    /// The next whole reply. Cancel-safe: what was read stays for the
    /// next call.
    pub async fn reply(&mut self) -> Result<Bytes, Error> {
        loop {
            if !self.input.is_empty()
                && let Some(len) = self.scanner.scan(&self.input).map_err(out_of_step)?
            {
                return Ok(self.input.split_to(len).freeze());
            }
            if self.input.capacity() - self.input.len() < 4096 {
                self.input.reserve(64 * 1024);
            }
            match self.io.read_buf(&mut self.input).await {
                Ok(0) => return Err(Error::unavailable("Redis closed the connection")),
                Ok(_) => {}
                Err(e) => return Err(lost(e)),
            }
        }
    }

    /// The two halves, for a connection shared by many clients.
    pub fn split(self) -> (Reader, Writer, BytesMut) {
        let (r, w) = tokio::io::split(self.io);
        (r, w, self.input)
    }
}

fn lost(e: std::io::Error) -> Error {
    Error::unavailable(format!("connection to Redis lost: {e}"))
}

fn out_of_step(e: String) -> Error {
    Error::unavailable(format!("Redis sent something that is not RESP: {e}"))
}

/// Appends `args` as one RESP command.
pub fn pack<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    use bytes::BufMut;
    let mut num = itoa::Buffer::new();
    out.put_u8(b'*');
    out.put_slice(num.format(args.len()).as_bytes());
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        out.put_slice(num.format(arg.len()).as_bytes());
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}
