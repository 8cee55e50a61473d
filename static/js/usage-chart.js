/* The usage page's chart: a dependency-free stacked bar chart (SVG), full width.
 *
 * Reads <script id="usage-chart-data"> ({days, model: [...], key: [...]}, each series
 * {name, requests: [..], tokens: [..]}) and draws into #usage-chart. Radios switch the
 * metric (tokens / requests) and the split (model / API key). Hovering a day shows its values;
 * so does focusing the chart with the keyboard, where Left/Right/Home/End move between days
 * and a live region reads each one. Colours come from CSS custom properties (classes
 * .series-N, .grid, .axis), so the chart follows the light and dark themes. With no usage at
 * all the chart gives way to #usage-chart-empty, which says what to do first. The same
 * numbers are in the page's table, without JavaScript too. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var SERIES_COLOURS = 8;

  function fmt(n) { return window.portal.formatNumber(n); }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function html(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function short(n) {
    if (n >= 1e9) { return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B"; }
    if (n >= 1e6) { return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M"; }
    if (n >= 1e3) { return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k"; }
    return String(n);
  }

  function niceMax(n) {
    if (n <= 0) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(n)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) { if (steps[i] * p >= n) { return steps[i] * p; } }
    return 10 * p;
  }

  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function dayLabel(iso) { return MONTHS[Number(iso.slice(5, 7)) - 1] + " " + Number(iso.slice(8, 10)); }

  function Chart(box, data) {
    this.box = box;
    this.data = data;
    this.metric = "tokens";
    this.split = "model";
    this.active = data.days.length - 1;
    this.plot = html("div", "chart-plot");
    this.plot.tabIndex = 0;
    this.plot.setAttribute("role", "group");
    this.tip = html("div", "chart-tip");
    this.tip.hidden = true;
    this.live = html("div", "visually-hidden");
    this.live.setAttribute("aria-live", "polite");
    this.legend = html("ul", "chart-legend");
    box.appendChild(this.plot);
    box.appendChild(this.tip);
    box.appendChild(this.live);
    box.appendChild(this.legend);
    this.bind();
  }

  Chart.prototype.series = function () { return this.data[this.split] || []; };

  Chart.prototype.totals = function () {
    var metric = this.metric, series = this.series();
    return this.data.days.map(function (_, i) {
      return series.reduce(function (s, x) { return s + x[metric][i]; }, 0);
    });
  };

  Chart.prototype.render = function () {
    var days = this.data.days, series = this.series(), metric = this.metric;
    var W = Math.max(320, Math.round(this.box.clientWidth || 720)), H = 260;
    var L = 52, R = 8, T = 12, B = 28;
    var totals = this.totals();
    var max = niceMax(Math.max.apply(null, totals.concat([0])));
    var sum = totals.reduce(function (a, b) { return a + b; }, 0);
    var unit = metric === "tokens" ? "token" : "request";
    this.plot.setAttribute("aria-label", (metric === "tokens" ? "Tokens" : "Requests")
      + " per day, last " + days.length + " days: " + window.portal.count(sum, unit)
      + " in all. Use the left and right arrow keys to read each day.");
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, "aria-hidden": "true",
                         focusable: "false"});
    var plotW = W - L - R, plotH = H - T - B, slot = plotW / days.length;
    this.geometry = {L: L, slot: slot};
    for (var g = 0; g <= 4; g++) {
      var y = T + plotH - (plotH * g) / 4;
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, "class": "grid"}));
      svg.appendChild(el("text", {x: L - 6, y: y + 4, "text-anchor": "end", "class": "axis"},
                         short((max * g) / 4)));
    }
    this.band = el("rect", {x: 0, y: T, width: slot, height: plotH, "class": "band"});
    svg.appendChild(this.band);
    var every = W < 560 ? 10 : 5;
    days.forEach(function (day, i) {
      var base = T + plotH, x = L + i * slot + slot * 0.15, w = Math.max(1, slot * 0.7);
      series.forEach(function (s, k) {
        var v = s[metric][i];
        if (!v) { return; }
        var h = Math.max(1, (plotH * v) / max);
        base -= h;
        svg.appendChild(el("rect", {x: x, y: base, width: w, height: h, rx: 1.5,
                                    "class": "bar series-" + (k % SERIES_COLOURS)}));
      });
      if ((days.length - 1 - i) % every === 0) {
        svg.appendChild(el("text", {x: x + w / 2, y: H - 8, "text-anchor": "middle", "class": "axis"},
                           dayLabel(day)));
      }
    });
    this.plot.replaceChildren(svg);
    this.svg = svg;

    this.legend.replaceChildren();
    var self = this;
    series.forEach(function (s, k) {
      var item = html("li");
      item.appendChild(html("span", "swatch series-" + (k % SERIES_COLOURS)));
      item.appendChild(document.createTextNode(s.name + " · " + fmt(s[metric].reduce(function (a, b) { return a + b; }, 0))));
      self.legend.appendChild(item);
    });
    if (this.tip.hidden === false) { this.show(this.active, false); }
  };

  Chart.prototype.show = function (index, announce) {
    var days = this.data.days, metric = this.metric;
    this.active = Math.max(0, Math.min(days.length - 1, index));
    var i = this.active, g = this.geometry;
    this.band.setAttribute("x", g.L + i * g.slot);
    this.band.classList.add("on");
    var total = this.totals()[i];
    var unit = metric === "tokens" ? "token" : "request";
    this.tip.replaceChildren();
    this.tip.appendChild(html("strong", "", dayLabel(days[i]) + " · " + window.portal.count(total, unit)));
    var list = html("ul");
    var spoken = [];
    this.series().forEach(function (s, k) {
      var v = s[metric][i];
      if (!v) { return; }
      var item = html("li");
      item.appendChild(html("span", "swatch series-" + (k % SERIES_COLOURS)));
      item.appendChild(document.createTextNode(s.name + ": " + fmt(v)));
      list.appendChild(item);
      spoken.push(s.name + " " + fmt(v));
    });
    if (list.children.length) { this.tip.appendChild(list); }
    this.tip.hidden = false;
    // Beside the day's bar, kept inside the chart (element.style is CSSOM: allowed by the CSP).
    var x = g.L + (i + 0.5) * g.slot;
    var width = this.tip.offsetWidth, room = this.box.clientWidth;
    var left = x + 12 + width > room ? x - 12 - width : x + 12;
    this.tip.style.left = Math.max(0, left) + "px";
    if (announce) {
      this.live.textContent = days[i] + ": " + window.portal.count(total, unit)
        + (spoken.length ? " (" + spoken.join(", ") + ")" : "");
    }
  };

  Chart.prototype.hide = function () {
    this.tip.hidden = true;
    if (this.band) { this.band.classList.remove("on"); }
  };

  Chart.prototype.bind = function () {
    var self = this;
    this.plot.addEventListener("mousemove", function (event) {
      var rect = self.svg.getBoundingClientRect();
      var scale = rect.width / Number(self.svg.getAttribute("width"));
      var i = Math.floor(((event.clientX - rect.left) / scale - self.geometry.L) / self.geometry.slot);
      if (i >= 0 && i < self.data.days.length) { self.show(i, false); } else { self.hide(); }
    });
    this.plot.addEventListener("mouseleave", function () {
      if (document.activeElement !== self.plot) { self.hide(); }
    });
    this.plot.addEventListener("focus", function () { self.show(self.active, true); });
    this.plot.addEventListener("blur", function () { self.hide(); });
    this.plot.addEventListener("keydown", function (event) {
      var moves = {ArrowLeft: -1, ArrowRight: 1, Home: -Infinity, End: Infinity};
      if (!(event.key in moves)) {
        if (event.key === "Escape") { self.hide(); }
        return;
      }
      event.preventDefault();
      var step = moves[event.key];
      var next = step === -Infinity ? 0 : step === Infinity ? self.data.days.length - 1 : self.active + step;
      self.show(next, true);
    });
    var resizing = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(resizing);
      resizing = window.setTimeout(function () { self.render(); }, 100);
    });
  };

  function hasUsage(data) {
    return ["model", "key"].some(function (split) {
      return (data[split] || []).some(function (s) {
        return s.requests.concat(s.tokens).some(function (v) { return v > 0; });
      });
    });
  }

  function init() {
    var source = document.getElementById("usage-chart-data");
    var box = document.getElementById("usage-chart");
    if (!source || !box) { return; }
    var data = JSON.parse(source.textContent);
    if (!hasUsage(data)) {
      box.hidden = true;
      document.querySelectorAll(".chart-controls").forEach(function (c) { c.hidden = true; });
      document.getElementById("usage-chart-empty").hidden = false;
      return;
    }
    var chart = new Chart(box, data);
    function pick(name) {
      var checked = document.querySelector("input[name=" + name + "]:checked");
      return checked ? checked.value : null;
    }
    function update() {
      chart.metric = pick("usage-metric") || "tokens";
      chart.split = pick("usage-split") || "model";
      chart.render();
    }
    document.querySelectorAll("input[name=usage-metric], input[name=usage-split]").forEach(function (radio) {
      radio.addEventListener("change", update);
    });
    update();
    window.portal.usageChart = chart;
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
