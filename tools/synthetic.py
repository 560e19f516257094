"""Hash-made weights and inputs that test/helpers/synthetic.ts computes bit for bit the same way, so fixtures
carry only the expected outputs, never the weights. Shared by the fixture generators in this folder."""
import base64

import numpy as np
import torch

M32 = np.uint64(0xFFFFFFFF)

# (stem, stage2, stage3, stage4) as src/models/shufflenet.ts computes them
W = {
    'g1_0.25': [12, 36, 72, 144], 'g2_0.25': [12, 48, 104, 200], 'g4_0.25': [12, 64, 144, 272],
    'g3_0.25': [12, 60, 120, 240], 'g3_0.5': [12, 120, 240, 480], 'g8_0.5': [16, 192, 384, 768],
}


def fmix(x):
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x85EBCA6B)) & M32
    x = x ^ (x >> np.uint64(13))
    x = (x * np.uint64(0xC2B2AE35)) & M32
    return x ^ (x >> np.uint64(16))


def fnv1a(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def uniform(name, n):
    """n values in [-1, 1) from the name; see test/helpers/synthetic.ts."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    x = fmix(np.uint64(fnv1a(name)) ^ ((i * np.uint64(0x9E3779B1)) & M32))
    return x.astype(np.float64) / 4294967296.0 * 2 - 1


def synthetic(name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    v = uniform(name, n)
    if name.endswith('running_var'):
        v = 0.5 + (v + 1) / 2
    elif name.endswith('running_mean') or name.endswith('bias'):
        v = 0.1 * v
    elif len(shape) == 1:  # BN gamma
        v = 1 + 0.2 * v
    else:  # conv / linear weight: uniform with He variance
        v = v * np.sqrt(6 / np.prod(shape[1:]))
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def enc(t):
    """A tensor as {shape, data: base64 of little-endian float32}."""
    a = t.detach().to(torch.float32).contiguous().numpy().astype('<f4')
    return {'shape': list(a.shape), 'data': base64.b64encode(a.tobytes()).decode('ascii')}


def fill(model):
    """Loads hash-made weights into every parameter and buffer; returns [name, shape] without num_batches_tracked."""
    sd = {k: (v if k.endswith('num_batches_tracked') else synthetic(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return [[k, list(v.shape)] for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')]


def synthetic_input(shape, image=False):
    """Uniform [-1, 1), or 0..255 with `image`, as float32."""
    v = uniform('input', int(np.prod(shape)))
    return torch.from_numpy((((v + 1) / 2 * 255) if image else v).astype(np.float32).reshape(shape))
