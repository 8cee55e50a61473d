/*
 * The colour theme, before the page paints (loaded without defer in <head>): the choice
 * remembered in localStorage ("light" / "dark") goes on <html data-theme>; none means
 * "follow the system" (prefers-color-scheme, in static/css/portal.css). The toggle button in
 * the top bar (#theme-toggle) cycles system -> light -> dark -> system.
 */
(function () {
  "use strict";
  var KEY = "portal-theme";
  var root = document.documentElement;
  var LABELS = { "": "Theme: system", light: "Theme: light", dark: "Theme: dark" };
  var NEXT = { "": "light", light: "dark", dark: "" };

  function stored() {
    try { return window.localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function apply(theme) {
    if (theme) { root.setAttribute("data-theme", theme); } else { root.removeAttribute("data-theme"); }
  }

  apply(stored());

  function setup() {
    var button = document.getElementById("theme-toggle");
    if (!button) { return; }
    button.hidden = false;
    function label() {
      var theme = stored();
      button.textContent = LABELS[theme] || LABELS[""];
      button.setAttribute("aria-label", (LABELS[theme] || LABELS[""]) + ". Change the theme");
    }
    button.addEventListener("click", function () {
      var theme = NEXT[stored()] || "";
      try {
        if (theme) { window.localStorage.setItem(KEY, theme); } else { window.localStorage.removeItem(KEY); }
      } catch (e) { /* private mode: this page only */ }
      apply(theme);
      label();
      document.dispatchEvent(new CustomEvent("portal:theme"));
    });
    label();
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", setup); } else { setup(); }
})();
