"""Character-level text for language models: the documentation topics every Python ships
(``pydoc_data.topics``) and the user's own UTF-8 ``.txt`` file.

A :class:`TextDataset` is one token sequence split once, contiguously: the first 90% of the
characters train, the last 10% validate (a contiguous split, as nanoGPT's character
Shakespeare does, so that no validation window overlaps a training one). The symbols are
the sorted distinct characters of the whole text; a token is a symbol's index (int64).
:meth:`TextDataset.windows` cuts both parts into ``(x, y)`` pairs of length ``context``,
``y`` being ``x`` shifted by one character, for any model's context.

The text's sha256 is part of a run's identity (the pydoc text changes with the Python
version): :func:`text_ref` names a text as ``name@<16 hex digits>`` and
:func:`load_text_ref` refuses a text whose hash differs from the one named.
Every error is a one-line ``ValueError`` starting ``dataset:``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from dataclasses import dataclass

import torch

from .base import Dataset
from ..errors import UserError

TRAIN_FRACTION = 0.9
MIN_CHARACTERS = 1_000  # shorter texts leave a validation part of under 100 characters
MAX_SYMBOLS = 10_000  # a character model's embedding and head grow with the symbol count
HASH_DIGITS = 16  # hex digits of the sha256 kept in a dataset reference (64 bits)
PYDOC = "pydoc"


def _fail(message: str) -> UserError:
    return UserError("dataset: " + " ".join(message.splitlines()))


@dataclass(frozen=True, repr=False)
class TextDataset:
    """A text as tokens: ``train_tokens`` then ``test_tokens`` (1-D int64, indices into
    ``symbols``) are the text's first 90% and last 10%; ``sha256`` is the hex digest of the
    text's UTF-8 bytes."""

    name: str
    train_tokens: torch.Tensor
    test_tokens: torch.Tensor
    symbols: str
    sha256: str

    @property
    def vocab(self) -> int:
        return len(self.symbols)

    @property
    def classes(self) -> int:  # next-token prediction: one class per symbol
        return self.vocab

    @property
    def characters(self) -> int:
        return len(self.train_tokens) + len(self.test_tokens)

    @property
    def ref(self) -> str:
        """``name@<first 16 hex of sha256>``: what a run's spec names."""
        return f"{self.name}@{self.sha256[:HASH_DIGITS]}"

    def model_fields(self) -> dict[str, int]:
        """The model fields this data fixes: a token embedding of ``vocab`` symbols and as
        many outputs."""
        return {"vocab": self.vocab, "classes": self.classes}

    def windows(self, context: int) -> Dataset:
        """Non-overlapping windows of ``context + 1`` characters at stride ``context`` (the
        incomplete tail dropped): ``x`` the first ``context``, ``y`` the last ``context``,
        so ``y[:, t]`` is the character after ``x[:, t]``. Shapes (N, context), int64."""
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            raise _fail(f"context: must be an integer >= 1, got {context!r}")
        n_test = len(self.test_tokens)
        if n_test < context + 1:
            raise _fail(f"context: {context} is longer than the validation text ({n_test:,} characters) of "
                        f"{self.name!r}; use a context of at most {n_test - 1} or a longer text")
        xtr, ytr = _cut(self.train_tokens, context)
        xte, yte = _cut(self.test_tokens, context)
        return Dataset(self.name, xtr, ytr, xte, yte, classes=self.vocab)

    def for_model(self, model) -> Dataset:
        """The windows that ``model`` (a ModelSpec with a ``context``) trains on."""
        context = getattr(model, "context", None)
        if context is None:
            raise _fail(f"context: {self.name!r} is text; the model needs a context length (--context T)")
        return self.windows(context)

    def __repr__(self) -> str:
        return (f"TextDataset({self.name!r}, train={len(self.train_tokens):,}, test={len(self.test_tokens):,} "
                f"characters, vocab={self.vocab}, sha256={self.sha256[:HASH_DIGITS]})")


def _cut(tokens: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) windows of ``tokens``: window i covers tokens[i*T : i*T + T + 1]."""
    n = (len(tokens) - 1) // context  # windows whose T + 1 characters all exist
    starts = torch.arange(n) * context
    idx = starts[:, None] + torch.arange(context + 1)[None, :]  # (n, T + 1)
    w = tokens[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def from_text(name: str, text: str) -> TextDataset:
    """Tokenise ``text`` and split it 90/10, contiguously."""
    if len(text) < MIN_CHARACTERS:
        raise _fail(f"{name} holds {len(text):,} characters; a text dataset needs at least {MIN_CHARACTERS:,}")
    symbols = "".join(sorted(set(text)))
    if len(symbols) > MAX_SYMBOLS:
        raise _fail(f"{name} holds {len(symbols):,} distinct characters; a character model takes at most "
                    f"{MAX_SYMBOLS:,}")
    index = {c: i for i, c in enumerate(symbols)}
    tokens = torch.tensor([index[c] for c in text], dtype=torch.int64)
    split = int(TRAIN_FRACTION * len(tokens))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return TextDataset(name, tokens[:split].clone(), tokens[split:].clone(), symbols, digest)


def pydoc_text() -> str:
    """The documentation topics of this Python (``pydoc_data.topics.topics``, what
    ``help('topic')`` shows), joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics))


def load_pydoc() -> TextDataset:
    """This Python's documentation topics as a character dataset (no cache: building it
    takes well under a second)."""
    return from_text(PYDOC, pydoc_text())


def load_text(path: str | os.PathLike) -> TextDataset:
    """The user's UTF-8 ``.txt`` file as a character dataset, named by its file name."""
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise _fail(f"{path} does not exist" if not p.exists() else f"{path} is not a file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise _fail(f"{path} could not be read ({e.strerror})") from None
    if not raw:
        raise _fail(f"{path} is empty")
    if b"\x00" in raw:  # UTF-8 text never holds NUL; binary files usually do
        raise _fail(f"{path} is binary (it holds NUL bytes), not UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    return from_text(p.name, text)


def is_text_ref(name: str) -> bool:
    """Whether ``name`` names a text dataset: ``pydoc``, a ``.txt`` path, or either with ``@hash``."""
    base = split_ref(name)[0]
    return base == PYDOC or base.lower().endswith(".txt")


def split_ref(name: str) -> tuple[str, str | None]:
    """``"pydoc@37d0..."`` -> ``("pydoc", "37d0...")``; a name without a hash -> (name, None)."""
    base, at, digest = name.rpartition("@")
    if at and len(digest) == HASH_DIGITS and all(c in "0123456789abcdef" for c in digest):
        return base, digest
    return name, None


def _load_base(base: str) -> TextDataset:
    return load_pydoc() if base == PYDOC else load_text(base)


def text_ref(name: str) -> str:
    """What a run's spec names for a text: ``pydoc@<16 hex>`` or ``/abs/path.txt@<16 hex>``
    (a path made absolute, so that workers elsewhere open the same file)."""
    base, _ = split_ref(name)
    if base != PYDOC:
        base = str(pathlib.Path(base).expanduser().resolve())
    return f"{base}@{_load_base(base).sha256[:HASH_DIGITS]}"


def load_text_ref(name: str) -> TextDataset:
    """The text named by ``name`` (see :func:`text_ref`); with a hash, the text must still
    have it."""
    base, digest = split_ref(name)
    data = _load_base(base)
    if digest is not None and data.sha256[:HASH_DIGITS] != digest:
        what = "pydoc text on this Python" if base == PYDOC else f"text in {base}"
        raise _fail(f"the {what} has sha256 {data.sha256[:HASH_DIGITS]}..., the run was made with {digest}...; "
                    f"it changed, so its results are not comparable (train again to store new runs)")
    return data


def display_name(ref: str) -> str:
    """A dataset reference as users read it: a text's name without its ``@hash``."""
    base, digest = split_ref(ref)
    return base if digest is not None else ref
