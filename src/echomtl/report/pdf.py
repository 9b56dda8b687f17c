"""Compile the paper with latexmk and refuse a PDF with unresolved references or missing files.

pdflatex finishes with a PDF even when a citation, a cross-reference or an input file is
missing (it prints ``??`` or leaves a blank), so after latexmk succeeds we scan the log and
raise :class:`LatexError` listing every such problem.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from echomtl.atomic import PathLike

__all__ = ["LatexError", "compile_pdf", "scan_log", "LOG_PROBLEMS"]

#: log patterns that make the PDF unacceptable.
LOG_PROBLEMS = (
    re.compile(r"LaTeX Warning: Reference `[^']*' on page \S+ undefined.*"),
    re.compile(r"LaTeX Warning: There were undefined references\."),
    re.compile(r"LaTeX Warning: Citation `[^']*' on page \S+ undefined.*"),
    re.compile(r"Package natbib Warning: Citation `[^']*' on page \S+ undefined.*"),
    re.compile(r"Package natbib Warning: There were undefined citations\."),
    re.compile(r"LaTeX Warning: Citation `[^']*' undefined.*"),
    re.compile(r"LaTeX Warning: File `[^']*' not found.*"),
    re.compile(r"! LaTeX Error: File `[^']*' not found.*"),
    re.compile(r"Package pdftex\.def Error: File `[^']*' not found.*"),
    re.compile(r"No file \S+\.(tex|bbl|pdf|png)\.?"),
    re.compile(r"LaTeX Warning: Label\(s\) may have changed.*"),
    re.compile(r"! Undefined control sequence.*"),
)


class LatexError(RuntimeError):
    """The paper did not compile cleanly; the message lists the problems and the log path."""


def scan_log(log_path: PathLike) -> list[str]:
    """Problems (see :data:`LOG_PROBLEMS`) found in a LaTeX log, in order, without repeats."""
    text = Path(log_path).read_text(encoding="latin-1")
    # TeX wraps log lines at 79 characters: join wrapped lines before matching.
    joined = []
    for line in text.splitlines():
        if joined and len(joined[-1]) == 79:
            joined[-1] += line
        else:
            joined.append(line)
    found: list[str] = []
    for line in joined:
        for pattern in LOG_PROBLEMS:
            m = pattern.search(line)
            if m and m.group(0) not in found:
                found.append(m.group(0))
    return found


def compile_pdf(tex_path: PathLike, out_dir: PathLike | None = None, timeout_s: int = 600) -> Path:
    """Run ``latexmk -pdf`` on ``tex_path`` (cwd: its folder); return the PDF path.

    Raises:
        FileNotFoundError: latexmk is not installed.
        LatexError: latexmk failed, or the final log reports an undefined reference or
            citation or a missing file (each listed in the message).
    """
    tex = Path(tex_path).resolve()
    if not tex.exists():
        raise FileNotFoundError(f"{tex}: no such file")
    exe = shutil.which("latexmk")
    if exe is None:
        raise FileNotFoundError(
            "latexmk not found: install TeX Live (latexmk, texlive-latex-recommended, "
            "texlive-fonts-recommended, texlive-latex-extra) to build the PDF"
        )
    out = Path(out_dir).resolve() if out_dir is not None else tex.parent
    out.mkdir(parents=True, exist_ok=True)
    # No shell escape at all (TeX Live's default allows a restricted list): a name in the data
    # that reached the source as \write18 must never run anything.
    cmd = [
        exe, "-pdf", "-pdflatex=pdflatex -no-shell-escape %O %S", "-interaction=nonstopmode",
        "-halt-on-error", "-file-line-error", f"-output-directory={out}", tex.name,
    ]  # fmt: skip
    env = {**os.environ, "shell_escape": "f"}
    proc = subprocess.run(
        cmd, cwd=tex.parent, capture_output=True, text=True, timeout=timeout_s, check=False,
        env=env,
    )  # fmt: skip
    log = out / (tex.stem + ".log")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        errors = _first_errors(log) if log.exists() else []
        raise LatexError(
            f"latexmk failed on {tex} (exit {proc.returncode}); log: {log}\n"
            + ("errors:\n  " + "\n  ".join(errors) + "\n" if errors else "")
            + f"last output:\n{tail}"
        )
    problems = scan_log(log)
    if problems:
        raise LatexError(
            f"{tex}: the PDF has unresolved items (log: {log}):\n  " + "\n  ".join(problems)
        )
    pdf = out / (tex.stem + ".pdf")
    if not pdf.exists():
        raise LatexError(f"latexmk reported success but {pdf} does not exist")
    return pdf


def _first_errors(log: Path, limit: int = 10) -> list[str]:
    lines = log.read_text(encoding="latin-1").splitlines()
    errors = []
    for i, line in enumerate(lines):
        if line.startswith("!") or re.match(r"^[^:\s]+:\d+: ", line):
            errors.append(" ".join(x.strip() for x in lines[i : i + 3]))
        if len(errors) >= limit:
            break
    return errors
