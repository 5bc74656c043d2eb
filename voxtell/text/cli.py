"""``voxtell embed``: build or extend an embedding bank with the prompts it lacks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voxtell.text.prompts_file import read_prompts_file

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed prompts into a bank (.npz); only prompts missing from the bank are encoded",
        description=__doc__,
    )
    p.add_argument("--bank", required=True, type=Path, help="bank to create or extend (.npz)")
    p.add_argument("--encoder", required=True, help="text encoder id (e.g. Qwen/Qwen3-Embedding-4B) or folder")
    p.add_argument("--encoder-path", type=Path, help="local folder holding the encoder's weights")
    p.add_argument("-p", "--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument(
        "--prompts-file",
        action="append",
        type=Path,
        default=[],
        help="text file with one prompt per line, or JSONL with a 'prompt' field (repeatable)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--allow-download", action="store_true", help="fetch the encoder from the hub if not cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxtell.text.bank import EmbeddingBank, EmbeddingBankError
    from voxtell.text.encoders import get_text_encoder

    prompts = list(args.prompt)
    for f in args.prompts_file:
        prompts += read_prompts_file(f)
    if not prompts:
        raise EmbeddingBankError("no prompts given: use -p PROMPT or --prompts-file FILE")
    encoder_id = args.encoder
    bank = EmbeddingBank.load(args.bank) if args.bank.exists() else None
    if bank is not None:
        bank.check_compatible(encoder_id, None)
        absent = bank.missing(prompts)
    else:
        absent = list(dict.fromkeys(prompts))
    if absent:
        encoder = get_text_encoder(encoder_id, args.encoder_path, args.device, args.allow_download)
        if bank is None:
            bank = EmbeddingBank(dim=encoder.dim, encoder_id=encoder_id)
        bank.check_compatible(encoder_id, encoder.dim)
        bank.add(absent, encoder.encode(absent))
    bank.save(args.bank)
    log.warning("bank %s: %d prompt(s), %d newly embedded", args.bank, len(bank), len(absent))
    return 0
