"""Snakemake entry point: logic in echomtl.jobs.generate_synthetic."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import generate_synthetic

generate_synthetic(snakemake)
