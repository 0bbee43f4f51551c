"""The sandbox's seccomp filter: socket families a network namespace leaves open, kernel keyrings, io_uring.

The filter program is checked row by row by a small BPF interpreter here (both architectures, no kernel
needed), then attacked for real through the sandbox with `socket`, `ctypes` and raw system calls.
"""

from __future__ import annotations

import ast
import errno
import platform
import socket
import struct
import uuid

import pytest

from arpo_train_sft.verify.sandbox import isolation_problem, run_python
from arpo_train_sft.verify.sandbox.seccomp import (
    ABIS,
    ISOLATED_FAMILIES,
    JEQ,
    JGE,
    LD_ABS,
    RET,
    RET_ALLOW,
    RET_ERRNO,
    X32_BIT,
    program,
)

AF_VSOCK, AF_NETLINK, AF_PACKET, AF_TIPC, AF_CAN, AF_ALG, AF_BLUETOOTH, AF_RDS = (
    40,
    16,
    17,
    30,
    29,
    38,
    31,
    21,
)
AUDIT_ARCH_I386 = 0x40000003
SIMULATED = "mount namespace: Operation not permitted (simulated by the test)"
problem = isolation_problem()
live = pytest.mark.skipif(
    bool(problem and " namespace" in problem), reason=f"the host refuses namespaces: {problem}"
)
x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="system call numbers written for x86_64")


def _decide(rows: list[tuple[int, int, int, int]], nr: int, arch: int, arg0: int = 0) -> int:
    """What the kernel would return for one call: run the classic-BPF rows over its seccomp_data."""
    data = struct.pack("<IIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    accumulator, at = 0, 0
    while True:
        code, jump_true, jump_false, k = rows[at]
        if code == RET:
            return k
        if code == LD_ABS:
            accumulator, at = struct.unpack_from("<I", data, k)[0], at + 1
            continue
        assert code in (JEQ, JGE), code
        taken = accumulator == k if code == JEQ else accumulator >= k
        at += 1 + (jump_true if taken else jump_false)


@pytest.mark.parametrize("machine", sorted(ABIS))
def test_the_filter_allows_only_the_families_a_network_namespace_isolates(machine: str) -> None:
    abi = ABIS[machine]
    rows = program(abi, ISOLATED_FAMILIES)
    assert len(rows) < 256 and all(
        0 <= row[1] < len(rows) - i and 0 <= row[2] < len(rows) - i for i, row in enumerate(rows)
    )

    def call(name: str, arg0: int = 0, arch: int = abi.audit_arch) -> int:
        return _decide(rows, abi.numbers[name], arch, arg0)

    for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
        assert call("socket", family) == call("socketpair", family) == RET_ALLOW
    for family in (AF_VSOCK, AF_NETLINK, AF_PACKET, AF_TIPC, AF_CAN, AF_ALG, AF_BLUETOOTH, AF_RDS, 255):
        assert call("socket", family) == call("socketpair", family) == RET_ERRNO | errno.EAFNOSUPPORT
    # The kernel reads the family as an int: junk in the upper half changes nothing either way.
    assert call("socket", (7 << 32) | AF_VSOCK) == RET_ERRNO | errno.EAFNOSUPPORT
    assert call("socket", (AF_VSOCK << 32) | socket.AF_INET) == RET_ALLOW
    for name in ("add_key", "request_key", "keyctl"):
        assert call(name) == RET_ERRNO | errno.EPERM
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert call(name) == RET_ERRNO | errno.ENOSYS
    assert (
        _decide(rows, 0, abi.audit_arch) == _decide(rows, 63, abi.audit_arch) == RET_ALLOW
    )  # read, and others
    # Another ABI's numbers mean other calls (i386's socket is 359): all of them are refused.
    assert _decide(rows, 359, AUDIT_ARCH_I386, AF_VSOCK) == RET_ERRNO | errno.ENOSYS
    assert _decide(rows, 3, AUDIT_ARCH_I386) == RET_ERRNO | errno.ENOSYS
    if abi.x32:
        assert (
            _decide(rows, X32_BIT | abi.numbers["socket"], abi.audit_arch, AF_VSOCK)
            == RET_ERRNO | errno.ENOSYS
        )


def test_the_weak_modes_filter_refuses_every_family() -> None:
    abi = ABIS["x86_64"]
    rows = program(abi, ())
    for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, AF_VSOCK):
        assert _decide(rows, abi.numbers["socket"], abi.audit_arch, family) == RET_ERRNO | errno.EAFNOSUPPORT


# Each line tries one family through the socket module, through libc, and as a socketpair; prints the errnos.
FAMILIES_SNIPPET = """
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
def attempt(make):
    try:
        make()
        return 0
    except OSError as err:
        return err.errno
def raw(family, kind):
    fd = libc.socket(family, kind, 0)
    return ctypes.get_errno() if fd < 0 else 0
def vsock_bind():
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    s.bind((socket.VMADDR_CID_ANY, 5000))
found = {}
for family, kind in FAMILIES:
    found[family, kind] = (attempt(lambda: socket.socket(family, kind)), raw(family, kind),
                     attempt(lambda: socket.socketpair(family, kind)))
found['vsock bind'] = attempt(vsock_bind)
a, b = socket.socketpair()
a.send(b'still works')
found['unix pair'] = b.recv(11).decode()
found['inet'] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).bind(('127.0.0.1', 0)))
found['math'] = sum(i * i for i in range(10))
print(found)
"""


@live
def test_sockets_of_families_a_network_namespace_leaves_open_cannot_be_made() -> None:
    families = [
        (AF_VSOCK, socket.SOCK_STREAM),
        (AF_VSOCK, socket.SOCK_DGRAM),
        (AF_NETLINK, socket.SOCK_RAW),
        (AF_PACKET, socket.SOCK_DGRAM),
        (AF_TIPC, socket.SOCK_RDM),
        (AF_ALG, socket.SOCK_SEQPACKET),
        (AF_CAN, socket.SOCK_RAW),
        (AF_BLUETOOTH, socket.SOCK_STREAM),
        (AF_RDS, socket.SOCK_SEQPACKET),
    ]
    result = run_python(f"FAMILIES = {[(f, int(k)) for f, k in families]!r}" + FAMILIES_SNIPPET)
    found = ast.literal_eval(result.stdout)
    for family, kind in families:  # through the socket module, through libc, as a socketpair
        assert found[family, int(kind)] == (errno.EAFNOSUPPORT,) * 3, (family, kind, found[family, int(kind)])
    assert found["vsock bind"] == errno.EAFNOSUPPORT  # the probe bound a vsock port of the host's VM here
    assert (found["unix pair"], found["inet"], found["math"]) == ("still works", 0, 285)  # normal python runs


@live
@x86_64
def test_no_abi_side_door_reaches_socket_or_io_uring() -> None:
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def call(*args):\n    return libc.syscall(*args), ctypes.get_errno()\n"
        f"print([call({X32_BIT | 41}, {AF_VSOCK}, 1, 0), call(425, 8, (ctypes.c_char * 120)())])\n"
    )  # the x32 ABI's socket(AF_VSOCK), and io_uring_setup, whose IORING_OP_SOCKET bypasses socket()
    assert ast.literal_eval(run_python(code).stdout) == [(-1, errno.ENOSYS), (-1, errno.ENOSYS)]


@live
@x86_64
def test_a_key_left_by_one_call_is_not_there_for_the_next() -> None:
    name = f"arpo-sandbox-{uuid.uuid4().hex}".encode()
    leave = (  # add_key("user", name, data, KEY_SPEC_USER_KEYRING), then KEY_SPEC_SESSION_KEYRING
        f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print([(libc.syscall(248, b'user', {name!r}, b'left here', 9, ring), ctypes.get_errno()) for ring in (-4, -3)])"
    )
    assert ast.literal_eval(run_python(leave).stdout) == [(-1, errno.EPERM), (-1, errno.EPERM)]
    find = (  # keyctl(KEYCTL_SEARCH, ring, "user", name, 0) and request_key("user", name)
        f"import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print([libc.syscall(250, 10, ring, b'user', {name!r}, 0) for ring in (-4, -3)] + "
        f"[libc.syscall(249, b'user', {name!r}, None, 0)])"
    )
    assert ast.literal_eval(run_python(find).stdout) == [-1, -1, -1]


@live
def test_the_weak_mode_refuses_ctypes_sockets_too() -> None:
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"print([(libc.socket(family, 1, 0), ctypes.get_errno()) for family in (1, 2, 10, {AF_VSOCK})])"
    )
    result = run_python(code, allow_weak=True, probe=lambda: SIMULATED)
    assert result.mode == "weak" and ast.literal_eval(result.stdout) == [(-1, errno.EAFNOSUPPORT)] * 4
