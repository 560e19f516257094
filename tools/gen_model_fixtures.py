#!/usr/bin/python3
"""Writes test/fixtures/models.json: logits of reference PyTorch models, for test/models-pytorch.test.ts.

Random-weight cases: weights and inputs come from a hash of (tensor name, index) that test/helpers/synthetic.ts
computes bit-for-bit the same way, so no weights need to be committed, only the logits and the state_dict names.
Official cases: the authors' checkpoints from ../shared/weights on a synthetic 224x224 BGR 0..255 input.
Everything is computed in float64. Run: /usr/bin/python3 tools/gen_model_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import MobileNetV1, ShuffleNetV1, Table4Net  # noqa: E402
from synthetic import W, enc, fill, synthetic_input  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
WEIGHTS = os.path.join(ROOT, '..', 'shared', 'weights')


def run(model, x):
    model = model.double().eval()
    with torch.no_grad():
        return model(x.double())


cases = []


def random_case(preset, options, model, input_shape):
    names = fill(model)
    x = synthetic_input(input_shape)
    cases.append({'preset': preset, 'options': options, 'input': list(input_shape), 'names': names,
                  'logits': enc(run(model, x))})


for g in (1, 2, 4):
    random_case(f'shufflenet_v1_g{g}_0.25x', {}, ShuffleNetV1(W[f'g{g}_0.25'], g), (1, 3, 64, 64))
random_case('shufflenet_v1_g8_0.5x', {'shuffleOrder': 'paper', 'shufflePosition': 'before-dw'},
            ShuffleNetV1(W['g8_0.5'], 8, order='paper', position='before-dw'), (2, 3, 64, 48))
random_case('shufflenet_v1_g3_0.25x', {'shuffle': False}, ShuffleNetV1(W['g3_0.25'], 3, use_shuffle=False), (1, 3, 64, 64))
random_case('shufflenet_v1_g3_0.5x', {'smallInput': True, 'inputChannels': 1, 'numClasses': 10},
            ShuffleNetV1(W['g3_0.5'], 3, n_class=10, in_channels=1, small_input=True), (2, 1, 28, 28))
random_case('mobilenet_v1_0.25', {}, MobileNetV1(0.25), (1, 3, 64, 64))
random_case('mobilenet_v1_0.25', {'smallInput': True, 'numClasses': 10}, MobileNetV1(0.25, n_class=10, small_input=True),
            (2, 3, 32, 32))
random_case('alexnet', {}, torchvision.models.alexnet(), (1, 3, 96, 96))

# Table 4's presets: (stem, stage2, stage3, stage4) as src/models/registry.ts TABLE4 lists them. 10 classes and a
# batch of 2 non-square images keep the fixture small.
TABLE4 = {
    'vgg_140m': [24, 24, 48, 104],
    'resnet_140m': [24, 100, 196, 392], 'resnet_38m': [12, 52, 100, 200], 'resnet_13m': [12, 24, 52, 100],
    'xception_140m': [24, 144, 288, 576], 'xception_38m': [12, 72, 144, 288], 'xception_13m': [12, 36, 72, 144],
    'resnext_140m': [24, 96, 192, 352], 'resnext_38m': [12, 32, 96, 192], 'resnext_13m': [12, 32, 64, 96],
}
for name, widths in TABLE4.items():
    random_case(f'table4_{name}', {'numClasses': 10}, Table4Net(name.split('_')[0], widths, n_class=10),
                (2, 3, 64, 48))

official = []
for g, widths in ((3, W['g3_0.5']), (8, W['g8_0.5'])):
    path = os.path.join(WEIGHTS, f'shufflenet_v1_g{g}_0.5x.pth.tar')
    sd = torch.load(path, map_location='cpu')['state_dict']
    model = ShuffleNetV1(widths, g)
    model.load_state_dict({k.removeprefix('module.'): v for k, v in sd.items()})
    shape = (1, 3, 224, 224)
    x = synthetic_input(shape, image=True)
    official.append({'preset': f'shufflenet_v1_g{g}_0.5x', 'file': os.path.basename(path), 'input': list(shape),
                     'logits': enc(run(model, x))})

out = os.path.join(ROOT, 'test', 'fixtures', 'models.json')
with open(out, 'w') as f:
    json.dump({'generator': 'tools/gen_model_fixtures.py', 'torch': torch.__version__, 'cases': cases,
               'official': official}, f)
print(out, os.path.getsize(out), 'bytes,', len(cases), 'random-weight cases,', len(official), 'official')
