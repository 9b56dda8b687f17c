# The README's two commands: `make paper` (set up + run the study) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: paper test lint dryrun setup clean archive unpack

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --quiet -e '.[dev]'  # -qq: errors only (no index notices)
	touch $(STAMP)

setup: $(STAMP)

# TeX: installed when missing if this is root on a Debian-family machine, else the command is
# printed and the study still runs to main.tex.
paper: $(STAMP)
	-scripts/install-tex.sh
	$(BIN)/snakemake --cores $(CORES) --workflow-profile profiles/default

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

dryrun: $(STAMP)
	$(BIN)/snakemake -n --quiet
	$(BIN)/snakemake -n --quiet --configfile config/paper.yaml

# A finished study's results in one file with a SHA-256 manifest, and back (docs/archive.md):
#   make archive [RESULTS=results/real-cpu] [WEIGHTS=1]   ->  archive/<results path>.tar.gz
#   make unpack ARCHIVE=archive/results.tar.gz            (in a fresh clone; then `make paper`)
RESULTS ?= results
ARCHIVE ?= archive/$(subst /,-,$(RESULTS)).tar.gz
archive: $(STAMP)
	$(BIN)/python -m echomtl.archive pack $(RESULTS) $(ARCHIVE) $(if $(filter 1,$(WEIGHTS)),--weights)

unpack: $(STAMP)
	$(BIN)/python -m echomtl.archive unpack $(ARCHIVE)

clean:
	rm -rf results .snakemake
