"""`--mode=show`: a config's settings, the model's layers and the registered models, without
training."""

from __future__ import annotations

import pytest
from flax import traverse_util

import nets
from training.modes import show
from training.model import build

from conftest import CONFIG_NAMES, REPO, load_config


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_every_field_is_listed_with_its_comment(config_name):
  path = str(REPO / "configs" / f"{config_name}.py")
  config = load_config(config_name)
  lines = show.describe_config(config, path).splitlines()
  comments = show.field_comments(path)
  assert len(lines) == len(traverse_util.flatten_dict(config.to_dict()))
  for line in lines:
    field = line.split(" = ")[0]
    assert line.endswith(f"  # {comments[field]}") if field in comments else "#" not in line
  assert "# ---" not in "\n".join(lines)  # configs/common.py's section headers are no comments


def test_comments_come_from_the_line_or_the_lines_above():
  comments = show.field_comments(str(REPO / "configs" / "cnn.py"))
  assert comments["learning_rate"] == "peak learning rate"
  assert comments["batch_size"] == "global training batch"
  assert comments["cache_dir"].startswith("Decoded arrays are cached here after the first load")
  assert "eval_batch_size" not in comments  # it has none


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


def test_every_registered_model_is_listed_with_its_fields():
  text = show.list_models()
  for name in nets.names():
    line = next(l for l in text.splitlines() if l.strip().startswith(f"{name}"))
    for field in nets.field_names(name):
      if field != "num_classes":
        assert f"{field}=" in line, (name, field)
  assert "cnn_strided (a CNN with downsample='stride')" in text


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
