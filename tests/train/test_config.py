"""Config files, overrides and validation; the shipped configs."""

import pytest

from lionx.train import config as config_lib
from lionx.train import optimizers
from lionx.train.config import Config, ConfigError, load_config
from tests.train.helpers import ROOT

CONFIGS = sorted((ROOT / 'configs').glob('*.py'))

# REFERENCE §6: best rates (Lion, SGD) of the papers' CIFAR runs.
PAPER_RATES = {
    'cifar10,resnet18': (3e-6, 1e-6), 'cifar100,resnet18': (3e-5, 3e-4),
    'cifar10,resnet50': (3e-6, 3e-6), 'cifar100,resnet50': (3e-5, 1e-4),
    'cifar10,vit_s': (1e-6, 1e-6), 'cifar100,vit_s': (1e-6, 1e-6)}


def test_every_config_file_names_its_command():
  assert len(CONFIGS) >= 5
  for path in CONFIGS:
    text = path.read_text()
    doc = text.split('"""')[1]
    assert (f'--config configs/{path.name}' in doc or 'my_imagenet' in doc
            or f'--config configs/{path.stem}.py:' in doc)
    assert 'lionx-' in doc


@pytest.mark.parametrize('arg', sorted(PAPER_RATES))
def test_cifar_configs_are_the_papers_settings(arg):
  config = load_config(f"{ROOT / 'configs' / 'cifar.py'}:{arg}")
  dataset, model = arg.split(',')
  assert (config.data.name, config.model.name) == (dataset, model)
  assert (config.num_epochs, config.batch_size) == (100, 64)
  assert config.schedule.name == 'cosine'
  assert config.optimizer.weight_decay == 0.1
  assert config.data.augment
  rates = config.optimizer.learning_rates
  assert (rates['lion'], rates['sgd']) == PAPER_RATES[arg]
  config.optimizer.name = 'sgd'
  assert optimizers.learning_rate(config.optimizer) == PAPER_RATES[arg][1]
  if 'vit' in arg:
    assert (config.model.image_size, config.model.patch_size) == (224, 16)


def test_config_arguments_are_checked():
  with pytest.raises(ConfigError, match=r"argument 'cifar10,resnet9'"):
    load_config(f"{ROOT / 'configs' / 'cifar.py'}:cifar10,resnet9")
  with pytest.raises(ConfigError, match=r"argument 'vit_b'"):
    load_config(f"{ROOT / 'configs' / 'imagenet.py'}:vit_b")
  # A file whose get_config takes no argument, given one.
  with pytest.raises(ConfigError, match=r"get_config\('x'\) raised TypeError"):
    load_config(f"{ROOT / 'configs' / 'default.py'}:x")


def test_default_and_imagenet():
  default = load_config(ROOT / 'configs' / 'default.py')
  assert default.data.name == 'digits'
  assert default.compare_optimizers == ('lion', 'sgd', 'adamw')
  grid = load_config(ROOT / 'configs' / 'default_grid.py')
  assert len(grid.optimizer.lr_grid) > 5
  with pytest.raises(ConfigError, match='expected one of'):
    load_config(ROOT / 'configs' / 'imagenet.py:resnet18')


@pytest.mark.parametrize('model', ['resnet50', 'vit_s'])
def test_imagenet_reads_an_image_folder(model):
  config = load_config(f"{ROOT / 'configs' / 'imagenet.py'}:{model}")
  assert (config.data.name, config.data.image_size) == ('imagefolder', 224)
  assert config.data.augment
  assert (config.num_epochs, config.batch_size) == (90, 2048)
  assert config.schedule.name == 'warmup_cosine'
  assert config.schedule.warmup_epochs == 10
  assert config.optimizer.learning_rates == {'sgd': 0.5}
  assert (config.model.name, config.model.stem) == (model, 'imagenet')


def test_override_file_imports_its_sibling(tmp_path):
  folder = tmp_path / 'configs'
  folder.mkdir()
  (folder / 'default.py').write_text(
      'from lionx.train.config import Config\n'
      'def get_config():\n'
      '  c = Config()\n'
      '  c.optimizer.learning_rate = 0.5\n'
      '  return c\n')
  (folder / 'small.py').write_text(
      'from configs import default\n'
      'def get_config():\n'
      '  c = default.get_config()\n'
      '  c.num_epochs = 3\n'
      '  return c\n')
  config = load_config(folder / 'small.py')
  assert (config.num_epochs, config.optimizer.learning_rate) == (3, 0.5)
  # The repository's configs/default.py is not shadowed afterwards.
  assert load_config(ROOT / 'configs' / 'default_grid.py').data.name == (
      'digits')


def test_overrides_are_typed():
  config = load_config(ROOT / 'configs' / 'default.py', (
      'optimizer.learning_rate=1e-3', 'num_epochs=7',
      'optimizer.learning_rates.sgd=0.25', 'optimizer.b1=None',
      'data.augment=true', 'optimizer.lr_grid=1e-2,1e-3',
      'compare_optimizers=lion,sgd', 'optimizer.weight_decay=1',
      'model.name=mlp', 'optimizer.weight_decays.sgd=5e-4',
      'optimizer.lion_lp.p=1.5', 'optimizer.sgd.nesterov=true',
      'seeds=0,1,2', 'data.data_dir=2024'))
  assert config.optimizer.learning_rate == 1e-3
  assert config.num_epochs == 7
  assert config.optimizer.learning_rates['sgd'] == 0.25
  assert config.optimizer.b1 is None and config.data.augment is True
  assert config.optimizer.lr_grid == (1e-2, 1e-3)
  assert config.compare_optimizers == ('lion', 'sgd')
  assert config.optimizer.weight_decay == 1.0
  assert isinstance(config.optimizer.weight_decay, float)
  assert config.model.name == 'mlp'
  assert config.optimizer.weight_decays == {'sgd': 5e-4}
  assert config.optimizer.lion_lp.p == 1.5
  assert config.optimizer.sgd.nesterov is True
  assert config.seeds == (0, 1, 2)
  # Typed by the field, not guessed from the text.
  assert config.data.data_dir == '2024'


@pytest.mark.parametrize('override,match', [
    ('num_epochs=2.5', r"num_epochs='2.5': expected int"),
    ('data.augment=3', "data.augment='3': expected bool"),
    ('optimizer.lr=1e-3', "unknown config field 'optimizer.lr'"),
    ('optimizer=3', 'optimizer is a group'),
    ('optimizer.lion_lp=3', 'optimizer.lion_lp is a group'),
    ('optimizer.lion_lp.q=3', "unknown config field 'optimizer.lion_lp.q'"),
    ('optimizer.lion_lp.p=two', r"optimizer.lion_lp.p='two': expected float"),
    ('num_epochs=ten', "num_epochs='ten': expected int"),
    ('seeds=0,x', r"seeds\[1\]='x': expected int"),
    ('num_steps=100', 'num_epochs=30, num_steps=100: set exactly one'),
    ('optimizer.weight_decays.sgd=-1', 'weight_decays.sgd=-1.0'),
    ('nokey', 'expected key=value'),
    ('model.name=resnet9', "model.name='resnet9' is not one of"),
    ('optimizer.name=lamb', "optimizer.name='lamb' is not one of"),
    ('data.name=mnist', "data.name='mnist' is not one of"),
    ('schedule.name=step', "schedule.name='step' is not one of"),
    ('optimizer.learning_rate=0', r'optimizer.learning_rate=0.0 is outside '
     r'\(0.0, inf\): expected a positive'),
    ('optimizer.learning_rate=-1e-3', 'expected a positive'),
    ('optimizer.learning_rates.sgd=-1', 'learning_rates.sgd=-1.0'),
    ('optimizer.learning_rates.lamb=1', "learning_rates key='lamb'"),
    ('optimizer.lr_grid=1e-3,0', r'lr_grid\[1\]=0.0'),
    ('batch_size=0', r'batch_size=0 is outside \(0.0, inf\): expected a '
     'positive'),
    ('optimizer.weight_decay=-0.1', r'weight_decay=-0.1 is outside '
     r'\[0.0, inf\): expected a number >= 0'),
    ('schedule.warmup_epochs=30', 'warmup_epochs=30 must be smaller'),
    ('schedule.warmup_epochs=2', None),
    ('lr_select=best', "lr_select='best' is not one of"),
    ('task=lm', "task='lm' is not one of"),
    ('model.width=0', r'model.width=0 is outside \(0.0, inf\): expected a '
     'positive'),
    ('optimizer.mu_dtype=float16', "mu_dtype='float16' is not one of"),
    ('optimizer.mu_dtype=3', "optimizer.mu_dtype='3' is not one of"),
])
def test_bad_overrides(override, match):
  if match is None:  # accepted
    load_config(ROOT / 'configs' / 'default.py', (override,))
    return
  with pytest.raises(ConfigError, match=match):
    load_config(ROOT / 'configs' / 'default.py', (override,))


def test_int8_momentum_is_for_the_lion_family():
  with pytest.raises(ConfigError, match="mu_dtype='int8' with optimizer.name"
                     "='adamw': 8-bit momentum is for the Lion family"):
    load_config(ROOT / 'configs' / 'default.py',
                ('optimizer.name=adamw', 'optimizer.mu_dtype=int8'))
  config = load_config(ROOT / 'configs' / 'default.py',
                       ('optimizer.mu_dtype=int8',))
  assert config.optimizer.mu_dtype == 'int8'


def test_missing_rate_for_an_optimizer():
  config = load_config(f"{ROOT / 'configs' / 'cifar.py'}:cifar10,resnet18")
  config.optimizer.name = 'adamw'
  with pytest.raises(ConfigError, match="no entry for optimizer.name='adamw'"):
    config_lib.validate(config)


def test_bad_config_files(tmp_path):
  with pytest.raises(ConfigError, match='no such file'):
    load_config(tmp_path / 'nope.py')
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config():\n  return 3\n')
  with pytest.raises(ConfigError, match='returned int'):
    load_config(bad)
  bad.write_text('x = 1 / 0\n')
  with pytest.raises(ConfigError, match='ZeroDivisionError'):
    load_config(bad)
  bad.write_text('x = 1\n')
  with pytest.raises(ConfigError, match='no get_config'):
    load_config(bad)
  bad.write_text('from lionx.train.config import Config\n'
                 'def get_config():\n'
                 '  c = Config()\n'
                 '  c.num_epochs = "ten"\n'
                 '  return c\n')
  with pytest.raises(ConfigError, match="num_epochs='ten': expected int"):
    load_config(bad)


def test_identity_ignores_runtime_fields():
  a, b = Config(), Config()
  b.progress, b.max_evals_this_run, b.checkpoint_every_evals = False, 2, 9
  assert config_lib.identity(a) == config_lib.identity(b)
  b.seed = 1
  assert config_lib.identity(a) != config_lib.identity(b)
  c = config_lib.copy(b)
  assert c == b and c is not b and c.optimizer is not b.optimizer
