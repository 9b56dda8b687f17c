"""Snakemake entry point: logic in echomtl.report.jobs.select_group."""

from echomtl.report.jobs import select_group

select_group(snakemake)
