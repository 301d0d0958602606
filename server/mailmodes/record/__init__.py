"""What each client did: one record per connection (journal.py), its masked transcript
(transcript.py), and the verdicts about it."""
