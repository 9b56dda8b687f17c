"""Snakemake entry point: logic in echomtl.jobs.sharing."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import sharing

sharing(snakemake)
