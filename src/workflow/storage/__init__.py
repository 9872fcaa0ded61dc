"""The database: typed rows and their codecs, the schema, the Store with its dialect branches,
the one table of driver errors, and the Alembic migrations. Only this package imports SQLAlchemy.
"""
