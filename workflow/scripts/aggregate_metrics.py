"""Snakemake entry point: logic in echomtl.report.jobs.aggregate_metrics."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import aggregate_metrics

aggregate_metrics(snakemake)
