// The smtp-server peer for bench/smtp_peers.py: nodemailer's smtp-server (npm), the obvious
// scriptable test server a user might pick instead of mailmodes, set up as bench/bare_aiosmtpd.py
// sets up aiosmtpd: three listeners (plaintext, STARTTLS, implicit TLS), the same certificate
// files, hostname and 25 MiB size limit, every message's bytes kept in memory, no AUTH, and the
// same `listening ...` / `ready` lines as `mailmodes serve`.
//
//   node bench/smtp_server_peer.js --certs DIR [--hostname H] [--host 127.0.0.1]
//
// smtp-server itself is not a dependency of mailmodes: the benchmark installs it into a temporary
// folder and puts that folder's node_modules on NODE_PATH. SIGTERM or SIGINT stops it.
'use strict';

const fs = require('fs');
const path = require('path');
const { SMTPServer } = require('smtp-server');

function argument(name, fallback) {
    const at = process.argv.indexOf(name);
    return at >= 0 ? process.argv[at + 1] : fallback;
}

const certs = argument('--certs');
if (!certs) {
    console.error('usage: node smtp_server_peer.js --certs DIR [--hostname H] [--host 127.0.0.1]');
    process.exit(2);
}
const hostname = argument('--hostname', 'mail.example.test');
const host = argument('--host', '127.0.0.1');
const key = fs.readFileSync(path.join(certs, 'server.key'));
const cert = fs.readFileSync(path.join(certs, 'server.pem'));
const messages = [];

function options(extra) {
    return {
        name: hostname,
        key,
        cert,
        // The same policy as mailmodes and the aiosmtpd baseline: TLS 1.2 and 1.3 only.
        minVersion: 'TLSv1.2',
        size: 25 * 1024 * 1024,
        authOptional: true,
        disabledCommands: ['AUTH'],
        // aiosmtpd and mailmodes look nothing up either; a reverse lookup of 127.0.0.1 per
        // connection would only measure the resolver.
        disableReverseLookup: true,
        logger: false,
        onData(stream, session, callback) {
            const chunks = [];
            stream.on('data', (chunk) => chunks.push(chunk));
            stream.on('end', () => {
                messages.push(Buffer.concat(chunks));
                callback(null, 'OK');
            });
        },
        ...extra,
    };
}

const layout = [
    ['plain', 'plaintext', { hideSTARTTLS: true, disabledCommands: ['AUTH', 'STARTTLS'] }],
    ['starttls', 'starttls-optional', {}],
    ['implicit', 'implicit', { secure: true }],
];

const servers = [];

function listen(index) {
    if (index === layout.length) {
        console.log('ready');
        return;
    }
    const [name, mode, extra] = layout[index];
    const server = new SMTPServer(options(extra));
    // openssl s_time closes right after each handshake; that is the load, not an error.
    server.on('error', (error) => {
        if (!/Socket closed while initiating TLS/.test(error.message)) console.error(`${name}: ${error.message}`);
    });
    servers.push(server);
    server.listen(0, host, () => {
        const port = server.server.address().port;
        console.log(`listening ${name.padEnd(14)} smtp  ${host}:${String(port).padEnd(6)} ${mode}`);
        listen(index + 1);
    });
}

function stop() {
    let open = servers.length;
    const done = () => {
        if (--open <= 0) {
            console.log(`stopped (${messages.length} messages kept)`);
            process.exit(0);
        }
    };
    servers.forEach((server) => server.close(done));
    setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
listen(0);
