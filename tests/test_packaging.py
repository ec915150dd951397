"""Packaging: nothing in the repo shadows an installed distribution, from any working directory.

The Triton kernels live in ``kernels/lpg/`` and install as ``latentseek_fast.kernels`` (setup.py's
``package_dir``); ``kernels/`` itself has no ``__init__.py``. A folder without one is at most a
namespace portion, and the import system prefers any regular package found anywhere on
``sys.path`` to a namespace portion, so the Hugging Face ``kernels`` distribution that
transformers >= 5.25 imports is found even when the repo root is first on ``sys.path``
(``python -m pytest``, ``python -c``, a notebook started in the repo).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from latentseek_fast.app import cli as app_cli

ROOT = Path(__file__).resolve().parents[1]
OUR_NAMES = {"latentseek_fast"}


def _run_in_root(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python ARGS`` with the repo root as working directory (so it is first on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _top_level_names(folder: Path) -> set[str]:
    """Names that ``import NAME`` would find in ``folder``: modules and regular packages."""
    names = set()
    for entry in folder.iterdir():
        if entry.is_file() and entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            names.add(entry.name)
    return names


def _has_dist(name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


def test_no_top_level_name_shadows_an_installed_distribution():
    """The repo root (cwd), ``tests/`` (pytest's rootdir insertion) and ``bench/`` (scripts run
    from there) add no importable name that an installed distribution also provides."""
    installed = set(md.packages_distributions())
    assert "torch" in installed  # the mapping is real, so an empty intersection means something
    for folder in (ROOT, ROOT / "tests", ROOT / "bench"):
        clash = (_top_level_names(folder) & installed) - OUR_NAMES
        assert not clash, f"{folder} shadows installed distributions' import names: {sorted(clash)}"
    assert not (ROOT / "kernels" / "__init__.py").exists(), "kernels/ must not be a regular package"


NO_HF_KERNELS = "the Hugging Face 'kernels' distribution is not installed"


@pytest.mark.skipif(not _has_dist("kernels"), reason=NO_HF_KERNELS)
def test_hf_kernels_imports_from_the_repo_root():
    """``import kernels`` from the repo root is the installed Hugging Face package, and
    transformers' hub-kernels integration (which imports it) loads."""
    probe = "import kernels, os; print(os.path.realpath(kernels.__file__ or ''))"
    res = _run_in_root("-c", probe)
    assert res.returncode == 0, res.stderr
    where = Path(res.stdout.strip())
    expected = Path(os.path.realpath(md.distribution("kernels").locate_file("kernels/__init__.py")))
    assert where == expected, f"import kernels found {where}, not the installed {expected}"
    try:
        import transformers.integrations.hub_kernels  # noqa: F401  (does it exist in this version?)
    except ModuleNotFoundError:
        pytest.skip("this transformers has no integrations.hub_kernels")
    res = _run_in_root("-c", "import transformers.integrations.hub_kernels")
    assert res.returncode == 0, res.stderr[-2000:]


def test_setup_lists_every_package_and_the_console_script():
    """Every folder of ``latentseek_fast/`` with an ``__init__.py`` is in setup.py's ``PACKAGES``
    (a missing one installs without that subpackage), and the console script is the CLI's ``main``."""
    setup_py = (ROOT / "setup.py").read_text()
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "latentseek_fast").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(re.findall(r'^    "(latentseek_fast[\w.]*)",$', setup_py, flags=re.M))
    assert "latentseek_fast.app.cli" in found and found <= listed, sorted(found - listed)
    assert '"latentseek-fast=latentseek_fast.app.cli:main"' in setup_py
    assert callable(app_cli.main)


def test_python_m_latentseek_fast_from_the_repo_root():
    res = _run_in_root("-m", "latentseek_fast", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: latentseek-fast" in res.stdout and "eval" in res.stdout


@pytest.mark.slow
def test_wheel_installs_the_kernels_as_latentseek_fast_kernels(tmp_path):
    """A regular (non-editable) wheel, installed with --no-deps into a scratch venv that sees
    this environment's packages (torch, triton) through a .pth line, imports the kernels from
    the wheel's own ``latentseek_fast/kernels/`` and ships no top-level ``kernels``."""
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LATENTSEEK_NO_EXT"] = "1"  # the native op has its own tests; the layout is what is checked
    # pip builds a local folder in place (build/, *.egg-info): build a copy, never the checkout.
    src = tmp_path / "src"
    junk = shutil.ignore_patterns(
        ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.so"
    )
    shutil.copytree(ROOT, src, ignore=junk)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(wheels), str(src)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("latentseek_fast-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"latentseek_fast"}, tops
    assert "latentseek_fast/kernels/__init__.py" in names
    assert "latentseek_fast/kernels/lpg_forward.py" in names
    app = ("cli/__init__.py", "cli/eval.py", "torchrun/sharded.py", "demo_problems.jsonl")
    assert not [n for n in app if f"latentseek_fast/app/{n}" not in names]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # This environment's packages after the venv's own (torch, triton); not a site dir, so the
    # editable install's finder (.pth-activated) is not loaded there.
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-3000:]
    probe = (
        "import os, latentseek_fast.kernels.lpg_forward as m, latentseek_fast.kernels as k; "
        "print(os.path.realpath(m.__file__)); print(k.interpreting())"
    )
    res = subprocess.run(
        [str(vpy), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    where = Path(res.stdout.splitlines()[0])
    assert Path(os.path.realpath(site)) in where.parents, f"imported from {where}, not the wheel"
    # The console script runs the CLI from the wheel; the demo problems ship with it.
    script = [str(venv / "bin" / "latentseek-fast"), "--help"]
    script = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert script.returncode == 0 and "usage: latentseek-fast" in script.stdout, script.stderr[-3000:]
    demos = [str(vpy), "-c", "from latentseek_fast.app.demo import demo_problems as d; print(len(d()))"]
    res = subprocess.run(demos, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and int(res.stdout) >= 5, res.stderr[-3000:]
