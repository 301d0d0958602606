"""The three mail protocols: sans-I/O session cores (imap/, pop3.py), the events they emit
(events.py), the one asyncio connection loop that drives IMAP and POP3 (connection.py), and SMTP
on aiosmtpd (smtp.py, with every aiosmtpd internal in smtp_adapter.py)."""
