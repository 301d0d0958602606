"""TLS: the policy every protocol asks (policy.py, no I/O) and the handshakes (handshake.py)."""
