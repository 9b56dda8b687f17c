"""Snakemake entry point of the split_records job (logic in echomtl.jobs.split_records)."""

from echomtl.jobs import split_records

split_records(snakemake)
