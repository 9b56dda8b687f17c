"""The paper's source as arXiv and journals take it: one ``.tar.gz`` that builds alone.

``results/paper/`` mixes the source with build products (logs, aux files, PNG previews, the
BibTeX input), so submitting by hand means picking files. This module picks them from the
rendered ``main.tex`` itself: every ``\\input`` and ``\\includegraphics`` it names (the numbers,
the tables, the figures as PDF), and the ``.bbl`` BibTeX wrote (arXiv does not run BibTeX), and
nothing else. Each named file must exist inside the paper's folder; a path that leaves it, or a
file that is missing, is an error naming it. The tarball is deterministic: members in path
order, with fixed times and owners, and a gzip header without a time stamp, so the same source
gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from pathlib import Path, PurePosixPath

from echomtl.atomic import PathLike, atomic_path

__all__ = ["source_files", "write_arxiv"]

#: The commands whose argument is a file of the source (what pdflatex reads besides main.tex).
_FILE_COMMANDS = re.compile(r"\\(input|includegraphics)(?:\[[^\]]*\])?\{([^}]+)\}")


def source_files(tex: PathLike) -> list[str]:
    """The files ``tex`` reads, relative to its folder, with their extension (``\\input`` of a
    name without one reads ``.tex``), in first-use order. Comment lines are skipped."""
    tex = Path(tex)
    found: list[str] = []
    for line in tex.read_text(encoding="utf-8").splitlines():
        code = re.split(r"(?<!\\)%", line, maxsplit=1)[0]
        for command, name in _FILE_COMMANDS.findall(code):
            path = PurePosixPath(name.strip())
            if command == "input" and not path.suffix:
                path = path.with_suffix(".tex")
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(f"{tex}: \\{command}{{{name}}} is not a file inside its folder")
            if str(path) not in found:
                found.append(str(path))
    return found


def write_arxiv(tex: PathLike, bbl: PathLike, out: PathLike) -> list[str]:
    """Write the submission tarball of ``tex`` (with ``bbl``, BibTeX's output, renamed to the
    main file's stem) to ``out``; returns the member names."""
    tex, bbl = Path(tex), Path(bbl)
    folder = tex.parent
    members = {tex.name: tex, f"{tex.stem}.bbl": bbl}
    for name in source_files(tex):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{tex}: it reads {name}, which does not exist in {folder}")
        members[name] = path
    if not bbl.is_file():
        raise FileNotFoundError(f"{bbl}: no bibliography (.bbl): was the PDF built?")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            data = members[name].read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    with atomic_path(out) as tmp, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(buffer.getvalue())
    return sorted(members)
