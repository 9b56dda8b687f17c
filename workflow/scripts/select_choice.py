"""Snakemake entry point: logic in echomtl.jobs.select_choice."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import select_choice

select_choice(snakemake)
