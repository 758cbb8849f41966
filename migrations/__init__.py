"""The Alembic migrations: `env.py`, `script.py.mako` and `versions/`.

They live in the top-level `migrations/` of the source tree, and ship in the wheel as the package
`reconciler.migrations` (`[tool.setuptools] package-dir` in pyproject.toml); `reconciler.store.schema` finds them
by importing that package, so an editable and a regular install find them alike.
"""
