# mailmodes in a container: the seven standard mail ports (and the HTTP API on 8025), run by a
# non-root user, certificates written to the /certs volume so the host can read ca.pem. Mail is in
# memory unless MAILMODES_STORE_PATH=/data (or a config's [store] path = "/data") keeps it in the
# /data volume.
#
#   docker build -t mailmodes .
#   docker run -d --name mailmodes -p 587:587 -p 993:993 ... mailmodes
#   docker cp mailmodes:/certs/ca.pem .
#
# Configuration: mount a TOML file and point MAILMODES_CONFIG at it, or set MAILMODES_HOSTNAME,
# MAILMODES_USERS ("alice:pw,bob:pw"), MAILMODES_PORT_OFFSET ... (see README.md, "Docker").
FROM python:3.11-slim

# The server binds 25, 110, 143, 465, 587, 993 and 995 without root: the interpreter gets the one
# capability it needs (CAP_NET_BIND_SERVICE) as a file capability. libcap2-bin is only needed for
# setcap itself. A container started with that capability dropped (--cap-drop NET_BIND_SERVICE)
# cannot run this interpreter; use MAILMODES_PORT_OFFSET=10000 and map the ports instead.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcap2-bin \
 && setcap cap_net_bind_service=+ep "$(readlink -f /usr/local/bin/python3)" \
 && apt-get purge -y --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/*

# Only what the package needs to build (no test extras). Compiled to bytecode here, since the
# image's user cannot write it beside the code later, and run once so that startup.py's cache of
# compiled dataclass functions is there too: each start then imports instead of compiling.
COPY pyproject.toml README.md /src/
COPY server/ /src/server/
RUN pip install --no-cache-dir /src && rm -rf /src && python -c "from mailmodes import startup; startup.warm()"

# The example configs: MAILMODES_CONFIG=/etc/mailmodes/matrix.toml serves every mode.
COPY config/ /etc/mailmodes/

RUN useradd --uid 10025 --user-group --home-dir /var/lib/mailmodes --create-home mailmodes \
 && mkdir /certs /data && chown mailmodes:mailmodes /certs /data

# Listen on every interface of the container (the default config says 127.0.0.1); certificates in
# the volume. `mailmodes check` reads the same variables, so the health check probes what serve bound.
# The HTTP API answers the compose service name as well as loopback and the hostname.
ENV MAILMODES_HOST=0.0.0.0 \
    MAILMODES_HTTP_HOST=0.0.0.0 \
    MAILMODES_HTTP_ALLOWED_HOSTS=mailmodes \
    MAILMODES_CERTS_DIR=/certs \
    PYTHONUNBUFFERED=1
VOLUME ["/certs"]
# The durable store's directory, used only when [store] path names it (README, "Durable mail").
VOLUME ["/data"]
USER mailmodes
WORKDIR /var/lib/mailmodes

# SMTP, submissions, submission, IMAP, IMAPS, POP3, POP3S, and the HTTP API / dashboard.
EXPOSE 25 465 587 143 993 110 995 8025

# Healthy once every listener greets (implicit-TLS ones after a handshake verified with the CA).
# Each check is one short session per listener, recorded in the journal like any other: every 30 s
# keeps them from crowding out the sessions under test.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["mailmodes", "check"]

ENTRYPOINT ["mailmodes"]
CMD ["serve"]
