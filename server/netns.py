"""Keeping tests and benchmarks on loopback: a private network namespace.

Only loopback addresses may be the target of a test or benchmark. WebRTC stacks
gather every interface's address as an ICE candidate (Chromium too), so the
reliable guard is a network namespace that has nothing but `lo`: whatever a
browser or a peer tries, its packets cannot leave 127.0.0.0/8 and ::1.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess

CLONE_NEWNET = 0x40000000


def in_loopback_only_namespace() -> bool:
    """True when every interface of this process's network namespace is loopback."""
    return all(name == "lo" for _, name in socket.if_nameindex())


def isolate_network() -> bool:
    """Move this process (and its future children) into a new network namespace with
    only `lo`, up. Needs CAP_SYS_ADMIN (root here); returns False when not possible.

    Call it before any thread or child process starts.
    """
    if in_loopback_only_namespace():
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, env={**os.environ, "LC_ALL": "C"})
    return in_loopback_only_namespace()
