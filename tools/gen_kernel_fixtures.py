#!/usr/bin/python3
"""Writes test/fixtures/kernels.json: PyTorch's outputs for every op, the oracle for test/kernels.test.ts.

Inputs and parameters are float32; expected outputs are computed in float64 from those same float32 values
and stored rounded to float32, so a kernel that accumulates in float64 must match to about one ulp.
Each case seeds its own generator from its name, so adding a case leaves the others unchanged.
Run: /usr/bin/python3 tools/gen_kernel_fixtures.py
"""
import base64
import json
import os
import random
import zlib

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'kernels.json')
cases = []


def enc(t):
    a = t.detach().to(torch.float32).contiguous().numpy().astype('<f4')
    return {'shape': list(a.shape), 'data': base64.b64encode(a.tobytes()).decode('ascii')}


class Case:
    """Random float32 tensors for one case; `rng` draws its sizes."""

    def __init__(self, name):
        seed = zlib.crc32(name.encode())
        self.name = name
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale

    def uniform(self, *shape, lo, hi):
        return lo + (hi - lo) * torch.rand(*shape, generator=self.gen, dtype=torch.float32)

    def size(self, lo, hi):
        return self.rng.randint(lo, hi)

    def emit(self, op, attrs, inputs, out, params=None, training=False, after=None):
        c = {'name': self.name, 'op': op, 'attrs': attrs, 'training': training,
             'inputs': [enc(x) for x in inputs], 'params': {k: enc(v) for k, v in (params or {}).items()},
             'output': enc(out)}
        if after:
            c['after'] = {k: enc(v) for k, v in after.items()}
        cases.append(c)


def d(t):
    return t.to(torch.float64)


def pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def conv(name, n, c, o, hw, k, stride=1, padding=0, dilation=1, groups=1, bias=False):
    t = Case(name)
    h, w = hw if hw else (t.size(5, 13), t.size(5, 13))
    k, stride, padding, dilation = pair(k), pair(stride), pair(padding), pair(dilation)
    x = t.randn(n, c, h, w)
    wt = t.randn(o, c // groups, *k, scale=(c // groups * k[0] * k[1]) ** -0.5)
    params = {'weight': wt}
    if bias:
        params['bias'] = t.randn(o)
    y = F.conv2d(d(x), d(wt), d(params['bias']) if bias else None, stride, padding, dilation, groups)
    attrs = {'inChannels': c, 'outChannels': o, 'kernel': k, 'stride': stride, 'padding': padding,
             'dilation': dilation, 'groups': groups, 'bias': bias}
    t.emit('conv2d', attrs, [x], y, params)


conv('conv2d/dense_3x3_s1_p1', 2, 4, 6, None, 3, 1, 1)
conv('conv2d/dense_3x3_s2_p1_odd', 2, 3, 5, (7, 9), 3, 2, 1)
conv('conv2d/dense_3x3_bias', 2, 4, 5, None, 3, 1, 1, bias=True)
conv('conv2d/grouped3_1x1', 2, 6, 9, None, 1, groups=3)
conv('conv2d/grouped8_1x1', 2, 16, 24, (5, 7), 1, groups=8)
conv('conv2d/grouped4_3x3_bias', 2, 8, 12, None, 3, 1, 1, groups=4, bias=True)
conv('conv2d/depthwise_3x3_s1_odd', 2, 6, 6, (7, 9), 3, 1, 1, groups=6)
conv('conv2d/depthwise_3x3_s2_odd', 2, 6, 6, (9, 11), 3, 2, 1, groups=6)
conv('conv2d/dilation2', 2, 3, 4, None, 3, 1, 2, dilation=2)
conv('conv2d/nonsquare_3x5_s2x1_p1x2', 2, 3, 4, (9, 8), (3, 5), (2, 1), (1, 2))
conv('conv2d/pad0_odd', 2, 3, 4, (7, 7), 3, 1, 0)
conv('conv2d/alexnet_11x11_s4_p2', 1, 3, 8, (27, 27), 11, 4, 2)


def batchnorm(name, shape, training):
    t = Case(name)
    c = shape[1]
    x = t.randn(*shape, scale=2.0) + 0.5
    params = {'weight': t.randn(c), 'bias': t.randn(c), 'running_mean': t.randn(c, scale=0.5),
              'running_var': t.uniform(c, lo=0.2, hi=2.0)}
    rm, rv = d(params['running_mean']), d(params['running_var'])  # updated in place when training
    y = F.batch_norm(d(x), rm, rv, d(params['weight']), d(params['bias']), training, 0.1, 1e-5)
    t.emit('batchnorm', {'channels': c, 'eps': 1e-5, 'momentum': 0.1}, [x], y, params, training,
           {'running_mean': rm, 'running_var': rv} if training else None)


batchnorm('batchnorm/inference_nchw', (2, 5, 6, 7), False)
batchnorm('batchnorm/inference_nc', (4, 7), False)
batchnorm('batchnorm/training_nchw', (2, 5, 6, 7), True)
batchnorm('batchnorm/training_nc', (4, 7), True)

t = Case('relu')
x = t.randn(2, 3, 5, 6)
t.emit('relu', {}, [x], F.relu(d(x)))


def pool(name, op, hw, k, s, p, ceil, include_pad=True):
    t = Case(name)
    x = t.randn(2, 3, *hw)
    attrs = {'kernel': pair(k), 'stride': pair(s), 'padding': pair(p), 'ceilMode': ceil}
    if op == 'maxpool2d':
        y = F.max_pool2d(d(x), k, s, p, ceil_mode=ceil)
    else:
        attrs['countIncludePad'] = include_pad
        y = F.avg_pool2d(d(x), k, s, p, ceil_mode=ceil, count_include_pad=include_pad)
    t.emit(op, attrs, [x], y)


pool('maxpool2d/3x3_s2_p1_odd', 'maxpool2d', (9, 11), 3, 2, 1, False)
pool('maxpool2d/2x2_s2_ceil_odd', 'maxpool2d', (7, 9), 2, 2, 0, True)
pool('avgpool2d/3x3_s2_p1_include_pad', 'avgpool2d', (9, 11), 3, 2, 1, False, True)
pool('avgpool2d/3x3_s2_p1_exclude_pad', 'avgpool2d', (9, 11), 3, 2, 1, False, False)
# Even sizes: the last ceil-mode window runs past the right padding, so the divisor is clipped there.
pool('avgpool2d/3x3_s2_p1_ceil_include_pad', 'avgpool2d', (8, 10), 3, 2, 1, True, True)
pool('avgpool2d/3x3_s2_p1_ceil_exclude_pad', 'avgpool2d', (8, 10), 3, 2, 1, True, False)
pool('avgpool2d/2x2_s2_ceil_odd', 'avgpool2d', (7, 9), 2, 2, 0, True, True)

t = Case('globalavgpool')
x = t.randn(2, 4, 7, 9)
t.emit('globalavgpool', {}, [x], d(x).mean((2, 3), keepdim=True))

for hw, o in [((13, 13), (6, 6)), ((15, 20), (6, 6)), ((7, 9), (1, 1))]:
    t = Case(f'adaptiveavgpool2d/{hw[0]}x{hw[1]}_to_{o[0]}x{o[1]}')
    x = t.randn(2, 3, *hw)
    t.emit('adaptiveavgpool2d', {'output': list(o)}, [x], F.adaptive_avg_pool2d(d(x), o))

for bias in (True, False):
    t = Case(f'linear/{"bias" if bias else "no_bias"}')
    k, m = t.size(8, 40), t.size(3, 12)
    x, wt = t.randn(3, k), t.randn(m, k, scale=k ** -0.5)
    params = {'weight': wt, 'bias': t.randn(m)} if bias else {'weight': wt}
    y = F.linear(d(x), d(wt), d(params['bias']) if bias else None)
    t.emit('linear', {'inFeatures': k, 'outFeatures': m, 'bias': bias}, [x], y, params)

t = Case('add')
a, b = t.randn(2, 3, 5, 6), t.randn(2, 3, 5, 6)
t.emit('add', {}, [a, b], d(a) + d(b))

t = Case('concat/three_inputs')
xs = [t.randn(2, c, 5, 7) for c in (2, 3, 5)]
t.emit('concat', {}, xs, torch.cat([d(x) for x in xs], 1))


def shuffle(x, g, order):
    b, c, h, w = x.shape
    if order == 'paper':
        return x.reshape(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)
    return x.reshape(b, c // g, g, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)


for g, c in [(3, 12), (8, 24)]:
    for order in ('paper', 'authors'):
        t = Case(f'channelshuffle/g{g}_{order}')
        x = t.randn(2, c, 5, 7)
        t.emit('channelshuffle', {'groups': g, 'order': order}, [x], shuffle(d(x), g, order))

# Rows centred on +-800 and 1000: a softmax that skips the max subtraction gives NaN even in float64.
t = Case('softmax/large_logits')
x = t.randn(4, 10, scale=3.0) + torch.tensor([[800.0], [-800.0], [0.0], [1000.0]])
t.emit('softmax', {}, [x], F.softmax(d(x), 1))
t = Case('softmax/nchw_channels')
x = t.randn(2, 5, 3, 4, scale=3.0)
t.emit('softmax', {}, [x], F.softmax(d(x), 1))

t = Case('flatten')
x = t.randn(2, 3, 4, 5)
t.emit('flatten', {}, [x], d(x).flatten(1))

with open(OUT, 'w') as f:
    json.dump({'generator': 'tools/gen_kernel_fixtures.py', 'torch': torch.__version__, 'cases': cases}, f,
              separators=(',', ':'))
    f.write('\n')
print(f'{len(cases)} cases, {os.path.getsize(OUT)} bytes -> {os.path.normpath(OUT)}')
