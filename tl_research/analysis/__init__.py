"""A sweep's results (results.csv, tables, plots) and domain similarity."""
