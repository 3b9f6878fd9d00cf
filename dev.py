#!/usr/bin/env python3
"""Set up lfmlab and run it: the two commands of the README.

    python3 dev.py lab    # set up (first time), then open JupyterLab on notebooks/
    python3 dev.py test   # set up (first time), then `ruff check .` and the whole test suite

Set-up is idempotent: the virtual environment lives in ``.venv`` (or ``$LFMLAB_VENV``) and is
reused while ``pyproject.toml`` is unchanged. Extra arguments go to JupyterLab or pytest.

Torch is installed first and then pinned with a constraints file, so that the project's
``torch>=2.6`` range never swaps it for another build:

* a machine with an NVIDIA driver gets PyPI's default (CUDA) build;
* a machine without one gets a CPU build: a local wheelhouse if pip is configured with one
  (``pip install --no-index``), else the PyTorch CPU index on Linux, else PyPI (macOS/Windows
  wheels are CPU builds). This keeps several GB of CUDA packages off CPU-only machines;
* a torch that is already in the environment (e.g. a GPU user's CUDA build) is left alone.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LFMLAB_VENV", ROOT / ".venv")).resolve()
EXTRAS = "dev,embed,faiss"
TORCH = "torch>=2.6"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP_VERSION = "1"  # bump to force a re-install on every machine


def say(msg: str) -> None:
    print(f"[lfmlab] {msg}", flush=True)


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def run(*cmd: str | Path, check: bool = True) -> int:
    rc = subprocess.call([str(c) for c in cmd])
    if check and rc != 0:
        sys.exit(f"[lfmlab] command failed ({rc}): {' '.join(map(str, cmd))}")
    return rc


def pip(*args: str, check: bool = True) -> int:
    return run(venv_python(), "-m", "pip", "install", "--disable-pip-version-check", *args, check=check)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    return subprocess.call([smi, "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def installed_torch() -> str | None:
    out = subprocess.run([str(venv_python()), "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_torch() -> str:
    version = installed_torch()
    if version:
        return version
    if has_nvidia_gpu():
        say("NVIDIA GPU found: installing PyPI's default (CUDA) torch")
        pip(TORCH)
    else:
        say("no GPU: installing a CPU build of torch")
        # a local wheelhouse, if pip has one: torch from it, then torch's own dependencies from
        # pip's configured indexes (a wheelhouse often holds torch alone)
        if pip("--no-index", "--no-deps", TORCH, check=False) == 0:
            pip(TORCH)
        elif platform.system() == "Linux":
            pip(TORCH, "--index-url", CPU_INDEX)
        else:
            pip(TORCH)
    version = installed_torch()
    if not version:
        sys.exit("[lfmlab] torch did not install; see the messages above")
    return version


def stamp() -> str:
    text = (ROOT / "pyproject.toml").read_bytes() + SETUP_VERSION.encode()
    return hashlib.sha256(text).hexdigest()


def setup() -> None:
    stamp_file = VENV / ".lfmlab-setup"
    if stamp_file.exists() and stamp_file.read_text() == stamp() and installed_torch():
        say(f"reusing {VENV}")
        return
    if not venv_python().exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    torch_version = ensure_torch()
    constraints = VENV / "constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    say(f"torch {torch_version} pinned; installing lfmlab[{EXTRAS}]")
    pip("-c", str(constraints), "-e", f"{ROOT}[{EXTRAS}]")
    stamp_file.write_text(stamp())
    say("set-up done")


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["JUPYTER_PREFER_ENV_PATH"] = "1"  # the venv's python3 kernel wins over a user-wide one
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env["PATH"] = str(venv_python().parent) + os.pathsep + env.get("PATH", "")
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test", "setup"}:
        print(__doc__)
        return 2
    command, extra = argv[0], argv[1:]
    setup()
    py = str(venv_python())
    if command == "setup":
        return 0
    if command == "lab":
        cmd = [py, "-m", "jupyterlab", f"--ServerApp.root_dir={ROOT}",
               "--LabApp.default_url=/lab/tree/notebooks", *extra]
        if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
            cmd.append("--allow-root")  # containers often run as root; Jupyter refuses without it
    else:
        os.chdir(ROOT)
        say("ruff check .  (pyflakes, import order, line length: [tool.ruff] in pyproject.toml)")
        lint = subprocess.call([py, "-m", "ruff", "check", "."], env=environment())
        if lint:
            say("ruff found problems (above); `.venv/bin/ruff check --fix .` fixes the import ones")
            return lint
        cmd = [py, "-m", "pytest", *extra]
    os.chdir(ROOT)
    return subprocess.call(cmd, env=environment())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
