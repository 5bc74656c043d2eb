# Shared definitions: config and samples validation, shard membership, input functions.
# No rules here. Everything a rule needs is derived from the samples table and config by
# the functions below; the logic behind them lives in voxtell.cohort (importable without
# Snakemake).

import functools
import os

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from voxtell import __version__ as PIPELINE_VERSION
from voxtell.cohort import assign_shards, config_hash, validate_samples
from voxtell.cohort.model_ref import CHECKPOINT, model_exists, model_ref
from voxtell.cohort.prompts import fixed_prompts
from voxtell.cohort.samples import STUDY_WILDCARD, read_samples_rows
from voxtell.errors import VoxTellError


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


# ----------------------------------------------------------------------------- model and encoder
def model_checkpoint(wildcards=None):
    """The model checkpoint; the demo trains it (checkpoint rule) when it does not exist."""
    if model_exists(MODEL_DIR):
        return MODEL_CHECKPOINT
    if config["demo"]["train"]["enabled"]:
        return checkpoints.train_demo_model.get().output["checkpoint"]
    raise WorkflowError(
        f"no model in {MODEL_DIR}: set model.dir to a VoxTell model folder (released weights: the folder with "
        "plans.json and fold_0/checkpoint_final.pth) or enable demo.train to train the small demo model."
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
    }


def gpus_for_segment(wildcards):
    return 0 if config["segment"]["device"] == "cpu" else 1


# ----------------------------------------------------------------------------- per-rule inputs
def convert_input(wildcards):
    return existing(samples()[wildcards.study].source)


def convert_source(wildcards):
    s = samples()[wildcards.study]
    return {"dicom": s.dicom, "image": s.image}


def findings_input(wildcards):
    return existing(*(samples()[s].report for s in shard_members(wildcards)))


def findings_tasks(wildcards):
    return [
        {"study_id": s, "report": samples()[s].report, "out_dir": f"results/findings/{s}"}
        for s in shard_members(wildcards)
    ]


def findings_settings():
    keys = ("vocabulary", "spacy_model", "keep_negated", "expand_abbreviations", "max_chars")
    return {k: config["findings"][k] for k in keys}


def findings_summaries(wildcards=None):
    if not USE_FINDINGS:
        return []
    return expand("results/findings/shards/{shard}.json", shard=shards())


def embed_input(wildcards):
    extra = existing(config["prompts"]["file"]) if config["prompts"]["file"] else []
    return findings_summaries() + extra


def segment_input(wildcards):
    members = shard_members(wildcards)
    inputs = {
        "convert": [f"results/convert/{s}/status.json" for s in members],
        "settings": "results/segment/settings.json",
        "prompts": ancient("results/embed/prompts.json"),
    }
    if USE_FINDINGS:
        inputs["findings"] = f"results/findings/shards/{wildcards.shard}.json"
    return inputs


def segment_tasks(wildcards):
    return [
        {
            "study_id": s,
            "convert_status": f"results/convert/{s}/status.json",
            "findings": f"results/findings/{s}/findings.jsonl" if USE_FINDINGS else None,
            "out_dir": f"results/segment/{s}",
        }
        for s in shard_members(wildcards)
    ]


def stats_input(wildcards):
    inputs = {
        "settings": "results/stats/settings.json",
        "segment": f"results/segment/shards/{wildcards.shard}.json",
    }
    if USE_FINDINGS:
        inputs["findings"] = f"results/findings/shards/{wildcards.shard}.json"
    inputs["reference"] = existing(*(samples()[s].reference for s in shard_members(wildcards)))
    return inputs


def stats_tasks(wildcards):
    return [
        {
            "study_id": s,
            "segment_dir": f"results/segment/{s}",
            "findings": f"results/findings/{s}/findings.jsonl" if USE_FINDINGS else None,
            "reference": samples()[s].reference,
            "out_dir": f"results/stats/{s}",
        }
        for s in shard_members(wildcards)
    ]


def aggregate_input(wildcards):
    return {
        "convert": expand("results/convert/{study}/status.json", study=study_ids()),
        "findings": findings_summaries(),
        "segment": expand("results/segment/shards/{shard}.json", shard=shards()),
        "stats": expand("results/stats/shards/{shard}.json", shard=shards()),
    }


def aggregate_patterns(wildcards):
    """Per-study side files of the shard jobs that the aggregate reads (not declared outputs)."""
    return {
        "status": "results/{stage}/{study}/status.json",
        "stats": "results/stats/{study}/stats.parquet",
        "qc": "results/stats/{study}/qc.png",
    }


def aggregate_studies(wildcards):
    return study_ids()


def all_targets(wildcards):
    return [
        "results/cohort/stats.parquet",
        "results/cohort/status.parquet",
        "results/cohort/qc.html",
        "results/cohort/versions.json",
    ]


def train_input(wildcards):
    return [f"{config['demo']['train']['data_dir']}/dataset.json"]

def retrain_target(wildcards):
    if not (config["retrain"]["data"] and config["retrain"]["out_dir"]):
        raise WorkflowError("set retrain.data (new nnU-Net raw dataset) and retrain.out_dir to run the retrain target")
    return f"{config['retrain']['out_dir']}/fold_0/checkpoint_final.pth"


def onnx_precision():
    """The ONNX graph the onnx backend uses: fp16 for fp16 inference, else fp32."""
    return "fp16" if config["segment"]["precision"] == "fp16" else "fp32"
