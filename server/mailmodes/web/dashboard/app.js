// mailmodes dashboard. Everything a mail client sent is hostile input: it reaches the page only
// through textContent (see el()), never innerHTML, and the server's Content-Security-Policy
// forbids inline script besides. No build step, no external assets.
"use strict";

// Which plaintext client lines a verdict is about, to mark them in the transcript. The verdict
// itself comes from the server (journal.py); this only points at the lines it concerns.
const VERDICT_LINES = {
  "credentials-in-clear": /^(AUTH|USER|PASS|APOP|\S+ (LOGIN|AUTHENTICATE))\b|^\*\*\*\*$/i,
  "mail-in-clear": /^(MAIL|RCPT|DATA|BDAT|RETR|TOP|\S+ (SELECT|EXAMINE|FETCH|APPEND|SEARCH|UID FETCH|UID SEARCH))\b/i,
};

const state = { sessionId: null, message: null, user: null, explained: false, verdicts: {}, outcomes: {} };

// --- DOM helpers: text only -----------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "title") node.title = value;
    else if (key === "href") node.setAttribute("href", value);
    else node.dataset[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function $(id) {
  return document.getElementById(id);
}

async function api(path, method) {
  const response = await fetch(path, { method: method || "GET", headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function clock(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function size(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

function mailPath(user, mailbox, uid) {
  return [user, mailbox, uid].map((part) => encodeURIComponent(String(part))).join("/");
}

// --- listeners ------------------------------------------------------------------------------

async function loadListeners() {
  // The server names the protocols (rows) and TLS modes (columns), so they are written in Python only.
  const { listeners, protocols, tls_modes: modes } = await api("/api/listeners");
  $("matrix").tHead.replaceChildren(el("tr", {}, el("th", {}, "protocol"), ...modes.map((mode) => el("th", {}, mode))));
  const rows = protocols.map((protocol) => {
    const cells = modes.map((mode) => {
      const here = listeners.filter((l) => l.protocol === protocol && l.mode === mode);
      return el("td", {}, ...here.map(listenerEntry));
    });
    return el("tr", {}, el("th", {}, protocol.toUpperCase()), ...cells);
  });
  replaceRows($("matrix").tBodies[0], rows);
  const stopped = listeners.filter((l) => !l.running);
  $("listeners-note").textContent = stopped.length
    ? "Not running: " + stopped.map((l) => l.name).join(", ")
    : "";
  const select = $("filter-listener");
  const chosen = select.value;
  select.replaceChildren(el("option", {}, "any"), ...listeners.map((l) => el("option", {}, l.name)));
  select.options[0].value = "";
  select.value = chosen;
}

function listenerEntry(listener) {
  return el("div", { class: "listener" + (listener.running ? "" : " stopped") },
    el("span", { class: "port" }, listener.port === null ? "-" : `:${listener.port}`), " ",
    el("span", { class: "name" }, listener.name),
    listener.role && listener.role !== "submission" ? el("span", { class: "tag" }, listener.role) : null,
    listener.scenario ? el("span", { class: "tag scenario" }, listener.scenario) : null);
}

// --- teaching table: what each client setting meets on each port -------------------------------

// The probe's outcome words (explain.py), grouped into the kinds the table colours.
const OUTCOME_KINDS = {
  "works": "works",
  "works-cleartext": "cleartext",
  "refused": "refused",
  "no-starttls": "refused",
  "hangs": "hangs",
  "tls-error": "tls-error",
  "login-failed": "other",
  "unreachable": "other",
};

async function runExplain() {
  const button = $("explain-run");
  const status = $("explain-status");
  button.disabled = true;
  status.textContent = "probing every listener in every client setting…";
  try {
    // The first run of a page may take a kept result (30 s); Run again probes afresh. A probe is
    // started by a POST only: no link or image on another page can start one.
    const table = await api("/api/explain" + (state.explained ? "?refresh=1" : ""), "POST");
    state.explained = true;
    renderExplain(table);
    const when = clock(table.finished);
    status.textContent = table.cached
      ? `probed at ${when} (kept result, ${Math.round(table.age)} s old), in ${table.seconds.toFixed(1)} s`
      : `probed at ${when}, in ${table.seconds.toFixed(1)} s` + (table.user ? `, logged in as ${table.user}` : "");
    if (!table.rows.length) status.textContent += ": no listener is running";
    button.textContent = "Run again";
  } catch (error) {
    status.textContent = `failed: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function renderExplain(table) {
  const box = $("explain");
  const head = el("tr", {}, el("th", {}, "listener"),
    ...table.settings.map((s) => el("th", { setting: s.setting }, s.title,
      el("span", { class: "names muted" }, `Thunderbird “${s.thunderbird}”, Outlook “${s.outlook}”, Apple Mail “${s.apple_mail}”, K-9 “${s.k9}”, curl ${s.curl}`))));
  box.tHead.replaceChildren(head);
  replaceRows(box.tBodies[0], table.rows.map((row) => el("tr", { listener: row.listener },
    el("th", { class: "listener" }, el("span", { class: "port" }, `:${row.port}`), " ", row.listener,
      el("span", { class: "tag" }, `${row.protocol} ${row.mode}`)),
    ...row.cells.map((cell) => el("td", {
      class: `outcome ${OUTCOME_KINDS[cell.outcome] || "other"}`, title: cell.reason, setting: cell.setting, outcome: cell.outcome,
    }, el("span", { class: "text" }, cell.text), el("small", { class: "reason" }, cell.reason),
      cell.real_clients ? el("small", { class: "real-clients muted" }, `real clients: ${cell.real_clients}`) : null,
      cell.session != null ? el("a", { class: "session-link", href: `#session=${cell.session}` }, `session #${cell.session}`) : null)))));
  box.hidden = false;
  $("explain-legend").hidden = false;
}

// --- verdicts: the registry (record/verdicts.py) names, ranks and explains every code -----------

// How each severity is drawn: a fault is marked "!", correct behaviour "✓", a note "i".
const SEVERITY_MARKS = { "client-fault": "!", "client-correct": "✓", "note": "i" };

async function loadVerdicts() {
  const { verdicts } = await api("/api/verdicts");
  state.verdicts = Object.fromEntries(verdicts.map((v) => [v.code, v]));
  $("verdict-codes").replaceChildren(...verdicts.map((v) => {
    const option = el("option", {}, v.title);
    option.value = v.code;
    return option;
  }));
  $("verdict-legend").replaceChildren(...verdicts.map((v) => el("div", { class: `legend-entry ${v.severity}`, code: v.code },
    el("span", { class: `verdict ${v.severity}` }, SEVERITY_MARKS[v.severity], " ", v.code), " ",
    el("span", { class: "muted" }, `${v.title}: ${v.explanation}`))));
}

function severity(code) {
  return state.verdicts[code] ? state.verdicts[code].severity : "client-fault";
}

function verdictChip(code) {
  const kind = severity(code);
  return el("span", { class: `verdict ${kind}`, title: state.verdicts[code] ? state.verdicts[code].title : code },
    SEVERITY_MARKS[kind], " ", code);
}

// --- sessions -------------------------------------------------------------------------------

function sessionQuery() {
  const query = new URLSearchParams({ transcript: "false", limit: "300" });
  const listener = $("filter-listener").value;
  const verdict = $("filter-verdict").value.trim();
  const user = $("filter-user").value.trim();
  if (listener) query.set("listener", listener);
  if (verdict) query.set("verdict", verdict);
  if (user) query.set("user", user);
  if ($("filter-probes").checked) query.set("probe", "false");
  return query.toString();
}

async function loadSessions() {
  await loadReport();  // each session's outcome comes from the report card
  const { sessions, count } = await api("/api/sessions?" + sessionQuery());
  const rows = sessions.slice().reverse().map(sessionRow);
  replaceRows($("sessions").tBodies[0], rows);
  $("sessions-count").textContent = `(${count})`;
  $("sessions-empty").hidden = count > 0;
  if (state.sessionId !== null) {
    const shown = sessions.find((s) => s.id === state.sessionId);
    // an open session grows: show its new lines, and its verdicts once it ends
    if (shown && (shown.ended === null || $("transcript").dataset.ended !== "yes")) await showSession(state.sessionId);
  }
}

function tlsLabel(session) {
  if (session.tls_version) return (session.starttls ? "STARTTLS " : "") + session.tls_version;
  if (session.tls_alert) return `alert: ${session.tls_alert}`;
  return "none";
}

function sessionRow(session) {
  const verdicts = session.verdicts.map(verdictChip);
  const row = el("tr", { class: "clickable" + (session.ended === null ? " open" : "") + (session.id === state.sessionId ? " selected" : "") },
    el("td", {}, session.id),
    el("td", {}, clock(session.started)),
    el("td", {}, session.client),
    el("td", {}, session.listener),
    el("td", {}, `${session.protocol} ${session.tls_mode}`),
    el("td", { class: "scenario" }, session.scenario || ""),
    el("td", { class: session.tls_version ? "tls" : "plain" }, tlsLabel(session)),
    el("td", {}, session.user || "", session.probe ? el("span", { class: "tag" }, "probe") : null),
    el("td", {}, session.ended === null ? el("span", { class: "muted" }, "live") : null, ...verdicts),
    outcomeCell(session));
  row.addEventListener("click", () => { location.hash = `session=${session.id}`; });
  return row;
}

function outcomeCell(session) {
  const judged = state.outcomes[session.id];
  if (!judged) return el("td", { class: "outcome-cell" }, session.probe ? el("span", { class: "muted" }, "probe") : "");
  return el("td", { class: `outcome-cell ${judged.outcome}`, title: judged.reason, outcome: judged.outcome }, judged.outcome);
}

// --- the report card: each scenario the clients met, per protocol (/api/report) -----------------

async function loadReport() {
  const query = new URLSearchParams();
  const client = $("report-client").value.trim();
  if (client) query.set("client", client);
  const card = await api("/api/report" + (query.toString() ? "?" + query : ""));
  const outcomes = {};
  if (!client) {
    for (const row of card.rows) for (const result of row.sessions) outcomes[result.id] = result;
  } else {
    Object.assign(outcomes, state.outcomes);
    for (const row of card.rows) for (const result of row.sessions) outcomes[result.id] = result;
  }
  state.outcomes = outcomes;
  renderReport(card);
}

function renderReport(card) {
  const protocols = [...new Set(card.rows.map((row) => row.protocol))];
  const scenarios = [...new Set(card.rows.map((row) => row.scenario))];
  const table = $("report-card");
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "scenario"), ...protocols.map((p) => el("th", {}, p.toUpperCase()))));
  replaceRows(table.tBodies[0], scenarios.map((scenario) => {
    const cells = protocols.map((protocol) => {
      const row = card.rows.find((r) => r.scenario === scenario && r.protocol === protocol);
      if (!row) return el("td", { class: "none" }, "–");
      const body = [el("span", { class: "text" }, row.outcome), el("small", { class: "reason" }, row.reason)];
      return el("td", { class: `cell ${row.outcome}`, title: `${row.reason} (a correct client ${row.correct_client})`,
        outcome: row.outcome, protocol, scenario },
        row.session === null ? el("span", {}, ...body) : el("a", { href: `#session=${row.session}` }, ...body));
    });
    const first = card.rows.find((r) => r.scenario === scenario);
    return el("tr", { scenario }, el("th", { class: "scenario", title: `a correct client ${first.correct_client}` }, scenario), ...cells);
  }));
  const { passed, failed, inconclusive } = card.counts;
  $("report-counts").textContent = card.rows.length ? `(${passed} passed, ${failed} failed, ${inconclusive} inconclusive)` : "";
  $("report-empty").hidden = card.rows.length > 0;
  table.hidden = card.rows.length === 0;
}

// --- the ladder diagram of one session --------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;  // text only, as el() does
  return node;
}

function clip(text, length) {
  return text.length > length ? text.slice(0, length - 1) + "…" : text;
}

function ladderSteps(session) {
  // The verdicts and the outcome first, where they are seen without scrolling; then the exchange.
  const steps = session.verdict_details.map((verdict) => ({ kind: "mark", severity: severity(verdict.code),
    text: `${SEVERITY_MARKS[severity(verdict.code)]} ${verdict.code}`, detail: verdict.detail }));
  const judged = state.outcomes[session.id];
  if (judged) {
    const kind = { failed: "client-fault", passed: "client-correct" }[judged.outcome] || "note";
    steps.unshift({ kind: "mark", severity: kind, text: `${judged.outcome}: ${judged.reason}`, detail: judged.reason });
  }
  let encrypted = false;
  for (const line of session.transcript) {
    if (line.tls && !encrypted) {
      steps.push({ kind: "tls-start", text: "TLS began here" });
      encrypted = true;
    }
    if (line.text.startsWith("[") && line.sender === "server") {
      steps.push({ kind: "note", text: line.text });
      continue;
    }
    const flagged = line.sender === "client" && !line.tls
      && session.verdicts.some((code) => VERDICT_LINES[code] && VERDICT_LINES[code].test(line.text));
    steps.push({ kind: "arrow", from: line.sender, text: line.text, tls: line.tls, bad: flagged, at: line.at });
  }
  if (session.tls_alert) steps.push({ kind: "arrow", from: "client", text: `TLS alert: ${session.tls_alert}`, bad: true, alert: true });
  return steps;
}

function renderLadder(session) {
  const steps = ladderSteps(session);
  const width = 640, left = 60, right = 580, row = 24, top = 34;
  const height = top + steps.length * row + 16;
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": `ladder diagram of session ${session.id}` });
  const defs = svg("defs");
  for (const kind of ["plain", "tls", "bad"]) {
    const marker = svg("marker", { id: `arrow-${kind}`, class: kind, viewBox: "0 0 10 10", refX: 10, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }));
    defs.append(marker);
  }
  box.append(defs,
    svg("text", { x: left, y: 16, class: "actor", "text-anchor": "middle" }, "client"),
    svg("text", { x: right, y: 16, class: "actor", "text-anchor": "middle" }, "server"),
    svg("line", { x1: left, y1: 22, x2: left, y2: height, class: "lifeline" }),
    svg("line", { x1: right, y1: 22, x2: right, y2: height, class: "lifeline" }));
  steps.forEach((step, index) => {
    const y = top + index * row + 14;
    const middle = (left + right) / 2;
    let group;
    if (step.kind === "arrow") {
      const kind = step.bad ? "bad" : step.tls ? "tls" : "plain";
      const [from, to] = step.from === "client" ? [left, right] : [right, left];
      group = svg("g", { class: `step ${step.from} ${kind}${step.alert ? " alert" : ""}` });
      group.append(svg("line", { x1: from, y1: y, x2: to, y2: y, "marker-end": `url(#arrow-${kind})` }),
        svg("text", { x: middle, y: y - 4, "text-anchor": "middle" }, clip(step.text, 72)));
      if (step.bad) group.append(svg("text", { x: left - 12, y: y + 4, "text-anchor": "end" }, "!"));
    } else if (step.kind === "tls-start") {
      group = svg("g", { class: "tls-start" });
      group.append(svg("rect", { x: left, y: y - 12, width: right - left, height: 16 }),
        svg("text", { x: middle, y: y, "text-anchor": "middle" }, step.text));
    } else if (step.kind === "note") {
      group = svg("g", { class: "note" });
      group.append(svg("text", { x: middle, y: y, "text-anchor": "middle" }, clip(step.text, 80)));
    } else {
      group = svg("g", { class: `mark ${step.severity}` });
      group.append(svg("rect", { x: left, y: y - 12, width: right - left, height: 16 }),
        svg("text", { x: left + 6, y: y }, clip(step.text, 88)));
    }
    const title = svg("title", {}, step.detail || step.text);
    group.append(title);
    box.append(group);
  });
  $("ladder").replaceChildren(box);
}

async function showSession(id) {
  const session = await api(`/api/sessions/${encodeURIComponent(id)}`);
  state.sessionId = session.id;
  $("transcript-section").hidden = false;
  $("transcript-title").textContent = `Session #${session.id}: ${session.client} on ${session.listener}`;
  const facts = [
    ["protocol", `${session.protocol}, ${session.tls_mode}` + (session.scenario ? `, scenario ${session.scenario}` : "")],
    ["TLS", session.tls_version ? `${session.starttls ? "via STARTTLS, " : "implicit, "}${session.tls_version} ${session.cipher}` : "none"],
    ["SNI", session.sni || "-"],
    ["TLS handshake", session.tls_handshake || "-"],
    ["user", session.user || "-"],
    ["failed logins", (session.logins || []).filter((login) => !login.accepted)
      .map((login) => `${login.command}${login.user ? ` as ${login.user}` : ""}`).join(", ") || "-"],
    ["started", session.started],
    ["ended", session.ended || "still connected"],
  ];
  $("session-facts").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
  renderTranscript(session);
  renderLadder(session);
}

function renderTranscript(session) {
  const box = $("transcript");
  const lines = [];
  let encrypted = false;
  for (const line of session.transcript) {
    if (line.tls && !encrypted) {
      // Exactly where TLS began: everything below was encrypted on the wire.
      lines.push(el("div", { class: "tls-boundary", role: "separator" }, "TLS began here"));
      encrypted = true;
    }
    lines.push(transcriptLine(line, session.verdicts));
  }
  if (session.transcript_truncated) {
    lines.push(el("div", { class: "muted" }, `[${session.transcript_truncated} more lines not kept]`));
  }
  for (const verdict of session.verdict_details) {
    const kind = severity(verdict.code);
    lines.push(el("div", { class: `line verdict-line ${kind}`, title: `verdict (${kind})` },
      el("span", { class: "arrow" }, SEVERITY_MARKS[kind]),
      el("span", { class: "text" }, el("span", { class: "code" }, verdict.code), ": ", verdict.detail)));
  }
  if (session.ended === null) lines.push(el("div", { class: "muted" }, "… still connected"));
  else if (!session.verdicts.some((code) => severity(code) === "client-fault")) lines.push(el("div", { class: "line ok-line" }, "nothing to complain about"));
  box.replaceChildren(...lines);
  box.dataset.ended = session.ended === null ? "no" : "yes";
}

function transcriptLine(line, verdicts) {
  const classes = ["line", line.sender, line.tls ? "tls" : "plain"];
  if (line.text.startsWith("[TLS established")) classes.push("tls-established");
  const flagged = line.sender === "client" && !line.tls
    ? verdicts.filter((code) => VERDICT_LINES[code] && VERDICT_LINES[code].test(line.text)) : [];
  if (flagged.length) classes.push("flagged");
  return el("div", { class: classes.join(" "), title: flagged.length ? flagged.join(", ") : "" },
    el("span", { class: "at" }, line.at.toFixed(3)),
    el("span", { class: "lock" }, line.tls ? "TLS" : ""),
    el("span", { class: "arrow" }, line.sender === "client" ? "C:" : "S:"),
    el("span", { class: "text" }, line.text),
    flagged.length ? el("span", { class: "verdict" }, flagged.join(", ")) : null);
}

// --- messages -------------------------------------------------------------------------------

async function loadMessages() {
  const overview = await api("/api/messages");
  const select = $("message-user");
  const users = overview.users.map((u) => u.user);
  if (state.user === null || !users.includes(state.user)) {
    const withMail = overview.users.find((u) => u.mailboxes.some((m) => m.messages > 0));
    state.user = withMail ? withMail.user : (users[0] || null);
  }
  select.replaceChildren(...overview.users.map((u) => {
    const count = u.mailboxes.reduce((sum, m) => sum + m.messages, 0);
    const option = el("option", {}, `${u.user} (${count})`);
    option.value = u.user;
    return option;
  }));
  if (state.user !== null) select.value = state.user;
  await Promise.all([loadUserMessages(), loadCaptured()]);
}

async function loadUserMessages() {
  if (state.user === null) return;
  const { user, messages } = await api(`/api/messages/${encodeURIComponent(state.user)}`);
  const rows = messages.slice().reverse().map((m) => {
    const row = el("tr", { class: "clickable" },
      el("td", {}, m.mailbox), el("td", {}, m.uid), el("td", {}, m.headers.from || ""),
      el("td", { class: "subject" }, m.headers.subject === null ? "(no subject)" : m.headers.subject),
      el("td", {}, m.headers.date || ""), el("td", {}, size(m.size)), el("td", {}, m.flags.join(" ")));
    row.addEventListener("click", () => { location.hash = "message=" + mailPath(user, m.mailbox, m.uid); });
    return row;
  });
  replaceRows($("messages").tBodies[0], rows);
  $("messages-empty").hidden = messages.length > 0;
}

async function loadCaptured() {
  const { messages } = await api("/api/captured");
  replaceRows($("captured").tBodies[0], messages.slice().reverse().map((m) => {
    const row = el("tr", { class: "clickable" },
      el("td", {}, m.id), el("td", {}, m.sender_account), el("td", {}, m.mail_from),
      el("td", {}, m.recipients.join(", ")),
      el("td", { class: "subject" }, m.headers.subject === null ? "(no subject)" : m.headers.subject),
      el("td", {}, size(m.size)));
    row.addEventListener("click", () => { location.hash = `captured=${m.id}`; });
    return row;
  }));
}

async function showMessage(path, title) {
  const message = await api(path);
  $("message-section").hidden = false;
  $("message-title").textContent = title;
  $("message-raw").setAttribute("href", path + "/raw");
  replaceRows($("message-headers").tBodies[0],
    message.header_list.map(([name, value]) => el("tr", {}, el("th", {}, name), el("td", {}, value))));
  const parts = message.parts.map((part) => {
    const caption = `${part.content_type}` + (part.filename ? ` "${part.filename}"` : "") + `, ${size(part.size)}`;
    const body = part.text === null
      ? el("p", { class: "muted" }, "(not text: download the raw message to see it)")
      // HTML parts are shown as their source, in a <pre>, never rendered.
      : el("pre", { class: "body" }, part.text + (part.truncated ? "\n[… cut here: download the raw message]" : ""));
    return el("figure", {}, el("figcaption", {}, caption), body);
  });
  if (message.parse_error) parts.unshift(el("p", { class: "muted" }, "This message could not be parsed; download it raw."));
  $("message-parts").replaceChildren(...parts);
}

// --- navigation, live updates, buttons -------------------------------------------------------

async function route() {
  const raw = location.hash.slice(1);
  if (raw.startsWith("session=")) {
    await showSession(Number(raw.slice("session=".length)));
    await loadSessions();
  } else if (raw.startsWith("message=")) {
    const [user, mailbox, uid] = raw.slice("message=".length).split("/").map(decodeURIComponent);
    await showMessage(`/api/messages/${mailPath(user, mailbox, uid)}`, `${user} / ${mailbox} / UID ${uid}`);
  } else if (raw === "report") {
    $("report-section").scrollIntoView();
  } else if (raw.startsWith("captured=")) {
    const id = raw.slice("captured=".length);
    await showMessage(`/api/captured/${encodeURIComponent(id)}`, `Captured message #${id}`);
  }
}

function setLive(stateName, text) {
  const badge = $("live");
  badge.dataset.state = stateName;
  badge.textContent = text;
}

function listen() {
  if (!window.EventSource) {
    setLive("polling", "polling");
    setInterval(() => { loadSessions(); loadMessages(); }, 2000);
    return;
  }
  const events = new EventSource("/api/events");
  events.addEventListener("open", () => setLive("live", "live"));
  events.addEventListener("error", () => setLive("down", "reconnecting"));
  events.addEventListener("change", (event) => {
    const changed = JSON.parse(event.data);
    if (changed.sessions) loadSessions().catch(report);
    if (changed.messages) loadMessages().catch(report);
  });
}

function report(error) {
  setLive("down", `error: ${error.message}`);
}

function wire() {
  for (const id of ["filter-listener", "filter-verdict", "filter-user", "filter-probes", "report-client"]) {
    $(id).addEventListener("input", () => loadSessions().catch(report));
  }
  $("session-filters").addEventListener("submit", (event) => event.preventDefault());
  $("report-filters").addEventListener("submit", (event) => event.preventDefault());
  $("clear-sessions").addEventListener("click", async () => {
    await api("/api/sessions", "DELETE");
    $("transcript-section").hidden = true;
    state.sessionId = null;
    await loadSessions();
  });
  $("message-user").addEventListener("change", () => {
    state.user = $("message-user").value;
    loadUserMessages().catch(report);
  });
  $("delete-user-messages").addEventListener("click", async () => {
    if (state.user !== null) await api(`/api/messages/${encodeURIComponent(state.user)}`, "DELETE");
    $("message-section").hidden = true;
    await loadMessages();
  });
  $("delete-all-messages").addEventListener("click", async () => {
    await api("/api/messages", "DELETE");
    $("message-section").hidden = true;
    await loadMessages();
  });
  $("explain-run").addEventListener("click", runExplain);
  window.addEventListener("hashchange", () => route().catch(report));
}

async function start() {
  wire();
  const info = await api("/api/info");
  $("server-facts").textContent = `${info.hostname} · version ${info.version}`;
  await loadVerdicts();
  await Promise.all([loadListeners(), loadSessions(), loadMessages()]);
  await route();
  listen();
  document.body.dataset.loaded = "yes";
}

start().catch(report);
