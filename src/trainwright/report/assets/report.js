/* trainwright run report: draws the charts of the page with uPlot from the JSON in #tw-report-data.
   Hover: the legend under a chart shows each line's value at the step under the cursor (the nearest logged
   point for sparse lines such as evaluations); the cursor moves on every chart at once.
   Zoom: drag across a chart (x range), Ctrl/Alt/Cmd + wheel or a trackpad pinch at the cursor; double-click
   resets. Lines: click a legend entry; runs: the "Runs shown" checkboxes act on every chart.
   window.twReport = {plots: [{key, u, runOf}], errors: [...]} for scripts and tests. */
(function () {
  "use strict";
  var report = {plots: [], errors: []};
  window.twReport = report;

  function fmt(v, digits) {
    if (v === null || v === undefined || isNaN(v)) return "\u2014";
    if (v === 0) return "0";
    var p = parseFloat(Number(v).toPrecision(digits)), a = Math.abs(p);
    if (a < 1e-3 || a >= 1e7) return p.toExponential().replace("e+", "e");
    return String(p);
  }
  function fmtTick(v) { return v === null ? "" : fmt(v, 6); }

  var STEP_INCRS = [];  // steps are whole numbers: tick spacings 1, 2, 5, 10, 20, 25, 50, ...
  for (var e = 1; e <= 1e9; e *= 10) STEP_INCRS.push(e, 2 * e, e >= 10 ? 2.5 * e : 5 * e, 5 * e);
  STEP_INCRS = STEP_INCRS.filter(function (v, i, a) { return a.indexOf(v) === i; });

  function alpha(hex, a) {
    return hex + ("0" + Math.round(a * 255).toString(16)).slice(-2);
  }

  function seriesOpts(s) {
    var n = s.y.filter(function (v) { return v !== null; }).length, lone = n <= 1;  // a lone point: a marker
    var o = {label: s.label, stroke: s.colour, width: 1.5, spanGaps: false,
             value: function (u, v) { return fmt(v, 5); }, points: {show: n <= 30, size: 5, fill: s.colour}};
    if (s.style === "raw") { o.stroke = alpha(s.colour, 0.35); o.width = 1; o.points = {show: lone, size: 6}; }
    else if (s.style === "smooth") { o.width = 2.2; o.points = {show: lone, size: 6, fill: s.colour}; }
    else if (s.style === "dashed") { o.dash = [6, 4]; o.points = {show: true, size: 6, fill: s.colour}; }
    else if (s.style === "marks") {
      o.stroke = "#000"; o.width = 0; o.paths = function () { return null; };
      o.points = {show: true, size: 9, stroke: "#000", fill: "#000"};
    }
    return o;
  }

  // width of the y axis: the longest tick label plus the tick marks and gap (uPlot's default 50 px
  // cut labels such as 0.00015 short)
  function axisSize(u, values, axisIdx, cycleNum) {
    var axis = u.axes[axisIdx];
    if (cycleNum > 1) return axis._size;
    var longest = (values || []).reduce(function (acc, v) { return v.length > acc.length ? v : acc; }, "");
    var size = axis.ticks.size + axis.gap + 4;
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
    }
    return Math.ceil(size);
  }

  // nearest logged point of a series to the hovered index (evaluations are logged at fewer steps)
  function nearestIdx(u, si, hi) {
    var ys = u.data[si], xs = u.data[0];
    if (ys[hi] !== undefined && ys[hi] !== null) return hi;
    var l = hi - 1, r = hi + 1;
    while (l >= 0 && (ys[l] === undefined || ys[l] === null)) l--;
    while (r < ys.length && (ys[r] === undefined || ys[r] === null)) r++;
    if (l < 0 && r >= ys.length) return hi;
    if (l < 0) return r;
    if (r >= ys.length) return l;
    return xs[hi] - xs[l] <= xs[r] - xs[hi] ? l : r;
  }

  function wheelZoom() {
    return {hooks: {ready: function (u) {
      u.over.addEventListener("wheel", function (e) {
        if (!(e.ctrlKey || e.altKey || e.metaKey)) return;  // a plain wheel scrolls the page
        e.preventDefault();
        var xs = u.data[0], x0 = xs[0], x1 = xs[xs.length - 1], sc = u.scales.x;
        if (!(x1 > x0)) return;
        var at = u.posToVal(e.clientX - u.over.getBoundingClientRect().left, "x");
        var f = e.deltaY < 0 ? 0.75 : 1 / 0.75;
        var min = at - (at - sc.min) * f, max = at + (sc.max - at) * f;
        if (max - min >= x1 - x0) { min = x0; max = x1; }
        else if (min < x0) { max += x0 - min; min = x0; }
        else if (max > x1) { min -= max - x1; max = x1; }
        u.setScale("x", {min: min, max: max});
      }, {passive: false});
    }}};
  }

  function yScale(chart) {
    var y = {distr: chart.log ? 3 : 1};
    if (chart.log) y.log = 10;
    if (chart.zero) y.range = function (u, min, max) { return [0, max > 0 ? max * 1.12 : 1]; };
    return y;
  }

  function options(chart, width, height) {
    var series = [{label: "step", value: function (u, v) { return v === null ? "\u2014" : fmt(v, 12); }}];
    chart.series.forEach(function (s) { series.push(seriesOpts(s)); });
    return {
      title: chart.title, width: width, height: height, series: series,
      scales: {x: {time: false}, y: yScale(chart)},
      axes: [{label: "step", labelSize: 20, incrs: STEP_INCRS},
             {label: chart.ylabel, labelSize: 22, size: axisSize,
              values: function (u, splits) { return splits.map(fmtTick); }}],
      cursor: {y: false, drag: {x: true, y: false}, sync: {key: "tw-step"}, focus: {prox: 16},
               dataIdx: nearestIdx},
      focus: {alpha: 0.35},
      legend: {live: true},
      plugins: [wheelZoom()]
    };
  }

  function build(chart) {
    var el = document.getElementById("chart-" + chart.key);
    if (!el) throw new Error("no container for chart " + chart.key);
    var tables = chart.series.map(function (s) { return [s.x, s.y]; });
    var modes = chart.series.map(function () { return [1, 1]; });  // keep explicit nulls: gaps
    var aligned = uPlot.join(tables, modes);
    var width = Math.max(el.clientWidth || 0, 280);
    var u = new uPlot(options(chart, width, chart.group ? 260 : 330), aligned, el);
    report.plots.push({key: chart.key, u: u, el: el,
                       runOf: [null].concat(chart.series.map(function (s) { return s.run; }))});
  }

  function showError(chart, err) {
    report.errors.push(chart.key + ": " + (err && err.message ? err.message : String(err)));
    var el = document.getElementById("chart-" + chart.key);
    if (el) {
      var box = document.createElement("div");
      box.className = "chart-error";
      box.textContent = "This chart could not be drawn: " + (err && err.message ? err.message : err) +
                        " (the PNG link below has it).";
      el.appendChild(box);
    }
  }

  function setRun(run, show) {
    report.plots.forEach(function (p) {
      p.runOf.forEach(function (r, si) { if (r === run) p.u.setSeries(si, {show: show}); });
    });
  }

  function wireToggles() {
    var boxes = document.querySelectorAll("#run-toggles input[data-run]");
    Array.prototype.forEach.call(boxes, function (box) {
      box.addEventListener("change", function () {
        setRun(parseInt(box.getAttribute("data-run"), 10), box.checked);
        box.parentNode.classList.toggle("off", !box.checked);
      });
    });
  }

  function resize() {
    report.plots.forEach(function (p) {
      var w = Math.max(p.el.clientWidth || 0, 280);
      if (Math.abs(w - p.u.width) > 1) p.u.setSize({width: w, height: p.u.height});
    });
  }

  function main() {
    var data;
    try {
      data = JSON.parse(document.getElementById("tw-report-data").textContent);
    } catch (err) {
      report.errors.push("chart data: " + err.message);
      return;
    }
    data.charts.forEach(function (chart) {
      try { build(chart); } catch (err) { showError(chart, err); }
    });
    wireToggles();
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(resize, 100);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
