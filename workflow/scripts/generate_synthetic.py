"""Snakemake entry point: logic in echomtl.jobs.generate_synthetic."""

from echomtl.jobs import generate_synthetic

generate_synthetic(snakemake)
