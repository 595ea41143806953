#!/usr/bin/env python3
"""A real SSH server and a one-node Slurm cluster on loopback, for the tests.

    cluster.py up DIR      start munged, slurmctld, slurmd and sshd under DIR;
                           write DIR/cluster.json (ports, user, keys, host key)
    cluster.py down DIR    stop them and remove DIR
    cluster.py controller stop|start DIR
                           stop or start slurmctld alone (Slurm unreachable)

Everything runs from Debian's packages (`openssh-server`, `slurm-wlm`,
`munge`; `make system-tools` installs them) as root, on free loopback
ports, with keys made here: the server's host key, and a user key that
logs in as root. Nothing reads or changes the machine's own /etc/ssh,
/etc/slurm or /etc/munge. `make test` starts one cluster for all its
suites; a suite run alone starts its own (see `tests/src/cluster.rs` and
`tests/python/cluster.py`).

Only the standard library: it runs before the virtualenv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

USER = "root"
STARTUP_SECONDS = 60
MUNGE_USER = "munge"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, capture_output=True, text=True, **kwargs)


def wait_for(what: str, ready, log: Path | None = None) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise SystemExit(f"{what} did not come up within {STARTUP_SECONDS} s\n{tail}")


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_pid(path: Path) -> None:
    """Stops the daemon whose pid file is `path`, waiting for it to exit."""
    pid = read_pid(path)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def slurm_conf(root: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=flyteconnect
SlurmctldHost={node}(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket={root}/munge-socket/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={root}/slurm/state
SlurmdSpoolDir={root}/slurm/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=5
MinJobAge=3600
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def sshd_config(root: Path, port: int) -> str:
    return f"""\
ListenAddress 127.0.0.1:{port}
HostKey {root}/ssh/host_ed25519_key
PidFile {root}/run/sshd.pid
AuthorizedKeysFile {root}/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 64
MaxStartups 64:30:128
SetEnv SLURM_CONF={root}/slurm/slurm.conf
Subsystem sftp internal-sftp
"""


def controller(env: dict, clean: bool) -> subprocess.CompletedProcess:
    """Starts slurmctld: clean (no saved state) at first, else recovering its jobs."""
    return run("/usr/sbin/slurmctld", *(["-c"] if clean else []), env=env)


def slurm_env(root: Path) -> dict:
    return {**os.environ, "SLURM_CONF": str(root / "slurm" / "slurm.conf")}


def up(root: Path) -> None:
    for tool in ("/usr/sbin/sshd", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"):
        if not os.access(tool, os.X_OK):
            raise SystemExit(f"{tool} is missing: run `make system-tools` (Debian: openssh-server, slurm-wlm, munge)")
    root.mkdir(parents=True, exist_ok=True)
    # munged runs as its own user, which must reach its socket under here.
    root.chmod(0o755)
    for sub in ("ssh", "slurm/state", "slurm/spool", "run", "log", "munge", "munge-socket", "jobs"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    # munge: a key of our own, its socket where slurm.conf says.
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    shutil.chown(root / "munge", MUNGE_USER, MUNGE_USER)
    shutil.chown(key, MUNGE_USER, MUNGE_USER)
    shutil.chown(root / "munge-socket", MUNGE_USER, MUNGE_USER)
    (root / "munge").chmod(0o700)
    key.chmod(0o400)
    (root / "munge-socket").chmod(0o755)
    run(
        "runuser", "-u", MUNGE_USER, "--", "/usr/sbin/munged",
        f"--socket={root}/munge-socket/munge.socket",
        f"--key-file={key}",
        f"--log-file={root}/munge/munged.log",
        f"--pid-file={root}/munge/munged.pid",
        f"--seed-file={root}/munge/munged.seed",
    )

    # Slurm: one node, named as this machine is, on loopback.
    node = socket.gethostname().split(".")[0]
    ctld_port, slurmd_port = free_port(), free_port()
    (root / "slurm" / "slurm.conf").write_text(slurm_conf(root, node, ctld_port, slurmd_port))
    env = slurm_env(root)
    controller(env, clean=True)
    run("/usr/sbin/slurmd", env=env)

    def node_idle() -> bool:
        shown = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        return shown.returncode == 0 and shown.stdout.strip() == "idle"

    wait_for("the Slurm node", node_idle, root / "log" / "slurmctld.log")

    # sshd: a host key and a user key of our own.
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "flyte-connect test host", "-f", str(root / "ssh" / "host_ed25519_key"))
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "flyte-connect test user", "-f", str(root / "ssh" / "user_key"))
    shutil.copy(root / "ssh" / "user_key.pub", root / "ssh" / "authorized_keys")
    ssh_port = free_port()
    (root / "ssh" / "sshd_config").write_text(sshd_config(root, ssh_port))
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    run("/usr/sbin/sshd", "-f", str(root / "ssh" / "sshd_config"), "-E", str(root / "log" / "sshd.log"))
    wait_for("sshd", lambda: listening(ssh_port), root / "log" / "sshd.log")

    host_key = (root / "ssh" / "host_ed25519_key.pub").read_text().split()
    fingerprint = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(root / "ssh" / "host_ed25519_key.pub")).stdout.split()[1]
    info = {
        "host": "127.0.0.1",
        "ssh_port": ssh_port,
        "user": USER,
        "private_key": (root / "ssh" / "user_key").read_text(),
        "public_key": (root / "ssh" / "user_key.pub").read_text().strip(),
        "known_hosts": f"[127.0.0.1]:{ssh_port} {host_key[0]} {host_key[1]}",
        "host_key_fingerprint": fingerprint,
        "slurm_conf": str(root / "slurm" / "slurm.conf"),
        "jobs_dir": str(root / "jobs"),
        "node": node,
    }
    (root / "cluster.json").write_text(json.dumps(info, indent=2))


def down(root: Path) -> None:
    if not root.is_dir():
        return
    env = slurm_env(root)
    stop_pid(root / "run" / "sshd.pid")
    stop_pid(root / "run" / "slurmd.pid")
    stop_pid(root / "run" / "slurmctld.pid")
    # Jobs still running belong to slurmd's steps: end them with it.
    subprocess.run(["pkill", "-f", f"slurmstepd.*{root}"], env=env, capture_output=True)
    stop_pid(root / "munge" / "munged.pid")
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] in ("up", "down"):
        root = Path(argv[2]).resolve()
        if argv[1] == "up":
            try:
                up(root)
            except BaseException:
                down(root)
                raise
        else:
            down(root)
    elif len(argv) == 4 and argv[1] == "controller" and argv[2] in ("stop", "start"):
        root = Path(argv[3]).resolve()
        if argv[2] == "stop":
            stop_pid(root / "run" / "slurmctld.pid")
        else:
            controller(slurm_env(root), clean=False)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
