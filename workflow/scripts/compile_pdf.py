"""Snakemake entry point: logic in echomtl.report.jobs.compile_pdf."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import compile_pdf

compile_pdf(snakemake)
