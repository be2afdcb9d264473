/* pneumo clinic app page logic: upload, result, history. No dependencies, no inline code.
   Safety rules of the per-patient workflow: choosing a new file clears the previous result,
   image and patient reference (with a visible "Keep it"); an error replaces the result; an
   answer that arrives after a new file was chosen is not shown; "Next patient" resets all. */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function text(el, value) { if (el) { el.textContent = value == null ? "" : String(value); } }

  // Texts in the page's language: a JSON catalogue rendered by the server (no inline script).
  var T = {};
  try { T = JSON.parse(($("i18n") || {}).textContent || "{}"); } catch (e) { T = {}; }
  // The page's language, with the browser's own region when it speaks it (en-GB, pt-BR, fr-CA).
  var lang = T.locale || document.documentElement.lang || undefined;
  (navigator.languages || [navigator.language]).some(function (l) {
    if (lang && l && l.split("-")[0].toLowerCase() === lang) { lang = l; return true; }
    return false;
  });
  // Western digits, as the server writes them (Babel), so one page never mixes digit systems.
  if (lang && lang.split("-")[0] === "ar" && lang.indexOf("-u-") < 0) { lang += "-u-nu-latn"; }
  function t(key, params) {
    var s = T[key] == null ? key : String(T[key]);
    return s.replace(/%\((\w+)\)s/g, function (m, name) {
      return params && params[name] != null ? String(params[name]) : m;
    });
  }
  var numberFormat = null;
  try { numberFormat = new Intl.NumberFormat(lang); } catch (e) { numberFormat = null; }
  function num(v, digits) {
    if (digits) {
      try { return new Intl.NumberFormat(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(v); }
      catch (e) { return v.toFixed(digits); }
    }
    return numberFormat ? numberFormat.format(v) : String(v);
  }

  // Times: the API speaks ISO 8601 UTC; people read the laptop's own time zone.
  var zone = "";
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
  var timeFormat = null;
  try {
    timeFormat = new Intl.DateTimeFormat(lang, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      timeZoneName: "short"
    });
  } catch (e) { timeFormat = null; }
  function localTime(iso) {
    var d = new Date(iso);
    if (!iso || isNaN(d.getTime())) { return iso || ""; }
    return timeFormat ? timeFormat.format(d) : d.toString();
  }
  function showTime(el, iso) {
    if (!el) { return; }
    el.setAttribute("datetime", iso || "");
    el.textContent = localTime(iso);
    el.title = zone ? t("shown_in", { iso: iso || "", zone: zone }) : (iso || "") + " (UTC)";
  }
  Array.prototype.forEach.call(document.querySelectorAll("time.local-time"), function (el) {
    showTime(el, el.getAttribute("datetime"));
  });

  // Print: open the disclosures (technical details) for paper, close them again after.
  var openedForPrint = [];
  window.addEventListener("beforeprint", function () {
    openedForPrint = Array.prototype.filter.call(
      document.querySelectorAll("details:not([open])"), function (d) { return d.closest(".tech"); });
    openedForPrint.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    openedForPrint.forEach(function (d) { d.open = false; });
    openedForPrint = [];
  });
  document.addEventListener("click", function (ev) {
    var hit = ev.target.closest ? ev.target.closest("[data-action=print]") : null;
    if (hit) { ev.preventDefault(); window.print(); }
  });

  var form = $("predict-form");
  if (!form) { return; }  // report page: nothing else to wire

  var meta = document.querySelector("meta[name=csrf-token]");
  var csrf = meta ? meta.getAttribute("content") : "";
  var input = $("image-input");
  var dropzone = $("dropzone");
  var submit = $("submit");
  var refInput = $("patient-ref");
  var chosen = null;
  var generation = 0;    // bumped whenever the patient/file changes: stale answers are dropped
  var usedRef = null;    // the reference sent with the last analysis (belongs to that X-ray)
  var clearedRef = null; // the reference cleared for a new file, offered back by "Keep it"

  function hideRefNote() { $("ref-note").hidden = true; clearedRef = null; }

  function clearResult() {
    $("error").hidden = true;
    $("error").textContent = "";
    $("result").hidden = true;
    $("result-empty").hidden = false;
    ["result-text", "r-prob", "r-patient", "r-file", "r-time", "r-label", "r-mode",
     "r-input", "r-model", "r-id", "r-heat-note"].forEach(function (id) {
      text($(id), "");
    });
    $("r-next").textContent = "";
    $("r-notes").textContent = "";
    $("r-warnings").textContent = "";
    ["r-image", "r-heatmap"].forEach(function (id) { $(id).removeAttribute("src"); });
    $("r-report").setAttribute("href", "#");
    resetConfirm(null);
  }

  function setFile(file) {
    generation += 1;
    chosen = file || null;
    text($("file-name"), chosen ? t("file_size", { name: chosen.name, size: num(Math.round(chosen.size / 1024)) })
                                : t("no_file"));
    submit.disabled = !chosen;
    clearResult();
    // A reference typed for the previous X-ray must not follow the next one unnoticed.
    if (usedRef && refInput.value === usedRef) {
      clearedRef = usedRef;
      refInput.value = "";
      text($("ref-note-text"), t("ref_cleared", { ref: clearedRef }));
      $("ref-note").hidden = false;
    }
    usedRef = null;
  }

  function nextPatient() {
    generation += 1;
    chosen = null;
    input.value = "";
    text($("file-name"), t("no_file"));
    submit.disabled = true;
    refInput.value = "";
    usedRef = null;
    hideRefNote();
    clearResult();
    $("busy").hidden = true;
    window.scrollTo(0, 0);
    input.focus();
  }

  input.addEventListener("change", function () { setFile(input.files[0]); });
  // app.js is deferred: an X-ray chosen while the page was still loading has no change event.
  if (input.files && input.files[0]) { setFile(input.files[0]); }
  refInput.addEventListener("input", hideRefNote);
  $("ref-keep").addEventListener("click", function () {
    if (clearedRef != null) { refInput.value = clearedRef; }
    hideRefNote();
    refInput.focus();
  });
  $("next-patient").addEventListener("click", nextPatient);
  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (ev) {
      ev.preventDefault(); dropzone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function (ev) {
      ev.preventDefault(); dropzone.classList.remove("dragover");
    });
  });
  dropzone.addEventListener("drop", function (ev) {
    var files = ev.dataTransfer && ev.dataTransfer.files;
    if (files && files.length) { setFile(files[0]); }
  });
  // Dropping a file outside the zone must not navigate away from the page.
  window.addEventListener("dragover", function (ev) { ev.preventDefault(); });
  window.addEventListener("drop", function (ev) { ev.preventDefault(); });

  // Bring the answer (or the error) into view and give it the focus, keyboard or mouse.
  function reveal(focusEl) {
    var card = $("result-card");
    var rect = card.getBoundingClientRect();
    if (rect.top < 0 || rect.bottom > window.innerHeight) {
      card.scrollIntoView({ block: "start" });
    }
    focusEl.focus({ preventScroll: true });
  }

  function showError(err) {
    clearResult();
    var box = $("error");
    var p = document.createElement("p");
    p.textContent = err.message || t("request_failed");
    box.appendChild(p);
    // The message already names the first reason: list only the others, each once.
    var seen = {};
    var others = (err.reasons || []).filter(function (r) {
      var m = (r && r.message) || "";
      if (!m || seen[m] || (err.message || "").indexOf(m) >= 0) { return false; }
      seen[m] = true;
      return true;
    });
    if (others.length) {
      var also = document.createElement("p");
      also.textContent = t("other_reasons");
      box.appendChild(also);
      var ul = document.createElement("ul");
      others.forEach(function (r) {
        var li = document.createElement("li"); li.textContent = r.message; ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    if (err.fix && T["fix_" + err.fix] && chosen) {  // e.g. upside down: offer to turn it
      var fix = document.createElement("button");
      fix.type = "button";
      fix.id = "error-fix";
      fix.className = "button";
      fix.textContent = t("fix_" + err.fix);
      fix.addEventListener("click", function () { analyseChosen(err.fix); });
      box.appendChild(fix);
    }
    box.hidden = false;
    $("result-empty").hidden = true;
    reveal(box);
  }

  function listInto(ul, items) {
    ul.textContent = "";
    (items || []).forEach(function (item) {
      var li = document.createElement("li"); li.textContent = item; ul.appendChild(li);
    });
  }

  function capital(s) { return s ? s.charAt(0).toUpperCase() + s.slice(1) : ""; }
  function labelWords(label) { return T["label_" + label] || label; }
  function modeWords(mode) { return T["mode_" + mode] || mode; }

  function showResult(r) {
    clearResult();
    $("result-empty").hidden = true;
    // Every word and the outcome's sign come from the server (pneumo.app.pipeline.wording): the page,
    // the history list and the report read the same stored answer.
    var shown = r.heatmap_shown === true;
    var verdict = $("result-text");
    text(verdict, r.headline || r.message);
    verdict.className = "verdict outcome-" + (r.outcome || "review");
    var icon = document.createElement("span");
    icon.className = "verdict-icon";
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = r.icon || "?";
    verdict.insertBefore(icon, verdict.firstChild);
    text($("r-prob"), capital(r.probability_text) + ".");
    listInto($("r-next"), r.next_steps);
    (r.notes || []).forEach(function (line) {
      var p = document.createElement("p");
      p.className = "answer-note"; p.setAttribute("role", "note"); p.textContent = line;
      $("r-notes").appendChild(p);
    });
    listInto($("r-warnings"), (r.quality || []).map(function (w) { return w.message; }));
    text($("r-patient"), r.patient_ref || "\u2014");
    text($("r-file"), r.file_name || "\u2014");
    showTime($("r-time"), r.created_at);
    text($("r-label"), labelWords(r.label));
    text($("r-mode"), t(r.calibrated ? "mode_line_calibrated" : "mode_line",
                        { mode: modeWords(r.mode), threshold: num(r.threshold, 3),
                          output: num(r.probability, 3) }));
    text($("r-input"), r.input.format + " " + r.input.width + " \u00d7 " + r.input.height + " px, " +
         t("bits", { bits: r.input.bit_depth }) + ", sha256 " + r.sha256.slice(0, 16) + "\u2026");
    text($("r-model"), r.model_name + " " + r.model_version + ", sha256 " +
         (r.model_sha256 || "").slice(0, 16) + "\u2026");
    text($("r-id"), r.id);
    text($("r-threshold-note"), thresholdWords(r.threshold_source));
    var chanceNote = $("r-chance-note");
    if (chanceNote) {
      if (!chanceNote.getAttribute("data-base")) { chanceNote.setAttribute("data-base", chanceNote.textContent); }
      text(chanceNote, chanceNote.getAttribute("data-base") +
           (r.clinic_chance_text ? " " + r.clinic_chance_text : ""));
    }
    resetConfirm(r);
    var img = $("r-image");
    if (r.preview) { img.src = r.preview; } else if (r.image_url) { img.src = r.image_url; }
    // A heatmap without signs of pneumonia is easily misread as disease: shown only on
    // request, and explained.
    var heat = $("r-heatmap");
    var note = $("r-heat-note");
    text(note, note.getAttribute(shown ? "data-positive" : "data-negative"));
    heat.src = r.heatmap_url;
    heat.hidden = !shown;
    $("r-heat-show").hidden = shown;
    $("r-report").href = "/report/" + encodeURIComponent(r.id);
    $("result").hidden = false;
    reveal(verdict);
  }
  $("r-heat-show").addEventListener("click", function () {
    $("r-heatmap").hidden = false;
    $("r-heat-show").hidden = true;
    $("r-heatmap").focus();
  });

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    analyseChosen(null);
  });

  // Send the chosen file; `orient` (rotate_180, flip_vertical, flip_horizontal) asks the app
  // to turn it first: the "Rotate and analyse" button of an upside-down refusal.
  function analyseChosen(orient) {
    if (!chosen) { return; }
    var data = new FormData();
    data.append("image", chosen, chosen.name);
    data.append("patient_ref", refInput.value);
    data.append("preview", "1");
    if (orient) { data.append("orient", orient); }
    var mine = generation;
    var ref = refInput.value;
    clearResult();
    hideRefNote();
    submit.disabled = true;
    $("busy").hidden = false;
    fetch("/api/v1/predict", {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
    }).then(function (resp) {
      return resp.json().catch(function () {
        return { error: { message: t("server_answered", { status: resp.status }) } };
      });
    }).then(function (body) {
      if (mine !== generation) { loadHistory(1); return; }  // another patient by now
      usedRef = ref || null;
      if (body.error) { showError(body.error); } else { showResult(body); loadHistory(1); }
      loadStatus();
    }).catch(function () {
      if (mine === generation) { showError({ message: t("unreachable") }); }
    }).then(function () {
      if (mine === generation) { submit.disabled = !chosen; $("busy").hidden = true; }
    });
  }

  // The clinician's finding: PUT /api/v1/history/<id>/confirmation (audited server-side).
  var findingLabels = {};
  Array.prototype.forEach.call(document.querySelectorAll("#confirm-form input[name=finding]"),
    function (el) { findingLabels[el.value] = el.parentNode.textContent.trim(); });
  var currentId = null;

  function sendJSON(method, url, body) {
    return fetch(url, {
      method: method, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json",
                 "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () {
        return { error: { message: t("server_answered", { status: resp.status }) } };
      });
    });
  }

  function savedText(r) {
    if (!r || !r.finding) { return ""; }
    var key = "saved" + (r.finding_by ? "_by" : "") + (r.finding_at ? "_at" : "");
    return t(key, { finding: findingLabels[r.finding] || r.finding, by: r.finding_by || "",
                    time: r.finding_at ? localTime(r.finding_at) : "" });
  }

  function resetConfirm(r) {
    currentId = r ? r.id : null;
    Array.prototype.forEach.call(document.querySelectorAll("#confirm-form input[name=finding]"),
      function (el) { el.checked = !!(r && r.finding === el.value); });
    $("c-note").value = (r && r.finding_note) || "";
    text($("c-status"), savedText(r));
  }

  function confirmFinding(id, finding, note, by) {
    return sendJSON("PUT", "/api/v1/history/" + encodeURIComponent(id) + "/confirmation",
                    { finding: finding, note: note || null, by: by || null });
  }

  $("confirm-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = currentId;
    var picked = document.querySelector("#confirm-form input[name=finding]:checked");
    if (!id) { return; }
    if (!picked) { text($("c-status"), t("choose_finding")); return; }
    confirmFinding(id, picked.value, $("c-note").value, $("c-by").value).then(function (body) {
      if (id !== currentId) { return; }  // another patient by now
      text($("c-status"), body.error ? body.error.message : savedText(body));
      loadHistory(page);
      loadStatus();
    }).catch(function () { text($("c-status"), t("unreachable")); });
  });

  // Status: drift banner, the thresholds in use, the clinic lead's section.
  var pctFormat = null;
  try { pctFormat = new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 0 }); } catch (e) { pctFormat = null; }
  function pct(v) {
    if (v == null || isNaN(v)) { return "—"; }
    return pctFormat ? pctFormat.format(Math.round(100 * v) / 100) : Math.round(100 * v) + "%";
  }
  function interval(ci) { return ci && ci.length === 2 ? " (" + pct(ci[0]) + "–" + pct(ci[1]) + ")" : ""; }

  function loadStatus() {
    fetch("/api/v1/status", { credentials: "same-origin" })
      .then(function (resp) { return resp.json(); })
      .then(function (st) {
        if (st.error) { return; }
        var drift = st.drift || {};
        $("drift-banner").hidden = drift.status !== "drift";
        text($("drift-text"), drift.status === "drift" ? drift.message : "");
        var cal = st.calibration || {};
        lastCal = cal;
        $("stale-banner").hidden = !cal.warning;
        text($("stale-text"), cal.warning || "");
        var n = cal.confirmed_cases || { normal: 0, pneumonia: 0 };
        var words;
        if (cal.source === "site" && cal.profile) {
          var pn = cal.profile.n || {};
          words = t(cal.profile.by ? "site_in_use_by" : "site_in_use", {
            time: localTime(cal.profile.created_at), count: num((pn.normal || 0) + (pn.pneumonia || 0)),
            by: cal.profile.by || "", balanced: pct(cal.thresholds.balanced),
            screening: pct(cal.thresholds.screening) });
        } else {
          words = t("model_in_use", { balanced: pct(cal.thresholds && cal.thresholds.balanced),
                                      screening: pct(cal.thresholds && cal.thresholds.screening) });
        }
        var override = cal.source === "site" && cal.profile && cal.profile.override;
        if (override) { words += " " + t("site_override", { by: override.by, reason: override.reason }); }
        var need = cal.needed_pneumonias || {};
        text($("site-state"), words + " " + t("confirmed_so_far", { normal: num(n.normal),
                                                                    pneumonia: num(n.pneumonia) }) +
             (need.balanced ? " " + t("needs_line", { balanced: num(need.balanced), screening: num(need.screening) }) : ""));
        text($("site-min"), cal.min_cases_per_class);
        $("site-revert").hidden = cal.source !== "site";
      })
      .catch(function () { /* keep what is shown */ });
  }

  var lastCal = null;  // the latest /api/v1/status calibration block
  function thresholdWords(source) {
    if (source !== "site") { return t("threshold_model"); }
    var p = lastCal && lastCal.source === "site" ? lastCal.profile : null;
    if (!p) { return t("threshold_site"); }
    var n = p.n || {};
    return t("threshold_site_on", { time: localTime(p.created_at),
                                    count: num((n.normal || 0) + (n.pneumonia || 0)) });
  }

  var proposal = null;
  var pct1Format = null;
  try { pct1Format = new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 }); } catch (e) { pct1Format = null; }
  function pct1(v) {
    if (v == null || isNaN(v)) { return "—"; }
    return pct1Format ? pct1Format.format(Math.round(1000 * v) / 1000) : (Math.round(1000 * v) / 10) + "%";
  }
  function guardLine(mode, g, level) {
    var key = { lowers: "guard_lowers", unchanged: "guard_unchanged", raises_passes: "guard_passes",
                raises_too_few: "guard_too_few", raises_below_rule: "guard_below" }[g.verdict];
    if (!key) { return capital(modeWords(mode)) + ": " + g.message; }
    return t(key, { mode: capital(modeWords(mode)), current: pct(g.current_threshold),
                    proposed: pct(g.proposed_threshold), has: num(g.pneumonias), missed: num(g.missed),
                    needed: num(g.needed), bound: pct1(g.lower_bound), rule: pct(g.rule), level: pct(level) });
  }
  function showGuard(p) {
    var g = p.guard || { modes: {}, blocked: true };
    var ul = $("site-guard-list");
    ul.textContent = "";
    Object.keys(g.modes).forEach(function (mode) {
      var li = document.createElement("li");
      li.textContent = guardLine(mode, g.modes[mode], g.level);
      li.className = g.modes[mode].allowed ? "guard-allowed" : "guard-blocked";
      li.setAttribute("data-verdict", g.modes[mode].verdict);
      ul.appendChild(li);
    });
    $("site-accept").disabled = !!g.blocked;
    $("site-blocked").hidden = !g.blocked;
    $("site-override").hidden = !g.blocked;
    text($("site-override-status"), "");
  }
  function range(v, ci) {
    return num(v, 1) + (ci && ci.length === 2 ? " (" + num(ci[0], 1) + "–" + num(ci[1], 1) + ")" : "");
  }
  function showPer100(p) {
    var per = p.per_100 || { modes: {} };
    var prev = p.prevalence || {};
    text($("site-per100-caption"), t("per100_caption", {
      share: pct1(per.prevalence), source: t(prev.entered != null ? "share_entered" : "share_confirmed") }));
    var rows = $("site-per100");
    rows.textContent = "";
    Object.keys(per.modes).forEach(function (mode) {
      [["current", t("now")], ["proposed", t("proposed")]].forEach(function (x) {
        var r = per.modes[mode][x[0]];
        if (!r) { return; }
        var tr = document.createElement("tr");
        cell(tr, t("row_name", { mode: capital(modeWords(mode)), which: x[1] }));
        cell(tr, range(r.referrals, r.referrals_ci));
        cell(tr, range(r.missed, r.missed_ci));
        rows.appendChild(tr);
      });
    });
    var share = prev.entered != null ? prev.entered : prev.used;
    $("site-share").value = share == null ? "" : String(Math.round(1000 * share) / 10);
    text($("site-share-status"), "");
  }
  function siteError(err) {
    var box = $("site-error");
    box.textContent = err ? err.message : "";
    box.hidden = !err;
    if (err) { box.focus(); }
  }

  function drawRoc(svg, roc, points) {
    while (svg.lastChild && svg.lastChild.nodeName !== "title") { svg.removeChild(svg.lastChild); }
    var ns = "http://www.w3.org/2000/svg";
    function el(name, attrs) {
      var e = document.createElementNS(ns, name);
      Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
      svg.appendChild(e); return e;
    }
    function X(fpr) { return 20 + 190 * fpr; }
    function Y(tpr) { return 200 - 190 * tpr; }
    el("rect", { x: 20, y: 10, width: 190, height: 190, fill: "none", stroke: "#999" });
    el("line", { x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), stroke: "#ccc", "stroke-dasharray": "4 3" });
    var d = roc.fpr.map(function (f, i) { return (i ? "L" : "M") + X(f).toFixed(1) + " " + Y(roc.tpr[i]).toFixed(1); });
    el("path", { d: d.join(" "), fill: "none", stroke: "#1a5fb4", "stroke-width": 2 });
    points.forEach(function (p) {
      var c = el("circle", { cx: X(1 - p.spec), cy: Y(p.sens), r: 5, fill: p.color });
      var tt = document.createElementNS(ns, "title"); tt.textContent = p.label; c.appendChild(tt);
    });
    var xl = el("text", { x: 115, y: 216, "text-anchor": "middle", "font-size": 10 });
    xl.textContent = t("one_minus_specificity");
    var yl = el("text", { x: 10, y: 105, "font-size": 10, transform: "rotate(-90 10 105)", "text-anchor": "middle" });
    yl.textContent = t("sensitivity_axis");
  }

  function showProposal(p) {
    proposal = p;
    var m = p.metrics;
    text($("site-summary"), t("summary", { count: num(p.n.normal + p.n.pneumonia),
         normal: num(p.n.normal), pneumonia: num(p.n.pneumonia),
         auc: num(m.auc, 3) + (m.auc_ci.length ? " (" + num(m.auc_ci[0], 3) + "–" + num(m.auc_ci[1], 3) + ")" : "") }));
    var rows = $("site-rows");
    rows.textContent = "";
    var points = [];
    ["balanced", "screening"].forEach(function (mode) {
      [[t("now"), m.current[mode], "#c01c28"], [t("proposed"), m.proposed[mode], "#26a269"]].forEach(function (x) {
        var r = x[1];
        if (!r) { return; }
        var tr = document.createElement("tr");
        cell(tr, t("row_name", { mode: capital(modeWords(mode)), which: x[0] }));
        cell(tr, pct(r.threshold));
        cell(tr, pct(r.sensitivity) + interval(r.sensitivity_ci));
        cell(tr, pct(r.specificity) + interval(r.specificity_ci));
        rows.appendChild(tr);
        points.push({ sens: r.sensitivity, spec: r.specificity, color: x[2],
                      label: t("point", { mode: capital(modeWords(mode)), which: x[0],
                                          sensitivity: pct(r.sensitivity), specificity: pct(r.specificity) }) });
      });
    });
    var cf = m.proposed_cross_fitted || {};
    text($("site-note"), t("expect", {
         bs: pct(cf.balanced && cf.balanced.sensitivity), bsp: pct(cf.balanced && cf.balanced.specificity),
         ss: pct(cf.screening && cf.screening.sensitivity), ssp: pct(cf.screening && cf.screening.specificity) }));
    drawRoc($("site-roc"), m.roc, points);
    showGuard(p);
    showPer100(p);
    $("site-proposal").hidden = false;
  }

  // A proposal; with the clinic's pneumonia share (0-1) when the lead entered one.
  function askProposal(prevalence, focusEl) {
    siteError(null);
    var body = prevalence == null ? {} : { prevalence: prevalence };
    return sendJSON("POST", "/api/v1/calibration/proposal", body).then(function (reply) {
      if (reply.error) { $("site-proposal").hidden = true; siteError(reply.error); return; }
      showProposal(reply);
      (focusEl || $("site-proposal-title")).focus();
    }).catch(function () { siteError({ message: t("unreachable") }); });
  }
  $("site-propose").addEventListener("click", function () {
    $("site-proposal").hidden = true;
    $("site-override-reason").value = "";
    $("site-override-by").value = "";
    askProposal(null);
  });
  $("site-share-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var v = parseFloat(String($("site-share").value).replace(",", "."));
    if (!(v > 0 && v < 100)) { text($("site-share-status"), t("share_bad")); $("site-share").focus(); return; }
    askProposal(v / 100, $("site-share"));
  });
  function acceptProposal(extra) {
    if (!proposal) { return; }
    var body = { proposal_id: proposal.id, by: $("site-by").value || null };
    Object.keys(extra || {}).forEach(function (k) { body[k] = extra[k]; });
    sendJSON("POST", "/api/v1/calibration", body)
      .then(function (reply) {
        if (reply.error) { siteError(reply.error); return; }
        $("site-proposal").hidden = true;
        proposal = null;
        loadStatus();
        $("site-state").focus();
      }).catch(function () { siteError({ message: t("unreachable") }); });
  }
  $("site-accept").addEventListener("click", function () {
    if (!proposal || (proposal.guard && proposal.guard.blocked)) { return; }
    acceptProposal(null);
  });
  $("site-override").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var reason = $("site-override-reason").value.trim();
    var by = $("site-override-by").value.trim();
    if (!reason || !by) {
      text($("site-override-status"), t("override_missing"));
      $(reason ? "site-override-by" : "site-override-reason").focus();
      return;
    }
    acceptProposal({ override: { reason: reason, by: by }, by: $("site-by").value || by });
  });
  $("site-revert").addEventListener("click", function () {
    var by = $("site-by").value;
    sendJSON("DELETE", "/api/v1/calibration" + (by ? "?by=" + encodeURIComponent(by) : ""))
      .then(function (body) { if (body.error) { siteError(body.error); } loadStatus(); })
      .catch(function () { siteError({ message: t("unreachable") }); });
  });

  // History
  var page = 1;
  text($("h-zone"), zone ? "(" + zone + ")" : "");
  function dayBound(value, end) {
    // A date picked here means that day in the laptop's time zone: send its UTC instant.
    var parts = value.split("-").map(Number);
    var d = new Date(parts[0], parts[1] - 1, parts[2] + (end ? 1 : 0));
    return isNaN(d.getTime()) ? value : d.toISOString();
  }
  function filters() {
    var q = [];
    if ($("h-from").value) { q.push("from=" + encodeURIComponent(dayBound($("h-from").value, false))); }
    if ($("h-to").value) { q.push("to=" + encodeURIComponent(dayBound($("h-to").value, true))); }
    return q;
  }
  function cell(tr, value, cls) {
    var td = document.createElement("td"); td.textContent = value;
    if (cls) { td.className = cls; }
    tr.appendChild(td); return td;
  }
  function estimate(r) {
    return r.calibrated ? pct(r.probability) : t("score", { value: num(Math.round(100 * r.probability)) });
  }
  function findingCell(r) {
    var td = document.createElement("td");
    var sel = document.createElement("select");
    sel.className = "finding-select";
    sel.setAttribute("aria-label", t("finding_for", { what: r.patient_ref || r.file_name || t("this_result"),
                                                     time: localTime(r.created_at) }));
    var none = document.createElement("option");
    none.value = ""; none.textContent = t("not_recorded"); none.disabled = !!r.finding;
    sel.appendChild(none);
    Object.keys(findingLabels).forEach(function (k) {
      var o = document.createElement("option"); o.value = k; o.textContent = findingLabels[k];
      sel.appendChild(o);
    });
    sel.value = r.finding || "";
    sel.title = savedText(r);
    sel.addEventListener("change", function () {
      if (!sel.value) { return; }
      confirmFinding(r.id, sel.value, r.finding_note, $("c-by").value || r.finding_by).then(function (body) {
        if (body.error) { sel.value = r.finding || ""; window.alert(body.error.message); return; }
        r = body; sel.title = savedText(body); none.disabled = true;
        if (currentId === body.id) { resetConfirm(body); }
        loadStatus();
      }).catch(function () { sel.value = r.finding || ""; });
    });
    td.appendChild(sel);
    return td;
  }

  function loadHistory(p) {
    page = p;
    var q = filters().concat(["page=" + p, "per_page=20"]);
    $("csv-link").href = "/api/v1/history.csv" + (filters().length ? "?" + filters().join("&") : "");
    fetch("/api/v1/history?" + q.join("&"), { credentials: "same-origin" })
      .then(function (resp) { return resp.json(); })
      .then(function (body) {
        var tb = $("history-body");
        tb.textContent = "";
        if (body.error) {
          var tr0 = document.createElement("tr"); cell(tr0, body.error.message).colSpan = 9;
          tb.appendChild(tr0); return;
        }
        if (!body.items.length) {
          var tr1 = document.createElement("tr"); cell(tr1, t("no_results"), "muted").colSpan = 9;
          tb.appendChild(tr1);
        }
        body.items.forEach(function (r) {
          var tr = document.createElement("tr");
          var td0 = cell(tr, "");
          var tm = document.createElement("time"); showTime(tm, r.created_at); td0.appendChild(tm);
          cell(tr, r.patient_ref || "\u2014");
          cell(tr, r.source === "dicom" ? t("by_dicom", { name: r.file_name || "\u2014" }) : (r.file_name || "\u2014"),
               "file");
          var lab = cell(tr, "", "outcome-" + (r.outcome || "review"));
          var ic = document.createElement("span");
          ic.className = "verdict-icon"; ic.setAttribute("aria-hidden", "true");
          ic.textContent = r.icon || "?";
          lab.appendChild(ic);
          lab.appendChild(document.createTextNode(r.short || t("outcome_" + r.outcome)));
          cell(tr, estimate(r));
          cell(tr, modeWords(r.mode));
          cell(tr, (r.warnings || []).map(function (w) { return w.code; }).join(", "));
          tr.appendChild(findingCell(r));
          var td = cell(tr, "");
          var a = document.createElement("a");
          a.href = "/report/" + encodeURIComponent(r.id); a.textContent = t("report");
          td.appendChild(a);
          tb.appendChild(tr);
        });
        text($("h-page"), t("page_of", { page: num(body.page), pages: num(Math.max(1, body.pages)),
                                         total: num(body.total) }));
        $("h-prev").disabled = body.page <= 1;
        $("h-next").disabled = body.page >= body.pages;
      })
      .catch(function () { /* keep the old table */ });
  }
  $("h-prev").addEventListener("click", function () { loadHistory(Math.max(1, page - 1)); });
  $("h-next").addEventListener("click", function () { loadHistory(page + 1); });
  $("history-filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadHistory(1); });
  // "Stop the app" (POST /api/v1/shutdown): for a computer without a console window. It asks
  // first; once the server has agreed, the page says so and stops calling it.
  var stopped = false;
  function showStopped() {
    stopped = true;
    Array.prototype.forEach.call($("main").children, function (el) {
      if (el.id !== "stopped-banner") { el.hidden = true; }
    });
    $("stop-app").hidden = true;
    Array.prototype.forEach.call(document.querySelectorAll(".lang-form"), function (el) {
      el.hidden = true;  // a new language needs the app
    });
    $("stopped-banner").hidden = false;
    $("stopped-banner").focus();
  }
  function showStopAsk(open) {
    $("stop-confirm").hidden = !open;
    $("stop-ask").setAttribute("aria-expanded", open ? "true" : "false");
    text($("stop-status"), "");
    $(open ? "stop-yes" : "stop-ask").focus();
  }
  if ($("stop-ask")) {
    $("stop-ask").addEventListener("click", function () { showStopAsk($("stop-confirm").hidden); });
    $("stop-no").addEventListener("click", function () { showStopAsk(false); });
    $("stop-yes").addEventListener("click", function () {
      $("stop-yes").disabled = true;
      sendJSON("POST", "/api/v1/shutdown", {}).then(function (body) {
        if (body.error) { text($("stop-status"), body.error.message); return; }
        showStopped();
      }).catch(function () {
        text($("stop-status"), t("unreachable"));
      }).then(function () { $("stop-yes").disabled = false; });
    });
  }

  loadHistory(1);
  loadStatus();
  // Images sent by the X-ray unit (DICOM receiver) appear without reloading the page.
  window.setInterval(function () {
    if (stopped) { return; }
    var busy = document.activeElement && document.activeElement.closest &&
               document.activeElement.closest("#history-body");  // never under the user's hand
    if (page === 1 && !busy && document.visibilityState === "visible") { loadHistory(1); loadStatus(); }
  }, 15000);
})();
