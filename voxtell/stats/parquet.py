"""Per-study statistics Parquet files and the cohort dataset.

A study's statistics go to one Parquet file (``write_stats_parquet``); ``aggregate``
conforms every part to ``STATS_SCHEMA`` (older parts missing a newer nullable column get
nulls), refuses duplicate rows and writes ``OUT/stats.parquet`` and
``OUT/status.parquet`` (plain single files: any reader opens them, and ``OUT/`` reads as a
dataset too) plus ``OUT/SCHEMA.md``. The cohort file's key-value metadata records
pipeline_version, model_sha256, text_encoder, config_hash and created (several distinct
values, e.g. after a model change, are joined by commas).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from voxtell import __version__
from voxtell.io.atomic import atomic_path, write_text_atomic
from voxtell.stats.errors import DuplicateRowError, SchemaMismatchError
from voxtell.stats.flags import QCChecksConfig, cohort_flags, merge_flags, row_flags
from voxtell.stats.schema import STATS_SCHEMA, STATUS_SCHEMA, describe
from voxtell.stats.status import read_status

log = logging.getLogger(__name__)

#: Per-file metadata keys merged into the cohort metadata.
PROVENANCE_KEYS = ("pipeline_version", "model_sha256", "model_id", "text_encoder", "backend")

KEY_COLUMNS = ("study_id", "prompt_id", "finding_id")


def _with_metadata(schema: pa.Schema, metadata: dict[str, Any] | None) -> pa.Schema:
    meta = dict(schema.metadata or {})
    for k, v in (metadata or {}).items():
        meta[str(k).encode()] = ("" if v is None else str(v)).encode()
    return schema.with_metadata(meta)


def stats_table(rows: Sequence[dict[str, Any]], metadata: dict[str, Any] | None = None) -> pa.Table:
    """Rows as a table of ``STATS_SCHEMA`` with ``metadata`` in the file's key-value metadata."""
    table = pa.Table.from_pylist(list(rows), schema=STATS_SCHEMA)
    for f in STATS_SCHEMA:
        if not f.nullable and table[f.name].null_count:
            raise SchemaMismatchError(f"statistics rows lack a value for the required column {f.name!r}")
    return table.replace_schema_metadata(_with_metadata(STATS_SCHEMA, metadata).metadata)


def write_stats_parquet(study: Any, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write a ``StudyStats`` (or a list of rows; ``[]`` for a failed study) atomically."""
    rows = getattr(study, "rows", study)
    meta = {**getattr(study, "metadata", {}), **(metadata or {})}
    table = stats_table(rows, meta)
    p = Path(path)
    with atomic_path(p) as tmp:
        pq.write_table(table, tmp)
    return p


def read_stats(path: str | Path) -> pa.Table:
    """Read a per-study or cohort statistics file, conformed to ``STATS_SCHEMA``."""
    return _conform(Path(path))


def _conform(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SchemaMismatchError(f"{path} is not a readable Parquet file ({exc}); rerun its stats job") from exc
    extra = [n for n in table.column_names if STATS_SCHEMA.get_field_index(n) < 0]
    if extra:
        log.warning("%s: dropping columns unknown to this version: %s", path, extra)
    columns = []
    for f in STATS_SCHEMA:
        if f.name in table.column_names:
            col = table[f.name]
            try:
                columns.append(col.cast(f.type) if col.type != f.type else col)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(f"{path}: column {f.name} ({col.type}) cannot become {f.type}: {exc}") from exc
        elif f.nullable:
            columns.append(pa.nulls(table.num_rows, f.type))
        else:
            raise SchemaMismatchError(f"{path} lacks the required column {f.name!r}; recompute this study's statistics")
    out = pa.Table.from_arrays(columns, schema=STATS_SCHEMA)
    for f in STATS_SCHEMA:
        if not f.nullable and out[f.name].null_count:
            raise SchemaMismatchError(f"{path}: column {f.name!r} has nulls; recompute this study's statistics")
    return out.replace_schema_metadata(table.schema.metadata)


def with_cohort_flags(table: pa.Table, checks: QCChecksConfig) -> pa.Table:
    """``table`` with ``qc_flags`` and ``needs_review`` from the row checks and the cohort checks."""
    needed = [n for n in table.column_names if n not in ("qc_flags", "needs_review", "warnings")]
    rows = table.select(needed).to_pylist()
    flags = [merge_flags(row_flags(r, checks), c) for r, c in zip(rows, cohort_flags(rows, checks))]
    table = table.set_column(table.schema.get_field_index("qc_flags"), STATS_SCHEMA.field("qc_flags"),
                             pa.array(flags, type=pa.list_(pa.string())))
    return table.set_column(table.schema.get_field_index("needs_review"), STATS_SCHEMA.field("needs_review"),
                            pa.array([bool(f) for f in flags], type=pa.bool_()))


@dataclass(frozen=True)
class AggregateResult:
    stats_path: Path
    status_path: Path
    n_rows: int
    n_studies: int
    n_failed: int
    metadata: dict[str, str]


def _expand(parts: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        p = Path(part)
        out.extend(sorted(p.rglob("*.parquet")) if p.is_dir() else [p])
    return out


def aggregate(
    parts: Iterable[str | Path],
    out_dir: str | Path,
    *,
    status_parts: Iterable[str | Path] = (),
    config_hash: str | None = None,
    metadata: dict[str, Any] | None = None,
    checks: QCChecksConfig | None = None,
) -> AggregateResult:
    """Join per-study Parquet parts (files or folders of them) into the cohort dataset.

    Writes ``out_dir/stats.parquet`` (rows sorted by study and prompt),
    ``out_dir/status.parquet`` (from ``status_parts``; Parquet or JSON status files) and
    ``out_dir/SCHEMA.md``, each atomically. ``qc_flags`` and ``needs_review`` are
    recomputed from each row's columns with ``checks`` plus the checks against the cohort
    (``voxtell.stats.flags``).
    """
    out = Path(out_dir)
    paths = _expand(parts)
    tables, provenance = [], {k: set() for k in PROVENANCE_KEYS}
    for p in tqdm(paths, desc="aggregate", unit="part", disable=len(paths) < 50):
        t = _conform(p)
        meta = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
        for k in PROVENANCE_KEYS:
            if meta.get(k):
                provenance[k].add(meta[k])
        for k, col in (("pipeline_version", "pipeline_version"), ("model_sha256", "model_sha256"), ("model_id", "model_id"), ("backend", "backend")):
            provenance[k].update(v for v in pc.unique(t[col]).to_pylist() if v)
        tables.append(t.replace_schema_metadata(None))
    table = pa.concat_tables(tables) if tables else STATS_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by([("study_id", "ascending"), ("prompt_id", "ascending"), ("finding_id", "ascending")])
        keys = table.select(list(KEY_COLUMNS)).group_by(list(KEY_COLUMNS)).aggregate([([], "count_all")])
        dupes = keys.filter(pc.greater(keys["count_all"], 1))
        if dupes.num_rows:
            first = dupes.slice(0, 3).to_pylist()
            raise DuplicateRowError(
                f"{dupes.num_rows} (study_id, prompt_id, finding_id) keys occur in more than one row, e.g. {first}; "
                "pass each study's statistics file once"
            )
        table = with_cohort_flags(table, checks or QCChecksConfig())
    status = read_status(_expand(status_parts))
    if status.num_rows:
        status = status.sort_by([("study_id", "ascending"), ("stage", "ascending"), ("timestamp", "ascending")])
    cohort_meta = {k: ",".join(sorted(v)) for k, v in provenance.items()}
    cohort_meta.update(
        config_hash=config_hash or "",
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        stats_version=__version__,
        n_studies=str(len(pc.unique(table["study_id"]))),
        **{str(k): ("" if v is None else str(v)) for k, v in (metadata or {}).items()},
    )
    for k in ("model_sha256", "pipeline_version"):
        if "," in cohort_meta[k]:
            log.warning("cohort mixes several %s values: %s", k, cohort_meta[k])
    table = table.replace_schema_metadata(_with_metadata(STATS_SCHEMA, cohort_meta).metadata)
    status = status.replace_schema_metadata(_with_metadata(STATUS_SCHEMA, cohort_meta).metadata)
    stats_path, status_path = out / "stats.parquet", out / "status.parquet"
    with atomic_path(stats_path) as tmp:
        pq.write_table(table, tmp)
    with atomic_path(status_path) as tmp:
        pq.write_table(status, tmp)
    write_text_atomic(
        out / "SCHEMA.md",
        "# stats.parquet\n\n" + describe(STATS_SCHEMA) + "\n\n# status.parquet\n\n" + describe(STATUS_SCHEMA) + "\n",
    )
    n_failed = int(pc.sum(pc.equal(status["status"], "failed")).as_py() or 0) if status.num_rows else 0
    log.info("cohort: %d rows from %d parts, %d failed stage(s) -> %s", table.num_rows, len(paths), n_failed, out)
    return AggregateResult(stats_path, status_path, table.num_rows, int(cohort_meta["n_studies"]), n_failed, cohort_meta)
