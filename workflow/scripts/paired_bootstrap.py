"""Snakemake entry point: logic in echomtl.report.jobs.paired_bootstrap."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import paired_bootstrap

paired_bootstrap(snakemake)
