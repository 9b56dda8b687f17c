"""Snakemake entry point: logic in echomtl.report.jobs.paired_bootstrap."""

from echomtl.report.jobs import paired_bootstrap

paired_bootstrap(snakemake)
