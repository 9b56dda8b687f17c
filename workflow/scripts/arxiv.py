"""Snakemake entry point: logic in echomtl.report.jobs.arxiv."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.report.jobs import arxiv

arxiv(snakemake)
