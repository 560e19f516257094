#!/usr/bin/python3
"""PyTorch's side of the training benchmark (bench/train.ts): a persistent process, so that interpreter and
torch start-up are not timed and its steps can be interleaved with ours.

Reads one JSON command per line on stdin, answers one JSON line on stdout (errors: {"error": "..."}):
  (at start, unasked)  {"ready": true, "torch": ..., "blas": ..., ...}: versions and the BLAS in use
  {"cmd": "setup", "id": "nchw", "widths": [stem, s2, s3, s4], "groups": 3, "c": 1, "h": 28, "batch": 128,
   "threads": 1, "data": DIR, "channels_last": false, "lr": 0.01}
      Builds reference_models.ShuffleNetV1 (small-input stem, 10 classes) under the name `id` (replacing the
      one of that name) and loads DIR/weights.bin (the float32 tensors named in DIR/weights.json, in order: the
      same initial weights as ours), DIR/input.f32 ([batch, c, h, h]) and DIR/labels.i32. Sets the threads (of
      torch and of OpenBLAS) for every model. Answers {"params": learnable element count}.
  {"cmd": "step", "id": ..., "steps": N}  N training steps; {"ms": [per step], "loss": last loss}
  {"cmd": "logits", "id": ...}            the last step's logits, flattened: {"logits": [...]}
One step: zero_grad(set_to_none=True), forward (training-mode BN), cross entropy with label smoothing 0.1,
backward, SGD (momentum 0.9, Nesterov, weight decay 5e-4 on parameters of 2+ dimensions only, as ours).
Run alone: /usr/bin/python3 tools/torch_train_bench.py, then type commands.
"""
import ctypes
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import ShuffleNetV1, load_weights  # noqa: E402


def blas_info():
    """The BLAS library mapped into this process (Debian picks it through update-alternatives) and, for
    OpenBLAS, its build string and thread setter."""
    with open('/proc/self/maps') as f:
        paths = sorted({line.split()[-1] for line in f if 'blas' in line.split()[-1].rsplit('/', 1)[-1]})
    lib = next((p for p in paths if 'libblas.so' in p), paths[0] if paths else None)
    config, set_threads = None, None
    if lib:
        handle = ctypes.CDLL(lib)
        if hasattr(handle, 'openblas_get_config'):
            handle.openblas_get_config.restype = ctypes.c_char_p
            config = handle.openblas_get_config().decode()
            set_threads = handle.openblas_set_num_threads
    return {'libblas': lib, 'mapped': paths, 'openblas': config}, set_threads


BLAS, set_blas_threads = blas_info()
models = {}


def setup(cmd):
    threads = int(cmd['threads'])
    torch.set_num_threads(threads)
    if set_blas_threads:
        set_blas_threads(threads)
    c, h, batch, data = int(cmd['c']), int(cmd['h']), int(cmd['batch']), cmd['data']
    torch.manual_seed(0)
    model = ShuffleNetV1(cmd['widths'], int(cmd['groups']), n_class=10, in_channels=c, small_input=True)
    load_weights(model, data)
    x = torch.from_numpy(np.fromfile(os.path.join(data, 'input.f32'), dtype=np.float32).reshape(batch, c, h, h))
    y = torch.from_numpy(np.fromfile(os.path.join(data, 'labels.i32'), dtype=np.int32).astype(np.int64))
    model.train()
    if cmd.get('channels_last'):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{'params': [p for p in params if p.dim() > 1], 'weight_decay': 5e-4},
              {'params': [p for p in params if p.dim() <= 1], 'weight_decay': 0.0}]
    opt = torch.optim.SGD(groups, lr=float(cmd.get('lr', 0.01)), momentum=0.9, nesterov=True)
    models[cmd.get('id', '')] = {'model': model, 'opt': opt, 'x': x, 'y': y, 'logits': None}
    return {'params': sum(p.numel() for p in params), 'threads': torch.get_num_threads()}


def step(cmd):
    state = models[cmd.get('id', '')]
    model, opt, x, y = state['model'], state['opt'], state['x'], state['y']
    times, loss = [], None
    for _ in range(int(cmd.get('steps', 1))):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        times.append((time.perf_counter() - t0) * 1000)
        state['logits'] = logits
    return {'ms': times, 'loss': loss.item() if loss is not None else None}


def logits(cmd):
    return {'logits': models[cmd.get('id', '')]['logits'].detach().flatten().tolist()}


COMMANDS = {'setup': setup, 'step': step, 'logits': logits}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def main():
    capability = [s.split(':', 1)[1].strip() for s in torch.__config__.show().splitlines() if 'CPU capability' in s]
    reply({'ready': True, 'torch': torch.__version__, 'python': sys.version.split()[0], 'blas': BLAS,
           'mkldnn': torch.backends.mkldnn.is_available(), 'capability': capability[0] if capability else None})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            reply(COMMANDS[cmd['cmd']](cmd))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the caller as a message
            reply({'error': f'{type(e).__name__}: {e}'})


if __name__ == '__main__':
    main()
