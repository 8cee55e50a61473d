/* The staff insights charts: dependency-free SVG, drawn like the usage page's chart.
 *
 * Reads <script id="insights-data"> ({days, charts: [{name, kind, series: [{name, values}]}]})
 * and draws each chart into its [data-insight-chart=name] box: "bars" stacks the series per
 * day, "lines" draws one line per series (null = no value that day). Colours come from the
 * usage chart's CSS classes (.series-N, .grid, .axis), so both themes apply. The numbers are in
 * the CSV linked under each chart. */
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var W = 720, H = 220, PAD_L = 48, PAD_B = 22, PAD_T = 8;

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function short(n) {
    if (n >= 1e9) { return (n / 1e9).toFixed(1).replace(/\.0$/, "") + "B"; }
    if (n >= 1e6) { return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M"; }
    if (n >= 1e3) { return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k"; }
    return String(n);
  }

  function draw(box, days, chart) {
    var series = chart.series;
    if (!series.length) { return; }
    var n = days.length, max = 1;
    for (var i = 0; i < n; i++) {
      var stack = 0;
      series.forEach(function (s) {
        var v = s.values[i] || 0;
        if (chart.kind === "bars") { stack += v; } else { max = Math.max(max, v); }
      });
      max = Math.max(max, stack);
    }
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, class: "insight-svg", "aria-hidden": "true"});
    var plotW = W - PAD_L, plotH = H - PAD_B - PAD_T, step = plotW / n;
    [0, 0.5, 1].forEach(function (f) {
      var y = PAD_T + plotH * (1 - f);
      svg.appendChild(el("line", {x1: PAD_L, x2: W, y1: y, y2: y, class: "grid"}));
      svg.appendChild(el("text", {x: PAD_L - 4, y: y + 4, "text-anchor": "end", class: "axis"}, short(Math.round(max * f))));
    });
    [[0, "start", PAD_L], [Math.floor(n / 2), "middle", null], [n - 1, "end", W]].forEach(function (t) {
      var x = t[2] === null ? PAD_L + step * (t[0] + 0.5) : t[2];
      svg.appendChild(el("text", {x: x, y: H - 6, "text-anchor": t[1], class: "axis"}, days[t[0]].slice(5)));
    });
    if (chart.kind === "bars") {
      var base = new Array(n).fill(0);
      series.forEach(function (s, k) {
        s.values.forEach(function (v, i) {
          if (!v) { return; }
          var h = plotH * v / max, y = PAD_T + plotH - plotH * base[i] / max - h;
          var rect = el("rect", {x: PAD_L + step * i + 1, y: y, width: Math.max(1, step - 2), height: h, class: "series-" + (k % 8)});
          rect.appendChild(el("title", {}, days[i] + " " + s.name + ": " + v));
          svg.appendChild(rect);
          base[i] += v;
        });
      });
    } else {
      series.forEach(function (s, k) {
        var points = [];
        s.values.forEach(function (v, i) {
          if (v === null || v === undefined) { return; }
          points.push((PAD_L + step * (i + 0.5)).toFixed(1) + "," + (PAD_T + plotH - plotH * v / max).toFixed(1));
        });
        svg.appendChild(el("polyline", {points: points.join(" "), fill: "none", "stroke-width": 2, class: "line series-" + (k % 8)}));
      });
    }
    box.appendChild(svg);
    var legend = document.createElement("ul");
    legend.className = "chart-legend";
    series.forEach(function (s, k) {
      var item = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch series-" + (k % 8);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + s.name));
      legend.appendChild(item);
    });
    box.appendChild(legend);
  }

  var source = document.getElementById("insights-data");
  if (!source) { return; }
  var data = JSON.parse(source.textContent);
  data.charts.forEach(function (chart) {
    var box = document.querySelector('[data-insight-chart="' + chart.name + '"]');
    if (box) { draw(box, data.days, chart); }
  });
})();
