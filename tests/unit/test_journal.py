"""The journal against real files: round trips, reopening, torn tails, damaged records skipped
over, the directory lock, group commit, fsync failure and a process killed with SIGKILL right
after its records were synced."""

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
from prometheus_client import REGISTRY

from warden.journal import Journal, JournalError, split


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


async def test_a_segment_holds_what_keep_makes_of_each_record(tmp_path: Path) -> None:
    """Appended or read back, a record is held as `keep` gives it, beside its JSON as written."""
    journal = Journal(tmp_path, keep=lambda record: record["i"])
    journal.open()
    journal.append(rec(0))
    journal.append(rec(1))
    [segment] = await journal.seal()
    assert segment.records == [0, 1]
    assert [json.loads(b) for b in segment.bodies] == [rec(0), rec(1)]
    journal.append(rec(2))
    await journal.close()
    again = Journal(tmp_path, keep=lambda record: record["i"])
    assert [s.records for s in again.open()] == [[0, 1], [2]]
    await again.close()


async def test_a_payload_travels_after_its_record_and_damage_in_it_is_skipped(
        tmp_path: Path) -> None:
    """A payload (raw bytes after the record's JSON and a newline, as the ledger's COPY rows:
    braces, tabs and newlines among them) comes back whole with its body; the record alone
    reaches `keep`. Damage inside one loses that record only."""
    payload = b'acme\tchat\t{"a":"{x}"}\tt\n' * 50
    journal = Journal(tmp_path)
    journal.open()
    for i in range(3):
        journal.append(rec(i), payload if i != 2 else b"")
    [segment] = await journal.seal()
    assert segment.records == [rec(0), rec(1), rec(2)]
    assert [split(b) for b in segment.bodies] == [
        (_body(0), payload), (_body(1), payload), (_body(2), b"")]
    await journal.close()

    data = segment.path.read_bytes()
    at = data.index(payload) + 700  # inside rec(0)'s payload
    segment.path.write_bytes(data[:at] + b"X" + data[at + 1:])
    again = Journal(tmp_path)
    [read] = again.open()
    assert read.records == [rec(1), rec(2)] and again.corrupt_stretches == 1
    assert split(read.bodies[0]) == (_body(1), payload)
    await again.close()


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
    corrupt, torn = dropped("corrupt"), dropped("torn_tail")
    assert [s.records for s in again.open()] == [[rec(0), rec(1)]]
    assert again.torn_tails == 1 and again.corrupt_stretches == 0
    assert (dropped("corrupt"), dropped("torn_tail")) == (corrupt, torn + 1)
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


def dropped(kind: str) -> float:
    return REGISTRY.get_sample_value("warden_journal_dropped_total", {"kind": kind}) or 0.0


async def five_records(directory: Path) -> tuple[Path, bytes, list[int]]:
    """A closed segment holding rec(0)..rec(4); its bytes and where each record starts."""
    journal = Journal(directory)
    journal.open()
    for i in range(5):
        journal.append(rec(i))
    await journal.close()
    (path,) = segment_files(directory)
    data = path.read_bytes()
    starts = [sum(8 + len(_body(j)) for j in range(i)) for i in range(5)]
    return path, data, starts


def _put_length(data: bytes, at: int, length: int) -> bytes:
    return data[:at] + struct.pack(">I", length) + data[at + 4:]


# Each damages the middle record, rec(2), or the bytes around it; rec(3) and rec(4) follow.
MIDDLE_DAMAGE: dict[str, Callable[[bytes, list[int]], bytes]] = {
    "body byte flipped": lambda d, s: d[:s[2] + 20] + bytes([d[s[2] + 20] ^ 0x40]) + d[s[2] + 21:],
    "bytes zeroed": lambda d, s: d[:s[2] + 3] + bytes(30) + d[s[2] + 33:],
    "crc flipped": lambda d, s: d[:s[2] + 5] + bytes([d[s[2] + 5] ^ 0xFF]) + d[s[2] + 6:],
    "length too long": lambda d, s: _put_length(d, s[2], s[3] - s[2] + 10),
    "length past the end": lambda d, s: _put_length(d, s[2], 1 << 30),
    "length too short": lambda d, s: _put_length(d, s[2], 7),
    "length zero": lambda d, s: _put_length(d, s[2], 0),
    "length field cut short": lambda d, s: d[:s[2] + 1] + d[s[2] + 3:],
    "header missing": lambda d, s: d[:s[2]] + d[s[2] + 8:],
    "record cut short": lambda d, s: d[:s[2] + 30] + d[s[3]:],
}


@pytest.mark.parametrize("damage", MIDDLE_DAMAGE)
async def test_a_damaged_record_does_not_hide_the_records_after_it(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture,
) -> None:
    path, data, starts = await five_records(tmp_path)
    path.write_bytes(MIDDLE_DAMAGE[damage](data, starts))
    corrupt, torn = dropped("corrupt"), dropped("torn_tail")

    again = Journal(tmp_path)
    assert [s.records for s in again.open()] == [[rec(0), rec(1), rec(3), rec(4)]]
    assert (again.corrupt_stretches, again.torn_tails) == (1, 0)
    assert (dropped("corrupt"), dropped("torn_tail")) == (corrupt + 1, torn)
    (logged,) = [r for r in caplog.records if r.name == "warden.journal"]
    assert logged.levelname == "ERROR" and logged.offset == starts[2]
    assert logged.segment == path.name
    await again.close()


@pytest.mark.parametrize("garbage", [
    b"\x00" * 4096,  # a hole a crash can leave in a file
    b"garbage{with braces}{\"i\":1}",
    struct.pack(">II", 12, 0) + b'{"i":"fake"}',  # a header whose checksum is wrong
    bytes(range(256)) * 3,
], ids=["a hole of zeros", "text with braces", "a header with a wrong checksum", "every byte"])
async def test_garbage_between_records_is_skipped(tmp_path: Path, garbage: bytes) -> None:
    path, data, starts = await five_records(tmp_path)
    path.write_bytes(data[:starts[2]] + garbage + data[starts[2]:])
    again = Journal(tmp_path)
    assert [s.records for s in again.open()] == [[rec(i) for i in range(5)]]
    assert (again.corrupt_stretches, again.torn_tails) == (1, 0)
    await again.close()


async def test_damage_first_in_between_and_at_the_tail_is_counted_apart(tmp_path: Path) -> None:
    path, data, starts = await five_records(tmp_path)
    damaged = bytearray(data)
    damaged[starts[0] + 12] ^= 0x01  # rec(0)
    damaged[starts[2] + 12] ^= 0x01  # rec(2)
    damaged[starts[3] + 12] ^= 0x01  # rec(3): the same stretch as rec(2)
    torn = data[starts[1]:starts[2] - 5]  # a copy of rec(1) cut short, as a crash leaves it
    path.write_bytes(bytes(damaged) + torn)
    again = Journal(tmp_path)
    assert [s.records for s in again.open()] == [[rec(1), rec(4)]]
    assert (again.corrupt_stretches, again.torn_tails) == (2, 1)
    await again.close()


async def test_damage_anywhere_loses_only_the_records_it_touches(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "src")
    journal.open()
    for i in range(20):
        journal.append(rec(i))
    await journal.close()
    (source,) = segment_files(tmp_path / "src")
    data = source.read_bytes()
    starts = [sum(8 + len(_body(j)) for j in range(i)) for i in range(21)]
    rng = random.Random(5)
    for trial in range(300):
        first = rng.randrange(len(data) - 1)
        last = min(first + rng.choice([1, 3, 8, 40, 300]), len(data))
        noise = bytes(rng.randrange(256) for _ in range(last - first))
        directory = tmp_path / f"t{trial}"
        directory.mkdir()
        (directory / source.name).write_bytes(data[:first] + noise + data[last:])
        again = Journal(directory)
        records = [r for s in again.open() for r in s.records]
        await again.close()
        untouched = [rec(i) for i in range(20) if starts[i + 1] <= first or starts[i] >= last]
        assert records == untouched or (  # the noise may have left a record as it was
            set(map(str, untouched)) <= set(map(str, records))
            and records == sorted(records, key=lambda r: r["i"])), (trial, first, last)
        after = any(starts[i] >= last for i in range(20))
        assert (again.corrupt_stretches, again.torn_tails) == (int(after), int(not after)), trial


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
