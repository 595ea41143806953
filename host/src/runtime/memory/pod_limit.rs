//! How much memory the process may use: the limit of the memory cgroup it
//! runs in (a Kubernetes container's `resources.limits.memory`), else the
//! machine's physical memory. The memory budget's default is a share of it.
//!
//! Both cgroup versions are read, whichever holds the memory controller the
//! process sits under: v2's `memory.max` (Kubernetes nodes mostly), v1's
//! `memory.limit_in_bytes` (older nodes, and hybrid hosts). A limit set on
//! any ancestor of the process's cgroup applies too, so the lowest on the
//! way up to the mount's root is the one that counts.

use std::path::{Path, PathBuf};

/// Where a memory limit was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// A cgroup's limit file.
    Cgroup(PathBuf),
    /// No cgroup limit: the machine's memory.
    Physical,
}

/// The memory the process may use, in bytes, and where that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where it was found.
    pub source: LimitSource,
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.bytes >> 20;
        match &self.source {
            LimitSource::Cgroup(path) => write!(f, "{mib} MiB, the limit of {}", path.display()),
            LimitSource::Physical => write!(f, "{mib} MiB, the machine's memory (no cgroup limit)"),
        }
    }
}

/// The limit the process runs under, read from `/proc` and `/sys`.
pub fn current() -> MemoryLimit {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    cgroup_limit(&cgroups, &mounts, |path| std::fs::read_to_string(path).ok()).unwrap_or_else(
        || MemoryLimit {
            bytes: physical_memory(),
            source: LimitSource::Physical,
        },
    )
}

/// Values at or above this are "no limit" (v1 writes 2^63 rounded to pages).
const UNLIMITED: u64 = 1 << 62;

/// The lowest memory limit among the cgroups (given as `/proc/self/cgroup`
/// and `/proc/self/mountinfo` text) the process sits under, with `read`
/// reading a file.
fn cgroup_limit(
    cgroups: &str,
    mounts: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<MemoryLimit> {
    let mut found: Option<MemoryLimit> = None;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (version, file) = if controllers.is_empty() {
            (Version::V2, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (Version::V1, "memory.limit_in_bytes")
        } else {
            continue;
        };
        let Some((mount_root, mount_point)) = mount_of(mounts, version) else {
            continue;
        };
        let relative = Path::new(path)
            .strip_prefix(&mount_root)
            .unwrap_or(Path::new(""));
        let mut dir = mount_point.join(relative);
        loop {
            let limit_file = dir.join(file);
            if let Some(bytes) = read(&limit_file).and_then(|text| parse_limit(&text))
                && found.as_ref().is_none_or(|f| bytes < f.bytes)
            {
                found = Some(MemoryLimit {
                    bytes,
                    source: LimitSource::Cgroup(limit_file),
                });
            }
            if dir == mount_point || !dir.pop() {
                break;
            }
        }
    }
    found
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The root and mount point of the cgroup hierarchy of `version` holding
/// the memory controller, from `/proc/self/mountinfo` text.
fn mount_of(mounts: &str, version: Version) -> Option<(PathBuf, PathBuf)> {
    mounts.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        let mut after = after.split_whitespace();
        let fstype = after.next()?;
        let options = after.nth(1).unwrap_or_default();
        let wanted = match version {
            Version::V2 => fstype == "cgroup2",
            Version::V1 => fstype == "cgroup" && options.split(',').any(|o| o == "memory"),
        };
        wanted.then(|| (PathBuf::from(root), PathBuf::from(unescape(point))))
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A limit file's value; `None` for "max" or a value meaning no limit.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&bytes| bytes > 0 && bytes < UNLIMITED)
}

/// The machine's memory, from `/proc/meminfo` (1 GiB if unreadable).
fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(1 << 30, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect();
        move |path| map.get(path).cloned()
    }

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_v1_limit_is_read_and_the_lowest_ancestor_wins() {
        let cgroups = "4:memory:/pods/p1/c1\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/pods/p1/c1/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/pods/p1/memory.limit_in_bytes",
                "536870912\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        let limit = cgroup_limit(cgroups, V1_MOUNTS, read).expect("a limit");
        assert_eq!(limit.bytes, 512 << 20);
        assert_eq!(
            limit.source,
            LimitSource::Cgroup(PathBuf::from(
                "/sys/fs/cgroup/memory/pods/p1/memory.limit_in_bytes"
            ))
        );
    }

    #[test]
    fn a_v2_container_reads_its_own_memory_max() {
        // Inside a container's cgroup namespace: its cgroup is the root.
        let cgroups = "0::/\n";
        let mounts = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        let read = files(&[("/sys/fs/cgroup/memory.max", "314572800\n")]);
        let limit = cgroup_limit(cgroups, mounts, read).expect("a limit");
        assert_eq!(limit.bytes, 300 << 20);
        // "max" is no limit.
        let read = files(&[("/sys/fs/cgroup/memory.max", "max\n")]);
        assert_eq!(cgroup_limit(cgroups, mounts, read), None);
    }

    #[test]
    fn a_hosts_v2_hierarchy_is_walked_from_the_process_up() {
        let cgroups = "0::/kubepods.slice/pod1.slice/cri-abc.scope\n";
        let mounts = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/kubepods.slice/pod1.slice/cri-abc.scope/memory.max",
                "max\n",
            ),
            (
                "/sys/fs/cgroup/kubepods.slice/pod1.slice/memory.max",
                "1073741824\n",
            ),
        ]);
        assert_eq!(
            cgroup_limit(cgroups, mounts, read).map(|l| l.bytes),
            Some(1 << 30)
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\x"), r"/a\x");
    }

    #[test]
    fn this_machine_has_a_limit() {
        let limit = current();
        assert!(limit.bytes >= 64 << 20, "{limit}");
    }
}
