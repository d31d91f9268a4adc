"""The store file's schema: numbered migrations, run in order when a store opens.

``PRAGMA user_version`` says which migrations a file has had. Each migration runs
in one ``BEGIN IMMEDIATE`` transaction with its version bump, so a crash leaves the
file at the previous version or the next, never between; two processes opening
one file at once migrate it once (the second re-reads the version inside its
transaction). A file newer than this code is refused rather than misread.

Migration 1 is the schema of the first release, kept as it was: a fresh file
runs every migration, so a new store and an upgraded one end up the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailfleet.checks.result import Reason

# What opening or reading a store raises when the file cannot be used (damaged, not
# SQLite, too new): callers catch this, not sqlite3's names.
StoreError = sqlite3.DatabaseError


class StoreVersionError(StoreError):
    """The store file was written by a newer mailfleet than this one."""


_V1 = (
    """CREATE TABLE IF NOT EXISTS results (
        id INTEGER PRIMARY KEY,
        host TEXT NOT NULL,
        check_name TEXT NOT NULL,
        started_at REAL NOT NULL,
        success INTEGER NOT NULL,
        status INTEGER NOT NULL,
        duration REAL NOT NULL,
        error TEXT NOT NULL,
        phases TEXT NOT NULL,
        "values" TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS results_by_host_check "
    "ON results (host, check_name, started_at)",
    "CREATE INDEX IF NOT EXISTS results_by_time ON results (started_at)",
    """CREATE TABLE IF NOT EXISTS latest (
        host TEXT NOT NULL,
        check_name TEXT NOT NULL,
        result_id INTEGER NOT NULL,
        last_success_at REAL,
        PRIMARY KEY (host, check_name)
    )""",
    """CREATE TABLE IF NOT EXISTS sweeps (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        duration REAL NOT NULL,
        probes INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        overrun INTEGER NOT NULL
    )""",
)

# Version 2: why a probe failed (checks.result.Reason), a bounded word the exporter uses
# as a label. Version 1 never recorded it: its failures read as OTHER (not a guess from
# their words: the rows age out within the retention, and a wrong guess would be
# shown as the probe's own word).
_V2 = (
    "ALTER TABLE results ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
    f"UPDATE results SET reason = '{Reason.OTHER.value}' WHERE success = 0",
)

MIGRATIONS: tuple[Sequence[str], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the file to ``SCHEMA_VERSION``; returns the version it had."""
    found = version_of(conn)
    _refuse_newer(found, path)
    start = found
    while start < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            start = version_of(conn)  # another process may have migrated meanwhile
            _refuse_newer(start, path)
            if start < SCHEMA_VERSION:
                for statement in MIGRATIONS[start]:
                    conn.execute(statement)
                start += 1
                conn.execute(f"PRAGMA user_version = {start}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return found


def _refuse_newer(version: int, path: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"{path} has schema version {version}, newer than this mailfleet knows "
            f"({SCHEMA_VERSION}): upgrade mailfleet, or use another file"
        )
