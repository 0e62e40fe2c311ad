# The two commands of this project (see README.md):
#   make book    execute every chapter with the `ci` profile and build _build/html
#                (PROFILE=paper make book: the full-size profile, GPU when present)
#   make test    unit tests, then the `ci` book, then checks of the built HTML: static, links,
#                and a real browser (headless Chromium, light and dark theme, screenshots)
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
# system-data runs first, every time (order-only: it never forces a reinstall of .venv).
$(STAMP): pyproject.toml | system-data
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e ".[book,test]"
	@touch $@

# Debian packages the project uses, installed where apt-get can be used (as root on Debian/Ubuntu):
# a no-op when installed (dpkg -s); apt-get update only when the lists are empty or the install
# failed; otherwise one line on how to get them.
#   dataset-fashion-mnist  Fashion-MNIST in /usr/share/datasets/fashion-mnist, which nrc_utils.data
#                          searches after the user's data root (never fails the build: chapter 6
#                          says which data sets are absent)
#   slurm-wlm, munge       a single-node SLURM that tests/test_sweep.py starts for one SLURMCluster sweep
#   chromium               the real browser of ci/check_browser.py and tests/test_browser.py (never
#                          a browser download: playwright only drives Debian's chromium)
APT_GET := DEBIAN_FRONTEND=noninteractive timeout 300 apt-get -qq -o Acquire::Retries=1 -o Acquire::http::Timeout=30
# $(call apt_install,PACKAGES,HOWTO): install PACKAGES (first from the present lists, then after an update)
define apt_install
if dpkg -s $(1) >/dev/null 2>&1; then :; \
elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
  if { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null \
       && $(APT_GET) install -y $(1) >/dev/null 2>&1; } \
     || { $(APT_GET) update >/dev/null 2>&1 \
       && $(APT_GET) install -y $(1) >/dev/null 2>&1; }; then \
    echo "installed $(1)"; \
  else echo "$(2) (apt-get could not install it here)"; fi; \
else echo "$(2)"; fi
endef
FASHION_HOWTO := Fashion-MNIST not installed: run apt-get install dataset-fashion-mnist as root, or copy the four \
  *-ubyte.gz files to data/FashionMNIST/raw, or call nrc_utils.data.fashion_mnist(download=True)
SLURM_HOWTO := no single-node SLURM: tests/test_sweep.py skips its SLURMCluster test (apt-get install slurm-wlm munge as root)
BROWSER_HOWTO := no Chromium for the browser check: run apt-get install chromium chromium-driver as root \
  (Debian/Ubuntu), or pass ci/check_browser.py --browser PATH

.PHONY: system-data browser slurm
system-data:
	@$(call apt_install,dataset-fashion-mnist,$(FASHION_HOWTO))

browser:
	@$(call apt_install,chromium chromium-driver,$(BROWSER_HOWTO))

slurm:
	@$(call apt_install,slurm-wlm munge,$(SLURM_HOWTO))

book: $(STAMP)
	$(PY) ci/build_book.py --profile $(PROFILE) $(BOOK_ARGS)

unit: $(STAMP) browser slurm
	$(PY) -m pytest -q

test: unit
	$(PY) ci/build_book.py --profile ci
	$(PY) ci/check_html.py
	$(PY) ci/check_links.py
	$(PY) ci/check_browser.py

# A parameter sweep of one chapter on Dask (see README.md, "Sweeps")
GRID ?= ci/sweeps/example.yaml
SWEEP_ARGS ?=
.PHONY: sweep
sweep: $(STAMP)
	$(PY) -m nrc_utils.sweep $(GRID) $(SWEEP_ARGS)

sync: $(STAMP)
	$(VENV)/bin/jupytext --sync book/*.md

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV)
