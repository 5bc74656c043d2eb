"""Segment stage, one shard of studies: the model is loaded once, each study whose image,
model, prompts or settings changed is segmented, the others are skipped.

Per study the predictor publishes ``{prompt_id}.nii.gz`` + ``manifest.json`` into the
study's mask folder (atomically), then this module removes masks of prompts the study no
longer has and writes ``status.json`` and the done marker, which vouches for the masks and
the manifest: a mask deleted or edited later is segmented again. The done marker is the
one skip rule (there is no other). A study's error (unreadable image, NaN voxels, or an
error the pipeline did not expect) becomes a ``failed`` record; a configuration error (bank
from another text encoder, a damaged model) or a machine error (out of memory) fails the job.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from voxtell.cohort import layout, markers
from voxtell.cohort import status as st
from voxtell.cohort.prompts import MAX_PROMPTS, read_findings, select_prompts
from voxtell.cohort.shards import ShardSummary
from voxtell.model.folder import model_ref

log = logging.getLogger(__name__)

STAGE = "segment"
STATUS_NAME = layout.STATUS
MANIFEST_NAME = layout.MANIFEST
#: Predictor settings that change the masks (device/batch size do not).
RESULT_SETTINGS = ("tile_step", "precision", "threshold", "save_probabilities", "backend")


@dataclass(frozen=True)
class SegmentTask:
    study_id: str
    convert_status: str
    findings: str | None
    out_dir: str


def _remove_stale_masks(out_dir: Path, manifest: dict[str, Any]) -> None:
    keep = {p["file"] for p in manifest.get("prompts", [])}
    for f in out_dir.glob("*.nii.gz"):
        if f.name not in keep:
            f.unlink()


class _LazyPredictor:
    """Loads the model on first use, so a shard with nothing to do costs no model load."""

    def __init__(self, model_dir: str, settings: dict[str, Any], bank_path: str | None, text_encoder: str | None,
                 sha_cache: str | None = None):
        self.model_dir, self.settings, self.bank_path, self.text_encoder = model_dir, settings, bank_path, text_encoder
        self.sha_cache = sha_cache
        self._predictor = None
        self.load_s = 0.0

    def get(self):
        if self._predictor is None:
            from voxtell.inference.predictor import Predictor, PredictorConfig

            t0 = time.perf_counter()
            cfg = PredictorConfig(**{**self.settings, "progress": False})
            bank = self.bank_path if self.bank_path and Path(self.bank_path).is_file() else None
            pred = Predictor.from_model_dir(self.model_dir, cfg, bank=bank, text_encoder=self.text_encoder,
                                            sha_cache=self.sha_cache)
            if pred.bank is not None:  # a bank of another encoder is a configuration error: fail the job
                pred.bank.check_compatible(pred.encoder_id, pred.model.embedding_dim)
            self._predictor = pred
            self.load_s = time.perf_counter() - t0
        return self._predictor


def run_segment_shard(
    shard: str,
    tasks: Sequence[SegmentTask],
    summary_path: str | os.PathLike,
    *,
    model_dir: str,
    fixed_prompts: Sequence[str] = (),
    predictor: dict[str, Any] | None = None,
    bank: str | None = None,
    text_encoder: str | None = None,
    config_hash: str | None = None,
    model_sha_cache: str | None = None,
    max_prompts: int | None = MAX_PROMPTS,
) -> dict[str, Any]:
    """Segment the shard's studies that are not current; returns the summary written.

    ``model_sha_cache``: the workflow's checksum cache, so the checkpoint is hashed once per
    model, not once per shard job; ``max_prompts``: the cap of prompts per study."""
    settings = dict(predictor or {})
    model = model_ref(model_dir, model_sha_cache)
    lazy = _LazyPredictor(model_dir, settings, bank, text_encoder, model_sha_cache)
    summary = ShardSummary(STAGE, shard, extra={"model_sha256": model.sha256, "model_id": model.model_id,
                                                 "config_hash": config_hash})
    result_settings = {k: settings.get(k) for k in RESULT_SETTINGS}
    for task in tqdm(tasks, desc=f"segment shard {shard}", unit="study", disable=len(tasks) < 2):
        out_dir = Path(task.out_dir)
        status_path, marker = out_dir / STATUS_NAME, out_dir / markers.MARKER_NAME
        conv = st.read(task.convert_status)
        if conv is None:
            raise FileNotFoundError(f"{task.convert_status} is missing; the convert step did not finish")
        if not st.is_ok(conv):
            marker.unlink(missing_ok=True)  # the marker vouches for a result; there is none now
            record = st.skipped(task.study_id, STAGE, conv)
            st.write(status_path, record)
            summary.add(record, reused=False, study_dir=out_dir)
            continue
        try:
            chosen = select_prompts(fixed_prompts, read_findings(task.findings), max_prompts)
        except Exception as exc:  # a damaged findings file is this study's problem
            marker.unlink(missing_ok=True)
            record = st.study_error(task.study_id, STAGE, exc)
            st.write(status_path, record)
            summary.add(record, reused=False, study_dir=out_dir)
            continue
        prompts, warnings = chosen.prompts, chosen.warnings()
        if not prompts:
            marker.unlink(missing_ok=True)
            record = st.skipped(task.study_id, STAGE, None,
                                "no prompts: no fixed prompts are configured and the report has no affirmed findings")
            st.write(status_path, record)
            summary.add(record, reused=False, study_dir=out_dir)
            continue
        inputs = {
            "image_sha256": st.details(conv).get("image_sha256"),
            "model_sha256": model.sha256,
            "predictor": result_settings,
            "prompts": [p.as_job_entry() for p in prompts],
        }
        previous = st.read(status_path)
        if markers.can_reuse(marker, inputs, previous):
            summary.add(previous, reused=True, study_dir=out_dir)
            continue
        marker.unlink(missing_ok=True)
        # Outside the per-study try: a missing or damaged model or bank is the job's fault,
        # not the study's; it must fail the job (and leave no done marker) so a rerun retries.
        predictor = lazy.get()
        try:
            manifest = predictor.predict_to_folder(
                st.details(conv)["image"], [p.as_job_entry() for p in prompts], out_dir, study_id=task.study_id
            )
        except Exception as exc:  # the stage boundary: a study's error is its row (job errors re-raise)
            record = st.study_error(task.study_id, STAGE, exc)
            _remove_stale_masks(out_dir, {})  # a failed study must not leave an older result behind
            (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
            outputs = [status_path]
        else:
            _remove_stale_masks(out_dir, manifest)
            timings = manifest.get("timings", {})
            summary.time("inference_s", float(timings.get("inference_s", 0.0)))
            summary.time("study_total_s", float(timings.get("total_s", 0.0)))
            record = st.ok(task.study_id, STAGE, warnings=warnings, n_prompts=len(prompts), model_sha256=model.sha256,
                           config_hash=config_hash, timings=timings, over_cap=chosen.over_cap)
            outputs = [status_path, out_dir / MANIFEST_NAME] + [out_dir / p["file"] for p in manifest["prompts"]]
        st.write(status_path, record)
        if not st.is_unexpected(record):
            markers.write_marker(marker, inputs, outputs, model_sha256=model.sha256, config_hash=config_hash)
        summary.add(record, reused=False, study_dir=out_dir)
    summary.time("model_load_s", lazy.load_s)
    return summary.write(summary_path)
