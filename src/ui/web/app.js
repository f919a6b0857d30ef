// re6mesh live page: a small force-directed SVG graph fed by server-sent events.
// No libraries, no external resources.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const meta = document.querySelector('meta[name="mesh-secret"]');
  const secret = meta ? meta.getAttribute("content") : null;
  const svg = $("graph");
  let graph = null;          // last graph drawn
  let selected = null;       // selected node prefix
  const pos = new Map();     // prefix -> {x, y, vx, vy}
  let alpha = 0;             // layout "temperature"
  let animating = false;
  // #select=n3 (a name or a prefix) opens that node's details
  const want = decodeURIComponent((location.hash.match(/select=([^&]+)/) || [])[1] || "");

  function el(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "onclick") e.onclick = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    for (const c of kids) e.append(c);
    return e;
  }
  function hash(s) {
    let x = 2166136261;
    for (let i = 0; i < s.length; i++) { x ^= s.charCodeAt(i); x = Math.imul(x, 16777619); }
    return (x >>> 0) / 4294967296;
  }
  function shortPrefix(p) {
    // fd12:3456:789a:1::/64 -> …789a:1::/64 (full prefix in the side panel)
    const parts = p.split(":");
    return parts.length > 4 ? "…" + parts.slice(2).join(":") : p;
  }
  function label(n) { return n.name || shortPrefix(n.prefix); }

  // ---- layout ----------------------------------------------------------------------------
  function springs(g) {
    const s = g.edges.map((e) => [e.a, e.b, 1]);
    const seen = new Set(g.edges.map((e) => e.a + "|" + e.b));
    for (const l of g.links || []) {
      const k = l.a < l.b ? l.a + "|" + l.b : l.b + "|" + l.a;
      if (!seen.has(k)) s.push([l.a, l.b, 0.5]);
    }
    return s;
  }
  function place(g, salt) {
    const n = g.nodes.length;
    g.nodes.forEach((node, i) => {
      if (pos.has(node.prefix)) return;
      const t = 2 * Math.PI * (i / Math.max(n, 1)) + hash(node.prefix + (salt || ""));
      const r = (120 + 60 * Math.sqrt(n)) * (0.5 + hash((salt || "") + node.prefix));
      pos.set(node.prefix, { x: r * Math.cos(t), y: r * Math.sin(t), vx: 0, vy: 0 });
    });
    for (const k of [...pos.keys()]) if (!g.nodes.some((x) => x.prefix === k)) pos.delete(k);
  }
  function crossings(g) {
    const s = springs(g).map(([a, b]) => [pos.get(a), pos.get(b)]).filter(([p, q]) => p && q);
    const ccw = (a, b, c) => (c.y - a.y) * (b.x - a.x) - (b.y - a.y) * (c.x - a.x);
    let k = 0;
    for (let i = 0; i < s.length; i++) {
      for (let j = i + 1; j < s.length; j++) {
        const [a, b] = s[i], [c, d] = s[j];
        if (a === c || a === d || b === c || b === d) continue;
        if (ccw(a, b, c) * ccw(a, b, d) < 0 && ccw(c, d, a) * ccw(c, d, b) < 0) k++;
      }
    }
    return k;
  }
  // First layout: a few deterministic starts, keep the one with the fewest crossing lines.
  function firstLayout(g) {
    let best = null, bestK = Infinity;
    for (let t = 0; t < 12 && bestK > 0; t++) {
      pos.clear();
      place(g, "#" + t);
      settle(g, 300);
      const k = crossings(g);
      if (k < bestK) { bestK = k; best = new Map([...pos].map(([p, v]) => [p, { ...v }])); }
    }
    pos.clear();
    for (const [p, v] of best) pos.set(p, v);
  }
  function step(g, a) {
    const nodes = g.nodes.map((n) => pos.get(n.prefix));
    const L = 150, K = 30000;
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        const p = nodes[i], q = nodes[j];
        let dx = p.x - q.x, dy = p.y - q.y;
        let d2 = dx * dx + dy * dy;
        if (d2 < 1) { dx = Math.random() - 0.5; dy = Math.random() - 0.5; d2 = 1; }
        const f = Math.min(K / d2, 50) * a;
        const d = Math.sqrt(d2);
        p.vx += (dx / d) * f; p.vy += (dy / d) * f;
        q.vx -= (dx / d) * f; q.vy -= (dy / d) * f;
      }
    }
    for (const [a1, b1, w] of springs(g)) {
      const p = pos.get(a1), q = pos.get(b1);
      if (!p || !q) continue;
      const dx = q.x - p.x, dy = q.y - p.y;
      const d = Math.sqrt(dx * dx + dy * dy) || 1;
      const f = (d - L) * 0.05 * w * a;
      p.vx += (dx / d) * f; p.vy += (dy / d) * f;
      q.vx -= (dx / d) * f; q.vy -= (dy / d) * f;
    }
    for (const p of nodes) {
      if (p.fixed) { p.vx = 0; p.vy = 0; continue; }     // placed by hand
      p.vx -= p.x * 0.01 * a; p.vy -= p.y * 0.01 * a;   // gravity to the centre
      p.vx *= 0.6; p.vy *= 0.6;
      p.x += Math.max(-30, Math.min(30, p.vx));
      p.y += Math.max(-30, Math.min(30, p.vy));
    }
  }
  function settle(g, iterations) {
    for (let i = 0; i < iterations; i++) step(g, 1 - i / (iterations + 1));
  }
  function animate() {
    if (animating) return;
    animating = true;
    const tick = () => {
      if (!graph || alpha < 0.02) { animating = false; return; }
      step(graph, alpha);
      alpha *= 0.96;
      positionAll();
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  // ---- drawing ---------------------------------------------------------------------------
  function fit() {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const p of pos.values()) {
      x0 = Math.min(x0, p.x); y0 = Math.min(y0, p.y); x1 = Math.max(x1, p.x); y1 = Math.max(y1, p.y);
    }
    if (!isFinite(x0)) { x0 = -100; y0 = -100; x1 = 100; y1 = 100; }
    const mx = 110, top = 50, bottom = 100;
    svg.setAttribute("viewBox", `${x0 - mx} ${y0 - top} ${x1 - x0 + 2 * mx} ${y1 - y0 + top + bottom}`);
  }
  // ---- dragging (a node stays where it is dropped); a click without moving selects ------
  let drag = null;   // {prefix, x0, y0, moved}
  function toWorld(ev) {
    const pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const m = svg.getScreenCTM();
    return m ? pt.matrixTransform(m.inverse()) : { x: 0, y: 0 };
  }
  function startDrag(ev, prefix) {
    ev.preventDefault();
    drag = { prefix, x0: ev.clientX, y0: ev.clientY, moved: false };
  }
  window.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    if (!drag.moved && Math.hypot(ev.clientX - drag.x0, ev.clientY - drag.y0) < 4) return;
    drag.moved = true;
    const p = pos.get(drag.prefix);
    if (!p) return;
    const w = toWorld(ev);
    p.x = w.x; p.y = w.y; p.fixed = true;
    positionAll(true);
  });
  window.addEventListener("pointerup", () => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (!d.moved) { selected = d.prefix; draw(graph); details(); return; }
    fit();
    alpha = Math.max(alpha, 0.3);
    animate();
  });

  function positionAll(keepView) {
    for (const e of svg.querySelectorAll("[data-a]")) {
      const p = pos.get(e.dataset.a), q = pos.get(e.dataset.b);
      if (!p || !q) continue;
      if (e.tagName === "line") {
        e.setAttribute("x1", p.x); e.setAttribute("y1", p.y);
        e.setAttribute("x2", q.x); e.setAttribute("y2", q.y);
      } else {
        e.setAttribute("x", (p.x + q.x) / 2); e.setAttribute("y", (p.y + q.y) / 2 - 4);
      }
    }
    for (const g of svg.querySelectorAll("g.node")) {
      const p = pos.get(g.dataset.prefix);
      if (p) g.setAttribute("transform", `translate(${p.x.toFixed(1)},${p.y.toFixed(1)})`);
    }
    if (!keepView && !drag) fit();
  }
  function draw(g) {
    const links = $("links"), edges = $("edges"), labels = $("labels"), nodes = $("nodes");
    links.replaceChildren(); edges.replaceChildren(); labels.replaceChildren(); nodes.replaceChildren();
    for (const l of g.links || []) {
      links.append(el("line", { class: l.up ? "link" : "link cut", "data-a": l.a, "data-b": l.b }));
    }
    // a node that sends its internet traffic through an exit: a dotted line to that exit
    for (const n of g.nodes) {
      if (n.uses_exit && g.nodes.some((x) => x.prefix === n.uses_exit)) {
        links.append(el("line", { class: "uses-exit", "data-a": n.prefix, "data-b": n.uses_exit }));
      }
    }
    for (const e of g.edges) {
      edges.append(el("line", { class: "edge", "data-a": e.a, "data-b": e.b }));
      labels.append(el("text", { class: "rtt", "data-a": e.a, "data-b": e.b }, e.rtt_ms.toFixed(1) + " ms"));
    }
    for (const n of g.nodes) {
      const cls = ["node", "state-" + n.state];
      if (n.revoked) cls.push("revoked");
      if (n.exit) cls.push("exit");
      if (n.prefix === selected) cls.push("selected");
      const grp = el("g", { class: cls.join(" "), "data-prefix": n.prefix, tabindex: "0" });
      const extra = (n.exit ? " · exit" : "") + ((n.subnets || []).length ? " · routes " + n.subnets.join(", ") : "");
      grp.append(el("title", {}, `${n.name || ""} ${n.prefix} — ${n.state}${extra}`));
      grp.append(el("circle", { r: n.observed ? 24 : 18 }));
      grp.append(el("text", { class: "name" }, n.name ? n.name : ""));
      if (n.exit) grp.append(el("text", { class: "tag", y: n.observed ? -30 : -24 }, "exit"));
      else if ((n.subnets || []).length) grp.append(el("text", { class: "tag", y: n.observed ? -30 : -24 }, "+" + n.subnets.length + " subnet" + (n.subnets.length > 1 ? "s" : "")));
      grp.append(el("text", { class: "prefix", y: 40 }, shortPrefix(n.prefix)));
      if (n.params_version) grp.append(el("text", { class: "pv", y: 53 }, "params v" + n.params_version));
      grp.addEventListener("pointerdown", (ev) => startDrag(ev, n.prefix));
      nodes.append(grp);
    }
    svg.dataset.version = g.version;
    svg.dataset.nodes = g.nodes.length;
    svg.dataset.edges = g.edges.length;
    positionAll();
  }

  // ---- side panel ------------------------------------------------------------------------
  function message(text, error) {
    const m = $("message");
    m.hidden = false; m.textContent = text; m.className = error ? "error" : "";
  }
  async function act(name, body) {
    try {
      const r = await fetch("/api/v1/actions/" + name, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Mesh-Secret": secret },
        body: JSON.stringify(body || {}),
      });
      const j = await r.json().catch(() => ({}));
      message(j.message || j.error || ("HTTP " + r.status), !r.ok);
    } catch (e) {
      message("The action could not be sent: " + e, true);
    }
  }
  function info(g) {
    const box = $("info");
    box.replaceChildren();
    for (const line of g.info || []) {
      box.append(line.includes("\n") ? h("pre", {}, line) : h("p", {}, line));
    }
    const up = g.nodes.filter((n) => n.state === "up").length;
    $("summary").textContent =
      `${g.nodes.length} nodes · ${g.edges.length} tunnels · ${up} up · snapshot ${g.version}`;
    for (const e of document.querySelectorAll(".demo-only")) e.hidden = !(g.links && g.links.length);
  }
  function details() {
    const box = $("details");
    const n = graph && graph.nodes.find((x) => x.prefix === selected);
    if (!n) { box.replaceChildren(h("p", { class: "muted" }, "Click a node to see its Babel routes; drag one to move it.")); return; }
    const name = (p) => { const m = graph.nodes.find((x) => x.prefix === p); return m && m.name ? m.name : shortPrefix(p); };
    const dl = h("dl", {},
      h("dt", {}, "prefix"), h("dd", {}, n.prefix),
      h("dt", {}, "address"), h("dd", {}, n.address + (n.ipv4 ? ", " + n.ipv4 : "")),
      h("dt", {}, "state"), h("dd", {}, n.state + (n.revoked ? " (revoked)" : "")),
      h("dt", {}, "parameters"), h("dd", {}, n.params_version ? "version " + n.params_version : "unknown"),
      h("dt", {}, "internet"), h("dd", {}, n.exit ? "an exit: the mesh's way out" : n.uses_exit ? "through the exit " + name(n.uses_exit) : n.observed ? "direct (no exit in use)" : "unknown"),
      h("dt", {}, "subnet routes"), h("dd", {}, (n.subnets || []).join(", ") || "none"),
      h("dt", {}, "tunnels"), h("dd", {}, graph.edges.filter((e) => e.a === n.prefix || e.b === n.prefix)
        .map((e) => name(e.a === n.prefix ? e.b : e.a) + " " + e.rtt_ms.toFixed(1) + " ms").join(", ") || "none"));
    const parts = [h("h2", {}, n.name ? `${n.name}` : shortPrefix(n.prefix)), dl];
    if (secret) {
      const row = h("p", {});
      if (!n.revoked) {
        row.append(h("button", { class: "action danger", onclick: () => act("revoke", { node: n.prefix }) }, "Revoke this node"));
      }
      parts.push(row);
      const mine = (graph.links || []).filter((l) => l.a === n.prefix || l.b === n.prefix);
      if (mine.length) {
        parts.push(h("h3", {}, "Underlay links"));
        const ul = h("ul", { class: "links" });
        for (const l of mine) {
          const other = l.a === n.prefix ? l.b : l.a;
          ul.append(h("li", {}, h("span", {}, `${name(n.prefix)} — ${name(other)}`),
            l.up ? h("button", { class: "action danger", onclick: () => act("cut", { a: l.a, b: l.b }) }, "Cut")
                 : h("button", { class: "action", onclick: () => act("heal", { a: l.a, b: l.b }) }, "Heal")));
        }
        parts.push(ul);
      }
    }
    parts.push(h("h3", {}, `Babel routes (${n.routes.length})`));
    if (!n.observed) {
      parts.push(h("p", { class: "muted" }, "Only this server's own node is observed directly; its routes are not known here."));
    } else {
      const byAddr = (a) => { const m = graph.nodes.find((x) => x.address === a); return m ? label(m) : a; };
      const t = h("table", {}, h("tr", {}, ...["destination", "next hop", "metric", "selected"].map((x) => h("th", {}, x))));
      const rows = [...n.routes].sort((x, y) =>
        (y.local - x.local) || name(x.prefix).localeCompare(name(y.prefix), undefined, { numeric: true })
        || (y.selected - x.selected) || (x.metric - y.metric));
      for (const r of rows) {
        const hop = h("td", { class: "mono", title: r.next_hop + " via " + r.iface }, r.local ? "(this node)" : byAddr(r.next_hop));
        t.append(h("tr", { class: r.selected ? "selected" : "unselected", title: r.prefix },
          h("td", { class: "mono" }, name(r.prefix)),
          hop,
          h("td", {}, r.metric === 65535 ? "∞" : String(r.metric)),
          h("td", {}, r.selected ? "✔" : "")));
      }
      parts.push(t);
    }
    box.replaceChildren(...parts);
  }

  // ---- updates ---------------------------------------------------------------------------
  function sameShape(a, b) {
    if (!a || !b) return false;
    const k = (g) => g.nodes.map((n) => n.prefix + (n.uses_exit || "")).join() + "#" + g.edges.map((e) => e.a + e.b).join()
      + "#" + (g.links || []).map((l) => l.a + l.b + l.up).join();
    return k(a) === k(b);
  }
  function show(g) {
    if (graph && g.version <= graph.version) return;
    if (want && !selected) {
      const n = g.nodes.find((x) => x.name === want || x.prefix === want);
      if (n) selected = n.prefix;
    }
    const reshape = !sameShape(graph, g);
    const first = !graph;
    graph = g;
    if (first) firstLayout(g); else place(g);
    if (reshape) { alpha = first ? 0.05 : 0.6; }
    draw(g);
    info(g);
    details();
    if (reshape) animate();
  }
  function connect() {
    const badge = $("live");
    const es = new EventSource("/api/v1/events");
    const live = () => { badge.textContent = "live"; badge.className = "badge live"; };
    es.onopen = live;
    es.onmessage = (ev) => {
      live();
      // how many snapshots the stream delivered: lets a test tell them from a reload
      const svg = $("graph");
      svg.dataset.streamed = String(Number(svg.dataset.streamed || 0) + 1);
      try { show(JSON.parse(ev.data)); } catch (e) { /* ignore a bad frame */ }
    };
    es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge lost"; };
  }
  if (secret) {
    const b = $("rotate");
    b.hidden = false;
    b.onclick = () => act("rotate", {});
  }
  // The server embeds its latest graph in the page: draw it at once, then follow the stream.
  let initial = null;
  try { initial = JSON.parse($("initial-graph").textContent); } catch (e) { initial = null; }
  if (initial) show(initial);
  else fetch("/api/v1/graph").then((r) => r.ok ? r.json() : null).then((g) => { if (g) show(g); }).catch(() => {});
  connect();
  window.addEventListener("resize", fit);
})();
