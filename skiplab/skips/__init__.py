"""Skip strategies: the registry, and the drop-in merge modules.

```pycon
>>> from skiplab.skips import STRATEGIES
>>> sorted(STRATEGIES)[:3]
['add', 'concat-double', 'concat-half']
```
"""

from __future__ import annotations

from typing import Callable, Iterable

from .additive import ADD, LAYERSCALE, PLAIN, REZERO, LayerScale, Plain, ReZero, Residual
from .base import BlockWidths, Connection, Option, OptionError, Site, Strategy
from .concat import CONCAT_DOUBLE, CONCAT_HALF, CONCAT_PREV, DENSE, Concat, DenseBlock
from .dwa import DWA, DWA_STRATEGY
from .highway import HIGHWAY, Highway
from .hyper import HYPER, HyperConnection
from .mhc import MHC, MHC_STRATEGY
from .mhc_lite import MHC_LITE, MHCLite
from ..errors import UserError

# The one map from names to strategies; library, CLI and sweep files all use it.
STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (PLAIN, ADD, REZERO, LAYERSCALE, HIGHWAY, DENSE, CONCAT_PREV, CONCAT_DOUBLE, CONCAT_HALF,
              DWA_STRATEGY, HYPER, MHC_STRATEGY, MHC_LITE)
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; ValueError naming the allowed names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UserError(f"skip: unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}") from None


def all_options() -> dict[str, list[Strategy]]:
    """Every option name any strategy declares -> the strategies that declare it (for the
    command line's flags and sweep files' keys)."""
    out: dict[str, list[Strategy]] = {}
    for s in STRATEGIES.values():
        for o in s.options:
            out.setdefault(o.name, []).append(s)
    return out


def check_options_taken(given: Iterable[str], skips: Iterable[str], spell: Callable[[str], str] = str) -> None:
    """Each option named in ``given`` must be declared by one of the strategies ``skips``.
    One value applies to those of them that declare it (``--skip add,dense --growth 4``),
    but a value none of them takes is a mistake the user would not see, so it is named
    (the command line and sweep files share this rule). ``spell`` writes a key as the user
    wrote it (``--growth`` on the command line, ``growth`` in a sweep file)."""
    chosen = [get_strategy(name) for name in dict.fromkeys(skips)]
    for name in given:
        if any(o.name == name for s in chosen for o in s.options):
            continue
        owners = all_options().get(name, [])
        who = ", ".join(repr(s.name) for s in owners)
        verb = f"skip {who} uses" if len(owners) == 1 else f"skips {who} use"
        raise OptionError(f"{spell(name)}: only {verb} it, not {', '.join(repr(s.name) for s in chosen)}; "
                          f"add one to {spell('skip')} or drop {spell(name)}")


def sizing_option_names() -> list[str]:
    """The options any strategy lets a budget resize (``Option.sizes``: dense's growth)."""
    return sorted({o.name for s in STRATEGIES.values() for o in s.options if o.sizes})


def options_text(options) -> str:
    """``growth=16`` / ``streams=4, static=False``; ``-`` for none."""
    items = dict(options).items()
    return ", ".join(f"{k}={v}" for k, v in sorted(items)) if items else "-"


__all__ = [
    "STRATEGIES", "get_strategy", "all_options", "check_options_taken", "sizing_option_names", "options_text", "Strategy", "Connection", "Option", "OptionError", "Site",
    "BlockWidths", "Plain", "Residual", "ReZero", "LayerScale", "Highway", "Concat", "DenseBlock", "DWA", "HyperConnection", "MHC", "MHCLite",
]
