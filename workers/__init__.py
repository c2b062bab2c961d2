"""Shelver's consumer side, in packages by role (docs/architecture.md): `pool`, `consumer`,
`lease`, `books`, `aws`, `cli`; at the top what they all use: `settings`, `metrics`, `logs`,
`status`, `backoff`, `tracing` and `destinations`.

`__version__` is the project's version (pyproject.toml's, kept equal by
tests/unit/test_service.py): the image ships the code, not the project metadata."""

__version__ = "0.1.0"
