"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Kept next to http.py by hand; tests/http/test_api.py checks that every route of the app is
described here and that nothing described is missing from the app.
"""

from __future__ import annotations

from typing import Any

from mailmodes.probe.explain import ClientSetting, Outcome
from mailmodes.protocols import PROTOCOLS
from mailmodes.record.expectations import EXPECTATIONS, OUTCOMES
from mailmodes.record.report import FORMATS
from mailmodes.record.verdicts import CODES, SEVERITIES
from mailmodes.tls.policy import TlsMode

JSON = "application/json"
TLS_MODES = [mode.value for mode in TlsMode]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _path_param(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": kind}}


def _query(name: str, description: str, kind: str = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind, **extra}}


USER = _path_param("user", "account name, e.g. alice")
MAILBOX = _path_param("mailbox", "mailbox name, e.g. INBOX (URL-encode a '/' in a hierarchical name as %2F)")
UID = _path_param("uid", "the message's IMAP UID", "integer")
NOT_FOUND = _error("no such user, mailbox, message or session")
BAD_NUMBER = _error("a path segment that should be a number is not")


def _session_filters() -> list[dict[str, Any]]:
    return [
        _query("listener", "only sessions on this listener (its name)"),
        _query("protocol", "only sessions of this protocol", enum=list(PROTOCOLS)),
        _query("mode", "TLS mode of the listener", enum=TLS_MODES),
        _query("user", "only sessions that authenticated as this user"),
        _query("verdict", "only sessions with this verdict code (GET /api/verdicts explains each); never "
                          "a probe's session unless probe=true", enum=list(CODES)),
        _query("probe", "true: only the sessions of our own probes (check, explain, the dashboard's Run); "
                        "false: none of them; default: both", "boolean"),
        _query("client", "only sessions from this client address (host, or host:port)"),
        _query("since", "started at or after: ISO 8601 (UTC unless an offset is given) or epoch seconds"),
        _query("until", "started before: ISO 8601 or epoch seconds"),
        _query("after_id", "only sessions with a larger id (for incremental polling)", "integer", minimum=0),
        _query("open", "include sessions still connected (default true; they have no verdicts yet)", "boolean"),
        _query("limit", "only the last N that match", "integer", minimum=1),
        _query("transcript", "include transcripts (default true); false gives transcript_lines instead",
               "boolean"),
    ]


def _schemas() -> dict[str, Any]:
    string_or_null = {"type": ["string", "null"]}
    headers = {
        "type": "object",
        "description": "decoded (RFC 2047) header values; null when absent",
        "properties": {key: string_or_null for key in ("from", "to", "cc", "subject", "date", "message_id")},
    }
    part = {
        "type": "object",
        "properties": {
            "content_type": {"type": "string"}, "charset": string_or_null, "filename": string_or_null,
            "size": {"type": "integer"},
            "text": {"type": ["string", "null"], "description": "text parts only; HTML as source"},
            "truncated": {"type": "boolean"},
        },
    }
    message = {
        "type": "object",
        "properties": {
            "mailbox": {"type": "string"}, "uid": {"type": "integer"},
            "flags": {"type": "array", "items": {"type": "string"}}, "size": {"type": "integer"},
            "internal_date": {"type": "string", "format": "date-time"}, "headers": headers,
        },
    }
    detail = {
        "allOf": [message, {"type": "object", "properties": {
            "user": {"type": "string"},
            "header_list": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
            "parts": {"type": "array", "items": part},
            "parse_error": {"type": "boolean"},
            "raw_url": {"type": "string"},
        }}],
    }
    captured = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "sender_account": {"type": "string"}, "mail_from": {"type": "string"},
            "recipients": {"type": "array", "items": {"type": "string"}},
            "received": {"type": "string", "format": "date-time"}, "size": {"type": "integer"}, "headers": headers,
        },
    }
    transcript_line = {
        "type": "object",
        "properties": {
            "at": {"type": "number", "description": "seconds since the session started"},
            "sender": {"type": "string", "enum": ["client", "server"]},
            "tls": {"type": "boolean", "description": "true once the connection is encrypted; the first such "
                                                      "line is the server's \"[TLS established ...]\""},
            "text": {"type": "string", "description": "secrets masked as ****, message content summarised"},
        },
    }
    session = {
        "type": "object",
        "description": "the same shape as a line of the [journal] path file",
        "properties": {
            "id": {"type": "integer"}, "listener": {"type": "string"}, "protocol": {"type": "string"},
            "tls_mode": {"type": "string"}, "scenario": string_or_null, "client": {"type": "string"},
            "started": {"type": "string", "format": "date-time"},
            "ended": {"type": ["string", "null"], "format": "date-time", "description": "null while open"},
            "tls_version": string_or_null, "cipher": string_or_null, "sni": string_or_null,
            "starttls": {"type": "boolean"}, "starttls_attempted": {"type": "boolean"}, "tls_alert": string_or_null,
            "tls_handshake": {"type": ["string", "null"], "enum": ["client-hello", "server-flight", "alert", "finished", None],
                              "description": "how far a TLS handshake got, from its messages: the client's "
                                             "ClientHello, our flight (certificate) sent, the client's alert, "
                                             "finished; null if none began"},
            "user": {"type": ["string", "null"], "description": "the account a login was accepted as; null if none was"},
            "probe": {"type": "boolean", "description": "a session of our own probes, marked in-band (README)"},
            "scope": {"type": ["string", "null"],
                      "description": "the client scope (\"server\": a one-client server); null: none"},
            "logins": {"type": "array", "description": "every login attempt the server decided (the first 32), in order; "
                                                       "never the secret", "items": {"type": "object", "properties": {
                "command": {"type": "string", "description": "what carried it: LOGIN, AUTHENTICATE PLAIN, AUTH PLAIN, "
                                                            "AUTH LOGIN, PASS, APOP ..."},
                "user": string_or_null, "tls": {"type": "boolean"},
                "accepted": {"type": "boolean", "description": "false: a failed attempt (user: the name tried)"}}}},
            "verdicts": {"type": "array", "items": {"type": "string", "enum": list(CODES)}},
            "verdict_details": {"type": "array", "items": {"type": "object", "properties": {
                "code": {"type": "string", "enum": list(CODES)}, "detail": {"type": "string"}}}},
            "transcript": {"type": "array", "items": transcript_line},
            "transcript_lines": {"type": "integer", "description": "instead of transcript when transcript=false"},
            "transcript_truncated": {"type": "integer"},
            "envelopes": {"type": "array", "description": "SMTP: each message transaction the server answered "
                                                          "(DATA or BDAT ... LAST), with the extensions used",
                          "items": {"type": "object", "properties": {
                              "mail_from": {"type": "string"},
                              "recipients": {"type": "array", "items": {"type": "object", "properties": {
                                  "address": {"type": "string"},
                                  "notify": {"type": ["array", "null"], "items": {"type": "string"},
                                             "description": "DSN NOTIFY (RFC 3461)"},
                                  "orcpt": {**string_or_null, "description": "DSN ORCPT, xtext decoded"}}}},
                              "size": {"type": "integer"},
                              "via": {"type": "string", "enum": ["DATA", "BDAT"]},
                              "chunks": {"type": ["integer", "null"], "description": "BDAT chunks; null for DATA"},
                              "body": string_or_null, "smtputf8": {"type": "boolean"},
                              "requiretls": {"type": "boolean", "description": "MAIL FROM ... REQUIRETLS (RFC 8689)"},
                              "ret": {**string_or_null, "description": "DSN RET: FULL or HDRS"},
                              "envid": {**string_or_null, "description": "DSN ENVID, xtext decoded"},
                              "reply": {"type": "string", "description": "the server's answer to the message"}}}},
        },
    }
    listener = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "protocol": {"type": "string", "enum": list(PROTOCOLS)},
            "host": {"type": "string"},
            "port": {"type": ["integer", "null"], "description": "the bound port; null if not running"},
            "configured_port": {"type": "integer"}, "mode": {"type": "string", "enum": TLS_MODES},
            "role": string_or_null,
            "scenario": string_or_null, "running": {"type": "boolean"},
            "chaos": {"type": ["object", "null"], "description": "the chaos settings (scenario \"chaos\" only)"},
        },
    }
    setting = {
        "type": "object",
        "description": "a client setting, with the names Thunderbird, Outlook, Apple Mail, K-9 Mail and curl give it",
        "properties": {key: {"type": "string"} for key in ("setting", "title", "thunderbird", "outlook", "apple_mail",
                                                             "k9", "curl")},
    }
    explain_cell = {
        "type": "object",
        "properties": {
            "setting": {"type": "string", "enum": [setting.value for setting in ClientSetting]},
            "outcome": {"type": "string", "enum": [outcome.value for outcome in Outcome]},
            "text": {"type": "string", "description": "what happened, e.g. \"works (TLS 1.3)\""},
            "reason": {"type": "string", "description": "what the client saw: the reply line, the TLS error ..."},
            "seconds": {"type": "number"},
            "client_port": {"type": "integer", "description": "the probe's own port for this cell (0: it never connected)"},
            "session": {"type": ["integer", "null"], "description": "POST /api/explain: the id of the probe session "
                                                                   "this cell produced (GET /api/sessions/{id})"},
            "real_clients": {"type": "string", "description": "what real clients are known to do in this cell "
                                                               "where some differ from the model (\"\" if none)"},
        },
    }
    explain_table = {
        "type": "object",
        "description": "the table of `mailmodes explain --format json`, plus when it ran and whether it is cached",
        "properties": {
            "settings": {"type": "array", "items": setting, "description": "the columns, in order"},
            "rows": {"type": "array", "description": "one per running listener, in config order", "items": {
                "type": "object", "properties": {
                    "listener": {"type": "string"}, "protocol": {"type": "string"},
                    "address": {"type": "string"}, "port": {"type": "integer"},
                    "mode": {"type": "string", "description": "the configured mode (the probe finds out the real one)"},
                    "cells": {"type": "array", "items": explain_cell, "description": "in the order of settings"}}}},
            "started": {"type": "string", "format": "date-time",
                        "description": "when the probe began (its sessions are in the journal: since/until)"},
            "finished": {"type": "string", "format": "date-time"},
            "seconds": {"type": "number"},
            "user": {"type": ["string", "null"], "description": "the user the probe logged in as (the first one)"},
            "cached": {"type": "boolean", "description": "true: the result of an earlier probe"},
            "age": {"type": "number", "description": "seconds since that probe finished"},
            "cache_seconds": {"type": "number"},
        },
    }
    verdict = {
        "type": "object",
        "description": "one entry of the verdict registry",
        "properties": {
            "code": {"type": "string", "enum": list(CODES)},
            "title": {"type": "string"},
            "severity": {"type": "string", "enum": list(SEVERITIES),
                         "description": "client-fault: the client did wrong; client-correct: it did right; note"},
            "explanation": {"type": "string", "description": "when the server reaches it"},
        },
    }
    outcome = {"type": "string", "enum": list(OUTCOMES)}
    report_row = {
        "type": "object",
        "description": "one scenario (or known-good mode) on one protocol",
        "properties": {
            "protocol": {"type": "string", "enum": list(PROTOCOLS)},
            "scenario": {"type": "string", "enum": list(EXPECTATIONS),
                         "description": "a scenario id, or the TLS mode of a known-good listener"},
            "outcome": {**outcome, "description": "failed if any session failed, else passed if any passed"},
            "reason": {"type": "string", "description": "why, in plain words (the deciding session's)"},
            "correct_client": {"type": "string", "description": "what a correct client does"},
            "session": {"type": ["integer", "null"], "description": "the deciding session's id"},
            "sessions": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "integer"}, "listener": {"type": "string"}, "tls_mode": {"type": "string"},
                "outcome": outcome, "reason": {"type": "string"}}}},
        },
    }
    report = {
        "type": "object",
        "description": "every scenario the client scope met, per protocol, passed / failed / inconclusive",
        "properties": {
            "scope": {"type": "object", "description": "the query that chose the sessions"},
            "counts": {"type": "object", "properties": {outcome_name: {"type": "integer"}
                                                          for outcome_name in OUTCOMES}},
            "sessions": {"type": "integer", "description": "sessions on the card (probes never are)"},
            "rows": {"type": "array", "items": report_row},
        },
    }
    return {
        "ReportCard": report,
        "Verdict": verdict,
        "Error": {"type": "object", "required": ["error", "status"],
                  "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
        "Listener": listener,
        "ExplainTable": explain_table,
        "Session": session,
        "TranscriptLine": transcript_line,
        "MessageSummary": message,
        "MessageDetail": detail,
        "Captured": captured,
        "Deleted": {"type": "object", "properties": {"deleted": {"type": "integer"}}},
    }


def _raw(description: str) -> dict[str, Any]:
    return {"description": description + " (Content-Disposition: attachment)",
            "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}


def _paths() -> dict[str, Any]:
    deleted = _json(_ref("Deleted"), "how many were deleted")
    return {
        "/": {"get": {"summary": "the dashboard", "operationId": "dashboard", "responses": {
            "200": {"description": "HTML", "content": {"text/html": {}}}}}},
        "/static/{name}": {"get": {"summary": "the dashboard's script and style sheet", "operationId": "dashboardFile",
                                   "parameters": [_path_param("name", "app.js or style.css")],
                                   "responses": {"200": {"description": "the file"}, "404": NOT_FOUND}}},
        "/openapi.json": {"get": {"summary": "this description", "operationId": "openapi",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
        "/ca.pem": {"get": {"summary": "the test CA certificate to trust", "operationId": "caCertificate",
                            "responses": {"200": {"description": "PEM", "content": {"application/x-pem-file": {}}}}}},
        "/api/health": {"get": {"summary": "the HTTP server answers", "operationId": "health", "responses": {
            "200": _json({"type": "object", "properties": {"status": {"const": "ok"}, "version": {"type": "string"}}},
                         "alive")}}},
        "/api/ready": {"get": {"summary": "every configured listener is listening", "operationId": "ready",
                               "responses": {
                                   "200": _json({"type": "object"}, "ready: true"),
                                   "503": _json({"type": "object"}, "ready: false (starting or stopping)")}}},
        "/api/info": {"get": {"summary": "version, hostname, users (no passwords)", "operationId": "info",
                              "responses": {"200": _json({"type": "object"}, "server facts")}}},
        "/api/listeners": {"get": {"summary": "the listener matrix", "operationId": "listeners", "responses": {
            "200": _json({"type": "object", "properties": {
                "listeners": {"type": "array", "items": _ref("Listener")},
                "protocols": {"type": "array", "items": {"type": "string"}, "const": list(PROTOCOLS),
                              "description": "every protocol, in order: the matrix's rows"},
                "tls_modes": {"type": "array", "items": {"type": "string"}, "const": TLS_MODES,
                              "description": "every TLS mode, in order: the matrix's columns"}}},
                "every configured listener in config order, and the names the matrix is laid out by")}}},
        "/api/explain": {
            "get": {"summary": "the table of the last probe run (a GET never starts one)", "operationId": "explained",
                    "responses": {"200": _json(_ref("ExplainTable"), "the kept table (cached: true)"),
                                  "404": _error("no probe has run yet")}},
            "post": {
                "summary": "what each client setting meets on each port: `mailmodes explain` against this server",
                "description": "Connects to every running listener once per client setting (implicit TLS, STARTTLS "
                               "required, STARTTLS if available, no TLS) over loopback, trusting this server's CA, "
                               "and logs in as the first configured user where it can. Takes about 1.5 s; the "
                               "result is kept for cache_seconds (30). The probe's sessions are in the journal, "
                               "marked as a probe's (probe: true) and kept out of verdict queries. Refused (403) "
                               "when the request carries the Origin of another page.",
                "operationId": "explain",
                "parameters": [_query("refresh", "true: probe again even if a result under 30 s old is kept",
                                      "boolean")],
                "responses": {"200": _json(_ref("ExplainTable"), "the table"),
                              "400": _error("a bad refresh value"),
                              "403": _error("sent from a page of another origin")}}},
        "/api/verdicts": {"get": {
            "summary": "the verdict registry: every code with its title, severity and explanation",
            "operationId": "verdicts",
            "responses": {"200": _json({"type": "object", "properties": {
                "severities": {"type": "array", "items": {"type": "string"}, "const": list(SEVERITIES)},
                "verdicts": {"type": "array", "items": _ref("Verdict"), "description": "in registry order"}}},
                "every verdict the server can reach")}}},
        "/api/sessions": {
            "get": {"summary": "sessions with transcripts and verdicts, oldest first", "operationId": "sessions",
                    "parameters": _session_filters(), "responses": {
                        "200": _json({"type": "object", "properties": {
                            "count": {"type": "integer"},
                            "sessions": {"type": "array", "items": _ref("Session")}}}, "the matching sessions"),
                        "400": _error("a bad or unknown query parameter")}},
            "delete": {"summary": "forget every finished session", "operationId": "deleteSessions",
                       "responses": {"200": deleted}},
        },
        "/api/report": {"get": {
            "summary": "the report card: every scenario the client scope met, passed / failed / inconclusive",
            "description": "Each finished session (never a probe's) is judged against what a correct client does "
                           "on its scenario, or on its listener's mode; a row per protocol and scenario. Scope it "
                           "to one client by its address and a start time (an audit run, a CI job).",
            "operationId": "report",
            "parameters": [
                _query("client", "only sessions from this client address (host, or host:port)"),
                _query("since", "started at or after: ISO 8601 (UTC unless an offset is given) or epoch seconds"),
                _query("until", "started before: ISO 8601 or epoch seconds"),
                _query("protocol", "only sessions of this protocol", enum=list(PROTOCOLS)),
                _query("listener", "only sessions on this listener (its name)"),
                _query("format", "json (default), text (as `mailmodes report`) or junit (JUnit XML)",
                       enum=list(FORMATS)),
            ],
            "responses": {
                "200": {"description": "the report card", "content": {
                    JSON: {"schema": _ref("ReportCard")}, "text/plain": {}, "application/xml": {}}},
                "400": _error("a bad or unknown query parameter")}}},
        "/api/sessions/{id}": {"get": {"summary": "one session", "operationId": "session",
                                       "parameters": [_path_param("id", "session id", "integer")],
                                       "responses": {"200": _json(_ref("Session"), "the session"),
                                                     "400": BAD_NUMBER, "404": NOT_FOUND}}},
        "/api/events": {"get": {"summary": "Server-Sent Events: `change` with {sessions: bool, messages: bool}",
                                "operationId": "events",
                                "responses": {"200": {"description": "an event stream",
                                                      "content": {"text/event-stream": {}}}}}},
        "/api/messages": {
            "get": {"summary": "users, their mailboxes and message counts", "operationId": "messagesOverview",
                    "responses": {"200": _json({"type": "object"}, "users and captured count")}},
            "delete": {"summary": "delete every message of every user, and all captured mail",
                       "operationId": "deleteAllMessages", "responses": {"200": deleted}},
        },
        "/api/messages/{user}": {
            "get": {"summary": "every message of a user, every mailbox; with filters or wait, those that match",
                    "description": "With any query parameter the answer also has count, waited (seconds), "
                                   "timed_out, and a raw_url for each message.",
                    "operationId": "userMessages",
                    "parameters": [USER, *_message_filters()], "responses": {
                        "200": _json({"type": "object", "properties": {
                            "user": {"type": "string"},
                            "messages": {"type": "array", "items": _ref("MessageSummary")},
                            "count": {"type": "integer"}, "waited": {"type": "number"},
                            "timed_out": {"type": "boolean", "description": "wait ran out before count matched"}}},
                            "messages"),
                        "400": _error("a bad or unknown query parameter"), "404": NOT_FOUND}},
            "delete": {"summary": "delete every message of a user", "operationId": "deleteUserMessages",
                       "parameters": [USER], "responses": {"200": deleted, "404": NOT_FOUND}},
        },
        "/api/messages/{user}/{mailbox}": {
            "get": {"summary": "the messages of one mailbox", "operationId": "mailboxMessages",
                    "parameters": [USER, MAILBOX], "responses": {
                        "200": _json({"type": "object", "properties": {
                            "user": {"type": "string"}, "mailbox": {"type": "string"},
                            "uidvalidity": {"type": "integer"},
                            "messages": {"type": "array", "items": _ref("MessageSummary")}}}, "messages"),
                        "404": NOT_FOUND}},
            "delete": {"summary": "delete the messages of one mailbox", "operationId": "deleteMailboxMessages",
                       "parameters": [USER, MAILBOX], "responses": {"200": deleted, "404": NOT_FOUND}},
        },
        "/api/messages/{user}/{mailbox}/{uid}": {
            "get": {"summary": "one message: headers and parts (text as text)", "operationId": "message",
                    "parameters": [USER, MAILBOX, UID],
                    "responses": {"200": _json(_ref("MessageDetail"), "the message"),
                                  "400": BAD_NUMBER, "404": NOT_FOUND}}},
        "/api/messages/{user}/{mailbox}/{uid}/raw": {
            "get": {"summary": "the message as received", "operationId": "messageRaw",
                    "parameters": [USER, MAILBOX, UID],
                    "responses": {"200": _raw("the bytes"), "400": BAD_NUMBER, "404": NOT_FOUND}}},
        "/api/captured": {
            "get": {"summary": "mail that authenticated clients sent to non-local addresses (never relayed)",
                    "operationId": "captured", "responses": {"200": _json({"type": "object", "properties": {
                        "messages": {"type": "array", "items": _ref("Captured")}}}, "captured mail")}},
            "delete": {"summary": "delete all captured mail (ids restart at 1)", "operationId": "deleteCaptured",
                       "responses": {"200": deleted}},
        },
        "/api/captured/{id}": {
            "get": {"summary": "one captured message, headers and parts", "operationId": "capturedMessage",
                    "parameters": [_path_param("id", "position, from 1", "integer")],
                    "responses": {"200": _json({"allOf": [_ref("Captured"), _ref("MessageDetail")]}, "the message"),
                                  "400": BAD_NUMBER, "404": NOT_FOUND}}},
        "/api/captured/{id}/raw": {
            "get": {"summary": "one captured message as received", "operationId": "capturedRaw",
                    "parameters": [_path_param("id", "position, from 1", "integer")],
                    "responses": {"200": _raw("the bytes"), "400": BAD_NUMBER, "404": NOT_FOUND}}},
    }


def _message_filters() -> list[dict[str, Any]]:
    return [
        _query("wait", "long poll: answer as soon as `count` messages match, or after this many seconds "
                       "(at most 300) with those that match then", "number", minimum=0, maximum=300),
        _query("count", "with wait: how many must match (default 1)", "integer", minimum=1),
        _query("subject", "substring of the decoded Subject, any case"),
        _query("from", "substring of the decoded From, any case"),
        _query("to", "substring of the decoded To or Cc, any case"),
        _query("since", "internal date at or after: ISO 8601 or epoch seconds"),
        _query("mailbox", "only this mailbox (default: every mailbox)"),
    ]


def _control_paths() -> dict[str, Any]:
    """Seeding, runtime scenarios and reset: the routes of web/control.py."""
    summary = {"allOf": [_ref("MessageSummary"), {"type": "object", "properties": {
        "user": {"type": "string"}, "raw_url": {"type": "string"}}}]}
    return {
        "/api/messages/{user}/{mailbox}": {"post": {
            "summary": "put a message into a mailbox (seed), as IMAP APPEND would",
            "description": "The body is the raw RFC 5322 message (any Content-Type, up to 25 MiB); bare LF "
                           "line endings become CRLF. A waiting GET /api/messages/{user}?wait= sees it at once.",
            "operationId": "seedMessage",
            "parameters": [USER, MAILBOX,
                           _query("flags", "flags to set, separated by commas or spaces, e.g. \\Seen,\\Flagged"),
                           _query("internal_date", "the IMAP internal date: ISO 8601 or epoch seconds "
                                                   "(default: now)"),
                           _query("create", "true: make the mailbox (and its parents) if it is missing",
                                  "boolean")],
            "requestBody": {"required": True, "content": {"message/rfc822": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {"201": _json(summary, "the stored message (Location: its URL)"),
                          "400": _error("an empty body, a bad flag or date"),
                          "404": _error("no such user, or no such mailbox without create=true"),
                          "413": _error("over 25 MiB")}}},
        "/api/listeners/{name}/scenario": {"put": {
            "summary": "change a running listener's known-bad scenario (and chaos settings)",
            "description": "Connections accepted from now on get the new scenario; open ones keep theirs. "
                           "Checked like the config file: scenario must be for the listener's protocol; chaos "
                           "(stage, reply, disconnect, delay) only with scenario \"chaos\". POST /api/reset "
                           "restores the configured scenario.",
            "operationId": "putListenerScenario",
            "parameters": [_path_param("name", "listener name")],
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["scenario"], "properties": {
                    "scenario": {"type": ["string", "null"], "description": "a scenario id, or null: known-good"},
                    "chaos": {"type": "object", "properties": {
                        "stage": {"type": "string"}, "reply": {"type": "string"},
                        "disconnect": {"type": "boolean"}, "delay": {"type": "number", "minimum": 0}}}}}}}},
            "responses": {"200": _json(_ref("Listener"), "the listener as it is now"),
                          "400": _error("an unknown scenario, one not for this protocol, bad chaos settings"),
                          "404": NOT_FOUND}}},
        "/api/reset": {"post": {
            "summary": "back to how the server started, between tests",
            "description": "Forgets finished sessions, messages, mailboxes that were not there at start and "
                           "captured mail; loads the [[seed]] mail again; gives every listener its configured "
                           "scenario. Open connections go on.",
            "operationId": "reset",
            "responses": {"200": _json({"type": "object", "properties": {
                "sessions": {"type": "integer"}, "messages": {"type": "integer"}, "captured": {"type": "integer"},
                "listeners": {"type": "array", "items": {"type": "string"},
                              "description": "listeners whose scenario was restored"},
                "seeded": {"type": "integer"},
                "tokens": {"type": "integer", "description": "OAuth tokens forgotten"}}},
                "what was deleted and restored")}}},
        **_token_paths(),
    }


def _token_paths() -> dict[str, Any]:
    """The OAuth bearer tokens of XOAUTH2 and OAUTHBEARER (store.py)."""
    token = {"type": "object", "properties": {
        "id": {"type": "string", "description": "what the token is listed and revoked by"},
        "user": {"type": "string", "description": "the account it logs in as"},
        "scope": {"type": "string", "description": "space-separated words; `mail` or the protocol's name "
                                                   "(smtp, imap, pop3) lets it log in there"},
        "issued": {"type": "number"}, "expires": {"type": "number", "description": "epoch seconds"},
        "expires_in": {"type": "integer", "description": "seconds left (0 once expired)"},
        "expired": {"type": "boolean"}}}
    issued = {"allOf": [token, {"type": "object", "properties": {
        "token": {"type": "string", "description": "the bearer token itself: shown only here"}}}]}
    return {
        "/api/tokens": {
            "post": {
                "summary": "issue an OAuth 2.0 bearer token for XOAUTH2 / OAUTHBEARER (RFC 7628)",
                "description": "The server is its own authorization server. A token refused at login (unknown, "
                               "revoked, expired, wrong scope, another user's) gets RFC 7628 section 3.2.2's "
                               "JSON error as a challenge: {\"status\": \"invalid_token\" or "
                               "\"insufficient_scope\", \"scope\": ..., \"schemes\": \"bearer\"}. Tokens live in "
                               "memory; POST /api/reset forgets them.",
                "operationId": "issueToken",
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "required": ["user"], "properties": {
                        "user": {"type": "string", "description": "an account's name or address"},
                        "scope": {"type": "string", "description": "default `mail`"},
                        "expires_in": {"type": "number", "description": "seconds (default 3600; 0 or less: "
                                                                        "already expired)"}}}}}},
                "responses": {"201": _json(issued, "the new token"),
                              "400": _error("a missing user, a bad scope or expires_in"),
                              "404": _error("no such user")}},
            "get": {"summary": "the tokens issued (never the tokens themselves)", "operationId": "listTokens",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "tokens": {"type": "array", "items": token}}}, "every token not revoked")}},
        },
        "/api/tokens/{id}": {"delete": {
            "summary": "revoke a token", "operationId": "revokeToken",
            "parameters": [_path_param("id", "the token's id (from POST or GET /api/tokens)")],
            "responses": {"200": _json({"type": "object", "properties": {"revoked": {"type": "string"}}},
                                       "revoked"),
                          "404": _error("no such token")}}},
    }


def openapi_document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailmodes HTTP API",
            "version": version,
            "description": "Listeners, recorded sessions with transcripts and verdicts, received and captured "
                           "mail, and the test CA of a running mailmodes server. Every error is JSON "
                           "{error, status}. Mail content is returned as JSON strings: treat it as hostile.",
        },
        "paths": {path: {**_paths().get(path, {}), **item}
                  for path, item in {**_paths(), **_control_paths()}.items()},
        "components": {"schemas": _schemas()},
    }
