"""Text side of VoxTell: frozen text encoders and the embedding bank.

The image network never sees text, only embeddings. Prompts are embedded once per cohort
into a bank (``.npz``, the released format plus the encoder id), so compute nodes need the
text encoder only for prompts the bank does not hold yet.
"""

from voxtell.text.bank import EmbeddingBank, EmbeddingBankError, resolve_embeddings
from voxtell.text.encoders import (
    KNOWN_ENCODERS,
    RELEASED_TEXT_ENCODER,
    EncoderSpec,
    TextEncoder,
    TextEncoderError,
    get_text_encoder,
    locate_encoder,
)

__all__ = [
    "EmbeddingBank",
    "EmbeddingBankError",
    "EncoderSpec",
    "KNOWN_ENCODERS",
    "RELEASED_TEXT_ENCODER",
    "TextEncoder",
    "TextEncoderError",
    "get_text_encoder",
    "locate_encoder",
    "resolve_embeddings",
]
