"""Bad chapter parameters through the book runner: each is refused with one line that names the
chapter and the parameter, exit status 2, before any chapter executes (the table of the runner's
refusals; the rules are each chapter's ``PARAMETERS`` in ``nrc_utils.experiments``)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import build_book  # noqa: E402  (ci/build_book.py)

# (chapter, parameter, YAML value): empty grids, zero widths, K out of range, non-finite or negative
# values, splits that leave a side empty, unknown choices.
CASES = [
    ("01_introduction", "widths", "[]"),
    ("01_introduction", "widths", "[64, 0, 64]"),
    ("01_introduction", "lam_wd", "-0.01"),
    ("01_introduction", "lr", ".nan"),
    ("01_introduction", "momentum", "1.0"),
    ("01_introduction", "test_fraction", "0.999"),
    ("01_introduction", "loss", "hinge"),
    ("02_eigenvalue_equation", "lambdas", "[]"),
    ("02_eigenvalue_equation", "gm_K", "0"),
    ("02_eigenvalue_equation", "batch_sizes", "[]"),
    ("02_eigenvalue_equation", "polish_tol", "-1e-7"),
    ("02_eigenvalue_equation", "gd_lr", ".inf"),
    ("03_neural_rank_collapse", "lambdas", "[]"),
    ("03_neural_rank_collapse", "K", "0"),
    ("03_neural_rank_collapse", "K", "24"),
    ("03_neural_rank_collapse", "widths", "[24, 0, 24]"),
    ("03_neural_rank_collapse", "sweep_s", "-0.4"),
    ("03_neural_rank_collapse", "centroid_s", "[]"),
    ("03_neural_rank_collapse", "polish_max_seconds", "-1.0"),
    ("04_gaussian_mixtures", "s_grid", "[]"),
    ("04_gaussian_mixtures", "lambdas", "[0.0, 0.01]"),
    ("04_gaussian_mixtures", "K", "40"),
    ("04_gaussian_mixtures", "tcv_s_grid", "[-0.1]"),
    ("04_gaussian_mixtures", "polish_tol", ".nan"),
    ("05_deep_linear_networks", "depths", "[]"),
    ("05_deep_linear_networks", "width", "0"),
    ("05_deep_linear_networks", "width", "4"),
    ("05_deep_linear_networks", "n_per_class", "2"),
    ("05_deep_linear_networks", "lambdas", "[-0.01]"),
    ("06_real_data", "datasets", "[]"),
    ("06_real_data", "datasets", "[digits, svhn]"),
    ("06_real_data", "lambdas", "[0.0, 0.01]"),
    ("06_real_data", "test_fraction", "0.0"),
    ("06_real_data", "widths", "[]"),
    ("06_real_data", "momentum", "-0.5"),
    ("07_beyond_the_mlp", "cnn_lambdas", "[]"),
    ("07_beyond_the_mlp", "cnn_channels", "[4]"),
    ("07_beyond_the_mlp", "cnn_kernel", "5"),
    ("07_beyond_the_mlp", "att_d", "4"),
    ("07_beyond_the_mlp", "claim_tol", "-1.0"),
    ("07_beyond_the_mlp", "activation", "relu"),
]


@pytest.fixture
def never_execute(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a chapter was executed although its parameters are bad")

    monkeypatch.setattr(build_book, "execute_chapter", refuse)


@pytest.mark.parametrize("stem, name, value", CASES, ids=[f"{s[:2]}-{n}={v}" for s, n, v in CASES])
def test_bad_parameter_is_refused_in_one_line_before_anything_runs(stem, name, value, capsys, never_execute):
    rc = build_book.main(["--only", stem, "--set", f"{stem}.{name}={value}", "--no-html"])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {stem}.{name} = "), err
    assert out == ""  # nothing started


def test_every_numbered_chapter_declares_rules_for_exactly_its_parameters():
    sys.path.insert(0, str(ROOT / "ci"))
    import project

    from nrc_utils import experiments

    rules = experiments.rules()
    for chapter in project.read_toc(ROOT):
        if not chapter.is_numbered:
            continue
        import jupytext

        declared = set(project.declared_parameters(jupytext.read(chapter.source(ROOT)))) - {"profile"}
        assert chapter.stem in rules, f"{chapter.stem} declares no PARAMETERS rules"
        assert set(rules[chapter.stem].names) == declared, chapter.stem


@pytest.mark.parametrize("profile", ["ci", "paper"])
def test_the_profiles_pass_every_chapters_rules(profile):
    sys.path.insert(0, str(ROOT / "ci"))
    import project

    from nrc_utils import experiments

    for stem, values in project.load_profile(ROOT, profile).items():
        experiments.check_parameters(stem, values)
