"""IMAP4rev1 (RFC 3501): parser.py (grammar, no I/O), session.py (state machine), search.py
(SEARCH evaluation), message.py (ENVELOPE, BODYSTRUCTURE and sections from raw message bytes)."""
