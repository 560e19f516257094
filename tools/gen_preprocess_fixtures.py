#!/usr/bin/python3
"""Writes test/fixtures/preprocess/*.json: the oracle for test/preprocess.test.ts.

- resize.json: cv2.resize(INTER_LINEAR) of small random uint8 RGB images, up and down, plus the authors'
  shorter-side rule applied to small sizes.
- crop.json: torchvision CenterCrop placements, read back from a crop of an index image (padding included).
- photos.json: the authors' evaluation pipeline (Megvii train.py: PIL convert('RGB') -> OpencvResize(256) ->
  CenterCrop(224)) on each photo in ../shared/images: the full 224x224 RGB crop (zlib) for chelsea and camera,
  per-channel sums and sampled pixels for the others.
- decode.json: tiny hand-written PNGs of every colour type and bit depth, and small JPEGs written by PIL
  (libjpeg) in each chroma subsampling, each with PIL's Image.open(...).convert('RGB') of it.
Run: /usr/bin/python3 tools/gen_preprocess_fixtures.py
"""
import base64
import io
import json
import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torchvision import transforms

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'preprocess')
IMAGES = os.path.join(ROOT, '..', 'shared', 'images')


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode('ascii')


def write(name, obj):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, name), 'w') as f:
        json.dump(obj, f, separators=(',', ':'))


def opencv_resize(img, size):
    """The authors' OpencvResize (ShuffleNet-Series utils): shorter side -> size; resizes BGR, returns RGB."""
    bgr = np.ascontiguousarray(img[:, :, ::-1])
    h, w, _ = bgr.shape
    target = (int(size / h * w + 0.5), size) if h < w else (size, int(size / w * h + 0.5))
    return np.ascontiguousarray(cv2.resize(bgr, target, interpolation=cv2.INTER_LINEAR)[:, :, ::-1])


def gen_resize():
    rng = np.random.default_rng(20190601)
    # Up and down by odd and exact factors, near 1, 1-pixel outputs and inputs, and the authors' shorter-side
    # rule on small sizes.
    plan = {(37, 23): [(17, 11), (55, 35), (36, 22), (5, 3), (1, 1), (18, 11), (23, 47)],
            (64, 46): [(32, 23), (17, 11), (20, 45), (96, 8)],
            (13, 100): [(17, 11), (26, 30), (12, 99), (6, 50), (40, 7)],
            (1, 9): [(3, 5), (1, 4), (2, 2)]}
    images, cases = [], []
    for (w, h), targets in plan.items():
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images.append({'width': w, 'height': h, 'data': b64(img)})
        for tw, th in targets:
            out = cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR)
            cases.append({'image': len(images) - 1, 'width': tw, 'height': th, 'data': b64(out)})
        for size in (17,) if w > 1 else (3,):
            out = opencv_resize(img, size)
            cases.append({'image': len(images) - 1, 'shorter': size, 'width': out.shape[1],
                          'height': out.shape[0], 'data': b64(out)})
    write('resize.json', {'opencv': cv2.__version__, 'images': images, 'cases': cases})


def crop_offsets(h, w, ch, cw):
    """(top, left) of the crop in source coordinates, read back from torchvision's output; negative = padding."""
    idx = torch.arange(1, h * w + 1, dtype=torch.int64).reshape(1, h, w)  # 0 marks padding
    out = transforms.CenterCrop((ch, cw))(idx)[0]
    assert tuple(out.shape) == (ch, cw)
    ys, xs = torch.nonzero(out, as_tuple=True)
    v = out[ys[0], xs[0]].item() - 1
    top, left = v // w - ys[0].item(), v % w - xs[0].item()
    # Every output pixel must be source(y + top, x + left), or 0 where that lies outside the source.
    yy = torch.arange(ch).reshape(-1, 1) + top
    xx = torch.arange(cw).reshape(1, -1) + left
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    source = yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1) + 1
    expect = torch.where(inside, source, torch.zeros((), dtype=torch.int64))
    assert torch.equal(out, expect), (h, w, ch, cw)
    return top, left


def gen_crop():
    """Blocks of every (height, width) in a range for one crop size; top/left row-major over (height, width)."""
    blocks = []
    for ch, cw, lo, hi in [(224, 224, 220, 262), (225, 225, 220, 236), (224, 225, 220, 236),
                           (7, 7, 1, 14), (8, 8, 1, 14), (7, 8, 1, 14), (224, 224, 1, 4)]:
        offsets = [crop_offsets(h, w, ch, cw) for h in range(lo, hi) for w in range(lo, hi)]
        blocks.append({'cropHeight': ch, 'cropWidth': cw, 'from': lo, 'to': hi - 1,
                       'top': [t for t, _ in offsets], 'left': [l for _, l in offsets]})
    write('crop.json', {'torchvision': torchvision.__version__, 'blocks': blocks})


def gen_photos():
    full = {'chelsea.png', 'camera.png'}
    stride = 127  # samples pixels 0, 127, 254, ... of the crop, row-major
    photos = []
    for name in ['chelsea.png', 'coffee.png', 'camera.png', 'grace_hopper.jpg', 'astronaut.png', 'rocket.jpg']:
        pil = Image.open(os.path.join(IMAGES, name))
        mode = pil.mode
        rgb = np.asarray(pil.convert('RGB'))
        resized = opencv_resize(rgb, 256)
        crop = np.asarray(transforms.CenterCrop(224)(Image.fromarray(resized)))
        # The network then sees ToBGRTensor(crop) = crop[:, :, ::-1] as CHW float32 0..255; the test checks
        # preprocess() against that mapping of this stored RGB crop.
        idx = np.arange(0, 224 * 224, stride)
        photo = {'name': name, 'mode': mode, 'width': rgb.shape[1], 'height': rgb.shape[0],
                 'resizedWidth': resized.shape[1], 'resizedHeight': resized.shape[0],
                 'sums': [int(crop[:, :, c].sum(dtype=np.int64)) for c in range(3)],
                 'sampleStride': stride, 'samples': b64(crop.reshape(-1, 3)[idx])}
        if name in full:
            # Differences from the left neighbour (mod 256) compress a photo about twice as well as raw bytes.
            planes = crop[:, :, :1] if mode == 'L' else crop
            delta = np.diff(planes.astype(np.int16), axis=1, prepend=0) % 256
            photo['crop'] = {'channels': planes.shape[2], 'leftDelta': base64.b64encode(
                zlib.compress(delta.astype(np.uint8).tobytes(), 9)).decode('ascii')}
        photos.append(photo)
    write('photos.json', {'opencv': cv2.__version__, 'torchvision': torchvision.__version__,
                          'pil': PIL.__version__, 'photos': photos})


def png_bytes(w, h, depth, color_type, rows, extra=(), interlace=0):
    """A PNG from already-packed scanlines (filter 0). `rows(y0, dy, x0, dx)` packs one pass for Adam7."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    if interlace:
        passes = [(0, 8, 0, 8), (0, 8, 4, 8), (4, 8, 0, 4), (0, 4, 2, 4), (2, 4, 0, 2), (0, 2, 1, 2), (1, 2, 0, 1)]
        raw = b''.join(rows(*p) for p in passes)
    else:
        raw = rows(0, 1, 0, 1)
    ihdr = struct.pack('>IIBBBBB', w, h, depth, color_type, 0, 0, interlace)
    body = chunk(b'IHDR', ihdr) + b''.join(chunk(k, d) for k, d in extra)
    return b'\x89PNG\r\n\x1a\n' + body + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')


def packer(samples, depth):
    """samples: (h, w, c) ints. Returns rows(y0, dy, x0, dx) packing that sub-grid big-endian, MSB first."""
    def rows(y0, dy, x0, dx):
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            return b''
        out = b''
        for row in sub:
            flat = row.reshape(-1)
            if depth == 16:
                line = flat.astype('>u2').tobytes()
            elif depth == 8:
                line = flat.astype(np.uint8).tobytes()
            else:
                bits = ''.join(format(int(v), f'0{depth}b') for v in flat)
                bits += '0' * (-len(bits) % 8)
                line = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
            out += b'\x00' + line
        return out
    return rows


def gen_png():
    rng = np.random.default_rng(7)
    w, h = 7, 5
    cases = []

    def add(label, depth, color_type, channels, extra=(), interlace=0, palette_size=0, key=None):
        hi = (1 << depth) - 1 if not palette_size else palette_size - 1
        samples = rng.integers(0, hi + 1, (h, w, channels), dtype=np.int64)
        if depth == 16:
            samples[0, :3, 0] = [0, 255, 256]  # around PIL's clip for 16-bit greyscale
        if key is not None:
            samples[1, 2] = key  # a pixel that matches the tRNS colour key
        data = png_bytes(w, h, depth, color_type, packer(samples, depth), extra, interlace)
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
        cases.append({'label': label, 'png': base64.b64encode(data).decode('ascii'),
                      'width': w, 'height': h, 'rgb': b64(rgb)})

    palette = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    plte = (b'PLTE', palette.tobytes())
    for depth in (1, 2, 4, 8, 16):
        add(f'grey {depth}-bit', depth, 0, 1)
    add('grey+alpha 8-bit', 8, 4, 2)
    add('grey+alpha 16-bit', 16, 4, 2)
    add('RGB 8-bit', 8, 2, 3)
    add('RGB 16-bit', 16, 2, 3)
    add('RGBA 8-bit', 8, 6, 4)
    add('RGBA 16-bit', 16, 6, 4)
    add('palette 8-bit with tRNS', 8, 3, 1, [plte, (b'tRNS', bytes([0, 128, 255]))], palette_size=12)
    add('palette 4-bit', 4, 3, 1, [plte], palette_size=12)
    add('grey 8-bit with tRNS key', 8, 0, 1, [(b'tRNS', struct.pack('>H', 7))], key=[7])
    add('RGB 8-bit with tRNS key', 8, 2, 3, [(b'tRNS', struct.pack('>HHH', 1, 2, 3))], key=[1, 2, 3])
    add('RGB 8-bit Adam7 interlaced', 8, 2, 3, interlace=1)
    zero = png_bytes(0, 3, 8, 2, lambda *_: b'')
    return cases, base64.b64encode(zero).decode('ascii')


def gen_jpeg():
    """Sharp colour edges (where chroma upsampling shows) over gradients and noise, odd sizes."""
    rng = np.random.default_rng(11)
    cases = []

    def picture(w, h):
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // (w + h)], -1)
        for _ in range(6):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            img[y0:y0 + rng.integers(2, 12), x0:x0 + rng.integers(2, 12)] = rng.integers(0, 256, 3)
        return np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)

    def add(label, img, **save):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, 'JPEG', **save)
        data = buf.getvalue()
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
        cases.append({'label': label, 'jpeg': base64.b64encode(data).decode('ascii'),
                      'width': rgb.shape[1], 'height': rgb.shape[0], 'rgb': b64(rgb)})

    for sub, name in [(0, '4:4:4'), (1, '4:2:2'), (2, '4:2:0')]:
        add(f'{name} 27x19', picture(27, 19), quality=90, subsampling=sub)
    add('4:2:0 progressive 24x16', picture(24, 16), quality=85, subsampling=2, progressive=True)
    add('4:2:0 3x5 (libjpeg replicates chroma below 3 samples)', picture(3, 5), quality=90, subsampling=2)
    add('greyscale 21x13', picture(21, 13)[:, :, 0].copy(), quality=90)
    return cases


def gen_decode():
    png, zero = gen_png()
    write('decode.json', {'pil': PIL.__version__, 'png': png, 'jpeg': gen_jpeg(), 'zeroWidthPng': zero})


if __name__ == '__main__':
    # PIL suggests converting palette+tRNS images to RGBA; the authors' convert('RGB') is what is reproduced.
    warnings.filterwarnings('ignore', message='Palette images with Transparency')
    gen_resize()
    gen_crop()
    gen_photos()
    gen_decode()
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)), 'bytes')
