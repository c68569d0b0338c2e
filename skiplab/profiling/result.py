"""``Profile``: what ``skiplab.profile`` measured, per module and in total, and its three
renderings: a table, JSON, a pandas DataFrame."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..export.extras import need
from ..textable import table

# The figures every module and the total carry. All are for the whole example batch.
FIGURES = ("params", "flops", "merge_flops", "concat_bytes", "saved_bytes", "recompute_concat_bytes")


def depth_of(name: str) -> int:
    """0 for the model itself (""), 1 for its children, 2 for theirs, ..."""
    return 0 if not name else name.count(".") + 1


def _within(name: str, root: str) -> bool:
    return not root or name == root or name.startswith(root + ".")


@dataclass(frozen=True)
class Profile:
    """``own[name]``: the figures booked to module ``name`` itself (not its children); every
    op and saved tensor is booked to exactly one module, so ``own`` adds up to ``total``.
    ``total`` also holds ``backward_flops`` (measured) and ``seconds_forward_backward``
    (median wall time, or None when not timed). ``inputs``: the example inputs' shapes and
    dtypes; FLOPs and bytes are for that whole batch. ``uncounted_ops``: ops that likely
    cost FLOPs but have no FLOP rule (name -> calls, forward and backward); empty when the
    FLOPs are complete."""

    own: dict[str, dict[str, int]]  # module name -> FIGURES, in named_modules order
    total: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    def of(self, name: str) -> dict[str, int]:
        """Figures of module ``name`` with everything inside it (its subtree)."""
        if name not in self.own:
            raise KeyError(f"no module named {name!r}; modules: {', '.join(list(self.own)[:8])}, ...")
        return {k: sum(v[k] for n, v in self.own.items() if _within(n, name)) for k in FIGURES}

    @property
    def modules(self) -> list[str]:
        return list(self.own)

    def rows(self, depth_group: int = 2) -> list[tuple[str, dict[str, int]]]:
        """Rows that cover every module exactly once: each module at depth ``depth_group``
        with its subtree, and each shallower module's own figures (``name (own)``) where
        nonzero; their sum is the total."""
        out = []
        for name, own in self.own.items():
            d = depth_of(name)
            if d == depth_group:
                out.append((name, self.of(name)))
            elif d < depth_group:
                has_children = any(depth_of(n) == d + 1 and _within(n, name) for n in self.own)
                if not has_children:
                    out.append((name or "(model)", dict(own)))
                elif any(own[k] for k in FIGURES):
                    out.append(((name or "(model)") + " (own)", dict(own)))
        return out

    # -- renderings ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``total``, ``inputs``, ``uncounted_ops``, and ``modules``: one object per
        module with its subtree's figures and, under ``own``, its own."""
        return {"inputs": self.inputs, "total": dict(self.total), "uncounted_ops": dict(self.uncounted_ops),
                "modules": [{"name": n, "depth": depth_of(n), **self.of(n), "own": dict(v)}
                            for n, v in self.own.items()]}

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **({"indent": 2} | kwargs))

    def to_dataframe(self):
        """One row per module: ``name``, ``depth``, the subtree's figures and ``own_*``
        (the pandas extra)."""
        pd = need("pandas", "pandas", "Profile.to_dataframe")
        return pd.DataFrame([{"name": n, "depth": depth_of(n), **self.of(n),
                              **{f"own_{k}": v[k] for k in FIGURES}} for n, v in self.own.items()])

    def table(self, depth_group: int = 2, top: int | None = 20) -> str:
        """The ``top`` rows of :meth:`rows` by forward FLOPs (matmul + merge), then saved
        bytes; the rest summed in one row, and the total."""
        rows = sorted(self.rows(depth_group), key=lambda r: (-(r[1]["flops"] + r[1]["merge_flops"]),
                                                              -r[1]["saved_bytes"]))
        shown, rest = (rows, []) if top is None else (rows[:top], rows[top:])
        if rest:
            shown.append((f"({len(rest)} more)", {k: sum(r[1][k] for r in rest) for k in FIGURES}))
        shown.append(("total", self.total))
        mib = 2 ** 20
        t = self.total
        recompute = bool(t.get("recompute_concat_bytes"))  # a column only where backward concatenates again
        cells = [[name, f["params"], f["flops"] / 1e6, f["merge_flops"] / 1e6, f["concat_bytes"] / mib,
                  f["saved_bytes"] / mib, *([f["recompute_concat_bytes"] / mib] if recompute else [])]
                 for name, f in shown]
        shapes = ", ".join(f"{tuple(i['shape'])} {i['dtype']}" for i in self.inputs)
        head = f"profile of one forward on {shapes}: modules grouped at depth {depth_group}"
        backward = t["backward_flops"]
        foot = [f"backward MFLOPs (measured): {backward / 1e6:,.4g}" if backward is not None
                else "backward: none (the output has no floating-point tensor that needs a gradient)"]
        if t.get("seconds_forward_backward") is not None:
            foot.append(f"forward+backward: {t['seconds_forward_backward'] * 1e3:,.1f} ms (median)")
        if self.uncounted_ops:
            foot.append("NOT COUNTED, no FLOP rule (likely FLOP-heavy): " + ", ".join(
                f"{n} ({c} call{'s' * (c != 1)})" for n, c in self.uncounted_ops.items()))
        foot.append("FLOPs: 2 x multiply-adds of matmul/conv (torch.utils.flop_counter, attention kernels "
                    "included, a causal mask as full T x T); merge: element-wise ops combining activations "
                    "(skiplab.profiling.merge_rule); saved: bytes autograd keeps for backward, each storage "
                    "once, parameters and inputs excluded"
                    + ("; recompute: bytes backward concatenates again" if recompute else ""))
        columns = ["module", "params", "MFLOPs", "merge MFLOPs", "concat MiB", "saved MiB"]
        return "\n".join([head, table(columns + (["recompute concat MiB"] if recompute else []), cells), *foot])
