// distlg view: pan/zoom tiles of a model rendered on demand, slices, frames, waveforms.
// Plain JavaScript, no build step. window.distlgViewer exposes the state that tests read.
"use strict";

const BG = "#202020";
const V = window.distlgViewer = { panels: [], pending: 0, firstTileMs: null, errors: [], info: null };
const $ = (id) => document.getElementById(id);
const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));

// -- talking to the server: every failure ends in the error panel, never a hung page --------------
function showError(message) {
  V.errors.push(message);
  $("error-text").textContent = message;
  $("error").hidden = false;
}
$("error-close").onclick = () => { $("error").hidden = true; };

async function api(path, { signal, as = "json" } = {}) {
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), 60000);
  if (signal) signal.addEventListener("abort", () => timeout.abort());
  let response;
  try {
    response = await fetch(path, { signal: timeout.signal });
  } catch (err) {
    if (signal && signal.aborted) throw err;
    const why = timeout.signal.aborted ? "did not answer within 60 s" : "cannot be reached (stopped?)";
    showError(`the viewer at ${location.host} ${why}`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    showError(message);
    throw new Error(message);
  }
  return as === "blob" ? response.blob() : response.json();
}

function tileDrawn() {
  if (V.firstTileMs === null) V.firstTileMs = performance.now();
}

// -- a queue of tile requests: newest views first, stale ones cancelled ----------------------------
const queue = { waiting: [], running: 0, limit: 6 };
function request(job) {
  queue.waiting.push(job);
  V.pending++;
  pump();
}
function pump() {
  while (queue.running < queue.limit && queue.waiting.length) {
    const job = queue.waiting.pop();
    if (job.stale()) { V.pending--; job.cancel(); continue; }
    queue.running++;
    job.run().finally(() => { queue.running--; V.pending--; pump(); });
  }
}

// -- a 2-D plane (image, video frame, volume slice) --------------------------------------------------
class Panel {
  constructor(info, plane, host) {
    const ax = info.axes;
    this.info = info;
    this.plane = plane;
    this.rows = ax.indexOf(plane[0]);
    this.cols = ax.indexOf(plane[1]);
    this.fixed = ax.findIndex((a, i) => i !== this.rows && i !== this.cols);
    this.H = info.shape[this.rows];
    this.W = info.shape[this.cols];
    this.index = this.fixed >= 0 ? Math.floor(info.shape[this.fixed] / 2) : 0;
    this.tiles = new Map();    // key -> {state, bmp, ctrl}
    this.last = new Map();     // position key -> newest bitmap at any frame/slice (shown while loading)
    this.box = null;
    this.build(host);
    this.fit();
  }

  build(host) {
    const el = document.createElement("div");
    el.className = "panel";
    const fixedName = this.fixed >= 0 ? this.info.axes[this.fixed] : null;
    el.innerHTML = `<div class="head"><span class="label">${this.plane} plane</span></div><div class="pair"></div>`;
    const head = el.querySelector(".head");
    if (fixedName) {
      const n = this.info.shape[this.fixed];
      head.insertAdjacentHTML("beforeend", `<span>${fixedName}</span>
        <input type="range" class="index" min="0" max="${n - 1}" value="${this.index}">
        <span class="index-label">${this.index} / ${n - 1}</span>`);
      this.slider = head.querySelector(".index");
      this.slider.addEventListener("input", () => this.setIndex(+this.slider.value));
      if (this.info.kind === "video") {
        head.insertAdjacentHTML("beforeend", `<button class="play">play</button>`);
        this.playButton = head.querySelector(".play");
        this.playButton.onclick = () => this.togglePlay();
      }
    }
    const side = this.info.kind === "volume" ? 360 : (this.info.compare ? 480 : 720);
    this.canvases = [this.makeCanvas(el, side, "model")];
    if (this.info.compare) this.canvases.push(this.makeCanvas(el, side, "truth"));
    host.appendChild(el);
    this.el = el;
  }

  makeCanvas(el, side, source) {
    const wrap = document.createElement("div");
    wrap.innerHTML = `<div class="label">${source === "model" ? "model" : "ground truth"}</div>`;
    const canvas = document.createElement("canvas");
    canvas.width = side;
    canvas.height = Math.round(side * 0.75);
    canvas.dataset.source = source;
    wrap.appendChild(canvas);
    el.querySelector(".pair").appendChild(wrap);
    this.listen(canvas);
    return canvas;
  }

  get cw() { return this.canvases[0].width; }
  get ch() { return this.canvases[0].height; }

  fit() {
    this.zoom = clamp(Math.min(this.cw / this.W, this.ch / this.H), 2 ** -8, 2 ** 8);
    this.cy = (this.H - 1) / 2;
    this.cx = (this.W - 1) / 2;
    this.changed();
  }

  show(r0, r1, c0, c1) {  // fit a box of samples [r0, r1) x [c0, c1)
    this.zoom = clamp(Math.min(this.cw / (c1 - c0), this.ch / (r1 - r0)), 2 ** -8, 2 ** 8);
    this.cy = (r0 + r1 - 1) / 2;
    this.cx = (c0 + c1 - 1) / 2;
    this.changed();
  }

  setIndex(i) {
    this.index = clamp(i, 0, this.info.shape[this.fixed] - 1);
    if (this.slider) {
      this.slider.value = this.index;
      this.el.querySelector(".index-label").textContent = `${this.index} / ${this.info.shape[this.fixed] - 1}`;
    }
    this.changed();
  }

  togglePlay() {
    if (this.timer) { clearInterval(this.timer); this.timer = null; this.playButton.textContent = "play"; return; }
    const fps = Math.min(this.info.fps || 10, 12);
    this.playButton.textContent = "pause";
    this.timer = setInterval(() => this.setIndex((this.index + 1) % this.info.shape[this.fixed]), 1000 / fps);
  }

  // screen <-> sample positions (a sample's footprint is [p - 1/2, p + 1/2))
  toScreen(r, c) { return [(c - this.cx) * this.zoom + this.cw / 2, (r - this.cy) * this.zoom + this.ch / 2]; }
  toSample(x, y) { return [(y - this.ch / 2) / this.zoom + this.cy, (x - this.cw / 2) / this.zoom + this.cx]; }

  get level() { return clamp(Math.ceil(Math.log2(this.zoom) - 1e-9), V.info.levels[0], V.info.levels[1]); }

  visibleTiles() {
    const L = this.level, span = V.info.tile * 2 ** -L;
    const [r0, c0] = this.toSample(0, 0), [r1, c1] = this.toSample(this.cw, this.ch);
    const range = (a, b, n) => {
      const lo = Math.max(0, Math.floor((a + 0.5) / span)), hi = Math.min(Math.ceil(n / span) - 1, Math.floor((b + 0.5) / span));
      const out = [];
      for (let t = lo; t <= hi; t++) out.push(t);
      return out;
    };
    const out = [];
    for (const ty of range(r0, r1, this.H)) for (const tx of range(c0, c1, this.W)) out.push({ L, span, ty, tx });
    return out;
  }

  key(source, t) { return `${source}/${this.plane}/${t.L}/${this.fixed >= 0 ? this.index : 0}/${t.ty}/${t.tx}`; }

  changed() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = null; this.draw(); });
    scheduleStats(this);
  }

  fetchTile(source, t) {
    const key = this.key(source, t);
    if (this.tiles.has(key)) return this.tiles.get(key);
    const entry = { state: "loading", ctrl: new AbortController() };
    this.tiles.set(key, entry);
    const index = this.fixed >= 0 ? this.index : 0;
    request({
      stale: () => !this.visibleTiles().some((v) => this.key(source, v) === key),
      cancel: () => { this.tiles.delete(key); },
      run: async () => {
        try {
          const blob = await api(`/api/tile/${source}/${this.plane}/${t.L}/${index}/${t.ty}/${t.tx}.png`,
                                 { signal: entry.ctrl.signal, as: "blob" });
          entry.bmp = await createImageBitmap(blob);
          entry.state = "ok";
          this.last.set(`${source}/${t.L}/${t.ty}/${t.tx}`, entry.bmp);
        } catch (err) {
          entry.state = entry.ctrl.signal.aborted ? "gone" : "error";
          if (entry.state === "gone") this.tiles.delete(key);
        }
        this.changed();
      },
    });
    return entry;
  }

  draw() {
    for (const canvas of this.canvases) this.drawCanvas(canvas, canvas.dataset.source);
  }

  drawCanvas(canvas, source) {
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = BG;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (const t of this.visibleTiles()) {
      const entry = this.fetchTile(source, t);
      const [x, y] = this.toScreen(t.ty * t.span - 0.5, t.tx * t.span - 0.5);
      const w = (Math.min((t.tx + 1) * t.span, this.W) - t.tx * t.span) * this.zoom;
      const h = (Math.min((t.ty + 1) * t.span, this.H) - t.ty * t.span) * this.zoom;
      if (entry.state === "ok") {
        ctx.drawImage(entry.bmp, x, y, w, h);
        tileDrawn();
        continue;
      }
      const stale = this.last.get(`${source}/${t.L}/${t.ty}/${t.tx}`);
      if (stale) ctx.drawImage(stale, x, y, w, h);
      else this.placeholder(ctx, x, y, w, h, entry.state === "error");
      if (entry.state !== "error") this.busy(ctx, x, y);
    }
    if (source === "model" && $("show-missing").checked) this.drawMissing(ctx);
    if ($("show-grid").checked) this.drawGrid(ctx);
    if (this.box) this.drawBox(ctx);
  }

  placeholder(ctx, x, y, w, h, failed) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(x, y, w, h);
    ctx.clip();
    ctx.fillStyle = failed ? "#4a1e1e" : "#333";
    ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = failed ? "#c44" : "#444";
    ctx.beginPath();
    for (let d = -h; d < w; d += 16) { ctx.moveTo(x + d, y + h); ctx.lineTo(x + d + h, y); }
    ctx.stroke();
    ctx.fillStyle = failed ? "#f88" : "#999";
    ctx.fillText(failed ? "failed (see the error panel)" : "rendering…", x + 8, y + 16);
    ctx.restore();
  }

  busy(ctx, x, y) {  // a tile in progress: a small marker in its corner
    ctx.save();
    ctx.fillStyle = "rgba(255, 200, 0, 0.9)";
    ctx.beginPath();
    ctx.arc(Math.max(x, 0) + 8, Math.max(y, 0) + 8, 4, 0, 2 * Math.PI);
    ctx.fill();
    ctx.restore();
  }

  partRange(axis, i) {  // sample footprint of partition i along axis
    const p = V.info.part_shape[axis];
    return [i * p - 0.5, Math.min((i + 1) * p, V.info.shape[axis]) - 0.5];
  }

  drawGrid(ctx) {
    ctx.save();
    ctx.strokeStyle = "rgba(0, 220, 255, 0.55)";
    ctx.beginPath();
    const p = V.info.part_shape;
    for (let i = 1; i < V.info.factors[this.rows]; i++) {
      const [, y] = this.toScreen(i * p[this.rows] - 0.5, 0);
      ctx.moveTo(0, y); ctx.lineTo(this.cw, y);
    }
    for (let i = 1; i < V.info.factors[this.cols]; i++) {
      const [x] = this.toScreen(0, i * p[this.cols] - 0.5);
      ctx.moveTo(x, 0); ctx.lineTo(x, this.ch);
    }
    ctx.stroke();
    ctx.restore();
  }

  drawMissing(ctx) {
    if (!V.missing.size) return;
    const f = V.info.factors, idx = [0, 0, 0];
    if (this.fixed >= 0) idx[this.fixed] = Math.floor(this.index / V.info.part_shape[this.fixed]);
    ctx.save();
    for (let i = 0; i < f[this.rows]; i++) for (let j = 0; j < f[this.cols]; j++) {
      idx[this.rows] = i; idx[this.cols] = j;
      let pid = 0;
      for (let a = 0; a < f.length; a++) pid = pid * f[a] + idx[a];
      if (!V.missing.has(pid)) continue;
      const [r0, r1] = this.partRange(this.rows, i), [c0, c1] = this.partRange(this.cols, j);
      const [x0, y0] = this.toScreen(r0, c0), [x1, y1] = this.toScreen(r1, c1);
      ctx.fillStyle = "rgba(255, 0, 128, 0.25)";
      ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
      ctx.strokeStyle = "rgba(255, 0, 128, 0.8)";
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      ctx.fillStyle = "#f6a";
      ctx.fillText(`partition ${pid} cropped`, x0 + 6, y0 + 14);
    }
    ctx.restore();
  }

  drawBox(ctx) {
    const [r0, c0, r1, c1] = this.box;
    const [x0, y0] = this.toScreen(r0 - 0.5, c0 - 0.5), [x1, y1] = this.toScreen(r1 - 0.5, c1 - 0.5);
    ctx.save();
    ctx.strokeStyle = "#ff0";
    ctx.setLineDash([6, 4]);
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.restore();
  }

  visibleBox() {  // integer samples [r0, r1) x [c0, c1) on screen
    const [a, b] = this.toSample(0, 0), [c, d] = this.toSample(this.cw, this.ch);
    const r0 = clamp(Math.round(a), 0, this.H - 1), c0 = clamp(Math.round(b), 0, this.W - 1);
    return [r0, c0, clamp(Math.round(c) + 1, r0 + 1, this.H), clamp(Math.round(d) + 1, c0 + 1, this.W)];
  }

  listen(canvas) {
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = canvas.getBoundingClientRect();
      const [r, c] = this.toSample(e.clientX - rect.left, e.clientY - rect.top);
      this.zoom = clamp(this.zoom * Math.pow(1.0015, -e.deltaY), 2 ** -8, 2 ** 8);
      const [r2, c2] = this.toSample(e.clientX - rect.left, e.clientY - rect.top);
      this.cy += r - r2; this.cx += c - c2;
      this.changed();
    }, { passive: false });
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      const rect = canvas.getBoundingClientRect();
      const boxing = e.shiftKey || $("box-mode").classList.contains("on");
      const start = this.toSample(e.clientX - rect.left, e.clientY - rect.top);
      const from = [e.clientX, e.clientY, this.cx, this.cy];
      const move = (m) => {
        if (boxing) {
          const end = this.toSample(m.clientX - rect.left, m.clientY - rect.top);
          const r = [Math.round(start[0]), Math.round(end[0])].sort((a, b) => a - b);
          const c = [Math.round(start[1]), Math.round(end[1])].sort((a, b) => a - b);
          this.box = [clamp(r[0], 0, this.H - 1), clamp(c[0], 0, this.W - 1), clamp(r[1] + 1, 1, this.H), clamp(c[1] + 1, 1, this.W)];
        } else {
          this.cx = from[2] - (m.clientX - from[0]) / this.zoom;
          this.cy = from[3] - (m.clientY - from[1]) / this.zoom;
        }
        this.changed();
      };
      const up = () => {
        canvas.removeEventListener("pointermove", move);
        canvas.removeEventListener("pointerup", up);
        if (boxing && this.box) cropCommand(this);
      };
      canvas.addEventListener("pointermove", move);
      canvas.addEventListener("pointerup", up);
    });
  }

  // for tests: canvas pixels of a box of samples, and a digest of the whole canvas
  pixels(source, r0, c0, r1, c1) {
    const canvas = this.canvases[source === "truth" ? 1 : 0];
    const [x0, y0] = this.toScreen(r0 - 0.5, c0 - 0.5), [x1, y1] = this.toScreen(r1 - 0.5, c1 - 0.5);
    const x = Math.round(x0) + 1, y = Math.round(y0) + 1;
    const w = Math.max(1, Math.round(x1) - x - 1), h = Math.max(1, Math.round(y1) - y - 1);
    return Array.from(canvas.getContext("2d").getImageData(x, y, w, h).data);
  }

  digest(source) {  // FNV-1a of the canvas' pixels
    const canvas = this.canvases[source === "truth" ? 1 : 0];
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let h = 0x811c9dc5;
    for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 0x01000193) >>> 0;
    return h;
  }
}

// -- audio: a zoomable waveform -----------------------------------------------------------------------
class Wave {
  constructor(info, host) {
    this.info = info;
    this.n = info.shape[0];
    const el = document.createElement("div");
    el.className = "panel";
    el.innerHTML = `<div class="head"><span class="label">waveform</span><button class="play">play visible</button>
      <span class="span-label"></span></div>`;
    this.canvas = document.createElement("canvas");
    this.canvas.width = 1200; this.canvas.height = 300;
    this.canvas.dataset.source = "model";
    el.appendChild(this.canvas);
    host.appendChild(el);
    this.el = el;
    this.audio = new Audio();
    el.querySelector(".play").onclick = () => {
      const [a, b] = this.visible();
      this.audio.src = `/api/clip.wav?start=${a}&stop=${b}`;
      this.audio.play().catch(() => {});
    };
    this.data = {};
    this.box = null;
    this.listen();
    this.fit();
  }
  get cw() { return this.canvas.width; }
  fit() { this.spp = this.n / this.cw; this.s0 = 0; this.changed(); }
  show(a, b) { this.spp = Math.max(1 / 256, (b - a) / this.cw); this.s0 = a; this.changed(); }
  visible() {
    const a = clamp(Math.floor(this.s0), 0, this.n - 1);
    return [a, clamp(Math.ceil(this.s0 + this.cw * this.spp), a + 1, this.n)];
  }
  changed() {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.load(), 60);
    this.draw();
    scheduleStats(this);
  }
  load() {
    const [a, b] = this.visible();
    const columns = Math.max(1, Math.round((b - a) / this.spp));
    const sources = this.info.compare ? ["model", "truth"] : ["model"];
    for (const source of sources) {
      const want = `${a}/${b}/${columns}`;
      if (this.data[source] && this.data[source].want === want) continue;
      if (this.ctrl && this.ctrl[source]) this.ctrl[source].abort();
      const ctrl = new AbortController();
      this.ctrl = { ...(this.ctrl || {}), [source]: ctrl };
      this.loading = true;
      request({
        stale: () => false, cancel: () => {},
        run: async () => {
          try {
            const d = await api(`/api/wave/${source}?start=${a}&stop=${b}&columns=${columns}`, { signal: ctrl.signal });
            this.data[source] = { ...d, want };
          } catch (err) { /* shown in the error panel */ }
          this.loading = false;
          this.draw();
        },
      });
    }
  }
  x(s) { return (s - this.s0) / this.spp; }
  draw() {
    const ctx = this.canvas.getContext("2d"), h = this.canvas.height;
    ctx.fillStyle = BG; ctx.fillRect(0, 0, this.cw, h);
    ctx.strokeStyle = "#333"; ctx.beginPath(); ctx.moveTo(0, h / 2); ctx.lineTo(this.cw, h / 2); ctx.stroke();
    const colours = { model: "rgba(120, 200, 255, 0.9)", truth: "rgba(255, 170, 60, 0.6)" };
    for (const source of ["truth", "model"]) {
      const d = this.data[source];
      if (!d) continue;
      const step = (d.stop - d.start) / d.low.length;
      ctx.strokeStyle = colours[source];
      ctx.beginPath();
      d.low.forEach((lo, i) => {
        const x = this.x(d.start + (i + 0.5) * step);
        if (lo === null) {
          if (source === "model" && $("show-missing").checked) { ctx.save(); ctx.fillStyle = "rgba(255, 0, 128, 0.25)"; ctx.fillRect(x, 0, Math.max(1, step / this.spp), h); ctx.restore(); }
          return;
        }
        ctx.moveTo(x, h / 2 - d.high[i] * h * 0.45);
        ctx.lineTo(x, h / 2 - lo * h * 0.45 + 1);
      });
      ctx.stroke();
      if (source === "model") tileDrawn();
    }
    if ($("show-grid").checked) {
      ctx.strokeStyle = "rgba(0, 220, 255, 0.55)"; ctx.beginPath();
      for (let i = 1; i < V.info.factors[0]; i++) { const x = this.x(i * V.info.part_shape[0] - 0.5); ctx.moveTo(x, 0); ctx.lineTo(x, h); }
      ctx.stroke();
    }
    if (this.loading) { ctx.fillStyle = "#999"; ctx.fillText("rendering…", 8, 14); }
    if (this.box) {
      ctx.save(); ctx.strokeStyle = "#ff0"; ctx.setLineDash([6, 4]);
      ctx.strokeRect(this.x(this.box[0] - 0.5), 2, (this.box[1] - this.box[0]) / this.spp, h - 4); ctx.restore();
    }
    const [a, b] = this.visible();
    this.el.querySelector(".span-label").textContent = `samples ${a}:${b}` + (this.info.sample_rate ? ` (${(a / this.info.sample_rate).toFixed(3)}-${(b / this.info.sample_rate).toFixed(3)} s)` : "");
  }
  visibleBox() { return this.visible(); }
  listen() {
    const c = this.canvas;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const x = e.clientX - c.getBoundingClientRect().left, s = this.s0 + x * this.spp;
      this.spp = clamp(this.spp * Math.pow(1.0015, e.deltaY), 1 / 256, this.n / this.cw * 2);
      this.s0 = s - x * this.spp;
      this.changed();
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      const left = c.getBoundingClientRect().left, boxing = e.shiftKey || $("box-mode").classList.contains("on");
      const start = this.s0 + (e.clientX - left) * this.spp, from = [e.clientX, this.s0];
      const move = (m) => {
        if (boxing) {
          const end = this.s0 + (m.clientX - left) * this.spp, lo = Math.round(Math.min(start, end)), hi = Math.round(Math.max(start, end));
          this.box = [clamp(lo, 0, this.n - 1), clamp(hi + 1, 1, this.n)];
        } else this.s0 = from[1] - (m.clientX - from[0]) * this.spp;
        this.changed();
      };
      const up = () => { c.removeEventListener("pointermove", move); c.removeEventListener("pointerup", up); if (boxing && this.box) cropCommand(this); };
      c.addEventListener("pointermove", move); c.addEventListener("pointerup", up);
    });
  }
}

// -- what the bar shows: PSNR of the visible part, crop commands -----------------------------------
function boxQuery(panel, box) {
  if (panel instanceof Wave) return `box=t=${box[0]}:${box[1]}`;
  return `plane=${panel.plane}&index=${panel.fixed >= 0 ? panel.index : 0}&box=${box[0]}:${box[2]},${box[1]}:${box[3]}`;
}

let statsTimer = null;
function scheduleStats(panel) {
  if (!V.info || !V.info.compare) return;
  clearTimeout(statsTimer);
  statsTimer = setTimeout(async () => {
    try {
      const r = await api(`/api/psnr?${boxQuery(panel, panel.visibleBox())}`);
      $("psnr").textContent = r.psnr === null ? "PSNR: nothing of the model is visible"
        : `PSNR of the visible part: ${r.psnr.toFixed(2)} dB (${r.values.toLocaleString()} values${r.stride > 1 ? `, every ${r.stride}th sample` : ""})`;
      V.psnr = r;
    } catch (err) { /* shown in the error panel */ }
  }, 400);
}

async function cropCommand(panel) {
  try {
    const r = await api(`/api/crop?${boxQuery(panel, panel.box)}`);
    $("crop").value = r.command;
    $("crop-wrap").hidden = false;
    V.cropCommand = r.command;
  } catch (err) { /* shown in the error panel */ }
}
$("copy").onclick = async () => {
  try { await navigator.clipboard.writeText($("crop").value); }
  catch (e) { $("crop").select(); document.execCommand("copy"); }
  $("status").textContent = "copied";
};
$("box-mode").onclick = () => {
  $("box-mode").classList.toggle("on");
  for (const c of document.querySelectorAll("canvas")) c.classList.toggle("boxing", $("box-mode").classList.contains("on"));
};
$("fit").onclick = () => V.panels.forEach((p) => p.fit());
for (const id of ["show-grid", "show-missing"]) $(id).onchange = () => V.panels.forEach((p) => p.changed());

async function goto(text) {
  try {
    const { box } = await api(`/api/goto?box=${encodeURIComponent(text)}`);
    for (const p of V.panels) {
      if (p instanceof Wave) { p.show(box[0][0], box[0][1]); continue; }
      if (p.fixed >= 0) p.setIndex(box[p.fixed][0]);
      p.show(box[p.rows][0], box[p.rows][1], box[p.cols][0], box[p.cols][1]);
    }
  } catch (err) { /* shown in the error panel */ }
}
$("goto-form").onsubmit = (e) => { e.preventDefault(); goto($("goto").value); };

// -- start ---------------------------------------------------------------------------------------
V.ready = () => V.info !== null && V.pending === 0 && V.panels.every((p) => !p.loading && !p.frame);
V.panel = (i) => V.panels[i];

async function start() {
  try {
    V.info = await api("/api/info");
  } catch (err) { return; }
  const info = V.info;
  V.missing = new Set(info.missing);
  const p = info.params;
  $("summary").textContent = `${info.model}: ${info.kind} ${info.shape.join("x")}x${info.channels}, ` +
    `${info.partitions - info.missing.length} of ${info.partitions} partitions (${info.factors.join("x")}), ` +
    `${p.total.toLocaleString()} weights` + (info.compare ? `; ground truth ${info.compare_name}` : "");
  document.title = `distlg view: ${info.model}`;
  const host = $("panels");
  if (info.kind === "audio") V.panels.push(new Wave(info, host));
  else for (const plane of info.planes) V.panels.push(new Panel(info, plane, host));
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("region")) goto(hash.get("region"));
}
start();
