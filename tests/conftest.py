"""Shared fixtures: a real escnc server on loopback and real NETCONF clients.

Each server gets its own state directory and its own libvirt test-driver host
(``test:///<tmp>/host.xml``), so tests never see each other's domains.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ncclient import manager
from ncclient.transport import session as nc_session

from escnc.app import Server
from escnc.settings import Settings

# ncclient polls its send queue every TICK seconds (0.1 by default): far too slow.
nc_session.TICK = 0.0005

USER = "admin"
PASSWORD = "admin-pw"

logging.getLogger("ncclient").setLevel(logging.WARNING)
logging.getLogger("paramiko").setLevel(logging.WARNING)


# room for bench/engine_bench.py's 1000 VMs on one test node
TEST_OVERCOMMIT = {"vcpus": 256.0, "memory": 256.0, "storage": 256.0}


def test_host_uri(directory: Path, name: str = "host") -> str:
    """A fresh, independent libvirt test-driver host backed by an empty node file."""
    directory.mkdir(parents=True, exist_ok=True)
    node = directory / f"{name}.xml"
    if not node.exists():
        node.write_text("<node></node>\n")
    return f"test://{node}"


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    settings = Settings(state_dir=state_dir, listen_host="127.0.0.1", listen_port=0)
    settings.vims = {"default": test_host_uri(state_dir.parent / "hosts")}
    # test-driver VIM connectors; image files beside the state dir (tmp_path) importable
    settings.allow_test_vims = True
    # the test driver's node has 16 CPUs and 3 GiB; tests deploy more than that
    # (capacity admission refuses overcommit by default: tests/test_capacity.py)
    settings.overcommit = dict(TEST_OVERCOMMIT)
    settings.image_import_dirs = [state_dir / "import", state_dir.parent]
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def add_user(state_dir: Path, name: str = USER, password: str | None = PASSWORD,
             keys: tuple[str, ...] = (), database: str = "") -> None:
    """``database``: the server's settings.database (its users are there, then)."""
    from escnc.rpc.users import UserStore

    state_dir.mkdir(parents=True, exist_ok=True)
    store = UserStore(state_dir / "users.sqlite3", database=database)
    store.add_user(name, password=password, public_keys=list(keys))
    store.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(state_dir: Path | None = None, **overrides: object) -> Server:
        state = state_dir or tmp_path / f"state{len(started)}"
        add_user(state, database=str(overrides.get("database") or ""))
        srv = Server(make_settings(state, **overrides))
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.stop()


@pytest.fixture
def example_image(request: pytest.FixtureRequest) -> None:
    """examples/deployment.xml's image (examples/make-image.sh), in the import directory
    of the test's ``server`` (modules opt in with usefixtures)."""
    if "server" in request.fixturenames:
        import subprocess

        srv = request.getfixturevalue("server")
        script = Path(__file__).resolve().parent.parent / "examples" / "make-image.sh"
        subprocess.run(["bash", str(script), str(srv.settings.state_dir / "import")],
                       check=True, capture_output=True)


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def connect(srv: Server, user: str = USER, password: str | None = PASSWORD, **kw: object):
    return manager.connect(
        host="127.0.0.1",
        port=srv.port,
        username=user,
        password=password,
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
        **kw,
    )


@pytest.fixture
def nc(server: Server) -> Iterator[manager.Manager]:
    with connect(server) as m:
        yield m


# escEvents about resources (images) rather than deployments: flow tests that assert
# exact per-deployment event lists leave them out.
RESOURCE_EVENT_TYPES = frozenset({"CREATE_IMAGE", "DELETE_IMAGE"})


def is_resource_event(escevent: object) -> bool:
    """True for an escEvent element (lxml) whose event/type is a resource event."""
    from escnc.ns import ESC

    findtext = getattr(escevent, "findtext", None)
    if findtext is None:
        return False
    return findtext(f"{{{ESC}}}event/{{{ESC}}}type") in RESOURCE_EVENT_TYPES


# In CI a real-hypervisor test that cannot run is a failure, not a skip: a skipped QEMU
# test once hid a peer libvirtd that never started on a fresh machine.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and os.environ.get("CI") == "true"
            and item.get_closest_marker("qemu") is not None):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"real-hypervisor test skipped in CI: {reason}"


# -- PostgreSQL (issue 18): one real server per test session, a fresh database per test.
# Tests that need it fail (not skip) in CI when it cannot start, like the QEMU tests.
@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    from pg_support import ExternalPg, PgServer, PgUnavailable

    external = os.environ.get("ESCNC_TEST_POSTGRES")
    if external:
        yield ExternalPg(external)
        return
    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL did not start in CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(pg_server: object) -> Iterator[str]:
    """DSN of an empty database of its own on the session's PostgreSQL server."""
    dsn = pg_server.create_database()  # type: ignore[attr-defined]
    yield dsn
    pg_server.drop_database(dsn)  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend a test runs on (escnc.storage): each such test runs twice."""
    return str(request.param)


@pytest.fixture
def make_storage(backend: str, tmp_path: Path, request: pytest.FixtureRequest
                 ) -> Callable[[], object]:
    """A function returning a new Storage on the same (per-test) database each call:
    calling it twice is a restart, or a second node on the same database."""
    from escnc.storage.postgresql import PostgresStorage
    from escnc.storage.sqlite import SqliteStorage

    if backend == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        return lambda: PostgresStorage(dsn)
    path = tmp_path / "storage" / "escnc.sqlite3"
    return lambda: SqliteStorage(path)
