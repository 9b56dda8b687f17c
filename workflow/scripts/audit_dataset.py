"""Snakemake entry point of the audit_dataset job (logic in echomtl.jobs.audit_dataset)."""

from echomtl.jobs import audit_dataset

audit_dataset(snakemake)
