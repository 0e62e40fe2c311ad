"""ci/glue_values.py reads what a glued value shows, under papermill's mime prefix."""

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import glue_values  # noqa: E402


def _glued(name, data):
    prefix = "application/papermill.record/"
    return nbformat.v4.new_output("display_data", data={prefix + k: v for k, v in data.items()},
                                  metadata={"scrapbook": {"name": name, "mime_prefix": prefix}})


def _notebook(path, outputs):
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = outputs
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)


def test_values_are_read_under_the_mime_prefix_markdown_first(tmp_path):
    _notebook(tmp_path / "a.ipynb", [_glued("n", {"text/plain": "5"}),
                                     _glued("s", {"text/plain": "'x'", "text/markdown": "x"}),
                                     _glued("f", {"image/png": "iVBOR", "text/plain": "<Figure>"})])
    assert glue_values.read(tmp_path / "a.ipynb") == {"n": "5", "s": "x", "f": "<Figure>"}


def test_diff_lists_changed_added_and_removed_keys(tmp_path):
    _notebook(tmp_path / "old.ipynb", [_glued("a", {"text/plain": "1"}), _glued("b", {"text/plain": "2"})])
    _notebook(tmp_path / "new.ipynb", [_glued("a", {"text/plain": "1.5"}), _glued("c", {"text/plain": "3"})])
    out = subprocess.run([sys.executable, str(ROOT / "ci" / "glue_values.py"), "--diff",
                          str(tmp_path / "old.ipynb"), str(tmp_path / "new.ipynb")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert "- b: '2'" in out and "+ c: '3'" in out and "~ a: '1' -> '1.5'" in out
    assert out[-1] == "2 keys before, 2 after: 1 changed, 1 added, 1 removed, 0 equal"
