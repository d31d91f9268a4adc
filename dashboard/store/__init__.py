"""The result store (one SQLite file): ``ResultStore`` and the records it returns.

Modules: ``schema`` (the DDL as numbered migrations), ``results`` (the file, its
connections, the writes and the plain reads), ``reads`` (chart series, mesh
pairs, the fleet view's incremental reads), ``records`` (what reads return),
``values`` (the value declarations readers use). Nothing outside this package
opens the file.
"""

from mailfleet.dashboard.store.reads import MESH_CHECK_PREFIX, ResultStore, json_path
from mailfleet.dashboard.store.records import (
    HostSummary,
    LatestIndex,
    MeshPair,
    SeriesPoint,
    StoredResult,
    Sweep,
    worst,
)
from mailfleet.dashboard.store.schema import SCHEMA_VERSION, StoreError, StoreVersionError

__all__ = [
    "MESH_CHECK_PREFIX",
    "SCHEMA_VERSION",
    "HostSummary",
    "LatestIndex",
    "MeshPair",
    "ResultStore",
    "SeriesPoint",
    "StoreError",
    "StoreVersionError",
    "StoredResult",
    "Sweep",
    "json_path",
    "worst",
]
