"""Explicit Parquet schemas of the statistics and status tables.

Every field carries ``description`` and ``unit`` in its Parquet field metadata, so a table
documents itself wherever it is opened. Types are plain (string, bool, int32/int64,
float64, timestamp in microseconds UTC): pandas, polars, DuckDB and Spark read them as is.
Columns are flat (no structs) for the same reason; the only lists are lists of strings
(``concepts``, ``warnings``, ``qc_flags``), and a finding's measurements are a JSON string.

Conventions: coordinates are DICOM patient coordinates (LPS: +x patient left, +y posterior,
+z superior) in millimetres; volumes in millilitres; intensities in the image's original
units (HU for CT, SUV for PET converted to SUV, arbitrary units for MR).
"""

from __future__ import annotations

import pyarrow as pa

#: Bump when columns change meaning or are removed (adding columns keeps old parts readable).
SCHEMA_VERSION = "1"

_INTENSITY_UNIT = "image units (HU for CT, SUV for PET, arbitrary for MR)"

# (name, type, nullable, unit, description)
_STATS_FIELDS: list[tuple[str, pa.DataType, bool, str, str]] = [
    ("study_id", pa.string(), False, "", "Study identifier from the samples table."),
    ("prompt_id", pa.string(), False, "", "Stable prompt id: slug + sha1 of the normalised prompt (file name of the mask)."),
    ("prompt", pa.string(), True, "", "Prompt text as given to the model."),
    ("source", pa.string(), True, "", "Where the prompt came from: 'config' (fixed prompts) or 'finding' (report sentence)."),
    ("finding_id", pa.string(), True, "",
     "Finding id (results/findings/{study}/findings.jsonl) when source is 'finding'; stable while its sentence is unchanged."),
    ("sentence", pa.string(), True, "", "The report sentence of the finding, as written."),
    ("section", pa.string(), True, "", "Report section the sentence is in (findings, impression, ...)."),
    ("concepts", pa.list_(pa.string()), True, "", "Vocabulary concepts the sentence names."),
    ("laterality", pa.string(), True, "", "Side the sentence gives: left, right, bilateral or null."),
    ("assertion", pa.string(), True, "", "present, negated, normal, resolved or historical."),
    ("uncertain", pa.bool_(), True, "", "True when the sentence hedges (possible, suspicious for, ...)."),
    ("measurements", pa.string(), True, "", "The finding's measurements as given by the findings stage, as JSON."),
    ("mask_path", pa.string(), True, "", "Path of the mask file this row measures."),
    ("model_id", pa.string(), True, "", "Model identifier from the model directory."),
    ("model_sha256", pa.string(), True, "", "SHA-256 of the model checkpoint that produced the mask."),
    ("backend", pa.string(), True, "", "Inference backend (e.g. torch, onnxruntime)."),
    ("modality", pa.string(), True, "", "Image modality (series.json, else CT when the image holds air below -500)."),
    ("pipeline_version", pa.string(), True, "", "voxtell version that produced the mask."),
    ("empty", pa.bool_(), False, "", "True when the mask has no voxel (not an error); geometry and intensity are then null."),
    ("voxel_count", pa.int64(), False, "voxels", "Number of mask voxels."),
    ("volume_ml", pa.float64(), False, "mL", "Mask volume: voxel count times voxel volume."),
    ("bbox_min_x_mm", pa.float64(), True, "mm (LPS x)", "Smallest LPS x of the mask's voxel centres."),
    ("bbox_min_y_mm", pa.float64(), True, "mm (LPS y)", "Smallest LPS y of the mask's voxel centres."),
    ("bbox_min_z_mm", pa.float64(), True, "mm (LPS z)", "Smallest LPS z of the mask's voxel centres."),
    ("bbox_max_x_mm", pa.float64(), True, "mm (LPS x)", "Largest LPS x of the mask's voxel centres."),
    ("bbox_max_y_mm", pa.float64(), True, "mm (LPS y)", "Largest LPS y of the mask's voxel centres."),
    ("bbox_max_z_mm", pa.float64(), True, "mm (LPS z)", "Largest LPS z of the mask's voxel centres."),
    ("centroid_x_mm", pa.float64(), True, "mm (LPS x)", "Centre of mass of the mask, LPS x."),
    ("centroid_y_mm", pa.float64(), True, "mm (LPS y)", "Centre of mass of the mask, LPS y."),
    ("centroid_z_mm", pa.float64(), True, "mm (LPS z)", "Centre of mass of the mask, LPS z."),
    ("n_components", pa.int32(), False, "count", "Connected components (26-connectivity); 0 for an empty mask."),
    ("largest_component_ml", pa.float64(), True, "mL", "Volume of the largest connected component."),
    ("second_component_ml", pa.float64(), True, "mL", "Volume of the second-largest connected component (0 when one)."),
    ("equivalent_diameter_mm", pa.float64(), True, "mm", "Diameter of the ball with the mask's volume."),
    ("longest_axial_diameter_mm", pa.float64(), True, "mm",
     "RECIST long axis: longest in-plane distance across the mask outline on the most axial slices of the grid, over all slices."),
    ("perpendicular_diameter_mm", pa.float64(), True, "mm",
     "Width of the mask perpendicular to the long axis, on the long axis' slice."),
    ("intensity_mean", pa.float64(), True, _INTENSITY_UNIT, "Mean image value inside the mask."),
    ("intensity_std", pa.float64(), True, _INTENSITY_UNIT, "Standard deviation (population) of image values inside the mask."),
    ("intensity_min", pa.float64(), True, _INTENSITY_UNIT, "Minimum image value inside the mask."),
    ("intensity_p05", pa.float64(), True, _INTENSITY_UNIT, "5th percentile (linear interpolation) inside the mask."),
    ("intensity_median", pa.float64(), True, _INTENSITY_UNIT, "Median image value inside the mask."),
    ("intensity_p95", pa.float64(), True, _INTENSITY_UNIT, "95th percentile (linear interpolation) inside the mask."),
    ("intensity_max", pa.float64(), True, _INTENSITY_UNIT, "Maximum image value inside the mask."),
    ("report_diameter_mm", pa.float64(), True, "mm", "Largest measurement the report gave for this finding (measurements_mm)."),
    ("diameter_ratio", pa.float64(), True, "ratio",
     "longest_axial_diameter_mm / report_diameter_mm (1 = mask agrees with the report)."),
    ("body_fraction", pa.float64(), True, "ratio", "Share of mask voxels inside the patient's body (found on the image)."),
    ("edge_fraction", pa.float64(), True, "ratio", "Share of mask voxels on the in-plane border of the scan."),
    ("midline_offset_mm", pa.float64(), True, "mm (LPS x)",
     "Centroid x minus the body's midline on the centroid's axial slice (+ = patient's left)."),
    ("organ_prompt_id", pa.string(), True, "", "Prompt id of the organ mask of the study that the finding names."),
    ("organ_fraction", pa.float64(), True, "ratio",
     "Share of the finding's mask voxels inside organ_prompt_id's mask or within stats.qc_checks.organ_margin_mm of it."),
    ("dice", pa.float64(), True, "ratio", "Dice overlap with the reference mask (1 when both are empty)."),
    ("hd95_mm", pa.float64(), True, "mm",
     "95th-percentile Hausdorff distance to the reference: max of both directed 95th percentiles of surface-voxel distances."),
    ("msd_mm", pa.float64(), True, "mm", "Symmetric mean surface distance to the reference (mean of both directed distance sets)."),
    ("reference_volume_ml", pa.float64(), True, "mL", "Volume of the reference mask."),
    ("volume_difference_ml", pa.float64(), True, "mL", "volume_ml minus reference_volume_ml."),
    ("suv_max", pa.float64(), True, "SUVbw",
     "PET/CT: largest body-weight SUV in the mask (PET of the same frame of reference, resampled onto the CT)."),
    ("suv_mean", pa.float64(), True, "SUVbw", "PET/CT: mean body-weight SUV in the mask."),
    ("suv_peak", pa.float64(), True, "SUVbw",
     "PET/CT: largest mean SUV of a 1 mL sphere centred on a mask voxel (CT-grid voxels in the sphere)."),
    ("mtv_ml", pa.float64(), True, "mL", "PET/CT: metabolic tumour volume, mask voxels with SUV >= stats.mtv_threshold_suv."),
    ("warnings", pa.list_(pa.string()), True, "", "Warnings about the input (series.json) and the measurement."),
    ("qc_flags", pa.list_(pa.string()), True, "",
     "Codes of the QC checks this row fails (voxtell.stats.flags; the cohort table adds cohort checks)."),
    ("needs_review", pa.bool_(), True, "", "True when qc_flags is not empty: look at this mask."),
]

_STATUS_FIELDS: list[tuple[str, pa.DataType, bool, str, str]] = [
    ("study_id", pa.string(), False, "", "Study identifier from the samples table."),
    ("stage", pa.string(), False, "", "Pipeline stage: convert, findings, segment, stats, ..."),
    ("status", pa.string(), False, "",
     "'ok', 'failed', or 'skipped' (nothing to do: an upstream stage failed or the study has no prompts)."),
    ("error_class", pa.string(), True, "",
     "Python class name of the error (null when ok; for skipped, the upstream stage's error)."),
    ("message", pa.string(), True, "",
     "What went wrong and what to do about it (null when ok; for skipped, why there was nothing to do)."),
    ("timestamp", pa.timestamp("us", tz="UTC"), False, "UTC", "When the stage finished."),
    ("warnings", pa.list_(pa.string()), False, "",
     "Plausibility warnings of the stage (e.g. convert: HU range, spacing, series ties); empty when none."),
]


def _schema(fields: list[tuple[str, pa.DataType, bool, str, str]], table: str) -> pa.Schema:
    return pa.schema(
        [pa.field(n, t, nullable=nl, metadata={"description": d, "unit": u}) for n, t, nl, u, d in fields],
        metadata={"voxtell.table": table, "voxtell.schema_version": SCHEMA_VERSION},
    )


#: One row per (study, prompt[, finding]).
STATS_SCHEMA: pa.Schema = _schema(_STATS_FIELDS, "stats")
#: One row per (study, stage).
STATUS_SCHEMA: pa.Schema = _schema(_STATUS_FIELDS, "status")

#: ``skipped``: a stage had nothing to do for a study (its upstream stage failed, or it has
#: no prompts); the row says why, so every (study, stage) of a cohort run has a row.
STATUS_VALUES = ("ok", "failed", "skipped")


def describe(schema: pa.Schema) -> str:
    """Markdown table of a schema's columns (name, type, unit, description) for docs."""
    lines = ["| column | type | unit | description |", "|---|---|---|---|"]
    for f in schema:
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        lines.append(f"| {f.name} | {f.type} | {meta.get('unit', '')} | {meta.get('description', '')} |")
    return "\n".join(lines)
