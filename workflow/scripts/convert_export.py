"""Snakemake entry point of the convert_export job (logic in echomtl.jobs.convert_export)."""

from echomtl.jobs import convert_export

convert_export(snakemake)
