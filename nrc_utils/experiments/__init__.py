"""The experiments of the book, one module per chapter, each named for the paper's section.

A chapter calls one function of its module per experiment; the function trains (through
:mod:`nrc_utils.train` / :mod:`nrc_utils.ensemble`, cached), measures (through the science modules
:mod:`~nrc_utils.gradients`, :mod:`~nrc_utils.spectral`, :mod:`~nrc_utils.collapse`, ...) and
returns tidy tables (pandas DataFrames) that the chapter plots and glues. Each module also
declares ``PARAMETERS`` (:class:`nrc_utils.params.Rules`), the rules of its chapter's parameters.

| chapter | module |
|---|---|
| 01 Introduction | :mod:`.introduction` |
| 02 Weight decay and the eigenvalue equation | :mod:`.eigenvalue_equation` |
| 03 Neural rank collapse | :mod:`.rank_collapse` |
| 04 Gaussian mixtures | :mod:`.gaussian_mixtures` |
| 05 Deep linear networks | :mod:`.deep_linear_networks` |
| 06 Experiments on real data | :mod:`.real_data` |
| 07 Beyond the MLP | :mod:`.beyond_mlp` |

The sentences a chapter glues are built by the matching module of :mod:`nrc_utils.prose`, its
figures drawn by the matching module of :mod:`nrc_utils.figures`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from .. import params as _params


def modules() -> list[Any]:
    """Every module of this package (imported)."""
    return [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]


def rules() -> dict[str, _params.Rules]:
    """``{chapter stem: Rules}`` of every chapter module."""
    return _params.all_rules(modules())


def check_parameters(stem: str, values: Mapping[str, Any]) -> None:
    """Check chapter ``stem``'s parameter values by its rules (no rules: nothing to check);
    raises :class:`nrc_utils.params.ParameterError` (one line)."""
    found = rules().get(stem)
    if found is not None:
        found.check(values)
