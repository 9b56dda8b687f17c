"""Snakemake entry point: logic in echomtl.report.jobs.make_figure."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import make_figure

make_figure(snakemake)
