"""Embed stage, once per cohort: the cohort's unique prompts -> the embedding bank.

The bank is a persistent file reused across runs; only prompts it lacks are encoded, so a
nightly run that adds ten studies encodes only their new sentences. The job's declared
output is a small manifest (prompt count, bank checksum), not the bank itself.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from voxtell import __version__
from voxtell.cohort.hashing import file_sha256
from voxtell.cohort.prompts import MAX_PROMPTS, cohort_prompts
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)


def run_embed(
    fixed: Sequence[str],
    findings_files: Iterable[str | os.PathLike],
    bank_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    encoder_id: str,
    encoder_path: str | None = None,
    device: str = "auto",
    allow_download: bool = False,
    max_prompts: int | None = MAX_PROMPTS,
) -> dict[str, Any]:
    """Add the cohort's missing prompts to the bank at ``bank_path`` and write a manifest
    (``max_prompts``: the per-study cap of the segment stage, so no prompt is embedded that
    will not be segmented)."""
    from voxtell.text import EmbeddingBank
    from voxtell.text.bank import resolve_embeddings

    t0 = time.perf_counter()
    prompts = cohort_prompts(fixed, findings_files, max_prompts)
    bank_path = Path(bank_path)
    bank = EmbeddingBank.load(bank_path) if bank_path.is_file() else None
    missing = bank.missing(prompts) if bank is not None else list(prompts)
    encode_s = 0.0
    if missing:
        t1 = time.perf_counter()
        if bank is None:
            bank = EmbeddingBank(dim=0, encoder_id=encoder_id)
        resolve_embeddings(prompts, bank=bank, encoder_id=encoder_id, encoder_path=encoder_path, device=device,
                           allow_download=allow_download)
        bank.save(bank_path)
        encode_s = time.perf_counter() - t1
        log.info("embedded %d new prompt(s); bank %s now holds %d", len(missing), bank_path, len(bank))
    else:
        log.info("all %d cohort prompt(s) are already in %s", len(prompts), bank_path)
    manifest = {
        "pipeline_version": __version__,
        "bank": str(bank_path),
        "bank_sha256": file_sha256(bank_path) if bank_path.is_file() else None,
        "encoder_id": encoder_id,
        "n_prompts": len(prompts),
        "n_new": len(missing),
        "timings": {"encode_s": round(encode_s, 4), "total_s": round(time.perf_counter() - t0, 4)},
        "prompts": prompts,
    }
    write_json_atomic(manifest_path, manifest)
    return manifest
