"""pyproject.toml and environment.yml must pin the same packages at the same versions."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", requirement.strip())
        assert match, f"not an exact pin: {requirement!r}"
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_pyproject_and_environment_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"]
    assert _pins(declared) == _pins([r for r in pip_section if r != "-e ."])


def test_torch_pins_are_the_local_wheels():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.14.1" in project["dependencies"]
    assert "torchvision==0.29.1" in project["dependencies"]


def test_a_built_wheel_validates_configs_and_dry_runs_the_workflow(tmp_path):
    """A plain (non-editable) install finds its schemas, template and captions as package data:
    build the wheel, install it alone into a fresh virtual environment, validate the shipped
    configs, find the paper's sources and dry-run."""
    import os
    import subprocess
    import sys
    import sysconfig
    import venv

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("echomtl-*.whl")
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # third-party packages from the project venv; echomtl only from the wheel (PYTHONPATH does
    # not process the editable install's .pth file)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    check = (
        "import echomtl, yaml, sys; from echomtl.config import validate_config, load_experiments;"
        f"assert echomtl.__file__.startswith({str(env_dir)!r}), echomtl.__file__;"
        f"validate_config(yaml.safe_load(open({str(ROOT / 'config' / 'config.yaml')!r})));"
        f"load_experiments([{str(ROOT / 'config' / 'experiments.tsv')!r}, "
        f"{str(ROOT / 'config' / 'experiments-full.tsv')!r}]);"
        "from importlib.resources import files; paper = files('echomtl.paper');"
        f"assert str(paper).startswith({str(env_dir)!r}), str(paper);"
        "assert all((paper / n).is_file() for n in ('main.tex.j2', 'references.bib', "
        "'claims.yaml', 'captions/figure.rst', 'captions/paper.rst', 'captions/workflow.rst'));"
        "print('ok')"
    )
    out = subprocess.run([str(python), "-c", check], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    dry = subprocess.run(
        [str(python), "-m", "snakemake", "-n", "--quiet", "rules", "--nolock",
         "--config", f"results_dir={tmp_path / 'results'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "train" in dry.stdout


def test_job_scripts_find_the_package_in_an_environment_without_it(tmp_path):
    """What --use-conda gives a job: third-party packages, no echomtl. The scripts' first import
    (workflow/scripts/_package.py) then takes echomtl from the checkout's src/."""
    import os
    import subprocess
    import sysconfig

    scripts = sorted((ROOT / "workflow" / "scripts").glob("[!_]*.py"))
    assert scripts
    for script in scripts:
        lines = [
            line for line in script.read_text().splitlines() if line.startswith(("import", "from"))
        ]
        assert lines[0] == "import _package  # noqa: F401  (--use-conda: echomtl from src/)", script
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    probe = (
        "import importlib.util, sys; assert importlib.util.find_spec('echomtl') is None;"
        f"sys.path.append({str(ROOT / 'workflow' / 'scripts')!r}); import _package;"
        "import echomtl.jobs, echomtl.report.jobs; print(echomtl.__file__)"
    )
    out = subprocess.run(["python3.11", "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(ROOT / "src" / "echomtl" / "__init__.py")


def test_every_subpackage_is_listed_for_setuptools():
    """pyproject lists the packages by hand (paper/ is mapped to echomtl.paper): a new
    subpackage missing there would be left out of every wheel."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT / "src").parts)
        for init in (ROOT / "src" / "echomtl").rglob("__init__.py")
    }
    assert found | {"echomtl.paper"} == listed
