// The interactive page: upload, live run view (server-sent events), stop/resume, edit and regenerate.
// Every text from the server is put in the page with textContent, never as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const HEADERS = {"X-ExpectDiff": "1"};  // the server refuses changes without it (cross-site forms cannot send it)
  let current = null;      // run id shown
  let runStream = null;    // EventSource of the shown run
  let lastView = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }
  const fmt = (x) => (typeof x === "number" && isFinite(x)) ? x.toFixed(4) : "–";
  const show = (node, message) => { node.textContent = message || ""; node.hidden = !message; };

  async function api(method, url, body, isJson) {
    const init = {method, headers: Object.assign({}, method === "GET" ? {} : HEADERS)};
    if (body !== undefined) {
      if (isJson) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
      else init.body = body;
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error((data && (data.error || (data.detail && JSON.stringify(data.detail)))) || `${response.status} ${response.statusText}`);
    return data;
  }

  // ---------------------------------------------------------------- upload
  let chosen = null;
  // One file: one image's run. Several: one set, one prompt for them all (the batch job's --group-by folder).
  function choose(files) {
    chosen = files && files.length ? Array.from(files) : null;
    $("file-name").textContent = !chosen ? "" : chosen.length === 1 ? chosen[0].name
      : `a set of ${chosen.length}: ${chosen.map((f) => f.name).join(", ")}`;
  }
  function setupUpload(options) {
    $("framework").value = options.framework;
    $("max-steps").value = options.max_steps;
    $("max-steps").max = options.max_steps_limit;
    $("seeds").value = options.seeds.join(",");
    $("prompts-per-image").value = options.prompts_per_image;
    $("prompts-per-image").max = options.max_prompts_per_image;
    $("caption-prefix").value = options.caption_prefix || "";
    $("negative").checked = !!options.negative;
    $("style-only").checked = !!options.style_only;
    if (options.negative_refused) { $("negative").disabled = true; $("negative").parentElement.title = options.negative_refused; }
    $("file").addEventListener("change", (e) => choose(e.target.files));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files); });
    $("upload-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      show($("upload-error"), "");
      if (!chosen) { show($("upload-error"), "Choose an image first."); return; }
      const total = chosen.reduce((sum, f) => sum + f.size, 0);
      if (total > options.max_upload_bytes) {
        const what = chosen.length === 1 ? chosen[0].name : `these ${chosen.length} images`;
        show($("upload-error"), `${what}: ${total} bytes, more than the limit of ${options.max_upload_bytes} bytes`);
        return;
      }
      if (chosen.length > options.max_set_images) {
        show($("upload-error"), `${chosen.length} images: a set holds at most ${options.max_set_images}`);
        return;
      }
      const form = new FormData();
      for (const f of chosen) form.append("file", f, f.name);
      for (const [name, id] of [["framework", "framework"], ["max_steps", "max-steps"], ["seeds", "seeds"], ["init_prompt", "init-prompt"],
                                ["prompts_per_image", "prompts-per-image"], ["caption_prefix", "caption-prefix"]])
        form.append(name, $(id).value);
      form.append("negative", $("negative").checked ? "true" : "false");
      form.append("style_only", $("style-only").checked ? "true" : "false");
      $("start").disabled = true;
      try {
        const run = await api("POST", "/api/runs", form);
        location.hash = "run=" + run.run_id;
      } catch (err) {
        show($("upload-error"), err.message);
      } finally {
        $("start").disabled = false;
      }
    });
  }

  // ---------------------------------------------------------------- lists
  function renderRuns(runs) {
    const list = $("runs");
    list.replaceChildren();
    if (!runs.length) list.append(el("li", {class: "muted", text: "none yet"}));
    for (const r of runs) {
      const item = el("li", {"data-run": r.run_id, class: r.run_id === current ? "current" : ""},
        el("a", {href: "#run=" + r.run_id, text: r.filename}), el("span", {class: "status " + r.status, text: r.status}));
      list.append(item);
    }
  }
  let runsCache = [];
  function listen() {
    const source = new EventSource("/api/events");
    source.addEventListener("runs", (e) => { runsCache = JSON.parse(e.data).runs; renderRuns(runsCache); });
    source.addEventListener("summary", (e) => {
      const s = JSON.parse(e.data);
      const i = runsCache.findIndex((r) => r.run_id === s.run_id);
      if (i >= 0) runsCache[i] = s; else runsCache.unshift(s);
      renderRuns(runsCache);
    });
  }
  async function loadBatches() {
    const batches = await api("GET", "/api/batches");
    if (!batches.length) return;
    const list = $("batches");
    list.replaceChildren();
    for (const b of batches) {
      list.append(el("li", {}, el("a", {href: b.url, target: "_blank", rel: "noopener", text: b.name}),
        el("span", {class: "muted", text: b.exists ? ` ${b.done} done, ${b.failed} failed` : " (no results yet)"})));
    }
  }

  // Each role's batching so far (the server sums its replicas' stats into one line).
  async function loadRoles() {
    const roles = await api("GET", "/api/roles");
    $("roles").replaceChildren(...Object.entries(roles).map(([name, info]) =>
      el("tr", {"data-role": name}, el("td", {text: name}), el("td", {text: info.summary}))));
  }

  // ---------------------------------------------------------------- the run view
  function open(runId) {
    if (runStream) runStream.close();
    current = runId;
    renderRuns(runsCache);
    $("run").hidden = !runId;
    $("edits").replaceChildren();
    if (!runId) return;
    runStream = new EventSource(`/api/runs/${runId}/events`);
    runStream.addEventListener("run", (e) => render(JSON.parse(e.data)));
  }

  function render(view) {
    lastView = view;
    const run = view.run, result = view.result;
    $("run-title").textContent = run.filename;
    const status = $("run-status");
    status.textContent = run.status;
    status.className = "status " + run.status;
    $("stop").disabled = !(run.status === "running" || run.status === "queued");
    $("resume").disabled = !(run.status === "stopped" || run.status === "error");
    $("download").href = `/api/runs/${run.run_id}/download`;
    show($("run-error"), run.error || "");
    $("reference").src = view.reference_url;
    const next = result && result.next && result.next.length ? result.next.join(", ") : "";
    $("run-next").textContent = (run.status === "running" && next) ? `working: ${next}` : (run.status === "queued" ? "waiting for a free slot" : "");
    $("run-timing").textContent = timing(run.timeline || []);
    $("initial-prompt").textContent = result ? (result.initial_prompt || "") : "(captioning…)";
    const best = result && result.prompt;
    $("best-prompt").textContent = best ? best.rendered : "";
    const bestRecord = result && result.iterations.find((it) => it.iteration === result.best_iteration);
    const bestStyle = result && result.style_only && bestRecord ? `, style ${fmt(bestRecord.style_i)}` : "";
    $("best-score").textContent = best ? `(iteration ${result.best_iteration}${bestStyle}, CLIP-I ${fmt(result.best_clip_i)}, CLIP-T ${fmt(result.best_clip_t)})` : "";
    $("regenerate").disabled = !best;
    const caption = result && result.caption;
    $("caption").textContent = caption || "";
    $("caption-box").hidden = !(caption && best && caption !== best.rendered);
    renderRanked(result);
    renderNegative(result);
    const refDesc = $("reference-description");
    refDesc.replaceChildren();
    if (result && result.reference_description) refDesc.append(texts("Reference, as the VLM describes it", result.reference_description));
    drawCurve(result ? result.iterations : []);
    renderIterations(result);
    renderEdits(view, result);
  }

  // From the server's timeline (seconds after the upload at which each node finished).
  function timing(timeline) {
    const gens = timeline.filter((e) => e.node === "generate").map((e) => e.t);
    if (!gens.length) return "";
    const steps = gens.slice(1).map((t, k) => (t - gens[k]).toFixed(1) + " s");
    return `first generated image ${gens[0].toFixed(1)} s after the upload` + (steps.length ? `; iterations took ${steps.join(", ")}` : "");
  }

  function texts(title, obj) {
    const dl = el("dl", {class: "texts"});
    for (const [k, v] of Object.entries(obj || {})) dl.append(el("dt", {text: k}), el("dd", {text: String(v)}));
    return el("div", {}, el("h3", {text: title}), dl);
  }

  function images(urls, paths, scores) {
    const box = el("div", {class: "images"});
    (urls || []).forEach((url, k) => {
      const name = (paths && paths[k] || "").split("/").pop();
      box.append(el("figure", {}, el("img", {src: url, alt: name}),
        el("figcaption", {text: scores ? `${name} · CLIP-I ${fmt(scores[k])}` : name})));
    });
    return box;
  }

  // The K best distinct prompts (agent.prompts_per_image), shown when more than one was asked for.
  function renderRanked(result) {
    const list = $("ranked");
    list.replaceChildren();
    const ranked = (result && result.prompts) || [];
    $("ranked-box").hidden = !(result && result.prompts_per_image > 1 && ranked.length);
    for (const p of ranked)
      list.append(el("li", {"data-rank": String(p.rank)}, el("span", {class: "prompt", text: p.rendered}),
        el("span", {class: "muted", text: ` · iteration ${p.iteration}, CLIP-I ${fmt(p.clip_i)}, CLIP-T ${fmt(p.clip_t)}`})));
  }

  // agent.negative: the recovered negative prompt and what each candidate did (shown once the search ran).
  function renderNegative(result) {
    const neg = result && result.negative, table = $("negative-outcomes");
    table.replaceChildren();
    $("negative-box").hidden = !(neg && neg.searched);
    if (!neg) return;
    $("negative-prompt").textContent = neg.prompt
      ? `${neg.prompt} (CLIP-I ${fmt(neg.base_clip_i)} → ${fmt(neg.clip_i)})`
      : `none: no candidate raised CLIP-I above ${fmt(neg.base_clip_i)}`;
    table.append(el("tr", {}, ...["candidate", "CLIP-I alone", "outcome"].map((h) => el("th", {text: h}))));
    for (const o of neg.outcomes || [])
      table.append(el("tr", {class: o.outcome === "kept" ? "kept" : "dropped"}, el("td", {text: o.text}),
        el("td", {text: fmt(o.clip_i_alone)}), el("td", {text: o.outcome})));
  }

  function renderIterations(result) {
    const box = $("iterations");
    box.replaceChildren();
    if (!result) return;
    for (const it of [...result.iterations].reverse()) {
      const card = el("div", {class: "iteration" + (it.iteration === result.best_iteration ? " best" : ""), "data-iteration": String(it.iteration)});
      const styleText = it.style_i === undefined || it.style_i === null ? "" : ` · style ${fmt(it.style_i)}`;
      card.append(el("h3", {text: `Iteration ${it.iteration} · CLIP-T ${fmt(it.clip_t)} · CLIP-I ${fmt(it.clip_i)}${styleText}` + (it.iteration === result.best_iteration ? " · best" : "")}));
      card.append(el("p", {class: "prompt", text: it.rendered}));
      if (it.added && it.added.length) card.append(el("p", {class: "muted", text: "added: " + it.added.map((f) => `${f.text} (${f.part})`).join("; ")}));
      card.append(images(it.image_urls, it.image_paths, it.clip_i_per_seed));
      if (it.description) card.append(texts("Generated image, as the VLM describes it", it.description));
      if (it.differences) card.append(texts("Differences", it.differences));
      if (it.selection && it.selection.length) {
        const table = el("table", {class: "candidates"}, el("tr", {}, ...["candidate", "part", "CLIP-T with it", "needed", "outcome"].map((h) => el("th", {text: h}))));
        for (const c of it.selection)
          table.append(el("tr", {class: c.outcome === "kept" ? "kept" : "dropped"}, el("td", {text: c.text}), el("td", {text: c.part}),
            el("td", {text: fmt(c.clip_t)}), el("td", {text: fmt(c.needed)}), el("td", {text: c.outcome === "kept" ? "kept" : "dropped: " + c.outcome})));
        card.append(el("h3", {text: "Candidates (Algorithm 8)"}), table);
      } else if (it.candidates && it.candidates.length) {
        card.append(el("p", {class: "muted", text: "candidates: " + it.candidates.map((c) => c.text).join("; ") + " (scoring…)"}));
      }
      box.append(card);
    }
  }

  function renderEdits(view, result) {
    const box = $("edits");
    box.replaceChildren();
    const bestIt = result && result.iterations.find((it) => it.iteration === result.best_iteration);
    for (const e of view.edits || []) {
      box.append(el("div", {class: "edit"}, el("h3", {text: e.edit}),
        el("div", {class: "images"},
          el("div", {}, el("p", {class: "muted", text: "best prompt"}), images(bestIt ? bestIt.image_urls : [], bestIt ? bestIt.image_paths : [])),
          el("div", {}, el("p", {class: "muted", text: "edited"}), images(e.image_urls, e.images))),
        el("p", {class: "prompt", text: e.prompt})));
    }
  }

  // CLIP-I and CLIP-T live on different scales (image-image vs text-image cosine): one panel each,
  // each with its own range, iterations on the shared x axis.
  function drawCurve(iterations) {
    const svg = $("curve"), ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const W = 320, L = 44, R = 10, PANEL = 72, GAP = 14;
    const n = Math.max(1, iterations.length - 1);
    const x = (k) => L + (W - L - R) * k / n;
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text != null) node.textContent = text;
      svg.append(node);
      return node;
    };
    [["clip_i", "CLIP-I", "#06c", "series-i"], ["clip_t", "CLIP-T", "#c05800", "series-t"]].forEach(([key, label, colour, cls], p) => {
      const top = 6 + p * (PANEL + GAP), bottom = top + PANEL;
      add("path", {d: `M${L} ${top} V${bottom} H${W - R}`, stroke: "#999", fill: "none"});
      const values = iterations.map((it) => it[key]).filter((v) => typeof v === "number" && isFinite(v));
      if (!values.length) return;
      let lo = Math.min(...values), hi = Math.max(...values);
      if (hi - lo < 1e-6) { lo -= 0.005; hi += 0.005; }
      const y = (v) => bottom - 4 - (PANEL - 8) * (v - lo) / (hi - lo);
      add("text", {x: 2, y: top + 9}, hi.toFixed(3));
      add("text", {x: 2, y: bottom}, lo.toFixed(3));
      add("text", {x: L + 4, y: top + 9, fill: colour}, label);
      const pts = iterations.map((it, k) => [x(k), y(it[key])]);
      add("polyline", {points: pts.map((pt) => pt.join(",")).join(" "), fill: "none", stroke: colour, "stroke-width": 2, class: cls});
      for (const [px, py] of pts) add("circle", {cx: px, cy: py, r: 3, fill: colour, class: cls});
    });
    add("text", {x: (W + L) / 2, y: 2 * PANEL + GAP + 22, "text-anchor": "middle"}, "iteration");
  }

  // ---------------------------------------------------------------- commands
  function setupCommands() {
    $("stop").addEventListener("click", async () => {
      try { render(await api("POST", `/api/runs/${current}/stop`)); } catch (err) { show($("run-error"), err.message); }
    });
    $("resume").addEventListener("click", async () => {
      try { render(await api("POST", `/api/runs/${current}/resume`)); } catch (err) { show($("run-error"), err.message); }
    });
    $("edit-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      show($("edit-error"), "");
      const body = {content: $("edit-content").value || null, style: $("edit-style").value || null, substitutions: $("edit-subs").value || null};
      $("regenerate").disabled = true;
      try {
        await api("POST", `/api/runs/${current}/edits`, body, true);
        render(await api("GET", `/api/runs/${current}`));
      } catch (err) {
        show($("edit-error"), err.message);
        $("regenerate").disabled = false;
      }
    });
  }

  function route() {
    const m = /run=([0-9a-f]{16})/.exec(location.hash);
    open(m ? m[1] : null);
  }

  async function start() {
    const options = await api("GET", "/api/options");
    setupUpload(options);
    setupCommands();
    listen();
    loadBatches().catch((err) => { $("batches").replaceChildren(el("li", {class: "error", text: err.message})); });
    const refreshRoles = () => loadRoles().catch(() => {});  // the panel is informative: a failed refresh waits for the next
    refreshRoles();
    setInterval(refreshRoles, 5000);
    window.addEventListener("hashchange", route);
    route();
    document.documentElement.dataset.ready = "1";
  }
  document.addEventListener("DOMContentLoaded", () => { start().catch((err) => show($("upload-error"), err.message)); });
})();
