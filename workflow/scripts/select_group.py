"""Snakemake entry point: logic in echomtl.jobs.select_group."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import select_group

select_group(snakemake)
