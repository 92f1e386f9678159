"""A Raft member's durable state: hard state, snapshot and log (no trio; blocking file calls
that the runner makes from a worker thread).

Files in the member's directory:

- ``hardstate``: ``term u64 | vote i64 (-1: none) | crc32 u32`` of the first 16 bytes, replaced
  atomically (write a temporary file, fsync, rename, fsync the directory).
- ``snapshot``: ``index u64 | term u64 | epoch u64 | length u64 | data | crc32 u32`` of all that
  precedes it, replaced atomically the same way.
- ``EEEEEEEE-IIIIIIIIIIIIIIIIIIII.log``: log segments of epoch E whose first entry is I, each a
  run of records ``crc32 u32 | length u32 | index u64 | term u64 | data`` where the CRC covers
  the bytes after it. Appends go to the newest segment, a new one starts past
  ``segment_bytes``; one fsync per ``save``. An installed snapshot (the leader's: the log is
  replaced) moves to the next epoch, and recovery deletes the segments of older ones, so a
  crash between the snapshot's rename and the old segments' removal cannot bring stale entries
  back; a local compaction keeps the epoch and drops the segments the snapshot covers.

Recovery reads every segment of the current epoch; the newest may end in a torn record (a
kill -9 during a write): it is cut at the last whole record with a good CRC. A bad record in an
older segment is corruption (``StorageError``).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO, Protocol

from mqemu.ha.raft.member import Ready, Recovered

HARD = struct.Struct("<Qq")
CRC = struct.Struct("<I")
SNAP = struct.Struct("<QQQQ")
RECORD = struct.Struct("<IIQQ")


class StorageError(Exception):
    pass


class Storage(Protocol):
    def recover(self) -> Recovered: ...

    def save(self, ready: Ready) -> None: ...

    def close(self) -> None: ...


def encode_record(index: int, term: int, data: bytes) -> bytes:
    body = RECORD.pack(0, len(data), index, term)[4:] + data
    return CRC.pack(zlib.crc32(body)) + body


def encode_hard_state(term: int, vote: int | None) -> bytes:
    head = HARD.pack(term, -1 if vote is None else vote)
    return head + CRC.pack(zlib.crc32(head))


def encode_snapshot(index: int, term: int, epoch: int, data: bytes) -> bytes:
    head = SNAP.pack(index, term, epoch, len(data)) + data
    return head + CRC.pack(zlib.crc32(head))


class MemoryStorage:
    """The same contract in memory: what a crash keeps is what ``save`` was given."""

    def __init__(self) -> None:
        self.state = Recovered()

    def recover(self) -> Recovered:
        s = self.state
        return Recovered(s.term, s.vote, s.snap_index, s.snap_term, s.snapshot, list(s.terms), list(s.datas))

    def save(self, r: Ready) -> None:
        s = self.state
        if r.hard_state is not None:
            s.term, s.vote = r.hard_state
        if r.snapshot is not None:
            index, term, data = r.snapshot
            if r.snapshot_installed or index - s.snap_index >= len(s.terms):
                s.terms, s.datas = [], []
            else:
                pos = index - s.snap_index
                del s.terms[:pos], s.datas[:pos]
            s.snap_index, s.snap_term, s.snapshot = index, term, data
        if r.truncate_from is not None:
            pos = r.truncate_from - s.snap_index - 1
            del s.terms[pos:], s.datas[pos:]
        if r.terms:
            pos = r.first_index - s.snap_index - 1
            assert pos == len(s.terms), (r.first_index, s.snap_index, len(s.terms))
            s.terms.extend(r.terms)
            s.datas.extend(r.datas)

    def close(self) -> None:
        pass


class FileStorage:
    def __init__(self, directory: str, segment_bytes: int = 64 * 1024 * 1024, fsync: bool = True) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.epoch = 0
        self.snap_index = 0
        self.segments: list[tuple[int, str]] = []   # (first index, path) of this epoch, oldest first
        self.last_index = 0
        self.file: BinaryIO | None = None
        self.file_size = 0

    # -- recovery --------------------------------------------------------------------------

    def recover(self) -> Recovered:
        os.makedirs(self.dir, exist_ok=True)
        for name in os.listdir(self.dir):
            if name.endswith(".tmp"):
                os.unlink(self._path(name))
        rec = Recovered()
        raw = self._read("hardstate")
        if raw is not None:
            if len(raw) != HARD.size + 4 or CRC.unpack_from(raw, HARD.size)[0] != zlib.crc32(raw[:HARD.size]):
                raise StorageError("hardstate: bad CRC")
            rec.term, vote = HARD.unpack_from(raw)
            rec.vote = None if vote < 0 else vote
        raw = self._read("snapshot")
        if raw is not None:
            if len(raw) < SNAP.size + 4:
                raise StorageError("snapshot: short")
            index, term, epoch, length = SNAP.unpack_from(raw)
            if len(raw) != SNAP.size + length + 4 or CRC.unpack_from(raw, len(raw) - 4)[0] != zlib.crc32(raw[:-4]):
                raise StorageError("snapshot: bad CRC")
            rec.snap_index, rec.snap_term, rec.snapshot = index, term, raw[SNAP.size:-4]
            self.epoch = epoch
        self.snap_index = rec.snap_index
        segs = []
        for name in os.listdir(self.dir):
            if name.endswith(".log"):
                epoch_s, first_s = name[:-4].split("-")
                if int(epoch_s) != self.epoch:
                    os.unlink(self._path(name))   # the log an installed snapshot replaced
                else:
                    segs.append((int(first_s), self._path(name)))
        segs.sort()
        expected = None
        for n, (first, path) in enumerate(segs):
            last_seg = n == len(segs) - 1
            with open(path, "rb") as f:
                data = f.read()
            pos, size = 0, len(data)
            nxt = first
            while pos + RECORD.size <= size:
                crc, length, index, term = RECORD.unpack_from(data, pos)
                end = pos + RECORD.size + length
                if end > size or zlib.crc32(data[pos + 4:end]) != crc or index != nxt:
                    break
                if index > rec.snap_index:
                    if expected is not None and index != expected:
                        raise StorageError(f"{path}: entry {index} after {expected - 1}")
                    if expected is None and index != rec.snap_index + 1:
                        raise StorageError(f"{path}: the log starts at {index}, the snapshot ends at {rec.snap_index}")
                    rec.terms.append(term)
                    rec.datas.append(data[pos + RECORD.size:end])
                    expected = index + 1
                nxt += 1
                pos = end
            if pos < size:
                if not last_seg:
                    raise StorageError(f"{path}: bad record at byte {pos} of a closed segment")
                with open(path, "r+b") as f:   # a torn tail: keep the whole records
                    f.truncate(pos)
                    if self.fsync:
                        os.fsync(f.fileno())
        self.segments = segs
        self.last_index = rec.snap_index + len(rec.terms)
        if segs:
            self._open(segs[-1][1])
        return rec

    def _read(self, name: str) -> bytes | None:
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _open(self, path: str) -> None:
        if self.file is not None:
            self.file.close()
        self.file = open(path, "ab")
        self.file_size = self.file.tell()

    # -- writes ----------------------------------------------------------------------------

    def save(self, r: Ready) -> None:
        if r.hard_state is not None:
            self._replace("hardstate", encode_hard_state(*r.hard_state))
        if r.snapshot is not None:
            index, term, data = r.snapshot
            if r.snapshot_installed:
                self._install(index, term, data)
            else:
                self._compact(index, term, data)
        if r.truncate_from is not None:
            self._truncate(r.truncate_from)
        if r.terms:
            if r.first_index != self.last_index + 1:
                raise StorageError(f"append at {r.first_index} after {self.last_index}")
            self._append(r.first_index, r.terms, r.datas)
        if self.fsync and self.file is not None and (r.terms or r.truncate_from is not None):
            os.fsync(self.file.fileno())

    def _replace(self, name: str, content: bytes) -> None:
        tmp = self._path(name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(content)
            if self.fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self._path(name))
        self._sync_dir()

    def _sync_dir(self) -> None:
        if self.fsync:
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _new_segment(self, first: int) -> None:
        path = self._path(f"{self.epoch:08d}-{first:020d}.log")
        open(path, "wb").close()
        self._sync_dir()
        self.segments.append((first, path))
        self._open(path)

    def _append(self, first: int, terms: list[int], datas: list[bytes]) -> None:
        if self.file is None or self.file_size >= self.segment_bytes:
            if self.file is not None and self.fsync:
                os.fsync(self.file.fileno())
            self._new_segment(first)
        assert self.file is not None
        crc32, pack = zlib.crc32, RECORD.pack
        parts = []
        index = first
        for term, data in zip(terms, datas):
            body = pack(0, len(data), index, term)[4:] + data
            parts.append(CRC.pack(crc32(body)))
            parts.append(body)
            index += 1
        blob = b"".join(parts)
        self.file.write(blob)
        self.file.flush()
        self.file_size += len(blob)
        self.last_index = index - 1

    def _truncate(self, index: int) -> None:
        """Drop entries ``index`` and after."""
        while self.segments and self.segments[-1][0] >= index:
            _, path = self.segments.pop()
            if self.file is not None:
                self.file.close()
                self.file = None
            os.unlink(path)
        self.last_index = min(self.last_index, index - 1)
        if not self.segments:
            self._sync_dir()
            return
        first, path = self.segments[-1]
        with open(path, "rb") as f:
            data = f.read()
        pos, nxt = 0, first
        while nxt < index:
            (length,) = struct.unpack_from("<I", data, pos + 4)
            pos += RECORD.size + length
            nxt += 1
        if self.file is not None:
            self.file.close()
        with open(path, "r+b") as f:
            f.truncate(pos)
        self._open(path)

    def _compact(self, index: int, term: int, data: bytes) -> None:
        if index >= self.last_index:   # the snapshot covers the whole log (it can run ahead of it)
            self._install(index, term, data)
            return
        self._replace("snapshot", encode_snapshot(index, term, self.epoch, data))
        self.snap_index = index
        # a segment can go when the next one starts at or before index + 1
        while len(self.segments) > 1 and self.segments[1][0] <= index + 1:
            _, path = self.segments.pop(0)
            os.unlink(path)

    def _install(self, index: int, term: int, data: bytes) -> None:
        self.epoch += 1
        self._replace("snapshot", encode_snapshot(index, term, self.epoch, data))
        self.snap_index = index
        if self.file is not None:
            self.file.close()
            self.file = None
        for _, path in self.segments:
            os.unlink(path)
        self.segments = []
        self.last_index = index

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
