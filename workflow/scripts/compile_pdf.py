"""Snakemake entry point: logic in echomtl.report.jobs.compile_pdf."""

from echomtl.report.jobs import compile_pdf

compile_pdf(snakemake)
