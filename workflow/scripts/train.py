"""Snakemake entry point of the train job (logic in echomtl.jobs.train)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import train

train(snakemake)
