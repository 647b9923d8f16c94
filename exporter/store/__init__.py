"""The execution log store: models, engine, statements and migrations."""
