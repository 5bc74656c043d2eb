"""Prompt files: the one reader for ``voxtell embed --prompts-file`` and the workflow's
``prompts.file``, so a file that works in one works in the other.

Plain text holds one prompt per line (blank lines and ``#`` comment lines are ignored);
``.jsonl`` holds one object per line with a ``prompt`` field (findings files qualify).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from voxtell.errors import InputError


def read_prompts_file(path: str | os.PathLike) -> list[str]:
    """Prompts of a text or JSONL file, in file order; ``InputError`` names the bad line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompts file {path} ({exc}); give a UTF-8 text or JSONL file") from exc
    prompts: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            try:
                prompts.append(str(json.loads(line)["prompt"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{path} line {n}: not a JSON object with a 'prompt' field ({exc})") from exc
        elif not line.startswith("#"):
            prompts.append(line)
    return prompts
