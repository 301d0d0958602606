"""IMAP4rev1 (RFC 3501) and, after ENABLE IMAP4rev2, IMAP4rev2 (RFC 9051): parser.py (grammar and
the one declaration of each command, no I/O), states.py (the connection states), session.py (the
command logic), view.py (the selected mailbox as a client knows it, and the reports of others'
changes), search.py / sort.py / thread.py (SEARCH, SORT, THREAD evaluation), message.py (ENVELOPE,
BODYSTRUCTURE and sections from raw message bytes)."""
