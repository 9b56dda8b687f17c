"""Snakemake entry point of the pool_folds and pool_selected jobs (logic in echomtl.jobs)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import pool_folds

pool_folds(snakemake)
