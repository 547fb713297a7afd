//! A private S3 server for one test binary: `moto_server` (PyPI `moto[server]`; `.ci/run`
//! installs it) on a free loopback port, stopped when the test binary is gone. Each test
//! makes its own bucket. When `moto_server` cannot be started the test fails (it does not
//! skip).

#![allow(dead_code)] // each suite that includes this file uses a different part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[allow(clippy::duplicate_mod)] // the other test servers include it too
#[path = "watchdog.rs"]
mod watchdog;

pub struct S3Server {
    pub port: u16,
    _child: Child,
}

/// The suite's server, started on first use.
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

impl S3Server {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = watchdog::command("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .spawn()
            .expect("sh and moto_server must be installed (.ci/run installs moto[server])");
        let server = S3Server {
            port,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if server
                .request("GET", "/", b"")
                .is_ok_and(|(status, _)| status == 200)
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not answer on 127.0.0.1:{port} within 30 s");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new, empty bucket named after `prefix` (unique in this server).
    pub fn bucket(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{}-{}-{}",
            prefix.replace('_', "-"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (status, body) = self.request("PUT", &format!("/{name}"), b"").unwrap();
        assert_eq!(status, 200, "creating bucket {name}: {body}");
        name
    }

    /// Uploads `body` to `s3://bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, text) = self
            .request("PUT", &format!("/{bucket}/{key}"), body)
            .unwrap();
        assert_eq!(status, 200, "uploading s3://{bucket}/{key}: {text}");
    }

    /// The object `s3://bucket/key`.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}/{key}"), b"")
            .unwrap();
        assert_eq!(status, 200, "reading s3://{bucket}/{key}: {body}");
        body.into_bytes()
    }

    /// The keys under `prefix` in `bucket`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .request(
                "GET",
                &format!("/{bucket}?list-type=2&prefix={prefix}"),
                b"",
            )
            .unwrap();
        assert_eq!(status, 200, "listing s3://{bucket}/{prefix}: {body}");
        let mut keys: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }

    /// The `[storage]` table of a `quiver.toml` that reaches this server.
    pub fn storage_toml(&self) -> String {
        format!(
            "[storage]\naws_endpoint_url = \"{}\"\naws_allow_http = true\naws_region = \"us-east-1\"\naws_access_key_id = \"quiver-test\"\naws_secret_access_key = \"quiver-test-secret\"\n",
            self.endpoint()
        )
    }

    /// One HTTP/1.1 request as the test user (moto reads the access key from the
    /// `Authorization` header but does not check the signature); the status and body.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=quiver-test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok((status, body))
    }
}
