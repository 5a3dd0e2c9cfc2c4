//! TLS to Redis: `rediss://` against a real `redis-server --tls-port`, with
//! certificates made here: a private CA, a server certificate for
//! 127.0.0.1 and a client certificate for mutual TLS. The harness talks to
//! the same Redis on its plain port.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Proxy, RedisServer, free_port, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and the certificates it signed, as PEM files in a directory of
/// their own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("redis-proxy-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "redis-proxy test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let leaves = [
            ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", "redis-proxy", ExtendedKeyUsagePurpose::ClientAuth),
        ];
        for (name, san, usage) in leaves {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, san);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_string()
    }

    /// A redis-server on a plain port (the harness's) and a TLS port; with
    /// `verify_clients`, a TLS client must show a certificate the CA signed.
    fn redis(&self, verify_clients: bool) -> (RedisServer, u16) {
        let tls_port = free_port();
        let args = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            self.path("server.pem"),
            "--tls-key-file".into(),
            self.path("server.key"),
            "--tls-ca-cert-file".into(),
            self.path("ca.pem"),
            "--tls-auth-clients".into(),
            if verify_clients { "yes" } else { "no" }.into(),
        ];
        (RedisServer::start_with(free_port(), &args), tls_port)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rediss(tls_port: u16) -> String {
    format!("rediss://127.0.0.1:{tls_port}/0")
}

/// The proxy with its log (warnings and up) in a file, and `env` set.
fn proxy_logged(pki: &Pki, url: &str, args: &[&str], env: &[(&str, &str)]) -> (Proxy, PathBuf) {
    let log = pki.dir.join(format!("proxy-{}.log", free_port()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_redis-proxy"));
    command
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    for (name, value) in env {
        command.env(name, value);
    }
    (Proxy::launch(command, url, args), log)
}

/// Serves a key, then sees a direct write on Redis: the tracking
/// connection's invalidations come over TLS too.
fn serves_and_tracks(redis: &RedisServer, proxy: &Proxy) {
    proxy.wait_ready();
    redis.set("tls-key", "v1");
    let r = proxy.get("/get/tls-key");
    assert_eq!((r.status, r.json()["value"].as_str()), (200, Some("v1")));
    assert_eq!(proxy.get("/get/tls-key").cache(), "HIT");
    redis.set("tls-key", "v2");
    wait_for("the direct write to be seen", || {
        (proxy.get("/get/tls-key").json()["value"] == "v2").then_some(())
    });
    // Forwarded commands go over TLS too, on connections of their own:
    // shared (a pipeline) and pinned (a transaction).
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/0", proxy.resp))
        .unwrap()
        .get_connection()
        .unwrap();
    let (strlen, exists): (i64, i64) = redis::pipe()
        .cmd("STRLEN")
        .arg("tls-key")
        .cmd("EXISTS")
        .arg("tls-key")
        .query(&mut c)
        .unwrap();
    assert_eq!((strlen, exists), (2, 1));
    let (value,): (String,) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("tls-key")
        .query(&mut c)
        .unwrap();
    assert_eq!(value, "v2");
}

/// Waits for the proxy to log why it cannot use Redis; then it is not
/// ready and a read is 503, not a false 404.
fn refused(proxy: &Proxy, log: &PathBuf, why: &str) {
    let line = wait_for("the proxy to log why it cannot use Redis", || {
        let text = std::fs::read_to_string(log).unwrap();
        text.lines()
            .find(|l| l.contains("cannot use Redis"))
            .map(str::to_string)
    });
    assert!(line.contains(why), "{line}");
    assert_eq!(proxy.admin_get("/readyz").unwrap().status, 503);
    assert_eq!(proxy.get("/get/tls-key").status, 503);
}

#[test]
fn rediss_with_a_private_ca_serves_and_sees_direct_writes() {
    let pki = Pki::new("private-ca");
    let (redis, tls_port) = pki.redis(false);
    let ca = pki.path("ca.pem");
    let proxy = Proxy::start_url(&rediss(tls_port), &["--redis-ca-cert", &ca]);
    serves_and_tracks(&redis, &proxy);
}

#[test]
fn without_the_ca_flag_the_systems_roots_decide() {
    let pki = Pki::new("system-roots");
    let (redis, tls_port) = pki.redis(false);
    // The system's roots, as a public CA's certificate would be checked:
    // rustls-native-certs reads SSL_CERT_FILE in place of the system store,
    // so the test CA stands in for a public one.
    let (proxy, _) = proxy_logged(
        &pki,
        &rediss(tls_port),
        &[],
        &[("SSL_CERT_FILE", &pki.path("ca.pem"))],
    );
    serves_and_tracks(&redis, &proxy);
    // The real system store does not trust the test CA: refused.
    let (proxy, log) = proxy_logged(&pki, &rediss(tls_port), &[], &[]);
    refused(&proxy, &log, "UnknownIssuer");
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new("mutual");
    let (redis, tls_port) = pki.redis(true);
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let args = [
        "--redis-ca-cert",
        &ca,
        "--redis-client-cert",
        &cert,
        "--redis-client-key",
        &key,
    ];
    let proxy = Proxy::start_url(&rediss(tls_port), &args);
    serves_and_tracks(&redis, &proxy);
    drop(proxy);
    // The same, through the environment.
    let env = [
        ("REDIS_CA_CERT", ca.as_str()),
        ("REDIS_CLIENT_CERT", &cert),
        ("REDIS_CLIENT_KEY", &key),
    ];
    let (proxy, _) = proxy_logged(&pki, &rediss(tls_port), &[], &env);
    serves_and_tracks(&redis, &proxy);
    drop(proxy);
    // Without one, Redis ends the handshake.
    let (proxy, log) = proxy_logged(&pki, &rediss(tls_port), &["--redis-ca-cert", &ca], &[]);
    refused(&proxy, &log, "CertificateRequired");
}

#[test]
fn tls_files_that_cannot_be_used_exit_2_with_one_line() {
    let pki = Pki::new("bad-files");
    std::fs::write(pki.dir.join("not.pem"), "not a certificate\n").unwrap();
    let (ca, cert, key, junk) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
        pki.path("not.pem"),
    );
    let missing = pki.path("missing.pem");
    let tls = "rediss://127.0.0.1:1/0";
    let cases: &[(&[&str], &str)] = &[
        (
            &["--redis-url", "redis://127.0.0.1:1/0", "--redis-ca-cert", &ca],
            "--redis-ca-cert is for TLS: it needs a rediss:// URL",
        ),
        (
            &["--redis-url", tls, "--redis-ca-cert", &missing],
            "--redis-ca-cert: cannot read",
        ),
        (
            &["--redis-url", tls, "--redis-ca-cert", &junk],
            "--redis-ca-cert: no PEM certificate",
        ),
        (
            &["--redis-url", tls, "--redis-client-cert", &cert],
            "--redis-client-cert and --redis-client-key go together",
        ),
        (
            &[
                "--redis-url",
                tls,
                "--redis-client-cert",
                &cert,
                "--redis-client-key",
                &junk,
            ],
            "--redis-client-key",
        ),
        (
            &[
                "--redis-url",
                tls,
                "--redis-client-cert",
                &key,
                "--redis-client-key",
                &key,
            ],
            "--redis-client-cert: no PEM certificate",
        ),
        (&["--redis-url", "rediss://127.0.0.1:1/#insecure"], "--redis-url"),
    ];
    for (args, expected) in cases {
        let (code, stderr) = common::run_with(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
