"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("vaelab-data").textContent);
  const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  const $ = (id) => document.getElementById(id);
  const [C, H, W] = DATA.image_shape;
  const N_PIX = C * H * W;
  const LAT = DATA.latent, D = LAT.size, VIEW = DATA.view;
  // A grey set stored white on black (MNIST) is drawn dark ink on white, as the figures draw it
  // (catalog.drawn_inverted); a user's own images are drawn in their own levels.
  const INK = !!DATA.inverted && C === 1;
  document.body.classList.toggle("ink", INK);

  function bytesFromBase64(text) {
    const bin = atob(text), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }
  function floatsFromBase64(text) { return new Float32Array(bytesFromBase64(text).buffer); }

  // ------------------------------------------------------------ the decoder, layer by layer
  // Weights are float32 as trained, widened once to float64; sums and activations are float64.
  // Every layer with weights runs as a transposed convolution: a Linear is one with a 1x1 kernel
  // on a 1x1 input. A tensor between layers is {data, C, P, ps, cs}: C channels of P pixels, the
  // value (c, p) at data[p * ps + c * cs], so that a layer can write the layout the next one
  // reads fastest (channel last) and a reshape costs nothing when the layout already matches.
  // Nothing is allocated per decode: every layer owns its buffers.

  function sigmoid(x) {
    if (x >= 0) return 1 / (1 + Math.exp(-x));
    const e = Math.exp(x);
    return e / (1 + e);
  }

  const BLOCK = 4;  // output channels summed at once: one input read feeds four sums

  function taps(nOut, nIn, k, stride, pad, dilation, weightStep, inputStep) {
    // Per output index, the pairs [tap * weightStep, input index * inputStep] of the taps that
    // reach it: out = in * stride - pad + tap * dilation, as torch's conv_transpose2d.
    const all = [];
    for (let o = 0; o < nOut; o++) {
      const list = [];
      for (let t = 0; t < k; t++) {
        const u = o + pad - t * dilation;
        if (u >= 0 && u % stride === 0 && u / stride < nIn) list.push(t * weightStep, (u / stride) * inputStep);
      }
      all.push(Int32Array.from(list));
    }
    return all;
  }

  function asConv(l) {  // a Linear as a transposed convolution with a 1x1 kernel on a 1x1 input
    if (l.op === "conv_transpose") return l;
    return { op: "conv_transpose", in_shape: [l.in, 1, 1], out_shape: [l.out, 1, 1], kernel: [1, 1], stride: [1, 1],
             padding: [0, 0], dilation: [1, 1], torchWeight: (c, o) => l.w[o * l.in + c], b: l.b };
  }

  function planConv(spec) {
    const [Ci, Hi, Wi] = spec.in_shape, [Co, Ho, Wo] = spec.out_shape, [kh, kw] = spec.kernel;
    const Cp = Math.ceil(Co / BLOCK) * BLOCK, taps2 = kh * kw;
    const torchWeight = spec.torchWeight || ((c, o, t) => spec.w[(c * Co + o) * taps2 + t]);  // (Ci, Co, kh, kw)
    const w = new Float64Array(taps2 * Ci * Cp);  // [tap][c][o], o padded to Cp with zeros
    for (let t = 0; t < taps2; t++)
      for (let c = 0; c < Ci; c++)
        for (let o = 0; o < Co; o++) w[(t * Ci + c) * Cp + o] = torchWeight(c, o, t);
    const b = new Float64Array(Cp);
    b.set(spec.b);
    const step = Ci * Cp;
    return {
      Ci, Pi: Hi * Wi, Co, Cp, Ho, Wo, w, b,
      rows: taps(Ho, Hi, kh, spec.stride[0], spec.padding[0], spec.dilation[0], kw * step, Wi),
      cols: taps(Wo, Wi, kw, spec.stride[1], spec.padding[1], spec.dilation[1], step, 1),
      nnz: new Int32Array(Hi * Wi), idx: new Int32Array(Hi * Wi * Ci), val: new Float64Array(Hi * Wi * Ci),
      out: { data: new Float64Array(Ho * Wo * Cp), C: Co, P: Ho * Wo, ps: Cp, cs: 1 },  // channel last
    };
  }

  function compact(l, t) {
    // Per input pixel, its nonzero inputs (value, and where its weights start): a ReLU zeroes
    // many, and a zero adds nothing to any sum.
    const Ci = l.Ci, Cp = l.Cp, nnz = l.nnz, idx = l.idx, val = l.val, data = t.data, ps = t.ps, cs = t.cs;
    for (let p = 0; p < l.Pi; p++) {
      const base = p * Ci;
      let n = 0;
      for (let c = 0, at = p * ps; c < Ci; c++, at += cs) {
        const v = data[at];
        if (v !== 0) { idx[base + n] = c * Cp; val[base + n] = v; n++; }
      }
      nnz[p] = n;
    }
  }

  function convTranspose(l, t) {
    // Gather: each output pixel sums, over the taps that reach it and the nonzero inputs there,
    // four output channels at a time; the output is written channel last.
    compact(l, t);
    const { Ci, Cp, Ho, Wo, w, b, nnz, idx, val, rows, cols } = l, out = l.out.data;
    for (let oy = 0; oy < Ho; oy++) {
      const rt = rows[oy];
      for (let ox = 0; ox < Wo; ox++) {
        const ct = cols[ox], ob = (oy * Wo + ox) * Cp;
        for (let o = 0; o < Cp; o += BLOCK) {
          let s0 = b[o], s1 = b[o + 1], s2 = b[o + 2], s3 = b[o + 3];
          for (let r = 0; r < rt.length; r += 2) {
            for (let q = 0; q < ct.length; q += 2) {
              const wb = rt[r] + ct[q] + o, pix = rt[r + 1] + ct[q + 1], end = pix * Ci + nnz[pix];
              for (let j = pix * Ci; j < end; j++) {
                const v = val[j], i = wb + idx[j];
                s0 += w[i] * v; s1 += w[i + 1] * v; s2 += w[i + 2] * v; s3 += w[i + 3] * v;
              }
            }
          }
          out[ob + o] = s0; out[ob + o + 1] = s1; out[ob + o + 2] = s2; out[ob + o + 3] = s3;
        }
      }
    }
    return l.out;
  }

  function flatten(t, scratch) {  // t as torch lays it out, channel-major: (c, p) at c * P + p
    if (t.cs === t.P && (t.ps === 1 || t.P === 1)) return t.data;
    const { data, C, P, ps, cs } = t;
    for (let c = 0; c < C; c++)
      for (let p = 0; p < P; p++) scratch[c * P + p] = data[p * ps + c * cs];
    return scratch;
  }

  function reshaped(t, C, P, scratch, view) {  // t read as C channels of P pixels, as torch's reshape would
    if (t.C === C && t.P === P) return t;
    view.data = flatten(t, scratch); view.C = C; view.P = P; view.ps = 1; view.cs = P;
    return view;
  }

  function activate(l, t) {  // in place; padding channels are never read, so their values do not matter
    const x = t.data, n = x.length;
    if (l.op === "relu") for (let i = 0; i < n; i++) { if (x[i] < 0) x[i] = 0; }
    else if (l.op === "tanh") for (let i = 0; i < n; i++) x[i] = Math.tanh(x[i]);
    else if (l.op === "softplus") {  // torch: x where beta x > threshold, else log(1 + e^(beta x)) / beta
      const beta = l.beta, th = l.threshold;
      for (let i = 0; i < n; i++) { const bx = beta * x[i]; if (bx <= th) x[i] = Math.log1p(Math.exp(bx)) / beta; }
    }
    else if (l.op === "elu") {  // torch: x where x > 0, else alpha (e^x - 1)
      const alpha = l.alpha;
      for (let i = 0; i < n; i++) { if (x[i] <= 0) x[i] = alpha * Math.expm1(x[i]); }
    }
    return t;
  }

  function glu(l, t) {
    // torch's GLU over the channels: the first half times the sigmoid of the second, (W x + b)
    // sigmoid(V x + c) for a gated layer's [W; V]. In place: channel c < half is written after
    // both it and c + half are read, and no channel >= half is written; `l.view` reads the first half.
    const half = t.C / 2, { data, P, ps, cs } = t;
    for (let p = 0; p < P; p++)
      for (let c = 0, at = p * ps; c < half; c++, at += cs) data[at] *= sigmoid(data[at + half * cs]);
    const v = l.view;
    v.data = data; v.C = half; v.P = P; v.ps = ps; v.cs = cs;
    return v;
  }

  function makeHead(head) {
    function cbMean(eta) {  // the continuous Bernoulli's mean, as likelihoods.continuous_bernoulli_mean
      if (Math.abs(eta) < head.taylor_below) return 0.5 + eta / 12 - eta * eta * eta / 720;
      return 0.5 + 0.5 / Math.tanh(eta / 2) - 1 / eta;
    }

    function logisticMean(raw, logScale) {
      // E[x] = sum_{j=1}^{top} sigmoid((loc - (j - 1/2)) / s) / top, loc and s in bin units (exact).
      // sigmoid(...) = 1 / (1 + e_j) with e_j = exp((j - 1/2 - loc) / s) = e_j0 * r^(j - j0), so
      // one exp serves every level: walk out from the level nearest loc, each e_j one product away,
      // and stop where the terms have saturated to 0 (upwards) or 1 (downwards) beyond float64.
      const top = head.n_levels - 1, loc = sigmoid(raw) * top;
      const invS = Math.exp(-Math.min(Math.max(logScale, head.log_scale_min), head.log_scale_max)) / top;
      const r = Math.exp(invS), rInv = 1 / r, j0 = Math.min(top, Math.max(1, Math.round(loc + 0.5)));
      let total = 0, e = Math.exp((j0 - 0.5 - loc) * invS);
      for (let j = j0; j <= top && e < 1e17; j++, e *= r) total += 1 / (1 + e);
      e = Math.exp((j0 - 1.5 - loc) * invS);
      for (let j = j0 - 1; j >= 1; j--, e *= rInv) {
        if (e < 1e-17) { total += j; break; }
        total += 1 / (1 + e);
      }
      return total / top;
    }

    return function mean(out, image) {  // out: the decoder output, parameter-major; image: C*H*W
      const n = image.length;
      const type = head.type;
      if (type === "bernoulli" || type === "gaussian") for (let i = 0; i < n; i++) image[i] = sigmoid(out[i]);
      else if (type === "continuous_bernoulli") for (let i = 0; i < n; i++) image[i] = cbMean(out[i]);
      else if (type === "discretized_logistic") for (let i = 0; i < n; i++) image[i] = logisticMean(out[i], out[n + i]);
      else throw new Error("unknown head " + type);
      return image;
    };
  }

  function makeDecoder(spec) {
    const weights = floatsFromBase64(spec.weights);
    const view = (ref) => weights.subarray(ref[0], ref[0] + ref[1]);
    const steps = spec.layers.map((l) => {
      if (!l.weight) return Object.assign({ view: {} }, l);
      const plan = planConv(asConv(Object.assign({}, l, { w: view(l.weight), b: view(l.bias) })));
      return Object.assign({ op: "conv" }, plan, { scratch: new Float64Array(plan.Ci * plan.Pi), view: {} });
    });
    const input = { data: new Float64Array(spec.input), C: spec.input, P: 1, ps: 1, cs: 1 };
    const image = new Float32Array(N_PIX), mean = makeHead(spec.head);
    const outScratch = new Float64Array(spec.head.params_per_pixel * N_PIX);

    function run() {  // the decoder output, parameter-major (torch's flat order)
      let t = input;
      for (const l of steps) {
        if (l.op === "conv") t = convTranspose(l, reshaped(t, l.Ci, l.Pi, l.scratch, l.view));
        else if (l.op === "glu") t = glu(l, t);
        else if (l.op !== "reshape") t = activate(l, t);  // a reshape is how the next layer reads t
      }
      return flatten(t, outScratch);
    }

    // decode(z, y) -> the image mean (C*H*W float32, channel-major), in a buffer the next call reuses
    return function decode(z, y) {
      if (z.length !== spec.latent_size) throw new Error("z has " + z.length + " entries, the decoder takes " + spec.latent_size);
      const x = input.data;
      for (let i = 0; i < spec.latent_size; i++) x[i] = +z[i];
      if (spec.n_labels) {
        if (!(Number.isInteger(y) && y >= 0 && y < spec.n_labels)) throw new Error("a conditional model: pass a label y in 0.." + (spec.n_labels - 1));
        for (let k = 0; k < spec.n_labels; k++) x[spec.latent_size + k] = (k === y) ? 1 : 0;
      }
      return mean(run(), image);
    };
  }

  const decoder = DATA.spec ? makeDecoder(DATA.spec) : null;

  // ------------------------------------------------------------ the latent plane

  const POINTS = floatsFromBase64(DATA.points), LABELS = DATA.labels, N = LABELS.length;
  const M = VIEW.mean, U = VIEW.axes[0], V = VIEW.axes[1];
  const labelCount = Math.max(DATA.label_names.length, 1);
  const state = { z: M.slice(), y: 0, a: null, b: null, image: new Float32Array(N_PIX), decodeMs: 0, frames: 0 };

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

  // A decoder too large to run live ships a grid of images PyTorch decoded when the page was
  // written: (label, b, a) nodes over the map, 8-bit, each image C*H*W channel-major.
  const GRID = DATA.precomputed;
  const gridPixels = GRID ? bytesFromBase64(GRID.pixels) : null;
  const gridImage = new Float32Array(N_PIX);

  function nearestNode(values, v) {  // the index of the evenly spaced grid value nearest v
    if (values.length < 2) return 0;
    const step = (values[values.length - 1] - values[0]) / (values.length - 1);
    return Math.min(values.length - 1, Math.max(0, Math.round((v - values[0]) / step)));
  }

  function gridNode(z, y) {  // [a index, b index, label] of the grid node nearest z's place on the map
    const [a, b] = toPlane(z);
    return [nearestNode(GRID.a, a), GRID.b ? nearestNode(GRID.b, b) : 0, DATA.n_labels ? y : 0];
  }

  function precomputed(z, y) {
    const [i, j, label] = gridNode(z, y), nb = GRID.b ? GRID.b.length : 1;
    const start = ((label * nb + j) * GRID.a.length + i) * N_PIX;
    for (let k = 0; k < N_PIX; k++) gridImage[k] = gridPixels[start + k] / 255;
    return gridImage;
  }

  // The image mean at z: decoded live, else the nearest precomputed one; in a buffer the next call reuses.
  function imageAt(z, y) {
    if (decoder) return decoder(z, y);
    if (GRID) return precomputed(z, y);
    throw new Error("this page cannot decode this model: " + DATA.unsupported);
  }

  function decode(z, y) {  // the public decode: a copy, which the next decode leaves alone
    if (!decoder) throw new Error((GRID ? "this page does not decode live: " : "this page cannot decode this model: ") +
                                  DATA.unsupported);
    return decoder(z, y === undefined ? state.y : y).slice();
  }

  const imageData = new WeakMap();  // canvas -> its ImageData, made once
  function paint(canvas, image) {  // the image at its own size; CSS scales it up, pixelated
    if (canvas.width !== W || canvas.height !== H || !imageData.has(canvas)) {
      canvas.width = W; canvas.height = H;
      const fresh = canvas.getContext("2d").createImageData(W, H);
      fresh.data.fill(255);  // opaque
      imageData.set(canvas, fresh);
    }
    const out = imageData.get(canvas), px = out.data, plane = H * W, g = C === 3 ? plane : 0, b = 2 * g;
    for (let i = 0, q = 0; i < plane; i++, q += 4) {  // Uint8ClampedArray rounds and clamps
      if (INK) { px[q] = px[q + 1] = px[q + 2] = (1 - image[i]) * 255; continue; }
      px[q] = image[i] * 255; px[q + 1] = image[g + i] * 255; px[q + 2] = image[b + i] * 255;
    }
    canvas.getContext("2d").putImageData(out, 0, 0);
  }

  const imageCanvas = $("image");
  // Up-scaled by a whole factor, every image pixel is the same number of screen pixels; an
  // image larger than the box is shrunk to fit it.
  const side = Math.max(H, W), scale = side <= 280 ? Math.floor(280 / side) : 280 / side;
  for (const el of [imageCanvas, imageCanvas.parentElement]) {
    el.style.width = Math.round(W * scale) + "px"; el.style.height = Math.round(H * scale) + "px";
  }

  function timingText(ms) {
    if (!decoder) return "precomputed image (the grid point nearest the pointer): not decoded in the page";
    return "decoded in the page in " + ms.toFixed(2) + " ms: about " + Math.round(1000 / Math.max(ms, 1e-3)) +
      " decodes a second";
  }

  function fmt(v) { return (v <= -0.005 ? "\u2212" : " ") + Math.abs(v).toFixed(2); }

  function redraw() {
    drawOverlay();
    if (decoder || GRID) {
      const t0 = performance.now();
      const image = imageAt(state.z, state.y);
      const ms = performance.now() - t0;
      state.decodeMs = state.decodeMs ? 0.8 * state.decodeMs + 0.2 * ms : ms;
      state.image.set(image);
      paint(imageCanvas, image);
      $("timing").textContent = timingText(state.decodeMs);
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
      (DATA.n_labels ? ", label " + (DATA.label_names[state.y] || state.y) : "") +
      (GRID ? "; each image the precomputed one nearest its point" : "");
    if (!decoder && !GRID) return;
    stripImages = interpolate(state.a, state.b, STEPS).map((z) => imageAt(z, state.y).slice());
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
  $("head-note").textContent = decoder || GRID ? "Pixel values are the decoder mean: " + DATA.head_mean + "." : "";
  if (!decoder && !GRID) {
    $("cannot").style.display = "block";
    $("cannot").textContent = "This page cannot decode this model: " + DATA.unsupported + ".";
  }
  $("speed").hidden = !decoder;
  if (DATA.n_labels) setLabel(0);
  drawPoints();
  redraw();

  // ------------------------------------------------------------ speed

  function randomLatent() {  // a z of the prior's bulk (a point of the simplices for categorical latents)
    const z = M.map(() => (LAT.kind === "categorical" ? Math.random() : 4 * Math.random() - 2));
    return LAT.kind === "categorical" ? projectCategorical(z) : z;
  }

  // Decodes of random z (each drawn too, when `draw`) for about `ms` milliseconds, shown on the
  // page: {decodes, seconds, rate}; null where the page does not decode live.
  function measureSpeed(ms, draw) {
    if (!decoder) return null;
    const canvas = document.createElement("canvas"), zs = Array.from({ length: 16 }, randomLatent);
    let n = 0, t = performance.now();
    const t0 = t;
    do {
      const image = decoder(zs[n % zs.length], state.y);
      if (draw) paint(canvas, image);
      n++;
      t = performance.now();
    } while (t - t0 < ms);
    const result = { decodes: n, seconds: (t - t0) / 1000, rate: n / ((t - t0) / 1000), draw: !!draw };
    $("speed-text").textContent = "measured: " + Math.round(result.rate) + " decodes a second (" + n +
      " random z decoded" + (draw ? " and drawn" : "") + " in " + result.seconds.toFixed(2) + " s)";
    return result;
  }
  $("measure").addEventListener("click", () => measureSpeed(1000, true));

  window.vaelab = {
    supported: !!decoder,
    mode: decoder ? "live" : GRID ? "precomputed" : "none",
    reason: DATA.unsupported,
    cost: DATA.cost, liveLimit: DATA.live_limit,
    grid: GRID ? { a: GRID.a.slice(), b: GRID.b ? GRID.b.slice() : null } : null,
    latentSize: D, nLabels: DATA.n_labels, imageShape: DATA.image_shape, inverted: INK, size: SIZE,
    view: { mode: VIEW.mode, mean: M.slice(), axes: [U.slice(), V.slice()] },
    decode: decode,
    pointToLatent: pointToLatent,
    latentToPoint: latentToPoint,
    setLatent: (z) => setLatent(z, true),
    setLabel: (k) => { setLabel(k); redraw(); },
    current: () => ({ z: state.z.slice(), y: state.y, a: state.a, b: state.b }),
    lastImage: () => state.image.slice(),
    interpolation: () => (state.a && state.b ? { a: state.a.slice(), b: state.b.slice(), steps: STEPS, images: stripImages } : null),
    points: () => ({ z: Array.from(POINTS), labels: LABELS.slice() }),
    measureSpeed: measureSpeed,
    decodesPerSecond: (ms, draw) => (decoder ? measureSpeed(ms || 1000, draw).rate : 0),
    settle: () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => resolve(state.frames)))),
  };
})();
