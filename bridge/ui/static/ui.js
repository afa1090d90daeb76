// meshota admin UI: the only script (no inline scripts; CSP forbids them). Plain JS, no build.
// 1) confirm before dangerous forms; 2) artifact upload with progress (XHR upload events);
// 3) bounded polling of a deployment's progress (every 2 s, at most 30 minutes, stops when done).
"use strict";
(function () {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });

  var upload = document.getElementById("upload");
  if (upload) {
    upload.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var bar = document.getElementById("upload-progress");
      var status = document.getElementById("upload-status");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", upload.getAttribute("action"));
      xhr.setRequestHeader("X-CSRF-Token", upload.getAttribute("data-csrf"));
      bar.hidden = false;
      bar.value = 0;
      status.textContent = "Uploading…";
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); }
      });
      xhr.addEventListener("load", function () {
        if (xhr.status === 201) {
          bar.value = 100;
          window.location.assign("/ui/artifacts?msg=" + encodeURIComponent("Artifact uploaded."));
          return;
        }
        var message = "HTTP " + xhr.status;
        try { message = JSON.parse(xhr.responseText).error || message; } catch (e) { /* not JSON */ }
        status.textContent = "Upload refused: " + message;  // textContent: never parsed as HTML
      });
      xhr.addEventListener("error", function () { status.textContent = "Upload failed: network error"; });
      // the API wants the 'artifact' part last (it streams the file to disk as it arrives)
      var data = new FormData();
      data.append("description", document.getElementById("artifact-desc").value);
      data.append("artifact", document.getElementById("artifact-file").files[0]);
      xhr.send(data);
    });
  }

  var progress = document.getElementById("progress");
  if (progress && progress.getAttribute("data-done") !== "yes") {
    var url = progress.getAttribute("data-poll");
    var left = 900;
    var timer = window.setInterval(function () {
      left -= 1;
      if (left <= 0) { window.clearInterval(timer); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          // the server rendered and escaped this fragment; parse it inertly, then swap it in
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("progress");
          var current = document.getElementById("progress");
          if (fresh && current) {
            current.replaceWith(document.importNode(fresh, true));
            if (fresh.getAttribute("data-done") === "yes") { window.clearInterval(timer); }
          }
        })
        .catch(function () { /* next tick tries again */ });
    }, 2000);
  }
})();
