/*
 * PolicyDesk help-center widget: one script tag puts a chat bubble on any page.
 *
 *   <script src="https://help-api.example.com/widget.js" defer
 *           data-title="Loopline Help" data-greeting="Hi! How can we help?"
 *           data-region="EU" data-color="#5b3cc4" data-position="right"></script>
 *
 * data-api overrides the API base (default: where this script was loaded from). Vanilla JS, no framework, no
 * innerHTML with server data (everything is set as text). The UI lives in a shadow root so the host page's CSS
 * cannot break it. The conversation is kept in sessionStorage for the tab's session.
 */
(function () {
  "use strict";
  if (window.__policydeskWidget) { return; }  // included twice: keep one bubble
  window.__policydeskWidget = true;

  var script = document.currentScript || (function () {
    var all = document.querySelectorAll("script[src*='widget.js']");
    return all[all.length - 1];
  })();
  var ds = (script && script.dataset) || {};
  var scriptUrl = new URL((script && script.src) || "/widget.js", location.href);
  var API = (ds.api || scriptUrl.origin).replace(/\/+$/, "");
  var TITLE = ds.title || "Help";
  var GREETING = ds.greeting || "Hi! Ask me about your account, payments, privacy or safety.";
  var REGIONS = (ds.region || "").split(",").map(function (s) { return s.trim(); }).filter(Boolean);
  var COLOR = /^#[0-9a-fA-F]{3,8}$/.test(ds.color || "") ? ds.color : "";
  var POSITION = ds.position === "left" ? "left" : "right";
  var STORE_KEY = "policydesk-widget:" + API;
  var MAX_HISTORY_TURNS = 8;      // the server rejects long histories; older turns matter least
  var MAX_TURN_CHARS = 1000;
  var MAX_QUESTION_CHARS = 2000;

  // ---- state kept for the tab's session -------------------------------------------------------------------
  function newState() { return { cid: "", messages: [], open: false }; }
  function loadState() {
    try {
      var s = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      if (s && Array.isArray(s.messages)) { return s; }
    } catch (e) { /* storage blocked or corrupt: start fresh */ }
    return newState();
  }
  function saveState() {
    try { sessionStorage.setItem(STORE_KEY, JSON.stringify(state)); } catch (e) { /* quota or privacy mode */ }
  }
  var state = loadState();

  // ---- DOM helpers ------------------------------------------------------------------------------------------
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; }
      else if (k === "className") { node.className = attrs[k]; }
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }
  function safeUrl(u) {
    try {
      var url = new URL(u, location.href);
      return (url.protocol === "https:" || url.protocol === "http:") ? url.href : "";
    } catch (e) { return ""; }
  }

  // ---- build the UI -----------------------------------------------------------------------------------------
  var host = el("div", { id: "policydesk-widget" });
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  if (COLOR) { host.style.setProperty("--pd-accent", COLOR); }
  root.appendChild(el("link", { rel: "stylesheet", href: API + "/widget.css" }));

  var launcher = el("button", {
    type: "button", className: "pd-launcher pd-" + POSITION, "aria-label": "Open help chat",
    "aria-expanded": "false", "aria-controls": "pd-panel", "aria-haspopup": "dialog"
  }, [el("span", { className: "pd-launcher-icon", "aria-hidden": "true", text: "?" })]);

  var titleEl = el("h2", { id: "pd-title", text: TITLE });
  var closeBtn = el("button", { type: "button", className: "pd-close", "aria-label": "Close help chat" },
    [el("span", { "aria-hidden": "true", text: "\u00d7" })]);
  var newBtn = el("button", { type: "button", className: "pd-new", text: "New chat",
    "aria-label": "Start a new conversation" });
  var log = el("div", { className: "pd-log", id: "pd-log", role: "log", "aria-live": "polite",
    "aria-relevant": "additions", "aria-label": "Conversation", tabindex: "0" });
  var status = el("div", { className: "pd-sr", role: "status", "aria-live": "polite" });
  var input = el("textarea", { id: "pd-input", className: "pd-input", rows: "1", maxlength: String(MAX_QUESTION_CHARS),
    placeholder: "Type your question", "aria-describedby": "pd-hint", autocomplete: "off" });
  var sendBtn = el("button", { type: "submit", className: "pd-send", text: "Send" });
  var form = el("form", { className: "pd-form", novalidate: "novalidate" }, [
    el("label", { "for": "pd-input", className: "pd-sr", text: "Your question" }),
    input, sendBtn,
    el("p", { id: "pd-hint", className: "pd-sr", text: "Press Enter to send, Shift+Enter for a new line, Escape to close." })
  ]);
  var handoffBtn = el("button", { type: "button", className: "pd-handoff-open", text: "Talk to a person" });
  var contactInput = el("input", { id: "pd-contact", type: "text", className: "pd-input", autocomplete: "email",
    maxlength: "320", placeholder: "you@example.com" });
  var handoffSend = el("button", { type: "submit", className: "pd-send", text: "Send to support" });
  var handoffCancel = el("button", { type: "button", className: "pd-link", text: "Cancel" });
  var handoffForm = el("form", { className: "pd-handoff", hidden: "hidden", "aria-labelledby": "pd-handoff-title" }, [
    el("h3", { id: "pd-handoff-title", text: "Talk to a person" }),
    el("p", { text: "We'll send this conversation to our support team." }),
    el("label", { "for": "pd-contact", text: "Email or phone so we can reply (optional)" }),
    contactInput,
    el("div", { className: "pd-row" }, [handoffSend, handoffCancel])
  ]);
  var panel = el("section", { id: "pd-panel", className: "pd-panel pd-" + POSITION, role: "dialog",
    "aria-modal": "false", "aria-labelledby": "pd-title", hidden: "hidden" }, [
    el("header", { className: "pd-header" }, [titleEl, newBtn, closeBtn]),
    log, status, handoffForm, form,
    el("footer", { className: "pd-footer" }, [handoffBtn])
  ]);
  root.appendChild(launcher);
  root.appendChild(panel);

  // ---- rendering --------------------------------------------------------------------------------------------
  function linkList(heading, items, cls) {
    var list = el(cls === "pd-sources" ? "ol" : "ul");
    items.forEach(function (it) {
      var label = it.label;
      var href = safeUrl(it.url || "");
      list.appendChild(el("li", {}, [href
        ? el("a", { href: href, target: "_blank", rel: "noopener noreferrer", text: label })
        : el("span", { text: label })]));
    });
    return el("div", { className: cls }, [el("h3", { text: heading }), list]);
  }

  function renderBot(msg, node) {
    node = node || el("div", { className: "pd-msg pd-bot" });
    node.textContent = "";
    node.removeAttribute("aria-busy");
    node.appendChild(el("div", { className: "pd-text", text: msg.text }));
    if (msg.error) { node.classList.add("pd-error"); return node; }
    var cits = msg.citations || [];
    if (cits.length) {
      node.appendChild(linkList("Sources", cits.map(function (c) {
        return { url: c.url, label: "[" + c.number + "] " + c.title + (c.section ? " \u2013 " + c.section : "") };
      }), "pd-sources"));
    }
    var related = msg.related || [];
    if (msg.refused && related.length) {
      node.appendChild(linkList("Suggested articles", related.map(function (r) {
        return { url: r.url, label: r.title || r.doc_id };
      }), "pd-suggest"));
    }
    if (msg.refused || msg.handoff_offered) {
      var talk = el("button", { type: "button", className: "pd-link pd-talk", text: "Talk to a person" });
      talk.addEventListener("click", openHandoff);
      node.appendChild(talk);
    }
    if (msg.message_id) { node.appendChild(feedbackRow(msg)); }
    return node;
  }

  function feedbackRow(msg) {
    // Text labels, not emoji: emoji fonts are missing on many kiosks and Linux desktops.
    var row = el("div", { className: "pd-feedback", role: "group", "aria-label": "Was this answer helpful?" });
    [[1, "Helpful"], [-1, "Not helpful"]].forEach(function (f) {
      var b = el("button", { type: "button", className: "pd-fb", text: f[1],
        "aria-pressed": msg.rating === f[0] ? "true" : "false" });
      b.addEventListener("click", function () { sendFeedback(msg, f[0], row); });
      row.appendChild(b);
    });
    return row;
  }

  function renderUser(msg) { return el("div", { className: "pd-msg pd-user", text: msg.text }); }
  function renderNote(msg) { return el("div", { className: "pd-msg pd-note", text: msg.text }); }

  function renderAll() {
    log.textContent = "";
    log.appendChild(el("div", { className: "pd-msg pd-bot pd-greeting", text: GREETING }));
    state.messages.forEach(function (m) {
      log.appendChild(m.role === "user" ? renderUser(m) : m.role === "note" ? renderNote(m) : renderBot(m));
    });
    scrollDown();
  }
  function scrollDown() { log.scrollTop = log.scrollHeight; }
  function announce(text) { status.textContent = ""; setTimeout(function () { status.textContent = text; }, 30); }

  // ---- open / close -----------------------------------------------------------------------------------------
  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close help chat");
    state.open = true; saveState();
    scrollDown();
    input.focus();
  }
  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open help chat");
    state.open = false; saveState();
    launcher.focus();
  }
  launcher.addEventListener("click", function () { if (panel.hidden) { open(); } else { close(); } });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") {
      e.preventDefault();
      if (!handoffForm.hidden) { closeHandoff(); } else { close(); }
    }
  });
  newBtn.addEventListener("click", function () {
    state = newState(); state.open = true; saveState(); renderAll(); input.focus();
    announce("Started a new conversation.");
  });

  // ---- asking -----------------------------------------------------------------------------------------------
  var busy = false;
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
  });
  input.addEventListener("input", function () {  // grow with the text, up to the CSS max-height
    input.style.height = "auto"; input.style.height = input.scrollHeight + "px";
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });

  function history() {
    return state.messages.filter(function (m) { return (m.role === "user" || m.role === "assistant") && !m.error; })
      .slice(-MAX_HISTORY_TURNS)
      .map(function (m) { return { role: m.role, text: String(m.text).slice(0, MAX_TURN_CHARS) }; });
  }

  function headers() {
    return { "Content-Type": "application/json", "Accept": "text/event-stream", "X-PolicyDesk-Surface": "widget" };
  }

  function errorMessage(resp, body) {
    var msg = body && body.error && body.error.message;
    if (resp.status === 429) {
      var wait = resp.headers.get("Retry-After");
      return "You're asking a little fast. Please try again" + (wait ? " in " + wait + " seconds." : " shortly.");
    }
    if (resp.status >= 500) { return "Sorry, something went wrong on our side. Please try again, or talk to a person."; }
    return msg || "Sorry, that didn't work (error " + resp.status + ").";
  }

  function submit() {
    var q = input.value.trim();
    if (!q || busy) { return; }
    busy = true; sendBtn.disabled = true;
    var hist = history();
    var userMsg = { role: "user", text: q };
    state.messages.push(userMsg); saveState();
    log.appendChild(renderUser(userMsg));
    input.value = ""; input.style.height = "auto";
    var node = el("div", { className: "pd-msg pd-bot pd-streaming", "aria-busy": "true" },
      [el("div", { className: "pd-text", text: "" }), el("span", { className: "pd-typing", "aria-hidden": "true" })]);
    log.appendChild(node); scrollDown();
    var textNode = node.firstChild;
    var draft = "";
    var finished = false;

    var body = { question: q, history: hist };
    if (state.cid) { body.conversation_id = state.cid; }
    if (REGIONS.length) { body.regions = REGIONS; }

    function finish(msg) {
      if (finished) { return; }
      finished = true;
      state.messages.push(msg); saveState();
      node.classList.remove("pd-streaming");
      renderBot(msg, node);
      scrollDown();
      announce(msg.error ? msg.text : msg.refused ? "The assistant could not answer from the help articles."
        : "Answer received" + ((msg.citations || []).length ? " with " + msg.citations.length + " source links." : "."));
      busy = false; sendBtn.disabled = false;
    }
    function fail(text) { finish({ role: "assistant", text: text, error: true }); }
    function onEvent(type, data) {
      if (type === "token" || type === "sentence") {
        draft += data.text || ""; textNode.textContent = draft; scrollDown();
      } else if (type === "final") {
        state.cid = data.conversation_id || state.cid;
        finish({ role: "assistant", text: data.answer, citations: data.citations || [], related: data.related || [],
          refused: !!data.refused, handoff_offered: !!data.handoff_offered, message_id: data.message_id });
      } else if (type === "error") {
        fail(data.message || "Sorry, something went wrong. Please try again.");
      }
    }

    fetch(API + "/v1/ask/stream", { method: "POST", headers: headers(), body: JSON.stringify(body) })
      .then(function (resp) {
        if (!resp.ok) {
          return resp.json().catch(function () { return null; }).then(function (b) { fail(errorMessage(resp, b)); });
        }
        return readEvents(resp, onEvent).then(function () {
          if (!finished) { fail("The answer was cut off. Please try again."); }
        });
      })
      .catch(function () { fail("We couldn't reach the help service. Check your connection and try again."); });
  }

  // Server-sent events over fetch (EventSource cannot POST): frames separated by a blank line.
  function readEvents(resp, onEvent) {
    if (!resp.body || !resp.body.getReader) {  // very old browsers: read it all, then parse
      return resp.text().then(function (t) { parseFrames(t + "\n\n", onEvent); });
    }
    var reader = resp.body.getReader();
    var decoder = new TextDecoder();
    var buf = "";
    function pump() {
      return reader.read().then(function (r) {
        if (r.done) { parseFrames(buf + "\n\n", onEvent); return; }
        buf += decoder.decode(r.value, { stream: true });
        buf = parseFrames(buf, onEvent);
        return pump();
      });
    }
    return pump();
  }
  function parseFrames(buf, onEvent) {
    // A lone trailing "\r" may be half of "\r\n": keep it for the next chunk.
    var keep = buf.charAt(buf.length - 1) === "\r" ? "\r" : "";
    var text = (keep ? buf.slice(0, -1) : buf).replace(/\r\n?/g, "\n");
    var idx;
    while ((idx = text.indexOf("\n\n")) >= 0) {
      var frame = text.slice(0, idx);
      text = text.slice(idx + 2);
      var type = "message", data = [];
      frame.split("\n").forEach(function (line) {
        if (!line || line.charAt(0) === ":") { return; }  // comments are keep-alive pings
        var colon = line.indexOf(":");
        var field = colon < 0 ? line : line.slice(0, colon);
        var value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") { type = value; } else if (field === "data") { data.push(value); }
      });
      if (data.length) {
        var parsed;
        try { parsed = JSON.parse(data.join("\n")); } catch (e) { parsed = { text: data.join("\n") }; }
        onEvent(type, parsed);
      }
    }
    return text + keep;
  }

  // ---- feedback ---------------------------------------------------------------------------------------------
  function sendFeedback(msg, rating, row) {
    fetch(API + "/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify({
      conversation_id: state.cid, message_id: msg.message_id, rating: rating }) })
      .then(function (resp) {
        if (!resp.ok) { throw new Error("feedback " + resp.status); }
        msg.rating = rating; saveState();
        Array.prototype.forEach.call(row.querySelectorAll("button"), function (b, i) {
          b.setAttribute("aria-pressed", (i === 0 ? 1 : -1) === rating ? "true" : "false");
        });
        announce("Thanks for your feedback.");
      })
      .catch(function () { announce("Your feedback could not be sent."); });
  }

  // ---- handoff to a person ----------------------------------------------------------------------------------
  function openHandoff() {
    handoffForm.hidden = false; form.hidden = true; handoffBtn.hidden = true;
    contactInput.focus();
  }
  function closeHandoff() {
    handoffForm.hidden = true; form.hidden = false; handoffBtn.hidden = false;
    input.focus();
  }
  handoffBtn.addEventListener("click", openHandoff);
  handoffCancel.addEventListener("click", closeHandoff);
  handoffForm.addEventListener("submit", function (e) {
    e.preventDefault();
    handoffSend.disabled = true;
    var transcript = state.messages.filter(function (m) { return m.role === "user" || m.role === "assistant"; })
      .slice(-100).map(function (m) { return { role: m.role, text: String(m.text).slice(0, 8000) }; });
    var body = { transcript: transcript, reason: "Requested from the help widget on " + location.pathname };
    if (state.cid) { body.conversation_id = state.cid; }
    var contact = contactInput.value.trim();
    if (contact) { body.contact = contact; }
    fetch(API + "/v1/handoff", { method: "POST", headers: headers(), body: JSON.stringify(body) })
      .then(function (resp) {
        return resp.json().catch(function () { return null; }).then(function (b) {
          if (!resp.ok) { throw new Error(errorMessage(resp, b)); }
          state.cid = b.conversation_id || state.cid;
          var note = { role: "note", text: "Thanks! We've passed this conversation to our support team (reference #" +
            b.handoff_id + ")." + (contact ? " We'll reply to " + contact + "." : " A person will pick it up soon.") };
          state.messages.push(note); saveState();
          log.appendChild(renderNote(note)); scrollDown();
          contactInput.value = "";
          closeHandoff();
          announce(note.text);
        });
      })
      .catch(function (err) {
        var note = { role: "note", text: (err && err.message) || "The handoff could not be sent. Please try again." };
        log.appendChild(renderNote(note)); scrollDown(); announce(note.text);
      })
      .then(function () { handoffSend.disabled = false; });
  });

  // ---- start ------------------------------------------------------------------------------------------------
  function mount() {
    document.body.appendChild(host);
    renderAll();
    if (state.open) { panel.hidden = false; launcher.setAttribute("aria-expanded", "true");
      launcher.setAttribute("aria-label", "Close help chat"); }
  }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }
})();
