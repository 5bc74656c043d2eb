"""The predictor: load a model once, then segment many images with many prompts.

A Snakemake job keeps one ``Predictor`` for a whole shard of studies::

    predictor = Predictor.from_model_dir("models/voxtell-v1", PredictorConfig(device="cuda"),
                                         bank="embeddings/bank.npz")
    predictor.predict_to_folder(image, prompts, out_dir)   # once per study

Which studies need segmenting (the skip rule) is the segment stage's business
(``voxtell.cohort.stage_segment``: done markers that vouch for the masks), not the
predictor's: there is one way to run a cohort.

Output contract (``predict_to_folder``; other stages read it): ``out_dir/{prompt_id}.nii.gz``
(uint8 0/1, or float32 probabilities with ``save_probabilities``) on the input image's grid
(same affine, shape and orientation) and ``out_dir/manifest.json``. A run that fails or is
cancelled leaves no partial output: files are built in a hidden sibling folder and
published at the end, the manifest last.

Peak memory (host RAM, CPU run; on CUDA the accumulator and activations live on the GPU).
With N_in voxels stored with b_in bytes each, N_net voxels of the padded crop (<= N_in for
images larger than a patch), P prompts, Y x X the in-plane size of the crop in network
space, depth d = patch_z + (z-span of one sw batch) <= 2 x patch_z, b_out = 1 (masks) or
4 (probabilities) and A the backend's activations for one forward:

    preprocessing:  N_in * b_in          (stored values, e.g. int16)  + 4 * N_net
    sliding window: 4 * N_net            (z-scored float32 image)
                    + 4 * P * d * Y * X  (float32 accumulator, about one patch deep)
                    + b_out * P * N_net  (finished masks/probabilities)  + A
    writing:        b_out * P * N_net + 2 * b_out * N_in (one restored mask + its encoder)

so a 512x512x800 int16 CT (N = 2.1e8) with 4 prompts peaks near (2 + 4 + 4) N + 0.5 GB
(accumulator) ~ 2.5 GB plus A. Measured (tests/bench/bench_predict.py --large 512 512 400,
4 prompts, network-free backend): +1.50 GB for the formula's 1.51 GB, against +4.10 GB for
the released loop (float64 image, hole filling, float16 sums over the whole volume).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch

import voxtell
from voxtell.errors import VoxTellError
from voxtell.cohort.layout import MANIFEST  # the results layout owns the file name
from voxtell.inference.backends import BACKENDS, PRECISIONS, Backend, TorchBackend, check_precision, resolve_device
from voxtell.inference.errors import InferenceConfigError, PromptError
from voxtell.inference.preprocessing import ImageLike, PreprocessState, preprocess, restore
from voxtell.inference.sliding_window import OutputMode, sliding_window
from voxtell.io.atomic import write_json_atomic
from voxtell.io.nifti import nifti_stem
from voxtell.model.folder import RELEASED_TEXT_ENCODER
from voxtell.prompts import normalize_prompt, prompt_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorConfig:
    """How to run inference; the model itself comes from the model folder."""

    tile_step: float = 0.5
    sw_batch_size: int = 2
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    threshold: float = 0.5
    save_probabilities: bool = False
    prompt_chunk: int | None = None  # prompts per decoder pass; None: the network's default
    backend: str = "torch"  # torch | onnx
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.tile_step <= 1.0:
            raise InferenceConfigError(f"tile_step must be in (0, 1], got {self.tile_step}; the released value is 0.5")
        if self.sw_batch_size < 1:
            raise InferenceConfigError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if not 0.0 < self.threshold < 1.0:
            raise InferenceConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.precision not in PRECISIONS:
            raise InferenceConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.backend not in BACKENDS:
            raise InferenceConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.prompt_chunk is not None and self.prompt_chunk < 1:
            raise InferenceConfigError("prompt_chunk must be >= 1 or None")


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records about the model."""

    model_id: str
    sha256: str | None = None
    preset: str | None = None
    text_encoder: str | None = None
    embedding_dim: int | None = None

    def manifest(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "sha256": self.sha256, "preset": self.preset, "text_encoder": self.text_encoder}


@dataclass
class PredictionResult:
    """Masks (uint8) or probabilities (float32) of one image, on its original grid."""

    prompts: list[str]
    prompt_ids: list[str]
    masks: list[np.ndarray]
    affine: np.ndarray
    header: Any
    timings: dict[str, float] = field(default_factory=dict)

    def to_nifti(self, index: int) -> nib.Nifti1Image:
        return _nifti_like(self.masks[index], self.affine, self.header)


def _split_prompts(prompts: Sequence[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Prompts given as strings or dicts with a "prompt" key -> (texts, extra metadata)."""
    texts, extras = [], []
    for item in prompts:
        if isinstance(item, Mapping):
            if "prompt" not in item:
                raise PromptError(f"prompt entry {dict(item)!r} has no 'prompt' key")
            texts.append(str(item["prompt"]))
            extras.append({k: v for k, v in item.items() if k != "prompt"})
        else:
            texts.append(str(item))
            extras.append({})
    if not texts:
        raise PromptError("the prompt list is empty; give at least one prompt (-p) or finding")
    for text in texts:
        if not normalize_prompt(text):
            raise PromptError("a prompt is empty or only white space; remove it")
    return texts, extras


def _nifti_like(data: np.ndarray, affine: np.ndarray, header: Any) -> nib.Nifti1Image:
    """A NIfTI with the source's affine and, where it has one, its NIfTI header fields."""
    hdr = header.copy() if isinstance(header, nib.Nifti1Header) else None
    out = nib.Nifti1Image(data, affine, header=hdr)
    out.set_data_dtype(data.dtype)
    out.header.set_slope_inter(1.0, 0.0)
    if hdr is None:
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
    return out


def _study_id_of(image: ImageLike) -> str:
    return nifti_stem(image) if isinstance(image, (str, os.PathLike)) else "image"


class Predictor:
    """Sliding-window VoxTell inference with a backend loaded once."""

    def __init__(
        self,
        backend: Backend,
        patch_size: Sequence[int],
        model: ModelInfo,
        config: PredictorConfig = PredictorConfig(),
        *,
        bank: Any = None,
        text_encoder: str | None = None,
    ) -> None:
        self.backend = backend
        self.patch_size = tuple(int(p) for p in patch_size)
        self.config = config
        self.model = model
        if isinstance(bank, (str, os.PathLike)):
            from voxtell.text import EmbeddingBank

            bank = EmbeddingBank.load(bank)
        self.bank = bank
        self.encoder_id, self.encoder_path = self._encoder(text_encoder)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_network(
        cls,
        network: torch.nn.Module,
        config: PredictorConfig = PredictorConfig(),
        model: ModelInfo | None = None,
        **kwargs: Any,
    ) -> "Predictor":
        """Wrap an in-memory network (training evaluation, tests) in a torch backend."""
        backend = TorchBackend(network, config.device, config.precision, config.prompt_chunk)
        cfg = getattr(network, "config", None)
        patch = tuple(cfg.patch_size) if cfg is not None else tuple(kwargs.pop("patch_size"))
        dim = getattr(cfg, "text_embedding_dim", None)
        model = model or ModelInfo(model_id="in-memory", embedding_dim=dim)
        return cls(backend, patch, model, config, **kwargs)

    @classmethod
    def from_model_dir(
        cls,
        model_dir: str | os.PathLike,
        config: PredictorConfig = PredictorConfig(),
        *,
        bank: Any = None,
        text_encoder: str | None = None,
        sha_cache: str | os.PathLike | None = None,
    ) -> "Predictor":
        """Load a model folder (ours, or a released one with plans.json) once; ``sha_cache``
        reuses a cached checkpoint checksum (``voxtell.model.folder.checkpoint_sha256``)."""
        from voxtell.model import load_model_dir

        device = resolve_device(config.device)
        check_precision(config.precision, device)
        loaded = load_model_dir(model_dir, device=device, prompt_chunk=config.prompt_chunk, sha_cache=sha_cache)
        meta = loaded.meta
        info = ModelInfo(
            model_id=str(getattr(meta, "model_id", None) or Path(model_dir).name),
            sha256=getattr(meta, "sha256", None),
            preset=getattr(meta, "preset", None),
            text_encoder=getattr(meta, "text_encoder", None) or RELEASED_TEXT_ENCODER,
            embedding_dim=getattr(meta, "embedding_dim", None) or loaded.config.text_embedding_dim,
        )
        if config.backend == "onnx":
            from voxtell.inference.onnx_backend import load_onnx_backend

            backend: Backend = load_onnx_backend(
                Path(model_dir), device=device, precision=config.precision, expected_sha256=info.sha256
            )
        else:
            backend = TorchBackend(loaded.network, device, config.precision, config.prompt_chunk)
        log.info("loaded model %s (%s) on %s with backend %s", info.model_id, info.preset, device, backend.name)
        return cls(backend, loaded.config.patch_size, info, config, bank=bank, text_encoder=text_encoder)

    def _encoder(self, text_encoder: str | None) -> tuple[str | None, str | None]:
        """(encoder id, local path): ``text_encoder`` may be an id or a staged folder."""
        default = self.model.text_encoder or RELEASED_TEXT_ENCODER
        if text_encoder is None:
            return default, None
        if Path(text_encoder).exists():
            return default, str(text_encoder)
        return text_encoder, None

    # ------------------------------------------------------------------ embeddings
    def embed(self, prompts: Sequence[str]) -> np.ndarray:
        """(P, D) float32 embeddings; the text encoder loads only for prompts not in the bank."""
        if not prompts:
            raise PromptError("the prompt list is empty; give at least one prompt")
        from voxtell.text import resolve_embeddings

        return resolve_embeddings(
            list(prompts),
            bank=self.bank,
            encoder_id=self.encoder_id,
            expected_dim=self.model.embedding_dim,
            encoder_path=self.encoder_path,
            device=str(self.backend.device),
        )

    def _embeddings_for(self, prompts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is None:
            return self.embed(prompts)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 3 and emb.shape[1] == 1:
            emb = emb[:, 0]
        if emb.ndim != 2 or emb.shape[0] != len(prompts):
            raise PromptError(f"{len(prompts)} prompts but embeddings of shape {emb.shape}; give one row per prompt")
        if self.model.embedding_dim and emb.shape[1] != self.model.embedding_dim:
            raise PromptError(
                f"embeddings have dimension {emb.shape[1]} but the model expects {self.model.embedding_dim}; "
                "embed with the model's text encoder"
            )
        if not np.isfinite(emb).all():
            raise PromptError("embeddings contain NaN or infinite values")
        return emb

    # ------------------------------------------------------------------ core
    def _segment(self, image: ImageLike, embeddings: np.ndarray) -> tuple[Any, PreprocessState, np.ndarray, dict]:
        """Network-space outputs (P, *network_shape) of one image."""
        t0 = time.perf_counter()
        img, pre = preprocess(image, self.patch_size)
        t1 = time.perf_counter()
        mode = OutputMode("probability" if self.config.save_probabilities else "mask", self.config.threshold)
        out = sliding_window(
            pre.data,
            embeddings,
            self.backend,
            self.patch_size,
            tile_step=self.config.tile_step,
            sw_batch_size=self.config.sw_batch_size,
            output=mode,
            progress=self.config.progress,
            desc=_study_id_of(image),
        )
        state = pre.state
        del pre
        t2 = time.perf_counter()
        return img, state, out, {"preprocess_s": t1 - t0, "inference_s": t2 - t1}

    def predict(
        self,
        image: ImageLike,
        prompts: Sequence[str] | None = None,
        *,
        embeddings: np.ndarray | None = None,
    ) -> PredictionResult:
        """Segment one image (path or nibabel image) for prompts, or for given embeddings."""
        t0 = time.perf_counter()
        if prompts is None:
            if embeddings is None:
                raise PromptError("give prompts or embeddings")
            prompts = [f"embedding {i}" for i in range(len(embeddings))]
        texts, _ = _split_prompts(prompts)
        emb = self._embeddings_for(texts, embeddings)
        img, state, out, timings = self._segment(image, emb)
        masks = [restore(out[i], state) for i in range(len(texts))]
        timings["total_s"] = time.perf_counter() - t0
        return PredictionResult(texts, [prompt_id(t) for t in texts], masks, state.affine, img.header, timings)

    def predict_to_folder(
        self,
        image: ImageLike,
        prompts: Sequence[Any],
        out_dir: str | os.PathLike,
        *,
        embeddings: np.ndarray | None = None,
        study_id: str | None = None,
    ) -> dict[str, Any]:
        """Segment one image and publish ``{prompt_id}.nii.gz`` files plus ``manifest.json``.

        ``prompts`` are strings or dicts ``{"prompt": ..., **extra}``; extra keys (e.g.
        ``source``, ``finding_id``) are copied into the prompt's manifest entry. Prompts with
        the same normalised text share one file and one inference. Returns the manifest.
        """
        t0 = time.perf_counter()
        texts, extras = _split_prompts(prompts)
        unique = list(dict.fromkeys(prompt_id(t) for t in texts))
        first = {pid: i for i, pid in reversed(list(enumerate(prompt_id(t) for t in texts)))}
        if embeddings is not None:
            emb_all = self._embeddings_for(texts, embeddings)
            emb = emb_all[[first[pid] for pid in unique]]
        else:
            emb = self.embed([texts[first[pid]] for pid in unique])
        img, state, out, timings = self._segment(image, emb)

        out_dir = Path(out_dir)
        t1 = time.perf_counter()
        stats: dict[str, tuple[bool, int]] = {}
        with _staged_folder(out_dir) as stage:
            for k, pid in enumerate(unique):
                data = restore(out[k], state)
                voxels = int(np.count_nonzero(data > self.config.threshold)) if data.dtype != np.uint8 else int(np.count_nonzero(data))
                stats[pid] = (voxels == 0, voxels)
                nib.save(_nifti_like(data, state.affine, img.header), str(stage / f"{pid}.nii.gz"))
                del data
            del out
            timings["write_s"] = time.perf_counter() - t1
            timings["total_s"] = time.perf_counter() - t0
            manifest = {
                "study_id": study_id or _study_id_of(image),
                "image": str(image) if isinstance(image, (str, os.PathLike)) else None,
                "model": self.model.manifest(),
                "backend": self.backend.name,
                "device": str(self.backend.device),
                "precision": self.config.precision,
                "pipeline_version": voxtell.__version__,
                "threshold": self.config.threshold,
                "save_probabilities": self.config.save_probabilities,
                "tile_step": self.config.tile_step,
                "timings": {k: round(timings[k], 4) for k in ("preprocess_s", "inference_s", "write_s", "total_s")},
                "prompts": [
                    {
                        "prompt_id": prompt_id(text),
                        "prompt": text,
                        "file": f"{prompt_id(text)}.nii.gz",
                        "empty": stats[prompt_id(text)][0],
                        "voxels": stats[prompt_id(text)][1],
                        **extra,
                    }
                    for text, extra in zip(texts, extras)
                ],
            }
            write_json_atomic(stage / MANIFEST, manifest)
        return manifest


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class _staged_folder:
    """Build outputs in a hidden sibling folder; publish on success, delete on any failure.

    A new ``out_dir`` appears with one rename. An existing one first loses its manifest
    (so readers see it as unfinished), then receives each file by rename, manifest last.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def __enter__(self) -> Path:
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.partial-", dir=self.out_dir.parent))
        os.chmod(self.stage, 0o777 & ~_UMASK)  # mkdtemp makes 0700; outputs are shared on clusters
        return self.stage

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._publish()
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)

    def _publish(self) -> None:
        for path in self.stage.iterdir():
            os.chmod(path, 0o666 & ~_UMASK)
        if not self.out_dir.exists():
            try:
                os.rename(self.stage, self.out_dir)
                return
            except OSError:  # created concurrently: fall back to file-by-file
                pass
        (self.out_dir / MANIFEST).unlink(missing_ok=True)
        names = sorted(p.name for p in self.stage.iterdir() if p.name != MANIFEST)
        for name in names:
            os.replace(self.stage / name, self.out_dir / name)
        os.replace(self.stage / MANIFEST, self.out_dir / MANIFEST)
