r"""Sampling from a trained GPT run: ``lionx-sample``, with a KV cache.

::

  lionx-sample --workdir runs/lm_default/lion --prompt 'def ' \
      --max-new-tokens 48 --temperature 0.8 --top-k 40 --seed 0
  lionx-sample --workdir runs/owt --prompt-ids 50256 --max-new-tokens 32 \
      --temperature 0

loads the model of the run's last checkpoint (or ``--step``; the optimizer
state is not read) and generates ``--max-new-tokens`` tokens after the
prompt. Text in and out for ``data.name='text_bytes'`` runs (the prompt's
UTF-8 bytes are its tokens; the output is the prompt and the continuation
as UTF-8, undecodable bytes replaced); token ids in and out (comma-
separated) for ``token_files`` runs, which have no tokenizer here.

**Sampling.** Each new token is drawn from :math:`\operatorname{softmax}
(z / T)` of the last position's logits :math:`z`, restricted to the
``top_k`` largest when given; :math:`T = 0` is greedy (argmax). Token
:math:`t` of the continuation uses the key ``fold_in(key(seed), t)``, so a
seed fixes the sample.

**The cache.** The prompt runs through the model once
(:meth:`lionx.train.models.lm.GPT.decode`), which keeps every block's keys
and values; each new token then costs one position's forward pass, not the
whole context's. The cache has a fixed shape (prompt plus new tokens), so
one compiled step serves every token. The logits are those of the full
forward pass to float32 rounding (``use_cache=False`` re-runs the full
context for each token, for checking). The context is the model's
``model.context_length``: a prompt plus ``--max-new-tokens`` longer than it
is refused, not slid.

Errors are one line on stderr (``lionx-sample: error: ...``), exit code 2,
as for ``lionx-train``; ``LIONX_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import pathlib
import sys
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from lionx import checks
from lionx.train import tasks
from lionx.train import workdir as workdir_lib
from lionx.train.checkpoint import Checkpointer
from lionx.train.config import Config, ConfigError
from lionx.train.models import lm
from lionx.train.tasks import language_model

EXIT_ERROR = 2
PROG = 'lionx-sample'
# How sample() names its arguments in errors; the CLI names its flags.
_ARGS = {n: n for n in ('prompt_ids', 'max_new_tokens', 'temperature',
                        'top_k', 'seed')}
_FLAGS = {'prompt_ids': '--prompt-ids', 'max_new_tokens': '--max-new-tokens',
          'temperature': '--temperature', 'top_k': '--top-k',
          'seed': '--seed'}


# --- sampling -------------------------------------------------------------


def _integer(name: str, value: Any, low: int, high: float) -> None:
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, np.integer)):
    raise TypeError(f'{name}={value!r}: expected an int.')
  checks.in_range(name, value, low, high, high_open=high == math.inf)


def _prompt(model: lm.GPT, prompt_ids: Any, name: str) -> np.ndarray:
  """``prompt_ids`` as a (B, P) int32 array of ids in the vocabulary."""
  prompt = np.asarray(prompt_ids)
  if prompt.ndim not in (1, 2) or (
      prompt.size and not np.issubdtype(prompt.dtype, np.integer)):
    raise TypeError(f'{name} of shape {prompt.shape} and dtype '
                    f'{prompt.dtype}: expected token ids, (P,) or (B, P) '
                    'ints.')
  if prompt.shape[-1] == 0 or prompt.size == 0:
    raise ValueError(f'{name} is empty: expected at least one token.')
  vocab = model.vocab_size
  bad = np.flatnonzero((prompt < 0) | (prompt >= vocab))
  if bad.size:
    where = np.unravel_index(bad[0], prompt.shape)
    index = int(where[-1]) if prompt.ndim == 1 else tuple(map(int, where))
    raise ValueError(
        f'{name} holds {int(prompt[where])} at index {index}: expected '
        f"token ids 0 to {vocab - 1} (the model's vocabulary of {vocab}).")
  return np.atleast_2d(prompt).astype(np.int32)


def _check(model: Any, prompt_ids: Any, max_new_tokens: Any,
           temperature: Any, top_k: Any, seed: Any,
           names: Mapping[str, str]) -> np.ndarray:
  """Checks the arguments of :func:`sample`; returns the (B, P) prompt."""
  if not isinstance(model, lm.GPT):
    raise TypeError(
        f'model={type(model).__name__}: expected a lionx.train.models.lm.GPT'
        " (the model of a task='language_model' run).")
  prompt = _prompt(model, prompt_ids, names['prompt_ids'])
  _integer(names['max_new_tokens'], max_new_tokens, 1, math.inf)
  checks.non_negative(names['temperature'], temperature)
  if top_k is not None:
    _integer(names['top_k'], top_k, 1, model.vocab_size)
  _integer(names['seed'], seed, 0, math.inf)
  if seed >= 2 ** 32:  # jax.random.key(2**32) is key(0)
    raise ValueError(f'{names["seed"]}={seed}: expected a seed below 2**32 '
                     '(jax.random.key keeps 32 bits).')
  length, context = prompt.shape[1] + max_new_tokens, model.context_length
  if length > context:
    raise ValueError(
        f'{names["max_new_tokens"]}={max_new_tokens} after a prompt of '
        f'{prompt.shape[1]} token(s) needs {length} positions, more than the '
        f"model's context length {context} (model.context_length); the "
        f'window does not slide: expected {names["max_new_tokens"]} <= '
        f'{context - prompt.shape[1]}, or a shorter prompt.')
  return prompt


def _choose(logits: jax.Array, key: jax.Array, temperature: float,
            top_k: Optional[int]) -> jax.Array:
  """The next token of each row of ``logits`` (B, vocab)."""
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / temperature
  if top_k is None:
    return jax.random.categorical(key, logits).astype(jnp.int32)
  # lax.top_k breaks ties towards the lower id, as argmax does.
  values, ids = lax.top_k(logits, top_k)
  pick = jax.random.categorical(key, values)
  return jnp.take_along_axis(ids, pick[:, None], axis=-1)[:, 0]


_STATIC = ('graphdef', 'temperature', 'top_k')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _step(state, cache, tokens, position, key, index, *, graphdef,
          temperature, top_k):
  """Decodes ``tokens`` at ``position`` with the cache; the next token."""
  logits, cache = nnx.merge(graphdef, state).decode(tokens, cache, position)
  return _choose(logits[:, -1], jax.random.fold_in(key, index), temperature,
                 top_k), cache


@functools.partial(jax.jit, static_argnames=_STATIC)
def _full_step(state, tokens, end, key, index, *, graphdef, temperature,
               top_k):
  """The next token after ``tokens[:, :end]`` by the full forward pass; the
  tokens with it written at ``end``. The causal model's logits at
  ``end - 1`` see ``tokens[:, :end]`` only, so the zeros after them do not
  matter: one shape, one compilation."""
  logits = nnx.merge(graphdef, state)(tokens)
  token = _choose(lax.dynamic_index_in_dim(logits, end - 1, 1, False),
                  jax.random.fold_in(key, index), temperature, top_k)
  return token, lax.dynamic_update_slice(tokens, token[:, None], (0, end))


def sample(model: lm.GPT, prompt_ids: Any, *, max_new_tokens: int,
           temperature: float = 1.0, top_k: Optional[int] = None,
           seed: int = 0, use_cache: bool = True) -> np.ndarray:
  r"""Generates ``max_new_tokens`` tokens after ``prompt_ids``.

  Args:
    model: a :class:`lionx.train.models.lm.GPT` (any ``param_dtype``).
    prompt_ids: token ids, shape (P,) or (B, P) for B prompts of P tokens.
    max_new_tokens: how many tokens to generate (>= 1); P plus it must not
      exceed the model's context length.
    temperature: :math:`T \ge 0`; tokens are drawn from
      :math:`\operatorname{softmax}(z / T)`, and :math:`T = 0` is greedy.
    top_k: draw among the ``top_k`` most likely tokens only (1 to the
      vocabulary; None: all).
    seed: fixes the draws (token :math:`t` uses ``fold_in(key(seed), t)``).
    use_cache: decode with the key/value cache (one position a token);
      False re-runs the full context for every token (a check).

  Returns:
    The new tokens, shape (max_new_tokens,) or (B, max_new_tokens), int32.

  Example:
    >>> from lionx.train.models import lm
    >>> from lionx.train.sample import sample
    >>> model = lm.create_model(lm.GPTModelConfig(), 256)
    >>> sample(model, [104, 105], max_new_tokens=4, temperature=0).shape
    (4,)
  """
  prompt = _check(model, prompt_ids, max_new_tokens, temperature, top_k,
                  seed, _ARGS)
  temperature = float(temperature)
  top_k = None if top_k is None else int(top_k)  # lax.top_k: a Python int
  graphdef, state = nnx.split(model)
  key = jax.random.key(seed)
  batch, length = prompt.shape
  total = length + max_new_tokens
  how = dict(graphdef=graphdef, temperature=temperature, top_k=top_k)
  new = []
  if use_cache:
    cache = model.init_cache(batch, total)
    token, cache = _step(state, cache, jnp.asarray(prompt), 0, key, 0,
                         **how)  # the prompt, in one call
    new.append(token)
    for t in range(1, max_new_tokens):  # the same compiled step each time
      token, cache = _step(state, cache, token[:, None], length + t - 1,
                           key, t, **how)
      new.append(token)
  else:
    tokens = jnp.zeros((batch, total), jnp.int32).at[:, :length].set(prompt)
    for t in range(max_new_tokens):
      token, tokens = _full_step(state, tokens, length + t, key, t, **how)
      new.append(token)
  out = np.stack([np.asarray(t) for t in new], axis=1)
  return out[0] if np.ndim(prompt_ids) == 1 else out


# --- a run's model ----------------------------------------------------------


def _section(cls: type, values: Any, name: str,
             marker: pathlib.Path) -> Any:
  try:
    return cls(**values)
  except TypeError as err:
    raise ConfigError(f'{marker}: its {name} section does not fit this '
                      f'version of lionx ({err}).') from None


def _no_run(path: pathlib.Path) -> ConfigError:
  for kind in ('comparison', 'grid'):
    if (path / workdir_lib.MARKERS[kind]).exists():
      # W/<optimizer>/[lr_<lr>/][seed_<s>/]config.json
      runs = sorted(p.parent for depth in ('*/', '*/*/', '*/*/*/')
                    for p in path.glob(depth + workdir_lib.CONFIG_FILE))
      shown = f', e.g. {runs[0]}' if runs else ''
      return ConfigError(
          f'--workdir {path} holds a {kind}, not a single run; pass the '
          f'workdir of one of its runs{shown}.')
  return ConfigError(
      f'--workdir {path} holds no run (no {workdir_lib.CONFIG_FILE}); '
      'expected the workdir of a lionx-train run.')


def run_config(workdir: str | pathlib.Path) -> Config:
  """The task, data and model of the GPT run in ``workdir`` (the other
  sections keep their defaults: sampling does not need them)."""
  path = pathlib.Path(workdir)
  if not path.is_dir():
    raise ConfigError(f'--workdir {path}: no such directory.')
  marker = path / workdir_lib.CONFIG_FILE
  stored = workdir_lib.read_json(marker)
  if stored is None:
    raise _no_run(path)
  try:
    identity = stored['config']
    task_name, model, data = (identity['task'], identity['model'],
                              identity['data'])
    model_name = model.get('name')
  except (KeyError, TypeError, AttributeError) as err:
    raise ConfigError(f'{marker}: unreadable ({type(err).__name__}: '
                      f'{err}).') from None
  task = tasks.get_task(task_name)
  if not (isinstance(task, language_model.LanguageModelling)
          and model_name in lm.GPT_PRESETS):
    raise ConfigError(
        f'--workdir {path} is a run of task={task_name!r} with model.name='
        f"{model_name!r}; {PROG} generates from GPT language-model runs "
        "(task='language_model', e.g. configs/lm_default.py).")
  config = Config(task=task_name)
  config.model = _section(task.model_config, model, 'model', marker)
  config.data = _section(task.data_config, data, 'data', marker)
  lm.validate(config.model, task.models)
  return config


def load_model(workdir: str | pathlib.Path, step: Optional[int] = None
               ) -> tuple[lm.GPT, Config, int]:
  """The GPT of the run in ``workdir`` with the parameters of its last
  checkpoint (or of ``step``); returns it, the run's config and the step.
  """
  config = run_config(workdir)
  path = pathlib.Path(workdir)
  task = tasks.get_task(config.task)
  spec = task.input_spec(config)
  # Shapes only: the checkpoint fills in the parameters.
  model = nnx.eval_shape(lambda: task.create_model(config, spec, 0))
  folder = path / workdir_lib.CHECKPOINT_DIR
  steps = []
  if folder.is_dir():
    with Checkpointer(folder, read_only=True) as ckpt:
      steps = ckpt.all_steps()
      chosen = steps[-1] if step is None and steps else step
      if chosen in steps:
        ckpt.restore_model(chosen, model)
  if not steps:
    raise ConfigError(
        f'--workdir {path} has no checkpoint ({folder} is missing or '
        'empty): train the run first, or wait for its first checkpoint.')
  if chosen not in steps:
    raise ConfigError(
        f'--step {step}: {folder} has no checkpoint of that step; it has '
        f'step(s) {", ".join(map(str, steps))}.')
  return model, config, chosen


# --- command line -------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=PROG, description=(
          'Generate from the last checkpoint of a GPT language-model run '
          '(lionx-train with task=language_model), with a key/value '
          'cache.'))
  parser.add_argument('--workdir', required=True,
                      help="the run's workdir (config.json, checkpoints/)")
  prompt = parser.add_mutually_exclusive_group(required=True)
  prompt.add_argument('--prompt', help='text, for text_bytes runs: its '
                      'UTF-8 bytes are the tokens')
  prompt.add_argument('--prompt-ids', metavar='ID,ID,...',
                      help='comma-separated token ids (token_files runs)')
  parser.add_argument('--max-new-tokens', type=int, required=True,
                      metavar='N', help='tokens to generate; the prompt '
                      "plus N must fit the model's context")
  parser.add_argument('--temperature', type=float, default=1.0,
                      metavar='T', help='softmax temperature; 0 is greedy '
                      '(default: 1)')
  parser.add_argument('--top-k', type=int, default=None, metavar='K',
                      help='draw among the K most likely tokens only '
                      '(default: all)')
  parser.add_argument('--seed', type=int, default=0, metavar='S',
                      help='fixes the sample (default: 0)')
  parser.add_argument('--step', type=int, default=None,
                      help='the checkpoint of this step (default: the last)')
  return parser


def _prompt_ids(args: argparse.Namespace, data: str) -> list[int]:
  if args.prompt is not None:
    if data != 'text_bytes':
      raise ConfigError(
          f"--prompt is text, but the run's data.name={data!r} holds token "
          'ids (no tokenizer here); pass --prompt-ids ID,ID,... instead.')
    return list(args.prompt.encode('utf-8'))
  try:
    return [int(v) for v in args.prompt_ids.split(',') if v.strip()]
  except ValueError:
    raise ConfigError(f'--prompt-ids {args.prompt_ids!r}: expected '
                      'comma-separated token ids, e.g. 1,2,3.') from None


def _main(argv: Optional[Sequence[str]]) -> int:
  args = _parser().parse_args(argv)
  model, config, step = load_model(args.workdir, args.step)
  prompt = _prompt_ids(args, config.data.name)
  flags = dict(_FLAGS, prompt_ids='--prompt-ids' if args.prompt is None
               else '--prompt')
  _check(model, prompt, args.max_new_tokens, args.temperature, args.top_k,
         args.seed, flags)
  print(f'{PROG}: {args.workdir}, checkpoint of step {step} '
        f'({config.model.name}, {config.data.name})', file=sys.stderr)
  new = sample(model, prompt, max_new_tokens=args.max_new_tokens,
               temperature=args.temperature, top_k=args.top_k,
               seed=args.seed)
  tokens = prompt + [int(t) for t in new]
  if config.data.name == 'text_bytes':
    print(bytes(tokens).decode('utf-8', errors='replace'))
  else:
    print(','.join(map(str, tokens)))
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of ``lionx-sample``; returns the exit code."""
  if os.environ.get('LIONX_DEBUG'):
    return _main(argv)
  try:
    return _main(argv)
  except KeyboardInterrupt:
    print(f'{PROG}: interrupted.', file=sys.stderr)
    return 130
  except (ValueError, TypeError, OSError) as err:
    message = ' '.join(str(err).split())
    print(f'{PROG}: error: {message}', file=sys.stderr)
    return EXIT_ERROR


if __name__ == '__main__':
  sys.exit(main())
