# The README's two commands: `make paper` (set up + run the study) and `make test` (set up + tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: paper test lint dryrun setup clean

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

clean:
	rm -rf results .snakemake
