//! A private Redis Cluster for one test suite: `masters` primaries, each with `replicas`
//! replicas, started with `redis-server --cluster-enabled yes` on free loopback ports and
//! joined with `redis-cli --cluster create`; stopped when dropped. Also a private Redis
//! over TLS, with a CA, server and client certificate made by `openssl` for the test.
//! When a server cannot be started the test fails (it does not skip).

#![allow(dead_code)] // each suite that includes this file uses a different part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    /// Every node's port: the primaries first, in `--cluster create` order.
    pub ports: Vec<u16>,
    pub masters: usize,
    /// The certificates' folder when the nodes speak only TLS (clients and cluster bus).
    tls: Option<PathBuf>,
    children: Vec<Option<Child>>,
    _dir: tempfile::TempDir,
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli ARGS…` against 127.0.0.1:`port`; returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_with(None, port, args)
}

/// `redis-cli` flags to speak TLS with the certificates in `tls`.
fn tls_flags(tls: Option<&Path>) -> Vec<String> {
    let Some(dir) = tls else { return Vec::new() };
    let file = |name: &str| dir.join(name).display().to_string();
    vec![
        "--tls".into(),
        "--cacert".into(),
        file("ca.crt"),
        "--cert".into(),
        file("client.crt"),
        "--key".into(),
        file("client.key"),
    ]
}

fn cli_with(tls: Option<&Path>, port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(tls_flags(tls))
        .args(args)
        .output()
        .expect("redis-cli must be installed with redis-server");
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} within 30 s");
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        RedisCluster::start_with(masters, replicas, None)
    }

    /// A cluster whose nodes speak only TLS, to clients and to each other, and require a
    /// client certificate.
    pub fn start_tls(masters: usize, replicas: usize, certificates: &Certificates) -> Self {
        RedisCluster::start_with(masters, replicas, Some(certificates.dir.path()))
    }

    fn start_with(masters: usize, replicas: usize, tls: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let count = masters * (1 + replicas);
        let ports: Vec<u16> = (0..count).map(|_| free_port_pair()).collect();
        let children = ports
            .iter()
            .map(|port| Some(spawn_node(dir.path(), *port, tls)))
            .collect();
        for port in &ports {
            wait_for(&format!("cluster node {port} did not answer PING"), || {
                cli_with(tls, *port, &["PING"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(tls_flags(tls))
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            ports,
            masters,
            tls: tls.map(Path::to_path_buf),
            children,
            _dir: dir,
        };
        for port in &cluster.ports {
            wait_for("the cluster did not become ok", || {
                cluster
                    .cli(*port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
        }
        wait_for("the replicas did not attach", || {
            cluster.ports[..masters]
                .iter()
                .all(|p| cluster.connected_replicas(*p) >= replicas)
        });
        cluster
    }

    /// Runs `redis-cli ARGS…` against the node on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_with(self.tls.as_deref(), port, args)
    }

    /// Seed URLs for the client: every node.
    pub fn seeds(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect()
    }

    fn connected_replicas(&self, port: u16) -> usize {
        field(
            &self.cli(port, &["INFO", "replication"]),
            "connected_slaves",
        )
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
    }

    /// Kills node `index` as a crash would (SIGKILL).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until primary `index` has a connected replica holding all its writes: the
    /// replica acknowledged the primary's replication offset and holds as many keys.
    pub fn wait_replicated(&self, index: usize) {
        let port = self.ports[index];
        wait_for("the replicas did not catch up", || {
            let info = self.cli(port, &["INFO", "replication"]);
            let Some(offset) = field(&info, "master_repl_offset") else {
                return false;
            };
            let caught_up = format!("offset={offset}");
            // `slave0:ip=…,port=…,state=online,offset=N,lag=0`
            let replicas: Vec<&str> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state="))
                .collect();
            let keys = self.cli(port, &["DBSIZE"]);
            !replicas.is_empty()
                && replicas.iter().all(|l| {
                    let acknowledged = l.trim().split(',').any(|kv| kv == caught_up);
                    let replica_port = l
                        .split(',')
                        .find_map(|kv| kv.strip_prefix("port="))
                        .and_then(|p| p.parse::<u16>().ok());
                    acknowledged && replica_port.is_some_and(|p| self.cli(p, &["DBSIZE"]) == keys)
                })
        });
    }
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

fn spawn_node(dir: &Path, port: u16, tls: Option<&Path>) -> Child {
    let mut command = Command::new("redis-server");
    command.args(["--bind", "127.0.0.1"]);
    match tls {
        None => command.args(["--port", &port.to_string()]),
        // Absolute paths: `--dir` below changes the folder before the files are read.
        Some(certificates) => command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(certificates.join("server.crt"))
            .arg("--tls-key-file")
            .arg(certificates.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(certificates.join("ca.crt"))
            .args(["--tls-auth-clients", "yes"])
            .args(["--tls-cluster", "yes", "--tls-replication", "yes"]),
    };
    command
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1500"])
        // Replicas sync at once (the default waits 5 s for more replicas to join).
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .arg("--dir")
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (.ci/run installs it): cannot start it")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            self.kill(index);
        }
    }
}

/// A certificate authority, a server and a client certificate (`ca.crt`, `server.crt`,
/// `server.key`, `client.crt`, `client.key`) made by `openssl` in a folder of their own,
/// valid for 127.0.0.1.
pub struct Certificates {
    pub dir: tempfile::TempDir,
}

impl Certificates {
    pub fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=quiver-test-ca",
            ],
        );
        certificate(dir.path(), "server");
        certificate(dir.path(), "client");
        Certificates { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A Redis that speaks only TLS and requires a client certificate.
pub struct TlsRedis {
    pub port: u16,
    pub certificates: Certificates,
    child: Child,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl must be installed");
    assert!(status.success(), "openssl {args:?} failed");
}

/// Makes `NAME.key` and `NAME.crt`, signed by `ca.crt`, valid for 127.0.0.1.
fn certificate(dir: &Path, name: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let ec_key = format!("{name}.ec.key");
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ec_key,
        ],
    );
    // rustls wants a PKCS#8 key.
    openssl(
        dir,
        &["pkcs8", "-topk8", "-nocrypt", "-in", &ec_key, "-out", &key],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl TlsRedis {
    pub fn start() -> Self {
        let certificates = Certificates::make();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .current_dir(certificates.dir.path())
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
            ])
            .args([
                "--tls-cert-file",
                "server.crt",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed: cannot start it");
        let server = TlsRedis {
            port,
            certificates,
            child,
        };
        wait_for("the TLS redis-server did not listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.certificates.file(name)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
