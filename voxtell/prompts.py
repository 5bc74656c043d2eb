"""Prompt normalisation and stable prompt ids.

Prompts are data, never file names: a report sentence can be hundreds of characters long
and contain path separators or shell metacharacters. Every stage names a prompt by
``prompt_id``: a short ASCII slug (for humans) plus a hash of the normalised prompt (for
uniqueness), so the same prompt gets the same id in every study, run and stage.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_NON_SLUG = re.compile(r"[^a-z0-9]+")

SLUG_MAX = 32
HASH_LEN = 10


def normalize_prompt(prompt: str) -> str:
    """Lower-case, NFC-normalise, drop control characters and collapse white space.

    This is the key of embedding banks and the input of ``prompt_id``; the released model
    also lower-cases prompts before encoding them.
    """
    text = unicodedata.normalize("NFC", str(prompt))
    text = _CONTROL.sub(" ", text)
    return _WS.sub(" ", text).strip().lower()


def slugify(text: str, sep: str = "-", max_len: int = SLUG_MAX) -> str:
    """Lower-case ASCII slug for file names: accents dropped (NFKD), other runs become ``sep``.

    Returns ``""`` when nothing is left, so callers choose their own fallback name.
    """
    ascii_text = unicodedata.normalize("NFKD", str(text).lower()).encode("ascii", "ignore").decode()
    return _NON_SLUG.sub(sep, ascii_text).strip(sep)[:max_len].rstrip(sep)


def prompt_id(prompt: str) -> str:
    """Stable, file-name-safe id: ``<slug>-<sha1[:10]>`` of the normalised prompt."""
    norm = normalize_prompt(prompt)
    slug = slugify(norm) or "prompt"
    digest = hashlib.sha1(norm.encode("utf-8")).hexdigest()[:HASH_LEN]
    return f"{slug}-{digest}"
