import { at, evens, hsum64 as hsum, madd, odds, partStart } from './common';

// Backward of 3x3 convolutions with padding 1, stride 1 or 2 (depthwise, pooling as a depthwise conv, the
// stem) through zero-padded copies of one plane in scratch: the loops then run four columns at a time with no
// border cases or tails, and copying a plane costs about a ninth of its taps.

function ceil4(n: i32): i32 {
  return (n + 3) & ~3;
}

/** Floats of the widest padded row: 2 * ceil4(W) + 4 at stride 2 (and W >= OW), plus room. */
function rowFloats(W: i32): i32 {
  return 2 * ceil4(W) + 12;
}

/** Floats of one part's scratch: two padded planes of up to H + 3 rows. */
function partFloats(H: i32, W: i32): i32 {
  return (2 * (H + 3) * rowFloats(W) + 15) & ~15;
}

/** Bytes of one weight-gradient work item's running sums: ten f32x4 and ten f64. */
const ITEM_BYTES = 10 * 16 + 10 * 8;

/**
 * Bytes of scratch the kernels below need for all `parts` (part k uses the k-th slice of the planes) and
 * `items` weight-gradient work items (0 for the input gradient).
 */
export function conv3x3ScratchBytes(H: i32, W: i32, items: i32, parts: i32): i32 {
  return partFloats(H, W) * 4 * parts + items * ITEM_BYTES;
}

/** This part's scratch, zeroed: the padding of the copies below is never written again. */
function partScratch(scratch: usize, H: i32, W: i32, part: i32): usize {
  const n = partFloats(H, W);
  const s = scratch + ((<usize>(n * part)) << 2);
  const z = f32x4.splat(0);
  for (let i = 0; i < n; i += 4) v128.store(at(s, i), z);
  return s;
}

/** Copies `rows` rows of `cols` floats (src dense) to dst rows `ds` floats apart, leaving the rest of dst alone. */
function copyRows(src: usize, rows: i32, cols: i32, dst: usize, ds: i32): void {
  const c4 = cols & ~3;
  for (let r = 0; r < rows; r++) {
    const s = at(src, r * cols);
    const d = at(dst, r * ds);
    let i = 0;
    for (; i < c4; i += 4) v128.store(at(d, i), v128.load(at(s, i)));
    for (; i < cols; i++) store<f32>(at(d, i), load<f32>(at(s, i)));
  }
}

/**
 * Input gradient of `depthwise3x3` (padding 1, stride 1 or 2): dx[n, xOff + c, iy, ix] (+)= sum of
 * w[c][ky][kx] * dy[n, yOff + outMap(c), oy, ox] over the taps with oy*stride + ky - 1 = iy and
 * ox*stride + kx - 1 = ix. Work items: (image, channel) planes. dy is copied into a zero-padded plane, a dx row
 * is computed four (stride 1) or eight (stride 2) columns at a time into a scratch row, then stored.
 */
export function depthwise3x3BackwardInput(
  dy: usize,
  yC: i32,
  yOff: i32,
  outMap: usize,
  w: usize,
  dx: usize,
  xC: i32,
  xOff: i32,
  N: i32,
  C: i32,
  H: i32,
  W: i32,
  stride: i32,
  accumulate: bool,
  scratch: usize,
  part: i32,
  parts: i32,
): void {
  const OH = (H - 1) / stride + 1;
  const OW = (W - 1) / stride + 1;
  const vc = ceil4(OW); // dy columns computed per row (stride 2: 2 * vc dx columns)
  const PW = vc + 4; // padded dy row
  const s = partScratch(scratch, H, W, part);
  const dp = s; // stride 1: dy at (1, 1) of (H + 2) x PW; stride 2: at (0, 0) of (OH + 1) x PW
  const row = at(s, (H + 3) * rowFloats(W));
  const rb = (<usize>PW) << 2;
  const total = N * C;
  const end = partStart(total, part + 1, parts);
  for (let it = partStart(total, part, parts); it < end; it++) {
    const c = it % C;
    const n = it / C;
    const oc = outMap ? load<i32>(at(outMap, c)) : c;
    copyRows(at(dy, (n * yC + yOff + oc) * OH * OW), OH, OW, stride == 1 ? at(dp, PW + 1) : dp, PW);
    const wc = at(w, c * 9);
    const k0 = v128.load32_splat(wc);
    const k1 = v128.load32_splat(wc, 4);
    const k2 = v128.load32_splat(wc, 8);
    const k3 = v128.load32_splat(wc, 12);
    const k4 = v128.load32_splat(wc, 16);
    const k5 = v128.load32_splat(wc, 20);
    const k6 = v128.load32_splat(wc, 24);
    const k7 = v128.load32_splat(wc, 28);
    const k8 = v128.load32_splat(wc, 32);
    const xp = at(dx, (n * xC + xOff + c) * H * W);
    for (let iy = 0; iy < H; iy++) {
      if (stride == 1) {
        // dx[iy][ix] = sum w[ky][kx] * padded[iy + 2 - ky][ix + 2 - kx]: a chain per kernel row.
        const ra = dp + <usize>(iy + 2) * rb;
        const rbb = ra - rb;
        const rc = rbb - rb;
        for (let ix = 0; ix < vc; ix += 4) {
          const o = (<usize>ix) << 2;
          let a = f32x4.mul(k0, v128.load(ra + o, 8));
          a = madd(k1, v128.load(ra + o, 4), a);
          a = madd(k2, v128.load(ra + o), a);
          let b = f32x4.mul(k3, v128.load(rbb + o, 8));
          b = madd(k4, v128.load(rbb + o, 4), b);
          b = madd(k5, v128.load(rbb + o), b);
          let d = f32x4.mul(k6, v128.load(rc + o, 8));
          d = madd(k7, v128.load(rc + o, 4), d);
          d = madd(k8, v128.load(rc + o), d);
          v128.store(row + o, f32x4.add(f32x4.add(a, b), d));
        }
      } else {
        // dx[2j] = w[.][1] d[j]; dx[2j + 1] = w[.][2] d[j] + w[.][0] d[j + 1]; even rows take kernel row 1 of
        // dy row iy/2, odd rows kernel row 2 of dy row iy/2 and kernel row 0 of the next (zero past the end).
        const m = iy >> 1;
        const r0 = dp + <usize>m * rb;
        const r1 = r0 + rb;
        const odd = iy & 1;
        for (let j = 0; j < vc; j += 4) {
          const o = (<usize>j) << 2;
          const d = v128.load(r0 + o);
          const d1 = v128.load(r0 + o, 4);
          let e: v128;
          let f: v128;
          if (!odd) {
            e = f32x4.mul(k4, d);
            f = madd(k3, d1, f32x4.mul(k5, d));
          } else {
            const u = v128.load(r1 + o);
            const u1 = v128.load(r1 + o, 4);
            e = madd(k1, u, f32x4.mul(k7, d));
            f = madd(k0, u1, madd(k2, u, madd(k6, d1, f32x4.mul(k8, d))));
          }
          v128.store(row + (o << 1), f32x4.shuffle(e, f, 0, 4, 1, 5));
          v128.store(row + (o << 1), f32x4.shuffle(e, f, 2, 6, 3, 7), 16);
        }
      }
      // Inline loops: a call per row (copyRows) cost a third of this kernel's time.
      const xr = at(xp, iy * W);
      const w4 = W & ~3;
      let ix = 0;
      if (accumulate) {
        for (; ix < w4; ix += 4) {
          v128.store(at(xr, ix), f32x4.add(v128.load(at(xr, ix)), v128.load(at(row, ix))));
        }
        for (; ix < W; ix++) store<f32>(at(xr, ix), load<f32>(at(xr, ix)) + load<f32>(at(row, ix)));
      } else {
        for (; ix < w4; ix += 4) v128.store(at(xr, ix), v128.load(at(row, ix)));
        for (; ix < W; ix++) store<f32>(at(xr, ix), load<f32>(at(row, ix)));
      }
    }
  }
}

/**
 * Weight gradient of a 3x3 convolution, padding 1, stride 1 or 2, `kg` input and `og` output channels per
 * group (depthwise: 1 and 1). Work item j < O * kg is the pair (o = j % O, input channel i = j / O of o's
 * group: consecutive items share an input plane): dw[o][i][ky][kx] += sum_{n,oy,ox} dy[n, yOff + outMap(o),
 * oy, ox] * x[n, xOff + (o / og) * kg + i, oy*stride + ky - 1, ox*stride + kx - 1] (padding reads 0), and
 * dbias[o] += sum dy when i = 0 (dbias 0: none).
 * Images outer, the part's items inner (memory order); both planes are copied into zero-padded scratch; each
 * item keeps nine f32x4 sums (and one for dbias) in scratch over up to ~1024 terms per lane, then adds them
 * into f64 totals. `scratch`: conv3x3ScratchBytes(H, W, O * kg, parts).
 */
export function conv3x3BackwardWeight(
  x: usize,
  xC: i32,
  xOff: i32,
  dy: usize,
  yC: i32,
  yOff: i32,
  outMap: usize,
  dw: usize,
  dbias: usize,
  N: i32,
  O: i32,
  kg: i32,
  og: i32,
  H: i32,
  W: i32,
  stride: i32,
  scratch: usize,
  part: i32,
  parts: i32,
): void {
  const OH = (H - 1) / stride + 1;
  const OW = (W - 1) / stride + 1;
  const vc = ceil4(OW);
  const XW = stride == 1 ? vc + 4 : 2 * vc + 4; // padded x row; x at (1, 1)
  const s = partScratch(scratch, H, W, part);
  const xp = s;
  const dq = at(s, (H + 3) * rowFloats(W)); // OH x vc
  const state = scratch + ((<usize>(partFloats(H, W) * parts)) << 2);
  const items = O * kg;
  const xs = (<usize>XW) << 2;
  const flushEvery = max(1, 256 / ((OH * vc) >> 2));
  const first = partStart(items, part, parts);
  const end = partStart(items, part + 1, parts);
  const z = f32x4.splat(0);
  for (let j = first; j < end; j++) {
    const a = state + <usize>j * 160;
    for (let q = 0; q < 10; q++) v128.store(a + ((<usize>q) << 4), z);
    const t = state + <usize>items * 160 + <usize>j * 80;
    for (let q = 0; q < 10; q++) store<f64>(t + ((<usize>q) << 3), 0);
  }
  for (let n0 = 0; n0 < N; n0 += flushEvery) {
    const n1 = min(N, n0 + flushEvery);
    for (let n = n0; n < n1; n++) {
      let padded = -1; // the x channel whose plane xp holds
      for (let j = first; j < end; j++) {
        const o = j % O;
        const i = j / O;
        const xc = xOff + (o / og) * kg + i;
        const yc = yOff + (outMap ? load<i32>(at(outMap, o)) : o);
        if (xc != padded) copyRows(at(x, (n * xC + xc) * H * W), H, W, at(xp, XW + 1), XW);
        padded = xc;
        // dy rows are read in place when they are whole vectors; else copied, zero-padded, to scratch.
        let dp = at(dy, (n * yC + yc) * OH * OW);
        if (vc != OW) {
          copyRows(dp, OH, OW, dq, vc);
          dp = dq;
        }
        const sa = state + <usize>j * 160;
        let a0 = v128.load(sa);
        let a1 = v128.load(sa, 16);
        let a2 = v128.load(sa, 32);
        let a3 = v128.load(sa, 48);
        let a4 = v128.load(sa, 64);
        let a5 = v128.load(sa, 80);
        let a6 = v128.load(sa, 96);
        let a7 = v128.load(sa, 112);
        let a8 = v128.load(sa, 128);
        let ab = v128.load(sa, 144);
        for (let oy = 0; oy < OH; oy++) {
          const dr = at(dp, oy * vc);
          const r0 = xp + <usize>(oy * stride) * xs;
          const r1 = r0 + xs;
          const r2 = r1 + xs;
          for (let ox = 0; ox < vc; ox += 4) {
            const d = v128.load(at(dr, ox));
            ab = f32x4.add(ab, d);
            if (stride == 1) {
              const q = (<usize>ox) << 2;
              a0 = madd(d, v128.load(r0 + q), a0);
              a1 = madd(d, v128.load(r0 + q, 4), a1);
              a2 = madd(d, v128.load(r0 + q, 8), a2);
              a3 = madd(d, v128.load(r1 + q), a3);
              a4 = madd(d, v128.load(r1 + q, 4), a4);
              a5 = madd(d, v128.load(r1 + q, 8), a5);
              a6 = madd(d, v128.load(r2 + q), a6);
              a7 = madd(d, v128.load(r2 + q, 4), a7);
              a8 = madd(d, v128.load(r2 + q, 8), a8);
            } else {
              // Columns 2ox + kx: taps 0 and 1 are the even and odd columns, tap 2 the even ones moved by one.
              const q = (<usize>ox) << 3;
              let u = v128.load(r0 + q);
              let v = v128.load(r0 + q, 16);
              let e = evens(u, v);
              a0 = madd(d, e, a0);
              a1 = madd(d, odds(u, v), a1);
              a2 = madd(d, f32x4.shuffle(e, v128.load32_splat(r0 + q, 32), 1, 2, 3, 4), a2);
              u = v128.load(r1 + q);
              v = v128.load(r1 + q, 16);
              e = evens(u, v);
              a3 = madd(d, e, a3);
              a4 = madd(d, odds(u, v), a4);
              a5 = madd(d, f32x4.shuffle(e, v128.load32_splat(r1 + q, 32), 1, 2, 3, 4), a5);
              u = v128.load(r2 + q);
              v = v128.load(r2 + q, 16);
              e = evens(u, v);
              a6 = madd(d, e, a6);
              a7 = madd(d, odds(u, v), a7);
              a8 = madd(d, f32x4.shuffle(e, v128.load32_splat(r2 + q, 32), 1, 2, 3, 4), a8);
            }
          }
        }
        v128.store(sa, a0);
        v128.store(sa, a1, 16);
        v128.store(sa, a2, 32);
        v128.store(sa, a3, 48);
        v128.store(sa, a4, 64);
        v128.store(sa, a5, 80);
        v128.store(sa, a6, 96);
        v128.store(sa, a7, 112);
        v128.store(sa, a8, 128);
        v128.store(sa, ab, 144);
      }
    }
    for (let j = first; j < end; j++) {
      const a = state + <usize>j * 160;
      const t = state + <usize>items * 160 + <usize>j * 80;
      for (let q = 0; q < 10; q++) {
        const tq = t + ((<usize>q) << 3);
        store<f64>(tq, load<f64>(tq) + hsum(v128.load(a + ((<usize>q) << 4))));
        v128.store(a + ((<usize>q) << 4), z);
      }
    }
  }
  for (let j = first; j < end; j++) {
    const t = state + <usize>items * 160 + <usize>j * 80;
    const o = j % O;
    const i = j / O;
    const wj = at(dw, (o * kg + i) * 9);
    for (let q = 0; q < 9; q++) {
      const wq = wj + ((<usize>q) << 2);
      store<f32>(wq, <f32>(<f64>load<f32>(wq) + load<f64>(t + ((<usize>q) << 3))));
    }
    if (dbias && i == 0) {
      store<f32>(at(dbias, o), <f32>(<f64>load<f32>(at(dbias, o)) + load<f64>(t, 72)));
    }
  }
}
