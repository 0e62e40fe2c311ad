#!/usr/bin/env bash
# Run the book's own runner (ci/build_book.py) on a GPU machine that has a CUDA build of torch
# but no Jupyter stack, e.g. the lent GPU machine: one chapter after another, each under a time
# limit, carrying on after a failure, the records and executed notebooks packed for the trip back.
#
#   bash ci/gpu_paper_run.sh                                   # every chapter, profile paper
#   bash ci/gpu_paper_run.sh 03_neural_rank_collapse 02_eigenvalue_equation
#   PROFILE=ci CHAPTER_BUDGET_S=60 bash ci/gpu_paper_run.sh 01_introduction   # smoke test
#
# What it needs: a python3 (PYTHON=..., default python3) with torch and the scientific stack; when
# papermill, jupytext or nbformat do not import there, the wheels in .whl/ (git-ignored; carry
# it) are installed with pip --no-index --no-deps into $NRC_SITE (default /tmp/site).
# It writes to $OUT (default _build/gpu_run): records.json (ci/build_book.py's run records),
# executed.tar.gz (the staged notebooks) and log.txt. The HTML is not built there
# (--no-html): build it where jupyter-book is installed, from the staged notebooks.
# Exit status: that of ci/build_book.py (0 all ok, 1 a chapter failed or timed out, 2 refused).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PROFILE="${PROFILE:-paper}"
CHAPTER_BUDGET_S="${CHAPTER_BUDGET_S:-450}"
OUT="${OUT:-$ROOT/_build/gpu_run}"
SITE="${NRC_SITE:-/tmp/site}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT" || exit 2
exec > >(tee "$OUT/log.txt") 2>&1

if ! "$PYTHON" -c 'import papermill, jupytext, nbformat' 2>/dev/null; then
  [ -d .whl ] || { echo "error: $PYTHON lacks papermill/jupytext/nbformat and there is no .whl/ folder of wheels to install them from"; exit 2; }
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl || exit 2
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PYTHON" -m ipykernel install --user --name python3 >/dev/null || exit 2  # the kernel papermill starts
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" NRC_CACHE_DIR="${NRC_CACHE_DIR:-/tmp/nrc-cache}"

only=()
for stem in "$@"; do only+=(--only "$stem"); done
"$PYTHON" ci/build_book.py --profile "$PROFILE" --no-html --keep-going --timeout "$CHAPTER_BUDGET_S" \
  --records "$OUT/records.json" "${only[@]}"
status=$?
tar -czf "$OUT/executed.tar.gz" -C _build stage 2>/dev/null
echo "== exit status $status; records: $OUT/records.json; notebooks: $OUT/executed.tar.gz"
exit $status
