"""Snakemake entry point of the train job (logic in echomtl.jobs.train)."""

from echomtl.jobs import train

train(snakemake)
