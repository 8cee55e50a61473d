/* A small dependency-free stacked bar chart (SVG) for the usage page.
 * Reads the JSON from <script id="usage-chart-data"> ({days, model: [...], key: [...]}, each
 * series {name, requests: [..], tokens: [..]}) and draws into [data-usage-chart="requests"]
 * and [data-usage-chart="tokens"]; the "split by" radios switch between models and keys.
 * The same numbers are in the page's table, for screen readers and without JavaScript. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#65a30d",
                "#db2777", "#4b5563", "#7c3aed"];

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function short(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B";
    if (n >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(n);
  }

  function niceMax(n) {
    if (n <= 0) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(n)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= n) return steps[i] * p;
    return 10 * p;
  }

  function draw(box, days, series, metric, title) {
    box.textContent = "";
    var W = 720, H = 240, L = 48, R = 8, T = 12, B = 28;
    var totals = days.map(function (_, i) {
      return series.reduce(function (s, x) { return s + x[metric][i]; }, 0);
    });
    var max = niceMax(Math.max.apply(null, totals.concat([0])));
    var sum = totals.reduce(function (a, b) { return a + b; }, 0);
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, role: "img", width: "100%",
                         "aria-label": title + ": " + sum + " in the last " + days.length + " days"});
    var plotW = W - L - R, plotH = H - T - B, slot = plotW / days.length;
    for (var g = 0; g <= 4; g++) {
      var y = T + plotH - (plotH * g) / 4;
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#e5e7eb"}));
      svg.appendChild(el("text", {x: L - 6, y: y + 4, "text-anchor": "end", "font-size": 11,
                                  fill: "#6b7280"}, short((max * g) / 4)));
    }
    days.forEach(function (day, i) {
      var base = T + plotH, x = L + i * slot + slot * 0.15, w = slot * 0.7;
      series.forEach(function (s, k) {
        var v = s[metric][i];
        if (!v) return;
        var h = (plotH * v) / max;
        base -= h;
        var rect = el("rect", {x: x, y: base, width: w, height: h, fill: COLORS[k % COLORS.length]});
        rect.appendChild(el("title", {}, day + " · " + s.name + ": " + window.portal.formatNumber(v)));
        svg.appendChild(rect);
      });
      if (i % 5 === 0 || i === days.length - 1) {
        svg.appendChild(el("text", {x: x + w / 2, y: H - 8, "text-anchor": "middle",
                                    "font-size": 11, fill: "#6b7280"}, day.slice(5)));
      }
    });
    box.appendChild(svg);
    var legend = document.createElement("ul");
    legend.className = "chart-legend";
    series.forEach(function (s, k) {
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[k % COLORS.length];
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    if (!series.length) {
      var none = document.createElement("li");
      none.textContent = "No usage in this period yet.";
      legend.appendChild(none);
    }
    box.appendChild(legend);
  }

  function init() {
    var source = document.getElementById("usage-chart-data");
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var boxes = document.querySelectorAll("[data-usage-chart]");
    function render(split) {
      boxes.forEach(function (box) {
        var metric = box.getAttribute("data-usage-chart");
        draw(box, data.days, data[split] || [], metric, box.getAttribute("data-title") || metric);
      });
    }
    document.querySelectorAll("input[name=usage-split]").forEach(function (radio) {
      radio.addEventListener("change", function () { if (radio.checked) render(radio.value); });
    });
    var checked = document.querySelector("input[name=usage-split]:checked");
    render(checked ? checked.value : "model");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
