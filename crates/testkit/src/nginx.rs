//! nginx as the WebSocket load balancer (Debian's `nginx` package).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::Proc;

/// How long a graceful quit (SIGQUIT) may take before the group is killed.
const QUIT_PATIENCE: Duration = Duration::from_secs(5);

/// nginx proxying `listen` to `upstreams` with the WebSocket headers.
///
/// Dropping it quits nginx gracefully (SIGQUIT to the master, which stops
/// its workers and exits; `worker_shutdown_timeout` bounds open WebSockets)
/// and waits for it; then the whole process group is killed, so no worker
/// outlives the test even if the master died first. A SIGKILL of the
/// master alone left its workers running, still listening.
pub struct Nginx {
    _dir: tempfile::TempDir,
    /// The master, leading the process group of its workers.
    proc: Proc,
    /// The port it listens on.
    pub port: u16,
}

/// The nginx config: round-robin over the edges, WebSocket upgrade headers,
/// long read timeouts. Shared with `deploy/local/cluster.sh`.
///
/// Passive health checks are off (`max_fails=0`): each handshake that an
/// edge refuses (503 while it drains) or that cannot connect (an edge
/// restarting) simply goes to the next edge. With `max_fails=1` such an
/// edge was marked failed, and nginx then let one new connection per
/// `fail_timeout` through to it until a connection through it *ended*
/// successfully, which a WebSocket does not do for hours: after a rolling
/// restart of all edges nearly every reconnect got 502 "no live upstreams".
pub(crate) fn config(listen: u16, upstreams: &[u16], prefix: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;\n"))
        .collect();
    format!(
        r#"worker_processes 1;
worker_shutdown_timeout 2s;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream switchboard_edges {{
{servers}    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://switchboard_edges;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"#,
        prefix = prefix.display()
    )
}

impl Nginx {
    /// Starts nginx on a free port in front of `upstreams`.
    ///
    /// # Panics
    /// If nginx is not installed (`apt-get install nginx-light`).
    pub fn start(upstreams: &[u16]) -> Self {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx not found: `apt-get install -y nginx-light` (or run scripts/setup.sh)");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
        let port = crate::free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(port, upstreams, dir.path())).expect("write nginx.conf");
        let conf_s = conf.display().to_string();
        let prefix = dir.path().display().to_string();
        let proc = Proc::spawn_group(
            "nginx",
            Path::new(bin),
            &["-p", &prefix, "-c", &conf_s, "-g", "daemon off;"],
            &BTreeMap::new(),
        );
        let deadline = std::time::Instant::now() + crate::patience();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not start: {}",
                proc.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { _dir: dir, proc, port }
    }
}

impl Nginx {
    /// The id of nginx's process group (its master and its workers), for a
    /// test that stalls the load balancer as a whole (`kill -STOP -<id>`,
    /// then `kill -CONT -<id>`).
    pub fn process_group(&self) -> u32 {
        self.proc.pid()
    }

    /// nginx's error log so far (upstream failures: why a request got 502).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.proc.signal("QUIT");
        if self.proc.wait_exit(QUIT_PATIENCE).is_none() {
            self.proc.signal_group("TERM");
            let _ = self.proc.wait_exit(Duration::from_secs(1));
        }
        // Then `Proc`'s drop kills what is left of the group.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Processes whose parent is `pid` (from `/proc/*/stat`).
    fn children_of(pid: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                        == Some(pid)
                })
            })
            .collect()
    }

    /// Whether `pid` runs (a zombie does not).
    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    }

    #[test]
    fn no_worker_outlives_nginx() {
        // Dropped normally, and dropped after its master was SIGKILLed (the
        // workers of a dead master still run and listen).
        for kill_master_first in [false, true] {
            let nginx = Nginx::start(&[1]);
            let master = nginx.proc.pid();
            let deadline = std::time::Instant::now() + crate::patience();
            let workers = loop {
                let w = children_of(master);
                if !w.is_empty() {
                    break w;
                }
                assert!(std::time::Instant::now() < deadline, "nginx started no worker");
                std::thread::sleep(Duration::from_millis(20));
            };
            if kill_master_first {
                nginx.proc.signal("KILL");
            }
            drop(nginx);
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while workers.iter().any(|w| alive(*w)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let left: Vec<_> = workers.iter().filter(|w| alive(**w)).collect();
            assert!(
                left.is_empty(),
                "nginx workers {left:?} outlived nginx (master killed first: {kill_master_first})"
            );
        }
    }
}
