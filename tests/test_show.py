"""`--mode=show`: a config's settings, the model's layers and the registered models, without
training."""

from __future__ import annotations

import ast
import json
import re

import pytest
from flax import traverse_util

import nets
from training.modes import show
from training.compute import build

from conftest import CONFIG_NAMES, REPO, load_config


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_every_field_is_listed_with_its_comment(config_name):
  path = str(REPO / "configs" / f"{config_name}.py")
  config = load_config(config_name)
  lines = show.describe_config(config, path).splitlines()
  fields = [line for line in lines if not line.startswith("--- ")]
  assert len(fields) == len(traverse_util.flatten_dict(config.to_dict()))
  for line in fields:  # every field has a comment: here or on the model's field in nets/
    assert re.match(r"^  [\w.]+ = .*\S  +# \S", line), line


def _model_assignments(path) -> list[str]:
  """The model fields that a config file assigns (`c.model.X = ...`, `c.model.a, c.model.b = ...`)."""
  found = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Assign):
      for target in node.targets:
        for t in (target.elts if isinstance(target, ast.Tuple) else [target]):
          if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Attribute)
              and t.value.attr == "model"):
            found.append(t.attr)
  return found


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_a_config_sets_only_model_fields_it_changes_from_the_model_s_defaults(config_name):
  # Each default is declared once, in nets/: a config repeating one would fall out of step.
  config = load_config(config_name)
  defaults = json.loads(json.dumps(nets.config_fields(config.model.name)))
  assert set(config.model) == {"name", *defaults}  # every field takes --config.model.FIELD=V
  for field in _model_assignments(REPO / "configs" / f"{config_name}.py"):
    value = json.loads(json.dumps(config.model[field]))
    assert field in defaults, f"{config_name}: model {config.model.name} has no field {field}"
    assert value != defaults[field], (f"configs/{config_name}.py sets model.{field} to its "
                                      "default; leave it to nets/")


def test_fields_are_grouped_as_in_common_py_and_in_its_order():
  lines = show.describe_config(load_config("cnn"), str(REPO / "configs" / "cnn.py")).splitlines()
  sections = [line[4:-4] for line in lines if line.startswith("--- ")]
  common = (REPO / "configs" / "common.py").read_text()
  assert sections == re.findall(r"# --- (.*) ---", common)  # all of them, in their order
  fields = [line.split(" = ")[0].strip() for line in lines if " = " in line]
  assert fields[:4] == ["dataset", "data_dir", "data_url", "cache_dir"]  # not alphabetical
  model = [f for f in fields if f.startswith("model.")]
  assert model[0] == "model.name" and fields.index(model[-1]) - fields.index(model[0]) == len(
      model) - 1  # the config file's model fields join their group


def test_the_config_file_s_and_the_command_line_s_values_are_marked():
  config = load_config("cnn")
  config.num_epochs = 2
  path = str(REPO / "configs" / "cnn.py")
  marks = {**show.changes(show._flat(load_config("cnn")), show.defaults_of("cnn"), "+"),
           **show.changes(show._flat(config), show._flat(load_config("cnn")), "*")}
  lines = {line.split(" = ")[0][2:]: line for line in
           show.describe_config(config, path, marks).splitlines() if " = " in line}
  assert lines["learning_rate"].startswith("+ learning_rate = 0.003 [0.001]  ")  # cnn.py's
  assert lines["num_epochs"].startswith("* num_epochs = 2 [5]  ")  # the command line's
  assert lines["seed"].startswith("  seed = 0  ")  # the default
  assert lines["model.features"].startswith("  model.features = (32, 64)  ")  # CNN's default


def test_comments_come_from_the_line_or_the_lines_above():
  comments = show.field_comments(str(REPO / "configs" / "cnn.py"))
  assert comments["learning_rate"] == "peak learning rate"
  assert comments["batch_size"] == "global training batch"
  assert comments["cache_dir"].startswith("Decoded arrays are cached here after the first load")
  assert comments["adam_b2"].startswith("Adam's second-moment")
  dcgan = show.field_comments(str(REPO / "configs" / "dcgan.py"))
  assert dcgan["adam_b1"] == dcgan["adam_b2"] == "the DCGAN paper's betas"  # `c.a, c.b = ...`
  assert show.model_field_comments("resnet")["blocks"] == "residual blocks per stage"


def test_a_config_s_own_comment_wins_over_its_base_s():
  comments = show.field_comments(str(REPO / "configs" / "best.py"))
  assert comments["model.convs_per_stage"] == "32-32-pool-64-64-pool"  # best.py, not cnn.py


def test_the_model_table_counts_the_model_s_parameters():
  import jax
  import jax.numpy as jnp
  config = load_config("cnn")
  table = show.model_summary(config, (28, 28, 1), 10)
  model = build.build_model(config, 10)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
  assert f"{build.param_count(params):,}" in table
  assert "Conv_0" in table and "float32[1,28,28,32]" in table


def test_every_registered_model_is_listed_with_the_fields_a_config_can_set():
  text = show.list_models()
  for name in nets.names(kind=None):
    line = next(l for l in text.splitlines() if l.strip().startswith(f"{name}"))
    for field in nets.field_names(name):
      # The classes come from the data; the compute dtype is --config.dtype, for every model.
      assert (f"{field}=" in line) == (field not in ("num_classes", "dtype")), (name, field)
  assert "cnn_strided (a CNN with downsample='stride')" in text
  assert "dcgan [gan]:" in text and "[gan]: a generator with its discriminator" in text


def test_an_image_folder_is_shown_with_its_own_shape_and_classes(tmp_path):
  for name in ("cat", "dog", "fox", ".ipynb_checkpoints"):
    (tmp_path / name).mkdir()
  config = load_config("cnn")
  config.dataset = f"folder:{tmp_path}"
  config.folder.image_size, config.folder.channels = 32, 3
  assert show.image_shape_and_classes(config) == ((32, 32, 3), 3)
  config.classes = "cat,fox"
  assert show.image_shape_and_classes(config) == ((32, 32, 3), 2)
  config.dataset = f"folder:{tmp_path / 'missing'}"
  assert show.image_shape_and_classes(config) is None


@pytest.mark.parametrize("name", nets.names(kind=None))
def test_every_model_field_has_its_comment_in_nets(name):
  # A config that sets a field shows its own comment; switching models on the command line
  # (--config.model.name=...) shows the model's, so each field needs one in nets/.
  fields = set(nets.config_fields(name)) | {"dtype"} & set(nets.field_names(name))
  missing = sorted(fields - set(show.model_field_comments(name)))
  assert not missing, (f"{nets.source_of(nets.get_factory(name))}: add a comment to the "
                       f"field(s) {', '.join(missing)} on their line (`width: int = 64  # units "
                       "of the hidden layer`): --mode=show prints it (docs/extending.md)")
