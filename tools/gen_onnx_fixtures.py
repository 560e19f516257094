#!/usr/bin/python3
"""Writes test/fixtures/onnx/: the authors' ShuffleNetV1 (0.5x g=3 and g=8) exported by torch.onnx, for test/onnx.test.ts.

The official weights (../shared/weights) are exported with them, then the initializers' data is stripped so the
files are small enough to commit (gzipped); names, dims and data types stay, and the test re-attaches the data from the
.safetensors files by name. BN is kept as BatchNormalization (TrainingMode.PRESERVE on an eval-mode model, no
constant folding), so every initializer is named by its state_dict key. The batch axis is dynamic, so the file
carries PyTorch's Shape/Gather/Unsqueeze/Concat arithmetic around each channel shuffle, as real exports do.
expected.json has PyTorch's logits (float64) on test/helpers/synthetic.ts's syntheticInput([1,3,224,224], true).
Run: /usr/bin/python3 tools/gen_onnx_fixtures.py
"""
import gzip
import io
import json
import os
import sys

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import ShuffleNetV1  # noqa: E402
from synthetic import enc, synthetic_input  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
WEIGHTS = os.path.join(ROOT, '..', 'shared', 'weights')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'onnx')
WIDTHS = {3: [12, 120, 240, 480], 8: [16, 192, 384, 768]}
os.makedirs(OUT, exist_ok=True)
shape = (1, 3, 224, 224)
x = synthetic_input(shape, image=True)
expected = {'generator': 'tools/gen_onnx_fixtures.py', 'torch': torch.__version__, 'input': list(shape), 'models': []}
for g, widths in WIDTHS.items():
    preset = f'shufflenet_v1_g{g}_0.5x'
    sd = torch.load(os.path.join(WEIGHTS, f'{preset}.pth.tar'), map_location='cpu')['state_dict']
    model = ShuffleNetV1(widths, g)
    model.load_state_dict({k.removeprefix('module.'): v for k, v in sd.items()})
    model.eval()
    f = io.BytesIO()
    torch.onnx.export(model, torch.zeros(shape), f, opset_version=13, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}},
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    proto = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(proto)
    keys = {k for k in model.state_dict() if not k.endswith('num_batches_tracked')}
    names = {t.name for t in proto.graph.initializer}
    assert names == keys, f'initializers are not the state_dict: {sorted(names ^ keys)[:5]}'
    for t in proto.graph.initializer:
        t.ClearField('raw_data')
        t.ClearField('float_data')
    path = os.path.join(OUT, f'{preset}.stripped.onnx.gz')  # gzip: 145 KB of node names -> 11 KB
    with open(path, 'wb') as out:
        out.write(gzip.compress(proto.SerializeToString(), 9, mtime=0))
    with torch.no_grad():
        logits = model.double()(x.double())
    expected['models'].append({'preset': preset, 'file': os.path.basename(path), 'weights': f'{preset}.safetensors',
                               'logits': enc(logits), 'top5': logits[0].topk(5).indices.tolist()})
    print(path, os.path.getsize(path), 'bytes; top-5', expected['models'][-1]['top5'])

with open(os.path.join(OUT, 'expected.json'), 'w') as out:
    json.dump(expected, out)
print(os.path.join(OUT, 'expected.json'), os.path.getsize(os.path.join(OUT, 'expected.json')), 'bytes')
