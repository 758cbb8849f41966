"""The SQL state store: table definitions in `tables`, queries speaking model types in `queries`, schema upkeep
(Alembic) in `schema`."""
