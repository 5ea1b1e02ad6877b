// cairn web UI: a small single page over cairn's /v1 JSON API.
// No framework, no build step, no network beyond this server. Every value
// from the store is put into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "cairn.token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";

  // ---- DOM helpers -------------------------------------------------------

  /** Makes an element: h("td", {class: "num"}, "3", otherNode). */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const code = (text) => h("code", {}, text);
  const short = (commit) => (commit || "").slice(0, 10);
  const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
  const words = (text) => text.split(/\s+/).filter(Boolean);
  const val = (id) => $(id).value.trim();

  /** Shows a result line under a form: ok (green) or an error (red). */
  function say(id, text, ok) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle("ok", ok === true);
    el.classList.toggle("err", ok === false);
  }

  function setRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // ---- the API -----------------------------------------------------------

  /** An error answered by the server: the --json error envelope and the HTTP status. */
  class ApiError extends Error {
    constructor(status, err) {
      super(err.message || "request failed");
      this.status = status;
      this.code = err.code || "HTTP_" + status;
      this.category = err.category || "";
      this.details = err.details || {};
    }
    /** One line: code, category, status, message and the field named. */
    describe() {
      const d = this.details;
      const where = [d.file, d.pointer].filter(Boolean).join(" ");
      const field = where ? " [" + where + (d.rule ? ": " + d.rule : "") + "]" : "";
      const status = this.status ? "HTTP " + this.status : "no answer";
      return `${this.code} (${this.category || "error"}, ${status}): ${this.message}${field}`;
    }
  }

  /** Calls the API; resolves to the envelope's data, rejects with an ApiError. */
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { code: "NETWORK", category: "NETWORK", message: "the server cannot be reached (" + e.message + ")" });
    }
    let doc = null;
    try {
      doc = await resp.json();
    } catch (_) {
      doc = null;
    }
    if (resp.status === 401) askToken(token ? "The token was refused; enter the right one." : "");
    if (!resp.ok || !doc || doc.ok === false) {
      throw new ApiError(resp.status, (doc && doc.error) || { message: resp.statusText || "no JSON answer" });
    }
    return doc.data;
  }

  const enc = encodeURIComponent;

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, v);
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  /** Runs an async form action with its submit button disabled, reporting errors to `resultId`. */
  function action(form, resultId, fn) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const buttons = form.querySelectorAll("button[type=submit]");
      buttons.forEach((b) => (b.disabled = true));
      say(resultId, "working…");
      try {
        await fn(ev);
      } catch (e) {
        say(resultId, e instanceof ApiError ? e.describe() : String(e.message || e), false);
      } finally {
        buttons.forEach((b) => (b.disabled = false));
        if (form.id === "state-form" && !state.project) $("st-submit").disabled = true;
      }
    });
  }

  // ---- the token ---------------------------------------------------------

  function askToken(why) {
    $("auth").hidden = false;
    if (why) {
      $("notice").textContent = why;
      $("notice").hidden = false;
    }
    $("auth-token").focus();
  }

  $("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("auth-token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("auth").hidden = true;
    $("notice").hidden = true;
    $("auth-token").value = "";
    startLedger();
    route();
  });

  // ---- page state and routing ---------------------------------------------

  const state = {
    view: "",
    run: null, // the run shown
    latestSeq: 0, // its newest _update_seq known
    viewSeq: 0, // the seq shown by the history slider
    ws: null, // the latest working set of the run shown
    project: null, // the project whose trusted state is shown
    runs: [],
  };

  const VIEWS = ["runs", "run", "ledger", "memory", "review", "projects", "resume"];

  function route(focus) {
    let hash = "";
    try {
      hash = decodeURIComponent(location.hash.replace(/^#/, ""));
    } catch (_) { /* a malformed hash shows the runs */ }
    let [view, arg] = [hash.split("/")[0], hash.split("/").slice(1).join("/")];
    if (!VIEWS.includes(view) || (view === "run" && !arg)) view = "runs";
    state.view = view;
    for (const v of VIEWS) $("view-" + v).hidden = v !== view;
    document.querySelectorAll("nav a[data-view]").forEach((a) => {
      const cur = a.dataset.view === view || (view === "run" && a.dataset.view === "runs");
      if (cur) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    const loaders = {
      runs: loadRuns,
      run: () => openRun(arg),
      ledger: renderLedger,
      memory: () => {},
      review: loadQueue,
      projects: loadProjects,
      resume: loadResume,
    };
    Promise.resolve(loaders[view]()).catch(showError);
    if (focus) {
      const heading = $("view-" + view).querySelector("h2");
      if (heading) heading.focus();
    }
  }

  function showError(e) {
    const n = $("notice");
    n.textContent = e instanceof ApiError ? e.describe() : String(e.message || e);
    n.hidden = false;
  }

  // The skip link moves the focus; it must not change the hash (the route).
  document.querySelector("a.skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("main").focus();
  });

  window.addEventListener("hashchange", () => {
    $("notice").hidden = true;
    route(true);
  });

  // ---- runs ---------------------------------------------------------------

  async function loadRuns() {
    const data = await api("GET", "/v1/runs");
    state.runs = data.runs;
    setRows(
      $("runs-table").tBodies[0],
      data.runs.map((r) =>
        h("tr", {},
          h("td", {}, h("a", { href: "#run/" + enc(r.run_id), class: "mono" }, r.run_id)),
          h("td", { class: "status" }, r.status),
          h("td", {}, r.objective),
          h("td", {}, r.project || ""),
          h("td", { class: "num" }, r.seq),
          h("td", {}, r.updated_at))),
    );
    $("runs-empty").hidden = data.runs.length > 0;
  }

  action($("boot-form"), "boot-result", async () => {
    const body = { objective: val("boot-objective") };
    const criteria = lines($("boot-criteria").value);
    const constraints = lines($("boot-constraints").value);
    if (criteria.length) body.acceptance_criteria = criteria;
    if (constraints.length) body.constraints = constraints;
    if (val("boot-project")) body.project = val("boot-project");
    if (val("boot-run-id")) body.run_id = val("boot-run-id");
    const data = await api("POST", "/v1/runs", body);
    say("boot-result", "Booted " + data.run_id + " (seq 0)", true);
    $("boot-form").reset();
    location.hash = "#run/" + enc(data.run_id);
  });

  // ---- one run: working set, history, patch, milestones -------------------

  async function openRun(run) {
    if (state.run !== run) {
      state.run = run;
      $("run-id").textContent = run;
      $("ws-view").replaceChildren();
      state.ws = null;
    }
    $("patch-conflict").hidden = true;
    ["patch-result", "ms-result", "pr-result"].forEach((id) => say(id, ""));
    await Promise.all([loadLatest(true), loadEpisodes()]);
  }

  /** Reads the run's newest working set; `resetBase` also makes it the patch form's base seq. */
  async function loadLatest(resetBase) {
    const run = state.run;
    const ws = await api("GET", `/v1/runs/${enc(run)}/ws`);
    if (run !== state.run) return;
    const following = state.ws === null || state.viewSeq === state.latestSeq;
    state.ws = ws;
    state.latestSeq = ws._update_seq;
    const slider = $("ws-slider");
    slider.max = String(ws._update_seq);
    $("ws-max").textContent = String(ws._update_seq);
    if (resetBase || $("patch-expected").value === "") $("patch-expected").value = String(ws._update_seq);
    if (following) {
      state.viewSeq = ws._update_seq;
      slider.value = String(ws._update_seq);
      $("ws-at").textContent = String(ws._update_seq);
      renderWs(ws, false);
      $("ws-history-note").textContent = "";
    } else {
      $("ws-history-note").textContent = `Showing seq ${state.viewSeq}; the newest is seq ${ws._update_seq}.`;
    }
  }

  let historyTimer = null;

  /** Shows the working set as it was at `seq` (GET ws?at=seq). */
  function showAt(seq) {
    seq = Math.max(0, Math.min(state.latestSeq, seq));
    state.viewSeq = seq;
    $("ws-slider").value = String(seq);
    $("ws-at").textContent = String(seq);
    clearTimeout(historyTimer);
    historyTimer = setTimeout(async () => {
      const run = state.run;
      try {
        if (seq === state.latestSeq) {
          await loadLatest(false);
          renderWs(state.ws, false);
          $("ws-history-note").textContent = "";
          return;
        }
        const ws = await api("GET", `/v1/runs/${enc(run)}/ws${query({ at: seq })}`);
        if (run !== state.run || seq !== state.viewSeq) return;
        renderWs(ws, true);
        $("ws-history-note").textContent = `Showing seq ${seq} of ${state.latestSeq} (history, read-only).`;
      } catch (e) {
        $("ws-history-note").textContent = e instanceof ApiError ? e.describe() : String(e);
      }
    }, 120);
  }

  $("ws-slider").addEventListener("input", () => showAt(Number($("ws-slider").value)));
  $("ws-prev").addEventListener("click", () => showAt(state.viewSeq - 1));
  $("ws-next").addEventListener("click", () => showAt(state.viewSeq + 1));
  $("ws-latest").addEventListener("click", () => showAt(state.latestSeq));

  function contextList(items) {
    if (!items || !items.length) return h("span", { class: "muted" }, "(none)");
    return h("ul", {}, items.map((c) =>
      h("li", {}, c.content, " ", h("span", { class: "ctx-id" }, `(${c.id}, priority ${c.priority})`))));
  }

  function renderWs(ws, historic) {
    const rows = [
      ["Seq", String(ws._update_seq)],
      ["Status", h("span", { class: "status" }, ws.status)],
      ["Objective", ws.objective],
      ["Stage", ws.current_stage || "—"],
      ["Next action", ws.next_action || "—"],
      ["Project", ws.project || "—"],
      ["Criteria", (ws.acceptance_criteria || []).length ? h("ul", {}, ws.acceptance_criteria.map((c) => h("li", {}, c))) : "—"],
      ["Constraints", (ws.constraints || []).length ? h("ul", {}, ws.constraints.map((c) => h("li", {}, c))) : "—"],
      ["Pinned", contextList(ws.pinned_context)],
      ["Sliding", contextList(ws.sliding_context)],
      ["Budget", `${ws.budget.max_sliding_tokens} sliding tokens, ${ws.budget.max_pinned_items} pinned items`],
      ["Updated", ws.updated_at],
    ];
    const dl = h("dl", {}, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const parts = [h("h3", {}, historic ? `Working set at seq ${ws._update_seq}` : "Working set (latest)")];
    if (historic) parts.push(h("p", { class: "historic" }, `History: this is the state after seq ${ws._update_seq}; the newest is seq ${state.latestSeq}.`));
    parts.push(dl, h("details", {}, h("summary", {}, "JSON"), h("pre", { class: "json" }, JSON.stringify(ws, null, 2))));
    $("ws-view").replaceChildren(...parts);
  }

  function buildPatch() {
    const raw = $("patch-raw").value.trim();
    const expected = Number($("patch-expected").value);
    if (raw) {
      let doc;
      try {
        doc = JSON.parse(raw);
      } catch (e) {
        throw new Error("the raw patch is not JSON: " + e.message);
      }
      if (doc && typeof doc === "object" && !Array.isArray(doc) && doc.expected_seq === undefined && !doc.patch) doc.expected_seq = expected;
      return doc;
    }
    const patch = { expected_seq: expected };
    const set = {};
    if (val("patch-status")) set.status = val("patch-status");
    if (val("patch-stage")) set.current_stage = val("patch-stage");
    if (val("patch-next")) set.next_action = val("patch-next");
    if (Object.keys(set).length) patch.set = set;
    const stamp = Date.now().toString(36);
    const append = {};
    if (val("patch-note")) append.sliding_context = [{ id: "note-" + stamp, content: val("patch-note") }];
    if (val("patch-pin")) append.pinned_context = [{ id: "pin-" + stamp, content: val("patch-pin") }];
    if (Object.keys(append).length) patch.append = append;
    if (!patch.set && !patch.append) throw new Error("nothing to change: fill in a field or the raw patch");
    return patch;
  }

  function showConflict(e, patch) {
    const d = e.details || {};
    const box = $("patch-conflict");
    const current = d.current_seq;
    const retry = h("button", { type: "button", id: "conflict-rebase" }, `Re-apply my patch on seq ${current}`);
    retry.addEventListener("click", () => {
      $("patch-expected").value = String(current);
      if ($("patch-raw").value.trim()) {
        try {
          const doc = JSON.parse($("patch-raw").value);
          doc.expected_seq = current;
          $("patch-raw").value = JSON.stringify(doc);
        } catch (_) { /* the user's text stays as typed */ }
      }
      box.hidden = true;
      $("patch-submit").focus();
    });
    const latest = h("button", { type: "button", class: "secondary" }, "Show the latest state");
    latest.addEventListener("click", () => showAt(state.latestSeq));
    box.replaceChildren(
      h("p", {}, h("strong", {}, "Conflict: 409 STALE_SEQ. "),
        `Your patch was written against seq ${d.expected_seq ?? patch.expected_seq}, but the working set is now at seq ${current}: someone else (another tab, the CLI, an agent) changed it first. Nothing was written.`),
      h("p", { class: "muted" }, e.message),
      h("p", {}, retry, latest),
    );
    box.hidden = false;
    box.focus();
    if (typeof current === "number" && current > state.latestSeq) loadLatest(false).catch(showError);
  }

  action($("patch-form"), "patch-result", async () => {
    $("patch-conflict").hidden = true;
    const patch = buildPatch();
    try {
      const data = await api("POST", `/v1/runs/${enc(state.run)}/ws`, patch);
      const evicted = data.evicted.length ? `; evicted ${data.evicted.map((c) => c.id).join(", ")}` : "";
      say("patch-result", `Applied: now seq ${data.seq} (${data.event.event_type}, commit ${short(data.event.commit)})${evicted}`, true);
      ["patch-stage", "patch-next", "patch-note", "patch-pin", "patch-raw"].forEach((id) => ($(id).value = ""));
      $("patch-status").value = "";
      state.viewSeq = state.latestSeq; // follow the newest state
      await loadLatest(true);
    } catch (e) {
      if (e instanceof ApiError && e.code === "STALE_SEQ") {
        showConflict(e, patch);
        say("patch-result", "Not applied: the working set moved on (see above).", false);
        return;
      }
      throw e;
    }
  });

  async function loadEpisodes() {
    const run = state.run;
    const data = await api("GET", `/v1/runs/${enc(run)}/episodes`);
    if (run !== state.run) return;
    setRows($("episodes-table").tBodies[0], data.episodes.map((e) =>
      h("tr", {},
        h("td", { class: "num" }, e.ordinal),
        h("td", {}, e.reason),
        h("td", {}, e.summary),
        h("td", {}, e.next_entry_point || ""),
        h("td", { class: "meta" }, code(e.episode_id), h("br", {}), code(e.tag), h("br", {}), e.created_at))));
    $("episodes-empty").hidden = data.episodes.length > 0;
  }

  action($("milestone-form"), "ms-result", async () => {
    const body = { reason: val("ms-reason"), batches: words(val("ms-batches")) };
    if (val("ms-next")) body.next_entry_point = val("ms-next");
    const data = await api("POST", `/v1/runs/${enc(state.run)}/milestone`, body);
    say("ms-result", `Episode ${data.episode.episode_id} (tag ${data.episode.tag})`, true);
    $("milestone-form").reset();
    await loadEpisodes();
  });

  action($("propose-form"), "pr-result", async () => {
    const mcr = {
      op: "add",
      type: val("pr-type"),
      scope: val("pr-scope"),
      content: val("pr-content"),
      confidence: Number($("pr-conf").value),
      source_refs: ["run:" + state.run],
    };
    if (val("pr-scope-id")) mcr.scope_id = val("pr-scope-id");
    const tags = words(val("pr-tags"));
    if (tags.length) mcr.tags = tags;
    const data = await api("POST", `/v1/runs/${enc(state.run)}/memory`, { mcrs: [mcr] });
    const ids = (data.batch.item_ids || []).filter(Boolean);
    say("pr-result", `Proposed batch ${data.batch_id}${ids.length ? " (" + ids.join(", ") + ")" : ""}: candidates wait in the review queue; a milestone can commit the batch.`, true);
    $("ms-batches").value = words(val("ms-batches") + " " + data.batch_id).join(" ");
    $("pr-content").value = "";
    $("pr-tags").value = "";
  });

  // ---- the ledger, live ---------------------------------------------------

  // events: every event known, oldest first; filtered: the server's answer
  // to the filter in force (null without one), plus matching live events.
  const ledger = { events: [], filtered: null, seen: new Set(), live: 0, filter: {}, source: null, abort: null, lastId: "" };

  function matches(ev) {
    const f = ledger.filter;
    return (!f.run || ev.run_id === f.run) && (!f.type || ev.event_type === f.type) && (!f.actor || ev.actor === f.actor);
  }

  function ledgerRow(ev, fresh) {
    return h("tr", { class: fresh ? "fresh" : undefined, "data-commit": ev.commit },
      h("td", { class: "time" }, (ev.timestamp || "").replace("T", " ").replace(/(\.\d+)?Z$/, "Z")),
      h("td", {}, code(ev.event_type)),
      h("td", {}, ev.run_id ? h("a", { href: "#run/" + enc(ev.run_id), class: "mono" }, ev.run_id) : ""),
      h("td", { class: "num" }, ev.seq ?? ""),
      h("td", {}, ev.actor),
      h("td", {}, ev.message || ""),
      h("td", {}, code(short(ev.commit))));
  }

  function renderLedger() {
    const list = ledger.filtered || ledger.events;
    const rows = [];
    for (let i = list.length - 1; i >= 0 && rows.length < 500; i--) rows.push(ledgerRow(list[i], false));
    setRows($("ledger-table").tBodies[0], rows);
  }

  /** Adds events (oldest first) not seen yet; returns the new ones. */
  function remember(events) {
    const added = [];
    for (const ev of events) {
      if (ledger.seen.has(ev.commit)) continue;
      ledger.seen.add(ev.commit);
      ledger.events.push(ev);
      added.push(ev);
    }
    if (ledger.events.length > 5000) ledger.events.splice(0, ledger.events.length - 5000);
    return added;
  }

  let refreshTimer = null;
  const touched = new Set(); // runs with events since the last refresh

  /** One event from the stream: into the table, then refresh what it touched. */
  function onLive(ev) {
    if (!remember([ev]).length) return;
    ledger.live += 1;
    $("live-count").textContent = String(ledger.live);
    if (matches(ev)) {
      if (ledger.filtered) ledger.filtered.push(ev);
      const tbody = $("ledger-table").tBodies[0];
      tbody.insertBefore(ledgerRow(ev, true), tbody.firstChild);
    }
    if (ev.run_id) touched.add(ev.run_id);
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refreshAfter, 50);
  }

  /** Refreshes the view shown when the events just received concern it. */
  function refreshAfter() {
    const jobs = [];
    if (state.view === "run" && state.run && touched.has(state.run)) {
      jobs.push(loadLatest(false), loadEpisodes());
    }
    touched.clear();
    if (state.view === "runs") jobs.push(loadRuns());
    if (state.view === "review") jobs.push(loadQueue());
    Promise.all(jobs).catch(showError);
  }

  function setLive(on, text) {
    const el = $("live");
    el.textContent = text;
    el.classList.toggle("on", on);
    el.classList.toggle("off", !on);
  }

  /** Loads the newest events, then follows /v1/events from the last one. */
  async function startLedger() {
    stopStream();
    try {
      const data = await api("GET", "/v1/ledger?limit=300");
      remember(data.events);
      if (state.view === "ledger") renderLedger();
      const last = data.events.length ? data.events[data.events.length - 1].commit : "";
      ledger.lastId = last;
      openStream();
    } catch (e) {
      setLive(false, "ledger unavailable");
      if (!(e instanceof ApiError && e.status === 401)) showError(e);
    }
  }

  function stopStream() {
    if (ledger.source) ledger.source.close();
    if (ledger.abort) ledger.abort.abort();
    ledger.source = null;
    ledger.abort = null;
  }

  function streamUrl() {
    return "/v1/events" + query({ since: ledger.lastId });
  }

  function handleData(id, data) {
    if (id) ledger.lastId = id;
    try {
      onLive(JSON.parse(data));
    } catch (_) { /* not an event */ }
  }

  /**
   * EventSource cannot send headers: without a token the browser's own
   * EventSource is used (it reconnects with Last-Event-ID by itself); with a
   * token the stream is read through fetch, which can, and reconnects from
   * the last id received.
   */
  function openStream() {
    if (!token) {
      const es = new EventSource(streamUrl());
      ledger.source = es;
      es.addEventListener("open", () => setLive(true, "live"));
      es.addEventListener("ledger", (m) => handleData(m.lastEventId, m.data));
      es.addEventListener("error", () => setLive(false, es.readyState === EventSource.CLOSED ? "disconnected (reload)" : "reconnecting…"));
      return;
    }
    const ctl = new AbortController();
    ledger.abort = ctl;
    (async () => {
      while (!ctl.signal.aborted) {
        try {
          const resp = await fetch(streamUrl(), {
            headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" },
            signal: ctl.signal,
          });
          if (resp.status === 401) {
            setLive(false, "token refused");
            askToken("The token was refused; enter the right one.");
            return;
          }
          if (!resp.ok) throw new Error("HTTP " + resp.status);
          setLive(true, "live");
          const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          let id = "";
          let data = [];
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let nl;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const line = buf.slice(0, nl).replace(/\r$/, "");
              buf = buf.slice(nl + 1);
              if (line === "") {
                if (data.length) handleData(id, data.join("\n"));
                id = "";
                data = [];
              } else if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
          }
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        setLive(false, "reconnecting…");
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
  }

  $("ledger-filter").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = { run: val("lf-run"), type: val("lf-type").toUpperCase(), actor: val("lf-actor") };
    try {
      // The server filters the whole ledger (GET /v1/ledger takes the same filters).
      const data = await api("GET", "/v1/ledger" + query({ run: f.run, type: f.type, actor: f.actor, limit: 500 }));
      ledger.filter = f;
      ledger.filtered = f.run || f.type || f.actor ? data.events : null;
      renderLedger();
      $("notice").hidden = true;
    } catch (e) {
      showError(e);
    }
  });
  $("lf-clear").addEventListener("click", () => {
    $("ledger-filter").reset();
    ledger.filter = {};
    ledger.filtered = null;
    renderLedger();
  });

  // ---- memory search --------------------------------------------------------

  action($("search-form"), "search-meta", async () => {
    const params = {
      q: val("s-q"),
      scope: val("s-scope"),
      type: val("s-type"),
      status: val("s-status"),
      project: val("s-project"),
      tag: val("s-tag"),
      top_k: val("s-topk"),
      syntax: $("s-syntax").checked ? "true" : "",
    };
    const data = await api("GET", "/v1/search" + query(params));
    setRows($("search-table").tBodies[0], data.hits.map((hit) =>
      h("tr", {},
        h("td", { class: "num" }, hit.score.toFixed(3)),
        h("td", {}, code(hit.id)),
        h("td", {}, hit.content),
        h("td", {}, hit.type),
        h("td", {}, hit.scope + (hit.scope_id ? ":" + hit.scope_id : "")),
        h("td", {}, hit.status),
        h("td", {}, Object.entries(hit.matched || {}).map(([f, t]) => `${f}: ${t.join(", ")}`).join("; ")))));
    const warn = data.warnings.length ? " Warnings: " + data.warnings.join("; ") : "";
    say("search-meta", `${data.hits.length} hit${data.hits.length === 1 ? "" : "s"} in ${data.took_ms.toFixed(1)} ms.${warn}`, true);
  });

  // ---- the review queue --------------------------------------------------

  async function loadQueue() {
    const data = await api("GET", "/v1/memory/queue");
    $("review-list").replaceChildren(...data.items.map(reviewItem));
    $("review-empty").hidden = data.items.length > 0;
  }

  function reviewItem(item) {
    const rid = "reason-" + item.id;
    const reason = h("input", { id: rid, "aria-describedby": "hint-" + item.id });
    // Buttons, not submit: Enter in the reason field must neither promote nor reject.
    const promote = h("button", { type: "button", value: "promote", "data-id": item.id }, "Promote");
    const reject = h("button", { type: "button", value: "reject", class: "danger", "data-id": item.id }, "Reject");
    const form = h("form", { "aria-label": "Review " + item.id },
      h("span", {},
        h("label", { for: rid }, "Reason"),
        reason,
        h("small", { id: "hint-" + item.id, class: "muted" }, "required to reject; optional to promote")),
      promote, reject);
    form.addEventListener("submit", (ev) => ev.preventDefault());
    const review = async (verb) => {
      const why = reason.value.trim();
      if (verb === "reject" && !why) {
        say("review-result", `A rejection needs a reason: fill in the reason for ${item.id}.`, false);
        reason.setAttribute("aria-invalid", "true");
        reason.focus();
        return;
      }
      reason.removeAttribute("aria-invalid");
      promote.disabled = reject.disabled = true;
      try {
        const data = await api("POST", `/v1/memory/${enc(item.id)}/${verb}`, why ? { reason: why } : {});
        say("review-result", `${verb === "promote" ? "Promoted" : "Rejected"} ${item.id}: now ${data.item.status}.`, true);
        await loadQueue();
        $("h-review").focus();
      } catch (e) {
        say("review-result", e instanceof ApiError ? e.describe() : String(e), false);
        promote.disabled = reject.disabled = false;
      }
    };
    promote.addEventListener("click", () => review("promote"));
    reject.addEventListener("click", () => review("reject"));
    const meta = [
      code(item.id),
      ` · ${item.type} · ${item.scope}${item.scope_id ? ":" + item.scope_id : ""} · confidence ${item.confidence} · ${item.created_at}`,
      (item.tags || []).length ? " · tags " + item.tags.join(" ") : "",
      (item.source_refs || []).length ? " · from " + item.source_refs.join(" ") : "",
    ];
    return h("li", { "data-id": item.id },
      h("p", {}, item.content),
      item.rationale ? h("p", { class: "muted" }, "Rationale: " + item.rationale) : null,
      h("p", { class: "meta" }, meta),
      form);
  }

  // ---- projects and trusted state ------------------------------------------

  async function loadProjects() {
    const data = await api("GET", "/v1/projects");
    setRows($("projects-table").tBodies[0], data.projects.map((p) => {
      const b = h("button", { type: "button", class: "secondary" }, "Show state");
      b.addEventListener("click", () => loadState(p.id).catch(showError));
      return h("tr", {},
        h("td", {}, code(p.id)),
        h("td", {}, (p.aliases || []).join(", ")),
        h("td", {}, p.description || ""),
        h("td", {}, b));
    }));
    $("projects-empty").hidden = data.projects.length > 0;
    if (state.project) await loadState(state.project);
  }

  async function loadState(project) {
    const data = await api("GET", `/v1/projects/${enc(project)}/state`);
    state.project = data.project;
    $("state-project").textContent = "of " + data.project;
    $("st-submit").disabled = false;
    setRows($("state-table").tBodies[0], data.entries.map((e) =>
      h("tr", {},
        h("td", {}, e.category),
        h("td", {}, e.key),
        h("td", {}, e.value),
        h("td", {}, e.source || ""),
        h("td", {}, e.status),
        h("td", {}, e.updated_at))));
  }

  action($("project-form"), "pj-result", async () => {
    const body = { id: val("pj-id"), aliases: words(val("pj-aliases")) };
    if (val("pj-desc")) body.description = val("pj-desc");
    const data = await api("POST", "/v1/projects", body);
    say("pj-result", "Added " + data.project.id, true);
    $("project-form").reset();
    await loadProjects();
  });

  action($("state-form"), "st-result", async () => {
    if (!state.project) throw new Error("pick a project first");
    const body = { category: val("st-category"), key: val("st-key"), value: val("st-value") };
    if (val("st-source")) body.source = val("st-source");
    const data = await api("POST", `/v1/projects/${enc(state.project)}/state`, body);
    say("st-result", `Set ${data.entry.category}/${data.entry.key}`, true);
    $("state-form").reset();
    await loadState(state.project);
  });

  // ---- resume packs -------------------------------------------------------

  async function loadResume() {
    const data = await api("GET", "/v1/runs");
    const sel = $("sn-run");
    const keep = sel.value || state.run;
    sel.replaceChildren(...data.runs.map((r) => h("option", { value: r.run_id }, `${r.run_id}: ${r.objective}`)));
    if (keep && data.runs.some((r) => r.run_id === keep)) sel.value = keep;
  }

  action($("snapshot-form"), "sn-result", async () => {
    const body = { zip: $("sn-zip").checked };
    if (val("sn-since") !== "") body.ledger_since = Number(val("sn-since"));
    const data = await api("POST", `/v1/runs/${enc(val("sn-run"))}/snapshot`, body);
    say("sn-result", `Pack ${data.pack_id} written to ${data.path} (head ${short(data.head_commit)})`, true);
    $("ld-pack").value = data.pack_id;
  });

  action($("load-form"), "ld-result", async () => {
    const body = { pack: val("ld-pack"), trust: $("ld-trust").checked };
    if (val("ld-new")) body.new_run_id = val("ld-new");
    if (val("ld-into")) body.into_run = val("ld-into");
    const data = await api("POST", "/v1/resume/load", body);
    const out = $("ld-result");
    out.replaceChildren("Loaded pack ", code(data.pack_id), " into ", h("a", { href: "#run/" + enc(data.run_id) }, data.run_id));
    out.className = "result ok";
  });

  // ---- start ------------------------------------------------------------

  route(false);
  startLedger();
})();
