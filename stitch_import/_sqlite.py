"""File-system and SQLite helpers for the replay queue: permissions, mounts, errors, quarantine.

Kept apart from :mod:`stitch_import.queue` so that the queue reads as queue logic only.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from .errors import QueueError, UnsupportedFilesystem

#: ``UPDATE … RETURNING`` (used to claim batches atomically) arrived in SQLite 3.35.0.
MIN_SQLITE_VERSION = (3, 35, 0)

#: File-system types (as ``/proc/mounts`` names them) whose locking SQLite cannot rely on.
NETWORK_FILESYSTEMS = frozenset({
    "9p", "afs", "beegfs", "ceph", "cifs", "coda", "davfs", "drvfs", "fuse.ceph-fuse",
    "fuse.davfs2", "fuse.gcsfuse", "fuse.glusterfs", "fuse.goofys", "fuse.juicefs",
    "fuse.rclone", "fuse.s3fs", "fuse.sshfs", "fuse.vmhgfs-fuse", "glusterfs", "gpfs",
    "lustre", "ncpfs", "nfs", "nfs4", "smb", "smb2", "smb3", "smbfs", "sshfs", "vboxsf",
})

MOUNT_TABLE = "/proc/mounts"

# Primary SQLite result codes (the low byte of an extended code).
_SQLITE_PERM = 3
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

BUSY = "busy"
FULL = "full"
UNWRITABLE = "unwritable"
CORRUPT = "corrupt"
OTHER = "other"

_KIND_BY_CODE = {
    _SQLITE_BUSY: BUSY, _SQLITE_LOCKED: BUSY,
    _SQLITE_FULL: FULL,
    _SQLITE_PERM: UNWRITABLE, _SQLITE_READONLY: UNWRITABLE, _SQLITE_CANTOPEN: UNWRITABLE,
    _SQLITE_IOERR: UNWRITABLE,
    _SQLITE_CORRUPT: CORRUPT, _SQLITE_NOTADB: CORRUPT,
}

# Python < 3.11 has no ``sqlite_errorcode``: fall back on SQLite's fixed English messages.
_KIND_BY_MESSAGE = (
    ("locked", BUSY), ("busy", BUSY),
    ("disk is full", FULL),
    ("readonly", UNWRITABLE), ("read-only", UNWRITABLE), ("unable to open", UNWRITABLE),
    ("disk i/o error", UNWRITABLE),
    ("malformed", CORRUPT), ("not a database", CORRUPT),
)


def error_kind(error: sqlite3.Error) -> str:
    """Classify a SQLite error as ``busy``, ``full``, ``unwritable``, ``corrupt`` or ``other``."""
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _KIND_BY_CODE.get(code & 0xFF, OTHER)
    message = str(error).lower()
    for fragment, kind in _KIND_BY_MESSAGE:
        if fragment in message:
            return kind
    return OTHER


def check_sqlite_version(version: Tuple[int, ...], library_version: str) -> None:
    """Refuse a SQLite library too old for ``UPDATE … RETURNING``."""
    if tuple(version) < MIN_SQLITE_VERSION:
        needed = ".".join(str(part) for part in MIN_SQLITE_VERSION)
        raise QueueError(
            f"The replay queue needs SQLite {needed} or later (for UPDATE ... RETURNING); this "
            f"Python uses SQLite {library_version}. Use a Python built with a newer SQLite "
            f"(python.org and most current distributions ship one).")


def _unescape_mount_field(field: str) -> str:
    r"""Decode the octal escapes (``\040`` for a space) that ``/proc/mounts`` uses."""
    if "\\" not in field:
        return field
    out: List[str] = []
    index = 0
    while index < len(field):
        chunk = field[index:index + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            index += 4
        else:
            out.append(field[index])
            index += 1
    return "".join(out)


def parse_mount_table(text: str) -> List[Tuple[str, str]]:
    """Parse ``/proc/mounts`` text into ``(mount point, file-system type)`` pairs, in order."""
    mounts: List[Tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append((_unescape_mount_field(fields[1]), fields[2]))
    return mounts


def _is_under(path: str, mount_point: str) -> bool:
    """Whether ``path`` is ``mount_point`` or inside it (whole path components only)."""
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def filesystem_type(path: str, mounts: Iterable[Tuple[str, str]]) -> Optional[str]:
    """The type of the file system holding ``path``: the longest matching mount point wins.

    When one mount point is listed several times (over-mounted), the last one listed is the
    one in effect, as in ``/proc/mounts``.
    """
    best: Optional[Tuple[int, str]] = None
    for mount_point, fs_type in mounts:
        if _is_under(path, mount_point) and (best is None or len(mount_point) >= best[0]):
            best = (len(mount_point), fs_type)
    return None if best is None else best[1]


def read_mount_table() -> Optional[str]:
    """The text of ``/proc/mounts``, or ``None`` where it cannot be read (not Linux, sandbox)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(MOUNT_TABLE, encoding="utf-8", errors="replace") as mounts:
            return mounts.read()
    except OSError:
        return None


def ensure_local_filesystem(path: Path, mount_table: Optional[str]) -> None:
    """Refuse a queue path on a network file system, where SQLite's file locks are unsafe."""
    if mount_table is None:
        return
    resolved = os.path.realpath(path)
    fs_type = filesystem_type(resolved, parse_mount_table(mount_table))
    if fs_type is not None and fs_type.lower() in NETWORK_FILESYSTEMS:
        raise UnsupportedFilesystem(
            f"The replay queue {path} is on a network file system ({fs_type}), where SQLite "
            f"cannot lock the file safely and batches could be lost or sent twice. Point "
            f"STITCH_IMPORT_QUEUE (or queue_path=) at a file on a local disk.")


def ensure_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents, each one we create readable by us only."""
    missing: List[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process created it meanwhile
        os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask


def create_private_file(path: Path) -> bool:
    """Create an empty ``path`` with mode 0600 unless it exists; return whether we created it."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


def sidecar_paths(path: Path) -> Tuple[Path, Path]:
    """The ``-wal`` and ``-shm`` files SQLite keeps beside a database in WAL mode."""
    return Path(f"{path}-wal"), Path(f"{path}-shm")


def make_owner_only(path: Path) -> None:
    """Set the database and its ``-wal``/``-shm`` files to 0600 where we own them."""
    for candidate in (path, *sidecar_paths(path)):
        try:
            status = candidate.stat()
            if status.st_mode & 0o077 and status.st_uid == os.geteuid():
                os.chmod(candidate, 0o600)
        except OSError:
            continue  # absent, or not ours to change


def quarantine(path: Path) -> Path:
    """Rename a damaged database (and its ``-wal``/``-shm``) aside; never delete it.

    The new name is ``<name>.corrupt-<UTC timestamp>`` (with a counter if that exists), and
    the sidecars keep SQLite's naming so the set can still be opened for forensics.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        counter += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
    os.replace(path, target)
    for sidecar, moved in zip(sidecar_paths(path), sidecar_paths(target)):
        try:
            os.replace(sidecar, moved)
        except FileNotFoundError:
            continue
    return target
