"""LaTeX rendering: escaping, the Jinja2 environment, the numbers file and the paper itself.

Why this shape:
- LaTeX uses ``{}``, ``%`` and ``#`` everywhere, so the template uses LaTeX-looking delimiters:
  ``\\VAR{expr}`` for values, ``\\BLOCK{stmt}`` for statements, ``\\#{...}`` for comments, and
  line statements starting with ``%%`` (``%% if x`` ... ``%% endif``).
- Every plain ``str`` that reaches the output is escaped automatically (``finalize``); text that is
  already LaTeX is wrapped in :class:`Tex` and passes unchanged. A bare ``float`` reaching the text
  is an error: numbers enter the paper only as macros from ``numbers.tex`` (see
  :func:`write_numbers`), through the template function ``n(key)``, which fails on unknown keys.
- Comparative words ("higher than", ...) come from the paired bootstrap (:func:`compare_phrase`),
  never from the template author, so the text stays true when the results change.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from echomtl.atomic import PathLike, write_text
from echomtl.evaluation.vocabulary import VERDICTS

__all__ = [
    "Tex",
    "latex_escape",
    "macro_name",
    "format_number",
    "compare_phrase",
    "make_env",
    "write_numbers",
    "render_paper",
    "PHRASES",
]


class Tex(str):
    """A string that is already valid LaTeX (not escaped again)."""

    __slots__ = ()


_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}
_UNICODE = {
    "\u00a0": "~",
    "\u2013": "--",
    "\u2014": "---",
    "\u2018": "`",
    "\u2019": "'",
    "\u201c": "``",
    "\u201d": "''",
    "\u2026": r"\ldots{}",
    "\u00b1": r"\ensuremath{\pm}",
    "\u00d7": r"\ensuremath{\times}",
    "\u2192": r"\ensuremath{\rightarrow}",
    "\u2190": r"\ensuremath{\leftarrow}",
    "\u2264": r"\ensuremath{\leq}",
    "\u2265": r"\ensuremath{\geq}",
    "\u2248": r"\ensuremath{\approx}",
    "\u2260": r"\ensuremath{\neq}",
    "\u2212": r"\ensuremath{-}",
    "\u00b0": r"\ensuremath{^\circ}",
    "\u00b5": r"\ensuremath{\mu}",
    "\u2022": r"\textbullet{}",
    "\u00a7": r"\S{}",
    "\u00a9": r"\textcopyright{}",
    "\u00ae": r"\textregistered{}",
    "\u2122": r"\texttrademark{}",
    "\u20ac": "EUR",
}
_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta",
    "η": "eta", "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu",
    "ξ": "xi", "π": "pi", "ρ": "rho", "σ": "sigma", "τ": "tau", "υ": "upsilon", "φ": "phi",
    "χ": "chi", "ψ": "psi", "ω": "omega", "Γ": "Gamma", "Δ": "Delta", "Θ": "Theta",
    "Λ": "Lambda", "Ξ": "Xi", "Π": "Pi", "Σ": "Sigma", "Φ": "Phi", "Ψ": "Psi", "Ω": "Omega",
}  # fmt: skip
_UNICODE.update({k: rf"\ensuremath{{\{v}}}" for k, v in _GREEK.items()})


def _escape_char(ch: str) -> str:
    if ch in _SPECIALS:
        return _SPECIALS[ch]
    if ch in _UNICODE:
        return _UNICODE[ch]
    if ch in "\n\r\t":
        return " "
    code = ord(ch)
    if code < 0x80:
        return ch if ch.isprintable() else ""
    if 0xC0 <= code <= 0xFF:  # Latin-1 letters: fine with inputenc utf8 + fontenc T1
        return ch
    # Anything else: the closest ASCII (accents stripped); '?' when there is none, because an
    # unknown character stops pdflatex ("Unicode character ... not set up for use with LaTeX").
    ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return "".join(_escape_char(c) for c in ascii_) if ascii_ else "?"


def latex_escape(value: object) -> Tex:
    """Escape text for LaTeX: ``& % $ # _ { } ~ ^ \\ < > |``, common unicode, control chars.

    A :class:`Tex` value is returned unchanged (it is LaTeX already).
    """
    if isinstance(value, Tex):
        return value
    return Tex("".join(_escape_char(c) for c in str(value)))


_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]


def macro_name(key: str) -> str:
    """A letters-only LaTeX macro name for a result key, e.g. ``map50/gradnorm_a1.5``.

    -> ``RMapFiveZeroGradnormAOnePtFive``: digits are spelled out (TeX control words are letters
    only), ``.`` becomes ``Pt``, other separators start a new capitalised word.
    """
    if not key or not isinstance(key, str):
        raise ValueError(f"macro key must be a non-empty string, got {key!r}")
    words = re.split(r"[^A-Za-z0-9.]+", key.replace("%", "Pct"))
    parts = []
    for word in words:
        for chunk in re.findall(r"[A-Za-z]+|[0-9]|\.", word):
            if chunk == ".":
                parts.append("Pt")
            elif chunk.isdigit():
                parts.append(_DIGITS[int(chunk)])
            else:
                parts.append(chunk[0].upper() + chunk[1:])
    name = "R" + "".join(parts)
    if not re.fullmatch(r"[A-Za-z]+", name) or name == "R":
        raise ValueError(f"cannot make a macro name from key {key!r}")
    return name


def format_number(value: Any, digits: int = 3, percent: bool = False, signed: bool = False) -> Tex:
    """Format a result for the text; NaN/None -> ``n/a``; ints stay ints."""
    if value is None:
        return Tex("n/a")
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers for the paper")
    if isinstance(value, int):
        return Tex(f"{value:+d}" if signed else f"{value:d}")
    value = float(value)
    if value != value:  # NaN
        return Tex("n/a")
    if percent:
        value *= 100.0
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    if text.lstrip("+-").strip("0.") == "" and text[0] in "+-":
        text = ("+" if signed else "") + text[1:]  # "-0.000" -> "0.000"
    if text.startswith("-"):
        text = "$-$" + text[1:]  # a typographic minus, not a hyphen
    return Tex(text + (r"\%" if percent else ""))


def format_share(value: Any, digits: int = 0) -> Tex:
    """A share as a percentage that never rounds a partial share to 0% or 100%: more decimals
    (up to two) where needed, and "$>$99.99%" / "$<$0.01%" beyond that."""
    if value is None or (isinstance(value, float) and value != value):
        return Tex("n/a")
    v = float(value)
    while digits < 2 and 0 < v < 1 and round(100 * v, digits) in (0.0, 100.0):
        digits += 1
    if 0 < v < 1 and round(100 * v, digits) == 100.0:
        return Tex("$>$99.99\\%")
    if 0 < v < 1 and round(100 * v, digits) == 0.0:
        return Tex("$<$0.01\\%")
    return format_number(v, digits, percent=True)


def interval_digits(low: float | None, high: float | None) -> int:
    """Decimals a value with this 95% interval deserves: 2 when the interval is +-0.01 or wider
    (a third decimal would be noise), else 3; 3 without an interval."""
    if low is None or high is None or low != low or high != high:
        return 3
    return 2 if (float(high) - float(low)) / 2 >= 0.01 else 3


def span(low: str, high: str) -> Tex:
    """``low--high``, or the one value when both print the same (never "0.02--0.02")."""
    return Tex(str(low) if str(low) == str(high) else f"{low}--{high}")


def format_small(value: Any, digits: int = 2, signed: bool = False) -> Tex:
    """A value that may be close to 0 (a median cosine, an interval bound): ``digits`` decimals,
    or two significant digits when those decimals would print 0, so that -0.0045 is never shown
    as 0.00 (and a bound's side of zero, which decides a verdict, stays visible)."""
    if value is None or (isinstance(value, float) and value != value):
        return Tex("n/a")
    value = float(value)
    if value != 0 and abs(value) < 10 ** (-digits) / 2:
        decimals = max(digits, 1 - math.floor(math.log10(abs(value))))
        return format_number(value, decimals, signed=signed)
    return format_number(value, digits, signed=signed)


#: comparative phrases by verdict (statistics.verdict); "A is <phrase> B".
PHRASES = dict(zip(VERDICTS, (Tex("higher than"), Tex("lower than"),
                              Tex(r"not distinguishable at 95\% from")), strict=True))  # fmt: skip


def compare_phrase(verdict: str) -> Tex:
    """``"higher"`` -> ``higher than`` etc.; unknown verdicts raise (never a silent default)."""
    try:
        return PHRASES[verdict]
    except KeyError:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {list(PHRASES)}") from None


def _finalize(value: Any) -> str:
    if isinstance(value, Tex):
        return str(value)
    if isinstance(value, bool):
        raise TypeError(f"a boolean ({value}) reached the paper text; use it in a condition")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise TypeError(
            f"a bare float ({value!r}) reached the paper text; numbers must come from "
            "numbers.tex through n('key')"
        )
    if value is None:
        raise TypeError("None reached the paper text (a missing result?)")
    return latex_escape(value)


def make_env(
    template_dir: PathLike, numbers: Mapping[str, Any] | None = None
) -> jinja2.Environment:
    """The Jinja2 environment with LaTeX-safe delimiters, auto-escaping and the ``n()`` function.

    Template globals: ``n(key)`` -> ``\\<macro>{}`` (error if ``key`` is not in ``numbers``);
    ``phrase(verdict)``. Filters: ``latex_escape`` (alias ``e``), ``phrase``, ``tex`` (mark a
    string as LaTeX, for text built from trusted pieces).
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        block_start_string=r"\BLOCK{",
        block_end_string="}",
        variable_start_string=r"\VAR{",
        variable_end_string="}",
        comment_start_string=r"\#{",
        comment_end_string="}",
        line_statement_prefix="%%",
        line_comment_prefix="%#",
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
    )
    known = dict(numbers or {})

    def n(key: str) -> Tex:
        if key not in known:
            raise KeyError(
                f"the template asks for result {key!r}, which numbers.tex does not define"
            )
        return Tex("\\" + macro_name(key) + "{}")

    env.globals["n"] = n
    env.globals["phrase"] = compare_phrase
    env.filters["latex_escape"] = latex_escape
    env.filters["e"] = latex_escape
    env.filters["phrase"] = compare_phrase
    env.filters["tex"] = Tex
    return env


def numbers_tex(numbers: Mapping[str, Any]) -> str:
    """The text of ``numbers.tex``: one ``\\newcommand`` per result, its key as a comment."""
    lines = [
        "% Generated by echomtl.report.latex.write_numbers from the study's results: do not edit.",
        "% Every number in the paper's text is one of these macros.",
    ]
    seen: dict[str, str] = {}
    for key in sorted(numbers):
        value = numbers[key]
        name = macro_name(key)
        if name in seen:
            raise ValueError(f"result keys {seen[name]!r} and {key!r} give the same macro \\{name}")
        seen[name] = key
        if isinstance(value, Tex):
            text = str(value)
        elif isinstance(value, str):
            text = latex_escape(value)
        else:
            text = format_number(value)
        safe_key = key.replace("\n", " ")
        lines.append(f"\\newcommand{{\\{name}}}{{{text}}}% {safe_key}")
    return "\n".join(lines) + "\n"


def write_numbers(numbers: Mapping[str, Any], out_tex: PathLike) -> Path:
    """Write ``numbers.tex`` (macro per key; :class:`Tex` values verbatim, str escaped)."""
    return write_text(out_tex, numbers_tex(numbers))


def _relativise(files: Any, base: Path) -> Any:
    if isinstance(files, Mapping):
        return {k: _relativise(v, base) for k, v in files.items()}
    if isinstance(files, str | os.PathLike):
        rel = Path(os.path.relpath(Path(files).resolve(), base.resolve())).as_posix()
        if any(c in rel for c in " %#{}\\"):
            raise ValueError(f"{files}: path characters that LaTeX cannot read in \\input")
        return Tex(rel)
    raise TypeError(f"context['files'] holds {type(files).__name__}; expected paths")


def render_paper(
    context: Mapping[str, Any],
    template_dir: PathLike,
    out_tex: PathLike,
    template_name: str = "main.tex.j2",
) -> Path:
    """Render ``template_dir/template_name`` with ``context`` into ``out_tex`` (atomically).

    ``context["numbers"]`` (key -> value) defines what ``n(key)`` accepts; paths under
    ``context["files"]`` (nested dicts of paths) are made relative to ``out_tex``'s folder, where
    latexmk and BibTeX run, ``files["bibliography"]`` too (named without ``.bib``), so that the
    source names no folder of the machine that built it and builds where it is copied (the
    arXiv source, a results archive rebuilt in another clone).
    """
    out_tex = Path(out_tex)
    ctx = dict(context)
    files = dict(ctx.get("files", {}))
    bib = files.pop("bibliography", None)
    ctx["files"] = _relativise(files, out_tex.parent)
    if bib is not None:
        bib_path = Path(os.path.relpath(Path(bib).resolve(), out_tex.parent.resolve()))
        if bib_path.suffix == ".bib":
            bib_path = bib_path.with_suffix("")
        if any(c in str(bib_path) for c in " %#{}\\"):
            raise ValueError(f"{bib}: a bibliography path BibTeX cannot read (spaces or specials)")
        ctx["files"]["bibliography"] = Tex(bib_path.as_posix())
    env = make_env(template_dir, ctx.get("numbers", {}))
    try:
        template = env.get_template(template_name)
    except jinja2.TemplateNotFound:
        raise FileNotFoundError(f"template {template_name!r} not found in {template_dir}") from None
    text = template.render(**ctx)
    return write_text(out_tex, text)
