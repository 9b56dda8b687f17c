"""Snakemake entry point: logic in echomtl.report.jobs.bootstrap_experiment."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import bootstrap_experiment

bootstrap_experiment(snakemake)
