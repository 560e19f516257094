#!/usr/bin/python3
"""Writes test/fixtures/grads.json: PyTorch autograd gradients, the oracle for test/autograd.test.ts.

Op cases: float32 inputs, parameters and r; gradients of L = sum(out * r) w.r.t. the inputs and the learnable
parameters, computed in float64 from those float32 values and stored rounded to float32 (as gen_kernel_fixtures.py).
Model case: the authors' ShuffleNetV1 (reference_models.py) at 0.25x g=3 with the small-input stem, 1 input
channel and 10 classes, hash-filled weights as gen_model_fixtures.py, in training mode (BN batch statistics),
loss = cross entropy with label smoothing 0.1. Its 67k gradients are too many to store, so each parameter keeps
sum |g|, sum g * r (r = the same hash fill of 'r/' + name, see test/helpers/synthetic.ts) and a sample of entries.
Run: /usr/bin/python3 tools/gen_grad_fixtures.py
"""
import json
import os
import random
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_models import ShuffleNetV1, shuffle  # noqa: E402
from synthetic import W, enc, fill, uniform  # noqa: E402

OUT = os.path.join(HERE, '..', 'test', 'fixtures', 'grads.json')
SAMPLES = 100  # entries kept per model gradient


cases = []


def d(t):
    return t.to(torch.float64)


def pair(v):
    return [v, v] if isinstance(v, int) else list(v)


class Case:
    """Random float32 tensors for one case, seeded from its name so adding a case leaves the others unchanged."""

    def __init__(self, name):
        seed = zlib.crc32(name.encode())
        self.name = name
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale

    def uniform(self, *shape, lo, hi):
        return lo + (hi - lo) * torch.rand(*shape, generator=self.gen, dtype=torch.float32)

    def emit(self, op, attrs, f, inputs, params=None, training=False):
        """f(inputs, params) in float64; grads of sum(f * r) w.r.t. inputs and the 'weight'/'bias' slots."""
        params = params or {}
        xs = [d(x).requires_grad_() for x in inputs]
        ps = {k: d(v).requires_grad_(k in ('weight', 'bias')) for k, v in params.items()}
        y = f(xs, ps)
        r = self.randn(*y.shape)
        (y * d(r)).sum().backward()
        cases.append({'name': self.name, 'op': op, 'attrs': attrs, 'training': training,
                      'inputs': [enc(x) for x in inputs], 'params': {k: enc(v) for k, v in params.items()},
                      'gradOut': enc(r), 'gradInputs': [enc(x.grad) for x in xs],
                      'gradParams': {k: enc(p.grad) for k, p in ps.items() if p.requires_grad}})


def conv(name, n, c, o, hw, k, stride=1, padding=0, dilation=1, groups=1, bias=False):
    t = Case(name)
    k, stride, padding, dilation = pair(k), pair(stride), pair(padding), pair(dilation)
    params = {'weight': t.randn(o, c // groups, *k, scale=(c // groups * k[0] * k[1]) ** -0.5)}
    if bias:
        params['bias'] = t.randn(o)
    attrs = {'inChannels': c, 'outChannels': o, 'kernel': k, 'stride': stride, 'padding': padding,
             'dilation': dilation, 'groups': groups, 'bias': bias}
    t.emit('conv2d', attrs, lambda xs, p: F.conv2d(xs[0], p['weight'], p.get('bias'), stride, padding, dilation,
                                                   groups), [t.randn(n, c, *hw)], params)


conv('conv2d/dense_3x3_s1_p1', 2, 4, 6, (5, 4), 3, 1, 1)
conv('conv2d/dense_3x3_s2_p1_odd_bias', 2, 3, 5, (7, 9), 3, 2, 1, bias=True)
conv('conv2d/grouped3_1x1', 2, 6, 9, (5, 6), 1, groups=3)
conv('conv2d/grouped8_1x1', 2, 16, 24, (3, 2), 1, groups=8)
conv('conv2d/grouped3_3x3_s2_p1_bias', 2, 6, 9, (5, 6), 3, 2, 1, groups=3, bias=True)
conv('conv2d/depthwise_3x3_s1_p1_odd', 2, 6, 6, (5, 7), 3, 1, 1, groups=6)
conv('conv2d/depthwise_3x3_s2_p1_odd', 2, 6, 6, (7, 9), 3, 2, 1, groups=6)
conv('conv2d/dilation2_p2', 2, 3, 4, (7, 6), 3, 1, 2, dilation=2)
conv('conv2d/nonsquare_3x5_s2x1_p1x2', 2, 3, 4, (7, 6), (3, 5), (2, 1), (1, 2))
conv('conv2d/pad0_odd', 2, 3, 4, (7, 7), 3, 1, 0)


def batchnorm(name, shape, training):
    t = Case(name)
    c = shape[1]
    x = t.randn(*shape, scale=2.0) + 0.5
    params = {'weight': t.randn(c), 'bias': t.randn(c), 'running_mean': t.randn(c, scale=0.5),
              'running_var': t.uniform(c, lo=0.2, hi=2.0)}
    t.emit('batchnorm', {'channels': c, 'eps': 1e-5, 'momentum': 0.1},
           lambda xs, p: F.batch_norm(xs[0], p['running_mean'], p['running_var'], p['weight'], p['bias'],
                                      training, 0.1, 1e-5), [x], params, training)


batchnorm('batchnorm/inference_nchw', (2, 5, 6, 7), False)
batchnorm('batchnorm/inference_nc', (4, 7), False)
batchnorm('batchnorm/training_nchw', (2, 5, 6, 7), True)
batchnorm('batchnorm/training_nc', (4, 7), True)

t = Case('relu/with_zeros')
x = t.randn(2, 3, 5, 6)
x.view(-1)[::7] = 0  # PyTorch's gradient at exactly 0 is 0
t.emit('relu', {}, lambda xs, p: F.relu(xs[0]), [x])


def pool(name, op, hw, k, s, p, ceil, include_pad=True, ties=False):
    t = Case(name)
    x = t.randn(2, 2, *hw)
    if ties:  # a few integer levels, so most windows hold their maximum more than once
        x = torch.round(x * 1.5)
    attrs = {'kernel': pair(k), 'stride': pair(s), 'padding': pair(p), 'ceilMode': ceil}
    if op == 'maxpool2d':
        f = lambda xs, _: F.max_pool2d(xs[0], k, s, p, ceil_mode=ceil)  # noqa: E731
    else:
        attrs['countIncludePad'] = include_pad
        f = lambda xs, _: F.avg_pool2d(xs[0], k, s, p, ceil_mode=ceil, count_include_pad=include_pad)  # noqa: E731
    t.emit(op, attrs, f, [x])


pool('maxpool2d/3x3_s2_p1_odd', 'maxpool2d', (9, 11), 3, 2, 1, False)
pool('maxpool2d/2x2_s2_ceil_odd', 'maxpool2d', (7, 9), 2, 2, 0, True)
pool('maxpool2d/3x3_s2_p1_ties', 'maxpool2d', (8, 9), 3, 2, 1, False, ties=True)
pool('maxpool2d/3x3_s1_p1_ties', 'maxpool2d', (6, 7), 3, 1, 1, False, ties=True)
pool('avgpool2d/3x3_s2_p1_include_pad', 'avgpool2d', (9, 11), 3, 2, 1, False, True)
pool('avgpool2d/3x3_s2_p1_exclude_pad', 'avgpool2d', (9, 11), 3, 2, 1, False, False)
pool('avgpool2d/3x3_s2_p1_ceil_include_pad', 'avgpool2d', (8, 10), 3, 2, 1, True, True)
pool('avgpool2d/3x3_s2_p1_ceil_exclude_pad', 'avgpool2d', (8, 10), 3, 2, 1, True, False)
pool('avgpool2d/2x2_s2_ceil_odd', 'avgpool2d', (7, 9), 2, 2, 0, True, True)

t = Case('globalavgpool')
t.emit('globalavgpool', {}, lambda xs, p: xs[0].mean((2, 3), keepdim=True), [t.randn(2, 3, 5, 7)])

for hw, o in [((10, 9), (4, 4)), ((5, 7), (3, 4)), ((7, 9), (1, 1))]:
    t = Case(f'adaptiveavgpool2d/{hw[0]}x{hw[1]}_to_{o[0]}x{o[1]}')
    t.emit('adaptiveavgpool2d', {'output': list(o)}, lambda xs, p: F.adaptive_avg_pool2d(xs[0], o),
           [t.randn(2, 2, *hw)])

for bias, (k, m) in ((True, (13, 5)), (False, (9, 7))):
    t = Case(f'linear/{"bias" if bias else "no_bias"}')
    params = {'weight': t.randn(m, k, scale=k ** -0.5)}
    if bias:
        params['bias'] = t.randn(m)
    t.emit('linear', {'inFeatures': k, 'outFeatures': m, 'bias': bias},
           lambda xs, p: F.linear(xs[0], p['weight'], p.get('bias')), [t.randn(3, k)], params)

t = Case('add')
t.emit('add', {}, lambda xs, p: xs[0] + xs[1], [t.randn(2, 3, 5, 6), t.randn(2, 3, 5, 6)])

t = Case('concat/three_inputs')
t.emit('concat', {}, lambda xs, p: torch.cat(xs, 1), [t.randn(2, c, 3, 4) for c in (2, 3, 5)])

for g, c in [(3, 12), (8, 24)]:
    for order in ('paper', 'authors'):
        t = Case(f'channelshuffle/g{g}_{order}')
        t.emit('channelshuffle', {'groups': g, 'order': order}, lambda xs, p: shuffle(xs[0], g, order),
               [t.randn(2, c, 2, 3)])

t = Case('softmax/large_logits')
x = t.randn(4, 10, scale=3.0) + torch.tensor([[800.0], [-800.0], [0.0], [1000.0]])
t.emit('softmax', {}, lambda xs, p: F.softmax(xs[0], 1), [x])
t = Case('softmax/nchw_channels')
t.emit('softmax', {}, lambda xs, p: F.softmax(xs[0], 1), [t.randn(2, 5, 3, 4, scale=3.0)])

t = Case('flatten')
t.emit('flatten', {}, lambda xs, p: xs[0].flatten(1), [t.randn(2, 3, 4, 5)])

losses = []
for smoothing in (0.0, 0.1, 0.3):
    t = Case(f'cross_entropy/smoothing_{smoothing}')
    logits = t.randn(5, 7, scale=3.0)
    labels = [3, 0, 6, 3, 1]
    x = d(logits).requires_grad_()
    loss = F.cross_entropy(x, torch.tensor(labels), label_smoothing=smoothing)
    loss.backward()
    losses.append({'name': t.name, 'smoothing': smoothing, 'labels': labels, 'logits': enc(logits),
                   'loss': loss.item(), 'grad': enc(x.grad)})

# The whole model: forward in training mode, loss, backward.
model = ShuffleNetV1(W['g3_0.25'], 3, n_class=10, in_channels=1, small_input=True)
fill(model)
model = model.double().train()
input_shape = (2, 1, 16, 16)
x = torch.from_numpy(uniform('input', int(np.prod(input_shape))).astype(np.float32).reshape(input_shape))
x = x.double().requires_grad_()
labels = [3, 7]
logits = model(x)
loss = F.cross_entropy(logits, torch.tensor(labels), label_smoothing=0.1)
loss.backward()
grads = {}
for name, p in model.named_parameters():
    g = p.grad.flatten()
    r = torch.from_numpy(uniform('r/' + name, g.numel()))
    index = sorted(random.Random(zlib.crc32(name.encode())).sample(range(g.numel()), min(g.numel(), SAMPLES)))
    grads[name] = {'shape': list(p.shape), 'sumAbs': g.abs().sum().item(), 'dot': (g * r).sum().item(),
                   'index': index, 'values': enc(g[index])}
running = {k: enc(v) for k, v in model.state_dict().items() if 'running' in k}
whole = {'preset': 'shufflenet_v1_g3_0.25x', 'options': {'smallInput': True, 'inputChannels': 1, 'numClasses': 10},
         'input': list(input_shape), 'labels': labels, 'smoothing': 0.1, 'loss': loss.item(), 'logits': enc(logits),
         'inputGrad': enc(x.grad), 'grads': grads, 'running': running}

with open(OUT, 'w') as f:
    json.dump({'generator': 'tools/gen_grad_fixtures.py', 'torch': torch.__version__, 'cases': cases,
               'losses': losses, 'model': whole}, f, separators=(',', ':'))
    f.write('\n')
print(f'{len(cases)} op cases, {len(losses)} loss cases, model with {len(grads)} parameters: '
      f'{os.path.getsize(OUT)} bytes -> {os.path.normpath(OUT)}')
