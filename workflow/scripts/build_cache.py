"""Snakemake entry point of the build_cache job (logic in echomtl.jobs.build_cache)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import build_cache

build_cache(snakemake)
