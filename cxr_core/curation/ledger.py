"""The curation ledger: an append-only SQLite record of discard/keep/repair/restore decisions, latest decision wins."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from cxr_core.config import Config
from cxr_core.data.imaging import sha256_file
from cxr_core.util.clock import utc_now

DECISIONS = ("discard", "keep", "repair", "restore")
REASONS = ("markings", "poor quality", "wrong view", "duplicate", "wrong label", "other")
CSV_COLUMNS = ("sha256", "path", "decision", "reason", "note", "reviewer", "timestamp", "details")
OPTIONAL_CSV_COLUMNS = ("details",)
"""Columns an export of an older release lacks; they are read as empty."""
BUSY_TIMEOUT_S = 30.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_V1_DECISIONS = ("discard", "keep", "restore")
_V1_REASONS = ("markings", "poor quality", "wrong view", "duplicate", "wrong label", "other")
_COLUMNS = """
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    path TEXT NOT NULL,
    decision TEXT NOT NULL{decision_check},
    reason TEXT NOT NULL DEFAULT ''{reason_check},
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL,
    ts TEXT NOT NULL,
    undoes INTEGER REFERENCES decisions(id),
    CHECK (decision != 'discard' OR reason != '')
"""
_INDEX = "CREATE INDEX IF NOT EXISTS decisions_by_image ON decisions (sha256, ts, id)"
MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "the decisions table, decisions and reasons fixed by CHECK constraints (release 1)",
        (
            "CREATE TABLE IF NOT EXISTS decisions ("
            + _COLUMNS.format(
                decision_check=f" CHECK (decision IN ({', '.join(repr(d) for d in _V1_DECISIONS)}))",
                reason_check=f" CHECK (reason IN ('', {', '.join(repr(r) for r in _V1_REASONS)}))",
            )
            + ")",
            _INDEX,
        ),
    ),
    (
        "decisions and reasons checked by the library, so a new one needs no table change",
        (
            "CREATE TABLE decisions_v2 (" + _COLUMNS.format(decision_check="", reason_check="") + ")",
            "INSERT INTO decisions_v2 SELECT id, sha256, path, decision, reason, note, reviewer, ts, undoes FROM decisions",
            "DROP TABLE decisions",
            "ALTER TABLE decisions_v2 RENAME TO decisions",
            _INDEX,
        ),
    ),
    (
        "a details column: a repair's method, mask parameters and digests, as JSON (release 3)",
        ("ALTER TABLE decisions ADD COLUMN details TEXT NOT NULL DEFAULT ''",),
    ),
)
"""Schema migrations in order: migration ``i`` takes a ledger from ``user_version`` i to i + 1."""
SCHEMA_VERSION = len(MIGRATIONS)

_LATEST = """
SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY sha256 ORDER BY ts DESC, id DESC) AS rank FROM decisions
) WHERE rank = 1
"""


class LedgerError(ValueError):
    """A decision or ledger operation is invalid; ``str(exc)`` is one line."""


@dataclass(frozen=True)
class Decision:
    """One row of the ledger."""

    id: int
    sha256: str
    path: str
    decision: str
    reason: str
    note: str
    reviewer: str
    timestamp: str
    undoes: int | None = None
    details: str = ""
    """JSON for decisions that carry parameters (a repair's method, mask and file); "" otherwise."""


@dataclass
class ImportReport:
    """Outcome of a CSV import: rows added, exact duplicates skipped, and one message per bad row."""

    added: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


def normalise_timestamp(text: str) -> str:
    """Parse an ISO 8601 timestamp with a time zone and return it in the ledger's UTC format."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise LedgerError(f"timestamp {text!r} is not ISO 8601") from exc
    if value.tzinfo is None:
        raise LedgerError(f"timestamp {text!r} has no time zone")
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def validate(sha256: str, path: str, decision: str, reason: str, reviewer: str, details: str = "") -> None:
    """Raise LedgerError unless the fields form a valid decision."""
    if not _SHA256.match(sha256 or ""):
        raise LedgerError(f"sha256 {sha256!r} is not 64 lowercase hex digits")
    if not (path or "").strip():
        raise LedgerError("path is empty")
    if decision not in DECISIONS:
        raise LedgerError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if reason and reason not in REASONS:
        raise LedgerError(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    if decision == "discard" and not reason:
        raise LedgerError("a discard needs a reason")
    if decision == "repair" and not details:
        raise LedgerError("a repair needs its details (method, mask and repaired file)")
    if not (reviewer or "").strip():
        raise LedgerError("reviewer is empty")


def _row(row: sqlite3.Row) -> Decision:
    """A Decision from a database row."""
    return Decision(
        id=row["id"],
        sha256=row["sha256"],
        path=row["path"],
        decision=row["decision"],
        reason=row["reason"],
        note=row["note"],
        reviewer=row["reviewer"],
        timestamp=row["ts"],
        undoes=row["undoes"],
        details=row["details"],
    )


def _connect(path: Path, create: bool, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open the ledger in autocommit mode (explicit transactions) with a busy timeout."""
    uri = f"file:{path.as_posix()}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return conn


class Ledger:
    """The curation ledger at ``path``; every write is one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, path: str | Path, timeout: float = BUSY_TIMEOUT_S) -> None:
        """Open the ledger: create it (WAL mode) on first use, migrate an older one (:data:`MIGRATIONS`) keeping every
        row; an up-to-date one is not written, and one from a newer release is refused."""
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(_connect(self.path, create=True, timeout=timeout)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path} has ledger schema {version}, newer than this release's "
                    f"{SCHEMA_VERSION}: upgrade CXR Review to open it"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            with self._transaction(conn):
                self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Apply every migration the ledger lacks, inside the caller's transaction (all or nothing)."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for _, statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Run the block in a write transaction taken up front, rolled back on any error."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection with a write transaction (synchronous=FULL)."""
        with closing(_connect(self.path, create=False, timeout=self.timeout)) as conn:
            conn.execute("PRAGMA synchronous = FULL")
            with self._transaction(conn):
                yield conn

    def _read(self) -> sqlite3.Connection:
        """A fresh read connection (close it with ``contextlib.closing``)."""
        return _connect(self.path, create=False, timeout=self.timeout)

    @staticmethod
    def _insert(conn: sqlite3.Connection, values: dict[str, object]) -> Decision:
        """Insert one validated row and return it as stored."""
        cur = conn.execute(
            "INSERT INTO decisions (sha256, path, decision, reason, note, reviewer, ts, undoes, details)"
            " VALUES (:sha256, :path, :decision, :reason, :note, :reviewer, :ts, :undoes, :details)",
            {"undoes": None, "details": "", **values},
        )
        return _row(conn.execute("SELECT * FROM decisions WHERE id = ?", (cur.lastrowid,)).fetchone())

    def record(
        self,
        sha256: str,
        path: str,
        decision: str,
        reason: str = "",
        note: str = "",
        reviewer: str = "",
        details: str = "",
    ) -> Decision:
        """Append one decision for an image and return it."""
        return self.record_many([(sha256, path)], decision, reason, note, reviewer, [details])[0]

    def record_many(
        self,
        images: Iterable[tuple[str, str]],
        decision: str,
        reason: str = "",
        note: str = "",
        reviewer: str = "",
        details: Iterable[str] | None = None,
    ) -> list[Decision]:
        """Append the same decision for several ``(sha256, path)`` images in one transaction (``details`` per image)."""
        images = list(images)
        extra = list(details) if details is not None else [""] * len(images)
        if len(extra) != len(images):
            raise LedgerError(f"{len(images)} images but {len(extra)} details")
        for (sha256, path), detail in zip(images, extra):
            validate(sha256, path, decision, reason, reviewer, detail)
        with self._write() as conn:
            ts = normalise_timestamp(utc_now("microseconds"))
            return [
                self._insert(
                    conn,
                    {
                        "sha256": sha,
                        "path": rel,
                        "decision": decision,
                        "reason": reason,
                        "note": note or "",
                        "reviewer": reviewer.strip(),
                        "ts": ts,
                        "details": detail,
                    },
                )
                for (sha, rel), detail in zip(images, extra)
            ]

    def undo(self, decision_id: int, reviewer: str) -> Decision:
        """Append a row that returns the image to its state before ``decision_id`` (only the latest can be undone)."""
        if not (reviewer or "").strip():
            raise LedgerError("reviewer is empty")
        with self._write() as conn:
            row = conn.execute("SELECT * FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            if row is None:
                raise LedgerError(f"no decision #{decision_id}")
            history = conn.execute(
                "SELECT * FROM decisions WHERE sha256 = ? ORDER BY ts DESC, id DESC", (row["sha256"],)
            ).fetchall()
            if history[0]["id"] != decision_id:
                raise LedgerError(
                    f"decision #{decision_id} is not the latest for {row['path']}; undo the newer one first"
                )
            before = history[1] if len(history) > 1 else None
            values = {
                "sha256": row["sha256"],
                "path": row["path"],
                "reviewer": reviewer.strip(),
                "ts": normalise_timestamp(utc_now("microseconds")),
                "undoes": decision_id,
                "decision": "restore",
                "reason": "",
                "note": "",
                "details": "",
            }
            if before is not None:
                values.update(
                    decision=before["decision"], reason=before["reason"], note=before["note"], details=before["details"]
                )
            return self._insert(conn, values)

    def latest(self) -> dict[str, Decision]:
        """The latest decision of every image that has one, by sha256."""
        with closing(self._read()) as conn:
            return {d.sha256: d for d in map(_row, conn.execute(_LATEST))}

    def latest_for(self, sha256: str) -> Decision | None:
        """The latest decision for one image, or None."""
        with closing(self._read()) as conn:
            row = conn.execute(
                "SELECT * FROM decisions WHERE sha256 = ? ORDER BY ts DESC, id DESC LIMIT 1", (sha256,)
            ).fetchone()
        return _row(row) if row else None

    def history(self, sha256: str | None = None, limit: int | None = None) -> list[Decision]:
        """Decisions newest first, for one image or for all."""
        query = "SELECT * FROM decisions" + (" WHERE sha256 = :sha" if sha256 else "")
        query += " ORDER BY ts DESC, id DESC" + (" LIMIT :limit" if limit else "")
        with closing(self._read()) as conn:
            return [_row(r) for r in conn.execute(query, {"sha": sha256, "limit": limit})]

    def count(self) -> int:
        """Number of decision rows."""
        with closing(self._read()) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    def discarded(self) -> set[str]:
        """sha256 of images whose latest decision is discard."""
        return discarded_hashes(self.latest())

    def export_csv(self, out: IO[str]) -> int:
        """Write the full history (oldest first) as CSV; returns the number of rows."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = self.history()[::-1]
        for d in rows:
            writer.writerow([d.sha256, d.path, d.decision, d.reason, d.note, d.reviewer, d.timestamp, d.details])
        return len(rows)

    def import_csv(self, source: IO[str]) -> ImportReport:
        """Append valid rows of an exported CSV (exact duplicates skipped); bad rows are reported, never written."""
        report = ImportReport()
        reader = csv.DictReader(source)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or []) and c not in OPTIONAL_CSV_COLUMNS]
        if missing:
            raise LedgerError(f"CSV lacks columns: {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
        good: list[dict[str, str]] = []
        for line, raw in enumerate(reader, start=2):
            values = {k: (raw.get(k) or "").strip() for k in CSV_COLUMNS}
            values["sha256"] = values["sha256"].lower()
            values["note"] = raw.get("note") or ""
            try:
                if None in raw:
                    raise LedgerError("more fields than columns")
                validate(
                    values["sha256"],
                    values["path"],
                    values["decision"],
                    values["reason"],
                    values["reviewer"],
                    values["details"],
                )
                values["ts"] = normalise_timestamp(values.pop("timestamp"))
            except LedgerError as exc:
                report.errors.append(f"line {line}: {exc}")
                continue
            good.append(values)
        with self._write() as conn:
            for values in good:
                if conn.execute(
                    "SELECT 1 FROM decisions WHERE sha256=:sha256 AND path=:path AND decision=:decision"
                    " AND reason=:reason AND note=:note AND reviewer=:reviewer AND ts=:ts AND details=:details",
                    values,
                ).fetchone():
                    report.duplicates += 1
                    continue
                self._insert(conn, values)
                report.added += 1
        return report


def open_ledger(cfg: Config) -> Ledger:
    """The ledger of this work dir, created on first use."""
    return Ledger(cfg.ledger_path)


def latest_decisions(cfg: Config) -> dict[str, Decision]:
    """The latest decision of every image by sha256 (an older ledger is migrated first); {} when there is no ledger
    (never creates one)."""
    return open_ledger(cfg).latest() if cfg.ledger_path.is_file() else {}


def discarded_hashes(latest: Mapping[str, Decision]) -> set[str]:
    """sha256 of the images whose latest decision (as :func:`latest_decisions` gives them) is discard."""
    return {sha256 for sha256, decision in latest.items() if decision.decision == "discard"}


def decision_dicts(decisions: Iterable[Decision]) -> list[dict[str, object]]:
    """Decisions as plain dicts (for JSON output and tables)."""
    return [asdict(d) for d in decisions]


def identify_image(path: str | Path, data_dir: Path) -> tuple[str, str]:
    """sha256 and data-dir-relative posix path of an image file given by absolute, cwd- or data-dir-relative path."""
    candidate = Path(path).expanduser()
    if not candidate.is_file() and not candidate.is_absolute():
        candidate = data_dir / candidate
    if not candidate.is_file():
        raise LedgerError(f"{path}: no such image file (also looked in {data_dir})")
    resolved = candidate.resolve()
    try:
        rel = resolved.relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        rel = resolved.as_posix()
    return sha256_file(resolved), rel
