/*
 * Small shared behaviour for every portal page (loaded with `defer` by base.html).
 *
 * Copy to clipboard:
 *   <pre id="snippet">…</pre><button type="button" data-copy="#snippet">Copy</button>
 *     copies the text of the element the selector names (the value of an input/textarea);
 *   <button type="button" data-copy-text="literal text">Copy</button> copies the literal.
 *   The button says "Copied" for two seconds and a polite live region announces it.
 *   Other scripts can call window.portal.copyText(text) -> Promise.
 *
 * Menu: on narrow screens the main nav folds behind the "Menu" button.
 *
 * Numbers and times, as the server renders them (accounts/templatetags/portal_format.py):
 *   window.portal.formatNumber(499946) -> "499,946"; portal.count(1, "request") -> "1 request";
 *   <time datetime="…" data-relative> texts ("in 42 s", "7 h ago") are kept current.
 */
(function () {
  "use strict";

  document.documentElement.classList.remove("no-js");
  document.documentElement.classList.add("js");

  var liveRegion = null;

  function announce(text) {
    if (!liveRegion) {
      liveRegion = document.createElement("div");
      liveRegion.className = "sr-only";
      liveRegion.setAttribute("aria-live", "polite");
      document.body.appendChild(liveRegion);
    }
    liveRegion.textContent = "";
    // A fresh text node after clearing makes screen readers repeat identical messages.
    window.setTimeout(function () { liveRegion.textContent = text; }, 50);
  }

  function fallbackCopy(text) {
    // navigator.clipboard needs a secure context; plain-HTTP deployments land here.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.top = "-1000px";
    area.style.opacity = "0";
    document.body.appendChild(area);
    var selection = document.getSelection();
    var previous = selection && selection.rangeCount ? selection.getRangeAt(0) : null;
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    if (previous && selection) { selection.removeAllRanges(); selection.addRange(previous); }
    return ok ? Promise.resolve() : Promise.reject(new Error("copy failed"));
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  function textFor(button) {
    if (button.hasAttribute("data-copy-text")) { return button.getAttribute("data-copy-text"); }
    var target = null;
    try { target = document.querySelector(button.getAttribute("data-copy")); } catch (e) { target = null; }
    if (!target) { return null; }
    if (target.tagName === "INPUT" || target.tagName === "TEXTAREA") { return target.value; }
    return target.textContent.replace(/^\n+|\s+$/g, "");
  }

  function flash(button, label) {
    if (!button.hasAttribute("data-label")) { button.setAttribute("data-label", button.textContent); }
    button.textContent = label;
    if (label === "Copied") { button.setAttribute("data-copied", ""); }
    window.clearTimeout(button._portalTimer);
    button._portalTimer = window.setTimeout(function () {
      button.textContent = button.getAttribute("data-label");
      button.removeAttribute("data-copied");
    }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-text]");
    if (!button) { return; }
    event.preventDefault();
    var text = textFor(button);
    if (text === null) { return; }
    copyText(text).then(function () {
      flash(button, "Copied");
      announce("Copied to the clipboard");
    }, function () {
      flash(button, "Copy failed");
      announce("Copy failed: select the text and copy it by hand");
    });
  });

  function setupMenu() {
    var toggle = document.querySelector(".menu-toggle");
    var nav = toggle && document.getElementById(toggle.getAttribute("aria-controls"));
    if (!toggle || !nav) { return; }
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      nav.classList.toggle("open", open);
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && nav.classList.contains("open")) {
        toggle.setAttribute("aria-expanded", "false");
        nav.classList.remove("open");
        toggle.focus();
      }
    });
  }

  // The create-key form: the date input matters only for "On a date…".
  function setupExpiry() {
    var menu = document.getElementById("id_expires");
    var box = document.querySelector('[data-field="expires_on"]');
    if (!menu || !box) { return; }
    function sync() { box.hidden = menu.value !== "date" && !box.classList.contains("has-error"); }
    menu.addEventListener("change", function () {
      box.classList.remove("has-error");
      sync();
      if (menu.value === "date") { box.querySelector("input").focus(); }
    });
    sync();
  }

  // A code block or table that scrolls sideways must be reachable by keyboard to be read:
  // give the ones that overflow a tab stop (and take it back when they no longer do).
  function markScrollable() {
    document.querySelectorAll("pre, .table-wrap").forEach(function (box) {
      var scrolls = box.scrollWidth > box.clientWidth + 1;
      if (scrolls && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        box.setAttribute("data-scroll-stop", "");
      } else if (!scrolls && box.hasAttribute("data-scroll-stop")) {
        box.removeAttribute("tabindex");
        box.removeAttribute("data-scroll-stop");
      }
    });
  }

  function setup() {
    setupMenu();
    setupExpiry();
    markScrollable();
    var resizing = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(resizing);
      resizing = window.setTimeout(markScrollable, 100);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setup);
  } else {
    setup();
  }

  var numberFormat = new Intl.NumberFormat("en-US");

  function formatNumber(n) { return numberFormat.format(n); }

  function count(n, singular, plural) {
    return formatNumber(n) + " " + (n === 1 ? singular : (plural || singular + "s"));
  }

  var UNITS = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];

  function relative(date, now) {
    var seconds = Math.round((date.getTime() - (now || Date.now())) / 1000);
    var size = Math.abs(seconds);
    if (size < 1) { return "now"; }
    if (size >= 45 * 86400) { return date.toISOString().slice(0, 10); }
    for (var i = 0; i < UNITS.length; i++) {
      if (size >= UNITS[i][0]) {
        var amount = Math.floor(size / UNITS[i][0]) + " " + UNITS[i][1];
        return seconds > 0 ? "in " + amount : amount + " ago";
      }
    }
    return "now";
  }

  function refreshTimes() {
    document.querySelectorAll("time[data-relative]").forEach(function (node) {
      var date = new Date(node.getAttribute("datetime"));
      if (!isNaN(date.getTime())) { node.textContent = relative(date); }
    });
  }
  window.setInterval(refreshTimes, 15000);

  window.portal = window.portal || {};
  window.portal.copyText = copyText;
  window.portal.formatNumber = formatNumber;
  window.portal.count = count;
  window.portal.relative = relative;
  window.portal.markScrollable = markScrollable;
})();
