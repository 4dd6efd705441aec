"""The journal against real files: round trips, reopening, torn tails, the directory lock, group
commit, fsync failure and a process killed with SIGKILL right after its records were synced."""

from __future__ import annotations

import asyncio
import errno
import json
import random
import signal
import struct
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from warden.journal import Journal, JournalError


def rec(i: int) -> dict:
    return {"i": i, "key": "wk_é", "at": "2024-01-01T00:00:00+00:00", "tokens": [i, i * 2]}


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


async def test_append_seal_done_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    assert journal.open() == []
    assert (tmp_path / "j").stat().st_mode & 0o777 == 0o700
    assert [journal.append(rec(i)) for i in range(3)] == [1, 2, 3]
    assert journal.pending() == 3
    first = await journal.seal()
    assert [s.records for s in first] == [[rec(0), rec(1), rec(2)]]
    assert journal.append(rec(3)) == 4
    both = await journal.seal()
    assert both[0] is first[0] and await journal.seal() == both  # nothing new: nothing sealed
    assert [s.records for s in both] == [[rec(0), rec(1), rec(2)], [rec(3)]]
    assert both[0].path.name < both[1].path.name
    assert journal.pending() == 4

    journal.done(both[0])
    assert not both[0].path.exists()
    assert journal.pending() == 1
    assert await journal.seal() == [both[1]]
    journal.done(both[1])
    assert journal.pending() == 0 and await journal.seal() == []
    await journal.close()
    assert segment_files(tmp_path / "j") == []  # the empty current segment went too


async def test_reopen_returns_unapplied_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    for i in range(2):
        journal.append(rec(i))
    applied = (await journal.seal())[0]
    journal.append(rec(2))
    kept = (await journal.seal())[1]
    journal.append(rec(3))  # left in the current segment
    journal.done(applied)
    await journal.close()

    again = Journal(tmp_path)
    segments = again.open()
    assert [s.records for s in segments] == [[rec(2)], [rec(3)]]
    assert segments[0].path == kept.path
    assert again.torn_tails == 0 and again.pending() == 2
    assert again.append(rec(4)) == 1  # sequence numbers are per Journal object
    assert [s.records for s in await again.seal()] == [[rec(2)], [rec(3)], [rec(4)]]
    await again.close()


def truncate(data: bytes) -> bytes:
    return data[:-3]


def cut_into_header(data: bytes, last: int) -> bytes:
    return data[:-last + 5]


def flip_body_byte(data: bytes) -> bytes:
    return data[:-2] + bytes([data[-2] ^ 0x01]) + data[-1:]


@pytest.mark.parametrize("damage", ["truncate", "header", "body"])
async def test_a_torn_tail_keeps_the_valid_prefix(tmp_path: Path, damage: str) -> None:
    journal = Journal(tmp_path)
    journal.open()
    for i in range(3):
        journal.append(rec(i))
    await journal.close()
    (path,) = segment_files(tmp_path)
    data = path.read_bytes()
    last = len(data) - sum(8 + len(_body(i)) for i in range(2))
    damaged: dict[str, Callable[[], bytes]] = {
        "truncate": lambda: truncate(data),
        "header": lambda: cut_into_header(data, last),
        "body": lambda: flip_body_byte(data),
    }
    path.write_bytes(damaged[damage]())

    again = Journal(tmp_path)
    assert [s.records for s in again.open()] == [[rec(0), rec(1)]]
    assert again.torn_tails == 1
    await again.close()


async def test_bad_json_with_a_good_crc_is_a_torn_tail(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.append(rec(0))
    await journal.close()
    (path,) = segment_files(tmp_path)
    for body in (b'{"i":', b"[1,2]", b"\xff\xfe"):
        with path.open("ab") as f:
            f.write(struct.pack(">II", len(body), zlib.crc32(body)) + body)
        again = Journal(tmp_path)
        assert [s.records for s in again.open()] == [[rec(0)]]
        assert again.torn_tails == 1
        await again.close()
        path.write_bytes(path.read_bytes()[:-8 - len(body)])


def _body(i: int) -> bytes:
    return json.dumps(rec(i), separators=(",", ":")).encode()


async def test_one_journal_per_directory(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    first.open()
    second = Journal(tmp_path)
    with pytest.raises(JournalError, match=str(tmp_path)):
        second.open()
    await first.close()
    second.open()
    await second.close()


async def test_concurrent_syncs_share_fsyncs(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    seqs = [journal.append(rec(i)) for i in range(500)]
    await asyncio.gather(*(journal.sync(s) for s in seqs))
    assert journal.fsyncs <= 3
    assert journal._synced == 500
    await journal.close()


class Recording(Journal):
    """Notes, for each completed fdatasync, how many records had been written when it began."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.covered: list[int] = []

    def _fdatasync(self, fd: int) -> None:
        began_after = self._seq
        super()._fdatasync(fd)
        self.covered.append(began_after)


async def test_sync_returns_only_after_an_fsync_that_began_after_its_record(
    tmp_path: Path,
) -> None:
    journal = Recording(tmp_path)
    journal.open()
    returned = 0

    async def request(i: int) -> None:
        nonlocal returned
        await asyncio.sleep(random.random() / 100)
        seq = journal.append(rec(i))
        if i % 97 == 0:
            await journal.seal()
        await journal.sync(seq)
        assert max(journal.covered, default=0) >= seq
        returned += 1

    await asyncio.gather(*(request(i) for i in range(500)))
    assert returned == 500
    assert journal.fsyncs < 100
    assert sum(len(s.records) for s in await journal.seal()) == 500
    await journal.close()


class FailingDisk(Journal):
    def _fdatasync(self, fd: int) -> None:
        self.fsyncs += 1
        raise OSError(errno.EIO, "Input/output error")


async def test_a_failed_fsync_fails_every_waiter_and_every_later_sync(tmp_path: Path) -> None:
    journal = FailingDisk(tmp_path)
    journal.open()
    seqs = [journal.append(rec(i)) for i in range(50)]
    results = await asyncio.gather(*(journal.sync(s) for s in seqs), return_exceptions=True)
    assert all(isinstance(r, OSError) and r.errno == errno.EIO for r in results)
    assert journal.fsyncs == 1
    with pytest.raises(OSError):
        await journal.sync(journal.append(rec(50)))
    with pytest.raises(OSError):
        await journal.close()
    again = Journal(tmp_path)
    assert len(again.open()[0].records) == 51  # still there, in the page cache at least
    await again.close()


async def test_without_fsync_sync_returns_at_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path, fsync=False)
    journal.open()
    await journal.sync(journal.append(rec(0)))
    await journal.seal()
    await journal.close()
    assert journal.fsyncs == 0
    again = Journal(tmp_path)
    assert [s.records for s in again.open()] == [[rec(0)]]
    await again.close()


CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from warden.journal import Journal

    async def main():
        journal = Journal(Path(sys.argv[1]))
        journal.open()
        n = int(sys.argv[2])
        for i in range(n):
            seq = journal.append({"i": i})
            if i == n // 2:
                await journal.seal()
            await journal.sync(seq)
        print("synced", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
""")


async def test_synced_records_survive_sigkill(tmp_path: Path) -> None:
    n = 200
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(tmp_path), str(n),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    assert stdout == b"synced\n"

    journal = Journal(tmp_path)  # the dead process's lock is gone
    records = [r for s in journal.open() for r in s.records]
    assert records == [{"i": i} for i in range(n)]
    assert journal.torn_tails == 0
    await journal.close()
