"""Precision policies: low-precision conditioner networks, exact flow math.

A policy names the dtype the *conditioner networks* compute in (the
coupling networks, the Glow networks, the split priors and the variational
dequantizer's context network). Everything of the flow itself -- the
coupling transforms and their inverses, every log-det, ActNorm, the 1×1
convolutions, the preprocessing, the dequantizer's squash, the prior, the
bounds and bits/dim -- stays in the model's float dtype (``--dtype``), and
variables (hence optimizer state and checkpoints) are always in that dtype,
so a checkpoint moves freely between policies.

```none
float32          networks in the model dtype (no casts)
mixed_bfloat16   networks in bfloat16; outputs cast back before any coupling
mixed_float16    networks in float16, with dynamic loss scaling in training
auto             mixed_bfloat16 where the hardware has fast bfloat16 (AMX
                 or AVX512-BF16 on the CPU, compute capability >= 8 on the
                 GPU), else float32
```

Casts happen only at a network's boundary (input and context in, outputs
out); inside, layer-norm statistics are computed in float32 (`LayerNorm`).
"""

import functools

import tensorflow as tf

__all__ = [
    'POLICIES', 'LOW_DTYPES', 'resolve', 'network_dtype', 'policy_of',
    'uses_loss_scaling', 'cpu_bf16_flags'
]

# Policy name -> dtype its networks compute in (None: the model dtype).
LOW_DTYPES = {
    'float32': None,
    'mixed_bfloat16': tf.bfloat16,
    'mixed_float16': tf.float16,
}
POLICIES = ('auto',) + tuple(LOW_DTYPES)

# /proc/cpuinfo flags of CPUs with native bfloat16 matrix arithmetic.
_CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')


def cpu_bf16_flags(cpuinfo_path='/proc/cpuinfo'):
  """The bfloat16 flags (``amx_bf16``, ``avx512_bf16``) this CPU reports."""
  try:
    with open(cpuinfo_path) as f:
      for line in f:
        if line.startswith('flags'):
          present = set(line.split(':', 1)[1].split())
          return tuple(f for f in _CPU_BF16_FLAGS if f in present)
  except OSError:
    pass
  return ()


def _gpu_capabilities():
  capabilities = []
  for device in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(device)
    capabilities.append(tuple(details.get('compute_capability') or (0, 0)))
  return capabilities


@functools.lru_cache(maxsize=None)
def _resolve_auto():
  gpus = _gpu_capabilities()
  if gpus:
    if min(gpus) >= (8, 0):
      return ('mixed_bfloat16', 'auto: GPU compute capability '
              f'{".".join(map(str, min(gpus)))} >= 8.0 has bfloat16 tensor '
              'cores')
    return ('float32', 'auto: GPU compute capability '
            f'{".".join(map(str, min(gpus)))} < 8.0 (no bfloat16 tensor '
            'cores)')
  flags = cpu_bf16_flags()
  if flags:
    return ('mixed_bfloat16',
            f'auto: the CPU has {" and ".join(flags)} (fast bfloat16)')
  return ('float32', 'auto: the CPU has neither amx_bf16 nor avx512_bf16')


def resolve(policy):
  """``(policy, reason)``: the concrete policy ``policy`` stands for.

  Args:
    policy: one of `POLICIES`.

  Returns:
    A key of `LOW_DTYPES` and a human-readable reason for it.

  Raises:
    ValueError: an unknown policy.
  """
  if policy not in POLICIES:
    raise ValueError(f'precision must be one of {POLICIES}, got {policy!r}.')
  if policy == 'auto':
    return _resolve_auto()
  return policy, 'requested'


def policy_of(module):
  """The policy a built model (or any `tf.Module`) computes its networks in.

  Read from the ``compute_dtype`` of its networks; ``'float32'`` (networks
  in the model dtype) if it has none.

  Raises:
    ValueError: its networks compute in different dtypes.
  """
  dtypes = {
      getattr(m, 'compute_dtype')
      for m in module.submodules
      if getattr(m, 'compute_dtype', None) is not None
  }
  names = [n for n, d in LOW_DTYPES.items() if d is not None and d in dtypes]
  if len(dtypes) > 1 or len(names) != len(dtypes):
    raise ValueError(f'Networks compute in mixed dtypes {sorted(map(str, dtypes))}.')
  return names[0] if names else 'float32'


def uses_loss_scaling(policy):
  """Whether training under ``policy`` needs dynamic loss scaling."""
  return LOW_DTYPES[resolve(policy)[0]] == tf.float16


def network_dtype(policy):
  """The dtype networks of a model built under ``policy`` compute in.

  None means "the dtype of the input" (no casts).
  """
  return LOW_DTYPES[resolve(policy)[0]]
