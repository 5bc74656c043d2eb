"""Ground truth for report findings in the demo cohort: one lesion per finding sentence."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from scipy import ndimage

from voxtell.cohort.demo import finding_lesions, lesion_mask, run_demo_cohort
from voxtell.cohort.prompts import FINDING
from voxtell.cohort.stage_aggregate import FINDINGS_ROW, write_dice_summary
from voxtell.data.phantoms import LABELS
from voxtell.prompts import prompt_id


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return ((grid - np.asarray(centre)) ** 2).sum(axis=-1) <= radius**2


def test_lesion_mask_picks_the_lesions_own_component_and_splits_touching_ones():
    shape, value = (40, 40, 40), LABELS["lymph_node"]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, -40.0, -40.0]
    big, small, far = _ball(shape, (12, 20, 20), 5), _ball(shape, (21, 20, 20), 3), _ball(shape, (30, 30, 30), 3)
    assert not (big & small).any() and ndimage.label(big | small)[1] == 1  # they touch
    labels = np.zeros(shape, np.uint8)
    labels[big | small | far] = value

    def lesion(ijk, diameter):
        return {"label": value, "center_ras_mm": list(affine[:3, :3] @ ijk + affine[:3, 3]), "diameter_mm": diameter}

    lesions = [lesion((12, 20, 20), 20.0), lesion((21, 20, 20), 12.0), lesion((30, 30, 30), 12.0)]
    masks = [lesion_mask(labels, affine, les, lesions) for les in lesions]
    assert np.array_equal(masks[2], far)  # the nearest component, not every voxel of the label
    assert not (masks[0] & masks[1]).any() and np.array_equal(masks[0] | masks[1], big | small)
    for mask, truth in ((masks[0], big), (masks[1], small)):
        assert (mask & truth).sum() / truth.sum() > 0.9
    # without rivals the whole component; an absent label gives an empty mask
    assert np.array_equal(lesion_mask(labels, affine, lesions[0]), big | small)
    assert not lesion_mask(np.zeros(shape, np.uint8), affine, lesions[0]).any()


def test_demo_reference_covers_the_findings_the_workflow_segments(tmp_path):
    settings = {"vocabulary": None, "spacy_model": None, "keep_negated": True, "expand_abbreviations": True,
                "max_chars": 200000}
    # seed 0, 4 studies: the demo cohort, where demo004's two 12 mm left upper lobe nodules
    # get the same sentence (one prompt)
    samples = run_demo_cohort(tmp_path / "demo", 4, seed=0, fixed_prompts=["liver"], findings_settings=settings)
    n_findings = 0
    for row in samples.read_text().splitlines()[1:]:
        study, _, report, ref_map_rel = row.split("\t")
        ref_map_path = tmp_path / "demo" / ref_map_rel
        ref_dir = ref_map_path.parent
        ref = json.loads((ref_dir / "reference.json").read_text())
        ref_map = json.loads(ref_map_path.read_text())
        labels = np.asarray(nib.load(str(ref_dir / "labels.nii.gz")).dataobj)
        found = finding_lesions(tmp_path / "demo" / report, ref, settings)
        # one prompt per distinct lesion sentence (impression repeats are duplicates), which
        # together describe every lesion of the study once
        assert len({p for p, _ in found}) == len(found) == len({f["sentence"] for f in ref["findings"]})
        described = [les for _, group in found for les in group]
        assert sorted(map(json.dumps, described)) == sorted(map(json.dumps, ref["lesions"]))
        for prompt, group in found:
            n_findings += 1
            mask = np.asarray(nib.load(str(ref_dir / ref_map[prompt]["file"])).dataobj) > 0
            assert ref_map[prompt]["file"] == f"{prompt_id(prompt)}.nii.gz"
            label = group[0]["label"]
            assert set(np.unique(labels[mask])) == {label}
            # its own lesions, not every voxel of the label, unless it names all of them
            assert mask.sum() < (labels == label).sum() or len(group) == sum(o["label"] == label for o in ref["lesions"])
            if len(group) > 1:
                assert ndimage.label(mask, structure=np.ones((3, 3, 3)))[1] >= 2
        assert "liver" in ref_map and study.startswith("demo")
    assert n_findings == 14
    # findings off: only the fixed prompts get references
    samples = run_demo_cohort(tmp_path / "plain", 1, seed=0, fixed_prompts=["liver"])
    ref_map = json.loads((tmp_path / "plain" / samples.read_text().splitlines()[1].split("\t")[3]).read_text())
    assert list(ref_map) == ["liver"]


def test_dice_summary_pools_the_findings(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    stats = tmp_path / "stats.parquet"
    pq.write_table(pa.table({
        "prompt": ["liver", "liver", "A 12 mm nodule", "Focal liver lesion of 9 mm", "spleen"],
        "source": ["config", "config", FINDING, FINDING, "config"],
        "dice": [0.9, 0.8, 0.5, 0.0, None],
    }), stats)
    summary = write_dice_summary(stats, tmp_path / "dice.tsv")
    assert set(summary) == {"liver", FINDINGS_ROW}
    assert summary[FINDINGS_ROW] == {"n": 2, "mean_dice": 0.25, "min_dice": 0.0}
    assert (tmp_path / "dice.tsv").read_text().splitlines()[1].startswith(f"{FINDINGS_ROW}\t2\t0.2500")
