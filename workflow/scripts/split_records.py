"""Snakemake entry point of the split_records job (logic in echomtl.jobs.split_records)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import split_records

split_records(snakemake)
