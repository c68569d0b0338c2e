"""What each skip strategy costs, counted on the model itself (built on the meta device),
growth laws over depth, matched budgets, and timing on a real device.

>>> from skiplab import ModelSpec
>>> from skiplab.cost import model_cost
>>> model_cost(ModelSpec(depth=9, width=100, skip="dense", norm="none", bias=False))["params"]["blocks"]
450000
"""

from .answer import model_cost
from .count import param_counts
from .budget import BudgetMatch, match_budget
from .growth import growth_over_depths
from .laws import classify, parse_depths
from .measure import measure_cost, why_not_measurable
from .plot import plot_growth
from .summary import cost_summary

__all__ = ["model_cost", "param_counts", "measure_cost", "why_not_measurable", "classify", "growth_over_depths",
           "parse_depths", "match_budget", "BudgetMatch", "plot_growth", "cost_summary"]
