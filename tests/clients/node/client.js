// Drives nodemailer or imapflow the way an application would, with their own protocol logging on,
// so the tests can read what the client itself says it sent and received.
//   node client.js '{"client": "nodemailer", "port": 465, "secure": true, ...}'
// Prints the client's log lines and one "RESULT ok" or "RESULT error <code> <message>" line.
"use strict";

const fs = require("fs");

const options = JSON.parse(process.argv[2]);
const tls = {
  ca: options.ca ? fs.readFileSync(options.ca) : undefined,
  rejectUnauthorized: options.rejectUnauthorized !== false,
  servername: options.servername,
};
const auth = { user: options.user, pass: options.pass };

function finish(error) {
  if (error) {
    console.log(`RESULT error ${error.code || error.name} ${String(error.message).split("\n")[0]}`);
    process.exitCode = 1;
  } else {
    console.log("RESULT ok");
  }
}

async function nodemailer() {
  const transport = require("nodemailer").createTransport({
    host: options.host, port: options.port, secure: Boolean(options.secure),
    requireTLS: Boolean(options.requireTLS), ignoreTLS: Boolean(options.ignoreTLS),
    tls, auth: options.user ? auth : undefined, logger: true, debug: true,
    connectionTimeout: 8000, greetingTimeout: 8000, socketTimeout: 8000,
  });
  await transport.sendMail({
    from: "alice@example.test", to: "bob@example.test", subject: "nodemailer", text: "body",
  });
}

async function imapflow() {
  const { ImapFlow } = require("imapflow");
  const json = (entry) => { // a TLS error carries the peer certificate, whose issuer chain is circular
    try { return JSON.stringify(entry); } catch { return JSON.stringify({ msg: entry.msg, err: entry.err?.code }); }
  };
  const line = (level) => (entry) => console.log(`${level} ${json(entry)}`);
  const client = new ImapFlow({
    host: options.host, port: options.port, secure: Boolean(options.secure),
    doSTARTTLS: options.doSTARTTLS, tls, auth,
    logger: { debug: line("DEBUG"), info: line("INFO"), warn: line("WARN"), error: line("ERROR") },
    connectionTimeout: 8000, greetingTimeout: 8000, socketTimeout: 8000,
  });
  client.on("error", () => {}); // the rejection of connect() reports it
  await client.connect();
  const mailbox = await client.mailboxOpen("INBOX");
  if (options.steps === "rev2") {
    // What an IMAP4rev2 session gives the application: imapflow ENABLEs it by itself.
    const report = { enabled: [...client.enabled], exists: mailbox.exists };
    report.search = await client.search({ deleted: false }, { uid: true });
    report.status = await client.status("INBOX", { messages: true, deleted: true, size: true });
    console.log(`REV2 ${JSON.stringify(report)}`);
  }
  await client.logout();
}

({ nodemailer, imapflow })[options.client]().then(() => finish(), finish);
