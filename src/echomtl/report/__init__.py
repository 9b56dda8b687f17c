"""report stage of echomtl: run outputs -> tidy table, statistics, tables, figures, paper.

Modules (each function takes explicit paths/frames and writes explicit outputs atomically):
``aggregate`` (tidy table, validation selection, diagnostics and weight-phase summaries),
``stats`` (seed summaries, bootstrap intervals, paired comparisons, verdicts), ``results`` (the
read-only view the other modules query), ``tables`` (booktabs LaTeX tables), ``figures``
(PDF + PNG figures), ``context`` (what the template needs), ``latex`` (escaping,
Jinja2 environment, ``numbers.tex``, rendering) and ``pdf`` (latexmk + log checks).
See ``paper/README.md`` for the order in which the workflow calls them.
"""
