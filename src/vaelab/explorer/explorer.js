"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("vaelab-data").textContent);
  const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  const $ = (id) => document.getElementById(id);
  const [C, H, W] = DATA.image_shape;
  const N_PIX = C * H * W;
  const LAT = DATA.latent, D = LAT.size, VIEW = DATA.view;

  function floatsFromBase64(text) {
    const bin = atob(text), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  // ------------------------------------------------------------ the decoder, layer by layer
  // Weights are float32 (as trained); sums and activations are float64 JS numbers.

  function sigmoid(x) {
    if (x >= 0) return 1 / (1 + Math.exp(-x));
    const e = Math.exp(x);
    return e / (1 + e);
  }

  function makeDecoder(spec) {
    const weights = floatsFromBase64(spec.weights);
    const view = (ref) => weights.subarray(ref[0], ref[0] + ref[1]);
    const layers = spec.layers.map((l) => Object.assign({}, l, l.weight ? { w: view(l.weight), b: view(l.bias) } : {}));
    let size = spec.input;
    for (const l of layers) {  // a reusable output buffer per layer that changes the size
      if (l.op === "linear") { l.buf = new Float64Array(l.out); size = l.out; }
      if (l.op === "conv_transpose") {
        const [Ci, Hi, Wi] = l.in_shape, [Co, Ho, Wo] = l.out_shape, [kh, kw] = l.kernel;
        size = Co * Ho * Wo;
        l.buf = new Float64Array(size);
        l.xt = new Float64Array(Ci * Hi * Wi);  // the input, channel last
        l.rowTaps = taps(Ho, Hi, kh, l.stride[0], l.padding[0]);
        l.colTaps = taps(Wo, Wi, kw, l.stride[1], l.padding[1]);
        l.wt = new Float32Array(Ci * Co * kh * kw);  // torch's (Ci, Co, kh, kw) as (Co, kh, kw, Ci)
        for (let c = 0; c < Ci; c++)
          for (let o = 0; o < Co; o++)
            for (let k = 0; k < kh * kw; k++) l.wt[(o * kh * kw + k) * Ci + c] = l.w[(c * Co + o) * kh * kw + k];
      }
    }
    const input = new Float64Array(spec.input);
    const head = spec.head;

    function linear(l, x) {
      const out = l.buf, w = l.w, b = l.b, n = l.in;
      for (let j = 0, row = 0; j < l.out; j++, row += n) {
        let s = b[j];
        for (let i = 0; i < n; i++) s += w[row + i] * x[i];
        out[j] = s;
      }
      return out;
    }

    function convTranspose(l, x) {
      // out[o, oy, ox] = b[o] + sum over c and the taps (ky, kx) with oy = iy*s - p + ky, ox = ix*s - p + kx
      // of x[c, iy, ix] w[c, o, ky, kx]; computed from channel-last copies so the sum over c is contiguous.
      const [Ci, Hi, Wi] = l.in_shape, [Co, Ho, Wo] = l.out_shape, [kh, kw] = l.kernel;
      const out = l.buf, w = l.wt, xt = l.xt, rows = l.rowTaps, cols = l.colTaps;
      for (let c = 0; c < Ci; c++)
        for (let i = 0; i < Hi * Wi; i++) xt[i * Ci + c] = x[c * Hi * Wi + i];
      for (let o = 0; o < Co; o++) {
        const bias = l.b[o];
        for (let oy = 0; oy < Ho; oy++) {
          const rt = rows[oy];
          for (let ox = 0; ox < Wo; ox++) {
            const ct = cols[ox];
            let s = bias;
            for (let r = 0; r < rt.length; r += 2) {
              const ky = rt[r], iy = rt[r + 1];
              for (let q = 0; q < ct.length; q += 2) {
                const wb = ((o * kh + ky) * kw + ct[q]) * Ci, xb = (iy * Wi + ct[q + 1]) * Ci;
                for (let c = 0; c < Ci; c++) s += w[wb + c] * xt[xb + c];
              }
            }
            out[(o * Ho + oy) * Wo + ox] = s;
          }
        }
      }
      return out;
    }

    function taps(nOut, nIn, k, stride, pad) {  // per output index: [tap, input index, ...] that reach it
      const all = [];
      for (let o = 0; o < nOut; o++) {
        const list = [];
        for (let t = 0; t < k; t++) {
          const u = o + pad - t;
          if (u >= 0 && u % stride === 0 && u / stride < nIn) list.push(t, u / stride);
        }
        all.push(list);
      }
      return all;
    }

    function activate(l, x) {
      const n = x.length;
      if (l.op === "relu") for (let i = 0; i < n; i++) { if (x[i] < 0) x[i] = 0; }
      else if (l.op === "tanh") for (let i = 0; i < n; i++) x[i] = Math.tanh(x[i]);
      else if (l.op === "softplus") {  // torch: x where beta x > threshold, else log(1 + e^(beta x)) / beta
        const beta = l.beta, t = l.threshold;
        for (let i = 0; i < n; i++) { const bx = beta * x[i]; if (bx <= t) x[i] = Math.log1p(Math.exp(bx)) / beta; }
      }
      return x;
    }

    function cbMean(eta) {  // the continuous Bernoulli's mean, as likelihoods.continuous_bernoulli_mean
      if (Math.abs(eta) < head.taylor_below) return 0.5 + eta / 12 - eta * eta * eta / 720;
      return 0.5 + 0.5 / Math.tanh(eta / 2) - 1 / eta;
    }

    function mean(out) {
      const x = new Float32Array(N_PIX);
      if (head.type === "bernoulli" || head.type === "gaussian") {
        for (let i = 0; i < N_PIX; i++) x[i] = sigmoid(out[i]);
      } else if (head.type === "continuous_bernoulli") {
        for (let i = 0; i < N_PIX; i++) x[i] = cbMean(out[i]);
      } else if (head.type === "discretized_logistic") {
        // E[x] = sum_{j=1}^{top} sigmoid((loc - (j - 1/2)) / s) / top, loc and s in bin units (exact)
        const top = head.n_levels - 1;
        for (let i = 0; i < N_PIX; i++) {
          const loc = sigmoid(out[i]) * top;
          const logS = Math.min(Math.max(out[N_PIX + i], head.log_scale_min), head.log_scale_max);
          const invS = Math.exp(-logS) / top;
          let total = 0;
          for (let j = 1; j <= top; j++) total += sigmoid((loc - (j - 0.5)) * invS);
          x[i] = total / top;
        }
      } else {
        throw new Error("unknown head " + head.type);
      }
      return x;
    }

    return function decode(z, y) {
      if (z.length !== spec.latent_size) throw new Error("z has " + z.length + " entries, the decoder takes " + spec.latent_size);
      for (let i = 0; i < spec.latent_size; i++) input[i] = +z[i];
      if (spec.n_labels) {
        if (!(Number.isInteger(y) && y >= 0 && y < spec.n_labels)) throw new Error("a conditional model: pass a label y in 0.." + (spec.n_labels - 1));
        for (let k = 0; k < spec.n_labels; k++) input[spec.latent_size + k] = (k === y) ? 1 : 0;
      }
      let x = input;
      for (const l of layers) {
        if (l.op === "linear") x = linear(l, x);
        else if (l.op === "conv_transpose") x = convTranspose(l, x);
        else if (l.op === "reshape") continue;  // the buffers are flat, C-major, as torch's
        else x = activate(l, x);
      }
      return mean(x);
    };
  }

  const decoder = DATA.spec ? makeDecoder(DATA.spec) : null;

  // ------------------------------------------------------------ the latent plane

  const POINTS = floatsFromBase64(DATA.points), LABELS = DATA.labels, N = LABELS.length;
  const M = VIEW.mean, U = VIEW.axes[0], V = VIEW.axes[1];
  const labelCount = Math.max(DATA.label_names.length, 1);
  const state = { z: M.slice(), y: 0, a: null, b: null, pending: null, image: null, decodeMs: 0, frames: 0 };

  function point(i) { return Array.from(POINTS.subarray(i * D, (i + 1) * D)); }
  function dot(a, b) { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; }

  // plane coordinates (a, b) of z, and back
  function toPlane(z) {
    if (VIEW.mode === "strip") return [z[0], null];
    const d = z.map((v, i) => v - M[i]);
    return [dot(d, U), dot(d, V)];
  }

  function projectCategorical(z) {  // clip to >= 0 and renormalize each variable: a point of the simplices
    const K = LAT.categories, out = z.slice();
    for (let v = 0; v < LAT.variables; v++) {
      let s = 0;
      for (let k = 0; k < K; k++) { out[v * K + k] = Math.max(0, out[v * K + k]); s += out[v * K + k]; }
      for (let k = 0; k < K; k++) out[v * K + k] = s > 0 ? out[v * K + k] / s : 1 / K;
    }
    return out;
  }

  function fromPlane(a, b, base) {
    if (VIEW.mode === "strip") return [a];
    if (VIEW.mode === "direct") return [a, b];
    // keep the part of `base` off the plane; replace its in-plane coordinates with (a, b)
    const [a0, b0] = toPlane(base);
    const z = base.map((v, i) => v + (a - a0) * U[i] + (b - b0) * V[i]);
    return LAT.kind === "categorical" ? projectCategorical(z) : z;
  }

  function offPlane(z) {
    if (VIEW.mode !== "pca") return 0;
    const [a, b] = toPlane(z);
    let s = 0;
    for (let i = 0; i < D; i++) { const r = z[i] - M[i] - a * U[i] - b * V[i]; s += r * r; }
    return Math.sqrt(s);
  }

  // ------------------------------------------------------------ the scatter canvas

  const SIZE = 560, dpr = window.devicePixelRatio || 1;
  const pointsCanvas = $("scatter-points"), overlay = $("scatter");
  for (const c of [pointsCanvas, overlay]) { c.width = Math.round(SIZE * dpr); c.height = Math.round(SIZE * dpr); }
  const XY = new Float64Array(2 * N);
  const jitterSeed = { s: 12345 };
  function rand() { jitterSeed.s = (jitterSeed.s * 1103515245 + 12345) % 2147483648; return jitterSeed.s / 2147483648; }
  for (let i = 0; i < N; i++) {
    const [a, b] = toPlane(point(i));
    XY[2 * i] = a;
    XY[2 * i + 1] = VIEW.mode === "strip" ? LABELS[i] + (rand() - 0.5) * 0.6 : b;
  }
  const bounds = (function () {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < N; i++) {
      x0 = Math.min(x0, XY[2 * i]); x1 = Math.max(x1, XY[2 * i]);
      y0 = Math.min(y0, XY[2 * i + 1]); y1 = Math.max(y1, XY[2 * i + 1]);
    }
    if (!(x1 > x0)) { x0 = -3; x1 = 3; }
    if (!(y1 > y0)) { y0 = -3; y1 = 3; }
    if (VIEW.mode === "strip") {
      const px = 0.08 * (x1 - x0);
      return { x0: x0 - px, x1: x1 + px, y0: labelCount - 0.4, y1: -0.6 };  // label 0 on top
    }
    const span = 1.12 * Math.max(x1 - x0, y1 - y0), cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    return { x0: cx - span / 2, x1: cx + span / 2, y0: cy - span / 2, y1: cy + span / 2 };
  })();

  // canvas CSS pixels <-> plane coordinates (y up, except the strip's label rows)
  function toPixel(a, b) {
    const px = (a - bounds.x0) / (bounds.x1 - bounds.x0) * SIZE;
    const py = b === null ? SIZE / 2 : (bounds.y1 - b) / (bounds.y1 - bounds.y0) * SIZE;
    return [px, py];
  }
  function fromPixel(px, py) {
    return [bounds.x0 + px / SIZE * (bounds.x1 - bounds.x0), bounds.y1 - py / SIZE * (bounds.y1 - bounds.y0)];
  }

  function pointToLatent(px, py) {
    const [a, b] = fromPixel(px, py);
    return fromPlane(a, b, state.z);
  }
  function latentToPoint(z) { const [a, b] = toPlane(z); return toPixel(a, b); }

  function niceTicks(lo, hi, count) {
    const raw = (hi - lo) / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    const step = (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag, ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9 * step; t += step) ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    return ticks;
  }

  function drawPoints() {
    const ctx = pointsCanvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, SIZE, SIZE);
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#eee"; ctx.fillStyle = "#999"; ctx.lineWidth = 1;
    const xs = niceTicks(Math.min(bounds.x0, bounds.x1), Math.max(bounds.x0, bounds.x1), 8);
    for (const t of xs) {
      const [px] = toPixel(t, 0);
      ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, SIZE); ctx.stroke();
      if (px < SIZE - 16) ctx.fillText(String(+t.toFixed(6)), px + 2, SIZE - 4);
    }
    if (VIEW.mode === "strip") {
      for (let k = 0; k < labelCount; k++) {
        const [, py] = toPixel(0, k);
        ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(SIZE, py); ctx.stroke();
        ctx.fillText(DATA.label_names[k] || String(k), 4, py - 3);
      }
    } else {
      for (const t of niceTicks(bounds.y0, bounds.y1, 8)) {
        const [, py] = toPixel(0, t);
        ctx.beginPath(); ctx.moveTo(0, py); ctx.lineTo(SIZE, py); ctx.stroke();
        if (py > 14 && py < SIZE - 16) ctx.fillText(String(+t.toFixed(6)), 4, py - 3);
      }
      const [ox, oy] = toPixel(0, 0);  // the axes through the origin (z = 0, or the posterior mean for PCA)
      ctx.strokeStyle = "#ccc";
      ctx.beginPath(); ctx.moveTo(ox, 0); ctx.lineTo(ox, SIZE); ctx.moveTo(0, oy); ctx.lineTo(SIZE, oy); ctx.stroke();
    }
    ctx.globalAlpha = 0.65;
    for (let i = 0; i < N; i++) {
      const [px, py] = toPixel(XY[2 * i], XY[2 * i + 1]);
      ctx.fillStyle = TAB10[LABELS[i] % 10];
      ctx.beginPath(); ctx.arc(px, py, 2.1, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
  }

  function marker(ctx, z, color, text) {
    const [px, py] = latentToPoint(z);
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff";
    ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI); ctx.stroke();
    ctx.strokeStyle = color; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(px, py, 6, 0, 2 * Math.PI); ctx.stroke();
    if (text) {
      ctx.font = "bold 12px system-ui, sans-serif"; ctx.fillStyle = color;
      ctx.fillText(text, px + 8, py - 8);
    }
    return [px, py];
  }

  function drawOverlay() {
    const ctx = overlay.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, SIZE, SIZE);
    if (state.a && state.b) {
      const pa = latentToPoint(state.a), pb = latentToPoint(state.b);
      ctx.strokeStyle = "#333"; ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.moveTo(pa[0], pa[1]); ctx.lineTo(pb[0], pb[1]); ctx.stroke();
      ctx.setLineDash([]);
    }
    if (state.a) marker(ctx, state.a, "#c0392b", "A");
    if (state.b) marker(ctx, state.b, "#1b5fbf", "B");
    const [px, py] = latentToPoint(state.z);
    ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.moveTo(px - 9, py); ctx.lineTo(px + 9, py); ctx.moveTo(px, py - 9); ctx.lineTo(px, py + 9); ctx.stroke();
  }

  // ------------------------------------------------------------ images

  function paint(canvas, image) {
    canvas.width = W; canvas.height = H;
    const ctx = canvas.getContext("2d"), out = ctx.createImageData(W, H), px = out.data, plane = H * W;
    for (let i = 0; i < plane; i++) {
      const r = image[i], g = C === 3 ? image[plane + i] : r, b = C === 3 ? image[2 * plane + i] : r;
      px[4 * i] = Math.round(r * 255); px[4 * i + 1] = Math.round(g * 255); px[4 * i + 2] = Math.round(b * 255);
      px[4 * i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  function decode(z, y) {
    if (!decoder) throw new Error("this page cannot decode this model: " + DATA.unsupported);
    return decoder(z, y === undefined ? state.y : y);
  }

  const imageCanvas = $("image");
  const scale = Math.max(1, Math.floor(280 / Math.max(H, W)));
  for (const el of [imageCanvas, imageCanvas.parentElement]) {
    el.style.width = (W * scale) + "px"; el.style.height = (H * scale) + "px";
  }

  function fmt(v) { return (v <= -0.005 ? "\u2212" : " ") + Math.abs(v).toFixed(2); }

  function redraw() {
    drawOverlay();
    if (decoder) {
      const t0 = performance.now();
      state.image = decode(state.z, state.y);
      const ms = performance.now() - t0;
      state.decodeMs = state.decodeMs ? 0.8 * state.decodeMs + 0.2 * ms : ms;
      paint(imageCanvas, state.image);
      $("timing").textContent = "decoded in the page: " + state.decodeMs.toFixed(2) + " ms";
    }
    const z = state.z;
    let text;
    if (LAT.kind === "categorical") {
      const K = LAT.categories, parts = [];
      for (let v = 0; v < LAT.variables; v++) {
        let best = 0;
        for (let k = 1; k < K; k++) if (z[v * K + k] > z[v * K + best]) best = k;
        parts.push(best + " (" + z[v * K + best].toFixed(2) + ")");
      }
      text = "most likely class per variable: " + parts.join(" ");
    } else {
      text = D <= 10 ? "z = (" + z.map(fmt).join(", ") + ")" : "z: " + D + " coordinates (see the sliders)";
    }
    if (VIEW.mode === "pca") {
      const [a, b] = toPlane(z), off = offPlane(z);
      text += "\nPC1 " + fmt(a) + ", PC2 " + fmt(b) + (off > 1e-6 ? ", off the plane by " + off.toFixed(2) : "");
      $("to-plane").hidden = !(off > 1e-6);
    }
    if (DATA.n_labels) text += "\nlabel y = " + (DATA.label_names[state.y] || state.y);
    $("readout").textContent = text;
    syncSliders();
    state.frames++;
  }

  let scheduled = null;
  function schedule() {
    if (scheduled === null) scheduled = requestAnimationFrame(() => { scheduled = null; redraw(); });
  }

  function setLatent(z, now) {
    state.z = Array.from(z, Number);
    if (now) redraw(); else schedule();
  }

  // ------------------------------------------------------------ sliders, categorical cells, labels

  const sliderBox = $("sliders"), sliders = [], cells = [];
  if (LAT.kind === "categorical") {
    const K = LAT.categories;
    for (let v = 0; v < LAT.variables; v++) {
      const row = document.createElement("div");
      row.className = "cats";
      row.append("v" + v + " ");
      for (let k = 0; k < K; k++) {
        const cell = document.createElement("span");
        cell.className = "cell";
        cell.title = "variable " + v + ": class " + k;
        cell.addEventListener("click", () => {
          const z = state.z.slice();
          for (let j = 0; j < K; j++) z[v * K + j] = j === k ? 1 : 0;
          setLatent(z);
        });
        cells.push(cell);
        row.append(cell);
      }
      sliderBox.append(row);
    }
    $("coords-title").textContent = "Categorical variables: click a class (shade = probability)";
    sliderBox.style.gridTemplateColumns = "repeat(auto-fill, minmax(" + (30 + 18 * K) + "px, 1fr))";
  } else {
    for (let i = 0; i < D; i++) {
      const label = document.createElement("label"), input = document.createElement("input");
      const val = document.createElement("span");
      const [lo, hi] = DATA.slider_range[i];
      input.type = "range"; input.min = lo; input.max = hi; input.step = 0.01; input.value = state.z[i];
      input.id = "z" + i;
      val.className = "val";
      input.addEventListener("input", () => { const z = state.z.slice(); z[i] = +input.value; setLatent(z); });
      label.append("z" + i, input, val);
      sliders.push([input, val]);
      sliderBox.append(label);
    }
  }

  function syncSliders() {
    for (let i = 0; i < sliders.length; i++) {
      const [input, val] = sliders[i];
      if (document.activeElement !== input) input.value = state.z[i];
      val.textContent = fmt(state.z[i]);
    }
    for (let i = 0; i < cells.length; i++) {
      const p = Math.min(1, Math.max(0, state.z[i]));
      cells[i].style.background = "rgba(27, 95, 191, " + p.toFixed(3) + ")";
      cells[i].title = cells[i].title.replace(/ \(p = .*\)$/, "") + " (p = " + p.toFixed(2) + ")";
    }
  }

  $("to-plane").addEventListener("click", () => { const [a, b] = toPlane(state.z); setLatent(fromPlane(a, b, M)); });

  if (DATA.n_labels) {
    $("label-box").hidden = false;
    const box = $("label-buttons");
    for (let k = 0; k < DATA.n_labels; k++) {
      const button = document.createElement("button");
      button.textContent = DATA.label_names[k] || String(k);
      button.dataset.label = k;
      button.addEventListener("click", () => setLabel(k));
      box.append(button);
    }
  }
  function setLabel(k) {
    state.y = k;
    for (const b of document.querySelectorAll("#label-buttons button")) b.classList.toggle("on", +b.dataset.label === k);
    drawStrip();
    schedule();
  }

  // ------------------------------------------------------------ interpolation

  const STEPS = 10;
  function interpolate(a, b, steps) {
    const out = [];
    for (let s = 0; s < steps; s++) {
      const t = s / (steps - 1);
      out.push(a.map((v, i) => (1 - t) * v + t * b[i]));
    }
    return out;
  }

  let stripImages = null;
  function drawStrip() {
    const strip = $("strip");
    strip.replaceChildren();
    stripImages = null;
    if (!state.a || !state.b) {
      $("strip-note").textContent = state.a ? "A is set; click a second point" : "click two points on the map";
      return;
    }
    const where = (z) => VIEW.mode === "pca" ? "(" + toPlane(z).map(fmt).join(",") + ")" : "(" + z.map(fmt).join(",") + ")";
    $("strip-note").textContent = "from A " + where(state.a) + " to B " + where(state.b) + " in " + STEPS +
      " steps, linear in z" + (VIEW.mode === "pca" ? " (A and B in PC coordinates)" : "") +
      (DATA.n_labels ? ", label " + (DATA.label_names[state.y] || state.y) : "");
    if (!decoder) return;
    stripImages = interpolate(state.a, state.b, STEPS).map((z) => decode(z, state.y));
    for (const image of stripImages) {
      const canvas = document.createElement("canvas");
      canvas.className = "frame";
      paint(canvas, image);
      strip.append(canvas);
    }
  }

  function pick(z) {
    if (!state.a || state.b) { state.a = z.slice(); state.b = null; } else { state.b = z.slice(); }
    drawStrip();
    schedule();
  }
  $("clear-strip").addEventListener("click", () => { state.a = state.b = null; drawStrip(); schedule(); });

  // ------------------------------------------------------------ the pointer

  function nearest(px, py, within) {
    let best = -1, bestD = within * within;
    for (let i = 0; i < N; i++) {
      const [qx, qy] = toPixel(XY[2 * i], XY[2 * i + 1]);
      const d = (qx - px) * (qx - px) + (qy - py) * (qy - py);
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function latentAt(event) {
    const rect = overlay.getBoundingClientRect();
    const px = Math.min(SIZE, Math.max(0, (event.clientX - rect.left) * SIZE / rect.width));
    const py = Math.min(SIZE, Math.max(0, (event.clientY - rect.top) * SIZE / rect.height));
    if ($("snap").checked) {
      const i = nearest(px, py, 10);
      if (i >= 0) return point(i);
    }
    return pointToLatent(px, py);
  }

  let down = null;
  overlay.addEventListener("pointerdown", (e) => {
    down = { x: e.clientX, y: e.clientY, moved: false };
    overlay.setPointerCapture(e.pointerId);
    setLatent(latentAt(e));
  });
  overlay.addEventListener("pointermove", (e) => {
    if (down && Math.hypot(e.clientX - down.x, e.clientY - down.y) > 4) down.moved = true;
    setLatent(latentAt(e));
  });
  overlay.addEventListener("pointerup", (e) => {
    if (down && !down.moved) pick(latentAt(e));
    down = null;
  });
  overlay.addEventListener("pointercancel", () => { down = null; });

  // ------------------------------------------------------------ start, and the API the tests use

  const legend = $("legend"), counts = new Array(labelCount).fill(0);
  for (const l of LABELS) counts[l]++;
  for (let k = 0; k < labelCount; k++) {
    if (!counts[k]) continue;
    const item = document.createElement("span"), sw = document.createElement("span");
    sw.className = "sw"; sw.style.background = TAB10[k % 10];
    item.append(sw, (DATA.label_names[k] || String(k)) + " (" + counts[k] + ")");
    legend.append(item);
  }
  $("xlabel").textContent = VIEW.xlabel;
  $("ylabel").textContent = VIEW.ylabel;
  $("mode-note").textContent = {
    strip: "1-D latent: x is z0, one row per label",
    direct: "the 2-D latent itself: posterior means of test images",
    pca: (LAT.kind === "categorical" ? "category probabilities" : D + "-D latent") +
         " on its first two principal axes; off-plane coordinates come from the sliders",
  }[VIEW.mode];
  $("head-note").textContent = decoder ? "Pixel values are the decoder mean: " + DATA.head_mean + "." : "";
  if (!decoder) {
    $("cannot").style.display = "block";
    $("cannot").textContent = "This page cannot decode this model: " + DATA.unsupported + ".";
  }
  if (DATA.n_labels) setLabel(0);
  drawPoints();
  redraw();

  function decodesPerSecond(ms, draw) {
    ms = ms || 1000;
    if (!decoder) return 0;
    const canvas = document.createElement("canvas");
    let n = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < ms) {
      const z = N ? point(n % N) : M.map(() => Math.random() * 2 - 1);
      const image = decode(z, state.y);
      if (draw) paint(canvas, image);
      n++;
      t = performance.now();
    }
    return n / ((t - t0) / 1000);
  }

  window.vaelab = {
    supported: !!decoder,
    reason: DATA.unsupported,
    latentSize: D, nLabels: DATA.n_labels, imageShape: DATA.image_shape, size: SIZE,
    view: { mode: VIEW.mode, mean: M.slice(), axes: [U.slice(), V.slice()] },
    decode: decode,
    pointToLatent: pointToLatent,
    latentToPoint: latentToPoint,
    setLatent: (z) => setLatent(z, true),
    setLabel: (k) => { setLabel(k); redraw(); },
    current: () => ({ z: state.z.slice(), y: state.y, a: state.a, b: state.b }),
    lastImage: () => state.image,
    interpolation: () => (state.a && state.b ? { a: state.a.slice(), b: state.b.slice(), steps: STEPS, images: stripImages } : null),
    points: () => ({ z: Array.from(POINTS), labels: LABELS.slice() }),
    decodesPerSecond: decodesPerSecond,
    settle: () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => resolve(state.frames)))),
  };
})();
