"""Snakemake entry point: logic in echomtl.jobs.interference."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import interference

interference(snakemake)
