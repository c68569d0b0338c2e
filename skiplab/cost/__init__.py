"""What each skip strategy costs: analytic laws and measurement.

>>> from skiplab import ModelSpec
>>> from skiplab.cost import analytic_cost
>>> analytic_cost(ModelSpec(depth=9, width=100, skip="dense", norm="none", bias=False))["params"]["blocks"]
450000
"""

from .analytic import analytic_cost
from .budget import BudgetMatch, match_budget
from .growth import classify, growth_over_depths, parse_depths
from .measure import measure_cost, why_not_measurable
from .plot import plot_growth
from .summary import cost_summary

__all__ = ["analytic_cost", "measure_cost", "why_not_measurable", "classify", "growth_over_depths",
           "parse_depths", "match_budget", "BudgetMatch", "plot_growth", "cost_summary"]
