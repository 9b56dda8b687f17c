"""Report stage of echomtl: what the evaluation wrote -> tables, figures, the paper.

Modules: ``results`` (the read-only view of the measurements the others query), ``summaries``
(each summary computed once for tables and text), ``outputs`` (the registry of tables and
figures), ``tables``, ``figures``, ``context`` (what the template needs), ``latex`` and ``pdf``.
See ``docs/architecture.md`` for the stages and ``paper/README.md`` for the order of the calls.
"""
