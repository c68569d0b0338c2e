"""Which number a run is judged by: the one rule, used by every table, list and verdict.

A language model's result has ``val_bpc`` (validation bits per character, lower is better);
every other run is judged by ``test_accuracy`` (higher is better). The metric is a fact of
the stored result, so a store of old runs, of text runs or of both reads the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .datasets.text import is_text_ref
from .stats import spread_text


@dataclass(frozen=True)
class Metric:
    name: str  # in sentences: "test accuracy"
    key: str  # the RunResult field: "test_accuracy"
    label: str  # a column or axis: "test accuracy (%)"
    higher_is_better: bool
    unit: str  # of a difference: "points", "bpc"
    scale: float  # shown value = scale x stored value (accuracy as percent)
    digits: int  # decimals shown
    curve: tuple[str, str]  # (split, name) of its curve in the store's metrics

    def text(self, mean: float | None, std: float | None, n: int) -> str:
        """``71.3 +- 0.8``, ``1.812 (1 seed)`` or ``-``, in this metric's scale."""
        return spread_text(mean, std, n, scale=self.scale, digits=self.digits)

    def format(self, value: float | None) -> str:
        return "-" if value is None else f"{self.scale * value:.{self.digits}f}"

    @property
    def error_label(self) -> str:
        """The axis of its error: ``test error (%)`` for accuracy; a lower-is-better metric
        (bpc) is its own error."""
        return self.label.replace("accuracy", "error") if self.higher_is_better else self.label

    def error(self, value: float) -> float:
        """A stored value as an error, lower is better: ``1 - accuracy`` (a fraction), or a
        lower-is-better metric (bpc) as it is."""
        return 1.0 - value if self.higher_is_better else value

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ACCURACY = Metric("test accuracy", "test_accuracy", "test accuracy (%)", True, "points", 100.0, 1,
                  ("test", "accuracy"))
# Bits per character: the mean validation cross-entropy in nats divided by ln 2 (the unit
# of character-level language modelling results since Graves 2013, arXiv 1308.0850).
BPC = Metric("validation bpc", "val_bpc", "validation bpc (bits per character)", False, "bpc", 1.0, 3,
             ("test", "bpc"))


def _result(item: Any) -> dict[str, Any]:
    """A result's fields from a RunResult, a stored run ({"result": ...}), a result dict or
    an aggregated row."""
    if dataclasses.is_dataclass(item):
        return dataclasses.asdict(item)
    if isinstance(item, dict) and isinstance(item.get("result"), dict):
        return item["result"]
    return item if isinstance(item, dict) else {}


def metric_of(items: Any) -> Metric:
    """The metric of a result, a stored run, an aggregated row (its ``metric`` key), or a
    list of any of these: bpc when any of them is a language model's (a result with
    ``val_bpc``, a stored run on a text dataset), else accuracy."""
    if not isinstance(items, (list, tuple)):
        items = [items]
    for item in items:
        d = _result(item)
        if d.get("metric") == BPC.key or d.get("val_bpc") is not None:
            return BPC
        spec = item.get("spec") if isinstance(item, dict) else None  # a stored run: a diverged one has no bpc
        if isinstance(spec, dict) and is_text_ref(str(spec.get("dataset", ""))):
            return BPC
    return ACCURACY
