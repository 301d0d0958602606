"""The OpenAPI 3.1 description of the HTTP API, served at /openapi.json.

Kept next to http.py by hand; tests/http/test_api.py checks that every route of the app is
described here and that nothing described is missing from the app.
"""

from __future__ import annotations

from typing import Any

JSON = "application/json"


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
        _query("protocol", "smtp, imap or pop3", enum=["smtp", "imap", "pop3"]),
        _query("mode", "TLS mode of the listener",
               enum=["implicit", "starttls-required", "starttls-optional", "plaintext"]),
        _query("user", "only sessions that authenticated as this user"),
        _query("verdict", "only sessions with this verdict code, e.g. credentials-in-clear"),
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
            "logins": {"type": "array", "description": "every login attempt the server decided (the first 32), in order; "
                                                       "never the secret", "items": {"type": "object", "properties": {
                "command": {"type": "string", "description": "what carried it: LOGIN, AUTHENTICATE PLAIN, AUTH PLAIN, "
                                                            "AUTH LOGIN, PASS, APOP ..."},
                "user": string_or_null, "tls": {"type": "boolean"},
                "accepted": {"type": "boolean", "description": "false: a failed attempt (user: the name tried)"}}}},
            "verdicts": {"type": "array", "items": {"type": "string"}},
            "verdict_details": {"type": "array", "items": {"type": "object", "properties": {
                "code": {"type": "string"}, "detail": {"type": "string"}}}},
            "transcript": {"type": "array", "items": transcript_line},
            "transcript_lines": {"type": "integer", "description": "instead of transcript when transcript=false"},
            "transcript_truncated": {"type": "integer"},
        },
    }
    listener = {
        "type": "object",
        "properties": {
            "name": {"type": "string"}, "protocol": {"type": "string"}, "host": {"type": "string"},
            "port": {"type": ["integer", "null"], "description": "the bound port; null if not running"},
            "configured_port": {"type": "integer"}, "mode": {"type": "string"}, "role": string_or_null,
            "scenario": string_or_null, "running": {"type": "boolean"},
        },
    }
    setting = {
        "type": "object",
        "description": "a client setting, with the names Thunderbird, Outlook and curl give it",
        "properties": {key: {"type": "string"} for key in ("setting", "title", "thunderbird", "outlook", "curl")},
    }
    explain_cell = {
        "type": "object",
        "properties": {
            "setting": {"type": "string", "enum": ["implicit", "starttls-required", "starttls-if-available", "none"]},
            "outcome": {"type": "string", "enum": ["works", "works-cleartext", "refused", "hangs", "tls-error",
                                                   "no-starttls", "login-failed", "unreachable"]},
            "text": {"type": "string", "description": "what happened, e.g. \"works (TLS 1.3)\""},
            "reason": {"type": "string", "description": "what the client saw: the reply line, the TLS error ..."},
            "seconds": {"type": "number"},
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
    return {
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
            "200": _json({"type": "object", "properties": {"listeners": {"type": "array", "items": _ref("Listener")}}},
                         "every configured listener in config order")}}},
        "/api/explain": {"get": {
            "summary": "what each client setting meets on each port: `mailmodes explain` against this server",
            "description": "Connects to every running listener once per client setting (implicit TLS, STARTTLS "
                           "required, STARTTLS if available, no TLS) over loopback, trusting this server's CA, "
                           "and logs in as the first configured user where it can. Takes about 1.5 s; the result "
                           "is kept for cache_seconds (30). The probe's sessions are recorded in the journal "
                           "like any client's.",
            "operationId": "explain",
            "parameters": [_query("refresh", "true: probe again even if a result under 30 s old is kept",
                                  "boolean")],
            "responses": {"200": _json(_ref("ExplainTable"), "the table"),
                          "400": _error("a bad refresh value")}}},
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
            "get": {"summary": "every message of a user, every mailbox", "operationId": "userMessages",
                    "parameters": [USER], "responses": {
                        "200": _json({"type": "object", "properties": {
                            "user": {"type": "string"},
                            "messages": {"type": "array", "items": _ref("MessageSummary")}}}, "messages"),
                        "404": NOT_FOUND}},
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
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
