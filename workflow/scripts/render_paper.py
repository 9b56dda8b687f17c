"""Snakemake entry point: logic in echomtl.report.jobs.render_paper."""

from echomtl.report.jobs import render_paper

render_paper(snakemake)
