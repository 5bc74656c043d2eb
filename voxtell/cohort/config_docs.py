"""Config documentation generated from the JSON schema, so the docs cannot drift.

``config/README.md`` holds a hand-written introduction and, between two marker lines, the
table this module renders from ``workflow/schemas/config.schema.yaml``. Regenerate with::

    .venv/bin/python -m voxtell.cohort.config_docs workflow/schemas/config.schema.yaml config/README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

BEGIN = "<!-- BEGIN GENERATED FROM workflow/schemas/config.schema.yaml -->"
END = "<!-- END GENERATED -->"


def iter_keys(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted key, sub-schema) for every property, depth first, in schema order."""
    for name, sub in (schema.get("properties") or {}).items():
        key = f"{prefix}{name}"
        yield key, sub
        if sub.get("type") == "object":
            yield from iter_keys(sub, key + ".")


def _type(sub: dict[str, Any]) -> str:
    t = sub.get("type", "")
    text = " or ".join(t) if isinstance(t, list) else str(t)
    if "enum" in sub:
        text += " (" + ", ".join(map(str, sub["enum"])) + ")"
    if sub.get("type") == "array" and "items" in sub and "enum" in sub["items"]:
        text += " of " + ", ".join(sub["items"]["enum"])
    return text


def _default(sub: dict[str, Any]) -> str:
    if "default" not in sub or sub.get("type") == "object":
        return ""
    return "`" + json.dumps(sub["default"]) + "`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render(schema: dict[str, Any]) -> str:
    """Markdown table of every key: name, type, default, description."""
    lines = [BEGIN, "", "| key | type | default | description |", "|---|---|---|---|"]
    for key, sub in iter_keys(schema):
        lines.append(f"| `{key}` | {_cell(_type(sub))} | {_cell(_default(sub))} | {_cell(sub.get('description', ''))} |")
    lines += ["", END]
    return "\n".join(lines)


def generated_section(readme_text: str) -> str:
    """The generated part of a README (markers included), or '' if it has none."""
    start, end = readme_text.find(BEGIN), readme_text.find(END)
    if start < 0 or end < 0:
        return ""
    return readme_text[start : end + len(END)]


def update_readme(schema_path: str | Path, readme_path: str | Path) -> bool:
    """Replace the generated section of the README; returns True if it changed."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    readme = Path(readme_path)
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    new = render(schema)
    old = generated_section(text)
    updated = text.replace(old, new) if old else (text.rstrip() + "\n\n" + new + "\n")
    if updated != text:
        readme.write_text(updated, encoding="utf-8")
        return True
    return False


if __name__ == "__main__":  # pragma: no cover - maintenance command
    changed = update_readme(sys.argv[1], sys.argv[2])
    print("updated" if changed else "up to date", sys.argv[2])
