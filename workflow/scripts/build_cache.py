"""Snakemake entry point of the build_cache job (logic in echomtl.jobs.build_cache)."""

from echomtl.jobs import build_cache

build_cache(snakemake)
