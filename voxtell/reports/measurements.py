"""Lesion sizes written in reports ("3.4 x 2.8 cm", "12 mm", "1,2 cm"), in millimetres.

Only lengths are parsed (mm, cm); volumes (ml, cc, cm3), doses (Gy), SUVs and Hounsfield
units are not sizes and are ignored. A unit written once after several dimensions applies
to all of them ("3 x 2 x 1.5 cm").
"""

from __future__ import annotations

import re

_NUM = r"\d+(?:[.,]\d+)?"
_UNIT = r"(?P<unit{i}>mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?)"
_SEP = r"\s*(?:x|\u00d7|by|\*)\s*"
_MEASURE = re.compile(
    rf"(?<![\w.,])(?P<d1>{_NUM})\s*{_UNIT.format(i=1)}?"
    rf"(?:{_SEP}(?P<d2>{_NUM})\s*{_UNIT.format(i=2)}?)?"
    rf"(?:{_SEP}(?P<d3>{_NUM})\s*{_UNIT.format(i=3)}?)?"
    rf"(?![\w\u00b3])",
    re.IGNORECASE,
)


def _to_mm(value: str, unit: str) -> float:
    v = float(value.replace(",", "."))
    return round(v * 10.0, 3) if unit.lower().startswith("c") else round(v, 3)


def parse_measurements_mm(text: str) -> list[float]:
    """All lengths in ``text`` in millimetres, largest first."""
    sizes: list[float] = []
    for m in _MEASURE.finditer(text):
        dims = [m.group("d1"), m.group("d2"), m.group("d3")]
        units = [m.group("unit1"), m.group("unit2"), m.group("unit3")]
        n = sum(d is not None for d in dims)
        last_unit = next((u for d, u in zip(reversed(dims), reversed(units)) if d is not None and u), None)
        if last_unit is None:
            continue  # a bare number ("segment 7", "level 2") is not a size
        if n == 1 and units[0] is None:
            continue
        for d, u in zip(dims, units):
            if d is not None:
                sizes.append(_to_mm(d, u or last_unit))
    return sorted(sizes, reverse=True)
