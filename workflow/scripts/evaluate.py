"""Snakemake entry point of the evaluate job (logic in echomtl.jobs.evaluate)."""

from echomtl.jobs import evaluate

evaluate(snakemake)
