//! Connections to Postgres, ordinary and walsender: every authentication method
//! (trust, cleartext, MD5, SCRAM-SHA-256), TLS per `sslmode` against a cluster with its
//! own CA, and one clear sentence when something is wrong.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use pgch::config::{PgEndpoint, Secret, SslMode};
use pgch::source::connect;
use pgch::source::walsender::Walsender;
use pgch::source::wire::WireError;
use pgch::testkit::postgres::{PgCluster, PgOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

fn endpoint(
    pg: &PgCluster,
    host: &str,
    user: &str,
    password: &str,
    sslmode: SslMode,
    root: Option<PathBuf>,
) -> PgEndpoint {
    PgEndpoint {
        host: host.to_string(),
        port: pg.port,
        user: user.to_string(),
        password: Secret::new(password),
        database: "postgres".to_string(),
        sslmode,
        sslrootcert: root,
        connect_timeout: std::time::Duration::from_secs(10),
        other_hosts: Vec::new(),
        read_write_only: false,
    }
}

/// Both kinds of session work, and the walsender answers IDENTIFY_SYSTEM.
async fn both_sessions_work(ep: &PgEndpoint) -> bool {
    let client = connect::connect(ep)
        .await
        .unwrap_or_else(|e| panic!("ordinary session: {e}"));
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let ssl: bool = row.get(0);
    let mut w = Walsender::connect(ep)
        .await
        .unwrap_or_else(|e| panic!("walsender: {e}"));
    let sys = w.identify_system().await.unwrap();
    assert!(!sys.system_id.is_empty());
    assert!(sys.wal_position > pgch::lsn::Lsn::ZERO);
    w.close().await;
    ssl
}

#[tokio::test]
async fn trust_cleartext_md5_and_scram_all_authenticate() {
    let opts = PgOptions {
        hba_prepend: vec![
            "host all clear_user 127.0.0.1/32 password".into(),
            "host replication clear_user 127.0.0.1/32 password".into(),
            "host all md5_user 127.0.0.1/32 md5".into(),
            "host replication md5_user 127.0.0.1/32 md5".into(),
        ],
        ..Default::default()
    };
    let pg = PgCluster::start(opts).unwrap();
    pg.sql(
        "postgres",
        "CREATE USER clear_user REPLICATION PASSWORD 'clear pw';
         SET password_encryption = 'md5'; CREATE USER md5_user REPLICATION PASSWORD 'md5 pw';
         SET password_encryption = 'scram-sha-256'; CREATE USER scram_user REPLICATION PASSWORD 'scram pw';",
    )
    .unwrap();
    for (user, pw) in [
        ("postgres", ""),
        ("clear_user", "clear pw"),
        ("md5_user", "md5 pw"),
        ("scram_user", "scram pw"),
    ] {
        let ep = endpoint(&pg, "127.0.0.1", user, pw, SslMode::Disable, None);
        assert!(
            !both_sessions_work(&ep).await,
            "{user}: no TLS under disable"
        );
    }
}

#[tokio::test]
async fn wrong_password_is_one_clear_sentence() {
    let pg = PgCluster::shared();
    let user = pgch::testkit::unique_name("scram");
    pg.sql(
        "postgres",
        &format!("CREATE USER {user} REPLICATION PASSWORD 'right';"),
    )
    .unwrap();
    let ep = endpoint(pg, "127.0.0.1", &user, "wrong", SslMode::Disable, None);
    let err = Walsender::connect(&ep).await.err().unwrap();
    assert_eq!(err.sqlstate(), Some("28P01"));
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}", pg.port))
            && text.contains("password authentication failed"),
        "{text}"
    );
    assert!(!text.contains('\n') && !text.contains("wrong"), "{text}");
    let err = connect::connect(&ep).await.err().unwrap().message;
    assert!(
        err.contains("rejected the password") && !err.contains('\n'),
        "{err}"
    );
}

struct Pki {
    dir: tempfile::TempDir,
    server_cert: String,
    server_key: String,
}

impl Pki {
    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A CA, and a server certificate it signed for `names` (DNS) and 127.0.0.1 if `with_ip`.
fn pki(names: &[&str], with_ip: bool) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pgch test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    if with_ip {
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("server"),
    );
    let server_cert = params.signed_by(&server_key, &ca_cert, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    Pki {
        dir,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
    }
}

fn tls_cluster(p: &Pki) -> PgCluster {
    let opts = PgOptions {
        files: vec![
            ("server.crt".into(), p.server_cert.clone().into_bytes()),
            ("server.key".into(), p.server_key.clone().into_bytes()),
        ],
        ..Default::default()
    }
    .setting("ssl", "on")
    .setting("ssl_cert_file", "'server.crt'")
    .setting("ssl_key_file", "'server.key'");
    let pg = PgCluster::start(opts).unwrap();
    pg.sql(
        "postgres",
        "CREATE USER tls_user REPLICATION PASSWORD 'tls pw';",
    )
    .unwrap();
    pg
}

#[tokio::test]
async fn tls_verify_full_checks_the_chain_and_the_host_name() {
    let p = pki(&["localhost"], true);
    let pg = tls_cluster(&p);
    for host in ["127.0.0.1", "localhost"] {
        let ep = endpoint(
            &pg,
            host,
            "tls_user",
            "tls pw",
            SslMode::VerifyFull,
            Some(p.ca_path()),
        );
        assert!(
            both_sessions_work(&ep).await,
            "verify-full to {host} must use TLS"
        );
    }
    // prefer and require encrypt too.
    for mode in [SslMode::Prefer, SslMode::Require] {
        let ep = endpoint(&pg, "127.0.0.1", "tls_user", "tls pw", mode, None);
        assert!(
            both_sessions_work(&ep).await,
            "{mode:?} must use TLS when offered"
        );
    }
    // A CA that did not sign the server's certificate is refused, in one sentence.
    let other = pki(&["localhost"], true);
    let ep = endpoint(
        &pg,
        "127.0.0.1",
        "tls_user",
        "tls pw",
        SslMode::VerifyFull,
        Some(other.ca_path()),
    );
    let err = Walsender::connect(&ep).await.err().unwrap();
    assert!(matches!(err, WireError::Tls { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    assert!(connect::connect(&ep).await.is_err());
}

#[tokio::test]
async fn tls_verify_ca_accepts_another_host_name_but_verify_full_does_not() {
    let p = pki(&["db.example"], false);
    let pg = tls_cluster(&p);
    let full = endpoint(
        &pg,
        "127.0.0.1",
        "tls_user",
        "tls pw",
        SslMode::VerifyFull,
        Some(p.ca_path()),
    );
    let err = Walsender::connect(&full).await.err().unwrap();
    assert!(err.to_string().contains("TLS"), "{err}");
    let ca = endpoint(
        &pg,
        "127.0.0.1",
        "tls_user",
        "tls pw",
        SslMode::VerifyCa,
        Some(p.ca_path()),
    );
    assert!(both_sessions_work(&ca).await);
}

#[tokio::test]
async fn require_against_a_server_without_tls_says_so() {
    let pg = PgCluster::shared();
    let ep = endpoint(pg, "127.0.0.1", "postgres", "", SslMode::Require, None);
    let err = Walsender::connect(&ep).await.err().unwrap();
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    let err = connect::connect(&ep).await.err().unwrap().message;
    assert!(err.contains("TLS") || err.contains("SSL"), "{err}");
}

/// pgch beside the database connects through the server's Unix socket, as
/// `postgres://user@/db?host=/dir` asks: both kinds of session, no TLS there (sslmode is
/// ignored on a socket, as libpq does), and a directory without the socket says what to
/// look at.
#[tokio::test]
async fn a_unix_socket_directory_serves_both_sessions() {
    let pg = PgCluster::shared();
    let dir = pg.socket_dir().display().to_string();
    for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
        let ep = endpoint(pg, &dir, "postgres", "", mode, None);
        assert!(
            !both_sessions_work(&ep).await,
            "no TLS over a Unix socket ({mode:?})"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let ep = endpoint(
        pg,
        &empty.path().display().to_string(),
        "postgres",
        "",
        SslMode::Prefer,
        None,
    );
    let socket = format!("{}/.s.PGSQL.{}", empty.path().display(), pg.port);
    let err = connect::connect(&ep).await.err().unwrap().to_string();
    assert!(err.contains(&socket), "{err}");
    assert!(err.contains("unix_socket_directories"), "{err}");
    let err = Walsender::connect(&ep).await.err().unwrap().to_string();
    assert!(err.contains(&socket), "{err}");
    assert!(err.contains("unix_socket_directories"), "{err}");
}
