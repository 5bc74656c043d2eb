"""Text encoders and embedding banks, on the real MiniLM weights shipped offline."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from voxtell.cli import main
from voxtell.text import EmbeddingBank, EmbeddingBankError, TextEncoder, TextEncoderError, resolve_embeddings
from voxtell.text.encoders import KNOWN_ENCODERS, RELEASED_TEXT_ENCODER, pool, spec_for

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(MINILM, device="cpu")


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_minilm_is_deterministic_and_sane(encoder):
    prompts = ["left kidney", "kidney, left", "right upper lobe", "Left   KIDNEY"]
    a = encoder.encode(prompts)
    b = encoder.encode(prompts)
    assert a.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert cos(a[0], a[1]) > cos(a[0], a[2]) + 0.1
    np.testing.assert_allclose(a[0], a[3], atol=1e-6)  # prompts are normalised first


def test_batching_does_not_change_embeddings(encoder):
    prompts = ["liver", "a 3 cm spiculated mass in the right upper lobe abutting the pleura", "spleen"]
    together = encoder.encode(prompts)
    alone = np.concatenate([encoder.encode([p]) for p in prompts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_matches_sentence_transformers_reference(encoder):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(encoder.folder), device="cpu")
    ref = model.encode(["left kidney", "mediastinal lymph node"], normalize_embeddings=True)
    np.testing.assert_allclose(encoder.encode(["left kidney", "mediastinal lymph node"]), ref, atol=1e-5)


def test_released_encoder_spec():
    spec = KNOWN_ENCODERS[RELEASED_TEXT_ENCODER]
    assert spec.pooling == "last_token" and spec.padding_side == "left" and spec.dim == 2560
    wrapped = spec.wrap("  Left Kidney ")
    assert wrapped.endswith("\nQuery: left kidney")
    assert wrapped.startswith("Instruct: Given an anatomical term query")


def test_last_token_pooling_left_and_right_padding():
    import torch

    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(pool(hidden, left, "last_token"), hidden[:, -1])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    assert torch.equal(pool(hidden, right, "last_token"), torch.stack([hidden[0, 1], hidden[1, 2]]))


def test_unknown_folder_spec_is_inferred(encoder):
    spec = spec_for("my-local-minilm", encoder.folder)
    assert spec.pooling == "mean" and spec.normalize and spec.dim == 384


def test_missing_encoder_is_a_typed_error(tmp_path):
    with pytest.raises(TextEncoderError, match="not available offline"):
        TextEncoder("no-such-org/no-such-model-xyz", device="cpu")
    with pytest.raises(TextEncoderError, match="config.json"):
        TextEncoder(MINILM, path=tmp_path, device="cpu")


def test_bank_roundtrip_and_released_format(tmp_path, encoder):
    bank = EmbeddingBank(dim=encoder.dim, encoder_id=MINILM)
    bank.add(["Liver", "spleen"], encoder.encode(["liver", "spleen"]))
    path = tmp_path / "bank.npz"
    bank.save(path)
    with np.load(path, allow_pickle=False) as raw:  # released layout: labels + float16 embeddings
        assert raw["embeddings"].dtype == np.float16 and list(raw["labels"]) == ["liver", "spleen"]
    back = EmbeddingBank.load(path)
    assert back.encoder_id == MINILM and back.dim == 384 and "LIVER" in back
    np.testing.assert_allclose(back.lookup(["spleen"])[0], encoder.encode(["spleen"])[0], atol=2e-3)

    released = tmp_path / "released.npz"
    np.savez(released, labels=np.array(["Liver", "Aorta"]), embeddings=np.ones((2, 384), np.float16))
    rb = EmbeddingBank.load(released)
    assert rb.encoder_id is None and "aorta" in rb
    rb.check_compatible(MINILM, 384)  # accepted: dimension matches
    with pytest.raises(EmbeddingBankError, match="dimension"):
        rb.check_compatible(RELEASED_TEXT_ENCODER, 2560)


def test_bank_refuses_other_encoder_and_corrupt_files(tmp_path):
    bank = EmbeddingBank(dim=384, encoder_id="other/encoder")
    with pytest.raises(EmbeddingBankError, match="other/encoder"):
        bank.check_compatible(MINILM, 384)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(EmbeddingBankError, match="cannot read"):
        EmbeddingBank.load(bad)
    evil = tmp_path / "evil.npz"
    np.savez(evil, labels=np.array([object()], dtype=object), embeddings=np.ones((1, 4)))
    with pytest.raises(EmbeddingBankError):
        EmbeddingBank.load(evil)  # object arrays would need unpickling: refused
    with pytest.raises(EmbeddingBankError, match="does not exist"):
        EmbeddingBank.load(tmp_path / "nope.npz")


def test_resolve_embeddings_only_encodes_missing(tmp_path, encoder):
    bank = EmbeddingBank(dim=384, encoder_id=MINILM)
    sentinel = np.full((1, 384), 0.5, np.float32)
    bank.add(["liver"], sentinel)
    out = resolve_embeddings(["liver", "spleen", "Liver"], bank=bank, encoder_id=MINILM, expected_dim=384)
    np.testing.assert_allclose(out[0], 0.5, atol=1e-3)  # from the bank, not re-encoded
    np.testing.assert_allclose(out[0], out[2])
    assert "spleen" in bank and len(bank) == 2
    # all prompts in the bank: no encoder needed at all
    out2 = resolve_embeddings(["spleen"], bank=bank, encoder_id=None, expected_dim=384)
    np.testing.assert_allclose(out2[0], bank.get("spleen"))
    with pytest.raises(EmbeddingBankError, match="no text encoder"):
        resolve_embeddings(["kidney"], bank=bank, encoder_id=None)
    with pytest.raises(EmbeddingBankError, match="no prompts"):
        resolve_embeddings([], bank=bank, encoder_id=MINILM)
    with pytest.raises(EmbeddingBankError, match="dimension"):
        resolve_embeddings(["liver"], bank=bank, encoder_id=MINILM, expected_dim=2560)


def test_embed_cli_extends_bank(tmp_path):
    bank = tmp_path / "bank.npz"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "spleen"}\n{"prompt": "Liver"}\n')
    assert main(["embed", "--bank", str(bank), "--encoder", MINILM, "-p", "liver", "--device", "cpu"]) == 0
    assert len(EmbeddingBank.load(bank)) == 1
    assert main(["embed", "--bank", str(bank), "--encoder", MINILM, "--prompts-file", str(prompts)]) == 0
    b = EmbeddingBank.load(bank)
    assert b.labels == ["liver", "spleen"]
    assert main(["embed", "--bank", str(bank), "--encoder", "other/enc", "-p", "x"]) == 1


def test_prompts_file_errors_are_typed(tmp_path) -> None:
    from voxtell.errors import InputError
    from voxtell.text.cli import read_prompts_file

    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "liver"}\n\n{"prompt": "spleen"}\n', encoding="utf-8")
    assert read_prompts_file(good) == ["liver", "spleen"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "liver"}\n{"text": "spleen"}\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_prompts_file(bad)
    with pytest.raises(InputError, match="cannot read"):
        read_prompts_file(tmp_path / "missing.txt")
