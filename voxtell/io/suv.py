"""Body-weight SUV for PET: the factor that turns Bq/ml into g/ml.

SUVbw = activity concentration [Bq/ml] x body weight [g] / injected dose [Bq], with the
dose decayed from injection to the time the image activity refers to. Images corrected
to the series start (DecayCorrection START) use the series time, unless the series time
is later than the earliest acquisition time (post-processed series), in which case the
acquisition time is used; images corrected to administration (ADMIN) need no decay.

Header values are checked before they are trusted, because a wrong one gives a silent wrong
SUV: a weight of 75,000 "kg" (grams entered as kilograms) or a dose in MBq where Bq is
expected is refused with a typed ``SuvError``; unusual but possible values (a 15 kg child,
a scan 5 hours after injection) become recorded warnings. A series already in SUV (Units
GML) is recognised as such, never labelled Bq/ml.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from voxtell.io.errors import SuvError


@dataclass(frozen=True)
class SuvFactor:
    """The factor and the facts it was computed from (recorded in series.json)."""

    factor: float
    units: str
    patient_weight_kg: float
    injected_dose_bq: float
    half_life_s: float
    decay_correction: str
    decay_seconds: float
    decayed_dose_bq: float
    reference: str  # which time the dose was decayed to
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


#: Refused outside these bounds (typed error): no patient, no clinical dose lies there.
WEIGHT_KG_LIMITS = (0.5, 500.0)
DOSE_BQ_LIMITS = (1e6, 5e10)  # 1 MBq .. 50 GBq; below 1e6 the header is almost surely in MBq
#: Warned outside these bounds: possible, but worth a look.
WEIGHT_KG_USUAL = (20.0, 250.0)
DOSE_BQ_USUAL = (3.7e7, 1.5e9)
DECAY_S_USUAL = (0.0, 5 * 3600.0)
SUV_MAX_USUAL = 100.0

def _number(ds: Any, keyword: str, what: str) -> float:
    """A header number; a malformed value is a typed error, never a crash."""
    value = ds.get(keyword)
    if value in (None, ""):
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SuvError(f"PET {what} ({keyword}) is {value!r}, not a number; fix the header or convert without --suv") from None
    if not math.isfinite(number):
        raise SuvError(f"PET {what} ({keyword}) is {number}; fix the header or convert without --suv")
    return number


def check_plausible(weight_kg: float, dose_bq: float, decay_s: float) -> list[str]:
    """Refuse impossible SUV inputs (``SuvError``); return warnings for unusual ones."""
    lo, hi = WEIGHT_KG_LIMITS
    if not lo <= weight_kg <= hi:
        hint = " (grams entered as kilograms?)" if weight_kg > hi else ""
        raise SuvError(
            f"PatientWeight {weight_kg:g} kg is not a plausible body weight{hint}; SUV would be wrong by the same "
            "factor. Correct the header or convert without --suv"
        )
    lo, hi = DOSE_BQ_LIMITS
    if not lo <= dose_bq <= hi:
        hint = " (MBq written where DICOM wants Bq?)" if dose_bq < lo else ""
        raise SuvError(
            f"RadionuclideTotalDose {dose_bq:g} Bq is not a plausible injected dose{hint}; correct the header "
            "or convert without --suv"
        )
    warnings = []
    if not WEIGHT_KG_USUAL[0] <= weight_kg <= WEIGHT_KG_USUAL[1]:
        warnings.append(f"unusual PatientWeight {weight_kg:g} kg; check it, SUV scales with it")
    if not DOSE_BQ_USUAL[0] <= dose_bq <= DOSE_BQ_USUAL[1]:
        warnings.append(f"unusual injected dose {dose_bq / 1e6:g} MBq; check RadionuclideTotalDose")
    if not DECAY_S_USUAL[0] <= decay_s <= DECAY_S_USUAL[1]:
        warnings.append(f"scan {decay_s / 3600:.1f} h after injection; check the injection and series times")
    return warnings


def suv_range_warnings(suv_max: float | None, what: str = "image") -> list[str]:
    """A warning when the largest SUV is beyond what FDG uptake reaches (wrong weight, dose or units)."""
    if suv_max is not None and math.isfinite(suv_max) and suv_max > SUV_MAX_USUAL:
        return [f"SUVmax {suv_max:.1f} in the {what} exceeds {SUV_MAX_USUAL:g}: check PatientWeight, dose and Units"]
    return []


def _time(date: str | None, time: str | None) -> dt.datetime | None:
    if not time:
        return None
    text = str(time).strip()
    try:
        hh, mm, ss = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
        day = dt.datetime.strptime(str(date).strip()[:8], "%Y%m%d") if date else dt.datetime(2000, 1, 1)
    except ValueError:
        raise SuvError(f"PET header time {text!r} (date {date!r}) is not a DICOM TM/DA value; fix the header") from None
    if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61):
        raise SuvError(f"PET header time {text!r} is out of range; fix the header")
    return day + dt.timedelta(hours=hh, minutes=mm, seconds=ss)


def suv_factor(files: Sequence[Path]) -> SuvFactor:
    """Compute the body-weight SUV factor of a PET series from its headers."""
    import pydicom

    if not files:
        raise SuvError("no PET files given for SUV conversion")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ds = headers[0]
    units = str(ds.get("Units", "")).strip().upper()
    if units == "GML":  # already body-weight SUV (g/ml): scaling again would be wrong
        return SuvFactor(1.0, units, 0.0, 0.0, 0.0, "", 0.0, 0.0, "already SUV (Units GML)")
    if units != "BQML":
        raise SuvError(f"PET Units is '{units or 'missing'}', body-weight SUV needs BQML; convert without --suv")
    weight = _number(ds, "PatientWeight", "patient weight")
    if weight <= 0:
        raise SuvError("PET series has no PatientWeight (0010,1030); SUV needs the body weight, convert without --suv")
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise SuvError("PET series lacks RadiopharmaceuticalInformationSequence; SUV needs the injected dose")
    rp = seq[0]
    dose = _number(rp, "RadionuclideTotalDose", "injected dose")
    half_life = _number(rp, "RadionuclideHalfLife", "half-life")
    if dose <= 0 or half_life <= 0:
        raise SuvError("PET series lacks RadionuclideTotalDose or RadionuclideHalfLife; convert without --suv")
    decay_corr = str(ds.get("DecayCorrection", "") or "").strip().upper()
    assumed = []
    if not decay_corr:
        decay_corr = "START"
        assumed.append("PET DecayCorrection is missing; assumed START (decay-corrected to the series start), as scanners write")
    if decay_corr not in ("START", "ADMIN"):
        raise SuvError(
            f"PET DecayCorrection is '{decay_corr}'; body-weight SUV is defined here for START or ADMIN only "
            "(NONE needs per-frame decay); convert without --suv"
        )
    acq_times = [
        t for t in (_time(h.get("AcquisitionDate") or h.get("SeriesDate"), h.get("AcquisitionTime")) for h in headers) if t
    ]
    series_time = _time(ds.get("SeriesDate"), ds.get("SeriesTime"))
    if rp.get("RadiopharmaceuticalStartDateTime"):
        text = str(rp.RadiopharmaceuticalStartDateTime)
        injection = _time(text[:8], text[8:])
    else:
        injection = _time(ds.get("SeriesDate") or ds.get("AcquisitionDate"), rp.get("RadiopharmaceuticalStartTime"))
    if decay_corr == "ADMIN":
        seconds, reference = 0.0, "administration (images decay-corrected to injection)"
    else:
        if injection is None:
            raise SuvError("PET series lacks RadiopharmaceuticalStartTime; SUV needs the injection time")
        first_acq = min(acq_times) if acq_times else None
        if series_time is not None and (first_acq is None or series_time <= first_acq):
            ref_time, reference = series_time, "series time"
        elif first_acq is not None:
            ref_time, reference = first_acq, "earliest acquisition time"
        else:
            raise SuvError("PET series has neither SeriesTime nor AcquisitionTime; SUV needs the scan time")
        seconds = (ref_time - injection).total_seconds()
        if seconds < 0:
            raise SuvError(
                f"injection time is {-seconds:.0f} s after the scan reference time; check the PET header times"
            )
    warnings = assumed + check_plausible(weight, dose, seconds)
    decayed = dose * math.exp(-math.log(2) * seconds / half_life)
    factor = weight * 1000.0 / decayed
    return SuvFactor(factor, units, weight, dose, half_life, decay_corr, seconds, decayed, reference, tuple(warnings))
