"""What the book project declares: its table of contents, its profiles, its chapters' parameters.

One module shared by the runner (``ci/build_book.py``), the HTML checker (``ci/check_html.py``)
and the tests, so that every one of them reads ``_toc.yml``, ``ci/params/<profile>.yaml`` and a
chapter's ``parameters`` cell the same way.

Every problem is reported as a :class:`ProjectError` whose message is one line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

PARAMS_DIR = Path("ci") / "params"
PARAMETERS_TAG = "parameters"


class ProjectError(Exception):
    """A one-line, user-facing refusal; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(" ".join(str(message).split()))
        self.code = code


# --------------------------------------------------------------------------------------------
# YAML: PyYAML follows YAML 1.1, where `1e-3` is a *string*. The profiles use the YAML 1.2 float
# syntax (as Python does), so exponent floats without a dot are resolved as floats here.
class _Loader(yaml.SafeLoader):
    pass


_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line on what is wrong in a YAML text, with the line and column where it is known
    (a syntax error has ``problem`` and ``problem_mark``; a control character is a ReaderError
    with neither)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None)
    if problem is None and isinstance(exc, yaml.reader.ReaderError):
        problem = f"it contains the control character {chr(exc.character)!r}" if isinstance(exc.character, int) \
            else "it contains a character YAML does not allow"
    return " ".join(f"{problem or type(exc).__name__}{where}".split())


def load_yaml(text_or_path):
    """Parse YAML (a path or a string) with exponent floats such as ``1e-3`` read as floats.
    A file that is not valid YAML is refused with one line naming the file and the problem."""
    if isinstance(text_or_path, Path):
        try:
            return yaml.load(text_or_path.read_text(), Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ProjectError(f"{text_or_path} is not valid YAML: {yaml_problem(exc)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProjectError(f"{text_or_path} cannot be read: {exc}") from None
    return yaml.load(text_or_path, Loader=_Loader)


# --------------------------------------------------------------------------------------------
# Table of contents
@dataclass(frozen=True)
class Chapter:
    stem: str  # the key of the chapter in the profiles, e.g. "01_introduction"
    file: str  # its path in _toc.yml, without suffix, e.g. "book/01_introduction"

    def source(self, root: Path) -> Path:
        """The MyST-markdown notebook, the source of truth."""
        return Path(root) / f"{self.file}.md"

    def notebook(self, root: Path) -> Path:
        """The paired .ipynb (kept in sync by jupytext)."""
        return Path(root) / f"{self.file}.ipynb"

    @property
    def is_numbered(self) -> bool:
        """Numbered chapters (01_..., 02_...) carry the science; index/reproducibility frame it."""
        return bool(re.match(r"\d+_", self.stem))


def read_toc(root: Path) -> list[Chapter]:
    """The chapters of ``<root>/_toc.yml`` in reading order (root page first)."""
    toc_path = Path(root) / "_toc.yml"
    if not toc_path.is_file():
        raise ProjectError(f"no _toc.yml in {root}")
    toc = load_yaml(toc_path) or {}
    files: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    if "root" not in toc:
        raise ProjectError(f"{toc_path} has no 'root' entry")
    files.append(str(toc["root"]))
    walk({k: v for k, v in toc.items() if k != "root"})
    chapters = []
    for f in files:
        file = re.sub(r"\.(md|ipynb)$", "", f)
        chapters.append(Chapter(stem=Path(file).name, file=file))
    stems = [c.stem for c in chapters]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ProjectError(f"_toc.yml lists two pages named {', '.join(dupes)}")
    return chapters


# --------------------------------------------------------------------------------------------
# Profiles
def available_profiles(root: Path) -> list[str]:
    return sorted(p.stem for p in (Path(root) / PARAMS_DIR).glob("*.yaml"))


def load_profile(root: Path, name: str) -> dict[str, dict]:
    """``{chapter stem: {parameter: value}}`` of profile ``name`` (``ci/params/<name>.yaml``)."""
    choices = available_profiles(root)
    if name not in choices:
        raise ProjectError(f"unknown profile {name!r}; choose one of: {', '.join(choices)}")
    path = Path(root) / PARAMS_DIR / f"{name}.yaml"
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ProjectError(f"{PARAMS_DIR / path.name} must map chapter names to parameters")
    profile = {}
    for stem, params in data.items():
        params = params or {}
        if not isinstance(params, dict):
            raise ProjectError(f"{PARAMS_DIR / path.name}: section {stem!r} must be a mapping")
        if "profile" in params:
            raise ProjectError(
                f"{PARAMS_DIR / path.name}: section {stem!r} sets 'profile', "
                "which the runner injects itself"
            )
        profile[str(stem)] = dict(params)
    return profile


# --------------------------------------------------------------------------------------------
# Types of parameter values, and `--set STEM.name=VALUE` overrides
def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    for kind, types in (("int", int), ("float", float), ("str", str), ("list", (list, tuple)),
                        ("dict", dict)):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _describe(value) -> str:
    kind = _kind(value)
    if kind == "list" and value:
        inner = sorted({_kind(v) for v in value})
        return f"list of {'/'.join(inner)}"
    return kind


def check_type(expected, value, where: str):
    """Return ``value`` if it has the type of ``expected`` (an int is accepted, and converted,
    where a float is expected; ``null`` in the profile accepts anything), else raise."""
    ek, vk = _kind(expected), _kind(value)
    if ek == "null":
        return value
    if ek == "float" and vk == "int":
        return float(value)
    if ek == "list" and vk == "list":
        if not expected:
            return list(value)
        kinds = {_kind(e) for e in expected}
        out = []
        for item in value:
            ik = _kind(item)
            if ik in kinds:
                out.append(item)
            elif ik == "int" and "float" in kinds:
                out.append(float(item))
            else:
                raise ProjectError(
                    f"{where}: expected {_describe(expected)}, got {_describe(value)} {value!r}"
                )
        return out
    if ek == "dict" and vk == "dict":
        unknown = sorted(set(value) - set(expected))
        if unknown:
            raise ProjectError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
        return {**expected, **{k: check_type(expected[k], v, f"{where}.{k}") for k, v in value.items()}}
    if ek != vk:
        raise ProjectError(f"{where}: expected {_describe(expected)}, got {_describe(value)} {value!r}")
    return value


def parse_override(text: str) -> tuple[str, str, object]:
    """``"STEM.name=VALUE"`` -> ``(stem, name, value)``, VALUE parsed as YAML."""
    m = re.fullmatch(r"([^.=\s]+)\.([A-Za-z_][A-Za-z0-9_]*)=(.*)", text, re.S)
    if not m:
        raise ProjectError(f"--set {text!r}: expected STEM.name=VALUE, e.g. 03_neural_rank_collapse.seed=1")
    stem, name, raw = m.groups()
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ProjectError(f"--set {stem}.{name}: {raw!r} is not valid YAML ({yaml_problem(exc)})") from None
    return stem, name, value


def apply_overrides(profile: dict[str, dict], overrides: list[str], profile_name: str) -> dict:
    """A copy of ``profile`` with the ``--set`` overrides applied, each checked against the
    profile: known chapter, known parameter, same type."""
    out = {stem: dict(params) for stem, params in profile.items()}
    for text in overrides:
        stem, name, value = parse_override(text)
        where = f"--set {stem}.{name}"
        if name == "profile":
            raise ProjectError(f"{where}: choose the profile with --profile, not --set")
        if stem not in out:
            raise ProjectError(
                f"{where}: no chapter {stem!r} in profile {profile_name}; "
                f"chapters: {', '.join(out) or '(none)'}"
            )
        if name not in out[stem]:
            known = ", ".join(out[stem]) or "(none)"
            raise ProjectError(f"{where}: {stem} has no parameter {name!r}; its parameters: {known}")
        out[stem][name] = check_type(out[stem][name], value, where)
    return out


# --------------------------------------------------------------------------------------------
# The `parameters` cell of a chapter notebook
def parameters_cells(nb) -> list:
    return [c for c in nb.cells if PARAMETERS_TAG in (c.get("metadata", {}).get("tags") or [])]


def parameters_cell(nb, name: str = "notebook"):
    cells = parameters_cells(nb)
    if len(cells) != 1:
        raise ProjectError(f"{name} has {len(cells)} cells tagged '{PARAMETERS_TAG}'; it needs exactly one")
    if cells[0].cell_type != "code":
        raise ProjectError(f"{name}: the cell tagged '{PARAMETERS_TAG}' is not a code cell")
    return cells[0]


def declared_parameters(nb, name: str = "notebook") -> dict:
    """The defaults of the notebook's one cell tagged ``parameters``."""
    return parameter_defaults(parameters_cell(nb, name).source, name)


def parameter_defaults(source: str, name: str = "notebook") -> dict:
    """The ``name = literal`` assignments of a parameters cell, in order.

    Anything else (a call, an import, an expression) is refused: a parameters cell holds
    literals only, so that the profiles can be compared with it and papermill can override it."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProjectError(f"{name}: parameters cell does not parse ({exc.msg}, line {exc.lineno})") from None
    values = {}
    for stmt in tree.body:
        target = None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, node = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            target, node = stmt.target.id, stmt.value
        if target is None:
            raise ProjectError(
                f"{name}: parameters cell line {stmt.lineno} is not `name = literal`"
            )
        try:
            values[target] = ast.literal_eval(node)
        except ValueError:
            raise ProjectError(
                f"{name}: parameter {target!r} (line {stmt.lineno}) is not a literal"
            ) from None
    return values


def with_values(source: str, values: dict) -> str:
    """``source`` (a parameters cell) with the literal of each ``name = literal`` in ``values``
    replaced by ``repr(values[name])``; comments, order and layout are kept."""
    tree = ast.parse(source)
    lines = [ln.encode() for ln in source.split("\n")]  # ast offsets count UTF-8 bytes
    edits = []
    for stmt in tree.body:
        target = getattr(stmt, "target", None) or (stmt.targets[0] if getattr(stmt, "targets", None) else None)
        if isinstance(target, ast.Name) and target.id in values and stmt.value is not None:
            edits.append((stmt.value, repr(values[target.id])))
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        merged = lines[first][: node.col_offset] + text.encode() + lines[last][node.end_col_offset:]
        lines[first : last + 1] = [merged]
    return "\n".join(ln.decode() for ln in lines)
