// The status page's Approve and Reject buttons (templates/page.html); the page reads fine without this script.
//
// A click asks for the daemon's API token once (kept in sessionStorage, for this tab only) and, once, for a name to
// record with the decision (may be empty), then POSTs /approve or /reject?watch=…&digest=…[&by=…] with the token as
// a bearer token. A refused token (401/403) is forgotten, so the next click asks again; a conflict (409) shows the
// daemon's own words; success reloads the page. Messages go to #notice as text only (textContent, never HTML).
"use strict";

(() => {
  const TOKEN_KEY = "reconciler-token";
  const BY_KEY = "reconciler-by";
  const RELOAD_AFTER_MS = 1200; // long enough to read the line that says what was done

  const notice = document.getElementById("notice");

  function say(text, tone) {
    if (!notice) {
      return;
    }
    notice.textContent = text;
    notice.dataset.tone = tone;
  }

  function storage() {
    try {
      return window.sessionStorage;
    } catch {
      return null; // storage is off: ask every time
    }
  }

  function remembered(key) {
    const store = storage();
    return store ? store.getItem(key) : null;
  }

  function remember(key, value) {
    const store = storage();
    if (store) {
      store.setItem(key, value);
    }
  }

  function forget(key) {
    const store = storage();
    if (store) {
      store.removeItem(key);
    }
  }

  function token() {
    const known = remembered(TOKEN_KEY);
    if (known) {
      return known;
    }
    const given = (window.prompt("The reconciler daemon's API token ([server].token_env):") || "").trim();
    if (given) {
      remember(TOKEN_KEY, given);
    }
    return given;
  }

  function approver() {
    const known = remembered(BY_KEY);
    if (known !== null) {
      return known;
    }
    const given = (window.prompt("Your name, recorded with the decision (may be left empty):", "") || "").trim();
    remember(BY_KEY, given);
    return given;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") {
        return body.error;
      }
    } catch {
      // not JSON: the status line says what there is
    }
    return `HTTP ${response.status}`;
  }

  function setBusy(button, busy) {
    const item = button.closest(".approval") || button.parentElement;
    for (const each of item.querySelectorAll("button[data-action]")) {
      each.disabled = busy;
    }
  }

  async function decide(button) {
    const action = button.dataset.action;
    if (action !== "approve" && action !== "reject") {
      return;
    }
    const watch = button.dataset.watch || "";
    const digest = button.dataset.digest || "";
    const bearer = token();
    if (!bearer) {
      say("Nothing was sent: approving or rejecting from this page needs the daemon's API token.", "error");
      return;
    }
    const query = new URLSearchParams({ watch: watch, digest: digest });
    if (button.dataset.actionId) {
      query.set("action", button.dataset.actionId); // the action shown: not another one waiting for the same digest
    }
    const by = approver();
    if (by) {
      query.set("by", by);
    }
    setBusy(button, true);
    let response;
    try {
      response = await fetch(`/${action}?${query.toString()}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${bearer}` },
      });
    } catch (error) {
      setBusy(button, false);
      say(`The daemon could not be reached: ${error.message}`, "error");
      return;
    }
    if (response.status === 401 || response.status === 403) {
      forget(TOKEN_KEY);
      setBusy(button, false);
      say(`The daemon refused the API token (HTTP ${response.status}); it is forgotten: the next click asks again.`, "error");
      return;
    }
    if (!response.ok) {
      const why = await errorText(response);
      setBusy(button, false);
      say(`Not ${action === "approve" ? "approved" : "rejected"}: ${why}`, "error");
      return;
    }
    const done = action === "approve" ? "Approved" : "Rejected";
    say(`${done} ${watch} ${digest.slice(0, 19)}. Reloading…`, "ok");
    window.setTimeout(() => window.location.reload(), RELOAD_AFTER_MS);
  }

  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-action]") : null;
    if (button && !button.disabled) {
      decide(button);
    }
  });
  document.documentElement.dataset.script = "ready"; // the buttons work from here on (tests wait for it)
})();
