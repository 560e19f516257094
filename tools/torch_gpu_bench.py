#!/usr/bin/env python3
"""PyTorch's side of the GPU benchmark (bench/gpu.ts): ShuffleNet v1 (default 1.0x g=3, 1000 classes) from
tools/reference_models.py (the authors' network, our parameter names), timed in fp32 on CUDA (or, slowly, on
the CPU when there is no CUDA or --device cpu), one JSON line per measurement on stdout:

  {"kind": "info", ...}                         versions, device, settings (first line)
  {"kind": "logits", "batch": B, "logits": [...]}   with --data: eval-mode logits of DIR/input.f32 (checks)
  {"kind": "infer" | "train", "format": "nchw" | "channels_last", "io": "device" | "host", "batch": B,
   "size": S, "median_ms", "min_ms", "max_ms", "p90_ms", "iterations", "images_per_s"}
  {"kind": ..., "batch": B, "error": "..."}    a measurement that failed (e.g. out of memory); the others go on
  --half-batches: inference rows again with the model and input in fp16 ("precision": "fp16"), the peer of
  our f16 activations

infer: eval mode, torch.no_grad(), one forward. train: train mode, one step of zero_grad(set_to_none=True),
forward, cross entropy (label smoothing 0.1), backward, SGD (lr 0.01, momentum 0.9, Nesterov, weight decay 5e-4
on parameters of 2+ dimensions, as bench/train.ts). io "device": input (and labels) already on the device, the
logits stay there (PyTorch's usual figure); io "host" (--host-io): the input comes from a CPU tensor and the
logits go back to one each iteration, as our WebGPU plans do. Timing: --warmup untimed iterations, then
--iterations timed ones (stopping early after --budget-s once 5 ran), each between torch.cuda.synchronize()
calls, time.perf_counter(); the median is the figure. cudnn.benchmark is on; TF32 is off (strict fp32) unless
--tf32. Random weights (torch.manual_seed(0)) unless --data DIR gives ours (DIR/weights.json + weights.bin, as
tools/torch_train_bench.py reads them).

  python3 tools/torch_gpu_bench.py                                    # CUDA: batch 1 and 256 at 224, train 256
  python3 tools/torch_gpu_bench.py --device cpu --size 32 --infer-batches 1,2 --train-batch 2 --iterations 3
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import ShuffleNetV1, load_weights  # noqa: E402


def emit(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()


def ints(text):
    return [int(v) for v in text.split(',') if v.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', choices=['auto', 'cuda', 'cpu'], default='auto')
    p.add_argument('--widths', type=ints, default=[24, 240, 480, 960], help='stem and stage widths (1.0x g=3)')
    p.add_argument('--groups', type=int, default=3)
    p.add_argument('--classes', type=int, default=1000)
    p.add_argument('--small-input', action='store_true', help='3x3 stride-1 stem, no max pool (CIFAR-10)')
    p.add_argument('--size', type=int, default=224, help='input height and width')
    p.add_argument('--infer-batches', type=ints, default=[1, 256], help='comma-separated; empty: none')
    p.add_argument('--train-batches', type=ints, default=None, help='comma-separated; empty: none')
    p.add_argument('--half-batches', type=ints, default=[], help='inference in fp16 (model.half()) at these batches')
    p.add_argument('--train-batch', type=int, default=256, help='one training batch (--train-batches: several)')
    p.add_argument('--formats', default='nchw,channels_last', help='memory formats: nchw, channels_last')
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--iterations', type=int, default=50)
    p.add_argument('--budget-s', type=float, default=20.0, help='timed seconds per measurement, at most')
    p.add_argument('--host-io', action='store_true', help='also time with the input and logits on the CPU')
    p.add_argument('--tf32', action='store_true', help='allow TF32 in convolutions and matmuls (not fp32)')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    p.add_argument('--data', help='DIR with weights.json, weights.bin and input.f32 ([N, 3, size, size])')
    a = p.parse_args(argv)
    a.formats = [f for f in a.formats.split(',') if f]
    bad = [f for f in a.formats if f not in ('nchw', 'channels_last')]
    if bad:
        p.error(f'--formats: {bad} (expected nchw, channels_last)')
    if a.train_batches is None:
        a.train_batches = [a.train_batch] if a.train_batch > 0 else []
    return a


def set_fp32_precision(tf32):
    """Strict fp32 (or TF32) in cuDNN convolutions and cuBLAS matmuls: PyTorch 2.9+'s fp32_precision settings
    where they exist (mixing them with the older allow_tf32 flags is an error there), else allow_tf32."""
    value = 'tf32' if tf32 else 'ieee'
    try:
        torch.backends.cudnn.conv.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
        return f'fp32_precision={value}'
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        return f'allow_tf32={tf32}'


def build(a, device, fmt):
    torch.manual_seed(0)
    model = ShuffleNetV1(a.widths, a.groups, n_class=a.classes, small_input=a.small_input)
    if a.data:
        load_weights(model, a.data)
    model = model.to(device)
    if fmt == 'channels_last':
        model = model.to(memory_format=torch.channels_last)
    return model


def timed(step, sync, a):
    for _ in range(a.warmup):
        step()
    sync()
    times = []
    began = time.perf_counter()
    for _ in range(a.iterations):
        t0 = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= 5 and time.perf_counter() - began > a.budget_s:
            break
    s = sorted(times)
    return {'median_ms': statistics.median(s), 'min_ms': s[0], 'max_ms': s[-1],
            'p90_ms': s[min(len(s) - 1, int(0.9 * len(s)))], 'iterations': len(s)}


def measure(kind, a, device, fmt, io, batch, half=False):
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    row = {'kind': kind, 'format': fmt, 'io': io, 'batch': batch, 'size': a.size}
    if half:
        row['precision'] = 'fp16'
    try:
        model = build(a, device, fmt)
        if half:
            model = model.half()
        gen = torch.Generator().manual_seed(2024)
        x_host = torch.rand(batch, 3, a.size, a.size, generator=gen) * 2 - 1
        y_host = torch.randint(0, a.classes, (batch,), generator=gen)
        mf = torch.channels_last if fmt == 'channels_last' else torch.contiguous_format
        if half:
            x_host = x_host.half()
        x_dev = x_host.to(device).contiguous(memory_format=mf)
        y_dev = y_host.to(device)
        if io == 'host' and device.type == 'cuda':
            def inputs():
                return x_host.to(device).contiguous(memory_format=mf), y_host.to(device)
        else:
            def inputs():
                return x_dev, y_dev
        if kind == 'infer':
            model.eval()

            def step():
                x, _ = inputs()
                with torch.no_grad():
                    out = model(x)
                if io == 'host':
                    out.cpu()
        else:
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            groups = [{'params': [p for p in params if p.dim() > 1], 'weight_decay': 5e-4},
                      {'params': [p for p in params if p.dim() <= 1], 'weight_decay': 0.0}]
            opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9, nesterov=True)

            def step():
                x, y = inputs()
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = F.cross_entropy(out, y, label_smoothing=0.1)
                loss.backward()
                opt.step()
                if io == 'host':
                    out.detach().cpu()
        row.update(timed(step, sync, a))
        row['images_per_s'] = batch * 1000 / row['median_ms']
    except Exception as e:  # noqa: BLE001 - one failed measurement (out of memory, say) is reported, not fatal
        row['error'] = f'{type(e).__name__}: {e}'.split('\n')[0]
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    emit(row)


def main(argv):
    a = parse_args(argv)
    if a.device == 'cuda' and not torch.cuda.is_available():
        emit({'kind': 'error', 'error': 'CUDA is not available'})
        return 1
    device = torch.device('cuda' if a.device != 'cpu' and torch.cuda.is_available() else 'cpu')
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.backends.cudnn.benchmark = True
    precision = set_fp32_precision(a.tf32)
    info = {'kind': 'info', 'torch': torch.__version__, 'python': sys.version.split()[0], 'device': device.type,
            'widths': a.widths, 'groups': a.groups, 'classes': a.classes, 'small_input': a.small_input, 'size': a.size,
            'precision': 'tf32' if a.tf32 else 'fp32', 'precision_setting': precision, 'cudnn_benchmark': True, 'formats': a.formats,
            'warmup': a.warmup, 'iterations': a.iterations, 'budget_s': a.budget_s, 'threads': torch.get_num_threads()}
    if device.type == 'cuda':
        info.update({'gpu': torch.cuda.get_device_name(0), 'cuda': torch.version.cuda,
                     'cudnn': torch.backends.cudnn.version()})
    model = build(a, device, 'nchw')
    info['params'] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    emit(info)
    if a.data and os.path.exists(os.path.join(a.data, 'input.f32')):
        import numpy as np
        x = torch.from_numpy(np.fromfile(os.path.join(a.data, 'input.f32'), dtype=np.float32))
        x = x.reshape(-1, 3, a.size, a.size)
        model.eval()
        with torch.no_grad():
            logits = model(x.to(device)).cpu()
        emit({'kind': 'logits', 'batch': x.shape[0], 'logits': logits.flatten().tolist()})
    del model
    ios = ['device', 'host'] if a.host_io and device.type == 'cuda' else ['device']
    for kind, batches in (('infer', a.infer_batches), ('train', a.train_batches)):
        for batch in batches:
            for fmt in a.formats:
                for io in ios:
                    measure(kind, a, device, fmt, io, batch)
    for batch in a.half_batches:
        for fmt in a.formats:
            measure('infer', a, device, fmt, 'device', batch, half=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
