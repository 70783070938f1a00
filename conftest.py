"""Shared pytest fixtures live in tests/fixtures/, one module per area; this file only
registers them."""

pytest_plugins = [
    "tests.fixtures.common",
    "tests.fixtures.registry",
    "tests.fixtures.engines",
    "tests.fixtures.http",
    "tests.fixtures.serve",
    "tests.fixtures.served_store",
]
