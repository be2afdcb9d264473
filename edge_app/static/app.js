/* pneumo clinic app page logic: upload, result, history. No dependencies, no inline code. */
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }
  function text(el, value) { if (el) { el.textContent = value == null ? "" : String(value); } }
  function pct(p) { return (100 * p).toFixed(1) + "%"; }

  // Print buttons (page and report).
  document.addEventListener("click", function (ev) {
    var t = ev.target.closest ? ev.target.closest("[data-action=print]") : null;
    if (t) { ev.preventDefault(); window.print(); }
  });

  var form = $("predict-form");
  if (!form) { return; }  // report page: nothing else to wire

  var meta = document.querySelector("meta[name=csrf-token]");
  var csrf = meta ? meta.getAttribute("content") : "";
  var input = $("image-input");
  var dropzone = $("dropzone");
  var submit = $("submit");
  var chosen = null;

  function setFile(file) {
    chosen = file || null;
    text($("file-name"), chosen ? chosen.name + " (" + Math.round(chosen.size / 1024) + " kB)"
                                : "No file chosen.");
    submit.disabled = !chosen;
  }

  input.addEventListener("change", function () { setFile(input.files[0]); });
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

  function showError(err) {
    var box = $("error");
    box.textContent = "";
    var p = document.createElement("p");
    p.textContent = err.message || "The request failed.";
    box.appendChild(p);
    if (err.reasons && err.reasons.length > 1) {
      var ul = document.createElement("ul");
      err.reasons.forEach(function (r) {
        var li = document.createElement("li"); li.textContent = r.message; ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    box.hidden = false;
  }

  function showResult(r) {
    $("error").hidden = true;
    $("result-empty").hidden = true;
    var verdict = $("result-text");
    text(verdict, r.message);
    verdict.className = "verdict " + (r.label === "PNEUMONIA" ? "positive" : "negative");
    var borderline = r.confidence === "borderline";
    $("r-borderline").hidden = !borderline;
    text($("r-confidence"), borderline ? "Borderline (between the two operating points)"
                                       : "Clear");
    $("meter-bar").style.width = (100 * r.probability).toFixed(1) + "%";
    $("meter-threshold").style.left = (100 * r.threshold).toFixed(1) + "%";
    text($("r-prob"), pct(r.probability) + " (" + r.label + ")");
    text($("r-mode"), r.mode + " / " + pct(r.threshold));
    text($("r-patient"), r.patient_ref || "—");
    text($("r-time"), r.created_at);
    text($("r-input"), r.input.format + " " + r.input.width + " × " + r.input.height + " px");
    text($("r-model"), r.model_name + " " + r.model_version);
    var ul = $("r-warnings");
    ul.textContent = "";
    (r.quality || []).forEach(function (w) {
      var li = document.createElement("li"); li.textContent = w.message; ul.appendChild(li);
    });
    var img = $("r-image");
    if (r.preview) { img.src = r.preview; img.hidden = false; } else { img.hidden = true; }
    $("r-heatmap").src = r.heatmap_url;
    $("r-report").href = "/report/" + encodeURIComponent(r.id);
    $("result").hidden = false;
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (!chosen) { return; }
    var data = new FormData();
    data.append("image", chosen, chosen.name);
    data.append("mode", $("mode").value);
    data.append("patient_ref", $("patient-ref").value);
    data.append("preview", "1");
    submit.disabled = true;
    $("busy").hidden = false;
    fetch("/api/v1/predict", {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
    }).then(function (resp) {
      return resp.json().catch(function () {
        return { error: { message: "The server answered " + resp.status + "." } };
      });
    }).then(function (body) {
      if (body.error) { showError(body.error); } else { showResult(body); loadHistory(1); }
    }).catch(function () {
      showError({ message: "Could not reach the app. Is it still running?" });
    }).then(function () {
      submit.disabled = !chosen;
      $("busy").hidden = true;
    });
  });

  // History
  var page = 1;
  function filters() {
    var q = [];
    if ($("h-from").value) { q.push("from=" + encodeURIComponent($("h-from").value)); }
    if ($("h-to").value) { q.push("to=" + encodeURIComponent($("h-to").value)); }
    return q;
  }
  function cell(tr, value, cls) {
    var td = document.createElement("td"); td.textContent = value;
    if (cls) { td.className = cls; }
    tr.appendChild(td); return td;
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
          var tr0 = document.createElement("tr"); cell(tr0, body.error.message).colSpan = 7;
          tb.appendChild(tr0); return;
        }
        if (!body.items.length) {
          var tr1 = document.createElement("tr"); cell(tr1, "No results yet.", "muted").colSpan = 7;
          tb.appendChild(tr1);
        }
        body.items.forEach(function (r) {
          var tr = document.createElement("tr");
          cell(tr, r.created_at.replace("T", " ").replace(/\.\d+Z$/, ""));
          cell(tr, r.patient_ref || "—");
          cell(tr, r.label + (r.confidence === "borderline" ? " (borderline)" : ""),
               "label-" + r.label);
          cell(tr, pct(r.probability));
          cell(tr, r.mode);
          cell(tr, (r.warnings || []).map(function (w) { return w.code; }).join(", "));
          var td = cell(tr, "");
          var a = document.createElement("a");
          a.href = "/report/" + encodeURIComponent(r.id); a.textContent = "Report";
          td.appendChild(a);
          tb.appendChild(tr);
        });
        text($("h-page"), "Page " + body.page + " of " + Math.max(1, body.pages) +
             " (" + body.total + " results)");
        $("h-prev").disabled = body.page <= 1;
        $("h-next").disabled = body.page >= body.pages;
      })
      .catch(function () { /* keep the old table */ });
  }
  $("h-prev").addEventListener("click", function () { loadHistory(Math.max(1, page - 1)); });
  $("h-next").addEventListener("click", function () { loadHistory(page + 1); });
  $("history-filter").addEventListener("submit", function (ev) { ev.preventDefault(); loadHistory(1); });
  loadHistory(1);
})();
