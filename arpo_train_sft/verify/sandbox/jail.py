"""The sandbox's isolation, built by its child from inside: namespaces, a minimal read-only root, no privileges.

Imported by `child.py`, which runs as a script: standard library only. Every step that fails raises
`SetupError` naming the step, so the parent can say exactly why isolation is unavailable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from pathlib import Path

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_NOATIME = 0x1, 0x2, 0x4, 0x8, 0x20, 0x400
MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 0x800, 0x1000, 0x4000, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
SYSCALLS = {"x86_64": {"pivot_root": 155, "keyctl": 250}, "aarch64": {"pivot_root": 41, "keyctl": 219}}
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYS_OFF = (errno.ENOSYS, errno.EPERM)  # no keyrings in this kernel, or a seccomp filter denies them to all
CAP_V3 = 0x20080522
# (namespace, clone flag) in creation order; the user namespace is only made when not root (see enter()).
NAMESPACES = (
    ("mount", CLONE_NEWNS),
    ("network", CLONE_NEWNET),
    ("IPC", CLONE_NEWIPC),
    ("UTS", CLONE_NEWUTS),
    ("PID", CLONE_NEWPID),
)
DEVICES = ("null", "zero", "full", "random", "urandom")
ROOT_MB = 1  # the new root itself only holds mount points, /etc/passwd and /etc/group
SCRATCH_INODES = 4096
# The statvfs flags a bind mount must keep: the kernel refuses to clear them inside a user namespace.
KEPT_FLAGS = (
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """One isolation step failed; the message names the step and the system's reason."""


def _call(step: str, result: int) -> None:
    if result != 0:
        raise SetupError(f"{step}: {os.strerror(ctypes.get_errno())}")


def enter(as_root: bool) -> None:
    """Move into new mount, network, IPC, UTS and PID namespaces (the PID one applies to the next fork).

    Root owns them directly and later becomes nobody; anyone else first makes a user namespace that maps
    only its own uid and gid, which gives it the right to build the root and nothing outside.
    """
    if not as_root:
        uid, gid = os.getuid(), os.getgid()
        _call("user namespace", _libc.unshare(CLONE_NEWUSER))
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as err:
            raise SetupError(f"user namespace id map: {err.strerror}") from err
    for name, flag in NAMESPACES:
        _call(f"{name} namespace", _libc.unshare(flag))


def build_root(root: Path, visible: list[str], scratch_mb: int, uid: int, gid: int) -> None:
    """Make `root` a tmpfs holding read-only binds of `visible`, a few devices and a `scratch_mb` /tmp."""
    _mount("make mounts private", None, "/", None, MS_REC | MS_PRIVATE)
    _mount("root tmpfs", "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={ROOT_MB}m,mode=0755")
    (root / "tmp").mkdir()
    options = f"size={scratch_mb}m,nr_inodes={SCRATCH_INODES},mode=0700,uid={uid},gid={gid}"
    _mount("scratch tmpfs", "tmpfs", root / "tmp", "tmpfs", MS_NOSUID | MS_NODEV, options)
    links = []
    for path in visible:
        if os.path.islink(path):
            links.append(path)  # made last, so no directory is ever created through one
        else:
            _bind(path, root / path.lstrip("/"), read_only=True)
    for name in DEVICES:
        _bind(f"/dev/{name}", root / "dev" / name, read_only=False)  # writing to /dev/null must work
    (root / "dev" / "shm").symlink_to("/tmp")  # POSIX shared memory counts against the scratch limit
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(f"root:x:0:0::/:/bin/false\nsandbox:x:{uid}:{gid}::/tmp:/bin/false\n")
    (etc / "group").write_text(f"root:x:0:\nsandbox:x:{gid}:\n")
    for path in links:
        target = root / path.lstrip("/")
        if not os.path.lexists(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(path))
    _mount("read-only root", None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def pivot(root: Path) -> None:
    """Make `root` the filesystem root and detach the host's, so no path leads back to it."""
    os.chdir(root)
    _call("pivot_root", _syscall("pivot_root", b".", b"."))
    _call("detach the host root", _libc.umount2(b".", MNT_DETACH))
    os.chdir("/tmp")


def drop_privileges(uid: int, gid: int, as_root: bool, last_cap: int) -> None:
    """Become `uid`/`gid` with no capability at all (none kept, none regainable), then check it."""
    for cap in range(last_cap + 1):
        _call("drop the capability bounding set", _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
    if as_root:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)  # from root to a non-root uid: the kernel clears every capability
        except OSError as err:
            raise SetupError(f"switch to uid {uid}: {err.strerror}") from err
    # The session keyring came from the caller: its keys' "possessor" rights do not look at the uid. The
    # seccomp filter installed next refuses every keyring call as well (the per-uid user keyring included).
    if _syscall("keyctl", KEYCTL_JOIN_SESSION_KEYRING, None) < 0 and ctypes.get_errno() not in KEYS_OFF:
        raise SetupError(f"new session keyring: {os.strerror(ctypes.get_errno())}")
    _call("clear ambient capabilities", _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0))
    header, data = _CapHeader(CAP_V3, 0), (_CapData * 2)()
    _call("clear capabilities", _libc.capset(ctypes.byref(header), data))
    no_new_privileges()
    if capabilities() != 0 or os.getuid() != uid or os.geteuid() != uid:
        raise SetupError("drop privileges: capabilities or uid still present")


def no_new_privileges() -> None:
    """No exec (of a setuid binary, or one with file capabilities) can grant a privilege from now on."""
    _call("no new privileges", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))


def capabilities() -> int:
    """This process's effective | permitted | inheritable capability bits (0 when it holds none)."""
    header, data = _CapHeader(CAP_V3, 0), (_CapData * 2)()
    _call("read capabilities", _libc.capget(ctypes.byref(header), data))
    return sum((d.effective | d.permitted | d.inheritable) << (32 * i) for i, d in enumerate(data))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _syscall(name: str, *args: object) -> int:
    """A system call glibc has no wrapper for."""
    numbers = SYSCALLS.get(platform.machine())
    if numbers is None:
        raise SetupError(f"{name}: system call number unknown on {platform.machine()}")
    return _libc.syscall(ctypes.c_long(numbers[name]), *args)


def _bind(source: str, target: Path, read_only: bool) -> None:
    if os.path.isdir(source):
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    _mount(f"bind {source}", source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if read_only else 0)
    kept = os.statvfs(source).f_flag
    flags |= sum(ms for st, ms in KEPT_FLAGS if kept & st) | (MS_NODEV if read_only else 0)
    _mount(f"read-only {source}" if read_only else f"remount {source}", None, target, None, flags)


def _mount(
    step: str, source: str | None, target: str | Path, fstype: str | None, flags: int, data: str | None = None
) -> None:
    def raw(text: str | Path | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _call(step, _libc.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), raw(data)))
