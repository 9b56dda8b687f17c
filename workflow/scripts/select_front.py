"""Snakemake entry point: logic in echomtl.jobs.select_front."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import select_front

select_front(snakemake)
