"""What people see: the HTTP API and the dashboard (server.py, views.py, openapi.py, dashboard/),
and the small client the command line uses to talk to it (client.py)."""
