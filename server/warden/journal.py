"""A local, append-only journal (an outbox): the sidecar writes a record here before it
acknowledges the work, and a background flusher later applies sealed segments to Postgres.

Format: a directory (mode 0700) holding `LOCK` and segment files `<16-digit counter>.wal`, whose
names sort in creation order. A segment is a run of records, each
`4-byte big-endian body length | 4-byte big-endian zlib.crc32(body) | body`, the body being
compact UTF-8 JSON of one dict (the record), optionally followed by a newline and a payload of
raw bytes (audit records carry their events there as COPY rows: records.py). Compact JSON
holds no raw newline, so the first one ends the record.

Guarantees:
- A record `append` returned for survives SIGKILL of the process (it went through os.write).
- A record whose `sync` returned also survives a machine crash (fdatasync; a new segment's
  directory entry is fsynced before any record in it can be reported synced).
- A crash can tear only the tail of a segment: `open` ignores a damaged stretch that runs to the
  end of its segment (counted in `torn_tails`). Damage anywhere else (a bad checksum, a wrong
  length, bytes that are no record) never hides the records after it: `open` skips to the
  next position where a whole record validates (header, CRC32 of its body, a JSON object),
  logs the stretch and counts it in `corrupt_stretches` and
  warden_journal_dropped_total{kind="corrupt"}. A stretch may have held several records.
- Records are applied at least once: a crash between applying a segment and `done` replays it.
- After an fsync failure nothing is reported synced again (the kernel may have dropped the
  dirty pages and cleared the error), so every later `sync` raises OSError too.
- One `Journal` per directory at a time: an exclusive flock on `LOCK`, released by the kernel
  when the process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warden import metrics

log = logging.getLogger("warden.journal")

_HEADER = struct.Struct(">II")
# One encoder, not one per record. Records are trees of plain values built by Warden, never
# cyclic: skipping the cycle check encodes an explained decision in 14.5 µs instead of 16.8.
_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_SUFFIX = ".wal"
# Every body starts with the JSON of a dict, so with this byte: resynchronising after damage
# tries only the positions 8 bytes before one (in C, by bytes.find), which skips zero-filled
# stretches at once. Inside a body the 4 bytes before a "{" are text, whose value as a length
# nearly always exceeds any segment (printable text, at least 0x20202020; a COPY row's tab or
# newline first, 0x09000000), so such positions fail at once; a rare smaller one costs a CRC.
_BODY_START = b"{"
_PAYLOAD = b"\n"
# A sync whose record is the only one written for this long is done on the event loop's own
# thread instead of the executor's: no other call waits to share it, and the two thread
# wake-ups of a hop cost more than the fdatasync itself (a RecordUsage of an app making one
# call at a time answered about 0.25 ms sooner here). Busier, records come closer together
# and share an fdatasync in the executor (group commit), leaving the loop to serve.
QUIET = 0.002


class JournalError(RuntimeError):
    pass


@dataclass
class Segment:
    path: Path
    records: list[Any]  # what the journal keeps of each record (`Journal(keep=...)`)
    bodies: list[bytes]  # each record's body as written (JSON, then any payload)
    size: int  # bytes
    since: float  # wall-clock time of its first record (its file's mtime when read back)


def _whole(record: dict) -> dict:
    return record


class Journal:
    def __init__(self, directory: Path, fsync: bool = True,
                 keep: Callable[[dict], Any] = _whole, max_bytes: int = 0) -> None:
        """`keep(record)` is what a segment holds of each record besides its JSON: a caller that
        needs a few fields saves the memory of every record decoded until it is applied (the
        decoded records took six times the journal's bytes). `max_bytes`: from how many
        pending bytes on `full()` says so (0: never)."""
        self.directory = Path(directory)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self._keep = keep
        self.torn_tails = 0
        self.corrupt_stretches = 0  # damaged stretches skipped inside segments
        self.fsyncs = 0  # fdatasync calls on segments, for tests and metrics
        self._lock_fd = -1
        self._fd = -1
        self._path = Path()
        self._size = 0  # bytes in the current segment, to undo a failed write
        self._since = 0.0  # when the current segment's first record was written
        self._current: list[Any] = []
        self._bodies: list[bytes] = []  # the body of each record of _current
        self._sealed: list[Segment] = []
        self._counter = 0
        self._seq = 0  # last sequence number handed out
        self._synced = 0  # every record up to here is known durable
        self._failed: OSError | None = None
        self._io = asyncio.Lock()  # one fdatasync (sync, seal or close) at a time
        # The journal's own thread for fdatasync: on the loop's default executor an
        # acknowledgement would wait behind whatever else the process runs in threads (DNS
        # lookups, a library's blocking calls), and could wait on them forever.
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warden-journal")
        self._next: asyncio.Future[None] | None = None  # the fsync new callers wait for
        self._flushes: set[asyncio.Task[None]] = set()
        self._appended = self._appended_before = float("-inf")  # monotonic, the last two

    def open(self) -> list[Segment]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JournalError(f"journal directory {self.directory} is locked by another "
                               "process (or another Journal in this one)") from None
        self._lock_fd = fd
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            if not path.stem.isdigit():
                continue
            self._counter = max(self._counter, int(path.stem))
            data = path.read_bytes()
            records, bodies = self._read(path, data)
            if records:
                self._sealed.append(Segment(path, records, bodies, len(data),
                                            path.stat().st_mtime))
            else:  # nothing to apply: an empty segment, or one torn before its first record
                path.unlink()
        self._fd, self._path = self._new_segment()
        if self.fsync:
            self._fsync_dir()
        return list(self._sealed)

    def append(self, record: dict, payload: bytes = b"") -> int:
        body = _encode(record).encode()
        if payload:
            body += _PAYLOAD + payload
        return self.append_body(body, self._keep(record))

    def append_body(self, body: bytes, kept: Any) -> int:
        """append() of a record already encoded (compact JSON of a dict, then any payload),
        keeping `kept` of it (what `keep` would have given)."""
        data = _HEADER.pack(len(body), zlib.crc32(body)) + body
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            # A half-written record would hide every later one from open(): cut it off.
            os.ftruncate(self._fd, self._size)
            raise
        if not self._current:
            self._since = time.time()
        self._appended_before, self._appended = self._appended, time.monotonic()
        self._size += len(data)
        self._current.append(kept)
        self._bodies.append(body)
        self._seq += 1
        return self._seq

    async def sync(self, seq: int) -> None:
        if not self.fsync or seq <= self._synced:
            return
        if self._failed is not None:
            raise OSError(self._failed.errno, f"journal fsync failed: {self._failed.strerror}")
        if (self._next is None and not self._io.locked()
                and time.monotonic() - self._appended_before >= QUIET):
            upto = self._seq
            try:
                self._fdatasync(self._fd)
            except OSError as e:
                self._failed = self._failed or e
                raise
            self._synced = max(self._synced, upto)
            return
        if self._next is None:
            # The fsync behind this future starts after every record written so far, and
            # everyone who calls sync before it starts shares it.
            self._next = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._flush(self._next))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        await asyncio.shield(self._next)

    async def _flush(self, done: asyncio.Future[None]) -> None:
        try:
            async with self._io:
                self._next = None
                upto = self._seq
                try:
                    if self._failed is not None:
                        raise self._failed
                    if upto > self._synced:  # else a seal or close already covered it
                        await self._in_thread(self._fdatasync, self._fd)
                except OSError as e:
                    self._failed = self._failed or e
                    done.set_exception(e)
                else:
                    self._synced = max(self._synced, upto)
                    done.set_result(None)
        finally:
            if not done.done():
                done.cancel()

    async def seal(self) -> list[Segment]:
        async with self._io:
            if self._current:
                old = Segment(self._path, self._current, self._bodies, self._size, self._since)
                old_fd, upto = self._fd, self._seq
                # Swap first: appends made while the old segment syncs go to the new one.
                self._fd, self._path = self._new_segment()
                self._sealed.append(old)
                await self._retire(old_fd, upto, new_segment=True)
            return list(self._sealed)

    def done(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)
        self._sealed = [s for s in self._sealed if s is not segment]
        if self.fsync:
            self._fsync_dir()

    @property
    def segment(self) -> int:
        """The number of the segment appends go to now (it grows with each new segment)."""
        return self._counter

    def pending(self) -> int:
        return sum(len(s.records) for s in self._sealed) + len(self._current)

    def pending_bytes(self) -> int:
        return sum(s.size for s in self._sealed) + self._size

    def full(self) -> bool:
        """Holds max_bytes not yet applied: writers of what can wait refuse it instead."""
        return bool(self.max_bytes) and self.pending_bytes() >= self.max_bytes

    def oldest_age(self) -> float:
        """Seconds since the oldest record not yet done was written (0 when there is none)."""
        times = [s.since for s in self._sealed] + ([self._since] if self._current else [])
        return max(time.time() - min(times), 0.0) if times else 0.0

    async def close(self) -> None:
        async with self._io:
            fd, self._fd = self._fd, -1  # appends from now on fail with EBADF
            try:
                if fd >= 0 and self._current:
                    await self._retire(fd, self._seq, new_segment=False)
                elif fd >= 0:
                    os.close(fd)
                    self._path.unlink(missing_ok=True)
            finally:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = -1
        await asyncio.gather(*self._flushes)
        self._disk.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)

    async def _retire(self, fd: int, upto: int, new_segment: bool) -> None:
        """fdatasync and close a segment holding records up to `upto`."""
        if not self.fsync:
            os.close(fd)
            return
        try:
            # The thread closes the fd too, so a cancelled await cannot close it mid-fsync.
            await self._in_thread(self._sync_and_close, fd, new_segment)
        except OSError as e:
            self._failed = self._failed or e
            raise
        self._synced = max(self._synced, upto)

    def _new_segment(self) -> tuple[int, Path]:
        self._counter += 1
        path = self.directory / f"{self._counter:016d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._current, self._bodies, self._size = [], [], 0
        return fd, path

    def _read(self, path: Path, data: bytes) -> tuple[list[Any], list[bytes]]:
        records, bodies, pos = [], [], 0
        while pos < len(data):
            found = _record_at(data, pos)
            if found is not None:
                records.append(self._keep(found[0]))
                bodies.append(data[pos + _HEADER.size:found[1]])
                pos = found[1]
                continue
            after = _next_record(data, pos + 1)
            end = len(data) if after is None else after
            info = {"segment": path.name, "offset": pos, "bytes": end - pos}
            if after is None:
                # What a crash mid-write leaves: a record cut short with nothing after it.
                self.torn_tails += 1
                metrics.JOURNAL_DROPPED.labels("torn_tail").inc()
                log.warning("journal segment ends in a torn record; ignored", extra=info)
                break
            self.corrupt_stretches += 1
            metrics.JOURNAL_DROPPED.labels("corrupt").inc()
            log.error("damaged journal records skipped; the records after them are kept",
                      extra={**info, "next_record_at": after})
            pos = after
        return records, bodies

    def _fdatasync(self, fd: int) -> None:
        self.fsyncs += 1
        os.fdatasync(fd)

    def _sync_and_close(self, fd: int, new_segment: bool) -> None:
        try:
            self._fdatasync(fd)
            if new_segment:  # its directory entry, before any record in it is synced
                self._fsync_dir()
        finally:
            os.close(fd)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _record_at(data: bytes, pos: int) -> tuple[dict, int] | None:
    """The record starting at `pos` and the position after it, or None if none validates."""
    if len(data) - pos < _HEADER.size:
        return None
    length, crc = _HEADER.unpack_from(data, pos)
    start = pos + _HEADER.size
    if length > len(data) - start or data[start:start + 1] != _BODY_START:
        return None
    body = data[start:start + length]
    if zlib.crc32(body) != crc:
        return None
    try:
        record = json.loads(split(body)[0])
    except ValueError:  # includes UnicodeDecodeError
        return None
    return (record, start + length) if isinstance(record, dict) else None


def split(body: bytes) -> tuple[bytes, bytes]:
    """A body's record (JSON) and its payload (b"" when it has none)."""
    record, _, payload = body.partition(_PAYLOAD)
    return record, payload


def _next_record(data: bytes, pos: int) -> int | None:
    """The first position from `pos` on where a whole record validates (None: none does).
    A CRC32 match on a random stretch that also parses as a JSON object is left to chance."""
    brace = data.find(_BODY_START, pos + _HEADER.size)
    while brace != -1:
        if _record_at(data, brace - _HEADER.size) is not None:
            return brace - _HEADER.size
        brace = data.find(_BODY_START, brace + 1)
    return None
