"""Body-weight SUV for PET: the factor that turns Bq/ml into g/ml.

SUVbw = activity concentration [Bq/ml] x body weight [g] / injected dose [Bq], with the
dose decayed from injection to the time the image activity refers to. Images corrected
to the series start (DecayCorrection START) use the series time, unless the series time
is later than the earliest acquisition time (post-processed series), in which case the
acquisition time is used; images corrected to administration (ADMIN) need no decay.
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _time(date: str | None, time: str | None) -> dt.datetime | None:
    if not time:
        return None
    text = str(time).strip()
    hh, mm, ss = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
    day = dt.datetime.strptime(str(date).strip()[:8], "%Y%m%d") if date else dt.datetime(2000, 1, 1)
    return day + dt.timedelta(hours=hh, minutes=mm, seconds=ss)


def suv_factor(files: Sequence[Path]) -> SuvFactor:
    """Compute the body-weight SUV factor of a PET series from its headers."""
    import pydicom

    if not files:
        raise SuvError("no PET files given for SUV conversion")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ds = headers[0]
    units = str(ds.get("Units", "")).upper()
    if units == "GML":
        return SuvFactor(1.0, units, float(ds.get("PatientWeight") or 0), 0.0, 0.0, "", 0.0, 0.0, "already SUV")
    if units != "BQML":
        raise SuvError(f"PET Units is '{units}', body-weight SUV needs BQML; convert without --suv")
    weight = float(ds.get("PatientWeight") or 0)
    if weight <= 0:
        raise SuvError("PET series has no PatientWeight (0010,1030); SUV needs the body weight, convert without --suv")
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise SuvError("PET series lacks RadiopharmaceuticalInformationSequence; SUV needs the injected dose")
    rp = seq[0]
    dose = float(rp.get("RadionuclideTotalDose") or 0)
    half_life = float(rp.get("RadionuclideHalfLife") or 0)
    if dose <= 0 or half_life <= 0:
        raise SuvError("PET series lacks RadionuclideTotalDose or RadionuclideHalfLife; convert without --suv")
    decay_corr = str(ds.get("DecayCorrection", "START")).upper()
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
    decayed = dose * math.exp(-math.log(2) * seconds / half_life)
    factor = weight * 1000.0 / decayed
    return SuvFactor(factor, units, weight, dose, half_life, decay_corr, seconds, decayed, reference)
