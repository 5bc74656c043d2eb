"""``voxtell predict``: segment images with free-text prompts (wraps ``Predictor``).

With one image file, ``-o`` is that study's output folder; with several images or a
folder, each study gets ``-o/{study_id}/``. Every image is segmented each time (there is no
skip rule here): a cohort with per-study prompts from reports, done markers and a status
table is the workflow's job (``snakemake``, see README.md). Prompts in ``--bank`` never
load the text encoder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voxtell.inference.errors import PromptError, UnreadableImageError
from voxtell.io.nifti import nifti_stem

log = logging.getLogger(__name__)

_SUFFIXES = (".nii.gz", ".nii")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images with free-text prompts (one mask per prompt + manifest.json)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="model folder (ours, or a released one with plans.json)")
    p.add_argument("-i", "--input", nargs="+", type=Path, default=[], help="image file(s) or a folder of .nii/.nii.gz")
    p.add_argument("-o", "--output", type=Path, help="output folder")
    p.add_argument("-p", "--prompt", nargs="+", default=[], help="prompt(s), quoted")
    p.add_argument("--bank", type=Path, help="embedding bank (.npz); prompts found there skip the text encoder")
    p.add_argument("--text-encoder", help="text encoder id or local folder (default: the model's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    p.add_argument("--tile-step", type=float, default=0.5, help="window step as a fraction of the patch (0.5)")
    p.add_argument("--sw-batch-size", type=int, default=2, help="patches per forward pass")
    p.add_argument("--prompt-chunk", type=int, help="prompts per decoder pass (default: fits memory)")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold for masks")
    p.add_argument("--save-probabilities", action="store_true", help="write float32 probabilities, not masks")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _images(inputs: list[Path]) -> list[Path]:
    images: list[Path] = []
    for path in inputs:
        if path.is_dir():
            images += sorted(q for q in path.iterdir() if q.name.endswith(_SUFFIXES))
        elif path.is_file():
            images.append(path)
        else:
            raise UnreadableImageError(f"input {path} does not exist")
    return images


def build_jobs(args: argparse.Namespace) -> list[dict]:
    """(study id, image, output folder) of each image given."""
    if not args.input or not args.output:
        raise PromptError("give -i IMAGE... -o OUT -p PROMPT...")
    if not args.prompt:
        raise PromptError("the prompt list is empty; give at least one prompt with -p")
    images = _images(args.input)
    if not images:
        raise UnreadableImageError(f"no .nii/.nii.gz images found in {', '.join(map(str, args.input))}")
    single = len(images) == 1 and args.input[0].is_file()
    return [
        {"study_id": nifti_stem(img), "image": str(img), "output_dir": str(args.output if single else args.output / nifti_stem(img))}
        for img in images
    ]


def run(args: argparse.Namespace) -> int:
    from voxtell.errors import VoxTellError
    from voxtell.inference.predictor import Predictor, PredictorConfig

    jobs = build_jobs(args)
    config = PredictorConfig(
        tile_step=args.tile_step,
        sw_batch_size=args.sw_batch_size,
        device=args.device,
        precision=args.precision,
        threshold=args.threshold,
        save_probabilities=args.save_probabilities,
        prompt_chunk=args.prompt_chunk,
        backend=args.backend,
        progress=not args.no_progress,
    )
    predictor = Predictor.from_model_dir(args.model, config, bank=args.bank, text_encoder=args.text_encoder)
    prompts = list(args.prompt)
    embeddings = predictor.embed(prompts) if len(jobs) > 1 else None  # once for all images
    failed = 0
    for job in jobs:
        try:
            predictor.predict_to_folder(job["image"], prompts, job["output_dir"], embeddings=embeddings,
                                        study_id=job["study_id"])
        except VoxTellError as exc:  # one bad image does not stop the others
            failed += 1
            log.error("%s failed: %s: %s", job["study_id"], type(exc).__name__, exc)
        else:
            log.info("%s: masks in %s", job["study_id"], job["output_dir"])
    return 1 if failed else 0
