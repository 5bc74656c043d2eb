"""Retraining: start from a model folder, train on new data, compare, promote or not.

A clinic adds a structure, or corrects masks on its own scanners, and retrains nightly.
The child starts from the parent's weights with a lower learning rate (optionally with a
frozen encoder), is written to a new folder that records ``parent_sha256``, and both are
evaluated on the same held-out set. ``models/current`` (a symlink) moves to the child only
if no old concept got worse by more than ``tolerance`` Dice — a nightly job can never
silently replace a good model with a worse one.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxtell.data.vocabulary import Vocabulary
from voxtell.errors import ConfigError
from voxtell.inference.backends import resolve_device
from voxtell.io.atomic import write_json_atomic
from voxtell.training.config import RETRAIN_DEFAULTS, TrainConfig
from voxtell.training.evaluate import evaluate, format_table
from voxtell.training.trainer import BANK, STATE_DIR, TrainResult, build_embedding_table, train

log = logging.getLogger(__name__)

#: Defaults that differ from training from scratch: 10x lower learning rate, shorter run.


@dataclass(frozen=True)
class RetrainResult:
    child_dir: Path
    parent_dice: dict[str, float]
    child_dice: dict[str, float]
    old_concepts: tuple[str, ...]
    new_concepts: tuple[str, ...]
    promoted: bool
    reason: str
    train: TrainResult


def promote(link: str | Path, target: str | Path) -> None:
    """Point the symlink ``link`` at ``target`` atomically (relative when possible)."""
    link, target = Path(link), Path(target).resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        dest = os.path.relpath(target, link.parent.resolve())
    except ValueError:  # different drives
        dest = str(target)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(dest, tmp)
    if link.exists() and not link.is_symlink():
        tmp.unlink()
        raise ConfigError(f"{link} exists and is not a symlink; move it away before promoting models")
    os.replace(tmp, link)


def compare(parent: dict[str, float], child: dict[str, float], old: list[str], tolerance: float) -> tuple[bool, str]:
    worse = {c: (parent[c], child.get(c, 0.0)) for c in old if c in parent and child.get(c, 0.0) < parent[c] - tolerance}
    if worse:
        detail = ", ".join(f"{c}: {p:.3f} -> {ch:.3f}" for c, (p, ch) in sorted(worse.items()))
        return False, f"not promoted: old concepts dropped by more than {tolerance:.3f} Dice ({detail})"
    return True, f"promoted: no old concept dropped by more than {tolerance:.3f} Dice"


def retrain(
    from_model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    vocabulary: Vocabulary | str | Path,
    config: TrainConfig = RETRAIN_DEFAULTS,
    *,
    heldout: str | Path | None = None,
    tolerance: float = 0.05,
    promote_link: str | Path | None = None,
    progress: bool = True,
    **train_kwargs: Any,
) -> RetrainResult:
    """Fine-tune ``from_model_dir`` on ``data``; write ``out_dir``; promote if not worse.

    ``heldout`` is an nnU-Net dataset used to compare parent and child (default: the
    validation cases split off ``data``). ``promote_link`` is the ``models/current``
    symlink (None: never promote).
    """
    from voxtell.model import load_model_dir
    from voxtell.model.checkpoint import META_FILENAME, ModelMeta, read_model_meta
    from voxtell.training.dataset import load_training_data, open_dataset

    if tolerance < 0:
        raise ConfigError("tolerance must be >= 0")
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.load(vocabulary)
    parent_dir, out = Path(from_model_dir), Path(out_dir)
    if parent_dir.resolve() == out.resolve():
        raise ConfigError("the retrained model needs its own folder: -o must differ from --from")
    _, parent_meta = read_model_meta(parent_dir)
    cfg = replace(config, text_encoder=parent_meta.text_encoder, preset=parent_meta.preset or config.preset)
    known = parent_meta.training.get("concepts") if parent_meta.training else None
    if known is not None and not cfg.focus_concepts:
        # Concepts the parent never saw get more of the patches, so a short run learns them.
        _, data_concepts = open_dataset(data, vocab)
        unseen = tuple(sorted(c for c in data_concepts if c not in known))
        if unseen:
            log.info("concepts new to the parent, centred on and negated %gx as often: %s", cfg.focus_weight,
                     ", ".join(unseen))
            cfg = replace(cfg, focus_concepts=unseen)

    result = train(data, vocab, out, cfg, val_data=heldout, init_from=parent_dir, final_validation=False,
                   progress=progress, **train_kwargs)
    if not result.finished:
        reason = f"stopped at step {result.step} (stop_after); run again with the same settings to resume"
        return RetrainResult(out, {}, {}, (), (), False, reason, result)

    parent = load_model_dir(parent_dir)
    child = load_model_dir(out)
    patch = child.config.patch_size
    table, matrix = build_embedding_table(vocab, cfg.text_encoder, child.config.text_embedding_dim,
                                          out / STATE_DIR / BANK)

    def embed(prompts):
        return matrix[[table[p] for p in prompts]].numpy()

    eval_root = heldout if heldout is not None else data
    eval_ids = None if heldout is not None else list(result.val_case_ids)
    if eval_ids is not None and not eval_ids:
        raise ConfigError("no held-out cases to compare parent and child; pass --heldout DIR")
    eval_set = load_training_data(eval_root, vocab, patch, case_ids=eval_ids, progress=progress)
    prompts = {c: list(vocab.concept(c).eval_prompts) or [c] for c in eval_set.concepts}
    device = resolve_device(cfg.device)  # evaluate where we trained: a GPU run should not score on the CPU
    p_res = evaluate(parent.network, eval_set.cases, eval_set.concepts, prompts, embed, patch, device, progress=progress)
    c_res = evaluate(child.network, eval_set.cases, eval_set.concepts, prompts, embed, patch, device, progress=progress)
    p_dice = {c: r["dice"] for c, r in p_res.items()}
    c_dice = {c: r["dice"] for c, r in c_res.items()}

    old = sorted(c for c in c_dice if (known is None or c in known))
    new = sorted(c for c in c_dice if c not in old)
    ok, reason = compare(p_dice, c_dice, old, tolerance)
    log.info("parent vs child on %d held-out cases:\n%s\n%s", len(eval_set.cases),
             format_table({"parent": p_res, "child": c_res}), reason)

    report = {
        "parent": {"model_id": parent.meta.model_id, "sha256": parent.meta.sha256, "dice": p_dice},
        "child": {"model_id": child.meta.model_id, "sha256": child.meta.sha256, "dice": c_dice},
        "heldout": str(Path(eval_root).resolve()), "heldout_case_ids": [c.case_id for c in eval_set.cases],
        "old_concepts": old, "new_concepts": new, "tolerance": tolerance, "promoted": False, "reason": reason,
    }
    if ok and promote_link is not None:
        promote(promote_link, out)
        report["promoted"] = True
        report["promote_link"] = str(promote_link)
    elif not ok:
        log.warning(reason)
    write_json_atomic(out / "retrain_evaluation.json", report)
    # Record the comparison in the child's metadata (weights and sha256 unchanged).
    net_cfg, meta = read_model_meta(out)
    meta = ModelMeta(**{**meta.__dict__, "training": {**meta.training, "retrain_evaluation": report}})
    write_json_atomic(out / META_FILENAME, meta.to_dict(net_cfg))
    return RetrainResult(out, p_dice, c_dice, tuple(old), tuple(new), bool(report["promoted"]), reason, result)

