//! nginx as the WebSocket load balancer (Debian's `nginx` package).

use std::collections::BTreeMap;
use std::path::Path;

use crate::Proc;

/// nginx proxying `listen` to `upstreams` with the WebSocket headers.
pub struct Nginx {
    _dir: tempfile::TempDir,
    _proc: Proc,
    /// The port it listens on.
    pub port: u16,
}

/// The nginx config: round-robin over the edges, WebSocket upgrade headers,
/// long read timeouts. Shared with `deploy/local/cluster.sh`.
pub(crate) fn config(listen: u16, upstreams: &[u16], prefix: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;\n"))
        .collect();
    format!(
        r#"worker_processes 1;
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
        let proc = Proc::spawn(
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
        Self {
            _dir: dir,
            _proc: proc,
            port,
        }
    }
}
