import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Nothing in the suite may reach the network: only local sockets (loopback, AF_UNIX) connect."""
    connect, create_connection = socket.socket.connect, socket.create_connection

    def guarded_connect(self, address):
        if not _is_local(address):
            raise OSError(f"network access attempted in a test: {address}")
        return connect(self, address)

    def guarded_create_connection(address, *args, **kwargs):
        if not _is_local(address):
            raise OSError(f"network access attempted in a test: {address}")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (the whole suite; `-m slow` runs only them)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (kill-point sweeps, several processes, whole scripts, load tests) run with
    `--slow` or `-m slow`, or when named by node id; the quick suite leaves them out. Tests marked `cuda`
    (run them alone with `pytest -m cuda`) skip cleanly without a GPU."""
    named = any("::" in arg for arg in config.args)
    if not (config.getoption("--slow") or config.option.markexpr or named):
        slow = [item for item in items if "slow" in item.keywords]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if "slow" not in item.keywords]
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _reco_log_handler_on_the_session_stderr():
    """The 'reco' logger's stderr handler keeps the stderr of the first `setup_logging` call. Made here, at
    the start of the session, it never holds the stream of one test's `capsys`, which is closed after that
    test (a later test would log into a closed file): the tests pass in any order and selection."""
    from utils.logs import setup_logging

    setup_logging()


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    """`python main_reco.py --demo` run once per session: (its folder, what it printed). Tests that only
    read the world, or serve it through the API or the web demo, share it."""
    import contextlib
    import io

    import main_reco

    out = tmp_path_factory.mktemp("demo_world") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main_reco.main(["--demo", "--out", str(out)]) == 0
    return out, printed.getvalue()
