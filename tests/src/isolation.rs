//! Running the server where what it may reach or use is bounded by the
//! kernel, so that a test of a refusal cannot do harm when the refusal
//! fails:
//!
//! - [`Wrapper::own_network`]: in a network namespace of its own with only
//!   loopback up (`unshare --net`, then `ip link set lo up`). A request the
//!   server should have refused finds no route, and nothing leaves the
//!   machine. The test reaches the server through a [`NetnsDialer`], whose
//!   thread has joined the server's namespace.
//! - [`MemoryCgroup`]: in a memory cgroup made for the test with a limit of
//!   its own, removed when dropped.
//!
//! Both need root, as `make test` runs.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A command the server's binary runs under: the wrapper's program and
/// arguments, followed by the binary and its own arguments.
#[derive(Debug, Clone, Default)]
pub struct Wrapper(pub Vec<String>);

impl Wrapper {
    /// A network namespace of its own, with only loopback up.
    pub fn own_network() -> Self {
        Self(
            [
                "unshare",
                "--net",
                "--",
                "sh",
                "-c",
                r#"ip link set lo up && exec "$0" "$@""#,
            ]
            .map(str::to_owned)
            .to_vec(),
        )
    }

    /// Joins `cgroup` before the server starts, so it runs under its limit
    /// from its first allocation.
    pub fn in_cgroup(cgroup: &MemoryCgroup) -> Self {
        let procs = cgroup.dir.join("cgroup.procs");
        Self(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!(r#"echo $$ > '{}' && exec "$0" "$@""#, procs.display()),
        ])
    }
}

/// Connects to addresses of another process's network namespace: a thread
/// that joined it makes the connections, which then serve any thread.
pub struct NetnsDialer {
    requests: mpsc::Sender<(SocketAddr, mpsc::Sender<io::Result<TcpStream>>)>,
}

impl NetnsDialer {
    /// A dialer in the network namespace of process `pid`.
    pub fn enter(pid: u32) -> io::Result<Self> {
        let namespace = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        let (requests, incoming) =
            mpsc::channel::<(SocketAddr, mpsc::Sender<io::Result<TcpStream>>)>();
        let (entered_tx, entered_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("netns-dialer".into())
            .spawn(move || {
                // SAFETY: setns takes a file descriptor this thread owns
                // (kept open by `namespace`) and a namespace type; it
                // changes this thread's network namespace only.
                let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                let _ = entered_tx.send(if entered == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                });
                if entered != 0 {
                    return;
                }
                for (addr, reply) in incoming {
                    let _ = reply.send(TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
                }
            })?;
        entered_rx
            .recv()
            .map_err(|_| io::Error::other("the dialer thread ended"))??;
        Ok(Self { requests })
    }

    /// A connection to `addr` in the namespace.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send((addr, reply))
            .map_err(|_| io::Error::other("the dialer thread ended"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the dialer thread ended"))?
    }

    /// The body of `GET path` from `addr`, over HTTP/1.0.
    pub fn get(&self, addr: SocketAddr, path: &str) -> io::Result<String> {
        let mut stream = self.connect(addr)?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default())
    }
}

/// A memory cgroup (v1 or v2, whichever holds the memory controller here)
/// with a limit, made for a test and removed when dropped.
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// A cgroup named `name` limited to `limit` bytes, beside the test's
    /// own; `None` where no memory controller can be used (not root, or a
    /// v2 hierarchy whose root does not delegate memory).
    pub fn create(name: &str, limit: u64) -> Option<Self> {
        let (dir, v2) = Self::place(name)?;
        std::fs::create_dir(&dir).ok()?;
        let cgroup = Self { dir, v2 };
        let (file, value) = if v2 {
            ("memory.max", limit.to_string())
        } else {
            ("memory.limit_in_bytes", limit.to_string())
        };
        std::fs::write(cgroup.dir.join(file), value).ok()?;
        if v2 {
            // No swap either, as a pod has none.
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        }
        Some(cgroup)
    }

    /// Where a new cgroup goes: under this process's v1 memory cgroup, or
    /// at the v2 root when it delegates the memory controller.
    fn place(name: &str) -> Option<(PathBuf, bool)> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        for line in own.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                let base = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
                if base.join("memory.limit_in_bytes").exists() {
                    return Some((base.join(name), false));
                }
            }
        }
        let root = Path::new("/sys/fs/cgroup");
        let delegated = std::fs::read_to_string(root.join("cgroup.subtree_control")).ok()?;
        delegated
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| (root.join(name), true))
    }

    /// How many processes in it the kernel's OOM killer killed.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let (name, value) = line.split_once(' ')?;
                    (name == key).then(|| value.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty only once its processes are gone: wait a little for them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
