"""Each QC check on its own: the row that should fail it does, the one next to it does not;
the cohort checks inside ``aggregate``; the body, edge and organ measurements behind them."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from voxtell.stats import flags as F
from voxtell.stats.flags import QCChecksConfig, cohort_flags, row_flags
from voxtell.stats.parquet import aggregate, write_stats_parquet
from voxtell.stats.placement import body_mask, fraction_near, placement

CHECKS = QCChecksConfig()


def row(**kw):
    base = {"study_id": "s1", "prompt_id": "p", "prompt": "lesion", "source": "finding", "assertion": "present",
            "empty": False, "voxel_count": 100, "volume_ml": 10.0, "n_components": 1, "largest_component_ml": 10.0,
            "second_component_ml": 0.0, "longest_axial_diameter_mm": 30.0, "equivalent_diameter_mm": 26.7,
            "report_diameter_mm": 30.0, "midline_offset_mm": -50.0, "body_fraction": 1.0, "edge_fraction": 0.0}
    base.update(kw)
    return base


def test_a_consistent_row_passes():
    assert row_flags(row(), CHECKS) == []
    assert row_flags(row(source="config", report_diameter_mm=None), CHECKS) == []


def test_empty_affirmed_finding():
    assert row_flags(row(empty=True, volume_ml=0.0), CHECKS) == [F.EMPTY_FINDING]
    assert row_flags(row(empty=True, volume_ml=0.0, assertion="negated"), CHECKS) == []
    assert row_flags(row(empty=True, volume_ml=0.0, source="config"), CHECKS) == []  # the cohort decides


@pytest.mark.parametrize("long_axis, equivalent, flagged", [
    (30.0, 26.7, False), (15.0, 16.0, False), (60.0, 40.0, False), (61.0, 40.0, True), (14.0, 10.0, True), (40.0, 70.0, True)])
def test_size_against_the_report(long_axis, equivalent, flagged):
    r = row(longest_axial_diameter_mm=long_axis, equivalent_diameter_mm=equivalent)
    assert (F.SIZE_VS_REPORT in row_flags(r, CHECKS)) is flagged
    assert F.SIZE_VS_REPORT not in row_flags({**r, "report_diameter_mm": None}, CHECKS)


def test_side_from_sentence_prompt_or_organ():
    # LPS: negative x is the patient's right
    assert F.WRONG_SIDE in row_flags(row(laterality="left", midline_offset_mm=-50.0), CHECKS)
    assert F.WRONG_SIDE not in row_flags(row(laterality="right", midline_offset_mm=-50.0), CHECKS)
    assert F.WRONG_SIDE not in row_flags(row(laterality="left", midline_offset_mm=-5.0), CHECKS)  # within margin
    config = dict(source="config", report_diameter_mm=None, laterality=None)
    assert F.WRONG_SIDE in row_flags(row(prompt="left kidney", midline_offset_mm=-60.0, **config), CHECKS)
    assert F.WRONG_SIDE in row_flags(row(prompt="Liver", midline_offset_mm=60.0, **config), CHECKS)
    assert F.WRONG_SIDE not in row_flags(row(prompt="aorta", midline_offset_mm=20.0, **config), CHECKS)
    assert F.expected_side(row(prompt="both kidneys", **config), CHECKS) == "bilateral"


def test_fragmented_and_the_paired_organs():
    assert F.FRAGMENTED in row_flags(row(n_components=11), CHECKS)
    assert F.FRAGMENTED in row_flags(row(n_components=3, largest_component_ml=5.0), CHECKS)
    kidneys = row(source="config", prompt="kidneys", report_diameter_mm=None, n_components=2,
                  largest_component_ml=5.2, second_component_ml=4.8)
    assert F.FRAGMENTED not in row_flags(kidneys, CHECKS)  # two kidneys are not a broken kidney
    assert F.FRAGMENTED in row_flags({**kidneys, "prompt": "left kidney"}, CHECKS)


def test_place_checks():
    assert F.TOUCHES_EDGE in row_flags(row(edge_fraction=0.01), CHECKS)
    assert F.TOUCHES_EDGE not in row_flags(row(edge_fraction=0.01, prompt="Body", source="config",
                                               report_diameter_mm=None), CHECKS)
    assert F.OUTSIDE_BODY in row_flags(row(body_fraction=0.2), CHECKS)
    assert F.OUTSIDE_ORGAN in row_flags(row(organ_fraction=0.1), CHECKS)
    assert F.OUTSIDE_ORGAN not in row_flags(row(organ_fraction=0.9), CHECKS)
    assert F.REFERENCE_DISAGREES in row_flags(row(dice=0.2), CHECKS)
    assert row_flags(row(dice=0.9, organ_fraction=0.9), CHECKS) == []


def test_cohort_checks():
    rng = np.random.default_rng(0)
    good = [row(study_id=f"s{i}", source="config", prompt="liver", prompt_id="liver", report_diameter_mm=None,
                volume_ml=float(v), intensity_std=float(s))
            for i, (v, s) in enumerate(zip(rng.normal(1500, 150, 12), rng.normal(30, 4, 12)))]
    assert cohort_flags(good, CHECKS) == [[] for _ in good]
    big = {**good[0], "study_id": "big", "volume_ml": 3000.0}
    wide = {**good[0], "study_id": "wide", "intensity_std": 140.0}
    empty = {**good[0], "study_id": "empty", "empty": True, "volume_ml": 0.0}
    flags = cohort_flags(good + [big, wide, empty], CHECKS)
    assert flags[-3:] == [[F.VOLUME_OUTLIER], [F.SPREAD_OUTLIER], [F.VOLUME_OUTLIER]]
    assert cohort_flags(good[:4] + [big], QCChecksConfig(min_cohort=6)) == [[]] * 5  # too few to judge
    # modalities are never compared with each other
    mr = [{**r, "modality": "MR", "intensity_std": 300.0} for r in good[:6]]
    assert all(f == [] for f in cohort_flags([{**r, "modality": "CT"} for r in good] + mr, CHECKS))


def test_aggregate_recomputes_flags_over_the_cohort(tmp_path):
    parts = []
    for i in range(6):
        r = row(study_id=f"s{i}", source="config", prompt="liver", prompt_id="liver", report_diameter_mm=None,
                volume_ml=1500.0 + 10 * i, qc_flags=[], needs_review=False, warnings=[])
        if i == 5:
            r["volume_ml"] = 5000.0
        r["largest_component_ml"] = r["volume_ml"]
        parts.append(write_stats_parquet([r], tmp_path / f"s{i}.parquet"))
    res = aggregate(parts, tmp_path / "cohort")
    table = pq.read_table(res.stats_path).to_pylist()
    assert [t["qc_flags"] for t in table] == [[]] * 5 + [[F.VOLUME_OUTLIER]]
    assert [t["needs_review"] for t in table] == [False] * 5 + [True]
    res = aggregate(parts, tmp_path / "cohort2", checks=QCChecksConfig(volume_min_fold=5.0))
    assert not any(t["needs_review"] for t in pq.read_table(res.stats_path).to_pylist())


def _phantom(modality: str):
    shape = (50, 40, 12)
    grid = np.indices(shape)
    body = ((grid[0] - 24.5) / 20) ** 2 + ((grid[1] - 19.5) / 15) ** 2 <= 1
    lung = ((grid[0] - 16) / 5) ** 2 + ((grid[1] - 19.5) / 6) ** 2 <= 1
    if modality == "CT":
        image = np.where(body, 40.0, -1000.0)
        image[lung] = -850.0
    else:
        image = np.where(body, 400.0, 3.0)
        image[lung] = 5.0
    affine = np.diag([-3.0, -3.0, 5.0, 1.0])  # LPS storage
    return image, body, lung, affine


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_body_fills_the_lungs_and_finds_the_midline(modality):
    image, body, lung, affine = _phantom(modality)
    found = body_mask(image, affine, modality)
    assert np.array_equal(found.mask, body)  # the lungs are inside, the air outside is not
    # index 24.5 along x is the centre; LPS storage: world LPS x = 3 * i here (RAS x = -3 i)
    assert found.midline_at(6) == pytest.approx(3 * 24.5, abs=1e-6)


def test_edge_share_and_organ_margin():
    image, body, lung, affine = _phantom("CT")
    found = body_mask(image, affine, "CT")
    m = np.zeros(image.shape, bool)
    m[0:3, 18:22, 5:7] = True  # on the in-plane border, outside the body
    box = (slice(0, 3), slice(18, 22), slice(5, 7))
    where = placement(m, box, (0, 0, 0), np.array([1.0, 20.0, 6.0]), found)
    assert where.edge_fraction == pytest.approx(1 / 3) and where.body_fraction < 0.5
    top = np.zeros(image.shape, bool)
    top[20:23, 18:22, 0:2] = True  # the first slice is not an edge (organs leave the scanned range)
    assert placement(top, (slice(20, 23), slice(18, 22), slice(0, 2)), (0, 0, 0), np.array([21.0, 20.0, 0.5]),
                     found).edge_fraction == 0.0
    organ = np.zeros(image.shape, bool)
    organ[10:20, 10:30, :] = True
    lesion = np.zeros(image.shape, bool)
    lesion[20:22, 15:17, 5:6] = True  # 1-2 voxels (3-6 mm) beside the organ
    lbox = (slice(20, 22), slice(15, 17), slice(5, 6))
    spacing = np.array([3.0, 3.0, 5.0])
    assert fraction_near(lesion, lbox, organ, spacing, 10.0) == 1.0
    assert fraction_near(lesion, lbox, organ, spacing, 0.0) == 0.0
    assert fraction_near(lesion, lbox, organ, spacing, 4.0) == 0.5
