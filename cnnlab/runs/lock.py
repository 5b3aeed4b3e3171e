"""One writer per run directory: ``with RunLock(run_dir): train``.

A process that writes a run directory (``cnnlab train --out R`` or ``--resume R``, ``cnnlab import --out R``,
the explorer's jobs; under MPI rank 0) holds an exclusive POSIX record lock (``fcntl``, ``F_SETLK``) on
``R/.lock``, a file of its own that holds nothing but the holder's description (process, host, start time).
A second writer is refused at once with :class:`RunLocked`, whose one-line message names the holder.
Readers (``evaluate``, ``predict``, ``report``, the explorer watching) never take the lock.

Why a POSIX record lock: the kernel drops it when the process ends however it ends (``kill -9`` leaves no
stale lock), it is not inherited by forked children (the worker processes of ``cnnlab.parallel`` hold
nothing), and it is what network filesystems implement. Its one trap: closing *any* descriptor of the file
in the holding process drops the lock, so this process opens ``R/.lock`` exactly once and a second lock of
the same directory in this process is refused from an in-process table, without opening the file again.

Filesystems:

* local filesystems: as above;
* NFS v4, and v3 with the lock manager (``lockd``): the lock is taken on the server and seen by every client;
  a client that dies holds it until the server notices (its lease, 90 s by default on v4);
  mounted with ``nolock`` (v3): the lock is local to each client machine, so it stops a second writer on the
  same machine only;
* Lustre mounted with ``flock``: locks are coherent across the cluster; ``localflock``: local to each node
  (as ``nolock`` above); ``noflock`` (the default of older releases): no lock can be taken.

Where no lock can be taken (the filesystem refuses with ``ENOLCK``, ``ENOSYS``, ``EOPNOTSUPP``...),
cnnlab prints one warning line and goes on without it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .._io import fsync_directory

LOCK_FILE = ".lock"
_HELD: dict[tuple[int, int], str] = {}           # (device, inode) of a run directory -> its holder, in this process
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class RunLocked(ValueError):
    """Another process (or this one) is writing the run directory."""


def describe_holder(info: dict, run_dir) -> str:
    since = time.strftime("%H:%M", time.localtime(info.get("since", 0)))
    day = time.strftime("%Y-%m-%d", time.localtime(info.get("since", 0)))
    if day != time.strftime("%Y-%m-%d"):
        since = f"{day} {since}"
    return (f"{run_dir} is being trained by process {info.get('pid', '?')} on host {info.get('host', '?')} "
            f"since {since}; wait for it to end, or stop it, before writing there")


class RunLock:
    """The exclusive lock of ``run_dir`` (created if missing), held from ``acquire()`` (or ``with``) to
    ``release()``. ``held`` is False where the filesystem takes no locks (after a one-line warning)."""

    def __init__(self, run_dir, warn=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.warn = warn if warn is not None else (lambda text: print(text, file=sys.stderr, flush=True))
        self.fd, self.key, self.held, self.created = None, None, False, False

    def acquire(self) -> "RunLock":
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        st = self.run_dir.stat()
        self.key = (st.st_dev, st.st_ino)
        if self.key in _HELD:
            raise RunLocked(_HELD[self.key])
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    holder = _read_holder(fd)
                    os.close(fd)                       # ours is not the lock; closing drops nothing
                    raise RunLocked(describe_holder(holder, self.run_dir)) from None
                os.close(fd)
                if e.errno in _UNSUPPORTED:
                    self.warn(f"cnnlab: warning: {self.run_dir} cannot be locked ({e.strerror}); nothing stops "
                              f"a second process from writing it at the same time")
                    _HELD[self.key] = describe_holder(info, self.run_dir)
                    return self
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)                               # the holder removed the file as we opened it: try again
        self.fd, self.held = fd, True
        _HELD[self.key] = describe_holder(info, self.run_dir)
        try:                                           # who holds it, for the message a second writer gets
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:                                # a full disk: the lock holds all the same
            pass
        return self

    def release(self) -> None:
        if self.key is not None:
            _HELD.pop(self.key, None)
        if self.fd is not None:
            try:
                os.unlink(self.path)                   # while still locked: the next writer opens a new file
                fsync_directory(self.run_dir)
            except OSError:
                pass
            os.close(self.fd)
        if self.created:
            try:
                self.run_dir.rmdir()                   # made for a run that wrote nothing: leave no trace
            except OSError:
                pass
        self.fd, self.key, self.held, self.created = None, None, False, False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _read_holder(fd) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
