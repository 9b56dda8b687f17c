"""Snakemake entry point: logic in echomtl.jobs.aggregate_metrics."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import aggregate_metrics

aggregate_metrics(snakemake)
