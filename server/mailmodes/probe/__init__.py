"""Probes mailmodes runs against listeners: the teaching table (explain.py) and the readiness
check the Docker HEALTHCHECK runs (check.py)."""
