"""The arXiv source picks exactly the files main.tex reads (echomtl.report.arxiv)."""

from __future__ import annotations

import tarfile

import pytest

from echomtl.report.arxiv import source_files, write_arxiv


def _paper(tmp_path, body: str):
    (tmp_path / "tables").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "numbers.tex").write_text("% numbers\n")
    (tmp_path / "tables" / "main.tex").write_text("table\n")
    (tmp_path / "figures" / "a.pdf").write_bytes(b"%PDF-1.5")
    (tmp_path / "figures" / "a.png").write_bytes(b"preview")  # a build product: never packed
    (tmp_path / "main.log").write_text("log")
    tex = tmp_path / "main.tex"
    tex.write_text(body)
    (tmp_path / "main.bbl").write_text("\\begin{thebibliography}{1}\\end{thebibliography}\n")
    return tex


def test_the_tarball_holds_what_main_tex_reads_and_nothing_else(tmp_path):
    tex = _paper(
        tmp_path,
        "\\input{numbers.tex}\n\\input{tables/main}\n"
        "% \\input{tables/commented_out.tex}\n"
        "\\includegraphics[width=\\linewidth]{figures/a.pdf} 50\\% done\n",
    )
    assert source_files(tex) == ["numbers.tex", "tables/main.tex", "figures/a.pdf"]
    out = tmp_path / "arxiv.tar.gz"
    members = write_arxiv(tex, tmp_path / "main.bbl", out)
    with tarfile.open(out) as tar:
        assert (
            sorted(tar.getnames())
            == members
            == sorted(["main.tex", "main.bbl", "numbers.tex", "tables/main.tex", "figures/a.pdf"])
        )
    first = out.read_bytes()
    write_arxiv(tex, tmp_path / "main.bbl", out)
    assert out.read_bytes() == first  # deterministic: the same source, the same bytes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("\\input{../outside.tex}\n", r"is not a file inside its folder"),
        ("\\input{/etc/passwd}\n", r"is not a file inside its folder"),
        ("\\includegraphics{figures/missing.pdf}\n", r"figures/missing.pdf, which does not exist"),
    ],
)
def test_a_file_outside_the_folder_or_missing_is_refused_by_name(tmp_path, body, message):
    tex = _paper(tmp_path, body)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        write_arxiv(tex, tmp_path / "main.bbl", tmp_path / "arxiv.tar.gz")
    assert not (tmp_path / "arxiv.tar.gz").exists()
