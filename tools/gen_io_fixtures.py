#!/usr/bin/python3
"""Writes the checkpoint-reader fixtures in test/fixtures/io/ (run: /usr/bin/python3 tools/gen_io_fixtures.py).

- tiny_zip.pt          torch.save zip format, a bare state_dict
- tiny_legacy.pth.tar  torch.save legacy format (_use_new_zipfile_serialization=False), wrapped like the official
                       checkpoints: {'state_dict': {'module.' + name: ...}, 'epoch': 7, 'arch': 'tiny'}
- tiny_model_zip.pt    zip format, {'model': state_dict, 'epoch': 7}
- tiny_expected.json   every tensor: dtype, shape, values in row-major order (16-bit floats also as raw bits)
- evil_zip.pt, evil_legacy.pth.tar, evil_raw.pkl, evil_eval_p4.pkl
                       pickles whose loading would run a shell command. This script only *writes* them:
                       pickling an object calls its __reduce__ to get (callable, args) but never calls the callable.
                       Nothing here ever unpickles them (no torch.load / pickle.load on an evil file).

The legacy storage keys are memory addresses, so the files differ between runs; the tensors don't.
"""
import json
import math
import os
import pickle
import pickletools
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'test', 'fixtures', 'io')
PWNED = '/tmp/pwned'

DTYPE_NAMES = {
    torch.float32: 'F32', torch.float64: 'F64', torch.float16: 'F16', torch.bfloat16: 'BF16',
    torch.int64: 'I64', torch.int32: 'I32', torch.int16: 'I16', torch.int8: 'I8', torch.uint8: 'U8', torch.bool: 'BOOL',
}


def tiny_state_dict():
    g = torch.Generator().manual_seed(0)
    sd = {}
    sd['conv.weight'] = torch.randn(4, 2, 3, 3, generator=g)
    sd['bn.weight'] = torch.rand(4, generator=g) + 0.5
    sd['bn.bias'] = torch.randn(4, generator=g)
    sd['bn.running_mean'] = torch.randn(4, generator=g)
    sd['bn.running_var'] = torch.rand(4, generator=g) + 0.1
    sd['bn.num_batches_tracked'] = torch.tensor(123456789012, dtype=torch.int64)  # > 2^32: tests all 8 bytes
    base = torch.arange(15, dtype=torch.float32).reshape(5, 3) * 0.25 - 1
    sd['fc.weight_t'] = base.t()  # 3x5, strides (1, 3): non-contiguous
    big = torch.arange(-3, 9, dtype=torch.float32) / 8
    sd['slice'] = big[5:9]  # storage offset 5 into a 12-element storage
    sd['slice_strided'] = big.reshape(3, 4)[:, 1::2]  # offset 1, strides (4, 2)
    sd['expanded'] = torch.tensor([1.5, -2.0]).reshape(2, 1).expand(2, 3)  # stride 0
    sd['conv_channels_last'] = torch.randn(2, 3, 2, 2, generator=g).to(memory_format=torch.channels_last)
    sd['double'] = torch.tensor([[1 / 3, -2.5e-300], [1e300, -0.0]], dtype=torch.float64)
    sd['int32'] = torch.tensor([-(2 ** 31), -1, 0, 2 ** 31 - 1], dtype=torch.int32)
    sd['half'] = torch.tensor([1.0, -2.5, 65504.0, 6e-8, float('inf')], dtype=torch.float16)
    sd['bfloat'] = torch.tensor([1.0, -3.140625, 1e38, -1e-38], dtype=torch.bfloat16)
    sd['flags'] = torch.tensor([True, False, True])
    sd['empty'] = torch.zeros(0, 3)
    return sd


def json_number(x):
    # JSON has no infinities or NaN; write the strings JavaScript's Number() parses.
    if isinstance(x, float) and not math.isfinite(x):
        return 'NaN' if math.isnan(x) else ('Infinity' if x > 0 else '-Infinity')
    return x


def expected(sd):
    out = {}
    for name, t in sd.items():
        flat = t.contiguous().reshape(-1)
        entry = {'dtype': DTYPE_NAMES[t.dtype], 'shape': list(t.shape)}
        if t.dtype in (torch.float16, torch.bfloat16):
            entry['bits'] = [b & 0xFFFF for b in flat.view(torch.int16).tolist()]
            entry['values'] = flat.float().tolist()  # exact: every 16-bit float is a float32
        elif t.dtype == torch.bool:
            entry['values'] = [int(b) for b in flat.tolist()]
        else:
            entry['values'] = flat.tolist()  # float32/64 -> Python float is exact; JSON keeps all digits
        entry['values'] = [json_number(x) for x in entry['values']]
        out[name] = entry
    return out


class Evil:
    """Unpickling this runs os.system (pickled as posix.system on Linux)."""

    def __reduce__(self):
        return (os.system, ('echo pwned > ' + PWNED,))


class EvilEval:
    """The same attack through builtins.eval."""

    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned > " + PWNED + "')",))


def globals_in(data):
    """Global names a pickle references, found by disassembly (never executes it)."""
    names, strings = [], []
    for op, arg, _ in pickletools.genops(data):
        if op.name == 'GLOBAL':
            names.append(arg.replace(' ', '.'))
        elif op.name in ('SHORT_BINUNICODE', 'BINUNICODE'):
            strings.append(arg)
        elif op.name == 'STACK_GLOBAL':
            names.append('.'.join(strings[-2:]))
    return names


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = tiny_state_dict()
    assert not sd['fc.weight_t'].is_contiguous() and not sd['slice_strided'].is_contiguous()
    assert sd['slice'].storage_offset() == 5 and sd['expanded'].stride() == (1, 0)
    assert sd['conv_channels_last'].stride() == (12, 1, 6, 3)

    path = lambda name: os.path.join(OUT, name)  # noqa: E731
    torch.save(sd, path('tiny_zip.pt'))
    wrapped = {'epoch': 7, 'arch': 'tiny', 'state_dict': {'module.' + k: v for k, v in sd.items()}}
    torch.save(wrapped, path('tiny_legacy.pth.tar'), _use_new_zipfile_serialization=False)
    torch.save({'model': sd, 'epoch': 7}, path('tiny_model_zip.pt'))
    with open(path('tiny_expected.json'), 'w') as f:
        json.dump(expected(sd), f, indent=1, allow_nan=False)
        f.write('\n')

    # Sanity-check the good fixtures with torch itself (safe: they contain only tensors).
    for name, get in (('tiny_zip.pt', lambda o: o), ('tiny_legacy.pth.tar', lambda o: o['state_dict']),
                      ('tiny_model_zip.pt', lambda o: o['model'])):
        loaded = get(torch.load(path(name)))
        for k, v in sd.items():
            got = loaded.get(k, loaded.get('module.' + k))
            assert got.dtype == v.dtype and torch.equal(got, v), (name, k)

    torch.save({'state_dict': {'w': torch.ones(2)}, 'evil': Evil()}, path('evil_zip.pt'))
    torch.save({'evil': Evil(), 'w': torch.ones(2)}, path('evil_legacy.pth.tar'), _use_new_zipfile_serialization=False)
    with open(path('evil_raw.pkl'), 'wb') as f:
        pickle.dump(Evil(), f, protocol=2)
    with open(path('evil_eval_p4.pkl'), 'wb') as f:
        pickle.dump(EvilEval(), f, protocol=4)  # protocol 4: the global comes through STACK_GLOBAL

    with open(path('evil_raw.pkl'), 'rb') as f:
        assert globals_in(f.read()) == ['posix.system'], 'expected os.system to pickle as posix.system'
    with open(path('evil_eval_p4.pkl'), 'rb') as f:
        assert globals_in(f.read()) == ['builtins.eval']
    assert not os.path.exists(PWNED), PWNED + ' exists: something ran a malicious pickle'

    total = 0
    for name in sorted(os.listdir(OUT)):
        size = os.path.getsize(path(name))
        total += size
        print(f'{size:8d}  {name}')
    print(f'{total:8d}  total')
    assert total < 200_000


if __name__ == '__main__':
    sys.exit(main())
