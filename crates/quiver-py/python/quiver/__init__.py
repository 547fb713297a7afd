"""Quiver from Python: the feature store's Rust engine embedded (no server), with the
methods Feast users know.

    import quiver
    store = quiver.FeatureStore(repo_path="path/to/repo")     # reads quiver.toml
    store.apply()
    store.materialize(start_date, end_date)
    training = store.get_historical_features(entity_df=df, features=[...]).to_df()
    online = store.get_online_features(features=[...], entity_rows=[{...}]).to_dict()

Data crosses into Rust as Arrow (pyarrow's C data interface); the GIL is released while
Rust works, and ctrl-c interrupts a long call. Errors raise ``quiver.QuiverError`` with
the same text as the ``quiver`` CLI.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from os import PathLike
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import pandas as pd
import pyarrow as pa

from . import _quiver
from ._quiver import QuiverError

__all__ = [
    "Entity",
    "Feature",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "OnlineResponse",
    "PushMode",
    "QuiverError",
    "RetrievalJob",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class PushMode(enum.Enum):
    """Where :meth:`FeatureStore.push` writes rows (Feast's ``PushMode``)."""

    ONLINE = "online"
    OFFLINE = "offline"
    ONLINE_AND_OFFLINE = "online_and_offline"


@dataclass(frozen=True)
class Feature:
    """One feature of a view: its name and Arrow type."""

    name: str
    dtype: str


@dataclass(frozen=True)
class Entity:
    """An entity: the key columns (``join_keys``) that identify it."""

    name: str
    join_keys: List[str]
    description: str = ""


@dataclass(frozen=True)
class FeatureView:
    """A feature view as the registry holds it (the version ``apply`` recorded)."""

    name: str
    version: int
    entities: List[str]
    features: List[Feature]
    ttl: Optional[timedelta] = None
    online: bool = True
    tags: Dict[str, str] = field(default_factory=dict)
    owner: Optional[str] = None
    description: str = ""
    query: str = ""


@dataclass(frozen=True)
class FeatureService:
    """A named list of features; pass it as ``features=`` to read them all."""

    name: str
    features: List[str]
    description: str = ""


class RetrievalJob:
    """A training set computed point-in-time correctly (Feast's ``RetrievalJob``): the
    entity rows in their order, then the features."""

    def __init__(self, batch: pa.RecordBatch):
        self._table = pa.Table.from_batches([batch])

    def to_arrow(self) -> pa.Table:
        """The training set as a pyarrow Table (no copy)."""
        return self._table

    def to_df(self) -> pd.DataFrame:
        """The training set as a pandas DataFrame: timestamps tz-aware UTC, integer and
        boolean columns nullable (``Int64``, ``boolean``)."""
        return _to_pandas(self._table)


class OnlineResponse:
    """The answer of :meth:`FeatureStore.get_online_features` (Feast's
    ``OnlineResponse``): the entity rows' columns, then one column per feature."""

    def __init__(
        self,
        entities: pa.RecordBatch,
        values: pa.RecordBatch,
        statuses: List[List[str]],
        event_timestamps: List[List[Optional[int]]],
    ):
        self._entities = entities
        self._values = values
        self._statuses = dict(zip(values.schema.names, statuses))
        self._times = dict(zip(values.schema.names, event_timestamps))

    def to_arrow(self, include_event_timestamps: bool = False) -> pa.Table:
        """Entity columns, then features (and ``<feature>__ts``, seconds, when asked)."""
        names, columns = [], []
        for name in self._entities.schema.names:
            if name not in self._statuses:
                names.append(name)
                columns.append(self._entities.column(name))
        for name in self._values.schema.names:
            names.append(name)
            columns.append(self._values.column(name))
            if include_event_timestamps:
                names.append(f"{name}__ts")
                seconds = [None if t is None else t // 1_000_000 for t in self._times[name]]
                columns.append(pa.array(seconds, pa.int64()))
        return pa.Table.from_arrays(columns, names=names)

    def to_dict(self, include_event_timestamps: bool = False) -> Dict[str, List[Any]]:
        """``{column: [value per entity row]}``, as Feast returns it."""
        return self.to_arrow(include_event_timestamps).to_pydict()

    def to_df(self, include_event_timestamps: bool = False) -> pd.DataFrame:
        """The same as a pandas DataFrame."""
        return _to_pandas(self.to_arrow(include_event_timestamps))

    def statuses(self) -> Dict[str, List[str]]:
        """Per feature, the status of each value: ``PRESENT``, ``NULL_VALUE``,
        ``NOT_FOUND`` or ``OUTSIDE_MAX_AGE``."""
        return {name: list(values) for name, values in self._statuses.items()}


Features = Union[Sequence[str], FeatureService]


class FeatureStore:
    """A Quiver feature repository, opened as the ``quiver`` CLI opens it: its
    ``quiver.toml`` names the registry, the offline root and the online store."""

    def __init__(self, repo_path: Union[str, "PathLike[str]", None] = None):
        self._store = _quiver.FeatureStore(str(repo_path) if repo_path is not None else ".")

    @property
    def repo_path(self) -> str:
        return str(self._store.repo_path)

    @property
    def project(self) -> str:
        return self._store.project

    def plan(self) -> List[Dict[str, Any]]:
        """What :meth:`apply` would change in the registry (one dict per change)."""
        return json.loads(self._store.plan())["changes"]

    def apply(self) -> List[Dict[str, Any]]:
        """Records the repository's definitions in the registry; returns the changes."""
        return json.loads(self._store.apply())["changes"]

    def materialize(
        self,
        start_date: Optional[datetime],
        end_date: Optional[datetime],
        feature_views: Optional[Iterable[str]] = None,
    ) -> List[Dict[str, Any]]:
        """Materializes ``[start_date, end_date]`` (naive datetimes are UTC; ``None``:
        all history / now) of the named views (default: all) into the offline tables
        and the online store; returns one report per view."""
        return json.loads(
            self._store.materialize(
                _micros(start_date), _micros(end_date), list(feature_views or [])
            )
        )

    def materialize_incremental(
        self, end_date: Optional[datetime], feature_views: Optional[Iterable[str]] = None
    ) -> List[Dict[str, Any]]:
        """Materializes each view from where its last materialization ended to
        ``end_date`` (default: now)."""
        return json.loads(
            self._store.materialize_incremental(_micros(end_date), list(feature_views or []))
        )

    def get_historical_features(
        self,
        entity_df: Union[pd.DataFrame, pa.Table, pa.RecordBatch, str],
        features: Features,
        full_feature_names: bool = False,
    ) -> RetrievalJob:
        """The point-in-time correct training set of ``entity_df`` (a DataFrame or
        pyarrow table with the entity keys and ``event_timestamp``, or a SQL query over
        the sources): the same rows and values as ``quiver export``."""
        names, service = _features(features)
        if isinstance(entity_df, str):
            batch = self._store.get_historical_features(
                None, entity_df, names, service, full_feature_names
            )
        else:
            batch = self._store.get_historical_features(
                _record_batch(entity_df, "entity_df"), None, names, service, full_feature_names
            )
        return RetrievalJob(batch)

    def get_online_features(
        self,
        features: Features,
        entity_rows: Union[Sequence[Dict[str, Any]], pd.DataFrame, pa.Table],
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """The latest values for each entity row (``[{"driver_id": 1001}, …]``, Feast's
        row form, or a DataFrame/pyarrow table); request fields of on-demand views travel
        in the rows beside the keys."""
        names, service = _features(features)
        entities = _record_batch(entity_rows, "entity_rows")
        values, statuses, times = self._store.get_online_features(
            entities, names, service, full_feature_names
        )
        return OnlineResponse(entities, values, statuses, times)

    def push(
        self,
        push_source_name: str,
        df: Union[pd.DataFrame, pa.Table, pa.RecordBatch],
        to: Union[PushMode, str] = PushMode.ONLINE,
    ) -> List[Dict[str, Any]]:
        """Pushes rows into a feature view or source, to the online store, the offline
        store or both; returns what each view took."""
        mode = to.value if isinstance(to, PushMode) else str(to)
        return json.loads(self._store.push(push_source_name, _record_batch(df, "df"), mode))

    def list_feature_views(self) -> List[FeatureView]:
        return [_feature_view(r) for r in self._objects("feature_view")]

    def get_feature_view(self, name: str) -> FeatureView:
        return _feature_view(self._object(name, "feature_view"))

    def list_entities(self) -> List[Entity]:
        return [_entity(r) for r in self._objects("entity")]

    def get_entity(self, name: str) -> Entity:
        return _entity(self._object(name, "entity"))

    def list_feature_services(self) -> List[FeatureService]:
        return [_feature_service(r) for r in self._objects("feature_service")]

    def get_feature_service(self, name: str) -> FeatureService:
        return _feature_service(self._object(name, "feature_service"))

    def _objects(self, kind: str) -> List[Dict[str, Any]]:
        return [
            r
            for r in json.loads(self._store.list())
            if r["kind"] == kind and not r.get("deleted")
        ]

    def _object(self, name: str, kind: str) -> Dict[str, Any]:
        record = json.loads(self._store.describe(name))
        if record["kind"] != kind:
            raise QuiverError(f"`{name}` is a {record['kind'].replace('_', ' ')}, not a {kind.replace('_', ' ')}")
        return record

    def __repr__(self) -> str:
        return f"FeatureStore(repo_path={self.repo_path!r}, project={self.project!r})"


def _micros(t: Optional[datetime]) -> Optional[int]:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, pd.Timestamp):
        t = t.to_pydatetime()
    if not isinstance(t, datetime):
        raise TypeError(f"expected a datetime, got {type(t).__name__}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - _EPOCH) // timedelta(microseconds=1)


def _features(features: Features):
    if isinstance(features, FeatureService):
        return [], features.name
    if isinstance(features, str):
        return [features], None
    return list(features), None


def _record_batch(data: Any, what: str) -> pa.RecordBatch:
    if isinstance(data, pa.RecordBatch):
        return data
    if isinstance(data, pa.Table):
        table = data
    elif isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, dict):
        table = pa.Table.from_pydict(data)
    elif isinstance(data, (list, tuple)):
        table = pa.Table.from_pylist(list(data))
    else:
        raise TypeError(
            f"{what} must be a pandas DataFrame, a pyarrow Table or RecordBatch, or rows as dicts; got {type(data).__name__}"
        )
    batches = table.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return batches[0]


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_NULLABLE.get)


def _feature_view(record: Dict[str, Any]) -> FeatureView:
    d = record["definition"]
    ttl = d.get("ttl")
    return FeatureView(
        name=record["name"],
        version=record["version"],
        entities=list(d.get("entities", [])),
        features=[Feature(c["name"], c["data_type"]) for c in d["schema"]["features"]],
        ttl=None if ttl is None else timedelta(seconds=ttl),
        online=d.get("online", True),
        tags=dict(d.get("tags", {})),
        owner=d.get("owner"),
        description=d.get("comment") or "",
        query=d.get("query", ""),
    )


def _entity(record: Dict[str, Any]) -> Entity:
    d = record["definition"]
    return Entity(
        name=record["name"],
        join_keys=[k["name"] for k in d["keys"]],
        description=d.get("comment") or "",
    )


def _feature_service(record: Dict[str, Any]) -> FeatureService:
    d = record["definition"]
    refs = []
    for s in d["features"]:
        refs.append(f"{s['view']}:{s.get('feature') or '*'}")
    return FeatureService(name=record["name"], features=refs, description=d.get("comment") or "")
