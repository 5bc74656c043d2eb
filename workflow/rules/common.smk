# Shared definitions: config and samples validation, shard membership, input functions.
# No rules here. Everything a rule needs is derived from the samples table and config by
# the functions below; the logic behind them lives in voxtell.cohort (importable without
# Snakemake). Every path comes from voxtell.cohort.layout (L below), never spelled out.

import functools
import json
import os
import sys

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from voxtell import __version__ as PIPELINE_VERSION
from voxtell.cohort import assign_shards, config_hash, validate_samples
from voxtell.cohort.layout import RESULTS as L
from voxtell.cohort.layout import STAGES
from voxtell.cohort.markers import stale_studies
from voxtell.cohort.prompts import fixed_prompts
from voxtell.cohort.samples import STUDY_WILDCARD, read_samples_rows
from voxtell.errors import VoxTellError
from voxtell.model.folder import CHECKPOINT, model_exists, model_ref


validate(config, "../schemas/config.schema.yaml")

SAMPLES_SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "samples.schema.yaml")
N_SHARDS = config["segment"]["n_shards"]
USE_FINDINGS = config["prompts"]["findings"]
MODEL_DIR = config["model"]["dir"]
MODEL_CHECKPOINT = os.path.join(MODEL_DIR, str(CHECKPOINT))
DEMO_SAMPLES = os.path.join(config["demo"]["dir"], "samples.tsv")
MODEL_SHA_CACHE = os.path.join(".snakemake", "voxtell", "model_sha256.json")
#: Hash of the analysis settings, recorded in the outputs (where the run happens is not part of it).
CONFIG_HASH = config_hash({k: v for k, v in config.items() if k not in ("demo", "threads")})

if config["demo"]["enabled"] and os.path.normpath(config["samples"]) != os.path.normpath(DEMO_SAMPLES):
    raise WorkflowError(
        f"demo.enabled is true, so 'samples' must be the demo's table {DEMO_SAMPLES} "
        f"(got {config['samples']}); set demo.enabled: false for a real cohort."
    )
try:
    FIXED_PROMPTS = fixed_prompts(config["prompts"]["fixed"], config["prompts"]["file"])
except VoxTellError as exc:
    raise WorkflowError(str(exc))


wildcard_constraints:
    study=STUDY_WILDCARD,
    shard=r"[0-9][0-9][0-9]+",


# ----------------------------------------------------------------------------- samples
_SAMPLES = {}


def samples():
    """Validated samples (study id -> Sample), read once. The demo's table is produced by
    the demo_cohort checkpoint, so asking for it before it exists defers the caller."""
    path = config["samples"]
    if path in _SAMPLES:
        return _SAMPLES[path]
    if not os.path.exists(path):
        if config["demo"]["enabled"]:
            checkpoints.demo_cohort.get()
        raise WorkflowError(
            f"samples table {path} does not exist: set 'samples' in config/config.yaml to a TSV with columns "
            "study_id, dicom or image, and optionally report and reference (see config/README.md)."
        )
    try:
        rows = read_samples_rows(path)
        with open(SAMPLES_SCHEMA, encoding="utf-8") as fh:
            validator = jsonschema.Draft202012Validator(yaml.safe_load(fh))
        for n, row in enumerate(rows, start=2):
            record = {k: v for k, v in row.items() if v not in (None, "")}
            error = next(iter(validator.iter_errors(record)), None)
            if error is not None:
                raise WorkflowError(f"{path} data row {n - 1}: {error.message} (see workflow/schemas/samples.schema.yaml)")
        rows = validate_samples(rows, base_dir=os.path.dirname(path), source=path)
    except VoxTellError as exc:
        raise WorkflowError(str(exc))
    _SAMPLES[path] = {s.study_id: s for s in rows}
    return _SAMPLES[path]


def study_ids():
    return list(samples())


@functools.lru_cache(maxsize=4)
def _shards(ids):
    return assign_shards(ids, N_SHARDS)


def shards():
    """Shard label -> study ids; shards without studies do not exist."""
    return _shards(tuple(study_ids()))


def shard_members(wildcards):
    return shards()[wildcards.shard]


def existing(*paths):
    """Paths that exist: a missing DICOM folder or report makes its study fail with a
    status row at run time instead of stopping the whole cohort at DAG time."""
    return [p for p in paths if p and os.path.exists(p)]


def age_stale_shards():
    """Shards whose studies' results no longer match their done markers (a mask or per-study
    file deleted or changed since the run, or a status record gone) get their summary's time
    set to the epoch: older than its inputs, so Snakemake runs the shard again (mtime rerun
    trigger) and, through it, every job downstream; inside the job only those studies are
    redone. Runs while the Snakefile is read (Snakemake looks at file times before it calls
    input functions) and only for shards that have finished: one summary read and a file
    stat per vouched-for output."""
    if not os.path.exists(config["samples"]):
        return
    for stage in STAGES:
        for shard in shards():
            summary = L.shard_summary(stage, shard)
            try:
                with open(summary, encoding="utf-8") as fh:
                    data = json.load(fh)
            except (OSError, ValueError):
                continue  # not run yet (or damaged: its job reruns anyway)
            bad = stale_studies(data)
            if bad:
                logger.warning(f"{stage} shard {shard}: results of {len(bad)} study(ies) changed since the run "
                               f"(e.g. {bad[0]}); the shard runs again and redoes them")
                os.utime(summary, ns=(10**9, 10**9))


# ----------------------------------------------------------------------------- model and encoder
def model_checkpoint(wildcards=None):
    """The model checkpoint; trained (checkpoint rule) only when demo.train.enabled asks for it."""
    if model_exists(MODEL_DIR):
        return MODEL_CHECKPOINT
    if config["demo"]["train"]["enabled"]:
        return checkpoints.train_demo_model.get().output["checkpoint"]
    what = "does not exist" if not os.path.exists(MODEL_DIR) else f"has no {CHECKPOINT}"
    raise WorkflowError(
        f"model.dir {MODEL_DIR} {what}: set model.dir to a VoxTell model folder (released weights: the folder "
        "with plans.json and fold_0/checkpoint_final.pth), or set demo.train.enabled: true to train the small "
        "demo model into it."
    )


def model_sha256(wildcards=None):
    """Model checksum: a parameter of the segmentation jobs, so a new model re-segments."""
    if not model_exists(MODEL_DIR):
        return "pending"
    try:
        return model_ref(MODEL_DIR, MODEL_SHA_CACHE).sha256
    except VoxTellError as exc:
        raise WorkflowError(str(exc))


def text_encoder_id(wildcards=None):
    if config["text_encoder"]["id"]:
        return config["text_encoder"]["id"]
    if model_exists(MODEL_DIR):
        return model_ref(MODEL_DIR, MODEL_SHA_CACHE).text_encoder
    raise WorkflowError("text_encoder.id must be set while the model folder does not exist yet")


def bank_path(wildcards=None):
    if config["embeddings"]["bank"]:
        return config["embeddings"]["bank"]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in text_encoder_id().split("/")[-1])
    return os.path.join("resources", "embeddings", f"{slug}.npz")


def predictor_settings():
    keys = ("device", "precision", "backend", "tile_step", "sw_batch_size", "threshold", "save_probabilities",
            "prompt_chunk")
    return {k: config["segment"][k] for k in keys}


def segment_settings_input(wildcards):
    inputs = {"model": model_checkpoint()}
    if config["segment"]["backend"] == "onnx":
        inputs["onnx"] = f"{MODEL_DIR}/onnx/voxtell_{onnx_precision()}.onnx"
    return inputs


def segment_run_settings(wildcards):
    """Run-level settings of the segmentation jobs (a parameter of segment_settings; it takes
    no input, so Snakemake tracks it for changes)."""
    return {
        "model_dir": MODEL_DIR,
        "model_sha256": model_sha256(),
        "fixed_prompts": FIXED_PROMPTS,
        "predictor": predictor_settings(),
        "bank": bank_path(),
        "text_encoder": config["text_encoder"]["path"] or config["text_encoder"]["id"],
        "config_hash": CONFIG_HASH,
        "model_sha_cache": MODEL_SHA_CACHE,
        "max_prompts": config["segment"]["max_prompts_per_study"],
    }


def gpus_for_segment(wildcards):
    return 0 if config["segment"]["device"] == "cpu" else 1


# ----------------------------------------------------------------------------- per-rule inputs
def convert_input(wildcards):
    return existing(*(samples()[s].source for s in shard_members(wildcards)))


def convert_tasks(wildcards):
    return [
        {"study_id": s, "dicom": samples()[s].dicom, "image": samples()[s].image, "out_dir": L.study_dir("convert", s)}
        for s in shard_members(wildcards)
    ]


def convert_settings():
    """Settings of the convert jobs (keyword arguments of voxtell.cohort.stage_convert.run_convert)."""
    c = config["convert"]
    return {
        "modalities": c["modalities"],
        "min_slices": c["min_slices"],
        "pet_suv": c["pet_suv"],
        "pet_ct": c["pet_ct"],
        "dicom_export": config["export_dicom"]["enabled"],
    }


def convert_summaries(wildcards=None):
    return [L.shard_summary("convert", shard) for shard in shards()]


def findings_input(wildcards):
    return existing(*(samples()[s].report for s in shard_members(wildcards)))


def findings_tasks(wildcards):
    return [
        {"study_id": s, "report": samples()[s].report, "out_dir": L.study_dir("findings", s)}
        for s in shard_members(wildcards)
    ]


def findings_settings():
    keys = ("vocabulary", "spacy_model", "keep_negated", "expand_abbreviations", "max_chars")
    return {k: config["findings"][k] for k in keys}


def findings_summaries(wildcards=None):
    if not USE_FINDINGS:
        return []
    return [L.shard_summary("findings", shard) for shard in shards()]


def embed_input(wildcards):
    extra = existing(config["prompts"]["file"]) if config["prompts"]["file"] else []
    return findings_summaries() + extra


def embed_findings_files(wildcards):
    return [L.findings(s) for s in study_ids()] if USE_FINDINGS else []


def segment_input(wildcards):
    inputs = {
        "convert": L.shard_summary("convert", wildcards.shard),
        "settings": L.settings("segment"),
        "prompts": ancient(L.embed_manifest()),
    }
    if USE_FINDINGS:
        inputs["findings"] = L.shard_summary("findings", wildcards.shard)
    return inputs


def segment_tasks(wildcards):
    return [
        {
            "study_id": s,
            "convert_status": L.status("convert", s),
            "findings": L.findings(s) if USE_FINDINGS else None,
            "out_dir": L.study_dir("segment", s),
        }
        for s in shard_members(wildcards)
    ]


def stats_input(wildcards):
    inputs = {
        "settings": L.settings("stats"),
        "segment": L.shard_summary("segment", wildcards.shard),
    }
    inputs["reference"] = existing(*(samples()[s].reference for s in shard_members(wildcards) if samples()[s].reference != "auto"))
    return inputs


def stats_tasks(wildcards):
    return [
        {
            "study_id": s,
            "segment_dir": L.study_dir("segment", s),
            "reference": samples()[s].reference,
            "dicom": samples()[s].dicom,
            "out_dir": L.study_dir("stats", s),
        }
        for s in shard_members(wildcards)
    ]


def shard_summaries(stage):
    return [L.shard_summary(stage, shard) for shard in shards()]


def aggregate_input(wildcards):
    return {
        "convert": convert_summaries(),
        "findings": findings_summaries(),
        "segment": shard_summaries("segment"),
        "stats": shard_summaries("stats"),
    }


def aggregate_patterns(wildcards):
    """Per-study side files of the shard jobs that the aggregate reads (not declared outputs)."""
    return {
        "status": L.status("{stage}", "{study}"),
        "stats": L.stats("{study}"),
        "qc": L.qc("{study}"),
        **({"findings": L.findings("{study}")} if USE_FINDINGS else {}),
    }


def aggregate_studies(wildcards):
    return study_ids()


COHORT_TARGETS = [L.cohort(k) for k in ("stats", "status", "qc", "versions")]


def export_dicom_input(wildcards):
    """The study's segment shard and convert status; the target needs export_dicom.enabled."""
    if not config["export_dicom"]["enabled"]:
        raise WorkflowError("the export_dicom target needs export_dicom.enabled: true (then convert records the source UIDs)")
    shard = next(k for k, members in shards().items() if wildcards.study in members)
    return {"segment": L.shard_summary("segment", shard), "convert": L.shard_summary("convert", shard)}


def all_targets(wildcards):
    return COHORT_TARGETS


def run_summary(strict):
    """Print the one-screen run summary; with ``strict``, fail the run if a study failed."""
    from voxtell.cohort.run_status import read_run_status

    try:
        ids = study_ids()
    except Exception:  # no valid samples table: nothing to summarise
        return
    status = read_run_status(L.root, ids)
    print(status.render(), file=sys.stderr)
    if strict and status.any_failed:
        raise WorkflowError(f"{len(status.failures())} study stage(s) failed (listed above; every other study "
                            f"is in {L.cohort('stats')}); `voxtell status {L.root}` shows this summary again.")


def train_input(wildcards):
    return [f"{config['demo']['train']['data_dir']}/dataset.json"]

def retrain_target(wildcards):
    if not (config["retrain"]["data"] and config["retrain"]["out_dir"]):
        raise WorkflowError("set retrain.data (new nnU-Net raw dataset) and retrain.out_dir to run the retrain target")
    return f"{config['retrain']['out_dir']}/fold_0/checkpoint_final.pth"


def onnx_precision():
    """The ONNX graph the onnx backend uses: fp16 for fp16 inference, else fp32."""
    return "fp16" if config["segment"]["precision"] == "fp16" else "fp32"


age_stale_shards()
