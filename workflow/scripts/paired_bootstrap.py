"""Snakemake entry point: logic in echomtl.jobs.paired_bootstrap."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import paired_bootstrap

paired_bootstrap(snakemake)
