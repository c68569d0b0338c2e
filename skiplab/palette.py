"""One colour per strategy, used by every figure (Okabe & Ito's colour-blind-safe set,
https://jfly.uni-koeln.de/color/, plus a grey for the baseline)."""

STRATEGY_COLORS = {
    "plain": "#7f7f7f",
    "add": "#0072B2",
    "rezero": "#56B4E9",
    "layerscale": "#009E73",
    "highway": "#CC79A7",
    "dense": "#D55E00",
    "concat-prev": "#E69F00",
    "concat-double": "#000000",
    "concat-half": "#999933",  # olive (Tol): Okabe-Ito yellow is too faint on white
    # the residual streams of round 2, from Tol's muted set (Okabe-Ito's are used up)
    "dwa": "#882255",  # wine
    "hyper": "#44AA99",  # teal
    "mhc": "#332288",  # indigo
}


def color(skip: str) -> str:
    return STRATEGY_COLORS.get(skip, "#333333")
