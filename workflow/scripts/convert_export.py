"""Snakemake entry point of the convert_export job (logic in echomtl.jobs.convert_export)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import convert_export

convert_export(snakemake)
