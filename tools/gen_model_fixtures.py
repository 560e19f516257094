#!/usr/bin/python3
"""Writes test/fixtures/models.json: logits of reference PyTorch models, for test/models-pytorch.test.ts.

Random-weight cases: weights and inputs come from a hash of (tensor name, index) that test/helpers/synthetic.ts
computes bit-for-bit the same way, so no weights need to be committed, only the logits and the state_dict names.
Official cases: the authors' checkpoints from ../shared/weights on a synthetic 224x224 BGR 0..255 input.
Everything is computed in float64. Run: /usr/bin/python3 tools/gen_model_fixtures.py
"""
import base64
import json
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import MobileNetV1, ShuffleNetV1  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
WEIGHTS = os.path.join(ROOT, '..', 'shared', 'weights')
M32 = np.uint64(0xFFFFFFFF)


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
    a = t.detach().to(torch.float32).contiguous().numpy().astype('<f4')
    return {'shape': list(a.shape), 'data': base64.b64encode(a.tobytes()).decode('ascii')}


def fill(model):
    sd = {k: (v if k.endswith('num_batches_tracked') else synthetic(k, tuple(v.shape))) for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return [[k, list(v.shape)] for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')]


def run(model, x):
    model = model.double().eval()
    with torch.no_grad():
        return model(x.double())


cases = []


def random_case(preset, options, model, input_shape):
    names = fill(model)
    x = torch.from_numpy(uniform('input', int(np.prod(input_shape))).astype(np.float32).reshape(input_shape))
    cases.append({'preset': preset, 'options': options, 'input': list(input_shape), 'names': names,
                  'logits': enc(run(model, x))})


W = {  # (stem, stage2, stage3, stage4) as src/models/shufflenet.ts computes them
    'g1_0.25': [12, 36, 72, 144], 'g2_0.25': [12, 48, 104, 200], 'g4_0.25': [12, 64, 144, 272],
    'g3_0.25': [12, 60, 120, 240], 'g3_0.5': [12, 120, 240, 480], 'g8_0.5': [16, 192, 384, 768],
}
for g in (1, 2, 4):
    random_case(f'shufflenet_v1_g{g}_0.25x', {}, ShuffleNetV1(W[f'g{g}_0.25'], g), (1, 3, 64, 64))
random_case('shufflenet_v1_g8_0.5x', {'shuffleOrder': 'paper', 'shufflePosition': 'before-dw'},
            ShuffleNetV1(W['g8_0.5'], 8, order='paper', position='before-dw'), (2, 3, 64, 48))
random_case('shufflenet_v1_g3_0.25x', {'shuffle': False}, ShuffleNetV1(W['g3_0.25'], 3, use_shuffle=False), (1, 3, 64, 64))
random_case('shufflenet_v1_g3_0.5x', {'smallInput': True, 'inputChannels': 1, 'numClasses': 10},
            ShuffleNetV1(W['g3_0.5'], 3, n_class=10, in_channels=1, small_input=True), (2, 1, 28, 28))
random_case('mobilenet_v1_0.25', {}, MobileNetV1(0.25), (1, 3, 64, 64))
random_case('alexnet', {}, torchvision.models.alexnet(), (1, 3, 96, 96))

official = []
for g, widths in ((3, W['g3_0.5']), (8, W['g8_0.5'])):
    path = os.path.join(WEIGHTS, f'shufflenet_v1_g{g}_0.5x.pth.tar')
    sd = torch.load(path, map_location='cpu')['state_dict']
    model = ShuffleNetV1(widths, g)
    model.load_state_dict({k.removeprefix('module.'): v for k, v in sd.items()})
    shape = (1, 3, 224, 224)
    x = torch.from_numpy(((uniform('input', int(np.prod(shape))) + 1) / 2 * 255).astype(np.float32).reshape(shape))
    official.append({'preset': f'shufflenet_v1_g{g}_0.5x', 'file': os.path.basename(path), 'input': list(shape),
                     'logits': enc(run(model, x))})

out = os.path.join(ROOT, 'test', 'fixtures', 'models.json')
with open(out, 'w') as f:
    json.dump({'generator': 'tools/gen_model_fixtures.py', 'torch': torch.__version__, 'cases': cases,
               'official': official}, f)
print(out, os.path.getsize(out), 'bytes,', len(cases), 'random-weight cases,', len(official), 'official')
