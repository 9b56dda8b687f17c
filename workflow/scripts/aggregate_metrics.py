"""Snakemake entry point: logic in echomtl.report.jobs.aggregate_metrics."""

from echomtl.report.jobs import aggregate_metrics

aggregate_metrics(snakemake)
