"""Rules for a chapter's parameters, checked before anything runs.

Each chapter's driver module (``nrc_utils.experiments.<name>``) declares

    PARAMETERS = params.Rules("03_neural_rank_collapse", {
        "lambdas": params.grid(params.number(gt=0)),
        "widths": params.grid(params.integer(ge=1)),
        "lr": params.number(gt=0),
        ...
    }, relations=check_relations)

with one rule per parameter of its ``parameters`` cell (a test checks that the names agree),
and optionally ``relations(values)``, a function that checks what involves several parameters
(``K`` against the number of samples, a split that leaves a side empty) by raising
:func:`refuse`. The book runner (``ci/build_book.py``) calls :meth:`Rules.check` for every
chapter before papermill starts, and each chapter calls it again in its first cell, so that a
direct ``papermill -p`` run is refused as early. A refusal is one :class:`ParameterError` line
that names the chapter, the parameter, the value and what is allowed.

Types are checked by the runner against the profiles (``ci/project.py``); the rules here check
content. A rule is a :class:`Rule`: a test ``problem(value) -> None | str`` and the phrase of
what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ParameterError(ValueError):
    """A one-line refusal of a chapter parameter's value."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Rule:
    """``allowed``: what the parameter may be, as a phrase ("a number > 0"); ``test(value)``:
    whether ``value`` is allowed."""

    allowed: str
    test: Callable[[Any], bool]

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is allowed, else ``"expected <allowed>"``."""
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"expected {self.allowed}"


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Rule:
    """A finite real number within the given bounds (``gt``: ``>``, ``ge``: ``>=``, ...)."""
    parts = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
             f"< {lt:g}" if lt is not None else "", f"<= {le:g}" if le is not None else ""]
    bounds = " and ".join(p for p in parts if p)

    def test(v):
        return (_is_real(v) and math.isfinite(v) and (gt is None or v > gt) and (ge is None or v >= ge)
                and (lt is None or v < lt) and (le is None or v <= le))

    return Rule(f"a finite number {bounds}".rstrip() if bounds else "a finite number", test)


def integer(ge: int | None = None, le: int | None = None) -> Rule:
    """An integer (not a bool) within the given bounds."""
    parts = [f">= {ge}" if ge is not None else "", f"<= {le}" if le is not None else ""]
    bounds = " and ".join(p for p in parts if p)

    def test(v):
        return (isinstance(v, numbers.Integral) and not isinstance(v, bool)
                and (ge is None or v >= ge) and (le is None or v <= le))

    return Rule(f"an integer {bounds}".rstrip() if bounds else "an integer", test)


def one_of(*choices: Any) -> Rule:
    """One of the given values."""
    return Rule("one of " + ", ".join(repr(c) for c in choices), lambda v: v in choices)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def text(nonempty: bool = True) -> Rule:
    """A string (non-empty unless ``nonempty=False``)."""
    return Rule("a non-empty string" if nonempty else "a string",
                lambda v: isinstance(v, str) and (bool(v.strip()) or not nonempty))


def optional(rule: Rule) -> Rule:
    """``None`` (null), or what ``rule`` allows."""
    return Rule(f"null or {rule.allowed}", lambda v: v is None or rule.problem(v) is None)


def grid(item: Rule, min_len: int = 1, max_len: int | None = None, distinct: bool = False,
         increasing: bool = False) -> Rule:
    """A list of at least ``min_len`` (default 1: not empty) values, each allowed by ``item``;
    optionally without repeats, or strictly increasing."""
    if max_len is None:
        size = "a non-empty list" if min_len == 1 else f"a list of at least {min_len}"
    else:
        size = f"a list of exactly {min_len}" if max_len == min_len else f"a list of {min_len} to {max_len}"
    of = " of " if size.endswith("list") else " "
    extra = ", strictly increasing" if increasing else ", without repeats" if distinct else ""
    allowed = f"{size}{of}{_plural(item.allowed)}{extra}"

    def test(v):
        if not isinstance(v, (list, tuple)) or len(v) < min_len or (max_len is not None and len(v) > max_len):
            return False
        if not all(item.problem(x) is None for x in v):
            return False
        if increasing and any(b <= a for a, b in zip(v, v[1:])):
            return False
        if distinct and len(set(v)) != len(v):
            return False
        return True

    return Rule(allowed, test)


def _plural(phrase: str) -> str:
    for a, b in (("a finite number", "finite numbers"), ("an integer", "integers"),
                 ("a non-empty string", "non-empty strings"), ("a string", "strings"),
                 ("true or false", "booleans")):
        if phrase.startswith(a):
            return b + phrase[len(a):]
    return f"items ({phrase})"


def refuse(stem: str, name: str, value: Any, allowed: str) -> None:
    """Raise the one-line :class:`ParameterError` for parameter ``name`` of chapter ``stem``."""
    raise ParameterError(f"{stem}.{name} = {value!r}: {allowed} "
                         f"(set it with --set {stem}.{name}=VALUE or in ci/params/<profile>.yaml)")


@dataclass(frozen=True)
class Rules:
    """The rules of one chapter's parameters (see the module docstring)."""

    stem: str
    rules: Mapping[str, Rule]
    relations: Callable[[Mapping[str, Any]], None] | None = field(default=None)

    @property
    def names(self) -> list[str]:
        return list(self.rules)

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Check every ruled parameter in ``values`` (extra keys, e.g. a notebook's ``globals()``,
        are ignored; a missing one is refused), then the relations; return the checked values."""
        picked = {}
        for name, rule in self.rules.items():
            if name not in values:
                refuse(self.stem, name, None, "missing; every parameter of the chapter must be set")
            problem = rule.problem(values[name])
            if problem is not None:
                refuse(self.stem, name, values[name], problem)
            picked[name] = values[name]
        if self.relations is not None:
            self.relations(picked)
        return picked

    def refuse(self, name: str, value: Any, allowed: str) -> None:
        """:func:`refuse` for this chapter (for use in ``relations``)."""
        refuse(self.stem, name, value, allowed)


def all_rules(modules: Iterable[Any]) -> dict[str, Rules]:
    """``{stem: Rules}`` of the modules that declare ``PARAMETERS``."""
    out = {}
    for m in modules:
        rules = getattr(m, "PARAMETERS", None)
        if isinstance(rules, Rules):
            out[rules.stem] = rules
    return out


__all__ = ["ParameterError", "Rule", "Rules", "all_rules", "boolean", "grid", "integer", "number",
           "one_of", "optional", "refuse", "text"]
