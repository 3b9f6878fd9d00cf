import json
import sys
from pathlib import Path

import lfmlab  # noqa: F401  (OMP_WAIT_POLICY before torch)

sys.path.insert(0, str(Path(__file__).parent))
from harness import headless_env  # noqa: E402

headless_env()
import pytest  # noqa: E402

_DURATIONS: dict[str, float] = {}


@pytest.fixture(scope="session")
def wlm():
    """world-lm from the zoo, on the CPU, shared by the test modules (tests must leave it unchanged)."""
    from lfmlab import zoo

    return zoo.load("world-lm", device="cpu")


@pytest.fixture(scope="session")
def W():
    """The world facts (lfmlab.data.world)."""
    from lfmlab.data import world

    return world.load()


@pytest.fixture(scope="session")
def notebook_durations() -> dict[str, float]:
    return _DURATIONS


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _DURATIONS:
        return
    terminalreporter.section("notebook durations (smoke, seconds)")
    for name, secs in sorted(_DURATIONS.items()):
        terminalreporter.write_line(f"{secs:7.1f}  {name}")
    terminalreporter.write_line(f"{sum(_DURATIONS.values()):7.1f}  total")
    if getattr(config, "cache", None) is not None:  # absent under -p no:cacheprovider
        config.cache.set("lfmlab/notebook_durations", _DURATIONS)
    out = Path(config.rootpath) / ".pytest_cache" / "notebook_durations.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(_DURATIONS, indent=1))
