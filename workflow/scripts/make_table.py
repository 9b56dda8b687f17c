"""Snakemake entry point: logic in echomtl.report.jobs.make_table."""

from echomtl.report.jobs import make_table

make_table(snakemake)
