"""Snakemake entry point of the audit_dataset job (logic in echomtl.jobs.audit_dataset)."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import audit_dataset

audit_dataset(snakemake)
