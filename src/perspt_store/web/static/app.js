// perspt-store dashboard: live updates (server-sent events) and task-graph pan/zoom.
// Hand-written, no library. Every value from the server is set with textContent or
// replaced as a whole region parsed by DOMParser, never concatenated into HTML.
"use strict";

(function () {
  // --- how old the data is ---------------------------------------------------------------
  function tickFreshness() {
    const el = document.getElementById("freshness");
    if (!el || el.dataset.snapshot !== "yes" || !el.dataset.snapshotTime) return;
    const taken = Date.parse(el.dataset.snapshotTime.endsWith("Z") || /[+-]\d\d:\d\d$/.test(el.dataset.snapshotTime)
      ? el.dataset.snapshotTime : el.dataset.snapshotTime + "Z");
    if (isNaN(taken)) return;
    const seconds = Math.max(0, (Date.now() - taken) / 1000);
    el.textContent = "agent writing · snapshot from " + (seconds < 60 ? seconds.toFixed(0) + " s" : Math.round(seconds / 60) + " min") + " ago";
  }

  function setFreshness(fresh) {
    const el = document.getElementById("freshness");
    if (!el || !fresh) return;
    el.dataset.snapshot = fresh.snapshot ? "yes" : "no";
    el.dataset.snapshotTime = fresh.snapshot_time || "";
    el.classList.toggle("snapshot", !!fresh.snapshot);
    if (!fresh.snapshot) el.textContent = "live file";
    tickFreshness();
  }

  // --- live regions --------------------------------------------------------------------------
  let refreshing = null;
  async function refreshRegions() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const response = await fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
        if (!response.ok) return;
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        document.querySelectorAll("[data-live]").forEach((old) => {
          const fresh = old.id ? doc.getElementById(old.id) : null;
          if (fresh) old.replaceWith(document.adoptNode(fresh));
        });
        const freshness = doc.getElementById("freshness");
        const mine = document.getElementById("freshness");
        if (freshness && mine) { mine.dataset.snapshot = freshness.dataset.snapshot; mine.dataset.snapshotTime = freshness.dataset.snapshotTime; }
        initDag(true);
        fillVerdicts();
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  function markNodes(nodes) {
    // Immediate feedback before the regions are re-read: flag the rows of changed nodes.
    Object.keys(nodes || {}).forEach((id) => {
      document.querySelectorAll("tr[data-node]").forEach((row) => {
        if (row.dataset.node === id) row.classList.add("changed");
      });
    });
  }

  function connect() {
    const url = document.body.dataset.stream;
    if (!url || !window.EventSource) return;
    const live = document.getElementById("live");
    const source = new EventSource(url);
    source.addEventListener("open", () => live && live.classList.add("on"));
    source.addEventListener("error", () => live && live.classList.remove("on"));
    source.addEventListener("hello", (event) => setFreshness(JSON.parse(event.data).freshness));
    source.addEventListener("fresh", (event) => setFreshness(JSON.parse(event.data).freshness));
    source.addEventListener("change", (event) => {
      const change = JSON.parse(event.data);
      setFreshness(change.freshness);
      markNodes(change.nodes);
      if (live) { live.classList.add("flash"); setTimeout(() => live.classList.remove("flash"), 600); }
      refreshRegions();
    });
  }

  // --- the verification badge: verify_session recomputes the whole log, so it comes after -----
  function fillVerdicts() {
    document.querySelectorAll("[data-verify]").forEach(async (badge) => {
      if (!badge.classList.contains("kind-unknown")) return;
      const response = await fetch(badge.dataset.verify, { credentials: "same-origin" });
      if (!response.ok) return;
      const verdict = await response.json();
      badge.classList.remove("kind-unknown");
      badge.classList.add(verdict.ok ? "kind-completed" : "kind-failed");
      badge.textContent = verdict.ok
        ? "✓ log verified (" + verdict.log_size + " commits)"
        : "✗ verification: " + verdict.problems.length + " problem(s)";
    });
  }

  // --- task graph: pan and zoom by rewriting the viewBox ----------------------------------------
  let view = null; // {x, y, w, h} kept across live refreshes
  function initDag(keep) {
    const svg = document.getElementById("dag-svg");
    const frame = document.getElementById("dag-frame");
    if (!svg || !frame) return;
    const full = { x: 0, y: 0, w: +svg.dataset.width, h: +svg.dataset.height };
    if (!keep || !view) view = Object.assign({}, full);
    const apply = () => svg.setAttribute("viewBox", [view.x, view.y, view.w, view.h].join(" "));
    apply();
    const zoom = (factor, cx, cy) => {
      const w = Math.min(Math.max(view.w * factor, 80), full.w * 4);
      const ratio = w / view.w;
      const h = view.h * ratio;
      view.x = cx - (cx - view.x) * ratio;
      view.y = cy - (cy - view.y) * ratio;
      view.w = w; view.h = h;
      apply();
    };
    const toSvg = (event) => {
      const box = svg.getBoundingClientRect();
      const scale = Math.max(view.w / box.width, view.h / box.height);
      const ox = (box.width * scale - view.w) / 2, oy = (box.height * scale - view.h) / 2;
      return { x: view.x - ox + (event.clientX - box.left) * scale, y: view.y - oy + (event.clientY - box.top) * scale, scale };
    };
    frame.onwheel = (event) => {
      event.preventDefault();
      const p = toSvg(event);
      zoom(event.deltaY > 0 ? 1.15 : 1 / 1.15, p.x, p.y);
    };
    let drag = null;
    frame.onpointerdown = (event) => {
      if (event.button !== 0) return;
      drag = { x: event.clientX, y: event.clientY, moved: false, vx: view.x, vy: view.y, scale: toSvg(event).scale };
    };
    frame.onpointermove = (event) => {
      if (!drag) return;
      const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!drag.moved) { drag.moved = true; frame.setPointerCapture(event.pointerId); frame.classList.add("dragging"); }
      view.x = drag.vx - dx * drag.scale; view.y = drag.vy - dy * drag.scale;
      apply();
    };
    frame.onpointerup = () => { frame.classList.remove("dragging"); setTimeout(() => { drag = null; }, 0); };
    frame.onclick = (event) => { if (drag && drag.moved) event.preventDefault(); };
    document.querySelectorAll("[data-zoom]").forEach((button) => {
      button.onclick = () => {
        const kind = button.dataset.zoom;
        if (kind === "fit") { view = Object.assign({}, full); apply(); return; }
        zoom(kind === "in" ? 1 / 1.4 : 1.4, view.x + view.w / 2, view.y + view.h / 2);
      };
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    initDag(false);
    fillVerdicts();
    connect();
    tickFreshness();
    setInterval(tickFreshness, 1000);
  });
})();
