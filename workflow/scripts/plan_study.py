"""Snakemake entry point: logic in echomtl.jobs.plan_study."""

import _package  # noqa: F401  (--use-conda: echomtl from src/)

from echomtl.jobs import plan_study

plan_study(snakemake)
