"""The SQL state store: table definitions in `tables`, queries speaking model types in `queries`, schema upkeep
(Alembic) in `schema`, the reads of `status` and `history` in plain SQL in `glance`."""

HEAD = "0006"  # the newest migration's revision (tests/test_migrations.py checks that Alembic agrees)
