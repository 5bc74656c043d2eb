"""The torch-free model-folder reader: one place for names, metadata and the checksum cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

from voxtell.model.folder import CHECKPOINT, META, checkpoint_sha256, model_exists, model_ref


def test_checkpoint_is_hashed_once_per_size_and_mtime(tmp_path):
    ckpt = tmp_path / "fold_0" / "checkpoint_final.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights-1")
    cache = tmp_path / "cache.json"
    first = checkpoint_sha256(ckpt, cache)
    assert first == hashlib.sha256(b"weights-1").hexdigest() and json.loads(cache.read_text())
    stat = ckpt.stat()
    ckpt.write_bytes(b"weights-2")  # same size; put the old time back: the cache answers without reading
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint_sha256(ckpt, cache) == first
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # any change of time: hashed again
    assert checkpoint_sha256(ckpt, cache) == hashlib.sha256(b"weights-2").hexdigest()
    assert checkpoint_sha256(ckpt) == hashlib.sha256(b"weights-2").hexdigest()  # no cache: always read


def test_reader_is_torch_free_and_shared_with_the_loader(tmp_path):
    from voxtell.model import checkpoint

    assert checkpoint.CHECKPOINT_RELPATH == CHECKPOINT and checkpoint.META_FILENAME == META
    folder = tmp_path / "m"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"w")
    (folder / META).write_text(json.dumps({"model_id": "m1", "text_encoder": "enc", "embedding_dim": 8, "sha256": "ab"}))
    assert model_exists(folder) and model_ref(folder).sha256 == "ab"
    code = ("import sys; from voxtell.model.folder import model_ref; model_ref(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True)
