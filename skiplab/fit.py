"""Does a model fit its data? The checks a run would otherwise fail inside, made before any
training starts (``skiplab.run.loop.preflight``), and the model fields a dataset fixes."""

from __future__ import annotations

from typing import Any

from .datasets import Dataset, TextDataset
from .families import FAMILIES
from .spec import MODEL_KEYS, ModelSpec
from .validate import SpecError


def model_fields_from(data: Dataset | TextDataset, given: dict[str, Any]) -> dict[str, Any]:
    """The model fields ``data`` fixes (``input_shape`` and ``classes``, or a text's ``vocab``
    and ``classes``) that ``given`` leaves out (absent or None) and ModelSpec has: what a
    caller fills in; what the user gave is checked later (:func:`check_fits`), not overwritten."""
    known = set(MODEL_KEYS)
    return {k: v for k, v in data.model_fields().items() if k in known and given.get(k) is None}


def _check_text(model: ModelSpec, data: TextDataset) -> None:
    # the family says whether its stem embeds tokens (getattr: families before the transformer lack it)
    vocab = getattr(model, "vocab", 0) or 0
    if not getattr(model.family, "takes_tokens", False):
        takers = " or ".join(f.name for f in FAMILIES.values() if getattr(f, "takes_tokens", False))
        raise SpecError(f"dataset: {data.name!r} is a token sequence; only --model {takers} takes it")
    if vocab == 0:  # a family that embeds tokens, told to take numbers (vocab 0)
        raise SpecError(f"vocab: the dataset {data.name!r} is a token sequence of {data.vocab} symbols, but vocab 0 "
                        f"makes the model take numbers; give vocab {data.vocab} or leave it out")
    if vocab != data.vocab:
        raise SpecError(f"vocab: the model embeds {vocab} symbols, the dataset {data.name!r} has {data.vocab}")
    if model.classes != data.vocab:
        raise SpecError(f"classes: the model has {model.classes} outputs, the dataset {data.name!r} has "
                        f"{data.vocab} symbols to predict")
    try:
        data.for_model(model)  # a context longer than the validation text: one line, before training
    except ValueError as e:
        raise SpecError(str(e).removeprefix("dataset: ")) from None


def check_fits(model: ModelSpec, data: Dataset | TextDataset) -> None:
    """Raise SpecError if ``model`` cannot take ``data``: a sample's shape that its family
    does not accept (asked of the family: an MLP takes the same number of features in any
    shape, it flattens) or fewer outputs than the dataset has classes (more are allowed:
    the extra logits are never the target). A text needs a model that embeds exactly its
    symbols, predicts them, and a context its validation text holds."""
    if isinstance(data, TextDataset):
        return _check_text(model, data)
    if getattr(model, "vocab", 0):
        raise SpecError(f"vocab: the model embeds {model.vocab} symbols, but the dataset {data.name!r} is numeric "
                        f"(vocab 0 takes numbers)")
    if not model.family.accepts(data.input_shape, model):  # the family's own rule
        raise SpecError(f"input_shape: the model expects {','.join(map(str, model.input_shape))}, the dataset "
                        f"{data.name!r} gives {','.join(map(str, data.input_shape))}")
    if model.classes < data.classes:
        raise SpecError(f"classes: the model has {model.classes} outputs, the dataset {data.name!r} has "
                        f"{data.classes} classes")
