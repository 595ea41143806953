//! A real S3-compatible server on loopback for the tests that move
//! objects: `moto_server` (moto's server mode) from the project's venv
//! (`tests/python/requirements.txt`), one bucket made for the test, and
//! objects read back with requests signed as S3 wants them (`curl
//! --aws-sigv4`). Stopped when dropped.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The credentials the tests' servers and requests use; moto takes any.
pub const ACCESS_KEY: &str = "flyte-connect-tests";
/// Its secret half.
pub const SECRET_KEY: &str = "flyte-connect-tests-secret";
/// The region everything is in.
pub const REGION: &str = "us-east-1";

/// A running moto server with one bucket.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made for the test.
    pub bucket: String,
}

fn moto_server() -> PathBuf {
    let venv = std::env::var_os("FLYTE_CONNECT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"));
    venv.join("bin/moto_server")
}

impl S3Server {
    /// Starts one with bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (make test installs it into .venv)");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (status, _) = server.curl(&["-X", "PUT"], "");
        assert_eq!(status, 200, "creating the bucket");
        server
    }

    /// `curl` of `key` in the bucket, signed; its status and body.
    fn curl(&self, args: &[&str], key: &str) -> (u16, Vec<u8>) {
        let url = if key.starts_with('?') {
            format!("{}/{}{key}", self.endpoint, self.bucket)
        } else {
            format!("{}/{}/{key}", self.endpoint, self.bucket)
        };
        let output = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
            .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            .args(args)
            .arg(url.trim_end_matches('/'))
            .output()
            .expect("run curl");
        let mut body = output.stdout;
        let split = body.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let status = String::from_utf8_lossy(&body[split..])
            .trim()
            .parse()
            .unwrap_or(0);
        body.truncate(split);
        (status, body)
    }

    /// The object at `key`, if there is one.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.curl(&[], key) {
            (200, body) => Some(body),
            _ => None,
        }
    }

    /// The keys under `prefix`, from a listing.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (_, body) = self.curl(&[], &format!("?list-type=2&prefix={prefix}"));
        let text = String::from_utf8_lossy(&body).into_owned();
        text.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }

    /// The environment a flyte-connect server needs to reach it as AWS.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
