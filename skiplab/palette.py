"""One colour per strategy, used by every figure: each strategy declares its own
(``Strategy.color``, in its file under ``skiplab/skips/``)."""

from .skips import STRATEGIES

UNKNOWN = "#333333"  # a name no strategy has (a store from elsewhere)


def color(skip: str) -> str:
    return STRATEGIES[skip].color if skip in STRATEGIES else UNKNOWN
