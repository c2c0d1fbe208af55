"""Shared fixtures: one torch thread, no network, tiny real models built once per session."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
# Hermetic configuration: no user or project config file, no hub settings from the shell.
os.environ["BABELPLUG_CONFIG"] = os.devnull
for _var in ("BABELPLUG_HUB", "BABELPLUG_OFFLINE", "BABELPLUG_LOCAL_ROOT", "MODELSCOPE_CACHE", "HF_HUB_CACHE"):
    os.environ.pop(_var, None)
# Only babelplug's own plugins take part in tests, whatever else is installed.
from babelplug.manager import BUILTIN_PLUGINS  # noqa: E402

os.environ["BABELPLUG_PLUGINS"] = ",".join(name for name, _ in BUILTIN_PLUGINS)


def _is_loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # type: ignore[arg-type]
    except ValueError:
        return isinstance(address, (str, bytes))  # unix socket paths are local


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Fail any connection attempt to a non-loopback address."""
    original = socket.socket.connect, socket.socket.connect_ex

    def guard(method):
        def connect(self, address):
            if not _is_loopback(address):
                raise OSError(f"test tried to reach the network: {address!r}")
            return method(self, address)

        return connect

    socket.socket.connect, socket.socket.connect_ex = guard(original[0]), guard(original[1])
    yield
    socket.socket.connect, socket.socket.connect_ex = original


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    os.environ["BABELPLUG_TINY_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def xglm_dir(tiny_root) -> Path:
    from babelplug import tiny

    return tiny.cached("xglm", root=tiny_root)


@pytest.fixture(scope="session")
def xglm(xglm_dir):
    import babelplug as bp

    return bp.load(xglm_dir)


@pytest.fixture
def fresh_registry():
    """Rebuild plugins and registry before and after a test that changes them."""
    from babelplug import manager

    manager.reset()
    yield manager
    manager.reset()
