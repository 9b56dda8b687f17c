"""Snakemake entry point: logic in echomtl.report.jobs.make_table."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import make_table

make_table(snakemake)
