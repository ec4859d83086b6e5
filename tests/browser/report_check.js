/* Injected at the end of a copy of report.html by tests/browser_support.py: checks that every chart was
   drawn, then drives the page as a user would (hover, drag-zoom, Ctrl+wheel, double-click, legend click,
   run checkboxes) and writes what it saw as JSON into <pre id="tw-test-result">. */
(function () {
  "use strict";
  var out = {errors: [], charts: [], containers: 0, resources: [], steps: {}};
  var R = window.twReport;

  function hexRgb(hex) {
    return [parseInt(hex.slice(1, 3), 16), parseInt(hex.slice(3, 5), 16), parseInt(hex.slice(5, 7), 16)];
  }
  // pixels of the canvas close to an opaque colour (lines are drawn opaque, anti-aliased at their edges)
  function colourPixels(u, hex) {
    var c = u.ctx.canvas, rgb = hexRgb(hex), n = 0;
    var d = u.ctx.getImageData(0, 0, c.width, c.height).data;
    for (var i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) < 24 && Math.abs(d[i + 1] - rgb[1]) < 24 &&
          Math.abs(d[i + 2] - rgb[2]) < 24) n++;
    }
    return n;
  }
  function plot(key) { return R.plots.filter(function (p) { return p.key === key; })[0]; }
  function finite(ys) { return ys.some(function (v) { return v !== null && v !== undefined && isFinite(v); }); }
  function mouse(type, target, x, y, extra) {
    var init = {bubbles: true, cancelable: true, clientX: x, clientY: y, button: 0, buttons: 1, movementX: 1,
                movementY: 1, view: window};
    for (var k in (extra || {})) init[k] = extra[k];
    target.dispatchEvent(type === "wheel" ? new WheelEvent(type, init) : new MouseEvent(type, init));
  }
  function at(u, frac) {
    var r = u.over.getBoundingClientRect();
    return [r.left + r.width * frac, r.top + r.height / 2];
  }
  function range(u) { return [u.scales.x.min, u.scales.x.max]; }

  function checkCharts() {
    var data = JSON.parse(document.getElementById("tw-report-data").textContent);
    out.containers = document.querySelectorAll(".chart").length;
    data.charts.forEach(function (chart) {
      var p = plot(chart.key), rec = {key: chart.key, drawn: false, series: chart.series.length, runPixels: {}};
      out.charts.push(rec);
      if (!p) return;
      var canvas = p.el.querySelector("canvas");
      rec.canvas = canvas ? [canvas.width, canvas.height] : null;
      rec.paths = chart.series.map(function (s, i) {
        var ser = p.u.series[i + 1];
        return s.style === "marks" ? finite(p.u.data[i + 1]) : !!(ser._paths && finite(p.u.data[i + 1]));
      });
      chart.series.forEach(function (s) {
        if (s.style !== "raw" && rec.runPixels[s.run] === undefined) rec.runPixels[s.run] = colourPixels(p.u, s.colour);
      });
      // the y axis is wide enough for its longest tick label: the label beside it is not overlapped or cut
      var ax = p.u.axes[1], longest = (ax._values || []).reduce(function (a, v) { return v.length > a.length ? v : a; }, "");
      p.u.ctx.font = ax.font[0];
      rec.yTicks = ax._values;
      rec.yAxisFits = ax._size >= p.u.ctx.measureText(longest).width / (window.devicePixelRatio || 1) + ax.ticks.size;
      rec.drawn = !!canvas && rec.paths.every(Boolean) &&
                  Object.keys(rec.runPixels).every(function (r) { return rec.runPixels[r] > 20; });
    });
  }

  var u, full, steps = [];
  steps.push(function () {
    checkCharts();
    u = R.plots[0].u;
    full = range(u);
    var xy = at(u, 0.5);
    mouse("mouseenter", u.over, xy[0], xy[1]);
    mouse("mousemove", u.over, xy[0], xy[1]);
  });
  steps.push(function () {
    var values = Array.prototype.map.call(u.root.querySelectorAll(".u-legend .u-value"),
                                          function (e) { return e.textContent; });
    out.steps.hover = {idx: u.cursor.idx, values: values,
                       others: R.plots.slice(1).map(function (p) { return p.u.cursor.idx; })};
    var a = at(u, 0.2), b = at(u, 0.7);
    mouse("mousedown", u.over, a[0], a[1]);
    mouse("mousemove", u.over, b[0], b[1]);
    mouse("mouseup", document, b[0], b[1]);
  });
  steps.push(function () {
    out.steps.drag = {full: full, zoomed: range(u)};
    var xy = at(u, 0.5);
    mouse("dblclick", u.over, xy[0], xy[1]);
  });
  steps.push(function () {
    out.steps.dblclick = range(u);
    var xy = at(u, 0.5);
    mouse("wheel", u.over, xy[0], xy[1], {deltaY: -120});
  });
  steps.push(function () {
    out.steps.plainWheel = range(u);
    var xy = at(u, 0.5);
    mouse("wheel", u.over, xy[0], xy[1], {deltaY: -120, ctrlKey: true});
  });
  steps.push(function () {
    out.steps.ctrlWheel = range(u);
    mouse("mouseleave", u.over, 0, 0);  // no hovered line: the others are drawn at full opacity again
    var entry = u.root.querySelectorAll(".u-legend .u-series")[1].querySelector("th");  // uPlot listens here
    entry.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true, button: 0}));
  });
  steps.push(function () {
    out.steps.legendClick = {shown: u.series[1].show};
    var box = document.querySelector('#run-toggles input[data-run="1"]');
    out.steps.toggle = {present: !!box};
    if (!box) return;
    box.click();
  });
  steps.push(function () {
    var t = out.steps.toggle;
    if (!t.present) return;
    var data = JSON.parse(document.getElementById("tw-report-data").textContent);
    t.hidden = R.plots.map(function (p) {
      return p.runOf.filter(function (r, si) { return r === 1 && p.u.series[si].show; }).length;
    });
    var c = data.runs[1].colour;
    t.pixelsOff = R.plots.map(function (p) { return colourPixels(p.u, c); });
    document.querySelector('#run-toggles input[data-run="1"]').click();
  });
  steps.push(function () {
    var t = out.steps.toggle;
    if (!t.present) return;
    var c = JSON.parse(document.getElementById("tw-report-data").textContent).runs[1].colour;
    t.pixelsBack = R.plots.map(function (p) { return colourPixels(p.u, c); });
  });

  function run(i) {
    if (i === 0 && !R) {
      out.errors.push("window.twReport is missing: report.js did not run");
      return finish();
    }
    if (i >= steps.length) return finish();
    try { steps[i](); } catch (e) { out.errors.push("check step " + i + ": " + e.message); }
    setTimeout(function () { run(i + 1); }, 60);
  }
  function finish() {
    out.errors = out.errors.concat(window.__twErrors || [], (R && R.errors) || []);
    out.resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    var pre = document.createElement("pre");
    pre.id = "tw-test-result";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  setTimeout(function () { run(0); }, 200);
})();
