"""Snakemake entry point: logic in echomtl.report.jobs.make_figure."""

from echomtl.report.jobs import make_figure

make_figure(snakemake)
