"""Snakemake entry point: logic in echomtl.report.jobs.render_paper."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import render_paper

render_paper(snakemake)
