"""Escaping, numbers macros and the Jinja2 environment of echomtl.report.latex."""

from __future__ import annotations

import re

import jinja2
import pytest

from echomtl.report.latex import (
    Tex,
    compare_phrase,
    format_number,
    latex_escape,
    macro_name,
    make_env,
    numbers_tex,
    render_paper,
    write_numbers,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a & b", r"a \& b"),
        ("50%", r"50\%"),
        ("$x$", r"\$x\$"),
        ("#1", r"\#1"),
        ("gradnorm_a1.5", r"gradnorm\_a1.5"),
        ("{x}", r"\{x\}"),
        ("a~b", r"a\textasciitilde{}b"),
        ("x^2", r"x\textasciicircum{}2"),
        ("C:\\dir", r"C:\textbackslash{}dir"),
        ("a<b>c", r"a\textless{}b\textgreater{}c"),
        ("line\nbreak", "line break"),
    ],
)
def test_escape_specials(raw, escaped):
    assert latex_escape(raw) == escaped


def test_escape_unicode():
    assert latex_escape("α=1.5") == r"\ensuremath{\alpha}=1.5"
    assert latex_escape("a → b ± c") == r"a \ensuremath{\rightarrow} b \ensuremath{\pm} c"
    assert latex_escape("Dollár") == "Dollár"  # Latin-1: fine with inputenc + T1
    assert latex_escape("ā") == "a"  # closest ASCII
    assert latex_escape("中") == "?"  # nothing LaTeX could typeset without extra packages
    assert latex_escape("x\x00y") == "xy"


def test_tex_passes_unchanged_and_escape_is_idempotent_on_tex():
    t = Tex(r"\textbf{x}_1")
    assert latex_escape(t) is t
    assert latex_escape(latex_escape("a_b")) == r"a\_b"


def test_macro_name_letters_only_and_distinct():
    names = {macro_name(k) for k in ("map50/gradnorm_a1.5", "map50/gradnorm_a15", "ap50/AR/x")}
    assert len(names) == 3
    assert all(re.fullmatch(r"[A-Za-z]+", n) for n in names)
    with pytest.raises(ValueError):
        macro_name("")
    with pytest.raises(ValueError):
        macro_name("///")


def test_format_number():
    assert format_number(0.61234) == "0.612"
    assert format_number(float("nan")) == "n/a"
    assert format_number(None) == "n/a"
    assert format_number(-0.25, 2) == "$-$0.25"
    assert format_number(0.25, 2, signed=True) == "+0.25"
    assert format_number(-0.0001) == "0.000"
    assert format_number(-0.0001, signed=True) == "+0.000"
    assert format_number(0.125, 1, percent=True) == r"12.5\%"
    assert format_number(7) == "7"
    with pytest.raises(TypeError):
        format_number(True)


def test_compare_phrase():
    assert compare_phrase("higher") == "higher than"
    assert compare_phrase("lower") == "lower than"
    assert compare_phrase("not distinguishable at 95%") == r"not distinguishable at 95\% from"
    with pytest.raises(ValueError):
        compare_phrase("better")


def _env(tmp_path, text, numbers=None):
    (tmp_path / "t.j2").write_text(text)
    return make_env(tmp_path, numbers or {}).get_template("t.j2")


def test_env_escapes_strings_and_keeps_tex(tmp_path):
    tpl = _env(tmp_path, r"\section{\VAR{name}} \VAR{raw}")
    assert tpl.render(name="a_b & c", raw=Tex(r"\emph{x}")) == r"\section{a\_b \& c} \emph{x}"


def test_env_refuses_bare_floats_and_none(tmp_path):
    tpl = _env(tmp_path, r"x=\VAR{x}")
    with pytest.raises(TypeError, match="numbers.tex"):
        tpl.render(x=0.5)
    with pytest.raises(TypeError):
        tpl.render(x=None)
    assert tpl.render(x=3) == "x=3"


def test_env_number_macros_and_unknown_key(tmp_path):
    tpl = _env(tmp_path, r"mAP \VAR{n('map50/fixed')}.", {"map50/fixed": "0.5"})
    assert tpl.render() == "mAP \\" + macro_name("map50/fixed") + "{}."
    tpl = _env(tmp_path, r"\VAR{n('map50/nothing')}", {"map50/fixed": "0.5"})
    with pytest.raises(KeyError, match="map50/nothing"):
        tpl.render()


def test_env_line_statements_and_undefined(tmp_path):
    text = "%% for i in items\n\\item \\VAR{i}\n%% endfor\nend\n"
    assert _env(tmp_path, text).render(items=["a", "b"]) == "\\item a\n\\item b\nend\n"
    # a line comment vanishes but leaves its newline (so never put one inside a paragraph)
    assert _env(tmp_path, "a\n%# hidden\nb\n").render() == "a\n\nb\n"
    with pytest.raises(jinja2.UndefinedError):
        _env(tmp_path, r"\VAR{missing}").render()


def test_numbers_tex(tmp_path):
    text = numbers_tex({"b/x_1": "a_b", "a/y": Tex(r"0.5\%"), "c": 0.25, "d": 3})
    assert "\\newcommand{\\" + macro_name("b/x_1") + r"}{a\_b}% b/x_1" in text
    assert "\\newcommand{\\" + macro_name("a/y") + r"}{0.5\%}" in text
    assert "{0.250}" in text and "{3}" in text
    out = write_numbers({"k": "v"}, tmp_path / "sub" / "numbers.tex")
    assert out.read_text().count("\\newcommand") == 1
    with pytest.raises(ValueError, match="same macro"):
        numbers_tex({"a_b": "1", "a/b": "2"})


def test_render_paper_paths_and_atomicity(tmp_path):
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "main.tex.j2").write_text(
        r"\input{\VAR{files.numbers}} \includegraphics{\VAR{files.figures.a}} "
        r"\bibliography{\VAR{files.bibliography}} \VAR{n('k')}"
    )
    out_dir = tmp_path / "out"
    (out_dir / "figures").mkdir(parents=True)
    ctx = {
        "numbers": {"k": "1"},
        "files": {
            "numbers": out_dir / "numbers.tex",
            "figures": {"a": out_dir / "figures" / "a.pdf"},
            "bibliography": out_dir / "refs.bib",
        },
    }
    tex = render_paper(ctx, tdir, out_dir / "main.tex")
    text = tex.read_text()
    assert r"\input{numbers.tex}" in text
    assert r"\includegraphics{figures/a.pdf}" in text
    # relative too: the source names no folder of the machine that built it
    assert r"\bibliography{refs}" in text and str(tmp_path) not in text
    assert [p.name for p in out_dir.iterdir() if p.name.startswith(".")] == []  # no temp left
    (tdir / "main.tex.j2").write_text(r"\VAR{1.5}")
    with pytest.raises(TypeError):
        render_paper(ctx, tdir, out_dir / "main.tex")
    assert tex.read_text() == text  # a failed render leaves the previous file untouched


HOSTILE = [
    r"\input{/etc/passwd}",
    r"\immediate\write18{touch pwned}",
    "$(touch pwned) `touch pwned`",
    "100% of #1 & a_b ~ ^ { }",
    "Ünïcødé 中文 α",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_escaped_to_plain_text(name):
    out = latex_escape(name)
    # take away what the escaper writes; nothing special to TeX may remain
    rest = re.sub(r"\\ensuremath\{\\[A-Za-z]+\}|\\text[a-z]+\{\}|\\[%#&_${}]", "", out)
    assert not re.search(r"[\\%#&_$^~{}]", rest), rest


def test_latexmk_runs_without_shell_escape(tmp_path):
    import shutil

    from echomtl.report.pdf import compile_pdf

    if shutil.which("latexmk") is None:
        pytest.skip("latexmk is not installed")
    names = " \\\\ ".join(latex_escape(n) for n in HOSTILE)
    tex = tmp_path / "hostile.tex"
    tex.write_text(
        "\\documentclass{article}\\usepackage[T1]{fontenc}\\usepackage[utf8]{inputenc}"
        "\\usepackage{amsmath}\\begin{document}\n"
        "\\immediate\\write18{touch pwned}\n"  # what full shell escape would run
        "\\immediate\\write18{kpsewhich article.cls}\n"  # what TeX Live's restricted mode runs
        f"{names}\n\\end{{document}}\n"
    )
    pdf = compile_pdf(tex, tmp_path / "out")
    assert pdf.is_file()
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out" / "pwned").exists()
    log = (tmp_path / "out" / "hostile.log").read_text(encoding="latin-1")
    assert "runsystem(kpsewhich article.cls)...disabled" in log and "executed" not in log


def test_format_small_never_prints_a_nonzero_value_as_zero():
    from echomtl.report.latex import format_small

    assert format_small(-0.0045) == "$-$0.0045"
    assert format_small(0.0012) == "0.0012"
    assert format_small(-0.0057) == "$-$0.01"
    assert format_small(0.085) == "0.09"
    assert format_small(0.0) == "0.00" and format_small(float("nan")) == "n/a"


def test_shares_never_round_a_partial_share_to_all_or_nothing():
    from echomtl.report.latex import format_share

    assert format_share(0.9995) == "99.95\\%"
    assert format_share(0.99999999) == "$>$99.99\\%"
    assert format_share(0.00001) == "$<$0.01\\%"
    assert format_share(1.0) == "100\\%" and format_share(0.0) == "0\\%"
    assert format_share(0.934) == "93\\%"


def test_decimals_follow_the_interval():
    from echomtl.report.latex import interval_digits

    assert interval_digits(0.60, 0.62) == 2  # +-0.01: a third decimal is noise
    assert interval_digits(0.600, 0.615) == 3
    assert interval_digits(float("nan"), 0.5) == 3


def test_a_range_whose_ends_print_alike_is_one_value():
    from echomtl.report.latex import format_number, span

    assert span(format_number(0.0201, 2), format_number(0.0249, 2)) == "0.02"
    assert span(format_number(0.02, 2), format_number(0.05, 2)) == "0.02--0.05"
