"""The client's tests: a package, so that its conftest never shadows the server tests' own `conftest` module."""
