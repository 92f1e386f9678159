"""The durable Raft log: exact record bytes, recovery after a cut at every byte, truncation,
compaction and snapshot installs (epochs), hard state; MemoryStorage keeps the same contract."""

from __future__ import annotations

import os
import zlib

import pytest

from mqemu.ha.raft.member import Ready
from mqemu.ha.raft.storage import (
    FileStorage, MemoryStorage, StorageError, encode_hard_state, encode_record, encode_snapshot,
)


def ready(first=0, terms=(), datas=(), hard=None, snapshot=None, installed=False, truncate=None) -> Ready:
    r = Ready()
    r.first_index, r.terms, r.datas = first, list(terms), list(datas)
    r.hard_state, r.snapshot, r.snapshot_installed, r.truncate_from = hard, snapshot, installed, truncate
    return r


def test_record_bytes():
    rec = encode_record(1, 2, b"hi")
    body = bytes.fromhex("02000000" "0100000000000000" "0200000000000000") + b"hi"
    assert rec == bytes.fromhex("ef2694f4") + body
    assert rec[:4] == zlib.crc32(body).to_bytes(4, "little")
    assert encode_hard_state(3, None) == bytes.fromhex("0300000000000000" "ffffffffffffffff" "d2ff1581")
    assert encode_hard_state(3, 1) == bytes.fromhex("0300000000000000" "0100000000000000" "39ffd909")
    head = bytes.fromhex("0500000000000000" "0200000000000000" "0100000000000000" "0100000000000000") + b"S"
    assert encode_snapshot(5, 2, 1, b"S") == head + zlib.crc32(head).to_bytes(4, "little")


def test_files_hold_exactly_the_records(tmp_path):
    s = FileStorage(str(tmp_path))
    s.recover()
    s.save(ready(1, [1, 1], [b"a", b"bc"], hard=(1, 0)))
    s.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["00000000-00000000000000000001.log", "hardstate"]
    with open(tmp_path / names[0], "rb") as f:
        assert f.read() == encode_record(1, 1, b"a") + encode_record(2, 1, b"bc")
    with open(tmp_path / "hardstate", "rb") as f:
        assert f.read() == encode_hard_state(1, 0)


def test_recovery_from_every_cut_of_the_last_segment(tmp_path):
    entries = [(1, b"one"), (1, b""), (2, b"three"), (2, b"4" * 40)]
    records = [encode_record(i + 1, t, d) for i, (t, d) in enumerate(entries)]
    blob = b"".join(records)
    ends = [sum(len(r) for r in records[:k]) for k in range(len(records) + 1)]
    for cut in range(len(blob) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "00000000-00000000000000000001.log").write_bytes(blob[:cut])
        s = FileStorage(str(d))
        rec = s.recover()
        whole = max(k for k, e in enumerate(ends) if e <= cut)
        assert list(zip(rec.terms, rec.datas)) == entries[:whole], cut
        assert (d / "00000000-00000000000000000001.log").stat().st_size == ends[whole]
        # the log goes on after the cut record
        s.save(ready(whole + 1, [9], [b"next"]))
        s.close()
        rec = FileStorage(str(d)).recover()
        assert list(zip(rec.terms, rec.datas)) == entries[:whole] + [(9, b"next")]


def test_a_flipped_byte_ends_the_log_there(tmp_path):
    blob = encode_record(1, 1, b"aaaa") + encode_record(2, 1, b"bbbb") + encode_record(3, 1, b"cccc")
    bad = bytearray(blob)
    bad[len(encode_record(1, 1, b"aaaa")) + 22] ^= 0xFF   # inside record 2's data
    (tmp_path / "00000000-00000000000000000001.log").write_bytes(bytes(bad))
    rec = FileStorage(str(tmp_path)).recover()
    assert rec.datas == [b"aaaa"]


def test_corruption_in_a_closed_segment_is_an_error(tmp_path):
    (tmp_path / "00000000-00000000000000000001.log").write_bytes(encode_record(1, 1, b"a") + b"\x00" * 5)
    (tmp_path / "00000000-00000000000000000002.log").write_bytes(encode_record(2, 1, b"b"))
    with pytest.raises(StorageError, match="closed segment"):
        FileStorage(str(tmp_path)).recover()


def test_bad_hard_state_is_an_error(tmp_path):
    (tmp_path / "hardstate").write_bytes(encode_hard_state(3, 1)[:-1] + b"\x00")
    with pytest.raises(StorageError, match="hardstate"):
        FileStorage(str(tmp_path)).recover()


def test_file_and_memory_storage_agree(tmp_path):
    """Appends, a truncation, a compaction and an install; a reopen after each recovers the
    same on both (segments of 40 bytes: several segments and rolls)."""
    f, m = FileStorage(str(tmp_path), segment_bytes=40), MemoryStorage()
    f.recover()
    steps = [
        (ready(1, [1, 1, 1, 1], [b"a", b"b", b"c", b"d"], hard=(1, 0)), (1, 0, 0, [b"a", b"b", b"c", b"d"])),
        (ready(5, [1] * 3, [b"e", b"f", b"g"]), (1, 0, 0, [b"a", b"b", b"c", b"d", b"e", b"f", b"g"])),
        (ready(3, [2, 2], [b"C", b"D"], hard=(2, 1), truncate=3), (2, 1, 0, [b"a", b"b", b"C", b"D"])),
        (ready(snapshot=(3, 2, b"snap3")), (2, 1, 3, [b"D"])),
        (ready(5, [2], [b"E"]), (2, 1, 3, [b"D", b"E"])),
        (ready(snapshot=(10, 3, b"snap10"), installed=True), (2, 1, 10, [])),
        (ready(11, [3, 3], [b"k", b"l"]), (2, 1, 10, [b"k", b"l"])),
    ]
    for r, (term, vote, snap, datas) in steps:
        for s in (f, m):
            s.save(r)
        f.close()
        for rec in (FileStorage(str(tmp_path)).recover(), m.recover()):
            assert (rec.term, rec.vote, rec.snap_index, rec.datas) == (term, vote, snap, datas)
        f = FileStorage(str(tmp_path), segment_bytes=40)
        f.recover()
    f.close()
    logs = sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    assert logs == ["00000001-00000000000000000011.log"]   # the install's epoch; older segments gone


def test_compaction_drops_whole_segments_only(tmp_path):
    s = FileStorage(str(tmp_path), segment_bytes=1)   # one record per segment
    s.recover()
    for i in range(1, 6):
        s.save(ready(i, [1], [b"x%d" % i]))
    s.save(ready(snapshot=(3, 1, b"s")))
    logs = sorted(n for n in os.listdir(tmp_path) if n.endswith(".log"))
    assert logs == ["00000000-00000000000000000004.log", "00000000-00000000000000000005.log"]
    s.close()
    rec = FileStorage(str(tmp_path)).recover()
    assert (rec.snap_index, rec.snapshot, rec.datas) == (3, b"s", [b"x4", b"x5"])


def test_a_crash_between_install_and_cleanup_keeps_no_stale_entry(tmp_path):
    s = FileStorage(str(tmp_path))
    s.recover()
    s.save(ready(1, [1, 1, 1], [b"a", b"b", b"c"]))
    s.close()
    # the snapshot of the next epoch is renamed in, the old segment not yet removed
    (tmp_path / "snapshot").write_bytes(encode_snapshot(2, 5, 1, b"S"))
    rec = FileStorage(str(tmp_path)).recover()
    assert (rec.snap_index, rec.snap_term, rec.terms) == (2, 5, [])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".log")]
