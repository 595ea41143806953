//! A real SSH server and a one-node Slurm cluster on loopback
//! (`tests/cluster/cluster.py`), shared by every test of the process.
//!
//! `make test` starts one for all its suites and names its folder in
//! `FLYTE_CONNECT_TEST_CLUSTER`; without it, the first test that asks
//! starts one, stopped and removed when the process exits.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde::Deserialize;

/// What `cluster.py up` wrote to `cluster.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Cluster {
    /// `127.0.0.1`.
    pub host: String,
    /// sshd's port.
    pub ssh_port: u16,
    /// The user the key logs in as.
    pub user: String,
    /// The user's private key (OpenSSH).
    pub private_key: String,
    /// Its public half.
    pub public_key: String,
    /// The known_hosts line of sshd's host key: `[127.0.0.1]:PORT ssh-ed25519 ...`.
    pub known_hosts: String,
    /// `SHA256:...` of the host key.
    pub host_key_fingerprint: String,
    /// The Slurm configuration sshd's sessions see as `SLURM_CONF`.
    pub slurm_conf: String,
    /// A folder jobs may write to.
    pub jobs_dir: String,
    /// The Slurm node's name.
    pub node: String,
    #[serde(skip)]
    dir: PathBuf,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static STARTED_HERE: OnceLock<PathBuf> = OnceLock::new();

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/cluster.py")
}

extern "C" fn stop_at_exit() {
    if let Some(dir) = STARTED_HERE.get() {
        let _ = Command::new("python3")
            .arg(script())
            .arg("down")
            .arg(dir)
            .status();
    }
}

/// The cluster of this test process.
pub fn cluster() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let dir = match std::env::var_os("FLYTE_CONNECT_TEST_CLUSTER") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("flyte-connect-cluster-{}", std::process::id()));
                let status = Command::new("python3")
                    .arg(script())
                    .arg("up")
                    .arg(&dir)
                    .status()
                    .expect("run tests/cluster/cluster.py");
                assert!(status.success(), "tests/cluster/cluster.py up failed");
                let _ = STARTED_HERE.set(dir.clone());
                // SAFETY: registers a plain `extern "C"` function.
                unsafe { libc::atexit(stop_at_exit) };
                dir
            }
        };
        let text = std::fs::read_to_string(dir.join("cluster.json")).expect("cluster.json");
        let mut cluster: Cluster = serde_json::from_str(&text).expect("cluster.json");
        cluster.dir = dir;
        cluster
    })
}

impl Cluster {
    /// Runs `command` on the cluster as its user, through `ssh` (the
    /// OpenSSH client, checking the host key): its stdout; panics if it
    /// fails.
    pub fn ssh(&self, command: &str) -> String {
        let key = self.dir.join("ssh/user_key");
        let known = self.dir.join("ssh/known_hosts.client");
        std::fs::write(&known, format!("{}\n", self.known_hosts)).expect("known hosts");
        let output = Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(&key)
            .arg("-p")
            .arg(self.ssh_port.to_string())
            .arg(format!("{}@{}", self.user, self.host))
            .arg(command)
            .output()
            .expect("run ssh");
        assert!(
            output.status.success(),
            "ssh {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A folder of its own under the jobs folder, for one test.
    pub fn scratch(&self, name: &str) -> String {
        let dir = format!("{}/{name}-{}", self.jobs_dir, std::process::id());
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    /// Stops (`"stop"`) or starts again (`"start"`, keeping its jobs) the
    /// Slurm controller.
    pub fn controller(&self, action: &str) {
        let status = Command::new("python3")
            .arg(script())
            .args(["controller", action])
            .arg(&self.dir)
            .status()
            .expect("run tests/cluster/cluster.py");
        assert!(status.success(), "cluster.py controller {action} failed");
    }

    /// sshd's log so far.
    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/sshd.log")).unwrap_or_default()
    }
}
