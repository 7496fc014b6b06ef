//! Child processes with captured logs, and a tiny HTTP client.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free TCP port on 127.0.0.1 for a server to listen on.
///
/// Chosen below the kernel's ephemeral range (32768+ by default), so an
/// outgoing connection of another process cannot take it between this
/// check and the server's bind; unique within this test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread test binaries (separate processes) over the range by pid.
    let base = 15_000 + (std::process::id() % 160) as u16 * 100;
    for _ in 0..20_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 15_000 + (base - 15_000 + n) % 17_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A child process; killed on drop, its log printed if the test panicked.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    status: Option<ExitStatus>,
    /// Leads its own process group (see [`Proc::spawn_group`]): the whole
    /// group is killed on drop, so no child it forked outlives the test.
    group: Option<u32>,
}

impl Proc {
    /// Spawns `program args` with `env` added, output into a log file.
    ///
    /// # Panics
    /// If the program cannot be started.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Self {
        Self::start(name, program, args, env, false)
    }

    /// Like [`spawn`](Self::spawn), but the process leads a new process
    /// group, and dropping it kills the whole group: for programs that
    /// fork workers (nginx), which a SIGKILL of the parent alone leaves
    /// running.
    ///
    /// # Panics
    /// If the program cannot be started.
    pub fn spawn_group(name: &str, program: &Path, args: &[&str], env: &BTreeMap<String, String>) -> Self {
        Self::start(name, program, args, env, true)
    }

    fn start(name: &str, program: &Path, args: &[&str], env: &BTreeMap<String, String>, group: bool) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = tempfile::NamedTempFile::new().expect("log file");
        let out = log.reopen().expect("log handle");
        let err = log.reopen().expect("log handle");
        let mut cmd = Command::new(program);
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .args(args)
            .envs(env)
            .env(
                "RUST_LOG",
                std::env::var("SWITCHBOARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        let group = group.then(|| child.id());
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
            status: None,
            group,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends a signal (`"TERM"`, `"KILL"`, ...).
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status();
    }

    /// Sends `sig` to every process of its group (a no-op unless started
    /// with [`spawn_group`](Self::spawn_group)).
    pub fn signal_group(&self, sig: &str) {
        if let Some(pgid) = self.group {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg("--")
                .arg(format!("-{pgid}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            self.status = c.wait().ok();
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                self.status = Some(st);
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.status
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        self.signal_group("KILL");
        if std::thread::panicking() || std::env::var("SWITCHBOARD_TEST_SHOW_LOGS").is_ok() {
            eprintln!(
                "----- log of {} -----\n{}\n----- end of {} -----",
                self.name,
                self.log(),
                self.name
            );
        }
    }
}

async fn http(addr: &str, req: String) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `GET path` on `addr` (`127.0.0.1:port`): (status, body).
///
/// # Errors
/// If the connection fails.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// `POST path` with a JSON body and extra headers: (status, body).
///
/// # Errors
/// If the connection fails.
pub async fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<(u16, String)> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    http(addr, req).await
}

/// Waits until `GET /readyz` on `addr` answers 200.
///
/// # Panics
/// If it does not within [`crate::patience`].
pub async fn wait_ready(addr: &str) {
    let deadline = Instant::now() + crate::patience();
    loop {
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
