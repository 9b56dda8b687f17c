"""Snakemake entry point of the evaluate job (logic in echomtl.jobs.evaluate)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import evaluate

evaluate(snakemake)
