"""The replay queue's file: damage, full disks, permissions, file systems, schema versions."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils

from stitch_import import _sqlite
from stitch_import import queue as queue_module
from stitch_import.errors import QueueError, QueueStorageError, UnsupportedFilesystem
from stitch_import.queue import ReplayQueue

URL = "http://127.0.0.1:8080"


def put(queue: ReplayQueue, body: bytes = b"[1]") -> int:
    return queue.enqueue(body, endpoint="batch", base_url=URL, client_id=7, tables=["t"],
                         record_count=1, reason="unavailable")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- damaged files ----------------------------------------------------------------------------

def test_a_file_that_is_not_a_database_is_set_aside(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "queue.db"
    garbage = b"this is not SQLite " * 500
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="stitch_import.queue"):
        queue = ReplayQueue(path)
    [moved] = tmp_path.glob("queue.db.corrupt-*")
    assert moved.read_bytes() == garbage  # kept, never deleted
    [record] = caplog.records
    assert str(path) in record.getMessage() and str(moved) in record.getMessage()
    assert queue.get(put(queue)) is not None  # a fresh queue works
    assert queue.stats()["pending_batches"] == 1
    queue.close()


def test_a_database_with_damaged_pages_is_set_aside(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as queue:
        for _ in range(50):
            put(queue, b"x" * 3000)
    page_size = 4096
    with open(path, "r+b") as damaged:
        damaged.seek(page_size * 3)
        damaged.write(b"\xff" * page_size * 4)
    with caplog.at_level(logging.WARNING, logger="stitch_import.queue"), \
            ReplayQueue(path) as queue:
        assert queue.stats()["pending_batches"] == 0
        assert len(list(tmp_path.glob("queue.db.corrupt-*"))) == 1
        assert "renamed" in caplog.text


def test_quarantine_moves_the_wal_along(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    for name, content in (("queue.db", b"db"), ("queue.db-wal", b"wal"), ("queue.db-shm", b"")):
        (tmp_path / name).write_bytes(content)
    first = _sqlite.quarantine(path)
    path.write_bytes(b"db again")
    second = _sqlite.quarantine(path)
    assert first != second
    assert Path(f"{first}-wal").read_bytes() == b"wal" and Path(f"{first}-shm").exists()
    assert not path.exists() and not Path(f"{path}-wal").exists()
    assert second.read_bytes() == b"db again"


def test_someone_else_s_database_is_refused_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError, match="not a stitch-import replay queue"):
        ReplayQueue(path)
    assert list(tmp_path.glob("*.corrupt-*")) == []
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    conn.close()


# --- schema versions and the migration hook ---------------------------------------------------

def test_a_file_missing_its_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    ReplayQueue(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE dead_letters")
    conn.close()
    with pytest.raises(QueueError, match="lacks the tables dead_letters"):
        ReplayQueue(path)


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    ReplayQueue(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(QueueError, match="newer stitch-import"):
        ReplayQueue(path)


def test_migrations_upgrade_an_existing_file_without_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queue.db"
    with ReplayQueue(path) as old:
        ids = [put(old, b"[1]"), put(old, b"[2]")]

    def add_priority(db: sqlite_utils.Database) -> None:
        assert "priority" not in db.table("batches").columns_dict
        db.execute("ALTER TABLE batches ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")

    monkeypatch.setattr(queue_module, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(queue_module.MIGRATIONS, 1, add_priority)
    with ReplayQueue(path) as new:
        assert [batch.body for batch in new.list_pending()] == [b"[1]", b"[2]"]
        assert [batch.id for batch in new.claim(base_url=URL, client_id=7, limit=5)] == ids
        assert new.stats()["pending_batches"] == 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert conn.execute("SELECT DISTINCT priority FROM batches").fetchall() == [(0,)]
    conn.close()


def test_a_missing_migration_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queue.db"
    ReplayQueue(path).close()
    monkeypatch.setattr(queue_module, "SCHEMA_VERSION", 2)
    with pytest.raises(QueueError, match="No migration from queue file version 1 to 2"):
        ReplayQueue(path)


def test_an_old_sqlite_library_is_refused_clearly() -> None:
    with pytest.raises(QueueError, match=r"SQLite 3\.35\.0 or later.*uses SQLite 3\.31\.1"):
        _sqlite.check_sqlite_version((3, 31, 1), "3.31.1")
    _sqlite.check_sqlite_version((3, 35, 0), "3.35.0")


# --- a full disk --------------------------------------------------------------------------------

def test_a_full_disk_raises_storage_error_and_keeps_what_was_stored(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    queue = ReplayQueue(path)
    kept = [put(queue, f"[{index}]".encode()) for index in range(5)]
    queue._limit_pages(spare_pages=0)
    big = b"x" * 50_000
    with pytest.raises(QueueStorageError) as raised:
        put(queue, big)
    message = str(raised.value)
    assert str(path) in message and "full" in message and "STITCH_IMPORT_QUEUE" in message
    assert [batch.id for batch in queue.list_pending()] == kept
    assert [batch.body for batch in queue.list_pending()] == [f"[{i}]".encode() for i in range(5)]
    [batch] = queue.claim(base_url=URL, client_id=7)
    assert queue.ack(batch.id)  # the queue still works for what fits
    queue.close()

    with ReplayQueue(path) as reopened:  # room again (a new connection has no cap)
        assert reopened.get(put(reopened, big)) is not None
        assert reopened.stats()["pending_batches"] == 5
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()


# --- permissions --------------------------------------------------------------------------------

def test_file_and_created_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "made" / "by-us" / "queue.db"
    before = mode(tmp_path)
    previous = os.umask(0)
    try:
        queue = ReplayQueue(path)
        put(queue)
    finally:
        os.umask(previous)
    assert mode(path) == 0o600
    for sidecar in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert sidecar.exists() and mode(sidecar) == 0o600
    assert mode(tmp_path / "made") == 0o700 and mode(tmp_path / "made" / "by-us") == 0o700
    assert mode(tmp_path) == before  # an existing folder is left alone
    queue.close()


def test_a_loose_existing_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    ReplayQueue(path).close()
    os.chmod(path, 0o644)
    with ReplayQueue(path):
        assert mode(path) == 0o600


def test_a_path_under_a_file_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(QueueStorageError, match="writable"):
        ReplayQueue(blocker / "queue.db")


def test_a_folder_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "queue.db").mkdir()
    with pytest.raises(QueueStorageError):
        ReplayQueue(tmp_path / "queue.db")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_a_read_only_folder_is_a_storage_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        with pytest.raises(QueueStorageError, match=str(locked)):
            ReplayQueue(locked / "queue.db")
    finally:
        os.chmod(locked, 0o700)


# --- network file systems -----------------------------------------------------------------------

SAMPLE_MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
server:/export/home /home nfs4 rw,vers=4.2,addr=10.0.0.2 0 0
/dev/sdb1 /home/alice/local ext4 rw 0 0
//nas/share /mnt/My\\040Share cifs rw,vers=3.0 0 0
alice@host:/data /mnt/remote fuse.sshfs rw,nosuid 0 0
tmpfs /home/alice/local/ram tmpfs rw 0 0
"""


def test_the_mount_table_is_parsed_with_escapes() -> None:
    mounts = _sqlite.parse_mount_table(SAMPLE_MOUNTS)
    assert ("/mnt/My Share", "cifs") in mounts
    assert mounts[0] == ("/", "ext4") and len(mounts) == 7


@pytest.mark.parametrize(("path", "expected"), [
    ("/var/lib/queue.db", "ext4"),
    ("/home/bob/queue.db", "nfs4"),
    ("/home", "nfs4"),
    ("/homestead/queue.db", "ext4"),  # a prefix of the text, not of the path
    ("/home/alice/local/queue.db", "ext4"),
    ("/home/alice/local/ram/q.db", "tmpfs"),
    ("/mnt/My Share/queue.db", "cifs"),
    ("/mnt/remote/x/queue.db", "fuse.sshfs"),
])
def test_the_longest_mount_point_decides(path: str, expected: str) -> None:
    assert _sqlite.filesystem_type(path, _sqlite.parse_mount_table(SAMPLE_MOUNTS)) == expected


def test_a_later_mount_on_the_same_point_wins() -> None:
    mounts = _sqlite.parse_mount_table("a / ext4 rw 0 0\nb /data ext4 rw 0 0\nc /data nfs rw 0 0\n")
    assert _sqlite.filesystem_type("/data/q.db", mounts) == "nfs"


def test_a_network_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = f"/dev/sda1 / ext4 rw 0 0\nserver:/x {tmp_path} nfs rw 0 0\n"
    monkeypatch.setattr(queue_module, "_read_mount_table", lambda: table)
    with pytest.raises(UnsupportedFilesystem, match=r"network file system \(nfs\)"):
        ReplayQueue(tmp_path / "queue.db")
    assert not (tmp_path / "queue.db").exists()


def test_an_unreadable_mount_table_skips_the_check(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "_read_mount_table", lambda: None)
    with ReplayQueue(tmp_path / "queue.db") as queue:
        assert put(queue) == 1


def test_this_machine_s_mount_table_allows_a_local_temp_folder(tmp_path: Path) -> None:
    table = _sqlite.read_mount_table()
    if table is None:
        pytest.skip("no readable mount table here")
    fs_type = _sqlite.filesystem_type(os.path.realpath(tmp_path), _sqlite.parse_mount_table(table))
    assert fs_type is not None
    assert fs_type not in _sqlite.NETWORK_FILESYSTEMS
