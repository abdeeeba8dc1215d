"""Curation ledger: latest decision wins, history kept, undo, CSV round trip, concurrency and crash safety."""

from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from cxr_core.config import Config
from cxr_core.curation.ledger import Ledger, LedgerError, discarded_hashes, latest_decisions, open_ledger

REPO = Path(__file__).resolve().parents[1]
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def ledger(make_cfg: Callable[..., Config]) -> Ledger:
    """A fresh ledger in a temporary work dir."""
    return open_ledger(make_cfg())


def test_discarded_hashes_without_ledger_is_empty_and_creates_nothing(make_cfg: Callable[..., Config]) -> None:
    cfg = make_cfg()
    assert discarded_hashes(latest_decisions(cfg)) == set()
    assert not cfg.ledger_path.exists()
    assert not cfg.home.exists()


def test_latest_decision_wins_and_history_is_kept(make_cfg: Callable[..., Config]) -> None:
    cfg = make_cfg()
    ledger = open_ledger(cfg)
    ledger.record(A, "COVID/a.png", "discard", "markings", "arrow", "ann")
    ledger.record(B, "Normal/b.png", "discard", "poor quality", "", "ann")
    ledger.record(B, "Normal/b.png", "keep", "", "fine after all", "bob")
    assert discarded_hashes(latest_decisions(cfg)) == {A}
    ledger.record(A, "COVID/a.png", "restore", reviewer="bob")
    assert discarded_hashes(latest_decisions(cfg)) == set()
    assert [d.decision for d in ledger.history(A)] == ["restore", "discard"]
    assert ledger.count() == 4
    assert ledger.latest()[B].reviewer == "bob"
    assert ledger.history(B)[1].reason == "poor quality"


def test_invalid_decisions_are_refused_and_write_nothing(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="needs a reason"):
        ledger.record(A, "a.png", "discard", reviewer="ann")
    with pytest.raises(LedgerError, match="reason 'ugly'"):
        ledger.record(A, "a.png", "discard", "ugly", reviewer="ann")
    with pytest.raises(LedgerError, match="decision 'delete'"):
        ledger.record(A, "a.png", "delete", "other", reviewer="ann")
    with pytest.raises(LedgerError, match="reviewer"):
        ledger.record(A, "a.png", "keep", reviewer=" ")
    with pytest.raises(LedgerError, match="sha256"):
        ledger.record("xyz", "a.png", "keep", reviewer="ann")
    with pytest.raises(LedgerError):
        ledger.record_many([(A, "a.png"), ("bad", "b.png")], "keep", reviewer="ann")
    assert ledger.count() == 0


def test_undo_appends_a_compensating_row(ledger: Ledger) -> None:
    first = ledger.record(A, "a.png", "discard", "markings", "arrow", "ann")
    second = ledger.record(A, "a.png", "keep", reviewer="bob")
    with pytest.raises(LedgerError, match="not the latest"):
        ledger.undo(first.id, "ann")
    undone = ledger.undo(second.id, "ann")
    assert (undone.decision, undone.reason, undone.note, undone.undoes) == ("discard", "markings", "arrow", second.id)
    assert ledger.discarded() == {A}
    back = ledger.undo(undone.id, "ann")
    assert back.decision == "keep"
    only = ledger.record(B, "b.png", "discard", "duplicate", reviewer="ann")
    assert ledger.undo(only.id, "ann").decision == "restore"
    assert ledger.discarded() == set()
    assert ledger.count() == 6
    with pytest.raises(LedgerError, match="no decision #999"):
        ledger.undo(999, "ann")


def test_csv_round_trip_and_duplicates_skipped(ledger: Ledger, tmp_path: Path) -> None:
    ledger.record(A, "a.png", "discard", "wrong view", 'lateral, "LAT" label', "ann")
    ledger.record(B, "b.png", "keep", reviewer="bob")
    out = io.StringIO()
    assert ledger.export_csv(out) == 2
    other = Ledger(tmp_path / "other.sqlite")
    report = other.import_csv(io.StringIO(out.getvalue()))
    assert (report.added, report.duplicates, report.errors) == (2, 0, [])
    assert other.history()[1].note == 'lateral, "LAT" label'
    assert other.discarded() == {A}
    again = other.import_csv(io.StringIO(out.getvalue()))
    assert (again.added, again.duplicates) == (0, 2)


def test_csv_import_rejects_bad_rows_with_messages(ledger: Ledger) -> None:
    text = textwrap.dedent(f"""\
        sha256,path,decision,reason,note,reviewer,timestamp
        {A},a.png,discard,markings,,ann,2026-01-02T03:04:05Z
        nothex,b.png,discard,markings,,ann,2026-01-02T03:04:05Z
        {B},b.png,discard,,,ann,2026-01-02T03:04:05Z
        {B},b.png,burn,other,,ann,2026-01-02T03:04:05Z
        {B},b.png,keep,,,,2026-01-02T03:04:05Z
        {B},b.png,keep,,,ann,yesterday
        {B},b.png,keep,,,ann,2026-01-02T03:04:05
        {C},c.png,keep,,,ann,2026-01-02T04:04:05+01:00
        """)
    report = ledger.import_csv(io.StringIO(text))
    assert report.added == 2
    assert len(report.errors) == 6
    assert report.errors[0].startswith("line 3: sha256")
    assert "needs a reason" in report.errors[1]
    assert "decision 'burn'" in report.errors[2]
    assert "reviewer is empty" in report.errors[3]
    assert "not ISO 8601" in report.errors[4]
    assert "no time zone" in report.errors[5]
    assert {d.sha256 for d in ledger.history()} == {A, C}
    assert ledger.latest()[C].timestamp == "2026-01-02T03:04:05.000000Z"
    with pytest.raises(LedgerError, match="lacks columns"):
        ledger.import_csv(io.StringIO("sha256,path\n"))


WRITER = """
import sys
from cxr_core.curation.ledger import Ledger
ledger = Ledger(sys.argv[1])
tag = sys.argv[2]
for i in range(int(sys.argv[3])):
    sha = f"{int(tag):02x}{i:062x}"
    ledger.record(sha, f"{tag}/{i}.png", "discard" if i % 2 else "keep", "other" if i % 2 else "", "", f"writer{tag}")
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path)
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "500"], cwd=REPO, stderr=subprocess.PIPE)
        for tag in ("1", "2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    ledger = Ledger(path)
    rows = ledger.history()
    assert len(rows) == 1000
    assert sum(d.reviewer == "writer1" for d in rows) == 500
    assert len({d.id for d in rows}) == 1000
    assert len(ledger.discarded()) == 500


HOLDER = """
import sys, time
from cxr_core.curation.ledger import Ledger
ledger = Ledger(sys.argv[1])
with ledger._write() as conn:
    for i in range(200):
        Ledger._insert(conn, {"sha256": f"{i:064x}", "path": f"x/{i}.png", "decision": "discard",
                              "reason": "other", "note": "", "reviewer": "crash", "ts": "2026-01-01T00:00:00.000000Z"})
    print("inside", flush=True)
    time.sleep(60)
"""


def test_writer_killed_mid_transaction_leaves_ledger_consistent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    ledger.record(A, "a.png", "discard", "markings", reviewer="ann")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"inside"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = Ledger(path)
    assert after.count() == 1
    assert after.discarded() == {A}
    after.record(B, "b.png", "keep", reviewer="ann")
    assert after.count() == 2


def test_writer_killed_during_a_burst_keeps_every_committed_row(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    Ledger(path)
    script = WRITER.replace('f"writer{tag}")', 'f"writer{tag}")\n    print(i, flush=True)')
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), "3", "100000"], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    last = -1
    while last < 150:
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count = Ledger(path).count()
    assert count >= last + 1


def test_opening_an_existing_ledger_writes_nothing(make_cfg: Callable[..., Config]) -> None:
    cfg = make_cfg()
    open_ledger(cfg).record(A, "a.png", "keep", reviewer="ann")
    files = [cfg.ledger_path, Path(f"{cfg.ledger_path}-wal")]
    before = [(p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists()]
    open_ledger(cfg).latest()
    assert [(p.stat().st_mtime_ns, p.stat().st_size) for p in files if p.exists()] == before


def test_a_release_one_ledger_migrates_keeping_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger written by release 1 (CHECK-constrained reasons) opens, keeps its rows and accepts a new reason."""
    from cxr_core.curation import ledger as ledger_module

    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    for statement in ledger_module.MIGRATIONS[0][1]:
        old.execute(statement)
    rows = [
        ("a" * 64, "COVID/images/a.png", "discard", "markings", "", "ana", "2026-11-28T01:00:00.000000Z", None),
        ("b" * 64, "Normal/images/b.png", "keep", "", "looks fine", "ben", "2026-11-28T01:00:01.000000Z", None),
    ]
    old.executemany(
        "INSERT INTO decisions (sha256, path, decision, reason, note, reviewer, ts, undoes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    with pytest.raises(sqlite3.IntegrityError):
        old.execute(
            "INSERT INTO decisions (sha256, path, decision, reason, reviewer, ts) VALUES (?, ?, ?, ?, ?, ?)",
            ("c" * 64, "c.png", "discard", "a new reason", "x", "2026-11-28T01:00:02.000000Z"),
        )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    ledger = Ledger(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION == 3
    assert [(d.sha256, d.decision, d.reason, d.note, d.reviewer) for d in ledger.history()][::-1] == [
        (r[0], r[2], r[3], r[4], r[5]) for r in rows
    ]
    assert ledger.discarded() == {"a" * 64}
    monkeypatch.setattr(ledger_module, "REASONS", (*ledger_module.REASONS, "a new reason"))
    ledger.record("c" * 64, "c.png", "discard", reason="a new reason", reviewer="x")
    assert ledger.discarded() == {"a" * 64, "c" * 64}


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """A ledger whose schema is newer than this release is refused with one line, and not written."""
    path = tmp_path / "ledger.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="schema 99, newer than this release's 3"):
        Ledger(path)
    assert path.read_bytes() == before


def test_a_ledger_of_the_previous_release_gains_the_repair_decision(tmp_path: Path) -> None:
    """A schema-2 ledger (the previous release) opens with every row, and then records, undoes and exports a repair."""
    from cxr_core.curation import ledger as ledger_module

    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    for _, statements in ledger_module.MIGRATIONS[:2]:
        for statement in statements:
            old.execute(statement)
    old.execute(
        "INSERT INTO decisions (sha256, path, decision, reason, note, reviewer, ts, undoes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ("a" * 64, "COVID/images/a.png", "discard", "markings", "arrow", "ana", "2026-11-28T01:00:00.000000Z", None),
    )
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()

    ledger = Ledger(path)
    (kept,) = ledger.history()
    assert (kept.sha256, kept.decision, kept.note, kept.details) == ("a" * 64, "discard", "arrow", "")
    with pytest.raises(LedgerError, match="a repair needs its details"):
        ledger.record("a" * 64, "COVID/images/a.png", "repair", reason="markings", reviewer="ben")
    repaired = ledger.record(
        "a" * 64, "COVID/images/a.png", "repair", reason="markings", reviewer="ben", details='{"method": "telea"}'
    )
    assert ledger.latest_for("a" * 64).details == '{"method": "telea"}' and ledger.discarded() == set()
    undone = ledger.undo(repaired.id, reviewer="ben")
    assert (undone.decision, undone.details) == ("discard", "") and ledger.discarded() == {"a" * 64}
    again = ledger.undo(undone.id, reviewer="ben")
    assert (again.decision, again.details) == ("repair", '{"method": "telea"}')
    out = io.StringIO()
    ledger.export_csv(out)
    copy = Ledger(tmp_path / "copy.sqlite")
    assert copy.import_csv(io.StringIO(out.getvalue())).added == 4
    assert copy.latest_for("a" * 64).details == '{"method": "telea"}'
    legacy = (
        "sha256,path,decision,reason,note,reviewer,timestamp\n" + f"{'b' * 64},b.png,keep,,,ana,2026-11-28T01:00:00Z\n"
    )
    assert Ledger(tmp_path / "legacy.sqlite").import_csv(io.StringIO(legacy)).added == 1
