"""Snakemake entry point: logic in echomtl.report.jobs.bootstrap_experiment."""

from echomtl.report.jobs import bootstrap_experiment

bootstrap_experiment(snakemake)
