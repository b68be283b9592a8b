# Two commands to start (docs: README.md#quick-start):
#   make train   sets up .venv on first use and trains configs/cnn.py
#   make test    sets up .venv and runs the tests through .ci/suite, as .ci/run does
# VENV picks another venv (.ci/run: $CI_VENV); pip honours $PIP_CONSTRAINT.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Arguments for pytest (make test PYTEST_ARGS="-n 0 tests/test_nets.py") and train.py; DATA_URL:
# another mirror of MNIST's IDX files (train.py's --config.data_url).
PYTEST_ARGS ?=
TRAIN_ARGS ?=
DATA_URL ?=

.PHONY: train test data

train: $(VENV)/.installed
	$(PY) train.py --config=configs/cnn.py $(if $(DATA_URL),--config.data_url=$(DATA_URL)) $(TRAIN_ARGS)

# The real MNIST where the tests look for it; downloaded into ~/.cache/mnist_flax when absent.
data: $(VENV)/.installed
	$(PY) tests/mnist_data.py $(DATA_URL)

# The same as .ci/run's: the venv with '.[test]' (pip checks it is up to date), the data, pytest.
test:
	.ci/suite $(VENV) - $(PYTEST_ARGS)

# The venv, with the code installed in place and the test tools; again when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@
