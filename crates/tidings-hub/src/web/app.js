// The Tidings hub page: plain EventSource, plain fetch, no libraries.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const ALWAYS = ["message", "join", "leave", "tidings.gap"];
  const MAX_ROWS = 500;

  let source = null;        // the current EventSource
  let dropped = false;      // the user dropped the connection on purpose
  let lastId = "";          // the last event id this page saw
  let startedAt = "";       // the hub's newest id just before this subscription opened
  let replayUpTo = null;    // events with ids up to here, on this connection, are replayed
  let listened = new Set(); // event types with a listener on `source`
  let count = 0;

  // Ids are "<ms>-<seq>"; compare them as number pairs.
  function parseId(id) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(id || "");
    return m ? [Number(m[1]), Number(m[2] || 0)] : null;
  }
  function idLte(a, b) {
    const x = parseId(a), y = parseId(b);
    if (!x || !y) return false;
    return x[0] < y[0] || (x[0] === y[0] && x[1] <= y[1]);
  }
  // The token this page sends, if any: from the field, kept for this tab's session.
  function token() {
    return $("token").value.trim();
  }
  function authHeaders() {
    return token() ? { Authorization: "Bearer " + token() } : {};
  }

  function words(text) {
    return text.split(/[\s,]+/).map((w) => w.trim()).filter(Boolean);
  }

  function setState(state) {
    const el = $("state");
    el.textContent = state;
    el.dataset.state = state;
    el.className = "state " + state;
  }

  // Where a restored connection resumes: after the last event seen or, before any
  // arrived, after the newest event there was when the subscription started (every later
  // one is on the stream or in its replay, so none is missed).
  function resumePoint() {
    return lastId || startedAt;
  }

  function streamUrl(withLastId) {
    const params = new URLSearchParams();
    for (const t of words($("topics").value)) params.append("topic", t);
    if (withLastId && resumePoint()) params.set("lastEventId", resumePoint());
    // EventSource cannot send headers: the token goes in the query.
    if (token()) params.set("access_token", token());
    return "/events?" + params.toString();
  }

  // The hub's newest id right now: events up to it that arrive on a new connection are
  // history being replayed, not live.
  async function fetchHead() {
    try {
      const res = await fetch("/topics", { cache: "no-store", headers: authHeaders() });
      const body = await res.json();
      return body.head || null;
    } catch (e) {
      return null;
    }
  }

  async function connect(resume) {
    if (source) source.close();
    dropped = false;
    if (!resume) startedAt = (await fetchHead()) || "";
    replayUpTo = resume && resumePoint() ? await fetchHead() : null;
    const url = streamUrl(resume);
    $("stream-url").textContent = token() ? url.replace(/access_token=[^&]*/, "access_token=…") : url;
    $("stream-error").textContent = "";
    setState("connecting");
    source = new EventSource(url);
    listened = new Set();
    listenAll();
    source.onopen = () => setState("open");
    source.onerror = async () => {
      if (source.readyState === EventSource.CLOSED) {
        setState("closed");
        explainRefusal(url);
        return;
      }
      // The browser reconnects by itself, sending Last-Event-ID: mark what it replays.
      setState("connecting");
      const head = await fetchHead();
      if (head) replayUpTo = head;
    };
    $("toggle").disabled = false;
    $("toggle").textContent = "Drop connection";
  }

  // EventSource gives up on an answer other than 200 without saying why: ask once more
  // with fetch to show the hub's problem detail (e.g. a missing or expired token).
  async function explainRefusal(url) {
    const abort = new AbortController();
    try {
      const res = await fetch(url, { signal: abort.signal, cache: "no-store" });
      if (!res.ok) {
        const problem = await res.json();
        $("stream-error").textContent = problem.title + ": " + problem.detail;
      }
    } catch (e) {
      // The hub is unreachable: the state already says closed.
    } finally {
      abort.abort();
    }
  }

  function listenAll() {
    if (!source) return;
    for (const type of ALWAYS.concat(words($("types").value))) {
      if (listened.has(type)) continue;
      listened.add(type);
      source.addEventListener(type, onEvent);
    }
  }

  function onEvent(e) {
    const isGap = e.type === "tidings.gap";
    const replayed = !isGap && replayUpTo !== null && idLte(e.lastEventId, replayUpTo);
    if (e.lastEventId && !isGap) lastId = e.lastEventId;
    $("last-id").textContent = lastId || "none";
    addRow(e, replayed, isGap);
  }

  function addRow(e, replayed, isGap) {
    const id = parseId(e.lastEventId);
    const time = id ? new Date(id[0]) : new Date();
    const tr = document.createElement("tr");
    tr.className = "event" + (replayed ? " replayed" : "") + (isGap ? " gap" : "");
    tr.dataset.id = isGap ? "" : e.lastEventId;
    tr.dataset.type = e.type;
    const cells = [
      time.toLocaleTimeString() + "." + String(time.getMilliseconds()).padStart(3, "0"),
      isGap ? "" : e.lastEventId,
      e.type,
      e.data,
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const mark = document.createElement("td");
    if (replayed) mark.innerHTML = '<span class="badge replayed">replayed</span>';
    if (isGap) mark.innerHTML = '<span class="badge gap">gap</span>';
    tr.appendChild(mark);
    const log = $("log");
    log.insertBefore(tr, log.firstChild);
    while (log.children.length > MAX_ROWS) log.removeChild(log.lastChild);
    count += 1;
    $("log-count").textContent = "(" + count + ")";
  }

  function drop() {
    if (source) source.close();
    source = null;
    dropped = true;
    setState("closed");
    $("toggle").textContent = "Restore connection";
  }

  $("subscribe-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    lastId = "";
    connect(false);
  });
  $("types").addEventListener("change", listenAll);
  $("toggle").addEventListener("click", () => (dropped ? connect(true) : drop()));
  $("clear").addEventListener("click", () => {
    $("log").textContent = "";
    count = 0;
    $("log-count").textContent = "";
  });

  $("publish-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const type = $("pub-event").value.trim();
    const body = { topic: words($("pub-topics").value), data: $("pub-data").value };
    if (type) {
      body.event = type;
      // EventSource only delivers typed events to listeners for that type.
      const types = new Set(words($("types").value));
      if (!ALWAYS.includes(type) && !types.has(type)) {
        $("types").value = ($("types").value + " " + type).trim();
        listenAll();
      }
    }
    const out = $("publish-result");
    try {
      const res = await fetch("/publish", {
        method: "POST",
        headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
        body: JSON.stringify(body),
      });
      const json = await res.json();
      out.className = "hint " + (res.ok ? "ok" : "error");
      out.textContent = res.ok ? "stored as " + json.id : json.title + ": " + json.detail;
    } catch (e) {
      out.className = "hint error";
      out.textContent = "publish failed: " + e;
    }
  });

  // A token can be handed over in the page's fragment (/#access_token=…, which browsers
  // never send to a server); it is kept for this tab's session.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("access_token")) {
    sessionStorage.setItem("tidings-token", fragment.get("access_token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token").value = sessionStorage.getItem("tidings-token") || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("tidings-token", token());
    lastId = "";
    connect(false);
  });

  // Topics can be given in the page's own URL: /?topic=a&topic=chat/*
  const fromUrl = new URLSearchParams(location.search).getAll("topic");
  if (fromUrl.length) {
    $("topics").value = fromUrl.join(" ");
    $("pub-topics").value = fromUrl.filter((t) => !t.endsWith("*"))[0] || "demo";
  }
  connect(false);
})();
