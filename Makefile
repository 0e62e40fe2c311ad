# The two commands of this project (see README.md):
#   make book    execute every chapter with the `ci` profile and build _build/html
#                (PROFILE=paper make book: the full-size profile, GPU when present)
#   make test    unit tests, then the `ci` book, then checks of the built HTML
# Each creates the project-local virtual environment .venv first (once; again when
# pyproject.toml changes).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := book

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nrc-installed
PROFILE ?= ci
# Extra options for ci/build_book.py, e.g. BOOK_ARGS="--only 02_eigenvalue_equation"
BOOK_ARGS ?=

# Thread caps for everything started from here (the runner sets the chapters' own caps
# from the profile: 2 threads for ci, all cores otherwise).
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= $(OMP_NUM_THREADS)
export NRC_PROGRESS ?= 0

.PHONY: book test unit env sync clean distclean

env: $(STAMP)

# torch is pinned in pyproject.toml (torch==2.13.0): pip keeps a torch 2.13.0 that is already
# installed (the CPU build found here, or a CUDA build installed first, see README.md).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[book,test]"
	@touch $@

book: $(STAMP)
	$(PY) ci/build_book.py --profile $(PROFILE) $(BOOK_ARGS)

unit: $(STAMP)
	$(PY) -m pytest -q

test: unit
	$(PY) ci/build_book.py --profile ci
	$(PY) ci/check_html.py

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync book/*.md

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
