"""A seccomp filter for the snippet: the socket families and kernel keyrings a namespace does not isolate.

A new network namespace isolates AF_UNIX, AF_INET and AF_INET6 (its own loopback, its own abstract unix
names), but not every family: AF_VSOCK reaches the hypervisor of a virtual machine from any namespace,
and netlink's kernel uevents reach namespaces owned by the initial user namespace. Kernel keyrings are
per uid, not per namespace, so a key left in nobody's user keyring would be there for the next call.
The filter below is a classic-BPF program written out by hand (no libseccomp needed), installed with
prctl(PR_SET_SECCOMP) after no_new_privs; the kernel keeps it across fork and exec, for every descendant.

Standard library only: `child.py` imports it as a sibling file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
from dataclasses import dataclass

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
# Classic BPF opcodes: load a 32-bit word at an absolute offset, compare and jump, return.
LD_ABS, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
# Offsets into struct seccomp_data: nr, arch, then args[6] as 64-bit words (the low half first).
NR, ARCH, ARG0_LOW = 0, 4, 16
X32_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers, so refuse them all


@dataclass(frozen=True)
class Abi:
    """One architecture's audit id and the numbers of the system calls the filter looks at."""

    audit_arch: int
    numbers: dict[str, int]
    x32: bool  # x86_64 also runs the x32 ABI, whose numbers have X32_BIT set


CALLS = ("socket", "socketpair", "add_key", "request_key", "keyctl")
# io_uring has its own socket operation (IORING_OP_SOCKET) that never passes through socket(); its
# calls have the same numbers on every 64-bit architecture.
IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
ABIS = {
    "x86_64": Abi(
        0xC000003E, {**dict(zip(CALLS, (41, 53, 248, 249, 250), strict=True)), **IO_URING}, x32=True
    ),
    "aarch64": Abi(
        0xC00000B7, {**dict(zip(CALLS, (198, 199, 217, 218, 219), strict=True)), **IO_URING}, x32=False
    ),
}
# The families a new network namespace isolates; the isolated mode allows these and no other.
ISOLATED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
REFUSED = {  # system call -> the errno it fails with
    "add_key": errno.EPERM,
    "request_key": errno.EPERM,
    "keyctl": errno.EPERM,
    "io_uring_setup": errno.ENOSYS,
    "io_uring_enter": errno.ENOSYS,
    "io_uring_register": errno.ENOSYS,
}


class FilterError(Exception):
    """The filter could not be installed; the message says why."""


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


def program(abi: Abi, families: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jump if true, jump if false, k) rows: see the module docstring for what it refuses."""
    # Each row: (its label or "", opcode, jump-if-true, jump-if-false, k); a jump names a label or skips 0.
    rows: list[tuple[str, int, str | int, str | int, int]] = [
        ("", LD_ABS, 0, 0, ARCH),
        ("", JEQ, 0, "enosys", abi.audit_arch),  # another ABI (32-bit calls on a 64-bit kernel): refuse all
        ("", LD_ABS, 0, 0, NR),
        *([("", JGE, "enosys", 0, X32_BIT)] if abi.x32 else []),
        *[("", JEQ, f"errno {code}", 0, abi.numbers[name]) for name, code in REFUSED.items()],
        ("", JEQ, "family", 0, abi.numbers["socket"]),
        ("", JEQ, "family", 0, abi.numbers["socketpair"]),
        ("", RET, 0, 0, RET_ALLOW),  # every other system call
        ("family", LD_ABS, 0, 0, ARG0_LOW),  # the kernel reads the family as an int: the low 32 bits
        *[("", JEQ, "allow", 0, int(family)) for family in families],
        ("", RET, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT),
        ("allow", RET, 0, 0, RET_ALLOW),
        ("enosys", RET, 0, 0, RET_ERRNO | errno.ENOSYS),
        *[(f"errno {code}", RET, 0, 0, RET_ERRNO | code) for code in sorted(set(REFUSED.values()))],
    ]
    labels = {row[0]: i for i, row in enumerate(rows) if row[0]}

    def skip(at: int, target: str | int) -> int:  # BPF jumps only forwards, by a count of rows
        return target if isinstance(target, int) else labels[target] - at - 1

    return [(code, skip(i, jt), skip(i, jf), k) for i, (_, code, jt, jf, k) in enumerate(rows)]


def install(families: tuple[int, ...]) -> None:
    """Refuse sockets of any family not in `families`, every keyring call and io_uring, here and below."""
    abi = ABIS.get(platform.machine())
    if abi is None:
        raise FilterError(f"no seccomp filter for {platform.machine()}")
    rows = program(abi, families)
    insns = (_Insn * len(rows))(*(_Insn(*row) for row in rows))
    prog = _Prog(len(rows), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise FilterError(f"seccomp filter: {os.strerror(ctypes.get_errno())}")
