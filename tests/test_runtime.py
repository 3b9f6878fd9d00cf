import os
import subprocess
import sys

import pytest
import torch

from lfmlab import progress, runtime


def test_import_sets_omp_wait_policy_only_if_unset():
    code = "import os, lfmlab; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE"


def test_import_lfmlab_does_not_import_torch():
    code = "import sys, lfmlab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_device_auto_and_overrides(monkeypatch):
    monkeypatch.setitem(runtime._session, "device", None)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.device().type == expected
    assert runtime.device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LFMLAB_DEVICE", "cpu")
    assert runtime.device() == torch.device("cpu")


def test_bad_devices_give_a_fix():
    with pytest.raises(ValueError, match="Use 'auto', 'cpu' or 'cuda'"):
        runtime.device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            runtime.device("cuda")


def test_setup_records_device_seed_smoke(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_session", {"seed": None, "device": None, "smoke": None})
    session = runtime.setup(seed=7, device="cpu", smoke=True)
    assert session.seed == 7 and runtime.seed() == 7 and runtime.smoke() is True
    assert runtime.device() == torch.device("cpu")
    assert "seed 7" in capsys.readouterr().out
    a = torch.rand(3)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.rand(3))


def test_setup_records_the_run_length(monkeypatch, capsys):
    """Three run lengths: smoke (CI), default (a learner's run) and full (paper scale); pick gives
    each its value, and SMOKE with FULL is refused, changing nothing."""
    monkeypatch.setattr(runtime, "_session", {"seed": None, "device": None, "smoke": None, "full": False})
    assert runtime.setup(device="cpu", smoke=False).mode == "default" == runtime.mode()
    full = runtime.setup(device="cpu", smoke=False, full=True)
    assert full.mode == "full" == runtime.mode() and "run full" in capsys.readouterr().out
    assert full.pick(3, 30, full=100) == 100 and full.pick(3, 30) == 30
    smoke = runtime.setup(seed=2, device="cpu", smoke=True)
    assert smoke.mode == "smoke" and smoke.pick(3, 30, full=100) == 3
    assert runtime.setup(device="cpu", smoke=False).pick(3, 30, full=100) == 30
    with pytest.raises(ValueError, match="SMOKE and FULL"):
        runtime.setup(seed=9, device="cpu", smoke=True, full=True)
    assert runtime.seed() == 0 and runtime.mode() == "default"


def test_bad_setup_changes_nothing(monkeypatch):
    monkeypatch.setattr(runtime, "_session", {"seed": 1, "device": torch.device("cpu"), "smoke": False})
    with pytest.raises(ValueError):
        runtime.setup(seed=5, device="nonsense")
    assert runtime.seed() == 1 and runtime.smoke() is False


def test_smoke_from_environment(monkeypatch):
    monkeypatch.setattr(runtime, "_session", {"seed": None, "device": None, "smoke": None})
    monkeypatch.setenv("LFMLAB_SMOKE", "1")
    assert runtime.smoke() is True
    monkeypatch.setenv("LFMLAB_SMOKE", "0")
    assert runtime.smoke() is False


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LFMLAB_CACHE", str(tmp_path / "c"))
    assert runtime.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_plain_progress_prints_lines_not_bars(capsys):
    assert progress.headless()  # the test session is headless (conftest)
    bar = progress.progress(range(5), desc="work", interval=0.0)
    assert isinstance(bar, progress.PlainProgress)
    assert list(bar) == [0, 1, 2, 3, 4]
    out = capsys.readouterr().out
    assert "work: done 5/5 (100%)" in out and "\r" not in out
