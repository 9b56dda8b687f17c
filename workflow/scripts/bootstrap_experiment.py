"""Snakemake entry point: logic in echomtl.jobs.bootstrap_experiment."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import bootstrap_experiment

bootstrap_experiment(snakemake)
