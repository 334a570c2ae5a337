// The fleet page (/fleet): every worker of the fleet, polled once a second from
// /api/fleet (which asks each worker's own endpoint). Nothing else is fetched.
"use strict";

const FLEET_POLL_MS = 1000;

function fq(sel) { return document.querySelector(sel); }
function fint(v) { return v == null ? "-" : Number(v).toLocaleString("en-US"); }
function fdec(v) {
  return v == null ? "-" : Number(v).toLocaleString("en-US",
    {minimumFractionDigits: 1, maximumFractionDigits: 1});
}
function ftime(ms) { return ms == null ? "-" : new Date(ms).toISOString(); }
function fset(name, text) {
  const node = document.querySelector(`[data-field="${name}"]`);
  if (node) node.textContent = text;
}

// Fill <tbody> of table `id`; each row is [cells, worker name or null, extra class].
function fillRows(id, rows, none) {
  const body = document.querySelector(`#${id} tbody`);
  body.textContent = "";
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.textContent = none;
    td.className = "sk-none";
    td.colSpan = document.querySelectorAll(`#${id} thead th`).length || 1;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const [cells, worker, cls] of rows) {
    const tr = document.createElement("tr");
    if (worker) tr.dataset.worker = worker;
    if (cls) tr.className = cls;
    for (const v of cells) {
      const td = document.createElement("td");
      td.textContent = v == null ? "-" : String(v);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function renderFleet(f) {
  fq("#app").textContent = f.app;
  const me = f.workers.find((w) => w.self);
  fset("me", me ? me.worker : "outside the fleet");
  const ok = f.workers.filter((w) => w.report);
  fset("workers", fint(f.workers.length));
  fset("reachable", `${ok.length} of ${f.workers.length}`);
  fset("fleet_watermark", ftime(f.fleet_watermark_ms) + (f.fleet_watermark_partial ?
    " (partial: a worker did not answer)" : ""));
  fset("records_read", fint(ok.reduce((n, w) => n + w.report.records_read, 0)));
  fset("records_per_second", fdec(ok.reduce((n, w) =>
    n + (w.report.records_per_second || 0), 0)));
  fset("backlog_ms", fint(ok.reduce((n, w) => Math.max(n, w.report.backlog_ms), 0)));
  fillRows("fleet-workers", f.workers.map((w) => {
    const r = w.report;
    const status = w.status + (w.self ? " (this process)" : "") +
      (w.error ? `: ${w.error}` : "");
    return [[w.worker, status, w.leases.source.join(", ") || "-",
      w.leases.aggregation.join(", ") || "-",
      r ? fint(r.records_read) : "-", r ? fdec(r.records_per_second) : "-",
      r ? fint(r.backlog_ms) : "-", r ? ftime(r.watermark_ms) : "-",
      r ? ftime(r.fleet_watermark_ms) : "-", w.url || "-"], w.worker,
      w.status === "ok" ? "" : "sk-error"];
  }), "no worker holds a lease or advertises an endpoint");
  const tasks = [];
  for (const w of ok) {
    for (const t of w.report.tasks) {
      tasks.push([[w.worker, t.kind, t.shard, fint(t.batch), fint(t.lag_ms),
        ftime(t.watermark_ms), fint(t.rows)], w.worker, ""]);
    }
  }
  fillRows("fleet-tasks", tasks, "no reachable worker runs a task");
  fillRows("fleet-leases", f.leases.map((l) => [[l.table, l.shard, l.owner || "(free)",
    fint(l.counter), l.checkpoint], l.owner, ""]), "no lease");
}

async function pollFleet() {
  try {
    const reply = await fetch("/api/fleet", {cache: "no-store"});
    const f = await reply.json();
    if (f.error) {
      fq("#fleet-error").textContent = f.error;
    } else {
      fq("#fleet-error").textContent = "";
      renderFleet(f);
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    }
    fq("#updated").textContent = new Date().toISOString().slice(11, 19) + "Z";
  } catch (e) {
    fq("#updated").textContent = "cannot reach the process: " + e;
  }
}

// The next poll starts a second after the last one ended (an unreachable worker can
// make one take a few seconds).
async function pollForever() {
  await pollFleet();
  setTimeout(pollForever, FLEET_POLL_MS);
}

document.addEventListener("DOMContentLoaded", pollForever);
